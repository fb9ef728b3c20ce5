//! Alerts: telling people in time that a task needs them.
//!
//! Two conditions raise an alert for a task:
//!
//! * `expiring_soon`: an open task's deadline is within `[admin] warn_before_expiry` (48 h by
//!   default). Missing it aborts the patient's clearing at the fTTP.
//! * `needs_attention`: the agent cannot answer the task without a person (unknown record,
//!   missing element, rejected answer, unknown task type).
//!
//! An alert is raised **once per task and condition**: a WARN log line, the
//! `ttp_agent_alerts_total{kind}` counter and, with `[admin] webhook_url`, a JSON POST:
//!
//! ```json
//! {"kind": "expiring_soon", "task_key": "send_idat/4711", "task_type": "send_idat",
//!  "expires": "2026-06-03T10:00:00Z", "reason": null, "site_target": "dic_x",
//!  "study": "mii", "at": "2026-06-01T10:00:00Z", "text": "ttp-agent (mii, dic_x): ..."}
//! ```
//!
//! (`text` is the same in plain words; chat tools such as Mattermost or Slack show it as is.)
//!
//! # Once, across restarts
//!
//! Raising writes a mark (kind, task key) and the webhook delivery into the store in one
//! atomic batch, then flushes ([`crate::store::Store::record_alert`]). A mark is forgotten when
//! its condition no longer holds (the task was answered, expired, purged, or its deadline was
//! extended), so a condition that comes back is raised again.
//!
//! # When conditions are checked
//!
//! After every poll cycle (the hooks poke the evaluator), and at the moment the next open
//! task's deadline enters the warning window — the evaluator sleeps on exactly that timer, so
//! an alert is not late by a poll interval and an idle agent does not wake up for nothing.
//!
//! # Delivery
//!
//! Deliveries wait in the store until the webhook answers 2xx (the sending, the back-off and
//! the URL's redaction are `crate::webhook`'s). A failed attempt (connection refused, timeout,
//! any other status) is retried after a pause drawn from up to 10 s, doubling up to 1 h, or
//! what the receiver's `Retry-After` asks for; after [`WebhookSettings::give_up_after`] (7
//! days, by which time the task's deadline has passed anyway) the delivery is dropped with an
//! ERROR log line. Pending, failing and dropped deliveries are shown by `status`, the page and
//! `/metrics`.
//!
//! The payload names the task by its key and type, never a patient: no IDAT, filter or
//! pseudonym. The webhook URL often embeds a secret; it is never logged (only scheme and
//! host), and error messages leave it out.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;

use super::metrics::AgentMetrics;
use super::{AdminError, Site};
use crate::agent::Shutdown;
use crate::domain::{Attention, TaskRecord, TaskState};
use crate::store::{AlertMark, Store, StoreError};
use crate::webhook::Webhook;
pub use crate::webhook::WebhookSettings;

/// The condition an alert is about. Its name is what the webhook's `kind`, the store's mark
/// and the metric's label say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An open task's deadline is within the warning window.
    ExpiringSoon,
    /// The agent cannot answer the task without a person.
    NeedsAttention,
}

impl AlertKind {
    /// Every alert kind.
    pub const ALL: [AlertKind; 2] = [AlertKind::ExpiringSoon, AlertKind::NeedsAttention];

    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::ExpiringSoon => "expiring_soon",
            AlertKind::NeedsAttention => "needs_attention",
        }
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wire names of the kinds (what a receiver sees in `kind`).
pub const EXPIRING_SOON: &str = AlertKind::ExpiringSoon.as_str();
pub const NEEDS_ATTENTION: &str = AlertKind::NeedsAttention.as_str();

/// One alert to raise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub kind: AlertKind,
    pub task_key: String,
    /// The task type as the fTTP named it.
    pub task_type: String,
    pub expires: Option<DateTime<Utc>>,
    /// Why a person is needed (needs-attention alerts).
    pub reason: Option<String>,
}

/// The conditions that hold for a task now.
fn conditions(rec: &TaskRecord, now: DateTime<Utc>, warn: chrono::Duration) -> Vec<AlertKind> {
    if rec.state.is_final() {
        return Vec::new();
    }
    let mut kinds = Vec::new();
    if rec
        .seconds_to_deadline(now)
        .is_some_and(|s| s <= warn.num_seconds())
    {
        kinds.push(AlertKind::ExpiringSoon);
    }
    // A task a person already marked handled needs nobody any more.
    if let TaskState::NeedsAttention { reason } = &rec.state
        && *reason != Attention::Handled
    {
        kinds.push(AlertKind::NeedsAttention);
    }
    kinds
}

/// What to do now: alerts to raise (not yet marked), marks to forget (their condition no
/// longer holds), and when to look again by the clock. Pure. Marks are (kind, task key) as
/// stored: a kind this version does not know no longer holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evaluation {
    pub raise: Vec<Alert>,
    pub forget: Vec<(String, String)>,
    /// The earliest moment an open task's deadline enters the warning window.
    pub next_check: Option<DateTime<Utc>>,
}

pub fn evaluate(
    tasks: &[TaskRecord],
    marked: &HashSet<(String, String)>,
    now: DateTime<Utc>,
    warn: chrono::Duration,
) -> Evaluation {
    let mut eval = Evaluation::default();
    let mut holding: HashSet<(String, String)> = HashSet::new();
    for rec in tasks {
        for kind in conditions(rec, now, warn) {
            let id = (kind.as_str().to_string(), rec.key.0.clone());
            if !marked.contains(&id) {
                eval.raise.push(Alert {
                    kind,
                    task_key: rec.key.0.clone(),
                    task_type: crate::status::task_type(rec),
                    expires: rec.deadline(),
                    reason: match &rec.state {
                        TaskState::NeedsAttention { reason }
                            if kind == AlertKind::NeedsAttention =>
                        {
                            Some(reason.to_string())
                        }
                        _ => None,
                    },
                });
            }
            holding.insert(id);
        }
        if !rec.state.is_final()
            && let Some(expires) = rec.deadline()
        {
            let enters = expires - warn;
            if enters > now {
                eval.next_check = Some(eval.next_check.map_or(enters, |n| n.min(enters)));
            }
        }
    }
    let mut forget: Vec<(String, String)> = marked.difference(&holding).cloned().collect();
    forget.sort();
    eval.forget = forget;
    // Most urgent first, so the log reads in the order to act.
    eval.raise.sort_by(|a, b| {
        a.expires
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
            .cmp(&b.expires.unwrap_or(DateTime::<Utc>::MAX_UTC))
            .then(a.task_key.cmp(&b.task_key))
            .then(a.kind.cmp(&b.kind))
    });
    eval
}

/// The webhook's JSON body.
#[derive(Clone, Debug, Serialize)]
pub struct Payload<'a> {
    pub kind: AlertKind,
    pub task_key: &'a str,
    pub task_type: &'a str,
    pub expires: Option<DateTime<Utc>>,
    pub reason: Option<&'a str>,
    pub site_target: &'a str,
    pub study: &'a str,
    pub at: DateTime<Utc>,
    pub text: String,
}

/// The alert in one sentence, for the log and the webhook's `text`.
pub fn describe(alert: &Alert, now: DateTime<Utc>) -> String {
    let deadline = alert.expires.map(|e| {
        format!(
            "{} (in {})",
            e.format("%Y-%m-%d %H:%M UTC"),
            crate::status::human_duration((e - now).num_seconds())
        )
    });
    match alert.kind {
        AlertKind::ExpiringSoon => format!(
            "{} task {} expires {}; if it is not answered by then, the patient's clearing at the fTTP is aborted",
            alert.task_type,
            alert.task_key,
            deadline.unwrap_or_else(|| "soon".into())
        ),
        AlertKind::NeedsAttention => format!(
            "{} task {} needs a person: {}{}",
            alert.task_type,
            alert.task_key,
            alert.reason.as_deref().unwrap_or("see `ttp-agent status`"),
            deadline.map_or(String::new(), |d| format!(" (deadline {d})"))
        ),
    }
}

/// What one delivery round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryRound {
    pub delivered: usize,
    pub failed: usize,
    pub dropped: usize,
    /// When the next pending delivery is due.
    pub next_due: Option<DateTime<Utc>>,
}

/// Raises alerts and delivers them. Shared by the hooks (poke after a cycle) and its loops.
pub struct Alerts {
    store: Arc<Store>,
    warn: chrono::Duration,
    site: Site,
    webhook: Option<Webhook>,
    metrics: Arc<AgentMetrics>,
    wake_evaluator: Notify,
    wake_delivery: Notify,
    /// One evaluation at a time (the loop, and tests calling [`Alerts::evaluate_now`]).
    evaluating: std::sync::Mutex<()>,
}

impl Alerts {
    pub fn new(
        store: Arc<Store>,
        warn: chrono::Duration,
        site: Site,
        webhook: Option<WebhookSettings>,
        metrics: Arc<AgentMetrics>,
    ) -> Result<Arc<Alerts>, AdminError> {
        let webhook = webhook
            .map(Webhook::new)
            .transpose()
            .map_err(|e| AdminError::Webhook(e.to_string()))?;
        Ok(Arc::new(Alerts {
            store,
            warn,
            site,
            webhook,
            metrics,
            wake_evaluator: Notify::new(),
            wake_delivery: Notify::new(),
            evaluating: std::sync::Mutex::new(()),
        }))
    }

    pub fn has_webhook(&self) -> bool {
        self.webhook.is_some()
    }

    /// Ask the evaluator loop to look now (after a poll cycle).
    pub fn poke(&self) {
        self.wake_evaluator.notify_one();
    }

    /// Evaluates the conditions over the stored tasks and raises what is new: log line,
    /// metric, mark (+ delivery), flushed. Returns the evaluation.
    pub fn evaluate_now(&self, now: DateTime<Utc>) -> Result<Evaluation, StoreError> {
        let _one = self.evaluating.lock().unwrap_or_else(|p| p.into_inner());
        let tasks = self.store.open_tasks_where(|_| true)?;
        let marks = self.store.alert_marks()?;
        let marked: HashSet<(String, String)> = marks
            .iter()
            .map(|m| (m.kind.clone(), m.task_key.clone()))
            .collect();
        let eval = evaluate(&tasks, &marked, now, self.warn);
        let stale: Vec<AlertMark> = marks
            .into_iter()
            .filter(|m| eval.forget.contains(&(m.kind.clone(), m.task_key.clone())))
            .collect();
        self.store.forget_alert_marks(&stale)?;
        for alert in &eval.raise {
            let text = describe(alert, now);
            tracing::warn!(
                alert = alert.kind.as_str(),
                task = %alert.task_key,
                task_type = %alert.task_type,
                expires = alert.expires.map(|e| e.to_rfc3339()),
                "{text}"
            );
            let body = match &self.webhook {
                None => None,
                Some(_) => Some(self.payload(alert, now, text)?),
            };
            self.store.record_alert(
                &AlertMark {
                    kind: alert.kind.as_str().to_string(),
                    task_key: alert.task_key.clone(),
                    at: now,
                },
                body.as_deref(),
            )?;
            self.metrics.alert_raised(alert.kind);
        }
        if !eval.raise.is_empty() || !stale.is_empty() {
            self.store.flush()?;
        }
        if !eval.raise.is_empty() && self.webhook.is_some() {
            self.wake_delivery.notify_one();
        }
        Ok(eval)
    }

    fn payload(
        &self,
        alert: &Alert,
        now: DateTime<Utc>,
        text: String,
    ) -> Result<String, StoreError> {
        let payload = Payload {
            kind: alert.kind,
            task_key: &alert.task_key,
            task_type: &alert.task_type,
            expires: alert.expires,
            reason: alert.reason.as_deref(),
            site_target: &self.site.target,
            study: &self.site.study,
            at: now,
            text: format!(
                "ttp-agent ({}, {}): {text}",
                self.site.study, self.site.target
            ),
        };
        serde_json::to_string(&payload).map_err(|e| StoreError::Codec {
            what: "alert payload",
            detail: e.to_string(),
        })
    }

    /// Evaluates after every poke and whenever a deadline enters the warning window, until
    /// shutdown.
    pub async fn run_evaluator(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            let this = Arc::clone(&self);
            let next = match tokio::task::spawn_blocking(move || this.evaluate_now(Utc::now()))
                .await
            {
                Ok(Ok(eval)) => eval.next_check,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "could not check for alerts; trying again after the next poll");
                    None
                }
                Err(e) => {
                    tracing::error!(error = %e, "the alert check failed");
                    None
                }
            };
            if !crate::webhook::wait(&self.wake_evaluator, &mut shutdown, until(next)).await {
                return;
            }
        }
    }

    /// Delivers pending alerts, retrying with backoff, until shutdown. A request in flight
    /// when shutdown comes is abandoned; its delivery stays queued (at least once).
    pub async fn run_delivery(self: Arc<Self>, mut shutdown: Shutdown) {
        loop {
            let round = tokio::select! {
                round = self.deliver_due(Utc::now()) => round,
                _ = shutdown.wait() => return,
            };
            let next = match round {
                Ok(round) => round.next_due,
                Err(e) => {
                    tracing::error!(error = %e, "could not read or update the webhook queue in the store");
                    Some(Utc::now() + chrono::Duration::minutes(1))
                }
            };
            if !crate::webhook::wait(&self.wake_delivery, &mut shutdown, until(next)).await {
                return;
            }
        }
    }

    /// One round: every pending delivery that is due is attempted once, oldest first.
    pub async fn deliver_due(&self, now: DateTime<Utc>) -> Result<DeliveryRound, StoreError> {
        let mut round = DeliveryRound::default();
        let Some(webhook) = &self.webhook else {
            return Ok(round);
        };
        let mut next_due: Option<DateTime<Utc>> = None;
        for mut d in self.store.pending_deliveries()? {
            if d.next_attempt > now {
                next_due = Some(next_due.map_or(d.next_attempt, |n| n.min(d.next_attempt)));
                continue;
            }
            let attempted_at = Utc::now();
            match webhook.post(d.body.clone()).await {
                Ok(()) => {
                    self.store.finish_delivery(d.id, false)?;
                    self.metrics.webhook_attempt("delivered");
                    round.delivered += 1;
                    tracing::info!(
                        delivery = d.id,
                        attempts = d.attempts + 1,
                        "alert delivered to the webhook"
                    );
                }
                Err(failure) => {
                    d.attempts += 1;
                    d.last_attempt = Some(attempted_at);
                    let age = (attempted_at - d.created_at).to_std().unwrap_or_default();
                    let error = failure.message;
                    if webhook.settings().gives_up(age) {
                        self.store.finish_delivery(d.id, true)?;
                        self.metrics.webhook_attempt("dropped");
                        round.dropped += 1;
                        tracing::error!(
                            delivery = d.id,
                            attempts = d.attempts,
                            webhook = %webhook.redacted_url(),
                            %error,
                            "gave up delivering an alert to the webhook; the condition is still shown by `ttp-agent status`"
                        );
                    } else {
                        let pause = webhook.settings().pause(d.attempts, failure.retry_after);
                        // A pause is at most `max_retry_after` (an hour by default).
                        let wait =
                            chrono::Duration::from_std(pause).unwrap_or(chrono::Duration::hours(1));
                        d.next_attempt = attempted_at + wait;
                        tracing::warn!(
                            delivery = d.id,
                            attempts = d.attempts,
                            webhook = %webhook.redacted_url(),
                            %error,
                            retry_at = %d.next_attempt,
                            "could not deliver an alert to the webhook; retrying"
                        );
                        d.last_error = Some(error);
                        self.store.update_delivery(&d)?;
                        self.metrics.webhook_attempt("failed");
                        round.failed += 1;
                        next_due = Some(next_due.map_or(d.next_attempt, |n| n.min(d.next_attempt)));
                    }
                }
            }
            self.store.flush()?;
        }
        round.next_due = next_due;
        Ok(round)
    }
}

/// How long until `at` (zero once past); `None` stays `None` (no time to wait for).
fn until(at: Option<DateTime<Utc>>) -> Option<std::time::Duration> {
    at.map(|t| (t - Utc::now()).to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, at};

    fn task(key: &str, expires: Option<&str>, state: TaskState) -> TaskRecord {
        let kind = testkit::send_idat(key, "p");
        let mut rec = testkit::task(key, kind, state, at("2026-06-01T00:00:00Z"));
        rec.task.expires = expires.map(at);
        rec
    }

    fn marks(ids: &[(&str, &str)]) -> HashSet<(String, String)> {
        ids.iter()
            .map(|(k, t)| (k.to_string(), t.to_string()))
            .collect()
    }

    const H48: chrono::Duration = chrono::Duration::hours(48);

    /// A release awaiting approval is alerted like any task close to its deadline (issue 15);
    /// a closed one (denied, withdrawn) raises nothing.
    /// What an evaluation raises: (kind, task key) per alert.
    fn raised(eval: &Evaluation) -> Vec<(AlertKind, &str)> {
        eval.raise
            .iter()
            .map(|a| (a.kind, a.task_key.as_str()))
            .collect()
    }

    #[test]
    fn a_task_awaiting_approval_near_its_deadline_is_alerted_and_a_closed_one_is_not() {
        let now = at("2026-06-01T12:00:00Z");
        let tasks = vec![
            task(
                "awaiting",
                Some("2026-06-02T12:00:00Z"),
                TaskState::AwaitingApproval,
            ),
            task(
                "denied",
                Some("2026-06-02T12:00:00Z"),
                TaskState::Closed {
                    at: now,
                    why: crate::domain::Closure::Denied {
                        by: "alice".into(),
                        reason: "no consent".into(),
                    },
                },
            ),
        ];
        let eval = evaluate(&tasks, &HashSet::new(), now, H48);
        let raised = raised(&eval);
        assert_eq!(raised, [(AlertKind::ExpiringSoon, "awaiting")]);
    }

    #[test]
    fn conditions_raise_once_and_marks_go_when_the_condition_does() {
        let now = at("2026-06-01T12:00:00Z");
        let tasks = vec![
            task("soon", Some("2026-06-02T12:00:00Z"), TaskState::Received),
            task("later", Some("2026-06-10T12:00:00Z"), TaskState::Received),
            task(
                "stuck",
                Some("2026-06-09T12:00:00Z"),
                TaskState::NeedsAttention {
                    reason: Attention::UnknownRecord,
                },
            ),
            task(
                "handled",
                None,
                TaskState::NeedsAttention {
                    reason: Attention::Handled,
                },
            ),
            task(
                "answered",
                Some("2026-06-01T13:00:00Z"),
                TaskState::Done { at: now },
            ),
        ];
        let eval = evaluate(&tasks, &HashSet::new(), now, H48);
        let raised = raised(&eval);
        assert_eq!(
            raised,
            [
                (AlertKind::ExpiringSoon, "soon"),
                (AlertKind::NeedsAttention, "stuck")
            ],
            "most urgent first; finished and handled tasks raise nothing"
        );
        assert!(
            eval.raise[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("no local record")
        );
        // The next task to enter the window is "stuck" (deadline − 48 h), before "later".
        assert_eq!(eval.next_check, Some(at("2026-06-07T12:00:00Z")));

        // Marked: nothing is raised again; a mark whose task was answered is forgotten.
        let marked = marks(&[
            (EXPIRING_SOON, "soon"),
            (NEEDS_ATTENTION, "stuck"),
            (EXPIRING_SOON, "answered"),
            (NEEDS_ATTENTION, "purged-long-ago"),
        ]);
        let eval = evaluate(&tasks, &marked, now, H48);
        assert!(eval.raise.is_empty(), "{eval:?}");
        assert_eq!(
            eval.forget,
            [
                (EXPIRING_SOON.to_string(), "answered".to_string()),
                (NEEDS_ATTENTION.to_string(), "purged-long-ago".to_string()),
            ]
        );
    }

    #[test]
    fn a_task_raises_expiring_soon_when_its_deadline_enters_the_window() {
        let tasks = vec![task(
            "t",
            Some("2026-06-05T00:00:00Z"),
            TaskState::RetryWait {
                next_at: at("2026-06-01T00:00:00Z"),
            },
        )];
        let before = evaluate(&tasks, &HashSet::new(), at("2026-06-02T23:59:59Z"), H48);
        assert!(before.raise.is_empty());
        assert_eq!(before.next_check, Some(at("2026-06-03T00:00:00Z")));
        let after = evaluate(&tasks, &HashSet::new(), at("2026-06-03T00:00:00Z"), H48);
        assert_eq!(after.raise.len(), 1);
        assert_eq!(after.next_check, None);
    }

    #[test]
    fn descriptions_name_the_task_and_the_time_left() {
        let now = at("2026-06-01T12:00:00Z");
        let text = describe(
            &Alert {
                kind: AlertKind::ExpiringSoon,
                task_key: "send_idat/7".into(),
                task_type: "send_idat".into(),
                expires: Some(at("2026-06-02T13:30:00Z")),
                reason: None,
            },
            now,
        );
        assert!(
            text.contains("send_idat/7") && text.contains("1d 1h"),
            "{text}"
        );
    }

    #[test]
    fn kinds_have_the_names_receivers_and_the_store_know() {
        for (kind, name) in [
            (AlertKind::ExpiringSoon, "expiring_soon"),
            (AlertKind::NeedsAttention, "needs_attention"),
        ] {
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
        assert_eq!(
            AlertKind::ALL.map(AlertKind::as_str),
            [EXPIRING_SOON, NEEDS_ATTENTION]
        );
    }
}
