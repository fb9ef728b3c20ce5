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
fn one_loopback_rule_for_every_url() {
    for here in [
        "http://127.0.0.1:8080/d",
        "http://127.8.9.10/d",
        "http://[::1]:9/d",
        "http://[::ffff:127.0.0.1]/d",
        "http://[::ffff:127.1.2.3]:80/d",
        "http://localhost/d",
        "http://LOCALHOST/d",
        "http://localhost./d",
        "http://LocalHost.:1/d",
    ] {
        assert!(is_loopback_url(&Url::parse(here).unwrap()), "{here}");
    }
    for elsewhere in [
        "http://10.1.2.3/d",
        "http://192.0.2.1/d",
        "http://[::2]/d",
        "http://[::ffff:10.0.0.1]/d",
        // IPv4-compatible (deprecated) is not IPv4-mapped: `::127.0.0.1` is not `lo`.
        "http://[::127.0.0.1]/d",
        "http://ttp.example.org/d",
        "http://localhost.example.org/d",
        "http://a.localhost/d",
        "http://localhost../d",
    ] {
        assert!(
            !is_loopback_url(&Url::parse(elsewhere).unwrap()),
            "{elsewhere}"
        );
    }
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
