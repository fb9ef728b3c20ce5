//! `ttp-agent healthcheck`: asks the running daemon's admin endpoint `GET /healthz`.
//!
//! For container health checks (`HEALTHCHECK` in the Containerfile), where no `curl` exists:
//! exit 0 when the endpoint answers 200, 1 otherwise, with one line saying why. The address is
//! `--address`, or `[admin] listen` from the environment (`TTP_AGENT__ADMIN__LISTEN`, all a
//! container has) or the configuration file. Only that key is read: the rest of the
//! configuration (secrets under `${CREDENTIALS_DIRECTORY}`, which exists only inside the
//! service) is none of a liveness check's business. An address that listens on all interfaces
//! (`0.0.0.0`, `::`) is asked on loopback.
//!
//! `--ready` asks `GET /readyz` instead (a poll succeeded within `[admin] ready_window`), with
//! the admin token when `[admin] token_file` is set: a readiness probe that runs inside the
//! container (a Kubernetes exec probe) needs no token in its definition. It loads the whole
//! configuration and its secrets, as the daemon beside it does.
//!
//! Deliberately tiny: one HTTP/1.1 request over a plain TCP connection with a deadline, no
//! TLS (the admin endpoint is local), no retries (the container runtime repeats the check).

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use super::ConfigArg;
use crate::config::AgentConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: ConfigArg,

    /// The admin address to ask (default: `[admin] listen` from the configuration).
    #[arg(long, value_name = "HOST:PORT")]
    address: Option<SocketAddr>,

    /// Give up after this long.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// Ask `/readyz` (readiness) instead of `/healthz` (liveness), with the admin token of
    /// the configuration if it sets one.
    #[arg(long)]
    ready: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // Liveness reads `[admin] listen` alone; readiness also needs the admin token, so it loads
    // the configuration with its secrets (as the container or the service has them).
    let (address, token) = if args.ready {
        let config = AgentConfig::load(args.config.config.as_deref())?;
        let token = match config.admin.token_file {
            Some(_) => config.load_secrets()?.admin_token,
            None => None,
        };
        (args.address.unwrap_or(config.admin.listen), token)
    } else {
        let address = match args.address {
            Some(a) => a,
            None => AgentConfig::load_admin_listen(args.config.config.as_deref())?,
        };
        (address, None)
    };
    let target = reachable(address);
    let (path, good, bad) = if args.ready {
        ("/readyz", "ready", "not ready")
    } else {
        ("/healthz", "healthy", "unhealthy")
    };
    let token = token.as_ref().and_then(|t| t.expose_str());
    match probe(target, path, token, args.timeout) {
        Ok(200) => {
            crate::outln!("{good}: GET http://{target}{path} answered 200");
            Ok(ExitCode::SUCCESS)
        }
        Ok(status) => {
            crate::outln!("{bad}: GET http://{target}{path} answered {status}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            crate::outln!("{bad}: GET http://{target}{path}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A wildcard listen address is reached on loopback of the same family.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

/// The status code of `GET path`.
fn probe(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ttp-agent-healthcheck\r\n{auth}Connection: close\r\n\r\n"
    )?;
    // The status line is all we need; read until it is complete (or 1 KiB, or the end).
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not an HTTP response",
        )
    })
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?;
    if status.len() != 3 {
        return None;
    }
    status.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_parsed_and_anything_else_is_refused() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\nx: y\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status(b"HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH_9.2\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn wildcard_addresses_are_asked_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:9464".parse().unwrap();
        assert_eq!(reachable(v4), "127.0.0.1:9464".parse().unwrap());
        let v6: SocketAddr = "[::]:9464".parse().unwrap();
        assert_eq!(reachable(v6), "[::1]:9464".parse().unwrap());
        let fixed: SocketAddr = "10.1.2.3:9464".parse().unwrap();
        assert_eq!(reachable(fixed), fixed);
    }
}
