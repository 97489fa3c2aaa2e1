//! The storage interface: what postdesk asks of a storage engine, in postdesk's own types.
//!
//! Three traits, by who may call what:
//! - [`Lookup`]: the reads a decision needs (a ticket, its messages, the Message-ID, de-duplication and
//!   requester indexes, the next ticket number, the rate-limit log, a blob). Both the store and the
//!   writer's handle answer them.
//! - [`Tx`]: the writer's handle, given only inside [`StorageExt::write`]: [`Tx::commit_all`] applies
//!   [`Change`]s atomically; erasure and retention rewrite ([`Tx::rewrite`], [`Tx::forget_address`]).
//! - [`Storage`]: the engine: the write gate ([`Storage::with_writer`]; callers use its closure form
//!   [`StorageExt::write`], which every engine gets for free), durability ([`Storage::flush_async`],
//!   [`Storage::writable`]), ids, the outbox queue, the timer queue, the intake cursor, the quarantine, the
//!   counts. Methods with a body are built from the others; an engine may override them when it can do
//!   better (sled counts its queued rows from the due index).
//!
//! What an engine implements: 8 reads ([`Lookup`]), 3 writes ([`Tx`]), 20 operations ([`Storage`]).
//!
//! Nothing here names an engine's types: an engine converts its errors into [`StoreError`] where they
//! arise, deciding there what they mean (another process holds the database: [`StoreError::Busy`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::outbox::{OutboxCounts, OutboxFilter, OutboxItem, OutboxStatus};
use crate::desk::ticket::{Message, Status, Ticket, TicketId, TimerKind};

/// A storage failure. The message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (a daemon, or another command) holds the store; it may be free again shortly.
    #[error("cannot open the store at {path}: another process holds it (is another postdesk running with this storage.path?)")]
    Busy { path: String },
    #[error("cannot open the store at {path}: {reason} (is another postdesk running with this storage.path, and is the directory writable?)")]
    Open { path: String, reason: String },
    #[error("storage error: {0} (check free disk space and permissions of storage.path)")]
    Io(#[source] std::io::Error),
    #[error("corrupt record in tree {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
    /// What the engine reported that is neither I/O nor corruption (a bug in it, an unsupported use).
    #[error("storage error: {0} (check free disk space and permissions of storage.path)")]
    Engine(String),
    #[error("ticket {0} does not exist")]
    NoTicket(TicketId),
    #[error("outbox row {0} does not exist")]
    NoOutboxRow(u64),
    #[error("the change conflicts with the store's state ({0}); it was not applied")]
    Conflict(String),
    #[error("storage.path {path} has only {free_mib} MiB free (postdesk needs {need_mib} MiB to write safely); nothing more is stored and mail stays at its source until space is freed")]
    DiskFull {
        path: String,
        free_mib: u64,
        need_mib: u64,
    },
    /// [`Storage::compact`] needs room for a copy of the store; nothing was changed.
    #[error("rewriting the store needs {need_mib} MiB free at {path} (a copy of it and a margin), but {free_mib} MiB are free; free space and run the command again (what it erased from the tickets stays erased)")]
    NoRoomToCompact {
        path: String,
        free_mib: u64,
        need_mib: u64,
    },
    #[error("a write to the store failed earlier ({0}); what is in memory may not be on disk, so postdesk stores, sends and acknowledges nothing more: restart it (it resumes from what is on disk; mail not acknowledged is fetched again)")]
    Failed(String),
}

impl StoreError {
    /// Whether another process holds the store (a daemon, or another command): worth waiting for.
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Busy { .. })
    }
}

/// Input that could not become a ticket, kept so nothing is lost in silence.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quarantined {
    pub id: u64,
    pub region: String,
    pub source: String,
    pub reason: String,
    pub size: u64,
    pub raw_sha256: String,
    pub received_at: DateTime<Utc>,
}

/// Everything one event changes, applied atomically.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// The ticket after the change (with its final id).
    pub ticket: Option<Ticket>,
    /// For a new ticket: the region whose sequence must currently be at `ticket.id.number`.
    pub new_ticket: bool,
    /// Messages to append (their indexes are `ticket.message_count - messages.len() ..`).
    pub messages: Vec<Message>,
    /// Blobs to store if absent: (sha256, bytes).
    pub blobs: Vec<(String, Vec<u8>)>,
    /// Outbox rows to queue.
    pub outbox: Vec<OutboxItem>,
    /// (Message-ID, content hash) that identifies the mail, for de-duplication.
    pub dedupe: Option<(String, String)>,
    /// Message-IDs to index to the ticket.
    pub message_ids: Vec<String>,
    /// An intake's position to record with the change (key and value, as [`Storage::intake_state`] reads).
    pub intake_state: Option<(Vec<u8>, Vec<u8>)>,
    /// Automatic mail queued by the change: (recipient, when, outbox id), for the rate limits.
    pub auto_log: Vec<(String, DateTime<Utc>, u64)>,
    /// Automatic mails the rate limits held back (counted per region, shown by `postdesk stats`).
    pub suppressed: u64,
    /// An outbox row a delivery report says bounced, and the report's diagnostic.
    pub bounced: Option<(u64, String)>,
    /// Further tickets the change rewrites whole (the survivor of a merge).
    pub other_tickets: Vec<Ticket>,
    /// Messages written at explicit places (a merge moves them): (ticket, index, message).
    pub placed_messages: Vec<(TicketId, u32, Message)>,
    /// Messages removed from their place (a merge moved them away).
    pub removed_messages: Vec<(TicketId, u32)>,
    /// Message-IDs to index to another ticket than `ticket` (a merge's survivor).
    pub other_message_ids: Vec<(String, TicketId)>,
}

/// The result of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    Applied,
    /// The mail was already stored in this ticket: nothing changed.
    Duplicate(TicketId),
}

/// Rewriting or deleting what the store holds about one ticket, in one transaction: what erasure
/// (`postdesk customer erase`) and retention (`[retention]`) do. Fields left empty change nothing.
///
/// Blob reference counts follow the messages; a blob whose count reaches zero is deleted with them, unless
/// something outside the messages still needs it (the raw copy of quarantined input).
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    pub id: Option<TicketId>,
    /// The ticket's new state; `None` deletes it (with its timers).
    pub ticket: Option<Ticket>,
    /// Messages by index: new content, or `None` to delete.
    pub messages: Vec<(u32, Option<Message>)>,
    /// Addresses whose requester index entry for this ticket goes.
    pub requester_entries: Vec<String>,
    /// De-duplication entries (Message-ID, content hash) to remove.
    pub dedupe: Vec<(String, String)>,
    /// Message-IDs that must no longer lead to this ticket.
    pub message_ids: Vec<String>,
    /// Outbox rows: new content, or `None` to delete the row.
    pub outbox: Vec<(u64, Option<OutboxItem>)>,
    /// A counter to increase (e.g. `retention:tickets:JP`, read by [`Storage::counter`]).
    pub counter: Option<(String, u64)>,
}

/// What a rewrite deleted from the blob store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub blobs: usize,
    pub bytes: u64,
}

/// What [`Storage::compact`] did: the size of the database's files before and after.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// A scheduled timer: (ticket, kind, due).
pub type Timer = (TicketId, TimerKind, DateTime<Utc>);

/// Woken by the store after commits, so the queues' consumers need not poll.
#[derive(Debug, Default)]
pub struct Wake {
    /// Whenever an outbox row is queued (the outbox worker).
    pub outbox: Arc<Notify>,
    /// Whenever tickets' timers are rewritten (the scheduler).
    pub timers: Arc<Notify>,
}

/// The future of [`Storage::flush_async`].
pub type Flush<'a> = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + 'a>>;

/// What deciding on a mail reads. Inside [`StorageExt::write`] the writer's [`Tx`] answers it from the state
/// its commits will be checked against; outside, the store answers from what is committed.
pub trait Lookup {
    fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError>;

    /// A ticket's messages with their indexes, in order (a merge leaves gaps).
    fn messages_indexed(&self, id: &TicketId) -> Result<Vec<(u32, Message)>, StoreError>;

    /// Tickets that received or sent a mail with this Message-ID.
    fn tickets_for_message_id(&self, message_id: &str) -> Result<Vec<TicketId>, StoreError>;

    /// The ticket that already holds this mail, if any.
    fn duplicate_of(
        &self,
        message_id: &str,
        content_hash: &str,
    ) -> Result<Option<TicketId>, StoreError>;

    /// Ticket ids a customer (any case of the address) is the requester of, in id order.
    fn tickets_of_requester(&self, address: &str) -> Result<Vec<TicketId>, StoreError>;

    /// The number the next ticket of `region` gets (`first` while the region has none).
    fn next_ticket_number(&self, region: &str, first: u64) -> Result<u64, StoreError>;

    /// When automatic mail went to `recipient` since `since` (for the rate limits): the newest `at_most`,
    /// newest first. A limit of N needs at most N of them to decide, so a busy address costs O(N) per
    /// decision, not O(its whole day).
    fn auto_mail_since(
        &self,
        recipient: &str,
        since: DateTime<Utc>,
        at_most: usize,
    ) -> Result<Vec<DateTime<Utc>>, StoreError>;

    /// How many automatic mails went to `recipient` since `since`, counted by the minute (the minute `since`
    /// falls in counts whole). Costs O(minutes in the window), not O(mails): the staff breaker asks it
    /// for every notification to a busy agents' address.
    fn auto_mail_count(&self, recipient: &str, since: DateTime<Utc>) -> Result<usize, StoreError>;

    /// Attachment or raw-mail bytes by sha256 (hex).
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// A ticket's messages, in order.
    fn messages(&self, id: &TicketId) -> Result<Vec<Message>, StoreError> {
        Ok(self
            .messages_indexed(id)?
            .into_iter()
            .map(|(_, m)| m)
            .collect())
    }
}

/// The writer's handle, given only inside [`StorageExt::write`]: no other writer's commit lands while it
/// lives. Each call is atomic on its own (all of it or nothing) and stays applied whatever the closure does
/// afterwards; none is durable before [`Storage::flush_async`].
pub trait Tx: Lookup {
    /// Apply several changes, in order, in one transaction: all of them or none. Returns
    /// [`Committed::Duplicate`] (and changes nothing) when the de-duplication key of any of them is already
    /// present (callers de-duplicate a batch before committing it). A new ticket whose number is not the
    /// region's next is a [`StoreError::Conflict`], never a silent skip.
    fn commit_all(&self, changes: &[Change]) -> Result<Committed, StoreError>;

    /// Rewrite or delete what the store holds about one ticket. Returns what left the blob store.
    fn rewrite(&self, rewrite: &Rewrite) -> Result<Removed, StoreError>;

    /// Forget what is kept about an address outside its tickets: its entries in the rate-limit log, and
    /// quarantined input whose raw bytes mention it (ASCII case-insensitive), with the raw copy unless a
    /// message refers to it too. Returns how many quarantine entries went.
    fn forget_address(&self, address: &str) -> Result<usize, StoreError>;

    /// [`Tx::commit_all`] of one change.
    fn commit(&self, change: &Change) -> Result<Committed, StoreError> {
        self.commit_all(std::slice::from_ref(change))
    }
}

/// A storage engine. sled ([`super::Store`]) is the embedded default.
///
/// Contract: every change one event causes is one [`Tx::commit_all`] (ticket, messages, indexes, blobs,
/// outbox rows, timers, intake position); a source is acknowledged only after [`Storage::flush_async`]
/// returned, and an outbox outcome is reported only after it did. Writers are serialised by
/// [`StorageExt::write`], so reading, deciding and committing see one consistent state.
pub trait Storage: Lookup + Send + Sync {
    /// Run `f` with the writer held: the object-safe form of [`StorageExt::write`], which callers use. An
    /// engine calls `f` exactly once.
    fn with_writer(&self, f: &mut dyn FnMut(&dyn Tx));

    /// Make everything committed so far durable.
    fn flush_async(&self) -> Flush<'_>;

    /// Whether it is safe to write, and to act on what was written (an engine that lost a write refuses
    /// everything from then on: [`StoreError::Failed`]; one short of disk space: [`StoreError::DiskFull`]).
    fn writable(&self) -> Result<(), StoreError>;

    /// A fresh unique id for an outbox row: a sequence that continues where it stopped when the store is
    /// opened again (1, 2, 3 … in a new store). Skips only an id drawn for a change that was not committed;
    /// never repeats.
    fn generate_id(&self) -> Result<u64, StoreError>;

    /// What the store wakes after commits.
    fn wake(&self) -> &Wake;

    /// The secret of outgoing Message-IDs: the configured one, else one generated once and kept (processes
    /// racing to create it all end up with the first one stored).
    fn message_id_secret(&self, configured: Option<&str>) -> Result<Vec<u8>, StoreError>;

    /// Tickets, optionally of one region and/or status, in id order.
    fn tickets(
        &self,
        region: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<Ticket>, StoreError>;

    /// Outbox rows, oldest first.
    fn outbox_list(&self, filter: OutboxFilter<'_>) -> Result<Vec<OutboxItem>, StoreError>;

    /// Queued rows due at `now`, at most `limit`, soonest first, leaving out the rows in `skip` (those being
    /// sent) without reading them. Costs O(limit + skip), whatever the outbox holds: the outbox worker asks
    /// for as many rows as it has free slots each time a send ends, so it reads only what it sends.
    fn outbox_due_except(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: &std::collections::HashSet<u64>,
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// Queued rows due at `now`, at most `limit`, soonest first.
    fn outbox_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_due_except(now, limit, &std::collections::HashSet::new())
    }

    /// When the next queued row is due.
    fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Replace an outbox row (after a send attempt, or a retry), keeping the queue in step.
    fn outbox_update(&self, item: OutboxItem) -> Result<(), StoreError>;

    /// Timers due at `now`, soonest first, at most `limit`. Costs O(due), whatever the store holds.
    fn timers_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError>;

    /// An intake's recorded position (see [`Change::intake_state`]).
    fn intake_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Record an intake's position outside a ticket change (after duplicates or quarantined mail).
    fn set_intake_state(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;

    /// Keep input that could not become a ticket: its raw bytes, and a quarantine entry.
    fn quarantine(
        &self,
        region: &str,
        source: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<Quarantined, StoreError>;

    /// Every quarantine entry, oldest first.
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError>;

    /// Tickets per (region, status) with at least one, sorted: for `postdesk stats` and `/metrics`, from
    /// running counts (not a scan of the tickets).
    fn counts(&self) -> Result<Vec<(String, Status, usize)>, StoreError>;

    /// Outbox rows by status, for `/healthz` and `/metrics`, from running counts.
    fn outbox_counts(&self) -> Result<OutboxCounts, StoreError>;

    /// A named counter (0 when absent): `retention:<what>:<REGION>`, `suppressed:<REGION>`.
    fn counter(&self, name: &str) -> Result<u64, StoreError>;

    /// Rewrite the store's files so that nothing deleted or overwritten survives in them: what erasure
    /// calls after its rewrites, because a log-structured or MVCC engine keeps old versions on disk. It
    /// takes the writer itself (never call it inside [`StorageExt::write`]); writes wait meanwhile, reads
    /// go on. sled copies every tree into a fresh database and swaps it in (`store/sled/compact.rs`); an
    /// engine with a server does the equivalent there (PostgreSQL: `VACUUM FULL` of the tables a rewrite
    /// touches, whose old row versions stay in the heap files until then).
    fn compact(&self) -> Result<Compacted, StoreError>;

    // Provided: built from the operations above.

    /// Every outbox row, oldest first.
    fn outbox_all(&self) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_list(OutboxFilter::All)
    }

    /// The outbox rows of one ticket, oldest first.
    fn outbox_of_ticket(&self, id: &TicketId) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_list(OutboxFilter::Ticket(id))
    }

    fn outbox_item(&self, id: u64) -> Result<Option<OutboxItem>, StoreError> {
        Ok(self.outbox_list(OutboxFilter::One(id))?.into_iter().next())
    }

    /// Queue a row again now (after `failed`, or to skip a backoff wait).
    fn outbox_retry(&self, id: u64) -> Result<OutboxItem, StoreError> {
        let mut item = self.outbox_item(id)?.ok_or(StoreError::NoOutboxRow(id))?;
        item.status = OutboxStatus::Queued;
        item.next_attempt_at = Utc::now();
        // An admin's retry starts the retry age afresh; `created_at` keeps saying when it was queued.
        item.requeued_at = Some(Utc::now());
        self.outbox_update(item.clone())?;
        Ok(item)
    }

    /// How many rows wait to be sent, cheap enough for the daemon's status line to ask often.
    fn outbox_queued(&self) -> usize {
        self.outbox_counts().map(|c| c.queued as usize).unwrap_or(0)
    }

    /// When the earliest timer is due.
    fn timers_next(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .timers_due(DateTime::<Utc>::MAX_UTC, 1)?
            .first()
            .map(|(_, _, due)| *due))
    }

    /// Every scheduled timer, soonest first (for `postdesk tickets due`).
    fn timers_all(&self) -> Result<Vec<Timer>, StoreError> {
        self.timers_due(DateTime::<Utc>::MAX_UTC, usize::MAX)
    }

    /// Automatic mails held back by the rate limits, per region.
    fn suppressed(&self, region: &str) -> Result<u64, StoreError> {
        self.counter(&format!("suppressed:{region}"))
    }
}

/// The write gate with a closure that returns a value, for every engine and for `dyn Storage`.
pub trait StorageExt: Storage {
    /// Run `f` with the writer held: from reading what a decision needs to committing its change, no other
    /// writer commits, and only `f`'s [`Tx`] can commit. Not re-entrant: `f` must not call `write` again.
    fn write<R>(&self, f: impl FnOnce(&dyn Tx) -> R) -> R {
        let mut f = Some(f);
        let mut out = None;
        self.with_writer(&mut |tx| {
            if let Some(f) = f.take() {
                out = Some(f(tx));
            }
        });
        out.expect("Storage::with_writer runs its closure exactly once")
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}
