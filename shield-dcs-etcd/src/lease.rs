//! The connection and the lease: connecting (with auth and TLS), granting a lease for the
//! cluster's ttl, keeping it alive, and replacing it when the ttl changes.

use super::config::{EtcdConfig, KeepAliveMode};
use crate::cache::Cache;
use crate::{port_error, Connection, EtcdDcs, Inner, LeaseState};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions, Txn};
use shield_core::ports::{ErrorKind, PortError};
use shield_core::Revision;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

impl EtcdDcs {
    /// A handle; it connects on first use, so building one never blocks or fails on the network.
    pub fn new(cfg: EtcdConfig) -> EtcdDcs {
        let prefix = cfg.prefix();
        let cache = cfg.cache_view.then(|| Arc::new(Cache::default()));
        let inner = Inner {
            cfg,
            prefix,
            conn: Mutex::new(Connection::default()),
            lease: Mutex::new(LeaseState::default()),
            moved: tokio::sync::watch::Sender::new(0),
            written: tokio::sync::watch::Sender::new(Revision::default()),
        };
        EtcdDcs { inner: Arc::new(inner), cache }
    }

    /// The key prefix of this cluster.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }
}

impl Inner {
    pub(crate) fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.retry_timeout_ms)
    }

    /// etcd leases have whole seconds: rounded up, so a lease never ends before `ttl_ms`.
    pub(crate) fn ttl_s(ttl_ms: u64) -> i64 {
        i64::try_from(ttl_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)
    }

    pub(crate) fn connect_options(&self) -> ConnectOptions {
        let t = self.timeout();
        let mut o = ConnectOptions::new()
            .with_timeout(t)
            .with_connect_timeout(t)
            // HTTP/2 pings while streams are open. etcd's server refuses pings sent less than
            // 5 s apart (`--grpc-keepalive-min-time`): at the third it sends GOAWAY
            // ("too_many_pings") and every stream on the connection breaks, the watch and the
            // keep-alive stream with it. A dead endpoint is found sooner by the calls
            // themselves, each bounded by retry_timeout.
            .with_keep_alive(Duration::from_secs(10), t)
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
    pub(crate) async fn client(&self) -> Result<(Client, u64), PortError> {
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
    pub(crate) async fn move_on(&self, generation: u64) {
        let mut conn = self.conn.lock().await;
        if conn.generation == generation && conn.client.is_some() {
            conn.client = None;
            conn.endpoint = conn.endpoint.wrapping_add(1);
            self.moved.send_modify(|n| *n += 1);
        }
    }

    /// Runs one call on the endpoint in use, bounded by retry_timeout; an unreachable answer moves
    /// on to the next endpoint.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, PortError>
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        self.call_on(what, f).await.map(|(t, _)| t)
    }

    /// [`Self::call`], also returning the generation of the connection the call ran on.
    pub(crate) async fn call_on<T, F, Fut>(&self, what: &str, f: F) -> Result<(T, u64), PortError>
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
    pub(crate) async fn ensure_lease(&self, st: &mut LeaseState) -> Result<i64, PortError> {
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
        st.renewed_at = Some(Instant::now());
        Ok(r.id())
    }

    /// Revokes the retired leases (best effort: each expires on its own anyway).
    pub(crate) async fn revoke_retired(&self, st: &mut LeaseState) {
        for id in std::mem::take(&mut st.retired) {
            if let Err(e) = self.call("lease revoke", |mut c| async move { c.lease_revoke(id).await }).await {
                tracing::debug!(error = %e, lease = id, "etcd: could not revoke a retired lease");
            }
        }
    }

    /// Keeps our lease alive once: the lease and, when the answer showed it, the store's
    /// revision when etcd renewed it. `LeaseLost` if it has expired (it is then forgotten, and
    /// the next call grants a new one).
    pub(crate) async fn keep_alive(&self, st: &mut LeaseState) -> Result<(i64, Option<Revision>), PortError> {
        let id = self.ensure_lease(st).await?;
        let sent = Instant::now();
        let (ttl, revision) = match self.cfg.keepalive {
            KeepAliveMode::Unary => {
                match self.call("lease keep-alive", |mut c| async move { c.lease_keep_alive(id).await }).await {
                    Ok(_) => (1, None),
                    Err(e) if e.kind == ErrorKind::LeaseLost => (0, None),
                    Err(e) => return Err(e),
                }
            }
            KeepAliveMode::Stream => self.keep_alive_stream(st, id).await?,
        };
        if ttl <= 0 {
            st.id = None;
            st.stream = None;
            st.member_written = None;
            st.renewed_at = None;
            return Err(PortError::new(ErrorKind::LeaseLost, format!("etcd lease {id:x} has expired")));
        }
        st.renewed_at = Some(sent);
        Ok((id, revision))
    }

    /// Our lease for a member-key write: kept alive unless this handle renewed it less than a
    /// quarter of its ttl ago (the leader's renewal earlier in the same cycle, or a cycle woken
    /// early by a watch), so a member costs one keep-alive per cycle at most.
    pub(crate) async fn member_lease(&self, st: &mut LeaseState) -> Result<i64, PortError> {
        let quarter = Duration::from_millis(u64::try_from(st.granted_ttl_s).unwrap_or(0).saturating_mul(250));
        if let (Some(id), Some(at)) = (st.id, st.renewed_at) {
            if at.elapsed() < quarter {
                return Ok(id);
            }
        }
        match self.keep_alive(st).await {
            Ok((id, _)) => Ok(id),
            Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_lease(st).await,
            Err(e) => Err(e),
        }
    }

    /// One round on the kept-open keep-alive stream (opened first if needed; etcd-client reads
    /// the first answer of a new stream itself, so that round shows no revision).
    pub(crate) async fn keep_alive_stream(
        &self,
        st: &mut LeaseState,
        id: i64,
    ) -> Result<(i64, Option<Revision>), PortError> {
        if st.stream.is_none() {
            match self.call_on("lease keep-alive", |mut c| async move { c.lease_keep_alive(id).await }).await {
                Ok(((keeper, stream), generation)) => {
                    st.stream = Some((keeper, stream, generation));
                    return Ok((1, None));
                }
                Err(e) if e.kind == ErrorKind::LeaseLost => return Ok((0, None)),
                Err(e) => return Err(e),
            }
        }
        let timeout = self.timeout();
        let Some((keeper, stream, generation)) = st.stream.as_mut() else { return Ok((0, None)) };
        let generation = *generation;
        let round = async {
            keeper.keep_alive().await?;
            stream.message().await
        };
        match tokio::time::timeout(timeout, round).await {
            Ok(Ok(Some(resp))) => {
                let revision = resp.header().and_then(|h| Revision::from_etcd(h.revision()));
                Ok((resp.ttl(), revision))
            }
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                st.stream = None;
                self.move_on(generation).await;
                Err(PortError::new(ErrorKind::Unreachable, "etcd lease keep-alive stream broke".to_owned()))
            }
        }
    }

    /// Our lease for `ttl_ms`, kept alive, or a new one if it has expired: what an acquire puts
    /// the leader key under.
    pub(crate) async fn lease_to_acquire_with(&self, ttl_ms: u64) -> Result<i64, PortError> {
        let mut st = self.lease.lock().await;
        st.want_ttl_s = Some(Self::ttl_s(ttl_ms));
        match self.keep_alive(&mut st).await {
            Ok((lease, _)) => Ok(lease),
            Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_lease(&mut st).await,
            Err(e) => Err(e),
        }
    }

    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<bool, PortError> {
        let r = self.call(what, |mut c| async move { c.txn(txn).await }).await?;
        self.wrote(r.header());
        Ok(r.succeeded())
    }

    pub(crate) async fn put(&self, what: &str, rel: &str, value: &str) -> Result<(), PortError> {
        let (key, value) = (self.key(rel), value.to_owned());
        let r = self.call(what, |mut c| async move { c.put(key, value, None).await }).await?;
        self.wrote(r.header());
        Ok(())
    }

    /// Notes the store's revision after one of our writes: the next `read()` from the watched
    /// view waits until the view has it, so a handle always reads its own writes.
    pub(crate) fn wrote(&self, header: Option<&etcd_client::ResponseHeader>) {
        if let Some(rev) = header.and_then(|h| Revision::from_etcd(h.revision())) {
            self.written.send_if_modified(|w| {
                let newer = rev > *w;
                *w = (*w).max(rev);
                newer
            });
        }
    }
}
