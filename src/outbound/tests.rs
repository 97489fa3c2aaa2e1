//! Regression tests of outgoing mail against hostile sizes (issue 13): no servers, the file transport.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::transport::{build_message, Transport};
use super::worker::{send_due, RetryPolicy};
use super::{sample_item, OutboxItem, OutboxStatus};
use crate::config::{OutboundConfig, TransportKind};
use crate::store::{Change, Storage, StorageExt, Store};

/// Run `f` on a thread of its own and wait at most `limit` for it: a quadratic step fails the test
/// (instead of hanging the test binary) while the linear one finishes in a fraction of the limit.
fn within<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("{what} took longer than {}s", limit.as_secs()))
}

fn file_transport(dir: &Path) -> Transport {
    Transport::from_config(&OutboundConfig {
        transport: TransportKind::File,
        file_dir: Some(dir.to_path_buf()),
        ..OutboundConfig::default()
    })
    .unwrap()
}

/// `n` lines of LF-only text, about `bytes` long.
fn lf_text(bytes: usize) -> String {
    let line = "the customer wrote a very long mail with many short lines\n";
    line.repeat(bytes / line.len() + 1)
}

fn emls(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    v
}

#[test]
fn lf_only_text_is_sent_in_linear_time() {
    // 16 MB of short LF lines: lettre's per-line CR insertion is quadratic (4 MB took 10.7 s, so this
    // would take minutes); handed CRLF text, it is one linear pass.
    let mut item = sample_item(1, 1000);
    item.text = lf_text(16 << 20);
    let raw = within(
        Duration::from_secs(60),
        "building a 16 MB mail",
        move || build_message(&item).unwrap().formatted(),
    );
    let text = String::from_utf8_lossy(&raw);
    assert!(text.contains("the customer wrote"));
    assert!(
        !raw.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
        "bare LF in the mail"
    );
}

#[test]
fn a_45mb_text_mail_does_not_stall_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut big = sample_item(1, 1000);
    big.kind = "agent_notify".into();
    big.text = lf_text(45 << 20);
    let small = sample_item(2, 1001);
    store
        .write(|tx| {
            tx.commit(&Change {
                outbox: vec![big, small],
                ..Change::default()
            })
        })
        .unwrap();
    let transport = file_transport(&out);
    let store = std::sync::Arc::new(store);
    let s = store.clone();
    let n = within(
        Duration::from_secs(120),
        "a round of the outbox",
        move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(send_due(&s, &transport, &RetryPolicy::default(), 8))
                .unwrap()
        },
    );
    assert_eq!(n, 2);
    let small = store.outbox_item(2).unwrap().unwrap();
    assert_eq!(small.status, OutboxStatus::Sent, "{:?}", small.last_error);
    let big = store.outbox_item(1).unwrap().unwrap();
    assert_ne!(
        big.status,
        OutboxStatus::Queued,
        "the big mail would stall every restart"
    );
}

#[test]
fn eml_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let transport = file_transport(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(transport.send(&sample_item(1, 1000), &[]))
        .unwrap();
    let files = emls(dir.path());
    assert_eq!(files.len(), 1);
    let mode = std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", files[0].display());
    // Named as lettre names them: a UUID, `.eml`; the contents are the message.
    let name = files[0].file_stem().unwrap().to_string_lossy().to_string();
    assert_eq!(name.len(), 36, "{name}");
    assert_eq!(name.matches('-').count(), 4, "{name}");
    let raw = std::fs::read(&files[0]).unwrap();
    assert!(String::from_utf8_lossy(&raw).contains("Message-ID: <m1@example.com>"));
}

fn long_lines(raw: &[u8]) -> Vec<String> {
    raw.split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.len() > 998)
        .map(|l| {
            format!(
                "{}… ({} octets)",
                String::from_utf8_lossy(&l[..80]),
                l.len()
            )
        })
        .collect()
}

#[test]
fn every_outgoing_header_line_fits_998_octets() {
    let id = "x".repeat(900) + "@example.com";
    let cases: Vec<(&str, OutboxItem)> = vec![
        ("ascii subject", {
            let mut i = sample_item(1, 1000);
            i.subject = format!("Re: [JP-1000] {}", "a".repeat(100_000));
            i
        }),
        ("japanese subject", {
            let mut i = sample_item(2, 1000);
            i.subject = format!("Re: [JP-1000] {}", "注文".repeat(20_000));
            i
        }),
        ("mixed subject", {
            let mut i = sample_item(3, 1000);
            i.subject = format!("注文 {} 届かない {}", "b".repeat(5_000), "c ".repeat(3_000));
            i
        }),
        ("long message-ids", {
            let mut i = sample_item(4, 1000);
            i.in_reply_to = Some(id.clone());
            i.references = vec![id.clone(), "y".repeat(5_000) + "@example.com", id.clone()];
            i
        }),
        ("long attachment name", {
            let mut i = sample_item(5, 1000);
            i.attachments = vec![crate::desk::ticket::AttachmentRef {
                filename: "請求書".repeat(300) + &"x".repeat(3_000) + ".pdf",
                content_type: "application/pdf".into(),
                size: 4,
                sha256: "0".repeat(64),
            }];
            i
        }),
    ];
    // An address no server would take is refused, not written on an overlong line.
    let mut i = sample_item(6, 1000);
    i.to = vec!["a".repeat(2_000) + "@example.com"];
    assert!(build_message(&i).is_err());
    for (what, item) in cases {
        let files = vec![b"%PDF".to_vec(); item.attachments.len()];
        let raw = super::transport::build_message_with(&item, &files)
            .unwrap()
            .formatted();
        let long = long_lines(&raw);
        assert!(long.is_empty(), "{what}: {long:?}");
        // The subject still says what it said (decoded).
        // Read back with mail-parser itself: postdesk's own decoder caps what it stores of a subject.
        let message = mail_parser::MessageParser::default().parse(&raw).unwrap();
        let want: String = item
            .subject
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let got: String = message
            .subject()
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(got.len(), want.len(), "{what}");
        assert!(got == want, "{what}: the subject changed");
    }
}

#[test]
fn a_mail_over_its_budget_is_set_aside_and_the_others_go_out() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let mut big = sample_item(1, 1000);
    big.text = lf_text(8 << 20);
    store
        .write(|tx| {
            tx.commit(&Change {
                outbox: vec![big, sample_item(2, 1001)],
                ..Change::default()
            })
        })
        .unwrap();
    // A budget no 8 MB mail can be built in; a 1-byte one can (the threads start at once).
    let transport = Transport::from_config(&OutboundConfig {
        transport: TransportKind::File,
        file_dir: Some(out.clone()),
        send_timeout: crate::config::HumanDuration(Duration::from_millis(200)),
        ..OutboundConfig::default()
    })
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(send_due(&store, &transport, &RetryPolicy::default(), 8))
        .unwrap();
    let big = store.outbox_item(1).unwrap().unwrap();
    assert_eq!(big.status, OutboxStatus::Failed);
    let why = big.last_error.unwrap_or_default();
    assert!(
        why.contains("send_timeout") && why.contains("postdesk outbox retry 1"),
        "{why}"
    );
    assert_eq!(
        store.outbox_item(2).unwrap().unwrap().status,
        OutboxStatus::Sent
    );
    // Not due again: a restart does not stall on it.
    assert!(store.outbox_due(chrono::Utc::now(), 10).unwrap().is_empty());
}

#[test]
fn crlf_is_one_pass_and_keeps_what_is_crlf_already() {
    use super::transport::crlf;
    assert_eq!(crlf("a\nb\r\nc\rd\n"), "a\r\nb\r\nc\rd\r\n");
    assert_eq!(crlf("\n\n"), "\r\n\r\n");
    assert_eq!(crlf("日本\n語"), "日本\r\n語");
    assert_eq!(crlf(""), "");
}

#[test]
fn one_slow_mail_never_delays_the_rest_of_the_outbox_or_a_stop() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // A sendmail that takes 30 s for one recipient and is quick for the others.
    let script = dir.path().join("sendmail");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$*\" in *slow@*) sleep 30;; esac\ncat > {}/$$.out\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let store = std::sync::Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let mut slow = sample_item(1, 1000);
    slow.to = vec!["slow@example.com".into()];
    let commit = |items: Vec<OutboxItem>| {
        store
            .write(|tx| {
                tx.commit(&Change {
                    outbox: items,
                    ..Change::default()
                })
            })
            .unwrap();
    };
    commit(vec![slow]);
    let transport = std::sync::Arc::new(
        Transport::from_config(&OutboundConfig {
            transport: TransportKind::Sendmail,
            sendmail_command: Some(script),
            ..OutboundConfig::default()
        })
        .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = rt.spawn(super::worker::run(
        store.clone(),
        transport,
        RetryPolicy::default(),
        4,
        std::sync::Arc::new(crate::telemetry::Telemetry::new()),
        stop.clone(),
    ));
    std::thread::sleep(Duration::from_millis(500));
    // Queued while the slow one is under way: they go out all the same.
    commit((2..6).map(|id| sample_item(id, 1000 + id)).collect());
    let sent = |id| store.outbox_item(id).unwrap().unwrap().status == OutboxStatus::Sent;
    let began = std::time::Instant::now();
    while !(2..6).all(sent) {
        assert!(
            began.elapsed() < Duration::from_secs(15),
            "the mails queued behind a slow one waited for it"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!sent(1));
    // A stop does not wait for the slow send: it stays queued for the next start.
    let asked = std::time::Instant::now();
    stop.cancel();
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), worker).await })
        .expect("the worker stops within 10 s")
        .unwrap();
    assert!(asked.elapsed() < Duration::from_secs(10));
    assert_eq!(
        store.outbox_item(1).unwrap().unwrap().status,
        OutboxStatus::Queued
    );
}
