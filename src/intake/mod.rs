//! Intake: raw mail from a source (IMAP, Maildir, the MTA pipe) becomes a committed change in the store.
//!
//! [`ingest`] is the one path every source uses: parse, look up what the store knows, decide (pure), render
//! the replies, commit in one transaction. It does not flush: a source ingests a batch, calls
//! [`crate::store::Store::flush_async`] once, and only then acknowledges the batch at its source.

pub mod imap;
pub mod maildir;
pub mod pipe;

use chrono::{DateTime, Utc};

use crate::config::{Config, RegionConfig};
use crate::desk::decide::{self, Decision, Delivery, Known};
use crate::desk::thread;
use crate::desk::ticket::TicketId;
use crate::mail::{self, NotMail};
use crate::outbound::{self, render::Renderer};
use crate::store::{Change, Committed, Store, StoreError};

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
    pub renderer: Renderer,
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
        self.ingest_with_state(region, raw, source, delivery, quarantine_junk, None, now)
    }

    /// [`Desk::ingest`], also writing `state` (an intake's position, e.g. the last IMAP UID stored) into the
    /// store in the same transaction as the ticket.
    #[allow(clippy::too_many_arguments)]
    pub fn ingest_with_state(
        &self,
        region: &RegionConfig,
        raw: &[u8],
        source: &str,
        delivery: &Delivery,
        quarantine_junk: bool,
        state: Option<(Vec<u8>, Vec<u8>)>,
        now: DateTime<Utc>,
    ) -> Result<Result<Outcome, NotMail>, IngestError> {
        let inbound = match mail::parse(raw, region.locale) {
            Ok(m) => m,
            Err(e @ NotMail::ParserPanic(_)) => {
                let q = self
                    .store
                    .quarantine(&region.code, source, &e.to_string(), raw)?;
                tracing::error!(region = %region.code, quarantine = q.id, "mail could not be parsed and was quarantined: {e}");
                return Ok(Ok(Outcome::Quarantined {
                    id: q.id,
                    reason: e.to_string(),
                }));
            }
            Err(e) if quarantine_junk => {
                let q = self
                    .store
                    .quarantine(&region.code, source, &e.to_string(), raw)?;
                tracing::warn!(region = %region.code, quarantine = q.id, "input is not a mail ({e}); kept in quarantine");
                return Ok(Ok(Outcome::Quarantined {
                    id: q.id,
                    reason: e.to_string(),
                }));
            }
            Err(e) => return Ok(Err(e)),
        };

        let _writer = self.store.writer();
        let known = self.known(&inbound)?;
        let plan = match decide::decide(&inbound, region, &self.config, &known, delivery, now) {
            Decision::Duplicate(id) => return Ok(Ok(Outcome::Duplicate(id))),
            Decision::Store(plan) => plan,
        };
        let mut ticket = plan.ticket;
        if plan.is_new {
            let region_of_ticket = self.config.region(&ticket.region).unwrap_or(region);
            ticket.id.number = self
                .store
                .next_ticket_number(&ticket.region, region_of_ticket.first_number)?;
        }
        let mut change = Change {
            new_ticket: plan.is_new,
            dedupe: Some((inbound.message_id.clone(), inbound.content_hash.clone())),
            message_ids: vec![inbound.message_id.clone()],
            intake_state: state,
            ..Change::default()
        };
        change.messages.push(plan.message);
        change
            .blobs
            .push((inbound.raw_sha256.clone(), raw.to_vec()));
        for a in &inbound.attachments {
            change.blobs.push((a.sha256.clone(), a.data.clone()));
        }
        let ticket_region = self.config.region(&ticket.region).unwrap_or(region);
        for reply in &plan.replies {
            let item = outbound::compose(
                reply,
                &ticket,
                ticket_region,
                &self.config,
                &self.renderer,
                self.store.generate_id()?,
                now,
            )?;
            decide::remember_thread_id(&mut ticket, &item.message_id);
            change.message_ids.push(item.message_id.clone());
            change.outbox.push(item);
        }
        ticket.message_count += change.messages.len() as u32;
        let id = ticket.id.clone();
        let queued = change.outbox.len();
        change.ticket = Some(ticket);
        match self.store.commit(&change)? {
            Committed::Applied => Ok(Ok(Outcome::Stored {
                ticket: id,
                new: plan.is_new,
                queued,
            })),
            Committed::Duplicate(existing) => Ok(Ok(Outcome::Duplicate(existing))),
        }
    }

    /// Everything the store knows that concerns this mail: an earlier copy, tagged and referenced tickets.
    fn known(&self, inbound: &mail::Inbound) -> Result<Known, StoreError> {
        let mut known = Known {
            duplicate_of: self
                .store
                .duplicate_of(&inbound.message_id, &inbound.content_hash)?,
            ..Known::default()
        };
        if known.duplicate_of.is_some() {
            return Ok(known);
        }
        for tag in thread::tags_in_subject(&inbound.subject) {
            if let Some(t) = self.store.ticket(&tag)? {
                known.tagged.push(t);
            }
        }
        // In-Reply-To names the mail answered; References from the newest back.
        let ids = inbound
            .in_reply_to
            .iter()
            .chain(inbound.references.iter().rev());
        let mut seen = Vec::new();
        for mid in ids {
            for id in self.store.tickets_for_message_id(mid)? {
                if !seen.contains(&id) {
                    if let Some(t) = self.store.ticket(&id)? {
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
        let _writer = self.store.writer();
        let ticket = self
            .store
            .ticket(id)?
            .ok_or_else(|| StoreError::NoTicket(id.clone()))?;
        let (mut ticket, replies) = match decide::set_status(&ticket, status, now) {
            Ok(x) => x,
            Err(e) => return Ok(Err(e)),
        };
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
        let mut change = Change::default();
        for reply in &replies {
            let item = outbound::compose(
                reply,
                &ticket,
                region,
                &self.config,
                &self.renderer,
                self.store.generate_id()?,
                now,
            )?;
            decide::remember_thread_id(&mut ticket, &item.message_id);
            change.message_ids.push(item.message_id.clone());
            change.outbox.push(item);
        }
        ticket.message_count += change.messages.len() as u32;
        let queued = change.outbox.len();
        change.ticket = Some(ticket);
        self.store.commit(&change)?;
        Ok(Ok(queued))
    }
}
