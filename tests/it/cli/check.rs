//! `ttp-agent check`: the checklist and its exit status against a real simulator on loopback,
//! a closed port, a TLS mismatch, wrong credentials and invalid configurations.

use std::path::Path;
use std::process::Output;

use crate::support::agent::*;
use crate::support::hermetic;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

async fn check(config: &Path) -> Output {
    check_with(config, &[]).await
}

async fn check_with(config: &Path, extra: &[&str]) -> Output {
    hermetic::command_async(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .args(extra)
        .output()
        .await
        .expect("the agent runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The line of a step, e.g. `✓ authentication  …`.
fn line<'a>(text: &'a str, step: &str) -> &'a str {
    text.lines()
        .find(|l| l.get(4..).is_some_and(|rest| rest.starts_with(step)))
        .unwrap_or_else(|| panic!("no line for {step:?} in:\n{text}"))
}

fn replace_in(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_installation_passes_every_check_without_creating_the_store() {
    let env = setup(sim_config(1), &[]).await;
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(line(&text, "configuration").starts_with('✓'), "{text}");
    assert!(line(&text, "secrets").starts_with('✓'), "{text}");
    assert!(
        line(&text, "store").contains("does not exist yet"),
        "{text}"
    );
    assert!(line(&text, "encoding").starts_with('✓'), "{text}");
    assert!(line(&text, "fTTP reachable").starts_with('✓'), "{text}");
    let auth = line(&text, "authentication");
    assert!(
        auth.starts_with('✓') && auth.contains("0 task(s)"),
        "{text}"
    );
    assert!(text.contains("verdict: ready"), "{text}");
    assert!(
        !env.dir.path().join("store").exists(),
        "check must not create the store"
    );
    // The loopback http:// URL is valid but worth a warning; warnings do not fail the check.
    assert!(text.contains("! configuration"), "{text}");
    // Nothing secret is printed.
    assert!(!text.contains(API_KEY), "{text}");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_store_is_opened_and_one_held_by_a_daemon_is_fine() {
    let env = setup(sim_config(2), &[]).await;
    let loaded = load(&env.config_path);
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();

    // Held by this process, as a running daemon would hold it.
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        line(&text, "store").contains("in use by a running agent (locked) — fine"),
        "{text}"
    );

    store.flush().unwrap();
    drop(store);
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let store_line = line(&text, "store");
    assert!(
        store_line.starts_with('✓') && store_line.contains("opened: schema"),
        "{text}"
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_api_key_fails_the_authentication_check() {
    let env = setup(sim_config(3), &[]).await;
    std::fs::write(env.dir.path().join("secrets/api-key"), "not-the-key\n").unwrap();
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(line(&text, "fTTP reachable").starts_with('✓'), "{text}");
    let auth = line(&text, "authentication");
    assert!(auth.starts_with('✗'), "{text}");
    assert!(auth.contains("HTTP 401"), "{text}");
    assert!(auth.contains("refused the credentials"), "{text}");
    assert!(
        text.contains("verdict: NOT ready — failed: authentication"),
        "{text}"
    );
    assert!(env.sim.stats().auth_failures >= 1);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_fttp_fails_and_authentication_is_skipped() {
    let env = setup(sim_config(4), &[]).await;
    // A port that was just free: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    replace_in(
        &env.config_path,
        &env.sim.base_url(),
        &format!("http://{closed}/ttp-fhir/fhir/dispatcher"),
    );
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let reach = line(&text, "fTTP reachable");
    assert!(reach.starts_with('✗'), "{text}");
    assert!(reach.contains(&closed.to_string()), "{text}");
    assert!(reach.contains("check [ttp] base_url"), "{text}");
    assert!(line(&text, "authentication").starts_with('–'), "{text}");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plain_http_server_fails_the_reachability_check() {
    let env = setup(sim_config(5), &[]).await;
    let https = env.sim.base_url().replace("http://", "https://");
    replace_in(&env.config_path, &env.sim.base_url(), &https);
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let reach = line(&text, "fTTP reachable");
    assert!(reach.starts_with('✗'), "{text}");
    // The connection was made (the port is open) and failed in the TLS handshake: rustls
    // reads the plain-HTTP answer as a corrupt TLS record.
    assert!(reach.contains("could not connect"), "{text}");
    assert!(!reach.contains("Connection refused"), "{text}");
    assert!(reach.contains("corrupt message"), "{text}");
    // The TLS handshake failed, so no request reached the simulator.
    assert_eq!(env.sim.stats().requests_by_op.values().sum::<u64>(), 0);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_exits_78_and_names_the_key() {
    let env = setup(sim_config(6), &[("batch_size = 50", "batch_size = 5000")]).await;
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let config = line(&text, "configuration");
    assert!(config.starts_with('✗'), "{text}");
    assert!(config.contains("[submit] batch_size"), "{text}");
    assert!(text.contains("verdict: NOT ready"), "{text}");
    // Nothing after the configuration was tried.
    assert_eq!(env.sim.stats().requests_by_op.values().sum::<u64>(), 0);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_file_exits_78() {
    let env = setup(sim_config(7), &[]).await;
    std::fs::remove_file(env.dir.path().join("secrets/idat.key")).unwrap();
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let secrets = line(&text, "secrets");
    assert!(
        secrets.starts_with('✗') && secrets.contains("[store] idat_key_file"),
        "{text}"
    );
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tasks_listed_only_once_the_check_does_not_consume_them() {
    let env = setup(
        sim_config(8),
        &[("[ttp]\n", "[ttp]\ntask_relisting = \"once\"\n")],
    )
    .await;
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        line(&text, "authentication").contains("task_relisting = \"once\""),
        "{text}"
    );
    let stats = env.sim.stats();
    assert_eq!(
        stats
            .requests_by_op
            .get("$requestTasks")
            .copied()
            .unwrap_or(0),
        0,
        "{stats:?}"
    );
    env.sim.shutdown().await;
}

/// The shipped example with the site's values from the environment, its secrets in `dir`.
async fn check_example(
    dir: &Path,
    example: &Path,
    site: &[(&str, String)],
    extra: &[&str],
) -> Output {
    let key = dir.join("idat-key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let api_key = dir.join("api-key");
    std::fs::write(&api_key, format!("{API_KEY}\n")).unwrap();
    for file in [&key, &api_key] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    hermetic::command_async(BIN)
        .args(["check", "--config", example.to_str().unwrap()])
        .args(extra)
        .env("TTP_AGENT__TTP__API_KEY_FILE", &api_key)
        .env("TTP_AGENT__STORE__IDAT_KEY_FILE", &key)
        .env("TTP_AGENT__STORE__PATH", dir.join("store"))
        .envs(site.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .unwrap()
}

fn shipped_example() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.toml")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_example_is_ready_for_the_daemon_once_the_site_values_are_set() {
    let sim = ttp_sim::start(sim_config(9)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let site = [
        ("TTP_AGENT__TTP__BASE_URL", sim.base_url()),
        ("TTP_AGENT__TTP__STUDY", STUDY.to_owned()),
        ("TTP_AGENT__TTP__TARGET", TARGET.to_owned()),
    ];
    let out = check_example(dir.path(), &shipped_example(), &site, &["--for", "run"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(line(&text, "encoding").starts_with('–'), "{text}");
    assert!(line(&text, "admin listener").starts_with('✓'), "{text}");
    assert!(line(&text, "authentication").starts_with('✓'), "{text}");

    // For every command: `submit` needs the [encoding] section, which the example leaves
    // commented. The line says what to do.
    let out = check_example(dir.path(), &shipped_example(), &site, &[]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let encoding = line(&text, "encoding");
    assert!(encoding.starts_with('✗'), "{text}");
    assert!(
        encoding.contains("Uncomment the [encoding] section"),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_examples_placeholder_values_are_not_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_example(dir.path(), &shipped_example(), &[], &["--for", "run"]).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    for key in ["base_url", "study", "target"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("✗ configuration") && l.contains(&format!("[ttp] {key}`"))),
            "{key}: {text}"
        );
    }
    assert!(text.contains("TTP_AGENT__TTP__BASE_URL"), "{text}");
}

/// The example's [encoding] block, uncommented, is a complete profile: only the seeds file
/// (from the fTTP operator) has to be put in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_examples_encoding_block_uncommented_loads() {
    let sim = ttp_sim::start(sim_config(10)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(shipped_example()).unwrap();
    let mut in_encoding = false;
    let mut out = String::new();
    for l in text.lines() {
        if l.starts_with('[') && l != "[encoding]" {
            in_encoding = false;
        }
        if l == "[encoding]" {
            in_encoding = true;
        }
        let key_or_table = l.strip_prefix("# ").filter(|rest| {
            rest.starts_with('[')
                || rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' '))
        });
        match key_or_table {
            Some(rest) if in_encoding => out.push_str(rest),
            _ => out.push_str(l),
        }
        out.push('\n');
    }
    let seeds = dir.path().join("seeds.json");
    std::fs::write(
        &seeds,
        r#"{"balanced_seed": 11, "field_seeds": {"firstName": 1, "lastName": 2, "birthDate": 3, "gender": 4}}"#,
    )
    .unwrap();
    let out = out.replace(
        "/etc/ttp-agent/secrets/encoding-seeds.json",
        seeds.to_str().unwrap(),
    );
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, out).unwrap();
    let site = [
        ("TTP_AGENT__TTP__BASE_URL", sim.base_url()),
        ("TTP_AGENT__TTP__STUDY", STUDY.to_owned()),
        ("TTP_AGENT__TTP__TARGET", TARGET.to_owned()),
    ];
    let out = check_example(dir.path(), &config, &site, &["--for", "submit"]).await;
    let text = stdout(&out);
    assert!(line(&text, "encoding").starts_with('✓'), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idat_key_of_the_wrong_length_fails_even_while_the_daemon_holds_the_store() {
    let env = setup(sim_config(11), &[]).await;
    let loaded = load(&env.config_path);
    // The daemon holds the store (opened with the good key); then someone breaks the file.
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
    std::fs::write(env.dir.path().join("secrets/idat.key"), "abc").unwrap();
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let secrets = line(&text, "secrets");
    assert!(secrets.starts_with('✗'), "{text}");
    assert!(secrets.contains("idat_key_file"), "{text}");
    assert!(
        !text.contains("abc"),
        "the key's content is never shown: {text}"
    );
    drop(store);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_the_agents_user_cannot_create_fails_the_store_check() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = setup(
        sim_config(12),
        &[("path = \"store\"", "path = \"locked/store\"")],
    )
    .await;
    let locked = env.dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    // Root may write anywhere; what counts is the directory's owner, the service's user.
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(&locked, Some(65534), Some(65534)).unwrap();
    }
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let store = line(&text, "store");
    assert!(
        store.starts_with('✗') && store.contains("cannot be created"),
        "{text}"
    );
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_other_hosts_can_reach_without_a_token_fails() {
    let env = setup(
        sim_config(13),
        &[("listen = \"127.0.0.1:9464\"", "listen = \"0.0.0.0:9464\"")],
    )
    .await;
    let out = check(&env.config_path).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(78), "{text}");
    let admin = line(&text, "admin listener");
    assert!(
        admin.starts_with('✗') && admin.contains("token_file"),
        "{text}"
    );
    env.sim.shutdown().await;
}

/// `check --store` reads the whole store: not while a daemon holds it (skipped, saying what to
/// do), a healthy one passes, derived data that disagrees with the records fails with status 1
/// and names what is wrong (never a patient's data). Without the flag there is no such step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_check_reads_the_whole_store_and_names_what_disagrees() {
    let env = setup(sim_config(14), &[]).await;
    let loaded = load(&env.config_path);
    let store = ttp_agent::cli::context::open_store(&loaded.config, &loaded.secrets).unwrap();
    store
        .insert_records(&[
            crate::support::store::record("case-1", 1),
            crate::support::store::record("case-2", 2),
        ])
        .unwrap();
    store.flush().unwrap();
    let args = ["--for", "store", "--store"];

    let out = check_with(&env.config_path, &args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let held = line(&text, "store integrity");
    assert!(held.starts_with('–') && held.contains("stop it"), "{text}");

    drop(store);
    let out = check_with(&env.config_path, &args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let healthy = line(&text, "store integrity");
    assert!(
        healthy.starts_with('✓') && healthy.contains("2 record(s)"),
        "{text}"
    );
    let out = check_with(&env.config_path, &["--for", "store"]).await;
    assert!(!stdout(&out).contains("store integrity"), "only when asked");

    // A record removed behind the store's back: its index entry and the counters remain.
    {
        let db = crate::support::store::raw_db(&env.dir.path().join("store"));
        let records = db.open_tree("records").unwrap();
        assert!(records.remove("case-2").unwrap().is_some());
        db.flush().unwrap();
    }
    let out = check_with(&env.config_path, &args).await;
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let damaged = line(&text, "store integrity");
    assert!(
        damaged.starts_with('✗')
            && damaged.contains("filter index has 1 stale entries")
            && damaged.contains("record counters"),
        "{text}"
    );
    assert!(
        text.contains("verdict: NOT ready — failed: store integrity"),
        "{text}"
    );
    assert!(!text.contains("Synthetica"), "{text}");
    env.sim.shutdown().await;
}
