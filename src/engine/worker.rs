//! One worker: one look at one cloudlet, and at most one handshake.
//!
//! Read back → reconcile the journal with what is true → `decide` → (journal first) act → read
//! back again → journal → report. The loop guarantees at most one worker per cloudlet; the
//! semaphores cap concurrent handshakes globally and per organization. Every controller answer,
//! including failures, ends in a read-back, because the stream's end is not the truth.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::Semaphore;

use super::decide::{Decision, Observed, Ownership, Situation, decide};
use super::{Clock, EnteredOutcome, HandshakeRecord, WorkerCtx, WorkerReport};
use crate::controller::{
    ClientError, CloudletKey, CloudletStatus, Controller, MaintenanceState, MaintenanceTarget,
};
use crate::journal::{HandshakeKind, InFlight, Outcome, SpanId};
use crate::plan::{CloudletRef, Span};
use crate::timeutil::{plus_std, signed};

/// What the loop hands a worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub cloudlet: CloudletRef,
    /// The span that wants maintenance now, if any.
    pub span: Option<Span>,
    /// The last observation (to know how long an intermediate state has lasted).
    pub previous: Option<Observed>,
    /// The delay before the next try if this one fails.
    pub backoff: Duration,
    /// The journal was lost (corrupt): if this cloudlet is found UnderMaintenance during a span
    /// that wants it, assume the daemon put it there (and say so).
    pub assume_ownership: bool,
}

/// Why a worker could not do its job (kept short: shown in status).
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkerError {
    #[error("{0}")]
    Controller(#[from] ClientError),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("invalid cloudlet name \"{0}\"")]
    BadName(String),
}

fn key_of(c: &CloudletRef) -> Result<CloudletKey, WorkerError> {
    c.cloudlet
        .parse::<CloudletKey>()
        .map_err(|_| WorkerError::BadName(c.cloudlet.clone()))
}

fn observe(status: &CloudletStatus, previous: Option<&Observed>, now: Timestamp) -> Observed {
    let state = status.maintenance_state;
    let settled = matches!(
        state,
        MaintenanceState::NormalOperation | MaintenanceState::UnderMaintenance
    );
    let intermediate_since = if settled {
        None
    } else {
        match previous {
            Some(p) if p.state == state => p.intermediate_since.or(Some(now)),
            _ => Some(now),
        }
    };
    Observed {
        state,
        update_error: status.tracked_state.as_deref() == Some("UpdateError"),
        intermediate_since,
    }
}

/// The worker's future is kept small (its large parts, the HTTP requests and the handshake,
/// are boxed when they start): a large fleet's first looks spawn one worker per cloudlet, and
/// most of them wait for a read permit.
pub(crate) async fn run<C: Controller, K: Clock>(
    ctx: Arc<WorkerCtx<C, K>>,
    org: Arc<Semaphore>,
    job: Job,
) -> WorkerReport {
    let mut report = WorkerReport {
        cloudlet: job.cloudlet.clone(),
        observed: None,
        decision: None,
        handshake: None,
        enter_sample: None,
        entered: None,
        error: None,
        next_check: None,
        failed: false,
        succeeded: false,
        alert: None,
    };
    if let Err(e) = run_inner(&ctx, &org, &job, &mut report).await {
        let now = ctx.clock.now();
        let retry = plus_std(now, job.backoff);
        report.failed = true;
        report.next_check = Some(report.next_check.map_or(retry, |t| t.min(retry)));
        report.alert = report
            .alert
            .take()
            .or_else(|| alert_for_error(&e, &job, now));
        tracing::warn!(cloudlet = %job.cloudlet, "{e:#}");
        report.error = Some(e);
    }
    report
}

/// Errors that need a person get an alert right away; others only when they make us late.
fn alert_for_error(e: &WorkerError, job: &Job, now: Timestamp) -> Option<(String, String)> {
    if let Some(alert) = needs_a_person(e) {
        return Some(alert);
    }
    match e {
        WorkerError::Journal(_) => Some(("journal_write_failed".into(), e.to_string())),
        // A failed look at a cloudlet last seen in maintenance (a verify read hitting a 502)
        // says nothing about it leaving maintenance: no alarm.
        _ if job
            .previous
            .as_ref()
            .is_some_and(|o| o.state == MaintenanceState::UnderMaintenance) =>
        {
            None
        }
        _ => job.span.as_ref().and_then(|s| {
            (now >= s.start).then(|| {
                (
                    "not_in_maintenance_at_start".to_string(),
                    format!(
                        "{} is not in maintenance although its span started at {}: {e}",
                        job.cloudlet,
                        s.rfc3339(s.start)
                    ),
                )
            })
        }),
    }
}

async fn show<C: Controller, K: Clock>(
    ctx: &WorkerCtx<C, K>,
    region: &str,
    key: &CloudletKey,
) -> Result<CloudletStatus, ClientError> {
    // A read after a handshake is worth a couple of quick retries: it decides what we record.
    let mut last = None;
    for attempt in 0..3u32 {
        let read = async {
            // Reads are capped apart from handshakes; a closed semaphore never happens (the
            // engine never closes it), and would only lift the cap.
            let _permit = ctx.reads.acquire().await.ok();
            // Boxed, and only once the permit is held: an HTTP request's future is kilobytes,
            // and thousands of workers may be waiting here (first looks of a large fleet).
            Box::pin(ctx.controller.show_cloudlet(region, key)).await
        };
        match read.await {
            Ok(s) => return Ok(s),
            Err(e) if e.is_retryable() && attempt < 2 => {
                last = Some(e);
                ctx.clock
                    .sleep(Duration::from_millis(250) * (attempt + 1))
                    .await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ClientError::TimedOut {
        what: "ShowCloudlet".into(),
        after: Duration::ZERO,
    }))
}

async fn run_inner<C: Controller, K: Clock>(
    ctx: &WorkerCtx<C, K>,
    org: &Semaphore,
    job: &Job,
    report: &mut WorkerReport,
) -> Result<(), WorkerError> {
    let c = &job.cloudlet;
    let key = key_of(c)?;

    // 1. Read back.
    let status = show(ctx, &c.region, &key).await?;
    // The rest is boxed: until the read is done, the worker stays small (see `run`).
    Box::pin(act(ctx, org, job, report, key, status)).await
}

/// Everything after the first read-back: reconcile, decide, act.
async fn act<C: Controller, K: Clock>(
    ctx: &WorkerCtx<C, K>,
    org: &Semaphore,
    job: &Job,
    report: &mut WorkerReport,
    key: CloudletKey,
    status: CloudletStatus,
) -> Result<(), WorkerError> {
    let c = &job.cloudlet;
    let settings = &ctx.settings;
    let now = ctx.clock.now();
    let observed = observe(&status, job.previous.as_ref(), now);
    report.observed = Some(observed.clone());

    // 2. Reconcile the journal with what is true.
    let current = job.span.as_ref().map(SpanId::of);
    let state = observed.state;
    let assume = job.assume_ownership;
    // Worked out on a copy, and committed only if it changes something: this runs on every
    // look (every poll and verify), and an unchanged journal needs no write and no fsync.
    let before = ctx.journal.read(|j| j.record(c).cloned());
    let mut record = before
        .clone()
        .unwrap_or_else(|| crate::journal::CloudletRecord::new(c));
    let ownership = {
        let r = &mut record;
        {
            // A request recorded as in flight by an earlier run is over or running server-side;
            // what matters now is the state we just read.
            r.in_flight = None;
            if state == MaintenanceState::NormalOperation {
                r.restore_failures = 0;
            }
            match state {
                MaintenanceState::NormalOperation if r.owned => {
                    if current.is_some() && r.entered_for == current {
                        r.released_by_hand = current;
                        tracing::warn!(cloudlet = %c, "restored by hand during its span; not re-entering until the next span");
                    }
                    r.owned = false;
                    r.assumed = false;
                    r.entered_for = None;
                    r.owned_since = None;
                }
                MaintenanceState::UnderMaintenance if r.owned && current.is_some() => {
                    r.entered_for = current;
                }
                MaintenanceState::UnderMaintenance if assume && !r.owned && current.is_some() => {
                    tracing::warn!(cloudlet = %c, "journal was lost: assuming this daemon put the cloudlet into maintenance for its current span");
                    r.owned = true;
                    r.assumed = true;
                    r.owned_since = Some(now);
                    r.entered_for = current;
                }
                _ => {}
            }
            Ownership {
                owned: r.owned,
                entered_for: r.entered_for,
                released_by_hand: r.released_by_hand,
            }
        }
    };
    if before.as_ref() != Some(&record) {
        ctx.journal.commit(|j| *j.record_mut(c) = record).await?;
    }

    // 3. Decide.
    let decision = decide(&Situation {
        now,
        span: job.span.as_ref(),
        observed: &observed,
        ownership: &ownership,
        stuck_after: signed(settings.stuck_after),
    });
    report.decision = Some(decision.clone());

    // 4. Act.
    match decision {
        Decision::Idle { .. } => {
            report.succeeded = true;
            if job.span.is_some() {
                report.next_check = Some(plus_std(now, settings.verify_interval));
            }
            Ok(())
        }
        Decision::Wait => {
            report.next_check = Some(plus_std(now, settings.poll_interval));
            Ok(())
        }
        Decision::StuckNotOurs => {
            report.next_check = Some(plus_std(now, settings.retry_max));
            report.alert = Some((
                "stuck_not_ours".into(),
                format!(
                    "{c} is stuck in {state} (UpdateError) and was not put there by this daemon; not touching it. A person should request NormalOperation (mcctl cloudlet update region={} cloudletorg={} cloudlet={} maintenancestate=NormalOperation)",
                    c.region, key.organization, key.name
                ),
            ));
            Ok(())
        }
        Decision::Enter { failover, late } => {
            let span = job.span.as_ref();
            let kind = if failover {
                HandshakeKind::EnterFailover
            } else {
                HandshakeKind::EnterNoFailover
            };
            let target = if failover {
                MaintenanceTarget::Start
            } else {
                MaintenanceTarget::StartNoFailover
            };
            let entering_for = span.map(SpanId::of);
            let (result, after) = Box::pin(handshake(
                ctx,
                org,
                c,
                &key,
                kind,
                target,
                entering_for,
                report,
            ))
            .await?;
            let now = ctx.clock.now();
            match after.as_ref().map(|o| o.state) {
                Some(MaintenanceState::UnderMaintenance) => {
                    report.succeeded = true;
                    if let (Ok(d), Some(s)) = (&result, span) {
                        report.enter_sample = Some((failover, *d));
                        report.entered = Some(EnteredOutcome {
                            span_start: s.start,
                            late: late || now >= s.start,
                        });
                    } else if let Some(s) = span {
                        report.entered = Some(EnteredOutcome {
                            span_start: s.start,
                            late: late || now >= s.start,
                        });
                    }
                    report.next_check = Some(plus_std(now, settings.verify_interval));
                    if late || span.is_some_and(|s| now >= s.start) {
                        tracing::warn!(cloudlet = %c, "entered maintenance late (after the span started)");
                    } else {
                        tracing::info!(cloudlet = %c, "in maintenance");
                    }
                }
                Some(s) if s != MaintenanceState::NormalOperation => {
                    // Still running server-side (dropped stream) or stuck: look again soon.
                    report.failed = result.is_err();
                    report.next_check = Some(plus_std(now, settings.poll_interval));
                }
                _ => {
                    report.failed = true;
                    report.next_check = Some(plus_std(now, job.backoff));
                    if let Some(s) = span.filter(|s| now >= s.start) {
                        report.alert =
                            Some((
                                "not_in_maintenance_at_start".into(),
                                format!(
                                    "{c} is not in maintenance although its span started at {}: {}",
                                    s.rfc3339(s.start),
                                    result.as_ref().err().map(|e| e.to_string()).unwrap_or_else(
                                        || "the controller did not complete the request".into()
                                    )
                                ),
                            ));
                    }
                }
            }
            if let Err(e) = result {
                let e = WorkerError::Controller(e);
                if let Some(alert) = needs_a_person(&e) {
                    report.alert = Some(alert);
                    report.next_check = Some(plus_std(now, settings.retry_max.max(job.backoff)));
                }
                report.error = Some(e);
            }
            Ok(())
        }
        Decision::Exit | Decision::Recover { .. } => {
            let recovering = matches!(decision, Decision::Recover { .. });
            let then_enter = matches!(decision, Decision::Recover { then_enter: true });
            let failures = ctx
                .journal
                .read(|j| j.record(c).map(|r| r.restore_failures).unwrap_or(0));
            // Every NormalOperation request counts here: the recovery of a stuck state during
            // a span as much as the restore after one. A CRM that missed one request misses
            // every retry until it is restarted (protocol §2), so in both cases the daemon must
            // stop after a few and say so, not retry every few minutes for ever in silence.
            if failures >= settings.restore_attempts {
                // Stop hammering: only watch, and say loudly what a person must do.
                report.next_check = Some(plus_std(now, settings.retry_max));
                report.alert = Some((
                    "restore_failing".into(),
                    restore_help(c, &key, state, failures),
                ));
                return Ok(());
            }
            let kind = if recovering {
                HandshakeKind::Recover
            } else {
                HandshakeKind::Exit
            };
            let (result, after) = Box::pin(handshake(
                ctx,
                org,
                c,
                &key,
                kind,
                MaintenanceTarget::Normal,
                None,
                report,
            ))
            .await?;
            let now = ctx.clock.now();
            let back_to_normal = after
                .as_ref()
                .is_some_and(|o| o.state == MaintenanceState::NormalOperation);
            if back_to_normal {
                report.succeeded = true;
                ctx.journal
                    .commit(|j| {
                        let r = j.record_mut(c);
                        r.restore_failures = 0;
                        r.owned = false;
                        r.assumed = false;
                        r.entered_for = None;
                        r.owned_since = None;
                    })
                    .await?;
                // After a recovery the span may still want maintenance: look again at once.
                report.next_check = Some(if then_enter {
                    now
                } else {
                    plus_std(now, settings.verify_interval)
                });
                tracing::info!(cloudlet = %c, "back to normal operation");
            } else {
                report.failed = true;
                let still_running = after
                    .as_ref()
                    .is_some_and(|o| !o.update_error && o.state.is_intermediate());
                // Only a CRM that did not acknowledge counts towards giving up (protocol §2: it
                // then ignores every retry until restarted). A 502, a broken connection or a
                // request refused as in progress says nothing about the CRM: back off and try
                // again, or a burst of 502s would stop restores for good.
                let crm_missed = matches!(&result, Err(ClientError::ControllerTimeout(_)));
                let failures = if !crm_missed {
                    ctx.journal
                        .read(|j| j.record(c).map(|r| r.restore_failures).unwrap_or(0))
                } else {
                    ctx.journal
                        .commit(|j| {
                            let r = j.record_mut(c);
                            r.restore_failures = r.restore_failures.saturating_add(1);
                            r.restore_failures
                        })
                        .await?
                };
                report.next_check = Some(if still_running {
                    plus_std(now, settings.poll_interval)
                } else {
                    plus_std(now, job.backoff)
                });
                if failures >= settings.restore_attempts {
                    let state = after.as_ref().map(|o| o.state).unwrap_or(state);
                    report.alert = Some((
                        "restore_failing".into(),
                        restore_help(c, &key, state, failures),
                    ));
                } else {
                    report.alert = Some((
                        "restore_overdue".into(),
                        format!(
                            "{c} could not be {} yet ({failures} of {} attempts missed by the CRM): {}",
                            if then_enter {
                                "recovered from a stuck state (to enter maintenance again)"
                            } else {
                                "restored"
                            },
                            settings.restore_attempts,
                            result.as_ref().err().map(|e| e.to_string()).unwrap_or_else(
                                || format!(
                                    "still {}",
                                    after.as_ref().map(|o| o.state).unwrap_or(state)
                                )
                            )
                        ),
                    ));
                }
            }
            if let Err(e) = result {
                let e = WorkerError::Controller(e);
                if let Some(alert) = needs_a_person(&e) {
                    report.alert = Some(alert);
                    report.next_check = Some(plus_std(now, settings.retry_max.max(job.backoff)));
                }
                report.error = Some(e);
            }
            Ok(())
        }
    }
}

/// Errors no retry will fix: a person must change a role, a password or a name.
fn needs_a_person(e: &WorkerError) -> Option<(String, String)> {
    match e {
        WorkerError::Controller(ClientError::Forbidden { .. })
        | WorkerError::Controller(ClientError::BadCredentials { .. }) => {
            Some(("forbidden".into(), e.to_string()))
        }
        WorkerError::Controller(ClientError::NotFound { .. }) => {
            Some(("not_found".into(), e.to_string()))
        }
        _ => None,
    }
}

fn restore_help(
    c: &CloudletRef,
    key: &CloudletKey,
    state: MaintenanceState,
    attempts: u32,
) -> String {
    format!(
        "{c} cannot be restored: still {state} after {attempts} attempts. Its CRM has probably missed the request, and only restarting the CRM of cloudlet {} (organization {}) clears it; the daemon keeps watching and records the cloudlet as restored once it reads NormalOperation.",
        key.name, key.organization
    )
}

/// Runs one handshake under the caps, with the journal written before and after, and reads
/// the state back. Returns the request's result (with its duration) and the state read back.
#[allow(clippy::too_many_arguments)]
async fn handshake<C: Controller, K: Clock>(
    ctx: &WorkerCtx<C, K>,
    org: &Semaphore,
    c: &CloudletRef,
    key: &CloudletKey,
    kind: HandshakeKind,
    target: MaintenanceTarget,
    // `Some(span)` for an enter: the span it is for (recorded once in maintenance).
    entering_for: Option<crate::journal::SpanId>,
    report: &mut WorkerReport,
) -> Result<(Result<Duration, ClientError>, Option<Observed>), WorkerError> {
    // The organization's permit first: a worker waiting for its organization must not sit on
    // a global permit meanwhile, or one busy organization would hold up all the others.
    let org_permit = org.acquire().await;
    let global_permit = ctx.global.acquire().await;
    let entering = target != MaintenanceTarget::Normal;
    let sent_at = ctx.clock.now();
    // The journal first (property 5): a crash from here on is read back on the next start.
    ctx.journal
        .commit(|j| {
            let r = j.record_mut(c);
            if entering && !r.owned {
                r.owned = true;
                r.owned_since = Some(sent_at);
            }
            r.in_flight = Some(InFlight { kind, sent_at });
        })
        .await?;
    tracing::info!(cloudlet = %c, request = %target, "sending UpdateCloudlet");
    let started = tokio::time::Instant::now();
    let cloudlet_name = c.to_string();
    let mut progress = |line: &str| {
        tracing::debug!(cloudlet = %cloudlet_name, "controller: {line}");
    };
    // Boxed like the reads: workers waiting for a permit above stay small.
    let result = Box::pin(
        ctx.controller
            .set_maintenance(&c.region, key, target, &mut progress),
    )
    .await;
    let elapsed = started.elapsed();
    let permits = (org_permit, global_permit);
    let _held_until_read_back = match &result {
        // The caps count handshakes: once the controller has answered the stream to its end,
        // this one is over, and the read-back and the journal need no handshake slot.
        Ok(_) => {
            drop(permits);
            None
        }
        // After an error the controller may still be working on it: keep the slot until the
        // state has been read back.
        Err(e) => {
            tracing::warn!(cloudlet = %c, request = %target, "handshake failed: {e}");
            Some(permits)
        }
    };
    let now = ctx.clock.now();
    let after = match show(ctx, &c.region, key).await {
        Ok(s) => Some(observe(&s, None, now)),
        Err(e) => {
            tracing::warn!(cloudlet = %c, "cannot read the state back after the handshake: {e}");
            None
        }
    };
    let ok = result.is_ok()
        && after
            .as_ref()
            .is_some_and(|o| o.state == target.final_state());
    let history_cap = ctx.settings.history_cap;
    let error = result.as_ref().err().map(|e| e.to_string());
    let observed_name = after.as_ref().map(|o| o.state.to_string());
    ctx.journal
        .commit(|j| {
            let r = j.record_mut(c);
            r.in_flight = None;
            r.last_outcome = Some(Outcome {
                kind,
                at: now,
                ok,
                duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                observed: observed_name,
                error: error.clone(),
            });
            if ok {
                r.durations.push(
                    kind,
                    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    history_cap,
                );
            }
            if entering
                && entering_for.is_some()
                && after
                    .as_ref()
                    .is_some_and(|o| o.state == MaintenanceState::UnderMaintenance)
            {
                r.entered_for = entering_for;
            }
            // An enter that left the cloudlet in NormalOperation changed nothing: not ours.
            if entering
                && after
                    .as_ref()
                    .is_some_and(|o| o.state == MaintenanceState::NormalOperation)
            {
                r.owned = false;
                r.owned_since = None;
            }
        })
        .await?;
    report.handshake = Some(HandshakeRecord {
        kind,
        started_at: sent_at,
        duration: elapsed,
        ok,
        observed: after.as_ref().map(|o| o.state),
        error,
    });
    if let Some(o) = &after {
        report.observed = Some(o.clone());
    }
    Ok((result.map(|()| elapsed), after))
}
