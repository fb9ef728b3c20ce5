//! Reading the secret files: trimming, permission warnings, errors that name the key and file
//! but never the content.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ttp_agent::config::{AgentConfig, ConfigError, SecretProblem, Secrets};

struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        Site {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a secret file with the given mode and returns its path.
    fn secret(&self, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    /// A configuration whose secret paths are relative to the file, as a site would write it.
    fn config(&self, extra_ttp: &str, extra_admin: &str) -> AgentConfig {
        let text = format!(
            "[ttp]\nbase_url = \"https://fttp.example.org/ttp-fhir/fhir/dispatcher\"\n\
             study = \"example-study\"\ntarget = \"example-site\"\n{extra_ttp}\n\
             [store]\nidat_key_file = \"idat-key\"\n[admin]\n{extra_admin}\n"
        );
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        AgentConfig::load_from(Some(&path), Vec::new()).unwrap()
    }

    fn load_secrets(&self, extra_ttp: &str, extra_admin: &str) -> Result<Secrets, ConfigError> {
        self.config(extra_ttp, extra_admin).load_secrets()
    }
}

const ALL_SECRETS: &str = "api_key_file = \"api-key\"\nbasic_user = \"site\"\n\
                           basic_password_file = \"basic-password\"";

#[test]
fn secrets_are_read_with_one_trailing_newline_removed() {
    let site = Site::new();
    site.secret("api-key", b"api-key-s3cr3t\n", 0o600);
    site.secret("basic-password", b"pass word\r\n", 0o600);
    site.secret("idat-key", b"00112233445566778899aabbccddeeff\n\n", 0o400);
    site.secret(
        "admin-token",
        b"token-s3cr3t-0123456789abcdef0123456789",
        0o600,
    );
    let secrets = site
        .load_secrets(ALL_SECRETS, "token_file = \"admin-token\"")
        .unwrap();
    assert_eq!(
        secrets.api_key.as_ref().unwrap().expose(),
        b"api-key-s3cr3t"
    );
    assert_eq!(
        secrets.basic_password.as_ref().unwrap().expose(),
        b"pass word"
    );
    // Only one newline is removed: the second is part of the content.
    assert_eq!(
        secrets.idat_key.expose(),
        b"00112233445566778899aabbccddeeff\n"
    );
    assert_eq!(
        secrets.admin_token.as_ref().unwrap().expose(),
        b"token-s3cr3t-0123456789abcdef0123456789"
    );
    assert!(secrets.warnings.is_empty(), "{:?}", secrets.warnings);
}

#[test]
fn optional_secrets_stay_absent_when_not_configured() {
    let site = Site::new();
    site.secret("idat-key", b"k", 0o600);
    let secrets = site.load_secrets("", "").unwrap();
    assert!(secrets.api_key.is_none());
    assert!(secrets.basic_password.is_none());
    assert!(secrets.admin_token.is_none());
    assert_eq!(secrets.idat_key.expose(), b"k");
}

#[test]
fn files_readable_by_group_or_others_yield_warnings_not_errors() {
    let site = Site::new();
    let api_key = site.secret("api-key", b"api-key-s3cr3t", 0o644);
    site.secret("basic-password", b"pw", 0o640);
    site.secret("idat-key", b"k", 0o600);
    let secrets = site.load_secrets(ALL_SECRETS, "").unwrap();
    assert_eq!(secrets.warnings.len(), 2, "{:?}", secrets.warnings);

    let first = &secrets.warnings[0];
    assert_eq!(first.key.to_string(), "[ttp] api_key_file");
    assert_eq!(first.path, api_key);
    assert_eq!(first.mode, 0o644);
    let text = first.to_string();
    for part in [
        "[ttp] api_key_file",
        &api_key.display().to_string(),
        "all users",
        "0644",
        "chmod 600",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(secrets.warnings[1].to_string().contains("its group"));
    assert!(!text.contains("api-key-s3cr3t"));
}

fn secret_error(err: ConfigError) -> (String, PathBuf, SecretProblem, String) {
    let message = err.to_string();
    assert_eq!(err.exit_code(), 78);
    match err {
        ConfigError::SecretFile {
            key, path, problem, ..
        } => (key.to_string(), path, problem, message),
        other => panic!("expected a secret-file error, got {other:?}"),
    }
}

#[test]
fn a_missing_secret_file_names_the_key_the_file_and_where_it_was_configured() {
    let site = Site::new();
    let err = site.load_secrets("", "").unwrap_err();
    let (key, path, problem, message) = secret_error(err);
    assert_eq!(key, "[store] idat_key_file");
    assert_eq!(path, site.dir.path().join("idat-key"));
    assert!(
        matches!(problem, SecretProblem::Unreadable(_)),
        "{problem:?}"
    );
    for part in [
        "[store] idat_key_file",
        &path.display().to_string(),
        "agent.toml, line 7",
        "cannot read it",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
}

#[test]
fn an_empty_secret_is_an_error_even_if_it_holds_a_newline() {
    for content in [&b""[..], b"\n", b"\r\n"] {
        let site = Site::new();
        site.secret("idat-key", content, 0o600);
        let (_, _, problem, message) = secret_error(site.load_secrets("", "").unwrap_err());
        assert!(
            matches!(problem, SecretProblem::Empty),
            "{content:?}: {problem:?}"
        );
        assert!(message.contains("empty"), "{message}");
    }
}

#[test]
fn header_secrets_must_be_one_line_of_text_and_errors_never_show_them() {
    let site = Site::new();
    site.secret("idat-key", b"k", 0o600);
    site.secret("api-key", b"first-s3cr3t\nsecond-s3cr3t\n", 0o600);
    let err = site
        .load_secrets("api_key_file = \"api-key\"", "")
        .unwrap_err();
    let debug = format!("{err:?}");
    let (key, _, problem, message) = secret_error(err);
    assert_eq!(key, "[ttp] api_key_file");
    assert!(
        matches!(problem, SecretProblem::ControlCharacter),
        "{problem:?}"
    );
    for shown in [message, debug] {
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    site.secret("api-key", b"\xff\xfe-s3cr3t", 0o600);
    let err = site
        .load_secrets("api_key_file = \"api-key\"", "")
        .unwrap_err();
    let (_, _, problem, message) = secret_error(err);
    assert!(matches!(problem, SecretProblem::NotText), "{problem:?}");
    assert!(!message.contains("s3cr3t"), "{message}");
}

#[test]
fn binary_key_material_is_accepted_for_the_idat_key() {
    let site = Site::new();
    site.secret("idat-key", &[0u8, 1, 2, 0xff, b'\t', 0x7f], 0o600);
    let secrets = site.load_secrets("", "").unwrap();
    assert_eq!(secrets.idat_key.expose(), &[0u8, 1, 2, 0xff, b'\t', 0x7f]);
}

#[test]
fn directories_and_oversized_files_are_refused() {
    let site = Site::new();
    std::fs::create_dir(site.dir.path().join("idat-key")).unwrap();
    let (_, _, problem, _) = secret_error(site.load_secrets("", "").unwrap_err());
    assert!(
        matches!(problem, SecretProblem::NotARegularFile),
        "{problem:?}"
    );

    let site = Site::new();
    site.secret("idat-key", &vec![b'a'; 64 * 1024 + 1], 0o600);
    let (_, _, problem, message) = secret_error(site.load_secrets("", "").unwrap_err());
    assert!(
        matches!(problem, SecretProblem::TooLarge { .. }),
        "{problem:?}"
    );
    assert!(message.contains("65536 bytes"), "{message}");

    let site = Site::new();
    site.secret("idat-key", &vec![b'a'; 64 * 1024], 0o600);
    assert_eq!(
        site.load_secrets("", "").unwrap().idat_key.expose().len(),
        64 * 1024
    );
}

#[test]
fn debug_output_of_secrets_and_configuration_shows_no_secret() {
    let site = Site::new();
    site.secret("api-key", b"api-key-s3cr3t", 0o600);
    site.secret("basic-password", b"password-s3cr3t", 0o600);
    site.secret("idat-key", b"idat-s3cr3t", 0o600);
    site.secret(
        "admin-token",
        b"token-s3cr3t-0123456789abcdef0123456789",
        0o600,
    );
    let config = site.config(ALL_SECRETS, "token_file = \"admin-token\"");
    let secrets = config.load_secrets().unwrap();
    let shown = format!("{secrets:?}\n{config:?}\n{}", config.redacted_summary());
    assert!(!shown.contains("s3cr3t"), "{shown}");
    // The paths are shown, so an operator can see which files are used.
    let summary = config.redacted_summary();
    assert!(
        summary.contains(
            &Path::new(site.dir.path())
                .join("api-key")
                .display()
                .to_string()
        )
    );
}

#[test]
fn an_admin_token_shorter_than_32_characters_is_refused() {
    let site = Site::new();
    site.secret("idat-key", b"00112233445566778899aabbccddeeff", 0o600);
    site.secret("admin-token", b"x\n", 0o600);
    let err = site
        .load_secrets("", "token_file = \"admin-token\"")
        .unwrap_err();
    assert_eq!(err.exit_code(), 78);
    let message = err.to_string();
    assert!(
        message.contains("token_file") && message.contains("fewer than the 32"),
        "{message}"
    );
    site.secret("admin-token", "t".repeat(32).as_bytes(), 0o600);
    assert!(
        site.load_secrets("", "token_file = \"admin-token\"")
            .is_ok()
    );
}

#[test]
fn encoding_seeds_are_read_like_every_secret_and_may_come_from_credentials() {
    let site = Site::new();
    site.secret("idat-key", b"00112233445566778899aabbccddeeff", 0o600);
    let creds = site.dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    let seeds = creds.join("encoding-seeds");
    std::fs::write(
        &seeds,
        b"{\"balanced_seed\": 1, \"field_seeds\": {\"a\": 2}}\n",
    )
    .unwrap();
    std::fs::set_permissions(&seeds, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = "[ttp]\nbase_url = \"https://fttp.example.org/d\"\nstudy = \"s\"\ntarget = \"t\"\n\
                [store]\nidat_key_file = \"idat-key\"\n\
                [encoding]\nseeds_file = \"${CREDENTIALS_DIRECTORY}/encoding-seeds\"\n";
    let path = site.dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    let env = vec![(
        "CREDENTIALS_DIRECTORY".to_owned(),
        creds.display().to_string(),
    )];
    let config = AgentConfig::load_from(Some(&path), env).unwrap();
    let secrets = config.load_secrets().unwrap();
    assert_eq!(
        secrets.encoding.as_ref().unwrap().expose(),
        b"{\"balanced_seed\": 1, \"field_seeds\": {\"a\": 2}}"
    );
    // Readable by others: a warning naming the key, as for every secret.
    assert_eq!(secrets.warnings.len(), 1, "{:?}", secrets.warnings);
    assert_eq!(secrets.warnings[0].path, seeds);
    assert!(
        secrets.warnings[0]
            .to_string()
            .contains("[encoding] seeds_file")
    );

    // Larger than a secret file may be: refused, naming the key.
    std::fs::write(&seeds, vec![b' '; 70 * 1024]).unwrap();
    let err = config.load_secrets().unwrap_err();
    assert_eq!(err.exit_code(), 78);
    assert!(err.to_string().contains("[encoding] seeds_file"), "{err}");
}
