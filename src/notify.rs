//! systemd integration without a crate: the `sd_notify` protocol is one datagram on the socket
//! named by `NOTIFY_SOCKET` (READY=1, WATCHDOG=1, STOPPING=1, STATUS=…), and the watchdog
//! interval comes from `WATCHDOG_USEC`. Outside systemd both variables are absent and every
//! call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::agent::scheduler::DaemonHooks;
use crate::agent::{CycleError, CycleReport};

pub struct SystemdHooks {
    socket: Option<String>,
    watchdog: Option<Duration>,
    /// READY=1 was sent. The watchdog feeder and the scheduler, which reports readiness, are
    /// tasks of their own: without this the feeder's first ping could reach systemd before
    /// READY=1 (it did on a loaded machine), and systemd only watches a started service.
    ready: AtomicBool,
}

impl SystemdHooks {
    pub fn from_env() -> SystemdHooks {
        let socket = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| !s.is_empty());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&us| us > 0)
            .map(Duration::from_micros);
        SystemdHooks {
            socket,
            watchdog,
            ready: AtomicBool::new(false),
        }
    }

    /// How often to ping: half the watchdog timeout, as sd_watchdog_enabled(3) recommends.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    fn send(&self, state: &str) {
        let Some(path) = &self.socket else { return };
        let Ok(sock) = UnixDatagram::unbound() else {
            return;
        };
        // An abstract socket is written with a leading '@'.
        let result = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt as _;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| sock.send_to_addr(state.as_bytes(), &addr))
        } else {
            sock.send_to(state.as_bytes(), path)
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

impl DaemonHooks for SystemdHooks {
    fn ready(&self) {
        self.send("READY=1\nSTATUS=polling");
        self.ready.store(true, Ordering::Release);
    }

    fn cycle_finished(&self, result: &Result<CycleReport, CycleError>, _took: Duration) {
        let status = match result {
            Ok(r) => format!(
                "STATUS=last poll ok: {} listed, {} open",
                r.listed, r.open_after
            ),
            Err(e) => format!("STATUS=last poll failed ({})", e.class()),
        };
        self.send(&status);
    }

    fn alive(&self) {
        if self.watchdog.is_some() && self.ready.load(Ordering::Acquire) {
            self.send("WATCHDOG=1");
        }
    }

    fn stopping(&self) {
        self.send("STOPPING=1");
    }
}
