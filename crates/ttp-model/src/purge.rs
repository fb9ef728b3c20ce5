//! The purge model (`TaskModel::with_purge`, `MODEL_PURGE=1`): the cycle's housekeeping
//! (`Agent::purge`, after the dispatch) drops the IDAT of finished records past
//! `[store] idat_retention` that no open task refers to (`Store::purge_idat`), and makes that
//! durable (the store's rewrite) in the same step. A `send_idat` about a record whose IDAT is
//! gone is not answered: `prepare` returns `Attention::IdatPurged`, and the task waits, visible,
//! for a person.
//!
//! A person may also run `ttp-agent purge` once, through the daemon, at any step of its cycle
//! (the control channel runs it on its own thread): `Agent::purge` under the task gate, so it
//! neither reads the open tasks between the merge's read and the review's write nor commits
//! between a dispatch wave's check and its intents; one step here, not possible while the cycle
//! holds the gate (between the merge and the review). The seeded bug `purge_not_gated` is the
//! code before that: the open tasks read in one step, the purge committed in a later one,
//! whatever the cycle did in between, and a dispatch wave's check and prepare apart from its
//! intent write, with the purge free to commit between them.
//!
//! The claims (ARCHITECTURE.md, "Which check backs which claim"): the purge spares the IDAT of
//! every record an open task refers to (`purge_spares_idat_of_open_tasks`), and once purged the
//! IDAT is never sent (`no_idat_sent_after_purge`: no `$providePatientData` whose intent was
//! written after the purge committed carries the record's IDAT). The ghosts are written by the
//! purge's own step, from the store it purged, not by the agent's later bookkeeping.

use stateright::Property;

use crate::model::{SeededBug, TaskModel};
use crate::real;
use crate::state::{MAttn, MTaskState, Pc, RECORDS, State, TASKS, TaskId};

/// Where the person's `ttp-agent purge` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PurgeCmd {
    /// Not started (or died with the daemon).
    #[default]
    Idle,
    /// `purge_not_gated` only: the open tasks were read (which records they keep); the purge's
    /// commit is next.
    Read { keep: [bool; RECORDS] },
    /// Finished.
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PurgeGhost {
    pub cmd: PurgeCmd,
    /// R0's IDAT (the `send_idat`'s record) was purged (durably: the purge's step flushes).
    pub idat_gone: bool,
    /// The current wave's `send_idat` intent was written after R0's IDAT was purged.
    pub intent_after: bool,
    /// A `$providePatientData` whose intent was written after the purge carried R0's IDAT.
    pub sent_after: bool,
    /// The purge dropped the IDAT of a record an open task referred to.
    pub purged_needed: bool,
    /// The person's `ttp-agent purge` purged R0's IDAT.
    pub by_command: bool,
}

impl TaskModel {
    /// Where the agent goes when a cycle's dispatch is over: housekeeping in the purge model.
    pub fn cycle_end(&self) -> Pc {
        if self.purge { Pc::Purge } else { Pc::Idle }
    }

    /// `Agent::purge`, as the cycle's housekeeping runs it: due records lose their IDAT unless
    /// an open task refers to them (not under the seeded bug `purge_ignores_open_tasks`), then
    /// the rewrite (durable).
    pub fn purge_step(&self, n: &mut State) {
        let keep = self.purge_keeps(n);
        self.purge_commit(n, keep);
        n.pc = Pc::Idle;
    }

    /// `Agent::open_task_subjects`: the records an open task refers to keep their IDAT
    /// (nothing kept under the seeded bug `purge_ignores_open_tasks`).
    fn purge_keeps(&self, n: &State) -> [bool; RECORDS] {
        let live = n.live();
        let mut keep = [false; RECORDS];
        if self.bug == Some(SeededBug::PurgeIgnoresOpenTasks) {
            return keep;
        }
        for (r, k) in keep.iter_mut().enumerate() {
            *k = referred(live, r);
        }
        keep
    }

    /// `Store::purge_idat` with the records to keep: due records lose their IDAT, then the
    /// rewrite (durable).
    fn purge_commit(&self, n: &mut State, keep: [bool; RECORDS]) {
        let live = n.live().clone();
        let mut next = live.clone();
        for (r, kept) in keep.into_iter().enumerate() {
            if kept
                || live.withdrawn[r]
                || live.idat_purged[r]
                || !real::idat_purge_due(r, &live.records[r])
            {
                continue;
            }
            next.idat_purged[r] = true;
            n.purge.purged_needed |= referred(&live, r);
            if r == 0 {
                n.purge.idat_gone = true;
            }
        }
        n.commit(next);
        n.flush();
    }

    /// Whether the person's `ttp-agent purge` may take its next step now.
    pub fn purge_cmd_enabled(&self, s: &State) -> bool {
        if !self.purge || s.pc == Pc::Down {
            return false;
        }
        match s.purge.cmd {
            PurgeCmd::Done => false,
            PurgeCmd::Read { .. } => true,
            // Between the merge's read and the review's write the cycle holds the gate.
            PurgeCmd::Idle => {
                self.bug == Some(SeededBug::PurgeNotGated) || !matches!(s.pc, Pc::Reconcile { .. })
            }
        }
    }

    /// The person's `ttp-agent purge` (`cli/purge.rs`: `Agent::purge`).
    pub fn purge_cmd_step(&self, s: &State) -> Option<State> {
        if !self.purge_cmd_enabled(s) {
            return None;
        }
        let mut n = s.clone();
        match s.purge.cmd {
            PurgeCmd::Idle if self.bug == Some(SeededBug::PurgeNotGated) => {
                n.purge.cmd = PurgeCmd::Read {
                    keep: self.purge_keeps(&n),
                };
            }
            PurgeCmd::Idle => {
                let keep = self.purge_keeps(&n);
                self.purge_commit(&mut n, keep);
                n.purge.cmd = PurgeCmd::Done;
                n.purge.by_command = n.purge.idat_gone && !s.purge.idat_gone;
            }
            PurgeCmd::Read { keep } => {
                self.purge_commit(&mut n, keep);
                n.purge.cmd = PurgeCmd::Done;
                n.purge.by_command = n.purge.idat_gone && !s.purge.idat_gone;
            }
            PurgeCmd::Done => return None,
        }
        Some(n)
    }
}

/// Whether an open task in `store` refers to record `r` (`TaskRecord::subjects`).
fn referred(store: &crate::state::Store, r: usize) -> bool {
    TASKS.iter().any(|&t| {
        store
            .task(t)
            .is_some_and(|m| real::is_open(t, m) && real::refers_to(t, m, store, r))
    })
}

/// The purge model's properties.
pub fn properties() -> Vec<Property<TaskModel>> {
    vec![
        Property::always("no_idat_sent_after_purge", |_, s: &State| {
            !s.purge.sent_after
        }),
        Property::always("purge_spares_idat_of_open_tasks", |_, s: &State| {
            !s.purge.purged_needed
        }),
        Property::sometimes("reachable_idat_purged", |_, s: &State| {
            s.disk.idat_purged[0]
        }),
        Property::sometimes("reachable_idat_purged_by_the_command", |_, s: &State| {
            s.purge.by_command && s.disk.idat_purged[0]
        }),
        Property::sometimes(
            "reachable_send_idat_about_purged_idat_needs_attention",
            |_, s: &State| {
                s.disk.task(TaskId::SendIdat).map(|t| t.state)
                    == Some(MTaskState::Attention(MAttn::IdatPurged))
            },
        ),
    ]
}
