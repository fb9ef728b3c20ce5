//! The dispatcher's state machine, without any I/O.
//!
//! [`Dispatcher`] owns every filter the site registered, every open task, and the counters.
//! Its methods take the current time as an argument and return the response body and status,
//! so the whole protocol can be tested without a socket and the HTTP layer stays thin.
//!
//! A filter moves through these states:
//!
//! ```text
//!                     no clearing
//!   (new filter) ─────────────────────────────────────────▶ Pseudonymised
//!        │ clearing                                               ▲
//!        ├─ repeat_first ─▶ AwaitingRepeat ─ resend ─┐            │ provide ok
//!        │                        │                  ▼            │ (raises dic_psn_available)
//!        └─ otherwise ────────────┼────────────▶ AwaitingIdat ────┘
//!                                 │ task expires      │ task expires
//!                                 ▼                   ▼
//!                              Aborted ◀──────────────┘
//!                                 │ resend
//!                                 └──────────────▶ AwaitingIdat
//! ```
//!
//! Tasks are kept in creation order (a `BTreeMap` keyed by a sequence number), which is the
//! order `$requestTasks` lists them in; a second index ordered by expiry makes dropping expired
//! tasks cost O(log n) per task instead of a scan per request.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, FixedOffset, Offset as _, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::config::{PsnFailure, SimConfig};
use crate::fhir;
use crate::hash;
use crate::patient;
use crate::stats::{MAX_VIOLATIONS_KEPT, SimStats, bump};

pub(crate) const DIC_PSN_AVAILABLE: &str = "dic_psn_available";
pub(crate) const SEND_IDAT: &str = "send_idat";
pub(crate) const REPEAT_REQUEST: &str = "repeat_request";

/// How a `send_idat` task names the record whose IDAT it wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdatSubject {
    /// The base64 Bloom filter the site registered.
    BloomFilter(String),
    /// A pseudonym (for clearings: a provisional one the site cannot know).
    Pseudonym(String),
    /// Both parts, which the IG does not forbid (for clearings: the filter and a provisional
    /// pseudonym the site cannot know).
    Both {
        bloom_filter: String,
        pseudonym: String,
    },
}

/// An HTTP status and a FHIR JSON body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }

    pub(crate) fn error(status: u16, issue_type: &str, diagnostics: Vec<String>) -> Self {
        Self {
            status,
            body: fhir::outcome(issue_type, &diagnostics),
        }
    }
}

/// The parts of [`SimConfig`] the state machine uses, checked and converted once.
struct Rules {
    study: String,
    target: String,
    seed: u64,
    clearing: f64,
    repeat_first: f64,
    idat_by_pseudonym: f64,
    idat_by_both: f64,
    elements: Vec<String>,
    ttl: TimeDelta,
    dic_listings: u32,
    system: String,
    offset: FixedOffset,
    allow_missing: bool,
    unknown_study_status: u16,
    repeat_answers_pseudonym: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FilterState {
    Pseudonymised(String),
    /// A clearing waits for the site to resend the filter; the `repeat_request` task's seq.
    AwaitingRepeat(u64),
    /// A clearing waits for IDAT; the `send_idat` task's seq.
    AwaitingIdat(u64),
    /// The clearing's task expired. A resend starts a new clearing.
    Aborted,
}

#[derive(Debug)]
struct Task {
    expires: Option<DateTime<Utc>>,
    kind: TaskKind,
}

#[derive(Debug)]
enum TaskKind {
    DicPsnAvailable {
        filter: String,
        pseudonym: String,
        listings_left: u32,
    },
    SendIdat {
        task_id: String,
        subject: IdatSubject,
        elements: Vec<String>,
        /// The filter whose clearing this task belongs to; `None` for tasks a test added.
        clearing_of: Option<String>,
    },
    RepeatRequest {
        filter: String,
    },
}

impl TaskKind {
    fn type_name(&self) -> &'static str {
        match self {
            Self::DicPsnAvailable { .. } => DIC_PSN_AVAILABLE,
            Self::SendIdat { .. } => SEND_IDAT,
            Self::RepeatRequest { .. } => REPEAT_REQUEST,
        }
    }
}

/// Why a `send_idat` task id is no longer open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    Completed,
    Expired,
}

pub(crate) struct Dispatcher {
    rules: Rules,
    /// Length in bytes of the first valid filter; every later filter must match it.
    filter_len: Option<usize>,
    /// Keyed by the base64 text. The strict decoder accepts only canonical base64, so equal
    /// bytes always have equal text.
    filters: HashMap<String, FilterState>,
    /// Every pseudonym handed out (final or provisional), to keep them unique.
    pseudonyms: HashSet<String>,
    tasks: BTreeMap<u64, Task>,
    by_expiry: BTreeSet<(DateTime<Utc>, u64)>,
    open_send_idat: HashMap<String, u64>,
    closed_send_idat: HashMap<String, Closed>,
    next_seq: u64,
    injected: Vec<Value>,
    patients: Vec<(String, Value)>,
    stats: SimStats,
    psn_failure: Option<PsnFailure>,
}

impl Dispatcher {
    /// `cfg` must have passed [`SimConfig::validate`]; values it would reject are clamped.
    pub(crate) fn new(cfg: &SimConfig) -> Self {
        let rules = Rules {
            study: cfg.study.clone(),
            target: cfg.target.clone(),
            seed: cfg.seed,
            clearing: cfg.clearing,
            repeat_first: cfg.repeat_first,
            idat_by_pseudonym: cfg.idat_by_pseudonym,
            idat_by_both: cfg.idat_by_both,
            elements: cfg.elements.clone(),
            ttl: TimeDelta::from_std(cfg.task_ttl).unwrap_or(TimeDelta::MAX),
            dic_listings: cfg.dic_listings.max(1),
            system: cfg.identifier_system.clone(),
            offset: FixedOffset::east_opt(cfg.utc_offset_secs).unwrap_or(Utc.fix()),
            allow_missing: cfg.allow_missing_elements,
            unknown_study_status: cfg.unknown_study_status,
            repeat_answers_pseudonym: cfg.repeat_answers_pseudonym,
        };
        Self {
            rules,
            filter_len: None,
            filters: HashMap::new(),
            pseudonyms: HashSet::new(),
            tasks: BTreeMap::new(),
            by_expiry: BTreeSet::new(),
            open_send_idat: HashMap::new(),
            closed_send_idat: HashMap::new(),
            next_seq: 0,
            injected: Vec::new(),
            patients: Vec::new(),
            stats: SimStats::default(),
            psn_failure: cfg.psn_failure.clone(),
        }
    }

    fn check_study_and_target(&self, study: &str, target: &str) -> Result<(), Reply> {
        if study != self.rules.study {
            return Err(Reply::error(
                400,
                "invalid",
                vec![format!(
                    "unknown study `{study}`: this dispatcher serves study `{}`",
                    self.rules.study
                )],
            ));
        }
        if target != self.rules.target {
            return Err(Reply::error(
                400,
                "invalid",
                vec![format!(
                    "unknown target `{target}`: this dispatcher serves target `{}`",
                    self.rules.target
                )],
            ));
        }
        Ok(())
    }

    // ----- $requestPsnFromBfWorkflow -------------------------------------------------------

    pub(crate) fn request_psn(
        &mut self,
        now: DateTime<Utc>,
        study: &str,
        target: &str,
        filters: &[&str],
    ) -> Reply {
        if let Some(failure) = &self.psn_failure {
            return self.whole_request_failure(failure, filters);
        }
        if let Err(mut reply) = self.check_study_and_target(study, target) {
            // The IG answers unknown content of this operation with 404 (or 400/422).
            reply.status = self.rules.unknown_study_status;
            return reply;
        }
        if filters.is_empty() {
            return Reply::error(
                400,
                "required",
                vec!["parameter `bloomfilter` is missing (1..* expected)".into()],
            );
        }
        self.sweep(now);
        let mut entries = Vec::new();
        for filter in filters {
            if !self.is_acceptable_filter(filter) {
                entries.push(self.error_entry(filter, "invalid"));
                continue;
            }
            if let Some(pseudonym) = self.register(now, filter) {
                entries.push(fhir::multi(
                    "pseudonym-bf",
                    vec![
                        fhir::base64_part("bloomfilter", filter),
                        fhir::identifier_part("target", &self.rules.system, &self.rules.target),
                        fhir::identifier_part("pseudonym", &self.rules.system, &pseudonym),
                    ],
                ));
            }
        }
        Reply::ok(fhir::parameters(entries))
    }

    /// Makes every later `$requestPsnFromBfWorkflow` fail as a whole (`None`: answer normally).
    pub(crate) fn set_psn_failure(&mut self, failure: Option<PsnFailure>) {
        self.psn_failure = failure;
    }

    /// The answer of a request that failed as a whole: nothing is registered.
    fn whole_request_failure(&self, failure: &PsnFailure, filters: &[&str]) -> Reply {
        match failure {
            PsnFailure::All { code, display } => Reply::ok(fhir::parameters(vec![fhir::multi(
                "error",
                vec![
                    json!({ "name": "all", "valueBoolean": true }),
                    json!({ "name": "error-code", "valueCoding": {
                        "system": fhir::ISSUE_TYPE_SYSTEM, "code": code, "display": display
                    } }),
                ],
            )])),
            PsnFailure::ErrorWithoutFilter { code } => {
                Reply::ok(fhir::parameters(vec![fhir::multi(
                    "error",
                    vec![fhir::issue_type_part(code)],
                )]))
            }
            PsnFailure::Status(status) => Reply::error(
                *status,
                "processing",
                vec!["simulated failure of the whole request".into()],
            ),
            PsnFailure::ForeignFilters => {
                // Filters of the same length as those sent, but none of them: every byte
                // inverted.
                let entries = filters
                    .iter()
                    .filter_map(|f| STANDARD.decode(f).ok())
                    .map(|bytes| {
                        let other: Vec<u8> = bytes.iter().map(|b| !b).collect();
                        fhir::multi(
                            "pseudonym-bf",
                            vec![
                                fhir::base64_part("bloomfilter", &STANDARD.encode(other)),
                                fhir::identifier_part(
                                    "target",
                                    &self.rules.system,
                                    &self.rules.target,
                                ),
                                fhir::identifier_part("pseudonym", &self.rules.system, "foreign"),
                            ],
                        )
                    })
                    .collect();
                Reply::ok(fhir::parameters(entries))
            }
        }
    }

    /// Valid base64, not empty, and as long as the first filter this dispatcher saw.
    fn is_acceptable_filter(&mut self, filter: &str) -> bool {
        let Ok(bytes) = STANDARD.decode(filter) else {
            return false;
        };
        if bytes.is_empty() {
            return false;
        }
        match self.filter_len {
            None => {
                self.filter_len = Some(bytes.len());
                true
            }
            Some(len) => len == bytes.len(),
        }
    }

    fn error_entry(&self, filter: &str, code: &str) -> Value {
        fhir::multi(
            "error",
            vec![
                fhir::base64_part("bloomfilter", filter),
                fhir::identifier_part("target", &self.rules.system, &self.rules.target),
                fhir::issue_type_part(code),
            ],
        )
    }

    /// One filter of a registration; returns the pseudonym if it can be answered directly.
    fn register(&mut self, now: DateTime<Utc>, filter: &str) -> Option<String> {
        match self.filters.get(filter).cloned() {
            None => {
                self.stats.registrations += 1;
                let seed = self.rules.seed;
                if hash::chance(seed, "clearing", filter.as_bytes(), self.rules.clearing) {
                    let state = if hash::chance(
                        seed,
                        "repeat-first",
                        filter.as_bytes(),
                        self.rules.repeat_first,
                    ) {
                        FilterState::AwaitingRepeat(self.raise_repeat_request(now, filter))
                    } else {
                        FilterState::AwaitingIdat(self.raise_clearing_send_idat(now, filter))
                    };
                    self.stats.clearings_started += 1;
                    self.filters.insert(filter.to_owned(), state);
                    None
                } else {
                    let pseudonym = self.allocate_pseudonym("pseudonym", filter);
                    self.filters.insert(
                        filter.to_owned(),
                        FilterState::Pseudonymised(pseudonym.clone()),
                    );
                    Some(pseudonym)
                }
            }
            Some(FilterState::Pseudonymised(pseudonym)) => {
                self.stats.duplicate_registrations += 1;
                Some(pseudonym)
            }
            Some(FilterState::AwaitingRepeat(seq)) if self.rules.repeat_answers_pseudonym => {
                // The resend the repeat_request asked for ends the clearing: answered directly.
                self.close_task(seq, false);
                let pseudonym = self.allocate_pseudonym("pseudonym", filter);
                self.filters.insert(
                    filter.to_owned(),
                    FilterState::Pseudonymised(pseudonym.clone()),
                );
                Some(pseudonym)
            }
            Some(FilterState::AwaitingRepeat(seq)) => {
                // The resend the repeat_request asked for: the clearing moves on.
                self.close_task(seq, false);
                let seq = self.raise_clearing_send_idat(now, filter);
                self.filters
                    .insert(filter.to_owned(), FilterState::AwaitingIdat(seq));
                None
            }
            Some(FilterState::AwaitingIdat(_)) => {
                self.stats.duplicate_registrations += 1;
                None
            }
            Some(FilterState::Aborted) => {
                // A new clearing; the site has just resent, so no repeat_request this time.
                self.stats.duplicate_registrations += 1;
                self.stats.clearings_started += 1;
                let seq = self.raise_clearing_send_idat(now, filter);
                self.filters
                    .insert(filter.to_owned(), FilterState::AwaitingIdat(seq));
                None
            }
        }
    }

    /// A pseudonym derived from (seed, domain, filter), unique among all handed out so far.
    fn allocate_pseudonym(&mut self, domain: &str, filter: &str) -> String {
        let mut input = filter.as_bytes().to_vec();
        let base_len = input.len();
        // 30 bits of pseudonym space: at 100,000 filters a few collisions are expected, and
        // each is resolved by deriving again with a counter.
        let mut attempt: u64 = 0;
        loop {
            input.truncate(base_len);
            input.extend_from_slice(&attempt.to_le_bytes());
            let candidate = hash::pseudonym(
                &self.rules.study,
                hash::hash(self.rules.seed, domain, &input),
            );
            if self.pseudonyms.insert(candidate.clone()) {
                return candidate;
            }
            attempt = attempt.wrapping_add(1);
        }
    }

    fn element_subset(&self, filter: &str) -> Vec<String> {
        let elements = &self.rules.elements;
        let h = hash::hash(self.rules.seed, "elements", filter.as_bytes());
        let mut chosen: Vec<String> = elements
            .iter()
            .enumerate()
            .filter(|(index, _)| (h >> (index % 64)) & 1 == 1)
            .map(|(_, code)| code.clone())
            .collect();
        if chosen.is_empty()
            && let Some(code) = elements.get((h >> 32) as usize % elements.len().max(1))
        {
            chosen.push(code.clone());
        }
        chosen
    }

    // ----- raising and closing tasks -------------------------------------------------------

    fn add_task(&mut self, expires: Option<DateTime<Utc>>, kind: TaskKind) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        bump(&mut self.stats.tasks_raised_by_type, kind.type_name());
        if let Some(expires) = expires {
            self.by_expiry.insert((expires, seq));
        }
        if let TaskKind::SendIdat { task_id, .. } = &kind {
            self.open_send_idat.insert(task_id.clone(), seq);
        }
        self.tasks.insert(seq, Task { expires, kind });
        seq
    }

    fn expiry_from(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_add_signed(self.rules.ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn raise_repeat_request(&mut self, now: DateTime<Utc>, filter: &str) -> u64 {
        let expires = self.expiry_from(now);
        self.add_task(
            Some(expires),
            TaskKind::RepeatRequest {
                filter: filter.to_owned(),
            },
        )
    }

    fn raise_clearing_send_idat(&mut self, now: DateTime<Utc>, filter: &str) -> u64 {
        let subject = if hash::chance(
            self.rules.seed,
            "idat-by-pseudonym",
            filter.as_bytes(),
            self.rules.idat_by_pseudonym,
        ) {
            IdatSubject::Pseudonym(self.allocate_pseudonym("provisional-pseudonym", filter))
        } else if hash::chance(
            self.rules.seed,
            "idat-by-both",
            filter.as_bytes(),
            self.rules.idat_by_both,
        ) {
            IdatSubject::Both {
                bloom_filter: filter.to_owned(),
                pseudonym: self.allocate_pseudonym("provisional-pseudonym", filter),
            }
        } else {
            IdatSubject::BloomFilter(filter.to_owned())
        };
        let elements = self.element_subset(filter);
        let expires = self.expiry_from(now);
        self.raise_send_idat(subject, elements, expires, Some(filter.to_owned()))
            .0
    }

    fn raise_send_idat(
        &mut self,
        subject: IdatSubject,
        elements: Vec<String>,
        expires: DateTime<Utc>,
        clearing_of: Option<String>,
    ) -> (u64, String) {
        let seq_bytes = self.next_seq.to_le_bytes();
        let task_id = hash::uuid_like(
            hash::hash(self.rules.seed, "task-id-high", &seq_bytes),
            hash::hash(self.rules.seed, "task-id-low", &seq_bytes),
        );
        let seq = self.add_task(
            Some(expires),
            TaskKind::SendIdat {
                task_id: task_id.clone(),
                subject,
                elements,
                clearing_of,
            },
        );
        (seq, task_id)
    }

    /// Removes a task, counting it as completed or expired. An expired task aborts the
    /// clearing it belongs to.
    fn close_task(&mut self, seq: u64, expired: bool) {
        let Some(task) = self.tasks.remove(&seq) else {
            return;
        };
        if let Some(expires) = task.expires {
            self.by_expiry.remove(&(expires, seq));
        }
        let type_name = task.kind.type_name();
        if expired {
            bump(&mut self.stats.tasks_expired_by_type, type_name);
        } else {
            bump(&mut self.stats.tasks_completed_by_type, type_name);
        }
        let clearing_filter = match task.kind {
            TaskKind::SendIdat {
                task_id,
                clearing_of,
                ..
            } => {
                self.open_send_idat.remove(&task_id);
                let closed = if expired {
                    Closed::Expired
                } else {
                    Closed::Completed
                };
                self.closed_send_idat.insert(task_id, closed);
                clearing_of
            }
            TaskKind::RepeatRequest { filter } => Some(filter),
            TaskKind::DicPsnAvailable { .. } => None,
        };
        if expired
            && let Some(filter) = clearing_filter
            && let Some(state) = self.filters.get_mut(&filter)
            && matches!(state, FilterState::AwaitingRepeat(s) | FilterState::AwaitingIdat(s) if *s == seq)
        {
            *state = FilterState::Aborted;
            self.stats.clearings_aborted += 1;
        }
    }

    /// Drops every task whose `expires` is not after `until` (`None`: every expiring task).
    fn expire_until(&mut self, until: Option<DateTime<Utc>>) {
        while let Some(&(expires, seq)) = self.by_expiry.first() {
            if until.is_some_and(|until| expires > until) {
                break;
            }
            self.close_task(seq, true);
        }
    }

    pub(crate) fn sweep(&mut self, now: DateTime<Utc>) {
        self.expire_until(Some(now));
    }

    pub(crate) fn expire_all(&mut self) {
        self.expire_until(None);
    }

    // ----- $requestTasks --------------------------------------------------------------------

    pub(crate) fn request_tasks(&mut self, now: DateTime<Utc>, study: &str, target: &str) -> Reply {
        if let Err(reply) = self.check_study_and_target(study, target) {
            return reply;
        }
        self.sweep(now);
        let mut entries = Vec::with_capacity(self.tasks.len() + self.injected.len());
        let mut delivered = Vec::new();
        for (&seq, task) in &mut self.tasks {
            entries.push(task_json(&self.rules, task));
            if let TaskKind::DicPsnAvailable { listings_left, .. } = &mut task.kind {
                *listings_left = listings_left.saturating_sub(1);
                if *listings_left == 0 {
                    delivered.push(seq);
                }
            }
        }
        for seq in delivered {
            self.close_task(seq, false);
        }
        entries.extend(self.injected.iter().cloned());
        Reply::ok(fhir::parameters(entries))
    }

    /// The tasks a `$requestTasks` would list now, without counting it as a listing.
    pub(crate) fn open_tasks(&mut self, now: DateTime<Utc>) -> Vec<Value> {
        self.sweep(now);
        let mut entries: Vec<Value> = self
            .tasks
            .values()
            .map(|task| task_json(&self.rules, task))
            .collect();
        entries.extend(self.injected.iter().cloned());
        entries
    }

    // ----- $providePatientData --------------------------------------------------------------

    pub(crate) fn provide(
        &mut self,
        now: DateTime<Utc>,
        task_id: &str,
        target: &str,
        patient: &Value,
    ) -> Reply {
        self.sweep(now);
        if target != self.rules.target {
            self.violation(format!(
                "task {task_id}: $providePatientData names target `{target}`, expected `{}`",
                self.rules.target
            ));
            return Reply::error(
                400,
                "invalid",
                vec![format!(
                    "unknown target `{target}`: this dispatcher serves target `{}`",
                    self.rules.target
                )],
            );
        }
        let Some(&seq) = self.open_send_idat.get(task_id) else {
            let diagnostics = match self.closed_send_idat.get(task_id) {
                Some(Closed::Completed) => {
                    self.stats.duplicate_provides += 1;
                    format!("task {task_id} has already been completed")
                }
                Some(Closed::Expired) => {
                    self.stats.provides_after_expiry += 1;
                    format!("task {task_id} has expired")
                }
                None => {
                    self.violation(format!(
                        "task {task_id}: $providePatientData for a task id never issued"
                    ));
                    format!("no task with id {task_id}")
                }
            };
            return Reply::error(404, "not-found", vec![diagnostics]);
        };
        let Some(Task {
            kind:
                TaskKind::SendIdat {
                    elements,
                    clearing_of,
                    ..
                },
            ..
        }) = self.tasks.get(&seq)
        else {
            // The two indexes are updated together; a mismatch would be a simulator bug.
            return Reply::error(
                500,
                "exception",
                vec![format!(
                    "simulator state is inconsistent for task {task_id}"
                )],
            );
        };
        let clearing_of = clearing_of.clone();
        let problems = patient::check(patient, elements, self.rules.allow_missing);
        if !problems.is_empty() {
            for problem in &problems {
                self.violation(format!("task {task_id}: {problem}"));
            }
            return Reply::error(422, "invalid", problems);
        }

        self.close_task(seq, false);
        self.stats.provide_ok += 1;
        self.patients.push((task_id.to_owned(), patient.clone()));
        if let Some(filter) = clearing_of {
            self.finish_clearing(&filter);
        }
        Reply::ok(fhir::parameters(vec![json!({
            "name": "return",
            "resource": { "resourceType": "Bundle", "type": "collection" }
        })]))
    }

    fn finish_clearing(&mut self, filter: &str) {
        let pseudonym = self.allocate_pseudonym("pseudonym", filter);
        self.filters.insert(
            filter.to_owned(),
            FilterState::Pseudonymised(pseudonym.clone()),
        );
        self.stats.clearings_finished += 1;
        let listings = self.rules.dic_listings;
        self.add_task(
            None,
            TaskKind::DicPsnAvailable {
                filter: filter.to_owned(),
                pseudonym,
                listings_left: listings,
            },
        );
    }

    fn violation(&mut self, text: String) {
        self.stats.provide_violations_total += 1;
        if self.stats.provide_violations.len() < MAX_VIOLATIONS_KEPT {
            self.stats.provide_violations.push(text);
        }
    }

    // ----- test controls --------------------------------------------------------------------

    pub(crate) fn add_send_idat(
        &mut self,
        subject: IdatSubject,
        elements: Vec<String>,
        expires: DateTime<Utc>,
    ) -> String {
        self.raise_send_idat(subject, elements, expires, None).1
    }

    pub(crate) fn inject(&mut self, raw: Value) {
        self.injected.push(raw);
    }

    pub(crate) fn clear_injected(&mut self) {
        self.injected.clear();
    }

    pub(crate) fn received_patients(&self) -> Vec<(String, Value)> {
        self.patients.clone()
    }

    pub(crate) fn pseudonym_of(&self, filter: &str) -> Option<String> {
        match self.filters.get(filter) {
            Some(FilterState::Pseudonymised(pseudonym)) => Some(pseudonym.clone()),
            _ => None,
        }
    }

    pub(crate) fn stats(&self) -> SimStats {
        self.stats.clone()
    }
}

/// A task as one `parameter` of a `$requestTasks` response, shaped like the IG's example.
fn task_json(rules: &Rules, task: &Task) -> Value {
    let system = rules.system.as_str();
    let mut parts = Vec::new();
    if let Some(expires) = task.expires {
        parts.push(fhir::instant_part(
            "expires",
            &format_instant(expires, rules.offset),
        ));
    }
    match &task.kind {
        TaskKind::DicPsnAvailable {
            filter, pseudonym, ..
        } => {
            parts.push(fhir::base64_part("bloomfilter", filter));
            parts.push(fhir::identifier_part("target", system, &rules.target));
            parts.push(fhir::identifier_part("pseudonym", system, pseudonym));
        }
        TaskKind::SendIdat {
            task_id,
            subject,
            elements,
            ..
        } => {
            parts.push(fhir::id_part("taskId", task_id));
            match subject {
                IdatSubject::BloomFilter(filter) => {
                    parts.push(fhir::base64_part("bloomfilter", filter));
                }
                IdatSubject::Pseudonym(pseudonym) => {
                    parts.push(fhir::identifier_part("pseudonym", system, pseudonym));
                }
                IdatSubject::Both {
                    bloom_filter,
                    pseudonym,
                } => {
                    parts.push(fhir::identifier_part("pseudonym", system, pseudonym));
                    parts.push(fhir::base64_part("bloomfilter", bloom_filter));
                }
            }
            parts.extend(elements.iter().map(|code| fhir::element_part(code)));
        }
        TaskKind::RepeatRequest { filter } => {
            parts.push(fhir::identifier_part("study", system, &rules.study));
            parts.push(fhir::base64_part("bloomfilter", filter));
            parts.push(fhir::identifier_part("target", system, &rules.target));
        }
    }
    fhir::multi(task.kind.type_name(), parts)
}

/// A FHIR instant with milliseconds and an explicit offset, e.g.
/// `2021-05-28T13:00:00.000+02:00`.
pub(crate) fn format_instant(at: DateTime<Utc>, offset: FixedOffset) -> String {
    at.with_timezone(&offset)
        .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn dispatcher(clearing: f64) -> Dispatcher {
        Dispatcher::new(&SimConfig {
            clearing,
            ..SimConfig::default()
        })
    }

    #[test]
    fn pseudonyms_stay_unique_when_their_30_bit_codes_collide() {
        let mut dispatcher = dispatcher(0.0);
        let now = Utc::now();
        let filters: Vec<String> = (0u32..100_000)
            .map(|n| STANDARD.encode(n.to_le_bytes()))
            .collect();
        // The first derivation alone collides for some of these filters (birthday bound:
        // about five expected), so the retry path is exercised, not assumed.
        let first_choices: HashSet<String> = filters
            .iter()
            .map(|f| {
                let mut input = f.as_bytes().to_vec();
                input.extend_from_slice(&0u64.to_le_bytes());
                hash::pseudonym("mii", hash::hash(0, "pseudonym", &input))
            })
            .collect();
        assert!(
            first_choices.len() < filters.len(),
            "no collision to resolve"
        );

        let pseudonyms: HashSet<String> = filters
            .iter()
            .map(|f| dispatcher.register(now, f).expect("no clearing"))
            .collect();
        assert_eq!(pseudonyms.len(), filters.len());
    }

    #[test]
    fn instants_carry_milliseconds_and_the_configured_offset() {
        let at = DateTime::parse_from_rfc3339("2021-05-28T11:00:00Z")
            .expect("instant")
            .to_utc();
        let plus_two = FixedOffset::east_opt(7200).expect("offset");
        assert_eq!(
            format_instant(at, plus_two),
            "2021-05-28T13:00:00.000+02:00"
        );
        assert_eq!(
            format_instant(at, Utc.fix()),
            "2021-05-28T11:00:00.000+00:00"
        );
    }

    #[test]
    fn a_filter_of_another_length_is_rejected_after_the_first() {
        let mut dispatcher = dispatcher(0.0);
        assert!(dispatcher.is_acceptable_filter(&STANDARD.encode([1u8; 8])));
        assert!(!dispatcher.is_acceptable_filter(&STANDARD.encode([1u8; 9])));
        assert!(dispatcher.is_acceptable_filter(&STANDARD.encode([2u8; 8])));
        // Non-canonical padding bits and missing padding are not base64Binary.
        assert!(!dispatcher.is_acceptable_filter("AQEBAQEBAQF="));
        assert!(!dispatcher.is_acceptable_filter("AQEBAQEBAQE"));
        assert!(!dispatcher.is_acceptable_filter(""));
    }
}
