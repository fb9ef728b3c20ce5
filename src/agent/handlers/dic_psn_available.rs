//! `dic_psn_available`: a clearing finished; the local record(s) whose Bloom filter equals the
//! task's get the pseudonym.
//!
//! No request goes to the fTTP (the site never acknowledges this task), so the handler only
//! changes local state, and doing it twice is harmless: assigning the same pseudonym again is a
//! no-op. A filter that matches no local record is not dropped: it needs attention, because it
//! means a patient of this site has a pseudonym the site cannot attach to anyone.

use super::{Effect, Outcome, PseudonymFor};
use crate::domain::Attention;
use ttp_proto::BloomFilter;

/// The records of `bloom_filter` get `pseudonym` (set on their heads by the dispatcher).
pub fn handle(bloom_filter: &BloomFilter, pseudonym: &str) -> Outcome {
    Outcome {
        effect: Effect::Done,
        pseudonym: Some(PseudonymFor {
            bloom_filter: bloom_filter.clone(),
            pseudonym: pseudonym.to_owned(),
            unknown_record: Some(Attention::UnknownRecord),
        }),
    }
}
