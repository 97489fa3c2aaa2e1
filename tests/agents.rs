//! Agents working from their own mail client, against the real mail stack: notified of a new ticket, they
//! reply with commands; the customer gets the answer from the support address only.

mod support;

use std::path::Path;
use std::time::Duration;

use postdesk::config::Config;
use postdesk::daemon::Daemon;
use postdesk::desk::ticket::{Direction, Locale, Status, TicketId};
use postdesk::store::{Lookup, Storage};
use support::{eventually, stack, Region, Stack, TestConfig};
use tokio_util::sync::CancellationToken;

fn config(s: &Stack, dir: &Path, support_addr: &str, agent: &str, notify: &str) -> Config {
    TestConfig::new(dir)
        .smtp_starttls(s)
        .region(Region::jp().agents(&[agent]).agent_notify(notify).imap(
            s,
            support_addr,
            dir,
            "none",
        ))
        .parse()
}

fn parse(raw: &[u8]) -> postdesk::mail::Inbound {
    postdesk::mail::parse(raw, Locale::En).expect("a mail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answers_from_a_mail_client_and_the_customer_sees_only_the_desk() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let (desk_addr, agent, notify, taro) = (
        s.user("support-jp"),
        s.user("agent"),
        s.user("jp-agents"),
        s.user("taro"),
    );
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let d = Daemon::start(
        config(s, dir.path(), &desk_addr, &agent, &notify),
        token.clone(),
    )
    .expect("daemon");
    let id = TicketId::new("JP", 1000);

    // 1. The customer writes; the agents are notified.
    s.send_mail(
        &taro,
        &desk_addr,
        "注文が届きません",
        "c1@example.jp",
        "注文番号は A-1 です。",
    )
    .await;
    eventually(
        "the agent notification",
        Duration::from_secs(30),
        async || s.count(&notify, "INBOX").await == 1,
    )
    .await;
    let note_raw = s.messages(&notify, "INBOX").await.remove(0);
    let notification = parse(&note_raw);
    assert!(
        notification.subject.starts_with("[JP-1000] "),
        "{}",
        notification.subject
    );
    assert!(
        notification
            .text
            .starts_with("##- reply above this line -##"),
        "{}",
        notification.text
    );
    assert!(notification.text.contains("注文番号は A-1 です。"));
    assert_eq!(
        notification.reply_to[0].address, desk_addr,
        "replying lands back in postdesk"
    );

    // 2. The agent replies to the notification from their own client, with a command and the quoted history.
    let reply = format!(
        "From: Agent Smith <{agent}>\r\nTo: {desk_addr}\r\nSubject: Re: {}\r\nMessage-ID: <a1@example.com>\r\nIn-Reply-To: <{}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"AG\"\r\n\r\n--AG\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n#status pending\r\n\r\nお手数ですが、ご注文時のメールアドレスを教えていただけますでしょうか。\r\n\r\n-- \r\nAgent Smith, direct line 555-0100\r\n\r\nOn Sat, 21 Nov 2026 at 10:00, {desk_addr} wrote:\r\n> ##- reply above this line -##\r\n> 注文番号は A-1 です。\r\n--AG\r\nContent-Type: application/pdf; name=\"guide.pdf\"\r\nContent-Disposition: attachment; filename=\"guide.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCg==\r\n--AG--\r\n",
        notification.subject, notification.message_id
    );
    s.smtp_send(&agent, &desk_addr, reply.as_bytes()).await;
    eventually(
        "the answer at the customer",
        Duration::from_secs(30),
        async || s.count(&taro, "INBOX").await == 2,
    )
    .await;
    let answers: Vec<Vec<u8>> = s.messages(&taro, "INBOX").await;
    let answer_raw = answers
        .into_iter()
        .find(|r| parse(r).text.contains("メールアドレス"))
        .expect("the relayed answer");
    let answer = parse(&answer_raw);
    let raw_text = String::from_utf8_lossy(&answer_raw).to_ascii_lowercase();
    assert_eq!(answer.from.as_ref().unwrap().address, desk_addr);
    assert!(
        !raw_text.contains(&agent.to_ascii_lowercase()),
        "the agent's address never reaches the customer"
    );
    assert!(
        !answer.text.contains("#status"),
        "commands are removed: {}",
        answer.text
    );
    assert!(
        !answer.text.contains("555-0100"),
        "the signature is removed: {}",
        answer.text
    );
    assert!(
        !answer.text.contains("reply above this line"),
        "the quoted history is removed: {}",
        answer.text
    );
    assert_eq!(answer.subject, "[JP-1000] 注文が届きません");
    // The agent's attachment is relayed.
    let guide = answer
        .attachments
        .iter()
        .find(|a| a.filename == "guide.pdf")
        .expect("the agent's attachment");
    assert_eq!(guide.data, b"%PDF-1.4\n%\xc3\xa4\xc3\xbc\xc3\xb6\xc3\x9f\n");
    assert_eq!(
        d.desk.store.ticket(&id).unwrap().unwrap().status,
        Status::Pending
    );

    let times = postdesk::stats::first_response(d.desk.store.tickets(None, None).unwrap().iter());
    assert_eq!(
        times.answered, 1,
        "the agent's answer is the first response"
    );
    assert!(times.median_minutes.is_some_and(|m| m < 5));

    // 3. The customer answers: the ticket is open again.
    s.send_mail(
        &taro,
        &desk_addr,
        "Re: [JP-1000] 注文が届きません",
        "c2@example.jp",
        "taro@example.jp です。",
    )
    .await;
    eventually(
        "the ticket open again",
        Duration::from_secs(20),
        async || d.desk.store.ticket(&id).unwrap().unwrap().status == Status::Open,
    )
    .await;

    // 4. An internal note never reaches the customer; an unknown command goes back to the agent only.
    let before = s.count(&taro, "INBOX").await;
    let note = format!("From: {agent}\r\nTo: {desk_addr}\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <a2@example.com>\r\n\r\n#note\r\nThis customer ordered twice.\r\n");
    s.smtp_send(&agent, &desk_addr, note.as_bytes()).await;
    let bad = format!("From: {agent}\r\nTo: {desk_addr}\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <a3@example.com>\r\n\r\n#frobnicate now\r\nHello customer\r\n");
    s.smtp_send(&agent, &desk_addr, bad.as_bytes()).await;
    eventually(
        "the error reply to the agent",
        Duration::from_secs(30),
        async || s.count(&agent, "INBOX").await == 1,
    )
    .await;
    let error = parse(&s.messages(&agent, "INBOX").await.remove(0));
    assert!(error.text.contains("#frobnicate"), "{}", error.text);
    assert!(
        error.text.contains("#status open|pending|resolved|closed"),
        "{}",
        error.text
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.count(&taro, "INBOX").await,
        before,
        "neither the note nor the bad command reached the customer"
    );
    let messages = d.desk.store.messages(&id).unwrap();
    assert!(messages
        .iter()
        .any(|m| m.direction == Direction::Note && m.text.contains("ordered twice")));

    // 5. A customer writing a command changes nothing: for them it is text.
    s.send_mail(
        &taro,
        &desk_addr,
        "Re: [JP-1000] 注文が届きません",
        "c3@example.jp",
        "#status closed\r\n#priority urgent",
    )
    .await;
    eventually(
        "the customer's mail stored",
        Duration::from_secs(20),
        async || {
            d.desk
                .store
                .messages(&id)
                .unwrap()
                .iter()
                .any(|m| m.message_id == "c3@example.jp")
        },
    )
    .await;
    let t = d.desk.store.ticket(&id).unwrap().unwrap();
    assert_eq!((t.status, t.priority.as_str()), (Status::Open, "normal"));

    // 6. #merge: a second ticket of the same customer is merged into JP-1000, and its thread follows.
    s.send_mail(
        &taro,
        &desk_addr,
        "もう一件",
        "c4@example.jp",
        "同じ注文の件です。",
    )
    .await;
    let second = TicketId::new("JP", 1001);
    eventually("the second ticket", Duration::from_secs(20), async || {
        d.desk.store.ticket(&second).unwrap().is_some()
    })
    .await;
    let merge = format!("From: {agent}\r\nTo: {desk_addr}\r\nSubject: Re: [JP-1001] x\r\nMessage-ID: <a4@example.com>\r\n\r\n#merge JP-1000\r\n");
    s.smtp_send(&agent, &desk_addr, merge.as_bytes()).await;
    eventually("the merge", Duration::from_secs(20), async || {
        d.desk.store.ticket(&second).unwrap().unwrap().merged_into == Some(id.clone())
    })
    .await;
    s.send_mail(
        &taro,
        &desk_addr,
        "Re: [JP-1001] もう一件",
        "c5@example.jp",
        "よろしくお願いします。",
    )
    .await;
    eventually(
        "the reply to the merged ticket in the survivor",
        Duration::from_secs(20),
        async || {
            d.desk
                .store
                .messages(&id)
                .unwrap()
                .iter()
                .any(|m| m.message_id == "c5@example.jp")
        },
    )
    .await;
    token.cancel();
    d.wait().await.unwrap();
}

/// Issue 13, finding 4, against the real mail stack: a forged reply in the requester's name cannot add a
/// recipient of the agents' answers; the agents are told, and an agent adds a real colleague by command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_reply_cannot_add_a_participant_but_an_agent_adds_one_with_cc_add() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let (desk_addr, agent, notify, taro, mallory, colleague) = (
        s.user("support-jp"),
        s.user("agent"),
        s.user("jp-agents"),
        s.user("taro"),
        s.user("mallory"),
        s.user("colleague"),
    );
    let dir = tempfile::tempdir().unwrap();
    let token = CancellationToken::new();
    let d = Daemon::start(
        config(s, dir.path(), &desk_addr, &agent, &notify),
        token.clone(),
    )
    .expect("daemon");
    let id = TicketId::new("JP", 1000);
    s.send_mail(&taro, &desk_addr, "荷物", "t1@example.jp", "届きません。")
        .await;
    eventually("the ticket", Duration::from_secs(30), async || {
        s.count(&notify, "INBOX").await == 1
    })
    .await;

    // Mallory writes in Taro's name, with herself in Cc and any envelope sender.
    let spoofed = format!("From: {taro}\r\nTo: {desk_addr}\r\nCc: {mallory}\r\nSubject: Re: [JP-1000] 荷物\r\nMessage-ID: <spoof@evil.example>\r\n\r\nPlease copy my colleague.\r\n");
    s.smtp_send(&mallory, &desk_addr, spoofed.as_bytes()).await;
    eventually(
        "the agents told of the reply",
        Duration::from_secs(30),
        async || s.count(&notify, "INBOX").await == 2,
    )
    .await;
    assert!(d
        .desk
        .store
        .ticket(&id)
        .unwrap()
        .unwrap()
        .participants
        .is_empty());
    let told = s
        .messages(&notify, "INBOX")
        .await
        .into_iter()
        .map(|r| parse(&r))
        .find(|m| m.text.contains("Please copy"))
        .expect("the notification of the reply");
    assert!(
        told.text.contains(&mallory.to_ascii_lowercase()),
        "{}",
        told.text
    );
    assert!(told.text.contains("#cc add"), "{}", told.text);

    // The agent adds the real colleague and answers: the answer reaches Taro and the colleague, not Mallory.
    let answer = format!("From: {agent}\r\nTo: {desk_addr}\r\nSubject: Re: [JP-1000] 荷物\r\nMessage-ID: <cc1@example.com>\r\n\r\n#cc add {colleague}\r\n\r\nThe parcel left today.\r\n");
    s.smtp_send(&agent, &desk_addr, answer.as_bytes()).await;
    eventually(
        "the answer at the colleague",
        Duration::from_secs(30),
        async || s.count(&colleague, "INBOX").await == 1,
    )
    .await;
    let got = parse(&s.messages(&colleague, "INBOX").await.remove(0));
    assert!(got.text.contains("The parcel left today."), "{}", got.text);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.count(&mallory, "INBOX").await,
        0,
        "nothing reached Mallory"
    );
    assert_eq!(
        d.desk.store.ticket(&id).unwrap().unwrap().participants,
        vec![colleague.to_ascii_lowercase()]
    );
    token.cancel();
    d.wait().await.unwrap();
}
