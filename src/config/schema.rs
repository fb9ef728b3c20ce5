//! Every key the agent knows: its section, its name and its default.
//!
//! This table is the single list of keys. The loader rejects anything not in it (with a
//! suggestion), the builder in `mod.rs` reads each entry through [`super::layers::Layers`],
//! and a unit test checks that the builder reads exactly these keys, so the list and the
//! code cannot drift apart. Defaults are written the way an operator would write them in an
//! environment variable and parsed by the same code as any other value.

use super::error::KeyPath;

/// How a key behaves when it is set nowhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Loading fails with [`super::ConfigError::MissingKey`].
    Required,
    /// The value is this text, parsed like an environment variable's value.
    Default(&'static str),
    /// The setting is absent (`None`).
    Optional,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct KeySpec {
    pub(crate) key: KeyPath,
    pub(crate) presence: Presence,
}

const fn spec(section: &'static str, name: &'static str, presence: Presence) -> KeySpec {
    KeySpec {
        key: KeyPath { section, name },
        presence,
    }
}

use Presence::{Default as D, Optional as O, Required as R};

pub(crate) const TTP_BASE_URL: KeySpec = spec("ttp", "base_url", R);
pub(crate) const TTP_STUDY: KeySpec = spec("ttp", "study", R);
pub(crate) const TTP_TARGET: KeySpec = spec("ttp", "target", R);
pub(crate) const TTP_API_KEY_FILE: KeySpec = spec("ttp", "api_key_file", O);
pub(crate) const TTP_API_KEY_HEADER: KeySpec = spec("ttp", "api_key_header", D("apiKey"));
/// Optional rather than defaulted: an explicit list without `api_key_file` is a mistake worth
/// naming, while the default (`["header"]`) without a key is simply "no key".
pub(crate) const TTP_API_KEY_IN: KeySpec = spec("ttp", "api_key_in", O);
pub(crate) const TTP_SEND_API_KEY_IN_BODY: KeySpec =
    spec("ttp", "send_api_key_in_body", D("false"));
pub(crate) const TTP_BASIC_USER: KeySpec = spec("ttp", "basic_user", O);
pub(crate) const TTP_BASIC_PASSWORD_FILE: KeySpec = spec("ttp", "basic_password_file", O);
pub(crate) const TTP_TIMEOUT: KeySpec = spec("ttp", "timeout", D("30s"));
pub(crate) const TTP_CONNECT_TIMEOUT: KeySpec = spec("ttp", "connect_timeout", D("10s"));
pub(crate) const TTP_MAX_RESPONSE_SIZE: KeySpec = spec("ttp", "max_response_size", D("16MiB"));
pub(crate) const TTP_CA_FILE: KeySpec = spec("ttp", "ca_file", O);
pub(crate) const TTP_CLIENT_CERT_FILE: KeySpec = spec("ttp", "client_cert_file", O);
pub(crate) const TTP_CLIENT_KEY_FILE: KeySpec = spec("ttp", "client_key_file", O);
pub(crate) const TTP_ALLOW_INSECURE_HTTP: KeySpec = spec("ttp", "allow_insecure_http", D("false"));
pub(crate) const TTP_RATE_LIMIT_PER_SECOND: KeySpec =
    spec("ttp", "rate_limit_per_second", D("5.0"));
pub(crate) const TTP_MAX_CONCURRENCY: KeySpec = spec("ttp", "max_concurrency", D("4"));
pub(crate) const TTP_TASK_RELISTING: KeySpec = spec("ttp", "task_relisting", D("until_done"));
pub(crate) const TTP_MAX_LISTED_TASKS: KeySpec = spec("ttp", "max_listed_tasks", D("100000"));
pub(crate) const TTP_MAX_UNKNOWN_TASKS: KeySpec = spec("ttp", "max_unknown_tasks", D("20"));
pub(crate) const TTP_PSEUDONYM_PATTERN: KeySpec = spec(
    "ttp",
    "pseudonym_pattern",
    D(crate::config::DEFAULT_PSEUDONYM_PATTERN),
);

pub(crate) const TTP_OAUTH2_TOKEN_URL: KeySpec = spec("ttp.oauth2", "token_url", O);
pub(crate) const TTP_OAUTH2_CLIENT_ID: KeySpec = spec("ttp.oauth2", "client_id", O);
pub(crate) const TTP_OAUTH2_CLIENT_SECRET_FILE: KeySpec =
    spec("ttp.oauth2", "client_secret_file", O);
pub(crate) const TTP_OAUTH2_SCOPE: KeySpec = spec("ttp.oauth2", "scope", O);

pub(crate) const SCHEDULE_CRON: KeySpec = spec("schedule", "cron", D("0 */15 * * * *"));
pub(crate) const SCHEDULE_TIMEZONE: KeySpec = spec("schedule", "timezone", D("Europe/Berlin"));
pub(crate) const SCHEDULE_JITTER: KeySpec = spec("schedule", "jitter", D("60s"));

pub(crate) const STORE_PATH: KeySpec = spec("store", "path", D(super::DEFAULT_STORE_PATH));
pub(crate) const STORE_IDAT_KEY_FILE: KeySpec = spec("store", "idat_key_file", R);
pub(crate) const STORE_CACHE_CAPACITY: KeySpec = spec("store", "cache_capacity", D("16MiB"));
pub(crate) const STORE_IDAT_RETENTION: KeySpec = spec("store", "idat_retention", D("90d"));
pub(crate) const STORE_TASK_RETENTION: KeySpec = spec("store", "task_retention", D("30d"));

pub(crate) const SUBMIT_BATCH_SIZE: KeySpec = spec("submit", "batch_size", D("50"));
pub(crate) const SUBMIT_RECHECK_AFTER: KeySpec = spec("submit", "recheck_after", D("7d"));
pub(crate) const SUBMIT_BATCHES_IN_FLIGHT: KeySpec = spec("submit", "batches_in_flight", D("4"));

pub(crate) const DISPATCH_CONCURRENCY: KeySpec = spec("dispatch", "concurrency", D("8"));
pub(crate) const DISPATCH_GRACE_PERIOD: KeySpec = spec("dispatch", "grace_period", D("10s"));
pub(crate) const DISPATCH_RETRY_BASE: KeySpec = spec("dispatch", "retry_base", D("30s"));
pub(crate) const DISPATCH_RETRY_CAP: KeySpec = spec("dispatch", "retry_cap", D("1h"));
pub(crate) const DISPATCH_MISSING_ELEMENTS: KeySpec =
    spec("dispatch", "missing_elements", D("send_known"));
pub(crate) const DISPATCH_IDAT_RELEASE: KeySpec = spec("dispatch", "idat_release", D("automatic"));
pub(crate) const DISPATCH_APPROVALS_REQUIRED: KeySpec =
    spec("dispatch", "approvals_required", D("1"));
/// The default lists every element code: releasing all is the behaviour before the setting.
pub(crate) const DISPATCH_RELEASE_ELEMENTS: KeySpec = spec(
    "dispatch",
    "release_elements",
    D(
        "given,family,prefix,suffix,birthdate,gender,address-line,address-city,address-postalcode,birthplace,maidenname,degree,language,nationality,maritalstatus",
    ),
);

pub(crate) const ADMIN_LISTEN: KeySpec = spec("admin", "listen", D("127.0.0.1:9464"));
pub(crate) const ADMIN_TOKEN_FILE: KeySpec = spec("admin", "token_file", O);
pub(crate) const ADMIN_READY_WINDOW: KeySpec = spec("admin", "ready_window", D("1h"));
pub(crate) const ADMIN_WARN_BEFORE_EXPIRY: KeySpec = spec("admin", "warn_before_expiry", D("48h"));
pub(crate) const ADMIN_WEBHOOK_URL: KeySpec = spec("admin", "webhook_url", O);
pub(crate) const ADMIN_ALLOWED_HOSTS: KeySpec = spec("admin", "allowed_hosts", D(""));

pub(crate) const CONTROL_SOCKET: KeySpec = spec("control", "socket", O);
pub(crate) const CONTROL_GROUP: KeySpec = spec("control", "group", O);

pub(crate) const HANDOVER_WEBHOOK_URL: KeySpec = spec("handover", "webhook_url", O);
pub(crate) const HANDOVER_WEBHOOK_TOKEN_FILE: KeySpec = spec("handover", "webhook_token_file", O);
pub(crate) const HANDOVER_WEBHOOK_TIMEOUT: KeySpec = spec("handover", "webhook_timeout", D("10s"));
pub(crate) const HANDOVER_WEBHOOK_RETRY_CAP: KeySpec =
    spec("handover", "webhook_retry_cap", D("5m"));

pub(crate) const LOG_FORMAT: KeySpec = spec("log", "format", D("auto"));
pub(crate) const LOG_LEVEL: KeySpec = spec("log", "level", D("info"));

/// All keys, in the order of the example file and of [`super::AgentConfig::redacted_summary`].
pub(crate) const ALL: &[KeySpec] = &[
    TTP_BASE_URL,
    TTP_STUDY,
    TTP_TARGET,
    TTP_API_KEY_FILE,
    TTP_API_KEY_HEADER,
    TTP_API_KEY_IN,
    TTP_SEND_API_KEY_IN_BODY,
    TTP_BASIC_USER,
    TTP_BASIC_PASSWORD_FILE,
    TTP_TIMEOUT,
    TTP_CONNECT_TIMEOUT,
    TTP_MAX_RESPONSE_SIZE,
    TTP_CA_FILE,
    TTP_CLIENT_CERT_FILE,
    TTP_CLIENT_KEY_FILE,
    TTP_ALLOW_INSECURE_HTTP,
    TTP_RATE_LIMIT_PER_SECOND,
    TTP_MAX_CONCURRENCY,
    TTP_TASK_RELISTING,
    TTP_MAX_LISTED_TASKS,
    TTP_MAX_UNKNOWN_TASKS,
    TTP_PSEUDONYM_PATTERN,
    TTP_OAUTH2_TOKEN_URL,
    TTP_OAUTH2_CLIENT_ID,
    TTP_OAUTH2_CLIENT_SECRET_FILE,
    TTP_OAUTH2_SCOPE,
    SCHEDULE_CRON,
    SCHEDULE_TIMEZONE,
    SCHEDULE_JITTER,
    STORE_PATH,
    STORE_IDAT_KEY_FILE,
    STORE_CACHE_CAPACITY,
    STORE_IDAT_RETENTION,
    STORE_TASK_RETENTION,
    SUBMIT_BATCH_SIZE,
    SUBMIT_RECHECK_AFTER,
    SUBMIT_BATCHES_IN_FLIGHT,
    DISPATCH_CONCURRENCY,
    DISPATCH_GRACE_PERIOD,
    DISPATCH_RETRY_BASE,
    DISPATCH_RETRY_CAP,
    DISPATCH_MISSING_ELEMENTS,
    DISPATCH_IDAT_RELEASE,
    DISPATCH_APPROVALS_REQUIRED,
    DISPATCH_RELEASE_ELEMENTS,
    ADMIN_LISTEN,
    ADMIN_TOKEN_FILE,
    ADMIN_READY_WINDOW,
    ADMIN_WARN_BEFORE_EXPIRY,
    ADMIN_WEBHOOK_URL,
    ADMIN_ALLOWED_HOSTS,
    CONTROL_SOCKET,
    CONTROL_GROUP,
    HANDOVER_WEBHOOK_URL,
    HANDOVER_WEBHOOK_TOKEN_FILE,
    HANDOVER_WEBHOOK_TIMEOUT,
    HANDOVER_WEBHOOK_RETRY_CAP,
    LOG_FORMAT,
    LOG_LEVEL,
];

/// The section holding the encoding profile. It is passed through as a table (its keys are the
/// encoder's business), and only the file can set it: a profile is nested data that does not
/// fit `SECTION__KEY` variables.
pub(crate) const ENCODING_SECTION: &str = "encoding";

/// The input settings of `submit` (separator, encoding, value mappings; see
/// `crate::submit::input::mapping`): lists and tables, so passed through like `[encoding]`.
pub(crate) const INPUT_SECTION: &str = "input";

/// The sections passed through as tables, settable only in the file.
pub(crate) const TABLE_SECTIONS: [&str; 2] = [ENCODING_SECTION, INPUT_SECTION];

/// The sections with scalar keys, in order, without duplicates.
pub(crate) fn sections() -> impl Iterator<Item = &'static str> {
    ALL.iter()
        .enumerate()
        .filter(|(i, s)| *i == 0 || ALL[i - 1].key.section != s.key.section)
        .map(|(_, s)| s.key.section)
}

pub(crate) fn is_section(name: &str) -> bool {
    TABLE_SECTIONS.contains(&name) || sections().any(|s| s == name)
}

pub(crate) fn find(section: &str, name: &str) -> Option<&'static KeySpec> {
    ALL.iter()
        .find(|s| s.key.section == section && s.key.name == name)
}

/// The known key an unknown `[section] name` most likely meant: the same name in another
/// section (`[ttp] cron` → `[schedule] cron`), the `_file` variant of a secret
/// (`api_key` → `api_key_file`), or a close spelling in the same section.
pub(crate) fn suggest_key(section: &str, name: &str) -> Option<KeyPath> {
    if let Some(spec) = ALL.iter().find(|s| s.key.name == name) {
        return Some(spec.key);
    }
    let with_file = format!("{name}_file");
    if let Some(spec) = ALL.iter().find(|s| s.key.name == with_file) {
        return Some(spec.key);
    }
    let same_section = ALL.iter().filter(|s| s.key.section == section);
    closest(name, same_section.map(|s| (s.key.name, s.key))).or_else(|| {
        // A misspelt section with a correct key name was handled above; a misspelt key in a
        // misspelt section is matched against every key.
        if is_section(section) {
            None
        } else {
            closest(name, ALL.iter().map(|s| (s.key.name, s.key)))
        }
    })
}

/// The known section an unknown section name most likely meant.
pub(crate) fn suggest_section(name: &str) -> Option<&'static str> {
    let all = sections().chain(TABLE_SECTIONS);
    closest(name, all.map(|s| (s, s)))
}

/// The candidate with the smallest edit distance, if it is close enough to be a typo: at most
/// a third of the word's length (and at least one edit) away.
fn closest<T>(word: &str, candidates: impl Iterator<Item = (&'static str, T)>) -> Option<T> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .map(|(name, item)| (edit_distance(word, name), item))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, item)| item)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        current[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn keys_are_unique_lower_snake_case_and_grouped_by_section() {
        let mut seen = HashSet::new();
        for spec in ALL {
            assert!(seen.insert(spec.key), "duplicate key {}", spec.key);
            // A sub-table such as `[ttp.oauth2]` is spelt with a dot; each part is snake case.
            for part in spec.key.section.split('.').chain([spec.key.name]) {
                assert!(
                    part.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                        && !part.contains("__"),
                    "{} is not lower snake case without `__`",
                    spec.key
                );
            }
        }
        // Each section appears as one contiguous run, so `sections()` lists it once.
        let sections: Vec<_> = sections().collect();
        let unique: HashSet<_> = sections.iter().collect();
        assert_eq!(sections.len(), unique.len(), "{sections:?}");
        assert_eq!(
            sections,
            [
                "ttp",
                "ttp.oauth2",
                "schedule",
                "store",
                "submit",
                "dispatch",
                "admin",
                "control",
                "handover",
                "log"
            ]
        );
    }

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("base_url", "base_url"), 0);
        assert_eq!(edit_distance("base_ur", "base_url"), 1);
        assert_eq!(edit_distance("timout", "timeout"), 1);
        assert_eq!(edit_distance("jiter", "jitter"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggestions_cover_typos_wrong_sections_and_inline_secrets() {
        let name = |k: Option<KeyPath>| k.map(|k| k.to_string());
        assert_eq!(
            name(suggest_key("ttp", "base_ur")),
            Some("[ttp] base_url".into())
        );
        assert_eq!(
            name(suggest_key("ttp", "cron")),
            Some("[schedule] cron".into())
        );
        assert_eq!(
            name(suggest_key("ttp", "api_key")),
            Some("[ttp] api_key_file".into())
        );
        assert_eq!(
            name(suggest_key("tpp", "studdy")),
            Some("[ttp] study".into())
        );
        assert_eq!(name(suggest_key("ttp", "completely_different")), None);
        assert_eq!(suggest_section("schedul"), Some("schedule"));
        assert_eq!(suggest_section("encodign"), Some("encoding"));
        assert_eq!(suggest_section("database"), None);
    }
}
