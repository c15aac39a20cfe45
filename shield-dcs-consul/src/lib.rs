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
//!
//! ## The cached view (`cache_view`), and the requests per cycle
//!
//! With [`ConsulConfig::cache_view`] (the daemon's setting; off for shieldctl and other one-shot
//! users), the first `read` starts a background task that keeps one blocking query on the prefix
//! outstanding (`recurse&index=<last>&wait=30s`, with the configured consistency and dc) and
//! keeps the last answer: every key, its ModifyIndex and session, and the index. `read` builds
//! the view from it, `watch` waits for its index to pass the caller's, and `renew_leader` checks
//! the leader key in it after renewing the session; none of them sends a request. The task
//! holds only the HTTP client and a channel, and is aborted when the handle is dropped.
//!
//! Why it is safe:
//! - Every leader-only write stays conditional (`cas`, `acquire`, a transaction with
//!   `check-index`): a revision taken from a stale cache makes the write fail, never overwrite.
//! - The cache is trusted only while the loop is live (its last query was answered), while no
//!   request of this handle has failed since the last direct read (a frozen agent can leave a
//!   blocking query hanging until its wait), and once it shows this handle's own writes (each is
//!   remembered until the cache has it; a read waits up to 200 ms for that, then reads directly;
//!   a write with an unknown outcome makes the next read direct). Otherwise reads go to Consul.
//! - `renew_leader` always renews the session with a request, and takes only a cache that shows
//!   our name under our session as "still ours"; anything else (no key, another session, a
//!   retired session of ours) goes through the GET that decides LeaseLost as without the cache.
//!   The one difference is the few milliseconds an answer of the blocking query takes to arrive:
//!   a leader key deleted by someone else within them is reported lost one renewal later.
//!
//! Requests, at steady state: `touch_member` skips the session renewal when this handle renewed
//! it less than a quarter of the session TTL ago (the leader's `renew_leader` just did), and
//! writes the member key only when its value changed; `write_status` skips a value it already
//! wrote. With the cache, a cycle costs each node one request (the session renewal) plus its one
//! outstanding blocking query, answered (and sent again) when a key under the prefix changes, or
//! after 30 s. Measured over 10 cycles (`cached_cycles_cost_one_request_per_member`): leader 10,
//! member 10 with the cache; 30 and 20 without it (5 and 2 per cycle before these changes).

use crate::http::Raw;
use base64::Engine as _;
use rs_consul::{Consul, ConsulError};
use shield_core::ports::{ErrorKind, PortError};
use tokio::sync::Mutex;

pub mod http;

mod cache;
mod config;
mod port;
mod service;
mod session;
#[cfg(test)]
mod tests;

pub use config::{tls_client, Consistency, ConsulConfig};
pub use service::{service_name, ServiceRegistration};

#[derive(Debug, Default)]
pub(crate) struct SessionState {
    pub(crate) id: Option<String>,
    /// The Shield ttl `id` was created for, in ms.
    pub(crate) created_for_ttl_ms: u64,
    /// The Shield ttl the last acquire or renewal asked for (`None`: the configured one).
    pub(crate) want_ttl_ms: Option<u64>,
    /// Sessions replaced by one for another ttl, destroyed once the leader key has moved off.
    pub(crate) retired: Vec<String>,
    /// The agent's minimum session TTL, once learned from a refusal.
    pub(crate) min_ttl_s: Option<u64>,
    pub(crate) member_written: Option<(String, String)>,
    /// When this handle last renewed (sent the renewal) or created `id` successfully.
    pub(crate) renewed_at: Option<std::time::Instant>,
}

/// One node's handle on one cluster in Consul.
pub struct ConsulDcs {
    pub(crate) cfg: ConsulConfig,
    pub(crate) prefix: String,
    pub(crate) consul: Consul,
    pub(crate) raw: Raw,
    pub(crate) session: Mutex<SessionState>,
    /// The cached view (`cache_view`) and this handle's writes not yet seen in it.
    pub(crate) cache: cache::Cache,
    /// The `status` value this handle last wrote successfully.
    pub(crate) status_written: std::sync::Mutex<Option<String>>,
}

/// Sorts an rs-consul error by cause.
pub(crate) fn consul_error(what: &str, e: ConsulError) -> PortError {
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

pub(crate) fn compare_failed(what: &str) -> PortError {
    PortError::new(ErrorKind::CompareFailed, format!("consul {what}: the key changed since it was read"))
}

/// A value as Consul's JSON carries it (base64); one that is not base64 becomes a byte no
/// parser accepts, so it shows as an anomaly instead of failing the whole read.
pub(crate) fn decode_value(v: Option<String>) -> Vec<u8> {
    v.map(|v| base64::engine::general_purpose::STANDARD.decode(v).unwrap_or_else(|_| b"\xff".to_vec()))
        .unwrap_or_default()
}

pub(crate) fn dc_query(dc: &str) -> String {
    if dc.is_empty() {
        String::new()
    } else {
        format!("&dc={dc}")
    }
}

impl std::fmt::Debug for ConsulDcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulDcs").field("url", &self.cfg.url).field("prefix", &self.prefix).finish()
    }
}
