//! A Maildir as a mail source: files in `new/` are ingested in batches; once the batch is durably in the
//! store, each file is renamed into `cur/` with the Seen flag (`:2,S`). A file that could not be stored
//! stays in `new/` and is tried again on the next scan: nothing is deleted, nothing is acknowledged early.
//!
//! Memory is bounded whatever lands in `new/`: a file larger than `max_message_bytes` is read only as far as
//! its headers and the first 256 KiB of its text ([`super::oversize`]), stored so, and then moved whole to the
//! Maildir++ folder `.postdesk-quarantine/` (as IMAP moves it to `postdesk-quarantine`); and a batch stops
//! taking files once it holds [`BATCH_BYTES`].

use std::io::Read;
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
/// Bytes of mail read per batch: the batch is held in memory (and parsed) at once, so 256 files of up to
/// `max_message_bytes` each could hold gigabytes. 64 MiB keeps the flush per batch for ordinary mail
/// (thousands of messages of a few KiB) while bounding memory; one file is always taken, and none is
/// larger than the cap.
pub const BATCH_BYTES: u64 = 64 * 1024 * 1024;
/// The Maildir++ folder oversized originals move to (shown as `postdesk-quarantine` by IMAP servers).
pub const QUARANTINE_DIR: &str = ".postdesk-quarantine";

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

/// One file of a batch: its name in `new/`, the bytes to store, and its size when it was oversized.
pub struct Taken {
    pub name: String,
    pub raw: Vec<u8>,
    pub oversized: Option<u64>,
}

/// Read the next batch of `names` (in `root/new/`): at most [`BATCH`] files and, after the first, no more
/// than `max_bytes` in all; files larger than `cap` are read truncated.
pub fn read_batch(
    root: &Path,
    names: Vec<String>,
    cap: u64,
    max_bytes: u64,
) -> Result<Vec<Taken>, String> {
    let mut files: Vec<Taken> = Vec::new();
    let mut held = 0u64;
    for name in names.into_iter().take(BATCH) {
        let path = root.join("new").join(&name);
        let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // taken by someone else
            Err(e) => return Err(cannot(e)),
        };
        let size = file.metadata().map_err(cannot)?.len();
        let oversized = size > cap;
        let expected = if oversized {
            cap.min(super::oversize::TEXT_BYTES * 2)
        } else {
            size
        };
        if !files.is_empty() && held + expected > max_bytes {
            break; // the next batch takes it
        }
        let (raw, oversized) = if oversized {
            (
                super::oversize::truncated(file, cap).map_err(cannot)?,
                Some(size),
            )
        } else {
            // Read through the cap only: a file still being written may have grown since.
            let mut raw = Vec::with_capacity(size as usize);
            file.take(cap + 1).read_to_end(&mut raw).map_err(cannot)?;
            if raw.len() as u64 > cap {
                let size = raw.len() as u64;
                (
                    super::oversize::truncated(&raw[..], cap).map_err(cannot)?,
                    Some(size),
                )
            } else {
                (raw, None)
            }
        };
        held += raw.len() as u64;
        files.push(Taken {
            name,
            raw,
            oversized,
        });
    }
    Ok(files)
}

/// Ingest one batch from `new/`; returns how many files were taken (stored, duplicate or quarantined).
pub async fn scan_once(
    desk: &Desk,
    region: &RegionConfig,
    root: &Path,
    cap: u64,
) -> Result<usize, String> {
    let began = std::time::Instant::now();
    let names =
        pending(root).map_err(|e| format!("cannot list {}: {e}", root.join("new").display()))?;
    let files = read_batch(root, names, cap, BATCH_BYTES)?;
    if files.is_empty() {
        return Ok(0);
    }
    let quarantine = root.join(QUARANTINE_DIR);
    let items = files
        .iter()
        .map(|f| Incoming {
            raw: &f.raw,
            source: format!("maildir:{}", root.join("new").join(&f.name).display()),
            delivery: match f.oversized {
                Some(size) => {
                    tracing::warn!(region = %region.code, file = %f.name, size, limit = cap,
                        "oversized mail stored truncated; the file moves to {}", quarantine.display());
                    super::oversize::delivery(
                        size,
                        cap,
                        &format!("the original is in the Maildir folder {}", quarantine.display()),
                    )
                }
                None => Delivery::normal(),
            },
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
    for (f, outcome) in files.iter().zip(&outcomes) {
        let name = &f.name;
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
    for f in &files {
        let name = &f.name;
        let from = root.join("new").join(name);
        let to = if f.oversized.is_some() {
            if let Err(e) = ensure_layout(&quarantine) {
                tracing::warn!(path = %quarantine.display(), "cannot create the quarantine folder: {e}");
            }
            cur_path(&quarantine, name)
        } else {
            cur_path(root, name)
        };
        if let Err(e) = std::fs::rename(&from, to) {
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
        let wait = match scan_once(&desk, &region, &intake.path, intake.max_message_bytes).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(n: usize, text_bytes: usize) -> Vec<u8> {
        let mut raw = format!("From: a{n}@example.com\r\nSubject: {n}\r\n\r\n").into_bytes();
        raw.resize(raw.len() + text_bytes, b'x');
        raw
    }

    #[test]
    fn maildir_batch_bytes_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        ensure_layout(dir.path()).unwrap();
        for n in 0..10 {
            std::fs::write(dir.path().join(format!("new/{n:02}")), mail(n, 100_000)).unwrap();
        }
        let names = pending(dir.path()).unwrap();
        // 250 kB a batch: two files of 100 kB, not ten.
        let batch = read_batch(dir.path(), names.clone(), 1_000_000, 250_000).unwrap();
        assert_eq!(batch.len(), 2);
        let held: usize = batch.iter().map(|t| t.raw.len()).sum();
        assert!(held <= 250_000, "{held}");
        // One file is always taken, even one larger than the batch limit.
        let one = read_batch(dir.path(), names.clone(), 1_000_000, 1_000).unwrap();
        assert_eq!(one.len(), 1);
        // Without a byte bound the file count alone limits it.
        assert_eq!(
            read_batch(dir.path(), names, 1_000_000, u64::MAX)
                .unwrap()
                .len(),
            10
        );
    }

    #[test]
    fn an_oversized_file_is_read_truncated_not_whole() {
        let dir = tempfile::tempdir().unwrap();
        ensure_layout(dir.path()).unwrap();
        // Ten times the cap; reading it costs the cap at most.
        std::fs::write(dir.path().join("new/big"), mail(0, 2_000_000)).unwrap();
        let batch = read_batch(
            dir.path(),
            pending(dir.path()).unwrap(),
            200_000,
            BATCH_BYTES,
        )
        .unwrap();
        assert_eq!(batch.len(), 1);
        assert!(batch[0].raw.len() <= 200_000, "{}", batch[0].raw.len());
        assert!(batch[0].oversized.is_some_and(|s| s > 2_000_000));
        assert!(batch[0].raw.starts_with(b"From: a0@example.com\r\n"));
    }
}
