//! The project's real mail stack: Dovecot (IMAP, IMAPS, LMTP) and Postfix (SMTP) started by
//! `scripts/mailstack.sh` on 127.0.0.1, once per test run and shared by every test ([`stack`]), or one of a
//! test's own for tests that stop a server ([`private_stack`]). Each test makes its own users, so tests
//! running in parallel never share a mailbox. It needs root and the servers installed: call
//! [`super::require_servers`] first, so a run without them skips the test and says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use async_imap::Session;
use postdesk::config::{ImapIntake, TlsMode};
use postdesk::intake::imap::{connect, ImapStream};

use super::{mail, unique};

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
    /// Stop both servers (DIR, its users and mail are kept; [`start`] on the same DIR brings them back).
    pub fn down(&self) {
        self.switch("down");
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
