//! Credentials: where the API key goes, and HTTP Basic auth.
//!
//! The dispatcher IG says only that "the API key travels in a request header"; THS's own
//! clients use the header `apiKey`, older gateways (and public clients still in use) expect a
//! `Parameters` entry `apikey` in the body, often together with HTTP Basic auth and a client
//! certificate. All of it is configurable ([`AuthSettings`]): the key goes into the header,
//! the body or both (`[ttp] api_key_in`), and Basic auth and mTLS combine with either. An
//! OAuth2 bearer token (`super::oauth2`) replaces Basic auth: both would need the
//! `Authorization` header.
//!
//! Everything is validated and encoded once, when the client is built: a key that cannot be
//! sent (a stray newline from a key file, say) is a configuration error at start-up rather than
//! a failure at the first poll. Header values are marked *sensitive*, which keeps them out of
//! `http`'s `Debug` output and out of HTTP/2 header compression tables.

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use ttp_encode::Secret;
use zeroize::Zeroizing;

use super::{AuthSettings, ClientConfigError};

/// Credentials in their on-the-wire form.
pub(crate) struct PreparedAuth {
    /// Headers sent with every request (API key header, `Authorization`).
    pub(crate) headers: HeaderMap,
    /// The API key for `Parameters` bodies, when it travels there.
    pub(crate) body_api_key: Option<Secret>,
}

impl std::fmt::Debug for PreparedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedAuth")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "body_api_key",
                &self.body_api_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

pub(crate) fn prepare(auth: &AuthSettings) -> Result<PreparedAuth, ClientConfigError> {
    let mut headers = HeaderMap::new();
    let mut body_api_key = None;

    if auth.basic.is_some() && auth.oauth2.is_some() {
        return Err(ClientConfigError::InvalidBasic {
            reason: "it cannot be combined with OAuth2: both need the Authorization header",
        });
    }
    match &auth.api_key {
        None if auth.api_key_in_body => {
            return Err(ClientConfigError::InvalidApiKey {
                reason: "auth.api_key_in_body is set but no API key is configured",
            });
        }
        None => {}
        Some(_) if !auth.api_key_in_header && !auth.api_key_in_body => {
            return Err(ClientConfigError::InvalidApiKey {
                reason: "it is to travel neither in the header nor in the body",
            });
        }
        Some(key) => {
            let text = key.expose_str().ok_or(ClientConfigError::InvalidApiKey {
                reason: "the key is not valid UTF-8",
            })?;
            if text.is_empty() {
                return Err(ClientConfigError::InvalidApiKey {
                    reason: "the key is empty",
                });
            }
            if text.trim() != text {
                return Err(ClientConfigError::InvalidApiKey {
                    reason: "the key starts or ends with whitespace (a trailing newline from a \
                             key file?)",
                });
            }
            if auth.api_key_in_body {
                body_api_key = Some(key.clone());
            }
            if auth.api_key_in_header {
                let name =
                    HeaderName::from_bytes(auth.api_key_header.as_bytes()).map_err(|_| {
                        ClientConfigError::InvalidHeaderName {
                            name: auth.api_key_header.clone(),
                        }
                    })?;
                let value = sensitive(text.as_bytes()).ok_or(ClientConfigError::InvalidApiKey {
                    reason: "the key contains characters not allowed in an HTTP header (control \
                             characters or line breaks)",
                })?;
                headers.insert(name, value);
            }
        }
    }

    if let Some((user, password)) = &auth.basic {
        if user.contains(':') {
            // RFC 7617: the user-id cannot contain a colon, the first colon ends it.
            return Err(ClientConfigError::InvalidBasic {
                reason: "the user name contains ':'",
            });
        }
        let mut credentials =
            Zeroizing::new(Vec::with_capacity(user.len() + 1 + password.expose().len()));
        credentials.extend_from_slice(user.as_bytes());
        credentials.push(b':');
        credentials.extend_from_slice(password.expose());
        let value = {
            use base64::Engine as _;
            let mut value = Zeroizing::new(String::from("Basic "));
            base64::engine::general_purpose::STANDARD.encode_string(&*credentials, &mut value);
            value
        };
        // Base64 output is always a valid header value.
        let header = sensitive(value.as_bytes()).ok_or(ClientConfigError::InvalidBasic {
            reason: "the credentials cannot be encoded",
        })?;
        headers.insert(AUTHORIZATION, header);
    }

    Ok(PreparedAuth {
        headers,
        body_api_key,
    })
}

fn sensitive(bytes: &[u8]) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_bytes(bytes).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(key: Option<&str>) -> AuthSettings {
        AuthSettings {
            api_key: key.map(Secret::from_text),
            ..AuthSettings::default()
        }
    }

    #[test]
    fn api_key_goes_into_the_configured_header_only() {
        let mut auth = settings(Some("k-123"));
        auth.api_key_header = "X-Api-Key".into();
        let prepared = prepare(&auth).expect("valid");
        let value = prepared.headers.get("x-api-key").expect("header set");
        assert_eq!(value.as_bytes(), b"k-123");
        assert!(value.is_sensitive());
        assert!(prepared.body_api_key.is_none());
        assert!(!format!("{prepared:?}").contains("k-123"));
    }

    #[test]
    fn api_key_goes_to_the_body_the_header_or_both_as_configured() {
        let mut auth = settings(Some("k-123"));
        auth.api_key_in_body = true;
        auth.api_key_in_header = false;
        let prepared = prepare(&auth).expect("valid");
        assert!(prepared.headers.is_empty());
        assert_eq!(
            prepared.body_api_key.as_ref().and_then(Secret::expose_str),
            Some("k-123")
        );

        auth.api_key_in_header = true;
        auth.basic = Some(("site".into(), Secret::from_text("pw")));
        let both = prepare(&auth).expect("valid");
        assert_eq!(
            both.headers.get("apikey").map(|v| v.as_bytes()),
            Some(&b"k-123"[..])
        );
        assert!(both.headers.contains_key(AUTHORIZATION));
        assert!(both.body_api_key.is_some());

        auth.api_key_in_header = false;
        auth.api_key_in_body = false;
        assert!(
            prepare(&auth).is_err(),
            "a key that goes nowhere is a mistake"
        );
    }

    #[test]
    fn basic_and_oauth2_are_not_combined() {
        let mut auth = settings(None);
        auth.basic = Some(("site".into(), Secret::from_text("pw")));
        auth.oauth2 = Some(super::super::OAuth2Settings {
            token_url: "https://kc.example.org/token".parse().unwrap(),
            client_id: "c".into(),
            client_secret: Secret::from_text("s"),
            scope: None,
        });
        let err = prepare(&auth).unwrap_err().to_string();
        assert!(err.contains("Authorization"), "{err}");
    }

    #[test]
    fn basic_auth_is_encoded_once_and_sensitive() {
        let mut auth = settings(None);
        auth.basic = Some(("site-a".into(), Secret::from_text("pa:ss")));
        let prepared = prepare(&auth).expect("valid");
        let value = prepared.headers.get(AUTHORIZATION).expect("header set");
        // base64("site-a:pa:ss")
        assert_eq!(value.as_bytes(), b"Basic c2l0ZS1hOnBhOnNz");
        assert!(value.is_sensitive());
    }

    #[test]
    fn unusable_credentials_are_rejected_without_echoing_them() {
        let cases = [
            (settings(Some("")), "empty"),
            (settings(Some("abc\n")), "whitespace"),
            (settings(Some("a\u{7}b")), "not allowed in an HTTP header"),
            (
                AuthSettings {
                    api_key_in_body: true,
                    ..settings(None)
                },
                "no API key",
            ),
            (
                AuthSettings {
                    api_key_header: "bad header".into(),
                    ..settings(Some("k"))
                },
                "\"bad header\"",
            ),
            (
                AuthSettings {
                    basic: Some(("a:b".into(), Secret::from_text("pw"))),
                    ..settings(None)
                },
                "contains ':'",
            ),
        ];
        for (auth, expected) in cases {
            let err = prepare(&auth).expect_err(expected).to_string();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
        let err = prepare(&AuthSettings {
            api_key: Some(Secret::new(vec![0xff, 0xfe])),
            ..AuthSettings::default()
        })
        .expect_err("non-UTF-8");
        assert!(err.to_string().contains("UTF-8"));
    }
}
