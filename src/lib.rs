//! ttp-agent: the site side of the fTTP dispatcher.
//!
//! Module map (ARCHITECTURE.md has the data flow and the durability argument):
//!
//! * [`domain`]: what the agent keeps (records, tasks, task states); pure.
//! * [`config`]: the TOML/environment configuration and the secrets it points to.
//! * [`store`]: the embedded store (redb); the only module that touches it.
//! * [`client`]: the HTTP client for the dispatcher: classification of outcomes, retries,
//!   rate limit. The wire format itself is `ttp_proto`.
//! * [`agent`]: registration, poll cycle, dispatcher, scheduler, one handler per task type;
//!   the state changes it drives are the domain's.
//! * [`submit`]: records into the store (read, encode, store); registering them is the agent's.
//!   Its `input` module reads site exports (encoding, separator, value mappings, every bad row
//!   at once; pure).
//! * [`status`]: what coordinators see (open tasks, attention, history), from the store.
//! * [`logging`], [`notify`]: log formats and systemd notifications.
//! * [`admin`]: the daemon's HTTP surface (health, readiness, metrics, status page) and alerts.
//! * [`webhook`]: POSTing JSON to a site's webhook (alerts, pseudonym hand-over): one sender,
//!   one back-off, one URL redaction.
//! * [`cli`]: the commands; `main.rs` only calls [`cli::main`]. Its [`cli::control`] is the
//!   daemon's local control channel (Unix socket): the commands run through the running
//!   daemon, or in-process when none runs, by the same code.
//! * [`resolve`], [`handover`]: a person's way out of attention states; pseudonym delivery.
//! * `testkit`: fixtures for the unit tests, the integration tests and the benches; built only
//!   for them (`cfg(test)` or the `testkit` feature), never into the shipped binary.

pub mod admin;
pub mod agent;
pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod handover;
pub mod logging;
pub mod notify;
pub mod resolve;
pub mod status;
pub mod store;
pub mod submit;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod webhook;
pub mod withdraw;
