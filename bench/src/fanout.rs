//! Benchmark 4, `fanout`: 1,000 cloudlets entering at the same instant against mc-sim over HTTP.
//!
//! mc-sim runs in this process (time scale 1.0, T = 30 s, AutoProv and CRM latencies lognormal
//! with a median of 2 s each); the daemon is the real release binary (`cloudlet-maintd run`) as a
//! child. Every cloudlet has a one-off window with a fixed lead whose `enter_at` is the same
//! instant (the edge), far enough ahead that the daemon's first looks are done.
//!
//! Run 1, caps 1,000 / 1,000: time from the edge until every cloudlet is UnderMaintenance
//! (mc-sim's transitions), against the slowest single handshake of that run (from the
//! UpdateCloudlet request's arrival to its UnderMaintenance transition). Run 2, caps 50 / 10
//! over 12 organizations of uneven size: the same, plus the most UpdateCloudlet handshakes in
//! flight at once, globally and per organization, computed from the history (a handshake is in
//! flight from its request's arrival to its last transition; the daemon holds its permit
//! longer, from before sending until after reading back, so these counts cannot exceed what the
//! daemon had in flight).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::daemon::{Daemon, daemon_binary, history, http, sim_and_dir, sim_states};
use crate::stats::{Table, quantile};
use crate::windows_gen::write_one_off;

struct RunResult {
    label: String,
    n: usize,
    entered: usize,
    makespan: f64,
    slowest: f64,
    handshake_p50: f64,
    send_first: f64,
    send_last: f64,
    max_global: usize,
    max_org: usize,
    orgs: usize,
    lower_bound: f64,
    warn_err: (usize, usize),
}

pub fn run(quick: bool) -> Result<()> {
    let n = if quick { 200 } else { 1_000 };
    let median = if quick { "1s" } else { "2s" };
    println!("## fanout: {n} cloudlets entering at the same instant, mc-sim over HTTP\n");
    println!("{}", crate::machine_line());
    println!(
        "mc-sim: time scale 1.0, T = 30 s, AutoProv and CRM latency lognormal median {median}, sigma 0.3 each; daemon: release binary, lead fixed 120 s\n"
    );
    let bin = daemon_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Run 1: 20 equal organizations, caps that never bind.
    let equal: Vec<(String, String)> = (0..n)
        .map(|i| (format!("org-{:02}", i % 20), format!("c-{i:05}")))
        .collect();
    // Run 2: 12 organizations, one large (45 %) and 11 of 5 % each.
    let big = n * 45 / 100;
    let uneven: Vec<(String, String)> = (0..n)
        .map(|i| {
            let org = if i < big { 0 } else { 1 + (i - big) % 11 };
            (format!("org-{org:02}"), format!("c-{i:05}"))
        })
        .collect();
    let mut results = Vec::new();
    for (label, names, cap, per_org) in [
        ("caps 1000 / 1000", &equal, n.max(1000), n.max(1000)),
        ("caps 50 / 10 (12 orgs, one with 45 %)", &uneven, 50, 10),
    ] {
        let started = Instant::now();
        let r = rt.block_on(one_run(&bin, label, names, median, cap, per_org))?;
        eprintln!(
            "fanout: {label} done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        results.push(r);
    }
    let mut t = Table::new(&[
        "run",
        "entered",
        "edge → all UnderMaintenance",
        "slowest handshake",
        "ratio",
        "handshake p50",
        "UpdateCloudlet sent (first / last after edge)",
        "max in flight (global / per org)",
        "lower bound from caps",
        "makespan / bound",
        "daemon log warn / error",
    ]);
    for r in &results {
        t.row(vec![
            r.label.clone(),
            format!("{} / {}", r.entered, r.n),
            format!("{:.1} s", r.makespan),
            format!("{:.1} s", r.slowest),
            format!("**{:.2}×**", r.makespan / r.slowest),
            format!("{:.1} s", r.handshake_p50),
            format!("{:.2} s / {:.2} s", r.send_first, r.send_last),
            format!("{} / {} ({} orgs)", r.max_global, r.max_org, r.orgs),
            format!("{:.1} s", r.lower_bound),
            format!("{:.2}×", r.makespan / r.lower_bound),
            format!("{} / {}", r.warn_err.0, r.warn_err.1),
        ]);
    }
    t.print();
    if let Some(r) = results.first() {
        let ratio = r.makespan / r.slowest;
        println!(
            "caps 1000: edge → all in maintenance / slowest handshake = {ratio:.2}× (target ≤ 1.2×: {})",
            if ratio <= 1.2 {
                "met".to_string()
            } else {
                format!("missed by {:.2}×", ratio - 1.2)
            }
        );
    }
    if let Some(r) = results.get(1) {
        println!(
            "caps 50 / 10: at most {} in flight globally (cap 50: {}), at most {} per organization (cap 10: {})",
            r.max_global,
            if r.max_global <= 50 {
                "held"
            } else {
                "EXCEEDED"
            },
            r.max_org,
            if r.max_org <= 10 { "held" } else { "EXCEEDED" }
        );
    }
    println!();
    Ok(())
}

async fn one_run(
    bin: &std::path::Path,
    label: &str,
    names: &[(String, String)],
    median: &str,
    cap: usize,
    per_org: usize,
) -> Result<RunResult> {
    let n = names.len();
    let latency = json!({"lognormal": {"median": median, "sigma": 0.3}});
    let (sim, d) = sim_and_dir(
        names,
        "30s",
        json!({"autoprov_latency": latency, "crm_latency": latency}),
        cap,
        per_org,
    )
    .await?;
    let url = sim.url();
    let ahead = SignedDuration::from_secs(if n > 500 { 25 } else { 15 });
    let edge = Timestamp::from_millisecond((Timestamp::now() + ahead).as_millisecond())?;
    write_one_off(
        &d.windows(),
        "fan",
        names,
        10,
        |_| edge,
        Duration::from_secs(120),
        "30m",
    )?;
    let http = http()?;
    let mut daemon = Daemon::start(bin, &d)?;
    daemon.wait_healthy(&http, Duration::from_secs(60)).await?;
    daemon
        .wait_observed(
            &http,
            n as u64,
            Duration::from_secs(60),
            Duration::from_millis(500),
        )
        .await?;
    anyhow::ensure!(
        Timestamp::now() < edge,
        "first looks were not done before the edge"
    );
    // Wait until every cloudlet is UnderMaintenance (bounded).
    let deadline = Instant::now() + Duration::from_secs(540);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let states = sim_states(&http, &url).await?;
        let done = states
            .iter()
            .filter(|(_, _, s)| s == "UnderMaintenance")
            .count();
        if done >= n || Instant::now() > deadline {
            break;
        }
    }
    let h = history(&http, &url)
        .await
        .context("reading mc-sim history")?;
    let warn_err = daemon.log_problems();
    daemon.stop()?;
    sim.shutdown().await;

    // Per cloudlet: MaintenanceStart arrival and UnderMaintenance transition.
    let mut sent: HashMap<(String, String), Timestamp> = HashMap::new();
    for r in h.requests.iter().filter(|r| r.is_update()) {
        if let Some(c) = r.cloudlet() {
            sent.entry(c).or_insert(r.at);
        }
    }
    let mut entered: HashMap<(String, String), Timestamp> = HashMap::new();
    for t in h.transitions.iter().filter(|t| t.to == "UnderMaintenance") {
        entered
            .entry((t.organization.clone(), t.name.clone()))
            .or_insert(t.at);
    }
    let secs = |a: Timestamp, b: Timestamp| b.duration_since(a).as_secs_f64();
    let mut intervals: Vec<(String, Timestamp, Timestamp)> = Vec::new();
    let mut handshakes = Vec::new();
    for (c, s) in &sent {
        if let Some(e) = entered.get(c) {
            handshakes.push(secs(*s, *e));
            intervals.push((c.0.clone(), *s, *e));
        }
    }
    let makespan = entered.values().map(|e| secs(edge, *e)).fold(0.0, f64::max);
    let slowest = handshakes.iter().copied().fold(0.0, f64::max);
    let sends: Vec<f64> = sent.values().map(|s| secs(edge, *s)).collect();
    // Sweep for the most handshakes in flight at once.
    let mut events: Vec<(Timestamp, i32, String)> = Vec::new();
    for (org, s, e) in &intervals {
        events.push((*s, 1, org.clone()));
        events.push((*e, -1, org.clone()));
    }
    // Ends before starts at the same instant.
    events.sort_by_key(|e| (e.0, e.1));
    let (mut global, mut max_global) = (0i64, 0i64);
    let mut per: HashMap<String, i64> = HashMap::new();
    let mut max_org = 0i64;
    for (_, d, org) in &events {
        global += i64::from(*d);
        max_global = max_global.max(global);
        let o = per.entry(org.clone()).or_default();
        *o += i64::from(*d);
        max_org = max_org.max(*o);
    }
    // Lower bound on the makespan that the caps allow: all work over the global cap, the
    // largest organization's work over its cap, the slowest single handshake.
    let mut org_work: HashMap<&str, f64> = HashMap::new();
    for (org, s, e) in &intervals {
        *org_work.entry(org.as_str()).or_default() += secs(*s, *e);
    }
    let total: f64 = handshakes.iter().sum();
    let lower_bound = (total / cap.min(n) as f64)
        .max(org_work.values().copied().fold(0.0, f64::max) / per_org.min(n) as f64)
        .max(slowest);
    Ok(RunResult {
        label: label.to_string(),
        n,
        entered: entered.len(),
        makespan,
        slowest,
        handshake_p50: quantile(&handshakes, 0.5).unwrap_or(f64::NAN),
        send_first: sends.iter().copied().fold(f64::INFINITY, f64::min),
        send_last: sends.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        max_global: max_global as usize,
        max_org: max_org as usize,
        orgs: org_work.len(),
        lower_bound,
        warn_err,
    })
}
