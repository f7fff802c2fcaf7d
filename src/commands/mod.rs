//! The subcommands: each loads what it needs, does its work, and returns the process exit code.

pub mod check;
pub mod cloudlet;
#[cfg(feature = "demo")]
pub mod demo;
pub mod plan;
pub mod run;

/// Exit status for "everything fine".
pub const EXIT_OK: i32 = 0;
/// Exit status for "the input or the controller said no".
pub const EXIT_FAILED: i32 = 1;
/// Exit status for usage and config errors.
pub const EXIT_USAGE: i32 = 2;

/// Sets up `tracing` for a command: `RUST_LOG` wins over the config's `[log] filter`; logs go to
/// stderr so that command output on stdout stays machine-readable.
pub fn init_logging(config: &crate::config::Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
