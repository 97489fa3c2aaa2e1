//! `/healthz` and `/metrics` of a daemon started in-process, taking mail over IMAP from the real mail stack.
//!
//! The HTTP requests are written by hand (one `GET` with `Connection: close` over a `TcpStream`): the test
//! checks postdesk's server, so it should not share an HTTP library with it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use postdesk::daemon::Daemon;
use postdesk::store::Storage;
use support::{eventually, mail, stack, Region, TestConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// One `GET`: (status code, content type, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    (code, content_type, body.to_string())
}

async fn healthz(addr: SocketAddr) -> (u16, serde_json::Value) {
    let (code, content_type, body) = get(addr, "/healthz").await;
    assert_eq!(content_type, "application/json");
    (code, serde_json::from_str(&body).expect("JSON body"))
}

/// The value of the sample `series` (name and labels exactly as exposed), if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

async fn metrics(addr: SocketAddr) -> String {
    let (code, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    assert!(content_type.contains("openmetrics-text"), "{content_type}");
    body
}

fn start(dir: &Path, http: &str, regions: Vec<Region>) -> (Daemon, CancellationToken) {
    let config = TestConfig::new(dir).http(http).regions(regions).parse();
    let token = CancellationToken::new();
    let daemon = Daemon::start(config, token.clone()).expect("daemon starts");
    (daemon, token)
}

async fn stop(d: Daemon, token: CancellationToken) {
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), d.wait())
        .await
        .expect("stops within 10 s, HTTP listener included")
        .expect("flush");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_follow_intake_and_outbox() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let dir = tempfile::tempdir().unwrap();
    let regions = vec![Region::jp().imap(s, &jp, dir.path(), "none")];
    let (d, token) = start(dir.path(), "listen = \"127.0.0.1:0\"", regions);
    let addr = d.http_addr.expect("listening");
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    // Healthy once the first sweep of the (empty) mailbox is done.
    eventually(
        "JP's intake to report a successful poll",
        Duration::from_secs(20),
        async || {
            let (code, h) = healthz(addr).await;
            let r = &h["regions"][0];
            code == 200
                && h["status"] == "ok"
                && r["region"] == "JP"
                && r["mailbox"] == "INBOX"
                && (r["state"] == "connected" || r["state"] == "idle")
                && r["last_ok"].is_string()
                && r["failing_since"].is_null()
        },
    )
    .await;

    let mails: Vec<Vec<u8>> = (0..3)
        .map(|i| {
            mail(
                &format!("customer{i}@example.jp"),
                &jp,
                &format!("質問 {i}"),
                &format!("m{i}@example.jp"),
                "よろしくお願いします。",
            )
        })
        .collect();
    s.append(&jp, "INBOX", &mails, None).await;
    eventually("3 tickets", Duration::from_secs(20), async || {
        d.desk.store.tickets(None, None).unwrap().len() == 3
    })
    .await;
    // Each new ticket's acknowledgement goes through the (file) outbox.
    eventually(
        "3 acknowledgements sent",
        Duration::from_secs(20),
        async || sample(&metrics(addr).await, "postdesk_outbox_sent_total") == Some(3.0),
    )
    .await;
    let m = metrics(addr).await;
    assert_eq!(
        sample(&m, "postdesk_mails_ingested_total{region=\"JP\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "postdesk_tickets{region=\"JP\",status=\"new\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "postdesk_tickets{region=\"JP\",status=\"closed\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "postdesk_outbox{status=\"sent\"}"),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "postdesk_outbox{status=\"queued\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(sample(&m, "postdesk_outbox_failed_total"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "postdesk_parse_failures_total{region=\"JP\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(
        sample(&m, "postdesk_ingest_seconds_count{region=\"JP\"}").is_some_and(|n| n >= 1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "postdesk_send_seconds_count"), Some(3.0), "{m}");
    let (code, h) = healthz(addr).await;
    assert_eq!(code, 200);
    assert_eq!(h["outbox"]["queued"], 0);
    assert_eq!(h["outbox"]["failed"], 0);
    // An unknown path is a 404, not a crash.
    assert_eq!(get(addr, "/nope").await.0, 404);
    stop(d, token).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_naming_the_region_that_keeps_failing() {
    if !support::require_servers(support::MAIL_SERVERS) {
        return;
    }
    let s = stack();
    let jp = s.user("support-jp");
    let kr = s.user("support-kr");
    let dir = tempfile::tempdir().unwrap();
    let regions = vec![
        Region::new("JP", &jp).imap(s, &jp, dir.path(), "none"),
        Region::kr()
            .imap_with_password(s, &kr, dir.path(), "none", "wrong-password")
            .intake("reconnect_max = \"1s\""),
    ];
    let (d, token) = start(
        dir.path(),
        "listen = \"127.0.0.1:0\"\nunhealthy_after = \"1s\"",
        regions,
    );
    let addr = d.http_addr.expect("listening");
    eventually(
        "/healthz to turn 503",
        Duration::from_secs(30),
        async || healthz(addr).await.0 == 503,
    )
    .await;
    let (code, body) = healthz(addr).await;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["status"], "failing");
    let regions = body["regions"].as_array().unwrap();
    let kr_health = regions
        .iter()
        .find(|r| r["region"] == "KR")
        .expect("KR listed");
    assert_eq!(kr_health["state"], "failing", "{body}");
    assert_eq!(kr_health["last_error"], "auth", "{body}");
    assert!(kr_health["failing_since"].is_string(), "{body}");
    // No secret or server text in the answer.
    assert!(!body.to_string().contains("wrong-password"), "{body}");
    // The healthy region is shown healthy.
    let jp_health = regions
        .iter()
        .find(|r| r["region"] == "JP")
        .expect("JP listed");
    assert!(jp_health["failing_since"].is_null(), "{body}");
    eventually(
        "a reconnect to be counted",
        Duration::from_secs(15),
        async || {
            sample(
                &metrics(addr).await,
                "postdesk_imap_reconnects_total{region=\"KR\"}",
            )
            .is_some_and(|n| n >= 1.0)
        },
    )
    .await;
    stop(d, token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_fails_the_start_and_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = TestConfig::new(dir.path())
        .http(&format!("listen = \"{addr}\""))
        .region(Region::new("JP", "jp@example.com"))
        .parse();
    let err = match Daemon::start(config, CancellationToken::new()) {
        Ok(_) => panic!("started on a taken port"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&addr.to_string()) && err.contains("http.listen"),
        "{err}"
    );
}
