//! Consent withdrawal: a patient withdrew consent, so the site stops disclosing anything about
//! them and deletes what it holds.
//!
//! [`withdraw`] does, per local id, in this order:
//!
//! 1. removes the record (sealed IDAT, sealed filter, index entries) and keeps a
//!    [`Withdrawal`] (local id, pseudonym, who, when) with the keys later tasks are matched by
//!    (the filter's keyed digest, the pseudonym's digest; see `store::withdrawn` for why these),
//!    with its audit entry, in one transaction;
//! 2. closes the open tasks about it (`TaskRecord::withdrawn`, each with an audit entry); a
//!    `Running` one (its request may be on the wire) is left to the dispatcher, which checks
//!    for a withdrawal before it acts on any task again;
//! 3. rewrites the store's file once for all ids, so that no file of the store directory
//!    holds the removed IDAT or filter (the same rewrite as the retention purge).
//!
//! Later tasks naming the record's filter or pseudonym are closed the same way by the
//! dispatcher (`Agent::dispatch_wave`), and `submit` refuses the local id unless `--readmit`.

use chrono::{DateTime, Utc};

use crate::domain::TaskRecord;
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
    /// It had been withdrawn before (nothing done now).
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
    if let Some(withdrawal) = store.withdrawal(local_id)? {
        return Ok(Withdrawn {
            withdrawal,
            tasks_closed: Vec::new(),
            already: true,
        });
    }
    let head = store
        .get_record_head(local_id)?
        .ok_or_else(|| WithdrawError::UnknownRecord {
            local_id: local_id.to_owned(),
        })?;
    let about_it = |t: &TaskRecord| {
        let (filters, pseudonyms) = t.subject_parts();
        filters.contains(&head.bloom_filter.as_slice())
            || head
                .pseudonym
                .as_deref()
                .is_some_and(|p| pseudonyms.contains(&p))
    };
    let open: Vec<TaskRecord> = store
        .open_tasks_where(|_| true)?
        .into_iter()
        .filter(about_it)
        .collect();
    let entry = AuditEntry {
        at: now,
        actor: actor.as_str().to_owned(),
        action: WITHDRAW_ACTION.to_owned(),
        subject: local_id.to_owned(),
        detail: "consent withdrawn: IDAT and Bloom filter purged, its tasks closed and never answered; the pseudonym is kept for export".to_owned(),
    };
    let Some(withdrawal) = store.withdraw_record(local_id, actor.as_str(), now, &entry)? else {
        // Removed between the read and the write (another withdrawal).
        return Err(WithdrawError::UnknownRecord {
            local_id: local_id.to_owned(),
        });
    };
    let mut tasks_closed = Vec::new();
    for current in open {
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
        // A task the daemon changed meanwhile is left to the dispatcher's own check.
        if store.replace_task_audited(&current, &next, &entry)? {
            tasks_closed.push(current.key.0.clone());
        }
    }
    Ok(Withdrawn {
        withdrawal,
        tasks_closed,
        already: false,
    })
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
