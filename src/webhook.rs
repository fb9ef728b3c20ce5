//! Delivering JSON to a site's webhook: the one sender behind the alerts (`admin::alerts`) and
//! the pseudonym hand-over (`handover`). What they send, and what a failure means to them (a
//! queued alert is dropped after a while; a pseudonym is never skipped), stays with them; the
//! rest is here, once:
//!
//! * **One attempt** ([`Webhook::post`]): a POST of one JSON body (`Content-Type:
//!   application/json`), with `Authorization: Bearer <token>` when a token is configured (a
//!   sensitive header value). Redirects are not followed (the body and the token must not
//!   travel to wherever the receiver points), no `Referer`, the agent's user agent.
//! * **The answer** ([`classify`], pure): any 2xx is a delivery; anything else, or no answer, a
//!   [`Failure`] saying what happened without the URL, with the receiver's `Retry-After`.
//! * **The pause** before the next attempt ([`WebhookSettings::pause`]): the agent's one
//!   back-off (`client::backoff`: exponential, full jitter), `Retry-After` as a floor, and at
//!   least a second (or the cap, if that is shorter) so a failing receiver is not hammered.
//! * **The URL** often embeds a secret: it is shown only as scheme, host and port
//!   ([`WebhookUrl::redacted`]), in `Debug` output, logs and errors alike.
//! * **The delivery loop**: a round of deliveries, then [`wait`] until the round's next due
//!   time, a wake-up or shutdown.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use tokio::sync::Notify;
use ttp_encode::Secret;

use crate::agent::Shutdown;
use crate::client::RetryPolicy;
use crate::client::classify::{describe_transport, parse_retry_after};
use crate::config::WebhookUrl;

/// Where and how a webhook is called. `Debug` shows neither the URL's path nor the token
/// (both types redact themselves).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    pub url: WebhookUrl,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Per attempt: connect, send, answer.
    pub timeout: Duration,
    /// The pauses between attempts of a failing delivery (`max_attempts` is not used: how long
    /// to keep trying is `give_up_after`).
    pub backoff: RetryPolicy,
    /// A delivery still failing this long after it was queued is dropped; `None`: never.
    pub give_up_after: Option<Duration>,
}

impl WebhookSettings {
    /// The settings of a notification webhook (the alerts): 10 s per attempt, pauses from
    /// up to 10 s doubling to up to 1 h, dropped after 7 days (by which time the task's
    /// deadline has passed anyway), no token.
    pub fn new(url: WebhookUrl) -> WebhookSettings {
        WebhookSettings {
            url,
            token: None,
            timeout: Duration::from_secs(10),
            backoff: RetryPolicy {
                max_attempts: u32::MAX,
                base: Duration::from_secs(10),
                cap: Duration::from_secs(3600),
                max_retry_after: Duration::from_secs(3600),
            },
            give_up_after: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }

    /// The pause after `failures` failed attempts in a row (1-based), `retry_after` being what
    /// the receiver asked for.
    pub fn pause(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let floor = Duration::from_secs(1).min(self.backoff.cap);
        self.backoff
            .delay(failures, retry_after, &mut rand::rng())
            .max(floor)
    }

    /// Whether a delivery failing since it was queued `age` ago is given up on.
    pub fn gives_up(&self, age: Duration) -> bool {
        self.give_up_after.is_some_and(|limit| age >= limit)
    }
}

/// Why a [`Webhook`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook token is not a valid HTTP header value")]
    BadToken,
    #[error("cannot build the webhook's HTTP client: {0}")]
    Client(String),
}

/// One failed attempt: what happened (never the URL or the token), and the pause the receiver
/// asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// A webhook, ready to be called.
pub struct Webhook {
    settings: WebhookSettings,
    http: reqwest::Client,
}

impl Webhook {
    pub fn new(settings: WebhookSettings) -> Result<Webhook, WebhookError> {
        crate::client::tls::install_crypto_provider();
        let mut headers = HeaderMap::new();
        if let Some(token) = &settings.token {
            let text = token.expose_str().ok_or(WebhookError::BadToken)?;
            let mut value = HeaderValue::from_str(&format!("Bearer {text}"))
                .map_err(|_| WebhookError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("ttp-agent/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .build()
            .map_err(|e| WebhookError::Client(describe_transport(&e)))?;
        Ok(Webhook { settings, http })
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.settings
    }

    /// `https://hooks.example.org/<redacted>`, for logs.
    pub fn redacted_url(&self) -> String {
        self.settings.url.redacted()
    }

    /// One attempt to deliver `body` (JSON text).
    pub async fn post(&self, body: String) -> Result<(), Failure> {
        let response = self
            .http
            .post(self.settings.url.expose().clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| Failure {
                message: describe_transport(&e),
                retry_after: None,
            })?;
        classify(
            response.status(),
            response.headers().get(RETRY_AFTER),
            SystemTime::now(),
        )
    }
}

/// What an answer means: any 2xx is a delivery, anything else a failure (with the pause the
/// receiver asked for in `Retry-After`, seconds or an HTTP date relative to `now`). Pure.
pub fn classify(
    status: StatusCode,
    retry_after: Option<&HeaderValue>,
    now: SystemTime,
) -> Result<(), Failure> {
    if status.is_success() {
        return Ok(());
    }
    Err(Failure {
        message: format!("the receiver answered HTTP {}", status.as_u16()),
        retry_after: retry_after
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, now)),
    })
}

/// Between two rounds of a delivery loop: waits until `pause` has passed (`None`: until woken),
/// `wake` fires, or shutdown. Returns `false` on shutdown.
pub async fn wait(wake: &Notify, shutdown: &mut Shutdown, pause: Option<Duration>) -> bool {
    let sleep = async {
        match pause {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = shutdown.wait() => false,
        _ = wake.notified() => true,
        _ = sleep => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> WebhookSettings {
        let mut s = WebhookSettings::new(
            "https://hooks.example.org:8443/services/T0/s3cr3t"
                .parse()
                .unwrap(),
        );
        s.token = Some(Secret::from_text("tok-c0ffee"));
        s
    }

    #[test]
    fn debug_output_names_neither_the_secret_path_nor_the_token() {
        let shown = format!("{:?}", settings());
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("c0ffee"),
            "{shown}"
        );
        assert!(shown.contains("hooks.example.org:8443"), "{shown}");
    }

    #[test]
    fn two_hundreds_deliver_everything_else_fails_with_its_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        for ok in [200, 201, 202, 204] {
            assert_eq!(
                classify(StatusCode::from_u16(ok).unwrap(), None, now),
                Ok(())
            );
        }
        let after = HeaderValue::from_static("120");
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, Some(&after), now),
            Err(Failure {
                message: "the receiver answered HTTP 503".into(),
                retry_after: Some(Duration::from_secs(120)),
            })
        );
        for status in [301, 400, 404, 500] {
            let failure = classify(StatusCode::from_u16(status).unwrap(), None, now)
                .expect_err("not a delivery");
            assert_eq!(failure.retry_after, None);
            assert!(failure.message.contains(&status.to_string()));
        }
    }

    #[test]
    fn pauses_back_off_within_the_cap_with_a_floor_and_honour_retry_after() {
        let mut s = settings();
        s.backoff.base = Duration::from_secs(10);
        s.backoff.cap = Duration::from_secs(60);
        for failures in [1, 2, 5, 40, u32::MAX] {
            let pause = s.pause(failures, None);
            assert!(
                pause >= Duration::from_secs(1) && pause < Duration::from_secs(60),
                "{failures}: {pause:?}"
            );
        }
        // The receiver's word beats the schedule, up to `max_retry_after`.
        assert!(s.pause(1, Some(Duration::from_secs(600))) >= Duration::from_secs(600));
        assert_eq!(
            s.pause(1, Some(Duration::from_secs(86_400))),
            Duration::from_secs(3600)
        );
        // A cap below the one-second floor wins (tests run with short pauses).
        s.backoff.base = Duration::from_millis(5);
        s.backoff.cap = Duration::from_millis(40);
        assert!(s.pause(3, None) <= Duration::from_millis(40));
    }

    #[test]
    fn only_a_delivery_with_a_limit_is_given_up_on() {
        let mut s = settings();
        assert!(!s.gives_up(Duration::from_secs(6 * 86_400)));
        assert!(s.gives_up(Duration::from_secs(7 * 86_400)));
        s.give_up_after = None;
        assert!(!s.gives_up(Duration::MAX));
    }

    #[test]
    fn a_token_that_is_no_header_value_is_refused() {
        let mut s = settings();
        s.token = Some(Secret::from_text("line\nbreak"));
        assert!(matches!(Webhook::new(s), Err(WebhookError::BadToken)));
        assert!(Webhook::new(settings()).is_ok());
    }
}
