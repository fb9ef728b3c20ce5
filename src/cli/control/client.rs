//! The command's side: run a [`Request`] through the running daemon, or in-process when no
//! daemon runs; either way the person at the terminal sees it through one [`Terminal`].

use std::io::{BufReader, BufWriter, IsTerminal as _, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::wire::{self, ClientMsg, Frame, ServerMsg, WireError};
use super::{Ctx, Request, Session};
use crate::config::AgentConfig;
use crate::store::{Store, StoreError};

/// How long a command waits for the daemon's control channel while the daemon holds the store
/// but does not answer yet (it is starting: opening the store, recovering). Never reached in
/// normal operation; it turns a daemon that holds the store without a channel into an error.
pub const CHANNEL_WAIT: Duration = Duration::from_secs(10);

/// How long a command waits for the next word from the daemon. The daemon reports progress
/// and waits as they happen, so silence this long means it is stuck, not busy.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(600);

/// Where a command's output goes.
#[derive(Clone, Debug)]
pub enum OutputTarget {
    Stdout,
    /// A file, written through an exclusive temporary file next to it (mode 0600, never
    /// following a symlink), fsynced, then renamed into place.
    File {
        path: PathBuf,
        /// Replace an existing file; otherwise an existing file is an error at the rename.
        replace: bool,
    },
}

/// The person at the terminal: standard output and error, a progress bar, the command's input
/// and output. Commands running in-process use it as their [`Session`]; a command running in
/// the daemon plays the daemon's messages into it.
pub struct Terminal {
    target: OutputTarget,
    /// Opened at the first output, so that the store's errors come first, as they would
    /// without an output file.
    sink: Option<Sink>,
    /// The output could not be opened, or was committed already: writes fail with this.
    unusable: Option<Unusable>,
    input: Box<dyn Read>,
    bar: Option<(String, indicatif::ProgressBar)>,
}

/// A writer that refuses every write with a message.
struct Unusable(String);

impl Write for Unusable {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other(self.0.clone()))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Err(std::io::Error::other(self.0.clone()))
    }
}

impl Terminal {
    pub fn new(target: OutputTarget, input: Option<Box<dyn Read>>) -> Terminal {
        Terminal {
            target,
            sink: None,
            unusable: None,
            input: input.unwrap_or_else(|| Box::new(std::io::empty())),
            bar: None,
        }
    }

    fn end_bar(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Session for Terminal {
    fn output(&mut self) -> &mut dyn Write {
        if self.sink.is_none() && self.unusable.is_none() {
            match Sink::open(&self.target) {
                Ok(s) => self.sink = Some(s),
                Err(e) => self.unusable = Some(Unusable(crate::cli::one_line(&e))),
            }
        }
        if let Some(s) = &mut self.sink {
            return s.writer();
        }
        self.unusable
            .get_or_insert_with(|| Unusable("the output is not available".into()))
    }

    fn commit_output(&mut self) -> anyhow::Result<()> {
        self.end_bar();
        if let Some(u) = &self.unusable {
            anyhow::bail!("{}", u.0);
        }
        // A command with no output at all still produces its (empty) file.
        if self.sink.is_none() {
            self.output();
        }
        let result = match self.sink.take() {
            Some(s) => s.commit(),
            None => Ok(()),
        };
        self.unusable = Some(Unusable("the output was already handed over".into()));
        result
    }

    fn print(&mut self, text: &str) {
        self.end_bar();
        // A closed pipe (`| head`) ends the command quietly (status 141).
        crate::out!("{text}");
    }

    fn note(&mut self, line: &str) {
        self.end_bar();
        crate::errln!("{line}");
    }

    fn progress(&mut self, what: &str, done: u64, total: u64) {
        let same = self.bar.as_ref().is_some_and(|(w, _)| w == what);
        if !same {
            self.end_bar();
            self.bar = Some((what.to_owned(), progress_bar(total, what)));
        }
        if let Some((_, bar)) = &self.bar {
            bar.set_position(done);
        }
    }

    fn waiting(&mut self, what: &str) {
        self.end_bar();
        crate::errln!("ttp-agent: waiting: {what}");
    }

    fn input(&mut self) -> &mut dyn Read {
        &mut self.input
    }
}

/// A progress bar on a terminal, nothing otherwise (logs and pipes stay clean).
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() || len < 1_000 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} {bar:40} {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    bar.set_message(what.to_string());
    bar
}

enum Sink {
    Stdout(BufWriter<std::io::Stdout>),
    File {
        w: BufWriter<tempfile::NamedTempFile>,
        path: PathBuf,
        replace: bool,
    },
}

impl Sink {
    fn open(target: &OutputTarget) -> anyhow::Result<Sink> {
        match target {
            OutputTarget::Stdout => Ok(Sink::Stdout(BufWriter::new(std::io::stdout()))),
            OutputTarget::File { path, replace } => {
                let dir = parent_dir(path);
                // O_CREAT|O_EXCL with a random name, mode 0600: a planted file or symlink is
                // never opened, let alone followed.
                let tmp = tempfile::Builder::new()
                    .prefix(".ttp-agent-out.")
                    .tempfile_in(dir)
                    .with_context(|| {
                        format!(
                            "cannot write {}: creating a temporary file in {}",
                            path.display(),
                            dir.display()
                        )
                    })?;
                Ok(Sink::File {
                    w: BufWriter::new(tmp),
                    path: path.clone(),
                    replace: *replace,
                })
            }
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w,
            Sink::File { w, .. } => w,
        }
    }

    fn commit(self) -> anyhow::Result<()> {
        match self {
            Sink::Stdout(mut w) => w.flush().context("writing to standard output"),
            Sink::File { w, path, replace } => {
                let shown = path.display();
                let tmp = w
                    .into_inner()
                    .map_err(|e| e.into_error())
                    .with_context(|| format!("writing {shown}"))?;
                tmp.as_file()
                    .sync_all()
                    .with_context(|| format!("writing {shown}"))?;
                if replace {
                    tmp.persist(&path)
                        .map_err(|e| e.error)
                        .with_context(|| format!("replacing {shown}"))?;
                } else {
                    tmp.persist_noclobber(&path)
                        .map_err(|e| e.error)
                        .with_context(|| {
                            format!(
                                "{shown} exists; choose another file, or add --force to replace it"
                            )
                        })?;
                }
                std::fs::File::open(parent_dir(&path))
                    .and_then(|d| d.sync_all())
                    .with_context(|| format!("syncing the directory of {shown}"))?;
                Ok(())
            }
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The configuration for a command that may run beside the daemon (see
/// [`AgentConfig::load_beside_service`]).
pub fn load_config(arg: &crate::cli::ConfigArg) -> anyhow::Result<AgentConfig> {
    Ok(AgentConfig::load_beside_service(arg.config.as_deref())?)
}

/// Runs `request`: through the daemon listening on `[control] socket` when there is one, else
/// in this process on the store (which it opens, reading the secrets). `note_daemon` is shown
/// on standard error when the daemon answers.
pub fn run(
    config: AgentConfig,
    request: Request,
    input: Option<Box<dyn Read>>,
    target: OutputTarget,
    note_daemon: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let mut terminal = Terminal::new(target, input);
    let socket = config.control.socket_path();
    let started = Instant::now();
    let mut said_waiting = false;
    let mut secrets = None;
    loop {
        match connect(&socket)? {
            Some(stream) => {
                if let Some(note) = note_daemon {
                    terminal.note(&format!("{note} (through {})", socket.display()));
                }
                return through_daemon(stream, request, &mut terminal);
            }
            None => {
                let loaded = match secrets.take() {
                    Some(s) => s,
                    None => {
                        // The warnings of a configuration that works (the daemon logged its
                        // own at its start).
                        let s = config.load_secrets()?;
                        for w in config.warnings() {
                            tracing::warn!("{w}");
                        }
                        for w in &s.warnings {
                            tracing::warn!("{w}");
                        }
                        s
                    }
                };
                // Another user's store (root running a command by hand) is not opened: files
                // created now would lock the service out.
                crate::cli::owner::refuse_foreign_store(&config.store.path)?;
                let mut opts = crate::cli::context::store_options(&config, &loaded)?;
                opts.lock_wait = Duration::ZERO;
                match Store::open(&opts) {
                    Ok(store) => {
                        let ctx = Ctx::local(Arc::new(store), Arc::new(config), loaded);
                        let exit = request.apply(&ctx, &mut terminal)?;
                        return Ok(ExitCode::from(exit));
                    }
                    Err(StoreError::Locked { path }) => {
                        if started.elapsed() >= CHANNEL_WAIT {
                            anyhow::bail!(
                                "the store at {} is held by another process, but no ttp-agent daemon answers on `[control] socket` = {}: is the process holding the store a ttp-agent daemon started with this configuration (and a version with the control channel)? Stop it, or run this command with the daemon's configuration",
                                path.display(),
                                socket.display()
                            );
                        }
                        if !said_waiting {
                            said_waiting = true;
                            terminal.waiting(&format!(
                                "the store at {} is held by another process (a daemon starting up?); waiting up to {} s for its control channel at {}",
                                path.display(),
                                CHANNEL_WAIT.as_secs(),
                                socket.display()
                            ));
                        }
                        secrets = Some(loaded);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

/// Connects to the daemon's socket: `Ok(None)` when no daemon listens there (no socket file,
/// or a stale one), an error when the socket refuses this user.
fn connect(socket: &Path) -> anyhow::Result<Option<UnixStream>> {
    match UnixStream::connect(socket) {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => Ok(None),
            std::io::ErrorKind::PermissionDenied => Err(anyhow::anyhow!(
                "permission denied on the control socket {} of the running agent: ask the site's administrator to add your user to the operators group (`[control] group`; see docs/OPERATIONS.md), then log in again",
                socket.display()
            )),
            _ => Err(anyhow::anyhow!(
                "cannot connect to the running agent's control socket {}: {e}",
                socket.display()
            )),
        },
    }
}

/// Sends the request (and the input), then plays the daemon's messages into `terminal`.
fn through_daemon(
    stream: UnixStream,
    request: Request,
    terminal: &mut Terminal,
) -> anyhow::Result<ExitCode> {
    let command = request.name();
    let lost = |detail: String| {
        anyhow::anyhow!(
            "the running agent ended the connection before `{command}` finished ({detail}): it stopped or was killed. What it completed is stored; run the command again to finish it (every command is safe to repeat)"
        )
    };
    stream
        .set_read_timeout(Some(SILENCE_LIMIT))
        .context("the control connection")?;
    let mut writer = BufWriter::new(stream.try_clone().context("the control connection")?);
    let mut reader = BufReader::new(stream);
    let hello = ClientMsg::Hello {
        version: wire::VERSION,
        sudo_user: std::env::var("SUDO_USER").ok(),
        request,
    };
    // A daemon that refuses early closes its end; its answer is still there to read, so a
    // failed write only ends the sending.
    let sent = (|| -> std::io::Result<()> {
        wire::write_msg(&mut writer, &hello)?;
        let mut buf = vec![0u8; wire::DATA_CHUNK];
        loop {
            let n = match terminal.input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(std::io::Error::other(InputFailed(e))),
            };
            wire::write_data(&mut writer, &buf[..n])?;
        }
        wire::write_msg(&mut writer, &ClientMsg::InputEnd)?;
        writer.flush()
    })();
    if let Err(e) = sent
        && let Some(InputFailed(source)) = e.get_ref().and_then(|i| i.downcast_ref::<InputFailed>())
    {
        anyhow::bail!("reading the input: {source}");
    }
    loop {
        let frame = match wire::read_frame::<ServerMsg>(&mut reader) {
            Ok(f) => f,
            Err(WireError::Closed) => return Err(lost("no answer".into())),
            Err(WireError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                anyhow::bail!(
                    "the running agent has said nothing about `{command}` for {} minutes; it may be stuck: see its log (journalctl -u ttp-agent). What it completed is stored; the command is safe to repeat",
                    SILENCE_LIMIT.as_secs() / 60
                );
            }
            Err(e) => return Err(lost(e.to_string())),
        };
        match frame {
            Frame::Data(bytes) => terminal
                .output()
                .write_all(&bytes)
                .context("writing the output")?,
            Frame::Msg(ServerMsg::Note { line }) => terminal.note(&line),
            Frame::Msg(ServerMsg::Print { text }) => terminal.print(&text),
            Frame::Msg(ServerMsg::Progress { what, done, total }) => {
                terminal.progress(&what, done, total)
            }
            Frame::Msg(ServerMsg::Waiting { what }) => terminal.waiting(&what),
            Frame::Msg(ServerMsg::OutputEnd) => {
                let answer = match terminal.commit_output() {
                    Ok(()) => ClientMsg::Committed,
                    Err(e) => ClientMsg::CommitFailed {
                        message: crate::cli::one_line(&e),
                    },
                };
                // The daemon answers a failed commit with the message; a lost connection
                // shows as such at the next read.
                let _ = wire::write_msg(&mut writer, &answer).and_then(|()| writer.flush());
            }
            Frame::Msg(ServerMsg::Done { exit }) => return Ok(ExitCode::from(exit)),
            Frame::Msg(ServerMsg::Failed { message, exit }) => {
                // The same exit status as in-process: the error's type carries it.
                return Err(match exit {
                    crate::cli::EX_CONFIG => crate::cli::context::config_error(message),
                    2 => crate::cli::UsageError(message).into(),
                    _ => anyhow::anyhow!(message),
                });
            }
        }
    }
}

#[derive(Debug)]
struct InputFailed(std::io::Error);

impl std::fmt::Display for InputFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InputFailed {}
