//! Where the time of one ingest goes, without any server (`cargo bench --bench ingest_core`): parsing alone,
//! and parse + decide + render + commit into a fresh store, over the IMAP benchmark's corpus.

#[path = "imap_corpus.rs"]
mod imap_corpus;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use postdesk::config::Config;
use postdesk::desk::decide::Delivery;
use postdesk::desk::ticket::Locale;
use postdesk::intake::Desk;
use postdesk::store::Store;

fn main() {
    let n: usize = std::env::var("POSTDESK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mails = imap_corpus::corpus(n, "support-jp@example.com");
    let start = Instant::now();
    for m in &mails {
        postdesk::mail::parse(m, Locale::Ja).expect("parse");
    }
    let parse = start.elapsed();
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
        d = dir.path().display()
    );
    let config = Config::from_toml(&text, Path::new("bench.toml")).expect("config");
    let store = Arc::new(Store::open(&config.storage.path).expect("store"));
    let desk = Desk::new(config.clone(), store).expect("desk");
    let region = &config.region[0];
    let start = Instant::now();
    for (i, m) in mails.iter().enumerate() {
        desk.ingest(
            region,
            m,
            "bench",
            &Delivery::normal(),
            true,
            chrono::Utc::now(),
        )
        .expect("ingest")
        .expect("mail");
        if i % 500 == 499 {
            desk.store.flush().expect("flush");
        }
    }
    desk.store.flush().expect("flush");
    let ingest = start.elapsed();
    // The same without acknowledgements (no rendering, no outbox rows), into a fresh store.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let store2 = Arc::new(Store::open(dir2.path()).expect("store"));
    let desk2 = Desk::new(config.clone(), store2).expect("desk");
    let quiet = Delivery {
        may_acknowledge: false,
        ..Delivery::default()
    };
    let start = Instant::now();
    for (i, m) in mails.iter().enumerate() {
        desk2
            .ingest(region, m, "bench", &quiet, true, chrono::Utc::now())
            .expect("ingest")
            .expect("mail");
        if i % 500 == 499 {
            desk2.store.flush().expect("flush");
        }
    }
    desk2.store.flush().expect("flush");
    let no_ack = start.elapsed();
    // Batches of 500, as the IMAP intake commits them, into a fresh store.
    let dir3 = tempfile::tempdir().expect("tempdir");
    let desk3 = Desk::new(
        config.clone(),
        Arc::new(Store::open(dir3.path()).expect("store")),
    )
    .expect("desk");
    let start = Instant::now();
    for chunk in mails.chunks(500) {
        let items = chunk
            .iter()
            .map(|raw| postdesk::intake::Incoming {
                raw,
                source: "bench".into(),
                delivery: Delivery::normal(),
                state: None,
            })
            .collect();
        desk3
            .ingest_batch(region, items, chrono::Utc::now())
            .expect("batch");
        desk3.store.flush().expect("flush");
    }
    let batched = start.elapsed();
    println!(
        "batches of 500 (one transaction and one flush each): {:.1} µs/mail ({:.0}/s)",
        batched.as_secs_f64() * 1e6 / n as f64,
        n as f64 / batched.as_secs_f64()
    );
    println!(
        "without acknowledgements: {:.1} µs/mail",
        no_ack.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "{n} mails: parse only {:.1} µs/mail ({:.0}/s); full ingest incl. flush every 500 {:.1} µs/mail ({:.0}/s)",
        parse.as_secs_f64() * 1e6 / n as f64,
        n as f64 / parse.as_secs_f64(),
        ingest.as_secs_f64() * 1e6 / n as f64,
        n as f64 / ingest.as_secs_f64()
    );
    println!(
        "RESULT core_parse={:.1} us/mail",
        parse.as_secs_f64() * 1e6 / n as f64
    );
    println!(
        "RESULT core_batched={:.1} us/mail",
        batched.as_secs_f64() * 1e6 / n as f64
    );
}
