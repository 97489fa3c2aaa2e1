//! Outbound mail against the real mail stack: acknowledgements and status updates leave by SMTP (Postfix),
//! land in the customer's Dovecot mailbox and are read back by IMAP; retries, failures, bounces and loops.

mod support;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use postdesk::config::Config;
use postdesk::daemon::Daemon;
use postdesk::desk::decide::Delivery;
use postdesk::desk::ticket::{Locale, Status, TicketId};
use postdesk::outbound::OutboxStatus;
use postdesk::store::{Lookup, Storage};
use support::{eventually, mail, stack, Region, Stack, TestConfig};
use tokio_util::sync::CancellationToken;

/// A desk with JP (and KR) regions taking mail from the stack by IMAP and sending by SMTP through it, over
/// STARTTLS with the stack's certificate checked against its CA; `tables` adds to it (e.g.
/// `[outbound.rate_limit]`).
fn config(s: &Stack, dir: &Path, jp: &str, kr: Option<&str>, tables: &str) -> Config {
    let mut config = TestConfig::new(dir).smtp_starttls(s).table(tables).region(
        Region::jp()
            .display_name("Example JP")
            .imap(s, jp, dir, "none"),
    );
    if let Some(kr) = kr {
        config = config.region(
            Region::kr()
                .display_name("Example KR")
                .imap(s, kr, dir, "none"),
        );
    }
    config.parse()
}

fn start(config: Config) -> (Daemon, CancellationToken) {
    let token = CancellationToken::new();
    (Daemon::start(config, token.clone()).expect("daemon"), token)
}

async fn stop(d: Daemon, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), d.wait())
        .await
        .expect("stops")
        .expect("flush");
}

/// Store a customer mail without going through IMAP (for tests about the way out).
fn ingest_directly(d: &Daemon, from: &str, to: &str, subject: &str, message_id: &str, body: &str) {
    let region = d.desk.config.region[0].clone();
    let raw = mail(from, to, subject, message_id, body);
    d.desk
        .ingest(
            &region,
            &raw,
            "test",
            &Delivery::normal(),
            false,
            Utc::now(),
        )
        .unwrap()
        .unwrap();
}

fn parse(raw: &[u8]) -> postdesk::mail::Inbound {
    postdesk::mail::parse(raw, Locale::En).expect("a mail")
}

fn header_lines(raw: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("").to_string();
    head.split("\r\n").map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_arrive_in_the_customers_language_and_replies_to_them_thread() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let (jp, kr) = (s.user("support-jp"), s.user("support-kr"));
    let (taro, kim) = (s.user("taro"), s.user("kim"));
    let dir = tempfile::tempdir().unwrap();
    let (d, token) = start(config(s, dir.path(), &jp, Some(&kr), ""));
    s.send_mail(
        &taro,
        &jp,
        "注文が届きません",
        "o1@example.jp",
        "先週注文した商品がまだ届きません。",
    )
    .await;
    s.send_mail(
        &kim,
        &kr,
        "로그인이 안 됩니다",
        "o2@example.co.kr",
        "비밀번호를 바꿨는데 로그인이 안 됩니다.",
    )
    .await;
    eventually(
        "both acknowledgements",
        Duration::from_secs(30),
        async || s.count(&taro, "INBOX").await == 1 && s.count(&kim, "INBOX").await == 1,
    )
    .await;
    let ack_raw = s.messages(&taro, "INBOX").await.remove(0);
    let ack = parse(&ack_raw);
    assert_eq!(ack.subject, "[JP-1000] 注文が届きません");
    assert!(
        ack.text.contains("お問い合わせ番号") && ack.text.contains("JP-1000"),
        "{}",
        ack.text
    );
    assert_eq!(ack.from.as_ref().unwrap().address, jp);
    assert_eq!(ack.in_reply_to, vec!["o1@example.jp"]);
    let headers = header_lines(&ack_raw);
    assert!(
        headers.iter().any(|h| h == "Auto-Submitted: auto-replied"),
        "{headers:?}"
    );
    assert!(headers.iter().any(|h| h == "X-Auto-Response-Suppress: All"));
    assert!(
        ack_raw.windows(9).any(|w| w == b"text/html"),
        "multipart/alternative with HTML"
    );
    let kr_ack = parse(&s.messages(&kim, "INBOX").await.remove(0));
    assert_eq!(kr_ack.subject, "[KR-1000] 로그인이 안 됩니다");
    assert!(
        kr_ack.text.contains("KR-1000") && kr_ack.text.contains("문의"),
        "{}",
        kr_ack.text
    );

    // The customer answers the acknowledgement (no tag in the subject): it joins JP-1000.
    let reply = format!(
        "From: {taro}\r\nTo: {jp}\r\nSubject: 追加情報\r\nMessage-ID: <o3@example.jp>\r\nIn-Reply-To: <{id}>\r\nReferences: <o1@example.jp> <{id}>\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n注文番号は A-1 です。\r\n",
        id = ack.message_id
    );
    s.smtp_send(&taro, &jp, reply.as_bytes()).await;
    let id = TicketId::new("JP", 1000);
    eventually(
        "the reply in JP-1000",
        Duration::from_secs(20),
        async || d.desk.store.messages(&id).map(|m| m.len()).unwrap_or(0) == 2,
    )
    .await;

    // A status change reaches the customer as a status update in Japanese.
    postdesk::intake::blocking(|| d.desk.set_status(&id, Status::Pending, Utc::now()))
        .unwrap()
        .unwrap();
    eventually("the status update", Duration::from_secs(20), async || {
        s.count(&taro, "INBOX").await == 2
    })
    .await;
    let update = s
        .messages(&taro, "INBOX")
        .await
        .into_iter()
        .map(|r| parse(&r))
        .find(|m| m.text.contains("お客様からのご返信待ち"));
    assert!(update.is_some(), "status update in Japanese");
    assert_eq!(d.desk.store.tickets(None, None).unwrap().len(), 2);
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_marked_failed_with_the_servers_reply() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let dir = tempfile::tempdir().unwrap();
    let (d, token) = start(config(s, dir.path(), &jp, None, ""));
    let ghost = format!("{}@example.com", support::unique("nobody-here"));
    ingest_directly(&d, &ghost, &jp, "hello", "g1@example.com", "body");
    eventually("the row to fail", Duration::from_secs(20), async || {
        d.desk
            .store
            .outbox_all()
            .unwrap()
            .iter()
            .any(|r| r.status == OutboxStatus::Failed)
    })
    .await;
    let row = d.desk.store.outbox_all().unwrap().remove(0);
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.contains("550") || reason.contains("5.1.1"),
        "{reason}"
    );
    assert_eq!(row.attempts, 1, "a permanent failure is not retried");
    eventually("the failure counted", Duration::from_secs(5), async || {
        let metrics = d.desk.telemetry.render(&d.desk.store).unwrap();
        metrics.contains("postdesk_outbox_failed_total 1\n")
            && metrics.contains("postdesk_outbox{status=\"failed\"} 1\n")
    })
    .await;
    stop(d, token).await;
}

/// Issue 14, item 4: a customer's address that their server refuses (`550 5.1.1 … User unknown`, here from
/// the real Postfix) is a problem of that address, not of `[outbound]`: the row's failure text (what
/// `outbox list` shows, and what the log line says) says so and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_recipient_is_not_blamed_on_the_config() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let dir = tempfile::tempdir().unwrap();
    let (d, token) = start(config(s, dir.path(), &jp, None, ""));
    let ghost = format!("{}@example.com", support::unique("nobody-here"));
    ingest_directly(&d, &ghost, &jp, "hello", "rr1@example.com", "body");
    eventually("the row to fail", Duration::from_secs(20), async || {
        d.desk
            .store
            .outbox_all()
            .unwrap()
            .iter()
            .any(|r| r.status == OutboxStatus::Failed)
    })
    .await;
    let row = d.desk.store.outbox_all().unwrap().remove(0);
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.contains("the recipient's mail server refused the address"),
        "{reason}"
    );
    assert!(reason.contains("check the customer's address"), "{reason}");
    assert!(reason.contains("ticket is kept"), "{reason}");
    assert!(!reason.contains("[outbound]"), "{reason}");
    assert!(
        reason.contains("550") || reason.contains("5.1.1"),
        "the server's reply is kept: {reason}"
    );
    assert_eq!(
        d.desk.store.tickets(None, None).unwrap().len(),
        1,
        "the ticket stays"
    );
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_then_up_delivers_exactly_once() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let private = support::private_stack("postdesk-ms-smtp");
    let jp = private.user("support-jp");
    let taro = private.user("taro");
    let dir = tempfile::tempdir().unwrap();
    private.down();
    let (d, token) = start(config(&private, dir.path(), &jp, None, ""));
    ingest_directly(&d, &taro, &jp, "hello", "d1@example.com", "body");
    eventually("a failed attempt", Duration::from_secs(20), async || {
        d.desk.store.outbox_all().unwrap()[0].attempts >= 2
    })
    .await;
    assert_eq!(
        d.desk.store.outbox_all().unwrap()[0].status,
        OutboxStatus::Queued,
        "temporary failures are retried"
    );
    let again = support::start(&private.dir);
    eventually(
        "delivery after the server is back",
        Duration::from_secs(40),
        async || again.count(&taro, "INBOX").await >= 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(again.count(&taro, "INBOX").await, 1, "exactly once");
    let row = d.desk.store.outbox_all().unwrap().remove(0);
    assert_eq!(row.status, OutboxStatus::Sent);
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vacation_responder_answering_everything_gets_a_bounded_number_of_mails() {
    use futures_util::StreamExt;
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let robot = s.user("vacation");
    let dir = tempfile::tempdir().unwrap();
    let (d, token) = start(config(
        s,
        dir.path(),
        &jp,
        None,
        "[outbound.rate_limit]\nper_10min = 3\nper_day = 5\n",
    ));
    s.send_mail(&robot, &jp, "first question", "v0@example.com", "hello")
        .await;
    // The worst kind of auto-responder: it answers every mail with a fresh subject, no Auto-Submitted, no
    // References, so every answer looks like a new customer mail.
    let mut session = s.imap(&robot).await;
    let mut answered = 0u32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < deadline {
        session.select("INBOX").await.unwrap();
        let unseen: Vec<u32> = session
            .uid_search("UNSEEN")
            .await
            .unwrap()
            .into_iter()
            .collect();
        if !unseen.is_empty() {
            let set = unseen
                .iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(",");
            {
                let mut seen = session.uid_store(&set, "+FLAGS (\\Seen)").await.unwrap();
                while seen.next().await.is_some() {}
            }
            for _ in &unseen {
                answered += 1;
                s.send_mail(
                    &robot,
                    &jp,
                    &format!("I am on holiday ({answered})"),
                    &format!("v{answered}@example.com"),
                    "I am away until Monday.",
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = s.count(&robot, "INBOX").await;
    eprintln!("auto-responder answered {answered} mails, received {received}");
    assert_eq!(received, 3, "per_10min bounds what reaches the responder");
    assert!(answered >= 3, "the responder did answer");
    // Its mail is still all recorded.
    eventually("every answer stored", Duration::from_secs(20), async || {
        d.desk.store.tickets(None, None).unwrap().len() as u32 == answered + 1
    })
    .await;
    assert!(d.desk.store.suppressed("JP").unwrap() >= 1);
    // /metrics counts the same (counted just after the commit, hence `eventually`).
    eventually("the metric to match", Duration::from_secs(5), async || {
        let held = d.desk.store.suppressed("JP").unwrap();
        d.desk
            .telemetry
            .render(&d.desk.store)
            .unwrap()
            .contains(&format!(
                "postdesk_auto_replies_suppressed_total{{region=\"JP\"}} {held}\n"
            ))
    })
    .await;
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_marks_the_outbox_row_and_joins_the_ticket() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let taro = s.user("taro");
    let dir = tempfile::tempdir().unwrap();
    let (d, token) = start(config(s, dir.path(), &jp, None, ""));
    s.send_mail(&taro, &jp, "question", "b1@example.com", "hello")
        .await;
    eventually("the acknowledgement", Duration::from_secs(30), async || {
        s.count(&taro, "INBOX").await == 1
    })
    .await;
    let ack = parse(&s.messages(&taro, "INBOX").await.remove(0));
    let dsn = format!(
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\nTo: {jp}\r\nSubject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn1@mx.example.net>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\nFinal-Recipient: rfc822; {taro}\r\nAction: failed\r\nStatus: 5.2.2\r\nDiagnostic-Code: smtp; 552 mailbox full\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: {jp}\r\nTo: {taro}\r\nMessage-ID: <{}>\r\nSubject: {}\r\n--B--\r\n",
        ack.message_id, ack.subject
    );
    s.smtp_send("", &jp, dsn.as_bytes()).await;
    eventually(
        "the row marked bounced",
        Duration::from_secs(20),
        async || {
            d.desk
                .store
                .outbox_all()
                .unwrap()
                .iter()
                .any(|r| r.status == OutboxStatus::Bounced)
        },
    )
    .await;
    eventually("the bounce counted", Duration::from_secs(5), async || {
        let metrics = d.desk.telemetry.render(&d.desk.store).unwrap();
        metrics.contains("postdesk_outbox_bounced_total 1\n")
            && metrics.contains("postdesk_outbox{status=\"bounced\"} 1\n")
    })
    .await;
    let row = d.desk.store.outbox_all().unwrap().remove(0);
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("5.2.2"),
        "{:?}",
        row.last_error
    );
    assert_eq!(
        d.desk.store.tickets(None, None).unwrap().len(),
        1,
        "no ticket for the bounce"
    );
    let messages = d.desk.store.messages(&TicketId::new("JP", 1000)).unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].auto.as_deref(), Some("bounce"));
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_break_in_a_customer_subject_cannot_add_a_header() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let taro = s.user("taro");
    let evil = s.user("evil");
    let dir = tempfile::tempdir().unwrap();
    let (d, token) = start(config(s, dir.path(), &jp, None, ""));
    let raw = format!(
        "From: {taro}\r\nTo: {jp}\r\nSubject: =?UTF-8?Q?hello=0D=0ABcc:_{}?=\r\nMessage-ID: <h1@example.com>\r\n\r\nbody\r\n",
        evil.replace('@', "=40")
    );
    s.smtp_send(&taro, &jp, raw.as_bytes()).await;
    eventually("the acknowledgement", Duration::from_secs(30), async || {
        s.count(&taro, "INBOX").await == 1
    })
    .await;
    let ack = s.messages(&taro, "INBOX").await.remove(0);
    assert!(
        !header_lines(&ack)
            .iter()
            .any(|h| h.to_ascii_lowercase().starts_with("bcc:")),
        "{:?}",
        header_lines(&ack)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        s.count(&evil, "INBOX").await,
        0,
        "nothing reached the injected address"
    );
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_certificate_that_does_not_verify_is_refused() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let taro = s.user("taro");
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(s, dir.path(), &jp, None, "");
    // Without the stack's CA, its certificate is just a stranger's: nothing may be sent.
    c.outbound.smtp.as_mut().unwrap().ca_file = None;
    let (d, token) = start(c);
    ingest_directly(&d, &taro, &jp, "hello", "tls1@example.com", "body");
    eventually("a failed attempt", Duration::from_secs(20), async || {
        d.desk.store.outbox_all().unwrap()[0].attempts >= 1
    })
    .await;
    let row = d.desk.store.outbox_all().unwrap().remove(0);
    assert_ne!(row.status, OutboxStatus::Sent);
    let reason = row.last_error.unwrap_or_default().to_ascii_lowercase();
    assert!(
        reason.contains("certificate") || reason.contains("tls"),
        "{reason}"
    );
    assert_eq!(s.count(&taro, "INBOX").await, 0);
    stop(d, token).await;
}
