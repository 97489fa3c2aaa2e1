//! Intake: raw mail from a source (IMAP, Maildir, the MTA pipe) becomes a committed change in the store.
//!
//! [`Desk::ingest`] (one mail) and [`Desk::ingest_batch`] (many) are the one path every source uses: parse,
//! look up what the store knows, decide (pure), render the replies, commit. A batch is parsed on every core
//! and committed in one sled transaction: every mail's writes are in it whole, and the per-transaction cost
//! is paid once per batch instead of once per mail. Nothing here flushes: a source ingests, calls
//! [`crate::store::Storage::flush_async`] once, and only then acknowledges the mail at its source.

pub mod imap;
pub mod maildir;
pub mod pipe;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::config::{Config, RegionConfig};
use crate::desk::decide::{self, Decision, Delivery, Known};
use crate::desk::thread;
use crate::desk::ticket::{Ticket, TicketId};
use crate::mail::{self, Inbound, NotMail};
use crate::outbound::{self, render::Renderer, Composer};
use crate::store::{Change, Committed, Lookup, Storage, StorageExt, Store, StoreError};
use crate::telemetry::Telemetry;

/// What happened to one mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stored in a ticket (new or existing), with this many mails queued in the outbox.
    Stored {
        ticket: TicketId,
        new: bool,
        queued: usize,
    },
    /// Already stored before: nothing changed.
    Duplicate(TicketId),
    /// Not a mail postdesk can read: kept in quarantine (see `postdesk stats`).
    Quarantined { id: u64, reason: String },
}

/// Why a mail could not be taken. The source must keep the mail and try again later.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot render a reply: {0}")]
    Render(#[from] outbound::render::RenderError),
}

/// The pieces intake needs, shared by every source.
pub struct Desk {
    pub config: Config,
    pub store: std::sync::Arc<Store>,
    pub composer: Composer,
    /// Health and metrics: owned by the daemon, outlives a Desk rebuilt on reload.
    pub telemetry: std::sync::Arc<Telemetry>,
}

/// Why a desk could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error(transparent)]
    Templates(#[from] outbound::render::RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Desk {
    /// Compile the templates and load the Message-ID secret: everything deciding and composing needs.
    /// Metrics go to a telemetry of its own (one-shot commands); the daemon uses [`Desk::with_telemetry`].
    pub fn new(config: Config, store: std::sync::Arc<Store>) -> Result<Desk, DeskError> {
        Desk::with_telemetry(config, store, std::sync::Arc::new(Telemetry::new()))
    }

    /// Like [`Desk::new`], reporting to `telemetry`: the daemon creates one and hands it to every Desk it
    /// builds (at start and on each config reload), so counters and intake health carry over.
    pub fn with_telemetry(
        config: Config,
        store: std::sync::Arc<Store>,
        telemetry: std::sync::Arc<Telemetry>,
    ) -> Result<Desk, DeskError> {
        let renderer = Renderer::load(config.outbound.templates_dir.as_deref())?;
        let secret = store.message_id_secret(config.outbound.message_id_secret.as_deref())?;
        telemetry.configure(&config);
        Ok(Desk {
            config,
            store,
            composer: Composer { renderer, secret },
            telemetry,
        })
    }

    /// Count what a committed change did: automatic mail held back, a bounce recorded.
    fn count_committed(&self, change: &Change) {
        if let Some(ticket) = &change.ticket {
            self.telemetry
                .auto_replies_suppressed(&ticket.region, change.suppressed);
        }
        if change.bounced.is_some() {
            self.telemetry.outbox_bounced();
        }
    }
}

/// One mail of a batch.
pub struct Incoming<'a> {
    pub raw: &'a [u8],
    pub source: String,
    pub delivery: Delivery,
    /// An intake position to record with the mail (see [`Change::intake_state`]).
    pub state: Option<(Vec<u8>, Vec<u8>)>,
}

/// What earlier mail of the same batch changed, not yet in the store: decisions on later mail of the
/// batch must see it (a reply right behind the mail that opened its ticket, the id sequence).
#[derive(Default)]
struct Pending {
    tickets: HashMap<TicketId, Ticket>,
    msgid: HashMap<String, Vec<TicketId>>,
    dedupe: HashMap<(String, String), TicketId>,
    next_number: HashMap<String, u64>,
    auto_sent: HashMap<String, Vec<DateTime<Utc>>>,
}

impl Pending {
    fn record(&mut self, change: &Change) {
        for (recipient, at, _) in &change.auto_log {
            self.auto_sent
                .entry(recipient.clone())
                .or_default()
                .push(*at);
        }
        let Some(ticket) = &change.ticket else { return };
        if change.new_ticket {
            self.next_number
                .insert(ticket.id.region.clone(), ticket.id.number + 1);
        }
        for mid in &change.message_ids {
            let ids = self.msgid.entry(mid.clone()).or_default();
            if !ids.contains(&ticket.id) {
                ids.push(ticket.id.clone());
            }
        }
        if let Some(key) = &change.dedupe {
            self.dedupe.insert(key.clone(), ticket.id.clone());
        }
        for (mid, id) in &change.other_message_ids {
            let ids = self.msgid.entry(mid.clone()).or_default();
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        for other in &change.other_tickets {
            self.tickets.insert(other.id.clone(), other.clone());
        }
        self.tickets.insert(ticket.id.clone(), ticket.clone());
    }
}

/// The decision on one parsed mail, ready to commit.
enum Planned {
    Duplicate(TicketId),
    Change(Box<Change>, Outcome),
}

impl Desk {
    /// Ingest one raw mail for `region`. `source` names where it came from, for the quarantine record.
    /// Input that is not a mail at all is returned as [`NotMail`] when `quarantine_junk` is false (the MTA
    /// pipe answers it with exit 65), and quarantined otherwise (a mailbox must be emptied of it).
    pub fn ingest(
        &self,
        region: &RegionConfig,
        raw: &[u8],
        source: &str,
        delivery: &Delivery,
        quarantine_junk: bool,
        now: DateTime<Utc>,
    ) -> Result<Result<Outcome, NotMail>, IngestError> {
        let inbound = match mail::parse(raw, region.locale) {
            Ok(m) => m,
            Err(e) => {
                self.telemetry.parse_failure(&region.code);
                if quarantine_junk || matches!(e, NotMail::ParserPanic(_)) {
                    return Ok(Ok(self.quarantine(region, source, raw, &e)?));
                }
                return Ok(Err(e));
            }
        };
        self.store.write(|tx| {
            match self.plan(
                region,
                raw,
                &inbound,
                delivery,
                None,
                &Pending::default(),
                now,
            )? {
                Planned::Duplicate(id) => Ok(Ok(Outcome::Duplicate(id))),
                Planned::Change(change, outcome) => match tx.commit(&change)? {
                    Committed::Applied => {
                        self.count_committed(&change);
                        if matches!(outcome, Outcome::Stored { .. }) {
                            self.telemetry.mails_ingested(&region.code, 1);
                        }
                        Ok(Ok(outcome))
                    }
                    Committed::Duplicate(existing) => Ok(Ok(Outcome::Duplicate(existing))),
                },
            }
        })
    }

    /// Ingest many mails for `region` in one transaction, in order; input that is not a mail is quarantined.
    /// Returns one outcome per mail. On an error nothing of the batch is stored.
    pub fn ingest_batch(
        &self,
        region: &RegionConfig,
        batch: Vec<Incoming>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Outcome>, IngestError> {
        let parsed = parse_all(&batch, region);
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        for (i, (item, parsed)) in batch.iter().zip(&parsed).enumerate() {
            if let Err(e) = parsed {
                self.telemetry.parse_failure(&region.code);
                outcomes[i] = Some(self.quarantine(region, &item.source, item.raw, e)?);
            }
        }
        self.store.write(|tx| {
            let mut pending = Pending::default();
            let mut changes = Vec::new();
            for (i, (item, parsed)) in batch.into_iter().zip(&parsed).enumerate() {
                let Ok(inbound) = parsed else { continue };
                match self.plan(
                    region,
                    item.raw,
                    inbound,
                    &item.delivery,
                    item.state,
                    &pending,
                    now,
                )? {
                    Planned::Duplicate(id) => outcomes[i] = Some(Outcome::Duplicate(id)),
                    Planned::Change(change, outcome) => {
                        pending.record(&change);
                        changes.push(*change);
                        outcomes[i] = Some(outcome);
                    }
                }
            }
            if tx.commit_all(&changes)? == Committed::Applied {
                for change in &changes {
                    self.count_committed(change);
                }
                let stored = outcomes
                    .iter()
                    .filter(|o| matches!(o, Some(Outcome::Stored { .. })))
                    .count();
                self.telemetry.mails_ingested(&region.code, stored as u64);
            }
            // Every mail got its outcome above: quarantined, duplicate, or stored.
            Ok(outcomes.into_iter().flatten().collect())
        })
    }

    fn quarantine(
        &self,
        region: &RegionConfig,
        source: &str,
        raw: &[u8],
        e: &NotMail,
    ) -> Result<Outcome, IngestError> {
        let q = self
            .store
            .quarantine(&region.code, source, &e.to_string(), raw)?;
        self.telemetry.quarantined(&region.code);
        if matches!(e, NotMail::ParserPanic(_)) {
            tracing::error!(region = %region.code, quarantine = q.id, "mail could not be parsed and was quarantined: {e}");
        } else {
            tracing::warn!(region = %region.code, quarantine = q.id, "input is not a mail ({e}); kept in quarantine");
        }
        Ok(Outcome::Quarantined {
            id: q.id,
            reason: e.to_string(),
        })
    }

    /// Decide on one parsed mail and build its change. Caller holds the writer lock.
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &self,
        region: &RegionConfig,
        raw: &[u8],
        inbound: &Inbound,
        delivery: &Delivery,
        state: Option<(Vec<u8>, Vec<u8>)>,
        pending: &Pending,
        now: DateTime<Utc>,
    ) -> Result<Planned, IngestError> {
        let known = self.known(inbound, pending)?;
        let plan = match decide::decide(inbound, region, &self.config, &known, delivery, now) {
            Decision::Duplicate(id) => return Ok(Planned::Duplicate(id)),
            Decision::Store(plan) => plan,
        };
        let mut ticket = plan.ticket;
        let ticket_region = self.config.region(&ticket.region).unwrap_or(region);
        if plan.is_new {
            ticket.id.number = match pending.next_number.get(&ticket.region) {
                Some(&n) => n,
                None => self
                    .store
                    .next_ticket_number(&ticket.region, ticket_region.first_number)?,
            };
        }
        let mut change = Change {
            new_ticket: plan.is_new,
            dedupe: Some((inbound.message_id.clone(), inbound.content_hash.clone())),
            message_ids: vec![inbound.message_id.clone()],
            intake_state: state,
            ..Change::default()
        };
        change.messages.push(plan.message);
        // The raw mail is kept only when decoding it recorded damage, so it can be read again by a better
        // parser; clean mail is stored decoded (text and attachments) and nothing more: data minimisation,
        // and a third of the bytes to write.
        if !inbound.damage.is_empty() {
            change
                .blobs
                .push((inbound.raw_sha256.clone(), raw.to_vec()));
        }
        for a in &inbound.attachments {
            change.blobs.push((a.sha256.clone(), a.data.clone()));
        }
        change.bounced = plan.bounced_outbox.map(|id| {
            (
                id,
                inbound
                    .auto
                    .report_diagnostic
                    .clone()
                    .unwrap_or_else(|| "delivery report received".into()),
            )
        });
        self.queue_replies(
            &plan.replies,
            &mut ticket,
            ticket_region,
            &mut change,
            pending,
            now,
        )?;
        if let Some(into) = &plan.merge_into {
            self.merge(&mut ticket, into, &mut change, pending)?;
        }
        ticket.message_count += change.messages.len() as u32;
        self.schedule(&mut ticket);
        let outcome = Outcome::Stored {
            ticket: ticket.id.clone(),
            new: plan.is_new,
            queued: change.outbox.len(),
        };
        change.ticket = Some(ticket);
        Ok(Planned::Change(Box::new(change), outcome))
    }

    /// Set the timers a ticket in its new state should have (written with it into the due-time index).
    pub(crate) fn schedule(&self, ticket: &mut Ticket) {
        let Some(region) = self.config.region(&ticket.region) else {
            ticket.timers = Vec::new();
            return;
        };
        // An erased ticket sends nothing any more: only retention applies to it.
        let mut timers = if ticket.erased {
            Vec::new()
        } else {
            crate::desk::timers::schedule(ticket, &self.config.timers_for(region))
        };
        timers.extend(crate::desk::retention::schedule(
            ticket,
            &self.config.retention,
        ));
        ticket.timers = timers;
    }

    /// Fire a due timer of ticket `id`: carry out what [`crate::desk::timers::on_timer`] decides, or, if the
    /// timer no longer applies, just rewrite the ticket's timers (which drops the stale entry). Returns the
    /// number of mails queued.
    pub fn fire_timer(
        &self,
        id: &TicketId,
        kind: crate::desk::ticket::TimerKind,
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
            let (mut ticket, replies) =
                match crate::desk::timers::on_timer(&ticket, kind, region, &self.config, now) {
                    Some(x) => x,
                    None => (ticket, Vec::new()),
                };
            let mut change = Change::default();
            self.queue_replies(
                &replies,
                &mut ticket,
                region,
                &mut change,
                &Pending::default(),
                now,
            )?;
            self.schedule(&mut ticket);
            let queued = change.outbox.len();
            if queued > 0 || !replies.is_empty() {
                tracing::info!(ticket = %id, timer = kind.as_str(), queued, "timer fired");
            }
            let breached = ticket.breached && !was_breached;
            change.ticket = Some(ticket);
            tx.commit(&change)?;
            self.count_committed(&change);
            if breached {
                self.telemetry.sla_breach(&region.code);
            }
            Ok(queued)
        })
    }

    /// Move every message of `ticket` (the one `change` is about to append included) into the ticket `into`,
    /// so that both conversations continue there: the Message-IDs of both lead there, the merged ticket is
    /// closed and points there, its customers become participants there.
    fn merge(
        &self,
        ticket: &mut Ticket,
        into: &TicketId,
        change: &mut Change,
        pending: &Pending,
    ) -> Result<(), IngestError> {
        let mut survivor = match pending.tickets.get(into) {
            Some(t) => t.clone(),
            None => self
                .store
                .ticket(into)?
                .ok_or_else(|| StoreError::NoTicket(into.clone()))?,
        };
        let mut moved = self.store.messages(&ticket.id)?;
        let stored = moved.len() as u32;
        moved.append(&mut change.messages);
        for (i, m) in moved.into_iter().enumerate() {
            change.placed_messages.push((
                survivor.id.clone(),
                survivor.message_count + i as u32,
                m,
            ));
        }
        survivor.message_count += change.placed_messages.len() as u32;
        change
            .removed_messages
            .extend((0..stored).map(|i| (ticket.id.clone(), i)));
        for customer in std::iter::once(&ticket.requester).chain(&ticket.participants) {
            if !customer.is_empty()
                && *customer != survivor.requester
                && !survivor.participants.contains(customer)
            {
                survivor.participants.push(customer.clone());
            }
        }
        for mid in ticket.thread_ids.iter().chain(&change.message_ids) {
            decide::remember_thread_id(&mut survivor, mid);
            change
                .other_message_ids
                .push((mid.clone(), survivor.id.clone()));
        }
        survivor.links.push(ticket.id.clone());
        survivor.updated_at = ticket.updated_at;
        ticket.links.push(survivor.id.clone());
        ticket.merged_into = Some(survivor.id.clone());
        ticket.status = crate::desk::ticket::Status::Closed;
        ticket.message_count = 0;
        tracing::info!(ticket = %ticket.id, into = %survivor.id, "tickets merged");
        self.schedule(&mut survivor);
        change.other_tickets.push(survivor);
        Ok(())
    }

    /// Render `replies` into outbox rows of `change`, within the per-recipient rate limits for automatic
    /// mail; what the limits hold back is logged and counted, never queued.
    fn queue_replies(
        &self,
        replies: &[decide::Reply],
        ticket: &mut Ticket,
        region: &RegionConfig,
        change: &mut Change,
        pending: &Pending,
        now: DateTime<Utc>,
    ) -> Result<(), IngestError> {
        let limits = &self.config.outbound.rate_limit;
        for reply in replies {
            let mut reply = reply.clone();
            let mut allowed = Vec::new();
            // An agent's answer is a person writing: the limits on automatic mail do not apply to it.
            let automatic = reply.kind != "agent_reply";
            for to in reply.to.iter().filter(|_| automatic) {
                let mut history = self
                    .store
                    .auto_mail_since(to, now - outbound::limit::window())?;
                history.extend(pending.auto_sent.get(to).into_iter().flatten());
                history.extend(
                    change
                        .auto_log
                        .iter()
                        .filter(|(r, _, _)| r == to)
                        .map(|(_, t, _)| *t),
                );
                match outbound::limit::allow(&history, now, limits) {
                    Ok(()) => allowed.push(to.clone()),
                    Err(why) => {
                        change.suppressed += 1;
                        tracing::warn!(ticket = %ticket.id, kind = reply.kind, "automatic mail held back: {why}; a loop with an auto-responder is likely (the incoming mail is stored)");
                        tracing::debug!(recipient = %to, "held back");
                    }
                }
            }
            if !automatic {
                allowed = reply.to.clone();
            }
            if allowed.is_empty() {
                continue;
            }
            reply.to = allowed;
            let item = outbound::compose(
                &reply,
                ticket,
                region,
                &self.config,
                &self.composer,
                self.store.generate_id()?,
                now,
            )?;
            decide::remember_thread_id(ticket, &item.message_id);
            change.message_ids.push(item.message_id.clone());
            if automatic {
                for to in &item.to {
                    change.auto_log.push((to.clone(), now, item.id));
                }
            }
            change.outbox.push(item);
        }
        Ok(())
    }

    /// Everything the store (and the batch so far) knows that concerns this mail: an earlier copy, tagged
    /// and referenced tickets.
    fn known(&self, inbound: &Inbound, pending: &Pending) -> Result<Known, StoreError> {
        let load = |id: &TicketId| -> Result<Option<Ticket>, StoreError> {
            match pending.tickets.get(id) {
                Some(t) => Ok(Some(t.clone())),
                None => self.store.ticket(id),
            }
        };
        // A merged ticket's mail goes to the ticket it was merged into (bounded, against a corrupt cycle).
        let ticket = |id: &TicketId| -> Result<Option<Ticket>, StoreError> {
            let mut t = load(id)?;
            for _ in 0..8 {
                match t.as_ref().and_then(|t| t.merged_into.clone()) {
                    Some(next) => t = load(&next)?,
                    None => break,
                }
            }
            Ok(t)
        };
        let dedupe_key = (inbound.message_id.clone(), inbound.content_hash.clone());
        let duplicate_of = match pending.dedupe.get(&dedupe_key) {
            Some(id) => Some(id.clone()),
            None => self
                .store
                .duplicate_of(&inbound.message_id, &inbound.content_hash)?,
        };
        let mut known = Known {
            duplicate_of,
            ..Known::default()
        };
        if known.duplicate_of.is_some() {
            return Ok(known);
        }
        // An agent's `#merge ID`: load that ticket, so the decision can check it.
        let sender = inbound
            .from
            .as_ref()
            .map(|m| m.address.as_str())
            .unwrap_or("");
        if self.config.region.iter().any(|r| r.is_agent(sender)) {
            let parsed =
                crate::desk::agent::parse(&crate::mail::quote::strip_quoted(&inbound.text));
            for command in parsed.commands {
                if let crate::desk::agent::Command::Merge(id) = command {
                    known.merge_target = load(&id)?;
                }
            }
        }
        known.own_message =
            outbound::msgid::verify(&inbound.message_id, &self.composer.secret).is_some();
        // A delivery report naming a Message-ID we signed: the ticket and outbox row it reports on.
        if let Some(reported) = &inbound.auto.reported_message_id {
            if let Some((id, outbox_id)) = outbound::msgid::verify(reported, &self.composer.secret)
            {
                if let Some(t) = ticket(&id)? {
                    known.bounced = Some((t, outbox_id));
                }
            }
        }
        for tag in thread::tags_in_subject(&inbound.subject) {
            if let Some(t) = ticket(&tag)? {
                known.tagged.push(t);
            }
        }
        // In-Reply-To names the mail answered; References from the newest back.
        let mut seen = Vec::new();
        for mid in inbound
            .in_reply_to
            .iter()
            .chain(inbound.references.iter().rev())
        {
            let mut ids = self.store.tickets_for_message_id(mid)?;
            ids.extend(pending.msgid.get(mid).into_iter().flatten().cloned());
            for id in ids {
                if !seen.contains(&id) {
                    if let Some(t) = ticket(&id)? {
                        known.referenced.push(t);
                    }
                    seen.push(id);
                }
            }
        }
        Ok(known)
    }

    /// Change a ticket's status (CLI, later agent commands) and queue the status update, atomically.
    pub fn set_status(
        &self,
        id: &TicketId,
        status: crate::desk::ticket::Status,
        now: DateTime<Utc>,
    ) -> Result<Result<usize, crate::desk::lifecycle::LifecycleError>, IngestError> {
        self.store.write(|tx| {
            let ticket = tx
                .ticket(id)?
                .ok_or_else(|| StoreError::NoTicket(id.clone()))?;
            let region = match self.config.region(&ticket.region) {
                Some(r) => r,
                None => {
                    return Err(StoreError::Conflict(format!(
                        "region {} of {} is no longer configured",
                        ticket.region, ticket.id
                    ))
                    .into())
                }
            };
            let (mut ticket, replies) =
                match decide::set_status(&ticket, status, &self.config.timers_for(region), now) {
                    Ok(x) => x,
                    Err(e) => return Ok(Err(e)),
                };
            let mut change = Change::default();
            self.queue_replies(
                &replies,
                &mut ticket,
                region,
                &mut change,
                &Pending::default(),
                now,
            )?;
            ticket.message_count += change.messages.len() as u32;
            self.schedule(&mut ticket);
            let queued = change.outbox.len();
            change.ticket = Some(ticket);
            tx.commit(&change)?;
            self.count_committed(&change);
            Ok(Ok(queued))
        })
    }
}

/// Run CPU-heavy work (a batch ingest) from async code: on a multi-thread runtime the worker thread is
/// handed over so other tasks keep running; elsewhere (a current-thread runtime) it simply runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Parse every mail of a batch, spread over the machine's cores (parsing is the CPU-heavy step).
fn parse_all(batch: &[Incoming], region: &RegionConfig) -> Vec<Result<Inbound, NotMail>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads < 2 || batch.len() < 16 {
        return batch
            .iter()
            .map(|i| mail::parse(i.raw, region.locale))
            .collect();
    }
    let chunk = batch.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = batch
            .chunks(chunk)
            .map(|part| {
                (
                    part.len(),
                    s.spawn(move || {
                        part.iter()
                            .map(|i| mail::parse(i.raw, region.locale))
                            .collect::<Vec<_>>()
                    }),
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                // `parse` catches parser panics itself; should a thread die anyway, its mails are quarantined,
                // never dropped or shifted onto other mails' results.
                h.join().unwrap_or_else(|_| {
                    (0..len)
                        .map(|_| Err(NotMail::ParserPanic("parser thread died".into())))
                        .collect()
                })
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn desk(dir: &std::path::Path) -> Desk {
        let text = format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
            d = dir.display()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t")).unwrap();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        Desk::new(config, store).unwrap()
    }

    fn item(raw: &[u8]) -> Incoming<'_> {
        Incoming {
            raw,
            source: "test".into(),
            delivery: Delivery::normal(),
            state: None,
        }
    }

    #[test]
    fn a_batch_sees_its_own_earlier_mail() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk(dir.path());
        let first =
            b"From: a@example.com\r\nSubject: help\r\nMessage-ID: <1@a>\r\n\r\nfirst\r\n".to_vec();
        let reply = b"From: a@example.com\r\nSubject: more\r\nMessage-ID: <2@a>\r\nIn-Reply-To: <1@a>\r\n\r\nsecond\r\n".to_vec();
        let other =
            b"From: b@example.com\r\nSubject: other\r\nMessage-ID: <3@b>\r\n\r\nthird\r\n".to_vec();
        let junk = b"\x00\x01 not mail".to_vec();
        let region = d.config.region[0].clone();
        let out = d
            .ingest_batch(
                &region,
                vec![
                    item(&first),
                    item(&reply),
                    item(&first),
                    item(&other),
                    item(&junk),
                ],
                Utc::now(),
            )
            .unwrap();
        let jp = |n| TicketId::new("JP", n);
        assert_eq!(
            out[0],
            Outcome::Stored {
                ticket: jp(1000),
                new: true,
                queued: 1
            }
        );
        assert_eq!(
            out[1],
            Outcome::Stored {
                ticket: jp(1000),
                new: false,
                queued: 0
            }
        );
        assert_eq!(out[2], Outcome::Duplicate(jp(1000)));
        assert_eq!(
            out[3],
            Outcome::Stored {
                ticket: jp(1001),
                new: true,
                queued: 1
            }
        );
        assert!(matches!(out[4], Outcome::Quarantined { .. }));
        assert_eq!(d.store.messages(&jp(1000)).unwrap().len(), 2);
        assert_eq!(d.store.next_ticket_number("JP", 1000).unwrap(), 1002);
        // The next batch continues the sequence and still recognises the copies.
        let out = d
            .ingest_batch(
                &region,
                vec![
                    item(&other),
                    item(b"From: c@example.com\r\nSubject: x\r\n\r\nnew\r\n"),
                ],
                Utc::now(),
            )
            .unwrap();
        assert_eq!(out[0], Outcome::Duplicate(jp(1001)));
        assert_eq!(
            out[1],
            Outcome::Stored {
                ticket: jp(1002),
                new: true,
                queued: 1
            }
        );
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use crate::desk::ticket::Status;
    use std::sync::Arc;

    #[test]
    fn merge_moves_messages_and_both_conversations_continue_in_the_survivor() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\nagents = [\"agent@example.com\"]\n",
            d = dir.path().display()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t")).unwrap();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let d = Desk::new(config, store).unwrap();
        let region = d.config.region[0].clone();
        let ingest = |raw: &str| {
            d.ingest(
                &region,
                raw.as_bytes(),
                "test",
                &Delivery::normal(),
                false,
                Utc::now(),
            )
            .unwrap()
            .unwrap()
        };
        let jp = |n| TicketId::new("JP", n);
        ingest("From: a@example.com\r\nSubject: order late\r\nMessage-ID: <a1@x>\r\n\r\nwhere is it\r\n");
        ingest("From: b@example.com\r\nSubject: same order\r\nMessage-ID: <b1@x>\r\n\r\nmy colleague asked too\r\n");
        // A bad target is refused and changes nothing.
        ingest("From: agent@example.com\r\nSubject: Re: [JP-1001] x\r\nMessage-ID: <m0@x>\r\n\r\n#merge JP-4242\r\n");
        assert!(d
            .store
            .ticket(&jp(1001))
            .unwrap()
            .unwrap()
            .merged_into
            .is_none());
        ingest("From: agent@example.com\r\nSubject: Re: [JP-1001] x\r\nMessage-ID: <m1@x>\r\n\r\n#merge JP-1000\r\nsame issue as JP-1000\r\n");
        let merged = d.store.ticket(&jp(1001)).unwrap().unwrap();
        assert_eq!(merged.merged_into, Some(jp(1000)));
        assert_eq!(merged.status, Status::Closed);
        assert!(d.store.messages(&jp(1001)).unwrap().is_empty());
        let survivor = d.store.ticket(&jp(1000)).unwrap().unwrap();
        assert!(survivor.participants.contains(&"b@example.com".to_string()));
        let texts: Vec<String> = d
            .store
            .messages(&jp(1000))
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("my colleague"))
                && texts.iter().any(|t| t.contains("same issue")),
            "{texts:?}"
        );
        // Replies to either ticket land in the survivor, by tag or by References.
        assert!(
            matches!(ingest("From: b@example.com\r\nSubject: Re: [JP-1001] same order\r\nMessage-ID: <b2@x>\r\n\r\nany news?\r\n"), Outcome::Stored { ticket, .. } if ticket == jp(1000))
        );
        assert!(
            matches!(ingest("From: b@example.com\r\nSubject: more\r\nMessage-ID: <b3@x>\r\nReferences: <b1@x>\r\n\r\nstill waiting\r\n"), Outcome::Stored { ticket, .. } if ticket == jp(1000))
        );
        assert_eq!(d.store.tickets(None, None).unwrap().len(), 2);
    }
}

#[cfg(test)]
mod telemetry_tests {
    use super::*;
    use crate::desk::ticket::TimerKind;
    use std::sync::Arc;

    fn count(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn desk_counts_ingests_parse_failures_quarantine_and_sla_breaches() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\naddress = \"support-jp@example.com\"\n",
            d = dir.path().display()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t")).unwrap();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let telemetry = Arc::new(Telemetry::new());
        let d = Desk::with_telemetry(config, store, telemetry.clone()).unwrap();
        let region = d.config.region[0].clone();
        let now = Utc::now();
        let mail = b"From: a@example.com\r\nSubject: help\r\nMessage-ID: <1@a>\r\n\r\nhi\r\n";
        let ingest = |raw: &[u8], quarantine| {
            d.ingest(&region, raw, "t", &Delivery::normal(), quarantine, now)
                .unwrap()
        };
        assert!(ingest(mail, false).is_ok());
        assert!(ingest(mail, false).is_ok()); // a duplicate is not counted again
        assert!(ingest(b"\x00\x01", false).is_err()); // refused: counted, not quarantined
        assert!(ingest(b"\x00\x02", true).is_ok()); // quarantined
        let id = TicketId::new("JP", 1000);
        d.fire_timer(&id, TimerKind::SlaBreach, now + chrono::Duration::days(2))
            .unwrap();
        // A breach is counted once, even if its timer fires again.
        d.fire_timer(&id, TimerKind::SlaBreach, now + chrono::Duration::days(3))
            .unwrap();
        let m = telemetry.render(&d.store).unwrap();
        for (series, n) in [
            ("postdesk_mails_ingested_total{region=\"JP\"}", 1.0),
            ("postdesk_parse_failures_total{region=\"JP\"}", 2.0),
            ("postdesk_quarantined_total{region=\"JP\"}", 1.0),
            ("postdesk_sla_breaches_total{region=\"JP\"}", 1.0),
            ("postdesk_tickets{region=\"JP\",status=\"new\"}", 1.0),
        ] {
            assert_eq!(count(&m, series), Some(n), "{series} in\n{m}");
        }
    }
}
