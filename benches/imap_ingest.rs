//! IMAP intake benchmark against the project's real mail stack (`cargo bench --bench imap_ingest`).
//!
//! 1. Throughput: N messages (default 10,000: 2 KB text in Japanese ISO-2022-JP, Korean EUC-KR and English
//!    UTF-8, 10 % with a 50 KB attachment) already in a Dovecot mailbox → time until all are durable
//!    tickets, against a raw `UID FETCH 1:* BODY.PEEK[]` of the same mailbox by the same IMAP library doing
//!    nothing else, plain and TLS, median of 3 alternating runs; peak RSS of the postdesk runs.
//! 2. Latency with IDLE: SMTP acceptance → ticket stored, p50/p99 over M mails (default 200).
//!
//! Needs root and the servers of `scripts/install-test-deps.sh`. `POSTDESK_BENCH_N` and
//! `POSTDESK_BENCH_LATENCY_N` change the counts. Prints a Markdown section for BENCHMARKS.md.

#[path = "imap_corpus.rs"]
mod imap_corpus;
#[path = "common/imap_mailbox.rs"]
mod imap_mailbox;
#[path = "../tests/support/mod.rs"]
mod support;

use imap_mailbox::{env_usize, raw_fetch, seed};

use imap_corpus::corpus_iter;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postdesk::config::{Config, ImapIntake, TlsMode};
use postdesk::intake::imap::{connect, Caps, MailboxIntake};
use postdesk::intake::Desk;
use postdesk::store::{Storage, Store};
use tokio_util::sync::CancellationToken;

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e
                .metadata()
                .map(|m| (m.is_dir(), m.len()))
                .unwrap_or((false, 0));
            total += if m.0 { dir_size(&e.path()) } else { m.1 };
        }
    }
    total
}

fn config_for(dir: &Path, address: &str) -> Config {
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"{address}\"\n",
        d = dir.display()
    );
    Config::from_toml(&text, Path::new("bench.toml")).expect("config")
}

/// postdesk's intake from a fresh store: time until every mail is a durable ticket.
async fn postdesk_ingest(cfg: &ImapIntake, address: &str) -> (Duration, usize, u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_for(dir.path(), address);
    let store = Arc::new(Store::open(&config.storage.path).expect("store"));
    let desk = Arc::new(Desk::new(config.clone(), store).expect("desk"));
    let intake = MailboxIntake {
        desk: desk.clone(),
        region: config.region[0].clone(),
        cfg: cfg.clone(),
        mailbox: "INBOX".into(),
    };
    reset_peak_rss();
    let start = Instant::now();
    let mut session = connect(cfg).await.expect("connect");
    let mailbox = session.select("INBOX").await.expect("select");
    let taken = intake
        .sweep(
            &mut session,
            Caps {
                idle: true,
                mv: true,
                uidplus: true,
            },
            mailbox.uid_validity.unwrap_or(0),
            &CancellationToken::new(),
        )
        .await
        .expect("sweep");
    let took = start.elapsed(); // the sweep flushed before acknowledging: everything is durable here
    let peak = vm_hwm_kib();
    let _ = session.logout().await;
    let tickets = desk.store.tickets(None, None).expect("tickets").len();
    assert_eq!(tickets, taken, "every mail one ticket");
    drop(intake);
    drop(desk);
    let disk = dir_size(&dir.path().join("data"));
    (took, tickets, peak, disk)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n = env_usize("POSTDESK_BENCH_N", 10_000);
    let latency_n = env_usize("POSTDESK_BENCH_LATENCY_N", 200);
    // `POSTDESK_BENCH_STACK=DIR`: a stack `scripts/bench.sh` started (and stops); else a private one.
    let shared = std::env::var_os("POSTDESK_BENCH_STACK").map(std::path::PathBuf::from);
    let stack = support::start(
        &shared
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(support::unique("postdesk-ms-bench"))),
    );
    let user = stack.user("bench");
    // Streamed to disk, so that the postdesk runs' peak RSS is theirs, not the corpus's.
    let corpus_bytes = seed(&stack, &user, corpus_iter(n, &user));
    let pw_dir = tempfile::tempdir().expect("tempdir");
    let plain = stack.intake(&user, TlsMode::None, &pw_dir.path().join("pw"));
    let tls = stack.intake(&user, TlsMode::Implicit, &pw_dir.path().join("pw"));
    // Warm Dovecot's index and the page cache once.
    let (_, count, _) = raw_fetch(&plain).await;
    assert_eq!(count, n, "mailbox holds the corpus");

    let (mut raw_plain, mut raw_tls, mut pd_plain, mut pd_tls, mut peaks, mut disks) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for rep in 0..3 {
        let (t, _, _) = raw_fetch(&plain).await;
        raw_plain.push(t.as_secs_f64());
        let (t, tickets, peak, disk) = postdesk_ingest(&plain, &user).await;
        pd_plain.push(t.as_secs_f64());
        peaks.push(peak);
        disks.push(disk / tickets.max(1) as u64);
        let (t, _, _) = raw_fetch(&tls).await;
        raw_tls.push(t.as_secs_f64());
        let (t, _, peak, _) = postdesk_ingest(&tls, &user).await;
        pd_tls.push(t.as_secs_f64());
        peaks.push(peak);
        eprintln!("rep {rep}: raw plain {:.2}s, postdesk plain {:.2}s, raw TLS {:.2}s, postdesk TLS {:.2}s", raw_plain[rep], pd_plain[rep], raw_tls[rep], pd_tls[rep]);
    }

    // Latency with IDLE: SMTP acceptance → stored ticket.
    let lat_user = stack.user("latency");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"{lat_user}\"\n[region.intake]\n",
        d = dir.path().display()
    );
    let lat_cfg = stack.intake(&lat_user, TlsMode::None, &dir.path().join("pw"));
    text.push_str(&format!(
        "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"{lat_user}\"\npassword_file = \"{}\"\npoll_interval = \"60s\"\n",
        stack.imap_port,
        dir.path().join("pw").display()
    ));
    drop(lat_cfg);
    let config = Config::from_toml(&text, Path::new("latency.toml")).expect("config");
    let shutdown = CancellationToken::new();
    let daemon = postdesk::daemon::Daemon::start(config, shutdown.clone()).expect("daemon");
    let store = daemon.desk.store.clone();
    let warm = support::mail(
        "warm@example.net",
        &lat_user,
        "warm",
        "warm@example.net",
        "warm up",
    );
    stack.smtp_send("warm@example.net", &lat_user, &warm).await;
    while store.tickets(None, None).expect("tickets").is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut latencies = Vec::with_capacity(latency_n);
    for i in 0..latency_n {
        let raw = support::mail(
            &format!("l{i}@example.net"),
            &lat_user,
            &format!("latency {i}"),
            &format!("lat{i}@example.net"),
            "how fast?",
        );
        stack
            .smtp_send(&format!("l{i}@example.net"), &lat_user, &raw)
            .await;
        let accepted = Instant::now();
        let want = i + 2;
        while store.tickets(None, None).expect("tickets").len() < want {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        latencies.push(accepted.elapsed().as_secs_f64() * 1000.0);
    }
    shutdown.cancel();
    let _ = daemon.wait().await;
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    if shared.is_none() {
        let _ = std::process::Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mailstack.sh"),
        )
        .arg("down")
        .arg(&stack.dir)
        .status();
    }

    let (rp, rt, pp, pt) = (
        median(raw_plain),
        median(raw_tls),
        median(pd_plain),
        median(pd_tls),
    );
    let peak_mib = *peaks.iter().max().unwrap_or(&0) as f64 / 1024.0;
    let disk = disks.iter().copied().max().unwrap_or(0);
    println!(
        "### IMAP intake ({n} messages, {:.0} MB, median of 3)\n",
        corpus_bytes as f64 / 1e6
    );
    println!("| path | raw fetch | postdesk → durable tickets | messages/s | ratio to raw |");
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| plain IMAP | {rp:.2} s | {pp:.2} s | {:.0} | {:.2} |",
        n as f64 / pp,
        pp / rp
    );
    println!(
        "| IMAPS (TLS) | {rt:.2} s | {pt:.2} s | {:.0} | {:.2} |",
        n as f64 / pt,
        pt / rt
    );
    println!("\nPeak RSS during the postdesk runs: {peak_mib:.0} MiB. Store on disk: {disk} bytes per ticket (raw mail, attachments, ticket, message, indexes, queued acknowledgement).\n");
    println!("### Latency with IDLE: SMTP acceptance → stored ticket ({latency_n} mails)\n");
    println!(
        "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    println!("RESULT imap_n={n} mails");
    println!("RESULT imap_raw_plain={rp:.3} s");
    println!("RESULT imap_postdesk_plain={pp:.3} s");
    println!("RESULT imap_rate_plain={:.0} mails/s", n as f64 / pp);
    println!("RESULT imap_ratio_plain={:.2} x", pp / rp);
    println!("RESULT imap_raw_tls={rt:.3} s");
    println!("RESULT imap_postdesk_tls={pt:.3} s");
    println!("RESULT imap_rate_tls={:.0} mails/s", n as f64 / pt);
    println!("RESULT imap_ratio_tls={:.2} x", pt / rt);
    println!("RESULT imap_peak_rss={peak_mib:.0} MiB");
    println!("RESULT imap_disk_per_ticket={disk} bytes");
    println!("RESULT idle_stored_p50={:.0} ms", pct(0.5));
    println!("RESULT idle_stored_p99={:.0} ms", pct(0.99));
}
