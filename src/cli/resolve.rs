//! `ttp-agent resolve retry|handled|add-element`: the ways out of "needs attention".
//!
//! ```text
//! ttp-agent resolve retry TASK_KEY [--yes]
//! ttp-agent resolve retry --record LOCAL_ID [--record LOCAL_ID ...]
//! ttp-agent resolve retry --rejected CAUSE
//! ttp-agent resolve handled TASK_KEY --comment "answered by phone, ticket 4711"
//! ttp-agent resolve add-element LOCAL_ID ELEMENT [VALUE | -] [--replace]
//! ```
//!
//! The logic (what is allowed from which state, the audit entry) is in [`crate::resolve`].
//! Each action is recorded with the operating-system user (`$SUDO_USER`, `$USER`, uid) in the
//! store's audit trail, which `ttp-agent status` shows.
//!
//! An IDAT value given on the command line is visible to other users in the process list and
//! lands in the shell history: leave VALUE out (or give `-`) to read it from standard input.
//!
//! The store is locked while the daemon runs; the commands then say so instead of waiting.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::Context as _;
use ttp_proto::{IdatElement, TaskKey};
use zeroize::Zeroizing;

use super::{ConfigArg, context};
use crate::resolve::{self, Actor, Resolved};
use crate::store::{Store, StoreError};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Work on a task again in the next cycle (from needs-attention, retry-wait or in-doubt),
    /// or register rejected records again (--record, --rejected).
    Retry {
        #[command(flatten)]
        config: ConfigArg,
        /// The task key, as `ttp-agent status` shows it.
        #[arg(required_unless_present_any = ["records", "rejected"], conflicts_with_all = ["records", "rejected"])]
        task_key: Option<String>,
        /// Register this rejected record again (its local id); repeat for a list.
        #[arg(long = "record", value_name = "LOCAL_ID", conflicts_with = "rejected")]
        records: Vec<String>,
        /// Register every record rejected with this cause again (the stored code, e.g.
        /// `http-404`, which older versions recorded for a wrong study or target).
        #[arg(long, value_name = "CAUSE")]
        rejected: Option<String>,
        /// Confirm sending a send_idat answer again that the fTTP still lists although the
        /// agent answered it (a second disclosure if the first did arrive).
        #[arg(long)]
        yes: bool,
    },
    /// Mark a task as dealt with outside the agent: it is finished and not acted on again.
    Handled {
        #[command(flatten)]
        config: ConfigArg,
        task_key: String,
        /// What was done (stored in clear with the task and in the audit trail: no IDAT).
        #[arg(long, short = 'm')]
        comment: String,
    },
    /// Add an IDAT element a task asked for to a stored record.
    AddElement {
        #[command(flatten)]
        config: ConfigArg,
        local_id: String,
        /// The fTTP element code, e.g. `birthplace`, `birthdate`, `gender`.
        element: String,
        /// The value; omit it or give `-` to read one line from standard input (a value on
        /// the command line is visible in the process list and the shell history).
        value: Option<String>,
        /// Replace the element's value if the record has one already.
        #[arg(long)]
        replace: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = match &args.action {
        Action::Retry { config, .. }
        | Action::Handled { config, .. }
        | Action::AddElement { config, .. } => config,
    };
    let loaded = context::load(config)?;
    // Read the value before opening the store, so nothing waits on a terminal with the store
    // locked.
    let value = match &args.action {
        Action::AddElement { element, value, .. } => {
            let element = parse_element(element)?;
            Some((element, read_value(value.as_deref())?))
        }
        _ => None,
    };
    let store = open(&loaded)?;
    let actor = Actor::from_env();
    let now = chrono::Utc::now();
    let done: Resolved = match args.action {
        Action::Retry {
            task_key: Some(task_key),
            yes,
            ..
        } => resolve::retry_task(&store, &TaskKey(task_key), &actor, now, yes)?,
        Action::Retry {
            records, rejected, ..
        } => {
            let selection = match rejected {
                Some(cause) => resolve::RecordSelection::Cause(cause),
                None => resolve::RecordSelection::Ids(records),
            };
            let done = resolve::retry_records(&store, &selection, &actor, now)?;
            for d in &done {
                println!("{}: {} -> {}", d.subject, d.from, d.to);
            }
            println!(
                "{} record(s) will be registered again in the next cycle (recorded in the audit trail as {actor})",
                done.len()
            );
            return Ok(ExitCode::SUCCESS);
        }
        Action::Handled {
            task_key, comment, ..
        } => resolve::mark_handled(&store, &TaskKey(task_key), &comment, &actor, now)?,
        Action::AddElement {
            local_id, replace, ..
        } => {
            let Some((element, value)) = value else {
                anyhow::bail!("internal error: the element value was not read");
            };
            resolve::add_element(&store, &local_id, element, &value, replace, &actor, now)?
        }
    };
    println!(
        "{}: {} -> {} (recorded in the audit trail as {actor})",
        done.subject, done.from, done.to
    );
    if let Some(w) = &done.warning {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

fn open(loaded: &context::Loaded) -> anyhow::Result<std::sync::Arc<Store>> {
    context::open_store(&loaded.config, &loaded.secrets).map_err(|e| {
        match e.downcast_ref::<StoreError>() {
            Some(StoreError::Locked { path }) => anyhow::anyhow!(
                "the store at {} is in use by the running ttp-agent daemon; stop the daemon (e.g. `systemctl stop ttp-agent`) or use the admin API, then run this command again",
                path.display()
            ),
            _ => e,
        }
    })
}

fn parse_element(code: &str) -> anyhow::Result<IdatElement> {
    IdatElement::from_code(code).ok_or_else(|| {
        let known: Vec<&str> = IdatElement::ALL.iter().map(|e| e.code()).collect();
        anyhow::anyhow!(
            "unknown IDAT element {code:?}; known elements: {}",
            known.join(", ")
        )
    })
}

/// The value from the command line, or one line from standard input for `None` / `-`.
fn read_value(arg: Option<&str>) -> anyhow::Result<Zeroizing<String>> {
    match arg {
        Some(v) if v != "-" => Ok(Zeroizing::new(v.to_string())),
        _ => {
            let mut line = Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the element value from standard input")?;
            Ok(line)
        }
    }
}
