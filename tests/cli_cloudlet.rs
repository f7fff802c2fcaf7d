//! `cloudlet-maintd cloudlet show|enter|exit`: the real binary, in a fresh temp dir each, against
//! an in-process simulated controller on `127.0.0.1:0`.

use std::path::{Path, PathBuf};
use std::process::Output;

use mc_sim::{Scenario, SimServer};

const SCENARIO: &str = r#"
time_scale = 0.01
maintenance_timeout = "2m"
seed = 3

[[users]]
username = "opuser"
password = "op-secret-pw"
roles = [ { org = "TDG", role = "OperatorManager" } ]

[[users]]
username = "viewer"
password = "viewer-secret-pw"
roles = [ { org = "TDG", role = "OperatorViewer" } ]

[defaults]
autoprov_latency = { fixed = "20s" }
crm_latency = { fixed = "10s" }

[[cloudlets]]
region = "EU"
organization = "TDG"
name = "berlin-1"

[[cloudlets]]
region = "EU"
organization = "TDG"
name = "berlin-2"
maintenance_state = "UnderMaintenance"
"#;

async fn start_sim() -> SimServer {
    let scenario = Scenario::from_toml_str(SCENARIO).expect("test scenario parses");
    SimServer::start(scenario, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// Writes `maintd.toml` (and the password file, when given) into `dir`.
fn write_config(dir: &Path, url: &str, user: &str, password: Option<&str>) -> PathBuf {
    let mut text = format!(
        "[controller]\nurl = \"{url}\"\nusername = \"{user}\"\nmaintenance_timeout = \"2s\"\nrequest_timeout = \"10s\"\nhandshake_timeout = \"60s\"\n"
    );
    if let Some(pw) = password {
        let pw_path = dir.join("mc-password");
        std::fs::write(&pw_path, format!("{pw}\n")).unwrap();
        text.push_str(&format!("password_file = \"{}\"\n", pw_path.display()));
    }
    text.push_str("\n[log]\nfilter = \"warn\"\n");
    let path = dir.join("maintd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn run(config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"))
        .arg("--config")
        .arg(config)
        .arg("cloudlet")
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enter_show_exit_round_trip() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "opuser", Some("op-secret-pw"));

    let out = run(&cfg, &["enter", "--region", "EU", "TDG/berlin-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    for expected in [
        "requesting MaintenanceStart for TDG/berlin-1 in region EU",
        "Starting AutoProv failover",
        "AutoProv failover completed",
        "Starting CRM maintenance",
        "CRM maintenance started",
        "Cloudlet is in maintenance",
        "read back: TDG/berlin-1 is UnderMaintenance (tracked state Ready)",
    ] {
        assert!(
            lines.iter().any(|l| l.ends_with(expected)),
            "missing {expected:?}\n{}",
            describe(&out)
        );
    }
    // Every progress line carries the elapsed time: "[   0.2s] Starting CRM maintenance".
    for l in &lines {
        let stamp = l.split(']').next().unwrap_or_default();
        assert!(
            stamp.starts_with('[') && stamp.ends_with('s') && stamp.contains('.'),
            "{l}"
        );
    }
    assert!(!stdout.contains("op-secret-pw") && !text(&out.stderr).contains("op-secret-pw"));

    let out = run(&cfg, &["show", "--region", "EU", "TDG/berlin-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    assert_eq!(
        rows,
        [
            vec!["CLOUDLET", "MAINTENANCE STATE", "TRACKED STATE"],
            vec!["TDG/berlin-1", "UnderMaintenance", "Ready"],
        ],
        "{}",
        describe(&out)
    );

    let out = run(&cfg, &["show", "--region", "EU", "--org", "TDG"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{}", describe(&out));
    assert!(stdout.contains("TDG/berlin-2"), "{}", describe(&out));

    let out = run(&cfg, &["exit", "--region", "EU", "TDG/berlin-1"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Cloudlet is back to normal operation"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("read back: TDG/berlin-1 is NormalOperation"),
        "{}",
        describe(&out)
    );

    let out = run(
        &cfg,
        &["enter", "--region", "EU", "TDG/berlin-1", "--no-failover"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("requesting MaintenanceStartNoFailover"),
        "{stdout}"
    );
    assert!(!stdout.contains("AutoProv"), "{stdout}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_user_exits_1_with_the_role_hint() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "viewer", Some("viewer-secret-pw"));
    let out = run(&cfg, &["enter", "--region", "EU", "TDG/berlin-1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{}", describe(&out));
    let line = error_lines[0];
    assert!(line.starts_with("error: forbidden"), "{line}");
    assert!(
        line.contains("OperatorManager or OperatorContributor of organization TDG"),
        "{line}"
    );
    assert!(line.contains("AdminManager/AdminContributor"), "{line}");
    // The state is read back and shown (a viewer may read).
    assert!(
        text(&out.stdout).contains("current state: TDG/berlin-1 is NormalOperation"),
        "{}",
        describe(&out)
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_refusals_exit_1() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "opuser", Some("op-secret-pw"));

    // Already in maintenance: the controller refuses a start.
    let out = run(&cfg, &["enter", "--region", "EU", "TDG/berlin-2"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr)
            .contains("Cloudlet must be in NormalOperation before starting maintenance"),
        "{}",
        describe(&out)
    );

    let out = run(&cfg, &["show", "--region", "EU", "TDG/nope"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("cloudlet TDG/nope not found in region EU"),
        "{}",
        describe(&out)
    );

    let wrong = write_config(dir.path(), &sim.url(), "opuser", Some("not-the-password"));
    let out = run(&wrong, &["show", "--region", "EU", "TDG/berlin-1"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("login as opuser refused by the controller: Invalid username or password"),
        "{}",
        describe(&out)
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_and_config_errors_exit_2() {
    let sim = start_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.url(), "opuser", Some("op-secret-pw"));
    for bad in ["berlin-1", "TDG/", "/berlin-1", "TDG/a/b"] {
        let out = run(&cfg, &["enter", "--region", "EU", bad]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.starts_with(&format!("error: invalid cloudlet \"{bad}\"")),
            "{}",
            describe(&out)
        );
        assert!(stderr.contains("ORGANIZATION/NAME"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }

    let no_password = tempfile::tempdir().unwrap();
    let cfg = write_config(no_password.path(), &sim.url(), "opuser", None);
    let out = run(&cfg, &["exit", "--region", "EU", "TDG/berlin-2"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no controller password"), "{stderr}");
    assert!(stderr.contains("password_file"), "{stderr}");
    sim.shutdown().await;
}
