//! Observing a run and checking the properties of design.md §5 after every step.
//!
//! What "the daemon holds a cloudlet" means here: the current maintenance episode of the
//! cloudlet (it is not in NormalOperation) was started by a daemon request the controller
//! accepted (a first stream line), not by a person's request or hand. Sources, merged by time:
//! the adapter's request log, the persons' own log, the scenario's initial states.
//!
//! The checks, and the documented behaviour they allow:
//!
//! - **P1** never exit what the daemon did not enter. For every NormalOperation request the
//!   daemon sends while the cloudlet is UnderMaintenance: the daemon sent an enter for it
//!   earlier, and did *not* successfully read NormalOperation after that enter (from that
//!   read on, the journal drops ownership, so the maintenance is someone else's). Allowed:
//!   recovering a stuck intermediate state (P7); exits of cloudlets whose ownership the
//!   daemon *assumed* after losing its journal (documented, with a `journal_corrupt` alert;
//!   the journal record says `assumed`). A person who ends and re-enters maintenance between
//!   two reads of the daemon is invisible to it (the controller does not say who acted); no
//!   read, no breach.
//! - **P2** restored: a cloudlet the daemon holds and that no window has wanted for `bound`
//!   (both waits of a handshake, the stuck threshold, a retry, a verify period and the queue
//!   behind the global cap) is back to NormalOperation, unless its CRM is deaf (latched
//!   `crm_no_ack`), in which case an alert (`restore_failing`/`restore_overdue`) is shown. The
//!   clock restarts at every fault touching the cloudlet (injected fault, a person acting on
//!   it, a genuine controller timeout) and at every daemon start. Cloudlets whose ownership
//!   was lost with a corrupted journal are exempt (documented: only ownership during a
//!   current span is assumed).
//! - **P3** read before acting: between two requests on a cloudlet the daemon read it back.
//! - **P4** one request in flight per cloudlet (reads included); caps never exceeded (noted by
//!   the adapter when it happens).
//! - **P5** the journal on disk already records a request (`in_flight`, and ownership for an
//!   enter) when the request is sent; it is readable after every crash; a corrupted one is
//!   detected, kept aside byte for byte and alerted.
//! - **P6** on time: at a span start, with the daemon up, no fault or person near the cloudlet
//!   and its window unchanged since before the lead, the daemon sent the enter at the planned
//!   `enter_at` (unless a cap was full) and the cloudlet is UnderMaintenance, or the
//!   handshake itself was slower than the lead (counted as late, not a breach). An
//!   intermediate state the daemon did not cause counts as a person nearby while it lasts. All
//!   span starts are counted as on time or late (by reason).
//! - **P7** a stuck intermediate state (UpdateError, or older than 2·T + margin) of a cloudlet
//!   the daemon holds or a window wants is recovered within `bound`, unless the CRM is deaf,
//!   in which case an alert is shown.

use cloudlet_maintd::controller::{ClientError, MaintenanceState as DState, MaintenanceTarget};
use cloudlet_maintd::journal::HandshakeKind;
use cloudlet_maintd::plan::CloudletRef;
use jiff::{SignedDuration, Timestamp};
use mc_sim::{MaintenanceState as M, TrackedState};
use rand::Rng;

use super::adapter::{self, RequestEntry, org_of};
use super::driver::{Action, Holder, Outcome, PersonAct, Run};

/// Stored states that are half-way.
fn intermediate(s: M) -> bool {
    matches!(
        s,
        M::FailoverRequested | M::CrmRequested | M::NormalOperationInit
    )
}

fn parse_ts(s: &str) -> Option<Timestamp> {
    s.parse().ok()
}

impl Run {
    /// The kinds of the alerts the daemon's last status shows for a cloudlet of this name.
    fn alert_kinds_of(&self, c: &CloudletRef) -> Vec<String> {
        self.status
            .alerts
            .iter()
            .filter(|a| a.cloudlet.as_deref() == Some(c.cloudlet.as_str()))
            .map(|a| a.kind.clone())
            .collect()
    }

    fn holder(&self, c: &CloudletRef) -> Option<Holder> {
        self.last_init.get(c).map(|(_, h)| *h)
    }

    fn init(&mut self, c: &CloudletRef, at: Timestamp, h: Holder) {
        let newer = self.last_init.get(c).is_none_or(|(t, _)| *t <= at);
        if newer {
            self.last_init.insert(c.clone(), (at, h));
        }
    }

    fn alert_for(&self, c: &CloudletRef, kinds: &[&str]) -> bool {
        self.status.alerts.iter().any(|a| {
            a.cloudlet.as_deref() == Some(c.cloudlet.as_str())
                && a.region.as_deref() == Some(c.region.as_str())
                && (kinds.is_empty() || kinds.contains(&a.kind.as_str()))
        })
    }

    /// Takes in everything that happened during the last step.
    pub fn observe(&mut self) {
        self.snaps = self.sim.cloudlets();
        // The simulator's transitions.
        let transitions = self.sim.transitions_since(self.transitions_seen);
        self.transitions_seen += transitions.len();
        for t in transitions {
            let c = CloudletRef {
                region: t.region.clone(),
                cloudlet: format!("{}/{}", t.organization, t.name),
            };
            let at = self.wall(t.at);
            self.state_since.insert(c.clone(), (t.to, at));
            self.trace(
                Some(&c),
                format!("controller: {} -> {} ({})", t.from, t.to, t.actor.name()),
            );
        }
        // People.
        let events: Vec<_> = {
            let log = self.person_log.lock().unwrap_or_else(|e| e.into_inner());
            log[self.persons_seen..].to_vec()
        };
        self.persons_seen += events.len();
        for e in events {
            match e.what {
                PersonAct::Accepted(req) => {
                    if req != M::NormalOperation {
                        self.init(&e.cloudlet, e.at, Holder::Person);
                    }
                    self.trace(Some(&e.cloudlet), format!("person's {req} accepted"));
                }
                PersonAct::Ended { requested, ok } => {
                    self.trace(
                        Some(&e.cloudlet),
                        format!("person's {requested} ended ok={ok}"),
                    );
                }
                PersonAct::SetState(s) => {
                    if s != M::NormalOperation {
                        self.init(&e.cloudlet, e.at, Holder::Person);
                    }
                }
            }
            self.touch(&e.cloudlet);
        }
        // The daemon's requests, reads and errors.
        let (new_requests, accepted, ended, reads, errors) = {
            let r = adapter::lock(&self.rec);
            let new_requests: Vec<RequestEntry> = r.requests[self.requests_indexed..].to_vec();
            let accepted: Vec<(usize, CloudletRef, Timestamp)> = r.requests
                [self.requests_checked..]
                .iter()
                .filter(|e| e.target != MaintenanceTarget::Normal)
                .filter_map(|e| e.accepted_at.map(|t| (e.id, e.cloudlet.clone(), t)))
                .collect();
            let ended: Vec<RequestEntry> = r.requests[self.requests_traced..]
                .iter()
                .take_while(|e| e.ended_at.is_some())
                .cloned()
                .collect();
            let reads = r.reads[self.reads_seen..].to_vec();
            let errors = r.errors[self.errors_seen..].to_vec();
            (new_requests, accepted, ended, reads, errors)
        };
        self.requests_indexed += new_requests.len();
        for e in &new_requests {
            self.requests_of
                .entry(e.cloudlet.clone())
                .or_default()
                .push(e.id);
        }
        for (id, c, at) in accepted {
            if self.inits_seen.insert(id) {
                self.init(&c, at, Holder::Daemon);
            }
        }
        self.requests_traced += ended.len();
        for e in ended {
            let outcome = match &e.outcome {
                Some(Ok(())) => "ok".to_string(),
                Some(Err(err)) => format!("error {}: {err}", err.kind()),
                None => "abandoned (daemon crashed)".to_string(),
            };
            self.trace(
                Some(&e.cloudlet),
                format!(
                    "daemon request #{} {} sent {} (state {}{}) -> {outcome}",
                    e.id,
                    e.target,
                    e.sent_at,
                    e.state_at_send,
                    if e.update_error_at_send {
                        "/UpdateError"
                    } else {
                        ""
                    },
                ),
            );
        }
        self.reads_seen += reads.len();
        for r in reads {
            let changed = self.last_read_traced.get(&r.cloudlet) != Some(&r.state);
            if changed {
                self.last_read_traced.insert(r.cloudlet.clone(), r.state);
                let c = r.cloudlet.clone();
                self.trace(Some(&c), format!("daemon reads {}", r.state));
            }
            self.reads_of
                .entry(r.cloudlet)
                .or_default()
                .push((r.at, r.state));
        }
        self.errors_seen += errors.len();
        for (_, c, e) in errors {
            // A genuine controller timeout is a fault of the controller.
            if matches!(e, ClientError::ControllerTimeout(_)) {
                self.touch(&c);
            }
        }
        // Faults in force, and deaf CRMs, keep touching their cloudlets.
        let active: Vec<CloudletRef> = self
            .faults
            .iter()
            .filter(|f| !f.ended)
            .flat_map(|f| f.targets.clone())
            .collect();
        for c in active {
            self.touch(&c);
        }
        let deaf: Vec<CloudletRef> = self
            .crefs
            .iter()
            .zip(&self.snaps)
            .filter(|(_, s)| s.crm_stuck || s.knobs.crm_no_ack)
            .map(|(c, _)| c.clone())
            .collect();
        for c in deaf {
            self.touch(&c);
        }
        // The daemon's status.
        if let Some(d) = &self.daemon {
            self.status = d.handle.status.borrow().clone();
            let mut planned = Vec::new();
            for v in &self.status.cloudlets {
                let c = CloudletRef {
                    region: v.region.clone(),
                    cloudlet: v.cloudlet.clone(),
                };
                for s in v.current_span.iter().chain(&v.next_span) {
                    let raw = (c.clone(), s.start.clone());
                    if self.planned_raw.get(&raw) == Some(&s.enter_at) {
                        continue;
                    }
                    if let (Some(start), Some(enter)) = (parse_ts(&s.start), parse_ts(&s.enter_at))
                    {
                        planned.push(((c.clone(), start), enter));
                        self.planned_raw.insert(raw, s.enter_at.clone());
                    }
                }
            }
            self.planned_enter.extend(planned);
            let alerts: Vec<(String, Option<CloudletRef>, String, String)> = self
                .status
                .alerts
                .iter()
                .map(|a| {
                    let c = match (&a.region, &a.cloudlet) {
                        (Some(r), Some(c)) => Some(CloudletRef {
                            region: r.clone(),
                            cloudlet: c.clone(),
                        }),
                        _ => None,
                    };
                    (a.kind.clone(), c, a.since.clone(), a.message.clone())
                })
                .collect();
            for (kind, c, since, message) in alerts {
                let key = (
                    kind.clone(),
                    c.as_ref().map(ToString::to_string).unwrap_or_default(),
                    since,
                );
                if self.alerts_seen.insert(key.clone()) {
                    self.trace(c.as_ref(), format!("ALERT {kind}: {message}"));
                }
                let Some(c) = c else { continue };
                let step = self.step_now();
                // An operator reacts once to each alert (its kind and start), as its text says.
                if !matches!(kind.as_str(), "restore_failing" | "stuck_not_ours")
                    || !self.operator_pending.insert(key)
                {
                    continue;
                }
                if kind == "restore_failing" {
                    let d = self.rng.random_range(5..=30);
                    self.pending
                        .entry(step + d)
                        .or_default()
                        .push(Action::OperatorCrmRestart(c));
                } else {
                    let d = self.rng.random_range(30..=180);
                    self.pending
                        .entry(step + d)
                        .or_default()
                        .push(Action::OperatorNormal(c));
                }
            }
        }
    }

    /// The index of the step that starts now.
    pub fn step_now(&self) -> u64 {
        let d = self.now().duration_since(self.origin);
        u64::try_from(d.as_secs() / 60).unwrap_or(0)
    }

    /// Every property, after a step.
    pub fn check(&mut self) -> Outcome<()> {
        let breaches = adapter::lock(&self.rec).violations.clone();
        if let Some(v) = breaches.first() {
            return Err(self.violation("P4 (one request per cloudlet, caps)", None, v.clone()));
        }
        if self.check_corrupt_alert && self.daemon.is_some() {
            self.check_corrupt_alert = false;
            if !self.status_shows_alert("journal_corrupt") {
                return Err(self.violation(
                    "P5 (corrupt journal reported)",
                    None,
                    "the daemon started from a corrupt journal but shows no journal_corrupt alert"
                        .into(),
                ));
            }
        }
        self.check_requests()?;
        self.check_restored(false)?;
        self.check_stuck(false)?;
        self.check_on_time()?;
        Ok(())
    }

    /// P1, P3 and P5 for every request that has ended since the last check.
    fn check_requests(&mut self) -> Outcome<()> {
        loop {
            let entry = {
                let r = adapter::lock(&self.rec);
                match r.requests.get(self.requests_checked) {
                    Some(e) if e.ended_at.is_some() => e.clone(),
                    _ => break,
                }
            };
            self.requests_checked += 1;
            if !entry.arrived {
                continue;
            }
            self.check_journal_before(&entry)?;
            self.check_read_before(&entry)?;
            self.check_exit_is_ours(&entry)?;
        }
        Ok(())
    }

    fn check_journal_before(&self, e: &RequestEntry) -> Outcome<()> {
        let c = &e.cloudlet;
        let record = match &e.journal_at_send {
            Err(err) => {
                return Err(self.violation(
                    "P5 (journal written before acting)",
                    Some(c),
                    format!(
                        "request #{} {}: journal unreadable at send: {err}",
                        e.id, e.target
                    ),
                ));
            }
            Ok(None) => {
                return Err(self.violation(
                    "P5 (journal written before acting)",
                    Some(c),
                    format!(
                        "request #{} {} was sent with no journal record for {c}",
                        e.id, e.target
                    ),
                ));
            }
            Ok(Some(r)) => r,
        };
        let kind_ok = match (e.target, record.in_flight.map(|f| f.kind)) {
            (MaintenanceTarget::Start, Some(HandshakeKind::EnterFailover)) => record.owned,
            (MaintenanceTarget::StartNoFailover, Some(HandshakeKind::EnterNoFailover)) => {
                record.owned
            }
            (MaintenanceTarget::Normal, Some(HandshakeKind::Exit | HandshakeKind::Recover)) => true,
            _ => false,
        };
        if !kind_ok {
            return Err(self.violation(
                "P5 (journal written before acting)",
                Some(c),
                format!(
                    "request #{} {} was sent while the journal on disk said in_flight={:?}, owned={}",
                    e.id, e.target, record.in_flight, record.owned
                ),
            ));
        }
        Ok(())
    }

    fn check_read_before(&self, e: &RequestEntry) -> Outcome<()> {
        let c = &e.cloudlet;
        let ids = self.requests_of.get(c).cloned().unwrap_or_default();
        let previous_end = {
            let r = adapter::lock(&self.rec);
            ids.iter()
                .filter(|&&id| id < e.id)
                .filter_map(|&id| r.requests.get(id))
                .filter(|p| p.arrived)
                .filter_map(|p| p.ended_at)
                .max()
        };
        let from = previous_end.unwrap_or(Timestamp::MIN);
        let read = self
            .reads_of
            .get(c)
            .is_some_and(|reads| reads.iter().any(|(t, _)| *t > from && *t <= e.sent_at));
        if !read {
            return Err(self.violation(
                "P3 (read back before acting)",
                Some(c),
                format!(
                    "request #{} {} sent at {} without reading {c} since the previous request ended ({})",
                    e.id, e.target, e.sent_at, from
                ),
            ));
        }
        Ok(())
    }

    fn check_exit_is_ours(&mut self, e: &RequestEntry) -> Outcome<()> {
        if e.target != MaintenanceTarget::Normal || e.state_at_send != M::UnderMaintenance {
            return Ok(());
        }
        let c = &e.cloudlet;
        if matches!(&e.journal_at_send, Ok(Some(r)) if r.assumed) {
            self.report.assumed_exits += 1;
            return Ok(());
        }
        let ids = self.requests_of.get(c).cloned().unwrap_or_default();
        let last_enter = {
            let r = adapter::lock(&self.rec);
            ids.iter()
                .filter(|&&id| id < e.id)
                .filter_map(|&id| r.requests.get(id))
                .filter(|p| p.arrived && p.target != MaintenanceTarget::Normal)
                .map(|p| p.sent_at)
                .max()
        };
        let Some(entered) = last_enter else {
            return Err(self.violation(
                "P1 (never exit what the daemon did not enter)",
                Some(c),
                format!(
                    "request #{} NormalOperation sent at {} for {c} in UnderMaintenance, which the daemon never entered",
                    e.id, e.sent_at
                ),
            ));
        };
        let normal_read = self.reads_of.get(c).and_then(|reads| {
            reads
                .iter()
                .find(|(t, s)| {
                    *s == DState::NormalOperation
                        && *t > entered
                        && *t < e.sent_at
                        && !self.kills.contains(t)
                })
                .map(|(t, _)| *t)
        });
        if let Some(read) = normal_read {
            return Err(self.violation(
                "P1 (never exit what the daemon did not enter)",
                Some(c),
                format!(
                    "request #{} NormalOperation sent at {} for {c} in UnderMaintenance; the daemon's last enter was sent at {entered}, but it read NormalOperation at {read} after it, so the maintenance it ends is someone else's",
                    e.id, e.sent_at
                ),
            ));
        }
        Ok(())
    }

    fn quiet_since(&self, c: &CloudletRef) -> Timestamp {
        let fault = self.fault_last.get(c).copied().unwrap_or(Timestamp::MIN);
        fault.max(self.disturbed_at)
    }

    /// P2.
    pub fn check_restored(&mut self, last: bool) -> Outcome<()> {
        let now = self.now();
        let from = now - self.bound;
        for i in 0..self.crefs.len() {
            let c = self.crefs[i].clone();
            let s = self.snaps[i].clone();
            let held = s.maintenance_state != M::NormalOperation
                && self.holder(&c) == Some(Holder::Daemon);
            if !held {
                if s.maintenance_state == M::NormalOperation
                    && let Some(since) = self.unwanted_since.remove(&c)
                {
                    let d = now.duration_since(since).unsigned_abs();
                    if d > self.report.max_restore_delay {
                        self.report.max_restore_delay = d;
                        self.report.max_restore_what =
                            format!("seed {} {c} unwanted since {since}", self.seed);
                    }
                }
                if s.maintenance_state == M::NormalOperation {
                    self.orphaned.remove(&c);
                }
                continue;
            }
            if self.orphaned.contains(&c) {
                // Ownership lost with a corrupt journal: exempt (documented), and not counted.
                self.unwanted_since.remove(&c);
                continue;
            }
            if self.oracle.wanted_in(&c, now, now) {
                self.unwanted_since.remove(&c);
            } else {
                self.unwanted_since.entry(c.clone()).or_insert(now);
            }
            if self.oracle.wanted_in(&c, from, now) || s.busy {
                continue;
            }
            if self.daemon.is_none() || self.disturbed_at > from {
                continue;
            }
            if s.crm_stuck || s.knobs.crm_no_ack {
                if !self.alert_for(&c, &["restore_failing", "restore_overdue"]) {
                    return Err(self.violation(
                        "P2 (restored, or an alert says why not)",
                        Some(&c),
                        format!(
                            "{c} is still {} and its CRM is deaf, but the daemon shows no restore alert",
                            s.maintenance_state
                        ),
                    ));
                }
                continue;
            }
            if !last && self.quiet_since(&c) > from {
                continue;
            }
            let since = self.unwanted_since.get(&c).copied().unwrap_or(now);
            return Err(self.violation(
                "P2 (restored after the span)",
                Some(&c),
                format!(
                    "{c}, put into maintenance by the daemon, is still {} (tracked {}) although no window has wanted it since {since} and the controller has been healthy since {}; alerts for it: {:?}",
                    s.maintenance_state,
                    s.state.name(),
                    self.quiet_since(&c),
                    self.alert_kinds_of(&c)
                ),
            ));
        }
        Ok(())
    }

    /// P7.
    pub fn check_stuck(&mut self, last: bool) -> Outcome<()> {
        let now = self.now();
        let from = now - self.bound;
        let stuck_after = SignedDuration::try_from(self.settings.stuck_after).expect("stuck_after");
        for i in 0..self.crefs.len() {
            let c = self.crefs[i].clone();
            let s = self.snaps[i].clone();
            if !intermediate(s.maintenance_state) || s.busy {
                continue;
            }
            let since = self.state_since.get(&c).map_or(self.origin, |(_, t)| *t);
            let stuck =
                s.state == TrackedState::UpdateError || now.duration_since(since) >= stuck_after;
            let ours = self.holder(&c) == Some(Holder::Daemon) || self.oracle.in_window(&c, now);
            if !stuck || !ours || self.orphaned.contains(&c) {
                continue;
            }
            // The daemon can only act on a stuck state it has read: the clock starts at its
            // first read of this state (a person's leftover on a cloudlet no window needed was
            // none of its business until a window came).
            let state_name = adapter::to_daemon_state(s.maintenance_state);
            let Some(seen) = self.reads_of.get(&c).and_then(|reads| {
                reads
                    .iter()
                    .find(|(t, st)| *t >= since && *st == state_name)
                    .map(|(t, _)| *t)
            }) else {
                continue;
            };
            if seen > from {
                continue;
            }
            if self.daemon.is_none() || self.disturbed_at > from {
                continue;
            }
            if s.crm_stuck || s.knobs.crm_no_ack {
                if !self.alert_for(&c, &[]) {
                    return Err(self.violation(
                        "P7 (stuck states recovered, or an alert)",
                        Some(&c),
                        format!(
                            "{c} has been stuck in {} ({}) since {since}, its CRM is deaf, and the daemon shows no alert for it",
                            s.maintenance_state,
                            s.state.name()
                        ),
                    ));
                }
                continue;
            }
            if !last && self.quiet_since(&c) > from {
                continue;
            }
            return Err(self.violation(
                "P7 (stuck states recovered)",
                Some(&c),
                format!(
                    "{c} has been stuck in {} ({}) since {since} and the controller has been healthy since {}; it is {} and alerts for it are {:?}",
                    s.maintenance_state,
                    s.state.name(),
                    self.quiet_since(&c),
                    if self.holder(&c) == Some(Holder::Daemon) {
                        "held by the daemon"
                    } else {
                        "wanted by a window"
                    },
                    self.alert_kinds_of(&c)
                ),
            ));
        }
        Ok(())
    }

    /// P6, and the on-time / late counts.
    fn check_on_time(&mut self) -> Outcome<()> {
        let now = self.now();
        // Spans that started without the cloudlet in maintenance: did the daemon enter later?
        let waiting: Vec<(CloudletRef, (Timestamp, Timestamp, &'static str))> = self
            .pending_late
            .iter()
            .map(|(c, v)| (c.clone(), *v))
            .collect();
        for (c, (start, end, reason)) in waiting {
            // In maintenance by the daemon's doing now (whichever request got it there).
            let i = self.crefs.iter().position(|x| *x == c).expect("known");
            let entered = self.snaps[i].maintenance_state == M::UnderMaintenance
                && self.holder(&c) == Some(Holder::Daemon);
            if entered {
                *self.report.late.entry(reason).or_default() += 1;
                self.trace(
                    Some(&c),
                    format!("entered late (span from {start}): {reason}"),
                );
                self.pending_late.remove(&c);
            } else if now >= end {
                let key: &'static str = match reason {
                    "slow handshake" => "never entered (no fault nearby)",
                    "caps full" => "never entered (caps full)",
                    "daemon down or restarted" => "never entered (daemon down)",
                    "windows reloaded" => "never entered (windows reloaded)",
                    "journal lost" => "never entered (journal lost)",
                    _ => "never entered (faults or a person)",
                };
                *self.report.late.entry(key).or_default() += 1;
                self.trace(Some(&c), format!("span from {start} to {end}: {key}"));
                self.pending_late.remove(&c);
            }
        }

        // An intermediate state the daemon did not cause (a person's request that failed or
        // still runs) is a person nearby for as long as it lasts: the daemon first has to wait
        // for it to end or to become stuck (property 7) before it can enter.
        for i in 0..self.crefs.len() {
            let state = self.snaps[i].maintenance_state;
            let intermediate = state != M::NormalOperation && state != M::UnderMaintenance;
            let c = self.crefs[i].clone();
            if intermediate && self.holder(&c) != Some(Holder::Daemon) {
                self.touch(&c);
            }
        }

        let lead = self.oracle.lead_max();
        for i in 0..self.crefs.len() {
            let c = self.crefs[i].clone();
            let Some(end) = self.oracle.span_start_at(&c, now) else {
                continue;
            };
            let s = self.snaps[i].clone();
            let holder = self.holder(&c);
            if s.maintenance_state != M::NormalOperation && holder == Some(Holder::Person) {
                *self
                    .report
                    .late
                    .entry("a person's maintenance")
                    .or_default() += 1;
                continue;
            }
            let in_maint =
                s.maintenance_state == M::UnderMaintenance && holder == Some(Holder::Daemon);
            let from = now - lead - SignedDuration::from_mins(15);
            let planned = self.planned_enter.get(&(c.clone(), now)).copied();
            let org = org_of(&c);
            let saturated =
                planned.is_some_and(|p| adapter::lock(&self.rec).saturated(&org, p, now));
            let reason: &'static str = if self.daemon.is_none() || self.disturbed_at >= from {
                "daemon down or restarted"
            } else if self.fault_last.get(&c).is_some_and(|t| *t >= from) {
                "controller fault or a person nearby"
            } else if self.oracle.epoch_since(now).is_some_and(|t| t >= from) {
                "windows reloaded"
            } else if self.orphaned.contains(&c) {
                "journal lost"
            } else if saturated {
                "caps full"
            } else {
                "slow handshake"
            };
            if in_maint {
                self.report.on_time += 1;
            } else {
                self.pending_late.insert(c.clone(), (now, end, reason));
                self.trace(
                    Some(&c),
                    format!("span starts, NOT in maintenance ({reason})"),
                );
            }
            if reason != "slow handshake" && reason != "caps full" {
                continue;
            }
            // A clean span: the daemon had every chance.
            self.report.on_time_asserted += 1;
            let Some(p) = planned else {
                return Err(self.violation(
                    "P6 (on time)",
                    Some(&c),
                    format!("a window of {c} opens at {now} but the running daemon's status shows no span starting then"),
                ));
            };
            if in_maint {
                continue;
            }
            let first_enter = {
                let r = adapter::lock(&self.rec);
                self.requests_of.get(&c).and_then(|ids| {
                    ids.iter()
                        .filter_map(|&id| r.requests.get(id))
                        .find(|e| {
                            e.arrived
                                && e.target != MaintenanceTarget::Normal
                                && e.sent_at >= p - SignedDuration::from_mins(1)
                                && e.sent_at <= now
                        })
                        .cloned()
                })
            };
            let Some(e) = first_enter else {
                if saturated {
                    // Still queued behind a full cap: late, by design of the caps.
                    continue;
                }
                return Err(self.violation(
                    "P6 (on time)",
                    Some(&c),
                    format!(
                        "the span of {c} starts at {now}, enter planned at {p}, the controller was healthy and the daemon up, but no enter was sent"
                    ),
                ));
            };
            let slack = SignedDuration::from_secs(5);
            if e.sent_at > p + slack && !saturated {
                return Err(self.violation(
                    "P6 (on time)",
                    Some(&c),
                    format!(
                        "the span of {c} starts at {now}; its enter was planned at {p} but sent at {} with the caps not full",
                        e.sent_at
                    ),
                ));
            }
            if matches!(e.outcome, Some(Ok(()))) && e.ended_at.is_some_and(|t| t <= now) {
                return Err(self.violation(
                    "P6 (on time)",
                    Some(&c),
                    format!(
                        "the enter of {c} (request #{}) succeeded at {:?} but the cloudlet is {} at the span start {now}",
                        e.id, e.ended_at, s.maintenance_state
                    ),
                ));
            }
        }
        Ok(())
    }

    /// After the quiet tail: everything the daemon holds and no window wants is restored,
    /// nothing it holds or needs is stuck.
    pub fn final_check(&mut self) -> Outcome<()> {
        self.snaps = self.sim.cloudlets();
        self.check()?;
        self.check_restored(true)?;
        self.check_stuck(true)?;
        Ok(())
    }
}
