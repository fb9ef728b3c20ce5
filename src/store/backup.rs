//! Portable backups: one checksummed file that does not depend on sled's on-disk format.
//!
//! A backup holds the primary trees (`meta`, `records`, `tasks`, `history`, `audit`,
//! `psn_log`) as raw
//! key/value pairs; the derived trees (indexes, record counters) are rebuilt on restore, which
//! also repairs any drift in them. IDAT stays sealed, so a backup is no more sensitive than
//! the store, and restoring needs the same IDAT key (checked before the restored store is put
//! in place). Because the format is independent of sled's files, a backup also carries a store
//! across a sled upgrade or out of a sled database that no longer opens.
//!
//! File layout (integers big-endian):
//!
//! ```text
//! "ttp-agent-store-backup\n"          magic, 23 bytes
//! u32 len, JSON header                 {"format":1,"schema_version":..,"created_at":..,"agent_version":..}
//! frames: u8 tree (1..=6), u32 klen, key, u32 vlen, value
//! u8 0                                 end of frames
//! u64 frame count
//! 32 bytes SHA-256 of everything above
//! ```
//!
//! The backup is written to `<file>.partial`, fsynced, then renamed over `<file>`: a crash or a
//! full disk during a backup never leaves a truncated file under the final name. A restore
//! builds the new store in a sibling directory, verifies checksum, key and schema there, and
//! only then renames it into place; it never overwrites an existing store.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::{
    Store, StoreError, StoreOptions, Trees, error, meta, migrate, open_sled, records, tasks,
};

const MAGIC: &[u8] = b"ttp-agent-store-backup\n";
const FORMAT: u32 = 1;
const END: u8 = 0;
const MAX_HEADER: u32 = 64 * 1024;
const MAX_KEY: u32 = 1024 * 1024;
const MAX_VALUE: u32 = 64 * 1024 * 1024;

/// The trees a backup holds, with their frame tags. Never renumber a tag.
fn backed_up(trees: &Trees) -> [(u8, &'static str, &sled::Tree); 6] {
    [
        (1, "meta", &trees.meta),
        (2, "records", &trees.records),
        (3, "tasks", &trees.tasks),
        (4, "history", &trees.history),
        (5, "audit", &trees.audit),
        (6, "psn_log", &trees.psn_log),
    ]
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    schema_version: u64,
    created_at: DateTime<Utc>,
    agent_version: String,
}

/// What a backup holds (returned by both [`Store::backup_to`] and [`Store::restore_from`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    pub schema_version: u64,
    /// When the backup was made.
    pub created_at: DateTime<Utc>,
    pub records: u64,
    pub tasks: u64,
    /// Day × task type history counters.
    pub history_rows: u64,
    pub audit_entries: u64,
    /// Size of the backup file.
    pub bytes: u64,
    /// SHA-256 of the file's content before the checksum, hex (as stored at its end).
    pub sha256: String,
}

impl BackupSummary {
    fn count(&mut self, tag: u8) {
        match tag {
            2 => self.records += 1,
            3 => self.tasks += 1,
            4 => self.history_rows += 1,
            5 => self.audit_entries += 1,
            _ => {}
        }
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    fn put(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.hasher.update(data);
        self.bytes += data.len() as u64;
        self.inner.write_all(data)
    }

    fn put_len(&mut self, len: usize) -> std::io::Result<()> {
        let len = u32::try_from(len)
            .map_err(|_| std::io::Error::other("a key or value is larger than 4 GiB"))?;
        self.put(&len.to_be_bytes())
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    fn take(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_exact(buf)?;
        self.hasher.update(&*buf);
        self.bytes += buf.len() as u64;
        Ok(())
    }

    fn take_u8(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8; 1];
        self.take(&mut b)?;
        Ok(b[0])
    }

    fn take_u32(&mut self) -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    fn take_u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        self.take(&mut b)?;
        Ok(u64::from_be_bytes(b))
    }

    fn take_vec(&mut self, len: u32) -> std::io::Result<Vec<u8>> {
        let mut v = vec![0u8; len as usize];
        self.take(&mut v)?;
        Ok(v)
    }
}

/// `<dir>/<prefix><file name><suffix>`: a sibling of `path` for temporary files.
fn sibling(path: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "store".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!("{prefix}{name}{suffix}"))
}

/// Makes a rename durable: fsync the directory that holds the renamed entry.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

impl Store {
    /// Writes a consistent snapshot of the store to `path` (replacing an existing file there
    /// atomically; mode 0600). Writers wait while the backup runs.
    pub fn backup_to(&self, path: &Path) -> Result<BackupSummary, StoreError> {
        let partial = sibling(path, "", ".partial");
        let result = self.write_backup(&partial);
        let summary = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        let io = |e| error::from_io(path, e);
        std::fs::rename(&partial, path).map_err(io)?;
        sync_parent(path).map_err(io)?;
        Ok(summary)
    }

    fn write_backup(&self, partial: &Path) -> Result<BackupSummary, StoreError> {
        let io = |e| error::from_io(partial, e);
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(partial).map_err(io)?;
        let mut w = HashingWriter {
            inner: BufWriter::new(file),
            hasher: sha2::Sha256::new(),
            bytes: 0,
        };

        // Exclusive from here: no write may land between two trees' iterations.
        let _gate = self.exclusive_gate();
        let header = Header {
            format: FORMAT,
            schema_version: self.schema_version()?,
            created_at: Utc::now(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let header_json = serde_json::to_vec(&header).map_err(|e| StoreError::Codec {
            what: "backup header",
            detail: e.to_string(),
        })?;
        let mut summary = BackupSummary {
            schema_version: header.schema_version,
            created_at: header.created_at,
            records: 0,
            tasks: 0,
            history_rows: 0,
            audit_entries: 0,
            bytes: 0,
            sha256: String::new(),
        };
        w.put(MAGIC).map_err(io)?;
        w.put_len(header_json.len()).map_err(io)?;
        w.put(&header_json).map_err(io)?;
        let mut frames: u64 = 0;
        for (tag, _, tree) in backed_up(&self.trees) {
            for entry in tree.iter() {
                let (key, value) = entry.map_err(|e| self.sled_err(e))?;
                w.put(&[tag]).map_err(io)?;
                w.put_len(key.len()).map_err(io)?;
                w.put(&key).map_err(io)?;
                w.put_len(value.len()).map_err(io)?;
                w.put(&value).map_err(io)?;
                frames += 1;
                summary.count(tag);
            }
        }
        w.put(&[END]).map_err(io)?;
        w.put(&frames.to_be_bytes()).map_err(io)?;
        let digest = w.hasher.finalize();
        w.inner.write_all(&digest).map_err(io)?;
        let file = w.inner.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        summary.bytes = w.bytes + digest.len() as u64;
        summary.sha256 = hex::encode(digest);
        Ok(summary)
    }

    /// Restores `backup` into `opts.path`, which must not hold a store yet (move a damaged
    /// store aside first: [`StoreError::RestoreTargetExists`]). The store is built next to the
    /// target, checked (checksum, schema, IDAT key, derived data rebuilt), and renamed into
    /// place only when complete. No agent may use the target path meanwhile.
    pub fn restore_from(backup: &Path, opts: &StoreOptions) -> Result<BackupSummary, StoreError> {
        let target = opts.path.as_path();
        if holds_data(target)? {
            return Err(StoreError::RestoreTargetExists {
                path: target.to_path_buf(),
            });
        }
        let staging = sibling(target, ".", ".restoring");
        if staging.exists() {
            // Left by an interrupted restore (the name is ours): start over.
            std::fs::remove_dir_all(&staging).map_err(|e| error::from_io(&staging, e))?;
        }
        let summary = match build_restored(backup, &staging, opts) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let io = |e| error::from_io(target, e);
        if target.exists() {
            // An empty directory (checked above): replace it.
            std::fs::remove_dir(target).map_err(io)?;
        }
        std::fs::rename(&staging, target).map_err(io)?;
        sync_parent(target).map_err(io)?;
        // Opening proves the result is a store this build accepts under this key.
        Store::open(opts)?.flush()?;
        Ok(summary)
    }
}

/// Whether `path` exists and is anything but an empty directory.
fn holds_data(path: &Path) -> Result<bool, StoreError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(true),
        Err(e) => Err(error::from_io(path, e)),
    }
}

fn bad(backup: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::BadBackup {
        path: backup.to_path_buf(),
        detail: detail.into(),
    }
}

/// Reads `backup` into a new store at `staging` and checks it.
fn build_restored(
    backup: &Path,
    staging: &Path,
    opts: &StoreOptions,
) -> Result<BackupSummary, StoreError> {
    let file = File::open(backup).map_err(|e| error::from_io(backup, e))?;
    let mut r = HashingReader {
        inner: BufReader::new(file),
        hasher: sha2::Sha256::new(),
        bytes: 0,
    };
    let truncated = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(backup, "the file ends early (truncated copy?)")
        } else {
            error::from_io(backup, e)
        }
    };

    let mut magic = [0u8; MAGIC.len()];
    r.take(&mut magic)
        .map_err(|_| bad(backup, "not a ttp-agent store backup"))?;
    if magic != MAGIC {
        return Err(bad(backup, "not a ttp-agent store backup"));
    }
    let header_len = r.take_u32().map_err(truncated)?;
    if header_len > MAX_HEADER {
        return Err(bad(backup, "the header length is implausible"));
    }
    let header: Header = serde_json::from_slice(&r.take_vec(header_len).map_err(truncated)?)
        .map_err(|e| bad(backup, format!("the header does not decode: {e}")))?;
    if header.format != FORMAT {
        return Err(bad(
            backup,
            format!(
                "backup format {} is not supported by this version (it reads format {FORMAT})",
                header.format
            ),
        ));
    }
    if header.schema_version > migrate::CURRENT_SCHEMA {
        return Err(StoreError::SchemaTooNew {
            found: header.schema_version,
            supported: migrate::CURRENT_SCHEMA,
        });
    }

    super::create_private_dir(staging)?;
    let db = open_sled(staging, opts.cache_capacity, opts.lock_wait)?;
    let trees = Trees::open(&db, staging)?;
    let sled_err = |e| error::from_sled(staging, e);
    let mut summary = BackupSummary {
        schema_version: header.schema_version,
        created_at: header.created_at,
        records: 0,
        tasks: 0,
        history_rows: 0,
        audit_entries: 0,
        bytes: 0,
        sha256: String::new(),
    };
    let targets = backed_up(&trees);
    let mut frames: u64 = 0;
    loop {
        let tag = r.take_u8().map_err(truncated)?;
        if tag == END {
            break;
        }
        let Some(slot) = targets.iter().position(|(t, _, _)| *t == tag) else {
            return Err(bad(
                backup,
                format!("unknown tree tag {tag} in frame {frames}"),
            ));
        };
        let key_len = r.take_u32().map_err(truncated)?;
        if key_len > MAX_KEY {
            return Err(bad(
                backup,
                format!("frame {frames} has an implausible key length"),
            ));
        }
        let key = r.take_vec(key_len).map_err(truncated)?;
        let value_len = r.take_u32().map_err(truncated)?;
        if value_len > MAX_VALUE {
            return Err(bad(
                backup,
                format!("frame {frames} has an implausible value length"),
            ));
        }
        let value = r.take_vec(value_len).map_err(truncated)?;
        // Single inserts: a large `sled::Batch` holds every page version it replaces in memory
        // until it ends; atomicity is not needed in a staging directory that is discarded on
        // any error.
        targets[slot].2.insert(key, value).map_err(sled_err)?;
        frames += 1;
        summary.count(tag);
    }
    let declared = r.take_u64().map_err(truncated)?;
    let computed = r.hasher.clone().finalize();
    let mut stored = [0u8; 32];
    r.inner.read_exact(&mut stored).map_err(truncated)?;
    if computed.as_slice() != stored {
        return Err(bad(
            backup,
            "the checksum does not match (the file is damaged)",
        ));
    }
    if declared != frames {
        return Err(bad(backup, "the entry count does not match"));
    }
    let mut rest = [0u8; 1];
    if r.inner
        .read(&mut rest)
        .map_err(|e| error::from_io(backup, e))?
        != 0
    {
        return Err(bad(backup, "unexpected data after the checksum"));
    }
    summary.bytes = r.bytes + stored.len() as u64;
    summary.sha256 = hex::encode(stored);

    migrate::bring_up_to_date(&trees, staging)?;
    records::rebuild_derived(&trees, staging)?;
    tasks::rebuild_open_index(&trees, staging)?;
    meta::verify_or_install_key_check(&trees, &opts.idat_key.cipher(), staging)?;
    super::durable_flush(&db, staging)?;
    Ok(summary)
}

/// What [`Store::compact`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CompactSummary {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl Store {
    /// Rewrites the store compactly: a backup restored into a fresh directory that then takes
    /// the store's place. No other process may use the store meanwhile (it stays locked).
    ///
    /// sled reclaims space slowly (see the module documentation), and random-key index inserts
    /// leave much garbage behind; a restored store is written in key order and is typically
    /// 40% smaller (measured: 1,000,000 records, 4.2x raw size after the import, 2.6x after a
    /// compaction). Worth running after a bulk import and from time to time (e.g. monthly).
    ///
    /// The switch is one atomic directory exchange (`renameat2(RENAME_EXCHANGE)`, Linux): after
    /// a crash the path holds either the old or the new store, never neither. Where the file
    /// system cannot exchange directories, the store is left as it was and an error says so.
    pub fn compact(opts: &StoreOptions) -> Result<CompactSummary, StoreError> {
        let path = opts.path.as_path();
        let backup = sibling(path, ".", ".compact-backup");
        let staging = StoreOptions {
            path: sibling(path, ".", ".compacting"),
            ..opts.clone()
        };
        let store = Store::open(opts)?;
        let bytes_before = store.size_on_disk()?;
        if staging.path.exists() {
            // Left by an interrupted compaction (the name is ours): start over.
            std::fs::remove_dir_all(&staging.path).map_err(|e| error::from_io(&staging.path, e))?;
        }
        let built = store
            .backup_to(&backup)
            .and_then(|_| Store::restore_from(&backup, &staging));
        let _ = std::fs::remove_file(&backup);
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&staging.path);
            return Err(e);
        }
        // Hold the old store's lock across the switch: no process may write to it between
        // releasing the store and the exchange (such writes would be lost).
        drop(store);
        let switched = hold_lock(path).and_then(|_lock| exchange_dirs(&staging.path, path));
        if let Err(e) = switched {
            let _ = std::fs::remove_dir_all(&staging.path);
            return Err(e);
        }
        // The staging path now holds the old store.
        std::fs::remove_dir_all(&staging.path).map_err(|e| error::from_io(&staging.path, e))?;
        let bytes_after = Store::open(opts)?.size_on_disk()?;
        Ok(CompactSummary {
            bytes_before,
            bytes_after,
        })
    }
}

/// An exclusive `flock` on the store's `db` file (the lock sled takes), held until dropped.
struct HeldLock {
    _file: File,
}

#[cfg(unix)]
fn hold_lock(path: &Path) -> Result<HeldLock, StoreError> {
    use std::os::fd::AsRawFd as _;
    let db = path.join("db");
    let file = File::open(&db).map_err(|e| error::from_io(&db, e))?;
    // sled's pool threads may keep the just-dropped database's file open for a moment.
    for attempt in 0..=100 {
        // SAFETY: flock on a file descriptor this function owns (`file` outlives the call).
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(HeldLock { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) || attempt == 100 {
            return Err(match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => StoreError::Locked {
                    path: path.to_path_buf(),
                },
                _ => error::from_io(&db, e),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(StoreError::Locked {
        path: path.to_path_buf(),
    })
}

#[cfg(not(unix))]
fn hold_lock(path: &Path) -> Result<HeldLock, StoreError> {
    let db = path.join("db");
    File::open(&db)
        .map(|f| HeldLock { _file: f })
        .map_err(|e| error::from_io(&db, e))
}

/// Atomically exchanges two directories.
#[cfg(target_os = "linux")]
fn exchange_dirs(a: &Path, b: &Path) -> Result<(), StoreError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|_| StoreError::Invalid {
            what: "store path",
            why: format!("{} contains a NUL byte", p.display()),
        })
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: renameat2 reads two NUL-terminated paths that live until the call returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return sync_parent(b).map_err(|e| error::from_io(b, e));
    }
    let e = std::io::Error::last_os_error();
    Err(match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => StoreError::Invalid {
            what: "compaction",
            why: format!(
                "the file system of {} cannot exchange directories atomically; compact by hand: back up, restore into a new path, and point the configuration at it",
                b.display()
            ),
        },
        _ => error::from_io(b, e),
    })
}

#[cfg(not(target_os = "linux"))]
fn exchange_dirs(_a: &Path, b: &Path) -> Result<(), StoreError> {
    Err(StoreError::Invalid {
        what: "compaction",
        why: format!(
            "compacting {} in place needs Linux; back up, restore into a new path, and point the configuration at it",
            b.display()
        ),
    })
}
