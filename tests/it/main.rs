//! The integration tests: one binary, one module per area (`admin`, `agent`, `cli`, `client`,
//! `config`, `daemon`, `deploy`, `handover`, `store`, `submit`), the shared set-up in
//! `support` (tests/support, also used by the soak tests).
//!
//! One binary instead of one per file: the test code links against the library once, not 47
//! times, which is most of the build time and disk the tests took. Run an area with
//! `cargo test --test it admin::`, one file with `cargo test --test it store::backup::`.
//! The slow crash and fault runs are in the `soak` binary (tests/soak).
//!
//! All tests of the binary share one process: a test must not change what is global to it
//! (environment variables, the current directory, signal dispositions, the umask); a child
//! process gets its environment through `Command::env`.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod agent;
mod cli;
mod client;
mod config;
mod daemon;
mod deploy;
mod handover;
mod store;
mod submit;
