//! Cost of `postdesk ingest` — delivery by an MTA's pipe, one process per mail (`cargo bench --bench pipe`).
//!
//! N mails (default 1,000) of the IMAP benchmark's corpus, into a fresh store each run, median of 3:
//! 1. one `postdesk ingest --region JP` process per mail, no daemon running: each process reads the config,
//!    opens the store, compiles the templates, ingests, flushes and exits (what Postfix's `pipe` does when
//!    postdesk runs without a daemon);
//! 2. the same with the daemon running: each process forwards the mail over the control socket and the
//!    daemon stores it (the usual set-up);
//! 3. in-process: what one pipe delivery does once the process is up — `pipe::deliver` (ingest, flush) on an
//!    open desk.
//!
//! No mail servers: the config has no intake and writes acknowledgements to files. With
//! `POSTDESK_BENCH_CORPUS_DIR=DIR` the N mails are also written there as `NNNN.eml`, for the Roundup
//! comparison of `scripts/bench.sh` (and with `POSTDESK_BENCH_CORPUS_ONLY=1` nothing else is done).
//! Prints `RESULT name=value unit` lines.

#[path = "imap_corpus.rs"]
mod imap_corpus;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use postdesk::config::Config;
use postdesk::intake::{pipe, Desk};
use postdesk::store::{Storage, Store};
use tokio_util::sync::CancellationToken;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A config without any intake (the MTA delivers), acknowledgements written to files.
fn write_config(dir: &Path) -> (std::path::PathBuf, Config) {
    let text = format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\n",
        d = dir.display()
    );
    let path = dir.join("postdesk.toml");
    std::fs::write(&path, &text).expect("config file");
    let config = Config::from_toml(&text, &path).expect("config");
    (path, config)
}

/// One `postdesk ingest` process per mail; seconds for all of them.
fn spawn_each(config_path: &Path, mails: &[Vec<u8>]) -> f64 {
    let bin = env!("CARGO_BIN_EXE_postdesk");
    let start = Instant::now();
    for (i, m) in mails.iter().enumerate() {
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(config_path)
            .args(["ingest", "--region", "JP"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn postdesk");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(m)
            .expect("write mail");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "mail {i}: postdesk ingest exited {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    start.elapsed().as_secs_f64()
}

fn tickets_in(config: &Config) -> usize {
    Store::open(&config.storage.path)
        .expect("store")
        .tickets(None, None)
        .expect("tickets")
        .len()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::var("POSTDESK_BENCH_PIPE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let mails = imap_corpus::corpus(n, "support-jp@example.com");
    if let Some(dir) = std::env::var_os("POSTDESK_BENCH_CORPUS_DIR") {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).expect("corpus dir");
        for (i, m) in mails.iter().enumerate() {
            std::fs::write(dir.join(format!("{i:04}.eml")), m).expect("write corpus");
        }
        if std::env::var_os("POSTDESK_BENCH_CORPUS_ONLY").is_some() {
            return;
        }
    }
    let (mut alone, mut forwarded, mut inproc) = (vec![], vec![], vec![]);
    for rep in 0..3 {
        // 1. No daemon: every process opens the store itself.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, config) = write_config(dir.path());
        alone.push(spawn_each(&path, &mails));
        assert_eq!(tickets_in(&config), n, "every mail one ticket");

        // 2. The daemon holds the store; each process forwards over the control socket.
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, config) = write_config(dir.path());
        let shutdown = CancellationToken::new();
        let daemon =
            postdesk::daemon::Daemon::start(config.clone(), shutdown.clone()).expect("daemon");
        let socket = postdesk::control::socket_path(&config);
        let wait = Instant::now();
        while !socket.exists() {
            assert!(
                wait.elapsed().as_secs() < 30,
                "control socket never appeared"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let store = daemon.desk.store.clone();
        let p = path.clone();
        let m = mails.clone();
        forwarded.push(
            tokio::task::spawn_blocking(move || spawn_each(&p, &m))
                .await
                .expect("spawn task"),
        );
        assert_eq!(store.tickets(None, None).expect("tickets").len(), n);
        drop(store);
        shutdown.cancel();
        let _ = daemon.wait().await;

        // 3. In-process: the pipe's work once the process is up.
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, config) = write_config(dir.path());
        let store = Arc::new(Store::open(&config.storage.path).expect("store"));
        let desk = Desk::new(config.clone(), store).expect("desk");
        let start = Instant::now();
        for m in &mails {
            let (code, line) = pipe::deliver(&desk, "JP", m, None).await;
            assert_eq!(code, pipe::EX_OK, "{line}");
        }
        inproc.push(start.elapsed().as_secs_f64());
        assert_eq!(desk.store.tickets(None, None).expect("tickets").len(), n);
        eprintln!(
            "rep {rep}: process per mail {:.1} s, forwarded to the daemon {:.1} s, in-process {:.2} s",
            alone[rep], forwarded[rep], inproc[rep]
        );
    }
    let (a, f, i) = (median(alone), median(forwarded), median(inproc));
    let ms = |s: f64| s * 1e3 / n as f64;
    println!("### `postdesk ingest` (MTA pipe), {n} mails, median of 3\n");
    println!("| path | per mail | mails/s |\n| --- | --- | --- |");
    println!(
        "| one process per mail, no daemon (opens the store each time) | {:.2} ms | {:.0} |",
        ms(a),
        n as f64 / a
    );
    println!(
        "| one process per mail, forwarded to the running daemon | {:.2} ms | {:.0} |",
        ms(f),
        n as f64 / f
    );
    println!(
        "| in-process `pipe::deliver` (ingest + flush) | {:.3} ms | {:.0} |",
        ms(i),
        n as f64 / i
    );
    println!("RESULT pipe_n={n} mails");
    println!("RESULT pipe_process_ms={:.3} ms/mail", ms(a));
    println!("RESULT pipe_process_rate={:.1} mails/s", n as f64 / a);
    println!("RESULT pipe_forward_ms={:.3} ms/mail", ms(f));
    println!("RESULT pipe_forward_rate={:.1} mails/s", n as f64 / f);
    println!("RESULT pipe_inprocess_ms={:.3} ms/mail", ms(i));
    println!("RESULT pipe_inprocess_rate={:.1} mails/s", n as f64 / i);
}
