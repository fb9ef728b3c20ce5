//! The two sources of raw values, and reading typed settings from them.
//!
//! A [`Layers`] holds, per known key, the raw value that wins (the environment over the file)
//! together with its [`Origin`]. Unknown keys are rejected while the layers are collected,
//! before any value is interpreted, so that a typo is reported as a typo and not as the
//! "missing key" it causes. Reading a setting records its origin and its display form, which
//! is what `redacted_summary` prints later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::IntoDeserializer;

use super::error::{ConfigError, ENV_PREFIX, KeyPath, Origin};
use super::schema::{self, KeySpec, Presence};
use super::values::Setting;

/// A raw value before interpretation.
#[derive(Clone, Debug)]
enum Raw {
    Toml(toml::Value),
    Text(String),
}

#[derive(Clone, Debug)]
struct Entry {
    raw: Raw,
    origin: Origin,
}

/// One line of the effective configuration, as recorded while reading it.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) key: KeyPath,
    /// A TOML literal, or `None` when the key is not set.
    pub(crate) display: Option<String>,
    pub(crate) origin: Option<Origin>,
}

/// What the configuration file contributed.
pub(crate) struct FileLayer {
    pub(crate) path: PathBuf,
    values: Vec<(KeyPath, Entry)>,
    pub(crate) encoding: Option<toml::Table>,
    /// Where the path keys of `[encoding]` are (`seeds_file`, ...), for errors about them.
    pub(crate) encoding_origins: Vec<(&'static str, Origin)>,
    pub(crate) input: Option<toml::Table>,
}

/// The `[encoding]` keys that name files, whose values may start with the credentials
/// directory placeholder like every other path setting.
pub(crate) const ENCODING_PATH_KEYS: [&str; 3] = ["seeds_file", "secret_file", "schema_file"];

/// Secrets of `[encoding]` that the encoding profiles could take inline, and the key that
/// names their file instead. In a configuration file (a 0644 conffile of the package) they
/// would be readable by every local user and end up in backups of /etc.
const INLINE_ENCODING_SECRETS: [(&str, &str); 3] = [
    ("balanced_seed", "seeds_file"),
    ("field_seeds", "seeds_file"),
    ("secret", "secret_file"),
];

/// Parses the file's text. `path` should be absolute: relative paths inside the file are
/// resolved against its directory.
pub(crate) fn parse_file(path: &Path, text: &str) -> Result<FileLayer, ConfigError> {
    let position = |offset: usize| line_column(text, offset);
    let origin_at = |offset: usize| {
        let (line, column) = position(offset);
        Origin::File {
            path: path.to_owned(),
            line,
            column,
        }
    };
    // `message()` is the parser's description without the quoted source line, which might
    // hold a value someone pasted by mistake: only it goes into the error.
    let syntax_error = |offset: usize, message: &str| {
        let (line, column) = position(offset);
        ConfigError::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: message.to_owned(),
        }
    };
    let document = toml::de::DeTable::parse(text)
        .map_err(|e| syntax_error(e.span().map_or(0, |s| s.start), e.message()))?;

    let mut layer = FileLayer {
        path: path.to_owned(),
        values: Vec::new(),
        encoding: None,
        encoding_origins: Vec::new(),
        input: None,
    };
    for (section_name, section_value) in document.get_ref() {
        let section = section_name.get_ref().as_ref();
        let Some(table) = section_value.get_ref().as_table() else {
            if let Some(section) = schema::sections()
                .chain(schema::TABLE_SECTIONS)
                .find(|s| *s == section)
            {
                return Err(ConfigError::NotASection {
                    section,
                    origin: origin_at(section_name.span().start),
                });
            }
            // A key outside any section, such as `base_url = …` at the top.
            return Err(ConfigError::UnknownKey {
                key: section.to_owned(),
                origin: origin_at(section_name.span().start),
                suggestion: schema::suggest_key("", section).map(|k| format!("`{k}`")),
            });
        };
        if section == schema::ENCODING_SECTION {
            for (key_name, _) in table {
                let name = key_name.get_ref().as_ref();
                let origin = origin_at(key_name.span().start);
                if let Some((secret, file_key)) =
                    INLINE_ENCODING_SECRETS.iter().find(|(k, _)| *k == name)
                {
                    return Err(ConfigError::InvalidValue {
                        key: KeyPath {
                            section: schema::ENCODING_SECTION,
                            name: secret,
                        },
                        origin,
                        problem: "encoding secrets cannot be written into the configuration \
                                  file, which other users and backups of /etc can read"
                            .to_owned(),
                        expected: format!(
                            "`{file_key}` naming a file that holds them (mode 0600), such as \
                             \"${{CREDENTIALS_DIRECTORY}}/encoding-{}\" with systemd credentials",
                            if *file_key == "seeds_file" {
                                "seeds"
                            } else {
                                "secret"
                            }
                        ),
                    });
                }
                if let Some(key) = ENCODING_PATH_KEYS.iter().find(|k| **k == name) {
                    layer.encoding_origins.push((*key, origin));
                }
            }
        }
        if schema::TABLE_SECTIONS.contains(&section) {
            let table = toml::Table::deserialize(section_value.clone().into_deserializer())
                .map_err(|e| ConfigError::Syntax {
                    path: path.to_owned(),
                    line: position(section_value.span().start).0,
                    column: position(section_value.span().start).1,
                    message: e.message().to_owned(),
                })?;
            if section == schema::ENCODING_SECTION {
                layer.encoding = Some(table);
            } else {
                layer.input = Some(table);
            }
            continue;
        }
        if !schema::is_section(section) {
            return Err(ConfigError::UnknownKey {
                key: format!("[{section}]"),
                origin: origin_at(section_name.span().start),
                suggestion: schema::suggest_section(section).map(|s| format!("`[{s}]`")),
            });
        }
        // `[ttp.oauth2]` arrives as the key `oauth2` of `[ttp]` holding a table: such known
        // sub-tables are walked like sections of their own.
        let mut tables = vec![(section.to_owned(), table)];
        while let Some((section, table)) = tables.pop() {
            let section = section.as_str();
            for (key_name, value) in table {
                let name = key_name.get_ref().as_ref();
                let nested = format!("{section}.{name}");
                if let Some(sub) = value.get_ref().as_table()
                    && schema::is_section(&nested)
                {
                    tables.push((nested, sub));
                    continue;
                }
                let Some(spec) = schema::find(section, name) else {
                    return Err(ConfigError::UnknownKey {
                        key: format!("[{section}] {name}"),
                        origin: origin_at(key_name.span().start),
                        suggestion: schema::suggest_key(section, name).map(|k| {
                            if k.section == section {
                                format!("`{}`", k.name)
                            } else {
                                format!("`{k}`")
                            }
                        }),
                    });
                };
                let raw = toml::Value::deserialize(value.clone().into_deserializer())
                    .map_err(|e| syntax_error(value.span().start, e.message()))?;
                layer.values.push((
                    spec.key,
                    Entry {
                        raw: Raw::Toml(raw),
                        origin: origin_at(value.span().start),
                    },
                ));
            }
        }
    }
    Ok(layer)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Collects the `TTP_AGENT__<SECTION>__<KEY>` variables; every other variable is ignored.
/// An empty value counts as unset, so `${VAR:-}` in a compose file does not override the file
/// with an empty string.
fn parse_env(
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(KeyPath, Entry)>, ConfigError> {
    let mut values = Vec::new();
    for (var, value) in vars {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let malformed = || ConfigError::BadEnvironment {
            var: var.clone(),
            problem: format!(
                "expected a name of the form {ENV_PREFIX}<SECTION>__<KEY>, such as \
                 {ENV_PREFIX}TTP__BASE_URL"
            ),
        };
        let Some((section, name)) = rest.split_once("__") else {
            return Err(malformed());
        };
        // One more `__` level names a sub-table: TTP__OAUTH2__TOKEN_URL is `[ttp.oauth2]`.
        let (section, name) = match name.split_once("__") {
            Some((sub, key))
                if schema::is_section(&format!("{section}.{sub}").to_ascii_lowercase()) =>
            {
                (format!("{section}.{sub}"), key)
            }
            _ => (section.to_owned(), name),
        };
        if section.is_empty() || section.ends_with('.') || name.is_empty() || name.contains("__") {
            return Err(malformed());
        }
        let (section, name) = (section.to_ascii_lowercase(), name.to_ascii_lowercase());
        let origin = Origin::Env { var: var.clone() };
        if schema::TABLE_SECTIONS.contains(&section.as_str()) {
            return Err(ConfigError::BadEnvironment {
                var,
                problem: format!(
                    "the [{section}] section can only be set in the configuration file"
                ),
            });
        }
        let Some(spec) = schema::find(&section, &name) else {
            let key = if schema::is_section(&section) {
                format!("[{section}] {name}")
            } else {
                format!("[{section}]")
            };
            return Err(ConfigError::UnknownKey {
                key,
                origin,
                suggestion: schema::suggest_key(&section, &name).map(|k| k.env_var()),
            });
        };
        values.push((
            spec.key,
            Entry {
                raw: Raw::Text(value),
                origin,
            },
        ));
    }
    Ok(values)
}

/// The placeholder a path setting may start with: systemd's credentials directory (see
/// [`Layers::optional_path`]).
pub(crate) const CREDENTIALS_PLACEHOLDER: &str = "${CREDENTIALS_DIRECTORY}";

/// The environment variable systemd sets for a service with `LoadCredential=`.
pub(crate) const CREDENTIALS_VAR: &str = "CREDENTIALS_DIRECTORY";

/// The merged raw values and what has been read from them.
pub(crate) struct Layers {
    entries: HashMap<KeyPath, Entry>,
    /// `$CREDENTIALS_DIRECTORY`, when set and not empty.
    credentials_dir: Option<PathBuf>,
    /// The loaded file, if any (for "set it in …" hints).
    file: Option<PathBuf>,
    /// Where relative paths from the file are anchored.
    file_dir: Option<PathBuf>,
    /// Where relative paths from the environment are anchored.
    cwd: Option<PathBuf>,
    recorded: Vec<Recorded>,
}

impl Layers {
    /// Merges the layers: an environment variable overrides the same key in the file.
    pub(crate) fn new(
        file: Option<&FileLayer>,
        env: impl IntoIterator<Item = (String, String)>,
        cwd: Option<PathBuf>,
    ) -> Result<Layers, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let credentials_dir = env
            .iter()
            .rev()
            .find(|(name, value)| name == CREDENTIALS_VAR && !value.is_empty())
            .map(|(_, value)| PathBuf::from(value));
        let mut entries = HashMap::new();
        if let Some(file) = file {
            entries.extend(file.values.iter().cloned());
        }
        entries.extend(parse_env(env)?);
        Ok(Layers {
            entries,
            credentials_dir,
            file: file.map(|f| f.path.clone()),
            file_dir: file.and_then(|f| f.path.parent().map(Path::to_path_buf)),
            cwd,
            recorded: Vec::new(),
        })
    }

    /// The value of a key with a default or a required key.
    pub(crate) fn get<T: Setting>(&mut self, spec: &KeySpec) -> Result<T, ConfigError> {
        match self.fetch::<T>(spec)? {
            Some((value, origin)) => {
                self.record(spec, Some(value.display()), Some(origin));
                Ok(value)
            }
            None => Err(self.missing(spec)),
        }
    }

    /// The value of an optional key.
    pub(crate) fn optional<T: Setting>(
        &mut self,
        spec: &KeySpec,
    ) -> Result<Option<T>, ConfigError> {
        let fetched = self.fetch::<T>(spec)?;
        let (display, origin) = match &fetched {
            Some((value, origin)) => (Some(value.display()), Some(origin.clone())),
            None => (None, None),
        };
        self.record(spec, display, origin);
        Ok(fetched.map(|(value, _)| value))
    }

    /// A required path (or one with a default), resolved; see [`Layers::resolve`].
    pub(crate) fn path(&mut self, spec: &KeySpec) -> Result<PathBuf, ConfigError> {
        match self.optional_path(spec)? {
            Some(path) => Ok(path),
            None => Err(self.missing(spec)),
        }
    }

    /// An optional path, resolved: relative to the file's directory when it came from the
    /// file, to the working directory when it came from the environment.
    ///
    /// A path may start with `${CREDENTIALS_DIRECTORY}/`, which is replaced by that
    /// environment variable: systemd sets it for a unit with `LoadCredential=` to the private
    /// directory holding the service's secrets, whose location is only known at start. It is
    /// the only variable expanded, and only at the start of a path; anything else stays as
    /// written.
    pub(crate) fn optional_path(&mut self, spec: &KeySpec) -> Result<Option<PathBuf>, ConfigError> {
        let Some((path, origin)) = self.fetch::<PathBuf>(spec)? else {
            self.record(spec, None, None);
            return Ok(None);
        };
        let resolved = self.resolve(spec, path, &origin)?;
        self.record(spec, Some(resolved.display()), Some(origin));
        Ok(Some(resolved))
    }

    fn resolve(
        &self,
        spec: &KeySpec,
        path: PathBuf,
        origin: &Origin,
    ) -> Result<PathBuf, ConfigError> {
        let path = self.expand_credentials_dir(spec, path, origin)?;
        if path.is_absolute() {
            return Ok(path);
        }
        let base = match origin {
            Origin::File { .. } => self.file_dir.as_ref(),
            Origin::Env { .. } | Origin::Default => self.cwd.as_ref(),
        };
        match base {
            Some(base) => Ok(base.join(path)),
            None => Err(ConfigError::InvalidValue {
                key: spec.key,
                origin: origin.clone(),
                problem: format!(
                    "{} is relative, but the current working directory cannot be determined",
                    path.display()
                ),
                expected: "an absolute path".to_owned(),
            }),
        }
    }

    fn expand_credentials_dir(
        &self,
        spec: &KeySpec,
        path: PathBuf,
        origin: &Origin,
    ) -> Result<PathBuf, ConfigError> {
        self.expand_credentials(spec.key, path, origin)
    }

    /// `${CREDENTIALS_DIRECTORY}/NAME` → that directory's `NAME`, for `key` (see
    /// [`Layers::optional_path`]); other paths unchanged.
    pub(crate) fn expand_credentials(
        &self,
        key: KeyPath,
        path: PathBuf,
        origin: &Origin,
    ) -> Result<PathBuf, ConfigError> {
        let Some(rest) = path
            .to_str()
            .and_then(|p| p.strip_prefix(CREDENTIALS_PLACEHOLDER))
        else {
            return Ok(path);
        };
        let invalid = |problem: String, expected: &str| ConfigError::InvalidValue {
            key,
            origin: origin.clone(),
            problem,
            expected: expected.to_owned(),
        };
        let Some(name) = rest.strip_prefix('/').filter(|n| !n.is_empty()) else {
            return Err(invalid(
                format!(
                    "{} does not name a file in the credentials directory",
                    path.display()
                ),
                "a path of the form \"${CREDENTIALS_DIRECTORY}/NAME\"",
            ));
        };
        match &self.credentials_dir {
            Some(dir) if dir.is_absolute() => Ok(dir.join(name)),
            Some(dir) => Err(invalid(
                format!(
                    "it refers to ${{{CREDENTIALS_VAR}}}, whose value {} is not an absolute path",
                    dir.display()
                ),
                "CREDENTIALS_DIRECTORY to be an absolute directory",
            )),
            None => Err(invalid(
                format!(
                    "{} refers to ${{{CREDENTIALS_VAR}}}, but that environment variable is not set",
                    path.display()
                ),
                "the agent to run under systemd with `LoadCredential=` (which sets it), or, when \
                 running a command by hand, CREDENTIALS_DIRECTORY set to the directory holding \
                 the secret files (e.g. `CREDENTIALS_DIRECTORY=/etc/ttp-agent/credentials \
                 ttp-agent check`)",
            )),
        }
    }

    /// An error about the value of a key already read, at the place it came from.
    pub(crate) fn invalid(
        &self,
        spec: &KeySpec,
        problem: impl Into<String>,
        expected: impl Into<String>,
    ) -> ConfigError {
        ConfigError::InvalidValue {
            key: spec.key,
            origin: self.origin(spec).unwrap_or(Origin::Default),
            problem: problem.into(),
            expected: expected.into(),
        }
    }

    /// Where the value of a key already read came from; `None` when it is not set.
    pub(crate) fn origin(&self, spec: &KeySpec) -> Option<Origin> {
        self.recorded
            .iter()
            .find(|r| r.key == spec.key)
            .and_then(|r| r.origin.clone())
    }

    pub(crate) fn into_recorded(self) -> Vec<Recorded> {
        self.recorded
    }

    fn fetch<T: Setting>(&self, spec: &KeySpec) -> Result<Option<(T, Origin)>, ConfigError> {
        let invalid = |origin: &Origin, problem: String| ConfigError::InvalidValue {
            key: spec.key,
            origin: origin.clone(),
            problem,
            expected: T::EXPECTED.to_owned(),
        };
        if let Some(entry) = self.entries.get(&spec.key) {
            let parsed = match &entry.raw {
                Raw::Toml(value) => T::from_toml(value),
                Raw::Text(text) => T::parse_text(text),
            };
            return parsed
                .map(|value| Some((value, entry.origin.clone())))
                .map_err(|problem| invalid(&entry.origin, problem));
        }
        match spec.presence {
            Presence::Default(text) => T::parse_text(text)
                .map(|value| Some((value, Origin::Default)))
                .map_err(|problem| invalid(&Origin::Default, problem)),
            Presence::Required | Presence::Optional => Ok(None),
        }
    }

    fn record(&mut self, spec: &KeySpec, display: Option<String>, origin: Option<Origin>) {
        self.recorded.retain(|r| r.key != spec.key);
        self.recorded.push(Recorded {
            key: spec.key,
            display,
            origin,
        });
    }

    fn missing(&self, spec: &KeySpec) -> ConfigError {
        ConfigError::MissingKey {
            key: spec.key,
            file: self.file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\n[ttp]\nbäse = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let offset = text.find("= 2").unwrap();
        assert_eq!(line_column(text, offset), (3, 6));
        assert_eq!(line_column(text, 10_000), (4, 1));
    }

    #[test]
    fn env_names_are_split_on_double_underscores_and_lowercased() {
        let values = parse_env([
            ("TTP_AGENT__TTP__API_KEY_FILE".to_owned(), "k".to_owned()),
            ("TTP_AGENT_SOMETHING_ELSE".to_owned(), "ignored".to_owned()),
            ("PATH".to_owned(), "/usr/bin".to_owned()),
            ("TTP_AGENT__TTP__STUDY".to_owned(), String::new()),
        ])
        .unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].0.to_string(), "[ttp] api_key_file");
        let values = parse_env([(
            "TTP_AGENT__TTP__OAUTH2__TOKEN_URL".to_owned(),
            "https://kc.example.org/token".to_owned(),
        )])
        .unwrap();
        assert_eq!(values[0].0.to_string(), "[ttp.oauth2] token_url");

        for var in [
            "TTP_AGENT__TTP",
            "TTP_AGENT__TTP__",
            "TTP_AGENT____X",
            "TTP_AGENT__A__B__C",
            "TTP_AGENT__TTP__OAUTH2__",
        ] {
            let err = parse_env([(var.to_owned(), "x".to_owned())]).unwrap_err();
            assert!(
                matches!(err, ConfigError::BadEnvironment { .. }),
                "{var}: {err}"
            );
        }
    }
}
