//! The integration tests of ttp-sim: one binary, a module per former test file.

mod faults;
mod protocol;
mod support;
