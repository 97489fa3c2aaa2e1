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

/// A store of `e` with one ticket, backed up (no daemon) into `root/<name>`.
fn backed_up(e: &Env, name: &str) -> PathBuf {
    assert_eq!(
        postdesk(
            e,
            &["ingest", "--region", "JP"],
            &mail(0, "taro@example.jp", "")
        )
        .0,
        0
    );
    let (code, _, err) = postdesk(e, &["backup", name], b"");
    assert_eq!(code, 0, "{err}");
    e.root.join(name)
}

/// A copy of the backup `from` into `root/<name>` (tree files, then the manifest and its signature).
fn copy_backup(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("trees")).unwrap();
    for entry in std::fs::read_dir(from.join("trees")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, to.join("trees").join(p.file_name().unwrap())).unwrap();
    }
    for f in ["manifest.json", "manifest.hmac"] {
        if from.join(f).exists() {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    }
}

/// The manifest's entry of the `tickets` tree.
fn tickets_entry(manifest: &Value) -> Value {
    manifest["trees"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "tickets")
        .unwrap()
        .clone()
}

fn read_manifest(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn backup_refuses_a_symlinked_directory() {
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path(), "a");
    assert_eq!(
        postdesk(
            &e,
            &["ingest", "--region", "JP"],
            &mail(0, "taro@example.jp", "")
        )
        .0,
        0
    );
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("link")).unwrap();
    let (code, _, err) = postdesk(&e, &["backup", "link"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // A dangling link is refused too, and not created through.
    std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("dangling")).unwrap();
    let (code, _, err) = postdesk(&e, &["backup", "dangling"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(!dir.path().join("nowhere").exists());
}

#[test]
fn backup_refuses_a_directory_owned_by_another_user() {
    if unsafe { libc::geteuid() } != 0 {
        return support::skipped("needs root to make a directory owned by another user");
    }
    let dir = tempfile::tempdir().unwrap();
    let e = env(dir.path(), "a");
    assert_eq!(
        postdesk(
            &e,
            &["ingest", "--region", "JP"],
            &mail(0, "taro@example.jp", "")
        )
        .0,
        0
    );
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let (code, _, err) = postdesk(&e, &["backup", "theirs"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("belongs to user id 65534") && err.contains("new directory"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(&theirs).unwrap().count(), 0);
    // An empty directory of our own is still fine.
    std::fs::create_dir(dir.path().join("mine")).unwrap();
    let (code, _, err) = postdesk(&e, &["backup", "mine"], b"");
    assert_eq!(code, 0, "{err}");
}

#[test]
fn restore_refuses_a_symlink_inside_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let a = env(dir.path(), "a");
    let snap = backed_up(&a, "snap");
    let entry = tickets_entry(&read_manifest(&snap));
    let rel = entry["file"].as_str().unwrap();

    // A tree file replaced by a link to /dev/zero: refused at once, nothing written.
    let evil = dir.path().join("evil");
    copy_backup(&snap, &evil);
    std::fs::remove_file(evil.join(rel)).unwrap();
    std::os::unix::fs::symlink("/dev/zero", evil.join(rel)).unwrap();
    let b = env(dir.path(), "b");
    let (code, _, err) = postdesk(&b, &["restore", "evil"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!dir.path().join("b-data").exists(), "nothing written");

    // A FIFO in its place does not block the restore.
    std::fs::remove_file(evil.join(rel)).unwrap();
    let path = std::ffi::CString::new(evil.join(rel).to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let (code, _, err) = postdesk(&b, &["restore", "evil"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    // A file longer than the manifest says (its sum recomputed over the original bytes) is refused by size.
    std::fs::remove_file(evil.join(rel)).unwrap();
    let mut bytes = std::fs::read(snap.join(rel)).unwrap();
    bytes.extend_from_slice(&[0; 4096]);
    std::fs::write(evil.join(rel), bytes).unwrap();
    let (code, _, err) = postdesk(&b, &["restore", "evil"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the manifest says"), "{err}");

    // The manifest itself as a link is refused as well.
    let linked = dir.path().join("linked");
    copy_backup(&snap, &linked);
    std::fs::remove_file(linked.join("manifest.json")).unwrap();
    std::os::unix::fs::symlink(snap.join("manifest.json"), linked.join("manifest.json")).unwrap();
    let (code, _, err) = postdesk(&b, &["restore", "linked"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!dir.path().join("b-data").exists(), "nothing written");

    // The untouched backup restores.
    let (code, _, err) = postdesk(&b, &["restore", "snap"], b"");
    assert_eq!(code, 0, "{err}");
}

/// `e`'s config with `[storage] backup_key_file = KEY`.
fn with_key(e: &Env, key: &Path) {
    let text = std::fs::read_to_string(&e.config).unwrap();
    let line = format!(
        "[storage]\nbackup_key_file = {}\n",
        toml::Value::String(key.display().to_string())
    );
    std::fs::write(&e.config, text.replacen("[storage]\n", &line, 1)).unwrap();
}

#[test]
fn restore_refuses_a_manifest_tampered_without_the_key() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    std::fs::write(&key, "k3y-only-the-admin-knows-0123456789\n").unwrap();
    let a = env(dir.path(), "a");
    with_key(&a, &key);
    let snap = backed_up(&a, "snap");
    assert!(snap.join("manifest.hmac").exists());

    // Someone without the key changes a tree file and recomputes its sha256 and size in the manifest.
    let evil = dir.path().join("evil");
    copy_backup(&snap, &evil);
    let mut manifest = read_manifest(&snap);
    let entry = tickets_entry(&manifest);
    let rel = entry["file"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(snap.join(&rel)).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0x01;
    std::fs::write(evil.join(&rel), &bytes).unwrap();
    for t in manifest["trees"].as_array_mut().unwrap() {
        if t["name"] == "tickets" {
            t["sha256"] = Value::String(hex::encode(Sha256::digest(&bytes)));
        }
    }
    std::fs::write(
        evil.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    let b = env(dir.path(), "b");
    with_key(&b, &key);
    let (code, _, err) = postdesk(&b, &["restore", "evil"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HMAC does not match"), "{err}");
    assert!(!dir.path().join("b-data").exists(), "nothing written");

    // Without its signature, a backup is refused while a key is set.
    std::fs::remove_file(evil.join("manifest.hmac")).unwrap();
    let (code, _, err) = postdesk(&b, &["restore", "evil"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not signed"), "{err}");

    // Another key does not verify the real backup either; the right one does.
    let other = dir.path().join("other.key");
    std::fs::write(&other, "another-key-of-enough-length-42\n").unwrap();
    let c = env(dir.path(), "c");
    with_key(&c, &other);
    let (code, _, err) = postdesk(&c, &["restore", "snap"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("HMAC does not match"), "{err}");
    let (code, out, err) = postdesk(&b, &["restore", "snap"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored"), "{out}");
}
