//! Log output: human-readable on a terminal, JSON for containers, and journald-friendly under
//! systemd (no timestamp of our own — the journal has one — and the sd-daemon `<N>` priority
//! prefix so `journalctl -p warning` works).
//!
//! What is logged is decided at the call sites, which never pass IDAT, secrets or filters; this
//! module only decides how it looks. The level comes from `[log] level`, overridden by
//! `RUST_LOG` when set.

use std::io::IsTerminal as _;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

pub use crate::config::LogFormat;

impl LogFormat {
    /// What `Auto` means in this process.
    pub fn resolve(self) -> LogFormat {
        match self {
            LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
            LogFormat::Auto => LogFormat::Text,
            other => other,
        }
    }
}

/// The sd-daemon(3) priority for a tracing level.
pub fn journald_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

struct JournaldFormat;

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", journald_priority(event.metadata().level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                write!(writer, ": ")?;
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The filter of the installed subscriber, replaceable at run time ([`set_level`]).
static FILTER: OnceLock<FilterHandle> = OnceLock::new();

struct FilterHandle {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The format in use (resolved: never `Auto`).
    format: LogFormat,
    /// `RUST_LOG` was set at start-up and wins over any level from the configuration.
    from_rust_log: bool,
}

/// Install the global subscriber. Logs go to stderr (stdout is for command output such as
/// `encode` and `export`). Safe to call once per process; later calls are ignored.
///
/// The level filter sits in a reload layer, so a running daemon can change it on SIGHUP
/// ([`set_level`]); the format cannot change after start-up.
pub fn init(format: LogFormat, level: &str) {
    let from_env = EnvFilter::try_from_default_env();
    let from_rust_log = from_env.is_ok();
    let filter = from_env
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let format = format.resolve();
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Journald => registry
            .with(
                fmt::layer()
                    .event_format(JournaldFormat)
                    // The journal stores text; colour codes would end up in it verbatim.
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        _ => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_target(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    // Already initialised (tests, a second call): keep the first.
    if result.is_ok() {
        let _ = FILTER.set(FilterHandle {
            handle,
            format,
            from_rust_log,
        });
    }
}

/// The format [`init`] installed in this process (resolved, never `Auto`), if it ran.
pub fn active_format() -> Option<LogFormat> {
    FILTER.get().map(|f| f.format)
}

/// The format a command would log in before it could read its configuration: the command
/// line's choice (`--log-format`, `TTP_AGENT_LOG_FORMAT`), else `TTP_AGENT__LOG__FORMAT` from
/// the environment, else `auto`; resolved. For reporting errors that happen before logging
/// is set up (an invalid configuration) in the format the operator's tools expect.
pub fn requested_format(cli: Option<LogFormat>) -> LogFormat {
    let from_env = || match std::env::var("TTP_AGENT__LOG__FORMAT").ok()?.trim() {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        "journald" => Some(LogFormat::Journald),
        _ => None,
    };
    cli.or_else(from_env).unwrap_or(LogFormat::Auto).resolve()
}

/// What [`set_level`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelChange {
    /// The new filter is in effect.
    Applied,
    /// `RUST_LOG` was set at start-up; it stays in effect.
    KeptRustLog,
    /// Logging was not initialised by [`init`] in this process.
    NotInitialised,
}

/// Replace the level filter of the running subscriber (`"debug"`,
/// `"info,ttp_agent::client=debug"`, …). Fails, changing nothing, when `level` is not a valid
/// filter.
pub fn set_level(level: &str) -> Result<LevelChange, String> {
    let Some(current) = FILTER.get() else {
        return Ok(LevelChange::NotInitialised);
    };
    if current.from_rust_log {
        return Ok(LevelChange::KeptRustLog);
    }
    let filter = EnvFilter::try_new(level).map_err(|e| format!("invalid log filter: {e}"))?;
    current
        .handle
        .reload(filter)
        .map_err(|e| format!("could not replace the log filter: {e}"))?;
    Ok(LevelChange::Applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(journald_priority(&Level::ERROR), 3);
        assert_eq!(journald_priority(&Level::WARN), 4);
        assert_eq!(journald_priority(&Level::INFO), 6);
        assert_eq!(journald_priority(&Level::DEBUG), 7);
    }

    #[test]
    fn explicit_formats_resolve_to_themselves() {
        for f in [LogFormat::Text, LogFormat::Json, LogFormat::Journald] {
            assert_eq!(f.resolve(), f);
        }
    }
}
