//! `mc-sim`: runs the Master Controller simulator on a loopback address.
//!
//! Only wiring: parse flags, load the scenario, bind, print the URL, serve until SIGINT/SIGTERM.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// A simulator of the MobiledgeX / EdgeXR Master Controller's cloudlet maintenance API.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:9900")]
    listen: SocketAddr,
    /// Scenario file (.toml or .json).
    #[arg(long)]
    scenario: PathBuf,
    /// Override the scenario's time_scale (0.01 = 100x faster).
    #[arg(long)]
    time_scale: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "refusing to listen on {}: mc-sim only listens on loopback addresses",
            args.listen
        );
    }
    let mut scenario = mc_sim::Scenario::from_file(&args.scenario)
        .with_context(|| format!("loading {}", args.scenario.display()))?;
    if let Some(scale) = args.time_scale {
        scenario.time_scale = scale;
        scenario.validate()?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "mc-sim listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(
        "{} cloudlets, {} users, time scale {}",
        scenario.cloudlets.len(),
        scenario.users.len(),
        scenario.time_scale
    );
    mc_sim::serve(listener, scenario, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT, shutting down"),
        () = term => tracing::info!("SIGTERM, shutting down"),
    }
}
