//! The container contract (Containerfile, deploy/compose.yaml), tested by running the binary
//! the way the image runs it, since no container engine is available to tests:
//!
//! * `ttp-agent run` with its configuration from environment variables alone, the secrets from
//!   files (as mounted secrets). The image has no file at the default path; here an empty
//!   `TTP_AGENT_CONFIG=/dev/null` stands for it, so that the host's `/etc/ttp-agent/agent.toml`
//!   (a machine with the Debian package) is never read;
//! * a clean environment (nothing inherited), a read-only working directory, read-only
//!   secrets and a read-only temporary directory; the state directory is the only place the
//!   agent may write, and nothing is written anywhere else. When the test runs as root the
//!   agent runs as `nobody` (uid 65534), so the read-only modes are enforced by the kernel as
//!   in a container with a non-root user;
//! * JSON logs on stderr, every line one object;
//! * SIGTERM ends it with exit status 0.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::support::agent::{API_KEY, STUDY, TARGET, sim_config};
use crate::support::daemon::*;
use crate::support::hermetic;

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
        // An empty file stands for the image's absent one: the host's /etc/ttp-agent/agent.toml
        // (a machine with the Debian package) is never read.
        .env("TTP_AGENT_CONFIG", "/dev/null")
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
        // An empty file stands for the image's absent one: the host's /etc/ttp-agent/agent.toml
        // (a machine with the Debian package) is never read.
        .env("TTP_AGENT_CONFIG", "/dev/null")
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
            // An empty file stands for the image's absent one: the host's /etc/ttp-agent/agent.toml
            // (a machine with the Debian package) is never read.
            .env("TTP_AGENT_CONFIG", "/dev/null")
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

// --- The image contract, as four files describe it. -------------------------------------------
//
// The Containerfile (sites building from public base images), scripts/build-image.sh (the image
// CI builds from Debian packages and scripts/test-container.sh runs), deploy/compose.yaml and
// deploy/kubernetes/ttp-agent.yaml must describe one contract. These tests read them as text
// (and the YAML files with a YAML parser) and compare; the environment the deployments set is
// checked with the agent's own configuration loader.

/// What an image declares about how it runs.
#[derive(Debug, Default, PartialEq)]
struct ImageContract {
    entrypoint: Vec<String>,
    user: String,
    workdir: String,
    volumes: Vec<String>,
    /// `TTP_AGENT__*` only (`PATH` and the like belong to the base image).
    env: BTreeMap<String, String>,
    healthcheck: Vec<String>,
    /// interval, timeout, start-period, retries.
    healthcheck_options: BTreeMap<String, String>,
    stop_signal: String,
    binary: String,
}

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn json_strings(text: &str, what: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: {text:?} is no JSON array: {e}"))
}

/// The runtime stage (after the last `FROM`) of a Containerfile.
fn containerfile_contract(text: &str) -> ImageContract {
    // Continuation lines joined; comments and blank lines dropped.
    let mut instructions: Vec<String> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if pending.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                instructions.push(std::mem::take(&mut pending));
            }
        }
    }
    let last_from = instructions
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM instruction");
    let mut c = ImageContract::default();
    for instruction in &instructions[last_from + 1..] {
        let (keyword, rest) = instruction.split_once(' ').unwrap_or((instruction, ""));
        let rest = rest.trim();
        match keyword {
            "ENV" => {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                    if k.starts_with("TTP_AGENT__") {
                        c.env.insert(k.into(), v.into());
                    }
                }
            }
            "USER" => c.user = rest.into(),
            "WORKDIR" => c.workdir = rest.into(),
            "VOLUME" => c.volumes = json_strings(rest, "VOLUME"),
            "STOPSIGNAL" => c.stop_signal = rest.into(),
            "ENTRYPOINT" => c.entrypoint = json_strings(rest, "ENTRYPOINT"),
            "HEALTHCHECK" => {
                let (options, cmd) = rest.split_once("CMD ").expect("HEALTHCHECK … CMD […]");
                for option in options.split_whitespace() {
                    let (k, v) = option
                        .strip_prefix("--")
                        .and_then(|o| o.split_once('='))
                        .expect("HEALTHCHECK --option=value");
                    c.healthcheck_options.insert(k.into(), v.into());
                }
                c.healthcheck = json_strings(cmd.trim(), "HEALTHCHECK CMD");
            }
            "COPY" => {
                let dest = rest.split_whitespace().last().unwrap_or("");
                if dest.ends_with("/ttp-agent") && !dest.contains("/var/") {
                    c.binary = dest.into();
                }
            }
            _ => {}
        }
    }
    c
}

/// Removes one pair of surrounding quotes, as the shell would.
fn unquote(value: &str) -> &str {
    for q in ['\'', '"'] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

/// The `buildah config` options of scripts/build-image.sh (one option per line) and where it
/// puts the binary.
fn build_script_contract(text: &str) -> ImageContract {
    let mut c = ImageContract::default();
    let mut lines = text.lines().skip_while(|l| l.trim() != "buildah config \\");
    assert!(lines.next().is_some(), "no `buildah config \\` line");
    for line in lines {
        let line = line.trim();
        let Some(option) = line.strip_suffix('\\') else {
            break;
        };
        let (name, value) = option.trim().split_once(' ').expect("--option value");
        let value = unquote(value.trim());
        match name {
            "--env" => {
                let (k, v) = value.split_once('=').expect("--env KEY=VALUE");
                if k.starts_with("TTP_AGENT__") {
                    c.env.insert(k.into(), v.into());
                }
            }
            "--user" => c.user = value.into(),
            "--workingdir" => c.workdir = value.into(),
            "--volume" => c.volumes.push(value.into()),
            "--stop-signal" => c.stop_signal = value.into(),
            "--entrypoint" => c.entrypoint = json_strings(value, "--entrypoint"),
            "--healthcheck" => {
                let words: Vec<_> = value.split_whitespace().collect();
                assert_eq!(words.first(), Some(&"CMD"), "--healthcheck 'CMD …'");
                c.healthcheck = words[1..].iter().map(|w| w.to_string()).collect();
            }
            other => {
                if let Some(k) = other.strip_prefix("--healthcheck-") {
                    c.healthcheck_options.insert(k.into(), value.into());
                }
            }
        }
    }
    let copy = text
        .lines()
        .find(|l| l.trim_start().starts_with("objcopy ") && l.contains("$rootfs/"))
        .expect("the line that puts the binary into the root file system");
    let dest = copy.rsplit("$rootfs").next().unwrap_or("");
    c.binary = dest.trim_end_matches('"').into();
    c
}

#[test]
fn the_containerfile_and_the_image_build_script_declare_the_same_contract() {
    let containerfile = containerfile_contract(&repo_file("Containerfile"));
    let script = build_script_contract(&repo_file("scripts/build-image.sh"));
    assert_eq!(
        containerfile, script,
        "Containerfile (left) and scripts/build-image.sh (right) disagree"
    );
    // And the contract is the one the documentation and the deployments rely on.
    assert_eq!(containerfile.entrypoint, ["ttp-agent", "run"]);
    assert_eq!(containerfile.user, "65532:65532");
    assert_eq!(containerfile.volumes, ["/var/lib/ttp-agent"]);
    assert_eq!(containerfile.healthcheck, ["ttp-agent", "healthcheck"]);
    assert_eq!(containerfile.stop_signal, "SIGTERM");
    assert_eq!(containerfile.binary, "/usr/local/bin/ttp-agent");
    assert_eq!(containerfile.env["TTP_AGENT__LOG__FORMAT"], "json");
    // The volume is the only writable path: the store and the control socket live there.
    for key in ["TTP_AGENT__STORE__PATH", "TTP_AGENT__CONTROL__SOCKET"] {
        let path = Path::new(&containerfile.env[key]);
        assert!(
            path.starts_with(&containerfile.volumes[0]),
            "{key}: {path:?}"
        );
    }
}

/// `--healthcheck-interval 30s` and `--interval=30s` mean the same; so do "Ns" and "N".
fn seconds(text: &str) -> u64 {
    humantime::parse_duration(text)
        .map(|d| d.as_secs())
        .or_else(|_| text.parse())
        .unwrap_or_else(|_| panic!("{text:?} is no duration"))
}

fn yaml_str<'a>(v: &'a serde_yaml::Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v:?}"))
}

fn yaml_strs<'a>(v: &'a serde_yaml::Value, what: &str) -> Vec<&'a str> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v:?}"))
        .iter()
        .map(|item| yaml_str(item, what))
        .collect()
}

/// A deployment's environment, loaded as the agent would load it (no configuration file).
fn agent_config(env: &[(String, String)], what: &str) -> ttp_agent::config::AgentConfig {
    ttp_agent::config::AgentConfig::from_file_and_env(None, env.to_vec())
        .unwrap_or_else(|e| panic!("{what}: the environment is no valid configuration: {e}"))
}

/// The secret files a configuration names.
fn secret_files(config: &ttp_agent::config::AgentConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        config.ttp.api_key_file.clone(),
        Some(config.store.idat_key_file.clone()),
        config.admin.token_file.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    files.sort();
    files
}

#[test]
fn compose_runs_the_image_as_its_contract_says() {
    let contract = containerfile_contract(&repo_file("Containerfile"));
    let mut compose: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/compose.yaml")).expect("compose.yaml parses");
    compose.apply_merge().expect("compose.yaml: merge keys");
    let service = &compose["services"]["ttp-agent"];
    assert_eq!(
        yaml_str(&service["build"]["dockerfile"], "build.dockerfile"),
        "Containerfile"
    );

    let env: Vec<(String, String)> = service["environment"]
        .as_mapping()
        .expect("environment: a mapping")
        .iter()
        .map(|(k, v)| (yaml_str(k, "variable").into(), yaml_str(v, "value").into()))
        .collect();
    let config = agent_config(&env, "compose.yaml");
    let dispatch_grace = config.dispatch.grace_period.as_secs();

    // The store on the named volume, at the image's volume path.
    let volumes = yaml_strs(&service["volumes"], "volumes");
    let (volume_name, target) = volumes[0].split_once(':').expect("NAME:PATH");
    assert!(
        compose["volumes"].get(volume_name).is_some(),
        "volume {volume_name} is declared"
    );
    assert_eq!(contract.volumes, [target]);
    assert!(
        config.store.path.starts_with(target),
        "{:?}",
        config.store.path
    );

    // Secrets: each file the configuration names is a declared secret at /run/secrets/NAME.
    let secrets = yaml_strs(&service["secrets"], "secrets");
    for file in secret_files(&config) {
        let name = file
            .strip_prefix("/run/secrets")
            .unwrap_or_else(|_| panic!("{file:?} is not a mounted secret"))
            .to_str()
            .unwrap();
        assert!(
            secrets.contains(&name),
            "{name} is not among the service's secrets {secrets:?}"
        );
        assert!(
            compose["secrets"].get(name).is_some(),
            "secret {name} is not declared"
        );
    }

    // Hardening and stopping.
    assert_eq!(service["read_only"].as_bool(), Some(true));
    assert_eq!(service["cap_drop"][0].as_str(), Some("ALL"));
    let stop = seconds(yaml_str(&service["stop_grace_period"], "stop_grace_period"));
    assert!(
        stop > dispatch_grace,
        "stop_grace_period {stop}s <= grace period {dispatch_grace}s"
    );
    assert!(
        service.get("entrypoint").is_none() && service.get("user").is_none(),
        "the service keeps the image's entrypoint and user"
    );
    let check = &compose["services"]["ttp-agent-check"];
    assert_eq!(check["entrypoint"][0].as_str(), Some("ttp-agent"));
    assert_eq!(check["entrypoint"][1].as_str(), Some("check"));
}

#[test]
fn the_kubernetes_manifest_runs_the_image_as_its_contract_says() {
    let contract = containerfile_contract(&repo_file("Containerfile"));
    let text = repo_file("deploy/kubernetes/ttp-agent.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .filter(|d: &serde_yaml::Value| !d.is_null())
        .collect();
    let of_kind = |kind: &str| -> &serde_yaml::Value {
        let found: Vec<_> = docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect();
        assert_eq!(found.len(), 1, "one {kind} in the manifest");
        found[0]
    };
    let pvc = of_kind("PersistentVolumeClaim");
    let deployment = of_kind("Deployment");
    let spec = &deployment["spec"];

    // One agent per store, and never two at once.
    assert_eq!(spec["replicas"].as_u64(), Some(1));
    assert_eq!(spec["strategy"]["type"].as_str(), Some("Recreate"));
    assert_eq!(
        pvc["spec"]["accessModes"][0].as_str(),
        Some("ReadWriteOnce")
    );

    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert!(
        container.get("command").is_none() && container.get("args").is_none(),
        "the pod keeps the image's entrypoint ({:?})",
        contract.entrypoint
    );

    // The image's user.
    let (uid, gid) = contract.user.split_once(':').expect("USER uid:gid");
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64(),
        uid.parse().ok()
    );
    assert_eq!(
        pod["securityContext"]["runAsGroup"].as_u64(),
        gid.parse().ok()
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let hardening = &container["securityContext"];
    assert_eq!(hardening["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(hardening["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(hardening["capabilities"]["drop"][0].as_str(), Some("ALL"));

    // The environment is a valid configuration.
    let env: Vec<(String, String)> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            (
                yaml_str(&e["name"], "env name").into(),
                yaml_str(&e["value"], "env value").into(),
            )
        })
        .collect();
    let config = agent_config(&env, "ttp-agent.yaml");

    // Volumes: the claim at the image's volume path (holding the store); the secrets
    // read-only, holding every secret file the configuration names.
    let volume_of = |name: &str| -> &serde_yaml::Value {
        pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let mut state_mounted = false;
    let mut secret_dirs = Vec::new();
    for mount in container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
    {
        let path = PathBuf::from(yaml_str(&mount["mountPath"], "mountPath"));
        let volume = volume_of(yaml_str(&mount["name"], "mount name"));
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            assert_eq!(Some(claim), pvc["metadata"]["name"].as_str());
            assert_eq!(contract.volumes, [path.to_str().unwrap()]);
            assert!(
                config.store.path.starts_with(&path),
                "{:?}",
                config.store.path
            );
            state_mounted = true;
        } else if volume.get("secret").is_some() {
            assert_eq!(
                mount["readOnly"].as_bool(),
                Some(true),
                "secrets are mounted read-only"
            );
            secret_dirs.push(path);
        }
    }
    assert!(state_mounted, "the claim is mounted");
    for file in secret_files(&config) {
        assert!(
            secret_dirs.iter().any(|d| file.starts_with(d)),
            "{file:?} is in no mounted secret ({secret_dirs:?})"
        );
    }

    // Probes: liveness on /healthz (HTTP, from the kubelet), readiness on /readyz.
    let admin = config.admin.listen;
    let ports = container["ports"].as_sequence().expect("ports");
    let port_number = |port: &serde_yaml::Value| -> u64 {
        port.as_u64().unwrap_or_else(|| {
            let name = yaml_str(port, "probe port");
            ports
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .and_then(|p| p["containerPort"].as_u64())
                .unwrap_or_else(|| panic!("no container port named {name}"))
        })
    };
    for probe in ["livenessProbe", "startupProbe"] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/healthz"), "{probe}");
        assert_eq!(
            port_number(&get["port"]),
            u64::from(admin.port()),
            "{probe}"
        );
    }
    let readiness = &container["readinessProbe"];
    match readiness.get("httpGet") {
        Some(get) => {
            assert_eq!(get["path"].as_str(), Some("/readyz"));
            assert_eq!(port_number(&get["port"]), u64::from(admin.port()));
        }
        None => {
            let command = yaml_strs(
                &readiness["exec"]["command"],
                "readinessProbe: httpGet or exec",
            );
            // The image's health check command, asking /readyz.
            assert_eq!(command[..2], contract.healthcheck[..], "{command:?}");
            assert!(command.contains(&"--ready"), "{command:?}");
        }
    }
    // The kubelet reaches the pod's address, not its loopback; such a listener needs the
    // admin token (the daemon refuses to start without one).
    assert!(
        !admin.ip().is_loopback(),
        "the kubelet cannot reach {admin}"
    );
    assert!(config.admin.token_file.is_some(), "[admin] token_file");

    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(grace > config.dispatch.grace_period.as_secs());
}
