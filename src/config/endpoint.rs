//! The rules of a URL the agent sends to (the dispatcher, the token endpoint, the webhooks),
//! in one place: the configuration checks them when it is loaded (its errors name the key),
//! the client checks the same rules again for settings built in code, and the admin server's
//! `Host` check and listener check use the same idea of "this machine". Pure.

use std::net::IpAddr;

use reqwest::Url;

/// Why a URL is refused. The text never repeats the URL (it may hold a secret); callers add
/// the key or setting and the redacted URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("the scheme is not http or https")]
    Scheme,
    #[error("the URL has no host")]
    NoHost,
    #[error("the URL contains a user name or password")]
    Credentials,
    #[error("the URL has a query or fragment, to which operation names cannot be appended")]
    QueryOrFragment,
    #[error("the URL has a fragment (#...), which an endpoint must not have")]
    Fragment,
    #[error("the URL uses plain http:// to a host other than this machine")]
    PlainHttp,
}

/// What every URL the agent sends to must be: absolute `http` or `https` with a host, and no
/// user name or password (credentials in a URL end up in logs and error messages; the agent
/// has dedicated, file-based settings for them).
pub fn check_url(url: &Url) -> Result<(), UrlProblem> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(UrlProblem::Scheme);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlProblem::NoHost);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlProblem::Credentials);
    }
    Ok(())
}

/// Plain `http://` crosses no network only to this machine ([`is_loopback_url`]); elsewhere it
/// is allowed only where the operator said the whole path is trusted (`allow_insecure_http`).
/// What travels there (the API key, IDAT, a client secret, pseudonyms) would be readable.
pub fn check_plain_http(url: &Url, allow_insecure_http: bool) -> Result<(), UrlProblem> {
    if url.scheme() == "http" && !allow_insecure_http && !is_loopback_url(url) {
        return Err(UrlProblem::PlainHttp);
    }
    Ok(())
}

/// The dispatcher's base URL: a URL the agent sends to, which the operation names
/// (`/$requestTasks`, `/metadata`) are appended to, so no query or fragment.
pub fn check_dispatcher_url(url: &Url, allow_insecure_http: bool) -> Result<(), UrlProblem> {
    check_url(url)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(UrlProblem::QueryOrFragment);
    }
    check_plain_http(url, allow_insecure_http)
}

/// The OAuth2 token endpoint: a URL the agent sends to, with a query if the authorisation
/// server wants one but no fragment (RFC 6749 § 3.2); plain http only to this machine,
/// whatever `allow_insecure_http` says (the client secret travels there).
pub fn check_token_url(url: &Url) -> Result<(), UrlProblem> {
    check_url(url)?;
    if url.fragment().is_some() {
        return Err(UrlProblem::Fragment);
    }
    check_plain_http(url, false)
}

/// Whether a URL points at this machine: the agent's one loopback rule, for the dispatcher's
/// base URL, the token URL, both webhooks (plain HTTP there never crosses a network, so it is
/// allowed without `allow_insecure_http`: the simulator, tests, a local TLS-terminating proxy)
/// and the admin server's `Host` check. This machine is
///
/// * an address in 127.0.0.0/8 or `::1`, also written as an IPv4-mapped IPv6 address
///   (`[::ffff:127.0.0.1]`): that is the same IPv4 loopback address, and the kernel sends it
///   to `lo` ([`is_loopback_ip`]);
/// * the name `localhost`, in any case, also in its fully qualified form `localhost.` (the
///   trailing dot only says the name is absolute; RFC 6761 § 6.3 has resolvers answer
///   `localhost` with loopback).
///
/// Names *under* `localhost` (`a.localhost`) are not, although RFC 6761 reserves them too:
/// resolvers differ on them, and the rule must not depend on one.
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => is_loopback_ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => is_loopback_ip(ip.into()),
        Some(url::Host::Domain(name)) => name
            .strip_suffix('.')
            .unwrap_or(name)
            .eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The same rule for an address (the admin server's listener): 127.0.0.0/8 and `::1`, also
/// IPv4-mapped (`::ffff:127.0.0.1`).
pub fn is_loopback_ip(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).expect("a URL")
    }

    #[test]
    fn one_loopback_rule_for_every_url_and_address() {
        for here in [
            "http://127.0.0.1:8080/d",
            "http://127.0.0.2/",
            "http://127.8.9.10/d",
            "http://[::1]/",
            "http://[::1]:9/d",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:127.1.2.3]:80/d",
            "http://localhost/d",
            "http://LOCALHOST/d",
            "http://localhost./",
            "http://LocalHost.:1/d",
        ] {
            assert!(is_loopback_url(&url(here)), "{here}");
            assert_eq!(check_plain_http(&url(here), false), Ok(()), "{here}");
        }
        for elsewhere in [
            "http://10.1.2.3/d",
            "http://192.0.2.1/d",
            "http://[::2]/d",
            "http://[::ffff:10.0.0.1]/d",
            // IPv4-compatible (deprecated) is not IPv4-mapped: `::127.0.0.1` is not `lo`.
            "http://[::127.0.0.1]/d",
            "http://ttp.example.org/",
            "http://localhost.example.org/d",
            "http://a.localhost/d",
            "http://localhost../d",
        ] {
            assert!(!is_loopback_url(&url(elsewhere)), "{elsewhere}");
            assert_eq!(
                check_plain_http(&url(elsewhere), false),
                Err(UrlProblem::PlainHttp),
                "{elsewhere}"
            );
            assert_eq!(
                check_plain_http(&url(elsewhere), true),
                Ok(()),
                "{elsewhere}"
            );
        }
        for (ip, here) in [
            ("0.0.0.0", false),
            ("::", false),
            ("::ffff:10.0.0.5", false),
            ("127.0.0.2", true),
            ("::ffff:127.0.0.1", true),
        ] {
            assert_eq!(is_loopback_ip(ip.parse().unwrap()), here, "{ip}");
        }
    }

    #[test]
    fn each_kind_of_url_keeps_its_own_rules() {
        assert_eq!(check_url(&url("ftp://x/d")), Err(UrlProblem::Scheme));
        assert_eq!(
            check_url(&url("https://u:p@x/d")),
            Err(UrlProblem::Credentials)
        );
        assert_eq!(
            check_url(&url("https://u@x/d")),
            Err(UrlProblem::Credentials)
        );
        for appended_to in ["https://x/d?a=1", "https://x/d#f"] {
            assert_eq!(
                check_dispatcher_url(&url(appended_to), false),
                Err(UrlProblem::QueryOrFragment),
                "{appended_to}"
            );
        }
        // A token endpoint may have a query (RFC 6749 § 3.2); its client secret never travels
        // in clear to another host, whatever `allow_insecure_http` says for the dispatcher.
        assert_eq!(
            check_token_url(&url("https://idp.example/token?realm=a")),
            Ok(())
        );
        assert_eq!(
            check_token_url(&url("http://idp.example/token")),
            Err(UrlProblem::PlainHttp)
        );
        assert_eq!(check_token_url(&url("http://localhost./token")), Ok(()));
        assert_eq!(
            check_token_url(&url("https://idp.example/token#f")),
            Err(UrlProblem::Fragment)
        );
        assert_eq!(
            check_dispatcher_url(&url("http://ttp.example.org/d"), true),
            Ok(())
        );
    }
}
