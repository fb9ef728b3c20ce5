//! The integration tests of ttp-proto: one binary, a module per former test file.

mod common;
mod fast_path;
mod hostile;
mod identity;
mod ops;
mod outcome;
mod parameters;
mod patient;
mod tasks;
