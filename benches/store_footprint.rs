//! Store footprint: size on disk and memory for many records, and growth under churn.
//!
//! `cargo bench --bench store_footprint` (release profile). Figures are printed, not asserted:
//! they depend on the machine and file system. Environment:
//!
//! * `STORE_BENCH_RECORDS` (default 1,000,000): records in the bulk import.
//! * `STORE_BENCH_CYCLES` (default 5): churn cycles after the import. Each inserts 5% more
//!   records, moves them through the registration states, purges their IDAT, and runs
//!   1,000 tasks from `Received` to a purge into the history counters. At the end the store
//!   is compacted (`Store::compact`), then one durable write follows (the file's length after
//!   it).
//! * `STORE_BENCH_DIR`: where to put the store (default: a temporary directory);
//!   `STORE_BENCH_KEY`: write (or, with `STORE_BENCH_OPEN_ONLY`, read) the IDAT key file there.
//! * `STORE_BENCH_IMPORT_ONLY`: stop after the import (to measure the next open separately).
//! * `STORE_BENCH_OPEN_ONLY`: only open the existing store and scan it once, in this process.
//!
//! Raw size of a record = local id + filter + IDAT values, the yardstick of the issue
//! ("≤ 3× raw on disk").

use std::collections::BTreeMap;
use std::time::Instant;

use chrono::{Duration, Utc};
use ttp_agent::domain::{Idat, LocalRecord, RecordState, TaskRecord, TaskState};
use ttp_agent::store::{IdatKey, Store, StoreOptions};
use ttp_proto::IdatElement;

const BATCH: usize = 1_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

use ttp_agent::testkit::filter;

fn record(i: u64) -> LocalRecord {
    let now = Utc::now();
    let idat: BTreeMap<IdatElement, String> = [
        (IdatElement::Given, format!("Given{:05}", i % 100_000)),
        (IdatElement::Family, format!("Family{i:07}")),
        (IdatElement::Birthdate, "1970-01-01".to_string()),
        (IdatElement::Gender, "female".to_string()),
        (IdatElement::AddressPostalcode, "17489".to_string()),
        (IdatElement::AddressCity, "Greifswald".to_string()),
    ]
    .into_iter()
    .collect();
    LocalRecord {
        head: ttp_agent::testkit::head(&format!("case-{i:010}"), filter(i), RecordState::New, now),
        idat: Some(Idat(idat)),
    }
}

fn raw_size(r: &LocalRecord) -> u64 {
    let idat: usize = r
        .idat
        .as_ref()
        .map_or(0, |i| i.0.values().map(String::len).sum());
    (r.head.local_id.len() + r.head.bloom_filter.len() + idat) as u64
}

/// (current RSS, peak RSS) in KiB, from /proc (Linux only; zeros elsewhere).
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn insert_range(store: &Store, from: u64, to: u64) -> Result<u64, Box<dyn std::error::Error>> {
    let mut raw = 0;
    let mut i = from;
    while i < to {
        let end = (i + BATCH as u64).min(to);
        let recs: Vec<LocalRecord> = (i..end).map(record).collect();
        raw += recs.iter().map(raw_size).sum::<u64>();
        store.insert_records(&recs)?;
        i = end;
    }
    store.flush()?;
    Ok(raw)
}

fn task(i: u64, state: TaskState) -> TaskRecord {
    let kind = ttp_agent::testkit::dic_psn_available(filter(i), &format!("psn-{i}"));
    let mut rec = ttp_agent::testkit::task(
        &format!("dic_psn_available:bench:{i}"),
        kind,
        state,
        Utc::now(),
    );
    rec.attempts = 1;
    rec
}

/// `STORE_BENCH_OPEN_ONLY=1` with `STORE_BENCH_DIR` and `STORE_BENCH_KEY` (a key file): measure
/// opening an existing store in a fresh process (the store's memory use on open).
fn open_only() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("STORE_BENCH_DIR").ok_or("STORE_BENCH_DIR is required")?;
    let key = std::env::var_os("STORE_BENCH_KEY").ok_or("STORE_BENCH_KEY is required")?;
    let opts = StoreOptions::new(dir, IdatKey::from_file(std::path::Path::new(&key))?);
    let (rss_before, _) = rss_kib();
    let started = Instant::now();
    let store = Store::open(&opts)?;
    let open_time = started.elapsed();
    let (rss_open, _) = rss_kib();
    let counts = store.record_counts()?;
    let started = Instant::now();
    let scanned = store.records_in_states(|_| false)?.len();
    let scan_time = started.elapsed();
    let (rss_scan, peak) = rss_kib();
    if std::env::var_os("STORE_BENCH_RESTORE_TOO").is_some() {
        let temp = tempfile::tempdir()?;
        let backup = temp.path().join("b");
        store.backup_to(&backup)?;
        println!("after backup: RSS {} MiB", rss_kib().0 / 1024);
        let target = StoreOptions::new(temp.path().join("r"), opts.idat_key.clone());
        Store::restore_from(&backup, &target)?;
        println!(
            "after restore: RSS {} MiB (peak {} MiB)",
            rss_kib().0 / 1024,
            rss_kib().1 / 1024
        );
    }
    println!(
        "open only: {:.2} s, RSS {} -> {} MiB after open, {} MiB after a full scan ({:.1} s, {} of {} matched), peak {} MiB; on disk {:.1} MiB",
        open_time.as_secs_f64(),
        rss_before / 1024,
        rss_open / 1024,
        rss_scan / 1024,
        scan_time.as_secs_f64(),
        scanned,
        counts.total,
        peak / 1024,
        mib(store.size_on_disk()?)
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("STORE_BENCH_OPEN_ONLY").is_some() {
        return open_only();
    }
    let n = env_u64("STORE_BENCH_RECORDS", 1_000_000);
    let cycles = env_u64("STORE_BENCH_CYCLES", 5);
    let temp = tempfile::tempdir()?;
    let dir = std::env::var_os("STORE_BENCH_DIR")
        .map_or_else(|| temp.path().join("store"), std::path::PathBuf::from);
    let key = IdatKey::generate();
    if let Some(key_file) = std::env::var_os("STORE_BENCH_KEY") {
        std::fs::write(key_file, key.to_file_text())?;
    }
    let opts = StoreOptions::new(&dir, key);
    println!(
        "store_footprint: {n} records, {cycles} churn cycles, store at {}",
        dir.display()
    );

    let store = Store::open(&opts)?;
    let started = Instant::now();
    let mut raw = insert_range(&store, 0, n)?;
    let size = store.size_on_disk()?;
    let (rss, peak) = rss_kib();
    println!(
        "import: {:.1} s, {:.0} records/s; raw {:.1} MiB, on disk {:.1} MiB = {:.2}x raw; RSS {} MiB (peak {} MiB)",
        started.elapsed().as_secs_f64(),
        n as f64 / started.elapsed().as_secs_f64(),
        mib(raw),
        mib(size),
        size as f64 / raw as f64,
        rss / 1024,
        peak / 1024
    );
    if std::env::var_os("STORE_BENCH_IMPORT_ONLY").is_some() {
        return Ok(());
    }
    let backup = temp.path().join("store.backup");
    let started = Instant::now();
    store.backup_to(&backup)?;
    let restored = StoreOptions::new(temp.path().join("restored"), opts.idat_key.clone());
    Store::restore_from(&backup, &restored)?;
    let size_restored = Store::open(&restored)?.size_on_disk()?;
    println!(
        "backup + restore: {:.1} s; backup file {:.1} MiB, restored store {:.1} MiB = {:.2}x raw",
        started.elapsed().as_secs_f64(),
        mib(std::fs::metadata(&backup)?.len()),
        mib(size_restored),
        size_restored as f64 / raw as f64
    );
    std::fs::remove_file(&backup)?;
    std::fs::remove_dir_all(&restored.path)?;
    drop(store);

    let started = Instant::now();
    let store = Store::open(&opts)?;
    let open_time = started.elapsed();
    let started = Instant::now();
    let counts = store.record_counts()?;
    let counts_time = started.elapsed();
    let started = Instant::now();
    let lookups = 1_000.min(n);
    for i in 0..lookups {
        let found = store.records_by_bloom_filter(&filter(i * (n / lookups.max(1))))?;
        assert_eq!(found.len(), 1, "lookup {i}");
    }
    let lookup_time = started.elapsed();
    let (rss, _) = rss_kib();
    println!(
        "reopen: {:.2} s, RSS {} MiB; record_counts {:?} ({} total); filter lookup {:.1} µs each",
        open_time.as_secs_f64(),
        rss / 1024,
        counts_time,
        counts.total,
        lookup_time.as_secs_f64() * 1e6 / lookups.max(1) as f64
    );

    let per_cycle = (n / 20).max(1);
    let mut next = n;
    for cycle in 1..=cycles {
        let started = Instant::now();
        raw += insert_range(&store, next, next + per_cycle)?;
        let mut recs: Vec<LocalRecord> = Vec::with_capacity(BATCH);
        for i in next..next + per_cycle {
            let Some(mut r) = store.get_record(&format!("case-{i:010}"))? else {
                continue;
            };
            r.head.state = RecordState::Pseudonymised;
            r.head.pseudonym = Some(format!("psn-{i}"));
            r.head.updated_at = Utc::now() - Duration::days(400);
            recs.push(r);
            if recs.len() == BATCH {
                store.update_records(&recs)?;
                recs.clear();
            }
        }
        store.update_records(&recs)?;
        let purged = store.purge_idat(Utc::now() - Duration::days(365), |_| false)?;
        next += per_cycle;

        let tasks: Vec<TaskRecord> = (0..1_000)
            .map(|i| task(cycle * 10_000 + i, TaskState::Received))
            .collect();
        store.put_tasks(&tasks)?;
        let done: Vec<TaskRecord> = (0..1_000)
            .map(|i| {
                task(
                    cycle * 10_000 + i,
                    TaskState::Done {
                        at: Utc::now() - Duration::days(30),
                    },
                )
            })
            .collect();
        store.put_tasks(&done)?;
        let purged_tasks = store.purge_finished_tasks(Utc::now() - Duration::days(7))?;
        store.flush()?;
        let size = store.size_on_disk()?;
        let (rss, peak) = rss_kib();
        println!(
            "cycle {cycle}: +{per_cycle} records, {purged} IDAT purged, {purged_tasks} tasks purged in {:.1} s; on disk {:.1} MiB = {:.2}x raw of all records ever inserted; RSS {} MiB (peak {} MiB)",
            started.elapsed().as_secs_f64(),
            mib(size),
            size as f64 / raw as f64,
            rss / 1024,
            peak / 1024
        );
    }
    drop(store);
    let started = Instant::now();
    let compacted = Store::compact(&opts)?;
    println!(
        "compact: {:.1} s; {:.1} MiB -> {:.1} MiB = {:.2}x raw",
        started.elapsed().as_secs_f64(),
        mib(compacted.bytes_before),
        mib(compacted.bytes_after),
        compacted.bytes_after as f64 / raw as f64
    );
    // What a compacted file keeps: redb grows a file under 4 GiB by doubling it, so the first
    // write that needs a page beyond the compacted end grows the file again (BENCHMARKS.md §6).
    let store = Store::open(&opts)?;
    store.put_tasks(&[task(u64::MAX / 2, TaskState::Received)])?;
    store.flush()?;
    let size = store.size_on_disk()?;
    println!(
        "after compact and one durable write: {:.1} MiB = {:.2}x raw",
        mib(size),
        size as f64 / raw as f64
    );
    Ok(())
}
