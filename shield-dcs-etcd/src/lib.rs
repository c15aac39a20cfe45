//! # shield-dcs-etcd
//!
//! Shield's DCS port ([`shield_core::ports::Dcs`]) over etcd v3, with exactly the key layout and
//! value formats of Patroni's `etcd3` backend, so that vip-manager, monitoring scripts and
//! patronictl can read a Shield cluster and a Patroni cluster can be taken over one node at a time.
//!
//! | key under `/<namespace>/<scope>/` | how it is written |
//! |---|---|
//! | `leader` | the plain member name, under this node's lease; acquired with a transaction that creates it only if absent (`create_revision == 0`); renewed only while it still holds our name; released with a compare-and-delete |
//! | `members/<name>` | member JSON under this node's lease, so it vanishes with the node |
//! | `initialize` | create-only for the bootstrap race, then overwritten with the system id |
//! | `config`, `failover`, `sync` | compare-and-set on the key's mod revision |
//! | `history`, `status` | plain puts |
//!
//! Every call is bounded by `retry_timeout`: an etcd that does not answer is an error of kind
//! [`ErrorKind::Unreachable`] in bounded time, never a hang.
//!
//! ## Endpoints: one at a time, moving on after a failure
//!
//! The backend talks to one configured endpoint at a time and moves to the next one after a call
//! to it fails as unreachable (as Patroni's etcd3 client does). etcd-client's own balancing
//! spreads calls over every endpoint, and a member that is frozen rather than dead keeps its TCP
//! connection up, so about every other call would wait out `retry_timeout` on it: two such calls
//! in a row cost the leader its lease. Sticking to a member that answers costs at most one
//! timed-out call per frozen member.
//!
//! ## Lease renewal: unary keep-alives
//!
//! etcd's only keep-alive RPC is a bidirectional stream. This backend opens a fresh stream for
//! each renewal and reads its one answer ([`KeepAliveMode::Unary`], the default) instead of
//! keeping one stream open for the life of the process ([`KeepAliveMode::Stream`]). The stream
//! saves one HTTP/2 stream set-up per renewal (0.04 ms at the median on loopback, see
//! `docs/benchmarks.md`), but a long-lived stream can be half-dead after an etcd member stops or a
//! connection is re-balanced, and its failure then shows up only as a missing answer; the unary
//! form fails or succeeds on every call, which is what fencing needs.
//!
//! What it does not do: it does not retry a failed call itself (the daemon's next cycle is the
//! retry), and it does not cache the cluster between reads.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use shield_core::cluster::{ClusterView, HistoryLine, KvEntry, MemberData, Status};
use shield_core::ports::{encode, Dcs, DcsKey, ErrorKind, PortError, Watch};
use shield_core::{MemberName, Revision, SystemId};
use tokio::sync::Mutex;

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

#[derive(Default)]
struct LeaseState {
    id: Option<i64>,
    /// The ttl `id` was granted for, in seconds.
    granted_ttl_s: i64,
    /// The ttl the last acquire or renewal asked for, in seconds (`None`: the configured one).
    want_ttl_s: Option<i64>,
    /// Leases replaced by one of another ttl, revoked once the leader key has moved off them.
    retired: Vec<i64>,
    /// The open keep-alive stream, with the generation of the connection it runs on.
    stream: Option<(LeaseKeeper, LeaseKeepAliveStream, u64)>,
    /// The member value last written and the lease it was written under.
    member_written: Option<(String, i64)>,
}

/// The connection to the endpoint in use.
#[derive(Default)]
struct Connection {
    client: Option<Client>,
    /// Index into the configured endpoints of the one to use.
    endpoint: usize,
    /// Counts connections made, so that a failure seen on an old connection does not move a
    /// newer one on.
    generation: u64,
}

/// One node's handle on one cluster in etcd.
pub struct EtcdDcs {
    cfg: EtcdConfig,
    prefix: String,
    conn: Mutex<Connection>,
    lease: Mutex<LeaseState>,
}

impl std::fmt::Debug for EtcdDcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDcs").field("endpoints", &self.cfg.endpoints).field("prefix", &self.prefix).finish()
    }
}

/// Maps an etcd-client error to a port error, by cause.
fn port_error(what: &str, e: etcd_client::Error) -> PortError {
    use etcd_client::Error as E;
    let kind = match &e {
        E::GRpcStatus(s) => match s.code() {
            tonic_code::NOT_FOUND if s.message().contains("lease") => ErrorKind::LeaseLost,
            tonic_code::PERMISSION_DENIED | tonic_code::UNAUTHENTICATED | tonic_code::INVALID_ARGUMENT => {
                ErrorKind::Rejected
            }
            tonic_code::FAILED_PRECONDITION if s.message().contains("lease") => ErrorKind::LeaseLost,
            _ => ErrorKind::Unreachable,
        },
        E::LeaseKeepAliveError(m) if m.contains("not found") => ErrorKind::LeaseLost,
        E::InvalidArgs(_) | E::InvalidUri(_) | E::InvalidMetadataValue(_) => ErrorKind::Rejected,
        _ => ErrorKind::Unreachable,
    };
    PortError::new(kind, format!("etcd {what}: {e}"))
}

/// gRPC status codes (tonic's `Code` is not re-exported by etcd-client).
mod tonic_code {
    pub type Code = tonic::Code;
    pub const NOT_FOUND: Code = Code::NotFound;
    pub const PERMISSION_DENIED: Code = Code::PermissionDenied;
    pub const UNAUTHENTICATED: Code = Code::Unauthenticated;
    pub const INVALID_ARGUMENT: Code = Code::InvalidArgument;
    pub const FAILED_PRECONDITION: Code = Code::FailedPrecondition;
}

impl EtcdDcs {
    /// A handle; it connects on first use, so building one never blocks or fails on the network.
    pub fn new(cfg: EtcdConfig) -> EtcdDcs {
        let prefix = cfg.prefix();
        EtcdDcs { cfg, prefix, conn: Mutex::new(Connection::default()), lease: Mutex::new(LeaseState::default()) }
    }

    /// The key prefix of this cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.retry_timeout_ms)
    }

    /// etcd leases have whole seconds: rounded up, so a lease never ends before `ttl_ms`.
    fn ttl_s(ttl_ms: u64) -> i64 {
        i64::try_from(ttl_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)
    }

    fn connect_options(&self) -> ConnectOptions {
        let t = self.timeout();
        let mut o = ConnectOptions::new()
            .with_timeout(t)
            .with_connect_timeout(t)
            .with_keep_alive(Duration::from_secs(2), t)
            .with_tcp_keepalive(Duration::from_secs(5));
        if let Some((user, password)) = &self.cfg.auth {
            o = o.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.cfg.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.client_cert_key_pem {
                t = t.identity(Identity::from_pem(cert, key));
            }
            if let Some(d) = &tls.domain {
                t = t.domain_name(d.clone());
            }
            o = o.with_tls(t);
        }
        o
    }

    /// The client for the endpoint in use and its generation, connecting if needed, within
    /// retry_timeout. A failed connect moves on to the next endpoint.
    async fn client(&self) -> Result<(Client, u64), PortError> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.client.as_ref() {
            return Ok((c.clone(), conn.generation));
        }
        let Some(endpoint) = self.cfg.endpoints.get(conn.endpoint % self.cfg.endpoints.len().max(1)).cloned() else {
            return Err(PortError::new(ErrorKind::Rejected, "etcd: no endpoints configured"));
        };
        let connect = Client::connect([endpoint.as_str()], Some(self.connect_options()));
        let connected = match tokio::time::timeout(self.timeout(), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                conn.endpoint = conn.endpoint.wrapping_add(1);
                return Err(port_error(&format!("connect to {endpoint}"), e));
            }
            Err(_) => {
                conn.endpoint = conn.endpoint.wrapping_add(1);
                let msg = format!("etcd connect: no answer from {endpoint} within retry_timeout");
                return Err(PortError::new(ErrorKind::Unreachable, msg));
            }
        };
        conn.generation += 1;
        conn.client = Some(connected.clone());
        Ok((connected, conn.generation))
    }

    /// Drops connection `generation` (if it is still the one in use) after a failure that says
    /// its endpoint does not answer; the next call connects to the next endpoint.
    async fn move_on(&self, generation: u64) {
        let mut conn = self.conn.lock().await;
        if conn.generation == generation && conn.client.is_some() {
            conn.client = None;
            conn.endpoint = conn.endpoint.wrapping_add(1);
        }
    }

    /// Runs one call on the endpoint in use, bounded by retry_timeout; an unreachable answer moves
    /// on to the next endpoint.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, PortError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(what, f).await.map(|(t, _)| t)
    }

    /// [`Self::call`], also returning the generation of the connection the call ran on.
    async fn call_on<T, F, Fut>(&self, what: &str, f: F) -> Result<(T, u64), PortError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let (client, generation) = self.client().await?;
        let r = match tokio::time::timeout(self.timeout(), f(client)).await {
            Ok(r) => r.map_err(|e| port_error(what, e)),
            Err(_) => {
                Err(PortError::new(ErrorKind::Unreachable, format!("etcd {what}: no answer within retry_timeout")))
            }
        };
        if matches!(&r, Err(e) if e.kind == ErrorKind::Unreachable) {
            self.move_on(generation).await;
        }
        r.map(|t| (t, generation))
    }

    /// Our lease, granted if we have none, or if ours was granted for another ttl than the one
    /// last asked for (the old one is then retired: the leader key moves off it at the next
    /// renewal, and it is revoked).
    async fn ensure_lease(&self, st: &mut LeaseState) -> Result<i64, PortError> {
        let ttl = st.want_ttl_s.unwrap_or_else(|| Self::ttl_s(self.cfg.ttl_ms));
        if let Some(id) = st.id {
            if st.granted_ttl_s == ttl {
                return Ok(id);
            }
        }
        let r = self.call("lease grant", |mut c| async move { c.lease_grant(ttl, None).await }).await?;
        if let Some(old) = st.id.replace(r.id()) {
            st.retired.push(old);
        }
        st.granted_ttl_s = ttl;
        st.stream = None;
        Ok(r.id())
    }

    /// Revokes the retired leases (best effort: each expires on its own anyway).
    async fn revoke_retired(&self, st: &mut LeaseState) {
        for id in std::mem::take(&mut st.retired) {
            if let Err(e) = self.call("lease revoke", |mut c| async move { c.lease_revoke(id).await }).await {
                tracing::debug!(error = %e, lease = id, "etcd: could not revoke a retired lease");
            }
        }
    }

    /// Keeps our lease alive once. `LeaseLost` if it has expired (it is then forgotten, and the
    /// next call grants a new one).
    async fn keep_alive(&self, st: &mut LeaseState) -> Result<i64, PortError> {
        let id = self.ensure_lease(st).await?;
        let ttl = match self.cfg.keepalive {
            KeepAliveMode::Unary => {
                match self.call("lease keep-alive", |mut c| async move { c.lease_keep_alive(id).await }).await {
                    Ok(_) => 1,
                    Err(e) if e.kind == ErrorKind::LeaseLost => 0,
                    Err(e) => return Err(e),
                }
            }
            KeepAliveMode::Stream => self.keep_alive_stream(st, id).await?,
        };
        if ttl <= 0 {
            st.id = None;
            st.stream = None;
            st.member_written = None;
            return Err(PortError::new(ErrorKind::LeaseLost, format!("etcd lease {id:x} has expired")));
        }
        Ok(id)
    }

    async fn keep_alive_stream(&self, st: &mut LeaseState, id: i64) -> Result<i64, PortError> {
        if st.stream.is_none() {
            match self.call_on("lease keep-alive", |mut c| async move { c.lease_keep_alive(id).await }).await {
                Ok(((keeper, stream), generation)) => {
                    st.stream = Some((keeper, stream, generation));
                    return Ok(1);
                }
                Err(e) if e.kind == ErrorKind::LeaseLost => return Ok(0),
                Err(e) => return Err(e),
            }
        }
        let timeout = self.timeout();
        let Some((keeper, stream, generation)) = st.stream.as_mut() else { return Ok(0) };
        let generation = *generation;
        let round = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(timeout, round).await {
            Ok(Ok(Some(resp))) => Ok(resp.ttl()),
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                st.stream = None;
                self.move_on(generation).await;
                Err(PortError::new(ErrorKind::Unreachable, "etcd lease keep-alive stream broke".to_owned()))
            }
        }
    }

    /// Our lease for `ttl_ms`, kept alive, or a new one if it has expired: what an acquire puts
    /// the leader key under.
    async fn lease_to_acquire_with(&self, ttl_ms: u64) -> Result<i64, PortError> {
        let mut st = self.lease.lock().await;
        st.want_ttl_s = Some(Self::ttl_s(ttl_ms));
        match self.keep_alive(&mut st).await {
            Ok(lease) => Ok(lease),
            Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_lease(&mut st).await,
            Err(e) => Err(e),
        }
    }

    async fn txn(&self, what: &str, txn: Txn) -> Result<bool, PortError> {
        Ok(self.call(what, |mut c| async move { c.txn(txn).await }).await?.succeeded())
    }

    async fn put(&self, what: &str, rel: &str, value: &str) -> Result<(), PortError> {
        let (key, value) = (self.key(rel), value.to_owned());
        self.call(what, |mut c| async move { c.put(key, value, None).await }).await.map(|_| ())
    }
}

/// Keys per page of a cluster read.
const READ_PAGE_KEYS: i64 = 500;

/// The largest answer a read accepts (gRPC's default is 4 MiB). A page of 500 keys stays under
/// it unless values average over 128 KiB; etcd refuses requests over 1.5 MiB by default.
const READ_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The end of the range holding every key under `prefix` (its last byte incremented; the
/// prefix always ends with `/`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// An etcd revision as a [`Revision`]: etcd's are `int64` and never negative; a negative one is
/// refused as bad data, never wrapped.
fn revision_from_etcd(what: &str, rev: i64) -> Result<Revision, PortError> {
    Revision::from_etcd(rev)
        .ok_or_else(|| PortError::new(ErrorKind::BadData, format!("etcd {what}: negative revision {rev}")))
}

/// A [`Revision`] as etcd's `int64`: one above `i64::MAX` came from no etcd, and is refused.
fn revision_to_etcd(what: &str, rev: Revision) -> Result<i64, PortError> {
    rev.to_etcd().ok_or_else(|| {
        PortError::new(ErrorKind::Rejected, format!("etcd {what}: revision {rev} is above etcd's int64 range"))
    })
}

fn compare_failed(what: &str) -> PortError {
    PortError::new(ErrorKind::CompareFailed, format!("etcd {what}: the key changed since it was read"))
}

#[async_trait]
impl Dcs for EtcdDcs {
    fn member(&self) -> &MemberName {
        &self.cfg.member
    }

    async fn read(&self) -> Result<ClusterView, PortError> {
        // In pages of READ_PAGE_KEYS keys, every page at the revision of the first, so the pages
        // make one consistent snapshot; each answer may be up to READ_MAX_MESSAGE_BYTES. Junk
        // under the prefix (megabytes of keys nobody parses) then costs round trips, not the
        // whole read: gRPC's default 4 MiB answer limit would fail every read of such a prefix,
        // and the cluster would look unreachable.
        let end = prefix_end(&self.prefix);
        let mut start = self.prefix.clone().into_bytes();
        let mut at = 0i64;
        let mut entries = Vec::new();
        let revision = loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(READ_PAGE_KEYS).with_revision(at);
            let key = start.clone();
            let resp = self
                .call("read", |c| async move {
                    c.kv_client().max_decoding_message_size(READ_MAX_MESSAGE_BYTES).get(key, Some(opts)).await
                })
                .await?;
            if at == 0 {
                at = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                // A key that is not valid UTF-8 cannot be one of Patroni's; skip it.
                let Some(key) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                entries.push(KvEntry {
                    key: key.to_owned(),
                    value: kv.value().to_vec(),
                    revision: revision_from_etcd("read", kv.mod_revision())?,
                    owner: (kv.lease() != 0).then(|| format!("{:x}", kv.lease())),
                });
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break revision_from_etcd("read", at)?,
            }
        };
        // Our member key missing from the read (deleted by hand, say): forget that it was
        // written, so the next touch writes it again instead of skipping an unchanged value. A
        // live node's member key is back within a cycle, which the leader-key rule counts on.
        let mine = format!("members/{}", self.cfg.member);
        if !entries.iter().any(|e| e.key == mine) {
            self.lease.lock().await.member_written = None;
        }
        Ok(ClusterView::from_entries(revision, &entries))
    }

    async fn create_initialize(&self, system_id: Option<SystemId>) -> Result<bool, PortError> {
        let value = encode::initialize(system_id);
        let key = self.key("initialize");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        self.txn("create initialize", txn).await
    }

    async fn write_initialize(&self, system_id: SystemId) -> Result<(), PortError> {
        let value = encode::initialize(Some(system_id));
        self.put("write initialize", "initialize", &value).await
    }

    async fn acquire_leader(&self, ttl_ms: u64) -> Result<bool, PortError> {
        let lease = self.lease_to_acquire_with(ttl_ms).await?;
        let key = self.key("leader");
        let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            self.cfg.member.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
        self.txn("acquire leader", txn).await
    }

    async fn take_leader(&self, ttl_ms: u64, expected: Revision) -> Result<bool, PortError> {
        let expected = revision_to_etcd("take leader", expected)?;
        let lease = self.lease_to_acquire_with(ttl_ms).await?;
        let key = self.key("leader");
        // mod_revision is 0 for a missing key, and no existing key has revision 0: a key deleted
        // meanwhile is never created here (the normal acquire does that).
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.clone(), CompareOp::Equal, expected),
                Compare::create_revision(key.clone(), CompareOp::NotEqual, 0),
            ])
            .and_then([TxnOp::put(key, self.cfg.member.as_str(), Some(PutOptions::new().with_lease(lease)))]);
        self.txn("take leader", txn).await
    }

    async fn renew_leader(&self, ttl_ms: u64) -> Result<(), PortError> {
        let mut st = self.lease.lock().await;
        st.want_ttl_s = Some(Self::ttl_s(ttl_ms));
        let lease = self.keep_alive(&mut st).await?;
        let key = self.key("leader");
        let me = self.cfg.member.as_str();
        // Fast path: the key holds our name under our lease; the keep-alive was the renewal.
        let held = Txn::new().when([
            Compare::value(key.clone(), CompareOp::Equal, me),
            Compare::lease(key.clone(), CompareOp::Equal, lease),
        ]);
        if self.txn("renew leader", held).await? {
            self.revoke_retired(&mut st).await;
            return Ok(());
        }
        // Our name under another lease: one of ours retired for a changed ttl, or a restarted
        // daemon's. Move it to ours, only if it is still exactly the key just read (same value,
        // same lease), so a key deleted and written again meanwhile is never taken over.
        let k = key.clone();
        let found = self.call("renew leader", |mut c| async move { c.get(k, None).await }).await?;
        let seen = found.kvs().first().filter(|kv| kv.value() == me.as_bytes()).map(|kv| kv.lease());
        if let Some(seen) = seen {
            let reattach = Txn::new()
                .when([
                    Compare::value(key.clone(), CompareOp::Equal, me),
                    Compare::lease(key.clone(), CompareOp::Equal, seen),
                ])
                .and_then([TxnOp::put(key, me, Some(PutOptions::new().with_lease(lease)))]);
            if self.txn("renew leader", reattach).await? {
                self.revoke_retired(&mut st).await;
                return Ok(());
            }
        }
        Err(PortError::new(ErrorKind::LeaseLost, "etcd renew leader: the leader key is gone or held by another member"))
    }

    async fn release_leader(&self) -> Result<(), PortError> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, self.cfg.member.as_str())])
            .and_then([TxnOp::delete(key, None)]);
        self.txn("release leader", txn).await.map(|_| ())
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), PortError> {
        let value = data.to_json().to_string();
        let mut st = self.lease.lock().await;
        let lease = match self.keep_alive(&mut st).await {
            Ok(id) => id,
            Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_lease(&mut st).await?,
            Err(e) => return Err(e),
        };
        if st.member_written.as_ref() == Some(&(value.clone(), lease)) {
            return Ok(());
        }
        let (key, v) = (self.key(&format!("members/{}", self.cfg.member)), value.clone());
        let options = Some(PutOptions::new().with_lease(lease));
        self.call("touch member", |mut c| async move { c.put(key, v, options).await }).await?;
        st.member_written = Some((value, lease));
        Ok(())
    }

    async fn delete_member(&self) -> Result<(), PortError> {
        self.lease.lock().await.member_written = None;
        let key = self.key(&format!("members/{}", self.cfg.member));
        self.call("delete member", |mut c| async move { c.delete(key, None).await }).await.map(|_| ())
    }

    async fn write_cas(&self, key: DcsKey, value: &str, expected: Option<Revision>) -> Result<(), PortError> {
        let k = self.key(key.as_str());
        let what = format!("write {}", key.as_str());
        let cmp = match expected {
            None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
            Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, revision_to_etcd(&what, r)?),
        };
        if self.txn(&what, Txn::new().when([cmp]).and_then([TxnOp::put(k, value, None)])).await? {
            Ok(())
        } else {
            Err(compare_failed(&what))
        }
    }

    async fn delete_cas(&self, key: DcsKey, expected: Revision) -> Result<(), PortError> {
        let k = self.key(key.as_str());
        let what = format!("delete {}", key.as_str());
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, revision_to_etcd(&what, expected)?)])
            .and_then([TxnOp::delete(k, None)]);
        if self.txn(&what, txn).await? {
            Ok(())
        } else {
            Err(compare_failed(&what))
        }
    }

    async fn write_history(&self, lines: &[HistoryLine]) -> Result<(), PortError> {
        let value = encode::history(lines);
        self.put("write history", "history", &value).await
    }

    async fn write_status(&self, status: &Status) -> Result<(), PortError> {
        let value = encode::status(status);
        self.put("write status", "status", &value).await
    }

    async fn watch(&self, after: Revision, timeout_ms: u64) -> Result<Watch, PortError> {
        let from = revision_to_etcd("watch", after.next())?;
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let prefix = self.prefix.clone();
        let (mut stream, generation) =
            self.call_on("watch", |mut c| async move { c.watch(prefix, Some(opts)).await }).await?;
        let wait = async {
            loop {
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision() > 0 {
                            // History was compacted past `after`: report a change so the caller
                            // re-reads everything.
                            let compacted = revision_from_etcd("watch", resp.compact_revision())?;
                            return Ok(compacted.max(after.next()));
                        }
                        if let Some(rev) = resp.events().iter().filter_map(|e| e.kv()).map(|kv| kv.mod_revision()).max()
                        {
                            return revision_from_etcd("watch", rev);
                        }
                        if resp.canceled() {
                            return Err(PortError::new(
                                ErrorKind::Unreachable,
                                format!("etcd watch cancelled: {}", resp.cancel_reason()),
                            ));
                        }
                    }
                    Ok(None) => return Err(PortError::new(ErrorKind::Unreachable, "etcd watch stream ended")),
                    Err(e) => return Err(port_error("watch", e)),
                }
            }
        };
        match tokio::time::timeout(Duration::from_millis(timeout_ms), wait).await {
            Ok(Err(e)) if e.kind == ErrorKind::Unreachable => {
                self.move_on(generation).await;
                Err(e)
            }
            Ok(r) => r.map(|revision| Watch { revision }),
            Err(_) => Ok(Watch { revision: after }),
        }
    }

    async fn delete_cluster(&self) -> Result<(), PortError> {
        let prefix = self.prefix.clone();
        let options = Some(DeleteOptions::new().with_prefix());
        self.call("delete cluster", |mut c| async move { c.delete(prefix, options).await }).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end("/service/batman/"), b"/service/batman0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
    }

    #[test]
    fn prefix_collapses_slashes() {
        let m = MemberName::new("a").expect("valid");
        let mut c = EtcdConfig::new(vec![], "batman", m);
        assert_eq!(c.prefix(), "/service/batman/");
        c.namespace = "//custom/".into();
        assert_eq!(c.prefix(), "/custom/batman/");
    }
}
