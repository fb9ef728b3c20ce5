//! Local records, their four indexes, and the record counters.
//!
//! Every write to `records` goes through one write transaction over `records`, `idx_bf`,
//! `idx_psn`, `idx_idat_due`, `idx_waiting_records` and `counts` (and `meta` + `psn_log` when a record gets a
//! pseudonym), so the indexes, counters and the pseudonym log can never disagree with the
//! records, not even after a crash. That is what lets [`Store::record_counts`] answer from one
//! key (the status page must stay fast at a million records) instead of scanning, and
//! [`Store::purge_idat`] read only the records whose IDAT is due (`idx_idat_due`: finished
//! records still holding IDAT, in `updated_at` order) instead of all of them every hour, and
//! registration only the records that wait for it (`idx_waiting_records`).

use std::path::Path;

use chrono::{DateTime, Utc};

use zeroize::Zeroizing;

use super::codec::{
    self, DIGEST_LEN, StoredRecord, StoredState, decode_record, digest16, encode_record,
    from_nanos, index_key, index_key_local_id, index_key_with, nanos, time_key, time_key_suffix,
    time_prefix,
};
use super::crypto::StoreKeys;
use super::{
    AUDIT, AuditEntry, COUNTS, IDX_BF, IDX_IDAT_DUE, IDX_PSN, IDX_WAITING, IndexCheck, META,
    PSN_LOG, RECORDS, RTree, Store, StoreError, WTree, error, fill_index, psn_log, rtree, wtree,
};
use crate::domain::{LocalRecord, RecordHead, RecordState};

/// Records per transaction in `insert_records` and `purge_idat`: large enough to amortise a
/// transaction, small enough that its write set stays a few hundred KiB.
const CHUNK: usize = 512;

const COUNTS_KEY: &[u8] = b"records";
const COUNTERS: usize = 8;

/// What [`Store::insert_records`] did with one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    /// New `local_id`: stored with its index entries.
    Inserted,
    /// The `local_id` is stored with the same filter: nothing written (re-running an import is
    /// harmless).
    Unchanged,
    /// The `local_id` is stored with a *different* filter: nothing written; the caller decides
    /// (the IDAT of a registered record changed, or two sources use one id).
    Conflict,
}

/// Record counters, maintained in the same transactions as the records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecordCounts {
    pub total: u64,
    pub new: u64,
    pub sending: u64,
    pub awaiting_clearing: u64,
    pub pseudonymised: u64,
    pub rejected: u64,
    /// Records whose pseudonym is known (whatever their state).
    pub with_pseudonym: u64,
    /// Records whose IDAT was purged.
    pub idat_purged: u64,
}

impl RecordCounts {
    fn to_array(self) -> [u64; COUNTERS] {
        [
            self.total,
            self.new,
            self.sending,
            self.awaiting_clearing,
            self.pseudonymised,
            self.rejected,
            self.with_pseudonym,
            self.idat_purged,
        ]
    }

    fn from_array(a: [u64; COUNTERS]) -> RecordCounts {
        let [
            total,
            new,
            sending,
            awaiting_clearing,
            pseudonymised,
            rejected,
            with_pseudonym,
            idat_purged,
        ] = a;
        RecordCounts {
            total,
            new,
            sending,
            awaiting_clearing,
            pseudonymised,
            rejected,
            with_pseudonym,
            idat_purged,
        }
    }

    fn to_bytes(self) -> Vec<u8> {
        self.to_array()
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    fn from_bytes(bytes: &[u8]) -> Option<RecordCounts> {
        if bytes.len() != COUNTERS * 8 {
            return None;
        }
        let mut a = [0u64; COUNTERS];
        for (n, chunk) in a.iter_mut().zip(bytes.chunks_exact(8)) {
            *n = codec::read_u64(chunk)?;
        }
        Some(RecordCounts::from_array(a))
    }

    fn add(&mut self, rec: &StoredRecord<'_>) {
        let mut a = self.to_array();
        for (n, c) in a.iter_mut().zip(contribution(rec)) {
            *n += u64::from(c);
        }
        *self = RecordCounts::from_array(a);
    }
}

/// Which counters one record adds 1 to.
fn contribution(rec: &StoredRecord<'_>) -> [bool; COUNTERS] {
    [
        true,
        matches!(rec.state, StoredState::New),
        matches!(rec.state, StoredState::Sending { .. }),
        matches!(rec.state, StoredState::AwaitingClearing),
        matches!(rec.state, StoredState::Pseudonymised),
        matches!(rec.state, StoredState::Rejected { .. }),
        rec.pseudonym.is_some(),
        rec.sealed_idat.is_none(),
    ]
}

/// A record's `idx_idat_due` key, if it belongs there: finished (`Pseudonymised` or `Rejected`)
/// and still holding IDAT, i.e. what [`Store::purge_idat`] may purge once its `updated_at` is
/// old enough.
fn idat_due_key(local_id: &str, rec: &StoredRecord<'_>) -> Option<Vec<u8>> {
    let finished = matches!(
        rec.state,
        StoredState::Pseudonymised | StoredState::Rejected { .. }
    );
    (finished && rec.sealed_idat.is_some()).then(|| time_key(rec.updated_at, local_id.as_bytes()))
}

/// The state byte of an `idx_waiting_records` key.
const WAITING_NEW: u8 = 0;
const WAITING_SENDING: u8 = 1;
const WAITING_CLEARING: u8 = 2;

/// A record's `idx_waiting_records` key, if it waits for registration work: `New`, `Sending`
/// (a batch in flight or interrupted) or `AwaitingClearing` (rechecked once its clearing has
/// been quiet for a while, so the key orders by `updated_at` within the state).
fn waiting_key(local_id: &str, rec: &StoredRecord<'_>) -> Option<Vec<u8>> {
    let tag = match rec.state {
        StoredState::New => WAITING_NEW,
        StoredState::Sending { .. } => WAITING_SENDING,
        StoredState::AwaitingClearing => WAITING_CLEARING,
        StoredState::Pseudonymised | StoredState::Rejected { .. } => return None,
    };
    let mut key = vec![tag];
    key.extend_from_slice(&time_key(rec.updated_at, local_id.as_bytes()));
    Some(key)
}

/// Counter changes accumulated in a transaction and applied once at its end.
#[derive(Default)]
struct Delta([i64; COUNTERS]);

impl Delta {
    fn plus(&mut self, rec: &StoredRecord<'_>) {
        for (d, c) in self.0.iter_mut().zip(contribution(rec)) {
            *d += i64::from(c);
        }
    }

    fn minus(&mut self, rec: &StoredRecord<'_>) {
        for (d, c) in self.0.iter_mut().zip(contribution(rec)) {
            *d -= i64::from(c);
        }
    }

    fn apply(&self, counts: &mut WTree<'_, '_>, path: &Path) -> Result<(), StoreError> {
        if self.0.iter().all(|d| *d == 0) {
            return Ok(());
        }
        let current = match counts.get(COUNTS_KEY)? {
            None => RecordCounts::default(),
            Some(v) => RecordCounts::from_bytes(&v)
                .ok_or_else(|| error::corrupt(path, "the record counters value is malformed"))?,
        };
        let mut a = current.to_array();
        for (n, d) in a.iter_mut().zip(self.0) {
            // A counter going below zero would mean a bug in this module, not bad input; keep
            // the store writable and let `check_integrity` (`ttp-agent check --store`) report
            // the drift.
            *n = n.saturating_add_signed(d);
        }
        counts.insert(COUNTS_KEY, &RecordCounts::from_array(a).to_bytes())?;
        Ok(())
    }
}

/// A record ready to be written: validated, IDAT sealed (before the write transaction, which
/// excludes every other writer while it runs).
struct Prepared<'a> {
    rec: &'a LocalRecord,
    value: Vec<u8>,
    /// The filter index's digest of the record's filter.
    bf_tag: [u8; DIGEST_LEN],
}

/// What a manual change expects the stored record to be (see
/// [`Store::update_record_audited`]). Sealed IDAT is compared by presence only: sealing uses
/// a fresh nonce, so equal IDAT does not mean equal bytes.
struct Guard<'a> {
    bloom_filter: &'a [u8],
    has_idat: bool,
    state: StoredState<'a>,
    pseudonym: Option<&'a str>,
    created_at: i64,
    updated_at: i64,
}

impl Guard<'_> {
    /// `filter` is the stored record's filter, unsealed.
    fn matches(&self, stored: &StoredRecord<'_>, filter: &[u8]) -> bool {
        filter == self.bloom_filter
            && stored.sealed_idat.is_some() == self.has_idat
            && stored.state == self.state
            && stored.pseudonym == self.pseudonym
            && stored.created_at == self.created_at
            && stored.updated_at == self.updated_at
    }
}

impl Store {
    fn prepare<'a>(&self, rec: &'a LocalRecord) -> Result<Prepared<'a>, StoreError> {
        if rec.head.local_id.is_empty() {
            return Err(StoreError::Invalid {
                what: "record",
                why: "the local id is empty".to_string(),
            });
        }
        let sealed = match &rec.idat {
            None => None,
            Some(idat) => Some(self.keys.idat.seal_with(
                rec.head.local_id.as_bytes(),
                codec::idat_plaintext_len(idat),
                |buf| codec::encode_idat_into(idat, buf),
            )?),
        };
        let sealed_filter = self
            .keys
            .filter
            .seal(rec.head.local_id.as_bytes(), &rec.head.bloom_filter)?;
        let value = encode_record(&StoredRecord {
            sealed_filter: &sealed_filter,
            sealed_idat: sealed.as_deref(),
            state: StoredState::from_state(&rec.head.state),
            pseudonym: rec.head.pseudonym.as_deref(),
            created_at: nanos(rec.head.created_at)?,
            updated_at: nanos(rec.head.updated_at)?,
        })?;
        Ok(Prepared {
            rec,
            value,
            bf_tag: self.keys.filter_tag(&rec.head.bloom_filter),
        })
    }

    /// Stores new records with their index entries. Per record the outcome is `Inserted`,
    /// `Unchanged` (same `local_id`, same filter: nothing written) or `Conflict` (same
    /// `local_id`, different filter: nothing written). Each record is written atomically with
    /// its index entries and the counters; the records are committed in transactions of up to
    /// 512, so after a crash a prefix of the slice may be stored (calling again with the same
    /// slice is idempotent).
    pub fn insert_records(&self, recs: &[LocalRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut outcomes = Vec::with_capacity(recs.len());
        for chunk in recs.chunks(CHUNK) {
            let prepared = chunk
                .iter()
                .map(|r| self.prepare(r))
                .collect::<Result<Vec<_>, _>>()?;
            let path = self.path.as_path();
            let done = self.write(|tx| {
                let mut t = RecordTables::open(tx, path)?;
                let mut delta = Delta::default();
                let mut out = Vec::with_capacity(prepared.len());
                for p in &prepared {
                    let id = p.rec.head.local_id.as_str();
                    if let Some(existing) = t.records.get(id.as_bytes())? {
                        let old = decode_in_tx(&existing, id, path)?;
                        let old_filter = open_filter(&self.keys, id, old.sealed_filter, path)?;
                        out.push(if *old_filter == p.rec.head.bloom_filter {
                            InsertOutcome::Unchanged
                        } else {
                            InsertOutcome::Conflict
                        });
                        continue;
                    }
                    t.records.insert(id.as_bytes(), p.value.as_slice())?;
                    t.bf_index.insert(&index_key_with(&p.bf_tag, id), &[])?;
                    let stored = decode_in_tx(&p.value, id, path)?;
                    if let Some(psn) = stored.pseudonym {
                        t.psn_index.insert(&index_key(psn.as_bytes(), id), &[])?;
                        psn_log::append_in(
                            &mut t.meta,
                            &mut t.psn_log,
                            id,
                            psn,
                            stored.updated_at,
                            path,
                        )?;
                    }
                    if let Some(due) = idat_due_key(id, &stored) {
                        t.idat_due.insert(&due, &[])?;
                    }
                    if let Some(waiting) = waiting_key(id, &stored) {
                        t.waiting.insert(&waiting, &[])?;
                    }
                    delta.plus(&stored);
                    out.push(InsertOutcome::Inserted);
                }
                delta.apply(&mut t.counts, path)?;
                Ok(out)
            })?;
            outcomes.extend(done);
        }
        Ok(outcomes)
    }

    /// Replaces stored records (state, pseudonym, IDAT, times; a changed filter is re-indexed
    /// too) and keeps both indexes and the counters right. A record that gets a pseudonym it
    /// did not have (none before, or a different one) is appended to the pseudonym log in the
    /// same transaction (see `psn_log`). All records of the call are one transaction: after a
    /// crash either all changes are present or none. A `local_id` that is not stored fails the
    /// whole call with [`StoreError::UnknownRecord`]. Keep slices to a few thousand records: the
    /// transaction excludes every other writer while it runs.
    pub fn update_records(&self, recs: &[LocalRecord]) -> Result<(), StoreError> {
        let prepared = recs
            .iter()
            .map(|r| self.prepare(r))
            .collect::<Result<Vec<_>, _>>()?;
        self.write_updates(&prepared, None, None).map(drop)
    }

    /// A manual change to one record, with its audit entry, in one transaction, and only if
    /// the stored record is still the one the change was made from: `expected` (as read
    /// before) must match the stored record's filter, state, pseudonym, times and whether it
    /// holds IDAT; every writer of a record moves its `updated_at`, so a concurrent change is
    /// noticed. Returns `false`, writing nothing, when the record changed meanwhile (read it
    /// again and retry, or report).
    pub fn update_record_audited(
        &self,
        expected: &LocalRecord,
        new: &LocalRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        if expected.head.local_id != new.head.local_id {
            return Err(StoreError::Invalid {
                what: "record update",
                why: "the expected and the new record have different local ids".to_string(),
            });
        }
        let prepared = [self.prepare(new)?];
        let guard = Guard {
            bloom_filter: &expected.head.bloom_filter,
            has_idat: expected.idat.is_some(),
            state: StoredState::from_state(&expected.head.state),
            pseudonym: expected.head.pseudonym.as_deref(),
            created_at: nanos(expected.head.created_at)?,
            updated_at: nanos(expected.head.updated_at)?,
        };
        let audit = super::audit::encode_entry(audit)?;
        self.write_updates(&prepared, Some(&guard), Some(&audit))
    }

    fn write_updates(
        &self,
        prepared: &[Prepared<'_>],
        guard: Option<&Guard<'_>>,
        audit: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            let mut t = RecordTables::open(tx, path)?;
            let mut delta = Delta::default();
            for p in prepared {
                let id = p.rec.head.local_id.as_str();
                let Some(existing) = t.records.get(id.as_bytes())? else {
                    return Err(StoreError::UnknownRecord {
                        local_id: id.to_string(),
                    });
                };
                let old = decode_in_tx(&existing, id, path)?;
                let old_filter = open_filter(&self.keys, id, old.sealed_filter, path)?;
                if guard.is_some_and(|g| !g.matches(&old, &old_filter)) {
                    return Ok(false);
                }
                let new = decode_in_tx(&p.value, id, path)?;
                let old_tag = self.keys.filter_tag(&old_filter);
                t.replace(id, (&old, old_tag), (&new, p.bf_tag), &mut delta)?;
                t.records.insert(id.as_bytes(), p.value.as_slice())?;
            }
            delta.apply(&mut t.counts, path)?;
            if let Some(entry) = audit {
                super::audit::append_in(&mut t.meta, &mut wtree(tx, AUDIT, path)?, entry, path)?;
            }
            Ok(true)
        })
    }

    /// Writes the state, pseudonym and `updated_at` of stored records, keeping their sealed
    /// IDAT bytes (and `created_at`) exactly as stored: no IDAT is opened or sealed, which is
    /// what makes this the cheap path for registration. The pseudonym index, the pseudonym log
    /// and the counters change in the same transaction, as with [`Store::update_records`]; all
    /// heads of the call are one transaction. A `local_id` that is not stored fails the call
    /// with [`StoreError::UnknownRecord`], a head whose filter differs from the stored one with
    /// [`StoreError::Invalid`] (a new filter means new IDAT: use `update_records`).
    pub fn update_record_heads(&self, heads: &[RecordHead]) -> Result<(), StoreError> {
        let changes = heads
            .iter()
            .map(|h| {
                if h.local_id.is_empty() {
                    return Err(StoreError::Invalid {
                        what: "record",
                        why: "the local id is empty".to_string(),
                    });
                }
                Ok((h, StoredState::from_state(&h.state), nanos(h.updated_at)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let path = self.path.as_path();
        self.write(|tx| {
            let mut t = RecordTables::open(tx, path)?;
            let mut delta = Delta::default();
            for (head, state, updated_at) in &changes {
                let id = head.local_id.as_str();
                let Some(existing) = t.records.get(id.as_bytes())? else {
                    return Err(StoreError::UnknownRecord {
                        local_id: id.to_string(),
                    });
                };
                let old = decode_in_tx(&existing, id, path)?;
                let old_filter = open_filter(&self.keys, id, old.sealed_filter, path)?;
                if *old_filter != head.bloom_filter {
                    return Err(StoreError::Invalid {
                        what: "record head update",
                        why: format!(
                            "record {id:?} is stored with a different filter; a changed filter is written with its IDAT (update_records)"
                        ),
                    });
                }
                let new = StoredRecord {
                    state: *state,
                    pseudonym: head.pseudonym.as_deref(),
                    updated_at: *updated_at,
                    ..old
                };
                let value = encode_record(&new)?;
                // The sealed filter is kept as stored: same filter, same index entry.
                let tag = self.keys.filter_tag(&old_filter);
                t.replace(id, (&old, tag), (&new, tag), &mut delta)?;
                t.records.insert(id.as_bytes(), &value)?;
            }
            delta.apply(&mut t.counts, path)
        })
    }

    /// The head of the record stored under `local_id` (no IDAT opened).
    pub fn get_record_head(&self, local_id: &str) -> Result<Option<RecordHead>, StoreError> {
        match self.read(RECORDS)?.get(local_id.as_bytes())? {
            None => Ok(None),
            Some(v) => {
                let stored = decode_record(&v).map_err(|d| self.corrupt_record(local_id, &d))?;
                self.open_head(local_id, &stored).map(Some)
            }
        }
    }

    /// The record stored under `local_id`, IDAT opened.
    pub fn get_record(&self, local_id: &str) -> Result<Option<LocalRecord>, StoreError> {
        match self.read(RECORDS)?.get(local_id.as_bytes())? {
            None => Ok(None),
            Some(v) => self.to_local_record(local_id, &v).map(Some),
        }
    }

    /// All records registered with exactly this filter (several local ids may share one),
    /// ordered by `local_id`.
    pub fn records_by_bloom_filter(&self, bf: &[u8]) -> Result<Vec<LocalRecord>, StoreError> {
        self.lookup(
            IDX_BF,
            self.keys.filter_tag(bf),
            |id, stored| self.open_record(id, stored),
            |r| r.head.bloom_filter == bf,
        )
    }

    /// [`Store::records_by_bloom_filter`] without their IDAT (no seal opened): what setting a
    /// pseudonym needs, written back with [`Store::update_record_heads`].
    pub fn record_heads_by_bloom_filter(&self, bf: &[u8]) -> Result<Vec<RecordHead>, StoreError> {
        self.lookup(
            IDX_BF,
            self.keys.filter_tag(bf),
            |id, stored| self.open_head(id, &stored),
            |r| r.bloom_filter == bf,
        )
    }

    /// All records with this pseudonym, ordered by `local_id`. Several local records of one
    /// patient get the same pseudonym from the fTTP.
    pub fn records_by_pseudonym(&self, pseudonym: &str) -> Result<Vec<LocalRecord>, StoreError> {
        self.lookup(
            IDX_PSN,
            digest16(pseudonym.as_bytes()),
            |id, stored| self.open_record(id, stored),
            |r| r.head.pseudonym.as_deref() == Some(pseudonym),
        )
    }

    /// The record with this pseudonym with the smallest `local_id`; see
    /// [`Store::records_by_pseudonym`] when several records may share it.
    pub fn record_by_pseudonym(&self, pseudonym: &str) -> Result<Option<LocalRecord>, StoreError> {
        Ok(self.records_by_pseudonym(pseudonym)?.into_iter().next())
    }

    fn lookup<T>(
        &self,
        index: super::Def,
        prefix: [u8; DIGEST_LEN],
        open: impl Fn(&str, StoredRecord<'_>) -> Result<T, StoreError>,
        matches: impl Fn(&T) -> bool,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::new();
        let tx = self.read_tx()?;
        let index = rtree(&tx, index, &self.path)?;
        let records = rtree(&tx, RECORDS, &self.path)?;
        for entry in index.scan_prefix(&prefix)? {
            let (key, _) = entry?;
            let id = index_key_local_id(key.value())
                .ok_or_else(|| self.corrupt("an index key does not end in a UTF-8 local id"))?;
            let Some(value) = records.get(id.as_bytes())? else {
                // Cannot happen through this module (index and record change in one
                // transaction); reported by `check_integrity`, not fatal for a lookup.
                tracing::warn!(
                    local_id = id,
                    "index entry without a record; stop the daemon and run \
                     `ttp-agent check --store`"
                );
                continue;
            };
            let stored = decode_record(&value).map_err(|d| self.corrupt_record(id, &d))?;
            // Digests may collide: the full value decides.
            let rec = open(id, stored)?;
            if matches(&rec) {
                found.push(rec);
            }
        }
        Ok(found)
    }

    /// Every record whose state satisfies `pred` (a full scan; for resuming submissions).
    /// IDAT is opened only for matching records.
    pub fn records_in_states(
        &self,
        pred: impl Fn(&RecordState) -> bool,
    ) -> Result<Vec<LocalRecord>, StoreError> {
        self.scan_records(pred, |id, stored| self.open_record(id, stored))
    }

    /// Every record whose state satisfies `pred`, without its IDAT (a full scan that opens no
    /// seal; for registration, which needs the filter, not the IDAT).
    pub fn record_heads_in_states(
        &self,
        pred: impl Fn(&RecordState) -> bool,
    ) -> Result<Vec<RecordHead>, StoreError> {
        self.scan_records(pred, |id, stored| self.open_head(id, &stored))
    }

    /// The full scan behind both: decodes every record, and opens (with `open`) only those
    /// whose state satisfies `pred`, so a scan for a few states opens few seals.
    fn scan_records<T>(
        &self,
        pred: impl Fn(&RecordState) -> bool,
        open: impl for<'v> Fn(&str, StoredRecord<'v>) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let mut found = Vec::new();
        for entry in self.read(RECORDS)?.iter()? {
            let (key, value) = entry?;
            let id = self.key_local_id(key.value())?;
            let stored = decode_record(value.value()).map_err(|d| self.corrupt_record(id, &d))?;
            if pred(&stored.state.to_state()) {
                found.push(open(id, stored)?);
            }
        }
        Ok(found)
    }

    /// The records registration sends as they are: `New` ones and those of a batch in flight
    /// or interrupted (`Sending`), by local id, without IDAT. Reads only those records, through
    /// `idx_waiting_records`: the cycle calls this while any wait, on a store of any size.
    pub fn record_heads_to_register(&self) -> Result<Vec<RecordHead>, StoreError> {
        let mut heads = self.waiting_heads(WAITING_NEW, None)?;
        heads.extend(self.waiting_heads(WAITING_SENDING, None)?);
        heads.sort_unstable_by(|a, b| a.local_id.cmp(&b.local_id));
        Ok(heads)
    }

    /// The `AwaitingClearing` records last updated at or before `updated_by` (whose clearing
    /// has been quiet long enough to ask again), by local id, without IDAT. Reads only those,
    /// through `idx_waiting_records`.
    pub fn record_heads_awaiting_clearing(
        &self,
        updated_by: DateTime<Utc>,
    ) -> Result<Vec<RecordHead>, StoreError> {
        let mut heads = self.waiting_heads(WAITING_CLEARING, Some(nanos(updated_by)?))?;
        heads.sort_unstable_by(|a, b| a.local_id.cmp(&b.local_id));
        Ok(heads)
    }

    /// The heads of the records `idx_waiting_records` lists under `tag`, updated at or before
    /// `until` if given.
    fn waiting_heads(&self, tag: u8, until: Option<i64>) -> Result<Vec<RecordHead>, StoreError> {
        let tx = self.read_tx()?;
        let waiting = rtree(&tx, IDX_WAITING, &self.path)?;
        let records = rtree(&tx, RECORDS, &self.path)?;
        let end = match until.and_then(|n| n.checked_add(1)) {
            Some(next) => [&[tag][..], &time_prefix(next)].concat(),
            None => vec![tag + 1],
        };
        let mut heads = Vec::new();
        for entry in waiting.range(&[tag], Some(&end))? {
            let (index_key, _) = entry?;
            let key = index_key
                .value()
                .get(1..)
                .and_then(time_key_suffix)
                .ok_or_else(|| self.corrupt("a waiting-records index key is malformed"))?;
            let id = self.key_local_id(key)?;
            // Index and record change in one transaction: a missing record is damage.
            let value = records.get(key)?.ok_or_else(|| {
                self.corrupt("the waiting-records index names a record that is not stored")
            })?;
            let stored = decode_record(&value).map_err(|d| self.corrupt_record(id, &d))?;
            if waiting_key(id, &stored).is_some_and(|k| k == index_key.value()) {
                heads.push(self.open_head(id, &stored)?);
            }
        }
        Ok(heads)
    }

    /// Record counters (one key read; maintained transactionally).
    pub fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        match self.read(COUNTS)?.get(COUNTS_KEY)? {
            None => Ok(RecordCounts::default()),
            Some(v) => RecordCounts::from_bytes(&v)
                .ok_or_else(|| self.corrupt("the record counters value is malformed")),
        }
    }

    /// Drops the IDAT of records that are `Pseudonymised` or `Rejected`, still hold IDAT, were
    /// last updated before `older_than`, and for which `keep` returns false (the agent keeps
    /// records an open task still needs). Returns how many were purged. `updated_at` is left
    /// as it is: it tells when the registration ended. Committed in transactions of up to 512
    /// records; a record changed between the scan and its commit is left for the next purge.
    /// When anything was purged, the store's file is rewritten ([`Store::rewrite`]), so that no
    /// purged IDAT stays in it; the store is durable afterwards.
    pub fn purge_idat(
        &self,
        older_than: DateTime<Utc>,
        keep: impl Fn(&LocalRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let cutoff = nanos(older_than)?;
        let mut purged = 0;
        let mut pending: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
        // A snapshot: `keep` may call the store, and commits below do not disturb the scan.
        // Only the records `idx_idat_due` lists before the cut-off are read: the others hold
        // no IDAT, are not finished, or are not old enough.
        let tx = self.read_tx()?;
        let due = rtree(&tx, IDX_IDAT_DUE, &self.path)?;
        let records = rtree(&tx, RECORDS, &self.path)?;
        for entry in due.range(&[], Some(&time_prefix(cutoff)))? {
            let (due_key, _) = entry?;
            let key = time_key_suffix(due_key.value())
                .ok_or_else(|| self.corrupt("an IDAT purge index key is malformed"))?;
            let id = self.key_local_id(key)?;
            // Index and record change in one transaction: a missing record is damage.
            let value = records.get(key)?.ok_or_else(|| {
                self.corrupt("the IDAT purge index names a record that is not stored")
            })?;
            let stored = decode_record(&value).map_err(|d| self.corrupt_record(id, &d))?;
            let finished = matches!(
                stored.state,
                StoredState::Pseudonymised | StoredState::Rejected { .. }
            );
            if !finished || stored.sealed_idat.is_none() || stored.updated_at >= cutoff {
                continue;
            }
            let purged_value = encode_record(&StoredRecord {
                sealed_idat: None,
                ..stored
            })?;
            if keep(&self.open_record(id, stored)?) {
                continue;
            }
            pending.push((key.to_vec(), value, purged_value));
            if pending.len() >= CHUNK {
                purged += self.commit_purge(&pending)?;
                pending.clear();
            }
        }
        purged += self.commit_purge(&pending)?;
        drop((due, records, tx));
        if purged > 0 {
            // The purged IDAT is still in redb's free pages: only a file without them makes
            // the purge true (see "Purged IDAT" in the module documentation).
            self.rewrite()?;
        }
        Ok(purged)
    }

    fn commit_purge(&self, pending: &[(Vec<u8>, Vec<u8>, Vec<u8>)]) -> Result<usize, StoreError> {
        if pending.is_empty() {
            return Ok(0);
        }
        let path = self.path.as_path();
        self.write(|tx| {
            let mut records = wtree(tx, RECORDS, path)?;
            let mut due = wtree(tx, IDX_IDAT_DUE, path)?;
            let mut delta = Delta::default();
            let mut n = 0;
            for (key, scanned, purged_value) in pending {
                if records.get(key)?.as_ref() != Some(scanned) {
                    continue;
                }
                let id = String::from_utf8_lossy(key);
                let old = decode_in_tx(scanned, &id, path)?;
                if let Some(k) = idat_due_key(&id, &old) {
                    due.remove(&k)?;
                }
                delta.minus(&old);
                delta.plus(&decode_in_tx(purged_value, &id, path)?);
                records.insert(key, purged_value.as_slice())?;
                n += 1;
            }
            delta.apply(&mut wtree(tx, COUNTS, path)?, path)?;
            Ok(n)
        })
    }

    /// Verifies the derived data against the records: every record decodes and its IDAT opens,
    /// both indexes hold exactly the entries the records imply, the counters equal a recount,
    /// the pseudonym log is dense and decodes, every task decodes, every withdrawal has its
    /// match keys and no record left. A full scan in constant memory (but for the withdrawals,
    /// which are few); `ttp-agent check --store` runs it.
    pub fn check_integrity(&self) -> Result<IntegrityReport, StoreError> {
        let tx = self.read_tx()?;
        let path = self.path.as_path();
        let records = rtree(&tx, RECORDS, path)?;
        let mut bf_index = IndexCheck::new("filter", "record", rtree(&tx, IDX_BF, path)?);
        let mut psn_index = IndexCheck::new("pseudonym", "record", rtree(&tx, IDX_PSN, path)?);
        let mut due_index =
            IndexCheck::new("IDAT purge", "record", rtree(&tx, IDX_IDAT_DUE, path)?);
        let mut waiting_index =
            IndexCheck::new("waiting-records", "record", rtree(&tx, IDX_WAITING, path)?);
        let mut report = IntegrityReport::default();
        let mut counted = RecordCounts::default();
        for entry in records.iter()? {
            let (key, value) = entry?;
            let key = key.value();
            report.records += 1;
            let id = String::from_utf8_lossy(key).into_owned();
            let stored = match decode_record(value.value()) {
                Ok(s) => s,
                Err(d) => {
                    report.problems.push(format!("record {id:?}: {d}"));
                    continue;
                }
            };
            if let Some(sealed) = stored.sealed_idat {
                match self.keys.idat.open(key, sealed) {
                    Err(_) => report
                        .problems
                        .push(format!("record {id:?}: sealed IDAT fails authentication")),
                    Ok(plain) => {
                        if let Err(d) = codec::decode_idat(&plain) {
                            report.problems.push(format!("record {id:?}: {d}"));
                        }
                    }
                }
            }
            counted.add(&stored);
            match self.keys.filter.open(key, stored.sealed_filter) {
                Err(_) => {
                    // Its entry's key cannot be derived, but the record still has one: not
                    // counting it would report that entry as stale as well.
                    bf_index.expect_unchecked();
                    report
                        .problems
                        .push(format!("record {id:?}: sealed filter fails authentication"));
                }
                Ok(filter) => bf_index.expect(
                    &index_key_with(&self.keys.filter_tag(&filter), &id),
                    &id,
                    &mut report.problems,
                )?,
            }
            if let Some(psn) = stored.pseudonym {
                psn_index.expect(&index_key(psn.as_bytes(), &id), &id, &mut report.problems)?;
            }
            if let Some(due) = idat_due_key(&id, &stored) {
                due_index.expect(&due, &id, &mut report.problems)?;
            }
            if let Some(waiting) = waiting_key(&id, &stored) {
                waiting_index.expect(&waiting, &id, &mut report.problems)?;
            }
        }
        // Every expected entry is present (checked above); any surplus entry is stale.
        for index in [bf_index, psn_index, due_index, waiting_index] {
            index.stale(&mut report.problems)?;
        }
        let stored_counts = match rtree(&tx, COUNTS, path)?.get(COUNTS_KEY)? {
            None => RecordCounts::default(),
            Some(v) => RecordCounts::from_bytes(&v)
                .ok_or_else(|| self.corrupt("the record counters value is malformed"))?,
        };
        if stored_counts != counted {
            report.problems.push(format!(
                "record counters {stored_counts:?} differ from a recount {counted:?}"
            ));
        }
        psn_log::check(
            &rtree(&tx, META, path)?,
            &rtree(&tx, PSN_LOG, path)?,
            path,
            &mut report.problems,
        )?;
        super::withdrawn::check(
            &records,
            &rtree(&tx, super::WITHDRAWN, path)?,
            &mut report.problems,
        )?;
        super::tasks::check(
            &self.keys,
            &rtree(&tx, super::TASKS, path)?,
            &rtree(&tx, super::OPEN_TASKS, path)?,
            rtree(&tx, super::FINISHED_TASKS, path)?,
            &mut report.problems,
        )?;
        drop(tx);
        // The disclosure log derives from nothing: its own chain is what can be checked.
        if let Some(link) = self.verify_disclosures()?.broken {
            report.problems.push(format!(
                "disclosure log: broken at entry {}: {}",
                link.seq, link.why
            ));
        }
        Ok(report)
    }

    fn key_local_id<'k>(&self, key: &'k [u8]) -> Result<&'k str, StoreError> {
        std::str::from_utf8(key).map_err(|_| self.corrupt("a record key is not UTF-8"))
    }

    fn corrupt_record(&self, local_id: &str, detail: &str) -> StoreError {
        self.corrupt(format!("record {local_id:?}: {detail}"))
    }

    fn to_local_record(&self, local_id: &str, value: &[u8]) -> Result<LocalRecord, StoreError> {
        let stored = decode_record(value).map_err(|d| self.corrupt_record(local_id, &d))?;
        self.open_record(local_id, stored)
    }

    /// A stored record's head: its filter unsealed, its IDAT left sealed.
    fn open_head(
        &self,
        local_id: &str,
        stored: &StoredRecord<'_>,
    ) -> Result<RecordHead, StoreError> {
        Ok(RecordHead {
            local_id: local_id.to_string(),
            bloom_filter: open_filter(&self.keys, local_id, stored.sealed_filter, &self.path)?
                .to_vec(),
            state: stored.state.to_state(),
            pseudonym: stored.pseudonym.map(str::to_string),
            created_at: from_nanos(stored.created_at),
            updated_at: from_nanos(stored.updated_at),
        })
    }

    fn open_record(
        &self,
        local_id: &str,
        stored: StoredRecord<'_>,
    ) -> Result<LocalRecord, StoreError> {
        let idat = match stored.sealed_idat {
            None => None,
            Some(sealed) => {
                // The key check at open passed, so a failure here is damage to this record
                // (or its value was moved under another local id), not a wrong key.
                let plain = self
                    .keys
                    .idat
                    .open(local_id.as_bytes(), sealed)
                    .map_err(|_| {
                        self.corrupt_record(
                            local_id,
                            "its sealed IDAT fails authentication under the store's key",
                        )
                    })?;
                Some(codec::decode_idat(&plain).map_err(|d| self.corrupt_record(local_id, &d))?)
            }
        };
        Ok(LocalRecord {
            head: self.open_head(local_id, &stored)?,
            idat,
        })
    }
}

/// What a withdrawal keeps of a removed record (see `withdrawn`): its pseudonym, and the
/// keyed digest of its filter that the filter index used (`HMAC(k_index, filter)[..16]`).
pub(crate) struct Removed {
    pub pseudonym: Option<String>,
    pub filter_tag: [u8; DIGEST_LEN],
}

/// Removes the record `local_id` inside a write transaction: its row (sealed IDAT, sealed
/// filter, state), its four index entries and its counts. The pseudonym log keeps its entry
/// (the hand-over history: `export` still lists the pseudonym). `None` when no such record.
pub(crate) fn remove_in(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    local_id: &str,
    path: &Path,
) -> Result<Option<Removed>, StoreError> {
    let mut t = RecordTables::open(tx, path)?;
    let Some(existing) = t.records.get(local_id.as_bytes())? else {
        return Ok(None);
    };
    let old = decode_in_tx(&existing, local_id, path)?;
    let filter = open_filter(keys, local_id, old.sealed_filter, path)?;
    let tag = keys.filter_tag(&filter);
    t.bf_index.remove(&index_key_with(&tag, local_id))?;
    if let Some(psn) = old.pseudonym {
        t.psn_index.remove(&index_key(psn.as_bytes(), local_id))?;
    }
    if let Some(k) = idat_due_key(local_id, &old) {
        t.idat_due.remove(&k)?;
    }
    if let Some(k) = waiting_key(local_id, &old) {
        t.waiting.remove(&k)?;
    }
    let mut delta = Delta::default();
    delta.minus(&old);
    delta.apply(&mut t.counts, path)?;
    let removed = Removed {
        pseudonym: old.pseudonym.map(str::to_owned),
        filter_tag: tag,
    };
    t.records.remove(local_id.as_bytes())?;
    Ok(Some(removed))
}

/// What [`Store::check_integrity`] found. Problems name local ids and task keys, never IDAT.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    pub records: u64,
    pub problems: Vec<String>,
}

impl IntegrityReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The tables a record write touches, opened in its write transaction.
struct RecordTables<'t, 'p> {
    records: WTree<'t, 'p>,
    bf_index: WTree<'t, 'p>,
    psn_index: WTree<'t, 'p>,
    idat_due: WTree<'t, 'p>,
    waiting: WTree<'t, 'p>,
    counts: WTree<'t, 'p>,
    meta: WTree<'t, 'p>,
    psn_log: WTree<'t, 'p>,
    path: &'p Path,
}

impl<'t, 'p> RecordTables<'t, 'p> {
    fn open(tx: &'t redb::WriteTransaction, path: &'p Path) -> Result<Self, StoreError> {
        Ok(RecordTables {
            records: wtree(tx, RECORDS, path)?,
            bf_index: wtree(tx, IDX_BF, path)?,
            psn_index: wtree(tx, IDX_PSN, path)?,
            idat_due: wtree(tx, IDX_IDAT_DUE, path)?,
            waiting: wtree(tx, IDX_WAITING, path)?,
            counts: wtree(tx, COUNTS, path)?,
            meta: wtree(tx, META, path)?,
            psn_log: wtree(tx, PSN_LOG, path)?,
            path,
        })
    }

    /// Keeps the four indexes, the pseudonym log and the counter delta right for a record that
    /// changes from `old` to `new`, each with its filter's index digest (the caller writes the
    /// record itself). A pseudonym the record did not have is appended to the log.
    fn replace(
        &mut self,
        id: &str,
        (old, old_tag): (&StoredRecord<'_>, [u8; DIGEST_LEN]),
        (new, new_tag): (&StoredRecord<'_>, [u8; DIGEST_LEN]),
        delta: &mut Delta,
    ) -> Result<(), StoreError> {
        if old_tag != new_tag {
            self.bf_index.remove(&index_key_with(&old_tag, id))?;
            self.bf_index.insert(&index_key_with(&new_tag, id), &[])?;
        }
        if old.pseudonym != new.pseudonym {
            if let Some(psn) = old.pseudonym {
                self.psn_index.remove(&index_key(psn.as_bytes(), id))?;
            }
            if let Some(psn) = new.pseudonym {
                self.psn_index.insert(&index_key(psn.as_bytes(), id), &[])?;
            }
            if let Some(psn) = psn_log::logged_pseudonym(old.pseudonym, new.pseudonym) {
                psn_log::append_in(
                    &mut self.meta,
                    &mut self.psn_log,
                    id,
                    psn,
                    new.updated_at,
                    self.path,
                )?;
            }
        }
        for (index, old_key, new_key) in [
            (
                &mut self.idat_due,
                idat_due_key(id, old),
                idat_due_key(id, new),
            ),
            (
                &mut self.waiting,
                waiting_key(id, old),
                waiting_key(id, new),
            ),
        ] {
            if old_key != new_key {
                if let Some(k) = old_key {
                    index.remove(&k)?;
                }
                if let Some(k) = new_key {
                    index.insert(&k, &[])?;
                }
            }
        }
        delta.minus(old);
        delta.plus(new);
        Ok(())
    }
}

/// A record's filter, unsealed. The key check at open passed, so a filter that does not open is
/// damage to this record (or its value was moved under another local id).
fn open_filter(
    keys: &StoreKeys,
    local_id: &str,
    sealed: &[u8],
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    keys.filter.open(local_id.as_bytes(), sealed).map_err(|_| {
        error::corrupt(
            path,
            format!(
                "record {local_id:?}: its sealed filter fails authentication under the store's key"
            ),
        )
    })
}

/// A record's filter as a migration from before schema 4 finds it: sealed if a step already
/// sealed it, in clear otherwise (a clear filter opening as a sealed one is a 2^-128 chance).
fn legacy_filter(keys: &StoreKeys, local_id: &str, stored: &[u8]) -> Zeroizing<Vec<u8>> {
    keys.filter
        .open(local_id.as_bytes(), stored)
        .unwrap_or_else(|_| Zeroizing::new(stored.to_vec()))
}

fn decode_in_tx<'v>(
    value: &'v [u8],
    local_id: &str,
    path: &Path,
) -> Result<StoredRecord<'v>, StoreError> {
    decode_record(value).map_err(|d| error::corrupt(path, format!("record {local_id:?}: {d}")))
}

/// The first record that still holds sealed IDAT, for the key check of a store without one.
pub(crate) fn first_sealed_idat(
    records: &RTree<'_>,
    path: &Path,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    for entry in records.iter()? {
        let (key, value) = entry?;
        let id = String::from_utf8_lossy(key.value()).into_owned();
        let stored = decode_record(value.value())
            .map_err(|d| error::corrupt(path, format!("record {id:?}: {d}")))?;
        if let Some(sealed) = stored.sealed_idat {
            return Ok(Some((id, sealed.to_vec())));
        }
    }
    Ok(None)
}

/// Rebuilds the four indexes and the counters from `records` (after a restore, or a migration from
/// a store without them), inside the caller's write transaction. `legacy`: for the migrations
/// before schema 4, which may find filters in clear (see `legacy_filter`).
///
/// The index keys are collected, sorted, and written in key order, which keeps the B-tree's
/// pages full (about 60 bytes of memory per record while it runs). It clears first, so running
/// it again gives the same result.
pub(crate) fn rebuild_derived(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    path: &Path,
    legacy: bool,
) -> Result<RecordCounts, StoreError> {
    let mut counts = RecordCounts::default();
    let mut bf_keys = Vec::new();
    let mut psn_keys = Vec::new();
    let mut due_keys = Vec::new();
    let mut waiting_keys = Vec::new();
    {
        let records = wtree(tx, RECORDS, path)?;
        for entry in records.iter()? {
            let (key, value) = entry?;
            let (id, stored) = decode_record_entry(key.value(), value.value(), path)?;
            counts.add(&stored);
            waiting_keys.extend(waiting_key(id, &stored));
            let filter = if legacy {
                legacy_filter(keys, id, stored.sealed_filter)
            } else {
                open_filter(keys, id, stored.sealed_filter, path)?
            };
            bf_keys.push(index_key_with(&keys.filter_tag(&filter), id));
            if let Some(psn) = stored.pseudonym {
                psn_keys.push(index_key(psn.as_bytes(), id));
            }
            due_keys.extend(idat_due_key(id, &stored));
        }
    }
    for (def, mut keys) in [
        (IDX_BF, bf_keys),
        (IDX_PSN, psn_keys),
        (IDX_IDAT_DUE, due_keys),
        (IDX_WAITING, waiting_keys),
    ] {
        let mut tree = wtree(tx, def, path)?;
        tree.clear()?;
        keys.sort_unstable();
        for key in keys {
            tree.insert(&key, &[])?;
        }
    }
    wtree(tx, COUNTS, path)?.insert(COUNTS_KEY, &counts.to_bytes())?;
    Ok(counts)
}

/// Schema 3 → 4: seals every record's filter under the filter key and keys the filter index
/// (HMAC instead of a plain hash). Idempotent: a filter that opens is sealed already.
pub(crate) fn seal_filters(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    path: &Path,
) -> Result<(), StoreError> {
    let mut updates = Vec::new();
    {
        let records = wtree(tx, RECORDS, path)?;
        for entry in records.iter()? {
            let (key, value) = entry?;
            let (id, stored) = decode_record_entry(key.value(), value.value(), path)?;
            if keys
                .filter
                .open(id.as_bytes(), stored.sealed_filter)
                .is_ok()
            {
                continue;
            }
            let sealed = keys.filter.seal(id.as_bytes(), stored.sealed_filter)?;
            let value = encode_record(&StoredRecord {
                sealed_filter: &sealed,
                ..stored
            })?;
            updates.push((key.value().to_vec(), value));
        }
    }
    let mut records = wtree(tx, RECORDS, path)?;
    for (key, value) in &updates {
        records.insert(key, value)?;
    }
    drop(records);
    rebuild_derived(tx, keys, path, false).map(drop)
}

/// Schema 4 → 5: builds `idx_idat_due` from the records (no seal is opened: state, IDAT
/// presence and `updated_at` are in clear). Clears first, so running it again gives the same
/// result.
pub(crate) fn build_idat_due_index(
    tx: &redb::WriteTransaction,
    path: &Path,
) -> Result<(), StoreError> {
    fill_index(tx, RECORDS, IDX_IDAT_DUE, path, |key, value| {
        let (id, stored) = decode_record_entry(key, value, path)?;
        Ok(idat_due_key(id, &stored))
    })
}

/// Schema 5 → 6: builds `idx_waiting_records` from the records (no seal is opened). Clears
/// first, so running it again gives the same result.
pub(crate) fn build_waiting_index(
    tx: &redb::WriteTransaction,
    path: &Path,
) -> Result<(), StoreError> {
    fill_index(tx, RECORDS, IDX_WAITING, path, |key, value| {
        let (id, stored) = decode_record_entry(key, value, path)?;
        Ok(waiting_key(id, &stored))
    })
}

/// One entry of the records table, read where the store is rebuilt or migrated: its local id
/// and its decoded value, or a corruption error naming the record.
pub(crate) fn decode_record_entry<'v>(
    key: &'v [u8],
    value: &'v [u8],
    path: &Path,
) -> Result<(&'v str, StoredRecord<'v>), StoreError> {
    let id =
        std::str::from_utf8(key).map_err(|_| error::corrupt(path, "a record key is not UTF-8"))?;
    let stored =
        decode_record(value).map_err(|d| error::corrupt(path, format!("record {id:?}: {d}")))?;
    Ok((id, stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose filter seal fails authentication is one problem: its filter-index entry
    /// is not also reported as stale.
    #[test]
    fn a_filter_that_fails_authentication_is_one_problem() {
        let dir = tempfile::tempdir().expect("temp dir");
        let opts = super::super::StoreOptions::new(
            dir.path().join("store"),
            super::super::IdatKey::generate(),
        );
        let store = Store::open(&opts).expect("open");
        let now = chrono::Utc::now();
        let rec = LocalRecord {
            head: RecordHead {
                local_id: "case-1".into(),
                bloom_filter: vec![7u8; 16],
                state: RecordState::New,
                pseudonym: None,
                created_at: now,
                updated_at: now,
            },
            idat: None,
        };
        store.insert_records(&[rec]).expect("insert");
        assert!(store.check_integrity().expect("check").is_ok());
        let path = store.path.clone();
        store
            .write(|tx| {
                let mut records = wtree(tx, RECORDS, &path)?;
                let value = records.get(b"case-1")?.expect("stored");
                let stored = decode_record(&value).expect("decodes");
                let mut damaged = stored.sealed_filter.to_vec();
                let last = damaged.len() - 1;
                damaged[last] ^= 1;
                let value = encode_record(&StoredRecord {
                    sealed_filter: &damaged,
                    ..stored
                })?;
                records.insert(b"case-1", &value)?;
                Ok(())
            })
            .expect("damage");
        let report = store.check_integrity().expect("check");
        assert_eq!(
            report.problems,
            ["record \"case-1\": sealed filter fails authentication"]
        );
    }

    #[test]
    fn counts_bytes_round_trip() {
        let c = RecordCounts {
            total: 1,
            new: 2,
            sending: 3,
            awaiting_clearing: 4,
            pseudonymised: 5,
            rejected: 6,
            with_pseudonym: 7,
            idat_purged: u64::MAX,
        };
        assert_eq!(RecordCounts::from_bytes(&c.to_bytes()), Some(c));
        assert_eq!(RecordCounts::from_bytes(&[0; 63]), None);
    }

    #[test]
    fn contribution_counts_state_pseudonym_and_purge() {
        let rec = StoredRecord {
            sealed_filter: &[1],
            sealed_idat: None,
            state: StoredState::Rejected { code: "x" },
            pseudonym: Some("p"),
            created_at: 0,
            updated_at: 0,
        };
        let mut c = RecordCounts::default();
        c.add(&rec);
        assert_eq!(
            c,
            RecordCounts {
                total: 1,
                rejected: 1,
                with_pseudonym: 1,
                idat_purged: 1,
                ..RecordCounts::default()
            }
        );
    }
}
