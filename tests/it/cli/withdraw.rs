//! `ttp-agent withdraw --file CSV`: the local ids come from the file's `local_id` column (other
//! columns are never shown), a file without that column is refused naming the file, and
//! `--study` must be the configured study.

use crate::support::handover::{site, stderr, stdout};
use crate::support::store::record;

#[test]
fn withdraw_reads_the_local_id_column_of_a_file_and_refuses_a_file_without_one() {
    let site = site();
    site.with_store(|s| {
        s.insert_records(&[
            record("case-1", 1),
            record("case-2", 2),
            record("case-3", 3),
        ])
        .expect("insert")
    });
    let list = site.dir.path().join("withdrawn.csv");
    std::fs::write(&list, "note;local_id\nSecretNote;case-1\n;case-3\n").unwrap();
    let out = site.run(&["withdraw", "--file", list.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("case-1: consent withdrawn"), "{text}");
    assert!(text.contains("case-3: consent withdrawn"), "{text}");
    assert!(!text.contains("SecretNote") && !stderr(&out).contains("SecretNote"));
    site.with_store(|s| {
        assert!(s.get_record("case-1").unwrap().is_none());
        assert!(s.get_record("case-2").unwrap().is_some());
        assert!(s.get_record("case-3").unwrap().is_none());
        let w = s.withdrawal("case-1").unwrap().expect("kept");
        assert_eq!(w.by, "coordinator");
    });

    let bad = site.dir.path().join("no-column.csv");
    std::fs::write(&bad, "id\ncase-2\n").unwrap();
    let out = site.run(&["withdraw", "--file", bad.to_str().unwrap()], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no `local_id` column") && stderr(&out).contains("no-column.csv"),
        "{}",
        stderr(&out)
    );
    let out = site.run(&["withdraw", "--study", "another-study", "case-2"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("another-study"), "{}", stderr(&out));
    site.with_store(|s| assert!(s.get_record("case-2").unwrap().is_some()));
}
