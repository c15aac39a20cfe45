//! The cached view (`cache_view`): one blocking query loop on the cluster prefix keeps a copy of
//! every key, so that `read`, `watch` and the leader check of `renew_leader` cost no request.
//!
//! Read-your-writes: a write through this handle is remembered (key, value, session, and the
//! key's revision in the cache before the write was sent) until the cache shows it; a read waits
//! briefly for that, and otherwise reads directly. A write whose outcome is unknown (an error, a
//! recursive delete) makes the next read a direct one; after a direct read the cache is used
//! again only once it has caught up with that read's index.

use crate::http::Raw;
use crate::ConsulDcs;
use shield_core::cluster::KvEntry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a blocking query of the loop waits for a change, in seconds.
const WAIT_S: u64 = 30;
/// How long a read waits for the cache to show this handle's own writes before reading directly.
const CATCH_UP: Duration = Duration::from_millis(200);

/// What the loop publishes.
#[derive(Clone, Debug, Default)]
pub(crate) struct CacheState {
    /// Every key under the prefix, as of `index`.
    pub(crate) entries: Arc<Vec<KvEntry>>,
    /// Consul's `X-Consul-Index` of the last answer.
    pub(crate) index: u64,
    /// Whether the loop's last query was answered (false after an error, until a fresh listing).
    pub(crate) live: bool,
    /// How many times the index went backwards (a reset of Consul's state).
    pub(crate) resets: u64,
}

impl CacheState {
    fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.iter().find(|e| e.key == key)
    }
}

/// A write of this handle the cache has not shown yet.
#[derive(Debug)]
struct Expect {
    key: String,
    /// `None`: deleted.
    value: Option<Vec<u8>>,
    /// The session the key was locked with (`acquire`), if any.
    owner: Option<String>,
    /// The key's revision in the cache before the write was sent.
    after: u64,
}

impl Expect {
    fn seen_in(&self, s: &CacheState) -> bool {
        match (s.get(&self.key), &self.value) {
            (None, None) => true,
            (Some(e), Some(v)) => {
                e.value == *v
                    && e.revision.0 > self.after
                    && self.owner.as_ref().is_none_or(|o| e.owner.as_ref() == Some(o))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Default)]
struct Own {
    pending: Vec<Expect>,
    /// A write with an unknown outcome: the next read is a direct one.
    need_fresh: bool,
    /// The index of the last direct read: the cache is used again once it is there.
    min_index: u64,
    /// The handle's failed requests as of the last direct read: a failure since (the agent or
    /// the servers unreachable) makes reads direct again until one succeeds, instead of
    /// serving a cache whose blocking query may simply not have timed out yet.
    failures_seen: u64,
}

/// The cache's handle in [`ConsulDcs`]: the loop's task (started by the first read, aborted on
/// drop) and what this handle wrote since.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    task: Mutex<Option<(JoinHandle<()>, watch::Receiver<CacheState>)>>,
    own: Mutex<Own>,
    /// Requests the loop has sent.
    pub(crate) queries: Arc<AtomicU64>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some((task, _)) = lock(&self.task).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loop's pieces: it holds no reference to the [`ConsulDcs`].
struct Loop {
    raw: Raw,
    prefix: String,
    /// Consistency and datacenter parameters.
    query: String,
    bound: Duration,
    backoff: Duration,
    tx: watch::Sender<CacheState>,
}

impl Loop {
    async fn run(self) {
        let mut index = 0u64;
        loop {
            let query = format!("&index={index}&wait={WAIT_S}s{}", self.query);
            match self.raw.kv_recurse(&self.prefix, &query, Some(self.bound)).await {
                Ok((new, kvs)) => index = self.answered(index, new, kvs),
                Err(e) => {
                    tracing::debug!(error = %e, "consul cache: blocking query failed; retrying with a fresh listing");
                    self.tx.send_modify(|s| s.live = false);
                    index = 0;
                    tokio::time::sleep(self.backoff).await;
                }
            }
            if self.tx.is_closed() {
                return;
            }
        }
    }

    /// Takes one answer; returns the index for the next query.
    fn answered(&self, asked: u64, new: u64, kvs: Vec<crate::http::RawKv>) -> u64 {
        publish(&self.tx, asked, new, || crate::session::entries(&self.prefix, kvs))
    }
}

/// Publishes the answer of a query sent with `index=asked` that came back with index `new`;
/// returns the index for the next query.
fn publish(tx: &watch::Sender<CacheState>, asked: u64, new: u64, entries: impl FnOnce() -> Vec<KvEntry>) -> u64 {
    let live = tx.borrow().live;
    if new == asked && live {
        // Returned at the end of `wait`, or early, with nothing changed.
        return asked;
    }
    let entries = Arc::new(entries());
    tx.send_modify(|s| {
        // An index that went backwards: Consul's state was reset; the answer is taken as is.
        let resets = if s.index != 0 && new < s.index { s.resets + 1 } else { s.resets };
        *s = CacheState { entries, index: new, live: true, resets };
    });
    // Index 0 would make the next query return at once: block from 1 instead.
    new.max(1)
}

impl ConsulDcs {
    /// HTTP requests this handle has sent, the cache loop's blocking queries included.
    pub fn requests_sent(&self) -> u64 {
        self.raw.sent.load(Ordering::Relaxed) + self.cache_queries_sent()
    }

    /// Of [`Self::requests_sent`], the blocking queries of the cache loop.
    pub fn cache_queries_sent(&self) -> u64 {
        self.cache.queries.load(Ordering::Relaxed)
    }

    /// The cache's receiver, the loop started if it was not (None: `cache_view` is off).
    pub(crate) fn cache_start(&self) -> Option<watch::Receiver<CacheState>> {
        if !self.cfg.cache_view {
            return None;
        }
        let mut task = lock(&self.cache.task);
        if let Some((_, rx)) = task.as_ref() {
            return Some(rx.clone());
        }
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = watch::channel(CacheState::default());
        let mut raw = self.raw.clone();
        raw.sent = self.cache.queries.clone();
        let l = Loop {
            raw,
            prefix: self.prefix.clone(),
            query: format!("{}{}", self.consistency_query(), crate::dc_query(&self.cfg.dc)),
            // Consul adds up to wait/16 of jitter to a blocking query's wait.
            bound: Duration::from_secs(WAIT_S) * 17 / 16 + self.timeout(),
            backoff: (self.timeout() / 2).max(Duration::from_millis(500)),
            tx,
        };
        *task = Some((rt.spawn(l.run()), rx.clone()));
        Some(rx)
    }

    /// The cache's receiver if the loop runs (never starts it).
    pub(crate) fn cache_rx(&self) -> Option<watch::Receiver<CacheState>> {
        lock(&self.cache.task).as_ref().map(|(_, rx)| rx.clone())
    }

    /// The cache, if it is live and shows every write of this handle (and the last direct read).
    pub(crate) fn cache_current(&self, rx: &watch::Receiver<CacheState>) -> Option<CacheState> {
        let s = rx.borrow().clone();
        let failures = self.raw.failed.load(Ordering::Relaxed);
        let mut own = lock(&self.cache.own);
        own.pending.retain(|e| !e.seen_in(&s));
        let caught_up = own.pending.is_empty() && s.index >= own.min_index && own.failures_seen == failures;
        (s.live && !own.need_fresh && caught_up).then_some(s)
    }

    /// The cache for a read: current, or so within a short wait; None means read directly.
    pub(crate) async fn cache_for_read(&self) -> Option<CacheState> {
        let mut rx = self.cache_start()?;
        let catch_up = async {
            loop {
                if !rx.borrow_and_update().live {
                    return None;
                }
                if let Some(s) = self.cache_current(&rx) {
                    return Some(s);
                }
                rx.changed().await.ok()?;
            }
        };
        tokio::time::timeout(CATCH_UP, catch_up).await.ok().flatten()
    }

    /// The cached revision of `key` (absolute), to note before writing it.
    pub(crate) fn cached_revision(&self, key: &str) -> u64 {
        let Some(rel) = key.strip_prefix(&self.prefix) else { return 0 };
        self.cache_rx().and_then(|rx| rx.borrow().get(rel).map(|e| e.revision.0)).unwrap_or(0)
    }

    /// Notes a write of this handle: `Ok(Some(value))` written, `Ok(None)` deleted, `Err(())`
    /// outcome unknown.
    pub(crate) fn note_write(&self, key: &str, after: u64, outcome: Result<Option<&[u8]>, ()>, owner: Option<&str>) {
        if !self.cfg.cache_view {
            return;
        }
        let mut own = lock(&self.cache.own);
        match (outcome, key.strip_prefix(&self.prefix)) {
            (Ok(value), Some(rel)) => own.pending.push(Expect {
                key: rel.to_owned(),
                value: value.map(<[u8]>::to_vec),
                owner: owner.map(str::to_owned),
                after,
            }),
            _ => own.need_fresh = true,
        }
    }

    /// Before a direct read: what it will cover is forgotten (restored by [`Self::direct_read_failed`]).
    pub(crate) fn direct_read_begins(&self) {
        let failures = self.raw.failed.load(Ordering::Relaxed);
        let mut own = lock(&self.cache.own);
        own.pending.clear();
        own.need_fresh = false;
        own.failures_seen = failures;
    }

    pub(crate) fn direct_read_done(&self, index: u64) {
        lock(&self.cache.own).min_index = index;
    }

    pub(crate) fn direct_read_failed(&self) {
        lock(&self.cache.own).need_fresh = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shield_core::Revision;

    fn entry(key: &str, rev: u64) -> KvEntry {
        KvEntry { key: key.into(), value: b"v".to_vec(), revision: Revision(rev), owner: None }
    }

    #[test]
    fn answers_replace_the_cache_and_a_backwards_index_is_a_reset() {
        let (tx, mut rx) = watch::channel(CacheState::default());
        // The first listing (index 0 asked), then a change.
        assert_eq!(publish(&tx, 0, 7, || vec![entry("leader", 7)]), 7);
        assert!(rx.borrow_and_update().live);
        assert_eq!(publish(&tx, 7, 9, || vec![entry("leader", 9)]), 9);
        assert_eq!(rx.borrow_and_update().entries[0].revision, Revision(9));
        // Early return with the same index: nothing published.
        assert_eq!(publish(&tx, 9, 9, Vec::new), 9);
        assert!(!rx.has_changed().unwrap_or(true));
        // Backwards: taken as is, counted as a reset.
        assert_eq!(publish(&tx, 9, 3, Vec::new), 3);
        let s = rx.borrow_and_update().clone();
        assert_eq!((s.index, s.resets, s.entries.len()), (3, 1, 0));
        // After an error (not live), the fresh listing is published even at the same index.
        tx.send_modify(|s| s.live = false);
        assert_eq!(publish(&tx, 0, 3, Vec::new), 3);
        assert!(rx.borrow_and_update().live);
        // An index of 0 is never asked again (it would not block).
        assert_eq!(publish(&tx, 3, 0, Vec::new), 1);
    }

    #[test]
    fn own_writes_are_seen_only_past_the_revision_before_them() {
        let s = CacheState { entries: Arc::new(vec![entry("status", 5)]), index: 5, live: true, resets: 0 };
        let put = |after| Expect { key: "status".into(), value: Some(b"v".to_vec()), owner: None, after };
        assert!(!put(5).seen_in(&s), "the old revision of the same value is not our write");
        assert!(put(4).seen_in(&s));
        let del = Expect { key: "status".into(), value: None, owner: None, after: 0 };
        assert!(!del.seen_in(&s));
        let locked = Expect { key: "status".into(), value: Some(b"v".to_vec()), owner: Some("s1".into()), after: 0 };
        assert!(!locked.seen_in(&s), "a lock shows its session");
    }
}
