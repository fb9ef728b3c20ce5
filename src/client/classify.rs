//! What an outcome *means*: the client's error vocabulary and the pure rules that map HTTP
//! statuses, transport failures and `Retry-After` headers onto it.
//!
//! The one question every caller of the fTTP has after a failure is not "which status was it"
//! but "may I send this again, and did the server perhaps already act on it?". [`ErrorClass`]
//! answers exactly that, so the agent can branch on five cases instead of on dozens of status
//! codes and `reqwest` error kinds:
//!
//! | class        | the server...                         | typical causes                                   |
//! |--------------|---------------------------------------|--------------------------------------------------|
//! | `Permanent`  | rejected it; it will reject it again  | 400, 404, 413, 422, other 4xx, redirects         |
//! | `Auth`       | rejected our credentials              | 401, 403                                         |
//! | `Transient`  | did **not** process it                | 408, 429, 503, connection refused, DNS, TLS      |
//! | `InDoubt`    | **may** have processed it             | 500, 502, 504, 512, timeouts, resets, truncation |
//! | `Protocol`   | said "success" with an unusable body  | not JSON, not `Parameters`, too large            |
//!
//! Everything here is pure: statuses and header values in, classes out. The only I/O type that
//! appears is `reqwest::Error`, which is inspected, never acted on.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::domain::WholeRequestFailure;

/// One fTTP dispatcher operation. The names are the FHIR operation names, safe to log and to
/// use as metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// `$requestTasks`: fetch the site's open tasks.
    RequestTasks,
    /// `$requestPsnFromBfWorkflow`: register Bloom filters, get pseudonyms.
    RequestPsn,
    /// `$providePatientData`: answer a `send_idat` task with IDAT.
    ProvidePatientData,
    /// `GET metadata`: the CapabilityStatement (a reachability and configuration check).
    Metadata,
}

impl Operation {
    /// Every operation, in a stable order (metrics are reported in this order).
    pub const ALL: [Operation; 4] = [
        Operation::RequestTasks,
        Operation::RequestPsn,
        Operation::ProvidePatientData,
        Operation::Metadata,
    ];

    /// The operation's name as it appears in the URL path below the dispatcher base.
    pub fn name(self) -> &'static str {
        match self {
            Operation::RequestTasks => "$requestTasks",
            Operation::RequestPsn => "$requestPsnFromBfWorkflow",
            Operation::ProvidePatientData => "$providePatientData",
            Operation::Metadata => "metadata",
        }
    }

    /// Whether sending the same request twice has the same effect as sending it once, which is
    /// what makes internal retries of [`ErrorClass::InDoubt`] outcomes safe.
    ///
    /// `$requestPsnFromBfWorkflow` counts as idempotent: E-PIX/gPAS answer a filter they already
    /// know with the same pseudonym (or the same clearing), and the agent re-sends whole batches
    /// after a crash anyway (see `RecordState::Sending`). `$providePatientData` hands IDAT over;
    /// a second copy is a second disclosure, so it is never repeated behind the caller's back.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Operation::ProvidePatientData)
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Operation::RequestTasks => 0,
            Operation::RequestPsn => 1,
            Operation::ProvidePatientData => 2,
            Operation::Metadata => 3,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a failed request means for the caller. See the module documentation for the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The server refused this request as it is (400, 404, 413, 422, any other 4xx not listed
    /// under `Auth`/`Transient`, and redirects, which the client never follows so that the API
    /// key cannot be forwarded to another host). Sending it again unchanged will fail again.
    Permanent,
    /// 401 or 403: the credentials are missing, wrong or lack a permission. A configuration
    /// problem: the caller stops the cycle, reports "not ready" and backs off for long.
    Auth,
    /// The request was **not** processed (408, 429, 503; connection refused, DNS failure, TLS
    /// handshake failure, connect timeout). Always safe to send again, after
    /// [`TtpError::retry_after`] when the server named a time.
    Transient,
    /// The request reached the server and it **may** have acted on it (500, 502, 504, 512 and
    /// other 5xx; a timeout after the request was sent; the connection reset or closed before
    /// the full response arrived). Safe to repeat only for idempotent operations; for
    /// `$providePatientData` the caller must reconcile instead.
    InDoubt,
    /// The server answered 2xx but the body is not what the operation returns (wrong
    /// `Content-Type`, not JSON, not a `Parameters` resource, larger than the configured limit).
    /// Usually a proxy or a wrong `base_url`; not retried.
    Protocol,
}

impl ErrorClass {
    /// Transient and in-doubt outcomes may succeed on another attempt (for in-doubt ones only
    /// when the operation is idempotent; see [`Operation::is_idempotent`]).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::InDoubt)
    }

    /// Whether the server may have acted on the request despite the error.
    pub fn may_have_taken_effect(self) -> bool {
        matches!(self, ErrorClass::InDoubt)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Permanent => "permanent",
            ErrorClass::Auth => "auth",
            ErrorClass::Transient => "transient",
            ErrorClass::InDoubt => "in-doubt",
            ErrorClass::Protocol => "protocol",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed fTTP request, classified.
///
/// `detail` is meant for a log line and the status page: it is built from the server's error
/// body (via `ttp_proto::outcome::summarize_error_body`) or from the transport error chain, and
/// never contains request bodies, API keys, passwords or Bloom filters. It is capped at
/// [`TtpError::MAX_DETAIL_CHARS`] characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TtpError {
    pub op: Operation,
    pub class: ErrorClass,
    /// The HTTP status, when a response arrived.
    pub status: Option<u16>,
    pub detail: String,
    /// The server's `Retry-After` (either form), capped at the retry policy's
    /// `max_retry_after`. When the client gave up because the server asked for a longer pause
    /// than it waits inline, this is when the caller should try again.
    pub retry_after: Option<Duration>,
    /// The error came from the OAuth2 token endpoint, not the dispatcher (an `Auth` one then
    /// means wrong `[ttp.oauth2]` client credentials: a configuration error).
    pub from_token_endpoint: bool,
}

impl TtpError {
    /// Server-provided text can be arbitrarily long (a whole HTML page): keep log lines bounded.
    pub const MAX_DETAIL_CHARS: usize = 500;

    pub(crate) fn new(op: Operation, class: ErrorClass, detail: impl Into<String>) -> TtpError {
        TtpError {
            op,
            class,
            status: None,
            detail: bounded(detail.into()),
            retry_after: None,
            from_token_endpoint: false,
        }
    }

    pub(crate) fn with_status(mut self, status: u16) -> TtpError {
        self.status = Some(status);
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> TtpError {
        self.retry_after = retry_after;
        self
    }
}

impl fmt::Display for TtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed ({}", self.op, self.class)?;
        if let Some(status) = self.status {
            write!(f, ", HTTP {status}")?;
        }
        f.write_str(")")?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if let Some(after) = self.retry_after {
            write!(f, " (server asks to retry after {} s)", after.as_secs())?;
        }
        Ok(())
    }
}

impl std::error::Error for TtpError {}

fn bounded(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(TtpError::MAX_DETAIL_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// The class of a final HTTP status, or `None` for success (2xx).
pub fn classify_status(status: u16) -> Option<ErrorClass> {
    match status {
        200..=299 => None,
        401 | 403 => Some(ErrorClass::Auth),
        408 | 429 | 503 => Some(ErrorClass::Transient),
        // Redirects are not followed (the API key header must not travel to wherever a
        // `Location` points); a redirect means `base_url` is not the final address.
        300..=499 => Some(ErrorClass::Permanent),
        // Any 5xx other than 503 -- and anything non-standard above -- may have been produced
        // after the server acted: assume it did.
        500..=999 => Some(ErrorClass::InDoubt),
        // 1xx are interim responses that hyper consumes; seeing one as final is a broken peer.
        _ => Some(ErrorClass::Protocol),
    }
}

/// The class of a failure where no (complete) response arrived.
///
/// `reqwest` reports everything that happens while establishing the connection -- DNS,
/// TCP connect, the TLS handshake and the connect timeout -- as a connect error; in all those
/// cases not a byte of the request has left, so it is `Transient`. Anything later (the request
/// may have been written: timeouts, resets, a body cut short) is `InDoubt`.
///
/// One exception: in TLS 1.3 the client considers the handshake done before the server has
/// checked the client certificate, so a rejected (or missing) client certificate surfaces as
/// a failure of the *request*. The server's handshake alert proves it never processed it, so
/// that case is `Transient` too.
pub fn classify_transport(err: &reqwest::Error) -> ErrorClass {
    if err.is_connect() || handshake_rejected(err) {
        ErrorClass::Transient
    } else if err.is_builder() {
        // The request could not even be built: sending it again cannot help.
        ErrorClass::Permanent
    } else {
        ErrorClass::InDoubt
    }
}

/// Whether the error chain holds a TLS alert that a server sends only while it is still
/// negotiating the session, i.e. before it reads any application data.
fn handshake_rejected(err: &reqwest::Error) -> bool {
    use rustls::AlertDescription as A;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        // rustls errors travel inside `io::Error`s, whose `source()` skips the inner error.
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return matches!(
                alert,
                A::HandshakeFailure
                    | A::BadCertificate
                    | A::UnsupportedCertificate
                    | A::CertificateRevoked
                    | A::CertificateExpired
                    | A::CertificateUnknown
                    | A::UnknownCA
                    | A::AccessDenied
                    | A::CertificateRequired
                    | A::ProtocolVersion
                    | A::InsufficientSecurity
            );
        }
        source = cause.source();
    }
    false
}

/// A one-line description of a transport failure: what happened, then the causes. The URL is
/// left out (it is known from the operation) and `reqwest` errors never carry bodies or headers.
pub fn describe_transport(err: &reqwest::Error) -> String {
    let what = if err.is_connect() && err.is_timeout() {
        "connect timed out"
    } else if err.is_connect() {
        "could not connect"
    } else if err.is_timeout() {
        "timed out waiting for the response"
    } else if err.is_body() || err.is_decode() {
        "the response body was cut short"
    } else {
        "the request failed"
    };
    let mut text = String::from(what);
    let mut last = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let line = cause.to_string();
        // hyper and hyper-util repeat their inner error in their own message now and then.
        if !line.is_empty() && line != last {
            text.push_str(": ");
            text.push_str(&line);
            last = line;
        }
        source = cause.source();
    }
    text
}

/// Parses a `Retry-After` value in either form RFC 9110 allows: delta-seconds (`"120"`) or an
/// HTTP-date (`"Wed, 21 Oct 2015 07:28:00 GMT"`, also the obsolete RFC 850 and asctime forms).
/// A date in the past means "now" (zero). Anything else is ignored (`None`): a garbled header
/// must not turn an otherwise classified error into something else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than fit in a u64 is still "a very long time"; the cap applies later.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Whether a `Content-Type` names JSON: `application/fhir+json` or `application/json`, with any
/// parameters (`charset`, `fhirVersion`) and in any case.
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/fhir+json")
        || essence.eq_ignore_ascii_case("application/json")
}

/// What a `$requestPsnFromBfWorkflow` answer means for the batch that was sent. Only
/// [`PsnVerdict::PerFilter`] judges records; every other verdict leaves them pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsnVerdict {
    /// Results per filter: `pseudonym-bf` entries, `error` entries naming a filter, and
    /// filters the answer does not mention (they wait for a clearing). Judge each with
    /// [`psn_error_is_permanent`].
    PerFilter,
    /// The request failed as a whole: a configuration or gateway problem, never a verdict on
    /// the records in it.
    WholeRequest(WholeRequestFailure),
    /// 413: the batch is too large for the gateway; smaller batches may pass.
    TooLarge,
    /// 401/403: the credentials were refused.
    Auth,
    /// Not processed, or maybe processed (transient, in doubt, an unusable 2xx): the operation
    /// is idempotent, so the same filters are simply sent again.
    AskAgain,
}

/// Classifies the answer to a `$requestPsnFromBfWorkflow` for the filters `sent`. Pure.
///
/// Whole-request failures: a 4xx other than 401/403/408/413/429 (the IG answers an unknown
/// study or target with 400/404/422 for the whole request); an HTTP 200 with an `error` that
/// names no filter (among them the `all` + `error-code` shape); an answer whose entries name
/// none of the filters sent. An answer without any entry is *not* one: every filter then
/// waits for a clearing, as the IG says.
pub fn classify_psn(
    sent: &[ttp_proto::BloomFilter],
    answer: Result<&ttp_proto::PsnResponse, &TtpError>,
) -> PsnVerdict {
    let response = match answer {
        Ok(response) => response,
        Err(err) => {
            return match (err.class, err.status) {
                (ErrorClass::Auth, _) => PsnVerdict::Auth,
                (ErrorClass::Permanent, Some(413)) => PsnVerdict::TooLarge,
                (ErrorClass::Permanent, status) => PsnVerdict::WholeRequest(WholeRequestFailure {
                    cause: status.map_or_else(|| String::from("refused"), |s| format!("http-{s}")),
                    status,
                    code: None,
                    display: None,
                    detail: match status {
                        Some(s) => format!(
                            "the fTTP refused the whole request with HTTP {s}: {}",
                            err.detail
                        ),
                        None => format!("the fTTP refused the whole request: {}", err.detail),
                    },
                }),
                (ErrorClass::Transient | ErrorClass::InDoubt | ErrorClass::Protocol, _) => {
                    PsnVerdict::AskAgain
                }
            };
        }
    };
    if let Some(first) = response.request_errors.first() {
        let all = response.request_errors.iter().any(|e| e.all);
        return PsnVerdict::WholeRequest(WholeRequestFailure {
            cause: if all { "all" } else { "error" }.into(),
            status: Some(200),
            code: first.code.clone(),
            display: first.display.clone(),
            detail: if all {
                "the fTTP answered HTTP 200 with an error for all filters of the request (`all`)"
                    .into()
            } else {
                "the fTTP answered HTTP 200 with an error that names no filter".into()
            },
        });
    }
    let named = response
        .pseudonyms
        .iter()
        .map(|p| &p.bloom_filter)
        .chain(response.errors.iter().map(|e| &e.bloom_filter));
    let mut any = false;
    let mut sent_one = false;
    for filter in named {
        any = true;
        if sent.contains(filter) {
            sent_one = true;
            break;
        }
    }
    if any && !sent_one {
        return PsnVerdict::WholeRequest(WholeRequestFailure {
            cause: "foreign".into(),
            status: Some(200),
            code: None,
            display: None,
            detail: "the fTTP's answer names none of the filters sent (a wrong target or a gateway mix-up)".into(),
        });
    }
    PsnVerdict::PerFilter
}

/// Whether an `error` naming one filter rejects that record for good. Codes of the FHIR
/// issue-type system that describe a passing condition (`transient` and its children
/// `lock-error`, `no-store`, `exception`, `timeout`, `incomplete`, `throttled`) do not: the
/// record stays pending and is sent again. Every other code is a verdict on the filter.
pub fn psn_error_is_permanent(code: &str) -> bool {
    let bare = code.rsplit('#').next().unwrap_or(code);
    !matches!(
        bare,
        "transient"
            | "lock-error"
            | "no-store"
            | "exception"
            | "timeout"
            | "incomplete"
            | "throttled"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_classes() {
        let cases: &[(u16, Option<ErrorClass>)] = &[
            (200, None),
            (201, None),
            (204, None),
            (301, Some(ErrorClass::Permanent)),
            (307, Some(ErrorClass::Permanent)),
            (400, Some(ErrorClass::Permanent)),
            (404, Some(ErrorClass::Permanent)),
            (409, Some(ErrorClass::Permanent)),
            (413, Some(ErrorClass::Permanent)),
            (422, Some(ErrorClass::Permanent)),
            (401, Some(ErrorClass::Auth)),
            (403, Some(ErrorClass::Auth)),
            (408, Some(ErrorClass::Transient)),
            (429, Some(ErrorClass::Transient)),
            (503, Some(ErrorClass::Transient)),
            (500, Some(ErrorClass::InDoubt)),
            (501, Some(ErrorClass::InDoubt)),
            (502, Some(ErrorClass::InDoubt)),
            (504, Some(ErrorClass::InDoubt)),
            (512, Some(ErrorClass::InDoubt)),
            (599, Some(ErrorClass::InDoubt)),
            (100, Some(ErrorClass::Protocol)),
        ];
        for &(status, class) in cases {
            assert_eq!(classify_status(status), class, "status {status}");
        }
    }

    #[test]
    fn only_transient_and_in_doubt_are_retryable() {
        assert!(ErrorClass::Transient.is_retryable());
        assert!(ErrorClass::InDoubt.is_retryable());
        assert!(!ErrorClass::Permanent.is_retryable());
        assert!(!ErrorClass::Auth.is_retryable());
        assert!(!ErrorClass::Protocol.is_retryable());
        assert!(ErrorClass::InDoubt.may_have_taken_effect());
        assert!(!ErrorClass::Transient.may_have_taken_effect());
    }

    #[test]
    fn provide_patient_data_is_the_only_non_idempotent_operation() {
        let non_idempotent: Vec<_> = Operation::ALL
            .into_iter()
            .filter(|op| !op.is_idempotent())
            .collect();
        assert_eq!(non_idempotent, vec![Operation::ProvidePatientData]);
        let indices: Vec<_> = Operation::ALL.into_iter().map(Operation::index).collect();
        assert_eq!(indices, vec![0, 1, 2, 3]);
    }

    #[test]
    fn retry_after_delta_seconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("1.5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_http_date_in_all_three_forms() {
        // 1994-11-06T08:49:37Z, the RFC's own example.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_secs(90);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form, now),
                Some(Duration::from_secs(90)),
                "{form}"
            );
        }
        let later = date + Duration::from_secs(10);
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
    }

    #[test]
    fn json_content_types_are_recognised_with_parameters_and_any_case() {
        assert!(is_json_content_type(Some("application/fhir+json")));
        assert!(is_json_content_type(Some(
            "application/fhir+json; fhirVersion=4.0; charset=UTF-8"
        )));
        assert!(is_json_content_type(Some("Application/JSON;charset=utf-8")));
        assert!(!is_json_content_type(Some("text/html; charset=utf-8")));
        assert!(!is_json_content_type(Some("application/fhir+xml")));
        assert!(!is_json_content_type(Some("")));
        assert!(!is_json_content_type(None));
    }

    #[test]
    fn detail_is_bounded_and_display_names_op_class_status() {
        let err = TtpError::new(
            Operation::RequestTasks,
            ErrorClass::Transient,
            "x".repeat(2000),
        )
        .with_status(429)
        .with_retry_after(Some(Duration::from_secs(7)));
        assert_eq!(err.detail.chars().count(), TtpError::MAX_DETAIL_CHARS + 1);
        let text = err.to_string();
        assert!(
            text.starts_with("$requestTasks failed (transient, HTTP 429): xxx"),
            "{text}"
        );
        assert!(text.ends_with("(server asks to retry after 7 s)"), "{text}");
    }

    fn bf(n: u8) -> ttp_proto::BloomFilter {
        ttp_proto::BloomFilter(vec![n; 8])
    }

    fn answer(
        pseudonyms: &[u8],
        errors: &[(u8, &str)],
        request_errors: Vec<ttp_proto::RequestError>,
    ) -> ttp_proto::PsnResponse {
        ttp_proto::PsnResponse {
            pseudonyms: pseudonyms
                .iter()
                .map(|&n| ttp_proto::PsnResult {
                    bloom_filter: bf(n),
                    target: "t".into(),
                    pseudonym: "p".into(),
                })
                .collect(),
            errors: errors
                .iter()
                .map(|&(n, code)| ttp_proto::PsnError {
                    bloom_filter: bf(n),
                    target: "t".into(),
                    code: code.into(),
                })
                .collect(),
            request_errors,
            problems: vec![],
        }
    }

    fn error(class: ErrorClass, status: Option<u16>) -> TtpError {
        let mut e = TtpError::new(Operation::RequestPsn, class, "unknown study `x`");
        e.status = status;
        e
    }

    #[test]
    fn per_filter_answers_judge_records() {
        let sent = [bf(1), bf(2)];
        for a in [
            answer(&[1], &[], vec![]),
            answer(&[], &[(2, "invalid")], vec![]),
            answer(&[3, 1], &[], vec![]),
            // No entry at all: every filter waits for a clearing (the IG's normal case).
            answer(&[], &[], vec![]),
        ] {
            assert_eq!(classify_psn(&sent, Ok(&a)), PsnVerdict::PerFilter, "{a:?}");
        }
    }

    #[test]
    fn whole_request_failures_judge_no_record() {
        let sent = [bf(1), bf(2)];
        let all = answer(
            &[],
            &[],
            vec![ttp_proto::RequestError {
                all: true,
                code: Some("http://hl7.org/fhir/issue-type#not-found".into()),
                display: Some("unknown study".into()),
            }],
        );
        let PsnVerdict::WholeRequest(f) = classify_psn(&sent, Ok(&all)) else {
            panic!("the all shape is a whole-request failure");
        };
        assert_eq!(f.cause, "all");
        assert_eq!(f.display.as_deref(), Some("unknown study"));
        assert!(f.to_string().contains("not-found: unknown study"), "{f}");

        let no_filter = answer(
            &[1],
            &[],
            vec![ttp_proto::RequestError {
                all: false,
                code: None,
                display: None,
            }],
        );
        assert!(matches!(
            classify_psn(&sent, Ok(&no_filter)),
            PsnVerdict::WholeRequest(WholeRequestFailure { ref cause, .. }) if cause == "error"
        ));
        let foreign = answer(&[7], &[(8, "invalid")], vec![]);
        assert!(matches!(
            classify_psn(&sent, Ok(&foreign)),
            PsnVerdict::WholeRequest(WholeRequestFailure { ref cause, .. }) if cause == "foreign"
        ));
        for status in [400, 404, 422, 409, 307] {
            let e = error(ErrorClass::Permanent, Some(status));
            let PsnVerdict::WholeRequest(f) = classify_psn(&sent, Err(&e)) else {
                panic!("HTTP {status} is about the request");
            };
            assert_eq!(f.cause, format!("http-{status}"));
            assert!(f.detail.contains("unknown study `x`"), "{f}");
        }
    }

    #[test]
    fn other_failures_ask_again_split_or_stop() {
        let sent = [bf(1)];
        assert_eq!(
            classify_psn(&sent, Err(&error(ErrorClass::Permanent, Some(413)))),
            PsnVerdict::TooLarge
        );
        assert_eq!(
            classify_psn(&sent, Err(&error(ErrorClass::Auth, Some(401)))),
            PsnVerdict::Auth
        );
        for class in [
            ErrorClass::Transient,
            ErrorClass::InDoubt,
            ErrorClass::Protocol,
        ] {
            assert_eq!(
                classify_psn(&sent, Err(&error(class, None))),
                PsnVerdict::AskAgain
            );
        }
    }

    #[test]
    fn only_lasting_error_codes_reject_a_record() {
        assert!(psn_error_is_permanent(
            "http://hl7.org/fhir/issue-type#invalid"
        ));
        assert!(psn_error_is_permanent("not-found"));
        assert!(!psn_error_is_permanent(
            "http://hl7.org/fhir/issue-type#transient"
        ));
        assert!(!psn_error_is_permanent("throttled"));
        assert!(!psn_error_is_permanent(
            "http://hl7.org/fhir/issue-type#exception"
        ));
    }
}
