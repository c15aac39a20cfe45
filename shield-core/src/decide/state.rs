//! What decide() carries from one cycle to the next (`NodeState`) and the node's own settings
//! (`NodeSettings`).

use crate::action::DbRole;
use crate::cluster::Tags;
use crate::config::{DynamicConfig, LocalPg};
use crate::types::{Lsn, MemberName, MonoMillis, Revision, Timeline};
use serde::{Deserialize, Serialize};

/// How the watchdog is used (the `watchdog.mode` key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchdogMode {
    /// Never used.
    Off,
    /// Used when it can be armed; a failure is logged and ignored.
    #[default]
    Automatic,
    /// A node without a working watchdog never becomes leader.
    Required,
}

/// The node's fixed settings (from its local config file). decide() never changes them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// This member's name.
    pub name: MemberName,
    /// Its tags.
    pub tags: Tags,
    /// `postgres://host:port/postgres`, published in the member key.
    pub conn_url: Option<String>,
    /// `http://host:port/patroni`, published in the member key.
    pub api_url: Option<String>,
    /// The `bootstrap.dcs` config, written by the bootstrap winner and used until `/config` exists.
    pub bootstrap_config: DynamicConfig,
    /// The node file's `postgresql.use_pg_rewind` and `remove_data_directory_on_*`, which win
    /// over the cluster config's as in Patroni (absent from older journals: none set).
    #[serde(default)]
    pub local_pg: LocalPg,
    /// Watchdog mode.
    pub watchdog: WatchdogMode,
    /// `watchdog.safety_margin` in ms. `None` (Shield's default) derives it from the fencing
    /// deadline: see [`NodeSettings::watchdog_timeout_ms`].
    pub watchdog_safety_margin_ms: Option<u64>,
    /// A VIP is configured.
    pub vip: bool,
    /// The version string published in the member key.
    pub version: String,
    /// The node registers itself in service discovery with its role (Consul's
    /// `register_service`): decide() asks for [`Action::RegisterService`] when the role changes.
    #[serde(default)]
    pub register_service: bool,
    /// The node file's `postgresql.parameters` (a change, as one of the cluster's, asks for a
    /// reload of the PostgreSQL configuration).
    #[serde(default)]
    pub local_parameters: std::collections::BTreeMap<String, String>,
}

impl NodeSettings {
    /// Settings with defaults for everything but the name.
    pub fn new(name: MemberName) -> NodeSettings {
        NodeSettings {
            name,
            tags: Tags::default(),
            conn_url: None,
            api_url: None,
            bootstrap_config: DynamicConfig::default(),
            local_pg: LocalPg::default(),
            watchdog: WatchdogMode::Automatic,
            watchdog_safety_margin_ms: None,
            vip: false,
            version: crate::PATRONI_COMPAT_VERSION.to_owned(),
            register_service: false,
            local_parameters: Default::default(),
        }
    }
}

impl NodeSettings {
    /// Slack left between a renewal being sent and the watchdog being fed after it, when the
    /// safety margin is derived.
    pub const WATCHDOG_FEED_SLACK_MS: u64 = 500;
    /// Time allowed for a watchdog reset to take the host down.
    pub const WATCHDOG_RESET_MS: u64 = 100;

    /// The watchdog timeout: `ttl - safety_margin`, or by default `fence_after - 500 ms`, so that
    /// a watchdog fed up to about a second after a renewal was sent fires before that renewal's lease
    /// could expire. (Patroni's `ttl - 5 s` does not fit Shield's short ttl.)
    pub fn watchdog_timeout_ms(&self, timing: &crate::config::Timing) -> u64 {
        match self.watchdog_safety_margin_ms {
            Some(m) => timing.ttl_ms.saturating_sub(m),
            None => timing.fence_after_ms().saturating_sub(Self::WATCHDOG_FEED_SLACK_MS),
        }
    }
}

/// We hold the leader lock, as of the last successful acquire or renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHold {
    /// Send time of the last successful acquire or renewal.
    pub renewed_sent_at: MonoMillis,
    /// Local time by which the database must be fenced unless renewed again.
    pub fence_at: MonoMillis,
}

/// What a node remembers between cycles. Serializable, so a journal line can restore it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Fixed settings.
    pub settings: NodeSettings,
    /// The dynamic config last seen (or the bootstrap config before any was seen).
    pub config: DynamicConfig,
    /// Set while we hold the lock.
    pub lease: Option<LeaseHold>,
    /// Timeline and position we promoted from, until the history line is written.
    pub promoted_from: Option<(Timeline, Lsn)>,
    /// When the lock holder's database was found crashed.
    pub crash_since: Option<MonoMillis>,
    /// No leader race before this time.
    pub backoff_until: Option<MonoMillis>,
    /// Since when we have been yielding to a named failover candidate.
    pub yielding_since: Option<MonoMillis>,
    /// The watchdog is armed.
    pub watchdog_armed: bool,
    /// The VIP is bound (as far as we know).
    pub vip_bound: bool,
    /// We won the `initialize` race and are bootstrapping.
    pub bootstrapping: bool,
    /// A graceful demotion (switchover) is under way.
    pub demoting: bool,
    /// An orderly shutdown is under way.
    pub shutting_down: bool,
    /// pg_rewind failed; do not try again automatically.
    pub rewind_failed: bool,
    /// pg_rewind failed for a reason a retry may cure: not before this time (the next timed
    /// cycle, not at once when the failed task wakes the loop).
    #[serde(default)]
    pub rewind_retry_at: Option<MonoMillis>,
    /// Since when our running replica has not been streaming from the upstream it is set to.
    #[serde(default)]
    pub not_streaming_since: Option<MonoMillis>,
    /// The peer reports of this cycle's probe, if it was requested by the previous decision.
    #[serde(default)]
    pub probe_requested: bool,
    /// The leader we last followed, while its member key said the cluster was paused. Until it
    /// is seen unpaused, or seen not running as primary, we do not race for its lock: it may not
    /// have read the resume, and a paused primary keeps running without a deadline.
    #[serde(default)]
    pub paused_leader: Option<MemberName>,
    /// We handed the lock over in a switchover: the database, stopped for it, is started again
    /// as a replica even in pause (as Patroni's graceful demotion does), once.
    #[serde(default)]
    pub rejoin_after_demote: bool,
    /// The paused leader whose key we saw go while the cluster was still paused. A failover in
    /// pause does not promote past it until it answers that it is not a primary (in pause a
    /// primary that lost its lock is not fenced).
    #[serde(default)]
    pub lost_paused_leader: Option<MemberName>,
    /// As leader: each member slot name and when its member was last seen, kept for
    /// `member_slots_ttl` (published as `retain_slots`).
    #[serde(default)]
    pub member_slots_seen: std::collections::BTreeMap<String, MonoMillis>,
    /// A leader key that names no member (its value is no member name, or no member key has
    /// that name): its revision, and when we first saw it so at that revision. Unchanged for a
    /// whole `ttl`, it is taken as an expired lock ([`dead_leader_key`]).
    #[serde(default)]
    pub dead_leader_key: Option<(Revision, MonoMillis)>,
    /// The `status` key's revision and optime as last seen while a member with a member key
    /// held the leader key: what [`Ctx::optime`] counts a later `status` against.
    #[serde(default)]
    pub status_seen: Option<(Revision, Lsn)>,
    /// decide() has run once since the daemon started: the first cycle attaches to whatever it
    /// finds (a running database gets `on_start`; the parameters it was started with are taken
    /// as applied).
    #[serde(default)]
    pub attached: bool,
    /// A fingerprint of the PostgreSQL parameters (the cluster's and the node file's) last
    /// applied; a change asks for a reload.
    #[serde(default)]
    pub applied_parameters: Option<u64>,
    /// A reload of the PostgreSQL configuration is owed (the parameters changed, or the last
    /// reload failed); it runs when no database task does.
    #[serde(default)]
    pub reload_pending: bool,
    /// The database's role as last seen running, for the callbacks (`None` once it stopped).
    #[serde(default)]
    pub db_role: Option<DbRole>,
    /// A switchover's stop finished: the start as a replica that follows is the role change
    /// (`on_role_change`), not a plain start.
    #[serde(default)]
    pub demoted: bool,
    /// The role last published to service discovery (`None`: none yet, or the last publication
    /// failed, so it is published again).
    #[serde(default)]
    pub registered_role: Option<DbRole>,
    /// The last replication slot sync failed, and why (cleared once the slots need nothing).
    #[serde(default)]
    pub slots_sync_failed: Option<String>,
    /// The `failsafe` key (`{member: api_url}`) as last read: whom a leader asks while the DCS
    /// does not answer.
    #[serde(default)]
    pub failsafe_topology: Option<std::collections::BTreeMap<String, String>>,
    /// As leader with the DCS unreachable: the send time of the last failsafe round every member
    /// accepted (the lease counts from it). Cleared by a renewal the DCS accepted.
    #[serde(default)]
    pub failsafe_confirmed_at: Option<MonoMillis>,
    /// As leader with the DCS unreachable: the send time of the last failsafe round some member
    /// refused or did not answer. Cleared by a renewal the DCS accepted.
    #[serde(default)]
    pub failsafe_refused_at: Option<MonoMillis>,
}

impl NodeState {
    /// The state of a freshly started node.
    pub fn new(settings: NodeSettings) -> NodeState {
        NodeState {
            config: settings.bootstrap_config.clone(),
            settings,
            lease: None,
            promoted_from: None,
            crash_since: None,
            backoff_until: None,
            yielding_since: None,
            watchdog_armed: false,
            vip_bound: false,
            bootstrapping: false,
            demoting: false,
            shutting_down: false,
            rewind_failed: false,
            rewind_retry_at: None,
            not_streaming_since: None,
            probe_requested: false,
            paused_leader: None,
            rejoin_after_demote: false,
            lost_paused_leader: None,
            member_slots_seen: Default::default(),
            dead_leader_key: None,
            status_seen: None,
            attached: false,
            applied_parameters: None,
            reload_pending: false,
            db_role: None,
            demoted: false,
            registered_role: None,
            slots_sync_failed: None,
            failsafe_topology: None,
            failsafe_confirmed_at: None,
            failsafe_refused_at: None,
        }
    }

    /// This member's name.
    pub fn me(&self) -> &MemberName {
        &self.settings.name
    }
}
