//! The `postdesk` command line: argument definitions (clap) and what each command prints.
//!
//! Human output is a readable table; `--json` output uses the names of DESIGN.md's JSON contract.
//! Every command returns an exit code instead of exiting, so tests can drive it in-process.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde::{Deserialize, Serialize};

use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::desk::ticket::{Message, Status, Ticket, TicketId};
use crate::intake::{pipe, Desk};
use crate::outbound::render::Renderer;
use crate::store::{Lookup, Storage, Store};

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

/// How log lines are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand, Serialize, Deserialize)]
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

#[derive(Debug, Subcommand, Serialize, Deserialize)]
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

#[derive(Debug, Subcommand, Serialize, Deserialize)]
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

#[derive(Debug, Subcommand, Serialize, Deserialize)]
pub enum OutboxCommand {
    /// List outgoing mail with its delivery state.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Queue a mail again now (after `failed`, or to skip a retry wait).
    Retry { id: u64 },
}

/// Exit code for configuration errors.
pub const EX_CONFIG: i32 = 2;
/// Exit code for other failures.
pub const EX_FAILURE: i32 = 1;

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
        mut command => {
            if let Err(e) = resolve_paths(&mut command) {
                let _ = writeln!(err, "postdesk: {e}");
                return EX_FAILURE;
            }
            let is_ingest = matches!(command, Command::Ingest { .. });
            let input = if is_ingest {
                match pipe::read_input(&mut std::io::stdin().lock()) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = writeln!(err, "postdesk: cannot read stdin: {e}");
                        return pipe::EX_TEMPFAIL;
                    }
                }
            } else {
                Vec::new()
            };
            // A running daemon holds the store: let it execute the command. A daemon that is starting holds
            // the store before its socket answers, so both are tried until one of them works.
            let path = crate::control::socket_path(&config);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
            let store = loop {
                match crate::control::forward(&path, &command, &input).await {
                    Some(Ok(response)) => {
                        let _ = out.write_all(response.stdout.as_bytes());
                        let _ = err.write_all(response.stderr.as_bytes());
                        return response.code;
                    }
                    Some(Err(e)) => {
                        let _ = writeln!(err, "postdesk: the running daemon did not answer: {e}");
                        return if is_ingest {
                            pipe::EX_TEMPFAIL
                        } else {
                            EX_FAILURE
                        };
                    }
                    None => {}
                }
                match Store::open(&config.storage.path) {
                    Ok(s) => break s,
                    Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(e) => {
                        let _ = writeln!(err, "postdesk: {e}");
                        return if is_ingest {
                            pipe::EX_TEMPFAIL
                        } else {
                            EX_FAILURE
                        };
                    }
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
            let code = with_desk(&desk, command, &input, out, err).await;
            if let Err(e) = desk.store.flush_async().await {
                let _ = writeln!(err, "postdesk: {e}");
                return EX_FAILURE;
            }
            code
        }
    }
}

/// Paths in a command are the caller's: made absolute (and the export's default chosen) here, before the
/// command may travel to a daemon with another working directory.
fn resolve_paths(command: &mut Command) -> std::io::Result<()> {
    let cwd = std::env::current_dir()?;
    match command {
        Command::Backup { dir } => *dir = cwd.join(&*dir),
        Command::Customer(CustomerCommand::Export { email, out }) => {
            let dir = out.take().unwrap_or_else(|| {
                PathBuf::from(format!(
                    "postdesk-export-{}-{}",
                    crate::mail::parse::safe_filename(&email.trim().to_ascii_lowercase()),
                    Utc::now().format("%Y-%m-%d")
                ))
            });
            *out = Some(cwd.join(dir));
        }
        _ => {}
    }
    Ok(())
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
    match tokio::task::spawn_blocking(move || crate::store::backup::restore(&dir, &storage)).await {
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
    let regions: Vec<String> = config
        .region
        .iter()
        .map(|r| format!("{} <{}>", r.code, r.address))
        .collect();
    let _ = writeln!(
        out,
        "{}: OK ({} region(s): {}; templates compiled)",
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
            let _ = writeln!(err, "postdesk: cannot start: {e}");
            tracing::error!("cannot start: {e}");
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

/// Commands that work on an open store.
/// `input` is the command's standard input (the mail, for `ingest`).
pub async fn with_desk(
    desk: &Desk,
    command: Command,
    input: &[u8],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    let result: Result<i32, String> = async {
        match command {
            Command::Ingest { region } => {
                let (code, line) = pipe::deliver(desk, &region, input).await;
                if code == 0 {
                    let _ = writeln!(out, "{line}");
                } else {
                    let _ = writeln!(err, "{line}");
                }
                Ok(code)
            }
            Command::Tickets(TicketsCommand::List {
                region,
                status,
                json,
            }) => {
                let tickets = desk
                    .store
                    .tickets(region.as_deref(), status)
                    .map_err(|e| e.to_string())?;
                if json {
                    print_json(out, &tickets)?;
                } else {
                    print_ticket_table(out, &tickets);
                }
                Ok(0)
            }
            Command::Tickets(TicketsCommand::Show { id, json }) => {
                let Some(ticket) = desk.store.ticket(&id).map_err(|e| e.to_string())? else {
                    let _ = writeln!(err, "postdesk: no ticket {id}");
                    return Ok(EX_FAILURE);
                };
                let messages = desk.store.messages(&id).map_err(|e| e.to_string())?;
                let outbox = desk
                    .store
                    .outbox_of_ticket(&id)
                    .map_err(|e| e.to_string())?;
                if json {
                    let notifications: Vec<_> = outbox.iter().map(|i| i.view()).collect();
                    print_json(
                        out,
                        &TicketWithMessages {
                            ticket: &ticket,
                            messages: &messages,
                            notifications,
                        },
                    )?;
                } else {
                    print_ticket(out, &ticket, &messages, &outbox);
                }
                Ok(0)
            }
            Command::Tickets(TicketsCommand::SetStatus { id, status }) => {
                match desk
                    .set_status(&id, status, Utc::now())
                    .map_err(|e| e.to_string())?
                {
                    Ok(queued) => {
                        let _ =
                            writeln!(out, "{id}: status {status}; {queued} update mail(s) queued");
                        Ok(0)
                    }
                    Err(e) => {
                        let _ = writeln!(err, "postdesk: {id}: {e}");
                        Ok(EX_FAILURE)
                    }
                }
            }
            Command::Tickets(TicketsCommand::Due { json }) => {
                let timers = desk.store.timers_all().map_err(|e| e.to_string())?;
                if json {
                    let rows: Vec<serde_json::Value> = timers
                        .iter()
                        .map(|(id, kind, due)| serde_json::json!({"ticket": id, "kind": kind.as_str(), "due": due}))
                        .collect();
                    print_json(out, &rows)?;
                } else {
                    let _ = writeln!(out, "{:<20} {:<10} KIND", "DUE (UTC)", "TICKET");
                    for (id, kind, due) in &timers {
                        let overdue = if *due <= Utc::now() { "  (overdue)" } else { "" };
                        let _ = writeln!(out, "{:<20} {:<10} {}{overdue}", due.format("%Y-%m-%d %H:%M:%S"), id.to_string(), kind.as_str());
                    }
                    let _ = writeln!(out, "({} timer(s))", timers.len());
                }
                Ok(0)
            }
            Command::Outbox(OutboxCommand::List { json }) => {
                let items = desk.store.outbox_all().map_err(|e| e.to_string())?;
                if json {
                    let views: Vec<_> = items.iter().map(|i| i.view()).collect();
                    print_json(out, &views)?;
                } else {
                    let _ = writeln!(
                        out,
                        "{:<20} {:<10} {:<16} {:<8} {:>3}  {:<30} SUBJECT",
                        "ID", "TICKET", "KIND", "STATUS", "TRY", "TO"
                    );
                    for i in &items {
                        let _ = writeln!(
                            out,
                            "{:<20} {:<10} {:<16} {:<8} {:>3}  {:<30} {}{}",
                            i.id,
                            i.ticket.to_string(),
                            i.kind,
                            i.status.as_str(),
                            i.attempts,
                            truncate(&i.to.join(","), 30),
                            truncate(&i.subject, 50),
                            i.last_error
                                .as_deref()
                                .map(|e| format!("  [{}]", truncate(e, 80)))
                                .unwrap_or_default()
                        );
                    }
                }
                Ok(0)
            }
            Command::Outbox(OutboxCommand::Retry { id }) => {
                let item = desk.store.outbox_retry(id).map_err(|e| e.to_string())?;
                let _ = writeln!(
                    out,
                    "outbox {id} ({} for {}) queued again",
                    item.kind, item.ticket
                );
                Ok(0)
            }
            Command::Stats { json } => {
                let counts = desk.store.counts().map_err(|e| e.to_string())?;
                let quarantined = desk.store.quarantined().map_err(|e| e.to_string())?;
                let tickets = desk.store.tickets(None, None).map_err(|e| e.to_string())?;
                print_stats(out, desk, &tickets, &counts, &quarantined, json)?;
                Ok(0)
            }
            Command::Backup { dir } => {
                let store = desk.store.clone();
                let m = crate::intake::blocking(|| store.backup(&dir)).map_err(|e| e.to_string())?;
                let records: u64 = m.trees.iter().map(|t| t.records).sum();
                let _ = writeln!(
                    out,
                    "backup written to {}: {} trees, {records} records",
                    dir.display(),
                    m.trees.len()
                );
                Ok(0)
            }
            Command::Customer(CustomerCommand::Export { email, out: dir }) => {
                let Some(dir) = dir else {
                    return Err("no export directory".into());
                };
                let s = crate::intake::blocking(|| desk.export_customer(&email, &dir))
                    .map_err(|e| e.to_string())?;
                let _ = writeln!(
                    out,
                    "exported {} ticket(s), {} message(s), {} attachment(s), {} outgoing mail(s) to {}",
                    s.tickets,
                    s.messages,
                    s.attachments,
                    s.outbox_rows,
                    dir.display()
                );
                Ok(0)
            }
            Command::Customer(CustomerCommand::Erase { email, yes }) => {
                let s = crate::intake::blocking(|| desk.erase_customer(&email, yes))
                    .map_err(|e| e.to_string())?;
                let ids: Vec<String> = s.tickets.iter().map(|t| t.to_string()).collect();
                if !yes {
                    let _ = writeln!(
                        out,
                        "would erase {} ticket(s) ({}), {} message(s), {} outgoing mail(s) ({} queued, to be cancelled)",
                        ids.len(),
                        ids.join(", "),
                        s.messages,
                        s.outbox_rows,
                        s.cancelled
                    );
                    let _ = writeln!(err, "postdesk: nothing erased: add --yes to erase (it cannot be undone)");
                    return Ok(EX_FAILURE);
                }
                let _ = writeln!(
                    out,
                    "erased {} ticket(s) ({}): {} message(s), {} outgoing mail(s) ({} cancelled), {} stored file(s) and {} quarantined input(s) deleted",
                    ids.len(),
                    ids.join(", "),
                    s.messages,
                    s.outbox_rows,
                    s.cancelled,
                    s.blobs,
                    s.quarantined
                );
                Ok(0)
            }
            Command::Restore { .. } => {
                let _ = writeln!(err, "postdesk: restore runs with the daemon stopped (systemctl stop postdesk)");
                Ok(EX_FAILURE)
            }
            Command::Run | Command::CheckConfig | Command::Demo { .. } => Ok(0),
        }
    }
    .await;
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "postdesk: {e}");
            EX_FAILURE
        }
    }
}

#[derive(Serialize)]
struct TicketWithMessages<'a> {
    #[serde(flatten)]
    ticket: &'a Ticket,
    messages: &'a [Message],
    /// Automatic mail about this ticket (acknowledgements, status updates), as in `outbox list --json`.
    notifications: Vec<crate::outbound::OutboxView<'a>>,
}

fn print_json<T: Serialize + ?Sized>(
    out: &mut (dyn Write + Send),
    value: &T,
) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    writeln!(out, "{text}").map_err(|e| e.to_string())
}

/// Cut to `n` characters, marking the cut.
fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn short_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// The human table of `tickets list`.
pub fn print_ticket_table(out: &mut (dyn Write + Send), tickets: &[Ticket]) {
    let _ = writeln!(
        out,
        "{:<10} {:<9} {:<8} {:<16} {:<30} SUBJECT",
        "ID", "STATUS", "PRIORITY", "UPDATED (UTC)", "REQUESTER"
    );
    for t in tickets {
        let _ = writeln!(
            out,
            "{:<10} {:<9} {:<8} {:<16} {:<30} {}",
            t.id.to_string(),
            t.status.as_str(),
            t.priority.as_str(),
            short_time(t.updated_at),
            truncate(&t.requester, 30),
            truncate(&t.subject, 60)
        );
    }
    let _ = writeln!(out, "({} ticket(s))", tickets.len());
}

fn print_ticket(
    out: &mut (dyn Write + Send),
    t: &Ticket,
    messages: &[Message],
    outbox: &[crate::outbound::OutboxItem],
) {
    let _ = writeln!(out, "{}  {}", t.id, t.subject);
    let _ = writeln!(
        out,
        "status {}  priority {}  category {}  locale {}",
        t.status, t.priority, t.category, t.locale
    );
    let _ = writeln!(
        out,
        "requester {}{}",
        t.requester,
        if t.requester_name.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.requester_name)
        }
    );
    if !t.participants.is_empty() {
        let _ = writeln!(out, "participants {}", t.participants.join(", "));
    }
    if !t.links.is_empty() {
        let _ = writeln!(
            out,
            "linked {}",
            t.links
                .iter()
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let _ = writeln!(
        out,
        "created {}  updated {}",
        t.created_at.to_rfc3339(),
        t.updated_at.to_rfc3339()
    );
    for (i, m) in messages.iter().enumerate() {
        let dir = match m.direction {
            crate::desk::ticket::Direction::In => "in",
            crate::desk::ticket::Direction::Out => "out",
            crate::desk::ticket::Direction::Note => "note",
        };
        let _ = writeln!(
            out,
            "\n--- #{} {dir} {} from {} to {}",
            i + 1,
            m.date.to_rfc3339(),
            m.from,
            m.to.join(", ")
        );
        let _ = writeln!(out, "Subject: {}", m.subject);
        if let Some(a) = &m.auto {
            let _ = writeln!(out, "(automatic mail: {a})");
        }
        for d in &m.damage {
            let _ = writeln!(out, "(note: {d})");
        }
        for a in &m.attachments {
            let _ = writeln!(
                out,
                "[attachment] {} ({}, {} bytes)",
                a.filename, a.content_type, a.size
            );
        }
        let _ = writeln!(out, "\n{}", m.text.trim_end());
    }
    if !outbox.is_empty() {
        let _ = writeln!(out, "\n--- automatic mail");
        for i in outbox {
            let _ = writeln!(
                out,
                "{} {:<15} {:<7} to {}  {}",
                short_time(i.created_at),
                i.kind,
                i.status.as_str(),
                i.to.join(", "),
                i.subject
            );
        }
    }
}

#[derive(Serialize)]
struct RegionStats {
    region: String,
    by_status: std::collections::BTreeMap<&'static str, usize>,
    quarantined: usize,
    /// Automatic mails the per-recipient rate limits held back (a sign of a mail loop).
    suppressed_auto_mail: u64,
    /// Tickets that missed their first-response target.
    breaches: usize,
    /// Satisfaction ratings: count and average (1–5), overall and per month.
    satisfaction: crate::stats::Satisfaction,
    satisfaction_by_month: std::collections::BTreeMap<String, crate::stats::Satisfaction>,
    /// Minutes from arrival to an agent's first answer.
    first_response: crate::stats::ResponseTimes,
    /// Closed tickets deleted by `[retention] closed_tickets_after`.
    retention_purged_tickets: u64,
    /// Attachments deleted by `[retention] closed_attachments_after`.
    retention_removed_attachments: u64,
}

fn print_stats(
    out: &mut (dyn Write + Send),
    desk: &Desk,
    tickets: &[Ticket],
    counts: &[(String, Status, usize)],
    quarantined: &[crate::store::Quarantined],
    json: bool,
) -> Result<(), String> {
    let stats: Vec<RegionStats> = desk
        .config
        .region
        .iter()
        .map(|r| RegionStats {
            region: r.code.clone(),
            by_status: Status::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str(),
                        counts
                            .iter()
                            .filter(|(rc, st, _)| *rc == r.code && st == s)
                            .map(|c| c.2)
                            .sum(),
                    )
                })
                .collect(),
            quarantined: quarantined.iter().filter(|q| q.region == r.code).count(),
            suppressed_auto_mail: desk.store.suppressed(&r.code).unwrap_or(0),
            breaches: tickets
                .iter()
                .filter(|t| t.region == r.code && t.breached)
                .count(),
            satisfaction: crate::stats::satisfaction(tickets.iter().filter(|t| t.region == r.code))
                .0,
            satisfaction_by_month: crate::stats::satisfaction(
                tickets.iter().filter(|t| t.region == r.code),
            )
            .1,
            first_response: crate::stats::first_response(
                tickets.iter().filter(|t| t.region == r.code),
            ),
            retention_purged_tickets: desk
                .store
                .counter(&format!("retention:tickets:{}", r.code))
                .unwrap_or(0),
            retention_removed_attachments: desk
                .store
                .counter(&format!("retention:attachments:{}", r.code))
                .unwrap_or(0),
        })
        .collect();
    if json {
        return print_json(out, &stats);
    }
    let _ = writeln!(
        out,
        "{:<8} {:>5} {:>5} {:>8} {:>9} {:>7} {:>12} {:>11} {:>9} {:>12} {:>17}",
        "REGION",
        "NEW",
        "OPEN",
        "PENDING",
        "RESOLVED",
        "CLOSED",
        "QUARANTINED",
        "HELD BACK",
        "BREACHES",
        "SATISFACTION",
        "1ST REPLY p50/p90"
    );
    for s in &stats {
        let c = |k: &str| s.by_status.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>5} {:>8} {:>9} {:>7} {:>12} {:>11} {:>9} {:>12} {:>17}",
            s.region,
            c("new"),
            c("open"),
            c("pending"),
            c("resolved"),
            c("closed"),
            s.quarantined,
            s.suppressed_auto_mail,
            s.breaches,
            s.satisfaction
                .average
                .map(|a| format!("{a:.1} ({})", s.satisfaction.ratings))
                .unwrap_or_else(|| "-".into()),
            match (
                s.first_response.median_minutes,
                s.first_response.p90_minutes
            ) {
                (Some(m), Some(p)) => format!("{m}/{p} min"),
                _ => "-".into(),
            }
        );
    }
    let retention: Vec<String> = stats
        .iter()
        .filter(|s| s.retention_purged_tickets + s.retention_removed_attachments > 0)
        .map(|s| {
            format!(
                "{} {} ticket(s) purged, {} attachment(s) removed",
                s.region, s.retention_purged_tickets, s.retention_removed_attachments
            )
        })
        .collect();
    if !retention.is_empty() {
        let _ = writeln!(out, "retention: {}", retention.join("; "));
    }
    Ok(())
}
