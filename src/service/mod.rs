//! The application service: the one way a change reaches the store. Read what a decision needs → decide
//! (pure, [`crate::desk`]) → render ([`crate::outbound`]) → commit one change ([`crate::store`]).
//!
//! Every entry point goes through [`Desk`]: intake sources call [`Desk::ingest`] (one mail) and
//! [`Desk::ingest_batch`] (many), the scheduler [`Desk::fire_timer`], the CLI and the control socket
//! [`Desk::set_status`] and [`Desk::retry_outbox`], privacy its export and erasure. The decisions are
//! complete (ticket numbers, merges, status changes and timers are the desk's); what is left here is
//! I/O and the bookkeeping of storage:
//! - [`ingest`]: parse, look up what the store (and the batch so far) knows, decide, commit; a merge moves
//!   the messages;
//! - [`replies`]: render the decided replies into outbox rows within the loop protections of their
//!   audience — per-recipient limits for automatic customer mail, the staff breaker for staff mail — and
//!   record a mail whose template fails at run time as `failed` instead of refusing the change;
//! - [`timers`]: fire a due timer, conversation or retention, and change a status on request.
//!
//! Nothing here flushes: a source ingests, calls [`crate::store::Store::flush_async`] once, and only then
//! acknowledges the mail at its source.

mod ingest;
mod replies;
mod timers;

#[cfg(test)]
mod spam_tests;
#[cfg(test)]
mod tests;

use crate::store::{Change, Storage, Store, StoreError};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::Config;
use crate::desk::ticket::{Message, Ticket, TicketId};
use crate::outbound::{self, render::Renderer, Composer, OutboxItem};
use crate::telemetry::Telemetry;

pub use ingest::Incoming;

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

/// Why a change could not be made. An intake source must keep the mail and try again later.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `outbox retry` of a row already sent, without `--force`.
    #[error("outbox {id} was already sent at {}; pass --force to send it again", sent_at.format("%Y-%m-%d %H:%M:%S UTC"))]
    AlreadySent { id: u64, sent_at: DateTime<Utc> },
    /// `outbox retry` of a row whose template still fails.
    #[error("cannot render the mail: {0}")]
    Render(#[from] outbound::RerenderError),
}

/// The pieces every change needs, shared by every entry point.
pub struct Desk {
    pub config: Config,
    pub store: Arc<Store>,
    pub composer: Composer,
    /// Health and metrics: owned by the daemon, outlives a Desk rebuilt on reload.
    pub telemetry: Arc<Telemetry>,
}

/// Why a desk could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum DeskError {
    #[error(transparent)]
    Templates(#[from] outbound::render::RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a change did besides its writes, counted once it is committed.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// Staff mails the staff breaker held back.
    staff_held_back: u64,
    /// Mails recorded as failed because their template failed.
    render_failures: u64,
}

impl Desk {
    /// Compile the templates and load the Message-ID secret: everything deciding and composing needs.
    /// Metrics go to a telemetry of its own (one-shot commands); the daemon uses [`Desk::with_telemetry`].
    pub fn new(config: Config, store: Arc<Store>) -> Result<Desk, DeskError> {
        Desk::with_telemetry(config, store, Arc::new(Telemetry::new()))
    }

    /// Like [`Desk::new`], reporting to `telemetry`: the daemon creates one and hands it to every Desk it
    /// builds (at start and on each config reload), so counters and intake health carry over.
    pub fn with_telemetry(
        config: Config,
        store: Arc<Store>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Desk, DeskError> {
        let renderer = Renderer::load(config.outbound.templates_dir.as_deref())?;
        let secret = store.message_id_secret(
            config
                .outbound
                .message_id_secret
                .as_ref()
                .map(|s| s.expose()),
        )?;
        telemetry.configure(&config);
        Ok(Desk {
            config,
            store,
            composer: Composer { renderer, secret },
            telemetry,
        })
    }

    /// Count what a committed change did: automatic mail held back, a bounce recorded, staff mail held
    /// back, templates that failed.
    fn count_committed(&self, change: &Change, tally: Tally) {
        if let Some(ticket) = &change.ticket {
            self.telemetry
                .auto_replies_suppressed(&ticket.region, change.suppressed);
            self.telemetry
                .staff_mail_held_back(&ticket.region, tally.staff_held_back);
            self.telemetry
                .render_failures(&ticket.region, tally.render_failures);
        }
        if change.bounced.is_some() {
            self.telemetry.outbox_bounced();
        }
    }
}

/// How many of a change's outbox rows wait to be sent (a row whose template failed is stored `failed`).
fn queued(change: &Change) -> usize {
    change
        .outbox
        .iter()
        .filter(|i| i.status == outbound::OutboxStatus::Queued)
        .count()
}

/// Every Message-ID that leads to `ticket`: its messages', its thread's and its outbox rows'.
pub fn message_ids<'a>(
    ticket: &Ticket,
    messages: impl Iterator<Item = &'a Message>,
    rows: &[OutboxItem],
) -> Vec<String> {
    let mut ids: Vec<String> = messages
        .map(|m| m.message_id.clone())
        .chain(ticket.thread_ids.iter().cloned())
        .chain(ticket.last_customer_message_id.iter().cloned())
        .chain(rows.iter().map(|r| r.message_id.clone()))
        .filter(|m| !m.is_empty())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Run CPU-heavy work (a batch ingest) from async code: on a multi-thread runtime the worker thread is
/// handed over so other tasks keep running; elsewhere (a current-thread runtime) it simply runs.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
