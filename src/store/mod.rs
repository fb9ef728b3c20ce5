//! The embedded store: everything the agent must not lose or do twice, in one sled database.
//!
//! This is the only module that touches sled. The rest of the agent sees [`Store`]: records
//! (with their IDAT sealed at rest), tasks and their states, per-day history, an audit trail,
//! a few counters and timestamps, and backup / restore.
//!
//! # Layout
//!
//! One sled database (a directory) with these trees; the byte layouts are in `codec`:
//!
//! | tree      | key                            | value                                         |
//! |-----------|--------------------------------|-----------------------------------------------|
//! | `meta`    | name                           | schema version, key check, counters, times    |
//! | `records` | `local_id`                     | postcard: filter, sealed IDAT, state, pseudonym, times |
//! | `idx_bf`  | `sha256(filter)[..16] ‖ local_id` | empty                                      |
//! | `idx_psn` | `sha256(pseudonym)[..16] ‖ local_id` | empty                                   |
//! | `counts`  | `records`                      | record counters by state (8 × u64)            |
//! | `tasks`   | task key                       | JSON of `TaskRecord`                          |
//! | `idx_open_tasks` | task key                | empty: the tasks not `Done` / `Expired`       |
//! | `history` | `day ‖ task type`              | done / expired counters of finished tasks     |
//! | `audit`   | sequence number (u64 BE)       | JSON of [`AuditEntry`]                        |
//! | `alerts`  | see `alerts`                   | alerts raised, webhook deliveries pending     |
//! | `psn_log` | sequence number (u64 BE)       | postcard: local id, pseudonym, obtained at (see `psn_log`) |
//!
//! Next to sled's files, `ttp-agent-store.json` records the store's random id, which `meta`
//! holds too: a database that sled opens empty or that belongs to another store is refused
//! instead of being taken for a new store.
//!
//! The two record indexes and `counts` are *derived* from `records`, and `idx_open_tasks` from
//! `tasks`: every write keeps them exact in the same transaction, a restore rebuilds them, and
//! [`Store::check_integrity`] verifies them. The open-task index is what keeps the agent's
//! cycle and `status` proportional to the open tasks: finished ones stay stored for 30 days and
//! far outnumber them.
//!
//! # Durability: what is on disk when
//!
//! * A write is visible to every reader of the store as soon as its method returns.
//! * It is **durable only after [`Store::flush`] returns `Ok`**: flush writes sled's log and
//!   `fdatasync`s its file (sled 0.34 alone does not: see `durable_flush`). The store never
//!   flushes in the background (`flush_every_ms(None)`: an idle daemon does not wake up every
//!   500 ms); it flushes by itself only when opening (after a
//!   migration or creating the key check) and at the end of a restore. The agent calls `flush`
//!   at its durability points, e.g. after persisting a task's `Running` state and *before*
//!   sending the request that state announces.
//! * After a crash (process killed, power lost) sled recovers a **prefix of its log**: every
//!   write acknowledged by a completed `flush()` is present, and some later, unflushed writes
//!   may be present too. Nothing flushed is lost; nothing is reordered.
//! * Every multi-key change is **one sled transaction**: a record with its index entries and
//!   the counters, and the pseudonym log entry when the record gets a pseudonym; a batch of
//!   records; a batch of tasks with the history counters of finished occurrences they replace;
//!   a task purge with its history increments; a manual change with its audit entry. After a crash either
//!   all of a transaction's effects are present or none (sled seals each transaction's log
//!   entries as one batch and recovery drops an incomplete batch). The `SIGKILL` test in
//!   `tests/store_crash.rs` checks this by killing a writer at random moments.
//! * Dropping a [`Store`] flushes too, but cannot report a failure: call `flush` first.
//!
//! # Why sled is configured the way it is
//!
//! sled 0.34 is known to grow on disk without reclaiming space and to use much memory on open
//! (upstream issues #1333, #1374), and has reports of stores that fail to open (#1410, #1358).
//! The store therefore:
//!
//! * caps sled's page cache (16 MiB unless configured) and asks for `Mode::LowSpace` (sled
//!   0.34's default; its code does not act on the mode yet, the setting documents the intent);
//! * runs without sled's background flusher (`flush_every_ms(None)`): an idle daemon does not
//!   wake up every 500 ms, and durability points are explicit. The price: sled reclaims log
//!   segments mostly from that flusher thread; without it, reclamation only piggybacks on page
//!   rewrites, so a store under churn grows faster (see `benches/store_footprint.rs`);
//! * stays small: finished tasks are purged into per-day counters, old IDAT is dropped, values
//!   are compact (see `codec`), and [`Store::compact`] rewrites the whole store in key order
//!   (random-key index inserts are what sled amplifies most: a bulk import of 1,000,000
//!   records takes about 4.2x their raw size, 2.6x after compaction; figures from
//!   `benches/store_footprint.rs`);
//! * maps every open failure to an actionable [`StoreError`] (a sled panic during recovery
//!   included), notices a database that sled silently opened empty (the marker file, see
//!   `meta`), and writes portable, checksummed backups that do not depend on sled's format.
//!
//! # Concurrency
//!
//! [`Store`] is `Send + Sync`; share it with `Arc`. sled serialises transactions. Writes take a
//! shared gate that [`Store::backup_to`] takes exclusively, so a backup is a consistent snapshot
//! across trees. Callbacks (`keep`, `pred`) run outside that gate and may call the store.
//!
//! # IDAT
//!
//! IDAT is sealed with XChaCha20-Poly1305 under the site's [`IdatKey`] (see `crypto`); it is
//! never written in clear, never logged, never part of an error message. A backup contains it
//! sealed, so restoring needs the same key.

mod alerts;
mod audit;
mod backup;
mod codec;
mod crypto;
mod error;
mod meta;
mod migrate;
mod psn_log;
mod records;
mod tasks;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use alerts::{AlertMark, PendingDelivery};
pub use audit::AuditEntry;
pub use backup::{BackupSummary, CompactSummary};
pub use crypto::IdatKey;
pub use error::StoreError;
pub use meta::META_PROFILE_FINGERPRINT;
pub use migrate::CURRENT_SCHEMA;
pub use psn_log::PsnEvent;
pub use records::{InsertOutcome, IntegrityReport, RecordCounts};
pub use tasks::{DayHistory, FinishedCounts, TaskSummary};

/// The page cache sled may use unless configured otherwise.
pub const DEFAULT_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The store directory (created if missing).
    pub path: PathBuf,
    /// sled's page cache limit in bytes.
    pub cache_capacity: u64,
    /// The key that seals IDAT at rest.
    pub idat_key: IdatKey,
    /// How long to keep trying while another holder has the store's lock before answering
    /// [`StoreError::Locked`]. A moment by default: a `Store` dropped in this process releases
    /// the lock only when sled's pool threads let go of the file. A caller with a better
    /// answer to a lock held by the daemon (`status` asks the daemon) uses zero.
    pub lock_wait: std::time::Duration,
}

/// The default [`StoreOptions::lock_wait`].
pub const DEFAULT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl StoreOptions {
    /// Options with the default cache capacity and lock wait.
    pub fn new(path: impl Into<PathBuf>, idat_key: IdatKey) -> StoreOptions {
        StoreOptions {
            path: path.into(),
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            idat_key,
            lock_wait: DEFAULT_LOCK_WAIT,
        }
    }
}

/// The trees of one store, opened.
#[derive(Clone)]
pub(crate) struct Trees {
    pub meta: sled::Tree,
    pub records: sled::Tree,
    pub bf_index: sled::Tree,
    pub psn_index: sled::Tree,
    pub counts: sled::Tree,
    pub tasks: sled::Tree,
    pub open_tasks: sled::Tree,
    pub history: sled::Tree,
    pub audit: sled::Tree,
    pub psn_log: sled::Tree,
}

impl Trees {
    fn open(db: &sled::Db, path: &Path) -> Result<Trees, StoreError> {
        let open = |name: &str| db.open_tree(name).map_err(|e| error::from_sled(path, e));
        Ok(Trees {
            meta: open("meta")?,
            records: open("records")?,
            bf_index: open("idx_bf")?,
            psn_index: open("idx_psn")?,
            counts: open("counts")?,
            tasks: open("tasks")?,
            open_tasks: open("idx_open_tasks")?,
            history: open("history")?,
            audit: open("audit")?,
            psn_log: open("psn_log")?,
        })
    }
}

/// The agent's persistent state. See the module documentation for layout and durability.
pub struct Store {
    db: sled::Db,
    trees: Trees,
    path: PathBuf,
    cipher: crypto::IdatCipher,
    /// Shared by writers, exclusive for a backup (see "Concurrency" above). Guards no data,
    /// so a poisoned lock is simply taken over.
    gate: RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `opts.path`.
    ///
    /// Creates the directory if needed, takes sled's exclusive lock ([`StoreError::Locked`] if
    /// another process holds it), refuses a store written by a newer version
    /// ([`StoreError::SchemaTooNew`]), migrates an older one, and checks the IDAT key
    /// ([`StoreError::WrongKey`]) before returning.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        let path = opts.path.as_path();
        create_private_dir(path)?;
        let db = open_sled(path, opts.cache_capacity, opts.lock_wait)?;
        if db.was_recovered() {
            tracing::debug!(path = %path.display(), "opened an existing store");
        } else {
            tracing::info!(path = %path.display(), "created a new store");
        }
        let trees = Trees::open(&db, path)?;
        let cipher = opts.idat_key.cipher();
        // Identity before migration: an emptied database must not be "migrated" into a new store.
        let mut wrote = meta::verify_or_install_identity(&trees, path)?;
        wrote |= migrate::bring_up_to_date(&trees, path)?;
        wrote |= meta::verify_or_install_key_check(&trees, &cipher, path)?;
        if wrote {
            durable_flush(&db, path)?;
        }
        Ok(Store {
            db,
            trees,
            path: path.to_path_buf(),
            cipher,
            gate: RwLock::new(()),
        })
    }

    /// Makes every write so far durable: sled's log written, and the file `fdatasync`ed (see
    /// [`durable_flush`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        durable_flush(&self.db, &self.path)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store's files take on disk (as sled accounts them).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db
            .size_on_disk()
            .map_err(|e| error::from_sled(&self.path, e))
    }

    fn write_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn exclusive_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sled_err(&self, e: sled::Error) -> StoreError {
        error::from_sled(&self.path, e)
    }

    fn tx_err(&self, e: sled::transaction::TransactionError<StoreError>) -> StoreError {
        error::from_tx(&self.path, e)
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        error::corrupt(&self.path, detail)
    }
}

/// Creates the store directory if it is missing, accessible to the agent's user only:
/// pseudonyms, local ids and sealed IDAT are nobody else's business, and sled creates its files
/// with the process umask, so the directory is what keeps others out. An existing directory
/// keeps the mode the operator gave it.
pub(crate) fn create_private_dir(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|e| error::from_io(path, e))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| error::from_io(path, e))
}

/// Opens the sled database, retrying briefly while its lock is taken.
///
/// sled finishes writing its last log buffers on pool threads, which keep the locked file open
/// for a moment after a [`Store`] is dropped; re-opening a store in the same process right
/// away (a restore, a CLI command after another) would otherwise fail with `Locked`. Another
/// process holding the store keeps the lock far longer than this window, so it is still
/// reported, after about a second.
fn open_sled(
    path: &Path,
    cache_capacity: u64,
    lock_wait: std::time::Duration,
) -> Result<sled::Db, StoreError> {
    let mut pause = std::time::Duration::from_millis(5);
    let mut waited = std::time::Duration::ZERO;
    loop {
        let attempt = refuse_if_held(path).and_then(|()| open_sled_once(path, cache_capacity));
        match attempt {
            Err(StoreError::Locked { .. }) if waited < lock_wait => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// `sled::Db::flush`, then `fdatasync` of sled's `db` file.
///
/// sled 0.34 writes its log with `sync_file_range` on Linux, which waits for the pages to
/// reach the device but neither flushes the device's write cache nor persists the file's
/// size; only its background flusher thread calls `fsync`, and the store runs without it (see
/// "Why sled is configured the way it is"). That is enough when the process dies (the kernel
/// keeps the written pages), not when the power goes. `fdatasync` makes a flush durable in
/// both cases; it costs one device cache flush per durability point, which group commits keep
/// few.
pub(crate) fn durable_flush(db: &sled::Db, path: &Path) -> Result<(), StoreError> {
    db.flush().map_err(|e| error::from_sled(path, e))?;
    let file = path.join("db");
    std::fs::File::open(&file)
        .and_then(|f| f.sync_data())
        .map_err(|e| error::from_io(&file, e))
}

/// Who holds sled's lock on a store directory, seen without opening the store.
#[derive(Debug)]
pub enum LockState {
    /// Nobody: the probe took the lock and gave it back at once.
    Free,
    /// Another holder (in practice a running agent).
    Held,
    /// No sled database file there (no store yet, or not a directory).
    NoDatabase,
    /// The file or its lock could not be read; opening the store decides.
    Unknown(std::io::Error),
}

/// Probes sled's exclusive `flock` on `<store>/db` without opening the store. The probe's own
/// lock is released before returning, so opening the store afterwards is not blocked by it;
/// a holder that comes in between is caught by sled's lock as before.
///
/// [`Store::open`] calls it first: sled 0.34 reads much of a large store (hundreds of MiB for
/// a million records) before it tries the lock, so a `status` next to the running daemon
/// would otherwise pay for a full recovery only to be refused. `check` and `restore` use it to
/// tell whether a daemon runs.
#[cfg(unix)]
pub fn probe_lock(path: &Path) -> LockState {
    use std::os::fd::AsRawFd as _;
    let file = match std::fs::File::open(path.join("db")) {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return LockState::NoDatabase;
        }
        Err(e) => return LockState::Unknown(e),
    };
    // SAFETY: flock on a descriptor owned by `file`, which outlives the calls.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        // SAFETY: as above; closing `file` would release it too.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return LockState::Free;
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) => LockState::Held,
        _ => LockState::Unknown(err),
    }
}

#[cfg(not(unix))]
pub fn probe_lock(_path: &Path) -> LockState {
    LockState::Unknown(std::io::Error::other("lock probing needs flock (Unix)"))
}

/// [`StoreError::Locked`] at once when another holder has the lock (see [`probe_lock`]).
fn refuse_if_held(path: &Path) -> Result<(), StoreError> {
    match probe_lock(path) {
        LockState::Held => Err(StoreError::Locked {
            path: path.to_path_buf(),
        }),
        LockState::Free | LockState::NoDatabase | LockState::Unknown(_) => Ok(()),
    }
}

/// Opens the sled database with the store's configuration (see "Why sled is configured...").
fn open_sled_once(path: &Path, cache_capacity: u64) -> Result<sled::Db, StoreError> {
    let config = sled::Config::new()
        .path(path)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(cache_capacity)
        .flush_every_ms(None);
    // sled 0.34 panics on some kinds of damaged files during recovery instead of returning
    // `Corruption`; the operator must get the same actionable error either way.
    match std::panic::catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(error::from_sled(path, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            Err(error::corrupt(
                path,
                format!("sled failed while recovering the store files: {what}"),
            ))
        }
    }
}

/// sled aborts a transaction with this error type; `?` on sled's own errors inside the closure
/// converts them, and the store's errors go through [`abort`].
type TxResult<T> = sled::transaction::ConflictableTransactionResult<T, StoreError>;

fn abort(e: StoreError) -> sled::transaction::ConflictableTransactionError<StoreError> {
    sled::transaction::ConflictableTransactionError::Abort(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Store>();
        assert_send_sync::<super::StoreOptions>();
    }
}
