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
//! ## Lease renewal: one keep-alive stream
//!
//! The lease is kept alive over one keep-alive stream that stays open ([`KeepAliveMode::Stream`],
//! the default), re-opened after an error; every round is bounded by `retry_timeout`, so a
//! half-dead stream fails the renewal rather than hanging it. [`KeepAliveMode::Unary`] opens a
//! fresh stream per renewal; etcd-client reads that answer itself, so its header (the store's
//! revision) is not seen and a leader renewal also checks the key with a transaction.
//!
//! ## The watched view ([`EtcdConfig::cache_view`], the daemon's setting)
//!
//! One long-lived watch per handle keeps the cluster view (module `cache`): `read()` costs no
//! request, `watch()` waits on the view, and a leader renewal checks the leader key in the view
//! once the view is complete up to the revision the keep-alive's answer carried. A member's
//! keep-alive is skipped when the lease was renewed less than a quarter of its ttl ago, and the
//! member and status keys are written only when their values change: a node costs one
//! keep-alive per cycle. Every leader-only write stays a conditional transaction, so a view that
//! lags costs a failed compare, never a second holder.
//!
//! What it does not do: it does not retry a failed call itself (the daemon's next cycle is the
//! retry).

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
use shield_core::ports::{ErrorKind, PortError};
use shield_core::Revision;
use std::sync::Arc;
use tokio::sync::Mutex;

mod cache;
mod config;
mod lease;
mod port;
#[cfg(test)]
mod tests;

pub use config::{EtcdConfig, EtcdTls, KeepAliveMode};

#[derive(Default)]
pub(crate) struct LeaseState {
    pub(crate) id: Option<i64>,
    /// The ttl `id` was granted for, in seconds.
    pub(crate) granted_ttl_s: i64,
    /// The ttl the last acquire or renewal asked for, in seconds (`None`: the configured one).
    pub(crate) want_ttl_s: Option<i64>,
    /// Leases replaced by one of another ttl, revoked once the leader key has moved off them.
    pub(crate) retired: Vec<i64>,
    /// The open keep-alive stream, with the generation of the connection it runs on.
    pub(crate) stream: Option<(LeaseKeeper, LeaseKeepAliveStream, u64)>,
    /// The member value last written and the lease it was written under.
    pub(crate) member_written: Option<(String, i64)>,
    /// When the last grant or successful keep-alive of `id` was sent.
    pub(crate) renewed_at: Option<std::time::Instant>,
    /// The `status` value last written.
    pub(crate) status_written: Option<String>,
}

/// The connection to the endpoint in use.
#[derive(Default)]
pub(crate) struct Connection {
    pub(crate) client: Option<Client>,
    /// Index into the configured endpoints of the one to use.
    pub(crate) endpoint: usize,
    /// Counts connections made, so that a failure seen on an old connection does not move a
    /// newer one on.
    pub(crate) generation: u64,
}

/// One node's handle on one cluster in etcd.
pub struct EtcdDcs {
    pub(crate) inner: Arc<Inner>,
    /// The view kept from the watch, when [`EtcdConfig::cache_view`] is on.
    pub(crate) cache: Option<Arc<cache::Cache>>,
}

/// What the handle and its watch task share.
pub(crate) struct Inner {
    pub(crate) cfg: EtcdConfig,
    pub(crate) prefix: String,
    pub(crate) conn: Mutex<Connection>,
    pub(crate) lease: Mutex<LeaseState>,
    /// Counts connections dropped after a failure, so the watch moves with them.
    pub(crate) moved: tokio::sync::watch::Sender<u64>,
    /// The store's revision after this handle's latest write.
    pub(crate) written: tokio::sync::watch::Sender<shield_core::Revision>,
}

impl Drop for EtcdDcs {
    fn drop(&mut self) {
        if let Some(c) = &self.cache {
            c.stop();
        }
    }
}

/// Maps an etcd-client error to a port error, by cause.
pub(crate) fn port_error(what: &str, e: etcd_client::Error) -> PortError {
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
pub(crate) mod tonic_code {
    pub type Code = tonic::Code;
    pub const NOT_FOUND: Code = Code::NotFound;
    pub const PERMISSION_DENIED: Code = Code::PermissionDenied;
    pub const UNAUTHENTICATED: Code = Code::Unauthenticated;
    pub const INVALID_ARGUMENT: Code = Code::InvalidArgument;
    pub const FAILED_PRECONDITION: Code = Code::FailedPrecondition;
}

/// An etcd revision as a [`Revision`]: etcd's are `int64` and never negative; a negative one is
/// refused as bad data, never wrapped.
pub(crate) fn revision_from_etcd(what: &str, rev: i64) -> Result<Revision, PortError> {
    Revision::from_etcd(rev)
        .ok_or_else(|| PortError::new(ErrorKind::BadData, format!("etcd {what}: negative revision {rev}")))
}

/// A [`Revision`] as etcd's `int64`: one above `i64::MAX` came from no etcd, and is refused.
pub(crate) fn revision_to_etcd(what: &str, rev: Revision) -> Result<i64, PortError> {
    rev.to_etcd().ok_or_else(|| {
        PortError::new(ErrorKind::Rejected, format!("etcd {what}: revision {rev} is above etcd's int64 range"))
    })
}

pub(crate) fn compare_failed(what: &str) -> PortError {
    PortError::new(ErrorKind::CompareFailed, format!("etcd {what}: the key changed since it was read"))
}

impl std::fmt::Debug for EtcdDcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDcs")
            .field("endpoints", &self.inner.cfg.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}
