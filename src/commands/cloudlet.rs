//! `cloudlet show|enter|exit`: manual operations on one cloudlet, like mcctl.
//!
//! These exist for the person on call: to look at a cloudlet, to put one into maintenance by
//! hand, or to bring one back, with the same client (and so the same timeouts, TLS settings and
//! credentials) as the daemon. `enter` and `exit` print each progress line of the handshake as
//! it arrives, then read the state back, because the end of the stream is not the truth. The
//! exit status says whether the cloudlet ended where it was asked to go.
//!
//! Exit status: 0 when the state read back is the expected one, 1 when the controller said no
//! or the state is not the expected one, 2 for usage and configuration errors (a bad `ORG/NAME`,
//! no password, an unusable `ca_file`). Errors go to stderr as one line each.

use std::time::{Duration, Instant};

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::cli::CloudletAction;
use crate::config::Config;
use crate::controller::{
    self, ClientError, CloudletKey, CloudletStatus, MaintenanceTarget, McClient,
};

/// How often the state is read while waiting for it to settle after a broken stream.
const SETTLE_POLL: Duration = Duration::from_secs(1);

/// Runs one manual operation and returns the exit status.
pub async fn run(config: &Config, action: &CloudletAction) -> i32 {
    match action {
        CloudletAction::Show {
            region,
            cloudlet,
            org,
        } => {
            let key = match cloudlet.as_deref().map(parse_key).transpose() {
                Ok(k) => k,
                Err(code) => return code,
            };
            let client = match connect(config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            show(&client, region, key.as_ref(), org.as_deref()).await
        }
        CloudletAction::Enter {
            region,
            cloudlet,
            no_failover,
        } => {
            let target = if *no_failover {
                MaintenanceTarget::StartNoFailover
            } else {
                MaintenanceTarget::Start
            };
            transition(config, region, cloudlet, target).await
        }
        CloudletAction::Exit { region, cloudlet } => {
            transition(config, region, cloudlet, MaintenanceTarget::Normal).await
        }
    }
}

fn parse_key(text: &str) -> Result<CloudletKey, i32> {
    text.parse::<CloudletKey>().map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// Loads the password and builds the client; a failure is a configuration error.
fn connect(config: &Config) -> Result<McClient, i32> {
    let password = controller::load_password(&config.controller).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })?;
    McClient::new(&config.controller, password).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// The exit status for a client error.
fn error_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Config(_) => EXIT_USAGE,
        _ => EXIT_FAILED,
    }
}

async fn show(
    client: &McClient,
    region: &str,
    key: Option<&CloudletKey>,
    org: Option<&str>,
) -> i32 {
    let result = match (key, org) {
        (Some(k), _) => client.show_cloudlet(region, k).await.map(|c| vec![c]),
        (None, Some(o)) => client.show_cloudlets(region, Some(o)).await,
        (None, None) => client.show_cloudlets(region, None).await,
    };
    match result {
        Ok(list) if list.is_empty() => {
            match org {
                Some(o) => eprintln!(
                    "error: no cloudlet of organization {o} in region {region}; check the organization and the region"
                ),
                None => eprintln!("error: no cloudlet in region {region}"),
            }
            EXIT_FAILED
        }
        Ok(list) => {
            print!("{}", format_table(&list));
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            error_code(&e)
        }
    }
}

/// A small aligned table: cloudlet, maintenance state, tracked state.
pub fn format_table(list: &[CloudletStatus]) -> String {
    let rows: Vec<[String; 3]> = list
        .iter()
        .map(|c| {
            [
                c.key.to_string(),
                c.maintenance_state.to_string(),
                c.tracked_state.clone().unwrap_or_else(|| "-".to_string()),
            ]
        })
        .collect();
    let header = ["CLOUDLET", "MAINTENANCE STATE", "TRACKED STATE"];
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 3]| {
        format!(
            "{:<w0$}  {:<w1$}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            w0 = width[0],
            w1 = width[1]
        )
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2]]));
    }
    out
}

fn describe(c: &CloudletStatus) -> String {
    match &c.tracked_state {
        Some(t) => format!("{} is {} (tracked state {t})", c.key, c.maintenance_state),
        None => format!("{} is {}", c.key, c.maintenance_state),
    }
}

async fn transition(
    config: &Config,
    region: &str,
    cloudlet: &str,
    target: MaintenanceTarget,
) -> i32 {
    let key = match parse_key(cloudlet) {
        Ok(k) => k,
        Err(code) => return code,
    };
    let client = match connect(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let expected = target.final_state();
    let started = Instant::now();
    let stamp = move || format!("[{:>6.1}s]", started.elapsed().as_secs_f64());
    println!(
        "{} requesting {target} for {key} in region {region}",
        stamp()
    );
    let mut progress = |message: &str| println!("{} {message}", stamp());
    let result = client
        .set_maintenance(region, &key, target, &mut progress)
        .await;

    match result {
        Ok(()) => match client.show_cloudlet(region, &key).await {
            Ok(state) => {
                println!("{} read back: {}", stamp(), describe(&state));
                if state.maintenance_state == expected {
                    EXIT_OK
                } else {
                    eprintln!(
                        "error: the handshake ended without error but {key} is {}, not {expected}; run `cloudlet show` again, and if it is stuck, `cloudlet exit`",
                        state.maintenance_state
                    );
                    EXIT_FAILED
                }
            }
            Err(e) => {
                eprintln!(
                    "error: the handshake ended without error, but reading the state back failed: {e}"
                );
                EXIT_FAILED
            }
        },
        Err(e @ (ClientError::StreamDropped(_) | ClientError::TimedOut { .. })) => {
            eprintln!("error: {e}");
            let limit = config.controller.handshake_timeout;
            eprintln!(
                "waiting up to {} for the state of {key} to settle…",
                humantime::format_duration(limit)
            );
            match settle(&client, region, &key, limit).await {
                Some(state) => {
                    println!("{} read back: {}", stamp(), describe(&state));
                    if state.maintenance_state == expected {
                        println!(
                            "{} {key} reached {expected} despite the broken request",
                            stamp()
                        );
                        EXIT_OK
                    } else {
                        EXIT_FAILED
                    }
                }
                None => EXIT_FAILED,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            if !matches!(
                e,
                ClientError::Config(_)
                    | ClientError::BadCredentials { .. }
                    | ClientError::NotFound { .. }
                    | ClientError::Transport(_)
            ) && let Ok(state) = client.show_cloudlet(region, &key).await
            {
                println!("{} current state: {}", stamp(), describe(&state));
            }
            error_code(&e)
        }
    }
}

/// Reads the state until it is no longer an intermediate one, or `limit` passes.
async fn settle(
    client: &McClient,
    region: &str,
    key: &CloudletKey,
    limit: Duration,
) -> Option<CloudletStatus> {
    let deadline = Instant::now() + limit;
    let mut last = None;
    loop {
        match client.show_cloudlet(region, key).await {
            Ok(state) if !state.maintenance_state.is_intermediate() => return Some(state),
            Ok(state) => last = Some(state),
            Err(e) => eprintln!("error: reading the state back: {e}"),
        }
        if Instant::now() + SETTLE_POLL > deadline {
            if let Some(state) = &last {
                eprintln!(
                    "error: {} is still in the intermediate state {}; run `cloudlet exit` to recover it",
                    key, state.maintenance_state
                );
            }
            return None;
        }
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::MaintenanceState;

    #[test]
    fn table_is_aligned() {
        let list = vec![
            CloudletStatus {
                region: "EU".into(),
                key: CloudletKey::new("TDG", "berlin-1"),
                maintenance_state: MaintenanceState::UnderMaintenance,
                tracked_state: Some("Ready".into()),
            },
            CloudletStatus {
                region: "EU".into(),
                key: CloudletKey::new("TDG", "b2"),
                maintenance_state: MaintenanceState::NormalOperation,
                tracked_state: None,
            },
        ];
        let t = format_table(&list);
        assert_eq!(
            t,
            "CLOUDLET      MAINTENANCE STATE  TRACKED STATE\n\
             TDG/berlin-1  UnderMaintenance   Ready\n\
             TDG/b2        NormalOperation    -\n"
        );
    }

    #[test]
    fn config_errors_are_usage_errors() {
        assert_eq!(error_code(&ClientError::Config("x".into())), EXIT_USAGE);
        assert_eq!(
            error_code(&ClientError::Forbidden { org: "o".into() }),
            EXIT_FAILED
        );
    }
}
