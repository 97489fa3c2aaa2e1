//! `[alerts]` through the real daemon with the file transport: an intake that fails is told to the admin
//! once after `unhealthy_after`, never repeated while it lasts, and its recovery once. No servers needed:
//! the failing intakes are a Maildir whose `new/` is taken away (and given back) and an IMAP region pointing
//! to a closed port on 127.0.0.1.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{Region, TestConfig};

/// The subjects of the alert mails the file transport wrote, oldest first.
fn alerts(out: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(out)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    files
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|m| m.contains("To: ops@example.com"))
        .filter_map(|m| {
            m.lines()
                .find(|l| l.starts_with("Subject: "))
                .map(|l| l["Subject: ".len()..].to_string())
        })
        .collect()
}

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_intake_failure_alerts_the_admin_once_and_its_recovery_once() {
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    let out = dir.path().join("out");
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let pw = dir.path().join("kr.pass");
    std::fs::write(&pw, "secret\n").unwrap();
    let config = TestConfig::new(dir.path())
        .region(Region::jp().maildir(&maildir, "100ms"))
        .region(Region::kr().intake(&format!(
            "kind = \"imap\"\nhost = \"127.0.0.1\"\nport = {closed_port}\ntls = \"none\"\nusername = \"kr\"\npassword_file = {:?}\npoll_interval = \"1s\"\n",
            pw.display().to_string()
        )))
        .table("[alerts]\nto = \"ops@example.com\"\nunhealthy_after = \"1s\"\n")
        .write_to(&dir.path().join("config.toml"));
    let mut daemon = support::Cli::new(&config).daemon();
    wait_for("the Maildir watch", 30, || {
        daemon.logged(&["watching Maildir"])
    });

    // The IMAP server is not there: one alert, after unhealthy_after.
    wait_for("the IMAP alert", 30, || {
        alerts(&out).iter().any(|s| s.contains("region KR"))
    });
    // The Maildir breaks: one alert for it.
    let new = maildir.join("new");
    std::fs::remove_dir(&new).unwrap();
    wait_for("the Maildir alert", 30, || {
        alerts(&out).iter().any(|s| s.contains("region JP"))
    });
    // While they last, nothing is repeated.
    std::thread::sleep(Duration::from_secs(4));
    let told = alerts(&out);
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(
        told.iter()
            .all(|s| s.starts_with("[postdesk] trouble: intake of region")),
        "{told:?}"
    );

    // The Maildir works again: one recovery mail, and only for it.
    std::fs::create_dir(&new).unwrap();
    wait_for("the recovery", 30, || alerts(&out).len() == 3);
    std::thread::sleep(Duration::from_secs(3));
    let told = alerts(&out);
    assert_eq!(told.len(), 3, "{told:?}");
    assert!(
        told[2].starts_with("[postdesk] recovered: intake of region JP"),
        "{told:?}"
    );
    assert!(daemon.stop(), "{}", daemon.log());
}
