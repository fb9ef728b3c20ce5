//! Command output that survives a closed pipe.
//!
//! `println!` panics when standard output is a pipe whose reader has gone
//! (`ttp-agent check | head -2`): Rust ignores SIGPIPE, so the write fails with `EPIPE` and the
//! macro turns the failure into a panic with a backtrace and status 101. Every command writes
//! through [`outln!`](crate::outln), [`out!`](crate::out) and [`errln!`](crate::errln) instead.
//! A reader that went away is the reader's choice, not an error: the process ends at once and
//! quietly with status 141 (128 + SIGPIPE), as a C program killed by SIGPIPE would, which is
//! what shells and `set -o pipefail` expect. Stopping at the write is what SIGPIPE's default
//! would do; commands write their results after their store work is flushed, so nothing is
//! lost that the output was about.
//!
//! Errors that propagate as values (a `write_all` to stdout with `?`) are recognised by
//! [`is_broken_pipe`] at the top of `cli::main` and end the same way.

use std::fmt;
use std::io::{self, Write as _};

/// Exit status after a closed output pipe (128 + SIGPIPE).
pub const EXIT_BROKEN_PIPE: u8 = 141;

/// Writes to standard output; a closed pipe ends the process with [`EXIT_BROKEN_PIPE`].
pub fn stdout(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        drop(out);
        gone(&e);
    }
}

/// Writes to standard error; a closed pipe ends the process with [`EXIT_BROKEN_PIPE`]. Any
/// other failure is ignored: there is nowhere left to report it.
pub fn stderr(args: fmt::Arguments<'_>) {
    if let Err(e) = io::stderr().lock().write_fmt(args)
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        std::process::exit(i32::from(EXIT_BROKEN_PIPE));
    }
}

/// Standard output failed: a broken pipe ends quietly, anything else (a full disk behind a
/// redirection) is said on stderr and ends with status 1.
fn gone(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(EXIT_BROKEN_PIPE));
    }
    stderr(format_args!(
        "ttp-agent: error: cannot write to standard output: {e}\n"
    ));
    std::process::exit(1);
}

/// Whether an error (or one of its causes) is a write to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// `println!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::cli::out::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` that ends quietly on a closed pipe.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that neither panics nor fails.
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::out::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
