//! The engine's published snapshot: what status endpoints, `sd_notify` STATUS= lines and tests
//! read. Plain data with stable JSON field names; built by the engine, read-only for everyone
//! else (shared through `tokio::sync::watch`).
//!
//! The parts that are large at scale are shared, not copied: the engine keeps one
//! [`CloudletView`] per cloudlet behind an `Arc` and rebuilds only those that changed, so a
//! publication costs a pointer per cloudlet, not a rebuild of every view (the timer loop
//! publishes every 200 ms while things move, and must not stall on it).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::plan::SpanJson;

/// Everything the daemon knows, as of `now`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub version: String,
    pub started_at: String,
    /// Wall-clock time of the timer loop's last wake (RFC 3339); `/healthz` judges freshness.
    pub last_tick: String,
    /// Bumped on every reload of `windows.d`.
    pub generation: u64,
    pub last_reload: Option<ReloadInfo>,
    pub windows_dir: String,
    /// Rebuilt on reloads only.
    pub files: Arc<Vec<FileView>>,
    pub counts: Counts,
    pub alerts: Vec<AlertView>,
    pub cloudlets: Vec<Arc<CloudletView>>,
    /// The earliest planned edge (enter or exit) still ahead.
    pub next_action: Option<NextAction>,
    pub journal: JournalInfo,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReloadInfo {
    pub at: String,
    /// True when every file was valid.
    pub ok: bool,
    pub trigger: String,
    pub files_ok: usize,
    pub files_invalid: usize,
    pub files_stale: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FileView {
    pub path: String,
    /// `ok`, `invalid` or `stale` (invalid now, last good version in force).
    pub status: String,
    pub stale: bool,
    pub windows: Vec<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub files: usize,
    pub files_invalid: usize,
    pub files_stale: usize,
    pub windows: usize,
    pub cloudlets: usize,
    pub in_maintenance: usize,
    pub owned: usize,
    pub external: usize,
    pub busy: usize,
    pub alerts: usize,
    pub entries_on_time: u64,
    pub entries_late: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlertView {
    /// `not_in_maintenance_at_start`, `restore_failing`, `restore_overdue`, `forbidden`,
    /// `stuck_not_ours`, `journal_corrupt`, `controller_unreachable`, …
    pub kind: String,
    pub region: Option<String>,
    pub cloudlet: Option<String>,
    pub message: String,
    pub since: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NextAction {
    pub region: String,
    pub cloudlet: String,
    /// `enter` or `exit`.
    pub action: String,
    pub at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JournalInfo {
    pub path: String,
    /// Set when the journal found at start was corrupt (and where it was moved).
    pub corrupt: Option<String>,
}

/// One cloudlet, observed and desired.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CloudletView {
    pub region: String,
    /// `organization/name`.
    pub cloudlet: String,
    /// Last state read back (CamelCase), if any.
    pub observed: Option<String>,
    pub observed_at: Option<String>,
    pub update_error: bool,
    /// `maintenance` while a span wants it (from its enter time to its end), else `normal`.
    pub desired: String,
    pub owned: bool,
    /// In maintenance by someone else's hand: the daemon will never restore it.
    pub external: bool,
    /// A person restored it during the current span; not re-entered until the next span.
    pub released_by_hand: bool,
    /// A worker is handling it right now.
    pub busy: bool,
    pub in_flight: Option<String>,
    /// What the last evaluation decided (`enter`, `exit`, `wait`, `idle`, …).
    pub decision: Option<String>,
    pub current_span: Option<Arc<SpanJson>>,
    pub next_span: Option<Arc<SpanJson>>,
    pub next_action: Option<String>,
    pub next_action_at: Option<String>,
    pub lead_seconds: Option<u64>,
    pub lead_source: Option<String>,
    pub last_handshakes: Vec<HandshakeView>,
    pub last_error: Option<String>,
    /// The current span was entered after its start.
    pub late: bool,
    pub alert: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HandshakeView {
    /// `enter_failover`, `enter_no_failover`, `exit`, `recover`.
    pub kind: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub ok: bool,
    /// State read back afterwards.
    pub observed: Option<String>,
    pub error: Option<String>,
}
