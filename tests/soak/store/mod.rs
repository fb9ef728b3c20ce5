//! The store killed while it writes, and storage that fails.

mod crash;
mod storage_faults;
