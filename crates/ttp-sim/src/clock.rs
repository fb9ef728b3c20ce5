//! The simulator's notion of "now": the wall clock plus an offset tests can push forward.
//!
//! Task expiry is the one time-dependent behaviour of the dispatcher. Tests make tasks expire
//! by advancing this clock instead of sleeping, so they stay fast and deterministic. The clock
//! follows real time otherwise, because the agent compares `expires` with its own clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

pub(crate) struct SimClock {
    origin: Instant,
    origin_wall: DateTime<Utc>,
    /// Total of all `advance` calls, in nanoseconds (584 years fit).
    offset_nanos: AtomicU64,
}

impl SimClock {
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            origin_wall: Utc::now(),
            offset_nanos: AtomicU64::new(0),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let offset = Duration::from_nanos(self.offset_nanos.load(Ordering::Relaxed));
        let elapsed = self.origin.elapsed().saturating_add(offset);
        // Monotonic elapsed time rather than a fresh `Utc::now()`: a wall-clock step (NTP)
        // must not make tasks expire or come back to life.
        TimeDelta::from_std(elapsed)
            .ok()
            .and_then(|delta| self.origin_wall.checked_add_signed(delta))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    pub(crate) fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .offset_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |current| {
                Some(current.saturating_add(nanos))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_now_forward_by_at_least_the_amount() {
        let clock = SimClock::new();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        let after = clock.now();
        assert!(after - before >= TimeDelta::hours(1));
        // And not by a day: the clock still follows real time otherwise.
        assert!(after - before < TimeDelta::hours(2));
    }

    #[test]
    fn huge_advances_saturate_instead_of_panicking() {
        let clock = SimClock::new();
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        // u64 nanoseconds are about 584 years.
        assert!(clock.now() > Utc::now() + TimeDelta::days(500 * 365));
    }
}
