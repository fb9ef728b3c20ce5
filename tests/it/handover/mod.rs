//! Handing pseudonyms over: the pseudonym log, `export`, the webhook, the daemon.

mod daemon;
mod export;
mod log;
mod webhook;
