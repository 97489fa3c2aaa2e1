//! How the admin operations print: the human tables and the `--json` shapes.
//!
//! Human output is a readable table; `--json` output uses the names of the JSON contract (README, section
//! *JSON*), which scripts rely on. Printing only: every function here takes what an operation returned.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{CommandError, Due, RegionStats, TicketDetail};
use crate::desk::ticket::{Direction, Message, Ticket};
use crate::outbound::{OutboxItem, OutboxView};
use crate::privacy::EraseSummary;

/// `value` as pretty JSON and a newline.
pub fn print_json<T: Serialize + ?Sized>(
    out: &mut (dyn Write + Send),
    value: &T,
) -> Result<(), CommandError> {
    let text = serde_json::to_string_pretty(value)?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Cut to `n` characters, marking the cut.
pub fn truncate(s: &str, n: usize) -> String {
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

/// `tickets show --json`: the ticket object with its messages and notifications.
#[derive(Serialize)]
pub struct TicketJson<'a> {
    #[serde(flatten)]
    ticket: &'a Ticket,
    messages: &'a [Message],
    /// Automatic mail about this ticket (acknowledgements, status updates), as in `outbox list --json`.
    notifications: Vec<OutboxView<'a>>,
}

impl<'a> TicketJson<'a> {
    pub fn of(detail: &'a TicketDetail) -> Self {
        TicketJson {
            ticket: &detail.ticket,
            messages: &detail.messages,
            notifications: detail.outbox.iter().map(|i| i.view()).collect(),
        }
    }
}

/// `tickets show`: the ticket's fields, each message, then its automatic mail.
pub fn print_ticket(out: &mut (dyn Write + Send), detail: &TicketDetail) {
    let (t, messages, outbox) = (&detail.ticket, &detail.messages, &detail.outbox);
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
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Note => "note",
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

/// `tickets due --json`: `{ticket, kind, due}` per timer.
pub fn due_json(timers: &[Due]) -> Vec<serde_json::Value> {
    timers
        .iter()
        .map(|(id, kind, due)| serde_json::json!({"ticket": id, "kind": kind.as_str(), "due": due}))
        .collect()
}

/// `tickets due`: one line per timer, those past `now` marked.
pub fn print_due(out: &mut (dyn Write + Send), timers: &[Due], now: DateTime<Utc>) {
    let _ = writeln!(out, "{:<20} {:<10} KIND", "DUE (UTC)", "TICKET");
    for (id, kind, due) in timers {
        let overdue = if *due <= now { "  (overdue)" } else { "" };
        let _ = writeln!(
            out,
            "{:<20} {:<10} {}{overdue}",
            due.format("%Y-%m-%d %H:%M:%S"),
            id.to_string(),
            kind.as_str()
        );
    }
    let _ = writeln!(out, "({} timer(s))", timers.len());
}

/// `outbox list`: one line per outgoing mail, with its last error.
pub fn print_outbox(out: &mut (dyn Write + Send), items: &[OutboxItem]) {
    let _ = writeln!(
        out,
        "{:<20} {:<10} {:<16} {:<8} {:>3}  {:<30} SUBJECT",
        "ID", "TICKET", "KIND", "STATUS", "TRY", "TO"
    );
    for i in items {
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

/// `customer erase`: what was erased (`applied`), or what would be.
pub fn print_erasure(out: &mut (dyn Write + Send), s: &EraseSummary, applied: bool) {
    let ids: Vec<String> = s.tickets.iter().map(|t| t.to_string()).collect();
    if !applied {
        let _ = writeln!(
            out,
            "would erase {} ticket(s) ({}), {} message(s), {} outgoing mail(s) ({} queued, to be cancelled)",
            ids.len(),
            ids.join(", "),
            s.messages,
            s.outbox_rows,
            s.cancelled
        );
        return;
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
}

/// `stats`: one line per region, then the retention line if anything was purged.
pub fn print_stats(out: &mut (dyn Write + Send), stats: &[RegionStats]) {
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
    for s in stats {
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
    // Spam is not part of the figures above; how much was set aside is still worth a line.
    for s in stats.iter().filter(|s| s.spam > 0) {
        let _ = writeln!(
            out,
            "{} {} spam ticket(s) set aside (`tickets list --status spam`)",
            s.region, s.spam
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
}
