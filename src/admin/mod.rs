//! The admin surface of the daemon: health, readiness, metrics, the status page and alerts.
//!
//! `ttp-agent run` starts a small HTTP server next to the scheduler, on `[admin] listen`
//! (default `127.0.0.1:9464`):
//!
//! | path          | what                                                        | auth  |
//! |---------------|-------------------------------------------------------------|-------|
//! | `/healthz`    | `200 ok` while the process is alive                         | never |
//! | `/readyz`     | 200 or 503 with the reason ([`health`])                     | token |
//! | `/metrics`    | Prometheus / OpenMetrics text ([`metrics`])                 | token |
//! | `/api/status` | the [`StatusReport`](crate::status::StatusReport) as JSON   | token |
//! | `/`           | the coordinators' status page ([`page`])                    | token |
//!
//! "token" means: when `[admin] token_file` is set, the request must carry
//! `Authorization: Bearer <token>` ([`auth`]). A listener reachable from other hosts without a
//! token is refused at start-up ([`check_exposure`]): the page lists task keys and deadlines,
//! which are nobody else's business, and `/metrics` tells what a site is doing.
//!
//! Every request gets [`REQUEST_TIMEOUT`] (then 503) and at most [`MAX_CONCURRENT_REQUESTS`]
//! run at once ([`bounded`]): the admin surface must never take more from the process than
//! the work it reports on. Connections are capped and timed as well ([`ServeLimits`]): at most
//! [`MAX_CONNECTIONS`] are open (more are closed as they are accepted), and one that has not
//! sent a complete request head within [`HEADER_READ_TIMEOUT`] (a half-sent request, or an idle
//! keep-alive connection) is closed.
//!
//! # Hardening against the local network and web pages
//!
//! * **Host header** ([`host_allowed`]): every request but `/healthz` must name this machine
//!   (`localhost`, an IP address) or a name in `[admin] allowed_hosts`; anything else is
//!   answered 421. A loopback listener accepts only loopback addresses and `localhost`. This
//!   stops DNS rebinding: a web page whose host name re-resolves to 127.0.0.1 would otherwise
//!   read `/api/status` and `/metrics` of a listener without a token.
//! * **Token**: at least 32 characters for any listener (checked when the secrets are read);
//!   the status page takes it from a form by POST, never from the URL ([`auth`]); wrong tokens
//!   are throttled per client address ([`auth::Throttle`]).
//!
//! # How the parts fit
//!
//! ```text
//!  scheduler ──DaemonHooks──► AdminHooks ──► SystemdHooks (sd_notify, watchdog)
//!                                │  ├─────► Health   (last cycle, for /readyz)
//!                                │  ├─────► AgentMetrics (poll histogram, errors, task events)
//!                                │  └─────► Alerts::poke (evaluate after every cycle)
//!  HTTP ──► router ──► health / metrics / api / page ──► Store (read-only, at request time)
//!  Alerts: evaluator loop (after each cycle and when a deadline enters the warning window)
//!          ──► store (mark + queue, one batch) ──► delivery loop ──► webhook (retries)
//! ```
//!
//! Everything the HTTP side shows is read from the store when asked (the open tasks, through
//! the store's open-task index, and counters: not the finished tasks kept for 30 days); the daemon's own
//! state adds only what the store cannot know (whether the last cycle failed, and why).
//! Nothing served here contains IDAT, Bloom filters or pseudonyms; metric labels are task
//! types, states, operations and classes only (bounded, and no identifiers).

pub mod alerts;
pub mod api;
pub mod auth;
pub mod health;
pub mod hooks;
pub mod metrics;
pub mod page;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse as _;
use axum::routing::get;
use chrono::{DateTime, Utc};
use ttp_encode::Secret;

use crate::agent::scheduler::{DaemonHooks, Schedule};
use crate::agent::{Agent, Shutdown};
use crate::client::TtpClient;
use crate::config::{AdminConfig, ConfigError, Secrets, is_loopback_ip, is_loopback_url};
use crate::store::Store;

pub use alerts::{Alerts, WebhookSettings};
pub use health::Health;
pub use hooks::AdminHooks;
pub use metrics::AgentMetrics;

/// How many days of history the page and `/api/status` show unless asked otherwise.
pub const DEFAULT_HISTORY_DAYS: u32 = 14;

/// The admin settings, from `[admin]` and its token file.
pub struct AdminSettings {
    /// Required on every endpoint but `/healthz` when set.
    pub token: Option<Secret>,
    /// `/readyz` wants a successful poll within this window.
    pub ready_window: Duration,
    /// Tasks expiring within this window are urgent (page, metrics, alerts).
    pub warn_before_expiry: chrono::Duration,
    /// Which `Host` headers are answered ([`host_allowed`]).
    pub hosts: HostRule,
    /// Connection limits of [`serve`].
    pub limits: ServeLimits,
    /// Distinct approvals a release needs, in approval mode (`[dispatch] idat_release`,
    /// `approvals_required`); `None` when releases are automatic. Shown with what awaits
    /// approval.
    pub approvals_required: Option<usize>,
}

/// Which `Host` headers the server answers (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    /// The listener is on a loopback address: only loopback names and addresses are served.
    pub loopback_listener: bool,
    /// `[admin] allowed_hosts`, lower case.
    pub allowed: Vec<String>,
}

/// Limits on connections, enforced by [`serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServeLimits {
    /// Connections open at once; further ones are closed as they are accepted.
    pub max_connections: usize,
    /// A connection must deliver a complete request head within this time, counted from when
    /// the server starts waiting for one (also between keep-alive requests).
    pub header_read_timeout: Duration,
}

/// Open admin connections at most. A monitor and a few browser tabs need a handful; the unit
/// allows 4096 descriptors, which a flood of idle connections must not take.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send a request head, and stay idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
        }
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ready_window", &self.ready_window)
            .field("warn_before_expiry", &self.warn_before_expiry)
            .field("hosts", &self.hosts)
            .field("limits", &self.limits)
            .field("approvals_required", &self.approvals_required)
            .finish()
    }
}

impl AdminSettings {
    pub fn from_config(admin: &AdminConfig, secrets: &Secrets) -> AdminSettings {
        AdminSettings {
            token: secrets.admin_token.clone(),
            ready_window: admin.ready_window,
            warn_before_expiry: warn_window(admin),
            hosts: HostRule {
                loopback_listener: is_loopback_ip(admin.listen.ip()),
                allowed: admin.allowed_hosts.clone(),
            },
            limits: ServeLimits::default(),
            approvals_required: None,
        }
    }
}

/// `[admin] warn_before_expiry`, for date arithmetic.
pub fn warn_window(admin: &AdminConfig) -> chrono::Duration {
    admin.warn_before_expiry.delta()
}

/// The study and site the agent works for (shown on the page and sent with alerts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    pub study: String,
    pub target: String,
}

/// Everything the handlers share.
pub struct AdminState {
    pub(crate) store: Arc<Store>,
    pub(crate) client: Option<TtpClient>,
    pub(crate) settings: AdminSettings,
    pub(crate) site: Site,
    pub(crate) health: Health,
    pub(crate) metrics: Arc<AgentMetrics>,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) throttle: auth::Throttle,
}

impl AdminState {
    /// `client` provides the request counters for `/metrics` (absent in tests that serve a
    /// store without an agent).
    pub fn new(
        store: Arc<Store>,
        client: Option<TtpClient>,
        settings: AdminSettings,
        site: Site,
        metrics: Arc<AgentMetrics>,
    ) -> Arc<AdminState> {
        Arc::new(AdminState {
            store,
            client,
            settings,
            site,
            health: Health::new(),
            metrics,
            started_at: Utc::now(),
            throttle: auth::Throttle::default(),
        })
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    pub fn metrics(&self) -> &Arc<AgentMetrics> {
        &self.metrics
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }
}

/// Why the admin server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot listen on {addr} (`[admin] listen`): {source}; is another ttp-agent (or another service) using that port? Choose a free port"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("`[admin] webhook_url`: cannot build the HTTP client for the webhook: {0}")]
    Webhook(String),
}

/// Refuses a listener that other hosts can reach unless a token protects it. Run before
/// anything else at start-up; the error is a configuration error (exit 78).
pub fn check_exposure(admin: &AdminConfig, token: Option<&Secret>) -> Result<(), ConfigError> {
    if is_loopback_ip(admin.listen.ip()) || token.is_some() {
        return Ok(());
    }
    Err(ConfigError::Cli(format!(
        "`[admin] listen` is {}, which other hosts can reach, but `[admin] token_file` is not set: \
         refusing to serve the admin endpoints (task keys, deadlines, metrics) without a token. \
         Set `[admin] token_file` to a file holding a long random token (e.g. `openssl rand -hex 32 > \
         /etc/ttp-agent/admin-token`), or listen on 127.0.0.1",
        admin.listen
    )))
}

/// How long one admin request may take before it is answered 503. The reads behind the
/// endpoints take milliseconds; one that takes this long is stuck (a store under heavy load),
/// and a monitor is better told so than left waiting.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How many admin requests are served at once; more wait for a turn (within the timeout).
/// Each holds a store read and its report in memory, and the admin surface shares the
/// process with the agent's real work: a scraper or page refresh gone wild must not crowd it.
pub const MAX_CONCURRENT_REQUESTS: usize = 8;

/// The routes (see the module docs), with [`REQUEST_TIMEOUT`] and [`MAX_CONCURRENT_REQUESTS`].
pub fn router(state: Arc<AdminState>) -> Router {
    bounded(routes(state), REQUEST_TIMEOUT, MAX_CONCURRENT_REQUESTS)
}

/// Puts a time limit on every request of `router` and a cap on how many run at once, one cap
/// for the whole server (a semaphore shared by every route and connection). Waiting for a
/// turn counts against the time limit. A request over time is answered 503.
pub fn bounded(router: Router, timeout: Duration, concurrent: usize) -> Router {
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrent));
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let slots = Arc::clone(&slots);
            async move {
                let served = async move {
                    // The semaphore is never closed, so acquiring fails only in theory.
                    let _slot = slots.acquire_owned().await.ok()?;
                    Some(next.run(req).await)
                };
                match tokio::time::timeout(timeout, served).await {
                    Ok(Some(response)) => response,
                    _ => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "the admin request did not finish in time; try again\n",
                    )
                        .into_response(),
                }
            }
        },
    ))
}

fn routes(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/api/status", get(api::status))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_token,
        ));
    // Everything but /healthz checks the Host header; /healthz says only "ok", and container
    // probes address it by whatever name or address the orchestrator has.
    let guarded = Router::new()
        .route("/", get(page::page).post(auth::login))
        .merge(protected)
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            check_host,
        ));
    Router::new()
        .route("/healthz", get(health::healthz))
        .merge(guarded)
        .layer(axum::middleware::from_fn(auth::common_headers))
        .layer(axum::middleware::from_fn(auth::client_address))
        .with_state(state)
}

/// Whether a request naming `host` (the `Host` header, port included or not) is answered.
/// Names that are not this machine's are what DNS rebinding uses: an attacker's name that
/// re-resolves to this machine. IP addresses cannot be rebound, so a listener other hosts can
/// reach answers any address, and a loopback listener loopback ones.
pub fn host_allowed(rule: &HostRule, host: &str) -> bool {
    // `Url` splits the port off and knows bracketed IPv6; a Host header never has a path.
    let Ok(url) = reqwest::Url::parse(&format!("http://{host}/")) else {
        return false;
    };
    if url.path() != "/" || url.username() != "" || !host.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let name = match url.host() {
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => {
            return !rule.loopback_listener || is_loopback_url(&url);
        }
        None => return false,
    };
    is_loopback_url(&url) || rule.allowed.contains(&name)
}

async fn check_host(
    axum::extract::State(state): axum::extract::State<Arc<AdminState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok());
    match host {
        Some(host) if host_allowed(&state.settings.hosts, host) => next.run(request).await,
        _ => (
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "this host name is not served here; add it to `[admin] allowed_hosts` if it is this \
             agent's\n",
        )
            .into_response(),
    }
}

/// Binds the listener (port 0 picks a free port; tests use that).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, AdminError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

/// Serves until `shutdown` fires, within the state's [`ServeLimits`].
///
/// Its own accept loop rather than `axum::serve`, which has neither a connection cap nor a
/// header-read timeout: a connection beyond the cap is closed at once (a refused scrape is
/// retried; a process out of descriptors is not), and hyper closes a connection whose request
/// head is not complete in time. Connections still open at shutdown are dropped with the
/// runtime; admin requests are reads.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    let limits = state.settings.limits;
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors or a connection reset before accept: keep serving.
                Err(e) => {
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.wait() => return Ok(()),
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "admin server: connection limit reached; closing a new connection");
            drop(stream);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    app.clone().oneshot(request.map(axum::body::Body::new))
                },
            );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "admin connection ended");
            }
            drop(slot);
        });
    }
}

/// What [`start`] set running.
pub struct Running {
    /// Give these to the scheduler.
    pub hooks: Arc<dyn DaemonHooks>,
    /// Where the server listens (the real port when `[admin] listen` asked for port 0).
    pub addr: SocketAddr,
    pub state: Arc<AdminState>,
    pub alerts: Arc<Alerts>,
}

/// Starts the admin surface of the daemon: binds `[admin] listen`, spawns the server, the
/// alert evaluator and (with `[admin] webhook_url`) the webhook delivery, and wraps `inner`
/// (the systemd hooks) in hooks that feed them. Call inside the runtime, after
/// [`check_exposure`] and `Agent::recover`.
pub async fn start(
    admin: &AdminConfig,
    secrets: &Secrets,
    agent: &Arc<Agent>,
    schedule: &Schedule,
    shutdown: Shutdown,
    inner: Arc<dyn DaemonHooks>,
) -> Result<Running, AdminError> {
    let mut settings = AdminSettings::from_config(admin, secrets);
    warn_if_window_shorter_than_schedule(settings.ready_window, schedule);
    let opts = agent.options();
    // The agent's options say 0 when releases are automatic.
    settings.approvals_required = (opts.approvals_required > 0).then_some(opts.approvals_required);
    let site = Site {
        study: opts.study.clone(),
        target: opts.target.clone(),
    };
    let metrics = Arc::new(AgentMetrics::new());
    let webhook = admin
        .webhook_url
        .as_ref()
        .map(|url| WebhookSettings::new(url.clone()));
    let alerts = Alerts::new(
        Arc::clone(agent.store()),
        settings.warn_before_expiry,
        site.clone(),
        webhook,
        Arc::clone(&metrics),
    )?;
    let state = AdminState::new(
        Arc::clone(agent.store()),
        Some(agent.client().clone()),
        settings,
        site,
        Arc::clone(&metrics),
    );
    let listener = bind(admin.listen).await?;
    let addr = listener.local_addr().map_err(|source| AdminError::Bind {
        addr: admin.listen,
        source,
    })?;
    tracing::info!(
        listen = %addr,
        token = state.settings.token.is_some(),
        webhook = admin.webhook_url.as_ref().map(|u| u.redacted()),
        "admin endpoints: /healthz /readyz /metrics /api/status and the status page at /"
    );
    let server_state = Arc::clone(&state);
    let server_shutdown = shutdown.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, server_state, server_shutdown).await {
            tracing::error!(error = %e, "the admin server stopped");
        }
    });
    tokio::spawn(Arc::clone(&alerts).run_evaluator(shutdown.clone()));
    if alerts.has_webhook() {
        tokio::spawn(Arc::clone(&alerts).run_delivery(shutdown));
    }
    let hooks = AdminHooks::new(inner, Arc::clone(&state), Arc::clone(&alerts));
    Ok(Running {
        hooks: Arc::new(hooks),
        addr,
        state,
        alerts,
    })
}

/// `/readyz` would flap if polls are further apart than the window: say so once, at start.
fn warn_if_window_shorter_than_schedule(window: Duration, schedule: &Schedule) {
    let now = Utc::now();
    let Some(first) = schedule.next_after(now) else {
        return;
    };
    let Some(second) = schedule.next_after(first) else {
        return;
    };
    let gap = (second - first).to_std().unwrap_or_default();
    if gap > window {
        tracing::warn!(
            ready_window = %humantime::format_duration(window),
            poll_interval = %humantime::format_duration(gap),
            "`[admin] ready_window` is shorter than the time between two scheduled polls: /readyz will report \"not ready\" between polls; make the window longer than the interval"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(listen: &str) -> AdminConfig {
        AdminConfig {
            listen: listen.parse().unwrap(),
            token_file: None,
            ready_window: Duration::from_secs(3600),
            warn_before_expiry: crate::config::Span::new(Duration::from_secs(48 * 3600)).unwrap(),
            webhook_url: None,
            allowed_hosts: Vec::new(),
        }
    }

    #[test]
    fn only_this_machines_names_and_the_allowed_ones_are_served() {
        let loopback = HostRule {
            loopback_listener: true,
            allowed: vec!["agent.example.org".into()],
        };
        for ok in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "localhost:9464",
            "LOCALHOST",
            "[::1]:9464",
            // The one loopback rule (`config::is_loopback_url`).
            "localhost.:9464",
            "[::ffff:127.0.0.1]:9464",
            "agent.example.org:9464",
        ] {
            assert!(host_allowed(&loopback, ok), "{ok}");
        }
        for refused in [
            "attacker.example:9464",
            "localhost.attacker.example",
            "a.localhost",
            "[::ffff:10.0.0.5]",
            "10.0.0.5:9464",
            "",
            "127.0.0.1/x",
            "user@127.0.0.1",
            "local host",
        ] {
            assert!(!host_allowed(&loopback, refused), "{refused}");
        }
        let exposed = HostRule {
            loopback_listener: false,
            allowed: vec![],
        };
        assert!(host_allowed(&exposed, "10.0.0.5:9464"));
        assert!(host_allowed(&exposed, "[2001:db8::1]:9464"));
        assert!(!host_allowed(&exposed, "attacker.example"));
    }

    #[test]
    fn only_loopback_may_go_without_a_token() {
        let token = Secret::from_text("t");
        for ok in [
            "127.0.0.1:9464",
            "127.3.2.1:1",
            "[::1]:9464",
            // The one loopback rule (`config::is_loopback_ip`).
            "[::ffff:127.0.0.1]:9464",
        ] {
            assert!(check_exposure(&admin(ok), None).is_ok(), "{ok}");
        }
        for exposed in [
            "0.0.0.0:9464",
            "[::]:9464",
            "10.0.0.5:9464",
            "[::ffff:10.0.0.5]:9464",
        ] {
            let err = check_exposure(&admin(exposed), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("token_file") && err.contains(exposed), "{err}");
            assert!(check_exposure(&admin(exposed), Some(&token)).is_ok());
        }
    }

    /// A server with `/slow` (held until `release`, reporting on `entered` when it starts)
    /// and `/fast`, bounded by `timeout` and `cap`.
    async fn bounded_server(
        timeout: Duration,
        cap: usize,
    ) -> (
        SocketAddr,
        Arc<tokio::sync::Notify>,
        Arc<tokio::sync::Notify>,
    ) {
        let release = Arc::new(tokio::sync::Notify::new());
        let entered = Arc::new(tokio::sync::Notify::new());
        let (r, e) = (Arc::clone(&release), Arc::clone(&entered));
        let app = Router::new()
            .route(
                "/slow",
                get(move || {
                    let (r, e) = (Arc::clone(&r), Arc::clone(&e));
                    async move {
                        let released = r.notified();
                        e.notify_one();
                        released.await;
                        "slow"
                    }
                }),
            )
            .route("/fast", get(|| async { "fast" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = bounded(app, timeout, cap);
        tokio::spawn(async move { axum::serve(listener, app).await });
        crate::client::tls::install_crypto_provider();
        (addr, release, entered)
    }

    async fn status_of(client: &reqwest::Client, addr: SocketAddr, path: &str) -> u16 {
        let response = client.get(format!("http://{addr}{path}")).send().await;
        response.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn a_request_over_time_is_answered_503() {
        let (addr, _release, _entered) = bounded_server(Duration::from_millis(200), 8).await;
        let client = reqwest::Client::new();
        assert_eq!(status_of(&client, addr, "/slow").await, 503);
        assert_eq!(status_of(&client, addr, "/fast").await, 200);
    }

    /// The cap holds across connections: with the only slot taken by a request that does not
    /// finish, a fast request on another connection waits for it, and is served once it ends.
    #[tokio::test]
    async fn requests_beyond_the_cap_wait_for_a_free_slot() {
        let (addr, release, entered) = bounded_server(Duration::from_secs(60), 1).await;
        let (one, two) = (reqwest::Client::new(), reqwest::Client::new());
        let slow = tokio::spawn(async move { status_of(&one, addr, "/slow").await });
        entered.notified().await;
        let fast = tokio::spawn(async move { status_of(&two, addr, "/fast").await });
        // Without the cap this would be answered at once.
        let waited = tokio::time::timeout(Duration::from_millis(500), fast).await;
        let Err(_) = waited else {
            panic!("a request beyond the cap was served while the slot was taken")
        };
        release.notify_one();
        assert_eq!(slow.await.unwrap(), 200);
        let client = reqwest::Client::new();
        assert_eq!(status_of(&client, addr, "/fast").await, 200);
    }
}
