//! The driver: builds a seed's world, runs the daemon in it, injects events and steps time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudlet_maintd::engine::{
    self, Clock, EngineCommand, EngineError, EngineHandle, EngineParts, EngineSettings,
    NoLifecycle, SimulationHooks, StatusSnapshot, VirtualClock,
};
use cloudlet_maintd::journal::{JOURNAL_FILE, JournalHandle, JournalStore, read_journal};
use cloudlet_maintd::plan::CloudletRef;
use jiff::{SignedDuration, Timestamp};
use mc_sim::{InProcess, KnobsPatch, Latency, MaintenanceState as M, Selector, TrackedState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::adapter::{self, Recorder, SimController};
use super::oracle::Oracle;
use super::setup::{self, CloudletDef, FileDef, PERSON};
use super::{SeedReport, Violation};

/// Who started the current maintenance episode of a cloudlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Daemon,
    Person,
}

/// Something a person (or operator) did, recorded when it happened.
#[derive(Debug, Clone)]
pub struct PersonEvent {
    pub at: Timestamp,
    pub cloudlet: CloudletRef,
    pub what: PersonAct,
}

#[derive(Debug, Clone)]
pub enum PersonAct {
    /// The controller started the person's UpdateCloudlet (first stream line, or the answer of
    /// a NormalOperation request).
    Accepted(M),
    Ended {
        requested: M,
        ok: bool,
    },
    SetState(M),
}

/// A running daemon ("process").
pub struct Daemon {
    pub handle: EngineHandle,
    join: JoinHandle<Result<(), EngineError>>,
    kill: CancellationToken,
    shutdown: CancellationToken,
    writer_stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Something scheduled for a later step.
#[derive(Debug, Clone)]
pub enum Action {
    EndFault(usize),
    PersonExit(CloudletRef),
    PersonFixStuck(CloudletRef),
    Restart,
    WriteFile { name: String, content: String },
    OperatorCrmRestart(CloudletRef),
    OperatorNormal(CloudletRef),
}

/// A knob fault in force.
#[derive(Debug, Clone)]
pub struct ActiveFault {
    pub kind: &'static str,
    pub targets: Vec<CloudletRef>,
    pub ended: bool,
}

/// The whole state of one run.
pub struct Run {
    pub seed: u64,
    pub days: u32,
    pub verbose: bool,
    pub rng: StdRng,
    pub origin: Timestamp,
    pub base: tokio::time::Instant,
    pub clock: Arc<VirtualClock>,
    _tmp: tempfile::TempDir,
    pub windows_dir: PathBuf,
    pub state_dir: PathBuf,
    pub cloudlets: Vec<CloudletDef>,
    pub crefs: Vec<CloudletRef>,
    /// File name → its valid definition (None: broken or removed; see `file_text`).
    pub files: BTreeMap<String, Option<FileDef>>,
    pub next_window: usize,
    pub sim: InProcess,
    pub person: InProcess,
    pub rec: Arc<Mutex<Recorder>>,
    pub adapter: Arc<SimController>,
    pub settings: EngineSettings,
    pub daemon: Option<Daemon>,
    /// Last crash, restart or start of the daemon.
    pub disturbed_at: Timestamp,
    pub oracle: Oracle,
    pub original_crm: BTreeMap<CloudletRef, Latency>,
    pub faults: Vec<ActiveFault>,
    pub pending: BTreeMap<u64, Vec<Action>>,
    pub person_log: Arc<Mutex<Vec<PersonEvent>>>,
    pub persons_seen: usize,
    /// Latest maintenance initiation per cloudlet.
    pub last_init: BTreeMap<CloudletRef, (Timestamp, Holder)>,
    /// Requests already taken into account as initiations.
    pub inits_seen: BTreeSet<usize>,
    /// Requests below this index are final and checked.
    pub requests_checked: usize,
    pub reads_seen: usize,
    pub errors_seen: usize,
    pub transitions_seen: usize,
    /// Current stored state per cloudlet and since when.
    pub state_since: BTreeMap<CloudletRef, (M, Timestamp)>,
    /// Last moment a fault, a person or a controller timeout touched each cloudlet.
    pub fault_last: BTreeMap<CloudletRef, Timestamp>,
    /// Cloudlets whose ownership was lost with a corrupt journal.
    pub orphaned: BTreeSet<CloudletRef>,
    pub kills: Vec<Timestamp>,
    /// Planned enter instants from the daemon's status: (cloudlet, span start) → enter_at.
    pub planned_enter: BTreeMap<(CloudletRef, Timestamp), Timestamp>,
    /// The same as shown (RFC 3339 strings), to parse each only once.
    pub planned_raw: BTreeMap<(CloudletRef, String), String>,
    /// Span starts the daemon missed, waiting to see whether it enters later: → (start, end,
    /// reason).
    pub pending_late: BTreeMap<CloudletRef, (Timestamp, Timestamp, &'static str)>,
    /// Daemon-held cloudlets no longer wanted: since when (for the restore delay).
    pub unwanted_since: BTreeMap<CloudletRef, Timestamp>,
    pub expect_corrupt: Option<Vec<u8>>,
    /// Valid definitions of files currently broken by an edit.
    pub broken_originals: BTreeMap<String, FileDef>,
    /// Daemon requests per cloudlet (ids), reads per cloudlet: indexes for the checks.
    pub requests_of: BTreeMap<CloudletRef, Vec<usize>>,
    pub reads_of:
        BTreeMap<CloudletRef, Vec<(Timestamp, cloudlet_maintd::controller::MaintenanceState)>>,
    pub requests_indexed: usize,
    pub requests_traced: usize,
    pub last_read_traced: BTreeMap<CloudletRef, cloudlet_maintd::controller::MaintenanceState>,
    /// The simulator's cloudlets as of the last observation (scenario order = `crefs` order).
    pub snaps: Vec<mc_sim::CloudletSnapshot>,
    pub check_corrupt_alert: bool,
    /// Alerts an operator already reacted to: (kind, cloudlet, since).
    pub operator_pending: BTreeSet<(String, String, String)>,
    pub alerts_seen: BTreeSet<(String, String, String)>,
    pub trace: Vec<(Timestamp, Option<CloudletRef>, String)>,
    pub status: Arc<StatusSnapshot>,
    pub report: SeedReport,
    pub bound: SignedDuration,
    pub quiet_from_step: u64,
    pub total_steps: u64,
}

pub type Outcome<T> = Result<T, Box<Violation>>;

fn patch() -> KnobsPatch {
    KnobsPatch::default()
}

impl Run {
    pub async fn execute(seed: u64, days: u32, verbose: bool) -> Outcome<SeedReport> {
        let mut rng = StdRng::seed_from_u64(seed);
        let world = setup::world(&mut rng, days);
        let mut run = Run::new(seed, days, verbose, rng, world, true);
        run.start_daemon()?;
        run.main_loop().await?;
        run.finish().await?;
        Ok(run.report.clone())
    }

    /// A hand-made world, with the properties checked but nothing injected (for scenario
    /// tests). Also returns every request the daemon sent.
    pub async fn execute_world(
        seed: u64,
        days: u32,
        world: setup::World,
    ) -> Outcome<(SeedReport, Vec<adapter::RequestEntry>)> {
        let rng = StdRng::seed_from_u64(seed);
        let mut run = Run::new(seed, days, false, rng, world, false);
        run.start_daemon()?;
        run.main_loop().await?;
        run.finish().await?;
        let requests = adapter::lock(&run.rec).requests.clone();
        Ok((run.report.clone(), requests))
    }

    fn new(
        seed: u64,
        days: u32,
        verbose: bool,
        rng: StdRng,
        world: setup::World,
        inject: bool,
    ) -> Run {
        let t = world.scenario.maintenance_timeout.0;
        let base = tokio::time::Instant::now();
        let clock = Arc::new(VirtualClock::new(world.origin));
        // Prefer a RAM file system: the journal fsyncs on every change.
        let tmp = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("maintd-sim-")
                .tempdir_in("/dev/shm")
                .or_else(|_| tempfile::tempdir())
        } else {
            tempfile::tempdir()
        }
        .expect("temp dir");
        let windows_dir = tmp.path().join("windows.d");
        let state_dir = tmp.path().join("state");
        std::fs::create_dir_all(&windows_dir).expect("windows.d");
        let mut files = BTreeMap::new();
        for f in &world.files {
            std::fs::write(windows_dir.join(&f.name), f.to_toml()).expect("write window file");
            files.insert(f.name.clone(), Some(f.clone()));
        }
        let sim = InProcess::new(world.scenario.clone()).expect("scenario");
        let person = sim.acting_as(PERSON);
        let cfg = setup::config(&windows_dir, &state_dir, t);
        let mut settings = EngineSettings::from_config(&cfg);
        settings.jitter_seed = seed;
        let (adapter, rec) = SimController::new(
            sim.clone(),
            Arc::clone(&clock),
            state_dir.clone(),
            seed ^ 0x005e_ed0f_da7a,
            setup::MAX_CONCURRENT,
            setup::MAX_PER_ORG,
        );
        let crefs: Vec<CloudletRef> = world.cloudlets.iter().map(CloudletDef::cref).collect();
        let original_crm = world
            .scenario
            .cloudlets
            .iter()
            .zip(&crefs)
            .filter_map(|(s, c)| s.crm_latency.clone().map(|l| (c.clone(), l)))
            .collect();
        let total_steps = u64::from(days) * 1440;
        let tail = (total_steps / 4).min(12 * 60);
        let range = (
            world.origin - SignedDuration::from_hours(48),
            world.origin + SignedDuration::from_hours(24 * (i64::from(days) + 2)),
        );
        let n = world.cloudlets.len();
        // Restore bound: both waits of a handshake, the stuck threshold, a retry, a verify
        // period, and the queue behind the global cap if every cloudlet acts at once.
        let t = SignedDuration::try_from(t).expect("T");
        let bound = t * 2
            + SignedDuration::from_mins(11)
            + SignedDuration::from_mins(2)
            + SignedDuration::from_mins(5)
            + t * i32::try_from(n.div_ceil(setup::MAX_CONCURRENT)).expect("small");
        let mut last_init = BTreeMap::new();
        let mut state_since = BTreeMap::new();
        for c in &crefs {
            state_since.insert(c.clone(), (M::NormalOperation, world.origin));
        }
        for &i in world.initially_manual.iter().chain(&world.initially_stuck) {
            last_init.insert(crefs[i].clone(), (world.origin, Holder::Person));
            let s = if world.initially_manual.contains(&i) {
                M::UnderMaintenance
            } else {
                M::CrmRequested
            };
            state_since.insert(crefs[i].clone(), (s, world.origin));
        }
        let report = SeedReport {
            seed,
            days,
            origin: world.origin.to_string(),
            cloudlets: world.cloudlets.len(),
            windows: world.files.iter().map(|f| f.windows.len()).sum(),
            ..SeedReport::default()
        };
        let next_window = report.windows + 1;
        let mut run = Run {
            seed,
            days,
            verbose,
            rng,
            origin: world.origin,
            base,
            clock,
            _tmp: tmp,
            windows_dir,
            state_dir,
            cloudlets: world.cloudlets.clone(),
            crefs,
            files,
            next_window,
            sim,
            person,
            rec,
            adapter: Arc::new(adapter),
            settings,
            daemon: None,
            disturbed_at: world.origin,
            oracle: Oracle::new(range, setup::LEAD_MAX),
            original_crm,
            faults: Vec::new(),
            pending: BTreeMap::new(),
            person_log: Arc::new(Mutex::new(Vec::new())),
            persons_seen: 0,
            last_init,
            inits_seen: BTreeSet::new(),
            requests_checked: 0,
            reads_seen: 0,
            errors_seen: 0,
            transitions_seen: 0,
            state_since,
            fault_last: BTreeMap::new(),
            orphaned: BTreeSet::new(),
            kills: Vec::new(),
            planned_enter: BTreeMap::new(),
            planned_raw: BTreeMap::new(),
            pending_late: BTreeMap::new(),
            unwanted_since: BTreeMap::new(),
            expect_corrupt: None,
            broken_originals: BTreeMap::new(),
            requests_of: BTreeMap::new(),
            reads_of: BTreeMap::new(),
            requests_indexed: 0,
            requests_traced: 0,
            last_read_traced: BTreeMap::new(),
            snaps: Vec::new(),
            check_corrupt_alert: false,
            operator_pending: BTreeSet::new(),
            alerts_seen: BTreeSet::new(),
            trace: Vec::new(),
            status: Arc::new(StatusSnapshot::default()),
            report,
            bound,
            quiet_from_step: if inject { total_steps - tail } else { 0 },
            total_steps,
        };
        for f in &world.files {
            let text = f.to_toml();
            run.trace(
                None,
                format!("window file {}:\n{}", f.name, text.trim_end()),
            );
        }
        for &i in &world.initially_manual {
            let c = run.crefs[i].clone();
            run.trace(Some(&c), "starts UnderMaintenance (a person's)".into());
        }
        for &i in &world.initially_stuck {
            let c = run.crefs[i].clone();
            run.trace(Some(&c), "starts stuck in CrmRequested/UpdateError".into());
        }
        run
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Converts a tokio instant of the simulator's history to simulated wall time.
    pub fn wall(&self, at: tokio::time::Instant) -> Timestamp {
        let d = at.saturating_duration_since(self.base);
        self.origin + SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO)
    }

    pub fn trace(&mut self, c: Option<&CloudletRef>, msg: String) {
        let now = self.now();
        if self.verbose && std::env::var_os("SIM_TRACE").is_some() {
            println!(
                "{now} {}{msg}",
                c.map(|c| format!("{c}: ")).unwrap_or_default()
            );
        }
        self.trace.push((now, c.cloned(), msg));
    }

    /// The recent history of `c` (and of the daemon) for a violation report.
    pub fn excerpt(&self, c: Option<&CloudletRef>) -> Vec<String> {
        let lines: Vec<String> = self
            .trace
            .iter()
            .filter(|(_, tc, m)| match (c, tc) {
                (Some(c), Some(tc)) => c == tc,
                (_, None) => !m.starts_with("window file"),
                (None, Some(_)) => true,
            })
            .map(|(t, tc, m)| {
                // Multi-line entries (window files) are shortened; SIM_TRACE=1 shows them.
                let mut lines = m.lines();
                let first = lines.next().unwrap_or_default();
                let more = lines.count();
                format!(
                    "{t} {}{first}{}",
                    tc.as_ref().map(|c| format!("{c}: ")).unwrap_or_default(),
                    if more > 0 {
                        format!(" (+{more} lines)")
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        let skip = lines.len().saturating_sub(60);
        lines.into_iter().skip(skip).collect()
    }

    pub fn violation(
        &self,
        property: &'static str,
        c: Option<&CloudletRef>,
        message: String,
    ) -> Box<Violation> {
        Box::new(Violation {
            seed: self.seed,
            days: self.days,
            at: self.now(),
            property,
            message,
            excerpt: self.excerpt(c),
        })
    }

    pub fn count(&mut self, kind: &'static str) {
        *self.report.faults.entry(kind).or_default() += 1;
    }

    pub fn snapshot(&self, c: &CloudletRef) -> mc_sim::CloudletSnapshot {
        let (org, name) = c.cloudlet.split_once('/').expect("org/name");
        self.sim
            .cloudlet(&c.region, org, name)
            .expect("known cloudlet")
    }

    pub fn touch(&mut self, c: &CloudletRef) {
        let now = self.now();
        self.fault_last.insert(c.clone(), now);
    }

    // -----------------------------------------------------------------------------------------
    // The daemon's life.

    pub fn start_daemon(&mut self) -> Outcome<()> {
        let now = self.now();
        let (store, journal, corrupt) = match JournalStore::open(&self.state_dir) {
            Ok(x) => x,
            Err(e) => {
                return Err(self.violation(
                    "P5 (journal readable after a crash)",
                    None,
                    format!("the state directory cannot be opened: {e}"),
                ));
            }
        };
        if let Some(c) = &corrupt {
            self.trace(
                None,
                format!("daemon found a corrupt journal: {}", c.reason),
            );
        }
        // Property 5: a journal corrupted on purpose is detected and kept aside intact; an
        // intact one is never taken for corrupt.
        match (&self.expect_corrupt, &corrupt) {
            (Some(bytes), Some(c)) => {
                let kept = std::fs::read(&c.moved_to).unwrap_or_default();
                if &kept != bytes {
                    return Err(self.violation(
                        "P5 (corrupt journal kept aside)",
                        None,
                        format!(
                            "the corrupt journal moved to {} does not hold the corrupt bytes",
                            c.moved_to.display()
                        ),
                    ));
                }
                self.check_corrupt_alert = true;
            }
            (Some(_), None) => {
                return Err(self.violation(
                    "P5 (corruption detected)",
                    None,
                    "a corrupted journal was opened without being reported".into(),
                ));
            }
            (None, Some(c)) => {
                return Err(self.violation(
                    "P5 (journal readable after a crash)",
                    None,
                    format!("the journal left by the last run is corrupt: {}", c.reason),
                ));
            }
            (None, None) => {}
        }
        self.expect_corrupt = None;
        let journal = JournalHandle::spawn_inline(store, journal);
        let writer_stopped = Box::pin(journal.writer_stopped());
        let kill = CancellationToken::new();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let parts = EngineParts {
            controller: Arc::clone(&self.adapter),
            clock: Arc::clone(&self.clock),
            journal,
            corrupt_journal: corrupt,
            settings: self.settings.clone(),
            lifecycle: Arc::new(NoLifecycle),
        };
        let (handle, join) = engine::spawn_with_hooks(
            parts,
            engine::command_channel(),
            shutdown.clone(),
            &tracker,
            SimulationHooks {
                kill: kill.clone(),
                inline_io: true,
            },
        );
        tracker.close();
        self.daemon = Some(Daemon {
            handle,
            join,
            kill,
            shutdown,
            writer_stopped,
        });
        self.disturbed_at = now;
        self.oracle.started(&self.windows_dir, now);
        self.trace(None, "daemon started".into());
        Ok(())
    }

    fn add_engine_counts(&mut self) {
        self.report.engine_on_time += self.status.counts.entries_on_time;
        self.report.engine_late += self.status.counts.entries_late;
    }

    /// Stops the daemon as a crash would (`clean: false`) or with SIGTERM.
    pub async fn stop_daemon(&mut self, clean: bool) -> Outcome<()> {
        let Some(d) = self.daemon.take() else {
            return Ok(());
        };
        let status = d.handle.status.clone();
        if clean {
            d.shutdown.cancel();
        } else {
            d.kill.cancel();
            self.kills.push(self.now());
        }
        let result = d.join.await;
        d.writer_stopped.await;
        // What this instance last published (at its shutdown, for a clean stop).
        self.status = status.borrow().clone();
        self.add_engine_counts();
        // An instance started from a corrupt journal and stopped before the next check: its
        // own last status must have said so (if it published one at all).
        if std::mem::take(&mut self.check_corrupt_alert)
            && !self.status.started_at.is_empty()
            && !self.status_shows_alert("journal_corrupt")
        {
            return Err(self.violation(
                "P5 (corrupt journal reported)",
                None,
                "the daemon started from a corrupt journal but its status shows no journal_corrupt alert".into(),
            ));
        }
        let now = self.now();
        self.disturbed_at = now;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(self.violation(
                    "P5 (journal flushed at shutdown)",
                    None,
                    format!("the engine stopped with an error: {e}"),
                ));
            }
            Err(e) => panic!("engine task panicked: {e}"),
        }
        // Property 5: whatever the moment of the crash, the journal on disk is readable.
        if let Err(e) = read_journal(&self.state_dir) {
            return Err(self.violation(
                "P5 (journal readable after a crash)",
                None,
                format!("after the daemon stopped, the journal is unreadable: {e}"),
            ));
        }
        self.trace(
            None,
            if clean {
                "daemon stopped (SIGTERM)".into()
            } else {
                "daemon CRASHED".into()
            },
        );
        Ok(())
    }

    async fn reload(&mut self, why: &str) {
        let now = self.now();
        if let Some(d) = &self.daemon {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let sent = d
                .handle
                .commands
                .send(EngineCommand::Reload {
                    trigger: why.to_string(),
                    reply: Some(tx),
                })
                .await;
            if sent.is_ok() {
                let _ = rx.await;
                self.oracle.reloaded(&self.windows_dir, now);
            }
        }
        self.count("reloads");
    }

    // -----------------------------------------------------------------------------------------
    // The loop.

    async fn main_loop(&mut self) -> Outcome<()> {
        for step in 0..self.total_steps {
            self.run_pending(step).await?;
            if step == self.quiet_from_step {
                self.quiet_down().await?;
            }
            if step < self.quiet_from_step {
                self.inject(step).await?;
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            self.observe();
            self.check()?;
        }
        Ok(())
    }

    async fn finish(&mut self) -> Outcome<()> {
        self.final_check()?;
        self.stop_daemon(true).await?;
        let r = adapter::lock(&self.rec);
        let handshakes = r.requests.len() as u64;
        let ok = r
            .requests
            .iter()
            .filter(|e| matches!(e.outcome, Some(Ok(()))))
            .count() as u64;
        let shows = r.shows;
        let max_global = r.max_global;
        let max_org = r.max_per_org.values().copied().max().unwrap_or(0);
        drop(r);
        self.report.handshakes = handshakes;
        self.report.handshakes_ok = ok;
        self.report.shows = shows;
        self.report.max_global = max_global;
        self.report.max_per_org = max_org;
        self.report.fingerprint = self.fingerprint();
        for (kind, _, _) in &self.alerts_seen {
            *self.report.alerts.entry(kind.clone()).or_default() += 1;
        }
        self.sim.shutdown();
        Ok(())
    }

    /// FNV-1a over the daemon's requests and the controller's transitions.
    fn fingerprint(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |s: String| {
            for b in s.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
            }
        };
        for e in &adapter::lock(&self.rec).requests {
            eat(format!(
                "{} {} {} {:?} {:?}",
                e.sent_at,
                e.cloudlet,
                e.target,
                e.ended_at,
                e.outcome.as_ref().map(|o| o.as_ref().map_err(|e| e.kind()))
            ));
        }
        for t in self.sim.transitions_since(0) {
            eat(format!(
                "{} {}/{}/{} {} {} {}",
                self.wall(t.at),
                t.region,
                t.organization,
                t.name,
                t.from,
                t.to,
                t.actor.name()
            ));
        }
        h
    }

    fn schedule(&mut self, step: u64, action: Action) {
        self.pending.entry(step).or_default().push(action);
    }

    /// The daemon's last status shows an alert of this kind.
    pub fn status_shows_alert(&self, kind: &str) -> bool {
        self.status.alerts.iter().any(|a| a.kind == kind)
    }

    /// The cloudlets whose simulator snapshot satisfies `keep`, in their usual order.
    fn cloudlets_where(
        &self,
        keep: impl Fn(&CloudletRef, &mc_sim::CloudletSnapshot) -> bool,
    ) -> Vec<CloudletRef> {
        self.crefs
            .iter()
            .filter(|c| keep(c, &self.snapshot(c)))
            .cloned()
            .collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            None
        } else {
            Some(&items[self.rng.random_range(0..items.len())])
        }
    }

    fn has_fault(&self, kind: &str, c: &CloudletRef) -> bool {
        self.faults
            .iter()
            .any(|f| !f.ended && f.kind == kind && f.targets.contains(c))
    }

    fn selector(c: &CloudletRef) -> Selector {
        let (org, name) = c.cloudlet.split_once('/').expect("org/name");
        Selector::one(&c.region, org, name)
    }

    fn start_fault(
        &mut self,
        kind: &'static str,
        targets: Vec<CloudletRef>,
        p: &KnobsPatch,
    ) -> usize {
        for c in &targets {
            self.sim.set_knobs(&Run::selector(c), p).expect("set knobs");
        }
        let id = self.faults.len();
        let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
        for c in &targets {
            self.touch(c);
        }
        self.trace(
            if targets.len() == 1 {
                Some(&targets[0])
            } else {
                None
            },
            format!("FAULT {kind} on {} ({p:?})", names.join(", ")),
        );
        for c in targets.iter().filter(|_| targets.len() > 1) {
            self.trace(Some(c), format!("FAULT {kind} (shared)"));
        }
        self.faults.push(ActiveFault {
            kind,
            targets,
            ended: false,
        });
        self.count(kind);
        id
    }

    fn end_fault(&mut self, id: usize) {
        let Some(f) = self.faults.get(id).cloned() else {
            return;
        };
        if f.ended {
            return;
        }
        for c in &f.targets {
            let p = match f.kind {
                "5xx" => KnobsPatch {
                    error_5xx_rate: Some(0.0),
                    ..patch()
                },
                "dropped_streams" => KnobsPatch {
                    drop_after_first_line: Some(false),
                    ..patch()
                },
                "autoprov_error" => KnobsPatch {
                    autoprov_error: Some(false),
                    ..patch()
                },
                "autoprov_no_reply" => KnobsPatch {
                    autoprov_no_reply: Some(false),
                    ..patch()
                },
                "crm_no_ack" => KnobsPatch {
                    crm_no_ack: Some(false),
                    ..patch()
                },
                "slow_crm" => KnobsPatch {
                    crm_latency: self.original_crm.get(c).cloned(),
                    ..patch()
                },
                _ => patch(),
            };
            self.sim.set_knobs(&Run::selector(c), &p).expect("knobs");
            self.touch(c);
            self.trace(Some(c), format!("fault {} over", f.kind));
        }
        self.faults[id].ended = true;
    }

    async fn run_pending(&mut self, step: u64) -> Outcome<()> {
        let Some(actions) = self.pending.remove(&step) else {
            return Ok(());
        };
        for a in actions {
            match a {
                Action::EndFault(id) => self.end_fault(id),
                Action::Restart => {
                    if self.daemon.is_none() {
                        self.start_daemon()?;
                    }
                }
                Action::PersonExit(c) => {
                    let s = self.snapshot(&c);
                    let ours = self
                        .last_init
                        .get(&c)
                        .is_some_and(|(_, h)| *h == Holder::Person);
                    if ours && s.maintenance_state == M::UnderMaintenance && !s.busy {
                        if self.rng.random_bool(0.5) {
                            self.person_set_state(&c, M::NormalOperation);
                        } else {
                            self.person_update(&c, M::NormalOperation);
                        }
                    }
                }
                Action::PersonFixStuck(c) | Action::OperatorNormal(c) => {
                    let s = self.snapshot(&c);
                    if !s.busy && s.maintenance_state != M::NormalOperation {
                        self.person_update(&c, M::NormalOperation);
                    }
                }
                Action::OperatorCrmRestart(c) => {
                    // A repair, not a fault: it does not restart the P2/P7 clocks.
                    self.sim
                        .crm_restart(&Run::selector(&c))
                        .expect("crm restart");
                    self.count("operator_crm_restarts");
                    self.trace(Some(&c), "operator restarts the CRM (alert)".into());
                }
                Action::WriteFile { name, content } => {
                    std::fs::write(self.windows_dir.join(&name), &content).expect("write");
                    // Only valid content is written back this way (the fix of a broken file).
                    let def = self.broken_originals.remove(&name);
                    self.files.insert(name.clone(), def);
                    self.trace(None, format!("file {name} fixed"));
                    self.reload("file fixed").await;
                }
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Persons.

    pub fn person_update(&mut self, c: &CloudletRef, requested: M) {
        let person = self.person.clone();
        let log = Arc::clone(&self.person_log);
        let clock = Arc::clone(&self.clock);
        let cref = c.clone();
        self.count(match requested {
            M::NormalOperation => "person_exit_requests",
            _ => "person_enter_requests",
        });
        self.touch(c);
        self.trace(Some(c), format!("person sends {requested}"));
        tokio::spawn(async move {
            let (org, name) = cref.cloudlet.split_once('/').expect("org/name");
            let mut accepted = false;
            let push = |what: PersonAct| {
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(PersonEvent {
                        at: clock.now(),
                        cloudlet: cref.clone(),
                        what,
                    });
            };
            let result = person
                .update(&cref.region, org, name, requested, |_: &str| {
                    if !accepted {
                        accepted = true;
                        push(PersonAct::Accepted(requested));
                    }
                })
                .await;
            push(PersonAct::Ended {
                requested,
                ok: result.is_ok(),
            });
        });
    }

    pub fn person_set_state(&mut self, c: &CloudletRef, state: M) -> bool {
        let (org, name) = c.cloudlet.split_once('/').expect("org/name");
        let tracked = if state.is_stored_on_cloudlet()
            && !matches!(state, M::NormalOperation | M::UnderMaintenance)
        {
            Some(TrackedState::UpdateError)
        } else {
            Some(TrackedState::Ready)
        };
        match self.sim.set_state(&c.region, org, name, state, tracked) {
            Ok(()) => {
                let now = self.now();
                self.person_log
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(PersonEvent {
                        at: now,
                        cloudlet: c.clone(),
                        what: PersonAct::SetState(state),
                    });
                self.touch(c);
                self.trace(Some(c), format!("person sets {state} by hand"));
                true
            }
            Err(e) => {
                self.trace(Some(c), format!("person cannot set {state}: {e}"));
                false
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Injection.

    fn chance(&mut self, per_day: f64) -> bool {
        self.rng.random_bool((per_day / 1440.0).min(1.0))
    }

    fn minutes(&mut self, lo: u64, hi: u64) -> u64 {
        self.rng.random_range(lo..=hi)
    }

    async fn inject(&mut self, step: u64) -> Outcome<()> {
        // Faults of the controller.
        if self.chance(2.0) {
            let scope: f64 = self.rng.random();
            let targets: Vec<CloudletRef> = if scope < 0.3 {
                self.crefs.clone()
            } else if scope < 0.7 {
                let org = self.cloudlets[self.rng.random_range(0..self.cloudlets.len())]
                    .org
                    .clone();
                self.cloudlets
                    .iter()
                    .filter(|c| c.org == org)
                    .map(CloudletDef::cref)
                    .collect()
            } else {
                vec![self.crefs[self.rng.random_range(0..self.crefs.len())].clone()]
            };
            let targets: Vec<CloudletRef> = targets
                .into_iter()
                .filter(|c| !self.has_fault("5xx", c))
                .collect();
            if !targets.is_empty() {
                let rate = self.rng.random_range(0.2..0.9);
                let id = self.start_fault(
                    "5xx",
                    targets,
                    &KnobsPatch {
                        error_5xx_rate: Some(rate),
                        ..patch()
                    },
                );
                let d = self.minutes(5, 60);
                self.schedule(step + d, Action::EndFault(id));
            }
        }
        type Knob = (&'static str, f64, u64, u64);
        let single: [Knob; 5] = [
            ("dropped_streams", 2.0, 30, 360),
            ("autoprov_error", 1.0, 30, 240),
            ("autoprov_no_reply", 0.5, 30, 180),
            ("crm_no_ack", 0.5, 10, 120),
            ("slow_crm", 0.5, 30, 180),
        ];
        for (kind, per_day, lo, hi) in single {
            if !self.chance(per_day) {
                continue;
            }
            let c = self.crefs[self.rng.random_range(0..self.crefs.len())].clone();
            if self.has_fault(kind, &c) {
                continue;
            }
            let p = match kind {
                "dropped_streams" => KnobsPatch {
                    drop_after_first_line: Some(true),
                    ..patch()
                },
                "autoprov_error" => KnobsPatch {
                    autoprov_error: Some(true),
                    ..patch()
                },
                "autoprov_no_reply" => KnobsPatch {
                    autoprov_no_reply: Some(true),
                    ..patch()
                },
                "crm_no_ack" => KnobsPatch {
                    crm_no_ack: Some(true),
                    ..patch()
                },
                _ => KnobsPatch {
                    crm_latency: Some(Latency::Lognormal {
                        median: mc_sim::HumanDuration(Duration::from_secs(360)),
                        sigma: 0.3,
                    }),
                    ..patch()
                },
            };
            let id = self.start_fault(kind, vec![c], &p);
            let d = self.minutes(lo, hi);
            self.schedule(step + d, Action::EndFault(id));
        }
        // A CRM restart by an operator, unprompted.
        if self.chance(1.0) {
            let stuck: Vec<CloudletRef> = self
                .crefs
                .iter()
                .filter(|c| self.snapshot(c).crm_stuck)
                .cloned()
                .collect();
            if let Some(c) = self.pick(&stuck).cloned() {
                self.sim
                    .crm_restart(&Run::selector(&c))
                    .expect("crm restart");
                self.count("crm_restarts");
                self.trace(Some(&c), "operator restarts the CRM".into());
            }
        }

        // People.
        if self.chance(2.0) {
            let idle =
                self.cloudlets_where(|_, s| s.maintenance_state == M::NormalOperation && !s.busy);
            if let Some(c) = self.pick(&idle).cloned() {
                let by_hand = self.rng.random_bool(0.4);
                if by_hand {
                    self.person_set_state(&c, M::UnderMaintenance);
                } else {
                    let req = if self.rng.random_bool(0.5) {
                        M::MaintenanceStart
                    } else {
                        M::MaintenanceStartNoFailover
                    };
                    self.person_update(&c, req);
                }
                self.count("person_enters");
                let d = self.minutes(60, 600);
                self.schedule(step + d, Action::PersonExit(c));
            }
        }
        if self.chance(0.7) {
            // A person ends a maintenance the daemon started, during its window.
            let held = self.cloudlets_where(|c, s| {
                s.maintenance_state == M::UnderMaintenance
                    && !s.busy
                    && self
                        .last_init
                        .get(c)
                        .is_some_and(|(_, h)| *h == Holder::Daemon)
            });
            if let Some(c) = self.pick(&held).cloned() {
                self.count("person_releases");
                if self.rng.random_bool(0.5) {
                    self.person_set_state(&c, M::NormalOperation);
                } else {
                    self.person_update(&c, M::NormalOperation);
                }
            }
        }
        if self.chance(0.2) {
            let idle =
                self.cloudlets_where(|_, s| s.maintenance_state == M::NormalOperation && !s.busy);
            if let Some(c) = self.pick(&idle).cloned() {
                let state = if self.rng.random_bool(0.5) {
                    M::CrmRequested
                } else {
                    M::FailoverRequested
                };
                if self.person_set_state(&c, state) {
                    self.count("person_stuck");
                    let d = self.minutes(120, 720);
                    self.schedule(step + d, Action::PersonFixStuck(c));
                }
            }
        }

        // The daemon.
        if self.daemon.is_some() && self.chance(0.5) {
            self.stop_daemon(false).await?;
            self.count("crashes");
            if self.rng.random_bool(0.15) {
                self.corrupt_journal();
            }
            let down = self.minutes(1, 30);
            self.schedule(step + down, Action::Restart);
        } else if self.daemon.is_some() && self.chance(0.3) {
            self.stop_daemon(true).await?;
            self.count("clean_restarts");
            let down = self.minutes(1, 3);
            self.schedule(step + down, Action::Restart);
        }

        // windows.d.
        if self.chance(1.5) {
            self.edit_files(step).await;
        }
        Ok(())
    }

    fn corrupt_journal(&mut self) {
        let path = self.state_dir.join(JOURNAL_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        if bytes.len() < 10 {
            return;
        }
        let mut bad = bytes.clone();
        if self.rng.random_bool(0.5) {
            let cut = self.rng.random_range(1..bad.len() - 1);
            bad.truncate(cut);
        } else {
            let at = self.rng.random_range(bad.len() / 2..bad.len() - 1);
            bad[at] ^= 0x20;
        }
        std::fs::write(&path, &bad).expect("corrupt journal");
        self.expect_corrupt = Some(bad);
        self.count("corrupt_journals");
        // Ownership of what the daemon holds now is lost with it (documented).
        let held: Vec<CloudletRef> = self
            .crefs
            .iter()
            .filter(|c| {
                self.snapshot(c).maintenance_state != M::NormalOperation
                    && self
                        .last_init
                        .get(*c)
                        .is_some_and(|(_, h)| *h == Holder::Daemon)
            })
            .cloned()
            .collect();
        for c in held {
            self.trace(Some(&c), "ownership lost with the corrupt journal".into());
            self.orphaned.insert(c);
        }
        self.trace(None, "journal CORRUPTED before the restart".into());
    }

    async fn edit_files(&mut self, step: u64) {
        let names: Vec<String> = self
            .files
            .iter()
            .filter(|(_, d)| d.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        let kind: f64 = self.rng.random();
        let origin = self.origin;
        let days = self.days;
        if kind < 0.35 && !names.is_empty() {
            // Edit one window of a file.
            let name = self.pick(&names).cloned().expect("non-empty");
            let mut def = self.files[&name].clone().expect("valid");
            let wi = self.rng.random_range(0..def.windows.len());
            let id = def.windows[wi].id.clone();
            let mut w = setup::window(&mut self.rng, &self.cloudlets, origin, days, id);
            if matches!(w.sched, setup::Sched::Once { .. }) {
                w.sched = def.windows[wi].sched.clone();
            }
            def.windows[wi] = w;
            std::fs::write(self.windows_dir.join(&name), def.to_toml()).expect("write");
            self.trace(
                None,
                format!("file {name} edited:\n{}", def.to_toml().trim_end()),
            );
            self.files.insert(name, Some(def));
            self.count("file_edits");
            self.reload("file edited").await;
        } else if kind < 0.55 {
            // A new one-off window starting soon.
            self.next_window += 1;
            let id = format!("w{}", self.next_window);
            let mut w = setup::window(&mut self.rng, &self.cloudlets, origin, days, id);
            let zone = jiff::tz::TimeZone::get(w.zone).expect("zone");
            let minutes = self.rng.random_range(30..=720);
            let at = (self.now() + SignedDuration::from_mins(minutes)).to_zoned(zone);
            let at = at.datetime();
            w.sched = setup::Sched::Once {
                civil: format!(
                    "{:04}-{:02}-{:02}T{:02}:{:02}",
                    at.year(),
                    at.month(),
                    at.day(),
                    at.hour(),
                    (at.minute() / 15) * 15
                ),
            };
            w.skip.clear();
            let name = format!("90-oneoff-{}.toml", self.next_window);
            let def = FileDef {
                name: name.clone(),
                windows: vec![w],
            };
            std::fs::write(self.windows_dir.join(&name), def.to_toml()).expect("write");
            self.trace(
                None,
                format!("file {name} added:\n{}", def.to_toml().trim_end()),
            );
            self.files.insert(name, Some(def));
            self.count("file_adds");
            self.reload("file added").await;
        } else if kind < 0.7 && !names.is_empty() {
            let name = self.pick(&names).cloned().expect("non-empty");
            std::fs::remove_file(self.windows_dir.join(&name)).expect("remove");
            self.files.insert(name.clone(), None);
            self.broken_originals.remove(&name);
            self.trace(None, format!("file {name} REMOVED"));
            self.count("file_removals");
            self.reload("file removed").await;
        } else if kind < 0.9 && !names.is_empty() {
            // A broken edit; fixed later. The last good version stays in force meanwhile (but
            // not across a restart).
            let name = self.pick(&names).cloned().expect("non-empty");
            let def = self.files[&name].clone().expect("valid");
            let good = def.to_toml();
            let bad = if self.rng.random_bool(0.5) {
                good.replacen("duration = \"", "duration = \"about ", 1)
            } else {
                format!("{good}\n[[window]\nid = ")
            };
            std::fs::write(self.windows_dir.join(&name), bad).expect("write");
            self.files.insert(name.clone(), None);
            self.broken_originals.insert(name.clone(), def);
            self.trace(None, format!("file {name} BROKEN by an edit"));
            self.count("file_breaks");
            self.reload("file broken").await;
            let d = self.minutes(30, 360);
            self.schedule(
                step + d,
                Action::WriteFile {
                    name,
                    content: good,
                },
            );
        } else {
            // An editor leftover: ignored by the loader.
            let name = format!("{}~", names.first().cloned().unwrap_or("x.toml".into()));
            std::fs::write(self.windows_dir.join(&name), "garbage = [").expect("write");
            self.trace(None, format!("editor leftover {name} written"));
            self.count("file_leftovers");
            self.reload("leftover").await;
        }
    }

    /// The last hours of a run: faults end, latched CRMs are restarted, the daemon runs.
    async fn quiet_down(&mut self) -> Outcome<()> {
        self.trace(None, "QUIET TAIL: faults end, CRMs restarted".into());
        for id in 0..self.faults.len() {
            self.end_fault(id);
        }
        let stuck: Vec<CloudletRef> = self
            .crefs
            .iter()
            .filter(|c| self.snapshot(c).crm_stuck)
            .cloned()
            .collect();
        for c in stuck {
            self.sim
                .crm_restart(&Run::selector(&c))
                .expect("crm restart");
            self.touch(&c);
        }
        if self.daemon.is_none() {
            self.start_daemon()?;
        }
        Ok(())
    }
}
