//! Scheduler tick cost against the number of tickets in the store (`cargo bench --bench scheduler`): with
//! 10,000 and with 1,000,000 tickets stored (each with a timer a month away) and 100 timers due, the time
//! of one tick that fires those 100 (read the due entries, re-check each ticket, queue its reminder,
//! rewrite its timers, commit), as wall time and as the thread's CPU time (steady when other work shares
//! the machine). The cost must follow what is due, not what is stored.
//!
//! No servers needed. `POSTDESK_BENCH_BIG` changes the large count (default 1,000,000).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use postdesk::config::Config;
use postdesk::desk::ticket::{Locale, Priority, Status, Ticket, TicketId};
use postdesk::intake::Desk;
use postdesk::store::{Change, Storage, StorageExt, Store};

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

/// Due groups: each tick of the measurement fires one group of 100 reminders.
const GROUPS: i64 = 5;
const DUE_PER_GROUP: u64 = 100;

/// CPU time of the calling thread (user + system), in seconds: what the tick itself cost, whatever else
/// the machine is doing at the same time.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

struct Run {
    /// Median wall time of one tick, seconds.
    wall: f64,
    /// Median CPU time of one tick, seconds.
    cpu: f64,
    fill: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A store with `total` pending tickets; `GROUPS` groups of 100 have a reminder due at successive hours,
/// the rest a month away. The store is filled, flushed and reopened (as a daemon finds it at a later tick),
/// then each of `GROUPS` ticks fires one group; returns the median tick.
fn measure(total: u64) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n[timers]\ncustomer_reminder_after = \"30d\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
        d = dir.path().display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).expect("config");
    let base = Utc::now();
    let due_total = DUE_PER_GROUP * GROUPS as u64;
    let fill = Instant::now();
    {
        let store = Store::open(&config.storage.path).expect("store");
        let mut changes = Vec::with_capacity(10_000);
        for n in 0..total {
            // Spread the due tickets over the whole id range, as they would be in a real store.
            let stride = total / due_total;
            let since = if n % stride == 0 && n / stride < due_total {
                let group = (n / stride) as i64 % GROUPS;
                // Due at base + group hours.
                base - Duration::days(30) + Duration::hours(group)
            } else {
                base
            };
            changes.push(Change {
                ticket: Some(ticket(1000 + n, since, &config.timers)),
                ..Change::default()
            });
            if changes.len() == 10_000 {
                store.write(|tx| tx.commit_all(&changes)).expect("fill");
                changes.clear();
            }
        }
        store.write(|tx| tx.commit_all(&changes)).expect("fill");
        store.flush().expect("flush");
    }
    let fill = fill.elapsed().as_secs_f64();
    let store = Arc::new(Store::open(&config.storage.path).expect("reopen"));
    let desk = Desk::new(config.clone(), store.clone()).expect("desk");
    let (mut walls, mut cpus) = (Vec::new(), Vec::new());
    for group in 0..GROUPS {
        let now = base + Duration::hours(group) + Duration::minutes(1);
        let (w, c) = (Instant::now(), thread_cpu());
        let fired = postdesk::schedule::tick_at(&desk, now).expect("tick");
        cpus.push(thread_cpu() - c);
        walls.push(w.elapsed().as_secs_f64());
        assert_eq!(fired, DUE_PER_GROUP as usize, "exactly the due timers");
        store.flush().expect("flush");
    }
    assert_eq!(
        store.outbox_all().expect("outbox").len() as u64,
        due_total,
        "one reminder each"
    );
    Run {
        wall: median(walls),
        cpu: median(cpus),
        fill,
    }
}

fn main() {
    let big: u64 = std::env::var("POSTDESK_BENCH_BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let small = measure(10_000);
    let large = measure(big);
    println!("### Scheduler tick ({DUE_PER_GROUP} timers due; median of {GROUPS} ticks)\n");
    println!("| tickets in the store | one tick, wall | one tick, CPU | store filled in |\n| --- | --- | --- | --- |");
    for (n, r) in [(10_000, &small), (big, &large)] {
        println!(
            "| {n} | {:.1} ms | {:.1} ms | {:.1} s |",
            r.wall * 1e3,
            r.cpu * 1e3,
            r.fill
        );
    }
    println!(
        "\nRatio wall {:.2}, CPU {:.2} (target < 2)",
        large.wall / small.wall,
        large.cpu / small.cpu
    );
    // For scripts/bench.sh.
    println!("RESULT scheduler_tick_small={:.2} ms", small.wall * 1e3);
    println!("RESULT scheduler_tick_large={:.2} ms", large.wall * 1e3);
    println!("RESULT scheduler_cpu_small={:.2} ms", small.cpu * 1e3);
    println!("RESULT scheduler_cpu_large={:.2} ms", large.cpu * 1e3);
    println!("RESULT scheduler_count_small=10000 tickets");
    println!("RESULT scheduler_count_large={big} tickets");
}
