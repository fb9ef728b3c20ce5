//! One-line summaries of error bodies.

use crate::common::Rng;
use ttp_proto::summarize_error_body;

const FHIR_JSON: Option<&str> = Some("application/fhir+json;charset=UTF-8");

#[test]
fn operation_outcomes_list_each_issue() {
    let body = br#"{"resourceType":"OperationOutcome","issue":[
        {"severity":"error","code":"required","diagnostics":"Parameter 'study' is missing"},
        {"severity":"warning","code":"processing","details":{"text":"slow\nbackend"}},
        {"severity":"information","code":"informational"}]}"#;
    assert_eq!(
        summarize_error_body(FHIR_JSON, body),
        "error required: Parameter 'study' is missing; warning processing: slow backend; information informational"
    );
    // Recognised without a content type too, and with odd issue shapes.
    let odd = br#"{"resourceType":"OperationOutcome","issue":[{"severity":5},{}]}"#;
    assert_eq!(summarize_error_body(None, odd), "? ?; ? ?");
    let none = br#"{"resourceType":"OperationOutcome"}"#;
    assert_eq!(
        summarize_error_body(FHIR_JSON, none),
        "OperationOutcome without issues"
    );
}

#[test]
fn long_outcomes_are_cut_at_about_500_characters() {
    let diagnostics = "x".repeat(2_000);
    let body = format!(
        r#"{{"resourceType":"OperationOutcome","issue":[{{"severity":"fatal","code":"exception","diagnostics":"{diagnostics}"}}]}}"#
    );
    let summary = summarize_error_body(FHIR_JSON, body.as_bytes());
    assert_eq!(summary.chars().count(), 501);
    assert!(summary.starts_with("fatal exception: xxx") && summary.ends_with('…'));
}

#[test]
fn html_pages_are_summarised_by_their_title() {
    let page = b"<!DOCTYPE html>\n<html><head><TITLE>\n 502 Bad   Gateway &amp; more\n</TITLE></head><body>secret stack trace</body></html>";
    assert_eq!(
        summarize_error_body(Some("text/html"), page),
        "502 Bad Gateway & more"
    );
    assert_eq!(summarize_error_body(None, page), "502 Bad Gateway & more");
    let untitled = b"<html><body><h1>Forbidden</h1></body></html>";
    assert_eq!(
        summarize_error_body(Some("text/html; charset=utf-8"), untitled),
        "HTML error page"
    );
    let empty_title = b"<html><head><title>  </title></head></html>";
    assert_eq!(summarize_error_body(None, empty_title), "HTML error page");
    let unterminated = b"<html><title>Service Unavailable";
    assert_eq!(
        summarize_error_body(None, unterminated),
        "Service Unavailable"
    );
    let broken = b"<html><title";
    assert_eq!(summarize_error_body(None, broken), "HTML error page");
}

#[test]
fn empty_bodies_say_so() {
    for body in [&b""[..], b"  \r\n\t", b"\xEF\xBB\xBF"] {
        assert_eq!(summarize_error_body(FHIR_JSON, body), "empty body");
        assert_eq!(summarize_error_body(None, body), "empty body");
    }
}

#[test]
fn other_bodies_give_their_first_printable_characters() {
    assert_eq!(
        summarize_error_body(
            Some("text/plain"),
            b"Too Many Requests\r\n\r\nretry later\x00\x1b[0m"
        ),
        "Too Many Requests retry later [0m"
    );
    let long = "abc ".repeat(200);
    let summary = summarize_error_body(None, long.as_bytes());
    // Cut at a word gap: 199 characters and the ellipsis, no dangling space.
    assert_eq!(summary.chars().count(), 200);
    assert!(summary.ends_with("abc…"), "{summary}");
    // JSON that is not an OperationOutcome is shown as text.
    assert_eq!(
        summarize_error_body(Some("application/json"), br#"{"error":"invalid_token"}"#),
        r#"{"error":"invalid_token"}"#
    );
    // Invalid UTF-8 is replaced, not trusted.
    assert_eq!(
        summarize_error_body(None, b"bad \xff\xfe bytes"),
        "bad \u{fffd}\u{fffd} bytes"
    );
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    let mut rng = Rng::new(99);
    let content_types = [
        None,
        Some("text/html"),
        Some("application/fhir+json"),
        Some("\u{0}"),
    ];
    for round in 0..2_000 {
        let len = rng.below(1_000);
        let mut body = rng.bytes(len);
        match round % 4 {
            0 => body
                .splice(0..0, b"<html><title>".iter().copied())
                .for_each(drop),
            1 => body
                .splice(
                    0..0,
                    br#"{"resourceType":"OperationOutcome","issue":["#.iter().copied(),
                )
                .for_each(drop),
            _ => {}
        }
        let summary = summarize_error_body(content_types[round % 4], &body);
        assert!(summary.chars().count() <= 501, "{summary}");
        assert!(!summary.chars().any(char::is_control), "{summary:?}");
    }
}
