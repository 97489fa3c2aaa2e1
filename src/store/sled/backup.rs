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
//! ```
//! `next_id` is above every id the store handed out (outbox rows, blobs); a restored store continues there
//! so no id repeats. The manifest is written last: a directory without one is an unfinished backup.
//!
//! [`restore`] refuses a storage path that holds anything, checks the manifest's version and every file's
//! sha256 and record count before it writes a single record, then imports tree by tree and flushes.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::keys::u64_of;
use super::{engine_error, Store};
use crate::store::StoreError;

/// The format name in the manifest.
pub const FORMAT: &str = "postdesk-backup";
/// The format version this postdesk writes and reads.
pub const VERSION: u32 = 1;

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

/// Create `path` as a directory only its owner can enter (0700 whatever the umask); it may exist if empty.
pub fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    if path.exists() {
        let mut entries = std::fs::read_dir(path).map_err(io(path))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(path.to_path_buf()));
        }
    } else {
        std::fs::create_dir_all(path).map_err(io(path))?;
    }
    set_mode(path, 0o700)
}

/// Create a new file only its owner can read (0600 whatever the umask).
pub fn create_private_file(path: &Path) -> Result<File, BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(path).map_err(io(path))?;
    set_mode(path, 0o600)?;
    Ok(file)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), BackupError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    }
    let _ = (path, mode);
    Ok(())
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
    /// Write a consistent copy of every tree into `dir` (new or empty). Writes wait meanwhile.
    pub fn backup(&self, dir: &Path) -> Result<Manifest, BackupError> {
        create_private_dir(dir)?;
        let trees_dir = dir.join("trees");
        create_private_dir(&trees_dir)?;
        let _exclusive = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let mut manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            created_at: Utc::now(),
            postdesk_version: env!("CARGO_PKG_VERSION").into(),
            next_id: self.next_id()?,
            trees: Vec::new(),
        };
        let mut names = self.db.tree_names();
        names.sort();
        for (i, name) in names.iter().enumerate() {
            let tree = self.db.open_tree(name).map_err(db)?;
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
        let final_path = dir.join("manifest.json");
        std::fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(manifest)
    }
}

/// Read and check a backup's manifest and every file's checksum and records, writing nothing.
pub fn verify(dir: &Path) -> Result<Manifest, BackupError> {
    let path = dir.join("manifest.json");
    let bad = |reason: String| BackupError::Manifest {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read(&path).map_err(io(&path))?;
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
        let mut hash = Sha256::new();
        let mut f = File::open(&file).map_err(io(&file))?;
        std::io::copy(&mut f, &mut hash).map_err(io(&file))?;
        if hex::encode(hash.finalize()) != entry.sha256 {
            return Err(damaged("sha256 differs from the manifest".into()));
        }
        let mut r = BufReader::new(File::open(&file).map_err(io(&file))?);
        let mut records = 0u64;
        while read_record(&mut r)
            .map_err(|e| damaged(e.to_string()))?
            .is_some()
        {
            records += 1;
        }
        if records != entry.records {
            return Err(damaged(format!(
                "{records} records, the manifest says {}",
                entry.records
            )));
        }
    }
    Ok(manifest)
}

/// Restore the backup in `dir` into `storage` (absent or empty). Returns the manifest.
pub fn restore(dir: &Path, storage: &Path) -> Result<Manifest, BackupError> {
    let manifest = verify(dir)?;
    if storage.exists() {
        let mut entries = std::fs::read_dir(storage).map_err(io(storage))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(storage.to_path_buf()));
        }
    }
    let store = Store::open(storage)?;
    for entry in &manifest.trees {
        let name = hex::decode(&entry.name_hex).unwrap_or_default();
        let tree = store.db.open_tree(name).map_err(db)?;
        let file = dir.join(&entry.file);
        let mut r = BufReader::new(File::open(&file).map_err(io(&file))?);
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
    // Ids continue above the backup's (see the module docs).
    let current = store
        .meta
        .get(b"id_offset")
        .map_err(db)?
        .and_then(|v| u64_of(&v))
        .unwrap_or(0);
    store
        .meta
        .insert(b"id_offset", &current.max(manifest.next_id).to_be_bytes())
        .map_err(db)?;
    store.flush()?;
    Ok(manifest)
}
