//! The simulator's own control API under `/_sim/`: no authentication, JSON in and out.
//!
//! The real controller has no such thing. It exists so that a test can look at what happened
//! (the ordered history of transitions, requests and events; the full current state) and steer
//! what happens next (change knobs, act "by hand", restart a CRM, expire tokens, speed time up)
//! without reaching into the process. Only the simulator's binary and tests should ever call it.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::{ApiError, json_response};
use crate::scenario::{Knobs, KnobsPatch};
use crate::state::{MaintenanceState, TrackedState};
use crate::world::{Actor, Sim, World};

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/_sim/history", get(history))
        .route("/_sim/cloudlets", get(cloudlets))
        .route("/_sim/knobs", post(knobs))
        .route("/_sim/state", post(set_state))
        .route("/_sim/crm_restart", post(crm_restart))
        .route("/_sim/expire_tokens", post(expire_tokens))
        .route("/_sim/time_scale", get(get_time_scale).post(set_time_scale))
        .layer(middleware::from_fn(log_request))
        .with_state(sim)
}

/// Logs each control request (they are not part of the recorded history).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = next.run(req).await;
    tracing::info!(method = %method, path = %path, status = res.status().as_u16(), "control request");
    res
}

fn ok_json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(text) => json_response(StatusCode::OK, &text),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}"))
            .into_response(),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

/// Selects cloudlets; an omitted field matches every cloudlet.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selector {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl Selector {
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

    fn describe(&self) -> String {
        let part = |p: &Option<String>| p.clone().unwrap_or_else(|| "*".to_string());
        format!(
            "{}/{}/{}",
            part(&self.region),
            part(&self.organization),
            part(&self.name)
        )
    }
}

fn no_match(sel: &Selector) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no cloudlet matches {}", sel.describe()),
    )
}

// ---------------------------------------------------------------------------------------------

async fn history(State(sim): State<Arc<Sim>>) -> Response {
    let w = sim.lock();
    ok_json(&serde_json::json!({
        "transitions": w.transitions,
        "requests": w.requests,
        "events": w.events,
    }))
}

#[derive(Serialize)]
struct CloudletView<'a> {
    region: &'a str,
    organization: &'a str,
    name: &'a str,
    /// The stored `Cloudlet.maintenance_state`, always CamelCase here.
    maintenance_state: MaintenanceState,
    /// The tracked `Cloudlet.state`.
    state: TrackedState,
    /// `CloudletInfo.maintenance_state` as the CRM last reported it.
    cloudlet_info_maintenance_state: MaintenanceState,
    /// A handshake holds the per-cloudlet action lock.
    busy: bool,
    /// The CRM missed a request and ignores everything until `/_sim/crm_restart`.
    crm_stuck: bool,
    knobs: &'a Knobs,
}

fn views(w: &World, indices: impl IntoIterator<Item = usize>) -> Vec<CloudletView<'_>> {
    indices
        .into_iter()
        .filter_map(|i| w.cloudlets.get(i))
        .map(|c| CloudletView {
            region: &c.region,
            organization: &c.organization,
            name: &c.name,
            maintenance_state: c.stored,
            state: c.tracked,
            cloudlet_info_maintenance_state: c.info,
            busy: c.busy,
            crm_stuck: c.crm_stuck,
            knobs: &c.knobs,
        })
        .collect()
}

async fn cloudlets(State(sim): State<Arc<Sim>>) -> Response {
    let w = sim.lock();
    ok_json(&views(&w, 0..w.cloudlets.len()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobsBody {
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    organization: Option<String>,
    #[serde(default)]
    name: Option<String>,
    knobs: KnobsPatch,
}

/// `POST /_sim/knobs`: merges a knob patch into every selected cloudlet.
async fn knobs(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Response {
    let run = || -> Result<Response, ApiError> {
        let body: KnobsBody = parse(&bytes)?;
        body.knobs.validate().map_err(ApiError::bad_request)?;
        let sel = Selector {
            region: body.region,
            organization: body.organization,
            name: body.name,
        };
        let mut w = sim.lock();
        let matched = sel.matches(&w);
        if matched.is_empty() {
            return Err(no_match(&sel));
        }
        for &i in &matched {
            if let Some(c) = w.cloudlets.get_mut(i) {
                c.knobs.apply(&body.knobs);
            }
        }
        tracing::info!("knobs of {} changed: {:?}", sel.describe(), body.knobs);
        Ok(ok_json(&views(&w, matched)))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    region: String,
    organization: String,
    name: String,
    maintenance_state: MaintenanceState,
    /// Optionally also the tracked state (`Ready` / `UpdateError`).
    #[serde(default)]
    state: Option<TrackedState>,
}

/// `POST /_sim/state`: a person changing the stored state by hand (or a test's setup).
async fn set_state(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Response {
    let run = || -> Result<Response, ApiError> {
        let body: StateBody = parse(&bytes)?;
        if !body.maintenance_state.is_stored_on_cloudlet() {
            return Err(ApiError::bad_request(format!(
                "{} is never stored on a Cloudlet",
                body.maintenance_state
            )));
        }
        let stamp = sim.stamp();
        let mut w = sim.lock();
        let Some(idx) = w.find(&body.region, &body.organization, &body.name) else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no cloudlet {}/{}/{}",
                    body.region, body.organization, body.name
                ),
            ));
        };
        if w.cloudlets.get(idx).is_some_and(|c| c.busy) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "an action is in progress on this cloudlet",
            ));
        }
        w.store(idx, body.maintenance_state, Actor::Manual, stamp);
        if let Some(c) = w.cloudlets.get_mut(idx) {
            // Keep the CRM's view consistent with a completed hand-made change.
            match body.maintenance_state {
                MaintenanceState::UnderMaintenance => {
                    c.info = MaintenanceState::CrmUnderMaintenance;
                }
                MaintenanceState::NormalOperation => c.info = MaintenanceState::NormalOperation,
                _ => {}
            }
            if let Some(t) = body.state {
                c.tracked = t;
            }
        }
        Ok(ok_json(&views(&w, [idx])))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `POST /_sim/crm_restart`: the CRM of every selected cloudlet restarts. It is healthy again
/// (`crm_no_ack` and the stuck latch are cleared), a CRM wait in progress gets its
/// acknowledgement, and a cloudlet left in NormalOperationInit goes back to NormalOperation.
async fn crm_restart(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Response {
    let run = || -> Result<Response, ApiError> {
        let sel: Selector = parse(&bytes)?;
        let stamp = sim.stamp();
        let mut w = sim.lock();
        let matched = sel.matches(&w);
        if matched.is_empty() {
            return Err(no_match(&sel));
        }
        w.restart_crms(&matched, stamp);
        Ok(ok_json(&views(&w, matched)))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn expire_tokens(State(sim): State<Arc<Sim>>) -> Response {
    let n = sim.lock().expire_tokens();
    tracing::info!("expired {n} tokens");
    ok_json(&serde_json::json!({ "expired": n }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeScaleBody {
    time_scale: f64,
}

async fn get_time_scale(State(sim): State<Arc<Sim>>) -> Response {
    let scale = sim.lock().time_scale;
    ok_json(&serde_json::json!({ "time_scale": scale }))
}

/// `POST /_sim/time_scale`: applies to every wait and token issued from now on; a wait already
/// in progress keeps the duration it started with.
async fn set_time_scale(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Response {
    let run = || -> Result<Response, ApiError> {
        let body: TimeScaleBody = parse(&bytes)?;
        if !body.time_scale.is_finite() || body.time_scale < 0.0 {
            return Err(ApiError::bad_request(format!(
                "time_scale must be finite and >= 0, got {}",
                body.time_scale
            )));
        }
        sim.lock().time_scale = body.time_scale;
        tracing::info!("time scale set to {}", body.time_scale);
        Ok(ok_json(
            &serde_json::json!({ "time_scale": body.time_scale }),
        ))
    };
    run().unwrap_or_else(IntoResponse::into_response)
}
