//! Client of the Master Controller REST API (see `shared/controller-protocol.md`).
//!
//! The daemon touches the controller through exactly two operations: read a cloudlet
//! (`ShowCloudlet`) and run one maintenance handshake (`UpdateCloudlet`). Both are here, behind
//! [`McClient`], together with the small trait [`Controller`] that the engine uses so that a
//! simulated controller can stand in for the real one.
//!
//! Things this module is careful about, and why:
//!
//! - **Secrets.** The password and the bearer token are kept in [`Secret`]s, sent only in the
//!   login body and the `Authorization` header (marked sensitive), and never logged, not even at
//!   `trace`: logs are shipped to places with weaker access control than the controller, and a
//!   token gives full access for 24 hours. Error messages are built from server messages and
//!   names only; reqwest errors are stripped of their URL and the configured base URL is refused
//!   if it carries credentials.
//! - **Tokens.** The client logs in lazily on first use and keeps the token in memory only.
//!   When the controller says the token is missing, invalid or expired (401, or a 400 saying
//!   `expired` / `No bearer token found`), it logs in once more and retries the request once;
//!   no request is ever sent a third time.
//! - **Timeouts.** One UpdateCloudlet runs the whole handshake (up to 2·T), and on the
//!   NormalOperation path not even the response headers arrive before the CRM answered (up to
//!   T). So the only deadline on it is `handshake_timeout`; see [`client`] for all three.
//! - **Explicit updates.** Every UpdateCloudlet names the state, even `NormalOperation`, and
//!   sends `"fields":["30"]`; a serializer dropping the zero value would turn "restore" into a
//!   silent no-op.
//! - **Outcome.** The stream's end is not the truth: callers read the state back with
//!   ShowCloudlet. A stream that breaks is reported as [`ClientError::StreamDropped`], because
//!   the controller keeps going on its own.

pub mod client;
pub mod error;
mod ndjson;
mod tls;
pub mod types;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use client::McClient;
pub use error::ClientError;
pub use types::{
    CloudletKey, CloudletStatus, MaintenanceState, MaintenanceTarget, ParseKeyError,
    ParseStateError,
};

use crate::config::{ControllerConfig, PASSWORD_CREDENTIAL, Secret};

/// What the engine needs from a controller: read one cloudlet, and run one handshake.
///
/// The methods return `impl Future + Send` rather than using `async fn` so that callers may
/// spawn the futures on a multi-threaded runtime (a plain `async fn` in a trait makes no `Send`
/// promise). The price is that the trait is not object-safe: the engine is generic over
/// `C: Controller` (use `Arc<C>` to share one, it implements the trait too). That is the right
/// trade here: there are exactly two implementations (the HTTP client and a simulated one), the
/// choice is made once at start-up, and static dispatch keeps the test double free of boxing.
/// Implementations may write `async fn` in their `impl` block.
pub trait Controller: Send + Sync {
    /// Reads one cloudlet; [`ClientError::NotFound`] when it does not exist.
    fn show_cloudlet(
        &self,
        region: &str,
        key: &CloudletKey,
    ) -> impl Future<Output = Result<CloudletStatus, ClientError>> + Send;

    /// Runs one UpdateCloudlet handshake towards `target`, calling `progress` for each progress
    /// message as it arrives. `Ok` only means the stream ended without an error: read back.
    fn set_maintenance(
        &self,
        region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<(), ClientError>> + Send;
}

impl Controller for McClient {
    async fn show_cloudlet(
        &self,
        region: &str,
        key: &CloudletKey,
    ) -> Result<CloudletStatus, ClientError> {
        McClient::show_cloudlet(self, region, key).await
    }

    async fn set_maintenance(
        &self,
        region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), ClientError> {
        McClient::set_maintenance(self, region, key, target, progress).await
    }
}

impl<C: Controller> Controller for Arc<C> {
    fn show_cloudlet(
        &self,
        region: &str,
        key: &CloudletKey,
    ) -> impl Future<Output = Result<CloudletStatus, ClientError>> + Send {
        C::show_cloudlet(self, region, key)
    }

    fn set_maintenance(
        &self,
        region: &str,
        key: &CloudletKey,
        target: MaintenanceTarget,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> impl Future<Output = Result<(), ClientError>> + Send {
        C::set_maintenance(self, region, key, target, progress)
    }
}

/// Installs rustls' ring provider as the process default (idempotent). reqwest is built without
/// a default TLS provider; plain `reqwest::Client`s (outside [`McClient`], which brings its own
/// configuration) need one even for plain HTTP.
pub fn install_default_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads the controller password: the systemd credential `$CREDENTIALS_DIRECTORY/mc-password`
/// (`LoadCredential=mc-password:…`) first, else `[controller] password_file`. One trailing
/// newline (`\n` or `\r\n`) is removed.
pub fn load_password(cfg: &ControllerConfig) -> Result<Secret, ClientError> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    load_password_from(cfg, dir.as_deref())
}

/// [`load_password`] with the credentials directory passed in (for tests).
pub fn load_password_from(
    cfg: &ControllerConfig,
    credentials_dir: Option<&Path>,
) -> Result<Secret, ClientError> {
    if let Some(dir) = credentials_dir {
        let path = dir.join(PASSWORD_CREDENTIAL);
        match std::fs::read(&path) {
            Ok(bytes) => return password_from_bytes(&path, bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ClientError::Config(format!(
                    "cannot read the controller password from {}: {e}",
                    path.display()
                )));
            }
        }
    }
    match &cfg.password_file {
        Some(path) => match std::fs::read(path) {
            Ok(bytes) => password_from_bytes(path, bytes),
            Err(e) => Err(ClientError::Config(format!(
                "cannot read the controller password from [controller] password_file {}: {e}",
                path.display()
            ))),
        },
        None => Err(ClientError::Config(format!(
            "no controller password: the systemd credential {} ({}) is not there and [controller] password_file is not set; \
             add LoadCredential={PASSWORD_CREDENTIAL}:/PATH to the unit, or set password_file in the config",
            PASSWORD_CREDENTIAL,
            match credentials_dir {
                Some(d) => d.join(PASSWORD_CREDENTIAL).display().to_string(),
                None => format!("$CREDENTIALS_DIRECTORY/{PASSWORD_CREDENTIAL}, variable not set"),
            }
        ))),
    }
}

fn password_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Secret, ClientError> {
    let mut text = String::from_utf8(bytes).map_err(|_| {
        ClientError::Config(format!(
            "the controller password in {} is not valid UTF-8",
            path.display()
        ))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(ClientError::Config(format!(
            "the controller password file {} is empty",
            path.display()
        )));
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn credential_wins_over_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("mc-password"), "from-credential\n").unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\r\n").unwrap();
        let mut cfg = Config::default().controller;
        cfg.password_file = Some(file.clone());

        let p = load_password_from(&cfg, Some(&creds)).unwrap();
        assert_eq!(p.expose(), "from-credential");
        // No credential file in the directory: fall back to password_file.
        std::fs::remove_file(creds.join("mc-password")).unwrap();
        let p = load_password_from(&cfg, Some(&creds)).unwrap();
        assert_eq!(p.expose(), "from-file");
        let p = load_password_from(&cfg, None).unwrap();
        assert_eq!(p.expose(), "from-file");
    }

    #[test]
    fn only_one_trailing_newline_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, " sp ace \n\n").unwrap();
        let mut cfg = Config::default().controller;
        cfg.password_file = Some(file.clone());
        assert_eq!(
            load_password_from(&cfg, None).unwrap().expose(),
            " sp ace \n"
        );
        std::fs::write(&file, "\n").unwrap();
        let e = load_password_from(&cfg, None).unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }

    #[test]
    fn missing_password_names_both_places() {
        let cfg = Config::default().controller;
        let e = load_password_from(&cfg, None).unwrap_err().to_string();
        assert!(e.contains("mc-password"), "{e}");
        assert!(e.contains("password_file"), "{e}");
        assert!(e.contains("CREDENTIALS_DIRECTORY"), "{e}");
        let mut cfg = cfg;
        cfg.password_file = Some(PathBuf::from("/nonexistent/pw"));
        let e = load_password_from(&cfg, None).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/pw"), "{e}");
    }

    /// The trait's futures are `Send`, so the engine can spawn them.
    #[test]
    fn controller_futures_are_send() {
        fn assert_send<T: Send>(_: T) {}
        fn check<C: Controller>(c: &C) {
            let key = CloudletKey::new("o", "n");
            assert_send(c.show_cloudlet("EU", &key));
            let mut progress = |_: &str| {};
            assert_send(c.set_maintenance("EU", &key, MaintenanceTarget::Normal, &mut progress));
        }
        let mut cfg = Config::default().controller;
        cfg.url = "http://127.0.0.1:9".into();
        if let Ok(c) = McClient::new(&cfg, Secret::new("x")) {
            check(&c);
            check(&Arc::new(c));
        }
    }
}
