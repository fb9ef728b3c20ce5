//! `/healthz` and `/readyz`.
//!
//! * **Healthy** means the process is alive and serving: `/healthz` answers `200 ok` without
//!   looking at anything else (a liveness probe must not fail because the fTTP is down, or the
//!   agent would be restarted for someone else's outage).
//! * **Ready** means the agent is doing its job. `/readyz` answers 200 when all of these hold,
//!   and 503 with the first reason that fails otherwise:
//!   1. the daemon is not shutting down;
//!   2. the store answers a read;
//!   3. the last poll cycle did not fail because the fTTP refused the agent's credentials
//!      (that never heals by itself: a person must fix the API key);
//!   4. a poll has succeeded since the process started (before that, the agent has not shown
//!      it can reach the fTTP: a start-up probe waits for this), and the last successful poll
//!      (as recorded in the store) is at most `[admin] ready_window` old.
//!
//! The decision is the pure function [`assess`]; [`Health`] only remembers what the scheduler
//! reported through the hooks.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::AdminState;
use crate::agent::{CycleError, CycleReport};
use crate::store::META_LAST_POLL_OK;

/// The last failed cycle, as the hooks saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CycleFailure {
    /// [`CycleError::class`].
    pub class: &'static str,
    pub message: String,
    pub at: DateTime<Utc>,
}

/// What the scheduler reported since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthView {
    /// Cycles finished since the process started (successful or not; shutdowns excluded).
    pub cycles: u64,
    /// Cycles that succeeded since the process started.
    pub successes: u64,
    pub last_cycle_at: Option<DateTime<Utc>>,
    /// The last cycle's failure; `None` after a successful one.
    pub last_failure: Option<CycleFailure>,
    pub stopping: bool,
}

/// Shared, updated by the hooks, read by `/readyz`, `/api/status` and the page.
#[derive(Debug, Default)]
pub struct Health {
    view: Mutex<HealthView>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    fn lock(&self) -> MutexGuard<'_, HealthView> {
        // The view is plain data, consistent after every assignment: a panic elsewhere while
        // holding the lock cannot leave it half-written.
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn view(&self) -> HealthView {
        self.lock().clone()
    }

    /// Records a finished cycle. An interrupted one (shutdown) says nothing about health.
    pub fn cycle_finished(&self, result: &Result<CycleReport, CycleError>, at: DateTime<Utc>) {
        if matches!(result, Err(CycleError::ShuttingDown)) {
            return;
        }
        let mut v = self.lock();
        v.cycles += 1;
        v.successes += u64::from(result.is_ok());
        v.last_cycle_at = Some(at);
        v.last_failure = result.as_ref().err().map(|e| CycleFailure {
            class: e.class(),
            message: e.to_string(),
            at,
        });
    }

    pub fn stopping(&self) {
        self.lock().stopping = true;
    }
}

/// The answer of `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    Ready(String),
    NotReady(String),
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready(_))
    }

    pub fn reason(&self) -> &str {
        match self {
            Readiness::Ready(r) | Readiness::NotReady(r) => r,
        }
    }
}

/// The readiness rules of the module docs. `last_ok` is the store's record of the last
/// successful poll, or the store's error.
pub fn assess(
    view: &HealthView,
    last_ok: Result<Option<DateTime<Utc>>, String>,
    window: Duration,
    now: DateTime<Utc>,
) -> Readiness {
    if view.stopping {
        return Readiness::NotReady("the agent is shutting down".into());
    }
    let last_ok = match last_ok {
        Ok(t) => t,
        Err(e) => return Readiness::NotReady(format!("the store cannot be read: {e}")),
    };
    if let Some(f) = &view.last_failure
        && f.class == "auth"
    {
        return Readiness::NotReady(format!(
            "the fTTP refused the agent's credentials at the last poll ({}); fix the API key or Basic-auth settings and restart",
            f.at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    if view.successes == 0 {
        return Readiness::NotReady(match view.cycles {
            0 => "starting: the first poll has not finished yet; ready once one succeeds".into(),
            n => format!(
                "starting: none of the {n} poll(s) since the start has succeeded yet; ready once \
                 one does{}",
                failure_suffix(view)
            ),
        });
    }
    let window_text = humantime::format_duration(window).to_string();
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    match last_ok {
        Some(t) if now - t <= window => Readiness::Ready(format!(
            "last successful poll at {}",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        Some(t) => Readiness::NotReady(format!(
            "no successful poll since {} (more than {window_text} ago){}",
            t.format("%Y-%m-%d %H:%M:%S UTC"),
            failure_suffix(view)
        )),
        None => Readiness::NotReady(format!("no poll has succeeded yet{}", failure_suffix(view))),
    }
}

fn failure_suffix(view: &HealthView) -> String {
    view.last_failure
        .as_ref()
        .map_or(String::new(), |f| format!("; last error: {}", f.message))
}

/// A paused registration (the fTTP refused whole requests) makes a ready agent not ready:
/// records wait and only a person (configuration, the fTTP operator) can change that. Pure.
pub fn assess_registration(
    readiness: Readiness,
    blocked: Option<&crate::domain::RegistrationBlocked>,
) -> Readiness {
    match (readiness, blocked) {
        (Readiness::Ready(_), Some(b)) => Readiness::NotReady(format!(
            "registration paused since {}: {}",
            b.since.format("%Y-%m-%d %H:%M:%S UTC"),
            b.failure
        )),
        (r, _) => r,
    }
}

/// The current readiness of the daemon behind `state`.
pub fn readiness(state: &AdminState) -> Readiness {
    let last_ok = state
        .store
        .meta_time(META_LAST_POLL_OK)
        .map_err(|e| e.to_string());
    let r = assess(
        &state.health.view(),
        last_ok,
        state.settings.ready_window,
        Utc::now(),
    );
    let blocked = state.store.registration_blocked().ok().flatten();
    assess_registration(r, blocked.as_ref())
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct ReadyBody<'a> {
    status: &'static str,
    reason: &'a str,
}

pub async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let r = match tokio::task::spawn_blocking(move || readiness(&state)).await {
        Ok(r) => r,
        Err(e) => Readiness::NotReady(format!("the readiness check failed: {e}")),
    };
    let (status, word) = if r.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    };
    (
        status,
        axum::Json(ReadyBody {
            status: word,
            reason: r.reason(),
        }),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn failure(class: &'static str) -> Option<CycleFailure> {
        Some(CycleFailure {
            class,
            message: format!("{class} went wrong"),
            at: at("2026-06-01T10:00:00Z"),
        })
    }

    #[test]
    fn a_fresh_daemon_is_not_ready_before_its_first_successful_poll() {
        let now = at("2026-06-01T10:00:00Z");
        let fresh = HealthView::default();
        // Even with a store whose last success is recent (a restart), or none at all.
        for last in [None, Some(at("2026-06-01T09:59:00Z"))] {
            let r = assess(&fresh, Ok(last), HOUR, now);
            assert!(!r.is_ready(), "{r:?}");
            assert!(r.reason().contains("first poll has not finished"), "{r:?}");
        }
        let failed_once = HealthView {
            cycles: 1,
            last_failure: failure("fetch"),
            ..HealthView::default()
        };
        let r = assess(
            &failed_once,
            Ok(Some(at("2026-06-01T09:59:00Z"))),
            HOUR,
            now,
        );
        assert!(!r.is_ready(), "{r:?}");
        assert!(r.reason().contains("fetch went wrong"), "{r:?}");
    }

    #[test]
    fn readiness_follows_the_last_success_within_the_window() {
        let now = at("2026-06-01T10:00:00Z");
        let polled = HealthView {
            cycles: 3,
            successes: 3,
            ..HealthView::default()
        };
        let recent = Ok(Some(at("2026-06-01T09:30:00Z")));
        assert!(assess(&polled, recent.clone(), HOUR, now).is_ready());
        let old = Ok(Some(at("2026-06-01T08:59:59Z")));
        let r = assess(&polled, old, HOUR, now);
        assert!(!r.is_ready());
        assert!(r.reason().contains("2026-06-01 08:59:59"), "{r:?}");
        assert!(r.reason().contains("1h"), "{r:?}");
        // A fetch failure does not matter while the last success is recent...
        let failing = HealthView {
            cycles: 4,
            successes: 3,
            last_failure: failure("fetch"),
            ..HealthView::default()
        };
        assert!(assess(&failing, recent, HOUR, now).is_ready());
        // ...and is named once it does.
        let r = assess(&failing, Ok(None), HOUR, now);
        assert!(!r.is_ready());
        assert!(r.reason().contains("fetch went wrong"), "{r:?}");
    }

    #[test]
    fn refused_credentials_the_store_and_shutdown_make_it_not_ready_at_once() {
        let now = at("2026-06-01T10:00:00Z");
        let recent = Ok(Some(at("2026-06-01T09:59:00Z")));
        let auth = HealthView {
            cycles: 1,
            last_failure: failure("auth"),
            ..HealthView::default()
        };
        let r = assess(&auth, recent.clone(), HOUR, now);
        assert!(!r.is_ready());
        assert!(r.reason().contains("credentials"), "{r:?}");

        let fine = HealthView {
            cycles: 1,
            successes: 1,
            ..HealthView::default()
        };
        let r = assess(&fine, Err("disk on fire".into()), HOUR, now);
        assert!(
            !r.is_ready() && r.reason().contains("disk on fire"),
            "{r:?}"
        );

        let stopping = HealthView {
            stopping: true,
            ..fine
        };
        assert!(!assess(&stopping, recent, HOUR, now).is_ready());
    }

    #[test]
    fn the_hooks_record_failures_and_clear_them_on_success_but_ignore_shutdowns() {
        let h = Health::new();
        let now = at("2026-06-01T10:00:00Z");
        h.cycle_finished(&Err(CycleError::Auth("401".into())), now);
        assert_eq!(h.view().last_failure.map(|f| f.class), Some("auth"));
        h.cycle_finished(&Err(CycleError::ShuttingDown), now);
        assert_eq!(h.view().cycles, 1);
        assert!(h.view().last_failure.is_some());
        h.cycle_finished(&Ok(CycleReport::default()), now);
        assert_eq!(h.view().cycles, 2);
        assert_eq!(h.view().last_failure, None);
    }

    #[test]
    fn a_paused_registration_makes_a_ready_agent_not_ready() {
        let failure = crate::domain::WholeRequestFailure {
            cause: "all".into(),
            status: Some(200),
            code: Some("not-found".into()),
            display: Some("unknown study".into()),
            detail: "whole request failed".into(),
        };
        let (b, _) = crate::domain::RegistrationBlocked::after_failure(
            None,
            failure,
            "s",
            "t",
            at("2026-06-01T09:00:00Z"),
            |_| at("2026-06-01T09:01:00Z"),
        );
        let r = assess_registration(Readiness::Ready("ok".into()), Some(&b));
        assert!(!r.is_ready());
        assert!(r.reason().contains("unknown study"), "{r:?}");
        assert!(assess_registration(Readiness::Ready("ok".into()), None).is_ready());
        let other = Readiness::NotReady("store".into());
        assert_eq!(assess_registration(other.clone(), Some(&b)), other);
    }
}
