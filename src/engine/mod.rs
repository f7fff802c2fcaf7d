//! The engine: keeps every cloudlet's real state in line with the plan.
//!
//! This is the imperative shell around [`decide`]. One task, the **timer loop**, owns all
//! mutable state: the window catalog, the plan, and per-cloudlet runtime facts. It keeps the
//! instants at which each cloudlet needs another look in an ordered set, sleeps until the first
//! one (never longer than [`clock::MAX_SLEEP`], re-reading the wall clock on every wake), and is
//! also woken by reloads and by finished workers. A cloudlet that is due gets **one worker**
//! (never two at once, property 4): it reads the state back, calls `decide`, writes the journal
//! *before* sending (property 5), runs the handshake under the global and per-organization caps,
//! reads the state back again, records the outcome and reports to the loop.
//!
//! The engine reaches the world only through [`Controller`] and [`Clock`], so the very same code
//! runs against the real controller and inside the deterministic simulation.

pub mod clock;
pub mod decide;
pub mod status;
mod worker;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use decide::{Decision, IdleReason, Observed, Ownership, Situation, decide};
pub use status::StatusSnapshot;

use crate::config::Config;
use crate::controller::{Controller, MaintenanceState};
use crate::journal::{CorruptJournal, JournalHandle};
use crate::lead::{LeadSettings, LearnedLeads};
use crate::plan::{CloudletRef, Plan, Span, WorstCaseLead, plan};
use crate::timeutil::{minus, plus_std, signed};
use crate::windows::{Catalog, FileStatus, load_dir};
use status::{AlertView, CloudletView, Counts, FileView, HandshakeView, NextAction, ReloadInfo};

/// Tunables of the engine (from `[schedule]`, plus derived values).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub windows_dir: PathBuf,
    pub horizon: Duration,
    pub poll_interval: Duration,
    pub verify_interval: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub restore_attempts: u32,
    /// An intermediate state older than this is stuck even without `UpdateError`.
    pub stuck_after: Duration,
    pub max_concurrent: usize,
    pub max_concurrent_per_org: usize,
    /// ShowCloudlet reads in flight at once.
    pub max_concurrent_reads: usize,
    pub shutdown_grace: Duration,
    pub history_cap: usize,
    /// Seed of the retry jitter (fixed in simulations, random in production).
    pub jitter_seed: u64,
    pub worst_case: WorstCaseLead,
    pub lead: LeadSettings,
}

impl EngineSettings {
    pub fn from_config(cfg: &Config) -> Self {
        let s = &cfg.schedule;
        let worst_case = crate::lead::worst_case_from_config(cfg);
        EngineSettings {
            windows_dir: s.windows_dir.clone(),
            horizon: s.horizon,
            poll_interval: s.poll_interval,
            verify_interval: s.verify_interval,
            retry_initial: s.retry_initial,
            retry_max: s.retry_max,
            restore_attempts: s.restore_attempts,
            stuck_after: worst_case.duration(true),
            max_concurrent: s.max_concurrent,
            max_concurrent_per_org: s.max_concurrent_per_org,
            max_concurrent_reads: s.max_concurrent_reads,
            shutdown_grace: s.shutdown_grace,
            history_cap: s.lead_history,
            jitter_seed: rand_seed(),
            worst_case,
            lead: LeadSettings::from_config(cfg),
        }
    }
}

fn rand_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Asks the running engine to do something.
#[derive(Debug)]
pub enum EngineCommand {
    /// Rescan `windows.d` (file watcher, SIGHUP). `trigger` is shown in status.
    Reload {
        trigger: String,
        reply: Option<oneshot::Sender<ReloadInfo>>,
    },
}

/// Hooks for the service manager (sd_notify). All default to doing nothing.
pub trait Lifecycle: Send + Sync + 'static {
    /// The first plan is built.
    fn planned(&self, _status: &StatusSnapshot) {}
    fn reloading(&self) {}
    fn reloaded(&self, _status: &StatusSnapshot) {}
    /// The timer loop is alive (called on every wake).
    fn tick(&self, _status_line: &str) {}
    fn stopping(&self) {}
    /// A handshake ended (`kind` in the journal's snake_case: `enter_failover`, …; `ok` when
    /// the state read back is the one asked for).
    fn handshake_finished(&self, _kind: &str, _ok: bool, _duration: Duration) {}
    /// The controller answered with an error (`ClientError::kind`).
    fn controller_error(&self, _kind: &str) {}
    /// A cloudlet was put into maintenance, before its span started or late.
    fn entered(&self, _late: bool) {}
    /// A worker started its look at a cloudlet that was due at `due` (a plan edge, a retry, a
    /// poll), as read from the engine's clock when the worker task first ran. `started − due`
    /// is how late the timer loop acted.
    fn look_started(&self, _due: Timestamp, _started: Timestamp) {}
}

/// A status publication is put off while a look is due within this long…
const PUBLISH_CLEARANCE: Duration = Duration::from_millis(10);
/// …but never for longer than this.
const PUBLISH_DEFER_MAX: Duration = Duration::from_secs(1);

/// A [`Lifecycle`] that does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLifecycle;
impl Lifecycle for NoLifecycle {}

/// What the engine needs to run.
pub struct EngineParts<C, K, L = NoLifecycle> {
    pub controller: Arc<C>,
    pub clock: Arc<K>,
    pub journal: JournalHandle,
    /// Set when the journal found at start was corrupt: ownership is then assumed (see docs).
    pub corrupt_journal: Option<CorruptJournal>,
    pub settings: EngineSettings,
    pub lifecycle: Arc<L>,
}

/// Handles to a running engine.
#[derive(Clone)]
pub struct EngineHandle {
    pub commands: mpsc::Sender<EngineCommand>,
    pub status: watch::Receiver<Arc<StatusSnapshot>>,
    /// Every planned span (from an hour ago to the horizon), per cloudlet in cloudlet order,
    /// republished after each replan.
    pub plan: watch::Receiver<PublishedPlan>,
}

/// The plan as the engine publishes it: every span in its JSON form, shared with the engine's
/// own cache (a republication after one cloudlet's lead moved copies pointers, not spans).
pub type PublishedPlan = Arc<Vec<Arc<crate::plan::SpanJson>>>;

/// Errors that stop the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
}

/// The channel on which an engine takes commands (make it before the engine so that signal
/// handlers and watchers can hold the sender first).
pub fn command_channel() -> (mpsc::Sender<EngineCommand>, mpsc::Receiver<EngineCommand>) {
    mpsc::channel(16)
}

/// Starts the engine on the current runtime. It runs until `shutdown` is cancelled, then stops
/// starting handshakes, gives in-flight ones `shutdown_grace`, flushes the journal and ends.
pub fn spawn<C, K, L>(
    parts: EngineParts<C, K, L>,
    commands: (mpsc::Sender<EngineCommand>, mpsc::Receiver<EngineCommand>),
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> (
    EngineHandle,
    tokio::task::JoinHandle<Result<(), EngineError>>,
)
where
    C: Controller + 'static,
    K: Clock,
    L: Lifecycle,
{
    spawn_with_hooks(
        parts,
        commands,
        shutdown,
        tracker,
        SimulationHooks::default(),
    )
}

/// What only the deterministic simulation (`tests/simulation.rs`) needs from the engine. The
/// daemon uses the defaults (through [`spawn`]).
#[derive(Debug, Clone, Default)]
pub struct SimulationHooks {
    /// Cancelling it stops the engine **as a crash would**: the timer loop and every worker are
    /// dropped wherever they are, a request in flight is abandoned (the controller carries on
    /// server-side), nothing is flushed and there is no grace period. The engine's task then
    /// returns `Ok(())` once every one of its tasks is gone, so that a test can open the state
    /// directory again as a fresh process would. (A real crash also loses journal changes that
    /// were applied in memory but not yet written; here such a change may still be written
    /// while the last handle is dropped, which a real crash right after the write could
    /// produce too. See [`JournalHandle::writer_stopped`].)
    pub kill: CancellationToken,
    /// Scan `windows.d` on the runtime's own thread instead of the blocking pool. On a paused
    /// current-thread runtime a blocking-pool thread finishing at some wall-clock moment makes
    /// the order of tasks depend on real time; inline I/O keeps a run a function of its seed.
    pub inline_io: bool,
}

/// [`spawn`] with [`SimulationHooks`].
pub fn spawn_with_hooks<C, K, L>(
    parts: EngineParts<C, K, L>,
    commands: (mpsc::Sender<EngineCommand>, mpsc::Receiver<EngineCommand>),
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    hooks: SimulationHooks,
) -> (
    EngineHandle,
    tokio::task::JoinHandle<Result<(), EngineError>>,
)
where
    C: Controller + 'static,
    K: Clock,
    L: Lifecycle,
{
    let (cmd_tx, cmd_rx) = commands;
    let (status_tx, status_rx) = watch::channel(Arc::new(StatusSnapshot::default()));
    let (plan_tx, plan_rx) = watch::channel(Arc::new(Vec::new()));
    let mut engine = Engine::new(parts, status_tx);
    engine.plan_tx = Some(plan_tx);
    engine.inline_io = hooks.inline_io;
    engine.kill = hooks.kill.clone();
    let worker_tracker = TaskTracker::new();
    let kill = hooks.kill;
    let join = tracker.spawn(async move {
        let workers = worker_tracker.clone();
        tokio::select! {
            biased;
            () = kill.cancelled() => {
                // Workers end at once (they run under the same token); wait until they are
                // all dropped so that nothing of this "process" is left.
                workers.close();
                workers.wait().await;
                Ok(())
            }
            r = engine.run(cmd_rx, shutdown, worker_tracker) => r,
        }
    });
    (
        EngineHandle {
            commands: cmd_tx,
            status: status_rx,
            plan: plan_rx,
        },
        join,
    )
}

/// A finished handshake, kept for status.
#[derive(Debug, Clone)]
struct HandshakeRecord {
    kind: crate::journal::HandshakeKind,
    started_at: Timestamp,
    duration: Duration,
    ok: bool,
    observed: Option<MaintenanceState>,
    error: Option<String>,
}

/// Per-cloudlet runtime facts (not persisted: the journal holds what must survive).
#[derive(Debug, Default)]
struct CloudletRt {
    observed: Option<Observed>,
    /// When `observed` was read, as shown in status.
    observed_at: Option<String>,
    decision: Option<Decision>,
    /// Explicit next look (poll, retry, verify), besides the plan's edges.
    check_at: Option<Timestamp>,
    /// Consecutive failed requests (for backoff).
    failures: u32,
    last_error: Option<String>,
    /// The span (by start) that was entered late.
    late_span: Option<Timestamp>,
    /// Recent handshakes, newest last, already in their status form (formatted once: the
    /// status is rebuilt on every wake of the loop).
    history: VecDeque<HandshakeView>,
    /// Alert raised for this cloudlet: (kind, message, since).
    alert: Option<(String, String, Timestamp)>,
    /// Its key in `due`.
    due_at: Option<Timestamp>,
    /// When the last worker for it started: plan edges after this instant still need a look,
    /// also those that passed while a worker was busy with it.
    looked_at: Option<Timestamp>,
    /// Its status view as last built, and whether something it shows changed since.
    view: Option<Arc<CloudletView>>,
    view_dirty: bool,
}

/// Shared, read-only context of workers.
struct WorkerCtx<C, K> {
    controller: Arc<C>,
    clock: Arc<K>,
    journal: JournalHandle,
    settings: EngineSettings,
    global: Arc<Semaphore>,
    /// Caps ShowCloudlet reads (`max_concurrent_reads`).
    reads: Semaphore,
}

struct Engine<C, K, L> {
    ctx: Arc<WorkerCtx<C, K>>,
    lifecycle: Arc<L>,
    status_tx: watch::Sender<Arc<StatusSnapshot>>,
    corrupt_journal: Option<CorruptJournal>,
    per_org: HashMap<String, Arc<Semaphore>>,
    catalog: Catalog,
    generation: u64,
    last_reload: Option<ReloadInfo>,
    plan: Plan,
    plan_until: Timestamp,
    /// JSON form of each cloudlet's spans (same order as `plan.cloudlets[c]`), rebuilt only
    /// for the cloudlets a replan touched.
    span_json: BTreeMap<CloudletRef, Vec<Arc<crate::plan::SpanJson>>>,
    /// The whole plan needs rebuilding (reload, horizon).
    plan_dirty: bool,
    /// Only these cloudlets need replanning (their learned lead moved).
    replan_only: BTreeSet<CloudletRef>,
    /// The plan changed since it was last published.
    plan_unpublished: bool,
    /// Status form of the catalog's files, rebuilt on reloads.
    files_view: Arc<Vec<FileView>>,
    /// Every view must be rebuilt at the next publication (after a replan or reload).
    all_views_dirty: bool,
    /// The `sd_notify` STATUS= line, refreshed with each status publication.
    status_line: String,
    leads: LearnedLeads,
    cloudlets: BTreeMap<CloudletRef, CloudletRt>,
    due: BTreeSet<(Timestamp, CloudletRef)>,
    busy: HashSet<CloudletRef>,
    started_at: Timestamp,
    entries_on_time: u64,
    entries_late: u64,
    rng: u64,
    status_dirty: bool,
    last_status: Option<tokio::time::Instant>,
    /// Where the plan's spans are published (for `/v1/plan` and the timeline page).
    plan_tx: Option<watch::Sender<PublishedPlan>>,
    /// See [`SimulationHooks`].
    inline_io: bool,
    kill: CancellationToken,
}

/// What a worker tells the loop when it is done.
#[derive(Debug)]
pub(crate) struct WorkerReport {
    cloudlet: CloudletRef,
    observed: Option<Observed>,
    decision: Option<Decision>,
    handshake: Option<HandshakeRecord>,
    /// A successful enter: duration sample for the lead policy.
    enter_sample: Option<(bool, Duration)>,
    entered: Option<EnteredOutcome>,
    error: Option<worker::WorkerError>,
    /// When to look again (None: only at the plan's edges).
    next_check: Option<Timestamp>,
    /// Requests failed in a row now (0 after a success).
    failed: bool,
    succeeded: bool,
    alert: Option<(String, String)>,
}

#[derive(Debug, Clone, Copy)]
struct EnteredOutcome {
    span_start: Timestamp,
    late: bool,
}

impl<C, K, L> Engine<C, K, L>
where
    C: Controller + 'static,
    K: Clock,
    L: Lifecycle,
{
    fn new(parts: EngineParts<C, K, L>, status_tx: watch::Sender<Arc<StatusSnapshot>>) -> Self {
        let settings = parts.settings;
        let leads = parts
            .journal
            .read(|j| LearnedLeads::from_journal(settings.lead.clone(), settings.worst_case, j));
        let now = parts.clock.now();
        let global = Arc::new(Semaphore::new(settings.max_concurrent.max(1)));
        let reads = Semaphore::new(settings.max_concurrent_reads.max(1));
        let rng = settings.jitter_seed | 1;
        Engine {
            ctx: Arc::new(WorkerCtx {
                controller: parts.controller,
                clock: parts.clock,
                journal: parts.journal,
                settings,
                global,
                reads,
            }),
            lifecycle: parts.lifecycle,
            status_tx,
            corrupt_journal: parts.corrupt_journal,
            per_org: HashMap::new(),
            catalog: Catalog::default(),
            generation: 0,
            last_reload: None,
            plan: Plan::default(),
            plan_until: now,
            span_json: BTreeMap::new(),
            plan_dirty: true,
            replan_only: BTreeSet::new(),
            plan_unpublished: true,
            files_view: Arc::new(Vec::new()),
            all_views_dirty: true,
            status_line: String::new(),
            leads,
            cloudlets: BTreeMap::new(),
            due: BTreeSet::new(),
            busy: HashSet::new(),
            started_at: now,
            entries_on_time: 0,
            entries_late: 0,
            rng,
            status_dirty: true,
            last_status: None,
            plan_tx: None,
            inline_io: false,
            kill: CancellationToken::new(),
        }
    }

    fn settings(&self) -> &EngineSettings {
        &self.ctx.settings
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<EngineCommand>,
        shutdown: CancellationToken,
        workers: TaskTracker,
    ) -> Result<(), EngineError> {
        let (report_tx, mut reports) = mpsc::unbounded_channel::<WorkerReport>();
        self.reload("start").await;
        self.publish_now();
        let snapshot = Arc::clone(&*self.status_tx.borrow());
        self.lifecycle.planned(&snapshot);

        loop {
            let now = self.ctx.clock.now();
            if self.plan_dirty || now >= minus(self.plan_until, signed(self.settings().horizon / 2))
            {
                self.replan(now);
            } else if !self.replan_only.is_empty() {
                self.replan_some(now);
            }
            self.start_due_workers(now, &report_tx, &workers);
            // Edges first: assembling a snapshot is O(cloudlets), so a publication is put off
            // (for at most a second) while another look is due within a few milliseconds.
            let imminent = self
                .next_due()
                .is_some_and(|t| t <= plus_std(now, PUBLISH_CLEARANCE));
            self.publish_if_due(imminent);
            self.lifecycle.tick(&self.status_line);

            // The sleep is measured from a fresh reading: the work above took time.
            let now = self.ctx.clock.now();
            let next = self.next_due();
            let mut sleep_for = match next {
                Some(t) if t > now => t.duration_since(now).unsigned_abs(),
                Some(_) => Duration::ZERO,
                None => clock::MAX_SLEEP,
            }
            .min(clock::MAX_SLEEP);
            if self.status_dirty {
                sleep_for = sleep_for.min(Duration::from_millis(200));
            }

            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(report) = reports.recv() => {
                    self.handle_report(report);
                    // Drain whatever else finished meanwhile before planning the next sleep.
                    while let Ok(r) = reports.try_recv() {
                        self.handle_report(r);
                    }
                }
                Some(cmd) = commands.recv() => match cmd {
                    EngineCommand::Reload { trigger, reply } => {
                        self.lifecycle.reloading();
                        let info = self.reload(&trigger).await;
                        self.publish_now();
                        let snapshot = Arc::clone(&*self.status_tx.borrow());
                        self.lifecycle.reloaded(&snapshot);
                        if let Some(reply) = reply {
                            let _ = reply.send(info);
                        }
                    }
                },
                _ = self.ctx.clock.sleep(sleep_for) => {}
            }
        }

        // Shutdown: no new handshakes; in-flight ones get the grace period.
        self.lifecycle.stopping();
        workers.close();
        let grace = self.settings().shutdown_grace;
        tracing::info!(
            in_flight = self.busy.len(),
            grace = %humantime::format_duration(grace),
            "shutting down: waiting for in-flight handshakes"
        );
        let drained = tokio::select! {
            _ = workers.wait() => true,
            _ = self.ctx.clock.sleep(grace) => false,
        };
        while let Ok(r) = reports.try_recv() {
            self.handle_report(r);
        }
        if !drained {
            tracing::warn!(
                in_flight = self.busy.len(),
                "grace period over with handshakes still in flight; their outcome is read back on the next start"
            );
        }
        self.ctx.journal.flush().await?;
        self.publish_now();
        Ok(())
    }

    /// Rescans `windows.d` (keeping last good versions), then replans.
    async fn reload(&mut self, trigger: &str) -> ReloadInfo {
        let dir = self.settings().windows_dir.clone();
        let previous = std::mem::take(&mut self.catalog);
        let now = self.ctx.clock.now();
        let scan = move || {
            let c = load_dir(&dir, Some(&previous), now);
            (c, previous)
        };
        let scanned = if self.inline_io {
            Ok(scan())
        } else {
            tokio::task::spawn_blocking(scan).await
        };
        let catalog = match scanned {
            Ok((c, _)) => c,
            Err(e) => {
                tracing::error!("reload task failed: {e}");
                return self.last_reload.clone().unwrap_or_default();
            }
        };
        for f in &catalog.files {
            for e in &f.errors {
                if f.status == FileStatus::Stale {
                    tracing::error!("{e} (last good version stays in force)");
                } else {
                    tracing::error!("{e} (file skipped)");
                }
            }
            for w in &f.warnings {
                tracing::warn!("{w}");
            }
        }
        if let Some(e) = &catalog.dir_error {
            tracing::error!("{e}");
        }
        self.catalog = catalog;
        self.files_view = Arc::new(self.catalog.files.iter().map(file_view).collect());
        self.generation += 1;
        let info = ReloadInfo {
            at: now.to_string(),
            ok: self.catalog.all_valid(),
            trigger: trigger.to_string(),
            files_ok: self.catalog.count(FileStatus::Ok),
            files_invalid: self.catalog.count(FileStatus::Invalid),
            files_stale: self.catalog.count(FileStatus::Stale),
        };
        tracing::info!(
            generation = self.generation,
            trigger,
            files_ok = info.files_ok,
            files_invalid = info.files_invalid,
            files_stale = info.files_stale,
            windows = self.catalog.windows().count(),
            "windows loaded"
        );
        self.last_reload = Some(info.clone());
        self.replan(now);
        info
    }

    /// Rebuilds the plan and every cloudlet's next look.
    fn replan(&mut self, now: Timestamp) {
        let from = minus(now, SignedDuration::from_hours(1));
        let until = plus_std(now, self.settings().horizon);
        self.plan = plan(self.catalog.windows(), &self.leads, from, until);
        self.span_json = self
            .plan
            .cloudlets
            .iter()
            .map(|(c, spans)| (c.clone(), spans_json(spans)))
            .collect();
        self.plan_until = until;
        self.plan_dirty = false;
        self.replan_only.clear();
        self.plan_unpublished = true;
        self.all_views_dirty = true;
        // Cloudlets to watch: every planned one, and every one the journal says we own (a
        // removed file must not strand a cloudlet in maintenance).
        let mut relevant: BTreeSet<CloudletRef> = self.plan.cloudlets.keys().cloned().collect();
        self.ctx.journal.read(|j| {
            for r in j.cloudlets.values() {
                if r.owned || r.in_flight.is_some() {
                    relevant.insert(CloudletRef {
                        region: r.region.clone(),
                        cloudlet: r.cloudlet.clone(),
                    });
                }
            }
        });
        for c in &relevant {
            // A cloudlet seen for the first time gets a look right away (a first read-back);
            // after that only the plan's edges and explicit checks schedule it.
            self.cloudlets
                .entry(c.clone())
                .or_insert_with(|| CloudletRt {
                    check_at: Some(now),
                    ..CloudletRt::default()
                });
        }
        // Forget cloudlets that are neither planned, owned nor busy.
        let busy = &self.busy;
        self.cloudlets
            .retain(|c, _| relevant.contains(c) || busy.contains(c));
        self.due.clear();
        let keys: Vec<CloudletRef> = self.cloudlets.keys().cloned().collect();
        for c in keys {
            if let Some(rt) = self.cloudlets.get_mut(&c) {
                rt.due_at = None;
            }
            self.reschedule(&c, now);
        }
        self.status_dirty = true;
    }

    /// Replans only the cloudlets in `replan_only` (a learned lead moved: leads are per
    /// cloudlet, and a cloudlet's spans depend on nothing else), over the range of the last
    /// full plan. A full replan costs a pass over every window; this one only reads the
    /// windows that name these cloudlets.
    fn replan_some(&mut self, now: Timestamp) {
        let which = std::mem::take(&mut self.replan_only);
        let (Some(from), Some(until)) = (self.plan.from, self.plan.until) else {
            self.replan(now);
            return;
        };
        let windows = self.catalog.windows().filter(|w| {
            w.cloudlets.iter().any(|name| {
                which
                    .iter()
                    .any(|c| c.region == w.region && c.cloudlet == *name)
            })
        });
        let mut partial = plan(windows, &self.leads, from, until);
        for c in &which {
            match partial.cloudlets.remove(c) {
                Some(spans) => {
                    self.span_json.insert(c.clone(), spans_json(&spans));
                    self.plan.cloudlets.insert(c.clone(), spans);
                }
                None => {
                    self.span_json.remove(c);
                    self.plan.cloudlets.remove(c);
                }
            }
            if let Some(rt) = self.cloudlets.get_mut(c) {
                rt.view_dirty = true;
            }
            self.reschedule(c, now);
        }
        self.plan_unpublished = true;
        self.status_dirty = true;
    }

    /// The JSON form of `c`'s span `s` (a span of the current plan).
    fn span_json_of(&self, c: &CloudletRef, s: &Span) -> Option<Arc<crate::plan::SpanJson>> {
        let i = self.spans_of(c).iter().position(|x| x.start == s.start)?;
        self.span_json.get(c)?.get(i).cloned()
    }

    fn spans_of(&self, c: &CloudletRef) -> &[Span] {
        self.plan.cloudlets.get(c).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The span that wants maintenance at `now`, if any.
    ///
    /// That is the span whose `[enter_at, end)` holds `now`, or else the span the daemon has
    /// already entered this cloudlet for (journal `entered_for`) until its end: a fast enter
    /// shortens the learned lead, and the replan that follows moves that span's `enter_at`
    /// after `now`; the cloudlet must not be taken out and entered again minutes later.
    fn current_span(&self, c: &CloudletRef, now: Timestamp) -> Option<&Span> {
        self.current_span_given(c, now, || {
            self.ctx
                .journal
                .read(|j| j.record(c).and_then(|r| r.entered_for))
        })
    }

    /// [`Engine::current_span`] with the journal's `entered_for` supplied.
    fn current_span_given(
        &self,
        c: &CloudletRef,
        now: Timestamp,
        entered_for: impl FnOnce() -> Option<crate::journal::SpanId>,
    ) -> Option<&Span> {
        let spans = self.spans_of(c);
        spans.iter().find(|s| s.wants_maintenance(now)).or_else(|| {
            let entered = entered_for()?;
            spans
                .iter()
                .find(|s| crate::journal::SpanId::of(s) == entered && now < s.end)
        })
    }

    /// Computes when `c` next needs a look and files it in `due`.
    fn reschedule(&mut self, c: &CloudletRef, now: Timestamp) {
        let next = if self.busy.contains(c) {
            None
        } else {
            let rt = self.cloudlets.get(c);
            // Edges since the last look, not only those ahead: an edge that passed while a
            // worker was busy with this cloudlet (an exit still running when the next span's
            // enter_at came), or that a replan moved into the past, is due now.
            let after = rt.and_then(|r| r.looked_at).map_or(now, |t| t.min(now));
            let edge = self
                .spans_of(c)
                .iter()
                .flat_map(|s| [s.enter_at, s.start, s.end])
                .filter(|t| *t > after)
                .min();
            let explicit = rt.and_then(|r| r.check_at);
            [edge, explicit].into_iter().flatten().min()
        };
        let Some(rt) = self.cloudlets.get_mut(c) else {
            return;
        };
        if let Some(old) = rt.due_at.take() {
            self.due.remove(&(old, c.clone()));
        }
        if let Some(t) = next {
            rt.due_at = Some(t);
            self.due.insert((t, c.clone()));
        }
    }

    fn start_due_workers(
        &mut self,
        now: Timestamp,
        reports: &mpsc::UnboundedSender<WorkerReport>,
        workers: &TaskTracker,
    ) {
        // Taken out of `due` as they are started (a busy cloudlet is never in it: `reschedule`
        // files it again when its worker reports). This runs for every cloudlet of a burst
        // (10,000 edges at one instant), so nothing is cloned that need not be.
        while self.due.first().is_some_and(|(t, _)| *t <= now) {
            let Some((due_at, c)) = self.due.pop_first() else {
                break;
            };
            if self.busy.contains(&c) {
                // Never two workers for one cloudlet (property 4); its report reschedules it.
                continue;
            }
            if let Some(rt) = self.cloudlets.get_mut(&c) {
                rt.due_at = None;
                rt.check_at = None;
                rt.looked_at = Some(now);
                rt.view_dirty = true;
            }
            let org_sem = self.org_semaphore(&c);
            self.busy.insert(c.clone());
            let job = self.job_for(c, now);
            let ctx = Arc::clone(&self.ctx);
            let tx = reports.clone();
            let kill = self.kill.clone();
            let lifecycle = Arc::clone(&self.lifecycle);
            workers.spawn(async move {
                lifecycle.look_started(due_at, ctx.clock.now());
                if let Some(report) = kill
                    .run_until_cancelled(worker::run(ctx, org_sem, job))
                    .await
                {
                    let _ = tx.send(report);
                }
            });
            self.status_dirty = true;
        }
    }

    fn org_semaphore(&mut self, c: &CloudletRef) -> Arc<Semaphore> {
        let org = c.cloudlet.split_once('/').map_or("", |(o, _)| o);
        if let Some(sem) = self.per_org.get(org) {
            return Arc::clone(sem);
        }
        let cap = self.settings().max_concurrent_per_org.max(1);
        // Per organization, whatever the region: an organization is one operator (one set of
        // people and apps to fail over) across all the regions it has cloudlets in.
        Arc::clone(
            self.per_org
                .entry(org.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(cap))),
        )
    }

    fn job_for(&mut self, c: CloudletRef, now: Timestamp) -> worker::Job {
        let span = self.current_span(&c, now).cloned();
        let rt = self.cloudlets.get(&c);
        let failures = rt.map(|r| r.failures).unwrap_or(0);
        let previous = rt.and_then(|r| r.observed.clone());
        let assume_ownership = self.corrupt_journal.is_some() && previous.is_none();
        let backoff = self.backoff(failures + 1);
        worker::Job {
            cloudlet: c,
            span,
            previous,
            backoff,
            assume_ownership,
        }
    }

    /// Exponential backoff with ±20 % jitter: `retry_initial · 2^(n-1)`, capped at `retry_max`.
    fn backoff(&mut self, attempt: u32) -> Duration {
        let s = self.settings();
        let exp = attempt.saturating_sub(1).min(20);
        let base = s.retry_initial.saturating_mul(1u32 << exp).min(s.retry_max);
        // xorshift64*: deterministic for a given seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let frac = (r >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        base.mul_f64(0.8 + 0.4 * frac)
    }

    fn handle_report(&mut self, r: WorkerReport) {
        let now = self.ctx.clock.now();
        self.busy.remove(&r.cloudlet);
        if let Some((failover, d)) = r.enter_sample {
            // Replan this cloudlet, and only when its learned lead actually moved.
            let before = self.leads.lead_for(&r.cloudlet, failover);
            self.leads.record(&r.cloudlet, failover, d);
            if self.leads.lead_for(&r.cloudlet, failover) != before {
                self.replan_only.insert(r.cloudlet.clone());
            }
        }
        if let Some(e) = r.entered {
            if e.late {
                self.entries_late += 1;
            } else {
                self.entries_on_time += 1;
            }
            self.lifecycle.entered(e.late);
        }
        if let Some(h) = &r.handshake {
            self.lifecycle
                .handshake_finished(h.kind.as_str(), h.ok, h.duration);
        }
        if let Some(worker::WorkerError::Controller(e)) = &r.error {
            self.lifecycle.controller_error(e.kind());
        }
        let cap = self.settings().history_cap.max(1);
        let rt = self.cloudlets.entry(r.cloudlet.clone()).or_default();
        rt.view_dirty = true;
        if let Some(o) = r.observed {
            rt.observed = Some(o);
            rt.observed_at = Some(now.to_string());
        }
        if let Some(d) = r.decision {
            rt.decision = Some(d);
        }
        if let Some(e) = r.entered
            && e.late
        {
            rt.late_span = Some(e.span_start);
        }
        let this_handshake_ok = r.handshake.as_ref().is_some_and(|h| h.ok);
        if let Some(h) = r.handshake {
            rt.history.push_back(HandshakeView {
                kind: h.kind.as_str().to_string(),
                started_at: h.started_at.to_string(),
                duration_ms: u64::try_from(h.duration.as_millis()).unwrap_or(u64::MAX),
                ok: h.ok,
                observed: h.observed.map(|s| s.to_string()),
                error: h.error,
            });
            while rt.history.len() > cap {
                rt.history.pop_front();
            }
        }
        if r.failed {
            rt.failures = rt.failures.saturating_add(1);
        } else if r.succeeded {
            rt.failures = 0;
        }
        match r.error {
            Some(e) => rt.last_error = Some(e.to_string()),
            None if r.succeeded => rt.last_error = None,
            None => {}
        }
        rt.check_at = r.next_check;
        let previous_alert = rt.alert.as_ref().map(|a| a.0.clone());
        // A permission or naming problem stays on display until a handshake succeeds: a span
        // ending does not mean a person fixed the role.
        let sticky = matches!(previous_alert.as_deref(), Some("forbidden" | "not_found"));
        let new_alert = match r.alert {
            None if sticky && !this_handshake_ok => {
                rt.alert.as_ref().map(|a| (a.0.clone(), a.1.clone()))
            }
            other => other,
        };
        rt.alert = new_alert.map(|(kind, msg)| {
            let since = match &rt.alert {
                Some((k, _, since)) if *k == kind => *since,
                _ => now,
            };
            (kind, msg, since)
        });
        if let Some((kind, msg, _)) = &rt.alert
            && previous_alert.as_deref() != Some(kind.as_str())
        {
            tracing::error!(cloudlet = %r.cloudlet, alert = %kind, "{msg}");
        }
        self.reschedule(&r.cloudlet, now);
        self.status_dirty = true;
    }

    /// The earliest instant a cloudlet that is not busy needs a look.
    fn next_due(&self) -> Option<Timestamp> {
        self.due
            .iter()
            .find(|(_, c)| !self.busy.contains(c))
            .map(|(t, _)| *t)
    }

    /// Publishes when something changed (at most every 200 ms), and at least every few seconds
    /// anyway so that `last_tick` (health) stays fresh; `defer` (a look is imminent) holds a
    /// publication back for up to [`PUBLISH_DEFER_MAX`].
    fn publish_if_due(&mut self, defer: bool) {
        let min_age = if defer {
            PUBLISH_DEFER_MAX
        } else {
            Duration::from_millis(200)
        };
        let due = match self.last_status.map(|t| t.elapsed()) {
            None => true,
            Some(age) => (self.status_dirty && age >= min_age) || age >= Duration::from_secs(5),
        };
        if due {
            self.publish_now();
        }
    }

    fn publish_now(&mut self) {
        let snapshot = self.build_status();
        self.status_line = self.status_line_of(&snapshot);
        self.status_tx.send_replace(Arc::new(snapshot));
        if self.plan_unpublished
            && let Some(tx) = &self.plan_tx
        {
            let spans: Vec<Arc<crate::plan::SpanJson>> =
                self.span_json.values().flatten().cloned().collect();
            tx.send_replace(Arc::new(spans));
            self.plan_unpublished = false;
        }
        self.status_dirty = false;
        self.last_status = Some(tokio::time::Instant::now());
    }

    /// One human line for `systemctl status` (sd_notify STATUS=).
    fn status_line_of(&self, s: &StatusSnapshot) -> String {
        let next = s.next_action.as_ref().and_then(|n| {
            let at = n.at.parse::<Timestamp>().ok()?;
            let zone = self
                .spans_of(&CloudletRef {
                    region: n.region.clone(),
                    cloudlet: n.cloudlet.clone(),
                })
                .iter()
                .find(|s| s.enter_at == at || s.end == at)
                .map_or(jiff::tz::TimeZone::UTC, |s| s.timezone.clone());
            let local = at.to_zoned(zone).strftime("%Y-%m-%d %H:%M %Z").to_string();
            Some(format!(", next: {} {} at {local}", n.action, n.cloudlet))
        });
        let alerts = if s.counts.alerts > 0 {
            format!(", {} alerts", s.counts.alerts)
        } else {
            String::new()
        };
        format!(
            "{} windows, {} in maintenance{alerts}{}",
            s.counts.windows,
            s.counts.in_maintenance,
            next.unwrap_or_default()
        )
    }

    /// The earliest enter/exit edge ahead: (cloudlet, "enter"/"exit", when).
    ///
    /// A cloudlet's spans are sorted and never overlap, and a span's `enter_at` is never before
    /// the previous span's end (the planner merges gaps shorter than a lead), so its edges are
    /// in order: its next edge is on its first span that has not ended.
    fn next_edge(&self, now: Timestamp) -> Option<(&CloudletRef, &'static str, Timestamp)> {
        self.plan
            .cloudlets
            .iter()
            .filter_map(|(c, spans)| {
                let s = spans.get(spans.partition_point(|s| s.end <= now))?;
                Some(if s.enter_at > now {
                    (c, "enter", s.enter_at)
                } else {
                    (c, "exit", s.end)
                })
            })
            .min_by_key(|(_, _, t)| *t)
    }

    /// The status snapshot as of now. Views are rebuilt only for cloudlets whose facts changed
    /// since the last build (a worker started or reported, a replan touched them) and for busy
    /// ones (their journal record moves while the worker runs); the others are shared.
    fn build_status(&mut self) -> StatusSnapshot {
        let now = self.ctx.clock.now();
        for c in &self.busy {
            if let Some(rt) = self.cloudlets.get_mut(c) {
                rt.view_dirty = true;
            }
        }
        let all = std::mem::take(&mut self.all_views_dirty);
        let stale: Vec<CloudletRef> = self
            .cloudlets
            .iter()
            .filter(|(_, rt)| all || rt.view_dirty || rt.view.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        if !stale.is_empty() {
            // Only what the views need from the journal, in one read.
            #[allow(clippy::type_complexity)]
            let records: Vec<(
                bool,
                Option<crate::journal::HandshakeKind>,
                Option<crate::journal::SpanId>,
            )> = self.ctx.journal.read(|j| {
                stale
                    .iter()
                    .map(|c| {
                        j.record(c).map_or((false, None, None), |r| {
                            (r.owned, r.in_flight.map(|f| f.kind), r.entered_for)
                        })
                    })
                    .collect()
            });
            let views: Vec<Arc<CloudletView>> = stale
                .iter()
                .zip(&records)
                .filter_map(|(c, record)| {
                    let rt = self.cloudlets.get(c)?;
                    Some(Arc::new(self.build_view(c, rt, record, now)))
                })
                .collect();
            for (c, view) in stale.iter().zip(views) {
                if let Some(rt) = self.cloudlets.get_mut(c) {
                    rt.view = Some(view);
                    rt.view_dirty = false;
                }
            }
        }

        let mut alerts = Vec::new();
        let mut counts = Counts {
            files: self.catalog.files.len(),
            files_invalid: self.catalog.count(FileStatus::Invalid),
            files_stale: self.catalog.count(FileStatus::Stale),
            windows: self.catalog.windows().count(),
            cloudlets: self.cloudlets.len(),
            entries_on_time: self.entries_on_time,
            entries_late: self.entries_late,
            ..Counts::default()
        };
        if let Some(c) = &self.corrupt_journal {
            alerts.push(AlertView {
                kind: "journal_corrupt".into(),
                region: None,
                cloudlet: None,
                message: format!(
                    "the journal was corrupt ({}); it was kept aside as {}; ownership of cloudlets in maintenance during a current span was assumed",
                    c.reason,
                    c.moved_to.display()
                ),
                since: self.started_at.to_string(),
            });
        }
        let mut views = Vec::with_capacity(self.cloudlets.len());
        for (c, rt) in &self.cloudlets {
            let Some(view) = &rt.view else { continue };
            counts.in_maintenance +=
                usize::from(view.observed.as_deref() == Some("UnderMaintenance"));
            counts.owned += usize::from(view.owned);
            counts.external += usize::from(view.external);
            counts.busy += usize::from(view.busy);
            if let Some((kind, msg, since)) = &rt.alert {
                alerts.push(AlertView {
                    kind: kind.clone(),
                    region: Some(c.region.clone()),
                    cloudlet: Some(c.cloudlet.clone()),
                    message: msg.clone(),
                    since: since.to_string(),
                });
            }
            views.push(Arc::clone(view));
        }
        counts.alerts = alerts.len();
        StatusSnapshot {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: self.started_at.to_string(),
            last_tick: now.to_string(),
            generation: self.generation,
            last_reload: self.last_reload.clone(),
            windows_dir: self.settings().windows_dir.display().to_string(),
            files: Arc::clone(&self.files_view),
            counts,
            alerts,
            cloudlets: views,
            next_action: self.next_edge(now).map(|(c, a, t)| NextAction {
                region: c.region.clone(),
                cloudlet: c.cloudlet.clone(),
                action: a.into(),
                at: t.to_string(),
            }),
            journal: status::JournalInfo {
                path: self.ctx.journal.path().display().to_string(),
                corrupt: self
                    .corrupt_journal
                    .as_ref()
                    .map(|c| format!("{} (moved to {})", c.reason, c.moved_to.display())),
            },
        }
    }

    /// One cloudlet's status view as of `now`; `record` is its journal record's (owned,
    /// in-flight kind, entered_for).
    fn build_view(
        &self,
        c: &CloudletRef,
        rt: &CloudletRt,
        record: &(
            bool,
            Option<crate::journal::HandshakeKind>,
            Option<crate::journal::SpanId>,
        ),
        now: Timestamp,
    ) -> CloudletView {
        let &(owned, in_flight, entered_for) = record;
        let spans = self.spans_of(c);
        let current = self.current_span_given(c, now, || entered_for);
        let next = spans
            .iter()
            .find(|s| s.enter_at > now && current.is_none_or(|cur| cur.start != s.start));
        let current_json = current.and_then(|s| self.span_json_of(c, s));
        let next_json = next.and_then(|s| self.span_json_of(c, s));
        let in_maint = rt
            .observed
            .as_ref()
            .is_some_and(|o| o.state == MaintenanceState::UnderMaintenance);
        let (next_action, next_action_at) = match (&current_json, &next_json) {
            (Some(s), _) => ("exit", Some(s.end.clone())),
            (None, Some(s)) => ("enter", Some(s.enter_at.clone())),
            (None, None) if owned => ("exit", Some(now.to_string())),
            (None, None) => ("none", None),
        };
        let lead_span = current.or(next);
        CloudletView {
            region: c.region.clone(),
            cloudlet: c.cloudlet.clone(),
            observed: rt.observed.as_ref().map(|o| o.state.to_string()),
            observed_at: rt.observed_at.clone(),
            update_error: rt.observed.as_ref().is_some_and(|o| o.update_error),
            desired: if current.is_some() {
                "maintenance".into()
            } else {
                "normal".into()
            },
            owned,
            external: in_maint && !owned,
            released_by_hand: matches!(
                rt.decision,
                Some(Decision::Idle {
                    why: IdleReason::ReleasedByHand
                })
            ),
            busy: self.busy.contains(c),
            in_flight: in_flight.map(|kind| kind.to_string()),
            decision: rt.decision.as_ref().map(decision_label),
            current_span: current_json,
            next_span: next_json,
            next_action: Some(next_action.to_string()),
            next_action_at,
            lead_seconds: lead_span.map(|s| s.lead.duration.as_secs()),
            lead_source: lead_span.map(|s| s.lead.source.to_string()),
            last_handshakes: rt.history.iter().rev().cloned().collect(),
            last_error: rt.last_error.clone(),
            late: current.is_some_and(|s| rt.late_span == Some(s.start)),
            alert: rt.alert.as_ref().map(|a| a.1.clone()),
        }
    }
}

/// The JSON form of one cloudlet's spans.
fn spans_json(spans: &[Span]) -> Vec<Arc<crate::plan::SpanJson>> {
    spans.iter().map(|s| Arc::new(s.to_json())).collect()
}

/// The status form of one window file.
fn file_view(f: &crate::windows::FileReport) -> FileView {
    FileView {
        path: f.path.display().to_string(),
        status: match f.status {
            FileStatus::Ok => "ok",
            FileStatus::Invalid => "invalid",
            FileStatus::Stale => "stale",
        }
        .into(),
        stale: f.status == FileStatus::Stale,
        windows: f.windows.iter().map(|w| w.id.clone()).collect(),
        errors: f.errors.iter().map(|e| e.to_string()).collect(),
        warnings: f.warnings.iter().map(|e| e.to_string()).collect(),
    }
}

fn decision_label(d: &Decision) -> String {
    match d {
        Decision::Idle { why } => format!("idle ({})", why.as_str()),
        Decision::Enter { late: true, .. } => "enter (late)".into(),
        Decision::Enter { .. } => "enter".into(),
        Decision::Exit => "exit".into(),
        Decision::Recover { .. } => "recover".into(),
        Decision::Wait => "wait".into(),
        Decision::StuckNotOurs => "stuck (not ours)".into(),
    }
}

#[cfg(test)]
mod tests {
    /// The size of the future an `async fn` of three owned arguments returns, without calling it.
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_worker_waiting_for_a_permit_is_small() {
        // A large fleet's first looks spawn one worker per cloudlet, most of them waiting for
        // a read permit: at 10,000 cloudlets every kilobyte of worker future is 10 MB.
        let bytes =
            future_size(super::worker::run::<crate::controller::McClient, super::SystemClock>);
        assert!(bytes <= 2048, "the worker future is {bytes} bytes");
    }
}
