//! Consent withdrawal: a patient withdrew consent, so the site stops disclosing anything about
//! them and deletes what it holds.
//!
//! [`withdraw`] does, per local id, in this order:
//!
//! 1. removes the record (sealed IDAT, sealed filter, index entries) and keeps a
//!    [`Withdrawal`] (local id, pseudonym, who, when) with the keys later tasks are matched by
//!    (the filter's keyed digest, the pseudonym's digest; see `store::withdrawn` for why these),
//!    with its audit entry, in one transaction;
//! 2. closes the open tasks that name it by those keys (`TaskRecord::withdrawn`, each with an
//!    audit entry), also when it was withdrawn before (a run that crashed after step 1 left
//!    them open); a `Running` one (its request may be on the wire) is left to the
//!    dispatcher, which checks for a withdrawal before it acts on any task again;
//! 3. rewrites the store's file once for all ids, so that no file of the store directory
//!    holds the removed IDAT or filter (the same rewrite as the retention purge).
//!
//! Later tasks naming the record's filter or pseudonym are closed the same way by the
//! dispatcher (`Agent::dispatch_wave`), and `submit` refuses the local id unless `--readmit`.

use chrono::{DateTime, Utc};

use crate::resolve::Actor;
use crate::store::{AuditEntry, Store, StoreError, Withdrawal};

/// Why one local id could not be withdrawn. Names local ids, never IDAT.
#[derive(Debug, thiserror::Error)]
pub enum WithdrawError {
    #[error(
        "no local record {local_id:?} is stored; nothing to withdraw (`ttp-agent export` lists the local ids with pseudonyms)"
    )]
    UnknownRecord { local_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What withdrawing one local id did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Withdrawn {
    pub withdrawal: Withdrawal,
    /// Open tasks about it closed now (their keys).
    pub tasks_closed: Vec<String>,
    /// It had been withdrawn before (then only tasks a crashed earlier run left open are
    /// closed now).
    pub already: bool,
}

/// Withdraws each of `local_ids` (see the module documentation). The result per id, in
/// order; the store's file is rewritten once at the end when any id is withdrawn (now or
/// before).
pub fn withdraw(
    store: &Store,
    local_ids: &[String],
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Vec<Result<Withdrawn, WithdrawError>>, StoreError> {
    let mut results = Vec::with_capacity(local_ids.len());
    let mut removed_any = false;
    for id in local_ids {
        let result = match withdraw_one(store, id, actor, now) {
            // The store failing is not about this id: stop.
            Err(WithdrawError::Store(e)) => return Err(e),
            other => other,
        };
        // Also for one withdrawn already: a run that crashed before its rewrite is completed
        // by running the command again.
        if result.is_ok() {
            removed_any = true;
        }
        results.push(result);
    }
    if removed_any {
        store.rewrite_after_purge()?;
    } else {
        store.flush()?;
    }
    Ok(results)
}

fn withdraw_one(
    store: &Store,
    local_id: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Withdrawn, WithdrawError> {
    let (withdrawal, already) = match store.withdrawal(local_id)? {
        Some(withdrawal) => (withdrawal, true),
        None => {
            let entry = AuditEntry {
                at: now,
                actor: actor.as_str().to_owned(),
                action: WITHDRAW_ACTION.to_owned(),
                subject: local_id.to_owned(),
                detail: "consent withdrawn: IDAT and Bloom filter purged, its tasks closed and never answered; the pseudonym is kept for export".to_owned(),
            };
            // `None`: no such record (or removed meanwhile by another withdrawal).
            let withdrawal = store
                .withdraw_record(local_id, actor.as_str(), now, &entry)?
                .ok_or_else(|| WithdrawError::UnknownRecord {
                    local_id: local_id.to_owned(),
                })?;
            (withdrawal, false)
        }
    };
    // Also when it was withdrawn before: a run that crashed after the removal left its tasks
    // open, and those waiting for a person (`NeedsAttention`, `AwaitingApproval`) are not the
    // dispatcher's to close until someone acts on them.
    let tasks_closed = close_open_tasks(store, local_id, actor, now)?;
    Ok(Withdrawn {
        withdrawal,
        tasks_closed,
        already,
    })
}

/// Closes the open tasks that name the withdrawn record `local_id` (by its kept match keys),
/// each with an audit entry; returns their keys. A `Running` one (its request may be on the
/// wire) and one the daemon changed meanwhile are left to the dispatcher's own check.
fn close_open_tasks(
    store: &Store,
    local_id: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Vec<String>, StoreError> {
    let mut closed = Vec::new();
    for current in store.open_tasks_where(|_| true)? {
        let (filters, pseudonyms) = current.subject_parts();
        if !store.names_withdrawn(local_id, &filters, &pseudonyms)? {
            continue;
        }
        let mut next = current.clone();
        if !next.withdrawn(local_id, now) {
            continue;
        }
        let entry = AuditEntry {
            at: now,
            actor: actor.as_str().to_owned(),
            action: WITHDRAW_ACTION.to_owned(),
            subject: current.key.0.clone(),
            detail: format!(
                "{} -> closed: consent withdrawn for record {local_id:?}; not answered",
                current.state.name()
            ),
        };
        if store.replace_task_audited(&current, &next, &entry)? {
            closed.push(current.key.0.clone());
        }
    }
    Ok(closed)
}

/// The audit action of a withdrawal and of each task it closed.
pub const WITHDRAW_ACTION: &str = "withdraw";
/// The audit action of `submit --readmit`.
pub const READMIT_ACTION: &str = "readmit";

/// Forgets the withdrawal of `local_id` before it is submitted again (`submit --readmit`),
/// with an audit entry. Returns whether it had been withdrawn.
pub fn readmit(
    store: &Store,
    local_id: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let entry = AuditEntry {
        at: now,
        actor: actor.as_str().to_owned(),
        action: READMIT_ACTION.to_owned(),
        subject: local_id.to_owned(),
        detail: "submitted again after a consent withdrawal (--readmit)".to_owned(),
    };
    store.readmit(local_id, &entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Attention, Closure, TaskState};
    use crate::store::{IdatKey, StoreOptions};
    use crate::testkit;

    /// A run that crashed after the record's removal left its tasks open. Those waiting for a
    /// person are not the dispatcher's to close, so running `withdraw` again must close them
    /// (before, it found the withdrawal and only rewrote the store). A task about another
    /// record stays open.
    #[test]
    fn running_withdraw_again_closes_what_a_crashed_run_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreOptions::new(dir.path(), IdatKey::generate())).unwrap();
        let now = testkit::at("2026-12-01T10:00:00Z");
        store
            .insert_records(&[
                testkit::record("case-0", 0, now),
                testkit::record("case-1", 1, now),
            ])
            .unwrap();
        let waiting = |key: &str, seed: u64| {
            testkit::task(
                key,
                testkit::repeat_request(testkit::filter(seed)),
                TaskState::NeedsAttention {
                    reason: Attention::UnknownRecord,
                },
                now,
            )
        };
        let (about_it, about_other) = (waiting("task-0", 0), waiting("task-1", 1));
        store.put_tasks([&about_it, &about_other]).unwrap();
        // The first run's first transaction, then the crash.
        let entry = AuditEntry {
            at: now,
            actor: "dpo".into(),
            action: WITHDRAW_ACTION.into(),
            subject: "case-0".into(),
            detail: String::new(),
        };
        store
            .withdraw_record("case-0", "dpo", now, &entry)
            .unwrap()
            .expect("stored");

        let actor = Actor::named("dpo");
        let again = withdraw(&store, &["case-0".to_owned()], &actor, now).unwrap();
        let w = again[0].as_ref().expect("withdrawn");
        assert!(w.already);
        assert_eq!(w.tasks_closed, ["task-0"]);
        let state = store.get_task(&about_it.key).unwrap().unwrap().state;
        assert!(
            matches!(&state, TaskState::Closed { why: Closure::Withdrawn { local_id }, .. } if local_id == "case-0"),
            "{state:?}"
        );
        assert!(matches!(
            store.get_task(&about_other.key).unwrap().unwrap().state,
            TaskState::NeedsAttention { .. }
        ));
        // A third run has nothing left to do.
        let third = withdraw(&store, &["case-0".to_owned()], &actor, now).unwrap();
        assert_eq!(
            third[0].as_ref().unwrap().tasks_closed,
            Vec::<String>::new()
        );
    }
}
