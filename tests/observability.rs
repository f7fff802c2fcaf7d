//! What operators see: `/metrics` passes `promtool check metrics`, the timeline page renders in
//! headless Chromium (screenshot saved as a test artifact), `/v1/plan` and `/v1/windows` answer,
//! and `cloudlet-maintd status` turns the API into a table with a monitoring-friendly exit code.
//!
//! The daemon runs in-process here (`commands::run::run_with`, the code `run` uses) against
//! mc-sim on loopback; promtool (Debian `prometheus`) and Chromium (Debian `chromium`) are
//! installed by `.ci/run`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_maintd::config::{Config, Secret};
use cloudlet_maintd::controller::McClient;
use cloudlet_maintd::engine::{NoLifecycle, StatusSnapshot};
use cloudlet_maintd::plan::SpanJson;
use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);

const SCENARIO: &str = r#"
time_scale = 1.0
maintenance_timeout = "2s"
seed = 7

[[users]]
username = "admin"
password = "admin-pw"
roles = [ { org = "", role = "AdminManager" } ]

[[users]]
username = "viewer"
password = "viewer-pw"
roles = [ { org = "TDG", role = "OperatorViewer" } ]

[defaults]
autoprov_latency = { fixed = "100ms" }
crm_latency = { fixed = "100ms" }

[[cloudlets]]
region = "EU"
organization = "TDG"
name = "obs-1"

[[cloudlets]]
region = "EU"
organization = "TDG"
name = "obs-2"
"#;

struct Daemon {
    url: String,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _sim: mc_sim::SimServer,
}

impl Daemon {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn civil_in(secs: i64) -> String {
    let t = Timestamp::now()
        .checked_add(SignedDuration::from_secs(secs))
        .unwrap();
    t.to_zoned(jiff::tz::TimeZone::UTC)
        .strftime("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// mc-sim plus the daemon (in-process), with one window on TDG/obs-1 opening in `open_in`
/// seconds for 3 s, and one on TDG/obs-2 next week.
async fn start(user: &str, password: &str, open_in: i64) -> Daemon {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let scenario = mc_sim::Scenario::from_toml_str(SCENARIO).unwrap();
    let sim = mc_sim::SimServer::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let windows = dir.path().join("windows.d");
    std::fs::create_dir(&windows).unwrap();
    std::fs::write(
        windows.join("10-obs.toml"),
        format!(
            "[[window]]\nid = \"obs-now\"\nregion = \"EU\"\ncloudlets = [\"TDG/obs-1\"]\nstart = \"{}\"\nduration = \"3s\"\nlead = \"3s\"\n\n\
             [[window]]\nid = \"obs-later\"\nregion = \"EU\"\ncloudlets = [\"TDG/obs-2\"]\nstart = \"{}\"\nduration = \"2h\"\n",
            civil_in(open_in),
            civil_in(3 * 86_400)
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = Config::default();
    cfg.controller.url = sim.url();
    cfg.controller.username = user.into();
    cfg.controller.maintenance_timeout = Duration::from_secs(2);
    cfg.controller.handshake_timeout = Duration::from_secs(20);
    cfg.schedule.windows_dir = windows;
    cfg.schedule.state_dir = dir.path().join("state");
    cfg.schedule.lead_margin = Duration::from_secs(1);
    cfg.schedule.poll_interval = Duration::from_millis(200);
    cfg.schedule.verify_interval = Duration::from_secs(1);
    cfg.schedule.retry_initial = Duration::from_millis(200);
    cfg.schedule.retry_max = Duration::from_secs(2);
    cfg.status.listen = ([127, 0, 0, 1], port).into();
    let client = McClient::new(&cfg.controller, Secret::new(password)).unwrap();
    let shutdown = CancellationToken::new();
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        let _ = cloudlet_maintd::commands::run::run_with(
            cfg,
            Arc::new(client),
            Arc::new(NoLifecycle),
            s,
        )
        .await;
    });
    let d = Daemon {
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
        shutdown,
        task,
        _sim: sim,
    };
    wait_for(&d, "healthz", |_| true).await;
    d
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::Client::new().get(url).send().await.unwrap()
}

async fn status(d: &Daemon) -> Option<StatusSnapshot> {
    reqwest::Client::new()
        .get(format!("{}/v1/status", d.url))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Polls `/v1/status` until `cond` holds.
async fn wait_for(
    d: &Daemon,
    what: &str,
    cond: impl Fn(&StatusSnapshot) -> bool,
) -> StatusSnapshot {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(s) = status(d).await
            && !s.last_tick.is_empty()
            && cond(&s)
        {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}; last status: {:?}",
            status(d).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_handshakes() {
    let d = start("admin", "admin-pw", 5).await;
    wait_for(&d, "an on-time entry", |s| s.counts.entries_on_time >= 1).await;
    let resp = get(&format!("{}/metrics", d.url)).await;
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().await.unwrap();
    let file = artifacts().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool must be installed (Debian package prometheus)");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "cloudlet_maintd_handshake_duration_seconds_count{kind=\"enter_failover\",outcome=\"ok\"} 1",
        "cloudlet_maintd_entries_total{timing=\"on_time\"} 1",
        "cloudlet_maintd_config_reload_success 1",
        "cloudlet_maintd_files{state=\"ok\"} 1",
        "cloudlet_maintd_windows 2",
        "cloudlet_maintd_lead_seconds{region=\"EU\",cloudlet=\"TDG/obs-2\"} 5",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(text.contains("cloudlet_maintd_next_action_timestamp_seconds "));
    // Every look the engine started was timed: at least the first looks and the enter.
    let looks: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("cloudlet_maintd_look_lateness_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no look_lateness count in\n{text}"));
    assert!(looks >= 3.0, "{looks} looks timed\n{text}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_windows_routes_answer() {
    let d = start("admin", "admin-pw", 60).await;
    let plan: Vec<SpanJson> = get(&format!("{}/v1/plan", d.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(plan.len(), 2, "{plan:?}");
    assert_eq!(plan[0].cloudlet, "TDG/obs-1");
    assert_eq!(plan[0].windows, ["obs-now"]);
    assert_eq!(plan[0].lead_seconds, 3);
    let only: Vec<SpanJson> = get(&format!("{}/v1/plan?cloudlet=TDG/obs-2", d.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].lead_source, "worst case");
    let none: Vec<SpanJson> = get(&format!("{}/v1/plan?until={}", d.url, civil_in(10)))
        .await
        .json()
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    let bad = get(&format!("{}/v1/plan?from=soonish", d.url)).await;
    assert_eq!(bad.status(), 400);
    let files: serde_json::Value = get(&format!("{}/v1/windows", d.url))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(files[0]["status"], "ok");
    assert_eq!(files[0]["stale"], false);
    assert_eq!(
        files[0]["windows"],
        serde_json::json!(["obs-now", "obs-later"])
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeline_page_renders_in_chromium() {
    let d = start("admin", "admin-pw", 60).await;
    wait_for(&d, "both cloudlets read", |s| {
        s.cloudlets.iter().all(|c| c.observed.is_some()) && s.cloudlets.len() == 2
    })
    .await;
    let page = format!("{}/?hours=168", d.url);
    let profile = tempfile::tempdir().unwrap();
    let shot = artifacts().join("timeline.png");
    let _ = std::fs::remove_file(&shot);
    let chromium = |extra: &[&str]| {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1300,500",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&page)
            .output()
            .expect("chromium must be installed (Debian package chromium)")
    };
    let dom = chromium(&["--dump-dom"]);
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("cloudlet-maintd timeline"), "{dom}");
    assert!(dom.contains("data-cloudlet=\"TDG/obs-1\""), "{dom}");
    assert!(dom.contains("data-cloudlet=\"TDG/obs-2\""), "{dom}");
    assert!(dom.contains("data-windows=\"obs-now\""), "{dom}");
    assert!(dom.contains("data-windows=\"obs-later\""), "{dom}");
    assert!(dom.contains("class=\"now\""), "{dom}");
    assert!(dom.contains(">normal</text>"), "{dom}");
    let out = chromium(&[&format!("--screenshot={}", shot.display())]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 1000,
        "no screenshot at {}: {}",
        shot.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("timeline screenshot: {}", shot.display());
    d.stop().await;
}

fn status_cli(url: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"))
        .args([
            "--config",
            "/nonexistent-on-purpose.toml",
            "status",
            "--url",
            url,
        ])
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_exit_codes() {
    let d = start("admin", "admin-pw", 60).await;
    wait_for(&d, "both cloudlets read", |s| {
        s.cloudlets.iter().all(|c| c.observed.is_some()) && s.cloudlets.len() == 2
    })
    .await;
    // The config file named on the command line must exist: make an empty one.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("empty.toml");
    std::fs::write(&cfg, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"))
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--url", &d.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("TDG/obs-1") && text.contains("NormalOperation"),
        "{text}"
    );
    assert!(text.contains("enter "), "{text}");
    d.stop().await;

    // A daemon whose user may not update: the forbidden alert makes `status` exit 1.
    let v = start("viewer", "viewer-pw", 2).await;
    wait_for(&v, "the forbidden alert", |s| {
        s.alerts.iter().any(|a| a.kind == "forbidden")
    })
    .await;
    let out = Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"))
        .arg("--config")
        .arg(&cfg)
        .args(["status", "--url", &v.url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("ALERT forbidden"), "{text}");
    assert!(text.contains("OperatorManager"), "{text}");
    assert!(!text.contains("viewer-pw"), "{text}");
    v.stop().await;

    // Nothing listening: exit 2.
    let out = status_cli("http://127.0.0.1:9");
    assert_eq!(out.status.code(), Some(2));
}

/// The README's first command, shortened: `demo` starts the simulator and the daemon, serves
/// the status endpoint and the timeline, and stops cleanly when its time is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_starts_serves_and_stops() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"))
        .args([
            "demo",
            "--for",
            "20s",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--dir",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let until = tokio::time::Instant::now() + DEADLINE;
    let status: StatusSnapshot = loop {
        if let Ok(r) = reqwest::Client::new()
            .get(format!("{url}/v1/status"))
            .send()
            .await
            && let Ok(s) = r.json::<StatusSnapshot>().await
            && s.cloudlets.len() == 6
            && s.cloudlets.iter().all(|c| c.observed.is_some())
        {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "demo never served its status"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status.counts.files, 4);
    assert!(status.alerts.is_empty(), "{:?}", status.alerts);
    let page = get(&format!("{url}/")).await.text().await.unwrap();
    assert!(page.contains("data-cloudlet=\"TDG/berlin-1\""));
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("demo did not stop after --for")
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cloudlet-maintd demo"), "{text}");
    assert!(text.contains("demo files kept in"), "{text}");
    assert!(dir.path().join("windows.d/10-berlin.toml").exists());
}
