//! The pure parts of the controller's cloudlet maintenance state machine: the enums, how they are
//! spelt on the wire, which request is allowed from which state, and the exact strings the
//! controller sends.
//!
//! Nothing here does I/O or waits. The asynchronous runner (`runner.rs`) walks the steps decided
//! here, so the rules of `controller-protocol.md` §1–2 can be read (and unit-tested) in one place.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `dme.MaintenanceState`. The numbers are the proto numbers; the names the CamelCase JSON names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaintenanceState {
    NormalOperation,
    MaintenanceStart,
    FailoverRequested,
    FailoverDone,
    FailoverError,
    MaintenanceStartNoFailover,
    CrmRequested,
    CrmUnderMaintenance,
    CrmError,
    NormalOperationInit,
    UnderMaintenance,
}

use MaintenanceState as M;

const ALL: [MaintenanceState; 11] = [
    M::NormalOperation,
    M::MaintenanceStart,
    M::FailoverRequested,
    M::FailoverDone,
    M::FailoverError,
    M::MaintenanceStartNoFailover,
    M::CrmRequested,
    M::CrmUnderMaintenance,
    M::CrmError,
    M::NormalOperationInit,
    M::UnderMaintenance,
];

impl MaintenanceState {
    /// The proto number (what old servers print).
    pub fn number(self) -> i64 {
        match self {
            M::NormalOperation => 0,
            M::MaintenanceStart => 1,
            M::FailoverRequested => 2,
            M::FailoverDone => 3,
            M::FailoverError => 4,
            M::MaintenanceStartNoFailover => 5,
            M::CrmRequested => 6,
            M::CrmUnderMaintenance => 7,
            M::CrmError => 8,
            M::NormalOperationInit => 9,
            M::UnderMaintenance => 31,
        }
    }

    /// The CamelCase JSON name (what current servers print).
    pub fn camel(self) -> &'static str {
        match self {
            M::NormalOperation => "NormalOperation",
            M::MaintenanceStart => "MaintenanceStart",
            M::FailoverRequested => "FailoverRequested",
            M::FailoverDone => "FailoverDone",
            M::FailoverError => "FailoverError",
            M::MaintenanceStartNoFailover => "MaintenanceStartNoFailover",
            M::CrmRequested => "CrmRequested",
            M::CrmUnderMaintenance => "CrmUnderMaintenance",
            M::CrmError => "CrmError",
            M::NormalOperationInit => "NormalOperationInit",
            M::UnderMaintenance => "UnderMaintenance",
        }
    }

    /// The proto (UPPER_SNAKE) name, used in event tags.
    pub fn upper_snake(self) -> &'static str {
        match self {
            M::NormalOperation => "NORMAL_OPERATION",
            M::MaintenanceStart => "MAINTENANCE_START",
            M::FailoverRequested => "FAILOVER_REQUESTED",
            M::FailoverDone => "FAILOVER_DONE",
            M::FailoverError => "FAILOVER_ERROR",
            M::MaintenanceStartNoFailover => "MAINTENANCE_START_NO_FAILOVER",
            M::CrmRequested => "CRM_REQUESTED",
            M::CrmUnderMaintenance => "CRM_UNDER_MAINTENANCE",
            M::CrmError => "CRM_ERROR",
            M::NormalOperationInit => "NORMAL_OPERATION_INIT",
            M::UnderMaintenance => "UNDER_MAINTENANCE",
        }
    }

    pub fn from_number(n: i64) -> Option<MaintenanceState> {
        ALL.into_iter().find(|s| s.number() == n)
    }

    /// Parses a name the way the controller's enum unmarshaller does: CamelCase or UPPER_SNAKE
    /// (compared without case and underscores), or the number written as a string.
    pub fn from_name(s: &str) -> Option<MaintenanceState> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '_')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if let Some(m) = ALL
            .into_iter()
            .find(|m| m.camel().eq_ignore_ascii_case(&norm))
        {
            return Some(m);
        }
        s.trim().parse::<i64>().ok().and_then(Self::from_number)
    }

    /// Parses a JSON value (string or integer).
    pub fn from_json(v: &Value) -> Option<MaintenanceState> {
        match v {
            Value::String(s) => Self::from_name(s),
            Value::Number(n) => n.as_i64().and_then(Self::from_number),
            _ => None,
        }
    }

    /// The states the controller stores on a Cloudlet object.
    pub fn is_stored_on_cloudlet(self) -> bool {
        matches!(
            self,
            M::NormalOperation
                | M::FailoverRequested
                | M::CrmRequested
                | M::NormalOperationInit
                | M::UnderMaintenance
        )
    }

    /// How the value is printed in an object: CamelCase, or the number on old servers.
    pub fn to_json(self, integer_enums: bool) -> Value {
        if integer_enums {
            Value::from(self.number())
        } else {
            Value::from(self.camel())
        }
    }
}

impl fmt::Display for MaintenanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.camel())
    }
}

impl Serialize for MaintenanceState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.camel())
    }
}

impl<'de> Deserialize<'de> for MaintenanceState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        MaintenanceState::from_json(&v)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown maintenance state {v}")))
    }
}

/// The Cloudlet's tracked `state` (`edgeproto.TrackedState`), as far as maintenance touches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrackedState {
    Ready,
    UpdateError,
}

impl TrackedState {
    pub fn name(self) -> &'static str {
        match self {
            TrackedState::Ready => "Ready",
            TrackedState::UpdateError => "UpdateError",
        }
    }

    /// The proto number (`READY = 5`, `UPDATE_ERROR = 8`).
    pub fn number(self) -> i64 {
        match self {
            TrackedState::Ready => 5,
            TrackedState::UpdateError => 8,
        }
    }

    pub fn to_json(self, integer_enums: bool) -> Value {
        if integer_enums {
            Value::from(self.number())
        } else {
            Value::from(self.name())
        }
    }
}

/// The field number of `Cloudlet.maintenance_state` as it appears in an update's `fields`.
pub const MAINTENANCE_STATE_FIELD: &str = "30";

/// Messages the controller sends, verbatim.
pub mod msg {
    pub const UPDATED: &str = "Cloudlet updated successfully";
    pub const INVALID_STATE: &str =
        "Invalid maintenance state, only normal operation and maintenance start states are allowed";
    pub const MUST_BE_NORMAL: &str =
        "Cloudlet must be in NormalOperation before starting maintenance";
    pub const STARTING_FAILOVER: &str = "Starting AutoProv failover";
    pub const FAILOVER_COMPLETED: &str = "AutoProv failover completed";
    pub const FAILOVER_ABORT: &str =
        "AutoProv failover encountered some errors, aborting maintenance";
    pub const AUTOPROV_TIMEOUT: &str = "Timed out waiting for AutoProvInfo maintenance state";
    pub const STARTING_CRM: &str = "Starting CRM maintenance";
    pub const CRM_STARTED: &str = "CRM maintenance started";
    pub const IN_MAINTENANCE: &str = "Cloudlet is in maintenance";
    pub const CRM_TIMEOUT: &str = "Timed out waiting for CloudletInfo maintenance state";
    pub const BACK_TO_NORMAL: &str = "Cloudlet is back to normal operation";
    pub const EVENT_START: &str = "Cloudlet maintenance start";
    pub const EVENT_DONE: &str = "Cloudlet maintenance done";
}

/// Why an update with field 30 is refused before anything happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The requested value is not 0, 1 or 5.
    InvalidState,
    /// A start was requested while not in NormalOperation.
    MustBeNormal,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::InvalidState => msg::INVALID_STATE,
            Refusal::MustBeNormal => msg::MUST_BE_NORMAL,
        }
    }
}

/// What an accepted update does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// One line `Cloudlet updated successfully`, nothing changes.
    NoChange,
    /// MaintenanceStart (`failover = true`) or MaintenanceStartNoFailover.
    Enter { failover: bool },
    /// NormalOperation from UnderMaintenance or a stuck intermediate state.
    Exit,
}

/// Checks the requested value on its own (done before the cloudlet is looked up).
pub fn check_requested(requested: MaintenanceState) -> Result<(), Refusal> {
    match requested {
        M::NormalOperation | M::MaintenanceStart | M::MaintenanceStartNoFailover => Ok(()),
        _ => Err(Refusal::InvalidState),
    }
}

/// Decides what an update does, given whether `fields` names field 30, the requested value and
/// the cloudlet's stored value.
pub fn plan(
    has_field: bool,
    requested: MaintenanceState,
    current: MaintenanceState,
) -> Result<Plan, Refusal> {
    if !has_field {
        return Ok(Plan::NoChange);
    }
    check_requested(requested)?;
    if requested == current {
        return Ok(Plan::NoChange);
    }
    match requested {
        M::NormalOperation => Ok(Plan::Exit),
        M::MaintenanceStart | M::MaintenanceStartNoFailover if current != M::NormalOperation => {
            Err(Refusal::MustBeNormal)
        }
        M::MaintenanceStart => Ok(Plan::Enter { failover: true }),
        M::MaintenanceStartNoFailover => Ok(Plan::Enter { failover: false }),
        _ => Err(Refusal::InvalidState),
    }
}

/// The answer of a collaborator the controller waits for (autoprov or CRM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answered in time (for autoprov: FailoverDone).
    Done,
    /// Autoprov answered FailoverError.
    Error,
    /// No answer within T.
    TimedOut,
}

/// Decides the outcome of one wait from the sampled latency, T and the knobs. A latency longer
/// than T is a timeout; `never` (no reply / no ack) is one too.
pub fn reply_within(
    latency: std::time::Duration,
    timeout: std::time::Duration,
    never: bool,
    error: bool,
) -> Reply {
    if never || latency > timeout {
        Reply::TimedOut
    } else if error {
        Reply::Error
    } else {
        Reply::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_round_trip_in_every_spelling() {
        for m in ALL {
            assert_eq!(MaintenanceState::from_name(m.camel()), Some(m));
            assert_eq!(MaintenanceState::from_name(m.upper_snake()), Some(m));
            assert_eq!(MaintenanceState::from_number(m.number()), Some(m));
            assert_eq!(
                MaintenanceState::from_json(&Value::from(m.number())),
                Some(m)
            );
        }
        assert_eq!(MaintenanceState::from_name("31"), Some(M::UnderMaintenance));
        assert_eq!(MaintenanceState::from_name("Maintenance"), None);
        assert_eq!(MaintenanceState::from_number(12), None);
    }

    #[test]
    fn plan_follows_the_protocol() {
        use Plan::*;
        assert_eq!(
            plan(false, M::MaintenanceStart, M::NormalOperation),
            Ok(NoChange)
        );
        assert_eq!(
            plan(true, M::MaintenanceStart, M::NormalOperation),
            Ok(Enter { failover: true })
        );
        assert_eq!(
            plan(true, M::MaintenanceStartNoFailover, M::NormalOperation),
            Ok(Enter { failover: false })
        );
        assert_eq!(
            plan(true, M::MaintenanceStart, M::UnderMaintenance),
            Err(Refusal::MustBeNormal)
        );
        assert_eq!(
            plan(true, M::UnderMaintenance, M::NormalOperation),
            Err(Refusal::InvalidState)
        );
        assert_eq!(
            plan(true, M::NormalOperation, M::NormalOperation),
            Ok(NoChange)
        );
        for stuck in [
            M::FailoverRequested,
            M::CrmRequested,
            M::NormalOperationInit,
            M::UnderMaintenance,
        ] {
            assert_eq!(plan(true, M::NormalOperation, stuck), Ok(Exit));
        }
    }

    #[test]
    fn a_latency_beyond_t_is_a_timeout() {
        let s = Duration::from_secs;
        assert_eq!(reply_within(s(1), s(5), false, false), Reply::Done);
        assert_eq!(reply_within(s(5), s(5), false, true), Reply::Error);
        assert_eq!(reply_within(s(6), s(5), false, false), Reply::TimedOut);
        assert_eq!(reply_within(s(1), s(5), true, false), Reply::TimedOut);
    }
}
