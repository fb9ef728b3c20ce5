//! The agent binary killed and faulted over whole runs.

mod crash;
mod crash_faults;
mod faults;
