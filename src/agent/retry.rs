//! When to try a failed task again. Pure.
//!
//! Exponential back-off with full jitter (the AWS architecture blog's "full jitter": a uniform
//! draw between zero and the exponential bound) spreads the retries of many sites and many
//! tasks, so that an fTTP coming back from an outage is not hit by a synchronised wave. A
//! `Retry-After` from the fTTP is a floor. The result never lies beyond the task's deadline:
//! a retry after expiry would be useless, so the last attempt is pulled in before it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;

use crate::client::backoff::Backoff;

#[derive(Clone, Debug, PartialEq)]
pub struct RetrySettings {
    pub base: Duration,
    pub cap: Duration,
    /// How long before the deadline the last attempt must happen at the latest.
    pub deadline_margin: Duration,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            deadline_margin: Duration::from_secs(60),
        }
    }
}

impl RetrySettings {
    /// The schedule of a task's retries: the agent's one back-off.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base,
            cap: self.cap,
        }
    }
}

/// The exponential bound for attempt `attempt` (1-based): `base · 2^(attempt-1)`, capped.
pub fn bound(attempt: u32, s: &RetrySettings) -> Duration {
    s.backoff().ceiling(attempt)
}

/// The moment of the next attempt, given the uniform draw `r` (the fraction `r / 2^64` of the
/// bound).
pub fn next_attempt_with(
    attempt: u32,
    s: &RetrySettings,
    retry_after: Option<Duration>,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    r: u64,
) -> DateTime<Utc> {
    // At least a second, so a burst of failures cannot spin.
    let delay = s
        .backoff()
        .wait(attempt, retry_after, r)
        .max(Duration::from_secs(1));
    let mut at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    if let Some(deadline) = deadline {
        let latest = deadline
            - chrono::Duration::from_std(s.deadline_margin).unwrap_or(chrono::Duration::zero());
        if at > latest {
            at = latest.max(now + chrono::Duration::seconds(1));
        }
    }
    at
}

pub fn next_attempt(
    attempt: u32,
    s: &RetrySettings,
    retry_after: Option<Duration>,
    deadline: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    next_attempt_with(
        attempt,
        s,
        retry_after,
        deadline,
        now,
        rand::rng().next_u64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_bound_doubles_and_is_capped() {
        let s = RetrySettings::default();
        assert_eq!(bound(1, &s), Duration::from_secs(30));
        assert_eq!(bound(2, &s), Duration::from_secs(60));
        assert_eq!(bound(4, &s), Duration::from_secs(240));
        assert_eq!(bound(20, &s), Duration::from_secs(3600));
        assert_eq!(bound(u32::MAX, &s), Duration::from_secs(3600));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_bound_with_a_one_second_floor() {
        let s = RetrySettings::default();
        let low = next_attempt_with(3, &s, None, None, now(), 0);
        let high = next_attempt_with(3, &s, None, None, now(), u64::MAX);
        assert_eq!(low, now() + chrono::Duration::seconds(1));
        assert!(high > now() + chrono::Duration::seconds(119));
        assert!(high <= now() + chrono::Duration::seconds(120));
    }

    #[test]
    fn retry_after_is_a_floor() {
        let s = RetrySettings::default();
        let at = next_attempt_with(1, &s, Some(Duration::from_secs(600)), None, now(), 1 << 63);
        assert_eq!(at, now() + chrono::Duration::seconds(600));
    }

    #[test]
    fn never_after_the_deadline_margin() {
        let s = RetrySettings::default();
        let deadline = now() + chrono::Duration::seconds(300);
        let at = next_attempt_with(10, &s, None, Some(deadline), now(), u64::MAX);
        assert_eq!(at, deadline - chrono::Duration::seconds(60));
        // Already inside the margin: as soon as sensible.
        let close = now() + chrono::Duration::seconds(30);
        let at = next_attempt_with(10, &s, None, Some(close), now(), u64::MAX);
        assert_eq!(at, now() + chrono::Duration::seconds(1));
    }
}
