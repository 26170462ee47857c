//! The binaries' logging: `tracing` events as text lines, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Where a binary's log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogTo {
    /// Standard output: a server's, whose output is its log.
    Stdout,
    /// Standard error: a tool's, whose standard output is its report.
    Stderr,
}

/// Installs the process's logger: `RUST_LOG` filters it (`default_filter` without one, e.g.
/// `info`), lines go to `to`, coloured only where that is a terminal.
pub fn init_logging(default_filter: &str, to: LogTo) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match to {
        LogTo::Stdout => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogTo::Stderr => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .init(),
    }
}
