//! A Maildir as a mail source: files in `new/` are ingested in batches; once the batch is durably in the
//! store, each file is renamed into `cur/` with the Seen flag (`:2,S`). A file that could not be stored
//! stays in `new/` and is tried again on the next scan: nothing is deleted, nothing is acknowledged early.
//!
//! Memory is bounded whatever lands in `new/`: a file larger than `max_message_bytes` is read only as far as
//! its headers and the first 256 KiB of its text ([`super::oversize`]), stored so, and then moved whole to the
//! Maildir++ folder `.postdesk-quarantine/` (as IMAP moves it to `postdesk-quarantine`); and a batch stops
//! taking files once it holds [`BATCH_BYTES`].
//!
//! Failures are retried with backoff ([`Backoff`]), never in a hot loop: a Maildir that cannot be created,
//! read or written ([`ensure_layout`]), or whose stored mail cannot be moved out of `new/` (a scan that moved
//! nothing counts as failed, since the next one would find the same files again), marks the region
//! failing (`/healthz`, `systemctl status`), logs one error naming the path (and `ReadWritePaths=` when the
//! sandbox is the likely cause), and is tried again after 1 s, 2 s, … up to a minute, until it works.
//! Missing directories are made only until the Maildir has worked once: one that vanishes later is
//! reported (and waited for), not made again.
//!
//! The directories postdesk creates are group-writable (`0770`, and setgid: inherited from a setgid parent,
//! else set where the sandbox allows) when the directory they are made in is group-writable (as
//! `/var/mail` is, for the `mail` group), whatever the unit's `UMask=0077`, so that an MTA delivering as a
//! member of that group can write into `new/` and `tmp/`; else `0700`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::{MaildirIntake, RegionConfig};
use crate::desk::decide::Delivery;
use crate::notify::sandbox_hint;
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

/// Why a Maildir cannot be used, or why a scan failed. Every message names the path, and, when the unit's
/// sandbox or the service user's permissions are the likely cause, what to change ([`sandbox_hint`]).
#[derive(Debug, thiserror::Error)]
pub enum MaildirError {
    /// A directory of the Maildir is missing and cannot be made.
    #[error("cannot create {}: {source}{hint}", .path.display())]
    Create {
        path: PathBuf,
        source: std::io::Error,
        hint: String,
    },
    /// A directory exists but postdesk cannot read, search or write it.
    #[error("cannot access {}: {source}{hint}", .path.display())]
    Access {
        path: PathBuf,
        source: std::io::Error,
        hint: String,
    },
    #[error("{} is not a directory (a Maildir holds the directories new/, cur/ and tmp/)", .0.display())]
    NotADirectory(PathBuf),
    #[error("cannot read {}: {source}{hint}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
        hint: String,
    },
    #[error("could not store {count} mail(s), they stay in new/: {reason}")]
    Store { count: usize, reason: String },
    #[error("cannot flush the store, the mail stays in new/: {0}")]
    Flush(String),
    /// Mail was stored but none of it could leave `new/`: the next scan would find it again.
    #[error("{stored} mail(s) stored, but none could be moved out of new/: cannot rename {} to {}: {source}{hint}; \
             they stay in new/ and are taken again (as duplicates, no mail is doubled) once they can be moved",
             .from.display(), .to.display())]
    Move {
        stored: usize,
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
        hint: String,
    },
}

impl MaildirError {
    fn create(path: &Path, root: &Path, source: std::io::Error) -> MaildirError {
        let hint = sandbox_hint(&source, root);
        MaildirError::Create {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }

    fn access(path: &Path, root: &Path, source: std::io::Error) -> MaildirError {
        let hint = sandbox_hint(&source, root);
        MaildirError::Access {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }

    fn read(path: &Path, root: &Path, source: std::io::Error) -> MaildirError {
        let hint = sandbox_hint(&source, root);
        MaildirError::Read {
            path: path.to_path_buf(),
            source,
            hint,
        }
    }
}

/// Make sure `root` is a Maildir postdesk can work in: `root`, `new/`, `cur/` and `tmp/` exist (created if
/// missing, see the module overview for their mode), and `new/` and `cur/` can be read and written (a file
/// moves from one to the other). A directory that exists but cannot be used is "cannot access", one that
/// is missing and cannot be made "cannot create".
pub fn ensure_layout(root: &Path) -> Result<(), MaildirError> {
    layout(root, true)
}

/// [`ensure_layout`], creating what is missing only if `create`: a Maildir that has worked and then lost a
/// directory is an error to report (and retry), not something to paper over.
fn layout(root: &Path, create: bool) -> Result<(), MaildirError> {
    for dir in [
        root.to_path_buf(),
        root.join("new"),
        root.join("cur"),
        root.join("tmp"),
    ] {
        if create {
            make_dir(&dir, root)?;
        } else {
            match std::fs::metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(MaildirError::NotADirectory(dir)),
                Err(e) => return Err(MaildirError::access(&dir, root, e)),
            }
        }
    }
    for sub in ["new", "cur"] {
        let dir = root.join(sub);
        usable(&dir, libc::R_OK | libc::W_OK | libc::X_OK)
            .map_err(|e| MaildirError::access(&dir, root, e))?;
    }
    Ok(())
}

/// Create `path` if missing (see [`dir_mode`]); refuse something that is not a directory.
fn make_dir(path: &Path, root: &Path) -> Result<(), MaildirError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => return Err(MaildirError::NotADirectory(path.to_path_buf())),
        // Missing, or a parent is missing or no directory: creating it says which.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) => {}
        // It may exist, but postdesk cannot even look (a parent it may not search).
        Err(e) => return Err(MaildirError::access(path, root, e)),
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| MaildirError::create(parent, root, e))?;
        }
    }
    let mode = dir_mode(parent.and_then(|p| std::fs::metadata(p).ok()).as_ref());
    let made = if mode == 0o2770 {
        mkdir_group_writable(path)
    } else {
        std::fs::create_dir(path)
    };
    match made {
        Ok(()) => {}
        // Made by someone else (the MTA) since the look above: fine.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(MaildirError::create(path, root, e)),
    }
    use std::os::unix::fs::PermissionsExt;
    if mode == 0o2770 {
        // Made 0770 whatever the umask; setgid comes from a setgid parent by itself. Else set it here,
        // where allowed: the unit's RestrictSUIDSGID= refuses it (EPERM), and 0770 still lets the group in.
        let now = std::fs::metadata(path).map_err(|e| MaildirError::create(path, root, e))?;
        if now.permissions().mode() & 0o2000 == 0 {
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o2770));
        }
        Ok(())
    } else {
        // Explicitly, not through mkdir's mode: whatever the umask, exactly this.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| MaildirError::create(path, root, e))
    }
}

/// `mkdir(path, 0770)` under umask `007`, in a child process of its own (the umask is the whole process's,
/// and the other threads must keep the unit's `UMask=0077` for what they create). Not a mkdir and a chmod:
/// a chmod to 0770 drops the setgid bit the directory inherits from its parent, and one that keeps it is
/// refused by the unit's `RestrictSUIDSGID=yes`.
fn mkdir_group_writable(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: between fork and _exit the child makes only async-signal-safe system calls (umask, mkdir,
    // reading errno, _exit) on memory prepared before the fork; it allocates nothing and takes no lock.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            libc::umask(0o007);
            let code = if libc::mkdir(c.as_ptr(), 0o770) == 0 {
                0
            } else {
                std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
                    .clamp(1, 255)
            };
            libc::_exit(code);
        }
        let mut status = 0;
        loop {
            if libc::waitpid(pid, &mut status, 0) == pid {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(0) => Ok(()),
            Some(errno) => Err(std::io::Error::from_raw_os_error(errno)),
            None => Err(std::io::Error::other(
                "the mkdir child process did not exit",
            )),
        }
    }
}

/// The mode of a directory postdesk creates in a directory with `parent`'s metadata: `2770` (group-writable,
/// setgid so that files and directories made in it keep its group) when the parent is group-writable, so
/// that the MTA's group can deliver; else `0700`.
pub fn dir_mode(parent: Option<&std::fs::Metadata>) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    match parent {
        Some(m) if m.permissions().mode() & 0o020 != 0 => 0o2770,
        _ => 0o700,
    }
}

/// `access(2)` on `path`: whether this process may read/write/search it, read-only mounts included
/// (`EROFS`), which a look at the mode bits would miss.
fn usable(path: &Path, how: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; access(2) only reads it.
    if unsafe { libc::access(c.as_ptr(), how) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The wait before the next attempt while a Maildir keeps failing: the poll interval (at least 1 s),
/// doubling at every failure up to a minute (or the poll interval, if longer). Pure.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(poll_interval: Duration) -> Backoff {
        let base = poll_interval.max(Duration::from_secs(1));
        Backoff {
            base,
            cap: base.max(Duration::from_secs(60)),
            next: base,
        }
    }

    /// The wait after one more failure.
    pub fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.cap);
        wait
    }

    /// A success: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.next = self.base;
    }
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
) -> Result<Vec<Taken>, MaildirError> {
    let mut files: Vec<Taken> = Vec::new();
    let mut held = 0u64;
    for name in names.into_iter().take(BATCH) {
        let path = root.join("new").join(&name);
        let cannot = |e: std::io::Error| MaildirError::read(&path, root, e);
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

/// What one scan did: files taken from `new/` (stored, duplicate or quarantined) and, of those, how many
/// were moved out of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub taken: usize,
    pub moved: usize,
}

/// Ingest one batch from `new/`. Only files moved out of `new/` count as done: a batch stored but not moved
/// at all is an error ([`MaildirError::Move`]), since the next scan would find the same files again; some
/// moved and some not is a warning, and the rest are taken again next time.
pub async fn scan_once(
    desk: &Desk,
    region: &RegionConfig,
    root: &Path,
    cap: u64,
) -> Result<Scan, MaildirError> {
    let began = std::time::Instant::now();
    let new = root.join("new");
    let names = pending(root).map_err(|e| MaildirError::access(&new, root, e))?;
    let files = read_batch(root, names, cap, BATCH_BYTES)?;
    if files.is_empty() {
        return Ok(Scan::default());
    }
    let quarantine = root.join(QUARANTINE_DIR);
    let items = files
        .iter()
        .map(|f| Incoming {
            raw: &f.raw,
            source: format!("maildir:{}", new.join(&f.name).display()),
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
        .map_err(|e| MaildirError::Store {
            count: files.len(),
            reason: e.to_string(),
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
        .map_err(|e| MaildirError::Flush(e.to_string()))?;
    desk.telemetry.observe_ingest(&region.code, began.elapsed());
    let mut moved = 0;
    let mut first_error: Option<(PathBuf, PathBuf, std::io::Error)> = None;
    for f in &files {
        let from = new.join(&f.name);
        let to = if f.oversized.is_some() {
            if let Err(e) = ensure_layout(&quarantine) {
                tracing::warn!(region = %region.code, "cannot use the quarantine folder: {e}");
            }
            cur_path(&quarantine, &f.name)
        } else {
            cur_path(root, &f.name)
        };
        match std::fs::rename(&from, &to) {
            Ok(()) => moved += 1,
            // Stored but not moved: the next scan sees a duplicate and moves it then.
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some((from, to, e));
                }
            }
        }
    }
    let scan = Scan {
        taken: files.len(),
        moved,
    };
    match first_error {
        None => Ok(scan),
        Some((from, to, source)) if moved == 0 => Err(MaildirError::Move {
            stored: files.len(),
            hint: sandbox_hint(&source, root),
            from,
            to,
            source,
        }),
        Some((from, to, e)) => {
            tracing::warn!(region = %region.code, "stored {} mail(s), but {} stay in new/ (taken again next time): cannot rename {} to {}: {e}",
                files.len(), files.len() - moved, from.display(), to.display());
            Ok(scan)
        }
    }
}

/// Watch the Maildir of `region` until `shutdown`. The batch in flight is finished before returning.
///
/// While it fails (see the module overview) the region is marked failing and one error is logged for the
/// whole streak; it is tried again with [`Backoff`], the layout first, and "recovered" is logged once it works.
pub async fn run(
    desk: Arc<Desk>,
    region: RegionConfig,
    intake: MaildirIntake,
    shutdown: CancellationToken,
) {
    let mailbox = intake.path.display().to_string();
    tracing::info!(region = %region.code, path = %intake.path.display(), "watching Maildir");
    let mut backoff = Backoff::new(intake.poll_interval.0);
    let mut failing = false;
    let mut layout_ok = false;
    // Until the first scan worked, missing directories are made (set-up); after that, one that vanished is
    // reported as failing until it is back.
    let mut worked = false;
    loop {
        let result = match layout_ok {
            true => Ok(()),
            false => layout(&intake.path, !worked),
        };
        let result = match result {
            Ok(()) => {
                layout_ok = true;
                scan_once(&desk, &region, &intake.path, intake.max_message_bytes).await
            }
            Err(e) => Err(e),
        };
        let wait = match result {
            Ok(scan) => {
                worked = true;
                desk.telemetry.intake_ok(&region.code, &mailbox, Utc::now());
                backoff.reset();
                if failing {
                    tracing::info!(region = %region.code, path = %intake.path.display(), "Maildir intake recovered");
                    failing = false;
                }
                if scan.moved > 0 && !shutdown.is_cancelled() {
                    continue;
                }
                intake.poll_interval.0
            }
            Err(e) => {
                desk.telemetry
                    .intake_failed(&region.code, &mailbox, "maildir", Utc::now());
                // Look at the directories again before the next scan: that is where most failures are.
                layout_ok = false;
                let wait = backoff.fail();
                if !failing {
                    tracing::error!(region = %region.code, "Maildir intake failing: {e}; mail stays in new/ until this is fixed (tried again with backoff, up to every minute)");
                    failing = true;
                } else {
                    tracing::debug!(region = %region.code, retry_in = ?wait, "Maildir intake still failing: {e}");
                }
                wait
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
    use crate::config::testing::{TestConfig, TestRegion};
    use crate::store::Store;
    use crate::telemetry::IntakeState;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    /// Log lines written while a test runs (current-thread runtime: every task logs here).
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Log {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
        fn count(&self, what: &str) -> usize {
            self.text().lines().filter(|l| l.contains(what)).count()
        }
        fn subscriber(&self) -> impl tracing::Subscriber {
            let sink = self.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish()
        }
    }

    /// A desk on a store in `dir/data` with region JP reading the Maildir `maildir`.
    fn desk_for(dir: &Path, maildir: &Path) -> (Arc<Desk>, RegionConfig, MaildirIntake) {
        let config = TestConfig::new(dir)
            .region(TestRegion::jp().intake(&format!(
                "kind = \"maildir\"\npath = \"{}\"\npoll_interval = \"1s\"",
                maildir.display()
            )))
            .parse();
        let store = Arc::new(Store::open(&config.storage.path).unwrap());
        let desk = Arc::new(Desk::new(config, store).unwrap());
        let region = desk.config.region[0].clone();
        let intake = match &region.intake {
            Some(crate::config::IntakeConfig::Maildir(m)) => m.clone(),
            _ => unreachable!(),
        };
        (desk, region, intake)
    }

    fn customer_mail(n: usize) -> Vec<u8> {
        format!("From: c{n}@example.com\r\nTo: support-jp@example.com\r\nSubject: help {n}\r\nMessage-ID: <{n}@c.example>\r\n\r\nplease\r\n").into_bytes()
    }

    /// Run the Maildir intake for `secs` seconds of real time; returns its log.
    async fn run_for(
        secs: f64,
        desk: &Arc<Desk>,
        region: &RegionConfig,
        intake: &MaildirIntake,
        meanwhile: impl FnOnce(),
    ) -> Log {
        let log = Log::default();
        let _guard = tracing::subscriber::set_default(log.subscriber());
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            desk.clone(),
            region.clone(),
            intake.clone(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
        meanwhile();
        tokio::time::sleep(Duration::from_secs_f64(secs / 2.0)).await;
        stop.cancel();
        task.await.unwrap();
        log
    }

    fn intake_state(desk: &Desk) -> (IntakeState, Option<String>) {
        let h = desk.telemetry.intakes().remove(0);
        (h.state, h.last_error)
    }

    /// Issue 16: with the Maildir outside `ReadWritePaths=`, every rename new/ → cur/ failed, the scan still
    /// counted the batch as done and rescanned at once: 34,810 warnings and as many duplicates in 16 s,
    /// while STATUS said `maildir ok`. Now a scan that moves nothing is a failure: one error, backoff, the
    /// region failing.
    #[tokio::test]
    async fn maildir_rename_failure_backs_off_with_one_error_and_the_region_failing() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("jp");
        ensure_layout(&maildir).unwrap();
        std::fs::write(maildir.join("new/100.a.host"), customer_mail(1)).unwrap();
        // A rename onto a non-empty directory fails for root as well (the tests may run as root, for
        // whom a read-only mode is no obstacle).
        std::fs::create_dir_all(maildir.join("cur/100.a.host:2,S/x")).unwrap();
        let (desk, region, intake) = desk_for(dir.path(), &maildir);

        let log = run_for(4.0, &desk, &region, &intake, || {}).await;
        let text = log.text();
        // Scans at 0 s, 1 s and 3 s (backoff 1 s, 2 s): a hot loop made thousands in the same time.
        let scans = log.count("mail stored") + log.count("duplicate mail ignored");
        assert!((1..=4).contains(&scans), "{scans} scans in 4 s:\n{text}");
        assert_eq!(log.count("ERROR"), 1, "{text}");
        assert_eq!(log.count("WARN"), 0, "{text}");
        let error = text.lines().find(|l| l.contains("ERROR")).unwrap();
        assert!(
            error.contains("none could be moved out of new/")
                && error.contains(&maildir.join("new/100.a.host").display().to_string()),
            "{error}"
        );
        assert_eq!(
            intake_state(&desk),
            (IntakeState::Failing, Some("maildir".into()))
        );
        // The mail itself is stored once, and still waits in new/ to be acknowledged.
        assert_eq!(desk.store.tickets(None, None).unwrap().len(), 1);
        assert!(maildir.join("new/100.a.host").exists());
    }

    #[tokio::test]
    async fn a_scan_counts_only_the_files_it_moved() {
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("jp");
        ensure_layout(&maildir).unwrap();
        std::fs::write(maildir.join("new/100.a.host"), customer_mail(1)).unwrap();
        std::fs::write(maildir.join("new/101.b.host"), customer_mail(2)).unwrap();
        std::fs::create_dir_all(maildir.join("cur/101.b.host:2,S/x")).unwrap();
        let (desk, region, intake) = desk_for(dir.path(), &maildir);
        let scan = scan_once(&desk, &region, &maildir, intake.max_message_bytes)
            .await
            .unwrap();
        assert_eq!(scan, Scan { taken: 2, moved: 1 });
        // The next scan takes the one left, moves nothing: an error now, not a success.
        match scan_once(&desk, &region, &maildir, intake.max_message_bytes).await {
            Err(MaildirError::Move { stored: 1, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// Issue 16: a Maildir that could not be created was never tried again (the task ended), and a
    /// directory that exists but cannot be used was "cannot create".
    #[tokio::test]
    async fn maildir_layout_errors_are_retried_until_the_directory_can_be_made() {
        let dir = tempfile::tempdir().unwrap();
        // A file where a parent directory should be: mkdir fails (ENOTDIR) for root too.
        let blocker = dir.path().join("mail");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let maildir = blocker.join("jp");
        let (desk, region, intake) = desk_for(dir.path(), &maildir);
        let fixed = maildir.clone();
        let log = run_for(5.0, &desk, &region, &intake, move || {
            std::fs::remove_file(&blocker).unwrap();
            ensure_layout(&fixed).unwrap();
            std::fs::write(fixed.join("new/100.a.host"), customer_mail(1)).unwrap();
        })
        .await;
        let text = log.text();
        assert_eq!(log.count("ERROR"), 1, "{text}");
        assert!(text.contains("cannot create"), "{text}");
        assert_eq!(log.count("Maildir intake recovered"), 1, "{text}");
        assert_eq!(log.count("mail stored"), 1, "{text}");
        assert!(maildir.join("cur/100.a.host:2,S").exists());
        assert_eq!(intake_state(&desk).0, IntakeState::Idle);
    }

    #[test]
    fn an_existing_directory_that_cannot_be_used_is_cannot_access() {
        let root = Path::new("/var/mail/support-kr");
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        let e = MaildirError::access(&root.join("new"), root, denied);
        let text = e.to_string();
        assert!(
            text.starts_with("cannot access /var/mail/support-kr/new: Permission denied"),
            "{text}"
        );
        assert!(text.contains("ReadWritePaths="), "{text}");
        let rofs = std::io::Error::from_raw_os_error(libc::EROFS);
        let text = MaildirError::Move {
            stored: 3,
            from: root.join("new/1"),
            to: root.join("cur/1:2,S"),
            hint: sandbox_hint(&rofs, root),
            source: rofs,
        }
        .to_string();
        assert!(
            text.contains("cannot rename /var/mail/support-kr/new/1")
                && text.contains("ReadWritePaths=-/var/mail/support-kr"),
            "{text}"
        );
        // A directory where new/ should be is not a directory: said so, not "cannot create".
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("new"), b"").unwrap();
        assert!(matches!(
            ensure_layout(dir.path()),
            Err(MaildirError::NotADirectory(_))
        ));
    }

    /// Issue 16: under the unit's `UMask=0077` the Maildir's directories came out 0700, so an MTA
    /// delivering as a member of the Maildir's group could not write into them.
    #[test]
    fn maildir_subdirectories_are_group_writable_and_setgid_when_the_parent_is() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("mail");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2775)).unwrap();
        let maildir = shared.join("support-kr");
        ensure_layout(&maildir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // 2770 exactly: a mode given to mkdir alone would have lost g+w to any umask but 0.
        for d in ["", "new", "cur", "tmp"] {
            assert_eq!(mode(&maildir.join(d)), 0o2770, "{d}");
        }
        // A private parent: private directories.
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        ensure_layout(&private.join("md")).unwrap();
        for d in ["", "new", "cur", "tmp"] {
            assert_eq!(mode(&private.join("md").join(d)), 0o700, "{d}");
        }
        // An existing Maildir keeps the modes it has.
        std::fs::set_permissions(maildir.join("tmp"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        ensure_layout(&maildir).unwrap();
        assert_eq!(mode(&maildir.join("tmp")), 0o750);
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_starts_over_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(200));
        let waits: Vec<u64> = (0..9).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_secs(1));
        // A long poll interval is its own floor and cap.
        let mut slow = Backoff::new(Duration::from_secs(300));
        assert_eq!(slow.fail(), Duration::from_secs(300));
        assert_eq!(slow.fail(), Duration::from_secs(300));
    }

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
