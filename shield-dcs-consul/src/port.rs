//! The DCS port over Consul's KV store: the tolerant recursive read, compare-and-set by
//! ModifyIndex, the lock under the session, watches as blocking queries.

use crate::{compare_failed, dc_query, ConsulDcs};
use async_trait::async_trait;
use base64::Engine as _;
use shield_core::cluster::{ClusterView, HistoryLine, MemberData, Status};
use shield_core::ports::{encode, Dcs, DcsKey, ErrorKind, PortError, Watch};
use shield_core::{MemberName, Revision, SystemId};
use std::time::Duration;

#[async_trait]
impl Dcs for ConsulDcs {
    fn member(&self) -> &MemberName {
        &self.cfg.member
    }

    async fn read(&self) -> Result<ClusterView, PortError> {
        if let Some(c) = self.cache_for_read().await {
            self.forget_member_if_missing(&c.entries).await;
            return Ok(ClusterView::from_entries(Revision(c.index), &c.entries));
        }
        // Through the hand-written client: rs-consul cannot read a prefix holding a value that is
        // not UTF-8, drops the index of a 404, and carries ModifyIndex as `i64`.
        let query = format!("{}{}", self.consistency_query(), dc_query(&self.cfg.dc));
        self.direct_read_begins();
        let (index, kvs) = match self.raw.kv_recurse(&self.prefix, &query, None).await {
            Ok(r) => r,
            Err(e) => {
                self.direct_read_failed();
                return Err(e);
            }
        };
        self.direct_read_done(index);
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
        self.forget_status();
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
        self.forget_status();
        let after = self.cached_revision(&key);
        let r = self.raw.txn("take leader", &ops, &self.cfg.dc).await;
        match &r {
            Ok(true) => self.note_write(&key, after, Ok(Some(self.cfg.member.as_str().as_bytes())), Some(&id)),
            Ok(false) => {}
            Err(_) => self.note_write(&key, after, Err(()), None),
        }
        r
    }

    async fn renew_leader(&self, ttl_ms: u64) -> Result<(), PortError> {
        let mut st = self.session.lock().await;
        st.want_ttl_ms = Some(ttl_ms);
        let id = self.renew_session(&mut st).await?;
        let key = self.key("leader");
        let me = self.cfg.member.as_str();
        if self.cache_says_leader(&id) {
            self.destroy_retired(&mut st).await;
            return Ok(());
        }
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
        let id = match self.recently_renewed(&st) {
            Some(id) => id,
            None => match self.renew_session(&mut st).await {
                Ok(id) => id,
                Err(e) if e.kind == ErrorKind::LeaseLost => self.ensure_session(&mut st).await?,
                Err(e) => return Err(e),
            },
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

    async fn write_failsafe(&self, topology: &std::collections::BTreeMap<String, String>) -> Result<(), PortError> {
        let value = encode::failsafe(topology);
        self.put("write failsafe", &self.key("failsafe"), &value, None, None).await.map(|_| ())
    }

    async fn write_status(&self, status: &Status) -> Result<(), PortError> {
        let value = encode::status(status);
        if self.status_unchanged(&value) {
            return Ok(());
        }
        self.forget_status();
        self.put("write status", &self.key("status"), &value, None, None).await?;
        *lock(&self.status_written) = Some(value);
        Ok(())
    }

    async fn watch(&self, after: Revision, timeout_ms: u64) -> Result<Watch, PortError> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
        if let Some(w) = self.watch_cache(after, deadline).await {
            return Ok(w);
        }
        let timeout_ms = deadline.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64;
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ConsulDcs {
    /// Whether the live cache shows the leader key with our name under `session`.
    fn cache_says_leader(&self, session: &str) -> bool {
        let Some(c) = self.cache_rx().and_then(|rx| self.cache_current(&rx)) else { return false };
        let me = self.cfg.member.as_str().as_bytes();
        c.entries.iter().any(|e| e.key == "leader" && e.value == me && e.owner.as_deref() == Some(session))
    }

    /// Whether `value` is the status this handle last wrote, and the cache (when current) does
    /// not show another one.
    fn status_unchanged(&self, value: &str) -> bool {
        if lock(&self.status_written).as_deref() != Some(value) {
            return false;
        }
        let cached = self.cache_rx().and_then(|rx| self.cache_current(&rx));
        cached.is_none_or(|c| c.entries.iter().any(|e| e.key == "status" && e.value == value.as_bytes()))
    }

    fn forget_status(&self) {
        *lock(&self.status_written) = None;
    }

    /// A watch served by the live cache: the revision once its index passes `after` (or it was
    /// reset), `after` at the deadline; None when the cache is off or not live (watch directly).
    async fn watch_cache(&self, after: Revision, deadline: tokio::time::Instant) -> Option<Watch> {
        let mut rx = self.cache_rx()?;
        let resets = rx.borrow().resets;
        loop {
            {
                let s = rx.borrow_and_update();
                if !s.live {
                    return None;
                }
                if s.index > after.0 {
                    return Some(Watch { revision: Revision(s.index) });
                }
                if s.resets != resets {
                    return Some(Watch { revision: after.next() });
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Err(_) => return Some(Watch { revision: after }),
                Ok(Err(_)) => return None,
                Ok(Ok(())) => {}
            }
        }
    }
}
