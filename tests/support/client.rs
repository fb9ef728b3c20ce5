//! Test servers for the client tests: a scripted axum server and raw TCP misbehavers, all on
//! 127.0.0.1 and started inside the test that uses them.
#![allow(dead_code)] // each test crate uses a different part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use ttp_agent::client::{ClientSettings, RetryPolicy};

pub const EMPTY_PARAMETERS: &str = r#"{"resourceType":"Parameters"}"#;
pub const CAPABILITY_STATEMENT: &str =
    r#"{"resourceType":"CapabilityStatement","status":"active","kind":"instance"}"#;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// Sleep this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    pub fn fhir(status: u16, body: impl Into<String>) -> Reply {
        Reply::status(status)
            .header("content-type", "application/fhir+json")
            .body(body.into().into_bytes())
    }

    pub fn ok_parameters() -> Reply {
        Reply::fhir(200, EMPTY_PARAMETERS)
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: Vec<u8>) -> Reply {
        self.body = body;
        self
    }

    pub fn delayed(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub arrived: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

struct Shared {
    replies: Mutex<Vec<Reply>>,
    served: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    gate: watch::Receiver<bool>,
}

/// A scripted HTTP server: answers the n-th request with the n-th reply (the last one
/// repeats) and records every request.
pub struct Server {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    gate: watch::Sender<bool>,
}

impl Server {
    pub async fn start(replies: Vec<Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Server::serve(listener, replies)
    }

    /// Serves on any axum listener (the TLS tests bring their own).
    pub fn serve<L>(listener: L, replies: Vec<Reply>) -> Server
    where
        L: axum::serve::Listener<Addr = SocketAddr>,
    {
        assert!(!replies.is_empty(), "script at least one reply");
        let addr = listener.local_addr().expect("local addr");
        let (gate, gate_rx) = watch::channel(true);
        let shared = Arc::new(Shared {
            replies: Mutex::new(replies),
            served: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            gate: gate_rx,
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Server { addr, shared, gate }
    }

    /// The dispatcher base URL of this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/ttp-fhir/fhir/dispatcher", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().expect("lock").clone()
    }

    pub fn request_count(&self) -> usize {
        self.shared.requests.lock().expect("lock").len()
    }

    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Requests that arrive while the gate is closed wait inside the handler.
    pub fn close_gate(&self) {
        self.gate.send_replace(false);
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let arrived = Instant::now();
    let now_in_flight = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared
        .max_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    shared.requests.lock().expect("lock").push(Recorded {
        method,
        path: uri.path().to_string(),
        headers,
        body: body.to_vec(),
        arrived,
    });
    let mut gate = shared.gate.clone();
    let _ = gate.wait_for(|open| *open).await;

    let n = shared.served.fetch_add(1, Ordering::SeqCst);
    let reply = {
        let replies = shared.replies.lock().expect("lock");
        replies[n.min(replies.len() - 1)].clone()
    };
    tokio::time::sleep(reply.delay).await;
    shared.in_flight.fetch_sub(1, Ordering::SeqCst);

    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).expect("valid status");
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .append(name, value.parse().expect("valid header value"));
    }
    response
}

/// Client settings for tests: fast retries, a rate limit that never gets in the way.
pub fn settings(base_url: &str) -> ClientSettings {
    let mut settings = ClientSettings::new(base_url.parse().expect("a URL"), "mii", "dic_test");
    settings.retry = RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(3600),
    };
    settings.rate_limit_per_sec = 10_000.0;
    settings.max_concurrency = 16;
    settings.timeout = Duration::from_secs(10);
    settings
}

/// A raw TCP server that runs `behaviour` on every connection and counts connections.
pub struct RawServer {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl RawServer {
    pub async fn start<F, Fut>(behaviour: F) -> RawServer
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(behaviour(stream));
            }
        });
        RawServer { addr, connections }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/d", self.addr)
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) from `stream`.
pub async fn read_request(stream: &mut TcpStream) -> Vec<u8> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return data;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = find(&data, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return data;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes `bytes` and closes the connection.
pub async fn write_and_close(mut stream: TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
}
