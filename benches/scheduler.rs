//! Scheduler tick cost against the number of tickets in the store (`cargo bench --bench scheduler`): with
//! 10,000 and with 1,000,000 tickets stored (each with a timer a month away) and 100 timers due now, the
//! time of one tick that fires those 100 (read the due entries, re-check each ticket, queue its reminder,
//! rewrite its timers). The cost must follow what is due, not what is stored.
//!
//! No servers needed. `POSTDESK_BENCH_BIG` changes the large count (default 1,000,000).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use postdesk::config::Config;
use postdesk::desk::ticket::{Locale, Priority, Status, Ticket, TicketId};
use postdesk::intake::Desk;
use postdesk::store::{Change, Store};

fn ticket(
    n: u64,
    waiting_since: chrono::DateTime<Utc>,
    timers: &postdesk::config::TimersConfig,
) -> Ticket {
    let mut t = Ticket {
        id: TicketId::new("JP", n),
        region: "JP".into(),
        status: Status::Pending,
        priority: Priority::Normal,
        category: "other".into(),
        subject: format!("question {n}"),
        requester: format!("c{n}@example.net"),
        requester_name: String::new(),
        participants: vec![],
        locale: Locale::Ja,
        created_at: waiting_since,
        updated_at: waiting_since,
        message_count: 0,
        last_customer_message_id: None,
        thread_ids: vec![],
        links: vec![],
        assignee: None,
        merged_into: None,
        status_since: Some(waiting_since),
        first_response_at: Some(waiting_since),
        reminders_sent: 0,
        sla_warned: false,
        breached: false,
        survey_sent: false,
        satisfaction: None,
        timers: vec![],
        erased: false,
        attachments_purged: false,
    };
    t.timers = postdesk::desk::timers::schedule(&t, timers);
    t
}

/// A store with `total` pending tickets, the last 100 of which have a reminder due now; returns the time of
/// one tick and how many timers it fired.
fn measure(total: u64) -> (f64, usize, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n[timers]\ncustomer_reminder_after = \"30d\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
        d = dir.path().display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).expect("config");
    let store = Arc::new(Store::open(&config.storage.path).expect("store"));
    let desk = Desk::new(config.clone(), store.clone()).expect("desk");
    let now = Utc::now();
    let fill = Instant::now();
    let mut changes = Vec::with_capacity(10_000);
    for n in 0..total {
        // The last 100 started waiting 31 days ago: their reminder is due.
        let since = if n >= total - 100 {
            now - Duration::days(31)
        } else {
            now
        };
        changes.push(Change {
            ticket: Some(ticket(1000 + n, since, &config.timers)),
            ..Change::default()
        });
        if changes.len() == 10_000 {
            store.commit_all(&changes).expect("fill");
            changes.clear();
        }
    }
    store.commit_all(&changes).expect("fill");
    store.flush().expect("flush");
    let fill_secs = fill.elapsed().as_secs_f64();
    let start = Instant::now();
    let fired = postdesk::schedule::tick(&desk).expect("tick");
    let took = start.elapsed().as_secs_f64();
    assert_eq!(fired, 100, "exactly the due timers");
    assert_eq!(
        store.outbox_all().expect("outbox").len(),
        100,
        "one reminder each"
    );
    (took, fired, fill_secs)
}

fn main() {
    let big: u64 = std::env::var("POSTDESK_BENCH_BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut small_runs = Vec::new();
    for _ in 0..3 {
        small_runs.push(measure(10_000));
    }
    small_runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (small, _, small_fill) = small_runs[1];
    let (large, fired, large_fill) = measure(big);
    println!("### Scheduler tick ({fired} timers due)\n");
    println!("| tickets in the store | one tick | store filled in |\n| --- | --- | --- |");
    println!(
        "| 10,000 (median of 3) | {:.1} ms | {small_fill:.1} s |",
        small * 1e3
    );
    println!("| {big} | {:.1} ms | {large_fill:.1} s |", large * 1e3);
    println!("\nRatio {:.2} (target < 2)", large / small);
}
