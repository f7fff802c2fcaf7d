//! The journal: the daemon's durable memory, one file in the state directory.
//!
//! Why it exists: the controller does not say *who* put a cloudlet into maintenance. A cloudlet
//! in `UnderMaintenance` may have been entered by this daemon (then it must restore it after the
//! span, even across restarts and crashes) or by a person (then it must never touch it). The
//! journal is where the daemon remembers which cloudlets it owns, which handshake it was in the
//! middle of when it stopped, and how long past handshakes took (the input of the learned lead,
//! see [`crate::lead`]).
//!
//! Rules this module enforces (design.md §5, property 5):
//!
//! - **Atomic, durable writes.** [`JournalStore::write`] writes `journal.json.tmp`, fsyncs it,
//!   renames it over `journal.json` and fsyncs the directory. After a crash the file is either
//!   the old or the new journal, never a mix.
//! - **Detected, never silently reset.** The file starts with a header line
//!   `cloudlet-maintd journal v1 <fnv1a-64 hex>` carrying a checksum of the JSON body that
//!   follows. A torn, truncated, corrupt or unknown-version file is *renamed aside* to
//!   `journal.json.corrupt-<UTC yyyymmddThhmmssZ>` (never overwritten, never deleted) and
//!   reported as a [`CorruptJournal`]; the daemon then starts from an empty journal and must
//!   treat ownership as unknown (see [`CloudletRecord::assumed`]).
//! - **Write before acting.** Every record that must survive a crash (the in-flight handshake,
//!   ownership) is committed *before* the request is sent. With a thousand cloudlets starting
//!   at the same instant, one write per record would queue a thousand fsyncs; [`JournalHandle`]
//!   therefore does *group commit*: concurrent [`JournalHandle::commit`] calls share one
//!   physical write, and each returns only once a write containing its change is durable.
//!
//! The body is compact JSON on the second line (`tail -n +2 journal.json | jq` shows it);
//! instants are RFC 3339 strings. Every field has a default, so journals written by older
//! versions still load.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::plan::{CloudletRef, Span};

/// Name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "journal.json";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// First words of the header line.
const MAGIC: &str = "cloudlet-maintd journal";

// ---------------------------------------------------------------------------------------------
// Data
// ---------------------------------------------------------------------------------------------

/// Everything the daemon remembers, per cloudlet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Journal {
    /// Key: the [`CloudletRef`] display form, `REGION:organization/name`.
    pub cloudlets: BTreeMap<String, CloudletRecord>,
}

impl Journal {
    /// The map key of a cloudlet.
    pub fn key(cloudlet: &CloudletRef) -> String {
        cloudlet.to_string()
    }

    /// The record of a cloudlet, if the journal has one.
    pub fn record(&self, cloudlet: &CloudletRef) -> Option<&CloudletRecord> {
        self.cloudlets.get(&Journal::key(cloudlet))
    }

    /// The record of a cloudlet, created (empty, not owned) if missing.
    pub fn record_mut(&mut self, cloudlet: &CloudletRef) -> &mut CloudletRecord {
        self.cloudlets
            .entry(Journal::key(cloudlet))
            .or_insert_with(|| CloudletRecord::new(cloudlet))
    }

    /// All records with their cloudlet. A record whose `region`/`cloudlet` fields are empty
    /// (a hand-edited file) takes them from its key.
    pub fn iter(&self) -> impl Iterator<Item = (CloudletRef, &CloudletRecord)> {
        self.cloudlets.iter().map(|(key, record)| {
            let cloudlet = if record.region.is_empty() || record.cloudlet.is_empty() {
                match key.split_once(':') {
                    Some((region, cloudlet)) => CloudletRef {
                        region: region.to_string(),
                        cloudlet: cloudlet.to_string(),
                    },
                    None => record.cloudlet_ref(),
                }
            } else {
                record.cloudlet_ref()
            };
            (cloudlet, record)
        })
    }
}

/// What the daemon remembers about one cloudlet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CloudletRecord {
    pub region: String,
    /// `organization/name`.
    pub cloudlet: String,
    /// The daemon put this cloudlet into maintenance. Set (and committed) *before* an enter is
    /// sent, so that a crash mid-handshake still leaves the cloudlet ours to restore.
    pub owned: bool,
    pub owned_since: Option<Timestamp>,
    /// Ownership is assumed, not known: the journal was lost or corrupt and the cloudlet was
    /// found in maintenance during a span that names it.
    pub assumed: bool,
    /// The span the daemon entered maintenance for.
    pub entered_for: Option<SpanId>,
    /// A person restored the cloudlet during this span: do not enter it again in this span.
    pub released_by_hand: Option<SpanId>,
    /// The handshake sent and not yet finished. Written *before* sending.
    pub in_flight: Option<InFlight>,
    pub last_outcome: Option<Outcome>,
    /// Consecutive failed restores (drives backoff and the "needs a person" alert).
    pub restore_failures: u32,
    /// Measured durations of successful handshakes.
    pub durations: Durations,
}

impl CloudletRecord {
    /// An empty, not-owned record for `cloudlet`.
    pub fn new(cloudlet: &CloudletRef) -> Self {
        CloudletRecord {
            region: cloudlet.region.clone(),
            cloudlet: cloudlet.cloudlet.clone(),
            ..CloudletRecord::default()
        }
    }

    /// The cloudlet this record is about.
    pub fn cloudlet_ref(&self) -> CloudletRef {
        CloudletRef {
            region: self.region.clone(),
            cloudlet: self.cloudlet.clone(),
        }
    }
}

/// Identifies a span of one cloudlet by its window-opening and window-closing instants (the
/// lead is left out on purpose: it changes as handshakes are measured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SpanId {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl SpanId {
    pub fn of(span: &Span) -> Self {
        SpanId {
            start: span.start,
            end: span.end,
        }
    }
}

impl From<&Span> for SpanId {
    fn from(span: &Span) -> Self {
        SpanId::of(span)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// The kinds of handshake (one UpdateCloudlet request each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HandshakeKind {
    /// `MaintenanceStart`: AutoProv failover, then CRM.
    EnterFailover,
    /// `MaintenanceStartNoFailover`: CRM only.
    EnterNoFailover,
    /// `NormalOperation` after a span.
    Exit,
    /// `NormalOperation` to clear a stuck intermediate state (design.md §5, property 7).
    Recover,
}

impl HandshakeKind {
    /// The enter kind for a span with or without failover.
    pub fn enter(failover: bool) -> Self {
        if failover {
            HandshakeKind::EnterFailover
        } else {
            HandshakeKind::EnterNoFailover
        }
    }

    /// The stable snake_case name (as serialized; used in status and metric labels).
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeKind::EnterFailover => "enter_failover",
            HandshakeKind::EnterNoFailover => "enter_no_failover",
            HandshakeKind::Exit => "exit",
            HandshakeKind::Recover => "recover",
        }
    }

    pub fn is_enter(self) -> bool {
        matches!(
            self,
            HandshakeKind::EnterFailover | HandshakeKind::EnterNoFailover
        )
    }
}

impl fmt::Display for HandshakeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeKind::EnterFailover => "enter with failover",
            HandshakeKind::EnterNoFailover => "enter without failover",
            HandshakeKind::Exit => "exit",
            HandshakeKind::Recover => "recover",
        })
    }
}

/// A handshake that was sent and has not ended (as far as the journal knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub kind: HandshakeKind,
    pub sent_at: Timestamp,
}

/// How the last handshake ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub kind: HandshakeKind,
    pub at: Timestamp,
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub duration_ms: u64,
    /// The maintenance state read back afterwards.
    #[serde(default)]
    pub observed: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Recent durations (milliseconds) of successful handshakes, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Durations {
    pub enter_failover: VecDeque<u64>,
    pub enter_no_failover: VecDeque<u64>,
    pub exit: VecDeque<u64>,
}

impl Durations {
    /// Appends `ms` for `kind`, keeping the newest `cap`. A [`HandshakeKind::Recover`] counts
    /// as an exit: it is the same `NormalOperation` request and controller path.
    pub fn push(&mut self, kind: HandshakeKind, ms: u64, cap: usize) {
        let queue = self.of_mut(kind);
        queue.push_back(ms);
        while queue.len() > cap {
            queue.pop_front();
        }
    }

    /// The durations recorded for `kind` (recoveries are in `exit`).
    pub fn of(&self, kind: HandshakeKind) -> &VecDeque<u64> {
        match kind {
            HandshakeKind::EnterFailover => &self.enter_failover,
            HandshakeKind::EnterNoFailover => &self.enter_no_failover,
            HandshakeKind::Exit | HandshakeKind::Recover => &self.exit,
        }
    }

    fn of_mut(&mut self, kind: HandshakeKind) -> &mut VecDeque<u64> {
        match kind {
            HandshakeKind::EnterFailover => &mut self.enter_failover,
            HandshakeKind::EnterNoFailover => &mut self.enter_no_failover,
            HandshakeKind::Exit | HandshakeKind::Recover => &mut self.exit,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// What can go wrong with the journal. Cloneable so that one failed group write can be
/// reported to every caller that waited for it. Messages already include the underlying cause.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// A file system operation failed (`op` is e.g. `fsync`, `create`, `read`).
    #[error("cannot {op} {path}: {error}")]
    Io {
        op: &'static str,
        path: PathBuf,
        error: Arc<io::Error>,
    },
    #[error("cannot rename {from} to {to}: {error}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        error: Arc<io::Error>,
    },
    #[error("cannot encode the journal for {path}: {error}")]
    Encode {
        path: PathBuf,
        error: Arc<serde_json::Error>,
    },
    /// Only from [`read_journal`] (read-only access); [`JournalStore::open`] moves a corrupt
    /// file aside and reports a [`CorruptJournal`] instead.
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The flusher task is gone (the runtime is shutting down, or the write panicked): the
    /// change was applied in memory but is not known to be durable.
    #[error("the journal writer for {path} has stopped ({why}); the change is not durable")]
    Stopped { path: PathBuf, why: String },
}

impl JournalError {
    /// The kind of the underlying I/O error, if there is one.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            JournalError::Io { error, .. } | JournalError::Rename { error, .. } => {
                Some(error.kind())
            }
            _ => None,
        }
    }
}

fn io_err(op: &'static str, path: &Path, error: io::Error) -> JournalError {
    JournalError::Io {
        op,
        path: path.to_path_buf(),
        error: Arc::new(error),
    }
}

/// A journal that could not be read was moved aside; the daemon started from an empty one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptJournal {
    /// Where the unreadable file now is (its bytes untouched).
    pub moved_to: PathBuf,
    /// What was wrong with it, for the operator.
    pub reason: String,
}

impl fmt::Display for CorruptJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the journal was unreadable ({}); it was moved aside to {} and the daemon started from an empty journal, so ownership of cloudlets already in maintenance is unknown",
            self.reason,
            self.moved_to.display()
        )
    }
}

// ---------------------------------------------------------------------------------------------
// File format
// ---------------------------------------------------------------------------------------------

/// 64-bit FNV-1a. Not cryptographic: it detects torn and corrupted writes, not tampering.
fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(PRIME)
    })
}

/// The file bytes: header line, JSON body, newline. The checksum covers the JSON body only.
fn encode(journal: &Journal) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(journal)?;
    let mut out = format!("{MAGIC} v{FORMAT_VERSION} {:016x}\n", fnv1a64(&body)).into_bytes();
    out.reserve(body.len() + 1);
    out.extend_from_slice(&body);
    out.push(b'\n');
    Ok(out)
}

/// Parses file bytes; `Err` is the operator-facing reason the file is unusable.
fn decode(bytes: &[u8]) -> Result<Journal, String> {
    if bytes.is_empty() {
        return Err("the file is empty (torn write?)".to_string());
    }
    let Some(newline) = bytes.iter().position(|&b| b == b'\n') else {
        return Err("no complete header line (truncated or torn write?)".to_string());
    };
    let (header, rest) = bytes.split_at(newline);
    let body = rest.get(1..).unwrap_or_default();
    let body = body.strip_suffix(b"\n").unwrap_or(body);

    let header = std::str::from_utf8(header)
        .map_err(|_| "the header line is not text: not a cloudlet-maintd journal".to_string())?;
    let expected = parse_header(header)?;
    let actual = fnv1a64(body);
    if actual != expected {
        return Err(format!(
            "checksum mismatch: the header says {expected:016x}, the {} byte body hashes to {actual:016x} (torn or corrupted write)",
            body.len()
        ));
    }
    serde_json::from_slice(body).map_err(|e| format!("the body is not a valid journal: {e}"))
}

/// Checks the header line and returns its checksum.
fn parse_header(header: &str) -> Result<u64, String> {
    let shown: String = header.chars().take(80).collect();
    let bad = || format!("bad header {shown:?}: expected \"{MAGIC} v{FORMAT_VERSION} <checksum>\"");
    let rest = header.strip_prefix(MAGIC).ok_or_else(bad)?;
    let mut words = rest.split_whitespace();
    let version = words
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(bad)?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "unknown journal format v{version} (this cloudlet-maintd reads v{FORMAT_VERSION}; was it written by another version?)"
        ));
    }
    let checksum = words.next().ok_or_else(bad)?;
    if checksum.len() != 16 || words.next().is_some() {
        return Err(bad());
    }
    u64::from_str_radix(checksum, 16).map_err(|_| bad())
}

// ---------------------------------------------------------------------------------------------
// Store: the file itself
// ---------------------------------------------------------------------------------------------

/// The journal file in a state directory: load, atomic replace.
#[derive(Debug)]
pub struct JournalStore {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    writes: AtomicU64,
}

impl JournalStore {
    /// Opens the journal in `state_dir`, creating the directory (mode 0700) if missing.
    ///
    /// - No journal file: an empty journal (a first start).
    /// - An unreadable journal (torn, truncated, bad header, checksum mismatch, bad JSON,
    ///   unknown version): renamed aside to `journal.json.corrupt-<UTC yyyymmddThhmmssZ>`
    ///   (never overwritten), logged at error level, and returned as [`CorruptJournal`] with an
    ///   empty journal. The caller must surface it (status, alert) and treat ownership as
    ///   unknown.
    /// - A leftover `journal.json.tmp` (a write interrupted before its rename, hence never
    ///   committed) is removed.
    ///
    /// `Err` only for I/O failures, e.g. a state directory that cannot be created, read or
    /// written (checked here with a probe, so that a misconfigured directory stops the daemon
    /// at start-up rather than at its first handshake).
    pub fn open(
        state_dir: &Path,
    ) -> Result<(JournalStore, Journal, Option<CorruptJournal>), JournalError> {
        create_private_dir(state_dir)?;
        let store = JournalStore::at(state_dir);
        store.probe_writable()?;
        let bytes = match fs::read(&store.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((store, Journal::default(), None));
            }
            Err(e) => return Err(io_err("read", &store.path, e)),
        };
        match decode(&bytes) {
            Ok(journal) => Ok((store, journal, None)),
            Err(reason) => {
                let moved_to = store.move_aside()?;
                let corrupt = CorruptJournal { moved_to, reason };
                tracing::error!(
                    journal = %store.path.display(),
                    moved_to = %corrupt.moved_to.display(),
                    reason = %corrupt.reason,
                    "journal unreadable; moved aside, starting from an empty journal"
                );
                Ok((store, Journal::default(), Some(corrupt)))
            }
        }
    }

    fn at(state_dir: &Path) -> Self {
        JournalStore {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(JOURNAL_FILE),
            tmp: state_dir.join(format!("{JOURNAL_FILE}.tmp")),
            writes: AtomicU64::new(0),
        }
    }

    /// Path of `journal.json`.
    pub fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Number of journal files written by this store (for tests and metrics).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Atomically replaces the journal: write `journal.json.tmp`, fsync it, rename it over
    /// `journal.json`, fsync the directory. Blocking; async code goes through
    /// [`JournalHandle`]. On error the temporary file is removed (best effort) and the previous
    /// journal is still in place.
    pub fn write(&self, journal: &Journal) -> Result<(), JournalError> {
        let bytes = encode(journal).map_err(|e| JournalError::Encode {
            path: self.path.clone(),
            error: Arc::new(e),
        })?;
        let result = self.replace_with(&bytes);
        if result.is_err() {
            // Best effort: the error being reported matters more than this one.
            let _ = fs::remove_file(&self.tmp);
        } else {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn replace_with(&self, bytes: &[u8]) -> Result<(), JournalError> {
        let mut file = private_file_options()
            .open(&self.tmp)
            .map_err(|e| io_err("create", &self.tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| io_err("write", &self.tmp, e))?;
        file.sync_all().map_err(|e| io_err("fsync", &self.tmp, e))?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(|e| JournalError::Rename {
            from: self.tmp.clone(),
            to: self.path.clone(),
            error: Arc::new(e),
        })?;
        sync_dir(&self.dir)
    }

    /// Creates and removes the temporary file: proves the directory is writable and clears a
    /// leftover from an interrupted write.
    fn probe_writable(&self) -> Result<(), JournalError> {
        match fs::symlink_metadata(&self.tmp) {
            Ok(_) => tracing::info!(
                file = %self.tmp.display(),
                "removing the leftover of an interrupted journal write (never committed)"
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("inspect", &self.tmp, e)),
        }
        private_file_options()
            .open(&self.tmp)
            .map_err(|e| io_err("create", &self.tmp, e))?;
        fs::remove_file(&self.tmp).map_err(|e| io_err("remove", &self.tmp, e))
    }

    /// Renames the journal to a fresh `journal.json.corrupt-<stamp>[.N]` name.
    fn move_aside(&self) -> Result<PathBuf, JournalError> {
        let stamp = Timestamp::now().strftime("%Y%m%dT%H%M%SZ").to_string();
        let base = format!("{JOURNAL_FILE}.corrupt-{stamp}");
        for n in 0..1000u32 {
            let name = if n == 0 {
                base.clone()
            } else {
                format!("{base}.{n}")
            };
            let target = self.dir.join(name);
            match fs::symlink_metadata(&target) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("inspect", &target, e)),
            }
            fs::rename(&self.path, &target).map_err(|e| JournalError::Rename {
                from: self.path.clone(),
                to: target.clone(),
                error: Arc::new(e),
            })?;
            sync_dir(&self.dir)?;
            return Ok(target);
        }
        Err(io_err(
            "find a free name to move aside",
            &self.path,
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{base} and 999 numbered variants already exist"),
            ),
        ))
    }
}

/// Reads the journal in `state_dir` without creating, moving or writing anything: for
/// commands (such as `plan`) that show learned leads without owning the state directory.
/// A missing file is an empty journal; an unreadable one is [`JournalError::Corrupt`].
pub fn read_journal(state_dir: &Path) -> Result<Journal, JournalError> {
    let path = state_dir.join(JOURNAL_FILE);
    match fs::read(&path) {
        Ok(bytes) => decode(&bytes).map_err(|reason| JournalError::Corrupt { path, reason }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Journal::default()),
        Err(e) => Err(io_err("read", &path, e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), JournalError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| io_err("create directory", dir, e))
}

fn private_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Makes a rename in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync directory", dir, e))
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> Result<(), JournalError> {
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Handle: in-memory journal + group commit
// ---------------------------------------------------------------------------------------------

/// The shared, in-memory journal with a background flusher (group commit).
///
/// How it works: the journal and a *generation* counter live under one mutex. [`commit`]
/// applies its change and bumps the generation under that lock, wakes the flusher and waits.
/// The flusher, woken, clones the journal with its generation, writes it on the blocking pool
/// and publishes the generation it made durable on a `watch` channel. A committer returns when
/// the published durable generation reaches its own: every change applied before the clone
/// rides on that write, so a burst of commits costs a couple of writes, not one each.
///
/// A failed write is published too (with its generation): the callers it covered get the
/// error, it is logged, and the flusher carries on; the next commit or [`flush`] writes
/// everything again. A change whose commit failed (or whose future was dropped) stays applied
/// in memory and is written by the next successful write: the caller must only treat it as
/// *not known to be durable* (and not send the action).
///
/// The flusher ends when the last handle is dropped; call [`flush`] first at shutdown.
///
/// [`commit`]: JournalHandle::commit
/// [`flush`]: JournalHandle::flush
#[derive(Clone)]
pub struct JournalHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the flusher (a stored permit covers changes made while it is writing).
    wake: Arc<Notify>,
    /// What the flusher made durable; the sender lives in the flusher task, so if the task is
    /// gone, waiting ends with an error instead of hanging.
    flushed: watch::Receiver<Flushed>,
    store: Arc<JournalStore>,
    /// Set by [`JournalHandle::spawn_inline`]: commits write themselves and publish here (there
    /// is no flusher task).
    inline: Option<watch::Sender<Flushed>>,
}

struct State {
    journal: Journal,
    /// Bumped by every commit; the journal as of generation g contains commits 1..=g.
    generation: u64,
}

#[derive(Debug, Clone, Default)]
struct Flushed {
    /// Highest generation known to be on disk.
    durable: u64,
    /// The last write attempt failed: its generation and error. Cleared by a success.
    failed: Option<(u64, JournalError)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a `commit` closure poisons the mutex; the journal is still the best
        // knowledge we have, so keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the flusher notice that no handle is left.
        self.wake.notify_one();
    }
}

impl JournalHandle {
    /// Wraps an opened store and its journal; spawns the flusher on the current tokio runtime
    /// (must be called from within one).
    pub fn spawn(store: JournalStore, initial: Journal) -> JournalHandle {
        JournalHandle::spawn_with(store, initial, false)
    }

    /// [`JournalHandle::spawn`] for deterministic simulations: no group commit and no flusher
    /// task; every [`commit`](JournalHandle::commit) writes the journal itself, synchronously,
    /// on the caller's thread, before it returns. On a paused current-thread runtime a
    /// blocking-pool write finishing at some wall-clock moment, or the wake-up order of the
    /// committers waiting for a shared write (tokio's `watch` wakes its receivers in a random
    /// order), would make the order in which tasks run, and so the whole simulated run, depend
    /// on something else than the seed. Never use it in the daemon: every commit blocks the
    /// runtime for a write and an fsync.
    pub fn spawn_inline(store: JournalStore, initial: Journal) -> JournalHandle {
        JournalHandle::spawn_with(store, initial, true)
    }

    fn spawn_with(store: JournalStore, initial: Journal, inline: bool) -> JournalHandle {
        let store = Arc::new(store);
        let wake = Arc::new(Notify::new());
        let (tx, rx) = watch::channel(Flushed::default());
        let (inline_tx, tx) = if inline {
            (Some(tx), None)
        } else {
            (None, Some(tx))
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                journal: initial,
                generation: 0,
            }),
            wake: Arc::clone(&wake),
            flushed: rx,
            store: Arc::clone(&store),
            inline: inline_tx,
        });
        if let Some(tx) = tx {
            tokio::spawn(flusher(Arc::downgrade(&shared), wake, store, tx));
        }
        JournalHandle { shared }
    }

    /// A future that completes once the flusher task has ended (with
    /// [`spawn_inline`](JournalHandle::spawn_inline): once every handle is gone), i.e. once no
    /// write is in progress or will start. For crash simulations: before the state directory is
    /// opened again, the previous "process" must not be able to write any more. Take it before
    /// dropping the last handle.
    pub fn writer_stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shared.flushed.clone();
        async move { while rx.changed().await.is_ok() {} }
    }

    /// Applies `change` in memory, then waits until a write containing it is durable.
    /// Concurrent callers share writes. `change` runs under a lock: keep it short, no I/O.
    ///
    /// On `Err` the change stays applied in memory (it is not rolled back) and will be written
    /// by the next successful write; treat it as not durable.
    pub async fn commit<R>(
        &self,
        change: impl FnOnce(&mut Journal) -> R,
    ) -> Result<R, JournalError> {
        if let Some(tx) = &self.shared.inline {
            // Simulation mode: write now, under the lock (so that writes never go back in time).
            let mut state = self.shared.lock();
            let result = change(&mut state.journal);
            state.generation += 1;
            let generation = state.generation;
            return match self.shared.store.write(&state.journal) {
                Ok(()) => {
                    tx.send_replace(Flushed {
                        durable: generation,
                        failed: None,
                    });
                    Ok(result)
                }
                Err(error) => {
                    tx.send_modify(|f| f.failed = Some((generation, error.clone())));
                    Err(error)
                }
            };
        }
        let (result, generation) = {
            let mut state = self.shared.lock();
            let result = change(&mut state.journal);
            state.generation += 1;
            (result, state.generation)
        };
        self.shared.wake.notify_one();
        self.wait_durable(generation).await?;
        Ok(result)
    }

    /// A clone of the in-memory journal (including changes not yet durable).
    pub fn snapshot(&self) -> Journal {
        self.shared.lock().journal.clone()
    }

    /// Runs `f` on the in-memory journal under the lock: keep it short.
    pub fn read<R>(&self, f: impl FnOnce(&Journal) -> R) -> R {
        f(&self.shared.lock().journal)
    }

    /// Waits until everything applied so far is durable, writing again if the last write
    /// failed. Used at shutdown.
    pub async fn flush(&self) -> Result<(), JournalError> {
        let generation = self.shared.lock().generation;
        let done = {
            let flushed = self.shared.flushed.borrow();
            flushed.durable >= generation && flushed.failed.is_none()
        };
        if done {
            return Ok(());
        }
        // A new generation forces a fresh write attempt even if the last one failed.
        self.commit(|_| ()).await
    }

    /// Path of `journal.json`.
    pub fn path(&self) -> PathBuf {
        self.shared.store.path()
    }

    /// Number of physical journal writes so far (for tests and metrics).
    pub fn writes(&self) -> u64 {
        self.shared.store.writes()
    }

    async fn wait_durable(&self, generation: u64) -> Result<(), JournalError> {
        let mut rx = self.shared.flushed.clone();
        let seen = rx
            .wait_for(|f| {
                f.durable >= generation || f.failed.as_ref().is_some_and(|(g, _)| *g >= generation)
            })
            .await;
        match seen {
            Ok(f) if f.durable >= generation => Ok(()),
            Ok(f) => match &f.failed {
                Some((_, error)) => Err(error.clone()),
                None => Ok(()),
            },
            Err(_) => Err(JournalError::Stopped {
                path: self.shared.store.path(),
                why: "flusher task ended".to_string(),
            }),
        }
    }
}

/// The flusher task: one write at a time, each covering every change applied before it began.
async fn flusher(
    shared: Weak<Shared>,
    wake: Arc<Notify>,
    store: Arc<JournalStore>,
    tx: watch::Sender<Flushed>,
) {
    let mut durable = 0u64;
    loop {
        wake.notified().await;
        let (journal, generation) = {
            let Some(shared) = shared.upgrade() else {
                break;
            };
            let state = shared.lock();
            if state.generation <= durable {
                continue;
            }
            (state.journal.clone(), state.generation)
        };
        let writer = Arc::clone(&store);
        let result = match tokio::task::spawn_blocking(move || writer.write(&journal)).await {
            Ok(result) => result,
            Err(join) => Err(JournalError::Stopped {
                path: store.path(),
                why: format!("journal write task failed: {join}"),
            }),
        };
        match result {
            Ok(()) => {
                durable = generation;
                tx.send_replace(Flushed {
                    durable,
                    failed: None,
                });
            }
            Err(error) => {
                tracing::error!(
                    error = %error,
                    generation,
                    "journal write failed; the actions waiting for it are not sent, the next change retries"
                );
                tx.send_modify(|f| f.failed = Some((generation, error)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cref(i: usize) -> CloudletRef {
        CloudletRef {
            region: "EU".to_string(),
            cloudlet: format!("TDG/berlin-{i}"),
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn sample_journal() -> Journal {
        let mut j = Journal::default();
        let r = j.record_mut(&cref(1));
        r.owned = true;
        r.owned_since = Some(ts("2026-12-06T00:50:00Z"));
        r.entered_for = Some(SpanId {
            start: ts("2026-12-06T01:00:00Z"),
            end: ts("2026-12-06T05:00:00Z"),
        });
        r.in_flight = Some(InFlight {
            kind: HandshakeKind::EnterFailover,
            sent_at: ts("2026-12-06T00:49:00Z"),
        });
        r.last_outcome = Some(Outcome {
            kind: HandshakeKind::EnterFailover,
            at: ts("2026-12-06T00:50:00Z"),
            ok: true,
            duration_ms: 61_000,
            observed: Some("UnderMaintenance".to_string()),
            error: None,
        });
        r.restore_failures = 2;
        r.durations.push(HandshakeKind::EnterFailover, 61_000, 50);
        r.durations.push(HandshakeKind::Exit, 30_000, 50);
        let r = j.record_mut(&cref(2));
        r.released_by_hand = Some(SpanId {
            start: ts("2026-12-06T01:00:00Z"),
            end: ts("2026-12-06T05:00:00Z"),
        });
        j
    }

    fn open(dir: &Path) -> (JournalStore, Journal, Option<CorruptJournal>) {
        JournalStore::open(dir).unwrap()
    }

    /// Writes raw bytes as `journal.json` with a correct header for `body`.
    fn write_with_header(dir: &Path, body: &str) {
        let text = format!("{MAGIC} v1 {:016x}\n{body}\n", fnv1a64(body.as_bytes()));
        fs::write(dir.join(JOURNAL_FILE), text).unwrap();
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn fnv1a64_known_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (store, empty, corrupt) = open(dir.path());
        assert_eq!(empty, Journal::default());
        assert!(corrupt.is_none());
        let j = sample_journal();
        store.write(&j).unwrap();
        assert_eq!(store.writes(), 1);

        let text = fs::read_to_string(store.path()).unwrap();
        let (header, body) = text.split_once('\n').unwrap();
        assert!(
            header.starts_with("cloudlet-maintd journal v1 "),
            "{header}"
        );
        assert!(
            body.contains("\"2026-12-06T00:50:00Z\""),
            "RFC 3339 instants: {body}"
        );
        assert!(
            body.contains("\"enter_failover\""),
            "snake_case kinds: {body}"
        );

        let (_, loaded, corrupt) = open(dir.path());
        assert!(corrupt.is_none());
        assert_eq!(loaded, j);
        assert_eq!(read_journal(dir.path()).unwrap(), j);
        assert!(loaded.record(&cref(1)).unwrap().owned);
        assert!(loaded.record(&cref(3)).is_none());
    }

    #[test]
    fn missing_file_is_an_empty_journal_and_dir_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("var/lib/cloudlet-maintd");
        let (store, j, corrupt) = open(&state);
        assert_eq!(j, Journal::default());
        assert!(corrupt.is_none());
        assert!(state.is_dir());
        assert_eq!(store.path(), state.join(JOURNAL_FILE));
        assert!(entries(&state).is_empty(), "open writes nothing");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700);
        }
        assert_eq!(read_journal(&state).unwrap(), Journal::default());
    }

    #[test]
    fn truncated_file_is_moved_aside_intact() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(dir.path());
        store.write(&sample_journal()).unwrap();
        let full = fs::read(store.path()).unwrap();
        let torn = &full[..full.len() / 2];
        fs::write(store.path(), torn).unwrap();
        assert!(matches!(
            read_journal(dir.path()),
            Err(JournalError::Corrupt { .. })
        ));

        let (store, j, corrupt) = open(dir.path());
        let corrupt = corrupt.expect("torn journal must be reported");
        assert_eq!(j, Journal::default());
        assert!(
            corrupt.reason.contains("checksum mismatch"),
            "{}",
            corrupt.reason
        );
        let name = corrupt.moved_to.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with("journal.json.corrupt-"), "{name}");
        let stamp = name.trim_start_matches("journal.json.corrupt-");
        assert_eq!(stamp.len(), "20261206T010000Z".len(), "{stamp}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
            "{stamp}"
        );
        assert_eq!(
            fs::read(&corrupt.moved_to).unwrap(),
            torn,
            "bytes kept as they were"
        );
        assert!(
            !store.path().exists(),
            "the corrupt file is not left in place"
        );
        assert!(corrupt.to_string().contains("moved aside"));

        // The store is usable afterwards, and the corrupt copy stays.
        store.write(&sample_journal()).unwrap();
        assert_eq!(open(dir.path()).1, sample_journal());
        assert!(corrupt.moved_to.exists());
    }

    #[test]
    fn cut_inside_the_header_and_empty_file_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JOURNAL_FILE), "cloudlet-maintd jour").unwrap();
        let (_, j, corrupt) = open(dir.path());
        assert_eq!(j, Journal::default());
        assert!(corrupt.unwrap().reason.contains("no complete header line"));

        fs::write(dir.path().join(JOURNAL_FILE), "").unwrap();
        let (_, _, corrupt) = open(dir.path());
        assert!(corrupt.unwrap().reason.contains("empty"));
    }

    #[test]
    fn checksum_mismatch_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(dir.path());
        store.write(&sample_journal()).unwrap();
        // Same length, still valid JSON: only the checksum can tell.
        let text = fs::read_to_string(store.path()).unwrap();
        let flipped = text.replace("\"region\":\"EU\"", "\"region\":\"EV\"");
        assert_ne!(text, flipped);
        fs::write(store.path(), &flipped).unwrap();

        let (_, j, corrupt) = open(dir.path());
        let corrupt = corrupt.unwrap();
        assert_eq!(j, Journal::default());
        assert!(
            corrupt.reason.contains("checksum mismatch"),
            "{}",
            corrupt.reason
        );
        assert_eq!(fs::read_to_string(&corrupt.moved_to).unwrap(), flipped);
    }

    #[test]
    fn bad_header_bad_json_and_unknown_version_are_detected() {
        let cases: [(&str, &str); 4] = [
            ("{\"cloudlets\":{}}\n", "bad header"),
            ("cloudlet-maintd journal v1 xyz\n{}\n", "bad header"),
            (
                "cloudlet-maintd journal v2 0000000000000000\n{}\n",
                "unknown journal format v2",
            ),
            ("", "empty"),
        ];
        for (text, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(JOURNAL_FILE), text).unwrap();
            let (_, j, corrupt) = open(dir.path());
            let corrupt = corrupt.unwrap();
            assert_eq!(j, Journal::default());
            assert!(
                corrupt.reason.contains(expected),
                "{text:?}: {}",
                corrupt.reason
            );
        }

        let dir = tempfile::tempdir().unwrap();
        write_with_header(dir.path(), "{\"cloudlets\": [1, 2");
        let (_, _, corrupt) = open(dir.path());
        let reason = corrupt.unwrap().reason;
        assert!(reason.contains("not a valid journal"), "{reason}");
    }

    #[test]
    fn older_journal_with_missing_fields_loads() {
        let dir = tempfile::tempdir().unwrap();
        write_with_header(
            dir.path(),
            r#"{"cloudlets":{"EU:TDG/berlin-1":{"region":"EU","cloudlet":"TDG/berlin-1","owned":true,
                "last_outcome":{"kind":"exit","at":"2026-12-06T05:00:10Z"},
                "durations":{"exit":[1000]}}}}"#,
        );
        let (_, j, corrupt) = open(dir.path());
        assert!(corrupt.is_none());
        let r = j.record(&cref(1)).unwrap();
        assert!(r.owned && !r.assumed && r.in_flight.is_none());
        assert_eq!(r.durations.exit, [1000]);
        assert!(r.durations.enter_failover.is_empty());
        let outcome = r.last_outcome.as_ref().unwrap();
        assert!(!outcome.ok && outcome.error.is_none());
    }

    #[test]
    fn corrupt_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut moved = Vec::new();
        for i in 0..3 {
            fs::write(dir.path().join(JOURNAL_FILE), format!("garbage {i}")).unwrap();
            let (_, _, corrupt) = open(dir.path());
            moved.push(corrupt.unwrap().moved_to);
        }
        moved.sort();
        moved.dedup();
        assert_eq!(moved.len(), 3);
        let mut contents: Vec<String> = moved
            .iter()
            .map(|p| fs::read_to_string(p).unwrap())
            .collect();
        contents.sort();
        assert_eq!(contents, ["garbage 0", "garbage 1", "garbage 2"]);
    }

    #[test]
    fn no_tmp_left_behind_and_leftover_tmp_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, _) = open(dir.path());
        store.write(&sample_journal()).unwrap();
        store.write(&Journal::default()).unwrap();
        assert_eq!(entries(dir.path()), [JOURNAL_FILE]);

        // A write interrupted before its rename leaves a tmp; the committed journal wins.
        fs::write(dir.path().join("journal.json.tmp"), "half a wri").unwrap();
        let (_, j, corrupt) = open(dir.path());
        assert!(corrupt.is_none());
        assert_eq!(j, Journal::default());
        assert_eq!(entries(dir.path()), [JOURNAL_FILE]);
    }

    #[test]
    fn io_errors_name_the_operation_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        fs::write(&not_a_dir, "x").unwrap();
        let err = JournalStore::open(&not_a_dir.join("state")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot create directory "), "{msg}");
        assert!(msg.contains("file/state"), "{msg}");
        assert!(err.io_kind().is_some());
    }

    #[test]
    fn durations_keep_the_newest() {
        let mut d = Durations::default();
        for ms in 1..=5 {
            d.push(HandshakeKind::EnterNoFailover, ms, 3);
        }
        d.push(HandshakeKind::Recover, 9, 3);
        assert_eq!(d.enter_no_failover, [3, 4, 5]);
        assert_eq!(d.of(HandshakeKind::Exit), &[9]);
        assert!(d.enter_failover.is_empty());
        assert_eq!(
            HandshakeKind::enter(true).to_string(),
            "enter with failover"
        );
        assert!(HandshakeKind::enter(false).is_enter() && !HandshakeKind::Exit.is_enter());
    }

    #[test]
    fn iter_recovers_cloudlet_from_the_key() {
        let mut j = Journal::default();
        j.cloudlets
            .insert("EU:TDG/berlin-7".to_string(), CloudletRecord::default());
        j.record_mut(&cref(1));
        let refs: Vec<CloudletRef> = j.iter().map(|(c, _)| c).collect();
        assert_eq!(refs, [cref(1), cref(7)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_200_concurrent_all_durable_with_fewer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, initial, _) = open(dir.path());
        let handle = JournalHandle::spawn(store, initial);
        let barrier = Arc::new(tokio::sync::Barrier::new(200));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let handle = handle.clone();
            let barrier = Arc::clone(&barrier);
            tasks.spawn(async move {
                barrier.wait().await;
                let sent_at = ts("2026-12-06T00:49:00Z");
                handle
                    .commit(|j| {
                        let r = j.record_mut(&cref(i));
                        r.owned = true;
                        r.in_flight = Some(InFlight {
                            kind: HandshakeKind::EnterFailover,
                            sent_at,
                        });
                        i
                    })
                    .await
                    .unwrap();
                // Durable now: a fresh read of the file must already contain this record.
                let on_disk = read_journal(handle.path().parent().unwrap()).unwrap();
                assert!(on_disk.record(&cref(i)).unwrap().in_flight.is_some());
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let writes = handle.writes();
        assert!(writes < 200, "group commit must share writes, got {writes}");
        assert!(writes >= 1);

        let (_, reopened, corrupt) = open(dir.path());
        assert!(corrupt.is_none());
        assert_eq!(reopened.cloudlets.len(), 200);
        for i in 0..200 {
            let r = reopened.record(&cref(i)).unwrap();
            assert!(r.owned && r.in_flight.is_some(), "record {i}");
        }
        assert_eq!(reopened, handle.snapshot());
        assert_eq!(entries(dir.path()), [JOURNAL_FILE]);
    }

    #[tokio::test]
    async fn write_error_reaches_the_committer_and_the_next_commit_retries() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let (store, initial, _) = open(&state);
        let handle = JournalHandle::spawn(store, initial);
        handle
            .commit(|j| j.record_mut(&cref(1)).owned = true)
            .await
            .unwrap();

        fs::remove_dir_all(&state).unwrap();
        let err = handle
            .commit(|j| j.record_mut(&cref(2)).owned = true)
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("cannot create "), "{msg}");
        assert!(msg.contains("journal.json.tmp"), "{msg}");
        // Still applied in memory, just not durable.
        assert!(handle.read(|j| j.record(&cref(2)).is_some()));

        // flush() retries even though nothing new was committed.
        fs::create_dir(&state).unwrap();
        handle.flush().await.unwrap();
        let on_disk = read_journal(&state).unwrap();
        assert!(on_disk.record(&cref(1)).unwrap().owned);
        assert!(on_disk.record(&cref(2)).unwrap().owned);

        handle
            .commit(|j| j.record_mut(&cref(3)).owned = true)
            .await
            .unwrap();
        assert_eq!(read_journal(&state).unwrap().cloudlets.len(), 3);
    }

    #[tokio::test]
    async fn flush_without_changes_does_not_write() {
        let dir = tempfile::tempdir().unwrap();
        let (store, initial, _) = open(dir.path());
        let handle = JournalHandle::spawn(store, initial);
        handle.flush().await.unwrap();
        assert_eq!(handle.writes(), 0);
        handle
            .commit(|j| j.record_mut(&cref(1)).owned = true)
            .await
            .unwrap();
        handle.flush().await.unwrap();
        assert_eq!(handle.writes(), 1);
        assert_eq!(handle.snapshot(), read_journal(dir.path()).unwrap());
    }

    /// The simulation mode: each commit is on disk when it returns, and the "writer" is gone
    /// once the last handle is (what a crash simulation waits for before reopening).
    #[tokio::test]
    async fn inline_commits_are_written_before_they_return() {
        let dir = tempfile::tempdir().unwrap();
        let (store, initial, _) = open(dir.path());
        let handle = JournalHandle::spawn_inline(store, initial);
        let stopped = handle.writer_stopped();
        for i in 0..3 {
            handle
                .commit(|j| j.record_mut(&cref(i)).owned = true)
                .await
                .unwrap();
            assert_eq!(handle.writes(), i as u64 + 1);
            assert_eq!(handle.snapshot(), read_journal(dir.path()).unwrap());
        }
        handle.flush().await.unwrap();
        assert_eq!(handle.writes(), 3);
        let clone = handle.clone();
        drop(handle);
        drop(clone);
        tokio::time::timeout(std::time::Duration::from_secs(5), stopped)
            .await
            .expect("the writer stops with the last handle");
    }
}
