//! The controller's maintenance handshake, run as a task of its own.
//!
//! The real controller runs the whole handshake inside the UpdateCloudlet request, but it does
//! not stop when the client goes away, and it holds the per-cloudlet action lock until the end.
//! To get the same behaviour the HTTP handler only validates and takes the lock; the handshake
//! runs here, in a spawned task that owns the lock ([`ActionGuard`]) and reports progress through
//! a channel. A dropped connection drops the receiving end and nothing else.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::state::{MaintenanceState as M, Reply, TrackedState, msg, reply_within};
use crate::world::{ActionGuard, Actor, Sim};

/// One line of an UpdateCloudlet stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// `{"data":{"message":...}}`
    Data(String),
    /// `{"result":{"message":...,"code":400}}`: the handshake failed; always the last line.
    Result(String),
}

/// Sent instead of a line when the simulator shuts down mid-handshake: the response must not end
/// cleanly, or a client would read the missing `result` line as success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aborted;

/// What the handshake task sends to the streamed response.
pub(crate) type Progress = Result<Line, Aborted>;

impl Line {
    pub fn to_json_line(&self) -> String {
        #[derive(Serialize)]
        struct Message<'a> {
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Data<'a> {
            data: Message<'a>,
        }
        #[derive(Serialize)]
        struct Failure<'a> {
            message: &'a str,
            code: u16,
        }
        #[derive(Serialize)]
        struct Outcome<'a> {
            result: Failure<'a>,
        }
        let text = match self {
            Line::Data(m) => serde_json::to_string(&Data {
                data: Message { message: m },
            }),
            Line::Result(m) => serde_json::to_string(&Outcome {
                result: Failure {
                    message: m,
                    code: 400,
                },
            }),
        };
        // Serializing two string fields cannot fail; fall back to an empty object regardless.
        let mut line = text.unwrap_or_else(|_| "{}".to_string());
        line.push('\n');
        line
    }
}

/// Runs MaintenanceStart (`failover`) or MaintenanceStartNoFailover, streaming lines to `tx`.
pub(crate) fn spawn_enter(
    sim: Arc<Sim>,
    guard: ActionGuard,
    failover: bool,
    tx: mpsc::UnboundedSender<Progress>,
) {
    tokio::spawn(async move {
        let cancel = sim.cancel.clone();
        tokio::select! {
            () = enter(&sim, &guard, failover, &tx) => {}
            () = cancel.cancelled() => { let _ = tx.send(Err(Aborted)); }
        }
        drop(guard);
    });
}

/// Runs NormalOperation; the outcome goes to `done` only when the CRM answered or T elapsed.
pub(crate) fn spawn_exit(
    sim: Arc<Sim>,
    guard: ActionGuard,
    done: oneshot::Sender<Result<(), &'static str>>,
) {
    tokio::spawn(async move {
        let cancel = sim.cancel.clone();
        tokio::select! {
            outcome = exit(&sim, &guard) => { let _ = done.send(outcome); }
            () = cancel.cancelled() => {}
        }
        drop(guard);
    });
}

async fn enter(
    sim: &Arc<Sim>,
    guard: &ActionGuard,
    failover: bool,
    tx: &mpsc::UnboundedSender<Progress>,
) {
    let idx = guard.idx;
    // A client that went away is not an error: the handshake carries on.
    let send = |line: Line| {
        let _ = tx.send(Ok(line));
    };
    if failover {
        send(Line::Data(msg::STARTING_FAILOVER.into()));
        sim.store(idx, M::FailoverRequested, Actor::Controller);
        match wait_autoprov(sim, idx).await {
            Reply::Done => send(Line::Data(msg::FAILOVER_COMPLETED.into())),
            Reply::Error => {
                send(Line::Data(failover_error_line(sim, idx)));
                sim.store(idx, M::NormalOperation, Actor::Controller);
                send(Line::Result(msg::FAILOVER_ABORT.into()));
                return;
            }
            Reply::TimedOut => {
                set_tracked(sim, idx, TrackedState::UpdateError);
                send(Line::Result(msg::AUTOPROV_TIMEOUT.into()));
                return;
            }
        }
    }
    send(Line::Data(msg::STARTING_CRM.into()));
    sim.store(idx, M::CrmRequested, Actor::Controller);
    if wait_crm(sim, guard, M::CrmUnderMaintenance).await != Reply::Done {
        send(Line::Result(msg::CRM_TIMEOUT.into()));
        return;
    }
    send(Line::Data(msg::CRM_STARTED.into()));
    {
        let stamp = sim.stamp();
        let mut w = sim.lock();
        w.store(idx, M::UnderMaintenance, Actor::Controller, stamp.clone());
        w.event(idx, msg::EVENT_START, M::UnderMaintenance, stamp);
    }
    send(Line::Data(msg::IN_MAINTENANCE.into()));
}

async fn exit(sim: &Arc<Sim>, guard: &ActionGuard) -> Result<(), &'static str> {
    let idx = guard.idx;
    sim.store(idx, M::NormalOperationInit, Actor::Controller);
    if wait_crm(sim, guard, M::NormalOperation).await != Reply::Done {
        return Err(msg::CRM_TIMEOUT);
    }
    let stamp = sim.stamp();
    let mut w = sim.lock();
    w.store(idx, M::NormalOperation, Actor::Controller, stamp.clone());
    w.event(idx, msg::EVENT_DONE, M::NormalOperation, stamp);
    Ok(())
}

fn set_tracked(sim: &Sim, idx: usize, state: TrackedState) {
    if let Some(c) = sim.lock().cloudlets.get_mut(idx) {
        c.tracked = state;
    }
}

fn failover_error_line(sim: &Sim, idx: usize) -> String {
    let w = sim.lock();
    let (org, name) = w
        .cloudlets
        .get(idx)
        .map(|c| (c.organization.as_str(), c.name.as_str()))
        .unwrap_or_default();
    format!(
        "Failover error: AppInst ha-app-1 of {org} on cloudlet {name} could not be moved: no other cloudlet of {org} has free resources"
    )
}

/// Waits for the autoprov service: its latency, capped by T.
async fn wait_autoprov(sim: &Sim, idx: usize) -> Reply {
    let (sleep_for, reply) = {
        let mut w = sim.lock();
        let Some(knobs) = w.cloudlets.get(idx).map(|c| c.knobs.clone()) else {
            return Reply::TimedOut;
        };
        let latency = w.sample(&knobs.autoprov_latency);
        let t = w.maintenance_timeout;
        let reply = reply_within(latency, t, knobs.autoprov_no_reply, knobs.autoprov_error);
        let waited = if reply == Reply::TimedOut { t } else { latency };
        (w.scaled(waited), reply)
    };
    tokio::time::sleep(sleep_for).await;
    reply
}

/// Waits for the CRM to report `target` in its CloudletInfo: its latency, capped by T. A CRM
/// restart during the wait acknowledges at once. On success the tracked state is `Ready`; on a
/// timeout it is `UpdateError`, and a CRM that was merely slow still acknowledges later (which
/// sets `Ready` again, but does not move the stored state: nobody waits for it any more).
async fn wait_crm(sim: &Arc<Sim>, guard: &ActionGuard, target: M) -> Reply {
    let idx = guard.idx;
    let Some(notify) = sim.lock().cloudlets.get(idx).map(|c| c.crm_restart.clone()) else {
        return Reply::TimedOut;
    };
    let mut restarted = pin!(notify.notified());
    restarted.as_mut().enable();
    let (sleep_for, mut reply, never, late) = {
        let mut w = sim.lock();
        let Some((knobs, stuck)) = w.cloudlets.get(idx).map(|c| (c.knobs.clone(), c.crm_stuck))
        else {
            return Reply::TimedOut;
        };
        let latency = w.sample(&knobs.crm_latency);
        let t = w.maintenance_timeout;
        let never = knobs.crm_no_ack || stuck;
        let reply = reply_within(latency, t, never, false);
        let waited = if reply == Reply::TimedOut { t } else { latency };
        let late = (!never && latency > t).then(|| w.scaled(latency - t));
        (w.scaled(waited), reply, never, late)
    };
    tokio::select! {
        () = tokio::time::sleep(sleep_for) => {}
        () = restarted => reply = Reply::Done,
    }
    let mut w = sim.lock();
    let Some(c) = w.cloudlets.get_mut(idx) else {
        return Reply::TimedOut;
    };
    if reply == Reply::Done {
        c.info = target;
        c.tracked = TrackedState::Ready;
    } else {
        c.tracked = TrackedState::UpdateError;
        if never {
            // The CRM only reacts to changes: having missed this one, it stays deaf.
            c.crm_stuck = true;
        }
        if let Some(late) = late {
            spawn_late_ack(sim.clone(), idx, guard.generation, target, late);
        }
    }
    reply
}

/// A slow CRM's acknowledgement arriving after the controller gave up.
fn spawn_late_ack(sim: Arc<Sim>, idx: usize, generation: u64, target: M, after: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(after) => {}
            () = sim.cancel.cancelled() => return,
        }
        let mut w = sim.lock();
        if let Some(c) = w.cloudlets.get_mut(idx)
            && c.generation == generation
            && !c.busy
            && !c.crm_stuck
        {
            c.info = target;
            c.tracked = TrackedState::Ready;
            tracing::info!(
                "{}/{}/{}: late CRM acknowledgement ({target}), state Ready",
                c.region,
                c.organization,
                c.name
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_ndjson() {
        assert_eq!(
            Line::Data("x".into()).to_json_line(),
            "{\"data\":{\"message\":\"x\"}}\n"
        );
        assert_eq!(
            Line::Result("y".into()).to_json_line(),
            "{\"result\":{\"message\":\"y\",\"code\":400}}\n"
        );
    }
}
