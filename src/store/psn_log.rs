//! The pseudonym log: every pseudonym the agent obtained, in the order it obtained them, and
//! the cursors of the consumers that hand them over (`export --new`, the delivery webhook).
//!
//! # Why a log and not a scan of the records
//!
//! "Which pseudonyms are new since the last hand-over?" cannot be answered from the records
//! alone: a record's `updated_at` moves for other reasons (IDAT purge, an element added), and
//! a scan of a million records per hand-over is slow. So the moment a record gets a pseudonym
//! it did not have, [`Store::update_records`] appends an event `{seq, local_id, pseudonym,
//! obtained_at}` to the `psn_log` tree **in the same write transaction** that stores the
//! pseudonym: after a crash either both are present or neither, so no pseudonym is ever
//! missing from the log, and the log never names one the store does not hold.
//!
//! Sequence numbers come from the `meta` counter `psn_seq`, incremented inside that
//! transaction, so they are dense (1, 2, 3, ...; nothing is ever removed from the log) and a
//! consumer's backlog is simply `head - cursor`.
//!
//! # Cursors
//!
//! A consumer ([`HandoverConsumer`]) remembers the last sequence number it handed over in a
//! `meta` key `cursor:<consumer>`. It must advance its cursor only *after* the hand-over succeeded
//! (the file was written and flushed, the receiver answered 2xx): a crash in between hands the
//! same events over again, never skips one. Hand-over is therefore at least once; the `seq`
//! travels with every event so a receiver can drop repeats.
//!
//! # Only durable events leave
//!
//! Readers see a write as soon as it is committed, before it is durable (`store`,
//! "Durability"). A consumer that handed over an event not yet flushed could lose it to a
//! crash *after* the receiver got it: the record's pseudonym and the log entry are gone
//! together, the counter with them, and the next pseudonym the agent obtains gets the same
//! `seq` -- which a receiver that drops repeats by `seq` (as it is told to) drops: that
//! pseudonym would never be handed over (found by the model checker, ARCHITECTURE.md
//! "Durability argument", point 7). So a consumer hands over only events up to the head of
//! this process's last [`Store::flush`] ([`Store::flushed_pseudonym_log_head`],
//! [`handover_window`]), and flushes first when the log has grown beyond it.
//!
//! # Layout
//!
//! Key: `seq` (u64 big-endian, so key order is log order). Value: postcard of
//! `(local_id, pseudonym, obtained_at as i64 nanoseconds)`.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::codec::{from_nanos, read_u64, u64_value};
use super::meta::increment_in;
use super::{META, PSN_LOG, RECORDS, RTree, Store, StoreError, WTree, error, wtree};

/// The `meta` counter of the last sequence number given out.
pub(crate) const PSN_SEQ: &[u8] = b"psn_seq";
const CURSOR_PREFIX: &str = "cursor:";

/// Who hands the log's pseudonyms over, each with a cursor of its own. The store owns these
/// names, as it owns every meta key: the hand-over worker and `export` name their cursor with
/// this type instead of agreeing on a string, and `status` reads both without importing either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandoverConsumer {
    /// The delivery webhook (`crate::handover`).
    Webhook,
    /// `ttp-agent export --new`.
    Export,
}

impl HandoverConsumer {
    /// The name in the cursor's meta key (`cursor:<name>`). Stored: never change one, or the
    /// consumer starts over from the beginning of the log.
    pub const fn name(self) -> &'static str {
        match self {
            HandoverConsumer::Webhook => "webhook",
            HandoverConsumer::Export => "export",
        }
    }
}

/// One pseudonym the agent obtained. `Debug` does not show the pseudonym.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct PsnEvent {
    /// Position in the log: 1, 2, 3, ... without gaps.
    pub seq: u64,
    pub local_id: String,
    pub pseudonym: String,
    /// When the agent stored the pseudonym (for events back-filled by the schema 2 migration:
    /// the record's last update, the best time known).
    pub obtained_at: DateTime<Utc>,
}

impl std::fmt::Debug for PsnEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PsnEvent")
            .field("seq", &self.seq)
            .field("local_id", &self.local_id)
            .field("pseudonym", &"<redacted>")
            .field("obtained_at", &self.obtained_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredEvent<'a> {
    #[serde(borrow)]
    local_id: &'a str,
    #[serde(borrow)]
    pseudonym: &'a str,
    obtained_at: i64,
}

fn encode_event(local_id: &str, pseudonym: &str, obtained_at: i64) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(&StoredEvent {
        local_id,
        pseudonym,
        obtained_at,
    })
    .map_err(|e| StoreError::Codec {
        what: "pseudonym log entry",
        detail: e.to_string(),
    })
}

fn decode_event(key: &[u8], value: &[u8], path: &Path) -> Result<PsnEvent, StoreError> {
    let seq =
        read_u64(key).ok_or_else(|| error::corrupt(path, "a pseudonym log key is not 8 bytes"))?;
    match postcard::take_from_bytes::<StoredEvent<'_>>(value) {
        Ok((e, [])) => Ok(PsnEvent {
            seq,
            local_id: e.local_id.to_string(),
            pseudonym: e.pseudonym.to_string(),
            obtained_at: from_nanos(e.obtained_at),
        }),
        _ => Err(error::corrupt(
            path,
            format!("pseudonym log entry {seq} does not decode"),
        )),
    }
}

/// Appends one event inside a transaction over `meta` and `psn_log`; returns its `seq`.
pub(crate) fn append_in(
    meta: &mut WTree<'_, '_>,
    log: &mut WTree<'_, '_>,
    local_id: &str,
    pseudonym: &str,
    obtained_at: i64,
    path: &Path,
) -> Result<u64, StoreError> {
    let seq = increment_in(meta, PSN_SEQ, path)?;
    let value = encode_event(local_id, pseudonym, obtained_at)?;
    log.insert(&u64_value(seq), &value)?;
    Ok(seq)
}

/// The pseudonym a record's write appends to the log: its new pseudonym, if it did not have
/// that one before (the rule [`Store::update_records`] and `insert_records` apply in the
/// record's transaction).
pub fn logged_pseudonym<'a>(old: Option<&str>, new: Option<&'a str>) -> Option<&'a str> {
    new.filter(|psn| old != Some(*psn))
}

/// How many events a consumer whose cursor is `cursor` hands over next, at most `limit`: the
/// ones after its cursor up to `flushed_head` (the log's head at the last flush), none beyond
/// it (see "Only durable events leave"). 0 when it has nothing durable to hand over.
pub fn handover_window(cursor: u64, flushed_head: u64, limit: usize) -> usize {
    usize::try_from(flushed_head.saturating_sub(cursor))
        .unwrap_or(usize::MAX)
        .min(limit)
}

/// The log's head inside a write transaction (for [`Store::flush`]).
pub(crate) fn head_in(meta: &WTree<'_, '_>, path: &Path) -> Result<u64, StoreError> {
    match meta.get(PSN_SEQ)? {
        None => Ok(0),
        Some(v) => read_u64(&v)
            .ok_or_else(|| error::corrupt(path, "the pseudonym log counter is not 8 bytes")),
    }
}

fn cursor_key(consumer: HandoverConsumer) -> Vec<u8> {
    [CURSOR_PREFIX.as_bytes(), consumer.name().as_bytes()].concat()
}

impl Store {
    /// Up to `limit` events with a sequence number above `after`, in log order.
    pub fn pseudonym_events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<PsnEvent>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        self.read(PSN_LOG)?
            .range(&u64_value(first), None)?
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode_event(key.value(), value.value(), &self.path)
            })
            .collect()
    }

    /// The sequence number of the newest event (0 while the log is empty).
    pub fn pseudonym_log_head(&self) -> Result<u64, StoreError> {
        self.read_counter(PSN_SEQ)
    }

    /// The log's head as of this process's last [`Store::flush`]: every event up to it is
    /// durable. What a consumer may hand over (see "Only durable events leave"); 0 before the
    /// first flush of this process.
    pub fn flushed_pseudonym_log_head(&self) -> u64 {
        self.flushed_psn_head
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The log's head, durable: flushes first if the log grew since the last flush (a cycle may
    /// hold pseudonyms it has not flushed yet). What a consumer reads before it hands over.
    pub fn durable_pseudonym_log_head(&self) -> Result<u64, StoreError> {
        if self.pseudonym_log_head()? > self.flushed_pseudonym_log_head() {
            self.flush()?;
        }
        Ok(self.flushed_pseudonym_log_head())
    }

    /// The last sequence number `consumer` handed over (0 if it never did).
    pub fn export_cursor(&self, consumer: HandoverConsumer) -> Result<u64, StoreError> {
        self.read_counter(&cursor_key(consumer))
    }

    /// Records that `consumer` handed over every event up to `seq`. Call only after the
    /// hand-over succeeded (see the module documentation); durable with the next
    /// [`Store::flush`]. A cursor beyond the log's head is refused; moving it back is allowed
    /// (to hand over again).
    pub fn set_export_cursor(
        &self,
        consumer: HandoverConsumer,
        seq: u64,
    ) -> Result<(), StoreError> {
        let key = cursor_key(consumer);
        let head = self.pseudonym_log_head()?;
        if seq > head {
            return Err(StoreError::Invalid {
                what: "hand-over cursor",
                why: format!(
                    "{seq} is beyond the newest pseudonym log entry ({head}) for consumer {:?}",
                    consumer.name()
                ),
            });
        }
        self.write(|tx| {
            wtree(tx, META, &self.path)?
                .insert(&key, &u64_value(seq))
                .map(drop)
        })
    }

    /// Events after `consumer`'s cursor (the log is dense, so this is a subtraction).
    pub fn pending_events(&self, consumer: HandoverConsumer) -> Result<u64, StoreError> {
        let head = self.pseudonym_log_head()?;
        Ok(head.saturating_sub(self.export_cursor(consumer)?))
    }
}

/// For [`Store::check_integrity`]: the log is dense (entries 1..=head, each decodable).
/// Constant memory.
pub(crate) fn check(
    meta: &RTree<'_>,
    psn_log: &RTree<'_>,
    path: &Path,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    let head = match meta.get(PSN_SEQ)? {
        None => 0,
        Some(v) => match read_u64(&v) {
            Some(n) => n,
            None => {
                problems.push("the pseudonym log counter is not 8 bytes".to_string());
                return Ok(());
            }
        },
    };
    let mut expected = 1u64;
    for entry in psn_log.iter()? {
        let (key, value) = entry?;
        match decode_event(key.value(), value.value(), path) {
            Ok(e) if e.seq == expected => expected += 1,
            Ok(e) => {
                problems.push(format!(
                    "the pseudonym log skips from {} to {}",
                    expected - 1,
                    e.seq
                ));
                return Ok(());
            }
            Err(e) => {
                problems.push(e.to_string());
                return Ok(());
            }
        }
    }
    if expected - 1 != head {
        problems.push(format!(
            "the pseudonym log has {} entries, but its counter says {head}",
            expected - 1
        ));
    }
    Ok(())
}

/// Schema 1 → 2: fills the log from the records that already have a pseudonym, in `local_id`
/// order (constant memory; the order they were obtained in is not known), with the record's
/// last update as `obtained_at`. Idempotent: it clears the log and the counter first. No
/// cursor can exist yet in a schema 1 store, so no consumer has seen the old content.
pub(crate) fn backfill(tx: &redb::WriteTransaction, path: &Path) -> Result<(), StoreError> {
    let mut log = wtree(tx, PSN_LOG, path)?;
    log.clear()?;
    let records = wtree(tx, RECORDS, path)?;
    let mut seq: u64 = 0;
    for entry in records.iter()? {
        let (key, value) = entry?;
        let (id, stored) = super::records::decode_record_entry(key.value(), value.value(), path)?;
        let Some(psn) = stored.pseudonym else {
            continue;
        };
        seq += 1;
        log.insert(&u64_value(seq), &encode_event(id, psn, stored.updated_at)?)?;
    }
    wtree(tx, META, path)?.insert(PSN_SEQ, &u64_value(seq))?;
    if seq > 0 {
        tracing::info!(
            events = seq,
            "pseudonym log back-filled from records that already had a pseudonym"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cursors' meta keys are stored: a renamed consumer would hand the whole log over
    /// again (or, for `export --new`, write it all out again).
    /// A record's write logs a pseudonym it did not have, never one it had.
    #[test]
    fn only_a_new_pseudonym_is_logged() {
        assert_eq!(logged_pseudonym(None, Some("p1")), Some("p1"));
        assert_eq!(logged_pseudonym(Some("p1"), Some("p1")), None);
        assert_eq!(logged_pseudonym(Some("p1"), Some("p2")), Some("p2"));
        assert_eq!(logged_pseudonym(Some("p1"), None), None);
        assert_eq!(logged_pseudonym(None, None), None);
    }

    /// A consumer hands over what lies after its cursor up to the flushed head, a page at a
    /// time, and nothing beyond the flushed head.
    #[test]
    fn the_window_ends_at_the_flushed_head() {
        assert_eq!(handover_window(0, 0, 100), 0);
        assert_eq!(handover_window(0, 3, 100), 3);
        assert_eq!(handover_window(2, 3, 100), 1);
        assert_eq!(handover_window(3, 3, 100), 0);
        assert_eq!(handover_window(0, 250, 100), 100);
        // A cursor beyond the flushed head (set in an earlier run, whose events this
        // process has not flushed yet) hands over nothing, never wraps.
        assert_eq!(handover_window(5, 3, 100), 0);
    }

    #[test]
    fn the_cursor_keys_are_the_stored_names() {
        assert_eq!(cursor_key(HandoverConsumer::Webhook), b"cursor:webhook");
        assert_eq!(cursor_key(HandoverConsumer::Export), b"cursor:export");
    }
}
