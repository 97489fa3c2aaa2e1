//! The built `postdesk` binary driven as an admin and an MTA would: `ingest` on stdin, `tickets … --json`,
//! exit codes, `run` with a Maildir intake and the file outbox, and the ticket JSON contract. No servers needed.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postdesk::desk::ticket::{Locale, Priority, Status, Ticket};
use serde_json::Value;
use support::{Cli, Region, TestConfig};

struct Env {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// JP (Japanese, one agent) and KR (Korean); `jp` adds to the JP region (e.g. its intake).
fn config(root: &Path, jp: impl FnOnce(Region) -> Region) -> TestConfig {
    TestConfig::new(root)
        .region(jp(Region::jp().agents(&["agent@example.com"])))
        .region(Region::kr())
}

fn env_with(jp: impl FnOnce(Region) -> Region) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), jp).write_to(&dir.path().join("config.toml"));
    Env { dir, config }
}

fn env() -> Env {
    env_with(|r| r)
}

fn postdesk(env: &Env, args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    Cli::new(&env.config).run(args, stdin)
}

fn ingest(env: &Env, region: &str, mail: &str) -> (i32, String, String) {
    postdesk(env, &["ingest", "--region", region], mail.as_bytes())
}

fn json(env: &Env, args: &[&str]) -> Value {
    let (code, out, err) = postdesk(env, args, b"");
    assert_eq!(code, 0, "postdesk {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn tickets(env: &Env) -> Vec<Value> {
    json(env, &["tickets", "list", "--json"])
        .as_array()
        .expect("array")
        .clone()
}

fn inbound_messages(ticket: &Value) -> Vec<&Value> {
    ticket["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["direction"] == "in")
        .collect()
}

const FIRST: &str = "From: Hanako Yamada <hanako@example.jp>\r\nTo: support-jp@example.com\r\nCc: colleague@example.jp\r\nSubject: =?UTF-8?B?5rOo5paH44GM5bGK44GN44G+44Gb44KT?=\r\nMessage-ID: <first@example.jp>\r\nDate: Mon, 3 Nov 2025 10:00:00 +0900\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n先週注文した商品がまだ届きません。注文番号は A-1234 です。\r\n";

#[test]
fn ingest_makes_a_ticket_with_the_contract_fields_and_queues_an_ack() {
    let e = env();
    let (code, out, err) = ingest(&e, "JP", FIRST);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JP-1000"), "{out}");
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    for key in [
        "id",
        "region",
        "status",
        "priority",
        "category",
        "subject",
        "requester",
        "participants",
        "locale",
        "created_at",
        "updated_at",
        "messages",
    ] {
        assert!(t.get(key).is_some(), "missing {key} in {t}");
    }
    assert_eq!(t["id"], "JP-1000");
    assert_eq!(t["status"], "new");
    assert_eq!(t["subject"], "注文が届きません");
    assert_eq!(t["requester"], "hanako@example.jp");
    assert_eq!(
        t["participants"],
        serde_json::json!(["colleague@example.jp"])
    );
    assert_eq!(t["locale"], "ja");
    let m = &t["messages"][0];
    for key in [
        "direction",
        "from",
        "to",
        "date",
        "message_id",
        "subject",
        "text",
        "attachments",
    ] {
        assert!(m.get(key).is_some(), "missing {key} in message {m}");
    }
    assert_eq!(m["message_id"], "first@example.jp");
    assert!(m["text"].as_str().unwrap().contains("A-1234"));
    let outbox = json(&e, &["outbox", "list", "--json"]);
    let rows = outbox.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{outbox}");
    for key in [
        "id",
        "ticket",
        "kind",
        "to",
        "subject",
        "status",
        "attempts",
        "last_error",
        "created_at",
        "sent_at",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key} in outbox row");
    }
    assert_eq!(rows[0]["kind"], "ack");
    assert_eq!(rows[0]["status"], "queued");
    assert_eq!(rows[0]["to"], serde_json::json!(["hanako@example.jp"]));
    assert!(rows[0]["subject"]
        .as_str()
        .unwrap()
        .starts_with("[JP-1000] 注文が届きません"));
}

/// The names of a ticket's JSON are a contract (ARCHITECTURE.md, "JSON"), and the store keeps tickets in
/// the same form: what is written reads back unchanged.
#[test]
fn a_ticket_keeps_the_contract_names_in_json_and_reads_back() {
    let t = support::ticket("KR-1042")
        .status(Status::Pending)
        .priority(Priority::High)
        .locale(Locale::Ko)
        .requester("kim@example.co.kr")
        .participants(&["lee@example.co.kr"])
        .build();
    let v = serde_json::to_value(&t).unwrap();
    assert_eq!(v["id"], "KR-1042");
    assert_eq!(v["region"], "KR");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["priority"], "high");
    assert_eq!(v["category"], "other");
    assert_eq!(v["requester"], "kim@example.co.kr");
    assert_eq!(v["participants"], serde_json::json!(["lee@example.co.kr"]));
    assert_eq!(v["locale"], "ko");
    for key in ["created_at", "updated_at"] {
        let at = v[key].as_str().unwrap_or_else(|| panic!("{key} in {v}"));
        assert!(
            chrono::DateTime::parse_from_rfc3339(at).is_ok(),
            "{key}: {at}"
        );
    }
    let back: Ticket = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(serde_json::to_value(&back).unwrap(), v);
}

#[test]
fn the_same_mail_twice_is_one_ticket_with_one_message() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let (code, out, _) = ingest(&e, "JP", FIRST);
    assert_eq!(code, 0);
    assert!(out.contains("already stored"), "{out}");
    // Same mail through another relay: different Received lines and line endings, same content.
    let relayed = format!(
        "Received: from mx2.example.net\n{}",
        FIRST.replace("\r\n", "\n")
    );
    assert_eq!(ingest(&e, "JP", &relayed).0, 0);
    let all = tickets(&e);
    assert_eq!(all.len(), 1);
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(t["messages"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(
        json(&e, &["outbox", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_different_mail_reusing_a_message_id_is_kept() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let other = "From: someone@example.com\r\nTo: support-jp@example.com\r\nSubject: Different\r\nMessage-ID: <first@example.jp>\r\n\r\nA different mail with a recycled Message-ID.\r\n";
    assert_eq!(ingest(&e, "JP", other).0, 0);
    assert_eq!(tickets(&e).len(), 2);
}

#[test]
fn replies_thread_by_tag_and_by_references() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let by_tag = "From: hanako@example.jp\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] 注文が届きません\r\nMessage-ID: <second@example.jp>\r\n\r\n追加情報です。\r\n";
    assert_eq!(ingest(&e, "JP", by_tag).0, 0);
    let by_refs = "From: colleague@example.jp\r\nTo: support-jp@example.com\r\nSubject: 追加\r\nMessage-ID: <third@example.jp>\r\nIn-Reply-To: <second@example.jp>\r\nReferences: <first@example.jp> <second@example.jp>\r\n\r\n同僚です。写真を添付します。\r\n";
    assert_eq!(ingest(&e, "JP", by_refs).0, 0);
    // A reply to the acknowledgement (References to the Message-ID postdesk sent) joins too.
    let outbox = json(&e, &["outbox", "list", "--json"]);
    let ack_id = outbox[0]["message_id"].as_str().unwrap().to_string();
    let to_ack = format!("From: hanako@example.jp\r\nTo: support-jp@example.com\r\nSubject: thanks\r\nMessage-ID: <fourth@example.jp>\r\nIn-Reply-To: <{ack_id}>\r\n\r\nありがとうございます。\r\n");
    assert_eq!(ingest(&e, "JP", &to_ack).0, 0);
    assert_eq!(tickets(&e).len(), 1);
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(inbound_messages(&t).len(), 4, "{t}");
    // Follow-ups get no second acknowledgement.
    assert_eq!(
        json(&e, &["outbox", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_stranger_quoting_someone_elses_tag_gets_a_ticket_of_their_own() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let stranger = "From: mallory@example.net\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] 注文が届きません\r\nMessage-ID: <m1@example.net>\r\nReferences: <first@example.jp>\r\n\r\nPlease send me the order details.\r\n";
    let (code, out, _) = ingest(&e, "JP", stranger);
    assert_eq!(code, 0);
    assert!(out.contains("JP-1001"), "{out}");
    let original = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(
        original["messages"].as_array().unwrap().len(),
        1,
        "the stranger's mail must not join JP-1000"
    );
    let theirs = json(&e, &["tickets", "show", "JP-1001", "--json"]);
    assert_eq!(theirs["requester"], "mallory@example.net");
    // The stranger's acknowledgement names their own ticket only.
    let outbox = json(&e, &["outbox", "list", "--json"]);
    let ack = outbox
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ticket"] == "JP-1001")
        .expect("ack for JP-1001");
    assert!(
        !ack["subject"].as_str().unwrap().contains("JP-1000"),
        "{ack}"
    );
}

#[test]
fn regions_have_their_own_sequences() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let kr = "From: kim@example.co.kr\r\nTo: support-kr@example.com\r\nSubject: =?UTF-8?B?7KO866y4IOusuOydmA==?=\r\nMessage-ID: <k1@example.co.kr>\r\n\r\n주문한 상품이 도착하지 않았습니다.\r\n";
    let (code, out, _) = ingest(&e, "KR", kr);
    assert_eq!(code, 0);
    assert!(out.contains("KR-1000"), "{out}");
    let t = json(&e, &["tickets", "show", "KR-1000", "--json"]);
    assert_eq!(t["locale"], "ko");
    let second = FIRST
        .replace("first@", "again@")
        .replace("A-1234", "B-5678");
    assert!(ingest(&e, "JP", &second).1.contains("JP-1001"));
    let jp_only = json(&e, &["tickets", "list", "--region", "JP", "--json"]);
    assert_eq!(jp_only.as_array().unwrap().len(), 2);
}

#[test]
fn set_status_queues_a_status_update() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let (code, out, err) = postdesk(&e, &["tickets", "set-status", "JP-1000", "pending"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pending"), "{out}");
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(t["status"], "pending");
    let outbox = json(&e, &["outbox", "list", "--json"]);
    let update = outbox
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "status_changed")
        .expect("status update queued");
    assert_eq!(
        update["to"],
        serde_json::json!(["hanako@example.jp", "colleague@example.jp"])
    );
    let (code, _, err) = postdesk(&e, &["tickets", "set-status", "JP-1000", "pending"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("already pending"), "{err}");
    let (code, _, err) = postdesk(&e, &["tickets", "set-status", "JP-1000", "done"], b"");
    assert_ne!(code, 0);
    assert!(
        err.contains("new, open, pending, resolved, closed"),
        "{err}"
    );
}

#[test]
fn input_that_is_not_a_mail_exits_65_and_stores_nothing() {
    let e = env();
    for junk in [
        &b""[..],
        b"\n\n",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0",
        b"hello, this is not a mail\n",
    ] {
        let (code, _, err) = postdesk(&e, &["ingest", "--region", "JP"], junk);
        assert_eq!(code, 65, "input {junk:?}: {err}");
        assert!(err.contains("not a mail"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert!(tickets(&e).is_empty());
}

#[test]
fn garbage_with_headers_still_becomes_a_ticket() {
    let e = env();
    let mut raw =
        b"From: \xff\xfe odd <x@example.com>\r\nSubject: \x93\x8c\x8b\x9e\r\n\r\n".to_vec();
    raw.extend((0..2000u32).map(|i| (i * 7919 % 251) as u8));
    let (code, _, err) = postdesk(&e, &["ingest", "--region", "JP"], &raw);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tickets(&e).len(), 1);
}

#[test]
fn a_store_that_cannot_be_written_exits_75() {
    let e = env();
    let blocker = e.dir.path().join("blocker");
    std::fs::write(&blocker, b"a file where a directory should be").unwrap();
    config(e.dir.path(), |r| r)
        .storage(&blocker.join("sub/data"))
        .write_to(&e.config);
    let (code, _, err) = ingest(&e, "JP", FIRST);
    assert_eq!(code, 75, "{err}");
}

#[test]
fn unknown_region_exits_75_so_the_mta_keeps_the_mail() {
    let e = env();
    let (code, _, err) = ingest(&e, "CN", FIRST);
    assert_eq!(code, 75);
    assert!(err.contains("CN") && err.contains("JP, KR"), "{err}");
}

#[test]
fn check_config_names_the_key() {
    let e = env();
    let (code, out, err) = postdesk(&e, &["check-config"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
    // Two regions with the same code.
    TestConfig::new(e.dir.path())
        .region(Region::jp().agents(&["agent@example.com"]))
        .region(Region::new("JP", "support-kr@example.com").locale("ko"))
        .write_to(&e.config);
    let (code, _, err) = postdesk(&e, &["check-config"], b"");
    assert_eq!(code, 2);
    assert!(err.contains("region[1].code"), "{err}");
    let (code, _, err) = postdesk(
        &Env {
            dir: tempfile::tempdir().unwrap(),
            config: PathBuf::from("/nonexistent/postdesk.toml"),
        },
        &["check-config"],
        b"",
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/postdesk.toml"), "{err}");
}

fn wait_for(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    support::wait_for(what, timeout, Duration::from_millis(50), f)
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn run_takes_maildir_mail_writes_the_ack_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let e = env_with(|jp| jp.maildir(&maildir, "100ms"));
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(maildir.join("new/1700000000.1.host"), FIRST).unwrap();
    std::fs::write(
        maildir.join("new/1700000001.2.host"),
        b"\x00\x01 not a mail at all",
    )
    .unwrap();
    let mut daemon = Cli::new(&e.config).daemon();
    let out_dir = e.dir.path().join("out");
    wait_for("both files to leave new/", Duration::from_secs(20), || {
        count_files(&maildir.join("new")) == 0
    });
    wait_for("the acknowledgement file", Duration::from_secs(20), || {
        count_files(&out_dir) == 1
    });
    assert_eq!(count_files(&maildir.join("cur")), 2);
    let eml = std::fs::read_dir(&out_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ack = std::fs::read_to_string(&eml).unwrap();
    assert!(ack.contains("Auto-Submitted: auto-replied"), "{ack}");
    assert!(ack.contains("In-Reply-To: <first@example.jp>"), "{ack}");
    assert!(ack.contains("To: hanako@example.jp"), "{ack}");
    // While the daemon holds the store, commands go through its control socket, with the same results.
    let reply = "From: hanako@example.jp\r\nTo: support-jp@example.com\r\nSubject: Re: [JP-1000] x\r\nMessage-ID: <r1@example.jp>\r\n\r\n追加です。\r\n";
    let (code, out, err) = ingest(&e, "JP", reply);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added to ticket JP-1000"), "{out}");
    assert_eq!(ingest(&e, "JP", reply).0, 0);
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    assert_eq!(inbound_messages(&t).len(), 2, "{t}");
    assert_eq!(postdesk(&e, &["ingest", "--region", "JP"], b"").0, 65);
    let (code, took) = daemon.terminate();
    assert!(code.success(), "exit status {code:?}");
    assert!(took < Duration::from_secs(10));
    // The store is consistent after the stop: the ticket, the sent ack, and the quarantined junk.
    let outbox = json(&e, &["outbox", "list", "--json"]);
    assert_eq!(outbox[0]["status"], "sent", "{outbox}");
    let stats = json(&e, &["stats", "--json"]);
    assert_eq!(stats[0]["quarantined"], 1, "{stats}");
    assert_eq!(stats[0]["by_status"]["new"], 1, "{stats}");
}

/// A stand-in daemon on the control socket of `e`'s store: it reads one request line and gives `answer`
/// (nothing: it hangs up, as a daemon from before the versioned protocol does). Returns the line it read.
fn fake_daemon(e: &Env, answer: Option<&'static str>) -> std::thread::JoinHandle<String> {
    use std::io::BufRead;
    let data = e.dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(data.join("postdesk.sock")).unwrap();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(answer) = answer {
            // Read the input the request announced, then answer.
            let request: Value = serde_json::from_str(&line).unwrap();
            let mut input = vec![0; request["input_len"].as_u64().unwrap() as usize];
            std::io::Read::read_exact(&mut reader, &mut input).unwrap();
            let mut stream = reader.into_inner();
            stream.write_all(answer.as_bytes()).unwrap();
        }
        line
    })
}

#[test]
fn a_daemon_of_another_control_protocol_is_explained_and_the_mta_keeps_the_mail() {
    // The old daemon still runs after an upgrade: it cannot read the request and hangs up.
    let e = env();
    let old = fake_daemon(&e, None);
    let (code, _, err) = ingest(&e, "JP", FIRST);
    let line = old.join().unwrap();
    assert!(
        line.starts_with(r#"{"version":1,"op":{"ingest":{"region":"JP"}}"#),
        "{line}"
    );
    assert_eq!(code, 75, "{err}");
    assert!(
        err.contains("the running daemon is the old one and speaks another control protocol: restart it after the upgrade: systemctl restart postdesk"),
        "{err}"
    );

    // A daemon of a later protocol refuses the request with its own words, which the CLI prints.
    let e = env();
    let newer = fake_daemon(
        &e,
        Some("{\"code\":75,\"stdout\":\"\",\"stderr\":\"postdesk: this command came in control protocol v1, but the running daemon speaks control protocol v2; restart it after the upgrade: systemctl restart postdesk\\n\"}\n"),
    );
    let (code, out, err) = postdesk(&e, &["tickets", "list"], b"");
    newer.join().unwrap();
    assert_eq!((code, out.as_str()), (75, ""), "{err}");
    assert_eq!(
        err,
        "postdesk: this command came in control protocol v1, but the running daemon speaks control protocol v2; restart it after the upgrade: systemctl restart postdesk\n"
    );
}

/// `[outbound] templates_dir` set to a fresh directory holding `files` (`<locale>/<file>`, contents).
fn env_with_templates(files: &[(&str, &str)]) -> (Env, PathBuf) {
    let e = env();
    let templates = e.dir.path().join("templates");
    for (name, body) in files {
        let path = templates.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, body).expect("write template");
    }
    let text = std::fs::read_to_string(&e.config)
        .expect("read config")
        .replace(
            "[outbound]\n",
            &format!("[outbound]\ntemplates_dir = \"{}\"\n", templates.display()),
        );
    std::fs::write(&e.config, text).expect("write config");
    (e, templates)
}

/// Defect 2: an `ack` override using `{{body}}` (an `agent_reply` variable) passed `check-config`, and at run
/// time strict mode refused every new English ticket with exit 75.
#[test]
fn check_config_refuses_an_ack_override_using_an_agent_reply_variable() {
    let (e, templates) = env_with_templates(&[(
        "en/ack.txt.hbs",
        "We received your mail [{{ticket_id}}]:\n{{body}}\n",
    )]);
    let (code, out, err) = postdesk(&e, &["check-config"], b"");
    assert_eq!(code, 2, "{out}{err}");
    let file = templates.join("en/ack.txt.hbs").display().to_string();
    assert!(err.contains(&file), "{err}");
    assert!(err.contains("`body`") && err.contains("`ack`"), "{err}");
    // It says what to do: which variables the event has.
    assert!(
        err.contains("needs_order_number") && err.contains("ticket_id"),
        "{err}"
    );
}

#[test]
fn check_config_accepts_overrides_using_their_own_events_variables() {
    let (e, _) = env_with_templates(&[
        (
            "en/ack.txt.hbs",
            "[{{ticket_id}}] {{#if needs_order_number}}Your order number, please.{{/if}}\n",
        ),
        (
            "ja/agent_reply.txt.hbs",
            "{{#if agent_name}}{{agent_name}}: {{/if}}{{body}}\n",
        ),
    ]);
    let (code, out, err) = postdesk(&e, &["check-config"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
}

/// What `check-config` refuses, `run` refuses too: a daemon started with such an override would answer
/// every new ticket of that language with a failed mail.
#[test]
fn run_refuses_to_start_with_an_override_using_another_events_variable() {
    let (e, templates) =
        env_with_templates(&[("en/ack.txt.hbs", "Received [{{ticket_id}}]: {{body}}\n")]);
    let (code, out, err) = postdesk(&e, &["run"], b"");
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("cannot start"), "{err}");
    let file = templates.join("en/ack.txt.hbs").display().to_string();
    assert!(err.contains(&file) && err.contains("`body`"), "{err}");
}

/// `e`'s config sending through an SMTP relay that logs in with the password in `pw`.
fn env_with_smtp_password(pw: &Path) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), |r| r)
        .smtp_server(&format!(
            "host = \"127.0.0.1\"\nport = 1\ntls = \"none\"\nusername = \"desk\"\npassword_file = {}\n",
            toml::Value::String(pw.display().to_string())
        ))
        .write_to(&dir.path().join("config.toml"));
    Env { dir, config }
}

#[test]
fn check_config_warns_of_a_readable_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let pw = tmp.path().join("smtp.pass");
    std::fs::write(&pw, "s3cret-relay-password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = env_with_smtp_password(&pw);
    // A warning, not a failure: it names the file and the chmod to run.
    let (code, out, err) = postdesk(&e, &["check-config"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("OK"), "{out}");
    let warning = format!("chmod 600 {}", pw.display());
    assert!(
        err.contains("warning")
            && err.contains("outbound.smtp.password_file")
            && err.contains(&warning),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // `run` logs the same warning.
    let mut daemon = Cli::new(&e.config).daemon();
    wait_for("the warning in the log", Duration::from_secs(20), || {
        daemon.logged(&["password_file", &warning])
    });
    assert!(daemon.stop());
    // Owner-only: no warning.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = postdesk(&e, &["check-config"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[test]
fn a_toml_error_never_echoes_a_password() {
    let e = env();
    let good = std::fs::read_to_string(&e.config).unwrap();
    let secret = "hunter2-Very-Secret";
    let cases = [
        // A syntax error on the secret's own line (an unterminated string).
        format!("[outbound.smtp]\nhost = \"relay\"\npassword = \"{secret}\n"),
        // A syntax error right after it: toml's snippet shows the lines around.
        format!("[outbound.smtp]\nhost = \"relay\"\npassword = \"{secret}\" oops\n"),
        // Valid TOML, but a key postdesk does not know.
        format!("[outbound.smtp]\nhost = \"relay\"\npassword = \"{secret}\"\n"),
        // An inline table.
        format!("[outbound.smtp]\nhost = \"relay\"\nauth = {{ token = '{secret}', x = }}\n"),
        // A secret of the right key but the wrong type.
        format!("[outbound]\nmessage_id_secret = [\"{secret}\"]\n"),
    ];
    for (i, case) in cases.iter().enumerate() {
        let text = if case.starts_with("[outbound]\n") {
            good.replacen("[outbound]\n", case, 1)
        } else {
            format!("{good}{case}")
        };
        std::fs::write(&e.config, &text).unwrap();
        let (code, _, err) = postdesk(&e, &["check-config"], b"");
        assert_eq!(code, 2, "case {i}: {err}");
        assert!(
            !err.contains("hunter2"),
            "case {i} echoes the secret: {err}"
        );
        assert!(err.contains("redacted"), "case {i}: {err}");
    }
}

/// A mail of about `bytes` bytes of text.
fn large_mail(message_id: &str, bytes: usize) -> Vec<u8> {
    let mut raw = format!(
        "From: hanako@example.jp\r\nTo: support-jp@example.com\r\nSubject: big\r\nMessage-ID: <{message_id}>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    )
    .into_bytes();
    let line = b"0123456789 the same long line of text, again and again and again.\r\n";
    while raw.len() < bytes {
        raw.extend_from_slice(line);
    }
    raw
}

/// The kinds of the outbox rows of `ticket`.
fn outbox_kinds(e: &Env, ticket: &str) -> Vec<String> {
    json(e, &["outbox", "list", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["ticket"] == ticket)
        .map(|r| r["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn pipe_applies_max_message_bytes() {
    let e = env_with(|jp| jp.line("max_message_bytes = 100000"));
    let raw = large_mail("big@example.jp", 1_000_000);
    let (code, out, err) = postdesk(&e, &["ingest", "--region", "JP"], &raw);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("JP-1000"), "{out}");
    let t = json(&e, &["tickets", "show", "JP-1000", "--json"]);
    let m = &inbound_messages(&t)[0];
    assert!(
        m["damage"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("oversized")),
        "{m}"
    );
    // Stored truncated: the ticket holds the headers and the start of the text, not the whole mail.
    assert!(m["text"].as_str().unwrap().len() < 300_000, "stored whole");
    assert_eq!(outbox_kinds(&e, "JP-1000"), vec!["oversize"]);
    // What the store accepts of the original is kept in quarantine.
    let stats = json(&e, &["stats", "--json"]);
    assert_eq!(stats[0]["quarantined"], 1, "{stats}");
    // A mail within the limit is stored whole, as before.
    let small = large_mail("small@example.jp", 50_000);
    assert_eq!(postdesk(&e, &["ingest", "--region", "JP"], &small).0, 0);
    assert_eq!(outbox_kinds(&e, "JP-1001"), vec!["ack"]);
}

#[test]
fn maildir_applies_max_message_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let e = env_with(|jp| {
        jp.maildir(&maildir, "100ms")
            .intake("max_message_bytes = 100000")
    });
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    // Generated here and deleted with the tempdir: a mail ten times the configured cap.
    let raw = large_mail("big@example.jp", 1_000_000);
    std::fs::write(maildir.join("new/1700000000.1.host"), &raw).unwrap();
    std::fs::write(maildir.join("new/1700000001.2.host"), FIRST).unwrap();
    let mut daemon = Cli::new(&e.config).daemon();
    wait_for("both files to leave new/", Duration::from_secs(20), || {
        count_files(&maildir.join("new")) == 0
    });
    assert!(daemon.stop());
    // The original, whole, in the quarantine folder (Maildir++ `.postdesk-quarantine`); the other in cur/.
    let quarantine = maildir.join(".postdesk-quarantine/cur");
    let kept: Vec<_> = std::fs::read_dir(&quarantine).unwrap().collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(
        std::fs::read(kept[0].as_ref().unwrap().path()).unwrap(),
        raw
    );
    assert_eq!(count_files(&maildir.join("cur")), 1);
    let list = tickets(&e);
    let big = list
        .iter()
        .find(|t| t["subject"] == "big")
        .expect("the big mail's ticket");
    let id = big["id"].as_str().unwrap();
    let t = json(&e, &["tickets", "show", id, "--json"]);
    let m = &inbound_messages(&t)[0];
    assert!(
        m["damage"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains("oversized")),
        "{m}"
    );
    assert!(m["text"].as_str().unwrap().len() < 300_000, "stored whole");
    assert_eq!(outbox_kinds(&e, id), vec!["oversize"]);
}

/// Issue 14, item 4: `outbox retry` of a mail already sent sent it again without a word. It is refused
/// (exit 1, saying when it was sent and about `--force`), and `--force` still queues it again.
#[test]
fn outbox_retry_refuses_a_sent_mail_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let maildir = tmp.path().join("maildir");
    let e = env_with(|jp| jp.maildir(&maildir, "100ms"));
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    std::fs::write(maildir.join("new/1700000000.1.host"), FIRST).unwrap();
    let mut daemon = Cli::new(&e.config).daemon();
    wait_for(
        "the acknowledgement to be sent",
        Duration::from_secs(20),
        || count_files(&e.dir.path().join("out")) == 1,
    );
    let (code, _) = daemon.terminate();
    assert!(code.success());
    // No filter here, so that the test runs on a version without them too.
    let sent = |e: &Env| {
        json(e, &["outbox", "list", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "ack")
            .cloned()
            .expect("the ack row")
    };
    let ack = sent(&e);
    assert_eq!(ack["status"], "sent", "{ack}");
    let id = ack["id"].as_u64().unwrap().to_string();
    let (code, out, err) = postdesk(&e, &["outbox", "retry", &id], b"");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("already sent at"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(sent(&e)["status"], "sent", "nothing changed");
    let (code, out, err) = postdesk(&e, &["outbox", "retry", &id, "--force"], b"");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued again"), "{out}");
    assert_eq!(sent(&e)["status"], "queued");
}

/// Issue 14, item 4: `outbox list` had no filters (1,140 rows after one day). Each filter selects what it
/// says, they combine, and `--limit` gives the newest rows, newest first.
#[test]
fn outbox_list_filters() {
    let e = env();
    assert_eq!(ingest(&e, "JP", FIRST).0, 0);
    let kr = "From: kim@example.co.kr\r\nTo: support-kr@example.com\r\nSubject: hello\r\nMessage-ID: <k1@example.co.kr>\r\n\r\nbody\r\n";
    assert_eq!(ingest(&e, "KR", kr).0, 0);
    assert_eq!(
        postdesk(&e, &["tickets", "set-status", "JP-1000", "pending"], b"").0,
        0
    );
    let list = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["outbox", "list", "--json"];
        all.extend_from_slice(args);
        json(&e, &all).as_array().unwrap().clone()
    };
    let all = list(&[]);
    assert!(all.len() >= 3, "{all:?}");
    let count = |f: &dyn Fn(&Value) -> bool| all.iter().filter(|r| f(r)).count();

    let jp = list(&["--ticket", "JP-1000"]);
    assert_eq!(jp.len(), count(&|r| r["ticket"] == "JP-1000"));
    assert!(jp.iter().all(|r| r["ticket"] == "JP-1000"));
    let acks = list(&["--kind", "ack"]);
    assert_eq!(acks.len(), 2, "{acks:?}");
    assert!(acks.iter().all(|r| r["kind"] == "ack"));
    assert_eq!(list(&["--ticket", "JP-1000", "--kind", "ack"]).len(), 1);
    assert_eq!(list(&["--status", "queued"]).len(), all.len());
    assert!(list(&["--status", "sent"]).is_empty());
    assert_eq!(list(&["--since", "1h"]).len(), all.len());
    assert!(list(&["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(
        list(&["--since", "2000-01-01T09:00:00+09:00"]).len(),
        all.len()
    );
    // Newest first when limited: the highest ids.
    let newest = list(&["--limit", "2"]);
    let mut ids: Vec<u64> = all.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    let got: Vec<u64> = newest.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(got, ids[..2].to_vec());
    // The table has the same filters.
    let (code, out, _) = postdesk(&e, &["outbox", "list", "--kind", "status_changed"], b"");
    assert_eq!(code, 0);
    assert!(
        out.contains("status_changed") && !out.contains(" ack "),
        "{out}"
    );
    // Bad values are refused with the reason.
    let (code, _, err) = postdesk(&e, &["outbox", "list", "--since", "yesterday-ish"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("neither a duration"), "{err}");
    let (code, _, err) = postdesk(&e, &["outbox", "list", "--status", "lost"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not an outbox status"), "{err}");
}
