//! Fault tests: the real `postdesk run` against the real mail stack while something goes wrong under it —
//! the IMAP server restarted mid-fetch, the SMTP server down for a while, the storage disk full, a corrupt
//! and a truncated mail in the middle of a batch, the configured mailbox deleted. The IMAP ones run against
//! each server layout (`support::Server`: Dovecot, Dovecot with an `INBOX.` namespace, Cyrus). Each asserts that nothing is
//! lost (every mail ends up exactly once in a ticket or in quarantine, every acknowledgement goes out once),
//! that the daemon says what happened in its log, and that it is still serving afterwards.
//!
//! The tests that stop a server use a private stack (`support::private_stack`), so the others running in
//! parallel never see it go away.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{
    cli_json, eventually, mail, stack, DaemonProcess, Region, Server, Stack, TestConfig,
};

/// Write `config` with one region per `(code, locale, user, extra intake lines)`, each taking mail from
/// `user`'s mailboxes on `s` by plain IMAP; returns its path.
fn write_config(
    s: &Stack,
    dir: &Path,
    config: TestConfig,
    regions: &[(&str, &str, &str, &str)],
) -> PathBuf {
    let regions = regions.iter().map(|(code, locale, user, extra)| {
        Region::new(code, user)
            .locale(locale)
            .imap(s, user, dir, "none")
            .intake("reconnect_max = \"2s\"\n")
            .intake(extra)
    });
    config.regions(regions).write_to(&dir.join("config.toml"))
}

fn tickets(config: &Path) -> Vec<serde_json::Value> {
    cli_json(config, &["tickets", "list", "--json"])
        .as_array()
        .unwrap()
        .clone()
}

fn requesters(config: &Path) -> Vec<String> {
    tickets(config)
        .iter()
        .map(|t| t["requester"].as_str().unwrap().to_string())
        .collect()
}

/// `n` plain customer mails from distinct senders `<tag><i>@example.jp`.
fn mails(tag: &str, n: usize, to: &str) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            mail(
                &format!("{tag}{i}@example.jp"),
                to,
                &format!("{tag} question {i}"),
                &format!("{tag}{i}@example.jp"),
                &"配送状況を教えてください。".repeat(20),
            )
        })
        .collect()
}

/// UIDs of unseen mail in `user`'s INBOX.
async fn unseen(s: &Stack, user: &str) -> usize {
    let mut session = s.imap(user).await;
    session.select("INBOX").await.unwrap();
    let n = session.search("UNSEEN").await.unwrap().len();
    let _ = session.logout().await;
    n
}

/// Each requester exactly once: no mail lost, none doubled.
fn assert_each_once(config: &Path, expected: impl IntoIterator<Item = String>) {
    let got = requesters(config);
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "a mail became two tickets: {got:?}"
    );
    let expected: HashSet<String> = expected.into_iter().collect();
    let got: HashSet<String> = got.into_iter().collect();
    assert_eq!(got, expected);
}

async fn imap_server_restarted_mid_fetch_loses_and_doubles_nothing(server: Server) {
    let s = server.private("postdesk-ms-f-imap");
    let jp = s.user("support-jp");
    // Dovecot's run is the long one (three batches); the other layouts need only be cut mid-batch.
    let n: usize = if server == Server::Dovecot { 1500 } else { 600 };
    s.append(&jp, "INBOX", &mails("r", n, &jp), None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &s,
        dir.path(),
        TestConfig::new(dir.path()),
        &[("JP", "ja", &jp, "")],
    );
    let mut daemon = DaemonProcess::spawn(&config);
    eventually("IMAP connected", Duration::from_secs(20), async || {
        daemon.logged(&["IMAP connected"])
    })
    .await;
    // The first batch of 500 is being fetched or stored now (a debug build takes well over a second).
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.restart_imap();
    eprintln!(
        "{server:?} restarted with {} of {n} mails stored",
        tickets(&config).len()
    );
    let took = eventually("all tickets", Duration::from_secs(90), async || {
        tickets(&config).len() >= n
    })
    .await;
    eprintln!("all {n} stored {took:?} after the restart");
    assert!(
        daemon.logged(&["IMAP connection lost", "retrying with backoff"]),
        "the lost connection is logged:\n{}",
        daemon.log()
    );
    // The last batch may be stored before the reconnect (its fetch finished before the restart): the
    // reconnect comes with the backoff.
    let reconnected = eventually("the reconnect", Duration::from_secs(30), async || {
        daemon.log().matches("IMAP connected").count() >= 2
    })
    .await;
    eprintln!("reconnected {reconnected:?} later");
    assert!(
        daemon.log().matches("IMAP connected").count() >= 2,
        "connected, then reconnected:\n{}",
        daemon.log()
    );
    // Still serving: a new mail after the restart is taken too.
    s.append(&jp, "INBOX", &mails("after", 1, &jp), None).await;
    eventually(
        "the mail after the restart",
        Duration::from_secs(20),
        async || tickets(&config).len() > n,
    )
    .await;
    assert!(daemon.running());
    assert!(daemon.stop(), "clean stop:\n{}", daemon.log());
    assert_each_once(
        &config,
        (0..n)
            .map(|i| format!("r{i}@example.jp"))
            .chain(["after0@example.jp".to_string()]),
    );
    assert_eq!(
        unseen(&s, &jp).await,
        0,
        "every mail acknowledged at the source"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_for_a_while_queues_acknowledgements_then_sends_each_once() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = support::private_stack("postdesk-ms-f-smtp");
    let jp = s.user("support-jp");
    let customer = s.user("cust");
    let (local, domain) = customer.split_once('@').unwrap();
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        &s,
        dir.path(),
        TestConfig::new(dir.path()).smtp(&s),
        &[("JP", "ja", &jp, "")],
    );
    s.stop_smtp();
    let mut daemon = DaemonProcess::spawn(&config);
    // Customer mail keeps arriving (appended: the stack's own SMTP is down) from distinct addresses that all
    // land in one mailbox.
    let raws: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let from = format!("{local}+s{i}@{domain}");
            mail(
                &from,
                &jp,
                "注文について",
                &format!("smtp{i}@example.jp"),
                "届きません",
            )
        })
        .collect();
    s.append(&jp, "INBOX", &raws, None).await;
    eventually(
        "tickets, acknowledgements queued and failing",
        Duration::from_secs(30),
        async || {
            let outbox = cli_json(&config, &["outbox", "list", "--json"]);
            let rows = outbox.as_array().unwrap();
            rows.len() == N
                && rows
                    .iter()
                    .all(|r| r["status"] == "queued" && r["attempts"].as_u64() >= Some(2))
        },
    )
    .await;
    assert!(
        daemon.logged(&["could not send", "check [outbound]"]),
        "a clear log line:\n{}",
        daemon.log()
    );
    assert_eq!(s.count(&customer, "INBOX").await, 0);
    // Back soon: the retries back off exponentially (retry_base 200 ms here), so a long outage would only
    // make this test wait longer.
    s.start_smtp();
    eventually(
        "every acknowledgement sent",
        Duration::from_secs(60),
        async || {
            let outbox = cli_json(&config, &["outbox", "list", "--json"]);
            outbox
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["status"] == "sent")
        },
    )
    .await;
    eventually(
        "every acknowledgement delivered",
        Duration::from_secs(30),
        async || s.count(&customer, "INBOX").await as usize >= N,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = s.messages(&customer, "INBOX").await;
    let ids: HashSet<String> = delivered
        .iter()
        .map(|raw| {
            postdesk::mail::parse(raw, postdesk::desk::ticket::Locale::Ja)
                .unwrap()
                .message_id
        })
        .collect();
    assert_eq!(
        delivered.len(),
        N,
        "each acknowledgement once, no duplicates"
    );
    assert_eq!(ids.len(), N);
    assert!(daemon.running());
    assert!(daemon.stop(), "clean stop:\n{}", daemon.log());
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .ok()?;
        if !out.status.success() {
            support::skipped(&format!(
                "cannot mount a tmpfs here ({}); the disk-full test needs root and mount permission",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        Some(Tmpfs(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fill the filesystem of `path` until a write fails; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    filler
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_keeps_mail_on_the_server_and_recovers_when_space_returns() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let dir = tempfile::tempdir().unwrap();
    // Bigger than the store's free-space margin (postdesk::store::MIN_FREE_BYTES), so the filler crosses it.
    let Some(fs) = Tmpfs::mount(&dir.path().join("disk"), "160m") else {
        return;
    };
    let storage = fs.0.join("data");
    let config = write_config(
        s,
        dir.path(),
        TestConfig::new(dir.path()).storage(&storage),
        &[("JP", "ja", &jp, "")],
    );
    let mut daemon = DaemonProcess::spawn(&config);
    s.append(&jp, "INBOX", &mails("before", 5, &jp), None).await;
    eventually("the first tickets", Duration::from_secs(20), async || {
        tickets(&config).len() == 5
    })
    .await;
    let filler = fill(&fs.0);
    s.append(&jp, "INBOX", &mails("full", 30, &jp), None).await;
    eventually(
        "the failed write logged",
        Duration::from_secs(30),
        async || {
            daemon.logged(&["could not store a batch", "stay on the server", "MiB free"])
                || !daemon.running()
        },
    )
    .await;
    assert!(
        daemon.running(),
        "the daemon must survive a full disk:\n{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        unseen(s, &jp).await,
        30,
        "mail that could not be stored stays unseen on the server"
    );
    std::fs::remove_file(&filler).unwrap();
    eventually(
        "recovery once space returns",
        Duration::from_secs(60),
        async || tickets(&config).len() == 35,
    )
    .await;
    // Still serving.
    s.append(&jp, "INBOX", &mails("after", 1, &jp), None).await;
    eventually(
        "the mail after recovery",
        Duration::from_secs(20),
        async || tickets(&config).len() == 36,
    )
    .await;
    assert!(daemon.stop(), "clean stop:\n{}", daemon.log());
    assert_each_once(
        &config,
        (0..5)
            .map(|i| format!("before{i}@example.jp"))
            .chain((0..30).map(|i| format!("full{i}@example.jp")))
            .chain(["after0@example.jp".to_string()]),
    );
    assert_eq!(unseen(s, &jp).await, 0);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_truncated_mail_in_a_batch_is_kept_and_the_rest_ingested() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let good = |i: usize| {
        mail(
            &format!("good{i}@example.jp"),
            &jp,
            "question",
            &format!("good{i}@example.jp"),
            "body",
        )
    };
    let truncated = {
        let mut raw = b"From: cut@example.jp\r\nTo: x@example.com\r\nSubject: log attached\r\nMessage-ID: <cut@example.jp>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nsee the log\r\n--b\r\nContent-Type: application/octet-stream; name=\"a.log\"\r\nContent-Disposition: attachment; filename=\"a.log\"\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        raw.extend_from_slice(b"SGVsbG8gd29ybGQsIHRoaXMgaXMgYSBsb2cgZmlsZQ==\r\nSGVsbG8gd29y"); // cut mid-base64, no closing boundary
        raw
    };
    let garbage: Vec<u8> = (0..2000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
        .collect();
    let bad_headers = b"From: \xff\xfe broken <hdr@example.jp>\r\nSubject: =?ISO-2022-JP?B?GyRCJSIlJCUmJSgbKEI?=\xff\r\nMessage-ID: <hdr@example.jp>\r\n\r\n\xff\xfe\x00 text\r\n".to_vec();
    let batch = vec![
        good(0),
        garbage,
        good(1),
        truncated,
        good(2),
        bad_headers,
        good(3),
    ];
    let total = batch.len();
    s.append(&jp, "INBOX", &batch, None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        s,
        dir.path(),
        TestConfig::new(dir.path()),
        &[("JP", "ja", &jp, "")],
    );
    let mut daemon = DaemonProcess::spawn(&config);
    let quarantined = || {
        cli_json(&config, &["stats", "--json"])[0]["quarantined"]
            .as_u64()
            .unwrap() as usize
    };
    eventually(
        "every mail stored or quarantined",
        Duration::from_secs(30),
        async || tickets(&config).len() + quarantined() == total,
    )
    .await;
    let list = tickets(&config);
    let who: HashSet<&str> = list
        .iter()
        .map(|t| t["requester"].as_str().unwrap())
        .collect();
    for i in 0..4 {
        assert!(
            who.contains(format!("good{i}@example.jp").as_str()),
            "good{i} lost: {who:?}"
        );
    }
    // The truncated mail is a ticket whose damage is noted, with the text it had.
    let cut = list
        .iter()
        .find(|t| t["requester"] == "cut@example.jp")
        .expect("the truncated mail is kept as a ticket");
    let shown = cli_json(
        &config,
        &["tickets", "show", cut["id"].as_str().unwrap(), "--json"],
    );
    let message = &shown["messages"][0];
    assert!(
        message["text"].as_str().unwrap().contains("see the log"),
        "{shown}"
    );
    assert!(
        !message["damage"]
            .as_array()
            .map(|d| d.is_empty())
            .unwrap_or(true),
        "the damage is noted: {shown}"
    );
    assert!(quarantined() >= 1, "the garbage is quarantined");
    assert!(
        daemon.logged(&["not a mail", "quarantine"]) || daemon.logged(&["quarantined"]),
        "{}",
        daemon.log()
    );
    // Nothing left unseen in INBOX: stored mail is \Seen, quarantined mail moved aside.
    eventually("INBOX acknowledged", Duration::from_secs(10), async || {
        unseen(s, &jp).await == 0
    })
    .await;
    assert_eq!(
        s.count(&jp, "INBOX").await as usize + s.count(&jp, "postdesk-quarantine").await as usize,
        total,
        "no mail vanished from the server"
    );
    // Still serving.
    s.append(&jp, "INBOX", &[good(9)], None).await;
    eventually("the next mail", Duration::from_secs(20), async || {
        requesters(&config).contains(&"good9@example.jp".to_string())
    })
    .await;
    assert!(daemon.stop(), "clean stop:\n{}", daemon.log());
}

async fn a_mailbox_deleted_under_postdesk_is_reported_and_taken_again_once_it_exists(
    server: Server,
) {
    let s = server.stack();
    let jp = s.user("support-jp");
    let kr = s.user("support-kr");
    // `mailboxes = ["Tickets"]` is relative: INBOX.Tickets where the personal namespace is INBOX.
    let tickets_folder = server.folder("Tickets");
    s.append(&jp, &tickets_folder, &mails("one", 1, &jp), None)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        s,
        dir.path(),
        TestConfig::new(dir.path()),
        &[
            ("JP", "ja", &jp, "mailboxes = [\"Tickets\"]\n"),
            ("KR", "ko", &kr, ""),
        ],
    );
    let mut daemon = DaemonProcess::spawn(&config);
    eventually("the first ticket", Duration::from_secs(20), async || {
        tickets(&config).len() == 1
    })
    .await;
    {
        let mut session = s.imap(&jp).await;
        session
            .delete(postdesk::intake::imap::folder::encode(&tickets_folder))
            .await
            .unwrap();
        let _ = session.logout().await;
    }
    // IDLE on a deleted mailbox: Dovecot ends the session; the reconnect finds the mailbox gone.
    eventually(
        "the missing mailbox logged",
        Duration::from_secs(30),
        async || daemon.logged(&["IMAP mailbox missing", "\"Tickets\""]),
    )
    .await;
    // The other region keeps working meanwhile.
    s.append(&kr, "INBOX", &mails("kr", 1, &kr), None).await;
    eventually("the KR ticket", Duration::from_secs(20), async || {
        tickets(&config).iter().any(|t| t["region"] == "KR")
    })
    .await;
    assert!(daemon.running());
    // Recreated with new mail: taken again.
    s.append(&jp, &tickets_folder, &mails("two", 1, &jp), None)
        .await;
    eventually(
        "the mail in the recreated mailbox",
        Duration::from_secs(30),
        async || requesters(&config).contains(&"two0@example.jp".to_string()),
    )
    .await;
    assert!(daemon.stop(), "clean stop:\n{}", daemon.log());
    assert_each_once(
        &config,
        ["one0@example.jp", "kr0@example.jp", "two0@example.jp"].map(String::from),
    );
}

each_server!(
    imap_server_restarted_mid_fetch_loses_and_doubles_nothing,
    a_mailbox_deleted_under_postdesk_is_reported_and_taken_again_once_it_exists,
);
