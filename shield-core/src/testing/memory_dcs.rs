//! An in-memory DCS with TTL leases on simulated time: the reference implementation of
//! [`Dcs`], with etcd's semantics (revisions, leases, create-only and compare-and-set writes).
//!
//! Many [`MemoryDcs`] clients share one [`MemoryStore`]. Time only moves when the test calls
//! [`MemoryStore::advance`]; expired leases take their keys with them at that moment.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;

use crate::cluster::{ClusterView, HistoryLine, KvEntry, MemberData, Status};
use crate::ports::encode;
use crate::ports::{Dcs, DcsKey, ErrorKind, PortError, Watch};
use crate::types::{MemberName, Revision, SystemId};

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    mod_revision: u64,
    lease: Option<i64>,
}

#[derive(Debug, Default)]
struct Inner {
    now_ms: u64,
    revision: u64,
    keys: BTreeMap<String, Entry>,
    /// lease id -> expiry time
    leases: BTreeMap<i64, u64>,
    next_lease: i64,
    reachable: bool,
    wakers: Vec<Waker>,
    /// How long after its TTL a lease really ends (etcd's lessor can keep it up to an election
    /// timeout longer, after a leader change).
    expiry_delay_ms: u64,
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        for w in self.wakers.drain(..) {
            w.wake();
        }
        self.revision
    }

    fn put(&mut self, key: &str, value: &[u8], lease: Option<i64>) {
        let rev = self.bump();
        self.keys.insert(key.to_owned(), Entry { value: value.to_vec(), mod_revision: rev, lease });
    }

    fn delete(&mut self, key: &str) -> bool {
        if self.keys.remove(key).is_some() {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expire(&mut self) {
        let now = self.now_ms.saturating_sub(self.expiry_delay_ms);
        let dead: Vec<i64> = self.leases.iter().filter(|(_, &exp)| exp <= now).map(|(&id, _)| id).collect();
        for id in dead {
            self.leases.remove(&id);
            let keys: Vec<String> =
                self.keys.iter().filter(|(_, e)| e.lease == Some(id)).map(|(k, _)| k.clone()).collect();
            for k in keys {
                self.delete(&k);
            }
        }
        for w in self.wakers.drain(..) {
            w.wake();
        }
    }
}

/// The shared state of one in-memory DCS "server".
#[derive(Clone, Debug)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store at time 0, reachable.
    pub fn new() -> MemoryStore {
        let inner = Inner { reachable: true, next_lease: 1, ..Inner::default() };
        MemoryStore { inner: Arc::new(Mutex::new(inner)) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock means a test already panicked; keep going so it reports that panic.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Moves simulated time forward and expires leases.
    pub fn advance(&self, ms: u64) {
        let mut g = self.lock();
        g.now_ms += ms;
        g.expire();
    }

    /// Makes every lease end `ms` after its TTL, as etcd may after a leader election (never
    /// earlier: a lease that outlives its TTL only delays the next holder).
    pub fn set_expiry_delay(&self, ms: u64) {
        self.lock().expiry_delay_ms = ms;
    }

    /// The store's revision: it changes with every write, deletion and expiry.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Simulated time now.
    pub fn now_ms(&self) -> u64 {
        self.lock().now_ms
    }

    /// Makes every call fail as unreachable (or work again).
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().reachable = reachable;
    }

    /// The value of `key` if it exists (its lease, if any, unexpired).
    pub fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().keys.get(key).map(|e| e.value.clone())
    }

    /// Writes a raw value, as a foreign client would (for bad-data tests).
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        self.lock().put(key, value, None);
    }

    /// A client for `member` in cluster `/<namespace>/<scope>/` with lease TTL `ttl_ms`.
    pub fn client(&self, namespace: &str, scope: &str, member: MemberName, ttl_ms: u64) -> MemoryDcs {
        let ns = namespace.trim_matches('/');
        MemoryDcs { store: self.clone(), prefix: format!("/{ns}/{scope}/"), member, lease: Mutex::new((None, ttl_ms)) }
    }
}

/// One node's client of a [`MemoryStore`].
#[derive(Debug)]
pub struct MemoryDcs {
    store: MemoryStore,
    prefix: String,
    member: MemberName,
    /// Our lease, if granted, and the ttl it was (or will be) granted for.
    lease: Mutex<(Option<i64>, u64)>,
}

fn unreachable() -> PortError {
    PortError::new(ErrorKind::Unreachable, "in-memory DCS is unreachable")
}

impl MemoryDcs {
    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn lease_state(&self) -> MutexGuard<'_, (Option<i64>, u64)> {
        self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn my_lease(&self) -> Option<i64> {
        self.lease_state().0
    }

    /// Opens the store, failing if it is unreachable.
    fn open(&self) -> Result<MutexGuard<'_, Inner>, PortError> {
        let g = self.store.lock();
        if g.reachable {
            Ok(g)
        } else {
            Err(unreachable())
        }
    }

    /// Refreshes our lease, granting a new one if it is gone or was granted for another ttl
    /// (`ttl_ms`; `None` keeps the ttl last asked for).
    fn ensure_lease(&self, g: &mut Inner, ttl_ms: Option<u64>) -> i64 {
        let mut st = self.lease_state();
        let ttl = ttl_ms.unwrap_or(st.1);
        let expiry = g.now_ms.saturating_add(ttl);
        if let Some(id) = st.0.filter(|_| ttl == st.1) {
            if let Some(exp) = g.leases.get_mut(&id) {
                *exp = expiry;
                return id;
            }
        }
        let id = g.next_lease;
        g.next_lease += 1;
        g.leases.insert(id, expiry);
        *st = (Some(id), ttl);
        id
    }
}

#[async_trait]
impl Dcs for MemoryDcs {
    fn member(&self) -> &MemberName {
        &self.member
    }

    async fn read(&self) -> Result<ClusterView, PortError> {
        let g = self.open()?;
        let entries: Vec<KvEntry> = g
            .keys
            .range(self.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&self.prefix))
            .map(|(k, e)| KvEntry {
                key: k[self.prefix.len()..].to_owned(),
                value: e.value.clone(),
                revision: Revision(e.mod_revision),
                owner: e.lease.map(|l| l.to_string()),
            })
            .collect();
        Ok(ClusterView::from_entries(Revision(g.revision), &entries))
    }

    async fn create_initialize(&self, system_id: Option<SystemId>) -> Result<bool, PortError> {
        let value = encode::initialize(system_id);
        let mut g = self.open()?;
        let key = self.key("initialize");
        if g.keys.contains_key(&key) {
            return Ok(false);
        }
        g.put(&key, value.as_bytes(), None);
        Ok(true)
    }

    async fn write_initialize(&self, system_id: SystemId) -> Result<(), PortError> {
        let mut g = self.open()?;
        g.put(&self.key("initialize"), encode::initialize(Some(system_id)).as_bytes(), None);
        Ok(())
    }

    async fn acquire_leader(&self, ttl_ms: u64) -> Result<bool, PortError> {
        let mut g = self.open()?;
        let lease = self.ensure_lease(&mut g, Some(ttl_ms));
        let key = self.key("leader");
        if g.keys.contains_key(&key) {
            return Ok(false);
        }
        g.put(&key, self.member.as_str().as_bytes(), Some(lease));
        Ok(true)
    }

    async fn take_leader(&self, ttl_ms: u64, expected: Revision) -> Result<bool, PortError> {
        let mut g = self.open()?;
        let lease = self.ensure_lease(&mut g, Some(ttl_ms));
        let key = self.key("leader");
        if g.keys.get(&key).is_none_or(|e| Revision(e.mod_revision) != expected) {
            return Ok(false);
        }
        g.put(&key, self.member.as_str().as_bytes(), Some(lease));
        Ok(true)
    }

    async fn renew_leader(&self, ttl_ms: u64) -> Result<(), PortError> {
        let mut g = self.open()?;
        let lost = |why: &str| PortError::new(ErrorKind::LeaseLost, format!("leader key: {why}"));
        if !self.my_lease().is_some_and(|id| g.leases.contains_key(&id)) {
            return Err(lost("our lease has expired"));
        }
        let key = self.key("leader");
        let holder = g.keys.get(&key).cloned();
        match holder {
            Some(e) if e.value == self.member.as_str().as_bytes() => {
                // A changed ttl grants a new lease, and the key moves to it.
                let id = self.ensure_lease(&mut g, Some(ttl_ms));
                if e.lease != Some(id) {
                    g.put(&key, &e.value, Some(id));
                }
                Ok(())
            }
            Some(_) => Err(lost("held by another member")),
            None => Err(lost("absent")),
        }
    }

    async fn release_leader(&self) -> Result<(), PortError> {
        let mut g = self.open()?;
        let key = self.key("leader");
        if g.keys.get(&key).is_some_and(|e| e.value == self.member.as_str().as_bytes()) {
            g.delete(&key);
        }
        Ok(())
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), PortError> {
        let mut g = self.open()?;
        let lease = self.ensure_lease(&mut g, None);
        let value = data.to_json().to_string();
        g.put(&self.key(&format!("members/{}", self.member)), value.as_bytes(), Some(lease));
        Ok(())
    }

    async fn delete_member(&self) -> Result<(), PortError> {
        let mut g = self.open()?;
        g.delete(&self.key(&format!("members/{}", self.member)));
        Ok(())
    }

    async fn write_cas(&self, key: DcsKey, value: &str, expected: Option<Revision>) -> Result<(), PortError> {
        let mut g = self.open()?;
        let k = self.key(key.as_str());
        let current = g.keys.get(&k).map(|e| Revision(e.mod_revision));
        if current != expected {
            return Err(PortError::new(
                ErrorKind::CompareFailed,
                format!("{}: expected revision {expected:?}, found {current:?}", key.as_str()),
            ));
        }
        g.put(&k, value.as_bytes(), None);
        Ok(())
    }

    async fn delete_cas(&self, key: DcsKey, expected: Revision) -> Result<(), PortError> {
        let mut g = self.open()?;
        let k = self.key(key.as_str());
        let current = g.keys.get(&k).map(|e| Revision(e.mod_revision));
        if current != Some(expected) {
            return Err(PortError::new(
                ErrorKind::CompareFailed,
                format!("{}: expected revision {expected}, found {current:?}", key.as_str()),
            ));
        }
        g.delete(&k);
        Ok(())
    }

    async fn write_history(&self, lines: &[HistoryLine]) -> Result<(), PortError> {
        self.open()?.put(&self.key("history"), encode::history(lines).as_bytes(), None);
        Ok(())
    }

    async fn write_failsafe(&self, topology: &std::collections::BTreeMap<String, String>) -> Result<(), PortError> {
        self.open()?.put(&self.key("failsafe"), crate::ports::encode::failsafe(topology).as_bytes(), None);
        Ok(())
    }

    async fn write_status(&self, status: &Status) -> Result<(), PortError> {
        self.open()?.put(&self.key("status"), encode::status(status).as_bytes(), None);
        Ok(())
    }

    async fn watch(&self, after: Revision, timeout_ms: u64) -> Result<Watch, PortError> {
        let deadline = self.open()?.now_ms + timeout_ms;
        WatchFuture { dcs: self, after, deadline }.await
    }

    async fn delete_cluster(&self) -> Result<(), PortError> {
        let mut g = self.open()?;
        let keys: Vec<String> = g.keys.keys().filter(|k| k.starts_with(&self.prefix)).cloned().collect();
        for k in keys {
            g.delete(&k);
        }
        Ok(())
    }
}

/// Resolves when the store's revision passes `after`, or simulated time passes `deadline`.
struct WatchFuture<'a> {
    dcs: &'a MemoryDcs,
    after: Revision,
    deadline: u64,
}

impl Future for WatchFuture<'_> {
    type Output = Result<Watch, PortError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut g = self.dcs.store.lock();
        if !g.reachable {
            return Poll::Ready(Err(unreachable()));
        }
        if g.revision > self.after.0 || g.now_ms >= self.deadline {
            return Poll::Ready(Ok(Watch { revision: Revision(g.revision) }));
        }
        g.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}
