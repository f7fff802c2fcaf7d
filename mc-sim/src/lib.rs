//! mc-sim: a simulator of the MobiledgeX / EdgeXR Master Controller's cloudlet maintenance API.
//!
//! The daemon (`cloudlet-maintd`) drives a slow, failure-prone handshake on a remote controller.
//! This crate stands in for that controller in tests, demos and dry runs: it speaks the same HTTP
//! API (`shared/controller-protocol.md`), runs the same state machine with configurable latencies
//! and faults, and records everything it did so a test can assert on the order of transitions.
//!
//! Layout:
//! - [`scenario`]: the declarative description (users, cloudlets, knobs), TOML or JSON.
//! - [`state`]: the pure state-machine rules and wire spellings.
//! - `world`: the shared mutable simulation (cloudlets, tokens, history) behind one mutex.
//! - `runner`: the asynchronous handshake, detached from the HTTP connection.
//! - `http`: the Master Controller REST API under `/api/v1`.
//! - `control`: the unauthenticated `/_sim/*` API tests use to inspect and steer the simulation.
//! - [`inprocess`]: the same controller as plain async calls, for deterministic simulations on a
//!   paused tokio runtime (no sockets).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let scenario = mc_sim::Scenario::from_toml_str(r#"
//!     time_scale = 0.01
//!     [[users]]
//!     username = "opuser"
//!     password = "secret"
//!     roles = [ { org = "TDG", role = "OperatorManager" } ]
//!     [[cloudlets]]
//!     region = "EU"
//!     organization = "TDG"
//!     name = "berlin-1"
//! "#)?;
//! let sim = mc_sim::SimServer::start(scenario, "127.0.0.1:0".parse()?).await?;
//! println!("controller at {}", sim.url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod inprocess;
pub mod scenario;
pub mod state;

mod control;
mod http;
mod runner;
mod world;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use inprocess::{
    CloudletSnapshot, InProcess, RequestSummary, Selector, ShownCloudlet, SimFailure, SimHistory,
    TransitionRecord,
};
pub use scenario::{
    CloudletSpec, HumanDuration, Knobs, KnobsPatch, Latency, Location, Role, RoleSpec, Scenario,
    ScenarioError, UserSpec,
};
pub use state::{MaintenanceState, TrackedState};
pub use world::Actor;

/// How long in-flight connections get to finish after shutdown was requested. Handshakes are
/// cancelled at once, so their streams end; this only bounds a stuck client.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the simulator could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("refusing to listen on {0}: mc-sim only listens on loopback addresses")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A simulator running on the current tokio runtime. Dropping it stops the server too (without
/// waiting); [`SimServer::shutdown`] stops it and waits.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), SimError>>>,
}

impl SimServer {
    /// Binds `addr` (use `127.0.0.1:0` in tests) and spawns the server on the current runtime.
    pub async fn start(scenario: Scenario, addr: SocketAddr) -> Result<SimServer, SimError> {
        if !addr.ip().is_loopback() {
            return Err(SimError::NotLoopback(addr));
        }
        scenario.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| SimError::Bind { addr, source })?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, scenario, async move {
            // A dropped sender (the SimServer was dropped) also means stop.
            let _ = stopped.await;
        }));
        Ok(SimServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the base URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server: cancels running handshakes, closes connections, waits for the task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("mc-sim stopped with an error: {e}"),
                Err(e) => tracing::warn!("mc-sim task failed: {e}"),
            }
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the simulated controller on `listener` until `shutdown` completes. Running handshakes
/// are then cancelled (their state stays where it was) and open connections get a short grace
/// period.
pub async fn serve(
    listener: TcpListener,
    scenario: Scenario,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    scenario.validate()?;
    let sim = Arc::new(world::Sim::new(scenario));
    let app = http::router(sim.clone()).merge(control::router(sim.clone()));
    let cancel = sim.cancel.clone();
    let on_signal = {
        let cancel = cancel.clone();
        async move {
            shutdown.await;
            cancel.cancel();
        }
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(on_signal)
        .into_future();
    let backstop = async {
        cancel.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let result = tokio::select! {
        r = server => r.map_err(SimError::Io),
        () = backstop => Ok(()),
    };
    cancel.cancel();
    result
}
