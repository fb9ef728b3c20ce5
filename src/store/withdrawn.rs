//! Consent withdrawals: the record is removed (IDAT and filter), and what is needed to honour
//! the withdrawal later is kept here.
//!
//! One table, `withdrawn`, with three kinds of keys:
//!
//! | key | value | for |
//! |---|---|---|
//! | `r` ‖ local id | JSON of [`Withdrawal`] | `submit` refusing the id, `export`'s `withdrawn` column, `status` |
//! | `f` ‖ `HMAC(k_index, filter)[..16]` ‖ local id | empty | a later task naming the filter |
//! | `p` ‖ `SHA-256(pseudonym)[..16]` ‖ local id | empty | a later task naming the pseudonym |
//!
//! Why these: a later task names its record by Bloom filter (`repeat_request`,
//! `dic_psn_available`, most `send_idat`) or by pseudonym (some `send_idat`), never by local
//! id. The filter itself is personal data derived from the IDAT and must go with it; its keyed
//! digest is what the filter index already held. It cannot be turned back into the filter,
//! and without the IDAT key (from which `k_index` is derived) a guessed name and birth date
//! cannot be checked against it; with it, a task naming the same filter is still recognised.
//! The pseudonym is kept in clear, as the pseudonym log keeps it anyway: the site needs it to
//! delete the patient's data downstream (`export`). A withdrawal, its match keys and the
//! removal of the record are one transaction with the audit entry.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use super::codec::{DIGEST_LEN, digest16};
use super::{AuditEntry, RTree, Store, StoreError, WITHDRAWN, records, rtree, wtree};

const BY_ID: u8 = b'r';
const BY_FILTER: u8 = b'f';
const BY_PSN: u8 = b'p';

/// What is kept of a withdrawn record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    pub local_id: String,
    /// The pseudonym the fTTP had assigned, if any (kept for the site's downstream deletion).
    pub pseudonym: Option<String>,
    pub at: DateTime<Utc>,
    /// The local user who withdrew it.
    pub by: String,
}

fn key(kind: u8, digest: Option<&[u8; DIGEST_LEN]>, local_id: &str) -> Vec<u8> {
    let mut k = vec![kind];
    if let Some(d) = digest {
        k.extend_from_slice(d);
    }
    k.extend_from_slice(local_id.as_bytes());
    k
}

fn decode(value: &[u8]) -> Result<Withdrawal, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::Codec {
        what: "withdrawal",
        detail: e.to_string(),
    })
}

impl Store {
    /// Withdraws the record `local_id`: removes it (sealed IDAT, sealed filter, index entries,
    /// counts) and keeps the [`Withdrawal`] with its match keys, with `audit`, in one
    /// transaction. `None` (nothing written) when no such record is stored. Durable with the
    /// next flush; the removed bytes leave the file only with [`Store::rewrite_after_purge`].
    ///
    /// Under the task gate: a dispatch wave checks its tasks against the withdrawals and
    /// writes their intents while it holds the gate, so a withdrawal commits before the check
    /// (the task is closed) or after the intent (the request is on the wire, as documented),
    /// never in between, where a `send_idat` prepared from the record would go out with an
    /// intent written after the withdrawal (found by the model checker, ARCHITECTURE.md
    /// "Durability argument", point 12).
    pub fn withdraw_record(
        &self,
        local_id: &str,
        by: &str,
        at: DateTime<Utc>,
        audit: &AuditEntry,
    ) -> Result<Option<Withdrawal>, StoreError> {
        let audit = super::audit::encode_entry(audit)?;
        let path = self.path.as_path();
        let _gate = self.task_gate();
        self.write(|tx| {
            let Some(removed) = records::remove_in(tx, &self.keys, local_id, path)? else {
                return Ok(None);
            };
            let w = Withdrawal {
                local_id: local_id.to_owned(),
                pseudonym: removed.pseudonym,
                at,
                by: by.to_owned(),
            };
            let value = serde_json::to_vec(&w).map_err(|e| StoreError::Codec {
                what: "withdrawal",
                detail: e.to_string(),
            })?;
            let mut t = wtree(tx, WITHDRAWN, path)?;
            t.insert(&key(BY_ID, None, local_id), &value)?;
            t.insert(&key(BY_FILTER, Some(&removed.filter_tag), local_id), &[])?;
            if let Some(psn) = &w.pseudonym {
                t.insert(&key(BY_PSN, Some(&digest16(psn.as_bytes())), local_id), &[])?;
            }
            drop(t);
            super::audit::append_in_tx(tx, &audit, path)?;
            Ok(Some(w))
        })
    }

    /// Forgets the withdrawal of `local_id` (`submit --readmit`: consent was given again), with
    /// `audit`, in one transaction. Returns whether there was one.
    pub fn readmit(&self, local_id: &str, audit: &AuditEntry) -> Result<bool, StoreError> {
        let audit = super::audit::encode_entry(audit)?;
        let path = self.path.as_path();
        self.write(|tx| {
            let mut t = wtree(tx, WITHDRAWN, path)?;
            let Some(value) = t.remove(&key(BY_ID, None, local_id))? else {
                return Ok(false);
            };
            let w = decode(&value)?;
            // The filter's match key holds no value to find it by: find it by its local id.
            let mut stale = Vec::new();
            for entry in t.scan_prefix(&[BY_FILTER])? {
                let (k, _) = entry?;
                let k = k.value();
                if k.len() == 1 + DIGEST_LEN + local_id.len() && k.ends_with(local_id.as_bytes()) {
                    stale.push(k.to_vec());
                }
            }
            if let Some(psn) = &w.pseudonym {
                stale.push(key(BY_PSN, Some(&digest16(psn.as_bytes())), local_id));
            }
            for k in stale {
                t.remove(&k)?;
            }
            drop(t);
            super::audit::append_in_tx(tx, &audit, path)?;
            Ok(true)
        })
    }

    /// The withdrawal of `local_id`, if it was withdrawn.
    pub fn withdrawal(&self, local_id: &str) -> Result<Option<Withdrawal>, StoreError> {
        match self.read(WITHDRAWN)?.get(&key(BY_ID, None, local_id))? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some),
        }
    }

    /// Every withdrawal, by local id.
    pub fn withdrawals(&self) -> Result<Vec<Withdrawal>, StoreError> {
        let mut out = Vec::new();
        for entry in self.read(WITHDRAWN)?.scan_prefix(&[BY_ID])? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// The local id of a withdrawn record that one of these filters or pseudonyms names (what a
    /// task names), if any.
    pub fn withdrawn_subject(
        &self,
        filters: &[&[u8]],
        pseudonyms: &[&str],
    ) -> Result<Option<String>, StoreError> {
        let tx = self.read_tx()?;
        let t = rtree(&tx, WITHDRAWN, &self.path)?;
        let probes = filters
            .iter()
            .map(|f| (BY_FILTER, self.keys.filter_tag(f)))
            .chain(pseudonyms.iter().map(|p| (BY_PSN, digest16(p.as_bytes()))));
        for (kind, digest) in probes {
            let prefix = key(kind, Some(&digest), "");
            if let Some(entry) = t.scan_prefix(&prefix)?.next() {
                let (k, _) = entry?;
                let id = String::from_utf8_lossy(&k.value()[prefix.len()..]).into_owned();
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Whether one of these filters or pseudonyms (what a task names) is a match key of the
    /// withdrawal of `local_id`: exact, where [`Store::withdrawn_subject`] answers with any
    /// withdrawn record the task names.
    pub fn names_withdrawn(
        &self,
        local_id: &str,
        filters: &[&[u8]],
        pseudonyms: &[&str],
    ) -> Result<bool, StoreError> {
        let t = self.read(WITHDRAWN)?;
        let keys = filters
            .iter()
            .map(|f| key(BY_FILTER, Some(&self.keys.filter_tag(f)), local_id))
            .chain(
                pseudonyms
                    .iter()
                    .map(|p| key(BY_PSN, Some(&digest16(p.as_bytes())), local_id)),
            );
        for k in keys {
            if t.get(&k)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// After records were withdrawn: the store's file is rewritten so that no file of the
    /// store directory holds their IDAT or filter any more (see "Purged IDAT" in the module
    /// documentation). Durable when it returns.
    pub fn rewrite_after_purge(&self) -> Result<(), StoreError> {
        self.flush()?;
        self.rewrite()
    }
}

/// For [`Store::check_integrity`]: every withdrawal decodes under its own local id, its record
/// is gone from `records`, and it has exactly its match keys: one by filter, one by pseudonym
/// when it kept one, and no match key without a withdrawal. A match key that went missing
/// would let a later task about the withdrawn record be answered; one without a withdrawal
/// would close tasks of a record nobody withdrew.
///
/// Memory grows with the number of withdrawals (the local ids seen with a filter key), not
/// with the records: withdrawals are few.
pub(crate) fn check(
    records: &RTree<'_>,
    withdrawn: &RTree<'_>,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut with_filter_key = BTreeSet::new();
    for entry in withdrawn.iter()? {
        let (k, v) = entry?;
        let (k, v) = (k.value(), v.value());
        let id_at = |digest: bool| 1 + if digest { DIGEST_LEN } else { 0 };
        let kind = k.first().copied();
        let id = match kind {
            Some(BY_FILTER | BY_PSN) if k.len() > id_at(true) => &k[id_at(true)..],
            Some(BY_ID) if k.len() > id_at(false) => &k[id_at(false)..],
            _ => {
                problems.push(format!("withdrawals: a malformed key {:?}", lossy(k)));
                continue;
            }
        };
        let id = lossy(id);
        if kind != Some(BY_ID) {
            if withdrawn.get(&key(BY_ID, None, &id))?.is_none() {
                problems.push(format!(
                    "withdrawals: a match key by {} for {id:?}, which is not withdrawn",
                    if kind == Some(BY_FILTER) {
                        "filter"
                    } else {
                        "pseudonym"
                    }
                ));
            } else if kind == Some(BY_FILTER) && !with_filter_key.insert(id.clone()) {
                problems.push(format!("withdrawals: {id:?} has more than one filter key"));
            }
            continue;
        }
        let w = match decode(v) {
            Ok(w) => w,
            Err(e) => {
                problems.push(format!("withdrawal of {id:?}: {e}"));
                continue;
            }
        };
        if w.local_id != id {
            problems.push(format!(
                "withdrawal of {id:?}: its value names {:?}",
                w.local_id
            ));
        }
        if records.get(id.as_bytes())?.is_some() {
            problems.push(format!("withdrawal of {id:?}: the record is still stored"));
        }
        // The filter keys sort before the withdrawals ('f' < 'r'): all of them were seen.
        if !with_filter_key.contains(&id) {
            problems.push(format!(
                "withdrawal of {id:?}: its match key by filter is missing"
            ));
        }
        if let Some(psn) = &w.pseudonym
            && withdrawn
                .get(&key(BY_PSN, Some(&digest16(psn.as_bytes())), &id))?
                .is_none()
        {
            problems.push(format!(
                "withdrawal of {id:?}: its match key by pseudonym is missing"
            ));
        }
    }
    Ok(())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;

    use super::*;
    use crate::domain::{LocalRecord, RecordHead, RecordState};
    use crate::store::{IdatKey, StoreOptions};

    fn record(id: &str, pseudonym: Option<&str>) -> LocalRecord {
        let now = Utc::now();
        LocalRecord {
            head: RecordHead {
                local_id: id.into(),
                bloom_filter: id.as_bytes().repeat(8),
                state: match pseudonym {
                    Some(_) => RecordState::Pseudonymised,
                    None => RecordState::New,
                },
                pseudonym: pseudonym.map(str::to_owned),
                created_at: now,
                updated_at: now,
            },
            idat: None,
        }
    }

    fn withdraw(store: &Store, id: &str) {
        let entry = AuditEntry {
            at: Utc::now(),
            actor: "dpo".into(),
            action: "withdraw".into(),
            subject: id.into(),
            detail: String::new(),
        };
        store
            .withdraw_record(id, "dpo", Utc::now(), &entry)
            .expect("withdraw")
            .expect("stored");
    }

    fn problems(store: &Store) -> Vec<String> {
        store.check_integrity().expect("check").problems
    }

    fn edit(store: &Store, f: impl FnOnce(&mut super::super::WTree<'_, '_>)) {
        let path = store.path.clone();
        store
            .write(|tx| {
                f(&mut wtree(tx, WITHDRAWN, &path)?);
                Ok(())
            })
            .expect("edit");
    }

    /// `check --store` finds a withdrawal that lost a match key (a later task about the record
    /// would be answered), a match key without a withdrawal, and a withdrawn record that is
    /// still stored; an intact store reports nothing.
    #[test]
    fn the_integrity_check_finds_withdrawals_without_their_match_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&StoreOptions::new(dir.path(), IdatKey::generate())).expect("open");
        store
            .insert_records(&[record("case-1", Some("psn-1")), record("case-2", None)])
            .expect("insert");
        withdraw(&store, "case-1");
        withdraw(&store, "case-2");
        assert_eq!(problems(&store), Vec::<String>::new());

        let psn_key = key(BY_PSN, Some(&digest16(b"psn-1")), "case-1");
        edit(&store, |t| {
            t.remove(&psn_key).expect("remove");
        });
        assert_eq!(
            problems(&store),
            ["withdrawal of \"case-1\": its match key by pseudonym is missing"]
        );
        edit(&store, |t| {
            t.insert(&psn_key, &[]).expect("insert");
        });

        let filter_key = key(
            BY_FILTER,
            Some(
                &store
                    .keys
                    .filter_tag(&record("case-2", None).head.bloom_filter),
            ),
            "case-2",
        );
        edit(&store, |t| {
            assert!(
                t.remove(&filter_key).expect("remove").is_some(),
                "the key is as built"
            );
            t.insert(&key(BY_FILTER, Some(&[7; DIGEST_LEN]), "ghost"), &[])
                .expect("insert");
        });
        assert_eq!(
            problems(&store),
            [
                "withdrawals: a match key by filter for \"ghost\", which is not withdrawn",
                "withdrawal of \"case-2\": its match key by filter is missing",
            ]
        );
        edit(&store, |t| {
            t.remove(&key(BY_FILTER, Some(&[7; DIGEST_LEN]), "ghost"))
                .expect("remove");
            t.insert(&filter_key, &[]).expect("insert");
        });
        assert_eq!(problems(&store), Vec::<String>::new());

        store
            .insert_records(&[record("case-2", None)])
            .expect("insert");
        assert_eq!(
            problems(&store),
            ["withdrawal of \"case-2\": the record is still stored"]
        );
    }

    /// The dispatcher checks a wave's tasks against the withdrawals and writes their intents
    /// while it holds the task gate (`dispatch_wave`). A withdrawal arriving meanwhile (the
    /// control channel runs it on another thread) waits for the gate: it must not commit
    /// between the check and the intent, or a `send_idat` prepared from the record goes out
    /// with an intent written after the withdrawal committed. Without the gate it commits at
    /// once (seen failing so).
    #[test]
    fn a_withdrawal_never_commits_between_the_dispatchers_check_and_its_intent() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions::new(dir.path(), IdatKey::generate());
        let store = Arc::new(Store::open(&opts).unwrap());
        let rec = crate::testkit::record("case-0", 0, Utc::now());
        let filter = rec.head.bloom_filter.clone();
        store.insert_records(&[rec]).unwrap();

        // The dispatcher's check, under the gate: nothing withdrawn yet.
        let gate = store.task_gate();
        assert_eq!(
            store.withdrawn_subject(&[filter.as_slice()], &[]).unwrap(),
            None
        );

        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let person = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let entry = AuditEntry {
                    at: Utc::now(),
                    actor: "dpo".into(),
                    action: "withdraw".into(),
                    subject: "case-0".into(),
                    detail: "consent withdrawn".into(),
                };
                let w = store
                    .withdraw_record("case-0", "dpo", Utc::now(), &entry)
                    .unwrap();
                let _ = done_tx.send(());
                w
            })
        };
        // Give the withdrawal every chance to commit while the gate is held (it cannot; without
        // the gate it would). Not a timing assertion: the result must be right however the
        // threads are scheduled.
        let _ = done_rx.recv_timeout(std::time::Duration::from_millis(300));

        // Where the dispatcher writes its intent: still what the check saw.
        let withdrawn_meanwhile = store.withdrawal("case-0").unwrap().is_some();
        drop(gate);
        let withdrawal = person.join().unwrap();
        assert!(
            !withdrawn_meanwhile,
            "the withdrawal committed between the dispatcher's check and its intent"
        );
        assert!(withdrawal.is_some(), "the withdrawal follows the wave");
        assert_eq!(
            store.withdrawn_subject(&[filter.as_slice()], &[]).unwrap(),
            Some("case-0".into())
        );
    }
}
