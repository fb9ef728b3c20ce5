//! `ttp-agent demo`: the whole job, end to end, against the built-in fTTP simulator.
//!
//! Starts the simulator on a free loopback port, writes a starter configuration (as `init`
//! does) pointing at it, submits a dozen synthetic records, then runs poll cycles until every
//! task is answered and every record has its pseudonym, printing what happened at each step.
//! Nothing leaves the machine; all data is invented.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;

use super::context::{self, Loaded};
use super::init::{self, TtpSettings};
use crate::agent::Shutdown;
use crate::config::AgentConfig;
use crate::domain::RecordState;
use crate::submit;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep the demo's configuration, secrets and store in this (new or empty) directory
    /// instead of a temporary one, to look at them afterwards.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Seed for the simulator's decisions (which records need clearing, which elements it asks for).
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Poll cycles at most.
    #[arg(long, default_value_t = 10)]
    max_cycles: u32,
}

/// Invented people. Umlauts, a title and a double name exercise the normalisation.
const RECORDS: &str = "local_id,given,family,birthdate,gender,birthplace
demo-001,Anna,Müller,1985-03-14,female,Greifswald
demo-002,Jürgen,Schmidt,1972-11-02,male,Rostock
demo-003,Dr. Maria,Schäfer,1990-07-21,female,Stralsund
demo-004,Karl-Heinz,Weiß,1958-01-30,male,Anklam
demo-005,Zoë,Bauer,2001-12-24,female,Wolgast
demo-006,Ömer,Yılmaz,1979-05-05,male,Berlin
demo-007,Lena,Fischer,1995-09-09,female,Hamburg
demo-008,Till,Becker,1983-02-28,male,Lübeck
demo-009,Sophie,Wagner,1969-10-10,female,Schwerin
demo-010,Jonas,Hoffmann,2010-06-01,male,Demmin
demo-011,Mia,Schulz,1949-04-17,female,Usedom
demo-012,Felix,Koch,1988-08-08,unknown,Pasewalk
";

const STUDY: &str = "demo-study";
const TARGET: &str = "dic_demo";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(demo(args))
}

async fn demo(args: Args) -> anyhow::Result<ExitCode> {
    let api_key = format!("demo-key-{:016x}", rand::random::<u64>());
    let sim = ttp_sim::start(ttp_sim::SimConfig {
        study: STUDY.into(),
        target: TARGET.into(),
        auth: ttp_sim::SimAuth::api_key_header(api_key.clone()),
        seed: args.seed,
        clearing: 0.5,
        repeat_first: 0.5,
        ..ttp_sim::SimConfig::default()
    })
    .await
    .context("starting the fTTP simulator")?;
    crate::outln!("1. fTTP simulator listening at {}", sim.base_url());

    let temp;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let config_path = init::write_starter(
        &dir,
        Some(&TtpSettings {
            base_url: sim.base_url(),
            study: STUDY.into(),
            target: TARGET.into(),
            api_key,
        }),
    )?;
    let records_path = dir.join("records.csv");
    std::fs::write(&records_path, RECORDS).context("writing the demo records")?;
    crate::outln!(
        "2. configuration written by `init`: {} (secrets mode 0600, store in {})",
        config_path.display(),
        dir.join("store").display()
    );

    let config = AgentConfig::from_file_and_env(Some(&config_path), std::iter::empty())?;
    let secrets = config.load_secrets()?;
    let loaded = Loaded { config, secrets };
    let encoder = context::encoder(&loaded.config)?;
    let agent = context::agent(&loaded, Shutdown::never())?;

    let records = submit::read_records(&records_path)?;
    let n = records.len();
    let encoded = submit::encode_records(&encoder, records, &|_| {})?;
    submit::check_profile(agent.store(), &encoder).map_err(context::config_error)?;
    let stored = submit::store_records(agent.store(), &encoded, 1000)?;
    let reg = agent.register_pending().await?;
    crate::outln!(
        "3. submitted {n} synthetic records: {} stored, encoded as {}-byte fTTP filters, sent in {} batch(es)",
        stored.inserted,
        encoder.output_len(),
        reg.batches
    );
    crate::outln!(
        "   the fTTP answered: {} pseudonym(s) at once, {} record(s) need clearing",
        reg.pseudonymised,
        reg.awaiting_clearing
    );

    crate::outln!("4. poll cycles:");
    let mut finished = false;
    for _ in 0..args.max_cycles {
        let report = agent.poll_cycle().await?;
        let d = &report.dispatch;
        crate::outln!(
            "   poll {}: {} task(s) listed ({} new) → done {}, retry {}, needs attention {}, expired {}",
            report.poll_seq,
            report.listed,
            report.new_tasks,
            d.done,
            d.retry,
            d.attention,
            d.expired + report.expired_on_merge
        );
        let waiting = agent
            .store()
            .records_in_states(|s| *s != RecordState::Pseudonymised)?
            .len();
        if waiting == 0 && sim.open_tasks().is_empty() {
            finished = true;
            break;
        }
        // The simulator raises follow-up tasks immediately; a real fTTP takes days.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stats = sim.stats();
    let raised: u64 = stats.tasks_raised_by_type.values().sum();
    crate::outln!(
        "5. the simulator raised {raised} task(s) ({}); {} IDAT answer(s) accepted, {} duplicate(s), {} data-minimisation violation(s)",
        stats
            .tasks_raised_by_type
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        stats.provide_ok,
        stats.duplicate_provides,
        stats.provide_violations_total
    );

    let mut rows = agent
        .store()
        .records_in_states(|s| *s == RecordState::Pseudonymised)?;
    rows.sort_by(|a, b| a.head.local_id.cmp(&b.head.local_id));
    crate::outln!("6. pseudonyms obtained ({} of {n}):", rows.len());
    for r in &rows {
        crate::outln!(
            "   {:<10} {}",
            r.head.local_id,
            r.head.pseudonym.as_deref().unwrap_or("-")
        );
    }
    sim.shutdown().await;

    let ok = finished
        && rows.len() == n
        && stats.duplicate_provides == 0
        && stats.provide_violations_total == 0;
    if ok {
        crate::outln!("demo finished: every task answered, every record has its pseudonym");
        Ok(ExitCode::SUCCESS)
    } else {
        crate::outln!("demo did NOT finish cleanly (see above)");
        Ok(ExitCode::FAILURE)
    }
}
