//! The admin server against the local network and web pages: slow-loris connections closed
//! and capped, foreign Host headers refused (DNS rebinding), wrong tokens throttled, the token
//! kept out of URLs. Over loopback, against the known scenario (see `support::admin`).

use std::sync::Arc;
use std::time::Duration;

use crate::support::admin::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use ttp_agent::admin::{AdminState, ServeLimits};

fn state(s: &Scenario, limits: ServeLimits) -> Arc<AdminState> {
    state_with(s, |settings| settings.limits = limits)
}

/// Waits (generously: the machine may be loaded) until the server closes `stream`; panics if
/// it never does.
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_and_connections_are_capped() {
    let s = scenario(&[]).await;

    // A request head that never ends is closed after the header-read timeout.
    let server = serve_state(state(
        &s,
        ServeLimits {
            max_connections: 64,
            header_read_timeout: Duration::from_secs(1),
        },
    ))
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1")
        .await
        .unwrap();
    closed_by_server(&mut slow).await;
    // So is a connection that sends nothing at all.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut idle).await;
    drop(server);

    // With every slot held by half-sent requests, a further connection is closed at accept,
    // and served again once a slot is free.
    let server = serve_state(state(
        &s,
        ServeLimits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(600),
        },
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(server.addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    closed_by_server(&mut extra).await;
    drop(held.pop());
    let client = http();
    let mut served = false;
    for _ in 0..600 {
        if let Ok(resp) = client.get(server.url("/healthz")).send().await {
            served = resp.status().as_u16() == 200;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "a freed slot serves again");
    s.env.sim.shutdown().await;
}

async fn get_with_host(server: &Server, path: &str, host: &str) -> u16 {
    http()
        .get(server.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_header_is_refused_on_a_loopback_listener() {
    // No token: a loopback listener may go without one, which is what DNS rebinding exploits.
    let s = scenario(&[]).await;
    let server = serve(&s).await;
    let port = server.addr.port();
    for path in ["/api/status", "/metrics", "/readyz", "/"] {
        assert_eq!(
            get_with_host(&server, path, &format!("attacker.example:{port}")).await,
            421,
            "{path}"
        );
        for ours in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            assert_ne!(
                get_with_host(&server, path, &ours).await,
                421,
                "{path} {ours}"
            );
        }
    }
    // /healthz says only "ok", to any name (container probes).
    assert_eq!(
        get_with_host(&server, "/healthz", "attacker.example").await,
        200
    );
    s.env.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_are_throttled_and_the_token_is_never_taken_from_a_url() {
    let s = scenario(&token_edits()).await;
    let server = serve(&s).await;
    let client = http();
    let status = |path: &str, token: &str| {
        let req = client.get(server.url(path)).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/api/status", TOKEN).await, 200);
    assert_eq!(
        client
            .get(server.url(&format!("/?token={TOKEN}")))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        401,
        "a token in the URL is not taken"
    );
    // The login form goes by POST, and its script never writes the token into the address.
    let login = client.get(server.url("/")).send().await.unwrap();
    let html = login.text().await.unwrap();
    assert!(html.contains("method=\"post\""), "{html}");
    assert!(!html.contains("searchParams.set"), "{html}");
    for _ in 0..ttp_agent::admin::auth::MAX_FAILURES {
        assert_eq!(status("/api/status", "guess").await, 401);
    }
    let throttled = client
        .get(server.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        throttled.status().as_u16(),
        429,
        "even the right token waits"
    );
    assert!(throttled.headers().contains_key("retry-after"));
    s.env.sim.shutdown().await;
}
