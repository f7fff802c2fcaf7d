//! Expanding a window into occurrences: concrete `[start, end)` intervals on the absolute
//! timeline.
//!
//! croner walks the *civil* calendar of the window's zone (so `0 2 * * Sun` means 02:00 on the
//! wall clock every Sunday, whatever the offset), and jiff turns each civil start into an instant
//! with an explicit DST policy, recorded on the occurrence so that `plan` can show it:
//!
//! - **spring-forward gap** (the civil time does not exist that day): with `dst_gap = "shift"`
//!   (default) the start moves to the first valid instant after the gap (02:30 → 03:00 in
//!   Europe/Berlin); with `dst_gap = "skip"` the occurrence is dropped. Several starts that land
//!   on the same instant after shifting become one.
//! - **autumn fold** (the civil time happens twice): the occurrence runs once, at the first
//!   (earlier) of the two instants.
//!
//! `duration` is elapsed time: `end = start + duration`, so a window across a DST change lasts
//! exactly as long as declared.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use jiff::civil;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use super::{DstGap, Schedule, Window};
use crate::timeutil::{minus, plus, signed};

/// One concrete occurrence of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    pub start: Timestamp,
    pub end: Timestamp,
    /// The civil start the schedule asked for (before any DST adjustment).
    pub civil_start: civil::DateTime,
    pub note: Option<OccurrenceNote>,
}

/// A DST adjustment made to an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OccurrenceNote {
    /// The civil start fell into a spring-forward gap and was moved to the gap's end.
    DstShifted { asked: civil::DateTime },
    /// The civil start happens twice (autumn fold); the occurrence runs at the first one.
    DstFold { asked: civil::DateTime },
}

impl fmt::Display for OccurrenceNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OccurrenceNote::DstShifted { asked } => write!(
                f,
                "DST gap: {} does not exist, shifted to the end of the gap",
                asked.strftime("%Y-%m-%d %H:%M")
            ),
            OccurrenceNote::DstFold { asked } => write!(
                f,
                "DST fold: {} happens twice, runs once at the first",
                asked.strftime("%Y-%m-%d %H:%M")
            ),
        }
    }
}

/// An occurrence the schedule produced but the window's rules dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub civil_start: civil::DateTime,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Listed in `skip`.
    SkipDate,
    /// Fell into a spring-forward gap with `dst_gap = "skip"`.
    DstGap,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::SkipDate => f.write_str("date listed in skip"),
            SkipReason::DstGap => f.write_str("start falls into a DST gap and dst_gap = \"skip\""),
        }
    }
}

/// Safety valve: a pattern firing every second would otherwise expand without bound.
pub const MAX_OCCURRENCES: usize = 100_000;

/// The occurrences of `w` that overlap `[from, until)` (`end > from` and `start < until`),
/// sorted by start, plus the ones its rules dropped in that range. Pure.
pub fn occurrences(
    w: &Window,
    from: Timestamp,
    until: Timestamp,
) -> (Vec<Occurrence>, Vec<Skipped>) {
    expand(w, from, until, false, None)
}

/// True when `w` has at least one occurrence overlapping `[from, until)`; stops at the first.
pub fn any_occurrence(w: &Window, from: Timestamp, until: Timestamp) -> bool {
    !expand(w, from, until, true, None).0.is_empty()
}

/// False when no two occurrences of `w` whose starts lie around `[from, until)` can overlap,
/// judged without expanding them: the closest two civil starts of its cron pattern are at least
/// the smallest gap between two times of day it matches (or a day, across midnight), and on the
/// absolute timeline that gap shrinks by at most the spread of the zone's UTC offsets over the
/// range (a start shifted out of a DST gap lies between its two readings). True means "maybe".
pub fn may_overlap(w: &Window, from: Timestamp, until: Timestamp) -> bool {
    let Schedule::Cron { cron, .. } = &w.schedule else {
        return false;
    };
    let duration = signed(w.duration);
    let Some(gap) = min_civil_gap(&cron.pattern) else {
        return true;
    };
    if duration > gap {
        return true;
    }
    // The same padding as `expand`, and a day more for the offsets of the starts found there.
    let two_days = SignedDuration::from_hours(48);
    let lo = minus(minus(from, duration), two_days);
    let hi = plus(until, two_days);
    let first = w.timezone.to_offset(lo).seconds();
    let (mut min_off, mut max_off) = (first, first);
    for t in w.timezone.following(lo) {
        if t.timestamp() > hi {
            break;
        }
        let off = t.offset().seconds();
        min_off = min_off.min(off);
        max_off = max_off.max(off);
    }
    let spread = SignedDuration::from_secs(i64::from(max_off) - i64::from(min_off));
    duration > gap - spread
}

/// The smallest civil distance between two consecutive starts of a pattern: between two times
/// of day it matches, or from the last one to the first one of the next day. `None` if it
/// matches no time of day.
fn min_civil_gap(p: &croner::CronPattern) -> Option<SignedDuration> {
    const DAY: i64 = 86_400;
    let (hours, minutes, seconds) = (p.hours.values(), p.minutes.values(), p.seconds.values());
    let mut first = None;
    let mut last: Option<i64> = None;
    let mut gap = DAY;
    for h in &hours {
        for m in &minutes {
            for s in &seconds {
                let t = i64::from(*h) * 3600 + i64::from(*m) * 60 + i64::from(*s);
                match last {
                    Some(prev) => gap = gap.min(t - prev),
                    None => first = Some(t),
                }
                last = Some(t);
            }
        }
    }
    let (first, last) = (first?, last?);
    Some(SignedDuration::from_secs(gap.min(DAY - last + first)))
}

/// The civil starts of cron patterns over civil ranges, for the windows of one `plan`: windows
/// with the same pattern (the same parsed `Cron`), zone and duration search the same range, and
/// croner's search is most of the cost of planning.
#[derive(Default)]
pub struct StartsCache {
    /// By the address of the `Cron` (held in the entry, so never reused while the cache lives)
    /// and the civil range.
    starts: HashMap<StartsKey, (Arc<croner::Cron>, Arc<[civil::DateTime]>)>,
}

type StartsKey = (usize, civil::DateTime, civil::DateTime);

impl StartsCache {
    fn starts(
        &mut self,
        cron: &Arc<croner::Cron>,
        civil_from: civil::DateTime,
        civil_until: civil::DateTime,
    ) -> Arc<[civil::DateTime]> {
        let key = (Arc::as_ptr(cron) as usize, civil_from, civil_until);
        let (_, list) = self.starts.entry(key).or_insert_with(|| {
            let mut list = Vec::new();
            for_each_start(cron, civil_from, civil_until, |c| {
                list.push(c);
                true
            });
            (Arc::clone(cron), list.into())
        });
        Arc::clone(list)
    }
}

/// [`occurrences`], with the civil starts of its pattern taken from (or added to) `cache`.
pub fn occurrences_cached(
    w: &Window,
    from: Timestamp,
    until: Timestamp,
    cache: &mut StartsCache,
) -> (Vec<Occurrence>, Vec<Skipped>) {
    expand(w, from, until, false, Some(cache))
}

/// Calls `each` with the starts of `cron` from `civil_from` (inclusive) up to `civil_until`, in
/// order, until it returns false: what `cron.iter_from(civil_from, Forward)` yields (the first
/// search inclusive, the next ones exclusive from the last start; stop at the first error),
/// at most [`MAX_OCCURRENCES`], without the copy of the whole `Cron` that `iter_from` makes.
fn for_each_start(
    cron: &croner::Cron,
    civil_from: civil::DateTime,
    civil_until: civil::DateTime,
    mut each: impl FnMut(civil::DateTime) -> bool,
) {
    let mut next = cron.find_next_occurrence(&civil_from, true);
    let mut found = 0;
    while let Ok(civil_start) = next {
        if found == MAX_OCCURRENCES || civil_start > civil_until {
            break;
        }
        found += 1;
        if !each(civil_start) {
            break;
        }
        next = cron.find_next_occurrence(&civil_start, false);
    }
}

/// [`occurrences`], or only up to the first occurrence found when `first_only`.
fn expand(
    w: &Window,
    from: Timestamp,
    until: Timestamp,
    first_only: bool,
    starts: Option<&mut StartsCache>,
) -> (Vec<Occurrence>, Vec<Skipped>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let duration = signed(w.duration);
    let day = SignedDuration::from_hours(24);
    // Civil search bounds, padded by a day each side for offsets and DST adjustments.
    let search_from = minus(minus(from, duration), day);
    let search_until = plus(until, day);
    let civil_from = search_from.to_zoned(w.timezone.clone()).datetime();
    let civil_until = search_until.to_zoned(w.timezone.clone()).datetime();

    // True when the start became an occurrence in range.
    let mut consider = |civil_start: civil::DateTime| -> bool {
        let date = civil_start.date();
        if w.not_before.is_some_and(|b| date < b) || w.not_after.is_some_and(|a| date > a) {
            return false;
        }
        if w.skip.contains(&date) {
            skipped.push(Skipped {
                civil_start,
                reason: SkipReason::SkipDate,
            });
            return false;
        }
        let Some((start, note)) = resolve(&w.timezone, civil_start, w.dst_gap) else {
            skipped.push(Skipped {
                civil_start,
                reason: SkipReason::DstGap,
            });
            return false;
        };
        let end = plus(start, duration);
        if end > from && start < until {
            out.push(Occurrence {
                start,
                end,
                civil_start,
                note,
            });
            return true;
        }
        false
    };

    match &w.schedule {
        Schedule::Once(dt) => {
            if *dt >= civil_from && *dt <= civil_until {
                consider(*dt);
            }
        }
        Schedule::Cron { cron, .. } => {
            // Starts come in civil order: once past `not_after`, all the rest are too.
            let mut each = |civil_start: civil::DateTime| {
                if w.not_after.is_some_and(|a| civil_start.date() > a) {
                    return false;
                }
                !(consider(civil_start) && first_only)
            };
            match starts {
                Some(cache) => {
                    for &civil_start in cache.starts(cron, civil_from, civil_until).iter() {
                        if !each(civil_start) {
                            break;
                        }
                    }
                }
                None => for_each_start(cron, civil_from, civil_until, each),
            }
        }
    }
    out.sort_by_key(|o| o.start);
    // Several civil starts in one gap shift onto the same instant: keep the first.
    out.dedup_by_key(|o| o.start);
    skipped.retain(|s| s.civil_start >= civil_from && s.civil_start <= civil_until);
    (out, skipped)
}

/// Resolves a civil start to an instant under our DST policy. `None`: dropped (gap + skip).
pub fn resolve(
    tz: &TimeZone,
    civil_start: civil::DateTime,
    gap: DstGap,
) -> Option<(Timestamp, Option<OccurrenceNote>)> {
    let ambiguous = tz.to_ambiguous_timestamp(civil_start);
    match ambiguous.offset() {
        AmbiguousOffset::Unambiguous { offset } => {
            offset.to_timestamp(civil_start).ok().map(|t| (t, None))
        }
        AmbiguousOffset::Fold { before, .. } => before
            .to_timestamp(civil_start)
            .ok()
            .map(|t| (t, Some(OccurrenceNote::DstFold { asked: civil_start }))),
        AmbiguousOffset::Gap { after, .. } => {
            if gap == DstGap::Skip {
                return None;
            }
            // Read with the later offset, the civil time lies before the transition; the first
            // transition after that instant is the end of the gap.
            let probe = after.to_timestamp(civil_start).ok()?;
            let transition = tz.following(probe).next()?.timestamp();
            Some((
                transition,
                Some(OccurrenceNote::DstShifted { asked: civil_start }),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::str::FromStr;

    use super::*;
    use crate::windows::parse::parse_file;

    /// `may_overlap` may only say "no" when expanding finds no two occurrences that overlap.
    #[test]
    fn may_overlap_never_misses_an_overlap() {
        let now = Timestamp::from_str("2026-11-29T12:00:00Z").unwrap();
        let until = plus(now, SignedDuration::from_hours(24 * 400));
        let patterns = [
            "0 2 * * *",
            "30 2 * * Sun",
            "0 2,4 * * Mon",
            "0,30 23,0 * * *",
            "0 0 L * *",
            "15 1 * * 1#2",
            "*/20 9-11 * * 1-5",
            "0 0 12 * * *",
        ];
        let zones = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "Pacific/Apia",
            "America/Santiago",
        ];
        let durations = [
            "19m", "20m", "1h", "1h 45m", "2h", "22h 30m", "23h", "23h 30m", "24h", "6d 23h",
        ];
        let mut fast = 0;
        for p in patterns {
            for z in zones {
                for d in durations {
                    let text = format!(
                        "[[window]]\nid = \"w\"\nregion = \"EU\"\ncloudlets = [\"O/c\"]\ncron = \"{p}\"\ntimezone = \"{z}\"\nduration = \"{d}\"\n"
                    );
                    let parsed = parse_file(Path::new("t.toml"), &text, now);
                    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
                    let w = &parsed.windows[0];
                    if may_overlap(w, now, until) {
                        continue;
                    }
                    fast += 1;
                    let (occ, _) = occurrences(w, now, until);
                    assert!(!occ.is_empty(), "{p} {z} {d}");
                    assert!(
                        occ.windows(2).all(|o| o[1].start >= o[0].end),
                        "{p} in {z} for {d} overlaps"
                    );
                }
            }
        }
        assert!(fast > 100, "{fast}");
    }

    /// Windows sharing a pattern share its starts, and get the same occurrences as alone.
    #[test]
    fn cached_starts_give_the_same_occurrences() {
        let now = Timestamp::from_str("2026-11-29T12:00:00Z").unwrap();
        let mut text = String::new();
        let bodies = [
            "cron = \"30 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\"",
            "cron = \"30 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\"\ndst_gap = \"skip\"",
            "cron = \"30 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\"\nskip = [\"2027-03-28\"]",
            "cron = \"30 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"4h\"\nnot_after = \"2027-02-01\"",
            "cron = \"30 2 * * Sun\"\ntimezone = \"America/New_York\"\nduration = \"4h\"",
            "cron = \"30 2 * * Sun\"\ntimezone = \"Europe/Berlin\"\nduration = \"30h\"",
            "cron = \"0 0 L * *\"\nduration = \"1h\"",
        ];
        for (i, body) in bodies.iter().enumerate() {
            text.push_str(&format!(
                "[[window]]\nid = \"w{i}\"\nregion = \"EU\"\ncloudlets = [\"O/c\"]\n{body}\n\n"
            ));
        }
        let parsed = parse_file(Path::new("t.toml"), &text, now);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let mut cache = StartsCache::default();
        for (from, days) in [("2026-11-29T12:00:00Z", 14), ("2027-03-20T00:00:00Z", 30)] {
            let from = Timestamp::from_str(from).unwrap();
            let until = plus(from, SignedDuration::from_hours(24 * days));
            for w in &parsed.windows {
                assert_eq!(
                    occurrences_cached(w, from, until, &mut cache),
                    occurrences(w, from, until),
                    "{}",
                    w.id
                );
            }
        }
        assert!(cache.starts.len() < 2 * parsed.windows.len());
    }
}
