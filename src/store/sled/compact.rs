//! Compaction: rewrite the database into a fresh directory and swap it in, so that nothing deleted or
//! overwritten survives in the files under `storage.path`.
//!
//! Why: sled is a log-structured store. A deleted or rewritten value stays in its log segments (and in
//! segments sled has freed but not overwritten) until sled happens to reuse the space, which may be never;
//! after `customer erase`, the files still held the address a hundred times and the message text (issue
//! 14). Copying every live tree into a new database writes only the current values; removing the old
//! directory leaves none of the old ones. (Blobs are sled trees too, so they are covered; `storage.path`
//! holds nothing else of a customer's.)
//!
//! The swap, with the writer lock and the gate held exclusively (no write lands meanwhile; reads keep
//! going on the old database until the last moment, and wait only for the rename and reopen):
//! 1. flush; copy every tree into `db.compact` (removed first if an earlier attempt left one); flush it
//!    and close it;
//! 2. take the old database out of the store's slot, wait until no operation holds it, close it (sled
//!    writes its last snapshot into its own directory when it closes, so it must be closed before that
//!    directory's name is given to the new one);
//! 3. rename `db` → `db.old`, `db.compact` → `db`, sync the directory; reopen `db`; delete `db.old`.
//!
//! A crash at any step leaves a store that [`recover`] (run by every open) completes: `db.old` exists only
//! once `db.compact` was complete, so then the new database is the one kept; a `db.compact` next to a `db`
//! is an unfinished copy and is removed. The old files are removed either way, at the latest by the next
//! open.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{engine_error, Handle, Store};
use crate::store::{Compacted, StoreError};

/// The database directory inside `storage.path`.
pub(super) const DB: &str = "db";
/// The copy being written.
const FRESH: &str = "db.compact";
/// The old database between the two renames.
const OLD: &str = "db.old";
/// How long the swap waits for operations still reading the old database (each holds it for one call).
const DRAIN: Duration = Duration::from_secs(30);

/// Finish or undo a compaction a crash interrupted (see the module docs).
pub(super) fn recover(dir: &Path) -> std::io::Result<()> {
    let (db, fresh, old) = (dir.join(DB), dir.join(FRESH), dir.join(OLD));
    if old.exists() {
        if !db.exists() {
            // Between the renames: the copy was complete before the first one.
            std::fs::rename(&fresh, &db)?;
            sync_dir(dir)?;
        }
        std::fs::remove_dir_all(&old)?;
    }
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Io(e)
}

/// Bytes of the regular files under `path`.
fn disk_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Copy every tree of `from` into a new database at `to`; flushed and closed. The id sequences are in
/// `meta` and travel with it (the gate is held exclusively: no id is drawn meanwhile).
fn copy_into(from: &Handle, to: &Path) -> Result<(), StoreError> {
    let fresh = sled::Config::new()
        .path(to)
        .cache_capacity(32 * 1024 * 1024)
        .segment_size(8 * 1024 * 1024)
        .open()
        .map_err(engine_error)?;
    for name in from.db.tree_names() {
        let src = from.db.open_tree(&name).map_err(engine_error)?;
        let dst = fresh.open_tree(&name).map_err(engine_error)?;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        for kv in src.iter() {
            let (k, v) = kv.map_err(engine_error)?;
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == 10_000 {
                dst.apply_batch(std::mem::take(&mut batch))
                    .map_err(engine_error)?;
                in_batch = 0;
            }
        }
        dst.apply_batch(batch).map_err(engine_error)?;
    }
    fresh.flush().map_err(engine_error)?;
    Ok(())
}

/// See the module docs.
pub(super) fn compact(store: &Store) -> Result<Compacted, StoreError> {
    let _writer = store.writer.lock().unwrap_or_else(|p| p.into_inner());
    let _exclusive = store.gate.write().unwrap_or_else(|p| p.into_inner());
    store.check_writable()?;
    let started = Instant::now();
    let dir = &store.dir;
    let bytes_before = disk_bytes(&dir.join(DB));
    // The copy needs about as much room as the database holds live, and the usual margin after it; a
    // full disk would stop the copy half-way anyway (and the old database keeps working then).
    if let Ok(free) = fs2::available_space(dir) {
        let need = bytes_before.saturating_add(super::MIN_FREE_BYTES);
        if free < need {
            return Err(StoreError::NoRoomToCompact {
                path: dir.display().to_string(),
                free_mib: free / (1024 * 1024),
                need_mib: need / (1024 * 1024),
            });
        }
    }
    let fresh = dir.join(FRESH);
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io)?;
    }
    {
        let old = store.h()?;
        old.db.flush().map_err(engine_error)?;
        if let Err(e) = copy_into(&old, &fresh) {
            let _ = std::fs::remove_dir_all(&fresh);
            return Err(e);
        }
    }
    let mut slot = store.slot.write().unwrap_or_else(|p| p.into_inner());
    let Some(mut old) = slot.take() else {
        return Err(StoreError::Failed(
            "the store could not be reopened after a compaction".into(),
        ));
    };
    // Operations that cloned the handle before we took it out finish their one call.
    let deadline = Instant::now() + DRAIN;
    let old = loop {
        match Arc::try_unwrap(old) {
            Ok(handle) => break handle,
            Err(still_shared) if Instant::now() < deadline => {
                old = still_shared;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(still_shared) => {
                *slot = Some(still_shared);
                let _ = std::fs::remove_dir_all(&fresh);
                return Err(StoreError::Conflict(
                    "the store stayed in use for 30 s, so it was not compacted; run the erasure again"
                        .into(),
                ));
            }
        }
    };
    // Closing flushes and writes sled's snapshot into `db`, before that name goes to the new database.
    drop(old);
    let swapped = std::fs::rename(dir.join(DB), dir.join(OLD))
        .and_then(|_| std::fs::rename(&fresh, dir.join(DB)))
        .and_then(|_| sync_dir(dir));
    let reopened = swapped.map_err(io).and_then(|_| Handle::open(dir));
    match reopened {
        Ok(handle) => *slot = Some(Arc::new(handle)),
        Err(e) => {
            let why = format!("reopening the store after a compaction failed: {e}");
            tracing::error!("{why}; postdesk stores, sends and acknowledges nothing more: restart it (the next start finishes the compaction)");
            *store.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            return Err(e);
        }
    }
    drop(slot);
    std::fs::remove_dir_all(dir.join(OLD))
        .and_then(|_| sync_dir(dir))
        .map_err(io)?;
    let done = Compacted {
        bytes_before,
        bytes_after: disk_bytes(&dir.join(DB)),
    };
    tracing::info!(
        bytes_before = done.bytes_before,
        bytes_after = done.bytes_after,
        took_ms = started.elapsed().as_millis() as u64,
        "store compacted: deleted data no longer in its files"
    );
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Storage;

    fn everything(store: &Store) -> Vec<(String, Vec<u8>, Vec<u8>)> {
        let mut all = Vec::new();
        store
            .scan_all(|t, k, v| {
                // The id sequences move when the test draws an id.
                if !(t == "meta" && k.starts_with(b"id_next:")) {
                    all.push((t.to_string(), k.to_vec(), v.to_vec()))
                }
            })
            .unwrap();
        all
    }

    #[test]
    fn compaction_keeps_every_tree_and_ids_continue_above() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.set_intake_state(b"imap:x", b"42").unwrap();
        store
            .quarantine("JP", "maildir", "unreadable", b"secret-old-bytes")
            .unwrap();
        let id_before = store.generate_id().unwrap();
        let before = everything(&store);
        store.compact().unwrap();
        assert_eq!(everything(&store), before);
        assert!(store.generate_id().unwrap() > id_before);
        assert_eq!(
            store.intake_state(b"imap:x").unwrap().as_deref(),
            Some(&b"42"[..])
        );
        assert!(!dir.path().join(FRESH).exists() && !dir.path().join(OLD).exists());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(everything(&store), before);
        assert!(store.generate_id().unwrap() > id_before);
    }

    #[test]
    fn an_interrupted_swap_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.set_intake_state(b"k", b"v").unwrap();
            store.flush().unwrap();
        }
        // Crashed between the two renames: the complete copy is `db.compact`, the old one `db.old`.
        let (db, fresh, old) = (
            dir.path().join(DB),
            dir.path().join(FRESH),
            dir.path().join(OLD),
        );
        {
            let h = Handle::open(dir.path()).unwrap();
            copy_into(&h, &fresh).unwrap();
        }
        std::fs::rename(&db, &old).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.intake_state(b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert!(!old.exists() && !fresh.exists());
        drop(store);
        // An unfinished copy next to the database is removed.
        std::fs::create_dir(&fresh).unwrap();
        std::fs::write(fresh.join("db"), b"half a copy").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.intake_state(b"k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert!(!fresh.exists());
    }

    #[test]
    fn reads_and_flushes_go_on_across_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        store.set_intake_state(b"k", b"v").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    assert_eq!(
                        store.intake_state(b"k").unwrap().as_deref(),
                        Some(&b"v"[..])
                    );
                    n += 1;
                }
                n
            })
        };
        for _ in 0..3 {
            store.compact().unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(store.flush_async()).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
