//! The HTTP side: accepting connections, routing, authentication, faults, and turning
//! [`Reply`]s into responses.
//!
//! The server uses hyper directly rather than a framework because two faults need control
//! over the connection that a framework hides: closing it without a response
//! ([`FaultKind::Drop`], done by failing the service call) and cutting a response off halfway
//! ([`FaultKind::Truncate`], see [`crate::body`]).
//!
//! Locks: each request takes the traffic, fault and dispatcher mutexes briefly and one at a
//! time; none is held across an `.await`, so a slow or faulted request never blocks others.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioTimer;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::auth;
use crate::body::{ConnIo, CutSignal, SimBody};
use crate::clock::SimClock;
use crate::config::{FaultKind, SimAuth, SimOperation};
use crate::fault::{Fault, FaultPlan};
use crate::fhir::{self, Parameters};
use crate::state::{Dispatcher, Reply};
use crate::traffic::Traffic;

/// Path of the dispatcher endpoint on a TTP-FHIR gateway.
pub const BASE_PATH: &str = "/ttp-fhir/fhir/dispatcher";
const FHIR_JSON: &str = "application/fhir+json";
/// How long shutdown waits for in-flight requests before cutting their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a request asks for, from its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    RequestPsn,
    RequestTasks,
    Provide,
    Metadata,
    Unknown,
}

impl Op {
    fn route(path: &str) -> Self {
        let Some(rest) = path
            .strip_prefix(BASE_PATH)
            .and_then(|r| r.strip_prefix('/'))
        else {
            return Self::Unknown;
        };
        // Clients may percent-encode the `$` of an operation name.
        let operation = rest
            .strip_prefix('$')
            .or_else(|| rest.strip_prefix("%24"))
            .unwrap_or(rest);
        match (rest == operation, operation) {
            (false, "requestPsnFromBfWorkflow") => Self::RequestPsn,
            (false, "requestTasks") => Self::RequestTasks,
            (false, "providePatientData") => Self::Provide,
            (true, "metadata") => Self::Metadata,
            _ => Self::Unknown,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::RequestPsn => "$requestPsnFromBfWorkflow",
            Self::RequestTasks => "$requestTasks",
            Self::Provide => "$providePatientData",
            Self::Metadata => "metadata",
            Self::Unknown => "unknown",
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Metadata => Method::GET,
            _ => Method::POST,
        }
    }

    fn operation(self) -> Option<SimOperation> {
        match self {
            Self::RequestPsn => Some(SimOperation::RequestPsn),
            Self::RequestTasks => Some(SimOperation::RequestTasks),
            Self::Provide => Some(SimOperation::ProvidePatientData),
            Self::Metadata | Self::Unknown => None,
        }
    }

    fn method_name(self) -> &'static str {
        match self {
            Self::Metadata => "GET",
            _ => "POST",
        }
    }
}

/// A response before it becomes an HTTP response.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Bytes,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Answer {
    fn json(status: u16, body: &Value) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => Self {
                status,
                content_type: FHIR_JSON,
                body: Bytes::from(bytes),
                headers: Vec::new(),
            },
            // A `Value` always serialises; this arm only keeps the server total.
            Err(err) => Self::text(
                500,
                "text/plain",
                format!("cannot serialise response: {err}"),
            ),
        }
    }

    fn text(status: u16, content_type: &'static str, text: String) -> Self {
        Self {
            status,
            content_type,
            body: Bytes::from(text),
            headers: Vec::new(),
        }
    }

    fn outcome(status: u16, issue_type: &str, diagnostics: String) -> Self {
        Self::json(status, &fhir::outcome(issue_type, &[diagnostics]))
    }

    fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self, truncate: Option<Arc<CutSignal>>) -> Response<SimBody> {
        let body = match truncate {
            Some(signal) => SimBody::cut_off(self.body, signal),
            None => SimBody::full(self.body),
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        response
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self::json(reply.status, &reply.body)
    }
}

/// Returned by the service to make hyper close the connection without a response.
#[derive(Debug)]
pub(crate) struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped (fault injection or unreadable request)")
    }
}

impl std::error::Error for DropConnection {}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Recover from poisoning: if a handler ever panicked mid-update, failing every later
    // request (and every stats() call) would bury the original panic under a cascade.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub(crate) auth: SimAuth,
    pub(crate) max_body: usize,
    pub(crate) latency: Option<Duration>,
    pub(crate) clock: SimClock,
    pub(crate) dispatcher: Mutex<Dispatcher>,
    pub(crate) traffic: Mutex<Traffic>,
    pub(crate) faults: Mutex<FaultPlan>,
    /// Per operation: faults for its next requests, in order (see `SimHandle::fault_next`).
    pub(crate) op_faults: Mutex<HashMap<SimOperation, VecDeque<Fault>>>,
    /// OAuth2 tokens issued by the token endpoint (used only with [`SimAuth::Bearer`]).
    pub(crate) tokens: Mutex<crate::oauth::Tokens>,
    in_flight: AtomicU64,
    pub(crate) max_in_flight: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    pub(crate) fn new(
        auth: SimAuth,
        max_body: usize,
        latency: Option<Duration>,
        dispatcher: Dispatcher,
        faults: FaultPlan,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            auth,
            max_body,
            latency,
            clock: SimClock::new(),
            dispatcher: Mutex::new(dispatcher),
            traffic: Mutex::new(Traffic::default()),
            faults: Mutex::new(faults),
            op_faults: Mutex::new(HashMap::new()),
            tokens: Mutex::new(crate::oauth::Tokens::default()),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            shutdown,
        }
    }

    /// Sleeps, but wakes early when the simulator shuts down, so a `Delay` fault never holds
    /// up a test's teardown.
    async fn pause(&self, duration: Duration) {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(duration) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Counts a request as in flight for as long as it lives.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::Relaxed);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Accepts connections until `shutdown` changes (or its sender is dropped).
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve_connection(stream, peer, shared.clone(), shutdown.clone()));
                }
                Err(err) => {
                    // Typically EMFILE under a connection storm: back off instead of spinning.
                    tracing::warn!(error = %err, "ttp-sim: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let grace = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(grace);
    loop {
        tokio::select! {
            next = connections.join_next() => if next.is_none() { break },
            () = &mut grace => break,
        }
    }
    connections.shutdown().await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Small request/response pairs: Nagle's algorithm would only add latency.
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %err, "ttp-sim: cannot set TCP_NODELAY");
    }
    let signal = Arc::new(CutSignal::default());
    let io = ConnIo::new(stream, signal.clone());
    let service = service_fn(move |request| handle(shared.clone(), signal.clone(), request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        // Expected for dropped and truncated responses and for clients that hang up.
        tracing::debug!(%peer, error = %err, "ttp-sim: connection ended with an error");
    }
}

async fn handle(
    shared: Arc<Shared>,
    signal: Arc<CutSignal>,
    request: Request<Incoming>,
) -> Result<Response<SimBody>, DropConnection> {
    let _in_flight = InFlight::enter(&shared);
    let op = Op::route(request.uri().path());
    lock(&shared.traffic).request(op.name(), Instant::now());
    let (parts, body) = request.into_parts();

    let body = match Limited::new(body, shared.max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            let answer = Answer::outcome(
                413,
                "too-costly",
                format!("the request body exceeds {} bytes", shared.max_body),
            );
            return Ok(send(&shared, answer, None));
        }
        // The client went away mid-body; nobody is left to answer.
        Err(_) => return Err(DropConnection),
    };

    // The token endpoint belongs to the authorisation server, not the gateway: the gateway's
    // faults do not apply to it.
    if parts.uri.path() == crate::oauth::TOKEN_PATH {
        return Ok(send(
            &shared,
            token_endpoint(&shared, &parts.method, &parts.headers, &body),
            None,
        ));
    }

    // A fault queued for this operation comes first; otherwise the seeded plan decides.
    let fault = take_op_fault(&shared, op).or_else(|| lock(&shared.faults).next());
    if let Some(fault) = &fault {
        let mut traffic = lock(&shared.traffic);
        traffic.faults_injected += 1;
        if fault.after {
            traffic.faults_after_processing += 1;
        }
    }
    let answer = match fault {
        Some(fault) if !fault.after => return fault_response(&shared, &signal, fault, None).await,
        Some(fault) => {
            let processed = process(&shared, op, &parts.method, &parts.headers, &body);
            return fault_response(&shared, &signal, fault, Some(processed)).await;
        }
        None => process(&shared, op, &parts.method, &parts.headers, &body),
    };
    if let Some(latency) = shared.latency {
        shared.pause(latency).await;
    }
    Ok(send(&shared, answer, None))
}

/// The next fault queued for this request's operation, if any.
fn take_op_fault(shared: &Shared, op: Op) -> Option<Fault> {
    let operation = op.operation()?;
    lock(&shared.op_faults).get_mut(&operation)?.pop_front()
}

fn send(shared: &Shared, answer: Answer, truncate: Option<Arc<CutSignal>>) -> Response<SimBody> {
    lock(&shared.traffic).status(answer.status);
    answer.into_response(truncate)
}

/// The response a fault produces. `processed` is the real answer when the request was
/// processed first (an `After` fault).
async fn fault_response(
    shared: &Shared,
    signal: &Arc<CutSignal>,
    fault: Fault,
    processed: Option<Answer>,
) -> Result<Response<SimBody>, DropConnection> {
    if let Some(latency) = shared.latency {
        shared.pause(latency).await;
    }
    let answer = match fault.kind {
        FaultKind::Drop => return Err(DropConnection),
        FaultKind::Status(status) if fault.html => Answer::text(
            status,
            "text/html; charset=utf-8",
            format!(
                "<html><head><title>{status} Error</title></head><body><center><h1>{status} \
                 Error</h1></center><hr><center>nginx</center></body></html>\n"
            ),
        ),
        FaultKind::Status(status) => Answer::outcome(
            status,
            "transient",
            format!("simulated failure with status {status}"),
        ),
        FaultKind::Status429 { retry_after_secs } => Answer::outcome(
            429,
            "throttled",
            format!("too many requests; retry after {retry_after_secs} s"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs)),
        FaultKind::Delay(delay) => {
            shared.pause(delay).await;
            processed.unwrap_or_else(|| {
                Answer::outcome(504, "timeout", "simulated gateway timeout".into())
            })
        }
        FaultKind::Truncate => {
            let answer = processed.unwrap_or_else(|| {
                Answer::outcome(503, "transient", "simulated failure, truncated".into())
            });
            return Ok(send(shared, answer, Some(signal.clone())));
        }
        FaultKind::TruncatedOk => {
            // A real 2xx answer with a body to cut, else a made-up one: either way the client
            // sees "200, Content-Length n", fewer than n bytes, and the connection closing.
            let answer = match processed {
                Some(answer) if (200..300).contains(&answer.status) && answer.body.len() > 1 => {
                    answer
                }
                _ => Answer::json(200, &fhir::parameters(Vec::new())),
            };
            return Ok(send(shared, answer, Some(signal.clone())));
        }
        FaultKind::Malformed => Answer::text(
            200,
            FHIR_JSON,
            "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":".into(),
        ),
    };
    Ok(send(shared, answer, None))
}

/// Everything after transport: route, method, media type, authentication, parameters, and
/// the dispatcher's own rules.
fn process(shared: &Shared, op: Op, method: &Method, headers: &HeaderMap, body: &[u8]) -> Answer {
    if op == Op::Unknown {
        return Answer::outcome(
            404,
            "not-supported",
            format!("no operation here; the dispatcher lives at {BASE_PATH}"),
        );
    }
    if *method != op.method() {
        let allowed = op.method_name();
        return Answer::outcome(
            405,
            "not-supported",
            format!("{} expects {allowed}", op.name()),
        )
        .with_header(header::ALLOW, HeaderValue::from_static(allowed));
    }
    if op == Op::Metadata {
        return Answer::json(200, &capability_statement(&shared.clock.now()));
    }
    if !is_fhir_json(headers) {
        return Answer::outcome(
            415,
            "not-supported",
            "Content-Type must be application/fhir+json".into(),
        );
    }
    let now = shared.clock.now();
    let bearer_ok = |token: &str| lock(&shared.tokens).valid(token, now);
    // Without a body key in play, credentials are checked before the body is read.
    let needs_body = shared.auth.accepts_body_param();
    if !needs_body && !auth::satisfied(&shared.auth, headers, None, &bearer_ok) {
        return unauthorised(shared);
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(err) => {
            return Answer::outcome(400, "structure", format!("the body is not JSON: {err}"));
        }
    };
    let params = match Parameters::from_value(&value) {
        Ok(params) => params,
        Err(bad) => return Answer::outcome(400, "structure", bad.0),
    };
    if needs_body {
        let key = params
            .optional_string("apikey", "valueString")
            .ok()
            .flatten();
        if !auth::satisfied(&shared.auth, headers, key, &bearer_ok) {
            return unauthorised(shared);
        }
    }
    match run(shared, op, &params) {
        Ok(reply) => reply.into(),
        Err(bad) => Answer::outcome(400, "required", bad.0),
    }
}

fn run(shared: &Shared, op: Op, params: &Parameters<'_>) -> Result<Reply, fhir::BadRequest> {
    let now = shared.clock.now();
    Ok(match op {
        Op::RequestPsn => {
            let study = params.string("study", "valueString")?;
            let target = params.string("target", "valueString")?;
            let filters = params.strings("bloomfilter", "valueBase64Binary")?;
            lock(&shared.dispatcher).request_psn(now, study, target, &filters)
        }
        Op::RequestTasks => {
            let study = params.string("study", "valueString")?;
            let target = params.string("target", "valueString")?;
            lock(&shared.dispatcher).request_tasks(now, study, target)
        }
        Op::Provide => {
            let task_id = params.string("taskId", "valueId")?;
            let target = params.string("target", "valueString")?;
            let patient = params.resource("patient")?;
            lock(&shared.dispatcher).provide(now, task_id, target, patient)
        }
        Op::Metadata | Op::Unknown => {
            return Err(fhir::BadRequest(format!(
                "{} is not an operation",
                op.name()
            )));
        }
    })
}

/// The authorisation server's token endpoint; 404 unless the simulator issues tokens.
fn token_endpoint(shared: &Shared, method: &Method, headers: &HeaderMap, body: &[u8]) -> Answer {
    let Some(client) = shared.auth.oauth2_client() else {
        return Answer::text(404, "text/plain", "no token endpoint here".into());
    };
    if *method != Method::POST {
        return Answer::text(405, "text/plain", "the token endpoint expects POST".into())
            .with_header(header::ALLOW, HeaderValue::from_static("POST"));
    }
    let now = shared.clock.now();
    let answer = lock(&shared.tokens).request(client, headers, body, now);
    let mut reply = Answer::json(answer.status, &answer.body);
    reply.content_type = "application/json";
    reply
}

fn unauthorised(shared: &Shared) -> Answer {
    lock(&shared.traffic).auth_failures += 1;
    let answer = Answer::outcome(401, "login", "missing or wrong credentials".into());
    if shared.auth.accepts_basic() {
        answer.with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ttp-sim\""),
        )
    } else {
        answer
    }
}

fn is_fhir_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .is_some_and(|media| media == FHIR_JSON || media == "application/json")
}

fn capability_statement(now: &chrono::DateTime<chrono::Utc>) -> Value {
    let operation = |code: &str| {
        json!({
            "name": code,
            "definition": format!("https://ths-greifswald.de/fhir/OperationDefinition/dispatcher/{code}")
        })
    };
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": now.format("%Y-%m-%d").to_string(),
        "kind": "instance",
        "software": { "name": "ttp-sim", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "fTTP dispatcher simulator (not a real trusted third party)" },
        "fhirVersion": "4.0.1",
        "format": [FHIR_JSON],
        "rest": [ {
            "mode": "server",
            "operation": [
                operation("requestPsnFromBfWorkflow"),
                operation("requestTasks"),
                operation("providePatientData")
            ]
        } ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_operations_with_plain_or_encoded_dollar() {
        let path = |rest: &str| format!("{BASE_PATH}/{rest}");
        assert_eq!(Op::route(&path("$requestTasks")), Op::RequestTasks);
        assert_eq!(Op::route(&path("%24requestTasks")), Op::RequestTasks);
        assert_eq!(
            Op::route(&path("$requestPsnFromBfWorkflow")),
            Op::RequestPsn
        );
        assert_eq!(Op::route(&path("$providePatientData")), Op::Provide);
        assert_eq!(Op::route(&path("metadata")), Op::Metadata);
        assert_eq!(Op::route(&path("requestTasks")), Op::Unknown);
        assert_eq!(Op::route(&path("$metadata")), Op::Unknown);
        assert_eq!(Op::route("/ttp-fhir/fhir/gpas/$requestTasks"), Op::Unknown);
        assert_eq!(Op::route(&format!("{BASE_PATH}$requestTasks")), Op::Unknown);
    }

    #[test]
    fn accepts_fhir_and_plain_json_media_types_only() {
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            headers
        };
        assert!(is_fhir_json(&with("application/fhir+json")));
        assert!(is_fhir_json(&with("application/fhir+json; charset=UTF-8")));
        assert!(is_fhir_json(&with("application/json")));
        assert!(!is_fhir_json(&with("application/fhir+xml")));
        assert!(!is_fhir_json(&HeaderMap::new()));
    }
}
