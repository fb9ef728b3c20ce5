//! Set-up shared by the two test binaries, `it` (tests/it) and `soak` (tests/soak): each
//! declares this module with `#[path]`, so both compile the same helpers.
//!
//! * `agent`: a simulator on loopback, a starter configuration for it, synthetic records.
//! * `admin`: the known scenario the admin tests run against, and an admin server.
//! * `client`: scripted HTTP servers and raw TCP misbehavers for the client tests.
//! * `daemon`: the real binary as a daemon with JSON logs, waiting for events, signals.
//! * `handover`: a site directory whose dispatcher is never contacted, and the binary.
//! * `hermetic`: child processes that see nothing of the host's agent set-up.
//! * `logs`: the logs of the processes a test starts, kept after it and printed when it fails.
//! * `robust`: a simulator on a runtime of its own, running the binary to completion.
//! * `store`: temporary stores, synthetic records and tasks, the raw redb file.

pub mod admin;
pub mod agent;
pub mod client;
pub mod daemon;
pub mod handover;
pub mod hermetic;
pub mod logs;
pub mod robust;
pub mod store;
