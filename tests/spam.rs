//! Spam as a real SpamAssassin install marks it: Debian's `spamassassin` scores a GTUBE mail in local mode
//! (`spamassassin -L`, no network tests), and its output — the headers a real install writes, the mail
//! wrapped the way its default `report_safe` does — goes to `postdesk ingest` as the MTA would deliver it.
//! Skips plainly (or fails, with POSTDESK_REQUIRE_SERVERS) without spamassassin.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use support::{Cli, Region, TestConfig};

const SPAMASSASSIN: &str = "/usr/bin/spamassassin";

/// The GTUBE test string: every SpamAssassin scores a mail with it 1000.
const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// `mail` as `spamassassin -L` returns it, with `home` as its HOME (it keeps user preferences there).
fn scored(mail: &str, home: &std::path::Path) -> Vec<u8> {
    let mut child = Command::new(SPAMASSASSIN)
        .arg("-L")
        .env("HOME", home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spamassassin runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(mail.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("spamassassin output");
    assert!(!out.stdout.is_empty(), "spamassassin printed nothing");
    out.stdout
}

fn json(cli: &Cli, args: &[&str]) -> Value {
    let (code, out, err) = cli.run(args, b"");
    assert_eq!(code, 0, "postdesk {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn spam_assassin_verdict_is_honoured() {
    if !support::require_tool(SPAMASSASSIN, "spamassassin (apt-get install spamassassin)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .region(
            Region::jp()
                .agents(&["agent@example.com"])
                .agent_notify("jp-agents@example.com"),
        )
        .write_to(&dir.path().join("config.toml"));
    let cli = Cli::new(&config);

    let spam = scored(
        &format!("From: Prize Office <winner@example.net>\r\nTo: support-jp@example.com\r\nSubject: You have won\r\nMessage-ID: <gtube-1@example.net>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n{GTUBE}\r\n"),
        dir.path(),
    );
    let text = String::from_utf8_lossy(&spam);
    assert!(
        text.contains("X-Spam-Flag: YES") && text.contains("X-Spam-Status: Yes"),
        "spamassassin did not mark GTUBE: {text}"
    );
    let (code, out, err) = cli.run(&["ingest", "--region", "JP"], &spam);
    assert_eq!(code, 0, "{out}{err}");

    // Stored, as spam.
    let t = json(&cli, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(t["status"], "spam", "{t}");
    // Never acknowledged, nobody notified: nothing at all in the outbox.
    let outbox = json(&cli, &["outbox", "list", "--json"]);
    assert_eq!(outbox.as_array().map(Vec::len), Some(0), "{outbox}");
    // Left out of the list and the stats by default; `--status spam` lists it.
    let list = json(&cli, &["tickets", "list", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let list = json(&cli, &["tickets", "list", "--status", "spam", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let stats = json(&cli, &["stats", "--json"]);
    assert_eq!(stats[0]["by_status"]["new"], 0, "{stats}");
    assert_eq!(stats[0]["spam"], 1, "{stats}");

    // The same mail scored as ham (SpamAssassin's own `No` verdict) is an ordinary ticket.
    let ham = scored(
        "From: Hanako <hanako@example.jp>\r\nTo: support-jp@example.com\r\nSubject: order A-1234\r\nMessage-ID: <ham-1@example.jp>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\nMy order A-1234 has not arrived yet. Could you check?\r\n",
        dir.path(),
    );
    assert!(String::from_utf8_lossy(&ham).contains("X-Spam-Status: No"));
    let (code, _, err) = cli.run(&["ingest", "--region", "JP"], &ham);
    assert_eq!(code, 0, "{err}");
    let t = json(&cli, &["tickets", "show", "JP-1001", "--json"]);
    assert_eq!(t["status"], "new", "{t}");
    let outbox = json(&cli, &["outbox", "list", "--json"]);
    let kinds: Vec<&str> = outbox
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 2, "ack and notification for the ham: {outbox}");
}
