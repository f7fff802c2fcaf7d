//! The `mc-sim` binary: starts on the demo scenario, prints its URL, serves, keeps secrets out
//! of its logs, and exits cleanly on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(30);

fn demo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.toml")
}

#[tokio::test]
async fn serves_the_demo_and_exits_cleanly_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mc-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--time-scale",
            "0.01",
            "--scenario",
        ])
        .arg(demo())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mc-sim starts");
    let stdout = child.stdout.take().unwrap();
    let mut first = String::new();
    tokio::time::timeout(DEADLINE, BufReader::new(stdout).read_line(&mut first))
        .await
        .expect("a line within the deadline")
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("mc-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login: Value = http
        .post(format!("{url}/api/v1/login"))
        .json(&json!({"username": "tdg-ops", "password": "tdg-ops-password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_string();

    let shown = http
        .post(format!("{url}/api/v1/auth/ctrl/ShowCloudlet"))
        .bearer_auth(&token)
        .json(&json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG"}}}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(shown.lines().count(), 4, "{shown}");

    let res = http
        .post(format!("{url}/api/v1/auth/ctrl/UpdateCloudlet"))
        .bearer_auth(&token)
        .json(
            &json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"},
                "maintenance_state": "MaintenanceStart", "fields": ["30"]}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(
        body.trim_end()
            .ends_with(r#"{"data":{"message":"Cloudlet is in maintenance"}}"#),
        "{body}"
    );

    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits within the deadline")
        .unwrap();
    assert!(status.success(), "{status}");

    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("UpdateCloudlet"),
        "requests are logged: {logs}"
    );
    assert!(
        !logs.contains("tdg-ops-password"),
        "password in logs: {logs}"
    );
    assert!(!logs.contains(&token), "token in logs: {logs}");
}

#[tokio::test]
async fn refuses_non_loopback_addresses_and_bad_scenarios() {
    let out = Command::new(env!("CARGO_BIN_EXE_mc-sim"))
        .args(["--listen", "0.0.0.0:0", "--scenario"])
        .arg(demo())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "time_scale = 1.0\nunknown_knob = true\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mc-sim"))
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown_knob"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
