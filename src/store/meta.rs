//! The `meta` tree: sequence counters, named timestamps and strings, the IDAT key check.
//!
//! Keys are ASCII names. Counters are `u64` big-endian, times `i64` big-endian nanoseconds,
//! strings UTF-8. User-chosen names live under a prefix (`time:`, `str:`) so they can never
//! collide with the store's own keys.

use std::path::Path;

use redb::ReadableDatabase as _;

use chrono::{DateTime, Utc};

use super::codec::{from_nanos, nanos, read_i64, read_u64, u64_value};
use super::crypto::StoreKeys;
use super::{META, RECORDS, Store, StoreError, WTree, durable_commit, error, rtree, wtree};
use crate::domain::RegistrationBlocked;

pub(crate) const SCHEMA_VERSION: &[u8] = b"schema_version";
const POLL_SEQ: &[u8] = b"poll_seq";
const BATCH_ID: &[u8] = b"batch_id";
pub(crate) const AUDIT_SEQ: &[u8] = b"audit_seq";
pub(crate) const KEY_CHECK: &[u8] = b"key_check";
const TIME_PREFIX: &str = "time:";
const STRING_PREFIX: &str = "str:";

const KEY_CHECK_AAD: &[u8] = b"ttp-agent/store/key-check";
const KEY_CHECK_PLAINTEXT: &[u8] = b"ttp-agent IDAT key check v1";

// The names of the meta values the agent keeps. They are the store's: every module that reads
// one (status, admin, check) finds it here instead of importing the module that writes it.

/// The meta string under which the agent records the fingerprint of the encoding profile the
/// store's filters were made with (so a changed profile is noticed before records are mixed).
pub const META_PROFILE_FINGERPRINT: &str = "profile_fingerprint";
/// Time of the last successful poll cycle.
pub const META_LAST_POLL_OK: &str = "last_poll_ok";
/// Time of the last retention purge (the cycle purges at most hourly).
pub const META_LAST_PURGE: &str = "last_purge";
/// The [`crate::domain::ListingSummary`] of the last successful poll (JSON).
pub const META_LAST_LISTING: &str = "last_listing";
/// The [`RegistrationBlocked`] state (JSON; `null` when none).
pub const META_REGISTRATION_BLOCKED: &str = "registration_blocked";
/// The pseudonym hand-over webhook's delivery state (`handover::WebhookState`, JSON).
pub const META_HANDOVER_WEBHOOK_STATE: &str = "handover_webhook_state";

impl Store {
    /// Increments the poll sequence and returns the new value; the first call returns 1.
    pub fn next_poll_seq(&self) -> Result<u64, StoreError> {
        self.increment(POLL_SEQ)
    }

    /// The last value [`Store::next_poll_seq`] returned (0 before the first poll).
    pub fn last_poll_seq(&self) -> Result<u64, StoreError> {
        self.read_counter(POLL_SEQ)
    }

    /// Allocates the next `$requestPsnFromBfWorkflow` batch number (1, 2, ...).
    pub fn next_batch_id(&self) -> Result<u64, StoreError> {
        self.increment(BATCH_ID)
    }

    pub fn set_meta_time(&self, name: &str, t: DateTime<Utc>) -> Result<(), StoreError> {
        let value = nanos(t)?.to_be_bytes();
        let key = prefixed(TIME_PREFIX, name)?;
        self.write(|tx| wtree(tx, META, &self.path)?.insert(&key, &value).map(drop))
    }

    pub fn meta_time(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self.get_meta(&prefixed(TIME_PREFIX, name)?)? {
            None => Ok(None),
            Some(v) => read_i64(&v)
                .map(|n| Some(from_nanos(n)))
                .ok_or_else(|| self.corrupt(format!("meta time {name:?} is not 8 bytes"))),
        }
    }

    /// Why registration is paused, if it is.
    pub fn registration_blocked(&self) -> Result<Option<RegistrationBlocked>, StoreError> {
        Ok(self
            .get_meta_string(META_REGISTRATION_BLOCKED)?
            .and_then(|text| serde_json::from_str::<Option<RegistrationBlocked>>(&text).ok())
            .flatten())
    }

    pub fn set_registration_blocked(
        &self,
        blocked: Option<&RegistrationBlocked>,
    ) -> Result<(), StoreError> {
        // Serialising plain data cannot fail; "null" is the harmless fallback.
        let text = serde_json::to_string(&blocked).unwrap_or_else(|_| "null".into());
        self.set_meta_string(META_REGISTRATION_BLOCKED, &text)
    }

    pub fn set_meta_string(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let key = prefixed(STRING_PREFIX, name)?;
        self.write(|tx| {
            wtree(tx, META, &self.path)?
                .insert(&key, value.as_bytes())
                .map(drop)
        })
    }

    pub fn get_meta_string(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.get_meta(&prefixed(STRING_PREFIX, name)?)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| self.corrupt(format!("meta string {name:?} is not UTF-8"))),
        }
    }

    /// The store's schema version (see `migrate`).
    pub fn schema_version(&self) -> Result<u64, StoreError> {
        self.read_counter(SCHEMA_VERSION)
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(META)?.get(key)
    }

    pub(super) fn read_counter(&self, key: &[u8]) -> Result<u64, StoreError> {
        match self.get_meta(key)? {
            None => Ok(0),
            Some(v) => read_u64(&v).ok_or_else(|| {
                self.corrupt(format!(
                    "meta counter {:?} is not 8 bytes",
                    String::from_utf8_lossy(key)
                ))
            }),
        }
    }

    fn increment(&self, key: &[u8]) -> Result<u64, StoreError> {
        self.write(|tx| increment_in(&mut wtree(tx, META, &self.path)?, key, &self.path))
    }
}

/// Increments a counter of the `meta` table inside a write transaction.
pub(crate) fn increment_in(
    meta: &mut WTree<'_, '_>,
    key: &[u8],
    path: &Path,
) -> Result<u64, StoreError> {
    let current = match meta.get(key)? {
        None => 0,
        Some(v) => read_u64(&v).ok_or_else(|| {
            error::corrupt(
                path,
                format!(
                    "meta counter {:?} is not 8 bytes",
                    String::from_utf8_lossy(key)
                ),
            )
        })?,
    };
    let next = current.checked_add(1).ok_or_else(|| StoreError::Invalid {
        what: "meta counter",
        why: format!("{:?} overflowed", String::from_utf8_lossy(key)),
    })?;
    meta.insert(key, &u64_value(next))?;
    Ok(next)
}

fn prefixed(prefix: &str, name: &str) -> Result<Vec<u8>, StoreError> {
    if name.is_empty() {
        return Err(StoreError::Invalid {
            what: "meta name",
            why: "the name is empty".to_string(),
        });
    }
    Ok([prefix.as_bytes(), name.as_bytes()].concat())
}

/// Checks that `cipher` is the store's IDAT key. Returns whether it wrote anything.
///
/// A store without a key check (new, or restored from before there was one) gets one sealed
/// under the configured key; if it already holds sealed IDAT, that is tried first, so a wrong
/// key is refused rather than certified.
pub(crate) fn verify_or_install_key_check(
    db: &redb::Database,
    keys: &StoreKeys,
    path: &Path,
) -> Result<bool, StoreError> {
    let cipher = &keys.idat;
    let tx = db.begin_read().map_err(|e| error::from_redb(path, e))?;
    if let Some(sealed) = rtree(&tx, META, path)?.get(KEY_CHECK)? {
        return match cipher.open(KEY_CHECK_AAD, &sealed) {
            Ok(plain) if plain.as_slice() == KEY_CHECK_PLAINTEXT => Ok(false),
            _ => Err(StoreError::WrongKey),
        };
    }
    let records = rtree(&tx, RECORDS, path)?;
    if let Some((local_id, sealed)) = super::records::first_sealed_idat(&records, path)?
        && cipher.open(local_id.as_bytes(), &sealed).is_err()
    {
        return Err(StoreError::WrongKey);
    }
    drop(records);
    drop(tx);
    let sealed = cipher.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
    durable_commit(db, path, |tx| {
        wtree(tx, META, path)?.insert(KEY_CHECK, &sealed).map(drop)
    })?;
    Ok(true)
}

/// Whether the `meta` table holds a key check (a restore refuses a backup without one instead
/// of certifying whatever key restores it).
pub(crate) fn has_key_check(meta: &WTree<'_, '_>) -> Result<bool, StoreError> {
    meta.contains_key(KEY_CHECK)
}

const STORE_ID: &[u8] = b"store_id";

/// Sets up a brand-new store (a database file just created, no marker) in one durable commit:
/// every table, the store id, the key check and the current schema version, then the marker.
/// What `Store::open` would otherwise do in seven durable commits (tables, identity, key check,
/// four migration steps on empty tables), each an `fsync`, before the first record is stored.
pub(crate) fn install_new_store(
    db: &redb::Database,
    keys: &StoreKeys,
    path: &Path,
) -> Result<(), StoreError> {
    let mut id = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut id);
    let id = hex::encode(id);
    let sealed = keys.idat.seal(KEY_CHECK_AAD, KEY_CHECK_PLAINTEXT)?;
    durable_commit(db, path, |tx| {
        for def in super::ALL_TABLES {
            wtree(tx, def, path)?;
        }
        let mut meta = wtree(tx, META, path)?;
        meta.insert(STORE_ID, id.as_bytes())?;
        meta.insert(KEY_CHECK, &sealed)?;
        meta.insert(SCHEMA_VERSION, &u64_value(super::migrate::CURRENT_SCHEMA))
            .map(drop)
    })?;
    write_marker(path, &id, Utc::now())
}

/// The file next to the database file that remembers which store lives in the directory.
pub(crate) const MARKER_FILE: &str = "ttp-agent-store.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Marker {
    store_id: String,
    created_at: DateTime<Utc>,
}

/// Ties the database file to the directory's marker file, so that data which vanished is
/// noticed.
///
/// A database file that was deleted or replaced by an empty one would otherwise be created
/// afresh, and the agent would carry on as a brand-new site store. The marker (written once,
/// when the store is created) says a store with this id lives here; `meta` holds the same id.
/// Returns whether it wrote anything.
pub(crate) fn verify_or_install_identity(
    db: &redb::Database,
    path: &Path,
) -> Result<bool, StoreError> {
    let marker_path = path.join(MARKER_FILE);
    let marker: Option<Marker> = match std::fs::read(&marker_path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            error::corrupt(
                path,
                format!("the marker file {MARKER_FILE} does not decode: {e}"),
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(error::from_io(&marker_path, e)),
    };
    let stored = {
        let tx = db.begin_read().map_err(|e| error::from_redb(path, e))?;
        rtree(&tx, META, path)?
            .get(STORE_ID)?
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    match (stored, marker) {
        (Some(id), Some(marker)) if id == marker.store_id => Ok(false),
        (Some(id), Some(marker)) => Err(error::corrupt(
            path,
            format!(
                "the database files belong to store {id}, but the directory's marker names store {}",
                marker.store_id
            ),
        )),
        // A store restored from a backup, or copied without the marker: adopt its id.
        (Some(id), None) => {
            write_marker(path, &id, Utc::now())?;
            Ok(false)
        }
        (None, Some(marker)) => Err(error::corrupt(
            path,
            format!(
                "the database files are empty or unreadable, but store {} was created here on {}; its data is gone",
                marker.store_id,
                marker.created_at.format("%Y-%m-%d")
            ),
        )),
        (None, None) => {
            let mut id = [0u8; 16];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut id);
            let id = hex::encode(id);
            // The id must be durable before the marker claims it.
            durable_commit(db, path, |tx| {
                wtree(tx, META, path)?
                    .insert(STORE_ID, id.as_bytes())
                    .map(drop)
            })?;
            write_marker(path, &id, Utc::now())?;
            Ok(true)
        }
    }
}

fn write_marker(dir: &Path, store_id: &str, created_at: DateTime<Utc>) -> Result<(), StoreError> {
    let marker_path = dir.join(MARKER_FILE);
    let partial = dir.join(format!("{MARKER_FILE}.partial"));
    let json = serde_json::to_vec_pretty(&Marker {
        store_id: store_id.to_string(),
        created_at,
    })
    .map_err(|e| StoreError::Codec {
        what: "store marker",
        detail: e.to_string(),
    })?;
    let io = |e| error::from_io(&marker_path, e);
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&partial).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&partial, &marker_path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)
}

impl Store {
    /// The random id given to this store when it was created (kept across backup / restore).
    pub fn store_id(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .get_meta(STORE_ID)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}
