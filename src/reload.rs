//! Reload triggers: a change in `windows.d`, or `SIGHUP`; and the termination signals.
//!
//! Why it exists: operators and config management drop, edit and remove window files while the
//! daemon runs, and expect the change to take effect without a restart (and without having to
//! remember `systemctl reload`). The engine rescans the whole directory on every
//! [`EngineCommand::Reload`], so both triggers only have to say *that* something changed, once
//! per burst: an editor's save or a package upgrade touches several files (temporary files,
//! renames) within milliseconds, and one rescan after the burst is the right answer.
//!
//! - [`spawn_dir_watcher`] watches the directory (non-recursively) with the platform's native
//!   watcher and debounces events into one reload. It also watches the parent directory for the
//!   windows directory itself, so a directory that is created later, removed, or replaced by a
//!   rename is picked up again.
//! - [`spawn_signal_handler`] turns `SIGHUP` into a reload and `SIGTERM`/`SIGINT` into the
//!   cancellation of the daemon's shutdown token. Once shutdown has begun, a further `SIGTERM` or
//!   `SIGINT` ends the process at once (the default action), for an operator who does not want to
//!   wait for the grace period.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use notify::event::{AccessKind, AccessMode, MetadataKind, ModifyKind};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_tokio::Signals;
use tokio::runtime::Handle;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::engine::EngineCommand;

/// The debounce the daemon uses for `windows.d` events.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

/// Under a continuous stream of events the reload still happens at most this many debounce
/// periods after the first event of the burst.
const MAX_DELAY_FACTOR: u32 = 10;

/// Why a reload trigger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("cannot resolve the windows directory {}: {error}", path.display())]
    Resolve {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "cannot watch {}: neither it nor its parent directory exists; create it (schedule.windows_dir)",
        path.display()
    )]
    NoDirectory { path: PathBuf },
    #[error("cannot watch {} for changes: {error}", path.display())]
    Watch { path: PathBuf, error: notify::Error },
    #[error("cannot install the SIGHUP/SIGTERM/SIGINT handlers: {error}")]
    Signals { error: std::io::Error },
    #[error("reload triggers must be started inside a tokio runtime")]
    NoRuntime,
}

/// Watches `dir` and sends one `Reload { trigger: "file change" }` per burst of changes: any
/// create, modify, remove or rename event opens a window that closes `debounce` after the last
/// event (but at most 10 × `debounce` after the first), and then the reload is sent.
///
/// The watch is in place when this returns (changes made afterwards are seen). When `dir` does
/// not exist yet, its parent is watched and the directory is picked up once it appears. The task
/// ends when `shutdown` is cancelled or the engine's command channel is closed.
///
/// Fails with [`ReloadError::NoRuntime`] outside a tokio runtime.
pub fn spawn_dir_watcher(
    dir: PathBuf,
    commands: mpsc::Sender<EngineCommand>,
    debounce: Duration,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ReloadError> {
    let runtime = Handle::try_current().map_err(|_| ReloadError::NoRuntime)?;
    let dir = std::path::absolute(&dir).map_err(|error| ReloadError::Resolve {
        path: dir.clone(),
        error,
    })?;
    let parent = dir.parent().map(Path::to_path_buf);
    let wake = Arc::new(Notify::new());
    let dir_changed = Arc::new(AtomicBool::new(false));

    let mut watcher = {
        let watched = dir.clone();
        let wake = Arc::clone(&wake);
        let dir_changed = Arc::clone(&dir_changed);
        notify::recommended_watcher(move |res: notify::Result<Event>| match res {
            Ok(event) => {
                if !is_change(&event.kind) {
                    return;
                }
                let mut relevant = false;
                for path in &event.paths {
                    if path == &watched {
                        dir_changed.store(true, Ordering::SeqCst);
                        relevant = true;
                    } else if path.starts_with(&watched) {
                        relevant = true;
                    }
                }
                // A queue overflow comes without paths: rescan to be safe.
                if relevant || event.paths.is_empty() {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::warn!(dir = %watched.display(), error = %e, "windows directory watcher error"),
        })
        .map_err(|error| ReloadError::Watch {
            path: dir.clone(),
            error,
        })?
    };

    let parent_watched = match &parent {
        Some(p) if p.is_dir() => match watcher.watch(p, RecursiveMode::NonRecursive) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(parent = %p.display(), error = %e, "cannot watch the windows directory's parent; a replaced directory will not be noticed");
                false
            }
        },
        _ => false,
    };
    let dir_watched = if dir.is_dir() {
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|error| ReloadError::Watch {
                path: dir.clone(),
                error,
            })?;
        true
    } else {
        false
    };
    if !dir_watched && !parent_watched {
        return Err(ReloadError::NoDirectory { path: dir });
    }
    if !dir_watched {
        tracing::warn!(dir = %dir.display(), "windows directory does not exist; watching for it to appear");
    }
    tracing::debug!(dir = %dir.display(), debounce = ?debounce, "watching the windows directory");

    Ok(runtime.spawn(async move {
        // The watcher lives as long as this task.
        let mut watcher = watcher;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = wake.notified() => {}
            }
            if !wait_for_quiet(&wake, debounce, &shutdown).await {
                return;
            }
            if dir_changed.swap(false, Ordering::SeqCst) {
                rewatch(&mut watcher, &dir);
            }
            tracing::debug!(dir = %dir.display(), "windows directory changed; asking for a reload");
            let reload = EngineCommand::Reload {
                trigger: "file change".into(),
                reply: None,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                sent = commands.send(reload) => if sent.is_err() {
                    tracing::debug!("engine gone; windows directory watcher ends");
                    return;
                }
            }
        }
    }))
}

/// Whether an event can mean that the directory's content changed. Opening, reading and closing
/// a file unchanged (the engine's own rescan) and access-time updates do not.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_)
        | EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// Waits until no event came for `debounce` (bounded by [`MAX_DELAY_FACTOR`]). False when
/// shutdown was requested meanwhile.
async fn wait_for_quiet(wake: &Notify, debounce: Duration, shutdown: &CancellationToken) -> bool {
    let latest = Instant::now() + debounce * MAX_DELAY_FACTOR;
    let mut deadline = (Instant::now() + debounce).min(latest);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return false,
            _ = wake.notified() => deadline = (Instant::now() + debounce).min(latest),
            _ = tokio::time::sleep_until(deadline) => return true,
        }
    }
}

/// The directory itself was created, removed or renamed: watch whatever is at its path now.
fn rewatch(watcher: &mut RecommendedWatcher, dir: &Path) {
    // The old watch may follow a directory that was renamed away; drop it first.
    let _ = watcher.unwatch(dir);
    if !dir.is_dir() {
        tracing::warn!(dir = %dir.display(), "windows directory is gone; watching for it to reappear");
        return;
    }
    match watcher.watch(dir, RecursiveMode::NonRecursive) {
        Ok(()) => tracing::info!(dir = %dir.display(), "watching the windows directory again"),
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "cannot watch the windows directory; changes need SIGHUP (systemctl reload) until restart"
        ),
    }
}

/// Installs handlers for `SIGHUP` (→ `Reload { trigger: "SIGHUP" }`) and `SIGTERM`/`SIGINT`
/// (→ `shutdown.cancel()`), and spawns the task that serves them.
///
/// The handlers are installed when this returns, so a caller can install them before telling
/// systemd it is ready. The task ends when `shutdown` is cancelled (by a signal or by anyone
/// else); from then on a `SIGTERM` or `SIGINT` terminates the process immediately.
///
/// Fails with [`ReloadError::NoRuntime`] outside a tokio runtime.
pub fn spawn_signal_handler(
    commands: mpsc::Sender<EngineCommand>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ReloadError> {
    let runtime = Handle::try_current().map_err(|_| ReloadError::NoRuntime)?;
    // Armed by the task once shutdown has begun: from then on a termination signal takes its
    // default action (the process ends) instead of being queued for a task that is gone.
    let armed = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_default(signal, Arc::clone(&armed))
            .map_err(|error| ReloadError::Signals { error })?;
    }
    let mut signals =
        Signals::new([SIGHUP, SIGTERM, SIGINT]).map_err(|error| ReloadError::Signals { error })?;

    Ok(runtime.spawn(async move {
        loop {
            let signal = tokio::select! {
                _ = shutdown.cancelled() => break,
                signal = signals.next() => match signal {
                    Some(signal) => signal,
                    None => break,
                },
            };
            match signal {
                SIGHUP => {
                    tracing::info!("SIGHUP received; reloading the windows directory");
                    let reload = EngineCommand::Reload {
                        trigger: "SIGHUP".into(),
                        reply: None,
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        sent = commands.send(reload) => if sent.is_err() {
                            tracing::warn!("SIGHUP received but the engine is gone; nothing to reload");
                        }
                    }
                }
                SIGTERM | SIGINT => {
                    let name = if signal == SIGTERM {
                        "SIGTERM"
                    } else {
                        "SIGINT"
                    };
                    tracing::info!(
                        "{name} received; shutting down (send it again to exit at once)"
                    );
                    shutdown.cancel();
                    break;
                }
                other => tracing::debug!(signal = other, "ignoring unexpected signal"),
            }
        }
        armed.store(true, Ordering::SeqCst);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(200);
    /// Deadline for something that must happen; generous for a loaded 2-core machine.
    const DEADLINE: Duration = Duration::from_secs(20);

    async fn expect_reload(rx: &mut mpsc::Receiver<EngineCommand>) {
        match tokio::time::timeout(DEADLINE, rx.recv()).await {
            Ok(Some(EngineCommand::Reload { trigger, reply })) => {
                assert_eq!(trigger, "file change");
                assert!(reply.is_none());
            }
            Ok(None) => panic!("watcher ended"),
            Err(_) => panic!("no reload within {DEADLINE:?}"),
        }
    }

    /// No further reload arrives for twice the debounce period.
    async fn expect_quiet(rx: &mut mpsc::Receiver<EngineCommand>) {
        if let Ok(cmd) = tokio::time::timeout(DEBOUNCE * 2, rx.recv()).await {
            panic!("unexpected second command: {cmd:?}");
        }
    }

    #[tokio::test]
    async fn burst_of_writes_gives_one_reload_and_removal_another() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("10-a.toml");
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let task =
            spawn_dir_watcher(dir.path().to_path_buf(), tx, DEBOUNCE, shutdown.clone()).unwrap();

        for i in 0..5 {
            std::fs::write(&file, format!("# edit {i}\n")).unwrap();
        }
        expect_reload(&mut rx).await;
        expect_quiet(&mut rx).await;

        // Reading a file (what the engine's rescan does) is not a change.
        let _ = std::fs::read_to_string(&file).unwrap();
        expect_quiet(&mut rx).await;

        std::fs::remove_file(&file).unwrap();
        expect_reload(&mut rx).await;
        expect_quiet(&mut rx).await;

        shutdown.cancel();
        tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn directory_created_later_is_watched() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("windows.d");
        let (tx, mut rx) = mpsc::channel(8);
        let shutdown = CancellationToken::new();
        let _task = spawn_dir_watcher(dir.clone(), tx, DEBOUNCE, shutdown.clone()).unwrap();

        std::fs::create_dir(&dir).unwrap();
        expect_reload(&mut rx).await;
        // The watch moved to the new directory: a file written into it is seen.
        std::fs::write(dir.join("20-b.toml"), "# new\n").unwrap();
        expect_reload(&mut rx).await;

        // Replaced by a rename: the new directory is watched, not the old one.
        let staged = parent.path().join("windows.d.new");
        std::fs::create_dir(&staged).unwrap();
        std::fs::rename(&dir, parent.path().join("windows.d.old")).unwrap();
        std::fs::rename(&staged, &dir).unwrap();
        expect_reload(&mut rx).await;
        std::fs::write(dir.join("30-c.toml"), "# newer\n").unwrap();
        expect_reload(&mut rx).await;
        shutdown.cancel();
    }

    #[tokio::test]
    async fn missing_directory_and_parent_is_an_error() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("nope").join("windows.d");
        let (tx, _rx) = mpsc::channel(8);
        let err = spawn_dir_watcher(dir, tx, DEBOUNCE, CancellationToken::new()).unwrap_err();
        assert!(matches!(err, ReloadError::NoDirectory { .. }), "{err}");
        assert!(err.to_string().contains("schedule.windows_dir"), "{err}");
    }

    #[test]
    fn outside_a_runtime_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let err = spawn_dir_watcher(
            dir.path().to_path_buf(),
            tx,
            DEBOUNCE,
            CancellationToken::new(),
        )
        .unwrap_err();
        assert!(matches!(err, ReloadError::NoRuntime), "{err}");
    }

    #[test]
    fn event_filter() {
        use notify::event::{CreateKind, DataChange, RemoveKind, RenameMode};
        assert!(is_change(&EventKind::Create(CreateKind::File)));
        assert!(is_change(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_change(&EventKind::Remove(RemoveKind::File)));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(!is_change(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::AccessTime
        ))));
    }
}
