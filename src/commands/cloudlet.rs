//! `cloudlet show|enter|exit`: manual operations, like mcctl.

use crate::cli::CloudletAction;
use crate::config::Config;

/// Runs one manual operation and returns the exit status.
pub async fn run(_config: &Config, _action: &CloudletAction) -> i32 {
    eprintln!("cloudlet commands are not implemented yet");
    super::EXIT_USAGE
}
