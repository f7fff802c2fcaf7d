//! The few controller objects the daemon reads and writes: a cloudlet's key, its maintenance
//! state, and what `ShowCloudlet` tells about it.
//!
//! Enum values arrive in three spellings (protocol §1): the CamelCase JSON name of current
//! servers (`"UnderMaintenance"`), the UPPER_SNAKE proto name accepted on input
//! (`"UNDER_MAINTENANCE"`), and the bare integer that servers before mid-2021 printed (`31`).
//! All three parse; output always uses CamelCase. A missing `maintenance_state` means
//! `NormalOperation`, because the controller omits the zero value.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Identifies a cloudlet within a region: `organization/name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CloudletKey {
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub name: String,
}

impl CloudletKey {
    pub fn new(organization: impl Into<String>, name: impl Into<String>) -> Self {
        CloudletKey {
            organization: organization.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for CloudletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.organization, self.name)
    }
}

/// Why a string is not a valid `ORG/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cloudlet \"{input}\": {reason}; expected ORGANIZATION/NAME, e.g. TDG/berlin-1")]
pub struct ParseKeyError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for CloudletKey {
    type Err = ParseKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseKeyError {
            input: s.to_string(),
            reason,
        };
        let (org, name) = s.split_once('/').ok_or_else(|| err("no '/'"))?;
        if name.contains('/') {
            return Err(err("more than one '/'"));
        }
        if org.trim().is_empty() {
            return Err(err("empty organization"));
        }
        if name.trim().is_empty() {
            return Err(err("empty cloudlet name"));
        }
        if org.trim() != org || name.trim() != name {
            return Err(err("leading or trailing whitespace"));
        }
        Ok(CloudletKey::new(org, name))
    }
}

/// The proto enum `MaintenanceState` (`dme/appcommon.proto`), all eleven values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MaintenanceState {
    #[default]
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

impl MaintenanceState {
    /// Every value, in proto order.
    pub const ALL: [MaintenanceState; 11] = [
        MaintenanceState::NormalOperation,
        MaintenanceState::MaintenanceStart,
        MaintenanceState::FailoverRequested,
        MaintenanceState::FailoverDone,
        MaintenanceState::FailoverError,
        MaintenanceState::MaintenanceStartNoFailover,
        MaintenanceState::CrmRequested,
        MaintenanceState::CrmUnderMaintenance,
        MaintenanceState::CrmError,
        MaintenanceState::NormalOperationInit,
        MaintenanceState::UnderMaintenance,
    ];

    /// (proto number, CamelCase JSON name, UPPER_SNAKE proto name)
    fn entry(self) -> (u32, &'static str, &'static str) {
        use MaintenanceState as M;
        match self {
            M::NormalOperation => (0, "NormalOperation", "NORMAL_OPERATION"),
            M::MaintenanceStart => (1, "MaintenanceStart", "MAINTENANCE_START"),
            M::FailoverRequested => (2, "FailoverRequested", "FAILOVER_REQUESTED"),
            M::FailoverDone => (3, "FailoverDone", "FAILOVER_DONE"),
            M::FailoverError => (4, "FailoverError", "FAILOVER_ERROR"),
            M::MaintenanceStartNoFailover => (
                5,
                "MaintenanceStartNoFailover",
                "MAINTENANCE_START_NO_FAILOVER",
            ),
            M::CrmRequested => (6, "CrmRequested", "CRM_REQUESTED"),
            M::CrmUnderMaintenance => (7, "CrmUnderMaintenance", "CRM_UNDER_MAINTENANCE"),
            M::CrmError => (8, "CrmError", "CRM_ERROR"),
            M::NormalOperationInit => (9, "NormalOperationInit", "NORMAL_OPERATION_INIT"),
            M::UnderMaintenance => (31, "UnderMaintenance", "UNDER_MAINTENANCE"),
        }
    }

    /// The CamelCase JSON name, as current servers print it.
    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    /// The UPPER_SNAKE proto name (used in event tags).
    pub fn proto_name(self) -> &'static str {
        self.entry().2
    }

    /// The proto number (`UnderMaintenance` is 31).
    pub fn number(self) -> u32 {
        self.entry().0
    }

    /// The value with this proto number.
    pub fn from_number(n: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| u64::from(s.number()) == n)
    }

    /// Parses the CamelCase name, the UPPER_SNAKE name or the decimal number.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Self::from_number(n);
        }
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s || m.proto_name() == s)
    }

    /// States the controller stores only while a handshake runs (or after one failed half-way).
    pub fn is_intermediate(self) -> bool {
        matches!(
            self,
            MaintenanceState::FailoverRequested
                | MaintenanceState::CrmRequested
                | MaintenanceState::NormalOperationInit
        )
    }
}

impl fmt::Display for MaintenanceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a maintenance state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown maintenance state \"{0}\"")]
pub struct ParseStateError(pub String);

impl FromStr for MaintenanceState {
    type Err = ParseStateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MaintenanceState::parse(s).ok_or_else(|| ParseStateError(s.to_string()))
    }
}

impl Serialize for MaintenanceState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MaintenanceState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = MaintenanceState;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a maintenance state name or number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                MaintenanceState::parse(v)
                    .ok_or_else(|| E::custom(format!("unknown maintenance state \"{v}\"")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                MaintenanceState::from_number(v)
                    .ok_or_else(|| E::custom(format!("unknown maintenance state number {v}")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(MaintenanceState::from_number)
                    .ok_or_else(|| E::custom(format!("unknown maintenance state number {v}")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaintenanceState::NormalOperation)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The state a user may request (protocol §1: only 0, 1 or 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaintenanceTarget {
    /// `MaintenanceStart`: AutoProv failover of HA apps, then the CRM.
    Start,
    /// `MaintenanceStartNoFailover`: the CRM only.
    StartNoFailover,
    /// `NormalOperation`: back to service (also clears a stuck intermediate state).
    Normal,
}

impl MaintenanceTarget {
    /// The state sent in the request.
    pub fn requested_state(self) -> MaintenanceState {
        match self {
            MaintenanceTarget::Start => MaintenanceState::MaintenanceStart,
            MaintenanceTarget::StartNoFailover => MaintenanceState::MaintenanceStartNoFailover,
            MaintenanceTarget::Normal => MaintenanceState::NormalOperation,
        }
    }

    /// The state `ShowCloudlet` reports once the handshake succeeded.
    pub fn final_state(self) -> MaintenanceState {
        match self {
            MaintenanceTarget::Start | MaintenanceTarget::StartNoFailover => {
                MaintenanceState::UnderMaintenance
            }
            MaintenanceTarget::Normal => MaintenanceState::NormalOperation,
        }
    }
}

impl fmt::Display for MaintenanceTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.requested_state().as_str())
    }
}

/// One cloudlet as `ShowCloudlet` reports it (only what the daemon uses; other fields ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudletStatus {
    pub region: String,
    pub key: CloudletKey,
    pub maintenance_state: MaintenanceState,
    /// The tracked object state (`state`), CamelCase: `"Ready"`, `"UpdateError"`, …
    pub tracked_state: Option<String>,
}

/// The wire form of a Cloudlet in `ShowCloudlet` output.
#[derive(Debug, Deserialize)]
pub(crate) struct WireCloudlet {
    #[serde(default)]
    pub key: CloudletKey,
    #[serde(default)]
    pub maintenance_state: Option<MaintenanceState>,
    #[serde(default, deserialize_with = "tracked_state")]
    pub state: Option<String>,
}

impl WireCloudlet {
    pub fn into_status(self, region: &str) -> CloudletStatus {
        CloudletStatus {
            region: region.to_string(),
            key: self.key,
            maintenance_state: self.maintenance_state.unwrap_or_default(),
            tracked_state: self.state,
        }
    }
}

/// `TrackedState` (`edgeproto/common.proto`) by number, CamelCase.
const TRACKED_STATES: [&str; 16] = [
    "TrackedStateUnknown",
    "NotPresent",
    "CreateRequested",
    "Creating",
    "CreateError",
    "Ready",
    "UpdateRequested",
    "Updating",
    "UpdateError",
    "DeleteRequested",
    "Deleting",
    "DeleteError",
    "DeletePrepare",
    "CrmInitok",
    "CreatingDependencies",
    "DeleteDone",
];

/// Turns `UPDATE_ERROR` into `UpdateError`; CamelCase passes through.
fn snake_to_camel(s: &str) -> String {
    if !s.contains('_') && s.chars().any(|c| c.is_ascii_lowercase()) {
        return s.to_string();
    }
    s.split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Normalizes a tracked state given as CamelCase, UPPER_SNAKE or number.
pub(crate) fn normalize_tracked_state(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(snake_to_camel(s)),
        serde_json::Value::Number(n) => {
            let n = n.as_u64()?;
            if n == 0 {
                return None;
            }
            Some(
                usize::try_from(n)
                    .ok()
                    .and_then(|i| TRACKED_STATES.get(i))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("TrackedState({n})")),
            )
        }
        _ => None,
    }
}

fn tracked_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(normalize_tracked_state(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_in_all_three_forms() {
        // The proto enum, written out independently of the implementation.
        let table: [(MaintenanceState, u32, &str, &str); 11] = [
            (
                MaintenanceState::NormalOperation,
                0,
                "NormalOperation",
                "NORMAL_OPERATION",
            ),
            (
                MaintenanceState::MaintenanceStart,
                1,
                "MaintenanceStart",
                "MAINTENANCE_START",
            ),
            (
                MaintenanceState::FailoverRequested,
                2,
                "FailoverRequested",
                "FAILOVER_REQUESTED",
            ),
            (
                MaintenanceState::FailoverDone,
                3,
                "FailoverDone",
                "FAILOVER_DONE",
            ),
            (
                MaintenanceState::FailoverError,
                4,
                "FailoverError",
                "FAILOVER_ERROR",
            ),
            (
                MaintenanceState::MaintenanceStartNoFailover,
                5,
                "MaintenanceStartNoFailover",
                "MAINTENANCE_START_NO_FAILOVER",
            ),
            (
                MaintenanceState::CrmRequested,
                6,
                "CrmRequested",
                "CRM_REQUESTED",
            ),
            (
                MaintenanceState::CrmUnderMaintenance,
                7,
                "CrmUnderMaintenance",
                "CRM_UNDER_MAINTENANCE",
            ),
            (MaintenanceState::CrmError, 8, "CrmError", "CRM_ERROR"),
            (
                MaintenanceState::NormalOperationInit,
                9,
                "NormalOperationInit",
                "NORMAL_OPERATION_INIT",
            ),
            (
                MaintenanceState::UnderMaintenance,
                31,
                "UnderMaintenance",
                "UNDER_MAINTENANCE",
            ),
        ];
        for (state, num, camel, snake) in table {
            assert_eq!(state.as_str(), camel);
            assert_eq!(state.number(), num);
            assert_eq!(state.proto_name(), snake);
            assert_eq!(MaintenanceState::parse(camel), Some(state));
            assert_eq!(MaintenanceState::parse(snake), Some(state));
            assert_eq!(MaintenanceState::parse(&num.to_string()), Some(state));
            let from_str: MaintenanceState = serde_json::from_str(&format!("\"{camel}\"")).unwrap();
            assert_eq!(from_str, state);
            let from_snake: MaintenanceState =
                serde_json::from_str(&format!("\"{snake}\"")).unwrap();
            assert_eq!(from_snake, state);
            let from_int: MaintenanceState = serde_json::from_str(&num.to_string()).unwrap();
            assert_eq!(from_int, state);
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{camel}\"")
            );
        }
        assert_eq!(
            MaintenanceState::ALL.to_vec(),
            table.iter().map(|e| e.0).collect::<Vec<_>>()
        );
    }

    #[test]
    fn unknown_states_are_rejected() {
        assert!(serde_json::from_str::<MaintenanceState>("\"Sleeping\"").is_err());
        assert!(serde_json::from_str::<MaintenanceState>("10").is_err());
        assert!(serde_json::from_str::<MaintenanceState>("-1").is_err());
        assert!("underMaintenance".parse::<MaintenanceState>().is_err());
    }

    #[test]
    fn missing_state_means_normal_operation() {
        let c: WireCloudlet =
            serde_json::from_str(r#"{"key":{"organization":"TDG","name":"b1"}}"#).unwrap();
        let s = c.into_status("EU");
        assert_eq!(s.maintenance_state, MaintenanceState::NormalOperation);
        assert_eq!(s.key, CloudletKey::new("TDG", "b1"));
        assert_eq!(s.region, "EU");
        assert_eq!(s.tracked_state, None);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let line = r#"{"key":{"organization":"dmuus","name":"dmuus-cloud-1"},"location":{"latitude":31,"longitude":-91},"ip_support":"Dynamic","num_dynamic_ips":254,"state":"Ready","platform_type":"Fakeinfra","maintenance_state":"UnderMaintenance"}"#;
        let s = serde_json::from_str::<WireCloudlet>(line)
            .unwrap()
            .into_status("EU");
        assert_eq!(s.maintenance_state, MaintenanceState::UnderMaintenance);
        assert_eq!(s.tracked_state.as_deref(), Some("Ready"));
    }

    #[test]
    fn integer_enum_server_output_parses() {
        let line = r#"{"key":{"organization":"o","name":"n"},"state":8,"maintenance_state":9}"#;
        let s = serde_json::from_str::<WireCloudlet>(line)
            .unwrap()
            .into_status("US");
        assert_eq!(s.maintenance_state, MaintenanceState::NormalOperationInit);
        assert_eq!(s.tracked_state.as_deref(), Some("UpdateError"));
        let line = r#"{"key":{"organization":"o","name":"n"},"state":"UPDATE_ERROR","maintenance_state":"CRM_REQUESTED"}"#;
        let s = serde_json::from_str::<WireCloudlet>(line)
            .unwrap()
            .into_status("US");
        assert_eq!(s.maintenance_state, MaintenanceState::CrmRequested);
        assert_eq!(s.tracked_state.as_deref(), Some("UpdateError"));
    }

    #[test]
    fn keys_parse_and_print() {
        let k: CloudletKey = "TDG/berlin-1".parse().unwrap();
        assert_eq!(k, CloudletKey::new("TDG", "berlin-1"));
        assert_eq!(k.to_string(), "TDG/berlin-1");
        for bad in ["berlin-1", "/x", "TDG/", "a/b/c", " TDG/x", ""] {
            let e = bad.parse::<CloudletKey>().unwrap_err().to_string();
            assert!(e.contains("expected ORGANIZATION/NAME"), "{e}");
            assert!(e.contains(&format!("\"{bad}\"")), "{e}");
        }
    }

    #[test]
    fn targets_map_to_requested_states() {
        assert_eq!(
            MaintenanceTarget::Start.requested_state(),
            MaintenanceState::MaintenanceStart
        );
        assert_eq!(
            MaintenanceTarget::StartNoFailover.requested_state(),
            MaintenanceState::MaintenanceStartNoFailover
        );
        assert_eq!(
            MaintenanceTarget::Normal.requested_state(),
            MaintenanceState::NormalOperation
        );
        assert_eq!(
            MaintenanceTarget::StartNoFailover.final_state(),
            MaintenanceState::UnderMaintenance
        );
    }

    #[test]
    fn snake_case_tracked_states_become_camel() {
        assert_eq!(snake_to_camel("UPDATE_ERROR"), "UpdateError");
        assert_eq!(snake_to_camel("READY"), "Ready");
        assert_eq!(snake_to_camel("Ready"), "Ready");
        assert_eq!(snake_to_camel("CRM_INITOK"), "CrmInitok");
    }
}
