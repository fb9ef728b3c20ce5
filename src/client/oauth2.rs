//! OAuth2 client credentials (RFC 6749 § 4.4), for gateways behind an authorisation server
//! such as Keycloak.
//!
//! The token is fetched when first needed, kept in memory until shortly before it expires
//! ([`refresh_at`]), and fetched again once when the gateway answers 401 with it (a revoked
//! token, a restarted authorisation server). It is never logged: it lives in a sensitive
//! header value, and `Debug` shows only whether one is cached.
//!
//! The client authenticates with HTTP Basic (`client_secret_basic`, which RFC 6749 § 2.3.1
//! requires every authorisation server to support; Keycloak's "client secret" authenticator
//! accepts it). The token request goes through its own HTTP client with the configured TLS
//! trust and timeouts but *without* the dispatcher's default headers, so the API key never
//! reaches the authorisation server.

use std::time::{Duration, Instant};

use reqwest::Url;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use ttp_encode::Secret;
use zeroize::Zeroizing;

use super::classify::{ErrorClass, Operation, TtpError, classify_transport, describe_transport};

/// The client-credentials settings (`[ttp.oauth2]`).
#[derive(Clone)]
pub struct OAuth2Settings {
    /// The token endpoint: `https`, or plain `http` to this machine.
    pub token_url: Url,
    pub client_id: String,
    pub client_secret: Secret,
    /// Space-separated scopes to ask for.
    pub scope: Option<String>,
}

impl std::fmt::Debug for OAuth2Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}

/// Lifetime assumed when the server does not say (`expires_in` is only RECOMMENDED).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// A token is replaced this long before it expires at most ...
pub const MAX_MARGIN: Duration = Duration::from_secs(60);

/// When a token obtained at `obtained` with `expires_in` should be replaced: a tenth of its
/// lifetime before it expires, at most [`MAX_MARGIN`] before, so a request never leaves with
/// a token that runs out on the way.
pub fn refresh_at(obtained: Instant, expires_in: Option<Duration>) -> Instant {
    let lifetime = expires_in.unwrap_or(DEFAULT_LIFETIME);
    let margin = (lifetime / 10).min(MAX_MARGIN);
    obtained + lifetime.saturating_sub(margin)
}

/// A token endpoint's successful answer.
pub struct Token {
    /// `Bearer <access_token>`, marked sensitive.
    pub header: HeaderValue,
    pub expires_in: Option<Duration>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("header", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// Why a token endpoint's answer is unusable. Never carries the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// 400/401 with `invalid_client` or `unauthorized_client`, or a plain 401/403: the client
    /// id or secret is wrong. A configuration problem.
    #[error(
        "the authorisation server refused the client credentials ({0}); check [ttp.oauth2] client_id and client_secret_file"
    )]
    Refused(String),
    /// Any other OAuth2 error (`invalid_scope`, `unsupported_grant_type`, …).
    #[error("the authorisation server refused the token request ({0}); check [ttp.oauth2]")]
    Rejected(String),
    #[error("the token endpoint's answer is not usable: {0}")]
    Malformed(&'static str),
}

#[derive(serde::Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
}

/// Reads a token endpoint's answer (status and body). Pure.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<Token, TokenError> {
    let parsed: Option<TokenBody> = serde_json::from_slice(body).ok();
    if !(200..300).contains(&status) {
        // RFC 6749 § 5.2: the error code is ASCII from a small set; keep it short anyway.
        let code: Option<String> = parsed
            .and_then(|b| b.error)
            .map(|e| e.chars().filter(char::is_ascii_graphic).take(64).collect());
        return Err(match (status, code) {
            (_, Some(code)) if code == "invalid_client" || code == "unauthorized_client" => {
                TokenError::Refused(format!("HTTP {status}, {code}"))
            }
            (401 | 403, code) => TokenError::Refused(format!(
                "HTTP {status}{}",
                code.map(|c| format!(", {c}")).unwrap_or_default()
            )),
            (_, Some(code)) => TokenError::Rejected(format!("HTTP {status}, {code}")),
            (_, None) => TokenError::Rejected(format!("HTTP {status}")),
        });
    }
    let body = parsed.ok_or(TokenError::Malformed("the body is not a JSON object"))?;
    let token = body
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::Malformed("it has no access_token"))?;
    if !body
        .token_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("bearer"))
    {
        return Err(TokenError::Malformed("its token_type is not Bearer"));
    }
    // Some servers send `expires_in` as a string; anything else unusable means "not said".
    let expires_in = match body.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .map(Duration::from_secs);
    let value = Zeroizing::new(format!("Bearer {token}"));
    let mut header = HeaderValue::from_str(&value)
        .map_err(|_| TokenError::Malformed("the access_token cannot travel in a header"))?;
    header.set_sensitive(true);
    Ok(Token { header, expires_in })
}

/// The `Authorization: Basic` value of `client_secret_basic`: id and secret are
/// form-urlencoded first (RFC 6749 § 2.3.1).
fn client_basic(client_id: &str, secret: &[u8]) -> Option<HeaderValue> {
    use base64::Engine as _;
    let secret = std::str::from_utf8(secret).ok()?;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = Zeroizing::new(format!("{}:{}", encode(client_id), encode(secret)));
    let mut value = Zeroizing::new(String::from("Basic "));
    base64::engine::general_purpose::STANDARD.encode_string(credentials.as_bytes(), &mut value);
    let mut header = HeaderValue::from_str(&value).ok()?;
    header.set_sensitive(true);
    Some(header)
}

struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
}

/// Fetches and caches the bearer token. Shared by all clones of a client.
pub(crate) struct TokenSource {
    http: reqwest::Client,
    url: Url,
    basic: HeaderValue,
    form: String,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(
        settings: &OAuth2Settings,
        http: reqwest::Client,
        url: Url,
    ) -> Result<TokenSource, &'static str> {
        let basic = client_basic(&settings.client_id, settings.client_secret.expose())
            .ok_or("the client secret is not valid UTF-8 text")?;
        let mut form = String::from("grant_type=client_credentials");
        if let Some(scope) = &settings.scope {
            form.push_str("&scope=");
            form.extend(url::form_urlencoded::byte_serialize(scope.as_bytes()));
        }
        Ok(TokenSource {
            http,
            url,
            basic,
            form,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    /// The `Authorization` value to send: the cached token, or a new one. Concurrent callers
    /// wait for one fetch instead of each fetching.
    pub(crate) async fn bearer(&self, op: Operation) -> Result<HeaderValue, TtpError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && Instant::now() < cached.refresh_at
        {
            return Ok(cached.header.clone());
        }
        let obtained = Instant::now();
        let token = self.fetch(op).await?;
        let header = token.header.clone();
        *cache = Some(Cached {
            header: token.header,
            refresh_at: refresh_at(obtained, token.expires_in),
        });
        Ok(header)
    }

    /// Forgets `used` after the gateway refused it, unless another request already replaced
    /// it.
    pub(crate) async fn invalidate(&self, used: &HeaderValue) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|c| c.header == *used) {
            *cache = None;
        }
    }

    async fn fetch(&self, op: Operation) -> Result<Token, TtpError> {
        let fail = |class, detail: String| {
            let mut err = TtpError::new(op, class, format!("OAuth2 token endpoint: {detail}"));
            err.from_token_endpoint = true;
            err
        };
        let response = self
            .http
            .post(self.url.clone())
            .header(AUTHORIZATION, self.basic.clone())
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(self.form.clone())
            .send()
            .await
            .map_err(|e| fail(classify_transport(&e), describe_transport(&e)))?;
        let status = response.status().as_u16();
        // A token answer is small; more than this is not one, and is not read further. The
        // body holds the token: it is wiped when dropped.
        const LIMIT: usize = 64 * 1024;
        let too_large = || {
            fail(
                ErrorClass::Protocol,
                "the answer is larger than 64 KiB".into(),
            )
        };
        if response.content_length().is_some_and(|n| n > LIMIT as u64) {
            return Err(too_large());
        }
        let mut response = response;
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| fail(ErrorClass::Transient, describe_transport(&e)))?
        {
            if body.len() + chunk.len() > LIMIT {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_token_response(status, &body).map_err(|e| {
            let class = match (&e, status) {
                (TokenError::Refused(_), _) => ErrorClass::Auth,
                // The authorisation server is down or overloaded: nothing was sent to the
                // dispatcher, so trying again later is safe.
                (_, 408 | 429 | 500..=599) => ErrorClass::Transient,
                (TokenError::Rejected(_), _) => ErrorClass::Auth,
                (TokenError::Malformed(_), _) => ErrorClass::Protocol,
            };
            fail(class, e.to_string()).with_status(status)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_shortly_before_they_expire() {
        let t0 = Instant::now();
        assert_eq!(
            refresh_at(t0, Some(Duration::from_secs(300))),
            t0 + Duration::from_secs(270)
        );
        assert_eq!(
            refresh_at(t0, Some(Duration::from_secs(3600))),
            t0 + Duration::from_secs(3540)
        );
        assert_eq!(refresh_at(t0, None), t0 + Duration::from_secs(270));
        assert_eq!(
            refresh_at(t0, Some(Duration::from_secs(1))),
            t0 + Duration::from_millis(900)
        );
        assert_eq!(refresh_at(t0, Some(Duration::ZERO)), t0);
    }

    #[test]
    fn a_token_answer_is_read_and_kept_out_of_debug_output() {
        let token = parse_token_response(
            200,
            br#"{"access_token":"eyJ.secret","token_type":"bearer","expires_in":"120","scope":"x"}"#,
        )
        .expect("usable");
        assert_eq!(token.header.as_bytes(), b"Bearer eyJ.secret");
        assert!(token.header.is_sensitive());
        assert_eq!(token.expires_in, Some(Duration::from_secs(120)));
        assert!(!format!("{token:?}").contains("secret"));

        let no_expiry =
            parse_token_response(200, br#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(no_expiry.expires_in, None);
    }

    #[test]
    fn refusals_and_bad_answers_are_told_apart() {
        let refused = parse_token_response(401, br#"{"error":"invalid_client"}"#).unwrap_err();
        assert!(matches!(refused, TokenError::Refused(_)), "{refused:?}");
        assert!(refused.to_string().contains("client_secret_file"));
        assert!(matches!(
            parse_token_response(400, br#"{"error":"unauthorized_client"}"#),
            Err(TokenError::Refused(_))
        ));
        assert!(matches!(
            parse_token_response(403, b"<html>"),
            Err(TokenError::Refused(_))
        ));
        assert!(matches!(
            parse_token_response(400, br#"{"error":"invalid_scope"}"#),
            Err(TokenError::Rejected(_))
        ));
        for body in [
            &b"not json"[..],
            br#"{"token_type":"Bearer"}"#,
            br#"{"access_token":"a","token_type":"mac"}"#,
            br#"{"access_token":"a\nb","token_type":"Bearer"}"#,
        ] {
            assert!(
                matches!(
                    parse_token_response(200, body),
                    Err(TokenError::Malformed(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn client_credentials_are_form_encoded_before_basic() {
        let value = client_basic("site a", b"p:w&").expect("encodable");
        use base64::Engine as _;
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"site+a:p%3Aw%26");
        assert!(value.is_sensitive());
    }
}
