//! `dic_psn_available`: a clearing finished; store the pseudonym for the local record(s) whose
//! Bloom filter equals the task's.
//!
//! No request goes to the fTTP (the site never acknowledges this task), so the handler only
//! changes local state, and doing it twice is harmless: assigning the same pseudonym again is a
//! no-op. A filter that matches no local record is not dropped: it needs attention, because it
//! means a patient of this site has a pseudonym the site cannot attach to anyone.

use chrono::{DateTime, Utc};

use super::{Effect, Outcome};
use crate::domain::{Assigned, Attention};
use crate::store::{Store, StoreError};
use ttp_proto::BloomFilter;

pub fn handle(
    store: &Store,
    bloom_filter: &BloomFilter,
    pseudonym: &str,
    now: DateTime<Utc>,
) -> Result<Outcome, StoreError> {
    let mut records = store.records_by_bloom_filter(&bloom_filter.0)?;
    if records.is_empty() {
        return Ok(Outcome::effect(Effect::Attention(Attention::UnknownRecord)));
    }
    let mut changed = Vec::new();
    let mut conflict = false;
    for rec in &mut records {
        let state_before = rec.state.clone();
        match rec.assign_pseudonym(pseudonym, now) {
            Assigned::New => changed.push(rec.clone()),
            // A repeated answer usually changes nothing; then there is nothing to write (and
            // no IDAT to seal again). `Same` changes at most the state.
            Assigned::Same if rec.state != state_before => changed.push(rec.clone()),
            Assigned::Same => {}
            Assigned::Conflict => conflict = true,
        }
    }
    let effect = if conflict {
        Effect::Attention(Attention::PseudonymConflict)
    } else {
        Effect::Done
    };
    Ok(Outcome {
        effect,
        records: changed,
    })
}
