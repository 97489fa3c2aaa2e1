//! Running counts in `meta`, kept in the transaction of every write that adds, removes or changes a ticket
//! or an outbox row, so `/metrics`, `/healthz` and `stats` read a handful of keys instead of every ticket and
//! every mail ever sent. Also the blob reference counts (`blob_refs`), and both rebuilt once at start-up for
//! a store written before they existed.

use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::keys::{from_json, outbox_count_key, ticket_count_key, u64_of, TICKET_COUNT_PREFIX};
use super::{engine_error, Store};
use crate::desk::ticket::{Message, Status, Ticket};
use crate::store::outbox::{OutboxCounts, OutboxStatus};
use crate::store::StoreError;

/// Set once the running counts of tickets and outbox rows exist.
const COUNTS_DONE: &[u8] = b"counts:v1";
/// Set once `blob_refs` exists.
const BLOB_REFS_DONE: &[u8] = b"blob_refs:v1";

/// Add `delta` to the count under `key` (never below zero).
pub(super) fn bump<E>(
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
pub(super) fn count_ticket<E>(
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
pub(super) fn count_outbox<E>(
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
pub(super) fn outbox_status_of(bytes: &[u8]) -> Option<OutboxStatus> {
    #[derive(serde::Deserialize)]
    struct Row {
        status: OutboxStatus,
    }
    serde_json::from_slice::<Row>(bytes).ok().map(|r| r.status)
}

/// Count a message's blob references up (`delta` 1) or down (-1). Returns the blobs whose count reached 0.
pub(super) fn add_blob_refs<E>(
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

/// Build the running counts once for a store written before they existed (one pass at start-up).
pub(super) fn build_row_counts(store: &Store) -> Result<(), StoreError> {
    if store
        .h()?
        .meta
        .get(COUNTS_DONE)
        .map_err(engine_error)?
        .is_some()
    {
        return Ok(());
    }
    let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
    for t in super::read::tickets(store, None, None)? {
        *counts
            .entry(ticket_count_key(&t.region, t.status))
            .or_default() += 1;
    }
    for v in store.h()?.outbox.iter().values() {
        if let Some(status) = outbox_status_of(&v.map_err(engine_error)?) {
            *counts.entry(outbox_count_key(status)).or_default() += 1;
        }
    }
    let mut batch = sled::Batch::default();
    for (k, n) in counts {
        batch.insert(k, &n.to_be_bytes());
    }
    batch.insert(COUNTS_DONE, &[]);
    store.h()?.meta.apply_batch(batch).map_err(engine_error)?;
    Ok(())
}

/// Build `blob_refs` once for a store written before it existed.
pub(super) fn build_blob_refs(store: &Store) -> Result<(), StoreError> {
    if store
        .h()?
        .meta
        .get(BLOB_REFS_DONE)
        .map_err(engine_error)?
        .is_some()
    {
        return Ok(());
    }
    let mut counts: std::collections::HashMap<String, u64> = Default::default();
    for kv in store.h()?.messages.iter() {
        let (_, v) = kv.map_err(engine_error)?;
        let m: Message = from_json("messages", &v)?;
        for sha in crate::desk::retention::blobs_of(&m) {
            *counts.entry(sha).or_default() += 1;
        }
    }
    let mut batch = sled::Batch::default();
    for (sha, n) in counts {
        batch.insert(sha.as_bytes(), &n.to_be_bytes());
    }
    store
        .h()?
        .blob_refs
        .apply_batch(batch)
        .map_err(engine_error)?;
    store
        .h()?
        .meta
        .insert(BLOB_REFS_DONE, &[])
        .map_err(engine_error)?;
    Ok(())
}

/// [`crate::store::Storage::counts`].
pub(super) fn tickets(store: &Store) -> Result<Vec<(String, Status, usize)>, StoreError> {
    let mut out = Vec::new();
    for kv in store.h()?.meta.scan_prefix(TICKET_COUNT_PREFIX) {
        let (k, v) = kv.map_err(engine_error)?;
        let key = String::from_utf8_lossy(&k[TICKET_COUNT_PREFIX.len()..]).into_owned();
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

/// [`crate::store::Storage::outbox_counts`].
pub(super) fn outbox(store: &Store) -> Result<OutboxCounts, StoreError> {
    let get = |status| -> Result<u64, StoreError> {
        Ok(store
            .h()?
            .meta
            .get(outbox_count_key(status))
            .map_err(engine_error)?
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

/// [`crate::store::Storage::counter`]: a counter in `meta`.
pub(super) fn counter(store: &Store, name: &str) -> Result<u64, StoreError> {
    Ok(store
        .h()?
        .meta
        .get(name.as_bytes())
        .map_err(engine_error)?
        .and_then(|v| u64_of(&v))
        .unwrap_or(0))
}
