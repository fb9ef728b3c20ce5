//! The admin token: `Authorization: Bearer <token>` on every endpoint but `/healthz`.
//!
//! Tokens are compared in constant time, on their SHA-256 digests: comparing digests of equal
//! length leaks neither the token's content nor its length through timing. The token never
//! appears in a log line or a response.
//!
//! The status page (`/`) is opened by a browser, which cannot send a header on a plain
//! navigation, so it also accepts `?token=` (see [`super::page`] for how the page then keeps it).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use ttp_encode::Secret;

use super::AdminState;

/// Whether `offered` is the token, in constant time.
pub fn token_matches(expected: &Secret, offered: &[u8]) -> bool {
    let a = Sha256::digest(expected.expose());
    let b = Sha256::digest(offered);
    a.ct_eq(&b).into()
}

/// The token of an `Authorization: Bearer …` header (the scheme is case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// What a request offers, judged against the configured token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No token is configured, or the request carries the right one.
    Allowed,
    /// The request carries no token.
    Missing,
    /// The request carries a wrong token.
    Wrong,
}

pub fn judge(expected: Option<&Secret>, offered: Option<&[u8]>) -> Verdict {
    match (expected, offered) {
        (None, _) => Verdict::Allowed,
        (Some(_), None) => Verdict::Missing,
        (Some(t), Some(o)) if token_matches(t, o) => Verdict::Allowed,
        (Some(_), Some(_)) => Verdict::Wrong,
    }
}

/// Middleware for the token-protected routes.
pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    match judge(state.settings.token.as_ref(), bearer(request.headers())) {
        Verdict::Allowed => next.run(request).await,
        verdict => unauthorized(verdict),
    }
}

/// 401 with a body that says what to send (never the token itself).
pub fn unauthorized(verdict: Verdict) -> Response {
    let message = match verdict {
        Verdict::Wrong => "the admin token is wrong",
        _ => "this endpoint needs the admin token",
    };
    let body = serde_json::json!({
        "error": message,
        "hint": "send `Authorization: Bearer <token>` with the token from the file named by `[admin] token_file`",
    });
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ttp-agent\""),
    );
    response
}

/// Headers on every response: nothing here may be cached by a proxy or a browser (the page
/// shows live data that may be protected), sniffed into another type, or framed.
pub async fn common_headers(request: Request<Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_tokens_are_read_whatever_the_scheme_case() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bear")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn only_the_exact_token_is_allowed() {
        let t = Secret::new(b"s3cret-token".to_vec());
        assert_eq!(judge(Some(&t), Some(b"s3cret-token")), Verdict::Allowed);
        assert_eq!(judge(Some(&t), Some(b"s3cret-toke")), Verdict::Wrong);
        assert_eq!(judge(Some(&t), Some(b"s3cret-token2")), Verdict::Wrong);
        assert_eq!(judge(Some(&t), Some(b"")), Verdict::Wrong);
        assert_eq!(judge(Some(&t), None), Verdict::Missing);
        assert_eq!(judge(None, None), Verdict::Allowed);
    }
}
