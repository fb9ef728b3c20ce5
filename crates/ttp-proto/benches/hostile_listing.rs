//! A hostile `$requestTasks` answer: what parsing the worst bodies under the client's 16 MiB
//! response limit costs in memory and time (BENCHMARKS.md §7).
//!
//! `cargo bench -p ttp-proto --bench hostile_listing` (release profile). Each case runs in a
//! child process of its own (this binary with `--case NAME`), so its peak RSS (`VmHWM`, the
//! kernel's high-water mark of the process's memory) is that case's alone: the body, the
//! parse, and what the parse keeps. The
//! figures are printed, not asserted, apart from a check that the known tasks were all kept.
//!
//! The cases, each a body just under 16 MiB:
//! * `unknown-95k`: the review's finding, ~95,000 tasks of unknown types with parts (and 100
//!   `send_idat` tasks spread between them);
//! * `tiny-unknown`: as many minimal unknown entries as fit (`{"name":"x"}`, ~1.3 million);
//! * `broken-known`: `dic_psn_available` tasks with invalid base64 (problems, ~180,000);
//! * `many-parts`: unknown tasks of 1,000 tiny parts each;
//! * `one-entry`: one unknown entry holding the whole body;
//! * `known-max`: well-formed `dic_psn_available` tasks only (what a real, huge listing keeps).

use std::time::Instant;

use ttp_proto::task::{ParseLimits, parse_tasks_with};

const LIMIT: usize = 16 * 1024 * 1024 - 64 * 1024;

fn body(mut next: impl FnMut(usize) -> String) -> (Vec<u8>, usize) {
    let mut text = String::from(r#"{"resourceType":"Parameters","parameter":["#);
    let mut n = 0;
    loop {
        let entry = next(n);
        if text.len() + entry.len() + 2 > LIMIT {
            break;
        }
        if n > 0 {
            text.push(',');
        }
        text.push_str(&entry);
        n += 1;
    }
    text.push_str("]}");
    (text.into_bytes(), n)
}

fn send_idat(i: usize) -> String {
    format!(
        r#"{{"name":"send_idat","part":[{{"name":"expires","valueInstant":"2099-01-01T00:00:00Z"}},{{"name":"taskId","valueId":"t-{i}"}},{{"name":"pseudonym","valueIdentifier":{{"value":"psn_{i}"}}}},{{"name":"element","valueCoding":{{"code":"given"}}}}]}}"#
    )
}

fn case(name: &str) -> Option<(Vec<u8>, usize)> {
    Some(match name {
        "unknown-95k" => body(|i| {
            if i % 950 == 0 {
                send_idat(i)
            } else {
                format!(
                    r#"{{"name":"future_task_{}","part":[{{"name":"n","valueString":"{i:08}"}},{{"name":"payload","valueString":"{}"}}]}}"#,
                    i % 3,
                    "x".repeat(96)
                )
            }
        }),
        "tiny-unknown" => body(|_| r#"{"name":"x"}"#.to_owned()),
        "broken-known" => body(|i| {
            format!(
                r#"{{"name":"dic_psn_available","part":[{{"name":"bloomfilter","valueBase64Binary":"*{i}"}},{{"name":"target","valueString":"t"}},{{"name":"pseudonym","valueString":"p"}}]}}"#
            )
        }),
        "many-parts" => body(|i| {
            let parts: Vec<String> = (0..1000).map(|_| r#"{"name":"p"}"#.to_owned()).collect();
            format!(
                r#"{{"name":"bulk_{}","part":[{}]}}"#,
                i % 2,
                parts.join(",")
            )
        }),
        "one-entry" => {
            let mut text = String::from(
                r#"{"resourceType":"Parameters","parameter":[{"name":"huge","part":["#,
            );
            let mut first = true;
            while text.len() < LIMIT - 64 {
                if !first {
                    text.push(',');
                }
                first = false;
                text.push_str("[0]");
            }
            text.push_str("]}]}");
            (text.into_bytes(), 1)
        }
        "known-max" => body(|i| {
            format!(
                r#"{{"name":"dic_psn_available","part":[{{"name":"bloomfilter","valueBase64Binary":"{i:0>172}"}},{{"name":"target","valueString":"dic"}},{{"name":"pseudonym","valueString":"psn_{i}"}}]}}"#
            )
        }),
        _ => return None,
    })
}

const CASES: [&str; 6] = [
    "unknown-95k",
    "tiny-unknown",
    "broken-known",
    "many-parts",
    "one-entry",
    "known-max",
];

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn run_case(name: &str) {
    let Some((body, entries)) = case(name) else {
        eprintln!("unknown case {name}");
        std::process::exit(2);
    };
    let before = peak_rss_kib();
    let limits = ParseLimits::default();
    let start = Instant::now();
    let list = parse_tasks_with(&body, &limits);
    let elapsed = start.elapsed();
    let peak = peak_rss_kib();
    let (tasks, problems) = match &list {
        Ok(l) => (l.tasks.len(), l.problems.len()),
        Err(_) => (0, 0),
    };
    if name == "unknown-95k" {
        let known = list
            .as_ref()
            .map(|l| {
                l.tasks
                    .iter()
                    .filter(|t| t.key().0.starts_with("send_idat/"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(known, entries.div_ceil(950), "every known task is kept");
    }
    println!(
        "RESULT case={name} body_mib={:.1} entries={entries} parse_ms={} tasks_kept={tasks} \
         problems={problems} error={} rss_before_parse_mib={:.1} peak_rss_mib={:.1}",
        body.len() as f64 / 1048576.0,
        elapsed.as_millis(),
        list.is_err(),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        run_case(args.get(i + 1).map(String::as_str).unwrap_or(""));
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    let exe = std::env::current_exe().expect("own path");
    for name in CASES {
        let out = std::process::Command::new(&exe)
            .args(["--case", name])
            .output()
            .expect("case runs");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprintln!("{name}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}
