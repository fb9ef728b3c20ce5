//! The agent's data at scale, as `benches/scale.rs` builds it: records `Pseudonymised` with
//! sealed IDAT (four elements) and a 225-byte filter (the starter profile's L = 900), and
//! finished tasks of all three types spread over the last 25 days (inside the 30-day retention).
//!
//! The same synthetic values as `scale.rs`, so that the figures of both benches describe the
//! same store; kept here so that other benches build it through the real `Store` API too.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ttp_agent::domain::{Idat, LocalRecord, RecordHead, RecordState, TaskRecord, TaskState};
use ttp_agent::store::Store;
use ttp_proto::{BloomFilter, IdatElement, TaskKind};

use super::BenchResult;

/// 225 pseudo-random bytes, distinct per `i` (no two records share a filter).
pub use ttp_agent::testkit::filter;

/// Record `i`: synthetic IDAT (never a real person's), its pseudonym, times of 20 / 10 days ago.
pub fn record(i: u64, now: DateTime<Utc>) -> LocalRecord {
    let idat: BTreeMap<IdatElement, String> = [
        (IdatElement::Given, format!("GIVEN{:05}", i % 100_000)),
        (IdatElement::Family, format!("FAMILY{i:07}")),
        (
            IdatElement::Birthdate,
            format!("{}-{:02}-{:02}", 1930 + i % 90, 1 + i % 12, 1 + i % 28),
        ),
        (
            IdatElement::Gender,
            if i.is_multiple_of(2) {
                "female"
            } else {
                "male"
            }
            .to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let created = now - chrono::Duration::days(20);
    LocalRecord {
        head: RecordHead {
            pseudonym: Some(format!("bench-study_{i:08X}")),
            updated_at: now - chrono::Duration::days(10),
            ..ttp_agent::testkit::head(
                &format!("case-{i:010}"),
                filter(i),
                RecordState::Pseudonymised,
                created,
            )
        },
        idat: Some(Idat(idat)),
    }
}

/// The yardstick for "raw data" of a record: local id + filter + IDAT values +
/// pseudonym, as `scale.rs` counts it.
pub fn record_raw_size(r: &LocalRecord) -> u64 {
    let idat: usize = r
        .idat
        .as_ref()
        .map_or(0, |i| i.0.values().map(String::len).sum());
    let psn = r.head.pseudonym.as_ref().map_or(0, String::len);
    (r.head.local_id.len() + r.head.bloom_filter.len() + idat + psn) as u64
}

/// Finished task `i` (`Done`), one of the three types in turn.
pub fn finished_task(i: u64, now: DateTime<Utc>) -> TaskRecord {
    let at = now - chrono::Duration::minutes((i % (25 * 24 * 60)) as i64);
    let kind = match i % 3 {
        0 => TaskKind::DicPsnAvailable {
            bloom_filter: BloomFilter(filter(i)),
            target: super::TARGET.into(),
            pseudonym: format!("bench-study_{i:08X}"),
        },
        1 => TaskKind::RepeatRequest {
            study: super::STUDY.into(),
            bloom_filter: BloomFilter(filter(i)),
            target: super::TARGET.into(),
        },
        _ => TaskKind::SendIdat {
            task_id: format!("{i:08x}-0000-4000-8000-000000000000"),
            subject: ttp_proto::SendIdatSubject::BloomFilter(BloomFilter(filter(i))),
            elements: ["given", "family", "birthdate", "gender"]
                .iter()
                .filter_map(|c| IdatElement::from_code(c))
                .map(ttp_proto::ElementRequest::Known)
                .collect(),
        },
    };
    let task = ttp_agent::testkit::wire_task(kind, None);
    let mut rec = ttp_agent::testkit::task(&task.key().0, task.kind, TaskState::Done { at }, at);
    rec.attempts = 1;
    rec.first_seen = at - chrono::Duration::minutes(5);
    rec
}

/// Fills `store` with `records` records and `tasks` finished tasks through the store API,
/// `batch` per call (each call is one transaction per 512 records inside the store), then
/// flushes. Returns the raw size of the records (see [`record_raw_size`]).
pub fn fill_store(store: &Store, records: u64, tasks: u64, batch: u64) -> BenchResult<u64> {
    let now = Utc::now();
    let mut raw = 0;
    for start in (0..records).step_by(batch as usize) {
        let recs: Vec<LocalRecord> = (start..(start + batch).min(records))
            .map(|i| record(i, now))
            .collect();
        raw += recs.iter().map(record_raw_size).sum::<u64>();
        store.insert_records(&recs)?;
    }
    for start in (0..tasks).step_by(batch as usize) {
        let batch: Vec<TaskRecord> = (start..(start + batch).min(tasks))
            .map(|i| finished_task(i, now))
            .collect();
        store.put_tasks(&batch)?;
    }
    store.flush()?;
    Ok(raw)
}
