//! The properties, each a named check (ARCHITECTURE.md, "Durability argument", points to
//! them by name).
//!
//! Liveness is judged at quiescent states (`TaskModel::is_quiescent`): the agent idles, a
//! fault-free cycle changes nothing, the clock has nothing left to move, the fTTP has done
//! what it owes. Every fair run with finitely many crashes and losses ends in one, because
//! crashes and losses are budgeted and `agent_cycles_converge` rules out a livelock inside
//! the agent. stateright's own `eventually` is not used: it is judged only at states without
//! any successor, and in this model a crash is possible in every state while the budget
//! lasts.

use stateright::Property;

use crate::model::TaskModel;
use crate::state::{MAttn, MTaskState, Pc, RecState, Relisting, State, Store, TaskId};

/// Every safety and liveness property, in the order they are reported; the approval model
/// adds its own (see [`approval_properties`]).
pub fn properties(m: &TaskModel) -> Vec<Property<TaskModel>> {
    let mut all = vec![
        Property::always("no_provide_after_deadline", |_, s: &State| {
            !s.fttp.late_provide
        }),
        Property::always(
            "at_most_one_provide_while_listed_until_done",
            |m: &TaskModel, s: &State| m.relisting == Relisting::Once || s.fttp.accepted <= 1,
        ),
        Property::always("no_unrequested_element_sent", |_, s: &State| {
            !s.fttp.unrequested_element
        }),
        // The ghost is the configured list (`real::released`), judged at the fTTP's receipt.
        Property::always("no_element_outside_release_list", |_, s: &State| {
            !s.fttp.outside_release
        }),
        Property::always("pseudonym_never_changes", |_, s: &State| !s.psn_changed),
        Property::always("stored_done_is_backed_by_the_fttp", |_, s: &State| {
            claims_backed(s, &s.disk) && claims_backed(s, s.live())
        }),
        Property::always("agent_cycles_converge", |m: &TaskModel, s: &State| {
            // While a `withdraw` command runs the cycle waits for it (it ends by itself).
            s.pc != Pc::Idle || s.withdraw.running() || m.converges(s)
        }),
        Property::always(
            "records_end_with_pseudonym_or_attention",
            |m: &TaskModel, s: &State| !m.is_quiescent(s) || records_settled(&s.disk),
        ),
        Property::always(
            "listed_tasks_end_answered_expired_or_visible",
            |m: &TaskModel, s: &State| !m.is_quiescent(s) || tasks_settled(m, s),
        ),
        // Reachability: without these the properties above could hold vacuously.
        Property::sometimes("reachable_send_idat_answered", |_, s: &State| {
            matches!(
                s.disk.task(TaskId::SendIdat).map(|t| t.state),
                Some(MTaskState::Done { .. })
            )
        }),
        Property::sometimes("reachable_send_idat_in_doubt", |_, s: &State| {
            s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::InDoubt)
        }),
        Property::sometimes("reachable_send_idat_expired", |_, s: &State| {
            s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::Expired)
        }),
        Property::sometimes(
            "reachable_pseudonym_from_dic_psn_available",
            |_, s: &State| {
                s.disk.records[1].pseudonym == Some(1)
                    && matches!(
                        s.disk.task(TaskId::Dic).map(|t| t.state),
                        Some(MTaskState::Done { .. })
                    )
            },
        ),
        Property::sometimes("reachable_quiescent_end", |m: &TaskModel, s: &State| {
            s.crashes_left == 0 && s.faults_left == 0 && m.is_quiescent(s)
        }),
    ];
    if let Some(required) = m.approvals {
        all.extend(approval_properties(required));
    }
    if m.handover {
        // The handover model raises no send_idat (it writes no pseudonym).
        all.retain(|p| !p.name.starts_with("reachable_send_idat"));
    }
    all.extend(crate::handover::properties(m));
    if m.withdraw {
        all.extend(crate::withdraw::properties());
    }
    if m.purge {
        all.extend(crate::purge::properties());
    }
    all
}

/// The approval model's properties (`[dispatch] idat_release = "approval"`). They judge what
/// reached the fTTP against what the users really did (ghosts written by their moves, not by
/// the agent), so a wrong count or a lost denial in the agent's store cannot hide a violation.
/// `no_provide_after_deadline` covers the deadline in this model too.
fn approval_properties(required: u8) -> Vec<Property<TaskModel>> {
    let mut props = vec![
        Property::always("no_provide_before_required_approvals", |_, s: &State| {
            !s.release.provided_unapproved
        }),
        Property::always("no_provide_after_denial", |_, s: &State| {
            !s.release.provided_after_denial
        }),
        Property::always("approval_after_deadline_sends_nothing", |_, s: &State| {
            !s.release.provided_after_late_approval
        }),
        Property::sometimes("reachable_send_idat_awaiting_approval", |_, s: &State| {
            s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::AwaitingApproval)
        }),
        Property::sometimes(
            "reachable_approved_send_idat_answered",
            |m: &TaskModel, s: &State| {
                m.approvals
                    .is_some_and(|r| s.release.distinct_approvers() >= r)
                    && matches!(
                        s.disk.task(TaskId::SendIdat).map(|t| t.state),
                        Some(MTaskState::Done { .. })
                    )
            },
        ),
        Property::sometimes("reachable_denied_send_idat_closed", |_, s: &State| {
            s.release.denied
                && s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::Closed)
        }),
        // With two required, one approval keeps the task awaiting: its expiry is one from
        // AwaitingApproval (with one required, no approval is the nearest the ghosts tell).
        Property::sometimes(
            "reachable_awaiting_approval_expired",
            |m: &TaskModel, s: &State| {
                s.release.distinct_approvers() == u8::from(m.approvals.is_some_and(|r| r > 1))
                    && !s.release.denied
                    && s.ever_stored[TaskId::SendIdat.index()]
                    && s.disk.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::Expired)
            },
        ),
    ];
    if required > 1 {
        props.push(Property::sometimes(
            "reachable_one_approval_still_awaiting",
            |_, s: &State| {
                s.release.distinct_approvers() == 1
                    && s.disk.task(TaskId::SendIdat).map(|t| t.state)
                        == Some(MTaskState::AwaitingApproval)
            },
        ));
    }
    props
}

/// What a store says was done is true at the fTTP: an answered `send_idat` was accepted, a
/// `repeat_request` done was received, a record awaiting clearing or pseudonymised was
/// registered, and a `dic_psn_available` done has its pseudonym stored with it.
fn claims_backed(s: &State, store: &Store) -> bool {
    let f = &s.fttp;
    let send_ok = match store.task(TaskId::SendIdat).map(|t| t.state) {
        Some(MTaskState::Done { .. }) | Some(MTaskState::Attention(MAttn::StillListed { .. })) => {
            f.accepted >= 1
        }
        _ => true,
    };
    let repeat_ok = match store.task(TaskId::Repeat).map(|t| t.state) {
        Some(MTaskState::Done { .. }) => f.registered[1],
        _ => true,
    };
    let dic_ok = match store.task(TaskId::Dic).map(|t| t.state) {
        Some(MTaskState::Done { .. }) => store.records[1].pseudonym == Some(1),
        _ => true,
    };
    let records_ok = store.records.iter().enumerate().all(|(r, rec)| {
        !matches!(
            rec.state,
            RecState::AwaitingClearing | RecState::Pseudonymised
        ) || f.registered[r]
    });
    send_ok && repeat_ok && dic_ok && records_ok
}

fn attention_about(store: &Store, r: usize) -> bool {
    let tasks: &[TaskId] = if r == 0 {
        &[TaskId::SendIdat]
    } else {
        &[TaskId::Repeat, TaskId::Dic]
    };
    tasks.iter().any(|t| {
        matches!(
            store.task(*t).map(|m| m.state),
            Some(MTaskState::Attention(_))
        )
    })
}

fn records_settled(store: &Store) -> bool {
    store.records.iter().enumerate().all(|(r, rec)| {
        rec.pseudonym.is_some()
            || rec.state == RecState::Rejected
            || store.withdrawn[r]
            || attention_about(store, r)
    })
}

/// Every task the agent stored, or that the fTTP still lists, is finished or visible. A task
/// that reached the process only in listings lost to a crash before the merge flush, and that
/// the fTTP no longer lists (past its deadline, given up, or listed once), cannot be known to
/// the agent: that window is stated in ARCHITECTURE.md (durability argument, point 1), and its
/// record is still covered by `records_end_with_pseudonym_or_attention`.
fn tasks_settled(m: &TaskModel, s: &State) -> bool {
    [TaskId::SendIdat, TaskId::Repeat, TaskId::Dic]
        .into_iter()
        .all(|t| {
            let owed = s.ever_stored[t.index()] || m.listable(s.fttp.task(t));
            !owed || s.disk.task(t).is_some_and(|task| task.state.is_settled())
        })
}
