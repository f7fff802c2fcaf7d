//! The status endpoint: a small, read-only HTTP view of the engine's published snapshot.
//!
//! Why it exists: an operator (or a monitoring probe) must be able to see what the daemon plans
//! and what it did without reading logs, and a service manager or load balancer needs a liveness
//! check that fails when the timer loop stops waking up. Everything served here comes from the
//! [`StatusSnapshot`] the engine publishes through a `watch` channel, so a request never touches
//! the engine's state, the journal or the controller.
//!
//! Exposure: the default listen address is loopback. Binding anything else without a bearer token
//! is refused by [`check_exposure`] unless `status.allow_unauthenticated` says so explicitly. When
//! a token is configured every route except `/healthz` requires `Authorization: Bearer <token>`,
//! compared in constant time; the token never appears in a log line or a response.
//!
//! Routes (all JSON, `Cache-Control: no-store`):
//! - `GET /healthz`: 200 while the timer loop's last wake is within [`HEALTHY_TICK_AGE`] of the
//!   real current time, else 503 with a reason (also before the first snapshot).
//! - `GET /v1/status`: the whole snapshot.
//! - `GET /v1/cloudlets`: the snapshot's cloudlets.
//! - `GET /v1/cloudlets/{region}/{org}/{name}`: one cloudlet, or 404.
//! - `GET /v1/plan?from=…&until=…&cloudlet=…`: planned spans, the same shape as `plan --json`.
//! - `GET /v1/windows`: every window file with its windows, errors, warnings and stale flag.
//! - `GET /metrics`: Prometheus/OpenMetrics exposition (see [`crate::metrics`]).
//! - `GET /`: the timeline page (see [`crate::timeline`]).
//!
//! The API is described in `docs/openapi.yaml`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, StatusConfig};
use crate::engine::{PublishedPlan, StatusSnapshot};
use crate::metrics::Metrics;
use crate::plan::SpanJson;

/// `/healthz` is healthy while the last tick is at most this far from the real current time.
/// The timer loop wakes at least every 30 s, so three missed wakes make it unhealthy.
pub const HEALTHY_TICK_AGE: Duration = Duration::from_secs(90);

/// After shutdown is requested, open connections get this long to finish before [`serve`]
/// returns anyway (a client holding a keep-alive connection must not stall the daemon's exit).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

const UNAUTHORIZED_MESSAGE: &str = "missing or wrong bearer token";

/// What the endpoint serves: the engine's published snapshot and plan, and the metrics.
#[derive(Clone)]
pub struct StatusSources {
    pub status: watch::Receiver<Arc<StatusSnapshot>>,
    pub plan: watch::Receiver<PublishedPlan>,
    pub metrics: Arc<Metrics>,
}

impl From<watch::Receiver<Arc<StatusSnapshot>>> for StatusSources {
    /// Only a snapshot: an empty plan and metrics without events.
    fn from(status: watch::Receiver<Arc<StatusSnapshot>>) -> Self {
        // A receiver keeps the last value after its sender is gone: an empty plan, for good.
        let (_, plan) = watch::channel(Arc::new(Vec::new()));
        StatusSources {
            status,
            plan,
            metrics: Arc::new(Metrics::new()),
        }
    }
}

#[derive(Clone)]
struct AppState {
    status: watch::Receiver<Arc<StatusSnapshot>>,
    plan: watch::Receiver<PublishedPlan>,
    metrics: Arc<Metrics>,
    token: Option<Arc<Secret>>,
    bodies: Arc<SnapshotBodies>,
}

/// A body serialized from one snapshot, kept while that snapshot is the current one.
type CachedBody = tokio::sync::Mutex<Option<(std::sync::Weak<StatusSnapshot>, Bytes)>>;

/// The bodies of `/v1/status`, `/v1/cloudlets` and `/metrics`, made once per published
/// snapshot and shared by every request until the next one: at 10,000 cloudlets a JSON body is
/// ~8 MB and takes tens of milliseconds to serialize, and the engine publishes at most every
/// 200 ms. (The metrics' counters move with engine events, and every such event makes the
/// engine publish a new snapshot within 200 ms, so a cached scrape is at most that old.)
#[derive(Default)]
struct SnapshotBodies {
    status: CachedBody,
    cloudlets: CachedBody,
    metrics: CachedBody,
}

/// `slot`'s body if it was made from `snapshot`, else `make(snapshot)` (stored for the next
/// request). Concurrent requests for a new snapshot wait for one serialization.
async fn cached_json(
    slot: &CachedBody,
    snapshot: &Arc<StatusSnapshot>,
    make: impl FnOnce(&StatusSnapshot) -> serde_json::Result<Vec<u8>>,
) -> Response {
    cached_body(slot, snapshot, "application/json", |s| {
        make(s).map_err(|e| format!("cannot serialize the status: {e}"))
    })
    .await
}

/// [`cached_json`] for any body.
async fn cached_body(
    slot: &CachedBody,
    snapshot: &Arc<StatusSnapshot>,
    content_type: &'static str,
    make: impl FnOnce(&StatusSnapshot) -> Result<Vec<u8>, String>,
) -> Response {
    let mut cached = slot.lock().await;
    let body = match &*cached {
        // A `Weak` keeps the allocation, so its address cannot be reused by a later snapshot.
        Some((weak, body)) if std::ptr::eq(weak.as_ptr(), Arc::as_ptr(snapshot)) => body.clone(),
        _ => match make(snapshot) {
            Ok(bytes) => {
                let body = Bytes::from(bytes);
                *cached = Some((Arc::downgrade(snapshot), body.clone()));
                body
            }
            Err(e) => return error_response(StatusCode::INTERNAL_SERVER_ERROR, &e),
        },
    };
    drop(cached);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl AppState {
    /// The current snapshot (the `watch` borrow is released before anything else happens).
    fn snapshot(&self) -> Arc<StatusSnapshot> {
        Arc::clone(&*self.status.borrow())
    }
}

/// Serves the status endpoint on `listener` until `shutdown` is cancelled, then stops accepting,
/// lets in-flight requests finish (at most [`SHUTDOWN_DRAIN`]) and returns.
///
/// `token`: when set, every route except `/healthz` requires `Authorization: Bearer <token>`.
/// Call [`check_exposure`] on the configuration before binding the listener.
pub async fn serve(
    listener: TcpListener,
    sources: impl Into<StatusSources>,
    token: Option<Secret>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let authenticated = token.is_some();
    let sources = sources.into();
    let app = router(AppState {
        status: sources.status,
        plan: sources.plan,
        metrics: sources.metrics,
        token: token.map(Arc::new),
        bodies: Arc::new(SnapshotBodies::default()),
    });
    tracing::info!(listen = %local, authenticated, "status endpoint listening");

    let server = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    let drain_bound = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    tokio::select! {
        result = server => {
            tracing::debug!(listen = %local, "status endpoint stopped");
            result
        }
        () = drain_bound => {
            tracing::warn!(
                listen = %local,
                drain = %humantime::format_duration(SHUTDOWN_DRAIN),
                "status endpoint: connections still open after the drain period; closing anyway"
            );
            Ok(())
        }
    }
}

/// Refuses a configuration that would expose the status endpoint off loopback without
/// authentication. The message names the config keys to change.
pub fn check_exposure(cfg: &StatusConfig) -> Result<(), String> {
    if let Some(token) = &cfg.token
        && token.expose().trim().is_empty()
    {
        return Err(
            "status.token is empty: set a non-empty token (at least 16 random characters) or remove the key"
                .to_string(),
        );
    }
    let loopback = cfg.listen.ip().to_canonical().is_loopback();
    if loopback || cfg.token.is_some() {
        return Ok(());
    }
    if cfg.allow_unauthenticated {
        tracing::warn!(
            listen = %cfg.listen,
            "status endpoint is reachable off loopback without authentication (status.allow_unauthenticated = true)"
        );
        return Ok(());
    }
    Err(format!(
        "refusing to serve the status endpoint on {} without authentication: set status.token, \
         or listen on a loopback address (status.listen = \"127.0.0.1:7647\"), \
         or set status.allow_unauthenticated = true to expose it to anyone who can reach it",
        cfg.listen
    ))
}

fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(full_status))
        .route("/v1/cloudlets", get(cloudlets))
        .route("/v1/cloudlets/{region}/{org}/{name}", get(one_cloudlet))
        .route("/v1/plan", get(plan_spans))
        .route("/v1/windows", get(windows))
        .route("/metrics", get(metrics))
        .route("/", get(timeline_page))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A JSON response that no cache keeps (the snapshot changes every few seconds).
fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn error_response(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    if presented_token(request.headers()).is_some_and(|presented| {
        constant_time_eq(presented.as_bytes(), expected.expose().as_bytes())
    }) {
        return next.run(request).await;
    }
    tracing::debug!(path = %request.uri().path(), "status request rejected: missing or wrong bearer token");
    let mut response = error_response(StatusCode::UNAUTHORIZED, UNAUTHORIZED_MESSAGE);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The token of an `Authorization: Bearer <token>` header (scheme matched case-insensitively).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Compares without an early exit, so the time taken does not tell how much of a guess was
/// right. Runs over the presented bytes only (its length is the caller's own knowledge); an
/// empty expected token never matches.
fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if expected.is_empty() {
        return false;
    }
    let mut diff = u8::from(presented.len() != expected.len());
    for (i, byte) in presented.iter().enumerate() {
        diff |= byte ^ expected[i % expected.len()];
    }
    std::hint::black_box(diff) == 0
}

async fn healthz(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot();
    match tick_health(&snapshot.last_tick, Timestamp::now()) {
        Ok(()) => json_response(
            StatusCode::OK,
            &json!({ "ok": true, "last_tick": snapshot.last_tick }),
        ),
        Err(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ok": false, "last_tick": snapshot.last_tick, "reason": reason }),
        ),
    }
}

/// Whether a `last_tick` (RFC 3339) is close enough to `now`.
fn tick_health(last_tick: &str, now: Timestamp) -> Result<(), String> {
    if last_tick.is_empty() {
        return Err("the engine has not published a first snapshot yet".to_string());
    }
    let tick: Timestamp = last_tick
        .parse()
        .map_err(|e| format!("last_tick {last_tick:?} is not an RFC 3339 time: {e}"))?;
    let age = now.duration_since(tick);
    let limit = SignedDuration::try_from(HEALTHY_TICK_AGE).unwrap_or(SignedDuration::MAX);
    if age > limit {
        return Err(format!(
            "the timer loop has not woken for {}s (limit {}s): it is stuck or the process is starved",
            age.as_secs(),
            limit.as_secs()
        ));
    }
    if age < -limit {
        return Err(format!(
            "last_tick is {}s in the future: the wall clock was set back",
            -age.as_secs()
        ));
    }
    Ok(())
}

async fn full_status(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot();
    cached_json(&state.bodies.status, &snapshot, serde_json::to_vec).await
}

async fn cloudlets(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot();
    cached_json(&state.bodies.cloudlets, &snapshot, |s| {
        serde_json::to_vec(&s.cloudlets)
    })
    .await
}

async fn one_cloudlet(
    State(state): State<AppState>,
    Path((region, org, name)): Path<(String, String, String)>,
) -> Response {
    let snapshot = state.snapshot();
    let key = format!("{org}/{name}");
    match snapshot
        .cloudlets
        .iter()
        .find(|c| c.region == region && c.cloudlet == key)
    {
        Some(view) => json_response(StatusCode::OK, view),
        None => error_response(
            StatusCode::NOT_FOUND,
            &format!("cloudlet {key} in region {region} is not in any window"),
        ),
    }
}

/// Query of `/v1/plan`.
#[derive(Debug, serde::Deserialize)]
struct PlanQuery {
    from: Option<String>,
    until: Option<String>,
    cloudlet: Option<String>,
}

async fn plan_spans(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PlanQuery>,
) -> Response {
    let parse = |text: &Option<String>, default: Timestamp| -> Result<Timestamp, String> {
        match text {
            None => Ok(default),
            Some(t) => crate::commands::plan::parse_time(t),
        }
    };
    let now = Timestamp::now();
    let from = match parse(&q.from, now) {
        Ok(t) => t,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
    };
    let default_until = from
        .checked_add(SignedDuration::from_hours(24 * 14))
        .unwrap_or(from);
    let until = match parse(&q.until, default_until) {
        Ok(t) => t,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e),
    };
    let plan = Arc::clone(&*state.plan.borrow());
    let mut spans: Vec<(Timestamp, &SpanJson)> = plan
        .iter()
        .filter(|s| q.cloudlet.as_ref().is_none_or(|c| &s.cloudlet == c))
        .filter_map(|s| {
            let end = s.end.parse::<Timestamp>().ok()?;
            let enter = s.enter_at.parse::<Timestamp>().ok()?;
            (end > from && enter < until).then_some((enter, &**s))
        })
        .collect();
    // By enter time, then cloudlet (the engine publishes them per cloudlet).
    spans.sort_by(|a, b| (a.0, &a.1.cloudlet).cmp(&(b.0, &b.1.cloudlet)));
    let spans: Vec<&SpanJson> = spans.into_iter().map(|(_, s)| s).collect();
    json_response(StatusCode::OK, &spans)
}

async fn windows(State(state): State<AppState>) -> Response {
    json_response(StatusCode::OK, &state.snapshot().files)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let snapshot = state.snapshot();
    let metrics = &state.metrics;
    cached_body(
        &state.bodies.metrics,
        &snapshot,
        crate::metrics::CONTENT_TYPE,
        |s| Ok(metrics.render(s).into_bytes()),
    )
    .await
}

/// Query of `/`.
#[derive(Debug, serde::Deserialize)]
struct PageQuery {
    hours: Option<u32>,
    days: Option<u32>,
}

async fn timeline_page(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<PageQuery>,
) -> Response {
    let plan = Arc::clone(&*state.plan.borrow());
    let html = crate::timeline::render(
        &state.snapshot(),
        &plan,
        Timestamp::now(),
        q.hours
            .or(q.days.map(|d| d.saturating_mul(24)))
            .unwrap_or(crate::timeline::DEFAULT_HOURS),
    );
    let mut response = axum::response::Html(html).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not found; routes: /, /healthz, /metrics, /v1/status, /v1/cloudlets, /v1/cloudlets/{region}/{org}/{name}, /v1/plan, /v1/windows",
    )
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: the status endpoint is read-only (GET)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_only_equal() {
        assert!(constant_time_eq(b"s3cret-token", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-tokeN", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret-token"));
        assert!(!constant_time_eq(b"s3cret-token-and-more", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b"s3cret-token"));
        assert!(!constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(presented_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(presented_token(&h), None);
    }

    #[test]
    fn tick_health_judges_age_both_ways() {
        let now: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        assert!(tick_health("2026-03-01T11:59:00Z", now).is_ok());
        assert!(tick_health("2026-03-01T11:58:31Z", now).is_ok());
        let stale = tick_health("2026-03-01T11:58:00Z", now).unwrap_err();
        assert!(stale.contains("120s"), "{stale}");
        assert!(tick_health("2026-03-01T12:05:00Z", now).is_err());
        assert!(tick_health("", now).unwrap_err().contains("first snapshot"));
        assert!(
            tick_health("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
        // An offset other than Z is fine.
        assert!(tick_health("2026-03-01T13:59:30+02:00", now).is_ok());
    }
}
