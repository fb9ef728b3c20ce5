//! Tasks, the index of open ones, and the per-day history of finished ones.
//!
//! A task is stored as JSON under its [`TaskKey`]: tasks are few (the open ones plus recently
//! finished ones), and `Task` carries `serde_json::Value` parts that only a self-describing
//! format can read back. The JSON is sealed (XChaCha20-Poly1305 under the task key derived
//! from the IDAT key, AAD the task key; see `crypto`): tasks carry Bloom filters, which must not
//! be readable from the store or a backup (schema 4; before it, JSON in clear).
//!
//! Finished tasks stay stored for `[store] task_retention` (30 days), so they far outnumber the
//! open ones; everything that runs often (the agent's cycle, `status`, the alerts, the admin
//! surface's event counters, start-up) needs only the open ones. `idx_open_tasks` lists them,
//! kept exact in the same transaction as every task write, so those reads cost what the open
//! tasks cost, not what the store holds. `idx_finished_tasks` lists the finished ones by the
//! time they finished (schema 5), kept the same way, so the hourly purge reads only the tasks
//! past retention.
//!
//! History counts every finished task occurrence exactly once, for as long as the day is asked
//! for, although finished tasks are purged to keep the store small. An occurrence is counted in
//! the `history` counters *in the transaction that finishes it* (the write that turns its state
//! into `Done` or `Expired`), so reading a day's history is a short key range, and neither a
//! purge nor a later occurrence of the same key (a content-identified task listed again, see
//! `TaskRecord::last_seen_poll`) touches the counters again. (Stores written before schema 3
//! counted retained finished tasks by a scan; the step 2 → 3 moves them into the counters.)

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use ttp_proto::TaskKey;

use super::codec::{
    history_key, history_value, nanos_clamped, parse_history_key, read_history_value, time_key,
    time_key_suffix, time_prefix,
};
use zeroize::Zeroizing;

use super::crypto::StoreKeys;
use super::{
    AuditEntry, DISCLOSURE_PENDING, DISCLOSURES, FINISHED_TASKS, HISTORY, IndexCheck, META,
    OPEN_TASKS, RTree, Store, StoreError, TASKS, WTree, error, fill_index, rtree, wtree,
};
use crate::domain::{TaskRecord, TaskState};

/// Finished tasks of one type on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FinishedCounts {
    pub done: u64,
    pub expired: u64,
}

/// Finished tasks of one UTC day, by task type (the wire name, e.g. `send_idat`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DayHistory {
    pub day: NaiveDate,
    pub by_type: BTreeMap<String, FinishedCounts>,
}

impl DayHistory {
    /// All types together.
    pub fn total(&self) -> FinishedCounts {
        self.by_type
            .values()
            .fold(FinishedCounts::default(), |acc, c| FinishedCounts {
                done: acc.done + c.done,
                expired: acc.expired + c.expired,
            })
    }
}

/// A stored task's key, state and type, without the rest: what the admin surface's event
/// counters need of an open task to follow its state.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskSummary {
    pub key: TaskKey,
    pub state: TaskState,
    /// The wire name, e.g. `send_idat` (an unknown task's own name).
    pub task_type: String,
}

impl From<&TaskRecord> for TaskSummary {
    fn from(rec: &TaskRecord) -> Self {
        TaskSummary {
            key: rec.key.clone(),
            state: rec.state.clone(),
            task_type: rec.task.kind.type_name().to_string(),
        }
    }
}

#[derive(Clone, Copy)]
enum Finish {
    Done,
    Expired,
    /// Closed locally (denied, withdrawn): finished, but neither answered nor expired, so not
    /// counted in the done/expired history (the audit trail holds each one).
    Closed,
}

/// When and how a task occurrence finished, if it did.
fn finished(state: &TaskState) -> Option<(DateTime<Utc>, Finish)> {
    match state {
        TaskState::Done { at } => Some((*at, Finish::Done)),
        TaskState::Expired { at } => Some((*at, Finish::Expired)),
        TaskState::Closed { at, .. } => Some((*at, Finish::Closed)),
        _ => None,
    }
}

/// A task's `idx_finished_tasks` key, if it is finished.
fn finished_key(key: &[u8], state: &TaskState) -> Option<Vec<u8>> {
    finished(state).map(|(at, _)| time_key(nanos_clamped(at), key))
}

fn encode_task(rec: &TaskRecord) -> Result<Vec<u8>, StoreError> {
    if rec.key.0.is_empty() {
        return Err(StoreError::Invalid {
            what: "task",
            why: "the task key is empty".to_string(),
        });
    }
    serde_json::to_vec(rec).map_err(|e| StoreError::Codec {
        what: "task",
        detail: e.to_string(),
    })
}

/// A task's JSON sealed for storing under `key`.
fn seal_task(keys: &StoreKeys, key: &[u8], json: &[u8]) -> Result<Vec<u8>, StoreError> {
    keys.task.seal(key, json)
}

/// A stored task's JSON, unsealed; a value that does not open is damage, named by its key.
fn task_json(
    keys: &StoreKeys,
    key: &[u8],
    value: &[u8],
    path: &Path,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    keys.task.open(key, value).map_err(|_| {
        error::corrupt(
            path,
            format!(
                "task {:?}: its sealed value fails authentication under the store's key",
                String::from_utf8_lossy(key)
            ),
        )
    })
}

/// A stored task's JSON as a migration from before schema 4 finds it: sealed if a step sealed
/// it already, in clear otherwise.
fn legacy_task_json(keys: &StoreKeys, key: &[u8], value: &[u8]) -> Zeroizing<Vec<u8>> {
    keys.task
        .open(key, value)
        .unwrap_or_else(|_| Zeroizing::new(value.to_vec()))
}

fn decode_task(key: &[u8], value: &[u8], path: &Path) -> Result<TaskRecord, StoreError> {
    decode_json(key, value, path)
}

/// A stored task's JSON as `T` (the whole record, or just its head); a value that does not
/// decode is damage to the store, named by its key.
fn decode_json<T: serde::de::DeserializeOwned>(
    key: &[u8],
    value: &[u8],
    path: &Path,
) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| {
        error::corrupt(
            path,
            format!(
                "task {:?} does not decode: {e}",
                String::from_utf8_lossy(key)
            ),
        )
    })
}

/// The part of a stored task a scan looks at first: its state, and its type for the history.
/// serde skips the rest of the JSON without building it, so scanning many finished tasks for
/// the few open ones (or for per-day counts) costs a fraction of decoding them all. Finished
/// tasks stay stored for `[store] task_retention` (30 days), so they far outnumber open ones.
#[derive(serde::Deserialize)]
struct TaskHead {
    state: TaskState,
    task: TaskHeadTask,
}

#[derive(serde::Deserialize)]
struct TaskHeadTask {
    kind: KindHead,
}

/// `TaskKind`'s variants, contents skipped except an unknown task's name.
#[derive(serde::Deserialize)]
enum KindHead {
    DicPsnAvailable(serde::de::IgnoredAny),
    SendIdat(serde::de::IgnoredAny),
    RepeatRequest(serde::de::IgnoredAny),
    Unknown(UnknownHead),
}

#[derive(serde::Deserialize)]
struct UnknownHead {
    name: String,
}

impl KindHead {
    /// The same names as `TaskKind::type_name` (the wire's).
    fn type_name(&self) -> &str {
        match self {
            KindHead::DicPsnAvailable(_) => ttp_proto::task::DIC_PSN_AVAILABLE,
            KindHead::SendIdat(_) => ttp_proto::task::SEND_IDAT,
            KindHead::RepeatRequest(_) => ttp_proto::task::REPEAT_REQUEST,
            KindHead::Unknown(u) => &u.name,
        }
    }
}

fn decode_head(key: &[u8], value: &[u8], path: &Path) -> Result<TaskHead, StoreError> {
    decode_json(key, value, path)
}

/// History increments gathered over one transaction's writes: `history_key` → (done, expired).
/// Added to the counters once per key at the end ([`add_to_history`]): a wave finishes
/// hundreds of tasks of a few types on one day.
type HistoryDelta = BTreeMap<Vec<u8>, (u64, u64)>;

fn count_finish(delta: &mut HistoryDelta, task_type: &str, at: DateTime<Utc>, how: Finish) {
    if matches!(how, Finish::Closed) {
        return;
    }
    let c = delta
        .entry(history_key(at.date_naive(), task_type))
        .or_default();
    match how {
        Finish::Done => c.0 += 1,
        Finish::Expired => c.1 += 1,
        Finish::Closed => {}
    }
}

/// Adds `delta` to the `history` counters, inside a transaction.
fn add_to_history(
    history: &mut WTree<'_, '_>,
    delta: &HistoryDelta,
    path: &Path,
) -> Result<(), StoreError> {
    for (key, (done, expired)) in delta {
        let (d, e) = match history.get(key)? {
            None => (0, 0),
            Some(v) => read_history_value(&v)
                .ok_or_else(|| error::corrupt(path, "a history counter value is malformed"))?,
        };
        history.insert(key.as_slice(), &history_value(d + done, e + expired))?;
    }
    Ok(())
}

/// Keeps the derived data right for one task write inside a transaction: the open-task index
/// and the finished-task index follow the new state, and an occurrence this write finishes (its
/// state becomes `Done` or `Expired` and differs from the stored one) is counted in `delta` for
/// its day's history.
fn apply_state_change(
    open: &mut WTree<'_, '_>,
    finished_index: &mut WTree<'_, '_>,
    delta: &mut HistoryDelta,
    rec: &TaskRecord,
    old: Option<&TaskState>,
) -> Result<(), StoreError> {
    // The index already agrees with the stored state (same transactions), so it changes only
    // when the task opens or closes: most writes (intent, retry) leave it alone.
    let key = rec.key.0.as_bytes();
    let was_open = old.is_some_and(|s| !s.is_final());
    match (was_open, !rec.state.is_final()) {
        (false, true) => {
            open.insert(key, &[] as &[u8])?;
        }
        (true, false) => {
            open.remove(key)?;
        }
        _ => {}
    }
    let old_finished = old.and_then(|s| finished_key(key, s));
    let new_finished = finished_key(key, &rec.state);
    if old_finished != new_finished {
        if let Some(k) = old_finished {
            finished_index.remove(&k)?;
        }
        if let Some(k) = new_finished {
            finished_index.insert(&k, &[])?;
        }
    }
    if old != Some(&rec.state)
        && let Some((at, how)) = finished(&rec.state)
    {
        count_finish(delta, rec.task.kind.type_name(), at, how);
    }
    Ok(())
}

/// Migration 2 → 3: counts the finished tasks still stored into the history counters (before
/// schema 3 the history scanned them) and builds the open-task index, in the transaction that
/// bumps the schema version, so a crash leaves either all of it or none and the step cannot
/// count a task twice.
pub(crate) fn migrate_to_open_index(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    path: &Path,
) -> Result<(), StoreError> {
    let mut counts = HistoryDelta::new();
    let mut open_keys = Vec::new();
    {
        let tasks = wtree(tx, TASKS, path)?;
        for entry in tasks.iter()? {
            let (key, value) = entry?;
            let json = legacy_task_json(keys, key.value(), value.value());
            let head = decode_head(key.value(), &json, path)?;
            match finished(&head.state) {
                None => open_keys.push(key.value().to_vec()),
                Some((at, how)) => count_finish(&mut counts, head.task.kind.type_name(), at, how),
            }
        }
    }
    let mut open = wtree(tx, OPEN_TASKS, path)?;
    for key in &open_keys {
        open.insert(key, &[])?;
    }
    add_to_history(&mut wtree(tx, HISTORY, path)?, &counts, path)
}

/// Rebuilds `idx_open_tasks` and `idx_finished_tasks` from the tasks (a restore; derived data
/// is not in a backup). Clears first, so running it again gives the same result.
pub(crate) fn rebuild_open_index(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    path: &Path,
) -> Result<(), StoreError> {
    let mut open_keys = Vec::new();
    let mut finished_keys = Vec::new();
    {
        let tasks = wtree(tx, TASKS, path)?;
        for entry in tasks.iter()? {
            let (key, value) = entry?;
            let json = task_json(keys, key.value(), value.value(), path)?;
            let state = decode_head(key.value(), &json, path)?.state;
            match finished_key(key.value(), &state) {
                None => open_keys.push(key.value().to_vec()),
                Some(k) => finished_keys.push(k),
            }
        }
    }
    finished_keys.sort_unstable();
    for (def, keys) in [(OPEN_TASKS, open_keys), (FINISHED_TASKS, finished_keys)] {
        let mut index = wtree(tx, def, path)?;
        index.clear()?;
        for key in &keys {
            index.insert(key, &[])?;
        }
    }
    Ok(())
}

/// For [`Store::check_integrity`]: every task opens and decodes, and the open-task index
/// names exactly the open tasks.
pub(crate) fn check(
    keys: &StoreKeys,
    tasks: &RTree<'_>,
    open_tasks: &RTree<'_>,
    finished_tasks: RTree<'_>,
    problems: &mut Vec<String>,
) -> Result<(), StoreError> {
    let mut finished = IndexCheck::new("finished-task", "task", finished_tasks);
    for entry in tasks.iter()? {
        let (key, value) = entry?;
        let key = key.value();
        let name = String::from_utf8_lossy(key).into_owned();
        let Ok(json) = keys.task.open(key, value.value()) else {
            problems.push(format!("task {name:?}: sealed value fails authentication"));
            continue;
        };
        let rec = match serde_json::from_slice::<TaskRecord>(&json) {
            Ok(rec) => rec,
            Err(e) => {
                problems.push(format!("task {name:?} does not decode: {e}"));
                continue;
            }
        };
        let indexed = open_tasks.contains_key(key)?;
        match (rec.state.is_final(), indexed) {
            (false, false) => problems.push(format!(
                "open task {name:?} is missing from the open-task index"
            )),
            (true, true) => {
                problems.push(format!("finished task {name:?} is in the open-task index"))
            }
            _ => {}
        }
        if let Some(k) = finished_key(key, &rec.state) {
            finished.expect(&k, &name, problems)?;
        }
    }
    finished.stale(problems)?;
    for entry in open_tasks.iter()? {
        let (key, _) = entry?;
        if !tasks.contains_key(key.value())? {
            problems.push(format!(
                "the open-task index names task {:?}, which is not stored",
                String::from_utf8_lossy(key.value())
            ));
        }
    }
    Ok(())
}

/// Schema 4 → 5: builds `idx_finished_tasks` from the tasks (one pass that opens every task's
/// seal, once). Clears first, so running it again gives the same result.
pub(crate) fn build_finished_index(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    path: &Path,
) -> Result<(), StoreError> {
    fill_index(tx, TASKS, FINISHED_TASKS, path, |key, value| {
        let json = task_json(keys, key, value, path)?;
        let state = decode_head(key, &json, path)?.state;
        Ok(finished_key(key, &state))
    })
}

/// Schema 3 → 4: seals every task's JSON (tasks carry Bloom filters). Idempotent: a value that
/// opens is sealed already.
pub(crate) fn seal_tasks(
    tx: &redb::WriteTransaction,
    keys: &StoreKeys,
    path: &Path,
) -> Result<(), StoreError> {
    let mut updates = Vec::new();
    {
        let tasks = wtree(tx, TASKS, path)?;
        for entry in tasks.iter()? {
            let (key, value) = entry?;
            if keys.task.open(key.value(), value.value()).is_ok() {
                continue;
            }
            updates.push((
                key.value().to_vec(),
                seal_task(keys, key.value(), value.value())?,
            ));
        }
    }
    let mut tasks = wtree(tx, TASKS, path)?;
    for (key, value) in &updates {
        tasks.insert(key, value)?;
    }
    Ok(())
}

impl Store {
    pub fn get_task(&self, key: &TaskKey) -> Result<Option<TaskRecord>, StoreError> {
        let key = key.0.as_bytes();
        match self.read(TASKS)?.get(key)? {
            None => Ok(None),
            Some(v) => decode_task(
                key,
                &task_json(&self.keys, key, &v, &self.path)?,
                &self.path,
            )
            .map(Some),
        }
    }

    /// Stores (inserts or replaces) tasks, all in one transaction, with the open-task index
    /// and the history counter of every occurrence the write finishes.
    ///
    /// Takes any collection of references (a slice, `map.values()`), so that callers need not
    /// copy records they keep into a new vector just to store them.
    pub fn put_tasks<'a>(
        &self,
        tasks: impl IntoIterator<Item = &'a TaskRecord>,
    ) -> Result<(), StoreError> {
        self.put_tasks_disclosing(tasks, &BTreeMap::new())
    }

    /// [`Store::put_tasks`] for a wave's intents: `disclosures` (by task key) says what the
    /// answer of each `send_idat` about to be sent carries; it is kept with the task's
    /// `Running` state until the outcome is logged (see `disclosures`). Every task write
    /// appends the disclosure log entry its change of state calls for, in this transaction.
    pub fn put_tasks_disclosing<'a>(
        &self,
        tasks: impl IntoIterator<Item = &'a TaskRecord>,
        disclosures: &BTreeMap<String, crate::domain::Disclosure>,
    ) -> Result<(), StoreError> {
        let encoded = tasks
            .into_iter()
            .map(|t| {
                Ok((
                    t,
                    seal_task(&self.keys, t.key.0.as_bytes(), &encode_task(t)?)?,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let path = self.path.as_path();
        self.write(|tx| {
            let mut stored = wtree(tx, TASKS, path)?;
            let mut open = wtree(tx, OPEN_TASKS, path)?;
            let mut finished_index = wtree(tx, FINISHED_TASKS, path)?;
            let (mut meta, mut log, mut pending) = (
                wtree(tx, META, path)?,
                wtree(tx, DISCLOSURES, path)?,
                wtree(tx, DISCLOSURE_PENDING, path)?,
            );
            let mut log_tables = super::disclosures::LogTables {
                meta: &mut meta,
                log: &mut log,
                pending: &mut pending,
            };
            let mut delta = HistoryDelta::new();
            for (rec, json) in &encoded {
                let key = rec.key.0.as_bytes();
                let old = stored.insert(key, json.as_slice())?;
                let old_state = match old {
                    None => None,
                    Some(v) => {
                        let json = task_json(&self.keys, key, &v, path)?;
                        Some(decode_head(key, &json, path)?.state)
                    }
                };
                apply_state_change(
                    &mut open,
                    &mut finished_index,
                    &mut delta,
                    rec,
                    old_state.as_ref(),
                )?;
                super::disclosures::apply_in(
                    &mut log_tables,
                    &self.keys,
                    rec,
                    old_state.as_ref(),
                    disclosures.get(&rec.key.0),
                    path,
                )?;
            }
            add_to_history(&mut wtree(tx, HISTORY, path)?, &delta, path)
        })
    }

    /// A manual change to one task, with its audit entry, in one transaction, and only if the
    /// stored task is still exactly `expected` (as read before the change was decided).
    /// Returns `false`, writing nothing, when it changed meanwhile (the daemon acted on it).
    /// Keeps the open-task index and the history as [`Store::put_tasks`] does.
    pub fn replace_task_audited(
        &self,
        expected: &TaskRecord,
        new: &TaskRecord,
        audit: &AuditEntry,
    ) -> Result<bool, StoreError> {
        if expected.key != new.key {
            return Err(StoreError::Invalid {
                what: "task update",
                why: "the expected and the new task have different keys".to_string(),
            });
        }
        let json = seal_task(&self.keys, new.key.0.as_bytes(), &encode_task(new)?)?;
        let audit = super::audit::encode_entry(audit)?;
        let path = self.path.as_path();
        let _gate = self.task_gate();
        self.write(|tx| {
            let mut stored = wtree(tx, TASKS, path)?;
            let key = new.key.0.as_bytes();
            let Some(current) = stored.get(key)? else {
                return Ok(false);
            };
            let current = decode_task(key, &task_json(&self.keys, key, &current, path)?, path)?;
            if current != *expected {
                return Ok(false);
            }
            stored.insert(key, json.as_slice())?;
            let mut delta = HistoryDelta::new();
            apply_state_change(
                &mut wtree(tx, OPEN_TASKS, path)?,
                &mut wtree(tx, FINISHED_TASKS, path)?,
                &mut delta,
                new,
                Some(&current.state),
            )?;
            add_to_history(&mut wtree(tx, HISTORY, path)?, &delta, path)?;
            // A person settling an in-doubt answer (`resolve`) is logged like the agent's own
            // settlements, in this transaction.
            super::disclosures::apply_in(
                &mut super::disclosures::LogTables {
                    meta: &mut wtree(tx, META, path)?,
                    log: &mut wtree(tx, DISCLOSURES, path)?,
                    pending: &mut wtree(tx, DISCLOSURE_PENDING, path)?,
                },
                &self.keys,
                new,
                Some(&current.state),
                None,
                path,
            )?;
            super::audit::append_in_tx(tx, &audit, path)?;
            Ok(true)
        })
    }

    /// The open tasks (neither `Done` nor `Expired`) whose state satisfies `pred`, by key.
    /// Reads only the open tasks, through `idx_open_tasks`: this is what the agent's cycle and
    /// `status` call, and its cost does not grow with the finished tasks kept for 30 days.
    pub fn open_tasks_where(
        &self,
        pred: impl Fn(&TaskState) -> bool,
    ) -> Result<Vec<TaskRecord>, StoreError> {
        Ok(self
            .open_tasks_where_held(pred, |_| None)?
            .into_iter()
            .map(|(rec, _)| rec)
            .collect())
    }

    /// The open tasks' key, state and type, by key: what the admin surface's event counters
    /// follow between cycles. Reads only the open tasks, through `idx_open_tasks`, and decodes
    /// only that much of each (see `TaskHead`); the finished ones are counted by
    /// [`Store::finished_totals`] instead, so neither start-up nor a cycle reads the 30 days of
    /// finished tasks.
    pub fn open_task_summaries(&self) -> Result<Vec<TaskSummary>, StoreError> {
        let tx = self.read_tx()?;
        let open_tasks = rtree(&tx, OPEN_TASKS, &self.path)?;
        let tasks = rtree(&tx, TASKS, &self.path)?;
        let mut found = Vec::new();
        for entry in open_tasks.iter()? {
            let (key, _) = entry?;
            let key = key.value();
            let value = tasks.get(key)?.ok_or_else(|| {
                self.corrupt("the open-task index names a task that is not stored")
            })?;
            let json = task_json(&self.keys, key, &value, &self.path)?;
            let head = decode_head(key, &json, &self.path)?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|_| self.corrupt("a task key is not UTF-8"))?;
            found.push(TaskSummary {
                key: TaskKey(key),
                task_type: head.task.kind.type_name().to_string(),
                state: head.state,
            });
        }
        Ok(found)
    }

    /// Every task occurrence that ever finished in this store, by type (the wire name): the
    /// sum of the `history` counters over all days. Exact (each occurrence is counted once, in
    /// the transaction that finishes it) and independent of how many finished tasks are still
    /// stored: the history holds one small entry per day and type.
    pub fn finished_totals(&self) -> Result<BTreeMap<String, FinishedCounts>, StoreError> {
        let mut totals: BTreeMap<String, FinishedCounts> = BTreeMap::new();
        for entry in self.read(HISTORY)?.iter()? {
            let (key, value) = entry?;
            let (_, task_type) = parse_history_key(key.value())
                .ok_or_else(|| self.corrupt("a history counter key is malformed"))?;
            let (done, expired) = read_history_value(value.value())
                .ok_or_else(|| self.corrupt("a history counter value is malformed"))?;
            let c = totals.entry(task_type.to_string()).or_default();
            c.done += done;
            c.expired += expired;
        }
        Ok(totals)
    }

    /// [`Store::open_tasks_where`] for a caller that already holds some of the stored records:
    /// for each open task's key, `held(key)` may hand over the caller's record, which is then
    /// taken instead of decoding the stored value (and reported with `true`). The agent's
    /// cycle passes the records its merge has just written, which are what is stored under
    /// those keys; only the open tasks the listing did not mention are read from the store. By
    /// key.
    pub fn open_tasks_where_held(
        &self,
        pred: impl Fn(&TaskState) -> bool,
        mut held: impl FnMut(&str) -> Option<TaskRecord>,
    ) -> Result<Vec<(TaskRecord, bool)>, StoreError> {
        let mut found = Vec::new();
        let tx = self.read_tx()?;
        let open_tasks = rtree(&tx, OPEN_TASKS, &self.path)?;
        let tasks = rtree(&tx, TASKS, &self.path)?;
        for entry in open_tasks.iter()? {
            let (key, _) = entry?;
            let key = key.value();
            if let Some(rec) = std::str::from_utf8(key).ok().and_then(&mut held) {
                if !rec.state.is_final() && pred(&rec.state) {
                    found.push((rec, true));
                }
                continue;
            }
            // A task is never removed, only replaced, while it is open; the index and the
            // task change in one transaction, so a missing task is damage, not a race.
            let value = tasks.get(key)?.ok_or_else(|| {
                self.corrupt("the open-task index names a task that is not stored")
            })?;
            let json = task_json(&self.keys, key, &value, &self.path)?;
            let head = decode_head(key, &json, &self.path)?;
            if !head.state.is_final() && pred(&head.state) {
                found.push((decode_task(key, &json, &self.path)?, false));
            }
        }
        Ok(found)
    }

    /// Every stored task: the open ones and the finished ones not purged yet, by key.
    pub fn tasks(&self) -> Result<Vec<TaskRecord>, StoreError> {
        self.read(TASKS)?
            .iter()?
            .map(|entry| {
                let (key, value) = entry?;
                let json = task_json(&self.keys, key.value(), value.value(), &self.path)?;
                decode_task(key.value(), &json, &self.path)
            })
            .collect()
    }

    /// Removes `Done` / `Expired` tasks that finished before `finished_before` (the history
    /// counted them when they finished). Returns how many were removed. Reads only the tasks
    /// `idx_finished_tasks` lists before the cut-off, not every stored task.
    pub fn purge_finished_tasks(
        &self,
        finished_before: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let cutoff = time_prefix(nanos_clamped(finished_before));
        let mut candidates = Vec::new();
        for entry in self.read(FINISHED_TASKS)?.range(&[], Some(&cutoff))? {
            let (key, _) = entry?;
            candidates.push(key.value().to_vec());
        }
        if candidates.is_empty() {
            return Ok(0);
        }
        let path = self.path.as_path();
        self.write(|tx| {
            let mut stored = wtree(tx, TASKS, path)?;
            let mut finished_index = wtree(tx, FINISHED_TASKS, path)?;
            let mut removed = 0;
            for index_key in &candidates {
                let key = time_key_suffix(index_key).ok_or_else(|| {
                    error::corrupt(path, "a finished-task index key is malformed")
                })?;
                // Re-read inside the transaction: the task may have changed since the range
                // was read (then its index entry changed with it).
                if !finished_index.contains_key(index_key)? {
                    continue;
                }
                let Some(value) = stored.get(key)? else {
                    return Err(error::corrupt(
                        path,
                        "the finished-task index names a task that is not stored",
                    ));
                };
                let head = decode_head(key, &task_json(&self.keys, key, &value, path)?, path)?;
                let Some((at, _)) = finished(&head.state) else {
                    continue;
                };
                if at >= finished_before {
                    continue;
                }
                stored.remove(key)?;
                finished_index.remove(index_key)?;
                removed += 1;
            }
            Ok(removed)
        })
    }

    /// Finished tasks per UTC day for the last `days` days up to and including today, oldest
    /// first, one entry per day (days without finished tasks have an empty map).
    pub fn history(&self, days: u32) -> Result<Vec<DayHistory>, StoreError> {
        self.history_until(Utc::now().date_naive(), days)
    }

    /// [`Store::history`] for the `days` days ending with `last_day`.
    pub fn history_until(
        &self,
        last_day: NaiveDate,
        days: u32,
    ) -> Result<Vec<DayHistory>, StoreError> {
        if days == 0 {
            return Ok(Vec::new());
        }
        let first_day = last_day
            .checked_sub_days(chrono::Days::new(u64::from(days - 1)))
            .unwrap_or(NaiveDate::MIN);
        let mut by_day: BTreeMap<NaiveDate, BTreeMap<String, FinishedCounts>> = first_day
            .iter_days()
            .take_while(|d| *d <= last_day)
            .map(|d| (d, BTreeMap::new()))
            .collect();

        // Every finished occurrence is in the counters: a key range, since keys start with the day.
        let start = history_key(first_day, "");
        let end = last_day.succ_opt().map(|d| history_key(d, ""));
        let history = self.read(HISTORY)?;
        for entry in history.range(&start, end.as_deref())? {
            let (key, value) = entry?;
            let (day, task_type) = parse_history_key(key.value())
                .ok_or_else(|| self.corrupt("a history counter key is malformed"))?;
            let (done, expired) = read_history_value(value.value())
                .ok_or_else(|| self.corrupt("a history counter value is malformed"))?;
            if let Some(types) = by_day.get_mut(&day) {
                let c = types.entry(task_type.to_string()).or_default();
                c.done += done;
                c.expired += expired;
            }
        }

        Ok(by_day
            .into_iter()
            .map(|(day, by_type)| DayHistory { day, by_type })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttp_proto::{BloomFilter, ElementRequest, IdatElement, SendIdatSubject, TaskKind};

    fn record(kind: TaskKind, state: TaskState) -> TaskRecord {
        let mut rec = crate::testkit::task("k", kind, state, Utc::now());
        rec.task.unknown_parts = vec![serde_json::json!({"name": "extra"})];
        rec.attempts = 2;
        rec.last_error = Some("e".into());
        rec.last_seen_poll = 3;
        rec
    }

    #[test]
    fn the_head_of_a_stored_task_agrees_with_the_full_decode() {
        let bf = BloomFilter(vec![1, 2, 3]);
        let kinds = [
            TaskKind::DicPsnAvailable {
                bloom_filter: bf.clone(),
                target: "t".into(),
                pseudonym: "p".into(),
            },
            TaskKind::SendIdat {
                task_id: "id".into(),
                subject: SendIdatSubject::BloomFilter(bf.clone()),
                elements: vec![
                    ElementRequest::Known(IdatElement::Given),
                    ElementRequest::Unknown("x".into()),
                ],
            },
            TaskKind::RepeatRequest {
                study: "s".into(),
                bloom_filter: bf,
                target: "t".into(),
            },
            TaskKind::Unknown {
                name: "future_task".into(),
                raw: serde_json::json!({"name": "future_task", "part": []}),
            },
        ];
        let now = Utc::now();
        let states = [
            TaskState::Received,
            TaskState::Running,
            TaskState::InDoubt,
            TaskState::RetryWait { next_at: now },
            TaskState::NeedsAttention {
                reason: crate::domain::Attention::UnknownRecord,
            },
            TaskState::Done { at: now },
            TaskState::Expired { at: now },
        ];
        for kind in &kinds {
            for state in &states {
                let rec = record(kind.clone(), state.clone());
                let json = encode_task(&rec).unwrap();
                let head = decode_head(b"k", &json, Path::new("store")).unwrap();
                assert_eq!(&head.state, state);
                assert_eq!(head.task.kind.type_name(), kind.type_name());
            }
        }
        assert!(decode_head(b"k", b"{\"state\":\"Nope\"}", Path::new("store")).is_err());
    }

    /// A store written before deadlines were `DateTime<Utc>` (issue 12 item 5) holds a task's
    /// `expires` with the fTTP's offset, as chrono wrote a `DateTime<FixedOffset>`. It must
    /// still open, as the same instant, without a schema step: this is that JSON, byte for
    /// byte what the old code stored, sealed and read back through the store.
    #[test]
    fn a_task_stored_with_the_wires_offset_reads_as_the_same_utc_deadline() {
        const OLD: &str = concat!(
            r#"{"key":"send_idat/T-1","task":{"kind":{"SendIdat":{"task_id":"T-1","#,
            r#""subject":{"Pseudonym":"psn_1"},"elements":[]}},"#,
            r#""expires":"2025-04-01T12:00:00+02:00","unknown_parts":[]},"#,
            r#""state":"Received","attempts":0,"last_error":null,"#,
            r#""first_seen":"2025-03-30T08:00:00Z","updated_at":"2025-03-30T08:00:00Z","#,
            r#""last_seen_poll":1}"#
        );
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::store::StoreOptions::new(dir.path(), crate::store::IdatKey::generate());
        let store = Store::open(&opts).unwrap();
        let key = TaskKey("send_idat/T-1".into());
        store
            .write(|tx| {
                let sealed = seal_task(&store.keys, key.0.as_bytes(), OLD.as_bytes())?;
                wtree(tx, TASKS, &store.path)?.insert(key.0.as_bytes(), &sealed)?;
                Ok(())
            })
            .unwrap();

        let rec = store.get_task(&key).unwrap().expect("stored");
        let deadline = crate::testkit::at("2025-04-01T10:00:00Z");
        assert_eq!(rec.deadline(), Some(deadline));
        assert_eq!(rec.task.expires, Some(deadline));
        assert_eq!(rec.state, TaskState::Received);
        // Written again, it is the new spelling of the same instant.
        store.put_tasks([&rec]).unwrap();
        let json = serde_json::to_string(&store.get_task(&key).unwrap().unwrap()).unwrap();
        assert!(
            json.contains(r#""expires":"2025-04-01T10:00:00Z""#),
            "{json}"
        );
    }

    /// `check --store` checks the finished-task index like every other derived index: a
    /// finished task without its entry is named, and an entry no task implies is stale.
    #[test]
    fn the_store_check_names_a_missing_and_counts_a_stale_finished_task_entry() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::store::StoreOptions::new(dir.path(), crate::store::IdatKey::generate());
        let store = Store::open(&opts).unwrap();
        let done = crate::testkit::task(
            "done-1",
            TaskKind::RepeatRequest {
                bloom_filter: BloomFilter(vec![4, 5, 6]),
                study: "s".into(),
                target: "t".into(),
            },
            TaskState::Done { at: Utc::now() },
            Utc::now(),
        );
        store.put_tasks([&done]).unwrap();
        assert!(store.check_integrity().unwrap().problems.is_empty());

        let entry = finished_key(done.key.0.as_bytes(), &done.state).expect("finished");
        store
            .write(|tx| {
                let mut index = wtree(tx, FINISHED_TASKS, &store.path)?;
                index.remove(&entry)?;
                index.insert(b"not-a-task", &[])?;
                index.insert(b"not-a-task-either", &[])?;
                Ok(())
            })
            .unwrap();
        let problems = store.check_integrity().unwrap().problems;
        assert_eq!(
            problems,
            vec![
                format!(
                    "finished-task index lacks the entry of task {:?}",
                    done.key.0
                ),
                "finished-task index has 1 stale entries".to_string(),
            ]
        );
    }

    /// A person's change (here a denial) that arrives while the poll cycle holds copies it
    /// read is never undone by the cycle writing them back: it waits for the gate, then its
    /// check against the stored task refuses it (the person is told and can run it again).
    /// Without the gate the denial commits at once, the cycle's older copy overwrites it, and
    /// the person was told "denied" for a task that still awaits approval (a later approval
    /// would send the IDAT).
    #[test]
    fn a_denial_is_never_overwritten_by_the_cycles_older_copy() {
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::store::StoreOptions::new(dir.path(), crate::store::IdatKey::generate());
        let store = std::sync::Arc::new(Store::open(&opts).unwrap());
        let task = crate::testkit::task(
            "send_idat/T-9",
            TaskKind::SendIdat {
                task_id: "T-9".into(),
                subject: SendIdatSubject::BloomFilter(BloomFilter(vec![9; 8])),
                elements: vec![ElementRequest::Known(IdatElement::Given)],
            },
            TaskState::AwaitingApproval,
            Utc::now(),
        );
        store.put_tasks([&task]).unwrap();

        // The cycle reads its copy under the gate.
        let gate = store.task_gate();
        let mut copy = store.get_task(&task.key).unwrap().expect("stored");

        // Meanwhile a person denies the release, on another thread (as the control channel
        // runs commands).
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let person = {
            let store = std::sync::Arc::clone(&store);
            let key = task.key.clone();
            std::thread::spawn(move || {
                let expected = store.get_task(&key).unwrap().expect("stored");
                let mut next = expected.clone();
                next.denied_by("user-b", "no consent on file", Utc::now())
                    .unwrap();
                let entry = AuditEntry {
                    at: Utc::now(),
                    actor: "user-b".into(),
                    action: "deny".into(),
                    subject: key.0.clone(),
                    detail: "no consent on file".into(),
                };
                let applied = store
                    .replace_task_audited(&expected, &next, &entry)
                    .unwrap();
                let _ = done_tx.send(());
                applied
            })
        };
        // Give the denial every chance to commit before the cycle writes (it cannot while the
        // gate is held; without the gate it would). Not a timing assertion: the result must
        // be right however the threads are scheduled.
        let _ = done_rx.recv_timeout(std::time::Duration::from_millis(300));

        // The cycle writes its copy back (the merge notes the poll it saw the task in).
        copy.last_seen_poll += 1;
        store.put_tasks([&copy]).unwrap();
        drop(gate);

        let told_denied = person.join().unwrap();
        let stored = store.get_task(&task.key).unwrap().expect("stored");
        let closed = matches!(stored.state, TaskState::Closed { .. });
        assert_eq!(
            told_denied, closed,
            "the person was told {told_denied} but the task is {:?}",
            stored.state
        );
        assert!(
            !told_denied,
            "the denial must be refused, not applied and then lost"
        );
    }
}
