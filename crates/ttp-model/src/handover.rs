//! The store's logs and the hand-over of pseudonyms (ARCHITECTURE.md, "Durability argument",
//! points 7, 8 and 11).
//!
//! **Logs.** Every commit of the model's store runs the store's own rules for its two logs
//! in that commit (`store_logs`, called by `State::commit`): a record that gets a pseudonym it
//! did not have appends `(record, pseudonym)` to the pseudonym log (`psn_log::logged_pseudonym`,
//! as `Store::update_records` does in the record's transaction); a `send_idat` whose stored
//! state changes appends what `domain::disclosure::step` says to the disclosure log (as
//! `Store::put_tasks` and `replace_task_audited` do in the task's transaction). The seeded
//! bugs `psn_without_log` and `disclosure_after_commit` split those transactions in two.
//!
//! **Hand-over** (the handover model, `MODEL_HANDOVER=1`): the delivery webhook's worker
//! (`handover::WebhookWorker::drain`) runs beside the agent's cycle and dies with it. It reads
//! its cursor and the log's durable head (`Store::durable_pseudonym_log_head`: it flushes the
//! store first if the log grew; the model takes the head of the disk's log for the head of the
//! process's last flush, which is never smaller, so it may hand over a little more, all of it
//! durable), takes the events after its cursor through `psn_log::handover_window`, POSTs them
//! one at a time, moves its cursor after each 2xx (a commit of its own) and flushes at the end
//! of the batch or after a failure that followed a delivery. The receiver may process a POST
//! and its answer be lost (the worker retries the same event) or never get it. The receiver is
//! a ghost: it keeps the first event it got under each `seq` and drops later ones with the same
//! `seq`, as the hand-over documentation tells receivers to. `export --new` follows the same
//! protocol (the durable window, the hand-over, the cursor after success, then a flush) with
//! all rows in one file and one cursor write; it is not modelled as a consumer of its own.
//!
//! **A failing store** (point 8): a store write that fails ends the daemon
//! (`CycleError::into_stop`), which is the crash transition: the failed transaction is not
//! committed and the next start finds a prefix of the commits. The move `StoreFails` (a write
//! is lost and the agent goes on) is offered only where the agent would go on: never for the
//! real code (`real::store_error_stops_the_daemon`), always under the seeded bug
//! `continue_after_store_error`.

use std::fmt::Write as _;
use std::sync::OnceLock;

use stateright::Property;

use crate::model::{Action, SeededBug, TaskModel};
use crate::real;
use crate::state::{MTaskState, Net, Pc, RECORDS, RecState, Relisting, State, Store, TaskId};

/// The worker's batch (`handover.rs`, `BATCH`).
const BATCH: usize = 100;

/// The store's logs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Logs {
    /// The pseudonym log: `(record, pseudonym)` per entry; an entry's `seq` is its position + 1.
    pub psn: Vec<(u8, u8)>,
    pub disclosed: Disclosed,
}

/// The disclosure log of the `send_idat`, counted (saturating at 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Disclosed {
    /// Entries that say the fTTP has the answer: `accepted` and `settled-accepted`.
    pub accepted: u8,
    /// `in-doubt` entries not yet settled.
    pub in_doubt: u8,
    /// In-doubt entries settled as unknown (`settled-expired`, `-handled`, `-unknown`).
    pub unknown: u8,
}

/// A disclosure log entry (`DisclosureEvent`), as the model counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Accepted,
    InDoubt,
    SettledAccepted,
    SettledSentAgain,
    /// `settled-expired`, `-handled` or `-unknown`: whether the fTTP has it is unknown.
    SettledUnknown,
}

impl Disclosed {
    fn note(&mut self, e: Entry) {
        let inc = |n: &mut u8| *n = (*n + 1).min(3);
        match e {
            Entry::Accepted => inc(&mut self.accepted),
            Entry::InDoubt => inc(&mut self.in_doubt),
            Entry::SettledAccepted => {
                self.in_doubt = self.in_doubt.saturating_sub(1);
                inc(&mut self.accepted);
            }
            Entry::SettledSentAgain => self.in_doubt = self.in_doubt.saturating_sub(1),
            Entry::SettledUnknown => {
                self.in_doubt = self.in_doubt.saturating_sub(1);
                inc(&mut self.unknown);
            }
        }
    }
}

/// Where the webhook worker is; each variant names its next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Consumer {
    /// Reading the cursor and the durable head is next.
    #[default]
    Idle,
    /// Delivering event `next` of the batch that ends at `upto`; `moved`: the cursor moved in
    /// this batch (a failure then flushes it).
    Batch { next: u8, upto: u8, moved: bool },
    /// The receiver answered 2xx for `seq`: the cursor write is next.
    Ack { seq: u8, upto: u8 },
    /// The end of the batch: the flush is next.
    Flush,
}

/// The consumer and the receiver's ghost.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Handover {
    pub pc: Consumer,
    /// What the receiver kept, by `seq - 1`: the first `(record, pseudonym)` it got under it.
    pub received: Vec<Option<(u8, u8)>>,
}

/// The handover model's start: R1 was registered in an earlier run and its clearing runs; R0
/// is new.
pub fn init(s: &mut State) {
    s.disk.records[1].state = RecState::AwaitingClearing;
    s.fttp.registered[1] = true;
}

/// The store's log rules, in the commit that writes `new` over `prev`.
pub fn store_logs(prev: &Store, new: &mut Store) {
    let mut logs = prev.logs.clone();
    for r in 0..RECORDS {
        if let Some(p) = real::logged_pseudonym(prev.records[r].pseudonym, new.records[r].pseudonym)
        {
            logs.psn.push((r as u8, p));
        }
    }
    let t = TaskId::SendIdat;
    if let Some(m) = new.task(t)
        && prev.task(t).map(|o| o.state) != Some(m.state)
        && let Some(e) = real::disclosure_event(prev.task(t), m)
    {
        logs.disclosed.note(e);
    }
    new.logs = logs;
}

fn stops_the_daemon() -> bool {
    static STOPS: OnceLock<bool> = OnceLock::new();
    *STOPS.get_or_init(real::store_error_stops_the_daemon)
}

fn store_failure_goes_on(m: &TaskModel) -> bool {
    m.bug == Some(SeededBug::ContinueAfterStoreError) || !stops_the_daemon()
}

/// The consumer's moves and the failing store write.
pub fn actions(m: &TaskModel, s: &State, actions: &mut Vec<Action>) {
    if m.handover && s.pc != Pc::Down {
        actions.push(Action::Handover { net: Net::Answered });
        if s.faults_left > 0 && matches!(s.handover.pc, Consumer::Batch { .. }) {
            actions.push(Action::Handover {
                net: Net::LostAfterEffect,
            });
            actions.push(Action::Handover {
                net: Net::Unreachable,
            });
        }
    }
    if s.crashes_left > 0 && s.pc != Pc::Down && store_failure_goes_on(m) {
        actions.push(Action::StoreFails);
    }
}

pub fn step(m: &TaskModel, s: &State, a: Action) -> Option<State> {
    match a {
        Action::StoreFails => {
            if s.crashes_left == 0 || !store_failure_goes_on(m) {
                return None;
            }
            // The agent's next step, with the writes it commits lost; it goes on regardless.
            let mut n = m.agent_step(s, Net::Answered)?;
            let before = s.pending.len();
            if n.pending.len() <= before || n.pending[..before] != s.pending[..] {
                return None;
            }
            n.pending.truncate(before);
            n.crashes_left -= 1;
            Some(n)
        }
        Action::Handover { net } => consumer_step(m, s, net),
        _ => None,
    }
}

fn receive(h: &mut Handover, seq: u8, entry: (u8, u8)) {
    let i = usize::from(seq) - 1;
    if h.received.len() <= i {
        h.received.resize(i + 1, None);
    }
    // A receiver drops a repeat by its `seq`.
    h.received[i].get_or_insert(entry);
}

fn set_cursor(n: &mut State, seq: u8) {
    let mut live = n.live().clone();
    live.cursor = seq;
    n.commit(live);
}

/// The webhook worker's next step (`WebhookWorker::drain`).
pub fn consumer_step(m: &TaskModel, s: &State, net: Net) -> Option<State> {
    if !m.handover || s.pc == Pc::Down {
        return None;
    }
    let mut n = s.clone();
    if net != Net::Answered {
        if n.faults_left == 0 || !matches!(s.handover.pc, Consumer::Batch { .. }) {
            return None;
        }
        n.faults_left -= 1;
    }
    match s.handover.pc {
        Consumer::Idle => {
            let cursor = s.live().cursor;
            let head = s.live().logs.psn.len() as u8;
            let flushed = if m.bug == Some(SeededBug::HandoverBeforeFlush) {
                head
            } else {
                // Store::durable_pseudonym_log_head: flush first if the log grew.
                if usize::from(head) > n.disk.logs.psn.len() {
                    n.flush();
                }
                n.disk.logs.psn.len() as u8
            };
            let count = real::handover_window(cursor, flushed, BATCH);
            if count > 0 {
                n.handover.pc = Consumer::Batch {
                    next: cursor + 1,
                    upto: cursor + count,
                    moved: false,
                };
            }
        }
        Consumer::Batch { next, upto, moved } => {
            // The batch was read into memory; the process's log only grows while it lives.
            let entry = *n.live().logs.psn.get(usize::from(next) - 1)?;
            let early = m.bug == Some(SeededBug::CursorBeforeDelivery);
            if early {
                set_cursor(&mut n, next);
            }
            if net != Net::Unreachable {
                receive(&mut n.handover, next, entry);
            }
            n.handover.pc = match net {
                Net::Answered if early && next < upto => Consumer::Batch {
                    next: next + 1,
                    upto,
                    moved: true,
                },
                Net::Answered if early => Consumer::Flush,
                Net::Answered => Consumer::Ack { seq: next, upto },
                // A failure ends the run; the cursor is flushed if it moved.
                _ if moved || early => Consumer::Flush,
                _ => Consumer::Idle,
            };
        }
        Consumer::Ack { seq, upto } => {
            set_cursor(&mut n, seq);
            n.handover.pc = if seq < upto {
                Consumer::Batch {
                    next: seq + 1,
                    upto,
                    moved: true,
                }
            } else {
                Consumer::Flush
            };
        }
        Consumer::Flush => {
            n.flush();
            n.handover.pc = Consumer::Idle;
        }
    }
    Some(n)
}

/// After every move: the worker dies with the process; the seeded bugs that split a
/// transaction in two.
pub fn after(m: &TaskModel, s: &State, a: Action, n: &mut State) {
    if matches!(a, Action::Crash { .. }) {
        n.handover.pc = Consumer::Idle;
    }
    let split_psn = m.bug == Some(SeededBug::PsnWithoutLog);
    let split_disclosure = m.bug == Some(SeededBug::DisclosureAfterCommit);
    let before = s.pending.len();
    if !(split_psn || split_disclosure)
        || n.pending.len() <= before
        || n.pending[..before] != s.pending[..]
    {
        return;
    }
    let mut prev = s.live().clone();
    let mut out = s.pending.clone();
    for c in n.pending.drain(before..) {
        let mut first = c.clone();
        if split_psn {
            first.logs.psn.clone_from(&prev.logs.psn);
        }
        if split_disclosure {
            first.logs.disclosed = prev.logs.disclosed;
        }
        if first != c {
            out.push(first);
        }
        prev = c.clone();
        out.push(c);
    }
    n.pending = out;
}

// ---- properties ----

/// The log's entries are exactly the stored pseudonyms, each once.
fn log_matches_records(st: &Store) -> bool {
    let mut seen = [false; RECORDS];
    for &(r, p) in &st.logs.psn {
        let r = usize::from(r);
        if seen[r] || st.records[r].pseudonym != Some(p) {
            return false;
        }
        seen[r] = true;
    }
    (0..RECORDS).all(|r| seen[r] == st.records[r].pseudonym.is_some())
}

/// The receiver kept what the log holds under `seq` (1-based).
fn kept(s: &State, st: &Store, seq: usize) -> bool {
    st.logs
        .psn
        .get(seq - 1)
        .is_some_and(|e| s.handover.received.get(seq - 1) == Some(&Some(*e)))
}

/// Nothing left that must happen, for the agent and the worker.
fn handover_quiescent(m: &TaskModel, s: &State) -> bool {
    m.is_quiescent(s)
        && s.handover.pc == Consumer::Idle
        && consumer_step(m, s, Net::Answered).is_none_or(|n| n == *s)
}

/// The log never says accepted more often than the fTTP accepted, and its open `in-doubt`
/// entry is there exactly while the stored task is in doubt (the entry and the state are one
/// transaction); under "listed until done", once nothing is left that must happen, nothing is
/// in doubt and every accepted answer is logged as accepted or as settled-unknown.
fn disclosures_match(m: &TaskModel, s: &State) -> bool {
    let f = s.fttp.accepted;
    let consistent = |st: &Store| {
        let in_doubt = st.task(TaskId::SendIdat).map(|t| t.state) == Some(MTaskState::InDoubt);
        st.logs.disclosed.accepted <= f && st.logs.disclosed.in_doubt == u8::from(in_doubt)
    };
    if !consistent(&s.disk) || !consistent(s.live()) {
        return false;
    }
    if m.relisting != Relisting::UntilDone || !m.is_quiescent(s) {
        return true;
    }
    let d = s.disk.logs.disclosed;
    d.in_doubt == 0 && f <= d.accepted + d.unknown
}

/// The properties of points 7 and 11 (`props::properties` adds them).
pub fn properties(m: &TaskModel) -> Vec<Property<TaskModel>> {
    let mut all = vec![Property::always(
        "handover_log_matches_records",
        |_, s: &State| log_matches_records(&s.disk) && log_matches_records(s.live()),
    )];
    if m.handover {
        all.push(Property::always(
            "handover_never_skips_a_pseudonym",
            |m: &TaskModel, s: &State| {
                [&s.disk, s.live()]
                    .iter()
                    .all(|st| (1..=usize::from(st.cursor)).all(|q| kept(s, st, q)))
                    && (!handover_quiescent(m, s)
                        || (1..=s.disk.logs.psn.len()).all(|q| kept(s, &s.disk, q)))
            },
        ));
        all.push(Property::sometimes(
            "reachable_both_pseudonyms_handed_over",
            |_, s: &State| s.handover.received.iter().flatten().count() == RECORDS,
        ));
        all.push(Property::sometimes(
            "reachable_handover_quiescent_end",
            |m: &TaskModel, s: &State| {
                s.crashes_left == 0
                    && s.faults_left == 0
                    && !s.disk.logs.psn.is_empty()
                    && handover_quiescent(m, s)
            },
        ));
    } else {
        all.push(Property::always(
            "disclosure_log_matches_fttp",
            |m: &TaskModel, s: &State| disclosures_match(m, s),
        ));
        all.push(Property::sometimes(
            "reachable_disclosure_accepted",
            |_, s: &State| s.disk.logs.disclosed.accepted >= 1,
        ));
        all.push(Property::sometimes(
            "reachable_disclosure_in_doubt",
            |_, s: &State| s.disk.logs.disclosed.in_doubt >= 1,
        ));
    }
    all
}

// ---- trace ----

pub fn describe_step(before: &State, after: &State, net: Net) -> String {
    match before.handover.pc {
        Consumer::Idle if after.pending.len() < before.pending.len() => {
            "webhook: reads its cursor; the log grew: flushes the store, reads the batch".into()
        }
        Consumer::Idle => "webhook: reads its cursor and the batch after it".into(),
        Consumer::Batch { next, .. } => {
            let what = match net {
                Net::Answered => "answered 2xx",
                Net::LostAfterEffect => "processed by the receiver, ANSWER LOST",
                Net::Unreachable => "NOT DELIVERED (receiver unreachable)",
            };
            format!("webhook: POST seq {next}: {what}")
        }
        Consumer::Ack { seq, .. } => format!("webhook: moves its cursor to {seq}"),
        Consumer::Flush => "webhook: flushes the store (end of the batch)".into(),
    }
}

fn show_log(l: &[(u8, u8)]) -> String {
    let entries: Vec<String> = l
        .iter()
        .enumerate()
        .map(|(i, (r, p))| format!("{}=R{r}(psn-{p})", i + 1))
        .collect();
    format!("[{}]", entries.join(", "))
}

pub fn describe_changes(a: &State, b: &State, out: &mut String) {
    for (label, x, y) in [
        ("disk", &a.disk, &b.disk),
        ("unflushed", a.live(), b.live()),
    ] {
        if label == "unflushed" && b.pending.len() <= a.pending.len() {
            continue;
        }
        if x.logs.psn != y.logs.psn {
            let _ = write!(out, " {label} pseudonym log {};", show_log(&y.logs.psn));
        }
        if x.cursor != y.cursor {
            let _ = write!(out, " {label} cursor {} -> {};", x.cursor, y.cursor);
        }
        if x.logs.disclosed != y.logs.disclosed {
            let d = y.logs.disclosed;
            let _ = write!(
                out,
                " {label} disclosure log: {} accepted, {} in doubt, {} unknown;",
                d.accepted, d.in_doubt, d.unknown
            );
        }
    }
    if a.handover.received != b.handover.received {
        let kept: Vec<String> = b
            .handover
            .received
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|(r, p)| format!("{}=R{r}(psn-{p})", i + 1)))
            .collect();
        let _ = write!(out, " receiver keeps [{}];", kept.join(", "));
    } else if matches!(a.handover.pc, Consumer::Batch { .. })
        && matches!(b.handover.pc, Consumer::Ack { .. })
    {
        out.push_str(" receiver drops it as a repeat of its seq;");
    }
}

pub fn describe_final(s: &State) -> String {
    format!(
        "; pseudonym log {} (cursor {}), receiver kept {:?}; disclosure log {:?}",
        show_log(&s.disk.logs.psn),
        s.disk.cursor,
        s.handover.received,
        s.disk.logs.disclosed
    )
}
