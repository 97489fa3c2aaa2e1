//! The project's real mail stack for integration tests: Dovecot (IMAP, LMTP) and Postfix (SMTP) started by
//! `scripts/mailstack.sh` on 127.0.0.1, once per test run, shared by every test; each test makes its own
//! users, so tests running in parallel never share a mailbox.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use async_imap::Session;
use postdesk::config::{ImapIntake, TlsMode};
use postdesk::intake::imap::{connect, ImapStream};

pub struct Stack {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub ca_pem: PathBuf,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack.sh")
}

/// Start (or reuse) a stack in `dir`.
pub fn start(dir: &Path) -> Stack {
    let out = Command::new(script())
        .arg("up")
        .arg(dir)
        .output()
        .expect("run scripts/mailstack.sh");
    assert!(
        out.status.success(),
        "the real mail stack did not start. Install its servers with `sudo scripts/install-test-deps.sh` (Debian's dovecot-imapd, dovecot-lmtpd, postfix), then run the tests again.\nscripts/mailstack.sh said:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let env = std::fs::read_to_string(dir.join("env")).expect("mailstack env file");
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("{k} missing from {}", dir.join("env").display()))
            .trim_matches(['"', '\''])
            .to_string()
    };
    Stack {
        dir: dir.to_path_buf(),
        imap_port: get("IMAP_PORT").parse().expect("IMAP_PORT"),
        imaps_port: get("IMAPS_PORT").parse().expect("IMAPS_PORT"),
        smtp_port: get("SMTP_PORT").parse().expect("SMTP_PORT"),
        ca_pem: PathBuf::from(get("CA_PEM")),
    }
}

/// The shared stack of this test run. Its directory is under /tmp (the servers' own users must be able to
/// traverse it; a `mktemp -d` directory is 0700), named after this checkout so two checkouts do not share.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let tag = env!("CARGO_MANIFEST_DIR")
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        start(&std::env::temp_dir().join(format!("postdesk-ms-{tag:08x}")))
    })
}

/// A unique name for this process and call, for users and mailboxes.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

impl Stack {
    /// Create a mailbox user; returns its address. The password is `pw-<address>`.
    pub fn user(&self, name: &str) -> String {
        let address = format!("{}@example.com", unique(name));
        let status = Command::new(script())
            .arg("add-user")
            .arg(&self.dir)
            .arg(&address)
            .arg(password(&address))
            .status()
            .expect("add-user");
        assert!(status.success(), "mailstack add-user {address}");
        address
    }

    /// An IMAP intake config for `user` (plain IMAP on loopback unless `tls` says otherwise).
    pub fn intake(&self, user: &str, tls: TlsMode, password_file: &Path) -> ImapIntake {
        std::fs::write(password_file, format!("{}\n", password(user))).expect("password file");
        let toml = format!(
            "host = \"{host}\"\nport = {port}\ntls = \"{tls}\"\nusername = \"{user}\"\npassword_file = \"{pw}\"\nca_file = \"{ca}\"\npoll_interval = \"60s\"\n",
            host = if tls == TlsMode::None { "127.0.0.1" } else { "localhost" },
            port = if tls == TlsMode::Implicit { self.imaps_port } else { self.imap_port },
            tls = match tls {
                TlsMode::None => "none",
                TlsMode::Implicit => "implicit",
                TlsMode::Starttls => "starttls",
            },
            pw = password_file.display(),
            ca = self.ca_pem.display(),
        );
        let mut intake: ImapIntake = toml::from_str(&toml).expect("intake toml");
        intake.password = Some(postdesk::config::Secret::new(password(user)));
        intake
    }

    /// Log in as `user` over plain IMAP.
    pub async fn imap(&self, user: &str) -> Session<ImapStream> {
        let dir = tempfile::tempdir().unwrap();
        let cfg = self.intake(user, TlsMode::None, &dir.path().join("pw"));
        connect(&cfg)
            .await
            .unwrap_or_else(|e| panic!("IMAP login as {user}: {e}"))
    }

    /// Append `raw` to `user`'s `mailbox` (created if missing), optionally with an INTERNALDATE like
    /// `01-Jan-2020 10:00:00 +0000`.
    pub async fn append(
        &self,
        user: &str,
        mailbox: &str,
        raws: &[Vec<u8>],
        internal_date: Option<&str>,
    ) {
        let mut s = self.imap(user).await;
        let _ = s.create(mailbox).await;
        let date = internal_date.map(|d| format!("\"{d}\""));
        for raw in raws {
            s.append(mailbox, None, date.as_deref(), raw)
                .await
                .expect("APPEND");
        }
        let _ = s.logout().await;
    }

    /// How many messages `user`'s `mailbox` holds.
    pub async fn count(&self, user: &str, mailbox: &str) -> u32 {
        let mut s = self.imap(user).await;
        let n = s.examine(mailbox).await.map(|m| m.exists).unwrap_or(0);
        let _ = s.logout().await;
        n
    }

    /// The raw messages of `user`'s `mailbox`.
    pub async fn messages(&self, user: &str, mailbox: &str) -> Vec<Vec<u8>> {
        use futures_util::StreamExt;
        let mut s = self.imap(user).await;
        let mut out = Vec::new();
        if let Ok(m) = s.examine(mailbox).await {
            if m.exists > 0 {
                let mut stream = s.fetch("1:*", "BODY.PEEK[]").await.expect("FETCH");
                while let Some(Ok(f)) = stream.next().await {
                    out.extend(f.body().map(|b| b.to_vec()));
                }
            }
        }
        let _ = s.logout().await;
        out
    }

    /// Send `raw` by SMTP from `from` to `to` (the envelope), as a customer's mail server would.
    pub async fn smtp_send(&self, from: &str, to: &str, raw: &[u8]) {
        use lettre::address::Envelope;
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.smtp_port)
            .build();
        // An empty `from` is the null reverse-path `<>` of delivery reports.
        let sender = (!from.is_empty()).then(|| from.parse().expect("sender address"));
        let envelope = Envelope::new(sender, vec![to.parse().unwrap()]).unwrap();
        transport.send_raw(&envelope, raw).await.expect("SMTP send");
    }
}

impl Stack {
    /// Send a customer mail from `from` to `to` by SMTP (see [`mail`]).
    pub async fn send_mail(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        message_id: &str,
        body: &str,
    ) {
        self.smtp_send(from, to, &mail(from, to, subject, message_id, body))
            .await;
    }
}

pub fn password(address: &str) -> String {
    format!("pw-{address}")
}

/// Poll `f` until it is true or `timeout` passes; returns the time it took.
pub async fn eventually(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A customer mail.
pub fn mail(from: &str, to: &str, subject: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------------------
// Configs, the real binary, and the fault switches of the stack: shared by the crash and fault tests (and
// the IMAP tests), so the set-up lives in one place.

/// `[region.intake]` lines (without the header) for an IMAP intake of `user`'s mailboxes on stack `s`: plain
/// IMAP on 127.0.0.1 unless `tls` is `implicit` or `starttls`; the password is written to
/// `pw_dir/<user>.pass` (`password` overrides the right one, to test a wrong one).
pub fn imap_intake_toml(
    s: &Stack,
    user: &str,
    pw_dir: &Path,
    tls: &str,
    password: Option<&str>,
) -> String {
    let pw = pw_dir.join(format!("{user}.pass"));
    std::fs::write(
        &pw,
        format!(
            "{}\n",
            password
                .map(str::to_string)
                .unwrap_or_else(|| self::password(user))
        ),
    )
    .unwrap();
    let (host, port) = match tls {
        "implicit" => ("localhost", s.imaps_port),
        "starttls" => ("localhost", s.imap_port),
        _ => ("127.0.0.1", s.imap_port),
    };
    format!(
        "kind = \"imap\"\nhost = \"{host}\"\nport = {port}\ntls = \"{tls}\"\nusername = \"{user}\"\npassword_file = \"{}\"\nca_file = \"{}\"\npoll_interval = \"60s\"\n",
        pw.display(),
        s.ca_pem.display()
    )
}

/// `[outbound]` for the stack's Postfix (plain SMTP on loopback, quick retries), plus `extra` lines of
/// `[outbound]`.
pub fn smtp_outbound_toml(s: &Stack, extra: &str) -> String {
    format!(
        "[outbound]\ntransport = \"smtp\"\nretry_base = \"200ms\"\n{extra}\n[outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        s.smtp_port
    )
}

/// `[outbound]` writing mail into `dir/out` (for tests that are not about sending).
pub fn file_outbound_toml(dir: &Path) -> String {
    format!(
        "[outbound]\ntransport = \"file\"\nfile_dir = \"{}/out\"\n",
        dir.display()
    )
}

/// One region of a test config.
pub struct RegionSpec<'a> {
    pub code: &'a str,
    pub address: &'a str,
    pub locale: &'a str,
    /// The `[region.intake]` lines (see [`imap_intake_toml`]).
    pub intake: String,
}

/// A whole config: storage in `storage`, the given `[outbound]` section, the regions.
pub fn config_toml(storage: &Path, outbound: &str, regions: &[RegionSpec]) -> String {
    let mut text = format!("[storage]\npath = \"{}\"\n{outbound}\n", storage.display());
    for r in regions {
        text.push_str(&format!(
            "[[region]]\ncode = \"{}\"\nlocale = \"{}\"\naddress = \"{}\"\n[region.intake]\n{}\n",
            r.code, r.locale, r.address, r.intake
        ));
    }
    text
}

impl Stack {
    fn switch(&self, what: &str) {
        let out = Command::new(script())
            .arg(what)
            .arg(&self.dir)
            .output()
            .expect("run scripts/mailstack.sh");
        assert!(
            out.status.success(),
            "mailstack.sh {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// Stop Dovecot and start it again, same ports. Only for a private stack (see [`private_stack`]).
    pub fn restart_imap(&self) {
        self.switch("restart-imap");
    }
    /// Stop Postfix (SMTP refuses connections) — private stacks only.
    pub fn stop_smtp(&self) {
        self.switch("stop-smtp");
    }
    /// Start Postfix again after [`Stack::stop_smtp`].
    pub fn start_smtp(&self) {
        self.switch("start-smtp");
    }
}

/// A stack of this test's own, for tests that stop or restart a server; stopped when dropped.
pub struct PrivateStack(pub Stack);

impl std::ops::Deref for PrivateStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.0
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("down").arg(&self.0.dir).output();
        let _ = std::fs::remove_dir_all(&self.0.dir);
    }
}

pub fn private_stack(name: &str) -> PrivateStack {
    PrivateStack(start(&std::env::temp_dir().join(unique(name))))
}

/// The real `postdesk` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postdesk"))
}

/// Run `postdesk --config CONFIG ARGS…` in `cwd` with `stdin` as its input: (exit code, stdout, stderr).
/// With `umask_000` the binary runs under umask 000, so the file modes it creates are its own doing.
pub fn postdesk_cli(
    config: &Path,
    cwd: &Path,
    args: &[&str],
    stdin: &[u8],
    umask_000: bool,
) -> (i32, String, String) {
    let mut cmd = if umask_000 {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg("umask 000; exec \"$@\"")
            .arg("sh")
            .arg(bin());
        c
    } else {
        Command::new(bin())
    };
    let mut child = cmd
        .arg("--config")
        .arg(config)
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run `postdesk --config CONFIG ARGS…` (forwarded to a running daemon, or on the store) and parse its JSON.
/// A command that does not answer within 30 s fails the test instead of hanging it.
pub fn cli_json(config: &Path, args: &[&str]) -> serde_json::Value {
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut b).map(|_| b)
    });
    let err = std::thread::spawn(move || {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut b).map(|_| b)
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("postdesk {args:?} did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (stdout, stderr) = (out.join().unwrap().unwrap(), err.join().unwrap().unwrap());
    assert!(
        status.success(),
        "postdesk {args:?}: {}",
        String::from_utf8_lossy(&stderr)
    );
    serde_json::from_slice(&stdout).unwrap()
}

/// `postdesk run` as a child process, its log (stderr) collected line by line.
pub struct DaemonProcess {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DaemonProcess {
    pub fn spawn(config: &Path) -> DaemonProcess {
        use std::io::BufRead;
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(config)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn postdesk run");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let echo = std::env::var_os("POSTDESK_TEST_LOG").is_some();
        let spawned = Instant::now();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("[postdesk +{:?}] {line}", spawned.elapsed());
                }
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        DaemonProcess {
            child,
            log,
            reader: Some(reader),
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether the log has a line containing all of `parts`.
    pub fn logged(&self, parts: &[&str]) -> bool {
        self.log()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    }

    /// Still running (it has not exited on its own)?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL, and wait for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    /// SIGTERM (a clean stop); returns whether it exited 0 within 20 s.
    pub fn stop(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// A small seeded PRNG (xorshift64*), so a failing random schedule can be replayed from its printed seed.
pub struct XorShift(u64);

impl XorShift {
    /// Seeded from `POSTDESK_TEST_SEED` if set, else from the clock.
    pub fn from_env() -> XorShift {
        let seed = std::env::var("POSTDESK_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("random seed {seed} (replay with POSTDESK_TEST_SEED={seed})");
        XorShift(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}
