//! Tests of the sled engine through its own door (the trait's contract test is [`crate::store::conformance`]).

use chrono::Utc;

use super::Store;
use crate::desk::ticket::TicketId;
use crate::store::conformance::ticket;
use crate::store::outbox::{OutboxItem, OutboxStatus};
use crate::store::{Change, Committed, Lookup, Storage, StorageExt, StoreError};

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

fn commit(store: &Store, change: &Change) -> Result<Committed, StoreError> {
    store.write(|tx| tx.commit(change))
}

#[test]
fn commits_index_and_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        commit(&store, &new_ticket(1000, "a@example.com", "m1")).unwrap(),
        Committed::Applied
    );
    assert_eq!(
        commit(&store, &new_ticket(1001, "a@example.com", "m2")).unwrap(),
        Committed::Applied
    );
    // The same mail again aborts as a duplicate and changes nothing.
    let mut again = new_ticket(1002, "b@example.com", "m1");
    again.dedupe = Some(("m1".into(), "hash-m1".into()));
    assert_eq!(
        commit(&store, &again).unwrap(),
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
        commit(&store, &new_ticket(1005, "c@example.com", "m5")),
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
        ..crate::store::outbox::sample_item(id, 1000)
    };
    let change = Change {
        outbox: vec![
            item(1, now - chrono::Duration::seconds(5)),
            item(2, now + chrono::Duration::hours(1)),
        ],
        ..Change::default()
    };
    commit(&store, &change).unwrap();
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

/// Another process holding the database is [`StoreError::Busy`], decided where sled's error is converted,
/// so that `open_waiting` and the CLI wait for it instead of failing.
#[test]
fn a_store_held_by_another_opener_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    assert!(err.to_string().contains("another postdesk"), "{err}");
    // Not busy: a path that cannot be a directory.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let err = Store::open(&file).unwrap_err();
    assert!(!err.is_busy(), "{err:?}");
}

/// Issue 21: outbox ids jumped by about 2,000,000 each time the store was opened (sled's `generate_id`).
#[test]
fn outbox_ids_do_not_jump_when_the_store_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    let mut quarantined = Vec::new();
    for _ in 0..3 {
        let store = Store::open(dir.path()).unwrap();
        ids.push(store.generate_id().unwrap());
        ids.push(store.generate_id().unwrap());
        quarantined.push(store.quarantine("JP", "pipe", "test", b"x").unwrap().id);
        store.flush().unwrap();
    }
    assert_eq!(
        ids,
        vec![1, 2, 3, 4, 5, 6],
        "one sequence, from 1, across opens"
    );
    assert_eq!(quarantined, vec![1, 2, 3], "quarantine ids have their own");
    // A compaction and a backup + restore continue it too.
    let store = Store::open(dir.path()).unwrap();
    store.compact().unwrap();
    assert_eq!(store.generate_id().unwrap(), 7);
    let backup = dir.path().join("backup");
    store.backup(&backup, None).unwrap();
    drop(store);
    let restored = dir.path().join("restored");
    super::backup::restore(&backup, &restored, None).unwrap();
    let store = Store::open(&restored).unwrap();
    assert_eq!(store.generate_id().unwrap(), 8);
}

/// A store written before the sequences (ids from sled's generator, plus the `id_offset` a restore set)
/// continues above every id it handed out, never below.
#[test]
fn a_store_from_before_the_id_sequences_continues_above_its_ids() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let h = store.h().unwrap();
        for kind in super::Ids::ALL {
            h.meta.remove(kind.key()).unwrap();
        }
        h.meta
            .insert(b"id_offset", &5_000u64.to_be_bytes())
            .unwrap();
        let mut old = 0;
        for _ in 0..10 {
            old = h.db.generate_id().unwrap() + 5_000;
        }
        h.meta.insert(b"old", &old.to_be_bytes()).unwrap();
        store.flush().unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let old = super::keys::u64_of(&store.h().unwrap().meta.get(b"old").unwrap().unwrap()).unwrap();
    let first = store.generate_id().unwrap();
    assert!(first > old, "{first} after {old}");
    assert_eq!(store.generate_id().unwrap(), first + 1);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        store.generate_id().unwrap(),
        first + 2,
        "and does not jump from then on"
    );
}

#[test]
fn the_rate_limit_history_reads_only_the_newest_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = Utc::now();
    let at = |m: i64| now - chrono::Duration::minutes(m);
    let change = Change {
        auto_log: (0..5)
            .map(|m| ("a@example.com".to_string(), at(m), m as u64))
            .chain([("b@example.com".to_string(), at(0), 9)])
            .collect(),
        ..Change::default()
    };
    assert_eq!(commit(&store, &change).unwrap(), Committed::Applied);
    let since = now - chrono::Duration::hours(1);
    let ms = |v: Vec<chrono::DateTime<Utc>>| -> Vec<i64> {
        v.iter().map(|t| t.timestamp_millis()).collect()
    };
    assert_eq!(
        ms(store.auto_mail_since("a@example.com", since, 2).unwrap()),
        ms(vec![at(0), at(1)]),
        "the newest two, newest first"
    );
    assert_eq!(
        store
            .auto_mail_since("a@example.com", since, usize::MAX)
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        store
            .auto_mail_since("a@example.com", at(2) + chrono::Duration::seconds(1), 10)
            .unwrap()
            .len(),
        2,
        "only since the given time"
    );
    // The staff breaker's count, by the minute, and erasure forgets it with the log.
    assert_eq!(store.auto_mail_count("a@example.com", since).unwrap(), 5);
    assert_eq!(store.auto_mail_count("b@example.com", since).unwrap(), 1);
    assert_eq!(
        store
            .auto_mail_count("a@example.com", now + chrono::Duration::minutes(2))
            .unwrap(),
        0
    );
    store
        .write(|tx| tx.forget_address("a@example.com"))
        .unwrap();
    assert_eq!(store.auto_mail_count("a@example.com", since).unwrap(), 0);
    assert_eq!(store.auto_mail_count("b@example.com", since).unwrap(), 1);
}
