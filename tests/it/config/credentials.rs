//! `${CREDENTIALS_DIRECTORY}` in path settings: how a systemd unit with `LoadCredential=`
//! hands the agent its secrets (systemd/ttp-agent.service).

use std::path::Path;

use ttp_agent::config::{AgentConfig, ConfigError};

const FILE: &str = r#"
[ttp]
base_url = "https://fttp.example.org/ttp-fhir/fhir/dispatcher"
study = "example-study"
target = "example-site"
api_key_file = "${CREDENTIALS_DIRECTORY}/api-key"

[store]
idat_key_file = "${CREDENTIALS_DIRECTORY}/idat-key"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn credentials_directory_is_expanded_in_paths_and_the_secrets_load_from_it() {
    let conf = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("api-key"), "k-123\n").unwrap();
    std::fs::write(
        creds.path().join("idat-key"),
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let path = write_config(conf.path(), FILE);
    let creds_dir = creds.path().to_str().unwrap();
    let config =
        AgentConfig::load_from(Some(&path), env(&[("CREDENTIALS_DIRECTORY", creds_dir)])).unwrap();
    assert_eq!(
        config.ttp.api_key_file.as_deref(),
        Some(creds.path().join("api-key").as_path())
    );
    assert_eq!(config.store.idat_key_file, creds.path().join("idat-key"));
    let secrets = config.load_secrets().unwrap();
    assert_eq!(secrets.api_key.unwrap().expose(), b"k-123");
}

#[test]
fn an_environment_setting_may_use_the_placeholder_too() {
    let config = AgentConfig::from_file_and_env(
        None,
        env(&[
            (
                "TTP_AGENT__TTP__BASE_URL",
                "https://fttp.example.org/ttp-fhir/fhir/dispatcher",
            ),
            ("TTP_AGENT__TTP__STUDY", "s"),
            ("TTP_AGENT__TTP__TARGET", "t"),
            (
                "TTP_AGENT__STORE__IDAT_KEY_FILE",
                "${CREDENTIALS_DIRECTORY}/idat-key",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "/run/credentials/ttp-agent.service",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        config.store.idat_key_file,
        Path::new("/run/credentials/ttp-agent.service/idat-key")
    );
}

#[test]
fn an_unset_credentials_directory_is_a_configuration_error_that_says_what_to_do() {
    let conf = tempfile::tempdir().unwrap();
    let path = write_config(conf.path(), FILE);
    // An empty variable counts as unset, like every other variable the agent reads.
    for vars in [env(&[]), env(&[("CREDENTIALS_DIRECTORY", "")])] {
        let err = AgentConfig::load_from(Some(&path), vars).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("[ttp] api_key_file"), "{msg}");
        assert!(msg.contains("line 6"), "{msg}");
        assert!(msg.contains("LoadCredential="), "{msg}");
        assert!(msg.contains("CREDENTIALS_DIRECTORY="), "{msg}");
        assert_eq!(err.exit_code(), 78);
    }
}

#[test]
fn only_a_leading_placeholder_followed_by_a_name_is_accepted() {
    let conf = tempfile::tempdir().unwrap();
    let creds = [("CREDENTIALS_DIRECTORY", "/run/credentials/x")];
    for bad in ["${CREDENTIALS_DIRECTORY}", "${CREDENTIALS_DIRECTORY}/"] {
        let path = write_config(
            conf.path(),
            &FILE.replace("${CREDENTIALS_DIRECTORY}/idat-key", bad),
        );
        let err = AgentConfig::load_from(Some(&path), env(&creds)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("[store] idat_key_file"), "{msg}");
        assert!(msg.contains("${CREDENTIALS_DIRECTORY}/NAME"), "{msg}");
    }
    // Elsewhere in a path the text is not a placeholder: it stays as written (relative to the
    // file's directory), so nothing is expanded by surprise.
    let path = write_config(
        conf.path(),
        &FILE.replace(
            "${CREDENTIALS_DIRECTORY}/idat-key",
            "keys/${CREDENTIALS_DIRECTORY}",
        ),
    );
    let config = AgentConfig::load_from(Some(&path), env(&creds)).unwrap();
    assert_eq!(
        config.store.idat_key_file,
        conf.path().join("keys/${CREDENTIALS_DIRECTORY}")
    );
}

#[test]
fn a_relative_credentials_directory_is_refused() {
    let conf = tempfile::tempdir().unwrap();
    let path = write_config(conf.path(), FILE);
    let err = AgentConfig::load_from(Some(&path), env(&[("CREDENTIALS_DIRECTORY", "creds")]))
        .unwrap_err();
    assert!(err.to_string().contains("not an absolute path"), "{err}");
}

#[test]
fn effective_values_list_every_key_once_with_its_value() {
    let conf = tempfile::tempdir().unwrap();
    let path = write_config(conf.path(), FILE);
    let config =
        AgentConfig::load_from(Some(&path), env(&[("CREDENTIALS_DIRECTORY", "/run/c")])).unwrap();
    let values = config.effective_values();
    let get = |name: &str| {
        values
            .iter()
            .find(|(k, _)| k.to_string() == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("[ttp] study").as_deref(), Some("\"example-study\""));
    assert_eq!(
        get("[schedule] cron").as_deref(),
        Some("\"0 */15 * * * *\"")
    );
    assert_eq!(
        get("[store] idat_key_file").as_deref(),
        Some("\"/run/c/idat-key\"")
    );
    assert_eq!(get("[ttp] ca_file"), None);
    let mut keys: Vec<String> = values.iter().map(|(k, _)| k.to_string()).collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
}
