//! The systemd unit as shipped: `systemd-analyze verify` accepts it and `systemd-analyze
//! security --offline=true` rates its exposure 2.0 ("OK") or better.
//!
//! systemd-analyze is part of every machine this project builds on (Debian's `systemd`
//! package; `.ci/run` installs it if missing), so these tests require it rather than skip.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit_with_binary(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("systemd/cloudlet-maintd.service")).unwrap();
    // verify checks that ExecStart= binaries exist: point them at the one cargo built.
    let text = text.replace(
        "/usr/bin/cloudlet-maintd",
        env!("CARGO_BIN_EXE_cloudlet-maintd"),
    );
    let path = dir.join("cloudlet-maintd.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn systemd_unit_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = unit_with_binary(tmp.path());
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze must be installed (Debian package systemd)");
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_unit_exposure_is_ok() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = unit_with_binary(tmp.path());
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze must be installed (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score from {line:?}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
    println!("systemd-analyze security: {line}");
}

#[test]
fn unit_declares_what_the_daemon_relies_on() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("systemd/cloudlet-maintd.service")).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=cloudlet-maintd",
        "ConfigurationDirectory=cloudlet-maintd",
        "LoadCredential=mc-password:",
    ] {
        assert!(text.contains(needle), "unit lacks {needle}");
    }
    // The watchdog must outlast the timer loop's longest sleep (30 s) with room to spare.
    let secs: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("WatchdogSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .unwrap();
    assert!(
        secs >= 60,
        "WatchdogSec={secs}s is too close to the 30 s loop"
    );
}
