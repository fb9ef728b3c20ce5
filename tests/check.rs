//! `ttp-agent check`: the checklist and its exit status against a real simulator on loopback,
//! a closed port, a TLS mismatch, wrong credentials and invalid configurations.

mod agent_support;

use std::path::Path;
use std::process::Output;

use agent_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

async fn check(config: &Path) -> Output {
    tokio::process::Command::new(BIN)
        .args(["check", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_example_needs_only_site_values_and_skips_the_empty_encoding_section() {
    let sim = ttp_sim::start(ttp_sim::SimConfig {
        study: "example-study".into(),
        target: "example-site".into(),
        ..sim_config(9)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("idat-key");
    std::fs::write(
        &key,
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
    )
    .unwrap();
    let api_key = dir.path().join("api-key");
    std::fs::write(&api_key, format!("{API_KEY}\n")).unwrap();
    for file in [&key, &api_key] {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/agent.toml");
    let out = tokio::process::Command::new(BIN)
        .args(["check", "--config", example.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env("TTP_AGENT__TTP__BASE_URL", sim.base_url())
        .env("TTP_AGENT__TTP__API_KEY_FILE", &api_key)
        .env("TTP_AGENT__STORE__IDAT_KEY_FILE", &key)
        .env("TTP_AGENT__STORE__PATH", dir.path().join("store"))
        .output()
        .await
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(line(&text, "encoding").starts_with('–'), "{text}");
    assert!(line(&text, "authentication").starts_with('✓'), "{text}");
    sim.shutdown().await;
}
