//! `ttp-agent healthcheck` (the container HEALTHCHECK) against small HTTP servers on loopback
//! that answer like the admin endpoint would, and against a closed port.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::process::Output;
use std::thread::JoinHandle;

use crate::support::hermetic;

const BIN: &str = env!("CARGO_BIN_EXE_ttp-agent");

/// Serves one connection with `answer`; returns the request it received.
fn serve_once(answer: &'static str) -> (SocketAddr, JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        let mut buf = [0u8; 512];
        while !request.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        stream.write_all(answer.as_bytes()).unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });
    (addr, handle)
}

fn healthcheck(args: &[&str], envs: &[(&str, String)]) -> Output {
    hermetic::command(BIN)
        .arg("healthcheck")
        .args(args)
        .env_clear()
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap()
}

/// Asserts exit 0 and that stdout starts with `verdict`; returns stdout.
fn passed(out: &Output, verdict: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(verdict), "{stdout}");
    stdout
}

/// Asserts exit 0 and "healthy …"; returns stdout.
fn healthy(out: &Output) -> String {
    passed(out, "healthy")
}

#[test]
fn a_200_from_healthz_is_healthy() {
    let (addr, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let out = healthcheck(&["--address", &addr.to_string()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.starts_with("healthy"), "{stdout}");
    let request = server.join().unwrap();
    assert!(
        request.starts_with("GET /healthz HTTP/1.1\r\n"),
        "{request}"
    );
}

#[test]
fn any_other_status_is_unhealthy() {
    let (addr, server) =
        serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    let out = healthcheck(&["--address", &addr.to_string()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("answered 503"), "{stdout}");
    server.join().unwrap();
}

#[test]
fn something_that_is_not_http_is_unhealthy() {
    let (addr, server) = serve_once("SSH-2.0-OpenSSH_9.2\r\n\r\n");
    let out = healthcheck(&["--address", &addr.to_string()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("not an HTTP response"), "{stdout}");
    server.join().unwrap();
}

#[test]
fn a_closed_port_is_unhealthy() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = healthcheck(&["--address", &addr.to_string(), "--timeout", "2s"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("unhealthy"), "{stdout}");
}

#[test]
fn the_address_comes_from_the_configuration_and_a_wildcard_is_asked_on_loopback() {
    let (addr, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let dir = tempfile::tempdir().unwrap();
    let envs = [
        (
            "TTP_AGENT__TTP__BASE_URL",
            "https://fttp.example.org/ttp-fhir/fhir/dispatcher".to_owned(),
        ),
        ("TTP_AGENT__TTP__STUDY", "s".to_owned()),
        ("TTP_AGENT__TTP__TARGET", "t".to_owned()),
        (
            "TTP_AGENT__STORE__IDAT_KEY_FILE",
            dir.path().join("k").display().to_string(),
        ),
        (
            "TTP_AGENT__ADMIN__LISTEN",
            format!("0.0.0.0:{}", addr.port()),
        ),
    ];
    // An empty file stands for "no file" (a container): the host's /etc is never read.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let stdout = healthy(&healthcheck(&["--config", empty.to_str().unwrap()], &envs));
    assert!(
        stdout.contains(&format!("127.0.0.1:{}", addr.port())),
        "{stdout}"
    );
    server.join().unwrap();
}

/// A health check needs the admin address and nothing else: not the fTTP settings, not the
/// secrets. On a host with the Debian package, the packaged file names its secrets under
/// `${CREDENTIALS_DIRECTORY}`, which only the service has; a probe from a shell must still work.
#[test]
fn only_the_admin_address_is_read_from_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    for body in [
        // The packaged shape: secrets under the credentials directory, which is not set here.
        "[ttp]\nbase_url = \"https://fttp.example.org/ttp-fhir/fhir/dispatcher\"\nstudy = \"s\"\n\
         target = \"t\"\napi_key_file = \"${CREDENTIALS_DIRECTORY}/api-key\"\n\
         [store]\nidat_key_file = \"${CREDENTIALS_DIRECTORY}/idat-key\"\n[admin]\nlisten = \"LISTEN\"\n",
        // The [admin] section alone: the required [ttp] keys are missing.
        "[admin]\nlisten = \"LISTEN\"\n",
    ] {
        let (addr, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, body.replace("LISTEN", &addr.to_string())).unwrap();
        healthy(&healthcheck(&["--config", config.to_str().unwrap()], &[]));
        server.join().unwrap();
    }
}

/// `--ready` is the readiness probe of deploy/kubernetes/ttp-agent.yaml: it runs inside the
/// container and asks /readyz with the token from `[admin] token_file`.
#[test]
fn ready_asks_readyz_with_the_admin_token_of_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let write_secret = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path.display().to_string()
    };
    let token_file = write_secret("admin-token", "probe-token-0123456789abcdef0123456789\n");
    let idat_key = write_secret(
        "idat-key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    );
    // An empty file stands for "no file" (a container): the host's /etc is never read.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let ready = |port: u16| {
        healthcheck(
            &["--ready", "--config", empty.to_str().unwrap()],
            &[
                (
                    "TTP_AGENT__TTP__BASE_URL",
                    "https://fttp.example.org/ttp-fhir/fhir/dispatcher".to_owned(),
                ),
                ("TTP_AGENT__TTP__STUDY", "s".to_owned()),
                ("TTP_AGENT__TTP__TARGET", "t".to_owned()),
                ("TTP_AGENT__STORE__IDAT_KEY_FILE", idat_key.clone()),
                ("TTP_AGENT__ADMIN__TOKEN_FILE", token_file.clone()),
                ("TTP_AGENT__ADMIN__LISTEN", format!("0.0.0.0:{port}")),
            ],
        )
    };

    let (addr, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let stdout = passed(&ready(addr.port()), "ready: GET");
    assert!(
        !stdout.contains("probe-token"),
        "the token is never printed: {stdout}"
    );
    let request = server.join().unwrap();
    assert!(request.starts_with("GET /readyz HTTP/1.1\r\n"), "{request}");
    assert!(
        request.contains("\r\nAuthorization: Bearer probe-token-0123456789abcdef0123456789\r\n"),
        "{request}"
    );

    let (addr, server) =
        serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    let out = ready(addr.port());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with("not ready:"), "{stdout}");
    server.join().unwrap();
}
