//! Authentication checks, split by where the credential travels: headers can be checked before
//! the body is parsed, the legacy `apikey` body parameter only after.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;

use crate::config::SimAuth;

/// Whether a request's credentials satisfy `auth`. `body_key` is the body's `apikey`
/// parameter (`None` when the body was not read or has none); `bearer_ok` says whether a
/// bearer token is one the token endpoint issued and that is still valid.
pub(crate) fn satisfied(
    auth: &SimAuth,
    headers: &HeaderMap,
    body_key: Option<&str>,
    bearer_ok: &dyn Fn(&str) -> bool,
) -> bool {
    match auth {
        SimAuth::None => true,
        SimAuth::Header { name, value } => headers
            .get_all(name.as_str())
            .iter()
            .any(|sent| same(sent.as_bytes(), value.as_bytes())),
        SimAuth::Basic { user, password } => headers
            .get_all(AUTHORIZATION)
            .iter()
            .any(|sent| basic_matches(sent.as_bytes(), user, password)),
        SimAuth::BodyParam(key) => {
            body_key.is_some_and(|sent| same(sent.as_bytes(), key.as_bytes()))
        }
        SimAuth::Bearer(_) => crate::oauth::bearer(headers).is_some_and(bearer_ok),
        SimAuth::AnyOf(options) => options
            .iter()
            .any(|option| satisfied(option, headers, body_key, bearer_ok)),
        SimAuth::AllOf(options) => options
            .iter()
            .all(|option| satisfied(option, headers, body_key, bearer_ok)),
    }
}

fn basic_matches(header: &[u8], user: &str, password: &str) -> bool {
    let Some((scheme, encoded)) = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.trim().split_once(' '))
    else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let mut expected = Vec::with_capacity(user.len() + 1 + password.len());
    expected.extend_from_slice(user.as_bytes());
    expected.push(b':');
    expected.extend_from_slice(password.as_bytes());
    same(&decoded, &expected)
}

/// Comparison whose time does not depend on where the inputs differ, so the simulator does
/// not teach anyone a timing side channel by example. (Lengths may leak; keys are not
/// secret in length.)
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    fn no_bearer(_: &str) -> bool {
        false
    }

    fn headers_ok(auth: &SimAuth, headers: &HeaderMap) -> bool {
        satisfied(auth, headers, None, &no_bearer)
    }

    #[test]
    fn header_key_must_match_exactly() {
        let auth = SimAuth::api_key_header("k-123");
        assert!(
            headers_ok(&auth, &headers(&[("apikey", "k-123")])),
            "names are case-insensitive"
        );
        assert!(!headers_ok(&auth, &headers(&[("apiKey", "k-12")])));
        assert!(!headers_ok(&auth, &headers(&[("x-api-key", "k-123")])));
        assert!(!headers_ok(&auth, &headers(&[])));
    }

    #[test]
    fn basic_credentials_are_decoded_and_compared() {
        let auth = SimAuth::Basic {
            user: "site".into(),
            password: "pw:with:colons".into(),
        };
        let good = format!("Basic {}", STANDARD.encode("site:pw:with:colons"));
        let lower = format!("basic {}", STANDARD.encode("site:pw:with:colons"));
        let bad = format!("Basic {}", STANDARD.encode("site:pw"));
        assert!(headers_ok(&auth, &headers(&[("authorization", &good)])));
        assert!(headers_ok(&auth, &headers(&[("authorization", &lower)])));
        assert!(!headers_ok(&auth, &headers(&[("authorization", &bad)])));
        assert!(!headers_ok(
            &auth,
            &headers(&[("authorization", "Bearer abc")])
        ));
        assert!(!headers_ok(
            &auth,
            &headers(&[("authorization", "Basic !!!")])
        ));
    }

    #[test]
    fn any_of_accepts_each_option_and_all_of_needs_every_one() {
        let any = SimAuth::AnyOf(vec![
            SimAuth::BodyParam("body-key".into()),
            SimAuth::api_key_header("header-key"),
        ]);
        let header = headers(&[("apiKey", "header-key")]);
        assert!(headers_ok(&any, &header));
        assert!(!headers_ok(&any, &headers(&[("apiKey", "body-key")])));
        assert!(satisfied(
            &any,
            &HeaderMap::new(),
            Some("body-key"),
            &no_bearer
        ));
        assert!(!satisfied(
            &any,
            &HeaderMap::new(),
            Some("header-key"),
            &no_bearer
        ));
        assert!(any.accepts_body_param() && !any.accepts_basic());

        let all = SimAuth::AllOf(vec![
            SimAuth::BodyParam("body-key".into()),
            SimAuth::api_key_header("header-key"),
        ]);
        assert!(satisfied(&all, &header, Some("body-key"), &no_bearer));
        assert!(!satisfied(&all, &header, None, &no_bearer));
        assert!(!satisfied(
            &all,
            &HeaderMap::new(),
            Some("body-key"),
            &no_bearer
        ));
    }

    #[test]
    fn bearer_tokens_are_checked_by_the_token_store() {
        let auth = SimAuth::Bearer(crate::OAuth2Client {
            client_id: "c".into(),
            client_secret: "s".into(),
            token_ttl: std::time::Duration::from_secs(60),
            scope: None,
        });
        let valid = |token: &str| token == "good";
        assert!(satisfied(
            &auth,
            &headers(&[("authorization", "Bearer good")]),
            None,
            &valid
        ));
        assert!(!satisfied(
            &auth,
            &headers(&[("authorization", "Bearer bad")]),
            None,
            &valid
        ));
        assert!(!satisfied(&auth, &headers(&[]), None, &valid));
    }
}
