//! The harness's own answer to "should this cloudlet be in maintenance at time t?".
//!
//! It loads `windows.d` with the library's loader at the same moments the daemon does (at each
//! start, without a previous catalog; at each reload, with the previous one, so a broken edit of
//! a valid file keeps its last good windows, and a restart forgets them), and expands every
//! window in force into occurrences. The plan and the learned leads are deliberately *not*
//! used: a cloudlet counts as wanted from `start − LEAD_MAX` (the longest lead any span can
//! have) to `end`, which covers every lead the daemon may pick and every gap the planner may
//! merge (it merges only gaps shorter than a lead). The checks use it in the safe direction
//! only: "not wanted at any moment of the last hour" means the daemon must have restored.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use cloudlet_maintd::plan::CloudletRef;
use cloudlet_maintd::windows::{Catalog, load_dir, occurrences};
use jiff::{SignedDuration, Timestamp};

/// The windows in force from `from` on (until the next epoch).
#[derive(Debug)]
pub struct Epoch {
    pub from: Timestamp,
    /// Per cloudlet: occurrences `[start, end)`, sorted, with the window id.
    pub occ: BTreeMap<CloudletRef, Vec<(Timestamp, Timestamp, String)>>,
}

#[derive(Debug)]
pub struct Oracle {
    pub epochs: Vec<Epoch>,
    catalog: Option<Catalog>,
    range: (Timestamp, Timestamp),
    lead_max: SignedDuration,
}

impl Oracle {
    pub fn new(range: (Timestamp, Timestamp), lead_max: Duration) -> Oracle {
        Oracle {
            epochs: Vec::new(),
            catalog: None,
            range,
            lead_max: SignedDuration::try_from(lead_max).expect("lead")
                + SignedDuration::from_mins(1),
        }
    }

    /// The daemon (re)started: it loads the directory from scratch.
    pub fn started(&mut self, dir: &Path, now: Timestamp) {
        let catalog = load_dir(dir, None, now);
        self.push(catalog, now);
    }

    /// The daemon reloaded: last good versions of broken files stay in force.
    pub fn reloaded(&mut self, dir: &Path, now: Timestamp) {
        let catalog = load_dir(dir, self.catalog.as_ref(), now);
        self.push(catalog, now);
    }

    fn push(&mut self, catalog: Catalog, now: Timestamp) {
        let mut occ: BTreeMap<CloudletRef, Vec<(Timestamp, Timestamp, String)>> = BTreeMap::new();
        for w in catalog.windows() {
            let (list, _) = occurrences(w, self.range.0, self.range.1);
            for c in &w.cloudlets {
                let key = CloudletRef {
                    region: w.region.clone(),
                    cloudlet: c.clone(),
                };
                let entry = occ.entry(key).or_default();
                entry.extend(list.iter().map(|o| (o.start, o.end, w.id.clone())));
            }
        }
        for list in occ.values_mut() {
            list.sort();
        }
        self.catalog = Some(catalog);
        self.epochs.push(Epoch { from: now, occ });
    }

    /// The epochs overlapping `[a, b]`, each with its part of that range.
    fn parts(
        &self,
        a: Timestamp,
        b: Timestamp,
    ) -> impl Iterator<Item = (&Epoch, Timestamp, Timestamp)> {
        self.epochs.iter().enumerate().filter_map(move |(i, e)| {
            let until = self.epochs.get(i + 1).map_or(Timestamp::MAX, |n| n.from);
            let lo = a.max(e.from);
            let hi = b.min(until);
            (lo <= hi && lo < until).then_some((e, lo, hi))
        })
    }

    /// Is `c` wanted at some moment of `[a, b]`?
    pub fn wanted_in(&self, c: &CloudletRef, a: Timestamp, b: Timestamp) -> bool {
        self.parts(a, b).any(|(e, lo, hi)| {
            e.occ.get(c).is_some_and(|list| {
                list.iter().any(|(s, end, _)| {
                    s.checked_sub(self.lead_max).unwrap_or(*s) <= hi && *end > lo
                })
            })
        })
    }

    /// Is `c` inside an occurrence (not merely in its lead) at `t`?
    pub fn in_window(&self, c: &CloudletRef, t: Timestamp) -> bool {
        self.parts(t, t).any(|(e, _, _)| {
            e.occ
                .get(c)
                .is_some_and(|list| list.iter().any(|(s, end, _)| *s <= t && t < *end))
        })
    }

    /// Occurrence starts of `c` at exactly `t` in the epoch in force, that open a span: no other
    /// occurrence covers `[t − lead_max − 30 min, t)`. Returns the occurrence end.
    pub fn span_start_at(&self, c: &CloudletRef, t: Timestamp) -> Option<Timestamp> {
        let (e, _, _) = self.parts(t, t).last()?;
        let list = e.occ.get(c)?;
        let (_, end, _) = list.iter().find(|(s, _, _)| *s == t)?;
        let quiet_from = t
            .checked_sub(self.lead_max + SignedDuration::from_mins(30))
            .ok()?;
        let isolated = list.iter().all(|(s, e2, _)| *s >= t || *e2 <= quiet_from);
        isolated.then_some(*end)
    }

    /// When the epoch in force at `t` began (a reload or a start).
    pub fn epoch_since(&self, t: Timestamp) -> Option<Timestamp> {
        self.parts(t, t).last().map(|(e, _, _)| e.from)
    }

    pub fn lead_max(&self) -> SignedDuration {
        self.lead_max
    }
}
