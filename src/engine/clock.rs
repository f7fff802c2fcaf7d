//! The engine's view of time: a wall clock to plan against and a way to sleep.
//!
//! Spans are defined on the wall clock, but tokio's timers run on the monotonic clock, which
//! stops during suspend and ignores clock steps. So the engine never sleeps long (at most
//! [`MAX_SLEEP`]) and re-reads [`Clock::now`] on every wake. Behind a trait so that the whole
//! daemon can run in virtual time ([`VirtualClock`], on a paused tokio runtime) for the
//! deterministic simulation, and against the real clock ([`SystemClock`]) in production.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// The longest the engine ever sleeps without re-reading the wall clock.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A wall clock and a sleeper.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock instant.
    fn now(&self) -> Timestamp;
    /// Sleeps for `d` (of the clock's own time).
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

impl<K: Clock> Clock for Arc<K> {
    fn now(&self) -> Timestamp {
        K::now(self)
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        K::sleep(self, d)
    }
}

/// The real wall clock, with tokio timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// Virtual wall time: a fixed origin plus tokio's (pausable) monotonic time, plus an
/// adjustable step to simulate wall-clock jumps. On a runtime with paused time, tokio advances
/// the clock whenever every task is idle, so simulated days pass in milliseconds and the run is
/// deterministic.
#[derive(Debug)]
pub struct VirtualClock {
    origin: Timestamp,
    started: tokio::time::Instant,
    step_ns: AtomicI64,
}

impl VirtualClock {
    /// Starts virtual time at `origin` (call inside a tokio runtime).
    pub fn new(origin: Timestamp) -> Self {
        VirtualClock {
            origin,
            started: tokio::time::Instant::now(),
            step_ns: AtomicI64::new(0),
        }
    }

    /// Steps the wall clock (like an NTP correction or a resume from suspend) without moving
    /// tokio's timers.
    pub fn step(&self, by: SignedDuration) {
        let ns = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
        self.step_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        let elapsed =
            SignedDuration::try_from(self.started.elapsed()).unwrap_or(SignedDuration::MAX);
        let step = SignedDuration::from_nanos(self.step_ns.load(Ordering::SeqCst));
        crate::timeutil::plus(crate::timeutil::plus(self.origin, elapsed), step)
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}
