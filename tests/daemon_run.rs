//! `cloudlet-maintd run` end to end: the real binary as a child process, real window files in a
//! temp dir, a real journal, real signals (`kill -HUP`, `kill -TERM`, SIGKILL), against a
//! simulated controller (`mc-sim`) started in this process and spoken to over HTTP on loopback.
//!
//! Each test has its own simulator, temp dir and status port, so the tests run in parallel. The
//! controller's T is 2 s and its latencies 100–400 ms (time scale 1.0); windows are one-off,
//! a few seconds ahead, with leads of 3 s or more (≫ latency). Tests wait on conditions with
//! deadlines; the only timed assertions are the product's promises — UnderMaintenance reached
//! before the window's start, NormalOperation restored after its end — checked on the
//! simulator's recorded transition times against the window's own start and end. The harness
//! lives in `tests/daemon/mod.rs`.

mod daemon;

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use daemon::{
    Harness, Lead, OPERATOR, SHUTDOWN_GRACE, SLOW, VIEWER, Window, check, check_eq, full,
};

/// The transitions of one failover enter and one restore.
const ENTER_EXIT: [&str; 5] = [
    "NormalOperation→FailoverRequested",
    "FailoverRequested→CrmRequested",
    "CrmRequested→UnderMaintenance",
    "UnderMaintenance→NormalOperationInit",
    "NormalOperationInit→NormalOperation",
];

/// The UpdateCloudlet requests of one failover enter and one restore, both answered 200.
fn start_then_normal() -> Vec<(String, u16)> {
    vec![
        ("MaintenanceStart".to_string(), 200),
        ("NormalOperation".to_string(), 200),
    ]
}

fn strings(edges: &[&str]) -> Vec<String> {
    edges.iter().map(|e| e.to_string()).collect()
}

fn in_maintenance_and_owned(c: &cloudlet_maintd::engine::status::CloudletView) -> bool {
    c.observed.as_deref() == Some("UnderMaintenance") && c.owned
}

fn restored_and_released(c: &cloudlet_maintd::engine::status::CloudletView) -> bool {
    c.observed.as_deref() == Some("NormalOperation") && !c.owned && c.desired == "normal"
}

fn ts(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse().ok())
}

/// 1. A failover window: the whole handshake happens before the start, the restore after the
///    end, and status shows the cloudlet owned during the window and not after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entered_before_start_and_restored_after_end() {
    let mut h = Harness::new(1, OPERATOR, &[("berlin-1", ""), ("berlin-2", "")]).await;
    let w = Window::new("w1", &["berlin-1"], Lead::Auto, 3, 3);
    h.write_windows("10-w1.toml", &[&w]);
    h.start_daemon().await;

    let during = h
        .wait_status(
            "berlin-1",
            "in maintenance and owned",
            in_maintenance_and_owned,
        )
        .await;
    check!(
        h,
        Timestamp::now() < w.end(),
        "status showed the cloudlet owned only after the window"
    );
    check_eq!(
        h,
        during.desired,
        "maintenance",
        "desired during the window"
    );
    check!(h, !during.external, "an entered cloudlet is not external");
    // No history yet: the auto lead is the protocol's worst case, 2·T + margin.
    check_eq!(h, during.lead_seconds, Some(5), "auto lead without history");
    check_eq!(
        h,
        during.lead_source.as_deref(),
        Some("worst case"),
        "lead source"
    );

    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    h.wait_status("berlin-1", "restored and not owned", restored_and_released)
        .await;

    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&ENTER_EXIT),
        "one enter with failover, one restore"
    );
    let first = hist.transitions_of("berlin-1")[0].clone();
    check!(
        h,
        first.at >= w.enter_at(),
        "the enter began at {} before its enter time {}",
        first.at,
        w.enter_at()
    );
    h.check_on_time("berlin-1", &w).await;
    check_eq!(
        h,
        hist.update_summary("berlin-1"),
        start_then_normal(),
        "UpdateCloudlet requests"
    );
    check!(
        h,
        hist.transitions_of("berlin-1")
            .iter()
            .all(|t| t.actor == "controller"),
        "only the controller changed berlin-1"
    );
    check!(
        h,
        hist.transitions_of("berlin-2").is_empty() && hist.updates_of("berlin-2").is_empty(),
        "a cloudlet in no window is never touched"
    );
}

/// 2. `failover = false`: MaintenanceStartNoFailover, no AutoProv step, lead T + margin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_failover_window_skips_autoprov() {
    let mut h = Harness::new(2, OPERATOR, &[("berlin-1", "")]).await;
    let w = Window::new("w2", &["berlin-1"], Lead::Auto, 3, 3).no_failover();
    h.write_windows("10-w2.toml", &[&w]);
    h.start_daemon().await;

    let during = h
        .wait_status(
            "berlin-1",
            "in maintenance and owned",
            in_maintenance_and_owned,
        )
        .await;
    check_eq!(
        h,
        during.lead_seconds,
        Some(3),
        "no-failover worst case is T + margin"
    );
    check_eq!(
        h,
        during
            .last_handshakes
            .first()
            .map(|hs| (hs.kind.as_str(), hs.ok)),
        Some(("enter_no_failover", true)),
        "last handshake"
    );

    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&[
            "NormalOperation→CrmRequested",
            "CrmRequested→UnderMaintenance",
            "UnderMaintenance→NormalOperationInit",
            "NormalOperationInit→NormalOperation",
        ]),
        "no FailoverRequested"
    );
    check_eq!(
        h,
        hist.update_summary("berlin-1"),
        vec![
            ("MaintenanceStartNoFailover".to_string(), 200),
            ("NormalOperation".to_string(), 200)
        ],
        "UpdateCloudlet requests"
    );
    h.check_on_time("berlin-1", &w).await;
}

/// 3. Two overlapping windows (in two files) on one cloudlet are one span: entered once before
///    the first starts, restored once after the second ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_windows_merge_into_one_span() {
    let mut h = Harness::new(3, OPERATOR, &[("berlin-1", "")]).await;
    let a = Window::new("wa", &["berlin-1"], Lead::Fixed(3), 3, 4);
    let b = Window::new("wb", &["berlin-1"], Lead::Fixed(3), 0, 4).starting_after(&a, 2);
    h.write_windows("10-a.toml", &[&a]);
    h.write_windows("20-b.toml", &[&b]);
    h.start_daemon().await;

    let during = h
        .wait_status(
            "berlin-1",
            "in maintenance and owned",
            in_maintenance_and_owned,
        )
        .await;
    let span = during.current_span.clone();
    check_eq!(
        h,
        span.as_ref().map(|s| s.windows.clone()),
        Some(vec!["wa".to_string(), "wb".to_string()]),
        "one span of both windows"
    );
    check_eq!(
        h,
        ts(span.as_ref().map(|s| s.end.as_str())),
        Some(b.end()),
        "the span ends with the later window"
    );

    h.wait_transition("berlin-1", "NormalOperation", b.end())
        .await;
    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&ENTER_EXIT),
        "exactly one enter and one exit"
    );
    check_eq!(
        h,
        hist.update_summary("berlin-1"),
        start_then_normal(),
        "UpdateCloudlet requests"
    );
    // In maintenance before the first window starts, restored only after the second ends.
    h.check_on_time("berlin-1", &a).await;
    h.check_restored_after("berlin-1", b.end(), &hist).await;
}

/// 4. A cloudlet a person put into maintenance before the window is external: never restored
///    by the daemon, not even after the window. Its neighbour in the same window is entered and
///    restored as usual (so the daemon did act in that span).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_by_hand_is_never_restored() {
    let mut h = Harness::new(4, OPERATOR, &[("berlin-1", ""), ("berlin-2", "")]).await;
    h.set_state_by_hand("berlin-1", "UnderMaintenance").await;
    let w = Window::new("w4", &["berlin-1", "berlin-2"], Lead::Fixed(3), 3, 3);
    h.write_windows("10-w4.toml", &[&w]);
    h.start_daemon().await;

    let during = h
        .wait_status("berlin-1", "seen in maintenance, external", |c| {
            c.observed.as_deref() == Some("UnderMaintenance") && c.external
        })
        .await;
    check!(h, !during.owned, "a cloudlet entered by hand is not owned");

    // The neighbour is restored after the end, and the daemon has looked at berlin-1 after the
    // end too; then a quiet period of several poll and verify cycles.
    h.wait_transition("berlin-2", "NormalOperation", w.end())
        .await;
    h.wait_status("berlin-1", "looked at after the window's end", |c| {
        ts(c.observed_at.as_deref()).is_some_and(|t| t >= w.end())
    })
    .await;
    h.sleep_until(Timestamp::now() + SignedDuration::from_millis(1500))
        .await;

    check_eq!(
        h,
        h.sim_state("berlin-1").await,
        "UnderMaintenance",
        "still in maintenance"
    );
    let after = h.cloudlet_status("berlin-1").await;
    check!(
        h,
        after.as_ref().is_some_and(|c| c.external
            && !c.owned
            && c.observed.as_deref() == Some("UnderMaintenance")),
        "status shows berlin-1 external: {after:?}"
    );
    let hist = h.history().await;
    check!(
        h,
        hist.updates_of("berlin-1").is_empty(),
        "the daemon sent UpdateCloudlet for a cloudlet a person put into maintenance"
    );
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&["NormalOperation→UnderMaintenance"]),
        "only the person's change"
    );
    h.check_on_time("berlin-2", &w).await;
}

/// 5. A storm of 502s (rate 0.7) on the cloudlet from before its enter time until the daemon
///    has met a few of them: it is still entered (late allowed) and restored after the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_5xx_storm() {
    let mut h = Harness::new(5, OPERATOR, &[("berlin-1", "")]).await;
    let w = Window::new("w5", &["berlin-1"], Lead::Fixed(3), 3, 6);
    h.write_windows("10-w5.toml", &[&w]);
    h.start_daemon().await;

    h.set_knobs("berlin-1", json!({"error_5xx_rate": 0.7}))
        .await;
    h.wait_for(
        "three 502 answers on berlin-1, or the window's start",
        async || {
            (h.history().await.count_status("berlin-1", 502) >= 3 || Timestamp::now() >= w.start)
                .then_some(())
        },
    )
    .await;
    h.set_knobs("berlin-1", json!({"error_5xx_rate": 0.0}))
        .await;

    h.wait_transition("berlin-1", "UnderMaintenance", w.enter_at())
        .await;
    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    let hist = h.history().await;
    check!(
        h,
        hist.count_status("berlin-1", 502) >= 1,
        "the storm never hit the daemon"
    );
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&ENTER_EXIT),
        "one clean enter and one restore"
    );
    let answered: Vec<(String, u16)> = hist
        .update_summary("berlin-1")
        .into_iter()
        .filter(|(_, status)| *status != 502)
        .collect();
    check_eq!(
        h,
        answered,
        start_then_normal(),
        "UpdateCloudlet requests that got past the proxy"
    );
    h.check_restored_after("berlin-1", w.end(), &hist).await;
}

/// 6. The enter's stream is cut after its first line; the controller carries on. The daemon
///    polls instead of re-sending: one start, one restore, no refusals, right end states.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_stream_is_polled_not_resent() {
    let mut h = Harness::new(6, OPERATOR, &[("berlin-1", "drop_after_first_line = true")]).await;
    let w = Window::new("w6", &["berlin-1"], Lead::Fixed(3), 3, 3);
    h.write_windows("10-w6.toml", &[&w]);
    h.start_daemon().await;

    h.wait_status(
        "berlin-1",
        "in maintenance and owned",
        in_maintenance_and_owned,
    )
    .await;
    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    h.wait_status("berlin-1", "restored and not owned", restored_and_released)
        .await;

    check!(
        h,
        h.stderr().contains("stream broke"),
        "the daemon never saw a dropped stream (fault not exercised)"
    );
    let hist = h.history().await;
    check_eq!(
        h,
        hist.update_summary("berlin-1"),
        start_then_normal(),
        "one start (never re-sent, so never refused as already in progress) and one restore"
    );
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&ENTER_EXIT),
        "transitions"
    );
    h.check_on_time("berlin-1", &w).await;
}

/// 7. AutoProv never answers the first enter: the controller times out after T and leaves
///    FailoverRequested + UpdateError. The daemon clears it with NormalOperation, then enters
///    again (AutoProv answers by then), and restores after the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_enter_is_recovered_then_entered_again() {
    let mut h = Harness::new(7, OPERATOR, &[("berlin-1", "autoprov_no_reply = true")]).await;
    let w = Window::new("w7", &["berlin-1"], Lead::Fixed(6), 3, 3);
    h.write_windows("10-w7.toml", &[&w]);
    h.start_daemon().await;

    h.wait_transition("berlin-1", "FailoverRequested", w.enter_at())
        .await;
    h.set_knobs("berlin-1", json!({"autoprov_no_reply": false}))
        .await;

    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&[
            "NormalOperation→FailoverRequested",
            "FailoverRequested→NormalOperationInit",
            "NormalOperationInit→NormalOperation",
            "NormalOperation→FailoverRequested",
            "FailoverRequested→CrmRequested",
            "CrmRequested→UnderMaintenance",
            "UnderMaintenance→NormalOperationInit",
            "NormalOperationInit→NormalOperation",
        ]),
        "timeout, recovery, second enter, restore"
    );
    let requested: Vec<String> = hist
        .updates_of("berlin-1")
        .iter()
        .map(|r| r.requested().to_string())
        .collect();
    check_eq!(
        h,
        requested,
        strings(&[
            "MaintenanceStart",
            "NormalOperation",
            "MaintenanceStart",
            "NormalOperation"
        ]),
        "UpdateCloudlet requests"
    );
    h.check_restored_after("berlin-1", w.end(), &hist).await;
}

/// 8. Every token expires mid-window: the daemon logs in again and still restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_mid_window_logs_in_again() {
    let mut h = Harness::new(8, OPERATOR, &[("berlin-1", "")]).await;
    let w = Window::new("w8", &["berlin-1"], Lead::Fixed(3), 3, 5);
    h.write_windows("10-w8.toml", &[&w]);
    h.start_daemon().await;

    h.wait_transition("berlin-1", "UnderMaintenance", w.enter_at())
        .await;
    let expired_at = Timestamp::now();
    h.expire_tokens().await;
    check!(
        h,
        expired_at < w.end(),
        "tokens were meant to expire mid-window"
    );

    h.wait_for("a new login after the tokens expired", async || {
        let hist = h.history().await;
        hist.logins()
            .iter()
            .any(|r| r.at > expired_at && r.status == 200)
            .then_some(())
    })
    .await;
    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;

    let hist = h.history().await;
    check!(
        h,
        hist.logins().iter().any(|r| r.at < expired_at),
        "no login before the expiry"
    );
    check_eq!(
        h,
        hist.update_summary("berlin-1"),
        start_then_normal(),
        "the restore went through with the new token"
    );
    h.check_on_time("berlin-1", &w).await;
}

/// 9. The daemon's user is only an OperatorViewer: the enter is refused with 403. Status shows
///    a `forbidden` alert naming the roles needed; the cloudlet stays in NormalOperation and
///    the daemon stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_is_an_alert_naming_the_roles() {
    let mut h = Harness::new(9, VIEWER, &[("berlin-1", "")]).await;
    let w = Window::new("w9", &["berlin-1"], Lead::Fixed(3), 3, 3);
    h.write_windows("10-w9.toml", &[&w]);
    h.start_daemon().await;

    let alert = h
        .wait_for("a forbidden alert", async || {
            h.status()
                .await
                .alerts
                .into_iter()
                .find(|a| a.kind == "forbidden")
        })
        .await;
    check!(
        h,
        alert.message.contains("OperatorManager") && alert.message.contains("OperatorContributor"),
        "the alert does not name the roles needed: {}",
        alert.message
    );
    check_eq!(
        h,
        alert.cloudlet,
        Some(full("berlin-1")),
        "alert names the cloudlet"
    );
    check_eq!(h, h.healthz().await, 200, "healthz with an alert");

    // Through the window's start: still healthy, never changed.
    h.sleep_until(w.start + SignedDuration::from_secs(1)).await;
    check_eq!(h, h.healthz().await, 200, "healthz after the start");
    check_eq!(
        h,
        h.sim_state("berlin-1").await,
        "NormalOperation",
        "a refused enter changes nothing"
    );
    let hist = h.history().await;
    check!(
        h,
        hist.transitions_of("berlin-1").is_empty(),
        "no transitions expected"
    );
    let updates = hist.update_summary("berlin-1");
    check!(
        h,
        !updates.is_empty() && updates.iter().all(|(_, s)| *s == 403),
        "every UpdateCloudlet is refused with 403: {updates:?}"
    );
    let c = h.cloudlet_status("berlin-1").await;
    check!(
        h,
        c.as_ref().is_some_and(|c| !c.owned),
        "a refused cloudlet is not owned: {c:?}"
    );
}

/// 10. SIGKILL at three points — (a) enter in flight, (b) in maintenance mid-window, (c) restore
///     in flight — each followed by a restart on the same state dir. The end state is right:
///     entered once, restored after the end, and a cloudlet put into maintenance by hand in the
///     same window is never owned or restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_at_three_points() {
    let mut h = Harness::new(10, OPERATOR, &[("slow-1", SLOW), ("berlin-2", "")]).await;
    h.set_state_by_hand("berlin-2", "UnderMaintenance").await;
    let w = Window::new("w10", &["slow-1", "berlin-2"], Lead::Auto, 3, 5);
    h.write_windows("10-w10.toml", &[&w]);
    h.start_daemon().await;

    // (a) The enter is in flight: the controller carries on without us.
    h.wait_transition("slow-1", "FailoverRequested", w.enter_at())
        .await;
    h.sigkill();
    check_eq!(
        h,
        h.sim_state("slow-1").await,
        "FailoverRequested",
        "(a) killed while the enter was in flight"
    );
    h.start_daemon().await;

    // (b) In maintenance mid-window.
    h.wait_status(
        "slow-1",
        "(a) in maintenance and owned after the restart",
        in_maintenance_and_owned,
    )
    .await;
    h.sigkill();
    h.start_daemon().await;
    h.wait_status(
        "slow-1",
        "(b) still owned after the restart",
        in_maintenance_and_owned,
    )
    .await;

    // (c) The restore is in flight.
    h.wait_transition("slow-1", "NormalOperationInit", w.end())
        .await;
    h.sigkill();
    h.start_daemon().await;
    h.wait_status("slow-1", "(c) restored and released", restored_and_released)
        .await;
    h.wait_status("berlin-2", "external after every restart", |c| {
        c.external && !c.owned && ts(c.observed_at.as_deref()).is_some_and(|t| t >= w.end())
    })
    .await;

    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("slow-1"),
        strings(&ENTER_EXIT),
        "one enter and one restore across three kills"
    );
    // Whatever was refused on the way ("already in progress", "must be in NormalOperation"),
    // the end state is right and no second start went through.
    let updates = hist.update_summary("slow-1");
    check_eq!(
        h,
        updates
            .iter()
            .filter(|(r, s)| r == "MaintenanceStart" && *s == 200)
            .count(),
        1,
        "accepted starts: {updates:?}"
    );
    h.check_on_time("slow-1", &w).await;
    check!(
        h,
        hist.updates_of("berlin-2").is_empty(),
        "the daemon touched a cloudlet a person put into maintenance"
    );
    check_eq!(
        h,
        h.sim_state("berlin-2").await,
        "UnderMaintenance",
        "berlin-2 stays in maintenance"
    );
}

/// 11. A window file turns into broken TOML while its window is in force, seen first by the
///     file watcher, then reloaded on SIGHUP: the file is stale, its last good version stays in
///     force, and the cloudlet stays in maintenance until the end, then is restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_keeps_its_window_in_force() {
    let mut h = Harness::new(11, OPERATOR, &[("berlin-1", "")]).await;
    let w = Window::new("w11", &["berlin-1"], Lead::Fixed(3), 3, 6);
    h.write_windows("10-w11.toml", &[&w]);
    h.start_daemon().await;
    h.wait_status(
        "berlin-1",
        "in maintenance and owned",
        in_maintenance_and_owned,
    )
    .await;

    // The watcher (no signal).
    h.write_file(
        "10-w11.toml",
        "[[window]\nid = \"w11\"\nthis is = not toml\n",
    );
    let stale = |s: &cloudlet_maintd::engine::StatusSnapshot| {
        s.files
            .iter()
            .any(|f| f.path.ends_with("10-w11.toml") && f.stale && !f.errors.is_empty())
    };
    let generation = h
        .wait_for("the watcher reloads: file stale", async || {
            let s = h.status().await;
            (stale(&s)
                && s.last_reload
                    .as_ref()
                    .is_some_and(|r| r.trigger == "file change"))
            .then_some(s.generation)
        })
        .await;

    // SIGHUP.
    h.signal("HUP");
    let s = h
        .wait_for("a SIGHUP reload", async || {
            let s = h.status().await;
            (s.generation > generation
                && s.last_reload
                    .as_ref()
                    .is_some_and(|r| r.trigger == "SIGHUP"))
            .then_some(s)
        })
        .await;
    check!(h, stale(&s), "after SIGHUP the file is still stale");
    check_eq!(
        h,
        s.counts.windows,
        1,
        "the last good window stays in force"
    );
    check_eq!(h, s.counts.files_stale, 1, "stale files");
    let c = s
        .cloudlets
        .iter()
        .find(|c| c.cloudlet == full("berlin-1"))
        .cloned();
    check!(
        h,
        c.as_ref()
            .is_some_and(|c| c.desired == "maintenance" && c.owned),
        "the cloudlet still wants maintenance: {c:?}"
    );

    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&ENTER_EXIT),
        "transitions"
    );
    h.check_on_time("berlin-1", &w).await;
}

/// 12. The window file is removed (and SIGHUP sent) while its cloudlet is in maintenance: a
///     deliberate cancel, restored promptly — well before the window's original end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_file_restores_promptly() {
    let mut h = Harness::new(12, OPERATOR, &[("berlin-1", "")]).await;
    let w = Window::new("w12", &["berlin-1"], Lead::Fixed(3), 3, 40);
    h.write_windows("10-w12.toml", &[&w]);
    h.start_daemon().await;
    h.wait_status(
        "berlin-1",
        "in maintenance and owned",
        in_maintenance_and_owned,
    )
    .await;

    let removed_at = Timestamp::now();
    h.remove_file("10-w12.toml");
    h.signal("HUP");

    let restored = h
        .wait_transition("berlin-1", "NormalOperation", removed_at)
        .await;
    check!(
        h,
        restored.at < w.end(),
        "restored at {}, not before the original end {}",
        restored.at,
        w.end()
    );
    let hist = h.history().await;
    let init = hist.last_into("berlin-1", "NormalOperationInit").cloned();
    check!(
        h,
        init.is_some_and(|t| t.at >= removed_at),
        "the restore began before the file was removed"
    );
    check_eq!(
        h,
        hist.edges_of("berlin-1"),
        strings(&ENTER_EXIT),
        "transitions"
    );
    check_eq!(
        h,
        hist.update_summary("berlin-1"),
        start_then_normal(),
        "UpdateCloudlet requests"
    );
    let s = h.status().await;
    check_eq!(h, s.counts.windows, 0, "no window left");
    h.wait_status("berlin-1", "not owned any more", |c| !c.owned)
        .await;
}

/// 13. SIGTERM while an enter is in flight: the handshake finishes within the grace period and
///     the daemon exits 0; after a restart on the same state dir the cloudlet is still owned
///     and is restored after the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_handshake_drains_and_restarts() {
    let mut h = Harness::new(13, OPERATOR, &[("slow-1", SLOW)]).await;
    let w = Window::new("w13", &["slow-1"], Lead::Auto, 3, 4);
    h.write_windows("10-w13.toml", &[&w]);
    h.start_daemon().await;

    h.wait_transition("slow-1", "FailoverRequested", w.enter_at())
        .await;
    let sent = Instant::now();
    h.signal("TERM");
    let status = h.wait_exit(SHUTDOWN_GRACE + Duration::from_secs(10)).await;
    let took = sent.elapsed();
    check!(h, status.is_some(), "the daemon did not exit after SIGTERM");
    check_eq!(
        h,
        status.and_then(|s| s.code()),
        Some(0),
        "exit status after SIGTERM"
    );
    check!(
        h,
        took <= SHUTDOWN_GRACE + Duration::from_secs(3),
        "exit took {took:?}, grace is {SHUTDOWN_GRACE:?}"
    );
    // The in-flight handshake was allowed to finish.
    check_eq!(
        h,
        h.sim_state("slow-1").await,
        "UnderMaintenance",
        "the in-flight enter finished within the grace period"
    );

    h.start_daemon().await;
    h.wait_status(
        "slow-1",
        "owned after the restart",
        in_maintenance_and_owned,
    )
    .await;
    h.wait_transition("slow-1", "NormalOperation", w.end())
        .await;
    let hist = h.history().await;
    check_eq!(
        h,
        hist.edges_of("slow-1"),
        strings(&ENTER_EXIT),
        "transitions"
    );
    check_eq!(
        h,
        hist.update_summary("slow-1"),
        start_then_normal(),
        "UpdateCloudlet requests"
    );
    h.check_on_time("slow-1", &w).await;
}

/// 14. What `/v1/status` and `/v1/cloudlets/...` say about a cloudlet during its window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_cloudlet_during_its_window() {
    let mut h = Harness::new(14, OPERATOR, &[("berlin-1", ""), ("berlin-2", "")]).await;
    let w = Window::new("status-window", &["berlin-1"], Lead::Fixed(4), 3, 4);
    h.write_windows("10-status.toml", &[&w]);
    h.start_daemon().await;

    h.wait_transition("berlin-1", "UnderMaintenance", w.enter_at())
        .await;
    h.sleep_until(w.start).await;
    let c = h
        .wait_status(
            "berlin-1",
            "in maintenance and owned",
            in_maintenance_and_owned,
        )
        .await;
    let s = h.status().await;
    check!(
        h,
        Timestamp::now() < w.end(),
        "the status was read after the window (too slow to check it during)"
    );

    check_eq!(h, c.region, "EU", "region");
    check_eq!(
        h,
        c.observed.as_deref(),
        Some("UnderMaintenance"),
        "observed"
    );
    check!(h, c.observed_at.is_some(), "observed_at");
    check_eq!(h, c.desired, "maintenance", "desired");
    check!(h, c.owned && !c.external, "owned, not external");
    check!(h, !c.update_error && !c.late, "no error, not late");
    check_eq!(h, c.alert, None, "alert");
    check_eq!(h, c.lead_seconds, Some(4), "lead_seconds");
    check_eq!(
        h,
        c.lead_source.as_deref(),
        Some("fixed by status-window"),
        "lead_source"
    );
    let span = c.current_span.clone();
    check_eq!(
        h,
        span.as_ref()
            .map(|s| (ts(Some(&s.enter_at)), ts(Some(&s.start)), ts(Some(&s.end)))),
        Some((Some(w.enter_at()), Some(w.start), Some(w.end()))),
        "current span"
    );
    check_eq!(
        h,
        span.as_ref().map(|s| (s.windows.clone(), s.failover)),
        Some((vec!["status-window".to_string()], true)),
        "current span's windows and failover"
    );
    check_eq!(h, c.next_action.as_deref(), Some("exit"), "next action");
    check_eq!(
        h,
        ts(c.next_action_at.as_deref()),
        Some(w.end()),
        "next action at the end"
    );
    let enter = c.last_handshakes.first().cloned();
    check!(
        h,
        enter.as_ref().is_some_and(|e| e.kind == "enter_failover"
            && e.ok
            && e.observed.as_deref() == Some("UnderMaintenance")
            && e.duration_ms > 0
            && e.duration_ms < 4000
            && ts(Some(&e.started_at)).is_some_and(|t| t >= w.enter_at())),
        "last handshake: {enter:?}"
    );
    check!(
        h,
        s.counts.in_maintenance == 1 && s.counts.owned == 1 && s.counts.external == 0,
        "counts: {:?}",
        s.counts
    );
    check!(h, s.alerts.is_empty(), "alerts: {:?}", s.alerts);

    let (code, body) = h.cloudlet_route("berlin-1").await;
    check_eq!(h, code, 200, "GET /v1/cloudlets/EU/TDG/berlin-1");
    check!(
        h,
        body["cloudlet"] == "TDG/berlin-1"
            && body["owned"] == true
            && body["desired"] == "maintenance",
        "per-cloudlet route: {body}"
    );
    let (code, _) = h.cloudlet_route("berlin-2").await;
    check_eq!(h, code, 404, "a cloudlet in no window");
    check_eq!(h, h.healthz().await, 200, "healthz");

    h.wait_transition("berlin-1", "NormalOperation", w.end())
        .await;
    let after = h
        .wait_status("berlin-1", "restored and not owned", restored_and_released)
        .await;
    check_eq!(
        h,
        after
            .last_handshakes
            .first()
            .map(|e| (e.kind.as_str(), e.ok)),
        Some(("exit", true)),
        "the newest handshake is the exit"
    );
    h.check_on_time("berlin-1", &w).await;
}
