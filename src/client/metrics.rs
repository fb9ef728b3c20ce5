//! Request counters for `/metrics`: attempts by operation and HTTP status class, and retries.
//!
//! Lock-free atomics in a fixed grid: recording is on every request path, reading is rare.
//! Every (operation, status class) pair is always reported, zeros included, so the series
//! exist from start-up and rate queries over them behave.

use std::sync::atomic::{AtomicU64, Ordering};

use super::classify::Operation;

/// The class of an attempt's outcome as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 3xx (never followed).
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx and anything above.
    ServerError,
    /// No response: connect failure, timeout, reset (1xx as final status count here too).
    NoResponse,
}

impl StatusClass {
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Success,
        StatusClass::Redirect,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::NoResponse,
    ];

    pub fn of(status: Option<u16>) -> StatusClass {
        match status {
            Some(200..=299) => StatusClass::Success,
            Some(300..=399) => StatusClass::Redirect,
            Some(400..=499) => StatusClass::ClientError,
            Some(500..) => StatusClass::ServerError,
            Some(_) | None => StatusClass::NoResponse,
        }
    }

    /// A metric label value.
    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Success => "2xx",
            StatusClass::Redirect => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::NoResponse => "none",
        }
    }

    fn index(self) -> usize {
        match self {
            StatusClass::Success => 0,
            StatusClass::Redirect => 1,
            StatusClass::ClientError => 2,
            StatusClass::ServerError => 3,
            StatusClass::NoResponse => 4,
        }
    }
}

/// Attempts for one (operation, status class) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestCount {
    pub op: Operation,
    pub status: StatusClass,
    pub count: u64,
}

/// A point-in-time copy of the client's counters (monotonic since start-up).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientMetricsSnapshot {
    /// Every attempt (retries included), for every operation × status class, in
    /// [`Operation::ALL`] × [`StatusClass::ALL`] order.
    pub requests: Vec<RequestCount>,
    /// Retries (attempts after the first) per operation, in [`Operation::ALL`] order.
    pub retries: Vec<(Operation, u64)>,
}

impl ClientMetricsSnapshot {
    pub fn requests(&self, op: Operation, status: StatusClass) -> u64 {
        self.requests
            .iter()
            .find(|c| c.op == op && c.status == status)
            .map_or(0, |c| c.count)
    }

    pub fn retries(&self, op: Operation) -> u64 {
        self.retries
            .iter()
            .find(|(o, _)| *o == op)
            .map_or(0, |(_, n)| *n)
    }
}

const OPS: usize = Operation::ALL.len();
const CLASSES: usize = StatusClass::ALL.len();

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    requests: [[AtomicU64; CLASSES]; OPS],
    retries: [AtomicU64; OPS],
}

impl Metrics {
    pub(crate) fn record(&self, op: Operation, status: Option<u16>) {
        self.requests[op.index()][StatusClass::of(status).index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_retry(&self, op: Operation) {
        self.retries[op.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ClientMetricsSnapshot {
        let requests = Operation::ALL
            .into_iter()
            .flat_map(|op| {
                StatusClass::ALL
                    .into_iter()
                    .map(move |status| RequestCount {
                        op,
                        status,
                        count: self.requests[op.index()][status.index()].load(Ordering::Relaxed),
                    })
            })
            .collect();
        let retries = Operation::ALL
            .into_iter()
            .map(|op| (op, self.retries[op.index()].load(Ordering::Relaxed)))
            .collect();
        ClientMetricsSnapshot { requests, retries }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_fall_into_their_classes() {
        assert_eq!(StatusClass::of(Some(204)), StatusClass::Success);
        assert_eq!(StatusClass::of(Some(302)), StatusClass::Redirect);
        assert_eq!(StatusClass::of(Some(429)), StatusClass::ClientError);
        assert_eq!(StatusClass::of(Some(512)), StatusClass::ServerError);
        assert_eq!(StatusClass::of(Some(101)), StatusClass::NoResponse);
        assert_eq!(StatusClass::of(None), StatusClass::NoResponse);
    }

    #[test]
    fn snapshot_reports_every_pair_and_counts_separately() {
        let metrics = Metrics::default();
        metrics.record(Operation::RequestTasks, Some(200));
        metrics.record(Operation::RequestTasks, Some(200));
        metrics.record(Operation::RequestTasks, None);
        metrics.record(Operation::ProvidePatientData, Some(422));
        metrics.record_retry(Operation::RequestTasks);
        let snap = metrics.snapshot();
        assert_eq!(snap.requests.len(), OPS * CLASSES);
        assert_eq!(
            snap.requests(Operation::RequestTasks, StatusClass::Success),
            2
        );
        assert_eq!(
            snap.requests(Operation::RequestTasks, StatusClass::NoResponse),
            1
        );
        assert_eq!(
            snap.requests(Operation::ProvidePatientData, StatusClass::ClientError),
            1
        );
        assert_eq!(
            snap.requests(Operation::RequestPsn, StatusClass::Success),
            0
        );
        assert_eq!(snap.retries(Operation::RequestTasks), 1);
        assert_eq!(snap.retries(Operation::Metadata), 0);
    }
}
