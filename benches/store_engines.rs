//! sled and redb side by side, on exactly the agent's bytes (BENCHMARKS.md §6).
//!
//! The design card chose sled 0.34 and asked for redb "with those measurements" if sled cannot
//! meet the store targets. This bench produces the measurements; it does not port the store.
//!
//! `cargo bench --bench store_engines` runs, in order:
//!
//! 1. **The agent's store.** `ENGINES_BENCH_RECORDS` records (default 1,000,000) and
//!    `ENGINES_BENCH_TASKS` finished tasks (default 100,000), as `benches/scale.rs` builds them
//!    (`support::agent_data`), written through the real [`Store`] API, which seals the IDAT
//!    and keeps the indexes, counters and pseudonym log. The store is closed and every tree's
//!    (key, value) pairs are read back raw with sled. **Raw data** = the sum of key length +
//!    value length over every pair of every tree (records with their sealed IDAT, both
//!    indexes, pseudonym log, tasks as stored, meta, counters). The issue's own yardstick (local
//!    id + filter + IDAT values + pseudonym of each record, `ratio_to_raw_records` in
//!    `scale.rs`) is printed too.
//! 2. **Load.** The same pairs go into a fresh database of each engine (one sled tree / one
//!    redb table per tree of the store), the way the agent writes them: transactions of 1,000
//!    records, each with the record's two index entries, its pseudonym log entry and the
//!    counter keys, then tasks 1,000 per transaction, each transaction made durable before the
//!    next (sled: one transaction, then `flush()`; redb: `commit()` with
//!    `Durability::Immediate`). Both engines get a 16 MiB cache, sled with the store's own
//!    configuration (`Mode::LowSpace`, no background flusher). Printed: load time (wall and
//!    CPU), size on disk and its ratio to raw, and for redb the size after `compact()`.
//! 3. **Open, scan, status, idle** in a fresh child process (this binary, re-executed): open
//!    time, RSS after open and after a full scan of the tasks table, a status-shaped query
//!    (read the counters key, scan all tasks decoding nothing, read the whole history table)
//!    three times, the process's threads (from `/proc/self/task`) and its context switches
//!    over an idle window (`ENGINES_BENCH_IDLE_SECS`, default 5): wake-ups.
//! 4. **Churn.** `ENGINES_BENCH_CYCLES` (default 3) cycles, each deleting 5 % of the records
//!    (with their index entries) and inserting as many new ones (new local ids, the deleted
//!    records' value bytes, fresh index keys), 1,000 deleted + 1,000 inserted records per
//!    durable transaction; size after each cycle; the cost of one small durable commit (one
//!    task rewritten; redb also with quick-repair); then the child measurements again, and
//!    once more after a child that commits and SIGKILLs itself (the open after a crash: sled
//!    replays its log, redb repairs the file unless the last commit had quick-repair).
//! 5. **SIGKILL** (redb): a child commits transactions of records (inserts, updates, deletes,
//!    two counters) and appends each transaction's number to a side file once `commit()` has
//!    returned; the parent kills it with SIGKILL at a random moment, `ENGINES_BENCH_KILLS`
//!    times (default 20), reopens the database (redb repairs it: timed) and checks that every
//!    acknowledged commit is present, that no partial transaction is visible (every record
//!    present exactly when its transaction is, with its latest value, and with both index
//!    entries; the counters equal a recount) and that the database opens.
//!
//! `ENGINES_BENCH_DIR` puts the databases there instead of a temporary directory (they are
//! large: about 3 GiB at the default size). Figures are printed (`RESULT` lines), never
//! asserted; the bench fails only when work was not done (a table that lacks pairs) or when the
//! SIGKILL check finds a lost or partial transaction.

mod support;

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _};
use support::{BenchResult, env_or, machine_line, mib};
use ttp_agent::store::{IdatKey, Store, StoreOptions};

/// The cache both engines get: the store's default (`[store] cache_capacity`).
const CACHE_BYTES: usize = ttp_agent::store::DEFAULT_CACHE_CAPACITY as usize;
/// Records (or tasks) per durable transaction.
const TXN_RECORDS: usize = 1_000;
/// The argument that turns this binary into a measuring child.
const CHILD_ARG: &str = "--engines-child";

fn main() -> BenchResult {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(CHILD_ARG) {
        return child::main(&args[2..]);
    }
    let records: u64 = env_or("ENGINES_BENCH_RECORDS", 1_000_000)?;
    let tasks: u64 = env_or("ENGINES_BENCH_TASKS", 100_000)?;
    let cycles: u32 = env_or("ENGINES_BENCH_CYCLES", 3)?;
    let kills: u32 = env_or("ENGINES_BENCH_KILLS", 20)?;
    let idle_secs: u64 = env_or("ENGINES_BENCH_IDLE_SECS", 5)?;
    println!(
        "store_engines: {records} records, {tasks} finished tasks, {cycles} churn cycles, {kills} SIGKILLs"
    );
    println!("{}", machine_line());
    let bench_started = Instant::now();
    let temp = tempfile::tempdir()?;
    let dir =
        std::env::var_os("ENGINES_BENCH_DIR").map_or_else(|| temp.path().into(), PathBuf::from);
    std::fs::create_dir_all(&dir)?;

    // 1. The agent's store, through the Store API.
    let agent_dir = dir.join("agent-sled");
    remove_if_exists(&agent_dir)?;
    let started = Instant::now();
    let cpu = support::self_cpu();
    let store = Store::open(&StoreOptions::new(&agent_dir, IdatKey::generate()))?;
    let issue_raw = support::agent_data::fill_store(&store, records, tasks, TXN_RECORDS as u64)?;
    let (build_wall, build_cpu) = (started.elapsed(), support::self_cpu() - cpu);
    drop(store);
    sled_settle();
    let agent_size = disk_size(&agent_dir)?;
    let started = Instant::now();
    let raw = Raw::read_sled(&agent_dir)?;
    let read_wall = started.elapsed();
    println!(
        "RESULT build engine=sled-agent-store records={records} tasks={tasks} s={:.1} cpu_s={:.1} read_back_s={:.1} \
         on_disk_mib={:.1} raw_kv_mib={:.1} ratio_to_raw_kv={:.2} issue_raw_records_mib={:.1} ratio_to_issue_raw={:.2} load={}",
        build_wall.as_secs_f64(),
        build_cpu.as_secs_f64(),
        read_wall.as_secs_f64(),
        mib_b(agent_size.apparent),
        mib_b(raw.total_bytes()),
        ratio(agent_size.apparent, raw.total_bytes()),
        mib_b(issue_raw),
        ratio(agent_size.apparent, issue_raw),
        support::loadavg()
    );
    raw.print();
    let yardsticks = Yardsticks {
        kv: raw.total_bytes(),
        issue: issue_raw,
    };
    measure_child("sled-agent-store", Kind::Sled, &agent_dir, idle_secs)?;

    // 2.–4. Both engines on the same pairs, the same transactions.
    let layout = Layout::of(&raw)?;
    let load = load_plan(&raw, &layout)?;
    let churn = churn_plan(&raw, &layout, cycles)?;
    let sled_dir = dir.join("sled");
    let redb_file = dir.join("store.redb");
    remove_if_exists(&sled_dir)?;
    remove_if_exists(&redb_file)?;
    run_engine::<SledDb>(&sled_dir, &raw, &load, &churn, yardsticks, idle_secs)?;
    run_engine::<RedbDb>(&redb_file, &raw, &load, &churn, yardsticks, idle_secs)?;
    remove_if_exists(&sled_dir)?;
    remove_if_exists(&redb_file)?;
    remove_if_exists(&agent_dir)?;

    // 5. SIGKILL safety of redb with this workload.
    let value_len = raw.trees[layout.records]
        .pairs
        .first()
        .map_or(400, |(_, v)| v.len());
    sigkill::run(&dir.join("crash.redb"), kills, value_len)?;
    println!(
        "store_engines: done in {:.0} s, load {}",
        bench_started.elapsed().as_secs_f64(),
        support::loadavg()
    );
    Ok(())
}

/// What "raw" is measured against: all key + value bytes, and the issue's record yardstick.
#[derive(Clone, Copy)]
struct Yardsticks {
    kv: u64,
    issue: u64,
}

impl Yardsticks {
    /// Ratios of the file length (what sled's `size_on_disk` and `ls` report) and of the
    /// blocks allocated (`du`): redb grows its file ahead of use, leaving holes.
    fn line(&self, size: DiskSize) -> String {
        format!(
            "on_disk_mib={:.1} ratio_to_raw_kv={:.2} ratio_to_issue_raw={:.2} \
             allocated_mib={:.1} allocated_ratio_to_raw_kv={:.2} allocated_ratio_to_issue_raw={:.2}",
            mib_b(size.apparent),
            ratio(size.apparent, self.kv),
            ratio(size.apparent, self.issue),
            mib_b(size.allocated),
            ratio(size.allocated, self.kv),
            ratio(size.allocated, self.issue)
        )
    }
}

/// Load, measure, churn, measure again: one engine.
fn run_engine<E: Engine>(
    path: &Path,
    raw: &Raw,
    load: &[Txn<'_>],
    churn: &[Vec<Txn<'_>>],
    yard: Yardsticks,
    idle_secs: u64,
) -> BenchResult {
    let started = Instant::now();
    let cpu = support::self_cpu();
    let mut db = E::create(path, &raw.names())?;
    for txn in load {
        db.commit(txn)?;
    }
    let lens = db.lens()?;
    db.close()?;
    let (wall, cpu) = (started.elapsed(), support::self_cpu() - cpu);
    for (tree, len) in raw.trees.iter().zip(&lens) {
        if tree.pairs.len() as u64 != *len {
            return Err(format!(
                "{}: table {} holds {len} pairs after the load, the store has {}",
                E::NAME,
                tree.name,
                tree.pairs.len()
            )
            .into());
        }
    }
    let size = disk_size(path)?;
    println!(
        "RESULT load engine={} transactions={} s={:.1} cpu_s={:.1} {} load={}",
        E::NAME,
        load.len(),
        wall.as_secs_f64(),
        cpu.as_secs_f64(),
        yard.line(size),
        support::loadavg()
    );
    measure_child(&format!("{}-loaded", E::NAME), E::KIND, path, idle_secs)?;
    E::compact(path, yard)?;

    let mut db = E::open(path, &raw.names())?;
    for (n, cycle) in churn.iter().enumerate() {
        let started = Instant::now();
        for txn in cycle {
            db.commit(txn)?;
        }
        let took = started.elapsed();
        let size = disk_size(path)?;
        println!(
            "RESULT churn engine={} cycle={} transactions={} s={:.1} {} load={}",
            E::NAME,
            n + 1,
            cycle.len(),
            took.as_secs_f64(),
            yard.line(size),
            support::loadavg()
        );
    }
    small_commits(&mut db, raw, false)?;
    if matches!(E::KIND, Kind::Redb) {
        small_commits(&mut db, raw, true)?;
        db.set_quick_repair(false);
    }
    db.close()?;
    if !churn.is_empty() {
        measure_child(&format!("{}-churned", E::NAME), E::KIND, path, idle_secs)?;
    }
    // Start-up after a crash: a writer that dies without closing the database (sled replays
    // its log; redb walks the whole file to rebuild its allocator state, unless the commit
    // had quick-repair on).
    crash_child(E::KIND, path, false)?;
    measure_child(
        &format!("{}-after-crash", E::NAME),
        E::KIND,
        path,
        idle_secs,
    )?;
    if matches!(E::KIND, Kind::Redb) {
        crash_child(E::KIND, path, true)?;
        measure_child(
            &format!("{}-after-crash-quick-repair", E::NAME),
            E::KIND,
            path,
            idle_secs,
        )?;
    }
    if !churn.is_empty() {
        E::compact(path, yard)?;
    }
    Ok(())
}

/// The agent's commonest durable write: one task rewritten (a state change), one transaction,
/// made durable. 200 of them, each a different stored task, on the full database.
fn small_commits<E: Engine>(db: &mut E, raw: &Raw, quick_repair: bool) -> BenchResult {
    const COMMITS: usize = 200;
    let tasks = raw.find("tasks")?;
    let pairs = &raw.trees[tasks].pairs;
    if pairs.is_empty() {
        return Ok(());
    }
    db.set_quick_repair(quick_repair);
    let started = Instant::now();
    let cpu = support::self_cpu();
    for i in 0..COMMITS {
        let (k, v) = &pairs[i * pairs.len() / COMMITS];
        db.commit(&[Op::Put(tasks, Cow::Borrowed(k), v)])?;
    }
    let (wall, cpu) = (started.elapsed(), support::self_cpu() - cpu);
    println!(
        "RESULT small-commit engine={} quick_repair={quick_repair} commits={COMMITS} wall_ms_each={:.2} cpu_ms_each={:.2} load={}",
        E::NAME,
        wall.as_secs_f64() * 1e3 / COMMITS as f64,
        cpu.as_secs_f64() * 1e3 / COMMITS as f64,
        support::loadavg()
    );
    Ok(())
}

/// Runs a child that opens the database, commits one durable transaction and kills itself.
fn crash_child(kind: Kind, path: &Path, quick_repair: bool) -> BenchResult {
    let child = Command::new(std::env::current_exe()?)
        .arg(CHILD_ARG)
        .arg("die")
        .arg(kind.as_str())
        .arg(path)
        .arg(if quick_repair { "quick" } else { "full" })
        .stdin(Stdio::null())
        .spawn()?;
    let usage = support::wait_child(child)?;
    if usage.exit_code != -libc::SIGKILL {
        return Err(format!(
            "the dying writer ended with {} instead of SIGKILL",
            usage.exit_code
        )
        .into());
    }
    Ok(())
}

/// Runs the measuring child on a closed database and prints its figures with its CPU time.
fn measure_child(label: &str, kind: Kind, path: &Path, idle_secs: u64) -> BenchResult {
    let exe = std::env::current_exe()?;
    let started = Instant::now();
    let child = Command::new(exe)
        .arg(CHILD_ARG)
        .arg("open")
        .arg(kind.as_str())
        .arg(label)
        .arg(path)
        .arg(idle_secs.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()?;
    let usage = support::wait_child(child)?;
    if usage.exit_code != 0 {
        return Err(format!(
            "the measuring child for {label} exited with {}",
            usage.exit_code
        )
        .into());
    }
    // wait4's peak RSS is not printed: it counts the parent's pages the child had before its
    // exec. The child prints its own (VmHWM).
    println!(
        "RESULT child label={label} wall_s={:.2} cpu_s={:.2} (includes the idle window) load={}",
        started.elapsed().as_secs_f64(),
        usage.cpu().as_secs_f64(),
        support::loadavg()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The raw data and the transactions built from it.

type Pair = (Box<[u8]>, Box<[u8]>);

struct RawTree {
    name: String,
    pairs: Vec<Pair>,
}

/// Every (key, value) pair of every tree of a sled database, in key order.
struct Raw {
    trees: Vec<RawTree>,
}

impl Raw {
    fn read_sled(path: &Path) -> BenchResult<Raw> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES as u64)
            .open()?;
        let mut trees = Vec::new();
        for name in db.tree_names() {
            let tree = db.open_tree(&name)?;
            let pairs = tree
                .iter()
                .map(|kv| kv.map(|(k, v)| (Box::from(&k[..]), Box::from(&v[..]))))
                .collect::<Result<Vec<Pair>, _>>()?;
            trees.push(RawTree {
                name: String::from_utf8_lossy(&name).into_owned(),
                pairs,
            });
        }
        drop(db);
        sled_settle();
        Ok(Raw { trees })
    }

    fn names(&self) -> Vec<String> {
        self.trees.iter().map(|t| t.name.clone()).collect()
    }

    fn total_bytes(&self) -> u64 {
        self.trees.iter().map(tree_bytes).sum()
    }

    fn print(&self) {
        for t in &self.trees {
            println!(
                "raw tree {:<16} {:>9} pairs {:>9.1} MiB (keys {:.1} MiB)",
                t.name,
                t.pairs.len(),
                mib_b(tree_bytes(t)),
                mib_b(t.pairs.iter().map(|(k, _)| k.len() as u64).sum())
            );
        }
    }

    fn find(&self, name: &str) -> BenchResult<usize> {
        self.trees
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| {
                format!("the agent's store has no tree {name:?} (layout changed?)").into()
            })
    }
}

fn tree_bytes(t: &RawTree) -> u64 {
    t.pairs
        .iter()
        .map(|(k, v)| (k.len() + v.len()) as u64)
        .sum()
}

/// Which table is which (indexes into `Raw::trees`).
struct Layout {
    records: usize,
    bf_index: usize,
    psn_index: usize,
    psn_log: usize,
    counts: usize,
    meta: usize,
    tasks: usize,
}

impl Layout {
    fn of(raw: &Raw) -> BenchResult<Layout> {
        Ok(Layout {
            records: raw.find("records")?,
            bf_index: raw.find("idx_bf")?,
            psn_index: raw.find("idx_psn")?,
            psn_log: raw.find("psn_log")?,
            counts: raw.find("counts")?,
            meta: raw.find("meta")?,
            tasks: raw.find("tasks")?,
        })
    }
}

/// One write of a transaction: table (index into `Raw::trees`), key, value.
enum Op<'a> {
    Put(usize, Cow<'a, [u8]>, &'a [u8]),
    Del(usize, Cow<'a, [u8]>),
}

type Txn<'a> = Vec<Op<'a>>;

/// Index keys are `sha256(..)[..16] ‖ local_id`: the local id they belong to.
const INDEX_PREFIX: usize = 16;

fn by_local_id(tree: &RawTree) -> HashMap<&[u8], Vec<usize>> {
    let mut map: HashMap<&[u8], Vec<usize>> = HashMap::with_capacity(tree.pairs.len());
    for (i, (k, _)) in tree.pairs.iter().enumerate() {
        if k.len() > INDEX_PREFIX {
            map.entry(&k[INDEX_PREFIX..]).or_default().push(i);
        }
    }
    map
}

/// The bulk load, as the agent writes: 1,000 records per transaction with their index entries,
/// pseudonym log entries and the counter keys, then tasks 1,000 per transaction, then the
/// small trees. Every pair of the store is written.
fn load_plan<'a>(raw: &'a Raw, l: &Layout) -> BenchResult<Vec<Txn<'a>>> {
    let t = &raw.trees;
    let bf = by_local_id(&t[l.bf_index]);
    let psn = by_local_id(&t[l.psn_index]);
    let records = &t[l.records].pairs;
    let psn_log = &t[l.psn_log].pairs;
    // Records were inserted in local id order, so the n-th log entry is the n-th record's.
    let log_matches = psn_log.len() == records.len()
        && records
            .iter()
            .zip(psn_log)
            .all(|((id, _), (_, entry))| entry.windows(id.len()).any(|w| w == &id[..]));
    if !log_matches {
        return Err("the pseudonym log does not pair up with the records in order".into());
    }
    let small = |txn: &mut Txn<'a>, tree: usize| {
        for (k, v) in &t[tree].pairs {
            txn.push(Op::Put(tree, Cow::Borrowed(k), v));
        }
    };
    let mut plan = Vec::new();
    for (n, chunk) in records.chunks(TXN_RECORDS).enumerate() {
        let mut txn = Txn::new();
        for (j, (id, value)) in chunk.iter().enumerate() {
            txn.push(Op::Put(l.records, Cow::Borrowed(id), value));
            for (tree, index) in [(l.bf_index, &bf), (l.psn_index, &psn)] {
                for &i in index.get(&id[..]).map_or(&[][..], Vec::as_slice) {
                    let (k, v) = &t[tree].pairs[i];
                    txn.push(Op::Put(tree, Cow::Borrowed(k), v));
                }
            }
            let (k, v) = &psn_log[n * TXN_RECORDS + j];
            txn.push(Op::Put(l.psn_log, Cow::Borrowed(k), v));
        }
        small(&mut txn, l.counts);
        small(&mut txn, l.meta);
        plan.push(txn);
    }
    for chunk in t[l.tasks].pairs.chunks(TXN_RECORDS) {
        plan.push(
            chunk
                .iter()
                .map(|(k, v)| Op::Put(l.tasks, Cow::Borrowed(k), v))
                .collect(),
        );
    }
    let mut rest = Txn::new();
    let covered = [l.records, l.bf_index, l.psn_index, l.psn_log, l.tasks];
    for i in 0..t.len() {
        if !covered.contains(&i) {
            small(&mut rest, i);
        }
    }
    plan.push(rest);
    Ok(plan)
}

/// An index entry of a record: table, key, value (empty in the store's indexes).
type IndexEntry<'a> = (usize, Cow<'a, [u8]>, &'a [u8]);

/// A record as churn sees it: its key, value and index keys.
struct Live<'a> {
    id: Cow<'a, [u8]>,
    value: &'a [u8],
    index: Vec<IndexEntry<'a>>,
}

/// `cycles` cycles, each deleting 5 % of the records (every 20th of the live ones, a different
/// offset each cycle) with their index entries and inserting as many new ones (next local ids,
/// the deleted values, random index prefixes), 1,000 + 1,000 per transaction with the counters.
fn churn_plan<'a>(raw: &'a Raw, l: &Layout, cycles: u32) -> BenchResult<Vec<Vec<Txn<'a>>>> {
    let t = &raw.trees;
    let bf = by_local_id(&t[l.bf_index]);
    let psn = by_local_id(&t[l.psn_index]);
    let mut live: Vec<Live<'a>> = t[l.records]
        .pairs
        .iter()
        .map(|(id, value)| {
            let mut index = Vec::new();
            for (tree, map) in [(l.bf_index, &bf), (l.psn_index, &psn)] {
                for &i in map.get(&id[..]).map_or(&[][..], Vec::as_slice) {
                    let (k, v) = &t[tree].pairs[i];
                    index.push((tree, Cow::Borrowed(&k[..]), &v[..]));
                }
            }
            Live {
                id: Cow::Borrowed(&id[..]),
                value,
                index,
            }
        })
        .collect();
    let mut rng = support::Rng::new(0x0c0ffee);
    // New local ids continue after the highest one the bulk load can have.
    let mut next_id: u64 = 9_000_000_000;
    let mut plan = Vec::new();
    for cycle in 0..cycles as usize {
        let victims: Vec<usize> = (cycle % 20..live.len()).step_by(20).collect();
        let mut txns = Vec::new();
        for chunk in victims.chunks(TXN_RECORDS) {
            let mut txn = Txn::new();
            for &pos in chunk {
                let old = &live[pos];
                txn.push(Op::Del(l.records, old.id.clone()));
                for (tree, key, _) in &old.index {
                    txn.push(Op::Del(*tree, key.clone()));
                }
                let id = format!("case-{next_id:010}").into_bytes();
                next_id += 1;
                let index = old
                    .index
                    .iter()
                    .map(|(tree, _, v)| {
                        let mut key = Vec::with_capacity(INDEX_PREFIX + id.len());
                        key.extend_from_slice(&rng.next_u64().to_le_bytes());
                        key.extend_from_slice(&rng.next_u64().to_le_bytes());
                        key.extend_from_slice(&id);
                        (*tree, Cow::Owned(key), *v)
                    })
                    .collect::<Vec<_>>();
                let new = Live {
                    id: Cow::Owned(id),
                    value: old.value,
                    index,
                };
                txn.push(Op::Put(l.records, new.id.clone(), new.value));
                for (tree, key, v) in &new.index {
                    txn.push(Op::Put(*tree, key.clone(), v));
                }
                live[pos] = new;
            }
            for (k, v) in &t[l.counts].pairs {
                txn.push(Op::Put(l.counts, Cow::Borrowed(k), v));
            }
            txns.push(txn);
        }
        plan.push(txns);
    }
    Ok(plan)
}

// ---------------------------------------------------------------------------------------------
// The two engines behind one small interface.

#[derive(Clone, Copy)]
enum Kind {
    Sled,
    Redb,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Sled => "sled",
            Kind::Redb => "redb",
        }
    }

    fn parse(s: &str) -> BenchResult<Kind> {
        match s {
            "sled" => Ok(Kind::Sled),
            "redb" => Ok(Kind::Redb),
            other => Err(format!("unknown engine {other:?}").into()),
        }
    }
}

trait Engine: Sized {
    const NAME: &'static str;
    const KIND: Kind;
    /// A new, empty database with these tables.
    fn create(path: &Path, tables: &[String]) -> BenchResult<Self>;
    fn open(path: &Path, tables: &[String]) -> BenchResult<Self>;
    /// Applies `txn` as one transaction and makes it durable before returning.
    fn commit(&mut self, txn: &[Op<'_>]) -> BenchResult;
    /// Pairs per table, in the order of `create`'s `tables`.
    fn lens(&self) -> BenchResult<Vec<u64>>;
    fn close(self) -> BenchResult;
    /// Compacts the closed database at `path` if the engine can, printing the figures.
    fn compact(path: &Path, yard: Yardsticks) -> BenchResult;
    /// redb's quick-repair for the following commits; other engines ignore it.
    fn set_quick_repair(&mut self, _on: bool) {}
}

/// sled configured as the store configures it (`src/store/mod.rs`, `open_sled_once`).
fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(CACHE_BYTES as u64)
        .flush_every_ms(None)
}

/// sled finishes its last writes on pool threads after a `Db` is dropped, holding the file
/// lock meanwhile; the next open (here or in a child) must not find it taken.
fn sled_settle() {
    std::thread::sleep(Duration::from_millis(500));
}

struct SledDb {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl Engine for SledDb {
    const NAME: &'static str = "sled";
    const KIND: Kind = Kind::Sled;

    fn create(path: &Path, tables: &[String]) -> BenchResult<Self> {
        Self::open(path, tables)
    }

    fn open(path: &Path, tables: &[String]) -> BenchResult<Self> {
        let db = sled_config(path).open()?;
        let trees = tables
            .iter()
            .map(|t| db.open_tree(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SledDb { db, trees })
    }

    fn commit(&mut self, txn: &[Op<'_>]) -> BenchResult {
        use sled::Transactional as _;
        self.trees
            .as_slice()
            .transaction(|views| {
                for op in txn {
                    match op {
                        Op::Put(t, k, v) => {
                            views[*t].insert(&k[..], *v)?;
                        }
                        Op::Del(t, k) => {
                            views[*t].remove(&k[..])?;
                        }
                    }
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(|e| format!("sled transaction: {e:?}"))?;
        self.db.flush()?;
        Ok(())
    }

    fn lens(&self) -> BenchResult<Vec<u64>> {
        Ok(self.trees.iter().map(|t| t.len() as u64).collect())
    }

    fn close(self) -> BenchResult {
        self.db.flush()?;
        drop(self.trees);
        drop(self.db);
        sled_settle();
        Ok(())
    }

    fn compact(_: &Path, _: Yardsticks) -> BenchResult {
        // sled 0.34 has no in-place compaction; the agent's `Store::compact` is an export and
        // import into a new store (BENCHMARKS.md §6 has its figure).
        Ok(())
    }
}

struct RedbDb {
    db: redb::Database,
    tables: Vec<String>,
    quick_repair: bool,
}

fn redb_builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

fn table(name: &str) -> redb::TableDefinition<'_, &'static [u8], &'static [u8]> {
    redb::TableDefinition::new(name)
}

impl Engine for RedbDb {
    const NAME: &'static str = "redb";
    const KIND: Kind = Kind::Redb;

    fn create(path: &Path, tables: &[String]) -> BenchResult<Self> {
        let db = redb_builder().create(path)?;
        let w = db.begin_write()?;
        for t in tables {
            w.open_table(table(t))?;
        }
        w.commit()?;
        Ok(RedbDb {
            db,
            tables: tables.to_vec(),
            quick_repair: false,
        })
    }

    fn open(path: &Path, tables: &[String]) -> BenchResult<Self> {
        Ok(RedbDb {
            db: redb_builder().open(path)?,
            tables: tables.to_vec(),
            quick_repair: false,
        })
    }

    fn commit(&mut self, txn: &[Op<'_>]) -> BenchResult {
        let mut w = self.db.begin_write()?;
        w.set_durability(redb::Durability::Immediate)?;
        w.set_quick_repair(self.quick_repair);
        {
            // One handle per table the transaction touches, opened on first use.
            let mut open: Vec<Option<_>> = self.tables.iter().map(|_| None).collect();
            for op in txn {
                let t = match op {
                    Op::Put(t, _, _) | Op::Del(t, _) => *t,
                };
                if open[t].is_none() {
                    open[t] = Some(w.open_table(table(&self.tables[t]))?);
                }
                let Some(tab) = open[t].as_mut() else {
                    continue;
                };
                match op {
                    Op::Put(_, k, v) => {
                        tab.insert(&k[..], *v)?;
                    }
                    Op::Del(_, k) => {
                        tab.remove(&k[..])?;
                    }
                }
            }
        }
        w.commit()?;
        Ok(())
    }

    fn lens(&self) -> BenchResult<Vec<u64>> {
        let r = self.db.begin_read()?;
        self.tables
            .iter()
            .map(|t| Ok(r.open_table(table(t))?.len()?))
            .collect()
    }

    fn close(self) -> BenchResult {
        self.db.close()?;
        Ok(())
    }

    fn set_quick_repair(&mut self, on: bool) {
        self.quick_repair = on;
    }

    fn compact(path: &Path, yard: Yardsticks) -> BenchResult {
        let started = Instant::now();
        let mut db = redb_builder().open(path)?;
        let mut rounds = 0;
        // `compact` moves what it can per call; it says when nothing more can move.
        while db.compact()? && rounds < 100 {
            rounds += 1;
        }
        db.close()?;
        let size = disk_size(path)?;
        println!(
            "RESULT compact engine=redb s={:.1} rounds={rounds} {} load={}",
            started.elapsed().as_secs_f64(),
            yard.line(size),
            support::loadavg()
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Files.

#[derive(Clone, Copy, Default)]
struct DiskSize {
    /// Sum of file lengths (what sled's `size_on_disk` and `ls` report).
    apparent: u64,
    /// Blocks allocated (what `du` reports; smaller for sparse files).
    allocated: u64,
}

fn disk_size(path: &Path) -> BenchResult<DiskSize> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        return Ok(DiskSize {
            apparent: meta.len(),
            allocated: meta.blocks() * 512,
        });
    }
    let mut total = DiskSize::default();
    for entry in std::fs::read_dir(path)? {
        let sub = disk_size(&entry?.path())?;
        total.apparent += sub.apparent;
        total.allocated += sub.allocated;
    }
    Ok(total)
}

fn remove_if_exists(path: &Path) -> BenchResult {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path)?,
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn mib_b(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// (threads, comma-separated distinct thread names) of this process.
fn own_threads() -> (usize, String) {
    let mut names: Vec<String> = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .map(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .map(|c| c.trim().to_string())
                        .unwrap_or_default()
                })
                .collect()
        })
        .unwrap_or_default();
    let count = names.len();
    names.sort();
    names.dedup();
    (count, names.join(","))
}

/// Context switches of all threads of this process so far.
fn own_switches() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.flatten()
        .map(|e| {
            let status = e.path().join("status");
            let status = status.to_str().unwrap_or("");
            support::proc_field(status, "voluntary_ctxt_switches:").unwrap_or(0)
                + support::proc_field(status, "nonvoluntary_ctxt_switches:").unwrap_or(0)
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The measuring child: open, scan, status-shaped query, idle.

mod child {
    use super::*;

    /// `open <engine> <label> <path> <idle secs>` or `crash <db> <ack file> <value length>`.
    pub fn main(args: &[String]) -> BenchResult {
        match args {
            [mode, engine, label, path, idle] if mode == "open" => open(
                Kind::parse(engine)?,
                label,
                Path::new(path),
                Duration::from_secs(idle.parse()?),
            ),
            [mode, engine, path, repair] if mode == "die" => {
                die(Kind::parse(engine)?, Path::new(path), repair == "quick")
            }
            [mode, db, ack, value_len] if mode == "crash" => {
                super::sigkill::writer(Path::new(db), Path::new(ack), value_len.parse()?)
            }
            _ => Err(format!("{CHILD_ARG}: unexpected arguments {args:?}").into()),
        }
    }

    /// One durable write, then SIGKILL: the database is left as a crash leaves it.
    fn die(kind: Kind, path: &Path, quick_repair: bool) -> BenchResult {
        let key = &b"crash-marker"[..];
        let value = &b"1"[..];
        // Both handles stay open: the process dies with them.
        let _keep: Box<dyn std::any::Any> = match kind {
            Kind::Sled => {
                let db = sled_config(path).open()?;
                db.open_tree("meta")?.insert(key, value)?;
                db.flush()?;
                Box::new(db)
            }
            Kind::Redb => {
                let db = redb_builder().open(path)?;
                let mut w = db.begin_write()?;
                w.set_durability(redb::Durability::Immediate)?;
                w.set_quick_repair(quick_repair);
                w.open_table(table("meta"))?.insert(key, value)?;
                w.commit()?;
                Box::new(db)
            }
        };
        // SAFETY: kill(2) of this process; nothing runs after it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        Err("still alive after SIGKILL".into())
    }

    /// What one scan of a table touched: entries and bytes (nothing decoded).
    #[derive(Default)]
    struct Scan {
        entries: u64,
        bytes: u64,
    }

    trait Reader {
        fn counters(&self) -> BenchResult<usize>;
        fn scan(&self, table: &str) -> BenchResult<Scan>;
    }

    struct SledReader {
        db: sled::Db,
    }

    impl Reader for SledReader {
        fn counters(&self) -> BenchResult<usize> {
            Ok(self
                .db
                .open_tree("counts")?
                .get(b"records")?
                .map_or(0, |v| v.len()))
        }

        fn scan(&self, table: &str) -> BenchResult<Scan> {
            let mut s = Scan::default();
            for kv in self.db.open_tree(table)?.iter() {
                let (k, v) = kv?;
                s.entries += 1;
                s.bytes += (k.len() + v.len()) as u64;
            }
            Ok(s)
        }
    }

    struct RedbReader {
        db: redb::Database,
    }

    impl Reader for RedbReader {
        fn counters(&self) -> BenchResult<usize> {
            let r = self.db.begin_read()?;
            let t = r.open_table(table("counts"))?;
            Ok(t.get(&b"records"[..])?.map_or(0, |v| v.value().len()))
        }

        fn scan(&self, name: &str) -> BenchResult<Scan> {
            let r = self.db.begin_read()?;
            let t = r.open_table(table(name))?;
            let mut s = Scan::default();
            for kv in t.iter()? {
                let (k, v) = kv?;
                s.entries += 1;
                s.bytes += (k.value().len() + v.value().len()) as u64;
            }
            Ok(s)
        }
    }

    /// The status command's store work, minus decoding: the counters, every task, the history.
    fn status(r: &dyn Reader) -> BenchResult<(usize, Scan, Scan)> {
        Ok((r.counters()?, r.scan("tasks")?, r.scan("history")?))
    }

    fn open(kind: Kind, label: &str, path: &Path, idle: Duration) -> BenchResult {
        let (threads_before, _) = own_threads();
        let (rss_before, _) = support::self_rss_kib();
        let started = Instant::now();
        let reader: Box<dyn Reader> = match kind {
            Kind::Sled => Box::new(SledReader {
                db: sled_config(path).open()?,
            }),
            Kind::Redb => Box::new(RedbReader {
                db: redb_builder().open(path)?,
            }),
        };
        let open_time = started.elapsed();
        let (rss_open, _) = support::self_rss_kib();
        let (threads_open, _) = own_threads();
        let started = Instant::now();
        let tasks = reader.scan("tasks")?;
        let scan_time = started.elapsed();
        let (rss_scan, _) = support::self_rss_kib();
        let mut status_ms = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            let (counters, scanned, history) = status(reader.as_ref())?;
            status_ms.push((started.elapsed().as_secs_f64() * 1e4).round() / 10.0);
            if counters == 0 || scanned.entries != tasks.entries {
                return Err(format!(
                    "{label}: the status query read {counters} counter bytes and {} tasks of {}",
                    scanned.entries, tasks.entries
                )
                .into());
            }
            std::hint::black_box(history.bytes);
        }
        let (rss_status, peak) = support::self_rss_kib();
        let switches = own_switches();
        std::thread::sleep(idle);
        let woke = own_switches().saturating_sub(switches);
        let (threads_idle, names) = own_threads();
        println!(
            "RESULT open label={label} open_s={:.3} rss_before_mib={:.1} rss_after_open_mib={:.1} \
             rss_after_tasks_scan_mib={:.1} rss_after_status_mib={:.1} peak_rss_mib={:.1} \
             tasks_scan_ms={:.1} tasks={} tasks_mib={:.1} status_ms={status_ms:?} \
             threads_before_open={threads_before} threads_after_open={threads_open} \
             threads_idle={threads_idle} idle_wakeups_per_s={:.1} thread_names={names}",
            open_time.as_secs_f64(),
            mib(rss_before),
            mib(rss_open),
            mib(rss_scan),
            mib(rss_status),
            mib(peak),
            scan_time.as_secs_f64() * 1e3,
            tasks.entries,
            mib_b(tasks.bytes),
            // The sleeping main thread itself switches once per sleep.
            woke.saturating_sub(1) as f64 / idle.as_secs_f64().max(1e-9),
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL safety of redb.

mod sigkill {
    use super::*;

    /// Records per transaction of the writer.
    const PER_TXN: u64 = 200;
    const TABLES: [&str; 4] = ["records", "idx_bf", "idx_psn", "counts"];

    fn id(i: u64) -> Vec<u8> {
        format!("case-{i:010}").into_bytes()
    }

    /// Value of record `i` in `version` 0 (inserted) or 1 (updated by the next transaction).
    fn value(i: u64, version: u64, len: usize) -> Vec<u8> {
        let mut rng = support::Rng::new(i.wrapping_mul(31).wrapping_add(version));
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            v.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        v.truncate(len);
        v
    }

    /// `hash16 ‖ local id`, as the store's index keys are shaped.
    fn index_key(i: u64, which: u64) -> Vec<u8> {
        let mut rng = support::Rng::new(i ^ (which << 40));
        let mut k = Vec::with_capacity(INDEX_PREFIX + 15);
        k.extend_from_slice(&rng.next_u64().to_le_bytes());
        k.extend_from_slice(&rng.next_u64().to_le_bytes());
        k.extend_from_slice(&id(i));
        k
    }

    /// What transaction `t` does to record `i` of the previous transaction: every 10th is
    /// updated, every 10th (other) one deleted.
    fn updated(i: u64) -> bool {
        i % 10 == 0
    }
    fn deleted(i: u64) -> bool {
        i % 10 == 5
    }

    /// The state after `txns` committed transactions, for record `i`: None if absent, else
    /// the value version.
    fn expected(i: u64, txns: u64) -> Option<u64> {
        let t = i / PER_TXN;
        if t >= txns {
            return None;
        }
        let touched = t + 1 < txns;
        match (touched, updated(i), deleted(i)) {
            (true, _, true) => None,
            (true, true, _) => Some(1),
            _ => Some(0),
        }
    }

    fn counter(
        t: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
        key: &str,
    ) -> BenchResult<u64> {
        match t.get(key.as_bytes())? {
            None => Ok(0),
            Some(v) => Ok(u64::from_le_bytes(
                v.value()
                    .try_into()
                    .map_err(|_| format!("counter {key} is not 8 bytes"))?,
            )),
        }
    }

    /// The child: commits transactions until killed, acknowledging each in `ack`.
    pub fn writer(db_path: &Path, ack: &Path, value_len: usize) -> BenchResult {
        let db = redb_builder().create(db_path)?;
        let mut acks = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(ack)?;
        // The tables exist before the first kill can land.
        let setup = db.begin_write()?;
        for t in TABLES {
            setup.open_table(table(t))?;
        }
        setup.commit()?;
        let mut txns = counter(&db.begin_read()?.open_table(table("counts"))?, "txns")?;
        writeln!(acks, "ready")?;
        // SAFETY: getppid has no preconditions. An orphaned writer (the bench died) stops.
        while unsafe { libc::getppid() } != 1 {
            let mut w = db.begin_write()?;
            w.set_durability(redb::Durability::Immediate)?;
            {
                let mut tabs = TABLES
                    .iter()
                    .map(|t| w.open_table(table(t)))
                    .collect::<Result<Vec<_>, _>>()?;
                let [records, bf, psn, counts] = tabs.as_mut_slice() else {
                    return Err("four tables".into());
                };
                let mut live = counter(&*counts, "records")?;
                let first = txns * PER_TXN;
                for i in first.saturating_sub(PER_TXN)..first {
                    if updated(i) {
                        records.insert(&id(i)[..], &value(i, 1, value_len)[..])?;
                    } else if deleted(i) {
                        records.remove(&id(i)[..])?;
                        bf.remove(&index_key(i, 1)[..])?;
                        psn.remove(&index_key(i, 2)[..])?;
                        live -= 1;
                    }
                }
                for i in first..first + PER_TXN {
                    records.insert(&id(i)[..], &value(i, 0, value_len)[..])?;
                    bf.insert(&index_key(i, 1)[..], &[][..])?;
                    psn.insert(&index_key(i, 2)[..], &[][..])?;
                    live += 1;
                }
                counts.insert(&b"records"[..], &live.to_le_bytes()[..])?;
                counts.insert(&b"txns"[..], &(txns + 1).to_le_bytes()[..])?;
            }
            w.commit()?;
            // Only now is the transaction acknowledged, as the agent would act on it.
            writeln!(acks, "{txns}")?;
            txns += 1;
        }
        Ok(())
    }

    /// What one reopen found.
    struct Check {
        reopen: Duration,
        txns: u64,
        live: u64,
    }

    /// Reopens after a kill and checks everything; an error names the first violation.
    fn check(db_path: &Path, required: u64, value_len: usize) -> BenchResult<Check> {
        let started = Instant::now();
        let db = redb_builder().open(db_path)?;
        let reopen = started.elapsed();
        let r = db.begin_read()?;
        let records = r.open_table(table("records"))?;
        let bf = r.open_table(table("idx_bf"))?;
        let psn = r.open_table(table("idx_psn"))?;
        let counts = r.open_table(table("counts"))?;
        let txns = counter(&counts, "txns")?;
        let live = counter(&counts, "records")?;
        if txns < required {
            return Err(format!(
                "{required} transactions were acknowledged, only {txns} are present"
            )
            .into());
        }
        let mut expect_live = 0;
        for i in 0..(txns + 1) * PER_TXN {
            let want = expected(i, txns);
            let got = records.get(&id(i)[..])?.map(|v| v.value().to_vec());
            let has_bf = bf.get(&index_key(i, 1)[..])?.is_some();
            let has_psn = psn.get(&index_key(i, 2)[..])?.is_some();
            match (want, got) {
                (None, None) if !has_bf && !has_psn => {}
                (Some(version), Some(v)) if has_bf && has_psn => {
                    if v != value(i, version, value_len) {
                        return Err(
                            format!("record {i}: not version {version} of its value").into()
                        );
                    }
                    expect_live += 1;
                }
                (want, got) => {
                    return Err(format!(
                        "after {txns} transactions record {i} should be {want:?} but is present: {}, index entries: {has_bf}/{has_psn}",
                        got.is_some()
                    )
                    .into());
                }
            }
        }
        let lens = [records.len()?, bf.len()?, psn.len()?];
        if live != expect_live || lens.iter().any(|&n| n != expect_live) {
            return Err(format!(
                "counter says {live} records, a recount {expect_live}, the tables hold {lens:?}"
            )
            .into());
        }
        drop((records, bf, psn, counts, r));
        db.close()?;
        Ok(Check { reopen, txns, live })
    }

    pub fn run(db_path: &Path, kills: u32, value_len: usize) -> BenchResult {
        if kills == 0 {
            return Ok(());
        }
        remove_if_exists(db_path)?;
        let ack = db_path.with_extension("acks");
        remove_if_exists(&ack)?;
        let exe = std::env::current_exe()?;
        let mut rng = support::Rng::new(0x5eed);
        let mut acked_total = 0u64;
        let mut unacked_present = 0u64;
        let mut reopen_ms = Vec::new();
        // Transactions on disk after the previous round: durable, so they must stay.
        let mut on_disk = 0u64;
        for round in 0..kills {
            let _ = std::fs::remove_file(&ack);
            let mut child = Command::new(&exe)
                .arg(CHILD_ARG)
                .arg("crash")
                .arg(db_path)
                .arg(&ack)
                .arg(value_len.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()?;
            // Kill once the writer is in its loop, at a random moment of it.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !std::fs::read_to_string(&ack)
                .unwrap_or_default()
                .starts_with("ready")
            {
                if Instant::now() > deadline || child.try_wait()?.is_some() {
                    return Err(format!("round {round}: the writer did not start").into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(rng.range(5, 400)));
            child.kill()?; // SIGKILL
            child.wait()?;
            let acks = std::fs::read_to_string(&ack)?;
            let acked: Vec<u64> = acks
                .lines()
                .skip(1)
                .filter_map(|l| l.parse().ok())
                .collect();
            acked_total += acked.len() as u64;
            let required = acked.last().map_or(on_disk, |a| (a + 1).max(on_disk));
            let c = check(db_path, required, value_len)
                .map_err(|e| format!("SIGKILL round {round}: {e}"))?;
            unacked_present += c.txns - required;
            reopen_ms.push((c.reopen.as_secs_f64() * 1e4).round() / 10.0);
            on_disk = c.txns;
            println!(
                "sigkill round {round}: {} commits acknowledged, {} transactions on disk, {} records, reopen {:.1} ms",
                acked.len(),
                c.txns,
                c.live,
                c.reopen.as_secs_f64() * 1e3
            );
        }
        let size = disk_size(db_path)?;
        reopen_ms.sort_by(f64::total_cmp);
        println!(
            "RESULT sigkill engine=redb kills={kills} all_checks_passed=true acknowledged_commits={acked_total} \
             committed_not_yet_acknowledged={unacked_present} transactions={} records_per_txn={PER_TXN} \
             reopen_ms_median={:.1} reopen_ms_max={:.1} db_mib={:.1} load={}",
            on_disk,
            reopen_ms.get(reopen_ms.len() / 2).copied().unwrap_or(0.0),
            reopen_ms.last().copied().unwrap_or(0.0),
            mib_b(size.apparent),
            support::loadavg()
        );
        remove_if_exists(db_path)?;
        remove_if_exists(&ack)?;
        Ok(())
    }
}
