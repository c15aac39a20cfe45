//! The DCS port over etcd v3: paginated reads of the cluster prefix, transactions for the leader
//! key and the compare-and-set keys, plain puts, watches.

use crate::{compare_failed, port_error, revision_from_etcd, revision_to_etcd, EtcdDcs, Inner};
use async_trait::async_trait;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use shield_core::cluster::{ClusterView, HistoryLine, KvEntry, MemberData, Status};
use shield_core::ports::{encode, Dcs, DcsKey, ErrorKind, PortError, Watch};
use shield_core::{MemberName, Revision, SystemId};
use std::time::Duration;

/// Keys per page of a cluster read.
const READ_PAGE_KEYS: i64 = 500;

/// The largest answer a read accepts (gRPC's default is 4 MiB). A page of 500 keys stays under
/// it unless values average over 128 KiB; etcd refuses requests over 1.5 MiB by default.
pub(crate) const READ_MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The end of the range holding every key under `prefix` (its last byte incremented; the
/// prefix always ends with `/`).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Inner {
    /// One consistent read of the whole prefix: its revision and its keys.
    pub(crate) async fn list(&self) -> Result<(Revision, Vec<KvEntry>), PortError> {
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
        Ok((revision, entries))
    }
}

#[async_trait]
impl Dcs for EtcdDcs {
    fn member(&self) -> &MemberName {
        &self.inner.cfg.member
    }

    async fn read(&self) -> Result<ClusterView, PortError> {
        let cached = match &self.cache {
            Some(c) => {
                c.start(&self.inner);
                // Our own writes first: the view must show them (bounded; else etcd is asked).
                let written = *self.inner.written.borrow();
                let bound = self.inner.timeout().min(Duration::from_millis(500)) / 2;
                if c.caught_up(written, bound).await {
                    c.snapshot()
                } else {
                    None
                }
            }
            None => None,
        };
        let (revision, entries) = match cached {
            Some(v) => (v.revision, v.entries.into_values().collect()),
            None => self.inner.list().await?,
        };
        // Our member key missing from the read (deleted by hand, say): forget that it was
        // written, so the next touch writes it again instead of skipping an unchanged value. A
        // live node's member key is back within a cycle, which the leader-key rule counts on.
        let mine = format!("members/{}", self.inner.cfg.member);
        if !entries.iter().any(|e: &KvEntry| e.key == mine) {
            self.inner.lease.lock().await.member_written = None;
        }
        Ok(ClusterView::from_entries(revision, &entries))
    }

    async fn create_initialize(&self, system_id: Option<SystemId>) -> Result<bool, PortError> {
        let value = encode::initialize(system_id);
        let key = self.inner.key("initialize");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value, None)]);
        self.inner.txn("create initialize", txn).await
    }

    async fn write_initialize(&self, system_id: SystemId) -> Result<(), PortError> {
        let value = encode::initialize(Some(system_id));
        self.inner.put("write initialize", "initialize", &value).await
    }

    async fn acquire_leader(&self, ttl_ms: u64) -> Result<bool, PortError> {
        let lease = self.inner.lease_to_acquire_with(ttl_ms).await?;
        let key = self.inner.key("leader");
        let txn = Txn::new().when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)]).and_then([TxnOp::put(
            key,
            self.inner.cfg.member.as_str(),
            Some(PutOptions::new().with_lease(lease)),
        )]);
        self.inner.txn("acquire leader", txn).await
    }

    async fn take_leader(&self, ttl_ms: u64, expected: Revision) -> Result<bool, PortError> {
        let expected = revision_to_etcd("take leader", expected)?;
        let lease = self.inner.lease_to_acquire_with(ttl_ms).await?;
        let key = self.inner.key("leader");
        // mod_revision is 0 for a missing key, and no existing key has revision 0: a key deleted
        // meanwhile is never created here (the normal acquire does that).
        let txn = Txn::new()
            .when([
                Compare::mod_revision(key.clone(), CompareOp::Equal, expected),
                Compare::create_revision(key.clone(), CompareOp::NotEqual, 0),
            ])
            .and_then([TxnOp::put(key, self.inner.cfg.member.as_str(), Some(PutOptions::new().with_lease(lease)))]);
        self.inner.txn("take leader", txn).await
    }

    async fn renew_leader(&self, ttl_ms: u64) -> Result<(), PortError> {
        let mut st = self.inner.lease.lock().await;
        st.want_ttl_s = Some(Inner::ttl_s(ttl_ms));
        let (lease, renewed_at) = self.inner.keep_alive(&mut st).await?;
        let key = self.inner.key("leader");
        let me = self.inner.cfg.member.as_str();
        // Fast path: the key holds our name under our lease; the keep-alive was the renewal.
        // Seen in the watched view when it is complete up to the renewal, else asked.
        if self.leader_in_view(lease, renewed_at).await {
            self.inner.revoke_retired(&mut st).await;
            return Ok(());
        }
        let held = Txn::new().when([
            Compare::value(key.clone(), CompareOp::Equal, me),
            Compare::lease(key.clone(), CompareOp::Equal, lease),
        ]);
        if self.inner.txn("renew leader", held).await? {
            self.inner.revoke_retired(&mut st).await;
            return Ok(());
        }
        // Our name under another lease: one of ours retired for a changed ttl, or a restarted
        // daemon's. Move it to ours, only if it is still exactly the key just read (same value,
        // same lease), so a key deleted and written again meanwhile is never taken over.
        let k = key.clone();
        let found = self.inner.call("renew leader", |mut c| async move { c.get(k, None).await }).await?;
        let seen = found.kvs().first().filter(|kv| kv.value() == me.as_bytes()).map(|kv| kv.lease());
        if let Some(seen) = seen {
            let reattach = Txn::new()
                .when([
                    Compare::value(key.clone(), CompareOp::Equal, me),
                    Compare::lease(key.clone(), CompareOp::Equal, seen),
                ])
                .and_then([TxnOp::put(key, me, Some(PutOptions::new().with_lease(lease)))]);
            if self.inner.txn("renew leader", reattach).await? {
                self.inner.revoke_retired(&mut st).await;
                return Ok(());
            }
        }
        Err(PortError::new(ErrorKind::LeaseLost, "etcd renew leader: the leader key is gone or held by another member"))
    }

    async fn release_leader(&self) -> Result<(), PortError> {
        let key = self.inner.key("leader");
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, self.inner.cfg.member.as_str())])
            .and_then([TxnOp::delete(key, None)]);
        self.inner.txn("release leader", txn).await.map(|_| ())
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), PortError> {
        let value = data.to_json().to_string();
        let mut st = self.inner.lease.lock().await;
        let lease = self.inner.member_lease(&mut st).await?;
        if st.member_written.as_ref() == Some(&(value.clone(), lease)) {
            return Ok(());
        }
        let (key, v) = (self.inner.key(&format!("members/{}", self.inner.cfg.member)), value.clone());
        let options = Some(PutOptions::new().with_lease(lease));
        let r = self.inner.call("touch member", |mut c| async move { c.put(key, v, options).await }).await?;
        self.inner.wrote(r.header());
        st.member_written = Some((value, lease));
        Ok(())
    }

    async fn delete_member(&self) -> Result<(), PortError> {
        self.inner.lease.lock().await.member_written = None;
        let key = self.inner.key(&format!("members/{}", self.inner.cfg.member));
        let r = self.inner.call("delete member", |mut c| async move { c.delete(key, None).await }).await?;
        self.inner.wrote(r.header());
        Ok(())
    }

    async fn write_cas(&self, key: DcsKey, value: &str, expected: Option<Revision>) -> Result<(), PortError> {
        let k = self.inner.key(key.as_str());
        let what = format!("write {}", key.as_str());
        let cmp = match expected {
            None => Compare::create_revision(k.clone(), CompareOp::Equal, 0),
            Some(r) => Compare::mod_revision(k.clone(), CompareOp::Equal, revision_to_etcd(&what, r)?),
        };
        if self.inner.txn(&what, Txn::new().when([cmp]).and_then([TxnOp::put(k, value, None)])).await? {
            Ok(())
        } else {
            Err(compare_failed(&what))
        }
    }

    async fn delete_cas(&self, key: DcsKey, expected: Revision) -> Result<(), PortError> {
        let k = self.inner.key(key.as_str());
        let what = format!("delete {}", key.as_str());
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, revision_to_etcd(&what, expected)?)])
            .and_then([TxnOp::delete(k, None)]);
        if self.inner.txn(&what, txn).await? {
            Ok(())
        } else {
            Err(compare_failed(&what))
        }
    }

    async fn write_history(&self, lines: &[HistoryLine]) -> Result<(), PortError> {
        let value = encode::history(lines);
        self.inner.put("write history", "history", &value).await
    }

    async fn write_failsafe(&self, topology: &std::collections::BTreeMap<String, String>) -> Result<(), PortError> {
        self.inner.put("write failsafe", "failsafe", &encode::failsafe(topology)).await
    }

    async fn write_status(&self, status: &Status) -> Result<(), PortError> {
        // Written when it changed: decide() compares with the view, which may not show our
        // last write yet.
        let value = encode::status(status);
        if self.inner.lease.lock().await.status_written.as_ref() == Some(&value) {
            return Ok(());
        }
        let r = self.inner.put("write status", "status", &value).await;
        self.inner.lease.lock().await.status_written = r.is_ok().then_some(value);
        r
    }

    async fn watch(&self, after: Revision, timeout_ms: u64) -> Result<Watch, PortError> {
        if let Some(c) = &self.cache {
            c.start(&self.inner);
            if let Some(revision) = c.wait_past(after, Duration::from_millis(timeout_ms)).await {
                return Ok(Watch { revision });
            }
        }
        let from = revision_to_etcd("watch", after.next())?;
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let prefix = self.inner.prefix.clone();
        let (mut stream, generation) =
            self.inner.call_on("watch", |mut c| async move { c.watch(prefix, Some(opts)).await }).await?;
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
                self.inner.move_on(generation).await;
                Err(e)
            }
            Ok(r) => r.map(|revision| Watch { revision }),
            Err(_) => Ok(Watch { revision: after }),
        }
    }

    async fn delete_cluster(&self) -> Result<(), PortError> {
        self.inner.lease.lock().await.status_written = None;
        let prefix = self.inner.prefix.clone();
        let options = Some(DeleteOptions::new().with_prefix());
        let r = self.inner.call("delete cluster", |mut c| async move { c.delete(prefix, options).await }).await?;
        self.inner.wrote(r.header());
        Ok(())
    }
}

impl EtcdDcs {
    /// Whether the watched view shows the leader key holding our name under `lease`, and is
    /// complete up to `renewed_at`, the store's revision when the lease was renewed.
    async fn leader_in_view(&self, lease: i64, renewed_at: Option<Revision>) -> bool {
        let (Some(cache), Some(at)) = (&self.cache, renewed_at) else { return false };
        let bound = self.inner.timeout().min(Duration::from_millis(500)) / 2;
        if !cache.caught_up(at, bound).await {
            return false;
        }
        let Some(view) = cache.snapshot() else { return false };
        let owner = format!("{lease:x}");
        view.entries.get("leader").is_some_and(|e| {
            e.value == self.inner.cfg.member.as_str().as_bytes() && e.owner.as_deref() == Some(owner.as_str())
        })
    }
}
