//! `SimController`: the daemon's [`Controller`] trait over mc-sim's in-process controller, plus
//! the recorder the property checks read.
//!
//! The adapter turns mc-sim's wire-level failures into the same [`ClientError`] variants the
//! HTTP client (`src/controller/client.rs`, `error.rs`) produces for the same bytes, so the engine
//! sees exactly what it would see over HTTP: an HTML 502 page is `Protocol { status: 502 }`, a
//! stream cut after its first line is `StreamDropped`, `An action is already in progress` is
//! `InProgress`, `must be in NormalOperation` is `WrongState`, `Timed out waiting for …` (as a
//! result line, or as the plain 400 of the NormalOperation path) is `ControllerTimeout`, other
//! result lines are `HandshakeFailed`, an empty ShowCloudlet answer is `NotFound`.
//!
//! It also records, for the checks of design.md §5: every request (when, which cloudlet, which
//! target, the simulator's state and the journal on disk at that moment, how it ended), every
//! successful read, and the number of requests in flight per cloudlet (property 4: at most one)
//! and of handshakes globally and per organization (caps). Breaches are noted at the moment they
//! happen. A small seeded round-trip time is added to every call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cloudlet_maintd::controller::{
    ClientError, CloudletKey, CloudletStatus, Controller, MaintenanceState, MaintenanceTarget,
};
use cloudlet_maintd::engine::{Clock, VirtualClock};
use cloudlet_maintd::journal::{CloudletRecord, read_journal};
use cloudlet_maintd::plan::CloudletRef;
use jiff::Timestamp;
use mc_sim::{InProcess, SimFailure};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Converts a simulator state to the daemon's enum (they share the wire names).
pub fn to_daemon_state(s: mc_sim::MaintenanceState) -> MaintenanceState {
    s.camel()
        .parse()
        .unwrap_or(MaintenanceState::NormalOperation)
}

/// The simulator's enum for a requested target.
pub fn requested(target: MaintenanceTarget) -> mc_sim::MaintenanceState {
    match target {
        MaintenanceTarget::Start => mc_sim::MaintenanceState::MaintenanceStart,
        MaintenanceTarget::StartNoFailover => mc_sim::MaintenanceState::MaintenanceStartNoFailover,
        MaintenanceTarget::Normal => mc_sim::MaintenanceState::NormalOperation,
    }
}

/// The organization part of `organization/name`.
pub fn org_of(c: &CloudletRef) -> String {
    c.cloudlet
        .split_once('/')
        .map(|(o, _)| o.to_string())
        .unwrap_or_default()
}

/// One UpdateCloudlet request of the daemon.
#[derive(Debug, Clone)]
pub struct RequestEntry {
    pub id: usize,
    pub sent_at: Timestamp,
    pub cloudlet: CloudletRef,
    pub target: MaintenanceTarget,
    /// The simulator's stored state and tracked state when the request arrived.
    pub state_at_send: mc_sim::MaintenanceState,
    pub update_error_at_send: bool,
    /// The cloudlet's journal record on disk when the request was sent (property 5: written
    /// before acting). `Err` if the journal could not be read.
    pub journal_at_send: Result<Option<CloudletRecord>, String>,
    /// The request reached the controller (a crash during the round trip loses it).
    pub arrived: bool,
    /// The controller started the handshake (a first stream line arrived).
    pub accepted_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    pub outcome: Option<Result<(), ClientError>>,
    /// The caller went away before the answer (the daemon crashed).
    pub abandoned: bool,
}

/// One successful ShowCloudlet of the daemon.
#[derive(Debug, Clone)]
pub struct ReadEntry {
    pub at: Timestamp,
    pub cloudlet: CloudletRef,
    pub state: MaintenanceState,
}

/// A time during which a cap was full: `scope` is `*` (global) or an organization.
#[derive(Debug, Clone)]
pub struct Saturation {
    pub scope: String,
    pub from: Timestamp,
    pub to: Option<Timestamp>,
}

/// Everything the adapter saw.
#[derive(Debug, Default)]
pub struct Recorder {
    pub requests: Vec<RequestEntry>,
    pub reads: Vec<ReadEntry>,
    /// Failed requests of any kind: (when, cloudlet, error), for the fault clocks.
    pub errors: Vec<(Timestamp, CloudletRef, ClientError)>,
    pub saturations: Vec<Saturation>,
    /// Breaches of property 4 noted when they happened.
    pub violations: Vec<String>,
    pub max_global: usize,
    pub max_per_org: BTreeMap<String, usize>,
    pub shows: u64,
    in_flight_cloudlet: BTreeMap<CloudletRef, usize>,
    in_flight_global: usize,
    in_flight_org: BTreeMap<String, usize>,
}

impl Recorder {
    fn saturation_change(&mut self, scope: &str, now: Timestamp, full: bool) {
        let open = self
            .saturations
            .iter_mut()
            .rev()
            .find(|s| s.scope == scope && s.to.is_none());
        match (open, full) {
            (None, true) => self.saturations.push(Saturation {
                scope: scope.to_string(),
                from: now,
                to: None,
            }),
            (Some(s), false) => s.to = Some(now),
            _ => {}
        }
    }

    /// Was the global cap or `org`'s cap full at some moment of `[from, to]`?
    pub fn saturated(&self, org: &str, from: Timestamp, to: Timestamp) -> bool {
        self.saturations.iter().any(|s| {
            (s.scope == "*" || s.scope == org) && s.from <= to && s.to.is_none_or(|end| end >= from)
        })
    }
}

/// The daemon's controller, backed by mc-sim in process.
pub struct SimController {
    sim: InProcess,
    clock: Arc<VirtualClock>,
    state_dir: PathBuf,
    rec: Arc<Mutex<Recorder>>,
    rtt: Mutex<StdRng>,
    max_global: usize,
    max_per_org: usize,
}

pub fn lock(rec: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    rec.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends the bookkeeping of one call, also when its future is dropped (a crash).
struct CallGuard {
    rec: Arc<Mutex<Recorder>>,
    clock: Arc<VirtualClock>,
    cloudlet: CloudletRef,
    /// `Some(request id)` for an UpdateCloudlet (which counts against the caps).
    update: Option<usize>,
    max_global: usize,
    max_per_org: usize,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let now = self.clock.now();
        let mut r = lock(&self.rec);
        if let Some(n) = r.in_flight_cloudlet.get_mut(&self.cloudlet) {
            *n = n.saturating_sub(1);
        }
        if let Some(id) = self.update {
            let org = org_of(&self.cloudlet);
            r.in_flight_global = r.in_flight_global.saturating_sub(1);
            let n = r.in_flight_org.entry(org.clone()).or_default();
            *n = n.saturating_sub(1);
            let org_full = *n >= self.max_per_org;
            let global_full = r.in_flight_global >= self.max_global;
            r.saturation_change("*", now, global_full);
            r.saturation_change(&org, now, org_full);
            if let Some(e) = r.requests.get_mut(id)
                && e.ended_at.is_none()
            {
                e.ended_at = Some(now);
                e.abandoned = true;
            }
        }
    }
}

impl SimController {
    pub fn new(
        sim: InProcess,
        clock: Arc<VirtualClock>,
        state_dir: PathBuf,
        seed: u64,
        max_global: usize,
        max_per_org: usize,
    ) -> (SimController, Arc<Mutex<Recorder>>) {
        let rec = Arc::new(Mutex::new(Recorder::default()));
        (
            SimController {
                sim,
                clock,
                state_dir,
                rec: Arc::clone(&rec),
                rtt: Mutex::new(StdRng::seed_from_u64(seed)),
                max_global,
                max_per_org,
            },
            rec,
        )
    }

    fn rtt(&self) -> Duration {
        let mut rng = self.rtt.lock().unwrap_or_else(|e| e.into_inner());
        let d = Duration::from_millis(rng.random_range(5..200));
        if std::env::var_os("SIM_CALLS").is_some() {
            eprintln!("CALL {} rtt {d:?}", self.clock.now());
        }
        d
    }

    /// Counts a call in; notes a second request in flight on one cloudlet, or a cap exceeded.
    fn begin(&self, cloudlet: &CloudletRef, update: Option<RequestEntry>) -> CallGuard {
        let now = self.clock.now();
        let mut r = lock(&self.rec);
        let n = r.in_flight_cloudlet.entry(cloudlet.clone()).or_default();
        *n += 1;
        if *n > 1 {
            let n = *n;
            r.violations.push(format!(
                "P4 at {now}: {n} requests in flight at once on {cloudlet}"
            ));
        }
        let id = update.map(|mut entry| {
            let org = org_of(cloudlet);
            r.in_flight_global += 1;
            let global = r.in_flight_global;
            let per_org = {
                let n = r.in_flight_org.entry(org.clone()).or_default();
                *n += 1;
                *n
            };
            r.max_global = r.max_global.max(global);
            let max = r.max_per_org.entry(org.clone()).or_default();
            *max = (*max).max(per_org);
            if global > self.max_global {
                r.violations.push(format!(
                    "P4 at {now}: {global} handshakes in flight, global cap {}",
                    self.max_global
                ));
            }
            if per_org > self.max_per_org {
                r.violations.push(format!(
                    "P4 at {now}: {per_org} handshakes in flight for organization {org}, cap {}",
                    self.max_per_org
                ));
            }
            r.saturation_change("*", now, global >= self.max_global);
            r.saturation_change(&org, now, per_org >= self.max_per_org);
            entry.id = r.requests.len();
            let id = entry.id;
            r.requests.push(entry);
            id
        });
        CallGuard {
            rec: Arc::clone(&self.rec),
            clock: Arc::clone(&self.clock),
            cloudlet: cloudlet.clone(),
            update: id,
            max_global: self.max_global,
            max_per_org: self.max_per_org,
        }
    }

    fn note_error(&self, cloudlet: &CloudletRef, e: &ClientError) {
        let now = self.clock.now();
        lock(&self.rec)
            .errors
            .push((now, cloudlet.clone(), e.clone()));
    }
}

/// The error the HTTP client reports for the same failure on the wire.
pub fn client_error(f: SimFailure, region: &str, key: &CloudletKey) -> ClientError {
    match f {
        SimFailure::Status {
            status,
            message: Some(m),
            ..
        } => ClientError::from_controller(status, &m, region, key),
        SimFailure::Status { status, body, .. } => ClientError::Protocol {
            status,
            snippet: body.chars().take(120).collect(),
        },
        SimFailure::ResultLine { message, code } => {
            ClientError::from_controller(if code == 403 { 403 } else { 200 }, &message, region, key)
        }
        SimFailure::Dropped { reason, .. } => ClientError::StreamDropped(reason),
        SimFailure::Garbled(line) => ClientError::Protocol {
            status: 200,
            snippet: line.chars().take(120).collect(),
        },
    }
}

impl Controller for SimController {
    async fn show_cloudlet(
        &self,
        region: &str,
        key: &CloudletKey,
    ) -> Result<CloudletStatus, ClientError> {
        let cloudlet = CloudletRef {
            region: region.to_string(),
            cloudlet: key.to_string(),
        };
        let _guard = self.begin(&cloudlet, None);
        if std::env::var_os("SIM_CALLS").is_some() {
            eprintln!("SHOW {} {cloudlet}", self.clock.now());
        }
        tokio::time::sleep(self.rtt()).await;
        let result = match self.sim.show(region, &key.organization, &key.name).await {
            Ok(Some(s)) => Ok(CloudletStatus {
                region: region.to_string(),
                key: key.clone(),
                maintenance_state: to_daemon_state(s.maintenance_state),
                tracked_state: Some(s.state.name().to_string()),
            }),
            Ok(None) => Err(ClientError::NotFound {
                region: region.to_string(),
                key: key.clone(),
            }),
            Err(f) => Err(client_error(f, region, key)),
        };
        let now = self.clock.now();
        match &result {
            Ok(s) => {
                let mut r = lock(&self.rec);
                r.shows += 1;
                r.reads.push(ReadEntry {
                    at: now,
                    cloudlet,
                    state: s.maintenance_state,
                });
            }
            Err(e) => self.note_error(&cloudlet, e),
        }
        result
    }

    async fn set_maintenance(
        &self,
        region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ClientError> {
        let cloudlet = CloudletRef {
            region: region.to_string(),
            cloudlet: key.to_string(),
        };
        // The journal as the daemon left it when it called us (it must already say what is
        // being sent); the simulator's state when the request arrives.
        let journal = read_journal(&self.state_dir)
            .map(|j| j.record(&cloudlet).cloned())
            .map_err(|e| e.to_string());
        let entry = RequestEntry {
            id: 0,
            sent_at: self.clock.now(),
            cloudlet: cloudlet.clone(),
            target,
            state_at_send: mc_sim::MaintenanceState::NormalOperation,
            update_error_at_send: false,
            journal_at_send: journal,
            arrived: false,
            accepted_at: None,
            ended_at: None,
            outcome: None,
            abandoned: false,
        };
        let guard = self.begin(&cloudlet, Some(entry));
        let id = guard.update.unwrap_or_default();
        if std::env::var_os("SIM_CALLS").is_some() {
            eprintln!("UPDATE {} {cloudlet} {target}", self.clock.now());
        }
        tokio::time::sleep(self.rtt()).await;
        {
            let snapshot = self.sim.cloudlet(region, &key.organization, &key.name);
            let now = self.clock.now();
            let mut r = lock(&self.rec);
            if let Some(e) = r.requests.get_mut(id) {
                e.sent_at = now;
                e.arrived = true;
                if let Some(s) = snapshot {
                    e.state_at_send = s.maintenance_state;
                    e.update_error_at_send = s.state == mc_sim::TrackedState::UpdateError;
                }
            }
        }
        let rec = Arc::clone(&self.rec);
        let clock = Arc::clone(&self.clock);
        let mut accepted = false;
        let result = self
            .sim
            .update(
                region,
                &key.organization,
                &key.name,
                requested(target),
                |line: &str| {
                    if !accepted {
                        accepted = true;
                        if let Some(e) = lock(&rec).requests.get_mut(id) {
                            e.accepted_at = Some(clock.now());
                        }
                    }
                    progress(line);
                },
            )
            .await
            .map_err(|f| client_error(f, region, key));
        let now = self.clock.now();
        {
            let mut r = lock(&self.rec);
            if let Some(e) = r.requests.get_mut(id) {
                e.ended_at = Some(now);
                e.outcome = Some(result.clone());
            }
        }
        if let Err(e) = &result {
            self.note_error(&cloudlet, e);
        }
        drop(guard);
        result
    }
}
