//! Every fault kind as a client sees it, before and after processing, and the determinism of
//! the fault sequence.

use std::time::Duration;

use crate::support::*;
use chrono::TimeDelta;
use serde_json::Value;
use ttp_sim::{FaultConfig, FaultKind, FaultTiming, IdatSubject, SimConfig};

fn cfg(faults: FaultConfig) -> SimConfig {
    SimConfig {
        study: STUDY.into(),
        target: TARGET.into(),
        clearing: 0.0,
        faults,
        ..SimConfig::default()
    }
}

/// Registers one filter and returns the raw result, fault or not.
async fn register_raw(client: &Client, f: &str) -> reqwest::Result<reqwest::Response> {
    client
        .request(
            "$requestPsnFromBfWorkflow",
            serde_json::to_vec(&registration(&[f])).expect("json"),
        )
        .send()
        .await
}

/// Waits (bounded) until `condition` holds: for effects of a request whose client gave up
/// before the server finished.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    condition()
}

#[tokio::test]
async fn status_faults_before_processing_change_nothing() {
    let sim = ttp_sim::start(cfg(FaultConfig::always(
        FaultKind::Status(503),
        FaultTiming::Before,
    )))
    .await
    .expect("start");
    let client = Client::new(&sim);
    let mut content_types = Vec::new();
    for n in 0..16 {
        let response = register_raw(&client, &filter(n)).await.expect("a response");
        assert_eq!(response.status().as_u16(), 503);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.expect("body");
        if content_type == FHIR_JSON {
            let outcome: Value = serde_json::from_str(&body).expect("OperationOutcome");
            assert_eq!(outcome["resourceType"], "OperationOutcome");
        } else {
            assert!(content_type.starts_with("text/html"), "{content_type}");
            assert!(body.contains("<html>"));
        }
        content_types.push(content_type);
    }
    assert!(
        content_types.iter().any(|c| c == FHIR_JSON),
        "some OperationOutcome"
    );
    assert!(
        content_types.iter().any(|c| c.starts_with("text/html")),
        "some HTML page"
    );
    let stats = sim.stats();
    assert_eq!(stats.faults_injected, 16);
    assert_eq!(stats.faults_after_processing, 0);
    assert_eq!(stats.registrations, 0);
    assert_eq!(stats.status_counts.get(&503), Some(&16));

    sim.set_faults(FaultConfig::none()).expect("valid");
    let reply = client.register(&[&filter(0)]).await;
    assert_eq!(named(&reply.body, "pseudonym-bf").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn status_429_carries_retry_after() {
    let sim = ttp_sim::start(cfg(FaultConfig::always(
        FaultKind::Status429 {
            retry_after_secs: 7,
        },
        // 429 says "not done", so it strikes before processing even when asked for After.
        FaultTiming::After,
    )))
    .await
    .expect("start");
    let client = Client::new(&sim);
    let f = filter(1);
    let reply = read(register_raw(&client, &f).await.expect("response")).await;
    assert_eq!(reply.status, 429);
    assert_eq!(
        reply.headers.get("retry-after").map(|v| v.as_bytes()),
        Some(&b"7"[..])
    );
    assert_eq!(reply.body["resourceType"], "OperationOutcome");
    assert_eq!(sim.pseudonym_of(&f), None);
    assert_eq!(sim.stats().faults_after_processing, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn status_faults_after_processing_keep_the_effect() {
    let sim = ttp_sim::start(cfg(FaultConfig::always(
        FaultKind::Status(502),
        FaultTiming::After,
    )))
    .await
    .expect("start");
    let client = Client::new(&sim);
    let f = filter(1);
    let response = register_raw(&client, &f).await.expect("response");
    assert_eq!(response.status().as_u16(), 502);
    let pseudonym = sim.pseudonym_of(&f).expect("registered despite the 502");
    sim.set_faults(FaultConfig::none()).expect("valid");
    let reply = client.register(&[&f]).await;
    let entry = &named(&reply.body, "pseudonym-bf")[0];
    assert_eq!(
        part(entry, "pseudonym")["valueIdentifier"]["value"],
        pseudonym.as_str()
    );
    let stats = sim.stats();
    assert_eq!(
        (stats.faults_injected, stats.faults_after_processing),
        (1, 1)
    );
    assert_eq!((stats.registrations, stats.duplicate_registrations), (1, 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_closes_the_connection_without_a_response() {
    let sim = ttp_sim::start(cfg(FaultConfig::always(
        FaultKind::Drop,
        FaultTiming::Before,
    )))
    .await
    .expect("start");
    let client = Client::new(&sim);
    let f = filter(1);
    let err = register_raw(&client, &f).await.expect_err("no response");
    assert!(!err.is_timeout() && !err.is_status(), "{err:?}");
    assert_eq!(sim.pseudonym_of(&f), None);
    let stats = sim.stats();
    assert_eq!(stats.faults_injected, 1);
    assert!(stats.status_counts.is_empty(), "{:?}", stats.status_counts);

    // After processing: the client sees the same, the fTTP has the filter.
    sim.set_faults(FaultConfig::always(FaultKind::Drop, FaultTiming::After))
        .expect("valid");
    register_raw(&client, &f).await.expect_err("no response");
    assert!(sim.pseudonym_of(&f).is_some());
    assert_eq!(sim.stats().faults_after_processing, 1);
    sim.shutdown().await;
}

/// Reads a response body chunk by chunk until it ends or fails; returns the bytes received
/// and whether it failed.
async fn drain(mut response: reqwest::Response) -> (usize, bool) {
    let mut received = 0;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => return (received, false),
            Err(_) => return (received, true),
        }
    }
}

#[tokio::test]
async fn truncate_delivers_half_the_announced_body_then_closes() {
    let sim = ttp_sim::start(cfg(FaultConfig::always(
        FaultKind::Truncate,
        FaultTiming::After,
    )))
    .await
    .expect("start");
    let client = Client::new(&sim);
    // A large listing, so the half spans many socket writes.
    let expires = sim.now() + TimeDelta::hours(1);
    for n in 0..2_000 {
        sim.add_send_idat(
            IdatSubject::BloomFilter(filter(n)),
            codes(&["given", "family", "birthdate"]),
            expires,
        );
    }
    let response = client
        .request(
            "$requestTasks",
            serde_json::to_vec(&tasks_request()).expect("json"),
        )
        .send()
        .await
        .expect("status line and headers arrive");
    assert_eq!(response.status().as_u16(), 200);
    let announced = response.content_length().expect("Content-Length") as usize;
    assert!(announced > 200_000, "{announced}");
    let (received, failed) = drain(response).await;
    assert!(failed, "the body must end in an error");
    assert_eq!(received, announced / 2);

    // Before processing, the truncated response is an error status.
    sim.set_faults(FaultConfig::always(
        FaultKind::Truncate,
        FaultTiming::Before,
    ))
    .expect("valid");
    let f = filter(1);
    let response = register_raw(&client, &f).await.expect("headers arrive");
    assert_eq!(response.status().as_u16(), 503);
    let announced = response.content_length().expect("Content-Length") as usize;
    let (received, failed) = drain(response).await;
    assert!(
        failed && received == announced / 2,
        "{received} of {announced}"
    );
    assert_eq!(sim.pseudonym_of(&f), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_is_a_200_that_is_not_json() {
    let sim = ttp_sim::start(cfg(FaultConfig::always(
        FaultKind::Malformed,
        FaultTiming::Before,
    )))
    .await
    .expect("start");
    let client = Client::new(&sim);
    let response = register_raw(&client, &filter(1)).await.expect("response");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(FHIR_JSON.as_bytes())
    );
    let body = response.bytes().await.expect("complete body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert_eq!(sim.stats().registrations, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn delay_outlasts_the_client_timeout() {
    let delay = FaultKind::Delay(Duration::from_secs(60));
    let sim = ttp_sim::start(cfg(FaultConfig::always(delay.clone(), FaultTiming::Before)))
        .await
        .expect("start");
    let client = Client::with_timeout(&sim, Duration::from_millis(300));
    let f = filter(1);
    let err = register_raw(&client, &f).await.expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(sim.pseudonym_of(&f), None);

    sim.set_faults(FaultConfig::always(delay, FaultTiming::After))
        .expect("valid");
    let err = register_raw(&client, &f).await.expect_err("times out");
    assert!(err.is_timeout(), "{err:?}");
    // Processed before the delay began, even though the client never heard back.
    assert!(eventually(|| sim.pseudonym_of(&f).is_some()).await);
    // Shutdown does not wait out the remaining minute.
    sim.shutdown().await;
}

#[tokio::test]
async fn the_fault_sequence_follows_the_seed() {
    let faults = FaultConfig {
        probability: 0.5,
        kinds: vec![
            FaultKind::Status(500),
            FaultKind::Status(503),
            FaultKind::Drop,
            FaultKind::Malformed,
        ],
        seed: 1234,
        when: FaultTiming::Mixed,
    };
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let sim = ttp_sim::start(cfg(faults.clone())).await.expect("start");
        let client = Client::new(&sim);
        let mut seen = Vec::new();
        for n in 0..40 {
            let outcome = match register_raw(&client, &filter(n)).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let json = response
                        .bytes()
                        .await
                        .map(|b| serde_json::from_slice::<Value>(&b).is_ok())
                        .unwrap_or(false);
                    format!("{status}/{json}")
                }
                Err(_) => "dropped".to_owned(),
            };
            seen.push((outcome, sim.pseudonym_of(&filter(n)).is_some()));
        }
        let stats = sim.stats();
        assert!(
            stats.faults_injected > 5 && stats.faults_injected < 35,
            "{stats:?}"
        );
        assert!(stats.faults_after_processing > 0, "{stats:?}");
        outcomes.push(seen);
        sim.shutdown().await;
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let kinds: std::collections::HashSet<&str> =
        outcomes[0].iter().map(|(o, _)| o.as_str()).collect();
    for expected in ["200/true", "500/true", "503/true", "dropped", "200/false"] {
        assert!(kinds.contains(expected), "{expected} never seen: {kinds:?}");
    }
}
