//! The HTTP client for the fTTP dispatcher.
//!
//! [`TtpClient`] is the only way the agent talks to the fTTP. It knows four operations
//! ([`Operation`]) and, for each failure, tells the caller the one thing it needs to decide
//! what to do next: the [`ErrorClass`]. The wire format (building `Parameters` bodies, parsing
//! tasks) is `ttp_proto`'s business; this module moves bytes safely.
//!
//! # Layers
//!
//! ```text
//!  TtpClient::request_tasks / request_psn / provide_patient_data / metadata   (typed, thin)
//!        │  wire.rs: body = ttp_proto::ops::…, parse = ttp_proto::…
//!        ▼
//!  TtpClient::post(op, bytes) ─► transport.rs: retries (backoff.rs) around attempts
//!        │                        each attempt: limits (limit.rs) → reqwest → classify.rs
//!        ▼
//!  reqwest + rustls (tls.rs: CA bundle, client certificate), credentials (auth.rs)
//! ```
//!
//! # What the agent can rely on
//!
//! * **Classification.** Every error is a [`TtpError`] whose [`ErrorClass`] says whether the
//!   request may be sent again and whether the server may already have acted on it; see
//!   [`classify`] for the table.
//! * **Retries.** `request_tasks`, `request_psn` and `metadata` are idempotent: transient and
//!   in-doubt failures are retried inside the call (exponential backoff with full jitter,
//!   honouring `Retry-After`; [`RetryPolicy`]). Permanent, auth and protocol failures return at
//!   once. `provide_patient_data` is attempted exactly once: IDAT is never sent twice behind
//!   the caller's back.
//! * **Limits.** A global request rate and a cap on requests in flight, shared by all clones
//!   and applied to every attempt ([`limit`]). Response bodies are read chunk by chunk and
//!   abandoned past `max_response_bytes`.
//! * **Safety.** Plain `http://` only to loopback unless explicitly allowed; redirects are not
//!   followed (the API key must not follow a `Location` header); secrets are validated at
//!   construction, sent as sensitive headers, never logged and never in `Debug` output.
//! * **Observability.** One `debug` span per attempt (`ttp_request`: op, attempt, status,
//!   class, duration) and counters by operation and status class ([`TtpClient::metrics`]).
//!   Bodies, keys and Bloom filters are never logged.

pub mod auth;
pub mod backoff;
pub mod classify;
pub mod limit;
pub mod metrics;
pub mod oauth2;
mod screen;
pub mod tls;
mod transport;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{ACCEPT, HeaderValue};
use ttp_encode::Secret;
use ttp_proto::{BloomFilter, TaskList};

pub use backoff::RetryPolicy;
pub use classify::{ErrorClass, Operation, TtpError};
pub use metrics::{ClientMetricsSnapshot, RequestCount, StatusClass};
pub use oauth2::OAuth2Settings;
pub use wire::{ParseLimits, PsnResponse};

use crate::config::{Secrets, TtpConfig, UrlProblem, check_dispatcher_url, check_token_url};

use limit::{Limits, Spacing};
use metrics::Metrics;
use transport::{FHIR_JSON, Transport};

/// Everything the client needs to know: [`ClientSettings::from_config`] for the agent's
/// commands (the typed `[ttp]` section and its secrets), or [`ClientSettings::new`] with its
/// defaults and fields adjusted.
///
/// `Debug` is safe to log: secrets print as `<redacted>`.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The dispatcher endpoint, e.g. `https://ttp.example.org/ttp-fhir/fhir/dispatcher`. The
    /// operations are appended (`/$requestTasks`, `/metadata`, ...). No user info, query or
    /// fragment; plain `http` only to this machine ([`crate::config::is_loopback_url`]) or
    /// with `allow_insecure_http`.
    pub base_url: Url,
    /// The study (project) name sent with `$requestTasks` and `$requestPsnFromBfWorkflow`.
    pub study: String,
    /// This site's target domain.
    pub target: String,
    pub auth: AuthSettings,
    /// Per-attempt limit for the whole exchange: connect, send, response, body. Default 60 s.
    pub timeout: Duration,
    /// Limit for establishing the connection (TCP and TLS). Default 10 s.
    pub connect_timeout: Duration,
    /// Largest success body accepted; larger ones are a [`ErrorClass::Protocol`] error.
    /// Default 16 MiB.
    pub max_response_bytes: usize,
    pub tls: TlsSettings,
    /// Allow `http://` to hosts other than loopback. Only for test set-ups whose network path
    /// is trusted: the API key and IDAT would travel in clear text.
    pub allow_insecure_http: bool,
    /// Global request rate towards the fTTP, per second (all clones, all attempts). Default 5.
    pub rate_limit_per_sec: f64,
    /// Requests in flight at most (all clones). Default 4.
    pub max_concurrency: usize,
    /// Default `ttp-agent/<version>` ([`ClientSettings::default_user_agent`]).
    pub user_agent: String,
    /// Retries of idempotent operations.
    pub retry: RetryPolicy,
    /// What one `$requestTasks` answer may make the agent keep.
    pub listing_limits: ParseLimits,
    /// Pseudonyms from the fTTP must match this; see [`screen`].
    pub pseudonym_pattern: regex::Regex,
}

/// Credentials. See [`auth`] for where they travel.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    pub api_key: Option<Secret>,
    /// Header carrying the API key. Default `apiKey` (THS's dispatcher REST API).
    pub api_key_header: String,
    /// Send the API key in the header `api_key_header` (default). `metadata` (a GET) carries
    /// it only there.
    pub api_key_in_header: bool,
    /// Send the API key as the `Parameters` entry `apikey` in the body (older gateways and
    /// public clients), alone or together with the header.
    pub api_key_in_body: bool,
    /// HTTP Basic auth: user name and password. Not together with `oauth2`.
    pub basic: Option<(String, Secret)>,
    /// OAuth2 client credentials: a bearer token on every request.
    pub oauth2: Option<OAuth2Settings>,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            api_key: None,
            api_key_header: "apiKey".into(),
            api_key_in_header: true,
            api_key_in_body: false,
            basic: None,
            oauth2: None,
        }
    }
}

/// Extra trust and a client certificate. All files are PEM. See [`tls`].
#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    /// Additional CA certificates (a bundle), trusted besides the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain for mTLS (leaf first); requires `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// Unencrypted private key for the client certificate (PKCS#8, PKCS#1 or SEC1).
    pub client_key_file: Option<PathBuf>,
}

impl ClientSettings {
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

    /// Settings with the defaults documented on each field.
    pub fn new(
        base_url: Url,
        study: impl Into<String>,
        target: impl Into<String>,
    ) -> ClientSettings {
        ClientSettings {
            base_url,
            study: study.into(),
            target: target.into(),
            auth: AuthSettings::default(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: ClientSettings::DEFAULT_MAX_RESPONSE_BYTES,
            tls: TlsSettings::default(),
            allow_insecure_http: false,
            rate_limit_per_sec: 5.0,
            max_concurrency: 4,
            user_agent: ClientSettings::default_user_agent(),
            retry: RetryPolicy::default(),
            listing_limits: ParseLimits::default(),
            pseudonym_pattern: default_pseudonym_pattern(),
        }
    }

    /// The settings `[ttp]` and its secrets describe. Everything was validated and converted
    /// when the configuration was loaded (errors there name the key); this only hands it over.
    pub fn from_config(ttp: &TtpConfig, secrets: &Secrets) -> ClientSettings {
        ClientSettings {
            auth: AuthSettings {
                api_key: secrets.api_key.clone(),
                api_key_header: ttp.api_key_header.clone(),
                api_key_in_header: ttp.api_key_in.header,
                api_key_in_body: ttp.api_key_in.body,
                basic: ttp.basic_user.clone().zip(secrets.basic_password.clone()),
                oauth2: ttp
                    .oauth2
                    .as_ref()
                    .zip(secrets.oauth2_client_secret.as_ref())
                    .map(|(o, secret)| OAuth2Settings {
                        token_url: o.token_url.clone(),
                        client_id: o.client_id.clone(),
                        client_secret: secret.clone(),
                        scope: o.scope.clone(),
                    }),
            },
            timeout: ttp.timeout,
            connect_timeout: ttp.connect_timeout,
            max_response_bytes: ttp.max_response_bytes,
            tls: TlsSettings {
                ca_file: ttp.ca_file.clone(),
                client_cert_file: ttp.client_cert_file.clone(),
                client_key_file: ttp.client_key_file.clone(),
            },
            allow_insecure_http: ttp.allow_insecure_http,
            rate_limit_per_sec: ttp.rate_limit_per_second,
            max_concurrency: ttp.max_concurrency,
            listing_limits: ParseLimits {
                max_tasks: ttp.max_listed_tasks,
                max_unknown: ttp.max_unknown_tasks,
                ..ParseLimits::default()
            },
            pseudonym_pattern: ttp.pseudonym_pattern.clone(),
            ..ClientSettings::new(ttp.base_url.clone(), ttp.study.clone(), ttp.target.clone())
        }
    }

    /// `ttp-agent/<crate version>`.
    pub fn default_user_agent() -> String {
        concat!("ttp-agent/", env!("CARGO_PKG_VERSION")).to_string()
    }
}

fn default_pseudonym_pattern() -> regex::Regex {
    // A constant pattern, covered by the tests of `screen`.
    regex::Regex::new(crate::config::DEFAULT_PSEUDONYM_PATTERN)
        .unwrap_or_else(|_| unreachable!("the default pseudonym pattern is valid"))
}

/// Why a [`TtpClient`] could not be built. Messages name the setting or file at fault and
/// never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("base_url {url:?} is not usable: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error(
        "base_url {url:?} uses plain http to a host that is not loopback; use https, or set \
         allow_insecure_http = true if the whole network path is trusted (the API key and \
         patient data would travel unencrypted)"
    )]
    InsecureHttp { url: String },
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {} is not usable: {reason}", path.display())]
    InvalidPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error(
        "tls.client_cert_file and tls.client_key_file must be set together; {missing} is missing"
    )]
    IncompleteClientIdentity { missing: &'static str },
    #[error("auth.api_key_header {name:?} is not a valid HTTP header name")]
    InvalidHeaderName { name: String },
    #[error("auth.api_key is not usable: {reason}")]
    InvalidApiKey { reason: &'static str },
    #[error("auth.basic is not usable: {reason}")]
    InvalidBasic { reason: &'static str },
    #[error("{setting} = {value} is not allowed: {reason}")]
    InvalidSetting {
        setting: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// The fTTP dispatcher client. Cheap to clone; clones share the connection pool, the rate
/// limit, the concurrency cap and the metrics.
#[derive(Clone)]
pub struct TtpClient {
    inner: Arc<Inner>,
}

struct Inner {
    transport: Transport,
    study: String,
    target: String,
    body_api_key: Option<Secret>,
    listing_limits: ParseLimits,
    pseudonym_pattern: regex::Regex,
}

impl std::fmt::Debug for TtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtpClient")
            .field(
                "endpoint",
                &self.inner.transport.url(Operation::Metadata).as_str(),
            )
            .field("study", &self.inner.study)
            .field("target", &self.inner.target)
            .field(
                "body_api_key",
                &self.inner.body_api_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl TtpClient {
    /// Validates `settings`, reads the TLS files and builds the client. No network traffic.
    pub fn new(settings: ClientSettings) -> Result<TtpClient, ClientConfigError> {
        let base = check_base_url(&settings.base_url, settings.allow_insecure_http)?;
        validate(&settings)?;
        let spacing = Spacing::new(settings.rate_limit_per_sec).ok_or_else(|| {
            ClientConfigError::InvalidSetting {
                setting: "rate_limit_per_sec",
                value: settings.rate_limit_per_sec.to_string(),
                reason: "must be a positive, finite number of requests per second",
            }
        })?;
        let credentials = auth::prepare(&settings.auth)?;

        tls::install_crypto_provider();
        let mut headers = credentials.headers;
        headers.insert(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        let builder = reqwest::Client::builder()
            .user_agent(settings.user_agent.as_str())
            .default_headers(headers)
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false);
        let builder = tls::configure(builder, &settings.tls)?;
        let http = builder
            .build()
            .map_err(|e| ClientConfigError::Build(classify::describe_transport(&e)))?;
        let oauth2 = match &settings.auth.oauth2 {
            Some(oauth2) => Some(token_source(&settings, oauth2)?),
            None => None,
        };

        let urls = Operation::ALL.map(|op| op_url(&base, op));
        Ok(TtpClient {
            inner: Arc::new(Inner {
                transport: Transport {
                    http,
                    urls,
                    limits: Limits::new(spacing, settings.max_concurrency),
                    metrics: Metrics::default(),
                    retry: settings.retry,
                    max_response_bytes: settings.max_response_bytes,
                    oauth2,
                },
                study: settings.study,
                target: settings.target,
                body_api_key: credentials.body_api_key,
                listing_limits: settings.listing_limits,
                pseudonym_pattern: settings.pseudonym_pattern,
            }),
        })
    }

    /// `$requestTasks`: the site's open tasks. Retried internally (idempotent).
    pub async fn request_tasks(&self) -> Result<TaskList, TtpError> {
        let op = Operation::RequestTasks;
        let body = wire::request_tasks_body(&self.inner.study, &self.inner.target, self.body_key());
        let bytes = self.inner.transport.execute(op, Some(body)).await?;
        let mut list = wire::parse_tasks_with(&bytes, &self.inner.listing_limits)
            .map_err(|e| TtpError::new(op, ErrorClass::Protocol, e.to_string()))?;
        screen::screen_tasks(&mut list, &self.inner.pseudonym_pattern);
        Ok(list)
    }

    /// `$requestPsnFromBfWorkflow` for a batch of filters, for the configured study and target.
    /// Retried internally: registering a filter again yields the same pseudonym or clearing
    /// (see [`Operation::is_idempotent`]).
    pub async fn request_psn(&self, filters: &[BloomFilter]) -> Result<PsnResponse, TtpError> {
        self.request_psn_for(&self.inner.study, &self.inner.target, filters)
            .await
    }

    /// Whether `study` and `target` are the ones this agent is configured for (the only pair a
    /// `repeat_request` may be sent for).
    pub fn is_configured_study(&self, study: &str, target: &str) -> bool {
        self.inner.study == study && self.inner.target == target
    }

    /// `$requestPsnFromBfWorkflow` with the study and target a `repeat_request` task names
    /// (they are the task's Identifier values, which need not be the configured ones).
    pub async fn request_psn_for(
        &self,
        study: &str,
        target: &str,
        filters: &[BloomFilter],
    ) -> Result<PsnResponse, TtpError> {
        let op = Operation::RequestPsn;
        let body = wire::request_psn_body(study, target, filters, self.body_key());
        let bytes = self.inner.transport.execute(op, Some(body)).await?;
        let mut response = wire::parse_psn_response(&bytes)
            .map_err(|e| TtpError::new(op, ErrorClass::Protocol, e.to_string()))?;
        screen::screen_psn_response(&mut response, &self.inner.pseudonym_pattern);
        Ok(response)
    }

    /// `$providePatientData`: answers a `send_idat` task. Exactly one attempt; on
    /// [`ErrorClass::InDoubt`] the data may have arrived and the caller must reconcile before
    /// sending it again. A 2xx with an empty or JSON body is success (the optional response
    /// `Bundle` is not used); a 2xx with any other body is [`ErrorClass::Protocol`]: it may
    /// come from a proxy, so whether the data arrived is open.
    pub async fn provide_patient_data(
        &self,
        task_id: &str,
        patient: serde_json::Value,
    ) -> Result<(), TtpError> {
        let body =
            wire::provide_patient_data_body(task_id, &self.inner.target, patient, self.body_key());
        self.inner
            .transport
            .execute(Operation::ProvidePatientData, Some(body))
            .await
            .map(drop)
    }

    /// `GET metadata`: succeeds when the endpoint answers with a FHIR `CapabilityStatement`.
    /// A reachability and configuration check (readiness, `ttp-agent check`). Retried
    /// internally.
    pub async fn metadata(&self) -> Result<(), TtpError> {
        let op = Operation::Metadata;
        let bytes = self.inner.transport.execute(op, None).await?;
        let resource_type = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("resourceType")?.as_str().map(str::to_owned));
        match resource_type.as_deref() {
            Some("CapabilityStatement") => Ok(()),
            Some(other) => Err(TtpError::new(
                op,
                ErrorClass::Protocol,
                format!("expected a CapabilityStatement, got resourceType {other:?}"),
            )),
            None => Err(TtpError::new(
                op,
                ErrorClass::Protocol,
                "the body is not a FHIR resource in JSON",
            )),
        }
    }

    /// The HTTP layer under the typed methods: POSTs `body` (a complete `Parameters` document,
    /// API key included when it travels in the body) to `op`, with the same limits, checks and
    /// retry rules, and returns the success body unparsed. For [`Operation::Metadata`], which
    /// is a GET, use [`TtpClient::metadata`]; passing it here is a [`ErrorClass::Permanent`]
    /// error.
    pub async fn post(&self, op: Operation, body: Vec<u8>) -> Result<Vec<u8>, TtpError> {
        if op == Operation::Metadata {
            return Err(TtpError::new(
                op,
                ErrorClass::Permanent,
                "metadata is fetched with GET; use TtpClient::metadata",
            ));
        }
        self.inner.transport.execute(op, Some(body)).await
    }

    /// Changes the request rate of this client and every clone of it (a configuration
    /// reload on SIGHUP). The other settings are fixed when the client is built.
    pub fn set_rate_limit(&self, rate_per_sec: f64) -> Result<(), ClientConfigError> {
        let spacing =
            Spacing::new(rate_per_sec).ok_or_else(|| ClientConfigError::InvalidSetting {
                setting: "rate_limit_per_sec",
                value: rate_per_sec.to_string(),
                reason: "must be a positive, finite number of requests per second",
            })?;
        self.inner.transport.limits.set_interval(spacing);
        Ok(())
    }

    /// The full URL of an operation (for logs and the status page; contains no secrets).
    pub fn url(&self, op: Operation) -> &str {
        self.inner.transport.url(op).as_str()
    }

    /// Counters since start-up, for `/metrics`.
    pub fn metrics(&self) -> ClientMetricsSnapshot {
        self.inner.transport.metrics.snapshot()
    }

    fn body_key(&self) -> Option<&str> {
        self.inner
            .body_api_key
            .as_ref()
            .and_then(Secret::expose_str)
    }
}

/// The token source of `[ttp.oauth2]`: its own HTTP client (same TLS trust, timeouts and
/// redirect rule, none of the dispatcher's credential headers).
fn token_source(
    settings: &ClientSettings,
    oauth2: &OAuth2Settings,
) -> Result<oauth2::TokenSource, ClientConfigError> {
    let url = oauth2.token_url.clone();
    check_token_url(&url).map_err(|problem| ClientConfigError::InvalidSetting {
        setting: "oauth2.token_url",
        value: without_userinfo(&url),
        reason: match problem {
            UrlProblem::PlainHttp => {
                "plain http is only allowed to loopback: the client secret would travel unencrypted"
            }
            _ => "must be an https URL without credentials or fragment",
        },
    })?;
    let builder = reqwest::Client::builder()
        .user_agent(settings.user_agent.as_str())
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false);
    let http = tls::configure(builder, &settings.tls)?
        .build()
        .map_err(|e| ClientConfigError::Build(classify::describe_transport(&e)))?;
    oauth2::TokenSource::new(oauth2, http, url).map_err(|reason| {
        ClientConfigError::InvalidSetting {
            setting: "oauth2.client_secret",
            value: "<redacted>".into(),
            reason,
        }
    })
}

fn validate(settings: &ClientSettings) -> Result<(), ClientConfigError> {
    let invalid = |setting, value: String, reason| {
        Err(ClientConfigError::InvalidSetting {
            setting,
            value,
            reason,
        })
    };
    if settings.study.trim().is_empty() {
        return invalid(
            "study",
            format!("{:?}", settings.study),
            "must not be empty",
        );
    }
    if settings.target.trim().is_empty() {
        return invalid(
            "target",
            format!("{:?}", settings.target),
            "must not be empty",
        );
    }
    if settings.timeout.is_zero() {
        return invalid("timeout", "0".into(), "must be longer than zero");
    }
    if settings.connect_timeout.is_zero() {
        return invalid("connect_timeout", "0".into(), "must be longer than zero");
    }
    if settings.max_response_bytes == 0 {
        return invalid("max_response_bytes", "0".into(), "must be at least 1");
    }
    if settings.max_concurrency == 0
        || settings.max_concurrency > tokio::sync::Semaphore::MAX_PERMITS
    {
        return invalid(
            "max_concurrency",
            settings.max_concurrency.to_string(),
            "must be at least 1 (and not absurdly large)",
        );
    }
    if settings.retry.max_attempts == 0 {
        return invalid("retry.max_attempts", "0".into(), "must be at least 1");
    }
    if HeaderValue::from_str(&settings.user_agent).is_err() {
        return invalid(
            "user_agent",
            format!("{:?}", settings.user_agent),
            "must be printable ASCII",
        );
    }
    Ok(())
}

/// The URL with any `user:password@` left out, for error messages.
fn without_userinfo(url: &Url) -> String {
    let mut shown = url.clone();
    // Only URLs that cannot have user info (no host) refuse these; they have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The rules `[ttp] base_url` was checked against when the configuration was loaded (where
/// the error names the key), for settings built in code.
fn check_base_url(url: &Url, allow_insecure_http: bool) -> Result<Url, ClientConfigError> {
    match check_dispatcher_url(url, allow_insecure_http) {
        Ok(()) => Ok(url.clone()),
        Err(UrlProblem::PlainHttp) => Err(ClientConfigError::InsecureHttp {
            url: without_userinfo(url),
        }),
        Err(problem) => Err(ClientConfigError::InvalidBaseUrl {
            url: without_userinfo(url),
            reason: problem.to_string(),
        }),
    }
}

fn op_url(base: &Url, op: Operation) -> Url {
    let mut url = base.clone();
    // http(s) URLs always have path segments; the `if` only satisfies the type.
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.pop_if_empty().push(op.name());
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_base_url(raw: &str, allow_insecure_http: bool) -> Result<Url, ClientConfigError> {
        check_base_url(&Url::parse(raw).expect("a URL"), allow_insecure_http)
    }

    fn url(raw: &str) -> Url {
        Url::parse(raw).expect("a URL")
    }

    #[test]
    fn operation_urls_are_appended_to_the_base() {
        for base in [
            "https://ttp.example.org/ttp-fhir/fhir/dispatcher",
            "https://ttp.example.org/ttp-fhir/fhir/dispatcher/",
        ] {
            let base = parse_base_url(base, false).expect("valid");
            assert_eq!(
                op_url(&base, Operation::RequestTasks).as_str(),
                "https://ttp.example.org/ttp-fhir/fhir/dispatcher/$requestTasks"
            );
            assert_eq!(
                op_url(&base, Operation::Metadata).as_str(),
                "https://ttp.example.org/ttp-fhir/fhir/dispatcher/metadata"
            );
        }
    }

    #[test]
    fn plain_http_only_to_loopback_unless_allowed_by_the_configurations_rule() {
        // The rule itself is tested in `config::endpoint`; the client must agree with it.
        for (raw, loopback) in [
            ("http://[::ffff:127.0.0.1]/", true),
            ("http://localhost./", true),
            ("http://[::1]/", true),
            ("http://127.0.0.2/", true),
            ("http://ttp.example.org/", false),
            ("http://[::ffff:10.0.0.1]/", false),
        ] {
            assert_eq!(crate::config::is_loopback_url(&url(raw)), loopback, "{raw}");
            match parse_base_url(raw, false) {
                Ok(_) => assert!(loopback, "{raw}"),
                Err(ClientConfigError::InsecureHttp { .. }) => assert!(!loopback, "{raw}"),
                Err(e) => panic!("{raw}: {e}"),
            }
            assert!(parse_base_url(raw, true).is_ok(), "{raw}");
        }
    }

    #[test]
    fn unusable_base_urls_are_refused_without_leaking_credentials() {
        let err = parse_base_url("https://site:hunter2@ttp.example.org/d", false)
            .expect_err("credentials refused");
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("user name or password"), "{text}");

        for bad in ["ftp://x/d", "https://x/d?apikey=1", "https://x/d#f"] {
            assert!(
                matches!(
                    parse_base_url(bad, false),
                    Err(ClientConfigError::InvalidBaseUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn settings_are_validated_with_the_setting_named() {
        let base = || ClientSettings::new(url("https://ttp.example.org/d"), "mii", "dic");
        let cases: Vec<(ClientSettings, &str)> = vec![
            (
                ClientSettings {
                    study: " ".into(),
                    ..base()
                },
                "study",
            ),
            (
                ClientSettings {
                    target: String::new(),
                    ..base()
                },
                "target",
            ),
            (
                ClientSettings {
                    timeout: Duration::ZERO,
                    ..base()
                },
                "timeout",
            ),
            (
                ClientSettings {
                    max_concurrency: 0,
                    ..base()
                },
                "max_concurrency",
            ),
            (
                ClientSettings {
                    max_response_bytes: 0,
                    ..base()
                },
                "max_response_bytes",
            ),
            (
                ClientSettings {
                    rate_limit_per_sec: 0.0,
                    ..base()
                },
                "rate_limit_per_sec",
            ),
            (
                ClientSettings {
                    rate_limit_per_sec: f64::NAN,
                    ..base()
                },
                "rate_limit_per_sec",
            ),
            (
                ClientSettings {
                    user_agent: "a\nb".into(),
                    ..base()
                },
                "user_agent",
            ),
            (
                ClientSettings {
                    retry: RetryPolicy {
                        max_attempts: 0,
                        ..RetryPolicy::default()
                    },
                    ..base()
                },
                "retry.max_attempts",
            ),
        ];
        for (settings, setting) in cases {
            let err = TtpClient::new(settings).expect_err(setting).to_string();
            assert!(err.starts_with(setting), "{err}");
        }
        assert!(TtpClient::new(base()).is_ok());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let mut settings = ClientSettings::new(url("https://ttp.example.org/d"), "mii", "dic");
        settings.auth.api_key = Some(Secret::from_text("key-c0ffee"));
        settings.auth.basic = Some(("site".into(), Secret::from_text("pw-c0ffee")));
        let shown = format!("{settings:?}");
        assert!(!shown.contains("c0ffee"), "{shown}");

        settings.auth.api_key_in_body = true;
        let client = TtpClient::new(settings).expect("valid");
        let shown = format!("{client:?}");
        assert!(!shown.contains("c0ffee"), "{shown}");
        assert!(
            shown.contains("https://ttp.example.org/d/metadata"),
            "{shown}"
        );
    }

    #[test]
    fn default_user_agent_names_the_agent_and_version() {
        assert_eq!(
            ClientSettings::default_user_agent(),
            format!("ttp-agent/{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
