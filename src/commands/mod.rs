//! The subcommands: each loads what it needs, does its work, and returns the process exit code.

pub mod check;
pub mod cloudlet;
#[cfg(feature = "demo")]
pub mod demo;
pub mod plan;
pub mod run;
pub mod status;

/// Exit status for "everything fine".
pub const EXIT_OK: i32 = 0;
/// Exit status for "the input or the controller said no".
pub const EXIT_FAILED: i32 = 1;
/// Exit status for usage and config errors.
pub const EXIT_USAGE: i32 = 2;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Readable lines; without timestamps when stderr is the systemd journal (which stamps
    /// every line itself), with colours only on a terminal.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "invalid log format \"{other}\": expected text or json"
            )),
        }
    }
}

/// Sets up `tracing` for a command: `RUST_LOG` wins over `default_filter` (the config's
/// `[log] filter`, or a command's own default); logs go to stderr so that command output on
/// stdout stays machine-readable.
pub fn init_logging(default_filter: &str, format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text if crate::systemd::journald_attached() => {
            builder.without_time().with_ansi(false).try_init()
        }
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// `man`: the manual page, generated from the command-line definitions (so it cannot drift).
pub fn man() -> i32 {
    use clap::CommandFactory;
    let page = clap_mangen::Man::new(crate::cli::Cli::command()).section("8");
    let mut out = Vec::new();
    if page.render(&mut out).is_err() {
        return EXIT_FAILED;
    }
    use std::io::Write;
    match std::io::stdout().write_all(&out) {
        Ok(()) => EXIT_OK,
        Err(_) => EXIT_FAILED,
    }
}
