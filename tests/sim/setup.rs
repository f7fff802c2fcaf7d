//! A seed's world: cloudlets, the controller scenario, the daemon's config and window files.
//!
//! Everything is drawn from one `StdRng` seeded by the simulation seed, in a fixed order, so a
//! seed always builds the same world. Choices that matter for the properties:
//!
//! - 10–30 cloudlets across 2–3 organizations and two regions; the first organization has
//!   cloudlets in both regions (the per-organization cap is per organization, not per region);
//! - per-cloudlet lognormal latencies of the AutoProv service and the CRM (medians 30 s–3 min),
//!   against T = 5 min: a slow draw is a genuine controller timeout;
//! - windows in UTC, Europe/Berlin and America/New_York with start times that fall into the
//!   spring-forward gap or the autumn fold on transition days, and an origin just before a DST
//!   change, so that runs cross one;
//! - weekly and daily cron windows, one-offs, overlaps, failover on and off, fixed and auto
//!   leads, skip dates;
//! - a few cloudlets a person already put into maintenance, or left stuck.

use std::time::Duration;

use cloudlet_maintd::config::Config;
use cloudlet_maintd::plan::CloudletRef;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use mc_sim::{
    CloudletSpec, HumanDuration, KnobsPatch, Latency, Role, RoleSpec, Scenario, UserSpec,
};
use rand::Rng;
use rand::rngs::StdRng;

/// The controller's T in every simulation.
pub const T: Duration = Duration::from_secs(300);
/// Cap on concurrent handshakes, globally and per organization (small to exercise them).
pub const MAX_CONCURRENT: usize = 3;
pub const MAX_PER_ORG: usize = 2;
/// The longest lead any span can have: `lead_max` (fixed leads stay below it).
pub const LEAD_MAX: Duration = Duration::from_secs(30 * 60);
/// The scenario user persons act as.
pub const PERSON: &str = "ops-person";

/// Mondays 00:00 UTC, each a few days before a DST change (or none, as a baseline).
const ORIGINS: [&str; 5] = [
    "2027-03-08T00:00:00Z", // US spring forward on Mar 14
    "2027-03-22T00:00:00Z", // EU spring forward on Mar 28
    "2027-10-25T00:00:00Z", // EU fall back on Oct 31, US on Nov 7
    "2027-11-01T00:00:00Z", // US fall back on Nov 7
    "2027-01-04T00:00:00Z", // no change
];

const ZONES: [&str; 3] = ["UTC", "Europe/Berlin", "America/New_York"];
const CITIES: [&str; 10] = [
    "berlin", "paris", "dallas", "munich", "lyon", "seattle", "hamburg", "boston", "madrid",
    "denver",
];

/// One simulated cloudlet.
#[derive(Debug, Clone)]
pub struct CloudletDef {
    pub region: String,
    pub org: String,
    pub name: String,
}

impl CloudletDef {
    pub fn cref(&self) -> CloudletRef {
        CloudletRef {
            region: self.region.clone(),
            cloudlet: format!("{}/{}", self.org, self.name),
        }
    }
}

/// When a window's occurrences start.
#[derive(Debug, Clone)]
pub enum Sched {
    /// `cron = "M H * * DOW"`.
    Weekly { dow: u8, hour: u8, minute: u8 },
    /// `cron = "M H * * *"`.
    Daily { hour: u8, minute: u8 },
    /// `start = "…"` (civil time in the window's zone).
    Once { civil: String },
}

/// One `[[window]]` table.
#[derive(Debug, Clone)]
pub struct WindowDef {
    pub id: String,
    pub region: String,
    pub cloudlets: Vec<String>,
    pub sched: Sched,
    pub zone: &'static str,
    pub duration_min: u32,
    pub failover: bool,
    /// Fixed lead in minutes; `None` is `auto`.
    pub lead_min: Option<u32>,
    pub skip: Vec<String>,
}

impl WindowDef {
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[[window]]\n");
        out.push_str(&format!("id = \"{}\"\n", self.id));
        out.push_str(&format!("region = \"{}\"\n", self.region));
        let list: Vec<String> = self.cloudlets.iter().map(|c| format!("\"{c}\"")).collect();
        out.push_str(&format!("cloudlets = [{}]\n", list.join(", ")));
        match &self.sched {
            Sched::Weekly { dow, hour, minute } => {
                out.push_str(&format!("cron = \"{minute} {hour} * * {dow}\"\n"));
            }
            Sched::Daily { hour, minute } => {
                out.push_str(&format!("cron = \"{minute} {hour} * * *\"\n"));
            }
            Sched::Once { civil } => out.push_str(&format!("start = \"{civil}\"\n")),
        }
        out.push_str(&format!("timezone = \"{}\"\n", self.zone));
        out.push_str(&format!("duration = \"{}m\"\n", self.duration_min));
        out.push_str(&format!("failover = {}\n", self.failover));
        match self.lead_min {
            Some(m) => out.push_str(&format!("lead = \"{m}m\"\n")),
            None => out.push_str("lead = \"auto\"\n"),
        }
        if !self.skip.is_empty() {
            let list: Vec<String> = self.skip.iter().map(|d| format!("\"{d}\"")).collect();
            out.push_str(&format!("skip = [{}]\n", list.join(", ")));
        }
        out
    }
}

/// A window file: name and windows.
#[derive(Debug, Clone)]
pub struct FileDef {
    pub name: String,
    pub windows: Vec<WindowDef>,
}

impl FileDef {
    pub fn to_toml(&self) -> String {
        let mut out = format!("# {} (generated by the simulation)\n", self.name);
        for w in &self.windows {
            out.push('\n');
            out.push_str(&w.to_toml());
        }
        out
    }
}

/// A seed's world.
#[derive(Debug, Clone)]
pub struct World {
    pub origin: Timestamp,
    pub cloudlets: Vec<CloudletDef>,
    pub files: Vec<FileDef>,
    pub scenario: Scenario,
    /// Cloudlets a person put into maintenance before the start (index into `cloudlets`).
    pub initially_manual: Vec<usize>,
    /// Cloudlets left stuck (CrmRequested + UpdateError) by a person's failed request.
    pub initially_stuck: Vec<usize>,
}

fn lognormal(rng: &mut StdRng) -> Latency {
    // Log-uniform median in [30 s, 3 min].
    let median = 30.0 * (6f64).powf(rng.random::<f64>());
    Latency::Lognormal {
        median: HumanDuration(Duration::from_secs_f64(median)),
        sigma: rng.random_range(0.15..0.45),
    }
}

/// Builds the world of `seed` for a run of `days` days.
pub fn world(rng: &mut StdRng, days: u32) -> World {
    let origin: Timestamp = ORIGINS[rng.random_range(0..ORIGINS.len())]
        .parse()
        .expect("origin");
    let all_orgs = ["TDG", "Orange", "Verizon"];
    let n_orgs = rng.random_range(2..=3);
    let orgs = &all_orgs[..n_orgs];
    let n = rng.random_range(10..=30);
    let mut cloudlets = Vec::with_capacity(n);
    for i in 0..n {
        // The first organization gets cloudlets in both regions.
        let org = orgs[if i < 2 {
            0
        } else {
            rng.random_range(0..n_orgs)
        }];
        let region = if i == 0 {
            "EU"
        } else if i == 1 {
            "US"
        } else if rng.random_bool(0.5) {
            "EU"
        } else {
            "US"
        };
        let city = CITIES[rng.random_range(0..CITIES.len())];
        cloudlets.push(CloudletDef {
            region: region.to_string(),
            org: org.to_string(),
            name: format!("{city}-{i}"),
        });
    }

    let mut specs = Vec::with_capacity(n);
    let mut initially_manual = Vec::new();
    let mut initially_stuck = Vec::new();
    for (i, c) in cloudlets.iter().enumerate() {
        let roll: f64 = rng.random();
        let (maintenance_state, state) = if roll < 0.06 {
            initially_manual.push(i);
            (Some(mc_sim::MaintenanceState::UnderMaintenance), None)
        } else if roll < 0.09 {
            initially_stuck.push(i);
            (
                Some(mc_sim::MaintenanceState::CrmRequested),
                Some(mc_sim::TrackedState::UpdateError),
            )
        } else {
            (None, None)
        };
        specs.push(CloudletSpec {
            region: c.region.clone(),
            organization: c.org.clone(),
            name: c.name.clone(),
            maintenance_state,
            state,
            location: None,
            autoprov_latency: Some(lognormal(rng)),
            crm_latency: Some(lognormal(rng)),
            autoprov_error: None,
            autoprov_no_reply: None,
            crm_no_ack: None,
            error_5xx_rate: None,
            drop_after_first_line: None,
            integer_enums: Some(rng.random_bool(0.2)),
        });
    }
    let scenario = sim_scenario(T, rng.random(), specs);

    let n_files = rng.random_range(3..=6);
    let mut files = Vec::new();
    let mut next_id = 0;
    for f in 0..n_files {
        let n_windows = rng.random_range(1..=3);
        let windows = (0..n_windows)
            .map(|_| {
                next_id += 1;
                window(rng, &cloudlets, origin, days, format!("w{next_id}"))
            })
            .collect();
        files.push(FileDef {
            name: format!("{:02}-sim.toml", 10 * (f + 1)),
            windows,
        });
    }
    World {
        origin,
        cloudlets,
        files,
        scenario,
        initially_manual,
        initially_stuck,
    }
}

/// A random window over the cloudlets of one region.
pub fn window(
    rng: &mut StdRng,
    cloudlets: &[CloudletDef],
    origin: Timestamp,
    days: u32,
    id: String,
) -> WindowDef {
    let region = if rng.random_bool(0.5) { "EU" } else { "US" };
    let mut pool: Vec<&CloudletDef> = cloudlets.iter().filter(|c| c.region == region).collect();
    if pool.is_empty() {
        pool = cloudlets.iter().collect();
    }
    let region = pool[0].region.clone();
    let k = rng.random_range(1..=pool.len().min(5));
    let mut chosen: Vec<String> = Vec::new();
    while chosen.len() < k {
        let c = pool[rng.random_range(0..pool.len())];
        let name = format!("{}/{}", c.org, c.name);
        if !chosen.contains(&name) {
            chosen.push(name);
        }
    }
    chosen.sort();
    let zone = ZONES[rng.random_range(0..ZONES.len())];
    // Night hours, with 2:xx (the DST gap in Europe and the US) and 1:xx (the US fold)
    // over-represented.
    let hour = [0u8, 1, 1, 2, 2, 2, 3, 4, 13, 22][rng.random_range(0..10)];
    let minute = [0u8, 0, 15, 30, 30, 45][rng.random_range(0..6)];
    let kind: f64 = rng.random();
    let (sched, duration_min) = if kind < 0.45 {
        (
            Sched::Weekly {
                dow: rng.random_range(0..7),
                hour,
                minute,
            },
            rng.random_range(20..=480),
        )
    } else if kind < 0.75 {
        (Sched::Daily { hour, minute }, rng.random_range(20..=240))
    } else {
        let zone_tz = TimeZone::get(zone).expect("zone");
        let at = origin
            .checked_add(jiff::SignedDuration::from_mins(
                rng.random_range(60..(i64::from(days.max(1)) * 1440)),
            ))
            .expect("in range");
        let civil = at.to_zoned(zone_tz).datetime();
        let civil = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}",
            civil.year(),
            civil.month(),
            civil.day(),
            hour,
            minute
        );
        (Sched::Once { civil }, rng.random_range(20..=600))
    };
    let lead_min = if rng.random_bool(0.3) {
        Some(rng.random_range(8..=25))
    } else {
        None
    };
    let mut skip = Vec::new();
    if !matches!(sched, Sched::Once { .. }) && rng.random_bool(0.2) {
        let day = origin
            .checked_add(jiff::SignedDuration::from_hours(
                24 * rng.random_range(1..i64::from(days.max(2))),
            ))
            .expect("in range")
            .to_zoned(TimeZone::get(zone).expect("zone"))
            .date();
        skip.push(day.to_string());
    }
    WindowDef {
        id,
        region,
        cloudlets: chosen,
        sched,
        zone,
        duration_min,
        failover: rng.random_bool(0.6),
        lead_min,
        skip,
    }
}

/// The daemon's configuration for a simulation.
pub fn config(windows_dir: &std::path::Path, state_dir: &std::path::Path, t: Duration) -> Config {
    let mut cfg = Config::default();
    cfg.controller.maintenance_timeout = t;
    cfg.controller.handshake_timeout = cloudlet_maintd::config::default_handshake_timeout(t);
    let s = &mut cfg.schedule;
    s.windows_dir = windows_dir.to_path_buf();
    s.state_dir = state_dir.to_path_buf();
    s.max_concurrent = MAX_CONCURRENT;
    s.max_concurrent_per_org = MAX_PER_ORG;
    s.poll_interval = Duration::from_secs(10);
    s.verify_interval = Duration::from_secs(300);
    s.retry_initial = Duration::from_secs(5);
    s.retry_max = Duration::from_secs(120);
    s.lead_max = LEAD_MAX;
    s.shutdown_grace = Duration::from_secs(30);
    cfg
}

/// A hand-made world for scenario tests: the given cloudlets (`(region, organization, name)`)
/// with fixed AutoProv and CRM latencies, no faults, no initial maintenance, the given window
/// files, and the controller's T.
#[allow(dead_code)] // used by some test binaries only
pub fn fixed_world(
    origin: &str,
    t: Duration,
    cloudlets: &[(&str, &str, &str)],
    autoprov: Duration,
    crm: Duration,
    files: Vec<FileDef>,
) -> World {
    let cloudlets: Vec<CloudletDef> = cloudlets
        .iter()
        .map(|(region, org, name)| CloudletDef {
            region: region.to_string(),
            org: org.to_string(),
            name: name.to_string(),
        })
        .collect();
    let specs = cloudlets
        .iter()
        .map(|c| CloudletSpec {
            region: c.region.clone(),
            organization: c.org.clone(),
            name: c.name.clone(),
            maintenance_state: None,
            state: None,
            location: None,
            autoprov_latency: Some(Latency::Fixed(HumanDuration(autoprov))),
            crm_latency: Some(Latency::Fixed(HumanDuration(crm))),
            autoprov_error: None,
            autoprov_no_reply: None,
            crm_no_ack: None,
            error_5xx_rate: None,
            drop_after_first_line: None,
            integer_enums: None,
        })
        .collect();
    World {
        origin: origin.parse().expect("origin"),
        cloudlets,
        files,
        scenario: sim_scenario(t, 1, specs),
        initially_manual: Vec::new(),
        initially_stuck: Vec::new(),
    }
}

/// A daily window at `hour:minute` UTC.
#[allow(dead_code)] // used by some test binaries only
pub fn daily(
    id: &str,
    region: &str,
    cloudlets: &[&str],
    (hour, minute): (u8, u8),
    duration_min: u32,
    failover: bool,
    lead_min: Option<u32>,
) -> WindowDef {
    WindowDef {
        id: id.to_string(),
        region: region.to_string(),
        cloudlets: cloudlets.iter().map(|c| c.to_string()).collect(),
        sched: Sched::Daily { hour, minute },
        zone: "UTC",
        duration_min,
        failover,
        lead_min,
        skip: Vec::new(),
    }
}

/// The simulator's scenario: these cloudlets, controller timeout `t`, and one admin user (the
/// simulated person).
fn sim_scenario(t: Duration, seed: u64, cloudlets: Vec<CloudletSpec>) -> Scenario {
    Scenario {
        time_scale: 1.0,
        maintenance_timeout: HumanDuration(t),
        token_lifetime: HumanDuration(Duration::from_secs(86_400)),
        seed,
        integer_enums: false,
        users: vec![UserSpec {
            username: PERSON.to_string(),
            password: "unused".to_string(),
            roles: vec![RoleSpec {
                org: String::new(),
                role: Role::AdminManager,
            }],
        }],
        defaults: KnobsPatch::default(),
        cloudlets,
    }
}
