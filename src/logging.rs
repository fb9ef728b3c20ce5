//! Log output: human-readable on a terminal, JSON for containers, and journald-friendly under
//! systemd (no timestamp of our own — the journal has one — and the sd-daemon `<N>` priority
//! prefix so `journalctl -p warning` works).
//!
//! What is logged is decided at the call sites, which never pass IDAT, secrets or filters; this
//! module only decides how it looks. The level comes from `[log] level`, overridden by
//! `RUST_LOG` when set.

use std::io::IsTerminal as _;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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

/// Install the global subscriber. Logs go to stderr (stdout is for command output such as
/// `encode` and `export`). Safe to call once per process; later calls are ignored.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format.resolve() {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Journald => builder.event_format(JournaldFormat).try_init(),
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .try_init(),
    };
    // Already initialised (tests, a second call): keep the first.
    let _ = result;
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
