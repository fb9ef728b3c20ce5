//! `ttp-agent run --config F`: the daemon.
//!
//! Start-up: configuration and secrets, the store (exclusive), recovery of tasks a crash left
//! `Running`, the admin endpoints (`crate::admin`: health, metrics, status page, alerts), then
//! the scheduler loop (poll at once, then on the schedule) and, with `[handover] webhook_url`,
//! the pseudonym delivery worker next to it (`crate::handover`). SIGTERM or SIGINT stops taking
//! new work; a wave under way may finish within `[dispatch] grace_period`, then the store is
//! flushed and the process exits 0. Whatever a cut-off wave leaves `Running` is reconciled at
//! the next start.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;

use super::{ConfigArg, context};
use crate::admin;
use crate::agent::{scheduler, shutdown};
use crate::config::LogFormat;
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
    let loaded = context::load(&args.config)?;
    admin::check_exposure(&loaded.config.admin, loaded.secrets.admin_token.as_ref())?;
    context::init_logging(&loaded.config, format, level.as_deref());
    context::log_warnings(&loaded);
    let schedule = scheduler::Schedule::from_config(&loaded.config.schedule);
    let grace = loaded.config.dispatch.grace_period;

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

    let hooks = Arc::new(SystemdHooks::from_env());
    let watchdog = hooks.watchdog_interval();
    let webhook = crate::handover::WebhookSettings::from_config(&loaded.config, &loaded.secrets)
        .map(|s| crate::handover::WebhookWorker::new(Arc::clone(agent.store()), s))
        .transpose()?;
    let daemon_hooks: Arc<dyn scheduler::DaemonHooks> = match &webhook {
        Some(w) => w.wake_after_cycles(hooks.clone()),
        None => hooks.clone(),
    };
    runtime.block_on(async {
        let admin = admin::start(
            &loaded.config.admin,
            &loaded.secrets,
            &agent,
            &schedule,
            listener.clone(),
            daemon_hooks,
        )
        .await?;
        let daemon = tokio::spawn(scheduler::run(
            Arc::clone(&agent),
            schedule,
            listener.clone(),
            admin.hooks,
            watchdog,
        ));
        let webhook = webhook.map(|w| tokio::spawn(w.run(listener)));
        wait_for_signal().await;
        tracing::info!(grace = ?grace, "shutdown requested; finishing work in progress");
        trigger.trigger();
        if tokio::time::timeout(grace, daemon).await.is_err() {
            tracing::warn!(
                "grace period over; tasks still in flight are reconciled at the next start"
            );
        }
        if let Some(w) = webhook {
            // It abandons a request in flight at once (delivered again at the next start).
            let _ = tokio::time::timeout(grace, w).await;
        }
        anyhow::Ok(())
    })?;
    agent.store().flush()?;
    tracing::info!("ttp-agent stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the process can only be killed; say so and wait forever
            // rather than exit at once.
            tracing::error!("could not install signal handlers; stop the agent with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
