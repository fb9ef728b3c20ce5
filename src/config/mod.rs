//! The agent's configuration: a TOML file overlaid by environment variables, and the secrets
//! it points to.
//!
//! # Where values come from
//!
//! Each setting is looked up in three places; the first that has it wins:
//!
//! 1. an environment variable `TTP_AGENT__<SECTION>__<KEY>`, upper case, with double
//!    underscores between prefix, section and key: `[ttp] base_url` is
//!    `TTP_AGENT__TTP__BASE_URL`, `[store] path` is `TTP_AGENT__STORE__PATH`. An empty
//!    variable counts as unset;
//! 2. the configuration file: `--config PATH`, or [`DEFAULT_CONFIG_PATH`]. An explicitly named
//!    file must exist; when the default file is absent the environment alone is used, so a
//!    container needs no file;
//! 3. the built-in default (see `config/agent.toml`, which documents every key).
//!
//! Environment values are text and are read *as the setting's type requires*: a number for
//! `batch_size`, a duration for `timeout`, and, for string settings, exactly the text given.
//! Nothing is guessed from the look of a value, so a cron expression such as
//! `0 */15 * * * *` or a URL passes through untouched.
//!
//! # Paths
//!
//! A relative path in the file is resolved against the directory of the file (so a
//! configuration directory can be moved as a whole); a relative path from the environment is
//! resolved against the working directory. The `[encoding]` section resolves its own paths
//! against [`AgentConfig::encoding_base_dir`].
//!
//! A path setting may start with `${CREDENTIALS_DIRECTORY}/`: systemd sets that variable for a
//! unit with `LoadCredential=` to the private directory holding the service's secrets, so
//! `api_key_file = "${CREDENTIALS_DIRECTORY}/api-key"` names the credential `api-key`. No
//! other variable is expanded.
//!
//! # Strictness
//!
//! Every key is checked against the list in `schema.rs`: a key the agent does not know is an
//! error with a "did you mean" suggestion, in the file and in the environment alike, because a
//! misspelt optional key would otherwise be silently ignored. Values are validated when
//! loaded (cron expression, time zone, ranges, URL scheme, pairs of keys that belong
//! together), so `ttp-agent check` finds every mistake the agent would trip over later.
//! Errors name the file and line, or the environment variable, and the key; see
//! [`ConfigError`]. All of them map to exit status 78 (`EX_CONFIG`).
//!
//! # Secrets
//!
//! Secret values never appear in the configuration, only the paths of files holding them
//! (`api_key_file`, `basic_password_file`, `idat_key_file`, `token_file`,
//! `webhook_token_file`), which suits
//! systemd credentials, Docker and Kubernetes secrets alike. [`AgentConfig::load_secrets`]
//! reads them; see the `secrets` module for the rules.

mod endpoint;
mod error;
mod layers;
mod schema;
mod secrets;
mod values;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use reqwest::Url;

pub use endpoint::{
    UrlProblem, check_dispatcher_url, check_plain_http, check_token_url, check_url, is_loopback_ip,
    is_loopback_url,
};
pub use error::{ConfigError, ENV_PREFIX, EXIT_CODE_CONFIG, KeyPath, Origin, SecretProblem};
pub use secrets::{SecretFileWarning, Secrets};
pub use values::{
    ApiKeyIn, ByteSize, IdatRelease, LogFormat, LogLevel, MissingElements, ReleaseElements, Span,
    TaskRelisting, WebhookUrl,
};

use layers::{Layers, Recorded};
use schema::*;
use secrets::SecretKind;
use values::quoted;

/// Where the agent looks for its configuration file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ttp-agent/agent.toml";

/// The default location of the embedded store.
pub const DEFAULT_STORE_PATH: &str = "/var/lib/ttp-agent/store";

/// Where systemd puts the secrets of `ttp-agent.service` (`LoadCredential=`): the value of
/// `$CREDENTIALS_DIRECTORY` for the daemon.
pub const SERVICE_CREDENTIALS_DIR: &str = "/run/credentials/ttp-agent.service";

/// Where the daemon's control socket is unless `[control] socket` says otherwise: in the
/// runtime directory systemd creates for the unit (`RuntimeDirectory=ttp-agent`).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ttp-agent/control.sock";

/// The whole configuration, validated. Paths are absolute (or as given when absolute).
#[derive(Clone)]
#[non_exhaustive]
pub struct AgentConfig {
    pub ttp: TtpConfig,
    pub schedule: ScheduleConfig,
    pub store: StoreConfig,
    /// The `[encoding]` section, unparsed.
    ///
    /// Placeholder: the typed profile (`ttp_encode::profile`) replaces this table once it
    /// exists. It may hold seeds, so `Debug` and the summary never show its contents.
    pub encoding: Option<toml::Table>,
    /// The `[input]` section (how `submit` reads site exports), unparsed:
    /// `crate::submit::input::InputSettings::from_table` reads it.
    pub input: Option<toml::Table>,
    pub submit: SubmitConfig,
    pub dispatch: DispatchConfig,
    pub admin: AdminConfig,
    pub control: ControlConfig,
    pub handover: HandoverConfig,
    pub log: LogConfig,
    /// The file that was loaded, absolute; `None` for an environment-only configuration.
    source_file: Option<PathBuf>,
    /// The directory relative paths in `[encoding]` are resolved against.
    base_dir: PathBuf,
    /// Where the path keys of `[encoding]` were set, for errors about their files.
    encoding_origins: Vec<(&'static str, Origin)>,
    /// Every key's effective value and origin, as loaded, for `redacted_summary`.
    recorded: Vec<Recorded>,
}

/// `[ttp]`: the dispatcher and how to talk to it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TtpConfig {
    /// The dispatcher base, e.g. `https://fttp.example.org/ttp-fhir/fhir/dispatcher`;
    /// operations are appended as `/$requestTasks`. No query, fragment or credentials.
    pub base_url: Url,
    /// The study (project) name the fTTP assigned.
    pub study: String,
    /// The site's target domain.
    pub target: String,
    pub api_key_file: Option<PathBuf>,
    /// The request header carrying the API key (default `apiKey`); a valid header name.
    pub api_key_header: String,
    /// Where the key travels: the header, the `apikey` body parameter, or both
    /// (`api_key_in`; the deprecated `send_api_key_in_body = true` adds the body).
    pub api_key_in: ApiKeyIn,
    /// The deprecated switch as set (kept for the summary; `api_key_in` is what counts).
    pub send_api_key_in_body: bool,
    /// HTTP Basic user; set together with `basic_password_file`.
    pub basic_user: Option<String>,
    pub basic_password_file: Option<PathBuf>,
    /// Whole-request timeout; non-zero.
    pub timeout: Duration,
    /// Twice `timeout`: how long an in-doubt answer must be old before a listing may judge it
    /// (the fTTP may still be processing a request the agent gave up on).
    pub settle: Span,
    /// TCP and TLS connect timeout; non-zero.
    pub connect_timeout: Duration,
    /// Larger responses are refused; non-zero.
    pub max_response_size: ByteSize,
    /// `max_response_size` in bytes, checked to fit this machine's address space.
    pub max_response_bytes: usize,
    /// PEM bundle of additional trusted CAs (a private CA).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mTLS; set together with `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Allow an `http://` base URL (test setups only).
    pub allow_insecure_http: bool,
    /// Requests per second to the dispatcher; positive.
    pub rate_limit_per_second: f64,
    /// Requests in flight at once; 1 to 64.
    pub max_concurrency: usize,
    pub task_relisting: TaskRelisting,
    /// Entries of one `$requestTasks` answer kept at most (tasks and the sample below).
    pub max_listed_tasks: usize,
    /// Unknown or unreadable tasks of one answer kept one by one; the rest are counted.
    pub max_unknown_tasks: usize,
    /// What a pseudonym from the fTTP must look like (anchored); others are refused.
    pub pseudonym_pattern: regex::Regex,
    /// `[ttp.oauth2]`: OAuth2 client credentials, when the gateway sits behind an
    /// authorisation server (Keycloak).
    pub oauth2: Option<OAuth2Config>,
}

/// `[ttp.oauth2]`: the client-credentials grant (RFC 6749 § 4.4). All of `token_url`,
/// `client_id` and `client_secret_file` are set, or none.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OAuth2Config {
    /// The authorisation server's token endpoint.
    pub token_url: Url,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    /// Space-separated scopes to ask for; none by default.
    pub scope: Option<String>,
}

/// Letters, digits, `_`, `.`, `:` and `-`, not starting with a punctuation character (gPAS
/// pseudonyms are a prefix, a running id and check digits, such as `mii_6348Q7`). A leading
/// `=`, `+`, `-` or `@` is what spreadsheets evaluate; `<`, quotes and spaces have no place in
/// an identifier either.
pub const DEFAULT_PSEUDONYM_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_.:-]*$";

/// `[schedule]`: when `$requestTasks` is polled.
#[derive(Clone)]
#[non_exhaustive]
pub struct ScheduleConfig {
    /// Six or seven fields, seconds first; validated to fire at least once.
    pub cron: cron::Schedule,
    /// The zone the cron expression is read in.
    pub timezone: Tz,
    /// A random delay of up to this much before each poll, so sites do not poll in lockstep.
    pub jitter: Duration,
}

impl fmt::Debug for ScheduleConfig {
    // The derived `Debug` of `cron::Schedule` lists every expanded field; the expression says
    // the same in one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScheduleConfig")
            .field("cron", &self.cron.source())
            .field("timezone", &self.timezone)
            .field("jitter", &self.jitter)
            .finish()
    }
}

/// `[store]`: the embedded store.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The store directory.
    pub path: PathBuf,
    /// The file holding the key that encrypts IDAT at rest.
    pub idat_key_file: PathBuf,
    /// The store's page cache; non-zero.
    pub cache_capacity: ByteSize,
    /// How long IDAT is kept once nothing is open for its record; non-zero.
    pub idat_retention: Span,
    /// How long finished tasks are kept; non-zero.
    pub task_retention: Span,
}

/// `[submit]`: registering Bloom filters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SubmitConfig {
    /// Filters per `$requestPsnFromBfWorkflow` request; 1 to 100 (known clients send 10–100).
    pub batch_size: usize,
    /// A record still awaiting clearing this long after its last answer is registered again
    /// (idempotent), so a `dic_psn_available` the agent missed cannot strand it; non-zero.
    pub recheck_after: Span,
    /// Batches in flight at once while registering; 1 to 64, and at most `[ttp]
    /// max_concurrency` take effect. Each batch's records are on disk as `Sending` before it
    /// leaves.
    pub batches_in_flight: usize,
}

/// `[dispatch]`: working off tasks.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DispatchConfig {
    /// Tasks handled at once; 1 to 256.
    pub concurrency: usize,
    /// How long running tasks may finish on shutdown.
    pub grace_period: Duration,
    /// First retry delay after a transient failure; non-zero, at most `retry_cap`.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// A `send_idat` asking for elements the record does not hold: answered with those it
    /// holds (`send_known`, the IG's "as far as known"), or held for a person (`hold`).
    pub missing_elements: MissingElements,
    /// A ready `send_idat` is sent at once (`automatic`) or waits for approval (`approval`).
    pub idat_release: IdatRelease,
    /// Distinct local users who must approve a release in `approval` mode: 1, or 2 (four eyes).
    pub approvals_required: usize,
    /// The elements a `send_idat` may be answered with (the site's release policy); a
    /// requested element outside it is never sent. Site-wide: a per-study list (issue 14)
    /// would override it for one study.
    pub release_elements: ReleaseElements,
}

/// `[admin]`: the health, metrics and admin endpoint.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// The file holding the bearer token the admin endpoints require.
    pub token_file: Option<PathBuf>,
    /// "Ready" requires a successful poll within this window; non-zero.
    pub ready_window: Duration,
    /// Warn when an open task expires within this time.
    pub warn_before_expiry: Span,
    /// Where warnings are POSTed; redacted in `Debug`.
    pub webhook_url: Option<WebhookUrl>,
    /// Host names the admin server answers to besides loopback ones (DNS rebinding guard).
    pub allowed_hosts: Vec<String>,
}

/// `[control]`: the daemon's local control channel (see `crate::cli::control`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ControlConfig {
    /// The Unix socket the daemon listens on and the commands connect to, as configured;
    /// `None`: [`DEFAULT_CONTROL_SOCKET`] (see [`ControlConfig::socket_path`]).
    pub socket: Option<PathBuf>,
    /// The operators group (a name or a numeric gid): its members may use the control channel
    /// besides the agent's own user and root. Unset: the agent's own user and root only.
    pub group: Option<String>,
}

impl ControlConfig {
    /// The socket's path: the configured one, or [`DEFAULT_CONTROL_SOCKET`].
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }
}

/// `[handover]`: delivering pseudonyms to the site's systems (see `crate::handover`).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HandoverConfig {
    /// Each new pseudonym is POSTed here; redacted in `Debug`. Unset: no delivery.
    pub webhook_url: Option<WebhookUrl>,
    /// The file holding the bearer token sent to the webhook.
    pub webhook_token_file: Option<PathBuf>,
    /// Whole-request timeout of one delivery; non-zero.
    pub webhook_timeout: Duration,
    /// The longest wait between two attempts of a failing delivery; non-zero.
    pub webhook_retry_cap: Duration,
}

/// `[log]`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: LogLevel,
}

impl AgentConfig {
    /// Loads the configuration for the running process: `path` (from `--config`), or
    /// [`DEFAULT_CONFIG_PATH`] when `None`, overlaid by the process environment.
    pub fn load(path: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        AgentConfig::load_from(path, process_env()?)
    }

    /// Like [`AgentConfig::load`], for the commands an operator runs beside the daemon, which
    /// share the daemon's configuration file: a path under `${CREDENTIALS_DIRECTORY}` names a
    /// file in the service's credentials directory ([`SERVICE_CREDENTIALS_DIR`]) when the
    /// variable is not set. While the daemon runs, these commands read no secret at all.
    pub fn load_beside_service(path: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        let mut env = process_env()?;
        if !env.iter().any(|(name, _)| name == layers::CREDENTIALS_VAR) {
            env.push((
                layers::CREDENTIALS_VAR.to_owned(),
                SERVICE_CREDENTIALS_DIR.to_owned(),
            ));
        }
        AgentConfig::load_from(path, env)
    }

    /// Like [`AgentConfig::load`], with the environment given as `(name, value)` pairs
    /// instead of read from the process. Variables without the `TTP_AGENT__` prefix are
    /// ignored (except `CREDENTIALS_DIRECTORY`, see "Paths" in the module docs), so passing a
    /// whole environment is fine.
    pub fn load_from(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AgentConfig, ConfigError> {
        build(file_layer(path)?, env)
    }

    /// Loads from exactly these sources: `file`, which must exist, or no file at all when
    /// `None` (the default path is not consulted), overlaid by `env`.
    pub fn from_file_and_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<AgentConfig, ConfigError> {
        let file = match file {
            Some(path) => file_layer(Some(path))?,
            None => None,
        };
        build(file, env)
    }

    /// `[admin] listen` alone, from the same sources as [`AgentConfig::load`] (environment
    /// over file over default). Nothing else is validated and no secret or path is resolved:
    /// a health check must not fail because a credential directory exists only inside the
    /// service (`${CREDENTIALS_DIRECTORY}` is unset in a shell or a container probe).
    pub fn load_admin_listen(path: Option<&Path>) -> Result<SocketAddr, ConfigError> {
        let file = file_layer(path)?;
        Layers::new(file.as_ref(), process_env()?, None)?.get(&ADMIN_LISTEN)
    }

    /// The configuration file that was loaded, if any.
    pub fn source_file(&self) -> Option<&Path> {
        self.source_file.as_deref()
    }

    /// The directory that relative paths in `[encoding]` are resolved against: the
    /// configuration file's directory, or the working directory without a file.
    pub fn encoding_base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Reads the secret files the configuration names. Fails when a named file cannot be
    /// read, is empty, or (API key, password, token) is not a single line of text; files that
    /// group or others can read are listed in [`Secrets::warnings`].
    pub fn load_secrets(&self) -> Result<Secrets, ConfigError> {
        let mut warnings = Vec::new();
        let mut read = |spec: &KeySpec, path: &Path, kind| {
            let origin = self.origin_of(spec.key);
            secrets::read_secret(spec.key, path, &origin, kind, &mut warnings)
        };
        let api_key = self
            .ttp
            .api_key_file
            .as_deref()
            .map(|p| read(&TTP_API_KEY_FILE, p, SecretKind::Line))
            .transpose()?;
        let basic_password = self
            .ttp
            .basic_password_file
            .as_deref()
            .map(|p| read(&TTP_BASIC_PASSWORD_FILE, p, SecretKind::Line))
            .transpose()?;
        let idat_key = read(
            &STORE_IDAT_KEY_FILE,
            &self.store.idat_key_file,
            SecretKind::Bytes,
        )?;
        let admin_token = self
            .admin
            .token_file
            .as_deref()
            .map(|p| read(&ADMIN_TOKEN_FILE, p, SecretKind::Token))
            .transpose()?;
        let handover_token = self
            .handover
            .webhook_token_file
            .as_deref()
            .map(|p| read(&HANDOVER_WEBHOOK_TOKEN_FILE, p, SecretKind::Line))
            .transpose()?;
        let oauth2_client_secret = self
            .ttp
            .oauth2
            .as_ref()
            .map(|o| {
                read(
                    &TTP_OAUTH2_CLIENT_SECRET_FILE,
                    &o.client_secret_file,
                    SecretKind::Line,
                )
            })
            .transpose()?;
        let encoding = self.read_encoding_secret(&mut warnings)?;
        Ok(Secrets {
            api_key,
            basic_password,
            idat_key,
            admin_token,
            handover_token,
            encoding,
            oauth2_client_secret,
            warnings,
        })
    }

    /// The secret file of the `[encoding]` profile (`seeds_file` of an fTTP profile,
    /// `secret_file` of a clkhash one), resolved against [`Self::encoding_base_dir`].
    pub fn encoding_secret_file(&self) -> Option<(KeyPath, PathBuf)> {
        let table = self.encoding.as_ref()?;
        ["seeds_file", "secret_file"].into_iter().find_map(|name| {
            let path = table.get(name)?.as_str()?;
            Some((
                KeyPath {
                    section: ENCODING_SECTION,
                    name,
                },
                self.base_dir.join(path),
            ))
        })
    }

    /// Reads the `[encoding]` profile's secret file under the rules of every secret (size
    /// cap, permission warnings, which the caller may report).
    pub fn read_encoding_secret(
        &self,
        warnings: &mut Vec<SecretFileWarning>,
    ) -> Result<Option<ttp_encode::Secret>, ConfigError> {
        match self.encoding_secret_file() {
            Some((key, path)) => secrets::read_secret(
                key,
                &path,
                &self.encoding_origin(key.name),
                SecretKind::Bytes,
                warnings,
            )
            .map(Some),
            None => Ok(None),
        }
    }

    fn encoding_origin(&self, name: &str) -> Origin {
        self.encoding_origins
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Origin::Default, |(_, o)| o.clone())
    }

    /// Settings that are valid but probably not what a production site wants, for `check`
    /// and a start-up log line.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.ttp.api_key_file.is_none()
            && self.ttp.basic_user.is_none()
            && self.ttp.oauth2.is_none()
        {
            warnings.push(
                "neither `[ttp] api_key_file` nor `[ttp] basic_user` is set: requests to the \
                 dispatcher carry no credentials"
                    .to_owned(),
            );
        }
        if self.ttp.base_url.scheme() == "http" {
            warnings.push(format!(
                "`[ttp] base_url` uses plain http ({}): API key and IDAT travel unencrypted",
                self.ttp.base_url
            ));
        }
        if !is_loopback_ip(self.admin.listen.ip()) && self.admin.token_file.is_none() {
            warnings.push(format!(
                "`[admin] listen` is {}, reachable from other hosts, but `[admin] token_file` \
                 is not set: the admin endpoints are unauthenticated",
                self.admin.listen
            ));
        }
        if let Some(url) = &self.handover.webhook_url
            && check_plain_http(url.expose(), false).is_err()
        {
            warnings.push(format!(
                "`[handover] webhook_url` uses plain http ({}): pseudonyms and the webhook \
                     token travel unencrypted",
                url.redacted()
            ));
        }
        warnings
    }

    /// The effective configuration as TOML, each value annotated with where it came from.
    /// Secret files appear as paths; `[encoding]` only as a count of keys; a webhook URL only
    /// as scheme and host. For `ttp-agent check`.
    pub fn redacted_summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        out.push_str("# Effective ttp-agent configuration.\n");
        match &self.source_file {
            Some(path) => {
                let _ = writeln!(out, "# File: {}", path.display());
            }
            None => out.push_str("# File: none (environment variables and defaults only)\n"),
        }
        out.push_str("# Secrets are shown as the paths of their files, never their contents.\n");
        let mut current_section = "";
        for spec in ALL {
            let section = spec.key.section;
            if section != current_section {
                if current_section == "store" {
                    self.summarise_encoding(&mut out);
                }
                let _ = write!(out, "\n[{section}]\n");
                current_section = section;
            }
            let recorded = self.recorded.iter().find(|r| r.key == spec.key);
            match recorded.and_then(|r| r.display.as_ref().zip(r.origin.as_ref())) {
                Some((value, origin)) => {
                    let _ = writeln!(out, "{} = {value}  # {origin}", spec.key.name);
                }
                None => {
                    let _ = writeln!(out, "# {} is not set", spec.key.name);
                }
            }
        }
        out
    }

    /// Every key with its effective value as a TOML literal (`None` when unset), in the order
    /// of `config/agent.toml`. Secret files appear as paths. For comparing two loads of the
    /// configuration (a reload on SIGHUP decides from it what changed).
    pub fn effective_values(&self) -> Vec<(KeyPath, Option<String>)> {
        ALL.iter()
            .map(|spec| {
                let display = self
                    .recorded
                    .iter()
                    .find(|r| r.key == spec.key)
                    .and_then(|r| r.display.clone());
                (spec.key, display)
            })
            .collect()
    }

    fn summarise_encoding(&self, out: &mut String) {
        out.push_str("\n[encoding]\n");
        match &self.encoding {
            Some(table) if table.is_empty() => out.push_str("# present but empty\n"),
            Some(table) => out.push_str(&format!(
                "# {} key(s) set in the file; contents not shown (they may include seeds)\n",
                table.len()
            )),
            None => out.push_str("# not set\n"),
        }
    }

    fn origin_of(&self, key: KeyPath) -> Origin {
        self.recorded
            .iter()
            .find(|r| r.key == key)
            .and_then(|r| r.origin.clone())
            .unwrap_or(Origin::Default)
    }
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("ttp", &self.ttp)
            .field("schedule", &self.schedule)
            .field("store", &self.store)
            .field(
                "encoding",
                &self
                    .encoding
                    .as_ref()
                    .map(|t| format!("<{} key(s), redacted>", t.len())),
            )
            .field("submit", &self.submit)
            .field("dispatch", &self.dispatch)
            .field("admin", &self.admin)
            .field("control", &self.control)
            .field("handover", &self.handover)
            .field("log", &self.log)
            .field("source_file", &self.source_file)
            .finish_non_exhaustive()
    }
}

/// The process's `TTP_AGENT__…` variables and `CREDENTIALS_DIRECTORY` (module docs, "Paths").
/// Others are not looked at, so an unrelated variable that is not Unicode cannot fail the
/// start.
fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut vars = Vec::new();
    for (name, value) in std::env::vars_os() {
        if !name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes())
            && name != layers::CREDENTIALS_VAR
        {
            continue;
        }
        let name = name
            .into_string()
            .map_err(|name| ConfigError::BadEnvironment {
                var: name.to_string_lossy().into_owned(),
                problem: "the name is not valid Unicode".to_owned(),
            })?;
        let value = value
            .into_string()
            .map_err(|_| ConfigError::BadEnvironment {
                var: name.clone(),
                problem: "the value is not valid Unicode".to_owned(),
            })?;
        vars.push((name, value));
    }
    Ok(vars)
}

/// Loads `default` if it exists, else the environment alone.
/// Like [`AgentConfig::load_from`] without a path, with another default file.
#[cfg(test)]
fn load_with_default(
    default: &Path,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AgentConfig, ConfigError> {
    build(file_layer_or(None, default)?, env)
}

/// The named file, which must exist, or [`DEFAULT_CONFIG_PATH`] if it exists.
fn file_layer(path: Option<&Path>) -> Result<Option<layers::FileLayer>, ConfigError> {
    file_layer_or(path, Path::new(DEFAULT_CONFIG_PATH))
}

fn file_layer_or(
    path: Option<&Path>,
    default: &Path,
) -> Result<Option<layers::FileLayer>, ConfigError> {
    match path {
        Some(path) => {
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
            Ok(Some(layers::parse_file(&path, &read_config_file(&path)?)?))
        }
        None => match read_config_file(default) {
            Ok(text) => Ok(Some(layers::parse_file(default, &text)?)),
            Err(ConfigError::FileNotFound { .. }) => Ok(None),
            Err(other) => Err(other),
        },
    }
}

fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => ConfigError::FileNotFound {
            path: path.to_owned(),
        },
        _ => ConfigError::FileUnreadable {
            path: path.to_owned(),
            source,
        },
    })?;
    String::from_utf8(bytes).map_err(|_| ConfigError::FileUnreadable {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"),
    })
}

fn build(
    file: Option<layers::FileLayer>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<AgentConfig, ConfigError> {
    let cwd = std::env::current_dir().ok();
    let mut l = Layers::new(file.as_ref(), env, cwd.clone())?;
    let ttp = build_ttp(&mut l)?;
    let schedule = ScheduleConfig {
        cron: l.get(&SCHEDULE_CRON)?,
        timezone: l.get(&SCHEDULE_TIMEZONE)?,
        jitter: l.get(&SCHEDULE_JITTER)?,
    };
    let store = StoreConfig {
        path: l.path(&STORE_PATH)?,
        idat_key_file: l.path(&STORE_IDAT_KEY_FILE)?,
        cache_capacity: positive_size(&mut l, &STORE_CACHE_CAPACITY)?,
        idat_retention: positive_span(&mut l, &STORE_IDAT_RETENTION)?,
        task_retention: positive_span(&mut l, &STORE_TASK_RETENTION)?,
    };
    let submit = SubmitConfig {
        batch_size: count(
            &mut l,
            &SUBMIT_BATCH_SIZE,
            100,
            "known clients send batches of 10 to 100 filters",
        )?,
        recheck_after: positive_span(&mut l, &SUBMIT_RECHECK_AFTER)?,
        batches_in_flight: count(
            &mut l,
            &SUBMIT_BATCHES_IN_FLIGHT,
            64,
            "1 sends batches one after the other; more than [ttp] max_concurrency has no effect",
        )?,
    };
    let dispatch = DispatchConfig {
        concurrency: count(&mut l, &DISPATCH_CONCURRENCY, 256, "")?,
        grace_period: l.get(&DISPATCH_GRACE_PERIOD)?,
        retry_base: positive_duration(&mut l, &DISPATCH_RETRY_BASE)?,
        retry_cap: positive_duration(&mut l, &DISPATCH_RETRY_CAP)?,
        missing_elements: l.get(&DISPATCH_MISSING_ELEMENTS)?,
        idat_release: l.get(&DISPATCH_IDAT_RELEASE)?,
        approvals_required: count(
            &mut l,
            &DISPATCH_APPROVALS_REQUIRED,
            2,
            "2: two different local users, four eyes",
        )?,
        release_elements: l.get(&DISPATCH_RELEASE_ELEMENTS)?,
    };
    if dispatch.retry_base > dispatch.retry_cap {
        return Err(l.invalid(
            &DISPATCH_RETRY_BASE,
            format!(
                "{} is longer than `[dispatch] retry_cap` ({})",
                values::format_duration(dispatch.retry_base),
                values::format_duration(dispatch.retry_cap)
            ),
            "a first retry delay no longer than the cap",
        ));
    }
    let admin = AdminConfig {
        listen: l.get(&ADMIN_LISTEN)?,
        token_file: l.optional_path(&ADMIN_TOKEN_FILE)?,
        ready_window: positive_duration(&mut l, &ADMIN_READY_WINDOW)?,
        warn_before_expiry: span(&mut l, &ADMIN_WARN_BEFORE_EXPIRY)?,
        webhook_url: l.optional(&ADMIN_WEBHOOK_URL)?,
        allowed_hosts: l.get::<values::HostList>(&ADMIN_ALLOWED_HOSTS)?.0,
    };
    let control = ControlConfig {
        socket: l.optional_path(&CONTROL_SOCKET)?,
        group: l.optional(&CONTROL_GROUP)?,
    };
    let handover = HandoverConfig {
        webhook_url: l.optional(&HANDOVER_WEBHOOK_URL)?,
        webhook_token_file: l.optional_path(&HANDOVER_WEBHOOK_TOKEN_FILE)?,
        webhook_timeout: positive_duration(&mut l, &HANDOVER_WEBHOOK_TIMEOUT)?,
        webhook_retry_cap: positive_duration(&mut l, &HANDOVER_WEBHOOK_RETRY_CAP)?,
    };
    for (spec, url) in [
        (&ADMIN_WEBHOOK_URL, &admin.webhook_url),
        (&HANDOVER_WEBHOOK_URL, &handover.webhook_url),
    ] {
        if let Some(url) = url {
            plain_http_rule(&l, spec, url, ttp.allow_insecure_http)?;
        }
    }
    if handover.webhook_token_file.is_some() && handover.webhook_url.is_none() {
        return Err(l.invalid(
            &HANDOVER_WEBHOOK_TOKEN_FILE,
            "it is set, but `[handover] webhook_url` is not, so there is nothing to send it to",
            "`[handover] webhook_url` to be set as well",
        ));
    }
    let log = LogConfig {
        format: l.get(&LOG_FORMAT)?,
        level: l.get(&LOG_LEVEL)?,
    };

    let encoding = match &file {
        Some(f) => encoding_with_credentials(&l, f)?,
        None => None,
    };
    let source_file = file.as_ref().map(|f| f.path.clone());
    let base_dir = source_file
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .or(cwd)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(AgentConfig {
        ttp,
        schedule,
        store,
        encoding,
        input: file.as_ref().and_then(|f| f.input.clone()),
        submit,
        dispatch,
        admin,
        control,
        handover,
        log,
        source_file,
        base_dir,
        encoding_origins: file
            .as_ref()
            .map(|f| f.encoding_origins.clone())
            .unwrap_or_default(),
        recorded: l.into_recorded(),
    })
}

/// The `[encoding]` table with `${CREDENTIALS_DIRECTORY}` expanded in its file names, as in
/// every other path setting (seeds and the clkhash secret come from systemd credentials).
fn encoding_with_credentials(
    l: &Layers,
    file: &layers::FileLayer,
) -> Result<Option<toml::Table>, ConfigError> {
    let Some(mut table) = file.encoding.clone() else {
        return Ok(None);
    };
    for (name, origin) in &file.encoding_origins {
        if let Some(toml::Value::String(path)) = table.get(*name) {
            let key = KeyPath {
                section: ENCODING_SECTION,
                name,
            };
            let expanded = l.expand_credentials(key, PathBuf::from(path), origin)?;
            if let Some(text) = expanded.to_str() {
                table.insert((*name).to_owned(), toml::Value::String(text.to_owned()));
            }
        }
    }
    Ok(Some(table))
}

/// A webhook carries pseudonyms, local ids, a bearer token or the agent's alerts: over plain
/// http only to this machine, or where `[ttp] allow_insecure_http` says a test setup wants it.
fn plain_http_rule(
    l: &Layers,
    spec: &KeySpec,
    url: &WebhookUrl,
    allow_insecure_http: bool,
) -> Result<(), ConfigError> {
    let url = url.expose();
    if check_plain_http(url, allow_insecure_http).is_err() {
        return Err(l.invalid(
            spec,
            format!(
                "the URL uses plain http:// to {}, a host other than this machine, which would \
                 send what it delivers (and its token) unencrypted",
                url.host_str().unwrap_or("?")
            ),
            "an https:// URL (plain http:// is accepted for loopback addresses, or with \
             `[ttp] allow_insecure_http = true`)",
        ));
    }
    Ok(())
}

fn build_ttp(l: &mut Layers) -> Result<TtpConfig, ConfigError> {
    let base_url: Url = l.get(&TTP_BASE_URL)?;
    let allow_insecure_http: bool = l.get(&TTP_ALLOW_INSECURE_HTTP)?;
    match check_dispatcher_url(&base_url, allow_insecure_http) {
        Ok(()) => {}
        Err(UrlProblem::PlainHttp) => return Err(l.invalid(
            &TTP_BASE_URL,
            "the URL uses plain http:// to a host other than this machine, which would send the API key and IDAT unencrypted",
            "an https:// URL (plain http:// is accepted for loopback addresses, or with `[ttp] allow_insecure_http = true`)",
        )),
        Err(problem) => {
            return Err(l.invalid(
                &TTP_BASE_URL,
                problem.to_string(),
                "the dispatcher base URL, such as \
                 \"https://fttp.example.org/ttp-fhir/fhir/dispatcher\"",
            ));
        }
    }
    let study = text(l, &TTP_STUDY)?;
    let target = text(l, &TTP_TARGET)?;

    let api_key_file = l.optional_path(&TTP_API_KEY_FILE)?;
    let api_key_header: String = l.get(&TTP_API_KEY_HEADER)?;
    if reqwest::header::HeaderName::from_bytes(api_key_header.as_bytes()).is_err() {
        return Err(l.invalid(
            &TTP_API_KEY_HEADER,
            format!(
                "{} is not a valid HTTP header name",
                quoted(&api_key_header)
            ),
            "a header name of letters, digits and `-`, such as \"apiKey\"",
        ));
    }
    let send_api_key_in_body: bool = l.get(&TTP_SEND_API_KEY_IN_BODY)?;
    if send_api_key_in_body && api_key_file.is_none() {
        return Err(l.invalid(
            &TTP_SEND_API_KEY_IN_BODY,
            "it is true, but `[ttp] api_key_file` is not set, so there is no key to send",
            "`[ttp] api_key_file` to be set as well, or false",
        ));
    }
    let explicit_api_key_in: Option<ApiKeyIn> = l.optional(&TTP_API_KEY_IN)?;
    if explicit_api_key_in.is_some() && api_key_file.is_none() {
        return Err(l.invalid(
            &TTP_API_KEY_IN,
            "it is set, but `[ttp] api_key_file` is not, so there is no key to send",
            "`[ttp] api_key_file` to be set as well, or `api_key_in` removed",
        ));
    }
    // The old switch meant "also in the body"; it still does.
    let mut api_key_in = explicit_api_key_in.unwrap_or_default();
    api_key_in.body |= send_api_key_in_body;

    let basic_user: Option<String> = l.optional(&TTP_BASIC_USER)?;
    let basic_password_file = l.optional_path(&TTP_BASIC_PASSWORD_FILE)?;
    both_or_neither(l, &TTP_BASIC_USER, &TTP_BASIC_PASSWORD_FILE)?;
    if basic_user
        .as_deref()
        .is_some_and(|u| u.is_empty() || u.contains(':'))
    {
        return Err(l.invalid(
            &TTP_BASIC_USER,
            "the user name is empty or contains `:`",
            "a non-empty user name without `:` (HTTP Basic separates user and password by `:`)",
        ));
    }

    let timeout = positive_duration(l, &TTP_TIMEOUT)?;
    let settle = timeout.checked_mul(2).and_then(Span::new).ok_or_else(|| {
        l.invalid(
            &TTP_TIMEOUT,
            format!(
                "{} is too long: twice it must stay within 100 years",
                values::format_duration(timeout)
            ),
            "a duration such as \"60s\"",
        )
    })?;
    let connect_timeout = positive_duration(l, &TTP_CONNECT_TIMEOUT)?;
    let max_response_size = positive_size(l, &TTP_MAX_RESPONSE_SIZE)?;
    let max_response_bytes = usize::try_from(max_response_size.bytes()).map_err(|_| {
        l.invalid(
            &TTP_MAX_RESPONSE_SIZE,
            "the size does not fit this machine's memory",
            "a size such as \"16MiB\"",
        )
    })?;
    let ca_file = l.optional_path(&TTP_CA_FILE)?;
    let client_cert_file = l.optional_path(&TTP_CLIENT_CERT_FILE)?;
    let client_key_file = l.optional_path(&TTP_CLIENT_KEY_FILE)?;
    both_or_neither(l, &TTP_CLIENT_CERT_FILE, &TTP_CLIENT_KEY_FILE)?;

    let rate_limit_per_second: f64 = l.get(&TTP_RATE_LIMIT_PER_SECOND)?;
    if rate_limit_per_second <= 0.0 {
        return Err(l.invalid(
            &TTP_RATE_LIMIT_PER_SECOND,
            format!("{rate_limit_per_second} is not positive"),
            "a number of requests per second greater than 0, such as 5.0 or 0.5",
        ));
    }
    let max_concurrency = count(l, &TTP_MAX_CONCURRENCY, 64, "")?;
    let task_relisting = l.get(&TTP_TASK_RELISTING)?;
    let max_listed_tasks = count(l, &TTP_MAX_LISTED_TASKS, 1_000_000, "")?;
    let max_unknown_tasks = count(l, &TTP_MAX_UNKNOWN_TASKS, 10_000, "")?;
    let pattern: String = l.get(&TTP_PSEUDONYM_PATTERN)?;
    let pseudonym_pattern = match regex::Regex::new(&pattern) {
        Ok(re) if pattern.starts_with('^') && pattern.ends_with('$') => re,
        Ok(_) => {
            return Err(l.invalid(
                &TTP_PSEUDONYM_PATTERN,
                format!("{} is not anchored", quoted(&pattern)),
                "a regular expression for the whole pseudonym, from `^` to `$`",
            ));
        }
        Err(e) => {
            return Err(l.invalid(
                &TTP_PSEUDONYM_PATTERN,
                format!(
                    "{} is not a valid regular expression: {e}",
                    quoted(&pattern)
                ),
                format!("a regular expression such as \"{DEFAULT_PSEUDONYM_PATTERN}\""),
            ));
        }
    };
    let oauth2 = build_oauth2(l)?;
    if oauth2.is_some() && basic_user.is_some() {
        return Err(l.invalid(
            &TTP_OAUTH2_TOKEN_URL,
            "it is set together with `[ttp] basic_user`, but a bearer token and Basic auth both need the Authorization header",
            "either `[ttp.oauth2]` or `[ttp] basic_user`/`basic_password_file`, not both",
        ));
    }

    Ok(TtpConfig {
        base_url,
        study,
        target,
        api_key_file,
        api_key_header,
        api_key_in,
        send_api_key_in_body,
        basic_user,
        basic_password_file,
        timeout,
        settle,
        connect_timeout,
        max_response_size,
        max_response_bytes,
        ca_file,
        client_cert_file,
        client_key_file,
        allow_insecure_http,
        rate_limit_per_second,
        max_concurrency,
        task_relisting,
        max_listed_tasks,
        max_unknown_tasks,
        pseudonym_pattern,
        oauth2,
    })
}

fn build_oauth2(l: &mut Layers) -> Result<Option<OAuth2Config>, ConfigError> {
    let token_url: Option<Url> = l.optional(&TTP_OAUTH2_TOKEN_URL)?;
    let client_id: Option<String> = l.optional(&TTP_OAUTH2_CLIENT_ID)?;
    let client_secret_file = l.optional_path(&TTP_OAUTH2_CLIENT_SECRET_FILE)?;
    let scope: Option<String> = l.optional(&TTP_OAUTH2_SCOPE)?;
    both_or_neither(l, &TTP_OAUTH2_TOKEN_URL, &TTP_OAUTH2_CLIENT_ID)?;
    both_or_neither(l, &TTP_OAUTH2_TOKEN_URL, &TTP_OAUTH2_CLIENT_SECRET_FILE)?;
    let (Some(token_url), Some(client_id), Some(client_secret_file)) =
        (token_url, client_id, client_secret_file)
    else {
        if scope.is_some() {
            return Err(l.invalid(
                &TTP_OAUTH2_SCOPE,
                "it is set, but `[ttp.oauth2] token_url` is not",
                "`[ttp.oauth2] token_url`, `client_id` and `client_secret_file` as well",
            ));
        }
        return Ok(None);
    };
    match check_token_url(&token_url) {
        Ok(()) => {}
        Err(UrlProblem::PlainHttp) => return Err(l.invalid(
            &TTP_OAUTH2_TOKEN_URL,
            "the URL uses plain http:// to a host other than this machine, which would send the client secret unencrypted",
            "an https:// URL (plain http:// is accepted for loopback addresses)",
        )),
        Err(problem) => {
            return Err(l.invalid(
                &TTP_OAUTH2_TOKEN_URL,
                problem.to_string(),
                "the authorisation server's token endpoint, such as \"https://idp.example.org/token\"",
            ));
        }
    }
    if client_id.is_empty() || client_id.trim() != client_id {
        return Err(l.invalid(
            &TTP_OAUTH2_CLIENT_ID,
            "the client id is empty or has leading or trailing whitespace",
            "the client id exactly as the authorisation server knows it",
        ));
    }
    if scope
        .as_deref()
        .is_some_and(|s| s.trim().is_empty() || s.chars().any(char::is_control))
    {
        return Err(l.invalid(
            &TTP_OAUTH2_SCOPE,
            "the scope is empty or holds a control character",
            "space-separated scope names, such as \"dispatcher\"",
        ));
    }
    Ok(Some(OAuth2Config {
        token_url,
        client_id,
        client_secret_file,
        scope,
    }))
}

/// A string that must carry a value: not empty and without surrounding whitespace (which in
/// practice comes from quoting mistakes and would make the fTTP see a different name).
fn text(l: &mut Layers, spec: &KeySpec) -> Result<String, ConfigError> {
    let value: String = l.get(spec)?;
    if value.trim().is_empty() {
        return Err(l.invalid(spec, "the value is empty", "a non-empty name"));
    }
    if value.trim() != value || value.chars().any(char::is_control) {
        return Err(l.invalid(
            spec,
            format!(
                "{} has leading or trailing whitespace or a control character",
                quoted(&value)
            ),
            "the name exactly as the fTTP assigned it",
        ));
    }
    Ok(value)
}

/// A whole number from 1 to `max`.
fn count(l: &mut Layers, spec: &KeySpec, max: u64, why: &str) -> Result<usize, ConfigError> {
    let n: u64 = l.get(spec)?;
    match usize::try_from(n) {
        Ok(n_usize) if (1..=max).contains(&n) => Ok(n_usize),
        _ => {
            let expected = if why.is_empty() {
                format!("a whole number from 1 to {max}")
            } else {
                format!("a whole number from 1 to {max} ({why})")
            };
            Err(l.invalid(spec, format!("{n} is out of range"), expected))
        }
    }
}

fn positive_duration(l: &mut Layers, spec: &KeySpec) -> Result<Duration, ConfigError> {
    let d: Duration = l.get(spec)?;
    if d.is_zero() {
        return Err(l.invalid(
            spec,
            "the duration is zero",
            "a duration greater than zero, such as \"30s\"",
        ));
    }
    Ok(d)
}

/// A positive duration the agent moves instants by, converted once.
fn positive_span(l: &mut Layers, spec: &KeySpec) -> Result<Span, ConfigError> {
    let d = positive_duration(l, spec)?;
    to_span(l, spec, d)
}

/// A duration the agent moves instants by, converted once.
fn span(l: &mut Layers, spec: &KeySpec) -> Result<Span, ConfigError> {
    let d: Duration = l.get(spec)?;
    to_span(l, spec, d)
}

fn to_span(l: &Layers, spec: &KeySpec, d: Duration) -> Result<Span, ConfigError> {
    Span::new(d).ok_or_else(|| {
        l.invalid(
            spec,
            format!("{} is longer than 100 years", values::format_duration(d)),
            "a duration such as \"30d\"",
        )
    })
}

fn positive_size(l: &mut Layers, spec: &KeySpec) -> Result<ByteSize, ConfigError> {
    let size: ByteSize = l.get(spec)?;
    if size.bytes() == 0 {
        return Err(l.invalid(
            spec,
            "the size is zero",
            "a size greater than zero, such as \"16MiB\"",
        ));
    }
    Ok(size)
}

/// Two keys that only make sense together (a user and a password, a certificate and a key).
fn both_or_neither(l: &Layers, first: &KeySpec, second: &KeySpec) -> Result<(), ConfigError> {
    let (a, b) = (l.origin(first), l.origin(second));
    match (a.is_some(), b.is_some()) {
        (true, false) => Err(l.invalid(
            first,
            format!("it is set, but `{}` is not", second.key),
            format!("`{}` and `{}` to be set together", first.key, second.key),
        )),
        (false, true) => Err(l.invalid(
            second,
            format!("it is set, but `{}` is not", first.key),
            format!("`{}` and `{}` to be set together", first.key, second.key),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
