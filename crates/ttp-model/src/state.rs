//! The model's state: the fTTP, the agent's store (durable part and commits not yet flushed),
//! the agent process's volatile state, the fault budgets, and ghost variables that only the
//! properties read.
//!
//! Everything is small and `Hash`, so that the checker can store millions of states. Times are
//! kept relative to "now" in whole ticks and saturate (see [`Rel`]), so that time can advance
//! forever while the state space stays finite; `real.rs` turns them into the instants the
//! agent's functions take and back.

/// The records the site submitted. R0 is known to the fTTP without clearing (its registration
/// answers with a pseudonym at once); R1 needs a clearing, which ends with a
/// `dic_psn_available` task.
pub const RECORDS: usize = 2;

/// A time relative to now, in ticks (negative: in the past). Saturates at `±CAP`: every
/// threshold the agent compares with (settle time, recheck time, deadline) is shorter than
/// `CAP` ticks, so "CAP or more ticks ago" decides every comparison as the exact time would.
pub type Rel = i8;
pub const CAP: Rel = 3;

pub fn tick(r: Rel) -> Rel {
    (r - 1).max(-CAP)
}

/// The model's tasks: one of each type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskId {
    /// `send_idat` about R0 (pseudonym and filter), asking for two elements of which the
    /// record holds one; it has a deadline.
    SendIdat,
    /// `repeat_request` for R1's filter.
    Repeat,
    /// `dic_psn_available`: R1's clearing finished.
    Dic,
}

pub const TASKS: [TaskId; 3] = [TaskId::SendIdat, TaskId::Repeat, TaskId::Dic];

impl TaskId {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where a stored record is in its registration (`RecordState`, without the batch number).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecState {
    New,
    Sending,
    AwaitingClearing,
    Pseudonymised,
    Rejected,
}

/// A stored record head. `pseudonym` is the index of the record the fTTP's pseudonym belongs
/// to (the fTTP gives record `r` the pseudonym `psn-r`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MRecord {
    pub state: RecState,
    pub pseudonym: Option<u8>,
    pub updated: Rel,
}

/// Why a task needs a person (`Attention`, reduced to what the model distinguishes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MAttn {
    UnknownRecord,
    MissingElements,
    Rejected,
    PseudonymConflict,
    SubjectMismatch,
    ForeignStudy,
    StillListed {
        answered_at: Rel,
    },
    /// The record's IDAT was purged (retention) before the `send_idat` could be answered.
    IdatPurged,
    Other,
}

/// `TaskState`, with times relative to now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MTaskState {
    Received,
    Running,
    InDoubt,
    RetryWait {
        next_at: Rel,
    },
    Attention(MAttn),
    Done {
        at: Rel,
    },
    Expired,
    /// A `send_idat` waiting for local users to approve its release (approval model only).
    AwaitingApproval,
    /// Closed locally without an answer: a local user denied the release.
    Closed,
    /// Closed locally without an answer: the record's consent was withdrawn
    /// (`Closure::Withdrawn`; withdrawal model only).
    Withdrawn,
}

impl MTaskState {
    /// Finished or waiting for a person: what "ends" means for the liveness properties.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            MTaskState::Done { .. }
                | MTaskState::Expired
                | MTaskState::Attention(_)
                | MTaskState::AwaitingApproval
                | MTaskState::Closed
                | MTaskState::Withdrawn
        )
    }
}

/// The local users of the approval model: bit `u` of [`MTask::approvals`] is `USERS[u]`. The
/// third name is not a third person: it is user A's second approval recorded under another
/// name, which only the seeded bug `approval_counts_same_user_twice` writes.
pub const USERS: [&str; 3] = ["user-a", "user-b", "user-a (again)"];
pub const USER_A: u8 = 0;
pub const USER_B: u8 = 1;
pub const USER_A_AGAIN: u8 = 2;

/// A stored task (`TaskRecord`, reduced): `since_seen` counts the successful polls stored
/// after the last one that listed it (saturating at 2: "not in the previous poll").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MTask {
    pub state: MTaskState,
    pub updated: Rel,
    pub expires: Option<Rel>,
    pub since_seen: u8,
    /// Who approved the release, as bits over [`USERS`] (`TaskRecord::approvals`; always 0
    /// outside the approval model).
    pub approvals: u8,
}

/// What the store holds (either on disk or as the process sees it).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Store {
    pub records: [MRecord; RECORDS],
    pub tasks: [Option<MTask>; 3],
    /// The pseudonym and disclosure logs, written only by the store's own rules in the
    /// transaction of the record or task they are about (`handover::store_logs`).
    pub logs: crate::handover::Logs,
    /// The hand-over consumer's cursor (`meta` `cursor:webhook`): the last `seq` handed over.
    pub cursor: u8,
    /// The record was withdrawn (`withdraw_record`): removed from the store (no lookup finds
    /// it, no registration picks it), its withdrawal kept with the keys later tasks are
    /// matched by. Withdrawal model only.
    pub withdrawn: [bool; RECORDS],
    /// The record's IDAT was purged (`purge_idat`; the head stays). Purge model only.
    pub idat_purged: [bool; RECORDS],
}

impl Store {
    pub fn task(&self, t: TaskId) -> Option<&MTask> {
        self.tasks[t.index()].as_ref()
    }

    fn shift(&mut self) {
        for r in &mut self.records {
            r.updated = tick(r.updated);
        }
        for t in self.tasks.iter_mut().flatten() {
            t.updated = tick(t.updated);
            t.expires = t.expires.map(tick);
            t.state = match t.state {
                MTaskState::RetryWait { next_at } => MTaskState::RetryWait {
                    next_at: tick(next_at),
                },
                MTaskState::Done { at } => MTaskState::Done { at: tick(at) },
                MTaskState::Attention(MAttn::StillListed { answered_at }) => {
                    MTaskState::Attention(MAttn::StillListed {
                        answered_at: tick(answered_at),
                    })
                }
                s => s,
            };
        }
    }
}

/// The fTTP's view of one task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FTask {
    pub raised: bool,
    /// Still open on the fTTP's side: not done (`send_idat` answered, `repeat_request`
    /// fulfilled by a registration of its filter), not given up (`dic_psn_available`: the fTTP
    /// may stop listing it at any time, since the site never acknowledges it).
    pub open: bool,
    /// Included in a listing the fTTP sent (whether or not it arrived).
    pub listed: bool,
    pub deadline: Option<Rel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fttp {
    /// The fTTP has received a registration (`$requestPsnFromBfWorkflow`) of the record's filter.
    pub registered: [bool; RECORDS],
    /// R1's clearing has finished (its pseudonym exists).
    pub cleared: bool,
    pub tasks: [FTask; 3],
    /// `$providePatientData` requests for the `send_idat` task that the fTTP accepted.
    pub accepted: u8,
    /// Ghost: one arrived after the task's deadline.
    pub late_provide: bool,
    /// Ghost: one carried an element the task did not ask for.
    pub unrequested_element: bool,
    /// Ghost: one carried an element outside the site's configured release list
    /// (`real::RELEASED`).
    pub outside_release: bool,
}

impl Fttp {
    pub fn task(&self, t: TaskId) -> &FTask {
        &self.tasks[t.index()]
    }

    pub fn task_mut(&mut self, t: TaskId) -> &mut FTask {
        &mut self.tasks[t.index()]
    }

    fn shift(&mut self) {
        for t in &mut self.tasks {
            t.deadline = t.deadline.map(tick);
        }
    }
}

/// What `send_idat::prepare` put in the Patient, decided by the dispatcher before the task's
/// intent (`dispatch.rs`, `route`) and sent as it is: the elements it carries (bits over
/// `IdatElement::ALL`), and whether requested elements were left out (missing or withheld by
/// the release policy: the answer is then "as far as known").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MPatient {
    pub carries: u16,
    pub without: bool,
}

/// The prepared answer of a `send_idat`, or the effect when nothing can be sent.
pub type Prep = Result<MPatient, MEffect>;

/// How a request's answer came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Net {
    /// Processed and answered.
    Answered,
    /// Processed by the fTTP; the answer was lost (timeout, reset): the agent sees an in-doubt
    /// error.
    LostAfterEffect,
    /// Never reached the fTTP (connection refused): a transient error.
    Unreachable,
}

/// A `$requestPsnFromBfWorkflow` answer as the agent received it: per record of the batch,
/// the pseudonym it carried (`None`: the filter waits for a clearing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PsnReply {
    Answer([Option<u8>; RECORDS]),
    Failed(Net),
}

/// What a handler returned (`Effect`, reduced), with the record changes it asks to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MEffect {
    Done,
    DoneWithout,
    Retry,
    InDoubt,
    Attention(MAttn),
    AuthFailed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Handled {
    pub task: TaskId,
    pub effect: MEffect,
    /// Records the handler changed (pseudonym assigned), written before the task.
    pub records: Vec<(usize, MRecord)>,
}

/// The agent process's volatile state: where it is in its cycle (each variant is the next
/// step) and what it holds in memory.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Pc {
    /// Not running; the next step is the start-up recovery.
    Down,
    /// Recovery committed; its flush is next.
    RecoverFlush,
    /// Between cycles: the next step starts one (registration of pending records).
    Idle,
    /// The registration intents (`Sending`) are committed; the flush is next.
    RegIntentFlush { batch: [bool; RECORDS] },
    /// The batch is on disk as `Sending`; the request leaves next.
    RegSend { batch: [bool; RECORDS] },
    /// The answer (or error) is in memory; applying it is next.
    RegApply {
        batch: [bool; RECORDS],
        reply: PsnReply,
    },
    /// The answers are committed; the end-of-registration flush is next.
    RegFlush,
    /// `$requestTasks` is next.
    Fetch,
    /// The listing is in memory (which tasks it showed); the merge is next.
    Merge { listed: [bool; 3] },
    /// `MODEL_MERGE_RACE` only: the poll counter is committed and the listed tasks' stored
    /// copies are read (`cycle.rs`: `get_task`); the merged records are written next, blindly
    /// (`put_tasks`), as the daemon writes them.
    MergeWrite {
        listed: [bool; 3],
        read: [Option<MTask>; 3],
    },
    /// Seeded bugs `withdrawal_not_gated` and `purge_not_gated` only: the dispatcher has
    /// checked and prepared the wave on what it read; writing it (the changed heads, the
    /// tasks) is next.
    DispatchWrite {
        heads: [Option<MRecord>; RECORDS],
        writes: [Option<MTask>; 3],
        to_send: Vec<TaskId>,
        prepared: Option<Prep>,
    },
    /// The merge is committed; reconciling in-doubt tasks and expiry is next.
    Reconcile { listed: [bool; 3] },
    /// The merge flush is next.
    MergeFlush,
    /// Choosing the ready tasks and writing intents is next.
    Dispatch,
    /// The intents are committed; their flush is next. `prepared`: the `send_idat`'s answer,
    /// prepared before its intent (`None` when the wave has no `send_idat`).
    IntentFlush {
        to_send: Vec<TaskId>,
        prepared: Option<Prep>,
    },
    /// Requests of the wave: `to_send[done.len()]` leaves next.
    Send {
        to_send: Vec<TaskId>,
        done: Vec<Handled>,
        prepared: Option<Prep>,
    },
    /// Every request of the wave has its outcome in memory; writing them is next.
    Outcomes { done: Vec<Handled> },
    /// The outcomes are committed; their flush is next.
    OutcomeFlush,
    /// Purge model only: the dispatch is over; the housekeeping's IDAT purge is next.
    Purge,
}

/// Configuration of one model run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Relisting {
    /// The fTTP lists a task until it is done (or past its deadline).
    UntilDone,
    /// The fTTP lists a task in one response only.
    Once,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    pub fttp: Fttp,
    /// What survives a crash.
    pub disk: Store,
    /// Commits since the last flush, oldest first, each the whole store after it: a crash
    /// keeps any prefix of them (redb: each transaction whole or not at all, in order).
    pub pending: Vec<Store>,
    pub pc: Pc,
    pub crashes_left: u8,
    pub faults_left: u8,
    /// Ghost: the pseudonym each record had first on disk; a different one later breaks
    /// `pseudonym_never_changes`.
    pub first_durable_psn: [Option<u8>; RECORDS],
    pub psn_changed: bool,
    /// Ghost: the task was once on disk.
    pub ever_stored: [bool; 3],
    /// Ghosts of the approval model, written by the users' moves and the fTTP's receipt only.
    pub release: ReleaseGhost,
    /// The hand-over consumer (handover model only) and what its receiver kept.
    pub handover: crate::handover::Handover,
    /// The withdrawal model's user command and ghosts (`withdraw.rs`).
    pub withdraw: crate::withdraw::WithdrawGhost,
    /// The purge model's ghosts (`purge.rs`).
    pub purge: crate::purge::PurgeGhost,
}

/// What local users really did about the `send_idat`'s release (independent of what the
/// agent stored), and whether a `$providePatientData` reached the fTTP in spite of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ReleaseGhost {
    /// Distinct persons who approved (bits over [`USER_A`], [`USER_B`]).
    pub approvers: u8,
    pub denied: bool,
    /// An approval was accepted at or after the fTTP's deadline.
    pub approved_late: bool,
    /// A `$providePatientData` reached the fTTP with fewer distinct approvers than required.
    pub provided_unapproved: bool,
    pub provided_after_denial: bool,
    pub provided_after_late_approval: bool,
}

impl ReleaseGhost {
    pub fn distinct_approvers(&self) -> u8 {
        (self.approvers & 0b11).count_ones() as u8
    }
}

impl State {
    /// The store as the running process sees it (its own commits included).
    pub fn live(&self) -> &Store {
        self.pending.last().unwrap_or(&self.disk)
    }

    pub fn commit(&mut self, mut store: Store) {
        crate::handover::store_logs(self.live(), &mut store);
        if &store != self.live() {
            self.pending.push(store);
        }
    }

    pub fn flush(&mut self) {
        if let Some(last) = self.pending.pop() {
            self.disk = last;
        }
        self.pending.clear();
        self.withdraw.flushed();
        self.observe_disk();
    }

    /// Updates the ghost variables from the disk.
    pub fn observe_disk(&mut self) {
        for (r, rec) in self.disk.records.iter().enumerate() {
            match (self.first_durable_psn[r], rec.pseudonym) {
                (None, Some(p)) => self.first_durable_psn[r] = Some(p),
                (Some(first), now) if now != Some(first) => self.psn_changed = true,
                _ => {}
            }
        }
        for t in TASKS {
            if self.disk.task(t).is_some() {
                self.ever_stored[t.index()] = true;
            }
        }
    }

    /// One tick of the clock: every stored time moves one tick into the past.
    pub fn shift(&mut self) {
        self.fttp.shift();
        self.disk.shift();
        for s in &mut self.pending {
            s.shift();
        }
    }
}
