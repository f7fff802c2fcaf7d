//! Benchmark 5, `status-load`: the status endpoint under load while the engine keeps its timing.
//!
//! The setup of `planning` (10,000 cloudlets, 10 files of 1,000 weekly windows, mc-sim in this
//! process, the release daemon as a child). Once its first looks are done, a file of one-off
//! windows is dropped into `windows.d` (the daemon reloads) whose `enter_at` edges fall into
//! four phases: an idle baseline, then `wrk` against `/v1/status`, `/v1/cloudlets` and
//! `/metrics` in turn. An edge's lateness is the arrival at mc-sim of the daemon's first
//! ShowCloudlet for that cloudlet at or after the edge (the worker acting on it; this includes a
//! loopback HTTP request), and of its UpdateCloudlet.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::daemon::{Daemon, daemon_binary, history, http, sim_and_dir};
use crate::planning::{CLOUDLETS, ORGS, QUICK_CLOUDLETS};
use crate::stats::{Table, ms, spread};
use crate::windows_gen::{cloudlet_name, write_one_off, write_weekly};

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: String,
}

pub fn run(quick: bool) -> Result<()> {
    let phase = Duration::from_secs(if quick { 5 } else { 15 });
    let gap = Duration::from_secs(if quick { 2 } else { 3 });
    let per_phase = if quick { 30 } else { 100 };
    let (threads, conns) = (2, 8);
    let n = if quick { QUICK_CLOUDLETS } else { CLOUDLETS };
    println!("## status-load: status endpoint under wrk with {n} cloudlets\n");
    println!("{}", crate::machine_line());
    println!(
        "wrk -t{threads} -c{conns} -d{}s --latency per endpoint; {per_phase} edges due during each phase (and during an idle baseline before); mc-sim latencies fixed 200 ms\n",
        phase.as_secs()
    );
    if Command::new("wrk").arg("--version").output().is_err() {
        bail!("wrk not found: apt-get install wrk");
    }
    let bin = daemon_binary()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let names: Vec<(String, String)> = (0..n).map(|i| cloudlet_name(i, ORGS)).collect();
        let fixed = json!({"fixed": "200ms"});
        let (sim, d) = sim_and_dir(
            &names,
            "5m",
            json!({"autoprov_latency": fixed, "crm_latency": fixed}),
            50,
            10,
        )
        .await?;
        let url = sim.url();
        write_weekly(&d.windows(), &names, 10)?;
        let http = http()?;
        let mut daemon = Daemon::start(&bin, &d)?;
        daemon.wait_healthy(&http, Duration::from_secs(120)).await?;
        daemon
            .wait_observed(
                &http,
                n as u64,
                Duration::from_secs(300),
                Duration::from_secs(1),
            )
            .await?;

        let endpoints = ["/v1/status", "/v1/cloudlets", "/metrics"];
        let mut sizes = Vec::new();
        for e in endpoints {
            let body = http
                .get(format!("{}{e}", daemon.base))
                .send()
                .await?
                .bytes()
                .await?;
            sizes.push(body.len());
        }

        // Phases: 0 = idle baseline, 1.. = wrk on endpoints[k-1].
        let p0 = Timestamp::from_millisecond(
            (Timestamp::now() + SignedDuration::from_secs(if quick { 10 } else { 20 }))
                .as_millisecond(),
        )?;
        let phase_s = SignedDuration::try_from(phase)?;
        let step = SignedDuration::try_from(phase + gap)?;
        let phase_start = |k: usize| p0 + step * (k as i32);
        let edge_of = |i: usize| {
            let k = i / per_phase;
            let j = i % per_phase;
            let span = phase_s - SignedDuration::from_secs(2);
            phase_start(k)
                + SignedDuration::from_secs(1)
                + SignedDuration::from_nanos(span.as_nanos() as i64 * j as i64 / per_phase as i64)
        };
        let edge_names: Vec<(String, String)> = names[..4 * per_phase].to_vec();
        // Millisecond edges (the civil start carries milliseconds).
        let edges: Vec<Timestamp> = (0..edge_names.len())
            .map(|i| Timestamp::from_millisecond(edge_of(i).as_millisecond()))
            .collect::<Result<_, _>>()?;
        write_one_off(
            &d.windows(),
            "zz-edges",
            &edge_names,
            1,
            |i| edges[i],
            Duration::from_secs(60),
            "10m",
        )?;

        let mut wrk_results = Vec::new();
        for (k, e) in endpoints.iter().enumerate() {
            let start = phase_start(k + 1);
            let wait = start.duration_since(Timestamp::now());
            if wait.is_positive() {
                tokio::time::sleep(wait.unsigned_abs()).await;
            }
            let url = format!("{}{e}", daemon.base);
            let secs = phase.as_secs().to_string();
            let out = tokio::task::spawn_blocking(move || {
                Command::new("wrk")
                    .args([
                        &format!("-t{threads}"),
                        &format!("-c{conns}"),
                        &format!("-d{secs}s"),
                        "--timeout",
                        "10s",
                        "--latency",
                        &url,
                    ])
                    .output()
            })
            .await??;
            wrk_results.push(parse_wrk(&String::from_utf8_lossy(&out.stdout))?);
        }
        let last = edges.iter().max().copied().unwrap_or(p0);
        // Long enough to also see looks that come only at the span's start (edge + 60 s);
        // --quick waits 10 s.
        let tail = SignedDuration::from_secs(if quick { 10 } else { 75 });
        let wait = (last + tail).duration_since(Timestamp::now());
        if wait.is_positive() {
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
        let h = history(&http, &url)
            .await
            .context("reading mc-sim history")?;
        // `BENCH_DEBUG`: keep the daemon's view of the edge cloudlets (for diagnosing).
        let views: Vec<serde_json::Value> = if std::env::var_os("BENCH_DEBUG").is_some() {
            http.get(format!("{}/v1/cloudlets", daemon.base))
                .send()
                .await?
                .json()
                .await?
        } else {
            Vec::new()
        };
        let problems = daemon.log_problems();
        daemon.stop()?;
        sim.shutdown().await;

        // First Show / Update per edge cloudlet at or after its edge (100 ms slack for early).
        let index: HashMap<(String, String), usize> = edge_names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, c)| (c, i))
            .collect();
        let mut show: Vec<Option<f64>> = vec![None; edges.len()];
        let mut update: Vec<Option<f64>> = vec![None; edges.len()];
        for r in &h.requests {
            let Some(i) = r.cloudlet().and_then(|c| index.get(&c).copied()) else {
                continue;
            };
            let late = r.at.duration_since(edges[i]).as_secs_f64() * 1e3;
            if late < -100.0 {
                continue;
            }
            let slot = if r.is_show() {
                &mut show[i]
            } else if r.is_update() {
                &mut update[i]
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(late);
            }
        }

        for (i, c) in edge_names.iter().enumerate() {
            if show[i].is_some_and(|l| l <= 1000.0) || views.is_empty() {
                continue;
            }
            let view = views.iter().find(|v| {
                v.get("cloudlet").and_then(|x| x.as_str()) == Some(&format!("{}/{}", c.0, c.1))
            });
            let seen: Vec<String> = h
                .requests
                .iter()
                .filter(|r| r.cloudlet().as_ref() == Some(c))
                .map(|r| {
                    format!(
                        "{} {:+.0} ms",
                        r.path.rsplit('/').next().unwrap_or(""),
                        r.at.duration_since(edges[i]).as_secs_f64() * 1e3
                    )
                })
                .collect();
            eprintln!(
                "edge {i} {c:?} at {}: requests {seen:?}\n  view {}",
                edges[i],
                view.map(|v| v.to_string()).unwrap_or_default()
            );
        }
        let mut t = Table::new(&[
            "phase",
            "response size",
            "requests/s",
            "latency p50 / p99",
            "wrk errors",
            "edges acted on ≤ 1 s / later / not by the end (of due)",
            "edge → ShowCloudlet p50 / p99 / max",
            "edge → UpdateCloudlet p50 / p99 / max",
        ]);
        for k in 0..4 {
            let range = k * per_phase..(k + 1) * per_phase;
            let s: Vec<f64> = show[range.clone()].iter().flatten().copied().collect();
            let u: Vec<f64> = update[range].iter().flatten().copied().collect();
            let (a, b, c) = spread(&s, ms);
            let (x, y, z) = spread(&u, ms);
            let (label, size, rps, lat, err) = if k == 0 {
                (
                    "idle (no load)".to_string(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                    "–".into(),
                )
            } else {
                let w = &wrk_results[k - 1];
                (
                    format!("wrk {}", endpoints[k - 1]),
                    format!("{:.2} MB", sizes[k - 1] as f64 / 1e6),
                    format!("{:.1}", w.rps),
                    format!("{} / {}", ms(w.p50_ms), ms(w.p99_ms)),
                    w.errors.clone(),
                )
            };
            t.row(vec![
                label,
                size,
                rps,
                lat,
                err,
                {
                    let soon = s.iter().filter(|l| **l <= 1000.0).count();
                    format!(
                        "{soon} / {} / {} (of {per_phase})",
                        s.len() - soon,
                        per_phase - s.len()
                    )
                },
                format!("{a} / {b} / {c}"),
                format!("{x} / {y} / {z}"),
            ]);
        }
        t.print();
        println!(
            "daemon log: {} warnings, {} errors\n",
            problems.0, problems.1
        );
        anyhow::Ok(())
    })
}

fn parse_wrk(out: &str) -> Result<Wrk> {
    let unit_ms = |v: &str| -> Option<f64> {
        let v = v.trim();
        let (num, mult) = if let Some(x) = v.strip_suffix("us") {
            (x, 1e-3)
        } else if let Some(x) = v.strip_suffix("ms") {
            (x, 1.0)
        } else if let Some(x) = v.strip_suffix('s') {
            (x, 1e3)
        } else if let Some(x) = v.strip_suffix('m') {
            (x, 60e3)
        } else {
            (v, 1.0)
        };
        num.parse::<f64>().ok().map(|n| n * mult)
    };
    let mut w = Wrk {
        rps: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        errors: "0".into(),
    };
    let mut errors = Vec::new();
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            w.rps = v.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(v) = l.strip_prefix("50%") {
            w.p50_ms = unit_ms(v).unwrap_or(f64::NAN);
        } else if let Some(v) = l.strip_prefix("99%") {
            w.p99_ms = unit_ms(v).unwrap_or(f64::NAN);
        } else if l.starts_with("Socket errors") || l.starts_with("Non-2xx") {
            errors.push(l.to_string());
        }
    }
    if !errors.is_empty() {
        w.errors = errors.join("; ");
    }
    if w.rps.is_nan() {
        bail!("could not read wrk's output:\n{out}");
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:1/metrics\n  2 threads and 8 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency     2.10ms  500.00us  10.00ms   90.00%\n  Latency Distribution\n     50%    1.95ms\n     75%    2.20ms\n     90%    2.60ms\n     99%    4.10ms\n  9000 requests in 5.00s, 1.00MB read\nRequests/sec:   1800.00\nTransfer/sec:    200.00KB\n";
        let w = super::parse_wrk(out).unwrap();
        assert_eq!(w.rps, 1800.0);
        assert!((w.p50_ms - 1.95).abs() < 1e-9 && (w.p99_ms - 4.1).abs() < 1e-9);
        assert_eq!(w.errors, "0");
    }
}
