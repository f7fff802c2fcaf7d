//! The command line: flags and subcommands, nothing else.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// Puts MobiledgeX/EdgeXR cloudlets into maintenance ahead of declared windows, restores them
/// afterwards, and verifies both.
#[derive(Debug, Parser)]
#[command(
    name = "cloudlet-maintd",
    version,
    about,
    long_about = "Puts MobiledgeX/EdgeXR cloudlets into maintenance ahead of declared windows, restores them afterwards, and verifies both.\n\n\
Windows are TOML files in windows.d (see /usr/share/doc/cloudlet-maintd/README.md). The daemon (`run`) enters each cloudlet early enough that the controller's handshake (AutoProv failover, then the CRM) has finished when the window opens, restores Normal Operation when it closes, never restores a cloudlet it did not put into maintenance itself, and shows everything on a loopback status endpoint (default http://127.0.0.1:7647/).",
    after_long_help = "FILES:\n  /etc/cloudlet-maintd/maintd.toml   configuration (every key has a default)\n  /etc/cloudlet-maintd/windows.d/    window files (*.toml, name order)\n  /var/lib/cloudlet-maintd/journal.json   ownership and handshake history\n\n\
SIGNALS:\n  SIGHUP reloads windows.d (also reloaded on file changes); SIGTERM/SIGINT stop after in-flight handshakes (shutdown_grace).\n\n\
EXIT STATUS:\n  0 success; 1 invalid input, a controller-side failure, or (status) active alerts; 2 usage or configuration errors."
)]
pub struct Cli {
    /// Daemon config file. A missing file at the default path means built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The config path to read and whether its absence is acceptable.
    pub fn config_path(&self) -> (PathBuf, bool) {
        match &self.config {
            Some(p) => (p.clone(), false),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), true),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the window files and the config; exit 1 if anything is invalid.
    Check(CheckArgs),
    /// Show the upcoming maintenance spans per cloudlet.
    Plan(PlanArgs),
    /// Manual operations on one cloudlet, like mcctl (show, enter, exit).
    Cloudlet(CloudletArgs),
    /// Run the daemon: enter maintenance ahead of each span, restore after it, verify both.
    Run(RunArgs),
    /// A compact table from a running daemon's status endpoint; exit 1 when it has alerts.
    Status(StatusArgs),
    /// Print the manual page (roff) to stdout.
    #[command(hide = true)]
    Man,
    /// Show the whole product on this machine: an embedded controller simulator, demo windows
    /// starting within minutes, and the daemon with its status endpoint.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone, Default)]
pub struct RunArgs {
    /// Directory of window files (overrides `[schedule] windows_dir`).
    #[arg(long, value_name = "DIR")]
    pub windows_dir: Option<PathBuf>,
    /// State directory holding the journal (overrides `[schedule] state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Status endpoint address (overrides `[status] listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Log format: `text` (default; without timestamps under systemd) or `json`.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub log_format: String,
}

#[derive(Debug, Args, Clone, Default)]
pub struct StatusArgs {
    /// Base URL of the status endpoint. Default: http:// + `[status] listen`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token (default: `[status] token`).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CLOUDLET_MAINTD_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

#[cfg(feature = "demo")]
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Status endpoint address.
    #[arg(long, value_name = "ADDR", default_value = crate::config::DEFAULT_STATUS_LISTEN)]
    pub listen: std::net::SocketAddr,
    /// Stop after this long (e.g. "6m"); default: run until Ctrl-C.
    #[arg(long = "for", value_name = "DURATION")]
    pub run_for: Option<String>,
    /// Keep the demo's files (windows.d, journal) in this directory instead of a temp dir.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Directory of window files (overrides `[schedule] windows_dir`).
    #[arg(long, value_name = "DIR")]
    pub windows_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Directory of window files (overrides `[schedule] windows_dir`).
    #[arg(long, value_name = "DIR")]
    pub windows_dir: Option<PathBuf>,
    /// State directory whose journal holds the learned leads (overrides `[schedule] state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Start of the listing: RFC 3339 (`2026-12-06T02:00:00+01:00`, `…Z`) or a civil time in
    /// UTC (`2026-12-06T02:00`). Default: now.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End of the listing (same forms as --from). Default: 14 days after --from.
    #[arg(long, value_name = "TIME", conflicts_with = "count")]
    pub until: Option<String>,
    /// Show only the first N spans (looking up to one year ahead).
    #[arg(long, value_name = "N")]
    pub count: Option<usize>,
    /// Only this cloudlet.
    #[arg(long, value_name = "ORG/NAME")]
    pub cloudlet: Option<String>,
    /// Print a JSON array of spans instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CloudletArgs {
    #[command(subcommand)]
    pub action: CloudletAction,
}

#[derive(Debug, Subcommand)]
pub enum CloudletAction {
    /// Show one cloudlet (ORG/NAME) or every cloudlet of an organization (--org).
    Show {
        #[arg(long)]
        region: String,
        /// The cloudlet, as ORG/NAME.
        #[arg(
            value_name = "ORG/NAME",
            required_unless_present = "org",
            conflicts_with = "org"
        )]
        cloudlet: Option<String>,
        /// List every cloudlet of this organization.
        #[arg(long)]
        org: Option<String>,
    },
    /// Put a cloudlet into maintenance (MaintenanceStart, or MaintenanceStartNoFailover).
    Enter {
        #[arg(long)]
        region: String,
        #[arg(value_name = "ORG/NAME")]
        cloudlet: String,
        /// Skip the AutoProv failover of HA app instances.
        #[arg(long)]
        no_failover: bool,
    },
    /// Restore Normal Operation.
    Exit {
        #[arg(long)]
        region: String,
        #[arg(value_name = "ORG/NAME")]
        cloudlet: String,
    },
}
