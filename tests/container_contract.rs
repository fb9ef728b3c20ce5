//! The container contract (Containerfile, deploy/compose.yaml), tested by running the binary
//! the way the image runs it, since no container engine is available to tests:
//!
//! * `ttp-agent run` with no `--config` and no file at the default path: the configuration
//!   comes from environment variables alone, the secrets from files (as mounted secrets);
//! * a clean environment (nothing inherited), a read-only working directory, read-only
//!   secrets and a read-only temporary directory; the state directory is the only place the
//!   agent may write, and nothing is written anywhere else. When the test runs as root the
//!   agent runs as `nobody` (uid 65534), so the read-only modes are enforced by the kernel as
//!   in a container with a non-root user;
//! * JSON logs on stderr, every line one object;
//! * SIGTERM ends it with exit status 0.

mod agent_support;
mod daemon_support;
mod hermetic;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use agent_support::{API_KEY, STUDY, TARGET, sim_config};
use daemon_support::*;

const NOBODY: u32 = 65534;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Path → (size, modification time) of everything under `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            if meta.is_dir() {
                todo.push(entry.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_from_the_environment_alone_writing_only_its_state_directory() {
    assert!(
        !Path::new(ttp_agent::config::DEFAULT_CONFIG_PATH).exists(),
        "{} exists on this machine; the container contract test needs the default path to be \
         absent (as it is in the image)",
        ttp_agent::config::DEFAULT_CONFIG_PATH
    );
    let sim = ttp_sim::start(sim_config(31)).await.unwrap();

    // The container's file system: everything read-only but /var/lib/ttp-agent.
    let root = tempfile::tempdir().unwrap();
    set_mode(root.path(), 0o755);
    let workdir = root.path().join("workdir");
    let secrets = root.path().join("run-secrets");
    let tmp = root.path().join("tmp");
    let state = root.path().join("var-lib-ttp-agent");
    for dir in [&workdir, &secrets, &tmp, &state] {
        std::fs::create_dir(dir).unwrap();
    }
    std::fs::write(secrets.join("api-key"), format!("{API_KEY}\n")).unwrap();
    std::fs::write(
        secrets.join("idat-key"),
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .unwrap();
    let as_root = unsafe { libc::geteuid() } == 0;
    if as_root {
        for file in ["api-key", "idat-key"] {
            std::os::unix::fs::chown(secrets.join(file), Some(NOBODY), Some(NOBODY)).unwrap();
        }
        std::os::unix::fs::chown(&state, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    set_mode(&secrets.join("api-key"), 0o400);
    set_mode(&secrets.join("idat-key"), 0o400);
    set_mode(&state, 0o700);
    for dir in [&workdir, &secrets, &tmp] {
        set_mode(dir, 0o555);
    }
    let read_only = [&workdir, &secrets, &tmp];
    let before: Vec<_> = read_only.iter().map(|d| snapshot(d)).collect();

    let admin = format!("127.0.0.1:{}", free_port());
    let mut cmd = hermetic::command(BIN);
    cmd.arg("run")
        .env_clear()
        .current_dir(&workdir)
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &workdir)
        .env("TMPDIR", &tmp)
        .env("TTP_AGENT__TTP__BASE_URL", sim.base_url())
        .env("TTP_AGENT__TTP__STUDY", STUDY)
        .env("TTP_AGENT__TTP__TARGET", TARGET)
        .env("TTP_AGENT__TTP__API_KEY_FILE", secrets.join("api-key"))
        .env("TTP_AGENT__STORE__PATH", state.join("store"))
        .env("TTP_AGENT__STORE__IDAT_KEY_FILE", secrets.join("idat-key"))
        .env("TTP_AGENT__LOG__FORMAT", "json")
        .env("TTP_AGENT__SCHEDULE__JITTER", "0s")
        .env("TTP_AGENT__ADMIN__LISTEN", &admin);
    if as_root {
        // std drops the supplementary groups when a root parent sets the uid.
        cmd.uid(NOBODY).gid(NOBODY);
    }
    // The container's environment, for the health check below.
    let container_env: Vec<(std::ffi::OsString, std::ffi::OsString)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect();
    // The JSON format comes from the environment above; `spawn` sets it once more.
    let mut daemon = Daemon::spawn(cmd, &root.path().join("stderr.log"));
    daemon.wait_for_message("poll cycle finished", 1).await;

    // The HEALTHCHECK: `ttp-agent healthcheck` in the same environment asks the admin
    // endpoint the environment configures.
    let health = hermetic::command(BIN)
        .arg("healthcheck")
        .env_clear()
        .current_dir(&workdir)
        .envs(container_env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&health.stdout);
    assert_eq!(health.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(&admin), "{stdout}");

    daemon.signal(libc::SIGTERM);
    let (status, _) = daemon.wait_exit().await;
    assert!(status.success(), "{status}:\n{}", daemon.raw_log());

    // Every stderr line is a JSON object (`events` fails otherwise), and there are some.
    let events = daemon.events();
    assert!(events.iter().any(|e| is_message(e, "ttp-agent started")));
    assert!(events.iter().any(|e| is_message(e, "ttp-agent stopped")));
    // Authenticated with the key from the mounted secret.
    let stats = sim.stats();
    assert_eq!(stats.auth_failures, 0, "{stats:?}");
    assert!(
        stats
            .requests_by_op
            .get("$requestTasks")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{stats:?}"
    );

    // The store lives in the state directory; nothing else changed.
    assert!(state.join("store").join(ttp_agent::store::DB_FILE).exists());
    let after: Vec<_> = read_only.iter().map(|d| snapshot(d)).collect();
    assert_eq!(before, after, "the agent wrote outside its state directory");
    let top: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut top_sorted = top.clone();
    top_sorted.sort();
    assert_eq!(
        top_sorted,
        [
            "run-secrets",
            "stderr.log",
            "tmp",
            "var-lib-ttp-agent",
            "workdir"
        ]
    );
    // Let the temporary directory be cleaned up.
    for dir in read_only {
        set_mode(dir, 0o755);
    }
    sim.shutdown().await;
}

#[test]
fn fatal_errors_are_json_lines_too_and_a_configuration_error_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("idat-key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    set_mode(&key, 0o600);
    let base = |cmd: &mut Command| {
        cmd.arg("run")
            .env_clear()
            .current_dir(dir.path())
            .env("TTP_AGENT__LOG__FORMAT", "json")
            .env(
                "TTP_AGENT__TTP__BASE_URL",
                "http://127.0.0.1:9/ttp-fhir/fhir/dispatcher",
            )
            .env("TTP_AGENT__TTP__TARGET", TARGET)
            .env("TTP_AGENT__STORE__IDAT_KEY_FILE", &key);
    };
    let json_lines = |stderr: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    };

    // The study is missing: a configuration error, before logging could be set up.
    let mut cmd = hermetic::command(BIN);
    base(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let lines = json_lines(&out.stderr);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        lines[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("TTP_AGENT__TTP__STUDY")),
        "{lines:?}"
    );

    // A store that cannot be created (its parent is a file): a runtime error, exit 1.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let mut cmd = hermetic::command(BIN);
    base(&mut cmd);
    cmd.env("TTP_AGENT__TTP__STUDY", STUDY)
        .env("TTP_AGENT__STORE__PATH", not_a_dir.join("store"));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = json_lines(&out.stderr);
    let last = lines.last().expect("an error line");
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot create or write the store")),
        "{lines:?}"
    );
}
