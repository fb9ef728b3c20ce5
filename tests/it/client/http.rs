//! The client against real HTTP servers on 127.0.0.1: classification, retries, `Retry-After`,
//! size limits, error bodies, credentials, timeouts and broken connections.

use std::time::{Duration, SystemTime};

use crate::support;
use crate::support::client::{
    CAPABILITY_STATEMENT, RawServer, Reply, Server, read_request, settings, write_and_close,
};
use serde_json::json;
use ttp_agent::client::{
    ClientConfigError, ClientSettings, ErrorClass, Operation, StatusClass, TtpClient, TtpError,
};
use ttp_encode::Secret;

fn client(settings: ClientSettings) -> TtpClient {
    TtpClient::new(settings).expect("valid test settings")
}

fn patient() -> serde_json::Value {
    json!({ "resourceType": "Patient", "gender": "unknown" })
}

#[tokio::test]
async fn every_error_status_maps_to_its_class() {
    let cases = [
        (400, ErrorClass::Permanent),
        (404, ErrorClass::Permanent),
        (413, ErrorClass::Permanent),
        (422, ErrorClass::Permanent),
        (302, ErrorClass::Permanent),
        (401, ErrorClass::Auth),
        (403, ErrorClass::Auth),
        (408, ErrorClass::Transient),
        (429, ErrorClass::Transient),
        (503, ErrorClass::Transient),
        (500, ErrorClass::InDoubt),
        (502, ErrorClass::InDoubt),
        (504, ErrorClass::InDoubt),
        (512, ErrorClass::InDoubt),
    ];
    for (status, class) in cases {
        let server = Server::start(vec![Reply::status(status)]).await;
        let err = client(settings(&server.base_url()))
            .provide_patient_data("task-1", patient())
            .await
            .expect_err("error status");
        assert_eq!(
            (err.op, err.class, err.status),
            (Operation::ProvidePatientData, class, Some(status)),
            "{err}"
        );
        assert_eq!(
            server.request_count(),
            1,
            "status {status}: one attempt only"
        );
    }
}

#[tokio::test]
async fn idempotent_operations_retry_transient_and_in_doubt_until_max_attempts() {
    for (status, class) in [(503, ErrorClass::Transient), (500, ErrorClass::InDoubt)] {
        let server = Server::start(vec![Reply::status(status)]).await;
        let client = client(settings(&server.base_url()));
        let err = client.request_tasks().await.expect_err("always failing");
        assert_eq!((err.class, err.status), (class, Some(status)));
        assert_eq!(server.request_count(), 4, "status {status}");
        let metrics = client.metrics();
        assert_eq!(metrics.retries(Operation::RequestTasks), 3);
        assert_eq!(
            metrics.requests(Operation::RequestTasks, StatusClass::ServerError),
            4
        );
    }
}

#[tokio::test]
async fn retries_stop_at_the_first_success() {
    let server = Server::start(vec![
        Reply::status(503),
        Reply::status(502),
        Reply::ok_parameters(),
    ])
    .await;
    let client = client(settings(&server.base_url()));
    let tasks = client
        .request_tasks()
        .await
        .expect("third attempt succeeds");
    assert!(tasks.tasks.is_empty());
    assert_eq!(server.request_count(), 3);
    let metrics = client.metrics();
    assert_eq!(
        metrics.requests(Operation::RequestTasks, StatusClass::Success),
        1
    );
    assert_eq!(metrics.retries(Operation::RequestTasks), 2);
}

#[tokio::test]
async fn permanent_auth_and_protocol_errors_are_not_retried() {
    let replies = [
        (Reply::status(400), ErrorClass::Permanent),
        (Reply::status(401), ErrorClass::Auth),
        (
            Reply::status(200)
                .header("content-type", "text/html")
                .body(b"<html><body>Login</body></html>".to_vec()),
            ErrorClass::Protocol,
        ),
        (Reply::fhir(200, "not json at all"), ErrorClass::Protocol),
        (
            Reply::fhir(200, r#"{"resourceType":"Bundle"}"#),
            ErrorClass::Protocol,
        ),
    ];
    for (reply, class) in replies {
        let server = Server::start(vec![reply]).await;
        let err = client(settings(&server.base_url()))
            .request_tasks()
            .await
            .expect_err("must fail");
        assert_eq!(err.class, class, "{err}");
        assert_eq!(server.request_count(), 1, "{err}");
    }
}

#[tokio::test]
async fn provide_patient_data_is_never_retried() {
    for status in [503, 500, 429] {
        let server = Server::start(vec![Reply::status(status), Reply::status(200)]).await;
        let result = client(settings(&server.base_url()))
            .provide_patient_data("task-1", patient())
            .await;
        assert!(result.is_err(), "status {status}");
        assert_eq!(server.request_count(), 1, "status {status}");
    }
}

#[tokio::test]
async fn provide_patient_data_succeeds_on_any_2xx_and_sends_the_task() {
    for reply in [
        Reply::status(204),
        Reply::status(200),
        Reply::fhir(
            200,
            r#"{"resourceType":"Parameters","parameter":[{"name":"return"}]}"#,
        ),
    ] {
        let server = Server::start(vec![reply]).await;
        client(settings(&server.base_url()))
            .provide_patient_data("064ddebf", patient())
            .await
            .expect("2xx is success");
        let request = &server.requests()[0];
        assert_eq!(
            request.path,
            "/ttp-fhir/fhir/dispatcher/$providePatientData"
        );
        let body = request.json();
        assert_eq!(body["resourceType"], "Parameters");
        assert!(body.to_string().contains("064ddebf"));
    }
}

#[tokio::test]
async fn retry_after_in_seconds_is_waited_for() {
    let server = Server::start(vec![
        Reply::status(429).header("retry-after", "1"),
        Reply::ok_parameters(),
    ])
    .await;
    let mut s = settings(&server.base_url());
    // Waits up to 5 s are taken inline; the jittered backoff itself stays below 1 ms.
    s.retry.cap = Duration::from_secs(5);
    client(s)
        .request_tasks()
        .await
        .expect("second attempt succeeds");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    // The policy's own backoff is at most 1 ms here: only the header explains this gap.
    assert!(requests[1].arrived - requests[0].arrived >= Duration::from_secs(1));
}

#[tokio::test]
async fn long_retry_after_is_returned_capped_instead_of_waited_for() {
    let in_two_hours = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(7200));
    for value in ["7200".to_string(), in_two_hours] {
        let server = Server::start(vec![
            Reply::status(503).header("retry-after", value.clone()),
        ])
        .await;
        let err = client(settings(&server.base_url()))
            .request_tasks()
            .await
            .expect_err("server asks for a long pause");
        assert_eq!(err.class, ErrorClass::Transient);
        assert_eq!(err.retry_after, Some(Duration::from_secs(3600)), "{value}");
        assert_eq!(server.request_count(), 1, "{value}");
    }
}

#[tokio::test]
async fn http_date_retry_after_is_parsed() {
    let in_ten_minutes = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(600));
    let server = Server::start(vec![
        Reply::status(429).header("retry-after", in_ten_minutes),
    ])
    .await;
    let err = client(settings(&server.base_url()))
        .provide_patient_data("t", patient())
        .await
        .expect_err("429");
    let after = err.retry_after.expect("retry_after parsed from the date");
    // One second of slack: HTTP dates have whole seconds.
    assert!(
        after > Duration::from_secs(590) && after <= Duration::from_secs(600),
        "{after:?}"
    );
}

#[tokio::test]
async fn bodies_beyond_the_limit_are_a_protocol_error() {
    let big = format!(
        r#"{{"resourceType":"Parameters","padding":"{}"}}"#,
        "x".repeat(4096)
    );
    let server = Server::start(vec![Reply::fhir(200, big)]).await;
    let mut s = settings(&server.base_url());
    s.max_response_bytes = 1024;
    let err = client(s).request_tasks().await.expect_err("too large");
    assert_eq!(err.class, ErrorClass::Protocol);
    assert!(err.detail.contains("max_response_bytes"), "{err}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_is_accepted() {
    let body = r#"{"resourceType":"Parameters"}"#;
    let server = Server::start(vec![Reply::fhir(200, body)]).await;
    let mut s = settings(&server.base_url());
    s.max_response_bytes = body.len();
    let bytes = client(s)
        .post(Operation::RequestTasks, b"{}".to_vec())
        .await
        .expect("within the limit");
    assert_eq!(bytes, body.as_bytes());
}

/// A chunked body has no `Content-Length` to check up front: the limit must be enforced while
/// streaming. The body is valid (JSON padded with whitespace), so only the limit can reject it.
#[tokio::test]
async fn chunked_bodies_are_cut_off_at_the_limit() {
    let server = RawServer::start(|mut stream| async move {
        read_request(&mut stream).await;
        let mut response = b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\n\
                             transfer-encoding: chunked\r\n\r\n"
            .to_vec();
        let json = support::client::EMPTY_PARAMETERS.as_bytes();
        response.extend_from_slice(format!("{:x}\r\n", json.len()).as_bytes());
        response.extend_from_slice(json);
        response.extend_from_slice(b"\r\n");
        for _ in 0..64 {
            response.extend_from_slice(b"400\r\n");
            response.extend_from_slice(&[b' '; 0x400]);
            response.extend_from_slice(b"\r\n");
        }
        response.extend_from_slice(b"0\r\n\r\n");
        write_and_close(stream, &response).await;
    })
    .await;
    let mut s = settings(&server.base_url());
    s.max_response_bytes = 10_000;
    let err = client(s).request_tasks().await.expect_err("too large");
    assert_eq!(err.class, ErrorClass::Protocol, "{err}");
    assert!(err.detail.contains("max_response_bytes"), "{err}");
    assert_eq!(server.connections(), 1);

    // The same body is fine under a limit that fits it.
    let mut s = settings(&server.base_url());
    s.max_response_bytes = 100_000;
    client(s).request_tasks().await.expect("within the limit");
}

#[tokio::test]
async fn error_bodies_end_up_in_detail_bounded() {
    let outcome = json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": "required",
                    "diagnostics": "parameter target is missing" }]
    });
    let server = Server::start(vec![Reply::fhir(400, outcome.to_string())]).await;
    let err = client(settings(&server.base_url()))
        .request_tasks()
        .await
        .expect_err("400");
    assert!(err.detail.contains("parameter target is missing"), "{err}");

    let html = format!(
        "<html><head><title>502 Bad Gateway</title></head><body>{}</body></html>",
        "<p>nginx</p>".repeat(10_000)
    );
    let server = Server::start(vec![
        Reply::status(502)
            .header("content-type", "text/html")
            .body(html.into_bytes()),
    ])
    .await;
    let err = client(settings(&server.base_url()))
        .provide_patient_data("t", patient())
        .await
        .expect_err("502");
    assert_eq!((err.class, err.status), (ErrorClass::InDoubt, Some(502)));
    assert!(!err.detail.is_empty());
    assert!(err.detail.chars().count() <= TtpError::MAX_DETAIL_CHARS + 1);

    let server = Server::start(vec![Reply::status(404)]).await;
    let err = client(settings(&server.base_url()))
        .provide_patient_data("t", patient())
        .await
        .expect_err("404");
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(404)));
}

#[tokio::test]
async fn standard_headers_and_api_key_header() {
    let server = Server::start(vec![Reply::ok_parameters()]).await;
    let mut s = settings(&server.base_url());
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    client(s).request_tasks().await.expect("ok");
    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/ttp-fhir/fhir/dispatcher/$requestTasks");
    assert_eq!(request.header("apiKey"), Some("key-4711"));
    assert_eq!(
        request.header("content-type"),
        Some("application/fhir+json")
    );
    assert_eq!(request.header("accept"), Some("application/fhir+json"));
    let agent = request.header("user-agent").unwrap_or_default();
    assert!(agent.starts_with("ttp-agent/"), "{agent}");
    assert!(request.header("authorization").is_none());
    assert!(!String::from_utf8_lossy(&request.body).contains("key-4711"));
    let body = request.json();
    assert_eq!(
        body["parameter"][0],
        json!({"name": "study", "valueString": "mii"})
    );
}

#[tokio::test]
async fn api_key_in_a_custom_header() {
    let server = Server::start(vec![Reply::ok_parameters()]).await;
    let mut s = settings(&server.base_url());
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    s.auth.api_key_header = "X-TTP-Key".into();
    client(s).request_tasks().await.expect("ok");
    let request = &server.requests()[0];
    assert_eq!(request.header("x-ttp-key"), Some("key-4711"));
    assert!(request.header("apikey").is_none());
}

#[tokio::test]
async fn api_key_in_the_body_with_basic_auth() {
    let server = Server::start(vec![Reply::ok_parameters()]).await;
    let mut s = settings(&server.base_url());
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    s.auth.api_key_in_body = true;
    s.auth.api_key_in_header = false;
    s.auth.basic = Some(("site-a".into(), Secret::from_text("pw")));
    client(s).request_tasks().await.expect("ok");
    let request = &server.requests()[0];
    assert!(request.header("apikey").is_none());
    // base64("site-a:pw")
    assert_eq!(request.header("authorization"), Some("Basic c2l0ZS1hOnB3"));
    let parameters = request.json()["parameter"].clone();
    assert!(
        parameters
            .as_array()
            .expect("array")
            .contains(&json!({"name": "apikey", "valueString": "key-4711"})),
        "{parameters}"
    );
}

#[tokio::test]
async fn metadata_requires_a_capability_statement() {
    let server = Server::start(vec![Reply::fhir(200, CAPABILITY_STATEMENT)]).await;
    client(settings(&server.base_url()))
        .metadata()
        .await
        .expect("capability statement");
    let request = &server.requests()[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/ttp-fhir/fhir/dispatcher/metadata");

    for reply in [
        Reply::ok_parameters(),
        Reply::status(200)
            .header("content-type", "text/html")
            .body(b"<html>proxy login</html>".to_vec()),
    ] {
        let server = Server::start(vec![reply]).await;
        let err = client(settings(&server.base_url()))
            .metadata()
            .await
            .expect_err("not a capability statement");
        assert_eq!(err.class, ErrorClass::Protocol, "{err}");
    }
}

#[tokio::test]
async fn post_refuses_metadata() {
    let server = Server::start(vec![Reply::fhir(200, CAPABILITY_STATEMENT)]).await;
    let err = client(settings(&server.base_url()))
        .post(Operation::Metadata, Vec::new())
        .await
        .expect_err("metadata is a GET");
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let elsewhere = Server::start(vec![Reply::ok_parameters()]).await;
    let server = Server::start(vec![Reply::status(307).header(
        "location",
        format!("{}/$requestTasks", elsewhere.base_url()),
    )])
    .await;
    let mut s = settings(&server.base_url());
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    let err = client(s).request_tasks().await.expect_err("redirect");
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(307)));
    assert_eq!(
        elsewhere.request_count(),
        0,
        "the API key must not follow a redirect"
    );
}

#[tokio::test]
async fn a_timeout_after_sending_is_in_doubt() {
    let server = Server::start(vec![
        Reply::ok_parameters().delayed(Duration::from_secs(30)),
    ])
    .await;
    let mut s = settings(&server.base_url());
    s.timeout = Duration::from_millis(300);
    s.retry.max_attempts = 2;
    let client = client(s);

    let err = client
        .provide_patient_data("t", patient())
        .await
        .expect_err("timeout");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::InDoubt, None),
        "{err}"
    );
    assert!(err.detail.contains("timed out"), "{err}");
    assert_eq!(server.request_count(), 1);

    let err = client.request_tasks().await.expect_err("timeout");
    assert_eq!(err.class, ErrorClass::InDoubt);
    assert_eq!(server.request_count(), 1 + 2, "request_tasks retried once");
    assert_eq!(
        client
            .metrics()
            .requests(Operation::RequestTasks, StatusClass::NoResponse),
        2
    );
}

#[tokio::test]
async fn a_connection_closed_after_the_request_is_in_doubt() {
    let server = RawServer::start(|mut stream| async move {
        read_request(&mut stream).await;
        write_and_close(stream, b"").await;
    })
    .await;
    let err = client(settings(&server.base_url()))
        .provide_patient_data("t", patient())
        .await
        .expect_err("dropped");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::InDoubt, None),
        "{err}"
    );
    assert_eq!(server.connections(), 1, "exactly one attempt");
}

#[tokio::test]
async fn a_truncated_body_is_in_doubt() {
    let server = RawServer::start(|mut stream| async move {
        read_request(&mut stream).await;
        write_and_close(
            stream,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\n\
              content-length: 1000\r\n\r\n{\"resourceType\":",
        )
        .await;
    })
    .await;
    let mut s = settings(&server.base_url());
    s.retry.max_attempts = 2;
    let err = client(s).request_tasks().await.expect_err("truncated");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::InDoubt, Some(200)),
        "{err}"
    );
    assert_eq!(server.connections(), 2, "idempotent: retried once");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut s = settings(&format!("http://{addr}/d"));
    s.retry.max_attempts = 2;
    let client = client(s);
    let err = client.request_tasks().await.expect_err("refused");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::Transient, None),
        "{err}"
    );
    assert_eq!(client.metrics().retries(Operation::RequestTasks), 1);
    let err = client
        .provide_patient_data("t", patient())
        .await
        .expect_err("refused");
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
}

#[test]
fn plain_http_to_other_hosts_is_refused_before_any_traffic() {
    // 192.0.2.0/24 is TEST-NET-1: nothing is sent there, construction fails first.
    let err = TtpClient::new(settings("http://192.0.2.1/ttp-fhir/fhir/dispatcher"))
        .expect_err("insecure");
    assert!(
        matches!(err, ClientConfigError::InsecureHttp { .. }),
        "{err}"
    );
    let mut s = settings("http://192.0.2.1/ttp-fhir/fhir/dispatcher");
    s.allow_insecure_http = true;
    assert!(TtpClient::new(s).is_ok());
    assert!(TtpClient::new(settings("http://localhost:1/d")).is_ok());
    assert!(TtpClient::new(settings("http://127.0.0.1:1/d")).is_ok());
}

/// Collects formatted log output in memory.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Set in the child process that [`attempts_are_traced_without_bodies_keys_or_filters`] runs in.
const TRACE_CHILD: &str = "TTP_TEST_TRACE_CHILD";

#[test]
fn attempts_are_traced_without_bodies_keys_or_filters() {
    // Tracing keeps process-wide state (which callsites are enabled, the max-level hint) that
    // every test of this binary touches, so a capture in one test can miss its own events while
    // another registers callsites (it did, once in a few hundred full runs). The assertions run
    // in a child process of this binary that runs this test alone.
    if std::env::var_os(TRACE_CHILD).is_some() {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(traced_attempts());
    }
    let name = format!(
        "{}::attempts_are_traced_without_bodies_keys_or_filters",
        module_path!().split_once("::").map_or("", |(_, m)| m)
    );
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(TRACE_CHILD, "1")
        .output()
        .expect("runs the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn traced_attempts() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = Server::start(vec![Reply::status(503), Reply::ok_parameters()]).await;
    let mut s = settings(&server.base_url());
    s.auth.api_key = Some(Secret::from_text("key-4711"));
    s.auth.basic = Some(("site".into(), Secret::from_text("pw-0815")));
    let client = client(s);
    let filter = ttp_proto::BloomFilter(b"synthetic-filter-bytes".to_vec());
    client
        .request_psn(std::slice::from_ref(&filter))
        .await
        .expect("second attempt succeeds");

    let text = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf-8");
    for expected in [
        "ttp_request",
        "$requestPsnFromBfWorkflow",
        "attempt=1",
        "attempt=2",
        "status=503",
        "status=200",
        "class=\"transient\"",
        "duration_ms",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    for secret in [
        "key-4711",
        "pw-0815",
        "c2l0ZTpw",
        &filter.to_base64(),
        "valueString",
    ] {
        assert!(!text.contains(secret), "{secret:?} leaked into:\n{text}");
    }
}
