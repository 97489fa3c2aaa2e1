//! Timers with durations of seconds, driving the built binary: reminders, auto-resolve, auto-close, the
//! survey and its answer, SLA reminder and escalation, and overdue timers after a restart firing once.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

struct Env {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn env(timers: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\npath = \"{d}/data\"\n[outbound]\ntransport = \"file\"\nfile_dir = \"{d}/out\"\n[timers]\n{timers}\n[[region]]\ncode = \"JP\"\nlocale = \"ja\"\naddress = \"support-jp@example.com\"\nagent_notify = \"jp-agents@example.com\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    Env { _dir: dir, config }
}

fn cli(e: &Env, args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postdesk"))
        .arg("--config")
        .arg(&e.config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.code().is_some());
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn json(e: &Env, args: &[&str]) -> Value {
    let (code, out) = cli(e, args, b"");
    assert_eq!(code, 0, "{args:?}");
    serde_json::from_str(&out).unwrap()
}

fn kinds(e: &Env) -> Vec<String> {
    json(e, &["outbox", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect()
}

/// A running daemon; killed if a failing test leaves it behind.
struct Daemon(Option<Child>);

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(e: &Env) -> Daemon {
    Daemon(Some(
        Command::new(env!("CARGO_BIN_EXE_postdesk"))
            .arg("--config")
            .arg(&e.config)
            .arg("run")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

fn stop(mut d: Daemon) {
    let mut child = d.0.take().unwrap();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const MAIL: &[u8] = b"From: taro@example.jp\r\nTo: support-jp@example.com\r\nSubject: question\r\nMessage-ID: <t1@example.jp>\r\n\r\nhello\r\n";

#[test]
fn reminders_then_auto_resolve_survey_auto_close_and_the_rating_recorded() {
    let e = env("customer_reminder_after = \"1s\"\ncustomer_reminders = 2\nautoclose_after = \"3s\"\nsurvey = true\n");
    assert_eq!(cli(&e, &["ingest", "--region", "JP"], MAIL).0, 0);
    assert_eq!(
        cli(&e, &["tickets", "set-status", "JP-1000", "pending"], b"").0,
        0
    );
    let due = json(&e, &["tickets", "due", "--json"]);
    assert!(
        due.as_array()
            .unwrap()
            .iter()
            .any(|t| t["kind"] == "customer_reminder" && t["ticket"] == "JP-1000"),
        "{due}"
    );
    let daemon = run(&e);
    wait_for("the auto-resolve", Duration::from_secs(20), || {
        json(&e, &["tickets", "show", "JP-1000", "--json"])["status"] == "resolved"
    });
    assert_eq!(
        kinds(&e),
        vec![
            "ack",
            "agent_notify",
            "status_changed",
            "customer_reminder",
            "customer_reminder",
            "resolved",
            "survey"
        ]
    );
    // The customer rates us: recorded, and the ticket stays resolved.
    let rating = b"From: taro@example.jp\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] question\r\nMessage-ID: <t2@example.jp>\r\n\r\n5 very quick, thank you\r\n";
    assert_eq!(cli(&e, &["ingest", "--region", "JP"], rating).0, 0);
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(t["status"], "resolved");
    assert_eq!(t["satisfaction"]["score"], 5);
    assert_eq!(t["satisfaction"]["comment"], "very quick, thank you");
    wait_for("the auto-close", Duration::from_secs(20), || {
        json(&e, &["tickets", "show", "JP-1000", "--json"])["status"] == "closed"
    });
    assert_eq!(kinds(&e).last().map(String::as_str), Some("closed"));
    let stats = json(&e, &["stats", "--json"]);
    assert_eq!(stats[0]["satisfaction"]["average"], 5.0);
    stop(daemon);
    assert!(
        json(&e, &["tickets", "due", "--json"])
            .as_array()
            .unwrap()
            .is_empty(),
        "a closed ticket has no timers"
    );
}

#[test]
fn a_customer_reply_cancels_the_reminder() {
    let e = env("customer_reminder_after = \"2s\"\n");
    assert_eq!(cli(&e, &["ingest", "--region", "JP"], MAIL).0, 0);
    assert_eq!(
        cli(&e, &["tickets", "set-status", "JP-1000", "pending"], b"").0,
        0
    );
    let reply = b"From: taro@example.jp\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] question\r\nMessage-ID: <t3@example.jp>\r\n\r\nhere is the information\r\n";
    assert_eq!(cli(&e, &["ingest", "--region", "JP"], reply).0, 0);
    let due = json(&e, &["tickets", "due", "--json"]);
    assert!(
        due.as_array()
            .unwrap()
            .iter()
            .all(|t| t["kind"] != "customer_reminder"),
        "{due}"
    );
    let daemon = run(&e);
    std::thread::sleep(Duration::from_secs(3));
    stop(daemon);
    assert!(!kinds(&e).contains(&"customer_reminder".to_string()));
    assert_eq!(
        json(&e, &["tickets", "show", "JP-1000", "--json"])["status"],
        "open"
    );
}

#[test]
fn sla_reminder_then_escalation_and_breach() {
    let e = env("escalate_to = \"leads@example.com\"\n[timers.first_response]\nnormal = \"2s\"\n");
    assert_eq!(cli(&e, &["ingest", "--region", "JP"], MAIL).0, 0);
    let daemon = run(&e);
    wait_for("the escalation", Duration::from_secs(20), || {
        kinds(&e).contains(&"escalation".to_string())
    });
    stop(daemon);
    assert_eq!(
        kinds(&e),
        vec!["ack", "agent_notify", "sla_reminder", "escalation"]
    );
    let rows = json(&e, &["outbox", "list", "--json"]);
    assert_eq!(
        rows[3]["to"],
        serde_json::json!(["leads@example.com", "jp-agents@example.com"])
    );
    assert_eq!(
        json(&e, &["tickets", "show", "JP-1000", "--json"])["breached"],
        true
    );
    let stats = json(&e, &["stats", "--json"]);
    assert_eq!(stats[0]["breaches"], 1);
    assert_eq!(stats[0]["first_response"]["answered"], 0, "nobody answered");
}

#[test]
fn overdue_timers_fire_once_after_a_restart() {
    // The second reminder falls due 6 s after the ticket starts waiting, well after this test is done.
    let e = env("customer_reminder_after = \"3s\"\ncustomer_reminders = 5\n");
    assert_eq!(cli(&e, &["ingest", "--region", "JP"], MAIL).0, 0);
    assert_eq!(
        cli(&e, &["tickets", "set-status", "JP-1000", "pending"], b"").0,
        0
    );
    // The daemon was down while the first reminder fell due.
    let waiting = Instant::now();
    std::thread::sleep(Duration::from_millis(3300));
    for _ in 0..2 {
        let daemon = run(&e);
        std::thread::sleep(Duration::from_millis(600));
        stop(daemon);
    }
    assert!(
        waiting.elapsed() < Duration::from_secs(6),
        "the test ran too slowly to be meaningful"
    );
    let reminders = kinds(&e)
        .iter()
        .filter(|k| *k == "customer_reminder")
        .count();
    assert_eq!(reminders, 1, "fired once, late, not once per start");
}
