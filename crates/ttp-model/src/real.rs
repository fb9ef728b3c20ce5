//! The seam to the agent: model values become the agent's own types, the agent's own
//! functions decide, and the result is read back into model values. Nothing here decides a
//! transition by itself except where a comment says the agent's rule is not yet a function
//! the model can call (then it mirrors the named code line by line, to be replaced when the
//! domain exposes it).

use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use ttp_agent::agent::handlers::{self, Effect, dic_psn_available, send_idat};
use ttp_agent::agent::{merge, plan, register, retry};
use ttp_agent::client::classify::{PsnVerdict, classify_psn};
use ttp_agent::client::{ErrorClass, Operation, TtpError};
use ttp_agent::domain::{
    Approval, Attention, Closure, Idat, LocalRecord, RecordHead, RecordState, TaskRecord,
    TaskState, assign_pseudonym_to,
};
use ttp_proto::{
    BloomFilter, ElementRequest, IdatElement, PsnResponse, PsnResult, SendIdatSubject, Task,
    TaskKey, TaskKind,
};

use crate::state::{
    CAP, MAttn, MEffect, MPatient, MRecord, MTask, MTaskState, Net, PsnReply, RECORDS, RecState,
    Rel, Relisting, TaskId, USERS,
};

/// One tick of model time.
pub const TICK: Duration = Duration::minutes(1);
/// The in-doubt settle time (`[dispatch]`, 2 × timeout): one tick.
pub const SETTLE: Duration = Duration::minutes(1);
/// `[submit] recheck_after`: two ticks.
pub const RECHECK_AFTER: Duration = Duration::minutes(2);
/// Ticks from raising a `send_idat` to its deadline.
pub const DEADLINE: Rel = 2;

pub const STUDY: &str = "study-a";
pub const TARGET: &str = "dic-a";
pub const TASK_ID: &str = "t-1";
/// The elements the `send_idat` task asks for. R0's IDAT holds the first and the third, not
/// the second (missing: the answer goes "as far as known"); the site's release list withholds
/// the third ([`WITHHELD`]).
pub const REQUESTED: [IdatElement; 3] = [
    IdatElement::Family,
    IdatElement::Birthdate,
    IdatElement::Gender,
];
/// Held by R0 but never requested: sending it breaks data minimisation.
pub const NOT_REQUESTED: IdatElement = IdatElement::Given;
/// Requested and held by R0, but outside the site's release list: never sent.
pub const WITHHELD: IdatElement = IdatElement::Gender;

/// The site's configured `[dispatch] release_elements` (also the ghost the property
/// `no_element_outside_release_list` judges by): every element but [`WITHHELD`].
pub fn released() -> Vec<IdatElement> {
    IdatElement::ALL
        .into_iter()
        .filter(|e| *e != WITHHELD)
        .collect()
}

/// The release policy the agent is configured with, as `config` builds it.
pub fn release_policy() -> send_idat::ReleaseElements {
    send_idat::ReleaseElements::only(released())
}

/// The default release policy (every element), which the seeded bug `send_withheld` prepares
/// with.
pub fn default_release_policy() -> send_idat::ReleaseElements {
    send_idat::ReleaseElements::default()
}
/// The poll number the conversions are relative to (see [`to_task_record`]).
const POLL_BASE: u64 = 1000;

/// "Now" for every conversion: the model keeps times relative to it.
pub fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

pub fn abs(r: Rel) -> DateTime<Utc> {
    now() + TICK * i32::from(r)
}

/// The model time of an instant: whole ticks, rounded up (one second from now is the next
/// tick: what is due "in a second" is due once the clock has moved on), saturating.
pub fn rel(t: DateTime<Utc>) -> Rel {
    let secs = (t - now()).num_seconds();
    let tick = TICK.num_seconds();
    let ticks = secs.div_euclid(tick) + i64::from(secs.rem_euclid(tick) != 0);
    ticks.clamp(i64::from(-CAP), i64::from(CAP)) as Rel
}

pub fn filter(r: usize) -> BloomFilter {
    BloomFilter(vec![0xB0 | r as u8; 8])
}

pub fn pseudonym(r: usize) -> String {
    format!("psn-{r}")
}

fn pseudonym_index(p: &str) -> Option<u8> {
    (0..RECORDS).find(|&r| pseudonym(r) == p).map(|r| r as u8)
}

/// The task the fTTP raises, as the agent parses it, and its key (computed once: the key of a
/// content-identified task is a digest, and conversions happen millions of times).
pub fn wire_task(t: TaskId, expires: Option<Rel>) -> (TaskKey, Task) {
    static TASKS: OnceLock<Vec<(TaskKey, Task)>> = OnceLock::new();
    let all = TASKS.get_or_init(|| {
        crate::state::TASKS
            .iter()
            .map(|&t| {
                let task = build_wire_task(t);
                (task.key(), task)
            })
            .collect()
    });
    let (key, mut task) = all[t.index()].clone();
    task.expires = expires.map(abs);
    (key, task)
}

fn build_wire_task(t: TaskId) -> Task {
    let kind = match t {
        TaskId::SendIdat => TaskKind::SendIdat {
            task_id: TASK_ID.into(),
            subject: SendIdatSubject::Both {
                pseudonym: pseudonym(0),
                bloom_filter: filter(0),
            },
            elements: REQUESTED
                .iter()
                .map(|e| ElementRequest::Known(*e))
                .collect(),
        },
        TaskId::Repeat => TaskKind::RepeatRequest {
            study: STUDY.into(),
            bloom_filter: filter(1),
            target: TARGET.into(),
        },
        TaskId::Dic => TaskKind::DicPsnAvailable {
            bloom_filter: filter(1),
            target: TARGET.into(),
            pseudonym: pseudonym(1),
        },
    };
    Task {
        kind,
        expires: None,
        unknown_parts: Vec::new(),
    }
}

pub fn task_id_of(rec: &TaskRecord) -> TaskId {
    match rec.task.kind {
        TaskKind::SendIdat { .. } => TaskId::SendIdat,
        TaskKind::RepeatRequest { .. } => TaskId::Repeat,
        _ => TaskId::Dic,
    }
}

fn to_attention(a: MAttn) -> Attention {
    match a {
        MAttn::UnknownRecord => Attention::UnknownRecord,
        MAttn::MissingElements => Attention::MissingElements(vec![REQUESTED[1]]),
        MAttn::Rejected => Attention::Rejected {
            status: 422,
            detail: String::new(),
        },
        MAttn::PseudonymConflict => Attention::PseudonymConflict,
        MAttn::SubjectMismatch => Attention::SubjectMismatch,
        MAttn::ForeignStudy => Attention::ForeignStudy {
            study: String::new(),
            target: String::new(),
        },
        MAttn::StillListed { answered_at } => Attention::StillListed {
            answered_at: abs(answered_at),
        },
        MAttn::IdatPurged => Attention::IdatPurged,
        MAttn::Other => Attention::Handled,
    }
}

pub fn from_attention(a: &Attention) -> MAttn {
    match a {
        Attention::UnknownRecord => MAttn::UnknownRecord,
        Attention::MissingElements(_) => MAttn::MissingElements,
        Attention::Rejected { .. } => MAttn::Rejected,
        Attention::PseudonymConflict => MAttn::PseudonymConflict,
        Attention::SubjectMismatch => MAttn::SubjectMismatch,
        Attention::ForeignStudy { .. } => MAttn::ForeignStudy,
        Attention::StillListed { answered_at } => MAttn::StillListed {
            answered_at: rel(*answered_at),
        },
        Attention::IdatPurged => MAttn::IdatPurged,
        _ => MAttn::Other,
    }
}

fn to_state(s: MTaskState) -> TaskState {
    match s {
        MTaskState::Received => TaskState::Received,
        MTaskState::Running => TaskState::Running,
        MTaskState::InDoubt => TaskState::InDoubt,
        MTaskState::RetryWait { next_at } => TaskState::RetryWait {
            next_at: abs(next_at),
        },
        MTaskState::Attention(a) => TaskState::NeedsAttention {
            reason: to_attention(a),
        },
        MTaskState::Done { at } => TaskState::Done { at: abs(at) },
        MTaskState::Expired => TaskState::Expired { at: now() },
        MTaskState::AwaitingApproval => TaskState::AwaitingApproval,
        MTaskState::Closed => TaskState::Closed {
            at: now(),
            why: Closure::Denied {
                by: USERS[0].into(),
                reason: "no consent on file".into(),
            },
        },
        MTaskState::Withdrawn => TaskState::Closed {
            at: now(),
            why: Closure::Withdrawn {
                local_id: local_id(0),
            },
        },
    }
}

fn from_state(s: &TaskState) -> MTaskState {
    match s {
        TaskState::Received => MTaskState::Received,
        TaskState::Running => MTaskState::Running,
        TaskState::InDoubt => MTaskState::InDoubt,
        TaskState::RetryWait { next_at } => MTaskState::RetryWait {
            next_at: rel(*next_at),
        },
        TaskState::NeedsAttention { reason } => MTaskState::Attention(from_attention(reason)),
        TaskState::Done { at } => MTaskState::Done { at: rel(*at) },
        TaskState::Expired { .. } => MTaskState::Expired,
        TaskState::AwaitingApproval => MTaskState::AwaitingApproval,
        TaskState::Closed {
            why: Closure::Withdrawn { .. },
            ..
        } => MTaskState::Withdrawn,
        TaskState::Closed { .. } => MTaskState::Closed,
    }
}

/// The agent's `TaskRecord` for a stored model task. The poll numbers are relative to
/// [`POLL_BASE`], the number of the latest successful poll stored.
pub fn to_task_record(t: TaskId, m: &MTask) -> TaskRecord {
    let (key, task) = wire_task(t, m.expires);
    TaskRecord {
        key,
        task,
        state: to_state(m.state),
        attempts: 0,
        last_error: None,
        first_seen: now(),
        updated_at: abs(m.updated),
        last_seen_poll: POLL_BASE - u64::from(m.since_seen),
        approvals: (0..USERS.len())
            .filter(|u| m.approvals & (1 << u) != 0)
            .map(|u| Approval {
                by: USERS[u].into(),
                at: now(),
            })
            .collect(),
    }
}

pub fn from_task_record(rec: &TaskRecord) -> MTask {
    MTask {
        state: from_state(&rec.state),
        updated: rel(rec.updated_at),
        expires: rec.task.expires.map(rel),
        since_seen: POLL_BASE.saturating_sub(rec.last_seen_poll).min(2) as u8,
        approvals: rec
            .approvals
            .iter()
            .filter_map(|a| USERS.iter().position(|u| *u == a.by))
            .fold(0, |bits, u| bits | (1 << u)),
    }
}

fn to_record_state(s: RecState) -> RecordState {
    match s {
        RecState::New => RecordState::New,
        RecState::Sending => RecordState::Sending { batch: 1 },
        RecState::AwaitingClearing => RecordState::AwaitingClearing,
        RecState::Pseudonymised => RecordState::Pseudonymised,
        RecState::Rejected => RecordState::Rejected {
            code: "not-found".into(),
        },
    }
}

fn from_record_state(s: &RecordState) -> RecState {
    match s {
        RecordState::New => RecState::New,
        RecordState::Sending { .. } => RecState::Sending,
        RecordState::AwaitingClearing => RecState::AwaitingClearing,
        RecordState::Pseudonymised => RecState::Pseudonymised,
        RecordState::Rejected { .. } => RecState::Rejected,
    }
}

/// The local id of record `r`.
pub fn local_id(r: usize) -> String {
    format!("case-{r}")
}

pub fn to_head(r: usize, m: &MRecord) -> RecordHead {
    RecordHead {
        local_id: local_id(r),
        bloom_filter: filter(r).0,
        state: to_record_state(m.state),
        pseudonym: m.pseudonym.map(|p| pseudonym(usize::from(p))),
        created_at: now(),
        updated_at: abs(m.updated),
    }
}

pub fn from_head(h: &RecordHead) -> MRecord {
    MRecord {
        state: from_record_state(&h.state),
        pseudonym: h.pseudonym.as_deref().and_then(pseudonym_index),
        updated: rel(h.updated_at),
    }
}

/// R0's IDAT: the family name (requested), the given name (not requested) and the gender
/// (requested, withheld by the release list); no birth date (requested, so the answer goes "as
/// far as known"). `None` once purged (`purge_idat` drops the sealed IDAT, keeps the head).
fn local_record(r: usize, m: &MRecord, purged: bool) -> LocalRecord {
    let mut idat = Idat::default();
    idat.0.insert(IdatElement::Family, "Muster".into());
    idat.0.insert(NOT_REQUESTED, "Erika".into());
    idat.0.insert(WITHHELD, "female".into());
    LocalRecord {
        head: to_head(r, m),
        idat: (!purged).then_some(idat),
    }
}

// ---- listing merge, in-doubt reconciliation, expiry, readiness: agent::merge/expire/plan ----

/// `merge::merge_listed` and `TaskRecord::relisted_after_answer`, as `merge::merge_listing`
/// applies them to one listed task.
pub fn merge_listed(t: TaskId, existing: Option<&MTask>, expires: Option<Rel>) -> MTask {
    let (key, task) = wire_task(t, expires);
    let existing = existing.map(|m| to_task_record(t, m));
    let mut rec = merge::merge_listed(existing, key, task, now(), POLL_BASE);
    rec.relisted_after_answer(SETTLE, now());
    from_task_record(&rec)
}

/// What the cycle does to one open task after the merge: `merge::review_open` (caught up,
/// in-doubt judged, expired).
pub fn reconcile(t: TaskId, m: &MTask, listed_now: bool, relisting: Relisting) -> MTask {
    let mut rec = to_task_record(t, m);
    merge::review_open(
        &mut rec,
        listed_now,
        match relisting {
            Relisting::UntilDone => merge::Relisting::UntilDone,
            Relisting::Once => merge::Relisting::Once,
        },
        SETTLE,
        now(),
    );
    from_task_record(&rec)
}

/// `TaskRecord::interrupted`, as `Agent::recover` applies it to a task found `Running`.
pub fn interrupted(t: TaskId, m: &MTask) -> MTask {
    let mut rec = to_task_record(t, m);
    rec.interrupted();
    from_task_record(&rec)
}

/// `TaskRecord::expire_if_due`, as the dispatcher applies it to a ready task.
pub fn expire_if_due(t: TaskId, m: &MTask) -> MTask {
    let mut rec = to_task_record(t, m);
    rec.expire_if_due(now());
    from_task_record(&rec)
}

/// `TaskRecord::is_past_deadline`: the dispatcher's last check before a request leaves.
pub fn is_past_deadline(t: TaskId, m: &MTask) -> bool {
    to_task_record(t, m).is_past_deadline(now())
}

/// `TaskRecord::begin_effect`: the intent written (and flushed) before the request leaves.
pub fn begin_effect(t: TaskId, m: &MTask) -> MTask {
    let mut rec = to_task_record(t, m);
    rec.begin_effect(now());
    from_task_record(&rec)
}

// ---- consent withdrawal: TaskRecord::subject_parts/withdrawn, Store::withdrawn_subject ----

/// `Store::withdrawn_subject` for the task's `subject_parts`: the withdrawn record whose
/// filter or pseudonym the task names. (The store matches keyed digests of both; the model
/// compares the values, which the digests stand for one to one.)
pub fn withdrawn_subject(t: TaskId, m: &MTask, store: &crate::state::Store) -> Option<usize> {
    let rec = to_task_record(t, m);
    let (filters, pseudonyms) = rec.subject_parts();
    (0..RECORDS).find(|&r| {
        store.withdrawn[r]
            && (filters.contains(&filter(r).0.as_slice())
                || store.records[r]
                    .pseudonym
                    .is_some_and(|p| pseudonyms.contains(&pseudonym(usize::from(p)).as_str())))
    })
}

/// `TaskRecord::withdrawn`, as the dispatcher and `withdraw` apply it. `None`: not changed
/// (final, or `Running`: its request may be on the wire).
pub fn withdrawn(t: TaskId, m: &MTask, r: usize) -> Option<MTask> {
    let mut rec = to_task_record(t, m);
    rec.withdrawn(&local_id(r), now())
        .then(|| from_task_record(&rec))
}

// ---- retention purge of IDAT: Agent::purge, Store::purge_idat ----

/// `[store] idat_retention`: one tick.
pub const IDAT_RETENTION: Duration = Duration::minutes(1);

/// `Store::purge_idat`'s rule for one record (it reads the stored record, not a head the model
/// can hand it, so the rule is mirrored here line by line): finished (`Pseudonymised` or
/// `Rejected`), and last updated before now − `idat_retention` (the caller checks that it still
/// holds IDAT and that no open task refers to it).
pub fn idat_purge_due(r: usize, m: &MRecord) -> bool {
    let head = to_head(r, m);
    let finished = matches!(
        head.state,
        RecordState::Pseudonymised | RecordState::Rejected { .. }
    );
    finished && head.updated_at < now() - IDAT_RETENTION
}

/// `Agent::purge`'s `keep`: an open task's `subjects` include the record's filter or its
/// pseudonym.
pub fn refers_to(t: TaskId, m: &MTask, store: &crate::state::Store, r: usize) -> bool {
    let rec = to_task_record(t, m);
    let head = to_head(r, &store.records[r]);
    let subjects = rec.subjects();
    subjects.contains(&head.bloom_filter.as_slice())
        || head
            .pseudonym
            .as_ref()
            .is_some_and(|p| subjects.contains(&p.as_bytes()))
}

// ---- approval of releases: TaskRecord::needs_approval/hold_for_approval/approved_by/denied_by ----

/// The dispatcher's approval check (`dispatch_wave`): a task that `needs_approval(required)`
/// and that `hold_for_approval` puts aside. `None`: the task goes on to its handler.
pub fn held_for_approval(t: TaskId, m: &MTask, required: u8) -> Option<MTask> {
    let mut rec = to_task_record(t, m);
    (rec.needs_approval(usize::from(required)) && rec.hold_for_approval(now()))
        .then(|| from_task_record(&rec))
}

/// `TaskRecord::approved_by` (what `resolve::approve_task` applies), by `USERS[user]`.
/// `None`: refused (not awaiting approval, past the deadline, this user approved already).
pub fn approved_by(t: TaskId, m: &MTask, user: u8, required: u8) -> Option<MTask> {
    let mut rec = to_task_record(t, m);
    rec.approved_by(USERS[usize::from(user)], usize::from(required), now())
        .ok()
        .map(|_| from_task_record(&rec))
}

/// `TaskRecord::denied_by` (what `resolve::deny_task` applies). `None`: refused.
pub fn denied_by(t: TaskId, m: &MTask, user: u8) -> Option<MTask> {
    let mut rec = to_task_record(t, m);
    rec.denied_by(USERS[usize::from(user)], "no consent on file", now())
        .ok()
        .map(|()| from_task_record(&rec))
}

/// `plan::ready` over the stored tasks: which to work on now, in the agent's order.
pub fn ready(tasks: &[(TaskId, MTask)]) -> Vec<TaskId> {
    plan::ready(tasks.iter().map(|(t, m)| to_task_record(*t, m)), now())
        .iter()
        .map(task_id_of)
        .collect()
}

/// Whether the task is open (not final): `idx_open_tasks` holds exactly these.
pub fn is_open(t: TaskId, m: &MTask) -> bool {
    to_task_record(t, m).state.is_open()
}

/// Whether the dispatcher writes an intent first (`dispatch.rs`, `sends_request`).
pub fn sends_request(t: TaskId) -> bool {
    // dispatch.rs: `matches!(kind, SendIdat | RepeatRequest)`; private there.
    matches!(t, TaskId::SendIdat | TaskId::Repeat)
}

// ---- handlers ----

/// What the dispatcher's `assign_pseudonym` makes of a handler's pseudonym: the records of the
/// filter get it (`domain::assign_pseudonym_to`), and the effect becomes a need for a person
/// on a conflict or a missing record (`PseudonymFor::effect_after`).
fn assign(
    records: &[MRecord; RECORDS],
    outcome: handlers::Outcome,
) -> (MEffect, Vec<(usize, MRecord)>) {
    let Some(given) = outcome.pseudonym else {
        return (effect_of(outcome.effect), Vec::new());
    };
    let heads: Vec<RecordHead> = (0..RECORDS)
        .filter(|&r| filter(r) == given.bloom_filter)
        .map(|r| to_head(r, &records[r]))
        .collect();
    let assignment = assign_pseudonym_to(heads, &given.pseudonym, now());
    let changed = assignment
        .changed
        .iter()
        .filter_map(|h| {
            let r = (0..RECORDS).find(|&r| format!("case-{r}") == h.local_id)?;
            Some((r, from_head(h)))
        })
        .collect();
    (
        effect_of(given.effect_after(outcome.effect, &assignment)),
        changed,
    )
}

/// `handlers::dic_psn_available::handle` and the dispatcher's assignment, on the process's
/// view of the records.
pub fn handle_dic(records: &[MRecord; RECORDS]) -> (MEffect, Vec<(usize, MRecord)>) {
    assign(
        records,
        dic_psn_available::handle(&filter(1), &pseudonym(1)),
    )
}

fn error(op: Operation, net: Net) -> TtpError {
    let class = match net {
        Net::LostAfterEffect => ErrorClass::InDoubt,
        Net::Unreachable | Net::Answered => ErrorClass::Transient,
    };
    TtpError {
        op,
        class,
        status: None,
        detail: String::new(),
        retry_after: None,
        from_token_endpoint: false,
    }
}

fn effect_of(e: Effect) -> MEffect {
    match e {
        Effect::Done => MEffect::Done,
        Effect::DoneWithout { .. } => MEffect::DoneWithout,
        Effect::Retry { .. } => MEffect::Retry,
        Effect::InDoubt { .. } => MEffect::InDoubt,
        Effect::Attention(a) => MEffect::Attention(from_attention(&a)),
        Effect::AuthFailed { .. } => MEffect::AuthFailed,
    }
}

/// The dispatcher's preparation of a `send_idat` answer (`dispatch.rs`: `find_record`, then
/// `send_idat::prepare` with the configured policies), before the task's intent: which record,
/// and the Patient to send. `Err` is the effect when nothing is sent.
///
/// A withdrawn record is removed from the store: neither its pseudonym nor its filter finds
/// it. R0 has a twin, though: a second local id of the same person (submitted twice: the same
/// filter, the same IDAT, so the same pseudonym; `find_record` takes the first record of a
/// filter), which nobody withdraws; its registration is R0's and is not modelled apart. Once
/// R0 is withdrawn the lookups find the twin, as they would in the store: only the
/// dispatcher's withdrawal check, which matches the task's filter, keeps its IDAT from
/// answering a task about the withdrawn record.
pub fn prepare_send_idat(
    store: &crate::state::Store,
    requested: &[IdatElement],
    release: &send_idat::ReleaseElements,
) -> Result<MPatient, MEffect> {
    let found = |r: usize| {
        let mut rec = local_record(r, &store.records[r], store.idat_purged[r]);
        if store.withdrawn[r] {
            rec.head.local_id = format!("{}-twin", local_id(r));
        }
        rec
    };
    let by_pseudonym = (0..RECORDS)
        .find(|&r| store.records[r].pseudonym == Some(0))
        .map(found);
    let by_filter = Some(found(0));
    let lookup = send_idat::resolve_subject(by_pseudonym, by_filter);
    let elements: Vec<ElementRequest> = requested
        .iter()
        .map(|e| ElementRequest::Known(*e))
        .collect();
    match send_idat::prepare(
        lookup,
        &elements,
        send_idat::MissingElementsPolicy::SendKnown,
        release,
    ) {
        Ok(p) => Ok(MPatient {
            carries: element_bits(&p.sent()),
            without: !p.missing.is_empty() || !p.withheld.is_empty(),
        }),
        Err(a) => Err(MEffect::Attention(from_attention(&a))),
    }
}

/// Elements as bits over `IdatElement::ALL`.
pub fn element_bits(elements: &[IdatElement]) -> u16 {
    elements
        .iter()
        .filter_map(|e| IdatElement::ALL.iter().position(|a| a == e))
        .fold(0, |bits, i| bits | (1 << i))
}

/// Whether a prepared Patient carries `element`.
pub fn carries(p: &MPatient, element: IdatElement) -> bool {
    p.carries & element_bits(&[element]) != 0
}

/// The end of `handlers::send_idat::handle`: what the answer to `$providePatientData` means.
pub fn send_idat_effect(net: Net, missing: bool) -> MEffect {
    match net {
        Net::Answered if missing => MEffect::DoneWithout,
        Net::Answered => MEffect::Done,
        _ => effect_of(handlers::effect_of_error(
            &error(Operation::ProvidePatientData, net),
            false,
        )),
    }
}

/// The end of `handlers::repeat_request::handle` for R1's filter (the part after the request;
/// the handler is async over the client, so its verdict is mirrored here step by step:
/// `classify_psn`, then the filter's pseudonym), then the dispatcher's assignment.
pub fn repeat_effect(
    records: &[MRecord; RECORDS],
    reply: PsnReply,
) -> (MEffect, Vec<(usize, MRecord)>) {
    let sent = [filter(1)];
    let (verdict, response) = psn_verdict(&sent, reply);
    let outcome = match (verdict, response, reply) {
        (PsnVerdict::PerFilter, Some(response), _) => {
            match response
                .pseudonyms
                .iter()
                .find(|p| p.bloom_filter == sent[0])
            {
                None => handlers::Outcome::effect(Effect::Done),
                Some(psn) => handlers::Outcome {
                    effect: Effect::Done,
                    pseudonym: Some(handlers::PseudonymFor {
                        bloom_filter: sent[0].clone(),
                        pseudonym: psn.pseudonym.clone(),
                        unknown_record: None,
                    }),
                },
            }
        }
        (_, None, PsnReply::Failed(net)) => handlers::Outcome::effect(handlers::effect_of_error(
            &error(Operation::RequestPsn, net),
            true,
        )),
        _ => handlers::Outcome::effect(Effect::Retry {
            error: String::new(),
            retry_after: None,
        }),
    };
    assign(records, outcome)
}

fn psn_verdict(sent: &[BloomFilter], reply: PsnReply) -> (PsnVerdict, Option<PsnResponse>) {
    match reply {
        PsnReply::Answer(psns) => {
            let response = PsnResponse {
                pseudonyms: psns
                    .iter()
                    .enumerate()
                    .filter_map(|(r, p)| {
                        p.map(|p| PsnResult {
                            bloom_filter: filter(r),
                            target: TARGET.into(),
                            pseudonym: pseudonym(usize::from(p)),
                        })
                    })
                    .filter(|p| sent.contains(&p.bloom_filter))
                    .collect(),
                errors: Vec::new(),
                request_errors: Vec::new(),
                problems: Vec::new(),
            };
            (classify_psn(sent, Ok(&response)), Some(response))
        }
        PsnReply::Failed(net) => {
            let err = error(Operation::RequestPsn, net);
            (classify_psn(sent, Err(&err)), None)
        }
    }
}

// ---- registration: submit.rs ----

/// `submit::needs_registration` for the records `register_pending` picks (new, interrupted,
/// and quiet clearings; the caller adds "no open task refers to it").
pub fn needs_registration(r: usize, m: &MRecord) -> bool {
    register::needs_registration(&to_head(r, m), now(), RECHECK_AFTER)
}

/// `RecordHead::sending`: the registration intent (`mark_sending` writes the heads it changed
/// and flushes them before the request leaves).
pub fn sending(r: usize, m: &MRecord) -> MRecord {
    let mut head = to_head(r, m);
    head.sending(1);
    from_head(&head)
}

/// `classify_psn` and `apply_psn_response` for one registration batch. `None`: the answer
/// judges no record (they stay `Sending`).
pub fn apply_registration(
    records: &[MRecord; RECORDS],
    batch: [bool; RECORDS],
    reply: PsnReply,
) -> Option<Vec<(usize, MRecord)>> {
    let members: Vec<usize> = (0..RECORDS).filter(|&r| batch[r]).collect();
    let sent: Vec<BloomFilter> = members.iter().map(|&r| filter(r)).collect();
    let (verdict, response) = psn_verdict(&sent, reply);
    let (PsnVerdict::PerFilter, Some(response)) = (verdict, response) else {
        return None;
    };
    let mut heads: Vec<RecordHead> = members.iter().map(|&r| to_head(r, &records[r])).collect();
    let mut stats = register::RegisterStats::default();
    register::apply_psn_response(&mut heads, &response, now(), &mut stats);
    Some(
        members
            .iter()
            .zip(&heads)
            .map(|(&r, h)| (r, from_head(h)))
            .collect(),
    )
}

/// An empty answer, as if the fTTP had answered "clearing runs" for every filter: what the
/// seeded bug `lost_registration_answer_done` makes of a lost answer.
pub fn apply_empty_registration(
    records: &[MRecord; RECORDS],
    batch: [bool; RECORDS],
) -> Vec<(usize, MRecord)> {
    apply_registration(records, batch, PsnReply::Answer([None; RECORDS])).unwrap_or_default()
}

// ---- outcome of a handler: dispatch.rs `settle` ----

/// The task's state after its handler ran: `TaskRecord::after_effect`, with the retry time
/// from `retry::next_attempt_with` at the smallest draw (no jitter: the earliest retry, the
/// most demanding case).
pub fn after_effect(t: TaskId, m: &MTask, effect: MEffect) -> MTask {
    let mut rec = to_task_record(t, m);
    let now = now();
    let settings = retry::RetrySettings::default();
    rec.after_effect(to_effect(effect), now, |attempts, retry_after, deadline| {
        retry::next_attempt_with(attempts, &settings, retry_after, deadline, now, 0)
    });
    from_task_record(&rec)
}

fn to_effect(e: MEffect) -> Effect {
    match e {
        MEffect::Done => Effect::Done,
        MEffect::DoneWithout => Effect::DoneWithout {
            missing: vec![REQUESTED[1]],
            withheld: vec![WITHHELD],
        },
        MEffect::Retry => Effect::Retry {
            error: String::new(),
            retry_after: None,
        },
        MEffect::InDoubt => Effect::InDoubt {
            error: String::new(),
        },
        MEffect::Attention(a) => Effect::Attention(to_attention(a)),
        MEffect::AuthFailed => Effect::AuthFailed {
            error: String::new(),
        },
    }
}

// ---- logs and hand-over: store::psn_log, domain::disclosure, CycleError (handover.rs) ----

/// `psn_log::logged_pseudonym`: the pseudonym a record's write appends to the pseudonym log
/// (in the record's transaction).
pub fn logged_pseudonym(old: Option<u8>, new: Option<u8>) -> Option<u8> {
    let (old, new) = (
        old.map(|p| pseudonym(usize::from(p))),
        new.map(|p| pseudonym(usize::from(p))),
    );
    ttp_agent::store::logged_pseudonym(old.as_deref(), new.as_deref()).and_then(pseudonym_index)
}

/// `psn_log::handover_window`: how many events after `cursor` a consumer hands over, given
/// the log's head at the last flush.
pub fn handover_window(cursor: u8, flushed_head: u8, limit: usize) -> u8 {
    ttp_agent::store::handover_window(u64::from(cursor), u64::from(flushed_head), limit) as u8
}

/// What `domain::disclosure::step` appends to the disclosure log when the stored `send_idat`
/// goes from `old` to `new` (in the task's transaction).
pub fn disclosure_event(old: Option<&MTask>, new: &MTask) -> Option<crate::handover::Entry> {
    use crate::handover::Entry;
    use ttp_agent::domain::DisclosureEvent as E;
    let old = old.map(|m| to_state(m.state));
    let event =
        ttp_agent::domain::disclosure::step(old.as_ref(), &to_task_record(TaskId::SendIdat, new))?
            .event?;
    Some(match event {
        E::Accepted => Entry::Accepted,
        E::SettledAccepted => Entry::SettledAccepted,
        E::InDoubt => Entry::InDoubt,
        E::SettledSentAgain => Entry::SettledSentAgain,
        E::SettledExpired | E::SettledHandled | E::SettledUnknown => Entry::SettledUnknown,
    })
}

/// `CycleError::into_stop` for a failed store write: whether the daemon stops (then the
/// failure is the model's crash transition: the failed transaction is not committed, the
/// process ends, and what the next start finds is a prefix of the commits) or goes on.
pub fn store_error_stops_the_daemon() -> bool {
    ttp_agent::agent::CycleError::Store(ttp_agent::store::StoreError::Invalid {
        what: "store write",
        why: "failed".into(),
    })
    .into_stop()
    .is_ok()
}
