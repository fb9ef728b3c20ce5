//! Authentication as gateways have it (issue 11, What to build 5), end to end: configuration →
//! agent → simulator on loopback. The API key in the header, the body or both; Basic auth
//! with it; OAuth2 client credentials (token cached, refreshed after expiry and after a 401,
//! a refused client secret is a configuration error in `check`). mTLS combined with the
//! others is in `client_tls.rs`, which has a TLS server.

use std::path::Path;
use std::time::Duration;

use crate::support::agent::*;
use crate::support::hermetic;
use ttp_sim::{OAuth2Client, SimAuth};

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");
const KEY_LINE: &str = "api_key_file = \"secrets/api-key\"";

fn write_secret(dir: &Path, name: &str, value: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("secrets").join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn append(config: &Path, text: &str) {
    let mut all = std::fs::read_to_string(config).unwrap();
    all.push_str(text);
    std::fs::write(config, all).unwrap();
}

fn sim_with(auth: SimAuth) -> ttp_sim::SimConfig {
    ttp_sim::SimConfig {
        auth,
        ..sim_config(31)
    }
}

/// One poll with the configured credentials: `Ok` when the simulator accepted them.
async fn poll_once(config: &Path) -> Result<(), String> {
    let loaded = load(config);
    let agent = agent(&loaded);
    agent
        .poll_cycle()
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_goes_to_the_header_the_body_or_both() {
    let header = SimAuth::api_key_header(API_KEY);
    let body = SimAuth::BodyParam(API_KEY.into());
    let cases = [
        // (what the gateway requires, api_key_in, accepted)
        (header.clone(), None, true),
        (header.clone(), Some(r#"["header"]"#), true),
        (header.clone(), Some(r#"["body"]"#), false),
        (body.clone(), Some(r#"["body"]"#), true),
        (body.clone(), None, false),
        (
            SimAuth::AllOf(vec![header.clone(), body.clone()]),
            Some(r#"["header", "body"]"#),
            true,
        ),
        (
            SimAuth::AllOf(vec![header, body]),
            Some(r#"["body"]"#),
            false,
        ),
    ];
    for (auth, api_key_in, accepted) in cases {
        let edit = api_key_in.map(|places| format!("{KEY_LINE}\napi_key_in = {places}"));
        let edits: Vec<(&str, &str)> = edit.iter().map(|e| (KEY_LINE, e.as_str())).collect();
        let env = setup(sim_with(auth.clone()), &edits).await;
        let result = poll_once(&env.config_path).await;
        assert_eq!(
            result.is_ok(),
            accepted,
            "{auth:?} with {api_key_in:?}: {result:?}"
        );
        let stats = env.sim.stats();
        assert_eq!(stats.auth_failures > 0, !accepted, "{auth:?}: {stats:?}");
        env.sim.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_sets_the_places_too() {
    let env = setup(sim_with(SimAuth::BodyParam(API_KEY.into())), &[]).await;
    let config = ttp_agent::config::AgentConfig::from_file_and_env(
        Some(&env.config_path),
        [(
            "TTP_AGENT__TTP__API_KEY_IN".to_owned(),
            "header,body".to_owned(),
        )],
    )
    .unwrap();
    assert!(config.ttp.api_key_in.header && config.ttp.api_key_in.body);
    let secrets = config.load_secrets().unwrap();
    let loaded = ttp_agent::cli::context::Loaded { config, secrets };
    agent(&loaded)
        .poll_cycle()
        .await
        .expect("body key accepted");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_combines_with_the_key_in_the_body_or_the_header() {
    let basic = SimAuth::Basic {
        user: "site-agent".into(),
        password: "basic-pw-4711".into(),
    };
    for (key_auth, places) in [
        (SimAuth::BodyParam(API_KEY.into()), r#"["body"]"#),
        (SimAuth::api_key_header(API_KEY), r#"["header"]"#),
    ] {
        let auth = SimAuth::AllOf(vec![key_auth, basic.clone()]);
        let edit = format!(
            "{KEY_LINE}\napi_key_in = {places}\nbasic_user = \"site-agent\"\nbasic_password_file = \"secrets/basic-password\""
        );
        let env = setup(sim_with(auth), &[(KEY_LINE, edit.as_str())]).await;
        write_secret(env.dir.path(), "basic-password", "basic-pw-4711");
        poll_once(&env.config_path)
            .await
            .expect("key and Basic accepted");

        // Without Basic the same gateway refuses.
        let text = std::fs::read_to_string(&env.config_path).unwrap();
        std::fs::write(
            &env.config_path,
            text.replace("basic_user", "# basic_user")
                .replace("basic_password_file", "# basic_password_file"),
        )
        .unwrap();
        assert!(poll_once(&env.config_path).await.is_err());
        assert!(env.sim.stats().auth_failures > 0);
        env.sim.shutdown().await;
    }
}

fn oauth2_client(ttl: Duration) -> OAuth2Client {
    OAuth2Client {
        client_id: "site-agent".into(),
        client_secret: "oauth-secret-4711".into(),
        token_ttl: ttl,
        scope: Some("dispatcher".into()),
    }
}

/// A simulator that wants the API key in the header and a bearer token, and the agent's
/// configuration for it.
async fn oauth2_setup(ttl: Duration, secret: &str) -> Env {
    let auth = SimAuth::AllOf(vec![
        SimAuth::api_key_header(API_KEY),
        SimAuth::Bearer(oauth2_client(ttl)),
    ]);
    let env = setup(sim_with(auth), &[]).await;
    write_secret(env.dir.path(), "oauth2-secret", secret);
    append(
        &env.config_path,
        &format!(
            "\n[ttp.oauth2]\ntoken_url = \"{}\"\nclient_id = \"site-agent\"\nclient_secret_file = \"secrets/oauth2-secret\"\nscope = \"dispatcher\"\n",
            env.sim.token_url()
        ),
    );
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_token_is_cached_and_fetched_again_once_after_a_401() {
    let env = oauth2_setup(Duration::from_secs(3600), "oauth-secret-4711").await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    for _ in 0..3 {
        agent.poll_cycle().await.expect("bearer accepted");
    }
    let stats = env.sim.stats();
    assert_eq!(stats.oauth_token_requests, 1, "cached: {stats:?}");
    assert_eq!(stats.auth_failures, 0);

    // The authorisation server forgot its tokens: the next request meets a 401 once, fetches
    // a new token and goes through.
    env.sim.revoke_tokens();
    agent.poll_cycle().await.expect("refreshed after the 401");
    let stats = env.sim.stats();
    assert_eq!(stats.oauth_token_requests, 2, "{stats:?}");
    assert_eq!(stats.auth_failures, 1, "{stats:?}");
    agent.poll_cycle().await.expect("the new token is cached");
    assert_eq!(env.sim.stats().oauth_token_requests, 2);
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_token_is_replaced_before_it_expires() {
    let env = oauth2_setup(Duration::from_secs(1), "oauth-secret-4711").await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    agent.poll_cycle().await.expect("bearer accepted");
    // Past the token's lifetime (not a timed assertion: only waiting long enough).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    agent.poll_cycle().await.expect("a new token");
    let stats = env.sim.stats();
    assert_eq!(stats.oauth_token_requests, 2, "{stats:?}");
    assert_eq!(stats.auth_failures, 0, "replaced before, not after a 401");
    env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_secret_is_a_configuration_error_in_check() {
    let env = oauth2_setup(Duration::from_secs(3600), "not-the-secret").await;
    let out = hermetic::command_async(BIN)
        .args(["check", "--config", env.config_path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("the agent runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("[ttp.oauth2]"), "{text}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains("not-the-secret"), "{text}");
    let stats = env.sim.stats();
    assert!(stats.oauth_token_refusals >= 1, "{stats:?}");
    assert_eq!(stats.requests_by_op.get("$requestTasks"), None, "{stats:?}");

    // And the daemon's cycle stops with an authentication error, naming no secret.
    let loaded = load(&env.config_path);
    let err = agent(&loaded).poll_cycle().await.expect_err("refused");
    let err = format!("{err:#}");
    assert!(!err.contains("not-the-secret"), "{err}");
    env.sim.shutdown().await;
}

#[test]
fn oauth2_keys_come_from_the_file_or_the_environment_and_go_together() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[ttp]\nbase_url = \"https://fttp.example.org/d\"\nstudy = \"s\"\ntarget = \"t\"\n[store]\nidat_key_file = \"k\"\n";
    let path = dir.path().join("agent.toml");
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    std::fs::write(
        &path,
        format!("{base}[ttp.oauth2]\ntoken_url = \"https://kc.example.org/token\"\nclient_id = \"a\"\nclient_secret_file = \"secret\"\n"),
    )
    .unwrap();
    let config = ttp_agent::config::AgentConfig::from_file_and_env(Some(&path), env(&[])).unwrap();
    let oauth2 = config.ttp.oauth2.as_ref().expect("configured");
    assert_eq!(oauth2.client_id, "a");
    assert_eq!(oauth2.client_secret_file, dir.path().join("secret"));
    assert!(
        config
            .redacted_summary()
            .contains("[ttp.oauth2]\ntoken_url = ")
    );

    let config = ttp_agent::config::AgentConfig::from_file_and_env(
        Some(&path),
        env(&[
            ("TTP_AGENT__TTP__OAUTH2__CLIENT_ID", "from-env"),
            ("TTP_AGENT__TTP__OAUTH2__SCOPE", "dispatcher"),
        ]),
    )
    .unwrap();
    let oauth2 = config.ttp.oauth2.as_ref().unwrap();
    assert_eq!(
        (oauth2.client_id.as_str(), oauth2.scope.as_deref()),
        ("from-env", Some("dispatcher"))
    );

    // Half a configuration, or one together with Basic, names the keys.
    std::fs::write(
        &path,
        format!("{base}[ttp.oauth2]\ntoken_url = \"https://kc.example.org/token\"\n"),
    )
    .unwrap();
    let err = ttp_agent::config::AgentConfig::from_file_and_env(Some(&path), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[ttp.oauth2] token_url") && err.contains("client_id"),
        "{err}"
    );
    let err = ttp_agent::config::AgentConfig::from_file_and_env(
        Some(&path),
        env(&[
            ("TTP_AGENT__TTP__OAUTH2__CLIENT_ID", "a"),
            ("TTP_AGENT__TTP__OAUTH2__CLIENT_SECRET_FILE", "/s"),
            ("TTP_AGENT__TTP__BASIC_USER", "u"),
            ("TTP_AGENT__TTP__BASIC_PASSWORD_FILE", "/p"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("Authorization header"), "{err}");
    let err = ttp_agent::config::AgentConfig::from_file_and_env(
        Some(&path),
        env(&[("TTP_AGENT__TTP__OAUTH2__TOKN_URL", "x")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("TTP_AGENT__TTP__OAUTH2__TOKN_URL"), "{err}");
}
