//! The status report: what is open, what expires soon, what needs a human, what was obtained.
//!
//! Built from the store alone (no network), shared by `ttp-agent status`, the admin page and
//! the metrics. It names tasks by their key and records by their local id; it never contains
//! IDAT, Bloom filters or pseudonyms.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use ttp_proto::TaskKind;

use crate::agent::{META_LAST_POLL_OK, expire};
use crate::domain::{TaskRecord, TaskState};
use crate::store::{Store, StoreError};

#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    pub generated_at: DateTime<Utc>,
    pub last_successful_poll: Option<DateTime<Utc>>,
    /// Open tasks: type → state → count.
    pub open_by_type: BTreeMap<String, BTreeMap<String, usize>>,
    /// Open tasks, most urgent first.
    pub open: Vec<TaskLine>,
    pub needs_attention: Vec<TaskLine>,
    pub records: RecordSummary,
    pub history: Vec<DayLine>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskLine {
    pub key: String,
    pub task_type: String,
    pub state: String,
    pub expires: Option<DateTime<Utc>>,
    pub seconds_to_expiry: Option<i64>,
    /// Within the warning window before expiry.
    pub urgent: bool,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub reason: Option<String>,
    pub first_seen: DateTime<Utc>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RecordSummary {
    pub total: u64,
    pub pending_registration: u64,
    pub awaiting_clearing: u64,
    pub pseudonymised: u64,
    pub rejected: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct DayLine {
    pub day: String,
    pub done: BTreeMap<String, u64>,
    pub expired: BTreeMap<String, u64>,
}

pub fn task_type(rec: &TaskRecord) -> String {
    match &rec.task.kind {
        TaskKind::DicPsnAvailable { .. } => "dic_psn_available".into(),
        TaskKind::SendIdat { .. } => "send_idat".into(),
        TaskKind::RepeatRequest { .. } => "repeat_request".into(),
        TaskKind::Unknown { name, .. } => name.clone(),
    }
}

fn line(rec: &TaskRecord, now: DateTime<Utc>, warn: chrono::Duration) -> TaskLine {
    let secs = expire::seconds_to_expiry(rec, now);
    TaskLine {
        key: rec.key.0.clone(),
        task_type: task_type(rec),
        state: rec.state.name().into(),
        expires: rec.task.expires.map(|e| e.with_timezone(&Utc)),
        seconds_to_expiry: secs,
        urgent: secs.is_some_and(|s| s <= warn.num_seconds()),
        attempts: rec.attempts,
        last_error: rec.last_error.clone(),
        reason: match &rec.state {
            TaskState::NeedsAttention { reason } => Some(reason.to_string()),
            _ => None,
        },
        first_seen: rec.first_seen,
    }
}

/// Build the report. `warn` is the warning window before expiry (`[admin] warn_before_expiry`).
pub fn build(
    store: &Store,
    warn: chrono::Duration,
    history_days: u32,
) -> Result<StatusReport, StoreError> {
    let now = Utc::now();
    // Only open tasks are listed; finished ones only count in the history.
    let tasks = store.tasks_where(|s| !s.is_final())?;
    let mut open_by_type: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut open = Vec::new();
    let mut needs_attention = Vec::new();
    for t in &tasks {
        if t.state.is_final() {
            continue;
        }
        *open_by_type
            .entry(task_type(t))
            .or_default()
            .entry(t.state.name().to_string())
            .or_default() += 1;
        let l = line(t, now, warn);
        if matches!(t.state, TaskState::NeedsAttention { .. }) {
            needs_attention.push(l);
        } else {
            open.push(l);
        }
    }
    let by_urgency = |a: &TaskLine, b: &TaskLine| {
        a.seconds_to_expiry
            .unwrap_or(i64::MAX)
            .cmp(&b.seconds_to_expiry.unwrap_or(i64::MAX))
            .then(a.first_seen.cmp(&b.first_seen))
    };
    open.sort_by(by_urgency);
    needs_attention.sort_by(by_urgency);
    let counts = store.record_counts()?;
    let history = store
        .history(history_days)?
        .into_iter()
        .map(|d| DayLine {
            day: d.day.to_string(),
            done: d.by_type.iter().map(|(t, c)| (t.clone(), c.done)).collect(),
            expired: d
                .by_type
                .iter()
                .map(|(t, c)| (t.clone(), c.expired))
                .collect(),
        })
        .collect();
    Ok(StatusReport {
        generated_at: now,
        last_successful_poll: store.meta_time(META_LAST_POLL_OK)?,
        open_by_type,
        open,
        needs_attention,
        records: RecordSummary {
            total: counts.total,
            pending_registration: counts.new + counts.sending,
            awaiting_clearing: counts.awaiting_clearing,
            pseudonymised: counts.pseudonymised,
            rejected: counts.rejected,
        },
        history,
    })
}

/// Seconds as a short human duration: `3d 4h`, `5h 12m`, `42m`, `expired`.
pub fn human_duration(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{}m", m.max(1)),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The report as a terminal table.
pub fn render_text(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "last successful poll: {}",
        r.last_successful_poll.map_or("never".to_string(), |t| t
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string())
    );
    let rc = &r.records;
    let _ = writeln!(
        out,
        "records: {} total, {} pseudonymised, {} awaiting clearing, {} pending registration, {} rejected",
        rc.total, rc.pseudonymised, rc.awaiting_clearing, rc.pending_registration, rc.rejected
    );
    let _ = writeln!(out, "\nopen tasks by type and state:");
    if r.open_by_type.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for (ty, states) in &r.open_by_type {
        let parts: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
        let _ = writeln!(out, "  {ty:<20} {}", parts.join(", "));
    }
    if !r.open.is_empty() {
        let _ = writeln!(out, "\nopen tasks, most urgent first:");
        let _ = writeln!(
            out,
            "  {:<2}{:<56} {:<12} {:>10}  last error",
            "", "task", "state", "expires in"
        );
        for t in &r.open {
            let _ = writeln!(
                out,
                "  {:<2}{:<56} {:<12} {:>10}  {}",
                if t.urgent { "!" } else { "" },
                t.key,
                t.state,
                t.seconds_to_expiry.map_or("-".into(), human_duration),
                t.last_error.as_deref().unwrap_or("")
            );
        }
    }
    if !r.needs_attention.is_empty() {
        let _ = writeln!(out, "\nneeds attention:");
        for t in &r.needs_attention {
            let _ = writeln!(
                out,
                "  {} ({}, expires in {}): {}",
                t.key,
                t.task_type,
                t.seconds_to_expiry.map_or("-".into(), human_duration),
                t.reason.as_deref().unwrap_or("")
            );
        }
    }
    if !r.history.is_empty() {
        let _ = writeln!(out, "\nhistory (UTC days): done / expired");
        for d in &r.history {
            let done: u64 = d.done.values().sum();
            let expired: u64 = d.expired.values().sum();
            let _ = writeln!(out, "  {}  {done:>6} / {expired}", d.day);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(-5), "expired");
        assert_eq!(human_duration(30), "1m");
        assert_eq!(human_duration(42 * 60), "42m");
        assert_eq!(human_duration(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }
}
