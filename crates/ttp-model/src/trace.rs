//! Counterexamples as readable steps: what moved, and what changed on disk, in the
//! process's view of the store, and at the fTTP.

use std::fmt::Write as _;

use crate::model::{Action, TaskModel};
use crate::state::{
    MAttn, MRecord, MTask, MTaskState, Net, Pc, PsnReply, RECORDS, State, Store, TASKS, TaskId,
    USERS,
};
use crate::withdraw::Cmd;

fn task_name(t: TaskId) -> &'static str {
    match t {
        TaskId::SendIdat => "send_idat",
        TaskId::Repeat => "repeat_request",
        TaskId::Dic => "dic_psn_available",
    }
}

fn records(batch: &[bool; RECORDS]) -> String {
    (0..RECORDS)
        .filter(|&r| batch[r])
        .map(|r| format!("R{r}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn net(n: Net) -> &'static str {
    match n {
        Net::Answered => "answered",
        Net::LostAfterEffect => "processed by the fTTP, ANSWER LOST",
        Net::Unreachable => "NOT DELIVERED (fTTP unreachable)",
    }
}

/// What the agent's step from `pc` does, in words.
fn agent_step(before: &State, after: &State, n: Net) -> String {
    match &before.pc {
        Pc::Down => "agent starts: recovery (Running tasks are interrupted)".into(),
        Pc::RecoverFlush => "agent: flush after recovery".into(),
        Pc::Idle if after.pc == Pc::Fetch => {
            "agent: cycle starts; no record needs registration".into()
        }
        Pc::Idle => "agent: cycle starts; registration picks pending records, writes Sending".into(),
        Pc::RegIntentFlush { batch } => {
            format!("agent: flush registration intent for {}", records(batch))
        }
        Pc::RegSend { batch } => format!(
            "agent: $requestPsnFromBfWorkflow for {}: {}",
            records(batch),
            net(n)
        ),
        Pc::RegApply { reply, .. } => match reply {
            PsnReply::Answer(p) => {
                format!("agent: applies the registration answer (pseudonyms {p:?})")
            }
            PsnReply::Failed(_) => {
                "agent: registration answer missing; handles the batch (real code: keeps it Sending)"
                    .into()
            }
        },
        Pc::RegFlush => "agent: flush registration answers".into(),
        Pc::Fetch => format!("agent: $requestTasks: {}", net(n)),
        Pc::Merge { .. } if matches!(after.pc, Pc::MergeWrite { .. }) => {
            "agent: merge: poll counter; reads the listed tasks' stored copies".into()
        }
        Pc::Merge { listed } => format!(
            "agent: merge listing [{}] (poll counter, then tasks)",
            TASKS
                .iter()
                .filter(|t| listed[t.index()])
                .map(|t| task_name(*t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Pc::MergeWrite { .. } => {
            "agent: merge: writes the merged tasks (from the copies it read)".into()
        }
        Pc::Reconcile { .. } => "agent: reconcile in-doubt tasks, caught-up, expiry".into(),
        Pc::MergeFlush => "agent: flush merge".into(),
        Pc::Dispatch if matches!(after.pc, Pc::DispatchWrite { .. }) => {
            "agent: dispatch: checks the ready tasks (expiry, withdrawals) and prepares the answers"
                .into()
        }
        Pc::Dispatch => {
            "agent: dispatch: expiry, withdrawals, intents (Running), local tasks".into()
        }
        Pc::DispatchWrite { .. } => {
            "agent: dispatch: writes the intents (Running) it decided on".into()
        }
        Pc::IntentFlush { .. } => "agent: flush intents".into(),
        Pc::Send { to_send, done, .. } => {
            let t = to_send[done.len()];
            let op = match t {
                TaskId::SendIdat => "$providePatientData",
                _ => "$requestPsnFromBfWorkflow",
            };
            format!("agent: {} handler, {op}: {}", task_name(t), net(n))
        }
        Pc::Outcomes { .. } => "agent: write outcomes (records, then tasks)".into(),
        Pc::OutcomeFlush => "agent: flush outcomes".into(),
        Pc::Purge => "agent: housekeeping: purges IDAT past retention (durable)".into(),
    }
}

fn action(before: &State, after: &State, a: Action) -> String {
    match a {
        Action::Agent { net: n } => agent_step(before, after, n),
        Action::Crash { keep } => format!(
            "CRASH (keeps {keep} of {} unflushed commits)",
            before.pending.len()
        ),
        Action::Tick => "clock: one tick passes".into(),
        Action::Clear => "fTTP: R1's clearing finishes; raises dic_psn_available".into(),
        Action::Raise(t) => format!("fTTP: raises {}", task_name(t)),
        Action::StopListing => "fTTP: stops listing dic_psn_available".into(),
        Action::Approve(u) => {
            let again = before
                .live()
                .task(TaskId::SendIdat)
                .is_some_and(|m| m.approvals & (1 << u) != 0);
            format!(
                "{}: `ttp-agent approve` send_idat{}",
                USERS[usize::from(u)],
                if again { " (again)" } else { "" }
            )
        }
        Action::Deny => format!("{}: `ttp-agent deny` send_idat", USERS[0]),
        Action::PurgeCmd => match before.purge.cmd {
            crate::purge::PurgeCmd::Read { .. } => {
                "person: `ttp-agent purge`: purges IDAT past retention not kept (durable)".into()
            }
            _ if matches!(after.purge.cmd, crate::purge::PurgeCmd::Read { .. }) => {
                "person: `ttp-agent purge`: reads which records open tasks refer to".into()
            }
            _ => {
                "person: `ttp-agent purge`: purges IDAT past retention no open task needs (durable)"
                    .into()
            }
        },
        Action::Handover { net: n } => crate::handover::describe_step(before, after, n),
        Action::StoreFails => format!(
            "agent: a STORE WRITE FAILS in the next step ({}); the agent goes on",
            agent_step(before, after, Net::Answered)
        ),
        Action::Withdraw => {
            let how = if before.withdraw.standalone || before.pc == Pc::Down {
                " (without the daemon)"
            } else {
                ""
            };
            let step = match before.withdraw.cmd {
                Cmd::Idle if before.live().withdrawn[0] => "finds R0 withdrawn already",
                Cmd::Idle => "removes R0, keeps its withdrawal and audit entry (one transaction)",
                Cmd::Close { .. } => "closes the open send_idat it read, if unchanged",
                Cmd::Flush => "rewrites the store (durable) and reports success",
            };
            format!("{}: `ttp-agent withdraw case-0`{how}: {step}", USERS[0])
        }
    }
}

fn show_task(m: Option<&MTask>) -> String {
    match m {
        None => "-".into(),
        Some(m) => match m.state {
            MTaskState::Received => "Received".into(),
            MTaskState::Running => "Running".into(),
            MTaskState::InDoubt => "InDoubt".into(),
            MTaskState::RetryWait { .. } => "RetryWait".into(),
            MTaskState::Attention(MAttn::StillListed { .. }) => {
                "NeedsAttention(StillListed)".into()
            }
            MTaskState::Attention(a) => format!("NeedsAttention({a:?})"),
            MTaskState::Done { .. } => "Done".into(),
            MTaskState::Expired => "Expired".into(),
            MTaskState::AwaitingApproval => {
                format!("AwaitingApproval(approvals: {})", approvers(m.approvals))
            }
            MTaskState::Closed => "Closed(denied)".into(),
            MTaskState::Withdrawn => "Closed(withdrawn)".into(),
        },
    }
}

fn approvers(bits: u8) -> String {
    let names: Vec<&str> = (0..USERS.len())
        .filter(|u| bits & (1 << u) != 0)
        .map(|u| USERS[u])
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn show_record(r: &MRecord) -> String {
    match r.pseudonym {
        Some(p) => format!("{:?}(psn-{p})", r.state),
        None => format!("{:?}", r.state),
    }
}

fn store_diff(label: &str, a: &Store, b: &Store, out: &mut String) {
    for t in TASKS {
        if show_task(a.task(t)) != show_task(b.task(t)) {
            let _ = write!(
                out,
                " {label} {}: {} -> {};",
                task_name(t),
                show_task(a.task(t)),
                show_task(b.task(t))
            );
        }
    }
    for r in 0..RECORDS {
        if b.withdrawn[r] && !a.withdrawn[r] {
            let _ = write!(out, " {label} R{r}: removed, withdrawal kept;");
        }
        if b.idat_purged[r] && !a.idat_purged[r] {
            let _ = write!(out, " {label} R{r}: IDAT purged;");
        }
        if (a.records[r].state, a.records[r].pseudonym)
            != (b.records[r].state, b.records[r].pseudonym)
        {
            let _ = write!(
                out,
                " {label} R{r}: {} -> {};",
                show_record(&a.records[r]),
                show_record(&b.records[r])
            );
        }
    }
}

fn changes(a: &State, b: &State) -> String {
    let mut out = String::new();
    crate::handover::describe_changes(a, b, &mut out);
    store_diff("disk", &a.disk, &b.disk, &mut out);
    if a.live() != b.live() && b.pending.len() > a.pending.len() {
        store_diff("unflushed", a.live(), b.live(), &mut out);
    }
    if a.release.distinct_approvers() != b.release.distinct_approvers() {
        let _ = write!(
            out,
            " distinct persons who approved: {};",
            b.release.distinct_approvers()
        );
    }
    if a.fttp.accepted != b.fttp.accepted {
        let _ = write!(
            out,
            " fTTP accepted $providePatientData x{};",
            b.fttp.accepted
        );
    }
    if b.fttp.unrequested_element && !a.fttp.unrequested_element {
        out.push_str(" the Patient carries an element the task did not ask for;");
    }
    if b.withdraw.provided_after && !a.withdraw.provided_after {
        out.push_str(" its intent was written after the withdrawal committed;");
    }
    if b.purge.sent_after && !a.purge.sent_after {
        out.push_str(" it carries R0's IDAT, purged before its intent;");
    }
    if b.purge.purged_needed && !a.purge.purged_needed {
        out.push_str(" an open task refers to the purged record;");
    }
    if b.fttp.outside_release && !a.fttp.outside_release {
        out.push_str(" the Patient carries an element outside the release list;");
    }
    for r in 0..RECORDS {
        if a.fttp.registered[r] != b.fttp.registered[r] {
            let _ = write!(out, " fTTP registered R{r};");
        }
    }
    if let Some(d) = b.fttp.task(TaskId::SendIdat).deadline
        && a.fttp.task(TaskId::SendIdat).deadline != Some(d)
        && d <= 0
        && a.fttp
            .task(TaskId::SendIdat)
            .deadline
            .is_some_and(|x| x > 0)
    {
        out.push_str(" send_idat's deadline passes;");
    }
    out
}

/// The counterexample as numbered steps.
pub fn render(_m: &TaskModel, path: Vec<(State, Option<Action>)>) -> String {
    let mut out = String::new();
    for (i, pair) in path.windows(2).enumerate() {
        let (before, a) = &pair[0];
        let (after, _) = &pair[1];
        let Some(a) = a else { continue };
        let _ = writeln!(
            out,
            "  {:>2}. {}{}",
            i + 1,
            action(before, after, *a),
            changes(before, after)
        );
    }
    if let Some((last, _)) = path.last() {
        let _ = writeln!(
            out,
            "  final: disk tasks [send_idat {}, repeat_request {}, dic_psn_available {}], records [R0 {}, R1 {}]; fTTP accepted {} $providePatientData, registered {:?}",
            show_task(last.disk.task(TaskId::SendIdat)),
            show_task(last.disk.task(TaskId::Repeat)),
            show_task(last.disk.task(TaskId::Dic)),
            show_record(&last.disk.records[0]),
            show_record(&last.disk.records[1]),
            last.fttp.accepted,
            last.fttp.registered
        );
        out.pop();
        out.push_str(&crate::handover::describe_final(last));
        out.push('\n');
    }
    out
}
