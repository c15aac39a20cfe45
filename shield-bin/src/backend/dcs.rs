//! DCS client construction, in one place: the daemon (its loop and its REST API each get one),
//! shieldctl and `shield check` build their clients here from the `etcd3`/`consul` settings.

use std::path::PathBuf;
use std::sync::Arc;

use shield_core::ports::Dcs;
use shield_db_postgres::Credentials;
use shield_dcs_consul::{Consistency, ConsulConfig, ConsulDcs};
use shield_dcs_etcd::{EtcdConfig, EtcdDcs, EtcdTls};

/// Which DCS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DcsSettings {
    /// etcd v3: endpoint URLs, auth, TLS file paths.
    Etcd3 {
        /// `http(s)://host:port` each.
        endpoints: Vec<String>,
        /// Username and password.
        auth: Option<Credentials>,
        /// `cacert`, `cert`, `key`.
        tls: Option<(Option<PathBuf>, Option<PathBuf>, Option<PathBuf>)>,
    },
    /// Consul: URL, token, datacenter, TLS files, read consistency, session checks.
    Consul {
        /// The agent URL.
        url: String,
        /// ACL token.
        token: Option<String>,
        /// Datacenter.
        dc: String,
        /// `cacert`, `cert`, `key`.
        tls: Option<(PathBuf, Option<PathBuf>, Option<PathBuf>)>,
        /// `consistency`: default, consistent or stale.
        consistency: String,
        /// `checks`: session health checks.
        checks: Vec<String>,
        /// `register_service: true`: the `service_tags` and `service_check_interval` (s).
        service: Option<(Vec<String>, u64)>,
    },
}

/// Reads a TLS file named in the config; the error names the file.
fn read_pem(p: &std::path::PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// A DCS client for cluster `scope` under `namespace`, acting as `member`; `watched`: it keeps
/// the cluster view from a long-lived watch (the daemon loop's) instead of reading every time.
pub fn dcs_client(
    dcs: &DcsSettings,
    namespace: &str,
    scope: &str,
    member: shield_core::MemberName,
    t: &shield_core::Timing,
    watched: bool,
) -> Result<Arc<dyn Dcs>, String> {
    match dcs {
        DcsSettings::Etcd3 { endpoints, auth, tls } => {
            let mut e = EtcdConfig::new(endpoints.clone(), scope, member);
            e.namespace = namespace.to_owned();
            e.ttl_ms = t.ttl_ms;
            e.retry_timeout_ms = t.retry_timeout_ms;
            e.cache_view = watched;
            e.auth = auth.as_ref().map(|a| (a.username.clone(), a.password.clone()));
            if let Some((ca, cert, key)) = tls {
                let ca_pem = ca.as_ref().map(read_pem).transpose()?;
                let client = match (cert, key) {
                    (Some(c), Some(k)) => Some((read_pem(c)?, read_pem(k)?)),
                    (None, None) => None,
                    _ => return Err("etcd3: `cert` and `key` must be given together".into()),
                };
                e.tls = Some(EtcdTls { ca_pem, client_cert_key_pem: client, domain: None });
            }
            Ok(Arc::new(EtcdDcs::new(e)))
        }
        DcsSettings::Consul { .. } => Ok(Arc::new(consul_client(dcs, namespace, scope, member, t, watched)?)),
    }
}

/// The Consul backend for `DcsSettings::Consul` (also used on its own to register the service);
/// `watched` as for [`dcs_client`].
pub fn consul_client(
    dcs: &DcsSettings,
    namespace: &str,
    scope: &str,
    member: shield_core::MemberName,
    t: &shield_core::Timing,
    watched: bool,
) -> Result<ConsulDcs, String> {
    let DcsSettings::Consul { url, token, dc, tls, consistency, checks, .. } = dcs else {
        return Err("not a Consul DCS".to_owned());
    };
    let mut c = ConsulConfig::new(url, scope, member);
    c.namespace = namespace.to_owned();
    c.ttl_ms = t.ttl_ms;
    c.retry_timeout_ms = t.retry_timeout_ms;
    c.cache_view = watched;
    c.token = token.clone();
    c.dc = dc.clone();
    c.checks = checks.clone();
    c.consistency = match consistency.as_str() {
        "consistent" => Consistency::Consistent,
        "stale" => Consistency::Stale,
        _ => Consistency::Default,
    };
    if let Some((ca, cert, key)) = tls {
        let ca = read_pem(ca)?;
        let pair = match (cert, key) {
            (Some(c), Some(k)) => Some((read_pem(c)?, read_pem(k)?)),
            _ => None,
        };
        let client = shield_dcs_consul::tls_client(&ca, pair.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())))
            .map_err(|e| format!("consul: {e}"))?;
        c.client = Some(client);
    }
    Ok(ConsulDcs::new(c))
}
