//! An OAuth2 authorisation server's token endpoint, as a Keycloak in front of a TTP-FHIR
//! gateway has it: the client-credentials grant (RFC 6749 § 4.4), client authentication by
//! HTTP Basic (`client_secret_basic`) or form fields (`client_secret_post`), bearer tokens
//! with a lifetime measured on the simulator's clock (so a test can let them expire by
//! advancing it), and revocation (to make a client meet a 401 with a token it believes
//! valid).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

/// Where the token endpoint lives (Keycloak's path layout, realm `ttp`).
pub const TOKEN_PATH: &str = "/realms/ttp/protocol/openid-connect/token";

/// The client an OAuth2-protected simulator accepts, and what its tokens are like.
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth2Client {
    pub client_id: String,
    pub client_secret: String,
    /// `expires_in` of every token issued.
    pub token_ttl: Duration,
    /// When set, a token request must ask for exactly this scope.
    pub scope: Option<String>,
}

impl std::fmt::Debug for OAuth2Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Client")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_ttl", &self.token_ttl)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Issued tokens and counters.
#[derive(Default)]
pub(crate) struct Tokens {
    issued: HashMap<String, DateTime<Utc>>,
    next: u64,
    pub(crate) requests: u64,
    pub(crate) refused: u64,
}

/// A token endpoint's answer: status and JSON body.
pub(crate) struct TokenAnswer {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Tokens {
    /// Whether `token` was issued here, is not revoked and has not expired at `now`.
    pub(crate) fn valid(&self, token: &str, now: DateTime<Utc>) -> bool {
        self.issued.get(token).is_some_and(|expiry| now < *expiry)
    }

    /// Forgets every issued token: clients holding one get 401 on their next request.
    pub(crate) fn revoke_all(&mut self) {
        self.issued.clear();
    }

    /// Handles one token request.
    pub(crate) fn request(
        &mut self,
        client: &OAuth2Client,
        headers: &HeaderMap,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> TokenAnswer {
        self.requests += 1;
        let error = |status, code: &str| TokenAnswer {
            status,
            body: json!({ "error": code }),
        };
        let form_ok = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim() == "application/x-www-form-urlencoded");
        if !form_ok {
            return error(400, "invalid_request");
        }
        let form = parse_form(body);
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if field("grant_type") != Some("client_credentials") {
            return error(400, "unsupported_grant_type");
        }
        let credentials = basic_credentials(headers).or_else(|| {
            Some((
                field("client_id")?.to_owned(),
                field("client_secret")?.to_owned(),
            ))
        });
        let authenticated = credentials.is_some_and(|(id, secret)| {
            same(id.as_bytes(), client.client_id.as_bytes())
                && same(secret.as_bytes(), client.client_secret.as_bytes())
        });
        if !authenticated {
            self.refused += 1;
            return error(401, "invalid_client");
        }
        if client.scope.is_some() && field("scope") != client.scope.as_deref() {
            return error(400, "invalid_scope");
        }
        self.next += 1;
        let token = format!("sim-token-{:04}-{:016x}", self.next, now.timestamp_micros());
        let ttl = chrono::Duration::from_std(client.token_ttl).unwrap_or(chrono::Duration::zero());
        self.issued.insert(token.clone(), now + ttl);
        TokenAnswer {
            status: 200,
            body: json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": client.token_ttl.as_secs(),
            }),
        }
    }
}

/// The bearer token of an `Authorization: Bearer …` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let (scheme, token) = value.to_str().ok()?.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// `client_secret_basic`: id and secret are form-urlencoded before the Basic encoding
/// (RFC 6749 § 2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((percent_decode(id)?, percent_decode(secret)?))
}

/// `application/x-www-form-urlencoded` pairs; undecodable pairs are skipped.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Vec::new();
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn client() -> OAuth2Client {
        OAuth2Client {
            client_id: "site a".into(),
            client_secret: "s3cr:et".into(),
            token_ttl: Duration::from_secs(60),
            scope: None,
        }
    }

    fn form_headers(basic: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        if let Some(basic) = basic {
            let value = format!("Basic {}", STANDARD.encode(basic));
            headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        }
        headers
    }

    #[test]
    fn issues_tokens_to_the_right_client_only_and_they_expire() {
        let mut tokens = Tokens::default();
        let now = Utc::now();
        let ok = tokens.request(
            &client(),
            &form_headers(Some("site+a:s3cr%3Aet")),
            b"grant_type=client_credentials",
            now,
        );
        assert_eq!(ok.status, 200);
        let token = ok.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(ok.body["expires_in"], 60);
        assert!(tokens.valid(&token, now));
        assert!(!tokens.valid(&token, now + chrono::Duration::seconds(61)));

        let post = tokens.request(
            &client(),
            &form_headers(None),
            b"grant_type=client_credentials&client_id=site%20a&client_secret=s3cr%3Aet",
            now,
        );
        assert_eq!(post.status, 200);

        let wrong = tokens.request(
            &client(),
            &form_headers(Some("site+a:wrong")),
            b"grant_type=client_credentials",
            now,
        );
        assert_eq!(
            (wrong.status, wrong.body["error"].as_str()),
            (401, Some("invalid_client"))
        );
        assert_eq!(tokens.refused, 1);
        let grant = tokens.request(&client(), &form_headers(Some("site+a:s3cr%3Aet")), b"", now);
        assert_eq!(grant.status, 400);

        tokens.revoke_all();
        assert!(!tokens.valid(&token, now));
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }
}
