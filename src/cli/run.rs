//! `ttp-agent run --config F`: the daemon.
//!
//! Start-up: configuration and secrets, the store (exclusive), recovery of tasks a crash left
//! `Running`, the admin endpoints (`crate::admin`: health, metrics, status page, alerts), then
//! the scheduler loop (poll at once, then on the schedule) and, with `[handover] webhook_url`,
//! the pseudonym delivery worker next to it (`crate::handover`).
//!
//! Signals:
//!
//! * **SIGTERM / SIGINT** stop taking new work; a wave under way may finish within
//!   `[dispatch] grace_period`, then the store is flushed and the process exits 0. Whatever a
//!   cut-off wave leaves `Running` is reconciled at the next start.
//! * **SIGHUP** reloads the configuration: the settings that can change safely take effect at
//!   once (see [`super::reload`]), the others are named in a warning and wait for a restart. An
//!   invalid configuration is reported and the running one stays in effect. Work in progress
//!   is never interrupted by a reload.
//!
//! Under systemd the daemon reports readiness and stopping (`Type=notify`) and feeds the
//! watchdog while it makes progress (see [`Liveness`]).

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::sync::watch;

use super::reload::{self, SecretDigests};
use super::{ConfigArg, context};
use crate::admin;
use crate::agent::scheduler::{self, DaemonHooks, Schedule};
use crate::agent::{Agent, CycleError, CycleReport, Shutdown, shutdown};
use crate::config::LogFormat;
use crate::logging::LevelChange;
use crate::notify::SystemdHooks;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
}

pub fn run(
    args: Args,
    format: Option<LogFormat>,
    level: Option<String>,
) -> anyhow::Result<ExitCode> {
    // Logging first, so that everything after the configuration itself — a secret file that
    // cannot be read included — is reported in the configured format.
    let config = crate::config::AgentConfig::load(args.config.config.as_deref())?;
    context::init_logging(&config, format, level.as_deref());
    let secrets = config.load_secrets()?;
    admin::check_exposure(&config.admin, secrets.admin_token.as_ref())?;
    let loaded = context::Loaded { config, secrets };
    context::log_warnings(&loaded);
    let schedule = Schedule::from_config(&loaded.config.schedule);
    let grace = loaded.config.dispatch.grace_period;
    let request_timeout = loaded.config.ttp.timeout;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (trigger, listener) = shutdown::channel();
    let agent = context::agent(&loaded, listener.clone())?;
    let recovered = agent.recover()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        store = %loaded.config.store.path.display(),
        recovered_in_doubt = recovered,
        "ttp-agent started"
    );

    let systemd = Arc::new(SystemdHooks::from_env());
    let ping_every = systemd.watchdog_interval();
    let liveness = Arc::new(Mutex::new(Liveness::new(Instant::now())));
    let hooks = Arc::new(ProgressHooks {
        systemd: Arc::clone(&systemd),
        liveness: Arc::clone(&liveness),
    });
    // The delivery worker wakes after every poll cycle, so it wraps the hooks the admin surface
    // wraps in turn.
    let webhook = crate::handover::HandoverSettings::from_config(&loaded.config, &loaded.secrets)
        .map(|s| crate::handover::WebhookWorker::new(Arc::clone(agent.store()), s))
        .transpose()?;
    let daemon_hooks: Arc<dyn scheduler::DaemonHooks> = match &webhook {
        Some(w) => w.wake_after_cycles(hooks.clone()),
        None => hooks.clone(),
    };
    let mut reloader = Reloader {
        config: args.config,
        level_from_cli: level.is_some(),
        running: loaded.config.effective_values(),
        secrets: SecretDigests::of(&loaded.secrets),
        agent: Arc::clone(&agent),
        schedule: None,
    };

    let stopped = runtime.block_on(async {
        // Handlers first: a signal that arrives while the first poll runs must not kill the
        // process with the default action.
        let mut signals = match Signals::install() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(error = %e, "could not install signal handlers; stop the agent with SIGKILL");
                None
            }
        };
        // The admin surface wraps the hooks: the scheduler reports to it, it passes every call
        // on to systemd through `hooks`.
        let admin = admin::start(
            &loaded.config.admin,
            &loaded.secrets,
            &agent,
            &schedule,
            listener.clone(),
            daemon_hooks,
        )
        .await?;
        // The control channel: the commands run in this process from now on (the admin
        // state is what `status` adds about the daemon).
        let control = match crate::cli::control::server::bind(&loaded.config.control) {
            Ok(l) => Some(l),
            Err(e @ crate::cli::control::server::BindError::Group(_)) => {
                return Err(context::config_error(e.to_string()));
            }
            // The default place (systemd's RuntimeDirectory=) may not exist where the agent
            // runs without systemd (a container): the daemon works without the channel then.
            Err(e) if loaded.config.control.socket.is_none() => {
                tracing::warn!(
                    error = %e,
                    "no control channel: the other commands cannot run beside this daemon; set `[control] socket` to a directory the agent may write"
                );
                None
            }
            Err(e) => return Err(e.into()),
        };
        let control = match control {
            Some(l) => {
                let serving = l
                    .serve(crate::cli::control::server::Shared {
                        agent: Arc::clone(&agent),
                        config: Arc::new(loaded.config.clone()),
                        admin: Arc::clone(&admin.state),
                        runtime: tokio::runtime::Handle::current(),
                        active: std::sync::atomic::AtomicUsize::new(0),
                    })
                    .context("starting the control channel")?;
                tracing::info!(
                    socket = %serving.path().display(),
                    group = loaded.config.control.group.as_deref(),
                    "control channel: submit, export, resolve, backup, purge and status run through this daemon"
                );
                Some(serving)
            }
            None => None,
        };
        // The secrets live on in the client and the admin state; this copy goes.
        drop(loaded);
        let (schedule_tx, schedule_rx) = watch::channel(schedule);
        reloader.schedule = Some(schedule_tx);
        // The scheduler wakes at least every quarter of the watchdog timeout, so a sleeping
        // daemon always shows progress within the window `Liveness` allows.
        let nap = ping_every.map(|p| p / 2);
        let mut daemon = tokio::spawn(scheduler::run_reloadable(
            Arc::clone(&agent),
            schedule_rx,
            listener.clone(),
            admin.hooks,
            nap,
        ));
        let webhook = webhook.map(|w| tokio::spawn(w.run(listener.clone())));
        if let Some(every) = nap {
            // Tolerate at least half the watchdog period without progress, and at least one
            // request attempt running into its timeout plus the client's longest back-off.
            let window = (every * 2).max(request_timeout + Duration::from_secs(60));
            tokio::spawn(feed_watchdog(
                Arc::clone(&agent),
                systemd,
                liveness,
                listener.clone(),
                every,
                window,
            ));
        }
        // The loop ends by itself only when the store failed.
        let mut finished = None;
        loop {
            let signal = tokio::select! {
                result = &mut daemon => {
                    finished = Some(result);
                    break;
                }
                signal = async {
                    match signals.as_mut() {
                        Some(s) => s.next().await,
                        None => std::future::pending().await,
                    }
                } => signal,
            };
            match signal {
                Signal::Reload => reloader.reload(),
                Signal::Stop => break,
            }
        }
        let finished = match finished {
            Some(result) => result,
            None => {
                tracing::info!(grace = ?grace, "shutdown requested; finishing work in progress");
                trigger.trigger();
                match tokio::time::timeout(grace, &mut daemon).await {
                    Ok(result) => result,
                    Err(_) => {
                        tracing::warn!(
                            "grace period over; tasks still in flight are reconciled at the next start"
                        );
                        Ok(Ok(()))
                    }
                }
            }
        };
        trigger.trigger();
        if let Some(w) = webhook {
            // It abandons a request in flight at once (delivered again at the next start).
            let _ = tokio::time::timeout(grace, w).await;
        }
        // The socket goes with the daemon: a command started from now on opens the store
        // itself once this process has let go of it.
        if let Some(c) = control {
            c.stop();
        }
        anyhow::Ok(finished)
    })?;
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(store)) => return Err(store.into()),
        Err(join) => anyhow::bail!("the daemon loop ended abnormally: {join}"),
    }
    agent.store().flush()?;
    tracing::info!("ttp-agent stopped");
    Ok(ExitCode::SUCCESS)
}

enum Signal {
    Stop,
    Reload,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = self.int.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

/// Applies a new configuration to the running daemon (SIGHUP).
struct Reloader {
    config: ConfigArg,
    /// `--log-level` / `TTP_AGENT_LOG_LEVEL` was given: it wins over `[log] level`.
    level_from_cli: bool,
    /// The effective values the daemon runs with.
    running: reload::Values,
    secrets: SecretDigests,
    agent: Arc<Agent>,
    schedule: Option<watch::Sender<Schedule>>,
}

impl Reloader {
    fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration");
        let loaded = match context::load(&self.config) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(
                    error = %format!("{e:#}"),
                    "reload failed: the configuration is invalid; the running configuration stays in effect"
                );
                return;
            }
        };
        context::log_warnings(&loaded);
        let new = loaded.config.effective_values();
        let diff = reload::diff(&self.running, &new);
        let mut applied = Vec::new();
        let mut schedule_changed = false;
        for key in &diff.live {
            match (key.section, key.name) {
                ("log", "level") => {
                    if self.level_from_cli {
                        tracing::warn!(
                            "[log] level changed, but --log-level (or TTP_AGENT_LOG_LEVEL) set the level at start-up and stays in effect"
                        );
                        continue;
                    }
                    match crate::logging::set_level(loaded.config.log.level.as_str()) {
                        Ok(LevelChange::Applied) => {}
                        Ok(LevelChange::KeptRustLog) => {
                            tracing::warn!(
                                "[log] level changed, but RUST_LOG was set at start-up and stays in effect"
                            );
                            continue;
                        }
                        Ok(LevelChange::NotInitialised) => continue,
                        Err(e) => {
                            tracing::error!(error = %e, "[log] level not applied");
                            continue;
                        }
                    }
                }
                ("schedule", _) => schedule_changed = true,
                ("ttp", "rate_limit_per_second") => {
                    let rate = loaded.config.ttp.rate_limit_per_second;
                    if let Err(e) = self.agent.client().set_rate_limit(rate) {
                        tracing::error!(error = %e, "[ttp] rate_limit_per_second not applied");
                        continue;
                    }
                }
                _ => continue,
            }
            applied.push(*key);
        }
        if schedule_changed && let Some(tx) = &self.schedule {
            // The scheduler reschedules its next poll as soon as it sees the new value; a
            // cycle under way finishes first.
            tx.send_replace(Schedule::from_config(&loaded.config.schedule));
        }
        self.running = reload::after_reload(&self.running, &new, &applied);

        if !diff.restart.is_empty() {
            tracing::warn!(
                keys = %reload::list(&diff.restart),
                "these settings changed but take effect only after a restart (systemctl restart ttp-agent); the daemon keeps running with the old values"
            );
        }
        let secrets = SecretDigests::of(&loaded.secrets);
        let changed_secrets = self.secrets.changed(&secrets);
        if !changed_secrets.is_empty() {
            tracing::warn!(
                keys = %changed_secrets.join(", "),
                "the content of these secret files changed; the daemon uses the new secrets only after a restart"
            );
        }
        if diff.is_empty() && changed_secrets.is_empty() {
            tracing::info!("configuration reloaded: nothing changed");
        } else {
            tracing::info!(
                applied = %reload::list(&applied),
                "configuration reloaded"
            );
        }
    }
}

/// The scheduler's hooks, forwarded to systemd, with every sign of life recorded for the
/// watchdog feeder instead of pinging systemd directly.
struct ProgressHooks {
    systemd: Arc<SystemdHooks>,
    liveness: Arc<Mutex<Liveness>>,
}

impl ProgressHooks {
    fn progress(&self) {
        self.liveness
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .progress(Instant::now());
    }
}

impl DaemonHooks for ProgressHooks {
    fn ready(&self) {
        self.progress();
        self.systemd.ready();
    }

    fn cycle_finished(&self, result: &Result<CycleReport, CycleError>, took: Duration) {
        self.progress();
        self.systemd.cycle_finished(result, took);
    }

    fn alive(&self) {
        self.progress();
    }

    fn stopping(&self) {
        self.systemd.stopping();
    }
}

/// Whether the daemon is making progress, for systemd's watchdog.
///
/// The scheduler shows it is alive only between cycles, but a cycle may legitimately take
/// longer than any sensible `WatchdogSec` (a wave of slow requests, each with its timeout and
/// retries). Requests finishing — successfully or not — are progress too. The watchdog is fed
/// while the last progress is recent; a daemon that is stuck (a deadlock, a request that never
/// returns) stops feeding it and systemd restarts it, and the restart reconciles whatever was
/// in flight.
#[derive(Debug)]
struct Liveness {
    last_progress: Instant,
    requests_seen: u64,
}

impl Liveness {
    fn new(now: Instant) -> Liveness {
        Liveness {
            last_progress: now,
            requests_seen: 0,
        }
    }

    fn progress(&mut self, now: Instant) {
        self.last_progress = self.last_progress.max(now);
    }

    /// `requests` is the client's count of finished attempts; a change is progress.
    fn observe_requests(&mut self, requests: u64, now: Instant) {
        if requests != self.requests_seen {
            self.requests_seen = requests;
            self.progress(now);
        }
    }

    /// Feed the watchdog only if there was progress within `window`.
    fn healthy(&self, now: Instant, window: Duration) -> bool {
        now.saturating_duration_since(self.last_progress) <= window
    }
}

/// Pings systemd's watchdog every `every` (a quarter of `WatchdogSec`) while the daemon made
/// progress within `window`. After a stall, systemd kills the process at most `window` plus
/// `WatchdogSec` later.
async fn feed_watchdog(
    agent: Arc<Agent>,
    systemd: Arc<SystemdHooks>,
    liveness: Arc<Mutex<Liveness>>,
    mut shutdown: Shutdown,
    every: Duration,
    window: Duration,
) {
    let mut warned = false;
    let mut tick = tokio::time::interval(every);
    loop {
        // A stopping daemon (STOPPING=1) must not look alive any more.
        tokio::select! {
            biased;
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        if shutdown.is_triggered() {
            return;
        }
        let requests: u64 = agent
            .client()
            .metrics()
            .requests
            .iter()
            .map(|r| r.count)
            .sum();
        let now = Instant::now();
        let healthy = {
            let mut l = liveness.lock().unwrap_or_else(PoisonError::into_inner);
            l.observe_requests(requests, now);
            l.healthy(now, window)
        };
        if healthy {
            systemd.alive();
            warned = false;
        } else if !warned {
            warned = true;
            tracing::error!(
                stalled_for = ?window,
                "no progress (no finished request, no scheduler wake-up); no longer feeding the systemd watchdog, which will restart the agent"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_is_fed_while_requests_finish_or_the_scheduler_wakes() {
        let t0 = Instant::now();
        let window = Duration::from_secs(60);
        let mut l = Liveness::new(t0);
        assert!(l.healthy(t0 + Duration::from_secs(60), window));
        assert!(!l.healthy(t0 + Duration::from_secs(61), window));

        // A long cycle: no scheduler wake-up, but requests keep finishing.
        l.observe_requests(5, t0 + Duration::from_secs(50));
        assert!(l.healthy(t0 + Duration::from_secs(100), window));
        // The same count again is no progress.
        l.observe_requests(5, t0 + Duration::from_secs(100));
        assert!(!l.healthy(t0 + Duration::from_secs(111), window));

        // The scheduler shows it is alive again.
        l.progress(t0 + Duration::from_secs(120));
        assert!(l.healthy(t0 + Duration::from_secs(170), window));
        // Progress never moves backwards (hooks may report from several threads).
        l.progress(t0);
        assert!(l.healthy(t0 + Duration::from_secs(170), window));
    }
}
