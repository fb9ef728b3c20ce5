//! The daemon loop: poll at start, then on the cron schedule, and earlier when the agent has
//! work of its own due (a retry, an in-doubt answer to reconcile).
//!
//! Between cycles the loop sleeps on exactly one timer (no short polling timers), so an idle
//! agent costs nothing. Each scheduled poll is delayed by a random `jitter`, so that the many
//! sites of a study do not all hit the fTTP at the same second of the quarter hour.

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt as _;
use tokio::sync::watch;

use super::{Agent, CycleError, CycleReport, Shutdown};
use crate::client::backoff::Backoff;

/// A cron schedule in a time zone, with jitter.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: cron::Schedule,
    tz: chrono_tz::Tz,
    jitter: Duration,
}

impl Schedule {
    /// `expr` has a seconds field (`"0 */15 * * * *"`); `tz` is an IANA name.
    pub fn parse(expr: &str, tz: &str, jitter: Duration) -> Result<Schedule, String> {
        let cron = cron::Schedule::from_str(expr)
            .map_err(|e| format!("invalid cron expression {expr:?}: {e} (six or seven fields, seconds first, e.g. \"0 */15 * * * *\")"))?;
        let tz = chrono_tz::Tz::from_str(tz).map_err(|_| {
            format!("unknown time zone {tz:?} (an IANA name such as \"Europe/Berlin\")")
        })?;
        if cron.after(&Utc::now().with_timezone(&tz)).next().is_none() {
            return Err(format!("cron expression {expr:?} never fires again"));
        }
        Ok(Schedule { cron, tz, jitter })
    }

    /// The schedule of a validated `[schedule]` section.
    pub fn from_config(c: &crate::config::ScheduleConfig) -> Schedule {
        Schedule {
            cron: c.cron.clone(),
            tz: c.timezone,
            jitter: c.jitter,
        }
    }

    /// The next scheduled moment strictly after `t`, without jitter.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }

    fn jitter(&self) -> chrono::Duration {
        if self.jitter.is_zero() {
            return chrono::Duration::zero();
        }
        let f: f64 = rand::rng().random();
        chrono::Duration::from_std(self.jitter.mul_f64(f)).unwrap_or_default()
    }
}

/// Callbacks for the operations surface (readiness, watchdog, metrics), so the loop itself
/// knows nothing about systemd or HTTP.
pub trait DaemonHooks: Send + Sync {
    /// The store is open and the first poll is scheduled.
    fn ready(&self) {}
    /// A cycle finished (successfully or not).
    fn cycle_finished(&self, _result: &Result<CycleReport, CycleError>, _took: Duration) {}
    /// The loop is alive (called at least once per wake-up; a watchdog can be fed from it).
    fn alive(&self) {}
    /// Shutdown has begun.
    fn stopping(&self) {}
}

/// A hooks implementation that does nothing.
pub struct NoHooks;
impl DaemonHooks for NoHooks {}

/// After a failed cycle, retry sooner than the schedule would, but back off: 30 s, 1 min, 2 min,
/// … 32 min or the next scheduled poll, whichever comes first: the bound of the agent's one
/// back-off, without its draw (the failed polls were already spread by the schedule's jitter).
/// Authentication failures wait for the schedule: retrying them quickly only fills the fTTP's
/// logs.
fn after_failure(consecutive: u32, err: &CycleError) -> Option<chrono::Duration> {
    const AFTER_FAILED_CYCLE: Backoff = Backoff {
        base: Duration::from_secs(30),
        cap: Duration::from_secs(30 * 64),
    };
    match err {
        CycleError::Auth(_) => None,
        _ => chrono::Duration::from_std(AFTER_FAILED_CYCLE.ceiling(consecutive)).ok(),
    }
}

/// How long the fTTP asked the agent to stay away (`Retry-After` on the failed listing).
fn server_pause(err: &CycleError) -> Option<chrono::Duration> {
    match err {
        CycleError::Fetch(e) => e
            .retry_after
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .filter(|d| *d > chrono::Duration::zero()),
        _ => None,
    }
}

/// Gives the heap memory a cycle freed back to the OS before the loop sleeps. glibc keeps
/// freed memory mapped for reuse, so without this an idle daemon holds the peak of its last
/// cycle (hundreds of MiB after scanning a large store) until the next one. Costs a
/// millisecond or so per cycle.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Run until shutdown with a fixed schedule. `watchdog` is how often the loop must show it
/// is alive (systemd's `WatchdogSec` / 2); `None` sleeps until the next due moment.
pub async fn run(
    agent: Arc<Agent>,
    schedule: Schedule,
    shutdown: Shutdown,
    hooks: Arc<dyn DaemonHooks>,
    watchdog: Option<Duration>,
) -> Result<(), crate::store::StoreError> {
    let (_unchanging, schedule) = watch::channel(schedule);
    run_reloadable(agent, schedule, shutdown, hooks, watchdog).await
}

/// Run until shutdown, following `schedule`: a new value sent on the channel (a reload on
/// SIGHUP) reschedules the next poll at once, without interrupting a cycle under way.
///
/// A failing store ends the loop with the error: a full disk, a store that became unwritable
/// or corrupt does not heal by polling again, and an agent that keeps running without being
/// able to record what it does is worse than one that stops. The process exits non-zero and
/// its supervisor (systemd) shows the reason and restarts it; `Agent::recover` makes the
/// restart safe.
pub async fn run_reloadable(
    agent: Arc<Agent>,
    mut schedule: watch::Receiver<Schedule>,
    mut shutdown: Shutdown,
    hooks: Arc<dyn DaemonHooks>,
    watchdog: Option<Duration>,
) -> Result<(), crate::store::StoreError> {
    hooks.ready();
    let mut consecutive_failures = 0u32;
    // Once the sending side is gone the schedule can no longer change.
    let mut schedule_open = true;
    loop {
        // The fTTP asked for a pause (429/503 with Retry-After): nothing, not even the schedule
        // or a due retry, calls it earlier.
        let mut not_before: Option<DateTime<Utc>> = None;
        let started = std::time::Instant::now();
        let result = agent.poll_cycle().await;
        hooks.cycle_finished(&result, started.elapsed());
        let now = Utc::now();
        // When the agent's own state wants the next cycle, whatever the schedule says: a
        // back-off after a failure, a retry coming due, an in-doubt answer to judge.
        let mut own: Option<DateTime<Utc>> = None;
        match result {
            Ok(report) => {
                consecutive_failures = 0;
                tracing::info!(
                    poll = report.poll_seq,
                    listed = report.listed,
                    new = report.new_tasks,
                    done = report.dispatch.done,
                    retry = report.dispatch.retry,
                    in_doubt = report.dispatch.in_doubt,
                    attention = report.dispatch.attention,
                    expired = report.dispatch.expired + report.expired_on_merge,
                    open = report.open_after,
                    "poll cycle finished"
                );
            }
            Err(CycleError::ShuttingDown) => break,
            Err(e) => match e.into_stop() {
                Ok(e) => {
                    tracing::error!(error = %e, "the store failed; stopping (nothing is lost: the next start resumes from what the store holds)");
                    hooks.stopping();
                    return Err(e);
                }
                Err(e) => {
                    consecutive_failures += 1;
                    tracing::error!(error = %e, class = e.class(), consecutive_failures, "poll cycle failed");
                    own = after_failure(consecutive_failures, &e).map(|backoff| now + backoff);
                    not_before = server_pause(&e).map(|pause| now + pause);
                }
            },
        }
        match agent.next_own_wakeup() {
            Ok(Some(wakeup)) => {
                let wakeup = wakeup.max(now + chrono::Duration::seconds(1));
                own = Some(own.map_or(wakeup, |o| o.min(wakeup)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not read the store to plan the next wake-up")
            }
        }
        release_freed_memory();
        let mut next = not_earlier(
            next_wakeup(&schedule.borrow_and_update(), now, own),
            not_before,
        );
        tracing::debug!(next = %next, "sleeping until the next poll");
        loop {
            hooks.alive();
            let until_next = (next - Utc::now()).to_std().unwrap_or_default();
            let nap = watchdog.map_or(until_next, |w| w.min(until_next));
            tokio::select! {
                _ = tokio::time::sleep(nap) => {}
                changed = schedule.changed(), if schedule_open => match changed {
                    Ok(()) => {
                        next = not_earlier(
                            next_wakeup(&schedule.borrow_and_update(), Utc::now(), own),
                            not_before,
                        );
                        tracing::info!(next = %next, "schedule changed; next poll rescheduled");
                    }
                    Err(_) => schedule_open = false,
                },
                _ = shutdown.wait() => {
                    hooks.stopping();
                    return Ok(());
                }
            }
            if Utc::now() >= next {
                break;
            }
        }
        if shutdown.is_triggered() {
            break;
        }
    }
    hooks.stopping();
    Ok(())
}

/// `next`, but not before the pause the fTTP asked for.
fn not_earlier(next: DateTime<Utc>, not_before: Option<DateTime<Utc>>) -> DateTime<Utc> {
    match not_before {
        Some(nb) if next < nb => {
            tracing::info!(until = %nb, "the fTTP asked to wait (Retry-After); next poll not before then");
            nb
        }
        _ => next,
    }
}

/// The next poll: the schedule's next moment (plus jitter), or the agent's own wake-up when
/// that comes first. A schedule that never fires again polls in an hour.
fn next_wakeup(
    schedule: &Schedule,
    now: DateTime<Utc>,
    own: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    let scheduled = schedule
        .next_after(now)
        .map(|t| t + schedule.jitter())
        .unwrap_or(now + chrono::Duration::hours(1));
    own.map_or(scheduled, |o| scheduled.min(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn quarter_hours_in_berlin_time() {
        let s = Schedule::parse("0 */15 * * * *", "Europe/Berlin", Duration::ZERO).unwrap();
        assert_eq!(
            s.next_after(at("2026-06-01T10:07:00Z")),
            Some(at("2026-06-01T10:15:00Z"))
        );
        // A daily 02:30 Berlin schedule is 00:30Z in summer, 01:30Z in winter.
        let s = Schedule::parse("0 30 2 * * *", "Europe/Berlin", Duration::ZERO).unwrap();
        assert_eq!(
            s.next_after(at("2026-06-01T12:00:00Z")),
            Some(at("2026-06-02T00:30:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-12-01T12:00:00Z")),
            Some(at("2026-12-02T01:30:00Z"))
        );
    }

    #[test]
    fn bad_expressions_and_zones_are_explained() {
        let e = Schedule::parse("*/15 * * * *", "Europe/Berlin", Duration::ZERO).unwrap_err();
        assert!(e.contains("seconds first"), "{e}");
        let e = Schedule::parse("0 */15 * * * *", "Mars/Olympus", Duration::ZERO).unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let s = Schedule::parse("0 0 * * * *", "UTC", Duration::from_secs(60)).unwrap();
        for _ in 0..200 {
            let j = s.jitter();
            assert!(j >= chrono::Duration::zero() && j < chrono::Duration::seconds(60));
        }
    }

    #[test]
    fn the_next_wakeup_is_the_earlier_of_schedule_and_own_work() {
        let s = Schedule::parse("0 */15 * * * *", "UTC", Duration::ZERO).unwrap();
        let now = at("2026-06-01T10:07:00Z");
        assert_eq!(next_wakeup(&s, now, None), at("2026-06-01T10:15:00Z"));
        assert_eq!(
            next_wakeup(&s, now, Some(at("2026-06-01T10:08:00Z"))),
            at("2026-06-01T10:08:00Z")
        );
        assert_eq!(
            next_wakeup(&s, now, Some(at("2026-06-01T11:00:00Z"))),
            at("2026-06-01T10:15:00Z")
        );
    }

    #[test]
    fn failures_back_off_but_auth_failures_wait_for_the_schedule() {
        let fetch = CycleError::ShuttingDown;
        assert_eq!(
            after_failure(1, &fetch),
            Some(chrono::Duration::seconds(30))
        );
        assert_eq!(
            after_failure(3, &fetch),
            Some(chrono::Duration::seconds(120))
        );
        assert_eq!(
            after_failure(50, &fetch),
            Some(chrono::Duration::seconds(30 * 64))
        );
        assert_eq!(after_failure(1, &CycleError::Auth("x".into())), None);
    }

    #[test]
    fn a_retry_after_on_the_listing_is_a_pause() {
        let err = |retry_after: Option<Duration>| {
            let mut e = crate::client::TtpError::new(
                crate::client::Operation::RequestTasks,
                crate::client::ErrorClass::Transient,
                "busy",
            )
            .with_status(429);
            e.retry_after = retry_after;
            CycleError::Fetch(e)
        };
        assert_eq!(
            server_pause(&err(Some(Duration::from_secs(600)))),
            Some(chrono::Duration::seconds(600))
        );
        assert_eq!(server_pause(&err(Some(Duration::ZERO))), None);
        assert_eq!(server_pause(&err(None)), None);
        assert_eq!(server_pause(&CycleError::Auth("x".into())), None);
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(600);
        assert_eq!(not_earlier(now, Some(later)), later);
        assert_eq!(not_earlier(later, Some(now)), later);
        assert_eq!(not_earlier(now, None), now);
    }
}
