//! Applying [`Change`]s: every write one event causes (ticket, messages, indexes, blobs, outbox rows,
//! timers, the id sequence, the intake position) in one sled transaction over every tree it touches.
//!
//! The transaction re-checks the sequence and the de-duplication key, although the writer lock already
//! serialises deciding and committing: a bug there aborts instead of corrupting.

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::counts::{add_blob_refs, bump, count_outbox, count_ticket, outbox_status_of};
use super::keys::{
    auto_count_key, auto_log_key, dedupe_key, due_key, message_key, minute_of, outbox_ticket_key,
    requester_key, seq_key, suppressed_key, ticket_key, timer_key, to_json, u64_of,
};
use super::{engine_error, Store};
use crate::desk::ticket::{Message, Ticket, TicketId};
use crate::store::outbox::{OutboxItem, OutboxStatus};
use crate::store::{Change, Committed, StoreError};

/// Why a transaction aborted on purpose.
#[derive(Debug)]
enum Abort {
    Duplicate(TicketId),
    Conflict(String),
    Corrupt(String),
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

/// [`crate::store::Tx::commit_all`]. The caller holds the writer lock. Not durable until flushed.
pub(super) fn commit_all(store: &Store, changes: &[Change]) -> Result<Committed, StoreError> {
    if changes.is_empty() {
        return Ok(Committed::Applied);
    }
    store.check_writable()?;
    // Ids for the blobs are drawn outside the transaction: its closure may run more than once.
    let mut blob_ids = Vec::with_capacity(changes.len());
    for change in changes {
        blob_ids.push(
            change
                .blobs
                .iter()
                .map(|_| store.next_id(super::Ids::Blob))
                .collect::<Result<Vec<u64>, _>>()?,
        );
    }
    let _gate = store.write_gate();
    let h = store.h()?;
    let trees = (
        &h.tickets,
        &h.messages,
        &h.msgid,
        &h.dedupe,
        &h.requester,
        &h.blobs,
        &h.blob_data,
        &h.blob_refs,
        &h.outbox,
        &h.outbox_due,
        &h.outbox_ticket,
        &h.auto_log,
        &h.timers,
        &h.meta,
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
                store.wake.outbox.notify_one();
            }
            if changes.iter().any(|c| c.ticket.is_some()) {
                store.wake.timers.notify_one();
            }
            Ok(Committed::Applied)
        }
        Err(TransactionError::Abort(Abort::Duplicate(id))) => Ok(Committed::Duplicate(id)),
        Err(TransactionError::Abort(Abort::Conflict(why))) => Err(StoreError::Conflict(why)),
        Err(TransactionError::Abort(Abort::Corrupt(why))) => Err(StoreError::Corrupt {
            tree: "dedupe",
            reason: why,
        }),
        Err(TransactionError::Storage(e)) => Err(engine_error(e)),
    }
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
            t.requester
                .insert(requester_key(&ticket.requester, &ticket.id), &[])?;
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
        let k = auto_count_key(recipient, minute_of(*at));
        let n = t.auto_log.get(&k)?.as_deref().and_then(u64_of).unwrap_or(0);
        t.auto_log.insert(k, &(n + 1).to_be_bytes())?;
    }
    if change.suppressed > 0 {
        if let Some(ticket) = &change.ticket {
            bump(
                t.meta,
                &suppressed_key(&ticket.region),
                change.suppressed as i64,
            )?;
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
        t.outbox_ticket
            .insert(outbox_ticket_key(&item.ticket, item.id), &[])?;
    }
    Ok(())
}

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

/// Store `bytes` under `sha` unless they are there already.
pub(super) fn put_blob<E>(
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
