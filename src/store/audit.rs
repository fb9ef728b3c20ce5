//! The audit trail of manual actions (who did what, when), append-only.
//!
//! Entries are keyed by a sequence number kept in `meta` (restored with it, so a restored
//! store never reuses a number), so listing them in key order lists them in the order they
//! were made.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::path::Path;

use super::meta::{AUDIT_SEQ, increment_in};
use super::{AUDIT, META, Store, StoreError, WTree, wtree};

/// The audit action of an answer sent without requested elements the record does not hold
/// (`status` counts these as information).
pub const MISSING_ELEMENTS_ACTION: &str = "send-idat-without-elements";

/// One manual action. The caller must not put IDAT into any field: name records by local id
/// and tasks by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// Who acted (operating-system user or the name given on the command line).
    pub actor: String,
    /// What was done, e.g. `resolve-task`, `add-element`, `restore`.
    pub action: String,
    /// What it was done to: a task key, a local id, a path.
    pub subject: String,
    /// Free text: the reason given, the previous state.
    pub detail: String,
}

pub(crate) fn encode_entry(entry: &AuditEntry) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(entry).map_err(|e| StoreError::Codec {
        what: "audit entry",
        detail: e.to_string(),
    })
}

/// Appends an encoded entry inside a transaction over `meta` and `audit`, so a change and the
/// record of who made it are stored together or not at all.
pub(crate) fn append_in(
    meta: &mut WTree<'_, '_>,
    audit: &mut WTree<'_, '_>,
    value: &[u8],
    path: &Path,
) -> Result<(), StoreError> {
    let seq = increment_in(meta, AUDIT_SEQ, path)?;
    audit.insert(&seq.to_be_bytes(), value)?;
    Ok(())
}

/// [`append_in`] for a write transaction that has not opened `meta` and `audit` yet.
pub(crate) fn append_in_tx(
    tx: &redb::WriteTransaction,
    value: &[u8],
    path: &Path,
) -> Result<(), StoreError> {
    append_in(
        &mut wtree(tx, META, path)?,
        &mut wtree(tx, AUDIT, path)?,
        value,
        path,
    )
}

impl Store {
    /// Appends an entry (durable with the next [`Store::flush`]).
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let value = encode_entry(entry)?;
        let path = self.path.as_path();
        self.write(|tx| append_in_tx(tx, &value, path))
    }

    /// The newest `n` entries, oldest first (for the status report).
    pub fn recent_audit(&self, n: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut entries = self
            .read(AUDIT)?
            .iter()?
            .rev()
            .take(n)
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(value.value())
                    .map_err(|e| self.corrupt(format!("an audit entry does not decode: {e}")))
            })
            .collect::<Result<Vec<AuditEntry>, StoreError>>()?;
        entries.reverse();
        Ok(entries)
    }

    /// All entries, oldest first.
    pub fn audit(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.read(AUDIT)?
            .iter()?
            .map(|entry| {
                let (_, value) = entry?;
                serde_json::from_slice(value.value())
                    .map_err(|e| self.corrupt(format!("an audit entry does not decode: {e}")))
            })
            .collect()
    }
}
