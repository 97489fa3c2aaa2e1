//! The storage contract as a test: [`exercise`] drives an engine only through `&dyn Storage`, so the same
//! function checks every engine (sled below; PostgreSQL gets a wrapper of its own). Each step names the
//! guarantee of [`crate::store::Storage`] it checks.

use chrono::{DateTime, Duration, Utc};

use crate::desk::ticket::{
    AttachmentRef, Direction, Message, Status, Ticket, TicketId, Timer, TimerKind,
};
use crate::store::outbox::{sample_item, OutboxFilter, OutboxItem, OutboxStatus};
use crate::store::{Change, Committed, Rewrite, Storage, StorageExt, StoreError};

/// A new ticket `JP-n` of `requester`, no message stored yet (the rest as [`Ticket::sample`] has them).
pub(crate) fn ticket(n: u64, requester: &str) -> Ticket {
    Ticket::sample(&format!("JP-{n}"))
        .requester(requester)
        .message_count(0)
        .build()
}

fn message(message_id: &str, text: &str, attachment: Option<&str>) -> Message {
    serde_json::from_value(serde_json::json!({
        "direction": Direction::In, "from": "c@example.com", "to": [], "date": Utc::now(),
        "received_at": Utc::now(), "message_id": message_id, "subject": "", "text": text,
        "attachments": attachment.map(|sha| vec![AttachmentRef {
            filename: "f.txt".into(), content_type: "text/plain".into(), size: 4, sha256: sha.into(),
        }]).unwrap_or_default(),
        "content_hash": format!("hash-{message_id}"),
    }))
    .expect("a message from its required fields")
}

fn row(id: u64, ticket: u64, due: DateTime<Utc>) -> OutboxItem {
    OutboxItem {
        next_attempt_at: due,
        ..sample_item(id, ticket)
    }
}

fn commit(store: &dyn Storage, change: &Change) -> Result<Committed, StoreError> {
    store.write(|tx| tx.commit(change))
}

/// Everything a caller relies on, through the trait only. Panics on the first broken guarantee.
pub(crate) fn exercise(store: &dyn Storage) {
    let now = Utc::now();
    let jp = |n| TicketId::new("JP", n);
    let sha = "c".repeat(64);
    // Timers are kept to the millisecond.
    let ms = |d: DateTime<Utc>| DateTime::from_timestamp_millis(d.timestamp_millis()).unwrap();

    // An empty store.
    assert!(store.ticket(&jp(1000)).unwrap().is_none());
    assert_eq!(store.next_ticket_number("JP", 1000).unwrap(), 1000);
    assert!(store.timers_next().unwrap().is_none());
    assert!(store.outbox_next_due().unwrap().is_none());
    assert!(store.intake_state(b"imap:JP:cursor").unwrap().is_none());
    store.writable().unwrap();
    let (a, b) = (store.generate_id().unwrap(), store.generate_id().unwrap());
    assert_ne!(a, b, "ids never repeat");

    // Apply, then read: one change holds ticket, message, indexes, blob, outbox rows, timers, the rate-limit
    // log and the intake position.
    let mut t = ticket(1000, "a@example.com");
    t.message_count = 1;
    t.timers = vec![
        Timer {
            kind: TimerKind::SlaBreach,
            due: now - Duration::seconds(1),
        },
        Timer {
            kind: TimerKind::AutoClose,
            due: now + Duration::days(3),
        },
    ];
    let (soon, later) = (store.generate_id().unwrap(), store.generate_id().unwrap());
    let first = Change {
        ticket: Some(t.clone()),
        new_ticket: true,
        messages: vec![message("m1@x", "where is my order", Some(&sha))],
        blobs: vec![(sha.clone(), b"file".to_vec())],
        outbox: vec![
            row(soon, 1000, now - Duration::seconds(5)),
            row(later, 1000, now + Duration::hours(1)),
        ],
        dedupe: Some(("m1@x".into(), "hash-m1@x".into())),
        message_ids: vec!["m1@x".into()],
        intake_state: Some((b"imap:JP:cursor".to_vec(), b"7:42".to_vec())),
        auto_log: vec![("a@example.com".into(), now, soon)],
        suppressed: 2,
        ..Change::default()
    };
    // Inside the writer, the handle reads what it committed; the closure's value comes back out.
    let seen = store.write(|tx| {
        assert_eq!(tx.commit(&first).unwrap(), Committed::Applied);
        tx.ticket(&jp(1000)).unwrap().map(|t| t.requester)
    });
    assert_eq!(seen.as_deref(), Some("a@example.com"));
    let stored = store.ticket(&jp(1000)).unwrap().expect("the ticket");
    assert_eq!(
        (stored.requester.as_str(), stored.message_count),
        ("a@example.com", 1)
    );
    let messages = store.messages(&jp(1000)).unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].text, "where is my order");
    assert_eq!(
        store.messages_indexed(&jp(1000)).unwrap()[0].0,
        0,
        "messages keep their index"
    );
    assert_eq!(
        store.tickets_for_message_id("m1@x").unwrap(),
        vec![jp(1000)]
    );
    assert_eq!(
        store.duplicate_of("m1@x", "hash-m1@x").unwrap(),
        Some(jp(1000))
    );
    assert_eq!(store.duplicate_of("m1@x", "other").unwrap(), None);
    assert_eq!(
        store.tickets_of_requester("A@Example.com").unwrap(),
        vec![jp(1000)]
    );
    assert_eq!(store.next_ticket_number("JP", 1000).unwrap(), 1001);
    assert_eq!(store.blob(&sha).unwrap().as_deref(), Some(&b"file"[..]));
    assert_eq!(
        store
            .auto_mail_since("a@example.com", now - Duration::minutes(1), usize::MAX)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.suppressed("JP").unwrap(), 2);
    assert_eq!(
        store.tickets(Some("JP"), Some(Status::New)).unwrap().len(),
        1
    );
    assert!(store.tickets(None, Some(Status::Open)).unwrap().is_empty());
    assert_eq!(
        store.counts().unwrap(),
        vec![("JP".to_string(), Status::New, 1)]
    );
    assert_eq!(store.outbox_counts().unwrap().queued, 2);
    assert_eq!(
        store.intake_state(b"imap:JP:cursor").unwrap().as_deref(),
        Some(&b"7:42"[..])
    );

    // Duplicate detection: the same mail again changes nothing, even with another ticket number.
    let mut again = first.clone();
    let mut other = ticket(1001, "b@example.com");
    other.message_count = 1;
    again.ticket = Some(other);
    again.outbox.clear();
    assert_eq!(
        commit(store, &again).unwrap(),
        Committed::Duplicate(jp(1000))
    );
    assert!(store.ticket(&jp(1001)).unwrap().is_none());
    assert_eq!(store.next_ticket_number("JP", 1000).unwrap(), 1001);
    // A batch with one duplicate is refused whole.
    let fresh = Change {
        ticket: Some(ticket(1001, "b@example.com")),
        new_ticket: true,
        dedupe: Some(("m2@x".into(), "hash-m2@x".into())),
        ..Change::default()
    };
    assert_eq!(
        store
            .write(|tx| tx.commit_all(&[fresh.clone(), again.clone()]))
            .unwrap(),
        Committed::Duplicate(jp(1000))
    );
    assert!(store.ticket(&jp(1001)).unwrap().is_none());
    // A number the sequence has not reached is a conflict, not a silent skip.
    let mut skip = fresh.clone();
    skip.ticket = Some(ticket(1005, "b@example.com"));
    assert!(matches!(commit(store, &skip), Err(StoreError::Conflict(_))));
    assert_eq!(commit(store, &fresh).unwrap(), Committed::Applied);
    assert_eq!(store.next_ticket_number("JP", 1000).unwrap(), 1002);

    // The outbox queue: due rows only, an outcome takes a row off, a retry queues it again.
    let due = store.outbox_due(now, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), vec![soon]);
    let mut sent = due[0].clone();
    sent.status = OutboxStatus::Sent;
    sent.attempts = 1;
    store.outbox_update(sent).unwrap();
    assert!(store.outbox_due(now, 10).unwrap().is_empty());
    assert!(store.outbox_next_due().unwrap().is_some_and(|t| t > now));
    let item = store.outbox_item(soon).unwrap().expect("the sent row");
    assert_eq!((item.status, item.attempts), (OutboxStatus::Sent, 1));
    let counts = store.outbox_counts().unwrap();
    assert_eq!((counts.queued, counts.sent), (1, 1));
    let retried = store.outbox_retry(later).unwrap();
    assert!(retried.requeued_at.is_some());
    assert_eq!(
        store
            .outbox_due(Utc::now(), 10)
            .unwrap()
            .iter()
            .map(|i| i.id)
            .collect::<Vec<_>>(),
        vec![later]
    );
    assert_eq!(store.outbox_of_ticket(&jp(1000)).unwrap().len(), 2);
    assert_eq!(store.outbox_list(OutboxFilter::All).unwrap().len(), 2);
    assert!(store.outbox_item(u64::MAX).unwrap().is_none());
    assert!(matches!(
        store.outbox_retry(u64::MAX),
        Err(StoreError::NoOutboxRow(_))
    ));
    // A delivery report marks its row bounced, in the change of the report.
    let bounce = Change {
        bounced: Some((soon, "550 no such user".into())),
        ..Change::default()
    };
    commit(store, &bounce).unwrap();
    assert_eq!(
        store.outbox_item(soon).unwrap().map(|i| i.status),
        Some(OutboxStatus::Bounced)
    );

    // The timer queue: what is due, soonest first; rewriting the ticket replaces its timers.
    assert_eq!(
        store.timers_due(now, 10).unwrap(),
        vec![(jp(1000), TimerKind::SlaBreach, ms(t.timers[0].due))]
    );
    assert_eq!(store.timers_all().unwrap().len(), 2);
    assert_eq!(store.timers_next().unwrap(), Some(ms(t.timers[0].due)));
    let mut fired = stored.clone();
    fired.timers.retain(|t| t.kind != TimerKind::SlaBreach);
    fired.breached = true;
    commit(
        store,
        &Change {
            ticket: Some(fired),
            ..Change::default()
        },
    )
    .unwrap();
    assert!(store.timers_due(now, 10).unwrap().is_empty());
    assert_eq!(store.timers_next().unwrap(), Some(ms(t.timers[1].due)));

    // The intake cursor outside a change.
    store.set_intake_state(b"imap:JP:cursor", b"7:43").unwrap();
    assert_eq!(
        store.intake_state(b"imap:JP:cursor").unwrap().as_deref(),
        Some(&b"7:43"[..])
    );

    // Quarantine: the entry and its raw bytes.
    let raw = b"\x00\x01 from z@example.com";
    let q = store
        .quarantine("JP", "maildir", "not a mail", raw)
        .unwrap();
    let listed = store.quarantined().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].size), (q.id, raw.len() as u64));
    assert_eq!(
        store.blob(&q.raw_sha256).unwrap().as_deref(),
        Some(&raw[..])
    );

    // Retention and erasure: a rewrite without a ticket deletes it, its message and the blob nobody else
    // refers to; forgetting an address drops what mentions it outside tickets.
    let removed = store
        .write(|tx| {
            tx.rewrite(&Rewrite {
                id: Some(jp(1000)),
                messages: vec![(0, None)],
                requester_entries: vec!["a@example.com".into()],
                ..Rewrite::default()
            })
        })
        .unwrap();
    assert_eq!((removed.blobs, removed.bytes), (1, 4));
    assert!(store.blob(&sha).unwrap().is_none());
    assert!(store.ticket(&jp(1000)).unwrap().is_none());
    assert!(store.messages(&jp(1000)).unwrap().is_empty());
    assert!(store.timers_all().unwrap().is_empty());
    assert!(store
        .tickets_of_requester("a@example.com")
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .write(|tx| tx.forget_address("Z@example.com"))
            .unwrap(),
        1
    );
    assert!(store.quarantined().unwrap().is_empty());
    assert_eq!(
        store
            .auto_mail_since("a@example.com", now - Duration::minutes(1), usize::MAX)
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .write(|tx| tx.forget_address("a@example.com"))
            .unwrap(),
        0
    );
    assert!(store
        .auto_mail_since("a@example.com", now - Duration::minutes(1), usize::MAX)
        .unwrap()
        .is_empty());

    // Compaction (what erasure calls) changes nothing a caller can read, and ids keep never repeating.
    let next_before = store.next_ticket_number("JP", 1000).unwrap();
    let cursor = store.intake_state(b"imap:JP:cursor").unwrap();
    let id_before = store.generate_id().unwrap();
    store.compact().unwrap();
    assert_eq!(store.next_ticket_number("JP", 1000).unwrap(), next_before);
    assert_eq!(store.intake_state(b"imap:JP:cursor").unwrap(), cursor);
    assert!(store.generate_id().unwrap() > id_before, "ids never repeat");
    store.writable().unwrap();

    // Durability: a flush returns once everything above is on disk.
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(store.flush_async())
        .unwrap();
}

#[test]
fn sled_keeps_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(dir.path()).unwrap();
    exercise(&store);
    // What was flushed is there after a reopen.
    drop(store);
    let store =
        crate::store::Store::open_waiting(dir.path(), std::time::Duration::from_secs(10)).unwrap();
    let dyn_store: &dyn Storage = &store;
    assert_eq!(dyn_store.next_ticket_number("JP", 1000).unwrap(), 1002);
    assert_eq!(
        dyn_store
            .intake_state(b"imap:JP:cursor")
            .unwrap()
            .as_deref(),
        Some(&b"7:43"[..])
    );
}
