//! Backup and restore: a consistent copy of every tree, in a documented, versioned format.
//!
//! `postdesk backup DIR` runs inside the daemon when one runs (the daemon holds the store): [`Store::backup`]
//! takes the store's write gate exclusively, so no transaction lands while the trees are copied one by one,
//! and the copy is one state of the store. Mail arriving meanwhile waits in its source (IMAP, Maildir, the
//! MTA's queue) — nothing is lost, it is only delayed by the seconds the copy takes.
//!
//! The format (version 1), in a directory created 0700 with files 0600:
//! ```text
//! DIR/manifest.json      {"format": "postdesk-backup", "version": 1, "created_at": RFC 3339,
//!                         "postdesk_version": "0.1.0", "next_id": N,
//!                         "trees": [{"name": "tickets", "name_hex": "…", "file": "trees/000.bin",
//!                                    "records": N, "bytes": N, "sha256": "…"}, …]}
//! DIR/trees/NNN.bin      records, each: key length (u32 big-endian), key, value length (u32 BE), value
//! DIR/manifest.hmac      only with `[storage] backup_key_file`: HMAC-SHA256 of manifest.json's bytes, hex
//! ```
//! `next_id` is above every id the store handed out (outbox rows, quarantine entries, blobs); a restored
//! store continues there so no id repeats. The manifest is written last: a directory without one is an unfinished backup.
//!
//! DIR must be new, or an empty real directory (not a symbolic link) owned by the user writing it: a
//! directory someone else prepared could be read by them, or swapped under us.
//!
//! [`restore`] refuses a storage path that holds anything, checks the manifest's version and every file's
//! sha256 and record count before it writes a single record, then imports tree by tree and flushes. A
//! backup is untrusted input: its files are opened without following symbolic links (`O_NOFOLLOW`) and
//! without blocking (a FIFO), must be regular files of exactly the size the manifest gives, and are read
//! through that size only, so a link to `/dev/zero` or a growing file cannot hang the restore. sha256 sums
//! catch damage, not tampering (anyone can recompute them): with a [`BackupKey`] the manifest must carry
//! the HMAC under that key, so a manifest changed by someone without the key is refused.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::u64_of;
use super::{engine_error, Store};
use crate::store::StoreError;

/// The format name in the manifest.
pub const FORMAT: &str = "postdesk-backup";
/// The format version this postdesk writes and reads.
pub const VERSION: u32 = 1;
/// The largest manifest read: a real one is a few KiB (one entry per tree).
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// The largest key file read: a key is a line of random text.
const MAX_KEY_BYTES: u64 = 4096;
/// The shortest key accepted: below this an HMAC is guessable.
const MIN_KEY_BYTES: usize = 16;
/// The signature file next to the manifest.
const HMAC_FILE: &str = "manifest.hmac";

/// Why a backup or restore failed. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not empty: a backup goes into a new or empty directory, and a restore into a new or empty storage.path")]
    NotEmpty(PathBuf),
    #[error("{0} is a symbolic link: name the real directory (a new one, or an empty one this user owns)")]
    Symlink(PathBuf),
    #[error(
        "{0} exists and is not a directory: name a new directory, or an empty one this user owns"
    )]
    NotADirectory(PathBuf),
    #[error("{path} belongs to user id {owner}, not to this user (id {me}): name a new directory, or an empty one this user owns (files written into another user's directory can be read or replaced by them)")]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    #[error("backup key {path}: {reason}; `[storage] backup_key_file` names a file of at least 16 bytes (e.g. `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE`)")]
    Key { path: PathBuf, reason: String },
    #[error("{path}: {reason}; nothing was restored — use a backup written with this `[storage] backup_key_file`, or restore without the key only if you trust where the backup has been")]
    Unsigned { path: PathBuf, reason: String },
    #[error("{path} is not a postdesk backup: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("backup file {file} is damaged ({reason}); nothing was restored — use another backup")]
    Damaged { file: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sled's error as ours (no sled type in the public API, not even in a `From`).
fn db(e: sled::Error) -> BackupError {
    BackupError::Store(engine_error(e))
}

/// One tree in the manifest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TreeEntry {
    /// The tree's name, for people.
    pub name: String,
    /// The exact name bytes, hex.
    pub name_hex: String,
    /// The file, relative to the backup directory.
    pub file: String,
    pub records: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub created_at: DateTime<Utc>,
    pub postdesk_version: String,
    pub next_id: u64,
    pub trees: Vec<TreeEntry>,
}

/// Create `path` as a directory only its owner can enter (0700 whatever the umask). It may exist if it is
/// an empty real directory owned by this user; a symbolic link, another user's directory or one holding
/// anything is refused.
pub fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    match builder.create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // lstat: the link itself, never where it points.
            let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
            if meta.file_type().is_symlink() {
                return Err(BackupError::Symlink(path.to_path_buf()));
            }
            if !meta.is_dir() {
                return Err(BackupError::NotADirectory(path.to_path_buf()));
            }
            check_owner(path, &meta)?;
            let mut entries = std::fs::read_dir(path).map_err(io(path))?;
            if entries.next().is_some() {
                return Err(BackupError::NotEmpty(path.to_path_buf()));
            }
        }
        Err(e) => return Err(io(path)(e)),
    }
    // chmod through a descriptor opened without following a link, so a directory swapped for a link
    // since the check above is refused rather than followed.
    let dir = open_nofollow(path, true).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => BackupError::Symlink(path.to_path_buf()),
        _ => io(path)(e),
    })?;
    let meta = dir.metadata().map_err(io(path))?;
    check_owner(path, &meta)?;
    set_file_mode(&dir, path, 0o700)
}

/// The running user must own `meta`'s file.
fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(BackupError::NotOwned {
                path: path.to_path_buf(),
                owner: meta.uid(),
                me,
            });
        }
    }
    let _ = (path, meta);
    Ok(())
}

/// Open `path` read-only without following a final symbolic link and without blocking on a FIFO.
fn open_nofollow(path: &Path, directory: bool) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
        if directory {
            flags |= libc::O_DIRECTORY;
        }
        options.custom_flags(flags);
    }
    let _ = directory;
    options.open(path)
}

/// Create a new file only its owner can read (0600 whatever the umask). An existing name, a symbolic link
/// included, is refused (`O_EXCL`).
pub fn create_private_file(path: &Path) -> Result<File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    }
    let file = options.open(path).map_err(io(path))?;
    set_file_mode(&file, path, 0o600)?;
    Ok(file)
}

fn set_file_mode(file: &File, path: &Path, mode: u32) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io(path))?;
    }
    let _ = (file, path, mode);
    Ok(())
}

/// The admin's secret for signing and checking backups (`[storage] backup_key_file`).
pub struct BackupKey(Vec<u8>);

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackupKey(…)")
    }
}

impl BackupKey {
    /// Read the key from `path`: the file's bytes, a trailing newline removed, at least 16 bytes.
    pub fn read(path: &Path) -> Result<BackupKey, BackupError> {
        let bad = |reason: String| BackupError::Key {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = read_regular(path, MAX_KEY_BYTES).map_err(|e| bad(e.to_string()))?;
        let mut bytes = bytes;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.len() < MIN_KEY_BYTES {
            return Err(bad(format!("{} bytes, too short", bytes.len())));
        }
        Ok(BackupKey(bytes))
    }

    /// A key from bytes (tests, tools).
    pub fn from_bytes(bytes: &[u8]) -> BackupKey {
        BackupKey(bytes.to_vec())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC accepts any key length")
    }
}

/// Why a file of a backup cannot be read as one.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    #[error("a symbolic link; a backup holds regular files only")]
    Symlink,
    #[error("not a regular file")]
    NotRegular,
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Open a file of an untrusted directory: no link followed, no FIFO waited on, regular files only.
fn open_regular(path: &Path) -> Result<(File, u64), Untrusted> {
    let file = open_nofollow(path, false).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) => Untrusted::Symlink,
        _ => Untrusted::Io(e),
    })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(Untrusted::NotRegular);
    }
    Ok((file, meta.len()))
}

/// The whole of a small regular file, read through at most `max` bytes.
fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, Untrusted> {
    let (file, _) = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(Untrusted::TooLarge(max));
    }
    Ok(bytes)
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_record(w: &mut impl Write, key: &[u8], value: &[u8]) -> std::io::Result<()> {
    for part in [key, value] {
        let len = u32::try_from(part.len())
            .map_err(|_| std::io::Error::other("record larger than 4 GiB"))?;
        w.write_all(&len.to_be_bytes())?;
        w.write_all(part)?;
    }
    Ok(())
}

/// Read one record; `None` at a clean end of file.
fn read_record(r: &mut impl Read) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let mut parts = Vec::with_capacity(2);
    for i in 0..2 {
        let mut len = [0u8; 4];
        if i == 0 {
            // A clean end is only allowed before a record.
            let n = r.read(&mut len[..1])?;
            if n == 0 {
                return Ok(None);
            }
            r.read_exact(&mut len[1..])?;
        } else {
            r.read_exact(&mut len)?;
        }
        let len = u32::from_be_bytes(len) as usize;
        let mut buf = Vec::new();
        r.by_ref().take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated record",
            ));
        }
        parts.push(buf);
    }
    let value = parts.pop().unwrap_or_default();
    let key = parts.pop().unwrap_or_default();
    Ok(Some((key, value)))
}

impl Store {
    /// Write a consistent copy of every tree into `dir` (new, or empty and ours). Writes wait meanwhile.
    /// With `key`, the manifest is signed (`manifest.hmac`).
    pub fn backup(&self, dir: &Path, key: Option<&BackupKey>) -> Result<Manifest, BackupError> {
        create_private_dir(dir)?;
        let trees_dir = dir.join("trees");
        create_private_dir(&trees_dir)?;
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_at: Utc::now(),
            postdesk_version: env!("CARGO_PKG_VERSION").into(),
            next_id: self.h()?.ids_high_water()?,
            trees: Vec::new(),
        };
        let mut names = self.h()?.db.tree_names();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            let tree = self.h()?.db.open_tree(name).map_err(db)?;
            let rel = format!("trees/{i:03}.bin");
            let path = dir.join(&rel);
            let file = create_private_file(&path)?;
            let mut w = Hashing {
                inner: BufWriter::new(file),
                hash: Sha256::new(),
                bytes: 0,
            };
            let mut records = 0u64;
            for kv in tree.iter() {
                let (k, v) = kv.map_err(db)?;
                write_record(&mut w, &k, &v).map_err(io(&path))?;
                records += 1;
            }
            w.flush().map_err(io(&path))?;
            let file = w
                .inner
                .into_inner()
                .map_err(|e| io(&path)(e.into_error()))?;
            file.sync_all().map_err(io(&path))?;
            manifest.trees.push(TreeEntry {
                name: String::from_utf8_lossy(name).into_owned(),
                name_hex: hex::encode(name),
                file: rel,
                records,
                bytes: w.bytes,
                sha256: hex::encode(w.hash.finalize()),
            });
        }
        drop(_exclusive);
        // The manifest last, under its final name only when complete.
        let tmp = dir.join("manifest.json.tmp");
        let mut f = create_private_file(&tmp)?;
        let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Manifest {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        f.write_all(&text).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        if let Some(key) = key {
            let mut mac = key.mac();
            mac.update(&text);
            let path = dir.join(HMAC_FILE);
            let mut h = create_private_file(&path)?;
            h.write_all(format!("{}\n", hex::encode(mac.finalize().into_bytes())).as_bytes())
                .and_then(|_| h.sync_all())
                .map_err(io(&path))?;
        }
        let final_path = dir.join("manifest.json");
        std::fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(manifest)
    }
}

/// Read and check a backup's manifest and every file's size, checksum and records, writing nothing. With
/// `key`, the manifest's HMAC must verify under it.
pub fn verify(dir: &Path, key: Option<&BackupKey>) -> Result<Manifest, BackupError> {
    verify_open(dir, key).map(|(m, _)| m)
}

/// [`verify`], returning the opened tree files too: the restore reads the very files it checked.
fn verify_open(dir: &Path, key: Option<&BackupKey>) -> Result<(Manifest, Vec<File>), BackupError> {
    let path = dir.join("manifest.json");
    let bad = |reason: String| BackupError::Manifest {
        path: path.clone(),
        reason,
    };
    let text = read_regular(&path, MAX_MANIFEST_BYTES).map_err(|e| match e {
        Untrusted::Io(e) => io(&path)(e),
        e => bad(e.to_string()),
    })?;
    if let Some(key) = key {
        let hmac_path = dir.join(HMAC_FILE);
        let unsigned = |reason: String| BackupError::Unsigned {
            path: hmac_path.clone(),
            reason,
        };
        let sig = match read_regular(&hmac_path, 1024) {
            Ok(sig) => sig,
            Err(Untrusted::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(unsigned(
                    "missing: the backup is not signed, and `[storage] backup_key_file` is set"
                        .into(),
                ))
            }
            Err(e) => return Err(unsigned(e.to_string())),
        };
        let sig = hex::decode(String::from_utf8_lossy(&sig).trim())
            .map_err(|_| unsigned("not a hex HMAC".into()))?;
        let mut mac = key.mac();
        mac.update(&text);
        // Constant-time comparison.
        mac.verify_slice(&sig).map_err(|_| {
            unsigned("the manifest's HMAC does not match: the manifest was changed, or signed with another key".into())
        })?;
    }
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| bad(format!("unreadable manifest: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!("format is {:?}", manifest.format)));
    }
    if manifest.version != VERSION {
        return Err(bad(format!(
            "format version {} (this postdesk {} reads version {VERSION})",
            manifest.version,
            env!("CARGO_PKG_VERSION")
        )));
    }
    // `trees/` itself must be a real directory: a link would lead every file elsewhere.
    let trees = dir.join("trees");
    match std::fs::symlink_metadata(&trees) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(BackupError::Damaged {
                file: trees,
                reason: "not a real directory (a symbolic link?)".into(),
            })
        }
        Err(e) if manifest.trees.is_empty() && e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&trees)(e)),
    }
    let mut files = Vec::with_capacity(manifest.trees.len());
    for entry in &manifest.trees {
        // Only files of the backup itself: a manifest naming `../x` is refused.
        let safe = entry.file.starts_with("trees/")
            && entry.file.len() > 6
            && !entry.file[6..].contains(['/', '\\'])
            && !entry.file.contains("..");
        if !safe || hex::decode(&entry.name_hex).is_err() {
            return Err(bad(format!("bad tree entry {:?}", entry.name)));
        }
        let file = dir.join(&entry.file);
        let damaged = |reason: String| BackupError::Damaged {
            file: file.clone(),
            reason,
        };
        let (mut f, size) = open_regular(&file).map_err(|e| match e {
            Untrusted::Io(e) => io(&file)(e),
            e => damaged(e.to_string()),
        })?;
        if size != entry.bytes {
            return Err(damaged(format!(
                "{size} bytes, the manifest says {}",
                entry.bytes
            )));
        }
        // One pass: hash and count records, reading at most one byte more than the manifest's size.
        let mut r = HashingReader {
            inner: BufReader::new((&mut f).take(entry.bytes + 1)),
            hash: Sha256::new(),
            bytes: 0,
        };
        let mut records = 0u64;
        while read_record(&mut r)
            .map_err(|e| damaged(e.to_string()))?
            .is_some()
        {
            records += 1;
        }
        if r.bytes != entry.bytes {
            return Err(damaged(format!(
                "{} bytes read, the manifest says {}",
                r.bytes, entry.bytes
            )));
        }
        if hex::encode(r.hash.finalize()) != entry.sha256 {
            return Err(damaged("sha256 differs from the manifest".into()));
        }
        if records != entry.records {
            return Err(damaged(format!(
                "{records} records, the manifest says {}",
                entry.records
            )));
        }
        f.rewind().map_err(io(&file))?;
        files.push(f);
    }
    Ok((manifest, files))
}

/// A reader that hashes and counts what passes through.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Restore the backup in `dir` into `storage` (absent or empty). Returns the manifest. With `key`, only a
/// backup signed under it is restored.
pub fn restore(
    dir: &Path,
    storage: &Path,
    key: Option<&BackupKey>,
) -> Result<Manifest, BackupError> {
    let (manifest, files) = verify_open(dir, key)?;
    if storage.exists() {
        let mut entries = std::fs::read_dir(storage).map_err(io(storage))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(storage.to_path_buf()));
        }
    }
    let store = Store::open(storage)?;
    for (entry, f) in manifest.trees.iter().zip(files) {
        let name = hex::decode(&entry.name_hex).unwrap_or_default();
        let tree = store.h()?.db.open_tree(name).map_err(db)?;
        let file = dir.join(&entry.file);
        let mut r = BufReader::new(f.take(entry.bytes));
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        while let Some((k, v)) = read_record(&mut r).map_err(|e| BackupError::Damaged {
            file: file.clone(),
            reason: e.to_string(),
        })? {
            batch.insert(k, v);
            in_batch += 1;
            if in_batch == 10_000 {
                tree.apply_batch(std::mem::take(&mut batch)).map_err(db)?;
                in_batch = 0;
            }
        }
        tree.apply_batch(batch).map_err(db)?;
    }
    // Ids continue above the backup's (see the module docs), each kind's sequence at least at `next_id`
    // (a backup from before the sequences has none of them in its `meta`).
    let h = store.h()?;
    for kind in super::Ids::ALL {
        let current = h.meta.get(kind.key()).map_err(db)?.and_then(|v| u64_of(&v));
        let next = current.unwrap_or(1).max(manifest.next_id);
        h.meta.insert(kind.key(), &next.to_be_bytes()).map_err(db)?;
    }
    store.flush()?;
    Ok(manifest)
}
