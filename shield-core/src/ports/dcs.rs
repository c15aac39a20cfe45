//! The DCS port, at the level of Patroni's operations on one cluster prefix.

use async_trait::async_trait;

use crate::cluster::{ClusterView, FailoverRequest, HistoryLine, MemberData, Status};
use crate::config::DynamicConfig;
use crate::ports::PortError;
use crate::types::{MemberName, Revision, SystemId};

/// The values the DCS port writes, serialised once for every backend in Patroni's formats.
pub mod encode {
    use crate::cluster::{FailoverRequest, HistoryLine, Status};
    use crate::config::DynamicConfig;
    use crate::types::SystemId;

    /// `initialize`: the system id in decimal, or `""` for the bootstrap race.
    pub fn initialize(system_id: Option<SystemId>) -> String {
        system_id.map(|s| s.to_string()).unwrap_or_default()
    }

    /// `history`: a JSON array of Patroni's history lines.
    pub fn history(lines: &[HistoryLine]) -> String {
        serde_json::Value::Array(lines.iter().map(HistoryLine::to_json).collect()).to_string()
    }

    /// `status`.
    pub fn status(status: &Status) -> String {
        status.to_json().to_string()
    }

    /// `config`: Patroni's keys in seconds, and every key kept in [`DynamicConfig::other`].
    pub fn config(config: &DynamicConfig) -> String {
        config.to_json().to_string()
    }

    /// `failover`.
    pub fn failover(request: &FailoverRequest) -> String {
        request.to_json().to_string()
    }

    /// `failsafe`: `{member: api_url}`, as Patroni writes it.
    pub fn failsafe(topology: &std::collections::BTreeMap<String, String>) -> String {
        serde_json::to_string(topology).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// Keys with compare-and-set semantics on their revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DcsKey {
    /// `config`.
    Config,
    /// `failover`.
    Failover,
    /// `sync`.
    Sync,
}

impl DcsKey {
    /// The key relative to the cluster prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            DcsKey::Config => "config",
            DcsKey::Failover => "failover",
            DcsKey::Sync => "sync",
        }
    }
}

/// What a watch returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    /// The highest revision seen; pass it to the next call.
    pub revision: Revision,
}

/// One node's handle on one cluster in a DCS.
///
/// Every call is bounded by the backend's `retry_timeout`: an unreachable DCS is an error of kind
/// [`crate::ports::ErrorKind::Unreachable`] in bounded time, never a hang. Leader-only writes are
/// conditional, so a node that has lost the lock can never overwrite the new leader's state.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Dcs: Send + Sync {
    /// This handle's member name.
    fn member(&self) -> &MemberName;

    /// One consistent view of the whole cluster prefix, at one revision, holding every write
    /// made through this handle. A backend may answer from a view it keeps from a watch (the
    /// daemon's etcd and Consul handles do): another handle's writes then show there a moment
    /// later. Every leader-only write is conditional on what it expects, so a late view costs
    /// a failed compare and a retry, never two holders.
    async fn read(&self) -> Result<ClusterView, PortError>;

    /// Creates `initialize` only if it does not exist: empty (`None`) for the bootstrap race, or
    /// holding the system id when adopting existing data. Ok(false): it existed.
    async fn create_initialize(&self, system_id: Option<SystemId>) -> Result<bool, PortError>;

    /// Overwrites `initialize` with the system id (after the bootstrap race).
    async fn write_initialize(&self, system_id: SystemId) -> Result<(), PortError>;

    /// Creates the leader key holding our name, with our lease, only if absent. Ok(false): held.
    ///
    /// `ttl_ms` is the cluster's `ttl` as the caller's decision knows it. On success no other
    /// member can take the key earlier than `ttl_ms` after the call was sent: a backend whose
    /// lease was granted for another ttl grants a new one first.
    async fn acquire_leader(&self, ttl_ms: u64) -> Result<bool, PortError>;

    /// Replaces the leader key with our name, under our lease, only if the key is still at
    /// revision `expected`, whatever lease or session holds it. Ok(false): it changed or is gone.
    ///
    /// Only for a leader key that names no member and has not changed for a whole `ttl`, which
    /// decide() takes as an expired lock (docs/security.md, "Bad values in the DCS"): the
    /// compare on the exact revision seen means two nodes taking the same key cannot both win.
    /// The same `ttl_ms` guarantee as [`Dcs::acquire_leader`].
    async fn take_leader(&self, ttl_ms: u64, expected: Revision) -> Result<bool, PortError>;

    /// Renews our lease and checks the leader key still holds our name under our lease.
    /// [`crate::ports::ErrorKind::LeaseLost`] when it does not. The same `ttl_ms` guarantee as
    /// [`Dcs::acquire_leader`]: when the ttl changed, the key moves to a lease granted for it.
    async fn renew_leader(&self, ttl_ms: u64) -> Result<(), PortError>;

    /// Deletes the leader key only if it holds our name.
    async fn release_leader(&self) -> Result<(), PortError>;

    /// Renews our lease (or creates one) and writes `members/<me>` under it.
    async fn touch_member(&self, data: &MemberData) -> Result<(), PortError>;

    /// Deletes `members/<me>` (orderly shutdown).
    async fn delete_member(&self) -> Result<(), PortError>;

    /// Compare-and-set of `config` on its revision; `expected = None` means create only if
    /// absent. [`crate::ports::ErrorKind::CompareFailed`] on a conflict.
    async fn write_config(&self, config: &DynamicConfig, expected: Option<Revision>) -> Result<(), PortError> {
        self.write_cas(DcsKey::Config, &encode::config(config), expected).await
    }

    /// Compare-and-set of `failover` on its revision, as [`Dcs::write_config`].
    async fn write_failover(&self, request: &FailoverRequest, expected: Option<Revision>) -> Result<(), PortError> {
        self.write_cas(DcsKey::Failover, &encode::failover(request), expected).await
    }

    /// Compare-and-set of `key` with a raw value; `expected = None` means create only if absent.
    /// [`crate::ports::ErrorKind::CompareFailed`] on a conflict.
    ///
    /// The typed writes above go through it. Called directly only where the value must be
    /// written as the operator gave it: `shieldctl edit-config` and `PATCH`/`PUT /config` write
    /// the checked JSON of the whole key, which may hold keys and spellings Shield does not model
    /// (another tool's, a newer Patroni's) that a round trip through [`DynamicConfig`] would
    /// reformat.
    async fn write_cas(&self, key: DcsKey, value: &str, expected: Option<Revision>) -> Result<(), PortError>;

    /// Compare-and-delete on `key`'s revision.
    async fn delete_cas(&self, key: DcsKey, expected: Revision) -> Result<(), PortError>;

    /// Plain put of the whole `history` list.
    async fn write_history(&self, lines: &[HistoryLine]) -> Result<(), PortError>;

    /// Plain put of `failsafe`: Patroni's failsafe topology, `{member: api_url}` as a JSON object.
    async fn write_failsafe(&self, topology: &std::collections::BTreeMap<String, String>) -> Result<(), PortError>;

    /// Plain put of `status`.
    async fn write_status(&self, status: &Status) -> Result<(), PortError>;

    /// Waits until something under the prefix changes after `after`, or `timeout_ms` passes.
    /// Returns the revision seen. Backends resume from `after` after a reconnect.
    async fn watch(&self, after: Revision, timeout_ms: u64) -> Result<Watch, PortError>;

    /// Deletes the whole cluster prefix (`shieldctl remove`).
    async fn delete_cluster(&self) -> Result<(), PortError>;
}
