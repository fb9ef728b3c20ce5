//! What a simulator instance does: the dispatcher's rules, its authentication and its faults.
//!
//! Every random-looking decision the simulator makes (does this filter need clearing? which
//! elements does this `send_idat` ask for? does this request fail?) is a pure function of a
//! seed and the input, so a failing test run can be replayed exactly.

use std::fmt;
use std::time::Duration;

/// The element codes of the `IdatElements` CodeSystem the IG defines. The simulator only asks
/// for codes from this list, so a typo in a test's configuration is caught at start.
pub const KNOWN_ELEMENTS: [&str; 15] = [
    "given",
    "family",
    "prefix",
    "suffix",
    "birthdate",
    "gender",
    "address-line",
    "address-city",
    "address-postalcode",
    "birthplace",
    "maidenname",
    "degree",
    "language",
    "nationality",
    "maritalstatus",
];

/// Configuration of one simulated dispatcher. Start from [`SimConfig::default`] and change
/// what the test needs.
#[derive(Clone)]
pub struct SimConfig {
    /// The only study this dispatcher knows; any other → 400.
    pub study: String,
    /// The only site (target domain) this dispatcher serves; any other → 400.
    pub target: String,
    pub auth: SimAuth,
    /// Seed of every deterministic decision about filters and tasks.
    pub seed: u64,
    /// Fraction of new filters that need a clearing (decided from `seed` and the filter bytes).
    pub clearing: f64,
    /// Fraction of clearings that first ask the site to repeat its request (`repeat_request`).
    pub repeat_first: f64,
    /// Fraction of clearings whose `send_idat` names the record by a provisional pseudonym the
    /// site cannot know instead of by its Bloom filter. A correct agent reports such a task as
    /// unknown and it expires. Keep 0 unless a test is about exactly that.
    pub idat_by_pseudonym: f64,
    /// Element codes a `send_idat` may ask for; each task asks for a deterministic, non-empty
    /// subset of them (in this order).
    pub elements: Vec<String>,
    /// Lifetime of `send_idat` and `repeat_request` tasks.
    pub task_ttl: Duration,
    /// How many `$requestTasks` responses list a `dic_psn_available` task before it is dropped
    /// (the site never acknowledges it). At least 1.
    pub dic_listings: u32,
    pub faults: FaultConfig,
    /// Largest accepted request body in bytes; larger → 413.
    pub max_body: usize,
    /// Extra time added to every response (outside any lock).
    pub latency: Option<Duration>,
    /// `system` of every Identifier the simulator sends. Deployments differ; an agent must not
    /// depend on it.
    pub identifier_system: String,
    /// UTC offset, in seconds, of the `expires` instants the simulator writes.
    pub utc_offset_secs: i32,
    /// The IG says a site sends the requested elements "as far as known" (`true`, the
    /// default): a `$providePatientData` without some requested elements is accepted. `false`
    /// answers it 422, as a stricter gateway might.
    pub allow_missing_elements: bool,
    /// Status of the whole-request `OperationOutcome` a `$requestPsnFromBfWorkflow` for an
    /// unknown study or target gets: 404 (the IG's "unknown content"), 400 or 422.
    pub unknown_study_status: u16,
    /// When set, every `$requestPsnFromBfWorkflow` fails as a whole in this way and
    /// registers nothing (also switchable at run time: `SimHandle::set_psn_failure`).
    pub psn_failure: Option<PsnFailure>,
    /// The resend a `repeat_request` asked for ends the clearing at once: the answer carries
    /// the filter's pseudonym (`pseudonym-bf`) and no `send_idat` follows. Off: the resend
    /// raises a `send_idat` (the clearing goes on).
    pub repeat_answers_pseudonym: bool,
    /// Fraction of `send_idat` tasks that name the record by its Bloom filter *and* its
    /// pseudonym (the IG allows both); the pseudonym is the filter's own once it has one.
    pub idat_by_both: f64,
}

/// How a `$requestPsnFromBfWorkflow` fails as a whole (nothing is registered), in the shapes
/// real gateways use (see the reference's last section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PsnFailure {
    /// HTTP 200 with one `error` parameter whose only parts are `all` (valueBoolean true) and
    /// `error-code` (a Coding with `display`), the shape the EyeMatics DSF plugin checks for.
    All { code: String, display: String },
    /// HTTP 200 with one `error` entry naming no filter and no target, only `error-code`.
    ErrorWithoutFilter { code: String },
    /// This status (400..=599) with an OperationOutcome for the whole request.
    Status(u16),
    /// HTTP 200 with `pseudonym-bf` entries for filters other than those sent.
    ForeignFilters,
}

/// The operations whose answers [`crate::SimHandle::lose_answers`] can lose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SimOperation {
    RequestPsn,
    RequestTasks,
    ProvidePatientData,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            study: "mii".to_owned(),
            target: "dic_sim".to_owned(),
            auth: SimAuth::None,
            seed: 0,
            clearing: 0.25,
            repeat_first: 0.5,
            idat_by_pseudonym: 0.0,
            elements: ["given", "family", "birthdate", "gender"]
                .map(str::to_owned)
                .to_vec(),
            task_ttl: Duration::from_secs(7 * 24 * 3600),
            dic_listings: 2,
            faults: FaultConfig::none(),
            max_body: 16 * 1024 * 1024,
            latency: None,
            identifier_system: "https://ths-greifswald.de/gpas".to_owned(),
            utc_offset_secs: 2 * 3600,
            allow_missing_elements: true,
            idat_by_both: 0.0,
            unknown_study_status: 404,
            psn_failure: None,
            repeat_answers_pseudonym: false,
        }
    }
}

impl fmt::Debug for SimConfig {
    // Spelled out so that a new field cannot leak a secret through `{:?}` unnoticed: the
    // only secrets live in `auth`, whose own `Debug` redacts them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("study", &self.study)
            .field("target", &self.target)
            .field("auth", &self.auth)
            .field("seed", &self.seed)
            .field("clearing", &self.clearing)
            .field("repeat_first", &self.repeat_first)
            .field("idat_by_pseudonym", &self.idat_by_pseudonym)
            .field("elements", &self.elements)
            .field("task_ttl", &self.task_ttl)
            .field("dic_listings", &self.dic_listings)
            .field("faults", &self.faults)
            .field("max_body", &self.max_body)
            .field("latency", &self.latency)
            .field("identifier_system", &self.identifier_system)
            .field("utc_offset_secs", &self.utc_offset_secs)
            .field("allow_missing_elements", &self.allow_missing_elements)
            .field("unknown_study_status", &self.unknown_study_status)
            .field("psn_failure", &self.psn_failure)
            .field("repeat_answers_pseudonym", &self.repeat_answers_pseudonym)
            .field("idat_by_both", &self.idat_by_both)
            .finish()
    }
}

/// How clients must authenticate. `$metadata` is always public, like on most FHIR servers.
#[derive(Clone, PartialEq, Eq)]
pub enum SimAuth {
    /// Every request is accepted.
    None,
    /// An API key in a request header (THS's dispatcher uses the header `apiKey`).
    Header { name: String, value: String },
    /// The pre-2025-10 style: a body parameter `{"name":"apikey","valueString":"..."}`.
    BodyParam(String),
    /// HTTP Basic authentication.
    Basic { user: String, password: String },
    /// Any one of several methods is enough (public clients send a body key *and* Basic).
    AnyOf(Vec<SimAuth>),
    /// Every one of several methods is required (a gateway that wants the API key *and*
    /// Basic auth, or the key in the header *and* the body).
    AllOf(Vec<SimAuth>),
    /// An OAuth2 bearer token from the simulator's own token endpoint
    /// ([`crate::TOKEN_PATH`]), issued to this client with the client-credentials grant.
    Bearer(crate::OAuth2Client),
}

impl SimAuth {
    /// The conventional THS header: `apiKey: <key>`.
    pub fn api_key_header(key: impl Into<String>) -> Self {
        Self::Header {
            name: "apiKey".to_owned(),
            value: key.into(),
        }
    }

    pub(crate) fn accepts_body_param(&self) -> bool {
        match self {
            Self::BodyParam(_) => true,
            Self::AnyOf(options) | Self::AllOf(options) => {
                options.iter().any(Self::accepts_body_param)
            }
            Self::None | Self::Header { .. } | Self::Basic { .. } | Self::Bearer(_) => false,
        }
    }

    pub(crate) fn accepts_basic(&self) -> bool {
        match self {
            Self::Basic { .. } => true,
            Self::AnyOf(options) | Self::AllOf(options) => options.iter().any(Self::accepts_basic),
            Self::None | Self::Header { .. } | Self::BodyParam(_) | Self::Bearer(_) => false,
        }
    }

    /// The OAuth2 client this configuration issues tokens to, if any.
    pub(crate) fn oauth2_client(&self) -> Option<&crate::OAuth2Client> {
        match self {
            Self::Bearer(client) => Some(client),
            Self::AnyOf(options) | Self::AllOf(options) => {
                options.iter().find_map(Self::oauth2_client)
            }
            Self::None | Self::Header { .. } | Self::BodyParam(_) | Self::Basic { .. } => None,
        }
    }
}

impl fmt::Debug for SimAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Header { name, .. } => f
                .debug_struct("Header")
                .field("name", name)
                .field("value", &"<redacted>")
                .finish(),
            Self::BodyParam(_) => f.debug_tuple("BodyParam").field(&"<redacted>").finish(),
            Self::Basic { user, .. } => f
                .debug_struct("Basic")
                .field("user", user)
                .field("password", &"<redacted>")
                .finish(),
            Self::AnyOf(options) => f.debug_tuple("AnyOf").field(options).finish(),
            Self::AllOf(options) => f.debug_tuple("AllOf").field(options).finish(),
            Self::Bearer(client) => f.debug_tuple("Bearer").field(client).finish(),
        }
    }
}

/// Which requests fail, how, and whether before or after the simulator acted on them.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Probability that a request gets a fault, in `[0, 1]`.
    pub probability: f64,
    /// The kinds to choose from (uniformly, deterministically from `seed`).
    pub kinds: Vec<FaultKind>,
    /// Seed of the fault sequence; the n-th request after the faults were set always gets the
    /// same decision.
    pub seed: u64,
    pub when: FaultTiming,
}

impl FaultConfig {
    /// No faults.
    pub fn none() -> Self {
        Self {
            probability: 0.0,
            kinds: Vec::new(),
            seed: 0,
            when: FaultTiming::Before,
        }
    }

    /// Every request gets `kind`, at `when`.
    pub fn always(kind: FaultKind, when: FaultTiming) -> Self {
        Self {
            probability: 1.0,
            kinds: vec![kind],
            seed: 0,
            when,
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self::none()
    }
}

/// When a fault strikes relative to the simulator's own processing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultTiming {
    /// The request is not processed; the client gets the fault.
    Before,
    /// The request is processed (state changes, tasks complete), then the response is lost or
    /// garbled. Only kinds after which a client must assume "maybe processed" are applied
    /// after ([`FaultKind::can_follow_processing`]); the others still strike before.
    After,
    /// Each fault is `Before` or `After`, half and half, deterministically.
    Mixed,
}

/// What a faulty response looks like to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// This status (400..=599) with, deterministically, either an OperationOutcome or an HTML
    /// error page of the kind proxies send.
    Status(u16),
    /// 429 with a `Retry-After` header.
    Status429 { retry_after_secs: u64 },
    /// The response is held back this long (meant to exceed the client's timeout). Before
    /// processing the request is then answered with 504; after processing with the real answer.
    Delay(Duration),
    /// The connection is closed without any response.
    Drop,
    /// The status line, headers and half of the body are sent, then the connection is closed.
    Truncate,
    /// 200 with a body that is not JSON.
    Malformed,
    /// HTTP 200 whose `Content-Length` announces more bytes than are sent: half of a JSON body,
    /// then the connection closes. Before processing the body is a made-up one (the request
    /// was never processed); after processing it is the real answer, cut short.
    TruncatedOk,
}

impl FaultKind {
    /// Whether this fault may strike after the request was processed: only if a client seeing
    /// it cannot conclude that the request was *not* processed. A 503 or 429 says "not done";
    /// a 500/502/504, a timeout or a broken connection leave it open.
    pub fn can_follow_processing(&self) -> bool {
        match self {
            Self::Status(status) => matches!(status, 500 | 502 | 504),
            Self::Delay(_) | Self::Drop | Self::Truncate | Self::TruncatedOk => true,
            Self::Status429 { .. } | Self::Malformed => false,
        }
    }
}

/// A configuration the simulator refuses to start with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidConfig {
    /// The offending field, e.g. `faults.probability`.
    pub field: &'static str,
    pub reason: String,
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid simulator configuration: {}: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for InvalidConfig {}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        field,
        reason: reason.into(),
    }
}

fn check_fraction(field: &'static str, value: f64) -> Result<(), InvalidConfig> {
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{value} is not a fraction in [0, 1]"),
        ))
    }
}

impl SimConfig {
    /// Checks everything [`crate::start`] relies on.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.study.is_empty() {
            return Err(invalid("study", "must not be empty"));
        }
        if self.target.is_empty() {
            return Err(invalid("target", "must not be empty"));
        }
        check_fraction("clearing", self.clearing)?;
        check_fraction("repeat_first", self.repeat_first)?;
        check_fraction("idat_by_pseudonym", self.idat_by_pseudonym)?;
        check_fraction("idat_by_both", self.idat_by_both)?;
        if self.elements.is_empty() {
            return Err(invalid(
                "elements",
                "a send_idat task needs at least one element code",
            ));
        }
        if let Some(unknown) = self
            .elements
            .iter()
            .find(|code| !KNOWN_ELEMENTS.contains(&code.as_str()))
        {
            return Err(invalid(
                "elements",
                format!(
                    "`{unknown}` is not an IdatElements code (known: {})",
                    KNOWN_ELEMENTS.join(", ")
                ),
            ));
        }
        if self.task_ttl.is_zero() {
            return Err(invalid("task_ttl", "must be longer than zero"));
        }
        if chrono::TimeDelta::from_std(self.task_ttl).is_err() {
            return Err(invalid("task_ttl", "is too long to represent as a date"));
        }
        if self.dic_listings == 0 {
            return Err(invalid(
                "dic_listings",
                "must be at least 1, or no pseudonym from a clearing is ever delivered",
            ));
        }
        if self.max_body == 0 {
            return Err(invalid("max_body", "must be at least 1 byte"));
        }
        if chrono::FixedOffset::east_opt(self.utc_offset_secs).is_none() {
            return Err(invalid(
                "utc_offset_secs",
                format!("{} s is not a valid UTC offset", self.utc_offset_secs),
            ));
        }
        if ![400, 404, 422].contains(&self.unknown_study_status) {
            return Err(invalid(
                "unknown_study_status",
                format!(
                    "{} is not one of the statuses the IG allows for it (400, 404, 422)",
                    self.unknown_study_status
                ),
            ));
        }
        if let Some(failure) = &self.psn_failure {
            failure.validate()?;
        }
        self.auth.validate()?;
        self.faults.validate()
    }
}

impl PsnFailure {
    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        match self {
            Self::Status(status) if !(400..=599).contains(status) => Err(invalid(
                "psn_failure",
                format!("Status({status}) is not an error status (400..=599)"),
            )),
            Self::All { code, .. } | Self::ErrorWithoutFilter { code } if code.is_empty() => {
                Err(invalid("psn_failure", "the error code is empty"))
            }
            _ => Ok(()),
        }
    }
}

impl SimAuth {
    fn validate(&self) -> Result<(), InvalidConfig> {
        match self {
            Self::None => Ok(()),
            Self::Header { name, value } => {
                if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(invalid(
                        "auth",
                        format!("`{name}` is not a valid HTTP header name"),
                    ));
                }
                if value.is_empty() {
                    return Err(invalid("auth", "the header's API key is empty"));
                }
                Ok(())
            }
            Self::BodyParam(key) if key.is_empty() => {
                Err(invalid("auth", "the body parameter's API key is empty"))
            }
            Self::BodyParam(_) => Ok(()),
            Self::Basic { user, password } => {
                if user.is_empty() || user.contains(':') {
                    return Err(invalid(
                        "auth",
                        "the Basic user must be non-empty and contain no ':'",
                    ));
                }
                if password.is_empty() {
                    return Err(invalid("auth", "the Basic password is empty"));
                }
                Ok(())
            }
            Self::AnyOf(options) => {
                if options.is_empty() {
                    return Err(invalid(
                        "auth",
                        "AnyOf with no options would refuse every request",
                    ));
                }
                options.iter().try_for_each(Self::validate)
            }
            Self::AllOf(options) => {
                if options.is_empty() {
                    return Err(invalid(
                        "auth",
                        "AllOf with no options would accept every request; use None",
                    ));
                }
                options.iter().try_for_each(Self::validate)
            }
            Self::Bearer(client) => {
                if client.client_id.is_empty() || client.client_secret.is_empty() {
                    return Err(invalid(
                        "auth",
                        "the OAuth2 client id and secret must not be empty",
                    ));
                }
                Ok(())
            }
        }
    }
}

impl FaultConfig {
    pub(crate) fn validate(&self) -> Result<(), InvalidConfig> {
        check_fraction("faults.probability", self.probability)?;
        if self.probability > 0.0 && self.kinds.is_empty() {
            return Err(invalid(
                "faults.kinds",
                "a fault probability above 0 needs at least one fault kind",
            ));
        }
        for kind in &self.kinds {
            match kind {
                FaultKind::Status(status) if !(400..=599).contains(status) => {
                    return Err(invalid(
                        "faults.kinds",
                        format!("Status({status}) is not an error status (400..=599)"),
                    ));
                }
                FaultKind::Delay(delay) if delay.is_zero() => {
                    return Err(invalid("faults.kinds", "Delay must be longer than zero"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(SimConfig::default().validate(), Ok(()));
    }

    #[test]
    fn rejects_what_the_simulator_cannot_run_with() {
        let cases: Vec<(&str, SimConfig)> = vec![
            (
                "clearing",
                SimConfig {
                    clearing: 1.5,
                    ..SimConfig::default()
                },
            ),
            (
                "clearing",
                SimConfig {
                    clearing: f64::NAN,
                    ..SimConfig::default()
                },
            ),
            (
                "elements",
                SimConfig {
                    elements: vec![],
                    ..SimConfig::default()
                },
            ),
            (
                "elements",
                SimConfig {
                    elements: vec!["firstname".into()],
                    ..SimConfig::default()
                },
            ),
            (
                "dic_listings",
                SimConfig {
                    dic_listings: 0,
                    ..SimConfig::default()
                },
            ),
            (
                "auth",
                SimConfig {
                    auth: SimAuth::Header {
                        name: "bad header".into(),
                        value: "k".into(),
                    },
                    ..SimConfig::default()
                },
            ),
            (
                "auth",
                SimConfig {
                    auth: SimAuth::AnyOf(vec![]),
                    ..SimConfig::default()
                },
            ),
            (
                "faults.kinds",
                SimConfig {
                    faults: FaultConfig {
                        probability: 0.5,
                        ..FaultConfig::none()
                    },
                    ..SimConfig::default()
                },
            ),
            (
                "faults.kinds",
                SimConfig {
                    faults: FaultConfig::always(FaultKind::Status(200), FaultTiming::Before),
                    ..SimConfig::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            let err = cfg.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = SimConfig {
            auth: SimAuth::AnyOf(vec![
                SimAuth::api_key_header("header-secret"),
                SimAuth::BodyParam("body-secret".into()),
                SimAuth::Basic {
                    user: "site".into(),
                    password: "basic-secret".into(),
                },
            ]),
            ..SimConfig::default()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(
            shown.contains("apiKey") && shown.contains("site"),
            "{shown}"
        );
    }

    #[test]
    fn only_ambiguous_faults_may_follow_processing() {
        for status in [500, 502, 504] {
            assert!(FaultKind::Status(status).can_follow_processing());
        }
        for status in [400, 401, 403, 404, 503] {
            assert!(!FaultKind::Status(status).can_follow_processing());
        }
        assert!(
            !FaultKind::Status429 {
                retry_after_secs: 1
            }
            .can_follow_processing()
        );
        assert!(!FaultKind::Malformed.can_follow_processing());
        assert!(FaultKind::Drop.can_follow_processing());
        assert!(FaultKind::Truncate.can_follow_processing());
        assert!(FaultKind::Delay(Duration::from_secs(1)).can_follow_processing());
    }
}
