//! The session (Patroni's lock: TTL, lock-delay, checks), its renewal and replacement.

use super::config::{Consistency, ConsulConfig};
use crate::cache::Cache;
use crate::http;
use crate::http::{min_ttl_from_error, Raw, SessionSpec};
use crate::{consul_error, dc_query, decode_value, ConsulDcs, SessionState};
use rs_consul::types::DeleteKeyRequest;
use rs_consul::{Config, ConsulBuilder, ConsulError};
use shield_core::cluster::KvEntry;
use shield_core::ports::{ErrorKind, PortError};
use shield_core::Revision;
use std::time::Duration;
use tokio::sync::Mutex;

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
        let raw = Raw {
            client,
            base: cfg.url.clone(),
            token: cfg.token.clone(),
            timeout,
            sent: Default::default(),
            failed: Default::default(),
        };
        ConsulDcs {
            prefix: cfg.prefix(),
            cfg,
            consul,
            raw,
            session: Mutex::new(SessionState::default()),
            cache: Cache::default(),
            status_written: std::sync::Mutex::new(None),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.retry_timeout_ms)
    }

    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, ConsulError>>,
    ) -> Result<T, PortError> {
        self.raw.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match tokio::time::timeout(self.timeout(), f).await {
            Ok(r) => r.map_err(|e| consul_error(what, e)),
            Err(_) => {
                Err(PortError::new(ErrorKind::Unreachable, format!("consul {what}: no answer within retry_timeout")))
            }
        }
    }

    /// The session for Shield's `ttl_ms`: TTL `ttl/2` (Consul invalidates between 1x and 2x of
    /// it) and a lock-delay of `ttl/2`, so no other node can take the lock before `ttl` has passed.
    pub(crate) fn session_spec(&self, ttl_ms: u64, ttl_s: u64) -> SessionSpec {
        SessionSpec {
            name: format!("{}-{}", self.cfg.scope, self.cfg.member),
            ttl_s,
            lock_delay_ms: (ttl_ms / 2).clamp(1, 60_000),
            checks: self.cfg.checks.clone(),
        }
    }

    /// The session TTL for Shield's `ttl_ms`, in seconds, before any raise to the agent's minimum.
    pub(crate) fn session_ttl_for(ttl_ms: u64) -> u64 {
        (ttl_ms / 2).div_ceil(1000).max(1)
    }

    /// Our session, created if we have none, or if ours was created for another ttl than the
    /// one last asked for (the old one is retired: destroyed once the leader key has moved). A
    /// TTL the agent refuses as too short is raised to its minimum, with a warning.
    pub(crate) async fn ensure_session(&self, st: &mut SessionState) -> Result<String, PortError> {
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
        st.renewed_at = Some(std::time::Instant::now());
        Ok(id)
    }

    /// Destroys the retired sessions (best effort: each expires on its own anyway). Keys they
    /// still hold go with them (`Behavior=delete`): the member key is written again next cycle.
    pub(crate) async fn destroy_retired(&self, st: &mut SessionState) {
        for id in std::mem::take(&mut st.retired) {
            if let Err(e) = self.raw.session_destroy(&id, &self.cfg.dc).await {
                tracing::debug!(error = %e, session = %id, "consul: could not destroy a retired session");
            }
        }
    }

    /// Renews our session; a session Consul no longer knows is forgotten (LeaseLost), and the
    /// next call creates a new one.
    pub(crate) async fn renew_session(&self, st: &mut SessionState) -> Result<String, PortError> {
        let id = self.ensure_session(st).await?;
        let sent = std::time::Instant::now();
        match self.raw.session_renew(&id, &self.cfg.dc).await {
            Ok(()) => {
                st.renewed_at = Some(sent);
                Ok(id)
            }
            Err(e) => {
                st.renewed_at = None;
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
    pub(crate) async fn session_to_acquire_with(&self, ttl_ms: u64) -> Result<String, PortError> {
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
        self.ttl_s_of(&*self.session.lock().await)
    }

    fn ttl_s_of(&self, st: &SessionState) -> u64 {
        let wanted = Self::session_ttl_for(st.want_ttl_ms.unwrap_or(self.cfg.ttl_ms));
        st.min_ttl_s.map_or(wanted, |m| m.max(wanted))
    }

    /// Our session, if this handle renewed or created it less than a quarter of its TTL ago and
    /// it is the one for the ttl last asked for: a second renewal in the same cycle is skipped.
    pub(crate) fn recently_renewed(&self, st: &SessionState) -> Option<String> {
        let ttl_ms = st.want_ttl_ms.unwrap_or(self.cfg.ttl_ms);
        let fresh = Duration::from_millis(self.ttl_s_of(st) * 1000 / 4);
        let id = st.id.as_ref().filter(|_| st.created_for_ttl_ms == ttl_ms)?;
        st.renewed_at.filter(|t| t.elapsed() < fresh).map(|_| id.clone())
    }

    /// Destroys our session (orderly shutdown: our keys go with it).
    pub async fn destroy_session(&self) -> Result<(), PortError> {
        let mut st = self.session.lock().await;
        st.renewed_at = None;
        if let Some(id) = st.id.take() {
            st.member_written = None;
            self.raw.session_destroy(&id, &self.cfg.dc).await?;
        }
        Ok(())
    }

    /// A put through the hand-written client, so that a ModifyIndex goes out exactly as it was
    /// read (rs-consul carries indexes as `i64`). `cas`: see [`http::cas_query`]; `acquire`: the
    /// session to lock the key with.
    pub(crate) async fn put(
        &self,
        what: &str,
        key: &str,
        value: &str,
        cas: Option<Option<u64>>,
        acquire: Option<&str>,
    ) -> Result<bool, PortError> {
        let after = self.cached_revision(key);
        let r = self.raw.kv_put(what, key, value.as_bytes(), cas, acquire, &self.cfg.dc).await;
        match &r {
            Ok(true) => self.note_write(key, after, Ok(Some(value.as_bytes())), acquire),
            Ok(false) => {}
            Err(_) => self.note_write(key, after, Err(()), None),
        }
        r
    }

    /// Deletes `key` (with `recurse`, the prefix); with `cas`, only if its ModifyIndex is still
    /// that one. Indexes are u64 end to end, and an index of 0, which Consul would take as
    /// "delete unconditionally", is refused.
    pub(crate) async fn delete(
        &self,
        what: &str,
        key: &str,
        cas: Option<u64>,
        recurse: bool,
    ) -> Result<bool, PortError> {
        let r = self.delete_unnoted(what, key, cas, recurse).await;
        match &r {
            Ok(true) if !recurse => self.note_write(key, 0, Ok(None), None),
            Ok(false) => {}
            _ => self.note_write(key, 0, Err(()), None),
        }
        r
    }

    async fn delete_unnoted(&self, what: &str, key: &str, cas: Option<u64>, recurse: bool) -> Result<bool, PortError> {
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
    pub(crate) async fn get_one(&self, key: &str) -> Result<Option<(Vec<u8>, u64, Option<String>)>, PortError> {
        let query = format!("{}{}", self.consistency_query().trim_start_matches('&'), dc_query(&self.cfg.dc));
        let kv = self.raw.kv_get(key, &query).await?;
        Ok(kv.map(|kv| (decode_value(kv.value), kv.modify_index, kv.session)))
    }

    pub(crate) fn entries(&self, kvs: Vec<http::RawKv>) -> Vec<KvEntry> {
        entries(&self.prefix, kvs)
    }

    /// After a read: when our member key is not in it (deleted by hand, say), forget that it was
    /// written, so the next touch writes it again instead of skipping an unchanged value. A live
    /// node's member key is back within a cycle, which the leader-key rule counts on.
    pub(crate) async fn forget_member_if_missing(&self, entries: &[KvEntry]) {
        let mine = format!("members/{}", self.cfg.member);
        if !entries.iter().any(|e| e.key == mine) {
            self.session.lock().await.member_written = None;
        }
    }

    pub(crate) fn consistency_query(&self) -> &'static str {
        match self.cfg.consistency {
            Consistency::Default => "",
            Consistency::Consistent => "&consistent",
            Consistency::Stale => "&stale",
        }
    }
}

/// Consul's entries as Shield's, keys relative to `prefix` (others dropped).
pub(crate) fn entries(prefix: &str, kvs: Vec<http::RawKv>) -> Vec<KvEntry> {
    kvs.into_iter()
        .filter_map(|kv| {
            let key = kv.key.strip_prefix(prefix)?.to_owned();
            Some(KvEntry { key, value: decode_value(kv.value), revision: Revision(kv.modify_index), owner: kv.session })
        })
        .collect()
}
