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
//! Every IMAP call runs under a timeout; a broken connection is re-made with exponential backoff and
//! jitter. State changes (connected, lost, authentication failed) are logged once, not on every retry.

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
/// The folder oversized and unparseable mail is moved to.
pub const QUARANTINE_FOLDER: &str = "postdesk-quarantine";

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("TLS with {0} failed: {1} (check the server's certificate, or set ca_file for a private CA)")]
    Tls(String, String),
    #[error("login as {0} refused: {1} (check username and password_file/password_env)")]
    Auth(String, String),
    #[error("IMAP error: {0}")]
    Protocol(String),
    #[error("the server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot store mail: {0}")]
    Store(String),
    #[error("mailbox {0:?} cannot be selected: {1} (deleted or renamed on the server? its mail is taken again once it exists; fix `mailboxes` if it was renamed)")]
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
            ImapError::Timeout(_) => "timeout",
            ImapError::Store(_) => "store",
            ImapError::NoMailbox(..) => "no_mailbox",
        }
    }
}

impl From<async_imap::error::Error> for ImapError {
    fn from(e: async_imap::error::Error) -> Self {
        ImapError::Protocol(super::imap_text::ServerText(&e).to_string())
    }
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
            .map_err(|e| ImapError::Protocol(e.to_string()))
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
        Ok(Err(e)) => Err(ImapError::Auth(
            cfg.username.clone(),
            super::imap_text::ServerText(&e).to_string(),
        )),
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

/// A fetched batch; `oversized` are the UIDs stored truncated (their originals go to quarantine).
struct FetchedChunk {
    mails: Vec<FetchedMail>,
    oversized: Vec<u32>,
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
#[derive(Clone, Debug, PartialEq, Eq)]
enum LinkState {
    Starting,
    Connected,
    Failing(String),
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
        let mut state = LinkState::Starting;
        let mut failures: u32 = 0;
        loop {
            let result = self.session(&shutdown, &mut state, &mut failures).await;
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
            let kind = match &e {
                ImapError::Auth(..) => "authentication failed",
                ImapError::NoMailbox(..) => "mailbox missing",
                ImapError::Store(..) => "intake paused, the store cannot take mail",
                _ => "connection lost",
            };
            let summary = format!("{kind}: {e}");
            if state != LinkState::Failing(kind.to_string()) {
                tracing::error!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                    "IMAP {summary}; retrying with backoff (other regions are not affected)");
                state = LinkState::Failing(kind.to_string());
            } else {
                tracing::debug!(intake = %self, "IMAP still failing: {summary}");
            }
            failures = failures.saturating_add(1);
            let delay = reconnect_delay(failures, rand_seed()).min(self.cfg.reconnect_max.0);
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
        state: &mut LinkState,
        failures: &mut u32,
    ) -> Result<(), ImapError> {
        let mut session = connect(&self.cfg).await?;
        let caps = timed(session.capabilities()).await?;
        let caps = Caps {
            idle: caps.has_str("IDLE"),
            mv: caps.has_str("MOVE"),
            uidplus: caps.has_str("UIDPLUS"),
        };
        if let Some(folder) = self.cfg.after.strip_prefix("move:") {
            ensure_folder(&mut session, folder).await;
        }
        ensure_folder(&mut session, QUARANTINE_FOLDER).await;
        if *state != LinkState::Connected {
            tracing::info!(region = %self.region.code, mailbox = %self.mailbox, host = %self.cfg.host,
                idle = caps.idle && self.cfg.idle, "IMAP connected");
            *state = LinkState::Connected;
        }
        self.desk
            .telemetry
            .intake_connected(&self.region.code, &self.mailbox);
        *failures = 0;
        let mut reconciled = false;
        loop {
            // A mailbox deleted (or renamed) under us answers NO: say so plainly, and keep retrying with
            // backoff like any other failure, so it is picked up again once it exists (other mailboxes and
            // regions run in their own tasks and are not affected).
            let mailbox = match tokio::time::timeout(CALL_TIMEOUT, session.select(&self.mailbox))
                .await
            {
                Ok(Ok(m)) => m,
                Ok(Err(async_imap::error::Error::No(e))) => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                    return Err(ImapError::NoMailbox(
                        self.mailbox.clone(),
                        super::imap_text::status_text("NO", &e),
                    ));
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(ImapError::Timeout(CALL_TIMEOUT)),
            };
            let uid_validity = mailbox.uid_validity.unwrap_or(0);
            if !reconciled {
                self.reconcile(&mut session, caps, uid_validity).await?;
                reconciled = true;
            }
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
            self.sweep(&mut session, caps, uid_validity, shutdown)
                .await?;
            self.desk
                .telemetry
                .intake_ok(&self.region.code, &self.mailbox, Utc::now());
            if shutdown.is_cancelled() {
                let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
                return Ok(());
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
                    let (wait, _stop) = idle.wait_with_timeout(IDLE_RENEW);
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
                    _ = tokio::time::sleep(self.cfg.poll_interval.0) => {}
                }
            }
        }
    }

    /// Take every mail above the stored position, batch by batch. Returns how many were taken.
    pub async fn sweep(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        uid_validity: u32,
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
        // Each batch carries the time its fetch began: ingest latency runs from there to the flush.
        let mut next = match chunks.first() {
            Some(chunk) => Some((
                std::time::Instant::now(),
                self.fetch_chunk(session, chunk, last_uid, uid_validity, first_contact)
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
            for (uid, outcome) in uids.iter().zip(&outcomes) {
                if let Outcome::Stored { ticket, .. } | Outcome::Duplicate(ticket) = outcome {
                    if !stored_in.contains(ticket) {
                        stored_in.push(ticket.clone());
                    }
                }
                if matches!(outcome, Outcome::Quarantined { .. }) || oversized.contains(uid) {
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
            self.acknowledge(session, caps, &done).await?;
            if !quarantine.is_empty() {
                move_uids(session, caps, &quarantine, QUARANTINE_FOLDER).await?;
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

    /// Finish an acknowledgement a crash interrupted: mail at or below the stored position is in the store,
    /// so any of it still waiting in the mailbox (unseen with `after = "seen"`, present at all with `move` or
    /// `delete`) gets its `after` now.
    async fn reconcile(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        uid_validity: u32,
    ) -> Result<(), ImapError> {
        let stored = self.position(&state_key(
            &self.region.code,
            &self.cfg.username,
            &self.mailbox,
        ))?;
        let Some(state) = stored.filter(|s| s.uid_validity == uid_validity && s.last_uid > 0)
        else {
            return Ok(());
        };
        // The position read may be one a failed flush never wrote to disk: acknowledge on it only while the
        // store is sound.
        self.desk
            .store
            .writable()
            .map_err(|e| ImapError::Store(e.to_string()))?;
        let query = if self.cfg.after == "seen" {
            format!("UID 1:{} UNSEEN", state.last_uid)
        } else {
            format!("UID 1:{}", state.last_uid)
        };
        let mut uids: Vec<u32> = timed(session.uid_search(&query))
            .await?
            .into_iter()
            .filter(|u| *u <= state.last_uid)
            .collect();
        if uids.is_empty() {
            return Ok(());
        }
        uids.sort_unstable();
        tracing::info!(intake = %self, count = uids.len(), "completing acknowledgements interrupted by a restart");
        self.acknowledge(session, caps, &uids).await
    }

    /// Fetch one batch: whole mails, and the truncated form of oversized ones, in UID order.
    async fn fetch_chunk(
        &self,
        session: &mut Session<ImapStream>,
        chunk: &[NewMail],
        last_uid: u32,
        uid_validity: u32,
        first_contact: bool,
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
        for m in &large {
            let raw = self.fetch_truncated(session, m.uid).await?;
            tracing::warn!(intake = %self, uid = m.uid, size = m.size, "oversized mail stored truncated and moved to {QUARANTINE_FOLDER}");
            let damage = format!(
                "oversized mail ({} bytes, limit {}): stored from its headers and first {} KiB of text; the original is in the IMAP folder {QUARANTINE_FOLDER}",
                m.size,
                self.cfg.max_message_bytes,
                OVERSIZE_TEXT_BYTES / 1024
            );
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
        Ok(FetchedChunk {
            mails,
            oversized: large.iter().map(|m| m.uid).collect(),
        })
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

    /// Apply `after` to stored mail.
    async fn acknowledge(
        &self,
        session: &mut Session<ImapStream>,
        caps: Caps,
        uids: &[u32],
    ) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        if let Some(folder) = self.cfg.after.strip_prefix("move:") {
            return move_uids(session, caps, uids, folder).await;
        }
        let set = uid_set(uids);
        let flags = if self.cfg.after == "delete" {
            "+FLAGS.SILENT (\\Seen \\Deleted)"
        } else {
            "+FLAGS.SILENT (\\Seen)"
        };
        drain(timed(session.uid_store(&set, flags)).await?).await?;
        if self.cfg.after == "delete" {
            expunge(session, caps, &set).await?;
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

async fn move_uids(
    session: &mut Session<ImapStream>,
    caps: Caps,
    uids: &[u32],
    folder: &str,
) -> Result<(), ImapError> {
    let set = uid_set(uids);
    if caps.mv {
        return timed(session.uid_mv(&set, folder)).await;
    }
    timed(session.uid_copy(&set, folder)).await?;
    drain(timed(session.uid_store(&set, "+FLAGS.SILENT (\\Deleted)")).await?).await?;
    expunge(session, caps, &set).await
}

/// Create a folder if it does not exist (an "already exists" answer is fine).
async fn ensure_folder(session: &mut Session<ImapStream>, folder: &str) {
    if let Err(e) = timed(session.create(folder)).await {
        tracing::debug!(folder, "CREATE answered: {e} (usually: it exists already)");
    }
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
