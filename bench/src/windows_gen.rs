//! Generated window files and scenarios for the benchmarks.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

pub const REGION: &str = "EU";
pub const USER: &str = "bench-admin";
pub const PASSWORD: &str = "bench-admin-password";

/// `org-N/c-NNNNN` for cloudlet `i` of `orgs` organizations.
pub fn cloudlet_name(i: usize, orgs: usize) -> (String, String) {
    (format!("org-{:02}", i % orgs.max(1)), format!("c-{i:05}"))
}

/// One-off windows whose `enter_at` is `edge(i)` for cloudlet `i`: `lead` fixed, `start = edge
/// + lead` as a civil UTC time with milliseconds. Spread over `files` files.
pub fn write_one_off(
    dir: &Path,
    prefix: &str,
    cloudlets: &[(String, String)],
    files: usize,
    edge: impl Fn(usize) -> Timestamp,
    lead: Duration,
    duration: &str,
) -> Result<()> {
    let per_file = cloudlets.len().div_ceil(files.max(1));
    let lead_text = format!("{}s", lead.as_secs());
    for (f, chunk) in cloudlets.chunks(per_file.max(1)).enumerate() {
        let mut text = String::with_capacity(chunk.len() * 220);
        for (j, (org, name)) in chunk.iter().enumerate() {
            let i = f * per_file + j;
            let start = edge(i)
                .checked_add(jiff::SignedDuration::try_from(lead)?)?
                .to_zoned(TimeZone::UTC)
                .datetime();
            writeln!(
                text,
                "[[window]]\nid = \"{prefix}-{i:05}\"\nregion = \"{REGION}\"\ncloudlets = [\"{org}/{name}\"]\nstart = \"{}\"\ntimezone = \"UTC\"\nduration = \"{duration}\"\nlead = \"{lead_text}\"\n",
                start.strftime("%Y-%m-%dT%H:%M:%S%.3f")
            )?;
        }
        let path = dir.join(format!("{prefix}-{f:05}.toml"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

const ZONES: [&str; 5] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Sydney",
];

/// Weekly windows (`lead = "auto"`, failover, 4 h) in a few zones, one per cloudlet, in `files`
/// files. The weekday is chosen at least two days away from today (UTC), so that no enter falls
/// in the next day and the daemon stays idle while it is measured.
pub fn write_weekly(dir: &Path, cloudlets: &[(String, String)], files: usize) -> Result<u64> {
    let today = Timestamp::now().to_zoned(TimeZone::UTC).weekday();
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let per_file = cloudlets.len().div_ceil(files.max(1));
    let mut bytes = 0u64;
    for (f, chunk) in cloudlets.chunks(per_file.max(1)).enumerate() {
        let mut text = String::with_capacity(chunk.len() * 220);
        for (j, (org, name)) in chunk.iter().enumerate() {
            let i = f * per_file + j;
            // 3 or 4 days ahead of today (0 = Sunday).
            let dow = (today.to_sunday_zero_offset() as usize + 3 + i % 2) % 7;
            writeln!(
                text,
                "[[window]]\nid = \"weekly-{i:05}\"\nregion = \"{REGION}\"\ncloudlets = [\"{org}/{name}\"]\ncron = \"{} {} * * {}\"\ntimezone = \"{}\"\nduration = \"4h\"\nfailover = true\nlead = \"auto\"\n",
                (i * 7) % 60,
                1 + i % 4,
                days[dow],
                ZONES[i % ZONES.len()]
            )?;
        }
        let path = dir.join(format!("weekly-{f:05}.toml"));
        bytes += text.len() as u64;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(bytes)
}

/// An mc-sim scenario with `cloudlets` in region EU and one admin user.
pub fn scenario(
    cloudlets: &[(String, String)],
    t: &str,
    defaults: Value,
) -> Result<mc_sim::Scenario> {
    let list: Vec<Value> = cloudlets
        .iter()
        .map(|(org, name)| json!({"region": REGION, "organization": org, "name": name}))
        .collect();
    let s = json!({
        "time_scale": 1.0,
        "maintenance_timeout": t,
        "seed": 6,
        "users": [{"username": USER, "password": PASSWORD, "roles": [{"org": "", "role": "AdminManager"}]}],
        "defaults": defaults,
        "cloudlets": list,
    });
    Ok(mc_sim::Scenario::from_json_str(&s.to_string())?)
}
