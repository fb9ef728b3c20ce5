//! The withdrawal model (`TaskModel::with_withdrawal`, `MODEL_WITHDRAW=1`): a local user runs
//! `ttp-agent withdraw case-0` (R0, the record the `send_idat` is about) at any step of the
//! agent's cycle or while the agent is down, as `withdraw::withdraw_one` does it:
//!
//! 1. the record's removal, the kept withdrawal (with its match keys) and the audit entry, one
//!    transaction (`Store::withdraw_record`), skipped when the record was withdrawn before (a
//!    run that died after it); the open tasks about the record are read with it (the command
//!    reads them just after; a task the daemon changes in between is read as changed there and
//!    closed if `TaskRecord::withdrawn` allows, where the model, reading it first, leaves it to
//!    the dispatcher: the model closes no more than the command does);
//! 2. closing the `send_idat` if it is still what step 1 read (`TaskRecord::withdrawn` through
//!    `Store::replace_task_audited`, its own transaction under the task gate); a `Running` one
//!    is left as it is (its request may be on the wire);
//! 3. the store's rewrite, which flushes (durable), then success is reported.
//!
//! A crash may come between any two of these (the daemon's, when the command runs through it;
//! the command's own process, when it runs without the daemon, which then cannot start until
//! the command ends: it holds the store). The command holds `Agent::registering`, so it never
//! runs while the cycle registers, and the cycle does not start registering while it runs.
//!
//! The dispatcher checks every task against the withdrawals before it acts (after
//! `expire_if_due`, before an approval hold): `Store::withdrawn_subject` over the task's
//! `subject_parts`, then `TaskRecord::withdrawn`.
//!
//! The properties judge by ghosts this module's moves write (when the withdrawal committed, and
//! whether a crash lost it), not by the agent's store.

use stateright::Property;

use crate::model::{SeededBug, TaskModel};
use crate::real;
use crate::state::{CAP, MTask, MTaskState, Pc, State, TaskId};

/// The record the user withdraws.
pub const WITHDRAWN_RECORD: usize = 0;

/// Where the user's `withdraw` command is: its next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Cmd {
    /// Not running (not started yet, finished, or died in a crash).
    #[default]
    Idle,
    /// Step 1 committed; closing the `send_idat` it read (as read) is next.
    Close { read: MTask },
    /// The rewrite (flush) is next.
    Flush,
}

/// The user's command and the ghosts the withdrawal properties read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct WithdrawGhost {
    pub cmd: Cmd,
    /// The command runs without the daemon (it started while the daemon was down).
    pub standalone: bool,
    /// The command reported success.
    pub reported: bool,
    /// Step 1 (the withdrawal) has committed, and no crash lost it.
    pub committed: bool,
    /// Step 1 is the `pending_at`-th unflushed commit (0: flushed, or not committed).
    pub pending_at: u8,
    /// The `send_idat` was `Running` when step 1 committed: its request may be on the wire.
    pub while_running: bool,
    /// The intent of the `send_idat` in the current wave was written after step 1 committed.
    pub intent_after: bool,
    /// A `$providePatientData` whose intent was written after the withdrawal committed reached
    /// the fTTP.
    pub provided_after: bool,
    /// The dispatcher's own check closed the task (not the command).
    pub closed_by_dispatcher: bool,
}

impl WithdrawGhost {
    /// Every unflushed commit became durable.
    pub fn flushed(&mut self) {
        self.pending_at = 0;
    }

    /// The process that ran the command (the daemon, or the command's own) died keeping the
    /// first `keep` unflushed commits: the command never reported success, and a withdrawal
    /// not among them is lost (running the command again is what the person does).
    pub fn crashed(&mut self, keep: u8) {
        if self.pending_at > 0 && keep < self.pending_at {
            self.committed = false;
            self.while_running = false;
        }
        self.pending_at = 0;
        self.cmd = Cmd::Idle;
        self.standalone = false;
        self.intent_after = false;
    }

    /// The command holds `Agent::registering` (and, without the daemon, the store).
    pub fn running(&self) -> bool {
        self.cmd != Cmd::Idle || self.standalone
    }
}

impl TaskModel {
    /// Whether the user's next withdrawal step may move now.
    pub fn withdraw_enabled(&self, s: &State) -> bool {
        let g = &s.withdraw;
        if !self.withdraw || g.reported {
            return false;
        }
        if g.cmd != Cmd::Idle {
            // Through the daemon it dies with it; without it, the daemon waits for the store.
            return g.standalone == (s.pc == Pc::Down);
        }
        // Starting: not while the cycle registers (`Agent::registering`). Between the
        // dispatcher's check and its intent write only without the task gate (the seeded bug).
        match s.pc {
            Pc::RegIntentFlush { .. } | Pc::RegSend { .. } | Pc::RegApply { .. } | Pc::RegFlush => {
                false
            }
            Pc::DispatchWrite { .. } => self.bug == Some(SeededBug::WithdrawalNotGated),
            _ => true,
        }
    }

    /// The user's next withdrawal step.
    pub fn withdraw_step(&self, s: &State) -> Option<State> {
        if !self.withdraw_enabled(s) {
            return None;
        }
        let mut n = s.clone();
        let r = WITHDRAWN_RECORD;
        match s.withdraw.cmd {
            Cmd::Idle => {
                n.withdraw.standalone = s.pc == Pc::Down;
                let live = n.live().clone();
                let read = live
                    .task(TaskId::SendIdat)
                    .copied()
                    .filter(|m| real::is_open(TaskId::SendIdat, m));
                if live.withdrawn[r] {
                    // Withdrawn before (a run that died after its removal): close what it left
                    // open, then rewrite.
                    n.withdraw.cmd = match read {
                        Some(read) => Cmd::Close { read },
                        None => Cmd::Flush,
                    };
                    return Some(n);
                }
                let mut next = live.clone();
                next.withdrawn[r] = true;
                // Removed: nothing reads the head any more; its time stands still.
                next.records[r].updated = -CAP;
                n.commit(next);
                n.withdraw.committed = true;
                n.withdraw.pending_at = n.pending.len() as u8;
                n.withdraw.while_running = read.map(|m| m.state) == Some(MTaskState::Running);
                n.withdraw.cmd = match read {
                    Some(read) => Cmd::Close { read },
                    None => Cmd::Flush,
                };
            }
            Cmd::Close { read } => {
                let mut live = n.live().clone();
                // replace_task_audited: only if the stored task is still what was read.
                if live.task(TaskId::SendIdat) == Some(&read)
                    && let Some(closed) = real::withdrawn(TaskId::SendIdat, &read, r)
                {
                    live.tasks[TaskId::SendIdat.index()] = Some(closed);
                    n.commit(live);
                }
                n.withdraw.cmd = Cmd::Flush;
            }
            Cmd::Flush => {
                n.flush();
                n.withdraw.cmd = Cmd::Idle;
                n.withdraw.standalone = false;
                n.withdraw.reported = true;
            }
        }
        Some(n)
    }

    /// The dispatcher's withdrawal check of a ready task (`dispatch_wave`): the task closed,
    /// when the record it names was withdrawn (not under the seeded bug
    /// `withdrawal_not_checked`).
    pub fn withdrawal_check(
        &self,
        t: TaskId,
        m: &MTask,
        live: &crate::state::Store,
    ) -> Option<MTask> {
        if self.bug == Some(SeededBug::WithdrawalNotChecked) {
            return None;
        }
        let r = real::withdrawn_subject(t, m, live)?;
        real::withdrawn(t, m, r)
    }
}

/// The withdrawal model's properties.
pub fn properties() -> Vec<Property<TaskModel>> {
    vec![
        // A request already on the wire (`Running`: its intent was written before the
        // withdrawal committed) cannot be recalled; every other one must not leave.
        Property::always("no_provide_for_withdrawn_record", |_, s: &State| {
            !s.withdraw.provided_after
        }),
        // Nothing left that must happen, and the withdrawal stands: every stored task about the
        // record is finished (closed, or answered before, or expired), not waiting for anyone.
        Property::always(
            "tasks_about_withdrawn_records_end_closed",
            |m: &TaskModel, s: &State| {
                !s.withdraw.committed
                    || !m.is_quiescent(s)
                    || s.disk
                        .task(TaskId::SendIdat)
                        .is_none_or(|t| !real::is_open(TaskId::SendIdat, t))
            },
        ),
        Property::sometimes(
            "reachable_send_idat_closed_by_withdrawal",
            |_, s: &State| {
                s.withdraw.reported
                    && s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::Withdrawn)
            },
        ),
        Property::sometimes(
            "reachable_withdrawn_task_closed_by_the_dispatcher",
            |_, s: &State| {
                s.withdraw.closed_by_dispatcher
                    && s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::Withdrawn)
            },
        ),
        Property::sometimes(
            "reachable_withdrawal_while_running_ends_sent",
            |_, s: &State| {
                s.withdraw.while_running
                    && s.withdraw.reported
                    && s.fttp.accepted >= 1
                    && matches!(
                        s.disk.task(TaskId::SendIdat).map(|t| t.state),
                        Some(MTaskState::Done { .. })
                    )
            },
        ),
        Property::sometimes("reachable_withdrawal_without_the_daemon", |_, s: &State| {
            s.withdraw.standalone && s.withdraw.cmd == Cmd::Flush
        }),
    ]
}
