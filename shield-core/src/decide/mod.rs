//! [`decide`]: one node's pure HA step.
//!
//! ```text
//!            ┌──────────── Observation (now, DCS snapshot, DB status, outcomes) ───────────┐
//!            ▼                                                                             │
//!   decide(&NodeState, &Observation) ──► Decision { actions, next, reason, wake_at }        │
//!                                          │                                                │
//!                     driver runs actions in order, sleeps until wake_at or a DCS watch ───┘
//! ```
//!
//! Dispatch happens at the top: fencing first (it overrides everything), then shutdown, then
//! one handler per situation: DCS unreachable, no data ([`bootstrap`]), lock holder ([`leader`]),
//! someone else leads ([`follower`]), nobody leads ([`unlocked`]).

mod bootstrap;
mod effects;
mod follower;
mod leader;
mod outcomes;
mod unlocked;

use serde::{Deserialize, Serialize};

use crate::action::{Action, DbRole, StopMode};
use crate::cluster::{ClusterView, MemberData, MemberRole, Tags};
use crate::config::{DynamicConfig, LocalPg};
use crate::observation::{DataDir, DbProcess, DcsView, Observation};
use crate::reason::Reason;
use crate::types::{Lsn, MemberName, MonoMillis, Revision, Timeline};

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
        }
    }

    /// This member's name.
    pub fn me(&self) -> &MemberName {
        &self.settings.name
    }
}

/// The output of one [`decide`] call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Actions, to be run in this order.
    pub actions: Vec<Action>,
    /// The state to pass to the next call.
    pub next: NodeState,
    /// Why.
    pub reason: Reason,
    /// Call decide() again no later than this (earlier on a DCS watch event).
    pub wake_at: MonoMillis,
    /// While set, the driver must stop the database with [`StopMode::Immediate`] at this local
    /// time if no newer decision has moved it, even if the loop is blocked. It is never later than
    /// the point where the leader lease could expire at the DCS.
    pub fence_at: Option<MonoMillis>,
    /// One answer per [`Observation::requests`], in the same order: `Ok` when the request is
    /// acted on by this decision's actions, `Err` saying why it is refused. Every request gets
    /// an answer, so whoever asked never waits for a request that was dropped.
    pub answers: Vec<Result<(), String>>,
}

/// The working set of one decide() call.
struct Ctx<'a> {
    obs: &'a Observation,
    st: NodeState,
    actions: Vec<Action>,
    wake_now: bool,
    answers: Vec<Result<(), String>>,
    /// Set when the leader key is a dead one taken as expired: acquiring replaces it at this
    /// revision instead of creating it.
    replacing: Option<Revision>,
    /// Side effects decided while folding the outcomes (callbacks), appended at the end.
    effects: Vec<Action>,
}

impl Ctx<'_> {
    fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    fn now(&self) -> MonoMillis {
        self.obs.now
    }

    fn me(&self) -> &MemberName {
        &self.st.settings.name
    }

    fn paused(&self) -> bool {
        self.st.config.pause
    }

    /// Unbinds the VIP if this node holds it (before anything that gives up the primary role).
    fn drop_vip(&mut self) {
        if self.st.vip_bound {
            self.push(Action::RemoveVip);
            self.st.vip_bound = false;
        }
    }

    /// Stop a writable database at once and give up everything that says "primary".
    fn fence(&mut self) {
        if self.st.settings.vip {
            self.drop_vip();
        }
        if matches!(self.obs.db.process, DbProcess::Running { .. } | DbProcess::Starting | DbProcess::Unknown)
            || self.obs.db.busy.is_some()
        {
            self.push(Action::StopDb { mode: StopMode::Immediate });
        }
        if self.st.watchdog_armed {
            self.push(Action::DisarmWatchdog);
            self.st.watchdog_armed = false;
        }
        self.st.lease = None;
        self.st.promoted_from = None;
        self.st.demoting = false;
        self.wake_now = true;
    }

    /// Pushes the renewal. A renewal may land even when its answer never comes back, and from
    /// then on the lease lasts only its own ttl: when that ttl gives an earlier deadline than
    /// the one held (the cluster's ttl was lowered), the held deadline comes forward to it now,
    /// counted from this moment (no later than the renewal can be sent).
    fn push_renew(&mut self) {
        let renew = self.renew_action();
        if let (Some(hold), Action::RenewLeader { fence_after_ms, .. }) = (self.st.lease.as_mut(), &renew) {
            hold.fence_at = hold.fence_at.min(self.obs.now.plus(*fence_after_ms));
        }
        self.push(renew);
    }

    /// The renewal action, feeding the watchdog only in a way that cannot outlive the lease.
    fn renew_action(&self) -> Action {
        // Fed at `f` after a renewal sent at `s`, the watchdog resets the host at `f + timeout`,
        // which must come before the lease can expire: `s + ttl` less drift, less the time a
        // reset takes. The driver sets the timeout at each feed to what is left of that budget
        // after the round trip, in whole seconds.
        let timing = &self.st.config.timing;
        let feed = self.st.watchdog_armed.then(|| crate::action::WatchdogFeed {
            budget_ms: timing.ttl_ms.saturating_sub(timing.drift_ms()).saturating_sub(NodeSettings::WATCHDOG_RESET_MS),
            max_timeout_ms: self
                .st
                .settings
                .watchdog_safety_margin_ms
                .map_or(u64::MAX, |m| timing.ttl_ms.saturating_sub(m)),
        });
        Action::RenewLeader { ttl_ms: timing.ttl_ms, fence_after_ms: timing.fence_after_ms(), feed_watchdog: feed }
    }

    /// The acquire action, with the lease ttl and the deadline a success gives.
    fn acquire_action(&self) -> Action {
        let timing = &self.st.config.timing;
        Action::AcquireLeader {
            ttl_ms: timing.ttl_ms,
            fence_after_ms: timing.fence_after_ms(),
            replacing: self.replacing,
        }
    }

    /// The leader's last position for the lag limit: the `status` key's optime when it is
    /// corroborated, i.e. this node saw that very revision while a live leader held the lock, or
    /// some member key shows a position at least as far. An uncorroborated one was written while
    /// no leader held the lock, above every position any member reports (a huge LSN would keep
    /// every replica "lagging" for ever): it is ignored, and the position counted is the higher
    /// of the last corroborated optime this node saw and the highest member position. A node that
    /// saw no status under a live leader counts the value as it is (never less careful).
    fn optime(&self, view: &ClusterView) -> Option<Lsn> {
        let Some(status) = &view.status else { return view.optime() };
        let seen = self.st.status_seen;
        let highest_member = view.members.values().filter_map(|m| m.data.xlog_location).max();
        let corroborated = seen.is_some_and(|(r, _)| Some(r) == view.status_revision)
            || highest_member.is_some_and(|m| m >= status.optime);
        match seen {
            Some((_, remembered)) if !corroborated => Some(remembered.max(highest_member.unwrap_or_default())),
            _ => Some(status.optime),
        }
    }

    /// What we publish in `members/<me>`.
    fn member_data(&self) -> MemberData {
        let db = &self.obs.db;
        let (role, state) = match (db.process, &db.data_dir) {
            // Not known this cycle: the lock holder keeps its role.
            (DbProcess::Unknown, _) if self.st.lease.is_some() => (MemberRole::Primary, "unknown"),
            (_, DataDir::Empty | DataDir::Missing) if db.busy.is_none() => (MemberRole::Uninitialized, "stopped"),
            (DbProcess::Running { in_recovery: false }, _) => (MemberRole::Primary, "running"),
            (DbProcess::Running { in_recovery: true }, _) => (MemberRole::Replica, "running"),
            (DbProcess::Starting, _) => (MemberRole::Replica, "starting"),
            (DbProcess::Crashed, _) => (MemberRole::Replica, "crashed"),
            (DbProcess::Unknown, _) => (MemberRole::Replica, "unknown"),
            (DbProcess::Stopped, _) if db.busy.is_some() => (MemberRole::Replica, "creating replica"),
            (DbProcess::Stopped, _) => (MemberRole::Replica, "stopped"),
        };
        let s = &self.st.settings;
        let mut m = MemberData::new(role, state);
        m.conn_url = s.conn_url.clone();
        m.api_url = s.api_url.clone();
        m.tags = s.tags.clone();
        m.version = Some(s.version.clone());
        m.xlog_location = db.wal_position();
        m.timeline = db.timeline;
        m.pause = self.paused();
        if db.is_running_replica() {
            m.replication_state = Some(if db.streaming { "streaming" } else { "in archive recovery" }.to_owned());
        }
        m
    }
}

/// One pure HA step: what this node does next, and why.
///
/// Total and deterministic: no I/O, no clock, no randomness, no `Result`. The same state and
/// observation always give the same decision.
pub fn decide(state: &NodeState, obs: &Observation) -> Decision {
    // A data directory not known this cycle makes the whole status unknown, whatever the process
    // says: from here on only `DbProcess::Unknown` needs handling.
    let normalized;
    let obs = if obs.db.data_dir == DataDir::Unknown && obs.db.process != DbProcess::Unknown {
        let mut o = obs.clone();
        o.db.process = DbProcess::Unknown;
        normalized = o;
        &normalized
    } else {
        obs
    };
    let mut cx = Ctx {
        obs,
        st: state.clone(),
        actions: Vec::new(),
        wake_now: false,
        answers: Vec::new(),
        replacing: None,
        effects: Vec::new(),
    };
    cx.st.probe_requested = false;
    // The config first: last cycle's outcomes are judged under the config in force now (a lease
    // lost while the cluster was paused, learnt after a resume, must fence).
    if let DcsView::Reachable(view) = &obs.dcs {
        if let Some((cfg, _)) = &view.config {
            cx.st.config = cfg.clone();
        }
    }
    let fenced = outcomes::absorb(&mut cx);
    let reason = match fenced {
        Some(r) => r,
        None => dispatch(&mut cx),
    };
    effects::after(&mut cx);
    finish(cx, reason)
}

fn dispatch(cx: &mut Ctx<'_>) -> Reason {
    if let Some(r) = fence_check(cx) {
        return r;
    }
    if cx.obs.shutdown_requested || cx.st.shutting_down {
        return leader::shutdown(cx);
    }
    let view = match &cx.obs.dcs {
        DcsView::Unreachable { .. } => return dcs_unreachable(cx),
        DcsView::Reachable(view) => view,
    };
    let mut reason = situation(cx, view);
    // Only the lock holder holds the VIP (a node restarted with the address still bound, a lock
    // lost to another node).
    if !view.is_leader(cx.me()) {
        cx.drop_vip();
    }
    sync_slots(cx, view);
    if let Some(r) = requests(cx, view) {
        reason = r;
    }
    if !cx.st.shutting_down {
        let data = cx.member_data();
        cx.push(Action::TouchMember { data: Box::new(data) });
    }
    reason
}

fn situation(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    if view.leader_name().is_some_and(|l| view.members.contains_key(l)) {
        if let (Some(r), Some(s)) = (view.status_revision, &view.status) {
            cx.st.status_seen = Some((r, s.optime));
        }
    }
    if let Some(r) = bootstrap::check_data(cx, view) {
        return r;
    }
    if view.is_leader(cx.me()) {
        cx.st.dead_leader_key = None;
        leader::holding(cx, view)
    } else if let Some(revision) = dead_leader_key(cx, view) {
        // Taken as an expired lock: the race, with an acquire that replaces exactly this key.
        cx.replacing = Some(revision);
        unlocked::race(cx, view)
    } else if let Some(leader) = view.leader_name() {
        follower::follow(cx, view, leader)
    } else if view.leader.is_some() {
        // A leader key whose value is not a member name: nobody we can follow, nobody can take it.
        follower::leaderless_key(cx)
    } else {
        unlocked::race(cx, view)
    }
}

/// The rule for a leader key that names no member: its value is no member name (garbage), or a
/// name no member key has. No node can renew such a key (every backend's renewal compares the
/// value with the renewing node's name), so the node that held the lock before the value was
/// written stops by its fencing deadline, less than `ttl` after the write; and a live node's
/// member key is written every cycle, so a holder that still runs shows its member key within
/// `ttl`. Once the key has stood at one revision for a whole `ttl` on our clock (counted from the
/// first snapshot showing it, taken after the read returned), it is treated as an expired lock:
/// the revision to replace. Left alone, nobody could take it: a key with no lease, or one on a
/// lease its node keeps alive, never expires.
fn dead_leader_key(cx: &mut Ctx<'_>, view: &ClusterView) -> Option<Revision> {
    let Some(key) = view.leader.as_ref().filter(|k| k.name.as_ref().is_none_or(|n| !view.members.contains_key(n)))
    else {
        cx.st.dead_leader_key = None;
        return None;
    };
    let now = cx.obs.now;
    let since = match cx.st.dead_leader_key {
        Some((revision, since)) if revision == key.revision => since,
        _ => now,
    };
    cx.st.dead_leader_key = Some((key.revision, since));
    (now.since(since) >= cx.st.config.timing.ttl_ms).then_some(key.revision)
}

/// Patroni's slot name for a member: lowercase, anything but `[a-z0-9_]` replaced by `_`.
pub fn slot_name(member: &MemberName) -> String {
    member
        .as_str()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '_' })
        .collect()
}

/// Physical replication slots, as Patroni 4 keeps them (`use_slots`). With `member_slots_ttl`
/// (the default) every node that may lead keeps a slot for every other member (not `nostream`)
/// and for each name in `retain_slots`, so that after a failover the new leader already holds
/// the WAL every replica still needs; a replica moves its copies forward to the positions the
/// leader publishes in `status`. With `member_slots_ttl: 0`, as Patroni 3: on the leader one per
/// member that streams from it, on a replica one per member that cascades from it. Other
/// physical slots are dropped (a member that left, a demoted primary's), but never an active
/// one. Nothing happens while a database task runs, or with `use_slots: false`.
fn sync_slots(cx: &mut Ctx<'_>, view: &ClusterView) {
    let db = &cx.obs.db;
    let Some(existing) = &db.slots else { return };
    if !cx.st.config.postgresql.use_slots {
        // Slots are then the operator's business: none created, none dropped.
        return;
    }
    if db.busy.is_some() || cx.actions.iter().any(|a| matches!(a, Action::RunDbTask { .. } | Action::StopDb { .. })) {
        return;
    }
    let me = cx.me();
    let leader = view.leader_name();
    let am_leader = leader == Some(me) && db.is_running_primary();
    let replica = leader.is_some_and(|l| l != me) && db.is_running_replica();
    let want = if am_leader || replica { slots_wanted(cx, view, leader) } else { Default::default() };
    let have: std::collections::BTreeSet<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
    let create: Vec<String> = want.iter().filter(|w| !have.contains(w.as_str())).cloned().collect();
    let drop: Vec<String> =
        existing.iter().filter(|(n, active)| !*active && !want.contains(n)).map(|(n, _)| n.clone()).collect();
    let advance: Vec<(String, Lsn)> = existing
        .iter()
        .filter(|(n, active)| !*active && want.contains(n))
        .filter_map(|(n, _)| {
            let at = *db.slot_positions.get(n)?;
            // A replica follows the leader's published position; on any node, a member that
            // cascades from elsewhere reports its own.
            let published = if am_leader { None } else { view.status.as_ref().and_then(|s| s.slots.get(n).copied()) };
            let reported = view
                .members
                .values()
                .find(|m| slot_name(&m.name) == *n && m.data.tags.replicatefrom.is_some())
                .and_then(|m| m.data.xlog_location);
            let to = published.max(reported)?;
            (to > at).then(|| (n.clone(), to))
        })
        .collect();
    if !create.is_empty() || !drop.is_empty() || !advance.is_empty() {
        cx.push(Action::SyncSlots { create, drop, advance });
    } else {
        cx.st.slots_sync_failed = None;
    }
}

/// The slots `me` keeps when `leader` leads (see [`sync_slots`]).
fn slots_wanted(cx: &Ctx<'_>, view: &ClusterView, leader: Option<&MemberName>) -> std::collections::BTreeSet<String> {
    let me = cx.me();
    let leading = leader == Some(me);
    // Retention: every node that may lead keeps everyone's slot (a nofailover node only its
    // cascading members', as Patroni).
    let retain = cx.st.config.member_slots_ttl_ms > 0 && (leading || cx.st.settings.tags.can_promote());
    let streams_from_me = |m: &crate::cluster::Member| match &m.data.tags.replicatefrom {
        Some(r) if view.members.get(r).is_some_and(|u| u.data.state == "running") && *r != m.name => r == me,
        _ => leading,
    };
    let mut want: std::collections::BTreeSet<String> = view
        .members
        .values()
        .filter(|m| m.name != *me && !m.data.tags.nostream && (retain || streams_from_me(m)))
        .map(|m| slot_name(&m.name))
        .collect();
    if retain {
        if leading {
            want.extend(cx.st.member_slots_seen.keys().cloned());
        } else if let Some(s) = &view.status {
            want.extend(s.retain_slots.iter().cloned());
        }
    }
    want.remove(&slot_name(me));
    want
}

/// Operator requests (REST), each answered in `cx.answers`. `None`: nothing asked; carry on.
/// A request that would run while a database task runs, or that this cycle already gave the
/// database something to do, is refused: one task at a time, and the HA loop's task first.
fn requests(cx: &mut Ctx<'_>, view: &ClusterView) -> Option<Reason> {
    use crate::observation::Request;
    let mut reason = None;
    for &req in &cx.obs.requests {
        let db_action = cx.actions.iter().any(|a| matches!(a, Action::RunDbTask { .. } | Action::StopDb { .. }));
        let why = if cx.obs.db.busy.is_some() || db_action || cx.st.lease.is_none() && view.is_leader(cx.me()) {
            Some("a database task is already in progress")
        } else {
            match req {
                Request::Restart if !matches!(cx.obs.db.process, DbProcess::Running { .. }) => {
                    Some("PostgreSQL is not running")
                }
                Request::Restart => {
                    cx.push(Action::RunDbTask { task: crate::action::DbTask::Restart });
                    None
                }
                Request::Reinitialize if view.is_leader(cx.me()) => Some("I am the leader, can not reinitialize"),
                Request::Reinitialize if view.leader_name().is_none() => {
                    Some("Cluster has no leader, can not reinitialize")
                }
                Request::Reinitialize => {
                    cx.push(Action::RunDbTask { task: crate::action::DbTask::WipeDataDir });
                    None
                }
            }
        };
        let r = match why {
            Some(why) => Reason::RequestRefused { why: why.to_owned() },
            None if req == Request::Restart => Reason::Restarting,
            None => Reason::Reinitializing,
        };
        cx.answers.push(why.map_or(Ok(()), |w| Err(w.to_owned())));
        // The reason names the first request acted on, else the first refusal.
        if reason.as_ref().is_none_or(|r: &Reason| matches!(r, Reason::RequestRefused { .. }) && why.is_none()) {
            reason = Some(r);
        }
    }
    reason
}

/// Fencing rules that hold whatever else is going on. They run before everything else.
fn fence_check(cx: &mut Ctx<'_>) -> Option<Reason> {
    let now = cx.now();
    if let Some(hold) = cx.st.lease {
        if now >= hold.fence_at && !cx.paused() {
            cx.fence();
            return Some(Reason::FenceDeadlinePassed);
        }
    }
    // Without a watchdog, a lease holder rides out an unreachable DCS until the fencing deadline
    // above (the first moment its lease could expire), so a DCS stall shorter than that costs no
    // demotion. With a watchdog armed it stops after retry_timeout, as Patroni does: the watchdog,
    // fed only after renewals, would otherwise reset the whole host before that deadline. A
    // primary without a lease is stopped at once in dcs_unreachable().
    if let DcsView::Unreachable { since } = cx.obs.dcs {
        let for_ms = now.since(since);
        if cx.st.lease.is_some()
            && cx.st.watchdog_armed
            && for_ms > cx.st.config.timing.retry_timeout_ms
            && !cx.paused()
        {
            cx.fence();
            return Some(Reason::DcsUnreachableFenced { for_ms });
        }
    }
    None
}

fn dcs_unreachable(cx: &mut Ctx<'_>) -> Reason {
    if cx.st.lease.is_some() {
        // Keep trying to renew until the fencing deadline or retry_timeout, whichever is first.
        cx.push_renew();
        return Reason::RenewFailedRetrying;
    }
    if cx.obs.db.is_running_primary() && !cx.paused() {
        // A primary we do not know to hold a lease for: it must not run unchecked.
        cx.fence();
        return Reason::PrimaryWithoutLock;
    }
    Reason::DcsUnreachable
}

fn finish(cx: Ctx<'_>, reason: Reason) -> Decision {
    let now = cx.obs.now;
    let loop_wait = cx.st.config.timing.loop_wait_ms;
    let fence_at = cx.st.lease.map(|h| h.fence_at);
    let mut wake_at = if cx.wake_now || cx.st.probe_requested { now } else { now.plus(loop_wait) };
    if let Some(f) = fence_at {
        wake_at = wake_at.min(f);
    }
    // Requests this cycle never reached (fencing, shutdown, DCS unreachable) are refused with
    // the reason the node is busy with.
    let mut answers = cx.answers;
    while answers.len() < cx.obs.requests.len() {
        answers.push(Err(format!("not now: {reason}")));
    }
    Decision { actions: cx.actions, next: cx.st, reason, wake_at, fence_at, answers }
}

#[cfg(test)]
mod tests;
