//! The crash test: the real `postdesk run`, SIGKILLed at random moments while it takes mail from Dovecot and
//! sends acknowledgements through Postfix, loses nothing and doubles (almost) nothing.
//!
//! 2,000 customer mails (Japanese ISO-2022-JP, Korean EUC-KR, English UTF-8; one in ten with an attachment;
//! two in five a reply that threads into an earlier ticket by its `[JP-…]` tag or by References) reach the
//! support mailbox in eleven portions: 1,000 before the first start, 100 before each of ten runs that are
//! killed after a random delay (seeded; the seed is printed and `POSTDESK_TEST_SEED` replays it). A final
//! run goes on until everything is done. Then:
//! - every mail is in exactly one ticket (by Message-ID), the right one for replies, and no ticket is doubled;
//! - every new ticket got exactly one acknowledgement row, sent, and its mail is in the customer's mailbox;
//!   copies of one acknowledgement (same Message-ID) number at most one per kill per mail in flight;
//! - the store opened cleanly every time: each run started (and ran until killed), and between runs
//!   `postdesk tickets list` opens the store on its own.
//!
//! Run it alone with `cargo test --test crash -- --nocapture` (it prints the seed and what each kill hit).

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use postdesk::desk::ticket::{Direction, TicketId};
use postdesk::store::{Lookup, Storage, Store};
use support::{cli_json, eventually, stack, DaemonProcess, Region, TestConfig, XorShift};

const MAILS: usize = 2000;
const FIRST: usize = 1000;
const KILLS: usize = 10;
const CUSTOMERS: usize = 8;
/// `[outbound] concurrency`: acknowledgements in flight at once. A kill can double each mail in flight whose
/// "250 OK" the server sent before the kill, so the bound on copies is one per kill per mail in flight; with
/// one in flight that is the bound, at most one duplicate per kill (measured: 7 in 10 kills, 104 s).
const IN_FLIGHT: usize = 1;

/// One mail of the corpus and what it should become.
struct Mail {
    raw: Vec<u8>,
    message_id: String,
    /// The corpus index of the mail that opened this mail's ticket (itself for a new ticket).
    opener: usize,
}

/// The deterministic mixed corpus. `customers` are mailbox users: each new ticket's requester is one of
/// them with a `+m<i>` detail, so every requester is distinct (and gets one acknowledgement, far below the
/// rate limits) while the acknowledgements land in a few mailboxes.
fn corpus(customers: &[String], to: &str) -> Vec<Mail> {
    let ja = "先日注文した商品がまだ届いておりません。配送状況をご確認いただけますでしょうか。";
    let ko = "지난주에 주문한 상품이 아직 도착하지 않았습니다. 배송 상황을 확인해 주시겠습니까?";
    let en =
        "The order I placed last week has not arrived yet. Could you check the delivery status? ";
    let attachment = {
        let bytes: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        base64(&bytes)
    };
    let mut mails: Vec<Mail> = Vec::with_capacity(MAILS);
    let mut sender: Vec<String> = Vec::with_capacity(MAILS);
    let mut ticket_no: Vec<u64> = Vec::with_capacity(MAILS);
    let mut openers = 0u64;
    for i in 0..MAILS {
        let message_id = format!("crash{i}@example.net");
        let (charset, cte, body): (&str, &str, Vec<u8>) = match i % 3 {
            0 => (
                "ISO-2022-JP",
                "7bit",
                encoding_rs::ISO_2022_JP
                    .encode(&format!("{ja} (#{i})"))
                    .0
                    .into_owned(),
            ),
            1 => (
                "EUC-KR",
                "8bit",
                encoding_rs::EUC_KR
                    .encode(&format!("{ko} (#{i})"))
                    .0
                    .into_owned(),
            ),
            _ => ("UTF-8", "8bit", format!("{en}(#{i})").into_bytes()),
        };
        // Two in five (after the first few) answer an earlier ticket, by its tag or by References.
        let reply_to = (i >= 10 && (i % 5 == 4 || i % 5 == 2)).then(|| {
            let mut j = (i * 7919) % i;
            while mails[j].opener != j {
                j -= 1;
            }
            j
        });
        let (from, subject, threading, opener) = match reply_to {
            Some(j) if i % 10 == 4 => (
                sender[j].clone(),
                format!("Re: [JP-{}] order {j}", 1000 + ticket_no[j]),
                String::new(),
                j,
            ),
            Some(j) => (
                sender[j].clone(),
                format!("Re: order {j}"),
                format!(
                    "In-Reply-To: <{m}>\r\nReferences: <{m}>\r\n",
                    m = mails[j].message_id
                ),
                j,
            ),
            None => {
                let customer = &customers[i % customers.len()];
                let (local, domain) = customer.split_once('@').unwrap();
                (
                    format!("{local}+m{i}@{domain}"),
                    format!("order {i}"),
                    String::new(),
                    i,
                )
            }
        };
        let mut raw = format!(
            "From: Customer {i} <{from}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n{threading}Date: Sat, 21 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        )
        .into_bytes();
        if i % 10 == 0 {
            raw.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").as_bytes());
            raw.extend_from_slice(&body);
            raw.extend_from_slice(format!("\r\n--b{i}\r\nContent-Type: application/octet-stream; name=\"log{i}.bin\"\r\nContent-Disposition: attachment; filename=\"log{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b{i}--\r\n").as_bytes());
        } else {
            raw.extend_from_slice(
                format!("Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n")
                    .as_bytes(),
            );
            raw.extend_from_slice(&body);
            raw.extend_from_slice(b"\r\n");
        }
        ticket_no.push(if opener == i {
            openers += 1;
            openers - 1
        } else {
            ticket_no[opener]
        });
        sender.push(from);
        mails.push(Mail {
            raw,
            message_id,
            opener,
        });
    }
    mails
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (n, c) in data.chunks(3).enumerate() {
        if n > 0 && n % 19 == 0 {
            out.push_str("\r\n");
        }
        let v = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            out.push(if k <= c.len() {
                T[(v >> (18 - 6 * k)) as usize & 63] as char
            } else {
                '='
            });
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ten_times_while_ingesting_and_sending_loses_nothing() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let started = Instant::now();
    let s = stack();
    let jp = s.user("support-jp");
    let customers: Vec<String> = (0..CUSTOMERS).map(|_| s.user("cust")).collect();
    let mails = corpus(&customers, &jp);
    let openers: Vec<usize> = (0..MAILS).filter(|&i| mails[i].opener == i).collect();
    let dir = tempfile::tempdir().unwrap();
    let test_config = TestConfig::new(dir.path())
        .smtp(s)
        .outbound(&format!("concurrency = {IN_FLIGHT}"))
        .region(Region::jp().imap(s, &jp, dir.path(), "none"));
    let storage = test_config.storage_path().to_path_buf();
    let config = test_config.write_to(&dir.path().join("config.toml"));
    let raws: Vec<Vec<u8>> = mails.iter().map(|m| m.raw.clone()).collect();
    s.append(&jp, "INBOX", &raws[..FIRST], None).await;
    eprintln!(
        "{MAILS} mails ({} new tickets), first {FIRST} appended after {:?}",
        openers.len(),
        started.elapsed()
    );

    let mut rng = XorShift::from_env();
    let mut logs: Vec<String> = Vec::new();
    let per_round = (MAILS - FIRST) / KILLS;
    for round in 0..KILLS {
        let from = FIRST + round * per_round;
        s.append(&jp, "INBOX", &raws[from..from + per_round], None)
            .await;
        let mut daemon = DaemonProcess::spawn(&config);
        let delay = rng.range(300, 3000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        assert!(
            daemon.running(),
            "run {round} exited on its own (the store must open cleanly after a kill):\n{}",
            daemon.log()
        );
        daemon.kill();
        logs.push(daemon.log());
        // The store opens cleanly on its own after the kill (the CLI opens it, no daemon running).
        let tickets = cli_json(&config, &["tickets", "list", "--json"]);
        let outbox = cli_json(&config, &["outbox", "list", "--json"]);
        let sent = outbox
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["status"] == "sent")
            .count();
        eprintln!(
            "kill {round}: after {delay} ms (started: {}); {} tickets, {} acknowledgements queued, {sent} sent",
            daemon.logged(&["postdesk running"]),
            tickets.as_array().unwrap().len(),
            outbox.as_array().unwrap().len(),
        );
    }

    // A final clean run until everything is stored and sent.
    let mut daemon = DaemonProcess::spawn(&config);
    eventually(
        "every ticket stored and every acknowledgement sent",
        Duration::from_secs(240),
        async || {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = cli_json(&config, &["tickets", "list", "--json"]);
            if t.as_array().unwrap().len() < openers.len() {
                return false;
            }
            let o = cli_json(&config, &["outbox", "list", "--json"]);
            let o = o.as_array().unwrap();
            o.len() >= openers.len() && o.iter().all(|r| r["status"] == "sent")
        },
    )
    .await;
    // Postfix delivers to the customers' mailboxes moments after it accepted; wait until nothing more comes.
    let mut last = 0;
    let mut stable_since = Instant::now();
    eventually(
        "acknowledgements delivered",
        Duration::from_secs(60),
        async || {
            let mut n = 0;
            for c in &customers {
                n += s.count(c, "INBOX").await;
            }
            if n != last {
                last = n;
                stable_since = Instant::now();
            }
            n as usize >= openers.len() && stable_since.elapsed() > Duration::from_secs(3)
        },
    )
    .await;
    assert!(daemon.stop(), "clean stop:\n{}", daemon.log());
    logs.push(daemon.log());
    eprintln!("quiescent after {:?}", started.elapsed());

    // Tickets: one per new conversation, no id twice.
    let tickets = cli_json(&config, &["tickets", "list", "--json"]);
    let ids: Vec<&str> = tickets
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), openers.len(), "one ticket per new conversation");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "no ticket id twice"
    );

    // Every mail in exactly one ticket, the one its conversation opened.
    let store = Store::open(&storage).expect("the store opens after the last run");
    let mut home: HashMap<String, Vec<TicketId>> = HashMap::new();
    for t in store.tickets(None, None).unwrap() {
        for m in store.messages(&t.id).unwrap() {
            if m.direction == Direction::In {
                home.entry(m.message_id).or_default().push(t.id.clone());
            }
        }
    }
    for (i, m) in mails.iter().enumerate() {
        let found = home.get(&m.message_id).cloned().unwrap_or_default();
        assert_eq!(found.len(), 1, "mail {i} <{}> in {found:?}", m.message_id);
        let opened = &home[&mails[m.opener].message_id][0];
        assert_eq!(&found[0], opened, "mail {i} threads into its conversation");
    }
    assert_eq!(home.len(), MAILS, "no mail that was not sent");

    // Acknowledgements: one row per ticket, sent; in the mailboxes at least once, copies ≤ one per kill.
    let outbox = store.outbox_all().unwrap();
    assert!(outbox.iter().all(|o| o.kind == "ack"));
    let mut per_ticket: HashMap<&TicketId, usize> = HashMap::new();
    for o in &outbox {
        *per_ticket.entry(&o.ticket).or_default() += 1;
    }
    assert_eq!(per_ticket.len(), openers.len());
    assert!(
        per_ticket.values().all(|&n| n == 1),
        "one acknowledgement per ticket"
    );
    drop(store);
    let mut copies: HashMap<String, usize> = HashMap::new();
    for c in &customers {
        for raw in s.messages(c, "INBOX").await {
            let parsed = postdesk::mail::parse(&raw, postdesk::desk::ticket::Locale::En).unwrap();
            *copies.entry(parsed.message_id).or_default() += 1;
        }
    }
    for o in &outbox {
        assert!(
            copies.contains_key(&o.message_id),
            "acknowledgement of {} never arrived",
            o.ticket
        );
    }
    let known: HashSet<&str> = outbox.iter().map(|o| o.message_id.as_str()).collect();
    assert!(copies.keys().all(|m| known.contains(m.as_str())));
    let duplicates: usize = copies.values().map(|n| n - 1).sum();
    for o in outbox.iter().filter(|o| copies[&o.message_id] > 1) {
        let runs: Vec<usize> = (0..logs.len())
            .filter(|&r| {
                logs[r]
                    .lines()
                    .any(|l| l.contains(&format!("outbox={} ", o.id)) && l.contains("sent"))
            })
            .collect();
        eprintln!(
            "duplicate: {} outbox {} ×{}, attempts {}, logged sent in runs {runs:?}",
            o.ticket, o.id, copies[&o.message_id], o.attempts
        );
    }
    eprintln!(
        "{} acknowledgements delivered, {duplicates} duplicate copies after {KILLS} kills; {:?} in all",
        copies.len(),
        started.elapsed()
    );
    assert!(
        duplicates <= KILLS * IN_FLIGHT,
        "{duplicates} duplicate acknowledgements after {KILLS} kills with {IN_FLIGHT} in flight"
    );
    // The support mailbox: everything acknowledged at the source.
    let mut session = s.imap(&jp).await;
    session.select("INBOX").await.unwrap();
    assert!(session.search("UNSEEN").await.unwrap().is_empty());
}
