//! [`McClient`]: the HTTP client of the Master Controller REST API.
//!
//! Timeouts follow the shape of the protocol (`controller-protocol.md` §2–3):
//! - `connect_timeout` bounds connecting (TCP + TLS) only;
//! - `request_timeout` bounds a whole login or ShowCloudlet exchange, body included;
//! - `handshake_timeout` bounds a whole UpdateCloudlet exchange, and nothing shorter applies
//!   to it: on the NormalOperation path the controller writes not even response headers until
//!   the CRM has answered (up to T), so a "first byte" or read timeout below the handshake
//!   timeout would break every slow exit. The reqwest client therefore has no read timeout
//!   and no total timeout; each call sets its own deadline with `tokio::time::timeout`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Mutex;

use super::error::{ClientError, Context, classify, snippet};
use super::ndjson::{self, Line, LineSplitter};
use super::tls;
use super::types::{CloudletKey, CloudletStatus, MaintenanceTarget, WireCloudlet};
use crate::config::{ControllerConfig, Secret};

/// Error bodies are read up to this size (a `{"message":…}` is tiny; an HTML page is cut).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// After an error line, how long the rest of the stream (normally: nothing, then its end) is
/// awaited before giving up on it.
const DRAIN_AFTER_ERROR: Duration = Duration::from_secs(5);
/// ShowCloudlet answers are refused beyond this size.
const MAX_SHOW_BODY: usize = 64 * 1024 * 1024;

/// Idle connections kept per controller host (see `McClient::new`).
const IDLE_CONNECTIONS: usize = 16;

/// Client of the Master Controller for one user. Cheap to clone: clones share the connection
/// pool and the token.
#[derive(Clone)]
pub struct McClient {
    http: reqwest::Client,
    /// Base URL without `/api/v1` and without a trailing slash; validated to hold no
    /// credentials, so it may appear in error messages and logs.
    base: String,
    username: String,
    password: Secret,
    token: Arc<Mutex<TokenSlot>>,
    request_timeout: Duration,
    handshake_timeout: Duration,
}

/// The bearer token, and how many logins produced it (so that concurrent callers who all saw
/// the same expired token trigger one re-login, not one each).
#[derive(Default)]
struct TokenSlot {
    token: Option<Secret>,
    generation: u64,
}

impl fmt::Debug for McClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("McClient")
            .field("base", &self.base)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// The outcome of an authenticated POST, once authentication problems are dealt with.
enum Answer {
    /// 2xx: the body is still to be read.
    Ok(reqwest::Response),
    /// Any other status, with (the start of) its body.
    Failed {
        status: u16,
        body: Vec<u8>,
        location: Option<String>,
    },
}

impl McClient {
    /// Builds a client for `cfg`, authenticating as `cfg.username` with `password`.
    ///
    /// Does not contact the controller: the first call logs in.
    pub fn new(cfg: &ControllerConfig, password: Secret) -> Result<McClient, ClientError> {
        let base = base_url(&cfg.url)?;
        let tls = tls::client_config(cfg)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(cfg.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cloudlet-maintd/", env!("CARGO_PKG_VERSION")))
            // A handshake may be silent for minutes; keep NAT and firewall state alive.
            .tcp_keepalive(Duration::from_secs(30))
            // Connections kept for reuse: enough for the read and handshake caps' usual
            // traffic; a burst above it closes the extra connections instead of keeping
            // thousands of idle sockets and their buffers.
            .pool_max_idle_per_host(IDLE_CONNECTIONS)
            .build()
            .map_err(|e| {
                ClientError::Config(format!("cannot build the HTTP client: {}", chain(&e)))
            })?;
        Ok(McClient {
            http,
            base,
            username: cfg.username.clone(),
            password,
            token: Arc::new(Mutex::new(TokenSlot::default())),
            request_timeout: cfg.request_timeout,
            handshake_timeout: cfg.handshake_timeout,
        })
    }

    /// The base URL (no credentials, no `/api/v1`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The user this client logs in as.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Logs in now (replacing any token). Other calls log in lazily, so this is only needed to
    /// check credentials early.
    pub async fn login(&self) -> Result<(), ClientError> {
        let mut slot = self.token.lock().await;
        let token = self.fetch_token().await?;
        slot.token = Some(token);
        slot.generation += 1;
        Ok(())
    }

    /// Lists the cloudlets of `region`, all of them or those of one organization.
    pub async fn show_cloudlets(
        &self,
        region: &str,
        org: Option<&str>,
    ) -> Result<Vec<CloudletStatus>, ClientError> {
        let filter = match org {
            Some(o) => json!({"key": {"organization": o}}),
            None => json!({}),
        };
        let ctx = Context {
            region,
            key: None,
            org,
        };
        self.show(region, filter, &ctx).await
    }

    /// Reads one cloudlet; [`ClientError::NotFound`] when the controller does not know it.
    pub async fn show_cloudlet(
        &self,
        region: &str,
        key: &CloudletKey,
    ) -> Result<CloudletStatus, ClientError> {
        let filter = json!({"key": {"organization": key.organization, "name": key.name}});
        let ctx = Context {
            region,
            key: Some(key),
            org: Some(&key.organization),
        };
        let found = self.show(region, filter, &ctx).await?;
        found
            .into_iter()
            .find(|c| &c.key == key)
            .ok_or_else(|| ClientError::NotFound {
                region: region.to_string(),
                key: key.clone(),
            })
    }

    /// Runs one UpdateCloudlet handshake to `target`, calling `progress` with each progress
    /// message as it arrives. `Ok` means the stream ended without an error line; read the state
    /// back with [`McClient::show_cloudlet`] before trusting it.
    ///
    /// The request always names the state explicitly (even `NormalOperation`) with
    /// `"fields":["30"]`: without them the controller silently does nothing.
    pub async fn set_maintenance(
        &self,
        region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ClientError> {
        let deadline = self.handshake_timeout;
        match tokio::time::timeout(deadline, self.update(region, key, target, progress)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::TimedOut {
                what: format!("UpdateCloudlet {key} ({target}) in region {region}"),
                after: deadline,
            }),
        }
    }

    async fn update(
        &self,
        region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ClientError> {
        let body = update_body(region, key, target);
        let ctx = Context {
            region,
            key: Some(key),
            org: Some(&key.organization),
        };
        tracing::debug!(%region, cloudlet = %key, %target, "UpdateCloudlet");
        let response = match self
            .post_authed("/api/v1/auth/ctrl/UpdateCloudlet", &body, true)
            .await?
        {
            Answer::Ok(r) => r,
            Answer::Failed {
                status,
                body,
                location,
            } => return Err(failed(status, &body, location, &ctx)),
        };

        let mut stream = response.bytes_stream();
        let mut lines = LineSplitter::new();
        let handle =
            |line: &[u8], progress: &mut (dyn FnMut(&str) + Send)| match ndjson::parse_line(line) {
                Some(Line::Data(data)) => {
                    if let Some(m) = ndjson::data_message(&data) {
                        tracing::debug!(%region, cloudlet = %key, message = m, "progress");
                        progress(m);
                    }
                    Ok(())
                }
                Some(Line::Result { message, code }) => {
                    // The status is 200 already; the code only tells a permission problem apart.
                    let status = if code == Some(403) { 403 } else { 200 };
                    Err(classify(status, &message, &ctx))
                }
                None => Err(ClientError::Protocol {
                    status: 200,
                    snippet: snippet(line),
                }),
            };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::StreamDropped(chain(&e)))?;
            let complete = lines.push(&chunk).map_err(|_| ClientError::Protocol {
                status: 200,
                snippet: format!("a line longer than {} bytes", ndjson::MAX_LINE),
            })?;
            for line in complete {
                if let Err(e) = handle(&line, progress) {
                    if matches!(e, ClientError::Protocol { .. }) {
                        return Err(e);
                    }
                    // An error line is the last one; read on to the end of the stream (the
                    // controller closes it right after, and releases the cloudlet's action
                    // lock), so that whoever acts on this error does not race that release.
                    let _ = tokio::time::timeout(DRAIN_AFTER_ERROR, async {
                        while let Some(Ok(_)) = stream.next().await {}
                    })
                    .await;
                    return Err(e);
                }
            }
        }
        if let Some(last) = lines.finish() {
            // No final newline. A complete object is fine; a cut one means the connection
            // ended early without telling (HTTP/1.0-style close-delimited body).
            if ndjson::parse_line(&last).is_none() {
                return Err(ClientError::StreamDropped(format!(
                    "the body ended inside a line: {}",
                    snippet(&last)
                )));
            }
            handle(&last, progress)?;
        }
        Ok(())
    }

    async fn show(
        &self,
        region: &str,
        filter: serde_json::Value,
        ctx: &Context<'_>,
    ) -> Result<Vec<CloudletStatus>, ClientError> {
        let deadline = self.request_timeout;
        let what = || match (ctx.key, ctx.org) {
            (Some(k), _) => format!("ShowCloudlet {k} in region {region}"),
            (None, Some(o)) => format!("ShowCloudlet of organization {o} in region {region}"),
            (None, None) => format!("ShowCloudlet in region {region}"),
        };
        let body = json!({"region": region, "cloudlet": filter});
        let exchange = async {
            let response = match self
                .post_authed("/api/v1/auth/ctrl/ShowCloudlet", &body, false)
                .await?
            {
                Answer::Ok(r) => r,
                Answer::Failed {
                    status,
                    body,
                    location,
                } => return Err(failed(status, &body, location, ctx)),
            };
            let status = response.status().as_u16();
            let mut stream = response.bytes_stream();
            let mut lines = LineSplitter::new();
            let mut raw = Vec::new();
            let mut size = 0usize;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    ClientError::Transport(format!("reading {}: {}", what(), chain(&e)))
                })?;
                size += chunk.len();
                if size > MAX_SHOW_BODY {
                    return Err(ClientError::Protocol {
                        status,
                        snippet: format!("answer larger than {MAX_SHOW_BODY} bytes"),
                    });
                }
                raw.extend(lines.push(&chunk).map_err(|_| ClientError::Protocol {
                    status,
                    snippet: format!("a line longer than {} bytes", ndjson::MAX_LINE),
                })?);
            }
            raw.extend(lines.finish());
            let mut out = Vec::new();
            for line in raw {
                match ndjson::parse_line(&line) {
                    Some(Line::Data(data)) => {
                        let c: WireCloudlet =
                            serde_json::from_value(data).map_err(|e| ClientError::Protocol {
                                status,
                                snippet: snippet(format!("{e} in {}", snippet(&line)).as_bytes()),
                            })?;
                        out.push(c.into_status(region));
                    }
                    Some(Line::Result { message, code }) => {
                        return Err(classify(code.unwrap_or(400), &message, ctx));
                    }
                    None => {
                        return Err(ClientError::Protocol {
                            status,
                            snippet: snippet(&line),
                        });
                    }
                }
            }
            Ok(out)
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::TimedOut {
                what: what(),
                after: deadline,
            }),
        }
    }

    /// POSTs `body` with the bearer token, logging in first if needed, and once more (then
    /// retrying once) when the controller says the token is missing, invalid or expired.
    ///
    /// `sent_matters`: for UpdateCloudlet, a connection that breaks after the request went out
    /// is a [`ClientError::StreamDropped`] (the controller may be acting on it), not a mere
    /// transport error.
    async fn post_authed(
        &self,
        path: &str,
        body: &serde_json::Value,
        sent_matters: bool,
    ) -> Result<Answer, ClientError> {
        let (mut token, mut generation) = self.current_token().await?;
        let url = format!("{}{path}", self.base);
        for attempt in 0..2 {
            let response = self
                .http
                .post(&url)
                .bearer_auth(token.expose())
                .json(body)
                .send()
                .await
                .map_err(|e| {
                    if sent_matters && !e.is_connect() {
                        ClientError::StreamDropped(format!(
                            "POST {url}: connection lost before the controller answered: {}",
                            chain(&e)
                        ))
                    } else {
                        ClientError::Transport(format!("POST {url}: {}", chain(&e)))
                    }
                })?;
            let status = response.status();
            if status.is_success() {
                return Ok(Answer::Ok(response));
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_limited(response, MAX_ERROR_BODY).await;
            let status = status.as_u16();
            if attempt == 0 && is_auth_failure(status, &body) {
                tracing::info!(
                    user = %self.username,
                    status,
                    "controller refused the session token; logging in again"
                );
                (token, generation) = self.refresh_token(generation).await?;
                continue;
            }
            return Ok(Answer::Failed {
                status,
                body,
                location,
            });
        }
        // Unreachable in practice: the second attempt always returns.
        Err(ClientError::Http {
            status: 401,
            message: "the controller refused a fresh session token".into(),
        })
    }

    /// The current token, logging in if there is none.
    async fn current_token(&self) -> Result<(Secret, u64), ClientError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = &slot.token {
            return Ok((t.clone(), slot.generation));
        }
        let t = self.fetch_token().await?;
        slot.token = Some(t.clone());
        slot.generation += 1;
        Ok((t, slot.generation))
    }

    /// A token newer than generation `stale`: someone else's fresh one, or a new login.
    async fn refresh_token(&self, stale: u64) -> Result<(Secret, u64), ClientError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = &slot.token
            && slot.generation != stale
        {
            return Ok((t.clone(), slot.generation));
        }
        slot.token = None;
        let t = self.fetch_token().await?;
        slot.token = Some(t.clone());
        slot.generation += 1;
        Ok((t, slot.generation))
    }

    /// POST /api/v1/login. The token is returned, never logged.
    async fn fetch_token(&self) -> Result<Secret, ClientError> {
        let url = format!("{}/api/v1/login", self.base);
        let deadline = self.request_timeout;
        let exchange = async {
            tracing::debug!(user = %self.username, "logging in to the controller");
            let response = self
                .http
                .post(&url)
                .json(&json!({"username": self.username, "password": self.password.expose()}))
                .send()
                .await
                .map_err(|e| ClientError::Transport(format!("POST {url}: {}", chain(&e))))?;
            let status = response.status().as_u16();
            if response.status().is_success() {
                let body = response.bytes().await.map_err(|e| {
                    ClientError::Transport(format!("reading the login answer: {}", chain(&e)))
                })?;
                let parsed: Option<String> = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_string));
                return match parsed {
                    Some(t) if !t.is_empty() => Ok(Secret::new(t)),
                    // The body has no usable token, so showing its start leaks nothing.
                    _ => Err(ClientError::Protocol {
                        status,
                        snippet: format!("login answer without a token: {}", snippet(&body)),
                    }),
                };
            }
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = read_limited(response, MAX_ERROR_BODY).await;
            match ndjson::error_message(&body) {
                Some(message) if matches!(status, 400 | 401 | 403 | 511) => {
                    Err(ClientError::BadCredentials {
                        user: self.username.clone(),
                        message,
                    })
                }
                Some(message) => Err(ClientError::Http { status, message }),
                None => Err(failed(
                    status,
                    &body,
                    location,
                    &Context {
                        region: "",
                        key: None,
                        org: None,
                    },
                )),
            }
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::TimedOut {
                what: format!("login as {}", self.username),
                after: deadline,
            }),
        }
    }
}

/// The UpdateCloudlet request body: always the explicit state and `fields: ["30"]`.
pub(crate) fn update_body(
    region: &str,
    key: &CloudletKey,
    target: MaintenanceTarget,
) -> serde_json::Value {
    json!({
        "region": region,
        "cloudlet": {
            "key": {"organization": key.organization, "name": key.name},
            "maintenance_state": target.requested_state().as_str(),
            "fields": ["30"],
        }
    })
}

/// Whether an error answer means "log in again": 401, or a 400 about a missing or expired
/// token.
pub(crate) fn is_auth_failure(status: u16, body: &[u8]) -> bool {
    if status == 401 {
        return true;
    }
    if status != 400 {
        return false;
    }
    let Some(message) = ndjson::error_message(body) else {
        return false;
    };
    let m = message.to_ascii_lowercase();
    m.contains("expired") || m.contains("no bearer token") || m.contains("invalid or expired jwt")
}

/// The error for a non-2xx answer.
fn failed(status: u16, body: &[u8], location: Option<String>, ctx: &Context<'_>) -> ClientError {
    if (300..400).contains(&status) {
        return ClientError::Http {
            status,
            message: match location {
                Some(l) => format!(
                    "redirected to {l}; set [controller] url to the final address (without /api/v1)"
                ),
                None => "redirect without a Location".to_string(),
            },
        };
    }
    match ndjson::error_message(body) {
        Some(message) => classify(status, &message, ctx),
        None => ClientError::Protocol {
            status,
            snippet: snippet(body),
        },
    }
}

/// Reads up to `limit` bytes of a body; a broken body just ends the read (it is only used for
/// error messages).
async fn read_limited(response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        if out.len() >= limit {
            break;
        }
    }
    out
}

/// Validates and normalizes the configured URL: http(s), no credentials, no query; a trailing
/// `/` or `/api/v1` is dropped.
pub(crate) fn base_url(configured: &str) -> Result<String, ClientError> {
    let shown = if configured.contains('@') {
        "(not shown: it contains '@')".to_string()
    } else {
        format!("\"{configured}\"")
    };
    let url = reqwest::Url::parse(configured.trim()).map_err(|e| {
        ClientError::Config(format!(
            "invalid controller url {shown}: {e}; expected https://HOST[:PORT]"
        ))
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Config(
            "the controller url must not contain a user name or password; set [controller] username and the password file instead".into(),
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ClientError::Config(format!(
            "invalid controller url {shown}: expected https://HOST[:PORT]"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Config(format!(
            "invalid controller url {shown}: no query or fragment allowed"
        )));
    }
    let s = url.as_str().trim_end_matches('/');
    let s = s.strip_suffix("/api/v1").unwrap_or(s);
    Ok(s.trim_end_matches('/').to_string())
}

/// A reqwest error and its sources on one line, without the URL (we add our own, which is
/// known to hold no credentials).
fn chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    let top = match e.url() {
        Some(url) => e
            .to_string()
            .replace(&format!(" for url ({url})"), "")
            .replace(&format!(" ({url})"), ""),
        None => e.to_string(),
    };
    parts.push(top);
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last().is_none_or(|p| !p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if e.is_timeout() && !parts.iter().any(|p| p.contains("timed out")) {
        parts.push("timed out".into());
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_body_is_explicit() {
        let key = CloudletKey::new("TDG", "berlin-1");
        let b = update_body("EU", &key, MaintenanceTarget::Normal);
        assert_eq!(
            b.to_string(),
            r#"{"cloudlet":{"fields":["30"],"key":{"name":"berlin-1","organization":"TDG"},"maintenance_state":"NormalOperation"},"region":"EU"}"#
        );
        let b = update_body("EU", &key, MaintenanceTarget::StartNoFailover);
        assert_eq!(
            b["cloudlet"]["maintenance_state"],
            "MaintenanceStartNoFailover"
        );
        let b = update_body("EU", &key, MaintenanceTarget::Start);
        assert_eq!(b["cloudlet"]["maintenance_state"], "MaintenanceStart");
    }

    #[test]
    fn auth_failures_are_recognized() {
        assert!(is_auth_failure(
            401,
            br#"{"message":"Invalid or expired jwt"}"#
        ));
        assert!(is_auth_failure(401, b""));
        assert!(is_auth_failure(
            400,
            br#"{"message":"No bearer token found"}"#
        ));
        assert!(is_auth_failure(
            400,
            br#"{"message":"token is expired by 1h2m3s"}"#
        ));
        assert!(!is_auth_failure(400, br#"{"message":"Forbidden"}"#));
        assert!(!is_auth_failure(403, br#"{"message":"expired"}"#));
        assert!(!is_auth_failure(
            400,
            br#"{"message":"Timed out waiting for CloudletInfo maintenance state"}"#
        ));
    }

    #[test]
    fn base_urls_are_normalized_and_checked() {
        assert_eq!(
            base_url("https://console.example.net/").unwrap(),
            "https://console.example.net"
        );
        assert_eq!(
            base_url("https://console.example.net/api/v1").unwrap(),
            "https://console.example.net"
        );
        assert_eq!(
            base_url("http://127.0.0.1:9900").unwrap(),
            "http://127.0.0.1:9900"
        );
        assert_eq!(
            base_url("https://example.net/mc/api/v1/").unwrap(),
            "https://example.net/mc"
        );
        let e = base_url("https://user:hunter2@console.example.net")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(
            e.contains("must not contain a user name or password"),
            "{e}"
        );
        let e = base_url("https://u:hunter2@").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert!(base_url("ftp://x").is_err());
        assert!(base_url("https://x/?a=b").is_err());
        assert!(base_url("console.example.net").is_err());
    }

    #[test]
    fn redirects_and_html_bodies_map_to_clear_errors() {
        let ctx = Context {
            region: "EU",
            key: None,
            org: None,
        };
        let e = failed(301, b"", Some("https://console.example.net/".into()), &ctx);
        assert!(
            e.to_string()
                .contains("redirected to https://console.example.net/")
        );
        let e = failed(502, b"<html><body>Bad Gateway</body></html>", None, &ctx);
        assert_eq!(
            e,
            ClientError::Protocol {
                status: 502,
                snippet: "<html><body>Bad Gateway</body></html>".into()
            }
        );
        let e = failed(503, br#"{"message":"overloaded"}"#, None, &ctx);
        assert_eq!(e.kind(), "http");
        assert!(e.is_retryable());
    }

    #[test]
    fn debug_output_shows_no_secrets() {
        let mut cfg = crate::config::Config::default().controller;
        cfg.url = "http://127.0.0.1:9".into();
        let c = McClient::new(&cfg, Secret::new("hunter2")).unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("127.0.0.1:9"), "{d}");
    }

    #[test]
    fn unusable_settings_are_config_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::default().controller;
        cfg.url = "https://console.example.net".into();
        cfg.ca_file = Some(dir.path().join("missing.pem"));
        let e = McClient::new(&cfg, Secret::new("x")).unwrap_err();
        assert_eq!(e.kind(), "config");
        assert!(e.to_string().contains("missing.pem"), "{e}");
        cfg.ca_file = None;
        cfg.url = "https://bob:hunter2@console.example.net".into();
        let e = McClient::new(&cfg, Secret::new("x")).unwrap_err();
        assert_eq!(e.kind(), "config");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_transport_error_without_secrets() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut cfg = crate::config::Config::default().controller;
        cfg.url = format!("http://127.0.0.1:{port}");
        let c = McClient::new(&cfg, Secret::new("hunter2")).unwrap();
        let e = c
            .show_cloudlet("EU", &CloudletKey::new("o", "n"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "transport", "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("127.0.0.1:{port}/api/v1/login")),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("for url"), "{text}");
        assert!(text.contains("Connection refused"), "{text}");
        assert!(e.is_retryable());
    }
}
