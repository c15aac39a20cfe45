//! Patroni's failsafe mode (`failsafe_mode`): a primary that keeps running through a DCS outage
//! while every member it knows of still accepts it as the leader.
//!
//! While the DCS works, the leader keeps the `failsafe` key at `{member: api_url}` for every
//! member it sees, itself included. While the DCS does not answer, the leader asks each member
//! of that topology (`POST /failsafe`) every cycle. The safety argument is the lease's: a round
//! every member accepted counts as a renewal the members granted instead of the DCS, sent when
//! the round was sent (`s`), so the deadline becomes `s + fence_after` as after a renewal, and
//! the fence guard, the keeper and the watchdog enforce it unchanged. A member that accepted at
//! `t >= s` stays out of the leader race until `t + ttl` ([`vouched_leader`]), which is after
//! that deadline; a member missing from the topology never races while the topology lists
//! others (it was never asked). So no other node can take the lock and promote before the old
//! primary's deadline, and a round that is not accepted by everyone extends nothing.
//!
//! Stricter than Patroni: a member accepts only the leader it last saw holding the leader key
//! ([`failsafe_answer`]); Patroni's replicas accept whoever asks.

use std::collections::BTreeMap;

use crate::action::Action;
use crate::cluster::ClusterView;
use crate::decide::Ctx;
use crate::observation::DbStatus;
use crate::reason::{Ineligible, Reason};
use crate::types::{Lsn, MemberName};

/// The answer to `POST /failsafe` from `from`: `Ok` with this node's WAL position (Patroni's
/// `lsn` header) to accept, `Err` with the text Patroni's API answers with status 500.
///
/// `failsafe_mode` off is the caller's 502 before this is asked. A node that runs a writable
/// primary refuses ("Running as a leader", Patroni's text), and so does one that sent a leader
/// acquire less than a ttl ago (`racing`: it may hold the lock already), and one whose last
/// leader seen in the DCS (the last leader key that named a member) is another or none.
///
/// The caller must make the acceptance and its own acquires exclusive: it records the
/// acceptance under the same lock under which an acquire checks for one newer than the
/// observation its decision was made on (and is then not sent), and sets `racing`.
pub fn failsafe_answer(
    last_leader: Option<&MemberName>,
    db: &DbStatus,
    from: &MemberName,
    racing: bool,
) -> Result<Option<Lsn>, String> {
    if db.is_running_primary() {
        return Err("Running as a leader".to_owned());
    }
    if racing {
        return Err("I am racing for the leader lock".to_owned());
    }
    match last_leader {
        Some(l) if l == from => Ok(db.wal_position()),
        Some(l) => Err(format!("the leader I last saw in the DCS is {l}, not {from}")),
        None => Err(format!("I saw no leader in the DCS; not accepting {from}")),
    }
}

/// The topology the leader publishes: every member with an API URL, and itself.
fn topology(cx: &Ctx<'_>, view: &ClusterView) -> BTreeMap<String, String> {
    let mut t: BTreeMap<String, String> = view
        .members
        .values()
        .filter_map(|m| m.data.api_url.as_ref().map(|u| (m.name.as_str().to_owned(), u.clone())))
        .collect();
    if let Some(u) = &cx.st.settings.api_url {
        t.insert(cx.me().as_str().to_owned(), u.clone());
    }
    t
}

/// Every cycle the DCS answered: remember the key, and as the lock holder keep it current.
pub(super) fn seen(cx: &mut Ctx<'_>, view: &ClusterView) {
    cx.st.failsafe_topology = view.failsafe_topology();
}

/// The lock holder with `failsafe_mode` on writes the topology when it changed (after the
/// renewal, which gates it).
pub(super) fn publish(cx: &mut Ctx<'_>, view: &ClusterView) {
    if !cx.st.config.failsafe_mode || cx.paused() {
        return;
    }
    let want = topology(cx, view);
    if cx.st.failsafe_topology.as_ref() != Some(&want) {
        // Until a read shows which value the DCS holds, a round asks the members of both: the
        // write may have landed (the new members may race unless asked) or not (the old ones).
        let mut ask = cx.st.failsafe_topology.clone().unwrap_or_default();
        ask.extend(want.clone());
        cx.st.failsafe_topology = Some(ask);
        cx.push(Action::WriteFailsafe { topology: want });
    }
}

/// The lock holder with the DCS unreachable: a failsafe round, when failsafe applies. `None`:
/// it does not (mode off, paused, not a running primary, or this node missing from the
/// topology, which Patroni also takes as a refusal).
pub(super) fn round(cx: &mut Ctx<'_>) -> Option<Reason> {
    let action = round_action(cx, false)?;
    cx.push(action);
    // The next round as soon as the next read has failed (it takes up to retry_timeout): each
    // accepted round must come before the deadline and the watchdog the last one set.
    cx.wake_now = true;
    Some(Reason::FailsafeConfirming { confirmed: cx.st.failsafe_confirmed_at.is_some() })
}

/// The lock holder with a view of the DCS (it may be a watch's, which a silent DCS leaves
/// looking current): a round right after the renewal, run only if that renewal gets no answer,
/// so that the first round comes within the renewal's cycle. While failsafe is active (a round
/// was accepted and no renewal since), the next cycle starts at once.
pub(super) fn after_renewal(cx: &mut Ctx<'_>) {
    let Some(round) = round_action(cx, true) else { return };
    let Some(at) = cx.actions.iter().position(|a| matches!(a, Action::RenewLeader { .. })) else { return };
    cx.actions.insert(at + 1, round);
    if cx.st.failsafe_confirmed_at.is_some() {
        cx.wake_now = true;
    }
}

fn round_action(cx: &Ctx<'_>, after_failed_renewal: bool) -> Option<Action> {
    if !applies(cx) {
        return None;
    }
    let topology = cx.st.failsafe_topology.as_ref()?;
    let members: BTreeMap<String, String> = topology
        .iter()
        .filter(|(name, _)| name.as_str() != cx.me().as_str())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let Action::RenewLeader { fence_after_ms, feed_watchdog, .. } = cx.renew_action() else {
        return None;
    };
    let ttl_ms = cx.st.config.timing.ttl_ms;
    Some(Action::ConfirmFailsafe { members, ttl_ms, fence_after_ms, feed_watchdog, after_failed_renewal })
}

/// Failsafe applies to this lock holder: mode on, not paused, a running primary listed in the
/// topology it last read.
pub(super) fn applies(cx: &Ctx<'_>) -> bool {
    cx.st.config.failsafe_mode
        && !cx.paused()
        && cx.obs.db.is_running_primary()
        && cx.st.failsafe_topology.as_ref().is_some_and(|t| t.contains_key(cx.me().as_str()))
}

/// The leader this node accepted over `POST /failsafe` less than a ttl ago, if `failsafe_mode`
/// is on: it must stay out of the leader race.
pub(super) fn vouched_leader(cx: &Ctx<'_>) -> Option<MemberName> {
    if !cx.st.config.failsafe_mode {
        return None;
    }
    let (leader, at, leader_ttl_ms) = cx.obs.failsafe_vouched.as_ref()?;
    // The leader's deadline counts from its round with its own ttl, which may still be the old
    // one after a ttl change it could not read (it is cut off from the DCS): the promise not to
    // race lasts the longer of the two.
    let promise = cx.st.config.timing.ttl_ms.max(*leader_ttl_ms);
    (leader != cx.me() && cx.obs.now.since(*at) < promise).then(|| leader.clone())
}

/// In the leader race with `failsafe_mode` on: `Some` when this node must not race.
pub(super) fn race_check(cx: &Ctx<'_>, view: &ClusterView) -> Option<Reason> {
    if !cx.st.config.failsafe_mode {
        return None;
    }
    if let Some(leader) = vouched_leader(cx) {
        return Some(Reason::FailsafeLeaderVouched { leader });
    }
    let topology = view.failsafe_topology()?;
    (!topology.is_empty() && !topology.contains_key(cx.me().as_str()))
        .then_some(Reason::NotHealthiest(Ineligible::NotInFailsafeTopology))
}

/// The DCS answers again, our key is gone, and failsafe kept this primary running until now:
/// take the free lock back instead of fencing.
pub(super) fn may_reacquire(cx: &Ctx<'_>) -> bool {
    cx.st.config.failsafe_mode && cx.st.failsafe_confirmed_at.is_some() && cx.obs.db.is_running_primary()
}
