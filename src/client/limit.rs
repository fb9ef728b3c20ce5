//! Being a polite client: a global request rate and a cap on requests in flight.
//!
//! Both limits are shared by every clone of a [`TtpClient`](super::TtpClient) and apply to
//! every *attempt*, retries included -- a retry storm is exactly when the fTTP needs the
//! protection most.
//!
//! The rate limit is *spacing*: consecutive requests start at least `1 / rate` seconds apart.
//! That is a token bucket with a burst of one; it never lets more than `⌊W · rate⌋ + 1`
//! requests start in any window of length `W`. Slots are handed out under a mutex in the order
//! callers ask for them, and the concurrency semaphore (tokio's is FIFO) is taken first, so
//! waiting callers are served in arrival order and none can starve.
//!
//! Order matters: the permit is acquired *before* the time slot. Taking a slot first and then
//! queueing for a permit would let slots expire while waiting, after which several requests
//! would start at once and break the rate.
//!
//! The spacing holds for the moments requests *actually* start, not only for the slots handed
//! out: callers take their slot one at a time (a fair, FIFO turn), and the next slot is counted
//! from the moment the previous caller really woke up. A runtime that is stalled for a while
//! (blocking I/O on a worker, an overloaded host) therefore delays requests but never lets
//! slots that were handed out before the stall fire together after it. Found by the
//! fault-injection test (`tests/soak/agent/faults.rs`), which measures the rate at the server.
//!
//! [`Spacing`] is the pure schedule (an injected clock in, a start time out); `Limits` adds
//! the sleeping and the semaphore.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The pure rate schedule: given "now", when may the next request start?
#[derive(Debug)]
pub struct Spacing {
    interval: Duration,
    next_free: Option<Instant>,
}

impl Spacing {
    /// `None` unless `rate_per_sec` is finite, positive and its interval fits a `Duration`.
    pub fn new(rate_per_sec: f64) -> Option<Spacing> {
        if !rate_per_sec.is_finite() || rate_per_sec <= 0.0 {
            return None;
        }
        let interval = Duration::try_from_secs_f64(1.0 / rate_per_sec).ok()?;
        Some(Spacing {
            interval,
            next_free: None,
        })
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next start time, at or after `now`. Idle time earns no credit: after a
    /// pause the next request starts at once, the one after it an interval later.
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let slot = match self.next_free {
            Some(free) if free > now => free,
            _ => now,
        };
        // Saturating: an interval that overflows `Instant` means "never again", which only
        // absurd rates (far below one request per century) can reach.
        self.next_free = Some(slot.checked_add(self.interval).unwrap_or(slot));
        slot
    }

    /// Records that a request really started at `at` (possibly later than its slot): the next
    /// slot is at least an interval after it.
    pub fn started(&mut self, at: Instant) {
        let after = at.checked_add(self.interval).unwrap_or(at);
        if self.next_free.is_none_or(|free| free < after) {
            self.next_free = Some(after);
        }
    }
}

/// The resolution of tokio's timer: a sleep ends on a millisecond tick, so a sleep shorter than
/// a tick lasts until the next one.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// How to wait for a slot that is `left` away.
#[derive(Debug, PartialEq, Eq)]
enum Wait {
    /// The slot has come.
    Go,
    /// Less than a timer tick: hand the thread back to the runtime and look again. Sleeping
    /// would round the wait up to the next tick and, since the waiting caller holds the turn,
    /// cap the rate at about one request per millisecond whatever the configured rate (found
    /// by the drain benchmark: 1,270 tasks/s with either store, with the agent's CPU idle
    /// three quarters of the time; BENCHMARKS.md §2).
    Yield,
    /// A tick or more: sleep (never ends early; may end up to a tick late, which
    /// [`Spacing::started`] accounts for).
    Sleep,
}

fn how_to_wait(left: Duration) -> Wait {
    if left.is_zero() {
        Wait::Go
    } else if left < TIMER_TICK {
        Wait::Yield
    } else {
        Wait::Sleep
    }
}

/// Waits until `slot` (a request never starts before its slot).
async fn wait_until(slot: Instant) {
    loop {
        match how_to_wait(slot.saturating_duration_since(Instant::now())) {
            Wait::Go => return,
            Wait::Yield => tokio::task::yield_now().await,
            Wait::Sleep => tokio::time::sleep_until(tokio::time::Instant::from_std(slot)).await,
        }
    }
}

/// The shared limits, applied around every attempt.
#[derive(Debug)]
pub(crate) struct Limits {
    spacing: Mutex<Spacing>,
    /// Whose turn it is to wait for a slot (tokio's mutex is fair: FIFO).
    turn: tokio::sync::Mutex<()>,
    permits: Semaphore,
}

impl Limits {
    pub(crate) fn new(spacing: Spacing, max_concurrency: usize) -> Limits {
        Limits {
            spacing: Mutex::new(spacing),
            turn: tokio::sync::Mutex::new(()),
            permits: Semaphore::new(max_concurrency),
        }
    }

    /// Replaces the rate (a configuration reload). Slots already handed out stand; the next
    /// one is spaced by the new interval.
    pub(crate) fn set_interval(&self, spacing: Spacing) {
        self.spacing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .interval = spacing.interval;
    }

    /// Waits for a concurrency permit, then for the next rate slot. The request must be sent
    /// while the returned permit is held.
    pub(crate) async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        // `acquire` fails only on a closed semaphore, and this one is never closed.
        let permit = self.permits.acquire().await.ok();
        let _turn = self.turn.lock().await;
        let slot = self.spacing().reserve(Instant::now());
        wait_until(slot).await;
        self.spacing().started(Instant::now());
        permit
    }

    fn spacing(&self) -> std::sync::MutexGuard<'_, Spacing> {
        self.spacing
            .lock()
            // The guarded value is a plain schedule that is valid after any panic.
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_rates_that_are_not_positive_and_finite() {
        for rate in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
        ] {
            assert!(Spacing::new(rate).is_none(), "{rate}");
        }
        assert_eq!(
            Spacing::new(4.0).map(|s| s.interval()),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn a_new_rate_spaces_the_next_slot_by_the_new_interval() {
        let limits = Limits::new(Spacing::new(1.0).expect("valid rate"), 4);
        let t0 = Instant::now();
        let first = limits.spacing.lock().unwrap().reserve(t0);
        limits.set_interval(Spacing::new(10.0).expect("valid rate"));
        let mut spacing = limits.spacing.lock().unwrap();
        assert_eq!(spacing.interval(), Duration::from_millis(100));
        // The slot handed out under the old rate stands: the next is one old interval later,
        // and from then on the new interval applies.
        let second = spacing.reserve(t0);
        let third = spacing.reserve(t0);
        assert_eq!(second - first, Duration::from_secs(1));
        assert_eq!(third - second, Duration::from_millis(100));
    }

    #[test]
    fn simultaneous_callers_get_consecutive_slots_in_order() {
        let t0 = Instant::now();
        let mut spacing = Spacing::new(10.0).expect("valid rate");
        let slots: Vec<_> = (0..5).map(|_| spacing.reserve(t0) - t0).collect();
        let want: Vec<_> = (0..5).map(|i| Duration::from_millis(100 * i)).collect();
        assert_eq!(slots, want);
    }

    #[test]
    fn idle_time_earns_no_burst() {
        let t0 = Instant::now();
        let mut spacing = Spacing::new(10.0).expect("valid rate");
        assert_eq!(spacing.reserve(t0), t0);
        let later = t0 + Duration::from_secs(60);
        assert_eq!(spacing.reserve(later), later);
        assert_eq!(spacing.reserve(later), later + Duration::from_millis(100));
        // A caller arriving mid-interval waits only for the rest of it.
        let mid = later + Duration::from_millis(150);
        assert_eq!(spacing.reserve(mid), later + Duration::from_millis(200));
    }

    #[test]
    fn no_window_holds_more_than_rate_times_width_plus_one_starts() {
        // Callers arrive in irregular bunches; count starts in every window of one second.
        let t0 = Instant::now();
        let mut spacing = Spacing::new(5.0).expect("valid rate");
        let arrivals_ms = [
            0u64, 0, 0, 10, 450, 460, 470, 1_900, 1_900, 5_000, 5_001, 5_002,
        ];
        let starts: Vec<Instant> = arrivals_ms
            .iter()
            .map(|ms| spacing.reserve(t0 + Duration::from_millis(*ms)))
            .collect();
        for (i, &from) in starts.iter().enumerate() {
            let in_window = starts[i..]
                .iter()
                .filter(|&&s| s < from + Duration::from_secs(1))
                .count();
            assert!(in_window <= 5 + 1, "window from start {i}: {in_window}");
        }
        assert!(
            starts
                .windows(2)
                .all(|w| w[1] - w[0] >= Duration::from_millis(200))
        );
    }

    #[test]
    fn a_late_start_pushes_the_next_slot_back() {
        let t0 = Instant::now();
        let mut spacing = Spacing::new(10.0).expect("valid rate");
        assert_eq!(spacing.reserve(t0), t0);
        // The caller woke 350 ms late (a stalled runtime): the next request must not start
        // before 100 ms after that, although its slot would have been at 100 ms.
        spacing.started(t0 + Duration::from_millis(350));
        assert_eq!(
            spacing.reserve(t0 + Duration::from_millis(360)),
            t0 + Duration::from_millis(450)
        );
        // A start on time changes nothing.
        let mut spacing = Spacing::new(10.0).expect("valid rate");
        spacing.reserve(t0);
        spacing.started(t0);
        assert_eq!(spacing.reserve(t0), t0 + Duration::from_millis(100));
    }

    #[test]
    fn a_wait_shorter_than_a_timer_tick_is_not_slept() {
        assert_eq!(how_to_wait(Duration::ZERO), Wait::Go);
        // 100,000 requests/s: slots 10 µs apart. A sleep would last a whole tick each.
        assert_eq!(how_to_wait(Duration::from_micros(10)), Wait::Yield);
        assert_eq!(how_to_wait(Duration::from_micros(999)), Wait::Yield);
        assert_eq!(how_to_wait(TIMER_TICK), Wait::Sleep);
        assert_eq!(how_to_wait(Duration::from_millis(200)), Wait::Sleep);
    }

    #[tokio::test]
    async fn a_wait_never_ends_before_its_slot() {
        // Sub-tick slots (yielded for) and longer ones (slept for) alike.
        for ahead in [0, 10, 999, 1_000, 2_500] {
            let slot = Instant::now() + Duration::from_micros(ahead);
            wait_until(slot).await;
            assert!(Instant::now() >= slot, "{ahead} µs ahead");
        }
    }

    #[tokio::test]
    async fn permits_are_capped() {
        let limits = Limits::new(Spacing::new(1e9).expect("valid rate"), 2);
        let a = limits.acquire().await;
        let b = limits.acquire().await;
        assert!(a.is_some() && b.is_some());
        assert_eq!(limits.permits.available_permits(), 0);
        drop(a);
        assert_eq!(limits.permits.available_permits(), 1);
    }
}
