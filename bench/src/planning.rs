//! Benchmark 3, `planning`: scale of loading and planning, and the daemon idling with it.
//!
//! 10,000 cloudlets with one weekly window each (`lead = "auto"`, crons in five zones), laid out
//! as 10,000 files and as 10 files of 1,000 windows. Measured in this process:
//!
//! - `load_dir` (read, parse, validate) + `plan` over 14 days with the worst-case lead policy,
//!   against reading the same files and `toml::from_str::<toml::Table>` on their bytes (the
//!   ratio is the figure);
//! - a reload after one file changed: `load_dir` with the previous catalog, then `plan` (what
//!   the engine does on a change);
//!
//! and on the real release binary (`cloudlet-maintd run` as a child, against an mc-sim with
//! those 10,000 cloudlets in this process): its resident memory once the first looks are done
//! and it idles (`VmHWM`, `VmRSS`), and its CPU time over a minute of idling.
//!
//! `--load-only` runs the in-process part only (load and plan), without the daemon.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use cloudlet_maintd::config::Config;
use cloudlet_maintd::lead::worst_case_from_config;
use cloudlet_maintd::plan::plan;
use cloudlet_maintd::windows::load_dir;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use crate::daemon::{Daemon, daemon_binary, http, sim_and_dir};
use crate::stats::{
    Table, clock_ticks_per_sec, cpu_ticks, median, mib, proc_status_kib, sample_peaks,
};
use crate::windows_gen::{cloudlet_name, write_weekly};

pub const CLOUDLETS: usize = 10_000;
/// Cloudlets of a `--quick` run.
pub const QUICK_CLOUDLETS: usize = 2_000;
pub const ORGS: usize = 20;

pub fn run(quick: bool) -> Result<()> {
    let reps = if quick { 3 } else { 7 };
    let n = if quick { QUICK_CLOUDLETS } else { CLOUDLETS };
    println!("## planning: {n} cloudlets, one weekly window each, plan 14 days\n");
    println!("{}", crate::machine_line());
    println!("median of {reps} runs each (after one warm-up run: files in the page cache)\n");
    let names: Vec<(String, String)> = (0..n).map(|i| cloudlet_name(i, ORGS)).collect();
    let cfg = Config::default();
    let worst = worst_case_from_config(&cfg);
    let mut t = Table::new(&[
        "layout",
        "bytes",
        "windows / spans",
        "load_dir (read+parse+validate)",
        "plan 14 d",
        "load + plan",
        "read + toml::from_str::<Table>",
        "ratio",
        "toml parse only (in memory)",
        "ratio to parse only",
        "reload, one file changed (load_dir with previous + plan)",
    ]);
    let one_each = format!("{n} files × 1");
    let ten = format!("10 files × {}", n / 10);
    let layouts: &[(&str, usize)] = &[(&one_each, n), (&ten, 10)];
    let mut ratios = Vec::new();
    for &(label, files) in layouts {
        let dir = tempfile::tempdir()?;
        let bytes = write_weekly(dir.path(), &names, files)?;
        let now = Timestamp::now();
        let until = now + SignedDuration::from_hours(24 * 14);
        // Warm-up.
        let warm = load_dir(dir.path(), None, now);
        anyhow::ensure!(
            warm.all_valid(),
            "generated files are invalid: {:?}",
            warm.files
                .iter()
                .find(|f| !f.errors.is_empty())
                .map(|f| &f.errors)
        );
        let mut load_t = Vec::new();
        let mut plan_t = Vec::new();
        let mut spans = 0;
        let mut windows = 0;
        for _ in 0..reps {
            let t0 = Instant::now();
            let catalog = load_dir(dir.path(), None, now);
            let t1 = Instant::now();
            let p = plan(catalog.windows(), &worst, now, until);
            let t2 = Instant::now();
            spans = p.cloudlets.values().map(Vec::len).sum::<usize>();
            windows = catalog.windows().count();
            load_t.push((t1 - t0).as_secs_f64() * 1e3);
            plan_t.push((t2 - t1).as_secs_f64() * 1e3);
        }
        let mut toml_t = Vec::new();
        let mut parse_t = Vec::new();
        let contents = read_all(dir.path())?;
        for _ in 0..reps {
            let t0 = Instant::now();
            let texts = read_all(dir.path())?;
            let mut keys = 0;
            for text in &texts {
                keys += toml::from_str::<toml::Table>(text)?.len();
            }
            toml_t.push(t0.elapsed().as_secs_f64() * 1e3);
            let t0 = Instant::now();
            for text in &contents {
                keys += toml::from_str::<toml::Table>(text)?.len();
            }
            parse_t.push(t0.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(keys);
        }
        // Reload after one file changed.
        let mut reload_t = Vec::new();
        let mut previous = load_dir(dir.path(), None, now);
        // weekly-00003.toml of 10 files, weekly-04242.toml of 10,000 (weekly-00242.toml quick).
        let victim_index = if files == 10 { 3 } else { 4242 % files };
        let victim = dir.path().join(format!("weekly-{victim_index:05}.toml"));
        let original = std::fs::read_to_string(&victim)?;
        for r in 0..reps {
            let changed = original.replacen(
                "duration = \"4h\"",
                if r % 2 == 0 {
                    "duration = \"5h\""
                } else {
                    "duration = \"4h\""
                },
                1,
            );
            std::fs::write(&victim, changed)?;
            let t0 = Instant::now();
            let catalog = load_dir(dir.path(), Some(&previous), now);
            let p = plan(catalog.windows(), &worst, now, until);
            reload_t.push(t0.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(p.cloudlets.len());
            previous = catalog;
        }
        let (l, p, tm, pm) = (
            median(&load_t),
            median(&plan_t),
            median(&toml_t),
            median(&parse_t),
        );
        let lp: Vec<f64> = load_t.iter().zip(&plan_t).map(|(a, b)| a + b).collect();
        let lp = median(&lp);
        ratios.push((label, lp / tm));
        t.row(vec![
            label.to_string(),
            format!("{:.2} MB", bytes as f64 / 1e6),
            format!("{windows} / {spans}"),
            format!("{l:.0} ms"),
            format!("{p:.0} ms"),
            format!("{lp:.0} ms"),
            format!("{tm:.0} ms"),
            format!("**{:.1}×**", lp / tm),
            format!("{pm:.0} ms"),
            format!("{:.1}×", lp / pm),
            format!("{:.0} ms", median(&reload_t)),
        ]);
    }
    t.print();
    for (label, r) in &ratios {
        println!(
            "{label}: load+plan / (read + toml parse) = {r:.1}× (target ≤ 2×: {})",
            if *r <= 2.0 {
                "met".to_string()
            } else {
                format!("missed by {:.1}×", r - 2.0)
            }
        );
    }
    println!();

    if std::env::args().any(|a| a == "--load-only") {
        return Ok(());
    }
    daemon_idle(quick, &names)
}

fn read_all(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| Ok(std::fs::read_to_string(p)?))
        .collect()
}

/// A daemon run: label, number of files, extra environment.
type Layout = (&'static str, usize, &'static [(&'static str, &'static str)]);

/// The real daemon idling with 10,000 cloudlets: RSS and CPU.
fn daemon_idle(quick: bool, names: &[(String, String)]) -> Result<()> {
    let bin = daemon_binary()?;
    let idle = Duration::from_secs(if quick { 10 } else { 60 });
    // The last row is a diagnostic: the same daemon with glibc limited to two malloc arenas,
    // to tell retained heap per thread arena from live data.
    let layouts: &[Layout] = if quick {
        &[("10 files", 10, &[])]
    } else {
        &[
            ("10 files × 1,000", 10, &[]),
            ("10,000 files × 1", CLOUDLETS, &[]),
            (
                "10 files × 1,000, MALLOC_ARENA_MAX=2 (diagnostic)",
                10,
                &[("MALLOC_ARENA_MAX", "2")],
            ),
        ]
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut t = Table::new(&[
        "daemon (`cloudlet-maintd run`, release)",
        "start → first looks done",
        "VmHWM (peak RSS)",
        "VmRSS idle",
        &format!("CPU over {} s idle", idle.as_secs()),
        "open fds: peak (first looks) / idle",
        "threads idle",
        "log warnings / errors",
    ]);
    let mut peaks = Vec::new();
    for &(label, files, env) in layouts {
        let row = rt.block_on(async {
            let (sim, d) = sim_and_dir(names, "5m", json!({}), 50, 10).await?;
            write_weekly(&d.windows(), names, files)?;
            let http = http()?;
            let started = Instant::now();
            let mut daemon = Daemon::start_with_env(&bin, &d, env)?;
            let stop = tokio_util::sync::CancellationToken::new();
            let sampler = tokio::spawn(sample_peaks(daemon.pid(), stop.clone()));
            daemon.wait_healthy(&http, Duration::from_secs(120)).await?;
            let done = daemon
                .wait_observed(
                    &http,
                    names.len() as u64,
                    Duration::from_secs(300),
                    Duration::from_secs(1),
                )
                .await?;
            let settle = done - started;
            stop.cancel();
            let (peak_fds, _) = sampler.await?;
            // Let the last journal writes and status publications finish.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let pid = daemon.pid();
            let tick = clock_ticks_per_sec() as f64;
            let c0 = cpu_ticks(pid).unwrap_or(0);
            let t0 = Instant::now();
            tokio::time::sleep(idle).await;
            let c1 = cpu_ticks(pid).unwrap_or(0);
            let secs = t0.elapsed().as_secs_f64();
            let hwm = proc_status_kib(Some(pid), "VmHWM");
            let rss = proc_status_kib(Some(pid), "VmRSS");
            let threads = proc_status_kib(Some(pid), "Threads").unwrap_or(0);
            let idle_fds = crate::stats::open_fds(pid).unwrap_or(0);
            let (warn, err) = daemon.log_problems();
            daemon.stop()?;
            sim.shutdown().await;
            peaks.push((label, hwm));
            let cpu = (c1.saturating_sub(c0)) as f64 / tick;
            anyhow::Ok(vec![
                format!("{label}, {} cloudlets", names.len()),
                format!("{:.1} s", settle.as_secs_f64()),
                mib(hwm),
                mib(rss),
                format!("{cpu:.2} s CPU = {:.2} %", 100.0 * cpu / secs),
                format!("{peak_fds} / {idle_fds}"),
                threads.to_string(),
                format!("{warn} / {err}"),
            ])
        })?;
        t.row(row);
    }
    t.print();
    for (label, hwm) in peaks {
        let mb = hwm.unwrap_or(0) as f64 / 1024.0;
        println!(
            "{label}: peak RSS {mb:.1} MiB (target ≤ 30 MB: {})",
            if mb <= 30.0 {
                "met".to_string()
            } else {
                format!("missed by {:.1} MiB", mb - 30.0)
            }
        );
    }
    println!();
    Ok(())
}
