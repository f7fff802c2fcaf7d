//! In-process access to the simulated controller: the same state machine, without sockets.
//!
//! Why it exists: a deterministic simulation of a client (the daemon's `tests/simulation.rs`)
//! runs on a current-thread tokio runtime with its clock paused, so that simulated days pass in
//! milliseconds and a seed replays exactly. Real sockets do not fit there (I/O readiness arrives
//! in real time, and a paused clock would jump over it). [`InProcess`] gives such a test the very
//! controller that `SimServer` serves, as plain async calls:
//!
//! - every call goes through the *same code* as the HTTP API: the request is encoded as the JSON
//!   body a client sends, the "nginx" 502 die is rolled, then the UpdateCloudlet handler
//!   (validation, action lock, plan) runs, and the handshake runs in the same detached runner
//!   task. Only authentication is skipped: calls act as an admin user (or as a scenario user,
//!   see [`InProcess::acting_as`], to which RBAC then applies);
//! - like the HTTP middleware, the handler runs in a task of its own, so a caller that goes away
//!   mid-request (a crashed client) cancels nothing: the server-side sequence carries on and
//!   keeps the action lock;
//! - the answer comes back as the client would see it on the wire: progress lines, a `result`
//!   line, an error status with its body, or a stream cut after the first line
//!   ([`SimFailure`]);
//! - requests are recorded in the history as over HTTP;
//! - latencies, T and the late CRM acknowledgements are tokio timers, so on a paused runtime
//!   they are virtual. History entries carry the tokio instant of each stamp
//!   ([`TransitionRecord::at`]).
//!
//! The steering calls ([`InProcess::set_state`], [`InProcess::set_knobs`],
//! [`InProcess::crm_restart`]) do what the `/_sim/` control endpoints of the same names do.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::http::{self, ShowKind};
use crate::scenario::{Knobs, KnobsPatch, Role, RoleSpec, Scenario, ScenarioError, UserSpec};
use crate::state::{MaintenanceState, TrackedState};
use crate::world::{Actor, RequestRecord, Sim, World};

/// The admin account in-process calls act as unless told otherwise. It is added to the
/// scenario's users (it cannot log in: there is no HTTP server).
pub const IN_PROCESS_USER: &str = "mc-sim-in-process";

/// The simulated controller, in this process. Cheap to clone (clones share the simulation).
#[derive(Clone)]
pub struct InProcess {
    sim: Arc<Sim>,
    user: String,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// How a request failed, as a client sees it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimFailure {
    /// An error status before anything was streamed. `message` is the `{"message": ...}` of a
    /// JSON body; `None` for a body that is not JSON (the proxy's HTML 502 page).
    Status {
        status: u16,
        message: Option<String>,
        body: String,
    },
    /// The stream ended with `{"result":{"message":...,"code":...}}` (always its last line).
    ResultLine { message: String, code: u16 },
    /// The connection was cut mid-stream after `lines` complete lines (`drop_after_first_line`,
    /// or the simulator shutting down). The handshake carries on server-side.
    Dropped { lines: usize, reason: String },
    /// A line that is not one of the controller's NDJSON forms (a simulator bug).
    Garbled(String),
}

impl SimFailure {
    /// The controller's message, if there is one.
    pub fn message(&self) -> Option<&str> {
        match self {
            SimFailure::Status { message, .. } => message.as_deref(),
            SimFailure::ResultLine { message, .. } => Some(message),
            SimFailure::Dropped { .. } | SimFailure::Garbled(_) => None,
        }
    }
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimFailure::Status {
                status,
                message: Some(m),
                ..
            } => write!(f, "HTTP {status}: {m}"),
            SimFailure::Status { status, body, .. } => write!(f, "HTTP {status}: {body}"),
            SimFailure::ResultLine { message, code } => write!(f, "result {code}: {message}"),
            SimFailure::Dropped { lines, reason } => {
                write!(f, "stream cut after {lines} lines: {reason}")
            }
            SimFailure::Garbled(line) => write!(f, "garbled line: {line}"),
        }
    }
}

impl std::error::Error for SimFailure {}

/// One cloudlet as ShowCloudlet prints it, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownCloudlet {
    pub region: String,
    pub organization: String,
    pub name: String,
    /// `NormalOperation` when the field is absent (as on the wire).
    pub maintenance_state: MaintenanceState,
    /// The tracked `state`.
    pub state: TrackedState,
    /// The `{"data":...}` line as sent.
    pub line: String,
}

/// The simulator's full view of one cloudlet (what `GET /_sim/cloudlets` shows).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudletSnapshot {
    pub region: String,
    pub organization: String,
    pub name: String,
    pub maintenance_state: MaintenanceState,
    pub state: TrackedState,
    pub cloudlet_info_maintenance_state: MaintenanceState,
    /// A handshake holds the per-cloudlet action lock.
    pub busy: bool,
    /// The CRM missed a request and ignores everything until a CRM restart.
    pub crm_stuck: bool,
    pub knobs: Knobs,
}

/// A change of a stored maintenance state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRecord {
    /// When, on tokio's clock (virtual on a paused runtime).
    pub at: tokio::time::Instant,
    pub region: String,
    pub organization: String,
    pub name: String,
    pub from: MaintenanceState,
    pub to: MaintenanceState,
    pub actor: Actor,
}

/// A recorded API request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSummary {
    /// Arrival, on tokio's clock.
    pub at: tokio::time::Instant,
    pub path: String,
    pub user: Option<String>,
    pub status: u16,
    pub body: Value,
}

/// Everything recorded so far.
#[derive(Debug, Clone, Default)]
pub struct SimHistory {
    pub transitions: Vec<TransitionRecord>,
    pub requests: Vec<RequestSummary>,
}

/// Which cloudlets a steering call applies to; `None` matches every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub region: Option<String>,
    pub organization: Option<String>,
    pub name: Option<String>,
}

impl Selector {
    /// Exactly one cloudlet.
    pub fn one(region: &str, organization: &str, name: &str) -> Selector {
        Selector {
            region: Some(region.to_string()),
            organization: Some(organization.to_string()),
            name: Some(name.to_string()),
        }
    }

    fn matches(&self, w: &World) -> Vec<usize> {
        w.cloudlets
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                self.region.as_ref().is_none_or(|r| *r == c.region)
                    && self
                        .organization
                        .as_ref()
                        .is_none_or(|o| *o == c.organization)
                    && self.name.as_ref().is_none_or(|n| *n == c.name)
            })
            .map(|(i, _)| i)
            .collect()
    }
}

fn status_failure(status: u16, message: impl Into<String>) -> SimFailure {
    let message = message.into();
    SimFailure::Status {
        status,
        body: json!({ "message": message }).to_string(),
        message: Some(message),
    }
}

/// Reads a whole (small) response body.
async fn body_text(res: Response) -> String {
    match axum::body::to_bytes(res.into_body(), 1 << 20).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<unreadable body: {e}>"),
    }
}

fn json_message(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    v.get("message")?.as_str().map(str::to_string)
}

impl InProcess {
    /// Builds the simulation from `scenario` (validated), adding the admin account
    /// [`IN_PROCESS_USER`]. Must be called inside a tokio runtime only for the calls, not here.
    pub fn new(mut scenario: Scenario) -> Result<InProcess, ScenarioError> {
        if !scenario.users.iter().any(|u| u.username == IN_PROCESS_USER) {
            scenario.users.push(UserSpec {
                username: IN_PROCESS_USER.to_string(),
                password: String::new(),
                roles: vec![RoleSpec {
                    org: String::new(),
                    role: Role::AdminManager,
                }],
            });
        }
        scenario.validate()?;
        Ok(InProcess {
            sim: Arc::new(Sim::new(scenario)),
            user: IN_PROCESS_USER.to_string(),
        })
    }

    /// The same simulation, with requests made as `username` (a scenario user; RBAC applies,
    /// and an unknown user is refused with 403 like a user without roles).
    pub fn acting_as(&self, username: &str) -> InProcess {
        InProcess {
            sim: Arc::clone(&self.sim),
            user: username.to_string(),
        }
    }

    /// The user requests are made as.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn record(&self, stamp: crate::world::Stamp, path: &str, status: u16, body: Value) {
        self.sim.lock().requests.push(RequestRecord {
            stamp,
            method: "POST".to_string(),
            path: path.to_string(),
            user: Some(self.user.clone()),
            status,
            body,
        });
    }

    /// `ShowCloudlet` of one cloudlet: `Ok(None)` when it does not exist (empty answer).
    pub async fn show(
        &self,
        region: &str,
        organization: &str,
        name: &str,
    ) -> Result<Option<ShownCloudlet>, SimFailure> {
        const PATH: &str = "/api/v1/auth/ctrl/ShowCloudlet";
        let body = json!({
            "region": region,
            "cloudlet": {"key": {"organization": organization, "name": name}},
        });
        let bytes = Bytes::from(body.to_string());
        let stamp = self.sim.stamp();
        let res = match http::roll_bad_gateway(&self.sim, &bytes) {
            Some(res) => res,
            None => http::show_lines(&self.sim, &bytes, ShowKind::Cloudlet)
                .unwrap_or_else(IntoResponse::into_response),
        };
        let status = res.status().as_u16();
        self.record(stamp, PATH, status, body);
        let text = body_text(res).await;
        if status != 200 {
            return Err(SimFailure::Status {
                status,
                message: json_message(&text),
                body: text,
            });
        }
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value =
                serde_json::from_str(line).map_err(|_| SimFailure::Garbled(line.to_string()))?;
            let data = v
                .get("data")
                .ok_or_else(|| SimFailure::Garbled(line.to_string()))?;
            let key = data.get("key");
            let org = key
                .and_then(|k| k.get("organization"))
                .and_then(Value::as_str);
            let n = key.and_then(|k| k.get("name")).and_then(Value::as_str);
            if org != Some(organization) || n != Some(name) {
                continue;
            }
            let maintenance_state = match data.get("maintenance_state") {
                None => MaintenanceState::NormalOperation,
                Some(v) => MaintenanceState::from_json(v)
                    .ok_or_else(|| SimFailure::Garbled(line.to_string()))?,
            };
            let state = match data.get("state") {
                Some(Value::String(s)) if s == "UpdateError" => TrackedState::UpdateError,
                Some(Value::Number(n))
                    if n.as_i64() == Some(TrackedState::UpdateError.number()) =>
                {
                    TrackedState::UpdateError
                }
                _ => TrackedState::Ready,
            };
            return Ok(Some(ShownCloudlet {
                region: region.to_string(),
                organization: organization.to_string(),
                name: name.to_string(),
                maintenance_state,
                state,
                line: line.to_string(),
            }));
        }
        Ok(None)
    }

    /// One `UpdateCloudlet` request for `requested` (sent explicitly with `"fields":["30"]`, as
    /// a correct client does), calling `progress` with each streamed message. `Ok` means the
    /// stream ended without a `result` line; as on the wire, read the state back before
    /// trusting it.
    ///
    /// Dropping the returned future is a client going away: the handshake carries on.
    pub async fn update<P>(
        &self,
        region: &str,
        organization: &str,
        name: &str,
        requested: MaintenanceState,
        mut progress: P,
    ) -> Result<(), SimFailure>
    where
        P: FnMut(&str) + Send,
    {
        const PATH: &str = "/api/v1/auth/ctrl/UpdateCloudlet";
        let body = json!({
            "region": region,
            "cloudlet": {
                "key": {"organization": organization, "name": name},
                "maintenance_state": requested.camel(),
                "fields": ["30"],
            }
        });
        let bytes = Bytes::from(body.to_string());
        let stamp = self.sim.stamp();
        let sim = Arc::clone(&self.sim);
        let user = self.user.clone();
        // In a task of its own, like the HTTP middleware: a caller going away cancels nothing.
        let task = tokio::spawn(async move {
            if let Some(res) = http::roll_bad_gateway(&sim, &bytes) {
                return res;
            }
            match http::update(&sim, &user, &bytes).await {
                Ok(res) => res,
                Err(e) => e.into_response(),
            }
        });
        let res = match task.await {
            Ok(res) => res,
            Err(e) => {
                let failure = status_failure(500, format!("request handler failed: {e}"));
                self.record(stamp, PATH, 500, body);
                return Err(failure);
            }
        };
        let status = res.status().as_u16();
        self.record(stamp, PATH, status, body);
        if status != 200 {
            let text = body_text(res).await;
            return Err(SimFailure::Status {
                status,
                message: json_message(&text),
                body: text,
            });
        }
        let mut stream = res.into_body().into_data_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut lines = 0usize;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    return Err(SimFailure::Dropped {
                        lines,
                        reason: e.to_string(),
                    });
                }
            };
            pending.extend_from_slice(&chunk);
            while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = pending.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&raw).trim().to_string();
                if line.is_empty() {
                    continue;
                }
                lines += 1;
                let v: Value =
                    serde_json::from_str(&line).map_err(|_| SimFailure::Garbled(line.clone()))?;
                if let Some(m) = v
                    .get("data")
                    .and_then(|d| d.get("message"))
                    .and_then(Value::as_str)
                {
                    progress(m);
                } else if let Some(r) = v.get("result") {
                    let message = r
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let code = r
                        .get("code")
                        .and_then(Value::as_u64)
                        .and_then(|c| u16::try_from(c).ok())
                        .unwrap_or(400);
                    // The last line: read on to the end of the stream, as a careful client does.
                    while let Some(Ok(_)) = stream.next().await {}
                    return Err(SimFailure::ResultLine { message, code });
                } else {
                    return Err(SimFailure::Garbled(line));
                }
            }
        }
        if !pending.iter().all(u8::is_ascii_whitespace) {
            return Err(SimFailure::Dropped {
                lines,
                reason: "the body ended inside a line".to_string(),
            });
        }
        Ok(())
    }

    /// A person changing the stored state by hand (`POST /_sim/state`): `404` unknown, `409`
    /// while a handshake runs, `400` for a state never stored on a Cloudlet. `tracked`
    /// optionally sets the tracked state too.
    pub fn set_state(
        &self,
        region: &str,
        organization: &str,
        name: &str,
        state: MaintenanceState,
        tracked: Option<TrackedState>,
    ) -> Result<(), SimFailure> {
        if !state.is_stored_on_cloudlet() {
            return Err(status_failure(
                400,
                format!("{state} is never stored on a Cloudlet"),
            ));
        }
        let stamp = self.sim.stamp();
        let mut w = self.sim.lock();
        let Some(idx) = w.find(region, organization, name) else {
            return Err(status_failure(
                404,
                format!("no cloudlet {region}/{organization}/{name}"),
            ));
        };
        if w.cloudlets.get(idx).is_some_and(|c| c.busy) {
            return Err(status_failure(
                409,
                "an action is in progress on this cloudlet",
            ));
        }
        w.store(idx, state, Actor::Manual, stamp);
        if let Some(c) = w.cloudlets.get_mut(idx) {
            match state {
                MaintenanceState::UnderMaintenance => {
                    c.info = MaintenanceState::CrmUnderMaintenance;
                }
                MaintenanceState::NormalOperation => c.info = MaintenanceState::NormalOperation,
                _ => {}
            }
            if let Some(t) = tracked {
                c.tracked = t;
            }
        }
        Ok(())
    }

    /// Merges `patch` into the knobs of every selected cloudlet (`POST /_sim/knobs`); returns
    /// how many matched (`404` if none, `400` for a bad value).
    pub fn set_knobs(&self, selector: &Selector, patch: &KnobsPatch) -> Result<usize, SimFailure> {
        patch.validate().map_err(|e| status_failure(400, e))?;
        let mut w = self.sim.lock();
        let matched = selector.matches(&w);
        if matched.is_empty() {
            return Err(status_failure(404, "no cloudlet matches"));
        }
        for &i in &matched {
            if let Some(c) = w.cloudlets.get_mut(i) {
                c.knobs.apply(patch);
            }
        }
        Ok(matched.len())
    }

    /// The CRMs of the selected cloudlets restart (`POST /_sim/crm_restart`): `crm_no_ack` and
    /// the stuck latch are cleared, a CRM wait in progress is acknowledged at once, and an idle
    /// cloudlet left in NormalOperationInit goes to NormalOperation.
    pub fn crm_restart(&self, selector: &Selector) -> Result<usize, SimFailure> {
        let stamp = self.sim.stamp();
        let mut w = self.sim.lock();
        let matched = selector.matches(&w);
        if matched.is_empty() {
            return Err(status_failure(404, "no cloudlet matches"));
        }
        w.restart_crms(&matched, stamp);
        Ok(matched.len())
    }

    /// Every cloudlet as the simulator sees it, in scenario order.
    pub fn cloudlets(&self) -> Vec<CloudletSnapshot> {
        let w = self.sim.lock();
        w.cloudlets
            .iter()
            .map(|c| CloudletSnapshot {
                region: c.region.clone(),
                organization: c.organization.clone(),
                name: c.name.clone(),
                maintenance_state: c.stored,
                state: c.tracked,
                cloudlet_info_maintenance_state: c.info,
                busy: c.busy,
                crm_stuck: c.crm_stuck,
                knobs: c.knobs.clone(),
            })
            .collect()
    }

    /// One cloudlet as the simulator sees it.
    pub fn cloudlet(
        &self,
        region: &str,
        organization: &str,
        name: &str,
    ) -> Option<CloudletSnapshot> {
        let w = self.sim.lock();
        let c = w.cloudlets.get(w.find(region, organization, name)?)?;
        Some(CloudletSnapshot {
            region: c.region.clone(),
            organization: c.organization.clone(),
            name: c.name.clone(),
            maintenance_state: c.stored,
            state: c.tracked,
            cloudlet_info_maintenance_state: c.info,
            busy: c.busy,
            crm_stuck: c.crm_stuck,
            knobs: c.knobs.clone(),
        })
    }

    /// Transitions recorded from index `from` on (the history only grows).
    pub fn transitions_since(&self, from: usize) -> Vec<TransitionRecord> {
        let w = self.sim.lock();
        w.transitions
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|t| TransitionRecord {
                at: t.stamp.mono,
                region: t.region.clone(),
                organization: t.organization.clone(),
                name: t.name.clone(),
                from: t.from,
                to: t.to,
                actor: t.actor,
            })
            .collect()
    }

    /// The whole recorded history (transitions and requests, in order).
    pub fn history(&self) -> SimHistory {
        let transitions = self.transitions_since(0);
        let w = self.sim.lock();
        SimHistory {
            transitions,
            requests: w
                .requests
                .iter()
                .map(|r| RequestSummary {
                    at: r.stamp.mono,
                    path: r.path.clone(),
                    user: r.user.clone(),
                    status: r.status,
                    body: r.body.clone(),
                })
                .collect(),
        }
    }

    /// Cancels every running handshake where it is (as the server's shutdown does).
    pub fn shutdown(&self) {
        self.sim.cancel.cancel();
    }
}
