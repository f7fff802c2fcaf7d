//! The status endpoint, served for real on 127.0.0.1:0 and queried over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudlet_maintd::config::{Secret, StatusConfig};
use cloudlet_maintd::engine::StatusSnapshot;
use cloudlet_maintd::engine::status::{CloudletView, Counts};
use cloudlet_maintd::status_http::{check_exposure, serve};
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "9f2c4e1a-status-token";
/// Deadline for the server to stop after cancellation (a bound, not a timing assertion).
const DEADLINE: Duration = Duration::from_secs(20);

struct Server {
    base: String,
    status: watch::Sender<Arc<StatusSnapshot>>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(snapshot: StatusSnapshot, token: Option<&str>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (status, rx) = watch::channel(Arc::new(snapshot));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listener,
            rx,
            token.map(Secret::new),
            shutdown.clone(),
        ));
        Server {
            base: format!("http://{addr}"),
            status,
            shutdown,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task).await;
        result.unwrap().unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    assert_eq!(
        response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{url}"
    );
    (status, response.json().await.unwrap())
}

fn cloudlet(region: &str, name: &str, owned: bool) -> CloudletView {
    CloudletView {
        region: region.into(),
        cloudlet: name.into(),
        observed: Some(
            if owned {
                "UnderMaintenance"
            } else {
                "NormalOperation"
            }
            .into(),
        ),
        desired: if owned { "maintenance" } else { "normal" }.into(),
        owned,
        lead_seconds: Some(1500),
        lead_source: Some("learned p95 + margin".into()),
        ..CloudletView::default()
    }
}

fn snapshot(last_tick: Timestamp) -> StatusSnapshot {
    StatusSnapshot {
        version: "0.1.0".into(),
        started_at: "2026-03-01T00:00:00Z".into(),
        last_tick: last_tick.to_string(),
        generation: 3,
        windows_dir: "/etc/cloudlet-maintd/windows.d".into(),
        counts: Counts {
            windows: 2,
            cloudlets: 2,
            in_maintenance: 1,
            owned: 1,
            ..Counts::default()
        },
        cloudlets: vec![
            Arc::new(cloudlet("EU", "TDG/berlin-1", true)),
            Arc::new(cloudlet("US", "TDG/berlin-1", false)),
        ],
        ..StatusSnapshot::default()
    }
}

fn ago(secs: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_secs(secs)
}

#[tokio::test]
async fn healthz_follows_last_tick() {
    let server = Server::start(StatusSnapshot::default(), None).await;
    let http = client();

    // Before the first snapshot.
    let (code, body) = get(&http, &server.url("/healthz"), None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ok"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("first snapshot"),
        "{body}"
    );

    let fresh = ago(5);
    server.status.send_replace(Arc::new(snapshot(fresh)));
    let (code, body) = get(&http, &server.url("/healthz"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["ok"], true);
    assert_eq!(body["last_tick"], fresh.to_string());

    server.status.send_replace(Arc::new(snapshot(ago(600))));
    let (code, body) = get(&http, &server.url("/healthz"), None).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["ok"], false);
    assert!(
        body["reason"].as_str().unwrap().contains("not woken"),
        "{body}"
    );

    server.stop().await;
}

#[tokio::test]
async fn status_and_cloudlets_as_json() {
    let snap = snapshot(ago(1));
    let server = Server::start(snap.clone(), None).await;
    let http = client();

    let (code, body) = get(&http, &server.url("/v1/status"), None).await;
    assert_eq!(code, StatusCode::OK);
    let back: StatusSnapshot = serde_json::from_value(body).unwrap();
    assert_eq!(back.last_tick, snap.last_tick);
    assert_eq!(back.generation, 3);
    assert_eq!(back.counts, snap.counts);
    assert_eq!(back.cloudlets, snap.cloudlets);

    let (code, body) = get(&http, &server.url("/v1/cloudlets"), None).await;
    assert_eq!(code, StatusCode::OK);
    let list: Vec<Arc<CloudletView>> = serde_json::from_value(body).unwrap();
    assert_eq!(list, snap.cloudlets);

    let (code, body) = get(&http, &server.url("/v1/cloudlets/US/TDG/berlin-1"), None).await;
    assert_eq!(code, StatusCode::OK);
    let one: CloudletView = serde_json::from_value(body).unwrap();
    assert_eq!(one, *snap.cloudlets[1]);

    let (code, body) = get(&http, &server.url("/v1/cloudlets/EU/TDG/berlin-9"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("TDG/berlin-9"),
        "{body}"
    );

    let (code, body) = get(&http, &server.url("/v1/nothing-here"), None).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string(), "{body}");

    let response = http.post(server.url("/v1/status")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");

    server.stop().await;
}

#[tokio::test]
async fn token_guards_everything_but_healthz() {
    let server = Server::start(snapshot(ago(1)), Some(TOKEN)).await;
    let http = client();

    for path in [
        "/v1/status",
        "/v1/cloudlets",
        "/v1/cloudlets/EU/TDG/berlin-1",
    ] {
        let url = server.url(path);
        for token in [None, Some("wrong"), Some("9f2c4e1a-status-tokeN"), Some("")] {
            let (code, body) = get(&http, &url, token).await;
            assert_eq!(code, StatusCode::UNAUTHORIZED, "{path} with {token:?}");
            assert_eq!(
                body,
                serde_json::json!({"error": "missing or wrong bearer token"})
            );
        }
        let (code, _) = get(&http, &url, Some(TOKEN)).await;
        assert_eq!(code, StatusCode::OK, "{path}");
    }

    // Wrong scheme.
    let response = http
        .get(server.url("/v1/status"))
        .basic_auth("user", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .unwrap(),
        "Bearer"
    );

    let (code, body) = get(&http, &server.url("/healthz"), None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["ok"], true);

    server.stop().await;
}

#[tokio::test]
async fn serve_returns_on_shutdown_with_an_idle_connection_open() {
    let server = Server::start(snapshot(ago(1)), None).await;
    let http = client();
    // Leaves a keep-alive connection in reqwest's pool.
    let (code, _) = get(&http, &server.url("/healthz"), None).await;
    assert_eq!(code, StatusCode::OK);
    server.stop().await;
    drop(http);
}

fn status_config(listen: &str, token: Option<&str>, allow_unauthenticated: bool) -> StatusConfig {
    StatusConfig {
        listen: listen.parse::<SocketAddr>().unwrap(),
        token: token.map(Secret::new),
        allow_unauthenticated,
    }
}

#[test]
fn exposure_off_loopback_needs_a_token_or_consent() {
    let err = check_exposure(&status_config("0.0.0.0:7647", None, false)).unwrap_err();
    assert!(err.contains("status.token"), "{err}");
    assert!(err.contains("status.allow_unauthenticated"), "{err}");
    assert!(err.contains("status.listen"), "{err}");
    assert!(check_exposure(&status_config("[::]:7647", None, false)).is_err());
    assert!(check_exposure(&status_config("192.0.2.10:7647", None, false)).is_err());

    assert!(check_exposure(&status_config("0.0.0.0:7647", None, true)).is_ok());
    assert!(check_exposure(&status_config("0.0.0.0:7647", Some(TOKEN), false)).is_ok());
    assert!(check_exposure(&status_config("127.0.0.1:7647", None, false)).is_ok());
    assert!(check_exposure(&status_config("127.0.0.53:7647", None, false)).is_ok());
    assert!(check_exposure(&status_config("[::1]:7647", None, false)).is_ok());
    assert!(check_exposure(&status_config("[::ffff:127.0.0.1]:7647", None, false)).is_ok());

    // An empty token would lock everyone out (or, worse, look like protection): refused.
    let err = check_exposure(&status_config("127.0.0.1:7647", Some("  "), false)).unwrap_err();
    assert!(err.contains("status.token is empty"), "{err}");
}

#[tokio::test]
async fn bodies_follow_each_new_snapshot() {
    // The JSON bodies are serialized once per snapshot and shared: a new snapshot must never
    // be answered with the previous one's body.
    let first = snapshot(ago(30));
    let server = Server::start(first.clone(), None).await;
    let http = client();
    for _ in 0..2 {
        let (_, body) = get(&http, &server.url("/v1/status"), None).await;
        assert_eq!(body["last_tick"], first.last_tick);
        let (_, body) = get(&http, &server.url("/v1/cloudlets"), None).await;
        assert_eq!(body.as_array().map(Vec::len), Some(2));
    }

    let mut second = snapshot(ago(1));
    second.cloudlets.truncate(1);
    server.status.send_replace(Arc::new(second.clone()));
    let (_, body) = get(&http, &server.url("/v1/status"), None).await;
    assert_eq!(body["last_tick"], second.last_tick);
    assert_ne!(second.last_tick, first.last_tick);
    let (_, body) = get(&http, &server.url("/v1/cloudlets"), None).await;
    assert_eq!(body.as_array().map(Vec::len), Some(1));

    server.stop().await;
}
