//! What the simulator observed, for tests and benchmarks to assert on.

use std::collections::BTreeMap;

use serde::Serialize;

/// A snapshot of the simulator's counters. Task type keys are the wire names
/// (`send_idat`, `repeat_request`, `dic_psn_available`); operation keys the paths' last
/// segment (`$requestTasks`, `metadata`, or `unknown` for anything not routed).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SimStats {
    pub requests_by_op: BTreeMap<String, u64>,
    /// Statuses actually sent (a dropped connection sends none; a truncated body counts
    /// under its status line's status).
    pub status_counts: BTreeMap<u16, u64>,
    pub faults_injected: u64,
    /// Of `faults_injected`, those that struck after the request had been processed.
    pub faults_after_processing: u64,
    /// Filters registered for the first time.
    pub registrations: u64,
    /// `$requestPsnFromBfWorkflow` entries for a filter already known (other than the
    /// resend a `repeat_request` asked for). Expected after lost responses; not an error.
    pub duplicate_registrations: u64,
    /// Accepted `$providePatientData` calls.
    pub provide_ok: u64,
    /// `$providePatientData` for a task already completed. Must stay 0 for a correct agent.
    pub duplicate_provides: u64,
    /// `$providePatientData` for a task that had expired (answered 404; a race, not a bug).
    pub provides_after_expiry: u64,
    /// What a site did wrong in `$providePatientData` (elements other than requested,
    /// forbidden fields, wrong profile, unknown task id, wrong target). The first
    /// [`MAX_VIOLATIONS_KEPT`] are kept; `provide_violations_total` counts all.
    pub provide_violations: Vec<String>,
    pub provide_violations_total: u64,
    pub tasks_raised_by_type: BTreeMap<String, u64>,
    /// `send_idat` answered, `repeat_request` followed by the resend, `dic_psn_available`
    /// listed its `dic_listings` times.
    pub tasks_completed_by_type: BTreeMap<String, u64>,
    pub tasks_expired_by_type: BTreeMap<String, u64>,
    pub clearings_started: u64,
    /// Clearings that ended with a pseudonym (and a `dic_psn_available` task).
    pub clearings_finished: u64,
    /// Clearings ended by an expired task.
    pub clearings_aborted: u64,
    pub max_requests_in_any_1s_window: u64,
    pub max_concurrent_requests: u64,
    pub auth_failures: u64,
    /// Requests to the OAuth2 token endpoint, and of those the ones refused for wrong client
    /// credentials.
    pub oauth_token_requests: u64,
    pub oauth_token_refusals: u64,
}

/// How many violation messages are kept; a badly broken agent must not grow the simulator
/// without bound.
pub const MAX_VIOLATIONS_KEPT: usize = 1000;

pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}
