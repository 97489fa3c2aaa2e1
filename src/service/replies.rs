//! Replies become outbox rows of the change that caused them, within the loop protection of their audience.
//!
//! - Automatic mail to customers ([`Audience::Customer`]) is bounded per recipient by
//!   `[outbound.rate_limit]` ([`limit::allow`]): what a loop with a customer's auto-responder cannot get
//!   past. What is held back is logged (recipient and kind) and counted in `postdesk stats`.
//! - Staff mail ([`Audience::Staff`]) is not: a busy hour tells the agents of every ticket. The desk
//!   recognises an auto-responder on the staff side; the staff breaker (`[outbound] staff_per_hour`,
//!   [`limit::allow_staff`]) only trips in a loop, with an ERROR naming recipient and kind, logged once an
//!   hour per address (the trip is recorded in the store's automatic-mail log, so a one-shot `postdesk
//!   ingest` per mail logs it once too) and counted in `postdesk_staff_mail_held_back_total`.
//! - An agent's answer is a person writing: no limit applies to it.
//!
//! A template that fails at run time does not refuse the change: the row is stored `failed`, with the
//! reason, the admin is told (ERROR) and it is counted; [`Desk::retry_outbox`] renders it once the template
//! is fixed.

use crate::store::{Change, Lookup, Storage, StorageExt, StoreError};
use chrono::{DateTime, Utc};

use super::ingest::Pending;
use super::{Desk, IngestError, Tally};
use crate::config::RegionConfig;
use crate::desk::decide::remember_thread_id;
use crate::desk::reply::{Audience, Reply};
use crate::desk::ticket::Ticket;
use crate::outbound::{self, limit, OutboxItem};

/// The automatic-mail log entry that records a trip of the staff breaker for `recipient` (a space never
/// occurs in a stored address, so it meets no real recipient's entries).
fn breaker_mark(recipient: &str) -> String {
    format!("staff-breaker {recipient}")
}

impl Desk {
    /// Render `replies` into outbox rows of `change`, within the loop protections of their audience (see
    /// the module docs). Returns what to count once the change is committed.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn queue_replies(
        &self,
        tx: &dyn Lookup,
        replies: &[Reply],
        ticket: &mut Ticket,
        region: &RegionConfig,
        change: &mut Change,
        pending: &Pending,
        now: DateTime<Utc>,
    ) -> Result<Tally, StoreError> {
        let mut tally = Tally::default();
        for reply in replies {
            let event = reply.event();
            let allowed = if !event.is_automatic() {
                reply.to.clone()
            } else {
                match reply.audience() {
                    Audience::Customer => {
                        self.customer_limits(tx, reply, ticket, change, pending, now)?
                    }
                    Audience::Staff => {
                        self.staff_breaker(tx, reply, ticket, change, pending, now, &mut tally)?
                    }
                }
            };
            if allowed.is_empty() {
                continue;
            }
            let mut reply = reply.clone();
            reply.to = allowed;
            let id = self.store.generate_id()?;
            let item = match outbound::compose(&reply, ticket, region, &self.composer, id, now) {
                Ok(item) => {
                    remember_thread_id(ticket, &item.message_id);
                    if event.is_automatic() {
                        for to in &item.to {
                            change.auto_log.push((to.clone(), now, item.id));
                        }
                    }
                    item
                }
                Err(failed) => {
                    tally.render_failures += 1;
                    tracing::error!(
                        ticket = %ticket.id, kind = %event, outbox = id,
                        "a template failed at run time: {}. The ticket is stored and the mail recorded as failed \
                         (`postdesk outbox list`): fix the template, check it with `postdesk check-config`, reload \
                         the daemon, then `postdesk outbox retry {id}`",
                        failed.error
                    );
                    failed.item
                }
            };
            // Indexed either way: a reply to it (once sent) must find the ticket.
            change.message_ids.push(item.message_id.clone());
            change.outbox.push(item);
        }
        Ok(tally)
    }

    /// When automatic mail went to `recipient` since `since`: the store's log, the batch's and this change's.
    fn sent_since(
        &self,
        tx: &dyn Lookup,
        recipient: &str,
        since: DateTime<Utc>,
        at_most: usize,
        change: &Change,
        pending: &Pending,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let mut history = tx.auto_mail_since(recipient, since, at_most)?;
        history.extend(pending.auto_sent.get(recipient).into_iter().flatten());
        history.extend(
            change
                .auto_log
                .iter()
                .filter(|(r, _, _)| r == recipient)
                .map(|(_, t, _)| *t),
        );
        Ok(history)
    }

    /// The recipients of automatic customer mail that the per-recipient limits let through; the others are
    /// logged and counted (`change.suppressed`).
    fn customer_limits(
        &self,
        tx: &dyn Lookup,
        reply: &Reply,
        ticket: &Ticket,
        change: &mut Change,
        pending: &Pending,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let limits = &self.config.outbound.rate_limit;
        let mut allowed = Vec::new();
        for to in &reply.to {
            // The newest `per_day` are enough to decide both limits (see `limit::allow`).
            let at_most = limits.per_day.max(limits.per_10min);
            let history =
                self.sent_since(tx, to, now - limit::window(), at_most, change, pending)?;
            match limit::allow(&history, now, limits) {
                Ok(()) => allowed.push(to.clone()),
                Err(why) => {
                    change.suppressed += 1;
                    tracing::warn!(
                        ticket = %ticket.id, kind = %reply.event(), recipient = %to,
                        "automatic mail ({}) to {to} held back: {why}; the incoming mail is stored. An \
                         auto-responder at that address is answering the desk; if the traffic is real, raise \
                         [outbound.rate_limit]",
                        reply.event()
                    );
                }
            }
        }
        Ok(allowed)
    }

    /// The recipients of staff mail the staff breaker lets through. A trip is an ERROR naming recipient and
    /// kind, once an hour per address; every mail it holds back is counted.
    #[allow(clippy::too_many_arguments)]
    fn staff_breaker(
        &self,
        tx: &dyn Lookup,
        reply: &Reply,
        ticket: &Ticket,
        change: &mut Change,
        pending: &Pending,
        now: DateTime<Utc>,
        tally: &mut Tally,
    ) -> Result<Vec<String>, StoreError> {
        let per_hour = self.config.outbound.staff_per_hour;
        let since = now - limit::staff_window();
        let mut allowed = Vec::new();
        for to in &reply.to {
            // A count, not the history: a busy agents' address has thousands of entries an hour.
            let sent = tx.auto_mail_count(to, since)?
                + pending
                    .auto_sent
                    .get(to)
                    .map_or(0, |v| v.iter().filter(|t| **t > since).count())
                + change
                    .auto_log
                    .iter()
                    .filter(|(r, t, _)| r == to && *t > since)
                    .count();
            let Err(why) = limit::allow_staff_count(sent, per_hour) else {
                allowed.push(to.clone());
                continue;
            };
            tally.staff_held_back += 1;
            let mark = breaker_mark(to);
            if self
                .sent_since(tx, &mark, since, 1, change, pending)?
                .is_empty()
            {
                tracing::error!(
                    ticket = %ticket.id, kind = %reply.event(), recipient = %to,
                    "staff breaker tripped: staff mail ({}) to {to} held back: {why}. Something answers staff \
                     mail in a loop (check that address's auto-responder), or the desk is busier than \
                     [outbound] staff_per_hour = {per_hour} allows (raise it). Staff mail to {to} is held back \
                     for the rest of the hour and counted in postdesk_staff_mail_held_back_total; this is \
                     logged once an hour",
                    reply.event()
                );
                change.auto_log.push((mark, now, 0));
            } else {
                tracing::debug!(ticket = %ticket.id, kind = %reply.event(), recipient = %to, "staff mail held back: {why}");
            }
        }
        Ok(allowed)
    }

    /// Queue outbox row `id` again now (`postdesk outbox retry`). A row whose template failed is rendered
    /// first, with the templates as they are now: if that still fails, it stays `failed` with the new
    /// reason, and the error says why. A row already `sent` is refused unless `force`: the customer has
    /// it, and a second copy is rarely what the admin meant.
    pub fn retry_outbox(&self, id: u64, force: bool) -> Result<OutboxItem, IngestError> {
        self.store.write(|_tx| {
            let mut item = self
                .store
                .outbox_item(id)?
                .ok_or(StoreError::NoOutboxRow(id))?;
            if item.status == outbound::OutboxStatus::Sent && !force {
                return Err(IngestError::AlreadySent {
                    id,
                    sent_at: item.sent_at.unwrap_or(item.created_at),
                });
            }
            if item.unrendered.is_some() {
                if let Err(e) = outbound::rerender(&mut item, &self.composer) {
                    item.last_error = Some(format!(
                        "not rendered: {e}; fix the template (`postdesk check-config`), reload the daemon, then `postdesk outbox retry {id}`"
                    ));
                    self.store.outbox_update(item)?;
                    return Err(e.into());
                }
                self.store.outbox_update(item)?;
            }
            Ok(self.store.outbox_retry(id)?)
        })
    }
}
