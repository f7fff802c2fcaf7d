//! Benchmark 2, `firing`: 10,000 edges due at the same instant, and 10,000 spread over a
//! minute, through our timer loop (the real engine, [`cloudlet_maintd::engine::spawn`], with
//! [`SystemClock`], real window files and a journal on disk) and through tokio-cron-scheduler
//! 0.15 (`JobScheduler::new`, `Job::new_one_shot_at_instant`, `add`, `start`, as its docs show).
//!
//! Each side runs in its own child process of this binary, so that its peak RSS (`VmHWM`) is
//! its own. Our side uses a stub controller inside this crate that records, per cloudlet, the
//! wall-clock instant of every `show_cloudlet`: the engine reads every cloudlet once at start
//! (the first look), so the **second** show of a cloudlet is the worker acting on its edge.
//! Two stubs:
//!
//! - `ours`: show answers `UnderMaintenance` (not owned: a person's), so at the edge the worker
//!   reads, decides "external, leave it" and stops: this isolates the timer loop and the
//!   worker spawn.
//! - `ours-enter`: show answers `NormalOperation` until `set_maintenance` (instant) flips it to
//!   `UnderMaintenance`: the full enter path, which writes the journal (atomic file + fsync)
//!   before sending; the instant of `set_maintenance` is "UpdateCloudlet sent". The caps are
//!   raised to 10,000 so that they do not hide the engine's own cost.
//!
//! "Fired" is, for ours, the start of the worker for the edge as the engine's
//! `Lifecycle::look_started` hook sees it (the counterpart of a tokio-cron-scheduler job
//! starting); the stub's show is reported beside it ("read at the stub": one step later, behind
//! the read cap `max_concurrent_reads`), and lost edges are counted from those reads.
//!
//! The edges are `now + ahead` (and, spread, `+ i × 60 s / n`), far enough ahead that
//! registration and first looks are done; the child says how much margin was left.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cloudlet_maintd::config::Config;
use cloudlet_maintd::controller::{
    ClientError, CloudletKey, CloudletStatus, Controller, MaintenanceState, MaintenanceTarget,
};
use cloudlet_maintd::engine::{
    self, EngineParts, EngineSettings, Lifecycle, StatusSnapshot, SystemClock,
};
use cloudlet_maintd::journal::{JournalHandle, JournalStore};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::stats::{Table, mib, ms, quantile, spread};
use crate::windows_gen::{cloudlet_name, write_one_off};

/// What a child reports (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    side: String,
    pattern: String,
    n: usize,
    /// Load + plan (ours: engine start until the first plan is built), or adding the jobs.
    register_ms: f64,
    /// Time left between "first looks done" and the first edge (ours only).
    margin_ms: Option<f64>,
    /// Per fired edge: fire instant − edge instant, in ms (negative: early). Ours: the start
    /// of the worker for the edge (the engine's `Lifecycle::look_started` hook), the
    /// counterpart of a tokio-cron-scheduler job starting.
    lateness_ms: Vec<f64>,
    /// Ours: the worker's ShowCloudlet reaching the stub − edge, in ms (the first thing a
    /// worker does; behind the read cap). Lost edges are counted from these.
    read_ms: Vec<f64>,
    /// ours-enter: UpdateCloudlet sent − edge, in ms.
    sent_ms: Vec<f64>,
    vm_hwm_kib: Option<u64>,
    note: String,
}

pub fn run(quick: bool) -> Result<()> {
    // --quick: fewer edges, a 10 s spread, a shorter wait for lost edges, no enter-path row.
    let (n, ahead, spread_secs, grace_secs) = if quick {
        (2_000, 6, 10, 5)
    } else {
        (10_000, 20, 60, 30)
    };
    let sides: &[&str] = if quick {
        &["ours", "tcs"]
    } else {
        &["ours", "ours-enter", "tcs"]
    };
    println!("## firing: {n} edges through our timer loop and through tokio-cron-scheduler 0.15\n");
    println!("{}", crate::machine_line());
    println!(
        "edges {ahead} s after the child starts; \"same\": all at one instant; \"spread\": evenly over {spread_secs} s; lost = not fired {grace_secs} s after the last edge. Each row is its own child process.\n"
    );
    let exe = std::env::current_exe()?;
    let mut reports = Vec::new();
    for pattern in ["same", "spread"] {
        for &side in sides {
            let started = Instant::now();
            let out = Command::new(&exe)
                .args([
                    "firing-child",
                    side,
                    pattern,
                    &n.to_string(),
                    &ahead.to_string(),
                    &spread_secs.to_string(),
                    &grace_secs.to_string(),
                ])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .with_context(|| format!("running the {side} child"))?;
            if !out.status.success() {
                bail!("the {side}/{pattern} child failed: {}", out.status);
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let report: ChildReport =
                serde_json::from_str(text.lines().last().context("the child printed nothing")?)?;
            eprintln!(
                "firing: {side}/{pattern} done in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            reports.push(report);
        }
    }
    let mut t = Table::new(&[
        "side",
        "edges",
        "register",
        "fired / lost",
        "early (count, earliest)",
        "fired (worker start) p50 / p99 / max",
        "read at the stub p50 / p99 / max",
        "UpdateCloudlet sent p50 / p99 / max",
        "peak RSS (VmHWM)",
        "notes",
    ]);
    for r in &reports {
        let fired = if r.side.starts_with("ours") {
            r.read_ms.len()
        } else {
            r.lateness_ms.len()
        };
        let early: Vec<f64> = r.lateness_ms.iter().copied().filter(|l| *l < 0.0).collect();
        let early_text = if early.is_empty() {
            "0".to_string()
        } else {
            format!(
                "{}, {}",
                early.len(),
                ms(early.iter().copied().fold(f64::INFINITY, f64::min))
            )
        };
        let (p50, p99, max) = spread(&r.lateness_ms, ms);
        let read = if r.read_ms.is_empty() {
            "–".to_string()
        } else {
            let (a, b, c) = spread(&r.read_ms, ms);
            format!("{a} / {b} / {c}")
        };
        let sent = if r.sent_ms.is_empty() {
            "–".to_string()
        } else {
            let (a, b, c) = spread(&r.sent_ms, ms);
            format!("{a} / {b} / {c}")
        };
        let side = match r.side.as_str() {
            "ours" => "ours (stub: external, timer path only)",
            "ours-enter" => "ours (stub: enters, journal + send)",
            _ => "tokio-cron-scheduler 0.15.1",
        };
        let mut note = r.note.clone();
        if let Some(m) = r.margin_ms {
            note = format!(
                "first looks done {:.1} s before the first edge. {note}",
                m / 1000.0
            );
        }
        t.row(vec![
            side.to_string(),
            format!("{} {}", r.n, r.pattern),
            ms(r.register_ms),
            format!("{fired} / {}", r.n - fired.min(r.n)),
            early_text,
            format!("{p50} / {p99} / {max}"),
            read,
            sent,
            mib(r.vm_hwm_kib),
            note.trim().to_string(),
        ]);
    }
    t.print();
    for r in reports.iter().filter(|r| r.side == "ours") {
        let p99 = quantile(&r.lateness_ms, 0.99).unwrap_or(f64::NAN);
        let lost = r.n - r.read_ms.len().min(r.n);
        println!(
            "ours, {}: {lost} lost (target 0: {}), p99 lateness (worker start) {} (target ≤ 5 ms: {})",
            r.pattern,
            if lost == 0 { "met" } else { "missed" },
            ms(p99),
            if p99 <= 5.0 {
                "met".to_string()
            } else {
                format!("missed by {}", ms(p99 - 5.0))
            }
        );
    }
    println!();
    Ok(())
}

/// `firing-child SIDE PATTERN N AHEAD_SECS`
pub fn child(args: &[&str]) -> Result<()> {
    let [side, pattern, n, ahead, spread_secs, grace_secs] = args else {
        bail!("usage: firing-child SIDE PATTERN N AHEAD_SECS SPREAD_SECS GRACE_SECS");
    };
    let spread_ns: i64 = spread_secs.parse::<i64>()? * 1_000_000_000;
    let grace = SignedDuration::from_secs(grace_secs.parse()?);
    let n: usize = n.parse()?;
    let ahead = Duration::from_secs(ahead.parse()?);
    // Whole milliseconds: window files carry civil times to the millisecond.
    let base = Timestamp::from_millisecond(
        (Timestamp::now() + SignedDuration::try_from(ahead)?).as_millisecond(),
    )?;
    let spread = *pattern == "spread";
    let edges: Vec<Timestamp> = (0..n)
        .map(|i| {
            if spread {
                base + SignedDuration::from_nanos((i as i64) * spread_ns / n as i64)
            } else {
                base
            }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = match *side {
        "ours" => runtime.block_on(ours(false, Duration::ZERO, &edges, grace))?,
        "ours-enter" => runtime.block_on(ours(true, Duration::ZERO, &edges, grace))?,
        // Not part of the standard run: enters taking 400 ms under the default caps.
        "ours-slow" => runtime.block_on(ours(true, Duration::from_millis(400), &edges, grace))?,
        "tcs" => runtime.block_on(tcs(&edges, grace))?,
        other => bail!("unknown side {other}"),
    };
    drop(runtime);
    report.side = side.to_string();
    report.pattern = pattern.to_string();
    report.n = n;
    report.vm_hwm_kib = crate::stats::proc_status_kib(None, "VmHWM");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn nanos(t: Timestamp) -> i64 {
    i64::try_from(t.as_nanosecond()).unwrap_or(i64::MAX)
}

/// The stub controller of our side.
struct Stub {
    enter: bool,
    /// How long `set_maintenance` takes (the `ours-slow` variant).
    handshake: Duration,
    shows: Vec<AtomicU32>,
    /// Wall-clock ns of the second show (the edge look); 0 = not yet.
    edge_show: Vec<AtomicI64>,
    sent: Vec<AtomicI64>,
    state: Vec<AtomicU8>,
    first_looks: AtomicU32,
}

impl Stub {
    fn index(key: &CloudletKey) -> Option<usize> {
        key.name.strip_prefix("c-")?.parse().ok()
    }
}

impl Controller for Stub {
    async fn show_cloudlet(
        &self,
        region: &str,
        key: &CloudletKey,
    ) -> Result<CloudletStatus, ClientError> {
        let now = nanos(Timestamp::now());
        let i = Stub::index(key).unwrap_or(0);
        let seen = self.shows[i].fetch_add(1, Ordering::SeqCst);
        if seen == 0 {
            self.first_looks.fetch_add(1, Ordering::SeqCst);
        } else if seen == 1 {
            self.edge_show[i].store(now, Ordering::SeqCst);
        }
        let state = if !self.enter || self.state[i].load(Ordering::SeqCst) == 1 {
            MaintenanceState::UnderMaintenance
        } else {
            MaintenanceState::NormalOperation
        };
        Ok(CloudletStatus {
            region: region.to_string(),
            key: key.clone(),
            maintenance_state: state,
            tracked_state: Some("Ready".into()),
        })
    }

    async fn set_maintenance(
        &self,
        _region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        _progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ClientError> {
        let now = nanos(Timestamp::now());
        let i = Stub::index(key).unwrap_or(0);
        let _ = self.sent[i].compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
        if !self.handshake.is_zero() {
            tokio::time::sleep(self.handshake).await;
        }
        let value = u8::from(target != MaintenanceTarget::Normal);
        self.state[i].store(value, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct Planned {
    at: OnceLock<Instant>,
    /// Every look the engine started: (due, started).
    looks: std::sync::Mutex<Vec<(Timestamp, Timestamp)>>,
}

impl Lifecycle for Planned {
    fn planned(&self, _status: &StatusSnapshot) {
        let _ = self.at.set(Instant::now());
    }
    fn look_started(&self, due: Timestamp, started: Timestamp) {
        if let Ok(mut looks) = self.looks.lock() {
            looks.push((due, started));
        }
    }
}

async fn ours(
    enter: bool,
    handshake: Duration,
    edges: &[Timestamp],
    grace: SignedDuration,
) -> Result<ChildReport> {
    let n = edges.len();
    let dir = tempfile::tempdir()?;
    let windows = dir.path().join("windows.d");
    let state = dir.path().join("state");
    std::fs::create_dir(&windows)?;
    let names: Vec<(String, String)> = (0..n).map(|i| cloudlet_name(i, 20)).collect();
    write_one_off(
        &windows,
        "edge",
        &names,
        10,
        |i| edges[i],
        Duration::from_secs(600),
        "1h",
    )?;

    let mut cfg = Config::default();
    cfg.schedule.windows_dir = windows.clone();
    cfg.schedule.state_dir = state.clone();
    if handshake.is_zero() {
        cfg.schedule.max_concurrent = n;
        cfg.schedule.max_concurrent_per_org = n;
    }
    let stub = Arc::new(Stub {
        enter,
        handshake,
        shows: (0..n).map(|_| AtomicU32::new(0)).collect(),
        edge_show: (0..n).map(|_| AtomicI64::new(0)).collect(),
        sent: (0..n).map(|_| AtomicI64::new(0)).collect(),
        state: (0..n).map(|_| AtomicU8::new(0)).collect(),
        first_looks: AtomicU32::new(0),
    });
    let (store, journal, _) = JournalStore::open(&state)?;
    let journal = JournalHandle::spawn(store, journal);
    let lifecycle = Arc::new(Planned::default());
    let parts = EngineParts {
        controller: Arc::clone(&stub),
        clock: Arc::new(SystemClock),
        journal,
        corrupt_journal: None,
        settings: EngineSettings::from_config(&cfg),
        lifecycle: Arc::clone(&lifecycle),
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let spawned = Instant::now();
    let (handle, join) =
        engine::spawn(parts, engine::command_channel(), shutdown.clone(), &tracker);

    // First looks: every cloudlet read once, and no worker busy any more.
    let mut status = handle.status.clone();
    let first = edges[0];
    let mut looks_done = None;
    while Timestamp::now() < first {
        let busy = status.borrow_and_update().counts.busy;
        if stub.first_looks.load(Ordering::SeqCst) as usize >= n && busy == 0 {
            looks_done = Some(Timestamp::now());
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), status.changed()).await;
    }
    let register_ms = lifecycle
        .at
        .get()
        .map_or(f64::NAN, |t| t.duration_since(spawned).as_secs_f64() * 1e3);
    let margin_ms = looks_done.map(|t| first.duration_since(t).as_secs_f64() * 1e3);

    // Wait for every edge look (and send), or `grace` after the last edge.
    let deadline = edges[n - 1] + grace;
    loop {
        let shows = stub
            .edge_show
            .iter()
            .filter(|a| a.load(Ordering::SeqCst) != 0)
            .count();
        let sends = stub
            .sent
            .iter()
            .filter(|a| a.load(Ordering::SeqCst) != 0)
            .count();
        if (shows >= n && (!enter || sends >= n)) || Timestamp::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), join).await;

    let late = |slots: &[AtomicI64]| -> Vec<f64> {
        slots
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                let t = a.load(Ordering::SeqCst);
                (t != 0).then(|| (t - nanos(edges[i])) as f64 / 1e6)
            })
            .collect()
    };
    Ok(ChildReport {
        side: String::new(),
        pattern: String::new(),
        n,
        register_ms,
        margin_ms,
        // Looks due at an edge (the first looks were due at the engine's start, before).
        lateness_ms: lifecycle
            .looks
            .lock()
            .map(|looks| {
                looks
                    .iter()
                    .filter(|(due, _)| *due >= edges[0])
                    .map(|(due, started)| started.duration_since(*due).as_secs_f64() * 1e3)
                    .collect()
            })
            .unwrap_or_default(),
        read_ms: late(&stub.edge_show),
        sent_ms: if enter { late(&stub.sent) } else { Vec::new() },
        vm_hwm_kib: None,
        note: if looks_done.is_none() {
            "first looks NOT done before the first edge".into()
        } else {
            String::new()
        },
    })
}

async fn tcs(edges: &[Timestamp], grace: SignedDuration) -> Result<ChildReport> {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let n = edges.len();
    let fired: Arc<Vec<AtomicI64>> = Arc::new((0..n).map(|_| AtomicI64::new(0)).collect());
    let sched = JobScheduler::new().await?;
    let started = Instant::now();
    let wall = Timestamp::now();
    for (i, edge) in edges.iter().enumerate() {
        let until = edge.duration_since(wall).unsigned_abs();
        let at = started + until;
        let fired = Arc::clone(&fired);
        let job = Job::new_one_shot_at_instant(at, move |_id, _lock| {
            let _ = fired[i].compare_exchange(
                0,
                nanos(Timestamp::now()),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        })?;
        sched.add(job).await?;
    }
    let register_ms = started.elapsed().as_secs_f64() * 1e3;
    sched.start().await?;
    let deadline = edges[n - 1] + grace;
    loop {
        let count = fired
            .iter()
            .filter(|a| a.load(Ordering::SeqCst) != 0)
            .count();
        if count >= n || Timestamp::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sched = sched;
    let _ = tokio::time::timeout(Duration::from_secs(10), sched.shutdown()).await;
    let lateness_ms = fired
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let t = a.load(Ordering::SeqCst);
            (t != 0).then(|| (t - nanos(edges[i])) as f64 / 1e6)
        })
        .collect();
    Ok(ChildReport {
        side: String::new(),
        pattern: String::new(),
        n,
        register_ms,
        margin_ms: None,
        lateness_ms,
        read_ms: Vec::new(),
        sent_ms: Vec::new(),
        vm_hwm_kib: None,
        note: if Timestamp::now() > edges[0]
            && register_ms > edges[0].duration_since(wall).as_secs_f64() * 1e3
        {
            "registration outlasted the first edge".into()
        } else {
            String::new()
        },
    })
}
