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

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::commands::{self, Op};
use crate::config::Config;
use crate::intake::pipe::{EX_TEMPFAIL, MAX_PIPE_BYTES};
use crate::service::Desk;

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

/// Send `op` to a running daemon. `None` when no daemon answers (no socket, or a stale one).
pub async fn forward(path: &Path, op: &Op, input: &[u8]) -> Option<std::io::Result<Response>> {
    let stream = UnixStream::connect(path).await.ok()?;
    let request = Request {
        version: PROTOCOL_VERSION,
        op: op.clone(),
        input_len: input.len() as u64,
    };
    Some(exchange(stream, &request, input).await.map_err(explain))
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
    (&mut reader)
        .take(decoded.input_len.min(MAX_PIPE_BYTES + 1))
        .read_to_end(&mut input)
        .await?;
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
    stream.write_all(&bytes).await?;
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
                },
                r#"{"ingest":{"region":"JP"}}"#,
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
}
