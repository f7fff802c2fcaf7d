//! Learned lead times (design.md §6).
//!
//! Why it exists: entering maintenance is a slow handshake, and the window must find the
//! cloudlet already in maintenance. Starting at the protocol's worst case (2·T + margin, about
//! 11 minutes with the default T) is always safe but keeps cloudlets idle in maintenance for
//! minutes before most windows; real handshakes are usually much faster, and vary per cloudlet.
//! So the daemon measures every enter handshake, per cloudlet and per kind, and uses a high
//! quantile of the recent ones, scaled by a safety factor, plus a margin, clamped to the
//! configured bounds:
//!
//! ```text
//! lead = min(clamp(quantile_q(recent) × safety_factor + margin, lead_min, lead_max), worst case)
//! ```
//!
//! The worst case caps a learned lead too: a handshake cannot outlast the controller's own
//! timeouts, so a lead above it buys nothing. The default safety factor (2.4) is large because
//! the lead must cover the tail, not the typical handshake: a lognormal's 99.9th percentile is
//! about 3× its 95th at the spreads measured (`cloudlet-maintd-bench lead`, docs/benchmarks.md).
//!
//! With fewer than `min_samples` measurements of the needed kind the lead is the worst case.
//! The two enter kinds are kept apart: an enter *without* failover skips the AutoProv step, so
//! its history says nothing about an enter *with* failover (which then falls back to the worst
//! case until it has history of its own).
//!
//! **Quantile choice: nearest rank.** The q-quantile of n sorted samples is the sample at rank
//! ⌈q·n⌉ (1-based, clamped to 1..=n). It is always a duration that was actually observed, never
//! an interpolation below the slowest relevant measurement, and it is exact on the small
//! histories used here (p95 of 1..=100 s is 95 s).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::config::Config;
use crate::journal::{HandshakeKind, Journal};
use crate::plan::{CloudletRef, LeadChoice, LeadPolicy, LeadSource, WorstCaseLead};

/// Fewest measurements of a kind before they replace the worst case.
pub const DEFAULT_MIN_SAMPLES: usize = 5;

/// How learned leads are computed (from `[schedule]` in `maintd.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct LeadSettings {
    /// Quantile of recent enter durations, 0.5–1.0 (`lead_quantile`).
    pub quantile: f64,
    /// Multiplier applied to the quantile, ≥ 1.0 (`lead_safety_factor`).
    pub safety_factor: f64,
    /// Added after scaling (`lead_margin`).
    pub margin: Duration,
    /// Lower bound of a learned lead (`lead_min`).
    pub min: Duration,
    /// Upper bound of a learned lead (`lead_max`); wins over `min` if they cross.
    pub max: Duration,
    /// Measurements kept per cloudlet and kind (`lead_history`).
    pub history: usize,
    /// Fewest measurements before learning replaces the worst case.
    pub min_samples: usize,
}

impl LeadSettings {
    pub fn from_config(cfg: &Config) -> Self {
        let s = &cfg.schedule;
        LeadSettings {
            quantile: s.lead_quantile,
            safety_factor: s.lead_safety_factor,
            margin: s.lead_margin,
            min: s.lead_min,
            max: s.lead_max,
            history: s.lead_history,
            min_samples: DEFAULT_MIN_SAMPLES,
        }
    }
}

/// The cold-start policy from the config: `2·T + lead_margin` / `T + lead_margin`.
pub fn worst_case_from_config(cfg: &Config) -> WorstCaseLead {
    WorstCaseLead {
        maintenance_timeout: cfg.controller.maintenance_timeout,
        margin: cfg.schedule.lead_margin,
    }
}

/// Recent enter durations of one cloudlet, newest last.
#[derive(Debug, Clone, Default)]
struct History {
    failover: VecDeque<Duration>,
    no_failover: VecDeque<Duration>,
}

impl History {
    fn of(&self, failover: bool) -> &VecDeque<Duration> {
        if failover {
            &self.failover
        } else {
            &self.no_failover
        }
    }

    fn of_mut(&mut self, failover: bool) -> &mut VecDeque<Duration> {
        if failover {
            &mut self.failover
        } else {
            &mut self.no_failover
        }
    }
}

/// The `lead = "auto"` policy: per cloudlet and enter kind, learned from measured handshakes.
#[derive(Debug, Clone)]
pub struct LearnedLeads {
    settings: LeadSettings,
    worst: WorstCaseLead,
    samples: HashMap<CloudletRef, History>,
}

impl LearnedLeads {
    /// No history yet: every lead is the worst case.
    pub fn new(settings: LeadSettings, worst: WorstCaseLead) -> Self {
        LearnedLeads {
            settings,
            worst,
            samples: HashMap::new(),
        }
    }

    /// Seeds the history from the journal's measured enter durations (the newest `history`
    /// of each kind, per cloudlet).
    pub fn from_journal(settings: LeadSettings, worst: WorstCaseLead, journal: &Journal) -> Self {
        let mut leads = LearnedLeads::new(settings, worst);
        for (cloudlet, record) in journal.iter() {
            for failover in [true, false] {
                let kind = HandshakeKind::enter(failover);
                for &ms in record.durations.of(kind) {
                    leads.record(&cloudlet, failover, Duration::from_millis(ms));
                }
            }
        }
        leads
    }

    pub fn settings(&self) -> &LeadSettings {
        &self.settings
    }

    /// Adds one measured enter duration (with or without failover), keeping the newest
    /// `history`.
    pub fn record(&mut self, cloudlet: &CloudletRef, failover: bool, d: Duration) {
        let cap = self.settings.history;
        let queue = self
            .samples
            .entry(cloudlet.clone())
            .or_default()
            .of_mut(failover);
        queue.push_back(d);
        while queue.len() > cap {
            queue.pop_front();
        }
    }

    /// How many measurements of this kind the cloudlet has.
    pub fn sample_count(&self, cloudlet: &CloudletRef, failover: bool) -> usize {
        self.samples
            .get(cloudlet)
            .map_or(0, |h| h.of(failover).len())
    }

    /// The lead for an enter of `cloudlet` with or without failover, and why.
    pub fn lead_for(&self, cloudlet: &CloudletRef, failover: bool) -> LeadChoice {
        let recent = self.samples.get(cloudlet).map(|h| h.of(failover));
        let n = recent.map_or(0, VecDeque::len);
        let worst = LeadChoice {
            duration: self.worst.duration(failover),
            source: LeadSource::WorstCase,
        };
        let Some(recent) = recent else {
            return worst;
        };
        if n == 0 || n < self.settings.min_samples {
            return worst;
        }
        let mut sorted: Vec<Duration> = recent.iter().copied().collect();
        sorted.sort_unstable();
        let Some(q) = nearest_rank(&sorted, self.settings.quantile) else {
            return worst;
        };
        let s = &self.settings;
        // Never above the worst case: the protocol bounds a handshake (each phase times out
        // after T), so a longer lead would only add idle time in maintenance.
        let lead = scale(q, s.safety_factor)
            .saturating_add(s.margin)
            .max(s.min)
            .min(s.max)
            .min(worst.duration);
        LeadChoice {
            duration: lead,
            source: LeadSource::Learned {
                samples: n,
                quantile: s.quantile,
            },
        }
    }
}

impl LeadPolicy for LearnedLeads {
    fn auto_lead(&self, cloudlet: &CloudletRef, failover: bool) -> LeadChoice {
        self.lead_for(cloudlet, failover)
    }
}

/// Nearest-rank quantile of sorted samples: the sample at rank ⌈q·n⌉ (1-based, clamped to
/// 1..=n). A tiny epsilon keeps `0.7 × 10 = 7.000000000000001` at rank 7.
fn nearest_rank(sorted: &[Duration], q: f64) -> Option<Duration> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = (q * n as f64 - 1e-9).ceil();
    let rank = if rank.is_finite() && rank >= 1.0 {
        (rank as usize).min(n)
    } else {
        1
    };
    sorted.get(rank - 1).copied()
}

/// `d × factor`, rounded to the millisecond; saturates instead of panicking on overflow or a
/// nonsensical factor.
fn scale(d: Duration, factor: f64) -> Duration {
    let ms = (d.as_millis() as f64 * factor).round();
    if !ms.is_finite() || ms >= u64::MAX as f64 {
        Duration::MAX
    } else if ms <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_millis(ms as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(300);
    const MARGIN: Duration = Duration::from_secs(60);

    fn settings() -> LeadSettings {
        LeadSettings::from_config(&Config::default())
    }

    fn worst() -> WorstCaseLead {
        WorstCaseLead {
            maintenance_timeout: T,
            margin: MARGIN,
        }
    }

    fn cref(name: &str) -> CloudletRef {
        CloudletRef {
            region: "EU".to_string(),
            cloudlet: format!("TDG/{name}"),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn settings_follow_the_config() {
        let cfg = Config::default();
        let s = LeadSettings::from_config(&cfg);
        assert_eq!(s.quantile, 0.95);
        assert_eq!(s.safety_factor, 2.4);
        assert_eq!(DEFAULT_MIN_SAMPLES, 5);
        assert_eq!((s.margin, s.min, s.max), (secs(60), secs(60), secs(1800)));
        assert_eq!((s.history, s.min_samples), (50, DEFAULT_MIN_SAMPLES));
        let w = worst_case_from_config(&cfg);
        assert_eq!(w.duration(true), secs(660));
        assert_eq!(w.duration(false), secs(360));
    }

    #[test]
    fn cold_start_is_the_worst_case_for_both_kinds() {
        let mut leads = LearnedLeads::new(settings(), worst());
        let c = cref("berlin-1");
        let f = leads.lead_for(&c, true);
        assert_eq!(f.duration, secs(2 * 300 + 60));
        assert_eq!(f.source, LeadSource::WorstCase);
        let nf = leads.lead_for(&c, false);
        assert_eq!(nf.duration, secs(300 + 60));
        assert_eq!(nf.source, LeadSource::WorstCase);

        // Below min_samples (5): still the worst case.
        for _ in 0..4 {
            leads.record(&c, true, secs(30));
        }
        assert_eq!(leads.lead_for(&c, true).source, LeadSource::WorstCase);
        leads.record(&c, true, secs(30));
        assert!(matches!(
            leads.lead_for(&c, true).source,
            LeadSource::Learned { samples: 5, .. }
        ));
        // Through the trait, as the planner sees it.
        let policy: &dyn LeadPolicy = &leads;
        assert_eq!(policy.auto_lead(&c, true), leads.lead_for(&c, true));
    }

    #[test]
    fn quantile_math_on_known_samples() {
        let c = cref("berlin-1");
        let mut s = settings();
        s.history = 100;
        let mut leads = LearnedLeads::new(s, worst());
        for v in 1..=100 {
            leads.record(&c, false, secs(v));
        }
        let sorted: Vec<Duration> = (1..=100).map(secs).collect();
        assert_eq!(nearest_rank(&sorted, 0.95), Some(secs(95)));
        // p95 = 95 s; × 2.4 = 228 s; + 60 s margin = 288 s (under the worst case, 360 s).
        let choice = leads.lead_for(&c, false);
        assert_eq!(choice.duration, secs(288));
        assert_eq!(
            choice.source,
            LeadSource::Learned {
                samples: 100,
                quantile: 0.95
            }
        );
        assert_eq!(choice.source.to_string(), "learned p95 of 100");

        // Arrival order does not matter, only the values.
        let mut leads = LearnedLeads::new(
            LeadSettings {
                history: 100,
                ..settings()
            },
            worst(),
        );
        for v in (1..=100).rev() {
            leads.record(&c, false, secs(v));
        }
        assert_eq!(leads.lead_for(&c, false).duration, secs(288));

        // With the default history (50) only 51..=100 are kept: p95 = rank 48 = 98 s;
        // × 2.4 = 235.2 s; + 60 s = 295.2 s.
        let mut leads = LearnedLeads::new(settings(), worst());
        for v in 1..=100 {
            leads.record(&c, false, secs(v));
        }
        assert_eq!(leads.sample_count(&c, false), 50);
        assert_eq!(
            leads.lead_for(&c, false).duration,
            Duration::from_millis(295_200)
        );
    }

    #[test]
    fn nearest_rank_edges() {
        let v: Vec<Duration> = (1..=10).map(secs).collect();
        assert_eq!(nearest_rank(&v, 0.7), Some(secs(7)));
        assert_eq!(nearest_rank(&v, 0.5), Some(secs(5)));
        assert_eq!(nearest_rank(&v, 1.0), Some(secs(10)));
        assert_eq!(nearest_rank(&v, 0.0), Some(secs(1)));
        assert_eq!(nearest_rank(&v, f64::NAN), Some(secs(1)));
        assert_eq!(nearest_rank(&v[..1], 0.95), Some(secs(1)));
        assert_eq!(nearest_rank(&[], 0.95), None);
        assert_eq!(scale(secs(95), 1.2), secs(114));
        assert_eq!(scale(secs(1), f64::INFINITY), Duration::MAX);
        assert_eq!(scale(secs(1), -1.0), Duration::ZERO);
    }

    #[test]
    fn clamped_at_min_and_max() {
        let c = cref("berlin-1");
        let mut s = settings();
        s.margin = Duration::ZERO;
        s.safety_factor = 1.0;
        s.min = secs(60);
        s.max = secs(1800);
        let mut leads = LearnedLeads::new(s.clone(), worst());
        for _ in 0..5 {
            leads.record(&c, true, Duration::from_millis(800));
        }
        assert_eq!(leads.lead_for(&c, true).duration, secs(60));

        // lead_max below the worst case: lead_max.
        s.max = secs(500);
        let mut leads = LearnedLeads::new(s.clone(), worst());
        for _ in 0..5 {
            leads.record(&c, true, secs(3600));
        }
        let choice = leads.lead_for(&c, true);
        assert_eq!(choice.duration, secs(500));
        assert!(matches!(choice.source, LeadSource::Learned { .. }));

        // lead_max above the worst case: the worst case (2·T + margin with failover, T +
        // margin without), since no handshake can take longer.
        s.max = secs(1800);
        let mut leads = LearnedLeads::new(s.clone(), worst());
        for _ in 0..5 {
            leads.record(&c, true, secs(3600));
            leads.record(&c, false, secs(3600));
        }
        assert_eq!(leads.lead_for(&c, true).duration, secs(660));
        assert_eq!(leads.lead_for(&c, false).duration, secs(360));
        assert!(matches!(
            leads.lead_for(&c, true).source,
            LeadSource::Learned { .. }
        ));

        // Crossed bounds never panic; max wins.
        s.min = secs(900);
        s.max = secs(600);
        let mut leads = LearnedLeads::new(s, worst());
        for _ in 0..5 {
            leads.record(&c, true, secs(1));
        }
        assert_eq!(leads.lead_for(&c, true).duration, secs(600));
    }

    #[test]
    fn history_cap_keeps_the_newest() {
        let c = cref("berlin-1");
        let mut s = settings();
        s.history = 3;
        s.min_samples = 3;
        s.quantile = 1.0;
        s.safety_factor = 1.0;
        s.margin = Duration::ZERO;
        s.min = Duration::ZERO;
        let mut leads = LearnedLeads::new(s, worst());
        // Old slow handshakes, then three fast ones: the slow ones must be forgotten.
        for v in [900, 800, 700, 100, 110, 120] {
            leads.record(&c, true, secs(v));
        }
        assert_eq!(leads.sample_count(&c, true), 3);
        assert_eq!(leads.lead_for(&c, true).duration, secs(120));
    }

    #[test]
    fn no_failover_history_is_not_used_for_failover() {
        let c = cref("berlin-1");
        let mut leads = LearnedLeads::new(settings(), worst());
        for _ in 0..10 {
            leads.record(&c, false, secs(40));
        }
        assert!(matches!(
            leads.lead_for(&c, false).source,
            LeadSource::Learned { samples: 10, .. }
        ));
        let f = leads.lead_for(&c, true);
        assert_eq!(f.source, LeadSource::WorstCase);
        assert_eq!(f.duration, secs(660));
        // Another cloudlet's history does not leak either.
        assert_eq!(
            leads.lead_for(&cref("berlin-2"), false).source,
            LeadSource::WorstCase
        );
    }

    #[test]
    fn from_journal_picks_up_enter_durations() {
        let mut journal = Journal::default();
        let c = cref("berlin-1");
        let r = journal.record_mut(&c);
        for ms in [10_000, 20_000, 30_000, 40_000, 50_000] {
            r.durations.push(HandshakeKind::EnterFailover, ms, 50);
        }
        for ms in [5_000, 6_000] {
            r.durations.push(HandshakeKind::EnterNoFailover, ms, 50);
        }
        for ms in [1_000, 1_000, 1_000, 1_000] {
            r.durations.push(HandshakeKind::Exit, ms, 50);
        }
        let leads = LearnedLeads::from_journal(settings(), worst(), &journal);
        assert_eq!(leads.sample_count(&c, true), 5);
        assert_eq!(leads.sample_count(&c, false), 2, "exits are not enters");
        // p95 of 5 samples = rank 5 = 50 s; × 2.4 + 60 s = 180 s.
        let f = leads.lead_for(&c, true);
        assert_eq!(f.duration, secs(180));
        assert_eq!(
            f.source,
            LeadSource::Learned {
                samples: 5,
                quantile: 0.95
            }
        );
        assert_eq!(leads.lead_for(&c, false).source, LeadSource::WorstCase);

        // A history cap smaller than the journal's keeps the newest.
        let mut s = settings();
        s.history = 3;
        s.min_samples = 3;
        s.quantile = 0.5;
        let leads = LearnedLeads::from_journal(s, worst(), &journal);
        assert_eq!(leads.sample_count(&c, true), 3);
        // Median of 30, 40, 50 s = rank 2 = 40 s; × 2.4 + 60 s = 156 s.
        assert_eq!(leads.lead_for(&c, true).duration, secs(156));
    }
}
