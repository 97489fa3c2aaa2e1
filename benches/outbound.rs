//! Outbound benchmark against the project's real mail stack (`cargo bench --bench outbound`): N queued
//! acknowledgements (default 10,000) delivered by postdesk's outbox worker to Postfix, against a raw lettre
//! client sending the very same bytes over the same number of connections, alternating, median of 3.
//!
//! Needs root and the servers of `scripts/install-test-deps.sh`. `POSTDESK_BENCH_N` changes the count.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use postdesk::config::Config;
use postdesk::desk::decide::Delivery;
use postdesk::intake::{Desk, Incoming};
use postdesk::outbound::transport::{build_message, Transport};
use postdesk::outbound::worker::{send_due, RetryPolicy};
use postdesk::store::{Storage, Store};

const CONNECTIONS: usize = 8;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("POSTDESK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // `POSTDESK_BENCH_STACK=DIR`: a stack `scripts/bench.sh` started (and stops); else a private one.
    let shared = std::env::var_os("POSTDESK_BENCH_STACK").map(std::path::PathBuf::from);
    let stack = support::start(
        &shared
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(support::unique("postdesk-ms-outbench"))),
    );
    let customer = stack.user("customer");
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"smtp\"\nconcurrency = {CONNECTIONS}\n[outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n[outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
        stack.smtp_port,
        d = dir.path().display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).expect("config");
    let store = Arc::new(Store::open(&config.storage.path).expect("store"));
    let desk = Desk::new(config.clone(), store.clone()).expect("desk");
    // Queue N acknowledgements the real way: N customer mails, each a new ticket.
    let mails: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            support::mail(
                &customer,
                "support-jp@example.com",
                &format!("注文 {i} について"),
                &format!("ob{i}@example.net"),
                "注文した商品がまだ届きません。",
            )
        })
        .collect();
    for chunk in mails.chunks(500) {
        let items = chunk
            .iter()
            .map(|raw| Incoming {
                raw,
                source: "bench".into(),
                delivery: Delivery::normal(),
                state: None,
            })
            .collect();
        desk.ingest_batch(&config.region[0], items, chrono::Utc::now())
            .expect("ingest");
    }
    store.flush().expect("flush");
    let rows = store.outbox_all().expect("outbox");
    assert_eq!(rows.len(), n, "one acknowledgement per mail");
    let raw_mails: Vec<(Envelope, Vec<u8>)> = rows
        .iter()
        .map(|r| {
            let m = build_message(r).expect("message");
            (m.envelope().clone(), m.formatted())
        })
        .collect();
    let bytes: usize = raw_mails.iter().map(|m| m.1.len()).sum();
    let transport = Transport::from_config(&config.outbound).expect("transport");
    let policy = RetryPolicy::default();
    let raw_client = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(stack.smtp_port)
        .build();

    let (mut ours, mut raw) = (vec![], vec![]);
    for rep in 0..3 {
        if rep > 0 {
            for r in &rows {
                store.outbox_retry(r.id).expect("requeue");
            }
        }
        let start = Instant::now();
        while send_due(&store, &transport, &policy, CONNECTIONS)
            .await
            .expect("send")
            > 0
        {}
        ours.push(start.elapsed().as_secs_f64());
        let sent = store
            .outbox_all()
            .expect("outbox")
            .iter()
            .filter(|r| r.status == postdesk::outbound::OutboxStatus::Sent)
            .count();
        assert_eq!(sent, n, "every mail sent");

        let start = Instant::now();
        let mut sends = futures_util::stream::iter(&raw_mails)
            .map(|(env, bytes)| raw_client.send_raw(env, bytes))
            .buffer_unordered(CONNECTIONS);
        while let Some(r) = sends.next().await {
            r.expect("raw send");
        }
        raw.push(start.elapsed().as_secs_f64());
        eprintln!(
            "rep {rep}: postdesk {:.2}s, raw client {:.2}s",
            ours[rep], raw[rep]
        );
        // Let Postfix drain what it accepted before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if shared.is_none() {
        let _ = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack.sh"),
        )
        .arg("down")
        .arg(&stack.dir)
        .status();
    }
    let (o, r) = (median(ours), median(raw));
    println!("### Outbound SMTP ({n} acknowledgements, {:.0} MB, {CONNECTIONS} connections, median of 3)\n", bytes as f64 / 1e6);
    println!("| sender | time | messages/s |\n| --- | --- | --- |");
    println!("| postdesk outbox worker (read row, build MIME, send, mark sent, flush) | {o:.2} s | {:.0} |", n as f64 / o);
    println!(
        "| raw lettre client, same bytes | {r:.2} s | {:.0} |",
        n as f64 / r
    );
    println!("\nRatio postdesk / raw: {:.2} (target ≤ 1.5)", o / r);
    println!("RESULT outbound_n={n} mails");
    println!("RESULT outbound_postdesk={o:.2} s");
    println!("RESULT outbound_raw={r:.2} s");
    println!("RESULT outbound_rate={:.0} mails/s", n as f64 / o);
    println!("RESULT outbound_ratio={:.2} x", o / r);
}
