//! The sled engine, postdesk's embedded default: [`Store`] implements [`Storage`] on sled trees.
//!
//! Trees (keys → values, values JSON unless said otherwise; key layouts in [`keys`]):
//! - `tickets`:    ticket key (`JP-` + u64 BE) → [`crate::desk::ticket::Ticket`]
//! - `messages`:   ticket key + u32 BE index → [`crate::desk::ticket::Message`]
//! - `msgid`:      Message-ID → list of ticket ids that received or sent it
//! - `dedupe`:     Message-ID + NUL + content hash → ticket id (re-deliveries change nothing)
//! - `requester`:  address + NUL + ticket key → () (a customer's tickets)
//! - `blobs`:      sha256 hex → blob id (u64 BE);  `blob_data`: blob id → bytes (attachments and raw mail,
//!   each stored once). The bytes sit under increasing ids so that large values are appended at the right
//!   edge of the tree instead of splitting nodes all over it, as random sha256 keys would.
//! - `blob_refs`:  sha256 hex → u64 BE: how many message references (attachments, kept raw mail) the blob
//!   has, so erasure and retention can delete a blob nobody else refers to without scanning every message
//! - `outbox`:     u64 BE id → [`crate::store::outbox::OutboxItem`];  `outbox_due`: due millis BE + id BE → ()
//!   (queued rows only);  `outbox_ticket`: ticket key + id BE → () (a ticket's automatic mail)
//! - `auto_log`:   recipient + NUL + millis BE + outbox id BE → () (automatic mail sent, for rate limits), and
//!   NUL + recipient + NUL + minute BE → count BE (the same mail counted by the minute: the staff breaker)
//! - `timers`:     due millis BE + timer kind + ticket key → () (each ticket's scheduled timers, see
//!   [`crate::desk::ticket::Ticket::timers`]; rewritten with the ticket, so a tick reads only what is due)
//! - `meta`:       `seq:<REGION>` → next ticket number (u64 BE); `id_next:outbox`, `id_next:quarantine`,
//!   `id_next:blob` → the next id of each kind ([`Ids`]); `id_offset` → what stores from before those
//!   sequences added to sled's id generator (read once, see [`Ids`]); `retention:<what>:<REGION>`,
//!   `suppressed:<REGION>` → counters;
//!   `count:…` → running counts ([`counts`]); intake positions; `message_id_secret`
//! - `quarantine`: u64 BE id → [`crate::store::Quarantined`] (input that could not become a ticket, raw
//!   bytes in `blobs`)
//!
//! Every change one mail causes is one [`crate::store::Change`] committed in one sled transaction
//! ([`apply`]). Callers flush ([`flush`]) before they acknowledge the mail at its source. Writers are
//! serialised by the writer lock that [`crate::store::StorageExt::write`] holds around its closure; every write to the trees
//! also holds the backup gate shared, so a backup (holding it exclusively) copies one consistent state.
//!
//! The database lives behind a swappable handle ([`Handle`] in the store's slot): every operation clones it
//! for one call, writers after taking the gate, so [`compact`] (erasure's rewrite into a fresh directory,
//! so that no old version stays in sled's log) can swap it while `Arc<Store>` is shared by every task.
//! `storage.path/lock` (flock) keeps a second process out for the store's lifetime.
//!
//! Engine-specific, outside the trait: [`Store::open`] / [`Store::open_waiting`] (a path), [`Store::flush`]
//! (blocking), [`Store::backup`]
//! and [`backup::restore`] (the backup format is a dump of sled's trees; a PostgreSQL engine has its own
//! tools and format), [`Store::scan_all`] (tests that prove something is gone from every tree).

mod apply;
pub mod backup;
mod compact;
mod counts;
mod flush;
mod keys;
mod outbox;
mod quarantine;
mod read;
mod rewrite;
#[cfg(test)]
mod tests;
mod timers;
mod writer;

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use chrono::{DateTime, Utc};

use crate::desk::ticket::{Message, Status, Ticket, TicketId};
use crate::store::outbox::{OutboxCounts, OutboxFilter, OutboxItem};
use crate::store::{Compacted, Flush, Lookup, Quarantined, Storage, StoreError, Timer, Tx, Wake};

/// Free space below which nothing more is written (see [`Storage::writable`]): room for sled's next log
/// segments (8 MiB each) and a full IMAP batch (up to 32 MiB) with margin.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// The sled database and its trees: what [`compact`] replaces while the store stays open.
pub(super) struct Handle {
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
}

/// The kinds of ids the store hands out, each from a sequence of its own in `meta` (`id_next:<kind>`):
/// outbox rows (what `outbox list` shows and Message-IDs are made from), quarantine entries, blobs.
///
/// Why not sled's `generate_id`: it persists its counter only every million ids and, on every open,
/// continues above the last persisted value plus a margin, so the ids of a store that is opened often (every
/// `postdesk ingest` while no daemon runs, every restart) jumped by about 2,000,000 each time (issue 21: 0,
/// 2000000, 4000000 in `outbox list`). Here each id drawn is written to `meta` at once (one small write, made
/// durable by the same flush as the record that uses it: sled's log is written in order), so the sequence
/// continues where it stopped. An id drawn but never committed (a change that aborted) leaves a gap of one;
/// an id is never handed out twice, also when the record that had it was deleted since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ids {
    Outbox,
    Quarantine,
    Blob,
}

impl Ids {
    pub(super) const ALL: [Ids; 3] = [Ids::Outbox, Ids::Quarantine, Ids::Blob];

    pub(super) fn key(self) -> &'static [u8] {
        match self {
            Ids::Outbox => b"id_next:outbox",
            Ids::Quarantine => b"id_next:quarantine",
            Ids::Blob => b"id_next:blob",
        }
    }
}

/// Where the open database lives: swapped by [`compact`], read by every operation and by the flusher.
type Slot = Arc<RwLock<Option<Arc<Handle>>>>;

/// The store: the database behind a swappable handle, the writer lock, the gate, the flusher.
pub struct Store {
    /// The open database. Operations clone the `Arc` for the duration of one call; [`compact`] takes it
    /// out (with the writer lock and the gate held), closes it, and puts the rewritten one in.
    slot: Slot,
    /// Held by [`crate::store::StorageExt::write`] around its closure.
    writer: Mutex<()>,
    /// Every write to the trees holds this shared; a backup or a compaction holds it exclusively, so the
    /// snapshot it copies tree by tree is one consistent state. Writers take the gate before the handle.
    gate: RwLock<()>,
    /// The directory, for the free-space check.
    dir: std::path::PathBuf,
    /// `storage.path/lock`, locked (flock) for the store's lifetime: the database directory is renamed
    /// during a compaction, so sled's own lock inside it cannot keep a second process out meanwhile.
    _lock: std::fs::File,
    /// Set when a flush failed: see [`Store::check_writable`].
    failed: Mutex<Option<String>>,
    /// The flusher thread: see [`flush::flush_async`].
    flusher: Option<flush::Flusher>,
    wake: Wake,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// sled's error as ours, decided here once: I/O, corruption, or the engine's own trouble.
fn engine_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(e) => StoreError::Io(e),
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            tree: "(sled log)",
            reason: match at {
                Some(at) => format!("damaged data at {at:?}"),
                None => "damaged data".into(),
            },
        },
        other => StoreError::Engine(other.to_string()),
    }
}

/// An error opening the database at `dir`: [`StoreError::Busy`] when another process holds it.
fn open_error(dir: &Path, e: sled::Error) -> StoreError {
    let path = dir.display().to_string();
    // sled 0.34 says that another process holds the database only in the text of an `Other` I/O error
    // (sled's config.rs, `try_lock`); this is the one place that reads it.
    if let sled::Error::Io(io) = &e {
        if io.kind() == std::io::ErrorKind::Other
            && io.to_string().contains("could not acquire lock")
        {
            return StoreError::Busy { path };
        }
    }
    StoreError::Open {
        path,
        reason: e.to_string(),
    }
}

/// Lock `dir/lock` for the store's lifetime ([`StoreError::Busy`] when another process holds it).
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use fs2::FileExt;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| open_error(dir, sled::Error::Io(e)))?;
    match file.try_lock_exclusive() {
        Ok(()) => Ok(file),
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => Err(StoreError::Busy {
            path: dir.display().to_string(),
        }),
        Err(e) => Err(open_error(dir, sled::Error::Io(e))),
    }
}

impl Handle {
    /// Open (or create) the sled database in `dir/db`.
    fn open(dir: &Path) -> Result<Handle, StoreError> {
        let db = sled::Config::new()
            .path(dir.join(compact::DB))
            .cache_capacity(32 * 1024 * 1024)
            .segment_size(8 * 1024 * 1024)
            .open()
            .map_err(|e| open_error(dir, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(engine_error);
        let meta = tree("meta")?;
        start_sequences(&db, &meta)?;
        Ok(Handle {
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
        })
    }

    /// The next id of `kind`, taken (see [`Ids`]). The caller holds the gate (shared or exclusive).
    fn draw(&self, kind: Ids) -> Result<u64, StoreError> {
        let taken = self
            .meta
            .fetch_and_update(kind.key(), |old| {
                let next = old.and_then(keys::u64_of).unwrap_or(1);
                Some(next.saturating_add(1).to_be_bytes().to_vec())
            })
            .map_err(engine_error)?;
        Ok(taken.and_then(|v| keys::u64_of(&v)).unwrap_or(1))
    }

    /// Above every id handed out, of every kind (a backup's `next_id`), without taking one.
    fn ids_high_water(&self) -> Result<u64, StoreError> {
        let mut high = 1;
        for kind in Ids::ALL {
            let next = self.meta.get(kind.key()).map_err(engine_error)?;
            high = high.max(next.and_then(|v| keys::u64_of(&v)).unwrap_or(1));
        }
        Ok(high)
    }
}

/// Start the id sequences a store does not have yet ([`Ids`]): at 1 in a new store; in a store from before
/// them, above every id sled's generator (plus the `id_offset` a restore or compaction set) ever handed out.
fn start_sequences(db: &sled::Db, meta: &sled::Tree) -> Result<(), StoreError> {
    let mut legacy = None;
    for kind in Ids::ALL {
        if meta.get(kind.key()).map_err(engine_error)?.is_some() {
            continue;
        }
        let start = match legacy {
            Some(start) => start,
            None => {
                let offset = meta
                    .get(b"id_offset")
                    .map_err(engine_error)?
                    .and_then(|v| keys::u64_of(&v))
                    .unwrap_or(0);
                // sled's generator gives 0 first in a new database: such a store starts at 1.
                let above = db
                    .generate_id()
                    .map_err(engine_error)?
                    .saturating_add(offset);
                *legacy.insert(above.max(1))
            }
        };
        // One process opens a store (the lock): nobody else can have set it meanwhile.
        meta.insert(kind.key(), &start.to_be_bytes())
            .map_err(engine_error)?;
    }
    Ok(())
}

impl Store {
    /// The open database, for one operation. Writers take [`Store::write_gate`] first.
    fn h(&self) -> Result<Arc<Handle>, StoreError> {
        self.slot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::Failed("the store could not be reopened after a compaction".into())
            })
    }

    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let open_err = |e| open_error(dir, e);
        std::fs::create_dir_all(dir).map_err(|e| open_err(sled::Error::Io(e)))?;
        // The store holds customers' mail: owner only, whatever the umask.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| open_err(sled::Error::Io(e)))?;
        }
        let lock = lock_dir(dir)?;
        compact::recover(dir).map_err(|e| open_err(sled::Error::Io(e)))?;
        let handle = Handle::open(dir)?;
        let slot: Slot = Arc::new(RwLock::new(Some(Arc::new(handle))));
        let store = Store {
            flusher: Some(flush::Flusher::start(slot.clone())),
            slot,
            writer: Mutex::new(()),
            gate: RwLock::new(()),
            dir: dir.to_path_buf(),
            _lock: lock,
            failed: Mutex::new(None),
            wake: Wake::default(),
        };
        counts::build_blob_refs(&store)?;
        counts::build_row_counts(&store)?;
        Ok(store)
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

    /// sled's blocking flush, for one-shot work outside the daemon's tasks (a restore, the benchmarks); the
    /// daemon's tasks use [`Storage::flush_async`].
    pub fn flush(&self) -> Result<(), StoreError> {
        flush::flush_blocking(self)
    }

    /// Every tree's name, keys and values, for tests that prove something is gone from the whole store.
    pub fn scan_all(&self, mut visit: impl FnMut(&str, &[u8], &[u8])) -> Result<(), StoreError> {
        let h = self.h()?;
        for name in h.db.tree_names() {
            let tree = h.db.open_tree(&name).map_err(engine_error)?;
            let name = String::from_utf8_lossy(&name).into_owned();
            for kv in tree.iter() {
                let (k, v) = kv.map_err(engine_error)?;
                visit(&name, &k, &v);
            }
        }
        Ok(())
    }

    /// Shared access for one write (see [`Store::gate`]).
    fn write_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
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
    fn check_writable(&self) -> Result<(), StoreError> {
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

    /// The next id of `kind` ([`Ids`]). Taken under the gate, so that a compaction (which copies `meta`
    /// with the gate held exclusively) never loses one that was drawn meanwhile.
    fn next_id(&self, kind: Ids) -> Result<u64, StoreError> {
        let _gate = self.write_gate();
        self.h()?.draw(kind)
    }
}

impl Lookup for Store {
    fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StoreError> {
        read::ticket(self, id)
    }
    fn messages_indexed(&self, id: &TicketId) -> Result<Vec<(u32, Message)>, StoreError> {
        read::messages_indexed(self, id)
    }
    fn tickets_for_message_id(&self, message_id: &str) -> Result<Vec<TicketId>, StoreError> {
        read::tickets_for_message_id(self, message_id)
    }
    fn duplicate_of(
        &self,
        message_id: &str,
        content_hash: &str,
    ) -> Result<Option<TicketId>, StoreError> {
        read::duplicate_of(self, message_id, content_hash)
    }
    fn tickets_of_requester(&self, address: &str) -> Result<Vec<TicketId>, StoreError> {
        read::tickets_of_requester(self, address)
    }
    fn next_ticket_number(&self, region: &str, first: u64) -> Result<u64, StoreError> {
        read::next_ticket_number(self, region, first)
    }
    fn auto_mail_since(
        &self,
        recipient: &str,
        since: DateTime<Utc>,
        at_most: usize,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        read::auto_mail_since(self, recipient, since, at_most)
    }
    fn auto_mail_count(&self, recipient: &str, since: DateTime<Utc>) -> Result<usize, StoreError> {
        read::auto_mail_count(self, recipient, since)
    }
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        read::blob(self, sha256)
    }
}

impl Storage for Store {
    fn with_writer(&self, f: &mut dyn FnMut(&dyn Tx)) {
        // A panic while holding the lock leaves no half-written state (commits are transactions), so a
        // poisoned lock is safe to take over.
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        f(&writer::Writer::new(self));
    }
    fn flush_async(&self) -> Flush<'_> {
        Box::pin(flush::flush_async(self))
    }
    fn writable(&self) -> Result<(), StoreError> {
        self.check_writable()
    }
    fn generate_id(&self) -> Result<u64, StoreError> {
        self.next_id(Ids::Outbox)
    }
    fn wake(&self) -> &Wake {
        &self.wake
    }
    fn message_id_secret(&self, configured: Option<&str>) -> Result<Vec<u8>, StoreError> {
        if let Some(s) = configured {
            return Ok(s.as_bytes().to_vec());
        }
        if let Some(v) = self
            .h()?
            .meta
            .get(b"message_id_secret")
            .map_err(engine_error)?
        {
            return Ok(v.to_vec());
        }
        let mut secret = vec![0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| {
            StoreError::Conflict(format!("no randomness for the Message-ID secret: {e}"))
        })?;
        // Another process may have raced us: whoever wrote first wins, both use that one.
        let _gate = self.write_gate();
        let h = self.h()?;
        match h
            .meta
            .compare_and_swap(
                b"message_id_secret",
                None as Option<&[u8]>,
                Some(secret.as_slice()),
            )
            .map_err(engine_error)?
        {
            Ok(()) => {
                h.db.flush().map_err(engine_error)?;
                Ok(secret)
            }
            Err(cas) => Ok(cas.current.map(|v| v.to_vec()).unwrap_or(secret)),
        }
    }

    fn tickets(
        &self,
        region: Option<&str>,
        status: Option<Status>,
    ) -> Result<Vec<Ticket>, StoreError> {
        read::tickets(self, region, status)
    }
    fn outbox_list(&self, filter: OutboxFilter<'_>) -> Result<Vec<OutboxItem>, StoreError> {
        outbox::list(self, filter)
    }
    fn outbox_due_except(
        &self,
        now: DateTime<Utc>,
        limit: usize,
        skip: &std::collections::HashSet<u64>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        outbox::due(self, now, limit, skip)
    }
    fn outbox_next_due(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        outbox::next_due(self)
    }
    fn outbox_update(&self, item: OutboxItem) -> Result<(), StoreError> {
        outbox::update(self, item)
    }
    fn outbox_queued(&self) -> usize {
        outbox::queued(self)
    }
    fn timers_due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Timer>, StoreError> {
        timers::due(self, now, limit)
    }
    fn timers_next(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        timers::next(self)
    }
    fn timers_all(&self) -> Result<Vec<Timer>, StoreError> {
        timers::all(self)
    }
    fn intake_state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .h()?
            .meta
            .get(key)
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }
    fn set_intake_state(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let _gate = self.write_gate();
        self.h()?.meta.insert(key, value).map_err(engine_error)?;
        Ok(())
    }
    fn quarantine(
        &self,
        region: &str,
        source: &str,
        reason: &str,
        raw: &[u8],
    ) -> Result<Quarantined, StoreError> {
        quarantine::add(self, region, source, reason, raw)
    }
    fn quarantined(&self) -> Result<Vec<Quarantined>, StoreError> {
        quarantine::list(self)
    }
    fn counts(&self) -> Result<Vec<(String, Status, usize)>, StoreError> {
        counts::tickets(self)
    }
    fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        counts::outbox(self)
    }
    fn counter(&self, name: &str) -> Result<u64, StoreError> {
        counts::counter(self, name)
    }
    fn compact(&self) -> Result<Compacted, StoreError> {
        compact::compact(self)
    }
}
