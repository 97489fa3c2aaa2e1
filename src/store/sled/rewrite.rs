//! Rewriting or deleting what the store holds about one ticket, in one transaction: what erasure
//! (`postdesk customer erase`) and retention (`[retention]`) do ([`crate::store::Tx::rewrite`]), and
//! forgetting what is kept about an address outside its tickets ([`crate::store::Tx::forget_address`]).
//!
//! A [`Rewrite`] names the new state of the ticket (or its deletion), of some of its messages and outbox
//! rows, and the index entries that must go. Blob reference counts follow the messages; a blob whose count
//! reaches zero is deleted with them, unless something outside the messages still needs it (the raw copy of
//! quarantined input).

use std::collections::HashSet;

use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::counts::{add_blob_refs, count_outbox, count_ticket};
use super::keys::{
    auto_count_prefix, dedupe_key, due_key, message_key, outbox_ticket_key, requester_key,
    ticket_key, timer_key, to_json, u64_of,
};
use super::{engine_error, Store};
use crate::desk::ticket::{Message, Ticket, TicketId};
use crate::store::outbox::{OutboxItem, OutboxStatus};
use crate::store::{Removed, Rewrite, StoreError};

/// Apply `rewrite` atomically (the caller holds the writer lock). Returns what it deleted from the blob
/// store.
pub(super) fn rewrite(store: &Store, rewrite: &Rewrite) -> Result<Removed, StoreError> {
    let Some(id) = &rewrite.id else {
        return Ok(Removed::default());
    };
    // Raw copies of quarantined input live in the blob store too, outside any message.
    let keep: HashSet<String> = super::quarantine::list(store)?
        .into_iter()
        .map(|q| q.raw_sha256)
        .collect();
    let _gate = store.write_gate();
    let h = store.h()?;
    let trees = [
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
        &h.timers,
        &h.meta,
    ];
    let result = trees[..].transaction(|t| apply(t, id, rewrite, &keep));
    let removed = match result {
        Ok(r) => r,
        Err(TransactionError::Abort(why)) => {
            return Err(StoreError::Corrupt {
                tree: "tickets",
                reason: why,
            })
        }
        Err(TransactionError::Storage(e)) => return Err(engine_error(e)),
    };
    store.wake.timers.notify_one();
    Ok(removed)
}

fn corrupt(e: serde_json::Error) -> ConflictableTransactionError<String> {
    ConflictableTransactionError::Abort(e.to_string())
}

fn apply(
    t: &[TransactionalTree],
    id: &TicketId,
    rw: &Rewrite,
    keep: &HashSet<String>,
) -> Result<Removed, ConflictableTransactionError<String>> {
    let [tickets, messages, msgid, dedupe, requester, blobs, blob_data, blob_refs, outbox, outbox_due, outbox_ticket, timers, meta] =
        t
    else {
        return Err(ConflictableTransactionError::Abort(
            "wrong number of trees".into(),
        ));
    };
    let key = ticket_key(id);
    let old = match tickets.get(&key)? {
        Some(old) => Some(serde_json::from_slice::<Ticket>(&old).map_err(corrupt)?),
        None => None,
    };
    if let Some(old) = &old {
        for timer in &old.timers {
            timers.remove(timer_key(timer.due, timer.kind, id))?;
        }
    }
    count_ticket(meta, old.as_ref(), rw.ticket.as_ref())?;
    match &rw.ticket {
        Some(ticket) => {
            for timer in &ticket.timers {
                timers.insert(timer_key(timer.due, timer.kind, id), &[])?;
            }
            tickets.insert(key.clone(), to_json(ticket))?;
        }
        None => {
            tickets.remove(key.clone())?;
        }
    }
    let mut unreferenced = Vec::new();
    for (index, new) in &rw.messages {
        let mk = message_key(id, *index);
        if let Some(old) = messages.get(&mk)? {
            let old: Message = serde_json::from_slice(&old).map_err(corrupt)?;
            unreferenced.extend(add_blob_refs(blob_refs, &old, -1)?);
        }
        match new {
            Some(m) => {
                messages.insert(mk, to_json(m))?;
                add_blob_refs::<String>(blob_refs, m, 1)?;
            }
            None => {
                messages.remove(mk)?;
            }
        }
    }
    let mut removed = Removed::default();
    for sha in unreferenced {
        // Counted again by a message written above (a blob moved, not dropped), or still needed elsewhere.
        let still = blob_refs.get(sha.as_bytes())?.is_some() || keep.contains(&sha);
        if still {
            continue;
        }
        if let Some(blob_id) = blobs.remove(sha.as_bytes())? {
            if let Some(bytes) = blob_data.remove(blob_id)? {
                removed.blobs += 1;
                removed.bytes += bytes.len() as u64;
            }
        }
    }
    for address in &rw.requester_entries {
        requester.remove(requester_key(address, id))?;
    }
    for (mid, hash) in &rw.dedupe {
        dedupe.remove(dedupe_key(mid, hash))?;
    }
    for mid in &rw.message_ids {
        if let Some(v) = msgid.get(mid.as_bytes())? {
            let mut ids: Vec<TicketId> = serde_json::from_slice(&v).unwrap_or_default();
            ids.retain(|x| x != id);
            if ids.is_empty() {
                msgid.remove(mid.as_bytes())?;
            } else {
                msgid.insert(mid.as_bytes(), to_json(&ids))?;
            }
        }
    }
    for (oid, new) in &rw.outbox {
        let ob = oid.to_be_bytes();
        let mut old_status = None;
        if let Some(old) = outbox.get(ob)? {
            let old: OutboxItem = serde_json::from_slice(&old).map_err(corrupt)?;
            if old.status == OutboxStatus::Queued {
                outbox_due.remove(due_key(old.next_attempt_at, old.id))?;
            }
            old_status = Some(old.status);
        }
        count_outbox(meta, old_status, new.as_ref().map(|i| i.status))?;
        match new {
            Some(item) => {
                outbox.insert(&ob, to_json(item))?;
                if item.status == OutboxStatus::Queued {
                    outbox_due.insert(due_key(item.next_attempt_at, item.id), &[])?;
                }
            }
            None => {
                outbox.remove(&ob)?;
                outbox_ticket.remove(outbox_ticket_key(id, *oid))?;
            }
        }
    }
    if let Some((name, n)) = &rw.counter {
        let current = meta
            .get(name.as_bytes())?
            .and_then(|v| u64_of(&v))
            .unwrap_or(0);
        meta.insert(name.as_bytes(), &(current + n).to_be_bytes())?;
    }
    Ok(removed)
}

/// [`crate::store::Tx::forget_address`]: the rate-limit log, then the quarantine. The caller holds the
/// writer lock.
pub(super) fn forget_address(store: &Store, address: &str) -> Result<usize, StoreError> {
    forget_auto_log(store, address)?;
    forget_quarantined_containing(store, address)
}

/// Forget when automatic mail went to `recipient` (the rate-limit log is keyed by address).
fn forget_auto_log(store: &Store, recipient: &str) -> Result<usize, StoreError> {
    let _gate = store.write_gate();
    let h = store.h()?;
    let mut prefix = recipient.as_bytes().to_vec();
    prefix.push(0);
    let mut n = 0;
    for kv in h.auto_log.scan_prefix(&prefix) {
        let (k, _) = kv.map_err(engine_error)?;
        h.auto_log.remove(k).map_err(engine_error)?;
        n += 1;
    }
    // The per-minute counts name the address too.
    for kv in h.auto_log.scan_prefix(auto_count_prefix(recipient)) {
        let (k, _) = kv.map_err(engine_error)?;
        h.auto_log.remove(k).map_err(engine_error)?;
    }
    Ok(n)
}

/// Delete quarantined input whose raw bytes mention `needle` (ASCII case-insensitive), with its raw copy
/// unless a message refers to it too. Returns how many entries went. Costs one read of the quarantine.
fn forget_quarantined_containing(store: &Store, needle: &str) -> Result<usize, StoreError> {
    let needle = needle.to_ascii_lowercase().into_bytes();
    if needle.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    for q in super::quarantine::list(store)? {
        let Some(raw) = super::read::blob(store, &q.raw_sha256)? else {
            continue;
        };
        let mentions = raw
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(&needle));
        if !mentions {
            continue;
        }
        let _gate = store.write_gate();
        let h = store.h()?;
        (&h.quarantine, &h.blobs, &h.blob_data, &h.blob_refs)
            .transaction(|(quarantine, blobs, blob_data, refs)| {
                quarantine.remove(&q.id.to_be_bytes())?;
                if refs.get(q.raw_sha256.as_bytes())?.is_none() {
                    if let Some(id) = blobs.remove(q.raw_sha256.as_bytes())? {
                        blob_data.remove(id)?;
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => engine_error(e),
                TransactionError::Abort(()) => StoreError::Conflict("quarantine".into()),
            })?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desk::ticket::{AttachmentRef, Direction, Status};
    use crate::store::{Change, Lookup, OutboxCounts, Storage, StorageExt};
    use chrono::Utc;

    fn ticket(n: u64, count: u32) -> Ticket {
        Ticket::sample(&format!("JP-{n}"))
            .status(Status::Closed)
            .requester(&format!("c{n}@example.com"))
            .message_count(count)
            .build()
    }

    fn message(sha: &str) -> Message {
        serde_json::from_value(serde_json::json!({
            "direction": Direction::In, "from": "c@example.com", "to": [], "date": Utc::now(),
            "received_at": Utc::now(), "message_id": format!("{sha}@x"), "subject": "", "text": "t",
            "attachments": [AttachmentRef { filename: "f".into(), content_type: "x/y".into(), size: 1, sha256: sha.into() }],
            "content_hash": "h",
        }))
        .unwrap()
    }

    fn refs(store: &Store, sha: &str) -> Option<u64> {
        store
            .h()
            .unwrap()
            .blob_refs
            .get(sha)
            .unwrap()
            .and_then(|v| u64_of(&v))
    }

    #[test]
    fn blobs_go_when_the_last_message_referring_to_them_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (shared, own) = ("a".repeat(64), "b".repeat(64));
        for (n, msgs) in [
            (1, vec![message(&shared), message(&own)]),
            (2, vec![message(&shared)]),
        ] {
            store
                .write(|tx| {
                    tx.commit(&Change {
                        ticket: Some(ticket(n, msgs.len() as u32)),
                        messages: msgs,
                        blobs: vec![
                            (shared.clone(), b"S".to_vec()),
                            (own.clone(), b"O".to_vec()),
                        ],
                        ..Change::default()
                    })
                })
                .unwrap();
        }
        assert_eq!(
            (refs(&store, &shared), refs(&store, &own)),
            (Some(2), Some(1))
        );
        // Ticket 1 deleted: its own file goes, the shared one stays for ticket 2.
        let removed = store
            .write(|tx| {
                tx.rewrite(&Rewrite {
                    id: Some(TicketId::new("JP", 1)),
                    messages: vec![(0, None), (1, None)],
                    ..Rewrite::default()
                })
            })
            .unwrap();
        assert_eq!(removed, Removed { blobs: 1, bytes: 1 });
        assert!(store.blob(&own).unwrap().is_none());
        assert_eq!(store.blob(&shared).unwrap().as_deref(), Some(&b"S"[..]));
        assert!(store.ticket(&TicketId::new("JP", 1)).unwrap().is_none());
        // A store from before the counts: rebuilt on open.
        store.h().unwrap().blob_refs.clear().unwrap();
        store.h().unwrap().meta.remove(b"blob_refs:v1").unwrap();
        drop(store);
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(10)).unwrap();
        assert_eq!((refs(&store, &shared), refs(&store, &own)), (Some(1), None));
    }

    fn outbox_row(id: u64, ticket: u64) -> OutboxItem {
        crate::store::outbox::sample_item(id, ticket)
    }

    /// The running counts against a full scan, after every kind of write that touches tickets or outbox rows.
    #[test]
    fn running_counts_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let scan = |store: &Store| {
            let mut m = std::collections::BTreeMap::new();
            for t in store.tickets(None, None).unwrap() {
                *m.entry((t.region.clone(), t.status)).or_insert(0usize) += 1;
            }
            let counted: std::collections::BTreeMap<_, _> = store
                .counts()
                .unwrap()
                .into_iter()
                .map(|(r, s, n)| ((r, s), n))
                .collect();
            assert_eq!(counted, m, "ticket counts");
            let mut o = OutboxCounts::default();
            for item in store.outbox_all().unwrap() {
                *match item.status {
                    OutboxStatus::Queued => &mut o.queued,
                    OutboxStatus::Sent => &mut o.sent,
                    OutboxStatus::Failed => &mut o.failed,
                    OutboxStatus::Bounced => &mut o.bounced,
                } += 1;
            }
            assert_eq!(store.outbox_counts().unwrap(), o, "outbox counts");
        };
        for n in 1..=3 {
            let mut t = ticket(n, 0);
            t.status = Status::New;
            store
                .write(|tx| {
                    tx.commit(&Change {
                        ticket: Some(t),
                        outbox: vec![outbox_row(n, n)],
                        ..Change::default()
                    })
                })
                .unwrap();
        }
        scan(&store);
        // A status change, a change of another ticket in the same commit, a send, a failure, a bounce.
        let mut t1 = store.ticket(&TicketId::new("JP", 1)).unwrap().unwrap();
        t1.status = Status::Open;
        let mut t2 = store.ticket(&TicketId::new("JP", 2)).unwrap().unwrap();
        t2.status = Status::Closed;
        store
            .write(|tx| {
                tx.commit(&Change {
                    ticket: Some(t1),
                    other_tickets: vec![t2],
                    ..Change::default()
                })
            })
            .unwrap();
        let mut sent = outbox_row(1, 1);
        sent.status = OutboxStatus::Sent;
        store.outbox_update(sent).unwrap();
        let mut failed = outbox_row(2, 2);
        failed.status = OutboxStatus::Failed;
        store.outbox_update(failed).unwrap();
        store
            .write(|tx| {
                tx.commit(&Change {
                    bounced: Some((1, "550 no such user".into())),
                    ..Change::default()
                })
            })
            .unwrap();
        scan(&store);
        // Erase-style rewrite of ticket 3 (row 3 cancelled) and a retention purge of ticket 2.
        let mut t3 = store.ticket(&TicketId::new("JP", 3)).unwrap().unwrap();
        t3.status = Status::Closed;
        store
            .write(|tx| {
                tx.rewrite(&Rewrite {
                    id: Some(TicketId::new("JP", 3)),
                    ticket: Some(t3),
                    outbox: vec![(3, None)],
                    ..Rewrite::default()
                })
            })
            .unwrap();
        store
            .write(|tx| {
                tx.rewrite(&Rewrite {
                    id: Some(TicketId::new("JP", 2)),
                    outbox: vec![(2, None)],
                    ..Rewrite::default()
                })
            })
            .unwrap();
        scan(&store);
        // A store from before the counts: rebuilt on open.
        for kv in store.h().unwrap().meta.scan_prefix(b"count") {
            store.h().unwrap().meta.remove(kv.unwrap().0).unwrap();
        }
        store.h().unwrap().meta.remove(b"counts:v1").unwrap();
        drop(store);
        let store = Store::open_waiting(dir.path(), std::time::Duration::from_secs(10)).unwrap();
        assert!(!store.counts().unwrap().is_empty());
        scan(&store);
    }
}
