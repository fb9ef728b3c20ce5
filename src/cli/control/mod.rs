//! The local control channel: every command that works on the store works beside the daemon.
//!
//! The daemon owns the store (one process may open it). `submit`, `export`, `resolve`,
//! `backup`, `purge`, `status` and `disclosures` therefore run *inside* the daemon when it runs, over a Unix
//! socket (`[control] socket`), and against the store opened by the command itself when it
//! does not. The structure makes both paths give the same output, exit status and errors by
//! construction:
//!
//! * one [`Request`] enum: what to do, with every option the command line gave;
//! * one `apply` per command (in the command's file under `cli/`), which runs a request
//!   against a [`Ctx`] (the store, the configuration, the agent) and talks to the person at the
//!   terminal only through a [`Session`];
//! * two sessions: [`client::Terminal`] is the terminal itself (the command runs in-process),
//!   and `server::Remote` forwards everything over the socket to the command, which plays it
//!   into the same [`client::Terminal`];
//! * the wire format ([`wire`]) apart from the connection: length-delimited frames holding
//!   JSON messages or raw bytes.
//!
//! Files are written by the command, never by the daemon: `export --output` and `backup OUT`
//! stream their bytes to the command, which writes them under the operator's own account
//! (through an exclusive temporary file, fsynced and renamed), and confirms; only then does
//! `export --new` move its cursor. `submit` streams the CSV file's bytes to the daemon, which
//! reads the secrets and encodes: the operator's account needs no access to any secret.
//!
//! Access: the socket's permissions (the agent's user, root, and `[control] group`), checked
//! again against the peer's kernel credentials ([`access`]). The peer is named in the audit
//! trail and in the daemon's log; [`Ctx::peer`] gives it to every command.

pub mod access;
pub mod client;
pub mod server;
pub mod wire;

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::admin::AdminState;
use crate::agent::{Agent, Shutdown};
use crate::cli;
use crate::config::{AgentConfig, Secrets};
use crate::resolve::Actor;
use crate::store::Store;

pub use access::Peer;

/// One command to run, with everything the command line said.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    Submit(cli::submit::Request),
    Export(cli::export::Request),
    Resolve(cli::resolve::Request),
    Backup(cli::backup::Request),
    Purge(cli::purge::Request),
    Status(cli::status::Request),
    Disclosures(cli::disclosures::Request),
    Approve(cli::approve::ApproveRequest),
    Deny(cli::approve::DenyRequest),
    Withdraw(cli::withdraw::Request),
}

impl Request {
    /// The command's name, for logs and messages.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Submit(_) => "submit",
            Request::Export(_) => "export",
            Request::Resolve(_) => "resolve",
            Request::Backup(_) => "backup",
            Request::Purge(_) => "purge",
            Request::Status(_) => "status",
            Request::Disclosures(_) => "disclosures",
            Request::Approve(_) => "approve",
            Request::Deny(_) => "deny",
            Request::Withdraw(_) => "withdraw",
        }
    }

    /// Runs the command against `ctx`; the exit status on success (a command may finish
    /// with 1 without an error, e.g. `submit` with conflicts).
    pub fn apply(self, ctx: &Ctx, io: &mut dyn Session) -> anyhow::Result<u8> {
        match self {
            Request::Submit(r) => cli::submit::apply(r, ctx, io),
            Request::Export(r) => cli::export::apply(r, ctx, io),
            Request::Resolve(r) => cli::resolve::apply(r, ctx, io),
            Request::Backup(r) => cli::backup::apply(r, ctx, io),
            Request::Purge(r) => cli::purge::apply(r, ctx, io),
            Request::Status(r) => cli::status::apply(r, ctx, io),
            Request::Disclosures(r) => cli::disclosures::apply(r, ctx, io),
            Request::Approve(r) => cli::approve::apply_approve(r, ctx, io),
            Request::Deny(r) => cli::approve::apply_deny(r, ctx, io),
            Request::Withdraw(r) => cli::withdraw::apply(r, ctx, io),
        }
    }
}

/// How a command talks to the person who ran it.
pub trait Session {
    /// The command's output stream: standard output, or the file `--output` / `OUT` named
    /// (written by the command's process in both paths).
    fn output(&mut self) -> &mut dyn std::io::Write;
    /// Makes the output final (file fsynced and renamed into place, standard output
    /// flushed). Only after `Ok` may a command record that it was handed over.
    fn commit_output(&mut self) -> anyhow::Result<()>;
    /// Text for standard output (summaries, reports).
    fn print(&mut self, text: &str);
    /// A line for standard error.
    fn note(&mut self, line: &str);
    /// Progress of a long step.
    fn progress(&mut self, what: &str, done: u64, total: u64);
    /// The command waits for something; says what.
    fn waiting(&mut self, what: &str);
    /// The command's input stream (`submit`'s CSV bytes).
    fn input(&mut self) -> &mut dyn std::io::Read;
}

/// What a command runs against.
pub struct Ctx {
    pub store: Arc<Store>,
    /// The configuration of the process that holds the store.
    pub config: Arc<AgentConfig>,
    /// Who acts, for the audit trail.
    pub actor: Actor,
    /// The connected process, when the command runs in the daemon.
    pub peer: Option<Peer>,
    /// The daemon's admin state (readiness, last cycle), when the command runs in it.
    pub daemon: Option<Arc<AdminState>>,
    agent: OnceLock<Arc<Agent>>,
    /// For building the agent in-process; `None` in the daemon, whose agent is given.
    secrets: Option<Secrets>,
    runtime: Runtime,
}

enum Runtime {
    Handle(tokio::runtime::Handle),
    Own(OnceLock<tokio::runtime::Runtime>),
}

impl Ctx {
    /// A command in the daemon, for `peer`.
    pub fn daemon(
        agent: Arc<Agent>,
        config: Arc<AgentConfig>,
        admin: Arc<AdminState>,
        runtime: tokio::runtime::Handle,
        peer: Peer,
        actor: Actor,
    ) -> Ctx {
        let store = Arc::clone(agent.store());
        let slot = OnceLock::new();
        let _ = slot.set(agent);
        Ctx {
            store,
            config,
            actor,
            peer: Some(peer),
            daemon: Some(admin),
            agent: slot,
            secrets: None,
            runtime: Runtime::Handle(runtime),
        }
    }

    /// A command in its own process, on the store it opened.
    pub fn local(store: Arc<Store>, config: Arc<AgentConfig>, secrets: Secrets) -> Ctx {
        Ctx {
            store,
            config,
            actor: Actor::from_env(),
            peer: None,
            daemon: None,
            agent: OnceLock::new(),
            secrets: Some(secrets),
            runtime: Runtime::Own(OnceLock::new()),
        }
    }

    /// The agent (the daemon's, or one built on the opened store when first needed).
    pub fn agent(&self) -> anyhow::Result<Arc<Agent>> {
        if let Some(a) = self.agent.get() {
            return Ok(Arc::clone(a));
        }
        let Some(secrets) = &self.secrets else {
            anyhow::bail!("internal error: no agent in the daemon's command context");
        };
        let client = cli::context::client(&self.config, secrets)?;
        let agent = Agent::new(
            Arc::clone(&self.store),
            client,
            cli::context::options(&self.config),
            Shutdown::never(),
        );
        Ok(Arc::clone(self.agent.get_or_init(|| agent)))
    }

    /// Runs a future to completion from a command's (blocking) thread.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> anyhow::Result<F::Output> {
        match &self.runtime {
            Runtime::Handle(h) => Ok(h.block_on(f)),
            Runtime::Own(cell) => {
                if cell.get().is_none() {
                    let rt = tokio::runtime::Runtime::new()
                        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))?;
                    let _ = cell.set(rt);
                }
                match cell.get() {
                    Some(rt) => Ok(rt.block_on(f)),
                    None => anyhow::bail!("internal error: no async runtime"),
                }
            }
        }
    }
}
