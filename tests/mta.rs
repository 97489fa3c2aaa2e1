//! The MTA pipe as an admin sets it up from README.md (issue 21), and the `ingest` client's answers.
//!
//! - Without servers: `ingest` against a stopped daemon (SIGSTOP) exits 75 within `storage.ingest_timeout`,
//!   and the retry stores the mail once; a control socket this user may not use is named with its errno at
//!   once (no 15 s wait for a lock); a mail over 64 MiB is stored truncated with the `oversize` notice (not
//!   bounced with 65); outbox ids count 1, 2, 3 across runs that each open the store.
//! - With root and debootstrap: README.md's own lines, taken from between its `<!-- mta:NAME -->` and
//!   `<!-- /mta -->` marks, go into a real Postfix 3.7 and, in another root, a real OpenSMTPD 6.8 (Debian 12
//!   packages, each in a root of its own made by `scripts/debian-root.sh`: the two packages conflict, and
//!   the README's paths — `/usr/bin/postdesk`, `/etc/postdesk/config.toml`, the user `postdesk` — are then
//!   the real ones). Mail goes in by SMTP on 127.0.0.1 (ports 47025 and 47125; the client connects from
//!   127.0.0.2, outside Postfix's `mynetworks`, as the internet would): a ticket per mail, exit 75 (daemon
//!   stopped, socket refused) → deferred → delivered once after the fix, a mail over the region's limit
//!   stored truncated, 30 MB accepted with the README's size setting, and no `parent_forward_open` warning
//!   from OpenSMTPD (the documented home exists).
//!
//! Every server a test starts is stopped by a guard ([`Root`]'s `Drop`), also when the test fails; a run
//! that was killed leaves processes whose root is under `target/tmp/mta`, and the next run (and
//! `scripts/mta-test.sh`'s trap) stops them by their pid first.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Cli, DaemonProcess, Region, TestConfig};

// ------------------------------------------------------------------------------------------------------
// The README's snippets.

/// The code block between `<!-- mta:NAME -->` and `<!-- /mta -->` in README.md, without its fences and
/// the indentation of a list item.
fn readme(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let text = std::fs::read_to_string(&path).expect("README.md");
    let open = format!("<!-- mta:{name} -->");
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("README.md has no {open}"));
    let rest = &text[start + open.len()..];
    let end = rest
        .find("<!-- /mta -->")
        .unwrap_or_else(|| panic!("README.md: {open} is not closed by <!-- /mta -->"));
    let lines: Vec<&str> = rest[..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let (first, last) = (lines.first().copied(), lines.last().copied());
    assert!(
        first.is_some_and(|l| l.trim_start().starts_with("```"))
            && last.is_some_and(|l| l.trim() == "```")
            && lines.len() > 2,
        "README.md: {open} must hold one fenced code block"
    );
    let indent = first.map_or(0, |l| l.len() - l.trim_start().len());
    let mut block = String::new();
    for line in &lines[1..lines.len() - 1] {
        block.push_str(line.get(indent..).unwrap_or(line.trim_start()));
        block.push('\n');
    }
    block
}

/// Every snippet the MTA tests install is there and well formed, wherever this runs.
#[test]
fn the_readme_has_every_mta_snippet() {
    for name in [
        "setup.sh",
        "config.toml",
        "postfix-master.cf",
        "postfix-transport",
        "postfix-main.cf",
        "postfix-main.cf-relay",
        "postfix-main.cf-local",
        "postfix-commands",
        "smtpd.conf",
    ] {
        let block = readme(name);
        assert!(!block.trim().is_empty(), "{name}");
    }
    // The region block is a valid region of a config (with the storage the tests add).
    let text = format!(
        "[storage]\npath = \"/tmp/x\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"/tmp/y\"\n{}",
        readme("config.toml")
    );
    let config =
        postdesk::config::Config::from_toml(&text, Path::new("README.md")).expect("config.toml");
    assert_eq!(config.region[0].max_message_bytes, 52_428_800);
    // Every MTA line runs the same command with --config (issue 21: OpenSMTPD's had none).
    for name in ["postfix-master.cf", "smtpd.conf"] {
        let block = readme(name);
        assert_eq!(
            block
                .matches("/usr/bin/postdesk --config /etc/postdesk/config.toml ingest --region ")
                .count(),
            2,
            "{name}: {block}"
        );
    }
    // Postfix's size limit and OpenSMTPD's are the region's max_message_bytes.
    assert!(readme("postfix-main.cf").contains("message_size_limit = 52428800"));
    assert!(readme("smtpd.conf").contains("smtp max-message-size 50M"));
}

// ------------------------------------------------------------------------------------------------------
// The ingest client, no servers needed.

/// A customer's mail of about `bytes` bytes (a text attachment makes up the size).
fn mail(to: &str, message_id: &str, subject: &str, bytes: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: Hanako Yamada <hanako@example.jp>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0900\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nThe log is attached.\r\n--b\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Disposition: attachment; filename=\"log.txt\"\r\n\r\n"
    )
    .into_bytes();
    let line = b"2026-11-21 10:00:00 the same line of the log, again and again, 0123456789.\r\n";
    while raw.len() + line.len() < bytes {
        raw.extend_from_slice(line);
    }
    raw.extend_from_slice(b"--b--\r\n");
    raw
}

/// `config`'s text with `lines` added to `[storage]`.
fn with_storage_lines(config: &TestConfig, lines: &str) -> String {
    config
        .toml()
        .replacen("[storage]\n", &format!("[storage]\n{lines}\n"), 1)
}

fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    support::wait_for(what, timeout, Duration::from_millis(50), f)
}

/// A daemon on `config`, once its socket answers.
fn daemon(config: &Path, storage: &Path) -> DaemonProcess {
    let daemon = Cli::new(config).daemon();
    wait_for("the control socket", Duration::from_secs(30), || {
        storage.join("postdesk.sock").exists() && Cli::new(config).run(&["stats"], b"").0 == 0
    });
    daemon
}

fn tickets(config: &Path) -> Vec<Value> {
    Cli::new(config)
        .json(&["tickets", "list", "--json"])
        .as_array()
        .expect("array")
        .clone()
}

/// Issue 21, item 7: a daemon stopped with SIGSTOP held a delivery until it was resumed (30 s in the
/// report). Now `ingest` gives up within `storage.ingest_timeout` with 75, and the mail is stored once: by
/// the daemon when it resumes, or by the MTA's retry, never both.
#[test]
fn a_stopped_daemon_gives_exit_75_within_ingest_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let built = TestConfig::new(dir.path()).region(Region::jp());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        with_storage_lines(&built, "ingest_timeout = \"2s\""),
    )
    .unwrap();
    let mut daemon = daemon(&config, built.storage_path());
    let raw = mail(
        "support-jp@example.com",
        "stopped@example.jp",
        "while stopped",
        2_000,
    );

    daemon.signal("STOP");
    let began = Instant::now();
    let (code, _, err) = Cli::new(&config).run(&["ingest", "--region", "JP"], &raw);
    let took = began.elapsed();
    daemon.signal("CONT");
    assert_eq!(code, 75, "{err}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(6),
        "gave up after {took:?}, not after the 2 s of ingest_timeout"
    );
    let socket = built.storage_path().join("postdesk.sock");
    assert!(
        err.contains(&format!(
            "did not answer on {} within 2s (storage.ingest_timeout)",
            socket.display()
        )) && err.contains("stopped or hung"),
        "{err}"
    );

    // The MTA retries: the mail is in one ticket, whoever stored it.
    let (code, out, err) = Cli::new(&config).run(&["ingest", "--region", "JP"], &raw);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JP-1000"), "{out}");
    assert_eq!(tickets(&config).len(), 1);
    assert!(daemon.stop(), "the daemon stops cleanly after SIGCONT");
}

/// Issue 21, item 6: `ingest` run as a user the control socket refuses fell back to opening the store,
/// waited 15 s for its lock and reported the lock. Now it names the socket, the errno, who owns what and
/// what to do, at once.
#[test]
fn a_control_socket_this_user_may_not_use_is_named_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let built = TestConfig::new(dir.path()).region(Region::jp());
    let config = built.write_to(&dir.path().join("config.toml"));
    let _daemon = daemon(&config, built.storage_path());
    let socket = built.storage_path().join("postdesk.sock");
    let raw = mail(
        "support-jp@example.com",
        "denied@example.jp",
        "denied",
        2_000,
    );
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = Command::new(support::cli::bin());
    cmd.arg("--config")
        .arg(&config)
        .args(["ingest", "--region", "JP"]);
    if root {
        // Root may use any socket: run as nobody, who may read the config but not the storage directory.
        use std::os::unix::fs::PermissionsExt;
        use std::os::unix::process::CommandExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
        cmd.uid(65534).gid(65534);
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let began = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn postdesk ingest");
    child.stdin.take().unwrap().write_all(&raw).unwrap();
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(75), "{err}");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "took {:?}",
        began.elapsed()
    );
    assert!(
        err.contains(&format!(
            "cannot connect to the daemon's control socket {}: EACCES",
            socket.display()
        )) && err.contains("must run as the daemon's user (postdesk) or as root")
            && !err.contains("lock"),
        "{err}"
    );
    if root {
        assert!(
            err.contains("(uid 65534)"),
            "names the user it runs as: {err}"
        );
    } else {
        assert!(
            err.contains("with mode 0000"),
            "names the socket's mode: {err}"
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    assert!(tickets(&config).is_empty());
}

/// Issue 21, item 5: a mail over 64 MiB exited 65 (`message larger than 67108864 bytes`) and bounced. It is
/// stored like an oversized IMAP mail: truncated, with the `oversize` notice telling its real size, exit 0;
/// with the daemon running and without.
#[test]
fn a_mail_over_64_mib_is_stored_truncated_not_bounced() {
    let dir = tempfile::tempdir().unwrap();
    let built = TestConfig::new(dir.path()).region(Region::jp());
    let config = built.write_to(&dir.path().join("config.toml"));
    let raw = mail(
        "support-jp@example.com",
        "huge-1@example.jp",
        "huge",
        70 * 1024 * 1024,
    );
    let size = raw.len();
    let check = |id: &str| {
        let t = Cli::new(&config).json(&["tickets", "show", id, "--json"]);
        let damage = t["messages"][0]["damage"].to_string();
        assert!(
            damage.contains(&format!("oversized mail ({size} bytes, limit 26214400)")),
            "{id}: {damage}"
        );
        let outbox = Cli::new(&config).json(&["outbox", "list", "--ticket", id, "--json"]);
        assert_eq!(outbox[0]["kind"], "oversize", "{outbox}");
    };
    let (code, out, err) = Cli::new(&config).run(&["ingest", "--region", "JP"], &raw);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JP-1000"), "{out}");
    check("JP-1000");

    let mut daemon = daemon(&config, built.storage_path());
    let raw = mail(
        "support-jp@example.com",
        "huge-2@example.jp",
        "huge",
        70 * 1024 * 1024,
    );
    let (code, out, err) = Cli::new(&config).run(&["ingest", "--region", "JP"], &raw);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JP-1001"), "{out}");
    check("JP-1001");
    assert!(daemon.stop());
    let stats = Cli::new(&config).json(&["stats", "--json"]);
    assert_eq!(
        stats[0]["quarantined"], 2,
        "the first 25 MiB of each kept: {stats}"
    );
}

/// Issue 21, item 9: outbox ids jumped by about 2,000,000 each time the store was opened (every `ingest`
/// without a daemon opens it). They count 1, 2, 3.
#[test]
fn outbox_ids_count_up_across_runs_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .region(Region::jp())
        .write_to(&dir.path().join("config.toml"));
    for i in 0..3 {
        let raw = mail(
            "support-jp@example.com",
            &format!("ids-{i}@example.jp"),
            "ids",
            500,
        );
        let (code, _, err) = Cli::new(&config).run(&["ingest", "--region", "JP"], &raw);
        assert_eq!(code, 0, "{err}");
    }
    let rows = Cli::new(&config).json(&["outbox", "list", "--json"]);
    let ids: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
}

// ------------------------------------------------------------------------------------------------------
// Real MTAs in Debian 12 roots.

/// Where the roots live; everything under it is this test binary's.
fn roots_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("mta")
}

/// SIGKILL every process whose root directory is under `dir`, by its pid: what a killed earlier run left
/// (and what a root's own processes leave after their daemons were told to stop).
fn sweep(dir: &Path) {
    for _ in 0..50 {
        let mut left = 0;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(root) = std::fs::read_link(entry.path().join("root")) else {
                continue;
            };
            if root.starts_with(dir) {
                left += 1;
                // SAFETY: kill has no memory-safety preconditions; the pid is one whose root is ours.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if left == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("processes under {} survive SIGKILL", dir.display());
}

/// A Debian 12 root with an MTA and postdesk, and the processes started in it; all stopped, and the root
/// removed, when dropped.
struct Root {
    dir: PathBuf,
    kids: Vec<Child>,
    postfix: bool,
    logs: Vec<PathBuf>,
}

impl Root {
    /// A fresh root named `name` with `package` and the built postdesk as /usr/bin/postdesk.
    fn make(name: &str, package: &str) -> Root {
        let dir = roots_dir().join(name);
        sweep(&dir);
        let status =
            Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/debian-root.sh"))
                .arg(&dir)
                .arg(package)
                .env("CARGO_TARGET_DIR", target_dir())
                .status()
                .expect("scripts/debian-root.sh");
        assert!(
            status.success(),
            "scripts/debian-root.sh {} {package} failed",
            dir.display()
        );
        let root = Root {
            dir,
            kids: Vec::new(),
            postfix: false,
            logs: Vec::new(),
        };
        let bin = root.path("/usr/bin/postdesk");
        if std::fs::hard_link(support::cli::bin(), &bin).is_err() {
            std::fs::copy(support::cli::bin(), &bin).expect("postdesk into the root");
        }
        root
    }

    /// `p` (absolute inside the root) on the host. Never a path through a symbolic link of the root's
    /// (`/var/run` points to the host's `/run` from outside).
    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p.trim_start_matches('/'))
    }

    fn command(&self, user: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        if let Some(u) = user {
            cmd.arg(format!("--userspec={u}:{u}"));
        }
        cmd.arg(&self.dir)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8");
        cmd
    }

    /// Run `args` in the root (as `user`): exit code, stdout, stderr. Bounded in time.
    fn run(&self, user: Option<&str>, args: &[&str]) -> (i32, String, String) {
        let mut child = self
            .command(user, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("chroot {args:?}: {e}"));
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "{args:?} in {} did not finish within 120 s",
                    self.dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        (status.code().unwrap_or(-1), reader.join().unwrap(), e)
    }

    /// A shell script in the root, as root; must succeed.
    fn sh(&self, script: &str) {
        let (code, out, err) = self.run(None, &["/bin/sh", "-ec", script]);
        assert_eq!(
            code, 0,
            "in the root:\n{script}\nstdout: {out}\nstderr: {err}"
        );
    }

    /// `postdesk --config /etc/postdesk/config.toml ARGS` as the user postdesk, as an admin runs it.
    fn postdesk(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["/usr/bin/postdesk", "--config", "/etc/postdesk/config.toml"];
        all.extend_from_slice(args);
        self.run(Some("postdesk"), &all)
    }

    fn json(&self, args: &[&str]) -> Value {
        let (code, out, err) = self.postdesk(args);
        assert_eq!(code, 0, "postdesk {args:?}: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    fn tickets(&self) -> Vec<Value> {
        self.json(&["tickets", "list", "--json"])
            .as_array()
            .unwrap()
            .clone()
    }

    /// The one ticket whose subject is `subject` (fails unless exactly one).
    fn ticket(&self, subject: &str) -> Value {
        let found: Vec<Value> = self
            .tickets()
            .into_iter()
            .filter(|t| t["subject"] == subject)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "tickets with subject {subject:?}: {found:?}"
        );
        self.json(&[
            "tickets",
            "show",
            found[0]["id"].as_str().unwrap(),
            "--json",
        ])
    }

    /// Start `args` in the root (as `user`) in the background, its output in the host file `log`; returns
    /// its pid. Stopped when the root is dropped.
    fn spawn(&mut self, user: Option<&str>, args: &[&str], log: &Path) -> u32 {
        let file = std::fs::File::create(log).unwrap();
        let child = self
            .command(user, args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("chroot {args:?}: {e}"));
        self.logs.push(log.to_path_buf());
        let pid = child.id();
        self.kids.push(child);
        pid
    }

    /// The postdesk daemon as the README's unit runs it (user postdesk, the config in /etc), once its socket
    /// answers; its pid.
    fn start_daemon(&mut self, log: &Path) -> u32 {
        let pid = self.spawn(
            Some("postdesk"),
            &[
                "/usr/bin/postdesk",
                "--config",
                "/etc/postdesk/config.toml",
                "run",
            ],
            log,
        );
        let socket = self.path("/var/lib/postdesk/postdesk.sock");
        wait_for(
            "the daemon's control socket",
            Duration::from_secs(30),
            || socket.exists() && self.postdesk(&["stats"]).0 == 0,
        );
        pid
    }

    /// The config: storage, the file outbox, the README's JP region, and KR with a small limit (what the
    /// oversize checks send to).
    fn write_config(&self, ingest_timeout: &str) {
        let text = format!(
            "[storage]\npath = \"/var/lib/postdesk\"\ningest_timeout = \"{ingest_timeout}\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"/var/spool/postdesk/out\"\n{}\n[[region]]\ncode = \"KR\"\nlocale = \"ko\"\naddress = \"support-kr@example.com\"\nmax_message_bytes = 1000000\n",
            readme("config.toml")
        );
        let path = self.path("/etc/postdesk/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Rewritten in place: the README's setup gave it its owner and mode.
        std::fs::write(&path, text).unwrap();
    }

    /// The user and directories, as the README's setup block makes them.
    fn setup_postdesk(&self) {
        self.write_config("60s");
        self.sh(&readme("setup.sh"));
        self.sh("install -d -o postdesk -g postdesk -m 0700 /var/spool/postdesk /var/spool/postdesk/out");
        let (code, out, err) = self.postdesk(&["check-config"]);
        assert_eq!(code, 0, "check-config as postdesk: {out}{err}");
    }

    /// The last lines of every log the root's processes wrote, and `extra`, for a failure message.
    fn logs(&self, extra: &[PathBuf]) -> String {
        let mut text = String::new();
        for log in self.logs.iter().chain(extra) {
            let all = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = all.lines().collect();
            text.push_str(&format!("--- {}\n", log.display()));
            for l in &lines[lines.len().saturating_sub(20)..] {
                text.push_str(l);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.postfix {
            let _ = self.run(None, &["postfix", "stop"]);
        }
        for kid in &self.kids {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
            unsafe { libc::kill(kid.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for kid in &mut self.kids {
            while kid.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        sweep(&self.dir);
        for kid in &mut self.kids {
            let _ = kid.wait();
        }
        // --one-file-system: nothing is mounted in a root, and should something be, it is not followed.
        let _ = Command::new("rm")
            .arg("-rf")
            .arg("--one-file-system")
            .arg(&self.dir)
            .status();
    }
}

fn target_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is TARGET/tmp: the cached root tarballs are in TARGET/debian-roots.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf()
}

/// Whether this run can make Debian roots (root, debootstrap, chroot).
fn can_make_roots(what: &str) -> bool {
    support::require_servers(what)
        && support::require_tool(
            "/usr/sbin/debootstrap",
            "debootstrap (scripts/debian-root.sh)",
        )
        && support::require_tool("/usr/sbin/chroot", "chroot")
}

/// One SMTP transaction from 127.0.0.2 to 127.0.0.1:`port`: the last line of every reply, in order
/// (greeting, EHLO, MAIL, each RCPT, DATA, and after the data its answer, QUIT). `data` is sent only on 354;
/// an empty `data` sends no DATA at all (a probe of the RCPT answers: nothing is queued).
fn smtp(port: u16, rcpts: &[&str], data: &[u8]) -> Vec<String> {
    let std_stream = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            // From 127.0.0.2: outside Postfix's mynetworks (127.0.0.1/32), as the internet is.
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let stream = tokio::time::timeout(
                Duration::from_secs(10),
                socket.connect(format!("127.0.0.1:{port}").parse().unwrap()),
            )
            .await
            .expect("SMTP connect timed out")
            .unwrap_or_else(|e| panic!("SMTP connect to 127.0.0.1:{port}: {e}"));
            stream.into_std().unwrap()
        })
    };
    std_stream.set_nonblocking(false).unwrap();
    std_stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut w = std_stream.try_clone().unwrap();
    let mut r = BufReader::new(std_stream);
    let mut read = || loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).expect("SMTP read");
        assert!(n > 0, "the SMTP server closed the connection");
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return line.trim_end().to_string();
        }
    };
    let mut replies = vec![read()];
    let cmd = |w: &mut TcpStream, line: &str, read: &mut dyn FnMut() -> String| {
        w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        read()
    };
    replies.push(cmd(&mut w, "EHLO client.example.org", &mut read));
    replies.push(cmd(&mut w, "MAIL FROM:<hanako@example.jp>", &mut read));
    for rcpt in rcpts {
        replies.push(cmd(&mut w, &format!("RCPT TO:<{rcpt}>"), &mut read));
    }
    if data.is_empty() {
        replies.push(cmd(&mut w, "QUIT", &mut read));
        return replies;
    }
    let answer = cmd(&mut w, "DATA", &mut read);
    let go = answer.starts_with("354");
    replies.push(answer);
    if go {
        let mut stuffed = Vec::with_capacity(data.len() + 16);
        for line in data.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
        }
        if !stuffed.ends_with(b"\r\n") {
            stuffed.extend_from_slice(b"\r\n");
        }
        stuffed.extend_from_slice(b".\r\n");
        w.write_all(&stuffed).unwrap();
        replies.push(read());
    }
    replies.push(cmd(&mut w, "QUIT", &mut read));
    replies
}

/// Send `data` to `rcpt`: the queue id from the server's 250 after the data (Postfix: `queued as ID`;
/// OpenSMTPD: `250 2.0.0 ID Message accepted`).
fn deliver(port: u16, rcpt: &str, data: &[u8]) -> String {
    let replies = smtp(port, &[rcpt], data);
    let end = &replies[replies.len() - 2];
    assert!(end.starts_with("250"), "not accepted: {replies:?}");
    if let Some(id) = end.split("queued as ").nth(1) {
        return id.trim().to_string();
    }
    end.split_whitespace()
        .nth(2)
        .expect("a queue id")
        .to_string()
}

/// Wait until a line of `log` contains every one of `parts`; that line.
fn wait_log(root: &Root, log: &Path, parts: &[&str], timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return l.to_string();
        }
        if start.elapsed() > timeout {
            panic!(
                "no line with {parts:?} in {} within {timeout:?}\n{}",
                log.display(),
                root.logs(&[log.to_path_buf()])
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The checks both MTAs go through once the README's lines are in and the daemon runs: a ticket per mail;
/// exit 75 (daemon stopped, socket refused) → the MTA keeps the mail → delivered once after the fix; 30 MB
/// stored whole; over the region's limit stored truncated with the oversize notice.
struct Mta<'a> {
    root: &'a Root,
    port: u16,
    log: PathBuf,
    daemon: u32,
    /// What the log says on a line with the queue id when the delivery succeeded, and when it failed for
    /// now (exit 75).
    done: &'static str,
    temp: &'static str,
    /// Retry now what waits in the queue.
    flush: &'static [&'static str],
}

impl Mta<'_> {
    /// The log line saying `id` was delivered. A machine slow enough to make `ingest` exceed its 60 s
    /// would have the MTA retry only minutes later: the queue is flushed every 10 s meanwhile (a retry
    /// delivers nothing twice; `nothing_doubled` checks that).
    fn delivered(&self, id: &str) -> String {
        let start = Instant::now();
        let mut flushed = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(l) = text
                .lines()
                .find(|l| l.contains(id) && l.contains(self.done))
            {
                return l.to_string();
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "{id} not delivered within 180 s\n{}",
                self.root.logs(std::slice::from_ref(&self.log))
            );
            if flushed.elapsed() > Duration::from_secs(10) {
                self.flush();
                flushed = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn deferred(&self, id: &str) -> String {
        wait_log(
            self.root,
            &self.log,
            &[id, self.temp],
            Duration::from_secs(90),
        )
    }

    fn flush(&self) {
        let (code, out, err) = self.root.run(None, self.flush);
        assert_eq!(code, 0, "{:?}: {out}{err}", self.flush);
    }

    fn run_all(&self) {
        let root = self.root;
        // A ticket per mail.
        let id = deliver(
            self.port,
            "support-jp@example.com",
            &mail(
                "support-jp@example.com",
                "m1@example.jp",
                "first mail",
                3_000,
            ),
        );
        let line = self.delivered(&id);
        let t = root.ticket("first mail");
        assert_eq!(t["region"], "JP", "{line}");
        let id = deliver(
            self.port,
            "support-kr@example.com",
            &mail("support-kr@example.com", "m2@example.jp", "to korea", 3_000),
        );
        self.delivered(&id);
        assert_eq!(root.ticket("to korea")["region"], "KR");

        // The daemon stopped (SIGSTOP): `ingest` gives up after ingest_timeout with 75, the MTA keeps the
        // mail; resumed and retried: one ticket.
        root.write_config("2s");
        // SAFETY: kill has no memory-safety preconditions; the pid is the daemon this test started.
        unsafe { libc::kill(self.daemon as i32, libc::SIGSTOP) };
        let id = deliver(
            self.port,
            "support-jp@example.com",
            &mail(
                "support-jp@example.com",
                "m3@example.jp",
                "while stopped",
                3_000,
            ),
        );
        let line = self.deferred(&id);
        // SAFETY: as above.
        unsafe { libc::kill(self.daemon as i32, libc::SIGCONT) };
        assert!(
            line.contains("did not answer on /var/lib/postdesk/postdesk.sock within 2s"),
            "{line}"
        );
        root.write_config("60s");
        self.flush();
        self.delivered(&id);
        root.ticket("while stopped");

        // The socket refused (its mode changed): 75 at once, naming it; fixed and retried: one ticket.
        use std::os::unix::fs::PermissionsExt;
        let socket = root.path("/var/lib/postdesk/postdesk.sock");
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o000)).unwrap();
        let id = deliver(
            self.port,
            "support-jp@example.com",
            &mail(
                "support-jp@example.com",
                "m4@example.jp",
                "socket refused",
                3_000,
            ),
        );
        let line = self.deferred(&id);
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            line.contains("control socket /var/lib/postdesk/postdesk.sock: EACCES")
                && line.contains("with mode 0000"),
            "{line}"
        );
        self.flush();
        self.delivered(&id);
        root.ticket("socket refused");

        // 30 MB: accepted with the README's size limit, stored whole.
        let id = deliver(
            self.port,
            "support-jp@example.com",
            &mail(
                "support-jp@example.com",
                "m5@example.jp",
                "thirty megabytes",
                30_000_000,
            ),
        );
        self.delivered(&id);
        let t = root.ticket("thirty megabytes");
        let m = &t["messages"][0];
        assert!(
            m["damage"].is_null() || !m["damage"].to_string().contains("oversized"),
            "{}",
            m["damage"]
        );
        assert!(
            m["attachments"][0]["size"].as_u64().unwrap() > 29_000_000,
            "{}",
            m["attachments"]
        );

        // Over the region's max_message_bytes (KR: 1 MB): stored truncated, the oversize notice queued.
        let id = deliver(
            self.port,
            "support-kr@example.com",
            &mail(
                "support-kr@example.com",
                "m6@example.jp",
                "two megabytes",
                2_000_000,
            ),
        );
        self.delivered(&id);
        let t = root.ticket("two megabytes");
        let damage = t["messages"][0]["damage"].to_string();
        assert!(
            damage.contains("oversized mail (") && damage.contains("limit 1000000)"),
            "{damage}"
        );
        let outbox = root.json(&[
            "outbox",
            "list",
            "--ticket",
            t["id"].as_str().unwrap(),
            "--json",
        ]);
        assert_eq!(outbox[0]["kind"], "oversize", "{outbox}");
    }

    /// Nothing doubled: one ticket per subject sent, and outbox ids 1, 2, 3 … without jumps.
    fn nothing_doubled(&self, subjects: usize) {
        let tickets = self.root.tickets();
        assert_eq!(tickets.len(), subjects, "{tickets:?}");
        let rows = self.root.json(&["outbox", "list", "--json"]);
        let ids: Vec<u64> = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ids,
            (1..=ids.len() as u64).collect::<Vec<_>>(),
            "outbox ids"
        );
    }
}

/// Wait (a reload takes a moment) until the server answers `RCPT TO:<rcpt>` with a line starting with
/// `want`; fails with the last answer.
fn wait_rcpt(port: u16, rcpt: &str, want: &str) {
    let start = Instant::now();
    loop {
        let replies = smtp(port, &[rcpt], b"");
        if replies[3].starts_with(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "RCPT TO:<{rcpt}> still answered {:?}, not {want:?}",
            replies[3]
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Add `text` to the end of the root's file `file`.
fn append(root: &Root, file: &str, text: &str) {
    let path = root.path(file);
    let mut all = std::fs::read_to_string(&path).unwrap();
    all.push_str(text);
    std::fs::write(&path, all).unwrap();
}

/// Postfix 3.7 with README.md's master.cf, transport and main.cf lines (both ways of accepting the support
/// addresses), mail by SMTP.
#[test]
fn postfix_delivers_by_the_readme() {
    if !can_make_roots("Postfix in a Debian 12 root") {
        return;
    }
    const PORT: u16 = 47025;
    let mut root = Root::make("postfix", "postfix");
    root.setup_postdesk();
    let log = root.path("/var/log/postfix.log");

    // This test's own settings, not the README's: loopback only, a log file, the port.
    root.sh(&format!(
        "postconf -e 'inet_interfaces = 127.0.0.1' 'inet_protocols = ipv4' 'myhostname = mx.mta-test.localdomain' \
         'mynetworks = 127.0.0.1/32' 'maillog_file = /var/log/postfix.log' 'smtp_dns_support_level = disabled'
         sed -i 's/^smtp      inet  n       -       y       -       -       smtpd$/127.0.0.1:{PORT} inet n - y - - smtpd/' /etc/postfix/master.cf
         grep -q '^127.0.0.1:{PORT} inet' /etc/postfix/master.cf
         cp /etc/postfix/main.cf /etc/postfix/main.cf.test-base
         /usr/lib/postfix/configure-instance.sh -
         postfix start"
    ));
    root.postfix = true;
    wait_for("Postfix's greeting", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", PORT)).is_ok()
    });

    // Before the README's lines: Debian's 10 MB limit refuses a 30 MB mail, and the support address is not
    // Postfix's to take.
    let big = mail(
        "postmaster@localhost",
        "before@example.jp",
        "before",
        30_000_000,
    );
    let replies = smtp(PORT, &["postmaster@localhost"], &big);
    assert!(
        replies[replies.len() - 2].starts_with("552 5.3.4"),
        "{replies:?}"
    );
    let replies = smtp(PORT, &["support-jp@example.com"], b"");
    assert!(replies[3].contains("Relay access denied"), "{replies:?}");

    // The README's lines.
    append(
        &root,
        "/etc/postfix/master.cf",
        &readme("postfix-master.cf"),
    );
    std::fs::write(
        root.path("/etc/postfix/postdesk-transport"),
        readme("postfix-transport"),
    )
    .unwrap();
    append(&root, "/etc/postfix/main.cf", &readme("postfix-main.cf"));
    append(
        &root,
        "/etc/postfix/main.cf",
        &readme("postfix-main.cf-relay"),
    );
    root.sh(&readme("postfix-commands"));
    wait_rcpt(PORT, "support-jp@example.com", "250");
    // Other addresses of the domain are refused at RCPT TO, not accepted and bounced later.
    let replies = smtp(PORT, &["nobody@example.com"], b"");
    assert!(
        replies[3].starts_with("550 5.1.1") && replies[3].contains("relay recipient table"),
        "{replies:?}"
    );

    let daemon = root.start_daemon(&roots_dir().join("postfix-postdesk.log"));
    let mta = Mta {
        root: &root,
        port: PORT,
        log: log.clone(),
        daemon,
        done: "status=sent",
        temp: "status=deferred",
        flush: &["postqueue", "-f"],
    };
    mta.run_all();

    // The other way: the domain in mydestination. Without the README's line Postfix refuses the address
    // (issue 21: "User unknown in local recipient table"), with it the mail reaches postdesk and local
    // mail still goes to local mailboxes.
    let base = std::fs::read_to_string(root.path("/etc/postfix/main.cf.test-base")).unwrap();
    std::fs::write(
        root.path("/etc/postfix/main.cf"),
        format!(
            "{base}mydestination = $myhostname, example.com, localhost\n{}",
            readme("postfix-main.cf")
        ),
    )
    .unwrap();
    root.sh(&readme("postfix-commands"));
    wait_rcpt(
        PORT,
        "support-jp@example.com",
        "550 5.1.1 <support-jp@example.com>: Recipient address rejected: User unknown in local recipient table",
    );
    append(
        &root,
        "/etc/postfix/main.cf",
        &readme("postfix-main.cf-local"),
    );
    root.sh(&readme("postfix-commands"));
    wait_rcpt(PORT, "support-jp@example.com", "250");
    let id = deliver(
        PORT,
        "support-jp@example.com",
        &mail(
            "support-jp@example.com",
            "local@example.jp",
            "in mydestination",
            3_000,
        ),
    );
    mta.delivered(&id);
    root.ticket("in mydestination");
    let id = deliver(
        PORT,
        "root@example.com",
        &mail("root@example.com", "root@example.jp", "for root", 1_000),
    );
    let line = mta.delivered(&id);
    assert!(
        line.contains("relay=local"),
        "local mail stays local: {line}"
    );

    mta.nothing_doubled(7);
    let (_, queue, _) = root.run(None, &["postqueue", "-p"]);
    assert!(queue.contains("Mail queue is empty"), "{queue}");
}

/// OpenSMTPD 6.8 with README.md's smtpd.conf lines, mail by SMTP.
#[test]
fn opensmtpd_delivers_by_the_readme() {
    if !can_make_roots("OpenSMTPD in a Debian 12 root") {
        return;
    }
    const PORT: u16 = 47125;
    let mut root = Root::make("opensmtpd", "opensmtpd");
    root.setup_postdesk();

    // Debian's smtpd.conf, listening on this test's port, with the README's lines above its `match` lines.
    let conf = root.path("/etc/smtpd.conf");
    let debian = std::fs::read_to_string(&conf).unwrap();
    assert!(debian.contains("\nlisten on localhost\n"), "{debian}");
    let mut text = String::new();
    let mut inserted = false;
    for line in debian.lines() {
        if line == "listen on localhost" {
            text.push_str(&format!("listen on 127.0.0.1 port {PORT}\n"));
            continue;
        }
        if line.starts_with("match ") && !inserted {
            text.push_str(&readme("smtpd.conf"));
            inserted = true;
        }
        text.push_str(line);
        text.push('\n');
    }
    assert!(inserted, "{debian}");
    std::fs::write(&conf, text).unwrap();
    let (code, out, err) = root.run(None, &["smtpd", "-n", "-f", "/etc/smtpd.conf"]);
    assert_eq!(code, 0, "smtpd -n: {out}{err}");

    let log = roots_dir().join("opensmtpd-smtpd.log");
    root.spawn(None, &["smtpd", "-d", "-f", "/etc/smtpd.conf"], &log);
    wait_for("OpenSMTPD's greeting", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", PORT)).is_ok()
    });
    let daemon = root.start_daemon(&roots_dir().join("opensmtpd-postdesk.log"));
    // An address the README does not route is refused at RCPT TO.
    let replies = smtp(PORT, &["nobody@example.com"], b"");
    assert!(replies[3].starts_with("550"), "{replies:?}");

    let mta = Mta {
        root: &root,
        port: PORT,
        log: log.clone(),
        daemon,
        done: "result=Ok",
        temp: "result=TempFail",
        flush: &["smtpctl", "schedule", "all"],
    };
    mta.run_all();
    mta.nothing_doubled(6);
    // Issue 21, item 8: the user's home is the storage directory and exists: no warning per delivery.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("parent_forward_open"), "{text}");
    let (_, queue, _) = root.run(None, &["smtpctl", "show", "queue"]);
    assert!(queue.trim().is_empty(), "{queue}");
}
