//! The admin surface: endpoints, alerts, hardening, the status page and `status`.

mod alerts;
mod browser;
mod daemon;
mod hardening;
mod http;
mod status;
