//! Spam through the service and the real store: stored aside without any outbox row, and deleted whole by
//! retention `[spam] keep` after it became spam, counted apart from closed tickets.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::config::testing::{TestConfig, TestRegion};
use crate::desk::decide::Delivery;
use crate::desk::ticket::{Status, TicketId, TimerKind};
use crate::store::{Lookup, Storage, Store};

fn t0() -> DateTime<Utc> {
    "2026-11-20T09:00:00Z".parse().unwrap()
}

#[test]
fn spam_is_purged_after_keep_and_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .table("[spam]\nkeep = \"7d\"\n[retention]\nclosed_tickets_after = \"3y\"\n")
        .region(
            TestRegion::new("JP", "support-jp@example.com")
                .agents(&["agent@example.com"])
                .agent_notify("jp-agents@example.com"),
        )
        .parse();
    let store = Arc::new(Store::open(&config.storage.path).unwrap());
    let d = Desk::new(config, store).unwrap();
    let region = d.config.region[0].clone();
    let raw = b"X-Spam-Flag: YES\r\nFrom: winner@example.net\r\nTo: support-jp@example.com\r\nSubject: prize\r\nMessage-ID: <s1@x>\r\n\r\nclaim it\r\n";
    d.ingest(&region, raw, "test", &Delivery::normal(), false, t0())
        .unwrap()
        .unwrap();
    let id = TicketId::new("JP", 1000);
    let t = d.store.ticket(&id).unwrap().unwrap();
    assert_eq!(t.status, Status::Spam);
    assert!(d.store.outbox_all().unwrap().is_empty());
    assert_eq!(t.timers.len(), 1);
    assert_eq!(t.timers[0].kind, TimerKind::PurgeTicket);
    assert_eq!(t.timers[0].due, t0() + Duration::days(7));

    // Not before its time; then deleted whole, counted as spam, not as a closed ticket.
    d.fire_timer(&id, TimerKind::PurgeTicket, t0() + Duration::days(6))
        .unwrap();
    assert!(d.store.ticket(&id).unwrap().is_some());
    d.fire_timer(&id, TimerKind::PurgeTicket, t0() + Duration::days(7))
        .unwrap();
    assert!(d.store.ticket(&id).unwrap().is_none());
    assert_eq!(d.store.counter("retention:spam:JP").unwrap(), 1);
    assert_eq!(d.store.counter("retention:tickets:JP").unwrap(), 0);
}
