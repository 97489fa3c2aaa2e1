//! Tests of the application service: a real sled store in a temporary directory, the file transport, no
//! servers. Regression tests are named after what broke.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::*;
use crate::config::Config;
use crate::desk::decide::Delivery;
use crate::desk::ticket::{Status, TicketId, TimerKind};
use crate::store::Store;
use crate::telemetry::Telemetry;

mod batch {
    use super::*;

    fn desk(dir: &std::path::Path) -> Desk {
        let text = format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
            d = dir.display()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t")).unwrap();
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
        let text = format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\nagents = [\"agent@example.com\"]\n",
            d = dir.path().display()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t")).unwrap();
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

mod telemetry {
    use super::*;

    fn count(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn desk_counts_ingests_parse_failures_quarantine_and_sla_breaches() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\naddress = \"support-jp@example.com\"\n",
            d = dir.path().display()
        );
        let config = Config::from_toml(&text, std::path::Path::new("t")).unwrap();
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
