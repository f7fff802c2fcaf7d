//! The plan: per cloudlet, the merged maintenance spans with their enter times.
//!
//! A pure function of the windows in force, a lead policy, and a time range. Occurrences of all
//! windows that name a cloudlet are merged into **spans** when they overlap or touch, and also
//! when the gap between them is shorter than the next span's lead: leaving maintenance only to
//! start entering again at once helps nobody and doubles the handshakes. Each span's
//! `enter_at = start − lead`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::timeutil::{minus, minus_std, plus, signed};
use crate::windows::occurrences::{self, OccurrenceNote, Skipped};
use crate::windows::{LeadSpec, Window};

/// Identifies a cloudlet across regions: `(region, "organization/name")`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct CloudletRef {
    pub region: String,
    /// `organization/name`.
    pub cloudlet: String,
}

impl fmt::Display for CloudletRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.region, self.cloudlet)
    }
}

/// Where a span's lead came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LeadSource {
    /// Pinned by a window (`lead = "25m"`).
    Window { id: String },
    /// No history: the protocol's worst case (2·T + margin, or T + margin without failover).
    WorstCase,
    /// Learned from measured handshakes.
    Learned { samples: usize, quantile: f64 },
}

impl fmt::Display for LeadSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeadSource::Window { id } => write!(f, "fixed by {id}"),
            LeadSource::WorstCase => f.write_str("worst case"),
            LeadSource::Learned { samples, quantile } => {
                write!(f, "learned p{:.0} of {samples}", quantile * 100.0)
            }
        }
    }
}

/// A lead and why.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadChoice {
    pub duration: Duration,
    pub source: LeadSource,
}

/// Supplies the `lead = "auto"` value for a cloudlet. The engine implements it from measured
/// handshakes; [`WorstCaseLead`] is the cold-start policy.
pub trait LeadPolicy {
    fn auto_lead(&self, cloudlet: &CloudletRef, failover: bool) -> LeadChoice;
}

/// The protocol worst case: `2·T + margin` with failover (two waits of up to T each), `T +
/// margin` without.
#[derive(Debug, Clone, Copy)]
pub struct WorstCaseLead {
    pub maintenance_timeout: Duration,
    pub margin: Duration,
}

impl WorstCaseLead {
    pub fn duration(&self, failover: bool) -> Duration {
        let waits = if failover { 2 } else { 1 };
        self.maintenance_timeout * waits + self.margin
    }
}

impl LeadPolicy for WorstCaseLead {
    fn auto_lead(&self, _cloudlet: &CloudletRef, failover: bool) -> LeadChoice {
        LeadChoice {
            duration: self.duration(failover),
            source: LeadSource::WorstCase,
        }
    }
}

/// A note on a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpanNote {
    Dst {
        window: String,
        note: OccurrenceNote,
    },
    /// Several occurrences were joined into this span.
    Merged { occurrences: usize },
}

impl fmt::Display for SpanNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpanNote::Dst { window, note } => write!(f, "{window}: {note}"),
            SpanNote::Merged { occurrences } => write!(f, "merged {occurrences} occurrences"),
        }
    }
}

/// One merged maintenance interval of one cloudlet.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub cloudlet: CloudletRef,
    pub enter_at: Timestamp,
    pub start: Timestamp,
    pub end: Timestamp,
    /// Ids of the windows whose occurrences this span covers, first-opening first.
    pub windows: Vec<String>,
    /// True if any covered window wants failover.
    pub failover: bool,
    pub lead: LeadChoice,
    /// Zone of the window that opens the span (used to display its times).
    pub timezone: TimeZone,
    pub timezone_name: String,
    pub notes: Vec<SpanNote>,
}

impl Span {
    /// True while the cloudlet should be in maintenance or entering it.
    pub fn wants_maintenance(&self, now: Timestamp) -> bool {
        self.enter_at <= now && now < self.end
    }
}

/// An occurrence dropped by a window's rules, for display.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedOccurrence {
    pub cloudlet: CloudletRef,
    pub window: String,
    pub skipped: Skipped,
    pub timezone_name: String,
}

/// The plan over a time range.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub from: Option<Timestamp>,
    pub until: Option<Timestamp>,
    /// Per cloudlet, spans sorted by start, never overlapping.
    pub cloudlets: BTreeMap<CloudletRef, Vec<Span>>,
    pub skipped: Vec<SkippedOccurrence>,
}

impl Plan {
    /// All spans, sorted by `enter_at` then cloudlet.
    pub fn spans(&self) -> Vec<&Span> {
        let mut all: Vec<&Span> = self.cloudlets.values().flatten().collect();
        all.sort_by(|a, b| (a.enter_at, &a.cloudlet).cmp(&(b.enter_at, &b.cloudlet)));
        all
    }
}

struct Occ<'w> {
    window: &'w Window,
    start: Timestamp,
    end: Timestamp,
    note: Option<OccurrenceNote>,
}

/// Plans every cloudlet named by `windows` over `[from, until)`: spans whose `[enter_at, end)`
/// meets that range. Pure: `from` plays the role of "now" for in-progress spans.
pub fn plan<'w>(
    windows: impl IntoIterator<Item = &'w Window>,
    leads: &dyn LeadPolicy,
    from: Timestamp,
    until: Timestamp,
) -> Plan {
    let windows: Vec<&Window> = windows.into_iter().collect();
    let mut per_cloudlet: BTreeMap<CloudletRef, Vec<Occ<'_>>> = BTreeMap::new();
    let mut skipped = Vec::new();
    // Look back far enough that a span in progress at `from` is whole, and ahead far enough to
    // see spans whose enter_at falls before `until`.
    let lookback = SignedDuration::from_hours(24);
    let lookahead = SignedDuration::from_hours(24);
    let mut starts = occurrences::StartsCache::default();
    for w in &windows {
        let (occ, skip) = occurrences::occurrences_cached(
            w,
            minus(from, lookback),
            plus(until, lookahead),
            &mut starts,
        );
        for cloudlet in &w.cloudlets {
            let key = CloudletRef {
                region: w.region.clone(),
                cloudlet: cloudlet.clone(),
            };
            skipped.extend(skip.iter().map(|s| SkippedOccurrence {
                cloudlet: key.clone(),
                window: w.id.clone(),
                skipped: s.clone(),
                timezone_name: w.timezone_name.clone(),
            }));
            let list = per_cloudlet.entry(key).or_default();
            list.extend(occ.iter().map(|o| Occ {
                window: w,
                start: o.start,
                end: o.end,
                note: o.note,
            }));
        }
    }

    let mut plan = Plan {
        from: Some(from),
        until: Some(until),
        cloudlets: BTreeMap::new(),
        skipped,
    };
    for (cloudlet, mut occs) in per_cloudlet {
        occs.sort_by(|a, b| (a.start, a.end, &a.window.id).cmp(&(b.start, b.end, &b.window.id)));
        let spans = merge(&cloudlet, &occs, leads);
        let spans: Vec<Span> = spans
            .into_iter()
            .filter(|s| s.end > from && s.enter_at < until)
            .collect();
        if !spans.is_empty() {
            plan.cloudlets.insert(cloudlet, spans);
        }
    }
    plan
}

fn lead_of(
    occ: &Occ<'_>,
    cloudlet: &CloudletRef,
    failover: bool,
    leads: &dyn LeadPolicy,
) -> LeadChoice {
    match occ.window.lead {
        LeadSpec::Fixed(d) => LeadChoice {
            duration: d,
            source: LeadSource::Window {
                id: occ.window.id.clone(),
            },
        },
        LeadSpec::Auto => leads.auto_lead(cloudlet, failover),
    }
}

/// Merges sorted occurrences into spans until no span's `enter_at` reaches into the previous
/// span (a fixpoint: a merge can raise a span's lead by turning on failover).
fn merge(cloudlet: &CloudletRef, occs: &[Occ<'_>], leads: &dyn LeadPolicy) -> Vec<Span> {
    // Groups of occurrence indexes; each group becomes a span.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_end = Timestamp::MIN;
    for (i, o) in occs.iter().enumerate() {
        let lead = lead_of(o, cloudlet, o.window.failover, leads).duration;
        let lead = signed(lead);
        match groups.last_mut() {
            Some(g) if minus(o.start, lead) < group_end || o.start <= group_end => {
                g.push(i);
                group_end = group_end.max(o.end);
            }
            _ => {
                groups.push(vec![i]);
                group_end = o.end;
            }
        }
    }
    loop {
        let spans: Vec<Span> = groups
            .iter()
            .map(|g| build_span(cloudlet, occs, g, leads))
            .collect();
        let clash = spans.windows(2).position(|p| p[1].enter_at < p[0].end);
        match clash {
            None => return spans,
            Some(i) => {
                let next = groups.remove(i + 1);
                groups[i].extend(next);
            }
        }
    }
}

fn build_span(
    cloudlet: &CloudletRef,
    occs: &[Occ<'_>],
    group: &[usize],
    leads: &dyn LeadPolicy,
) -> Span {
    let members: Vec<&Occ<'_>> = group.iter().filter_map(|&i| occs.get(i)).collect();
    let first = members[0];
    let start = first.start;
    let end = members.iter().map(|o| o.end).max().unwrap_or(first.end);
    let failover = members.iter().any(|o| o.window.failover);
    // The lead: the largest among the occurrences that open the span (auto resolved with the
    // span's failover kind, since that is the request that will be sent).
    let lead = members
        .iter()
        .filter(|o| o.start == start)
        .map(|o| lead_of(o, cloudlet, failover, leads))
        .max_by_key(|l| l.duration)
        .unwrap_or_else(|| lead_of(first, cloudlet, failover, leads));
    let mut windows: Vec<String> = Vec::new();
    for o in &members {
        if !windows.contains(&o.window.id) {
            windows.push(o.window.id.clone());
        }
    }
    let mut notes: Vec<SpanNote> = members
        .iter()
        .filter_map(|o| {
            o.note.map(|note| SpanNote::Dst {
                window: o.window.id.clone(),
                note,
            })
        })
        .collect();
    if members.len() > 1 {
        notes.push(SpanNote::Merged {
            occurrences: members.len(),
        });
    }
    Span {
        cloudlet: cloudlet.clone(),
        enter_at: minus_std(start, lead.duration),
        start,
        end,
        windows,
        failover,
        lead,
        timezone: first.window.timezone.clone(),
        timezone_name: first.window.timezone_name.clone(),
        notes,
    }
}

/// The stable JSON shape of a span (`plan --json`, and later the status API).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct SpanJson {
    /// `organization/name`.
    pub cloudlet: String,
    pub region: String,
    pub windows: Vec<String>,
    /// RFC 3339 with the offset of the zone of the window that opens the span.
    pub enter_at: String,
    pub start: String,
    pub end: String,
    pub timezone: String,
    pub lead_seconds: u64,
    /// Human summary of where the lead came from (`worst case`, `fixed by ID`, `learned …`).
    pub lead_source: String,
    pub failover: bool,
    pub notes: Vec<String>,
}

impl Span {
    /// RFC 3339 rendering of an instant in this span's display zone.
    pub fn rfc3339(&self, t: Timestamp) -> String {
        let offset = self.timezone.to_offset(t);
        t.display_with_offset(offset).to_string()
    }

    pub fn to_json(&self) -> SpanJson {
        SpanJson {
            cloudlet: self.cloudlet.cloudlet.clone(),
            region: self.cloudlet.region.clone(),
            windows: self.windows.clone(),
            enter_at: self.rfc3339(self.enter_at),
            start: self.rfc3339(self.start),
            end: self.rfc3339(self.end),
            timezone: self.timezone_name.clone(),
            lead_seconds: self.lead.duration.as_secs(),
            lead_source: self.lead.source.to_string(),
            failover: self.failover,
            notes: self.notes.iter().map(|n| n.to_string()).collect(),
        }
    }
}
