//! How long to wait before trying again: the one back-off of the agent.
//!
//! [`Backoff`] is the schedule of every retry: the client's inline retries of idempotent
//! requests ([`RetryPolicy`]), a failed task's next attempt (`agent::retry`) and a webhook
//! delivery (`webhook`). Each caller adds only its own limits (attempts, a task's deadline).
//!
//! The schedule is exponential backoff with *full jitter* (see the AWS Architecture Blog post
//! "Exponential Backoff And Jitter"): after failed attempt `n` the wait is a uniformly
//! random time in `[0, min(cap, base · 2^(n-1)))`. Full jitter matters less for one agent than
//! for a fleet, but every site of a project polls the same fTTP, often on the same cron
//! minute: spreading their retries is cheap insurance against them arriving in lockstep after an
//! outage.
//!
//! The server's word beats the schedule: when a response carried `Retry-After`, the wait is at
//! least that long. A server asking for more than [`RetryPolicy::cap`] is not waited for inline
//! (a poll cycle should not hang for an hour); the error is returned with
//! [`TtpError::retry_after`](super::TtpError::retry_after) set so the caller can reschedule.
//!
//! [`RetryPolicy::delay`] is a pure function of the attempt number, the header and a random
//! source, so the schedule is tested without sleeping.

use std::time::Duration;

use rand::Rng;

/// Exponential back-off with full jitter. Pure: the random draw is an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Upper bound of the first wait; doubles per failed attempt.
    pub base: Duration,
    /// Upper bound of any wait drawn (a `Retry-After` may ask for more).
    pub cap: Duration,
}

impl Backoff {
    /// The exponential bound after failed attempt `attempt` (1-based): `base · 2^(attempt-1)`,
    /// capped.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }

    /// The wait after failed attempt `attempt`: `r / 2^64` of [`Backoff::ceiling`] (so uniform
    /// in `[0, ceiling)` for a uniform `r`), raised to `retry_after` when the server asked for
    /// a pause. Callers clamp `retry_after` to what they are willing to honour.
    pub fn wait(&self, attempt: u32, retry_after: Option<Duration>, r: u64) -> Duration {
        let jittered = scale(self.ceiling(attempt), r);
        jittered.max(retry_after.unwrap_or_default())
    }
}

/// Retry schedule for idempotent operations. `$providePatientData` is never retried by the
/// client, whatever this says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (`1` disables retries). Default 4.
    pub max_attempts: u32,
    /// Upper bound of the first jittered wait; doubles per attempt. Default 0.5 s.
    pub base: Duration,
    /// Upper bound of any wait the client sleeps inline. Default 30 s.
    pub cap: Duration,
    /// The longest `Retry-After` the client honours; longer values are clamped to this (a
    /// misconfigured gateway must not silence the agent for days). Default 1 h.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retries.
    pub fn no_retries() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based) before the next one: uniform in
    /// `[0, min(cap, base · 2^(attempt-1)))`, raised to `retry_after` (clamped to
    /// `max_retry_after`) when the server sent one.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        self.backoff().wait(
            attempt,
            retry_after.map(|after| self.clamp_retry_after(after)),
            rng.next_u64(),
        )
    }

    /// The schedule of this policy's waits.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base,
            cap: self.cap,
        }
    }

    /// `retry_after` limited to [`RetryPolicy::max_retry_after`].
    pub fn clamp_retry_after(&self, retry_after: Duration) -> Duration {
        retry_after.min(self.max_retry_after)
    }

    /// Whether the client should sleep and try again after failed attempt `attempt`, and for
    /// how long. `None` when the attempts are used up or the server asked for a pause longer
    /// than [`RetryPolicy::cap`] (the caller reschedules using the error's `retry_after`).
    pub fn next_wait<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        if retry_after.is_some_and(|after| self.clamp_retry_after(after) > self.cap) {
            return None;
        }
        Some(self.delay(attempt, retry_after, rng))
    }
}

/// `ceiling · r / 2^64`: a uniform fraction of `ceiling` without floating point, so that the
/// extremes are exact (`r = 0` gives zero) and tests can pin them.
fn scale(ceiling: Duration, r: u64) -> Duration {
    let nanos = ceiling.as_nanos().min(u128::from(u64::MAX));
    let scaled = (nanos * u128::from(r)) >> 64;
    Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::convert::Infallible;

    /// A random source that always yields the same value, to pin the jitter's extremes.
    struct Fixed(u64);

    impl rand::TryRng for Fixed {
        type Error = Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Infallible> {
            Ok(self.0 as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Infallible> {
            Ok(self.0)
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
            dst.fill(self.0 as u8);
            Ok(())
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn ceiling_doubles_per_attempt_up_to_the_cap() {
        let policy = RetryPolicy::default();
        let mut max = Fixed(u64::MAX);
        // Just below the ceiling: the interval is half-open.
        let expected = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
        for (i, want_ms) in expected.into_iter().enumerate() {
            let attempt = i as u32 + 1;
            let got = policy.delay(attempt, None, &mut max);
            assert!(
                got < ms(want_ms) && got > ms(want_ms) - ms(1),
                "attempt {attempt}: {got:?}"
            );
        }
        // Absurd attempt numbers neither overflow nor exceed the cap.
        assert!(policy.delay(u32::MAX, None, &mut max) <= policy.cap);
    }

    #[test]
    fn full_jitter_reaches_zero_and_stays_within_the_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(3, None, &mut Fixed(0)), Duration::ZERO);
        assert_eq!(policy.delay(1, None, &mut Fixed(1 << 63)), ms(250));

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let samples: Vec<_> = (0..1000).map(|_| policy.delay(2, None, &mut rng)).collect();
        assert!(samples.iter().all(|d| *d < ms(1000)));
        // Full jitter, not "ceiling/2 + jitter": both halves of the interval are used.
        assert!(samples.iter().any(|d| *d < ms(100)));
        assert!(samples.iter().any(|d| *d > ms(900)));
    }

    #[test]
    fn retry_after_is_a_lower_bound_and_clamped() {
        let policy = RetryPolicy::default();
        let mut zero = Fixed(0);
        assert_eq!(policy.delay(1, Some(ms(7_000)), &mut zero), ms(7_000));
        // The jittered wait wins when it is longer than what the server asked for.
        let mut max = Fixed(u64::MAX);
        assert!(policy.delay(7, Some(ms(1)), &mut max) > ms(29_000));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(86_400)), &mut zero),
            Duration::from_secs(3600)
        );
        assert_eq!(
            policy.clamp_retry_after(Duration::from_secs(u64::MAX)),
            policy.max_retry_after
        );
    }

    #[test]
    fn next_wait_stops_after_max_attempts_and_on_long_retry_after() {
        let policy = RetryPolicy::default();
        let mut zero = Fixed(0);
        assert_eq!(policy.next_wait(1, None, &mut zero), Some(Duration::ZERO));
        assert_eq!(policy.next_wait(3, None, &mut zero), Some(Duration::ZERO));
        assert_eq!(policy.next_wait(4, None, &mut zero), None);
        assert_eq!(
            policy.next_wait(1, Some(ms(30_000)), &mut zero),
            Some(ms(30_000))
        );
        assert_eq!(policy.next_wait(1, Some(ms(30_001)), &mut zero), None);
        assert_eq!(
            RetryPolicy::no_retries().next_wait(1, None, &mut zero),
            None
        );
    }
}
