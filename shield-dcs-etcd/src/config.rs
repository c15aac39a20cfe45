//! The backend's settings: endpoints, namespace and scope, timings, auth, TLS, keep-alive mode.

use shield_core::MemberName;

/// How leases are kept alive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeepAliveMode {
    /// A fresh keep-alive stream per renewal, one request and one answer.
    #[default]
    Unary,
    /// One keep-alive stream kept open and reused (re-opened after an error).
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
            keepalive: KeepAliveMode::Unary,
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
