//! The control socket: how `postdesk` commands reach a running daemon.
//!
//! sled lets one process open a store. While `postdesk run` holds it, every other command that works on
//! the store (`ingest` from the MTA, `tickets`, `outbox`, `stats`, `customer`, `backup`) is sent over a
//! Unix socket in the storage directory and executed by the daemon with the very same code
//! ([`commands::run`]), so the output and the exit codes do not depend on whether the daemon runs. The
//! socket is created 0600 inside the (0700) storage directory: only postdesk's own user (and root) can
//! talk to it.
//!
//! # Protocol
//! One request per connection: a JSON line [`Request`] `{"version": 1, "op": {…}, "input_len": N}`, then N
//! bytes of standard input (the mail for `ingest`); the answer is one JSON line [`Response`]
//! `{"code", "stdout", "stderr"}`.
//!
//! The request is its own type, not the command line's: renaming a flag in `cli` changes nothing here.
//! What travels is a [`commands::Op`] under an explicit [`PROTOCOL_VERSION`]. After a package upgrade the
//! old daemon may still be running while the new binary talks to it, so a daemon never guesses: a request
//! of another version or with an operation it does not know is answered with a refusal that says what to
//! do (restart the daemon), with exit code 75 (EX_TEMPFAIL: an MTA keeps the mail and retries). The
//! [`Response`] shape is the one thing that must never change, so that any daemon's refusal reaches any
//! client. A daemon from before the versioned protocol closes the connection without an answer; the
//! client says so with the same advice.
//!
//! # The client
//! [`reach`] is how every command gets to the store: the daemon's socket when one answers, the store itself
//! when none runs. It says what failed when neither works — the socket's path and errno, the store's lock
//! — instead of waiting for a lock that a daemon it may not talk to holds; and `ingest` gives up within
//! `storage.ingest_timeout` with exit 75, also on a daemon that accepted the connection and then never
//! answered (stopped or hung). A request whose input does not arrive whole is dropped by the daemon
//! unrun: a client that gave up must leave nothing half done behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use std::time::Duration;

use crate::commands::{self, Op};
use crate::config::Config;
use crate::intake::pipe::{EX_TEMPFAIL, MAX_PIPE_BYTES};
use crate::service::Desk;
use crate::store::{Store, StoreError};

/// The version of the request format. Bump it whenever the JSON of [`Request`] or [`Op`] changes in a way
/// an older daemon would misread or refuse (a renamed or retyped field, a new operation); the wire test
/// below pins the current shape.
pub const PROTOCOL_VERSION: u32 = 1;

/// What restarting means here: the advice every version mismatch ends with.
const RESTART: &str = "restart it after the upgrade: systemctl restart postdesk";

/// The longest request line a daemon reads (an operation is a few short fields).
const MAX_REQUEST_LINE: u64 = 64 * 1024;

/// Where the socket of the daemon using `config`'s store lives.
pub fn socket_path(config: &Config) -> PathBuf {
    config.storage.path.join("postdesk.sock")
}

/// One request on the socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    pub op: Op,
    /// How many bytes of standard input follow the line.
    pub input_len: u64,
}

/// A command's result, as the CLI prints it. Its shape never changes (see the module documentation).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Why a daemon refuses a request without running anything.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this command came in {}, but the running daemon speaks control protocol v{PROTOCOL_VERSION}; {RESTART}", version_name(*.got))]
    Version { got: Option<u32> },
    #[error("the running daemon speaks control protocol v{PROTOCOL_VERSION} and does not know the operation {op} ({detail}); {RESTART}")]
    UnknownOp { op: String, detail: String },
    #[error("not a control request ({0})")]
    Malformed(String),
}

fn version_name(got: Option<u32>) -> String {
    match got {
        Some(v) => format!("control protocol v{v}"),
        None => "an unversioned request (from a postdesk before control protocol v1)".into(),
    }
}

/// A request line as the daemon understood it: how much input follows (read even when refusing, so the
/// client is not cut off mid-write and sees the answer), and the operation or why it is refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub input_len: u64,
    pub op: Result<Op, Refusal>,
}

/// What every version of the request has: read first, so the version is checked before the operation.
#[derive(Deserialize)]
struct Envelope {
    version: Option<u32>,
    #[serde(default)]
    input_len: u64,
    op: Option<serde_json::Value>,
}

/// Understand one request line (pure): the version first, then the operation.
pub fn decode(line: &[u8]) -> Decoded {
    let envelope: Envelope = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(e) => {
            return Decoded {
                input_len: 0,
                op: Err(Refusal::Malformed(e.to_string())),
            }
        }
    };
    let input_len = envelope.input_len;
    let refuse = |r| Decoded {
        input_len,
        op: Err(r),
    };
    if envelope.version != Some(PROTOCOL_VERSION) {
        return refuse(Refusal::Version {
            got: envelope.version,
        });
    }
    let Some(op) = envelope.op else {
        return refuse(Refusal::Malformed("no `op`".into()));
    };
    let name = match &op {
        serde_json::Value::Object(m) if m.len() == 1 => m.keys().next().cloned(),
        serde_json::Value::String(s) => Some(s.clone()),
        _ => None,
    };
    match serde_json::from_value::<Op>(op) {
        Ok(op) => Decoded {
            input_len,
            op: Ok(op),
        },
        Err(e) => refuse(Refusal::UnknownOp {
            op: name.map_or_else(|| "(unnamed)".into(), |n| format!("`{n}`")),
            detail: e.to_string(),
        }),
    }
}

/// The answer to a refused request: nothing ran, try again once the daemon is restarted.
pub fn refused(refusal: &Refusal) -> Response {
    Response {
        code: EX_TEMPFAIL,
        stdout: String::new(),
        stderr: format!("postdesk: {refusal}\n"),
    }
}

/// How a client's attempt to connect to the socket went.
#[derive(Debug)]
pub enum Connect {
    /// A daemon accepted the connection.
    Connected(UnixStream),
    /// No socket file (ENOENT): no daemon runs on this store.
    Absent,
    /// The socket file exists but nobody listens (ECONNREFUSED): what a daemon that was killed leaves
    /// behind, or a daemon reloading its socket for a moment.
    Refused(std::io::Error),
    /// The daemon's queue of connections is full (EAGAIN): it is busy; try again.
    Busy,
    /// Any other error: EACCES/EPERM (this user may not use the socket or its directory), ENOTSOCK, …
    Failed(std::io::Error),
}

/// Try to connect to the socket at `path` once.
pub async fn connect(path: &Path) -> Connect {
    use std::io::ErrorKind;
    match UnixStream::connect(path).await {
        Ok(stream) => Connect::Connected(stream),
        Err(e) if e.kind() == ErrorKind::NotFound => Connect::Absent,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Connect::Refused(e),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Connect::Busy,
        Err(e) => Connect::Failed(e),
    }
}

/// Send `op` to a running daemon. `None` when no daemon answers (no socket, or a stale one); an error when
/// the socket could not be used or the daemon did not answer.
pub async fn forward(path: &Path, op: &Op, input: &[u8]) -> Option<std::io::Result<Response>> {
    let stream = match connect(path).await {
        Connect::Connected(s) => s,
        Connect::Absent | Connect::Refused(_) | Connect::Busy => return None,
        Connect::Failed(e) => return Some(Err(e)),
    };
    let request = Request {
        version: PROTOCOL_VERSION,
        op: op.clone(),
        input_len: input.len() as u64,
    };
    Some(exchange(stream, &request, input).await.map_err(explain))
}

/// What a command reached: the running daemon's answer, or the store (no daemon runs).
#[derive(Debug)]
pub enum Reached {
    Answer(Response),
    Store(Store),
}

/// How long a client waits: for the store or the socket to become available (a daemon starting or
/// stopping holds the store before its socket answers), and for the daemon's answer.
#[derive(Clone, Copy, Debug)]
pub struct Patience {
    /// How long to keep trying to reach a daemon or open the store.
    pub reach: Duration,
    /// How long to wait for the daemon's answer once connected, `None`: as long as it takes.
    pub answer: Option<Duration>,
    /// Where the limit comes from, for the message (`storage.ingest_timeout`).
    pub key: &'static str,
}

impl Patience {
    /// `postdesk ingest`: everything within `storage.ingest_timeout`, so that a hung daemon holds no
    /// delivery longer than that (the MTA keeps the mail on exit 75 and retries).
    pub fn ingest(config: &Config) -> Patience {
        let t = config.storage.ingest_timeout.0;
        Patience {
            reach: t,
            answer: Some(t),
            key: "storage.ingest_timeout",
        }
    }

    /// The admin commands: 15 s to reach the daemon or the store; no limit on the answer, since a backup
    /// or an erasure (which compacts the store) may legitimately take minutes, and an admin at a terminal
    /// sees a hang and can interrupt it.
    pub fn admin() -> Patience {
        Patience {
            reach: Duration::from_secs(15),
            answer: None,
            key: "",
        }
    }
}

/// Why a command reached neither a daemon nor the store. Each message names what failed, the socket or
/// the store, the errno, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the daemon's control socket {}: {}: {detail}; `postdesk ingest` and the admin commands must run as the daemon's user (postdesk) or as root (for an MTA: Postfix's pipe `user=`, OpenSMTPD's `user`), and the socket stays as the daemon made it, 0600 in a 0700 storage directory (restarting the daemon makes it again)", .path.display(), errno(.source))]
    Denied {
        path: PathBuf,
        source: std::io::Error,
        /// Who owns what, and who this process is.
        detail: String,
    },
    #[error("cannot connect to the daemon's control socket {}: {}", .path.display(), errno(.source))]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the running daemon did not answer on {} within {} ({key}): it is stopped or hung (`systemctl status postdesk`; state T is a stopped process); had it stored the mail meanwhile, the retry finds it already stored", .path.display(), humantime::format_duration(*.after))]
    Timeout {
        path: PathBuf,
        after: Duration,
        key: &'static str,
    },
    #[error("the daemon's control socket {} accepts no more connections (EAGAIN) and did not within {}: the daemon is overloaded or hung (`systemctl status postdesk`)", .path.display(), humantime::format_duration(*.after))]
    Overloaded { path: PathBuf, after: Duration },
    #[error("the running daemon did not answer on {}: {source}", .path.display())]
    Exchange {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store at {}: another process held it for {}, and the daemon's control socket {} {}: a daemon is starting or stopping, or a process holding the store is hung (`systemctl status postdesk`)", .storage.display(), humantime::format_duration(*.after), .path.display(), match .refused { Some(e) => format!("refuses connections ({}: nobody listens there; a daemon that was killed leaves its socket behind)", errno(e)), None => "does not exist".to_string() })]
    StoreBusy {
        path: PathBuf,
        storage: PathBuf,
        refused: Option<std::io::Error>,
        after: Duration,
    },
    #[error("{0}")]
    Store(StoreError),
}

/// An I/O error with its errno's name: `EACCES: Permission denied (os error 13)`.
fn errno(e: &std::io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EACCES) => "EACCES",
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::ECONNREFUSED) => "ECONNREFUSED",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::ENOTSOCK) => "ENOTSOCK",
        Some(libc::ENOTDIR) => "ENOTDIR",
        Some(libc::ENAMETOOLONG) => "ENAMETOOLONG",
        Some(libc::ECONNRESET) => "ECONNRESET",
        Some(libc::EPIPE) => "EPIPE",
        Some(libc::ETIMEDOUT) => "ETIMEDOUT",
        Some(libc::EPROTOTYPE) => "EPROTOTYPE",
        _ => return e.to_string(),
    };
    format!("{name}: {e}")
}

/// Why this process may not use the socket at `path`: its owner and mode (or its directory's, when that
/// cannot be searched), and this process's user.
fn who_may(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = user_name(unsafe { libc::geteuid() });
    let describe = |what: &str, p: &Path, m: &std::fs::Metadata| {
        format!(
            "{what} {} is owned by {} with mode {:04o}, this process runs as {me}",
            p.display(),
            user_name(m.uid()),
            m.mode() & 0o7777
        )
    };
    match std::fs::metadata(path) {
        Ok(m) => describe("the socket", path, &m),
        Err(_) => match path.parent().map(|d| (d, std::fs::metadata(d))) {
            Some((dir, Ok(m))) => describe("its directory", dir, &m),
            _ => format!("this process runs as {me}"),
        },
    }
}

/// `name (uid N)` from /etc/passwd, or `uid N`.
fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2].parse() == Ok(uid))
        .map_or_else(|| format!("uid {uid}"), |f| format!("{} (uid {uid})", f[0]))
}

/// Reach the daemon that holds `config`'s store and have it run `op`, or, when none runs, open the store.
///
/// What each answer of the socket means, and why:
/// - no socket file: no daemon; the store is opened here.
/// - ECONNREFUSED: the socket file exists but nobody listens. A daemon removes its socket when it stops,
///   so this is one that was killed (or one reloading its socket for a moment): opening the store is
///   right, and the store's lock tells whether a process still holds it. Should the store stay locked,
///   the error names both the refused socket and the lock, not the lock alone.
/// - EACCES/EPERM (or any other error): the socket may well have a daemon behind it that this user may
///   not talk to. Opening the store instead would only wait for the daemon's lock and then report the
///   lock, hiding the cause (issue 21: a `WouldBlock` on the lock, 15 s later, for a permission denied on
///   the socket): fail at once, naming the socket, the errno and what to do.
/// - EAGAIN: the daemon's queue of connections is full; try again until the time is up.
/// - connected: the daemon's answer, within `patience.answer` (a daemon stopped with SIGSTOP still
///   accepts connections into its queue, and would otherwise hold the client forever).
pub async fn reach(
    config: &Config,
    op: &Op,
    input: &[u8],
    patience: Patience,
) -> Result<Reached, ClientError> {
    let path = socket_path(config);
    let began = std::time::Instant::now();
    let deadline = began + patience.reach;
    loop {
        let refused = match connect(&path).await {
            Connect::Connected(stream) => {
                let request = Request {
                    version: PROTOCOL_VERSION,
                    op: op.clone(),
                    input_len: input.len() as u64,
                };
                let exchange = exchange(stream, &request, input);
                let answer = match patience.answer {
                    Some(limit) => {
                        let left = limit.saturating_sub(began.elapsed());
                        tokio::time::timeout(left, exchange).await.map_err(|_| {
                            ClientError::Timeout {
                                path: path.clone(),
                                after: limit,
                                key: patience.key,
                            }
                        })?
                    }
                    None => exchange.await,
                };
                return answer
                    .map(Reached::Answer)
                    .map_err(|e| ClientError::Exchange {
                        path,
                        source: explain(e),
                    });
            }
            Connect::Absent => None,
            Connect::Refused(e) => Some(e),
            Connect::Busy => {
                if std::time::Instant::now() >= deadline {
                    return Err(ClientError::Overloaded {
                        path,
                        after: patience.reach,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Connect::Failed(e)
                if matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) =>
            {
                let detail = who_may(&path);
                return Err(ClientError::Denied {
                    path,
                    source: e,
                    detail,
                });
            }
            Connect::Failed(e) => return Err(ClientError::Connect { path, source: e }),
        };
        match Store::open(&config.storage.path) {
            Ok(store) => {
                if let Some(e) = &refused {
                    tracing::debug!(socket = %path.display(), "the control socket refuses connections ({}): no daemon listens; the store was opened directly", errno(e));
                }
                return Ok(Reached::Store(store));
            }
            Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) if e.is_busy() => {
                return Err(ClientError::StoreBusy {
                    path,
                    storage: config.storage.path.clone(),
                    refused,
                    after: patience.reach,
                })
            }
            Err(e) => return Err(ClientError::Store(e)),
        }
    }
}

async fn exchange(
    mut stream: UnixStream,
    request: &Request,
    input: &[u8],
) -> std::io::Result<Response> {
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.write_all(input).await?;
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    if answer.is_empty() {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad answer from the daemon: {e}"),
        )
    })
}

/// A connection the daemon closed without an answer is what a daemon of another protocol does (one from
/// before the versioned protocol drops requests it cannot read): say so, with the way out.
fn explain(e: std::io::Error) -> std::io::Error {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    if matches!(e.kind(), BrokenPipe | ConnectionReset | UnexpectedEof) {
        std::io::Error::new(
            e.kind(),
            format!("it closed the connection without an answer ({e}); if postdesk was upgraded, the running daemon is the old one and speaks another control protocol: {RESTART}"),
        )
    } else {
        e
    }
}

/// Serve commands on `path` until `shutdown`.
pub async fn serve(desk: Arc<Desk>, path: PathBuf, shutdown: CancellationToken) {
    let _ = std::fs::remove_file(&path); // a stale socket of a previous run
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(socket = %path.display(), "cannot create the control socket: {e}; `postdesk ingest` and the admin commands will fail while the daemon runs");
            return;
        }
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(socket = %path.display(), "cannot restrict the control socket to 0600: {e}");
        }
    }
    let tracker = tokio_util::task::TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let desk = desk.clone();
                    tracker.spawn(async move {
                        if let Err(e) = handle(&desk, stream).await {
                            tracing::warn!("control socket request failed: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
    // Issue 16 (an upgrade's restart): a client that connected just before the stop sat in the listen
    // queue, unanswered, and got "connection reset" when the listener closed. Unlink the path first (a
    // later client then finds no daemon and opens the store itself once it is free), then answer every
    // connection already queued.
    let _ = std::fs::remove_file(&path);
    while let Ok(Ok((stream, _))) =
        tokio::time::timeout(std::time::Duration::from_millis(20), listener.accept()).await
    {
        let desk = desk.clone();
        tracker.spawn(async move {
            if let Err(e) = handle(&desk, stream).await {
                tracing::warn!("control socket request failed: {e}");
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn handle(desk: &Desk, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    (&mut reader)
        .take(MAX_REQUEST_LINE)
        .read_until(b'\n', &mut line)
        .await?;
    let decoded = decode(&line);
    let mut input = Vec::new();
    let expected = decoded.input_len.min(MAX_PIPE_BYTES + 1);
    (&mut reader).take(expected).read_to_end(&mut input).await?;
    if (input.len() as u64) < expected {
        // The client hung up before its whole input arrived (an `ingest` that timed out while this daemon
        // was stopped, say): running the operation would store a cut mail, and the MTA's retry the whole
        // one beside it. Nothing is done; nobody is left to answer.
        tracing::warn!(
            "control request dropped: the client hung up after {} of {expected} bytes of its input (it gave up waiting: its mail stays with the MTA, which retries)",
            input.len()
        );
        return Ok(());
    }
    let response = answer(desk, decoded.op, &input).await;
    if response.code == EX_TEMPFAIL && response.stdout.is_empty() {
        tracing::debug!(
            "control request answered with exit 75: {}",
            response.stderr.trim_end()
        );
    }
    let mut bytes = serde_json::to_vec(&response)?;
    bytes.push(b'\n');
    let mut stream = reader.into_inner();
    match stream.write_all(&bytes).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            // What it ran is done and stored; for `ingest`, the MTA's retry finds the mail already stored.
            tracing::warn!(
                "control request done (exit {}), but the client had left before the answer: it gave up waiting (storage.ingest_timeout, for `postdesk ingest`)",
                response.code
            );
            return Ok(());
        }
        other => other?,
    }
    stream.shutdown().await
}

/// Run a decoded request on `desk`, or answer its refusal.
pub async fn answer(desk: &Desk, op: Result<Op, Refusal>, input: &[u8]) -> Response {
    let op = match op {
        Ok(op) => op,
        Err(refusal) => {
            tracing::warn!("control request refused: {refusal}");
            return refused(&refusal);
        }
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = commands::run(desk, op, input, &mut out, &mut err).await;
    Response {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{TestConfig, TestRegion};
    use crate::desk::ticket::{Status, TicketId};

    fn request(line: &str) -> Decoded {
        decode(line.as_bytes())
    }

    /// Issue 16: during the restart of a package upgrade, `postdesk tickets list` got "connection reset"
    /// from the stopping daemon: its connection was queued but never accepted. Every client that got
    /// connected is answered, however the stop falls.
    #[tokio::test]
    async fn clients_queued_when_the_daemon_stops_are_still_answered() {
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig::new(dir.path()).region(TestRegion::jp()).parse();
        let store = Arc::new(crate::store::Store::open(&config.storage.path).unwrap());
        let desk = Arc::new(Desk::new(config, store).unwrap());
        let path = dir.path().join("postdesk.sock");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(desk, path.clone(), stop.clone()));
        while !path.exists() {
            tokio::task::yield_now().await;
        }
        // Twenty clients in the listen queue (this runtime has one thread: the server has not accepted
        // any yet), then the stop.
        let mut clients = Vec::new();
        for _ in 0..20 {
            clients.push(UnixStream::connect(&path).await.unwrap());
        }
        stop.cancel();
        let op = Op::TicketsList {
            region: None,
            status: None,
            json: true,
        };
        let request = Request {
            version: PROTOCOL_VERSION,
            op,
            input_len: 0,
        };
        for client in clients {
            let response = exchange(client, &request, b"").await.unwrap();
            assert_eq!(response.code, 0, "{}", response.stderr);
        }
        server.await.unwrap();
        assert!(!path.exists());
    }

    /// The JSON of every operation, as it travels. If this fails, the control protocol changed: bump
    /// PROTOCOL_VERSION (an older daemon must refuse the new shape, not misread it), then update here.
    #[test]
    fn wire_format_of_every_op_is_pinned() {
        let id: TicketId = "JP-1000".parse().unwrap();
        let cases = [
            (
                Op::Ingest {
                    region: "JP".into(),
                    size: None,
                },
                r#"{"ingest":{"region":"JP"}}"#,
            ),
            // `size` came later, sent only with an oversized mail's start: ordinary mail is unchanged.
            (
                Op::Ingest {
                    region: "JP".into(),
                    size: Some(70_000_000),
                },
                r#"{"ingest":{"region":"JP","size":70000000}}"#,
            ),
            (
                Op::TicketsList {
                    region: Some("JP".into()),
                    status: Some(Status::Open),
                    json: true,
                },
                r#"{"tickets_list":{"region":"JP","status":"open","json":true}}"#,
            ),
            (
                Op::TicketsShow {
                    id: id.clone(),
                    json: false,
                },
                r#"{"tickets_show":{"id":"JP-1000","json":false}}"#,
            ),
            (
                Op::TicketsSetStatus {
                    id,
                    status: Status::Resolved,
                },
                r#"{"tickets_set_status":{"id":"JP-1000","status":"resolved"}}"#,
            ),
            (
                Op::TicketsDue { json: true },
                r#"{"tickets_due":{"json":true}}"#,
            ),
            // The filters and `force` came later, optional and left out when unset: the shapes without
            // them are unchanged (an older CLI's request means the same), no version bump.
            (
                Op::OutboxList {
                    json: false,
                    status: None,
                    ticket: None,
                    kind: None,
                    since: None,
                    limit: None,
                },
                r#"{"outbox_list":{"json":false}}"#,
            ),
            (
                Op::OutboxList {
                    json: true,
                    status: Some(crate::outbound::OutboxStatus::Failed),
                    ticket: Some("JP-1000".parse().unwrap()),
                    kind: Some("ack".into()),
                    since: Some("2026-11-21T00:00:00Z".parse().unwrap()),
                    limit: Some(20),
                },
                r#"{"outbox_list":{"json":true,"status":"failed","ticket":"JP-1000","kind":"ack","since":"2026-11-21T00:00:00Z","limit":20}}"#,
            ),
            (
                Op::OutboxRetry {
                    id: 7,
                    force: false,
                },
                r#"{"outbox_retry":{"id":7}}"#,
            ),
            (
                Op::OutboxRetry { id: 7, force: true },
                r#"{"outbox_retry":{"id":7,"force":true}}"#,
            ),
            (Op::Stats { json: true }, r#"{"stats":{"json":true}}"#),
            (
                Op::Backup {
                    dir: "/srv/b".into(),
                },
                r#"{"backup":{"dir":"/srv/b"}}"#,
            ),
            (
                Op::CustomerExport {
                    email: "a@x.jp".into(),
                    dir: "/srv/e".into(),
                },
                r#"{"customer_export":{"email":"a@x.jp","dir":"/srv/e"}}"#,
            ),
            (
                Op::CustomerErase {
                    email: "a@x.jp".into(),
                    yes: true,
                },
                r#"{"customer_erase":{"email":"a@x.jp","yes":true}}"#,
            ),
        ];
        for (op, json) in cases {
            let line = serde_json::to_string(&Request {
                version: PROTOCOL_VERSION,
                op: op.clone(),
                input_len: 3,
            })
            .unwrap();
            assert_eq!(
                line,
                format!(r#"{{"version":1,"op":{json},"input_len":3}}"#),
                "wire format of {op:?}"
            );
            assert_eq!(
                request(&line),
                Decoded {
                    input_len: 3,
                    op: Ok(op)
                }
            );
        }
    }

    #[test]
    fn an_unknown_version_is_refused_with_the_way_out() {
        let d = request(r#"{"version":2,"op":{"stats":{"json":true}},"input_len":5}"#);
        assert_eq!(
            d.input_len, 5,
            "the input is still read, so the client sees the answer"
        );
        assert_eq!(d.op, Err(Refusal::Version { got: Some(2) }));
        let r = refused(d.op.as_ref().unwrap_err());
        assert_eq!(r.code, EX_TEMPFAIL, "an MTA keeps the mail and retries");
        assert_eq!(
            r.stderr,
            "postdesk: this command came in control protocol v2, but the running daemon speaks control \
             protocol v1; restart it after the upgrade: systemctl restart postdesk\n"
        );
    }

    #[test]
    fn a_request_from_before_the_versioned_protocol_is_refused() {
        // What the clap `Command` looked like on the wire before the protocol had a version.
        let d = request(r#"{"command":{"Stats":{"json":true}},"input_len":0}"#);
        assert_eq!(d.op, Err(Refusal::Version { got: None }));
        assert!(refused(d.op.as_ref().unwrap_err())
            .stderr
            .contains("unversioned request"));
    }

    #[test]
    fn an_unknown_op_is_refused_and_not_misread() {
        let d = request(r#"{"version":1,"op":{"tickets_merge":{"into":"JP-1"}},"input_len":0}"#);
        let Err(Refusal::UnknownOp { op, .. }) = &d.op else {
            panic!("{d:?}");
        };
        assert_eq!(op, "`tickets_merge`");
        let text = refused(d.op.as_ref().unwrap_err()).stderr;
        assert!(
            text.contains("does not know the operation `tickets_merge`")
                && text.contains("systemctl restart postdesk"),
            "{text}"
        );
        // A known op with a field it does not have is not run with that field dropped silently either.
        for line in [
            r#"{"version":1,"op":{"stats":{"json":"yes"}},"input_len":0}"#,
            r#"{"version":1,"op":{"stats":{"json":true,"region":"JP"}},"input_len":0}"#,
        ] {
            let d = request(line);
            assert!(
                matches!(d.op, Err(Refusal::UnknownOp { .. })),
                "{line}: {d:?}"
            );
        }
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(request("hello\n").op, Err(Refusal::Malformed(_))));
    }

    fn config(dir: &Path) -> Config {
        TestConfig::new(dir).region(TestRegion::jp()).parse()
    }

    /// Through a real socket: a request of another version gets the refusal (and nothing runs), the
    /// current version gets its answer, and the CLI's client reads both.
    #[tokio::test]
    async fn the_socket_refuses_another_protocol_version_and_answers_this_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let store = Arc::new(crate::store::Store::open(&config.storage.path).unwrap());
        let desk = Arc::new(Desk::new(config.clone(), store).unwrap());
        let path = socket_path(&config);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(desk, path.clone(), shutdown.clone()));
        while UnixStream::connect(&path).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }

        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream
            .write_all(
                b"{\"version\":9,\"op\":{\"ingest\":{\"region\":\"JP\"}},\"input_len\":4}\nmail",
            )
            .await
            .unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await.unwrap();
        let response: Response = serde_json::from_str(&answer).unwrap();
        assert_eq!(response.code, EX_TEMPFAIL);
        assert!(
            response
                .stderr
                .contains("this command came in control protocol v9, but the running daemon speaks control protocol v1; restart it after the upgrade: systemctl restart postdesk"),
            "{response:?}"
        );

        let response = forward(&path, &Op::Stats { json: true }, b"")
            .await
            .expect("a daemon answers")
            .unwrap();
        assert_eq!(response.code, 0, "{response:?}");
        let stats: serde_json::Value = serde_json::from_str(&response.stdout).unwrap();
        assert_eq!(stats[0]["region"], "JP");

        shutdown.cancel();
        server.await.unwrap();
    }

    /// A daemon from before the versioned protocol reads the line, cannot parse it and hangs up: the client
    /// says what that means.
    #[tokio::test]
    async fn a_daemon_that_hangs_up_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let old_daemon = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).await.unwrap();
        });
        let e = forward(&path, &Op::Stats { json: false }, b"")
            .await
            .expect("connected")
            .unwrap_err();
        old_daemon.await.unwrap();
        let text = e.to_string();
        assert!(
            text.contains("without an answer") && text.contains("systemctl restart postdesk"),
            "{text}"
        );
    }

    fn patience(ms: u64) -> Patience {
        Patience {
            reach: std::time::Duration::from_millis(ms),
            answer: Some(std::time::Duration::from_millis(ms)),
            key: "storage.ingest_timeout",
        }
    }

    /// Issue 21: a daemon stopped with SIGSTOP still has its connections accepted by the kernel, and
    /// `ingest` waited until it was resumed. A listener that never accepts is such a daemon.
    #[tokio::test]
    async fn a_daemon_that_never_answers_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(&config.storage.path).unwrap();
        let _hung = UnixListener::bind(socket_path(&config)).unwrap();
        let began = std::time::Instant::now();
        let e = reach(
            &config,
            &Op::Ingest {
                region: "JP".into(),
                size: None,
            },
            b"mail",
            patience(300),
        )
        .await
        .unwrap_err();
        assert!(
            began.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        let text = e.to_string();
        assert!(
            matches!(e, ClientError::Timeout { .. })
                && text.contains("did not answer on")
                && text.contains("postdesk.sock within 300ms (storage.ingest_timeout)"),
            "{text}"
        );
    }

    /// A socket file nobody listens on (ECONNREFUSED) is what a killed daemon leaves: the store is opened.
    /// Should the store be held all the same, the error names the refused socket and the lock, not the lock
    /// alone.
    #[tokio::test]
    async fn a_refused_socket_opens_the_store_or_names_both() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::create_dir_all(&config.storage.path).unwrap();
        drop(UnixListener::bind(socket_path(&config)).unwrap());
        let op = Op::Stats { json: true };
        let held = Store::open(&config.storage.path).unwrap();
        let e = reach(&config, &op, b"", patience(200)).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("another process held it for 200ms")
                && text.contains(
                    "refuses connections (ECONNREFUSED: Connection refused (os error 111)"
                ),
            "{text}"
        );
        drop(held);
        assert!(matches!(
            reach(&config, &op, b"", patience(200)).await,
            Ok(Reached::Store(_))
        ));
    }

    /// Any other error of the socket is reported as it is, with its errno, and the store is not opened.
    #[tokio::test]
    async fn a_socket_that_cannot_be_used_is_named_with_its_errno() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        // storage.path is a file: the socket's path cannot even be looked up (ENOTDIR).
        std::fs::write(&config.storage.path, b"not a directory").unwrap();
        let e = reach(&config, &Op::Stats { json: true }, b"", patience(200))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("cannot connect to the daemon's control socket")
                && text.contains("postdesk.sock: ENOTDIR: Not a directory (os error 20)"),
            "{text}"
        );
    }

    /// A client that hangs up before its whole input arrived (an `ingest` that gave up while the daemon was
    /// stopped) must not have a cut mail stored: the MTA's retry would store the whole one beside it.
    #[tokio::test]
    async fn a_request_cut_short_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let store = Arc::new(crate::store::Store::open(&config.storage.path).unwrap());
        let desk = Arc::new(Desk::new(config.clone(), store.clone()).unwrap());
        let path = socket_path(&config);
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve(desk, path.clone(), shutdown.clone()));
        while UnixStream::connect(&path).await.is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let mail =
            b"From: a@example.org\r\nSubject: cut\r\nMessage-ID: <cut@x>\r\n\r\nthe whole text\r\n";
        let mut stream = UnixStream::connect(&path).await.unwrap();
        let line = format!(
            "{{\"version\":1,\"op\":{{\"ingest\":{{\"region\":\"JP\"}}}},\"input_len\":{}}}\n",
            mail.len()
        );
        stream.write_all(line.as_bytes()).await.unwrap();
        stream.write_all(&mail[..40]).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await.unwrap();
        assert_eq!(answer, "", "no answer: nothing ran");
        shutdown.cancel();
        server.await.unwrap();
        use crate::store::Storage;
        assert!(
            store.tickets(None, None).unwrap().is_empty(),
            "a cut mail was stored"
        );
    }
}
