//! Golden tests: every `tests/fixtures/NNN-*.eml` (written by `scripts/make-fixtures.py` to look like real
//! client mail) parsed and checked against its `.expect.json`, once as stored (CRLF) and once with LF line
//! endings, as mail arrives from a Maildir or a local MTA.

mod support;

use std::path::{Path, PathBuf};

use postdesk::config::Config;
use postdesk::desk::ticket::Locale;
use postdesk::mail::{classify, parse, quote};
use serde_json::Value;
use support::{Region, TestConfig};

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 40,
        "the fixture corpus is missing: run python3 scripts/make-fixtures.py"
    );
    v
}

/// Two regions with default settings (the classification checks read the config, nothing is stored).
fn config() -> Config {
    TestConfig::new(Path::new("/tmp/unused"))
        .region(Region::new("JP", "support-jp@example.com"))
        .region(Region::new("KR", "support-kr@example.com"))
        .parse()
}

/// Every difference between what postdesk reads and what the fixture expects, as readable lines.
fn check(name: &str, raw: &[u8], expect: &Value, config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    let mut fail = |what: String| errors.push(format!("{name}: {what}"));
    let m = match parse(raw, Locale::En) {
        Ok(m) => m,
        Err(e) => {
            fail(format!("not parsed: {e}"));
            return errors;
        }
    };
    let s = |k: &str| expect.get(k).and_then(Value::as_str);
    if let Some(from) = s("from") {
        let got = m.from.as_ref().map(|f| f.address.as_str());
        if got != Some(from) {
            fail(format!("from {got:?}, expected {from:?}"));
        }
    }
    if let Some(name) = s("from_name") {
        let got = m.from.as_ref().map(|f| f.name.as_str());
        if got != Some(name) {
            fail(format!("from_name {got:?}, expected {name:?}"));
        }
    }
    if let Some(subject) = s("subject") {
        if m.subject != subject {
            fail(format!("subject {:?}, expected {subject:?}", m.subject));
        }
    }
    if let Some(id) = s("message_id") {
        if m.message_id != id {
            fail(format!("message_id {:?}, expected {id:?}", m.message_id));
        }
    }
    for (key, got) in [
        ("in_reply_to", &m.in_reply_to),
        ("references", &m.references),
    ] {
        if let Some(list) = expect.get(key).and_then(Value::as_array) {
            let want: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
            if *got != want {
                fail(format!("{key} {got:?}, expected {want:?}"));
            }
        }
    }
    for needle in expect
        .get("text_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.text.contains(needle) {
            fail(format!(
                "text lacks {needle:?}; text is {:?}",
                m.text.chars().take(400).collect::<String>()
            ));
        }
    }
    for needle in expect
        .get("text_not_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if m.text.contains(needle) {
            fail(format!("text contains {needle:?}"));
        }
    }
    // What the desk keeps as the new text (relayed to the customer, shown to agents): quotes and the
    // contact card stripped, the sign-off kept.
    if let Some(want) = s("reply_text") {
        let got = quote::strip_quoted(&m.text);
        if got != want {
            fail(format!(
                "reply_text {got:?}, expected {want:?}; text is {:?}",
                m.text.chars().take(600).collect::<String>()
            ));
        }
    }
    if let Some(list) = expect.get("attachments").and_then(Value::as_array) {
        for want in list {
            let fname = want["filename"].as_str().unwrap_or_default();
            match m.attachments.iter().find(|a| a.filename == fname) {
                None => fail(format!(
                    "no attachment {fname:?}; have {:?}",
                    m.attachments
                        .iter()
                        .map(|a| (&a.filename, &a.content_type, a.data.len()))
                        .collect::<Vec<_>>()
                )),
                Some(a) => {
                    if Some(a.content_type.as_str()) != want["content_type"].as_str() {
                        fail(format!(
                            "{fname}: content_type {:?}, expected {}",
                            a.content_type, want["content_type"]
                        ));
                    }
                    // A forwarded mail is carried as it stands: with LF line endings its bytes are not the
                    // CRLF bytes the expectation was computed from.
                    let lf_message =
                        name.ends_with("(LF)") && a.content_type.starts_with("message/");
                    if lf_message {
                        continue;
                    }
                    if Some(a.data.len() as u64) != want["size"].as_u64() {
                        fail(format!(
                            "{fname}: size {}, expected {}",
                            a.data.len(),
                            want["size"]
                        ));
                    }
                    if Some(a.sha256.as_str()) != want["sha256"].as_str() {
                        fail(format!("{fname}: sha256 differs"));
                    }
                }
            }
        }
    }
    // What the decoder guessed or repaired must be on record (issue 15: the guess is kept in `damage`).
    for needle in expect
        .get("damage_contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !m.damage.iter().any(|d| d.contains(needle)) {
            fail(format!("damage lacks {needle:?}; damage is {:?}", m.damage));
        }
    }
    if let Some(auto) = expect.get("auto_submitted").and_then(Value::as_bool) {
        let got = classify::automatic(&m, config).is_some();
        if got != auto {
            fail(format!("automatic {got}, expected {auto}"));
        }
    }
    if let Some(locale) = s("locale") {
        let got = classify::customer_locale(&m, Locale::En);
        if got.as_str() != locale {
            fail(format!("locale {got}, expected {locale}"));
        }
    }
    errors
}

#[test]
fn every_fixture_parses_as_expected_with_crlf_and_with_lf() {
    let config = config();
    let mut errors = Vec::new();
    for path in fixtures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read(&path).unwrap();
        let expect: Value =
            serde_json::from_slice(&std::fs::read(path.with_extension("expect.json")).unwrap())
                .unwrap();
        errors.extend(check(&name, &raw, &expect, &config));
        errors.extend(check(
            &format!("{name} (LF)"),
            &strip_cr(&raw),
            &expect,
            &config,
        ));
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

fn strip_cr(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}
