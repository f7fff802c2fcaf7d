//! The Master Controller REST API under `/api/v1`, as `controller-protocol.md` §3 describes it.
//!
//! This module exists to get the *wire* right: status codes, the exact messages, NDJSON streams,
//! the NormalOperation path that writes nothing until the CRM answered, the 502 of the reverse
//! proxy in front, and Go's case-insensitive JSON field names. The state machine itself is in
//! `state.rs` and `runner.rs`.
//!
//! Every request is handled in a task of its own (see [`record`]), so a client that disconnects
//! never cancels a handler half-way, and every request is recorded in the history with its final
//! status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::runner::{self, Aborted, Line, Progress};
use crate::scenario::Location;
use crate::state::{self, MaintenanceState, Plan, msg};
use crate::world::{ActionGuard, Cloudlet, RequestRecord, Sim, TokenError, World, key_json};

/// Request bodies larger than this are refused (the API only takes small JSON objects).
const MAX_BODY: usize = 1 << 20;

const BAD_GATEWAY_HTML: &str = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";

pub(crate) fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/api/v1/login", post(login))
        .route("/api/v1/auth/ctrl/ShowCloudlet", post(show_cloudlet))
        .route(
            "/api/v1/auth/ctrl/ShowCloudletInfo",
            post(show_cloudlet_info),
        )
        .route("/api/v1/auth/ctrl/UpdateCloudlet", post(update_cloudlet))
        .route("/api/v1/auth/events/show", post(show_events))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(sim.clone(), record))
        .with_state(sim)
}

/// An error answered before any streaming: status and `{"message": ...}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(
            self.status,
            &serde_json::json!({"message": self.message}).to_string(),
        )
    }
}

pub(crate) fn json_response(status: StatusCode, body: &str) -> Response {
    let mut res = (status, body.to_string()).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The authenticated user of a request, handed from the handler to [`record`] through the
/// response's extensions.
#[derive(Debug, Clone)]
struct UserTag(String);

fn tagged(mut res: Response, user: &str) -> Response {
    res.extensions_mut().insert(UserTag(user.to_string()));
    res
}

/// Middleware: buffers the body, runs the handler in its own task (so a disconnect cannot cancel
/// it), logs the request without secrets and appends it to the history.
async fn record(State(sim): State<Arc<Sim>>, req: Request, next: Next) -> Response {
    let stamp = sim.stamp();
    let started = Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            .into_response();
    };
    let recorded = redact(serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|_| {
        if bytes.is_empty() {
            Value::Null
        } else {
            Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }
    }));
    let login_user = (path == "/api/v1/login")
        .then(|| {
            recorded
                .get("username")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .flatten();
    let req = Request::from_parts(parts, Body::from(bytes));
    let task = tokio::spawn(async move {
        let res = next.run(req).await;
        let user = res
            .extensions()
            .get::<UserTag>()
            .map(|u| u.0.clone())
            .or(login_user);
        let status = res.status().as_u16();
        tracing::info!(
            method = %method,
            path = %path,
            status,
            user = user.as_deref().unwrap_or("-"),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        sim.lock().requests.push(RequestRecord {
            stamp,
            method,
            path,
            user,
            status,
            body: recorded,
        });
        res
    });
    match task.await {
        Ok(res) => res,
        Err(e) => {
            tracing::error!("request handler failed: {e}");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
                .into_response()
        }
    }
}

/// Replaces every `"password"` value, at any depth, by `"<redacted>"`.
fn redact(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k.eq_ignore_ascii_case("password") {
                    *val = Value::from("<redacted>");
                } else {
                    *val = redact(val.take());
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = redact(item.take());
            }
        }
        _ => {}
    }
    v
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "Not Found").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into_response()
}

// ---------------------------------------------------------------------------------------------
// Request parsing. Go's encoding/json matches field names case-insensitively, so does this.

/// A field of a JSON object: exact name first, then case-insensitively.
fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    let map = obj.as_object()?;
    map.get(name).or_else(|| {
        map.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A type mismatch, worded like the MC's (echo's) binding error. `got` describes the value the
/// way Go's `json.UnmarshalTypeError` does ("number", "value Foo"). The real message ends with
/// `, offset=N` (a byte offset), which is left out here.
fn type_error_desc(expected: &str, got: &str, path: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid data: code=400, message=Unmarshal type error: expected={expected}, got={got}, field={path}"
    ))
}

fn type_error(expected: &str, got: &Value, path: &str) -> ApiError {
    type_error_desc(expected, json_kind(got), path)
}

fn parse_object(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "Invalid data: code=400, message=Syntax error: line={}, column={}, error={e}",
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(type_error("object", &v, "Body"));
    }
    Ok(v)
}

/// An optional string field; JSON `null` counts as absent.
fn opt_str<'a>(obj: &'a Value, name: &str, path: &str) -> Result<Option<&'a str>, ApiError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(type_error("string", other, path)),
    }
}

/// An optional object field.
fn opt_obj<'a>(obj: &'a Value, name: &str, path: &str) -> Result<Option<&'a Value>, ApiError> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(other) => Err(type_error("object", other, path)),
    }
}

/// The region and the cloudlet key filter of a Show/Update body.
struct Target<'a> {
    region: &'a str,
    cloudlet: Option<&'a Value>,
    org: Option<&'a str>,
    name: Option<&'a str>,
}

fn parse_target(body: &Value) -> Result<Target<'_>, ApiError> {
    let region = opt_str(body, "region", "Region")?.unwrap_or_default();
    let cloudlet = opt_obj(body, "cloudlet", "Cloudlet")?;
    let key = match cloudlet {
        Some(c) => opt_obj(c, "key", "Cloudlet.key")?,
        None => None,
    };
    let (org, name) = match key {
        Some(k) => (
            opt_str(k, "organization", "Cloudlet.key.organization")?,
            opt_str(k, "name", "Cloudlet.key.name")?,
        ),
        None => (None, None),
    };
    Ok(Target {
        region,
        cloudlet,
        org: org.filter(|s| !s.is_empty()),
        name: name.filter(|s| !s.is_empty()),
    })
}

fn check_region(w: &World, region: &str) -> Result<(), ApiError> {
    if region.is_empty() {
        return Err(ApiError::bad_request("No region specified"));
    }
    if !w.has_region(region) {
        return Err(ApiError::bad_request(format!(
            "Region \"{region}\" not found"
        )));
    }
    Ok(())
}

/// The "nginx" in front of the controller: a request that names a cloudlet whose
/// `error_5xx_rate` die comes up gets a 502 and reaches nothing.
pub(crate) fn roll_bad_gateway(sim: &Sim, bytes: &[u8]) -> Option<Response> {
    let body: Value = serde_json::from_slice(bytes).ok()?;
    let t = parse_target(&body).ok()?;
    let (org, name) = (t.org?, t.name?);
    let mut w = sim.lock();
    let idx = w.find(t.region, org, name)?;
    let rate = w.cloudlets.get(idx)?.knobs.error_5xx_rate;
    if !w.roll(rate) {
        return None;
    }
    let mut res = (StatusCode::BAD_GATEWAY, BAD_GATEWAY_HTML).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
    Some(res)
}

/// Resolves `Authorization: Bearer X` to a user name.
fn authenticate(sim: &Sim, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::bad_request("No bearer token found"))?;
    sim.lock().check_token(token).map_err(|e| match e {
        TokenError::Invalid => ApiError::new(StatusCode::UNAUTHORIZED, "Invalid or expired jwt"),
        TokenError::Expired => ApiError::bad_request("expired jwt"),
    })
}

// ---------------------------------------------------------------------------------------------
// Login.

async fn login(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Response {
    let body = match parse_object(&bytes) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let username = field(&body, "username")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let password = field(&body, "password")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut w = sim.lock();
    let ok = w
        .user(username)
        .is_some_and(|u| !username.is_empty() && u.password == password);
    if !ok {
        return ApiError::bad_request("Invalid username or password").into_response();
    }
    let admin = w.is_admin(username);
    let token = w.issue_token(username);
    drop(w);
    let body = if admin {
        serde_json::json!({"token": token, "admin": true})
    } else {
        serde_json::json!({"token": token})
    };
    tagged(json_response(StatusCode::OK, &body.to_string()), username)
}

// ---------------------------------------------------------------------------------------------
// Show.

#[derive(Serialize)]
struct DataLine<T> {
    data: T,
}

#[derive(Serialize)]
struct KeyOut<'a> {
    organization: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct CloudletOut<'a> {
    key: KeyOut<'a>,
    location: Location,
    ip_support: Value,
    num_dynamic_ips: u32,
    state: Value,
    platform_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance_state: Option<Value>,
}

#[derive(Serialize)]
struct CloudletInfoOut<'a> {
    key: KeyOut<'a>,
    state: Value,
    notify_id: u32,
    controller: String,
    os_max_ram: u32,
    os_max_vcores: u32,
    os_max_vol_gb: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    maintenance_state: Option<Value>,
}

fn key_out(c: &Cloudlet) -> KeyOut<'_> {
    KeyOut {
        organization: &c.organization,
        name: &c.name,
    }
}

/// NormalOperation (the zero value) is omitted, as Go's `omitempty` does.
fn maintenance_out(m: MaintenanceState, integer: bool) -> Option<Value> {
    (m != MaintenanceState::NormalOperation).then(|| m.to_json(integer))
}

fn cloudlet_out(c: &Cloudlet) -> CloudletOut<'_> {
    let int = c.knobs.integer_enums;
    CloudletOut {
        key: key_out(c),
        location: c.location,
        ip_support: if int {
            Value::from(2)
        } else {
            Value::from("Dynamic")
        },
        num_dynamic_ips: 254,
        state: c.tracked.to_json(int),
        platform_type: "Fakeinfra",
        maintenance_state: maintenance_out(c.stored, int),
    }
}

fn cloudlet_info_out(c: &Cloudlet) -> CloudletInfoOut<'_> {
    let int = c.knobs.integer_enums;
    CloudletInfoOut {
        key: key_out(c),
        state: if int {
            Value::from(2)
        } else {
            Value::from("CloudletStateReady")
        },
        notify_id: 1,
        controller: "127.0.0.1:55001".to_string(),
        os_max_ram: 40960,
        os_max_vcores: 50,
        os_max_vol_gb: 5000,
        maintenance_state: maintenance_out(c.info, int),
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ShowKind {
    Cloudlet,
    CloudletInfo,
}

async fn show_cloudlet(State(sim): State<Arc<Sim>>, headers: HeaderMap, bytes: Bytes) -> Response {
    show(&sim, &headers, &bytes, ShowKind::Cloudlet)
}

async fn show_cloudlet_info(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    show(&sim, &headers, &bytes, ShowKind::CloudletInfo)
}

fn show(sim: &Sim, headers: &HeaderMap, bytes: &[u8], kind: ShowKind) -> Response {
    if let Some(res) = roll_bad_gateway(sim, bytes) {
        return res;
    }
    let user = match authenticate(sim, headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let res = show_lines(sim, bytes, kind).unwrap_or_else(IntoResponse::into_response);
    tagged(res, &user)
}

pub(crate) fn show_lines(sim: &Sim, bytes: &[u8], kind: ShowKind) -> Result<Response, ApiError> {
    let body = parse_object(bytes)?;
    let t = parse_target(&body)?;
    let w = sim.lock();
    check_region(&w, t.region)?;
    let mut out = String::new();
    for c in w.cloudlets.iter().filter(|c| {
        c.region == t.region
            && t.org.is_none_or(|o| o == c.organization)
            && t.name.is_none_or(|n| n == c.name)
    }) {
        let line = match kind {
            ShowKind::Cloudlet => serde_json::to_string(&DataLine {
                data: cloudlet_out(c),
            }),
            ShowKind::CloudletInfo => serde_json::to_string(&DataLine {
                data: cloudlet_info_out(c),
            }),
        };
        let line = line.map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}"))
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(json_response(StatusCode::OK, &out))
}

// ---------------------------------------------------------------------------------------------
// Update.

async fn update_cloudlet(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(res) = roll_bad_gateway(&sim, &bytes) {
        return res;
    }
    let user = match authenticate(&sim, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let res = match update(&sim, &user, &bytes).await {
        Ok(res) => res,
        Err(e) => e.into_response(),
    };
    tagged(res, &user)
}

/// The requested `maintenance_state`. Integers outside the enum get through the unmarshaller
/// (the controller's validation refuses them later); unknown names do not.
enum Requested {
    Known(MaintenanceState),
    Unknown(i64),
}

fn parse_requested(v: Option<&Value>) -> Result<Requested, ApiError> {
    const EXPECTED: &str = "dme.MaintenanceState";
    const PATH: &str = "Cloudlet.maintenance_state";
    match v {
        // Absent is the zero value, NormalOperation.
        None | Some(Value::Null) => Ok(Requested::Known(MaintenanceState::NormalOperation)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(MaintenanceState::from_number(i)
                .map(Requested::Known)
                .unwrap_or(Requested::Unknown(i))),
            None => Err(type_error_desc(EXPECTED, &format!("number {n}"), PATH)),
        },
        Some(Value::String(s)) => MaintenanceState::from_name(s)
            .map(Requested::Known)
            .ok_or_else(|| type_error_desc(EXPECTED, &format!("value {s}"), PATH)),
        Some(other) => Err(type_error(EXPECTED, other, PATH)),
    }
}

/// `util.ValidName` of the controller: a letter or digit, then letters, digits and `-_ .&,!`.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "-_ .&,!".contains(c))
}

fn validate_key(org: &str, name: &str) -> Result<(), ApiError> {
    if !valid_name(org) {
        return Err(ApiError::bad_request("Invalid organization name"));
    }
    if !valid_name(name) {
        return Err(ApiError::bad_request("Invalid cloudlet name"));
    }
    Ok(())
}

/// What the handler decided while holding the world lock.
enum Started {
    Done(Response),
    Enter {
        guard: ActionGuard,
        failover: bool,
        drop_after_first_line: bool,
    },
    Exit(ActionGuard),
}

pub(crate) async fn update(sim: &Arc<Sim>, user: &str, bytes: &[u8]) -> Result<Response, ApiError> {
    let body = parse_object(bytes)?;
    let t = parse_target(&body)?;
    let (org, name) = (t.org.unwrap_or_default(), t.name.unwrap_or_default());
    let empty = Value::Object(Default::default());
    let cloudlet = t.cloudlet.unwrap_or(&empty);
    let requested = parse_requested(field(cloudlet, "maintenance_state"))?;
    let has_field = match field(cloudlet, "fields") {
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(s) => found |= s == state::MAINTENANCE_STATE_FIELD,
                    other => return Err(type_error("string", other, "Cloudlet.fields")),
                }
            }
            found
        }
        Some(other) => return Err(type_error("array", other, "Cloudlet.fields")),
    };

    let started = {
        let mut w = sim.lock();
        if !w.may_update(user, org) {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "Forbidden"));
        }
        check_region(&w, t.region)?;
        validate_key(org, name)?;
        let requested = match requested {
            Requested::Known(m) if has_field => {
                state::check_requested(m).map_err(|r| ApiError::bad_request(r.message()))?;
                m
            }
            Requested::Known(m) => m,
            Requested::Unknown(_) if has_field => {
                return Err(ApiError::bad_request(state::msg::INVALID_STATE));
            }
            Requested::Unknown(n) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid MaintenanceState value {n}"
                )));
            }
        };
        let idx = w.find(t.region, org, name).ok_or_else(|| {
            ApiError::bad_request(format!("Cloudlet key {} not found", key_json(org, name)))
        })?;
        let Some(c) = w.cloudlets.get(idx) else {
            return Err(ApiError::bad_request("Cloudlet vanished"));
        };
        // The lock is checked before the state: a retry after a dropped stream must hear that
        // the first request is still running, not that the state is wrong.
        let in_progress = ApiError::bad_request(format!(
            "An action is already in progress for the object {}",
            c.key_json()
        ));
        if c.busy {
            return Err(in_progress);
        }
        let drop_after_first_line = c.knobs.drop_after_first_line;
        let plan = state::plan(has_field, requested, c.stored)
            .map_err(|r| ApiError::bad_request(r.message()))?;
        match plan {
            Plan::NoChange => Started::Done(one_line(msg::UPDATED)),
            Plan::Enter { failover } => match sim.try_begin(&mut w, idx) {
                Some(guard) => Started::Enter {
                    guard,
                    failover,
                    drop_after_first_line,
                },
                None => return Err(in_progress),
            },
            Plan::Exit => match sim.try_begin(&mut w, idx) {
                Some(guard) => Started::Exit(guard),
                None => return Err(in_progress),
            },
        }
    };

    match started {
        Started::Done(res) => Ok(res),
        Started::Enter {
            guard,
            failover,
            drop_after_first_line,
        } => {
            let (tx, rx) = mpsc::unbounded_channel();
            runner::spawn_enter(sim.clone(), guard, failover, tx);
            let mut res = Response::new(stream_body(rx, drop_after_first_line));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(res)
        }
        Started::Exit(guard) => {
            // Nothing is written, not even headers, until the CRM answered or T elapsed.
            let (tx, rx) = oneshot::channel();
            runner::spawn_exit(sim.clone(), guard, tx);
            match rx.await {
                Ok(Ok(())) => Ok(one_line(msg::BACK_TO_NORMAL)),
                Ok(Err(message)) => Err(ApiError::bad_request(message)),
                Err(_) => Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Controller is shutting down",
                )),
            }
        }
    }
}

fn one_line(message: &str) -> Response {
    json_response(
        StatusCode::OK,
        &Line::Data(message.to_string()).to_json_line(),
    )
}

/// The streamed body of a start request: one NDJSON line per message, flushed as it comes.
/// With `drop_after_first_line` the stream fails once the first line is out and the handshake
/// has moved on, which makes hyper close the connection mid-body.
fn stream_body(rx: mpsc::UnboundedReceiver<Progress>, drop_after_first_line: bool) -> Body {
    fn cut(why: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.to_string())
    }
    struct State {
        rx: mpsc::UnboundedReceiver<Progress>,
        sent: usize,
        failed: bool,
    }
    let init = State {
        rx,
        sent: 0,
        failed: false,
    };
    let lines = futures_util::stream::unfold(init, move |mut st| async move {
        if st.failed {
            return None;
        }
        if drop_after_first_line && st.sent == 1 {
            // Wait until the handshake moved on (or ended) so the first line is flushed first.
            let _ = st.rx.recv().await;
            st.failed = true;
            return Some((Err(cut("simulated connection drop")), st));
        }
        match st.rx.recv().await? {
            Ok(line) => {
                st.sent += 1;
                Some((Ok(Bytes::from(line.to_json_line())), st))
            }
            Err(Aborted) => {
                st.failed = true;
                Some((Err(cut("simulator shutting down")), st))
            }
        }
    });
    Body::from_stream(lines)
}

// ---------------------------------------------------------------------------------------------
// Events.

/// `POST /api/v1/auth/events/show`. Approximates the MC's Elasticsearch-backed search: the body
/// may hold `match` (`names`, `orgs`, `regions`, `types`: any-of lists; `tags`: all must equal),
/// `starttime` / `endtime` (RFC 3339) and `limit`. Newest first.
async fn show_events(State(sim): State<Arc<Sim>>, headers: HeaderMap, bytes: Bytes) -> Response {
    let user = match authenticate(&sim, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let res = events(&sim, &user, &bytes).unwrap_or_else(IntoResponse::into_response);
    tagged(res, &user)
}

fn string_list(obj: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(v) = obj.and_then(|o| field(o, name)) else {
        return Ok(None);
    };
    match v {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error("string", i, &format!("match.{name}")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|l| (!l.is_empty()).then_some(l)),
        other => Err(type_error("array", other, &format!("match.{name}"))),
    }
}

fn time_bound(body: &Value, name: &str) -> Result<Option<std::time::SystemTime>, ApiError> {
    match opt_str(body, name, name)? {
        None | Some("") => Ok(None),
        Some(s) => humantime::parse_rfc3339_weak(s)
            .map(Some)
            .map_err(|e| ApiError::bad_request(format!("Invalid {name} {s:?}: {e}"))),
    }
}

fn events(sim: &Sim, user: &str, bytes: &[u8]) -> Result<Response, ApiError> {
    let body = parse_object(bytes)?;
    let m = opt_obj(&body, "match", "match")?;
    let names = string_list(m, "names")?;
    let orgs = string_list(m, "orgs")?;
    let regions = string_list(m, "regions")?;
    let types = string_list(m, "types")?;
    let tags: BTreeMap<String, String> = match m.and_then(|m| field(m, "tags")) {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.clone(), s.to_string()))
                    .ok_or_else(|| type_error("string", v, "match.tags"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(type_error("object", other, "match.tags")),
    };
    let start = time_bound(&body, "starttime")?;
    let end = time_bound(&body, "endtime")?;
    let limit = match field(&body, "limit") {
        None | Some(Value::Null) => usize::MAX,
        Some(v) => v
            .as_u64()
            .map(|l| if l == 0 { usize::MAX } else { l as usize })
            .ok_or_else(|| type_error("int", v, "limit"))?,
    };
    let any_of = |list: &Option<Vec<String>>, value: &str| {
        list.as_ref().is_none_or(|l| l.iter().any(|x| x == value))
    };
    let w = sim.lock();
    let visible = w.visible_orgs(user);
    let selected: Vec<_> = w
        .events
        .iter()
        .rev()
        .filter(|e| {
            visible
                .as_ref()
                .is_none_or(|v| e.org.iter().any(|o| v.contains(o)))
                && any_of(&names, &e.name)
                && any_of(&regions, &e.region)
                && any_of(&types, &e.kind)
                && orgs
                    .as_ref()
                    .is_none_or(|l| e.org.iter().any(|o| l.contains(o)))
                && tags.iter().all(|(k, v)| e.tags.get(k) == Some(v))
                && start.is_none_or(|s| e.time >= s)
                && end.is_none_or(|s| e.time <= s)
        })
        .take(limit)
        .collect();
    let text = serde_json::to_string(&selected)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding: {e}")))?;
    Ok(json_response(StatusCode::OK, &text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_at_any_depth() {
        let v = serde_json::json!({"username": "u", "password": "p",
            "nested": [{"Password": "q"}]});
        let r = redact(v);
        assert_eq!(r["password"], "<redacted>");
        assert_eq!(r["nested"][0]["Password"], "<redacted>");
        assert_eq!(r["username"], "u");
    }

    #[test]
    fn fields_match_case_insensitively() {
        let v = serde_json::json!({"Region": "EU", "Cloudlet": {"Key": {"Organization": "TDG"}}});
        let t = parse_target(&v).unwrap();
        assert_eq!(t.region, "EU");
        assert_eq!(t.org, Some("TDG"));
        assert_eq!(t.name, None);
    }
}
