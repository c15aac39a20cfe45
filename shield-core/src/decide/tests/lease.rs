//! decide() tests: lease bookkeeping at its boundaries (mutation testing).

use super::race::unlocked;
use super::*;

#[test]
fn a_success_whose_deadline_is_now_gives_no_lease() {
    // fence_after is 3_210 ms: an acquisition sent that long ago has no time left.
    let o = |sent_at: MonoMillis| {
        with(
            obs(ViewB::new().leader("a").replica("b", 5), db_replica(5, 1, None)),
            vec![Outcome::LeaderAcquire { sent_at, fence_after_ms: 3_210, result: Ok(true) }],
        )
    };
    let (acts, reason, d) = run(&state("a"), &o(MonoMillis(NOW.0 - 3_210)));
    assert_eq!((acts, reason, d.next.lease), (vec![renew(None)], Reason::LeaderBusy, None));
    let d = decide(&state("a"), &o(MonoMillis(NOW.0 - 3_209)));
    assert_eq!(d.next.lease, Some(LeaseHold { renewed_sent_at: MonoMillis(NOW.0 - 3_209), fence_at: NOW.plus(1) }));
    assert_eq!(d.reason, Reason::Promoting);
}

#[test]
fn an_older_renewal_never_moves_the_deadline_back() {
    let st = leader_state("a");
    let o = with(
        obs(ViewB::new().leader("a").status(5), db_primary(5, 1)),
        vec![Outcome::LeaderRenew { sent_at: MonoMillis(NOW.0 - 100), fence_after_ms: 3_210, result: Ok(()) }],
    );
    let d = decide(&st, &o);
    assert_eq!(d.next.lease, st.lease);
    assert_eq!(d.fence_at, Some(NOW.plus(3_210)));
}

#[test]
fn a_failed_renewal_is_ridden_out_until_the_deadline() {
    let failed = |o| {
        with(o, vec![Outcome::LeaderRenew { sent_at: NOW, fence_after_ms: 3_210, result: Err(ErrorKind::Unreachable) }])
    };
    let v = || ViewB::new().leader("a").status(5);
    // The deadline stands: keep renewing, keep running.
    let (acts, reason, d) = run(&leader_state("a"), &failed(obs(v(), db_primary(5, 1))));
    assert_eq!((acts, reason), (vec![renew(None)], Reason::LeaderHealthy));
    assert_eq!(d.next.lease, leader_state("a").lease);
    // A replica with no lease has nothing to fence.
    let (acts, reason, _) = run(&state("a"), &failed(obs(v(), db_replica(5, 1, None))));
    assert_eq!((acts, reason), (vec![renew(None)], Reason::LeaderBusy));
    // A primary with no lease stops at once.
    let d = decide(&state("a"), &failed(obs(v(), db_primary(5, 1))));
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::PrimaryWithoutLock));
}

#[test]
fn only_a_required_watchdog_failing_under_a_lease_gives_the_lock_back() {
    let failed = |o| with(o, vec![Outcome::WatchdogFailed { reason: "no device".into() }]);
    let mut st = leader_state("a");
    st.settings.watchdog = WatchdogMode::Automatic;
    st.watchdog_armed = true;
    let (_, reason, d) = run(&st, &failed(obs(ViewB::new().leader("a").status(5), db_primary(5, 1))));
    assert_eq!((reason, d.next.lease), (Reason::LeaderHealthy, st.lease));
    let mut st = state("a");
    st.settings.watchdog = WatchdogMode::Required;
    let (acts, _, d) = run(&st, &failed(obs(unlocked(), db_replica(5, 1, None))));
    assert!(!acts.contains(&Action::ReleaseLeader), "{acts:?}");
    assert_eq!(d.next.backoff_until, None);
}

#[test]
fn failed_tasks_are_remembered() {
    let done = |o, task, kind| with(o, vec![Outcome::DbTaskDone { task, result: Err(PortError::new(kind, "boom")) }]);
    // A failed promotion: fence, give the lock back, stay out of races for a ttl.
    let o = done(
        obs(ViewB::new().leader("a").replica("b", 5), db_replica(5, 1, None)),
        DbTask::Promote { timeline: Timeline(2) },
        ErrorKind::Io,
    );
    let d = decide(&leader_state("a"), &o);
    assert_eq!(d.actions, vec![IMMEDIATE, Action::ReleaseLeader]);
    assert!(matches!(&d.reason, Reason::TaskFailed { why } if why.starts_with("promote: ")), "{:?}", d.reason);
    assert_eq!((d.next.lease, d.next.backoff_until), (None, Some(NOW.plus(4_000))));
    // pg_rewind: a verdict on the data is remembered, an unreachable source is not.
    let v = || ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let rewind = DbTask::Rewind { source: n("l") };
    let d = decide(&state("a"), &done(obs(v(), db_replica(5, 1, None)), rewind.clone(), ErrorKind::BadData));
    assert!(d.next.rewind_failed && matches!(d.reason, Reason::TaskFailed { .. }), "{:?}", d.reason);
    let d = decide(&state("a"), &done(obs(v(), db_replica(5, 1, None)), rewind, ErrorKind::Unreachable));
    assert!(!d.next.rewind_failed && matches!(d.reason, Reason::TaskFailed { .. }), "{:?}", d.reason);
    // A failed initdb ends this node's bootstrap.
    let mut st = state("a");
    st.bootstrapping = true;
    let d = decide(&st, &done(obs(ViewB::empty(), DbStatus::empty()), DbTask::Bootstrap, ErrorKind::Io));
    assert!(!d.next.bootstrapping && matches!(d.reason, Reason::TaskFailed { .. }), "{:?}", d.reason);
}

/// A restarted daemon finds its own name in the leader key and its database writable: the lease
/// that key is under may expire any moment, so it stops the database at once and renews; the
/// crashed primary is restarted once a renewal has given it a deadline.
#[test]
fn a_restarted_holder_fences_at_once_then_restarts_under_a_new_lease() {
    let v = || ViewB::new().leader("a").replica("b", 1_000).status(1_000);
    let (acts, reason, d) = run(&state("a"), &obs(v(), db_primary(1_000, 1)));
    assert_eq!((acts, reason), (vec![renew(None), IMMEDIATE], Reason::RestartedHolderFenced));
    assert_eq!((d.next.lease, d.fence_at), (None, None));
    // Paused: Patroni's rules keep the primary.
    let (acts, _, _) = run(&state("a"), &obs(v().paused(), db_primary(1_000, 1)));
    assert!(!acts.contains(&IMMEDIATE), "{acts:?}");
    // The renewal came back: a deadline, and the crashed primary starts again.
    let o = with(
        obs(v(), db_stopped(1_000, 1, true, DbProcess::Crashed)),
        vec![Outcome::LeaderRenew { sent_at: NOW, fence_after_ms: 3_210, result: Ok(()) }],
    );
    let (acts, reason, d) = run(&d.next, &o);
    assert_eq!(reason, Reason::RestartingCrashedPrimary);
    assert_eq!(acts, vec![renew(None), task(DbTask::Start(StartAs::Primary))]);
    assert_eq!(d.fence_at, Some(NOW.plus(3_210)));
}

/// Behind the cluster timeline, only the WAL up to where our timeline ended counts for the lag
/// rule: the rest is a branch the cluster left behind.
#[test]
fn the_lag_rule_counts_an_old_timeline_only_up_to_its_end() {
    // Timeline 1 ended at 1_000; we have 5_000_000 on it, the leader wrote up to 2_000_000.
    let v = unlocked().history(&[(1, 1_000)]).status(2_000_000);
    let (_, reason, _) = run(&state("a"), &obs(v, db_replica(5_000_000, 1, None)));
    assert_eq!(
        reason,
        Reason::NotHealthiest(Ineligible::Lagging {
            mine: Lsn(1_000),
            optime: Lsn(2_000_000),
            max_lag_bytes: 1_048_576
        })
    );
    // On the cluster's timeline, our own position counts.
    let v = unlocked().history(&[(1, 1_000)]).status(2_000_000);
    let (acts, _, _) = run(&state("a"), &obs(v, db_replica(1_500_000, 2, None)));
    assert_eq!(acts, vec![Action::ProbePeers]);
}
