//! Retention: how long a closed ticket's data is kept (`[retention]`), and a spam ticket (`[spam] keep`).
//!
//! Two deadlines count from the moment a ticket was closed: `closed_attachments_after` deletes its
//! attachments (the conversation stays readable), `closed_tickets_after` deletes the whole ticket. Both are
//! ordinary timers ([`TimerKind::PurgeAttachments`], [`TimerKind::PurgeTicket`]) in the ticket's timer list,
//! so the scheduler still reads only what is due. Like every timer, one that no longer applies when it fires
//! (the ticket was reopened, the config changed) does nothing: [`schedule`] of the ticket's current state
//! is the only truth. Deleting needs the store, so `Desk::fire_timer` carries the deletion out; what is
//! decided here is pure.

use chrono::{DateTime, Duration, Utc};

use super::ticket::{Message, Status, Ticket, Timer, TimerKind};
use crate::config::RetentionConfig;

fn dur(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// The retention timers a ticket in its current state should have.
pub fn schedule(ticket: &Ticket, retention: &RetentionConfig) -> Vec<Timer> {
    let mut out = Vec::new();
    if ticket.status == Status::Spam {
        // Spam is kept for a while (an agent may release a false positive), then deleted whole.
        let since = ticket.status_since.unwrap_or(ticket.updated_at);
        if let Some(after) = retention.spam_after {
            out.extend(since.checked_add_signed(dur(after.0)).map(|due| Timer {
                kind: TimerKind::PurgeTicket,
                due,
            }));
        }
        return out;
    }
    if ticket.status != Status::Closed {
        return out;
    }
    let closed = ticket.status_since.unwrap_or(ticket.updated_at);
    let at = |d: std::time::Duration| closed.checked_add_signed(dur(d));
    if let Some(after) = retention.closed_attachments_after {
        if !ticket.attachments_purged {
            out.extend(at(after.0).map(|due| Timer {
                kind: TimerKind::PurgeAttachments,
                due,
            }));
        }
    }
    if let Some(after) = retention.closed_tickets_after {
        out.extend(at(after.0).map(|due| Timer {
            kind: TimerKind::PurgeTicket,
            due,
        }));
    }
    out
}

/// Whether a retention timer of `kind` still applies to `ticket` at `now`.
pub fn due(
    ticket: &Ticket,
    retention: &RetentionConfig,
    kind: TimerKind,
    now: DateTime<Utc>,
) -> bool {
    schedule(ticket, retention)
        .iter()
        .any(|t| t.kind == kind && t.due <= now)
}

/// The blobs (attachments, and the raw mail kept for damaged mail) a message refers to.
pub fn blobs_of(message: &Message) -> Vec<String> {
    message
        .attachments
        .iter()
        .map(|a| a.sha256.clone())
        .chain(message.raw_sha256.clone())
        .collect()
}

/// A message without its attachments and its raw copy (which holds the attachments too). Returns `None`
/// when there was nothing to remove.
pub fn without_attachments(message: &Message) -> Option<Message> {
    if message.attachments.is_empty() && message.raw_sha256.is_none() {
        return None;
    }
    let mut m = message.clone();
    m.attachments.clear();
    m.raw_sha256 = None;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HumanDuration;

    fn closed_at(at: DateTime<Utc>) -> Ticket {
        Ticket::sample("JP-1000")
            .status(Status::Closed)
            .created(at)
            .build()
    }

    fn retention(attachments: u64, tickets: u64) -> RetentionConfig {
        RetentionConfig {
            closed_attachments_after: Some(HumanDuration(std::time::Duration::from_secs(
                attachments,
            ))),
            closed_tickets_after: Some(HumanDuration(std::time::Duration::from_secs(tickets))),
            spam_after: None,
        }
    }

    #[test]
    fn closed_tickets_get_both_timers_others_none() {
        let t0 = Utc::now();
        let mut t = closed_at(t0);
        let r = retention(90 * 86400, 3 * 365 * 86400);
        assert_eq!(
            schedule(&t, &r),
            vec![
                Timer {
                    kind: TimerKind::PurgeAttachments,
                    due: t0 + Duration::days(90)
                },
                Timer {
                    kind: TimerKind::PurgeTicket,
                    due: t0 + Duration::days(3 * 365)
                }
            ]
        );
        assert!(schedule(&t, &RetentionConfig::default()).is_empty());
        assert!(!due(
            &t,
            &r,
            TimerKind::PurgeAttachments,
            t0 + Duration::days(89)
        ));
        assert!(due(
            &t,
            &r,
            TimerKind::PurgeAttachments,
            t0 + Duration::days(90)
        ));
        t.attachments_purged = true;
        assert_eq!(schedule(&t, &r).len(), 1);
        // Reopened: nothing is deleted, and a new close starts the clocks again.
        t.change_status(Status::Open, t0 + Duration::days(1));
        assert!(schedule(&t, &r).is_empty());
        assert!(!t.attachments_purged);
        assert!(!due(
            &t,
            &r,
            TimerKind::PurgeTicket,
            t0 + Duration::days(4000)
        ));
    }

    #[test]
    fn absurd_durations_do_not_overflow() {
        let t = closed_at(Utc::now());
        let r = retention(u64::MAX / 2, u64::MAX / 2);
        let _ = schedule(&t, &r);
    }
}
