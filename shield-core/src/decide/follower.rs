//! Someone else holds the leader key: follow it, rewinding or re-cloning when timelines diverged.

use crate::action::{Action, DbTask, StartAs};
use crate::cluster::ClusterView;
use crate::config::RewindPolicy;
use crate::decide::Ctx;
use crate::observation::DbProcess;
use crate::reason::Reason;
use crate::types::MemberName;

/// Follow `leader`.
pub(super) fn follow(cx: &mut Ctx<'_>, view: &ClusterView, leader: &MemberName) -> Reason {
    cx.st.yielding_since = None;
    // We held the lease until now: a database whose status is unknown may still be our primary.
    let was_leader = cx.st.lease.take().is_some() && cx.obs.db.process == DbProcess::Unknown;
    cx.st.lost_paused_leader = None;
    cx.st.paused_leader = view.members.get(leader).filter(|m| m.data.pause).map(|_| leader.clone());
    let db = &cx.obs.db;
    if db.is_running_primary() || was_leader || db.busy.as_ref().is_some_and(|t| matches!(t, DbTask::Promote { .. })) {
        if cx.paused() {
            return Reason::Paused { detail: format!("running as primary while {leader} holds the lock") };
        }
        cx.fence();
        return Reason::AnotherLeader { leader: leader.clone() };
    }
    if cx.st.watchdog_armed {
        cx.push(Action::DisarmWatchdog);
        cx.st.watchdog_armed = false;
    }
    let upstream = upstream_for(cx, view, leader);
    if cx.obs.db.busy.is_some() {
        return Reason::Busy;
    }
    if cx.obs.db.is_running_replica() {
        cx.st.rejoin_after_demote = false;
    }
    // In pause nothing is started or rewound, except the old leader of a switchover, which
    // comes back as a replica of the new one (Patroni's graceful demotion).
    if cx.paused() && !cx.st.rejoin_after_demote {
        return paused_follow(cx, upstream);
    }
    if cx.obs.db.process == DbProcess::Unknown {
        // Its timeline and position are the last ones read: nothing to rewind or restart on.
        return Reason::Following { leader: leader.clone() };
    }
    if diverged(cx, view, leader) {
        return diverged_action(cx, view, leader);
    }
    match cx.obs.db.process {
        DbProcess::Stopped | DbProcess::Crashed => {
            cx.push(Action::RunDbTask { task: DbTask::Start(StartAs::Replica { upstream: Some(upstream) }) });
            Reason::StartingReplica { leader: Some(leader.clone()) }
        }
        DbProcess::Running { .. } if cx.obs.db.upstream.as_ref() != Some(&upstream) => {
            cx.st.not_streaming_since = None;
            cx.push(Action::RunDbTask { task: DbTask::Follow { upstream } });
            Reason::ChangingUpstream { leader: leader.clone() }
        }
        DbProcess::Running { .. } => stalled(cx, view, leader),
        DbProcess::Starting | DbProcess::Unknown => Reason::Following { leader: leader.clone() },
    }
}

/// How long a correctly configured replica may fail to stream before Shield assumes a divergence
/// that the DCS history does not show (a lost history write, a timeline id reused) and rewinds.
/// pg_rewind finds the real fork point, and is a no-op when there is none.
const STALL_REWIND_MS: u64 = 10_000;

fn stalled(cx: &mut Ctx<'_>, view: &ClusterView, leader: &MemberName) -> Reason {
    if cx.obs.db.streaming {
        cx.st.not_streaming_since = None;
        return Reason::Following { leader: leader.clone() };
    }
    let now = cx.obs.now;
    let since = *cx.st.not_streaming_since.get_or_insert(now);
    // Saturating: a limit at u64::MAX only means never rewinding on a stall.
    let limit = STALL_REWIND_MS.max(cx.st.config.timing.ttl_ms.saturating_mul(2));
    if now.since(since) > limit && rewind_policy(cx).use_pg_rewind && !cx.st.rewind_failed {
        let reason = rewind(cx, view, leader);
        if matches!(reason, Reason::Rewinding { .. }) {
            cx.st.not_streaming_since = None;
        }
        return reason;
    }
    Reason::Following { leader: leader.clone() }
}

fn paused_follow(cx: &mut Ctx<'_>, upstream: MemberName) -> Reason {
    if cx.obs.db.is_running_replica() && cx.obs.db.upstream.as_ref() != Some(&upstream) {
        cx.push(Action::RunDbTask { task: DbTask::Follow { upstream: upstream.clone() } });
    }
    Reason::Paused { detail: format!("no action. I am a secondary, following {upstream}") }
}

/// The `replicatefrom` member if it is running, otherwise the leader.
fn upstream_for(cx: &Ctx<'_>, view: &ClusterView, leader: &MemberName) -> MemberName {
    match &cx.st.settings.tags.replicatefrom {
        Some(r) if r != cx.me() && view.members.get(r).is_some_and(|m| m.data.state == "running") => r.clone(),
        _ => leader.clone(),
    }
}

/// Whether our WAL has gone past the point where the leader's timeline forked from ours, judged
/// from the cluster's `history` (Patroni does the same through TIMELINE_HISTORY).
fn diverged(cx: &Ctx<'_>, view: &ClusterView, leader: &MemberName) -> bool {
    let (Some(mine_tl), Some(mine_lsn)) = (cx.obs.db.timeline, cx.obs.db.wal_position()) else {
        return false;
    };
    let leader_tl = view.members.get(leader).and_then(|m| m.data.timeline).unwrap_or_else(|| view.timeline());
    // A timeline at or above the leader's, as published, is no evidence: the leader's member key
    // lags its promotion by a cycle, while our WAL receiver already streams its new timeline. A
    // real fork there (two nodes promoted onto the same timeline number) shows as a replica that
    // cannot stream, and the stall rule rewinds it.
    if mine_tl >= leader_tl {
        return false;
    }
    view.history.iter().find(|h| h.timeline == mine_tl).is_some_and(|h| mine_lsn > h.lsn)
}

/// The rewind settings in force: the node file's where it sets them, else the cluster's.
fn rewind_policy(cx: &Ctx<'_>) -> RewindPolicy {
    cx.st.settings.local_pg.over(&cx.st.config.postgresql)
}

/// pg_rewind from `leader`, once it can work: not while the leader says its `pg_control` is
/// still on the old timeline (pg_rewind would refuse, "same timeline"), and not before the retry
/// time of a failed attempt.
fn rewind(cx: &mut Ctx<'_>, view: &ClusterView, leader: &MemberName) -> Reason {
    let leader_data = view.members.get(leader).map(|m| &m.data);
    if leader_data.and_then(|d| d.checkpoint_after_promote) == Some(false) {
        return Reason::WaitingForCheckpoint { leader: leader.clone() };
    }
    if cx.st.rewind_retry_at.is_some_and(|at| cx.now() < at) {
        return Reason::RewindRetryLater { leader: leader.clone() };
    }
    cx.st.rewind_retry_at = None;
    cx.push(Action::RunDbTask { task: DbTask::Rewind { source: leader.clone() } });
    Reason::Rewinding { leader: leader.clone() }
}

fn diverged_action(cx: &mut Ctx<'_>, view: &ClusterView, leader: &MemberName) -> Reason {
    let pg = rewind_policy(cx);
    if pg.use_pg_rewind && !cx.st.rewind_failed {
        return rewind(cx, view, leader);
    }
    let wipe = pg.remove_data_directory_on_diverged_timelines
        || (cx.st.rewind_failed && pg.remove_data_directory_on_rewind_failure);
    if wipe {
        cx.st.rewind_failed = false;
        cx.push(Action::RunDbTask { task: DbTask::WipeDataDir });
        return Reason::Reinitializing;
    }
    Reason::DivergedNeedsOperator { leader: leader.clone() }
}

/// The leader key holds something that is not a member name.
pub(super) fn leaderless_key(cx: &mut Ctx<'_>) -> Reason {
    cx.st.lease = None;
    if cx.obs.db.is_running_primary() && !cx.paused() {
        cx.fence();
        return Reason::PrimaryWithoutLock;
    }
    Reason::NoLeader
}
