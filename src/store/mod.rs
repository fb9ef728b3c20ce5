//! The embedded store: everything the agent must not lose or do twice, in one redb file.
//!
//! This is the only module that touches redb. The rest of the agent sees [`Store`]: records
//! (with their IDAT sealed at rest), tasks and their states, per-day history, an audit trail,
//! a few counters and timestamps, and backup / restore.
//!
//! # Layout
//!
//! The store directory holds `store.redb` (one redb database), `ttp-agent-store.json` (the
//! marker, see below) and `ttp-agent-store.lock` (the lock, see [`probe_lock`]). One redb table
//! per kind of data, all `&[u8] → &[u8]`; the byte layouts are in `codec`:
//!
//! | table     | key                            | value                                         |
//! |-----------|--------------------------------|-----------------------------------------------|
//! | `meta`    | name                           | schema version, key check, counters, times    |
//! | `records` | `local_id`                     | postcard: sealed filter, sealed IDAT, state, pseudonym, times |
//! | `idx_bf`  | `HMAC(k_index, filter)[..16] ‖ local_id` | empty                               |
//! | `idx_psn` | `sha256(pseudonym)[..16] ‖ local_id` | empty                                   |
//! | `counts`  | `records`                      | record counters by state (8 × u64)            |
//! | `tasks`   | task key                       | JSON of `TaskRecord`, sealed                  |
//! | `idx_open_tasks` | task key                | empty: the tasks not `Done` / `Expired`       |
//! | `history` | `day ‖ task type`              | done / expired counters of finished tasks     |
//! | `audit`   | sequence number (u64 BE)       | JSON of [`AuditEntry`]                        |
//! | `alerts`  | see `alerts`                   | alerts raised, webhook deliveries pending     |
//! | `psn_log` | sequence number (u64 BE)       | postcard: local id, pseudonym, obtained at (see `psn_log`) |
//! | `idx_idat_due` | `time(updated_at) ‖ local_id` | empty: finished records still holding IDAT |
//! | `idx_finished_tasks` | `time(finished at) ‖ task key` | empty: the `Done` / `Expired` tasks |
//! | `idx_waiting_records` | `state ‖ time(updated_at) ‖ local_id` | empty: records in `New`, `Sending`, `AwaitingClearing` |
//! | `disclosures` | sequence number (u64 BE) | JSON of [`DisclosureEntry`]: the disclosure log, hash-chained, never purged (see `disclosures`) |
//! | `disclosure_pending` | task key | JSON: what a running or in-doubt `send_idat` answer carries, codes only |
//! | `withdrawn` | `r ‖ local_id`, `f ‖ HMAC(k_index, filter)[..16] ‖ local_id`, `p ‖ sha256(pseudonym)[..16] ‖ local_id` | JSON of [`Withdrawal`] / empty (see `withdrawn`) |
//!
//! Every key is a byte string built in `codec` and the modules that own a table, so a future
//! dimension (a study prefix in front of record and index keys) is a change to the key builders
//! and one migration, not to the tables.
//!
//! `ttp-agent-store.json` records the store's random id, which `meta` holds too: a database file
//! that was deleted or emptied, or that belongs to another store, is refused instead of being
//! taken for a new store.
//!
//! The four record indexes and `counts` are *derived* from `records`, and `idx_open_tasks` and
//! `idx_finished_tasks` from `tasks`: every write keeps them exact in the same transaction, a
//! restore rebuilds them, and [`Store::check_integrity`] (`ttp-agent check --store`) verifies
//! them. The open-task index is what keeps the agent's cycle, `status` and start-up
//! proportional to the open tasks: finished ones stay stored for 30 days and far outnumber
//! them. The time-ordered indexes (`codec::time_key`) are what keep the hourly retention
//! purges proportional to what is due: a purge reads a key range up to its cut-off instead of
//! every record and task (schema 5); and registration proportional to the records that wait
//! for it (`idx_waiting_records`, schema 6): a cycle asks only for the `New` and `Sending` ones
//! and the `AwaitingClearing` ones whose recheck is due.
//!
//! # Durability: what is on disk when
//!
//! * Every method that writes is **one redb write transaction**: a record with its index entries
//!   and the counters, and the pseudonym log entry when the record gets a pseudonym; a batch of
//!   records; a batch of tasks with the history counters of finished occurrences they replace
//!   and the disclosure log entries their changes of state call for;
//!   a task purge; a manual change with its audit entry. redb commits a transaction atomically:
//!   after a crash either all of its effects are present or none.
//! * A write is visible to every reader as soon as its method returns. It is committed with
//!   `Durability::None` (no `fsync`): it is **durable only after [`Store::flush`] returns
//!   `Ok`**. `flush` commits with `Durability::Immediate`, which `fdatasync`s the file and makes
//!   every earlier commit durable with it. These are the *group commits*: the agent calls
//!   `flush` at its durability points (e.g. after persisting a task's `Running` state and
//!   *before* sending the request that state announces), and many writes share one `fsync`.
//! * After a crash (process killed, power lost) redb opens at its last durable commit: every
//!   write acknowledged by a completed `flush()` is present, later unflushed ones are gone as a
//!   whole (a prefix of the writes, nothing reordered). `tests/soak/store/crash.rs` kills a writer
//!   at random moments and checks this.
//! * Durable commits use redb's **quick-repair**: the allocator state is saved with each of them
//!   and the commit is two-phase, so opening after a crash does not walk the whole file. Measured
//!   on 1,000,000 records (BENCHMARKS.md §6): open after a crash 0.004 s with quick-repair,
//!   1–2 s with the full repair; a small durable commit costs 0.60 ms instead of 0.26 ms. The
//!   start-up target (≤ 0.5 s) decides: quick-repair.
//! * The store never writes or wakes up in the background: no thread of its own (redb has none).
//! * Dropping a [`Store`] does not flush: call `flush` first.
//!
//! # Why redb
//!
//! The design card chose sled 0.34; it was replaced on purpose (ARCHITECTURE.md, BENCHMARKS.md
//! §6): sled grew to 7–8× the raw data, used 160–240 MiB of memory on open, woke up 8 times a
//! second with its threads, needed an extra `fdatasync` to survive a power cut, and is
//! unmaintained. redb keeps one file, opens in milliseconds, uses its page cache
//! (`[store] cache_capacity`, 16 MiB) and nothing more, and `fdatasync`s its durable commits.
//!
//! # Concurrency
//!
//! [`Store`] is `Send + Sync`; share it with `Arc`. redb runs one write transaction at a time
//! (the others wait) and any number of readers, each on its own snapshot: a backup reads one
//! snapshot of every table while writers go on. Callbacks (`keep`, `pred`) run outside any
//! write transaction and may call the store.
//!
//! # IDAT and filters
//!
//! IDAT is sealed with XChaCha20-Poly1305 under the site's [`IdatKey`] (see `crypto`); it is
//! never written in clear, never logged, never part of an error message. Bloom filters (in
//! records and in tasks) are sealed too, under keys derived from the IDAT key, and the filter
//! index is keyed (HMAC), so neither the store nor a backup shows a filter that a dictionary
//! of names could be checked against. Backups are encrypted and authenticated (see `backup`).
//!
//! # Purged IDAT
//!
//! redb leaves old versions of a value in its free pages until they are reused. A purge that
//! removed IDAT therefore ends with [`Store::rewrite`]: the live data is copied into a fresh
//! file that replaces the old one, so no file of the store directory holds the purged IDAT.
//! ARCHITECTURE.md ("Nothing sensitive readable") names what stays outside the agent's reach.

mod alerts;
mod audit;
mod backup;
mod codec;
mod crypto;
mod disclosures;
mod error;
mod meta;
mod migrate;
mod psn_log;
mod records;
mod tasks;
mod withdrawn;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use redb::{ReadableDatabase as _, ReadableTable, TableDefinition};

pub use alerts::{AlertMark, PendingDelivery};
pub use audit::{AuditEntry, MISSING_ELEMENTS_ACTION};
pub use backup::{BackupSummary, CompactSummary};
pub use crypto::IdatKey;
pub use disclosures::{BrokenLink, ChainCheck, DisclosureEntry};
pub use error::StoreError;
pub use meta::{
    META_HANDOVER_WEBHOOK_STATE, META_LAST_LISTING, META_LAST_POLL_OK, META_LAST_PURGE,
    META_PROFILE_FINGERPRINT, META_REGISTRATION_BLOCKED,
};
pub use migrate::CURRENT_SCHEMA;
pub use psn_log::{HandoverConsumer, PsnEvent, handover_window, logged_pseudonym};
pub use records::{InsertOutcome, IntegrityReport, RecordCounts};
pub use tasks::{DayHistory, FinishedCounts, TaskSummary};
pub use withdrawn::Withdrawal;

/// The page cache redb may use unless configured otherwise.
pub const DEFAULT_CACHE_CAPACITY: u64 = 16 * 1024 * 1024;

/// The database file inside the store directory.
pub const DB_FILE: &str = "store.redb";
/// Where [`Store::rewrite`] builds the replacement of [`DB_FILE`]; left over only by a crash
/// during a rewrite, and removed at the next open (the rename is the rewrite's commit point).
const REWRITE_FILE: &str = "store.redb.rewrite";
/// Pairs per write transaction while a rewrite copies the tables.
const REWRITE_BATCH: u64 = 10_000;
/// The file the agent `flock`s for as long as it holds the store (see [`probe_lock`]).
pub const LOCK_FILE: &str = "ttp-agent-store.lock";

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The store directory (created if missing).
    pub path: PathBuf,
    /// redb's page cache limit in bytes.
    pub cache_capacity: u64,
    /// The key that seals IDAT at rest.
    pub idat_key: IdatKey,
    /// How long to keep trying while another holder has the store's lock before answering
    /// [`StoreError::Locked`]. A moment by default, so that a command started right after the
    /// daemon stopped does not fail on a lock about to be released. A caller with a better
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

/// Every table holds raw bytes; the layouts are in `codec` and the modules that own them.
pub(crate) type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;

pub(crate) const META: Def = TableDefinition::new("meta");
pub(crate) const RECORDS: Def = TableDefinition::new("records");
pub(crate) const IDX_BF: Def = TableDefinition::new("idx_bf");
pub(crate) const IDX_PSN: Def = TableDefinition::new("idx_psn");
pub(crate) const COUNTS: Def = TableDefinition::new("counts");
pub(crate) const TASKS: Def = TableDefinition::new("tasks");
pub(crate) const OPEN_TASKS: Def = TableDefinition::new("idx_open_tasks");
pub(crate) const HISTORY: Def = TableDefinition::new("history");
pub(crate) const AUDIT: Def = TableDefinition::new("audit");
pub(crate) const PSN_LOG: Def = TableDefinition::new("psn_log");
pub(crate) const ALERTS: Def = TableDefinition::new("alerts");
/// Records that still hold IDAT and are finished (`Pseudonymised`, `Rejected`), by
/// `updated_at` (`codec::time_key`): what `purge_idat` reads instead of every record.
pub(crate) const IDX_IDAT_DUE: Def = TableDefinition::new("idx_idat_due");
/// Finished tasks by the time they finished (`codec::time_key`): what `purge_finished_tasks`
/// reads instead of every task.
pub(crate) const FINISHED_TASKS: Def = TableDefinition::new("idx_finished_tasks");
/// Records that wait for registration work (`New`, `Sending`, `AwaitingClearing`), by state and
/// `updated_at`: what registration reads instead of every record.
pub(crate) const IDX_WAITING: Def = TableDefinition::new("idx_waiting_records");
/// The disclosure log (see `disclosures`): append-only, hash-chained, never purged.
pub(crate) const DISCLOSURES: Def = TableDefinition::new("disclosures");
/// What the answer of a `send_idat` in `Running` or `InDoubt` carries, until its outcome is
/// logged (see `disclosures`).
pub(crate) const DISCLOSURE_PENDING: Def = TableDefinition::new("disclosure_pending");

/// Consent withdrawals (`withdrawn`): what is kept of a withdrawn record, by local id, and the
/// keys later tasks are matched with (its filter's keyed digest, its pseudonym's digest).
pub(crate) const WITHDRAWN: Def = TableDefinition::new("withdrawn");

/// Every table, created when the store is: a read transaction can then open any of them.
const ALL_TABLES: [Def; 17] = [
    META,
    RECORDS,
    IDX_BF,
    IDX_PSN,
    COUNTS,
    TASKS,
    OPEN_TASKS,
    HISTORY,
    AUDIT,
    PSN_LOG,
    ALERTS,
    IDX_IDAT_DUE,
    FINISHED_TASKS,
    IDX_WAITING,
    DISCLOSURES,
    DISCLOSURE_PENDING,
    WITHDRAWN,
];

/// One table, opened in a transaction, with the store's path for its errors. `T` is a
/// writable `redb::Table` or a `redb::ReadOnlyTable`.
pub(crate) struct Tree<'p, T> {
    t: T,
    path: &'p Path,
}

pub(crate) type WTree<'t, 'p> = Tree<'p, redb::Table<'t, &'static [u8], &'static [u8]>>;
pub(crate) type RTree<'p> = Tree<'p, redb::ReadOnlyTable<&'static [u8], &'static [u8]>>;
pub(crate) type Guard<'a> = redb::AccessGuard<'a, &'static [u8]>;

impl<'p, T: ReadableTable<&'static [u8], &'static [u8]>> Tree<'p, T> {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.t.get(key).at(self.path)?.map(|v| v.value().to_vec()))
    }

    pub(crate) fn contains_key(&self, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.t.get(key).at(self.path)?.is_some())
    }

    pub(crate) fn len(&self) -> Result<u64, StoreError> {
        self.t.len().at(self.path)
    }

    pub(crate) fn is_empty(&self) -> Result<bool, StoreError> {
        self.t.is_empty().at(self.path)
    }

    /// Every pair in key order.
    pub(crate) fn iter(
        &self,
    ) -> Result<
        impl DoubleEndedIterator<Item = Result<(Guard<'_>, Guard<'_>), StoreError>>,
        StoreError,
    > {
        let path = self.path;
        Ok(self
            .t
            .iter()
            .at(path)?
            .map(move |e| e.map_err(|e| error::from_redb(path, e))))
    }

    /// The pairs with keys in `from..` (and before `to`, if given).
    pub(crate) fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Result<impl Iterator<Item = Result<(Guard<'_>, Guard<'_>), StoreError>>, StoreError> {
        let path = self.path;
        let upper: std::ops::Bound<&[u8]> = match to {
            Some(to) => std::ops::Bound::Excluded(to),
            None => std::ops::Bound::Unbounded,
        };
        Ok(self
            .t
            .range::<&[u8]>((std::ops::Bound::Included(from), upper))
            .at(path)?
            .map(move |e| e.map_err(|e| error::from_redb(path, e))))
    }

    /// The pairs whose key starts with `prefix`.
    pub(crate) fn scan_prefix<'s>(
        &'s self,
        prefix: &'s [u8],
    ) -> Result<impl Iterator<Item = Result<(Guard<'s>, Guard<'s>), StoreError>> + 's, StoreError>
    {
        Ok(self.range(prefix, None)?.take_while(move |e| match e {
            Ok((k, _)) => k.value().starts_with(prefix),
            Err(_) => true,
        }))
    }
}

impl WTree<'_, '_> {
    /// Inserts, returning the previous value.
    pub(crate) fn insert(
        &mut self,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .t
            .insert(key, value)
            .at(self.path)?
            .map(|v| v.value().to_vec()))
    }

    pub(crate) fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .t
            .remove(key)
            .at(self.path)?
            .map(|v| v.value().to_vec()))
    }

    pub(crate) fn clear(&mut self) -> Result<(), StoreError> {
        self.t.retain(|_, _| false).at(self.path)
    }
}

/// Clears the derived table `index` and fills it with the key `key_of` derives (if any) from
/// each pair of `source`: how a schema step builds a new index and a restore rebuilds one.
/// The keys are inserted in order, which is how redb writes a B-tree fastest.
pub(crate) fn fill_index(
    tx: &redb::WriteTransaction,
    source: Def,
    index: Def,
    path: &Path,
    mut key_of: impl FnMut(&[u8], &[u8]) -> Result<Option<Vec<u8>>, StoreError>,
) -> Result<(), StoreError> {
    let mut keys = Vec::new();
    {
        let table = wtree(tx, source, path)?;
        for entry in table.iter()? {
            let (key, value) = entry?;
            keys.extend(key_of(key.value(), value.value())?);
        }
    }
    keys.sort_unstable();
    let mut index = wtree(tx, index, path)?;
    index.clear()?;
    for key in &keys {
        index.insert(key, &[])?;
    }
    Ok(())
}

/// Opens a table in a write transaction.
pub(crate) fn wtree<'t, 'p>(
    tx: &'t redb::WriteTransaction,
    def: Def,
    path: &'p Path,
) -> Result<WTree<'t, 'p>, StoreError> {
    Ok(Tree {
        t: tx.open_table(def).at(path)?,
        path,
    })
}

/// Opens a table in a read transaction.
pub(crate) fn rtree<'p>(
    tx: &redb::ReadTransaction,
    def: Def,
    path: &'p Path,
) -> Result<RTree<'p>, StoreError> {
    Ok(Tree {
        t: tx.open_table(def).at(path)?,
        path,
    })
}

/// A derived index under check (`check --store`): each entry its source table implies must be
/// present, and any entry beyond those is stale. `fill_index` builds an index; this checks one.
pub(crate) struct IndexCheck<'p> {
    name: &'static str,
    /// What one source entry is, in a problem's text ("record", "task").
    subject: &'static str,
    index: RTree<'p>,
    expected: u64,
}

impl<'p> IndexCheck<'p> {
    pub(crate) fn new(name: &'static str, subject: &'static str, index: RTree<'p>) -> Self {
        IndexCheck {
            name,
            subject,
            index,
            expected: 0,
        }
    }

    /// Source entry `id` implies `key`.
    pub(crate) fn expect(
        &mut self,
        key: &[u8],
        id: &str,
        problems: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        self.expected += 1;
        if !self.index.contains_key(key)? {
            problems.push(format!(
                "{} index lacks the entry of {} {id:?}",
                self.name, self.subject
            ));
        }
        Ok(())
    }

    /// A source entry implies an entry whose key cannot be derived (its seal does not open).
    pub(crate) fn expect_unchecked(&mut self) {
        self.expected += 1;
    }

    /// After every source entry: more entries than expected means stale ones.
    pub(crate) fn stale(self, problems: &mut Vec<String>) -> Result<(), StoreError> {
        let present = self.index.len()?;
        if present > self.expected {
            problems.push(format!(
                "{} index has {} stale entries",
                self.name,
                present - self.expected
            ));
        }
        Ok(())
    }
}

/// Maps any redb error to a [`StoreError`] for the store at a path.
pub(crate) trait At<T> {
    fn at(self, path: &Path) -> Result<T, StoreError>;
}

impl<T, E: Into<redb::Error>> At<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, StoreError> {
        self.map_err(|e| error::from_redb(path, e))
    }
}

/// The agent's persistent state. See the module documentation for layout and durability.
pub struct Store {
    /// Behind a lock only so that the purge can replace the file by a rewritten one (see
    /// "Purged IDAT" above); every other use takes it shared.
    db: RwLock<redb::Database>,
    path: PathBuf,
    keys: crypto::StoreKeys,
    cache_capacity: u64,
    /// Set while [`Store::rewrite`] holds the database exclusively, so that a command arriving
    /// at the daemon meanwhile can say what it waits for ([`Store::rewriting`]).
    rewriting: AtomicBool,
    /// Orders a person's change of a task against the poll cycle's writes of the copies it
    /// read (see [`Store::task_gate`]).
    task_gate: std::sync::Mutex<()>,
    /// The pseudonym log's head as of this process's last [`Store::flush`]: every event up to
    /// it is durable (see [`Store::flushed_pseudonym_log_head`]). 0 until the first flush.
    flushed_psn_head: AtomicU64,
    /// The store's `flock`, held for as long as the `Store` lives.
    _lock: File,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store at `opts.path`.
    ///
    /// Creates the directory if needed, takes the store's lock ([`StoreError::Locked`] if
    /// another process holds it), refuses a directory written by the sled-based development
    /// builds ([`StoreError::SledStore`]) and a store written by a newer version
    /// ([`StoreError::SchemaTooNew`]), migrates an older one, and checks the IDAT key
    /// ([`StoreError::WrongKey`]) before returning.
    pub fn open(opts: &StoreOptions) -> Result<Store, StoreError> {
        let path = opts.path.as_path();
        create_private_dir(path)?;
        refuse_sled_store(path)?;
        let lock = take_lock(path, opts.lock_wait)?;
        remove_stale_rewrite(path)?;
        let file = path.join(DB_FILE);
        let existed = file.exists();
        let db = open_db(&file, opts.cache_capacity, path)?;
        if existed {
            tracing::debug!(path = %path.display(), "opened an existing store");
        } else {
            tracing::info!(path = %path.display(), "created a new store");
        }
        let keys = opts.idat_key.store_keys();
        if !existed && !path.join(meta::MARKER_FILE).exists() {
            meta::install_new_store(&db, &keys, path)?;
        }
        prepare(&db, path, &keys)?;
        Ok(Store {
            db: RwLock::new(db),
            path: path.to_path_buf(),
            keys,
            cache_capacity: opts.cache_capacity,
            rewriting: AtomicBool::new(false),
            task_gate: std::sync::Mutex::new(()),
            flushed_psn_head: AtomicU64::new(0),
            _lock: lock,
        })
    }

    /// Makes every write so far durable: one redb commit with `Durability::Immediate` (which
    /// `fdatasync`s the file) and quick-repair (see "Durability" above).
    pub fn flush(&self) -> Result<(), StoreError> {
        // The pseudonym log's head as this durable commit sees it is durable with it: what the
        // hand-over consumers may give out (`psn_log`, "Only durable events leave").
        let head = durable_commit(&self.db(), &self.path, |tx| {
            psn_log::head_in(&wtree(tx, META, &self.path)?, &self.path)
        })?;
        self.flushed_psn_head.fetch_max(head, Ordering::SeqCst);
        Ok(())
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes the store's files take, by file length (what `ls` shows; redb grows its file
    /// ahead of use and leaves the unused tail sparse, so `du` may show less).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        dir_file_bytes(&self.path)
    }

    /// Replaces the database file by a fresh one that holds only the live data: every table is
    /// copied into `store.redb.rewrite`, which is committed durably and renamed over
    /// `store.redb`; the old file is closed and so deleted. What an update or a purge removed
    /// stays in redb's free pages until they are reused; after a rewrite it is in no file of
    /// the store directory (see "Purged IDAT"). Every other use of the store waits meanwhile.
    pub(crate) fn rewrite(&self) -> Result<(), StoreError> {
        let path = self.path.as_path();
        let _rewriting = self.mark_rewriting();
        let mut db = self
            .db
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        remove_stale_rewrite(path)?;
        let fresh_path = path.join(REWRITE_FILE);
        let copied = (|| {
            let fresh = open_db(&fresh_path, self.cache_capacity, path)?;
            create_tables(&fresh, path)?;
            let snapshot = db.begin_read().at(path)?;
            for def in ALL_TABLES {
                let source = rtree(&snapshot, def, path)?;
                let mut tx = fresh.begin_write().at(path)?;
                let mut n: u64 = 0;
                for entry in source.iter()? {
                    let (key, value) = entry?;
                    wtree(&tx, def, path)?.insert(key.value(), value.value())?;
                    n += 1;
                    if n.is_multiple_of(REWRITE_BATCH) {
                        tx.set_durability(redb::Durability::None).at(path)?;
                        tx.commit().at(path)?;
                        tx = fresh.begin_write().at(path)?;
                    }
                }
                tx.set_durability(redb::Durability::None).at(path)?;
                tx.commit().at(path)?;
            }
            durable_commit(&fresh, path, |_| Ok(()))?;
            Ok::<_, StoreError>(fresh)
        })();
        let fresh = match copied {
            Ok(fresh) => fresh,
            Err(e) => {
                let _ = std::fs::remove_file(&fresh_path);
                return Err(e);
            }
        };
        let file = path.join(DB_FILE);
        std::fs::rename(&fresh_path, &file).map_err(|e| error::from_io(&file, e))?;
        File::open(path)
            .and_then(|d| d.sync_all())
            .map_err(|e| error::from_io(path, e))?;
        // Dropping the old handle closes the old, now unlinked, file.
        *db = fresh;
        Ok(())
    }

    /// Whether the store's file is being rewritten after a purge: every other use of the
    /// store waits until that is done.
    pub fn rewriting(&self) -> bool {
        self.rewriting.load(Ordering::SeqCst)
    }

    fn mark_rewriting(&self) -> Rewriting<'_> {
        self.rewriting.store(true, Ordering::SeqCst);
        Rewriting(&self.rewriting)
    }

    fn db(&self) -> RwLockReadGuard<'_, redb::Database> {
        self.db
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A read transaction: a consistent snapshot of every table.
    pub(crate) fn read_tx(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db().begin_read().at(&self.path)
    }

    /// The gate between a person's change of a task ([`Store::replace_task_audited`]: approve,
    /// deny, resolve, withdraw; and a withdrawal's removal of its record,
    /// [`Store::withdraw_record`], which must commit before a dispatch wave's withdrawal check
    /// or after its intents, never in between; and `Agent::purge` from its read of the open
    /// tasks to its commit) and the poll cycle, which reads tasks, decides, and writes
    /// its copies back. A change committed between the cycle's read and its write would be
    /// overwritten by the older copy: a denial lost, and a later approval would send the IDAT
    /// after all (found by the model checker, ARCHITECTURE.md "Durability argument"). The
    /// cycle holds the gate from its read to its write (no network request in between); a
    /// person's change waits for it, then its own check against the stored task decides.
    pub fn task_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic while it was held left nothing half-changed.
        self.task_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One table, read from a fresh snapshot.
    pub(crate) fn read(&self, def: Def) -> Result<RTree<'_>, StoreError> {
        rtree(&self.read_tx()?, def, &self.path)
    }

    /// Runs `f` in one write transaction and commits it without waiting for the disk: durable
    /// with the next [`Store::flush`]. An error from `f` aborts the transaction (nothing of it
    /// is written).
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let db = self.db();
        let mut tx = db.begin_write().at(&self.path)?;
        tx.set_durability(redb::Durability::None).at(&self.path)?;
        match f(&tx) {
            Ok(out) => {
                tx.commit().at(&self.path)?;
                Ok(out)
            }
            Err(e) => {
                let _ = tx.abort();
                Err(e)
            }
        }
    }

    fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        error::corrupt(&self.path, detail)
    }
}

/// One write transaction committed durably (fsynced, quick-repair: see "Durability").
pub(crate) fn durable_commit<T>(
    db: &redb::Database,
    path: &Path,
    f: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut tx = db.begin_write().at(path)?;
    tx.set_durability(redb::Durability::Immediate).at(path)?;
    tx.set_quick_repair(true);
    match f(&tx) {
        Ok(out) => {
            tx.commit().at(path)?;
            Ok(out)
        }
        Err(e) => {
            let _ = tx.abort();
            Err(e)
        }
    }
}

/// Removes what a rewrite interrupted by a crash left behind (never the live file).
fn remove_stale_rewrite(path: &Path) -> Result<(), StoreError> {
    let stale = path.join(REWRITE_FILE);
    match std::fs::remove_file(&stale) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(error::from_io(&stale, e)),
    }
}

/// Opens (creating if missing) the redb file with the store's cache size.
pub(crate) fn open_db(
    file: &Path,
    cache_capacity: u64,
    dir: &Path,
) -> Result<redb::Database, StoreError> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(usize::try_from(cache_capacity).unwrap_or(usize::MAX));
    builder.create(file).at(dir)
}

/// Creates the tables, then checks identity, schema and key; each step that writes commits
/// durably before the next (see `meta` and `migrate`).
pub(crate) fn prepare(
    db: &redb::Database,
    path: &Path,
    keys: &crypto::StoreKeys,
) -> Result<(), StoreError> {
    create_tables(db, path)?;
    // Identity before migration: an emptied database must not be "migrated" into a new store.
    meta::verify_or_install_identity(db, path)?;
    // The key before migration: a migration seals under the key, which must be the store's.
    meta::verify_or_install_key_check(db, keys, path)?;
    migrate::bring_up_to_date(db, keys, path)?;
    Ok(())
}

/// Creates the tables a store lacks (all of them in a new one), durably.
pub(crate) fn create_tables(db: &redb::Database, path: &Path) -> Result<(), StoreError> {
    use redb::TableHandle as _;
    let tx = db.begin_read().at(path)?;
    let present: Vec<String> = tx
        .list_tables()
        .at(path)?
        .map(|t| t.name().to_string())
        .collect();
    drop(tx);
    if ALL_TABLES
        .iter()
        .all(|d| present.iter().any(|p| p == d.name()))
    {
        return Ok(());
    }
    durable_commit(db, path, |tx| {
        for def in ALL_TABLES {
            tx.open_table(def).at(path)?;
        }
        Ok(())
    })
}

/// Sum of the lengths of the regular files in a directory.
pub(crate) fn dir_file_bytes(dir: &Path) -> Result<u64, StoreError> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).map_err(|e| error::from_io(dir, e))? {
        let entry = entry.map_err(|e| error::from_io(dir, e))?;
        let meta = entry
            .metadata()
            .map_err(|e| error::from_io(&entry.path(), e))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}

/// Creates the store directory if it is missing, accessible to the agent's user only:
/// pseudonyms, local ids and sealed IDAT are nobody else's business, and redb creates its file
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

/// Development builds kept the store in sled (files `db` and `conf` in the directory). No
/// release wrote one, and this version has no sled code to read it: say so instead of creating
/// a second, empty store next to it.
fn refuse_sled_store(path: &Path) -> Result<(), StoreError> {
    if path.join("conf").is_file() && path.join("db").is_file() && !path.join(DB_FILE).exists() {
        return Err(StoreError::SledStore {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Takes the store's `flock`, retrying for `wait` while another holder has it.
///
/// The agent's own lock file, not redb's: redb 4.3 and later lock byte ranges of the database
/// file in a protocol that has changed across versions, whereas `check`, `restore`, `status`
/// and the control channel need one simple, stable test of "does a daemon hold this store"
/// that does not open the database ([`probe_lock`]). redb's own lock stays in force beneath.
fn take_lock(path: &Path, wait: std::time::Duration) -> Result<File, StoreError> {
    let lock_path = path.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| error::from_io(&lock_path, e))?;
    let mut pause = std::time::Duration::from_millis(5);
    let mut waited = std::time::Duration::ZERO;
    loop {
        match try_flock(&file) {
            Ok(true) => return Ok(file),
            Ok(false) if waited < wait => {
                std::thread::sleep(pause);
                waited += pause;
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            Ok(false) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(e) => return Err(error::from_io(&lock_path, e)),
        }
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when another open file description holds it.
#[cfg(unix)]
fn try_flock(file: &File) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor owned by `file`, which outlives the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(err),
    }
}

#[cfg(not(unix))]
fn try_flock(_file: &File) -> std::io::Result<bool> {
    Ok(true)
}

/// Who holds the store's lock, seen without opening the store.
#[derive(Debug)]
pub enum LockState {
    /// Nobody: the probe took the lock and gave it back at once.
    Free,
    /// Another holder (in practice a running agent).
    Held,
    /// No store there yet (no lock file, or not a directory).
    NoDatabase,
    /// The file or its lock could not be read; opening the store decides.
    Unknown(std::io::Error),
}

/// Probes the store's `flock` (on `<store>/ttp-agent-store.lock`) without opening the store.
/// The probe's own lock is released before returning, so opening the store afterwards is not
/// blocked by it; a holder that comes in between is caught when the store is opened.
pub fn probe_lock(path: &Path) -> LockState {
    let file = match std::fs::File::open(path.join(LOCK_FILE)) {
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
    match try_flock(&file) {
        // Closing `file` releases the probe's lock.
        Ok(true) => LockState::Free,
        Ok(false) => LockState::Held,
        Err(e) => LockState::Unknown(e),
    }
}

/// Clears [`Store::rewriting`] however the rewrite ends.
struct Rewriting<'a>(&'a AtomicBool);

impl Drop for Rewriting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn store_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::Store>();
        assert_send_sync::<super::StoreOptions>();
    }

    /// A rewrite announces itself before it waits for the database (a command arriving
    /// meanwhile says what it waits for), and clears the mark when it is done.
    #[test]
    fn a_rewrite_is_visible_while_it_waits_and_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = super::StoreOptions::new(dir.path().join("store"), super::IdatKey::generate());
        let store = super::Store::open(&opts).expect("open");
        assert!(!store.rewriting());
        std::thread::scope(|s| {
            // A reader holds the database: the rewrite must wait for it.
            let held = store.db();
            let rewrite = s.spawn(|| store.rewrite());
            while !store.rewriting() {
                assert!(!rewrite.is_finished(), "the rewrite ended unseen");
                std::thread::yield_now();
            }
            drop(held);
            rewrite.join().expect("no panic").expect("rewrite");
        });
        assert!(!store.rewriting(), "cleared when done");
        drop(store);
        super::Store::open(&opts).expect("the rewritten store opens");
    }
}
