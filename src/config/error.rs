//! What can go wrong while loading the configuration, and where it came from.
//!
//! Every message names the place the offending value came from ([`Origin`]: a file with line
//! and column, or an environment variable), the key (`[ttp] base_url`), what is wrong and what
//! would be accepted. Values may be quoted (the configuration holds no secret values, only paths
//! to them); the content of secret files never is.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The exit status for any configuration error: `EX_CONFIG` from BSD `sysexits.h`, which
/// systemd and supervisors recognise as "fix the configuration, restarting will not help".
pub const EXIT_CODE_CONFIG: u8 = 78;

/// The prefix of every environment variable the agent reads as configuration.
pub const ENV_PREFIX: &str = "TTP_AGENT__";

/// A known key: its section and its name, displayed as `[ttp] base_url`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath {
    pub section: &'static str,
    pub name: &'static str,
}

impl KeyPath {
    /// The environment variable that sets this key, e.g. `TTP_AGENT__TTP__BASE_URL`.
    pub fn env_var(&self) -> String {
        // A sub-table `[ttp.oauth2]` is one more `__` level: TTP_AGENT__TTP__OAUTH2__TOKEN_URL.
        format!(
            "{ENV_PREFIX}{}__{}",
            self.section.replace('.', "__").to_ascii_uppercase(),
            self.name.to_ascii_uppercase()
        )
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.section, self.name)
    }
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file; line and column (1-based) of the value, or of the key for an
    /// unknown key.
    File {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    /// An environment variable, by its full name.
    Env { var: String },
    /// The built-in default.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line, column } => {
                write!(f, "{}, line {line}, column {column}", path.display())
            }
            Origin::Env { var } => write!(f, "environment variable {var}"),
            Origin::Default => f.write_str("the built-in default"),
        }
    }
}

/// Why a configuration could not be loaded. [`ConfigError::exit_code`] is the process exit
/// status for all of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A configuration problem found outside the loader (an encoding profile or schema that
    /// does not load, a profile that changed under an existing store). The message names the
    /// file and section.
    #[error("{0}")]
    Cli(String),

    /// `--config PATH` named a file that does not exist.
    #[error(
        "configuration file {} does not exist; pass the path of an existing file with --config, \
         or omit --config to use {} (or environment variables alone when that is absent too)",
        .path.display(), super::DEFAULT_CONFIG_PATH
    )]
    FileNotFound { path: PathBuf },

    /// The file exists but cannot be read, or is not UTF-8 text.
    #[error("cannot read configuration file {}: {source}", .path.display())]
    FileUnreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The file is not valid TOML.
    #[error(
        "TOML syntax error in {}, line {line}, column {column}: {message}",
        .path.display()
    )]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    /// A key or section the agent does not know (a typo, or a key of a newer version).
    #[error("unknown key `{key}` in {origin}{}", suggestion_suffix(.suggestion.as_deref()))]
    UnknownKey {
        /// As written: `[ttp] base_ur`, `[tpp]`, or a top-level `base_url`.
        key: String,
        origin: Origin,
        /// A ready-to-print hint such as "`base_url`" or "TTP_AGENT__TTP__BASE_URL".
        suggestion: Option<String>,
    },

    /// A section that is not a table, e.g. `ttp = "x"`.
    #[error("`{section}` in {origin} must be a section (a table such as [{section}])")]
    NotASection {
        section: &'static str,
        origin: Origin,
    },

    /// A value of the wrong type, out of range, or inconsistent with another key.
    #[error("invalid value for `{key}` in {origin}: {problem}; expected {expected}")]
    InvalidValue {
        key: KeyPath,
        origin: Origin,
        problem: String,
        expected: String,
    },

    /// A required key is set neither in the file nor in the environment.
    #[error("missing required key `{key}`: {}", missing_hint(.key, .file.as_ref()))]
    MissingKey {
        key: KeyPath,
        /// The file that was loaded, if any.
        file: Option<PathBuf>,
    },

    /// A `TTP_AGENT__…` variable that is not of the form `TTP_AGENT__<SECTION>__<KEY>`, or
    /// whose name or value is not Unicode.
    #[error("environment variable {var}: {problem}")]
    BadEnvironment { var: String, problem: String },

    /// A secret file (API key, password, IDAT key, admin token) that cannot be used.
    #[error(
        "cannot use the secret file {} named by `{key}` (from {origin}): {problem}",
        .path.display()
    )]
    SecretFile {
        key: KeyPath,
        path: PathBuf,
        origin: Origin,
        problem: SecretProblem,
    },
}

impl ConfigError {
    /// The process exit status for a configuration error: 78 (`EX_CONFIG`); what
    /// `cli::exit_status` returns for an error caused by one.
    pub fn exit_code(&self) -> u8 {
        EXIT_CODE_CONFIG
    }
}

/// What is wrong with a secret file. The messages never include the file's content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretProblem {
    #[error("cannot read it: {0}")]
    Unreadable(#[source] io::Error),
    #[error("it is not a regular file; expected a file holding only the secret")]
    NotARegularFile,
    #[error("it is empty; expected the secret, optionally followed by one newline")]
    Empty,
    #[error("it is larger than {limit} bytes; expected a file holding only the secret")]
    TooLarge { limit: usize },
    #[error("it is not UTF-8 text; expected the secret as text on one line")]
    NotText,
    #[error(
        "it contains a line break or another control character; expected the secret on one \
         line (one trailing newline is ignored)"
    )]
    ControlCharacter,
    #[error(
        "it holds {found} characters, fewer than the {} a token must have; write a long \
         random one (`ttp-agent init` does, or `openssl rand -hex 32`)",
        super::secrets::MIN_TOKEN_CHARS
    )]
    TooShort { found: usize },
}

fn suggestion_suffix(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

fn missing_hint(key: &KeyPath, file: Option<&PathBuf>) -> String {
    let var = key.env_var();
    match file {
        Some(path) => format!(
            "set `{}` in section [{}] of {} or set environment variable {var}",
            key.name,
            key.section,
            path.display()
        ),
        None => format!(
            "no configuration file was loaded, so set environment variable {var} or put `{}` \
             in section [{}] of a configuration file",
            key.name, key.section
        ),
    }
}
