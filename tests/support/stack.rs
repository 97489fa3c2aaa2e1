//! The project's real mail stack: Dovecot (IMAP, IMAPS, LMTP) and Postfix (SMTP) started by
//! `scripts/mailstack.sh` on 127.0.0.1, once per test binary and shared by its tests ([`stack`]), or one of
//! a test's own for tests that stop a server ([`private_stack`]). Each test makes its own users, so tests
//! running in parallel never share a mailbox. It needs root and the servers installed: call
//! [`super::require_servers`] first, so a run without them skips the test and says so.
//!
//! The IMAP intake tests run against three server layouts ([`Server`]): Dovecot as installed, Dovecot with
//! an `INBOX.` personal namespace, and Cyrus IMAP 3.6 (started beside Dovecot in the same directory,
//! Postfix delivering to it for `…@cyrus.example.com`), each also without MOVE
//! ([`Server::without_move`]). A test is written once, `async fn name(server: Server)`, and
//! [`crate::each_server!`] makes one `#[tokio::test]` per layout.
//!
//! Nothing is left running (issue 21, item 10): every stack a test process starts has a holder,
//! `mailstack.sh hold DIR`, a child whose stdin is a pipe this process never writes to or closes. The
//! kernel closes it when the process exits, however it ends (the tests pass or fail, a panic, SIGKILL,
//! Ctrl-C: the holder ignores SIGINT), and the holder then stops the servers of DIR once no other holder of
//! it is alive — after a few seconds' grace for the shared stack, so the next test binary of the same
//! `cargo test` finds it still up. Why not PR_SET_PDEATHSIG: the servers daemonize (their parent is init,
//! not us), and a death signal would kill them without the orderly stop that frees their ports; why not a
//! reaper in scripts/test.sh: plain `cargo test` as root and a killed test.sh would still leave them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use async_imap::Session;
use postdesk::config::{ImapIntake, TlsMode};
use postdesk::intake::imap::folder::encode;
use postdesk::intake::imap::{connect, ImapStream};

use super::{mail, unique};

pub struct Stack {
    pub dir: PathBuf,
    pub imap_port: u16,
    pub imaps_port: u16,
    pub smtp_port: u16,
    pub ca_pem: PathBuf,
    /// Which server and layout this is.
    pub server: Server,
    /// Whether the server offers MOVE (see [`Server::without_move`]).
    pub moves: bool,
}

/// The IMAP servers and layouts the intake tests run against (issue 20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// Dovecot 2.3 as Debian configures it: folders at the top (`NAMESPACE (("" "."))`).
    Dovecot,
    /// Dovecot with the personal namespace `INBOX.` (Courier-era hosts): `INBOX.Processed`, and a
    /// top-level `CREATE Processed` refused.
    DovecotInbox,
    /// Cyrus IMAP 3.6 with Debian's default layout (`altnamespace: no`): `INBOX.Processed`, a top-level
    /// `CREATE` answered `NO Permission denied`.
    Cyrus,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::Dovecot, Server::DovecotInbox, Server::Cyrus];

    /// Whether this run can use the server; false (with a `skipped:` line) without it, see
    /// [`super::require_servers`].
    pub fn available(self) -> bool {
        super::require_servers(super::MAIL_SERVERS)
            && (self != Server::Cyrus || super::require_cyrus())
    }

    /// This test binary's shared stack of the server.
    pub fn stack(self) -> &'static Stack {
        self.shared(true)
    }

    /// The same server without MOVE, so postdesk must COPY, flag `\Deleted` and EXPUNGE: Dovecot users
    /// whose CAPABILITY is only `IMAP4rev1` (no UIDPLUS and no IDLE either: poll), Cyrus on a port that
    /// leaves MOVE out of its capabilities.
    pub fn without_move(self) -> &'static Stack {
        self.shared(false)
    }

    fn shared(self, moves: bool) -> &'static Stack {
        static STACKS: [OnceLock<Stack>; 6] = [const { OnceLock::new() }; 6];
        let i = self as usize * 2 + usize::from(!moves);
        STACKS[i].get_or_init(|| {
            let base = stack();
            if self != Server::Cyrus {
                return Stack {
                    server: self,
                    moves,
                    ..base.clone()
                };
            }
            let env = run_script("cyrus-up", &base.dir, &[]);
            let get = |k: &str| env_value(&env, k, &base.dir.join("cyrus/env"));
            Stack {
                imap_port: get(if moves {
                    "CYRUS_IMAP_PORT"
                } else {
                    "CYRUS_NOMOVE_PORT"
                })
                .parse()
                .expect("Cyrus IMAP port"),
                imaps_port: get("CYRUS_IMAPS_PORT").parse().expect("CYRUS_IMAPS_PORT"),
                server: self,
                moves,
                ..base.clone()
            }
        })
    }

    /// A stack of this test's own with this server, for tests that restart it ([`Stack::restart_imap`]).
    /// Cyrus's has no SMTP: fill it with [`Stack::append`].
    pub fn private(self, name: &str) -> PrivateStack {
        let mut private = private_stack(name);
        private.0.server = self;
        if self == Server::Cyrus {
            let env = run_script("cyrus-up", &private.0.dir, &[]);
            let get = |k: &str| env_value(&env, k, &private.0.dir.join("cyrus/env"));
            private.0.imap_port = get("CYRUS_IMAP_PORT").parse().expect("CYRUS_IMAP_PORT");
            private.0.imaps_port = get("CYRUS_IMAPS_PORT").parse().expect("CYRUS_IMAPS_PORT");
        }
        private
    }

    /// A folder's full name on this server, as it lists it: `Processed` or `INBOX.Processed`.
    pub fn folder(self, name: &str) -> String {
        match self {
            Server::Dovecot => name.to_string(),
            Server::DovecotInbox | Server::Cyrus => format!("INBOX.{name}"),
        }
    }
}

impl Clone for Stack {
    fn clone(&self) -> Stack {
        Stack {
            dir: self.dir.clone(),
            ca_pem: self.ca_pem.clone(),
            ..*self
        }
    }
}

/// Run `mailstack.sh CMD DIR ARGS…`, failing the test with what it said; returns its standard output.
fn run_script(cmd: &str, dir: &Path, args: &[&str]) -> String {
    let out = Command::new(script())
        .arg(cmd)
        .arg(dir)
        .args(args)
        .output()
        .expect("run scripts/mailstack.sh");
    assert!(
        out.status.success(),
        "scripts/mailstack.sh {cmd} {} failed (install the servers with `sudo scripts/install-test-deps.sh`):\n{}{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env_value(env: &str, key: &str, file: &Path) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} missing from {}", file.display()))
        .trim_matches(['"', '\''])
        .to_string()
}

/// One `#[tokio::test]` per [`Server`] for each `async fn name(server: Server)` named: `name::dovecot`,
/// `name::dovecot_inbox`, `name::cyrus`. A server this run cannot use is skipped with a `skipped:` line.
#[macro_export]
macro_rules! each_server {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::support::Server;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dovecot() {
                if Server::Dovecot.available() {
                    super::$name(Server::Dovecot).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn dovecot_inbox() {
                if Server::DovecotInbox.available() {
                    super::$name(Server::DovecotInbox).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cyrus() {
                if Server::Cyrus.available() {
                    super::$name(Server::Cyrus).await
                }
            }
        }
    )*};
}

/// A `mailstack.sh hold DIR` child: the servers of DIR are stopped once this process is gone (see the
/// module's overview). Dropping it closes the pipe, which is how a private stack lets go.
pub struct Holder(#[allow(dead_code)] Child);

impl Holder {
    /// Hold `dir`; `grace`: seconds the holder waits after this process is gone before it stops the
    /// servers (another test binary may take the stack over meanwhile).
    pub fn hold(dir: &Path, grace: u32) -> Holder {
        use std::io::BufRead;
        std::fs::create_dir_all(dir.join("log")).expect("stack log directory");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("log/holder.log"))
            .expect("holder log");
        let mut child = Command::new(script())
            .arg("hold")
            .arg(dir)
            .env("MAILSTACK_GRACE", grace.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("run scripts/mailstack.sh hold");
        // Registered once it says so: only then can a stack it holds be started safely.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("holder stdout");
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("holder's first line");
        assert!(
            line.starts_with("holding"),
            "mailstack.sh hold {} did not start: {line:?} (see {})",
            dir.display(),
            dir.join("log/holder.log").display()
        );
        Holder(child)
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack.sh")
}

/// Start (or reuse) a stack in `dir` (nothing holds it: the caller stops it, see [`Holder`]).
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
        server: Server::Dovecot,
        moves: true,
    }
}

/// Seconds the shared stack outlives the last test process holding it (the next test binary of a
/// `cargo test` run starts within them and takes it over).
const SHARED_GRACE: u32 = 5;

/// The shared stack of this test run (Dovecot). Its directory is under /tmp (the servers' own users must be
/// able to traverse it; a `mktemp -d` directory is 0700), named after this checkout so two checkouts do not
/// share; `POSTDESK_TEST_STACK_DIR` names another (tests/stack.rs uses it). Held: it stops after this
/// process (and every other one using it) is gone.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<(Stack, Holder)> = OnceLock::new();
    &STACK
        .get_or_init(|| {
            let dir = std::env::var_os("POSTDESK_TEST_STACK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    let tag = env!("CARGO_MANIFEST_DIR")
                        .bytes()
                        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
                    std::env::temp_dir().join(format!("postdesk-ms-{tag:08x}"))
                });
            let holder = Holder::hold(&dir, SHARED_GRACE);
            (start(&dir), holder)
        })
        .0
}

impl Stack {
    /// Create a mailbox user on this stack's server (with its layout); returns its address. The password
    /// is `pw-<address>`.
    pub fn user(&self, name: &str) -> String {
        if self.server == Server::Cyrus {
            let address = format!("{}@cyrus.example.com", unique(name));
            run_script(
                "cyrus-add-user",
                &self.dir,
                &[&address, &password(&address)],
            );
            return address;
        }
        let address = format!("{}@example.com", unique(name));
        let mut flags = Vec::new();
        if self.server == Server::DovecotInbox {
            flags.push("--inbox-prefix");
        }
        if !self.moves {
            flags.push("--imap4rev1-only");
        }
        let status = Command::new(script())
            .arg("add-user")
            .arg(&self.dir)
            .arg(&address)
            .arg(password(&address))
            .args(&flags)
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

    /// Append `raw` to `user`'s `mailbox` (its full name on the server, UTF-8; created if missing),
    /// optionally with an INTERNALDATE like
    /// `01-Jan-2020 10:00:00 +0000`.
    pub async fn append(
        &self,
        user: &str,
        mailbox: &str,
        raws: &[Vec<u8>],
        internal_date: Option<&str>,
    ) {
        let mut s = self.imap(user).await;
        let mailbox = &encode(mailbox);
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
        let n = s
            .examine(encode(mailbox))
            .await
            .map(|m| m.exists)
            .unwrap_or(0);
        let _ = s.logout().await;
        n
    }

    /// The raw messages of `user`'s `mailbox`.
    pub async fn messages(&self, user: &str, mailbox: &str) -> Vec<Vec<u8>> {
        use futures_util::StreamExt;
        let mut s = self.imap(user).await;
        let mut out = Vec::new();
        if let Ok(m) = s.examine(encode(mailbox)).await {
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
    /// Stop every server (DIR, its users and mail are kept; [`start`] on the same DIR brings them back).
    pub fn down(&self) {
        self.switch("down");
    }
    /// Stop the IMAP server (Dovecot, and Cyrus if it runs) and start it again, same ports. Only for a
    /// private stack (see [`private_stack`], [`Server::private`]).
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

/// A stack of this test's own, for tests that stop or restart a server; stopped when dropped, and by its
/// holder should this process end without dropping it.
pub struct PrivateStack(pub Stack, Holder);

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
    let dir = std::env::temp_dir().join(unique(name));
    let holder = Holder::hold(&dir, 0);
    PrivateStack(start(&dir), holder)
}
