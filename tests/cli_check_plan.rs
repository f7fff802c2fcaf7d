//! The real `cloudlet-maintd` binary on temp directories: `check` on good, bad, half-written
//! and backup files; `plan --json` parsed and checked; the last-good-version rule through the
//! loader API.

use std::path::Path;
use std::process::{Command, Output};
use std::str::FromStr;

use cloudlet_maintd::plan::SpanJson;
use cloudlet_maintd::windows::{FileStatus, load_dir};
use jiff::Timestamp;

const GOOD: &str = r#"
[[window]]
id        = "berlin-weekly"
region    = "EU"
cloudlets = ["TDG/berlin-1", "TDG/berlin-2"]
cron      = "0 2 * * Sun"
timezone  = "Europe/Berlin"
duration  = "4h"
"#;

const ONE_OFF: &str = r#"
[[window]]
id        = "munich"
region    = "EU"
cloudlets = ["TDG/munich-1"]
start     = "2027-01-16T22:00"
timezone  = "Europe/Berlin"
duration  = "6h"
failover  = false
lead      = "10m"
"#;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cloudlet-maintd"));
    // Never read the host's /etc config in tests.
    c.env_remove("RUST_LOG");
    c
}

fn run(args: &[&str], dir: &Path) -> Output {
    let cfg = dir.join("maintd.toml");
    if !cfg.exists() {
        std::fs::write(&cfg, "").unwrap();
    }
    bin()
        .arg("--config")
        .arg(&cfg)
        .args(args)
        .arg("--windows-dir")
        .arg(dir.join("windows.d"))
        .output()
        .unwrap()
}

fn setup(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let wd = tmp.path().join("windows.d");
    std::fs::create_dir(&wd).unwrap();
    for (name, text) in files {
        std::fs::write(wd.join(name), text).unwrap();
    }
    tmp
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn check_accepts_good_files_and_ignores_backups() {
    let tmp = setup(&[
        ("10-berlin.toml", GOOD),
        ("20-munich.toml", ONE_OFF),
        ("10-berlin.toml~", "garbage ["),
        ("20-munich.toml.dpkg-new", "garbage ["),
        (".10-berlin.toml.swp", "garbage ["),
        ("README", "not a window file"),
    ]);
    let out = run(&["check"], tmp.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("10-berlin.toml: OK (1 window)"), "{text}");
    assert!(text.contains("20-munich.toml: OK (1 window)"), "{text}");
    assert!(
        text.contains("10-berlin.toml~: ignored (editor backup)"),
        "{text}"
    );
    assert!(
        text.contains("dpkg-new: ignored (backup or package-manager leftover)"),
        "{text}"
    );
    assert!(text.contains("2 files: 2 OK, 0 invalid"), "{text}");
}

#[test]
fn check_reports_bad_values_with_file_line_col_and_exits_1() {
    let bad = GOOD.replace("Europe/Berlin", "Europe/Berln");
    let tmp = setup(&[("10-berlin.toml", &bad), ("20-munich.toml", ONE_OFF)]);
    let out = run(&["check"], tmp.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let wd = tmp.path().join("windows.d");
    let expected = format!(
        "{}:7:13: unknown time zone \"Europe/Berln\" (did you mean \"Europe/Berlin\"?)",
        wd.join("10-berlin.toml").display()
    );
    assert!(text.contains(&expected), "{text}");
    // The other file is still fine.
    assert!(text.contains("20-munich.toml: OK"), "{text}");
}

#[test]
fn check_reports_unknown_keys_with_a_hint() {
    let bad = GOOD.replace("duration  =", "durtion  =");
    let tmp = setup(&[("10-berlin.toml", &bad)]);
    let out = run(&["check"], tmp.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains(":8:1: unknown key `durtion` (did you mean `duration`?)"),
        "{text}"
    );
}

#[test]
fn check_reports_a_half_written_file() {
    let half = &GOOD[..GOOD.find("cron").unwrap() + 12];
    let tmp = setup(&[("10-berlin.toml", half)]);
    let out = run(&["check"], tmp.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("10-berlin.toml: INVALID"), "{text}");
    assert!(text.contains("10-berlin.toml:6:"), "{text}");
}

#[test]
fn check_warns_but_accepts_long_and_past_windows() {
    let long = ONE_OFF.replace("\"6h\"", "\"8days\"");
    let past = ONE_OFF
        .replace("munich", "past")
        .replace("2027-01-16T22:00", "2020-01-01T00:00");
    let tmp = setup(&[("10-long.toml", &long), ("20-past.toml", &past)]);
    let out = run(&["check"], tmp.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("more than 7 days"), "{text}");
    assert!(text.contains("ended in the past"), "{text}");
}

#[test]
fn check_rejects_the_later_duplicate_id() {
    let tmp = setup(&[("10-a.toml", GOOD), ("20-b.toml", GOOD)]);
    let out = run(&["check"], tmp.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("20-b.toml: INVALID"), "{text}");
    assert!(
        text.contains("duplicate window id \"berlin-weekly\": already declared in"),
        "{text}"
    );
    assert!(text.contains("10-a.toml: OK"), "{text}");
}

#[test]
fn a_bad_config_is_a_usage_error() {
    let tmp = setup(&[("10-berlin.toml", GOOD)]);
    std::fs::write(
        tmp.path().join("maintd.toml"),
        "[controller]\nmaintenance_timeout = \"five\"\n",
    )
    .unwrap();
    let out = run(&["check"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("maintd.toml:2:23: invalid duration \"five\""),
        "{err}"
    );
}

#[test]
fn plan_json_lists_spans_with_offsets_and_leads() {
    let tmp = setup(&[("10-berlin.toml", GOOD), ("20-munich.toml", ONE_OFF)]);
    let out = run(
        &[
            "plan",
            "--json",
            "--from",
            "2027-01-10T00:00:00Z",
            "--until",
            "2027-01-20T00:00:00Z",
        ],
        tmp.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans: Vec<SpanJson> = serde_json::from_slice(&out.stdout).unwrap();
    // Berlin: Sundays 10th and 17th, two cloudlets each; Munich: one-off on the 16th.
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let munich = spans.iter().find(|s| s.cloudlet == "TDG/munich-1").unwrap();
    assert_eq!(munich.start, "2027-01-16T22:00:00+01:00");
    assert_eq!(munich.enter_at, "2027-01-16T21:50:00+01:00");
    assert_eq!(munich.end, "2027-01-17T04:00:00+01:00");
    assert_eq!(munich.lead_seconds, 600);
    assert!(!munich.failover);
    let berlin: Vec<&SpanJson> = spans
        .iter()
        .filter(|s| s.cloudlet == "TDG/berlin-1")
        .collect();
    assert_eq!(berlin.len(), 2);
    assert_eq!(berlin[0].start, "2027-01-10T02:00:00+01:00");
    assert_eq!(berlin[0].lead_seconds, 660);
    assert_eq!(berlin[0].windows, ["berlin-weekly"]);
    // Sorted by enter_at.
    let enters: Vec<Timestamp> = spans
        .iter()
        .map(|s| Timestamp::from_str(&s.enter_at).unwrap())
        .collect();
    assert!(enters.windows(2).all(|p| p[0] <= p[1]));
}

#[test]
fn plan_filters_by_cloudlet_and_count() {
    let tmp = setup(&[("10-berlin.toml", GOOD), ("20-munich.toml", ONE_OFF)]);
    let out = run(
        &[
            "plan",
            "--json",
            "--from",
            "2027-01-01T00:00:00Z",
            "--count",
            "3",
            "--cloudlet",
            "TDG/berlin-2",
        ],
        tmp.path(),
    );
    let spans: Vec<SpanJson> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spans.len(), 3);
    assert!(spans.iter().all(|s| s.cloudlet == "TDG/berlin-2"));
    let table = run(
        &[
            "plan",
            "--from",
            "2027-01-01T00:00:00Z",
            "--until",
            "2027-01-05T00:00:00Z",
        ],
        tmp.path(),
    );
    let text = stdout(&table);
    assert!(text.contains("TDG/berlin-1"), "{text}");
    assert!(text.contains("2027-01-03 02:00"), "{text}");
    assert!(text.contains("11m (worst case)"), "{text}");
}

#[test]
fn plan_rejects_a_bad_time_as_usage_error() {
    let tmp = setup(&[("10-berlin.toml", GOOD)]);
    let out = run(&["plan", "--from", "tomorrow-ish"], tmp.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid time \"tomorrow-ish\""));
}

#[test]
fn last_good_version_stays_in_force_through_the_loader() {
    let tmp = setup(&[("10-berlin.toml", GOOD), ("20-munich.toml", ONE_OFF)]);
    let wd = tmp.path().join("windows.d");
    let now = Timestamp::from_str("2026-11-29T12:00:00Z").unwrap();
    let first = load_dir(&wd, None, now);
    assert!(first.all_valid());
    assert_eq!(first.windows().count(), 2);

    // A typo that would end the Berlin window: the previous version stays, marked stale.
    std::fs::write(wd.join("10-berlin.toml"), GOOD.replace("4h", "4 hourz")).unwrap();
    let second = load_dir(&wd, Some(&first), now);
    let berlin = &second.files[0];
    assert_eq!(berlin.status, FileStatus::Stale);
    assert_eq!(berlin.windows.len(), 1);
    assert_eq!(berlin.windows[0].duration.as_secs(), 4 * 3600);
    assert!(
        berlin.errors[0]
            .to_string()
            .contains("invalid duration \"4 hourz\"")
    );
    assert_eq!(second.windows().count(), 2);

    // Still broken on the next reload: still the last good version.
    let third = load_dir(&wd, Some(&second), now);
    assert_eq!(third.files[0].status, FileStatus::Stale);
    assert_eq!(third.windows().count(), 2);

    // A new file that is bad from the start has nothing to fall back on.
    std::fs::write(wd.join("30-new.toml"), "[[window]]\nid = ").unwrap();
    let fourth = load_dir(&wd, Some(&third), now);
    assert_eq!(fourth.files[2].status, FileStatus::Invalid);
    assert!(fourth.files[2].windows.is_empty());

    // Fixed: the new version is in force.
    std::fs::write(wd.join("10-berlin.toml"), GOOD.replace("4h", "5h")).unwrap();
    let fifth = load_dir(&wd, Some(&fourth), now);
    assert_eq!(fifth.files[0].status, FileStatus::Ok);
    assert_eq!(fifth.files[0].windows[0].duration.as_secs(), 5 * 3600);

    // Removing a file is a deliberate cancel.
    std::fs::remove_file(wd.join("20-munich.toml")).unwrap();
    let sixth = load_dir(&wd, Some(&fifth), now);
    assert!(sixth.windows().all(|w| w.id != "munich"));
}

#[test]
fn example_windows_in_the_repo_pass_check() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = bin()
        .arg("--config")
        .arg(repo.join("tests/data/empty.toml"))
        .arg("check")
        .arg("--windows-dir")
        .arg(repo.join("windows.d"))
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("0 invalid"), "{text}");
}
