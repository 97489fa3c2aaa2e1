//! The outbox queue: rows in `outbox`, the queued ones also in `outbox_due` (due time + id, so a send round
//! reads only what is due), a ticket's rows in `outbox_ticket`.

use chrono::{DateTime, Utc};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::counts::count_outbox;
use super::keys::{due_key, from_json, ticket_key, to_json, u64_of};
use super::{engine_error, Store};
use crate::store::outbox::{OutboxFilter, OutboxItem, OutboxStatus};
use crate::store::StoreError;

fn item(store: &Store, id: u64) -> Result<Option<OutboxItem>, StoreError> {
    store
        .h()?
        .outbox
        .get(id.to_be_bytes())
        .map_err(engine_error)?
        .map(|v| from_json("outbox", &v))
        .transpose()
}

pub(super) fn list(store: &Store, filter: OutboxFilter<'_>) -> Result<Vec<OutboxItem>, StoreError> {
    match filter {
        OutboxFilter::One(id) => Ok(item(store, id)?.into_iter().collect()),
        OutboxFilter::All => store
            .h()?
            .outbox
            .iter()
            .values()
            .map(|v| from_json("outbox", &v.map_err(engine_error)?))
            .collect(),
        OutboxFilter::Ticket(id) => {
            let prefix = ticket_key(id);
            let mut out = Vec::new();
            for kv in store.h()?.outbox_ticket.scan_prefix(&prefix) {
                let (k, _) = kv.map_err(engine_error)?;
                if let Some(row) = k
                    .get(prefix.len()..)
                    .and_then(u64_of)
                    .map(|oid| item(store, oid))
                    .transpose()?
                {
                    out.extend(row);
                }
            }
            Ok(out)
        }
    }
}

/// Queued rows due at `now`, at most `limit`, soonest first, without the rows in `skip` (which are not read).
pub(super) fn due(
    store: &Store,
    now: DateTime<Utc>,
    limit: usize,
    skip: &std::collections::HashSet<u64>,
) -> Result<Vec<OutboxItem>, StoreError> {
    let end = due_key(now, u64::MAX);
    let mut out = Vec::new();
    // The keys first: the loop may take the write gate, which must never wait while this call holds
    // the database handle (a compaction holding the gate waits for every handle to be let go).
    let keys = store
        .h()?
        .outbox_due
        .range(..=end)
        .map(|kv| kv.map(|(k, _)| k))
        .filter(|k| {
            k.as_ref().map_or(true, |k| {
                k.get(8..16)
                    .and_then(u64_of)
                    .is_none_or(|id| !skip.contains(&id))
            })
        })
        .take(limit)
        .collect::<Result<Vec<_>, _>>()
        .map_err(engine_error)?;
    for k in keys {
        let Some(id) = k.get(8..16).and_then(u64_of) else {
            continue;
        };
        match item(store, id)? {
            Some(item) if item.status == OutboxStatus::Queued => out.push(item),
            // A stale index entry (row gone or no longer queued): drop it.
            _ => {
                let _gate = store.write_gate();
                store.h()?.outbox_due.remove(&k).map_err(engine_error)?;
            }
        }
    }
    Ok(out)
}

pub(super) fn next_due(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(store
        .h()?
        .outbox_due
        .first()
        .map_err(engine_error)?
        .and_then(|(k, _)| k.get(..8).and_then(u64_of))
        .and_then(|ms| DateTime::from_timestamp_millis(ms as i64)))
}

/// How many rows wait to be sent, from the due index: costs O(queued), not O(outbox). (A rare stale index
/// entry, dropped at the next send round, counts too.)
pub(super) fn queued(store: &Store) -> usize {
    store.h().map(|h| h.outbox_due.len()).unwrap_or(0)
}

/// Replace an outbox row, keeping the due index and the counts in step.
pub(super) fn update(store: &Store, item: OutboxItem) -> Result<(), StoreError> {
    let _gate = store.write_gate();
    let h = store.h()?;
    (&h.outbox, &h.outbox_due, &h.meta)
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
            TransactionError::Storage(e) => engine_error(e),
            TransactionError::Abort(()) => StoreError::Conflict("outbox".into()),
        })?;
    if item.status == OutboxStatus::Queued {
        store.wake.outbox.notify_one();
    }
    Ok(())
}
