//! The simulator against `controller-protocol.md`: a real `SimServer` on 127.0.0.1:0, spoken to
//! over HTTP. Every wait is on a condition with a deadline; nothing asserts on timings.

mod common;

use common::*;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The handshake.

#[tokio::test]
async fn maintenance_start_runs_failover_then_crm_and_exit_restores() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("opuser").await;

    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        messages(&lines(res).await),
        [
            "Starting AutoProv failover",
            "AutoProv failover completed",
            "Starting CRM maintenance",
            "CRM maintenance started",
            "Cloudlet is in maintenance",
        ]
    );
    assert_eq!(
        sim.transitions("berlin-1").await,
        [
            tr("NormalOperation", "FailoverRequested", "controller"),
            tr("FailoverRequested", "CrmRequested", "controller"),
            tr("CrmRequested", "UnderMaintenance", "controller"),
        ]
    );
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert_eq!(shown["maintenance_state"], "UnderMaintenance");
    assert_eq!(shown["state"], "Ready");
    assert_eq!(
        shown["key"],
        json!({"organization": "TDG", "name": "berlin-1"})
    );

    let info = sim
        .post_auth(
            &token,
            "ctrl/ShowCloudletInfo",
            &json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"}}}),
        )
        .await;
    let info = lines(info).await;
    assert_eq!(info[0]["data"]["maintenance_state"], "CrmUnderMaintenance");
    assert_eq!(info[0]["data"]["state"], "CloudletStateReady");

    let res = sim
        .update(&token, "berlin-1", json!("NormalOperation"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        messages(&lines(res).await),
        ["Cloudlet is back to normal operation"]
    );
    let all = sim.transitions("berlin-1").await;
    assert_eq!(
        all[3..],
        [
            tr("UnderMaintenance", "NormalOperationInit", "controller"),
            tr("NormalOperationInit", "NormalOperation", "controller"),
        ]
    );
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert!(shown.get("maintenance_state").is_none(), "{shown}");

    // Both events, visible to the operator through the events API.
    let res = sim
        .post_auth(&token, "events/show", &json!({"match": {"orgs": ["TDG"]}}))
        .await;
    assert_eq!(res.status(), 200);
    let events: Vec<Value> = res.json().await.unwrap();
    let names: Vec<_> = events.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["Cloudlet maintenance done", "Cloudlet maintenance start"]
    );
    assert_eq!(events[1]["tags"]["maintenance-state"], "UNDER_MAINTENANCE");
    assert_eq!(events[0]["tags"]["maintenance-state"], "NORMAL_OPERATION");
    assert_eq!(events[0]["tags"]["cloudlet"], "berlin-1");
    assert_eq!(events[0]["tags"]["cloudletorg"], "TDG");
    assert_eq!(events[0]["region"], "EU");
    assert_eq!(events[0]["type"], "event");
    assert_eq!(events[0]["org"], json!(["TDG"]));

    // Another operator sees none of them; a name filter narrows.
    let orange = sim.login("orange").await;
    let res = sim.post_auth(&orange, "events/show", &json!({})).await;
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 0);
    let res = sim
        .post_auth(
            &token,
            "events/show",
            &json!({"match": {"names": ["Cloudlet maintenance start"]}, "limit": 5}),
        )
        .await;
    assert_eq!(res.json::<Vec<Value>>().await.unwrap().len(), 1);
}

#[tokio::test]
async fn no_failover_runs_only_the_crm_part() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("contrib").await;
    // UPPER_SNAKE spelling is accepted too.
    let res = sim
        .update(&token, "berlin-1", json!("MAINTENANCE_START_NO_FAILOVER"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        messages(&lines(res).await),
        [
            "Starting CRM maintenance",
            "CRM maintenance started",
            "Cloudlet is in maintenance"
        ]
    );
    assert_eq!(
        sim.transitions("berlin-1").await,
        [
            tr("NormalOperation", "CrmRequested", "controller"),
            tr("CrmRequested", "UnderMaintenance", "controller"),
        ]
    );
}

#[tokio::test]
async fn integer_request_values_are_accepted() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("admin").await;
    let res = sim.update(&token, "berlin-1", json!(5)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(lines(res).await.len(), 3);
    let res = sim.update(&token, "berlin-1", json!(0)).await;
    assert_eq!(
        messages(&lines(res).await),
        ["Cloudlet is back to normal operation"]
    );
}

#[tokio::test]
async fn no_change_answers_updated_successfully_and_does_nothing() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("opuser").await;

    // Field 30 absent: a silent no-op, even for a start.
    let res = sim
        .post_auth(
            &token,
            "ctrl/UpdateCloudlet",
            &json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"},
                    "maintenance_state": "MaintenanceStart"}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        messages(&lines(res).await),
        ["Cloudlet updated successfully"]
    );
    // The value equals the stored one (a serializer dropped the zero value: same thing).
    for body in [
        json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"},
               "maintenance_state": "NormalOperation", "fields": ["30"]}}),
        json!({"Region": "EU", "Cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"},
               "fields": ["30"]}}),
    ] {
        let res = sim.post_auth(&token, "ctrl/UpdateCloudlet", &body).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            messages(&lines(res).await),
            ["Cloudlet updated successfully"]
        );
    }
    assert!(sim.transitions("berlin-1").await.is_empty());
}

#[tokio::test]
async fn start_outside_normal_operation_is_refused() {
    let sim = Sim::start(scenario(&cloudlet(
        "berlin-1",
        "maintenance_state = \"UnderMaintenance\"",
    )))
    .await;
    let token = sim.login("opuser").await;
    for state in ["MaintenanceStart", "MaintenanceStartNoFailover"] {
        let res = sim.update(&token, "berlin-1", json!(state)).await;
        assert_eq!(res.status(), 400);
        assert_eq!(
            message_of(res).await,
            "Cloudlet must be in NormalOperation before starting maintenance"
        );
    }
    assert!(sim.transitions("berlin-1").await.is_empty());
}

#[tokio::test]
async fn invalid_and_unparseable_states_are_400() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("opuser").await;
    for state in [
        json!("UnderMaintenance"),
        json!(31),
        json!("CrmRequested"),
        json!("FAILOVER_DONE"),
        json!(999), // integers outside the enum pass the unmarshaller, as on the real MC
    ] {
        let res = sim.update(&token, "berlin-1", state.clone()).await;
        assert_eq!(res.status(), 400, "{state}");
        assert_eq!(
            message_of(res).await,
            "Invalid maintenance state, only normal operation and maintenance start states are allowed"
        );
    }
    for state in [json!("Maintenance"), json!(1.5), json!(true)] {
        let res = sim.update(&token, "berlin-1", state.clone()).await;
        assert_eq!(res.status(), 400, "{state}");
        let m = message_of(res).await;
        assert!(
            m.starts_with(
                "Invalid data: code=400, message=Unmarshal type error: expected=dme.MaintenanceState"
            ) && m.contains("field=Cloudlet.maintenance_state"),
            "{m}"
        );
    }
    let res = sim.update(&token, "berlin-1", json!("Maintenance")).await;
    assert!(message_of(res).await.contains("got=value Maintenance"));
    let res = sim
        .post_auth(&token, "ctrl/UpdateCloudlet", &json!("not an object"))
        .await;
    assert_eq!(res.status(), 400);
    assert!(sim.transitions("berlin-1").await.is_empty());
}

#[tokio::test]
async fn rbac_allows_only_operator_managers_contributors_and_admins() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    for user in ["viewer", "orange"] {
        let token = sim.login(user).await;
        let res = sim
            .update(&token, "berlin-1", json!("MaintenanceStartNoFailover"))
            .await;
        assert_eq!(res.status(), 403, "{user}");
        assert_eq!(message_of(res).await, "Forbidden");
        // Showing is allowed to any authenticated user.
        assert!(sim.show(&token, "berlin-1").await.is_some());
    }
    assert!(sim.transitions("berlin-1").await.is_empty());
    let admin = sim.login("admin").await;
    let res = sim
        .update(&admin, "berlin-1", json!("MaintenanceStartNoFailover"))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(lines(res).await.len(), 3);
}

#[tokio::test]
async fn unknown_cloudlet_is_not_found() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("opuser").await;
    let res = sim
        .update(&token, "nowhere-9", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        message_of(res).await,
        r#"Cloudlet key {"organization":"TDG","name":"nowhere-9"} not found"#
    );
    let res = sim
        .post_auth(
            &token,
            "ctrl/UpdateCloudlet",
            &json!({"region": "XX", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"}}}),
        )
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(message_of(res).await, r#"Region "XX" not found"#);
    let admin = sim.login("admin").await;
    for (key, message) in [
        (json!({"name": "berlin-1"}), "Invalid organization name"),
        (json!({"organization": "TDG"}), "Invalid cloudlet name"),
    ] {
        let res = sim
            .post_auth(
                &admin,
                "ctrl/UpdateCloudlet",
                &json!({"region": "EU", "cloudlet": {"key": key, "maintenance_state": 1, "fields": ["30"]}}),
            )
            .await;
        assert_eq!(res.status(), 400);
        assert_eq!(message_of(res).await, message);
    }
}

// ---------------------------------------------------------------------------------------------
// Failures.

#[tokio::test]
async fn autoprov_error_undoes_to_normal_operation() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", "autoprov_error = true"))).await;
    let token = sim.login("opuser").await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 200);
    let got = messages(&lines(res).await);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], "Starting AutoProv failover");
    assert!(got[1].starts_with("Failover error: "), "{got:?}");
    assert_eq!(
        got[2],
        "RESULT: AutoProv failover encountered some errors, aborting maintenance"
    );
    assert_eq!(
        sim.transitions("berlin-1").await,
        [
            tr("NormalOperation", "FailoverRequested", "controller"),
            tr("FailoverRequested", "NormalOperation", "controller"),
        ]
    );
    sim.wait_idle("berlin-1").await;
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert!(shown.get("maintenance_state").is_none(), "{shown}");
}

#[tokio::test]
async fn autoprov_timeout_leaves_update_error_until_normal_operation() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", "autoprov_no_reply = true"))).await;
    let token = sim.login("opuser").await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(
        messages(&lines(res).await),
        [
            "Starting AutoProv failover",
            "RESULT: Timed out waiting for AutoProvInfo maintenance state"
        ]
    );
    sim.wait_idle("berlin-1").await;
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert_eq!(shown["maintenance_state"], "FailoverRequested");
    assert_eq!(shown["state"], "UpdateError");

    // No start from a stuck state ...
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        message_of(res).await,
        "Cloudlet must be in NormalOperation before starting maintenance"
    );
    // ... until NormalOperation clears it.
    let res = sim
        .update(&token, "berlin-1", json!("NormalOperation"))
        .await;
    assert_eq!(res.status(), 200);
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert!(shown.get("maintenance_state").is_none(), "{shown}");
    assert_eq!(shown["state"], "Ready");
    assert_eq!(
        sim.transitions("berlin-1").await[1..],
        [
            tr("FailoverRequested", "NormalOperationInit", "controller"),
            tr("NormalOperationInit", "NormalOperation", "controller"),
        ]
    );
}

#[tokio::test]
async fn slow_crm_times_out_then_acknowledges_late() {
    // CRM latency 80 s > T = 50 s: the controller gives up, the CRM answers later anyway.
    let sim = Sim::start(scenario(&cloudlet(
        "berlin-1",
        "crm_latency = { fixed = \"80s\" }",
    )))
    .await;
    let token = sim.login("opuser").await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStartNoFailover"))
        .await;
    assert_eq!(
        messages(&lines(res).await),
        [
            "Starting CRM maintenance",
            "RESULT: Timed out waiting for CloudletInfo maintenance state"
        ]
    );
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert_eq!(shown["maintenance_state"], "CrmRequested");
    // UpdateError does not stick: the late acknowledgement makes it Ready again.
    wait_for("late CRM acknowledgement", || async {
        sim.show(&token, "berlin-1").await.unwrap()["state"] == "Ready"
    })
    .await;
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert_eq!(shown["maintenance_state"], "CrmRequested");
}

#[tokio::test]
async fn crm_that_missed_the_exit_keeps_timing_out_until_restarted() {
    let sim = Sim::start(scenario(&cloudlet(
        "berlin-1",
        "maintenance_state = \"UnderMaintenance\"\ncrm_no_ack = true",
    )))
    .await;
    let token = sim.login("opuser").await;
    for _ in 0..2 {
        let res = sim
            .update(&token, "berlin-1", json!("NormalOperation"))
            .await;
        assert_eq!(res.status(), 400);
        assert_eq!(
            res.headers()["content-type"],
            "application/json",
            "a plain HTTP error, not a stream"
        );
        assert_eq!(
            message_of(res).await,
            "Timed out waiting for CloudletInfo maintenance state"
        );
        let shown = sim.show(&token, "berlin-1").await.unwrap();
        assert_eq!(shown["maintenance_state"], "NormalOperationInit");
        assert_eq!(shown["state"], "UpdateError");
    }
    // Fixing the knob is not enough: the CRM only reacts to changes, it stays deaf.
    sim.set_knobs("berlin-1", json!({"crm_no_ack": false}))
        .await;
    let res = sim
        .update(&token, "berlin-1", json!("NormalOperation"))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(sim.sim_cloudlet("berlin-1").await["crm_stuck"], true);

    let res = sim
        .post_sim(
            "crm_restart",
            &json!({"region": "EU", "organization": "TDG", "name": "berlin-1"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert!(shown.get("maintenance_state").is_none(), "{shown}");
    assert_eq!(shown["state"], "Ready");
    assert_eq!(
        sim.transitions("berlin-1").await,
        [
            tr("UnderMaintenance", "NormalOperationInit", "controller"),
            tr("NormalOperationInit", "NormalOperation", "crm_restart"),
        ]
    );
    // And the next handshake works.
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStartNoFailover"))
        .await;
    assert_eq!(lines(res).await.len(), 3);
}

#[tokio::test]
async fn crm_no_ack_on_start_leaves_crm_requested() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", "crm_no_ack = true"))).await;
    let token = sim.login("opuser").await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(
        messages(&lines(res).await),
        [
            "Starting AutoProv failover",
            "AutoProv failover completed",
            "Starting CRM maintenance",
            "RESULT: Timed out waiting for CloudletInfo maintenance state"
        ]
    );
    sim.wait_idle("berlin-1").await;
    let shown = sim.show(&token, "berlin-1").await.unwrap();
    assert_eq!(shown["maintenance_state"], "CrmRequested");
    assert_eq!(shown["state"], "UpdateError");
}

#[tokio::test]
async fn dropped_stream_keeps_running_server_side_and_holds_the_lock() {
    // The CRM takes an hour (T two hours): the handshake is certainly still running after the
    // drop, until a CRM restart acknowledges.
    let mut sc = scenario(&cloudlet(
        "berlin-1",
        "drop_after_first_line = true\ncrm_latency = { fixed = \"1h\" }",
    ));
    sc.maintenance_timeout = std::time::Duration::from_secs(7200).into();
    let sim = Sim::start(sc).await;
    let token = sim.login("opuser").await;
    let mut res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.unwrap().expect("first line");
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first["data"]["message"], "Starting AutoProv failover");
    // The connection drops before the stream ends.
    let mut rest = Vec::new();
    let dropped = loop {
        match res.chunk().await {
            Ok(Some(c)) => rest.extend_from_slice(&c),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(
        dropped,
        "stream ended cleanly: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // Still running server-side: an immediate retry is refused.
    wait_for("the handshake to reach the CRM", || async {
        sim.sim_cloudlet("berlin-1").await["maintenance_state"] == "CrmRequested"
    })
    .await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        message_of(res).await,
        r#"An action is already in progress for the object {"organization":"TDG","name":"berlin-1"}"#
    );
    assert_eq!(sim.sim_cloudlet("berlin-1").await["busy"], true);

    // The CRM answers; the handshake ends with nobody listening.
    let res = sim
        .post_sim("crm_restart", &json!({"name": "berlin-1"}))
        .await;
    assert_eq!(res.status(), 200);
    wait_for("the handshake to finish server-side", || async {
        sim.sim_cloudlet("berlin-1").await["maintenance_state"] == "UnderMaintenance"
    })
    .await;
    sim.wait_idle("berlin-1").await;
    assert_eq!(
        sim.transitions("berlin-1").await,
        [
            tr("NormalOperation", "FailoverRequested", "controller"),
            tr("FailoverRequested", "CrmRequested", "controller"),
            tr("CrmRequested", "UnderMaintenance", "controller"),
        ]
    );
    let events = sim.history().await["events"].as_array().unwrap().len();
    assert_eq!(events, 1);
}

#[tokio::test]
async fn concurrent_request_is_refused_while_an_action_runs() {
    // T and the CRM latency are an hour (36 s real): the first handshake holds the lock for
    // the whole test; the server shutdown at the end cancels it.
    let mut sc = scenario(&cloudlet("berlin-1", "crm_latency = { fixed = \"1h\" }"));
    sc.maintenance_timeout = std::time::Duration::from_secs(7200).into();
    let sim = Sim::start(sc).await;
    let token = sim.login("opuser").await;
    let mut first = sim
        .update(&token, "berlin-1", json!("MaintenanceStartNoFailover"))
        .await;
    assert_eq!(first.status(), 200);
    let line = first.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&line).contains("Starting CRM maintenance"));
    assert_eq!(sim.sim_cloudlet("berlin-1").await["busy"], true);

    for state in ["MaintenanceStartNoFailover", "NormalOperation"] {
        let res = sim.update(&token, "berlin-1", json!(state)).await;
        assert_eq!(res.status(), 400);
        assert_eq!(
            message_of(res).await,
            r#"An action is already in progress for the object {"organization":"TDG","name":"berlin-1"}"#
        );
    }
    // A hand-made change is refused too.
    let res = sim
        .post_sim(
            "state",
            &json!({"region": "EU", "organization": "TDG", "name": "berlin-1",
                    "maintenance_state": "NormalOperation"}),
        )
        .await;
    assert_eq!(res.status(), 409);

    // Shutting the simulator down cancels the handshake; the stream must not end cleanly (a
    // client would take a stream without a `result` line for success).
    sim.server.shutdown().await;
    let ended = loop {
        match first.chunk().await {
            Ok(Some(_)) => continue,
            Ok(None) => break "cleanly",
            Err(_) => break "with an error",
        }
    };
    assert_eq!(ended, "with an error");
}

#[tokio::test]
async fn crm_restart_acknowledges_a_running_wait() {
    let mut sc = scenario(&cloudlet(
        "berlin-1",
        "maintenance_state = \"UnderMaintenance\"\ncrm_no_ack = true",
    ));
    sc.maintenance_timeout = std::time::Duration::from_secs(7200).into();
    let sim = Sim::start(sc).await;
    let token = sim.login("opuser").await;
    let pending = {
        let http = sim.http.clone();
        let url = sim.url.clone();
        let token = token.clone();
        tokio::spawn(async move {
            http.post(format!("{url}/api/v1/auth/ctrl/UpdateCloudlet"))
                .bearer_auth(token)
                .json(&json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"},
                        "maintenance_state": "NormalOperation", "fields": ["30"]}}))
                .send()
                .await
        })
    };
    wait_for("the exit to wait for the CRM", || async {
        sim.sim_cloudlet("berlin-1").await["maintenance_state"] == "NormalOperationInit"
    })
    .await;
    let res = sim
        .post_sim("crm_restart", &json!({"organization": "TDG"}))
        .await;
    assert_eq!(res.status(), 200);
    let res = pending.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        messages(&lines(res).await),
        ["Cloudlet is back to normal operation"]
    );
    assert_eq!(
        sim.transitions("berlin-1").await[1],
        tr("NormalOperationInit", "NormalOperation", "controller")
    );
}

#[tokio::test]
async fn exit_sends_no_headers_before_the_crm_answered() {
    let sim = Sim::start(scenario(&cloudlet(
        "berlin-1",
        "maintenance_state = \"UnderMaintenance\"\ncrm_latency = { fixed = \"30s\" }",
    )))
    .await;
    let token = sim.login("opuser").await;
    // `send` resolves when the response headers arrive.
    let res = sim
        .update(&token, "berlin-1", json!("NormalOperation"))
        .await;
    let at_headers = sim.transitions("berlin-1").await;
    assert_eq!(
        at_headers,
        [
            tr("UnderMaintenance", "NormalOperationInit", "controller"),
            tr("NormalOperationInit", "NormalOperation", "controller"),
        ],
        "headers arrived before the CRM answered"
    );
    assert_eq!(res.status(), 200);
    assert_eq!(
        messages(&lines(res).await),
        ["Cloudlet is back to normal operation"]
    );
}

#[tokio::test]
async fn bad_gateway_rate_one_answers_502_and_does_nothing() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", "error_5xx_rate = 1.0"))).await;
    let token = sim.login("opuser").await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["content-type"], "text/html");
    assert_eq!(
        res.text().await.unwrap(),
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
    );
    let res = sim
        .post_auth(
            &token,
            "ctrl/ShowCloudlet",
            &json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "berlin-1"}}}),
        )
        .await;
    assert_eq!(res.status(), 502);
    assert!(sim.transitions("berlin-1").await.is_empty());
    assert_eq!(sim.sim_cloudlet("berlin-1").await["busy"], false);

    sim.set_knobs("berlin-1", json!({"error_5xx_rate": 0.0}))
        .await;
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStartNoFailover"))
        .await;
    assert_eq!(res.status(), 200);
}

// ---------------------------------------------------------------------------------------------
// Login, tokens, show.

#[tokio::test]
async fn login_and_token_errors() {
    let mut sc = scenario(&cloudlet("berlin-1", ""));
    sc.token_lifetime = std::time::Duration::from_secs(3).into(); // 30 ms real
    let sim = Sim::start(sc).await;

    let res = sim
        .http
        .post(format!("{}/api/v1/login", sim.url))
        .json(&json!({"username": "opuser", "password": "wrong"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(message_of(res).await, "Invalid username or password");

    let res = sim
        .http
        .post(format!("{}/api/v1/login", sim.url))
        .json(&json!({"username": "admin", "password": "secret"}))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["admin"], true);
    assert_eq!(body["token"].as_str().unwrap().split('.').count(), 3);

    let show = json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG"}}});
    let res = sim
        .http
        .post(format!("{}/api/v1/auth/ctrl/ShowCloudlet", sim.url))
        .json(&show)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(message_of(res).await, "No bearer token found");

    let res = sim.post_auth("garbage", "ctrl/ShowCloudlet", &show).await;
    assert_eq!(res.status(), 401);
    assert_eq!(message_of(res).await, "Invalid or expired jwt");

    // Natural expiry (3 s scaled to 30 ms).
    let token = sim.login("opuser").await;
    wait_for("the token to expire", || async {
        sim.post_auth(&token, "ctrl/ShowCloudlet", &show)
            .await
            .status()
            == 400
    })
    .await;
    let res = sim.post_auth(&token, "ctrl/ShowCloudlet", &show).await;
    assert_eq!(message_of(res).await, "expired jwt");

    // Passwords never reach the history.
    let h = sim.history().await;
    let logins: Vec<_> = h["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/api/v1/login")
        .collect();
    assert_eq!(logins.len(), 3);
    for r in &logins {
        assert_eq!(r["body"]["password"], "<redacted>");
    }
    assert_eq!(logins[0]["status"], 400);
    assert_eq!(logins[1]["user"], "admin");
}

#[tokio::test]
async fn expire_tokens_expires_every_issued_token() {
    let sim = Sim::start(scenario(&cloudlet("berlin-1", ""))).await;
    let token = sim.login("opuser").await;
    assert!(sim.show(&token, "berlin-1").await.is_some());
    let res = sim.post_sim("expire_tokens", &json!({})).await;
    assert_eq!(res.status(), 200);
    let res = sim
        .update(&token, "berlin-1", json!("MaintenanceStart"))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(message_of(res).await, "expired jwt");
    // A new login works.
    let token = sim.login("opuser").await;
    assert!(sim.show(&token, "berlin-1").await.is_some());
}

#[tokio::test]
async fn show_filters_by_key_and_prints_integer_enums_on_old_servers() {
    let cloudlets = format!(
        "{}{}{}",
        cloudlet("berlin-1", ""),
        cloudlet(
            "berlin-2",
            "maintenance_state = \"UnderMaintenance\"\ninteger_enums = true"
        ),
        "[[cloudlets]]\nregion = \"EU\"\norganization = \"Orange\"\nname = \"paris-1\"\n\
         [[cloudlets]]\nregion = \"US\"\norganization = \"TDG\"\nname = \"dallas-1\"\n"
    );
    let sim = Sim::start(scenario(&cloudlets)).await;
    let token = sim.login("viewer").await;

    let res = sim
        .post_auth(
            &token,
            "ctrl/ShowCloudlet",
            &json!({"Region": "EU", "Cloudlet": {"key": {"organization": "TDG"}}}),
        )
        .await;
    let got = lines(res).await;
    let names: Vec<_> = got
        .iter()
        .map(|l| l["data"]["key"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("berlin-1"), json!("berlin-2")]);
    assert!(got[0]["data"].get("maintenance_state").is_none());
    assert_eq!(got[0]["data"]["platform_type"], "Fakeinfra");
    assert_eq!(got[1]["data"]["maintenance_state"], 31);

    let res = sim
        .post_auth(&token, "ctrl/ShowCloudlet", &json!({"region": "EU"}))
        .await;
    assert_eq!(lines(res).await.len(), 3);

    let res = sim
        .post_auth(
            &token,
            "ctrl/ShowCloudlet",
            &json!({"region": "EU", "cloudlet": {"key": {"organization": "TDG", "name": "nope"}}}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "");

    let res = sim
        .post_auth(&token, "ctrl/ShowCloudlet", &json!({"cloudlet": {}}))
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(message_of(res).await, "No region specified");
}

// ---------------------------------------------------------------------------------------------
// The control API.

#[tokio::test]
async fn control_api_changes_state_knobs_and_time_scale() {
    let sim = Sim::start(scenario(&format!(
        "{}{}",
        cloudlet("berlin-1", ""),
        cloudlet("berlin-2", "")
    )))
    .await;
    let token = sim.login("opuser").await;

    let res = sim
        .post_sim(
            "state",
            &json!({"region": "EU", "organization": "TDG", "name": "berlin-1",
                    "maintenance_state": "UnderMaintenance"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        sim.transitions("berlin-1").await,
        [tr("NormalOperation", "UnderMaintenance", "manual")]
    );
    assert_eq!(
        sim.show(&token, "berlin-1").await.unwrap()["maintenance_state"],
        "UnderMaintenance"
    );
    let res = sim
        .post_sim(
            "state",
            &json!({"region": "EU", "organization": "TDG", "name": "berlin-1",
                    "maintenance_state": "MaintenanceStart"}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let res = sim
        .post_sim(
            "state",
            &json!({"region": "EU", "organization": "TDG", "name": "nope",
                    "maintenance_state": "NormalOperation"}),
        )
        .await;
    assert_eq!(res.status(), 404);

    // Knobs: every cloudlet when the selector is empty; 404 for an unknown one; 400 for a typo.
    let res = sim
        .post_sim("knobs", &json!({"knobs": {"integer_enums": true}}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        sim.show(&token, "berlin-1").await.unwrap()["maintenance_state"],
        31
    );
    assert_eq!(
        sim.sim_cloudlet("berlin-2").await["knobs"]["integer_enums"],
        true
    );
    let res = sim
        .post_sim(
            "knobs",
            &json!({"name": "nope", "knobs": {"crm_no_ack": true}}),
        )
        .await;
    assert_eq!(res.status(), 404);
    let res = sim
        .post_sim("knobs", &json!({"knobs": {"crm_no_akc": true}}))
        .await;
    assert_eq!(res.status(), 400);
    sim.set_knobs(
        "berlin-2",
        json!({"crm_latency": {"uniform": ["1s", "2s"]}}),
    )
    .await;
    assert_eq!(
        sim.sim_cloudlet("berlin-2").await["knobs"]["crm_latency"],
        json!({"uniform": ["1s", "2s"]})
    );

    let res = sim
        .post_sim("time_scale", &json!({"time_scale": 0.001}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(sim.get_sim("time_scale").await["time_scale"], 0.001);
    let res = sim
        .post_sim("time_scale", &json!({"time_scale": -1.0}))
        .await;
    assert_eq!(res.status(), 400);

    // Every API request is in the history, with its user and final status.
    let h = sim.history().await;
    let shows: Vec<_> = h["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/api/v1/auth/ctrl/ShowCloudlet")
        .collect();
    assert!(!shows.is_empty());
    assert!(
        shows
            .iter()
            .all(|r| r["user"] == "opuser" && r["status"] == 200)
    );
    assert!(h["requests"][0]["at"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn demo_scenario_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/demo.toml");
    let sc = mc_sim::Scenario::from_file(&path).unwrap();
    assert_eq!(sc.cloudlets.len(), 12);
    // The same structure as JSON.
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("demo.json");
    std::fs::write(&json_path, serde_json::to_string(&sc).unwrap()).unwrap();
    let again = mc_sim::Scenario::from_file(&json_path).unwrap();
    assert_eq!(again.cloudlets.len(), 12);
    assert!(mc_sim::Scenario::from_file(&dir.path().join("x.yaml")).is_err());
}
