//! What can go wrong talking to the controller, as one typed enum.
//!
//! Every message is meant for an operator reading a log line at night: it says what happened
//! and what to do next. None of them ever contains the password or the token: the client
//! builds these messages only from server messages, names, and reqwest errors stripped of their
//! URL (the base URL is validated to carry no credentials).

use std::time::Duration;

use super::types::CloudletKey;

/// An error of the controller client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Login refused (wrong password, locked account, OTP required, …). `message` is the
    /// controller's own words.
    #[error(
        "login as {user} refused by the controller: {message}; check [controller] username and the password (the mc-password credential or password_file)"
    )]
    BadCredentials { user: String, message: String },

    /// HTTP 403: the user lacks a role on the cloudlet's organization.
    #[error(
        "forbidden: the controller user may not update cloudlets of organization {org}; it needs the role OperatorManager or OperatorContributor of organization {org}, or AdminManager/AdminContributor"
    )]
    Forbidden { org: String },

    /// The cloudlet does not exist in this region.
    #[error(
        "cloudlet {key} not found in region {region}; check the region and the ORG/NAME spelling (`cloudlet show --region {region} --org {org}` lists the organization's cloudlets)",
        org = key.organization
    )]
    NotFound { region: String, key: CloudletKey },

    /// The controller refused to start maintenance from the current state.
    #[error(
        "controller refused: {0}; read the state back (cloudlet show), and if it is stuck in an intermediate state request NormalOperation first"
    )]
    WrongState(String),

    /// Another request on this cloudlet is still running on the controller.
    #[error(
        "controller refused: {0}; another request on this cloudlet is still running: poll ShowCloudlet until the state settles instead of re-sending"
    )]
    InProgress(String),

    /// The handshake ended with an error line (e.g. AutoProv failover errors, undone).
    #[error("maintenance handshake failed: {0}")]
    HandshakeFailed(String),

    /// The controller's own wait for AutoProv or the CRM expired (`Timed out waiting for …`).
    #[error(
        "controller gave up: {0}; the cloudlet is probably left in an intermediate state marked UpdateError: request NormalOperation to recover (if that times out too, the CRM may need a restart)"
    )]
    ControllerTimeout(String),

    /// Our own client-side deadline expired.
    #[error(
        "{what} got no complete answer within {} (client-side deadline); the outcome must be read back with ShowCloudlet",
        humantime::format_duration(*after)
    )]
    TimedOut { what: String, after: Duration },

    /// Could not connect, TLS failed, or the connection broke before a response.
    #[error("cannot reach the controller: {0}")]
    Transport(String),

    /// The UpdateCloudlet stream broke before it ended. The controller keeps going on its own.
    #[error(
        "the UpdateCloudlet stream broke before it ended ({0}); the controller carries on by itself: the outcome must be read back with ShowCloudlet (do not re-send right away: the cloudlet stays locked until the controller is done)"
    )]
    StreamDropped(String),

    /// A body we cannot parse (an HTML error page from a proxy, truncated JSON, …).
    #[error("unexpected answer from the controller (HTTP {status}): {snippet}")]
    Protocol { status: u16, snippet: String },

    /// Any other error status with a JSON message.
    #[error("controller answered HTTP {status}: {message}")]
    Http { status: u16, message: String },

    /// Any other 400: the controller found the request invalid.
    #[error("controller rejected the request: {0}")]
    InvalidRequest(String),

    /// The client cannot be built or has no password: a local configuration problem.
    #[error("{0}")]
    Config(String),
}

impl ClientError {
    /// A stable snake_case label, for metrics and structured logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::BadCredentials { .. } => "bad_credentials",
            ClientError::Forbidden { .. } => "forbidden",
            ClientError::NotFound { .. } => "not_found",
            ClientError::WrongState(_) => "wrong_state",
            ClientError::InProgress(_) => "in_progress",
            ClientError::HandshakeFailed(_) => "handshake_failed",
            ClientError::ControllerTimeout(_) => "controller_timeout",
            ClientError::TimedOut { .. } => "timed_out",
            ClientError::Transport(_) => "transport",
            ClientError::StreamDropped(_) => "stream_dropped",
            ClientError::Protocol { .. } => "protocol",
            ClientError::Http { .. } => "http",
            ClientError::InvalidRequest(_) => "invalid_request",
            ClientError::Config(_) => "config",
        }
    }

    /// Whether trying again later (after reading the state back) may succeed without a
    /// person changing anything.
    ///
    /// True for transient trouble: transport, 5xx/429 and unparseable answers, our own timeout,
    /// a dropped stream, a concurrent action, the controller's own wait expiring (recoverable by
    /// NormalOperation), and a failed handshake that the controller undid. False for what needs
    /// a person or a different request: credentials, roles, unknown cloudlets, a wrong starting
    /// state, invalid requests and local configuration.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_)
            | ClientError::Protocol { .. }
            | ClientError::TimedOut { .. }
            | ClientError::StreamDropped(_)
            | ClientError::InProgress(_)
            | ClientError::ControllerTimeout(_)
            | ClientError::HandshakeFailed(_) => true,
            ClientError::Http { status, .. } => *status >= 500 || *status == 429,
            ClientError::BadCredentials { .. }
            | ClientError::Forbidden { .. }
            | ClientError::NotFound { .. }
            | ClientError::WrongState(_)
            | ClientError::InvalidRequest(_)
            | ClientError::Config(_) => false,
        }
    }
}

impl ClientError {
    /// What the client makes of a controller error about one cloudlet: an error status (or a
    /// stream `result` line's code) and the controller's message. For in-process controllers
    /// (the deterministic simulation) that must report a failure exactly as the HTTP client
    /// would.
    pub fn from_controller(status: u16, message: &str, region: &str, key: &CloudletKey) -> Self {
        classify(
            status,
            message,
            &Context {
                region,
                key: Some(key),
                org: None,
            },
        )
    }
}

/// What a request was about, to turn a bare server message into a precise error.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub region: &'a str,
    /// The cloudlet the request named, if exactly one.
    pub key: Option<&'a CloudletKey>,
    /// The organization the request is about (the key's, or the `--org` filter).
    pub org: Option<&'a str>,
}

/// Maps an error status (or a stream `result` line's code) and the controller's message to an
/// error kind.
pub(crate) fn classify(status: u16, message: &str, ctx: &Context<'_>) -> ClientError {
    let msg = message.trim().to_string();
    let lower = msg.to_ascii_lowercase();
    if status == 403 || lower == "forbidden" {
        return ClientError::Forbidden {
            org: ctx
                .org
                .or(ctx.key.map(|k| k.organization.as_str()))
                .unwrap_or("(unknown)")
                .to_string(),
        };
    }
    if lower.contains("timed out waiting for") {
        return ClientError::ControllerTimeout(msg);
    }
    if lower.contains("already in progress") {
        return ClientError::InProgress(msg);
    }
    if lower.contains("must be in normaloperation") {
        return ClientError::WrongState(msg);
    }
    if lower.contains("not found")
        && let Some(key) = ctx.key
        && (lower.contains("cloudlet key") || lower.contains("cloudlet"))
    {
        return ClientError::NotFound {
            region: ctx.region.to_string(),
            key: key.clone(),
        };
    }
    match status {
        200 => ClientError::HandshakeFailed(msg),
        400 => ClientError::InvalidRequest(msg),
        _ => ClientError::Http {
            status,
            message: msg,
        },
    }
}

/// The first ~120 bytes of a body, on one line, for an error message.
pub(crate) fn snippet(body: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    let mut last_space = true;
    for c in text.chars() {
        let c = if c.is_whitespace() || c.is_control() {
            ' '
        } else {
            c
        };
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        if out.len() + c.len_utf8() > MAX {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    let trimmed = out.trim_end().to_string();
    if trimmed.is_empty() {
        "(empty body)".to_string()
    } else {
        trimmed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx<'a>(key: &'a CloudletKey) -> Context<'a> {
        Context {
            region: "EU",
            key: Some(key),
            org: Some(&key.organization),
        }
    }

    #[test]
    fn statuses_and_messages_map_to_kinds() {
        let key = CloudletKey::new("TDG", "berlin-1");
        let c = ctx(&key);
        let cases: [(u16, &str, &str); 10] = [
            (403, "Forbidden", "forbidden"),
            (
                400,
                r#"Cloudlet key {"organization":"TDG","name":"berlin-1"} not found"#,
                "not_found",
            ),
            (
                400,
                "Cloudlet must be in NormalOperation before starting maintenance",
                "wrong_state",
            ),
            (
                400,
                r#"An action is already in progress for the object {"organization":"TDG"}"#,
                "in_progress",
            ),
            (
                400,
                "Timed out waiting for CloudletInfo maintenance state",
                "controller_timeout",
            ),
            (
                200,
                "Timed out waiting for AutoProvInfo maintenance state",
                "controller_timeout",
            ),
            (
                200,
                "AutoProv failover encountered some errors, aborting maintenance",
                "handshake_failed",
            ),
            (
                400,
                "Invalid maintenance state, only normal operation and maintenance start states are allowed",
                "invalid_request",
            ),
            (500, "database unavailable", "http"),
            (404, "no such API", "http"),
        ];
        for (status, msg, kind) in cases {
            let e = classify(status, msg, &c);
            assert_eq!(e.kind(), kind, "{status} {msg}: {e}");
        }
    }

    #[test]
    fn forbidden_names_the_roles() {
        let key = CloudletKey::new("TDG", "berlin-1");
        let e = classify(403, "Forbidden", &ctx(&key)).to_string();
        for needle in [
            "OperatorManager",
            "OperatorContributor",
            "organization TDG",
            "AdminManager",
            "AdminContributor",
        ] {
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn not_found_without_a_key_is_a_plain_invalid_request() {
        let c = Context {
            region: "EU",
            key: None,
            org: Some("TDG"),
        };
        assert_eq!(
            classify(400, "Cloudlet key {} not found", &c).kind(),
            "invalid_request"
        );
    }

    #[test]
    fn retryability() {
        assert!(ClientError::Transport("reset".into()).is_retryable());
        assert!(ClientError::StreamDropped("x".into()).is_retryable());
        assert!(ClientError::InProgress("x".into()).is_retryable());
        assert!(
            ClientError::Http {
                status: 503,
                message: "x".into()
            }
            .is_retryable()
        );
        assert!(
            ClientError::Protocol {
                status: 502,
                snippet: "x".into()
            }
            .is_retryable()
        );
        assert!(
            ClientError::TimedOut {
                what: "x".into(),
                after: Duration::from_secs(1)
            }
            .is_retryable()
        );
        assert!(!ClientError::Forbidden { org: "o".into() }.is_retryable());
        assert!(
            !ClientError::BadCredentials {
                user: "u".into(),
                message: "m".into()
            }
            .is_retryable()
        );
        assert!(
            !ClientError::NotFound {
                region: "EU".into(),
                key: CloudletKey::new("o", "n")
            }
            .is_retryable()
        );
        assert!(
            !ClientError::Http {
                status: 404,
                message: "x".into()
            }
            .is_retryable()
        );
    }

    #[test]
    fn messages_are_actionable() {
        let e = ClientError::StreamDropped("connection reset".into()).to_string();
        assert!(e.contains("read back with ShowCloudlet"), "{e}");
        let e = ClientError::TimedOut {
            what: "UpdateCloudlet TDG/b1".into(),
            after: Duration::from_secs(720),
        }
        .to_string();
        assert!(e.contains("12m"), "{e}");
        let e = ClientError::NotFound {
            region: "EU".into(),
            key: CloudletKey::new("TDG", "b1"),
        }
        .to_string();
        assert!(e.contains("TDG/b1 not found in region EU"), "{e}");
        assert!(e.contains("--org TDG"), "{e}");
    }

    #[test]
    fn snippets_are_short_single_lines() {
        let html = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\n<body>\n<center><h1>502 Bad Gateway</h1></center>\n<hr><center>nginx/1.25.3</center>\n</body>\n</html>\n<!-- padding padding padding padding padding -->";
        let s = snippet(html);
        assert!(!s.contains('\n') && !s.contains('\r'), "{s}");
        assert!(s.starts_with("<html> <head><title>502 Bad Gateway"), "{s}");
        assert!(s.len() <= 124, "{} {s}", s.len());
        assert!(s.ends_with('…'));
        assert_eq!(snippet(b""), "(empty body)");
        assert_eq!(snippet("é".repeat(100).as_bytes()).chars().count(), 61);
    }
}
