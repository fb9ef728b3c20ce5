//! `$requestTasks` bodies, as a gateway (or anything between it and the agent) might send them.
//!
//! Beyond "never panics": parsing is deterministic, every task has a key, keys and problem
//! reasons are single lines of bounded size (they end up in logs and as store keys), and the
//! tight limits cap what is kept.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ttp_proto::task::{ParseLimits, parse_tasks, parse_tasks_with};

fuzz_target!(|data: &[u8]| {
    let Ok(list) = parse_tasks(data) else {
        return;
    };
    assert_eq!(
        parse_tasks(data).ok().as_ref(),
        Some(&list),
        "deterministic"
    );
    for task in &list.tasks {
        let key = task.key();
        assert!(!key.0.is_empty() && key.0.len() <= 1024, "key {key:?}");
        assert!(!key.0.contains('\n'));
        let _ = format!("{key} {:?}", task.kind.type_name());
    }
    for problem in &list.problems {
        assert!(!problem.key.0.is_empty() && problem.key.0.len() <= 1024);
        assert!(!problem.reason.contains('\n'), "{:?}", problem.reason);
    }
    let tight = ParseLimits {
        max_tasks: 2,
        max_elements: 1,
        max_unknown: 1,
        ..ParseLimits::default()
    };
    if let Ok(limited) = parse_tasks_with(data, &tight) {
        assert!(limited.tasks.len() <= 2);
    }
});
