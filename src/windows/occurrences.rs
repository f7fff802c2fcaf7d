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

use std::fmt;

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
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    let duration = signed(w.duration);
    let day = SignedDuration::from_hours(24);
    // Civil search bounds, padded by a day each side for offsets and DST adjustments.
    let search_from = minus(minus(from, duration), day);
    let search_until = plus(until, day);
    let civil_from = search_from.to_zoned(w.timezone.clone()).datetime();
    let civil_until = search_until.to_zoned(w.timezone.clone()).datetime();

    let mut consider = |civil_start: civil::DateTime| {
        let date = civil_start.date();
        if w.not_before.is_some_and(|b| date < b) || w.not_after.is_some_and(|a| date > a) {
            return;
        }
        if w.skip.contains(&date) {
            skipped.push(Skipped {
                civil_start,
                reason: SkipReason::SkipDate,
            });
            return;
        }
        let Some((start, note)) = resolve(&w.timezone, civil_start, w.dst_gap) else {
            skipped.push(Skipped {
                civil_start,
                reason: SkipReason::DstGap,
            });
            return;
        };
        let end = plus(start, duration);
        if end > from && start < until {
            out.push(Occurrence {
                start,
                end,
                civil_start,
                note,
            });
        }
    };

    match &w.schedule {
        Schedule::Once(dt) => {
            if *dt >= civil_from && *dt <= civil_until {
                consider(*dt);
            }
        }
        Schedule::Cron { cron, .. } => {
            for civil_start in cron
                .iter_from(civil_from, croner::Direction::Forward)
                .take(MAX_OCCURRENCES)
            {
                if civil_start > civil_until {
                    break;
                }
                consider(civil_start);
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
