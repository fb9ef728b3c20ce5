//! Resolving what needs a human: retry a task now, mark it handled, add a missing IDAT element.
//!
//! The agent parks a task in `NeedsAttention` when it cannot answer it alone (a record is
//! unknown or lacks a requested element, the fTTP rejected the answer, ...), and a task may sit
//! in `RetryWait` or `InDoubt` longer than a coordinator wants to wait. These functions are
//! the three ways out, each a deliberate act of a named person:
//!
//! | action | allowed from | result |
//! |---|---|---|
//! | [`retry_task`] | `NeedsAttention`, `RetryWait`, `InDoubt` (a `send_idat` the fTTP still lists although answered: only confirmed, `--yes`) | `Received`: worked on in the next cycle |
//! | [`retry_records`] | records `Rejected` (by local id, or all of one code) | `New`: registered in the next cycle |
//! | [`mark_handled`] | any open state but `Running` | `Done`, `last_error = "marked handled by <who>: <comment>"` |
//! | [`add_element`] | a record that still holds IDAT | the element added to its sealed IDAT |
//! | [`approve_task`] | `AwaitingApproval` (not past its deadline; once per user) | one approval more; with enough of them `Received`: sent in the next cycle |
//! | [`deny_task`] | `AwaitingApproval` | `Closed` (denied, with who and the reason): never answered |
//!
//! **Why "handled" is `Done`.** A task a person has dealt with outside the agent (answered by
//! phone, withdrawn by the fTTP operator) is finished: it must leave the open and attention
//! lists and count in the day's history like any other finished task, and the agent must not
//! act on it again. `NeedsAttention { Handled }` would keep it open. The comment and the name
//! stay with the task (`last_error`) and in the audit trail.
//!
//! **Why `Running` is refused.** A `Running` task's request may be on the wire; changing its
//! state would race the dispatcher's outcome. A crashed agent's `Running` tasks become
//! `InDoubt` at the next start, and can be retried or marked handled then.
//!
//! Every change is written together with its [`AuditEntry`] (who, when, what, which task or
//! record) in one store transaction, and only if the task or record is still what the
//! decision was based on (see [`Store::replace_task_audited`]): a change the daemon made in
//! between is reported, not overwritten. IDAT values never reach the audit trail, an error, or
//! a log line.
//!
//! The functions take the store, so they serve the command line running in the daemon (through
//! its control channel, `crate::cli::control`) or in-process, and, later, an admin API alike.

use chrono::{DateTime, Utc};
use ttp_proto::{IdatElement, TaskKey};

use crate::domain::{ApprovalProgress, Idat, RecordState, Refusal, TaskRecord, TaskState};
use crate::store::{AuditEntry, Store, StoreError};

/// The longest comment `mark_handled` accepts (it is stored with the task and in the audit).
pub const MAX_COMMENT_CHARS: usize = 1000;

/// Who acts: recorded in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(String);

impl Actor {
    /// A name given explicitly (an admin API's authenticated user, a `--actor` option).
    pub fn named(name: impl Into<String>) -> Actor {
        Actor(name.into())
    }

    /// The operating-system user: `$SUDO_USER` (the person behind `sudo`), else `$USER`,
    /// else the numeric uid.
    pub fn from_env() -> Actor {
        Actor::from_vars(
            std::env::var("SUDO_USER").ok(),
            std::env::var("USER").ok(),
            // SAFETY: getuid has no preconditions and cannot fail.
            unsafe { libc::getuid() },
        )
    }

    fn from_vars(sudo_user: Option<String>, user: Option<String>, uid: u32) -> Actor {
        let usable = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
                .map(str::to_string)
        };
        Actor(
            usable(&sudo_user)
                .or_else(|| usable(&user))
                .unwrap_or_else(|| format!("uid {uid}")),
        )
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a resolve action was refused. Messages name task keys, local ids and element codes,
/// never IDAT values.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "no task with key {key:?} is stored; `ttp-agent status` lists open tasks and their keys"
    )]
    UnknownTask { key: String },
    #[error("task {key:?} is already finished ({state}); there is nothing to resolve")]
    Finished { key: String, state: &'static str },
    #[error("task {key:?} cannot be retried: {why}")]
    NotRetryable { key: String, why: String },
    #[error("task {key:?} is running (its request may be on the wire); wait for its outcome")]
    Running { key: String },
    #[error("no local record {local_id:?} is stored")]
    UnknownRecord { local_id: String },
    #[error(
        "record {local_id:?} holds no IDAT any more (purged by the retention rule); submit the record's IDAT again instead"
    )]
    IdatPurged { local_id: String },
    #[error(
        "record {local_id:?} already has element {element}; pass --replace to change its value"
    )]
    ElementPresent {
        local_id: String,
        element: IdatElement,
    },
    #[error("the value for element {element} is invalid: {why}")]
    InvalidValue { element: IdatElement, why: String },
    #[error("the comment is {why}")]
    BadComment { why: String },
    #[error("the reason is {why}")]
    BadReason { why: String },
    #[error(
        "{what} changed while this command ran (the agent acted on it); look at `ttp-agent status` and run the command again"
    )]
    Concurrent { what: String },
    #[error(
        "task {key:?} was answered at {answered_at} and the fTTP still lists it; sending the IDAT again is a second disclosure if the first did arrive: ask the fTTP operator, then run the command again with --yes"
    )]
    NeedsConfirmation { key: String, answered_at: String },
    #[error(
        "record {local_id:?} is {state}, not rejected; only rejected records are sent again this way"
    )]
    RecordNotRejected { local_id: String, state: String },
    #[error(
        "no rejected record has the cause {cause:?}; `ttp-agent status` shows how many are rejected, the audit trail and the log name the causes"
    )]
    NoRejectedRecords { cause: String },
    #[error(
        "task {key:?} awaits approval of its release; `ttp-agent approve` or `ttp-agent deny` it"
    )]
    AwaitsApproval { key: String },
    #[error(
        "task {key:?}: its deadline passed at {at}; an approval can no longer be sent, nothing is sent (the task expires)"
    )]
    ApprovalTooLate { key: String, at: String },
    #[error("task {key:?} does not await approval (it is {state})")]
    NotAwaitingApproval { key: String, state: &'static str },
    #[error(
        "task {key:?} was approved by {by} already; the same user counts once, another local user must approve it"
    )]
    AlreadyApproved { key: String, by: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Which rejected records [`retry_records`] sends again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordSelection {
    /// These local ids (each must be rejected).
    Ids(Vec<String>),
    /// Every record rejected with this cause: the stored code, e.g. `http-404` (what older
    /// versions recorded for a whole-request 4xx) or `http://hl7.org/fhir/issue-type#invalid`.
    Cause(String),
}

/// Sends rejected records again: `Rejected` → `New`, registered in the next cycle, each with
/// an audit entry naming the code it had. The way back for records an older version rejected
/// for a whole-request cause (a wrong study or target), and for records the fTTP rejected
/// before a fix on its side.
pub fn retry_records(
    store: &Store,
    selection: &RecordSelection,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Vec<Resolved>, ResolveError> {
    let records = match selection {
        RecordSelection::Ids(ids) => {
            let mut records = Vec::with_capacity(ids.len());
            for id in ids {
                let rec = store
                    .get_record(id)?
                    .ok_or_else(|| ResolveError::UnknownRecord {
                        local_id: id.clone(),
                    })?;
                if !matches!(rec.head.state, RecordState::Rejected { .. }) {
                    return Err(ResolveError::RecordNotRejected {
                        local_id: id.clone(),
                        state: format!("{:?}", rec.head.state),
                    });
                }
                records.push(rec);
            }
            records
        }
        RecordSelection::Cause(cause) => {
            let records = store.records_in_states(
                |s| matches!(s, RecordState::Rejected { code } if code == cause),
            )?;
            if records.is_empty() {
                return Err(ResolveError::NoRejectedRecords {
                    cause: cause.clone(),
                });
            }
            records
        }
    };
    let mut done = Vec::with_capacity(records.len());
    for current in records {
        let mut next = current.clone();
        let Some(code) = next.head.registered_again(now) else {
            continue;
        };
        let entry = audit(
            actor,
            now,
            "resolve-retry-record",
            &current.head.local_id,
            format!("rejected ({code}) -> new: registered again in the next cycle"),
        );
        if !store.update_record_audited(&current, &next, &entry)? {
            return Err(ResolveError::Concurrent {
                what: format!("record {:?}", current.head.local_id),
            });
        }
        done.push(Resolved {
            subject: current.head.local_id.clone(),
            from: format!("rejected ({code})"),
            to: "new".to_string(),
            warning: None,
        });
    }
    store.flush()?;
    Ok(done)
}

/// What a resolve action did (for the command's output).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The task key or local id.
    pub subject: String,
    /// The state before (`needs-attention`, ...), or for records `element added`/`replaced`.
    pub from: String,
    pub to: String,
    /// Something the person should know (e.g. an answer may be sent twice).
    pub warning: Option<String>,
}

/// Moves a task in `NeedsAttention`, `RetryWait` or `InDoubt` back to `Received`, so the next
/// cycle works on it. Retrying an in-doubt `send_idat` may send the IDAT a second time (the
/// fTTP may already have it): the result carries a warning. A `send_idat` the agent answered
/// but the fTTP still lists (`Attention::StillListed`) is re-armed only when `confirmed`
/// (`--yes`): it sends IDAT the fTTP may have received once already.
pub fn retry_task(
    store: &Store,
    key: &TaskKey,
    actor: &Actor,
    now: DateTime<Utc>,
    confirmed: bool,
) -> Result<Resolved, ResolveError> {
    let current = load_task(store, key)?;
    let mut next = current.clone();
    let warning = next
        .retried_by_person(confirmed, now)
        .map_err(|refusal| refused(key, refusal))?
        .map(str::to_string);
    let from = current.state.name();
    let detail = match &warning {
        Some(w) => format!("{from} -> received; {w}"),
        None => format!("{from} -> received"),
    };
    write_task(
        store,
        &current,
        &next,
        audit(actor, now, "resolve-retry", &key.0, detail),
    )?;
    Ok(Resolved {
        subject: key.0.clone(),
        from: from.to_string(),
        to: "received".to_string(),
        warning,
    })
}

/// Marks an open task as handled by a person: `Done` now, with the comment (see the module
/// documentation for why `Done`). The comment must not contain IDAT: it is stored in clear.
pub fn mark_handled(
    store: &Store,
    key: &TaskKey,
    comment: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Resolved, ResolveError> {
    let comment = check_comment(comment)?;
    let current = load_task(store, key)?;
    let mut next = current.clone();
    next.marked_handled(actor.as_str(), comment, now)
        .map_err(|refusal| refused(key, refusal))?;
    let from = current.state.name();
    write_task(
        store,
        &current,
        &next,
        audit(
            actor,
            now,
            "resolve-handled",
            &key.0,
            format!("{from} -> done; {comment}"),
        ),
    )?;
    Ok(Resolved {
        subject: key.0.clone(),
        from: from.to_string(),
        to: "done".to_string(),
        warning: None,
    })
}

/// Adds `element` with `value` to the sealed IDAT of record `local_id` (`replace`: also when
/// it has one already). The value is validated and stored like a submitted one (canonical
/// text of `ttp_proto::value`) and appears nowhere but in the sealed IDAT.
/// Tasks waiting for the element are not touched: retry them with [`retry_task`].
pub fn add_element(
    store: &Store,
    local_id: &str,
    element: IdatElement,
    value: &str,
    replace: bool,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Resolved, ResolveError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(ResolveError::InvalidValue {
            element,
            why: "the value is empty".to_string(),
        });
    }
    let value = crate::submit::input::validate_value(element, value)
        .map_err(|why| ResolveError::InvalidValue { element, why })?;
    let current = store
        .get_record(local_id)?
        .ok_or_else(|| ResolveError::UnknownRecord {
            local_id: local_id.to_string(),
        })?;
    let Some(idat) = &current.idat else {
        return Err(ResolveError::IdatPurged {
            local_id: local_id.to_string(),
        });
    };
    let present = idat.0.contains_key(&element);
    if present && !replace {
        return Err(ResolveError::ElementPresent {
            local_id: local_id.to_string(),
            element,
        });
    }
    let mut elements = idat.0.clone();
    elements.insert(element, value);
    let mut next = current.clone();
    next.idat = Some(Idat(elements));
    next.head.updated_at = now;
    let what = if present { "replaced" } else { "added" };
    let entry = audit(
        actor,
        now,
        "resolve-add-element",
        local_id,
        format!("element {} {what}", element.code()),
    );
    if !store.update_record_audited(&current, &next, &entry)? {
        return Err(ResolveError::Concurrent {
            what: format!("record {local_id:?}"),
        });
    }
    store.flush()?;
    Ok(Resolved {
        subject: local_id.to_string(),
        from: format!("element {}", element.code()),
        to: what.to_string(),
        warning: None,
    })
}

/// What one approval did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approved {
    pub key: String,
    pub progress: ApprovalProgress,
}

/// A local user approves the release of a `send_idat` awaiting approval. With
/// `required` distinct approvals the task is `Received` and the next cycle sends it (unless
/// its deadline passes first: then it expires and nothing is sent). The approval and its audit
/// entry are one transaction.
pub fn approve_task(
    store: &Store,
    key: &TaskKey,
    actor: &Actor,
    required: usize,
    now: DateTime<Utc>,
) -> Result<Approved, ResolveError> {
    let current = load_task(store, key)?;
    let mut next = current.clone();
    let progress =
        next.approved_by(actor.as_str(), required, now)
            .map_err(|refusal| match refusal {
                Refusal::DeadlinePassed { at } => ResolveError::ApprovalTooLate {
                    key: key.0.clone(),
                    at: at.to_rfc3339(),
                },
                other => refused(key, other),
            })?;
    let detail = if progress.complete() {
        format!(
            "approval {} of {}: awaiting-approval -> received (sent in the next cycle)",
            progress.have, progress.need
        )
    } else {
        format!(
            "approval {} of {}: still awaiting approval",
            progress.have, progress.need
        )
    };
    write_task(
        store,
        &current,
        &next,
        audit(actor, now, "approve", &key.0, detail),
    )?;
    Ok(Approved {
        key: key.0.clone(),
        progress,
    })
}

/// A local user denies the release of a `send_idat` awaiting approval: closed locally with
/// the reason, never answered. The reason is stored in clear (with the task and in the audit
/// trail): it must not contain IDAT.
pub fn deny_task(
    store: &Store,
    key: &TaskKey,
    reason: &str,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Resolved, ResolveError> {
    let reason = check_reason(reason)?;
    let current = load_task(store, key)?;
    let mut next = current.clone();
    next.denied_by(actor.as_str(), reason, now)
        .map_err(|refusal| refused(key, refusal))?;
    write_task(
        store,
        &current,
        &next,
        audit(
            actor,
            now,
            "deny",
            &key.0,
            format!("awaiting-approval -> closed (denied): {reason}"),
        ),
    )?;
    Ok(Resolved {
        subject: key.0.clone(),
        from: "awaiting-approval".to_string(),
        to: "closed (denied, not answered)".to_string(),
        warning: None,
    })
}

/// The keys of the tasks awaiting approval, earliest deadline first (what `approve --all`
/// approves).
pub fn awaiting_approval(store: &Store) -> Result<Vec<TaskKey>, ResolveError> {
    let mut tasks = store.open_tasks_where(|s| *s == TaskState::AwaitingApproval)?;
    tasks.sort_by(|a, b| {
        (a.deadline().is_none(), a.deadline(), &a.key).cmp(&(
            b.deadline().is_none(),
            b.deadline(),
            &b.key,
        ))
    });
    Ok(tasks.into_iter().map(|t| t.key).collect())
}

/// A refusal of the domain's, as the person reads it.
fn refused(key: &TaskKey, refusal: Refusal) -> ResolveError {
    let key = key.0.clone();
    match refusal {
        Refusal::Finished { state } => ResolveError::Finished { key, state },
        Refusal::Running => ResolveError::Running { key },
        Refusal::AlreadyWaiting => ResolveError::NotRetryable {
            key,
            why: "it is already waiting to be worked on in the next cycle".to_string(),
        },
        Refusal::DeadlinePassed { at } => ResolveError::NotRetryable {
            key,
            why: format!(
                "its deadline passed at {}; the fTTP no longer accepts an answer",
                at.to_rfc3339()
            ),
        },
        Refusal::NeedsConfirmation { answered_at } => ResolveError::NeedsConfirmation {
            key,
            answered_at: answered_at.to_rfc3339(),
        },
        Refusal::AwaitsApproval => ResolveError::AwaitsApproval { key },
        Refusal::NotAwaitingApproval { state } => ResolveError::NotAwaitingApproval { key, state },
        Refusal::AlreadyApprovedBy { by } => ResolveError::AlreadyApproved { key, by },
    }
}

fn load_task(store: &Store, key: &TaskKey) -> Result<TaskRecord, ResolveError> {
    store
        .get_task(key)?
        .ok_or_else(|| ResolveError::UnknownTask { key: key.0.clone() })
}

fn write_task(
    store: &Store,
    current: &TaskRecord,
    next: &TaskRecord,
    entry: AuditEntry,
) -> Result<(), ResolveError> {
    if !store.replace_task_audited(current, next, &entry)? {
        return Err(ResolveError::Concurrent {
            what: format!("task {:?}", current.key.0),
        });
    }
    store.flush()?;
    Ok(())
}

fn audit(
    actor: &Actor,
    at: DateTime<Utc>,
    action: &str,
    subject: &str,
    detail: String,
) -> AuditEntry {
    AuditEntry {
        at,
        actor: actor.0.clone(),
        action: action.to_string(),
        subject: subject.to_string(),
        detail,
    }
}

/// A denial's reason: the rules of a comment (one line, not empty, at most
/// [`MAX_COMMENT_CHARS`]).
pub fn check_reason(reason: &str) -> Result<&str, ResolveError> {
    check_comment(reason).map_err(|e| match e {
        ResolveError::BadComment { why } => ResolveError::BadReason {
            why: why.replace(
                "say what was done, e.g. \"answered by phone, ticket 4711\"",
                "say why the release is denied",
            ),
        },
        other => other,
    })
}

fn check_comment(comment: &str) -> Result<&str, ResolveError> {
    let comment = comment.trim();
    let bad = |why: &str| {
        Err(ResolveError::BadComment {
            why: why.to_string(),
        })
    };
    if comment.is_empty() {
        return bad("empty; say what was done, e.g. \"answered by phone, ticket 4711\"");
    }
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return bad(&format!("longer than {MAX_COMMENT_CHARS} characters"));
    }
    if comment.chars().any(char::is_control) {
        return bad("contains control characters (line breaks, tabs)");
    }
    Ok(comment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_actor_is_the_sudo_user_then_the_user_then_the_uid() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(Actor::from_vars(s("alice"), s("root"), 0).as_str(), "alice");
        assert_eq!(Actor::from_vars(None, s("bob"), 1000).as_str(), "bob");
        assert_eq!(Actor::from_vars(s(" "), s(""), 1000).as_str(), "uid 1000");
        assert_eq!(Actor::from_vars(s("x\ny"), None, 7).as_str(), "uid 7");
    }

    #[test]
    fn comments_must_say_something_on_one_line() {
        assert_eq!(
            check_comment("  done by phone ").ok(),
            Some("done by phone")
        );
        assert!(check_comment("   ").is_err());
        assert!(check_comment("a\nb").is_err());
        assert!(check_comment(&"x".repeat(MAX_COMMENT_CHARS + 1)).is_err());
    }

    /// A denial's reason follows the comment rules, and the refusal asks for a reason, not for
    /// "what was done".
    #[test]
    fn a_deny_reason_must_say_something_on_one_line() {
        assert_eq!(
            check_reason(" no consent on file ").ok(),
            Some("no consent on file")
        );
        for bad in ["", "  ", "no consent\nticket 4711", "tab\there"] {
            match check_reason(bad) {
                Err(ResolveError::BadReason { why }) => {
                    assert!(!why.contains("what was done"), "{bad:?}: {why}");
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        match check_reason("") {
            Err(ResolveError::BadReason { why }) => {
                assert!(why.contains("say why the release is denied"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// `approve --all` approves what awaits approval, earliest deadline first, and nothing
    /// else (not a task that is merely open, nor one already approved).
    #[test]
    fn approve_all_lists_exactly_the_tasks_awaiting_approval_earliest_deadline_first() {
        use ttp_proto::{BloomFilter, ElementRequest, IdatElement, SendIdatSubject, TaskKind};
        let dir = tempfile::tempdir().unwrap();
        let opts = crate::store::StoreOptions::new(dir.path(), crate::store::IdatKey::generate());
        let store = Store::open(&opts).unwrap();
        let now = Utc::now();
        let send = |id: &str, state: TaskState, hours: i64| {
            let mut t = crate::testkit::task(
                &format!("send_idat/{id}"),
                TaskKind::SendIdat {
                    task_id: id.into(),
                    subject: SendIdatSubject::BloomFilter(BloomFilter(vec![1; 8])),
                    elements: vec![ElementRequest::Known(IdatElement::Given)],
                },
                state,
                now,
            );
            t.task.expires = Some(now + chrono::Duration::hours(hours));
            t
        };
        store
            .put_tasks(&[
                send("late", TaskState::AwaitingApproval, 48),
                send("soon", TaskState::AwaitingApproval, 2),
                send("ready", TaskState::Received, 1),
                send("answered", TaskState::Done { at: now }, 1),
            ])
            .unwrap();
        let keys: Vec<String> = awaiting_approval(&store)
            .unwrap()
            .into_iter()
            .map(|k| k.0)
            .collect();
        assert_eq!(keys, ["send_idat/soon", "send_idat/late"]);
    }
}
