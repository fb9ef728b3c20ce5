//! Helpers of the tests that work on the store directly: temporary stores, task kinds, files on
//! disk, the raw redb file. The synthetic records and tasks are `ttp_agent::testkit`'s (shared
//! with the unit tests and the benches), with this module's fixed times. (The `it` and `soak`
//! binaries each use a different subset, hence the `dead_code` allowance.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ttp_agent::domain::{LocalRecord, RecordHead, RecordState, TaskRecord, TaskState};
use ttp_agent::store::{IdatKey, Store, StoreOptions};
use ttp_proto::{BloomFilter, ElementRequest, IdatElement, SendIdatSubject, TaskKind};

/// A store in a temporary directory, with the options to reopen it.
pub struct TempStore {
    pub dir: tempfile::TempDir,
    pub opts: StoreOptions,
}

impl TempStore {
    pub fn new() -> TempStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = StoreOptions::new(dir.path().join("store"), IdatKey::generate());
        TempStore { dir, opts }
    }

    pub fn open(&self) -> Store {
        Store::open(&self.opts).expect("store opens")
    }

    pub fn path(&self) -> &Path {
        &self.opts.path
    }

    /// A path in the temporary directory, outside the store.
    pub fn sibling(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A fixed instant (the tests' times have nanoseconds, to prove exact round trips).
pub use ttp_agent::testkit::at as t;
// Synthetic IDAT; used by `it`'s store tests, not by `soak`.
#[allow(unused_imports)]
pub use ttp_agent::testkit::idat;

/// A deterministic 225-byte filter per seed.
pub fn filter(seed: u32) -> Vec<u8> {
    ttp_agent::testkit::filter(seed.into())
}

/// A `New` record with `filter(seed)` and synthetic IDAT.
pub fn record(local_id: &str, seed: u32) -> LocalRecord {
    ttp_agent::testkit::record(local_id, seed.into(), t("2025-01-02T03:04:05.123456789Z"))
}

pub fn task(key: &str, kind: TaskKind, state: TaskState) -> TaskRecord {
    ttp_agent::testkit::task(key, kind, state, t("2025-02-01T00:00:00Z"))
}

pub fn dic_psn(seed: u32) -> TaskKind {
    TaskKind::DicPsnAvailable {
        bloom_filter: BloomFilter(filter(seed)),
        target: "dic-test".to_string(),
        pseudonym: format!("psn-{seed}"),
    }
}

pub fn send_idat(task_id: &str) -> TaskKind {
    TaskKind::SendIdat {
        task_id: task_id.to_string(),
        subject: SendIdatSubject::Pseudonym("psn-7".to_string()),
        elements: vec![
            ElementRequest::Known(IdatElement::Given),
            ElementRequest::Unknown("shoe-size".to_string()),
        ],
    }
}

pub fn repeat(seed: u32) -> TaskKind {
    TaskKind::RepeatRequest {
        study: "study-x".to_string(),
        bloom_filter: BloomFilter(filter(seed)),
        target: "dic-test".to_string(),
    }
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable dir") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        if entry.file_type().expect("file type").is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// `r`'s head as registration leaves it: pseudonymised, with a pseudonym derived from its id.
pub fn pseudonymised_head(r: &LocalRecord) -> RecordHead {
    RecordHead {
        local_id: r.head.local_id.clone(),
        bloom_filter: r.head.bloom_filter.clone(),
        state: RecordState::Pseudonymised,
        pseudonym: Some(format!("psn-{}", r.head.local_id)),
        created_at: r.head.created_at,
        updated_at: r.head.updated_at,
    }
}

/// Asserts that no file in `files` shows any of `filters` (whole, its first or last 32 bytes,
/// or the first 16 bytes of its plain SHA-256, the filter index key before it was keyed) or
/// any of `names`.
pub fn assert_no_filter_or_name(files: &[PathBuf], filters: &[Vec<u8>], names: &[&str]) {
    use sha2::Digest as _;
    assert!(!files.is_empty());
    for f in files {
        let bytes = std::fs::read(f).expect("read");
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        for (i, bf) in filters.iter().enumerate() {
            let digest = sha2::Sha256::digest(bf);
            for needle in [&bf[..], &bf[..32], &bf[bf.len() - 32..], &digest[..16]] {
                assert!(!has(needle), "filter {i} in {}", f.display());
            }
        }
        for name in names {
            assert!(!has(name.as_bytes()), "{name} in {}", f.display());
        }
    }
}

/// Whether `needle` occurs in any file under `dir`.
pub fn bytes_on_disk_contain(dir: &Path, needle: &[u8]) -> bool {
    files_under(dir).iter().any(|f| {
        std::fs::read(f)
            .expect("readable file")
            .windows(needle.len())
            .any(|w| w == needle)
    })
}

/// The store's redb file opened directly (to simulate old layouts and damage), with the few
/// table operations the tests need, each one committed durably on its own.
pub struct RawDb(redb::Database);

/// One table of a [`RawDb`].
pub struct RawTree<'a> {
    db: &'a redb::Database,
    def: redb::TableDefinition<'static, &'static [u8], &'static [u8]>,
}

fn def(name: &str) -> redb::TableDefinition<'static, &'static [u8], &'static [u8]> {
    // Table names live as long as the test; leaking a few short strings is harmless here.
    redb::TableDefinition::new(Box::leak(name.to_string().into_boxed_str()))
}

impl RawDb {
    pub fn open_tree(&self, name: &str) -> Result<RawTree<'_>, redb::Error> {
        Ok(RawTree {
            db: &self.0,
            def: def(name),
        })
    }

    /// Deletes a table; whether it existed.
    pub fn drop_tree(&self, name: &str) -> Result<bool, redb::Error> {
        let tx = self.0.begin_write()?;
        let existed = tx.delete_table(def(name))?;
        tx.commit()?;
        Ok(existed)
    }

    /// Every write above is committed durably already.
    pub fn flush(&self) -> Result<(), redb::Error> {
        Ok(())
    }
}

impl RawTree<'_> {
    fn write<T>(
        &self,
        f: impl FnOnce(&mut redb::Table<'_, &'static [u8], &'static [u8]>) -> Result<T, redb::Error>,
    ) -> Result<T, redb::Error> {
        let tx = self.db.begin_write()?;
        let out = {
            let mut t = tx.open_table(self.def)?;
            f(&mut t)?
        };
        tx.commit()?;
        Ok(out)
    }

    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<Vec<u8>>, redb::Error> {
        self.write(|t| {
            Ok(t.insert(key.as_ref(), value.as_ref())?
                .map(|v| v.value().to_vec()))
        })
    }

    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, redb::Error> {
        self.write(|t| Ok(t.remove(key.as_ref())?.map(|v| v.value().to_vec())))
    }

    pub fn clear(&self) -> Result<(), redb::Error> {
        self.write(|t| Ok(t.retain(|_, _| false)?))
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, redb::Error> {
        use redb::ReadableDatabase as _;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(self.def)?;
        Ok(t.get(key.as_ref())?.map(|v| v.value().to_vec()))
    }
}

/// Opens the store's redb file directly (see [`RawDb`]); the store must be closed.
pub fn raw_db(path: &Path) -> RawDb {
    let file = path.join(ttp_agent::store::DB_FILE);
    match redb::Database::open(&file) {
        Ok(db) => RawDb(db),
        Err(e) => panic!("raw redb open of {}: {e}", file.display()),
    }
}
