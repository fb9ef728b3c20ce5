//! `ttp-agent status --config F [--json] [--days N]`: open tasks, what needs attention,
//! pseudonyms.
//!
//! One process at a time opens the store (it holds the store's lock). When the daemon runs,
//! it holds the store, so this command asks the daemon instead: `GET /api/status` on `[admin] listen` (with the admin token
//! when one is configured), which returns the same report built by the same code, plus the
//! daemon's own state. Either way the output is the same table or JSON; a note on stderr says
//! where the numbers came from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::{ConfigArg, context};
use crate::config::AgentConfig;
use crate::config::Secrets;
use crate::status::{self, StatusReport};
use crate::store::{Store, StoreError};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Days of history to show.
    #[arg(long, default_value_t = 7)]
    days: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let loaded = context::load(&args.config)?;
    let mut opts = context::store_options(&loaded.config, &loaded.secrets)?;
    // A lock held by the running daemon is answered by asking the daemon, at once.
    opts.lock_wait = std::time::Duration::ZERO;
    let mut report = match Store::open(&opts) {
        Ok(store) => status::build(
            &store,
            crate::admin::warn_window(&loaded.config.admin),
            args.days,
        )?,
        Err(StoreError::Locked { .. }) => {
            let url = daemon_url(loaded.config.admin.listen, args.days);
            eprintln!(
                "ttp-agent: the store is in use by the running agent; showing its status from {}",
                url.split('?').next().unwrap_or(&url)
            );
            from_daemon(&loaded.config, &loaded.secrets, &url)?
        }
        Err(e) => return Err(e.into()),
    };
    if loaded.config.handover.webhook_url.is_none() {
        // A webhook that ran once and was switched off since has nothing to report.
        report.handover.webhook = None;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status::render_text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where the daemon on `listen` answers: a wildcard address is reached over loopback.
pub fn daemon_url(listen: SocketAddr, days: u32) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/api/status?days={days}",
        SocketAddr::new(ip, listen.port())
    )
}

fn from_daemon(config: &AgentConfig, secrets: &Secrets, url: &str) -> anyhow::Result<StatusReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let token = secrets
        .admin_token
        .as_ref()
        .and_then(|t| t.expose_str().map(str::to_owned));
    runtime.block_on(fetch(url, token.as_deref(), config.admin.listen))
}

async fn fetch(url: &str, token: Option<&str>, listen: SocketAddr) -> anyhow::Result<StatusReport> {
    crate::client::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("building the HTTP client")?;
    let mut request = http.get(url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let unreachable = || {
        format!(
            "the store is locked by another process, but no ttp-agent answers on `[admin] listen` = {listen}: \
             is the process holding the store a ttp-agent daemon started with this configuration? \
             (stop it, or run this command with the daemon's configuration)"
        )
    };
    let response = request.send().await.map_err(|e| {
        anyhow::anyhow!(
            "{}: {}",
            unreachable(),
            crate::client::classify::describe_transport(&e)
        )
    })?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the running agent refused {} (HTTP 401): `[admin] token_file` must name the file the daemon reads",
            if token.is_some() {
                "this configuration's admin token"
            } else {
                "the request: it requires the admin token, and this configuration sets no `[admin] token_file`"
            }
        );
    }
    let body = response.bytes().await.map_err(|e| {
        anyhow::anyhow!(
            "reading the running agent's answer: {}",
            crate::client::classify::describe_transport(&e)
        )
    })?;
    if !status.is_success() {
        anyhow::bail!(
            "the running agent answered HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(&body[..body.len().min(500)]).trim()
        );
    }
    serde_json::from_slice(&body).map_err(|e| {
        anyhow::anyhow!(
            "{} answered, but not with a status report ({e}): is it a ttp-agent of the same version?",
            listen
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listeners_are_reached_over_loopback() {
        assert_eq!(
            daemon_url("0.0.0.0:9464".parse().unwrap(), 7),
            "http://127.0.0.1:9464/api/status?days=7"
        );
        assert_eq!(
            daemon_url("[::]:9464".parse().unwrap(), 3),
            "http://[::1]:9464/api/status?days=3"
        );
        assert_eq!(
            daemon_url("10.1.2.3:9000".parse().unwrap(), 7),
            "http://10.1.2.3:9000/api/status?days=7"
        );
    }
}
