//! The soak tests: the slow runs that kill the agent and its store at random points or inject
//! faults for minutes, in a binary of their own so that `cargo test --test it` stays quick.
//!
//! * `agent::crash`: the agent binary killed with SIGKILL at random points and restarted.
//! * `agent::crash_faults`: kills and injected faults together.
//! * `agent::faults`: a simulator whose responses are faulty 30 % of the time.
//! * `store::crash`: the store killed while it writes; nothing acknowledged is lost.
//! * `store::storage_faults`: a store that cannot be written, a full disk, a damaged store.
//!
//! The shared set-up is in `support` (tests/support), as for the integration tests.

#[path = "../support/mod.rs"]
mod support;

mod agent;
mod store;
