//! A hostile or confused dispatcher, at the level of the agent: what it sends must not make
//! the agent act outside its configuration, nor hand a spreadsheet a formula.

use crate::support::agent::*;
use serde_json::json;
use ttp_agent::domain::{Attention, TaskState};

/// Stores and registers `n` records; returns the agent and the base64 filter of the first.
async fn registered(env: &Env, n: usize) -> (std::sync::Arc<ttp_agent::agent::Agent>, String) {
    let agent = submit_records(env, n).await;
    let known = agent.store().get_record("case-00000").unwrap().unwrap();
    let bf = ttp_proto::BloomFilter(known.head.bloom_filter.clone()).to_base64();
    (agent, bf)
}

fn psn_requests(env: &Env) -> u64 {
    env.sim
        .stats()
        .requests_by_op
        .get("requestPsnFromBfWorkflow")
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_request_for_a_foreign_study_or_target_is_held_for_attention() {
    let mut cfg = sim_config(61);
    cfg.clearing = 0.0;
    cfg.repeat_first = 0.0;
    let env = setup(cfg, &[]).await;
    let (agent, bf) = registered(&env, 1).await;
    for (study, target) in [("another-study", TARGET), (STUDY, "another-site")] {
        env.sim
            .inject_task(json!({"name": "repeat_request", "part": [
            {"name": "study", "valueIdentifier": {"value": study}},
            {"name": "bloomfilter", "valueBase64Binary": bf},
            {"name": "target", "valueIdentifier": {"value": target}}]}));
    }
    let before = psn_requests(&env);

    let report = agent.poll_cycle().await.unwrap();
    assert_eq!(report.dispatch.attention, 2, "{report:?}");
    assert_eq!(psn_requests(&env), before, "nothing was sent for them");
    let held: Vec<_> = agent
        .store()
        .tasks()
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.state {
            TaskState::NeedsAttention {
                reason: Attention::ForeignStudy { study, target },
            } => Some((study, target)),
            _ => None,
        })
        .collect();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(held.contains(&("another-study".to_owned(), TARGET.to_owned())));
    assert!(held.contains(&(STUDY.to_owned(), "another-site".to_owned())));
    env.sim.shutdown().await;
}
