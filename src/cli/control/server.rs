//! The daemon's side: the socket, the peer check, one thread per command.
//!
//! Blocking I/O on plain threads: a command spends its time in the store, the encoder and
//! the file system, not waiting on the network, and an idle listener blocked in `accept(2)`
//! costs no wake-ups. A command needs the fTTP (`submit`'s registration) through the daemon's
//! runtime handle.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::access::{self, Peer, Policy};
use super::wire::{self, ClientMsg, Frame, ServerMsg, WireError};
use super::{Ctx, Session};
use crate::admin::AdminState;
use crate::agent::Agent;
use crate::config::{AgentConfig, ControlConfig};

/// Commands running at once; more are refused with a message (each holds a thread, and
/// several `submit`s at once only queue behind one another for the registration).
pub const MAX_COMMANDS: usize = 8;

/// How long the daemon waits for the next frame from a command (its input, its confirmation)
/// before it gives up on it. A person at a terminal is never asked anything mid-command.
const PEER_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the control socket could not be set up; the daemon does not start without it.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "`[control] socket` = {path}: {problem}; the commands reach the running daemon through it"
    )]
    Socket { path: String, problem: String },
    #[error("`[control] group`: {0}")]
    Group(String),
}

/// The bound socket; removed from the file system when dropped.
pub struct Listener {
    inner: UnixListener,
    path: PathBuf,
    policy: Policy,
}

/// Binds `[control] socket`: mode 0660 (0600 without a group), group `[control] group`.
/// A socket file nobody listens on any more (a daemon that was killed) is replaced; one a
/// daemon still answers on is not.
pub fn bind(config: &ControlConfig) -> Result<Listener, BindError> {
    let path = config.socket_path();
    let shown = path.display().to_string();
    let fail = |problem: String| BindError::Socket {
        path: shown.clone(),
        problem,
    };
    let group = config
        .group
        .as_deref()
        .map(access::resolve_group)
        .transpose()
        .map_err(BindError::Group)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        // Traversable, not listable: the socket's own mode decides who connects.
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711));
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(&path).is_ok() {
                return Err(fail(
                    "another ttp-agent daemon listens on it; two daemons must not share a socket (or a store)".into(),
                ));
            }
            std::fs::remove_file(&path)
                .map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?;
        }
        Ok(_) => {
            return Err(fail(
                "exists and is not a socket; remove it or choose another path".into(),
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let inner = UnixListener::bind(&path).map_err(|e| fail(format!("cannot listen: {e}")))?;
    let listener = Listener {
        inner,
        path,
        policy: Policy {
            owner_uid: access::own_uid(),
            group,
        },
    };
    if let Some(gid) = group {
        let c = std::ffi::CString::new(listener.path.as_os_str().as_encoded_bytes())
            .map_err(|_| fail("the path contains a NUL byte".into()))?;
        // SAFETY: chown(2) with a valid NUL-terminated path; uid -1 leaves the owner alone.
        if unsafe { libc::chown(c.as_ptr(), u32::MAX, gid) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(BindError::Group(format!(
                "cannot give the socket group {gid}: {e}; the daemon's user must be a member of that group (SupplementaryGroups= in the unit)"
            )));
        }
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(&listener.path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(format!("cannot set its mode: {e}")))?;
    Ok(listener)
}

impl Listener {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves commands, each on a thread of its own, until [`Serving::stop`].
    pub fn serve(self, shared: Shared) -> std::io::Result<Serving> {
        let listener = Arc::new(self);
        let stopping = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(shared);
        let (l, stop) = (Arc::clone(&listener), Arc::clone(&stopping));
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in l.inner.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(stream) => {
                            let shared = Arc::clone(&shared);
                            let policy = l.policy.clone();
                            let spawned = std::thread::Builder::new()
                                .name("control-cmd".into())
                                .spawn(move || connection(&shared, &policy, stream));
                            if let Err(e) = spawned {
                                tracing::error!(error = %e, "control: cannot start a command thread");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "control: accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(Serving {
            listener,
            stopping,
            thread: Some(thread),
        })
    }

    /// Removes the socket file: a command started from now on finds no daemon.
    fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// The channel being served. Stopping (or dropping) it removes the socket and ends the
/// accepting thread; commands under way finish on their own threads.
pub struct Serving {
    listener: Arc<Listener>,
    stopping: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Serving {
    pub fn path(&self) -> &Path {
        &self.listener.path
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the thread blocked in accept(2), which then sees the flag.
        let woke = UnixStream::connect(&self.listener.path).is_ok();
        self.listener.close();
        if woke {
            let _ = thread.join();
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What every command in the daemon shares.
pub struct Shared {
    pub agent: Arc<Agent>,
    pub config: Arc<AgentConfig>,
    pub admin: Arc<AdminState>,
    pub runtime: tokio::runtime::Handle,
    pub active: AtomicUsize,
}

struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn connection(shared: &Shared, policy: &Policy, stream: UnixStream) {
    let peer = match Peer::of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "control: cannot identify the peer; connection closed");
            return;
        }
    };
    let mut remote = match Remote::new(stream, peer.clone()) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, peer = %peer, "control: connection unusable");
            return;
        }
    };
    if !policy.allows(peer.uid, &access::peer_groups(&peer)) {
        tracing::warn!(peer = %peer, "control: refused a user outside the operators group");
        remote.finish(Err((policy.refusal(&peer), 1)));
        return;
    }
    let _slot = Slot(&shared.active);
    if shared.active.fetch_add(1, Ordering::SeqCst) >= MAX_COMMANDS {
        remote.finish(Err((
            format!(
                "the running agent is already running {MAX_COMMANDS} commands; try again when one has finished"
            ),
            1,
        )));
        return;
    }
    let (sudo_user, request) = match wire::read_frame::<ClientMsg>(&mut remote.reader) {
        Ok(Frame::Msg(ClientMsg::Hello {
            version,
            sudo_user,
            request,
        })) if version == wire::VERSION => (sudo_user, request),
        Ok(Frame::Msg(ClientMsg::Hello { version, .. })) => {
            remote.finish(Err((
                format!(
                    "the running agent (version {}) speaks control protocol {}, this command {version}: use the ttp-agent binary of the running daemon",
                    env!("CARGO_PKG_VERSION"),
                    wire::VERSION
                ),
                1,
            )));
            return;
        }
        Ok(_) | Err(_) => {
            tracing::warn!(peer = %peer, "control: a connection that did not start with a request");
            return;
        }
    };
    let command = request.name();
    let actor = peer.actor(access::own_uid(), sudo_user.as_deref());
    tracing::info!(command, peer = %peer, actor = actor.as_str(), "control: command started");
    remote.command = command;
    let ctx = Ctx::daemon(
        Arc::clone(&shared.agent),
        Arc::clone(&shared.config),
        Arc::clone(&shared.admin),
        shared.runtime.clone(),
        peer.clone(),
        actor,
    );
    let result = request.apply(&ctx, &mut remote);
    let outcome = match result {
        Ok(exit) => Ok(exit),
        Err(e) => Err((crate::cli::one_line(&e), crate::cli::exit_status(&e))),
    };
    match &outcome {
        Ok(exit) => tracing::info!(command, peer = %peer, exit, "control: command finished"),
        Err((message, exit)) => {
            tracing::warn!(command, peer = %peer, exit, error = %message, "control: command failed")
        }
    }
    remote.finish(outcome);
}

/// A command's [`Session`] in the daemon: everything goes to the connected command.
struct Remote {
    reader: BufReader<UnixStream>,
    writer: BufWriter<UnixStream>,
    out: Vec<u8>,
    input: Input,
    peer: Peer,
    command: &'static str,
    /// The last progress step logged (in tenths), per step name.
    logged: Option<(String, u64)>,
    /// The connection failed; later messages are dropped (the command fails at its next
    /// confirmation, or ends unheard).
    broken: bool,
}

struct Input {
    pending: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Remote {
    fn new(stream: UnixStream, peer: Peer) -> std::io::Result<Remote> {
        stream.set_read_timeout(Some(PEER_TIMEOUT))?;
        stream.set_write_timeout(Some(PEER_TIMEOUT))?;
        Ok(Remote {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
            out: Vec::new(),
            input: Input {
                pending: Vec::new(),
                pos: 0,
                done: false,
            },
            peer,
            command: "",
            logged: None,
            broken: false,
        })
    }

    fn send(&mut self, msg: &ServerMsg) {
        if self.broken {
            return;
        }
        let sent = wire::write_msg(&mut self.writer, msg).and_then(|()| self.writer.flush());
        if sent.is_err() {
            self.broken = true;
        }
    }

    fn send_out(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let sent = wire::write_data(&mut self.writer, &self.out);
        self.out.clear();
        sent.inspect_err(|_| self.broken = true)
    }

    fn finish(&mut self, outcome: Result<u8, (String, u8)>) {
        let msg = match outcome {
            Ok(exit) => ServerMsg::Done { exit },
            Err((message, exit)) => ServerMsg::Failed { message, exit },
        };
        self.send(&msg);
    }

    fn read_input(&mut self) -> std::io::Result<()> {
        match wire::read_frame::<ClientMsg>(&mut self.reader) {
            Ok(Frame::Data(bytes)) => {
                self.input.pending = bytes;
                self.input.pos = 0;
                Ok(())
            }
            Ok(Frame::Msg(ClientMsg::InputEnd)) => {
                self.input.done = true;
                Ok(())
            }
            Ok(Frame::Msg(other)) => Err(std::io::Error::other(format!(
                "the command sent {other:?} instead of its input"
            ))),
            Err(WireError::Io(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(format!(
                "the command's input ended early: {e}"
            ))),
        }
    }
}

impl Write for Remote {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.extend_from_slice(buf);
        if self.out.len() >= wire::DATA_CHUNK {
            self.send_out()?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_out()?;
        self.writer.flush()
    }
}

impl Read for Remote {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.input.pos < self.input.pending.len() {
                let n = buf.len().min(self.input.pending.len() - self.input.pos);
                buf[..n].copy_from_slice(&self.input.pending[self.input.pos..self.input.pos + n]);
                self.input.pos += n;
                return Ok(n);
            }
            if self.input.done {
                return Ok(0);
            }
            self.read_input()?;
        }
    }
}

impl Session for Remote {
    fn output(&mut self) -> &mut dyn Write {
        self
    }

    fn commit_output(&mut self) -> anyhow::Result<()> {
        self.flush()
            .map_err(|e| anyhow::anyhow!("sending the output to the command: {e}"))?;
        self.send(&ServerMsg::OutputEnd);
        if self.broken {
            anyhow::bail!("the command went away before it confirmed its output");
        }
        loop {
            match wire::read_frame::<ClientMsg>(&mut self.reader) {
                Ok(Frame::Msg(ClientMsg::Committed)) => return Ok(()),
                Ok(Frame::Msg(ClientMsg::CommitFailed { message })) => {
                    return Err(anyhow::anyhow!(message));
                }
                // Input the command did not read (every command sends its end).
                Ok(Frame::Data(_) | Frame::Msg(ClientMsg::InputEnd)) => self.input.done = true,
                Ok(Frame::Msg(ClientMsg::Hello { .. })) => {
                    anyhow::bail!("the command answered its output with a second request")
                }
                Err(e) => {
                    anyhow::bail!("the command went away before it confirmed its output: {e}")
                }
            }
        }
    }

    fn print(&mut self, text: &str) {
        // Messages stay well below the frame limit.
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(wire::MAX_FRAME / 4);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            self.send(&ServerMsg::Print { text: head.into() });
            rest = tail;
        }
    }

    fn note(&mut self, line: &str) {
        self.send(&ServerMsg::Note { line: line.into() });
    }

    fn progress(&mut self, what: &str, done: u64, total: u64) {
        // The daemon's log shows progress too, in tenths.
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        let step = match &self.logged {
            Some((w, t)) if w == what => (*t < tenth).then_some(tenth),
            _ => Some(tenth),
        };
        if let Some(t) = step {
            self.logged = Some((what.to_owned(), t));
            tracing::info!(command = self.command, peer = %self.peer, what, done, total, "control: progress");
        }
        self.send(&ServerMsg::Progress {
            what: what.into(),
            done,
            total,
        });
    }

    fn waiting(&mut self, what: &str) {
        tracing::info!(command = self.command, peer = %self.peer, what, "control: waiting");
        self.send(&ServerMsg::Waiting { what: what.into() });
    }

    fn input(&mut self) -> &mut dyn Read {
        self
    }
}
