//! Schema versions and migrations.
//!
//! The `meta` key `schema_version` names the layout of every tree (see `codec`). [`Store::open`]
//! reads it first and:
//!
//! * refuses a version above [`CURRENT_SCHEMA`] ([`StoreError::SchemaTooNew`]) before writing
//!   anything, so an older agent started by mistake cannot damage a newer store;
//! * runs the registered [`Migration`] steps from the found version up to the current one,
//!   writing and flushing the new version after each step.
//!
//! A step must be idempotent: a crash after the step's writes but before the version bump is
//! durable runs the step again at the next start.
//!
//! Version 0 is "no `schema_version` key": a new, empty database, or a store written before
//! versioning. The step 0 → 1 (re)builds the derived data (indexes and record counters) from
//! the records, which creates them empty for a new store. The step 1 → 2 fills the pseudonym
//! log (`psn_log`) from the records that already have a pseudonym. The step 2 → 3 moves the
//! finished tasks still stored into the history counters and builds the open-task index (see
//! `tasks`). To change a layout, bump
//! [`CURRENT_SCHEMA`], append a step `from: CURRENT_SCHEMA - 1`, and test it on a store
//! written in the old layout.
//!
//! [`Store::open`]: super::Store::open

use std::path::Path;

use super::codec::{read_u64, u64_value};
use super::meta::SCHEMA_VERSION;
use super::{StoreError, Trees, error, psn_log, records, tasks};

/// The schema version this build reads and writes.
pub const CURRENT_SCHEMA: u64 = 3;

/// One step from `from` to `from + 1`.
pub(crate) struct Migration {
    pub from: u64,
    /// For the log line.
    pub description: &'static str,
    pub apply: fn(&Trees, &Path) -> Result<(), StoreError>,
}

/// The registered steps, in order.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 0,
        description: "build the filter and pseudonym indexes and the record counters",
        apply: v0_to_v1,
    },
    Migration {
        from: 1,
        description: "back-fill the pseudonym log from records that have a pseudonym",
        apply: psn_log::backfill,
    },
    Migration {
        from: 2,
        description: "count the finished tasks still stored into the history and index the open tasks",
        apply: tasks::migrate_to_open_index,
    },
];

fn v0_to_v1(trees: &Trees, path: &Path) -> Result<(), StoreError> {
    records::rebuild_derived(trees, path).map(drop)
}

/// Reads the version (0 when absent).
pub(crate) fn read_version(trees: &Trees, path: &Path) -> Result<u64, StoreError> {
    match trees
        .meta
        .get(SCHEMA_VERSION)
        .map_err(|e| error::from_sled(path, e))?
    {
        None => Ok(0),
        Some(v) => {
            read_u64(&v).ok_or_else(|| error::corrupt(path, "schema_version is not 8 bytes"))
        }
    }
}

/// Brings the store to [`CURRENT_SCHEMA`]. Returns whether anything was written.
pub(crate) fn bring_up_to_date(trees: &Trees, path: &Path) -> Result<bool, StoreError> {
    let found = read_version(trees, path)?;
    run(trees, path, found, CURRENT_SCHEMA, MIGRATIONS)
}

/// Runs `steps` from `found` to `target` (the framework, separate from the registry so tests
/// can drive it with their own steps).
pub(crate) fn run(
    trees: &Trees,
    path: &Path,
    found: u64,
    target: u64,
    steps: &[Migration],
) -> Result<bool, StoreError> {
    if found > target {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: target,
        });
    }
    let mut version = found;
    while version < target {
        let step = steps
            .iter()
            .find(|s| s.from == version)
            .ok_or_else(|| StoreError::Invalid {
                what: "schema migration",
                why: format!("this build has no migration from schema version {version}"),
            })?;
        // A new, empty store is "migrated" through every step; not worth a log line.
        if !trees.records.is_empty() {
            tracing::info!(
                path = %path.display(),
                from = version,
                to = version + 1,
                step = step.description,
                "migrating the store"
            );
        }
        (step.apply)(trees, path)?;
        version += 1;
        trees
            .meta
            .insert(SCHEMA_VERSION, &u64_value(version))
            .map_err(|e| error::from_sled(path, e))?;
        // Each step is durable before the next one starts (see "idempotent" above).
        trees.meta.flush().map_err(|e| error::from_sled(path, e))?;
    }
    Ok(version != found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_trees() -> (tempfile::TempDir, sled::Db, Trees) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = sled::Config::new()
            .path(dir.path())
            .open()
            .expect("sled opens");
        let trees = Trees::open(&db, dir.path()).expect("trees");
        (dir, db, trees)
    }

    fn mark_1(t: &Trees, _: &Path) -> Result<(), StoreError> {
        t.meta
            .insert("step", "1")
            .map(drop)
            .map_err(|e| error::from_sled(Path::new("x"), e))
    }

    fn mark_2(t: &Trees, _: &Path) -> Result<(), StoreError> {
        // Proves ordering: step 2 sees step 1's mark.
        let seen = t.meta.get("step").ok().flatten();
        assert_eq!(seen.as_deref(), Some(&b"1"[..]));
        t.meta
            .insert("step", "2")
            .map(drop)
            .map_err(|e| error::from_sled(Path::new("x"), e))
    }

    #[test]
    fn registered_steps_cover_every_version_once() {
        for from in 0..CURRENT_SCHEMA {
            assert_eq!(
                MIGRATIONS.iter().filter(|m| m.from == from).count(),
                1,
                "step from {from}"
            );
        }
        assert!(MIGRATIONS.iter().all(|m| m.from < CURRENT_SCHEMA));
    }

    #[test]
    fn steps_run_in_order_and_bump_the_version() {
        let (dir, _db, trees) = temp_trees();
        let steps = [
            Migration {
                from: 2,
                description: "second",
                apply: mark_2,
            },
            Migration {
                from: 1,
                description: "first",
                apply: mark_1,
            },
        ];
        assert!(run(&trees, dir.path(), 1, 3, &steps).expect("migrates"));
        assert_eq!(read_version(&trees, dir.path()).expect("reads"), 3);
        assert_eq!(
            trees.meta.get("step").expect("get").as_deref(),
            Some(&b"2"[..])
        );
        // Up to date: nothing to do.
        assert!(!run(&trees, dir.path(), 3, 3, &steps).expect("no-op"));
    }

    #[test]
    fn newer_version_is_refused_and_missing_step_is_an_error() {
        let (dir, _db, trees) = temp_trees();
        assert!(matches!(
            run(&trees, dir.path(), 4, 3, &[]),
            Err(StoreError::SchemaTooNew {
                found: 4,
                supported: 3
            })
        ));
        assert!(matches!(
            run(&trees, dir.path(), 0, 1, &[]),
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(read_version(&trees, dir.path()).expect("reads"), 0);
    }
}
