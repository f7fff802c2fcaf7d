//! Properties of the planner over random windows (proptest):
//! spans of one cloudlet are sorted and never overlap, every occurrence lies inside a span, and
//! `enter_at = start − lead` for every span.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use cloudlet_maintd::plan::{WorstCaseLead, plan};
use cloudlet_maintd::windows::occurrences;
use cloudlet_maintd::windows::parse::parse_file;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];
const CRONS: &[&str] = &[
    "0 2 * * Sun",
    "30 1 * * *",
    "0 */6 * * *",
    "15 2 L * *",
    "0 3 * * MON#2",
    "*/20 2 * * *",
    "0 0 1,15 * *",
];

#[derive(Debug, Clone)]
struct WinSpec {
    cron: Option<usize>,
    one_off_hours: i64,
    zone: usize,
    duration_min: u64,
    failover: bool,
    fixed_lead_min: Option<u64>,
    cloudlet: u8,
    skip_gap: bool,
}

fn win_spec() -> impl Strategy<Value = WinSpec> {
    (
        proptest::option::of(0..CRONS.len()),
        0i64..24 * 60,
        0..ZONES.len(),
        1u64..(3 * 24 * 60),
        any::<bool>(),
        proptest::option::of(0u64..120),
        0u8..3,
        any::<bool>(),
    )
        .prop_map(
            |(
                cron,
                one_off_hours,
                zone,
                duration_min,
                failover,
                fixed_lead_min,
                cloudlet,
                skip_gap,
            )| WinSpec {
                cron,
                one_off_hours,
                zone,
                duration_min,
                failover,
                fixed_lead_min,
                cloudlet,
                skip_gap,
            },
        )
}

fn base() -> Timestamp {
    Timestamp::from_str("2027-03-01T00:00:00Z").unwrap()
}

fn render(specs: &[WinSpec]) -> String {
    let mut out = String::new();
    for (i, s) in specs.iter().enumerate() {
        let tz = ZONES[s.zone];
        let when = match s.cron {
            Some(c) => format!("cron = \"{}\"", CRONS[c]),
            None => {
                let t = base()
                    .checked_add(SignedDuration::from_hours(s.one_off_hours))
                    .unwrap();
                let civil = t.to_zoned(jiff::tz::TimeZone::get(tz).unwrap()).datetime();
                format!("start = \"{}\"", civil.strftime("%Y-%m-%dT%H:%M"))
            }
        };
        let lead = match s.fixed_lead_min {
            Some(m) => format!("lead = \"{}m\"", m.max(1)),
            None => "lead = \"auto\"".into(),
        };
        out.push_str(&format!(
            "[[window]]\nid = \"w{i}\"\nregion = \"EU\"\ncloudlets = [\"O/c{}\"]\n{when}\ntimezone = \"{tz}\"\n\
             duration = \"{}m\"\nfailover = {}\n{lead}\ndst_gap = \"{}\"\n\n",
            s.cloudlet,
            s.duration_min,
            s.failover,
            if s.skip_gap { "skip" } else { "shift" }
        ));
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn spans_are_sorted_disjoint_and_cover_every_occurrence(specs in proptest::collection::vec(win_spec(), 1..6)) {
        let text = render(&specs);
        let parsed = parse_file(Path::new("p.toml"), &text, base());
        prop_assert!(parsed.errors.is_empty(), "{:?}\n{}", parsed.errors, text);
        let leads = WorstCaseLead { maintenance_timeout: Duration::from_secs(300), margin: Duration::from_secs(60) };
        let from = base();
        let until = from.checked_add(SignedDuration::from_hours(24 * 60)).unwrap();
        let p = plan(&parsed.windows, &leads, from, until);

        for spans in p.cloudlets.values() {
            for s in spans {
                prop_assert!(s.start < s.end);
                prop_assert_eq!(s.enter_at, s.start.checked_sub(SignedDuration::try_from(s.lead.duration).unwrap()).unwrap());
            }
            for pair in spans.windows(2) {
                prop_assert!(pair[0].start < pair[1].start, "sorted");
                prop_assert!(pair[0].end <= pair[1].enter_at, "next enter must not start before the previous span ends: {:?}", pair);
            }
        }
        // Every occurrence that overlaps the planned range lies inside one span of each of its
        // cloudlets (occurrences at the edges of the range may belong to spans cut off there).
        for w in &parsed.windows {
            let inner_from = from.checked_add(SignedDuration::from_hours(24 * 4)).unwrap();
            let inner_until = until.checked_sub(SignedDuration::from_hours(24 * 4)).unwrap();
            let (occ, _) = occurrences(w, inner_from, inner_until);
            for o in occ {
                for c in &w.cloudlets {
                    let spans = p.cloudlets.iter().find(|(k, _)| &k.cloudlet == c).map(|(_, v)| v);
                    let spans = spans.expect("cloudlet has spans");
                    prop_assert!(
                        spans.iter().any(|s| s.start <= o.start && o.end <= s.end),
                        "occurrence {:?} of {} not inside a span of {}", o, w.id, c
                    );
                }
            }
        }
    }
}
