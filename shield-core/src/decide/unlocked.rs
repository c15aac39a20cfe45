//! Nobody holds the leader key: the leader race, with Patroni's eligibility rules.

use crate::action::{Action, DbTask, StartAs};
use crate::cluster::{ClusterView, FailoverRequest};
use crate::decide::Ctx;
use crate::observation::{DbProcess, Outcome, PeerReport};
use crate::reason::{Ineligible, Reason};
use crate::types::{Lsn, MemberName};

/// The cluster has no leader key.
pub(super) fn race(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    if cx.st.lease.is_some() && !cx.paused() {
        if super::failsafe::may_reacquire(cx) {
            // The key expired while every member kept accepting us: nobody else raced.
            acquire(cx);
            return Reason::FailsafeReacquiring;
        }
        // We believed we held the lock, but the key is gone: expired or deleted under us.
        cx.fence();
        return Reason::LeaseLost;
    }
    cx.st.lease = None;
    if cx.paused() {
        // The paused leader's key went while the cluster is still paused: whoever resumes does so
        // knowing it is gone (`shieldctl resume` refuses without a leader unless forced), so the
        // race after a resume has nothing left to wait for. A failover in pause still does.
        if let Some(l) = cx.st.paused_leader.take() {
            cx.st.lost_paused_leader = Some(l);
        }
        if let Some(r) = paused_candidate(cx, view) {
            return r;
        }
        return paused(cx);
    }
    cx.st.lost_paused_leader = None;
    if let Some(r) = super::failsafe::race_check(cx, view) {
        return r;
    }
    if cx.obs.db.busy.is_some() {
        return Reason::Busy;
    }
    if matches!(cx.obs.db.process, DbProcess::Stopped | DbProcess::Crashed) {
        // Start read-only so that we have a WAL position to compete with; promotion needs the lock.
        cx.push(Action::RunDbTask { task: DbTask::Start(StartAs::Replica { upstream: None }) });
        return Reason::StartingReplica { leader: None };
    }
    if let Some(req) = &view.failover {
        if let Some(r) = manual(cx, view, req) {
            return r;
        }
    }
    match eligibility(cx, view) {
        Err(why) => Reason::NotHealthiest(why),
        Ok(Checked::Acquire) => acquire(cx),
        Ok(Checked::NeedProbe) => {
            cx.push(Action::ProbePeers);
            cx.st.probe_requested = true;
            Reason::ProbingPeers
        }
    }
}

fn paused(cx: &mut Ctx<'_>) -> Reason {
    if cx.obs.db.is_running_primary() {
        // Pause keeps a running primary in charge: it takes the free lock.
        cx.push(cx.acquire_action());
        return Reason::Paused { detail: "acquiring the free leader lock for the running primary".into() };
    }
    if cx.st.rejoin_after_demote && cx.obs.db.busy.is_none() && matches!(cx.obs.db.process, DbProcess::Stopped) {
        // We just handed the lock over: back as a replica while the candidate takes it.
        cx.push(Action::RunDbTask { task: DbTask::Start(StartAs::Replica { upstream: None }) });
        return Reason::StartingReplica { leader: None };
    }
    Reason::Paused { detail: "cluster has no leader; no automatic promotion".into() }
}

/// In pause, the candidate named by a switchover or failover request (not a scheduled one) takes
/// the free lock, as in Patroni. `None`: we are not that candidate.
///
/// Pause switches fencing off: a primary that lost its lock keeps running. So the candidate takes
/// the lock only when a probe of the peers finds no primary, and the leader the request names
/// (or the paused leader whose key we saw go) has itself answered that it is not one: a switchover
/// whose leader has stopped and handed over goes ahead; a failover past a leader nobody can reach
/// waits (the operator resumes with `--force` once that host is known to be down).
fn paused_candidate(cx: &mut Ctx<'_>, view: &ClusterView) -> Option<Reason> {
    let req = view.failover.as_ref()?;
    if req.scheduled_at.is_some() || req.member.as_ref() != Some(cx.me()) || cx.obs.db.is_running_primary() {
        return None;
    }
    if cx.obs.db.busy.is_some() {
        return Some(Reason::Busy);
    }
    let reports = match candidate_checks(cx, view) {
        Ok(reports) => reports,
        Err(r) => return Some(r),
    };
    if let Some(l) = req.leader.as_ref().or(cx.st.lost_paused_leader.as_ref()).filter(|l| *l != cx.me()) {
        if reports.get(l).is_none_or(|r| r.is_primary) {
            return Some(Reason::NotHealthiest(Ineligible::LeaderMayBePaused { peer: l.clone() }));
        }
    }
    Some(acquire(cx))
}

fn acquire(cx: &mut Ctx<'_>) -> Reason {
    cx.push(cx.acquire_action());
    cx.wake_now = true;
    Reason::AcquiringLock
}

/// A switchover or failover request while unlocked. `None`: race normally.
///
/// The `failover` key is data anyone with write access to the DCS can write: naming a candidate
/// never bypasses the eligibility rules. The candidate takes the lock only if it passes every
/// rule a node racing on its own must pass (its tags, a running replica, the lag limit, the
/// synchronous standbys, no running member on a newer timeline) and a probe of its peers finds
/// no primary; only the comparison with the other replicas' positions is left out (the operator
/// chose). The others wait for a candidate only while its member key says it could take over.
fn manual(cx: &mut Ctx<'_>, view: &ClusterView, req: &FailoverRequest) -> Option<Reason> {
    let candidate = req.member.as_ref()?;
    if candidate == cx.me() {
        cx.st.yielding_since = None;
        return Some(candidate_checks(cx, view).map_or_else(|r| r, |_| acquire(cx)));
    }
    let candidate_alive = view.members.get(candidate).is_some_and(|m| {
        m.data.state == "running" && m.data.tags.can_promote() && listed_if_synchronous(cx, view, candidate)
    });
    let since = *cx.st.yielding_since.get_or_insert(cx.obs.now);
    if candidate_alive && cx.obs.now.since(since) < cx.st.config.timing.ttl_ms {
        return Some(Reason::WaitingForCandidate { candidate: candidate.clone() });
    }
    // The candidate did not take over in time: a normal race, without the former leader while
    // another member could take over (Patroni's rule; otherwise the former leader, often the
    // one with the most data, is the only way out).
    if req.leader.as_ref() == Some(cx.me()) && someone_else_could_take_over(cx, view, candidate) {
        return Some(Reason::NotHealthiest(Ineligible::NotTheCandidate { candidate: candidate.clone() }));
    }
    None
}

/// A running replica other than us and `candidate`, allowed to promote, and within
/// `maximum_lag_on_failover` of the leader's last position, as its member key shows.
fn someone_else_could_take_over(cx: &Ctx<'_>, view: &ClusterView, candidate: &MemberName) -> bool {
    let max_lag = cx.st.config.maximum_lag_on_failover_bytes;
    view.members.values().any(|m| {
        m.name != *cx.me()
            && m.name != *candidate
            && m.data.tags.can_promote()
            && m.data.role == crate::cluster::MemberRole::Replica
            && m.data.state == "running"
            && match (cx.optime(view), m.data.xlog_location) {
                (Some(optime), Some(theirs)) => optime.bytes_after(theirs) <= max_lag,
                (None, _) => true,
                (Some(_), None) => false,
            }
    })
}

enum Checked {
    Acquire,
    NeedProbe,
}

/// Our own rules, then the peers' answers.
fn eligibility(cx: &Ctx<'_>, view: &ClusterView) -> Result<Checked, Ineligible> {
    if cx.st.backoff_until.is_some_and(|t| cx.obs.now < t) {
        return Err(Ineligible::BackingOff);
    }
    if cx.obs.db.is_running_primary() {
        // An old primary that is still running may take the lock back, unless another node was
        // promoted meanwhile (a frozen primary waking up must not grab it).
        let mine = cx.obs.db.timeline;
        return match mine {
            Some(t) if t >= view.timeline() => Ok(Checked::Acquire),
            _ => Err(Ineligible::TimelineBehind { mine, cluster: view.timeline() }),
        };
    }
    own_checks(cx, view)?;
    let reports = probe_reports(cx);
    match reports {
        None => Ok(Checked::NeedProbe),
        Some(reports) => compare_peers(cx, reports, stepping_aside(cx, view)).map(|()| Checked::Acquire),
    }
}

/// The former leader of a switchover or failover whose candidate did not take over: it stays
/// out of the race while another member could take over ([`manual`]), so the others must not
/// wait for it either, however much WAL it has (seed 2000117: the former leader, ahead of the
/// rest, stood aside for them while they deferred to it, and nobody led).
fn stepping_aside<'a>(cx: &Ctx<'_>, view: &'a ClusterView) -> Option<&'a MemberName> {
    let req = view.failover.as_ref()?;
    let (leader, candidate) = (req.leader.as_ref()?, req.member.as_ref()?);
    (leader != cx.me() && candidate != leader).then_some(leader)
}

/// Our WAL position as far as the cluster's current timeline is concerned: on an older timeline,
/// only what we have up to where our timeline ended in `history` is shared with the newer one
/// (the rest is a branch the cluster left), so the lag rule counts from there.
pub(crate) fn effective_position(cx: &Ctx<'_>, view: &ClusterView) -> Option<Lsn> {
    let mine = cx.obs.db.wal_position()?;
    let tl = cx.obs.db.timeline.unwrap_or_default();
    let ended = view.history.iter().filter(|h| h.timeline >= tl).map(|h| h.lsn).min();
    Some(ended.map_or(mine, |e| mine.min(e)))
}

/// Whether `name` may be promoted as far as synchronous replication goes: synchronous mode off,
/// no `sync` key or an empty standby list, or `name` listed in it (as standby or as its leader).
pub(crate) fn listed_if_synchronous(cx: &Ctx<'_>, view: &ClusterView, name: &MemberName) -> bool {
    if !cx.st.config.synchronous_mode {
        return true;
    }
    view.sync.as_ref().is_none_or(|sync| {
        sync.sync_standby.is_empty() || sync.sync_standby.contains(name) || sync.leader.as_ref() == Some(name)
    })
}

/// Rules that need nothing but our own state and the snapshot. A named candidate of a
/// switchover or failover passes them too: the `failover` key never bypasses them.
fn own_checks(cx: &Ctx<'_>, view: &ClusterView) -> Result<(), Ineligible> {
    if !cx.st.settings.tags.can_promote() {
        return Err(Ineligible::NotAllowed);
    }
    if !cx.obs.db.is_running_replica() {
        return Err(Ineligible::DatabaseNotReady);
    }
    let mine = effective_position(cx, view).ok_or(Ineligible::DatabaseNotReady)?;
    let cfg = &cx.st.config;
    if !listed_if_synchronous(cx, view, cx.me()) {
        return Err(Ineligible::NotSynchronous);
    }
    if let Some(optime) = cx.optime(view) {
        if optime.bytes_after(mine) > cfg.maximum_lag_on_failover_bytes {
            return Err(Ineligible::Lagging { mine, optime, max_lag_bytes: cfg.maximum_lag_on_failover_bytes });
        }
    }
    // A promotion never reuses a timeline id (each reserves a fresh one in `history` first), so
    // being behind the cluster timeline is no bar by itself: the cluster timeline may be one that
    // a promotion reserved and never created. A member on a newer timeline wins the comparison
    // with the peers, and the lag rule above bounds what is lost, as in Patroni. A member key that
    // shows a newer timeline than ours, though, is a live server we must not race past.
    // `check_timeline` is Patroni's stricter rule: never from behind, never from an unknown one.
    let tl = cx.obs.db.timeline;
    if cfg.check_timeline && tl.is_none_or(|t| t < view.timeline()) {
        return Err(Ineligible::TimelineBehind { mine: tl, cluster: view.timeline() });
    }
    let newer = view
        .members
        .values()
        .filter(|m| m.name != *cx.me())
        .find(|m| m.data.timeline.is_some_and(|t| tl.is_none_or(|mine| t > mine)) && m.data.state == "running");
    if let Some(m) = newer {
        return Err(Ineligible::PeerAhead { peer: m.name.clone() });
    }
    Ok(())
}

type Reports = std::collections::BTreeMap<MemberName, PeerReport>;

/// A named candidate's checks before it takes the lock: every rule of [`own_checks`], then a
/// probe of its peers, which must find no primary. `Err`: what this cycle does instead.
fn candidate_checks<'a>(cx: &mut Ctx<'a>, view: &ClusterView) -> Result<&'a Reports, Reason> {
    own_checks(cx, view).map_err(Reason::NotHealthiest)?;
    let Some(reports) = probe_reports(cx) else {
        cx.push(Action::ProbePeers);
        cx.st.probe_requested = true;
        return Err(Reason::ProbingPeers);
    };
    no_primary(cx, reports).map_err(Reason::NotHealthiest)?;
    Ok(reports)
}

/// The probe found no primary: no peer answered that it runs as one, and a paused leader we
/// followed has itself answered that it does not.
fn no_primary(cx: &Ctx<'_>, reports: &Reports) -> Result<(), Ineligible> {
    if let Some(l) = &cx.st.paused_leader {
        // Only the leader's own answer that it is not a primary clears it.
        if reports.get(l).is_none_or(|r| r.is_primary) {
            return Err(Ineligible::LeaderMayBePaused { peer: l.clone() });
        }
    }
    match reports.iter().find(|(p, r)| *p != cx.me() && r.is_primary) {
        Some((peer, _)) => Err(Ineligible::PrimaryAlive { peer: peer.clone() }),
        None => Ok(()),
    }
}

fn compare_peers(cx: &Ctx<'_>, reports: &Reports, aside: Option<&MemberName>) -> Result<(), Ineligible> {
    // Positions compare as (timeline, LSN): WAL on a newer timeline is ahead of any amount of
    // WAL on an older one, which the newer timeline has forked away from.
    let mine = (cx.obs.db.timeline.unwrap_or_default(), cx.obs.db.wal_position().unwrap_or(Lsn(0)));
    let my_priority = cx.st.settings.tags.priority();
    no_primary(cx, reports)?;
    for (peer, r) in reports.iter().filter(|(p, _)| *p != cx.me()) {
        // A peer that may not promote, or stands aside, must not hold the race up however much
        // WAL it has.
        if !r.can_promote || aside == Some(peer) {
            continue;
        }
        let theirs = (r.timeline.unwrap_or_default(), r.wal_position.unwrap_or(Lsn(0)));
        if theirs > mine {
            return Err(Ineligible::PeerAhead { peer: peer.clone() });
        }
        if theirs == mine && r.priority > my_priority {
            return Err(Ineligible::PeerHigherPriority { peer: peer.clone() });
        }
    }
    Ok(())
}

/// The peers' answers to the probe the previous decision asked for, if any.
fn probe_reports<'a>(cx: &Ctx<'a>) -> Option<&'a Reports> {
    cx.obs.outcomes.iter().find_map(|o| match o {
        Outcome::PeersProbed { reports } => Some(reports),
        _ => None,
    })
}
