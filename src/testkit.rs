//! Fixtures shared by every kind of test: the unit tests (`crate::testkit`), the integration
//! and soak tests (tests/support) and the benches (benches/support). Synthetic data only: no
//! real person's IDAT, no real credential.
//!
//! Compiled for the unit tests (`cfg(test)`) and with the `testkit` feature, which only this
//! package's dev-dependency on itself turns on (Cargo.toml): `cargo test`, `cargo bench` and
//! `cargo clippy --all-targets` have it, the shipped binary does not.
//!
//! * [`task`]: a [`TaskRecord`] as a listing leaves it, with the task kinds tests use;
//!   [`wire_task`]: the parsed task itself.
//! * [`record`], [`head`], [`filter`], [`idat`]: records with synthetic IDAT and filters.
//! * [`sim_config`], [`starter_config`]: a simulator and a starter configuration pointing at
//!   it (`ttp-agent init`'s file with text edits).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use ttp_proto::{BloomFilter, IdatElement, SendIdatSubject, Task, TaskKey, TaskKind};

use crate::domain::{Idat, LocalRecord, RecordHead, RecordState, TaskRecord, TaskState};

/// The study, target and API key of the simulator and the starter configuration.
pub const STUDY: &str = "test-study";
pub const TARGET: &str = "dic_test";
pub const API_KEY: &str = "test-api-key-0123456789";

/// A fixed instant from RFC 3339 text.
pub fn at(rfc3339: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(rfc3339)
        .expect("a valid RFC 3339 test time")
        .with_timezone(&Utc)
}

/// A task record in `state`, first seen and last changed at `at`, listed by poll 1, with no
/// deadline, no attempts and no error; change the fields a test is about.
pub fn task(key: &str, kind: TaskKind, state: TaskState, at: DateTime<Utc>) -> TaskRecord {
    TaskRecord {
        key: TaskKey(key.to_string()),
        task: wire_task(kind, None),
        state,
        attempts: 0,
        last_error: None,
        first_seen: at,
        updated_at: at,
        last_seen_poll: 1,
        approvals: Vec::new(),
    }
}

/// A task as the parser returns it from a listing: `kind`, due at `expires`, no unknown parts.
pub fn wire_task(kind: TaskKind, expires: Option<DateTime<Utc>>) -> Task {
    Task {
        kind,
        expires,
        unknown_parts: Vec::new(),
    }
}

/// `send_idat` for the record with pseudonym `psn`, asking for no element.
pub fn send_idat(task_id: &str, psn: &str) -> TaskKind {
    TaskKind::SendIdat {
        task_id: task_id.to_string(),
        subject: SendIdatSubject::Pseudonym(psn.to_string()),
        elements: Vec::new(),
    }
}

/// `repeat_request` for `filter` in [`STUDY`] and [`TARGET`].
pub fn repeat_request(filter: Vec<u8>) -> TaskKind {
    TaskKind::RepeatRequest {
        study: STUDY.to_string(),
        bloom_filter: BloomFilter(filter),
        target: TARGET.to_string(),
    }
}

/// `dic_psn_available`: `pseudonym` for `filter` in [`TARGET`].
pub fn dic_psn_available(filter: Vec<u8>, pseudonym: &str) -> TaskKind {
    TaskKind::DicPsnAvailable {
        bloom_filter: BloomFilter(filter),
        target: TARGET.to_string(),
        pseudonym: pseudonym.to_string(),
    }
}

/// A deterministic 225-byte filter (the starter profile's length) per seed; distinct seeds
/// give distinct filters.
pub fn filter(seed: u64) -> Vec<u8> {
    // splitmix64: cheap, and no two seeds share a stream.
    let mut x = seed;
    let mut out = Vec::with_capacity(232);
    while out.len() < 225 {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(225);
    out
}

/// Synthetic IDAT (invented names) with the given and family name set.
pub fn idat(given: &str, family: &str) -> Idat {
    let map: BTreeMap<IdatElement, String> = [
        (IdatElement::Given, given.to_string()),
        (IdatElement::Family, family.to_string()),
        (IdatElement::Birthdate, "1980-02-29".to_string()),
        (IdatElement::Gender, "diverse".to_string()),
        (IdatElement::AddressCity, "Musterstadt".to_string()),
    ]
    .into_iter()
    .collect();
    Idat(map)
}

/// A `New` record `local_id` with `filter(seed)` and synthetic IDAT, created and changed at
/// `at`.
pub fn record(local_id: &str, seed: u64, at: DateTime<Utc>) -> LocalRecord {
    LocalRecord {
        head: head(local_id, filter(seed), RecordState::New, at),
        idat: Some(idat("Testa", &format!("Synthetica{seed}"))),
    }
}

/// A record head in `state` with `bloom_filter`, created and last changed at `at`, without a
/// pseudonym; change the fields a test is about.
pub fn head(
    local_id: &str,
    bloom_filter: Vec<u8>,
    state: RecordState,
    at: DateTime<Utc>,
) -> RecordHead {
    RecordHead {
        local_id: local_id.to_string(),
        bloom_filter,
        state,
        pseudonym: None,
        created_at: at,
        updated_at: at,
    }
}

/// A simulator for [`STUDY`], [`TARGET`] and [`API_KEY`] asking for five elements; the other
/// settings are the simulator's defaults.
pub fn sim_config(seed: u64) -> ttp_sim::SimConfig {
    ttp_sim::SimConfig {
        study: STUDY.into(),
        target: TARGET.into(),
        auth: ttp_sim::SimAuth::api_key_header(API_KEY),
        seed,
        clearing: 0.5,
        repeat_first: 0.5,
        elements: ["given", "family", "birthdate", "gender", "birthplace"]
            .map(str::to_owned)
            .to_vec(),
        ..ttp_sim::SimConfig::default()
    }
}

/// The starter configuration `ttp-agent init` writes into `dir`, pointing at `base_url` with
/// [`STUDY`], [`TARGET`] and [`API_KEY`], then `edits` applied as text replacements (each must
/// match) and the admin endpoint moved to a port the OS picks (tests and benches run beside
/// each other and beside a real agent). Returns the path of `agent.toml`.
pub fn starter_config(
    dir: &Path,
    base_url: &str,
    edits: &[(&str, &str)],
) -> anyhow::Result<PathBuf> {
    let path = crate::cli::init::write_starter(
        dir,
        Some(&crate::cli::init::TtpSettings {
            base_url: base_url.to_string(),
            study: STUDY.into(),
            target: TARGET.into(),
            api_key: API_KEY.into(),
        }),
    )
    .context("writing the starter configuration")?;
    let mut text = std::fs::read_to_string(&path)?;
    for (from, to) in edits {
        anyhow::ensure!(
            text.contains(from),
            "the starter configuration lacks {from:?}"
        );
        text = text.replace(from, to);
    }
    text = text.replace("listen = \"127.0.0.1:9464\"", "listen = \"127.0.0.1:0\"");
    std::fs::write(&path, text)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_deterministic_distinct_and_as_long_as_the_starter_profiles() {
        assert_eq!(filter(7), filter(7));
        assert_ne!(filter(7), filter(8));
        assert_eq!(filter(0).len(), 225);
    }

    #[test]
    fn the_starter_configuration_takes_the_edits_and_a_free_admin_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = starter_config(
            dir.path(),
            "http://127.0.0.1:9/ttp",
            &[("level = \"info\"", "level = \"debug\"")],
        )
        .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("level = \"debug\""), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:0\""), "{text}");
        assert!(text.contains(STUDY) && text.contains(TARGET), "{text}");

        let other = tempfile::tempdir().unwrap();
        let missing = starter_config(other.path(), "http://127.0.0.1:9/ttp", &[("nope", "x")]);
        assert!(missing.is_err(), "an edit that matches nothing is an error");
    }
}
