//! Hostile-cost benchmark (`cargo bench --bench hostile`): what one mail an attacker shapes costs the desk,
//! against a benign mail of the same size (issue 13).
//!
//! A corpus of hostile mails is generated, each kind at two sizes (about 250 KB and 2.5 MB), plus a benign
//! mail of each size (plain text of ordinary lines, CRLF):
//! - `quote_storm`: a first line, then `> q` lines, then new text at the end;
//! - `bracket_subject`: a subject of `[` only; `prefix_subject`: a subject of `Re: Re: …`;
//! - `long_references`: one unfolded `References:` line of Message-IDs;
//! - `long_subject`: one unfolded subject of ordinary words;
//! - `html_blockquote`: an HTML-only mail of nested `<blockquote>`s;
//! - `many_parts`: a multipart/mixed of tiny text parts and tiny attachments;
//! - `lf_text`: the benign text with LF-only line endings (headers too);
//! - `base64_attachment`: a short text and one base64 attachment of the size;
//! - `nested_rfc822`: message/rfc822 parts nested as deep as the size allows.
//!
//! For each mail, median of 3 (each repetition a fresh sled store in a tempdir, file transport, `agent_notify`
//! set so the agents' notification embeds the customer's text):
//! - ingest: `service::Desk::ingest` (parse → decide → render → commit) and a flush, as `postdesk ingest`;
//! - send: the outbox worker's `send_due` of what that ingest queued, through the file transport (the
//!   worker's real path: build the MIME message, lettre's formatting, the file, the outcome recorded).
//!
//! Every measurement runs in a child process (this binary again) under a time budget (default 60 s,
//! `POSTDESK_BENCH_HOSTILE_BUDGET=SECONDS`): a step that exceeds it is killed and reported as `> 60 s`
//! instead of hanging the bench; the next repetitions of that mail are skipped. A child that crashes is
//! reported as such. Then the headline: the built binary, `postdesk ingest --region JP < mail.eml`, once per
//! large mail.
//!
//! Targets (issue 13): every ratio to the benign mail of the same size ≤ 3, and the growth from the small to
//! the large size ≤ about 10 (linear: the size grows 10×; up to 15× is counted as met). The summary at the
//! end lists every missed target; `RESULT hostile_worst_ratio` and `hostile_worst_growth` are the worst
//! measured (a step killed at the budget counts with the budget, a lower bound).
//!
//! Environment: `POSTDESK_BENCH_HOSTILE_BUDGET` (seconds per step, 60), `POSTDESK_BENCH_HOSTILE_SIZES`
//! (`250000,2500000`), `POSTDESK_BENCH_HOSTILE_ONLY` (comma-separated kinds), `POSTDESK_BENCH_HOSTILE_REPS`
//! (3), `POSTDESK_BENCH_HOSTILE_SAVE=DIR` (write the corpus there as `KIND-SIZE.eml`, for the fuzzer's
//! seeds; with `POSTDESK_BENCH_HOSTILE_CORPUS_ONLY=1` nothing else is done). Prints a Markdown table and `RESULT name=value unit` lines (scripts/bench.sh).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postdesk::config::Config;
use postdesk::desk::decide::Delivery;
use postdesk::outbound::transport::Transport;
use postdesk::outbound::worker::{send_due, RetryPolicy};
use postdesk::outbound::OutboxStatus;
use postdesk::service::Desk;
use postdesk::store::{Storage, Store};

/// The kinds of mail, benign first.
const KINDS: &[&str] = &[
    "benign",
    "quote_storm",
    "bracket_subject",
    "prefix_subject",
    "long_references",
    "long_subject",
    "html_blockquote",
    "many_parts",
    "lf_text",
    "base64_attachment",
    "nested_rfc822",
];

const CHILD_ENV: &str = "POSTDESK_HOSTILE_CHILD";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------------------
// The corpus

fn headers(subject: &str, id: &str, eol: &str) -> String {
    format!(
        "From: Customer <customer@example.net>{eol}To: support-jp@example.com{eol}Subject: {subject}{eol}Message-ID: <{id}@example.net>{eol}Date: Sat, 21 Nov 2026 10:00:00 +0900{eol}MIME-Version: 1.0{eol}"
    )
}

/// Ordinary lines of text until `size` bytes are written, each ending in `eol`.
fn ordinary_lines(out: &mut String, size: usize, eol: &str) {
    let mut i = 0u64;
    while out.len() < size {
        out.push_str(&format!(
            "This is an ordinary line of a customer's mail about order {i}, nothing special in it.{eol}"
        ));
        i += 1;
    }
}

/// A small deterministic generator (xorshift), for the attachment's bytes.
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() * 4 / 3 + data.len() / 57 * 2 + 4);
    for line in data.chunks(57) {
        for c in line.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            out.push(A[(n >> 18) as usize & 63] as char);
            out.push(A[(n >> 12) as usize & 63] as char);
            out.push(if c.len() > 1 {
                A[(n >> 6) as usize & 63] as char
            } else {
                '='
            });
            out.push(if c.len() > 2 {
                A[n as usize & 63] as char
            } else {
                '='
            });
        }
        out.push_str("\r\n");
    }
    out
}

/// One mail of `kind`, about `size` bytes.
fn generate(kind: &str, size: usize) -> Vec<u8> {
    let id = format!("{kind}-{size}");
    let crlf = "\r\n";
    let mut m;
    match kind {
        "benign" => {
            m = headers("Question about my order", &id, crlf);
            m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
            ordinary_lines(&mut m, size, crlf);
        }
        "lf_text" => {
            m = headers("Question about my order", &id, "\n");
            m.push_str("Content-Type: text/plain; charset=utf-8\n\n");
            ordinary_lines(&mut m, size, "\n");
        }
        "quote_storm" => {
            m = headers("Re: my order", &id, crlf);
            m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\nOn Friday you wrote:\r\n");
            while m.len() < size {
                m.push_str("> q\r\n");
            }
            m.push_str("new text at the end\r\n");
        }
        "bracket_subject" | "prefix_subject" | "long_subject" => {
            let unit = match kind {
                "bracket_subject" => "[",
                "prefix_subject" => "Re: ",
                _ => "ordinary words ",
            };
            let subject = unit.repeat(size / unit.len());
            m = headers(&subject, &id, crlf);
            m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\nWhere is my order?\r\n");
        }
        "long_references" => {
            let mut refs = String::new();
            let mut i = 0;
            while refs.len() < size {
                refs.push_str(&format!("<ref{i}@example.net> "));
                i += 1;
            }
            m = headers("Re: my order", &id, crlf);
            m.push_str(&format!("References: {refs}\r\n"));
            m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\nWhere is my order?\r\n");
        }
        "html_blockquote" => {
            m = headers("Re: my order", &id, crlf);
            m.push_str("Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>new text</p>");
            let depth = size.saturating_sub(m.len()) / "<blockquote>q</blockquote>".len();
            m.push_str(&"<blockquote>q".repeat(depth));
            m.push_str(&"</blockquote>".repeat(depth));
            m.push_str("</body></html>\r\n");
        }
        "many_parts" => {
            m = headers("My order, with files", &id, crlf);
            m.push_str("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
            let mut i = 0;
            while m.len() < size {
                if i % 2 == 0 {
                    m.push_str(&format!(
                        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart {i}\r\n"
                    ));
                } else {
                    m.push_str(&format!("--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"f{i}.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n"));
                }
                i += 1;
            }
            m.push_str("--b--\r\n");
        }
        "base64_attachment" => {
            m = headers("My order, with a file", &id, crlf);
            m.push_str("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe file is attached.\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
            m.push_str(&base64(&noise(size.saturating_sub(m.len()) * 3 / 4)));
            m.push_str("--b--\r\n");
        }
        "nested_rfc822" => {
            m = headers("Fwd: my order", &id, crlf);
            let level = "Content-Type: message/rfc822\r\n\r\nFrom: someone@example.org\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n";
            let depth = size.saturating_sub(m.len()) / level.len();
            m.push_str(&level.repeat(depth));
            m.push_str("Content-Type: text/plain\r\n\r\nthe innermost text\r\n");
        }
        other => panic!("unknown kind {other}"),
    }
    m.into_bytes()
}

// ---------------------------------------------------------------------------------------------------------
// The child: one ingest and one send, timed

fn config_text(dir: &Path) -> String {
    format!(
        "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[outbound.rate_limit]\nper_10min = 1000000\nper_day = 1000000\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\nagent_notify = \"jp-agents@example.com\"\n",
        d = dir.display()
    )
}

/// In the child: ingest `kind`/`size` into a fresh store under `dir`, print `INGEST ms`, send what it
/// queued, print `SEND ms rows`.
fn child(spec: &str, dir: &Path) {
    let (kind, size) = spec.split_once(':').expect("KIND:SIZE");
    let raw = generate(kind, size.parse().expect("size"));
    let text = config_text(dir);
    let config = Config::from_toml(&text, &dir.join("postdesk.toml")).expect("config");
    let store = Arc::new(Store::open(&config.storage.path).expect("store"));
    let desk = Desk::new(config.clone(), store.clone()).expect("desk");
    let transport = Transport::from_config(&config.outbound).expect("transport");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut out = std::io::stdout();

    let began = Instant::now();
    let outcome = desk
        .ingest(
            &config.region[0],
            &raw,
            "bench",
            &Delivery::normal(),
            true,
            chrono::Utc::now(),
        )
        .expect("ingest");
    store.flush().expect("flush");
    let ingest = began.elapsed();
    writeln!(out, "INGEST {:.3} {outcome:?}", ingest.as_secs_f64() * 1e3).expect("stdout");
    out.flush().expect("stdout");

    let began = Instant::now();
    let attempted = rt
        .block_on(send_due(&store, &transport, &RetryPolicy::default(), 1))
        .expect("send");
    let send = began.elapsed();
    let rows = store.outbox_all().expect("outbox");
    let sent = rows
        .iter()
        .filter(|r| r.status == OutboxStatus::Sent)
        .count();
    writeln!(
        out,
        "SEND {:.3} {attempted} attempted, {sent} sent",
        send.as_secs_f64() * 1e3
    )
    .expect("stdout");
    out.flush().expect("stdout");
}

// ---------------------------------------------------------------------------------------------------------
// The parent: children under a budget, the table

/// What one step measured.
#[derive(Clone, Debug)]
enum Cost {
    Ms(f64),
    /// Killed at the budget.
    Over(f64),
    /// The child died (signal, panic) before reporting this step.
    Crashed(String),
    /// Not reached (an earlier step failed).
    NotRun,
}

impl Cost {
    fn show(&self) -> String {
        match self {
            Cost::Ms(ms) if *ms >= 10_000.0 => format!("{:.1} s", ms / 1e3),
            Cost::Ms(ms) => format!("{ms:.1} ms"),
            Cost::Over(s) => format!("> {s:.0} s"),
            Cost::Crashed(why) => format!("crashed ({why})"),
            Cost::NotRun => "—".into(),
        }
    }
    /// The figure for a RESULT line (a lower bound for a step killed at the budget).
    fn result(&self) -> String {
        match self {
            Cost::Ms(ms) => format!("{ms:.2}"),
            Cost::Over(s) => format!(">{:.0}", s * 1e3),
            Cost::Crashed(_) => "crashed".into(),
            Cost::NotRun => "not_run".into(),
        }
    }
    fn ms(&self) -> Option<f64> {
        match self {
            Cost::Ms(ms) => Some(*ms),
            Cost::Over(s) => Some(s * 1e3),
            _ => None,
        }
    }
    fn is_bound(&self) -> bool {
        matches!(self, Cost::Over(_))
    }
}

fn kill(mut child: Child) -> String {
    let _ = child.kill();
    match child.wait() {
        Ok(s) => format!("{s}"),
        Err(e) => format!("{e}"),
    }
}

/// One repetition of `kind`/`size` in a child; (ingest, send, detail).
fn run_child(kind: &str, size: usize, budget: Duration) -> (Cost, Cost, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .env(CHILD_ENV, format!("{kind}:{size}"))
        .env("POSTDESK_HOSTILE_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // A file, not a pipe: a pipe nobody reads would block a child that writes much.
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut detail = String::new();
    let mut step = |tag: &str, child: &mut Option<Child>| -> Cost {
        let deadline = Instant::now() + budget;
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(tag) {
                        let mut words = rest.split_whitespace();
                        let ms: f64 = words
                            .next()
                            .and_then(|w| w.parse().ok())
                            .unwrap_or(f64::NAN);
                        detail = words.collect::<Vec<_>>().join(" ");
                        return Cost::Ms(ms);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(c) = child.take() {
                        kill(c);
                    }
                    return Cost::Over(budget.as_secs_f64());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let why = match child.take() {
                        Some(mut c) => {
                            let err = std::fs::read_to_string(dir.path().join("stderr"))
                                .unwrap_or_default();
                            let status = c.wait().map(|s| s.to_string()).unwrap_or_default();
                            let last = err.lines().rev().find(|l| !l.trim().is_empty());
                            format!(
                                "{status}{}",
                                last.map(|l| format!(": {l}")).unwrap_or_default()
                            )
                        }
                        None => "gone".into(),
                    };
                    return Cost::Crashed(why);
                }
            }
        }
    };
    let mut handle = Some(child);
    let ingest = step("INGEST ", &mut handle);
    let send = if matches!(ingest, Cost::Ms(_)) {
        step("SEND ", &mut handle)
    } else {
        Cost::NotRun
    };
    if let Some(c) = handle.take() {
        // Done (or it is past what we wait for): never leave it running.
        if !matches!(send, Cost::Ms(_)) {
            kill(c);
        } else {
            let mut c = c;
            let _ = c.wait();
        }
    }
    (ingest, send, detail)
}

/// Median of the measured repetitions; a budget hit or a crash in any repetition wins.
fn summarise(costs: &[Cost]) -> Cost {
    if let Some(bad) = costs.iter().find(|c| !matches!(c, Cost::Ms(_))) {
        return bad.clone();
    }
    let mut v: Vec<f64> = costs.iter().filter_map(Cost::ms).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    Cost::Ms(v[v.len() / 2])
}

struct Measured {
    kind: String,
    size: usize,
    bytes: usize,
    ingest: Cost,
    send: Cost,
    detail: String,
}

fn measure(kind: &str, size: usize, reps: usize, budget: Duration) -> Measured {
    let bytes = generate(kind, size).len();
    let (mut ingests, mut sends, mut detail) = (vec![], vec![], String::new());
    for _ in 0..reps {
        let (i, s, d) = run_child(kind, size, budget);
        let stop = !matches!(i, Cost::Ms(_)) || !matches!(s, Cost::Ms(_));
        ingests.push(i);
        sends.push(s);
        if !d.is_empty() {
            detail = d;
        }
        if stop {
            break; // a killed or crashed step: the next repetitions would only repeat it
        }
    }
    let m = Measured {
        kind: kind.into(),
        size,
        bytes,
        ingest: summarise(&ingests),
        send: summarise(&sends),
        detail,
    };
    eprintln!(
        "hostile: {kind} {bytes} bytes: ingest {}, send {} ({})",
        m.ingest.show(),
        m.send.show(),
        m.detail
    );
    m
}

/// `a / b` as shown in the table: a lower bound (`>`) when `a` was killed at the budget.
fn ratio(a: &Cost, b: &Cost) -> (String, Option<f64>) {
    match (a.ms(), b.ms()) {
        (Some(x), Some(y)) if y > 0.0 && !b.is_bound() => {
            let r = x / y;
            let s = if a.is_bound() {
                format!("> {r:.1}")
            } else {
                format!("{r:.2}")
            };
            (s, Some(r))
        }
        _ => ("—".into(), None),
    }
}

fn size_label(size: usize) -> String {
    if size >= 1_000_000 {
        format!("{:.1} MB", size as f64 / 1e6)
    } else {
        format!("{:.0} KB", size as f64 / 1e3)
    }
}

/// The built binary, `postdesk ingest --region JP < mail`, once, under the budget: (cost, exit line).
fn binary_ingest(raw: &[u8], budget: Duration) -> (Cost, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("postdesk.toml");
    std::fs::write(&path, config_text(dir.path())).expect("config");
    let mail = dir.path().join("mail.eml");
    std::fs::write(&mail, raw).expect("mail");
    let bin = env!("CARGO_BIN_EXE_postdesk");
    let began = Instant::now();
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&path)
        .args(["ingest", "--region", "JP"])
        .stdin(std::fs::File::open(&mail).expect("open mail"))
        .stdout(std::fs::File::create(dir.path().join("stdout")).expect("stdout file"))
        .stderr(std::fs::File::create(dir.path().join("stderr")).expect("stderr file"))
        .spawn()
        .expect("spawn postdesk");
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let ms = began.elapsed().as_secs_f64() * 1e3;
                let said = |f: &str| {
                    let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
                    text.lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .map(str::to_string)
                };
                let line = said("stdout")
                    .or_else(|| said("stderr"))
                    .unwrap_or_default();
                return if status.success() {
                    (Cost::Ms(ms), line)
                } else {
                    (Cost::Crashed(format!("{status}")), line)
                };
            }
            Ok(None) if began.elapsed() >= budget => {
                kill(child);
                return (Cost::Over(budget.as_secs_f64()), String::new());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return (Cost::Crashed(e.to_string()), String::new()),
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let dir = PathBuf::from(std::env::var_os("POSTDESK_HOSTILE_DIR").expect("child dir"));
        child(&spec, &dir);
        return;
    }
    let budget = Duration::from_secs_f64(env_or("POSTDESK_BENCH_HOSTILE_BUDGET", 60.0));
    let reps = env_or("POSTDESK_BENCH_HOSTILE_REPS", 3usize).max(1);
    let sizes: Vec<usize> = std::env::var("POSTDESK_BENCH_HOSTILE_SIZES")
        .unwrap_or_else(|_| "250000,2500000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let only: Option<Vec<String>> = std::env::var("POSTDESK_BENCH_HOSTILE_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| *k == "benign" || only.as_ref().is_none_or(|o| o.iter().any(|x| x == k)))
        .collect();
    if let Some(dir) = std::env::var_os("POSTDESK_BENCH_HOSTILE_SAVE") {
        let dir = Path::new(&dir);
        std::fs::create_dir_all(dir).expect("save dir");
        for kind in &kinds {
            for &size in &sizes {
                std::fs::write(dir.join(format!("{kind}-{size}.eml")), generate(kind, size))
                    .expect("save mail");
            }
        }
        eprintln!("hostile: corpus written to {}", dir.display());
        if std::env::var_os("POSTDESK_BENCH_HOSTILE_CORPUS_ONLY").is_some() {
            return;
        }
    }
    eprintln!(
        "hostile: {} kinds × {} sizes, {reps} repetitions, {} s budget per step",
        kinds.len(),
        sizes.len(),
        budget.as_secs_f64()
    );

    let mut all: Vec<Measured> = Vec::new();
    for kind in &kinds {
        for &size in &sizes {
            all.push(measure(kind, size, reps, budget));
        }
    }
    let find = |kind: &str, size: usize| all.iter().find(|m| m.kind == kind && m.size == size);

    println!();
    println!(
        "| mail | size | ingest | send | ingest ÷ benign | send ÷ benign | ingest growth | send growth |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (mut worst_ratio, mut worst_growth) = (0.0f64, 0.0f64);
    let mut failures: Vec<String> = Vec::new();
    for m in &all {
        let benign = find("benign", m.size).expect("benign of every size");
        let (ri, rin) = ratio(&m.ingest, &benign.ingest);
        let (rs, rsn) = ratio(&m.send, &benign.send);
        let small = sizes.first().copied().unwrap_or(m.size);
        let (gi, gs, gin, gsn) = if m.size != small {
            let s = find(&m.kind, small).expect("small of every kind");
            let (gi, gin) = ratio(&m.ingest, &s.ingest);
            let (gs, gsn) = ratio(&m.send, &s.send);
            (gi, gs, gin, gsn)
        } else {
            ("".into(), "".into(), None, None)
        };
        println!(
            "| {} | {} | {} | {} | {ri} | {rs} | {gi} | {gs} |",
            m.kind,
            size_label(m.bytes),
            m.ingest.show(),
            m.send.show()
        );
        let key = format!(
            "hostile_{}_{}",
            m.kind,
            if m.size == small { "small" } else { "large" }
        );
        println!("RESULT {key}_ingest={} ms", m.ingest.result());
        println!("RESULT {key}_send={} ms", m.send.result());
        for (what, r) in [("ingest ratio", rin), ("send ratio", rsn)] {
            match r {
                Some(r) => {
                    worst_ratio = worst_ratio.max(r);
                    if r > 3.0 {
                        let over = if m.ingest.is_bound() || m.send.is_bound() {
                            "> "
                        } else {
                            ""
                        };
                        failures.push(format!("{key} {what} {over}{r:.1}"));
                    }
                }
                None if m.kind != "benign" => failures.push(format!("{key} {what} not measured")),
                None => {}
            }
        }
        for (what, g) in [("ingest growth", gin), ("send growth", gsn)] {
            if let Some(g) = g {
                worst_growth = worst_growth.max(g);
                // "About 10": the size grows 10×; up to 15× is counted as linear (noise, caches).
                if g > 15.0 {
                    failures.push(format!("{key} {what} {g:.1}"));
                }
            }
        }
        for c in [&m.ingest, &m.send] {
            if matches!(c, Cost::Over(_) | Cost::Crashed(_)) {
                failures.push(format!("{key}: {}", c.show()));
            }
        }
    }
    println!();
    println!("RESULT hostile_worst_ratio={worst_ratio:.2} x");
    println!("RESULT hostile_worst_growth={worst_growth:.2} x");
    println!("RESULT hostile_budget={:.0} s", budget.as_secs_f64());

    // The headline: the built binary on the large mails.
    let large = sizes.iter().copied().max().unwrap_or(2_500_000);
    println!();
    println!(
        "`postdesk ingest --region JP < mail.eml` (the built binary, one run each, {} s budget):",
        budget.as_secs_f64()
    );
    println!();
    println!("| mail | size | wall time | ÷ benign | exit |");
    println!("| --- | ---: | ---: | ---: | --- |");
    let mut benign_cost = Cost::NotRun;
    // A first run warms the page cache and the binary: the first process of a run is the slowest.
    let _ = binary_ingest(&generate("benign", large), budget);
    for kind in &kinds {
        let raw = generate(kind, large);
        let (cost, line) = binary_ingest(&raw, budget);
        if *kind == "benign" {
            benign_cost = cost.clone();
        }
        let (r, _) = ratio(&cost, &benign_cost);
        println!(
            "| {kind} | {} | {} | {r} | {} |",
            size_label(raw.len()),
            cost.show(),
            line.replace('|', "\\|")
        );
        println!("RESULT hostile_binary_{kind}={} ms", cost.result());
    }
    println!();
    if failures.is_empty() {
        println!("hostile: every target met (ratio ≤ 3, growth ≤ about 10)");
    } else {
        println!("hostile: {} targets missed:", failures.len());
        for f in &failures {
            println!("- {f}");
        }
    }
}
