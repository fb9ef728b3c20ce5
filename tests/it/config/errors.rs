//! Every kind of configuration error, and what its message tells the operator: the file and
//! line or the environment variable, the key, what is wrong and what is expected.

use std::path::{Path, PathBuf};

use ttp_agent::config::{AgentConfig, ConfigError, Origin};

const REQUIRED: &str = r#"[ttp]
base_url = "https://fttp.example.org/ttp-fhir/fhir/dispatcher"
study = "example-study"
target = "example-site"

[store]
idat_key_file = "/etc/ttp-agent/secrets/idat-key"
"#;

struct Loaded {
    _dir: tempfile::TempDir,
    path: PathBuf,
    result: Result<AgentConfig, ConfigError>,
}

fn load(text: &str, vars: &[(&str, &str)]) -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let env = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
    let result = AgentConfig::load_from(Some(&path), env);
    Loaded {
        _dir: dir,
        path,
        result,
    }
}

/// The error, its message, and the path of the file, for assertions.
fn error(text: &str, vars: &[(&str, &str)]) -> (ConfigError, String, String) {
    let loaded = load(text, vars);
    let err = match loaded.result {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(err) => err,
    };
    assert_eq!(err.exit_code(), 78);
    let message = err.to_string();
    (err, message, loaded.path.display().to_string())
}

/// `REQUIRED` with `line` added to `[section]`.
fn with(section: &str, line: &str) -> String {
    let header = format!("[{section}]\n");
    if REQUIRED.contains(&header) {
        REQUIRED.replace(&header, &format!("{header}{line}\n"))
    } else {
        format!("{REQUIRED}\n{header}{line}\n")
    }
}

fn assert_contains(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
}

#[test]
fn a_misspelt_key_in_the_file_is_named_with_its_line_and_a_suggestion() {
    let text = REQUIRED.replace("base_url", "base_ur");
    let (err, message, path) = error(&text, &[]);
    assert!(matches!(err, ConfigError::UnknownKey { .. }));
    assert_eq!(
        message,
        format!(
            "unknown key `[ttp] base_ur` in {path}, line 2, column 1 (did you mean `base_url`?)"
        )
    );
}

#[test]
fn a_key_in_the_wrong_section_suggests_the_right_one() {
    let (_, message, path) = error(&with("ttp", "cron = \"0 0 * * * *\""), &[]);
    assert_contains(
        &message,
        &["unknown key `[ttp] cron`", &path, "`[schedule] cron`"],
    );
}

#[test]
fn an_inline_secret_suggests_the_file_key_and_is_not_echoed() {
    let (_, message, _) = error(&with("ttp", "api_key = \"inline-s3cr3t\""), &[]);
    assert_contains(&message, &["unknown key `[ttp] api_key`", "`api_key_file`"]);
    assert!(!message.contains("inline-s3cr3t"), "{message}");
}

#[test]
fn unknown_sections_and_top_level_keys_are_reported() {
    let (_, message, path) = error(&format!("{REQUIRED}\n[schedul]\ncron = \"x\"\n"), &[]);
    assert_contains(
        &message,
        &["unknown key `[schedul]`", &path, "line 9", "`[schedule]`"],
    );

    let (_, message, _) = error(&format!("study = \"x\"\n{REQUIRED}"), &[]);
    assert_contains(
        &message,
        &["unknown key `study`", "line 1", "`[ttp] study`"],
    );

    let (_, message, _) = error(&format!("{REQUIRED}\n[database]\nurl = \"x\"\n"), &[]);
    assert_contains(&message, &["unknown key `[database]`"]);
    assert!(!message.contains("did you mean"), "{message}");
}

#[test]
fn a_section_that_is_not_a_table_is_reported() {
    let (err, message, path) = error(&format!("log = \"debug\"\n{REQUIRED}"), &[]);
    assert!(
        matches!(err, ConfigError::NotASection { section: "log", .. }),
        "{err:?}"
    );
    assert_contains(&message, &["`log`", &path, "line 1", "[log]"]);
}

#[test]
fn a_misspelt_environment_variable_is_named_with_the_right_one() {
    let (err, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__TTP__BASE_UR", "https://x.example")],
    );
    match &err {
        ConfigError::UnknownKey {
            origin: Origin::Env { var },
            ..
        } => {
            assert_eq!(var, "TTP_AGENT__TTP__BASE_UR")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        message,
        "unknown key `[ttp] base_ur` in environment variable TTP_AGENT__TTP__BASE_UR \
         (did you mean TTP_AGENT__TTP__BASE_URL?)"
    );

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__TPP__STUDY", "x")]);
    assert_contains(
        &message,
        &["`[tpp]`", "TTP_AGENT__TPP__STUDY", "TTP_AGENT__TTP__STUDY"],
    );
}

#[test]
fn malformed_environment_names_and_encoding_variables_are_rejected() {
    let (err, message, _) = error(REQUIRED, &[("TTP_AGENT__STUDY", "x")]);
    assert!(matches!(err, ConfigError::BadEnvironment { .. }), "{err:?}");
    assert_contains(
        &message,
        &["TTP_AGENT__STUDY", "TTP_AGENT__<SECTION>__<KEY>"],
    );

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__ENCODING__PROFILE", "x")]);
    assert_contains(
        &message,
        &[
            "TTP_AGENT__ENCODING__PROFILE",
            "only be set in the configuration file",
        ],
    );
}

#[test]
fn syntax_errors_give_line_and_column_without_quoting_the_line() {
    let text = format!("{REQUIRED}\n[dispatch]\nconcurrency = = 3 # s3cr3t-looking\n");
    let (err, message, path) = error(&text, &[]);
    match &err {
        ConfigError::Syntax { line, column, .. } => assert_eq!((*line, *column), (10, 15)),
        other => panic!("{other:?}"),
    }
    assert_contains(
        &message,
        &["TOML syntax error", &path, "line 10, column 15"],
    );
    assert!(!message.contains("s3cr3t"), "{message}");

    let (err, message, _) = error(&format!("{REQUIRED}\n[ttp]\n"), &[]);
    assert!(
        matches!(err, ConfigError::Syntax { .. }),
        "duplicate table: {err:?}"
    );
    assert_contains(&message, &["line 9"]);
}

#[test]
fn a_missing_required_key_names_the_file_and_the_environment_variable() {
    let text = REQUIRED.replace("target = \"example-site\"\n", "");
    let (err, message, path) = error(&text, &[]);
    assert!(matches!(err, ConfigError::MissingKey { .. }), "{err:?}");
    assert_eq!(
        message,
        format!(
            "missing required key `[ttp] target`: set `target` in section [ttp] of {path} or \
             set environment variable TTP_AGENT__TTP__TARGET"
        )
    );

    let err = AgentConfig::from_file_and_env(None, Vec::new()).unwrap_err();
    assert_contains(
        &err.to_string(),
        &[
            "`[ttp] base_url`",
            "no configuration file was loaded",
            "TTP_AGENT__TTP__BASE_URL",
        ],
    );
}

#[test]
fn a_wrongly_typed_value_names_file_line_key_and_expectation() {
    let (err, message, path) = error(&with("submit", "batch_size = \"fifty\""), &[]);
    match &err {
        ConfigError::InvalidValue {
            key,
            origin: Origin::File { line, .. },
            ..
        } => {
            assert_eq!(key.to_string(), "[submit] batch_size");
            assert_eq!(*line, 10);
        }
        other => panic!("{other:?}"),
    }
    assert_contains(
        &message,
        &[
            "invalid value for `[submit] batch_size`",
            &path,
            "line 10, column 14",
            "found a string",
            "expected a whole number",
        ],
    );
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__SUBMIT__BATCH_SIZE", "many")]);
    assert_eq!(
        message,
        "invalid value for `[submit] batch_size` in environment variable \
         TTP_AGENT__SUBMIT__BATCH_SIZE: \"many\" is not a whole number; expected a whole number"
    );
}

#[test]
fn bad_durations_are_rejected_with_the_accepted_form() {
    let (_, message, path) = error(&with("ttp", "timeout = \"30 sekunden\""), &[]);
    assert_contains(
        &message,
        &[
            "`[ttp] timeout`",
            &path,
            "\"30 sekunden\" is not a duration",
            "\"30s\"",
        ],
    );

    let (_, message, _) = error(&with("ttp", "timeout = 30"), &[]);
    assert_contains(&message, &["`[ttp] timeout`", "no unit", "\"30s\""]);

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__STORE__IDAT_RETENTION", "0s")]);
    assert_contains(
        &message,
        &[
            "`[store] idat_retention`",
            "TTP_AGENT__STORE__IDAT_RETENTION",
            "zero",
        ],
    );
}

#[test]
fn bad_sizes_are_rejected_with_the_accepted_form() {
    let (_, message, _) = error(&with("ttp", "max_response_size = \"16MB\""), &[]);
    assert_contains(
        &message,
        &["`[ttp] max_response_size`", "ambiguous", "KiB, MiB or GiB"],
    );

    let (_, message, _) = error(&with("store", "cache_capacity = -1"), &[]);
    assert_contains(&message, &["`[store] cache_capacity`", "negative"]);

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__TTP__MAX_RESPONSE_SIZE", "0")]);
    assert_contains(&message, &["`[ttp] max_response_size`", "zero"]);
}

#[test]
fn cron_expressions_are_validated() {
    let (_, message, path) = error(&with("schedule", "cron = \"*/15 * * * *\""), &[]);
    assert_contains(
        &message,
        &[
            "`[schedule] cron`",
            &path,
            "seconds field is required",
            "\"0 */15 * * * *\"",
        ],
    );

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__SCHEDULE__CRON", "0 0 0 31 4 *")]);
    assert_contains(&message, &["TTP_AGENT__SCHEDULE__CRON", "never fires"]);

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__SCHEDULE__CRON", "0 */61 * * * *")]);
    assert_contains(
        &message,
        &["TTP_AGENT__SCHEDULE__CRON", "not a cron expression"],
    );
}

#[test]
fn time_zones_are_validated() {
    let (_, message, path) = error(&with("schedule", "timezone = \"Europe/Berln\""), &[]);
    assert_contains(
        &message,
        &[
            "`[schedule] timezone`",
            &path,
            "\"Europe/Berln\" is not a known time zone",
            "IANA",
        ],
    );
}

#[test]
fn ranges_are_enforced() {
    for (var, value, key) in [
        ("TTP_AGENT__SUBMIT__BATCH_SIZE", "0", "[submit] batch_size"),
        (
            "TTP_AGENT__SUBMIT__BATCH_SIZE",
            "101",
            "[submit] batch_size",
        ),
        (
            "TTP_AGENT__TTP__MAX_CONCURRENCY",
            "0",
            "[ttp] max_concurrency",
        ),
        (
            "TTP_AGENT__SUBMIT__BATCHES_IN_FLIGHT",
            "0",
            "[submit] batches_in_flight",
        ),
        (
            "TTP_AGENT__SUBMIT__BATCHES_IN_FLIGHT",
            "65",
            "[submit] batches_in_flight",
        ),
        (
            "TTP_AGENT__DISPATCH__CONCURRENCY",
            "257",
            "[dispatch] concurrency",
        ),
        (
            "TTP_AGENT__TTP__RATE_LIMIT_PER_SECOND",
            "0",
            "[ttp] rate_limit_per_second",
        ),
        (
            "TTP_AGENT__TTP__RATE_LIMIT_PER_SECOND",
            "-1.5",
            "[ttp] rate_limit_per_second",
        ),
    ] {
        let (_, message, _) = error(REQUIRED, &[(var, value)]);
        assert_contains(&message, &[&format!("`{key}`"), var]);
    }
    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__SUBMIT__BATCH_SIZE", "101")]);
    assert_contains(&message, &["101 is out of range", "from 1 to 100"]);
}

#[test]
fn keys_that_belong_together_are_checked_together() {
    let (_, message, path) = error(&with("ttp", "basic_user = \"site\""), &[]);
    assert_contains(
        &message,
        &[
            "`[ttp] basic_user`",
            &path,
            "`[ttp] basic_password_file` is not",
        ],
    );

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__TTP__CLIENT_KEY_FILE", "/k.pem")]);
    assert_contains(
        &message,
        &[
            "`[ttp] client_key_file`",
            "TTP_AGENT__TTP__CLIENT_KEY_FILE",
            "`[ttp] client_cert_file`",
        ],
    );

    let (_, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__TTP__SEND_API_KEY_IN_BODY", "true")],
    );
    assert_contains(
        &message,
        &[
            "`[ttp] send_api_key_in_body`",
            "`[ttp] api_key_file` is not set",
        ],
    );

    let (_, message, _) = error(&with("dispatch", "retry_base = \"2h\""), &[]);
    assert_contains(
        &message,
        &[
            "`[dispatch] retry_base`",
            "longer than `[dispatch] retry_cap` (1h)",
        ],
    );
}

#[test]
fn base_urls_must_be_https_unless_explicitly_allowed() {
    let insecure = REQUIRED.replace("https://", "http://");
    let (_, message, path) = error(&insecure, &[]);
    assert_contains(
        &message,
        &[
            "`[ttp] base_url`",
            &path,
            "line 2",
            "plain http://",
            "allow_insecure_http",
        ],
    );
    assert!(
        load(
            &insecure,
            &[("TTP_AGENT__TTP__ALLOW_INSECURE_HTTP", "true")]
        )
        .result
        .is_ok()
    );

    // Plain HTTP to this machine never crosses a network: allowed without the switch.
    for local in [
        "http://127.0.0.1:8080/ttp-fhir/fhir/dispatcher",
        "http://[::1]:8080/d",
        "http://localhost/d",
    ] {
        assert!(
            load(REQUIRED, &[("TTP_AGENT__TTP__BASE_URL", local)])
                .result
                .is_ok(),
            "{local}"
        );
    }
    let (_, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__TTP__BASE_URL", "http://10.0.0.1/d")],
    );
    assert_contains(&message, &["plain http://", "loopback"]);

    let (_, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__TTP__BASE_URL", "https://fttp.example.org/d?x=1")],
    );
    assert_contains(&message, &["TTP_AGENT__TTP__BASE_URL", "query"]);

    let (_, message, _) = error(
        REQUIRED,
        &[(
            "TTP_AGENT__TTP__BASE_URL",
            "https://u:pw@fttp.example.org/d",
        )],
    );
    assert_contains(&message, &["user name or password"]);
    assert!(!message.contains("pw@"), "{message}");

    let (_, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__TTP__BASE_URL", "fttp.example.org")],
    );
    assert_contains(&message, &["not a URL"]);
}

#[test]
fn names_are_checked_for_blanks_and_headers_for_validity() {
    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__TTP__STUDY", " example-study")]);
    assert_contains(
        &message,
        &["`[ttp] study`", "leading or trailing whitespace"],
    );

    let (_, message, _) = error(&REQUIRED.replace("\"example-site\"", "\"\""), &[]);
    assert_contains(&message, &["`[ttp] target`", "empty"]);

    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__TTP__API_KEY_HEADER", "api key")]);
    assert_contains(
        &message,
        &["`[ttp] api_key_header`", "not a valid HTTP header name"],
    );
}

#[test]
fn misspelt_enumerations_and_levels_list_the_choices() {
    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__LOG__FORMAT", "yaml")]);
    assert_contains(
        &message,
        &[
            "`[log] format`",
            "\"auto\", \"text\", \"json\" or \"journald\"",
        ],
    );
    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__LOG__LEVEL", "inf")]);
    assert_contains(&message, &["`[log] level`", "does not end in a level"]);
    let (_, message, _) = error(REQUIRED, &[("TTP_AGENT__TTP__TASK_RELISTING", "always")]);
    assert_contains(
        &message,
        &["`[ttp] task_relisting`", "\"until_done\" or \"once\""],
    );
}

#[test]
fn an_unreadable_or_non_utf8_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = AgentConfig::load_from(Some(dir.path()), Vec::new()).unwrap_err();
    assert!(matches!(err, ConfigError::FileUnreadable { .. }), "{err:?}");
    assert_contains(&err.to_string(), &[&dir.path().display().to_string()]);

    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"[ttp]\nstudy = \"M\xfcller\"\n").unwrap();
    let err = AgentConfig::load_from(Some(&path), Vec::new()).unwrap_err();
    assert_contains(
        &err.to_string(),
        &[&path.display().to_string(), "not UTF-8"],
    );
}

#[test]
fn a_relative_config_path_is_made_absolute_so_errors_and_paths_stay_meaningful() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        REQUIRED.replace("/etc/ttp-agent/secrets/idat-key", "idat-key"),
    )
    .unwrap();
    let cwd = std::env::current_dir().unwrap();
    let relative = pathdiff(&path, &cwd);
    let config = AgentConfig::load_from(Some(&relative), Vec::new()).unwrap();
    assert!(config.source_file().unwrap().is_absolute());
    // Not normalised lexically (`..` after a symlink would mislead), but the same file.
    std::fs::write(dir.path().join("idat-key"), "k").unwrap();
    assert_eq!(
        config.store.idat_key_file.canonicalize().unwrap(),
        dir.path().join("idat-key").canonicalize().unwrap()
    );
}

/// `target` relative to `base` using `..` components (both absolute).
fn pathdiff(target: &Path, base: &Path) -> PathBuf {
    let ups = base.components().count() - 1;
    let mut out = PathBuf::new();
    for _ in 0..ups {
        out.push("..");
    }
    out.join(target.strip_prefix("/").unwrap())
}

#[test]
fn webhooks_over_plain_http_to_another_host_are_refused() {
    for (section, key) in [("admin", "webhook_url"), ("handover", "webhook_url")] {
        let text = with(
            section,
            &format!("{key} = \"http://hooks.example.org/services/T0K3N\""),
        );
        let (_, message, path) = error(&text, &[]);
        assert_contains(
            &message,
            &[
                &format!("[{section}] {key}"),
                &path,
                "https://",
                "hooks.example.org",
            ],
        );
        assert!(!message.contains("T0K3N"), "{message}");

        // To this machine, or with the explicit test-setup switch, plain http is accepted.
        let local = with(section, &format!("{key} = \"http://127.0.0.1:8080/hook\""));
        assert!(load(&local, &[]).result.is_ok());
        let allowed = with("ttp", "allow_insecure_http = true").replace(
            "[store]",
            &format!("[{section}]\n{key} = \"http://hooks.example.org/x\"\n\n[store]"),
        );
        assert!(load(&allowed, &[]).result.is_ok(), "{allowed}");
    }
}

#[test]
fn inline_encoding_secrets_are_refused_naming_the_key_and_never_echoed() {
    for (line, key, file_key) in [
        ("balanced_seed = 123456789", "balanced_seed", "seeds_file"),
        (
            "field_seeds = { firstName = 987654321 }",
            "field_seeds",
            "seeds_file",
        ),
        ("secret = \"s3cr3t-value\"", "secret", "secret_file"),
    ] {
        let (_, message, path) = error(&with("encoding", line), &[]);
        assert_contains(
            &message,
            &[&format!("[encoding] {key}"), &path, "line", file_key],
        );
        for value in ["123456789", "987654321", "s3cr3t"] {
            assert!(!message.contains(value), "{message}");
        }
    }
}

#[test]
fn an_unknown_release_element_names_the_file_line_and_key() {
    let (_, message, path) = error(
        &with(
            "dispatch",
            "release_elements = [\"given\", \"family\", \"shoe-size\"]",
        ),
        &[],
    );
    assert_contains(
        &message,
        &[
            &path,
            "line 10",
            "release_elements",
            "\"shoe-size\" is not an IDAT element code",
        ],
    );
    let (_, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__DISPATCH__RELEASE_ELEMENTS", "given,sheo")],
    );
    assert_contains(
        &message,
        &["TTP_AGENT__DISPATCH__RELEASE_ELEMENTS", "\"sheo\""],
    );
    let (_, message, _) = error(&with("dispatch", "release_elements = []"), &[]);
    assert_contains(&message, &["release_elements", "the list is empty"]);
}

#[test]
fn release_elements_default_to_all_and_read_from_the_file_or_the_environment() {
    use ttp_agent::config::ReleaseElements;
    use ttp_proto::IdatElement::*;
    let all = load(REQUIRED, &[]).result.unwrap();
    assert_eq!(all.dispatch.release_elements, ReleaseElements::default());
    assert!(all.dispatch.release_elements.allows(Maritalstatus));
    let file = load(
        &with("dispatch", "release_elements = [\"given\", \"birthdate\"]"),
        &[],
    )
    .result
    .unwrap();
    assert_eq!(
        file.dispatch.release_elements,
        ReleaseElements::only([Given, Birthdate])
    );
    let env = load(
        REQUIRED,
        &[("TTP_AGENT__DISPATCH__RELEASE_ELEMENTS", "family, given")],
    )
    .result
    .unwrap();
    assert_eq!(
        env.dispatch.release_elements,
        ReleaseElements::only([Family, Given])
    );
}

#[test]
fn the_release_settings_are_checked_and_named_in_the_file_and_the_environment() {
    let (_, message, path) = error(&with("dispatch", "approvals_required = 3"), &[]);
    assert_contains(
        &message,
        &[
            "[dispatch] approvals_required",
            &path,
            "line",
            "from 1 to 2",
        ],
    );
    let (_, message, path) = error(&with("dispatch", "idat_release = \"manual\""), &[]);
    assert_contains(
        &message,
        &[
            "[dispatch] idat_release",
            &path,
            "line",
            "\"automatic\" or \"approval\"",
        ],
    );
    let (_, message, _) = error(
        REQUIRED,
        &[("TTP_AGENT__DISPATCH__APPROVALS_REQUIRED", "0")],
    );
    assert_contains(&message, &["TTP_AGENT__DISPATCH__APPROVALS_REQUIRED"]);
    let loaded = load(
        REQUIRED,
        &[
            ("TTP_AGENT__DISPATCH__IDAT_RELEASE", "approval"),
            ("TTP_AGENT__DISPATCH__APPROVALS_REQUIRED", "2"),
        ],
    );
    let config = loaded.result.expect("loads");
    assert_eq!(
        config.dispatch.idat_release,
        ttp_agent::config::IdatRelease::Approval
    );
    assert_eq!(config.dispatch.approvals_required, 2);
    let defaults = load(REQUIRED, &[]).result.expect("loads");
    assert_eq!(
        (
            defaults.dispatch.idat_release,
            defaults.dispatch.approvals_required
        ),
        (ttp_agent::config::IdatRelease::Automatic, 1)
    );
}
