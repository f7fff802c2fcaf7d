//! The deterministic simulation of the whole daemon (see `tests/simulation.rs` for how to run
//! it).
//!
//! One seed is one run: a current-thread tokio runtime with its clock paused, the **real
//! engine** (`cloudlet_maintd::engine::spawn_with_hooks`) with a
//! [`VirtualClock`](cloudlet_maintd::engine::VirtualClock), real window
//! files and a real journal in a temporary directory, and mc-sim's controller in process behind
//! the daemon's [`Controller`](cloudlet_maintd::controller::Controller) trait ([`adapter`]).
//! The driver advances simulated time in one-minute steps (a `tokio::time::sleep` in the
//! driver: the runtime jumps from timer to timer, so every task, the engine's workers and the
//! controller's handshakes, runs at its own virtual instant in between) and, at random steps,
//! injects what happens to a real deployment: 502 bursts, dropped streams, AutoProv errors and
//! silences, deaf or slow CRMs, people entering and leaving maintenance by hand (or leaving a
//! cloudlet stuck), operators reacting to alerts, daemon crashes (and clean restarts) with the
//! journal read back from disk (sometimes corrupted first), window files edited, broken,
//! fixed and removed (each followed by a reload).
//!
//! After every step the properties of design.md §5 are checked ([`checks`]) from the adapter's
//! request log, mc-sim's history, the journal on disk and the engine's status snapshot. A
//! breach ends the run with the seed, the simulated time, the property, an excerpt of the
//! history of the cloudlet concerned and a one-line command that replays the run exactly.
//!
//! A crash is [`SimulationHooks::kill`](cloudlet_maintd::engine::SimulationHooks): the timer
//! loop and every worker are dropped where they are (a request in flight is abandoned while the
//! controller's sequence carries on), then a fresh engine is started from the state directory
//! on disk, as a new process would be. A clean restart cancels the engine's shutdown token.
//!
//! Determinism: every random choice comes from `StdRng`s seeded by the seed; the journal
//! writes on the committing task and `windows.d` is scanned on the runtime thread (the journal's
//! and the engine's simulation hooks), so neither a blocking-pool thread finishing in real time
//! nor tokio's randomized wake-up order of `watch` receivers can reorder tasks; the harness
//! iterates only ordered maps; the runtime has no I/O driver. The same seed gives the same run
//! (checked by a test), whatever the machine's load.
//!
//! [`run_world`] runs a hand-made world without injected events: the scenario tests in
//! `tests/simulation.rs` pin down engine bugs the random runs found.

pub mod adapter;
pub mod checks;
pub mod driver;
pub mod oracle;
pub mod setup;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

/// What one seed did.
#[derive(Debug, Clone, Default)]
pub struct SeedReport {
    pub seed: u64,
    pub days: u32,
    pub origin: String,
    pub cloudlets: usize,
    pub windows: usize,
    /// UpdateCloudlet requests the daemon sent, and how many ended without error.
    pub handshakes: u64,
    pub handshakes_ok: u64,
    pub shows: u64,
    /// Injected events by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Span starts at which the daemon had the cloudlet in maintenance, and those it entered
    /// only later (by reason).
    pub on_time: u64,
    pub late: BTreeMap<&'static str, u64>,
    /// Span starts where the on-time property was asserted (healthy controller, daemon up).
    pub on_time_asserted: u64,
    /// The engine's own counts (summed over restarts).
    pub engine_on_time: u64,
    pub engine_late: u64,
    pub max_global: usize,
    pub max_per_org: usize,
    /// Longest time from "no longer wanted" to NormalOperation of a cloudlet the daemon held.
    pub max_restore_delay: Duration,
    /// Which cloudlet that was, and when it stopped being wanted.
    pub max_restore_what: String,
    /// Exits of cloudlets whose ownership the daemon assumed after losing its journal.
    pub assumed_exits: u64,
    /// Alerts seen (kind → distinct (cloudlet, since)).
    pub alerts: BTreeMap<String, u64>,
    /// A digest of every request the daemon sent and every state change of the controller,
    /// with their simulated times (equal for equal runs).
    pub fingerprint: u64,
}

/// A property that broke.
#[derive(Debug, Clone)]
pub struct Violation {
    pub seed: u64,
    pub days: u32,
    pub at: Timestamp,
    pub property: &'static str,
    pub message: String,
    pub excerpt: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulation seed {} violated {} at simulated time {}:",
            self.seed, self.property, self.at
        )?;
        writeln!(f, "  {}", self.message)?;
        writeln!(f, "history excerpt (newest last):")?;
        for line in &self.excerpt {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "reproduce: SIM_SEED={} SIM_DAYS={} cargo test --test simulation -- --nocapture",
            self.seed, self.days
        )
    }
}

/// Runs one seed for `days` simulated days on a fresh paused runtime.
pub fn run_seed(seed: u64, days: u32, verbose: bool) -> Result<SeedReport, Box<Violation>> {
    runtime().block_on(driver::Run::execute(seed, days, verbose))
}

/// Runs a hand-made world (no injected events; `seed` only drives round-trip times) and returns
/// the report and every UpdateCloudlet request the daemon sent.
#[allow(dead_code)] // used by some test binaries only
pub fn run_world(
    seed: u64,
    days: u32,
    world: setup::World,
) -> Result<(SeedReport, Vec<adapter::RequestEntry>), Box<Violation>> {
    runtime().block_on(driver::Run::execute_world(seed, days, world))
}

fn runtime() -> tokio::runtime::Runtime {
    // Time only: nothing in the simulation does socket I/O, and a paused clock has no use for
    // an I/O driver's real readiness events.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("tokio runtime")
}
