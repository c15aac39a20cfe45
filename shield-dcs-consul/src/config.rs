//! The backend's settings: agent URL, namespace and scope, timings, token, datacenter, read
//! consistency, session checks, and the TLS client.

use crate::http;
use shield_core::ports::{ErrorKind, PortError};
use shield_core::MemberName;

/// Read consistency (Patroni's `consul.consistency`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Consul's default mode.
    #[default]
    Default,
    /// Linearizable reads (one more round trip among the servers).
    Consistent,
    /// Any server may answer; may be stale.
    Stale,
}

/// How to reach Consul and which cluster to serve.
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// The agent's URL, e.g. `http://127.0.0.1:8500`.
    pub url: String,
    /// Patroni's `namespace` (default `/service`; the leading slash is dropped).
    pub namespace: String,
    /// The cluster name.
    pub scope: String,
    /// This node's member name.
    pub member: MemberName,
    /// Shield's `ttl`.
    pub ttl_ms: u64,
    /// Bound on every call.
    pub retry_timeout_ms: u64,
    /// ACL token.
    pub token: Option<String>,
    /// Datacenter (empty: the agent's).
    pub dc: String,
    /// Read consistency.
    pub consistency: Consistency,
    /// Health checks attached to the session (default none: TTL only).
    pub checks: Vec<String>,
    /// An HTTP client to use instead of the default (for TLS with a private CA and client
    /// certificates; see [`tls_client`]).
    pub client: Option<http::HttpsClient>,
    /// Keep a cached view of the cluster prefix, fed by one long-running blocking query, and
    /// serve `read`, `watch` and the leader check of `renew_leader` from it (see the crate doc).
    /// Off by default, so one-shot users (shieldctl) read directly; the daemon turns it on.
    pub cache_view: bool,
}

impl ConsulConfig {
    /// A config with Shield's defaults for everything but the URL and names.
    pub fn new(url: &str, scope: &str, member: MemberName) -> ConsulConfig {
        ConsulConfig {
            url: url.trim_end_matches('/').to_owned(),
            namespace: "/service".to_owned(),
            scope: scope.to_owned(),
            member,
            ttl_ms: 4_000,
            retry_timeout_ms: 1_500,
            token: None,
            dc: String::new(),
            consistency: Consistency::Default,
            checks: Vec::new(),
            client: None,
            cache_view: false,
        }
    }

    /// `<namespace>/<scope>/`: Patroni's prefix without the leading slash.
    pub fn prefix(&self) -> String {
        let parts: Vec<&str> =
            self.namespace.split('/').chain(self.scope.split('/')).filter(|p| !p.is_empty()).collect();
        format!("{}/", parts.join("/"))
    }
}

/// Builds an HTTPS client that trusts `ca_pem` and, if given, authenticates with a client
/// certificate (Patroni's `cacert`, `cert`, `key`).
pub fn tls_client(ca_pem: &[u8], client_cert_key_pem: Option<(&[u8], &[u8])>) -> Result<http::HttpsClient, PortError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: String| PortError::new(ErrorKind::Rejected, format!("consul TLS {what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_slice_iter(ca_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("cacert", e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("cacert", "no certificate in the file".into()));
    }
    for c in certs {
        roots.add(c).map_err(|e| bad("cacert", e.to_string()))?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("config", e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match client_cert_key_pem {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("cert", e.to_string()))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("key", e.to_string()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad("cert", e.to_string()))?
        }
    };
    let conn = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(cfg).https_or_http().enable_http1().build();
    Ok(hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn))
}
