//! Unit tests that need the module's internals; behaviour seen from outside is tested in
//! `tests/it/config/`.

use super::*;

fn minimal_env() -> Vec<(String, String)> {
    [
        (
            "TTP_AGENT__TTP__BASE_URL",
            "https://fttp.example.org/ttp-fhir/fhir/dispatcher",
        ),
        ("TTP_AGENT__TTP__STUDY", "example-study"),
        ("TTP_AGENT__TTP__TARGET", "example-site"),
        ("TTP_AGENT__STORE__IDAT_KEY_FILE", "/run/secrets/idat-key"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn the_builder_reads_exactly_the_keys_of_the_schema() {
    let config = AgentConfig::from_file_and_env(None, minimal_env()).unwrap();
    let read: Vec<KeyPath> = config.recorded.iter().map(|r| r.key).collect();
    let mut read_sorted = read.clone();
    read_sorted.sort();
    read_sorted.dedup();
    assert_eq!(read_sorted.len(), read.len(), "a key was recorded twice");
    let mut schema: Vec<KeyPath> = ALL.iter().map(|s| s.key).collect();
    schema.sort();
    assert_eq!(read_sorted, schema);
}

#[test]
fn every_default_parses_and_is_recorded_as_the_default() {
    let config = AgentConfig::from_file_and_env(None, minimal_env()).unwrap();
    for spec in ALL {
        let recorded = config.recorded.iter().find(|r| r.key == spec.key).unwrap();
        match spec.presence {
            Presence::Default(_) => {
                assert_eq!(recorded.origin, Some(Origin::Default), "{}", spec.key);
                assert!(recorded.display.is_some(), "{}", spec.key);
            }
            Presence::Optional => assert_eq!(recorded.origin, None, "{}", spec.key),
            Presence::Required => {
                assert!(
                    matches!(recorded.origin, Some(Origin::Env { .. })),
                    "{}",
                    spec.key
                )
            }
        }
    }
}

#[test]
fn an_absent_default_file_means_environment_only() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("agent.toml");
    let config = load_with_default(&absent, minimal_env()).unwrap();
    assert_eq!(config.source_file(), None);
    assert_eq!(config.ttp.study, "example-study");
}

#[test]
fn a_present_default_file_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[ttp]\nstudy = \"from-default-file\"\n").unwrap();
    let config = load_with_default(
        &path,
        minimal_env()
            .into_iter()
            .filter(|(k, _)| !k.ends_with("STUDY")),
    )
    .unwrap();
    assert_eq!(config.source_file(), Some(path.as_path()));
    assert_eq!(config.ttp.study, "from-default-file");
}

#[test]
fn a_default_path_that_is_a_directory_is_an_error_not_silently_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_with_default(dir.path(), minimal_env()).unwrap_err();
    assert!(matches!(err, ConfigError::FileUnreadable { .. }), "{err}");
}

#[test]
fn spans_are_converted_once_and_a_span_too_long_for_dates_names_its_key() {
    let config = AgentConfig::from_file_and_env(None, minimal_env()).unwrap();
    assert_eq!(
        config.store.task_retention.delta(),
        chrono::TimeDelta::days(30)
    );
    assert_eq!(config.ttp.settle.std(), config.ttp.timeout * 2);
    for (var, value, key) in [
        (
            "TTP_AGENT__STORE__TASK_RETENTION",
            "101years",
            "`[store] task_retention`",
        ),
        (
            "TTP_AGENT__STORE__IDAT_RETENTION",
            "2000000000years",
            "`[store] idat_retention`",
        ),
        (
            "TTP_AGENT__SUBMIT__RECHECK_AFTER",
            "200years",
            "`[submit] recheck_after`",
        ),
        ("TTP_AGENT__TTP__TIMEOUT", "60years", "`[ttp] timeout`"),
    ] {
        let mut env = minimal_env();
        env.push((var.to_owned(), value.to_owned()));
        let err = AgentConfig::from_file_and_env(None, env)
            .expect_err(var)
            .to_string();
        assert!(err.contains(key) && err.contains(var), "{err}");
        assert!(err.contains("100 years"), "{err}");
    }
}

#[test]
fn endpoint_urls_follow_the_rules_the_client_checks_with_the_key_named() {
    let with = |extra: &[(&str, &str)]| {
        let mut env = minimal_env();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        AgentConfig::from_file_and_env(None, env)
    };
    let oauth2 = |token_url: &'static str| {
        [
            ("TTP_AGENT__TTP__OAUTH2__TOKEN_URL", token_url),
            ("TTP_AGENT__TTP__OAUTH2__CLIENT_ID", "site"),
            (
                "TTP_AGENT__TTP__OAUTH2__CLIENT_SECRET_FILE",
                "/run/secrets/oauth2",
            ),
        ]
    };
    // A token endpoint may carry a query (RFC 6749 § 3.2), the client accepts it too.
    let config = with(&oauth2("https://idp.example.org/token?realm=a")).unwrap();
    let token_url = &config.ttp.oauth2.as_ref().unwrap().token_url;
    assert_eq!(check_token_url(token_url), Ok(()));
    for (extra, key, says) in [
        (
            oauth2("https://idp.example.org/token#f").to_vec(),
            "`[ttp.oauth2] token_url`",
            "fragment",
        ),
        (
            // `allow_insecure_http` is for the dispatcher; the client secret never travels
            // in clear to another host.
            [
                oauth2("http://idp.example.org/token").as_slice(),
                &[("TTP_AGENT__TTP__ALLOW_INSECURE_HTTP", "true")],
            ]
            .concat(),
            "`[ttp.oauth2] token_url`",
            "plain http://",
        ),
        (
            vec![("TTP_AGENT__TTP__BASE_URL", "https://fttp.example.org/d?x=1")],
            "`[ttp] base_url`",
            "query or fragment",
        ),
        (
            vec![("TTP_AGENT__TTP__BASE_URL", "http://[::ffff:10.0.0.1]/d")],
            "`[ttp] base_url`",
            "plain http://",
        ),
    ] {
        let err = with(&extra).expect_err(key).to_string();
        assert!(err.contains(key) && err.contains(says), "{err}");
    }
    for here in ["http://[::ffff:127.0.0.1]/d", "http://localhost./d"] {
        let config = with(&[("TTP_AGENT__TTP__BASE_URL", here)]).expect(here);
        assert!(is_loopback_url(&config.ttp.base_url), "{here}");
    }
}
