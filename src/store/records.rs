//! Local records, their two indexes, and the record counters.
//!
//! Every write to `records` goes through one sled transaction over `records`, `idx_bf`,
//! `idx_psn` and `counts` (and `meta` + `psn_log` when a record gets a pseudonym), so the
//! indexes, counters and the pseudonym log can never disagree with the records, not even
//! after a crash. That is what lets [`Store::record_counts`] answer from one key
//! (the status page must stay fast at a million records) instead of scanning.

use std::path::Path;

use chrono::{DateTime, Utc};
use sled::Transactional as _;
use sled::transaction::TransactionalTree;

use super::codec::{
    self, StoredRecord, StoredState, decode_record, digest16, encode_record, from_nanos, index_key,
    index_key_local_id, nanos,
};
use super::{AuditEntry, Store, StoreError, Trees, TxResult, abort, error, psn_log};
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

    fn apply(&self, counts: &TransactionalTree, path: &Path) -> TxResult<()> {
        if self.0.iter().all(|d| *d == 0) {
            return Ok(());
        }
        let current = match counts.get(COUNTS_KEY)? {
            None => RecordCounts::default(),
            Some(v) => RecordCounts::from_bytes(&v).ok_or_else(|| {
                abort(error::corrupt(
                    path,
                    "the record counters value is malformed",
                ))
            })?,
        };
        let mut a = current.to_array();
        for (n, d) in a.iter_mut().zip(self.0) {
            // A counter going below zero would mean a bug in this module, not bad input; keep
            // the store writable and let `check_integrity` report the drift.
            *n = n.saturating_add_signed(d);
        }
        counts.insert(COUNTS_KEY, RecordCounts::from_array(a).to_bytes())?;
        Ok(())
    }
}

/// A record ready to be written: validated, IDAT sealed (outside the transaction, whose
/// closure may run more than once).
struct Prepared<'a> {
    rec: &'a LocalRecord,
    value: Vec<u8>,
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
    fn matches(&self, stored: &StoredRecord<'_>) -> bool {
        stored.bloom_filter == self.bloom_filter
            && stored.sealed_idat.is_some() == self.has_idat
            && stored.state == self.state
            && stored.pseudonym == self.pseudonym
            && stored.created_at == self.created_at
            && stored.updated_at == self.updated_at
    }
}

impl Store {
    fn prepare<'a>(&self, rec: &'a LocalRecord) -> Result<Prepared<'a>, StoreError> {
        if rec.local_id.is_empty() {
            return Err(StoreError::Invalid {
                what: "record",
                why: "the local id is empty".to_string(),
            });
        }
        let sealed = match &rec.idat {
            None => None,
            Some(idat) => Some(self.cipher.seal_with(
                rec.local_id.as_bytes(),
                codec::idat_plaintext_len(idat),
                |buf| codec::encode_idat_into(idat, buf),
            )?),
        };
        let value = encode_record(&StoredRecord {
            bloom_filter: &rec.bloom_filter,
            sealed_idat: sealed.as_deref(),
            state: StoredState::from_state(&rec.state),
            pseudonym: rec.pseudonym.as_deref(),
            created_at: nanos(rec.created_at)?,
            updated_at: nanos(rec.updated_at)?,
        })?;
        Ok(Prepared { rec, value })
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
            let _gate = self.write_gate();
            let t = &self.trees;
            let path = self.path.as_path();
            let done = (
                &t.records,
                &t.bf_index,
                &t.psn_index,
                &t.counts,
                &t.meta,
                &t.psn_log,
            )
                .transaction(|(records, bf_index, psn_index, counts, meta, psn_log)| {
                    let mut delta = Delta::default();
                    let mut out = Vec::with_capacity(prepared.len());
                    for p in &prepared {
                        let id = p.rec.local_id.as_str();
                        if let Some(existing) = records.get(id)? {
                            let old = decode_in_tx(&existing, id, path)?;
                            out.push(if old.bloom_filter == p.rec.bloom_filter.as_slice() {
                                InsertOutcome::Unchanged
                            } else {
                                InsertOutcome::Conflict
                            });
                            continue;
                        }
                        records.insert(id.as_bytes(), p.value.as_slice())?;
                        bf_index.insert(index_key(&p.rec.bloom_filter, id), &[])?;
                        let stored = decode_in_tx(&p.value, id, path)?;
                        if let Some(psn) = stored.pseudonym {
                            psn_index.insert(index_key(psn.as_bytes(), id), &[])?;
                            psn_log::append_in(meta, psn_log, id, psn, stored.updated_at, path)?;
                        }
                        delta.plus(&stored);
                        out.push(InsertOutcome::Inserted);
                    }
                    delta.apply(counts, path)?;
                    Ok(out)
                })
                .map_err(|e| self.tx_err(e))?;
            outcomes.extend(done);
        }
        Ok(outcomes)
    }

    /// Replaces stored records (state, pseudonym, IDAT, times; a changed filter is re-indexed
    /// too) and keeps both indexes and the counters right. A record that gets a pseudonym it
    /// did not have (none before, or a different one) is appended to the pseudonym log in the
    /// same transaction (see `psn_log`). All records of the call are one transaction: after a
    /// crash either all changes are present or none. A `local_id` that is not stored fails the
    /// whole call with [`StoreError::UnknownRecord`]. sled holds a transaction's writes in
    /// memory: keep slices to a few thousand records.
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
        if expected.local_id != new.local_id {
            return Err(StoreError::Invalid {
                what: "record update",
                why: "the expected and the new record have different local ids".to_string(),
            });
        }
        let prepared = [self.prepare(new)?];
        let guard = Guard {
            bloom_filter: &expected.bloom_filter,
            has_idat: expected.idat.is_some(),
            state: StoredState::from_state(&expected.state),
            pseudonym: expected.pseudonym.as_deref(),
            created_at: nanos(expected.created_at)?,
            updated_at: nanos(expected.updated_at)?,
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
        let _gate = self.write_gate();
        let t = &self.trees;
        let path = self.path.as_path();
        (
            &t.records,
            &t.bf_index,
            &t.psn_index,
            &t.counts,
            &t.meta,
            &t.psn_log,
            &t.audit,
        )
            .transaction(
                |(records, bf_index, psn_index, counts, meta, psn_log, audit_tree)| {
                    let mut delta = Delta::default();
                    for p in prepared {
                        let id = p.rec.local_id.as_str();
                        let Some(existing) = records.get(id)? else {
                            return Err(abort(StoreError::UnknownRecord {
                                local_id: id.to_string(),
                            }));
                        };
                        let old = decode_in_tx(&existing, id, path)?;
                        if guard.is_some_and(|g| !g.matches(&old)) {
                            return Ok(false);
                        }
                        let new = decode_in_tx(&p.value, id, path)?;
                        let derived = Derived {
                            bf_index,
                            psn_index,
                            meta,
                            psn_log,
                            path,
                        };
                        derived.replace(id, &old, &new, &mut delta)?;
                        records.insert(id.as_bytes(), p.value.as_slice())?;
                    }
                    delta.apply(counts, path)?;
                    if let Some(entry) = audit {
                        super::audit::append_in(meta, audit_tree, entry, path)?;
                    }
                    Ok(true)
                },
            )
            .map_err(|e| self.tx_err(e))
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
        let _gate = self.write_gate();
        let t = &self.trees;
        let path = self.path.as_path();
        (
            &t.records,
            &t.bf_index,
            &t.psn_index,
            &t.counts,
            &t.meta,
            &t.psn_log,
        )
            .transaction(|(records, bf_index, psn_index, counts, meta, psn_log)| {
                let mut delta = Delta::default();
                for (head, state, updated_at) in &changes {
                    let id = head.local_id.as_str();
                    let Some(existing) = records.get(id)? else {
                        return Err(abort(StoreError::UnknownRecord {
                            local_id: id.to_string(),
                        }));
                    };
                    let old = decode_in_tx(&existing, id, path)?;
                    if old.bloom_filter != head.bloom_filter.as_slice() {
                        return Err(abort(StoreError::Invalid {
                            what: "record head update",
                            why: format!(
                                "record {id:?} is stored with a different filter; a changed filter is written with its IDAT (update_records)"
                            ),
                        }));
                    }
                    let new = StoredRecord {
                        state: *state,
                        pseudonym: head.pseudonym.as_deref(),
                        updated_at: *updated_at,
                        ..old
                    };
                    let value = encode_record(&new).map_err(abort)?;
                    let derived = Derived {
                        bf_index,
                        psn_index,
                        meta,
                        psn_log,
                        path,
                    };
                    derived.replace(id, &old, &new, &mut delta)?;
                    records.insert(id.as_bytes(), value)?;
                }
                delta.apply(counts, path)?;
                Ok(())
            })
            .map_err(|e| self.tx_err(e))
    }

    /// The record stored under `local_id`, IDAT opened.
    pub fn get_record(&self, local_id: &str) -> Result<Option<LocalRecord>, StoreError> {
        match self
            .trees
            .records
            .get(local_id)
            .map_err(|e| self.sled_err(e))?
        {
            None => Ok(None),
            Some(v) => self.to_local_record(local_id, &v).map(Some),
        }
    }

    /// All records registered with exactly this filter (several local ids may share one),
    /// ordered by `local_id`.
    pub fn records_by_bloom_filter(&self, bf: &[u8]) -> Result<Vec<LocalRecord>, StoreError> {
        self.lookup(&self.trees.bf_index, bf, |r| r.bloom_filter == bf)
    }

    /// All records with this pseudonym, ordered by `local_id`. Several local records of one
    /// patient get the same pseudonym from the fTTP.
    pub fn records_by_pseudonym(&self, pseudonym: &str) -> Result<Vec<LocalRecord>, StoreError> {
        self.lookup(&self.trees.psn_index, pseudonym.as_bytes(), |r| {
            r.pseudonym == Some(pseudonym)
        })
    }

    /// The record with this pseudonym with the smallest `local_id`; see
    /// [`Store::records_by_pseudonym`] when several records may share it.
    pub fn record_by_pseudonym(&self, pseudonym: &str) -> Result<Option<LocalRecord>, StoreError> {
        Ok(self.records_by_pseudonym(pseudonym)?.into_iter().next())
    }

    fn lookup(
        &self,
        index: &sled::Tree,
        indexed: &[u8],
        matches: impl Fn(&StoredRecord<'_>) -> bool,
    ) -> Result<Vec<LocalRecord>, StoreError> {
        let mut found = Vec::new();
        for entry in index.scan_prefix(digest16(indexed)) {
            let (key, _) = entry.map_err(|e| self.sled_err(e))?;
            let id = index_key_local_id(&key)
                .ok_or_else(|| self.corrupt("an index key does not end in a UTF-8 local id"))?;
            let Some(value) = self.trees.records.get(id).map_err(|e| self.sled_err(e))? else {
                // Cannot happen through this module (index and record change in one
                // transaction); reported by `check_integrity`, not fatal for a lookup.
                tracing::warn!(
                    local_id = id,
                    "index entry without a record; run the store check"
                );
                continue;
            };
            let stored = decode_record(&value).map_err(|d| self.corrupt_record(id, &d))?;
            // Digests may collide: the full value decides.
            if matches(&stored) {
                found.push(self.open_record(id, stored)?);
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
        let mut found = Vec::new();
        for entry in self.trees.records.iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let id = self.key_local_id(&key)?;
            let stored = decode_record(&value).map_err(|d| self.corrupt_record(id, &d))?;
            if pred(&stored.state.to_state()) {
                found.push(self.open_record(id, stored)?);
            }
        }
        Ok(found)
    }

    /// Every record whose state satisfies `pred`, without its IDAT (a full scan that opens no
    /// seal; for registration, which needs the filter, not the IDAT).
    pub fn record_heads_in_states(
        &self,
        pred: impl Fn(&RecordState) -> bool,
    ) -> Result<Vec<RecordHead>, StoreError> {
        let mut found = Vec::new();
        for entry in self.trees.records.iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let id = self.key_local_id(&key)?;
            let stored = decode_record(&value).map_err(|d| self.corrupt_record(id, &d))?;
            let state = stored.state.to_state();
            if pred(&state) {
                found.push(RecordHead {
                    local_id: id.to_string(),
                    bloom_filter: stored.bloom_filter.to_vec(),
                    state,
                    pseudonym: stored.pseudonym.map(str::to_string),
                    created_at: from_nanos(stored.created_at),
                    updated_at: from_nanos(stored.updated_at),
                });
            }
        }
        Ok(found)
    }

    /// Record counters (one key read; maintained transactionally).
    pub fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        match self
            .trees
            .counts
            .get(COUNTS_KEY)
            .map_err(|e| self.sled_err(e))?
        {
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
    pub fn purge_idat(
        &self,
        older_than: DateTime<Utc>,
        keep: impl Fn(&LocalRecord) -> bool,
    ) -> Result<usize, StoreError> {
        let cutoff = nanos(older_than)?;
        let mut purged = 0;
        let mut pending: Vec<(sled::IVec, sled::IVec, Vec<u8>)> = Vec::new();
        for entry in self.trees.records.iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            let id = self.key_local_id(&key)?;
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
            pending.push((key.clone(), value.clone(), purged_value));
            if pending.len() >= CHUNK {
                purged += self.commit_purge(&pending)?;
                pending.clear();
            }
        }
        purged += self.commit_purge(&pending)?;
        Ok(purged)
    }

    fn commit_purge(
        &self,
        pending: &[(sled::IVec, sled::IVec, Vec<u8>)],
    ) -> Result<usize, StoreError> {
        if pending.is_empty() {
            return Ok(0);
        }
        let _gate = self.write_gate();
        let path = self.path.as_path();
        (&self.trees.records, &self.trees.counts)
            .transaction(|(records, counts)| {
                let mut delta = Delta::default();
                let mut n = 0;
                for (key, scanned, purged_value) in pending {
                    if records.get(key)?.as_ref() != Some(scanned) {
                        continue;
                    }
                    let id = String::from_utf8_lossy(key);
                    delta.minus(&decode_in_tx(scanned, &id, path)?);
                    delta.plus(&decode_in_tx(purged_value, &id, path)?);
                    records.insert(key, purged_value.as_slice())?;
                    n += 1;
                }
                delta.apply(counts, path)?;
                Ok(n)
            })
            .map_err(|e| self.tx_err(e))
    }

    /// Verifies the derived data against the records: every record decodes and its IDAT opens,
    /// both indexes hold exactly the entries the records imply, the counters equal a recount,
    /// the pseudonym log is dense and decodes, every task decodes. A full scan in constant memory; for the operator's check command
    /// and for tests.
    pub fn check_integrity(&self) -> Result<IntegrityReport, StoreError> {
        let t = &self.trees;
        let mut report = IntegrityReport::default();
        let mut counted = RecordCounts::default();
        let mut expected_bf = 0u64;
        let mut expected_psn = 0u64;
        let has =
            |tree: &sled::Tree, key: &[u8]| tree.contains_key(key).map_err(|e| self.sled_err(e));
        for entry in t.records.iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            report.records += 1;
            let id = String::from_utf8_lossy(&key).into_owned();
            let stored = match decode_record(&value) {
                Ok(s) => s,
                Err(d) => {
                    report.problems.push(format!("record {id:?}: {d}"));
                    continue;
                }
            };
            if let Some(sealed) = stored.sealed_idat {
                match self.cipher.open(&key, sealed) {
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
            expected_bf += 1;
            if !has(&t.bf_index, &index_key(stored.bloom_filter, &id))? {
                report
                    .problems
                    .push(format!("filter index lacks the entry of record {id:?}"));
            }
            if let Some(psn) = stored.pseudonym {
                expected_psn += 1;
                if !has(&t.psn_index, &index_key(psn.as_bytes(), &id))? {
                    report
                        .problems
                        .push(format!("pseudonym index lacks the entry of record {id:?}"));
                }
            }
        }
        // Every expected entry is present (checked above); any surplus entry is stale.
        for (name, index, expected) in [
            ("filter", &t.bf_index, expected_bf),
            ("pseudonym", &t.psn_index, expected_psn),
        ] {
            let present = index.len() as u64;
            if present > expected {
                report.problems.push(format!(
                    "{name} index has {} stale entries",
                    present - expected
                ));
            }
        }
        let stored_counts = self.record_counts()?;
        if stored_counts != counted {
            report.problems.push(format!(
                "record counters {stored_counts:?} differ from a recount {counted:?}"
            ));
        }
        psn_log::check(t, &self.path, &mut report.problems)?;
        super::tasks::check(t, &self.path, &mut report.problems)?;
        for entry in t.tasks.iter() {
            let (key, value) = entry.map_err(|e| self.sled_err(e))?;
            if let Err(e) = serde_json::from_slice::<crate::domain::TaskRecord>(&value) {
                report.problems.push(format!(
                    "task {:?} does not decode: {e}",
                    String::from_utf8_lossy(&key)
                ));
            }
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
                let plain = self.cipher.open(local_id.as_bytes(), sealed).map_err(|_| {
                    self.corrupt_record(
                        local_id,
                        "its sealed IDAT fails authentication under the store's key",
                    )
                })?;
                Some(codec::decode_idat(&plain).map_err(|d| self.corrupt_record(local_id, &d))?)
            }
        };
        Ok(LocalRecord {
            local_id: local_id.to_string(),
            bloom_filter: stored.bloom_filter.to_vec(),
            idat,
            state: stored.state.to_state(),
            pseudonym: stored.pseudonym.map(str::to_string),
            created_at: from_nanos(stored.created_at),
            updated_at: from_nanos(stored.updated_at),
        })
    }
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

/// The trees derived from `records` inside one record transaction.
struct Derived<'t> {
    bf_index: &'t TransactionalTree,
    psn_index: &'t TransactionalTree,
    meta: &'t TransactionalTree,
    psn_log: &'t TransactionalTree,
    path: &'t Path,
}

impl Derived<'_> {
    /// Keeps both indexes, the pseudonym log and the counter delta right for a record that
    /// changes from `old` to `new` (the caller writes the record itself). A pseudonym the
    /// record did not have is appended to the log.
    fn replace(
        &self,
        id: &str,
        old: &StoredRecord<'_>,
        new: &StoredRecord<'_>,
        delta: &mut Delta,
    ) -> TxResult<()> {
        if old.bloom_filter != new.bloom_filter {
            self.bf_index.remove(index_key(old.bloom_filter, id))?;
            self.bf_index.insert(index_key(new.bloom_filter, id), &[])?;
        }
        if old.pseudonym != new.pseudonym {
            if let Some(psn) = old.pseudonym {
                self.psn_index.remove(index_key(psn.as_bytes(), id))?;
            }
            if let Some(psn) = new.pseudonym {
                self.psn_index.insert(index_key(psn.as_bytes(), id), &[])?;
                psn_log::append_in(self.meta, self.psn_log, id, psn, new.updated_at, self.path)?;
            }
        }
        delta.minus(old);
        delta.plus(new);
        Ok(())
    }
}

fn decode_in_tx<'v>(value: &'v [u8], local_id: &str, path: &Path) -> TxResult<StoredRecord<'v>> {
    decode_record(value)
        .map_err(|d| abort(error::corrupt(path, format!("record {local_id:?}: {d}"))))
}

/// The first record that still holds sealed IDAT, for the key check of a store without one.
pub(crate) fn first_sealed_idat(
    trees: &Trees,
    path: &Path,
) -> Result<Option<(String, Vec<u8>)>, StoreError> {
    for entry in trees.records.iter() {
        let (key, value) = entry.map_err(|e| error::from_sled(path, e))?;
        let id = String::from_utf8_lossy(&key).into_owned();
        let stored = decode_record(&value)
            .map_err(|d| error::corrupt(path, format!("record {id:?}: {d}")))?;
        if let Some(sealed) = stored.sealed_idat {
            return Ok(Some((id, sealed.to_vec())));
        }
    }
    Ok(None)
}

/// Rebuilds both indexes and the counters from `records` (after a restore, or a migration from
/// a store without them). Not transactional: only called while nothing else uses the store.
///
/// The index keys are collected, sorted, and written in key order: sled then appends to the
/// tree's last leaf instead of rewriting random leaves (about 60 bytes of memory per record
/// while it runs). If it is interrupted, it runs again from the start: it clears first.
pub(crate) fn rebuild_derived(trees: &Trees, path: &Path) -> Result<RecordCounts, StoreError> {
    let sled_err = |e| error::from_sled(path, e);
    trees.bf_index.clear().map_err(sled_err)?;
    trees.psn_index.clear().map_err(sled_err)?;
    let mut counts = RecordCounts::default();
    let mut bf_keys = Vec::new();
    let mut psn_keys = Vec::new();
    for entry in trees.records.iter() {
        let (key, value) = entry.map_err(sled_err)?;
        let id = std::str::from_utf8(&key)
            .map_err(|_| error::corrupt(path, "a record key is not UTF-8"))?;
        let stored = decode_record(&value)
            .map_err(|d| error::corrupt(path, format!("record {id:?}: {d}")))?;
        counts.add(&stored);
        bf_keys.push(index_key(stored.bloom_filter, id));
        if let Some(psn) = stored.pseudonym {
            psn_keys.push(index_key(psn.as_bytes(), id));
        }
    }
    for (tree, mut keys) in [(&trees.bf_index, bf_keys), (&trees.psn_index, psn_keys)] {
        keys.sort_unstable();
        // Single inserts, not `sled::Batch`: sled pins one epoch for a whole batch, and the
        // page versions a large batch replaces pile up in memory until it ends (measured:
        // more than 1 GiB for 300,000 entries). Atomicity is not needed here (see above).
        for key in keys {
            tree.insert(key, &[]).map_err(sled_err)?;
        }
    }
    trees
        .counts
        .insert(COUNTS_KEY, counts.to_bytes())
        .map_err(sled_err)?;
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            bloom_filter: &[1],
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
