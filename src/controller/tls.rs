//! The TLS setup of the controller client, built by hand so that it is explicit and testable.
//!
//! - Crypto: rustls with the *ring* provider, passed to the builder directly: nothing depends
//!   on (or races for) a process-wide default provider.
//! - Trust: the platform's root store, read by `rustls-native-certs` (the OS bundle under
//!   `/etc/ssl`, honouring `SSL_CERT_FILE`/`SSL_CERT_DIR`), plus the PEM certificates of
//!   `[controller] ca_file`. We chose the platform store over `webpki-roots` because operators
//!   install their internal CAs there and update it with the OS, while a compiled-in Mozilla
//!   bundle would need a rebuild and ignore those CAs; `rustls-native-certs` was already in the
//!   dependency tree (through reqwest's platform verifier), so it costs no extra build.
//! - `insecure_skip_verify`: a verifier that accepts any certificate (signatures are still
//!   checked so the handshake is well-formed). It is logged at `warn` every time a client is
//!   built, because it turns TLS into mere encryption against a passive observer.

use std::path::Path;
use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::error::ClientError;
use crate::config::ControllerConfig;

/// Builds the rustls client config for `cfg`.
pub(crate) fn client_config(cfg: &ControllerConfig) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config(format!("cannot set up TLS: {e}")))?;

    let mut config = if cfg.insecure_skip_verify {
        tracing::warn!(
            url = %cfg.url,
            "TLS CERTIFICATE VERIFICATION IS DISABLED for the controller (insecure_skip_verify = true): \
             anyone on the network path can impersonate the controller and read the password; \
             use ca_file instead"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else {
        let roots = root_store(cfg.ca_file.as_deref(), cfg.url.starts_with("https://"))?;
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The platform roots plus the certificates of `ca_file`.
fn root_store(ca_file: Option<&Path>, https: bool) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "skipping part of the platform certificate store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "platform root certificates loaded");

    if let Some(path) = ca_file {
        let extra = load_pem_certs(path)?;
        let n = extra.len();
        for cert in extra {
            roots.add(cert).map_err(|e| {
                ClientError::Config(format!(
                    "ca_file {}: a certificate cannot be used as a trust anchor: {e}",
                    path.display()
                ))
            })?;
        }
        tracing::debug!(path = %path.display(), certificates = n, "extra CA certificates loaded");
    }
    if roots.is_empty() && https {
        tracing::warn!(
            "no trusted root certificates: the platform store is empty and no ca_file is set; \
             TLS connections to the controller will fail"
        );
    }
    Ok(roots)
}

/// Reads every certificate of a PEM file; an unreadable file or one without certificates is
/// a configuration error.
pub(crate) fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ClientError::Config(format!("cannot read ca_file {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ClientError::Config(format!("ca_file {} is not valid PEM: {e}", path.display()))
        })?;
    if certs.is_empty() {
        return Err(ClientError::Config(format!(
            "ca_file {} contains no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certs)
}

/// Accepts any server certificate. Only used with `insecure_skip_verify = true`.
#[derive(Debug)]
struct NoVerification {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    // A self-signed certificate (CN=test), for parsing only.
    const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBdzCCAR2gAwIBAgIUQ2bYy1o0mKcJ8Zt8o3m8x0h3p1UwCgYIKoZIzj0EAwIw
DzENMAsGA1UEAwwEdGVzdDAeFw0yNDAxMDEwMDAwMDBaFw0zNDAxMDEwMDAwMDBa
MA8xDTALBgNVBAMMBHRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQ7t1W2
-----END CERTIFICATE-----
";

    #[test]
    fn ca_file_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load_pem_certs(&missing).unwrap_err().to_string();
        assert!(e.starts_with("cannot read ca_file"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = load_pem_certs(&empty).unwrap_err().to_string();
        assert!(e.contains("contains no PEM certificate"), "{e}");
        let one = dir.path().join("one.pem");
        std::fs::write(&one, PEM).unwrap();
        // Parsing PEM only decodes base64; the DER content is checked when used as an anchor.
        assert_eq!(load_pem_certs(&one).unwrap().len(), 1);
    }

    #[test]
    fn configs_build_with_and_without_verification() {
        let mut cfg = Config::default().controller;
        cfg.url = "https://console.example.net".into();
        let c = client_config(&cfg).unwrap();
        assert_eq!(c.alpn_protocols.len(), 2);
        cfg.insecure_skip_verify = true;
        assert!(client_config(&cfg).is_ok());
    }
}
