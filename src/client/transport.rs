//! The HTTP layer: bytes in, bytes out, with limits, classification and retries.
//!
//! One call to [`Transport::execute`] is one logical request. It runs up to
//! `RetryPolicy::max_attempts` *attempts* for idempotent operations and exactly one for
//! `$providePatientData`. Each attempt:
//!
//! 1. waits for a concurrency permit and a rate slot ([`Limits`]);
//! 2. sends the request (`reqwest`, per-attempt timeout);
//! 3. on a non-2xx status reads at most [`ERROR_BODY_LIMIT`] bytes of the error body for the
//!    error's `detail` and classifies the status;
//! 4. on 2xx checks the `Content-Type` and streams the body chunk by chunk, giving up as soon
//!    as it would exceed `max_response_bytes` (never buffering an unbounded body);
//! 5. records the outcome in the metrics and the attempt's tracing span.
//!
//! Between attempts the permit is released, so a sleeping retry does not block others.

use std::time::{Instant, SystemTime};

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Response, Url};
use tracing::Instrument as _;

use super::backoff::RetryPolicy;
use super::classify::{
    ErrorClass, Operation, TtpError, classify_status, classify_transport, describe_transport,
    is_json_content_type, parse_retry_after,
};
use super::limit::Limits;
use super::metrics::Metrics;
use super::wire;

/// The media type of every request body and the one asked for in every response.
pub(crate) const FHIR_JSON: &str = "application/fhir+json";

/// How much of an error body is read for the error's `detail`; the rest is discarded.
pub(crate) const ERROR_BODY_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    /// Indexed by [`Operation::index`].
    pub(crate) urls: [Url; 4],
    pub(crate) limits: Limits,
    pub(crate) metrics: Metrics,
    pub(crate) retry: RetryPolicy,
    pub(crate) max_response_bytes: usize,
    /// OAuth2 bearer tokens, when `[ttp.oauth2]` is configured.
    pub(crate) oauth2: Option<super::oauth2::TokenSource>,
}

/// What a successful response must look like for an operation.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A JSON body: `Content-Type` checked, body returned.
    Json,
    /// Success is the status: the body is read and dropped, but it must be empty or JSON (see
    /// `Transport::accepted`). Used for `$providePatientData`, where a 2xx means the data was
    /// accepted.
    StatusOnly,
}

impl Transport {
    pub(crate) fn url(&self, op: Operation) -> &Url {
        &self.urls[op.index()]
    }

    /// Runs one logical request: `body` is POSTed (or, for `metadata`, a GET is sent), with
    /// retries for idempotent operations as described in the module documentation.
    pub(crate) async fn execute(
        &self,
        op: Operation,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, TtpError> {
        let max_attempts = if op.is_idempotent() {
            self.retry.max_attempts.max(1)
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            let err = match self.attempt(op, body.as_deref(), attempt).await {
                Ok(bytes) => return Ok(bytes),
                Err(err) => err,
            };
            if attempt >= max_attempts || !err.class.is_retryable() {
                return Err(err);
            }
            // `ThreadRng` is not `Send`: keep it out of the `await` below.
            let wait = self
                .retry
                .next_wait(attempt, err.retry_after, &mut rand::rng());
            let Some(wait) = wait else {
                return Err(err);
            };
            tracing::debug!(
                op = op.name(),
                attempt,
                class = err.class.as_str(),
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "retrying fTTP request"
            );
            self.metrics.record_retry(op);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn attempt(
        &self,
        op: Operation,
        body: Option<&[u8]>,
        attempt: u32,
    ) -> Result<Vec<u8>, TtpError> {
        let _permit = self.limits.acquire().await;
        let span = tracing::debug_span!(
            "ttp_request",
            op = op.name(),
            attempt,
            status = tracing::field::Empty,
            class = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let started = Instant::now();
        let result = self
            .send_authorised(op, body)
            .instrument(span.clone())
            .await;
        span.record(
            "duration_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        );
        match &result {
            Ok((status, _)) => self.metrics.record(op, Some(*status)),
            Err(err) => {
                self.metrics.record(op, err.status);
                span.record("class", err.class.as_str());
            }
        }
        span.in_scope(|| tracing::debug!("fTTP request finished"));
        result.map(|(_, body)| body)
    }

    /// [`Transport::send`] with the OAuth2 bearer token, when configured. A 401 to a token
    /// the agent held for valid (revoked, or the authorisation server restarted) costs one
    /// fresh token and one more try; a 401 is "not processed", so even `$providePatientData`
    /// may be sent again.
    async fn send_authorised(
        &self,
        op: Operation,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), TtpError> {
        let Some(tokens) = &self.oauth2 else {
            return self.send(op, body, None).await;
        };
        let bearer = tokens.bearer(op).await?;
        match self.send(op, body, Some(&bearer)).await {
            Err(err) if err.status == Some(401) => {
                tracing::debug!(
                    op = op.name(),
                    "the bearer token was refused; fetching a new one"
                );
                tokens.invalidate(&bearer).await;
                let fresh = tokens.bearer(op).await?;
                self.send(op, body, Some(&fresh)).await
            }
            other => other,
        }
    }

    /// One attempt, without limits or bookkeeping. `Ok` carries the (2xx) status and the body.
    async fn send(
        &self,
        op: Operation,
        body: Option<&[u8]>,
        bearer: Option<&HeaderValue>,
    ) -> Result<(u16, Vec<u8>), TtpError> {
        let url = self.url(op).clone();
        let mut request = match (op, body) {
            (Operation::Metadata, _) => self.http.get(url),
            (_, body) => self
                .http
                .post(url)
                .header(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))
                .body(body.unwrap_or_default().to_vec()),
        };
        if let Some(bearer) = bearer {
            request = request.header(reqwest::header::AUTHORIZATION, bearer.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| TtpError::new(op, classify_transport(&e), describe_transport(&e)))?;

        let status = response.status().as_u16();
        tracing::Span::current().record("status", status);
        let headers = response.headers();
        let retry_after = header_str(headers, RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, SystemTime::now()))
            .map(|d| self.retry.clamp_retry_after(d));
        let content_type = header_str(headers, CONTENT_TYPE).map(str::to_owned);

        if let Some(class) = classify_status(status) {
            let body = read_prefix(&mut response, ERROR_BODY_LIMIT).await;
            let detail = wire::summarize_error_body(content_type.as_deref(), &body);
            return Err(TtpError::new(op, class, detail)
                .with_status(status)
                .with_retry_after(retry_after));
        }

        let expect = match op {
            Operation::ProvidePatientData => Expect::StatusOnly,
            _ => Expect::Json,
        };
        if expect == Expect::StatusOnly {
            return self
                .accepted(op, status, content_type.as_deref(), &mut response)
                .await;
        }
        if !is_json_content_type(content_type.as_deref()) {
            let shown: String = content_type
                .as_deref()
                .unwrap_or("none")
                .chars()
                .take(100)
                .collect();
            return Err(TtpError::new(
                op,
                ErrorClass::Protocol,
                format!("unexpected Content-Type {shown:?}; expected {FHIR_JSON}"),
            )
            .with_status(status));
        }
        read_limited(&mut response, self.max_response_bytes)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => TtpError::new(
                    op,
                    ErrorClass::Protocol,
                    format!(
                        "response body exceeds the limit of {} bytes (max_response_bytes; \
                         [ttp] max_response_size in the configuration)",
                        self.max_response_bytes
                    ),
                ),
                // The server produced a 2xx, so it acted; we just did not hear all of it.
                ReadError::Transport(e) => {
                    TtpError::new(op, ErrorClass::InDoubt, describe_transport(&e))
                }
            })
            .map(|body| (status, body))
            .map_err(|e| e.with_status(status))
    }
}

impl Transport {
    /// Whether a 2xx answer to a status-only operation comes from the dispatcher. Only an
    /// empty body or a complete JSON one does. A complete body that is not JSON -- a proxy's
    /// HTML page, garbage -- proves nothing about whether the request reached the dispatcher:
    /// that is a [`ErrorClass::Protocol`] error. A body cut short (fewer bytes than its
    /// `Content-Length`, then the connection closed) proves nothing either: a proxy or a
    /// failing gateway can send the status line before anything was processed. That is
    /// [`ErrorClass::InDoubt`]. The agent settles both with the next listing for
    /// `$providePatientData` instead of assuming success.
    async fn accepted(
        &self,
        op: Operation,
        status: u16,
        content_type: Option<&str>,
        response: &mut Response,
    ) -> Result<(u16, Vec<u8>), TtpError> {
        let unusable = |why: String| {
            Err(TtpError::new(
                op,
                ErrorClass::Protocol,
                format!("HTTP {status} with {why}; it may not come from the dispatcher"),
            )
            .with_status(status))
        };
        match read_limited(response, self.max_response_bytes).await {
            Ok(body) if body.iter().all(u8::is_ascii_whitespace) => Ok((status, Vec::new())),
            Ok(body) => {
                if !is_json_content_type(content_type) {
                    let shown: String = content_type.unwrap_or("none").chars().take(100).collect();
                    return unusable(format!("a body of Content-Type {shown:?}"));
                }
                match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                    Ok(_) => Ok((status, Vec::new())),
                    Err(_) => unusable("a body that is not valid JSON".into()),
                }
            }
            Err(ReadError::TooLarge) => unusable(format!(
                "a body larger than the limit of {} bytes (max_response_bytes)",
                self.max_response_bytes
            )),
            Err(ReadError::Transport(e)) => Err(TtpError::new(
                op,
                ErrorClass::InDoubt,
                format!(
                    "HTTP {status} with a body cut short ({}); whether the dispatcher acted is open",
                    describe_transport(&e)
                ),
            )
            .with_status(status)),
        }
    }
}

fn header_str(headers: &HeaderMap, name: reqwest::header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the whole body, failing as soon as it would exceed `limit` bytes.
async fn read_limited(response: &mut Response, limit: usize) -> Result<Vec<u8>, ReadError> {
    let declared = response.content_length();
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    // Trust a declared length for the initial allocation only as far as the limit allows.
    let initial = declared.map_or(8 * 1024, |len| len as usize).min(limit);
    let mut body = Vec::with_capacity(initial);
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if chunk.len() > limit - body.len() {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads at most `limit` bytes of the body, best effort: an error body that is cut short or
/// too long still yields what arrived, because the status already says what happened.
async fn read_prefix(response: &mut Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - body.len();
        if chunk.len() >= room {
            body.extend_from_slice(&chunk[..room]);
            break;
        }
        body.extend_from_slice(&chunk);
    }
    body
}
