//! What a 2xx answer to `$providePatientData` proves. Found by the fault-injection test: a
//! proxy (or a broken gateway) answering 200 with a body that is not JSON has not shown that the
//! IDAT arrived. Taking it for success would mark the task done while the fTTP still waits for
//! the data, so it is a protocol error, which the agent settles with the next listing.

use crate::support::client::{RawServer, Reply, Server, read_request, settings, write_and_close};
use serde_json::json;
use ttp_agent::client::{ErrorClass, TtpClient};

fn patient() -> serde_json::Value {
    json!({ "resourceType": "Patient", "gender": "unknown" })
}

async fn provide_against(reply: Reply) -> (Result<(), ttp_agent::client::TtpError>, usize) {
    let server = Server::start(vec![reply]).await;
    let client = TtpClient::new(settings(&server.base_url())).expect("valid settings");
    let result = client.provide_patient_data("task-1", patient()).await;
    (result, server.request_count())
}

#[tokio::test]
async fn a_2xx_with_an_empty_or_json_body_is_success() {
    for reply in [
        Reply::status(200),
        Reply::status(201)
            .header("content-type", "text/plain")
            .body(b"\r\n".to_vec()),
        Reply::fhir(200, r#"{"resourceType":"Bundle","type":"collection"}"#),
        Reply::fhir(200, r#"{"resourceType":"OperationOutcome","issue":[]}"#),
        Reply::status(200)
            .header("content-type", "application/json; charset=utf-8")
            .body(b"{}".to_vec()),
    ] {
        let shown = format!("{reply:?}");
        let (result, requests) = provide_against(reply).await;
        assert!(result.is_ok(), "{shown}: {result:?}");
        assert_eq!(requests, 1);
    }
}

#[tokio::test]
async fn a_2xx_whose_body_is_not_json_is_a_protocol_error_and_not_retried() {
    for (reply, needle) in [
        (
            Reply::fhir(200, r#"{"resourceType":"Parameters","parameter":[{"name":"#),
            "not valid JSON",
        ),
        (
            Reply::status(200)
                .header("content-type", "text/html; charset=utf-8")
                .body(b"<html><body>Welcome to the proxy</body></html>".to_vec()),
            "text/html",
        ),
        (
            Reply::status(200).body(b"OK".to_vec()),
            "Content-Type \"none\"",
        ),
    ] {
        let (result, requests) = provide_against(reply).await;
        let err = result.expect_err(needle);
        assert_eq!(
            (err.class, err.status),
            (ErrorClass::Protocol, Some(200)),
            "{err}"
        );
        assert!(err.detail.contains(needle), "{err}");
        assert!(
            err.detail.contains("may not come from the dispatcher"),
            "{err}"
        );
        assert_eq!(requests, 1, "IDAT is never sent twice by the client");
    }
}

#[tokio::test]
async fn a_2xx_whose_body_is_cut_short_is_in_doubt_and_not_retried() {
    // A status line is no proof that the dispatcher acted: a proxy or a failing gateway can
    // send "200, Content-Length 1000", a few bytes, and close. ARCHITECTURE.md: only an empty
    // or complete JSON body makes a 2xx an answer; anything else leaves it in doubt.
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
    let client = TtpClient::new(settings(&server.base_url())).expect("valid settings");
    let err = client
        .provide_patient_data("task-1", patient())
        .await
        .expect_err("a body cut short is not an answer");
    assert_eq!(
        (err.class, err.status),
        (ErrorClass::InDoubt, Some(200)),
        "{err}"
    );
    assert!(err.detail.contains("cut short"), "{err}");
    assert_eq!(
        server.connections(),
        1,
        "IDAT is never sent twice by the client"
    );
}

#[tokio::test]
async fn a_2xx_with_a_body_beyond_the_limit_is_a_protocol_error() {
    let server = Server::start(vec![Reply::fhir(200, format!("[{}0]", "0,".repeat(4096)))]).await;
    let mut s = settings(&server.base_url());
    s.max_response_bytes = 1024;
    let err = TtpClient::new(s)
        .expect("valid settings")
        .provide_patient_data("task-1", patient())
        .await
        .expect_err("too large");
    assert_eq!(err.class, ErrorClass::Protocol, "{err}");
    assert!(err.detail.contains("1024 bytes"), "{err}");
}
