//! IMAP as a mail source: one task per (region, mailbox), IDLE where the server has it, exactly once by UID.
//!
//! The position `(UIDVALIDITY, highest stored UID)` of each mailbox lives in the store and is written in the
//! same transaction as the tickets. A sweep fetches the UIDs above it in batches (`UID FETCH a:b
//! BODY.PEEK[]`, which does not set \Seen), ingests them, flushes the store once, and only then applies
//! `after` (`seen`, `move:Folder`, `delete`). A crash anywhere re-fetches at most the batch that was not
//! acknowledged, and the store's Message-ID + content de-duplication makes that harmless. A changed
//! UIDVALIDITY re-scans the mailbox relying on that same de-duplication, without acknowledgements for
//! old mail.
//!
//! Folder names (the mailboxes, `after`'s folder, the quarantine folder) are resolved as a mail client
//! does: against the server's NAMESPACE, relative names under the personal namespace, in modified UTF-7
//! on the wire ([`folder`]).
//!
//! A mail leaves its mailbox (or is flagged) only once it is whole in the store, or, for oversized and
//! unreadable mail, only by a move to the quarantine folder that the server confirmed. An
//! acknowledgement the server refuses (`NO`: a folder that does not exist or may not be created) leaves
//! the mail where it is, marks the intake failing with one error, and is retried with backoff while new
//! mail keeps being taken: it never blocks the mailbox. The quarantine candidates still on the server are
//! remembered in the store, and mail larger than `max_message_bytes` is recognised by its size, so no
//! retry, restart or crash applies `after` to them.
//!
//! Every IMAP call runs under a timeout; a broken connection is re-made with exponential backoff and
//! jitter. State changes (connected, lost, authentication failed, an acknowledgement failing) are logged
//! once, and the backoff grows, until a pass through the mailbox succeeds, however often the session is
//! re-made meanwhile. Server replies are shown as the server's text (`NO [TRYCREATE] Mailbox does not
//! exist`), see [`reply_text`].

pub mod folder;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::{Client, Session};
use chrono::Utc;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use crate::config::{ImapAuth, ImapIntake, RegionConfig, TlsMode};
use crate::desk::decide::Delivery;
use crate::service::{Desk, Incoming, Outcome};
use crate::store::Storage;

/// How long any single IMAP exchange may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// IDLE is re-issued after this long, before servers' ~30 minute limit.
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);
/// UIDs fetched per batch (one store flush and one acknowledgement command per batch).
pub const BATCH: usize = 500;
/// Bytes of an oversized mail's text that are still fetched and stored.
const OVERSIZE_TEXT_BYTES: usize = 256 * 1024;
/// The default folder oversized and unparseable mail is moved to (`quarantine_folder`), relative: under
/// the personal namespace.
pub const QUARANTINE_FOLDER: &str = "postdesk-quarantine";

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("TLS with {0} failed: {1} (check the server's certificate, or set ca_file for a private CA)")]
    Tls(String, String),
    /// The server's answer to the login (the user name is logged at debug level only: it is usually an
    /// address).
    #[error("login refused: {0} (check username and password_file/password_env)")]
    Auth(String),
    /// The connection broke, or the server sent something that is not IMAP.
    #[error("{0}")]
    Protocol(String),
    /// The server answered a command with `NO` or `BAD` (the connection itself is fine).
    #[error("the server answered {0}")]
    Refused(String),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot store mail: {0}")]
    Store(String),
    #[error("mailbox {0} cannot be selected: {1} (deleted or renamed on the server? its mail is taken again once it exists; fix `mailboxes` if it was renamed)")]
    NoMailbox(String, String),
}

impl ImapError {
    /// A fixed word for the kind of error, for `/healthz` (the message itself may carry a user name or
    /// server text and stays in the log).
    pub fn kind(&self) -> &'static str {
        match self {
            ImapError::Connect(..) => "connect",
            ImapError::Tls(..) => "tls",
            ImapError::Auth(..) => "auth",
            ImapError::Protocol(_) => "protocol",
            ImapError::Refused(_) => "refused",
            ImapError::Timeout(_) => "timeout",
            ImapError::Store(_) => "store",
            ImapError::NoMailbox(..) => "no_mailbox",
        }
    }
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        use async_imap::error::Error as E;
        match e {
            E::No(_) | E::Bad(_) => ImapError::Refused(reply_text(&e)),
            _ => ImapError::Protocol(reply_text(&e)),
        }
    }
}

/// An async-imap error as a person reads it: a server's answer as its text (`NO [TRYCREATE] Mailbox does
/// not exist`; async-imap hands it over as Rust debug output, `code: Some(TryCreate), info: Some("…")`),
/// anything else in plain words.
pub fn reply_text(e: &async_imap::error::Error) -> String {
    use async_imap::error::Error as E;
    match e {
        E::No(outcome) => format!("NO {}", outcome_text(outcome)),
        E::Bad(outcome) => format!("BAD {}", outcome_text(outcome)),
        E::ConnectionLost => "the server closed the connection".into(),
        E::Io(io) => format!("connection error: {io}"),
        E::Parse(p) => format!("an answer that is not IMAP: {p}"),
        other => other.to_string(),
    }
}

/// `code: Some(TryCreate), info: Some("Mailbox does not exist")` → `[TRYCREATE] Mailbox does not exist`.
fn outcome_text(debug: &str) -> String {
    let (code, info) = match debug.split_once(", info: ") {
        Some((c, i)) => (c.strip_prefix("code: ").unwrap_or(c), i),
        None => return debug.to_string(),
    };
    let info = match info
        .strip_prefix("Some(\"")
        .and_then(|i| i.strip_suffix("\")"))
    {
        Some(text) => unescape_debug(text),
        None if info == "None" => String::new(),
        None => info.to_string(),
    };
    let code = code
        .strip_prefix("Some(")
        .and_then(|c| c.strip_suffix(')'))
        .map(|c| {
            let name = c.split(['(', ' ']).next().unwrap_or(c);
            match name {
                "ReadOnly" => "READ-ONLY".to_string(),
                "ReadWrite" => "READ-WRITE".to_string(),
                other => other.to_ascii_uppercase(),
            }
        });
    match (code, info.is_empty()) {
        (Some(c), true) => format!("[{c}]"),
        (Some(c), false) => format!("[{c}] {info}"),
        (None, true) => "(no text)".into(),
        (None, false) => info,
    }
}

/// Undo Rust's `{:?}` escaping of a string (`\"`, `\\`, `\n`, `\u{…}`).
fn unescape_debug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = chars
                    .by_ref()
                    .skip_while(|c| *c == '{')
                    .take_while(|c| *c != '}')
                    .collect();
                if let Some(c) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    out.push(c);
                }
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

async fn timed<T, E: Into<ImapError>>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ImapError> {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(r) => r.map_err(Into::into),
        Err(_) => Err(ImapError::Timeout(CALL_TIMEOUT)),
    }
}

/// A plain or TLS connection, so that one session type serves every `tls` mode.
#[derive(Debug)]
pub enum ImapStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS connector that checks certificates against the web PKI roots plus `ca_file`, with the one crypto
/// backend of the whole build (ring).
pub fn tls_connector(ca_file: Option<&Path>) -> Result<TlsConnector, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tls_wrap(cfg: &ImapIntake, tcp: TcpStream) -> Result<ImapStream, ImapError> {
    let connector =
        tls_connector(cfg.ca_file.as_deref()).map_err(|e| ImapError::Tls(cfg.host.clone(), e))?;
    let name = rustls_pki_types::ServerName::try_from(cfg.host.clone())
        .map_err(|e| ImapError::Tls(cfg.host.clone(), e.to_string()))?;
    let tls = timed(async {
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| ImapError::Tls(cfg.host.clone(), e.to_string()))
    })
    .await?;
    Ok(ImapStream::Tls(Box::new(tls)))
}

/// Connect, secure and log in.
pub async fn connect(cfg: &ImapIntake) -> Result<Session<ImapStream>, ImapError> {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let tcp = timed(async {
        TcpStream::connect(&addr)
            .await
            .map_err(|e| ImapError::Connect(addr.clone(), e.to_string()))
    })
    .await?;
    let _ = tcp.set_nodelay(true);
    let stream = match cfg.tls {
        TlsMode::Implicit => tls_wrap(cfg, tcp).await?,
        TlsMode::Starttls | TlsMode::None => ImapStream::Plain(tcp),
    };
    let mut client = Client::new(stream);
    let greeting = timed(async {
        client
            .read_response()
            .await
            .map_err(|e| ImapError::Protocol(format!("connection error: {e}")))
    })
    .await?;
    if greeting.is_none() {
        return Err(ImapError::Connect(
            addr,
            "the server closed the connection before greeting".into(),
        ));
    }
    if cfg.tls == TlsMode::Starttls {
        timed(client.run_command_and_check_ok("STARTTLS", None)).await?;
        let ImapStream::Plain(tcp) = client.into_inner() else {
            return Err(ImapError::Protocol("STARTTLS on a TLS connection".into()));
        };
        client = Client::new(tls_wrap(cfg, tcp).await?);
    }
    let password = cfg
        .password
        .as_ref()
        .map(|p| p.expose().to_string())
        .unwrap_or_default();
    let login = async {
        match cfg.auth {
            ImapAuth::Login => client
                .login(&cfg.username, &password)
                .await
                .map_err(|(e, _)| e),
            ImapAuth::Plain => client
                .authenticate(
                    "PLAIN",
                    PlainAuth {
                        username: &cfg.username,
                        password: &password,
                    },
                )
                .await
                .map_err(|(e, _)| e),
        }
    };
    match tokio::time::timeout(CALL_TIMEOUT, login).await {
        Ok(Ok(session)) => Ok(session),
        Ok(Err(e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)))) => {
            tracing::debug!(username = %cfg.username, host = %cfg.host, "IMAP login refused");
            Err(ImapError::Auth(reply_text(&e)))
        }
        Ok(Err(e)) => Err(ImapError::Protocol(reply_text(&e))),
        Err(_) => Err(ImapError::Timeout(CALL_TIMEOUT)),
    }
}

/// SASL PLAIN (RFC 4616): one message, `\0user\0password`.
struct PlainAuth<'a> {
    username: &'a str,
    password: &'a str,
}

impl async_imap::Authenticator for PlainAuth<'_> {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        format!("\0{}\0{}", self.username, self.password).into_bytes()
    }
}

/// Where a mailbox's intake stands: what the store has of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailboxState {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// The store key of a mailbox's state.
pub fn state_key(region: &str, username: &str, mailbox: &str) -> Vec<u8> {
    format!("imap:{region}:{username}:{mailbox}").into_bytes()
}

fn encode_state(s: MailboxState) -> Vec<u8> {
    serde_json::to_vec(&s).unwrap_or_default()
}

/// Most ticket ids one "IMAP mail stored" line names.
const LOGGED_TICKETS: usize = 5;

/// `JP-1000,JP-1001` for the log line, the first [`LOGGED_TICKETS`] of them and `+N more`; `-` for none
/// (everything quarantined).
pub fn ticket_list(ids: &[crate::types::TicketId]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    let mut out: Vec<String> = ids
        .iter()
        .take(LOGGED_TICKETS)
        .map(|t| t.to_string())
        .collect();
    if ids.len() > LOGGED_TICKETS {
        out.push(format!("+{} more", ids.len() - LOGGED_TICKETS));
    }
    out.join(",")
}

/// A UID set in IMAP syntax with ranges (`1:5,7,9:12`), from sorted UIDs.
pub fn uid_set(uids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end + 1 {
            i += 1;
            end = uids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

/// Most bytes fetched per batch: bounds memory whatever the mails' sizes.
const BATCH_BYTES: u64 = 32 * 1024 * 1024;

/// Split new mail into fetch batches of at most [`BATCH`] mails and about [`BATCH_BYTES`] bytes.
fn batches(metas: &[NewMail]) -> Vec<&[NewMail]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, m) in metas.iter().enumerate() {
        let full = i - start >= BATCH || (i > start && bytes + u64::from(m.size) > BATCH_BYTES);
        if full {
            out.push(&metas[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += u64::from(m.size);
    }
    if start < metas.len() {
        out.push(&metas[start..]);
    }
    out
}

/// A mail found above the stored position: its UID, size and arrival date.
#[derive(Clone, Copy, Debug)]
struct NewMail {
    uid: u32,
    size: u32,
    arrived: Option<chrono::DateTime<Utc>>,
}

/// One fetched mail, owned, ready for the ingest thread.
struct FetchedMail {
    uid: u32,
    raw: Vec<u8>,
    source: String,
    delivery: Delivery,
    state: Option<(Vec<u8>, Vec<u8>)>,
}

/// A fetched batch; `oversized` are the mails stored truncated (their originals go to quarantine).
struct FetchedChunk {
    mails: Vec<FetchedMail>,
    oversized: Vec<Oversized>,
}

/// What the server offers that changes how we work.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caps {
    pub idle: bool,
    pub mv: bool,
    pub uidplus: bool,
}

/// One mailbox's intake.
pub struct MailboxIntake {
    pub desk: Arc<Desk>,
    pub region: RegionConfig,
    pub cfg: ImapIntake,
    pub mailbox: String,
}

/// Log state changes once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    Starting,
    Connected,
    /// What failed (one log line per streak, until a pass through the mailbox succeeds), and whether it
    /// failed after a successful login (the mailbox, a refused command, the store: reconnecting is not news).
    Failing {
        kind: &'static str,
        after_login: bool,
    },
}

/// The words a failure is logged (and recognised as "the same again") by.
fn failure_kind(e: &ImapError) -> &'static str {
    match e {
        ImapError::Auth(..) => "authentication failed",
        ImapError::NoMailbox(..) => "mailbox missing",
        ImapError::Store(..) => "intake paused, the store cannot take mail",
        ImapError::Refused(..) => "command refused",
        _ => "connection lost",
    }
}

/// What of an intake outlives its sessions: the backoff, what was logged, the acknowledgements to make.
struct Progress {
    link: LinkState,
    /// Failed sessions since the last successful pass through the mailbox: the backoff's exponent.
    failures: u32,
    /// Whether "IMAP connected" was logged since the last connection failure was.
    connected_logged: bool,
    acks: Acks,
}

/// Which acknowledgement the server refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AckKind {
    /// `after` (`\Seen`, the move to `after`'s folder, `\Deleted`).
    After,
    /// The move of oversized or unreadable mail to the quarantine folder.
    Quarantine,
}

/// Acknowledgements the server refused, and when to look at the stored mail still waiting for one (the
/// backlog). Kept across sessions, so a reconnect neither logs them again nor retries them at once.
#[derive(Debug, Default)]
struct Acks {
    /// The refused `after`, as logged (once), until it works again.
    after_failing: Option<String>,
    /// The refused move to quarantine, likewise.
    quarantine_failing: Option<String>,
    /// Whether the quarantine folder's refused CREATE was logged (a warning: nothing waits for it yet).
    quarantine_folder_warned: bool,
    /// Refused attempts in a row: the next look at the backlog waits `reconnect_delay(attempts)`.
    attempts: u32,
    /// When to look at the backlog next; `None` while nothing is known to wait.
    next_backlog: Option<tokio::time::Instant>,
}

impl Acks {
    /// The word `/healthz` shows while an acknowledgement is refused.
    fn failing(&self) -> Option<&'static str> {
        if self.quarantine_failing.is_some() {
            Some("quarantine")
        } else if self.after_failing.is_some() {
            Some("after")
        } else {
            None
        }
    }

    fn backlog_due(&self) -> bool {
        self.next_backlog
            .is_some_and(|t| t <= tokio::time::Instant::now())
    }

    /// How long an IDLE or a poll may wait before the backlog is due (`limit` at most).
    fn wait_bound(&self, limit: Duration) -> Duration {
        match self.next_backlog {
            Some(t) => t
                .saturating_duration_since(tokio::time::Instant::now())
                .min(limit),
            None => limit,
        }
    }
}

/// A folder of this session: its name as configured and resolved (UTF-8), and as sent (modified UTF-7).
#[derive(Clone, Debug)]
struct Folder {
    name: String,
    wire: String,
}

impl Folder {
    fn new(name: String) -> Folder {
        Folder {
            wire: folder::encode(&name),
            name,
        }
    }
}

/// The folders one session works with, resolved against the server's namespaces.
#[derive(Clone, Debug)]
struct Folders {
    namespaces: folder::Namespaces,
    /// The mailbox mail is taken from.
    mailbox: Folder,
    /// `after = "move:…"`'s folder.
    processed: Option<Folder>,
    quarantine: Folder,
    /// Whether the folders are known to exist (LISTed or created in this session).
    processed_ready: bool,
    quarantine_ready: bool,
}

/// An oversized mail stored truncated, on its way to the quarantine folder.
#[derive(Clone, Debug)]
struct Oversized {
    uid: u32,
    size: u32,
    ticket: Option<crate::types::TicketId>,
    /// Its header, kept with the quarantine entry `postdesk stats` counts.
    header: Vec<u8>,
}

/// The quarantine candidates still in a mailbox (moved there only once the server confirmed it).
#[derive(Debug, Default, Serialize, Deserialize)]
struct PendingQuarantine {
    uid_validity: u32,
    uids: BTreeSet<u32>,
}

impl fmt::Display for MailboxIntake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            // No username: it is usually a mail address, and those are logged at debug level only.
            "{} {}/{}",
            self.region.code, self.cfg.host, self.mailbox
        )
    }
}

impl MailboxIntake {
    /// Run until `shutdown`, reconnecting with backoff. The batch in flight is finished before returning.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut progress = Progress {
            link: LinkState::Starting,
            failures: 0,
            connected_logged: false,
            acks: Acks::default(),
        };
        loop {
            let result = self.session(&shutdown, &mut progress).await;
            if shutdown.is_cancelled() {
                break;
            }
            let Err(e) = result else { break };
            self.desk.telemetry.intake_failed(
                &self.region.code,
                &self.mailbox,
                e.kind(),
                Utc::now(),
            );
            let kind = failure_kind(&e);
            let after_login = matches!(
                e,
                ImapError::NoMailbox(..) | ImapError::Refused(_) | ImapError::Store(_)
            );
            let failing = LinkState::Failing { kind, after_login };
            if progress.link != failing {
                tracing::error!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                    "IMAP {kind}: {e}; retrying with backoff (other regions are not affected)");
                progress.link = failing;
                if !after_login {
                    progress.connected_logged = false;
                }
            } else {
                tracing::debug!(intake = %self, "IMAP still failing: {kind}: {e}");
            }
            progress.failures = progress.failures.saturating_add(1);
            let delay =
                reconnect_delay(progress.failures, rand_seed()).min(self.cfg.reconnect_max.0);
            tracing::debug!(intake = %self, failures = progress.failures, ?delay, "IMAP reconnecting");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            self.desk.telemetry.imap_reconnect(&self.region.code);
        }
        tracing::info!(region = %self.region.code, mailbox = %self.mailbox, "IMAP intake stopped");
    }

    async fn session(
        &self,
        shutdown: &CancellationToken,
        progress: &mut Progress,
    ) -> Result<(), ImapError> {
        let mut session = connect(&self.cfg).await?;
        let caps = timed(session.capabilities()).await?;
        let caps = Caps {
            idle: caps.has_str("IDLE"),
            mv: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        let mut folders = self.folders(&mut session, &mut progress.acks).await?;
        if !progress.connected_logged {
            tracing::info!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                idle = caps.idle && self.cfg.idle, folder = %folders.mailbox.name,
                quarantine = %folders.quarantine.name, "IMAP connected");
            progress.connected_logged = true;
        }
        if !matches!(progress.link, LinkState::Failing { .. }) {
            self.desk
                .telemetry
                .intake_connected(&self.region.code, &self.mailbox);
        }
        // Stored mail whose acknowledgement a restart or a lost connection interrupted: looked for once per
        // session (unless a refused one waits for its backoff).
        if progress.acks.next_backlog.is_none() {
            progress.acks.next_backlog = Some(tokio::time::Instant::now());
        }
        loop {
            // A mailbox deleted (or renamed) under us answers NO: say so plainly, and keep retrying with
            // backoff like any other failure, so it is picked up again once it exists (other mailboxes and
            // regions run in their own tasks and are not affected).
            let mailbox =
                match tokio::time::timeout(CALL_TIMEOUT, session.select(&folders.mailbox.wire))
                    .await
                {
                    Ok(Ok(m)) => m,
                    Ok(Err(
                        e @ (async_imap::error::Error::No(_) | async_imap::error::Error::Bad(_)),
                    )) => {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                        return Err(ImapError::NoMailbox(
                            self.folder_label(&folders.mailbox, &self.mailbox),
                            reply_text(&e),
                        ));
                    }
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => return Err(ImapError::Timeout(CALL_TIMEOUT)),
                };
            let uid_validity = mailbox.uid_validity.unwrap_or(0);
            // Notices read so far are about mail that exists before the sweep's `UID FETCH n:*`, which takes
            // it: forget them. From here on, one means "look again" (see `new_mail_reported`).
            let notices = session.unsolicited_responses.clone();
            // Whether the server announced new mail (`EXISTS`, `RECENT`) since the last call; empties the
            // queue. async-imap's queue holds 100 notices and drops the rest silently (a MOVE of 500 mails
            // answers with 500 `EXPUNGE`s), so a full queue counts as an announcement too: one more sweep
            // costs a `UID FETCH` that finds nothing.
            let new_mail_reported = || {
                use async_imap::types::UnsolicitedResponse as U;
                let mut reported = notices.is_full();
                while let Ok(notice) = notices.try_recv() {
                    reported |= matches!(notice, U::Exists(_) | U::Recent(_));
                }
                reported
            };
            new_mail_reported();
            self.sweep_in(
                &mut session,
                caps,
                uid_validity,
                &mut folders,
                &mut progress.acks,
                shutdown,
            )
            .await?;
            if progress.acks.backlog_due() && !shutdown.is_cancelled() {
                self.backlog(
                    &mut session,
                    caps,
                    uid_validity,
                    &mut folders,
                    &mut progress.acks,
                )
                .await?;
            }
            // A pass through the mailbox: the session's backoff and failure streak end here (and only here).
            match progress.acks.failing() {
                Some(kind) => self.desk.telemetry.intake_failed(
                    &self.region.code,
                    &self.mailbox,
                    kind,
                    Utc::now(),
                ),
                None => self
                    .desk
                    .telemetry
                    .intake_ok(&self.region.code, &self.mailbox, Utc::now()),
            }
            progress.failures = 0;
            if let LinkState::Failing {
                kind,
                after_login: true,
            } = progress.link
            {
                tracing::info!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                    "IMAP intake works again (it failed: {kind})");
            }
            progress.link = LinkState::Connected;
            if shutdown.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
            }
            // Wait for mail, but not past the moment the backlog is due.
            let wait = progress.acks.wait_bound(IDLE_RENEW);
            if wait < Duration::from_millis(50) {
                continue;
            }
            if caps.idle && self.cfg.idle {
                // No window between the sweep and IDLE (issue 14): mail that lands while a sweep runs is
                // announced by an untagged `* n EXISTS` in the answer to whichever command comes next (the
                // body FETCH, the MOVE or STORE of the acknowledgement, the IDLE command itself, before its
                // `+ idling`). async-imap puts those on `unsolicited_responses`, and the server, having told
                // us, says nothing more once we idle: waiting then lasts until a third mail or the 25-minute
                // renewal. So a notice that arrived during the sweep means "sweep again" instead of idling,
                // checked twice: before sending IDLE, and once IDLE is accepted (everything the server sent
                // before `+ idling` has been read by then; anything after it ends the wait). Mail that
                // arrives after the server's last answer is announced during IDLE itself.
                if new_mail_reported() {
                    tracing::debug!(intake = %self, "new mail announced during the sweep: sweeping again");
                    continue;
                }
                let mut idle = session.idle();
                timed(idle.init()).await?;
                if new_mail_reported() {
                    tracing::debug!(intake = %self, "new mail announced as IDLE began: sweeping again");
                    session = timed(idle.done()).await?;
                    continue;
                }
                {
                    let (wait, _stop) = idle.wait_with_timeout(wait);
                    tokio::select! {
                        r = tokio::time::timeout(IDLE_RENEW + Duration::from_secs(30), wait) => {
                            if let Ok(Err(e)) = r {
                                return Err(e.into());
                            }
                        }
                        _ = shutdown.cancelled() => {}
                    }
                }
                session = timed(idle.done()).await?;
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.cfg.poll_interval.0.min(wait)) => {}
                }
            }
        }
    }

    /// `"Processed"`, or `"Processed" (INBOX.Processed on this server)` when resolving changed it.
    fn folder_label(&self, folder: &Folder, configured: &str) -> String {
        if folder.name == configured {
            format!("{configured:?}")
        } else {
            format!("{configured:?} ({} on this server)", folder.name)
        }
    }

    /// Resolve this intake's folders against the server's namespaces and make sure the ones postdesk
    /// moves mail to exist.
    async fn folders(
        &self,
        session: &mut Session<ImapStream>,
        acks: &mut Acks,
    ) -> Result<Folders, ImapError> {
        let namespaces = match read_namespaces(session).await? {
            Some(ns) => ns,
            None => folder::Namespaces::flat(list_delimiter(session).await?),
        };
        let resolve = |name: &str| Folder::new(folder::resolve(name, &namespaces));
        let mut folders = Folders {
            mailbox: resolve(&self.mailbox),
            processed: self.cfg.after.strip_prefix("move:").map(resolve),
            quarantine: resolve(&self.cfg.quarantine_folder),
            processed_ready: false,
            quarantine_ready: false,
            namespaces,
        };
        tracing::debug!(intake = %self, namespaces = %folders.namespaces, mailbox = %folders.mailbox.wire,
            processed = ?folders.processed.as_ref().map(|f| &f.wire), quarantine = %folders.quarantine.wire,
            "IMAP folders resolved");
        self.ensure_folders(session, &mut folders, acks).await?;
        Ok(folders)
    }

    /// Create `after`'s folder and the quarantine folder when they do not exist yet. A refused CREATE of
    /// `after`'s folder marks the intake failing at once (every acknowledgement would fail); one of the
    /// quarantine folder is a warning until a mail needs it.
    async fn ensure_folders(
        &self,
        session: &mut Session<ImapStream>,
        folders: &mut Folders,
        acks: &mut Acks,
    ) -> Result<(), ImapError> {
        if let (Some(processed), false) = (&folders.processed, folders.processed_ready) {
            match ensure_folder(session, processed).await? {
                Ok(()) => folders.processed_ready = true,
                Err(reply) => {
                    let message = format!(
                        "cannot create the folder {} for after = {:?}: the server answered {reply}. Stored mail stays in {:?} until it exists; new mail is still taken (create the folder, or fix `after`; folders in this account: {})",
                        self.folder_label(processed, self.cfg.after.trim_start_matches("move:")),
                        self.cfg.after,
                        self.mailbox,
                        folders.namespaces,
                    );
                    self.ack_refused(acks, AckKind::After, message);
                }
            }
        }
        if !folders.quarantine_ready {
            match ensure_folder(session, &folders.quarantine).await? {
                Ok(()) => folders.quarantine_ready = true,
                Err(reply) => {
                    if !acks.quarantine_folder_warned {
                        tracing::warn!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                            "IMAP cannot create the quarantine folder {}: the server answered {reply}. Oversized or unreadable mail will stay in {:?} (never flagged or deleted) until it can be moved there (create the folder, or set quarantine_folder; folders in this account: {})",
                            self.folder_label(&folders.quarantine, &self.cfg.quarantine_folder), self.mailbox, folders.namespaces);
                        acks.quarantine_folder_warned = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// The server refused an acknowledgement: log it once, mark the intake failing, look at the backlog
    /// again after a backoff. The mail stays where it is.
    fn ack_refused(&self, acks: &mut Acks, kind: AckKind, message: String) {
        let slot = match kind {
            AckKind::After => &mut acks.after_failing,
            AckKind::Quarantine => &mut acks.quarantine_failing,
        };
        if slot.is_none() {
            tracing::error!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host, "IMAP {message}");
        } else {
            tracing::debug!(intake = %self, "IMAP still refused: {message}");
        }
        *slot = Some(message);
        acks.attempts = acks.attempts.saturating_add(1);
        let delay = reconnect_delay(acks.attempts, rand_seed()).min(self.cfg.reconnect_max.0);
        acks.next_backlog = Some(tokio::time::Instant::now() + delay);
        if let Some(word) = acks.failing() {
            self.desk
                .telemetry
                .intake_failed(&self.region.code, &self.mailbox, word, Utc::now());
        }
    }

    /// An acknowledgement of `kind` worked: if it was refused before, what waits from then is taken care of
    /// now (the backlog is due).
    fn ack_worked(&self, acks: &mut Acks, kind: AckKind) {
        let was_failing = match kind {
            AckKind::After => acks.after_failing.is_some(),
            AckKind::Quarantine => acks.quarantine_failing.is_some(),
        };
        if was_failing {
            acks.next_backlog = Some(tokio::time::Instant::now());
        }
    }

    fn after_refused(&self, folders: &Folders, count: usize, reply: &str) -> String {
        let target = match &folders.processed {
            Some(f) => format!(" (the folder {:?} on this server)", f.name),
            None => String::new(),
        };
        format!(
            "cannot apply after = {:?}{target} to {count} stored mail(s): the server answered {reply}. They stay in {:?}, already stored; new mail is still taken, and the acknowledgement is retried with backoff (create the folder, or fix `after`)",
            self.cfg.after, self.mailbox
        )
    }

    fn pending_key(&self) -> Vec<u8> {
        format!(
            "imap-quarantine:{}:{}:{}",
            self.region.code, self.cfg.username, self.mailbox
        )
        .into_bytes()
    }

    /// The quarantine candidates of this mailbox (of its current UIDVALIDITY) still on the server.
    fn pending(&self, uid_validity: u32) -> Result<BTreeSet<u32>, ImapError> {
        let stored: Option<PendingQuarantine> = self
            .desk
            .store
            .intake_state(&self.pending_key())
            .map_err(|e| ImapError::Store(e.to_string()))?
            .and_then(|v| serde_json::from_slice(&v).ok());
        Ok(stored
            .filter(|p| p.uid_validity == uid_validity)
            .map(|p| p.uids)
            .unwrap_or_default())
    }

    fn set_pending(&self, uid_validity: u32, uids: &BTreeSet<u32>) -> Result<(), ImapError> {
        let value = serde_json::to_vec(&PendingQuarantine {
            uid_validity,
            uids: uids.clone(),
        })
        .unwrap_or_default();
        self.desk
            .store
            .set_intake_state(&self.pending_key(), &value)
            .map_err(|e| ImapError::Store(e.to_string()))
    }

    /// Move `uids` (oversized mail stored truncated, `oversized`, and unreadable mail) to the quarantine
    /// folder. They are remembered as pending first, so that nothing applies `after` to them before the
    /// server confirmed the move; a refused move leaves them where they are. Returns whether they moved.
    #[allow(clippy::too_many_arguments)]
    async fn quarantine(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        folders: &mut Folders,
        uid_validity: u32,
        uids: &[u32],
        oversized: &[Oversized],
        acks: &mut Acks,
    ) -> Result<bool, ImapError> {
        let mut pending = self.pending(uid_validity)?;
        let before = pending.len();
        pending.extend(uids.iter().copied());
        if pending.len() != before {
            self.set_pending(uid_validity, &pending)?;
            self.desk
                .store
                .flush_async()
                .await
                .map_err(|e| ImapError::Store(e.to_string()))?;
        }
        for chunk in uids.chunks(BATCH) {
            match move_uids(session, caps, chunk, &folders.quarantine.wire).await {
                Ok(()) => {}
                Err(ImapError::Refused(reply)) => {
                    let message = format!(
                        "cannot move {} oversized or unreadable mail(s) to the quarantine folder {:?}: the server answered {reply}. They stay in {:?}, never flagged or deleted, until the move works (retried with backoff); their tickets hold what could be stored (create the folder, or set quarantine_folder)",
                        uids.len(),
                        folders.quarantine.name,
                        self.mailbox
                    );
                    self.ack_refused(acks, AckKind::Quarantine, message);
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        folders.quarantine_ready = true;
        self.ack_worked(acks, AckKind::Quarantine);
        for uid in uids {
            pending.remove(uid);
        }
        self.set_pending(uid_validity, &pending)?;
        for o in oversized {
            let ticket = o.ticket.as_ref().map(|t| t.to_string()).unwrap_or_default();
            tracing::warn!(intake = %self, uid = o.uid, size = o.size, ticket = %ticket,
                "oversized mail stored truncated and moved to {}", folders.quarantine.name);
            let reason = format!(
                "oversized mail ({} bytes, limit {}): stored truncated in {}; the whole mail was moved to the IMAP folder {}",
                o.size,
                self.cfg.max_message_bytes,
                if ticket.is_empty() { "its ticket" } else { &ticket },
                folders.quarantine.name
            );
            let source = format!("imap:{}/{};uid={}", self.cfg.host, self.mailbox, o.uid);
            // Counted by `postdesk stats` (quarantined); informative, so a failure is only logged.
            if let Err(e) =
                self.desk
                    .store
                    .quarantine(&self.region.code, &source, &reason, &o.header)
            {
                tracing::warn!(intake = %self, uid = o.uid, "could not record the quarantined mail for `postdesk stats`: {e}");
            }
        }
        let unreadable = uids.len().saturating_sub(oversized.len());
        if unreadable > 0 {
            tracing::info!(intake = %self, count = unreadable, "unreadable mail moved to {} (kept in the store's quarantine too)", folders.quarantine.name);
        }
        Ok(true)
    }

    /// Take every mail above the stored position, batch by batch. Returns how many were taken.
    pub async fn sweep(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        uid_validity: u32,
        shutdown: &CancellationToken,
    ) -> Result<usize, ImapError> {
        let mut acks = Acks::default();
        let mut folders = self.folders(session, &mut acks).await?;
        self.sweep_in(
            session,
            caps,
            uid_validity,
            &mut folders,
            &mut acks,
            shutdown,
        )
        .await
    }

    async fn sweep_in(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        uid_validity: u32,
        folders: &mut Folders,
        acks: &mut Acks,
        shutdown: &CancellationToken,
    ) -> Result<usize, ImapError> {
        let key = state_key(&self.region.code, &self.cfg.username, &self.mailbox);
        let stored = self.position(&key)?;
        let (first_contact, last_uid) = match stored {
            None => (true, 0),
            Some(s) if s.uid_validity != uid_validity => {
                tracing::warn!(intake = %self, old = s.uid_validity, new = uid_validity,
                    "UIDVALIDITY changed: re-scanning the mailbox; mail already stored is recognised and not acknowledged again");
                (true, 0)
            }
            Some(s) => (false, s.last_uid),
        };

        // Sizes and arrival dates of everything new; `n:*` always names the last message, hence the filter.
        let mut metas: Vec<NewMail> = Vec::new();
        {
            let mut stream = timed(session.uid_fetch(
                format!("{}:*", last_uid + 1),
                "(UID RFC822.SIZE INTERNALDATE)",
            ))
            .await?;
            while let Some(item) = next_timed(&mut stream).await? {
                if let Some(uid) = item.uid.filter(|u| *u > last_uid) {
                    metas.push(NewMail {
                        uid,
                        size: item.size.unwrap_or(0),
                        arrived: item.internal_date().map(|d| d.with_timezone(&Utc)),
                    });
                }
            }
        }
        metas.sort_unstable_by_key(|m| m.uid);
        metas.dedup_by_key(|m| m.uid);
        let mut taken = 0;
        // The tickets the mail went to, for the log line (an admin looking for a mail's ticket greps it).
        let mut stored_in: Vec<crate::types::TicketId> = Vec::new();
        // Pipelined: while one batch is parsed and stored (on the blocking pool), the next is fetched.
        let chunks = batches(&metas);
        let quarantine_name = folders.quarantine.name.clone();
        // Each batch carries the time its fetch began: ingest latency runs from there to the flush.
        let mut next = match chunks.first() {
            Some(chunk) => Some((
                std::time::Instant::now(),
                self.fetch_chunk(
                    session,
                    chunk,
                    last_uid,
                    uid_validity,
                    first_contact,
                    &quarantine_name,
                )
                .await?,
            )),
            None => None,
        };
        let mut index = 0;
        while let Some((fetch_began, fetched)) = next.take() {
            let uids: Vec<u32> = fetched.mails.iter().map(|m| m.uid).collect();
            let oversized = fetched.oversized.clone();
            let (desk, region) = (self.desk.clone(), self.region.clone());
            let job = tokio::task::spawn_blocking(move || {
                let items = fetched
                    .mails
                    .iter()
                    .map(|m| Incoming {
                        raw: &m.raw,
                        source: m.source.clone(),
                        delivery: m.delivery.clone(),
                        state: m.state.clone(),
                    })
                    .collect();
                desk.ingest_batch(&region, items, Utc::now())
            });
            index += 1;
            if index < chunks.len() && !shutdown.is_cancelled() {
                next = Some((
                    std::time::Instant::now(),
                    self.fetch_chunk(
                        session,
                        chunks[index],
                        last_uid,
                        uid_validity,
                        first_contact,
                        &quarantine_name,
                    )
                    .await?,
                ));
            }
            let outcomes = job
                .await
                .map_err(|e| ImapError::Store(format!("the ingest task failed: {e}")))?
                .map_err(|e| {
                    tracing::error!(intake = %self, "could not store a batch of {} mails; they stay on the server and are retried: {e}", uids.len());
                    ImapError::Store(e.to_string())
                })?;
            let mut done = Vec::new();
            let mut quarantine = Vec::new();
            let mut oversized_stored = Vec::new();
            for (uid, outcome) in uids.iter().zip(&outcomes) {
                let ticket = match outcome {
                    Outcome::Stored { ticket, .. } | Outcome::Duplicate(ticket) => {
                        if !stored_in.contains(ticket) {
                            stored_in.push(ticket.clone());
                        }
                        Some(ticket.clone())
                    }
                    Outcome::Quarantined { .. } => None,
                };
                if let Some(o) = oversized.iter().find(|o| o.uid == *uid) {
                    quarantine.push(*uid);
                    oversized_stored.push(Oversized {
                        ticket,
                        ..o.clone()
                    });
                } else if matches!(outcome, Outcome::Quarantined { .. }) {
                    quarantine.push(*uid);
                } else {
                    done.push(*uid);
                }
            }
            if uids.is_empty() {
                continue;
            }
            self.desk
                .store
                .flush_async()
                .await
                .map_err(|e| ImapError::Store(e.to_string()))?;
            self.desk
                .telemetry
                .observe_ingest(&self.region.code, fetch_began.elapsed());
            // Only mail whole in the store gets `after`; a refused one leaves it there and never stops intake.
            match self.acknowledge(session, caps, folders, &done).await {
                Ok(()) if !done.is_empty() => self.ack_worked(acks, AckKind::After),
                Ok(()) => {}
                Err(ImapError::Refused(reply)) => {
                    let message = self.after_refused(folders, done.len(), &reply);
                    self.ack_refused(acks, AckKind::After, message);
                }
                Err(e) => return Err(e),
            }
            if !quarantine.is_empty() {
                self.quarantine(
                    session,
                    caps,
                    folders,
                    uid_validity,
                    &quarantine,
                    &oversized_stored,
                    acks,
                )
                .await?;
            }
            taken += uids.len();
            let high = uids.iter().copied().max().unwrap_or(0);
            let position = MailboxState {
                uid_validity,
                last_uid: high.max(last_uid),
            };
            self.desk
                .store
                .set_intake_state(&key, &encode_state(position))
                .map_err(|e| ImapError::Store(e.to_string()))?;
        }
        if metas.is_empty() && first_contact {
            // Remember the UIDVALIDITY of an empty mailbox, so that a later change is noticed.
            self.desk
                .store
                .set_intake_state(
                    &key,
                    &encode_state(MailboxState {
                        uid_validity,
                        last_uid,
                    }),
                )
                .map_err(|e| ImapError::Store(e.to_string()))?;
        }
        if taken > 0 {
            let tickets = ticket_list(&stored_in);
            tracing::info!(intake = %self, taken, tickets = %tickets, "IMAP mail stored");
        }
        Ok(taken)
    }

    /// The stored position of this mailbox, if any.
    fn position(&self, key: &[u8]) -> Result<Option<MailboxState>, ImapError> {
        Ok(self
            .desk
            .store
            .intake_state(key)
            .map_err(|e| ImapError::Store(e.to_string()))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// The backlog: mail at or below the stored position is in the store, so any of it still waiting in
    /// the mailbox (unseen with `after = "seen"`, present at all with `move` or `delete`) was left by an
    /// interrupted or refused acknowledgement, and gets it now. Except quarantine candidates: those
    /// remembered as pending and those larger than `max_message_bytes` (stored truncated, whatever the
    /// store remembers) go to the quarantine folder instead, or stay.
    async fn backlog(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        uid_validity: u32,
        folders: &mut Folders,
        acks: &mut Acks,
    ) -> Result<(), ImapError> {
        self.ensure_folders(session, folders, acks).await?;
        let stored = self.position(&state_key(
            &self.region.code,
            &self.cfg.username,
            &self.mailbox,
        ))?;
        let Some(state) = stored.filter(|s| s.uid_validity == uid_validity && s.last_uid > 0)
        else {
            self.backlog_done(acks, folders, 0, 0);
            return Ok(());
        };
        // The position read may be one a failed flush never wrote to disk: acknowledge on it only while the
        // store is sound.
        self.desk
            .store
            .writable()
            .map_err(|e| ImapError::Store(e.to_string()))?;
        let last = state.last_uid;
        let waiting = uid_search(
            session,
            &if self.cfg.after == "seen" {
                format!("UID 1:{last} UNSEEN")
            } else {
                format!("UID 1:{last}")
            },
            last,
        )
        .await?;
        let oversized = uid_search(
            session,
            &format!("UID 1:{last} LARGER {}", self.cfg.max_message_bytes),
            last,
        )
        .await?;
        let mut pending = self.pending(uid_validity)?;
        if !pending.is_empty() {
            let all: Vec<u32> = pending.iter().copied().collect();
            let present = uid_search(session, &format!("UID {}", uid_set(&all)), u32::MAX).await?;
            let before = pending.len();
            pending.retain(|u| present.contains(u));
            if pending.len() != before {
                self.set_pending(uid_validity, &pending)?;
            }
        }
        let to_after: Vec<u32> = waiting
            .iter()
            .copied()
            .filter(|u| !oversized.contains(u) && !pending.contains(u))
            .collect();
        let to_quarantine: Vec<u32> = waiting
            .intersection(&oversized)
            .copied()
            .chain(pending.iter().copied())
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        let mut after_ok = folders.processed.is_none() || folders.processed_ready;
        if after_ok && !to_after.is_empty() {
            match self.acknowledge(session, caps, folders, &to_after).await {
                Ok(()) => {}
                Err(ImapError::Refused(reply)) => {
                    let message = self.after_refused(folders, to_after.len(), &reply);
                    self.ack_refused(acks, AckKind::After, message);
                    after_ok = false;
                }
                Err(e) => return Err(e),
            }
        }
        // The oversized among them, for the log and `postdesk stats` once they moved (their tickets were
        // made before; only their size and header are needed).
        let big: Vec<u32> = to_quarantine
            .iter()
            .copied()
            .filter(|u| oversized.contains(u))
            .collect();
        let mut oversized_mails = Vec::with_capacity(big.len());
        if !big.is_empty() {
            let mut stream =
                timed(session.uid_fetch(uid_set(&big), "(UID RFC822.SIZE BODY.PEEK[HEADER])"))
                    .await?;
            while let Some(item) = next_timed(&mut stream).await? {
                if let Some(uid) = item.uid.filter(|u| big.contains(u)) {
                    oversized_mails.push(Oversized {
                        uid,
                        size: item.size.unwrap_or(0),
                        ticket: None,
                        header: header_of(item.header().unwrap_or_default()).to_vec(),
                    });
                }
            }
        }
        let quarantine_ok = to_quarantine.is_empty()
            || self
                .quarantine(
                    session,
                    caps,
                    folders,
                    uid_validity,
                    &to_quarantine,
                    &oversized_mails,
                    acks,
                )
                .await?;
        if after_ok && quarantine_ok {
            self.backlog_done(acks, folders, to_after.len(), to_quarantine.len());
        }
        Ok(())
    }

    /// Nothing waits any more: say so if something was refused before, forget the backoff.
    fn backlog_done(&self, acks: &mut Acks, folders: &Folders, acknowledged: usize, moved: usize) {
        if folders.processed.is_some() && !folders.processed_ready {
            return;
        }
        let was = acks.after_failing.take().is_some() | acks.quarantine_failing.take().is_some();
        if was {
            tracing::info!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                acknowledged, moved_to_quarantine = moved, after = %self.cfg.after,
                "IMAP acknowledgements work again: the stored mail that waited for them is taken care of");
        } else if acknowledged + moved > 0 {
            tracing::info!(intake = %self, acknowledged, moved_to_quarantine = moved, after = %self.cfg.after,
                "IMAP finished acknowledgements a restart or a lost connection had interrupted (the mail was stored before)");
        }
        acks.attempts = 0;
        acks.next_backlog = None;
    }

    /// Fetch one batch: whole mails, and the truncated form of oversized ones, in UID order.
    async fn fetch_chunk(
        &self,
        session: &mut Session<ImapStream>,
        chunk: &[NewMail],
        last_uid: u32,
        uid_validity: u32,
        first_contact: bool,
        quarantine_folder: &str,
    ) -> Result<FetchedChunk, ImapError> {
        let ack_cutoff =
            Utc::now() - chrono::Duration::from_std(self.cfg.ack_max_age.0).unwrap_or_default();
        let may_ack = |date: Option<chrono::DateTime<Utc>>| {
            !first_contact || date.is_none_or(|d| d >= ack_cutoff)
        };
        let (small, large): (Vec<&NewMail>, Vec<&NewMail>) = chunk
            .iter()
            .partition(|m| u64::from(m.size) <= self.cfg.max_message_bytes);
        let mut mails = Vec::with_capacity(chunk.len());
        if !small.is_empty() {
            let uids: Vec<u32> = small.iter().map(|m| m.uid).collect();
            let mut stream = timed(session.uid_fetch(uid_set(&uids), "(UID BODY.PEEK[])")).await?;
            while let Some(item) = next_timed(&mut stream).await? {
                let (Some(uid), Some(body)) = (item.uid, item.body()) else {
                    continue;
                };
                if uid <= last_uid {
                    continue;
                }
                let arrived = small.iter().find(|m| m.uid == uid).and_then(|m| m.arrived);
                mails.push(self.fetched(
                    uid,
                    uid_validity,
                    body.to_vec(),
                    Delivery {
                        may_acknowledge: may_ack(arrived),
                        damage: None,
                        oversize: None,
                    },
                ));
            }
            // async-imap ends a FETCH stream quietly when the connection closes between two responses, just
            // as when the server finished: a batch cut short looks complete. Treat it as the lost connection
            // it most likely is (found by the Dovecot-restart fault test), instead of finding out only when
            // the next command times out. A mail expunged meanwhile by another client costs one reconnect.
            if mails.len() < small.len() {
                return Err(ImapError::Protocol(format!(
                    "the server ended the FETCH after {} of {} mails (connection closed?)",
                    mails.len(),
                    small.len()
                )));
            }
        }
        let mut oversized = Vec::with_capacity(large.len());
        for m in &large {
            let raw = self.fetch_truncated(session, m.uid).await?;
            // Written before the move is tried, so it says only what is sure: the whole mail is on the
            // server, in the quarantine folder or, until it can be moved, where it arrived.
            let damage = format!(
                "oversized mail ({} bytes, limit {}): stored from its headers and first {} KiB of text; the whole mail stays on the IMAP server, in the folder {quarantine_folder} (or in {} until it can be moved there)",
                m.size,
                self.cfg.max_message_bytes,
                OVERSIZE_TEXT_BYTES / 1024,
                self.mailbox,
            );
            oversized.push(Oversized {
                uid: m.uid,
                size: m.size,
                ticket: None,
                header: header_of(&raw).to_vec(),
            });
            mails.push(self.fetched(
                m.uid,
                uid_validity,
                raw,
                Delivery {
                    may_acknowledge: may_ack(m.arrived),
                    damage: Some(damage),
                    oversize: Some((u64::from(m.size), self.cfg.max_message_bytes)),
                },
            ));
        }
        // UID order, so that the position recorded last in the transaction is the highest.
        mails.sort_by_key(|m| m.uid);
        Ok(FetchedChunk { mails, oversized })
    }

    fn fetched(
        &self,
        uid: u32,
        uid_validity: u32,
        raw: Vec<u8>,
        delivery: Delivery,
    ) -> FetchedMail {
        let position = MailboxState {
            uid_validity,
            last_uid: uid,
        };
        FetchedMail {
            uid,
            raw,
            source: format!("imap:{}/{};uid={uid}", self.cfg.host, self.mailbox),
            delivery,
            state: Some((
                state_key(&self.region.code, &self.cfg.username, &self.mailbox),
                encode_state(position),
            )),
        }
    }

    /// Headers and the first part of the text of an oversized mail.
    async fn fetch_truncated(
        &self,
        session: &mut Session<ImapStream>,
        uid: u32,
    ) -> Result<Vec<u8>, ImapError> {
        let mut raw = Vec::new();
        let mut stream = timed(session.uid_fetch(
            uid.to_string(),
            format!("(UID BODY.PEEK[HEADER] BODY.PEEK[TEXT]<0.{OVERSIZE_TEXT_BYTES}>)"),
        ))
        .await?;
        while let Some(item) = next_timed(&mut stream).await? {
            if item.uid == Some(uid) {
                raw.extend_from_slice(item.header().unwrap_or_default());
                raw.extend_from_slice(item.text().unwrap_or_default());
            }
        }
        Ok(raw)
    }

    /// Apply `after` to stored mail, in commands of at most [`BATCH`] UIDs. `NO` from the server is
    /// [`ImapError::Refused`]: nothing of that command happened.
    async fn acknowledge(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        folders: &mut Folders,
        uids: &[u32],
    ) -> Result<(), ImapError> {
        for chunk in uids.chunks(BATCH) {
            if let Some(target) = &folders.processed {
                move_uids(session, caps, chunk, &target.wire).await?;
                folders.processed_ready = true;
                continue;
            }
            let set = uid_set(chunk);
            let flags = if self.cfg.after == "delete" {
                "+FLAGS.SILENT (\\Seen \\Deleted)"
            } else {
                "+FLAGS.SILENT (\\Seen)"
            };
            drain(timed(session.uid_store(&set, flags)).await?).await?;
            if self.cfg.after == "delete" {
                expunge(session, caps, &set).await?;
            }
        }
        Ok(())
    }
}

async fn next_timed<S, T>(stream: &mut S) -> Result<Option<T>, ImapError>
where
    S: futures_util::Stream<Item = Result<T, async_imap::error::Error>> + Unpin,
{
    match tokio::time::timeout(CALL_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(item))) => Ok(Some(item)),
        Ok(Some(Err(e))) => Err(e.into()),
        Ok(None) => Ok(None),
        Err(_) => Err(ImapError::Timeout(CALL_TIMEOUT)),
    }
}

async fn drain<S, T>(mut stream: S) -> Result<(), ImapError>
where
    S: futures_util::Stream<Item = Result<T, async_imap::error::Error>> + Unpin,
{
    while next_timed(&mut stream).await?.is_some() {}
    Ok(())
}

async fn expunge(
    session: &mut Session<ImapStream>,
    caps: Caps,
    set: &str,
) -> Result<(), ImapError> {
    if caps.uidplus {
        let stream = timed(session.uid_expunge(set)).await?;
        drain(Box::pin(stream)).await
    } else {
        let stream = timed(session.expunge()).await?;
        drain(Box::pin(stream)).await
    }
}

/// Move `uids` to `folder` (wire form): `UID MOVE`, or `UID COPY` and then `\Deleted` + `EXPUNGE` where the
/// server has no MOVE. Nothing is flagged or expunged unless the server confirmed the copy (a refused
/// COPY is [`ImapError::Refused`] and leaves the mail untouched).
async fn move_uids(
    session: &mut Session<ImapStream>,
    caps: Caps,
    uids: &[u32],
    folder: &str,
) -> Result<(), ImapError> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uid_set(uids);
    if caps.mv {
        return timed(session.uid_mv(&set, folder)).await;
    }
    timed(session.uid_copy(&set, folder)).await?;
    drain(timed(session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)")).await?).await?;
    expunge(session, caps, &set).await
}

/// `UID SEARCH query`, the UIDs at most `max` (a `n:m` range also names the last message).
async fn uid_search(
    session: &mut Session<ImapStream>,
    query: &str,
    max: u32,
) -> Result<BTreeSet<u32>, ImapError> {
    Ok(timed(session.uid_search(query))
        .await?
        .into_iter()
        .filter(|u| *u <= max)
        .collect())
}

/// An IMAP quoted string.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Whether `wire` (a folder name as sent) exists and can hold mail: `LIST "" "<name>"`.
async fn folder_exists(session: &mut Session<ImapStream>, wire: &str) -> Result<bool, ImapError> {
    let mut found = false;
    let pattern = quoted(wire);
    let mut stream = timed(session.list(Some(""), Some(&pattern))).await?;
    while let Some(name) = next_timed(&mut stream).await? {
        let same = name.name() == wire
            || (wire.eq_ignore_ascii_case("INBOX") && name.name().eq_ignore_ascii_case("INBOX"));
        let selectable = !name
            .attributes()
            .iter()
            .any(|a| matches!(a, async_imap::types::NameAttribute::NoSelect));
        found |= same && selectable;
    }
    Ok(found)
}

/// Make sure `folder` exists: LIST it, CREATE (and SUBSCRIBE, so mail clients show it) when missing.
/// `Ok(Err(reply))` when the server refuses to create it.
async fn ensure_folder(
    session: &mut Session<ImapStream>,
    folder: &Folder,
) -> Result<Result<(), String>, ImapError> {
    if folder_exists(session, &folder.wire).await? {
        return Ok(Ok(()));
    }
    match timed(session.create(&folder.wire)).await {
        Ok(()) => {
            match timed(session.subscribe(&folder.wire)).await {
                Ok(()) => {}
                Err(ImapError::Refused(reply)) => {
                    tracing::debug!(folder = %folder.name, "SUBSCRIBE answered {reply}")
                }
                Err(e) => return Err(e),
            }
            tracing::info!(folder = %folder.name, "IMAP folder created");
            Ok(Ok(()))
        }
        // Created meanwhile by another client (`NO [ALREADYEXISTS]`), or really refused.
        Err(ImapError::Refused(reply)) => {
            if folder_exists(session, &folder.wire).await? {
                Ok(Ok(()))
            } else {
                Ok(Err(reply))
            }
        }
        Err(e) => Err(e),
    }
}

/// The hierarchy delimiter of a server without NAMESPACE: `LIST "" ""`.
async fn list_delimiter(session: &mut Session<ImapStream>) -> Result<Option<char>, ImapError> {
    let mut delimiter = None;
    let mut stream = match timed(session.list(Some(""), Some("\"\""))).await {
        Ok(s) => s,
        Err(ImapError::Refused(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    while let Some(name) = next_timed(&mut stream).await? {
        delimiter = delimiter.or(name.delimiter().and_then(|d| d.chars().next()));
    }
    Ok(delimiter)
}

/// Ask the server for its namespaces (RFC 2342); `None` when it has none (`BAD`/`NO`) or answers
/// something unreadable.
///
/// imap-proto cannot parse `* NAMESPACE`, and async-imap's stream fails for good on a line it cannot
/// parse, so this one exchange is made on the connection itself, between two commands (right after login
/// and CAPABILITY, when nothing else is in flight and async-imap has nothing buffered). It is read a byte
/// at a time, so that not one byte past the tagged answer is taken from async-imap; bounded by
/// [`folder::MAX_NAMESPACE_BYTES`].
async fn read_namespaces(
    session: &mut Session<ImapStream>,
) -> Result<Option<folder::Namespaces>, ImapError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const TAG: &[u8] = b"PDNS1 ";
    let exchange = async {
        let stream: &mut ImapStream = session.as_mut();
        stream.write_all(b"PDNS1 NAMESPACE\r\n").await?;
        stream.flush().await?;
        let mut total = 0usize;
        let mut data = None;
        loop {
            let line = read_line(stream, &mut total).await?;
            if line.starts_with(TAG) {
                let status = &line[TAG.len()..];
                return Ok::<_, std::io::Error>((
                    status.len() >= 2 && status[..2].eq_ignore_ascii_case(b"OK"),
                    data,
                ));
            }
            const UNTAGGED: &[u8] = b"* NAMESPACE ";
            if line.len() > UNTAGGED.len() && line[..UNTAGGED.len()].eq_ignore_ascii_case(UNTAGGED)
            {
                data = Some(line[UNTAGGED.len()..].to_vec());
            }
        }
    };
    async fn read_line(stream: &mut ImapStream, total: &mut usize) -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if stream.read(&mut byte).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            *total += 1;
            if *total > folder::MAX_NAMESPACE_BYTES {
                return Err(std::io::Error::other("the NAMESPACE answer is too long"));
            }
            line.push(byte[0]);
            if !line.ends_with(b"\r\n") {
                continue;
            }
            // A literal at the end of the line (`{5}\r\n`): its bytes belong to this line.
            let body = &line[..line.len() - 2];
            let literal = body
                .strip_suffix(b"}")
                .and_then(|b| b.iter().rposition(|&c| c == b'{').map(|i| &b[i + 1..]))
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.trim_end_matches('+').parse::<usize>().ok());
            match literal {
                Some(n) if *total + n <= folder::MAX_NAMESPACE_BYTES => {
                    let start = line.len();
                    line.resize(start + n, 0);
                    stream.read_exact(&mut line[start..]).await?;
                    *total += n;
                }
                Some(_) => return Err(std::io::Error::other("the NAMESPACE answer is too long")),
                None => return Ok(line),
            }
        }
    }
    match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Err(_) => Err(ImapError::Timeout(CALL_TIMEOUT)),
        Ok(Err(e)) => Err(ImapError::Protocol(format!("connection error: {e}"))),
        Ok(Ok((true, Some(data)))) => match folder::parse_namespaces(&data) {
            Ok(ns) => Ok(Some(ns)),
            Err(why) => {
                tracing::warn!("the server's NAMESPACE answer is unreadable ({why}): folder names are used as written");
                Ok(None)
            }
        },
        Ok(Ok(_)) => Ok(None),
    }
}

/// The header block of a raw mail (up to the first empty line), at most 64 KiB.
fn header_of(raw: &[u8]) -> &[u8] {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))
        .unwrap_or(raw.len());
    &raw[..end.min(64 * 1024)]
}

fn rand_seed() -> u64 {
    let nanos = Utc::now().timestamp_subsec_nanos() as u64;
    nanos ^ (std::process::id() as u64).rotate_left(17)
}

/// Reconnect delay after `failures` consecutive failures: 1 s doubling to 5 minutes, with ±25 % jitter
/// (`reconnect_max` caps it lower).
pub fn reconnect_delay(failures: u32, seed: u64) -> Duration {
    let base_ms = 1000u64
        .saturating_mul(1u64 << failures.saturating_sub(1).min(9))
        .min(300_000);
    let jitter = (seed % 51) as i64 - 25;
    Duration::from_millis((base_ms as i64 + base_ms as i64 * jitter / 100).max(100) as u64)
}

/// Start one task per configured mailbox of `region`.
pub fn spawn(
    desk: &Arc<Desk>,
    region: &RegionConfig,
    cfg: &ImapIntake,
    tracker: &tokio_util::task::TaskTracker,
    shutdown: &CancellationToken,
) {
    for mailbox in &cfg.mailboxes {
        let intake = MailboxIntake {
            desk: desk.clone(),
            region: region.clone(),
            cfg: cfg.clone(),
            mailbox: mailbox.clone(),
        };
        tracker.spawn(intake.run(shutdown.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_log_line_names_a_bounded_list_of_tickets() {
        let ids: Vec<crate::types::TicketId> = (1000..1008)
            .map(|n| format!("JP-{n}").parse().unwrap())
            .collect();
        assert_eq!(ticket_list(&ids[..2]), "JP-1000,JP-1001");
        assert_eq!(
            ticket_list(&ids),
            "JP-1000,JP-1001,JP-1002,JP-1003,JP-1004,+3 more"
        );
        assert_eq!(ticket_list(&[]), "-");
    }

    #[test]
    fn server_replies_are_shown_as_their_text_not_rust_debug_output() {
        use async_imap::error::Error as E;
        // What async-imap 0.12 hands over for a tagged NO/BAD (see its `check_status_ok`).
        let no = E::No(r#"code: None, info: Some("Mailbox does not exist")"#.into());
        assert_eq!(reply_text(&no), "NO Mailbox does not exist");
        let trycreate = E::No(
            r#"code: Some(TryCreate), info: Some("Mailbox doesn't exist: \"Processed\"")"#.into(),
        );
        assert_eq!(
            reply_text(&trycreate),
            r#"NO [TRYCREATE] Mailbox doesn't exist: "Processed""#
        );
        let bad = E::Bad(r#"code: None, info: Some("Invalid name \\ \u{51e6}")"#.into());
        assert_eq!(reply_text(&bad), "BAD Invalid name \\ 処");
        let ro = E::No("code: Some(ReadOnly), info: None".into());
        assert_eq!(reply_text(&ro), "NO [READ-ONLY]");
        assert_eq!(
            reply_text(&E::ConnectionLost),
            "the server closed the connection"
        );
        let e: ImapError = E::No(r#"code: None, info: Some("Permission denied")"#.into()).into();
        assert!(
            matches!(&e, ImapError::Refused(t) if t == "NO Permission denied"),
            "{e:?}"
        );
        assert_eq!(e.to_string(), "the server answered NO Permission denied");
        // The user name (usually an address) is not in the login error.
        let auth = ImapError::Auth("NO [AUTHENTICATIONFAILED] Authentication failed.".into());
        assert!(!auth.to_string().contains('@'));
    }

    #[test]
    fn the_header_of_a_mail_ends_at_the_first_empty_line() {
        assert_eq!(header_of(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_of(b"A: b\n\nbody"), b"A: b\n\n");
        assert_eq!(header_of(b"A: b"), b"A: b");
        assert_eq!(quoted(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn uid_sets_compress_ranges() {
        assert_eq!(uid_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set(&[42]), "42");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let mail = |uid, size| NewMail {
            uid,
            size,
            arrived: None,
        };
        let many: Vec<NewMail> = (1..=1200).map(|u| mail(u, 1000)).collect();
        let sizes: Vec<usize> = batches(&many).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![500, 500, 200]);
        let big: Vec<NewMail> = (1..=5).map(|u| mail(u, 20 * 1024 * 1024)).collect();
        assert!(batches(&big).iter().all(|b| b.len() == 1));
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn reconnect_delay_grows_to_a_cap() {
        assert!(reconnect_delay(1, 25) <= Duration::from_millis(1000));
        assert!(reconnect_delay(4, 25) > reconnect_delay(2, 25));
        for f in 0..100 {
            assert!(reconnect_delay(f, f as u64 * 7) <= Duration::from_secs(375));
        }
        assert!(reconnect_delay(30, 25) >= Duration::from_secs(299));
    }
}
