//! The store: sled trees behind a small API of our own, so that moving to sled's successor touches one module.
//!
//! Trees (keys → values, values JSON unless said otherwise):
//! - `tickets`:    ticket key (`JP-` + u64 BE) → [`Ticket`]
//! - `messages`:   ticket key + u32 BE index → [`Message`]
//! - `msgid`:      Message-ID → list of ticket ids that received or sent it
//! - `dedupe`:     Message-ID + NUL + content hash → ticket id (re-deliveries change nothing)
//! - `requester`:  address + NUL + ticket key → () (a customer's tickets)
//! - `blobs`:      sha256 hex → blob id (u64 BE);  `blob_data`: blob id → bytes (attachments and raw mail,
//!   each stored once). The bytes sit under increasing ids so that large values are appended at the right
//!   edge of the tree instead of splitting nodes all over it, as random sha256 keys would.
//! - `blob_refs`:  sha256 hex → u64 BE: how many message references (attachments, kept raw mail) the blob
//!   has, so erasure and retention can delete a blob nobody else refers to without scanning every message
//! - `outbox`:     u64 BE id → [`OutboxItem`];  `outbox_due`: due millis BE + id BE → () (queued rows only);
//!   `outbox_ticket`: ticket key + id BE → () (a ticket's automatic mail)
//! - `auto_log`:   recipient + NUL + millis BE + outbox id BE → () (automatic mail sent, for rate limits)
//! - `timers`:     due millis BE + timer kind + ticket key → () (each ticket's scheduled timers, see
//!   [`Ticket::timers`]; rewritten with the ticket, so a tick reads only what is due)
//! - `meta`:       `seq:<REGION>` → next ticket number (u64 BE); `id_offset` → added to sled's id generator
//!   (set by a restore, see [`backup`]); `retention:<what>:<REGION>` → purge counters
//! - `quarantine`: u64 BE id → [`Quarantined`] (input that could not become a ticket, raw bytes in `blobs`)
//!
//! Every change one mail causes is one [`Change`] committed in one sled transaction: ticket, messages,
//! indexes, blobs, outbox rows and the id sequence. Callers flush ([`Store::flush_async`]) before they
//! acknowledge the mail at its source. Writers are serialised by [`Store::writer`], so reading candidates,
//! deciding and committing see one consistent state; the transaction re-checks the sequence and the
//! de-duplication key anyway, so a bug there aborts instead of corrupting.

pub mod backup;
mod rewrite;

pub use rewrite::Rewrite;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;
use tokio::sync::Notify;

use crate::desk::ticket::{Message, Status, Ticket, TicketId, TimerKind};
use crate::outbound::{OutboxItem, OutboxStatus};

/// A storage failure. The message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source} (is another postdesk running with this storage.path, and is the directory writable?)")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("storage error: {0} (check free disk space and permissions of storage.path)")]
    Sled(#[from] sled::Error),
    #[error("corrupt record in tree {tree}: {reason}")]
    Corrupt { tree: &'static str, reason: String },
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
    #[error("a write to the store failed earlier ({0}); what is in memory may not be on disk, so postdesk stores, sends and acknowledges nothing more: restart it (it resumes from what is on disk; mail not acknowledged is fetched again)")]
    Failed(String),
}

impl StoreError {
    /// Whether another process holds the store (a daemon, or another command).
    pub fn is_busy(&self) -> bool {
        matches!(self, StoreError::Open { source: sled::Error::Io(e), .. } if e.to_string().contains("could not acquire lock"))
    }
}

/// Why a transaction aborted on purpose.
#[derive(Debug)]
enum Abort {
    Duplicate(TicketId),
    Conflict(String),
    Corrupt(String),
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
    /// An intake's position to record with the change (key and value in `meta`).
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

/// Free space below which nothing more is written (see [`Store::writable`]): room for sled's next log
/// segments (8 MiB each) and a full IMAP batch (up to 32 MiB) with margin.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// The sled database and its trees.
pub struct Store {
    db: sled::Db,
    tickets: sled::Tree,
    messages: sled::Tree,
    msgid: sled::Tree,
    dedupe: sled::Tree,
    requester: sled::Tree,
    blobs: sled::Tree,
    blob_data: sled::Tree,
    blob_refs: sled::Tree,
    outbox: sled::Tree,
    outbox_due: sled::Tree,
    outbox_ticket: sled::Tree,
    auto_log: sled::Tree,
    timers: sled::Tree,
    meta: sled::Tree,
    quarantine: sled::Tree,
    writer: Mutex<()>,
    /// Every write to the trees holds this shared; a backup holds it exclusively, so the snapshot it
    /// copies tree by tree is one consistent state.
    gate: RwLock<()>,
    /// Added to sled's id generator: a restored store continues above every id of the backup.
    id_offset: u64,
    /// The directory, for the free-space check.
    dir: std::path::PathBuf,
    /// Set when a flush failed: see [`Store::writable`].
    failed: Mutex<Option<String>>,
    /// The flusher thread: see [`Store::flush_async`].
    flusher: Option<Flusher>,
    /// Woken whenever an outbox row is queued, so the worker need not poll.
    pub outbox_wake: Arc<Notify>,
    /// Woken whenever tickets' timers are rewritten, so the scheduler can sleep until the earliest.
    pub timer_wake: Arc<Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// The sort key of a ticket id: region, `-`, number big-endian (so `JP-999` sorts before `JP-1000`).
pub fn ticket_key(id: &TicketId) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.region.len() + 9);
    k.extend_from_slice(id.region.as_bytes());
    k.push(b'-');
    k.extend_from_slice(&id.number.to_be_bytes());
    k
}

fn message_key(id: &TicketId, index: u32) -> Vec<u8> {
    let mut k = ticket_key(id);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

fn dedupe_key(message_id: &str, hash: &str) -> Vec<u8> {
    let mut k = message_id.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(hash.as_bytes());
    k
}

fn due_key(at: DateTime<Utc>, id: u64) -> Vec<u8> {
    let mut k = (at.timestamp_millis().max(0) as u64).to_be_bytes().to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn parse_timer_key(k: &[u8]) -> Option<(TicketId, TimerKind, DateTime<Utc>)> {
    let due = DateTime::from_timestamp_millis(u64_of(k.get(..8)?)? as i64)?;
    let kind = TimerKind::from_code(*k.get(8)?)?;
    let rest = k.get(9..)?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let region = std::str::from_utf8(&rest[..dash]).ok()?;
    let number = u64_of(rest.get(dash + 1..)?)?;
    Some((TicketId::new(region, number), kind, due))
}

fn auto_log_key(recipient: &str, at: DateTime<Utc>, id: u64) -> Vec<u8> {
    let mut k = recipient.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(&(at.timestamp_millis().max(0) as u64).to_be_bytes());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn seq_key(region: &str) -> Vec<u8> {
    format!("seq:{region}").into_bytes()
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Our own types serialise infallibly (no maps with non-string keys, no failing Serialize impls).
    serde_json::to_vec(v).unwrap_or_default()
}

fn from_json<T: for<'de> Deserialize<'de>>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

/// Running counts in `meta`, kept in the transaction of every write that adds, removes or changes a
/// ticket or an outbox row, so `/metrics`, `/healthz` and `stats` read a handful of keys instead of every
/// ticket and every mail ever sent.
const COUNTS_DONE: &[u8] = b"counts:v1";

fn ticket_count_key(region: &str, status: Status) -> Vec<u8> {
    format!("count:ticket:{region}:{}", status.as_str()).into_bytes()
}

fn outbox_count_key(status: OutboxStatus) -> Vec<u8> {
    format!("count:outbox:{}", status.as_str()).into_bytes()
}

/// Add `delta` to the count under `key` (never below zero).
pub(crate) fn bump<E>(
    meta: &TransactionalTree,
    key: &[u8],
    delta: i64,
) -> Result<(), ConflictableTransactionError<E>> {
    let n = meta.get(key)?.and_then(|v| u64_of(&v)).unwrap_or(0);
    let n = (n as i64).saturating_add(delta).max(0) as u64;
    meta.insert(key, &n.to_be_bytes())?;
    Ok(())
}

/// Move one ticket between counts: `old` is what the store held (None: new), `new` what it will hold
/// (None: deleted).
pub(crate) fn count_ticket<E>(
    meta: &TransactionalTree,
    old: Option<&Ticket>,
    new: Option<&Ticket>,
) -> Result<(), ConflictableTransactionError<E>> {
    let key = |t: &Ticket| ticket_count_key(&t.region, t.status);
    if old.map(key) == new.map(key) {
        return Ok(());
    }
    if let Some(o) = old {
        bump(meta, &key(o), -1)?;
    }
    if let Some(n) = new {
        bump(meta, &key(n), 1)?;
    }
    Ok(())
}

/// Move one outbox row between counts, like [`count_ticket`].
pub(crate) fn count_outbox<E>(
    meta: &TransactionalTree,
    old: Option<OutboxStatus>,
    new: Option<OutboxStatus>,
) -> Result<(), ConflictableTransactionError<E>> {
    if old == new {
        return Ok(());
    }
    if let Some(o) = old {
        bump(meta, &outbox_count_key(o), -1)?;
    }
    if let Some(n) = new {
        bump(meta, &outbox_count_key(n), 1)?;
    }
    Ok(())
}

/// The status of a stored outbox row, read without the rest of it.
fn outbox_status_of(bytes: &[u8]) -> Option<OutboxStatus> {
    #[derive(Deserialize)]
    struct Row {
        status: OutboxStatus,
    }
    serde_json::from_slice::<Row>(bytes).ok().map(|r| r.status)
}

fn u64_of(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(sled::Error::Io(e)))?;
        // The store holds customers' mail: owner only, whatever the umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| open_err(sled::Error::Io(e)))?;
        }
        let db = sled::Config::new()
            .path(dir.join("db"))
            .cache_capacity(32 * 1024 * 1024)
            .segment_size(8 * 1024 * 1024)
            .open()
            .map_err(open_err)?;
        let tree = |name: &str| db.open_tree(name);
        let meta = tree("meta")?;
        let id_offset = meta
            .get(b"id_offset")?
            .and_then(|v| u64_of(&v))
            .unwrap_or(0);
        let db_for_flusher = db.clone();
        let store = Store {
            tickets: tree("tickets")?,
            messages: tree("messages")?,
            msgid: tree("msgid")?,
            dedupe: tree("dedupe")?,
            requester: tree("requester")?,
            blobs: tree("blobs")?,
            blob_data: tree("blob_data")?,
            blob_refs: tree("blob_refs")?,
            outbox: tree("outbox")?,
            outbox_due: tree("outbox_due")?,
            outbox_ticket: tree("outbox_ticket")?,
            auto_log: tree("auto_log")?,
            timers: tree("timers")?,
            meta,
            quarantine: tree("quarantine")?,
            db,
            writer: Mutex::new(()),
            gate: RwLock::new(()),
            id_offset,
            dir: dir.to_path_buf(),
            failed: Mutex::new(None),
            flusher: Some(Flusher::start(db_for_flusher)),
            outbox_wake: Arc::new(Notify::new()),
            timer_wake: Arc::new(Notify::new()),
        };
        store.count_blob_refs()?;
        store.count_rows()?;
        Ok(store)
    }

    /// Build the running counts once for a store written before they existed (one pass at start-up).
    fn count_rows(&self) -> Result<(), StoreError> {
        if self.meta.get(COUNTS_DONE)?.is_some() {
            return Ok(());
        }
        let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for t in self.tickets(None, None)? {
            *counts
                .entry(ticket_count_key(&t.region, t.status))
                .or_default() += 1;
        }
        for v in self.outbox.iter().values() {
            if let Some(status) = outbox_status_of(&v?) {
                *counts.entry(outbox_count_key(status)).or_default() += 1;
            }
        }
        let mut batch = sled::Batch::default();
        for (k, n) in counts {
            batch.insert(k, &n.to_be_bytes());
        }
        batch.insert(COUNTS_DONE, &[]);
        self.meta.apply_batch(batch)?;
        Ok(())
    }

    /// Build `blob_refs` once for a store written before it existed.
    fn count_blob_refs(&self) -> Result<(), StoreError> {
        const DONE: &[u8] = b"blob_refs:v1";
        if self.meta.get(DONE)?.is_some() {
            return Ok(());
        }
        let mut counts: std::collections::HashMap<String, u64> = Default::default();
        for kv in self.messages.iter() {
            let (_, v) = kv?;
            let m: Message = from_json("messages", &v)?;
            for sha in crate::desk::retention::blobs_of(&m) {
                *counts.entry(sha).or_default() += 1;
            }
        }
        let mut batch = sled::Batch::default();
        for (sha, n) in counts {
            batch.insert(sha.as_bytes(), &n.to_be_bytes());
        }
        self.blob_refs.apply_batch(batch)?;
        self.meta.insert(DONE, &[])?;
        Ok(())
    }

    /// Shared access for one write (see [`Store::gate`]).
    fn write_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Open the store, waiting up to `max_wait` while another process (a short-lived `postdesk ingest`, or a
    /// daemon starting or stopping) holds its lock.
    pub fn open_waiting(dir: &Path, max_wait: std::time::Duration) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + max_wait;
        loop {
            match Store::open(dir) {
                Err(e) if e.is_busy() && std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    /// The writer lock: hold it from reading candidates to committing the change.
    pub fn writer(&self) -> MutexGuard<'_, ()> {
        // A panic while holding it leaves no half-written state (commits are transactions), so a poisoned
        // lock is safe to take over.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether it is safe to write (and to act on what was written): refuses when the disk of storage.path
    /// has less than [`MIN_FREE_BYTES`] free, or when a flush failed earlier.
    ///
    /// Why a margin instead of handling ENOSPC: sled 0.34 does not survive a failed write. The commit has
    /// already changed its in-memory trees, the flush fails, and from then on the process holds tickets and
    /// outbox rows that are not on disk (and sled refuses further writes until reopened). Before this check
    /// the fault test for a full disk (tests/faults.rs) showed the outbox worker sending the same
    /// not-durable acknowledgements in a loop, thousands of times, and the IMAP intake marking mail \Seen on
    /// the strength of an intake position that never reached the disk. So: stop writing before the disk is
    /// full (intake leaves mail at its source, the outbox waits; both resume by themselves once space is
    /// freed), and should a write still fail, refuse everything until a restart.
    pub fn writable(&self) -> Result<(), StoreError> {
        if let Some(why) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(StoreError::Failed(why));
        }
        // A filesystem that cannot say how much is free (rare) is not a reason to stop.
        if let Ok(free) = fs2::available_space(&self.dir) {
            if free < MIN_FREE_BYTES {
                return Err(StoreError::DiskFull {
                    path: self.dir.display().to_string(),
                    free_mib: free / (1024 * 1024),
                    need_mib: MIN_FREE_BYTES / (1024 * 1024),
                });
            }
        }
        Ok(())
    }

    fn flush_failed(&self, e: sled::Error) -> StoreError {
        let why = e.to_string();
        tracing::error!("the store could not write to disk: {why}; postdesk stops storing, sending and acknowledging until it is restarted (check free space and the disk of storage.path)");
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        StoreError::Sled(e)
    }

    /// Make everything committed so far durable.
    ///
    /// Every caller's request goes to the store's flusher thread, which runs one sled flush at a time and
    /// answers all requests that arrived meanwhile with the next one (a group commit, which covers their
    /// writes). Why not call sled's `flush_async` from each task: in sled 0.34 its futures, polled at about
    /// the same time from several tasks, are sometimes never woken (spacejam/sled#1241, #1308), and postdesk
    /// flushes from intake, outbox and scheduler at once; the fault tests hung on it, control socket
    /// included. Why not sled's blocking `flush` on tokio's blocking pool: running the flush on threads
    /// other than sled's own raised the peak RSS of the IMAP ingest benchmark from 170 to 543 MiB (281 on
    /// one dedicated thread). So the flusher thread still has sled's threads do the flush and only waits,
    /// alone, re-polling once a second should a wake-up be lost.
    pub async fn flush_async(&self) -> Result<(), StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.flusher.as_ref().map(|f| {
            f.requests
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(tx)
        });
        let result = match (sent, rx.await) {
            (Some(Ok(())), Ok(r)) => r,
            _ => Err(sled::Error::ReportableBug(
                "the store's flusher thread is gone".into(),
            )),
        };
        result.map_err(|e| self.flush_failed(e))?;
        Ok(())
    }

    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(|e| self.flush_failed(e))?;
        Ok(())
    }

    /// A fresh unique id (outbox rows, quarantine entries). May skip numbers after a crash; never repeats.
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?.saturating_add(self.id_offset))
    }

    pub fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        self.tickets
            .get(ticket_key(id))?
            .map(|v| from_json("tickets", &v))
            .transpose()
    }

    /// Tickets, optionally of one region and/or status, in id order.
    pub fn tickets(
        &self,
        region: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<Ticket>, StoreError> {
        let prefix = region
            .map(|r| format!("{r}-").into_bytes())
            .unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.tickets.scan_prefix(prefix) {
            let (_, v) = kv?;
            let t: Ticket = from_json("tickets", &v)?;
            if status.is_none_or(|s| t.status == s) {
                out.push(t);
            }
        }
        Ok(out)
    }

    pub fn messages(&self, id: &TicketId) -> Result<Vec<Message>, StoreError> {
        let mut out = Vec::new();
        for kv in self.messages.scan_prefix(ticket_key(id)) {
            let (k, v) = kv?;
            // The prefix of `JP-<8 bytes>` is exact: message keys are 4 bytes longer.
            if k.len() == ticket_key(id).len() + 4 {
                out.push(from_json("messages", &v)?);
            }
        }
        Ok(out)
    }

    /// Tickets that received or sent a mail with this Message-ID.
    pub fn tickets_for_message_id(&self, message_id: &str) -> Result<Vec<TicketId>, StoreError> {
        match self.msgid.get(message_id.as_bytes())? {
            Some(v) => from_json("msgid", &v),
            None => Ok(Vec::new()),
        }
    }

    /// The ticket that already holds this mail, if any.
    pub fn duplicate_of(
        &self,
        message_id: &str,
        content_hash: &str,
    ) -> Result<Option<TicketId>, StoreError> {
        match self.dedupe.get(dedupe_key(message_id, content_hash))? {
            Some(v) => Ok(Some(from_json("dedupe", &v)?)),
            None => Ok(None),
        }
    }

    /// Ticket ids a customer is the requester of.
    pub fn tickets_of_requester(&self, address: &str) -> Result<Vec<TicketId>, StoreError> {
        let mut prefix = address.to_ascii_lowercase().into_bytes();
        prefix.push(0);
        let mut out = Vec::new();
        for kv in self.requester.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let key = &k[prefix.len()..];
            if let Some(dash) = key.iter().position(|&b| b == b'-') {
                if let (Ok(region), Some(n)) =
                    (std::str::from_utf8(&key[..dash]), u64_of(&key[dash + 1..]))
                {
                    out.push(TicketId::new(region, n));
                }
            }
        }
        Ok(out)
    }

    /// The number the next ticket of `region` gets.
    pub fn next_ticket_number(&self, region: &str, first: u64) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(seq_key(region))?
            .and_then(|v| u64_of(&v))
            .unwrap_or(first))
    }

    pub fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(id) = self.blobs.get(sha256.as_bytes())? else {
            return Ok(None);
        };
        Ok(self.blob_data.get(id)?.map(|v| v.to_vec()))
    }

    /// Apply a change atomically. Returns [`Committed::Duplicate`] (and changes nothing) when the mail's
    /// de-duplication key is already present. Not durable until [`Store::flush_async`].
    pub fn commit(&self, change: &Change) -> Result<Committed, StoreError> {
        self.commit_all(std::slice::from_ref(change))
    }

    /// Apply several changes, in order, in one transaction: all of them or none. A de-duplication hit on
    /// any of them aborts the whole set (callers de-duplicate a batch before committing it).
    pub fn commit_all(&self, changes: &[Change]) -> Result<Committed, StoreError> {
        if changes.is_empty() {
            return Ok(Committed::Applied);
        }
        self.writable()?;
        // Ids for the blobs are drawn outside the transaction: its closure may run more than once.
        let mut blob_ids = Vec::with_capacity(changes.len());
        for change in changes {
            blob_ids.push(
                change
                    .blobs
                    .iter()
                    .map(|_| self.generate_id())
                    .collect::<Result<Vec<u64>, _>>()?,
            );
        }
        let _gate = self.write_gate();
        let trees = (
            &self.tickets,
            &self.messages,
            &self.msgid,
            &self.dedupe,
            &self.requester,
            &self.blobs,
            &self.blob_data,
            &self.blob_refs,
            &self.outbox,
            &self.outbox_due,
            &self.outbox_ticket,
            &self.auto_log,
            &self.timers,
            &self.meta,
        );
        let result = trees.transaction(
            |(
                tickets,
                messages,
                msgid,
                dedupe,
                requester,
                blobs,
                blob_data,
                blob_refs,
                outbox,
                outbox_due,
                outbox_ticket,
                auto_log,
                timers,
                meta,
            )| {
                let t = Trees {
                    tickets,
                    messages,
                    msgid,
                    dedupe,
                    requester,
                    blobs,
                    blob_data,
                    blob_refs,
                    outbox,
                    outbox_due,
                    outbox_ticket,
                    auto_log,
                    timers,
                    meta,
                };
                for (change, ids) in changes.iter().zip(&blob_ids) {
                    apply(&t, change, ids)?;
                }
                Ok(())
            },
        );
        match result {
            Ok(()) => {
                if changes.iter().any(|c| !c.outbox.is_empty()) {
                    self.outbox_wake.notify_one();
                }
                if changes.iter().any(|c| c.ticket.is_some()) {
                    self.timer_wake.notify_one();
                }
                Ok(Committed::Applied)
            }
            Err(TransactionError::Abort(Abort::Duplicate(id))) => Ok(Committed::Duplicate(id)),
            Err(TransactionError::Abort(Abort::Conflict(why))) => Err(StoreError::Conflict(why)),
            Err(TransactionError::Abort(Abort::Corrupt(why))) => Err(StoreError::Corrupt {
                tree: "dedupe",
                reason: why,
            }),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
        }
    }

    /// The secret of outgoing Message-IDs: the configured one, else one generated once and kept here.
    pub fn message_id_secret(&self, configured: Option<&str>) -> Result<Vec<u8>, StoreError> {
        if let Some(s) = configured {
            return Ok(s.as_bytes().to_vec());
        }
        if let Some(v) = self.meta.get(b"message_id_secret")? {
            return Ok(v.to_vec());
        }
        let mut secret = vec![0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| {
            StoreError::Conflict(format!("no randomness for the Message-ID secret: {e}"))
        })?;
        // Another process may have raced us: whoever wrote first wins, both use that one.
        let _gate = self.write_gate();
        match self.meta.compare_and_swap(
            b"message_id_secret",
            None as Option<&[u8]>,
            Some(secret.as_slice()),
        )? {
            Ok(()) => {
                self.db.flush()?;
                Ok(secret)
            }
            Err(cas) => Ok(cas.current.map(|v| v.to_vec()).unwrap_or(secret)),
        }
    }

    /// When automatic mail went to `recipient` since `since` (for the rate limits). Costs O(mails since).
    pub fn auto_mail_since(
        &self,
        recipient: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let start = auto_log_key(recipient, since, 0);
        let mut end = recipient.as_bytes().to_vec();
        end.push(1);
        let mut out = Vec::new();
        for kv in self.auto_log.range(start..end) {
            let (k, _) = kv?;
            let ms = k
                .get(recipient.len() + 1..recipient.len() + 9)
                .and_then(u64_of);
            if let Some(t) = ms.and_then(|ms| DateTime::from_timestamp_millis(ms as i64)) {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Timers due at `now`, soonest first, at most `limit`: (ticket, kind, due). Costs O(due entries), whatever
    /// the store holds.
    pub fn timers_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(TicketId, TimerKind, DateTime<Utc>)>, StoreError> {
        let end = ((now.timestamp_millis().max(0) as u64) + 1).to_be_bytes();
        self.timers
            .range(..end.as_slice())
            .take(limit)
            .map(|kv| Ok(parse_timer_key(&kv?.0)))
            .filter_map(|r| r.transpose())
            .collect()
    }

    /// Every scheduled timer, soonest first (for `postdesk tickets due`).
    pub fn timers_all(&self) -> Result<Vec<(TicketId, TimerKind, DateTime<Utc>)>, StoreError> {
        self.timers
            .iter()
            .map(|kv| Ok(parse_timer_key(&kv?.0)))
            .filter_map(|r| r.transpose())
            .collect()
    }

    /// When the earliest timer is due.
    pub fn timers_next(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .timers
            .first()?
            .and_then(|(k, _)| parse_timer_key(&k))
            .map(|(_, _, due)| due))
    }

    /// Automatic mails held back by the rate limits, per region.
    pub fn suppressed(&self, region: &str) -> Result<u64, StoreError> {
        Ok(self
            .meta
            .get(format!("suppressed:{region}").as_bytes())?
            .and_then(|v| u64_of(&v))
            .unwrap_or(0))
    }

    /// An intake's recorded position (see [`Change::intake_state`]).
    pub fn intake_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(key)?.map(|v| v.to_vec()))
    }

    /// Record an intake's position outside a ticket change (after duplicates or quarantined mail).
    pub fn set_intake_state(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        self.meta.insert(key, value)?;
        Ok(())
    }

    /// Keep input that could not become a ticket: raw bytes in `blobs`, a row in `quarantine`.
    pub fn quarantine(
        &self,
        region: &str,
        source: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<Quarantined, StoreError> {
        use sha2::{Digest, Sha256};
        self.writable()?;
        let sha = hex::encode(Sha256::digest(raw));
        let q = Quarantined {
            id: self.generate_id()?,
            region: region.to_string(),
            source: source.to_string(),
            reason: reason.to_string(),
            size: raw.len() as u64,
            raw_sha256: sha.clone(),
            received_at: Utc::now(),
        };
        let blob_id = self.generate_id()?;
        let _gate = self.write_gate();
        (&self.blobs, &self.blob_data, &self.quarantine)
            .transaction(|(blobs, blob_data, quarantine)| {
                put_blob::<()>(blobs, blob_data, &sha, raw, blob_id)?;
                quarantine.insert(&q.id.to_be_bytes(), to_json(&q))?;
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => StoreError::Conflict("quarantine".into()),
            })?;
        Ok(q)
    }

    pub fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        self.quarantine
            .iter()
            .values()
            .map(|v| from_json("quarantine", &v?))
            .collect()
    }

    pub fn outbox_item(&self, id: u64) -> Result<Option<OutboxItem>, StoreError> {
        self.outbox
            .get(id.to_be_bytes())?
            .map(|v| from_json("outbox", &v))
            .transpose()
    }

    /// The outbox rows of one ticket, oldest first.
    pub fn outbox_of_ticket(&self, id: &TicketId) -> Result<Vec<OutboxItem>, StoreError> {
        let prefix = ticket_key(id);
        let mut out = Vec::new();
        for kv in self.outbox_ticket.scan_prefix(&prefix) {
            let (k, _) = kv?;
            if let Some(item) = k
                .get(prefix.len()..)
                .and_then(u64_of)
                .map(|oid| self.outbox_item(oid))
                .transpose()?
            {
                out.extend(item);
            }
        }
        Ok(out)
    }

    /// Every outbox row, oldest first.
    pub fn outbox_all(&self) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox
            .iter()
            .values()
            .map(|v| from_json("outbox", &v?))
            .collect()
    }

    /// Queued rows due at `now`, at most `limit`, soonest first. Costs O(due), whatever the outbox holds.
    pub fn outbox_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let end = due_key(now, u64::MAX);
        let mut out = Vec::new();
        for kv in self.outbox_due.range(..=end).take(limit) {
            let (k, _) = kv?;
            let Some(id) = k.get(8..16).and_then(u64_of) else {
                continue;
            };
            match self.outbox_item(id)? {
                Some(item) if item.status == OutboxStatus::Queued => out.push(item),
                // A stale index entry (row gone or no longer queued): drop it.
                _ => {
                    let _gate = self.write_gate();
                    self.outbox_due.remove(&k)?;
                }
            }
        }
        Ok(out)
    }

    /// When the next queued row is due.
    pub fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self
            .outbox_due
            .first()?
            .and_then(|(k, _)| k.get(..8).and_then(u64_of))
            .and_then(|ms| DateTime::from_timestamp_millis(ms as i64)))
    }

    /// How many rows wait to be sent, from the due index: costs O(queued), not O(outbox), so the daemon's
    /// status line can ask often. (A rare stale index entry, dropped at the next send round, counts too.)
    pub fn outbox_queued(&self) -> usize {
        self.outbox_due.len()
    }

    /// Replace an outbox row (after a send attempt, or a retry), keeping the due index in step.
    pub fn outbox_update(&self, item: OutboxItem) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        (&self.outbox, &self.outbox_due, &self.meta)
            .transaction(|(outbox, due, meta)| {
                let mut old_status = None;
                if let Some(old) = outbox.get(item.id.to_be_bytes())? {
                    if let Ok(old) = serde_json::from_slice::<OutboxItem>(&old) {
                        due.remove(due_key(old.next_attempt_at, old.id))?;
                        old_status = Some(old.status);
                    }
                }
                count_outbox(meta, old_status, Some(item.status))?;
                outbox.insert(&item.id.to_be_bytes(), to_json(&item))?;
                if item.status == OutboxStatus::Queued {
                    due.insert(due_key(item.next_attempt_at, item.id), &[])?;
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => StoreError::Sled(e),
                TransactionError::Abort(()) => StoreError::Conflict("outbox".into()),
            })?;
        if item.status == OutboxStatus::Queued {
            self.outbox_wake.notify_one();
        }
        Ok(())
    }

    /// Queue a row again now (after `failed`, or to skip a backoff wait).
    pub fn outbox_retry(&self, id: u64) -> Result<OutboxItem, StoreError> {
        let mut item = self.outbox_item(id)?.ok_or(StoreError::NoOutboxRow(id))?;
        item.status = OutboxStatus::Queued;
        item.next_attempt_at = Utc::now();
        // An admin's retry starts the retry age afresh; `created_at` keeps saying when it was queued.
        item.requeued_at = Some(Utc::now());
        self.outbox_update(item.clone())?;
        Ok(item)
    }

    /// Tickets per (region, status), for `postdesk stats` and `/metrics`: read from the running counts, not
    /// the tickets.
    pub fn counts(&self) -> Result<Vec<(String, Status, usize)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.meta.scan_prefix(b"count:ticket:") {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k[b"count:ticket:".len()..]).into_owned();
            let (Some((region, status)), Some(n)) = (key.rsplit_once(':'), u64_of(&v)) else {
                continue;
            };
            let Ok(status) = status.parse::<Status>() else {
                continue;
            };
            if n > 0 {
                out.push((region.to_string(), status, n as usize));
            }
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Outbox rows by status, for `/healthz` and `/metrics`, from the running counts.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let get = |status| -> Result<u64, StoreError> {
            Ok(self
                .meta
                .get(outbox_count_key(status))?
                .and_then(|v| u64_of(&v))
                .unwrap_or(0))
        };
        Ok(OutboxCounts {
            queued: get(OutboxStatus::Queued)?,
            sent: get(OutboxStatus::Sent)?,
            failed: get(OutboxStatus::Failed)?,
            bounced: get(OutboxStatus::Bounced)?,
        })
    }
}

/// The store's flusher: one thread running sled's blocking flush for every [`Store::flush_async`] caller.
struct Flusher {
    requests: Mutex<std::sync::mpsc::Sender<FlushRequest>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type FlushRequest = tokio::sync::oneshot::Sender<sled::Result<()>>;

impl Flusher {
    fn start(db: sled::Db) -> Flusher {
        let (tx, rx) = std::sync::mpsc::channel::<FlushRequest>();
        let thread = std::thread::Builder::new()
            .name("postdesk-flush".into())
            .spawn(move || {
                // Ends when the store (the only sender) is dropped.
                while let Ok(first) = rx.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(rx.try_iter());
                    // sled's own flush runs on sled's threads (its memory stays there); this thread only
                    // waits for it, and being the only caller, never meets the wake-up race.
                    let result = block_on(db.flush_async()).map(|_| ());
                    for w in waiting {
                        let _ = w.send(result.clone());
                    }
                }
            })
            .ok();
        Flusher {
            requests: Mutex::new(tx),
            thread,
        }
    }
}

/// Run a future to completion on this thread (the flusher has nothing else to do meanwhile).
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        // A timeout as well as the wake-up: a lost wake-up costs a second, not a hang.
        std::thread::park_timeout(std::time::Duration::from_secs(1));
    }
}

impl Drop for Store {
    /// Stop the flusher thread and wait for it, so that the store's files are released when the store is
    /// dropped (a test or a restore may open the same path right after).
    fn drop(&mut self) {
        if let Some(mut f) = self.flusher.take() {
            drop(f.requests);
            if let Some(t) = f.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// How many outbox rows are in each status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub queued: u64,
    pub sent: u64,
    pub failed: u64,
    pub bounced: u64,
}

/// The trees of a ticket change, inside a transaction.
struct Trees<'a> {
    tickets: &'a TransactionalTree,
    messages: &'a TransactionalTree,
    msgid: &'a TransactionalTree,
    dedupe: &'a TransactionalTree,
    requester: &'a TransactionalTree,
    blobs: &'a TransactionalTree,
    blob_data: &'a TransactionalTree,
    blob_refs: &'a TransactionalTree,
    outbox: &'a TransactionalTree,
    outbox_due: &'a TransactionalTree,
    outbox_ticket: &'a TransactionalTree,
    auto_log: &'a TransactionalTree,
    timers: &'a TransactionalTree,
    meta: &'a TransactionalTree,
}

/// Write one change. Runs inside a transaction closure, which sled may run more than once: no side effects.
fn apply(
    t: &Trees,
    change: &Change,
    blob_ids: &[u64],
) -> Result<(), ConflictableTransactionError<Abort>> {
    let abort = |a: Abort| ConflictableTransactionError::Abort(a);
    if let Some((mid, hash)) = &change.dedupe {
        if let Some(existing) = t.dedupe.get(dedupe_key(mid, hash))? {
            let id = serde_json::from_slice(&existing)
                .map_err(|e| abort(Abort::Corrupt(e.to_string())))?;
            return Err(abort(Abort::Duplicate(id)));
        }
    }
    if let Some(ticket) = &change.ticket {
        let key = ticket_key(&ticket.id);
        if change.new_ticket {
            let seq = seq_key(&ticket.id.region);
            let current = t.meta.get(&seq)?.and_then(|v| u64_of(&v));
            if current.is_some_and(|n| n != ticket.id.number) {
                return Err(abort(Abort::Conflict(format!(
                    "sequence of {} moved",
                    ticket.id.region
                ))));
            }
            if t.tickets.get(&key)?.is_some() {
                return Err(abort(Abort::Conflict(format!(
                    "{} already exists",
                    ticket.id
                ))));
            }
            t.meta.insert(seq, &(ticket.id.number + 1).to_be_bytes())?;
            let mut rk = ticket.requester.as_bytes().to_vec();
            rk.push(0);
            rk.extend_from_slice(&key);
            t.requester.insert(rk, &[])?;
        }
        put_timers(t, ticket)?;
        t.tickets.insert(key, to_json(ticket))?;
        let first = ticket.message_count as usize
            - change.messages.len().min(ticket.message_count as usize);
        for (i, m) in change.messages.iter().enumerate() {
            t.messages
                .insert(message_key(&ticket.id, (first + i) as u32), to_json(m))?;
            add_blob_refs(t.blob_refs, m, 1)?;
        }
        for mid in &change.message_ids {
            index_message_id(t.msgid, mid, &ticket.id)?;
        }
        if let Some((mid, hash)) = &change.dedupe {
            t.dedupe
                .insert(dedupe_key(mid, hash), to_json(&ticket.id))?;
        }
    }
    for other in &change.other_tickets {
        put_timers(t, other)?;
        t.tickets.insert(ticket_key(&other.id), to_json(other))?;
    }
    for (id, index) in &change.removed_messages {
        if let Some(old) = t.messages.remove(message_key(id, *index))? {
            let old: Message =
                serde_json::from_slice(&old).map_err(|e| abort(Abort::Corrupt(e.to_string())))?;
            add_blob_refs(t.blob_refs, &old, -1)?;
        }
    }
    for (id, index, m) in &change.placed_messages {
        t.messages.insert(message_key(id, *index), to_json(m))?;
        add_blob_refs(t.blob_refs, m, 1)?;
    }
    for (mid, id) in &change.other_message_ids {
        index_message_id(t.msgid, mid, id)?;
    }
    if let Some((k, v)) = &change.intake_state {
        t.meta.insert(k.as_slice(), v.as_slice())?;
    }
    for (recipient, at, id) in &change.auto_log {
        t.auto_log.insert(auto_log_key(recipient, *at, *id), &[])?;
    }
    if change.suppressed > 0 {
        if let Some(ticket) = &change.ticket {
            let key = format!("suppressed:{}", ticket.region);
            let n = t
                .meta
                .get(key.as_bytes())?
                .and_then(|v| u64_of(&v))
                .unwrap_or(0);
            t.meta
                .insert(key.as_bytes(), &(n + change.suppressed).to_be_bytes())?;
        }
    }
    if let Some((id, diagnostic)) = &change.bounced {
        if let Some(row) = t.outbox.get(id.to_be_bytes())? {
            let mut item: OutboxItem =
                serde_json::from_slice(&row).map_err(|e| abort(Abort::Corrupt(e.to_string())))?;
            if item.status == OutboxStatus::Queued {
                t.outbox_due
                    .remove(due_key(item.next_attempt_at, item.id))?;
            }
            count_outbox(t.meta, Some(item.status), Some(OutboxStatus::Bounced))?;
            item.status = OutboxStatus::Bounced;
            item.last_error = Some(diagnostic.clone());
            t.outbox.insert(&id.to_be_bytes(), to_json(&item))?;
        }
    }
    for ((sha, bytes), id) in change.blobs.iter().zip(blob_ids) {
        put_blob(t.blobs, t.blob_data, sha, bytes, *id)?;
    }
    for item in &change.outbox {
        let old = t.outbox.insert(&item.id.to_be_bytes(), to_json(item))?;
        count_outbox(
            t.meta,
            old.as_deref().and_then(outbox_status_of),
            Some(item.status),
        )?;
        if item.status == OutboxStatus::Queued {
            t.outbox_due
                .insert(due_key(item.next_attempt_at, item.id), &[])?;
        }
        let mut tk = ticket_key(&item.ticket);
        tk.extend_from_slice(&item.id.to_be_bytes());
        t.outbox_ticket.insert(tk, &[])?;
    }
    Ok(())
}

fn timer_key(due: DateTime<Utc>, kind: TimerKind, id: &TicketId) -> Vec<u8> {
    let mut k = (due.timestamp_millis().max(0) as u64)
        .to_be_bytes()
        .to_vec();
    k.push(kind.code());
    k.extend_from_slice(&ticket_key(id));
    k
}

/// Replace a ticket's entries in the due-time index by those of its new `timers`.
/// Write a ticket's timers into the due-time index (replacing the stored ticket's) and move it between the
/// running counts; the caller writes the ticket itself.
fn put_timers(t: &Trees, ticket: &Ticket) -> Result<(), ConflictableTransactionError<Abort>> {
    let old = match t.tickets.get(ticket_key(&ticket.id))? {
        Some(old) => Some(
            serde_json::from_slice::<Ticket>(&old)
                .map_err(|e| ConflictableTransactionError::Abort(Abort::Corrupt(e.to_string())))?,
        ),
        None => None,
    };
    count_ticket(t.meta, old.as_ref(), Some(ticket))?;
    if let Some(old) = &old {
        for timer in &old.timers {
            t.timers.remove(timer_key(timer.due, timer.kind, &old.id))?;
        }
    }
    for timer in &ticket.timers {
        t.timers
            .insert(timer_key(timer.due, timer.kind, &ticket.id), &[])?;
    }
    Ok(())
}

/// Count a message's blob references up (`delta` 1) or down (-1). Returns the blobs whose count reached 0.
fn add_blob_refs<E>(
    refs: &TransactionalTree,
    message: &Message,
    delta: i64,
) -> Result<Vec<String>, ConflictableTransactionError<E>> {
    let mut unreferenced = Vec::new();
    for sha in crate::desk::retention::blobs_of(message) {
        let n = refs
            .get(sha.as_bytes())?
            .and_then(|v| u64_of(&v))
            .unwrap_or(0);
        let n = (n as i64 + delta).max(0) as u64;
        if n == 0 {
            refs.remove(sha.as_bytes())?;
            unreferenced.push(sha);
        } else {
            refs.insert(sha.as_bytes(), &n.to_be_bytes())?;
        }
    }
    Ok(unreferenced)
}

/// Store `bytes` under `sha` unless they are there already.
fn put_blob<E>(
    blobs: &TransactionalTree,
    data: &TransactionalTree,
    sha: &str,
    bytes: &[u8],
    id: u64,
) -> Result<(), ConflictableTransactionError<E>> {
    if blobs.get(sha.as_bytes())?.is_none() {
        data.insert(&id.to_be_bytes(), bytes)?;
        blobs.insert(sha.as_bytes(), &id.to_be_bytes())?;
    }
    Ok(())
}

fn index_message_id(
    msgid: &TransactionalTree,
    mid: &str,
    id: &TicketId,
) -> Result<(), ConflictableTransactionError<Abort>> {
    let mut ids: Vec<TicketId> = match msgid.get(mid.as_bytes())? {
        Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
        None => Vec::new(),
    };
    if !ids.contains(id) {
        ids.push(id.clone());
        msgid.insert(mid.as_bytes(), to_json(&ids))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::ticket::{Locale, Priority};

    fn ticket(n: u64, requester: &str) -> Ticket {
        Ticket {
            id: TicketId::new("JP", n),
            region: "JP".into(),
            status: Status::New,
            priority: Priority::Normal,
            category: "other".into(),
            subject: "s".into(),
            requester: requester.into(),
            requester_name: String::new(),
            participants: vec![],
            locale: Locale::Ja,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            message_count: 0,
            last_customer_message_id: None,
            thread_ids: vec![],
            links: vec![],
            assignee: None,
            merged_into: None,
            status_since: None,
            first_response_at: None,
            reminders_sent: 0,
            sla_warned: false,
            breached: false,
            survey_sent: false,
            satisfaction: None,
            timers: Vec::new(),
            erased: false,
            attachments_purged: false,
        }
    }

    fn new_ticket(n: u64, requester: &str, mid: &str) -> Change {
        Change {
            ticket: Some(ticket(n, requester)),
            new_ticket: true,
            dedupe: Some((mid.into(), format!("hash-{mid}"))),
            message_ids: vec![mid.into()],
            blobs: vec![("ab".repeat(32), b"attachment".to_vec())],
            ..Change::default()
        }
    }

    #[test]
    fn ticket_keys_sort_numerically() {
        let mut keys = [
            ticket_key(&TicketId::new("JP", 1000)),
            ticket_key(&TicketId::new("JP", 999)),
            ticket_key(&TicketId::new("JPX", 1)),
        ];
        keys.sort();
        assert_eq!(keys[0], ticket_key(&TicketId::new("JP", 999)));
        assert_eq!(keys[2], ticket_key(&TicketId::new("JPX", 1)));
    }

    #[test]
    fn commits_index_and_deduplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .commit(&new_ticket(1000, "a@example.com", "m1"))
                .unwrap(),
            Committed::Applied
        );
        assert_eq!(
            store
                .commit(&new_ticket(1001, "a@example.com", "m2"))
                .unwrap(),
            Committed::Applied
        );
        // The same mail again aborts as a duplicate and changes nothing.
        let mut again = new_ticket(1002, "b@example.com", "m1");
        again.dedupe = Some(("m1".into(), "hash-m1".into()));
        assert_eq!(
            store.commit(&again).unwrap(),
            Committed::Duplicate(TicketId::new("JP", 1000))
        );
        assert!(store.ticket(&TicketId::new("JP", 1002)).unwrap().is_none());
        assert_eq!(store.next_ticket_number("JP", 1000).unwrap(), 1002);
        assert_eq!(
            store.tickets_of_requester("A@example.com").unwrap(),
            vec![TicketId::new("JP", 1000), TicketId::new("JP", 1001)]
        );
        assert_eq!(
            store.tickets_for_message_id("m2").unwrap(),
            vec![TicketId::new("JP", 1001)]
        );
        assert_eq!(
            store.blob(&"ab".repeat(32)).unwrap().as_deref(),
            Some(&b"attachment"[..])
        );
        // A number the sequence has not reached is a conflict, not a silent skip.
        assert!(matches!(
            store.commit(&new_ticket(1005, "c@example.com", "m5")),
            Err(StoreError::Conflict(_))
        ));
    }

    #[test]
    fn outbox_due_follows_the_due_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let now = Utc::now();
        let item = |id: u64, due: chrono::DateTime<Utc>| OutboxItem {
            next_attempt_at: due,
            ..crate::outbound::sample_item(id, 1000)
        };
        let change = Change {
            outbox: vec![
                item(1, now - chrono::Duration::seconds(5)),
                item(2, now + chrono::Duration::hours(1)),
            ],
            ..Change::default()
        };
        store.commit(&change).unwrap();
        let due = store.outbox_due(now, 10).unwrap();
        assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), vec![1]);
        let mut sent = due[0].clone();
        sent.status = OutboxStatus::Sent;
        store.outbox_update(sent).unwrap();
        assert!(store.outbox_due(now, 10).unwrap().is_empty());
        assert!(store.outbox_next_due().unwrap().is_some_and(|t| t > now));
        store.outbox_retry(2).unwrap();
        assert_eq!(store.outbox_due(Utc::now(), 10).unwrap().len(), 1);
        assert_eq!(
            store
                .outbox_of_ticket(&TicketId::new("JP", 1000))
                .unwrap()
                .len(),
            2
        );
    }
}
