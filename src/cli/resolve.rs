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
//! Runs in the daemon when it runs (`crate::cli::control`); the audit trail then names the user
//! the kernel reports for the connection, not what the command claims.

use std::io::BufRead as _;
use std::process::ExitCode;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use ttp_proto::{IdatElement, TaskKey};
use zeroize::Zeroizing;

use super::ConfigArg;
use crate::cli::control::client::{self, OutputTarget};
use crate::cli::control::{Ctx, Session};
use crate::resolve::{self, Resolved};

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

/// `resolve`, as the daemon receives it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub action: RequestAction,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestAction {
    Retry {
        task_key: String,
        #[serde(default)]
        confirmed: bool,
    },
    RetryRecords {
        local_ids: Vec<String>,
        rejected: Option<String>,
    },
    Handled {
        task_key: String,
        comment: String,
    },
    AddElement {
        local_id: String,
        element: String,
        value: IdatValue,
        replace: bool,
    },
}

/// An IDAT value on its way to the daemon: wiped from memory when dropped, never in `Debug`.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdatValue(String);

impl Drop for IdatValue {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for IdatValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdatValue(<redacted>)")
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, action) = match args.action {
        Action::Retry {
            config,
            task_key: Some(task_key),
            yes,
            ..
        } => (
            config,
            RequestAction::Retry {
                task_key,
                confirmed: yes,
            },
        ),
        Action::Retry {
            config,
            records,
            rejected,
            ..
        } => (
            config,
            RequestAction::RetryRecords {
                local_ids: records,
                rejected,
            },
        ),
        Action::Handled {
            config,
            task_key,
            comment,
        } => (config, RequestAction::Handled { task_key, comment }),
        Action::AddElement {
            config,
            local_id,
            element,
            value,
            replace,
        } => {
            // Checked and read before anything else, so nothing waits on a terminal with the
            // store or the daemon's attention held.
            parse_element(&element)?;
            let value = read_value(value.as_deref())?;
            let action = RequestAction::AddElement {
                local_id,
                element,
                value: IdatValue(value.as_str().to_owned()),
                replace,
            };
            (config, action)
        }
    };
    let config = client::load_config(&config)?;
    let request = crate::cli::control::Request::Resolve(Request { action });
    client::run(config, request, None, OutputTarget::Stdout, None)
}

pub fn apply(req: Request, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
    let store = &ctx.store;
    let actor = &ctx.actor;
    let now = chrono::Utc::now();
    let done: Resolved = match req.action {
        RequestAction::Retry {
            task_key,
            confirmed,
        } => resolve::retry_task(store, &TaskKey(task_key), actor, now, confirmed)?,
        RequestAction::RetryRecords {
            local_ids,
            rejected,
        } => {
            let selection = match rejected {
                Some(cause) => resolve::RecordSelection::Cause(cause),
                None => resolve::RecordSelection::Ids(local_ids),
            };
            let done = resolve::retry_records(store, &selection, actor, now)?;
            for d in &done {
                io.print(&format!("{}: {} -> {}\n", d.subject, d.from, d.to));
            }
            io.print(&format!(
                "{} record(s) will be registered again in the next cycle (recorded in the audit trail as {actor})\n",
                done.len()
            ));
            return Ok(0);
        }
        RequestAction::Handled { task_key, comment } => {
            resolve::mark_handled(store, &TaskKey(task_key), &comment, actor, now)?
        }
        RequestAction::AddElement {
            local_id,
            element,
            value,
            replace,
        } => {
            let element = parse_element(&element)?;
            let value = Zeroizing::new(value.0.clone());
            resolve::add_element(store, &local_id, element, &value, replace, actor, now)?
        }
    };
    io.print(&format!(
        "{}: {} -> {} (recorded in the audit trail as {actor})\n",
        done.subject, done.from, done.to
    ));
    if let Some(w) = &done.warning {
        io.note(&format!("warning: {w}"));
    }
    Ok(0)
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
