//! `demo`: the whole product on one machine, in one command.
//!
//! Starts the controller simulator (`mc-sim`, embedded behind the `demo` cargo feature) with the
//! example scenario, writes demo windows that begin within minutes into a fresh directory, and
//! runs the real daemon against it with its status endpoint, printing every maintenance-state
//! change the simulated controller makes. Nothing here is used by `run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

use crate::cli::DemoArgs;
use crate::config::{Config, Secret};
use crate::controller::McClient;
use crate::engine::NoLifecycle;

/// The example scenario, shipped with the simulator.
const SCENARIO: &str = include_str!("../../mc-sim/scenarios/demo.toml");
/// The scenario's admin user (may update every organization's cloudlets).
const DEMO_USER: &str = "mexadmin";
const DEMO_PASSWORD: &str = "mexadmin-password";

/// Runs the demo; returns the exit status.
pub fn run(_config: &Config, args: &DemoArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return super::EXIT_FAILED;
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            eprintln!("demo: {e}");
            super::EXIT_FAILED
        }
    }
}

async fn demo(args: &DemoArgs) -> Result<(), String> {
    // reqwest is built without a default TLS provider; the transition printer needs one.
    crate::controller::install_default_crypto_provider();
    let run_for = match &args.run_for {
        Some(d) => Some(crate::diag::parse_duration(d)?),
        None => None,
    };
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("cloudlet-maintd-demo-{}", std::process::id())),
    };
    let windows_dir = dir.join("windows.d");
    std::fs::create_dir_all(&windows_dir)
        .map_err(|e| format!("cannot create {}: {e}", windows_dir.display()))?;

    let scenario = mc_sim::Scenario::from_toml_str(SCENARIO).map_err(|e| e.to_string())?;
    let sim = mc_sim::SimServer::start(scenario, ([127, 0, 0, 1], 0).into())
        .await
        .map_err(|e| e.to_string())?;

    let now = Timestamp::now();
    write_demo_windows(&windows_dir, now)?;

    let mut cfg = Config::default();
    cfg.controller.url = sim.url();
    cfg.controller.username = DEMO_USER.into();
    cfg.controller.maintenance_timeout = Duration::from_secs(30);
    cfg.controller.handshake_timeout = Duration::from_secs(120);
    cfg.schedule.windows_dir = windows_dir.clone();
    cfg.schedule.state_dir = dir.join("state");
    cfg.schedule.lead_margin = Duration::from_secs(15);
    cfg.schedule.lead_min = Duration::from_secs(10);
    cfg.schedule.poll_interval = Duration::from_secs(2);
    cfg.schedule.verify_interval = Duration::from_secs(20);
    cfg.schedule.retry_initial = Duration::from_secs(2);
    cfg.schedule.retry_max = Duration::from_secs(20);
    cfg.schedule.shutdown_grace = Duration::from_secs(10);
    cfg.status.listen = args.listen;
    let client =
        McClient::new(&cfg.controller, Secret::new(DEMO_PASSWORD)).map_err(|e| e.to_string())?;

    println!("cloudlet-maintd demo");
    println!(
        "  controller simulator  {}  (scenario: mc-sim/scenarios/demo.toml, T = 30s)",
        sim.url()
    );
    println!("  windows               {}", windows_dir.display());
    println!("  status                http://{}/v1/status", args.listen);
    println!(
        "  plan                  cloudlet-maintd plan --windows-dir {}",
        windows_dir.display()
    );
    println!(
        "Windows open in 2 to 6 minutes; with T = 30s the worst-case lead is 75s (failover) or 45s."
    );
    println!(
        "Every maintenance-state change the controller makes is printed below. Ctrl-C stops.\n"
    );

    let shutdown = CancellationToken::new();
    if let Some(d) = run_for {
        let s = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            s.cancel();
        });
    }
    let printer = tokio::spawn(print_transitions(sim.url(), shutdown.clone()));
    let result = super::run::run_with(
        cfg,
        Arc::new(client),
        Arc::new(NoLifecycle),
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = printer.await;
    sim.shutdown().await;
    println!("\ndemo files kept in {}", dir.display());
    result.map_err(|e| e.to_string())
}

/// Demo windows relative to `now`, as civil UTC times.
fn write_demo_windows(dir: &Path, now: Timestamp) -> Result<(), String> {
    let at = |mins: i64| -> String {
        let t = crate::timeutil::plus(now, SignedDuration::from_mins(mins));
        t.to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let files: Vec<(PathBuf, String)> = vec![
        (
            dir.join("10-berlin.toml"),
            format!(
                "# Demo: both Berlin cloudlets, with AutoProv failover.\n[[window]]\nid = \"demo-berlin\"\nregion = \"EU\"\ncloudlets = [\"TDG/berlin-1\", \"TDG/berlin-2\"]\nstart = \"{}\"\nduration = \"3m\"\n",
                at(2)
            ),
        ),
        (
            dir.join("20-munich.toml"),
            format!(
                "# Demo: no HA apps in Munich, so no failover (MaintenanceStartNoFailover).\n[[window]]\nid = \"demo-munich\"\nregion = \"EU\"\ncloudlets = [\"TDG/munich-1\"]\nstart = \"{}\"\nduration = \"2m\"\nfailover = false\n",
                at(3)
            ),
        ),
        (
            dir.join("30-us.toml"),
            format!(
                "# Demo: two overlapping windows on one US cloudlet merge into one span.\n[[window]]\nid = \"demo-dallas-a\"\nregion = \"US\"\ncloudlets = [\"Verizon/dallas-1\"]\nstart = \"{}\"\nduration = \"2m\"\n\n[[window]]\nid = \"demo-dallas-b\"\nregion = \"US\"\ncloudlets = [\"Verizon/dallas-1\", \"Verizon/dallas-2\"]\nstart = \"{}\"\nduration = \"2m\"\n",
                at(4),
                at(5)
            ),
        ),
        (
            dir.join("40-paris-recurring.toml"),
            "# Demo: a recurring window every 10 minutes for 3 minutes.\n[[window]]\nid = \"demo-paris\"\nregion = \"EU\"\ncloudlets = [\"Orange/paris-1\"]\ncron = \"*/10 * * * *\"\nduration = \"3m\"\n".to_string(),
        ),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Polls the simulator's history and prints each new maintenance-state change.
async fn print_transitions(sim_url: String, shutdown: CancellationToken) {
    let http = reqwest::Client::new();
    let mut seen = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let Ok(resp) = http.get(format!("{sim_url}/_sim/history")).send().await else {
            continue;
        };
        let Ok(history) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let Some(transitions) = history.get("transitions").and_then(|t| t.as_array()) else {
            continue;
        };
        for t in transitions.iter().skip(seen) {
            let s = |k: &str| t.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let at = s("at");
            let time = at.get(11..19).unwrap_or(&at).to_string();
            println!(
                "{time}  {:<3} {:<20} {:>20} -> {:<20} ({})",
                s("region"),
                format!("{}/{}", s("organization"), s("name")),
                s("from"),
                s("to"),
                s("actor")
            );
        }
        seen = transitions.len();
    }
}
