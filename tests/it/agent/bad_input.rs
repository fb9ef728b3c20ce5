//! Bad input from the fTTP, at the level of the agent.
//!
//! * A `$requestTasks` answer that cannot be read at all -- not JSON, not a `Parameters`
//!   resource, an HTML page with status 200, larger than `max_response_size` -- fails the cycle
//!   with an error that says what was wrong, and changes nothing in the store: the next good
//!   listing finds every task where it was. The simulator cannot produce these bodies, so a
//!   small axum stub serves them.
//! * Single broken tasks -- duplicate parts, invalid base64, invalid instants, unknown element
//!   codes, entries that are not even objects -- are stored once as needing attention and shown
//!   by `status`, while every other task of the same listing is answered. Injected into the
//!   simulator's listings.

use std::sync::{Arc, Mutex};

use crate::support::agent::*;
use crate::support::robust::{run_bin, text, write_config};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use ttp_agent::agent::CycleError;
use ttp_agent::client::ErrorClass;
use ttp_agent::domain::{Attention, RecordState, TaskState};
use ttp_agent::submit;

// ---------------------------------------------------------------------------------------------
// A stub dispatcher whose `$requestTasks` answer the test sets
// ---------------------------------------------------------------------------------------------

#[derive(Clone)]
struct Canned {
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Canned {
    fn fhir(body: impl Into<Vec<u8>>) -> Canned {
        Canned {
            status: StatusCode::OK,
            content_type: "application/fhir+json",
            body: body.into(),
        }
    }
}

/// What the stub answers: `$requestTasks` with `tasks`, `$providePatientData` with `provide`,
/// anything else with an empty `Parameters`.
struct Answers {
    tasks: Canned,
    provide: Canned,
}

struct Stub {
    base_url: String,
    answers: Arc<Mutex<Answers>>,
    server: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start(first: Canned) -> Stub {
        let answers = Arc::new(Mutex::new(Answers {
            tasks: first,
            provide: Canned::fhir(""),
        }));
        let app = axum::Router::new()
            .route(
                "/ttp-fhir/fhir/dispatcher/{op}",
                axum::routing::post(answer),
            )
            .with_state(answers.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Stub {
            base_url: format!("http://{addr}/ttp-fhir/fhir/dispatcher"),
            answers,
            server,
        }
    }

    fn set(&self, canned: Canned) {
        self.answers.lock().unwrap().tasks = canned;
    }

    fn set_provide(&self, canned: Canned) {
        self.answers.lock().unwrap().provide = canned;
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(State(answers): State<Arc<Mutex<Answers>>>, Path(op): Path<String>) -> Response {
    let canned = match op.as_str() {
        "$requestTasks" => answers.lock().unwrap().tasks.clone(),
        "$providePatientData" => answers.lock().unwrap().provide.clone(),
        // Registrations: no pseudonym (every record awaits a clearing).
        _ => Canned::fhir(r#"{"resourceType":"Parameters"}"#),
    };
    (
        canned.status,
        [(header::CONTENT_TYPE, canned.content_type)],
        canned.body,
    )
        .into_response()
}

/// A listing with an unknown task type and a `send_idat` for a record this site never had:
/// both end up needing attention, so the store holds tasks whose state must survive.
fn good_listing() -> Vec<u8> {
    json!({
        "resourceType": "Parameters",
        "parameter": [
            {"name": "future_task", "part": [{"name": "note", "valueString": "from a newer gateway"}]},
            {"name": "send_idat", "part": [
                {"name": "expires", "valueInstant": "2099-01-01T00:00:00+01:00"},
                {"name": "taskId", "valueId": "task-unknown-record"},
                {"name": "bloomfilter", "valueBase64Binary": ttp_proto::BloomFilter(vec![7; 225]).to_base64()},
                {"name": "element", "valueCoding": {"code": "given"}}
            ]}
        ]
    })
    .to_string()
    .into_bytes()
}

/// Bodies no listing may be read from, with a word the error must contain.
fn unreadable_listings(limit: usize) -> Vec<(&'static str, Canned, &'static str)> {
    let mut huge = br#"{"resourceType":"Parameters","parameter":["#.to_vec();
    while huge.len() <= limit {
        huge.extend_from_slice(br#"{"name":"future_task","part":[]},"#);
    }
    huge.extend_from_slice(br#"{"name":"future_task","part":[]}]}"#);
    vec![
        (
            "not JSON",
            Canned::fhir("<html><body>Gateway maintenance</body></html>"),
            "JSON",
        ),
        (
            "truncated JSON",
            Canned::fhir(r#"{"resourceType":"Parameters","parameter":[{"name":"#),
            "JSON",
        ),
        (
            "wrong resourceType",
            Canned::fhir(r#"{"resourceType":"Bundle","type":"searchset","entry":[]}"#),
            "Bundle",
        ),
        (
            "a JSON array",
            Canned::fhir(r#"[{"resourceType":"Parameters"}]"#),
            "Parameters",
        ),
        (
            "an HTML page with status 200",
            Canned {
                status: StatusCode::OK,
                content_type: "text/html; charset=utf-8",
                body: b"<html><body>Please log in</body></html>".to_vec(),
            },
            "Content-Type",
        ),
        (
            "larger than max_response_size",
            Canned::fhir(huge),
            "max_response_bytes",
        ),
    ]
}

const LIMIT: usize = 64 * 1024;

fn stub_edits() -> Vec<(&'static str, &'static str)> {
    vec![("[ttp]\n", "[ttp]\nmax_response_size = \"64KiB\"\n")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_listing_fails_the_cycle_and_changes_nothing() {
    let stub = Stub::start(Canned::fhir(good_listing())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &stub.base_url, &stub_edits());
    let loaded = load(&config);
    let agent = agent(&loaded);

    let first = agent.poll_cycle().await.expect("a good listing");
    assert_eq!(
        (first.listed, first.dispatch.attention),
        (2, 1),
        "{first:?}"
    );
    let before = agent.store().tasks().unwrap();
    assert_eq!(before.len(), 2);
    let seq = agent.store().last_poll_seq().unwrap();

    for (what, canned, needle) in unreadable_listings(LIMIT) {
        stub.set(canned);
        let err = agent
            .poll_cycle()
            .await
            .expect_err(&format!("{what}: the cycle must fail"));
        let CycleError::Fetch(ttp) = &err else {
            panic!("{what}: expected a fetch error, got {err}");
        };
        assert_eq!(ttp.class, ErrorClass::Protocol, "{what}: {err}");
        let message = err.to_string();
        assert!(
            message.contains("$requestTasks") && message.contains(needle),
            "{what}: the message must say what was wrong: {message}"
        );
        assert!(!message.contains('\n'), "{what}: one line: {message}");
        assert_eq!(
            agent.store().tasks().unwrap(),
            before,
            "{what}: nothing changed"
        );
        assert_eq!(agent.store().last_poll_seq().unwrap(), seq, "{what}");
    }

    // The next good listing finds everything where it was.
    stub.set(Canned::fhir(good_listing()));
    let report = agent.poll_cycle().await.expect("good again");
    assert_eq!((report.listed, report.new_tasks), (2, 0), "{report:?}");
    let after = agent.store().tasks().unwrap();
    assert_eq!(after.len(), 2);
    for (a, b) in before.iter().zip(&after) {
        assert_eq!((&a.key, &a.state), (&b.key, &b.state));
    }
}

/// The same through the binary: `poll --once` ends with status 1 and one line that says what
/// was wrong with the answer, never with a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_reports_an_unreadable_listing_in_one_line_and_exits_1() {
    let stub = Stub::start(Canned::fhir(good_listing())).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &stub.base_url, &stub_edits());
    let config = config.to_str().unwrap().to_string();
    for (what, canned, needle) in unreadable_listings(LIMIT) {
        stub.set(canned);
        let config = config.clone();
        let out = tokio::task::spawn_blocking(move || {
            run_bin(&["poll", "--once", "--config", &config], &[])
        })
        .await
        .unwrap();
        let all = text(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {all}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.starts_with("ttp-agent: error:"))
            .unwrap_or_else(|| panic!("{what}: no error line: {all}"));
        assert!(
            line.contains("could not fetch tasks") && line.contains(needle),
            "{what}: {line}"
        );
        assert_eq!(
            line.matches("$requestTasks failed").count(),
            1,
            "{what}: said once: {line}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {all}");
        println!("{what}: {line}");
    }
}

/// A `$providePatientData` the fTTP refuses for good (404, 422) is not retried: the task needs
/// attention, with the status and the OperationOutcome's text as the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_refused_answer_needs_attention_with_the_fttp_reason() {
    let stub = Stub::start(Canned::fhir(r#"{"resourceType":"Parameters"}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &stub.base_url, &stub_edits());
    let loaded = load(&config);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let records = submit::read_records_from(records_csv(2).as_bytes(), "records.csv").unwrap();
    let encoded = submit::encode_records(&encoder, records, &|_| {}).unwrap();
    submit::check_profile(agent.store(), &encoder).unwrap();
    submit::store_records(agent.store(), &encoded, 10).unwrap();
    assert_eq!(agent.register_pending().await.unwrap().awaiting_clearing, 2);

    for (status, diagnostics) in [
        (422, "Patient.birthDate is required by this study"),
        (404, "task 4711 is unknown"),
    ] {
        let rec = agent
            .store()
            .get_record(if status == 422 {
                "case-00000"
            } else {
                "case-00001"
            })
            .unwrap()
            .unwrap();
        let task_id = format!("refused-{status}");
        stub.set(Canned::fhir(
            json!({"resourceType": "Parameters", "parameter": [{"name": "send_idat", "part": [
                {"name": "expires", "valueInstant": "2099-01-01T00:00:00+01:00"},
                {"name": "taskId", "valueId": task_id},
                {"name": "bloomfilter", "valueBase64Binary": ttp_proto::BloomFilter(rec.head.bloom_filter.clone()).to_base64()},
                {"name": "element", "valueCoding": {"code": "given"}}]}]})
            .to_string(),
        ));
        stub.set_provide(Canned {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: "application/fhir+json",
            body: json!({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "invalid", "diagnostics": diagnostics}]})
            .to_string()
            .into_bytes(),
        });
        let report = agent.poll_cycle().await.unwrap();
        assert_eq!(report.dispatch.attention, 1, "{status}: {report:?}");
        let task = agent
            .store()
            .tasks()
            .unwrap()
            .into_iter()
            .find(|t| t.key.0.contains(&task_id))
            .expect("stored");
        let TaskState::NeedsAttention {
            reason: Attention::Rejected { status: s, detail },
        } = &task.state
        else {
            panic!("{status}: {:?}", task.state);
        };
        assert_eq!(*s, status);
        assert!(detail.contains(diagnostics), "{status}: {detail}");
        assert_eq!(task.attempts, 1, "not retried");
        // The next cycle leaves it alone.
        let report = agent.poll_cycle().await.unwrap();
        assert_eq!(
            report.dispatch.done + report.dispatch.retry + report.dispatch.attention,
            0
        );
    }
    let status = ttp_agent::status::build(agent.store(), chrono::Duration::hours(48), 7).unwrap();
    assert_eq!(status.needs_attention.len(), 2);
    assert!(
        status.needs_attention.iter().any(|l| l
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("HTTP 422") && r.contains("birthDate is required"))),
        "{:?}",
        status.needs_attention
    );
}

// ---------------------------------------------------------------------------------------------
// Broken single tasks, injected into the simulator's listings
// ---------------------------------------------------------------------------------------------

/// Tasks that are each wrong in one way; `known_bf` is a filter of a stored record, so that
/// only the defect stops the agent.
fn broken_tasks(known_bf: &str) -> Vec<(&'static str, serde_json::Value)> {
    let coding = |code: &str| json!({"name": "element", "valueCoding": {"code": code}});
    vec![
        (
            "duplicate taskId",
            json!({"name": "send_idat", "part": [
                {"name": "expires", "valueInstant": "2099-01-01T00:00:00+01:00"},
                {"name": "taskId", "valueId": "dup-1"},
                {"name": "taskId", "valueId": "dup-2"},
                {"name": "bloomfilter", "valueBase64Binary": known_bf},
                coding("given")]}),
        ),
        (
            "invalid base64",
            json!({"name": "dic_psn_available", "part": [
                {"name": "bloomfilter", "valueBase64Binary": "not*base64!"},
                {"name": "target", "valueIdentifier": {"value": TARGET}},
                {"name": "pseudonym", "valueIdentifier": {"value": "psn_x"}}]}),
        ),
        (
            "invalid instant",
            json!({"name": "send_idat", "part": [
                {"name": "expires", "valueInstant": "next Tuesday"},
                {"name": "taskId", "valueId": "bad-instant"},
                {"name": "bloomfilter", "valueBase64Binary": known_bf},
                coding("given")]}),
        ),
        (
            "date without time",
            json!({"name": "repeat_request", "part": [
                {"name": "expires", "valueInstant": "2099-01-01"},
                {"name": "study", "valueIdentifier": {"value": STUDY}},
                {"name": "bloomfilter", "valueBase64Binary": known_bf},
                {"name": "target", "valueIdentifier": {"value": TARGET}}]}),
        ),
        ("not an object", json!(42)),
        (
            "no name",
            json!({"part": [{"name": "taskId", "valueId": "nameless"}]}),
        ),
        (
            "unknown element code",
            json!({"name": "send_idat", "part": [
                {"name": "expires", "valueInstant": "2099-01-01T00:00:00+02:00"},
                {"name": "taskId", "valueId": "unknown-code"},
                {"name": "bloomfilter", "valueBase64Binary": known_bf},
                coding("given"),
                coding("shoe-size")]}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_tasks_need_attention_and_the_rest_is_processed() {
    let mut cfg = sim_config(21);
    cfg.clearing = 0.7;
    let env = setup(cfg, &[]).await;
    let loaded = load(&env.config_path);
    let agent = agent(&loaded);
    let encoder = encoder(&loaded);
    let path = env.dir.path().join("records.csv");
    std::fs::write(&path, records_csv(30)).unwrap();
    let records = submit::read_records(&path).unwrap();
    let encoded = submit::encode_records(&encoder, records, &|_| {}).unwrap();
    submit::check_profile(agent.store(), &encoder).unwrap();
    submit::store_records(agent.store(), &encoded, 100).unwrap();
    agent.register_pending().await.unwrap();

    let known = agent.store().get_record("case-00000").unwrap().unwrap();
    let known_bf = ttp_proto::BloomFilter(known.head.bloom_filter.clone()).to_base64();
    let broken = broken_tasks(&known_bf);
    for (_, task) in &broken {
        env.sim.inject_task(task.clone());
    }

    let mut cycles = 0;
    loop {
        cycles += 1;
        let report = agent
            .poll_cycle()
            .await
            .expect("broken tasks never fail a cycle");
        if cycles == 1 {
            // Six cannot be read at all; the unknown element code is read and refused. (Both
            // `pseudonym` and `bloomfilter` is no defect: the IG allows it; see idat_fidelity.rs.)
            assert_eq!(report.problems, broken.len() - 1, "{report:?}");
            assert_eq!(report.dispatch.attention, 1, "{report:?}");
        } else {
            assert_eq!(report.problems, broken.len() - 1, "{report:?}");
            assert_eq!(report.dispatch.attention, 0, "{report:?}");
        }
        let needing = agent
            .store()
            .tasks()
            .unwrap()
            .into_iter()
            .filter(|t| matches!(t.state, TaskState::NeedsAttention { .. }))
            .count();
        assert_eq!(needing, broken.len(), "each broken task is stored once");
        let waiting = agent
            .store()
            .records_in_states(|s| *s != RecordState::Pseudonymised)
            .unwrap();
        // The injected tasks stay listed; everything else must be done.
        let real_open = env.sim.open_tasks().len() - broken.len();
        if waiting.is_empty() && real_open == 0 {
            break;
        }
        assert!(
            cycles < 12,
            "{} records waiting after {cycles} cycles",
            waiting.len()
        );
    }
    let stats = env.sim.stats();
    assert!(stats.provide_ok > 0, "{stats:?}");
    assert_eq!(stats.duplicate_provides, 0);
    assert_eq!(
        stats.provide_violations_total, 0,
        "{:?}",
        stats.provide_violations
    );

    // Exactly the broken ones need attention, each with a reason that names the defect but
    // no value.
    let attention: Vec<_> = agent
        .store()
        .tasks()
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.state {
            TaskState::NeedsAttention { reason } => Some((t.key, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(attention.len(), broken.len(), "{attention:?}");
    let reasons: Vec<String> = attention.iter().map(|(_, r)| r.to_string()).collect();
    for (needle, what) in [
        ("appears 2 times", "duplicate taskId"),
        ("base64", "invalid base64"),
        ("shoe-size", "unknown element code"),
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{what}: no reason says {needle:?}: {reasons:#?}"
        );
    }
    assert!(
        attention
            .iter()
            .any(|(_, r)| matches!(r, Attention::MalformedTask(why) if why.contains("shoe-size")))
    );
    for reason in &reasons {
        assert!(
            !reason.contains(&known_bf) && !reason.contains("not*base64!"),
            "{reason}"
        );
    }

    // `status` shows them to a coordinator.
    let status = ttp_agent::status::build(agent.store(), chrono::Duration::hours(48), 7).unwrap();
    assert_eq!(status.needs_attention.len(), broken.len());
    let shown = ttp_agent::status::render_text(&status);
    assert!(
        shown.contains("needs-attention") || shown.to_lowercase().contains("attention"),
        "{shown}"
    );
    env.sim.shutdown().await;
}
