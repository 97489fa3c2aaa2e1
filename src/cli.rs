//! The `postdesk` command line: the argument definitions (clap) and how each command is carried out.
//!
//! This is the top of the crate (only `main.rs` is above it). A command that works on the store becomes a
//! [`commands::Op`]: sent to the running daemon over its control socket when one holds the store, else run
//! here on a store opened for the purpose, by the same [`commands::run`] either way. The clap types are
//! only the command line: the socket has its own versioned request type (`control`), so renaming a flag
//! does not change what an older daemon receives. Every command returns an exit code instead of
//! exiting, so tests can drive it in-process.
//!
//! `--json` output uses the names of ARCHITECTURE.md's JSON contract.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::commands::{self, Op};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::desk::ticket::{Status, TicketId};
use crate::intake::pipe;
use crate::outbound::render::Renderer;
use crate::service::Desk;
use crate::store::Storage;

pub use crate::commands::{EX_CONFIG, EX_FAILURE};
pub use crate::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "postdesk",
    version,
    about = "Email helpdesk daemon: regional support mailboxes become tickets, answered by mail"
)]
pub struct Cli {
    /// Config file [default: $POSTDESK_CONFIG, else /etc/postdesk/config.toml]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log lines on stderr: `text` (journald-friendly without a terminal) or `json` (one object per line)
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (intake, outbox, timers) until SIGTERM/SIGINT.
    Run,
    /// Validate the config and compile every template; exit 0, or 2 naming the key and the reason.
    CheckConfig,
    /// Store one mail read from stdin (MTA pipe delivery). Exit 0 stored, 75 retry later, 65 not a mail.
    Ingest {
        /// Region code the mail was addressed to (e.g. JP).
        #[arg(long)]
        region: String,
    },
    /// List, show and change tickets.
    #[command(subcommand)]
    Tickets(TicketsCommand),
    /// The outgoing mail queue.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// Per-region ticket counts and quarantined mail.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// A customer's data: export it (data-subject request) or erase it (right to be forgotten).
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// Write a consistent snapshot of the store into DIR (new or empty), also while the daemon runs.
    Backup {
        /// Directory for the backup (created 0700; must be writable by the daemon's user when one runs).
        dir: PathBuf,
    },
    /// Restore a backup into storage.path (absent or empty), with the daemon stopped.
    ///
    /// The manifest's version and every file's sha256 are checked before anything is written.
    Restore {
        /// A directory written by `postdesk backup`.
        dir: PathBuf,
    },
    /// Run postdesk on its embedded default: sample mails in a Maildir, acknowledgements to files.
    Demo {
        /// Working directory for the demo's config, store, Maildirs and outbox.
        #[arg(long, default_value = "postdesk-demo")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    /// List tickets.
    List {
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        status: Option<Status>,
        #[arg(long)]
        json: bool,
    },
    /// Show one ticket with its messages.
    Show {
        id: TicketId,
        #[arg(long)]
        json: bool,
    },
    /// Change a ticket's status; the customer gets the status update mail.
    SetStatus { id: TicketId, status: Status },
    /// Upcoming timers: customer reminders, SLA reminders and escalations, auto-close.
    Due {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Write every ticket, message, attachment and outbox row of EMAIL into a directory (JSON + files).
    Export {
        email: String,
        /// Target directory (new or empty) [default: ./postdesk-export-EMAIL-DATE]
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Erase EMAIL: messages, attachments and addresses go, an anonymised ticket skeleton stays for
    /// statistics, queued mail to them is cancelled. Without --yes, only lists what would be erased.
    Erase {
        email: String,
        /// Really erase (it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum OutboxCommand {
    /// List outgoing mail with its delivery state (every row, oldest first, unless filtered).
    List {
        /// Only rows in this state: queued, sent, failed, bounced.
        #[arg(long, value_parser = parse_outbox_status, value_name = "STATUS")]
        status: Option<crate::outbound::OutboxStatus>,
        /// Only the mail of this ticket.
        #[arg(long, value_name = "ID")]
        ticket: Option<TicketId>,
        /// Only this kind of mail (the template event: ack, agent_notify, status_changed, …).
        #[arg(long, value_name = "KIND")]
        kind: Option<String>,
        /// Only rows created since then: a duration back from now (`2h`, `30m`, `1d`) or an RFC 3339 time.
        #[arg(long, value_parser = parse_since, value_name = "DURATION|TIME")]
        since: Option<chrono::DateTime<Utc>>,
        /// At most N rows: the newest, newest first.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Queue a mail again now (after `failed`, or to skip a retry wait). A mail already sent is refused
    /// unless `--force`.
    Retry {
        id: u64,
        /// Send it again even though it was sent.
        #[arg(long)]
        force: bool,
    },
}

/// `--status` of `outbox list`.
fn parse_outbox_status(text: &str) -> Result<crate::outbound::OutboxStatus, String> {
    use crate::outbound::OutboxStatus as S;
    [S::Queued, S::Sent, S::Failed, S::Bounced]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
        .ok_or_else(|| format!("{text:?} is not an outbox status (queued, sent, failed, bounced)"))
}

/// `--since`: `2h`, `30m`, `1d 12h` (back from now) or an RFC 3339 time (`2026-11-21T09:00:00+09:00`).
pub fn parse_since(text: &str) -> Result<chrono::DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?} is neither a duration (2h, 30m, 1d) nor an RFC 3339 time: {e}")
    })?;
    let d = chrono::Duration::from_std(d).map_err(|_| format!("{text:?} is too long ago"))?;
    Utc::now()
        .checked_sub_signed(d)
        .ok_or_else(|| format!("{text:?} is too long ago"))
}

/// Where the config is: `--config`, else `$POSTDESK_CONFIG`, else the default path.
pub fn config_path(arg: Option<&Path>) -> PathBuf {
    arg.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("POSTDESK_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Run a parsed command line; returns the process exit code.
pub async fn execute(cli: Cli, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32 {
    if let Command::Demo { dir } = &cli.command {
        return crate::demo::run(dir, out, err).await;
    }
    let path = config_path(cli.config.as_deref());
    // Only the daemon logs in anywhere (and check-config checks that it can): other commands leave the
    // password files unread, so the MTA's `ingest` and an admin's `tickets` need no access to them.
    let secrets = match cli.command {
        Command::Run | Command::CheckConfig => crate::config::Secrets::Read,
        _ => crate::config::Secrets::Skip,
    };
    let config = match Config::load_with(&path, secrets) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "postdesk: {e}");
            if path == Path::new(DEFAULT_CONFIG_PATH) && !path.exists() {
                let _ = writeln!(
                    err,
                    "postdesk: pass --config PATH, set POSTDESK_CONFIG, or try `postdesk demo`"
                );
            }
            return match cli.command {
                // The MTA must keep the mail when postdesk is misconfigured.
                Command::Ingest { .. } => pipe::EX_TEMPFAIL,
                _ => EX_CONFIG,
            };
        }
    };
    match cli.command {
        Command::CheckConfig => check_config(&config, &path, out, err),
        Command::Run => run_daemon(config, &path, err).await,
        Command::Restore { dir } => restore(&config, &dir, out, err).await,
        command => {
            let mut op = match store_op(command) {
                Ok(Some(op)) => op,
                Ok(None) => return EX_FAILURE, // `demo` was run above
                Err(e) => {
                    let _ = writeln!(err, "postdesk: {e}");
                    return EX_FAILURE;
                }
            };
            let is_ingest = matches!(op, Op::Ingest { .. });
            // The directory a daemon would write for us (export, backup): see `daemon_dir_advice`.
            let written_dir = match &op {
                Op::CustomerExport { dir, .. } | Op::Backup { dir } => Some(dir.clone()),
                _ => None,
            };
            let input = if let Op::Ingest { region, size } = &mut op {
                // Through the region's cap only: an oversized mail is stored truncated anyway.
                let limit = config
                    .region(region)
                    .map_or(pipe::MAX_PIPE_BYTES, |r| r.max_message_bytes);
                match pipe::read_input(&mut std::io::stdin().lock(), limit) {
                    Ok(read) => {
                        *size = read.cut().then_some(read.size);
                        read.raw
                    }
                    Err(e) => {
                        let _ = writeln!(err, "postdesk: cannot read stdin: {e}");
                        return pipe::EX_TEMPFAIL;
                    }
                }
            } else {
                Vec::new()
            };
            // A running daemon holds the store: let it execute the operation; else open the store here
            // (`control::reach` says what each answer of the socket means). `ingest` gives up within
            // `storage.ingest_timeout` with exit 75, so a hung daemon holds no delivery of the MTA.
            let patience = if is_ingest {
                crate::control::Patience::ingest(&config)
            } else {
                crate::control::Patience::admin()
            };
            let store = match crate::control::reach(&config, &op, &input, patience).await {
                Ok(crate::control::Reached::Answer(response)) => {
                    let _ = out.write_all(response.stdout.as_bytes());
                    let _ = err.write_all(response.stderr.as_bytes());
                    if let Some(dir) = &written_dir {
                        // Written by the daemon, but where this command cannot see it: its private
                        // /tmp (PrivateTmp=), gone when it stops.
                        if response.code == 0 && !dir.exists() {
                            let _ = writeln!(
                                err,
                                "postdesk: {} was written by the running daemon where only it can see it (its private /tmp, PrivateTmp=, deleted when it stops); {}",
                                dir.display(),
                                daemon_dir_advice(&config)
                            );
                            return EX_FAILURE;
                        }
                        // Only for the errors the sandbox gives, not for "not empty" and the like.
                        let sandboxed = [
                            "Permission denied",
                            "Read-only file system",
                            "No such file or directory",
                        ]
                        .iter()
                        .any(|e| response.stderr.contains(e));
                        if response.code != 0 && sandboxed {
                            let _ = writeln!(
                                err,
                                "postdesk: the running daemon writes {} itself; {}",
                                dir.display(),
                                daemon_dir_advice(&config)
                            );
                        }
                    }
                    return response.code;
                }
                Ok(crate::control::Reached::Store(store)) => store,
                Err(e) => {
                    let _ = writeln!(err, "postdesk: {e}");
                    return if is_ingest {
                        pipe::EX_TEMPFAIL
                    } else {
                        EX_FAILURE
                    };
                }
            };
            let desk = match Desk::new(config, std::sync::Arc::new(store)) {
                Ok(d) => d,
                Err(e) => {
                    let _ = writeln!(err, "postdesk: {e}");
                    return if is_ingest {
                        pipe::EX_TEMPFAIL
                    } else {
                        EX_CONFIG
                    };
                }
            };
            let code = commands::run(&desk, op, &input, out, err).await;
            if let Err(e) = desk.store.flush_async().await {
                let _ = writeln!(err, "postdesk: {e}");
                return EX_FAILURE;
            }
            code
        }
    }
}

/// Where a running daemon may write a directory for a command (`customer export`, `backup`): under
/// systemd it runs as `postdesk` in the unit's sandbox, so neither the admin's home (`ProtectHome=`) nor
/// `/tmp` (private) will do, and the default export directory is the current one.
pub fn daemon_dir_advice(config: &Config) -> String {
    format!(
        "it runs as the user postdesk and, under systemd, may write only under {} and the unit's \
         ReadWritePaths= (the package's /var/spool/postdesk): not under /root or /home (ProtectHome=), \
         and /tmp is its own (PrivateTmp=). Pass a directory there (e.g. --out \
         /var/spool/postdesk/export-1 for customer export), then take the files from it as root",
        config.storage.path.display()
    )
}

/// The store operation a command line asks for; `None` for the commands that are not one (`run`,
/// `check-config`, `restore`, `demo`). Paths are the caller's: made absolute (and the export's default
/// chosen) here, before the operation may travel to a daemon with another working directory.
pub fn store_op(command: Command) -> std::io::Result<Option<Op>> {
    Ok(Some(match command {
        Command::Run | Command::CheckConfig | Command::Restore { .. } | Command::Demo { .. } => {
            return Ok(None)
        }
        Command::Ingest { region } => Op::Ingest { region, size: None },
        Command::Tickets(TicketsCommand::List {
            region,
            status,
            json,
        }) => Op::TicketsList {
            region,
            status,
            json,
        },
        Command::Tickets(TicketsCommand::Show { id, json }) => Op::TicketsShow { id, json },
        Command::Tickets(TicketsCommand::SetStatus { id, status }) => {
            Op::TicketsSetStatus { id, status }
        }
        Command::Tickets(TicketsCommand::Due { json }) => Op::TicketsDue { json },
        Command::Outbox(OutboxCommand::List {
            status,
            ticket,
            kind,
            since,
            limit,
            json,
        }) => Op::OutboxList {
            json,
            status,
            ticket,
            kind,
            since,
            limit,
        },
        Command::Outbox(OutboxCommand::Retry { id, force }) => Op::OutboxRetry { id, force },
        Command::Stats { json } => Op::Stats { json },
        Command::Backup { dir } => Op::Backup {
            dir: std::env::current_dir()?.join(dir),
        },
        Command::Customer(CustomerCommand::Export { email, out }) => {
            let dir = out.unwrap_or_else(|| {
                PathBuf::from(format!(
                    "postdesk-export-{}-{}",
                    crate::mail::parse::safe_filename(&email.trim().to_ascii_lowercase()),
                    Utc::now().format("%Y-%m-%d")
                ))
            });
            Op::CustomerExport {
                dir: std::env::current_dir()?.join(dir),
                email,
            }
        }
        Command::Customer(CustomerCommand::Erase { email, yes }) => {
            Op::CustomerErase { email, yes }
        }
    }))
}

/// Run a store command on an open desk, as a daemon does with a forwarded one (for tests and embedders).
pub async fn with_desk(
    desk: &Desk,
    command: Command,
    input: &[u8],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    match store_op(command) {
        Ok(Some(op)) => commands::run(desk, op, input, out, err).await,
        Ok(None) => {
            let _ = writeln!(err, "postdesk: this command does not work on an open store");
            EX_FAILURE
        }
        Err(e) => {
            let _ = writeln!(err, "postdesk: {e}");
            EX_FAILURE
        }
    }
}

/// `postdesk restore DIR`: never through the daemon, never over existing data.
async fn restore(
    config: &Config,
    dir: &Path,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let socket = crate::control::socket_path(config);
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        let _ = writeln!(
            err,
            "postdesk: a daemon is running on {}; stop it (systemctl stop postdesk) before restoring",
            config.storage.path.display()
        );
        return EX_FAILURE;
    }
    let (dir, storage) = (dir.to_path_buf(), config.storage.path.clone());
    let key_file = config.storage.backup_key_file.clone();
    let restore = move || {
        let key = key_file
            .as_deref()
            .map(crate::store::backup::BackupKey::read)
            .transpose()?;
        crate::store::backup::restore(&dir, &storage, key.as_ref())
    };
    match tokio::task::spawn_blocking(restore).await {
        Ok(Ok(m)) => {
            let records: u64 = m.trees.iter().map(|t| t.records).sum();
            let _ = writeln!(
                out,
                "restored backup of {} (postdesk {}): {} trees, {records} records into {}",
                m.created_at.to_rfc3339(),
                m.postdesk_version,
                m.trees.len(),
                config.storage.path.display()
            );
            0
        }
        Ok(Err(e)) => {
            let _ = writeln!(err, "postdesk: restore refused: {e}");
            EX_FAILURE
        }
        Err(e) => {
            let _ = writeln!(err, "postdesk: restore failed: {e}");
            EX_FAILURE
        }
    }
}

fn check_config(
    config: &Config,
    path: &Path,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let renderer = match Renderer::load(config.outbound.templates_dir.as_deref())
        .and_then(|r| r.self_test().map(|_| r))
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "postdesk: {e}");
            return EX_CONFIG;
        }
    };
    drop(renderer);
    // Not fatal: the admin is told what to fix.
    for w in config.warnings() {
        let _ = writeln!(err, "postdesk: warning: {w}");
    }
    let regions: Vec<String> = config
        .region
        .iter()
        .map(|r| format!("{} <{}>", r.code, r.address))
        .collect();
    let _ = writeln!(
        out,
        "{}: OK ({} region(s): {}; templates compiled and held to their events' contexts)",
        path.display(),
        regions.len(),
        regions.join(", ")
    );
    0
}

async fn run_daemon(config: Config, path: &Path, err: &mut (dyn Write + Send)) -> i32 {
    let shutdown = tokio_util::sync::CancellationToken::new();
    crate::daemon::cancel_on_signals(shutdown.clone());
    crate::daemon::survive_early_hangup();
    let daemon = match crate::daemon::Daemon::start(config, shutdown) {
        Ok(d) => d,
        Err(e) => {
            // Once, not also through `tracing`: on stderr it is one journal entry at priority 3 (main.rs).
            let _ = writeln!(err, "postdesk: cannot start: {e}");
            return EX_FAILURE;
        }
    };
    tracing::info!("postdesk running");
    // SIGHUP reloads `path`; systemd hears READY=1, STATUS=, WATCHDOG=1 through $NOTIFY_SOCKET.
    match daemon
        .serve(path, crate::notify::Notifier::from_env())
        .await
    {
        Ok(()) => {
            tracing::info!("postdesk stopped");
            0
        }
        Err(e) => {
            tracing::error!("final flush failed: {e}");
            EX_FAILURE
        }
    }
}
