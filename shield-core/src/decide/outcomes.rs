//! Folding the previous cycle's action outcomes into the state.

use crate::action::DbTask;
use crate::decide::{Ctx, LeaseHold, WatchdogMode};
use crate::observation::Outcome;
use crate::ports::{ErrorKind, PortError};
use crate::reason::Reason;
use crate::types::MonoMillis;

/// Applies every outcome. Returns a reason when an outcome forces fencing right away.
pub(super) fn absorb(cx: &mut Ctx<'_>) -> Option<Reason> {
    let mut fenced = None;
    for outcome in &cx.obs.outcomes {
        if let Some(r) = absorb_one(cx, outcome) {
            fenced.get_or_insert(r);
        }
    }
    if fenced.is_some() {
        // Nothing later in the same batch may hand back a lease we just gave up.
        cx.st.lease = None;
    }
    fenced
}

/// The lease a success sent at `sent_at` gives, unless its deadline has already passed. The
/// deadline comes from the action's own `fence_after_ms` (the ttl the lease was granted or
/// renewed with), never from a config read since, and never later than the current config allows.
fn hold(cx: &Ctx<'_>, sent_at: MonoMillis, fence_after_ms: u64) -> Option<LeaseHold> {
    let fence_after_ms = fence_after_ms.min(cx.st.config.timing.fence_after_ms());
    let fence_at = sent_at.plus(fence_after_ms);
    (fence_at > cx.now()).then_some(LeaseHold { renewed_sent_at: sent_at, fence_at })
}

fn absorb_one(cx: &mut Ctx<'_>, outcome: &Outcome) -> Option<Reason> {
    match outcome {
        Outcome::LeaderAcquire { sent_at, fence_after_ms, result: Ok(true) } => {
            if let Some(h) = hold(cx, *sent_at, *fence_after_ms) {
                cx.st.lease = Some(h);
            }
            cx.st.backoff_until = None;
            cx.st.yielding_since = None;
            (cx.st.failsafe_confirmed_at, cx.st.failsafe_refused_at) = (None, None);
        }
        Outcome::LeaderAcquire { .. } => {}
        Outcome::LeaderRenew { sent_at, fence_after_ms, result: Ok(()) } => {
            // Only a renewal sent after the one we counted from can move the deadline.
            if let Some(h) = hold(cx, *sent_at, *fence_after_ms) {
                if cx.st.lease.is_none_or(|old| h.renewed_sent_at >= old.renewed_sent_at) {
                    cx.st.lease = Some(h);
                }
            }
            (cx.st.failsafe_confirmed_at, cx.st.failsafe_refused_at) = (None, None);
        }
        Outcome::FailsafeConfirmed { sent_at, fence_after_ms, refused } => {
            // Every member accepted: a renewal granted by the members. Only for a lease still
            // held (a round never brings back a lease given up), and only forward in time.
            if !refused.is_empty() {
                cx.st.failsafe_refused_at = Some(*sent_at);
            }
            if let (Some(old), true) = (cx.st.lease, refused.is_empty()) {
                if let Some(h) = hold(cx, *sent_at, *fence_after_ms) {
                    if h.renewed_sent_at >= old.renewed_sent_at {
                        cx.st.lease = Some(h);
                        cx.st.failsafe_confirmed_at = Some(*sent_at);
                    }
                }
            }
        }
        Outcome::LeaderRenew { result: Err(ErrorKind::LeaseLost | ErrorKind::CompareFailed), .. } => {
            if cx.paused() {
                cx.st.lease = None;
                return None;
            }
            cx.fence();
            return Some(Reason::LeaseLost);
        }
        Outcome::LeaderRenew { result: Err(_), .. } => {
            // Unreachable or similar: the deadline stands; fence_check enforces it.
            if cx.st.lease.is_none() && cx.obs.db.is_running_primary() && !cx.paused() {
                cx.fence();
                return Some(Reason::PrimaryWithoutLock);
            }
        }
        Outcome::LeaderRelease { .. } => {
            cx.st.lease = None;
        }
        Outcome::InitializeRace { result } => {
            cx.st.bootstrapping = matches!(result, Ok(true));
        }
        Outcome::PeersProbed { .. } => {}
        Outcome::DbTaskDone { task, result } => {
            if result.is_ok() {
                super::effects::task_succeeded(cx, task);
            }
            return task_done(cx, task, result);
        }
        Outcome::Stopped { result, .. } => super::effects::stopped(cx, result),
        Outcome::DcsWriteFailed { .. } => {}
        // Believe the address is where it may still be: bound after a failed removal (so the
        // removal is retried), unbound after a failed add (so the add is retried).
        Outcome::VipFailed { adding, .. } => cx.st.vip_bound = !adding,
        Outcome::WatchdogFailed { .. } => {
            cx.st.watchdog_armed = false;
            if cx.st.settings.watchdog == WatchdogMode::Required && cx.st.lease.is_some() {
                // Promotion must not go ahead: give the lock back and back off for a ttl.
                cx.fence();
                cx.push(crate::action::Action::ReleaseLeader);
                cx.st.backoff_until = Some(cx.now().plus(cx.st.config.timing.ttl_ms));
                return Some(Reason::NotHealthiest(crate::reason::Ineligible::WatchdogRequired));
            }
        }
        // It may still be armed: counted as armed, so the disarm is tried again (effects).
        Outcome::WatchdogDisarmFailed { .. } => cx.st.watchdog_armed = true,
        // The slots are read again next cycle, and the sync asked for again.
        Outcome::SlotsSyncFailed { reason } => cx.st.slots_sync_failed = Some(reason.clone()),
        Outcome::DbReloaded { result } => super::effects::reloaded(cx, result),
        Outcome::ServiceRegistrationFailed { role, .. } => {
            if cx.st.registered_role == Some(*role) {
                cx.st.registered_role = None;
            }
        }
    }
    None
}

fn task_done(cx: &mut Ctx<'_>, task: &DbTask, result: &Result<(), PortError>) -> Option<Reason> {
    match (task, result) {
        (DbTask::Bootstrap, Err(why)) => {
            cx.st.bootstrapping = false;
            Some(Reason::TaskFailed { why: format!("bootstrap: {why}") })
        }
        (DbTask::Rewind { .. }, Err(why)) => {
            // Not reaching the leader is no verdict on the data: try again at the next timed
            // cycle (the failed task itself wakes the loop at once).
            cx.st.rewind_failed = !why.is_retryable();
            cx.st.rewind_retry_at = why.is_retryable().then(|| cx.now().plus(cx.st.config.timing.loop_wait_ms));
            Some(Reason::TaskFailed { why: format!("pg_rewind: {why}") })
        }
        (DbTask::Promote { .. }, Err(why)) => {
            // Give the lock back so a healthy node can take over, and stay out of races a while.
            cx.fence();
            cx.push(crate::action::Action::ReleaseLeader);
            cx.st.backoff_until = Some(cx.now().plus(cx.st.config.timing.ttl_ms));
            Some(Reason::TaskFailed { why: format!("promote: {why}") })
        }
        (DbTask::Stop(_), Ok(())) if cx.st.demoting => None,
        // Otherwise the situation handlers look at the database as it is now and try again.
        _ => None,
    }
}
