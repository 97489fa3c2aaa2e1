//! The daemon as an admin runs it (`cargo bench --bench daemon`): the headline intake figure of BENCHMARKS.md.
//!
//! The real `postdesk run` binary, started as a process with a config file, takes N mails (default 10,000:
//! the corpus of `imap_corpus.rs`, 2 KB of ja/ko/en text, one in ten with a 50 KB attachment) already in a
//! Dovecot mailbox, over plain IMAP with IDLE on, with an `agent_notify` address, so every mail makes a
//! ticket, an acknowledgement and an agents' notification. Outbound goes through (a) the file transport and
//! (b) SMTP into the project's Postfix (which delivers into Dovecot). Measured from the process's start:
//! - until its own `postdesk_mails_ingested_total` reaches N (the intake commits a batch, flushes it, then
//!   flags the mails at the server: the counter moves at commit, the flush follows within the batch);
//! - until its `postdesk_outbox_sent_total` reaches 2N (every acknowledgement and notification sent);
//! - its peak RSS (`VmHWM` of the process), read before it is stopped;
//!
//! and, in the same run, a raw `UID FETCH 1:* BODY.PEEK[]` of the same mailbox by the same IMAP library.
//! Three repetitions per transport, alternating; median and range.
//!
//! Needs root and the servers of `scripts/install-test-deps.sh`. `POSTDESK_BENCH_N` (10,000),
//! `POSTDESK_BENCH_REPS` (3) and `POSTDESK_BENCH_TRANSPORTS` (`file,smtp`) change what runs.
//! `POSTDESK_BENCH_STACK=DIR` reuses a stack `scripts/bench.sh` started; `POSTDESK_BENCH_BIN=PATH` runs
//! another build of postdesk (e.g. an older commit's) through the same harness.

#[path = "imap_corpus.rs"]
mod imap_corpus;
#[path = "common/imap_mailbox.rs"]
mod imap_mailbox;
#[path = "../tests/support/mod.rs"]
mod support;

use imap_mailbox::{env_usize, raw_fetch, seed};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use postdesk::config::{ImapIntake, TlsMode};
use postdesk::intake::imap::connect;

/// Clear `\Seen` on every mail, so that the next run finds the mailbox as the first did.
async fn unsee_all(cfg: &ImapIntake) {
    let mut s = connect(cfg).await.expect("connect");
    s.select("INBOX").await.expect("select");
    {
        let mut stream = s
            .store("1:*", "-FLAGS.SILENT (\\Seen)")
            .await
            .expect("store");
        while stream.next().await.is_some() {}
    }
    let _ = s.logout().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// One scrape of the daemon's `/metrics`: (mails ingested, outbox sent), or `None` while it is not up.
fn scrape(port: u16) -> Option<(u64, u64)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let value = |prefix: &str| -> u64 {
        body.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    };
    Some((
        value("postdesk_mails_ingested_total{"),
        value("postdesk_outbox_sent_total"),
    ))
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// What one run of the daemon measured.
struct Run {
    intake: f64,
    sent: f64,
    peak_mib: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Outbound {
    File,
    Smtp,
}

fn start_daemon(
    stack: &support::Stack,
    user: &str,
    agents: &str,
    outbound: Outbound,
    http_port: u16,
) -> Daemon {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("pw"), format!("{}\n", support::password(user))).expect("pw");
    let outbound_toml = match outbound {
        Outbound::File => format!("transport = \"file\"\nfile_dir = \"{}/out\"\n", d.display()),
        Outbound::Smtp => "transport = \"smtp\"\n".to_string(),
    };
    let smtp_toml = match outbound {
        Outbound::File => String::new(),
        Outbound::Smtp => format!(
            "[outbound.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            stack.smtp_port
        ),
    };
    // `POSTDESK_BENCH_CONCURRENCY`: `[outbound] concurrency` (unset: the default).
    let concurrency = std::env::var("POSTDESK_BENCH_CONCURRENCY")
        .map(|c| format!("concurrency = {c}\n"))
        .unwrap_or_default();
    // A busy desk's settings: the per-customer and per-staff-address breakers well above one burst.
    let config = format!(
        "[storage]\npath = \"{d}/data\"\n\
         [outbound]\n{outbound_toml}{concurrency}staff_per_hour = 10000000\n\
         [outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n\
         {smtp_toml}\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\
         [[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"{user}\"\nagent_notify = \"{agents}\"\n\
         [region.intake]\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {port}\ntls = \"none\"\n\
         username = \"{user}\"\npassword_file = \"{d}/pw\"\nafter = \"seen\"\nidle = true\n\
         ack_max_age = \"87600h\"\n",
        d = d.display(),
        port = stack.imap_port,
    );
    let path = d.join("config.toml");
    std::fs::write(&path, config).expect("config");
    let log = std::fs::File::create(d.join("daemon.log")).expect("log");
    // `POSTDESK_BENCH_BIN`: another build of postdesk (an older commit's, for a before/after in one hour).
    let bin = std::env::var_os("POSTDESK_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_postdesk")));
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start postdesk run");
    Daemon { child, dir }
}

fn run_daemon(
    stack: &support::Stack,
    user: &str,
    agents: &str,
    n: usize,
    outbound: Outbound,
) -> Run {
    let port = free_port();
    let start = Instant::now();
    let mut daemon = start_daemon(stack, user, agents, outbound, port);
    let pid = daemon.child.id();
    let deadline = start + Duration::from_secs(600);
    let (mut intake, mut sent) = (None, None);
    let mut peak = 0;
    while sent.is_none() {
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("postdesk run exited ({status}):\n{}", daemon.log_tail());
        }
        assert!(
            Instant::now() < deadline,
            "not done in 600 s (ingested/sent so far: {:?}):\n{}",
            scrape(port),
            daemon.log_tail()
        );
        peak = peak.max(status_kib(pid, "VmHWM:"));
        if let Some((ingested, out)) = scrape(port) {
            if intake.is_none() && ingested >= n as u64 {
                intake = Some(start.elapsed().as_secs_f64());
            }
            if out >= 2 * n as u64 {
                sent = Some(start.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    peak = peak.max(status_kib(pid, "VmHWM:"));
    if outbound == Outbound::File {
        let files = std::fs::read_dir(daemon.dir.path().join("out"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(
            files,
            2 * n,
            "one acknowledgement and one notification per mail"
        );
    }
    drop(daemon);
    Run {
        intake: intake.unwrap_or(f64::NAN),
        sent: sent.unwrap_or(f64::NAN),
        peak_mib: peak as f64 / 1024.0,
    }
}

/// Wait until the stack's Postfix has delivered everything it accepted (so the next run starts quiet).
fn wait_postfix_empty(stack: &support::Stack) {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(stack.dir.join("postfix"))
            .arg("-j")
            .output()
            .expect("postqueue");
        if out.stdout.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Postfix's queue not empty after 900 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = env_usize("POSTDESK_BENCH_N", 10_000);
    let reps = env_usize("POSTDESK_BENCH_REPS", 3);
    let transports: Vec<Outbound> = std::env::var("POSTDESK_BENCH_TRANSPORTS")
        .unwrap_or_else(|_| "file,smtp".into())
        .split(',')
        .map(|t| match t.trim() {
            "file" => Outbound::File,
            "smtp" => Outbound::Smtp,
            other => panic!("POSTDESK_BENCH_TRANSPORTS: unknown transport {other:?} (file, smtp)"),
        })
        .collect();
    let shared = std::env::var_os("POSTDESK_BENCH_STACK").map(PathBuf::from);
    let stack = support::start(
        &shared
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(support::unique("postdesk-ms-daemon"))),
    );
    let user = stack.user("desk");
    let customer = stack.user("customer");
    let agents = stack.user("agents");
    let (local, domain) = customer.split_once('@').expect("customer address");
    let (local, domain) = (local.to_string(), domain.to_string());
    let corpus_bytes = seed(
        &stack,
        &user,
        imap_corpus::corpus_iter_from(n, &user, move |i| format!("{local}+{i}@{domain}")),
    );
    let pw = tempfile::tempdir().expect("tempdir");
    let imap = stack.intake(&user, TlsMode::None, &pw.path().join("pw"));
    let (_, count, _) = raw_fetch(&imap).await; // warm Dovecot's index and the page cache
    assert_eq!(count, n, "the mailbox holds the corpus");

    let mut rows: Vec<(Outbound, Vec<f64>, Vec<Run>)> =
        transports.iter().map(|&t| (t, vec![], vec![])).collect();
    for rep in 0..reps {
        for (outbound, raws, runs) in rows.iter_mut() {
            unsee_all(&imap).await;
            let (raw, _, _) = raw_fetch(&imap).await;
            let run = run_daemon(&stack, &user, &agents, n, *outbound);
            eprintln!(
                "rep {rep} {}: raw fetch {:.2} s, intake {:.2} s, all sent {:.2} s, peak RSS {:.0} MiB",
                if *outbound == Outbound::File { "file" } else { "smtp" },
                raw.as_secs_f64(),
                run.intake,
                run.sent,
                run.peak_mib
            );
            raws.push(raw.as_secs_f64());
            runs.push(run);
            if *outbound == Outbound::Smtp {
                wait_postfix_empty(&stack);
            }
        }
    }
    if shared.is_none() {
        stack.down();
    }

    println!(
        "### The daemon as run: `postdesk run`, {n} mails ({:.0} MB) in a Dovecot mailbox, IDLE, agents notified ({reps} runs: median [min–max])\n",
        corpus_bytes as f64 / 1e6
    );
    println!("| outbound | raw fetch | to {n} tickets | mails/s | ratio to raw | all {} mails sent | sent / intake | peak RSS |", 2 * n);
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (outbound, raws, runs) in &rows {
        let name = if *outbound == Outbound::File {
            "file"
        } else {
            "smtp"
        };
        let ratios: Vec<f64> = runs
            .iter()
            .zip(raws)
            .map(|(r, raw)| r.intake / raw)
            .collect();
        let (raw, raw_lo, raw_hi) = stats(raws);
        let (t, t_lo, t_hi) = stats(&runs.iter().map(|r| r.intake).collect::<Vec<_>>());
        let (s, s_lo, s_hi) = stats(&runs.iter().map(|r| r.sent).collect::<Vec<_>>());
        let (ratio, ratio_lo, ratio_hi) = stats(&ratios);
        let (peak, peak_lo, peak_hi) = stats(&runs.iter().map(|r| r.peak_mib).collect::<Vec<_>>());
        println!(
            "| {name} | {raw:.2} s [{raw_lo:.2}–{raw_hi:.2}] | {t:.2} s [{t_lo:.2}–{t_hi:.2}] | {:.0} | {ratio:.1}× [{ratio_lo:.1}–{ratio_hi:.1}] | {s:.2} s [{s_lo:.2}–{s_hi:.2}] | {:.2} | {peak:.0} MiB [{peak_lo:.0}–{peak_hi:.0}] |",
            n as f64 / t,
            s / t,
        );
        println!("RESULT daemon_{name}_raw_fetch={raw:.3} s");
        println!("RESULT daemon_{name}_intake={t:.3} s");
        println!("RESULT daemon_{name}_rate={:.0} mails/s", n as f64 / t);
        println!("RESULT daemon_{name}_ratio={ratio:.2} x");
        println!("RESULT daemon_{name}_all_sent={s:.3} s");
        println!("RESULT daemon_{name}_peak_rss={peak:.0} MiB");
    }
    println!("RESULT daemon_n={n} mails");
}
