//! `postdesk backup` while the daemon runs and holds the store, `postdesk restore` into a fresh storage
//! path: the restored store shows the same tickets, messages, outbox and timers, and continues its ids
//! above the backup's. A damaged backup, a non-empty target and a running daemon are refused.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cli, Region, TestConfig};

struct Env {
    root: PathBuf,
    config: PathBuf,
}

fn env(root: &Path, name: &str) -> Env {
    let config = TestConfig::new(root)
        .storage(&root.join(format!("{name}-data")))
        .file_outbox(&root.join(format!("{name}-out")))
        .region(
            Region::jp()
                .agents(&["agent@example.com"])
                .agent_notify("jp-agents@example.com"),
        )
        .write_to(&root.join(format!("{name}.toml")));
    Env {
        root: root.to_path_buf(),
        config,
    }
}

fn postdesk(e: &Env, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    Cli::new(&e.config).in_dir(&e.root).run(args, stdin)
}

fn json(e: &Env, args: &[&str]) -> Value {
    let (code, out, err) = postdesk(e, args, b"");
    assert_eq!(code, 0, "{args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Everything an admin sees of a store.
fn view(e: &Env) -> Vec<Value> {
    let mut v = vec![
        json(e, &["tickets", "list", "--json"]),
        json(e, &["outbox", "list", "--json"]),
        json(e, &["tickets", "due", "--json"]),
    ];
    for t in v[0].clone().as_array().unwrap() {
        v.push(json(
            e,
            &["tickets", "show", t["id"].as_str().unwrap(), "--json"],
        ));
    }
    v
}

fn mail(n: u32, from: &str, extra: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: support-jp@example.com\r\nSubject: question {n}\r\nMessage-ID: <q{n}@mail.example.net>\r\n{extra}MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n注文{n}について質問です。\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"scan{n}.bin\"\r\n\r\nattachment bytes of mail {n}\r\n--b--\r\n"
    )
    .into_bytes()
}

#[test]
fn a_backup_taken_while_the_daemon_runs_restores_to_the_same_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let a = env(dir.path(), "a");
    for n in 0..3 {
        let from = if n == 2 {
            "kim@example.com"
        } else {
            "taro@example.jp"
        };
        assert_eq!(
            postdesk(&a, &["ingest", "--region", "JP"], &mail(n, from, "")).0,
            0
        );
    }
    let reply = "From: taro@example.jp\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] question 0\r\nMessage-ID: <r1@mail.example.net>\r\n\r\nmore details\r\n";
    assert_eq!(
        postdesk(&a, &["ingest", "--region", "JP"], reply.as_bytes()).0,
        0
    );
    assert_eq!(
        postdesk(&a, &["tickets", "set-status", "JP-1001", "pending"], b"").0,
        0
    );

    let mut daemon = Cli::new(&a.config).daemon();
    let socket = dir.path().join("a-data/postdesk.sock");
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "daemon did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let the outbox worker finish, so the store holds still between the backup and the view compared
    // with its restore (the backup itself is consistent whatever runs; this only keeps `before` exact).
    let start = Instant::now();
    loop {
        let (code, out, _) = postdesk(&a, &["outbox", "list", "--json"], b"");
        let rows: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let drained = code == 0
            && rows
                .as_array()
                .is_some_and(|r| !r.is_empty() && r.iter().all(|i| i["status"] != "queued"));
        if drained {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the outbox did not drain: {out}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A relative DIR is the caller's, although the daemon writes it.
    let (code, out, err) = postdesk(&a, &["backup", "snap"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backup written"), "{out}");
    let snap = dir.path().join("snap");
    let before = view(&a);
    // A restore while the daemon runs is refused.
    let (code, _, err) = postdesk(&a, &["restore", "snap"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("daemon is running"), "{err}");
    // A second backup into the same (no longer empty) directory is refused.
    let (code, _, err) = postdesk(&a, &["backup", "snap"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    assert!(daemon.stop());

    // The format: a manifest with a sha256 per file, owner-only files.
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(snap.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], "postdesk-backup");
    assert_eq!(manifest["version"], 1);
    let tickets_tree = manifest["trees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tickets")
        .unwrap();
    assert_eq!(tickets_tree["records"], 3);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&snap), 0o700);
        assert_eq!(mode(&snap.join("manifest.json")), 0o600);
        assert_eq!(
            mode(&snap.join(tickets_tree["file"].as_str().unwrap())),
            0o600
        );
    }

    // Restored into a fresh path: the same view.
    let b = env(dir.path(), "b");
    let (code, out, err) = postdesk(&b, &["restore", "snap"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored"), "{out}");
    assert_eq!(view(&b), before);
    // Restoring again over the restored store is refused.
    let (code, _, err) = postdesk(&b, &["restore", "snap"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("not empty"), "{err}");
    // Ids continue above the backup's: a new outbox row does not reuse one.
    let old_ids: Vec<u64> = before[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        postdesk(
            &b,
            &["ingest", "--region", "JP"],
            &mail(9, "lee@example.kr", "")
        )
        .0,
        0
    );
    let rows = json(&b, &["outbox", "list", "--json"]);
    let new_rows: Vec<&Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ticket"] == "JP-1003")
        .collect();
    assert!(!new_rows.is_empty());
    for r in new_rows {
        let id = r["id"].as_u64().unwrap();
        assert!(
            old_ids.iter().all(|&o| o < id),
            "id {id} reused or below {old_ids:?}"
        );
    }
    let show = json(&b, &["tickets", "show", "JP-1003", "--json"]);
    assert_eq!(
        show["messages"][0]["attachments"][0]["size"],
        "attachment bytes of mail 9".len()
    );

    // A damaged copy is refused before anything is written.
    let damaged = dir.path().join("damaged");
    std::fs::create_dir(&damaged).unwrap();
    std::fs::create_dir(damaged.join("trees")).unwrap();
    for entry in std::fs::read_dir(snap.join("trees")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, damaged.join("trees").join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(snap.join("manifest.json"), damaged.join("manifest.json")).unwrap();
    let victim = damaged.join(tickets_tree["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(&victim, bytes).unwrap();
    let c = env(dir.path(), "c");
    let (code, _, err) = postdesk(&c, &["restore", "damaged"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("damaged") && err.contains("sha256"), "{err}");
    assert!(!dir.path().join("c-data").exists(), "nothing written");
}
