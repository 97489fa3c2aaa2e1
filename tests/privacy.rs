//! A customer's data: `customer export` writes all of it (JSON, attachment bytes), `customer erase` leaves
//! no trace of the address anywhere in the store while statistics still count the tickets, and retention
//! deletes closed tickets' attachments, then the tickets, driven by timers with an injected clock.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Duration, Utc};
use postdesk::desk::decide::Delivery;
use postdesk::desk::ticket::{Status, TicketId, TimerKind};
use postdesk::intake::Desk;
use postdesk::store::{Lookup, Storage, Store};
use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{Cli, Region, TestConfig};

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

/// The JP desk of these tests, with `tables` (e.g. `[retention]`) added.
fn config(root: &Path, tables: &str) -> TestConfig {
    TestConfig::new(root).table(tables).region(
        Region::jp()
            .agents(&["agent@example.com"])
            .agent_notify("jp-agents@example.com"),
    )
}

fn env(extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let config = config(&root, extra).write_to(&root.join("config.toml"));
    Env {
        _dir: dir,
        root,
        config,
    }
}

/// Run the binary with umask 000, so the modes it sets are its own doing.
fn postdesk(e: &Env, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    Cli::new(&e.config)
        .in_dir(&e.root)
        .umask_000()
        .run(args, stdin)
}

fn json(e: &Env, args: &[&str]) -> Value {
    let (code, out, err) = postdesk(e, args, b"");
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

fn with_attachment(
    from: &str,
    cc: &str,
    mid: &str,
    subject: &str,
    text: &str,
    name: &str,
    bytes: &str,
) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support-jp@example.com\r\n{cc}Subject: {subject}\r\nMessage-ID: <{mid}>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\r\n{bytes}\r\n--b--\r\n"
    )
    .into_bytes()
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

const KIM: &str = "kim@example.com";

#[test]
fn export_then_erase_leaves_no_trace_and_keeps_the_statistics() {
    let e = env("");
    let ingest = |raw: &[u8]| assert_eq!(postdesk(&e, &["ingest", "--region", "JP"], raw).0, 0);
    // JP-1000: Kim's own ticket, with a file that holds Kim's address and a card number in the text.
    ingest(&with_attachment(
        "Kim <Kim@Example.com>",
        "",
        "k1@mail.example.net",
        "broken screen",
        "画面が割れました。カード 4111 1111 1111 1111 で払いました。",
        "../../etc/passwd",
        "scan of the receipt for kim@example.com",
    ));
    // JP-1001: Bob's ticket with Kim in Cc; JP-1002: Bob alone, sending a file Kim's ticket shares.
    ingest(&with_attachment(
        "bob@example.org",
        "Cc: kim@example.com\r\n",
        "b1@mail.example.net",
        "for both of us",
        "my colleague Kim has the same problem",
        "shared.txt",
        "the same manual page",
    ));
    ingest(&with_attachment(
        "bob@example.org",
        "",
        "b2@mail.example.net",
        "another question",
        "unrelated to Kim",
        "manual.txt",
        "the same manual page",
    ));
    // The agent answers Kim: a relayed reply queued to Kim.
    let answer = "From: agent@example.com\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] broken screen\r\nMessage-ID: <a1@mail.example.net>\r\n\r\nWe will replace it.\r\n";
    ingest(answer.as_bytes());
    // Input that could not be read, mentioning Kim, kept in quarantine (as a Maildir intake does).
    {
        let store =
            Store::open_waiting(&e.root.join("data"), std::time::Duration::from_secs(10)).unwrap();
        store
            .quarantine(
                "JP",
                "maildir",
                "unreadable",
                b"\x00\x01 garbage from KIM@example.com",
            )
            .unwrap();
        store
            .quarantine("JP", "maildir", "unreadable", b"\x00\x01 someone else")
            .unwrap();
    }
    let shown = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert!(
        shown["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("**** **** **** 1111"),
        "card number masked: {}",
        shown["messages"][0]["text"]
    );

    // Export: Kim's two tickets, every message, the attachment bytes, mail addressed to Kim.
    let (code, out, err) = postdesk(&e, &["customer", "export", "KIM@example.com"], b"");
    assert_eq!(code, 0, "{err}");
    let date = Utc::now().format("%Y-%m-%d").to_string();
    let dir = e
        .root
        .join(format!("postdesk-export-kim@example.com-{date}"));
    assert!(out.contains("exported 2 ticket(s)"), "{out}");
    assert_eq!(mode(&dir), 0o700);
    let customer: Value =
        serde_json::from_slice(&std::fs::read(dir.join("customer.json")).unwrap()).unwrap();
    assert_eq!(
        customer["tickets"],
        serde_json::json!(["JP-1000", "JP-1001"])
    );
    assert!(customer["outbox"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["kind"] == "agent_reply"));
    assert_eq!(mode(&dir.join("customer.json")), 0o600);
    let t: Value =
        serde_json::from_slice(&std::fs::read(dir.join("tickets/JP-1000/ticket.json")).unwrap())
            .unwrap();
    assert_eq!(t["id"], "JP-1000");
    assert_eq!(t["messages"].as_array().unwrap().len(), 2);
    let att = &t["messages"][0]["attachments"][0];
    assert_eq!(
        att["filename"], "passwd",
        "sanitised, no path from the mail"
    );
    let file = dir.join("tickets/JP-1000/attachments/001-passwd");
    assert_eq!(mode(&file), 0o600);
    let bytes = std::fs::read(&file).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("scan of the receipt"));
    assert_eq!(sha(&bytes), att["sha256"].as_str().unwrap());
    assert_eq!(att["size"], bytes.len());
    assert!(dir
        .join("tickets/JP-1001/attachments/001-shared.txt")
        .exists());
    assert!(
        !dir.join("tickets/JP-1002").exists(),
        "Bob's own ticket is not Kim's"
    );

    // Erase: without --yes nothing happens.
    let (code, out, _) = postdesk(&e, &["customer", "erase", KIM], b"");
    assert_eq!(code, 1);
    assert!(
        out.contains("would erase 2 ticket(s) (JP-1000, JP-1001)"),
        "{out}"
    );
    assert_eq!(json(&e, &["tickets", "show", "JP-1000", "--json"]), shown);
    let before = json(&e, &["stats", "--json"]);
    let kims_blob = att["sha256"].as_str().unwrap().to_string();
    let shared_blob = sha(b"the same manual page");

    let (code, out, err) = postdesk(&e, &["customer", "erase", KIM, "--yes"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("erased 2 ticket(s)"), "{out}");
    assert!(out.contains("1 quarantined input(s) deleted"), "{out}");
    // Nor in the store's files (the command ran without a daemon: the CLI rewrote the store itself).
    let hits = traces(
        &e.root.join("data"),
        &[KIM, "scan of the receipt", "broken screen"],
    );
    assert!(hits.is_empty(), "still in the store's files: {hits:?}");
    assert_eq!(
        json(&e, &["stats", "--json"])[0]["quarantined"],
        1,
        "the other input stays"
    );
    for id in ["JP-1000", "JP-1001"] {
        let t = json(&e, &["tickets", "show", id, "--json"]);
        assert_eq!(t["erased"], true);
        assert!(t["requester"]
            .as_str()
            .unwrap()
            .starts_with(if id == "JP-1000" { "erased-" } else { "bob@" }));
        for m in t["messages"].as_array().unwrap() {
            assert_eq!(m["text"], "");
            assert_eq!(m["subject"], "");
            assert!(m["attachments"].as_array().unwrap().is_empty());
        }
    }
    // The skeleton keeps what statistics need.
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(t["first_response_at"], shown["first_response_at"]);
    assert_eq!(t["created_at"], shown["created_at"]);
    assert_eq!(t["category"], shown["category"]);
    assert_eq!(
        json(&e, &["stats", "--json"])[0]["by_status"],
        before[0]["by_status"]
    );
    assert_eq!(
        json(&e, &["tickets", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // Queued mail to Kim is cancelled.
    for row in json(&e, &["outbox", "list", "--json"]).as_array().unwrap() {
        if row["ticket"] == "JP-1000" || row["ticket"] == "JP-1001" {
            assert_ne!(row["status"], "queued", "{row}");
        }
    }
    // Bob's own ticket is untouched, the file it shares survives.
    let bob = json(&e, &["tickets", "show", "JP-1002", "--json"]);
    assert_eq!(bob["messages"][0]["text"], "unrelated to Kim");

    // No trace of the address in any tree, keys, values and blobs alike.
    let store = Store::open(&e.root.join("data")).unwrap();
    let mut hits = Vec::new();
    store
        .scan_all(|tree, k, v| {
            for (what, bytes) in [("key", k), ("value", v)] {
                let lower = bytes.to_ascii_lowercase();
                if lower.windows(KIM.len()).any(|w| w == KIM.as_bytes()) {
                    hits.push(format!("{tree} {what}"));
                }
            }
        })
        .unwrap();
    assert!(hits.is_empty(), "the address is still in: {hits:?}");
    assert!(
        store.blob(&kims_blob).unwrap().is_none(),
        "Kim's file deleted"
    );
    assert_eq!(
        store.blob(&shared_blob).unwrap().as_deref(),
        Some(&b"the same manual page"[..]),
        "a file Bob's ticket still refers to stays"
    );
    assert!(store.tickets_of_requester(KIM).unwrap().is_empty());
    assert!(store
        .tickets_for_message_id("k1@mail.example.net")
        .unwrap()
        .is_empty());
    drop(store);
    // Kim writing again gets a new ticket, not the erased one.
    ingest(b"From: kim@example.com\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] broken screen\r\nMessage-ID: <k2@mail.example.net>\r\n\r\nany news?\r\n");
    assert_eq!(
        json(&e, &["tickets", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        4
    );
}

fn desk(root: &Path, retention: &str) -> Desk {
    let config = config(root, retention).parse();
    let store = Arc::new(Store::open(&config.storage.path).unwrap());
    Desk::new(config, store).unwrap()
}

/// What `schedule::tick` does, at an injected time.
fn tick(d: &Desk, now: chrono::DateTime<Utc>) -> Vec<TimerKind> {
    let due = d.store.timers_due(now, 100).unwrap();
    for (id, kind, _) in &due {
        d.fire_timer(id, *kind, now).unwrap();
    }
    due.into_iter().map(|(_, k, _)| k).collect()
}

#[test]
fn retention_deletes_attachments_then_whole_closed_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let d = desk(
        dir.path(),
        "[retention]\nclosed_attachments_after = \"10s\"\nclosed_tickets_after = \"30s\"\n[timers.first_response]\nnormal = \"1000d\"\nlow = \"1000d\"",
    );
    let region = d.config.region[0].clone();
    let t0 = Utc::now();
    let ingest = |raw: &[u8]| {
        d.ingest(&region, raw, "test", &Delivery::normal(), false, t0)
            .unwrap()
            .unwrap()
    };
    ingest(&with_attachment(
        "a@example.com",
        "",
        "m1@x",
        "one",
        "first",
        "a.txt",
        "only in ticket one",
    ));
    ingest(&with_attachment(
        "b@example.com",
        "",
        "m2@x",
        "two",
        "second",
        "b.txt",
        "shared bytes",
    ));
    ingest(&with_attachment(
        "c@example.com",
        "",
        "m3@x",
        "three",
        "third",
        "c.txt",
        "shared bytes",
    ));
    let (one, two) = (TicketId::new("JP", 1000), TicketId::new("JP", 1001));
    let hash_one = d.store.messages(&one).unwrap()[0].content_hash.clone();
    assert!(d.store.duplicate_of("m1@x", &hash_one).unwrap().is_some());
    for id in [&one, &two] {
        d.set_status(id, Status::Closed, t0).unwrap().unwrap();
    }
    // Nothing is due before its time.
    assert!(!tick(&d, t0 + Duration::seconds(9)).contains(&TimerKind::PurgeAttachments));
    assert_eq!(
        tick(&d, t0 + Duration::seconds(11)),
        vec![TimerKind::PurgeAttachments, TimerKind::PurgeAttachments]
    );
    let m = &d.store.messages(&one).unwrap()[0];
    assert_eq!(m.text.trim(), "first", "the conversation stays");
    assert!(m.attachments.is_empty());
    assert!(d.store.ticket(&one).unwrap().unwrap().attachments_purged);
    assert!(d.store.blob(&sha(b"only in ticket one")).unwrap().is_none());
    assert!(
        d.store.blob(&sha(b"shared bytes")).unwrap().is_some(),
        "ticket three (open) still refers to it"
    );
    // Fired once: the ticket keeps only its purge timer.
    let timers: Vec<TimerKind> = d
        .store
        .ticket(&one)
        .unwrap()
        .unwrap()
        .timers
        .iter()
        .map(|t| t.kind)
        .collect();
    assert_eq!(timers, vec![TimerKind::PurgeTicket]);

    // Ticket two is reopened: its deletion no longer applies.
    d.set_status(&two, Status::Open, t0 + Duration::seconds(20))
        .unwrap()
        .unwrap();
    tick(&d, t0 + Duration::seconds(31));
    assert!(
        d.store.ticket(&one).unwrap().is_none(),
        "ticket one deleted"
    );
    assert!(d.store.messages(&one).unwrap().is_empty());
    assert!(d.store.outbox_of_ticket(&one).unwrap().is_empty());
    assert!(d
        .store
        .tickets_of_requester("a@example.com")
        .unwrap()
        .is_empty());
    assert!(d.store.tickets_for_message_id("m1@x").unwrap().is_empty());
    assert!(d.store.duplicate_of("m1@x", &hash_one).unwrap().is_none());
    assert!(
        d.store.ticket(&two).unwrap().is_some(),
        "reopened ticket two kept"
    );
    assert_eq!(d.store.counter("retention:tickets:JP").unwrap(), 1);
    assert_eq!(d.store.counter("retention:attachments:JP").unwrap(), 2);
    assert!(d
        .store
        .timers_all()
        .unwrap()
        .iter()
        .all(|(id, _, _)| *id != one));

    // `postdesk stats` shows the purges.
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(postdesk::cli::with_desk(
            &d,
            postdesk::cli::Command::Stats { json: true },
            b"",
            &mut out,
            &mut err,
        ));
    assert_eq!(code, 0);
    let stats: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(stats[0]["retention_purged_tickets"], 1);
    assert_eq!(stats[0]["retention_removed_attachments"], 2);
}

#[test]
fn no_retention_config_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let d = desk(dir.path(), "");
    let region = d.config.region[0].clone();
    let t0 = Utc::now();
    d.ingest(
        &region,
        &with_attachment("a@example.com", "", "m1@x", "one", "first", "a.txt", "kept"),
        "test",
        &Delivery::normal(),
        false,
        t0,
    )
    .unwrap()
    .unwrap();
    let one = TicketId::new("JP", 1000);
    d.set_status(&one, Status::Closed, t0).unwrap().unwrap();
    assert!(d.store.ticket(&one).unwrap().unwrap().timers.is_empty());
    tick(&d, t0 + Duration::days(5000));
    assert_eq!(d.store.messages(&one).unwrap()[0].attachments.len(), 1);
}

#[test]
fn the_daemon_carries_out_retention_and_stats_show_it() {
    let e = env("[retention]\nclosed_attachments_after = \"1s\"\nclosed_tickets_after = \"2s\"\n");
    let raw = with_attachment(
        "a@example.com",
        "",
        "d1@x",
        "one",
        "first",
        "a.txt",
        "bytes",
    );
    assert_eq!(postdesk(&e, &["ingest", "--region", "JP"], &raw).0, 0);
    assert_eq!(
        postdesk(&e, &["tickets", "set-status", "JP-1000", "closed"], b"").0,
        0
    );
    let due = json(&e, &["tickets", "due", "--json"]);
    let kinds: Vec<&str> = due
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"purge_attachments") && kinds.contains(&"purge_ticket"),
        "{due}"
    );
    let mut daemon = Cli::new(&e.config).daemon();
    let start = std::time::Instant::now();
    let purged = loop {
        let list = json(&e, &["tickets", "list", "--json"]);
        if list.as_array().unwrap().is_empty() {
            break true;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let stats = json(&e, &["stats", "--json"]);
    daemon.stop();
    assert!(purged, "the closed ticket was not deleted");
    assert_eq!(stats[0]["retention_purged_tickets"], 1);
    assert_eq!(stats[0]["retention_removed_attachments"], 1);
    let (code, table, _) = postdesk(&e, &["stats"], b"");
    assert_eq!(code, 0);
    assert!(
        table.contains("JP 1 ticket(s) purged, 1 attachment(s) removed"),
        "{table}"
    );
}

/// A desk holding one ticket of Kim's.
fn env_with_kim() -> Env {
    let e = env("");
    let raw = with_attachment(KIM, "", "k1@example.com", "help", "text", "a.txt", "bytes");
    assert_eq!(postdesk(&e, &["ingest", "--region", "JP"], &raw).0, 0);
    e
}

#[test]
fn export_refuses_a_symlinked_directory() {
    let e = env_with_kim();
    let elsewhere = e.root.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, e.root.join("link")).unwrap();
    let (code, _, err) = postdesk(&e, &["customer", "export", KIM, "--out", "link"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    let (code, _, err) = postdesk(&e, &["customer", "export", KIM, "--out", "real"], b"");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn export_refuses_a_directory_owned_by_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        return support::skipped("needs root to make a directory owned by another user");
    }
    let e = env_with_kim();
    let theirs = e.root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let (code, _, err) = postdesk(&e, &["customer", "export", KIM, "--out", "theirs"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("belongs to user id 65534"), "{err}");
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
}

/// Every regular file under `dir`, recursively (sockets and the like skipped).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let t = entry.file_type().unwrap();
        if t.is_dir() {
            out.extend(files_under(&entry.path()));
        } else if t.is_file() {
            out.push(entry.path());
        }
    }
    out
}

/// (file, needle, occurrences) for every needle found (ASCII case-insensitive) in a file under `dir`.
fn traces(dir: &Path, needles: &[&str]) -> Vec<(String, String, usize)> {
    let mut hits = Vec::new();
    for file in files_under(dir) {
        let bytes = std::fs::read(&file).unwrap().to_ascii_lowercase();
        for needle in needles {
            let n = needle.to_ascii_lowercase().into_bytes();
            let count = bytes
                .windows(n.len())
                .filter(|w| *w == n.as_slice())
                .count();
            if count > 0 {
                let rel = file.strip_prefix(dir).unwrap().display().to_string();
                hits.push((rel, needle.to_string(), count));
            }
        }
    }
    hits
}

/// Wait until the daemon answers on its control socket.
fn wait_for_daemon(e: &Env, daemon: &mut support::DaemonProcess) {
    let sock = e.root.join("data").join("postdesk.sock");
    let start = std::time::Instant::now();
    while !sock.exists() {
        assert!(daemon.running(), "the daemon exited: {}", daemon.log());
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no control socket: {}",
            daemon.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Issue 14: after `customer erase --yes` through the running daemon, `tickets show` and a new backup had
/// no trace, but sled's log files still held the address (106 times) and the message text, also after a
/// restart. Every file under storage.path is scanned, not the trees.
#[test]
fn erase_leaves_no_trace_in_any_store_file() {
    const TEXT: &str = "zebra-umbrella-4711 my screen cracked";
    const FILE: &str = "receipt-quokka-9931 for the screen";
    let e = env("");
    let mut daemon = Cli::new(&e.config).daemon();
    wait_for_daemon(&e, &mut daemon);
    let ingest = |raw: &[u8]| {
        let (code, _, err) = postdesk(&e, &["ingest", "--region", "JP"], raw);
        assert_eq!(code, 0, "{err}")
    };
    // Kim's ticket, then replies that rewrite it (each an old version in sled's log), and Bob's ticket.
    ingest(&with_attachment(
        "Kim <Kim@Example.com>",
        "",
        "k1@mail.example.net",
        "broken screen kim@example.com",
        TEXT,
        "receipt.txt",
        FILE,
    ));
    for i in 2..6 {
        ingest(format!("From: kim@example.com\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] broken screen\r\nMessage-ID: <k{i}@mail.example.net>\r\n\r\n{TEXT} again {i}\r\n").as_bytes());
    }
    ingest(b"From: agent@example.com\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] broken screen\r\nMessage-ID: <a1@mail.example.net>\r\n\r\nWe will replace it.\r\n");
    ingest(b"From: bob@example.org\r\nTo: support-jp@example.com\r\nSubject: other\r\nMessage-ID: <b1@mail.example.net>\r\n\r\nbob's own question\r\n");
    let needles = [KIM, "zebra-umbrella-4711", "receipt-quokka-9931"];
    assert!(
        !traces(&e.root.join("data"), &needles).is_empty(),
        "the scan finds the data before the erasure"
    );

    let (code, out, err) = postdesk(&e, &["customer", "erase", KIM, "--yes"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("erased 1 ticket(s)"), "{out}");
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(t["erased"], true);
    // Right after the erasure, the daemon still running.
    let hits = traces(&e.root.join("data"), &needles);
    assert!(hits.is_empty(), "after the erasure: {hits:?}");

    // And after a restart (sled replays its log on open).
    assert!(daemon.stop(), "{}", daemon.log());
    let mut daemon = Cli::new(&e.config).daemon();
    wait_for_daemon(&e, &mut daemon);
    let bob = json(&e, &["tickets", "show", "JP-1001", "--json"]);
    assert_eq!(bob["messages"][0]["text"], "bob's own question");
    ingest(b"From: bob@example.org\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1001] other\r\nMessage-ID: <b2@mail.example.net>\r\n\r\nstill there?\r\n");
    assert!(daemon.stop(), "{}", daemon.log());
    let hits = traces(&e.root.join("data"), &needles);
    assert!(hits.is_empty(), "after erase and restart: {hits:?}");
    // The store works on: Bob's reply joined his ticket, ids did not repeat.
    let bob = json(&e, &["tickets", "show", "JP-1001", "--json"]);
    assert_eq!(bob["messages"].as_array().unwrap().len(), 2);
}
