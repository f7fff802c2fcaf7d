//! `decide`: what should happen to one cloudlet now. Pure and level-triggered.
//!
//! The engine calls this with a state it has *just read back* from the controller, the span that
//! wants maintenance now (if any), what the journal remembers about ownership, and `now`. The
//! answer depends only on "what should be true" and "what is true", never on which edge was just
//! seen, so a missed edge, a restart, a reload or a person acting by hand corrects itself on the
//! next evaluation. The rules, and the properties of design.md §5 they protect:
//!
//! - NormalOperation while a span wants maintenance → enter (late if the span already started),
//!   unless a person restored this cloudlet during this very span after we had entered it: then
//!   we respect their choice and do not fight them (noted in status).
//! - UnderMaintenance while no span wants it → exit **only if owned** (property 1).
//! - UnderMaintenance while a span wants it but not owned → a person did it: leave it, mark it
//!   external, never exit it.
//! - An intermediate state with tracked state `UpdateError` (or older than `stuck_after`) is
//!   stuck → request NormalOperation, then enter again if the span still wants it (property 7).
//!   A stuck cloudlet we neither own nor need is left alone with an alert.
//! - An intermediate state without error is a handshake still running server-side (ours after a
//!   dropped stream, or someone else's) → wait and read again (property 3).

use jiff::Timestamp;
use serde::Serialize;

use crate::controller::MaintenanceState;
use crate::journal::SpanId;
use crate::plan::Span;

/// A state read back from the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: MaintenanceState,
    /// The tracked object state is `UpdateError` (a handshake timed out half-way).
    pub update_error: bool,
    /// When this intermediate state was first seen (None when not intermediate).
    pub intermediate_since: Option<Timestamp>,
}

/// What the journal remembers about a cloudlet that matters for deciding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ownership {
    /// The daemon put it into maintenance.
    pub owned: bool,
    /// The span we entered it for (set once we saw it UnderMaintenance after our enter).
    pub entered_for: Option<SpanId>,
    /// A person restored it during this span after we entered it.
    pub released_by_hand: Option<SpanId>,
}

/// Everything `decide` looks at.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    pub now: Timestamp,
    /// The span that wants maintenance now (`enter_at <= now < end`), if any.
    pub span: Option<&'a Span>,
    pub observed: &'a Observed,
    pub ownership: &'a Ownership,
    /// An intermediate state older than this is treated as stuck even without `UpdateError`
    /// (a controller restart can leave one behind): 2·T + margin.
    pub stuck_after: jiff::SignedDuration,
}

/// The decision for one cloudlet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Nothing to do.
    Idle { why: IdleReason },
    /// Send MaintenanceStart (failover) or MaintenanceStartNoFailover.
    Enter { failover: bool, late: bool },
    /// Restore NormalOperation: owned, and no span wants it any more.
    Exit,
    /// Clear a stuck intermediate state by requesting NormalOperation; enter again afterwards
    /// if a span still wants maintenance.
    Recover { then_enter: bool },
    /// A handshake is still running server-side: read again later.
    Wait,
    /// Stuck in an intermediate state that is neither ours nor needed: alert, do not touch.
    StuckNotOurs,
}

/// Why nothing is done, for status and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleReason {
    /// Normal operation and no span wants maintenance.
    Normal,
    /// In maintenance, owned, and a span wants it.
    InMaintenance,
    /// In maintenance by someone else's hand; never exited by the daemon.
    External,
    /// A person restored it during the current span after we had entered it.
    ReleasedByHand,
}

impl IdleReason {
    /// The stable snake_case name (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            IdleReason::Normal => "normal",
            IdleReason::InMaintenance => "in_maintenance",
            IdleReason::External => "external",
            IdleReason::ReleasedByHand => "released_by_hand",
        }
    }
}

impl Decision {
    /// True when the decision sends an UpdateCloudlet request.
    pub fn sends_request(&self) -> bool {
        matches!(
            self,
            Decision::Enter { .. } | Decision::Exit | Decision::Recover { .. }
        )
    }
}

/// Decides what to do with one cloudlet. Pure.
pub fn decide(s: &Situation<'_>) -> Decision {
    let wants = s.span.is_some();
    let current = s.span.map(SpanId::of);
    let owned = s.ownership.owned;
    match s.observed.state {
        MaintenanceState::NormalOperation => match s.span {
            Some(span) => {
                let released = current.is_some()
                    && (s.ownership.released_by_hand == current
                        || (owned && s.ownership.entered_for == current));
                if released {
                    Decision::Idle {
                        why: IdleReason::ReleasedByHand,
                    }
                } else {
                    Decision::Enter {
                        failover: span.failover,
                        late: s.now >= span.start,
                    }
                }
            }
            None => Decision::Idle {
                why: IdleReason::Normal,
            },
        },
        MaintenanceState::UnderMaintenance => match (owned, wants) {
            (true, true) => Decision::Idle {
                why: IdleReason::InMaintenance,
            },
            (true, false) => Decision::Exit,
            (false, _) => Decision::Idle {
                why: IdleReason::External,
            },
        },
        // Everything else is a half-way state (the request-only values 1 and 5 are never
        // stored; the AutoProvInfo/CloudletInfo values should not appear on a Cloudlet, but if
        // they do they are just as much "not settled").
        _ => {
            let stale = s
                .observed
                .intermediate_since
                .is_some_and(|since| s.now.duration_since(since) >= s.stuck_after);
            if !(s.observed.update_error || stale) {
                Decision::Wait
            } else if owned || wants {
                Decision::Recover { then_enter: wants }
            } else {
                Decision::StuckNotOurs
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;
    use std::time::Duration;

    use jiff::SignedDuration;
    use jiff::tz::TimeZone;

    use super::*;
    use crate::plan::{CloudletRef, LeadChoice, LeadSource};

    fn ts(s: &str) -> Timestamp {
        Timestamp::from_str(s).unwrap()
    }

    fn span(failover: bool) -> Span {
        Span {
            cloudlet: CloudletRef {
                region: "EU".into(),
                cloudlet: "O/c".into(),
            },
            enter_at: ts("2027-01-10T01:49:00Z"),
            start: ts("2027-01-10T02:00:00Z"),
            end: ts("2027-01-10T06:00:00Z"),
            windows: vec!["w".into()],
            failover,
            lead: LeadChoice {
                duration: Duration::from_secs(660),
                source: LeadSource::WorstCase,
            },
            timezone: TimeZone::UTC,
            timezone_name: "UTC".into(),
            notes: vec![],
        }
    }

    fn obs(state: MaintenanceState) -> Observed {
        Observed {
            state,
            update_error: false,
            intermediate_since: None,
        }
    }

    fn run(now: &str, span: Option<&Span>, o: &Observed, own: &Ownership) -> Decision {
        decide(&Situation {
            now: ts(now),
            span,
            observed: o,
            ownership: own,
            stuck_after: SignedDuration::from_mins(11),
        })
    }

    const OWNED: Ownership = Ownership {
        owned: true,
        entered_for: None,
        released_by_hand: None,
    };
    const NOT_OWNED: Ownership = Ownership {
        owned: false,
        entered_for: None,
        released_by_hand: None,
    };

    #[test]
    fn enters_when_a_span_wants_it_and_flags_late_entries() {
        let sp = span(true);
        let normal = obs(MaintenanceState::NormalOperation);
        assert_eq!(
            run("2027-01-10T01:49:00Z", Some(&sp), &normal, &NOT_OWNED),
            Decision::Enter {
                failover: true,
                late: false
            }
        );
        assert_eq!(
            run(
                "2027-01-10T02:30:00Z",
                Some(&span(false)),
                &normal,
                &NOT_OWNED
            ),
            Decision::Enter {
                failover: false,
                late: true
            }
        );
        assert_eq!(
            run("2027-01-10T07:00:00Z", None, &normal, &NOT_OWNED),
            Decision::Idle {
                why: IdleReason::Normal
            }
        );
    }

    #[test]
    fn exits_only_what_it_owns() {
        let um = obs(MaintenanceState::UnderMaintenance);
        assert_eq!(
            run("2027-01-10T07:00:00Z", None, &um, &OWNED),
            Decision::Exit
        );
        assert_eq!(
            run("2027-01-10T07:00:00Z", None, &um, &NOT_OWNED),
            Decision::Idle {
                why: IdleReason::External
            }
        );
        let sp = span(true);
        assert_eq!(
            run("2027-01-10T03:00:00Z", Some(&sp), &um, &NOT_OWNED),
            Decision::Idle {
                why: IdleReason::External
            }
        );
        assert_eq!(
            run("2027-01-10T03:00:00Z", Some(&sp), &um, &OWNED),
            Decision::Idle {
                why: IdleReason::InMaintenance
            }
        );
    }

    #[test]
    fn stuck_states_are_recovered_and_running_ones_awaited() {
        let sp = span(true);
        let mut stuck = obs(MaintenanceState::CrmRequested);
        stuck.update_error = true;
        assert_eq!(
            run("2027-01-10T01:55:00Z", Some(&sp), &stuck, &OWNED),
            Decision::Recover { then_enter: true }
        );
        let mut exit_stuck = obs(MaintenanceState::NormalOperationInit);
        exit_stuck.update_error = true;
        assert_eq!(
            run("2027-01-10T07:00:00Z", None, &exit_stuck, &OWNED),
            Decision::Recover { then_enter: false }
        );
        assert_eq!(
            run("2027-01-10T07:00:00Z", None, &exit_stuck, &NOT_OWNED),
            Decision::StuckNotOurs
        );
        let running = obs(MaintenanceState::FailoverRequested);
        assert_eq!(
            run("2027-01-10T01:55:00Z", Some(&sp), &running, &OWNED),
            Decision::Wait
        );
        // Without UpdateError, but older than 2·T + margin: stuck all the same.
        let mut old = obs(MaintenanceState::FailoverRequested);
        old.intermediate_since = Some(ts("2027-01-10T01:40:00Z"));
        assert_eq!(
            run("2027-01-10T01:55:00Z", Some(&sp), &old, &OWNED),
            Decision::Recover { then_enter: true }
        );
    }

    #[test]
    fn a_person_restoring_during_the_span_is_respected() {
        let sp = span(true);
        let normal = obs(MaintenanceState::NormalOperation);
        let entered = Ownership {
            owned: true,
            entered_for: Some(SpanId::of(&sp)),
            released_by_hand: None,
        };
        assert_eq!(
            run("2027-01-10T03:00:00Z", Some(&sp), &normal, &entered),
            Decision::Idle {
                why: IdleReason::ReleasedByHand
            }
        );
        let released = Ownership {
            owned: false,
            entered_for: None,
            released_by_hand: Some(SpanId::of(&sp)),
        };
        assert_eq!(
            run("2027-01-10T03:00:00Z", Some(&sp), &normal, &released),
            Decision::Idle {
                why: IdleReason::ReleasedByHand
            }
        );
        // The next span is entered again as usual.
        let mut next = span(true);
        next.start = ts("2027-01-17T02:00:00Z");
        next.enter_at = ts("2027-01-17T01:49:00Z");
        next.end = ts("2027-01-17T06:00:00Z");
        assert!(matches!(
            run("2027-01-17T01:50:00Z", Some(&next), &normal, &released),
            Decision::Enter { .. }
        ));
    }
}
