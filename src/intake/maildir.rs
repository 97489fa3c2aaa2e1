//! A Maildir as a mail source: files in `new/` are ingested in batches; once the batch is durably in the
//! store, each file is renamed into `cur/` with the Seen flag (`:2,S`). A file that could not be stored
//! stays in `new/` and is tried again on the next scan: nothing is deleted, nothing is acknowledged early.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::{MaildirIntake, RegionConfig};
use crate::desk::decide::Delivery;
use crate::service::{Desk, Incoming, Outcome};
use crate::store::Storage;

/// Files taken per batch (one flush per batch).
const BATCH: usize = 256;

/// Create `new/`, `cur/` and `tmp/` if missing.
pub fn ensure_layout(root: &Path) -> std::io::Result<()> {
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    Ok(())
}

/// Where a stored file goes: `cur/<name>:2,S` (keeping any flags it had).
fn cur_path(root: &Path, name: &str) -> PathBuf {
    let base = name.split(":2,").next().unwrap_or(name);
    root.join("cur").join(format!("{base}:2,S"))
}

/// Names in `new/`, oldest first (Maildir names start with the delivery time).
fn pending(root: &Path) -> std::io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("new"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Ingest one batch from `new/`; returns how many files were taken (stored, duplicate or quarantined).
pub async fn scan_once(desk: &Desk, region: &RegionConfig, root: &Path) -> Result<usize, String> {
    let began = std::time::Instant::now();
    let names =
        pending(root).map_err(|e| format!("cannot list {}: {e}", root.join("new").display()))?;
    let mut files = Vec::new();
    for name in names.into_iter().take(BATCH) {
        let path = root.join("new").join(&name);
        match std::fs::read(&path) {
            Ok(raw) => files.push((name, raw)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // taken by someone else
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    if files.is_empty() {
        return Ok(0);
    }
    let items = files
        .iter()
        .map(|(name, raw)| Incoming {
            raw,
            source: format!("maildir:{}", root.join("new").join(name).display()),
            delivery: Delivery::normal(),
            state: None,
        })
        .collect();
    // All of the batch is stored, or none of it (and it waits in new/ for the next scan).
    let outcomes = crate::service::blocking(|| desk.ingest_batch(region, items, Utc::now()))
        .map_err(|e| {
            format!(
                "could not store {} mail(s), they stay in new/: {e}",
                files.len()
            )
        })?;
    for ((name, _), outcome) in files.iter().zip(&outcomes) {
        match outcome {
            Outcome::Stored {
                ticket,
                new,
                queued,
            } => {
                tracing::info!(region = %region.code, %ticket, new, queued, file = %name, "mail stored")
            }
            Outcome::Duplicate(t) => {
                tracing::info!(region = %region.code, ticket = %t, file = %name, "duplicate mail ignored")
            }
            Outcome::Quarantined { id, reason } => {
                tracing::warn!(region = %region.code, quarantine = id, file = %name, "not a readable mail ({reason}); kept in quarantine")
            }
        }
    }
    desk.store
        .flush_async()
        .await
        .map_err(|e| format!("cannot flush the store: {e}"))?;
    desk.telemetry.observe_ingest(&region.code, began.elapsed());
    for (name, _) in &files {
        let from = root.join("new").join(name);
        if let Err(e) = std::fs::rename(&from, cur_path(root, name)) {
            // Stored but not moved: the next scan sees a duplicate and moves it then.
            tracing::warn!(file = %from.display(), "stored, but could not move to cur/: {e}");
        }
    }
    Ok(files.len())
}

/// Watch the Maildir of `region` until `shutdown`. The batch in flight is finished before returning.
pub async fn run(
    desk: Arc<Desk>,
    region: RegionConfig,
    intake: MaildirIntake,
    shutdown: CancellationToken,
) {
    let mailbox = intake.path.display().to_string();
    if let Err(e) = ensure_layout(&intake.path) {
        desk.telemetry
            .intake_failed(&region.code, &mailbox, "maildir", Utc::now());
        tracing::error!(region = %region.code, path = %intake.path.display(),
            "cannot create the Maildir: {e}; check [region.intake] path and its permissions");
        return;
    }
    tracing::info!(region = %region.code, path = %intake.path.display(), "watching Maildir");
    let mut failing = false;
    loop {
        let wait = match scan_once(&desk, &region, &intake.path).await {
            Ok(n) => {
                desk.telemetry.intake_ok(&region.code, &mailbox, Utc::now());
                if failing {
                    tracing::info!(region = %region.code, "Maildir intake recovered");
                    failing = false;
                }
                if n > 0 && !shutdown.is_cancelled() {
                    continue;
                }
                intake.poll_interval.0
            }
            Err(e) => {
                desk.telemetry
                    .intake_failed(&region.code, &mailbox, "maildir", Utc::now());
                if !failing {
                    tracing::error!(region = %region.code, "Maildir intake failing: {e}; mail stays in new/ until this is fixed");
                    failing = true;
                }
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
