//! `[dispatch] idat_release = "approval"` end to end against the simulator on loopback:
//! nothing is sent before enough different local users approve, the same user twice counts
//! once, a denied task is never sent, an approval after the deadline sends nothing. The agent
//! runs in this process; `approve`, `deny` and `status` are the real binary, run beside it
//! (the store is closed meanwhile: the commands open it themselves, with the process's user
//! as the actor).

use crate::support::agent::*;
use crate::support::robust::text;
use ttp_agent::agent::Agent;
use ttp_agent::domain::{Closure, TaskState};
use ttp_proto::TaskKey;

fn state(agent: &Agent, key: &TaskKey) -> TaskState {
    agent.store().get_task(key).unwrap().unwrap().state
}

/// Every record's IDAT value (for "never in any output").
fn idat_values(agent: &Agent) -> Vec<String> {
    agent
        .store()
        .records_in_states(|_| true)
        .unwrap()
        .into_iter()
        .flat_map(|r| r.idat.map(|i| i.0.into_values().collect::<Vec<_>>()))
        .flatten()
        .filter(|v| v.len() > 3)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_waits_for_two_different_users_and_denied_or_late_ones_are_never_sent() {
    let mut cfg = sim_config(23);
    cfg.clearing = 0.0;
    let env = setup(
        cfg,
        &[(
            "idat_release = \"automatic\"\napprovals_required = 1\n",
            "idat_release = \"approval\"\napprovals_required = 2\n",
        )],
    )
    .await;
    let agent = submit_records(&env, 3).await;
    let mut recs = agent.store().records_in_states(|_| true).unwrap();
    recs.sort_by(|a, b| a.head.local_id.cmp(&b.head.local_id));
    assert!(recs.iter().all(|r| r.head.pseudonym.is_some()));
    let bf = |i: usize| ttp_proto::BloomFilter(recs[i].head.bloom_filter.clone()).to_base64();
    let values = idat_values(&agent);
    assert!(!values.is_empty());
    let later = env.sim.now() + chrono::Duration::hours(2);
    let approved = env
        .sim
        .add_send_idat_for(&bf(0), &["given", "birthdate"], later);
    let denied = env.sim.add_send_idat_for(&bf(1), &["family"], later);
    // Short-lived: its deadline passes while it waits for approval.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(6);
    let late = env.sim.add_send_idat_for(&bf(2), &["given"], soon);

    agent.poll_cycle().await.expect("poll");
    agent.poll_cycle().await.expect("poll");
    let (k_approved, k_denied, k_late) = (
        send_idat_key(&agent, &approved),
        send_idat_key(&agent, &denied),
        send_idat_key(&agent, &late),
    );
    for k in [&k_approved, &k_denied, &k_late] {
        assert_eq!(state(&agent, k), TaskState::AwaitingApproval, "{k}");
    }
    assert_eq!(
        env.sim.stats().provide_ok,
        0,
        "nothing is sent before approval"
    );
    agent.store().flush().unwrap();
    drop(agent);

    // `status` lists what awaits approval: codes, never values.
    let status = run_as(&env, "coordinator", &["status"]);
    assert!(status.status.success(), "{}", text(&status));
    let status_text = text(&status);
    assert!(
        status_text.contains("awaiting approval of the release (3;"),
        "{status_text}"
    );
    assert!(
        status_text.contains("asks for given, birthdate"),
        "{status_text}"
    );
    assert!(status_text.contains("approvals 0 of 2"), "{status_text}");

    // One approval of two; the same user again does not count.
    let first = run_as(&env, "coordinator", &["approve", &k_approved.0]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains("approved by coordinator (1 of 2); awaits 1 more approval(s)"),
        "{}",
        text(&first)
    );
    let again = run_as(&env, "coordinator", &["approve", &k_approved.0]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        text(&again).contains("approved by coordinator already"),
        "{}",
        text(&again)
    );
    // A study that is not this agent's is refused before anything is touched.
    let foreign = run_as(
        &env,
        "coordinator",
        &["approve", "--study", "other-study", &k_approved.0],
    );
    assert_eq!(foreign.status.code(), Some(2), "{}", text(&foreign));
    assert!(text(&foreign).contains("other-study"), "{}", text(&foreign));
    let deny = run_as(
        &env,
        "coordinator",
        &["deny", &k_denied.0, "--reason", "no consent on file"],
    );
    assert!(deny.status.success(), "{}", text(&deny));

    let agent = reopen(&env);
    agent.poll_cycle().await.expect("poll");
    assert_eq!(
        state(&agent, &k_approved),
        TaskState::AwaitingApproval,
        "one approval is not enough, the same user twice counts once"
    );
    assert_eq!(
        state(&agent, &k_denied),
        TaskState::Closed {
            at: match state(&agent, &k_denied) {
                TaskState::Closed { at, .. } => at,
                other => panic!("{other:?}"),
            },
            why: Closure::Denied {
                by: "coordinator".into(),
                reason: "no consent on file".into()
            }
        }
    );
    assert_eq!(env.sim.stats().provide_ok, 0);
    let trail = agent.store().audit().unwrap();
    let approvals: Vec<_> = trail.iter().filter(|e| e.action == "approve").collect();
    assert_eq!(approvals.len(), 1, "{trail:?}");
    assert_eq!(approvals[0].actor, "coordinator");
    assert!(trail.iter().any(|e| e.action == "deny"
        && e.actor == "coordinator"
        && e.subject == k_denied.0
        && e.detail.contains("no consent on file")));
    agent.store().flush().unwrap();
    drop(agent);

    // The deadline of the third passes while it waits: an approval then sends nothing.
    while chrono::Utc::now() <= soon {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let too_late = run_as(&env, "coordinator", &["approve", &k_late.0]);
    assert_eq!(too_late.status.code(), Some(1), "{}", text(&too_late));
    assert!(
        text(&too_late).contains("deadline passed"),
        "{}",
        text(&too_late)
    );
    // A second user completes the first task.
    let second = run_as(&env, "second-approver", &["approve", &k_approved.0]);
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        text(&second).contains("(2 of 2); ready: sent in the next cycle"),
        "{}",
        text(&second)
    );

    let agent = reopen(&env);
    agent.poll_cycle().await.expect("poll");
    agent.poll_cycle().await.expect("poll");
    assert!(matches!(state(&agent, &k_approved), TaskState::Done { .. }));
    assert!(matches!(state(&agent, &k_late), TaskState::Expired { .. }));
    assert!(matches!(state(&agent, &k_denied), TaskState::Closed { .. }));
    let stats = env.sim.stats();
    assert_eq!(
        stats.provide_ok, 1,
        "only the approved task was sent: {stats:?}"
    );
    let received: Vec<String> = env.sim.received_task_ids();
    assert_eq!(received, std::slice::from_ref(&approved));
    let rec = agent.store().get_task(&k_approved).unwrap().unwrap();
    assert_eq!(
        rec.approvals
            .iter()
            .map(|a| a.by.as_str())
            .collect::<Vec<_>>(),
        ["coordinator", "second-approver"]
    );
    agent.store().flush().unwrap();
    drop(agent);

    // No IDAT value in any output of these commands.
    let final_status = run_as(&env, "coordinator", &["status", "--json"]);
    for out in [
        &status_text,
        &text(&first),
        &text(&again),
        &text(&deny),
        &text(&too_late),
        &text(&second),
        &text(&final_status),
    ] {
        for v in &values {
            assert!(!out.contains(v.as_str()), "an IDAT value in: {out}");
        }
    }
    env.sim.shutdown().await;
}
