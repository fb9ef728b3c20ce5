//! The dispatcher's protocol over real HTTP on 127.0.0.1: registration, every task type and
//! its lifecycle, `$providePatientData` checks, expiry on the controllable clock, errors and
//! authentication.

use std::collections::HashSet;
use std::time::Duration;

use crate::support::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, TimeDelta};
use serde_json::{Value, json};
use ttp_sim::{IdatSubject, SimAuth, SimConfig};

fn cfg() -> SimConfig {
    SimConfig {
        study: STUDY.into(),
        target: TARGET.into(),
        ..SimConfig::default()
    }
}

fn clearing_cfg(repeat_first: f64) -> SimConfig {
    SimConfig {
        clearing: 1.0,
        repeat_first,
        ..cfg()
    }
}

fn no_clearing_cfg() -> SimConfig {
    SimConfig {
        clearing: 0.0,
        ..cfg()
    }
}

fn assert_outcome(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{}",
        reply.body
    );
    assert!(
        reply.body["issue"][0]["diagnostics"].is_string(),
        "{}",
        reply.body
    );
    assert_eq!(
        reply.headers.get("content-type").map(|v| v.as_bytes()),
        Some(FHIR_JSON.as_bytes())
    );
}

#[tokio::test]
async fn metadata_is_a_public_capability_statement() {
    let (sim, client) = started(SimConfig {
        auth: SimAuth::api_key_header("secret-key"),
        ..cfg()
    })
    .await;
    let response = client
        .http
        .get(client.url("metadata"))
        .send()
        .await
        .expect("sent");
    let reply = read(response).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["resourceType"], "CapabilityStatement");
    let operations: Vec<&str> = reply.body["rest"][0]["operation"]
        .as_array()
        .expect("operations")
        .iter()
        .filter_map(|op| op["name"].as_str())
        .collect();
    assert_eq!(
        operations,
        [
            "requestPsnFromBfWorkflow",
            "requestTasks",
            "providePatientData"
        ]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn no_tasks_is_a_parameters_without_parameter() {
    let sim = ttp_sim::start(cfg()).await.expect("start");
    let reply = Client::new(&sim).tasks().await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, json!({ "resourceType": "Parameters" }));
    assert_eq!(
        reply.headers.get("content-type").map(|v| v.as_bytes()),
        Some(FHIR_JSON.as_bytes())
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn direct_pseudonyms_are_idempotent_deterministic_and_shaped_like_the_example() {
    let (sim, client) = started(no_clearing_cfg()).await;
    let (f1, f2) = (filter(1), filter(2));
    let reply = client.register(&[&f1, &f2]).await;
    assert_eq!(reply.status, 200);
    let entries = named(&reply.body, "pseudonym-bf");
    assert_eq!(entries.len(), 2, "{}", reply.body);

    let example = named(
        &fixture("requestPsnFromBfWorkflow-response.json"),
        "pseudonym-bf",
    );
    assert_eq!(shape(&entries[0]), shape(&example[0]));
    assert_eq!(
        part(&entries[0], "bloomfilter")["valueBase64Binary"],
        f1.as_str()
    );
    assert_eq!(
        part(&entries[1], "bloomfilter")["valueBase64Binary"],
        f2.as_str()
    );
    assert_eq!(
        part(&entries[0], "target")["valueIdentifier"]["value"],
        TARGET
    );
    let p1 = part(&entries[0], "pseudonym")["valueIdentifier"]["value"]
        .as_str()
        .expect("pseudonym")
        .to_owned();
    let code = p1.strip_prefix("mii_").expect("study prefix");
    assert_eq!(code.len(), 6);
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
        "{p1}"
    );

    let again = client.register(&[&f1]).await;
    let again = named(&again.body, "pseudonym-bf");
    assert_eq!(
        part(&again[0], "pseudonym")["valueIdentifier"]["value"],
        p1.as_str()
    );
    assert_eq!(sim.pseudonym_of(&f1).as_deref(), Some(p1.as_str()));
    let stats = sim.stats();
    assert_eq!((stats.registrations, stats.duplicate_registrations), (2, 1));
    assert_eq!(
        stats.requests_by_op.get("$requestPsnFromBfWorkflow"),
        Some(&2)
    );

    // Same seed, same pseudonym; another seed, other pseudonyms.
    let twin = ttp_sim::start(no_clearing_cfg()).await.expect("start");
    Client::new(&twin).register(&[&f1]).await;
    assert_eq!(twin.pseudonym_of(&f1).as_deref(), Some(p1.as_str()));
    let other = ttp_sim::start(SimConfig {
        seed: 99,
        ..no_clearing_cfg()
    })
    .await
    .expect("start");
    Client::new(&other).register(&[&f1, &f2]).await;
    assert!(
        other.pseudonym_of(&f1) != sim.pseudonym_of(&f1)
            || other.pseudonym_of(&f2) != sim.pseudonym_of(&f2)
    );
    for s in [sim, twin, other] {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn invalid_filters_get_an_error_entry_shaped_like_the_example() {
    let (sim, client) = started(no_clearing_cfg()).await;
    let (good, short) = (filter(1), filter_of_len(2, 32));
    let reply = client.register(&["not base64!", &good, &short, "QQ"]).await;
    assert_eq!(reply.status, 200);
    let all = params(&reply.body);
    let names: Vec<&str> = all.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        ["error", "pseudonym-bf", "error", "error"],
        "{}",
        reply.body
    );

    let example = named(&fixture("requestPsnFromBfWorkflow-response.json"), "error");
    for (entry, sent) in [
        (&all[0], "not base64!"),
        (&all[2], short.as_str()),
        (&all[3], "QQ"),
    ] {
        assert_eq!(shape(entry), shape(&example[0]));
        assert_eq!(part(entry, "bloomfilter")["valueBase64Binary"], sent);
        assert_eq!(
            part(entry, "error-code")["valueCoding"],
            json!({ "system": "http://hl7.org/fhir/issue-type", "code": "invalid" })
        );
    }
    assert_eq!(sim.stats().registrations, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn clearing_with_repeat_request_runs_to_a_delivered_pseudonym() {
    let (sim, client) = started(clearing_cfg(1.0)).await;
    let f = filter(7);
    let example = fixture("requestTasks-response.json");

    // 1. Registration needs clearing: no entry, a repeat_request instead.
    let reply = client.register(&[&f]).await;
    assert_eq!(reply.body, json!({ "resourceType": "Parameters" }));
    let tasks = client.tasks().await.body;
    let repeat = named(&tasks, "repeat_request");
    assert_eq!(params(&tasks).len(), 1, "{tasks}");
    let mut repeat_shape = shape(&repeat[0]);
    assert_eq!(
        repeat_shape.remove(0),
        ("expires".into(), "valueInstant".into())
    );
    assert_eq!(repeat_shape, shape(&named(&example, "repeat_request")[0]));
    assert_eq!(part(&repeat[0], "study")["valueIdentifier"]["value"], STUDY);
    assert_eq!(
        part(&repeat[0], "bloomfilter")["valueBase64Binary"],
        f.as_str()
    );
    assert_eq!(
        part(&repeat[0], "target")["valueIdentifier"]["value"],
        TARGET
    );
    // Listed again until done.
    assert_eq!(named(&client.tasks().await.body, "repeat_request").len(), 1);

    // 2. The resend turns it into a send_idat.
    let reply = client.register(&[&f]).await;
    assert_eq!(reply.body, json!({ "resourceType": "Parameters" }));
    let tasks = client.tasks().await.body;
    assert_eq!(params(&tasks).len(), 1, "{tasks}");
    let send_idat = &named(&tasks, "send_idat")[0];
    assert_eq!(
        part(send_idat, "bloomfilter")["valueBase64Binary"],
        f.as_str()
    );
    let task_id = task_id(send_idat).to_owned();
    let elements = requested_elements(send_idat);
    assert!(!elements.is_empty());

    // 3. The answer finishes the clearing; dic_psn_available is listed twice, then gone.
    let reply = client.provide(&task_id, patient_with(&elements)).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        named(&reply.body, "return")[0]["resource"]["resourceType"],
        "Bundle"
    );
    let pseudonym = sim.pseudonym_of(&f).expect("pseudonym after clearing");
    for _ in 0..2 {
        let tasks = client.tasks().await.body;
        let available = named(&tasks, "dic_psn_available");
        assert_eq!(params(&tasks).len(), 1, "{tasks}");
        assert_eq!(
            shape(&available[0]),
            shape(&named(&example, "dic_psn_available")[0])
        );
        assert_eq!(
            part(&available[0], "bloomfilter")["valueBase64Binary"],
            f.as_str()
        );
        assert_eq!(
            part(&available[0], "target")["valueIdentifier"]["value"],
            TARGET
        );
        assert_eq!(
            part(&available[0], "pseudonym")["valueIdentifier"]["value"],
            pseudonym.as_str()
        );
    }
    assert_eq!(
        client.tasks().await.body,
        json!({ "resourceType": "Parameters" })
    );

    // 4. Registering again now answers directly with the same pseudonym.
    let reply = client.register(&[&f]).await;
    let direct = named(&reply.body, "pseudonym-bf");
    assert_eq!(
        part(&direct[0], "pseudonym")["valueIdentifier"]["value"],
        pseudonym.as_str()
    );

    let stats = sim.stats();
    for kind in ["repeat_request", "send_idat", "dic_psn_available"] {
        assert_eq!(stats.tasks_raised_by_type.get(kind), Some(&1), "{kind}");
        assert_eq!(stats.tasks_completed_by_type.get(kind), Some(&1), "{kind}");
    }
    assert!(stats.tasks_expired_by_type.is_empty());
    assert_eq!((stats.clearings_started, stats.clearings_finished), (1, 1));
    assert_eq!((stats.registrations, stats.duplicate_registrations), (1, 1));
    assert_eq!((stats.provide_ok, stats.duplicate_provides), (1, 0));
    assert!(
        stats.provide_violations.is_empty(),
        "{:?}",
        stats.provide_violations
    );
    let received = sim.received_patients();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].0, task_id);
    sim.shutdown().await;
}

#[tokio::test]
async fn send_idat_asks_for_deterministic_nonempty_subsets_with_future_expiry() {
    let config = SimConfig {
        elements: all_elements(),
        task_ttl: Duration::from_secs(3600),
        ..clearing_cfg(0.0)
    };
    let sim = ttp_sim::start(config.clone()).await.expect("start");
    let twin = ttp_sim::start(config).await.expect("start");
    let filters: Vec<String> = (0..50).map(filter).collect();
    let refs: Vec<&str> = filters.iter().map(String::as_str).collect();
    Client::new(&sim).register(&refs).await;
    Client::new(&twin).register(&refs).await;

    let before = sim.now();
    let tasks = Client::new(&sim).tasks().await.body;
    let twin_tasks = Client::new(&twin).tasks().await.body;
    let list = named(&tasks, "send_idat");
    assert_eq!(list.len(), 50);
    let mut subsets = HashSet::new();
    let mut ids = HashSet::new();
    for (task, f) in list.iter().zip(&filters) {
        // Creation order is registration order.
        assert_eq!(part(task, "bloomfilter")["valueBase64Binary"], f.as_str());
        let elements = requested_elements(task);
        assert!(!elements.is_empty());
        assert!(
            elements
                .iter()
                .all(|e| ttp_sim::KNOWN_ELEMENTS.contains(&e.as_str()))
        );
        for element in parts(task, "element") {
            assert_eq!(
                element["valueCoding"]["system"],
                "https://ths-greifswald.de/fhir/CodeSystem/dispatcher/IdatElements"
            );
        }
        subsets.insert(elements);
        let id = task_id(task);
        assert_eq!(id.len(), 36, "{id}");
        assert!(ids.insert(id.to_owned()), "duplicate task id {id}");
        let expires = part(task, "expires")["valueInstant"]
            .as_str()
            .expect("expires");
        assert!(expires.ends_with("+02:00"), "{expires}");
        let expires = DateTime::parse_from_rfc3339(expires).expect("FHIR instant");
        let lifetime = expires.to_utc() - before;
        assert!(
            lifetime > TimeDelta::minutes(59) && lifetime <= TimeDelta::hours(1),
            "{lifetime}"
        );
    }
    assert!(subsets.len() > 10, "subsets should vary: {}", subsets.len());
    let twin_subsets: Vec<Vec<String>> = named(&twin_tasks, "send_idat")
        .iter()
        .map(requested_elements)
        .collect();
    let subsets: Vec<Vec<String>> = list.iter().map(requested_elements).collect();
    assert_eq!(subsets, twin_subsets);
    sim.shutdown().await;
    twin.shutdown().await;
}

#[tokio::test]
async fn idat_by_pseudonym_names_a_pseudonym_the_site_cannot_know() {
    let (sim, client) = started(SimConfig {
        idat_by_pseudonym: 1.0,
        ..clearing_cfg(0.0)
    })
    .await;
    let f = filter(3);
    client.register(&[&f]).await;
    let task = &client.first_send_idat().await;
    let example = &named(&fixture("requestTasks-response.json"), "send_idat")[0];
    let without_elements = |s: Vec<(String, String)>| -> Vec<(String, String)> {
        s.into_iter()
            .filter(|(name, _)| name != "element")
            .collect()
    };
    assert_eq!(
        without_elements(shape(task)),
        without_elements(shape(example))
    );
    assert_eq!(part(task, "bloomfilter"), &Value::Null);
    let provisional = part(task, "pseudonym")["valueIdentifier"]["value"]
        .as_str()
        .expect("pseudonym");
    assert!(provisional.starts_with("mii_"));
    assert_eq!(sim.pseudonym_of(&f), None);
    sim.shutdown().await;
}

#[tokio::test]
async fn provide_violations_are_detected_and_rejected() {
    let (sim, client) = started(SimConfig {
        elements: codes(&["given", "family"]),
        seed: 3,
        // A strict gateway: a missing element is an error (the IG's default is not).
        allow_missing_elements: false,
        ..clearing_cfg(0.0)
    })
    .await;
    // Find a filter whose task asks for both elements, so "missing" and "extra" are clear.
    let mut found = None;
    for n in 0..64 {
        let f = filter(n);
        client.register(&[&f]).await;
        let tasks = client.tasks().await.body;
        let task = named(&tasks, "send_idat")
            .into_iter()
            .find(|t| part(t, "bloomfilter")["valueBase64Binary"] == f.as_str())
            .expect("task for the filter");
        if requested_elements(&task) == codes(&["given", "family"]) {
            found = Some(task_id(&task).to_owned());
            break;
        }
    }
    let task_id = found.expect("some filter asks for both elements");
    let requested = codes(&["given", "family"]);

    let mut extra = patient_with(&requested);
    extra["birthDate"] = json!("1970-01-01");
    let reply = client.provide(&task_id, extra).await;
    assert_outcome(&reply, 422);
    assert!(
        reply
            .body
            .to_string()
            .contains("`birthdate` was sent but not requested")
    );

    let reply = client
        .provide(&task_id, patient_with(&codes(&["given"])))
        .await;
    assert_outcome(&reply, 422);
    assert!(
        reply
            .body
            .to_string()
            .contains("requested element `family` is missing")
    );

    let mut forbidden = patient_with(&requested);
    forbidden["identifier"] = json!([{ "system": "urn:test", "value": "local-1" }]);
    assert_outcome(&client.provide(&task_id, forbidden).await, 422);

    let mut wrong_profile = patient_with(&requested);
    wrong_profile["meta"] =
        json!({ "profile": ["http://hl7.org/fhir/StructureDefinition/Patient"] });
    assert_outcome(&client.provide(&task_id, wrong_profile).await, 422);

    let wrong_target = provide_request(&task_id, "dic_elsewhere", patient_with(&requested));
    assert_outcome(
        &client.post("$providePatientData", &wrong_target).await,
        400,
    );

    let unknown = client
        .provide(
            "00000000-0000-4000-8000-000000000000",
            patient_with(&requested),
        )
        .await;
    assert_outcome(&unknown, 404);

    let stats = sim.stats();
    assert_eq!(stats.provide_ok, 0);
    assert_eq!(
        stats.provide_violations_total, 6,
        "{:?}",
        stats.provide_violations
    );
    let all = stats.provide_violations.join("\n");
    for expected in [
        "`birthdate` was sent but not requested",
        "requested element `family` is missing",
        "Patient.identifier is forbidden",
        "meta.profile",
        "names target `dic_elsewhere`",
        "never issued",
    ] {
        assert!(all.contains(expected), "{expected} not in {all}");
    }
    assert!(
        !all.contains("Testvorname") && !all.contains("local-1"),
        "{all}"
    );

    // The task stayed open through the failures; a correct answer completes it once.
    let open = sim.open_tasks();
    assert!(
        open.iter()
            .any(|t| part(t, "taskId")["valueId"] == task_id.as_str())
    );
    assert_eq!(
        client
            .provide(&task_id, patient_with(&requested))
            .await
            .status,
        200
    );
    assert_outcome(
        &client.provide(&task_id, patient_with(&requested)).await,
        404,
    );
    let stats = sim.stats();
    assert_eq!((stats.provide_ok, stats.duplicate_provides), (1, 1));
    assert_eq!(
        stats.provide_violations_total, 6,
        "a duplicate is not a violation"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn the_ig_example_patient_answers_the_ig_example_task() {
    let (sim, client) = started(cfg()).await;
    let example_task = &named(&fixture("requestTasks-response.json"), "send_idat")[0];
    let elements = requested_elements(example_task);
    let task_id = sim.add_send_idat(
        IdatSubject::Pseudonym("mii_1244Q2".into()),
        elements,
        sim.now() + TimeDelta::hours(1),
    );
    let mut request = fixture("providePatientData-request.json");
    request["parameter"][0]["valueId"] = json!(task_id);
    request["parameter"][1]["valueString"] = json!(TARGET);
    let reply = client.post("$providePatientData", &request).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    // A task raised outside a clearing finishes nothing else.
    assert!(sim.open_tasks().is_empty());
    assert_eq!(sim.stats().clearings_finished, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn expiry_on_the_sim_clock_aborts_the_clearing_and_a_resend_restarts_it() {
    let (sim, client) = started(SimConfig {
        task_ttl: Duration::from_secs(3600),
        ..clearing_cfg(0.0)
    })
    .await;
    let f = filter(11);
    client.register(&[&f]).await;
    let task = &client.first_send_idat().await;
    let task_id = task_id(task).to_owned();
    let elements = requested_elements(task);

    sim.advance(Duration::from_secs(59 * 60));
    assert_eq!(
        named(&client.tasks().await.body, "send_idat").len(),
        1,
        "not yet expired"
    );
    sim.advance(Duration::from_secs(2 * 60));
    assert_eq!(
        client.tasks().await.body,
        json!({ "resourceType": "Parameters" })
    );
    let stats = sim.stats();
    assert_eq!(stats.tasks_expired_by_type.get("send_idat"), Some(&1));
    assert_eq!(stats.clearings_aborted, 1);

    let late = client.provide(&task_id, patient_with(&elements)).await;
    assert_outcome(&late, 404);
    let stats = sim.stats();
    assert_eq!(stats.provides_after_expiry, 1);
    assert_eq!(
        (stats.duplicate_provides, stats.provide_violations_total),
        (0, 0)
    );

    // Registering again starts a new clearing with a new task.
    client.register(&[&f]).await;
    let renewed = &client.first_send_idat().await;
    assert_ne!(part(renewed, "taskId")["valueId"], task_id.as_str());
    let stats = sim.stats();
    assert_eq!(
        (stats.clearings_started, stats.duplicate_registrations),
        (2, 1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expired_repeat_request_aborts_its_clearing() {
    let (sim, client) = started(SimConfig {
        task_ttl: Duration::from_secs(60),
        ..clearing_cfg(1.0)
    })
    .await;
    client.register(&[&filter(5)]).await;
    assert_eq!(named(&client.tasks().await.body, "repeat_request").len(), 1);
    sim.advance(Duration::from_secs(120));
    assert!(sim.open_tasks().is_empty());
    let stats = sim.stats();
    assert_eq!(stats.tasks_expired_by_type.get("repeat_request"), Some(&1));
    assert_eq!(stats.clearings_aborted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn expire_all_now_keeps_pseudonym_deliveries() {
    let (sim, client) = started(clearing_cfg(0.0)).await;
    let (done, pending) = (filter(1), filter(2));
    client.register(&[&done, &pending]).await;
    let first = &client.first_send_idat().await;
    let id = task_id(first).to_owned();
    assert_eq!(
        client
            .provide(&id, patient_with(&requested_elements(first)))
            .await
            .status,
        200
    );
    sim.expire_all_now();
    let open = sim.open_tasks();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0]["name"], "dic_psn_available");
    assert_eq!(sim.stats().tasks_expired_by_type.get("send_idat"), Some(&1));
    sim.shutdown().await;
}

#[tokio::test]
async fn dic_listings_sets_how_often_a_pseudonym_is_listed() {
    let (sim, client) = started(SimConfig {
        dic_listings: 3,
        ..clearing_cfg(0.0)
    })
    .await;
    client.register(&[&filter(1)]).await;
    let task = &client.first_send_idat().await;
    let id = task_id(task);
    client
        .provide(id, patient_with(&requested_elements(task)))
        .await;
    // Looking through the handle does not count as a listing.
    assert_eq!(sim.open_tasks().len(), 1);
    assert_eq!(sim.open_tasks().len(), 1);
    for listing in 0..3 {
        let tasks = client.tasks().await.body;
        assert_eq!(
            named(&tasks, "dic_psn_available").len(),
            1,
            "listing {listing}"
        );
    }
    assert_eq!(
        client.tasks().await.body,
        json!({ "resourceType": "Parameters" })
    );
    assert_eq!(
        sim.stats().tasks_completed_by_type.get("dic_psn_available"),
        Some(&1)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_tasks_are_listed_until_cleared() {
    let (sim, client) = started(clearing_cfg(0.0)).await;
    let unknown = json!({ "name": "notify_study_end", "part": [ { "name": "when", "valueDate": "2030-01-01" } ] });
    let malformed = json!({ "name": "send_idat", "part": "not an array" });
    sim.inject_task(unknown.clone());
    sim.inject_task(malformed.clone());
    client.register(&[&filter(1)]).await;
    for _ in 0..2 {
        let all = params(&client.tasks().await.body);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0]["name"], "send_idat");
        assert_eq!((&all[1], &all[2]), (&unknown, &malformed));
    }
    sim.clear_injected();
    assert_eq!(params(&client.tasks().await.body).len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn add_send_idat_for_raises_a_standalone_task() {
    let (sim, client) = started(cfg()).await;
    let f = filter(9);
    let expires = sim.now() + TimeDelta::minutes(10);
    let id = sim.add_send_idat_for(&f, &["gender", "birthdate"], expires);
    let task = &client.first_send_idat().await;
    assert_eq!(part(task, "taskId")["valueId"], id.as_str());
    assert_eq!(part(task, "bloomfilter")["valueBase64Binary"], f.as_str());
    assert_eq!(requested_elements(task), codes(&["gender", "birthdate"]));
    let listed = DateTime::parse_from_rfc3339(
        part(task, "expires")["valueInstant"]
            .as_str()
            .expect("expires"),
    )
    .expect("instant");
    assert!((listed.to_utc() - expires).abs() < TimeDelta::milliseconds(1));
    let reply = client
        .provide(&id, patient_with(&codes(&["gender", "birthdate"])))
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        sim.open_tasks().is_empty(),
        "no dic_psn_available outside a clearing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_operation_outcomes() {
    let (sim, client) = started(SimConfig {
        max_body: 4096,
        ..cfg()
    })
    .await;
    let send = |op: &'static str, body: Vec<u8>| {
        let request = client.request(op, body);
        async move { read(request.send().await.expect("sent")).await }
    };

    let mut other_study = tasks_request();
    other_study["parameter"][0]["valueString"] = json!("other");
    let reply = client.post("$requestTasks", &other_study).await;
    assert_outcome(&reply, 400);
    assert!(reply.body.to_string().contains("unknown study `other`"));

    let mut other_target = registration(&[&filter(1)]);
    other_target["parameter"][2]["valueString"] = json!("dic_other");
    // The IG's "unknown content" of this operation: 404 by default (`unknown_study_status`).
    assert_outcome(
        &client
            .post("$requestPsnFromBfWorkflow", &other_target)
            .await,
        404,
    );

    assert_outcome(&send("$requestTasks", b"{not json".to_vec()).await, 400);
    assert_outcome(
        &client
            .post("$requestTasks", &json!({ "resourceType": "Bundle" }))
            .await,
        400,
    );
    assert_outcome(&client.register(&[]).await, 400);
    let mut as_identifier = tasks_request();
    as_identifier["parameter"][0] =
        json!({ "name": "study", "valueIdentifier": { "value": STUDY } });
    let reply = client.post("$requestTasks", &as_identifier).await;
    assert_outcome(&reply, 400);
    assert!(reply.body.to_string().contains("valueString"));
    let missing_patient = json!({ "resourceType": "Parameters", "parameter": [
        { "name": "taskId", "valueId": "x" }, { "name": "target", "valueString": TARGET } ] });
    assert_outcome(
        &client.post("$providePatientData", &missing_patient).await,
        400,
    );

    let xml = client
        .http
        .post(client.url("$requestTasks"))
        .header("content-type", "application/fhir+xml")
        .body("<Parameters/>")
        .send()
        .await
        .expect("sent");
    assert_outcome(&read(xml).await, 415);

    let get = client
        .http
        .get(client.url("$requestTasks"))
        .send()
        .await
        .expect("sent");
    let reply = read(get).await;
    assert_outcome(&reply, 405);
    assert_eq!(
        reply.headers.get("allow").map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );

    assert_outcome(&send("$pseudonymizePatient", b"{}".to_vec()).await, 404);
    let huge = registration(&[&STANDARD.encode(vec![0u8; 8192])]);
    assert_outcome(
        &send(
            "$requestPsnFromBfWorkflow",
            serde_json::to_vec(&huge).expect("json"),
        )
        .await,
        413,
    );

    let stats = sim.stats();
    assert_eq!(stats.registrations, 0);
    // Seven refused requests: six 400s, and the unknown target of a registration 404.
    assert_eq!(stats.status_counts.get(&400), Some(&6));
    sim.shutdown().await;
}

#[tokio::test]
async fn header_api_key_is_required_when_configured() {
    let (sim, mut client) = started(SimConfig {
        auth: SimAuth::api_key_header("k-123"),
        ..cfg()
    })
    .await;
    let reply = client.tasks().await;
    assert_outcome(&reply, 401);
    assert!(reply.headers.get("www-authenticate").is_none());
    client.headers = vec![("apiKey".into(), "wrong".into())];
    assert_outcome(&client.tasks().await, 401);
    // The old body parameter is not accepted in header mode.
    let mut with_body_key = tasks_request();
    with_body_key["parameter"]
        .as_array_mut()
        .expect("array")
        .push(json!({ "name": "apikey", "valueString": "k-123" }));
    client.headers.clear();
    assert_outcome(&client.post("$requestTasks", &with_body_key).await, 401);
    client.headers = vec![("apiKey".into(), "k-123".into())];
    assert_eq!(client.tasks().await.status, 200);
    assert_eq!(sim.stats().auth_failures, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn body_parameter_and_basic_auth_work_alone_and_combined() {
    let basic = SimAuth::Basic {
        user: "site".into(),
        password: "pw".into(),
    };
    let body_key = SimAuth::BodyParam("legacy-key".into());
    let with_key = |key: &str| {
        let mut request = tasks_request();
        request["parameter"]
            .as_array_mut()
            .expect("array")
            .push(json!({ "name": "apikey", "valueString": key }));
        request
    };
    let basic_header = (
        "authorization".to_owned(),
        format!("Basic {}", STANDARD.encode("site:pw")),
    );

    let (sim, client) = started(SimConfig {
        auth: body_key.clone(),
        ..cfg()
    })
    .await;
    assert_eq!(
        client
            .post("$requestTasks", &with_key("legacy-key"))
            .await
            .status,
        200
    );
    assert_outcome(&client.post("$requestTasks", &with_key("other")).await, 401);
    assert_outcome(&client.tasks().await, 401);
    sim.shutdown().await;

    let (sim, mut client) = started(SimConfig {
        auth: basic.clone(),
        ..cfg()
    })
    .await;
    let reply = client.tasks().await;
    assert_outcome(&reply, 401);
    assert_eq!(
        reply.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Basic realm=\"ttp-sim\""[..])
    );
    client.headers = vec![basic_header.clone()];
    assert_eq!(client.tasks().await.status, 200);
    sim.shutdown().await;

    let (sim, mut client) = started(SimConfig {
        auth: SimAuth::AnyOf(vec![body_key, basic]),
        ..cfg()
    })
    .await;
    assert_eq!(
        client
            .post("$requestTasks", &with_key("legacy-key"))
            .await
            .status,
        200
    );
    assert_outcome(&client.tasks().await, 401);
    client.headers = vec![basic_header];
    assert_eq!(client.tasks().await.status, 200);
    assert_eq!(sim.stats().auth_failures, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_tasks_in_one_response() {
    let (sim, client) = started(clearing_cfg(0.0)).await;
    let filters: Vec<String> = (0..10_000).map(filter).collect();
    for batch in filters.chunks(100) {
        let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
        let reply = client.register(&refs).await;
        assert_eq!(reply.body, json!({ "resourceType": "Parameters" }));
    }
    let tasks = client.tasks().await.body;
    let list = params(&tasks);
    assert_eq!(list.len(), 10_000);
    let ids: HashSet<&str> = list.iter().map(task_id).collect();
    assert_eq!(ids.len(), 10_000);
    assert_eq!(
        part(&list[9_999], "bloomfilter")["valueBase64Binary"],
        filters[9_999].as_str()
    );
    let stats = sim.stats();
    assert_eq!(stats.tasks_raised_by_type.get("send_idat"), Some(&10_000));
    assert_eq!(stats.registrations, 10_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_are_served_and_counted() {
    let sim = ttp_sim::start(no_clearing_cfg()).await.expect("start");
    let client = std::sync::Arc::new(Client::new(&sim));
    let mut handles = Vec::new();
    for n in 0..32u32 {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let f = filter(n);
            let reply = client.register(&[&f]).await;
            (f, reply.status)
        }));
    }
    for handle in handles {
        let (f, status) = handle.await.expect("task");
        assert_eq!(status, 200);
        assert!(sim.pseudonym_of(&f).is_some());
    }
    let stats = sim.stats();
    assert_eq!(stats.registrations, 32);
    assert!(stats.max_concurrent_requests >= 1);
    assert!(stats.max_requests_in_any_1s_window >= 1);
    assert_eq!(stats.status_counts.get(&200), Some(&32));
    sim.shutdown().await;
}

#[tokio::test]
async fn by_default_a_requested_element_the_site_lacks_is_no_error() {
    let (sim, client) = started(SimConfig {
        elements: codes(&["given", "degree"]),
        ..clearing_cfg(0.0)
    })
    .await;
    let f = filter(1);
    client.register(&[&f]).await;
    let tasks = client.tasks().await.body;
    let task = named(&tasks, "send_idat")
        .into_iter()
        .find(|t| part(t, "bloomfilter")["valueBase64Binary"] == f.as_str())
        .expect("task for the filter");
    let task_id = task_id(&task).to_owned();
    // "Soweit bekannt": an empty Patient is a complete answer from a site that holds none.
    let reply = client.provide(&task_id, patient_with(&[])).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(sim.stats().provide_violations_total, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn whole_request_failures_come_in_every_shape_and_register_nothing() {
    use ttp_sim::PsnFailure;
    let (sim, client) = started(no_clearing_cfg()).await;
    let f1 = filter(1);

    sim.set_psn_failure(Some(PsnFailure::All {
        code: "processing".into(),
        display: "study not configured".into(),
    }))
    .expect("valid");
    let reply = client.register(&[&f1]).await;
    assert_eq!(reply.status, 200);
    let errors = named(&reply.body, "error");
    assert_eq!(errors.len(), 1, "{}", reply.body);
    let names: Vec<&str> = errors[0]["part"]
        .as_array()
        .expect("parts")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["all", "error-code"]);
    assert_eq!(
        part(&errors[0], "error-code")["valueCoding"]["display"],
        "study not configured"
    );

    sim.set_psn_failure(Some(PsnFailure::ErrorWithoutFilter {
        code: "exception".into(),
    }))
    .expect("valid");
    let reply = client.register(&[&f1]).await;
    let errors = named(&reply.body, "error");
    assert_eq!(errors[0]["part"].as_array().map(Vec::len), Some(1));

    sim.set_psn_failure(Some(PsnFailure::ForeignFilters))
        .expect("valid");
    let reply = client.register(&[&f1]).await;
    let entries = named(&reply.body, "pseudonym-bf");
    assert_eq!(entries.len(), 1);
    assert_ne!(
        part(&entries[0], "bloomfilter")["valueBase64Binary"],
        f1.as_str()
    );

    sim.set_psn_failure(Some(PsnFailure::Status(422)))
        .expect("valid");
    assert_outcome(&client.register(&[&f1]).await, 422);
    assert!(sim.set_psn_failure(Some(PsnFailure::Status(200))).is_err());
    assert_eq!(sim.pseudonym_of(&f1), None, "nothing was registered");

    sim.set_psn_failure(None).expect("valid");
    let reply = client.register(&[&f1]).await;
    assert_eq!(named(&reply.body, "pseudonym-bf").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lost_answer_still_has_its_effect() {
    let (sim, client) = started(no_clearing_cfg()).await;
    let f1 = filter(1);
    sim.lose_answers(ttp_sim::SimOperation::RequestPsn, 1);
    let lost = client
        .request(
            "$requestPsnFromBfWorkflow",
            serde_json::to_vec(&registration(&[&f1])).expect("json"),
        )
        .send()
        .await;
    assert!(lost.is_err(), "the connection closes without an answer");
    assert!(sim.pseudonym_of(&f1).is_some(), "the effect happened");
    // Only as many answers as asked for are lost.
    let reply = client.register(&[&f1]).await;
    assert_eq!(named(&reply.body, "pseudonym-bf").len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_repeat_can_be_answered_with_the_pseudonym() {
    let (sim, client) = started(SimConfig {
        repeat_answers_pseudonym: true,
        ..clearing_cfg(1.0)
    })
    .await;
    let f1 = filter(1);
    assert!(named(&client.register(&[&f1]).await.body, "pseudonym-bf").is_empty());
    assert_eq!(named(&client.tasks().await.body, "repeat_request").len(), 1);
    let reply = client.register(&[&f1]).await;
    assert_eq!(
        named(&reply.body, "pseudonym-bf").len(),
        1,
        "{}",
        reply.body
    );
    assert!(named(&client.tasks().await.body, "send_idat").is_empty());
    sim.shutdown().await;
}
