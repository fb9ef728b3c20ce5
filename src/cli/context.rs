//! Building the agent's parts from the configuration, shared by the commands.
//!
//! Every step keeps its error type inside the `anyhow` chain, so `cli::report` can tell a
//! configuration problem (exit 78) from a runtime one.

use std::sync::Arc;

use anyhow::Context as _;
use ttp_encode::profile::{EncodingProfile, ProfileEncoder};

use super::ConfigArg;
use crate::agent::{Agent, AgentOptions, RetrySettings, Shutdown};
use crate::client::{ClientSettings, TtpClient};
use crate::config::{AgentConfig, ConfigError, LogFormat, Secrets};
use crate::store::{IdatKey, Store, StoreOptions};

pub struct Loaded {
    pub config: AgentConfig,
    pub secrets: Secrets,
}

/// Read the configuration and the secrets it points to.
pub fn load(arg: &ConfigArg) -> anyhow::Result<Loaded> {
    let config = AgentConfig::load(arg.config.as_deref())?;
    let secrets = config.load_secrets()?;
    Ok(Loaded { config, secrets })
}

/// Start logging with the command line's choices first, then the configuration's.
pub fn init_logging(config: &AgentConfig, format: Option<LogFormat>, level: Option<&str>) {
    crate::logging::init(
        format.unwrap_or(config.log.format),
        level.unwrap_or(config.log.level.as_str()),
    );
}

/// Log the warnings the configuration and secrets produced (risky but valid settings).
pub fn log_warnings(loaded: &Loaded) {
    for w in loaded.config.warnings() {
        tracing::warn!("{w}");
    }
    for w in &loaded.secrets.warnings {
        tracing::warn!("{w}");
    }
}

pub fn store_options(config: &AgentConfig, secrets: &Secrets) -> anyhow::Result<StoreOptions> {
    let idat_key =
        IdatKey::from_key_file_bytes(secrets.idat_key.expose(), &config.store.idat_key_file)
            .context("[store] idat_key_file")?;
    Ok(StoreOptions {
        path: config.store.path.clone(),
        cache_capacity: config.store.cache_capacity.0,
        idat_key,
        lock_wait: crate::store::DEFAULT_LOCK_WAIT,
    })
}

pub fn open_store(config: &AgentConfig, secrets: &Secrets) -> anyhow::Result<Arc<Store>> {
    super::owner::refuse_foreign_store(&config.store.path)?;
    let opts = store_options(config, secrets)?;
    let store = Store::open(&opts)?;
    Ok(Arc::new(store))
}

pub fn client(config: &AgentConfig, secrets: &Secrets) -> anyhow::Result<TtpClient> {
    Ok(TtpClient::new(client_settings(config, secrets))?)
}

/// The client's settings from `[ttp]` and the secrets (for callers that adjust them, such as
/// `check`, which retries less).
pub fn client_settings(config: &AgentConfig, secrets: &Secrets) -> ClientSettings {
    ClientSettings::from_config(&config.ttp, secrets)
}

/// The agent's settings, from values the configuration converted when it was loaded.
pub fn options(config: &AgentConfig) -> AgentOptions {
    let defaults = AgentOptions::new(config.ttp.study.clone(), config.ttp.target.clone());
    AgentOptions {
        relisting: config.ttp.task_relisting,
        settle: config.ttp.settle.delta(),
        concurrency: config.dispatch.concurrency,
        retry: RetrySettings {
            base: config.dispatch.retry_base,
            cap: config.dispatch.retry_cap,
            ..RetrySettings::default()
        },
        batch_size: config.submit.batch_size,
        // More batches in flight than the client lets out at once would only mark records
        // `Sending` early.
        batches_in_flight: config
            .submit
            .batches_in_flight
            .min(config.ttp.max_concurrency),
        recheck_after: config.submit.recheck_after.delta(),
        task_retention: config.store.task_retention.delta(),
        idat_retention: config.store.idat_retention.delta(),
        missing_elements: config.dispatch.missing_elements,
        approvals_required: match config.dispatch.idat_release {
            crate::config::IdatRelease::Automatic => 0,
            crate::config::IdatRelease::Approval => config.dispatch.approvals_required,
        },
        release_elements: config.dispatch.release_elements.clone(),
        // The study and target, and what is not configurable (the group commit's size).
        ..defaults
    }
}

/// The typed encoding profile from `[encoding]`, with errors naming the section and file.
pub fn encoder(config: &AgentConfig) -> anyhow::Result<ProfileEncoder> {
    let file = config.source_file().map_or_else(
        || "the configuration".to_string(),
        |p| p.display().to_string(),
    );
    let table = config.encoding.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{file}: section [encoding] is missing; it describes how records become Bloom filters (see config/agent.toml)"
        )
    })?;
    let profile: EncodingProfile = toml::Value::Table(table)
        .try_into()
        .map_err(|e| anyhow::anyhow!("{file}: section [encoding]: {e}"))?;
    // The seeds or the clkhash secret, read like every other secret (the warnings about their
    // permissions were reported when the secrets were loaded).
    let secret = config.read_encoding_secret(&mut Vec::new())?;
    let encoder = ProfileEncoder::load_with_secret(
        &profile,
        config.encoding_base_dir(),
        secret.as_ref().map(|s| s.expose()),
    )
    .map_err(|e| anyhow::anyhow!("{file}: section [encoding]: {e}"))?;
    Ok(encoder)
}

pub fn agent(loaded: &Loaded, shutdown: Shutdown) -> anyhow::Result<Arc<Agent>> {
    let store = open_store(&loaded.config, &loaded.secrets)?;
    let client = client(&loaded.config, &loaded.secrets)?;
    Ok(Agent::new(store, client, options(&loaded.config), shutdown))
}

/// A configuration error found by the CLI itself (not by the loader), so it exits with 78 too.
pub fn config_error(message: String) -> anyhow::Error {
    anyhow::Error::new(ConfigError::Cli(message))
}
