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

use crate::action::{Action, StopMode};
use crate::cluster::{ClusterView, MemberData, MemberRole};
use crate::observation::{DataDir, DbProcess, DcsView, Observation};
use crate::reason::Reason;
use crate::types::{Lsn, MemberName, MonoMillis, Revision};
use serde::{Deserialize, Serialize};

mod bootstrap;
mod slots;
mod state;

mod effects;

mod failsafe;

mod follower;

mod leader;

mod outcomes;

mod unlocked;

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
        // Patroni's flag: a promoted primary whose pg_control is not yet on its new timeline
        // says so, and replicas wait with pg_rewind until it is (see `follower::rewind`).
        if db.is_running_primary() && db.checkpoint_timeline.is_some_and(|c| Some(c) < db.timeline) {
            m.checkpoint_after_promote = Some(false);
        }
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
    failsafe::seen(cx, view);
    let mut reason = situation(cx, view);
    if view.is_leader(cx.me()) && cx.st.lease.is_some() {
        failsafe::after_renewal(cx);
        failsafe::publish(cx, view);
    }
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
    // The `status` optime this node may trust from now on: one seen while a live leader held
    // the lock, or one some member key shows a position at least as far as (see `Ctx::optime`).
    // Remembered, so that the member key which vouched for it expiring later (its node cut off
    // from the DCS) does not lower the lag limit's reference and make a lagging node eligible.
    let live_leader = view.leader_name().is_some_and(|l| view.members.contains_key(l));
    if let (Some(r), Some(s)) = (view.status_revision, &view.status) {
        let vouched = view.members.values().filter_map(|m| m.data.xlog_location).max().is_some_and(|m| m >= s.optime);
        if live_leader || vouched {
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
        // A failsafe round every member accepted counts as contact, as a renewal would.
        let since = match cx.st.failsafe_confirmed_at {
            Some(c) if cx.st.config.failsafe_mode => since.max(c),
            _ => since,
        };
        let for_ms = now.since(since);
        // With failsafe, a round is tried first: the rule waits for one refused since then.
        let round_pending = failsafe::applies(cx) && cx.st.failsafe_refused_at.is_none_or(|r| r < since);
        if cx.st.lease.is_some()
            && cx.st.watchdog_armed
            && for_ms > cx.st.config.timing.retry_timeout_ms
            && !cx.paused()
            && !round_pending
        {
            cx.fence();
            return Some(Reason::DcsUnreachableFenced { for_ms });
        }
    }
    None
}

fn dcs_unreachable(cx: &mut Ctx<'_>) -> Reason {
    if cx.st.lease.is_some() {
        // With failsafe_mode, ask the members instead (a round all accept moves the deadline),
        // as Patroni does: no renewal, which would take retry_timeout to fail while the
        // deadline and the watchdog wait for the next round; the next cycle's read finds the
        // DCS back. Otherwise keep trying to renew until the fencing deadline or retry_timeout,
        // whichever is first.
        if let Some(r) = failsafe::round(cx) {
            return r;
        }
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

pub use failsafe::failsafe_answer;
pub use slots::slot_name;
use slots::sync_slots;
pub use state::{LeaseHold, NodeSettings, NodeState, WatchdogMode};
