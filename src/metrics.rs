//! Prometheus metrics (`GET /metrics`), prefix `cloudlet_maintd_`.
//!
//! Two kinds of numbers: events the engine counts as they happen (handshake durations by kind
//! and outcome, controller errors by kind, entries on time or late), and gauges that describe
//! the current state, recomputed from the engine's status snapshot at scrape time (files,
//! windows, cloudlets by observed state, active spans, learned leads, restores overdue, next
//! action, reload result). Computing gauges at scrape time keeps them consistent with
//! `/v1/status` and costs nothing between scrapes.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::StatusSnapshot;

/// Content type of the exposition: the classic Prometheus text format, which every Prometheus
/// and `promtool check metrics` read.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TimingLabel {
    timing: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloudletLabels {
    region: String,
    cloudlet: String,
}

type HistogramFamily = Family<HandshakeLabels, Histogram, fn() -> Histogram>;

fn handshake_histogram() -> Histogram {
    // 1 s … ~68 min: a handshake is seconds to 2·T (+ failover work).
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 2.0, 13,
    ))
}

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    handshakes: HistogramFamily,
    look_lateness: Histogram,
    controller_errors: Family<KindLabel, Counter>,
    entries: Family<TimingLabel, Counter>,
    reload_success: Gauge,
    reload_timestamp: Gauge<f64, AtomicU64>,
    files: Family<StateLabel, Gauge>,
    windows: Gauge,
    cloudlets: Family<StateLabel, Gauge>,
    spans_active: Gauge,
    lead_seconds: Family<CloudletLabels, Gauge>,
    restore_overdue: Gauge,
    alerts: Family<KindLabel, Gauge>,
    next_action: Gauge<f64, AtomicU64>,
    /// Serializes scrapes (gauges are reset and refilled).
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloudlet_maintd");
        let handshakes: HistogramFamily = Family::new_with_constructor(handshake_histogram);
        // 1 ms … ~16 s: the timer loop should act within milliseconds of an edge.
        let look_lateness = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15),
        );
        let controller_errors = Family::<KindLabel, Counter>::default();
        let entries = Family::<TimingLabel, Counter>::default();
        let reload_success = Gauge::default();
        let reload_timestamp = Gauge::<f64, AtomicU64>::default();
        let files = Family::<StateLabel, Gauge>::default();
        let windows = Gauge::default();
        let cloudlets = Family::<StateLabel, Gauge>::default();
        let spans_active = Gauge::default();
        let lead_seconds = Family::<CloudletLabels, Gauge>::default();
        let restore_overdue = Gauge::default();
        let alerts = Family::<KindLabel, Gauge>::default();
        let next_action = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "handshake_duration_seconds",
            "Duration of UpdateCloudlet handshakes by kind (enter_failover, enter_no_failover, exit, recover) and outcome (ok, error)",
            handshakes.clone(),
        );
        registry.register(
            "look_lateness_seconds",
            "Delay from the instant a cloudlet was due for a look (a plan edge, a retry, a poll) to the start of its worker",
            look_lateness.clone(),
        );
        registry.register(
            "controller_errors",
            "Errors from the controller by kind (transport, protocol, forbidden, timed_out, ...)",
            controller_errors.clone(),
        );
        registry.register(
            "entries",
            "Cloudlets put into maintenance, by timing (on_time: before the span started; late)",
            entries.clone(),
        );
        registry.register(
            "config_reload_success",
            "1 if the last load of windows.d had no invalid file, else 0",
            reload_success.clone(),
        );
        registry.register(
            "config_reload_timestamp_seconds",
            "Unix time of the last load of windows.d",
            reload_timestamp.clone(),
        );
        registry.register(
            "files",
            "Window files by state (ok: loaded; invalid: rejected; stale: rejected, last good version in force)",
            files.clone(),
        );
        registry.register("windows", "Windows in force", windows.clone());
        registry.register(
            "cloudlets",
            "Watched cloudlets by last observed maintenance state",
            cloudlets.clone(),
        );
        registry.register(
            "spans_active",
            "Spans that want maintenance now (from enter time to end)",
            spans_active.clone(),
        );
        registry.register(
            "lead_seconds",
            "Lead of the current or next span per cloudlet",
            lead_seconds.clone(),
        );
        registry.register(
            "restore_overdue",
            "Cloudlets the daemon owns that no span wants and that are not back to normal yet",
            restore_overdue.clone(),
        );
        registry.register("alerts", "Active alerts by kind", alerts.clone());
        registry.register(
            "next_action_timestamp_seconds",
            "Unix time of the next planned enter or exit (0 if none)",
            next_action.clone(),
        );
        Metrics {
            registry,
            handshakes,
            look_lateness,
            controller_errors,
            entries,
            reload_success,
            reload_timestamp,
            files,
            windows,
            cloudlets,
            spans_active,
            lead_seconds,
            restore_overdue,
            alerts,
            next_action,
            scrape: Mutex::new(()),
        }
    }

    /// Records one finished handshake. `kind` is the journal's snake_case kind.
    pub fn handshake(&self, kind: &str, ok: bool, duration: Duration) {
        self.handshakes
            .get_or_create(&HandshakeLabels {
                kind: kind.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .observe(duration.as_secs_f64());
    }

    /// Records how late a look started after it was due (never negative).
    pub fn look_lateness(&self, lateness: Duration) {
        self.look_lateness.observe(lateness.as_secs_f64());
    }

    /// Counts one error from the controller (`ClientError::kind`).
    pub fn controller_error(&self, kind: &str) {
        self.controller_errors
            .get_or_create(&KindLabel {
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts one cloudlet put into maintenance.
    pub fn entry(&self, late: bool) {
        self.entries
            .get_or_create(&TimingLabel {
                timing: if late { "late" } else { "on_time" }.to_string(),
            })
            .inc();
    }

    /// Refreshes the gauges from `status` and encodes everything.
    pub fn render(&self, status: &StatusSnapshot) -> String {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.refresh(status);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        openmetrics_to_prometheus(&out)
    }

    fn refresh(&self, s: &StatusSnapshot) {
        let ts = |t: &str| {
            t.parse::<jiff::Timestamp>()
                .map(|t| t.as_millisecond() as f64 / 1000.0)
                .unwrap_or(0.0)
        };
        match &s.last_reload {
            Some(r) => {
                self.reload_success.set(i64::from(r.ok));
                self.reload_timestamp.set(ts(&r.at));
            }
            None => {
                self.reload_success.set(0);
                self.reload_timestamp.set(0.0);
            }
        }
        self.files.clear();
        for state in ["ok", "invalid", "stale"] {
            let n = s.files.iter().filter(|f| f.status == state).count();
            self.files
                .get_or_create(&StateLabel {
                    state: state.into(),
                })
                .set(n as i64);
        }
        self.windows.set(s.counts.windows as i64);
        self.cloudlets.clear();
        self.lead_seconds.clear();
        let mut active = 0;
        let mut overdue = 0;
        for c in &s.cloudlets {
            let state = c.observed.clone().unwrap_or_else(|| "Unknown".into());
            self.cloudlets.get_or_create(&StateLabel { state }).inc();
            if c.desired == "maintenance" {
                active += 1;
            }
            if c.owned
                && c.desired != "maintenance"
                && c.observed.as_deref() != Some("NormalOperation")
            {
                overdue += 1;
            }
            if let Some(lead) = c.lead_seconds {
                self.lead_seconds
                    .get_or_create(&CloudletLabels {
                        region: c.region.clone(),
                        cloudlet: c.cloudlet.clone(),
                    })
                    .set(i64::try_from(lead).unwrap_or(i64::MAX));
            }
        }
        self.spans_active.set(active);
        self.restore_overdue.set(overdue);
        self.alerts.clear();
        for a in &s.alerts {
            self.alerts
                .get_or_create(&KindLabel {
                    kind: a.kind.clone(),
                })
                .inc();
        }
        self.next_action
            .set(s.next_action.as_ref().map(|n| ts(&n.at)).unwrap_or(0.0));
    }
}

/// prometheus-client writes OpenMetrics, where a counter family `x` has samples `x_total` and
/// the text ends with `# EOF`. The classic text format names the family `x_total` in its HELP
/// and TYPE lines and has no EOF marker; this converts the one into the other.
pub fn openmetrics_to_prometheus(text: &str) -> String {
    let counters: std::collections::HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .filter(|name| !name.ends_with("_total"))
        .collect();
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Wraps the daemon's lifecycle hooks (sd_notify) so that engine events also feed the metrics.
pub struct Metered<L> {
    pub inner: std::sync::Arc<L>,
    pub metrics: std::sync::Arc<Metrics>,
}

impl<L: crate::engine::Lifecycle> crate::engine::Lifecycle for Metered<L> {
    fn planned(&self, status: &StatusSnapshot) {
        self.inner.planned(status);
    }
    fn reloading(&self) {
        self.inner.reloading();
    }
    fn reloaded(&self, status: &StatusSnapshot) {
        self.inner.reloaded(status);
    }
    fn tick(&self, status_line: &str) {
        self.inner.tick(status_line);
    }
    fn stopping(&self) {
        self.inner.stopping();
    }
    fn handshake_finished(&self, kind: &str, ok: bool, duration: Duration) {
        self.metrics.handshake(kind, ok, duration);
        self.inner.handshake_finished(kind, ok, duration);
    }
    fn controller_error(&self, kind: &str) {
        self.metrics.controller_error(kind);
        self.inner.controller_error(kind);
    }
    fn entered(&self, late: bool) {
        self.metrics.entry(late);
        self.inner.entered(late);
    }
    fn look_started(&self, due: jiff::Timestamp, started: jiff::Timestamp) {
        let late = started.duration_since(due).unsigned_abs();
        self.metrics
            .look_lateness(if started < due { Duration::ZERO } else { late });
        self.inner.look_started(due, started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::status::{CloudletView, FileView, ReloadInfo};

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::new();
        m.handshake("enter_failover", true, Duration::from_secs(42));
        m.controller_error("transport");
        m.entry(false);
        let status = StatusSnapshot {
            last_reload: Some(ReloadInfo {
                at: "2026-12-06T00:00:00Z".into(),
                ok: true,
                ..ReloadInfo::default()
            }),
            files: std::sync::Arc::new(vec![FileView {
                status: "ok".into(),
                ..FileView::default()
            }]),
            cloudlets: vec![std::sync::Arc::new(CloudletView {
                region: "EU".into(),
                cloudlet: "TDG/berlin-1".into(),
                observed: Some("UnderMaintenance".into()),
                desired: "maintenance".into(),
                lead_seconds: Some(660),
                ..CloudletView::default()
            })],
            ..StatusSnapshot::default()
        };
        let text = m.render(&status);
        for needle in [
            "cloudlet_maintd_handshake_duration_seconds_count{kind=\"enter_failover\",outcome=\"ok\"} 1",
            "cloudlet_maintd_controller_errors_total{kind=\"transport\"} 1",
            "cloudlet_maintd_entries_total{timing=\"on_time\"} 1",
            "cloudlet_maintd_config_reload_success 1",
            "cloudlet_maintd_files{state=\"ok\"} 1",
            "cloudlet_maintd_cloudlets{state=\"UnderMaintenance\"} 1",
            "cloudlet_maintd_lead_seconds{region=\"EU\",cloudlet=\"TDG/berlin-1\"} 660",
            "cloudlet_maintd_spans_active 1",
            "# TYPE cloudlet_maintd_entries_total counter",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("# EOF"));
    }
}
