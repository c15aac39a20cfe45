//! # shield-dcs-consul
//!
//! Shield's DCS port ([`shield_core::ports::Dcs`]) over Consul's HTTP API, with the key layout and
//! value formats of Patroni's Consul backend: keys under `<namespace>/<scope>/` (no leading
//! slash), one session per node, the leader lock and member keys held with `acquire`.
//!
//! KV reads, writes and deletes go through rs-consul (recurse, blocking index and wait,
//! consistency modes; put with cas, acquire and release; delete with cas). Sessions, and the two
//! reads rs-consul cannot do safely, go through a small hand-written client on the same HTTP
//! stack ([`http`]).
//!
//! ## Sessions, and why fencing stays safe
//!
//! Each node creates one session: `Behavior=delete` (its keys vanish with it), `TTL = ttl/2`
//! (Consul invalidates a session between TTL and 2×TTL after its last renewal), no health checks
//! by default (see below), and `LockDelay = ttl/2`. The lock delay is what makes the short TTL
//! safe: after an invalidation Consul refuses to hand the leader key to anyone for another
//! `ttl/2`, so no other node can take the lock earlier than `ttl` after the old leader's last
//! renewal, which is what Shield's fencing deadline (`ttl` minus drift and margin) counts on.
//! A TTL below the agent's `session_ttl_min` (10 s by default) is refused by Consul; it is then
//! raised to that minimum with a warning, which only makes failover slower, never unsafe.
//!
//! Health checks: Patroni's default `checks: []` is kept. With `serfHealth` attached, a restart of
//! the local Consul agent invalidates the session at once and drops the leader key while the
//! primary still runs (Patroni #2070, #879); with the TTL alone, the session lives exactly as long
//! as the node renews it.

pub mod http;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use hyper::Method;
use rs_consul::types::DeleteKeyRequest;
use rs_consul::{Config, Consul, ConsulBuilder, ConsulError};
use shield_core::cluster::{ClusterView, HistoryLine, KvEntry, MemberData, Status};
use shield_core::ports::{encode, Dcs, DcsKey, ErrorKind, PortError, Watch};
use shield_core::{MemberName, Revision, SystemId};
use tokio::sync::Mutex;

use crate::http::{min_ttl_from_error, Raw, SessionSpec};

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

#[derive(Debug, Default)]
struct SessionState {
    id: Option<String>,
    /// The Shield ttl `id` was created for, in ms.
    created_for_ttl_ms: u64,
    /// The Shield ttl the last acquire or renewal asked for (`None`: the configured one).
    want_ttl_ms: Option<u64>,
    /// Sessions replaced by one for another ttl, destroyed once the leader key has moved off.
    retired: Vec<String>,
    /// The agent's minimum session TTL, once learned from a refusal.
    min_ttl_s: Option<u64>,
    member_written: Option<(String, String)>,
}

/// One node's handle on one cluster in Consul.
pub struct ConsulDcs {
    cfg: ConsulConfig,
    prefix: String,
    consul: Consul,
    raw: Raw,
    session: Mutex<SessionState>,
}

impl std::fmt::Debug for ConsulDcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulDcs").field("url", &self.cfg.url).field("prefix", &self.prefix).finish()
    }
}

/// Sorts an rs-consul error by cause.
fn consul_error(what: &str, e: ConsulError) -> PortError {
    let kind = match &e {
        ConsulError::UnexpectedResponseCode(code, _) => match code.as_u16() {
            401 | 403 | 400 | 405 | 413 => ErrorKind::Rejected,
            _ => ErrorKind::Unreachable,
        },
        ConsulError::InvalidUtf8(_) | ConsulError::InvalidBase64(_) | ConsulError::ResponseDeserializationFailed(_) => {
            ErrorKind::BadData
        }
        _ => ErrorKind::Unreachable,
    };
    PortError::new(kind, format!("consul {what}: {e}"))
}

impl ConsulDcs {
    /// A handle. It connects lazily: building one never touches the network.
    pub fn new(cfg: ConsulConfig) -> ConsulDcs {
        let timeout = Duration::from_millis(cfg.retry_timeout_ms);
        let rc = Config { address: cfg.url.clone(), token: cfg.token.clone(), ..Config::default() };
        let client = cfg.client.clone().unwrap_or_else(|| {
            let conn =
                hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(conn)
        });
        let consul = ConsulBuilder::new(rc).with_https_client(client.clone()).build();
        let raw = Raw { client, base: cfg.url.clone(), token: cfg.token.clone(), timeout };
        ConsulDcs { prefix: cfg.prefix(), cfg, consul, raw, session: Mutex::new(SessionState::default()) }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.retry_timeout_ms)
    }

    async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, ConsulError>>,
    ) -> Result<T, PortError> {
        match tokio::time::timeout(self.timeout(), f).await {
            Ok(r) => r.map_err(|e| consul_error(what, e)),
            Err(_) => {
                Err(PortError::new(ErrorKind::Unreachable, format!("consul {what}: no answer within retry_timeout")))
            }
        }
    }

    /// The session for Shield's `ttl_ms`: TTL `ttl/2` (Consul invalidates between 1x and 2x of
    /// it) and a lock-delay of `ttl/2`, so no other node can take the lock before `ttl` has passed.
    fn session_spec(&self, ttl_ms: u64, ttl_s: u64) -> SessionSpec {
        SessionSpec {
            name: format!("{}-{}", self.cfg.scope, self.cfg.member),
            ttl_s,
            lock_delay_ms: (ttl_ms / 2).clamp(1, 60_000),
            checks: self.cfg.checks.clone(),
        }
    }

    /// The session TTL for Shield's `ttl_ms`, in seconds, before any raise to the agent's minimum.
    fn session_ttl_for(ttl_ms: u64) -> u64 {
        (ttl_ms / 2).div_ceil(1000).max(1)
    }

    /// Our session, created if we have none, or if ours was created for another ttl than the
    /// one last asked for (the old one is retired: destroyed once the leader key has moved). A
    /// TTL the agent refuses as too short is raised to its minimum, with a warning.
    async fn ensure_session(&self, st: &mut SessionState) -> Result<String, PortError> {
        let ttl_ms = st.want_ttl_ms.unwrap_or(self.cfg.ttl_ms);
        if let Some(id) = &st.id {
            if st.created_for_ttl_ms == ttl_ms {
                return Ok(id.clone());
            }
        }
        let wanted_s = Self::session_ttl_for(ttl_ms);
        let ttl_s = st.min_ttl_s.map_or(wanted_s, |m| m.max(wanted_s));
        let id = match self.raw.session_create(&self.session_spec(ttl_ms, ttl_s), &self.cfg.dc).await {
            Ok(id) => id,
            Err(e) => match min_ttl_from_error(&e) {
                Some(min) if min > ttl_s => {
                    tracing::warn!(
                        requested_s = ttl_s,
                        raised_to_s = min,
                        "consul session TTL below the agent's session_ttl_min; raised (failover will be slower)"
                    );
                    st.min_ttl_s = Some(min);
                    self.raw.session_create(&self.session_spec(ttl_ms, min), &self.cfg.dc).await?
                }
                _ => return Err(e),
            },
        };
        if let Some(old) = st.id.replace(id.clone()) {
            st.retired.push(old);
        }
        st.created_for_ttl_ms = ttl_ms;
        st.member_written = None;
        Ok(id)
    }

    /// Destroys the retired sessions (best effort: each expires on its own anyway). Keys they
    /// still hold go with them (`Behavior=delete`): the member key is written again next cycle.
    async fn destroy_retired(&self, st: &mut SessionState) {
        for id in std::mem::take(&mut st.retired) {
            if let Err(e) = self.raw.session_destroy(&id, &self.cfg.dc).await {
                tracing::debug!(error = %e, session = %id, "consul: could not destroy a retired session");
            }
        }
    }

    /// Renews our session; a session Consul no longer knows is forgotten (LeaseLost), and the
    /// next call creates a new one.
    async fn renew_session(&self, st: &mut SessionState) -> Result<String, PortError> {
        let id = self.ensure_session(st).await?;
        match self.raw.session_renew(&id, &self.cfg.dc).await {
            Ok(()) => Ok(id),
            Err(e) => {
                if e.kind == ErrorKind::LeaseLost {
                    st.id = None;
                    st.member_written = None;
                }
                Err(e)
            }
        }
    }

    /// Our session for `ttl_ms`, renewed, or a new one if it has expired: what an acquire locks
    /// the leader key with.
    async fn session_to_acquire_with(&self, ttl_ms: u64) -> Result<String, PortError> {
        let mut st = self.session.lock().await;
        st.want_ttl_ms = Some(ttl_ms);
        match self.renew_session(&mut st).await {
            Ok(id) => Ok(id),
            Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_session(&mut st).await,
            Err(e) => Err(e),
        }
    }

    /// The session TTL in force (after any raise), in seconds.
    pub async fn session_ttl_s(&self) -> u64 {
        let st = self.session.lock().await;
        let wanted = Self::session_ttl_for(st.want_ttl_ms.unwrap_or(self.cfg.ttl_ms));
        st.min_ttl_s.map_or(wanted, |m| m.max(wanted))
    }

    /// Destroys our session (orderly shutdown: our keys go with it).
    pub async fn destroy_session(&self) -> Result<(), PortError> {
        let mut st = self.session.lock().await;
        if let Some(id) = st.id.take() {
            st.member_written = None;
            self.raw.session_destroy(&id, &self.cfg.dc).await?;
        }
        Ok(())
    }

    /// A put through the hand-written client, so that a ModifyIndex goes out exactly as it was
    /// read (rs-consul carries indexes as `i64`). `cas`: see [`http::cas_query`]; `acquire`: the
    /// session to lock the key with.
    async fn put(
        &self,
        what: &str,
        key: &str,
        value: &str,
        cas: Option<Option<u64>>,
        acquire: Option<&str>,
    ) -> Result<bool, PortError> {
        self.raw.kv_put(what, key, value.as_bytes(), cas, acquire, &self.cfg.dc).await
    }

    /// Deletes `key` (with `recurse`, the prefix); with `cas`, only if its ModifyIndex is still
    /// that one. Indexes are u64 end to end, and an index of 0, which Consul would take as
    /// "delete unconditionally", is refused.
    async fn delete(&self, what: &str, key: &str, cas: Option<u64>, recurse: bool) -> Result<bool, PortError> {
        if let Some(cas) = cas {
            // rs-consul always sends `recurse=<bool>`, and Consul takes the mere presence of
            // `recurse` as the flag: with `cas` it answers "Conflicting flags". So a
            // compare-and-delete goes through the hand-written client.
            return self.raw.kv_delete_cas(key, cas, &self.cfg.dc).await;
        }
        let req = DeleteKeyRequest { key, datacenter: &self.cfg.dc, recurse, ..Default::default() };
        self.bounded(what, self.consul.delete_key(req)).await
    }

    /// One key, with its value (raw bytes), ModifyIndex and session; None if absent.
    async fn get_one(&self, key: &str) -> Result<Option<(Vec<u8>, u64, Option<String>)>, PortError> {
        let query = format!("{}{}", self.consistency_query().trim_start_matches('&'), dc_query(&self.cfg.dc));
        let kv = self.raw.kv_get(key, &query).await?;
        Ok(kv.map(|kv| (decode_value(kv.value), kv.modify_index, kv.session)))
    }

    fn entries(&self, kvs: Vec<http::RawKv>) -> Vec<KvEntry> {
        kvs.into_iter()
            .filter_map(|kv| {
                let key = kv.key.strip_prefix(&self.prefix)?.to_owned();
                Some(KvEntry {
                    key,
                    value: decode_value(kv.value),
                    revision: Revision(kv.modify_index),
                    owner: kv.session,
                })
            })
            .collect()
    }

    /// After a read: when our member key is not in it (deleted by hand, say), forget that it was
    /// written, so the next touch writes it again instead of skipping an unchanged value. A live
    /// node's member key is back within a cycle, which the leader-key rule counts on.
    async fn forget_member_if_missing(&self, entries: &[KvEntry]) {
        let mine = format!("members/{}", self.cfg.member);
        if !entries.iter().any(|e| e.key == mine) {
            self.session.lock().await.member_written = None;
        }
    }

    fn consistency_query(&self) -> &'static str {
        match self.cfg.consistency {
            Consistency::Default => "",
            Consistency::Consistent => "&consistent",
            Consistency::Stale => "&stale",
        }
    }
}

fn compare_failed(what: &str) -> PortError {
    PortError::new(ErrorKind::CompareFailed, format!("consul {what}: the key changed since it was read"))
}

#[async_trait]
impl Dcs for ConsulDcs {
    fn member(&self) -> &MemberName {
        &self.cfg.member
    }

    async fn read(&self) -> Result<ClusterView, PortError> {
        // Through the hand-written client: rs-consul cannot read a prefix holding a value that is
        // not UTF-8, drops the index of a 404, and carries ModifyIndex as `i64`.
        let query = format!("{}{}", self.consistency_query(), dc_query(&self.cfg.dc));
        let (index, kvs) = self.raw.kv_recurse(&self.prefix, &query, None).await?;
        let entries = self.entries(kvs);
        self.forget_member_if_missing(&entries).await;
        Ok(ClusterView::from_entries(Revision(index), &entries))
    }

    async fn create_initialize(&self, system_id: Option<SystemId>) -> Result<bool, PortError> {
        let value = encode::initialize(system_id);
        self.put("create initialize", &self.key("initialize"), &value, Some(None), None).await
    }

    async fn write_initialize(&self, system_id: SystemId) -> Result<(), PortError> {
        let value = encode::initialize(Some(system_id));
        self.put("write initialize", &self.key("initialize"), &value, None, None).await.map(|_| ())
    }

    async fn acquire_leader(&self, ttl_ms: u64) -> Result<bool, PortError> {
        let id = self.session_to_acquire_with(ttl_ms).await?;
        self.put("acquire leader", &self.key("leader"), self.cfg.member.as_str(), None, Some(&id)).await
    }

    async fn take_leader(&self, ttl_ms: u64, expected: Revision) -> Result<bool, PortError> {
        let id = self.session_to_acquire_with(ttl_ms).await?;
        if expected.0 == 0 {
            return Err(PortError::new(ErrorKind::Rejected, "consul take leader: index 0 is not a ModifyIndex"));
        }
        // One transaction: only if the key is still at the index read, delete it (whatever session
        // may lock it) and lock it afresh under ours. Two nodes taking the same index: one wins.
        let key = self.key("leader");
        let value = base64::engine::general_purpose::STANDARD.encode(self.cfg.member.as_str());
        let ops = serde_json::json!([
            {"KV": {"Verb": "check-index", "Key": key, "Index": expected.0}},
            {"KV": {"Verb": "delete", "Key": key}},
            {"KV": {"Verb": "lock", "Key": key, "Value": value, "Session": id}},
        ]);
        self.raw.txn("take leader", &ops, &self.cfg.dc).await
    }

    async fn renew_leader(&self, ttl_ms: u64) -> Result<(), PortError> {
        let mut st = self.session.lock().await;
        st.want_ttl_ms = Some(ttl_ms);
        let id = self.renew_session(&mut st).await?;
        let key = self.key("leader");
        let me = self.cfg.member.as_str();
        match self.get_one(&key).await? {
            // Our session, and our name: a value written over the key without `acquire` keeps
            // the lock's session, so the session alone does not say the key is still ours.
            Some((v, _, Some(s))) if s == id && v == me.as_bytes() => {
                self.destroy_retired(&mut st).await;
                Ok(())
            }
            // Our name with no session, or under a session of ours retired for a changed ttl:
            // take it over under the current session (compare-and-delete, then acquire, as
            // Patroni does for a restarted daemon). A node racing into the gap probes us first
            // and finds a running primary; one that still wins makes our acquire fail.
            Some((v, index, owner)) if v == me.as_bytes() && owner.as_ref().is_none_or(|o| st.retired.contains(o)) => {
                let freed = self.delete("renew leader", &key, Some(index), false).await?;
                if freed && self.put("renew leader", &key, me, None, Some(&id)).await? {
                    self.destroy_retired(&mut st).await;
                    Ok(())
                } else {
                    Err(PortError::new(
                        ErrorKind::LeaseLost,
                        "consul renew leader: lost the race to re-take the leader key",
                    ))
                }
            }
            _ => Err(PortError::new(
                ErrorKind::LeaseLost,
                "consul renew leader: the leader key is gone or held by another session",
            )),
        }
    }

    async fn release_leader(&self) -> Result<(), PortError> {
        let key = self.key("leader");
        if let Some((v, index, _)) = self.get_one(&key).await? {
            if v == self.cfg.member.as_str().as_bytes() {
                self.delete("release leader", &key, Some(index), false).await?;
            }
        }
        Ok(())
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), PortError> {
        let value = data.to_json().to_string();
        let mut st = self.session.lock().await;
        let id = match self.renew_session(&mut st).await {
            Ok(id) => id,
            Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_session(&mut st).await?,
            Err(e) => return Err(e),
        };
        if st.member_written.as_ref() == Some(&(value.clone(), id.clone())) {
            return Ok(());
        }
        let key = self.key(&format!("members/{}", self.cfg.member));
        if !self.put("touch member", &key, &value, None, Some(&id)).await? {
            return Err(PortError::new(
                ErrorKind::CompareFailed,
                "consul touch member: the key is locked by another session",
            ));
        }
        st.member_written = Some((value, id));
        Ok(())
    }

    async fn delete_member(&self) -> Result<(), PortError> {
        self.session.lock().await.member_written = None;
        self.delete("delete member", &self.key(&format!("members/{}", self.cfg.member)), None, false).await.map(|_| ())
    }

    async fn write_cas(&self, key: DcsKey, value: &str, expected: Option<Revision>) -> Result<(), PortError> {
        let what = format!("write {}", key.as_str());
        if self.put(&what, &self.key(key.as_str()), value, Some(expected.map(|r| r.0)), None).await? {
            Ok(())
        } else {
            Err(compare_failed(&what))
        }
    }

    async fn delete_cas(&self, key: DcsKey, expected: Revision) -> Result<(), PortError> {
        let what = format!("delete {}", key.as_str());
        if self.delete(&what, &self.key(key.as_str()), Some(expected.0), false).await? {
            Ok(())
        } else {
            Err(compare_failed(&what))
        }
    }

    async fn write_history(&self, lines: &[HistoryLine]) -> Result<(), PortError> {
        let value = encode::history(lines);
        self.put("write history", &self.key("history"), &value, None, None).await.map(|_| ())
    }

    async fn write_status(&self, status: &Status) -> Result<(), PortError> {
        let value = encode::status(status);
        self.put("write status", &self.key("status"), &value, None, None).await.map(|_| ())
    }

    async fn watch(&self, after: Revision, timeout_ms: u64) -> Result<Watch, PortError> {
        // A blocking query on the prefix. It is answered when anything under it changes, or after
        // `wait`; a missing prefix is a 404 that still carries the index.
        let wait_s = timeout_ms.div_ceil(1000).max(1);
        let query = format!("&index={}&wait={wait_s}s{}", after.0, dc_query(&self.cfg.dc));
        let bound = Duration::from_millis(timeout_ms) + self.timeout();
        let (index, _) = self.raw.kv_recurse(&self.prefix, &query, Some(bound)).await?;
        // Consul may return early with the same index; an index that went backwards means the
        // state was reset (snapshot restore): report a change so the caller re-reads.
        let index = Revision(index);
        Ok(Watch { revision: if index < after { after.next() } else { index } })
    }

    async fn delete_cluster(&self) -> Result<(), PortError> {
        self.delete("delete cluster", &self.prefix, None, true).await.map(|_| ())
    }
}

/// A value as Consul's JSON carries it (base64); one that is not base64 becomes a byte no
/// parser accepts, so it shows as an anomaly instead of failing the whole read.
fn decode_value(v: Option<String>) -> Vec<u8> {
    v.map(|v| base64::engine::general_purpose::STANDARD.decode(v).unwrap_or_else(|_| b"\xff".to_vec()))
        .unwrap_or_default()
}

fn dc_query(dc: &str) -> String {
    if dc.is_empty() {
        String::new()
    } else {
        format!("&dc={dc}")
    }
}

impl ConsulDcs {
    /// Whether our session still exists (`GET /v1/session/info`).
    pub async fn session_alive(&self) -> Result<bool, PortError> {
        let id = self.session.lock().await.id.clone();
        match id {
            Some(id) => self.raw.session_info(&id, &self.cfg.dc).await,
            None => Ok(false),
        }
    }

    /// Registers this node as an instance of service `<scope>` with its role as tag and an HTTP
    /// health check on the REST API's role path (Patroni's `register_service`), so DNS finds the
    /// primary as `primary.<scope>.service.consul`.
    pub async fn register_service(&self, reg: &ServiceRegistration) -> Result<(), PortError> {
        let mut tags = vec![reg.role.clone()];
        if reg.role == "primary" {
            tags.push("master".into());
        }
        tags.extend(reg.extra_tags.iter().cloned());
        let body = serde_json::json!({
            "ID": format!("{}/{}", self.cfg.scope, self.cfg.member),
            "Name": service_name(&self.cfg.scope),
            "Tags": tags,
            "Address": reg.host,
            "Port": reg.port,
            "Check": {
                "HTTP": format!("{}/{}", reg.api_base.trim_end_matches('/'), reg.role),
                "Interval": format!("{}s", reg.check_interval_s),
                "DeregisterCriticalServiceAfter": format!("{}s", (self.cfg.ttl_ms / 1000).max(1) * 10),
            },
        });
        let path = http::with_dc("/v1/agent/service/register", "");
        let a =
            self.raw.send("register service", Method::PUT, &path, Some(body.to_string().into_bytes()), None).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(http::status_error("register service", a.status, &a.body))
        }
    }
}

/// What [`ConsulDcs::register_service`] registers.
#[derive(Clone, Debug)]
pub struct ServiceRegistration {
    /// `primary`, `replica` or `standby-leader`.
    pub role: String,
    /// The database host clients connect to.
    pub host: String,
    /// The database port.
    pub port: u16,
    /// The REST API base URL (`http://host:8008`): the check calls `<base>/<role>`.
    pub api_base: String,
    /// Check interval (Patroni's `service_check_interval`, default 5 s).
    pub check_interval_s: u64,
    /// Patroni's `service_tags`.
    pub extra_tags: Vec<String>,
}

/// A Consul service name from a scope: lower case, `[a-z0-9-]` only (Patroni's rule).
pub fn service_name(scope: &str) -> String {
    let s: String =
        scope.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_has_no_leading_slash() {
        let m = MemberName::new("a").expect("valid");
        let mut c = ConsulConfig::new("http://127.0.0.1:8500/", "batman", m);
        assert_eq!(c.prefix(), "service/batman/");
        assert_eq!(c.url, "http://127.0.0.1:8500");
        c.namespace = "/".into();
        assert_eq!(c.prefix(), "batman/");
    }

    #[test]
    fn service_names_are_sanitised() {
        assert_eq!(service_name("Halo_Cluster.1"), "halo-cluster-1");
    }
}
