//! `run`: the daemon. Wires config, controller client, journal, engine, status endpoint,
//! reload triggers and systemd notifications together, then waits for a signal.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cli::RunArgs;
use crate::config::Config;
use crate::controller::{Controller, McClient, load_password};
use crate::engine::{self, EngineParts, EngineSettings, Lifecycle, SystemClock};
use crate::journal::{JournalHandle, JournalStore};
use crate::metrics::{Metered, Metrics};
use crate::{reload, status_http, systemd};

/// Why the daemon could not start (or stopped abnormally).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error("controller: {0}")]
    Controller(#[from] crate::controller::ClientError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Reload(#[from] reload::ReloadError),
    #[error("engine: {0}")]
    Engine(#[from] engine::EngineError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl RunError {
    /// Config-type problems exit 2, the rest 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_) => super::EXIT_USAGE,
            _ => super::EXIT_FAILED,
        }
    }
}

/// Applies the command-line overrides to the config.
pub fn effective_config(config: &Config, args: &RunArgs) -> Config {
    let mut cfg = config.clone();
    if let Some(d) = &args.windows_dir {
        cfg.schedule.windows_dir = d.clone();
    }
    if let Some(d) = &args.state_dir {
        cfg.schedule.state_dir = d.clone();
    }
    if let Some(l) = args.listen {
        cfg.status.listen = l;
    }
    cfg
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit status.
pub fn run(config: &Config, args: &RunArgs) -> i32 {
    let cfg = effective_config(config, args);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}", RunError::Runtime(e));
            return super::EXIT_FAILED;
        }
    };
    match runtime.block_on(run_daemon(cfg)) {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cloudlet-maintd: {e}");
            e.exit_code()
        }
    }
}

async fn run_daemon(cfg: Config) -> Result<(), RunError> {
    status_http::check_exposure(&cfg.status).map_err(RunError::Config)?;
    let password = load_password(&cfg.controller)?;
    let client = McClient::new(&cfg.controller, password)?;
    run_with(
        cfg,
        Arc::new(client),
        Arc::new(systemd::SdNotify::from_env()),
        CancellationToken::new(),
    )
    .await
}

/// The daemon with a given controller and lifecycle hooks (the demo passes its own).
/// Stops when `shutdown` is cancelled (by SIGTERM/SIGINT, or by the caller).
pub async fn run_with<C, L>(
    cfg: Config,
    controller: Arc<C>,
    lifecycle: Arc<L>,
    shutdown: CancellationToken,
) -> Result<(), RunError>
where
    C: Controller + 'static,
    L: Lifecycle,
{
    let tracker = TaskTracker::new();

    let (store, journal, corrupt) = JournalStore::open(&cfg.schedule.state_dir)?;
    if let Some(c) = &corrupt {
        tracing::error!(
            "journal {} was corrupt ({}); kept aside as {}",
            store.path().display(),
            c.reason,
            c.moved_to.display()
        );
    }
    let journal = JournalHandle::spawn(store, journal);

    // Signal handlers before READY=1 (which the engine sends once the first plan is built).
    let (cmd_tx, cmd_rx) = engine::command_channel();
    let signals = reload::spawn_signal_handler(cmd_tx.clone(), shutdown.clone())?;

    let listener = tokio::net::TcpListener::bind(cfg.status.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: cfg.status.listen,
            source,
        })?;
    let listen = listener.local_addr().unwrap_or(cfg.status.listen);

    let metrics = Arc::new(Metrics::new());
    let lifecycle = Arc::new(Metered {
        inner: lifecycle,
        metrics: Arc::clone(&metrics),
    });
    let settings = EngineSettings::from_config(&cfg);
    let parts = EngineParts {
        controller,
        clock: Arc::new(SystemClock),
        journal: journal.clone(),
        corrupt_journal: corrupt,
        settings,
        lifecycle,
    };
    let (handle, engine_task) =
        engine::spawn(parts, (cmd_tx.clone(), cmd_rx), shutdown.clone(), &tracker);

    let http = tracker.spawn(status_http::serve(
        listener,
        status_http::StatusSources {
            status: handle.status.clone(),
            plan: handle.plan.clone(),
            metrics,
        },
        cfg.status.token.clone(),
        shutdown.clone(),
    ));
    tracing::info!(
        listen = %listen,
        windows_dir = %cfg.schedule.windows_dir.display(),
        state_dir = %cfg.schedule.state_dir.display(),
        controller = %cfg.controller.url,
        "cloudlet-maintd running"
    );
    let watcher = match reload::spawn_dir_watcher(
        cfg.schedule.windows_dir.clone(),
        cmd_tx.clone(),
        std::time::Duration::from_millis(500),
        shutdown.clone(),
    ) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("{e}; reload with SIGHUP instead");
            None
        }
    };

    let result = engine_task.await;
    shutdown.cancel();
    tracker.close();
    if let Some(w) = watcher {
        w.abort();
    }
    signals.abort();
    let _ = http.await;
    tracker.wait().await;
    tracing::info!("stopped");
    match result {
        Ok(r) => r.map_err(RunError::from),
        Err(e) => Err(RunError::Config(format!("engine task failed: {e}"))),
    }
}
