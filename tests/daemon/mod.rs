//! Test harness for running the real `cloudlet-maintd run` binary against an in-process `mc-sim`.
//!
//! Why it exists: the daemon's promises ("in maintenance before the window opens", "restored
//! after it ends", "never touches what it did not enter") only mean something end to end: a
//! real process, real files in `windows.d`, a real journal in a state directory, real signals,
//! and a controller spoken to over HTTP on loopback. [`Harness`] owns all of that for one test:
//!
//! - a simulated controller ([`mc_sim::SimServer`] on `127.0.0.1:0`, T = 2 s, latencies of
//!   100–400 ms at time scale 1.0, unless a cloudlet overrides them);
//! - a fresh temp dir with `maintd.toml`, the password file, `windows.d/` and `state/`;
//! - the daemon as a child process (stderr captured to a file per run, killed on drop), started
//!   with [`Harness::start_daemon`] and ready once `GET /healthz` answers 200 for *this* daemon;
//! - readers for the simulator's `/_sim/history` ([`History`]) and the daemon's `/v1/status`.
//!
//! Tests wait on conditions with deadlines ([`Harness::wait_for`], polling every 100 ms), never
//! on elapsed time; the only timed assertions are the product's promises, compared on the
//! simulator's recorded transition times against the window's start and end. Every failure
//! message carries [`Harness::diagnostics`]: the daemon's stderr, the simulator's history and
//! the daemon's status.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use cloudlet_maintd::engine::StatusSnapshot;
use cloudlet_maintd::engine::status::CloudletView;
use jiff::{SignedDuration, Timestamp};
use mc_sim::{Scenario, SimServer};
use serde::Deserialize;
use serde_json::{Value, json};
use tempfile::TempDir;

pub const REGION: &str = "EU";
pub const ORG: &str = "TDG";

/// How long any awaited condition may take before the test fails (a bound, not a measurement).
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(100);

/// The controller's T, in the scenario and in `maintd.toml` alike.
pub const T: SignedDuration = SignedDuration::from_secs(2);
/// `[schedule] lead_margin`.
pub const LEAD_MARGIN: SignedDuration = SignedDuration::from_secs(1);
/// `[schedule] shutdown_grace`.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A controller user of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
}

/// OperatorManager of TDG: may update TDG's cloudlets.
pub const OPERATOR: User = User {
    name: "tdg-ops",
    password: "tdg-ops-secret-pw",
};
/// OperatorViewer of TDG: may show, not update.
pub const VIEWER: User = User {
    name: "tdg-viewer",
    password: "tdg-viewer-secret-pw",
};
/// AdminManager.
pub const ADMIN: User = User {
    name: "mexadmin",
    password: "mexadmin-secret-pw",
};

/// One simulated cloudlet of organization TDG in region EU: its name and extra scenario lines
/// (knobs, initial state), e.g. `("slow-1", r#"crm_latency = { fixed = "1s" }"#)`.
pub type SimCloudlet<'a> = (&'a str, &'a str);

/// Knob lines for a cloudlet whose handshake steps take about a second each (well under T), so
/// that a test can act while a handshake is in flight.
pub const SLOW: &str = r#"autoprov_latency = { uniform = ["900ms", "1100ms"] }
crm_latency = { uniform = ["900ms", "1100ms"] }"#;

/// The scenario text: three users, T = 2 s at time scale 1.0, latencies 100–400 ms.
fn scenario_text(seed: u64, cloudlets: &[SimCloudlet<'_>]) -> String {
    let mut text = format!(
        r#"
time_scale = 1.0
maintenance_timeout = "2s"
seed = {seed}

[[users]]
username = "{op}"
password = "{op_pw}"
roles = [ {{ org = "{ORG}", role = "OperatorManager" }} ]

[[users]]
username = "{viewer}"
password = "{viewer_pw}"
roles = [ {{ org = "{ORG}", role = "OperatorViewer" }} ]

[[users]]
username = "{admin}"
password = "{admin_pw}"
roles = [ {{ org = "", role = "AdminManager" }} ]

[defaults]
autoprov_latency = {{ uniform = ["100ms", "400ms"] }}
crm_latency = {{ uniform = ["100ms", "400ms"] }}
"#,
        op = OPERATOR.name,
        op_pw = OPERATOR.password,
        viewer = VIEWER.name,
        viewer_pw = VIEWER.password,
        admin = ADMIN.name,
        admin_pw = ADMIN.password,
    );
    for (name, extra) in cloudlets {
        text.push_str(&format!(
            "\n[[cloudlets]]\nregion = \"{REGION}\"\norganization = \"{ORG}\"\nname = \"{name}\"\n{extra}\n"
        ));
    }
    text
}

/// A string as a TOML basic string (JSON's escapes are valid TOML).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `TDG/<name>`.
pub fn full(name: &str) -> String {
    format!("{ORG}/{name}")
}

// ---------------------------------------------------------------------------------------------
// Windows

/// How a window sets its lead.
#[derive(Debug, Clone, Copy)]
pub enum Lead {
    /// `lead = "auto"`: with no history, the worst case `2·T + margin` (`T + margin` without
    /// failover).
    Auto,
    /// `lead = "<n>s"`.
    Fixed(i64),
}

/// A one-off window in UTC, starting on a whole second.
#[derive(Debug, Clone)]
pub struct Window {
    pub id: String,
    pub cloudlets: Vec<String>,
    pub start: Timestamp,
    pub duration: SignedDuration,
    pub failover: bool,
    pub lead: Lead,
}

impl Window {
    /// A failover window on `cloudlets` (names in TDG) whose enter time is at least
    /// `enter_in` seconds from now, lasting `duration` seconds.
    pub fn new(id: &str, cloudlets: &[&str], lead: Lead, enter_in: i64, duration: i64) -> Self {
        let mut w = Window {
            id: id.to_string(),
            cloudlets: cloudlets.iter().map(|c| full(c)).collect(),
            start: Timestamp::UNIX_EPOCH,
            duration: SignedDuration::from_secs(duration),
            failover: true,
            lead,
        };
        w.start =
            whole_second_after(Timestamp::now() + w.lead() + SignedDuration::from_secs(enter_in));
        w
    }

    /// The same window with `failover = false` (the start is kept).
    pub fn no_failover(mut self) -> Self {
        self.failover = false;
        self
    }

    /// The same window starting `offset` seconds later than `other` starts.
    pub fn starting_after(mut self, other: &Window, offset: i64) -> Self {
        self.start = other.start + SignedDuration::from_secs(offset);
        self
    }

    /// The lead the daemon uses for this window when it opens a span (no learned history).
    pub fn lead(&self) -> SignedDuration {
        match self.lead {
            Lead::Fixed(s) => SignedDuration::from_secs(s),
            Lead::Auto if self.failover => T * 2 + LEAD_MARGIN,
            Lead::Auto => T + LEAD_MARGIN,
        }
    }

    pub fn enter_at(&self) -> Timestamp {
        self.start - self.lead()
    }

    pub fn end(&self) -> Timestamp {
        self.start + self.duration
    }

    /// The `[[window]]` table.
    pub fn toml(&self) -> String {
        let civil = self
            .start
            .to_zoned(jiff::tz::TimeZone::UTC)
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let cloudlets: Vec<String> = self.cloudlets.iter().map(|c| toml_str(c)).collect();
        let lead = match self.lead {
            Lead::Auto => "auto".to_string(),
            Lead::Fixed(s) => format!("{s}s"),
        };
        format!(
            "[[window]]\nid = {}\nregion = \"{REGION}\"\ncloudlets = [{}]\nstart = \"{civil}\"\ntimezone = \"UTC\"\nduration = \"{}s\"\nfailover = {}\nlead = \"{lead}\"\n\n",
            toml_str(&self.id),
            cloudlets.join(", "),
            self.duration.as_secs(),
            self.failover,
        )
    }
}

/// The first whole second at or after `t`.
fn whole_second_after(t: Timestamp) -> Timestamp {
    let s = t.as_second() + i64::from(t.subsec_nanosecond() > 0);
    Timestamp::from_second(s).expect("a sane time")
}

// ---------------------------------------------------------------------------------------------
// The simulator's history

/// One stored-state change on the simulated controller.
#[derive(Debug, Clone, Deserialize)]
pub struct Transition {
    pub at: Timestamp,
    pub name: String,
    pub from: String,
    pub to: String,
    pub actor: String,
}

impl Transition {
    /// `From→To`, for compact sequence assertions.
    pub fn edge(&self) -> String {
        format!("{}→{}", self.from, self.to)
    }
}

/// One `/api/...` request the simulated controller answered.
#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    pub at: Timestamp,
    pub path: String,
    pub user: Option<String>,
    pub status: u16,
    pub body: Value,
}

impl Request {
    fn is_update(&self) -> bool {
        self.path.ends_with("/ctrl/UpdateCloudlet")
    }

    fn is_login(&self) -> bool {
        self.path.ends_with("/login")
    }

    /// The request body names this cloudlet (UpdateCloudlet, or a Show of exactly it).
    pub fn names(&self, name: &str) -> bool {
        self.body["cloudlet"]["key"]["name"] == name
    }

    /// The `maintenance_state` an UpdateCloudlet asked for.
    pub fn requested(&self) -> &str {
        self.body["cloudlet"]["maintenance_state"]
            .as_str()
            .unwrap_or("?")
    }
}

/// `GET /_sim/history`.
#[derive(Debug, Clone, Deserialize)]
pub struct History {
    pub transitions: Vec<Transition>,
    pub requests: Vec<Request>,
}

impl History {
    pub fn transitions_of(&self, name: &str) -> Vec<&Transition> {
        self.transitions.iter().filter(|t| t.name == name).collect()
    }

    /// The cloudlet's transitions as `From→To` strings, in order.
    pub fn edges_of(&self, name: &str) -> Vec<String> {
        self.transitions_of(name).iter().map(|t| t.edge()).collect()
    }

    /// The first transition of `name` into `to` at or after `after`.
    pub fn first_into(&self, name: &str, to: &str, after: Timestamp) -> Option<&Transition> {
        self.transitions
            .iter()
            .find(|t| t.name == name && t.to == to && t.at >= after)
    }

    /// The last transition of `name` into `to`.
    pub fn last_into(&self, name: &str, to: &str) -> Option<&Transition> {
        self.transitions
            .iter()
            .rev()
            .find(|t| t.name == name && t.to == to)
    }

    /// UpdateCloudlet requests naming `name`, in order.
    pub fn updates_of(&self, name: &str) -> Vec<&Request> {
        self.requests
            .iter()
            .filter(|r| r.is_update() && r.names(name))
            .collect()
    }

    /// UpdateCloudlet requests naming `name` as `(requested state, HTTP status)`.
    pub fn update_summary(&self, name: &str) -> Vec<(String, u16)> {
        self.updates_of(name)
            .iter()
            .map(|r| (r.requested().to_string(), r.status))
            .collect()
    }

    /// Any request naming `name` that got HTTP `status`.
    pub fn count_status(&self, name: &str, status: u16) -> usize {
        self.requests
            .iter()
            .filter(|r| r.names(name) && r.status == status)
            .count()
    }

    pub fn logins(&self) -> Vec<&Request> {
        self.requests.iter().filter(|r| r.is_login()).collect()
    }

    /// Short human lines for failure messages.
    fn describe(&self) -> String {
        let mut out = String::from("--- sim transitions\n");
        for t in &self.transitions {
            out.push_str(&format!("{} {} {} ({})\n", t.at, t.name, t.edge(), t.actor));
        }
        out.push_str("--- sim requests (login and UpdateCloudlet; other non-2xx)\n");
        for r in &self.requests {
            if r.is_login() || r.is_update() || r.status >= 300 {
                out.push_str(&format!(
                    "{} {} {} user={} status={} {}\n",
                    r.at,
                    r.path.rsplit('/').next().unwrap_or_default(),
                    r.body["cloudlet"]["key"]["name"].as_str().unwrap_or(""),
                    r.user.as_deref().unwrap_or("-"),
                    r.status,
                    if r.is_update() { r.requested() } else { "" }
                ));
            }
        }
        out
    }
}

/// Asserts with the harness's diagnostics in the message.
macro_rules! check {
    ($h:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            let context = $h.diagnostics().await;
            panic!("{}\n{}", format!($($fmt)+), context);
        }
    };
}
pub(crate) use check;

/// `assert_eq!` with the harness's diagnostics in the message.
macro_rules! check_eq {
    ($h:expr, $left:expr, $right:expr, $($fmt:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            let context = $h.diagnostics().await;
            panic!(
                "{}\n  left: {:?}\n right: {:?}\n{}",
                format!($($fmt)+),
                left,
                right,
                context
            );
        }
    }};
}
pub(crate) use check_eq;

// ---------------------------------------------------------------------------------------------
// The daemon process

/// One run of the daemon. Killed (SIGKILL) and reaped when dropped.
struct Daemon {
    child: Child,
    base: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Everything one test needs: simulator, files, daemon, HTTP clients.
pub struct Harness {
    // Declared first so that it is dropped (killed) before the temp dir goes away.
    daemon: Option<Daemon>,
    pub sim: SimServer,
    dir: TempDir,
    config: PathBuf,
    http: reqwest::Client,
    /// stderr files of every daemon run, oldest first.
    runs: Vec<PathBuf>,
}

impl Harness {
    /// Starts the simulator with `cloudlets` and writes the daemon's config for `user`.
    pub async fn new(seed: u64, user: User, cloudlets: &[SimCloudlet<'_>]) -> Harness {
        let scenario = Scenario::from_toml_str(&scenario_text(seed, cloudlets))
            .unwrap_or_else(|e| panic!("bad test scenario: {e}"));
        let sim = SimServer::start(scenario, "127.0.0.1:0".parse().expect("loopback"))
            .await
            .expect("simulator starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let password_file = dir.path().join("mc-password");
        std::fs::write(&password_file, format!("{}\n", user.password)).expect("password file");
        std::fs::create_dir(dir.path().join("windows.d")).expect("windows.d");
        std::fs::create_dir(dir.path().join("state")).expect("state dir");
        let config = dir.path().join("maintd.toml");
        let text = format!(
            r#"[controller]
url = {url}
username = {user}
password_file = {pw}
maintenance_timeout = "2s"
connect_timeout = "2s"
request_timeout = "5s"
handshake_timeout = "20s"

[schedule]
windows_dir = {windows}
state_dir = {state}
lead_margin = "1s"
lead_min = "1s"
poll_interval = "200ms"
verify_interval = "1s"
retry_initial = "200ms"
retry_max = "2s"
restore_attempts = 3
shutdown_grace = "5s"

[status]
listen = "127.0.0.1:{port}"

[log]
filter = "info,cloudlet_maintd=debug"
"#,
            url = toml_str(&sim.url()),
            user = toml_str(user.name),
            pw = toml_str(&password_file.display().to_string()),
            windows = toml_str(&dir.path().join("windows.d").display().to_string()),
            state = toml_str(&dir.path().join("state").display().to_string()),
            port = free_port(),
        );
        std::fs::write(&config, text).expect("maintd.toml");
        // reqwest is built without a default TLS provider; a plain client needs one installed
        // (installing twice is harmless).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Harness {
            daemon: None,
            sim,
            dir,
            config,
            http,
            runs: Vec::new(),
        }
    }

    pub fn windows_dir(&self) -> PathBuf {
        self.dir.path().join("windows.d")
    }

    /// Writes `windows.d/<file>` atomically (a hidden temp file, which the daemon ignores,
    /// renamed into place), so that the file watcher never sees half a file.
    pub fn write_file(&self, file: &str, text: &str) {
        let tmp = self.windows_dir().join(format!(".{file}.writing"));
        std::fs::write(&tmp, text).expect("write window file");
        std::fs::rename(&tmp, self.windows_dir().join(file)).expect("rename window file");
    }

    /// Writes `windows.d/<file>` with these windows.
    pub fn write_windows(&self, file: &str, windows: &[&Window]) {
        let text: String = windows.iter().map(|w| w.toml()).collect();
        self.write_file(file, &text);
    }

    pub fn remove_file(&self, file: &str) {
        std::fs::remove_file(self.windows_dir().join(file)).expect("remove window file");
    }

    /// Starts `cloudlet-maintd --config maintd.toml run --listen 127.0.0.1:<free port>` and waits
    /// until its `/healthz` answers 200 and its `/v1/status` names this test's windows dir (so a
    /// daemon of another test that took the port is never mistaken for ours). A port lost to a
    /// race is retried with another one.
    pub async fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "a daemon is already running");
        for _attempt in 0..5 {
            let port = free_port();
            let stderr_path = self
                .dir
                .path()
                .join(format!("daemon-{}.stderr", self.runs.len() + 1));
            let stderr = File::create(&stderr_path).expect("stderr file");
            let stdout = stderr.try_clone().expect("stderr file");
            self.runs.push(stderr_path.clone());
            let child = Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"))
                .arg("--config")
                .arg(&self.config)
                .arg("run")
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .env_remove("RUST_LOG")
                .env_remove("CREDENTIALS_DIRECTORY")
                .env_remove("NOTIFY_SOCKET")
                .env_remove("WATCHDOG_USEC")
                .env_remove("WATCHDOG_PID")
                .spawn()
                .expect("the daemon binary starts");
            self.daemon = Some(Daemon {
                child,
                base: format!("http://127.0.0.1:{port}"),
            });
            if self.wait_ready().await {
                return;
            }
            self.daemon = None;
            let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            if !text.contains("cannot listen") {
                panic!(
                    "the daemon exited before it was ready\n{}",
                    self.diagnostics().await
                );
            }
        }
        panic!("no free status port after 5 attempts");
    }

    /// True once ready; false if the process exited first.
    async fn wait_ready(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        let ours = self.windows_dir().display().to_string();
        loop {
            let daemon = self.daemon.as_mut().expect("daemon");
            if daemon.child.try_wait().expect("try_wait").is_some() {
                return false;
            }
            let base = daemon.base.clone();
            let healthy = matches!(
                self.http.get(format!("{base}/healthz")).send().await,
                Ok(r) if r.status() == 200
            );
            if healthy
                && let Ok(r) = self.http.get(format!("{base}/v1/status")).send().await
                && let Ok(s) = r.json::<StatusSnapshot>().await
                && s.windows_dir == ours
            {
                return true;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "the daemon did not become ready within {DEADLINE:?}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("the daemon is running")
    }

    pub fn pid(&self) -> u32 {
        self.daemon().child.id()
    }

    /// Sends a signal by name (`HUP`, `TERM`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// SIGKILL, and reap.
    pub fn sigkill(&mut self) {
        let mut daemon = self.daemon.take().expect("the daemon is running");
        daemon.child.kill().expect("SIGKILL");
        daemon.child.wait().expect("reap");
    }

    /// Waits (up to `within`) for the daemon to exit by itself; `None` if it is still running.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let daemon = self.daemon.as_mut().expect("the daemon is running");
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                // Reaped already: nothing left for Drop to kill.
                self.daemon = None;
                return Some(status);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the daemon wrote to stderr, all runs.
    pub fn stderr(&self) -> String {
        self.runs
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    // -----------------------------------------------------------------------------------------
    // The simulator's control API

    pub async fn sim_get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}{path}", self.sim.url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn sim_post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.sim.url()))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "POST {path} {body}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Merges knobs into one cloudlet at run time.
    pub async fn set_knobs(&self, name: &str, knobs: Value) {
        self.sim_post(
            "/_sim/knobs",
            json!({"region": REGION, "organization": ORG, "name": name, "knobs": knobs}),
        )
        .await;
    }

    /// A person sets the stored state by hand.
    pub async fn set_state_by_hand(&self, name: &str, state: &str) {
        self.sim_post(
            "/_sim/state",
            json!({"region": REGION, "organization": ORG, "name": name, "maintenance_state": state}),
        )
        .await;
    }

    pub async fn expire_tokens(&self) {
        self.sim_post("/_sim/expire_tokens", json!({})).await;
    }

    pub async fn history(&self) -> History {
        serde_json::from_value(self.sim_get("/_sim/history").await).expect("history parses")
    }

    /// The stored maintenance state of a cloudlet, as the simulator has it now.
    pub async fn sim_state(&self, name: &str) -> String {
        let all = self.sim_get("/_sim/cloudlets").await;
        all.as_array()
            .into_iter()
            .flatten()
            .find(|c| c["name"] == name)
            .and_then(|c| c["maintenance_state"].as_str())
            .unwrap_or_else(|| panic!("no cloudlet {name} in the simulator"))
            .to_string()
    }

    // -----------------------------------------------------------------------------------------
    // The daemon's status endpoint

    async fn daemon_get(&self, path: &str) -> Result<reqwest::Response, String> {
        let base = &self.daemon.as_ref().ok_or("no daemon running")?.base;
        self.http
            .get(format!("{base}{path}"))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))
    }

    /// `GET /healthz`'s status code.
    pub async fn healthz(&self) -> u16 {
        self.daemon_get("/healthz")
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> StatusSnapshot {
        let r = self
            .daemon_get("/v1/status")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200, "GET /v1/status");
        r.json().await.expect("status parses")
    }

    /// `GET /v1/status`, the entry of one cloudlet (None when the daemon does not list it).
    pub async fn cloudlet_status(&self, name: &str) -> Option<CloudletView> {
        let key = full(name);
        self.status()
            .await
            .cloudlets
            .into_iter()
            .find(|c| c.region == REGION && c.cloudlet == key)
            .map(|c| (*c).clone())
    }

    /// `GET /v1/cloudlets/EU/TDG/<name>`: (HTTP status, body).
    pub async fn cloudlet_route(&self, name: &str) -> (u16, Value) {
        let r = self
            .daemon_get(&format!("/v1/cloudlets/{REGION}/{ORG}/{name}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    // -----------------------------------------------------------------------------------------
    // Waiting

    /// Polls `check` every [`POLL`] until it yields a value; fails the test (with diagnostics)
    /// after [`DEADLINE`].
    pub async fn wait_for<T>(&self, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out after {DEADLINE:?} waiting for: {what}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for a transition of `name` into `to` at or after `after`; returns it.
    pub async fn wait_transition(&self, name: &str, to: &str, after: Timestamp) -> Transition {
        self.wait_for(&format!("{name} → {to} after {after}"), async || {
            self.history().await.first_into(name, to, after).cloned()
        })
        .await
    }

    /// Waits until the daemon's status entry of `name` satisfies `pred`; returns it.
    pub async fn wait_status(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(&CloudletView) -> bool,
    ) -> CloudletView {
        self.wait_for(&format!("status of {name}: {what}"), async || {
            self.cloudlet_status(name).await.filter(|c| pred(c))
        })
        .await
    }

    /// Sleeps until the wall clock reaches `t` (an instant of the plan, e.g. a window's end).
    pub async fn sleep_until(&self, t: Timestamp) {
        let left = t.duration_since(Timestamp::now());
        if left.is_positive() {
            tokio::time::sleep(left.unsigned_abs()).await;
        }
    }

    /// Asserts the product's two promises for one window on one cloudlet, from the simulator's
    /// recorded transitions: the last enter into UnderMaintenance before the window's end
    /// happened before its start (and not before its enter time), and the restore after it
    /// began (NormalOperationInit) no earlier than its end and ended in NormalOperation.
    pub async fn check_on_time(&self, name: &str, w: &Window) {
        let h = self.history().await;
        let entered = h
            .transitions_of(name)
            .into_iter()
            .rfind(|t| t.to == "UnderMaintenance" && t.at < w.end());
        check!(
            self,
            entered.is_some(),
            "{name} was never entered for {}",
            w.id
        );
        let entered = entered.expect("checked");
        check!(
            self,
            entered.at < w.start,
            "{name} reached UnderMaintenance at {} — not before the window's start {}",
            entered.at,
            w.start
        );
        self.check_restored_after(name, w.end(), &h).await;
    }

    /// The cloudlet's last restore started (NormalOperationInit) at or after `end` and reached
    /// NormalOperation; nothing left it before `end`.
    pub async fn check_restored_after(&self, name: &str, end: Timestamp, h: &History) {
        let init = h.last_into(name, "NormalOperationInit");
        let normal = h.last_into(name, "NormalOperation");
        check!(
            self,
            init.is_some() && normal.is_some(),
            "{name} was not restored"
        );
        let (init, normal) = (init.expect("checked"), normal.expect("checked"));
        check!(
            self,
            init.at >= end && normal.at >= init.at,
            "{name}: restore began at {} and ended at {}, expected both after the end {end}",
            init.at,
            normal.at
        );
        check_eq!(
            self,
            self.sim_state(name).await,
            "NormalOperation",
            "{name} is not in NormalOperation at the end"
        );
    }

    /// The daemon's stderr (all runs), the simulator's history and the daemon's status.
    pub async fn diagnostics(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("=== now {}\n", Timestamp::now()));
        for (i, run) in self.runs.iter().enumerate() {
            let text = std::fs::read_to_string(run).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let skip = lines.len().saturating_sub(200);
            out.push_str(&format!(
                "=== daemon run {} stderr ({} lines{})\n",
                i + 1,
                lines.len(),
                if skip > 0 { ", last 200" } else { "" }
            ));
            for l in &lines[skip..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        match self
            .http
            .get(format!("{}/_sim/history", self.sim.url()))
            .send()
            .await
        {
            Ok(r) => match r.json::<History>().await {
                Ok(h) => out.push_str(&h.describe()),
                Err(e) => out.push_str(&format!("--- sim history unreadable: {e}\n")),
            },
            Err(e) => out.push_str(&format!("--- sim history unreachable: {e}\n")),
        }
        match self.daemon_get("/v1/status").await {
            Ok(r) => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                let brief = json!({
                    "files": v["files"], "counts": v["counts"], "alerts": v["alerts"],
                    "cloudlets": v["cloudlets"], "last_reload": v["last_reload"],
                });
                out.push_str(&format!(
                    "--- daemon status\n{}\n",
                    serde_json::to_string_pretty(&brief).unwrap_or_default()
                ));
            }
            Err(e) => out.push_str(&format!("--- daemon status: {e}\n")),
        }
        out
    }
}
