//! Loading: defaults, the environment overlay, path resolution, the example file, the summary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ttp_agent::config::{AgentConfig, ByteSize, ConfigError, LogFormat, TaskRelisting};

const REQUIRED: &str = r#"
[ttp]
base_url = "https://fttp.example.org/ttp-fhir/fhir/dispatcher"
study = "example-study"
target = "example-site"

[store]
idat_key_file = "/etc/ttp-agent/secrets/idat-key"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), text);
    AgentConfig::load_from(Some(&path), env(vars))
}

#[test]
fn every_default_applies_when_only_required_keys_are_set() {
    let c = load(REQUIRED, &[]).unwrap();

    assert_eq!(
        c.ttp.base_url.as_str(),
        "https://fttp.example.org/ttp-fhir/fhir/dispatcher"
    );
    assert_eq!(c.ttp.study, "example-study");
    assert_eq!(c.ttp.target, "example-site");
    assert_eq!(c.ttp.api_key_file, None);
    assert_eq!(c.ttp.api_key_header, "apiKey");
    assert!(!c.ttp.send_api_key_in_body);
    assert_eq!(c.ttp.basic_user, None);
    assert_eq!(c.ttp.basic_password_file, None);
    assert_eq!(c.ttp.timeout, Duration::from_secs(30));
    assert_eq!(c.ttp.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.ttp.max_response_size, ByteSize(16 * 1024 * 1024));
    assert_eq!(c.ttp.ca_file, None);
    assert_eq!(c.ttp.client_cert_file, None);
    assert_eq!(c.ttp.client_key_file, None);
    assert!(!c.ttp.allow_insecure_http);
    assert_eq!(c.ttp.rate_limit_per_second, 5.0);
    assert_eq!(c.ttp.max_concurrency, 4);
    assert_eq!(c.ttp.task_relisting, TaskRelisting::UntilDone);

    assert_eq!(c.schedule.cron.source(), "0 */15 * * * *");
    assert_eq!(c.schedule.timezone, chrono_tz::Europe::Berlin);
    assert_eq!(c.schedule.jitter, Duration::from_secs(60));

    assert_eq!(c.store.path, Path::new("/var/lib/ttp-agent/store"));
    assert_eq!(
        c.store.idat_key_file,
        Path::new("/etc/ttp-agent/secrets/idat-key")
    );
    assert_eq!(c.store.cache_capacity, ByteSize(16 * 1024 * 1024));
    assert_eq!(c.store.idat_retention, Duration::from_secs(90 * 86_400));
    assert_eq!(c.store.task_retention, Duration::from_secs(30 * 86_400));

    assert!(c.encoding.is_none());
    assert_eq!(c.submit.batch_size, 50);
    assert_eq!(c.submit.batches_in_flight, 4);

    assert_eq!(c.dispatch.concurrency, 8);
    assert_eq!(c.dispatch.grace_period, Duration::from_secs(10));
    assert_eq!(c.dispatch.retry_base, Duration::from_secs(30));
    assert_eq!(c.dispatch.retry_cap, Duration::from_secs(3_600));

    assert_eq!(c.admin.listen, "127.0.0.1:9464".parse().unwrap());
    assert_eq!(c.admin.token_file, None);
    assert_eq!(c.admin.ready_window, Duration::from_secs(3_600));
    assert_eq!(c.admin.warn_before_expiry, Duration::from_secs(48 * 3_600));
    assert!(c.admin.webhook_url.is_none());

    assert_eq!(c.log.format, LogFormat::Auto);
    assert_eq!(c.log.level.as_str(), "info");
}

#[test]
fn file_values_replace_defaults() {
    let text = format!(
        "{REQUIRED}\n[schedule]\ncron = \"0 0 */2 * * *\"\ntimezone = \"UTC\"\njitter = \"0s\"\n\
         [submit]\nbatch_size = 100\nbatches_in_flight = 1\n[dispatch]\nretry_cap = \"2h\"\n\
         [log]\nformat = \"json\"\nlevel = \"info,ttp_agent::client=debug\"\n"
    );
    let c = load(&text, &[]).unwrap();
    assert_eq!(c.schedule.cron.source(), "0 0 */2 * * *");
    assert_eq!(c.schedule.timezone, chrono_tz::UTC);
    assert_eq!(c.schedule.jitter, Duration::ZERO);
    assert_eq!(c.submit.batch_size, 100);
    assert_eq!(c.submit.batches_in_flight, 1);
    assert_eq!(c.dispatch.retry_cap, Duration::from_secs(7_200));
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level.as_str(), "info,ttp_agent::client=debug");
}

#[test]
fn the_five_documented_environment_variables_override_the_file() {
    let file = REQUIRED
        .replace(
            "[ttp]",
            "[ttp]\napi_key_file = \"/etc/ttp-agent/secrets/api-key\"",
        )
        .replace("[store]", "[store]\npath = \"/var/lib/ttp-agent/store\"");
    let c = load(
        &file,
        &[
            (
                "TTP_AGENT__TTP__BASE_URL",
                "https://other.example.org/ttp-fhir/fhir/dispatcher",
            ),
            ("TTP_AGENT__TTP__STUDY", "env-study"),
            ("TTP_AGENT__TTP__TARGET", "env-site"),
            ("TTP_AGENT__TTP__API_KEY_FILE", "/run/secrets/api-key"),
            ("TTP_AGENT__STORE__PATH", "/srv/ttp-agent/store"),
        ],
    )
    .unwrap();
    assert_eq!(
        c.ttp.base_url.as_str(),
        "https://other.example.org/ttp-fhir/fhir/dispatcher"
    );
    assert_eq!(c.ttp.study, "env-study");
    assert_eq!(c.ttp.target, "env-site");
    assert_eq!(
        c.ttp.api_key_file.as_deref(),
        Some(Path::new("/run/secrets/api-key"))
    );
    assert_eq!(c.store.path, Path::new("/srv/ttp-agent/store"));

    let summary = c.redacted_summary();
    assert!(
        summary.contains("study = \"env-study\"  # environment variable TTP_AGENT__TTP__STUDY"),
        "{summary}"
    );
}

#[test]
fn environment_values_are_read_as_their_setting_type_and_never_reinterpreted() {
    let c = load(
        REQUIRED,
        &[
            ("TTP_AGENT__SCHEDULE__CRON", "0 */15 * * * *"),
            ("TTP_AGENT__TTP__STUDY", "2024,pilot;A"),
            ("TTP_AGENT__TTP__TARGET", "123"),
            (
                "TTP_AGENT__TTP__BASE_URL",
                "https://fttp.example.org:8443/a,b/dispatcher",
            ),
            ("TTP_AGENT__TTP__API_KEY_HEADER", "true"),
            ("TTP_AGENT__SUBMIT__BATCH_SIZE", "25"),
            ("TTP_AGENT__SUBMIT__BATCHES_IN_FLIGHT", "8"),
            ("TTP_AGENT__TTP__RATE_LIMIT_PER_SECOND", "2"),
            ("TTP_AGENT__TTP__SEND_API_KEY_IN_BODY", "false"),
            ("TTP_AGENT__TTP__MAX_RESPONSE_SIZE", "1048576"),
            ("TTP_AGENT__STORE__CACHE_CAPACITY", "64 MiB"),
            ("TTP_AGENT__DISPATCH__GRACE_PERIOD", "1m 30s"),
            ("TTP_AGENT__TTP__TASK_RELISTING", "once"),
            ("TTP_AGENT__ADMIN__LISTEN", "[::1]:9000"),
        ],
    )
    .unwrap();
    assert_eq!(c.schedule.cron.source(), "0 */15 * * * *");
    assert_eq!(c.ttp.study, "2024,pilot;A");
    assert_eq!(c.ttp.target, "123");
    assert_eq!(
        c.ttp.base_url.as_str(),
        "https://fttp.example.org:8443/a,b/dispatcher"
    );
    assert_eq!(c.ttp.api_key_header, "true");
    assert_eq!(c.submit.batch_size, 25);
    assert_eq!(c.submit.batches_in_flight, 8);
    assert_eq!(c.ttp.rate_limit_per_second, 2.0);
    assert_eq!(c.ttp.max_response_size, ByteSize(1_048_576));
    assert_eq!(c.store.cache_capacity, ByteSize(64 * 1024 * 1024));
    assert_eq!(c.dispatch.grace_period, Duration::from_secs(90));
    assert_eq!(c.ttp.task_relisting, TaskRelisting::Once);
    assert_eq!(c.admin.listen, "[::1]:9000".parse().unwrap());
}

#[test]
fn an_empty_environment_variable_counts_as_unset() {
    let c = load(
        REQUIRED,
        &[
            ("TTP_AGENT__TTP__STUDY", ""),
            ("TTP_AGENT__TTP__CA_FILE", ""),
        ],
    )
    .unwrap();
    assert_eq!(c.ttp.study, "example-study");
    assert_eq!(c.ttp.ca_file, None);
}

#[test]
fn unrelated_environment_variables_are_ignored() {
    let c = load(
        REQUIRED,
        &[
            ("PATH", "/usr/bin"),
            ("TTP_AGENT_CONFIG", "/x"),
            ("ttp_agent__ttp__study", "x"),
        ],
    )
    .unwrap();
    assert_eq!(c.ttp.study, "example-study");
}

#[test]
fn relative_paths_in_the_file_resolve_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let conf_dir = dir.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let text = REQUIRED
        .replace("/etc/ttp-agent/secrets/idat-key", "secrets/idat-key")
        .replace("[store]", "[store]\npath = \"../data/store\"")
        .replace("[ttp]", "[ttp]\nca_file = \"fttp-ca.pem\"");
    let path = write_config(&conf_dir, &text);
    let c = AgentConfig::load_from(Some(&path), env(&[])).unwrap();
    assert_eq!(c.store.idat_key_file, conf_dir.join("secrets/idat-key"));
    assert_eq!(c.store.path, conf_dir.join("../data/store"));
    assert_eq!(c.ttp.ca_file, Some(conf_dir.join("fttp-ca.pem")));
    assert_eq!(c.encoding_base_dir(), conf_dir);
    assert_eq!(c.source_file(), Some(path.as_path()));
}

#[test]
fn relative_paths_from_the_environment_resolve_against_the_working_directory() {
    let c = load(REQUIRED, &[("TTP_AGENT__STORE__PATH", "state/store")]).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.store.path, cwd.join("state/store"));
}

#[test]
fn a_configuration_can_come_from_the_environment_alone() {
    let c = AgentConfig::from_file_and_env(
        None,
        env(&[
            (
                "TTP_AGENT__TTP__BASE_URL",
                "https://fttp.example.org/ttp-fhir/fhir/dispatcher",
            ),
            ("TTP_AGENT__TTP__STUDY", "env-study"),
            ("TTP_AGENT__TTP__TARGET", "env-site"),
            ("TTP_AGENT__STORE__IDAT_KEY_FILE", "/run/secrets/idat-key"),
        ]),
    )
    .unwrap();
    assert_eq!(c.source_file(), None);
    assert_eq!(c.ttp.study, "env-study");
    assert_eq!(c.encoding_base_dir(), std::env::current_dir().unwrap());
    assert!(c.redacted_summary().contains("# File: none"));
}

#[test]
fn an_explicitly_named_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = AgentConfig::load_from(Some(&missing), env(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::FileNotFound { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert_eq!(err.exit_code(), 78);
}

#[test]
fn the_encoding_section_is_kept_as_a_table_and_never_shown() {
    let text = format!(
        "{REQUIRED}\n[encoding]\nprofile = \"fttp\"\nseed = \"encoding-seed-s3cr3t\"\n\
         [encoding.fields]\ngiven = 1\n"
    );
    let c = load(&text, &[]).unwrap();
    let table = c.encoding.as_ref().unwrap();
    assert_eq!(table["profile"].as_str(), Some("fttp"));
    assert_eq!(table["fields"]["given"].as_integer(), Some(1));
    for shown in [format!("{c:?}"), c.redacted_summary()] {
        assert!(!shown.contains("encoding-seed-s3cr3t"), "{shown}");
    }
    assert!(c.redacted_summary().contains("# 3 key(s) set in the file"));
}

#[test]
fn debug_and_summary_redact_the_webhook_credential() {
    let c = load(
        REQUIRED,
        &[(
            "TTP_AGENT__ADMIN__WEBHOOK_URL",
            "https://hooks.example.org/services/T0/hook-s3cr3t",
        )],
    )
    .unwrap();
    let webhook = c.admin.webhook_url.as_ref().unwrap();
    assert_eq!(webhook.expose().path(), "/services/T0/hook-s3cr3t");
    for shown in [format!("{c:?}"), c.redacted_summary()] {
        assert!(!shown.contains("hook-s3cr3t"), "{shown}");
        assert!(shown.contains("hooks.example.org"), "{shown}");
    }
}

/// `key = value` from a summary line, without the origin comment.
fn summary_values(summary: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in summary.lines() {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
        } else if let Some((key, rest)) = line.split_once(" = ") {
            let value = rest.rsplit_once("  # ").map_or(rest, |(v, _)| v);
            out.push((format!("[{section}] {key}"), value.to_owned()));
        }
    }
    out
}

#[test]
fn the_summary_is_toml_that_loads_back_to_the_same_configuration() {
    let original = load(
        &format!(
            "{REQUIRED}\n[schedule]\njitter = \"90s\"\n[dispatch]\ngrace_period = \"1500ms\"\n"
        ),
        &[
            ("TTP_AGENT__TTP__API_KEY_FILE", "/run/secrets/api-key"),
            ("TTP_AGENT__TTP__BASIC_USER", "site \"agent\""),
            ("TTP_AGENT__TTP__BASIC_PASSWORD_FILE", "/run/secrets/basic"),
            ("TTP_AGENT__TTP__RATE_LIMIT_PER_SECOND", "0.5"),
            ("TTP_AGENT__TTP__MAX_RESPONSE_SIZE", "1000001"),
        ],
    )
    .unwrap();
    let summary = original.redacted_summary();
    let reloaded = load(&summary, &[]).unwrap();
    assert_eq!(
        summary_values(&summary),
        summary_values(&reloaded.redacted_summary()),
        "{summary}"
    );
    assert_eq!(summary_values(&summary).len(), 45, "{summary}");
}

/// The example with every `# key = value` line switched on, except those of `left_out`.
fn uncomment_all_but(example: &str, left_out: &[&str]) -> String {
    example
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(key, _)| {
                    !key.is_empty()
                        && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        && !left_out.contains(&key)
                }) =>
            {
                rest
            }
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.toml")
}

#[test]
fn the_example_file_loads_as_shipped() {
    let c = AgentConfig::load_from(Some(&example_path()), env(&[])).unwrap();
    assert_eq!(c.ttp.base_url.host_str(), Some("fttp.example.org"));
    assert_eq!(c.ttp.study, "example-study");
    assert_eq!(c.ttp.target, "example-site");
}

#[test]
fn the_example_documents_every_key_with_its_true_default_and_env_name() {
    let example = std::fs::read_to_string(example_path()).unwrap();
    let defaults = load(REQUIRED, &[]).unwrap();
    // Basic auth and OAuth2 exclude each other (both need the Authorization header): the
    // example is switched on once without each.
    let exclusive: [&[&str]; 2] = [
        &["basic_user", "basic_password_file"],
        &["token_url", "client_id", "client_secret_file", "scope"],
    ];
    let mut all = Vec::new();
    let mut everything = None;
    for left_out in exclusive {
        let dir = tempfile::tempdir().unwrap();
        let loaded = AgentConfig::load_from(
            Some(&write_config(
                dir.path(),
                &uncomment_all_but(&example, left_out),
            )),
            env(&[]),
        )
        .unwrap();
        let summary = loaded.redacted_summary();
        for line in summary.lines().filter(|l| l.ends_with(" is not set")) {
            let key = line
                .trim_start_matches("# ")
                .trim_end_matches(" is not set");
            assert!(
                left_out.contains(&key),
                "{key} is missing from the example:\n{summary}"
            );
        }
        all.extend(summary_values(&summary));
        assert!(loaded.ttp.ca_file.as_ref().unwrap().starts_with(dir.path()));
        everything = Some(loaded);
    }
    let everything = everything.unwrap();
    let default_values = summary_values(&defaults.redacted_summary());
    let default_summary = defaults.redacted_summary();
    for (key, value) in &all {
        // The env name of every key is documented.
        let (section, name) = key.trim_start_matches('[').split_once("] ").unwrap();
        let var = format!(
            "TTP_AGENT__{}__{}",
            section.replace('.', "__").to_uppercase(),
            name.to_uppercase()
        );
        assert!(
            example.contains(&var),
            "{var} is not documented in the example"
        );
        // A key with a built-in default shows exactly that default.
        let line_prefix = format!("{name} = ");
        let is_default = default_summary
            .lines()
            .any(|l| l.starts_with(&line_prefix) && l.ends_with("# the built-in default"));
        if is_default {
            let default = default_values
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v);
            assert_eq!(
                Some(value),
                default,
                "the example's default for {key} is stale"
            );
        }
    }
    assert!(everything.encoding.is_some());
}

#[test]
fn warnings_point_out_risky_but_valid_settings() {
    let c = load(REQUIRED, &[("TTP_AGENT__ADMIN__LISTEN", "0.0.0.0:9464")]).unwrap();
    let warnings = c.warnings().join("\n");
    assert!(warnings.contains("`[ttp] api_key_file`"), "{warnings}");
    assert!(warnings.contains("`[admin] token_file`"), "{warnings}");

    let c = load(
        REQUIRED,
        &[
            ("TTP_AGENT__TTP__API_KEY_FILE", "/run/secrets/api-key"),
            ("TTP_AGENT__ADMIN__TOKEN_FILE", "/run/secrets/token"),
            ("TTP_AGENT__ADMIN__LISTEN", "0.0.0.0:9464"),
        ],
    )
    .unwrap();
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn origins_name_the_file_line_or_the_variable() {
    let c = load(REQUIRED, &[("TTP_AGENT__TTP__TARGET", "env-site")]).unwrap();
    let summary = c.redacted_summary();
    let study = summary.lines().find(|l| l.starts_with("study = ")).unwrap();
    assert!(study.contains("agent.toml, line 4, column 9"), "{study}");
    let target = summary
        .lines()
        .find(|l| l.starts_with("target = "))
        .unwrap();
    assert!(
        target.ends_with("# environment variable TTP_AGENT__TTP__TARGET"),
        "{target}"
    );
}
