//! Tests of the application service: a real sled store in a temporary directory, the file transport, no
//! servers. Regression tests are named after what broke.

use crate::store::{Lookup, Storage, Store};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::config::testing::{TestConfig, TestRegion};
use crate::config::Config;
use crate::desk::decide::Delivery;
use crate::desk::ticket::{Status, TicketId, TimerKind};
use crate::telemetry::Telemetry;

mod batch {
    use super::*;

    fn desk(dir: &std::path::Path) -> Desk {
        let config = TestConfig::new(dir).region(TestRegion::jp()).parse();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        Desk::new(config, store).unwrap()
    }

    fn item(raw: &[u8]) -> Incoming<'_> {
        Incoming {
            raw,
            source: "test".into(),
            delivery: Delivery::normal(),
            state: None,
        }
    }

    #[test]
    fn a_batch_sees_its_own_earlier_mail() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk(dir.path());
        let first =
            b"From: a@example.com\r\nSubject: help\r\nMessage-ID: <1@a>\r\n\r\nfirst\r\n".to_vec();
        let reply = b"From: a@example.com\r\nSubject: more\r\nMessage-ID: <2@a>\r\nIn-Reply-To: <1@a>\r\n\r\nsecond\r\n".to_vec();
        let other =
            b"From: b@example.com\r\nSubject: other\r\nMessage-ID: <3@b>\r\n\r\nthird\r\n".to_vec();
        let junk = b"\x00\x01 not mail".to_vec();
        let region = d.config.region[0].clone();
        let out = d
            .ingest_batch(
                &region,
                vec![
                    item(&first),
                    item(&reply),
                    item(&first),
                    item(&other),
                    item(&junk),
                ],
                Utc::now(),
            )
            .unwrap();
        let jp = |n| TicketId::new("JP", n);
        assert_eq!(
            out[0],
            Outcome::Stored {
                ticket: jp(1000),
                new: true,
                queued: 1
            }
        );
        assert_eq!(
            out[1],
            Outcome::Stored {
                ticket: jp(1000),
                new: false,
                queued: 0
            }
        );
        assert_eq!(out[2], Outcome::Duplicate(jp(1000)));
        assert_eq!(
            out[3],
            Outcome::Stored {
                ticket: jp(1001),
                new: true,
                queued: 1
            }
        );
        assert!(matches!(out[4], Outcome::Quarantined { .. }));
        assert_eq!(d.store.messages(&jp(1000)).unwrap().len(), 2);
        assert_eq!(d.store.next_ticket_number("JP", 1000).unwrap(), 1002);
        // The next batch continues the sequence and still recognises the copies.
        let out = d
            .ingest_batch(
                &region,
                vec![
                    item(&other),
                    item(b"From: c@example.com\r\nSubject: x\r\n\r\nnew\r\n"),
                ],
                Utc::now(),
            )
            .unwrap();
        assert_eq!(out[0], Outcome::Duplicate(jp(1001)));
        assert_eq!(
            out[1],
            Outcome::Stored {
                ticket: jp(1002),
                new: true,
                queued: 1
            }
        );
    }
}

mod merge {
    use super::*;

    #[test]
    fn merge_moves_messages_and_both_conversations_continue_in_the_survivor() {
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig::new(dir.path())
            .region(TestRegion::jp().agents(&["agent@example.com"]))
            .parse();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let d = Desk::new(config, store).unwrap();
        let region = d.config.region[0].clone();
        let ingest = |raw: &str| {
            d.ingest(
                &region,
                raw.as_bytes(),
                "test",
                &Delivery::normal(),
                false,
                Utc::now(),
            )
            .unwrap()
            .unwrap()
        };
        let jp = |n| TicketId::new("JP", n);
        ingest("From: a@example.com\r\nSubject: order late\r\nMessage-ID: <a1@x>\r\n\r\nwhere is it\r\n");
        ingest("From: b@example.com\r\nSubject: same order\r\nMessage-ID: <b1@x>\r\n\r\nmy colleague asked too\r\n");
        // A bad target is refused and changes nothing.
        ingest("From: agent@example.com\r\nSubject: Re: [JP-1001] x\r\nMessage-ID: <m0@x>\r\n\r\n#merge JP-4242\r\n");
        assert!(d
            .store
            .ticket(&jp(1001))
            .unwrap()
            .unwrap()
            .merged_into
            .is_none());
        ingest("From: agent@example.com\r\nSubject: Re: [JP-1001] x\r\nMessage-ID: <m1@x>\r\n\r\n#merge JP-1000\r\nsame issue as JP-1000\r\n");
        let merged = d.store.ticket(&jp(1001)).unwrap().unwrap();
        assert_eq!(merged.merged_into, Some(jp(1000)));
        assert_eq!(merged.status, Status::Closed);
        assert!(d.store.messages(&jp(1001)).unwrap().is_empty());
        let survivor = d.store.ticket(&jp(1000)).unwrap().unwrap();
        assert!(survivor.participants.contains(&"b@example.com".to_string()));
        let texts: Vec<String> = d
            .store
            .messages(&jp(1000))
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert!(
            texts.iter().any(|t| t.contains("my colleague"))
                && texts.iter().any(|t| t.contains("same issue")),
            "{texts:?}"
        );
        // Replies to either ticket land in the survivor, by tag or by References.
        assert!(
            matches!(ingest("From: b@example.com\r\nSubject: Re: [JP-1001] same order\r\nMessage-ID: <b2@x>\r\n\r\nany news?\r\n"), Outcome::Stored { ticket, .. } if ticket == jp(1000))
        );
        assert!(
            matches!(ingest("From: b@example.com\r\nSubject: more\r\nMessage-ID: <b3@x>\r\nReferences: <b1@x>\r\n\r\nstill waiting\r\n"), Outcome::Stored { ticket, .. } if ticket == jp(1000))
        );
        assert_eq!(d.store.tickets(None, None).unwrap().len(), 2);
    }
}

/// Issue 14: a late reply to a closed ticket, through the store: both tickets link each other, and the
/// new ticket's notification names the old one and its last answer.
mod late_reply {
    use super::*;

    #[test]
    fn a_reply_to_a_closed_ticket_links_both_ways_and_names_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk_with(dir.path(), "", "");
        let jp = |n| TicketId::new("JP", n);
        ingest_at(
            &d,
            &mail(
                "a@example.net",
                "Broken kettle",
                "k1@x",
                "",
                "It does not heat.",
            ),
            t0(),
        );
        ingest_at(
            &d,
            &mail(
                "agent@example.com",
                "Re: [JP-1000] Broken kettle",
                "ag@x",
                "",
                "We shipped a replacement today.",
            ),
            t0() + Duration::minutes(5),
        );
        // A plain answer: open, nothing asked.
        assert_eq!(
            d.store.ticket(&jp(1000)).unwrap().unwrap().status,
            Status::Open
        );
        d.set_status(&jp(1000), Status::Closed, t0() + Duration::hours(1))
            .unwrap()
            .unwrap();
        let late = ingest_at(
            &d,
            &mail(
                "a@example.net",
                "Re: [JP-1000] Broken kettle",
                "k2@x",
                "",
                "The replacement is broken too.",
            ),
            t0() + Duration::days(3),
        );
        assert!(matches!(late, Outcome::Stored { ticket, new: true, .. } if ticket == jp(1001)));
        assert_eq!(
            d.store.ticket(&jp(1001)).unwrap().unwrap().links,
            vec![jp(1000)]
        );
        let old = d.store.ticket(&jp(1000)).unwrap().unwrap();
        assert_eq!(old.links, vec![jp(1001)], "the closed ticket links back");
        assert_eq!(old.status, Status::Closed);
        let notify = rows(&d, crate::desk::reply::Event::AgentNotify)
            .into_iter()
            .find(|r| r.ticket == jp(1001))
            .expect("the new ticket's notification");
        assert!(
            notify.text.contains("closed ticket JP-1000"),
            "{}",
            notify.text
        );
        assert!(
            notify.text.contains("We shipped a replacement today."),
            "{}",
            notify.text
        );
    }
}

mod telemetry {
    use super::*;

    fn count(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn desk_counts_ingests_parse_failures_quarantine_and_sla_breaches() {
        let dir = tempfile::tempdir().unwrap();
        let config = TestConfig::new(dir.path())
            .region(TestRegion::new("JP", "support-jp@example.com"))
            .parse();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let telemetry = Arc::new(Telemetry::new());
        let d = Desk::with_telemetry(config, store, telemetry.clone()).unwrap();
        let region = d.config.region[0].clone();
        let now = Utc::now();
        let mail = b"From: a@example.com\r\nSubject: help\r\nMessage-ID: <1@a>\r\n\r\nhi\r\n";
        let ingest = |raw: &[u8], quarantine| {
            d.ingest(&region, raw, "t", &Delivery::normal(), quarantine, now)
                .unwrap()
        };
        assert!(ingest(mail, false).is_ok());
        assert!(ingest(mail, false).is_ok()); // a duplicate is not counted again
        assert!(ingest(b"\x00\x01", false).is_err()); // refused: counted, not quarantined
        assert!(ingest(b"\x00\x02", true).is_ok()); // quarantined
        let id = TicketId::new("JP", 1000);
        d.fire_timer(&id, TimerKind::SlaBreach, now + chrono::Duration::days(2))
            .unwrap();
        // A breach is counted once, even if its timer fires again.
        d.fire_timer(&id, TimerKind::SlaBreach, now + chrono::Duration::days(3))
            .unwrap();
        let m = telemetry.render(&d.store).unwrap();
        for (series, n) in [
            ("postdesk_mails_ingested_total{region=\"JP\"}", 1.0),
            ("postdesk_parse_failures_total{region=\"JP\"}", 2.0),
            ("postdesk_quarantined_total{region=\"JP\"}", 1.0),
            ("postdesk_sla_breaches_total{region=\"JP\"}", 1.0),
            ("postdesk_tickets{region=\"JP\",status=\"new\"}", 1.0),
        ] {
            assert_eq!(count(&m, series), Some(n), "{series} in\n{m}");
        }
    }
}

/// A desk on a fresh store: region JP (English), one agent, the agents' list as `agent_notify`, the
/// default limits unless `outbound` (keys of `[outbound]`) or `sections` (further tables) say otherwise.
fn desk_with(dir: &std::path::Path, outbound: &str, sections: &str) -> Desk {
    let config = config_with(dir, outbound, sections);
    let store = Arc::new(Store::open(&config.storage.path).unwrap());
    Desk::new(config, store).unwrap()
}

fn config_with(dir: &std::path::Path, outbound: &str, sections: &str) -> Config {
    TestConfig::new(dir)
        .outbound(outbound)
        .table(sections)
        .region(
            TestRegion::new("JP", "support-jp@example.com")
                .locale("en")
                .agents(&["agent@example.com"])
                .agent_notify("jp-agents@example.com"),
        )
        .parse()
}

fn mail(from: &str, subject: &str, id: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("From: {from}\r\nTo: support-jp@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{headers}\r\n{body}\r\n").into_bytes()
}

fn ingest_at(d: &Desk, raw: &[u8], now: DateTime<Utc>) -> Outcome {
    let region = d.config.region[0].clone();
    d.ingest(&region, raw, "test", &Delivery::normal(), false, now)
        .unwrap()
        .unwrap()
}

/// The outbox rows of `event`.
fn rows(d: &Desk, event: crate::desk::reply::Event) -> Vec<crate::outbound::OutboxItem> {
    d.store
        .outbox_all()
        .unwrap()
        .into_iter()
        .filter(|i| i.kind.parse() == Ok(event))
        .collect()
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T09:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

/// Fire every timer due at `now`, as the scheduler does.
fn tick(d: &Desk, now: DateTime<Utc>) {
    for (id, kind, _) in d.store.timers_due(now, 10_000).unwrap() {
        d.fire_timer(&id, kind, now).unwrap();
    }
}

/// What `f` logs at WARN and above, as text.
fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let r = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (r, text)
}

fn metric(d: &Desk, telemetry: &Telemetry, series: &str) -> Option<f64> {
    telemetry
        .render(&d.store)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

mod regressions {
    use super::*;
    use crate::desk::reply::Event;
    use crate::outbound::OutboxStatus;

    /// Defect 1: with the default limits the agents' list got 10 notifications in 10 minutes and 60 a day;
    /// a busy hour told the agents of 16 tickets out of 150.
    #[test]
    fn busy_hour_tells_agents_of_every_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk_with(dir.path(), "", "");
        let mut at = t0();
        for i in 0..120 {
            let raw = mail(
                &format!("customer{i}@example.net"),
                "My order has not arrived",
                &format!("new{i}@example.net"),
                "",
                "Hello, my order has not arrived yet. Could you check?",
            );
            assert!(matches!(
                ingest_at(&d, &raw, at),
                Outcome::Stored { new: true, .. }
            ));
            at += Duration::seconds(25);
        }
        for i in 0..20 {
            let raw = mail(
                &format!("customer{i}@example.net"),
                &format!("Re: [JP-{}] My order has not arrived", 1000 + i),
                &format!("reply{i}@example.net"),
                "",
                "Any news?",
            );
            assert!(matches!(
                ingest_at(&d, &raw, at),
                Outcome::Stored { new: false, .. }
            ));
            at += Duration::seconds(25);
        }
        assert!(at - t0() <= Duration::hours(1));
        let acks = rows(&d, Event::Ack);
        let notes = rows(&d, Event::AgentNotify);
        assert_eq!(acks.len(), 120);
        assert_eq!(notes.len(), 140);
        assert!(notes
            .iter()
            .all(|n| n.to == ["jp-agents@example.com"] && n.status == OutboxStatus::Queued));
    }

    /// Defect 1: SLA reminders and escalations were cut by the same per-recipient limits.
    #[test]
    fn sla_reminders_and_escalations_are_not_throttled() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk_with(
            dir.path(),
            "",
            "[timers]\nescalate_to = \"leads@example.com\"\n",
        );
        for i in 0..30 {
            let raw = mail(
                &format!("c{i}@example.net"),
                "Login fails",
                &format!("sla{i}@example.net"),
                "",
                "I cannot log in to my account.",
            );
            ingest_at(&d, &raw, t0());
        }
        // 80 % of the 24-hour target: every ticket's agents are reminded; at 24 hours, escalated.
        tick(&d, t0() + Duration::hours(20));
        tick(&d, t0() + Duration::hours(25));
        let reminders = rows(&d, Event::SlaReminder);
        let escalations = rows(&d, Event::Escalation);
        assert_eq!(reminders.len(), 30);
        assert_eq!(escalations.len(), 30);
        assert!(escalations
            .iter()
            .all(|e| e.to == ["leads@example.com", "jp-agents@example.com"]));
        // The agents' list had 90 staff mails in a day, the leads 30 in an instant: none was held back.
        assert_eq!(rows(&d, Event::AgentNotify).len(), 30);
    }

    /// The merge status bypass: a merged ticket was set `closed` directly, so `status_since` kept the time
    /// of its previous status and retention counted from then.
    #[test]
    fn merge_closes_the_ticket_through_the_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk_with(
            dir.path(),
            "",
            "[retention]\nclosed_tickets_after = \"30d\"\n",
        );
        let jp = |n| TicketId::new("JP", n);
        ingest_at(
            &d,
            &mail("a@example.net", "Order late", "a1@x", "", "Where is it?"),
            t0(),
        );
        ingest_at(
            &d,
            &mail("b@example.net", "Same order", "b1@x", "", "Mine too."),
            t0(),
        );
        // An agent asks b for details: JP-1001 waits for the customer from then.
        let asked = t0() + Duration::minutes(10);
        ingest_at(
            &d,
            &mail(
                "agent@example.com",
                "Re: [JP-1001] Same order",
                "ag1@x",
                "",
                "#ask\r\nWhich order number?",
            ),
            asked,
        );
        let pending = d.store.ticket(&jp(1001)).unwrap().unwrap();
        assert_eq!(
            (pending.status, pending.status_since),
            (Status::Pending, Some(asked))
        );
        let merged_at = t0() + Duration::hours(2);
        ingest_at(
            &d,
            &mail(
                "agent@example.com",
                "Re: [JP-1001] Same order",
                "ag2@x",
                "",
                "#merge JP-1000",
            ),
            merged_at,
        );
        let merged = d.store.ticket(&jp(1001)).unwrap().unwrap();
        assert_eq!(merged.merged_into, Some(jp(1000)));
        assert_eq!(merged.status, Status::Closed);
        assert_eq!(merged.status_since, Some(merged_at));
        assert_eq!(
            merged.timers,
            vec![crate::desk::ticket::Timer {
                kind: TimerKind::PurgeTicket,
                due: merged_at + Duration::days(30)
            }],
            "retention counts from the merge"
        );
    }

    /// Staff mail is not held to the per-recipient limits, so nothing else stopped a loop between the
    /// notifications and an auto-responder on the staff side (an agent's out-of-office, the list's, a list
    /// member's without any automatic headers): each of its answers opened a ticket and was notified again.
    #[test]
    fn an_agents_autoresponder_gets_no_further_mail() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk_with(
            dir.path(),
            "",
            "[timers]\nescalate_to = \"leads@example.com\"\n",
        );
        ingest_at(
            &d,
            &mail(
                "hanako@example.net",
                "Refund",
                "c1@x",
                "",
                "Please refund order A-1.",
            ),
            t0(),
        );
        let notify = rows(&d, Event::AgentNotify);
        assert_eq!(notify.len(), 1);
        let answered = format!("In-Reply-To: <{}>\r\n", notify[0].message_id);
        let before = d.store.ticket(&TicketId::new("JP", 1000)).unwrap().unwrap();
        let mut at = t0();
        for round in 0..5 {
            for (from, subject, headers) in [
                (
                    "agent@example.com",
                    "Automatic reply: [JP-1000] Refund",
                    format!("{answered}Auto-Submitted: auto-replied\r\n"),
                ),
                // No automatic headers at all, not an agent: only the answered notification tells.
                ("member@example.com", "Out of office", answered.clone()),
                ("jp-agents@example.com", "Re: Refund", answered.clone()),
                (
                    "leads@example.com",
                    "Automatic reply: [JP-1000] Refund",
                    "X-Autoreply: yes\r\n".to_string(),
                ),
            ] {
                at += Duration::minutes(1);
                let id = format!("ooo-{round}-{from}");
                let out = ingest_at(
                    &d,
                    &mail(from, subject, &id, &headers, "I am out of the office."),
                    at,
                );
                assert_eq!(
                    out,
                    Outcome::Stored {
                        ticket: TicketId::new("JP", 1000),
                        new: false,
                        queued: 0
                    },
                    "{from}"
                );
            }
        }
        assert_eq!(
            d.store.outbox_all().unwrap().len(),
            2,
            "the ack and the notification"
        );
        assert_eq!(d.store.tickets(None, None).unwrap().len(), 1);
        let after = d.store.ticket(&TicketId::new("JP", 1000)).unwrap().unwrap();
        assert_eq!(after.status, before.status);
        assert_eq!(
            after.last_customer_message_id, before.last_customer_message_id,
            "the desk still answers the customer's mail"
        );
        let messages = d.store.messages(&TicketId::new("JP", 1000)).unwrap();
        assert_eq!(messages.len(), 21);
        assert!(messages[1..].iter().all(|m| m.auto.is_some()));
        // The agent answering the notification for real is still relayed to the customer.
        let out = ingest_at(
            &d,
            &mail(
                "agent@example.com",
                "Re: [JP-1000] Refund",
                "real@x",
                &answered,
                "The refund is on its way.",
            ),
            at + Duration::minutes(1),
        );
        assert!(matches!(out, Outcome::Stored { queued: 1, .. }));
        assert_eq!(rows(&d, Event::AgentReply).len(), 1);
    }

    /// Defect 2, at run time: an override using a variable its event does not have failed in strict mode,
    /// and every new ticket was refused (exit 75), forever.
    #[test]
    fn a_template_failing_at_run_time_still_stores_the_ticket() {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("templates");
        std::fs::create_dir_all(templates.join("en")).unwrap();
        // `body` belongs to agent_reply, not to ack.
        std::fs::write(templates.join("en/ack.txt.hbs"), "Thanks. {{body}}\n").unwrap();
        let outbound = format!("templates_dir = \"{}\"", templates.display());
        let config = config_with(dir.path(), &outbound, "");
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let telemetry = Arc::new(Telemetry::new());
        let d = Desk::with_telemetry(config.clone(), store.clone(), telemetry.clone()).unwrap();
        let raw = mail(
            "pat@example.net",
            "Broken screen",
            "t1@x",
            "",
            "My screen is broken.",
        );
        let (out, log) = logged(|| ingest_at(&d, &raw, t0()));
        assert_eq!(
            out,
            Outcome::Stored {
                ticket: TicketId::new("JP", 1000),
                new: true,
                queued: 1
            },
            "stored; the notification is queued"
        );
        assert!(d
            .store
            .ticket(&TicketId::new("JP", 1000))
            .unwrap()
            .is_some());
        let ack = rows(&d, Event::Ack).remove(0);
        assert_eq!(ack.status, OutboxStatus::Failed);
        let why = ack.last_error.clone().unwrap();
        assert!(
            why.contains("en/ack.txt.hbs") && why.contains("outbox retry"),
            "{why}"
        );
        assert!(ack.unrendered.is_some() && ack.text.is_empty());
        assert_eq!(rows(&d, Event::AgentNotify)[0].status, OutboxStatus::Queued);
        assert!(
            log.contains("ERROR") && log.contains("en/ack.txt.hbs") && log.contains("outbox retry"),
            "{log}"
        );
        assert_eq!(
            metric(
                &d,
                &telemetry,
                "postdesk_render_failures_total{region=\"JP\"}"
            ),
            Some(1.0)
        );
        // Retried while still broken: still failed, and it says why.
        assert!(d.retry_outbox(ack.id, false).is_err());
        let row = d.store.outbox_item(ack.id).unwrap().unwrap();
        assert_eq!(row.status, OutboxStatus::Failed);
        // Fixed and reloaded: the retry renders it with the context it was decided with, and queues it.
        std::fs::write(
            templates.join("en/ack.txt.hbs"),
            "Thanks. Your ticket is {{ticket_id}}.\n",
        )
        .unwrap();
        drop(d);
        let d = Desk::new(config, store).unwrap();
        let row = d.retry_outbox(ack.id, false).unwrap();
        assert_eq!(row.status, OutboxStatus::Queued);
        assert!(row.unrendered.is_none());
        assert_eq!(row.text, "Thanks. Your ticket is JP-1000.\n");
        assert!(row.subject.contains("[JP-1000]"), "{}", row.subject);
    }

    /// The staff breaker: generous, but when it trips it says so, naming recipient and kind, once an hour,
    /// even when every mail is ingested by another process (a one-shot `postdesk ingest`).
    #[test]
    fn staff_breaker_trips_with_an_error_naming_recipient_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_with(dir.path(), "staff_per_hour = 3", "");
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let telemetry = Arc::new(Telemetry::new());
        let mut log = String::new();
        let mut at = t0();
        for i in 0..14 {
            // A fresh desk per mail, as the MTA pipe has.
            let d = Desk::with_telemetry(config.clone(), store.clone(), telemetry.clone()).unwrap();
            let raw = mail(
                &format!("c{i}@example.net"),
                "Question",
                &format!("q{i}@x"),
                "",
                "A question.",
            );
            // The first seven within an hour, the rest in the next.
            at = if i == 7 {
                t0() + Duration::minutes(61)
            } else {
                at + Duration::minutes(1)
            };
            log.push_str(&logged(|| ingest_at(&d, &raw, at)).1);
        }
        let d = Desk::with_telemetry(config, store, telemetry.clone()).unwrap();
        assert_eq!(
            rows(&d, Event::Ack).len(),
            14,
            "customer mail is not held back"
        );
        assert_eq!(rows(&d, Event::AgentNotify).len(), 6, "3 an hour");
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 2, "once per window:\n{log}");
        for e in &errors {
            assert!(
                e.contains("staff breaker")
                    && e.contains("jp-agents@example.com")
                    && e.contains("agent_notify"),
                "{e}"
            );
        }
        assert_eq!(
            metric(
                &d,
                &telemetry,
                "postdesk_staff_mail_held_back_total{region=\"JP\"}"
            ),
            Some(8.0)
        );
    }

    #[test]
    fn a_staff_breaker_of_zero_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = TestConfig::new(dir.path())
            .outbound("staff_per_hour = 0")
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("outbound.staff_per_hour"), "{err}");
        assert_eq!(
            config_with(dir.path(), "", "").outbound.staff_per_hour,
            2000
        );
    }

    /// Held-back customer mail said "a loop with an auto-responder is likely", naming neither recipient nor
    /// kind.
    #[test]
    fn held_back_customer_mail_names_recipient_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let d = desk_with(
            dir.path(),
            "[outbound.rate_limit]\nper_10min = 1\nper_day = 1",
            "",
        );
        ingest_at(
            &d,
            &mail("robot@example.net", "One", "r1@x", "", "one"),
            t0(),
        );
        let (_, log) = logged(|| {
            ingest_at(
                &d,
                &mail("robot@example.net", "Two", "r2@x", "", "two"),
                t0() + Duration::minutes(1),
            )
        });
        assert_eq!(rows(&d, Event::Ack).len(), 1);
        assert!(
            log.contains("WARN") && log.contains("robot@example.net") && log.contains("(ack)"),
            "{log}"
        );
    }
}
