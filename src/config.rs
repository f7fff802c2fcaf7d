//! The daemon's own configuration (`maintd.toml`).
//!
//! Every key has a default, so a missing file is fine for `check` and `plan`; a present file is
//! validated as strictly as a window file (unknown keys with hints, `file:line:col` errors), since
//! a typo here silently changing a timeout would be worse than refusing to start. Secrets are
//! never stored in this struct's `Debug` output: only the password *file* path lives here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diag::{self, Diagnostic};

/// Default location of the config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cloudlet-maintd/maintd.toml";
/// Default status listen address: loopback, on a port outside the 9100–10000 range that
/// Prometheus exporters conventionally take.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:7647";
/// Default controller URL: `mc-sim`'s default listen address (loopback only by design).
pub const DEFAULT_CONTROLLER_URL: &str = "http://127.0.0.1:9900";
/// Name of the systemd credential that may carry the controller password.
pub const PASSWORD_CREDENTIAL: &str = "mc-password";

/// Validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the config was read from (`None`: built-in defaults, the file did not exist).
    pub source: Option<PathBuf>,
    pub controller: ControllerConfig,
    pub schedule: ScheduleConfig,
    pub status: StatusConfig,
    pub log: LogConfig,
}

/// How to reach and authenticate to the Master Controller.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerConfig {
    /// Base URL of the console, without `/api/v1` (e.g. `https://console.example.net`).
    pub url: String,
    pub username: String,
    /// File holding the password. The systemd credential `mc-password` in
    /// `$CREDENTIALS_DIRECTORY` takes precedence when present.
    pub password_file: Option<PathBuf>,
    /// Extra CA certificate(s) in PEM to trust for the controller's TLS certificate.
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification. Exists only as an explicit, loudly logged option.
    pub insecure_skip_verify: bool,
    /// The controller's `cloudlet_maintenance_timeout` T (applies to each wait separately).
    pub maintenance_timeout: Duration,
    /// Time allowed to establish a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Total time allowed for login and show requests.
    pub request_timeout: Duration,
    /// Total time allowed for one UpdateCloudlet handshake; default 2·T + 2 min.
    pub handshake_timeout: Duration,
}

/// Planning and engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    pub windows_dir: PathBuf,
    pub state_dir: PathBuf,
    /// How far ahead the plan looks.
    pub horizon: Duration,
    pub lead_min: Duration,
    pub lead_max: Duration,
    /// Added to the learned handshake quantile, and to the protocol worst case.
    pub lead_margin: Duration,
    /// Quantile of recent enter durations used for `lead = "auto"` (0.5–1.0).
    pub lead_quantile: f64,
    /// Multiplier applied to the quantile before the margin is added (≥ 1.0).
    pub lead_safety_factor: f64,
    /// How many recent enter durations per cloudlet and kind are kept.
    pub lead_history: usize,
    pub max_concurrent: usize,
    pub max_concurrent_per_org: usize,
    /// ShowCloudlet reads in flight at once (first looks, polls, verifies), apart from the
    /// handshake caps: a read is short, but 10,000 at once would open 10,000 connections.
    pub max_concurrent_reads: usize,
    pub shutdown_grace: Duration,
    /// How often a cloudlet is read again while a handshake runs server-side.
    pub poll_interval: Duration,
    /// How often a cloudlet in a span is read again to notice people acting by hand.
    pub verify_interval: Duration,
    /// First retry delay after a failed request (doubles, with jitter, up to `retry_max`).
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Restore attempts before the daemon stops sending and only watches (with an alert).
    pub restore_attempts: u32,
}

/// The status endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusConfig {
    pub listen: SocketAddr,
    /// Bearer token required on every request when set (mandatory off loopback unless
    /// `allow_unauthenticated`). Redacted in `Debug`.
    pub token: Option<Secret>,
    pub allow_unauthenticated: bool,
}

/// Logging defaults (the `RUST_LOG` environment variable overrides `filter`).
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub filter: String,
}

/// A string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Default for Config {
    fn default() -> Self {
        let maintenance_timeout = Duration::from_secs(300);
        Config {
            source: None,
            controller: ControllerConfig {
                url: DEFAULT_CONTROLLER_URL.to_string(),
                username: "cloudlet-maintd".to_string(),
                password_file: None,
                ca_file: None,
                insecure_skip_verify: false,
                maintenance_timeout,
                connect_timeout: Duration::from_secs(10),
                request_timeout: Duration::from_secs(30),
                handshake_timeout: default_handshake_timeout(maintenance_timeout),
            },
            schedule: ScheduleConfig {
                windows_dir: PathBuf::from("/etc/cloudlet-maintd/windows.d"),
                state_dir: PathBuf::from("/var/lib/cloudlet-maintd"),
                horizon: Duration::from_secs(14 * 86_400),
                lead_min: Duration::from_secs(60),
                lead_max: Duration::from_secs(30 * 60),
                lead_margin: Duration::from_secs(60),
                lead_quantile: 0.95,
                lead_safety_factor: 2.4,
                lead_history: 50,
                max_concurrent: 50,
                max_concurrent_per_org: 10,
                max_concurrent_reads: 64,
                shutdown_grace: Duration::from_secs(30),
                poll_interval: Duration::from_secs(10),
                verify_interval: Duration::from_secs(300),
                retry_initial: Duration::from_secs(5),
                retry_max: Duration::from_secs(120),
                restore_attempts: 5,
            },
            status: StatusConfig {
                listen: DEFAULT_STATUS_LISTEN
                    .parse()
                    .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7647))),
                token: None,
                allow_unauthenticated: false,
            },
            log: LogConfig {
                filter: "info".to_string(),
            },
        }
    }
}

/// 2·T + 2 min: the longest a MaintenanceStart handshake can legitimately take, plus slack.
pub fn default_handshake_timeout(maintenance_timeout: Duration) -> Duration {
    maintenance_timeout * 2 + Duration::from_secs(120)
}

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read config: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One or more precise findings; all are reported, not just the first.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl Config {
    /// Loads `path`. A missing file yields the defaults when `missing_ok` (the default path);
    /// a file named explicitly on the command line must exist.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Invalid(vec![diag::from_toml_error(path, text, &e)]))?;
        let mut v = Validator {
            path,
            text,
            errors: Vec::new(),
        };
        let mut cfg = Config {
            source: Some(path.to_path_buf()),
            ..Config::default()
        };

        let c = raw.controller;
        let cc = &mut cfg.controller;
        if let Some(url) = c.url
            && let Some(u) = v.url(&url)
        {
            cc.url = u;
        }
        if let Some(u) = c.username {
            if u.get_ref().trim().is_empty() {
                v.err(&u, "username must not be empty");
            } else {
                cc.username = u.into_inner();
            }
        }
        cc.password_file = c.password_file.map(|p| PathBuf::from(p.into_inner()));
        cc.ca_file = c.ca_file.map(|p| PathBuf::from(p.into_inner()));
        cc.insecure_skip_verify = c.insecure_skip_verify.unwrap_or(false);
        v.duration_into(&c.maintenance_timeout, &mut cc.maintenance_timeout);
        v.duration_into(&c.connect_timeout, &mut cc.connect_timeout);
        v.duration_into(&c.request_timeout, &mut cc.request_timeout);
        cc.handshake_timeout = default_handshake_timeout(cc.maintenance_timeout);
        v.duration_into(&c.handshake_timeout, &mut cc.handshake_timeout);
        if let Some(h) = &c.handshake_timeout
            && cc.handshake_timeout < cc.maintenance_timeout
        {
            v.err(
                h,
                format!(
                    "handshake_timeout ({}) is shorter than maintenance_timeout ({}): exits would be cut off before the controller answers",
                    humantime::format_duration(cc.handshake_timeout),
                    humantime::format_duration(cc.maintenance_timeout)
                ),
            );
        }

        let s = raw.schedule;
        let sc = &mut cfg.schedule;
        if let Some(d) = s.windows_dir {
            sc.windows_dir = PathBuf::from(d.into_inner());
        }
        if let Some(d) = s.state_dir {
            sc.state_dir = PathBuf::from(d.into_inner());
        }
        v.duration_into(&s.horizon, &mut sc.horizon);
        v.duration_into(&s.lead_min, &mut sc.lead_min);
        v.duration_into(&s.lead_max, &mut sc.lead_max);
        v.duration_into(&s.lead_margin, &mut sc.lead_margin);
        if sc.lead_max < sc.lead_min
            && let Some(span) = s.lead_max.as_ref().or(s.lead_min.as_ref())
        {
            v.err(span, "lead_max must not be shorter than lead_min");
        }
        if let Some(q) = &s.lead_quantile {
            if (0.5..=1.0).contains(q.get_ref()) {
                sc.lead_quantile = *q.get_ref();
            } else {
                v.err(q, "lead_quantile must be between 0.5 and 1.0");
            }
        }
        if let Some(f) = &s.lead_safety_factor {
            if (1.0..=10.0).contains(f.get_ref()) {
                sc.lead_safety_factor = *f.get_ref();
            } else {
                v.err(f, "lead_safety_factor must be between 1.0 and 10.0");
            }
        }
        v.count_into(&s.lead_history, &mut sc.lead_history, "lead_history");
        v.count_into(&s.max_concurrent, &mut sc.max_concurrent, "max_concurrent");
        v.count_into(
            &s.max_concurrent_per_org,
            &mut sc.max_concurrent_per_org,
            "max_concurrent_per_org",
        );
        v.count_into(
            &s.max_concurrent_reads,
            &mut sc.max_concurrent_reads,
            "max_concurrent_reads",
        );
        v.duration_into(&s.shutdown_grace, &mut sc.shutdown_grace);
        v.duration_into(&s.poll_interval, &mut sc.poll_interval);
        v.duration_into(&s.verify_interval, &mut sc.verify_interval);
        v.duration_into(&s.retry_initial, &mut sc.retry_initial);
        v.duration_into(&s.retry_max, &mut sc.retry_max);
        let mut attempts = sc.restore_attempts as usize;
        v.count_into(&s.restore_attempts, &mut attempts, "restore_attempts");
        sc.restore_attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
        if sc.retry_max < sc.retry_initial
            && let Some(span) = s.retry_max.as_ref().or(s.retry_initial.as_ref())
        {
            v.err(span, "retry_max must not be shorter than retry_initial");
        }

        let st = raw.status;
        if let Some(l) = &st.listen {
            match l.get_ref().parse::<SocketAddr>() {
                Ok(addr) => cfg.status.listen = addr,
                Err(_) => v.err(
                    l,
                    format!(
                        "invalid listen address \"{}\"; expected IP:PORT such as \"{DEFAULT_STATUS_LISTEN}\"",
                        l.get_ref()
                    ),
                ),
            }
        }
        cfg.status.token = st.token.map(|t| Secret::new(t.into_inner()));
        cfg.status.allow_unauthenticated = st.allow_unauthenticated.unwrap_or(false);

        if let Some(f) = raw.log.filter {
            cfg.log.filter = f.into_inner();
        }

        if v.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid(v.errors))
        }
    }
}

struct Validator<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<Diagnostic>,
}

impl Validator<'_> {
    fn err<T>(&mut self, at: &Spanned<T>, message: impl Into<String>) {
        self.errors.push(Diagnostic::at_span(
            self.path,
            self.text,
            Some(at.span()),
            message,
        ));
    }

    fn duration_into(&mut self, value: &Option<Spanned<String>>, target: &mut Duration) {
        let Some(value) = value else { return };
        match diag::parse_duration(value.get_ref()) {
            Ok(d) if d.is_zero() => self.err(value, "duration must be greater than zero"),
            Ok(d) => *target = d,
            Err(msg) => self.err(value, msg),
        }
    }

    fn count_into(&mut self, value: &Option<Spanned<i64>>, target: &mut usize, key: &str) {
        let Some(value) = value else { return };
        match usize::try_from(*value.get_ref()) {
            Ok(n) if n > 0 => *target = n,
            _ => self.err(value, format!("{key} must be a positive integer")),
        }
    }

    fn url(&mut self, url: &Spanned<String>) -> Option<String> {
        let u = url.get_ref().trim().trim_end_matches('/');
        let u = u.strip_suffix("/api/v1").unwrap_or(u);
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() < 9 {
            self.err(
                url,
                format!(
                    "invalid controller url \"{}\"; expected http(s)://HOST[:PORT]",
                    url.get_ref()
                ),
            );
            return None;
        }
        Some(u.to_string())
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    controller: RawController,
    schedule: RawSchedule,
    status: RawStatus,
    log: RawLog,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawController {
    url: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    insecure_skip_verify: Option<bool>,
    maintenance_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    handshake_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawSchedule {
    windows_dir: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    horizon: Option<Spanned<String>>,
    lead_min: Option<Spanned<String>>,
    lead_max: Option<Spanned<String>>,
    lead_margin: Option<Spanned<String>>,
    lead_quantile: Option<Spanned<f64>>,
    lead_safety_factor: Option<Spanned<f64>>,
    lead_history: Option<Spanned<i64>>,
    max_concurrent: Option<Spanned<i64>>,
    max_concurrent_per_org: Option<Spanned<i64>>,
    max_concurrent_reads: Option<Spanned<i64>>,
    shutdown_grace: Option<Spanned<String>>,
    poll_interval: Option<Spanned<String>>,
    verify_interval: Option<Spanned<String>>,
    retry_initial: Option<Spanned<String>>,
    retry_max: Option<Spanned<String>>,
    restore_attempts: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawStatus {
    listen: Option<Spanned<String>>,
    token: Option<Spanned<String>>,
    allow_unauthenticated: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    filter: Option<Spanned<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("maintd.toml"), text)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.controller.maintenance_timeout, Duration::from_secs(300));
        assert_eq!(cfg.controller.handshake_timeout, Duration::from_secs(720));
        assert!(cfg.status.listen.ip().is_loopback());
    }

    #[test]
    fn handshake_timeout_follows_t() {
        let cfg = parse("[controller]\nmaintenance_timeout = \"10m\"\n").unwrap();
        assert_eq!(cfg.controller.handshake_timeout, Duration::from_secs(1320));
    }

    #[test]
    fn bad_values_are_located() {
        let err = parse("[controller]\nmaintenance_timeout = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("maintd.toml:2:23: invalid duration \"soon\""),
            "{err}"
        );
        let err = parse("[schedule]\nmax_concurent = 3\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "maintd.toml:2:1: unknown key `max_concurent` (did you mean `max_concurrent`?)"
            ),
            "{err}"
        );
    }

    #[test]
    fn secret_is_redacted() {
        let cfg = parse("[status]\ntoken = \"hunter2\"\n").unwrap();
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
