//! The shared, mutable simulation: cloudlets, tokens, the random generator and the history.
//!
//! Everything lives behind one `std::sync::Mutex` that is never held across an `.await`, so each
//! operation (validate a request and take the per-cloudlet lock, record a transition, roll a die)
//! is atomic and the history is totally ordered. The HTTP layers (`http.rs`, `control.rs`) and
//! the handshake runner (`runner.rs`) only go through the methods here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::scenario::{Knobs, Latency, Location, Role, Scenario, UserSpec};
use crate::state::{MaintenanceState, TrackedState};

/// The running simulation, shared by every handler and handshake task.
pub(crate) struct Sim {
    /// Cancelled at shutdown: running handshakes stop where they are.
    pub cancel: CancellationToken,
    start: Instant,
    world: Mutex<World>,
}

/// Who changed a stored maintenance state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Actor {
    /// The controller's handshake, driven by an UpdateCloudlet request.
    Controller,
    /// A person (or a test) through `/_sim/state`.
    Manual,
    /// A CRM restart through `/_sim/crm_restart`.
    CrmRestart,
}

impl Actor {
    pub fn name(self) -> &'static str {
        match self {
            Actor::Controller => "controller",
            Actor::Manual => "manual",
            Actor::CrmRestart => "crm_restart",
        }
    }
}

/// When something happened: milliseconds since the simulator started (monotonic, real wall
/// time, not scaled) and the UTC wall clock.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Stamp {
    pub t_ms: u64,
    pub at: String,
    #[serde(skip)]
    pub system: SystemTime,
    /// The same moment on tokio's clock: virtual time when the runtime's clock is paused (the
    /// in-process API reports this one, see `inprocess`).
    #[serde(skip)]
    pub mono: tokio::time::Instant,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Transition {
    #[serde(flatten)]
    pub stamp: Stamp,
    pub region: String,
    pub organization: String,
    pub name: String,
    pub from: MaintenanceState,
    pub to: MaintenanceState,
    pub actor: Actor,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestRecord {
    #[serde(flatten)]
    pub stamp: Stamp,
    pub method: String,
    pub path: String,
    pub user: Option<String>,
    pub status: u16,
    pub body: Value,
}

/// An event as the Master Controller's events API shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub name: String,
    pub org: Vec<String>,
    #[serde(rename = "type")]
    pub kind: String,
    pub region: String,
    pub timestamp: String,
    pub tags: BTreeMap<String, String>,
    #[serde(skip)]
    pub time: SystemTime,
}

/// One simulated cloudlet: the Cloudlet object, its CloudletInfo, and the simulator's own state.
#[derive(Debug)]
pub(crate) struct Cloudlet {
    pub region: String,
    pub organization: String,
    pub name: String,
    pub location: Location,
    /// `Cloudlet.maintenance_state` as stored by the controller.
    pub stored: MaintenanceState,
    /// `Cloudlet.state`.
    pub tracked: TrackedState,
    /// `CloudletInfo.maintenance_state` as last reported by the CRM.
    pub info: MaintenanceState,
    /// The per-cloudlet action lock: held for the whole server-side handshake.
    pub busy: bool,
    /// Bumped at every handshake; a late CRM acknowledgement only applies to its own handshake.
    pub generation: u64,
    /// The CRM missed a request: it will not acknowledge anything until restarted.
    pub crm_stuck: bool,
    pub knobs: Knobs,
    /// Signalled by `/_sim/crm_restart`: a CRM wait in progress gets its acknowledgement.
    pub crm_restart: Arc<Notify>,
}

impl Cloudlet {
    /// `{"organization":"O","name":"N"}`, as the controller prints a key in messages.
    pub fn key_json(&self) -> String {
        key_json(&self.organization, &self.name)
    }
}

pub(crate) fn key_json(org: &str, name: &str) -> String {
    // Built by hand: serde_json's map would sort the keys, the controller prints them in
    // declaration order.
    format!(
        "{{\"organization\":{},\"name\":{}}}",
        Value::from(org),
        Value::from(name)
    )
}

#[derive(Debug)]
pub(crate) struct Token {
    pub username: String,
    issued: Instant,
    lifetime: Duration,
    forced_expired: bool,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// Not issued by this simulator (401).
    Invalid,
    /// Issued, but its lifetime elapsed or `/_sim/expire_tokens` expired it (400).
    Expired,
}

/// Everything mutable; see the module documentation.
pub(crate) struct World {
    pub time_scale: f64,
    pub maintenance_timeout: Duration,
    pub token_lifetime: Duration,
    pub rng: StdRng,
    pub users: Vec<UserSpec>,
    pub tokens: HashMap<String, Token>,
    pub cloudlets: Vec<Cloudlet>,
    pub transitions: Vec<Transition>,
    pub requests: Vec<RequestRecord>,
    pub events: Vec<Event>,
}

impl Sim {
    pub fn new(scenario: Scenario) -> Sim {
        let cloudlets = scenario
            .cloudlets
            .iter()
            .map(|c| {
                let stored = c
                    .maintenance_state
                    .unwrap_or(MaintenanceState::NormalOperation);
                let info = match stored {
                    MaintenanceState::UnderMaintenance | MaintenanceState::NormalOperationInit => {
                        MaintenanceState::CrmUnderMaintenance
                    }
                    _ => MaintenanceState::NormalOperation,
                };
                Cloudlet {
                    region: c.region.clone(),
                    organization: c.organization.clone(),
                    name: c.name.clone(),
                    location: c.location.unwrap_or(Location {
                        latitude: 0.0,
                        longitude: 0.0,
                    }),
                    stored,
                    tracked: c.state.unwrap_or(TrackedState::Ready),
                    info,
                    busy: false,
                    generation: 0,
                    crm_stuck: false,
                    knobs: scenario.knobs_for(c),
                    crm_restart: Arc::new(Notify::new()),
                }
            })
            .collect();
        let world = World {
            time_scale: scenario.time_scale,
            maintenance_timeout: scenario.maintenance_timeout.0,
            token_lifetime: scenario.token_lifetime.0,
            rng: StdRng::seed_from_u64(scenario.seed),
            users: scenario.users,
            tokens: HashMap::new(),
            cloudlets,
            transitions: Vec::new(),
            requests: Vec::new(),
            events: Vec::new(),
        };
        Sim {
            cancel: CancellationToken::new(),
            start: Instant::now(),
            world: Mutex::new(world),
        }
    }

    /// Locks the world. A panic elsewhere while holding the lock does not make the data
    /// unusable (every mutation is a few plain assignments), so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stamp(&self) -> Stamp {
        let system = SystemTime::now();
        Stamp {
            t_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            at: humantime::format_rfc3339_millis(system).to_string(),
            system,
            mono: tokio::time::Instant::now(),
        }
    }

    /// Takes the per-cloudlet action lock; `None` if a handshake is already running.
    pub fn try_begin(self: &Arc<Self>, world: &mut World, idx: usize) -> Option<ActionGuard> {
        let c = world.cloudlets.get_mut(idx)?;
        if c.busy {
            return None;
        }
        c.busy = true;
        c.generation += 1;
        Some(ActionGuard {
            sim: self.clone(),
            idx,
            generation: c.generation,
        })
    }

    /// Stores a new maintenance state, recording the transition if it changed.
    pub fn store(&self, idx: usize, to: MaintenanceState, actor: Actor) {
        let stamp = self.stamp();
        self.lock().store(idx, to, actor, stamp);
    }
}

/// The per-cloudlet action lock; released when the handshake task ends, whatever happens to the
/// HTTP connection.
pub(crate) struct ActionGuard {
    sim: Arc<Sim>,
    pub idx: usize,
    pub generation: u64,
}

impl Drop for ActionGuard {
    fn drop(&mut self) {
        if let Some(c) = self.sim.lock().cloudlets.get_mut(self.idx) {
            c.busy = false;
        }
    }
}

impl World {
    /// Multiplies a scenario duration by the current time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        Duration::try_from_secs_f64(d.as_secs_f64() * self.time_scale).unwrap_or(Duration::MAX)
    }

    /// Draws one latency (unscaled) from a distribution.
    pub fn sample(&mut self, latency: &Latency) -> Duration {
        match latency {
            Latency::Fixed(d) => d.0,
            Latency::Uniform([lo, hi]) => {
                let (lo, hi) = (lo.0.as_secs_f64(), hi.0.as_secs_f64());
                let u: f64 = self.rng.random();
                Duration::try_from_secs_f64(lo + (hi - lo) * u).unwrap_or(Duration::ZERO)
            }
            Latency::Lognormal { median, sigma } => {
                // Box-Muller: one standard normal draw from two uniforms.
                let u1: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]
                let u2: f64 = self.rng.random();
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                let secs = median.0.as_secs_f64() * (sigma * z).exp();
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
            }
        }
    }

    /// True with probability `p`.
    pub fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    pub fn find(&self, region: &str, org: &str, name: &str) -> Option<usize> {
        self.cloudlets
            .iter()
            .position(|c| c.region == region && c.organization == org && c.name == name)
    }

    pub fn has_region(&self, region: &str) -> bool {
        self.cloudlets.iter().any(|c| c.region == region)
    }

    pub fn store(&mut self, idx: usize, to: MaintenanceState, actor: Actor, stamp: Stamp) {
        let Some(c) = self.cloudlets.get_mut(idx) else {
            return;
        };
        let from = c.stored;
        if from == to {
            return;
        }
        c.stored = to;
        let t = Transition {
            stamp,
            region: c.region.clone(),
            organization: c.organization.clone(),
            name: c.name.clone(),
            from,
            to,
            actor,
        };
        tracing::info!(
            "{}/{}/{}: {} -> {} ({})",
            t.region,
            t.organization,
            t.name,
            from,
            to,
            actor.name()
        );
        self.transitions.push(t);
    }

    /// Emits `name` for a cloudlet with the `maintenance-state` tag set to `state`.
    /// The CRMs of cloudlets `matched` restart: `crm_no_ack` and the stuck latch are cleared, a
    /// CRM wait in progress is acknowledged at once (the running handshake then moves the state
    /// itself), and an idle cloudlet left in NormalOperationInit goes to NormalOperation.
    pub fn restart_crms(&mut self, matched: &[usize], stamp: Stamp) {
        for &i in matched {
            let Some(c) = self.cloudlets.get_mut(i) else {
                continue;
            };
            c.crm_stuck = false;
            c.knobs.crm_no_ack = false;
            if c.busy {
                c.crm_restart.notify_waiters();
                continue;
            }
            if c.stored == MaintenanceState::NormalOperationInit {
                c.info = MaintenanceState::NormalOperation;
                c.tracked = TrackedState::Ready;
                self.store(
                    i,
                    MaintenanceState::NormalOperation,
                    Actor::CrmRestart,
                    stamp.clone(),
                );
            }
        }
    }

    pub fn event(&mut self, idx: usize, name: &str, state: MaintenanceState, stamp: Stamp) {
        let Some(c) = self.cloudlets.get(idx) else {
            return;
        };
        let tags = BTreeMap::from([
            ("cloudlet".to_string(), c.name.clone()),
            ("cloudletorg".to_string(), c.organization.clone()),
            (
                "maintenance-state".to_string(),
                state.upper_snake().to_string(),
            ),
        ]);
        self.events.push(Event {
            name: name.to_string(),
            org: vec![c.organization.clone()],
            kind: "event".to_string(),
            region: c.region.clone(),
            timestamp: stamp.at,
            tags,
            time: stamp.system,
        });
    }

    pub fn user(&self, username: &str) -> Option<&UserSpec> {
        self.users.iter().find(|u| u.username == username)
    }

    /// Admin roles apply to every organization.
    pub fn is_admin(&self, username: &str) -> bool {
        self.user(username)
            .is_some_and(|u| u.roles.iter().any(|r| r.role.is_admin()))
    }

    /// OperatorManager / OperatorContributor of `org`, AdminManager / AdminContributor.
    pub fn may_update(&self, username: &str, org: &str) -> bool {
        self.user(username).is_some_and(|u| {
            u.roles.iter().any(|r| match r.role {
                Role::AdminManager | Role::AdminContributor => true,
                Role::OperatorManager | Role::OperatorContributor => r.org == org,
                _ => false,
            })
        })
    }

    /// The organizations whose events a user may see (`None`: all of them).
    pub fn visible_orgs(&self, username: &str) -> Option<Vec<String>> {
        if self.is_admin(username) {
            return None;
        }
        Some(
            self.user(username)
                .map(|u| u.roles.iter().map(|r| r.org.clone()).collect())
                .unwrap_or_default(),
        )
    }

    /// Issues a new login token for `username`; it expires after the scaled token lifetime.
    pub fn issue_token(&mut self, username: &str) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let lifetime = self.scaled(self.token_lifetime);
        let exp = now.saturating_add(lifetime);
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        let payload = serde_json::json!({
            "exp": exp.as_secs(),
            "iat": now.as_secs(),
            "username": username,
            "email": format!("{username}@example.com"),
            "kid": 2,
        })
        .to_string();
        let mut sig = [0u8; 32];
        self.rng.fill(&mut sig[..]);
        let token = format!(
            "{}.{}.{}",
            base64url(header.as_bytes()),
            base64url(payload.as_bytes()),
            base64url(&sig)
        );
        self.tokens.insert(
            token.clone(),
            Token {
                username: username.to_string(),
                issued: Instant::now(),
                lifetime,
                forced_expired: false,
            },
        );
        token
    }

    /// Resolves a bearer token to its user.
    pub fn check_token(&self, token: &str) -> Result<String, TokenError> {
        let t = self.tokens.get(token).ok_or(TokenError::Invalid)?;
        if t.forced_expired || t.issued.elapsed() >= t.lifetime {
            return Err(TokenError::Expired);
        }
        Ok(t.username.clone())
    }

    pub fn expire_tokens(&mut self) -> usize {
        for t in self.tokens.values_mut() {
            t.forced_expired = true;
        }
        self.tokens.len()
    }
}

/// Unpadded base64url, enough to make a token look like a JWT.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = (n >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(ALPHABET[idx as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_known_values() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn seeded_sampling_is_reproducible() {
        let sc = Scenario::from_toml_str("seed = 9").unwrap();
        let lat = Latency::Lognormal {
            median: Duration::from_secs(30).into(),
            sigma: 0.5,
        };
        let a: Vec<_> = {
            let sim = Sim::new(sc.clone());
            let mut w = sim.lock();
            (0..5).map(|_| w.sample(&lat)).collect()
        };
        let b: Vec<_> = {
            let sim = Sim::new(sc);
            let mut w = sim.lock();
            (0..5).map(|_| w.sample(&lat)).collect()
        };
        assert_eq!(a, b);
    }
}
