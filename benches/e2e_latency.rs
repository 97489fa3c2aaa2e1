//! End-to-end latency against the project's real mail stack (`cargo bench --bench e2e_latency`): a customer's
//! mail accepted by Postfix (the SMTP transaction returned) → postdesk's acknowledgement delivered into the
//! customer's own mailbox, one mail at a time, M mails (default 500), p50/p90/p99/max.
//!
//! The daemon runs as in production: IMAP intake with IDLE on the support mailbox, the outbox worker sending
//! through Postfix, which delivers through Dovecot's LMTP into the customer's Maildir. Arrival is seen by
//! watching that Maildir's files (polled every 2 ms), so the measurement adds no IMAP session of its own.
//! The time the ticket became durable in the store is recorded too, to split the total in two.
//!
//! Needs root and the servers of `scripts/install-test-deps.sh`. `POSTDESK_BENCH_E2E_N` changes the count;
//! `POSTDESK_BENCH_STACK=DIR` uses a stack already started by `scripts/mailstack.sh up DIR`.
//! Prints a Markdown section and `RESULT name=value unit` lines (collected by `scripts/bench.sh`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use postdesk::config::{Config, TlsMode};
use postdesk::store::Storage;
use tokio_util::sync::CancellationToken;

/// Files delivered into `user`'s Maildir (new and cur).
fn delivered(stack: &support::Stack, user: &str) -> usize {
    let base = stack.dir.join("mail").join(user).join("Maildir");
    ["new", "cur"]
        .iter()
        .map(|d| std::fs::read_dir(base.join(d)).map_or(0, |rd| rd.count()))
        .sum()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("POSTDESK_BENCH_E2E_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let shared = std::env::var_os("POSTDESK_BENCH_STACK").map(PathBuf::from);
    let stack_dir = shared
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(support::unique("postdesk-ms-e2e")));
    let stack = support::start(&stack_dir);
    let desk_user = stack.user("e2e-desk");
    let customer = stack.user("e2e-customer");
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    drop(stack.intake(&desk_user, TlsMode::None, &pw)); // writes the password file
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"smtp\"\n[outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n[outbound.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\ntls = \"none\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"{desk_user}\"\n[region.intake]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap}\ntls = \"none\"\nusername = \"{desk_user}\"\npassword_file = \"{pw}\"\npoll_interval = \"60s\"\n",
        d = dir.path().display(),
        smtp = stack.smtp_port,
        imap = stack.imap_port,
        pw = pw.display()
    );
    let config = Config::from_toml(&text, Path::new("e2e.toml")).expect("config");
    let shutdown = CancellationToken::new();
    let daemon = postdesk::daemon::Daemon::start(config, shutdown.clone()).expect("daemon");
    let store = daemon.desk.store.clone();

    // One mail through the whole path first: IDLE is running and every connection is open.
    let warm = support::mail(
        &customer,
        &desk_user,
        "warm",
        "e2e-warm@example.net",
        "warm up",
    );
    stack.smtp_send(&customer, &desk_user, &warm).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while delivered(&stack, &customer) < 1 {
        assert!(
            Instant::now() < deadline,
            "no acknowledgement of the warm-up mail within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (mut total, mut stored) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let raw = support::mail(
            &customer,
            &desk_user,
            &format!("注文 {i} について"),
            &format!("e2e{i}@example.net"),
            "注文した商品がまだ届きません。確認していただけますか。",
        );
        stack.smtp_send(&customer, &desk_user, &raw).await;
        let accepted = Instant::now();
        let deadline = accepted + Duration::from_secs(30);
        let mut stored_at = None;
        while delivered(&stack, &customer) < i + 2 {
            if stored_at.is_none() && store.tickets(None, None).expect("tickets").len() >= i + 2 {
                stored_at = Some(accepted.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "mail {i}: no acknowledgement within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = accepted.elapsed();
        total.push(took.as_secs_f64() * 1e3);
        stored.push(stored_at.unwrap_or(took).as_secs_f64() * 1e3);
        if i % 100 == 99 {
            eprintln!("{} mails, last {:.0} ms", i + 1, total[i]);
        }
    }
    // The outbox's own share: queued (in the ticket's transaction) → accepted by Postfix.
    let mut sending: Vec<f64> = store
        .outbox_all()
        .expect("outbox")
        .iter()
        .filter_map(|r| Some((r.sent_at? - r.created_at).num_microseconds()? as f64 / 1e3))
        .collect();
    sending.sort_by(|a, b| a.total_cmp(b));
    shutdown.cancel();
    let _ = daemon.wait().await;
    if shared.is_none() {
        let _ = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack.sh"),
        )
        .arg("down")
        .arg(&stack.dir)
        .status();
    }
    total.sort_by(|a, b| a.total_cmp(b));
    stored.sort_by(|a, b| a.total_cmp(b));
    println!("### End-to-end latency: SMTP accepted → acknowledgement in the customer's mailbox ({n} mails, IDLE)\n");
    println!("| stage | p50 | p90 | p99 | max |\n| --- | --- | --- | --- | --- |");
    for (name, v) in [
        ("ticket durable in the store", &stored),
        ("acknowledgement queued → accepted by Postfix", &sending),
        ("acknowledgement delivered", &total),
    ] {
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99),
            v[v.len() - 1]
        );
    }
    println!("RESULT e2e_n={n} mails");
    println!("RESULT e2e_stored_p50={:.1} ms", pct(&stored, 0.5));
    println!("RESULT e2e_stored_p99={:.1} ms", pct(&stored, 0.99));
    println!("RESULT e2e_ack_p50={:.1} ms", pct(&total, 0.5));
    println!("RESULT e2e_ack_p90={:.1} ms", pct(&total, 0.9));
    println!("RESULT e2e_ack_p99={:.1} ms", pct(&total, 0.99));
    println!("RESULT e2e_ack_max={:.1} ms", total[total.len() - 1]);
    println!("RESULT e2e_send_p50={:.1} ms", pct(&sending, 0.5));
    println!("RESULT e2e_send_p99={:.1} ms", pct(&sending, 0.99));
    println!("RESULT e2e_send_max={:.1} ms", sending[sending.len() - 1]);
}
