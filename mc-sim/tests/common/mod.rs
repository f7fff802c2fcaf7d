//! Helpers shared by the integration tests: a small client of the simulated controller and of
//! its `/_sim/` control API, and a deadline-bounded wait on conditions.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use mc_sim::{Scenario, SimServer};
use serde_json::{Value, json};

/// How long any condition may take before a test fails. Generous: the simulator runs at
/// `time_scale = 0.01`, so every wait in these scenarios is well below a second.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A scenario at 100x speed with T = 50 s (0.5 s real), users of every kind, and the cloudlets
/// given as TOML `[[cloudlets]]` tables in `cloudlets` (region "EU" unless stated).
pub fn scenario(cloudlets: &str) -> Scenario {
    let text = format!(
        r#"
time_scale = 0.01
maintenance_timeout = "50s"
token_lifetime = "24h"
seed = 1

[[users]]
username = "opuser"
password = "secret"
roles = [ {{ org = "TDG", role = "OperatorManager" }} ]

[[users]]
username = "contrib"
password = "secret"
roles = [ {{ org = "TDG", role = "OperatorContributor" }} ]

[[users]]
username = "viewer"
password = "secret"
roles = [ {{ org = "TDG", role = "OperatorViewer" }} ]

[[users]]
username = "orange"
password = "secret"
roles = [ {{ org = "Orange", role = "OperatorManager" }} ]

[[users]]
username = "admin"
password = "secret"
roles = [ {{ org = "", role = "AdminManager" }} ]

[defaults]
autoprov_latency = {{ fixed = "2s" }}
crm_latency = {{ fixed = "1s" }}

{cloudlets}
"#
    );
    match Scenario::from_toml_str(&text) {
        Ok(s) => s,
        Err(e) => panic!("test scenario does not parse: {e}\n{text}"),
    }
}

/// One cloudlet `EU/TDG/<name>` with extra TOML lines.
pub fn cloudlet(name: &str, extra: &str) -> String {
    format!("[[cloudlets]]\nregion = \"EU\"\norganization = \"TDG\"\nname = \"{name}\"\n{extra}\n")
}

pub struct Sim {
    pub server: SimServer,
    pub http: reqwest::Client,
    pub url: String,
}

impl Sim {
    pub async fn start(scenario: Scenario) -> Sim {
        // reqwest is built with `rustls-no-provider` (shared with the root crate) and insists
        // on a provider even for plain http. A second install in the same process fails: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let server = SimServer::start(scenario, "127.0.0.1:0".parse().unwrap())
            .await
            .expect("simulator starts");
        let url = server.url();
        Sim {
            server,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("http client"),
            url,
        }
    }

    pub async fn login(&self, user: &str) -> String {
        let res = self
            .http
            .post(format!("{}/api/v1/login", self.url))
            .json(&json!({"username": user, "password": "secret"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "login {user}");
        let body: Value = res.json().await.unwrap();
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn post_auth(&self, token: &str, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/auth/{path}", self.url))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends UpdateCloudlet with `"fields":["30"]`; returns the response at its headers.
    pub async fn update(&self, token: &str, name: &str, state: Value) -> reqwest::Response {
        self.post_auth(
            token,
            "ctrl/UpdateCloudlet",
            &json!({"region": "EU", "cloudlet": {
                "key": {"organization": "TDG", "name": name},
                "maintenance_state": state, "fields": ["30"]}}),
        )
        .await
    }

    /// ShowCloudlet of `EU/TDG/<name>`: the `data` object, if any.
    pub async fn show(&self, token: &str, name: &str) -> Option<Value> {
        let res = self
            .post_auth(
                token,
                "ctrl/ShowCloudlet",
                &json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": name}}}),
            )
            .await;
        assert_eq!(res.status(), 200);
        let lines = ndjson(&res.text().await.unwrap());
        assert!(lines.len() <= 1, "{lines:?}");
        lines.into_iter().next().map(|l| l["data"].clone())
    }

    pub async fn get_sim(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_sim/{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn post_sim(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/_sim/{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn history(&self) -> Value {
        self.get_sim("history").await
    }

    /// `(from, to, actor)` of every transition of `name`, in order.
    pub async fn transitions(&self, name: &str) -> Vec<(String, String, String)> {
        self.history().await["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"] == name)
            .map(|t| {
                (
                    t["from"].as_str().unwrap().to_string(),
                    t["to"].as_str().unwrap().to_string(),
                    t["actor"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// The `/_sim/cloudlets` entry of `name`.
    pub async fn sim_cloudlet(&self, name: &str) -> Value {
        self.get_sim("cloudlets")
            .await
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no cloudlet {name}"))
    }

    pub async fn set_knobs(&self, name: &str, knobs: Value) {
        let res = self
            .post_sim(
                "knobs",
                &json!({"region": "EU", "organization": "TDG", "name": name, "knobs": knobs}),
            )
            .await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    }

    /// Waits until the cloudlet's handshake has ended (the action lock is free).
    pub async fn wait_idle(&self, name: &str) {
        wait_for(&format!("{name} idle"), || async {
            self.sim_cloudlet(name).await["busy"] == false
        })
        .await;
    }
}

/// Polls `cond` every 10 ms until it holds; fails the test after [`DEADLINE`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn ndjson(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// Reads a whole streamed body as NDJSON lines.
pub async fn lines(res: reqwest::Response) -> Vec<Value> {
    ndjson(&res.text().await.unwrap())
}

/// The `data.message` of each line, or `RESULT: <message>` for a result line.
pub fn messages(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            if let Some(m) = l["data"]["message"].as_str() {
                m.to_string()
            } else if let Some(m) = l["result"]["message"].as_str() {
                format!("RESULT: {m}")
            } else {
                panic!("unexpected line {l}")
            }
        })
        .collect()
}

pub async fn message_of(res: reqwest::Response) -> String {
    let v: Value = res.json().await.unwrap();
    v["message"].as_str().unwrap().to_string()
}

pub fn tr(from: &str, to: &str, actor: &str) -> (String, String, String) {
    (from.to_string(), to.to_string(), actor.to_string())
}
