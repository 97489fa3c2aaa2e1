//! The admin operations on an open store, called by both the command line and the control socket.
//!
//! `postdesk tickets list` does the same whether the CLI opened the store itself or a running daemon
//! holds it and receives the request over its socket: both parse what the user asked into an [`Op`] and
//! call [`run`]. Each operation is also a typed function (`tickets`, `ticket`, `set_status`, `stats`, …)
//! returning typed results; [`run`] prints them through [`view`] and turns the outcome into an exit code.
//!
//! [`Op`] is plain data, independent of the clap definitions in `cli`, so a renamed flag changes nothing
//! here. It is also what the control socket carries (inside `control::Request`, with a protocol version):
//! changing its serde shape changes that protocol, which `control`'s wire test pins.

pub mod view;

use crate::store::{Lookup, Storage, StoreError};
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::desk::ticket::{Message, Status, Ticket, TicketId, TimerKind};
use crate::intake::pipe;
use crate::outbound::{OutboxItem, OutboxStatus};
use crate::privacy::{EraseSummary, ExportSummary, PrivacyError};
use crate::service::{Desk, IngestError};
use crate::store::backup::{BackupError, Manifest};

/// Exit code for configuration errors.
pub const EX_CONFIG: i32 = 2;
/// Exit code for other failures.
pub const EX_FAILURE: i32 = 1;

/// One admin operation on the store, as data. Paths are absolute (the caller's working directory is not
/// the daemon's), and defaults are already chosen. Unknown fields are refused, not dropped: a request
/// carrying a field this version does not have must not run without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Store one mail (the operation's input) for a region: `postdesk ingest`.
    Ingest {
        region: String,
        /// The mail's whole size, when the input holds only its first bytes (an oversized mail: the client
        /// reads one byte more than the region stores whole, and counts the rest), for the `oversize`
        /// notice. Left out otherwise, like the filters of `outbox list`: ordinary mail reads the same to
        /// an older daemon.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    TicketsList {
        region: Option<String>,
        status: Option<Status>,
        json: bool,
    },
    TicketsShow {
        id: TicketId,
        json: bool,
    },
    TicketsSetStatus {
        id: TicketId,
        status: Status,
    },
    TicketsDue {
        json: bool,
    },
    /// `outbox list`. The filters were added after protocol version 1 shipped: each is optional and left
    /// out of the request when unset, so a request without filters reads the same to an older daemon, and
    /// one with a filter is refused by it (unknown field) rather than answered unfiltered.
    OutboxList {
        json: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<OutboxStatus>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ticket: Option<TicketId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<String>,
        /// Rows created at or after this time (the CLI turns `--since 2h` into a time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<DateTime<Utc>>,
        /// The newest N rows (after the other filters), newest first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    /// `outbox retry`. `force` (send a mail that was already sent) is left out when false, like the
    /// filters above.
    OutboxRetry {
        id: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    Stats {
        json: bool,
    },
    Backup {
        dir: PathBuf,
    },
    CustomerExport {
        email: String,
        dir: PathBuf,
    },
    CustomerErase {
        email: String,
        yes: bool,
    },
}

/// Why an operation failed. The text is what the CLI prints after `postdesk: `.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("no ticket {0}")]
    NoTicket(TicketId),
    /// The status machine refused the change.
    #[error("{id}: {source}")]
    Lifecycle {
        id: TicketId,
        source: crate::desk::lifecycle::LifecycleError,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Run `op` on `desk`, printing what it shows to `out` and problems to `err`; returns the exit code.
/// `input` is the operation's standard input (the mail, for [`Op::Ingest`]).
///
/// A line that cannot be printed (a closed stdout) does not change the exit code: the operation happened
/// (an MTA must not deliver a stored mail again because nobody read the ticket number).
pub async fn run(
    desk: &Desk,
    op: Op,
    input: &[u8],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> i32 {
    match run_inner(desk, op, input, out, err).await {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "postdesk: {e}");
            EX_FAILURE
        }
    }
}

async fn run_inner(
    desk: &Desk,
    op: Op,
    input: &[u8],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<i32, CommandError> {
    match op {
        Op::Ingest { region, size } => {
            let (code, line) = ingest(desk, &region, input, size).await;
            if code == pipe::EX_OK {
                let _ = writeln!(out, "{line}");
            } else {
                let _ = writeln!(err, "{line}");
            }
            Ok(code)
        }
        Op::TicketsList {
            region,
            status,
            json,
        } => {
            let tickets = tickets(desk, region.as_deref(), status)?;
            if json {
                view::print_json(out, &tickets)?;
            } else {
                view::print_ticket_table(out, &tickets);
            }
            Ok(0)
        }
        Op::TicketsShow { id, json } => {
            let detail = ticket(desk, &id)?;
            if json {
                view::print_json(out, &view::TicketJson::of(&detail))?;
            } else {
                view::print_ticket(out, &detail);
            }
            Ok(0)
        }
        Op::TicketsSetStatus { id, status } => {
            let queued = set_status(desk, &id, status, Utc::now())?;
            let _ = writeln!(out, "{id}: status {status}; {queued} update mail(s) queued");
            Ok(0)
        }
        Op::TicketsDue { json } => {
            let timers = due(desk)?;
            if json {
                view::print_json(out, &view::due_json(&timers))?;
            } else {
                view::print_due(out, &timers, Utc::now());
            }
            Ok(0)
        }
        Op::OutboxList {
            json,
            status,
            ticket,
            kind,
            since,
            limit,
        } => {
            let filter = OutboxFilter {
                status,
                ticket,
                kind,
                since,
                limit,
            };
            let items = outbox_filtered(desk, &filter)?;
            if json {
                let views: Vec<_> = items.iter().map(|i| i.view()).collect();
                view::print_json(out, &views)?;
            } else {
                view::print_outbox(out, &items);
            }
            Ok(0)
        }
        Op::OutboxRetry { id, force } => {
            let item = outbox_retry(desk, id, force)?;
            let _ = writeln!(
                out,
                "outbox {id} ({} for {}) queued again",
                item.kind, item.ticket
            );
            Ok(0)
        }
        Op::Stats { json } => {
            let stats = stats(desk)?;
            if json {
                view::print_json(out, &stats)?;
            } else {
                view::print_stats(out, &stats);
            }
            Ok(0)
        }
        Op::Backup { dir } => {
            let m = backup(desk, &dir)?;
            let records: u64 = m.trees.iter().map(|t| t.records).sum();
            let _ = writeln!(
                out,
                "backup written to {}: {} trees, {records} records",
                dir.display(),
                m.trees.len()
            );
            Ok(0)
        }
        Op::CustomerExport { email, dir } => {
            let s = customer_export(desk, &email, &dir)?;
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
        Op::CustomerErase { email, yes } => {
            let s = customer_erase(desk, &email, yes)?;
            view::print_erasure(out, &s, yes);
            if !yes {
                let _ = writeln!(
                    err,
                    "postdesk: nothing erased: add --yes to erase (it cannot be undone)"
                );
                return Ok(EX_FAILURE);
            }
            Ok(0)
        }
    }
}

/// Store one mail for `region` (the MTA pipe); returns the exit code and the line to print. `size`: the
/// whole mail's, when `input` is only its start ([`Op::Ingest`]).
pub async fn ingest(desk: &Desk, region: &str, input: &[u8], size: Option<u64>) -> (i32, String) {
    pipe::deliver(desk, region, input, size).await
}

/// Tickets, optionally of one region and one status. Without a status, spam is left out (`--status spam`
/// lists it).
pub fn tickets(
    desk: &Desk,
    region: Option<&str>,
    status: Option<Status>,
) -> Result<Vec<Ticket>, CommandError> {
    let mut tickets = desk.store.tickets(region, status)?;
    if status.is_none() {
        tickets.retain(|t| t.status != Status::Spam);
    }
    Ok(tickets)
}

/// One ticket with what `tickets show` prints of it.
#[derive(Debug)]
pub struct TicketDetail {
    pub ticket: Ticket,
    pub messages: Vec<Message>,
    /// Automatic mail about this ticket (acknowledgements, status updates).
    pub outbox: Vec<OutboxItem>,
}

/// The ticket `id` with its messages and its outgoing mail.
pub fn ticket(desk: &Desk, id: &TicketId) -> Result<TicketDetail, CommandError> {
    let ticket = desk
        .store
        .ticket(id)?
        .ok_or_else(|| CommandError::NoTicket(id.clone()))?;
    Ok(TicketDetail {
        ticket,
        messages: desk.store.messages(id)?,
        outbox: desk.store.outbox_of_ticket(id)?,
    })
}

/// Change a ticket's status; returns how many update mails were queued with the change.
pub fn set_status(
    desk: &Desk,
    id: &TicketId,
    status: Status,
    now: DateTime<Utc>,
) -> Result<usize, CommandError> {
    desk.set_status(id, status, now)?
        .map_err(|source| CommandError::Lifecycle {
            id: id.clone(),
            source,
        })
}

/// One pending timer: the ticket, what fires, when.
pub type Due = (TicketId, TimerKind, DateTime<Utc>);

/// Every pending timer, soonest first.
pub fn due(desk: &Desk) -> Result<Vec<Due>, CommandError> {
    Ok(desk.store.timers_all()?)
}

/// Every outbox row.
pub fn outbox(desk: &Desk) -> Result<Vec<OutboxItem>, CommandError> {
    Ok(desk.store.outbox_all()?)
}

/// Which outbox rows `outbox list` shows; every filter set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    pub status: Option<OutboxStatus>,
    pub ticket: Option<TicketId>,
    /// The template event (`ack`, `agent_notify`, …).
    pub kind: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// The newest N matching rows, newest first. Without it, every matching row, oldest first.
    pub limit: Option<usize>,
}

impl OutboxFilter {
    pub fn matches(&self, item: &OutboxItem) -> bool {
        self.status.is_none_or(|s| item.status == s)
            && self.ticket.as_ref().is_none_or(|t| &item.ticket == t)
            && self.kind.as_deref().is_none_or(|k| item.kind == k)
            && self.since.is_none_or(|t| item.created_at >= t)
    }
}

/// The outbox rows `filter` selects. A ticket filter reads that ticket's rows only.
pub fn outbox_filtered(
    desk: &Desk,
    filter: &OutboxFilter,
) -> Result<Vec<OutboxItem>, CommandError> {
    let rows = match &filter.ticket {
        Some(id) => desk.store.outbox_of_ticket(id)?,
        None => desk.store.outbox_all()?,
    };
    let mut rows: Vec<OutboxItem> = rows.into_iter().filter(|i| filter.matches(i)).collect();
    if let Some(n) = filter.limit {
        // Row ids grow with time: the newest are the highest.
        rows.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        rows.truncate(n);
    }
    Ok(rows)
}

/// Queue outbox row `id` again now; returns the row. A mail already sent is refused unless `force`.
pub fn outbox_retry(desk: &Desk, id: u64, force: bool) -> Result<OutboxItem, CommandError> {
    Ok(desk.retry_outbox(id, force)?)
}

/// One region's line of `postdesk stats` (and its `--json` object).
#[derive(Debug, Serialize)]
pub struct RegionStats {
    pub region: String,
    /// Tickets by status, spam left out (it is counted in `spam`).
    pub by_status: std::collections::BTreeMap<&'static str, usize>,
    /// Tickets set aside as spam (not counted anywhere else: breaches, ratings, response times).
    pub spam: usize,
    pub quarantined: usize,
    /// Automatic mails the per-recipient rate limits held back (a sign of a mail loop).
    pub suppressed_auto_mail: u64,
    /// Tickets that missed their first-response target.
    pub breaches: usize,
    /// Satisfaction ratings: count and average (1–5), overall and per month.
    pub satisfaction: crate::stats::Satisfaction,
    pub satisfaction_by_month: std::collections::BTreeMap<String, crate::stats::Satisfaction>,
    /// Minutes from arrival to an agent's first answer.
    pub first_response: crate::stats::ResponseTimes,
    /// Closed tickets deleted by `[retention] closed_tickets_after`.
    pub retention_purged_tickets: u64,
    /// Attachments deleted by `[retention] closed_attachments_after`.
    pub retention_removed_attachments: u64,
    /// Spam tickets deleted after `[spam] keep`.
    pub retention_purged_spam: u64,
}

/// Per configured region: tickets by status, quarantined mail, held-back mail, breaches, satisfaction,
/// first-response times and retention.
pub fn stats(desk: &Desk) -> Result<Vec<RegionStats>, CommandError> {
    let counts = desk.store.counts()?;
    let quarantined = desk.store.quarantined()?;
    let tickets = desk.store.tickets(None, None)?;
    Ok(desk
        .config
        .region
        .iter()
        .map(|r| {
            let mine = || {
                tickets
                    .iter()
                    .filter(|t| t.region == r.code && t.status != Status::Spam)
            };
            let count = |s: &Status| -> usize {
                counts
                    .iter()
                    .filter(|(rc, st, _)| *rc == r.code && st == s)
                    .map(|c| c.2)
                    .sum()
            };
            let (satisfaction, satisfaction_by_month) = crate::stats::satisfaction(mine());
            RegionStats {
                region: r.code.clone(),
                by_status: Status::ALL
                    .iter()
                    .filter(|s| **s != Status::Spam)
                    .map(|s| (s.as_str(), count(s)))
                    .collect(),
                spam: count(&Status::Spam),
                quarantined: quarantined.iter().filter(|q| q.region == r.code).count(),
                // Counters are informative: a failed read shows 0 rather than failing the command.
                suppressed_auto_mail: desk.store.suppressed(&r.code).unwrap_or(0),
                breaches: mine().filter(|t| t.breached).count(),
                satisfaction,
                satisfaction_by_month,
                first_response: crate::stats::first_response(mine()),
                retention_purged_tickets: desk
                    .store
                    .counter(&format!("retention:tickets:{}", r.code))
                    .unwrap_or(0),
                retention_removed_attachments: desk
                    .store
                    .counter(&format!("retention:attachments:{}", r.code))
                    .unwrap_or(0),
                retention_purged_spam: desk
                    .store
                    .counter(&format!("retention:spam:{}", r.code))
                    .unwrap_or(0),
            }
        })
        .collect())
}

/// Write a consistent snapshot of the store into `dir` (new or empty).
pub fn backup(desk: &Desk, dir: &std::path::Path) -> Result<Manifest, CommandError> {
    let store = desk.store.clone();
    let key = match &desk.config.storage.backup_key_file {
        Some(path) => Some(crate::store::backup::BackupKey::read(path)?),
        None => None,
    };
    Ok(crate::service::blocking(|| {
        store.backup(dir, key.as_ref())
    })?)
}

/// Write everything stored about `email` into `dir` (new or empty).
pub fn customer_export(
    desk: &Desk,
    email: &str,
    dir: &std::path::Path,
) -> Result<ExportSummary, CommandError> {
    Ok(crate::service::blocking(|| {
        desk.export_customer(email, dir)
    })?)
}

/// Erase `email` (`yes`), or only tell what would be erased.
pub fn customer_erase(desk: &Desk, email: &str, yes: bool) -> Result<EraseSummary, CommandError> {
    Ok(crate::service::blocking(|| {
        desk.erase_customer(email, yes)
    })?)
}
