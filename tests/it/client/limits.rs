//! The shared rate limit and concurrency cap, observed at a real server on 127.0.0.1.

use std::time::{Duration, Instant};

use crate::support::client::{Reply, Server, settings};
use ttp_agent::client::{ErrorClass, TtpClient};

/// The largest number of arrivals within any window of `width` that starts at an arrival.
fn busiest_window(arrivals: &[Instant], width: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    (0..sorted.len())
        .map(|i| {
            sorted[i..]
                .iter()
                .take_while(|t| **t < sorted[i] + width)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn the_rate_limit_holds_across_clones() {
    let server = Server::start(vec![Reply::ok_parameters()]).await;
    let mut s = settings(&server.base_url());
    s.rate_limit_per_sec = 10.0;
    let client = TtpClient::new(s).expect("valid");

    let started = Instant::now();
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request_tasks().await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("request");
    }
    let elapsed = started.elapsed();

    let arrivals: Vec<_> = server.requests().iter().map(|r| r.arrived).collect();
    assert_eq!(arrivals.len(), 16);
    // 10 per second: at most 10 + 1 in any one-second window.
    let busiest = busiest_window(&arrivals, Duration::from_secs(1));
    assert!(busiest <= 11, "{busiest} requests within one second");
    // 16 requests 100 ms apart cannot finish sooner than 1.5 s (sleeps never end early).
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn retries_pass_through_the_rate_limit() {
    let server = Server::start(vec![Reply::status(503)]).await;
    let mut s = settings(&server.base_url());
    s.rate_limit_per_sec = 10.0;
    let client = TtpClient::new(s).expect("valid");

    let started = Instant::now();
    let other = client.clone();
    let (a, b) = tokio::join!(client.request_tasks(), other.request_tasks());
    let elapsed = started.elapsed();
    for result in [a, b] {
        assert_eq!(result.expect_err("always 503").class, ErrorClass::Transient);
    }
    let arrivals: Vec<_> = server.requests().iter().map(|r| r.arrived).collect();
    assert_eq!(arrivals.len(), 8, "two calls, four attempts each");
    let busiest = busiest_window(&arrivals, Duration::from_millis(500));
    assert!(busiest <= 6, "{busiest} attempts within 500 ms");
    // Backoff is at most 20 ms per retry here; only the limiter spaces 8 attempts 100 ms apart.
    assert!(elapsed >= Duration::from_millis(700), "{elapsed:?}");
}

#[tokio::test]
async fn no_more_than_max_concurrency_requests_are_in_flight() {
    let server = Server::start(vec![Reply::ok_parameters()]).await;
    let mut s = settings(&server.base_url());
    s.max_concurrency = 3;
    let client = TtpClient::new(s).expect("valid");

    server.close_gate();
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.request_tasks().await })
        })
        .collect();

    // Wait until the server holds three requests...
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.in_flight() < 3 {
        assert!(
            Instant::now() < deadline,
            "requests never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // ...give a fourth every chance to slip through...
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.in_flight(), 3);
    assert_eq!(server.request_count(), 3);

    // ...then let everything finish.
    server.open_gate();
    for call in calls {
        call.await.expect("task").expect("request");
    }
    assert_eq!(server.request_count(), 8);
    assert_eq!(server.max_in_flight(), 3);
}
