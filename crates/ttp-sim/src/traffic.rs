//! Counters about the traffic itself (as opposed to the protocol): requests per operation,
//! statuses sent, faults, authentication failures, and the peak request rate.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::stats::{SimStats, bump};

#[derive(Default)]
pub(crate) struct Traffic {
    requests_by_op: BTreeMap<String, u64>,
    status_counts: BTreeMap<u16, u64>,
    pub(crate) faults_injected: u64,
    pub(crate) faults_after_processing: u64,
    pub(crate) auth_failures: u64,
    window: RateWindow,
}

impl Traffic {
    pub(crate) fn request(&mut self, op: &str, at: Instant) {
        bump(&mut self.requests_by_op, op);
        self.window.record(at);
    }

    pub(crate) fn status(&mut self, status: u16) {
        *self.status_counts.entry(status).or_insert(0) += 1;
    }

    /// Copies these counters into a snapshot.
    pub(crate) fn fill(&self, stats: &mut SimStats) {
        stats.requests_by_op = self.requests_by_op.clone();
        stats.status_counts = self.status_counts.clone();
        stats.faults_injected = self.faults_injected;
        stats.faults_after_processing = self.faults_after_processing;
        stats.auth_failures = self.auth_failures;
        stats.max_requests_in_any_1s_window = self.window.max;
    }
}

/// The largest number of requests that arrived within any one second.
///
/// Keeping the arrival times of the last second and checking the count at each arrival is
/// exact: a busiest window can always be shifted until it ends at an arrival. Memory is
/// bounded by the peak rate itself.
#[derive(Default)]
struct RateWindow {
    recent: VecDeque<Instant>,
    max: u64,
}

impl RateWindow {
    const SPAN: Duration = Duration::from_secs(1);

    fn record(&mut self, at: Instant) {
        while let Some(&oldest) = self.recent.front() {
            if at.saturating_duration_since(oldest) < Self::SPAN {
                break;
            }
            self.recent.pop_front();
        }
        self.recent.push_back(at);
        self.max = self.max.max(self.recent.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_the_busiest_second_exactly() {
        let start = Instant::now();
        let ms = |n: u64| start + Duration::from_millis(n);
        let mut window = RateWindow::default();
        // 3 requests in [0, 900] ms, then 4 in [1500, 2400] ms: the busiest second holds 4.
        for t in [0, 400, 900, 1500, 1800, 2100, 2400] {
            window.record(ms(t));
        }
        assert_eq!(window.max, 4);
        // Exactly one second apart is two different windows.
        let mut window = RateWindow::default();
        window.record(ms(0));
        window.record(ms(1000));
        assert_eq!(window.max, 1);
    }
}
