//! Talking to systemd: readiness, reload and stop notifications, the watchdog, and whether our
//! log output already goes to the journal.
//!
//! Why it exists: the unit runs as `Type=notify-reload`, so systemd must learn when the first plan
//! is built (`READY=1`: only then does `systemctl start` return and ordered units start), when a
//! reload begins and ends (`RELOADING=1` with `MONOTONIC_USEC`, then `READY=1`), and when the
//! daemon is draining (`STOPPING=1`). The one-line `STATUS=` shows up in `systemctl status`. With
//! `WatchdogSec=` set, the timer loop's wakes feed the watchdog, so a hung loop gets the service
//! restarted. Note that the loop wakes at least every 30 s: `WatchdogSec=` must be above that
//! (90 s matches `/healthz`).
//!
//! [`SdNotify`] is the engine's [`Lifecycle`]; outside systemd (no `NOTIFY_SOCKET`) every hook
//! returns at once. Failures to notify are logged, never fatal: the daemon's work does not depend
//! on systemd hearing about it.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::engine::{Lifecycle, StatusSnapshot};

/// Sends the engine's lifecycle to systemd through `$NOTIFY_SOCKET`.
#[derive(Debug)]
pub struct SdNotify {
    /// `NOTIFY_SOCKET` was set at construction.
    enabled: bool,
    /// `WATCHDOG_USEC` for this process, read once at construction.
    watchdog: Option<Duration>,
    ticks: Mutex<TickState>,
}

#[derive(Debug, Default)]
struct TickState {
    last_ping: Option<Instant>,
    last_status: Option<String>,
}

impl SdNotify {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Self {
        let enabled = std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty());
        let watchdog = if enabled {
            sd_notify::watchdog_enabled()
        } else {
            None
        };
        if enabled {
            tracing::debug!(
                watchdog = ?watchdog.map(humantime::format_duration).map(|d| d.to_string()),
                "systemd notification socket found"
            );
        }
        SdNotify {
            enabled,
            watchdog,
            ticks: Mutex::new(TickState::default()),
        }
    }

    /// Whether notifications are sent at all (the process runs under systemd with `Type=notify*`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The watchdog interval systemd expects pings within, if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, what: &str, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd ({what})");
        }
    }

    fn ready(&self, what: &str, status: &StatusSnapshot) {
        if !self.enabled {
            return;
        }
        let line = status_line(status);
        self.send(what, &[NotifyState::Ready, NotifyState::Status(&line)]);
        self.lock().last_status = Some(line);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TickState> {
        self.ticks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Lifecycle for SdNotify {
    fn planned(&self, status: &StatusSnapshot) {
        self.ready("ready", status);
    }

    fn reloading(&self) {
        if !self.enabled {
            return;
        }
        // `Type=notify-reload` wants the monotonic time in the same message, to tell this
        // reload from an earlier one.
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send("reloading", &[NotifyState::Reloading, now]),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read CLOCK_MONOTONIC for systemd's reload notification");
                self.send("reloading", &[NotifyState::Reloading]);
            }
        }
    }

    fn reloaded(&self, status: &StatusSnapshot) {
        self.ready("reloaded", status);
    }

    fn tick(&self, status_line: &str) {
        if !self.enabled {
            return;
        }
        let mut ticks = self.lock();
        let now = Instant::now();
        let ping = self.watchdog.is_some_and(|interval| {
            ticks
                .last_ping
                .is_none_or(|last| now.duration_since(last) >= interval / 2)
        });
        let status_changed = ticks.last_status.as_deref() != Some(status_line);
        let mut states = Vec::with_capacity(2);
        if ping {
            states.push(NotifyState::Watchdog);
            ticks.last_ping = Some(now);
        }
        if status_changed {
            states.push(NotifyState::Status(status_line));
            ticks.last_status = Some(status_line.to_string());
        }
        if !states.is_empty() {
            self.send("tick", &states);
        }
    }

    fn stopping(&self) {
        if self.enabled {
            self.send("stopping", &[NotifyState::Stopping]);
        }
    }
}

/// The `STATUS=` line for a snapshot, e.g.
/// `3 windows, 1 in maintenance, 1 alerts, next: exit TDG/berlin-1 at 2026-03-01T06:00:00Z`.
#[must_use]
pub fn status_line(status: &StatusSnapshot) -> String {
    let c = &status.counts;
    let mut line = format!("{} windows, {} in maintenance", c.windows, c.in_maintenance);
    if c.alerts > 0 {
        let _ = write!(line, ", {} alerts", c.alerts);
    }
    if c.files_invalid > 0 {
        let _ = write!(line, ", {} invalid files", c.files_invalid);
    }
    if let Some(next) = &status.next_action {
        let _ = write!(
            line,
            ", next: {} {} at {}",
            next.action, next.cloudlet, next.at
        );
    }
    line
}

/// Whether stderr is connected to the journal (`JOURNAL_STREAM` names stderr's device and
/// inode), so that log lines need no timestamp of their own and can carry priorities instead.
/// An inherited `JOURNAL_STREAM` whose stream is not our stderr (a shell started from a service,
/// output redirected) does not count.
#[must_use]
pub fn journald_attached() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    stderr_identity() == Some((dev, ino))
}

/// Device and inode of the file behind file descriptor 2.
fn stderr_identity() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;
    use std::sync::Mutex;

    use super::*;
    use crate::engine::status::{Counts, NextAction};

    /// Environment variables are process-global: every test here that sets them holds this.
    static ENV_LOCK: Mutex<()> = Mutex::new(());

    fn snapshot() -> StatusSnapshot {
        StatusSnapshot {
            counts: Counts {
                windows: 2,
                in_maintenance: 1,
                alerts: 1,
                ..Counts::default()
            },
            next_action: Some(NextAction {
                region: "EU".into(),
                cloudlet: "TDG/berlin-1".into(),
                action: "exit".into(),
                at: "2026-03-01T06:00:00Z".into(),
            }),
            ..StatusSnapshot::default()
        }
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a notification datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    /// Nothing more is queued. Datagrams to a unix socket are queued when `send` returns, so
    /// this needs no waiting.
    fn assert_nothing_queued(sock: &UnixDatagram) {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let err = sock
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
        assert_eq!(
            err.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::WouldBlock)
        );
        sock.set_nonblocking(false).unwrap();
    }

    fn monotonic_usec() -> i128 {
        match NotifyState::monotonic_usec_now().unwrap() {
            NotifyState::MonotonicUsec(v) => v,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn notifications_reach_the_socket_in_order() {
        let _env = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        // A deadline for a datagram that never comes, not a timing assertion.
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // SAFETY: the only test touching these variables, serialized by ENV_LOCK; nothing else
        // in this crate reads them.
        unsafe {
            std::env::set_var("NOTIFY_SOCKET", &path);
            std::env::set_var("WATCHDOG_USEC", "1000");
            std::env::remove_var("WATCHDOG_PID");
        }

        let sd = SdNotify::from_env();
        assert!(sd.enabled());
        assert_eq!(sd.watchdog(), Some(Duration::from_millis(1)));

        sd.planned(&snapshot());
        let line = "2 windows, 1 in maintenance, 1 alerts, next: exit TDG/berlin-1 at 2026-03-01T06:00:00Z";
        assert_eq!(recv(&sock), format!("READY=1\nSTATUS={line}\n"));

        let before = monotonic_usec();
        sd.reloading();
        let after = monotonic_usec();
        let msg = recv(&sock);
        let usec: i128 = msg
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("unexpected reload message {msg:?}"))
            .parse()
            .unwrap();
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );

        sd.reloaded(&snapshot());
        assert_eq!(recv(&sock), format!("READY=1\nSTATUS={line}\n"));

        // First tick: the watchdog is due and the line differs from the one sent with READY.
        sd.tick("loop line");
        assert_eq!(recv(&sock), "WATCHDOG=1\nSTATUS=loop line\n");
        // Half of 1 ms has certainly passed after sleeping 2 ms; same line: no STATUS.
        std::thread::sleep(Duration::from_millis(2));
        sd.tick("loop line");
        assert_eq!(recv(&sock), "WATCHDOG=1\n");

        sd.stopping();
        assert_eq!(recv(&sock), "STOPPING=1\n");
        assert_nothing_queued(&sock);

        // A long watchdog interval: the second tick is far too early to ping, and an unchanged
        // line sends nothing at all.
        unsafe { std::env::set_var("WATCHDOG_USEC", "3600000000") };
        let slow = SdNotify::from_env();
        slow.tick("a");
        assert_eq!(recv(&sock), "WATCHDOG=1\nSTATUS=a\n");
        slow.tick("a");
        assert_nothing_queued(&sock);
        slow.tick("b");
        assert_eq!(recv(&sock), "STATUS=b\n");

        // The watchdog is meant for another process: no pings.
        unsafe { std::env::set_var("WATCHDOG_PID", "1") };
        let other = SdNotify::from_env();
        assert_eq!(other.watchdog(), None);
        other.tick("c");
        assert_eq!(recv(&sock), "STATUS=c\n");

        // Outside systemd everything is a no-op.
        unsafe {
            std::env::remove_var("NOTIFY_SOCKET");
            std::env::remove_var("WATCHDOG_USEC");
            std::env::remove_var("WATCHDOG_PID");
        }
        let off = SdNotify::from_env();
        assert!(!off.enabled());
        assert_eq!(off.watchdog(), None);
        off.planned(&snapshot());
        off.reloading();
        off.tick("d");
        off.stopping();
        assert_nothing_queued(&sock);
    }

    #[test]
    fn journald_attached_compares_stderr() {
        let _env = ENV_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let (dev, ino) = stderr_identity().unwrap();
        // SAFETY: serialized by ENV_LOCK; nothing else in this crate reads JOURNAL_STREAM.
        unsafe { std::env::set_var("JOURNAL_STREAM", format!("{dev}:{ino}")) };
        assert!(journald_attached());
        unsafe { std::env::set_var("JOURNAL_STREAM", format!("{dev}:{}", ino.wrapping_add(1))) };
        assert!(!journald_attached());
        unsafe { std::env::set_var("JOURNAL_STREAM", "garbage") };
        assert!(!journald_attached());
        unsafe { std::env::remove_var("JOURNAL_STREAM") };
        assert!(!journald_attached());
    }

    #[test]
    fn status_line_is_short_without_extras() {
        let s = StatusSnapshot::default();
        assert_eq!(status_line(&s), "0 windows, 0 in maintenance");
    }
}
