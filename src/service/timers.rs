//! Changes that do not come in by mail: a due timer ([`Desk::fire_timer`], the scheduler), retention
//! (deleting a closed ticket's data when its timer is due) and an explicit status change
//! ([`Desk::set_status`], the CLI). Each reads the ticket, lets the desk decide, and commits one change.

use crate::store::{Change, Rewrite, Storage, StorageExt, StoreError, Tx};
use chrono::{DateTime, Utc};

use super::ingest::Pending;
use super::{message_ids, Desk, IngestError};
use crate::config::RegionConfig;
use crate::desk::lifecycle::LifecycleError;
use crate::desk::reply::Reply;
use crate::desk::ticket::{Status, Ticket, TicketId, TimerKind};
use crate::desk::{decide, retention, timers};

impl Desk {
    /// Fire a due timer of ticket `id`: carry out what [`timers::on_timer`] decides, or, if the timer no
    /// longer applies, just rewrite the ticket's timers (which drops the stale entry). Returns the number of
    /// mails queued.
    pub fn fire_timer(
        &self,
        id: &TicketId,
        kind: TimerKind,
        now: DateTime<Utc>,
    ) -> Result<usize, IngestError> {
        self.store.write(|tx| {
            let Some(ticket) = tx.ticket(id)? else {
                return Ok(0);
            };
            if kind.is_retention() && self.config.region(&ticket.region).is_some() {
                return self.fire_retention(tx, ticket, kind, now);
            }
            let Some(region) = self.config.region(&ticket.region) else {
                tracing::warn!(ticket = %id, "timer for a region that is no longer configured; dropped");
                let mut t = ticket;
                t.timers.clear();
                tx.commit(&Change {
                    ticket: Some(t),
                    ..Change::default()
                })?;
                return Ok(0);
            };
            let was_breached = ticket.breached;
            let (ticket, replies) = match timers::on_timer(&ticket, kind, region, &self.config, now)
            {
                Some(x) => x,
                None => {
                    let mut t = ticket;
                    timers::reschedule(&mut t, &self.config);
                    (t, Vec::new())
                }
            };
            let breached = ticket.breached && !was_breached;
            let decided = replies.len();
            let queued = self.commit_with_replies(tx, ticket, &replies, region, now)?;
            if queued > 0 || decided > 0 {
                tracing::info!(ticket = %id, timer = kind.as_str(), queued, "timer fired");
            }
            if breached {
                self.telemetry.sla_breach(&region.code);
            }
            Ok(queued)
        })
    }

    /// Carry out a due retention timer with the writer's `tx`. Returns 0: retention sends no mail.
    fn fire_retention(
        &self,
        tx: &dyn Tx,
        mut ticket: Ticket,
        kind: TimerKind,
        now: DateTime<Utc>,
    ) -> Result<usize, IngestError> {
        let id = ticket.id.clone();
        if !retention::due(&ticket, &self.config.retention, kind, now) {
            // No longer applies (reopened, config changed): only the ticket's timers are rewritten.
            timers::reschedule(&mut ticket, &self.config);
            tx.commit(&Change {
                ticket: Some(ticket),
                ..Default::default()
            })?;
            return Ok(0);
        }
        let messages = tx.messages_indexed(&id)?;
        match kind {
            TimerKind::PurgeAttachments => {
                let mut attachments = 0u64;
                let mut rw = Rewrite {
                    id: Some(id.clone()),
                    ..Rewrite::default()
                };
                for (i, m) in &messages {
                    if let Some(stripped) = retention::without_attachments(m) {
                        attachments += m.attachments.len() as u64;
                        rw.messages.push((*i, Some(stripped)));
                    }
                }
                ticket.attachments_purged = true;
                timers::reschedule(&mut ticket, &self.config);
                rw.ticket = Some(ticket);
                rw.counter = Some((format!("retention:attachments:{}", id.region), attachments));
                let removed = tx.rewrite(&rw)?;
                tracing::info!(ticket = %id, attachments, blobs_deleted = removed.blobs, bytes = removed.bytes, "retention: attachments of a closed ticket deleted");
            }
            TimerKind::PurgeTicket => {
                let rows = self.store.outbox_of_ticket(&id)?;
                let rw = Rewrite {
                    id: Some(id.clone()),
                    ticket: None,
                    messages: messages.iter().map(|(i, _)| (*i, None)).collect(),
                    requester_entries: vec![ticket.requester.clone()],
                    dedupe: messages
                        .iter()
                        .map(|(_, m)| (m.message_id.clone(), m.content_hash.clone()))
                        .collect(),
                    message_ids: message_ids(&ticket, messages.iter().map(|(_, m)| m), &rows),
                    outbox: rows.iter().map(|r| (r.id, None)).collect(),
                    // Spam (`[spam] keep`) is counted apart: it is not a closed conversation.
                    counter: Some((format!("{}:{}", purge_counter(ticket.status), id.region), 1)),
                };
                let removed = tx.rewrite(&rw)?;
                tracing::info!(ticket = %id, status = %ticket.status, messages = messages.len(), outbox_rows = rows.len(), blobs_deleted = removed.blobs, bytes = removed.bytes, "retention: ticket deleted");
            }
            _ => {}
        }
        Ok(0)
    }

    /// Change a ticket's status (CLI `tickets set-status`) and queue the status update, atomically. Returns
    /// the number of mails queued, or why the lifecycle refuses the change.
    pub fn set_status(
        &self,
        id: &TicketId,
        status: Status,
        now: DateTime<Utc>,
    ) -> Result<Result<usize, LifecycleError>, IngestError> {
        self.store.write(|tx| {
            let ticket = tx
                .ticket(id)?
                .ok_or_else(|| StoreError::NoTicket(id.clone()))?;
            let Some(region) = self.config.region(&ticket.region) else {
                return Err(StoreError::Conflict(format!(
                    "region {} of {} is no longer configured",
                    ticket.region, ticket.id
                ))
                .into());
            };
            let (ticket, replies) = match decide::set_status(&ticket, status, &self.config, now) {
                Ok(x) => x,
                Err(e) => return Ok(Err(e)),
            };
            let queued = self.commit_with_replies(tx, ticket, &replies, region, now)?;
            Ok(Ok(queued))
        })
    }

    /// Commit `ticket` as decided, with `replies` rendered into outbox rows of the same change (the common
    /// end of a fired timer and an explicit status change). Returns how many mails were queued.
    fn commit_with_replies(
        &self,
        tx: &dyn Tx,
        mut ticket: Ticket,
        replies: &[Reply],
        region: &RegionConfig,
        now: DateTime<Utc>,
    ) -> Result<usize, IngestError> {
        let mut change = Change::default();
        let tally = self.queue_replies(
            tx,
            replies,
            &mut ticket,
            region,
            &mut change,
            &Pending::default(),
            now,
        )?;
        let queued = super::queued(&change);
        change.ticket = Some(ticket);
        tx.commit(&change)?;
        self.count_committed(&change, tally);
        Ok(queued)
    }
}

/// The store counter a ticket deleted by retention counts in: spam apart from closed tickets.
fn purge_counter(status: crate::desk::ticket::Status) -> &'static str {
    match status {
        crate::desk::ticket::Status::Spam => "retention:spam",
        _ => "retention:tickets",
    }
}
