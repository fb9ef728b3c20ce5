//! `ttp-agent init` writes a configuration the other commands accept as it is, once the `[ttp]`
//! settings come from the environment.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::hermetic;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

#[test]
fn init_then_status_with_ttp_settings_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = hermetic::command(BIN)
        .args(["init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "secrets/idat.key",
        "secrets/encoding-seeds.json",
        "secrets/admin-token",
    ] {
        let mode = std::fs::metadata(dir.path().join(secret))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}");
    }
    let config = dir.path().join("agent.toml");

    // Without [ttp]: a configuration error naming the key and the variable, exit 78.
    let out = hermetic::command(BIN)
        .args(["status", "--config"])
        .arg(&config)
        .env_remove("TTP_AGENT__TTP__BASE_URL")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("base_url") && err.contains("TTP_AGENT__TTP__BASE_URL"),
        "{err}"
    );

    // With the environment: status and export work on the fresh store.
    let env = [
        (
            "TTP_AGENT__TTP__BASE_URL",
            "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher",
        ),
        ("TTP_AGENT__TTP__STUDY", "s"),
        ("TTP_AGENT__TTP__TARGET", "t"),
    ];
    for args in [
        &["status", "--json"][..],
        &["export", "--format", "csv"][..],
    ] {
        let out = hermetic::command(BIN)
            .args(args)
            .arg("--config")
            .arg(&config)
            .envs(env)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        dir.path().join("store").is_dir(),
        "the store lives inside DIR"
    );

    // A second init never overwrites.
    let out = hermetic::command(BIN)
        .args(["init", "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
}
