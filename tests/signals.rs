//! The signal handler, with real signals raised on this test process. Its own test binary,
//! and one test function, because signal dispositions are process-wide.

use std::time::Duration;

use cloudlet_maintd::engine::EngineCommand;
use cloudlet_maintd::reload::spawn_signal_handler;
use signal_hook::consts::signal::{SIGHUP, SIGTERM};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Deadline for a signal's effect (a bound, not a timing assertion).
const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn sighup_reloads_and_sigterm_cancels() {
    let (tx, mut rx) = mpsc::channel(4);
    let shutdown = CancellationToken::new();
    let task = spawn_signal_handler(tx, shutdown.clone()).unwrap();

    // Installed synchronously: raising right away must not kill the process.
    signal_hook::low_level::raise(SIGHUP).unwrap();
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Some(EngineCommand::Reload { trigger, reply })) => {
            assert_eq!(trigger, "SIGHUP");
            assert!(reply.is_none());
        }
        other => panic!("expected a reload, got {other:?}"),
    }
    assert!(!shutdown.is_cancelled());

    signal_hook::low_level::raise(SIGTERM).unwrap();
    tokio::time::timeout(DEADLINE, shutdown.cancelled())
        .await
        .expect("SIGTERM cancels the shutdown token");
    tokio::time::timeout(DEADLINE, task)
        .await
        .expect("the handler task ends after shutdown")
        .unwrap();
    // SIGTERM asked for no reload.
    assert!(rx.try_recv().is_err());
}
