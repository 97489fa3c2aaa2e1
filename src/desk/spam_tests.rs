//! Spam through the pure decision: stored aside, never answered, never notified; `#spam` and its release.

use chrono::Utc;

use super::decide::{decide, Decision, Delivery, Known, Plan, ReplyEvent};
use super::retention;
use super::ticket::{Locale, Status, Ticket, TimerKind};
use crate::config::testing::{TestConfig, TestRegion};
use crate::config::Config;
use crate::mail::parse::parse;
use std::path::Path;

fn config() -> Config {
    TestConfig::new(Path::new("/tmp/x"))
        .region(
            TestRegion::jp()
                .agents(&["agent@example.com"])
                .agent_notify("jp-agents@example.com"),
        )
        .parse()
}

const ACK: &Delivery = &Delivery {
    may_acknowledge: true,
    damage: None,
    oversize: None,
};

fn run(c: &Config, raw: &str, known: &Known) -> Plan {
    let m = parse(raw.as_bytes(), Locale::Ja).unwrap();
    let Decision::Store(plan) = decide(&m, &c.region[0], c, known, ACK, Utc::now()) else {
        panic!("stored")
    };
    *plan
}

const SA_SPAM: &str =
    "X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=1000.0 required=5.0 tests=GTUBE\r\n";

#[test]
fn spam_is_stored_aside_unanswered_and_unnotified() {
    let c = config();
    let plan = run(
        &c,
        &format!("{SA_SPAM}From: forged@example.net\r\nSubject: win\r\nMessage-ID: <s@x>\r\n\r\nbuy now\r\n"),
        &Known::default(),
    );
    assert!(plan.is_new);
    assert_eq!(plan.ticket.status, Status::Spam);
    assert_eq!(plan.message.auto.as_deref(), Some("spam"));
    assert!(plan.replies.is_empty(), "{:?}", plan.replies);
    // Retention deletes it after `[spam] keep` (30 days by default), and no SLA timer runs for it.
    assert!(plan
        .ticket
        .timers
        .iter()
        .all(|t| t.kind == TimerKind::PurgeTicket));
    assert_eq!(plan.ticket.timers.len(), 1);

    // Not honoured when `[spam] enabled = false`: an ordinary ticket, acknowledged and notified.
    let mut off = config();
    off.spam.enabled = false;
    let plan = run(
        &off,
        &format!("{SA_SPAM}From: a@example.net\r\nSubject: hi\r\n\r\nhello\r\n"),
        &Known::default(),
    );
    assert_eq!(plan.ticket.status, Status::New);
    assert_eq!(plan.replies.len(), 2);
}

fn existing(c: &Config, status: Status) -> Ticket {
    let mut t = run(
        c,
        "From: a@example.com\r\nSubject: x\r\nMessage-ID: <0@a>\r\n\r\nbody text\r\n",
        &Known::default(),
    )
    .ticket;
    t.id.number = 1000;
    t.status = status;
    t
}

fn tagged(t: &Ticket) -> Known {
    Known {
        tagged: vec![t.clone()],
        ..Known::default()
    }
}

#[test]
fn an_agent_marks_spam_and_releases_it_without_a_word_to_the_sender() {
    let c = config();
    let t = existing(&c, Status::New);
    let plan = run(
        &c,
        "From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#spam\r\n\r\nthis is junk\r\n",
        &tagged(&t),
    );
    assert_eq!(plan.ticket.status, Status::Spam);
    assert!(plan.replies.is_empty(), "{:?}", plan.replies);

    // A further mail from the sender is kept on the spam ticket, and nobody is told.
    let spam = plan.ticket;
    let plan = run(
        &c,
        "From: a@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <2@a>\r\n\r\nagain\r\n",
        &tagged(&spam),
    );
    assert_eq!(plan.ticket.status, Status::Spam);
    assert!(plan.replies.is_empty(), "{:?}", plan.replies);

    // An answer to a spam ticket is not relayed while it is spam.
    let plan = run(
        &c,
        "From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\nhello there\r\n",
        &tagged(&spam),
    );
    assert!(plan.replies.is_empty(), "{:?}", plan.replies);

    // `#status open` releases it: no "status changed" mail about a spam verdict the sender never saw.
    let plan = run(
        &c,
        "From: agent@example.com\r\nSubject: Re: [JP-1000] x\r\n\r\n#status open\r\n",
        &tagged(&spam),
    );
    assert_eq!(plan.ticket.status, Status::Open);
    assert!(plan.replies.is_empty(), "{:?}", plan.replies);
    assert!(!retention::schedule(&plan.ticket, &c.retention)
        .iter()
        .any(|t| t.kind == TimerKind::PurgeTicket));
    // From then on the customer's replies are notified again.
    let open = plan.ticket;
    let plan = run(
        &c,
        "From: a@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <3@a>\r\n\r\nthanks\r\n",
        &tagged(&open),
    );
    assert_eq!(
        plan.replies.iter().map(|r| r.event()).collect::<Vec<_>>(),
        vec![ReplyEvent::AgentNotify]
    );
}

#[test]
fn set_status_spam_from_the_cli_tells_the_customer_nothing() {
    let c = config();
    let t = existing(&c, Status::Open);
    let (t, replies) = super::decide::set_status(&t, Status::Spam, &c, Utc::now()).unwrap();
    assert_eq!(t.status, Status::Spam);
    assert!(replies.is_empty());
    let (t, replies) = super::decide::set_status(&t, Status::Open, &c, Utc::now()).unwrap();
    assert_eq!(t.status, Status::Open);
    assert!(replies.is_empty());
}
