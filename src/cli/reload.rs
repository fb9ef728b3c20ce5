//! What a SIGHUP may change in a running daemon, and what needs a restart (pure).
//!
//! A reload reads the configuration and its secrets again, exactly as a start would, and
//! compares the result with what the daemon runs with. Only settings that can change without
//! dropping or repeating work are applied:
//!
//! | key | why it is safe |
//! |---|---|
//! | `[log] level` | only what is written to the log changes |
//! | `[schedule] cron`, `timezone`, `jitter` | the daemon is between polls or finishes the one under way; the next poll is rescheduled |
//! | `[ttp] rate_limit_per_second` | spacing of the *next* requests; requests in flight are untouched |
//!
//! Everything else is fixed for the life of the process, because it is built into objects
//! that work in progress holds (the HTTP client with its TLS and credentials, the open store,
//! the dispatch options of a running wave). Those keys, and secret files whose content
//! changed, are named in a warning: the operator restarts when it suits (a restart loses
//! nothing, see ARCHITECTURE.md). The running configuration is not replaced by the new one
//! for them, so every later reload names them again until the restart.

use sha2::{Digest as _, Sha256};

use crate::config::{KeyPath, Secrets};

/// The keys a reload applies to the running daemon.
pub const LIVE_KEYS: [KeyPath; 5] = [
    KeyPath {
        section: "log",
        name: "level",
    },
    KeyPath {
        section: "schedule",
        name: "cron",
    },
    KeyPath {
        section: "schedule",
        name: "timezone",
    },
    KeyPath {
        section: "schedule",
        name: "jitter",
    },
    KeyPath {
        section: "ttp",
        name: "rate_limit_per_second",
    },
];

/// Whether a reload can apply a change to `key`.
pub fn is_live(key: &KeyPath) -> bool {
    LIVE_KEYS.contains(key)
}

/// The effective values of a configuration (`AgentConfig::effective_values`).
pub type Values = Vec<(KeyPath, Option<String>)>;

/// How a newly read configuration differs from the running one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Changed keys the reload applies.
    pub live: Vec<KeyPath>,
    /// Changed keys that take effect only after a restart.
    pub restart: Vec<KeyPath>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart.is_empty()
    }
}

/// Compares two sets of effective values key by key.
pub fn diff(running: &Values, new: &Values) -> Diff {
    let mut d = Diff::default();
    for (key, value) in new {
        let before = running.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        if before == Some(value) {
            continue;
        }
        if is_live(key) {
            d.live.push(*key);
        } else {
            d.restart.push(*key);
        }
    }
    d
}

/// The running values after a reload that applied `applied`: those keys take their new
/// value, all others keep the one the daemon runs with (so a later reload names them again).
pub fn after_reload(running: &Values, new: &Values, applied: &[KeyPath]) -> Values {
    running
        .iter()
        .map(|(key, value)| {
            let new_value = new.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            match new_value {
                Some(v) if applied.contains(key) => (*key, v),
                _ => (*key, value.clone()),
            }
        })
        .collect()
}

/// Digests of the secrets' contents, so a reload can tell that a file's content changed
/// without keeping a second copy of any secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretDigests(Vec<(&'static str, Option<[u8; 32]>)>);

impl std::fmt::Debug for SecretDigests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretDigests(<redacted>)")
    }
}

impl SecretDigests {
    pub fn of(secrets: &Secrets) -> SecretDigests {
        let digest = |s: Option<&ttp_encode::Secret>| s.map(|s| Sha256::digest(s.expose()).into());
        SecretDigests(vec![
            ("[ttp] api_key_file", digest(secrets.api_key.as_ref())),
            (
                "[ttp] basic_password_file",
                digest(secrets.basic_password.as_ref()),
            ),
            ("[store] idat_key_file", digest(Some(&secrets.idat_key))),
            ("[admin] token_file", digest(secrets.admin_token.as_ref())),
            (
                "[handover] webhook_token_file",
                digest(secrets.handover_token.as_ref()),
            ),
            (
                "[encoding] seeds_file / secret_file",
                digest(secrets.encoding.as_ref()),
            ),
            (
                "[ttp.oauth2] client_secret_file",
                digest(secrets.oauth2_client_secret.as_ref()),
            ),
        ])
    }

    /// The keys whose secret content differs between `self` and `new`.
    pub fn changed(&self, new: &SecretDigests) -> Vec<&'static str> {
        self.0
            .iter()
            .zip(&new.0)
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, _)| a.0)
            .collect()
    }
}

/// `[a] x, [b] y` for a log line.
pub fn list(keys: &[KeyPath]) -> String {
    keys.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(section: &'static str, name: &'static str) -> KeyPath {
        KeyPath { section, name }
    }

    fn values(pairs: &[(&'static str, &'static str, Option<&str>)]) -> Values {
        pairs
            .iter()
            .map(|(s, n, v)| (key(s, n), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn changed_keys_are_split_into_live_and_restart() {
        let running = values(&[
            ("log", "level", Some("\"info\"")),
            ("schedule", "cron", Some("\"0 */15 * * * *\"")),
            ("ttp", "timeout", Some("\"30s\"")),
            ("ttp", "ca_file", None),
            ("dispatch", "concurrency", Some("8")),
        ]);
        let new = values(&[
            ("log", "level", Some("\"debug\"")),
            ("schedule", "cron", Some("\"0 */15 * * * *\"")),
            ("ttp", "timeout", Some("\"60s\"")),
            ("ttp", "ca_file", Some("\"/etc/ca.pem\"")),
            ("dispatch", "concurrency", Some("8")),
        ]);
        let d = diff(&running, &new);
        assert_eq!(d.live, [key("log", "level")]);
        assert_eq!(d.restart, [key("ttp", "timeout"), key("ttp", "ca_file")]);
        assert!(diff(&running, &running).is_empty());
        assert_eq!(list(&d.restart), "[ttp] timeout, [ttp] ca_file");
    }

    #[test]
    fn after_a_reload_only_live_keys_move_so_restart_keys_are_named_again() {
        let running = values(&[
            ("log", "level", Some("\"info\"")),
            ("ttp", "timeout", Some("\"30s\"")),
        ]);
        let new = values(&[
            ("log", "level", Some("\"debug\"")),
            ("ttp", "timeout", Some("\"60s\"")),
        ]);
        let d = diff(&running, &new);
        let now_running = after_reload(&running, &new, &d.live);
        assert_eq!(
            now_running,
            values(&[
                ("log", "level", Some("\"debug\"")),
                ("ttp", "timeout", Some("\"30s\"")),
            ])
        );
        let again = diff(&now_running, &new);
        assert!(again.live.is_empty());
        assert_eq!(again.restart, [key("ttp", "timeout")]);
        // A live key that could not be applied stays as it was and is tried again.
        let not_applied = after_reload(&running, &new, &[]);
        assert_eq!(diff(&not_applied, &new).live, [key("log", "level")]);
    }

    #[test]
    fn every_live_key_exists_in_the_schema() {
        let known: Vec<KeyPath> = crate::config::AgentConfig::from_file_and_env(
            None,
            [
                ("TTP_AGENT__TTP__BASE_URL", "https://fttp.example.org/d"),
                ("TTP_AGENT__TTP__STUDY", "s"),
                ("TTP_AGENT__TTP__TARGET", "t"),
                ("TTP_AGENT__STORE__IDAT_KEY_FILE", "/k"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap()
        .effective_values()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
        for k in LIVE_KEYS {
            assert!(known.contains(&k), "{k} is not a configuration key");
        }
    }

    #[test]
    fn secret_digests_tell_which_secret_changed_without_showing_it() {
        let secrets = |api: &str, idat: &str| Secrets {
            api_key: Some(ttp_encode::Secret::new(api.as_bytes().to_vec())),
            basic_password: None,
            idat_key: ttp_encode::Secret::new(idat.as_bytes().to_vec()),
            admin_token: None,
            handover_token: None,
            encoding: None,
            oauth2_client_secret: None,
            warnings: Vec::new(),
        };
        let a = SecretDigests::of(&secrets("key-one", "idat"));
        let b = SecretDigests::of(&secrets("key-two", "idat"));
        assert_eq!(a.changed(&b), ["[ttp] api_key_file"]);
        assert!(a.changed(&a.clone()).is_empty());
        assert!(!format!("{a:?}").contains("key-one"));
    }
}
