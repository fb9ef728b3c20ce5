//! Turning one raw value (a TOML value from the file, or the text of an environment variable)
//! into a typed setting.
//!
//! The file is typed (TOML has integers and booleans), the environment is not. Each type says
//! how to read both: `batch_size = 50` and `TTP_AGENT__SUBMIT__BATCH_SIZE=50` both give 50,
//! while a string key keeps an environment value exactly as written. Nothing guesses a type from
//! the look of a value, so `0 */15 * * * *` or a URL can never be mistaken for a list or a
//! number.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use chrono_tz::Tz;
use reqwest::Url;

use super::UrlProblem;

/// A value type that can appear in the configuration.
pub(crate) trait Setting: Sized {
    /// What a valid value looks like, for "expected …" in error messages.
    const EXPECTED: &'static str;

    /// Reads an environment variable's text, or a TOML string.
    fn parse_text(text: &str) -> Result<Self, String>;

    /// Reads a TOML value. Only strings by default; numbers and booleans override this.
    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) => Self::parse_text(text),
            other => Err(found(other)),
        }
    }

    /// The value as `redacted_summary` shows it: a TOML literal that reads back to the same
    /// value. Types that may hold a secret show a redacted form.
    fn display(&self) -> String;
}

/// "found an integer" and so on, for a TOML value of the wrong type.
fn found(value: &toml::Value) -> String {
    let what = match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a floating-point number",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    };
    format!("found {what}")
}

/// A TOML string literal, escaped as TOML requires.
pub(crate) fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

impl Setting for String {
    const EXPECTED: &'static str = "a string";

    fn parse_text(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }

    fn display(&self) -> String {
        quoted(self)
    }
}

impl Setting for bool {
    const EXPECTED: &'static str = "true or false";

    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            t if t.eq_ignore_ascii_case("true") => Ok(true),
            t if t.eq_ignore_ascii_case("false") => Ok(false),
            _ => Err(format!("{} is not a boolean", quoted(text))),
        }
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Boolean(b) => Ok(*b),
            // A quoted "true" in the file is almost certainly meant as the boolean; accepting
            // it matches how the same text reads from the environment.
            toml::Value::String(text) => Self::parse_text(text),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        self.to_string()
    }
}

impl Setting for u64 {
    const EXPECTED: &'static str = "a whole number";

    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{} is not a whole number", quoted(text)))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("{i} is negative")),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        self.to_string()
    }
}

impl Setting for f64 {
    const EXPECTED: &'static str = "a number";

    fn parse_text(text: &str) -> Result<Self, String> {
        let number: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{} is not a number", quoted(text)))?;
        finite(number)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Float(f) => finite(*f),
            // `rate_limit_per_second = 5` is as clear as `5.0`.
            toml::Value::Integer(i) => Ok(*i as f64),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        // `{:?}` keeps a decimal point (`5.0`), so the literal reads back as a float.
        format!("{self:?}")
    }
}

fn finite(number: f64) -> Result<f64, String> {
    if number.is_finite() {
        Ok(number)
    } else {
        Err(format!("{number} is not a finite number"))
    }
}

impl Setting for Duration {
    const EXPECTED: &'static str =
        "a duration with a unit, such as \"500ms\", \"30s\", \"15m\", \"1h\" or \"90d\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text.trim())
            .map_err(|e| format!("{} is not a duration ({e})", quoted(text)))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::String(text) => Self::parse_text(text),
            toml::Value::Integer(i) => Err(format!(
                "found the bare number {i}, which has no unit; write it as a string with a \
                 unit, e.g. \"{i}s\""
            )),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        quoted(&format_duration(*self))
    }
}

/// A positive duration the agent adds to or subtracts from instants (a retention, the
/// recheck period), at most [`Span::MAX`]: converted once, when the configuration is loaded,
/// so no later conversion can fail (or fall back to a default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    std: Duration,
    delta: chrono::TimeDelta,
}

impl Span {
    /// Far beyond any sensible setting, and far inside what an instant can be moved by.
    pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// `None` when `d` is longer than [`Span::MAX`].
    pub fn new(d: Duration) -> Option<Span> {
        if d > Span::MAX {
            return None;
        }
        let delta = chrono::TimeDelta::from_std(d).ok()?;
        Some(Span { std: d, delta })
    }

    pub fn std(self) -> Duration {
        self.std
    }

    /// For date arithmetic.
    pub fn delta(self) -> chrono::TimeDelta {
        self.delta
    }
}

impl PartialEq<Duration> for Span {
    fn eq(&self, other: &Duration) -> bool {
        self.std == *other
    }
}

/// The shortest exact humantime spelling: `90d`, `1h`, `90s`, `1500ms`. (humantime's own
/// formatter uses months and years of fractional length, which would read back differently.)
pub(crate) fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}ns", d.as_nanos())
        };
    }
    let secs = d.as_secs();
    match secs {
        0 => "0s".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// A size in bytes: a plain number of bytes, or a number with a binary suffix
/// (`B`, `KiB`, `MiB`, `GiB`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const KIB: u64 = 1024;
    pub const MIB: u64 = 1024 * 1024;
    pub const GIB: u64 = 1024 * 1024 * 1024;

    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            0 => write!(f, "0B"),
            n if n % Self::GIB == 0 => write!(f, "{}GiB", n / Self::GIB),
            n if n % Self::MIB == 0 => write!(f, "{}MiB", n / Self::MIB),
            n if n % Self::KIB == 0 => write!(f, "{}KiB", n / Self::KIB),
            n => write!(f, "{n}B"),
        }
    }
}

impl Setting for ByteSize {
    const EXPECTED: &'static str =
        "a size in bytes, or with a binary suffix such as \"512KiB\" or \"16MiB\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("{} does not start with a whole number", quoted(text)))?;
        let multiplier = match unit.trim_start() {
            "" | "B" => 1,
            "KiB" => Self::KIB,
            "MiB" => Self::MIB,
            "GiB" => Self::GIB,
            "K" | "KB" | "kB" | "kb" | "M" | "MB" | "mb" | "G" | "GB" | "gb" => {
                return Err(format!(
                    "the suffix in {} is ambiguous (decimal or binary); use KiB, MiB or GiB",
                    quoted(text)
                ));
            }
            other => return Err(format!("unknown size unit {}", quoted(other))),
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("{} is too large", quoted(text)))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Integer(i) => u64::try_from(*i)
                .map(ByteSize)
                .map_err(|_| format!("{i} is negative")),
            toml::Value::String(text) => Self::parse_text(text),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        quoted(&self.to_string())
    }
}

impl Setting for PathBuf {
    const EXPECTED: &'static str = "a file system path";

    fn parse_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            Err("the path is empty".to_owned())
        } else {
            Ok(PathBuf::from(text))
        }
    }

    fn display(&self) -> String {
        quoted(&self.to_string_lossy())
    }
}

impl Setting for Url {
    const EXPECTED: &'static str = "an absolute http:// or https:// URL";

    fn parse_text(text: &str) -> Result<Self, String> {
        let url =
            Url::parse(text.trim()).map_err(|e| format!("{} is not a URL ({e})", quoted(text)))?;
        match super::check_url(&url) {
            Ok(()) => Ok(url),
            Err(UrlProblem::Scheme) => Err(format!(
                "the scheme `{}` is not http or https",
                url.scheme()
            )),
            Err(UrlProblem::Credentials) => Err(
                "the URL contains a user name or password; put credentials in \
                 `[ttp] basic_user` and `[ttp] basic_password_file` instead"
                    .to_owned(),
            ),
            Err(problem) => Err(problem.to_string()),
        }
    }

    fn display(&self) -> String {
        quoted(self.as_str())
    }
}

/// A webhook URL. Chat webhooks (Slack, Teams, Mattermost) carry their credential in the path
/// or query, so `Debug` and the summary show only scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

impl WebhookUrl {
    /// The full URL, for the code that calls it. Never log it.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// `https://hooks.example.org/<redacted>`.
    pub fn redacted(&self) -> String {
        let host = self.0.host_str().unwrap_or_default();
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}/<redacted>", self.0.scheme()),
            None => format!("{}://{host}/<redacted>", self.0.scheme()),
        }
    }
}

/// The rules of `[admin] webhook_url` and `[handover] webhook_url`, for URLs that come from
/// elsewhere (tests, a receiver set up in code).
impl std::str::FromStr for WebhookUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<WebhookUrl, String> {
        WebhookUrl::parse_text(text)
    }
}

impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebhookUrl({})", self.redacted())
    }
}

impl Setting for WebhookUrl {
    const EXPECTED: &'static str = Url::EXPECTED;

    fn parse_text(text: &str) -> Result<Self, String> {
        // The error of a URL that does not parse quotes the text, which may hold the token.
        Url::parse_text(text)
            .map(WebhookUrl)
            .map_err(|_| "the value is not an absolute http:// or https:// URL without a user name or password".to_owned())
    }

    fn display(&self) -> String {
        quoted(&self.redacted())
    }
}

/// `[admin] allowed_hosts`: host names (or addresses) the admin server answers to, besides
/// this machine's loopback names. A TOML array of strings; in the environment, a
/// comma-separated list. Kept in lower case, without ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostList(pub Vec<String>);

impl HostList {
    fn host(text: &str) -> Result<String, String> {
        let host = text.trim().to_ascii_lowercase();
        let valid = !host.is_empty()
            && host.len() <= 253
            && (host.parse::<std::net::IpAddr>().is_ok()
                || host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        if valid {
            Ok(host)
        } else {
            Err(format!(
                "{} is not a host name or address (no port, no scheme)",
                quoted(text)
            ))
        }
    }
}

impl Setting for HostList {
    const EXPECTED: &'static str =
        "a list of host names or addresses, such as [\"ttp-agent.example.org\"]";

    fn parse_text(text: &str) -> Result<Self, String> {
        text.split(',')
            .filter(|h| !h.trim().is_empty())
            .map(HostList::host)
            .collect::<Result<_, _>>()
            .map(HostList)
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    toml::Value::String(text) => HostList::host(text),
                    other => Err(found(other)),
                })
                .collect::<Result<_, _>>()
                .map(HostList),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        let items: Vec<String> = self.0.iter().map(|h| quoted(h)).collect();
        format!("[{}]", items.join(", "))
    }
}

impl Setting for SocketAddr {
    const EXPECTED: &'static str =
        "an IP address and port, such as \"127.0.0.1:9464\" or \"[::1]:9464\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .map_err(|_| format!("{} is not an IP address with a port", quoted(text)))
    }

    fn display(&self) -> String {
        quoted(&self.to_string())
    }
}

impl Setting for Tz {
    const EXPECTED: &'static str = "an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        Tz::from_str(text.trim()).map_err(|_| format!("{} is not a known time zone", quoted(text)))
    }

    fn display(&self) -> String {
        quoted(self.name())
    }
}

impl Setting for cron::Schedule {
    const EXPECTED: &'static str = "a cron expression with a seconds field first: \
         \"sec min hour day-of-month month day-of-week [year]\", such as \"0 */15 * * * *\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let fields = text.split_whitespace().count();
        if fields == 5 {
            return Err(format!(
                "{} has 5 fields, but the seconds field is required (prefix it with \"0 \")",
                quoted(text)
            ));
        }
        let schedule = cron::Schedule::from_str(text)
            .map_err(|e| format!("{} is not a cron expression ({e})", quoted(text)))?;
        // A day that does not exist (30 February) parses but would silently never poll.
        if schedule.upcoming(chrono::Utc).next().is_none() {
            return Err(format!("{} never fires", quoted(text)));
        }
        Ok(schedule)
    }

    fn display(&self) -> String {
        quoted(self.source())
    }
}

/// `[ttp] task_relisting` (the domain's type: the in-doubt reconciliation depends on it).
pub use crate::domain::TaskRelisting;

impl Setting for TaskRelisting {
    const EXPECTED: &'static str = "\"until_done\" or \"once\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "until_done" => Ok(TaskRelisting::UntilDone),
            "once" => Ok(TaskRelisting::Once),
            _ => Err(format!("{} is not a relisting mode", quoted(text))),
        }
    }

    fn display(&self) -> String {
        quoted(match self {
            TaskRelisting::UntilDone => "until_done",
            TaskRelisting::Once => "once",
        })
    }
}

/// Where the API key travels (`[ttp] api_key_in`): any of the request header and the
/// `apikey` body parameter. Public clients send both; the IG names the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiKeyIn {
    pub header: bool,
    pub body: bool,
}

impl Default for ApiKeyIn {
    fn default() -> ApiKeyIn {
        ApiKeyIn {
            header: true,
            body: false,
        }
    }
}

impl ApiKeyIn {
    fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<ApiKeyIn, String> {
        let mut places = ApiKeyIn {
            header: false,
            body: false,
        };
        for name in names {
            match name.trim() {
                "header" => places.header = true,
                "body" => places.body = true,
                other => {
                    return Err(format!("{} is not a place for the API key", quoted(other)));
                }
            }
        }
        if !places.header && !places.body {
            return Err("the list is empty".to_owned());
        }
        Ok(places)
    }
}

impl Setting for ApiKeyIn {
    const EXPECTED: &'static str = "a list of \"header\" and/or \"body\", such as [\"header\"] or [\"header\", \"body\"] (in an environment variable: header,body)";

    fn parse_text(text: &str) -> Result<Self, String> {
        ApiKeyIn::from_names(text.split(',').filter(|s| !s.trim().is_empty()))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Array(items) => {
                let names = items
                    .iter()
                    .map(|item| item.as_str().ok_or_else(|| found(item)))
                    .collect::<Result<Vec<&str>, String>>()?;
                ApiKeyIn::from_names(names)
            }
            toml::Value::String(text) => ApiKeyIn::parse_text(text),
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        let names: Vec<String> = [(self.header, "header"), (self.body, "body")]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| quoted(name))
            .collect();
        format!("[{}]", names.join(", "))
    }
}

/// Whether a ready `send_idat` is sent at once or waits for local users to approve the
/// release of its IDAT (`[dispatch] idat_release`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdatRelease {
    #[default]
    Automatic,
    /// `[dispatch] approvals_required` distinct local users approve each release first
    /// (`ttp-agent approve`), or one denies it (`ttp-agent deny`).
    Approval,
}

impl Setting for IdatRelease {
    const EXPECTED: &'static str = "\"automatic\" or \"approval\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "automatic" => Ok(IdatRelease::Automatic),
            "approval" => Ok(IdatRelease::Approval),
            _ => Err(format!("{} is not an IDAT release mode", quoted(text))),
        }
    }

    fn display(&self) -> String {
        quoted(match self {
            IdatRelease::Automatic => "automatic",
            IdatRelease::Approval => "approval",
        })
    }
}

/// What to do when a `send_idat` asks for elements the record does not hold (`[dispatch]
/// missing_elements`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MissingElements {
    /// Answer with the elements the record holds (the IG's "soweit bekannt"); the missing ones
    /// are recorded in the audit trail and shown in `status` as information.
    #[default]
    SendKnown,
    /// Do not answer; the task needs attention until a person adds the elements or marks the
    /// task handled.
    Hold,
}

impl Setting for MissingElements {
    const EXPECTED: &'static str = "\"send_known\" or \"hold\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "send_known" => Ok(MissingElements::SendKnown),
            "hold" => Ok(MissingElements::Hold),
            _ => Err(format!("{} is not a missing-elements mode", quoted(text))),
        }
    }

    fn display(&self) -> String {
        quoted(match self {
            MissingElements::SendKnown => "send_known",
            MissingElements::Hold => "hold",
        })
    }
}

/// `[dispatch] release_elements`: the IDAT elements this site lets leave at all (its release
/// policy). A `send_idat` asking for an element outside it is answered without that element.
/// A TOML array of element codes; in the environment, a comma-separated list. Kept as a set,
/// so order and repeats do not matter. Per-study lists come with several studies (issue 14):
/// this type is the site-wide default such an override would fall back to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseElements(std::collections::BTreeSet<ttp_proto::IdatElement>);

impl Default for ReleaseElements {
    /// Every element: the behaviour before the setting existed.
    fn default() -> ReleaseElements {
        ReleaseElements(ttp_proto::IdatElement::ALL.into_iter().collect())
    }
}

impl ReleaseElements {
    /// A policy allowing exactly `elements`.
    pub fn only(elements: impl IntoIterator<Item = ttp_proto::IdatElement>) -> ReleaseElements {
        ReleaseElements(elements.into_iter().collect())
    }

    /// Whether `element` may be sent.
    pub fn allows(&self, element: ttp_proto::IdatElement) -> bool {
        self.0.contains(&element)
    }

    fn from_codes<'a>(codes: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = std::collections::BTreeSet::new();
        for code in codes {
            let code = code.trim();
            match ttp_proto::IdatElement::from_code(code) {
                Some(element) => {
                    set.insert(element);
                }
                None => return Err(format!("{} is not an IDAT element code", quoted(code))),
            }
        }
        // An empty list would withhold every element of every answer: far more likely an
        // empty variable or a typo than a policy (a site that releases nothing does not run
        // the agent for send_idat at all).
        if set.is_empty() {
            return Err("the list is empty".to_owned());
        }
        Ok(ReleaseElements(set))
    }
}

impl Setting for ReleaseElements {
    const EXPECTED: &'static str = "a non-empty list of IDAT element codes (given, family, prefix, suffix, birthdate, gender, address-line, address-city, address-postalcode, birthplace, maidenname, degree, language, nationality, maritalstatus), such as [\"given\", \"family\", \"birthdate\"] (in an environment variable: given,family,birthdate)";

    fn parse_text(text: &str) -> Result<Self, String> {
        ReleaseElements::from_codes(text.split(',').filter(|s| !s.trim().is_empty()))
    }

    fn from_toml(value: &toml::Value) -> Result<Self, String> {
        match value {
            toml::Value::Array(items) => {
                let codes = items
                    .iter()
                    .map(|item| item.as_str().ok_or_else(|| found(item)))
                    .collect::<Result<Vec<&str>, String>>()?;
                ReleaseElements::from_codes(codes)
            }
            other => Err(found(other)),
        }
    }

    fn display(&self) -> String {
        let items: Vec<String> = self.0.iter().map(|e| quoted(e.code())).collect();
        format!("[{}]", items.join(", "))
    }
}

/// The log output format. `Auto` leaves the choice to the logging setup, which looks at where
/// the agent runs (the systemd journal, a terminal, a container).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
    Journald,
}

impl Setting for LogFormat {
    const EXPECTED: &'static str = "\"auto\", \"text\", \"json\" or \"journald\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "auto" => Ok(LogFormat::Auto),
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            _ => Err(format!("{} is not a log format", quoted(text))),
        }
    }

    fn display(&self) -> String {
        quoted(match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Journald => "journald",
        })
    }
}

/// A log filter: a level, or a `tracing` `EnvFilter` directive list such as
/// `"info,ttp_agent::client=debug"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLevel(String);

impl LogLevel {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

impl Setting for LogLevel {
    const EXPECTED: &'static str = "a level (trace, debug, info, warn, error, off) or a \
         directive list such as \"info,ttp_agent::client=debug\"";

    fn parse_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the filter is empty".to_owned());
        }
        // `EnvFilter` reads a bare word as a target name, so a misspelt level ("inf") would be
        // accepted and silently log nothing; insist that every directive ends in a level.
        for directive in text.split(',') {
            let level = directive.rsplit('=').next().unwrap_or(directive).trim();
            if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
                return Err(format!(
                    "the directive {} does not end in a level",
                    quoted(directive)
                ));
            }
        }
        tracing_subscriber::EnvFilter::builder()
            .parse(text)
            .map_err(|e| format!("{} is not a valid filter ({e})", quoted(text)))?;
        Ok(LogLevel(text.to_owned()))
    }

    fn display(&self) -> String {
        quoted(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml_value(literal: &str) -> toml::Value {
        let table: toml::Table = toml::from_str(&format!("v = {literal}")).unwrap();
        table["v"].clone()
    }

    #[test]
    fn durations_read_humantime_and_reject_bare_numbers_in_the_file() {
        assert_eq!(
            Duration::parse_text("90d"),
            Ok(Duration::from_secs(90 * 86_400))
        );
        assert_eq!(Duration::parse_text("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(
            Duration::parse_text("500ms"),
            Ok(Duration::from_millis(500))
        );
        assert!(Duration::parse_text("30 sekunden").is_err());
        assert!(Duration::parse_text("30").is_err());
        let bare = Duration::from_toml(&toml_value("30")).unwrap_err();
        assert!(bare.contains("\"30s\""), "{bare}");
    }

    #[test]
    fn durations_display_in_a_form_that_reads_back_identically() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1500),
            Duration::from_secs(90),
            Duration::from_secs(3_600),
            Duration::from_secs(5_400),
            Duration::from_secs(90 * 86_400),
            Duration::from_nanos(7),
        ] {
            let shown = format_duration(d);
            assert_eq!(Duration::parse_text(&shown), Ok(d), "{shown}");
        }
        assert_eq!(format_duration(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(format_duration(Duration::from_secs(5_400)), "90m");
    }

    #[test]
    fn byte_sizes_accept_plain_bytes_and_binary_suffixes_only() {
        assert_eq!(
            ByteSize::parse_text("16MiB"),
            Ok(ByteSize(16 * ByteSize::MIB))
        );
        assert_eq!(ByteSize::parse_text("512 KiB"), Ok(ByteSize(512 * 1024)));
        assert_eq!(ByteSize::parse_text("1GiB"), Ok(ByteSize(ByteSize::GIB)));
        assert_eq!(ByteSize::parse_text("1048576"), Ok(ByteSize(1_048_576)));
        assert_eq!(ByteSize::parse_text("100B"), Ok(ByteSize(100)));
        assert_eq!(ByteSize::from_toml(&toml_value("4096")), Ok(ByteSize(4096)));
        assert!(
            ByteSize::parse_text("16MB")
                .unwrap_err()
                .contains("ambiguous")
        );
        assert!(ByteSize::parse_text("16 parsecs").is_err());
        assert!(ByteSize::parse_text("MiB").is_err());
        assert!(
            ByteSize::parse_text("99999999999999GiB")
                .unwrap_err()
                .contains("too large")
        );
        assert!(ByteSize::from_toml(&toml_value("-1")).is_err());
        for n in [
            0,
            100,
            4096,
            16 * ByteSize::MIB,
            3 * ByteSize::GIB,
            1_000_001,
        ] {
            assert_eq!(
                ByteSize::parse_text(&ByteSize(n).to_string()),
                Ok(ByteSize(n))
            );
        }
    }

    #[test]
    fn numbers_and_booleans_read_from_both_the_file_and_text() {
        assert_eq!(u64::parse_text("50"), Ok(50));
        assert_eq!(u64::from_toml(&toml_value("50")), Ok(50));
        assert!(u64::from_toml(&toml_value("-5")).is_err());
        assert!(u64::from_toml(&toml_value("\"50\"")).is_err());
        assert!(u64::parse_text("5.5").is_err());
        assert_eq!(f64::parse_text("2.5"), Ok(2.5));
        assert_eq!(f64::from_toml(&toml_value("5")), Ok(5.0));
        assert!(f64::from_toml(&toml_value("nan")).is_err());
        assert!(f64::parse_text("inf").is_err());
        assert_eq!(bool::parse_text("TRUE"), Ok(true));
        assert_eq!(bool::from_toml(&toml_value("false")), Ok(false));
        assert!(bool::parse_text("yes").is_err());
        assert_eq!(f64::display(&5.0), "5.0");
    }

    #[test]
    fn strings_are_kept_exactly() {
        for text in [
            "0 */15 * * * *",
            "https://a.example/x,y",
            "a,b;c",
            "007",
            "true",
        ] {
            assert_eq!(String::parse_text(text).as_deref(), Ok(text));
        }
    }

    #[test]
    fn cron_requires_seconds_and_a_schedule_that_fires() {
        assert!(cron::Schedule::parse_text("0 */15 * * * *").is_ok());
        assert!(cron::Schedule::parse_text("0 0 3 * * Mon-Fri").is_ok());
        let five = cron::Schedule::parse_text("*/15 * * * *").unwrap_err();
        assert!(five.contains("seconds field is required"), "{five}");
        assert!(cron::Schedule::parse_text("every 15 minutes").is_err());
        let never = cron::Schedule::parse_text("0 0 0 30 2 *").unwrap_err();
        assert!(never.contains("never fires"), "{never}");
    }

    #[test]
    fn time_zones_are_validated() {
        assert_eq!(
            Tz::parse_text("Europe/Berlin"),
            Ok(chrono_tz::Europe::Berlin)
        );
        assert_eq!(Tz::parse_text("UTC"), Ok(chrono_tz::UTC));
        assert!(Tz::parse_text("Europe/Berln").is_err());
        assert!(Tz::parse_text("CEST+2").is_err());
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        assert!(Url::parse_text("https://fttp.example.org/ttp-fhir/fhir/dispatcher").is_ok());
        assert!(Url::parse_text("ftp://fttp.example.org/").is_err());
        assert!(Url::parse_text("fttp.example.org/dispatcher").is_err());
        let creds = Url::parse_text("https://user:pw@fttp.example.org/").unwrap_err();
        assert!(!creds.contains("pw@"), "{creds}");
    }

    #[test]
    fn webhook_urls_never_show_their_path_or_query() {
        let url = WebhookUrl::parse_text(
            "https://hooks.example.org:8443/services/T0/B0/s3cr3t?token=abc",
        )
        .unwrap();
        for shown in [format!("{url:?}"), url.display()] {
            assert!(
                !shown.contains("s3cr3t") && !shown.contains("abc"),
                "{shown}"
            );
            assert!(shown.contains("hooks.example.org:8443"), "{shown}");
        }
        let bad = WebhookUrl::parse_text("not a url s3cr3t").unwrap_err();
        assert!(!bad.contains("s3cr3t"), "{bad}");
    }

    #[test]
    fn log_levels_reject_misspelt_levels() {
        assert!(LogLevel::parse_text("info").is_ok());
        assert!(LogLevel::parse_text("info,ttp_agent::client=debug").is_ok());
        assert!(LogLevel::parse_text("WARN").is_ok());
        assert!(LogLevel::parse_text("inf").is_err());
        assert!(LogLevel::parse_text("info,ttp_agent=verbose").is_err());
        assert!(LogLevel::parse_text("").is_err());
    }

    #[test]
    fn enumerations_name_their_choices() {
        assert_eq!(TaskRelisting::parse_text("once"), Ok(TaskRelisting::Once));
        assert_eq!(
            MissingElements::parse_text("hold"),
            Ok(MissingElements::Hold)
        );
        assert!(MissingElements::parse_text("drop").is_err());
        assert_eq!(LogFormat::parse_text("journald"), Ok(LogFormat::Journald));
        assert!(LogFormat::parse_text("JSON").is_err());
        assert!(TaskRelisting::EXPECTED.contains("until_done"));
    }
}

#[cfg(test)]
mod api_key_in_tests {
    use super::*;

    #[test]
    fn api_key_places_read_from_a_toml_list_or_a_comma_separated_variable() {
        let both = ApiKeyIn {
            header: true,
            body: true,
        };
        assert_eq!(ApiKeyIn::parse_text("header,body"), Ok(both));
        assert_eq!(
            ApiKeyIn::parse_text(" body "),
            Ok(ApiKeyIn {
                header: false,
                body: true
            })
        );
        let list = toml::Value::Array(vec!["body".into(), "header".into()]);
        assert_eq!(ApiKeyIn::from_toml(&list), Ok(both));
        assert_eq!(both.display(), "[\"header\", \"body\"]");
        for bad in ["", "query", "header,cookie"] {
            assert!(ApiKeyIn::parse_text(bad).is_err(), "{bad}");
        }
        assert!(ApiKeyIn::from_toml(&toml::Value::Array(vec![])).is_err());
        assert!(ApiKeyIn::from_toml(&toml::Value::Array(vec![1.into()])).is_err());
    }
}
