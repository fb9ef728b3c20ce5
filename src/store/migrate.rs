//! Schema versions and migrations.
//!
//! The `meta` key `schema_version` names the layout of every tree (see `codec`). [`Store::open`]
//! reads it first and:
//!
//! * refuses a version above [`CURRENT_SCHEMA`] ([`StoreError::SchemaTooNew`]) before writing
//!   anything, so an older agent started by mistake cannot damage a newer store;
//! * runs the registered [`Migration`] steps from the found version up to the current one,
//!   each step in one durable write transaction together with its version bump, so a crash
//!   leaves the store before or after a step, never half through it.
//!
//! Steps are still written to be idempotent (a step that runs again finds its own work).
//!
//! Version 0 is "no `schema_version` key": a new, empty database, or a store written before
//! versioning. The step 0 → 1 (re)builds the derived data (indexes and record counters) from
//! the records, which creates them empty for a new store. The step 1 → 2 fills the pseudonym
//! log (`psn_log`) from the records that already have a pseudonym. The step 2 → 3 moves the
//! finished tasks still stored into the history counters and builds the open-task index (see
//! `tasks`). The step 3 → 4 seals filters and tasks. The step 4 → 5 builds the two time-ordered
//! indexes the retention purges read (`idx_idat_due`, `idx_finished_tasks`), the step 5 → 6 the
//! index of the records that wait for registration (`idx_waiting_records`). To change a layout,
//! bump
//! [`CURRENT_SCHEMA`], append a step `from: CURRENT_SCHEMA - 1`, and test it on a store
//! written in the old layout.
//!
//! [`Store::open`]: super::Store::open

use std::path::Path;

use redb::ReadableDatabase as _;

use super::codec::{read_u64, u64_value};
use super::crypto::StoreKeys;
use super::meta::SCHEMA_VERSION;
use super::{
    META, RECORDS, StoreError, durable_commit, error, psn_log, records, rtree, tasks, wtree,
};

/// The schema version this build reads and writes.
pub const CURRENT_SCHEMA: u64 = 6;

/// One step from `from` to `from + 1`, run inside the write transaction that bumps the version.
pub(crate) struct Migration {
    pub from: u64,
    /// For the log line.
    pub description: &'static str,
    pub apply: fn(&redb::WriteTransaction, &StoreKeys, &Path) -> Result<(), StoreError>,
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
        apply: backfill,
    },
    Migration {
        from: 2,
        description: "count the finished tasks still stored into the history and index the open tasks",
        apply: tasks::migrate_to_open_index,
    },
    Migration {
        from: 3,
        description: "seal the filters and tasks and key the filter index",
        apply: v3_to_v4,
    },
    Migration {
        from: 4,
        description: "index the records whose IDAT a purge may drop and the finished tasks by time",
        apply: v4_to_v5,
    },
    Migration {
        from: 5,
        description: "index the records that wait for registration by state and time",
        apply: v5_to_v6,
    },
];

fn v0_to_v1(tx: &redb::WriteTransaction, keys: &StoreKeys, path: &Path) -> Result<(), StoreError> {
    records::rebuild_derived(tx, keys, path, true).map(drop)
}

fn backfill(tx: &redb::WriteTransaction, _: &StoreKeys, path: &Path) -> Result<(), StoreError> {
    psn_log::backfill(tx, path)
}

fn v3_to_v4(tx: &redb::WriteTransaction, keys: &StoreKeys, path: &Path) -> Result<(), StoreError> {
    records::seal_filters(tx, keys, path)?;
    tasks::seal_tasks(tx, keys, path)
}

fn v4_to_v5(tx: &redb::WriteTransaction, keys: &StoreKeys, path: &Path) -> Result<(), StoreError> {
    records::build_idat_due_index(tx, path)?;
    tasks::build_finished_index(tx, keys, path)
}

fn v5_to_v6(tx: &redb::WriteTransaction, _: &StoreKeys, path: &Path) -> Result<(), StoreError> {
    records::build_waiting_index(tx, path)
}

/// Reads the version (0 when absent).
pub(crate) fn read_version(db: &redb::Database, path: &Path) -> Result<u64, StoreError> {
    let tx = db.begin_read().map_err(|e| error::from_redb(path, e))?;
    match rtree(&tx, META, path)?.get(SCHEMA_VERSION)? {
        None => Ok(0),
        Some(v) => {
            read_u64(&v).ok_or_else(|| error::corrupt(path, "schema_version is not 8 bytes"))
        }
    }
}

/// Brings the store to [`CURRENT_SCHEMA`]. Returns whether anything was written.
pub(crate) fn bring_up_to_date(
    db: &redb::Database,
    keys: &StoreKeys,
    path: &Path,
) -> Result<bool, StoreError> {
    let found = read_version(db, path)?;
    run(db, keys, path, found, CURRENT_SCHEMA, MIGRATIONS)
}

/// Runs `steps` from `found` to `target` (the framework, separate from the registry so tests
/// can drive it with their own steps).
pub(crate) fn run(
    db: &redb::Database,
    keys: &StoreKeys,
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
        let has_records = {
            let tx = db.begin_read().map_err(|e| error::from_redb(path, e))?;
            !rtree(&tx, RECORDS, path)?.is_empty()?
        };
        // A new, empty store is "migrated" through every step; not worth a log line.
        if has_records {
            tracing::info!(
                path = %path.display(),
                from = version,
                to = version + 1,
                step = step.description,
                "migrating the store"
            );
        }
        let next = version + 1;
        durable_commit(db, path, |tx| {
            (step.apply)(tx, keys, path)?;
            wtree(tx, META, path)?
                .insert(SCHEMA_VERSION, &u64_value(next))
                .map(drop)
        })?;
        version = next;
    }
    Ok(version != found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (tempfile::TempDir, redb::Database) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = redb::Database::create(dir.path().join("t.redb")).expect("redb opens");
        super::super::create_tables(&db, dir.path()).expect("tables");
        (dir, db)
    }

    fn mark_1(tx: &redb::WriteTransaction, _: &StoreKeys, _: &Path) -> Result<(), StoreError> {
        wtree(tx, META, Path::new("x"))?
            .insert(b"step", b"1")
            .map(drop)
    }

    fn mark_2(tx: &redb::WriteTransaction, _: &StoreKeys, _: &Path) -> Result<(), StoreError> {
        let mut meta = wtree(tx, META, Path::new("x"))?;
        // Proves ordering: step 2 sees step 1's mark.
        assert_eq!(meta.get(b"step")?.as_deref(), Some(&b"1"[..]));
        meta.insert(b"step", b"2").map(drop)
    }

    fn fail(_: &redb::WriteTransaction, _: &StoreKeys, _: &Path) -> Result<(), StoreError> {
        Err(StoreError::Invalid {
            what: "test step",
            why: "fails".into(),
        })
    }

    fn keys() -> StoreKeys {
        crate::store::IdatKey::generate().store_keys()
    }

    fn meta_get(db: &redb::Database, key: &[u8]) -> Option<Vec<u8>> {
        let tx = db.begin_read().expect("read");
        rtree(&tx, META, Path::new("x"))
            .expect("meta")
            .get(key)
            .expect("get")
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
        let (dir, db) = temp_db();
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
        assert!(run(&db, &keys(), dir.path(), 1, 3, &steps).expect("migrates"));
        assert_eq!(read_version(&db, dir.path()).expect("reads"), 3);
        assert_eq!(meta_get(&db, b"step").as_deref(), Some(&b"2"[..]));
        // Up to date: nothing to do.
        assert!(!run(&db, &keys(), dir.path(), 3, 3, &steps).expect("no-op"));
    }

    #[test]
    fn a_failing_step_leaves_the_version_and_writes_nothing() {
        let (dir, db) = temp_db();
        let steps = [
            Migration {
                from: 0,
                description: "first",
                apply: mark_1,
            },
            Migration {
                from: 1,
                description: "fails",
                apply: fail,
            },
        ];
        assert!(run(&db, &keys(), dir.path(), 0, 2, &steps).is_err());
        assert_eq!(read_version(&db, dir.path()).expect("reads"), 1);
        assert_eq!(meta_get(&db, b"step").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn newer_version_is_refused_and_missing_step_is_an_error() {
        let (dir, db) = temp_db();
        assert!(matches!(
            run(&db, &keys(), dir.path(), 4, 3, &[]),
            Err(StoreError::SchemaTooNew {
                found: 4,
                supported: 3
            })
        ));
        assert!(matches!(
            run(&db, &keys(), dir.path(), 0, 1, &[]),
            Err(StoreError::Invalid { .. })
        ));
        assert_eq!(read_version(&db, dir.path()).expect("reads"), 0);
    }
}
