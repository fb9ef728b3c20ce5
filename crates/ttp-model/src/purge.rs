//! The purge model (`TaskModel::with_purge`, `MODEL_PURGE=1`): the cycle's housekeeping
//! (`Agent::purge`, after the dispatch) drops the IDAT of finished records past
//! `[store] idat_retention` that no open task refers to (`Store::purge_idat`), and makes that
//! durable (the store's rewrite) in the same step. A `send_idat` about a record whose IDAT is
//! gone is not answered: `prepare` returns `Attention::IdatPurged`, and the task waits, visible,
//! for a person.
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PurgeGhost {
    /// R0's IDAT (the `send_idat`'s record) was purged (durably: the purge's step flushes).
    pub idat_gone: bool,
    /// The current wave's `send_idat` intent was written after R0's IDAT was purged.
    pub intent_after: bool,
    /// A `$providePatientData` whose intent was written after the purge carried R0's IDAT.
    pub sent_after: bool,
    /// The purge dropped the IDAT of a record an open task referred to.
    pub purged_needed: bool,
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
        let live = n.live().clone();
        let open: Vec<(TaskId, crate::state::MTask)> = TASKS
            .iter()
            .filter_map(|&t| live.task(t).map(|m| (t, *m)))
            .filter(|(t, m)| real::is_open(*t, m))
            .collect();
        let referred = |r: usize| open.iter().any(|(t, m)| real::refers_to(*t, m, &live, r));
        let mut next = live.clone();
        for r in 0..RECORDS {
            if live.withdrawn[r]
                || live.idat_purged[r]
                || !real::idat_purge_due(r, &live.records[r])
            {
                continue;
            }
            let kept = referred(r) && self.bug != Some(SeededBug::PurgeIgnoresOpenTasks);
            if kept {
                continue;
            }
            next.idat_purged[r] = true;
            n.purge.purged_needed |= referred(r);
            if r == 0 {
                n.purge.idat_gone = true;
            }
        }
        n.commit(next);
        n.flush();
        n.pc = Pc::Idle;
    }
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
        Property::sometimes(
            "reachable_send_idat_about_purged_idat_needs_attention",
            |_, s: &State| {
                s.disk.task(TaskId::SendIdat).map(|t| t.state)
                    == Some(MTaskState::Attention(MAttn::IdatPurged))
            },
        ),
    ]
}
