//! What the integration tests share, so a test says only what it is about:
//! - [`cli`]: one way to run the built `postdesk` binary ([`Cli`]: a command, its JSON, `postdesk run` as a
//!   [`DaemonProcess`]);
//! - [`config`]: one config builder ([`TestConfig`], [`Region`]) with sensible defaults (storage in
//!   `ROOT/data`, the file outbox in `ROOT/out`) and a method for each thing tests vary;
//! - [`ticket`]: one ticket builder ([`TicketBuilder`]) for tests that need a `Ticket` value;
//! - [`stack`]: the real mail stack (Dovecot and Postfix on 127.0.0.1, `scripts/mailstack.sh`);
//! - the guard [`require_servers`]: a test that needs the mail servers calls it first. Without root or
//!   without the servers installed it returns false and prints which test it skipped and how to run it, so
//!   plain `cargo test` runs everything else; `scripts/test.sh` sets `POSTDESK_TEST_REQUIRE_SERVERS=1`,
//!   under which a missing server fails the test instead.
//!
//! Each test binary compiles this module (`mod support;`) and uses part of it, hence the `allow`.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod config;
pub mod stack;
pub mod ticket;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use cli::{cli_json, Cli, DaemonProcess};
pub use config::{Region, TestConfig};
pub use stack::{password, private_stack, stack, start, Holder, PrivateStack, Server, Stack};
pub use ticket::{ticket, TicketBuilder};

/// What the mail-stack tests need, as [`require_servers`] names it.
pub const MAIL_SERVERS: &str = "Dovecot and Postfix";

/// The environment variable under which a missing server is a failure, not a skip (`scripts/test.sh`).
pub const REQUIRE_SERVERS: &str = "POSTDESK_TEST_REQUIRE_SERVERS";

/// What the mail stack needs on this machine (Debian's paths; `scripts/mailstack.sh` checks the same).
const MAIL_STACK_FILES: [&str; 6] = [
    "/usr/sbin/dovecot",
    "/usr/lib/dovecot/imap",
    "/usr/lib/dovecot/lmtp",
    "/usr/sbin/postfix",
    "/usr/lib/postfix/sbin/master",
    "/usr/bin/openssl",
];

/// Whether the calling test can run against the real mail stack ([`MAIL_SERVERS`]). False, with a line on
/// the terminal naming the test and how to run it, when this run is not root or the servers are not
/// installed; with `POSTDESK_TEST_REQUIRE_SERVERS=1` that case panics instead. True does not start the
/// stack: [`stack`] does, and fails the test if it cannot.
///
/// ```ignore
/// if !support::require_servers(support::MAIL_SERVERS) {
///     return;
/// }
/// ```
pub fn require_servers(what: &str) -> bool {
    static MISSING: OnceLock<Option<String>> = OnceLock::new();
    let missing = MISSING.get_or_init(|| {
        // Postfix's master runs only as root (and the servers drop privileges themselves).
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Some("this run is not root".to_string());
        }
        let absent: Vec<&str> = MAIL_STACK_FILES
            .into_iter()
            .filter(|f| !Path::new(f).exists())
            .collect();
        (!absent.is_empty()).then(|| format!("{} not installed", absent.join(", ")))
    });
    available(what, missing.as_deref())
}

/// What Cyrus needs on this machine (`scripts/install-test-deps.sh` installs cyrus-common and sasl2-bin,
/// and unpacks imapd and idled from cyrus-imapd, which conflicts with dovecot-imapd).
const CYRUS_FILES: [&str; 5] = [
    "/usr/lib/cyrus/bin/master",
    "/usr/lib/cyrus/bin/lmtpd",
    "/usr/sbin/saslpasswd2",
    "/usr/local/lib/postdesk-test/cyrus/bin/imapd",
    "/usr/local/lib/postdesk-test/cyrus/bin/idled",
];

/// Like [`require_servers`], for the tests against Cyrus IMAP ([`Server::Cyrus`]): true when Cyrus is
/// installed too (the mail stack is checked by [`require_servers`]).
pub fn require_cyrus() -> bool {
    // imapd and idled: unpacked by install-test-deps.sh, or installed by cyrus-imapd where Dovecot is not.
    let installed = |f: &str| {
        let packaged = f.replace(
            "/usr/local/lib/postdesk-test/cyrus/bin/",
            "/usr/lib/cyrus/bin/",
        );
        Path::new(f).exists() || Path::new(&packaged).exists()
    };
    let absent: Vec<&str> = CYRUS_FILES.into_iter().filter(|f| !installed(f)).collect();
    let missing = (!absent.is_empty()).then(|| format!("{} not installed", absent.join(", ")));
    available("Cyrus IMAP", missing.as_deref())
}

/// Like [`require_servers`], for a tool the test runs (e.g. `/usr/bin/systemd-analyze`).
pub fn require_tool(path: &str, what: &str) -> bool {
    let missing = (!Path::new(path).exists()).then(|| format!("{path} not installed"));
    available(what, missing.as_deref())
}

fn available(what: &str, missing: Option<&str>) -> bool {
    let Some(why) = missing else {
        return true;
    };
    let hint = "run scripts/test.sh as root, or sudo scripts/install-test-deps.sh";
    let required = std::env::var(REQUIRE_SERVERS).is_ok_and(|v| !v.is_empty() && v != "0");
    assert!(
        !required,
        "{} needs {what}: {why} ({REQUIRE_SERVERS} is set, so this is a failure, not a skip; {hint})",
        test_name()
    );
    skipped(&format!("needs {what}: {why} ({hint})"));
    false
}

/// Say on the terminal that the calling test skipped its work, and why. Written to stderr directly, not with
/// `eprintln!`, so the test harness's output capture does not hide it from a passing test.
pub fn skipped(why: &str) {
    let line = format!("skipped: {}: {why}\n", test_name());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `binary::test_name` of the calling test (the harness names each test's thread after the test).
fn test_name() -> String {
    let binary = env!("CARGO_CRATE_NAME");
    match std::thread::current().name() {
        Some(name) if name != "main" => format!("{binary}::{name}"),
        _ => binary.to_string(),
    }
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

/// [`eventually`] for tests without a runtime: poll `f` every `every` until it is true or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(every);
    }
}

/// A customer mail.
pub fn mail(from: &str, to: &str, subject: &str, message_id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n"
    )
    .into_bytes()
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
