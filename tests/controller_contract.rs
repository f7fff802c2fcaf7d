//! The controller client against the simulated Master Controller (`mc-sim`), one test per
//! behaviour of `shared/controller-protocol.md`.
//!
//! Each test starts its own simulator on `127.0.0.1:0` with a small time scale (T = 2 min
//! simulated = 1.2 s real; autoprov 0.2 s, CRM 0.1 s). Tests wait on conditions with deadlines
//! and assert on outcomes and on the simulator's recorded history, never on elapsed time.

use std::time::{Duration, Instant};

use cloudlet_maintd::config::{Config, ControllerConfig, Secret};
use cloudlet_maintd::controller::{
    ClientError, CloudletKey, CloudletStatus, Controller, MaintenanceState, MaintenanceTarget,
    McClient,
};
use mc_sim::{Scenario, SimServer};
use serde_json::{Value, json};

const OP_USER: &str = "opuser";
const OP_PASSWORD: &str = "op-secret-pw";
const VIEWER: &str = "viewer";
const VIEWER_PASSWORD: &str = "viewer-secret-pw";
const REGION: &str = "EU";

/// Users, defaults and a few cloudlets; `extra` is appended (more `[[cloudlets]]`).
fn scenario(extra: &str) -> Scenario {
    let text = format!(
        r#"
time_scale = 0.01
maintenance_timeout = "2m"
seed = 7

[[users]]
username = "{OP_USER}"
password = "{OP_PASSWORD}"
roles = [ {{ org = "TDG", role = "OperatorManager" }} ]

[[users]]
username = "{VIEWER}"
password = "{VIEWER_PASSWORD}"
roles = [ {{ org = "TDG", role = "OperatorViewer" }} ]

[defaults]
autoprov_latency = {{ fixed = "20s" }}
crm_latency = {{ fixed = "10s" }}

[[cloudlets]]
region = "EU"
organization = "TDG"
name = "berlin-1"

[[cloudlets]]
region = "EU"
organization = "TDG"
name = "in-maint"
maintenance_state = "UnderMaintenance"
{extra}
"#
    );
    match Scenario::from_toml_str(&text) {
        Ok(s) => s,
        Err(e) => panic!("bad test scenario: {e}"),
    }
}

async fn start(extra: &str) -> SimServer {
    SimServer::start(scenario(extra), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

fn controller_config(sim: &SimServer, user: &str) -> ControllerConfig {
    let mut cfg = Config::default().controller;
    cfg.url = sim.url();
    cfg.username = user.to_string();
    cfg.maintenance_timeout = Duration::from_millis(1200);
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(10);
    cfg.handshake_timeout = Duration::from_secs(60);
    cfg
}

fn client(sim: &SimServer) -> McClient {
    McClient::new(&controller_config(sim, OP_USER), Secret::new(OP_PASSWORD)).unwrap()
}

fn key(name: &str) -> CloudletKey {
    CloudletKey::new("TDG", name)
}

/// Runs a handshake and returns its outcome and the progress messages.
async fn handshake(
    c: &impl Controller,
    name: &str,
    target: MaintenanceTarget,
) -> (Result<(), ClientError>, Vec<String>) {
    let mut lines = Vec::new();
    let mut progress = |m: &str| lines.push(m.to_string());
    let r = c
        .set_maintenance(REGION, &key(name), target, &mut progress)
        .await;
    (r, lines)
}

async fn show(c: &McClient, name: &str) -> CloudletStatus {
    c.show_cloudlet(REGION, &key(name))
        .await
        .unwrap_or_else(|e| panic!("show {name}: {e}"))
}

/// A plain HTTP client for raw requests and the simulator's control API. reqwest is built
/// without a default crypto provider (the controller client configures its own), so a plain
/// client needs one installed; installing twice is harmless.
fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn sim_get(sim: &SimServer, path: &str) -> Value {
    http()
        .get(format!("{}{path}", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn sim_post(sim: &SimServer, path: &str, body: Value) -> Value {
    let res = http()
        .post(format!("{}{path}", sim.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{path}: {}", res.status());
    res.json().await.unwrap()
}

async fn set_knobs(sim: &SimServer, name: &str, knobs: Value) {
    sim_post(
        sim,
        "/_sim/knobs",
        json!({"region": REGION, "organization": "TDG", "name": name, "knobs": knobs}),
    )
    .await;
}

/// Waits until the simulator no longer holds the cloudlet's action lock: the controller may
/// answer a handshake a moment before it releases the lock.
async fn wait_idle(sim: &SimServer, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = sim_get(sim, "/_sim/cloudlets").await;
        let busy = list
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == name && c["busy"] == true);
        if !busy {
            return;
        }
        assert!(Instant::now() < deadline, "{name} stays busy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn set_state(sim: &SimServer, name: &str, state: &str, tracked: Option<&str>) {
    wait_idle(sim, name).await;
    let mut body = json!({"region": REGION, "organization": "TDG", "name": name,
                          "maintenance_state": state});
    if let Some(t) = tracked {
        body["state"] = json!(t);
    }
    sim_post(sim, "/_sim/state", body).await;
}

/// The (from, to) transitions of one cloudlet, in order.
async fn transitions(sim: &SimServer, name: &str) -> Vec<(String, String)> {
    let h = sim_get(sim, "/_sim/history").await;
    h["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == name)
        .map(|t| {
            (
                t["from"].as_str().unwrap().to_string(),
                t["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Recorded requests to `path`.
async fn requests(sim: &SimServer, path: &str) -> Vec<Value> {
    let h = sim_get(sim, "/_sim/history").await;
    h["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == path)
        .cloned()
        .collect()
}

/// Reads the cloudlet until `pred` holds, or panics after `limit`.
async fn wait_for_state(
    c: &McClient,
    name: &str,
    limit: Duration,
    pred: impl Fn(&CloudletStatus) -> bool,
) -> CloudletStatus {
    let deadline = Instant::now() + limit;
    loop {
        let s = c.show_cloudlet(REGION, &key(name)).await;
        if let Ok(s) = &s
            && pred(s)
        {
            return s.clone();
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}; last read: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn enter_with_failover_and_back() {
    let sim = start("").await;
    let c = client(&sim);

    let (r, lines) = handshake(&c, "berlin-1", MaintenanceTarget::Start).await;
    r.unwrap();
    assert_eq!(
        lines,
        [
            "Starting AutoProv failover",
            "AutoProv failover completed",
            "Starting CRM maintenance",
            "CRM maintenance started",
            "Cloudlet is in maintenance"
        ]
    );
    let s = show(&c, "berlin-1").await;
    assert_eq!(s.maintenance_state, MaintenanceState::UnderMaintenance);
    assert_eq!(s.tracked_state.as_deref(), Some("Ready"));
    assert_eq!(s.region, REGION);

    let (r, lines) = handshake(&c, "berlin-1", MaintenanceTarget::Normal).await;
    r.unwrap();
    assert_eq!(lines, ["Cloudlet is back to normal operation"]);
    let s = show(&c, "berlin-1").await;
    assert_eq!(s.maintenance_state, MaintenanceState::NormalOperation);

    assert_eq!(
        transitions(&sim, "berlin-1").await,
        pairs(&[
            ("NormalOperation", "FailoverRequested"),
            ("FailoverRequested", "CrmRequested"),
            ("CrmRequested", "UnderMaintenance"),
            ("UnderMaintenance", "NormalOperationInit"),
            ("NormalOperationInit", "NormalOperation"),
        ])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn enter_without_failover() {
    let sim = start("").await;
    let c = client(&sim);
    let (r, lines) = handshake(&c, "berlin-1", MaintenanceTarget::StartNoFailover).await;
    r.unwrap();
    assert_eq!(
        lines,
        [
            "Starting CRM maintenance",
            "CRM maintenance started",
            "Cloudlet is in maintenance"
        ]
    );
    assert_eq!(
        show(&c, "berlin-1").await.maintenance_state,
        MaintenanceState::UnderMaintenance
    );
    assert_eq!(
        transitions(&sim, "berlin-1").await,
        pairs(&[
            ("NormalOperation", "CrmRequested"),
            ("CrmRequested", "UnderMaintenance"),
        ])
    );
    let body = &requests(&sim, "/api/v1/auth/ctrl/UpdateCloudlet").await[0]["body"];
    assert_eq!(
        body["cloudlet"]["maintenance_state"],
        "MaintenanceStartNoFailover"
    );
    sim.shutdown().await;
}

/// Every stored state and both tracked states read back the same from a current server
/// (CamelCase strings) and an old one (integers).
async fn states_read_back(integer_enums: bool) {
    let sim = start(&format!(
        "\n[[cloudlets]]\nregion = \"EU\"\norganization = \"TDG\"\nname = \"enum-test\"\ninteger_enums = {integer_enums}\n"
    ))
    .await;
    let c = client(&sim);

    // The wire really is in the expected form.
    let token: Value = http()
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"username": OP_USER, "password": OP_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    set_state(&sim, "enum-test", "UnderMaintenance", None).await;
    let raw = http()
        .post(format!("{}/api/v1/auth/ctrl/ShowCloudlet", sim.url()))
        .bearer_auth(token["token"].as_str().unwrap())
        .json(&json!({"region": REGION, "cloudlet": {"key": {"organization": "TDG", "name": "enum-test"}}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    if integer_enums {
        assert!(raw.contains(r#""maintenance_state":31"#), "{raw}");
    } else {
        assert!(
            raw.contains(r#""maintenance_state":"UnderMaintenance""#),
            "{raw}"
        );
    }
    set_state(&sim, "enum-test", "NormalOperation", None).await;

    // A real round trip.
    let (r, _) = handshake(&c, "enum-test", MaintenanceTarget::Start).await;
    r.unwrap();
    let s = show(&c, "enum-test").await;
    assert_eq!(s.maintenance_state, MaintenanceState::UnderMaintenance);
    assert_eq!(s.tracked_state.as_deref(), Some("Ready"));
    let (r, _) = handshake(&c, "enum-test", MaintenanceTarget::Normal).await;
    r.unwrap();
    assert_eq!(
        show(&c, "enum-test").await.maintenance_state,
        MaintenanceState::NormalOperation
    );

    // Every state the controller stores, set by hand.
    for (state, tracked) in [
        (MaintenanceState::FailoverRequested, "UpdateError"),
        (MaintenanceState::CrmRequested, "UpdateError"),
        (MaintenanceState::NormalOperationInit, "Ready"),
        (MaintenanceState::UnderMaintenance, "Ready"),
        (MaintenanceState::NormalOperation, "Ready"),
    ] {
        set_state(&sim, "enum-test", state.as_str(), Some(tracked)).await;
        let s = show(&c, "enum-test").await;
        assert_eq!(s.maintenance_state, state);
        assert_eq!(s.tracked_state.as_deref(), Some(tracked));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn string_enum_server_states_read_back() {
    states_read_back(false).await;
}

#[tokio::test]
async fn integer_enum_server_states_read_back() {
    states_read_back(true).await;
}

#[tokio::test]
async fn update_without_field_30_is_a_no_op_and_the_client_always_sends_it() {
    let sim = start("").await;
    let http = http();
    let login: Value = http
        .post(format!("{}/api/v1/login", sim.url()))
        .json(&json!({"username": OP_USER, "password": OP_PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();
    // What a serializer that drops the zero value and the field list would send.
    for cloudlet in [
        json!({"key": {"organization": "TDG", "name": "in-maint"}, "maintenance_state": "NormalOperation"}),
        json!({"key": {"organization": "TDG", "name": "in-maint"}}),
    ] {
        let res = http
            .post(format!("{}/api/v1/auth/ctrl/UpdateCloudlet", sim.url()))
            .bearer_auth(&token)
            .json(&json!({"region": REGION, "cloudlet": cloudlet}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            res.text().await.unwrap(),
            "{\"data\":{\"message\":\"Cloudlet updated successfully\"}}\n"
        );
    }
    let c = client(&sim);
    assert_eq!(
        show(&c, "in-maint").await.maintenance_state,
        MaintenanceState::UnderMaintenance,
        "the no-op must not have changed anything"
    );
    assert!(transitions(&sim, "in-maint").await.is_empty());

    // Our client names the state and field 30, and so really restores.
    let (r, lines) = handshake(&c, "in-maint", MaintenanceTarget::Normal).await;
    r.unwrap();
    assert_eq!(lines, ["Cloudlet is back to normal operation"]);
    assert_eq!(
        show(&c, "in-maint").await.maintenance_state,
        MaintenanceState::NormalOperation
    );
    let updates = requests(&sim, "/api/v1/auth/ctrl/UpdateCloudlet").await;
    let ours = &updates.last().unwrap()["body"];
    assert_eq!(ours["cloudlet"]["fields"], json!(["30"]));
    assert_eq!(ours["cloudlet"]["maintenance_state"], "NormalOperation");
    let text = ours.to_string();
    assert!(text.contains(r#""fields":["30"]"#), "{text}");
    assert!(
        text.contains(r#""maintenance_state":"NormalOperation""#),
        "{text}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn start_from_a_non_normal_state_is_wrong_state() {
    let sim = start("").await;
    let c = client(&sim);
    let (r, lines) = handshake(&c, "in-maint", MaintenanceTarget::Start).await;
    let e = r.unwrap_err();
    assert!(matches!(e, ClientError::WrongState(_)), "{e:?}");
    assert_eq!(e.kind(), "wrong_state");
    assert!(!e.is_retryable());
    assert!(
        e.to_string()
            .contains("Cloudlet must be in NormalOperation before starting maintenance"),
        "{e}"
    );
    assert!(lines.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn autoprov_timeout_leaves_update_error_and_normal_operation_recovers() {
    let sim = start("").await;
    set_knobs(&sim, "berlin-1", json!({"autoprov_no_reply": true})).await;
    let c = client(&sim);

    let (r, lines) = handshake(&c, "berlin-1", MaintenanceTarget::Start).await;
    let e = r.unwrap_err();
    assert_eq!(
        e,
        ClientError::ControllerTimeout(
            "Timed out waiting for AutoProvInfo maintenance state".into()
        )
    );
    assert!(e.to_string().contains("request NormalOperation"), "{e}");
    assert_eq!(lines, ["Starting AutoProv failover"]);
    let s = show(&c, "berlin-1").await;
    assert_eq!(s.maintenance_state, MaintenanceState::FailoverRequested);
    assert_eq!(s.tracked_state.as_deref(), Some("UpdateError"));

    // Refused until someone requests NormalOperation.
    let (r, _) = handshake(&c, "berlin-1", MaintenanceTarget::Start).await;
    assert_eq!(r.unwrap_err().kind(), "wrong_state");

    let (r, _) = handshake(&c, "berlin-1", MaintenanceTarget::Normal).await;
    r.unwrap();
    let s = show(&c, "berlin-1").await;
    assert_eq!(s.maintenance_state, MaintenanceState::NormalOperation);
    assert_eq!(s.tracked_state.as_deref(), Some("Ready"));
    assert_eq!(
        transitions(&sim, "berlin-1").await,
        pairs(&[
            ("NormalOperation", "FailoverRequested"),
            ("FailoverRequested", "NormalOperationInit"),
            ("NormalOperationInit", "NormalOperation"),
        ])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn exit_timeout_arrives_as_plain_400_and_a_crm_restart_clears_it() {
    let sim = start("").await;
    set_knobs(&sim, "in-maint", json!({"crm_no_ack": true})).await;
    let c = client(&sim);
    let (r, lines) = handshake(&c, "in-maint", MaintenanceTarget::Normal).await;
    assert_eq!(
        r.unwrap_err(),
        ClientError::ControllerTimeout(
            "Timed out waiting for CloudletInfo maintenance state".into()
        )
    );
    assert!(lines.is_empty(), "the exit path streams nothing: {lines:?}");
    let s = show(&c, "in-maint").await;
    assert_eq!(s.maintenance_state, MaintenanceState::NormalOperationInit);
    assert_eq!(s.tracked_state.as_deref(), Some("UpdateError"));

    wait_idle(&sim, "in-maint").await;
    sim_post(
        &sim,
        "/_sim/crm_restart",
        json!({"region": REGION, "organization": "TDG", "name": "in-maint"}),
    )
    .await;
    let s = show(&c, "in-maint").await;
    assert_eq!(s.maintenance_state, MaintenanceState::NormalOperation);
    sim.shutdown().await;
}

#[tokio::test]
async fn autoprov_errors_are_undone() {
    let sim = start("").await;
    set_knobs(&sim, "berlin-1", json!({"autoprov_error": true})).await;
    let c = client(&sim);
    let (r, lines) = handshake(&c, "berlin-1", MaintenanceTarget::Start).await;
    let e = r.unwrap_err();
    assert_eq!(
        e,
        ClientError::HandshakeFailed(
            "AutoProv failover encountered some errors, aborting maintenance".into()
        )
    );
    assert_eq!(e.kind(), "handshake_failed");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("Starting AutoProv failover")
    );
    assert!(
        lines.iter().any(|l| l.starts_with("Failover error")),
        "the autoprov error line is passed on: {lines:?}"
    );
    assert_eq!(
        transitions(&sim, "berlin-1").await,
        pairs(&[
            ("NormalOperation", "FailoverRequested"),
            ("FailoverRequested", "NormalOperation"),
        ])
    );
    assert_eq!(
        show(&c, "berlin-1").await.maintenance_state,
        MaintenanceState::NormalOperation
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn forbidden_names_the_roles_needed() {
    let sim = start("").await;
    let viewer = McClient::new(
        &controller_config(&sim, VIEWER),
        Secret::new(VIEWER_PASSWORD),
    )
    .unwrap();
    let (r, _) = handshake(&viewer, "berlin-1", MaintenanceTarget::Start).await;
    let e = r.unwrap_err();
    assert_eq!(e, ClientError::Forbidden { org: "TDG".into() });
    let text = e.to_string();
    for needle in [
        "OperatorManager",
        "OperatorContributor",
        "organization TDG",
        "AdminManager",
        "AdminContributor",
    ] {
        assert!(text.contains(needle), "{text}");
    }
    assert!(!e.is_retryable());
    // A viewer may still read.
    assert_eq!(
        show(&viewer, "berlin-1").await.maintenance_state,
        MaintenanceState::NormalOperation
    );
    assert!(transitions(&sim, "berlin-1").await.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_cloudlet_is_not_found() {
    let sim = start("").await;
    let c = client(&sim);
    let expected = ClientError::NotFound {
        region: REGION.into(),
        key: key("nope"),
    };
    let (r, _) = handshake(&c, "nope", MaintenanceTarget::Start).await;
    assert_eq!(r.unwrap_err(), expected);
    assert_eq!(
        c.show_cloudlet(REGION, &key("nope")).await.unwrap_err(),
        expected
    );
    assert!(!expected.is_retryable());
    // The organization listing shows the ones that exist.
    let mut names: Vec<String> = c
        .show_cloudlets(REGION, Some("TDG"))
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.key.name)
        .collect();
    names.sort();
    assert_eq!(names, ["berlin-1", "in-maint"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn expired_token_is_renewed_transparently() {
    let sim = start("").await;
    let c = client(&sim);
    show(&c, "berlin-1").await;
    sim_post(&sim, "/_sim/expire_tokens", json!({})).await;
    show(&c, "berlin-1").await;
    sim_post(&sim, "/_sim/expire_tokens", json!({})).await;
    let (r, _) = handshake(&c, "berlin-1", MaintenanceTarget::StartNoFailover).await;
    r.unwrap();

    let logins: Vec<u64> = requests(&sim, "/api/v1/login")
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(logins, [200, 200, 200], "one login, then one per expiry");
    let shows: Vec<u64> = requests(&sim, "/api/v1/auth/ctrl/ShowCloudlet")
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(shows, [200, 400, 200]);
    let updates: Vec<u64> = requests(&sim, "/api/v1/auth/ctrl/UpdateCloudlet")
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(updates, [400, 200]);
    // The password never reaches the recorded history, and our token never reaches an error.
    let history = sim_get(&sim, "/_sim/history").await.to_string();
    assert!(!history.contains(OP_PASSWORD));
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_gateway_html_is_a_protocol_error() {
    let sim = start("").await;
    set_knobs(&sim, "berlin-1", json!({"error_5xx_rate": 1.0})).await;
    let c = client(&sim);
    let e = c.show_cloudlet(REGION, &key("berlin-1")).await.unwrap_err();
    let ClientError::Protocol { status, snippet } = &e else {
        panic!("expected a protocol error, got {e:?}");
    };
    assert_eq!(*status, 502);
    assert!(
        snippet.starts_with("<html><head><title>502 Bad Gateway"),
        "{snippet}"
    );
    assert!(snippet.len() <= 124, "{snippet}");
    assert!(!e.to_string().contains('\n'));
    assert!(e.is_retryable());
    let (r, _) = handshake(&c, "berlin-1", MaintenanceTarget::Start).await;
    assert!(
        matches!(r, Err(ClientError::Protocol { status: 502, .. })),
        "{r:?}"
    );
    assert!(transitions(&sim, "berlin-1").await.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_stream_is_reported_and_the_outcome_read_back() {
    let sim = start("").await;
    set_knobs(&sim, "berlin-1", json!({"drop_after_first_line": true})).await;
    let c = client(&sim);
    let (r, lines) = handshake(&c, "berlin-1", MaintenanceTarget::Start).await;
    let e = r.unwrap_err();
    assert!(matches!(e, ClientError::StreamDropped(_)), "{e:?}");
    assert_eq!(e.kind(), "stream_dropped");
    assert!(e.is_retryable());
    assert!(e.to_string().contains("read back with ShowCloudlet"), "{e}");
    assert_eq!(lines, ["Starting AutoProv failover"]);
    // The controller carried on without us.
    let s = wait_for_state(&c, "berlin-1", Duration::from_secs(30), |s| {
        s.maintenance_state == MaintenanceState::UnderMaintenance
    })
    .await;
    assert_eq!(s.tracked_state.as_deref(), Some("Ready"));
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_requests_one_is_in_progress() {
    let sim = start("").await;
    // A slower failover keeps the first handshake busy while the second arrives.
    set_knobs(
        &sim,
        "berlin-1",
        json!({"autoprov_latency": {"fixed": "1m"}}),
    )
    .await;
    let c = client(&sim);
    c.login().await.unwrap();
    let (a, b) = tokio::join!(
        handshake(&c, "berlin-1", MaintenanceTarget::Start),
        handshake(&c, "berlin-1", MaintenanceTarget::Start)
    );
    let results = [a.0, b.0];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let busy: Vec<&ClientError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(ok, 1, "{results:?}");
    assert_eq!(busy.len(), 1);
    assert!(
        matches!(busy[0], ClientError::InProgress(_)),
        "{:?}",
        busy[0]
    );
    assert!(busy[0].is_retryable());
    assert!(
        busy[0]
            .to_string()
            .contains("An action is already in progress for the object"),
        "{}",
        busy[0]
    );
    assert_eq!(
        show(&c, "berlin-1").await.maintenance_state,
        MaintenanceState::UnderMaintenance
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_password_is_bad_credentials_without_the_password() {
    let sim = start("").await;
    let wrong = "hunter2-not-the-password";
    let c = McClient::new(&controller_config(&sim, OP_USER), Secret::new(wrong)).unwrap();
    let e = c.show_cloudlet(REGION, &key("berlin-1")).await.unwrap_err();
    assert_eq!(
        e,
        ClientError::BadCredentials {
            user: OP_USER.into(),
            message: "Invalid username or password".into()
        }
    );
    assert!(!e.to_string().contains(wrong), "{e}");
    assert!(!format!("{e:?}").contains(wrong));
    assert!(!format!("{c:?}").contains(wrong));
    assert!(e.to_string().starts_with("login as opuser refused"), "{e}");
    assert!(!e.is_retryable());
    assert_eq!(c.login().await.unwrap_err().kind(), "bad_credentials");
    sim.shutdown().await;
}

#[tokio::test]
async fn normal_operation_path_has_no_first_byte_timeout() {
    let sim = start("").await;
    // The CRM takes 0.6 s (well below T = 1.2 s); the controller sends no header before it.
    set_knobs(&sim, "in-maint", json!({"crm_latency": {"fixed": "1m"}})).await;
    let mut cfg = controller_config(&sim, OP_USER);
    cfg.request_timeout = Duration::from_millis(200);
    cfg.handshake_timeout = Duration::from_secs(30);
    let c = McClient::new(&cfg, Secret::new(OP_PASSWORD)).unwrap();
    let (r, lines) = handshake(&c, "in-maint", MaintenanceTarget::Normal).await;
    r.unwrap();
    assert_eq!(lines, ["Cloudlet is back to normal operation"]);
    assert_eq!(
        show(&c, "in-maint").await.maintenance_state,
        MaintenanceState::NormalOperation
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn handshake_deadline_is_a_client_side_timeout() {
    let sim = start("").await;
    // The CRM takes 0.6 s; our handshake deadline is 100 ms.
    set_knobs(&sim, "in-maint", json!({"crm_latency": {"fixed": "1m"}})).await;
    let mut cfg = controller_config(&sim, OP_USER);
    cfg.handshake_timeout = Duration::from_millis(100);
    let c = McClient::new(&cfg, Secret::new(OP_PASSWORD)).unwrap();
    c.login().await.unwrap();
    let (r, _) = handshake(&c, "in-maint", MaintenanceTarget::Normal).await;
    let e = r.unwrap_err();
    assert!(
        matches!(&e, ClientError::TimedOut { after, .. } if *after == Duration::from_millis(100)),
        "{e:?}"
    );
    assert!(e.to_string().contains("UpdateCloudlet TDG/in-maint"), "{e}");
    // The controller finishes on its own.
    wait_for_state(&c, "in-maint", Duration::from_secs(30), |s| {
        s.maintenance_state == MaintenanceState::NormalOperation
    })
    .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn unknown_token_after_a_controller_restart_is_renewed() {
    let sim = start("").await;
    let addr = sim.addr();
    let c = client(&sim);
    show(&c, "berlin-1").await;
    sim.shutdown().await;
    // A new controller on the same address knows nothing of the old token: 401.
    let sim = SimServer::start(scenario(""), addr)
        .await
        .expect("simulator restarts on the same port");
    show(&c, "berlin-1").await;
    let shows: Vec<u64> = requests(&sim, "/api/v1/auth/ctrl/ShowCloudlet")
        .await
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(shows, [401, 200]);
    assert_eq!(requests(&sim, "/api/v1/login").await.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_to_a_plain_http_port_is_a_transport_error() {
    let sim = start("").await;
    for insecure in [false, true] {
        let mut cfg = controller_config(&sim, OP_USER);
        cfg.url = sim.url().replace("http://", "https://");
        cfg.insecure_skip_verify = insecure;
        let c = McClient::new(&cfg, Secret::new(OP_PASSWORD)).unwrap();
        let e = c.show_cloudlet(REGION, &key("berlin-1")).await.unwrap_err();
        assert_eq!(e.kind(), "transport", "{e}");
        assert!(e.to_string().contains(&cfg.url), "{e}");
        assert!(!e.to_string().contains(OP_PASSWORD), "{e}");
    }
    sim.shutdown().await;
}
