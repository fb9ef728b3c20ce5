//! The model: who may move in a state (the agent's next step, a crash, the clock, the fTTP)
//! and what each move does. The agent's decisions are the agent's own functions (`real.rs`);
//! this file only orders them as the daemon does (ARCHITECTURE.md, "Durability argument":
//! registration, listing, merge, reconcile and expiry, intent, effect, outcome; recovery at
//! start-up) and puts a flush where the daemon flushes.

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};

use stateright::Model;

use crate::real;
use crate::state::{
    FTask, Fttp, Handled, MEffect, MRecord, MTask, MTaskState, Net, Pc, Prep, PsnReply, RECORDS,
    RecState, ReleaseGhost, Relisting, State, Store, TASKS, TaskId, USER_A, USER_A_AGAIN,
};

/// A deliberate bug, wired into the model (never into the agent), to show that the checker
/// finds what it is meant to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeededBug {
    /// A task's request leaves before its `Running` intent is flushed.
    NoIntentFlush,
    /// An in-doubt `send_idat` is settled as done without a listing that proves it.
    InDoubtDoneWithoutListing,
    /// A lost `$requestPsnFromBfWorkflow` answer is treated as "clearing runs".
    LostRegistrationAnswerDone,
    /// The deadline is not checked again right before a request leaves.
    NoDeadlineRecheck,
    /// A `send_idat` answer carries every element the record holds.
    SendUnrequested,
    /// Handler outcomes write the task's new state before the records it changed.
    TaskBeforeRecords,
    /// Approval model: user A's second approval is recorded as if another user gave it.
    ApprovalCountsSameUserTwice,
    /// Approval model: the dispatcher sends a `send_idat` without holding it for approval.
    SendWithoutApproval,
    /// Handover model: the consumer moves its cursor before the receiver answered 2xx.
    CursorBeforeDelivery,
    /// Handover model: a record's pseudonym and its log entry are two transactions.
    PsnWithoutLog,
    /// Handover model: the consumer hands over events not yet flushed (the code before the
    /// fix of point 7: it read the log as the process sees it).
    HandoverBeforeFlush,
    /// A task's disclosure log entry is written in a transaction of its own after the task's.
    DisclosureAfterCommit,
    /// A failed store write is logged and the agent goes on as if it had succeeded.
    ContinueAfterStoreError,
    /// `prepare` ignores the release list (`[dispatch] release_elements`).
    SendWithheld,
    /// Withdrawal model: the dispatcher does not check tasks against the withdrawals.
    WithdrawalNotChecked,
    /// Withdrawal model: the withdrawal's transaction does not take the task gate, so it may
    /// commit between the dispatcher's check and its intent write (the code before the fix,
    /// ARCHITECTURE.md "Durability argument", point 12).
    WithdrawalNotGated,
    /// Purge model: the purge drops the IDAT of records that open tasks refer to.
    PurgeIgnoresOpenTasks,
    /// Purge model: the purge leaves the IDAT readable (`prepare` still finds it).
    PurgedIdatStillSent,
    /// Purge model: `ttp-agent purge` reads the open tasks and commits the purge without the
    /// task gate (the code before the fix).
    PurgeNotGated,
}

impl SeededBug {
    pub const ALL: [SeededBug; 19] = [
        SeededBug::NoIntentFlush,
        SeededBug::InDoubtDoneWithoutListing,
        SeededBug::LostRegistrationAnswerDone,
        SeededBug::NoDeadlineRecheck,
        SeededBug::SendUnrequested,
        SeededBug::TaskBeforeRecords,
        SeededBug::ApprovalCountsSameUserTwice,
        SeededBug::SendWithoutApproval,
        SeededBug::CursorBeforeDelivery,
        SeededBug::PsnWithoutLog,
        SeededBug::HandoverBeforeFlush,
        SeededBug::DisclosureAfterCommit,
        SeededBug::ContinueAfterStoreError,
        SeededBug::SendWithheld,
        SeededBug::WithdrawalNotChecked,
        SeededBug::WithdrawalNotGated,
        SeededBug::PurgeIgnoresOpenTasks,
        SeededBug::PurgedIdatStillSent,
        SeededBug::PurgeNotGated,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SeededBug::NoIntentFlush => "no_intent_flush",
            SeededBug::InDoubtDoneWithoutListing => "in_doubt_done_without_listing",
            SeededBug::LostRegistrationAnswerDone => "lost_registration_answer_done",
            SeededBug::NoDeadlineRecheck => "no_deadline_recheck",
            SeededBug::SendUnrequested => "send_unrequested",
            SeededBug::TaskBeforeRecords => "task_before_records",
            SeededBug::ApprovalCountsSameUserTwice => "approval_counts_same_user_twice",
            SeededBug::SendWithoutApproval => "send_without_approval",
            SeededBug::CursorBeforeDelivery => "cursor_before_delivery",
            SeededBug::PsnWithoutLog => "psn_without_log",
            SeededBug::HandoverBeforeFlush => "handover_before_flush",
            SeededBug::DisclosureAfterCommit => "disclosure_after_commit",
            SeededBug::ContinueAfterStoreError => "continue_after_store_error",
            SeededBug::SendWithheld => "send_withheld",
            SeededBug::WithdrawalNotChecked => "withdrawal_not_checked",
            SeededBug::WithdrawalNotGated => "withdrawal_not_gated",
            SeededBug::PurgeIgnoresOpenTasks => "purge_ignores_open_tasks",
            SeededBug::PurgedIdatStillSent => "purged_idat_still_sent",
            SeededBug::PurgeNotGated => "purge_not_gated",
        }
    }

    /// Whether the bug lives in the approval model (a run with it checks that model).
    pub fn needs_approval_model(self) -> bool {
        matches!(
            self,
            SeededBug::ApprovalCountsSameUserTwice | SeededBug::SendWithoutApproval
        )
    }

    /// Whether the bug lives in the handover model (a run with it checks that model).
    pub fn needs_handover_model(self) -> bool {
        matches!(
            self,
            SeededBug::CursorBeforeDelivery
                | SeededBug::PsnWithoutLog
                | SeededBug::HandoverBeforeFlush
        )
    }

    /// Whether the bug lives in the withdrawal model (a run with it checks that model).
    pub fn needs_withdrawal_model(self) -> bool {
        matches!(
            self,
            SeededBug::WithdrawalNotChecked | SeededBug::WithdrawalNotGated
        )
    }

    /// Whether the bug lives in the purge model (a run with it checks that model).
    pub fn needs_purge_model(self) -> bool {
        matches!(
            self,
            SeededBug::PurgeIgnoresOpenTasks
                | SeededBug::PurgedIdatStillSent
                | SeededBug::PurgeNotGated
        )
    }

    pub fn from_name(name: &str) -> Option<SeededBug> {
        SeededBug::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// One model run's configuration.
#[derive(Clone, Debug)]
pub struct TaskModel {
    pub relisting: Relisting,
    pub crashes: u8,
    pub faults: u8,
    pub bug: Option<SeededBug>,
    /// The approval model (`[dispatch] idat_release = "approval"`) with this many
    /// `approvals_required`; `None`: automatic release, the model without users.
    pub approvals: Option<u8>,
    /// The merge reads the listed tasks, then writes them back in a later step, and users'
    /// commands may commit in between (as the daemon's control-channel threads can): off by
    /// default, see `with_merge_race`.
    pub merge_race: bool,
    /// The handover model (`with_handover`): a pseudonym hand-over consumer and its receiver.
    pub handover: bool,
    /// The withdrawal model (`withdraw.rs`): a local user withdraws R0's consent.
    pub withdraw: bool,
    /// The purge model (`purge.rs`): the cycle's housekeeping purges IDAT past retention.
    pub purge: bool,
    memo: Arc<Mutex<HashMap<u64, Cycles>>>,
}

#[derive(Clone, Copy, Debug)]
struct Cycles {
    /// A fault-free cycle changes nothing.
    fixpoint: bool,
    /// Fault-free cycles reach a fixpoint.
    converges: bool,
}

fn fingerprint(s: &State) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

impl TaskModel {
    pub fn new(relisting: Relisting, crashes: u8, faults: u8, bug: Option<SeededBug>) -> Self {
        TaskModel {
            relisting,
            crashes,
            faults,
            bug,
            // A seeded approval bug can only show in the approval model, at four eyes.
            approvals: bug.filter(|b| b.needs_approval_model()).map(|_| 2),
            merge_race: false,
            handover: bug.is_some_and(|b| b.needs_handover_model()),
            withdraw: bug.is_some_and(|b| b.needs_withdrawal_model()),
            purge: bug.is_some_and(|b| b.needs_purge_model()),
            memo: Arc::default(),
        }
    }

    /// The approval model: local users approve (A, B, A again) or deny the `send_idat`
    /// while it awaits approval, at any point of the agent's cycle (`approve` and `deny` run
    /// beside the daemon or without it); no `repeat_request` is raised, to keep the model to
    /// what approval touches.
    pub fn with_approval(mut self, required: u8) -> Self {
        self.approvals = Some(required.max(1));
        self
    }

    /// The cycle's merge as two steps (read the listed tasks' stored copies; write the merged
    /// records blindly), so that a user's `approve` or `deny` can commit between them, as the
    /// cycle allowed before `Store::task_gate`. Off in the runs of `scripts/model-check.sh`
    /// (the gate makes the merge one step for commands): it finds the lost denial the gate
    /// fixed (ARCHITECTURE.md, "Which check backs which claim: the model checker").
    pub fn with_merge_race(mut self) -> Self {
        self.merge_race = true;
        self
    }

    /// The handover model (`handover.rs`): the delivery webhook's worker hands the pseudonym
    /// log over to a receiver at any step of the agent, crashes and lost answers included; R1
    /// was registered in an earlier run (its clearing runs), R0 is new; no `send_idat` is
    /// raised (it writes no pseudonym).
    pub fn with_handover(mut self) -> Self {
        self.handover = true;
        self
    }

    /// The withdrawal model: a local user withdraws R0's consent (`withdraw.rs`).
    pub fn with_withdrawal(mut self) -> Self {
        self.withdraw = true;
        self
    }

    /// The purge model: the cycle's housekeeping purges IDAT past retention (`purge.rs`).
    pub fn with_purge(mut self) -> Self {
        self.purge = true;
        self
    }
}

/// A move. The agent's step is whatever its program counter says comes next; `net` is how
/// the answer of a request sent in that step comes back (a fault other than `Answered` costs
/// one from the fault budget).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Agent {
        net: Net,
    },
    /// The process dies; of the commits since the last flush, the first `keep` survive.
    Crash {
        keep: u8,
    },
    Tick,
    /// The fTTP finishes R1's clearing and raises `dic_psn_available`.
    Clear,
    /// The fTTP raises a task (`send_idat` about R0, `repeat_request` for R1).
    Raise(TaskId),
    /// The fTTP stops listing `dic_psn_available` (the site never acknowledges it).
    StopListing,
    /// Approval model: a local user (index into `state::USERS`) approves the `send_idat`
    /// (`ttp-agent approve`: `TaskRecord::approved_by`, committed and flushed).
    Approve(u8),
    /// Approval model: a local user denies it (`ttp-agent deny`: `TaskRecord::denied_by`).
    Deny,
    /// Handover model: the webhook worker's next step; `net` is how the receiver's answer
    /// comes back when the step delivers.
    Handover {
        net: Net,
    },
    /// A store write of the agent's next step fails. In the real code the daemon stops
    /// (`CycleError::into_stop`): that is the crash transition, so this move exists only
    /// where the agent would go on (`handover.rs`).
    StoreFails,
    /// Withdrawal model: the next step of the user's `ttp-agent withdraw case-0`.
    Withdraw,
    /// Purge model: the next step of a person's `ttp-agent purge`.
    PurgeCmd,
}

/// Filters and pseudonyms an open task refers to (`Agent::open_task_subjects`), as records.
fn open_task_records(s: &Store) -> [bool; RECORDS] {
    let mut refs = [false; RECORDS];
    for t in TASKS {
        let Some(m) = s.task(t) else { continue };
        if !real::is_open(t, m) {
            continue;
        }
        match t {
            TaskId::SendIdat => refs[0] = true,
            TaskId::Repeat | TaskId::Dic => refs[1] = true,
        }
    }
    refs
}

impl TaskModel {
    /// Whether the fTTP shows the task in a listing now.
    pub fn listable(&self, f: &FTask) -> bool {
        f.raised
            && f.open
            && f.deadline.is_none_or(|d| d > 0)
            && (self.relisting == Relisting::UntilDone || !f.listed)
    }

    /// Whether a process may die now: the daemon while it runs, or a `withdraw` command that
    /// runs without it.
    fn may_crash(&self, s: &State) -> bool {
        s.crashes_left > 0 && (s.pc != Pc::Down || s.withdraw.standalone)
    }

    /// Whether the agent's next step sends a request (then faults can hit its answer).
    fn step_sends(&self, s: &State) -> bool {
        match &s.pc {
            Pc::RegSend { .. } | Pc::Fetch => true,
            Pc::Send {
                to_send,
                done,
                prepared,
            } => {
                let t = to_send[done.len()];
                let live = s.live();
                let Some(m) = live.task(t) else { return false };
                let past =
                    real::is_past_deadline(t, m) && self.bug != Some(SeededBug::NoDeadlineRecheck);
                !past && (t != TaskId::SendIdat || matches!(prepared, Some(Ok(_))))
            }
            _ => false,
        }
    }

    fn requested(&self) -> Vec<ttp_proto::IdatElement> {
        let mut r = real::REQUESTED.to_vec();
        if self.bug == Some(SeededBug::SendUnrequested) {
            r.push(real::NOT_REQUESTED);
        }
        r
    }

    /// The dispatcher's preparation of the `send_idat` answer, with the configured release
    /// list (the seeded bug `send_withheld`: with the default, every element).
    fn prepare(&self, live: &Store) -> Prep {
        let release = if self.bug == Some(SeededBug::SendWithheld) {
            real::default_release_policy()
        } else {
            real::release_policy()
        };
        if self.bug == Some(SeededBug::PurgedIdatStillSent) {
            // The purge left the sealed IDAT readable.
            let unpurged = Store {
                idat_purged: [false; RECORDS],
                ..live.clone()
            };
            return real::prepare_send_idat(&unpurged, &self.requested(), &release);
        }
        real::prepare_send_idat(live, &self.requested(), &release)
    }

    /// The fTTP's handling of a registration of the records in `batch`: it registers the
    /// filters (R0 at once with its pseudonym; R1 with a clearing, whose pseudonym exists only
    /// once cleared) and a registration of R1's filter fulfils a `repeat_request`.
    fn fttp_register(f: &mut Fttp, batch: [bool; RECORDS]) -> [Option<u8>; RECORDS] {
        let mut psns = [None; RECORDS];
        for r in 0..RECORDS {
            if !batch[r] {
                continue;
            }
            f.registered[r] = true;
            psns[r] = match r {
                0 => Some(0),
                _ if f.cleared => Some(r as u8),
                _ => None,
            };
            if r == 1 && f.task(TaskId::Repeat).raised {
                f.task_mut(TaskId::Repeat).open = false;
            }
        }
        psns
    }

    /// The agent's next step. `None` when there is none (a fault that cannot apply).
    pub fn agent_step(&self, s: &State, net: Net) -> Option<State> {
        // A `withdraw` command holds `Agent::registering` (the cycle's registration waits for
        // it) and, without the daemon, the store (the daemon cannot start).
        match s.pc {
            Pc::Idle if s.withdraw.running() => return None,
            Pc::Down if s.withdraw.standalone => return None,
            _ => {}
        }
        let mut n = s.clone();
        if net != Net::Answered {
            if !self.step_sends(s)
                || n.faults_left == 0
                || (s.pc == Pc::Fetch && net == Net::Unreachable)
            {
                return None;
            }
            n.faults_left -= 1;
        }
        match s.pc.clone() {
            Pc::Down => {
                // Agent::recover: every task still Running was interrupted.
                let mut live = n.disk.clone();
                for t in TASKS {
                    if let Some(m) = live.tasks[t.index()]
                        && m.state == MTaskState::Running
                    {
                        live.tasks[t.index()] = Some(real::interrupted(t, &m));
                    }
                }
                n.commit(live);
                n.pc = if n.pending.is_empty() {
                    Pc::Idle
                } else {
                    Pc::RecoverFlush
                };
            }
            Pc::RecoverFlush | Pc::RegFlush | Pc::MergeFlush | Pc::OutcomeFlush => {
                n.flush();
                n.pc = match s.pc {
                    Pc::RecoverFlush => Pc::Idle,
                    Pc::OutcomeFlush => self.cycle_end(),
                    Pc::RegFlush => Pc::Fetch,
                    _ => Pc::Dispatch,
                };
            }
            Pc::Idle => {
                // Agent::register_pending: new and interrupted records, and quiet clearings no
                // open task refers to.
                let live = n.live().clone();
                let referred = open_task_records(&live);
                let mut batch = [false; RECORDS];
                for (r, m) in live.records.iter().enumerate() {
                    batch[r] = !live.withdrawn[r]
                        && real::needs_registration(r, m)
                        && (m.state != RecState::AwaitingClearing || !referred[r]);
                }
                if !batch.contains(&true) {
                    n.pc = Pc::Fetch;
                } else {
                    // mark_sending: records not yet `Sending` are written so, then flushed.
                    let mut next = live.clone();
                    for (r, rec) in next.records.iter_mut().enumerate() {
                        if batch[r] {
                            *rec = real::sending(r, rec);
                        }
                    }
                    n.commit(next);
                    n.pc = if n.pending.is_empty() {
                        Pc::RegSend { batch }
                    } else {
                        Pc::RegIntentFlush { batch }
                    };
                }
            }
            Pc::RegIntentFlush { batch } => {
                n.flush();
                n.pc = Pc::RegSend { batch };
            }
            Pc::RegSend { batch } => {
                let reply = if net == Net::Unreachable {
                    PsnReply::Failed(net)
                } else {
                    let psns = Self::fttp_register(&mut n.fttp, batch);
                    if net == Net::Answered {
                        PsnReply::Answer(psns)
                    } else {
                        PsnReply::Failed(net)
                    }
                };
                n.pc = Pc::RegApply { batch, reply };
            }
            Pc::RegApply { batch, reply } => {
                let mut live = n.live().clone();
                let changes = match real::apply_registration(&live.records, batch, reply) {
                    Some(c) => c,
                    None if self.bug == Some(SeededBug::LostRegistrationAnswerDone) => {
                        real::apply_empty_registration(&live.records, batch)
                    }
                    None => Vec::new(),
                };
                for (r, m) in changes {
                    live.records[r] = m;
                }
                n.commit(live);
                n.pc = if n.pending.is_empty() {
                    Pc::Fetch
                } else {
                    Pc::RegFlush
                };
            }
            Pc::Fetch => {
                let mut listed = [false; 3];
                for t in TASKS {
                    if self.listable(n.fttp.task(t)) {
                        listed[t.index()] = true;
                        n.fttp.task_mut(t).listed = true;
                    }
                }
                n.pc = if net == Net::Answered {
                    Pc::Merge { listed }
                } else {
                    // A failed fetch ends the cycle; nothing was changed.
                    Pc::Idle
                };
            }
            Pc::Merge { listed } => {
                // next_poll_seq: one more successful poll (its own commit).
                let mut seq = n.live().clone();
                for m in seq.tasks.iter_mut().flatten() {
                    m.since_seen = (m.since_seen + 1).min(2);
                }
                n.commit(seq);
                if self.merge_race && self.approvals.is_some() {
                    let live = n.live();
                    let read = TASKS.map(|t| live.task(t).copied().filter(|_| listed[t.index()]));
                    n.pc = Pc::MergeWrite { listed, read };
                    return Some(n);
                }
                let mut merged = n.live().clone();
                for t in TASKS {
                    if listed[t.index()] {
                        let expires = n.fttp.task(t).deadline;
                        merged.tasks[t.index()] =
                            Some(real::merge_listed(t, merged.task(t), expires));
                    }
                }
                n.commit(merged);
                n.pc = Pc::Reconcile { listed };
            }
            Pc::MergeWrite { listed, read } => {
                let mut merged = n.live().clone();
                for t in TASKS {
                    if listed[t.index()] {
                        let expires = n.fttp.task(t).deadline;
                        merged.tasks[t.index()] =
                            Some(real::merge_listed(t, read[t.index()].as_ref(), expires));
                    }
                }
                n.commit(merged);
                n.pc = Pc::Reconcile { listed };
            }
            Pc::Reconcile { listed } => {
                let mut live = n.live().clone();
                for t in TASKS {
                    let Some(m) = live.tasks[t.index()] else {
                        continue;
                    };
                    if !real::is_open(t, &m) {
                        continue;
                    }
                    let (listed_now, relisting) = if self.bug
                        == Some(SeededBug::InDoubtDoneWithoutListing)
                        && t == TaskId::SendIdat
                    {
                        (false, Relisting::UntilDone)
                    } else {
                        (listed[t.index()], self.relisting)
                    };
                    live.tasks[t.index()] = Some(real::reconcile(t, &m, listed_now, relisting));
                }
                n.commit(live);
                n.pc = Pc::MergeFlush;
            }
            Pc::Dispatch => {
                let live = n.live().clone();
                let open: Vec<(TaskId, MTask)> = TASKS
                    .iter()
                    .filter_map(|&t| live.task(t).map(|m| (t, *m)))
                    .filter(|(t, m)| real::is_open(*t, m))
                    .collect();
                let mut heads = [None; RECORDS];
                let mut writes = [None; 3];
                let mut to_send = Vec::new();
                let mut prepared = None;
                for t in real::ready(&open) {
                    let Some(m) = live.task(t) else { continue };
                    let expired = real::expire_if_due(t, m);
                    let held = self
                        .approvals
                        .filter(|_| self.bug != Some(SeededBug::SendWithoutApproval))
                        .and_then(|required| real::held_for_approval(t, m, required));
                    if expired.state == MTaskState::Expired {
                        writes[t.index()] = Some(expired);
                    } else if let Some(closed) = self.withdrawal_check(t, m, &live) {
                        // dispatch_wave: about a withdrawn record, closed and never answered.
                        n.withdraw.closed_by_dispatcher = true;
                        writes[t.index()] = Some(closed);
                    } else if let Some(held) = held {
                        // dispatch_wave: put aside for people, written with the wave's intents.
                        writes[t.index()] = Some(held);
                    } else if real::sends_request(t) {
                        // route: the answer is prepared before the intent, and sent as it is.
                        if t == TaskId::SendIdat {
                            prepared = Some(self.prepare(&live));
                        }
                        writes[t.index()] = Some(real::begin_effect(t, m));
                        to_send.push(t);
                    } else {
                        let (effect, changed) = real::handle_dic(&live.records);
                        for (r, rec) in changed {
                            heads[r] = Some(rec);
                        }
                        writes[t.index()] = Some(real::after_effect(t, m, effect));
                    }
                }
                if matches!(
                    self.bug,
                    Some(SeededBug::WithdrawalNotGated | SeededBug::PurgeNotGated)
                ) {
                    // Decided on what was read; written in the next step, into which a
                    // withdrawal or a purge that does not take the task gate may commit.
                    n.pc = Pc::DispatchWrite {
                        heads,
                        writes,
                        to_send,
                        prepared,
                    };
                } else {
                    self.write_dispatch(&mut n, heads, writes, to_send, prepared);
                }
            }
            Pc::DispatchWrite {
                heads,
                writes,
                to_send,
                prepared,
            } => self.write_dispatch(&mut n, heads, writes, to_send, prepared),
            Pc::Purge => self.purge_step(&mut n),
            Pc::IntentFlush { to_send, prepared } => {
                n.flush();
                n.pc = Pc::Send {
                    to_send,
                    done: Vec::new(),
                    prepared,
                };
            }
            Pc::Send {
                to_send,
                mut done,
                prepared,
            } => {
                let t = to_send[done.len()];
                let live = n.live().clone();
                let m = live.task(t)?;
                let handled = if real::is_past_deadline(t, m)
                    && self.bug != Some(SeededBug::NoDeadlineRecheck)
                {
                    // handle_network: "expired while waiting in the wave".
                    Handled {
                        task: t,
                        effect: MEffect::Retry,
                        records: Vec::new(),
                    }
                } else {
                    let (handled, provided) = self.send(&mut n.fttp, &live, t, net, prepared);
                    if provided {
                        self.observe_provide(&mut n.release);
                        n.withdraw.provided_after |= n.withdraw.intent_after;
                        // R0's IDAT: the requested element it holds.
                        n.purge.sent_after |= n.purge.intent_after
                            && matches!(prepared, Some(Ok(p)) if real::carries(&p, ttp_proto::IdatElement::Family));
                    }
                    handled
                };
                done.push(handled);
                n.pc = if done.len() == to_send.len() {
                    Pc::Outcomes { done }
                } else {
                    Pc::Send {
                        to_send,
                        done,
                        prepared,
                    }
                };
            }
            Pc::Outcomes { done } => {
                let live = n.live().clone();
                let mut records = live.records;
                let mut tasks = live.tasks;
                for h in &done {
                    for (r, rec) in &h.records {
                        records[*r] = *rec;
                    }
                    let m = live.task(h.task)?;
                    tasks[h.task.index()] = Some(real::after_effect(h.task, m, h.effect));
                }
                self.write_outcome(&mut n, records, tasks);
                n.pc = if n.pending.is_empty() {
                    self.cycle_end()
                } else {
                    Pc::OutcomeFlush
                };
            }
        }
        Some(n)
    }

    /// The wave's writes (`update_record_heads`, then `put_tasks_disclosing` of the intents and
    /// the tasks finished without a request), decided by the dispatcher on what it read, and
    /// the next step.
    fn write_dispatch(
        &self,
        n: &mut State,
        heads: [Option<MRecord>; RECORDS],
        writes: [Option<MTask>; 3],
        to_send: Vec<TaskId>,
        prepared: Option<Prep>,
    ) {
        let live = n.live().clone();
        let mut records = live.records;
        for (r, h) in heads.iter().enumerate() {
            if let Some(h) = h {
                records[r] = *h;
            }
        }
        let mut tasks = live.tasks;
        for (t, w) in writes.iter().enumerate() {
            if w.is_some() {
                tasks[t] = *w;
            }
        }
        self.write_outcome(n, records, tasks);
        if to_send.contains(&TaskId::SendIdat) {
            // Ghosts: whether this intent commits after the user's withdrawal did, and after
            // R0's IDAT was purged.
            n.withdraw.intent_after = n.withdraw.committed;
            n.purge.intent_after = n.purge.idat_gone;
        }
        n.pc = match (to_send.is_empty(), n.pending.is_empty()) {
            (true, true) => self.cycle_end(),
            (true, false) => Pc::OutcomeFlush,
            (false, _) if self.bug == Some(SeededBug::NoIntentFlush) => Pc::Send {
                to_send,
                done: Vec::new(),
                prepared,
            },
            (false, _) => Pc::IntentFlush { to_send, prepared },
        };
    }

    /// A `$providePatientData` reached the fTTP: judged against what the users really did.
    fn observe_provide(&self, g: &mut ReleaseGhost) {
        let Some(required) = self.approvals else {
            return;
        };
        g.provided_unapproved |= g.distinct_approvers() < required;
        g.provided_after_denial |= g.denied;
        g.provided_after_late_approval |= g.approved_late;
    }

    /// A local user's command on the stored `send_idat`: the real decision on the process's
    /// view of the store, committed and flushed by the command (`resolve::write_task`; the
    /// flush makes the daemon's earlier commits durable too: one store).
    fn user_step(&self, s: &State, a: Action) -> Option<State> {
        let required = self.approvals?;
        let t = TaskId::SendIdat;
        let m = s.live().task(t)?;
        let mut n = s.clone();
        let next = match a {
            Action::Approve(user) => {
                let again = m.approvals & (1 << user) != 0;
                let name = if again
                    && user == USER_A
                    && self.bug == Some(SeededBug::ApprovalCountsSameUserTwice)
                {
                    USER_A_AGAIN
                } else {
                    user
                };
                let next = real::approved_by(t, m, name, required)?;
                n.release.approvers |= 1 << user;
                if n.fttp.task(t).deadline.is_some_and(|d| d <= 0) {
                    n.release.approved_late = true;
                }
                next
            }
            Action::Deny => {
                let next = real::denied_by(t, m, USER_A)?;
                n.release.denied = true;
                next
            }
            _ => return None,
        };
        let mut live = n.live().clone();
        live.tasks[t.index()] = Some(next);
        n.commit(live);
        n.flush();
        Some(n)
    }

    /// Records first, then tasks, each its own transaction (dispatch.rs: `update_records`,
    /// then `put_tasks`), unless the seeded bug swaps them.
    fn write_outcome(&self, n: &mut State, records: [MRecord; RECORDS], tasks: [Option<MTask>; 3]) {
        let live = n.live().clone();
        let with_records = Store {
            records,
            ..live.clone()
        };
        let with_tasks = Store {
            tasks,
            ..live.clone()
        };
        if self.bug == Some(SeededBug::TaskBeforeRecords) {
            n.commit(with_tasks);
        } else {
            n.commit(with_records);
        }
        n.commit(Store {
            records,
            tasks,
            ..live
        });
    }

    /// One request of a wave: the handler of `t` and the fTTP's side of it, and whether a
    /// `$providePatientData` reached the fTTP. A `send_idat` sends what the dispatcher prepared
    /// before its intent (`prepared`), whatever the store holds now.
    fn send(
        &self,
        f: &mut Fttp,
        live: &Store,
        t: TaskId,
        net: Net,
        prepared: Option<Prep>,
    ) -> (Handled, bool) {
        let prepared = prepared.unwrap_or(Err(MEffect::Retry));
        let provided = t == TaskId::SendIdat && net != Net::Unreachable && prepared.is_ok();
        let handled = match t {
            TaskId::SendIdat => match prepared {
                Err(effect) => Handled {
                    task: t,
                    effect,
                    records: Vec::new(),
                },
                Ok(patient) => {
                    if net != Net::Unreachable {
                        let ft = f.task_mut(TaskId::SendIdat);
                        if ft.deadline.is_some_and(|d| d <= 0) {
                            f.late_provide = true;
                        }
                        let ft = f.task_mut(TaskId::SendIdat);
                        ft.open = false;
                        if real::carries(&patient, real::NOT_REQUESTED) {
                            f.unrequested_element = true;
                        }
                        let released = real::released();
                        if ttp_proto::IdatElement::ALL
                            .iter()
                            .any(|e| !released.contains(e) && real::carries(&patient, *e))
                        {
                            f.outside_release = true;
                        }
                        f.accepted = (f.accepted + 1).min(3);
                    }
                    Handled {
                        task: t,
                        effect: real::send_idat_effect(net, patient.without),
                        records: Vec::new(),
                    }
                }
            },
            TaskId::Repeat => {
                let reply = if net == Net::Unreachable {
                    PsnReply::Failed(net)
                } else {
                    let psns = Self::fttp_register(f, [false, true]);
                    if net == Net::Answered {
                        PsnReply::Answer(psns)
                    } else {
                        PsnReply::Failed(net)
                    }
                };
                let (effect, records) = real::repeat_effect(&live.records, reply);
                Handled {
                    task: t,
                    effect,
                    records,
                }
            }
            TaskId::Dic => Handled {
                task: t,
                effect: MEffect::Done,
                records: Vec::new(),
            },
        };
        (handled, provided)
    }

    fn env_step(&self, s: &State, a: Action) -> Option<State> {
        let mut n = s.clone();
        match a {
            Action::Agent { net } => return self.agent_step(s, net),
            Action::Approve(_) | Action::Deny => return self.user_step(s, a),
            Action::Handover { .. } | Action::StoreFails => {
                return crate::handover::step(self, s, a);
            }
            Action::Withdraw => return self.withdraw_step(s),
            Action::PurgeCmd => return self.purge_cmd_step(s),
            Action::Crash { keep } => {
                if !self.may_crash(s) || usize::from(keep) > s.pending.len() {
                    return None;
                }
                n.crashes_left -= 1;
                n.withdraw.crashed(keep);
                if matches!(n.purge.cmd, crate::purge::PurgeCmd::Read { .. }) {
                    // The command died with the daemon before its commit.
                    n.purge.cmd = crate::purge::PurgeCmd::Idle;
                }
                if keep > 0 {
                    n.disk = n.pending[usize::from(keep) - 1].clone();
                }
                n.pending.clear();
                n.observe_disk();
                n.pc = Pc::Down;
            }
            Action::Tick => n.shift(),
            Action::Clear => {
                if !s.fttp.registered[1] || s.fttp.cleared {
                    return None;
                }
                n.fttp.cleared = true;
                let dic = n.fttp.task_mut(TaskId::Dic);
                dic.raised = true;
                dic.open = true;
            }
            Action::Raise(t) => {
                let r = if t == TaskId::SendIdat { 0 } else { 1 };
                if t == TaskId::Dic
                    || (t == TaskId::SendIdat && self.handover)
                    || (t == TaskId::Repeat
                        && (self.approvals.is_some() || self.withdraw || self.purge))
                    || !s.fttp.registered[r]
                    || s.fttp.task(t).raised
                {
                    return None;
                }
                let ft = n.fttp.task_mut(t);
                ft.raised = true;
                ft.open = true;
                if t == TaskId::SendIdat {
                    ft.deadline = Some(real::DEADLINE);
                }
            }
            Action::StopListing => {
                let dic = n.fttp.task_mut(TaskId::Dic);
                if !dic.raised || !dic.open {
                    return None;
                }
                dic.open = false;
            }
        }
        Some(n)
    }

    /// The state after one fault-free cycle of the agent from `Idle` (every request answered,
    /// no crash, the clock and the fTTP standing still).
    pub fn fault_free_cycle(&self, s: &State) -> Option<State> {
        let mut cur = self.agent_step(s, Net::Answered)?;
        for _ in 0..64 {
            if cur.pc == Pc::Idle {
                return Some(cur);
            }
            cur = self.agent_step(&cur, Net::Answered)?;
        }
        None
    }

    /// Nothing left that must happen: the agent idles, a fault-free cycle changes nothing, the
    /// clock has nothing left to move, and the fTTP has finished the clearing it owes. What may
    /// still happen (crashes, lost answers, raising more tasks, giving up a listing) need not:
    /// liveness is judged here.
    pub fn is_quiescent(&self, s: &State) -> bool {
        if s.pc != Pc::Idle || (s.fttp.registered[1] && !s.fttp.cleared) || s.withdraw.running() {
            return false;
        }
        let mut moved = s.clone();
        moved.shift();
        moved == *s && self.cycles(s).fixpoint
    }

    /// Whether fault-free cycles from `s` (an `Idle` state) reach a fixpoint within a few
    /// cycles: no livelock inside the agent.
    pub fn converges(&self, s: &State) -> bool {
        self.cycles(s).converges
    }

    /// How fault-free cycles from `s` behave, remembered by the state's fingerprint (the
    /// checker itself tells states apart by the same 64-bit fingerprints).
    fn cycles(&self, s: &State) -> Cycles {
        let fp = fingerprint(s);
        if let Some(c) = self.memo.lock().ok().and_then(|m| m.get(&fp).copied()) {
            return c;
        }
        let mut chain = vec![fp];
        let mut cur = s.clone();
        let mut result = Cycles {
            fixpoint: false,
            converges: false,
        };
        for _ in 0..6 {
            let Some(next) = self.fault_free_cycle(&cur) else {
                break;
            };
            if next == cur {
                result.converges = true;
                result.fixpoint = chain.len() == 1;
                break;
            }
            cur = next;
            chain.push(fingerprint(&cur));
        }
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(fp, result);
            if result.converges {
                // Every state further along the chain converges too; the last is a fixpoint.
                let last = chain.len() - 1;
                for (i, f) in chain.iter().enumerate().skip(1) {
                    memo.insert(
                        *f,
                        Cycles {
                            fixpoint: i == last,
                            converges: true,
                        },
                    );
                }
            }
        }
        result
    }

    pub fn init_state(&self) -> State {
        let record = MRecord {
            state: RecState::New,
            pseudonym: None,
            updated: 0,
        };
        let mut state = State {
            fttp: Fttp {
                registered: [false; RECORDS],
                cleared: false,
                tasks: [FTask::default(); 3],
                accepted: 0,
                late_provide: false,
                unrequested_element: false,
                outside_release: false,
            },
            // `submit` stored the records (New, flushed) before anything is sent.
            disk: Store {
                records: [record; RECORDS],
                tasks: [None; 3],
                logs: Default::default(),
                cursor: 0,
                withdrawn: [false; RECORDS],
                idat_purged: [false; RECORDS],
            },
            pending: Vec::new(),
            pc: Pc::Down,
            crashes_left: self.crashes,
            faults_left: self.faults,
            first_durable_psn: [None; RECORDS],
            psn_changed: false,
            ever_stored: [false; 3],
            release: ReleaseGhost::default(),
            handover: Default::default(),
            withdraw: crate::withdraw::WithdrawGhost::default(),
            purge: crate::purge::PurgeGhost::default(),
        };
        if self.handover {
            crate::handover::init(&mut state);
        }
        state
    }
}

impl Model for TaskModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.init_state()]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        actions.push(Action::Agent { net: Net::Answered });
        if s.faults_left > 0 && self.step_sends(s) {
            actions.push(Action::Agent {
                net: Net::LostAfterEffect,
            });
            if s.pc != Pc::Fetch {
                actions.push(Action::Agent {
                    net: Net::Unreachable,
                });
            }
        }
        if self.may_crash(s) {
            for keep in 0..=s.pending.len() {
                actions.push(Action::Crash { keep: keep as u8 });
            }
        }
        // The clock and the fTTP move only right before a step that looks at them: between
        // two other steps of the agent they commute with it, so every interleaving is still
        // covered up to the order of moves nobody can observe (a partial-order reduction).
        if matches!(
            s.pc,
            Pc::Idle | Pc::Fetch | Pc::Dispatch | Pc::Send { .. } | Pc::Outcomes { .. }
        ) {
            actions.push(Action::Tick);
        }
        if matches!(
            s.pc,
            Pc::Idle | Pc::Fetch | Pc::RegSend { .. } | Pc::Send { .. }
        ) {
            actions.push(Action::Clear);
            actions.push(Action::Raise(TaskId::SendIdat));
            actions.push(Action::Raise(TaskId::Repeat));
            actions.push(Action::StopListing);
        }
        // Users act whenever the task awaits them, at any step of the agent's cycle or while
        // it is down: no reduction here, since what they write races the cycle's own writes.
        if self.approvals.is_some()
            && s.live().task(TaskId::SendIdat).map(|m| m.state)
                == Some(MTaskState::AwaitingApproval)
        {
            actions.push(Action::Approve(USER_A));
            actions.push(Action::Approve(crate::state::USER_B));
            actions.push(Action::Deny);
        }
        crate::handover::actions(self, s, actions);
        if self.withdraw_enabled(s) {
            actions.push(Action::Withdraw);
        }
        if self.purge_cmd_enabled(s) {
            actions.push(Action::PurgeCmd);
        }
    }

    fn next_state(&self, s: &State, a: Action) -> Option<State> {
        let mut n = self.env_step(s, a)?;
        crate::handover::after(self, s, a, &mut n);
        // A move that changes nothing is no move: it would only make every state its own
        // successor.
        (n != *s).then_some(n)
    }

    fn properties(&self) -> Vec<stateright::Property<Self>> {
        crate::props::properties(self)
    }
}
