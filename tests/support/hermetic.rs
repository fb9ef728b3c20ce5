//! Child `ttp-agent` processes that see nothing of the host's agent set-up.
//!
//! A machine with the Debian package installed has `/etc/ttp-agent/agent.toml`; a shell may
//! carry `TTP_AGENT__…` variables, `TTP_AGENT_CONFIG` or `CREDENTIALS_DIRECTORY`. A test that
//! let its child inherit any of them would test the host instead of the code. Every test that
//! runs the binary builds its command here; such tests also always pass `--config` (or an
//! option that makes the configuration unnecessary), so the default file is never read.
#![allow(dead_code)]

use std::ffi::OsString;

/// The variables of this process that configure the agent or its logging.
fn agent_vars() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let n = name.to_string_lossy();
            n.starts_with("TTP_AGENT") || n == "CREDENTIALS_DIRECTORY" || n == "RUST_LOG"
        })
        .collect()
}

/// `ttp-agent` (the binary at `bin`) without the host's agent variables.
pub fn command(bin: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    for name in agent_vars() {
        cmd.env_remove(name);
    }
    cmd
}

/// [`command`] for async tests.
pub fn command_async(bin: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    for name in agent_vars() {
        cmd.env_remove(name);
    }
    cmd
}
