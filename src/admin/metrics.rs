//! `/metrics`: what the agent does, for Prometheus.
//!
//! Two kinds of numbers, from two places:
//!
//! * **Events** the store does not keep — poll durations and errors, tasks received / done /
//!   failed / expired, alerts, webhook deliveries — are counted as they happen, fed by the
//!   daemon hooks ([`super::hooks`]) and the alerts. They start at zero with the process, as
//!   Prometheus counters do.
//! * **State** — open tasks by type and state, the earliest deadline, tasks in the warning
//!   window, records and pseudonyms, the last successful poll, the fTTP request counters — is
//!   read when scraped, from the store and the client. A scrape costs one scan of the stored
//!   tasks (a few thousand at most, see `store::tasks`) and reads a few counters; nothing is
//!   cached, so the numbers are never stale.
//!
//! The text format is OpenMetrics, written by the `prometheus-client` crate (the Prometheus
//! project's own Rust client): its counters, histograms and families with typed labels cover
//! exactly this, and its encoder gets the format's escaping and suffix rules right.
//!
//! Every name starts with `ttp_agent_`. Labels are bounded sets: task type (the three known
//! ones, everything else is `unknown`), task state, fTTP operation, HTTP status class, error
//! class, alert kind. No task key, record id, pseudonym or filter ever becomes a label.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use ttp_proto::task::{DIC_PSN_AVAILABLE, REPEAT_REQUEST, SEND_IDAT};

use super::AdminState;
use crate::agent::CycleError;
use crate::client::metrics::StatusClass;
use crate::client::{ClientMetricsSnapshot, Operation};
use crate::domain::TaskRecord;
use crate::store::META_LAST_POLL_OK;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const PREFIX: &str = "ttp_agent";

type Label = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// The task types a label may name.
pub const TASK_TYPES: [&str; 4] = [DIC_PSN_AVAILABLE, SEND_IDAT, REPEAT_REQUEST, UNKNOWN_TYPE];

/// The label of every task type this version does not know.
const UNKNOWN_TYPE: &str = "unknown";

/// The open states a label may name.
const OPEN_STATES: [&str; 5] = [
    "received",
    "running",
    "in-doubt",
    "retry-wait",
    "needs-attention",
];

/// The metric label of a task type's wire name: the known types, everything else `unknown`.
/// Never the name an unknown task came with: that is the fTTP's free text, unbounded (a label
/// per name would let the fTTP grow the metric without bound), and not ours to put into a
/// time series database.
pub fn label_of_type(name: &str) -> &'static str {
    [DIC_PSN_AVAILABLE, SEND_IDAT, REPEAT_REQUEST]
        .into_iter()
        .find(|known| *known == name)
        .unwrap_or(UNKNOWN_TYPE)
}

/// The task type of a task as a label value ([`label_of_type`]).
pub fn type_label(rec: &TaskRecord) -> &'static str {
    label_of_type(rec.task.kind.type_name())
}

/// Something that happened to a task, counted by type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskEvent {
    /// Listed for the first time (or as a new occurrence).
    Received,
    /// Answered.
    Done,
    /// Handed to a person (needs attention).
    Failed,
    /// Its deadline passed unanswered.
    Expired,
}

/// The counters and histograms fed by events.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    received: Family<Label, Counter>,
    done: Family<Label, Counter>,
    failed: Family<Label, Counter>,
    expired: Family<Label, Counter>,
    poll_duration: Histogram,
    poll_errors: Family<Label, Counter>,
    alerts: Family<Label, Counter>,
    webhook: Family<Label, Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let received = Family::<Label, Counter>::default();
        let done = Family::<Label, Counter>::default();
        let failed = Family::<Label, Counter>::default();
        let expired = Family::<Label, Counter>::default();
        // Polls take from well under a second (nothing to do) to minutes (thousands of answers).
        let poll_duration = Histogram::new([
            0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
        ]);
        let poll_errors = Family::<Label, Counter>::default();
        let alerts = Family::<Label, Counter>::default();
        let webhook = Family::<Label, Counter>::default();

        // Every series exists from the start, at zero: `rate()` and `increase()` then see the
        // first event instead of a series appearing out of nowhere.
        for t in TASK_TYPES {
            for family in [&received, &done, &failed, &expired] {
                drop(family.get_or_create(&[("task_type", t)]));
            }
        }
        for class in ["fetch", "auth", "store"] {
            drop(poll_errors.get_or_create(&[("class", class)]));
        }
        for kind in super::alerts::AlertKind::ALL {
            drop(alerts.get_or_create(&[("kind", kind.as_str())]));
        }
        for result in ["delivered", "failed", "dropped"] {
            drop(webhook.get_or_create(&[("result", result)]));
        }

        registry.register(
            "build",
            "The agent's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "tasks_received",
            "Tasks listed by the fTTP for the first time (or as a new occurrence), by type",
            received.clone(),
        );
        registry.register("tasks_done", "Tasks answered, by type", done.clone());
        registry.register(
            "tasks_failed",
            "Tasks the agent could not answer and handed to a person (needs attention), by type",
            failed.clone(),
        );
        registry.register(
            "tasks_expired",
            "Tasks whose deadline passed before they were answered, by type",
            expired.clone(),
        );
        registry.register_with_unit(
            "poll_duration",
            "Duration of poll cycles (fetch, merge, answer), successful or not",
            Unit::Seconds,
            poll_duration.clone(),
        );
        registry.register(
            "poll_errors",
            "Poll cycles that failed, by class (fetch: the fTTP could not be reached or answered badly; auth: credentials refused; store: local storage)",
            poll_errors.clone(),
        );
        registry.register(
            "alerts",
            "Alerts raised (log line, webhook), by kind",
            alerts.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by result",
            webhook.clone(),
        );
        AgentMetrics {
            registry,
            received,
            done,
            failed,
            expired,
            poll_duration,
            poll_errors,
            alerts,
            webhook,
        }
    }

    pub fn task_event(&self, event: TaskEvent, task_type: &'static str) {
        let family = match event {
            TaskEvent::Received => &self.received,
            TaskEvent::Done => &self.done,
            TaskEvent::Failed => &self.failed,
            TaskEvent::Expired => &self.expired,
        };
        family.get_or_create(&[("task_type", task_type)]).inc();
    }

    pub fn cycle_finished(
        &self,
        result: &Result<crate::agent::CycleReport, CycleError>,
        secs: f64,
    ) {
        if matches!(result, Err(CycleError::ShuttingDown)) {
            return;
        }
        self.poll_duration.observe(secs);
        if let Err(e) = result {
            self.poll_errors
                .get_or_create(&[("class", e.class())])
                .inc();
        }
    }

    pub fn alert_raised(&self, kind: super::alerts::AlertKind) {
        self.alerts.get_or_create(&[("kind", kind.as_str())]).inc();
    }

    /// `result`: `delivered`, `failed` or `dropped`.
    pub fn webhook_attempt(&self, result: &'static str) {
        self.webhook.get_or_create(&[("result", result)]).inc();
    }
}

/// Open tasks, as the gauges report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskGauges {
    /// (type, state) → count, every known pair present.
    pub open: BTreeMap<(&'static str, &'static str), i64>,
    /// Open tasks (needs-attention included) within the warning window before their deadline.
    pub in_warning_window: i64,
    /// Seconds until the earliest deadline of an open task (negative once past).
    pub earliest_expiry_secs: Option<i64>,
}

/// Computes the task gauges from the stored tasks. Pure.
pub fn task_gauges(tasks: &[TaskRecord], now: DateTime<Utc>, warn: chrono::Duration) -> TaskGauges {
    let mut g = TaskGauges::default();
    for t in TASK_TYPES {
        for s in OPEN_STATES {
            g.open.insert((t, s), 0);
        }
    }
    for rec in tasks.iter().filter(|t| !t.state.is_final()) {
        *g.open
            .entry((type_label(rec), rec.state.name()))
            .or_default() += 1;
        if let Some(secs) = rec.seconds_to_deadline(now) {
            if secs <= warn.num_seconds() {
                g.in_warning_window += 1;
            }
            g.earliest_expiry_secs = Some(g.earliest_expiry_secs.map_or(secs, |e| e.min(secs)));
        }
    }
    g
}

/// The per-scrape metrics: read from the store and the client now.
fn state_registry(state: &AdminState, now: DateTime<Utc>) -> Registry {
    let mut r = Registry::with_prefix(PREFIX);
    let store = &state.store;

    let tasks = store.open_tasks_where(|_| true);
    let counts = store.record_counts();
    let last_ok = store.meta_time(META_LAST_POLL_OK);
    let pending = store.pending_deliveries();
    let readable = Gauge::<i64>::default();
    readable.set(i64::from(
        tasks.is_ok() && counts.is_ok() && last_ok.is_ok() && pending.is_ok(),
    ));
    r.register(
        "store_readable",
        "1 if the store answered the reads of this scrape, 0 if not (the store's numbers are then missing)",
        readable,
    );

    if let Ok(tasks) = tasks {
        let g = task_gauges(&tasks, now, state.settings.warn_before_expiry);
        let open = Family::<Labels2, Gauge>::default();
        for ((t, s), n) in &g.open {
            open.get_or_create(&[("task_type", t), ("state", s)])
                .set(*n);
        }
        r.register(
            "open_tasks",
            "Open tasks (not done, not expired) by type and state",
            open,
        );
        let warning = Gauge::<i64>::default();
        warning.set(g.in_warning_window);
        r.register(
            "tasks_in_warning_window",
            "Open tasks whose deadline is within [admin] warn_before_expiry",
            warning,
        );
        if let Some(secs) = g.earliest_expiry_secs {
            let earliest = Gauge::<i64>::default();
            earliest.set(secs);
            r.register_with_unit(
                "earliest_expiry",
                "Time until the earliest deadline of an open task (absent when no open task has one)",
                Unit::Seconds,
                earliest,
            );
        }
    }
    if let Ok(c) = counts {
        let records = Family::<Label, Gauge>::default();
        for (state, n) in [
            ("new", c.new),
            ("sending", c.sending),
            ("awaiting_clearing", c.awaiting_clearing),
            ("pseudonymised", c.pseudonymised),
            ("rejected", c.rejected),
        ] {
            records
                .get_or_create(&[("state", state)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        r.register("records", "Local records by registration state", records);
        let pseudonyms = Gauge::<i64>::default();
        pseudonyms.set(i64::try_from(c.with_pseudonym).unwrap_or(i64::MAX));
        r.register(
            "pseudonyms",
            "Local records whose pseudonym is known",
            pseudonyms,
        );
    }
    if let Ok(blocked) = store.registration_blocked() {
        let g = Gauge::<i64>::default();
        g.set(i64::from(blocked.is_some()));
        r.register(
            "registration_blocked",
            "1 while registration is paused because the fTTP refused whole requests (wrong study or target, the `all` error shape); `ttp-agent status` names the cause",
            g,
        );
        if let Some(b) = blocked {
            let since = Gauge::<i64>::default();
            since.set(b.since.timestamp());
            r.register_with_unit(
                "registration_blocked_since_timestamp",
                "When the current cause of the paused registration was first seen (Unix time)",
                Unit::Seconds,
                since,
            );
        }
    }
    if let Ok(Some(t)) = last_ok {
        let g = Gauge::<i64>::default();
        g.set(t.timestamp());
        r.register_with_unit(
            "last_successful_poll_timestamp",
            "When the last poll cycle succeeded (Unix time)",
            Unit::Seconds,
            g,
        );
    }
    if let Ok(pending) = pending {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
        r.register(
            "webhook_pending",
            "Alerts waiting to be delivered to the webhook",
            g,
        );
    }
    if let Some(client) = &state.client {
        register_client(&mut r, &client.metrics());
    }
    r
}

fn register_client(r: &mut Registry, snap: &ClientMetricsSnapshot) {
    // Fresh counters set to the client's totals: the client owns the monotonic numbers.
    let requests = Family::<Labels2, Counter>::default();
    for op in Operation::ALL {
        for status in StatusClass::ALL {
            requests
                .get_or_create(&[("operation", op_label(op)), ("status", status.label())])
                .inc_by(snap.requests(op, status));
        }
    }
    r.register(
        "fttp_requests",
        "HTTP requests to the fTTP (every attempt), by operation and status class (none: no response)",
        requests,
    );
    let retries = Family::<Label, Counter>::default();
    for op in Operation::ALL {
        retries
            .get_or_create(&[("operation", op_label(op))])
            .inc_by(snap.retries(op));
    }
    r.register(
        "fttp_retries",
        "Requests to the fTTP sent again after a failed attempt, by operation",
        retries,
    );
}

fn op_label(op: Operation) -> &'static str {
    op.name().trim_start_matches('$')
}

/// The event metrics alone, as a complete exposition (for tests and tools that have no state).
pub fn render_events(metrics: &AgentMetrics) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    encode_registry(&mut out, &metrics.registry)?;
    encode_eof(&mut out)?;
    Ok(out)
}

/// The whole exposition.
pub fn render(state: &AdminState) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(8 * 1024);
    encode_registry(&mut out, &state.metrics.registry)?;
    encode_registry(&mut out, &state_registry(state, Utc::now()))?;
    encode_eof(&mut out)?;
    Ok(out)
}

pub async fn scrape(State(state): State<Arc<AdminState>>) -> Response {
    match tokio::task::spawn_blocking(move || render(&state)).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attention, TaskState};
    use ttp_proto::{SendIdatSubject, TaskKind};

    fn task(key: &str, kind: TaskKind, expires_in_h: Option<i64>, state: TaskState) -> TaskRecord {
        let now = Utc::now();
        let mut rec = crate::testkit::task(key, kind, state, now);
        rec.task.expires = expires_in_h.map(|h| now + chrono::Duration::hours(h));
        rec
    }

    fn send_idat(id: &str) -> TaskKind {
        TaskKind::SendIdat {
            task_id: id.into(),
            subject: SendIdatSubject::Pseudonym("p".into()),
            elements: vec![],
        }
    }

    #[test]
    fn gauges_count_open_tasks_by_type_and_state_and_find_the_earliest_deadline() {
        let now = Utc::now();
        let tasks = vec![
            task("a", send_idat("a"), Some(10), TaskState::Received),
            task("b", send_idat("b"), Some(100), TaskState::Received),
            task(
                "c",
                TaskKind::Unknown {
                    name: "weird-name-from-the-wire".into(),
                    raw: serde_json::Value::Null,
                },
                Some(5),
                TaskState::NeedsAttention {
                    reason: Attention::UnknownTaskType("weird-name-from-the-wire".into()),
                },
            ),
            // Finished tasks are not open, however close their deadline was.
            task("d", send_idat("d"), Some(1), TaskState::Done { at: now }),
            task(
                "e",
                send_idat("e"),
                None,
                TaskState::RetryWait { next_at: now },
            ),
        ];
        let g = task_gauges(&tasks, now, chrono::Duration::hours(48));
        assert_eq!(g.open[&("send_idat", "received")], 2);
        assert_eq!(g.open[&("send_idat", "retry-wait")], 1);
        assert_eq!(g.open[&("unknown", "needs-attention")], 1);
        assert_eq!(
            g.open[&("repeat_request", "in-doubt")],
            0,
            "zeros are present"
        );
        assert_eq!(g.in_warning_window, 2);
        let earliest = g.earliest_expiry_secs.unwrap();
        assert!((4 * 3600 - 5..=5 * 3600).contains(&earliest), "{earliest}");
    }

    #[test]
    fn events_are_counted_by_type_and_appear_in_the_exposition() {
        let m = AgentMetrics::new();
        m.task_event(TaskEvent::Done, "send_idat");
        m.task_event(TaskEvent::Done, "send_idat");
        m.task_event(TaskEvent::Expired, "repeat_request");
        m.cycle_finished(&Err(CycleError::Auth("401".into())), 0.3);
        m.cycle_finished(&Err(CycleError::ShuttingDown), 0.3);
        let mut out = String::new();
        encode_registry(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("ttp_agent_tasks_done_total{task_type=\"send_idat\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("ttp_agent_tasks_expired_total{task_type=\"repeat_request\"} 1\n"));
        assert!(
            out.contains("ttp_agent_tasks_received_total{task_type=\"dic_psn_available\"} 0\n")
        );
        assert!(out.contains("ttp_agent_poll_errors_total{class=\"auth\"} 1\n"));
        assert!(
            out.contains("ttp_agent_poll_duration_seconds_count 1\n"),
            "{out}"
        );
        assert!(out.contains("ttp_agent_build_info{version="));
    }
}
