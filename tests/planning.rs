//! Planning against fixed instants: recurrences, bounds, merges and the DST policy.
//!
//! Everything here goes through the public, pure API (`parse_file` → `plan`), with `now`
//! pinned, so each expectation is a fact about time rather than about the machine running it.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use cloudlet_maintd::plan::{Span, SpanNote, WorstCaseLead, plan};
use cloudlet_maintd::windows::occurrences::OccurrenceNote;
use cloudlet_maintd::windows::parse::parse_file;
use cloudlet_maintd::windows::{Window, occurrences};
use jiff::Timestamp;
use jiff::tz::TimeZone;

const T: Duration = Duration::from_secs(300);

fn ts(s: &str) -> Timestamp {
    Timestamp::from_str(s).unwrap()
}

fn now() -> Timestamp {
    ts("2026-11-29T12:00:00Z")
}

fn windows(toml: &str) -> Vec<Window> {
    let parsed = parse_file(Path::new("test.toml"), toml, now());
    assert!(
        parsed.errors.is_empty(),
        "unexpected errors: {:?}",
        parsed.errors
    );
    parsed.windows
}

fn leads() -> WorstCaseLead {
    WorstCaseLead {
        maintenance_timeout: T,
        margin: Duration::from_secs(60),
    }
}

fn spans(toml: &str, from: &str, until: &str) -> Vec<Span> {
    let ws = windows(toml);
    let p = plan(&ws, &leads(), ts(from), ts(until));
    p.spans().into_iter().cloned().collect()
}

fn starts(toml: &str, from: &str, until: &str) -> Vec<String> {
    spans(toml, from, until)
        .iter()
        .map(|s| s.start.to_string())
        .collect()
}

fn window(body: &str) -> String {
    format!("[[window]]\nid = \"w\"\nregion = \"EU\"\ncloudlets = [\"O/c\"]\n{body}\n")
}

#[test]
fn one_off_window_in_berlin() {
    let s = spans(
        &window("start = \"2026-12-06T02:00\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\""),
        "2026-12-01T00:00:00Z",
        "2026-12-31T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2026-12-06T01:00:00Z"));
    assert_eq!(s[0].end, ts("2026-12-06T05:00:00Z"));
    // Worst case with failover: 2·T + 1m = 11 minutes.
    assert_eq!(s[0].enter_at, ts("2026-12-06T00:49:00Z"));
    assert_eq!(s[0].to_json().start, "2026-12-06T02:00:00+01:00");
}

#[test]
fn no_failover_lead_is_t_plus_margin_and_fixed_lead_wins() {
    let s = spans(
        &window("start = \"2026-12-06T02:00\"\nduration = \"1h\"\nfailover = false"),
        "2026-12-01T00:00:00Z",
        "2026-12-31T00:00:00Z",
    );
    assert_eq!(s[0].lead.duration, Duration::from_secs(360));
    assert!(!s[0].failover);
    let s = spans(
        &window("start = \"2026-12-06T02:00\"\nduration = \"1h\"\nlead = \"25m\""),
        "2026-12-01T00:00:00Z",
        "2026-12-31T00:00:00Z",
    );
    assert_eq!(s[0].enter_at, ts("2026-12-06T01:35:00Z"));
    assert_eq!(s[0].to_json().lead_source, "fixed by w");
}

#[test]
fn weekly_cron_uses_wall_clock_of_the_zone() {
    // Sundays 02:00 Berlin: CET (+1) in winter, CEST (+2) in summer.
    let got = starts(
        &window("cron = \"0 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"1h\""),
        "2027-03-14T00:00:00Z",
        "2027-04-12T00:00:00Z",
    );
    assert_eq!(
        got,
        [
            "2027-03-14T01:00:00Z",
            "2027-03-21T01:00:00Z",
            // 2027-03-28: 02:00 does not exist; shifted to 03:00 CEST = 01:00Z.
            "2027-03-28T01:00:00Z",
            "2027-04-04T00:00:00Z",
            "2027-04-11T00:00:00Z",
        ]
    );
}

#[test]
fn last_day_of_month_and_feb_29() {
    let got = starts(
        &window("cron = \"0 22 L * *\"\nduration = \"1h\""),
        "2027-01-15T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert_eq!(
        got,
        [
            "2027-01-31T22:00:00Z",
            "2027-02-28T22:00:00Z",
            "2027-03-31T22:00:00Z"
        ]
    );
    let got = starts(
        &window("cron = \"0 1 29 2 *\"\nduration = \"1h\""),
        "2027-01-01T00:00:00Z",
        "2029-12-31T00:00:00Z",
    );
    assert_eq!(got, ["2028-02-29T01:00:00Z"]);
}

#[test]
fn nth_weekday_and_names() {
    // First Monday of each month at 03:00 UTC.
    let got = starts(
        &window("cron = \"0 3 * * MON#1\"\nduration = \"1h\""),
        "2027-01-01T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert_eq!(
        got,
        [
            "2027-01-04T03:00:00Z",
            "2027-02-01T03:00:00Z",
            "2027-03-01T03:00:00Z"
        ]
    );
    // Month and day names; with day-of-month `*`, only the weekday restricts.
    let got = starts(
        &window("cron = \"0 4 * JAN,JUL SAT\"\nduration = \"1h\""),
        "2027-01-01T00:00:00Z",
        "2027-01-20T00:00:00Z",
    );
    assert_eq!(
        got,
        [
            "2027-01-02T04:00:00Z",
            "2027-01-09T04:00:00Z",
            "2027-01-16T04:00:00Z"
        ]
    );
    // POSIX OR-ing: both day-of-month and weekday restricted means either matches.
    let got = starts(
        &window("cron = \"0 5 1 * FRI\"\nduration = \"1h\""),
        "2027-01-01T00:00:00Z",
        "2027-01-16T00:00:00Z",
    );
    assert_eq!(
        got,
        [
            "2027-01-01T05:00:00Z",
            "2027-01-08T05:00:00Z",
            "2027-01-15T05:00:00Z"
        ]
    );
}

#[test]
fn six_field_pattern_with_seconds() {
    let got = starts(
        &window("cron = \"30 0 6 * * *\"\nduration = \"1h\""),
        "2027-01-01T00:00:00Z",
        "2027-01-02T00:00:00Z",
    );
    assert_eq!(got, ["2027-01-01T06:00:30Z"]);
}

#[test]
fn skip_dates_and_bounds() {
    let toml = window(
        "cron = \"0 2 * * *\"\ntimezone = \"Europe/Berlin\"\nduration = \"1h\"\n\
         skip = [\"2027-01-03\", 2027-01-05]\nnot_before = \"2027-01-02\"\nnot_after = \"2027-01-06\"",
    );
    let got = starts(&toml, "2026-12-30T00:00:00Z", "2027-01-10T00:00:00Z");
    assert_eq!(
        got,
        [
            "2027-01-02T01:00:00Z",
            "2027-01-04T01:00:00Z",
            "2027-01-06T01:00:00Z"
        ]
    );
    let ws = windows(&toml);
    let p = plan(
        &ws,
        &leads(),
        ts("2026-12-30T00:00:00Z"),
        ts("2027-01-10T00:00:00Z"),
    );
    let skipped: Vec<String> = p
        .skipped
        .iter()
        .map(|s| s.skipped.civil_start.date().to_string())
        .collect();
    assert_eq!(skipped, ["2027-01-03", "2027-01-05"]);
}

fn two_windows(a: &str, b: &str) -> String {
    format!(
        "[[window]]\nid = \"a\"\nregion = \"EU\"\ncloudlets = [\"O/c\"]\n{a}\n\n\
         [[window]]\nid = \"b\"\nregion = \"EU\"\ncloudlets = [\"O/c\"]\n{b}\n"
    )
}

#[test]
fn overlapping_windows_merge() {
    let s = spans(
        &two_windows(
            "start = \"2027-01-10T02:00\"\nduration = \"2h\"\nfailover = false",
            "start = \"2027-01-10T03:00\"\nduration = \"2h\"",
        ),
        "2027-01-01T00:00:00Z",
        "2027-02-01T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2027-01-10T02:00:00Z"));
    assert_eq!(s[0].end, ts("2027-01-10T05:00:00Z"));
    assert_eq!(s[0].windows, ["a", "b"]);
    // Any covered window wanting failover makes the span a failover span, with its lead.
    assert!(s[0].failover);
    assert_eq!(s[0].lead.duration, Duration::from_secs(660));
    assert!(s[0].notes.contains(&SpanNote::Merged { occurrences: 2 }));
}

#[test]
fn touching_windows_merge() {
    let s = spans(
        &two_windows(
            "start = \"2027-01-10T02:00\"\nduration = \"1h\"",
            "start = \"2027-01-10T03:00\"\nduration = \"1h\"",
        ),
        "2027-01-01T00:00:00Z",
        "2027-02-01T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].end, ts("2027-01-10T04:00:00Z"));
}

#[test]
fn a_gap_shorter_than_the_next_lead_merges_and_a_longer_one_does_not() {
    // Gap 10 min < lead 11 min: merged.
    let s = spans(
        &two_windows(
            "start = \"2027-01-10T02:00\"\nduration = \"1h\"",
            "start = \"2027-01-10T03:10\"\nduration = \"1h\"",
        ),
        "2027-01-01T00:00:00Z",
        "2027-02-01T00:00:00Z",
    );
    assert_eq!(s.len(), 1, "{s:?}");
    // Gap 11 min = lead: the next enter starts exactly when the first span ends; separate.
    let s = spans(
        &two_windows(
            "start = \"2027-01-10T02:00\"\nduration = \"1h\"",
            "start = \"2027-01-10T03:11\"\nduration = \"1h\"",
        ),
        "2027-01-01T00:00:00Z",
        "2027-02-01T00:00:00Z",
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[1].enter_at, s[0].end);
}

/// Civil time in a zone, resolved unambiguously (for expectations).
fn civil(zone: &str, text: &str) -> Timestamp {
    let tz = TimeZone::get(zone).unwrap();
    jiff::civil::DateTime::from_str(text)
        .unwrap()
        .to_zoned(tz)
        .unwrap()
        .timestamp()
}

fn gap_case(zone: &str, cron: &str, policy: &str, from: &str, until: &str) -> Vec<Span> {
    spans(
        &window(&format!(
            "cron = \"{cron}\"\ntimezone = \"{zone}\"\nduration = \"1h\"\ndst_gap = \"{policy}\""
        )),
        from,
        until,
    )
}

#[test]
fn spring_gap_berlin_shift_and_skip() {
    // 2027-03-28 02:30 does not exist in Berlin (02:00 → 03:00).
    let s = gap_case(
        "Europe/Berlin",
        "30 2 28 3 *",
        "shift",
        "2027-03-01T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2027-03-28T01:00:00Z"));
    assert_eq!(s[0].start, civil("Europe/Berlin", "2027-03-28T03:00"));
    assert!(matches!(
        s[0].notes[0],
        SpanNote::Dst {
            note: OccurrenceNote::DstShifted { .. },
            ..
        }
    ));
    let s = gap_case(
        "Europe/Berlin",
        "30 2 28 3 *",
        "skip",
        "2027-03-01T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert!(s.is_empty());
}

#[test]
fn spring_gap_new_york_shift_and_skip() {
    // 2027-03-14 02:30 does not exist in New York (02:00 EST → 03:00 EDT).
    let s = gap_case(
        "America/New_York",
        "30 2 * * SUN#2",
        "shift",
        "2027-03-01T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2027-03-14T07:00:00Z"));
    assert_eq!(s[0].to_json().start, "2027-03-14T03:00:00-04:00");
    let s = gap_case(
        "America/New_York",
        "30 2 * * SUN#2",
        "skip",
        "2027-03-01T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert!(s.is_empty());
}

#[test]
fn spring_gap_in_a_thirty_minute_zone() {
    // Lord Howe Island moves from +10:30 to +11:00 on the first Sunday of October at 02:00,
    // so 02:00–02:29 does not exist.
    let s = gap_case(
        "Australia/Lord_Howe",
        "15 2 * * *",
        "shift",
        "2027-10-02T00:00:00Z",
        "2027-10-04T00:00:00Z",
    );
    let gap_day: Vec<&Span> = s
        .iter()
        .filter(|sp| sp.notes.iter().any(|n| matches!(n, SpanNote::Dst { .. })))
        .collect();
    assert_eq!(gap_day.len(), 1, "{s:?}");
    assert_eq!(
        gap_day[0].start,
        civil("Australia/Lord_Howe", "2027-10-03T02:30")
    );
    assert_eq!(gap_day[0].to_json().start, "2027-10-03T02:30:00+11:00");
    let s = gap_case(
        "Australia/Lord_Howe",
        "15 2 * * *",
        "skip",
        "2027-10-02T00:00:00Z",
        "2027-10-04T00:00:00Z",
    );
    assert!(s.iter().all(|sp| sp.notes.is_empty()));
    assert_eq!(
        s.len(),
        1,
        "the other day of the range still has its occurrence"
    );
}

#[test]
fn autumn_fold_runs_once_at_the_first_instant() {
    // Berlin 2026-10-25: 02:30 happens at +02:00 and again at +01:00.
    let s = spans(
        &window("cron = \"30 2 25 10 *\"\ntimezone = \"Europe/Berlin\"\nduration = \"30m\""),
        "2026-10-20T00:00:00Z",
        "2026-10-30T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2026-10-25T00:30:00Z"));
    assert!(matches!(
        s[0].notes[0],
        SpanNote::Dst {
            note: OccurrenceNote::DstFold { .. },
            ..
        }
    ));
    // New York 2027-11-07: 01:30 EDT then 01:30 EST; runs at the EDT one.
    let s = spans(
        &window("cron = \"30 1 * * *\"\ntimezone = \"America/New_York\"\nduration = \"20m\""),
        "2027-11-07T00:00:00Z",
        "2027-11-07T12:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2027-11-07T05:30:00Z"));
    // Lord Howe 2027-04-04: 01:30–01:59 repeats (+11:00 then +10:30).
    let s = spans(
        &window("cron = \"45 1 4 4 *\"\ntimezone = \"Australia/Lord_Howe\"\nduration = \"10m\""),
        "2027-04-01T00:00:00Z",
        "2027-04-06T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].to_json().start, "2027-04-04T01:45:00+11:00");
}

#[test]
fn a_window_across_a_dst_change_lasts_its_elapsed_duration() {
    // Starts 00:00 CET on the spring-forward night; 6 elapsed hours end at 07:00 CEST.
    let s = spans(
        &window("start = \"2027-03-28T00:00\"\ntimezone = \"Europe/Berlin\"\nduration = \"6h\""),
        "2027-03-01T00:00:00Z",
        "2027-04-01T00:00:00Z",
    );
    assert_eq!(s[0].end.duration_since(s[0].start).as_secs(), 6 * 3600);
    assert_eq!(s[0].to_json().end, "2027-03-28T07:00:00+02:00");
    // Autumn: 00:00 CEST + 6h = 05:00 CET.
    let s = spans(
        &window("start = \"2026-10-25T00:00\"\ntimezone = \"Europe/Berlin\"\nduration = \"6h\""),
        "2026-10-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
    );
    assert_eq!(s[0].to_json().end, "2026-10-25T05:00:00+01:00");
}

#[test]
fn spans_in_progress_at_from_are_listed_whole() {
    let s = spans(
        &window("start = \"2027-01-10T02:00\"\nduration = \"4h\""),
        "2027-01-10T03:00:00Z",
        "2027-01-11T00:00:00Z",
    );
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].start, ts("2027-01-10T02:00:00Z"));
    assert!(s[0].wants_maintenance(ts("2027-01-10T03:00:00Z")));
}

#[test]
fn occurrences_of_several_starts_in_one_gap_collapse() {
    let ws = windows(&window(
        "cron = \"*/15 2 28 3 *\"\ntimezone = \"Europe/Berlin\"\nduration = \"5m\"",
    ));
    let (occ, _) = occurrences(
        &ws[0],
        ts("2027-03-27T00:00:00Z"),
        ts("2027-03-29T00:00:00Z"),
    );
    assert_eq!(occ.len(), 1, "{occ:?}");
    assert_eq!(occ[0].start, ts("2027-03-28T01:00:00Z"));
}
