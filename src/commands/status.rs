//! `status`: a compact table of the running daemon's view, from its status endpoint.
//!
//! Meant for people and for monitoring checks alike: the exit status is 0 when the daemon
//! answers and has no alerts, 1 when it has alerts, 2 when it cannot be reached or answers
//! something unexpected.

use std::io::Write;
use std::time::Duration;

use crate::cli::StatusArgs;
use crate::config::Config;
use crate::engine::StatusSnapshot;

/// Runs `status` and returns the exit status.
pub fn run(config: &Config, args: &StatusArgs) -> i32 {
    let url = args
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.status.listen));
    let token = args
        .token
        .clone()
        .or_else(|| config.status.token.as_ref().map(|t| t.expose().to_string()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return super::EXIT_USAGE;
        }
    };
    let snapshot = match runtime.block_on(fetch(&url, token.as_deref())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return super::EXIT_USAGE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = write_table(&mut out, &snapshot);
    if snapshot.alerts.is_empty() {
        super::EXIT_OK
    } else {
        super::EXIT_FAILED
    }
}

async fn fetch(base: &str, token: Option<&str>) -> Result<StatusSnapshot, String> {
    crate::controller::install_default_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url = format!("{}/v1/status", base.trim_end_matches('/'));
    let mut req = client.get(&url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach the daemon at {url}: {}", e.without_url()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{url} answered {status}"));
    }
    resp.json::<StatusSnapshot>()
        .await
        .map_err(|e| format!("{url}: unexpected answer: {}", e.without_url()))
}

/// Writes the table (also used by tests).
pub fn write_table(out: &mut impl Write, s: &StatusSnapshot) -> std::io::Result<()> {
    writeln!(
        out,
        "cloudlet-maintd {}: {} windows, {} cloudlets, {} in maintenance, {} alerts (generation {})",
        s.version,
        s.counts.windows,
        s.counts.cloudlets,
        s.counts.in_maintenance,
        s.alerts.len(),
        s.generation
    )?;
    for a in &s.alerts {
        let who = a.cloudlet.as_deref().unwrap_or("daemon");
        writeln!(out, "ALERT {} {}: {}", a.kind, who, a.message)?;
    }
    writeln!(
        out,
        "{:<4} {:<24} {:<20} {:<8} {:<26} {:<10} LAST ERROR",
        "REG", "CLOUDLET", "STATE", "OWNER", "NEXT", "LEAD"
    )?;
    for c in &s.cloudlets {
        let owner = if c.owned {
            "daemon"
        } else if c.external {
            "person"
        } else {
            "-"
        };
        let next = match (&c.next_action, &c.next_action_at) {
            (Some(a), Some(at)) if a != "none" => format!("{a} {}", short_time(at)),
            _ => "-".to_string(),
        };
        let lead = c
            .lead_seconds
            .map(|s| humantime::format_duration(Duration::from_secs(s)).to_string())
            .unwrap_or_else(|| "-".into());
        let mut state = c.observed.clone().unwrap_or_else(|| "?".into());
        if c.busy {
            state.push('*');
        }
        writeln!(
            out,
            "{:<4} {:<24} {:<20} {:<8} {:<26} {:<10} {}",
            c.region,
            c.cloudlet,
            state,
            owner,
            next,
            lead,
            c.last_error.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `2026-12-06T01:49:00Z` → `2026-12-06 01:49Z`.
fn short_time(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(t) => t.strftime("%Y-%m-%d %H:%MZ").to_string(),
        Err(_) => rfc3339.to_string(),
    }
}
