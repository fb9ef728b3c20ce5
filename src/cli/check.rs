//! `ttp-agent check --config F`: is this installation ready to run?
//!
//! Walks through what the daemon needs, in the order it needs it, and prints one line per
//! step — `✓` passed, `!` a warning, `✗` failed, `–` skipped (with the reason) — then a
//! verdict:
//!
//! 1. **configuration**: the file and environment load and validate; risky settings warn;
//! 2. **secrets**: every secret file named is readable and well-formed; loose permissions warn;
//! 3. **store**: the store opens with the configured IDAT key. A store locked by a running
//!    daemon is fine (the daemon holds it), and is detected without opening it. A store that
//!    does not exist yet is fine too (the first start creates it); `check` does not create it.
//!    With `--store`, the store's integrity too (**store integrity**): every record and task
//!    opens, the indexes, counters and pseudonym log agree with the records. That reads the
//!    whole store, so it needs the daemon stopped; it is what the daemon's log asks for when a
//!    lookup meets an index entry without its record;
//! 4. **encoding**: the `[encoding]` profile loads (only `submit` needs it);
//! 5. **fTTP reachable**: `GET metadata` answers with a CapabilityStatement (DNS, TCP, TLS,
//!    base URL);
//! 6. **authentication**: an authenticated `$requestTasks` is accepted. Its result is counted
//!    and dropped, never acted on or stored. With `[ttp] task_relisting = "once"` this step is
//!    skipped: an fTTP that lists a task only once would hand it to `check` instead of to the
//!    daemon.
//!
//! Exit status: 0 every check passed (warnings allowed), 1 a check failed, 78 the
//! configuration itself is invalid (file, environment, secrets or encoding profile).

use std::fmt;
use std::path::Path;
use std::process::ExitCode;

use super::{ConfigArg, EX_CONFIG, context};
use crate::client::{ErrorClass, TtpClient, TtpError};
use crate::config::{AgentConfig, Secrets, TaskRelisting};
use crate::store::{LockState, Store, StoreError};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,

    /// Also print the effective configuration (secrets appear as the paths of their files).
    #[arg(long)]
    show_config: bool,

    /// Also verify the store's integrity: every record and task opens, and the indexes,
    /// counters and pseudonym log agree with the records (a full read; stop the daemon first).
    #[arg(long = "store")]
    integrity: bool,

    /// Check what this command needs (default: every command's needs).
    #[arg(
        long = "for",
        value_enum,
        default_value = "all",
        value_name = "COMMAND"
    )]
    purpose: Purpose,
}

/// The command whose needs `check` verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// Everything any command needs.
    All,
    /// The daemon: store, fTTP, admin listener (no encoding profile).
    Run,
    /// `submit`: store, encoding profile, fTTP.
    Submit,
    /// Commands that work on the store alone: `status`, `export`, `resolve`, `backup`, `purge`.
    Store,
}

impl Purpose {
    fn needs_encoding(self) -> bool {
        matches!(self, Purpose::All | Purpose::Submit)
    }

    fn needs_fttp(self) -> bool {
        !matches!(self, Purpose::Store)
    }

    fn needs_admin(self) -> bool {
        matches!(self, Purpose::All | Purpose::Run)
    }
}

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    Pass,
    Warn,
    Fail,
    Skip,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mark::Pass => "✓",
            Mark::Warn => "!",
            Mark::Fail => "✗",
            Mark::Skip => "–",
        })
    }
}

/// How bad a failure is for the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Severity {
    /// Something outside the configuration (network, fTTP, store).
    Check,
    /// The configuration is invalid: exit 78, like every command would.
    Config,
}

struct Line {
    mark: Mark,
    step: &'static str,
    detail: String,
}

#[derive(Default)]
struct Checklist {
    lines: Vec<Line>,
    failed: Option<Severity>,
}

impl Checklist {
    fn push(&mut self, mark: Mark, step: &'static str, detail: impl Into<String>) {
        let line = Line {
            mark,
            step,
            detail: detail.into(),
        };
        crate::outln!("{} {:<15} {}", line.mark, line.step, line.detail);
        self.lines.push(line);
    }

    fn pass(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(Mark::Pass, step, detail);
    }

    fn warn(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(Mark::Warn, step, detail);
    }

    fn skip(&mut self, step: &'static str, detail: impl Into<String>) {
        self.push(Mark::Skip, step, detail);
    }

    fn fail(&mut self, severity: Severity, step: &'static str, detail: impl Into<String>) {
        self.push(Mark::Fail, step, detail);
        self.failed = self.failed.max(Some(severity));
    }

    /// Prints the verdict and chooses the exit status.
    fn finish(self) -> ExitCode {
        let count = |m: Mark| self.lines.iter().filter(|l| l.mark == m).count();
        let warnings = match count(Mark::Warn) {
            0 => String::new(),
            1 => " (1 warning)".to_owned(),
            n => format!(" ({n} warnings)"),
        };
        crate::outln!();
        match self.failed {
            None => {
                crate::outln!("verdict: ready — every check passed{warnings}");
                ExitCode::SUCCESS
            }
            Some(severity) => {
                let failed: Vec<&str> = self
                    .lines
                    .iter()
                    .filter(|l| l.mark == Mark::Fail)
                    .map(|l| l.step)
                    .collect();
                crate::outln!(
                    "verdict: NOT ready — failed: {}{warnings}",
                    failed.join(", ")
                );
                match severity {
                    Severity::Config => ExitCode::from(EX_CONFIG),
                    Severity::Check => ExitCode::FAILURE,
                }
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut list = Checklist::default();
    let config = match AgentConfig::load(args.config.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            list.fail(Severity::Config, "configuration", e.to_string());
            return Ok(list.finish());
        }
    };
    match config.source_file() {
        Some(path) => list.pass("configuration", format!("{} is valid", path.display())),
        None => list.pass(
            "configuration",
            "valid (no file: environment variables and defaults only)",
        ),
    }
    for warning in config.warnings() {
        list.warn("configuration", warning);
    }
    for placeholder in placeholders(&config) {
        list.fail(Severity::Config, "configuration", placeholder);
    }
    if args.show_config {
        crate::outln!("\n{}", config.redacted_summary());
    }

    let secrets = match config.load_secrets() {
        Ok(secrets) => secrets,
        Err(e) => {
            list.fail(Severity::Config, "secrets", e.to_string());
            return Ok(list.finish());
        }
    };
    let problems = secret_problems(&config, &secrets);
    if problems.is_empty() {
        list.pass("secrets", describe_secrets(&secrets));
    }
    for problem in problems {
        list.fail(Severity::Config, "secrets", problem);
    }
    for warning in &secrets.warnings {
        list.warn("secrets", warning.to_string());
    }
    if args.purpose.needs_admin() {
        match crate::admin::check_exposure(&config.admin, secrets.admin_token.as_ref()) {
            Ok(()) => list.pass(
                "admin listener",
                format!("{} is allowed", config.admin.listen),
            ),
            Err(e) => list.fail(Severity::Config, "admin listener", e.to_string()),
        }
    }

    check_store(&mut list, &config, &secrets, args.integrity);
    check_encoding(&mut list, &config, args.purpose);
    if args.purpose.needs_fttp() {
        check_fttp(&mut list, &config, &secrets);
    } else {
        list.skip(
            "fTTP reachable",
            "not needed by commands that work on the store alone",
        );
    }
    Ok(list.finish())
}

/// The example values of `config/agent.toml` and of `init`'s starter, which a real
/// installation must replace: they load fine, and then nothing works.
fn placeholders(config: &AgentConfig) -> Vec<String> {
    let mut found = Vec::new();
    let origin = |key: &str| {
        config
            .source_file()
            .map_or_else(|| "the environment".to_owned(), |p| p.display().to_string())
            + &format!(" ({key})")
    };
    let host = config.ttp.base_url.host_str().unwrap_or("");
    let example_host = ["example.org", "example.com", "example.net"]
        .iter()
        .any(|d| host == *d || host.ends_with(&format!(".{d}")));
    if example_host {
        found.push(format!(
            "`[ttp] base_url` is the example address {}: set the dispatcher URL the fTTP operator \
             gave you in {}",
            config.ttp.base_url,
            origin("TTP_AGENT__TTP__BASE_URL")
        ));
    }
    let examples = [
        ("study", &config.ttp.study, ["example-study", "your-study"]),
        (
            "target",
            &config.ttp.target,
            ["example-site", "your-site-domain"],
        ),
    ];
    for (key, value, bad) in examples {
        if bad.contains(&value.as_str()) {
            found.push(format!(
                "`[ttp] {key}` is the example value `{value}`: set the {key} the fTTP operator \
                 gave you in {}",
                origin(&format!("TTP_AGENT__TTP__{}", key.to_uppercase()))
            ));
        }
    }
    found
}

/// The shortest admin or webhook token accepted: shorter ones can be guessed.
const MIN_TOKEN_CHARS: usize = 16;

/// Secrets that were read but would fail later: an IDAT key of the wrong length or format
/// (the daemon refuses it when it opens the store, which `check` skips while the daemon runs),
/// tokens too short to be secret.
fn secret_problems(config: &AgentConfig, secrets: &Secrets) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = crate::store::IdatKey::from_key_file_bytes(
        secrets.idat_key.expose(),
        &config.store.idat_key_file,
    ) {
        problems.push(format!(
            "[store] idat_key_file: {e}. Write a new key with `head -c 32 /dev/urandom | od -An \
             -tx1 | tr -d ' \\n'` (64 hex characters) — only for a new store: an existing store \
             needs the key it was created with (restore it from your key backup)"
        ));
    }
    let tokens = [
        ("[admin] token_file", &secrets.admin_token),
        ("[handover] webhook_token_file", &secrets.handover_token),
    ];
    for (key, token) in tokens {
        if let Some(token) = token
            && token.expose().len() < MIN_TOKEN_CHARS
        {
            problems.push(format!(
                "{key}: the token is shorter than {MIN_TOKEN_CHARS} characters and could be \
                 guessed; write a long random one, e.g. `openssl rand -hex 32`"
            ));
        }
    }
    problems
}

fn describe_secrets(secrets: &Secrets) -> String {
    let mut read = Vec::new();
    if secrets.api_key.is_some() {
        read.push("API key");
    }
    if secrets.basic_password.is_some() {
        read.push("Basic-auth password");
    }
    read.push("IDAT key");
    if secrets.admin_token.is_some() {
        read.push("admin token");
    }
    format!("read: {}", read.join(", "))
}

fn check_store(list: &mut Checklist, config: &AgentConfig, secrets: &Secrets, integrity: bool) {
    match store_step(list, config, secrets) {
        Ok(store) => {
            if integrity {
                check_integrity(list, &store);
            }
            check_registration(list, config, &store);
        }
        // Every way out without an opened store says why the integrity check did not run.
        Err(not_opened) if integrity => list.skip(INTEGRITY, not_opened.to_owned()),
        Err(_) => {}
    }
}

/// The store step: the store opened, or why it was not (after the step's line says so).
fn store_step(
    list: &mut Checklist,
    config: &AgentConfig,
    secrets: &Secrets,
) -> Result<Store, &'static str> {
    const STEP: &str = "store";
    let path = &config.store.path;
    if !path.exists() {
        match nearest_existing_ancestor(path) {
            Some(dir) if dir.is_dir() => match super::owner::writable(dir) {
                Ok(()) => list.pass(
                    STEP,
                    format!(
                        "{} does not exist yet; the first start creates it in {}, which the \
                         agent's user can write",
                        path.display(),
                        dir.display()
                    ),
                ),
                Err(why) => list.fail(
                    Severity::Check,
                    STEP,
                    format!("{} cannot be created: {why}", path.display()),
                ),
            },
            Some(other) => list.fail(
                Severity::Check,
                STEP,
                format!(
                    "{} cannot be created: {} is not a directory; choose another `[store] path`",
                    path.display(),
                    other.display()
                ),
            ),
            None => list.fail(
                Severity::Check,
                STEP,
                format!(
                    "{} cannot be created; choose another `[store] path`",
                    path.display()
                ),
            ),
        }
        return Err("no store yet");
    }
    if path.is_dir()
        && let Err(why) = super::owner::writable(path)
    {
        list.fail(
            Severity::Check,
            STEP,
            format!("{} is not writable: {why}", path.display()),
        );
        return Err("the store directory is not writable");
    }
    match crate::store::probe_lock(path) {
        LockState::Held => {
            list.pass(
                STEP,
                format!(
                    "{} is in use by a running agent (locked) — fine",
                    path.display()
                ),
            );
            return Err(
                "the running agent holds the store: stop it, then run `ttp-agent check --store`",
            );
        }
        LockState::Free | LockState::NoDatabase | LockState::Unknown(_) => {}
    }
    if let Some(owner) = super::owner::foreign_owner(path) {
        let who = super::owner::user_name(owner);
        list.skip(
            STEP,
            format!(
                "{} belongs to {who}: not opened, so that no file in it ends up owned by {} \
                 (which the agent could not write). Run the check as {who} to open it",
                path.display(),
                super::owner::user_name(super::owner::euid()),
            ),
        );
        return Err("the store was not opened");
    }
    let opened = context::store_options(config, secrets)
        .map_err(|e| format!("{e:#}"))
        .and_then(|opts| Store::open(&opts).map_err(|e| describe_store_error(&e)));
    match opened {
        Ok(store) => {
            match summarise_store(&store) {
                Ok(summary) => list.pass(STEP, format!("{} opened: {summary}", path.display())),
                Err(e) => list.fail(Severity::Check, STEP, e.to_string()),
            }
            Ok(store)
        }
        Err(message) => {
            list.fail(Severity::Check, STEP, message);
            Err("the store did not open")
        }
    }
}

const INTEGRITY: &str = "store integrity";

/// Problems shown of a damaged store; the rest are counted.
const PROBLEMS_SHOWN: usize = 10;

/// The derived data (indexes, counters, pseudonym log, open-task index) against the records
/// and tasks they derive from.
fn check_integrity(list: &mut Checklist, store: &Store) {
    match store.check_integrity() {
        Ok(report) if report.is_ok() => list.pass(
            INTEGRITY,
            format!(
                "{} record(s); indexes, counters, pseudonym log and tasks agree; the disclosure log's chain holds",
                report.records
            ),
        ),
        Ok(report) => {
            let mut detail =
                report.problems[..report.problems.len().min(PROBLEMS_SHOWN)].join("; ");
            if report.problems.len() > PROBLEMS_SHOWN {
                detail.push_str(&format!(
                    "; and {} more",
                    report.problems.len() - PROBLEMS_SHOWN
                ));
            }
            list.fail(
                Severity::Check,
                INTEGRITY,
                format!(
                    "{} problem(s) in {} record(s): {detail}. The indexes, counters and open-task \
                     index are derived: `ttp-agent restore` rebuilds them from a backup's \
                     records and tasks",
                    report.problems.len(),
                    report.records
                ),
            );
        }
        Err(e) => list.fail(Severity::Check, INTEGRITY, e.to_string()),
    }
}

/// A registration the fTTP refused as a whole (wrong study or target, the `all` shape), as
/// the daemon last recorded it.
fn check_registration(list: &mut Checklist, config: &AgentConfig, store: &Store) {
    const STEP: &str = "registration";
    match store.registration_blocked() {
        Ok(None) => {}
        Ok(Some(b)) if b.study != config.ttp.study || b.target != config.ttp.target => list.warn(
            STEP,
            format!(
                "the fTTP refused whole requests for study {:?}, target {:?}: {}; the configuration now names study {:?}, target {:?}, which the next cycle tries at once",
                b.study, b.target, b.failure, config.ttp.study, config.ttp.target
            ),
        ),
        Ok(Some(b)) => list.fail(
            Severity::Check,
            STEP,
            format!(
                "paused since {}: {} — {}",
                b.since.to_rfc3339(),
                b.failure,
                b.failure.advice()
            ),
        ),
        Err(e) => list.fail(Severity::Check, STEP, e.to_string()),
    }
}

fn describe_store_error(e: &StoreError) -> String {
    match e {
        StoreError::Locked { path } => format!(
            "{} is in use by a running agent (locked) — fine",
            path.display()
        ),
        other => other.to_string(),
    }
}

fn summarise_store(store: &Store) -> Result<String, StoreError> {
    let counts = store.record_counts()?;
    let open = store
        .tasks()?
        .iter()
        .filter(|t| !t.state.is_final())
        .count();
    let last_poll = store
        .meta_time(crate::store::META_LAST_POLL_OK)?
        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
    Ok(format!(
        "schema {}, {} record(s), {} unfinished task(s), last successful poll {last_poll}",
        store.schema_version()?,
        counts.total,
        open
    ))
}

fn nearest_existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().skip(1).find(|p| p.exists())
}

fn check_encoding(list: &mut Checklist, config: &AgentConfig, purpose: Purpose) {
    const STEP: &str = "encoding";
    // The shipped example has the section with every key commented out: not configured yet.
    if config.encoding.as_ref().is_none_or(toml::Table::is_empty) {
        if purpose.needs_encoding() {
            list.fail(
                Severity::Check,
                STEP,
                format!(
                    "no [encoding] profile in {}: `submit` cannot turn records into Bloom filters. \
                     Uncomment the [encoding] section and fill in the values the fTTP operator \
                     gives you (docs/OPERATIONS.md, \"Encoding\"); `check --for run` checks the \
                     daemon alone, which needs none",
                    config.source_file().map_or_else(
                        || "the configuration".to_owned(),
                        |p| p.display().to_string()
                    )
                ),
            );
        } else {
            list.skip(STEP, "not needed by this command (only `submit` encodes)");
        }
        return;
    }
    match context::encoder(config) {
        Ok(_) => list.pass(STEP, "the [encoding] profile loads"),
        Err(e) => list.fail(Severity::Config, STEP, format!("{e:#}")),
    }
}

fn check_fttp(list: &mut Checklist, config: &AgentConfig, secrets: &Secrets) {
    const REACH: &str = "fTTP reachable";
    const AUTH: &str = "authentication";
    let mut settings = context::client_settings(config, secrets);
    // One retry: enough to ride out a blip, short enough to answer within seconds.
    settings.retry.max_attempts = 2;
    let client = match TtpClient::new(settings) {
        Ok(client) => client,
        Err(e) => {
            list.fail(Severity::Config, REACH, format!("[ttp]: {e}"));
            list.skip(AUTH, "not tried: no HTTP client");
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            list.fail(
                Severity::Check,
                REACH,
                format!("cannot start the async runtime: {e}"),
            );
            return;
        }
    };
    let metadata_url = client.url(crate::client::Operation::Metadata).to_owned();
    match runtime.block_on(client.metadata()) {
        Ok(()) => list.pass(
            REACH,
            format!("GET {metadata_url}: a FHIR CapabilityStatement"),
        ),
        Err(e) => {
            list.fail(
                severity_of(&e),
                REACH,
                explain_fttp_error(&e, &metadata_url),
            );
            list.skip(AUTH, "not tried: the fTTP is not reachable");
            return;
        }
    }
    if config.ttp.task_relisting == TaskRelisting::Once {
        list.skip(
            AUTH,
            "not tried: with [ttp] task_relisting = \"once\" the fTTP may list a task only once, \
             and `check` would take it away from the daemon",
        );
        return;
    }
    match runtime.block_on(client.request_tasks()) {
        Ok(listing) => list.pass(
            AUTH,
            format!(
                "$requestTasks accepted the credentials: {} task(s) listed (not acted on)",
                listing.tasks.len() + listing.problems.len()
            ),
        ),
        Err(e) => list.fail(
            severity_of(&e),
            AUTH,
            explain_fttp_error(&e, client.url(crate::client::Operation::RequestTasks)),
        ),
    }
}

/// Wrong OAuth2 client credentials are a configuration error (exit 78), as a wrong key file
/// would be; everything else the fTTP says is a failed check.
fn severity_of(e: &TtpError) -> Severity {
    if e.from_token_endpoint && e.class == ErrorClass::Auth {
        Severity::Config
    } else {
        Severity::Check
    }
}

/// The client's error with what to look at, by class.
fn explain_fttp_error(e: &TtpError, url: &str) -> String {
    let hint = match e.class {
        ErrorClass::Auth if e.from_token_endpoint => {
            "the OAuth2 authorisation server refused the agent: check [ttp.oauth2] client_id, \
             client_secret_file and scope with the operator of the authorisation server"
        }
        _ if e.from_token_endpoint => {
            "the OAuth2 token endpoint did not answer with a token: check [ttp.oauth2] \
             token_url, DNS, firewalls and TLS (a private CA goes into [ttp] ca_file)"
        }
        ErrorClass::Auth => {
            "the fTTP refused the credentials: check [ttp] api_key_file (and api_key_header, \
             api_key_in), the Basic-auth settings or [ttp.oauth2] with the fTTP operator"
        }
        ErrorClass::Transient if e.status.is_none() => {
            "no answer: check [ttp] base_url (host and port), DNS, firewalls and proxies, and TLS \
             (an https:// URL needs a TLS server; a private CA goes into [ttp] ca_file)"
        }
        ErrorClass::Transient | ErrorClass::InDoubt => {
            "the fTTP or a proxy in front of it is failing; try again later or ask the fTTP operator"
        }
        ErrorClass::Permanent | ErrorClass::Protocol => {
            "the server at [ttp] base_url does not answer like the fTTP dispatcher: check the URL \
             (it ends in /ttp-fhir/fhir/dispatcher), [ttp] study and target"
        }
    };
    format!("{url}: {e} — {hint}")
}
