//! The cluster view kept from one long-lived watch on the prefix ([`crate::EtcdConfig::cache_view`]).
//!
//! A background task lists the prefix once (paginated, at one revision), then follows a single
//! watch from the next revision, applying every put and delete to the view. After a broken
//! stream it resumes from the last revision applied; after a compaction past it, it lists
//! again. While it follows, `read()` answers from the view without a request, `watch()` waits on
//! it, and a leader's renewal checks the leader key in it (see [`Cache::caught_up`] for why that
//! check sees everything up to the renewal).
//!
//! The revision of the view counts only what the stream has said is complete: the revision of
//! the events applied, and the header revision of a progress notification. The header of an
//! answer carrying events is not used: etcd may split a long catch-up into several answers that
//! each carry the store's current revision.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions, WatchRequestSender, WatchResponse, WatchResponseStream};
use shield_core::cluster::KvEntry;
use shield_core::ports::{ErrorKind, PortError};
use shield_core::Revision;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::port::READ_MAX_MESSAGE_BYTES;
use crate::{port_error, revision_from_etcd, revision_to_etcd, Inner};

/// What the watch has built.
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    /// The cluster's keys, relative to the prefix.
    pub entries: BTreeMap<String, KvEntry>,
    /// Every change up to this revision is in `entries`.
    pub revision: Revision,
    /// The task follows a watch that is open; `entries` may be stale when false.
    pub live: bool,
}

/// The view, its task, and the way to ask the task's watch for progress.
pub(crate) struct Cache {
    view: watch::Sender<View>,
    requests: tokio::sync::Mutex<Option<WatchRequestSender>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            view: watch::Sender::new(View::default()),
            requests: tokio::sync::Mutex::new(None),
            task: Mutex::new(None),
        }
    }
}

impl Cache {
    /// Starts the task unless it runs.
    pub fn start(self: &Arc<Self>, inner: &Arc<Inner>) {
        let Ok(mut task) = self.task.lock() else { return };
        if task.is_none() {
            *task = Some(tokio::spawn(run(Arc::downgrade(inner), self.clone())));
        }
    }

    /// Stops the task (the handle is gone).
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().ok().and_then(|mut t| t.take()) {
            t.abort();
        }
    }

    /// The view, when the task follows the watch.
    pub fn snapshot(&self) -> Option<View> {
        let v = self.view.borrow();
        v.live.then(|| v.clone())
    }

    /// Waits until the view is past `after` (`Some` of its revision), or `timeout` passes
    /// (`Some(after)`). `None`: the view is not followed, the caller must ask etcd.
    pub async fn wait_past(&self, after: Revision, timeout: Duration) -> Option<Revision> {
        let mut rx = self.view.subscribe();
        let past = rx.wait_for(|v| !v.live || v.revision > after);
        let seen = match tokio::time::timeout(timeout, past).await {
            Ok(Ok(v)) if v.live => Some(v.revision),
            Ok(_) => None,
            Err(_) => Some(after),
        };
        seen
    }

    /// Whether the view holds every change up to `at` (a revision etcd reported after a
    /// renewal), asking the watch for a progress notification when it is behind and waiting
    /// for it up to `bound`.
    ///
    /// A renewal's answer carries the store's revision when etcd handled it; the view being
    /// at least there means any change to the leader key made before the renewal is in it, so a
    /// leader key seen holding our name under our lease was ours when the lease was renewed.
    pub async fn caught_up(&self, at: Revision, bound: Duration) -> bool {
        let mut rx = self.view.subscribe();
        {
            let v = rx.borrow_and_update();
            if !v.live {
                return false;
            }
            if v.revision >= at {
                return true;
            }
        }
        {
            let mut sender = self.requests.lock().await;
            let Some(sender) = sender.as_mut() else { return false };
            if sender.request_progress().await.is_err() {
                return false;
            }
        }
        let reached = rx.wait_for(|v| !v.live || v.revision >= at);
        let reached = matches!(tokio::time::timeout(bound, reached).await, Ok(Ok(v)) if v.live);
        reached
    }

    fn replace(&self, revision: Revision, entries: Vec<KvEntry>) {
        let entries = entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        self.view.send_modify(|v| *v = View { entries, revision, live: false });
    }

    fn set_live(&self, live: bool) {
        self.view.send_if_modified(|v| std::mem::replace(&mut v.live, live) != live);
    }
}

/// The task: follow the watch; after a failure, wait a little and resume (or list again).
async fn run(inner: Weak<Inner>, cache: Arc<Cache>) {
    let mut resume: Option<Revision> = None;
    loop {
        let Some(me) = inner.upgrade() else { return };
        let backoff = Duration::from_millis((me.cfg.retry_timeout_ms / 4).clamp(50, 500));
        let why = follow(&me, &cache, &mut resume).await;
        cache.set_live(false);
        *cache.requests.lock().await = None;
        tracing::debug!(error = %why, "etcd watch: following again");
        drop(me);
        tokio::time::sleep(backoff).await;
    }
}

/// Lists the prefix if there is nothing to resume from, opens the watch and applies what it
/// says until it fails; returns why.
async fn follow(me: &Inner, cache: &Cache, resume: &mut Option<Revision>) -> PortError {
    let from = match *resume {
        Some(r) => r,
        None => match me.list().await {
            Ok((revision, entries)) => {
                cache.replace(revision, entries);
                *resume = Some(revision);
                revision
            }
            Err(e) => return e,
        },
    };
    let mut moved = me.moved.subscribe();
    moved.borrow_and_update();
    let (requests, mut responses, generation) = match me.open_watch(from).await {
        Ok(w) => w,
        Err(e) => return e,
    };
    *cache.requests.lock().await = Some(requests);
    loop {
        tokio::select! {
            m = responses.message() => match m {
                Ok(Some(resp)) => {
                    if !me.cfg.view_lag_for_tests.is_zero() {
                        tokio::time::sleep(me.cfg.view_lag_for_tests).await;
                    }
                    if let Err(e) = apply(me, cache, &resp, resume) {
                        return e;
                    }
                }
                Ok(None) => return PortError::new(ErrorKind::Unreachable, "etcd watch stream ended"),
                Err(e) => {
                    me.move_on(generation).await;
                    return port_error("watch", e);
                }
            },
            _ = moved.changed() => {
                return PortError::new(ErrorKind::Unreachable, "etcd watch: the connection moved to another endpoint");
            }
        }
    }
}

/// Applies one answer of the watch to the view.
fn apply(me: &Inner, cache: &Cache, resp: &WatchResponse, resume: &mut Option<Revision>) -> Result<(), PortError> {
    if resp.compact_revision() > 0 {
        *resume = None;
        let msg = format!("etcd watch: history compacted up to {}; listing again", resp.compact_revision());
        return Err(PortError::new(ErrorKind::Unreachable, msg));
    }
    if resp.canceled() {
        return Err(PortError::new(ErrorKind::Unreachable, format!("etcd watch cancelled: {}", resp.cancel_reason())));
    }
    if resp.created() {
        cache.set_live(true);
        return Ok(());
    }
    let mut entries = Vec::with_capacity(resp.events().len());
    let mut revision = None;
    for ev in resp.events() {
        let Some(kv) = ev.kv() else { continue };
        let rev = revision_from_etcd("watch", kv.mod_revision())?;
        revision = revision.max(Some(rev));
        let Some(key) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(&me.prefix)) else { continue };
        let entry = (ev.event_type() == EventType::Put).then(|| KvEntry {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            revision: rev,
            owner: (kv.lease() != 0).then(|| format!("{:x}", kv.lease())),
        });
        entries.push((key.to_owned(), entry));
    }
    let revision = match revision {
        Some(r) => r,
        // No events: a progress notification; everything up to its header is in.
        None => revision_from_etcd("watch progress", resp.header().map_or(0, |h| h.revision()))?,
    };
    cache.view.send_if_modified(|v| {
        let changed = !entries.is_empty() || revision > v.revision;
        for (key, entry) in entries.drain(..) {
            match entry {
                Some(e) => v.entries.insert(key, e),
                None => v.entries.remove(&key),
            };
        }
        v.revision = v.revision.max(revision);
        changed
    });
    *resume = Some(cache.view.borrow().revision);
    Ok(())
}

impl Inner {
    /// Opens the watch on the prefix from the revision after `from`, within retry_timeout.
    async fn open_watch(&self, from: Revision) -> Result<(WatchRequestSender, WatchResponseStream, u64), PortError> {
        let start = revision_to_etcd("watch", from.next())?;
        let opts = WatchOptions::new().with_prefix().with_start_revision(start);
        let prefix = self.prefix.clone();
        let (stream, generation) = self
            .call_on("watch", |c| async move {
                c.watch_client().max_decoding_message_size(READ_MAX_MESSAGE_BYTES).watch(prefix, Some(opts)).await
            })
            .await?;
        let (requests, responses) = stream.split();
        Ok((requests, responses, generation))
    }
}
