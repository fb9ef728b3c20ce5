//! The daemon binary: signals, systemd notifications, the control channel.

mod control;
mod signals;
mod systemd_notify;
