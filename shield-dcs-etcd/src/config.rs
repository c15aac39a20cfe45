//! The backend's settings: endpoints, namespace and scope, timings, auth, TLS, keep-alive mode.

use shield_core::MemberName;

/// How leases are kept alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepAliveMode {
    /// A fresh keep-alive stream per renewal, one request and one answer. Its answer's header is
    /// not seen (etcd-client reads it), so a leader renewal also checks the leader key with a
    /// transaction: two requests per renewal.
    Unary,
    /// One keep-alive stream kept open and reused (re-opened after an error); every round is
    /// bounded by `retry_timeout`, so a half-dead stream fails the renewal, never hangs it.
    #[default]
    Stream,
}

/// TLS settings (Patroni's `cacert`, `cert`, `key`), as PEM file contents.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// The CA certificate to verify the servers with.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate and key, for client authentication.
    pub client_cert_key_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to expect in the server certificate (defaults to the endpoint's host).
    pub domain: Option<String>,
}

/// How to reach etcd and which cluster to serve.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Endpoints, e.g. `http://127.0.0.1:2379` (https with TLS).
    pub endpoints: Vec<String>,
    /// Patroni's `namespace` (default `/service`).
    pub namespace: String,
    /// Patroni's `scope`: the cluster name.
    pub scope: String,
    /// This node's member name.
    pub member: MemberName,
    /// Lease TTL (rounded up to whole seconds, etcd's unit).
    pub ttl_ms: u64,
    /// Bound on every call.
    pub retry_timeout_ms: u64,
    /// Username and password, if etcd auth is on.
    pub auth: Option<(String, String)>,
    /// TLS, if the endpoints are https.
    pub tls: Option<EtcdTls>,
    /// How leases are kept alive.
    pub keepalive: KeepAliveMode,
    /// Keep the cluster view from one long-lived watch instead of reading the prefix on every
    /// `read()` (the daemon turns it on; one-shot users such as shieldctl leave it off).
    pub cache_view: bool,
    /// For tests only: how long the watched view waits before applying each answer of its watch,
    /// to make it lag behind the store as a slow network would.
    #[doc(hidden)]
    pub view_lag_for_tests: std::time::Duration,
}

impl EtcdConfig {
    /// A config with Shield's defaults for everything but the endpoints and names.
    pub fn new(endpoints: Vec<String>, scope: &str, member: MemberName) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            namespace: "/service".to_owned(),
            scope: scope.to_owned(),
            member,
            ttl_ms: 4_000,
            retry_timeout_ms: 1_500,
            auth: None,
            tls: None,
            keepalive: KeepAliveMode::Stream,
            cache_view: false,
            view_lag_for_tests: std::time::Duration::ZERO,
        }
    }

    /// `/<namespace>/<scope>/`, with repeated slashes collapsed (as Patroni does).
    pub fn prefix(&self) -> String {
        let raw = format!("/{}/{}/", self.namespace, self.scope);
        let mut out = String::with_capacity(raw.len());
        for c in raw.chars() {
            if !(c == '/' && out.ends_with('/')) {
                out.push(c);
            }
        }
        out
    }
}
