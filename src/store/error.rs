//! The store's error type and the mapping from redb and I/O errors to it.
//!
//! Callers branch on a few variants (`Locked`, `NotWritable`, `DiskFull`, `Corrupt`,
//! `SchemaTooNew`, `WrongKey`): each says what happened *and what the operator should do*,
//! because these messages end up in front of a site's IT staff at start-up. No message ever
//! contains IDAT, key material or the content of a key file.

use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (almost always a running agent) holds the store's lock file.
    #[error(
        "the store at {} is locked by another process: is ttp-agent already running? Stop it (`systemctl stop ttp-agent`), run this command again, then start it (`systemctl start ttp-agent`)",
        path.display()
    )]
    Locked { path: PathBuf },

    /// The directory holds a store of the sled-based development builds, which this version
    /// cannot read.
    #[error(
        "the store at {} was written by a development build of ttp-agent that kept it in sled (files `db` and `conf`); this version keeps the store in redb and cannot read it. No release wrote such a store: move the directory aside (keep it as long as you may need it) and start the agent again to create a new store, then submit the records again",
        path.display()
    )]
    SledStore { path: PathBuf },

    /// The store directory (or a file in it) cannot be created or written.
    #[error(
        "cannot create or write the store at {}: {source}; check that the directory exists, is a directory, and is writable by the agent's user",
        path.display()
    )]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file system holding the store is full (ENOSPC / EDQUOT).
    #[error(
        "the disk holding the store at {} is full: free space on that file system (the store needs room to write before it can reclaim any) and restart the agent",
        path.display()
    )]
    DiskFull { path: PathBuf },

    /// redb reported corruption, or a stored value does not decode.
    #[error(
        "the store at {} is corrupt or unreadable ({detail}); stop the agent and restore the latest backup with `ttp-agent restore --force BACKUP` (it moves the damaged directory aside for analysis, it deletes nothing)",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    /// The store was written by a newer agent version with a layout this version cannot read.
    #[error(
        "the store has schema version {found}, but this ttp-agent supports at most {supported}: run the newer ttp-agent that wrote it, or restore a backup made by this version"
    )]
    SchemaTooNew { found: u64, supported: u64 },

    /// The configured IDAT key is not the key the store's IDAT was sealed with.
    #[error(
        "the configured IDAT key does not match this store (its IDAT was sealed under a different key): configure the key file the store was created with; a store cannot be read without its key"
    )]
    WrongKey,

    /// The IDAT key file cannot be read or does not hold a key.
    #[error("IDAT key file {}: {problem}", path.display())]
    KeyFile { path: PathBuf, problem: String },

    /// Any other I/O error.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A value could not be encoded for writing (the store is unchanged).
    #[error("cannot encode {what}: {detail}")]
    Codec { what: &'static str, detail: String },

    /// `update_records` was given a record the store does not hold.
    #[error("no record with local id {local_id:?} is stored; insert it first")]
    UnknownRecord { local_id: String },

    /// The caller passed something the store refuses to keep (e.g. an empty local id).
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },

    /// A backup file is not a ttp-agent store backup, is truncated, or fails its checksum.
    #[error(
        "backup file {} cannot be used: {detail}; use another backup (the target store was not changed)",
        path.display()
    )]
    BadBackup { path: PathBuf, detail: String },

    /// `restore_from` never overwrites a store.
    #[error(
        "refusing to restore into {}: it already holds a store; move it aside first (the restore writes a fresh store there)",
        path.display()
    )]
    RestoreTargetExists { path: PathBuf },
}

/// Maps an I/O error that happened while working on the store at `path`.
pub(crate) fn from_io(path: &Path, source: io::Error) -> StoreError {
    let path = path.to_path_buf();
    if is_disk_full(&source) {
        return StoreError::DiskFull { path };
    }
    match source.kind() {
        // `AlreadyExists`: creating the store directory found a file in its place.
        io::ErrorKind::PermissionDenied
        | io::ErrorKind::ReadOnlyFilesystem
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::AlreadyExists => StoreError::NotWritable { path, source },
        _ => StoreError::Io { path, source },
    }
}

fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Maps a redb error for the store at `path`.
pub(crate) fn from_redb(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    match e.into() {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => {
            StoreError::Locked {
                path: path.to_path_buf(),
            }
        }
        // redb reports a file that is not a database (bad magic number) this way.
        redb::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
            corrupt(format!("redb cannot read the file: {io}"))
        }
        redb::Error::Io(io) => from_io(path, io),
        redb::Error::Corrupted(what) => corrupt(format!("redb found the file corrupt: {what}")),
        redb::Error::UpgradeRequired(v) => corrupt(format!(
            "the database file has redb format {v}, which this build does not read"
        )),
        // An earlier write failed (full disk, I/O error): redb refuses further writes in this
        // process, and the operator's remedy is the one of the earlier error plus a restart.
        redb::Error::PreviousIo => StoreError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(
                "an earlier write to the store failed (disk full or I/O error); fix that and restart the agent",
            ),
        },
        redb::Error::ValueTooLarge(n) => StoreError::Invalid {
            what: "store value",
            why: format!("{n} bytes are more than the store takes in one value"),
        },
        other => corrupt(format!("redb: {other}")),
    }
}

/// A stored value that does not decode: the store is damaged (or was written by a buggy
/// version); never a reason to panic.
pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/var/lib/ttp-agent/store")
    }

    #[test]
    fn lock_failure_maps_to_locked_and_tells_what_to_do() {
        let e = from_redb(p(), redb::Error::DatabaseAlreadyOpen);
        assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("/var/lib/ttp-agent/store"), "{msg}");
        assert!(msg.contains("already running"), "{msg}");
    }

    #[test]
    fn enospc_and_quota_map_to_disk_full() {
        for code in [libc::ENOSPC, libc::EDQUOT] {
            let e = from_redb(p(), redb::Error::Io(io::Error::from_raw_os_error(code)));
            assert!(matches!(e, StoreError::DiskFull { .. }), "{code}: {e:?}");
        }
    }

    #[test]
    fn permission_problems_map_to_not_writable() {
        for code in [
            libc::EACCES,
            libc::EPERM,
            libc::EROFS,
            libc::ENOTDIR,
            libc::EEXIST,
        ] {
            let e = from_io(p(), io::Error::from_raw_os_error(code));
            assert!(matches!(e, StoreError::NotWritable { .. }), "{code}: {e:?}");
        }
        let e = from_io(p(), io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(e, StoreError::Io { .. }), "{e:?}");
    }

    #[test]
    fn redb_corruption_maps_to_corrupt_naming_path_and_remedy() {
        let e = from_redb(p(), redb::Error::Corrupted("bad checksum".into()));
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(msg.contains("/var/lib/ttp-agent/store"), "{msg}");
        assert!(msg.contains("restore"), "{msg}");
    }

    #[test]
    fn a_sled_store_is_named_with_what_to_do() {
        let msg = StoreError::SledStore {
            path: p().to_path_buf(),
        }
        .to_string();
        assert!(
            msg.contains("sled") && msg.contains("move the directory aside"),
            "{msg}"
        );
    }
}
