//! `postdesk demo`: postdesk on its embedded default, with no mail server.
//!
//! It writes a config into the demo directory (two regions, JP and KR, each with a Maildir intake, and the
//! file transport for outgoing mail), drops the sample customer mails shipped in `examples/mail/` into the
//! Maildirs, runs the real daemon until every mail is stored and every acknowledgement written, and prints
//! the tickets and the outbox. Running it again is harmless: the same mails are recognised as duplicates.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::daemon::Daemon;
use crate::store::Storage;

include!(concat!(env!("OUT_DIR"), "/samples.rs"));

/// The embedded default config; `@DIR@` is replaced by the demo directory.
pub const DEMO_CONFIG: &str = r#"# postdesk demo config (written by `postdesk demo`): Maildir intake, outgoing mail as .eml files.
[storage]
path = "@DIR@/data"

[outbound]
transport = "file"
file_dir = "@DIR@/outbox"

[[region]]
code = "JP"
locale = "ja"
timezone = "Asia/Tokyo"
address = "support-jp@example.com"
display_name = "Example サポート"
agents = ["agent-jp@example.com"]
agent_notify = "jp-agents@example.com"
[region.intake]
kind = "maildir"
path = "@DIR@/maildir/jp"
poll_interval = "200ms"

[[region]]
code = "KR"
locale = "ko"
timezone = "Asia/Seoul"
address = "support-kr@example.com"
display_name = "Example 고객지원"
agents = ["agent-kr@example.com"]
agent_notify = "kr-agents@example.com"
[region.intake]
kind = "maildir"
path = "@DIR@/maildir/kr"
poll_interval = "200ms"
"#;

/// Run the demo in `dir`; returns the exit code.
pub async fn run(dir: &Path, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32 {
    match run_inner(dir, out).await {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "postdesk demo: {e}");
            1
        }
    }
}

async fn run_inner(dir: &Path, out: &mut (dyn Write + Send)) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let config_path = dir.join("config.toml");
    let text = DEMO_CONFIG.replace("@DIR@", &dir.display().to_string());
    std::fs::write(&config_path, &text)
        .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
    let config = Config::from_toml(&text, &config_path).map_err(|e| e.to_string())?;

    // Deliver the samples the way an MTA delivers to a Maildir: write in tmp/, rename into new/.
    for (i, (name, bytes)) in SAMPLE_MAILS.iter().enumerate() {
        let region = if String::from_utf8_lossy(bytes)
            .to_ascii_lowercase()
            .contains("to: support-kr@")
        {
            "kr"
        } else {
            "jp"
        };
        let maildir = dir.join("maildir").join(region);
        crate::intake::maildir::ensure_layout(&maildir)
            .map_err(|e| format!("{}: {e}", maildir.display()))?;
        let unique = format!(
            "{}.demo{i}.{}",
            chrono::Utc::now().timestamp(),
            name.trim_end_matches(".eml")
        );
        let tmp = maildir.join("tmp").join(&unique);
        std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, maildir.join("new").join(&unique))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        // Distinct arrival order, as a real MTA would give.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = writeln!(out, "postdesk demo in {}\n  config:  {}\n  {} sample mails delivered to the JP and KR Maildirs\n", dir.display(), config_path.display(), SAMPLE_MAILS.len());

    let shutdown = CancellationToken::new();
    let daemon = Daemon::start(config, shutdown.clone()).map_err(|e| e.to_string())?;
    let desk = daemon.desk.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let waiting_mail = ["jp", "kr"].iter().any(|r| {
            std::fs::read_dir(dir.join("maildir").join(r).join("new"))
                .map(|d| d.count() > 0)
                .unwrap_or(false)
        });
        let queued = desk.store.outbox_next_due().ok().flatten().is_some();
        if (!waiting_mail && !queued) || tokio::time::Instant::now() > deadline {
            break;
        }
    }
    shutdown.cancel();
    let desk = daemon.desk.clone();
    daemon.wait().await.map_err(|e| e.to_string())?;

    let tickets = desk.store.tickets(None, None).map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "Tickets (postdesk --config {} tickets list):",
        config_path.display()
    );
    crate::commands::view::print_ticket_table(out, &tickets);
    let items = desk.store.outbox_all().map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "\nAcknowledgements written to {}:",
        dir.join("outbox").display()
    );
    for i in &items {
        let _ = writeln!(
            out,
            "  {:<8} {:<6} to {:<28} {}",
            i.status.as_str(),
            i.kind,
            i.to.join(","),
            i.subject
        );
    }
    if let Some(first) = items
        .iter()
        .find(|i| i.kind == crate::desk::reply::Event::Ack.as_str())
    {
        let _ = writeln!(
            out,
            "\nThe first one, as the customer reads it:\n\nSubject: {}\n\n{}",
            first.subject,
            first.text.trim_end()
        );
    }
    let _ = writeln!(
        out,
        "\nTry: postdesk --config {} tickets show {} ",
        config_path.display(),
        tickets
            .first()
            .map(|t| t.id.to_string())
            .unwrap_or_else(|| "JP-1000".into())
    );
    Ok(())
}
