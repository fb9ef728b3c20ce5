//! `GET /api/status[?days=N]`: the status report as JSON, with what only the daemon knows.
//!
//! The same [`StatusReport`] that `ttp-agent status --json` prints (that command asks this
//! endpoint when the daemon holds the store), plus [`DaemonInfo`]: version, start time,
//! readiness and the last cycle's error. `days` (1 to 366, default 14) is the history shown.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AdminState, DEFAULT_HISTORY_DAYS, health};
use crate::status::{self, DaemonInfo, StatusReport};

/// The longest history one request may ask for.
pub const MAX_HISTORY_DAYS: u32 = 366;

#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    days: Option<u32>,
}

/// The report the daemon serves.
pub fn report(state: &AdminState, days: u32) -> Result<StatusReport, crate::store::StoreError> {
    let mut report = status::build(&state.store, state.settings.warn_before_expiry, days)?;
    report.approvals_required = state.settings.approvals_required;
    let view = state.health.view();
    let readiness = health::readiness(state);
    report.daemon = Some(DaemonInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: state.started_at,
        study: state.site.study.clone(),
        target: state.site.target.clone(),
        ready: readiness.is_ready(),
        not_ready_reason: (!readiness.is_ready()).then(|| readiness.reason().to_string()),
        last_cycle_at: view.last_cycle_at,
        last_cycle_class: view.last_failure.as_ref().map(|f| f.class.to_owned()),
        last_cycle_error: view.last_failure.map(|f| f.message),
    });
    Ok(report)
}

pub async fn status(
    State(state): State<Arc<AdminState>>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let days = q
        .days
        .unwrap_or(DEFAULT_HISTORY_DAYS)
        .clamp(1, MAX_HISTORY_DAYS);
    match tokio::task::spawn_blocking(move || report(&state, days)).await {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "error": format!("the store cannot be read: {e}"),
            })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(serde_json::json!({ "error": format!("the status report failed: {e}") })),
        )
            .into_response(),
    }
}
