//! Raw mail becomes a committed change: [`Desk::ingest`] (one mail) and [`Desk::ingest_batch`] (many) are
//! the one path every intake source uses.
//!
//! Parse, read what the store knows ([`Known`]: copies, tagged and referenced tickets, the next ticket
//! number, a merge target, the staff mail a mail answers), decide (pure), render the replies, commit. A batch
//! is parsed on every core and committed in one sled transaction: every mail's writes are in it whole, and
//! the per-transaction cost is paid once per batch instead of once per mail. Later mail of a batch sees what
//! earlier mail changed through [`Pending`].

use crate::store::{Change, Committed, Lookup, Storage, StorageExt, StoreError};
use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Desk, IngestError, Outcome, Tally};
use crate::config::RegionConfig;
use crate::desk::decide::{self, Decision, Delivery, Known, Merge};
use crate::desk::reply::Audience;
use crate::desk::thread;
use crate::desk::ticket::{Ticket, TicketId};
use crate::mail::{self, Inbound, NotMail};
use crate::outbound;

/// One mail of a batch.
pub struct Incoming<'a> {
    pub raw: &'a [u8],
    pub source: String,
    pub delivery: Delivery,
    /// An intake position to record with the mail (see [`Change::intake_state`]).
    pub state: Option<(Vec<u8>, Vec<u8>)>,
}

/// What earlier mail of the same batch changed, not yet in the store: decisions on later mail of the
/// batch must see it (a reply right behind the mail that opened its ticket, the id sequence, the automatic
/// mail already queued to an address).
#[derive(Default)]
pub(super) struct Pending {
    tickets: HashMap<TicketId, Ticket>,
    msgid: HashMap<String, Vec<TicketId>>,
    dedupe: HashMap<(String, String), TicketId>,
    next_number: HashMap<String, u64>,
    pub(super) auto_sent: HashMap<String, Vec<DateTime<Utc>>>,
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
    Change(Box<Change>, Outcome, Tally),
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
                tx,
                region,
                raw,
                &inbound,
                delivery,
                None,
                &Pending::default(),
                now,
            )? {
                Planned::Duplicate(id) => Ok(Ok(Outcome::Duplicate(id))),
                Planned::Change(change, outcome, tally) => match tx.commit(&change)? {
                    Committed::Applied => {
                        self.count_committed(&change, tally);
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
            let mut tallies = Vec::new();
            for (i, (item, parsed)) in batch.into_iter().zip(&parsed).enumerate() {
                let Ok(inbound) = parsed else { continue };
                match self.plan(
                    tx,
                    region,
                    item.raw,
                    inbound,
                    &item.delivery,
                    item.state,
                    &pending,
                    now,
                )? {
                    Planned::Duplicate(id) => outcomes[i] = Some(Outcome::Duplicate(id)),
                    Planned::Change(change, outcome, tally) => {
                        pending.record(&change);
                        changes.push(*change);
                        tallies.push(tally);
                        outcomes[i] = Some(outcome);
                    }
                }
            }
            if tx.commit_all(&changes)? == Committed::Applied {
                for (change, tally) in changes.iter().zip(tallies) {
                    self.count_committed(change, tally);
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
        tx: &dyn Lookup,
        region: &RegionConfig,
        raw: &[u8],
        inbound: &Inbound,
        delivery: &Delivery,
        state: Option<(Vec<u8>, Vec<u8>)>,
        pending: &Pending,
        now: DateTime<Utc>,
    ) -> Result<Planned, IngestError> {
        let known = self.known(tx, region, inbound, pending)?;
        let plan = match decide::decide(inbound, region, &self.config, &known, delivery, now) {
            Decision::Duplicate(id) => return Ok(Planned::Duplicate(id)),
            Decision::Store(plan) => *plan,
        };
        let mut ticket = plan.ticket;
        let ticket_region = self.config.region(&ticket.region).unwrap_or(region);
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
        let tally = self.queue_replies(
            tx,
            &plan.replies,
            &mut ticket,
            ticket_region,
            &mut change,
            pending,
            now,
        )?;
        if let Some(merge) = plan.merge {
            self.move_merged_messages(tx, &mut ticket, merge, &mut change)?;
        }
        // The closed ticket a late reply opened this one from links back to it, in the same change.
        change.other_tickets.extend(plan.linked);
        ticket.message_count += change.messages.len() as u32;
        let outcome = Outcome::Stored {
            ticket: ticket.id.clone(),
            new: plan.is_new,
            queued: super::queued(&change),
        };
        change.ticket = Some(ticket);
        Ok(Planned::Change(Box::new(change), outcome, tally))
    }

    /// Carry out a merge the desk decided: every message of `ticket` (the one `change` is about to append
    /// included) moves to the end of the survivor's, and the Message-IDs that led to `ticket` lead there.
    fn move_merged_messages(
        &self,
        tx: &dyn Lookup,
        ticket: &mut Ticket,
        merge: Merge,
        change: &mut Change,
    ) -> Result<(), StoreError> {
        let Merge {
            mut survivor,
            message_ids,
        } = merge;
        let mut moved = tx.messages(&ticket.id)?;
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
        change.other_message_ids.extend(
            message_ids
                .into_iter()
                .map(|mid| (mid, survivor.id.clone())),
        );
        ticket.message_count = 0;
        tracing::info!(ticket = %ticket.id, into = %survivor.id, "tickets merged");
        change.other_tickets.push(survivor);
        Ok(())
    }

    /// Everything the store (and the batch so far) knows that concerns this mail, arriving for `region`:
    /// an earlier copy, tagged and referenced tickets, the next ticket number, a merge target, the staff
    /// mail it answers.
    fn known(
        &self,
        tx: &dyn Lookup,
        region: &RegionConfig,
        inbound: &Inbound,
        pending: &Pending,
    ) -> Result<Known, StoreError> {
        let load = |id: &TicketId| -> Result<Option<Ticket>, StoreError> {
            match pending.tickets.get(id) {
                Some(t) => Ok(Some(t.clone())),
                None => tx.ticket(id),
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
            None => tx.duplicate_of(&inbound.message_id, &inbound.content_hash)?,
        };
        let mut known = Known {
            duplicate_of,
            ..Known::default()
        };
        if known.duplicate_of.is_some() {
            return Ok(known);
        }
        known.next_number = Some(match pending.next_number.get(&region.code) {
            Some(&n) => n,
            None => tx.next_ticket_number(&region.code, region.first_number)?,
        });
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
        let secret = &self.composer.secret;
        known.own_message = outbound::msgid::verify(&inbound.message_id, secret).is_some();
        // A delivery report naming a Message-ID we signed: the ticket and outbox row it reports on.
        if let Some(reported) = &inbound.auto.reported_message_id {
            if let Some((id, outbox_id)) = outbound::msgid::verify(reported, secret) {
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
        // The mail answered, if it is staff mail we sent (In-Reply-To only: References of customer mail
        // carry the ids of the whole thread, notifications included).
        for mid in &inbound.in_reply_to {
            if let Some((event, id, _)) = outbound::msgid::verify_event(mid, secret) {
                if event.audience() == Audience::Staff {
                    known.staff_mail_answered = ticket(&id)?;
                    break;
                }
            }
        }
        // In-Reply-To names the mail answered; References from the newest back.
        let mut seen = Vec::new();
        for mid in inbound
            .in_reply_to
            .iter()
            .chain(inbound.references.iter().rev())
        {
            let mut ids = tx.tickets_for_message_id(mid)?;
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
        // A closed ticket this mail names may be reopened as a new, linked ticket: its last answer, for the
        // new ticket's notification.
        for t in known.tagged.iter().chain(&known.referenced) {
            if t.status == crate::desk::ticket::Status::Closed
                && !known.last_answers.iter().any(|(id, _)| *id == t.id)
            {
                let last = tx
                    .messages(&t.id)?
                    .into_iter()
                    .rev()
                    .find(|m| m.direction == crate::desk::ticket::Direction::Out)
                    .map(|m| m.text);
                if let Some(text) = last {
                    known.last_answers.push((t.id.clone(), text));
                }
            }
        }
        Ok(known)
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
