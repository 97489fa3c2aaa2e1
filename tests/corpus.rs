//! The real-world corpus: other projects' public test mails (`tests/corpus/<source>/`, each source with its
//! licence and a NOTICE), every mail with an expectation written by hand from the mail source
//! (`NAME.expect.json`: subject, sender address, text, attachment names). Parsed as postdesk parses mail
//! (`mail::parse`, desk locale `en`), once as stored and once with LF line endings; the pass rate per
//! field is printed per source and overall, and the test fails below [`TARGET`] for any field or on any
//! miss an expectation does not explain (`known_miss`, each one also explained in BENCHMARKS.md).
//!
//! Expectation keys: `subject` (exact, after decoding), `from` (the requester's address, lower case, or
//! `null` when postdesk must find none), `text_contains` (distinctive pieces of the text, compared with
//! white space runs folded to one space) or `text_empty: true`, `attachments` (the file names, in any
//! order; `""` for an attachment without a name), `not_mail: true` for a MIME test fragment with no mail
//! header at all (postdesk refuses it, as `postdesk ingest` does with exit 65: checked, and not counted in
//! the field rates), `known_miss` ({field: why}), `notes`.
//! `POSTDESK_CORPUS_DUMP=DIR` writes what postdesk reads of every mail to DIR (to write new expectations).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use postdesk::desk::ticket::Locale;
use postdesk::mail::parse;
use serde_json::{json, Value};

/// The pass rate every field must reach over the whole corpus.
const TARGET: f64 = 99.0;

const FIELDS: [&str; 4] = ["subject", "from", "text", "attachments"];

fn mails() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut out = Vec::new();
    for source in std::fs::read_dir(&root).expect("tests/corpus") {
        let source = source.unwrap().path();
        if !source.is_dir() {
            continue;
        }
        let name = source.file_name().unwrap().to_string_lossy().into_owned();
        for f in std::fs::read_dir(&source).unwrap() {
            let p = f.unwrap().path();
            let s = p.to_string_lossy();
            if s.ends_with(".eml") || (s.ends_with(".txt") && !s.ends_with(".expect.txt")) {
                out.push((name.clone(), p));
            }
        }
    }
    out.sort();
    out
}

fn fold(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn strip_cr(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, &b) in raw.iter().enumerate() {
        if !(b == b'\r' && raw.get(i + 1) == Some(&b'\n')) {
            out.push(b);
        }
    }
    out
}

/// Each field's verdict for one mail: `None` when it passes, else what postdesk read.
fn check(raw: &[u8], expect: &Value) -> BTreeMap<&'static str, Option<String>> {
    let mut out = BTreeMap::new();
    let m = match parse(raw, Locale::En) {
        Ok(m) => m,
        Err(e) => {
            for f in FIELDS {
                out.insert(f, Some(format!("not parsed: {e}")));
            }
            return out;
        }
    };
    let subject = expect["subject"].as_str().unwrap_or_default();
    out.insert(
        "subject",
        (m.subject != subject).then(|| format!("{:?}", m.subject)),
    );
    let from = m.from.as_ref().map(|f| f.address.as_str());
    out.insert(
        "from",
        (from != expect["from"].as_str()).then(|| format!("{from:?}")),
    );
    let text = fold(&m.text);
    let text_ok = if expect["text_empty"].as_bool() == Some(true) {
        text.is_empty()
    } else {
        let needles: Vec<&str> = expect["text_contains"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        !needles.is_empty() && needles.iter().all(|n| text.contains(&fold(n)))
    };
    out.insert(
        "text",
        (!text_ok).then(|| format!("{:?}", text.chars().take(300).collect::<String>())),
    );
    let mut want: Vec<&str> = expect["attachments"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut got: Vec<&str> = m.attachments.iter().map(|a| a.filename.as_str()).collect();
    want.sort();
    got.sort();
    out.insert("attachments", (want != got).then(|| format!("{got:?}")));
    out
}

fn dump(dir: &Path, name: &str, raw: &[u8]) {
    let v = match parse(raw, Locale::En) {
        Ok(m) => json!({
            "subject": m.subject,
            "from": m.from.map(|f| f.address),
            "text": m.text,
            "attachments": m.attachments.iter().map(|a| a.filename.clone()).collect::<Vec<_>>(),
            "damage": m.damage,
        }),
        Err(e) => json!({ "error": e.to_string() }),
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&v).unwrap(),
    )
    .unwrap();
}

#[test]
fn the_real_world_corpus_reads_as_its_expectations_say() {
    let mails = mails();
    assert!(mails.len() >= 100, "the corpus is missing: tests/corpus/");
    let dump_dir = std::env::var_os("POSTDESK_CORPUS_DUMP").map(PathBuf::from);
    // (source, field) -> (passed, total); misses not explained by `known_miss`.
    let mut rates: BTreeMap<(String, &str), (usize, usize)> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let mut explained = Vec::new();
    let mut stale = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    for (source, path) in &mails {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let raw = std::fs::read(path).unwrap();
        if let Some(dir) = &dump_dir {
            dump(&dir.join(source), &name, &raw);
        }
        let expect_path = path.with_extension("expect.json");
        let Ok(text) = std::fs::read(&expect_path) else {
            unexplained.push(format!("{source}/{name}: no expectation file"));
            continue;
        };
        let expect: Value = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", expect_path.display()));
        let known = &expect["known_miss"];
        if expect["not_mail"].as_bool() == Some(true) {
            *refused.entry(source.clone()).or_default() += 1;
            for (variant, bytes) in [("", raw.clone()), (" (LF)", strip_cr(&raw))] {
                if let Ok(m) = parse(&bytes, Locale::En) {
                    unexplained.push(format!(
                        "{source}/{name}{variant}: expected to be refused as not mail, read as {:?}",
                        m.subject
                    ));
                }
            }
            continue;
        }
        for (variant, bytes) in [("", raw.clone()), (" (LF)", strip_cr(&raw))] {
            for (field, verdict) in check(&bytes, &expect) {
                for key in [(source.clone(), field), ("all".to_string(), field)] {
                    let r = rates.entry(key).or_default();
                    r.1 += 1;
                    if verdict.is_none() {
                        r.0 += 1;
                    }
                }
                match (verdict, known.get(field).and_then(Value::as_str)) {
                    (Some(got), None) => unexplained.push(format!(
                        "{source}/{name}{variant}: {field} is {got}, expected {}",
                        match field {
                            "text" => expect
                                .get("text_contains")
                                .map(Value::to_string)
                                .unwrap_or_else(|| "empty".into()),
                            f => expect[f].to_string(),
                        }
                    )),
                    (Some(_), Some(why)) => {
                        explained.push(format!("{source}/{name}{variant}: {field}: {why}"))
                    }
                    (None, Some(_)) if variant.is_empty() => {
                        stale.push(format!("{source}/{name}: {field} passes now"))
                    }
                    _ => {}
                }
            }
        }
    }
    let sources: Vec<String> = {
        let mut s: Vec<String> = rates.keys().map(|(s, _)| s.clone()).collect();
        s.dedup();
        s.retain(|s| s != "all");
        s.push("all".into());
        s
    };
    println!("| corpus | mails | refused as not mail | subject | from | text | attachments |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut below = Vec::new();
    for s in &sources {
        let refused_here = if s == "all" {
            refused.values().sum()
        } else {
            refused.get(s).copied().unwrap_or(0)
        };
        let total = rates[&(s.clone(), "subject")].1 / 2 + refused_here;
        let cells: Vec<String> = FIELDS
            .iter()
            .map(|f| {
                let (p, t) = rates[&(s.clone(), *f)];
                let pct = 100.0 * p as f64 / t.max(1) as f64;
                if s == "all" && pct < TARGET {
                    below.push(format!("{f}: {pct:.1} %"));
                }
                format!("{pct:.1} % ({p}/{t})")
            })
            .collect();
        println!("| {s} | {total} | {refused_here} | {} |", cells.join(" | "));
    }
    println!("\nexplained misses ({}):", explained.len());
    for e in &explained {
        println!("  {e}");
    }
    for s in &stale {
        println!("  stale known_miss: {s}");
    }
    assert!(
        unexplained.is_empty() && below.is_empty(),
        "{} unexplained misses, fields below {TARGET} %: {below:?}\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
}
