//! The scenario file: who may log in, which cloudlets exist, and how each cloudlet's collaborators
//! (the autoprov service and the CRM) behave.
//!
//! This module exists so that a test, a demo or a dry run can describe a whole controller
//! deployment declaratively, in TOML or JSON (the same structure), and so that the simulator's
//! behaviour is reproducible: every random choice is drawn from a generator seeded by
//! [`Scenario::seed`]. Parsing is strict (`deny_unknown_fields`) because a misspelt knob that is
//! silently ignored would make a failure test pass for the wrong reason.
//!
//! Durations are humantime strings (`"2s"`, `"5m"`, `"1h 30m"`). They are *unscaled*: the server
//! multiplies every server-side duration by [`Scenario::time_scale`] when it uses it.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::state::{MaintenanceState, TrackedState};

/// A whole simulated controller deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Every server-side duration (latencies, T, token lifetime) is multiplied by this.
    /// `0.01` makes the simulator 100 times faster than the durations written in the file.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// T, the controller's `cloudlet_maintenance_timeout`, applied to each wait separately.
    #[serde(default = "default_maintenance_timeout")]
    pub maintenance_timeout: HumanDuration,
    /// Lifetime of a login token.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime: HumanDuration,
    /// Seed of the one random generator all random choices are drawn from.
    #[serde(default)]
    pub seed: u64,
    /// Old servers (before mid-2021) printed enums as integers. Default for every cloudlet.
    #[serde(default)]
    pub integer_enums: bool,
    /// Accounts that may log in.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Knobs applied to every cloudlet unless the cloudlet overrides them.
    #[serde(default)]
    pub defaults: KnobsPatch,
    /// The cloudlets, keyed by (region, organization, name).
    #[serde(default)]
    pub cloudlets: Vec<CloudletSpec>,
}

/// One account of the Master Controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub roles: Vec<RoleSpec>,
}

/// One role assignment: a role within an organization. Admin roles use the empty organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    #[serde(default)]
    pub org: String,
    pub role: Role,
}

/// The Master Controller's role names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    AdminManager,
    AdminContributor,
    AdminViewer,
    OperatorManager,
    OperatorContributor,
    OperatorViewer,
    DeveloperManager,
    DeveloperContributor,
    DeveloperViewer,
}

impl Role {
    /// Admin roles are held on the empty organization and apply to every organization.
    pub fn is_admin(self) -> bool {
        matches!(
            self,
            Role::AdminManager | Role::AdminContributor | Role::AdminViewer
        )
    }
}

/// Where a cloudlet is on the map; only echoed back by ShowCloudlet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub latitude: f64,
    pub longitude: f64,
}

/// One cloudlet and its per-cloudlet knob overrides.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudletSpec {
    pub region: String,
    pub organization: String,
    pub name: String,
    /// Initial stored maintenance state (NormalOperation when absent). Only states the controller
    /// stores on a Cloudlet are allowed: NormalOperation, FailoverRequested, CrmRequested,
    /// NormalOperationInit, UnderMaintenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance_state: Option<MaintenanceState>,
    /// Initial tracked state (`Ready` when absent), e.g. `UpdateError` for a cloudlet that a
    /// previous, timed-out handshake left stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TrackedState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprov_latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprov_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprov_no_reply: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_no_ack: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_5xx_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_after_first_line: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer_enums: Option<bool>,
}

impl CloudletSpec {
    /// The knob overrides of this cloudlet, as a patch.
    pub fn knobs_patch(&self) -> KnobsPatch {
        KnobsPatch {
            autoprov_latency: self.autoprov_latency.clone(),
            crm_latency: self.crm_latency.clone(),
            autoprov_error: self.autoprov_error,
            autoprov_no_reply: self.autoprov_no_reply,
            crm_no_ack: self.crm_no_ack,
            error_5xx_rate: self.error_5xx_rate,
            drop_after_first_line: self.drop_after_first_line,
            integer_enums: self.integer_enums,
        }
    }
}

/// The behaviour of one cloudlet's collaborators, fully resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Knobs {
    /// How long the autoprov service takes to answer a failover request.
    pub autoprov_latency: Latency,
    /// How long the CRM takes to acknowledge a maintenance state change.
    pub crm_latency: Latency,
    /// Autoprov answers FailoverError: the controller undoes to NormalOperation.
    pub autoprov_error: bool,
    /// Autoprov never answers: the controller times out after T, no undo.
    pub autoprov_no_reply: bool,
    /// The CRM misses requests: every CRM wait times out until `/_sim/crm_restart`.
    pub crm_no_ack: bool,
    /// Probability that a request naming this cloudlet gets a 502 from the "nginx" in front.
    pub error_5xx_rate: f64,
    /// UpdateCloudlet sends its first stream line, then the connection drops.
    pub drop_after_first_line: bool,
    /// Print enums as integers, as servers before mid-2021 did.
    pub integer_enums: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            autoprov_latency: Latency::Fixed(HumanDuration(Duration::from_secs(2))),
            crm_latency: Latency::Fixed(HumanDuration(Duration::from_secs(1))),
            autoprov_error: false,
            autoprov_no_reply: false,
            crm_no_ack: false,
            error_5xx_rate: 0.0,
            drop_after_first_line: false,
            integer_enums: false,
        }
    }
}

impl Knobs {
    /// Overwrites the knobs that `patch` sets.
    pub fn apply(&mut self, patch: &KnobsPatch) {
        if let Some(v) = &patch.autoprov_latency {
            self.autoprov_latency = v.clone();
        }
        if let Some(v) = &patch.crm_latency {
            self.crm_latency = v.clone();
        }
        if let Some(v) = patch.autoprov_error {
            self.autoprov_error = v;
        }
        if let Some(v) = patch.autoprov_no_reply {
            self.autoprov_no_reply = v;
        }
        if let Some(v) = patch.crm_no_ack {
            self.crm_no_ack = v;
        }
        if let Some(v) = patch.error_5xx_rate {
            self.error_5xx_rate = v;
        }
        if let Some(v) = patch.drop_after_first_line {
            self.drop_after_first_line = v;
        }
        if let Some(v) = patch.integer_enums {
            self.integer_enums = v;
        }
    }
}

/// Any subset of the knobs: the `[defaults]` table, a cloudlet's overrides, a `/_sim/knobs` body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnobsPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprov_latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_latency: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprov_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoprov_no_reply: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_no_ack: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_5xx_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_after_first_line: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer_enums: Option<bool>,
}

impl KnobsPatch {
    /// Checks the values a patch sets (rates within [0, 1], well-formed latencies).
    pub fn validate(&self) -> Result<(), String> {
        if let Some(rate) = self.error_5xx_rate
            && !(0.0..=1.0).contains(&rate)
        {
            return Err(format!("error_5xx_rate must be within [0, 1], got {rate}"));
        }
        if let Some(l) = &self.autoprov_latency {
            l.validate().map_err(|e| format!("autoprov_latency: {e}"))?;
        }
        if let Some(l) = &self.crm_latency {
            l.validate().map_err(|e| format!("crm_latency: {e}"))?;
        }
        Ok(())
    }
}

/// A latency distribution: `{ fixed = "2s" }`, `{ uniform = ["1s", "5s"] }` or
/// `{ lognormal = { median = "30s", sigma = 0.5 } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Latency {
    Fixed(HumanDuration),
    Uniform([HumanDuration; 2]),
    Lognormal { median: HumanDuration, sigma: f64 },
}

impl Latency {
    fn validate(&self) -> Result<(), String> {
        match self {
            Latency::Fixed(_) => Ok(()),
            Latency::Uniform([lo, hi]) if lo.0 > hi.0 => Err(format!(
                "uniform bounds out of order: {lo} > {hi} (write the lower bound first)"
            )),
            Latency::Uniform(_) => Ok(()),
            Latency::Lognormal { sigma, .. } if !sigma.is_finite() || *sigma < 0.0 => Err(format!(
                "lognormal sigma must be finite and >= 0, got {sigma}"
            )),
            Latency::Lognormal { .. } => Ok(()),
        }
    }
}

/// A [`Duration`] written as a humantime string (`"1m 30s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        HumanDuration(d)
    }
}

fn default_time_scale() -> f64 {
    1.0
}

fn default_maintenance_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5 * 60))
}

fn default_token_lifetime() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {path}: unknown extension (expected .toml or .json)")]
    UnknownFormat { path: String },
    #[error("invalid TOML scenario: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid JSON scenario: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    /// Loads a scenario from a `.toml` or `.json` file (chosen by extension).
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: shown.clone(),
            source,
        })?;
        match ext.as_deref() {
            Some("toml") => Scenario::from_toml_str(&text),
            Some("json") => Scenario::from_json_str(&text),
            _ => Err(ScenarioError::UnknownFormat { path: shown }),
        }
    }

    /// Parses and validates a TOML scenario.
    pub fn from_toml_str(s: &str) -> Result<Scenario, ScenarioError> {
        let sc: Scenario = toml::from_str(s)?;
        sc.validate()?;
        Ok(sc)
    }

    /// Parses and validates a JSON scenario.
    pub fn from_json_str(s: &str) -> Result<Scenario, ScenarioError> {
        let sc: Scenario = serde_json::from_str(s)?;
        sc.validate()?;
        Ok(sc)
    }

    /// Checks what the types cannot: ranges, uniqueness, admin roles on the empty organization.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let invalid = |m: String| Err(ScenarioError::Invalid(m));
        if !self.time_scale.is_finite() || self.time_scale < 0.0 {
            return invalid(format!(
                "time_scale must be finite and >= 0, got {}",
                self.time_scale
            ));
        }
        self.defaults
            .validate()
            .or_else(|e| invalid(format!("[defaults]: {e}")))?;
        let mut names = HashSet::new();
        for u in &self.users {
            if u.username.is_empty() {
                return invalid("a user has an empty username".into());
            }
            if !names.insert(u.username.as_str()) {
                return invalid(format!("user {:?} is declared twice", u.username));
            }
            for r in &u.roles {
                if r.role.is_admin() != r.org.is_empty() {
                    return invalid(format!(
                        "user {:?}: role {:?} on org {:?}: admin roles take org \"\", other roles need an org",
                        u.username, r.role, r.org
                    ));
                }
            }
        }
        let mut keys = HashSet::new();
        for c in &self.cloudlets {
            let id = format!("{}/{}/{}", c.region, c.organization, c.name);
            if c.region.is_empty() || c.organization.is_empty() || c.name.is_empty() {
                return invalid(format!(
                    "cloudlet {id:?}: region, organization and name must be non-empty"
                ));
            }
            if !keys.insert((&c.region, &c.organization, &c.name)) {
                return invalid(format!("cloudlet {id} is declared twice"));
            }
            if let Some(ms) = c.maintenance_state
                && !ms.is_stored_on_cloudlet()
            {
                return invalid(format!(
                    "cloudlet {id}: maintenance_state {} is never stored on a Cloudlet",
                    ms.camel()
                ));
            }
            c.knobs_patch()
                .validate()
                .or_else(|e| invalid(format!("cloudlet {id}: {e}")))?;
        }
        Ok(())
    }

    /// The resolved knobs of a cloudlet: built-in defaults, then the top-level `integer_enums`,
    /// then `[defaults]`, then the cloudlet's own overrides.
    pub fn knobs_for(&self, c: &CloudletSpec) -> Knobs {
        let mut k = Knobs {
            integer_enums: self.integer_enums,
            ..Knobs::default()
        };
        k.apply(&self.defaults);
        k.apply(&c.knobs_patch());
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_latency_forms_and_rejects_unknown_fields() {
        let sc = Scenario::from_toml_str(
            r#"
            time_scale = 0.5
            maintenance_timeout = "1m"
            [defaults]
            autoprov_latency = { uniform = ["1s", "5s"] }
            crm_latency = { lognormal = { median = "30s", sigma = 0.5 } }
            [[cloudlets]]
            region = "EU"
            organization = "TDG"
            name = "berlin-1"
            crm_latency = { fixed = "2s" }
            maintenance_state = "UnderMaintenance"
            "#,
        )
        .unwrap();
        let k = sc.knobs_for(&sc.cloudlets[0]);
        assert_eq!(
            k.crm_latency,
            Latency::Fixed(HumanDuration(Duration::from_secs(2)))
        );
        assert!(matches!(k.autoprov_latency, Latency::Uniform(_)));
        assert_eq!(
            sc.cloudlets[0].maintenance_state,
            Some(MaintenanceState::UnderMaintenance)
        );

        let err = Scenario::from_toml_str("time_scael = 1.0").unwrap_err();
        assert!(err.to_string().contains("time_scael"), "{err}");
    }

    #[test]
    fn rejects_request_only_initial_states_and_bad_rates() {
        let base = r#"[[cloudlets]]
            region = "EU"
            organization = "TDG"
            name = "b"
            "#;
        assert!(
            Scenario::from_toml_str(&format!("{base}maintenance_state = \"MaintenanceStart\""))
                .is_err()
        );
        assert!(Scenario::from_toml_str(&format!("{base}error_5xx_rate = 1.5")).is_err());
        assert!(
            Scenario::from_toml_str(&format!(
                "{base}crm_latency = {{ uniform = [\"5s\", \"1s\"] }}"
            ))
            .is_err()
        );
    }

    #[test]
    fn json_and_toml_are_the_same_structure() {
        let sc = Scenario::from_json_str(
            r#"{"seed": 7, "users": [{"username": "a", "password": "p",
                 "roles": [{"org": "", "role": "AdminManager"}]}],
                "defaults": {"crm_latency": {"fixed": "3s"}}}"#,
        )
        .unwrap();
        assert_eq!(sc.seed, 7);
        let back = toml::to_string(&sc).unwrap();
        let again = Scenario::from_toml_str(&back).unwrap();
        assert_eq!(again.defaults, sc.defaults);
    }
}
