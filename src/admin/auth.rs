//! The admin token: `Authorization: Bearer <token>` on every endpoint but `/healthz`.
//!
//! Tokens are compared in constant time, on their SHA-256 digests: comparing digests of equal
//! length leaks neither the token's content nor its length through timing. The token never
//! appears in a log line or a response.
//!
//! The status page (`/`) is opened by a browser, which cannot send a header on a plain
//! navigation. Its login form therefore POSTs the token to `/` ([`login`]): the token travels
//! in a request body, never in a URL, so it is in no browser history, no proxy's access log
//! and no `Referer`. (A link may carry it after `#`, which browsers never send; the login
//! page's script takes it from there. See [`super::page`] for how the page keeps it.)
//!
//! Wrong tokens are throttled per client address ([`Throttle`]): after
//! [`MAX_FAILURES`] within [`FAILURE_WINDOW`], every request from that address that needs the
//! token is answered 429 until the window has passed, the right token included, so guessing
//! costs a window per handful of guesses.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Form, Request, State};
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

/// Wrong tokens from one address within [`FAILURE_WINDOW`] before it is answered 429.
pub const MAX_FAILURES: u32 = 10;

/// How long an address's wrong tokens count against it.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked at most; a flood from more addresses than this starts the count afresh
/// (memory stays bounded; such an attacker has other means anyway).
const MAX_TRACKED: usize = 4096;

/// Wrong tokens per client address (IPv6 by /64: one host usually holds a whole /64).
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            IpAddr::V6(v6) => v6.to_canonical(),
            v4 => v4,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, Instant)>> {
        // A panic while holding this lock leaves a consistent map (plain inserts and removes).
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long `addr` must still wait, if it is throttled now.
    pub fn blocked(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let map = self.lock();
        let (count, since) = map.get(&Throttle::key(addr))?;
        let elapsed = now.saturating_duration_since(*since);
        (*count >= MAX_FAILURES && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Counts a wrong token from `addr`.
    pub fn failed(&self, addr: IpAddr, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, since)| now.saturating_duration_since(*since) < FAILURE_WINDOW);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let entry = map.entry(Throttle::key(addr)).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

/// The address a request came from (the unspecified address where the server does not say,
/// as in tests that serve the router without [`super::serve`]).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

/// Middleware on every route: records the client's address for the handlers.
pub async fn client_address(mut request: Request, next: Next) -> Response {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    request.extensions_mut().insert(ClientAddr(addr));
    next.run(request).await
}

/// An address that offered too many wrong tokens, and how long it must wait; answered 429.
#[derive(Clone, Copy, Debug)]
pub struct Throttled(pub Duration);

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        too_many(self.0)
    }
}

/// Judges what a request offers, throttled: `Err` for an address that offered too many wrong
/// tokens; a wrong token counts against its address.
pub fn check(
    state: &AdminState,
    client: ClientAddr,
    offered: Option<&[u8]>,
) -> Result<Verdict, Throttled> {
    let now = Instant::now();
    let expected = state.settings.token.as_ref();
    if expected.is_some()
        && let Some(wait) = state.throttle.blocked(client.0, now)
    {
        return Err(Throttled(wait));
    }
    let verdict = judge(expected, offered);
    if verdict == Verdict::Wrong {
        state.throttle.failed(client.0, now);
    }
    Ok(verdict)
}

fn too_many(wait: Duration) -> Response {
    let body = serde_json::json!({
        "error": "too many wrong admin tokens from this address; wait and try again with the right one",
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(value) = HeaderValue::from_str(&secs) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Middleware for the token-protected routes.
pub async fn require_token(
    State(state): State<Arc<AdminState>>,
    Extension(client): Extension<ClientAddr>,
    request: Request,
    next: Next,
) -> Response {
    match check(&state, client, bearer(request.headers())) {
        Ok(Verdict::Allowed) => next.run(request).await,
        Ok(verdict) => unauthorized(verdict),
        Err(throttled) => throttled.into_response(),
    }
}

/// The login form's field. Not `Debug`: it holds the token.
#[derive(serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /` (the login form): the status page for the right token, the form again otherwise.
pub async fn login(
    State(state): State<Arc<AdminState>>,
    Extension(client): Extension<ClientAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let offered = Some(form.token.trim().as_bytes()).filter(|t| !t.is_empty());
    match check(&state, client, offered) {
        Ok(verdict) => super::page::respond(state, verdict).await,
        Err(throttled) => throttled.into_response(),
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
    fn wrong_tokens_are_throttled_per_address_for_a_window() {
        let t = Throttle::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert_eq!(t.blocked(a, now), None);
            t.failed(a, now);
        }
        assert!(t.blocked(a, now).is_some());
        assert_eq!(t.blocked(b, now), None, "other addresses are not affected");
        assert_eq!(
            t.blocked(a, now + FAILURE_WINDOW),
            None,
            "the window passes"
        );
        // One host's IPv6 addresses share their /64.
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        for i in 0..MAX_FAILURES {
            t.failed(v6(&format!("2001:db8:1:2::{i:x}")), now);
        }
        assert!(t.blocked(v6("2001:db8:1:2::ffff"), now).is_some());
        assert_eq!(t.blocked(v6("2001:db8:1:3::1"), now), None);
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
