//! The disclosure log: every `$providePatientData` answer the fTTP accepted, or that is in
//! doubt and how that doubt was settled, append-only and hash-chained (issue 15, item 4). It
//! answers a data protection officer's question "what was disclosed about this patient, when,
//! to which study" (GDPR Art. 15) without holding a single IDAT value: element codes only.
//!
//! # Written with the task's outcome
//!
//! The dispatcher decides what an answer carries before it writes the task's intent, and hands
//! that ([`Disclosure`]: local id, study, element codes sent, withheld by policy, missing) to
//! [`Store::put_tasks_disclosing`], which keeps it in `disclosure_pending` (key: the task key)
//! in the same transaction as the task's `Running` state. Every later write of the task
//! ([`Store::put_tasks`], [`Store::replace_task_audited`]) asks the domain
//! ([`crate::domain::disclosure::step`]) what its change of state means and, in the same
//! transaction, appends the entry and drops the pending disclosure once it is no longer
//! needed. The entry and the task's outcome are therefore durable together or not at all:
//! after a crash at any point the log holds one entry per outcome on disk, never one for an
//! outcome that was lost, never two for one (ARCHITECTURE.md, "Durability argument", 11).
//!
//! # Chain
//!
//! Entries are keyed by a dense sequence number (u64 big-endian); the value is the entry's JSON.
//! Each entry holds `prev`, the MAC of the entry before it (zeros for the first), and `mac`,
//! HMAC-SHA256 under a key derived from the IDAT key over the entry's canonical JSON with
//! `mac` empty. `meta` keeps the head (`disclosure_head`: sequence number ‖ MAC), so that
//! entries cut off at the end are found too. [`Store::verify_disclosures`] names the first
//! entry that does not decode, is out of sequence, does not follow its predecessor or whose
//! content changed. A keyed MAC rather than a plain hash: someone who can write the store
//! file but lacks the IDAT key cannot re-chain an edited log so that it verifies.
//!
//! # Not sealed, never purged
//!
//! The entries hold local ids, which the store keeps in clear elsewhere too (record keys, the
//! pseudonym log, audit subjects); they are protected like those (the store directory's
//! permissions; backups are encrypted). No IDAT value is ever in an entry. The log is not
//! touched by the retention purges (`task_retention`, `idat_retention`): the DPO needs it for
//! access requests long after the task is gone.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use ttp_proto::{IdatElement, TaskKind};

use super::codec::{read_u64, u64_value};
use super::crypto::{StoreKeys, hmac_sha256};
use super::{DISCLOSURES, META, Store, StoreError, WTree, error, rtree};
use crate::domain::disclosure::{self, Disclosure, DisclosureEvent};
use crate::domain::{TaskRecord, TaskState};

/// The `meta` key of the chain's head: sequence number (u64 BE) ‖ MAC (32 bytes).
pub(crate) const DISCLOSURE_HEAD: &[u8] = b"disclosure_head";

/// One entry of the disclosure log. Element codes, never values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisclosureEntry {
    /// Position in the log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// When the outcome was stored.
    pub at: DateTime<Utc>,
    /// The configured study (`[ttp] study`) the answer was for.
    pub study: String,
    /// The fTTP's task id.
    pub task_id: String,
    pub local_id: String,
    pub event: DisclosureEvent,
    /// For a `settled-*` entry: the `in-doubt` entry it settles.
    pub settles: Option<u64>,
    /// Element codes in the Patient.
    pub sent: Vec<IdatElement>,
    /// Requested, withheld by the release policy.
    pub withheld: Vec<IdatElement>,
    /// Requested and allowed, but the record does not hold them.
    pub missing: Vec<IdatElement>,
    /// Hex of the previous entry's MAC (64 zeros for the first).
    pub prev: String,
    /// Hex of this entry's MAC.
    pub mac: String,
}

/// The first link of the chain that does not hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The entry named (for entries cut off at the end: the first missing one).
    pub seq: u64,
    pub why: String,
}

/// What [`Store::verify_disclosures`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ChainCheck {
    /// Entries read (up to the first broken one).
    pub entries: u64,
    pub broken: Option<BrokenLink>,
}

/// A disclosure waiting for its task's outcome.
#[derive(Serialize, Deserialize)]
struct Pending {
    disclosure: Disclosure,
    /// The `in-doubt` entry written for it, which a settlement names.
    in_doubt: Option<u64>,
}

const ZERO_MAC: [u8; 32] = [0; 32];

fn codec_error(what: &'static str, e: serde_json::Error) -> StoreError {
    StoreError::Codec {
        what,
        detail: e.to_string(),
    }
}

/// The MAC of `entry` (its `mac` field ignored).
fn mac_of(keys: &StoreKeys, entry: &DisclosureEntry) -> Result<[u8; 32], StoreError> {
    let canonical = serde_json::to_vec(&DisclosureEntry {
        mac: String::new(),
        ..entry.clone()
    })
    .map_err(|e| codec_error("disclosure log entry", e))?;
    Ok(hmac_sha256(keys.disclosure_chain(), &[&canonical]))
}

fn read_head(meta: &WTree<'_, '_>, path: &Path) -> Result<(u64, [u8; 32]), StoreError> {
    match meta.get(DISCLOSURE_HEAD)? {
        None => Ok((0, ZERO_MAC)),
        Some(v) => decode_head(&v)
            .ok_or_else(|| error::corrupt(path, "the disclosure log's head is not 40 bytes")),
    }
}

fn decode_head(v: &[u8]) -> Option<(u64, [u8; 32])> {
    if v.len() != 40 {
        return None;
    }
    let seq = read_u64(&v[..8])?;
    let mac = <[u8; 32]>::try_from(&v[8..]).ok()?;
    Some((seq, mac))
}

/// The open tables a task write changes the log through.
pub(crate) struct LogTables<'a, 't, 'p> {
    pub(crate) meta: &'a mut WTree<'t, 'p>,
    pub(crate) log: &'a mut WTree<'t, 'p>,
    pub(crate) pending: &'a mut WTree<'t, 'p>,
}

/// What writing `rec` over a stored task in state `old` does to the log, inside the task's
/// write transaction. `intent` is the disclosure the dispatcher decided for a task it is about
/// to send (written with its `Running` state).
pub(crate) fn apply_in(
    t: &mut LogTables<'_, '_, '_>,
    keys: &StoreKeys,
    rec: &TaskRecord,
    old: Option<&TaskState>,
    intent: Option<&Disclosure>,
    path: &Path,
) -> Result<(), StoreError> {
    let TaskKind::SendIdat { task_id, .. } = &rec.task.kind else {
        return Ok(());
    };
    let key = rec.key.0.as_bytes();
    if rec.state == TaskState::Running && old != Some(&TaskState::Running) {
        // A new intent: what this attempt will carry, or nothing (it cannot be answered, or
        // a stale disclosure from an earlier attempt must not be taken for this one).
        match intent {
            Some(d) => {
                let value = serde_json::to_vec(&Pending {
                    disclosure: d.clone(),
                    in_doubt: None,
                })
                .map_err(|e| codec_error("pending disclosure", e))?;
                t.pending.insert(key, &value)?;
            }
            None => {
                t.pending.remove(key)?;
            }
        }
        return Ok(());
    }
    let Some(step) = disclosure::step(old, rec) else {
        return Ok(());
    };
    let Some(raw) = t.pending.get(key)? else {
        // Sent by a version before the log: nothing is known about what it carried.
        return Ok(());
    };
    let mut pending: Pending = serde_json::from_slice(&raw)
        .map_err(|e| error::corrupt(path, format!("a pending disclosure does not decode: {e}")))?;
    if let Some(event) = step.event {
        let settles = if event.is_settlement() {
            pending.in_doubt
        } else {
            None
        };
        // A settlement of an in-doubt entry this version never wrote settles nothing.
        if !event.is_settlement() || settles.is_some() {
            let seq = append_in(
                t,
                keys,
                rec.updated_at,
                task_id,
                &pending.disclosure,
                event,
                settles,
                path,
            )?;
            if event == DisclosureEvent::InDoubt {
                pending.in_doubt = Some(seq);
            }
        }
    }
    if step.keep_pending {
        let value =
            serde_json::to_vec(&pending).map_err(|e| codec_error("pending disclosure", e))?;
        t.pending.insert(key, &value)?;
    } else {
        t.pending.remove(key)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn append_in(
    t: &mut LogTables<'_, '_, '_>,
    keys: &StoreKeys,
    at: DateTime<Utc>,
    task_id: &str,
    d: &Disclosure,
    event: DisclosureEvent,
    settles: Option<u64>,
    path: &Path,
) -> Result<u64, StoreError> {
    let (head, prev) = read_head(t.meta, path)?;
    let seq = head + 1;
    let mut entry = DisclosureEntry {
        seq,
        at,
        study: d.study.clone(),
        task_id: task_id.to_owned(),
        local_id: d.local_id.clone(),
        event,
        settles,
        sent: d.sent.clone(),
        withheld: d.withheld.clone(),
        missing: d.missing.clone(),
        prev: hex::encode(prev),
        mac: String::new(),
    };
    let mac = mac_of(keys, &entry)?;
    entry.mac = hex::encode(mac);
    let value = serde_json::to_vec(&entry).map_err(|e| codec_error("disclosure log entry", e))?;
    t.log.insert(&u64_value(seq), &value)?;
    t.meta
        .insert(DISCLOSURE_HEAD, &[u64_value(seq).as_slice(), &mac].concat())?;
    Ok(seq)
}

impl Store {
    /// Up to `limit` entries with a sequence number above `after`, in log order.
    pub fn disclosures_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<DisclosureEntry>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.read(DISCLOSURES)?
            .range(&u64_value(first), None)?
            .take(limit)
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(value.value()).map_err(|e| {
                    self.corrupt(format!("a disclosure log entry does not decode: {e}"))
                })
            })
            .collect()
    }

    /// Checks the whole chain on one snapshot: every entry in sequence, following its
    /// predecessor, unchanged, and the head in `meta` naming the last one.
    pub fn verify_disclosures(&self) -> Result<ChainCheck, StoreError> {
        let tx = self.read_tx()?;
        let log = rtree(&tx, DISCLOSURES, &self.path)?;
        let meta = rtree(&tx, META, &self.path)?;
        let mut expected = 1u64;
        let mut prev = ZERO_MAC;
        let broken = |seq: u64, why: String, entries: u64| -> Result<ChainCheck, StoreError> {
            Ok(ChainCheck {
                entries,
                broken: Some(BrokenLink { seq, why }),
            })
        };
        for item in log.iter()? {
            let (key, value) = item?;
            let read = expected - 1;
            let Some(seq) = read_u64(key.value()) else {
                return broken(
                    expected,
                    "a key of the log is not a sequence number".into(),
                    read,
                );
            };
            if seq != expected {
                return broken(
                    expected,
                    format!("entry {expected} is missing (the next one is {seq})"),
                    read,
                );
            }
            let entry: DisclosureEntry = match serde_json::from_slice(value.value()) {
                Ok(e) => e,
                Err(_) => return broken(seq, format!("entry {seq} does not decode"), read),
            };
            if entry.seq != seq {
                return broken(seq, format!("entry {seq} names itself {}", entry.seq), read);
            }
            if entry.prev != hex::encode(prev) {
                return broken(
                    seq,
                    format!(
                        "entry {seq} does not follow entry {} (an entry before it was replaced)",
                        seq - 1
                    ),
                    read,
                );
            }
            let mac = mac_of(&self.keys, &entry)?;
            if entry.mac != hex::encode(mac) {
                return broken(
                    seq,
                    format!(
                        "entry {seq} was changed after it was written (its MAC does not match its content)"
                    ),
                    read,
                );
            }
            prev = mac;
            expected += 1;
        }
        let entries = expected - 1;
        let head = match meta.get(DISCLOSURE_HEAD)? {
            None => (0, ZERO_MAC),
            Some(v) => match decode_head(&v) {
                Some(h) => h,
                None => {
                    return broken(
                        expected,
                        "the log's head in meta is malformed".into(),
                        entries,
                    );
                }
            },
        };
        if head != (entries, prev) {
            return broken(
                entries + 1,
                format!(
                    "the log ends at entry {entries}, but its head names entry {}: entries were removed or replaced at the end",
                    head.0
                ),
                entries,
            );
        }
        Ok(ChainCheck {
            entries,
            broken: None,
        })
    }

    /// Test support: replaces (or, with `None`, removes) the stored bytes of entry `seq`, as
    /// someone editing the file would, without touching the chain.
    #[cfg(any(test, feature = "testkit"))]
    pub fn tamper_with_disclosure(&self, seq: u64, value: Option<&[u8]>) -> Result<(), StoreError> {
        let path = self.path.as_path();
        self.write(|tx| {
            let mut log = super::wtree(tx, DISCLOSURES, path)?;
            match value {
                Some(v) => log.insert(&u64_value(seq), v).map(drop),
                None => log.remove(&u64_value(seq)).map(drop),
            }
        })
    }

    /// Test support: the stored bytes of entry `seq`.
    #[cfg(any(test, feature = "testkit"))]
    pub fn raw_disclosure(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(DISCLOSURES)?.get(&u64_value(seq))
    }
}
