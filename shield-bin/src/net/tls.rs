//! TLS for the REST API (server side) and for Shield's own REST calls (peer probes, shieldctl),
//! with rustls: Patroni's `restapi.certfile`/`keyfile`/`cafile`/`verify_client` and
//! `ctl.cacert`/`certfile`/`keyfile`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `restapi.verify_client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyClient {
    /// No client certificates asked for.
    None,
    /// A presented certificate must be valid; unsafe requests (POST, PUT, PATCH, DELETE) need one.
    Optional,
    /// Every connection presents a valid certificate.
    Required,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{}: no usable private key: {e}", path.display()))
}

fn roots(ca: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(roots)
}

/// The REST API's server config.
pub fn server_config(
    cert: &Path,
    key_file: &Path,
    ca: Option<&Path>,
    verify: VerifyClient,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match (verify, ca) {
        (VerifyClient::None, _) => builder.with_no_client_auth(),
        (_, None) => return Err("`restapi.verify_client` needs `restapi.cafile`".to_owned()),
        (v, Some(ca)) => {
            let b = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
            let b = if v == VerifyClient::Optional { b.allow_unauthenticated() } else { b };
            builder.with_client_cert_verifier(b.build().map_err(|e| format!("client verification: {e}"))?)
        }
    };
    let cfg = builder.with_single_cert(certs(cert)?, key(key_file)?).map_err(|e| format!("{}: {e}", cert.display()))?;
    Ok(Arc::new(cfg))
}

/// A client config trusting `ca`, presenting `identity` (certificate, key) if given.
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots(ca)?);
    let cfg = match identity {
        None => builder.with_no_client_auth(),
        Some((c, k)) => {
            builder.with_client_auth_cert(certs(c)?, key(k)?).map_err(|e| format!("{}: {e}", c.display()))?
        }
    };
    Ok(Arc::new(cfg))
}

/// A client config that accepts any server certificate (shieldctl's `-k`, as patronictl's: for
/// self-signed REST certificates). The handshake's signatures are still checked; only the
/// certificate's chain of trust and name are not.
pub fn insecure_client_config(identity: Option<(&Path, &Path)>) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())));
    let cfg = match identity {
        None => builder.with_no_client_auth(),
        Some((c, k)) => {
            builder.with_client_auth_cert(certs(c)?, key(k)?).map_err(|e| format!("{}: {e}", c.display()))?
        }
    };
    Ok(Arc::new(cfg))
}

/// rustls has no switch for "trust any certificate" (on purpose); this verifier is that switch.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

static CLIENT: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Sets the process's TLS client config for https REST calls (once, at start-up).
pub fn set_client(cfg: Arc<rustls::ClientConfig>) {
    let _ = CLIENT.set(cfg);
}

/// The TLS client config for https REST calls, if one was set.
pub fn client() -> Option<Arc<rustls::ClientConfig>> {
    CLIENT.get().cloned()
}
/// The REST API's TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTls {
    /// `certfile` (PEM chain).
    pub cert: std::path::PathBuf,
    /// `keyfile` (PEM; defaults to `certfile`, which may hold both, as in Patroni).
    pub key: std::path::PathBuf,
    /// `cafile`: clients' CA, and the CA Shield trusts when it calls other members.
    pub ca: Option<std::path::PathBuf>,
    /// `verify_client`.
    pub verify: VerifyClient,
}
