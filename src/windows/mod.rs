//! Maintenance windows: what an operator declares in `windows.d/*.toml`.
//!
//! A window is a declaration (one-off or recurring) for one or more cloudlets. This module owns
//! the validated in-memory form ([`Window`]), the per-file parser with precise diagnostics
//! ([`parse`]), the directory loader that isolates bad files and keeps the last good version of a
//! file in force ([`load`]), and the pure expansion of a window into concrete occurrences on the
//! absolute timeline with an explicit DST policy ([`occurrences`]).

pub mod load;
pub mod occurrences;
pub mod parse;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::civil;
use jiff::tz::TimeZone;

pub use load::{Catalog, FileReport, FileStatus, load_dir};
pub use occurrences::{Occurrence, OccurrenceNote, Skipped, occurrences};

/// One validated `[[window]]` table.
#[derive(Debug, Clone)]
pub struct Window {
    /// Unique across the directory.
    pub id: String,
    /// The file that declares it, and the line of its `[[window]]` header.
    pub source: PathBuf,
    pub line: usize,
    pub region: String,
    /// `organization/name`, validated, in declaration order, without duplicates.
    pub cloudlets: Vec<String>,
    pub schedule: Schedule,
    /// IANA zone name as written (e.g. `Europe/Berlin`).
    pub timezone_name: String,
    pub timezone: TimeZone,
    /// Elapsed time: `end = start + duration` on the absolute timeline.
    pub duration: Duration,
    /// `MaintenanceStart` (true) or `MaintenanceStartNoFailover` (false).
    pub failover: bool,
    pub lead: LeadSpec,
    /// Local dates whose occurrence is dropped.
    pub skip: BTreeSet<civil::Date>,
    /// Local dates bounding a recurrence (inclusive).
    pub not_before: Option<civil::Date>,
    pub not_after: Option<civil::Date>,
    pub dst_gap: DstGap,
}

/// When a window's occurrences start, in civil time of its zone.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A single start (`start = "2026-12-06T02:00"`).
    Once(civil::DateTime),
    /// Recurring starts (`cron = "0 2 * * Sun"`), croner dialect. Windows of one load that
    /// write the same pattern share one parsed `Cron`.
    Cron {
        pattern: String,
        cron: Arc<croner::Cron>,
    },
}

/// How long before `start` the enter request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadSpec {
    /// Learned from measured handshakes (worst case until there is history).
    Auto,
    /// Pinned by the window.
    Fixed(Duration),
}

/// What to do with a start that falls into a spring-forward gap (a civil time that does not
/// exist that day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DstGap {
    /// Move it to the first valid instant after the gap (croner's policy, and ours by default).
    #[default]
    Shift,
    /// Drop that occurrence.
    Skip,
}

/// Splits `organization/name`; both parts non-empty, exactly one slash.
pub fn split_cloudlet(text: &str) -> Option<(&str, &str)> {
    let (org, name) = text.split_once('/')?;
    let valid = |s: &str| !s.is_empty() && s.trim() == s && !s.contains('/');
    (valid(org) && valid(name)).then_some((org, name))
}
