//! The control socket: how `postdesk` commands reach a running daemon.
//!
//! sled lets one process open a store. While `postdesk run` holds it, every other command (`ingest` from
//! the MTA, `tickets`, `outbox`, `stats`) is sent over a Unix socket in the storage directory and executed
//! by the daemon with the very same code, so the output and the exit codes do not depend on whether the
//! daemon runs. The socket is created 0600 inside the (0700) storage directory: only postdesk's own user
//! (and root) can talk to it.
//!
//! Protocol, one request per connection: a JSON line `{"command": …, "input_len": N}`, then N bytes of
//! standard input (the mail for `ingest`); the answer is one JSON line `{"code", "stdout", "stderr"}`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use crate::cli::{with_desk, Command};
use crate::config::Config;
use crate::service::Desk;

/// Where the socket of the daemon using `config`'s store lives.
pub fn socket_path(config: &Config) -> PathBuf {
    config.storage.path.join("postdesk.sock")
}

#[derive(Serialize, Deserialize)]
struct Request {
    command: Command,
    input_len: u64,
}

/// A command's result, as the CLI prints it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Send `command` to a running daemon. `None` when no daemon answers (no socket, or a stale one).
pub async fn forward(
    path: &Path,
    command: &Command,
    input: &[u8],
) -> Option<std::io::Result<Response>> {
    let stream = UnixStream::connect(path).await.ok()?;
    Some(exchange(stream, command, input).await)
}

async fn exchange(
    mut stream: UnixStream,
    command: &Command,
    input: &[u8],
) -> std::io::Result<Response> {
    let mut line = serde_json::to_vec(&Request {
        command: clone_command(command)?,
        input_len: input.len() as u64,
    })?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.write_all(input).await?;
    stream.flush().await?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).await?;
    serde_json::from_str(&answer).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad answer from the daemon: {e}"),
        )
    })
}

fn clone_command(command: &Command) -> std::io::Result<Command> {
    // Commands are plain data; a JSON round trip is the clone (and proves the command is serialisable).
    let v = serde_json::to_value(command)?;
    Ok(serde_json::from_value(v)?)
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
    tracker.close();
    tracker.wait().await;
    let _ = std::fs::remove_file(&path);
}

async fn handle(desk: &Desk, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let request: Request = serde_json::from_str(&line)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let limit = crate::intake::pipe::MAX_PIPE_BYTES + 1;
    let mut input = Vec::new();
    (&mut reader)
        .take(request.input_len.min(limit))
        .read_to_end(&mut input)
        .await?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = match request.command {
        Command::Run | Command::CheckConfig | Command::Demo { .. } => {
            err.extend_from_slice(b"postdesk: this command is not run through the daemon\n");
            crate::cli::EX_FAILURE
        }
        command => with_desk(desk, command, &input, &mut out, &mut err).await,
    };
    let response = Response {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    };
    let mut bytes = serde_json::to_vec(&response)?;
    bytes.push(b'\n');
    let mut stream = reader.into_inner();
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}
