//! The real `cloudlet-maintd run` as a child process, against an mc-sim in this process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use crate::windows_gen::{PASSWORD, USER};

/// The release `cloudlet-maintd` binary next to this one. Under `cargo run` it is (re)built
/// first with the same cargo, so it is never stale; `MAINTD_BIN` overrides the path.
pub fn daemon_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("MAINTD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory of the bench binary")?;
    let bin = dir.join("cloudlet-maintd");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "cloudlet-maintd",
            "--bin",
            "cloudlet-maintd",
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("building cloudlet-maintd")?;
        if !status.success() {
            bail!("building cloudlet-maintd failed: {status}");
        }
    }
    if !bin.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p cloudlet-maintd) or set MAINTD_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

pub fn http() -> Result<reqwest::Client> {
    // reqwest is built without a default TLS provider; plain http still wants one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Settings of one daemon run.
pub struct DaemonConfig<'a> {
    pub sim_url: &'a str,
    pub maintenance_timeout: &'a str,
    pub max_concurrent: usize,
    pub max_concurrent_per_org: usize,
}

/// mc-sim on loopback with `names` (T = `maintenance_timeout`, `knobs` as every cloudlet's
/// defaults) and a daemon directory that points at it with these caps. The server must live as
/// long as the daemon.
pub async fn sim_and_dir(
    names: &[(String, String)],
    maintenance_timeout: &str,
    knobs: Value,
    max_concurrent: usize,
    max_concurrent_per_org: usize,
) -> Result<(mc_sim::SimServer, DaemonDir)> {
    let sim = mc_sim::SimServer::start(
        crate::windows_gen::scenario(names, maintenance_timeout, knobs)?,
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let dir = DaemonDir::new(&DaemonConfig {
        sim_url: &sim.url(),
        maintenance_timeout,
        max_concurrent,
        max_concurrent_per_org,
    })?;
    Ok((sim, dir))
}

/// A temp dir with `maintd.toml`, the password file, `windows.d/` and `state/`.
pub struct DaemonDir {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub port: u16,
}

impl DaemonDir {
    pub fn new(c: &DaemonConfig<'_>) -> Result<DaemonDir> {
        let dir = tempfile::tempdir()?;
        let pw = dir.path().join("mc-password");
        std::fs::write(&pw, format!("{PASSWORD}\n"))?;
        std::fs::create_dir(dir.path().join("windows.d"))?;
        std::fs::create_dir(dir.path().join("state"))?;
        let port = free_port()?;
        let q = |p: &Path| toml::Value::String(p.display().to_string()).to_string();
        let text = format!(
            r#"[controller]
url = "{url}"
username = "{USER}"
password_file = {pw}
maintenance_timeout = "{t}"

[schedule]
windows_dir = {windows}
state_dir = {state}
max_concurrent = {max}
max_concurrent_per_org = {per_org}

[status]
listen = "127.0.0.1:{port}"

[log]
filter = "info"
"#,
            url = c.sim_url,
            pw = q(&pw),
            t = c.maintenance_timeout,
            windows = q(&dir.path().join("windows.d")),
            state = q(&dir.path().join("state")),
            max = c.max_concurrent,
            per_org = c.max_concurrent_per_org,
        );
        let config = dir.path().join("maintd.toml");
        std::fs::write(&config, text)?;
        Ok(DaemonDir { dir, config, port })
    }

    pub fn windows(&self) -> PathBuf {
        self.dir.path().join("windows.d")
    }
}

/// A running daemon (killed on drop if still running).
pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(bin: &Path, d: &DaemonDir) -> Result<Daemon> {
        Daemon::start_with_env(bin, d, &[])
    }

    /// [`Daemon::start`] with extra environment variables (diagnostic runs).
    pub fn start_with_env(bin: &Path, d: &DaemonDir, env: &[(&str, &str)]) -> Result<Daemon> {
        let log = d.dir.path().join("daemon.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&d.config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("CREDENTIALS_DIRECTORY")
            .spawn()
            .context("starting cloudlet-maintd")?;
        Ok(Daemon {
            child,
            base: format!("http://127.0.0.1:{}", d.port),
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for `/healthz` (bounded).
    pub async fn wait_healthy(&mut self, http: &reqwest::Client, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                bail!("the daemon exited: {s}; log:\n{}", self.log_tail());
            }
            if let Ok(r) = http.get(format!("{}/healthz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the daemon was not healthy within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sum of `cloudlet_maintd_cloudlets{state=…}` (cloudlets with an observed state).
    pub async fn observed(&self, http: &reqwest::Client) -> Result<u64> {
        let text = http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("cloudlet_maintd_cloudlets{"))
            // Cloudlets not read yet are counted as state "Unknown".
            .filter(|l| !l.contains("state=\"Unknown\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64)
    }

    /// Waits until `n` cloudlets have an observed state (the first looks are done), polling
    /// every `every`; returns when that was seen.
    pub async fn wait_observed(
        &mut self,
        http: &reqwest::Client,
        n: u64,
        within: Duration,
        every: Duration,
    ) -> Result<Instant> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait()? {
                bail!("the daemon exited: {s}; log:\n{}", self.log_tail());
            }
            if self.observed(http).await.unwrap_or(0) >= n {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "the daemon did not read all {n} cloudlets within {within:?} (saw {})",
                    self.observed(http).await.unwrap_or(0)
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// SIGTERM, then wait (bounded), then SIGKILL.
    pub fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(())
    }

    /// Warning and error lines in the log.
    pub fn log_problems(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let warn = text.lines().filter(|l| l.contains(" WARN ")).count();
        let err = text.lines().filter(|l| l.contains("ERROR")).count();
        (warn, err)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// mc-sim's `/_sim/history`, the parts the benchmarks read.
#[derive(Debug, Deserialize)]
pub struct History {
    pub transitions: Vec<HTransition>,
    pub requests: Vec<HRequest>,
}

#[derive(Debug, Deserialize)]
pub struct HTransition {
    pub at: Timestamp,
    pub organization: String,
    pub name: String,
    pub to: String,
}

#[derive(Debug, Deserialize)]
pub struct HRequest {
    pub at: Timestamp,
    pub path: String,
    #[serde(default)]
    pub body: Value,
}

impl HRequest {
    /// `(organization, name)` of the cloudlet a Show/Update request names.
    pub fn cloudlet(&self) -> Option<(String, String)> {
        let key = self.body.get("cloudlet")?.get("key")?;
        Some((
            key.get("organization")?.as_str()?.to_string(),
            key.get("name")?.as_str()?.to_string(),
        ))
    }

    pub fn is_update(&self) -> bool {
        self.path.ends_with("/UpdateCloudlet")
    }

    pub fn is_show(&self) -> bool {
        self.path.ends_with("/ShowCloudlet")
    }
}

pub async fn history(http: &reqwest::Client, sim_url: &str) -> Result<History> {
    let r = http.get(format!("{sim_url}/_sim/history")).send().await?;
    Ok(r.json().await?)
}

/// `(organization, name, maintenance_state)` of every simulated cloudlet.
pub async fn sim_states(
    http: &reqwest::Client,
    sim_url: &str,
) -> Result<Vec<(String, String, String)>> {
    let v: Vec<Value> = http
        .get(format!("{sim_url}/_sim/cloudlets"))
        .send()
        .await?
        .json()
        .await?;
    Ok(v.into_iter()
        .filter_map(|c| {
            Some((
                c.get("organization")?.as_str()?.to_string(),
                c.get("name")?.as_str()?.to_string(),
                c.get("maintenance_state")?.as_str()?.to_string(),
            ))
        })
        .collect())
}
