//! decide() tests: pause and resume.

use super::race::unlocked;
use super::*;

/// A replica that followed a paused leader does not race for its lock after the resume until
/// that leader answers that it is not a primary: it may not have read the resume, and a paused
/// primary runs without a deadline.
#[test]
fn a_replica_does_not_race_past_a_leader_that_may_still_believe_it_is_paused() {
    let mut leader = member(MemberRole::Primary, "running", 1_000, 1);
    leader.pause = true;
    let v = ViewB::new().leader("b").member("b", leader);
    let (_, _, d) = run(&state("a"), &obs(v, db_replica(1_000, 1, Some("b"))));
    assert_eq!(d.next.paused_leader, Some(n("b")));
    let report = |primary| PeerReport {
        is_primary: primary,
        wal_position: Some(Lsn(900)),
        timeline: Some(Timeline(1)),
        can_promote: true,
        priority: 1,
    };
    // The key expired; b does not answer the probe.
    let o =
        with(obs(unlocked(), db_replica(1_000, 1, None)), vec![Outcome::PeersProbed { reports: Default::default() }]);
    let (acts, reason, _) = run(&d.next, &o);
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::LeaderMayBePaused { peer: n("b") })));
    // b answers that it is not a primary: the race goes on.
    let reports = [(n("b"), report(false))].into_iter().collect();
    let o = with(obs(unlocked(), db_replica(1_000, 1, None)), vec![Outcome::PeersProbed { reports }]);
    let (acts, reason, _) = run(&d.next, &o);
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::AcquiringLock));
    // The key went while the cluster was still paused: the resume that follows is made knowing
    // it (forced), so the race goes on after it.
    let (_, _, paused_gone) = run(&d.next, &obs(unlocked().paused(), db_replica(1_000, 1, None)));
    assert_eq!(paused_gone.next.paused_leader, None);
    // Seen unpaused while following it: nothing to wait for.
    let v = ViewB::new().leader("b").member("b", member(MemberRole::Primary, "running", 1_000, 1));
    let (_, _, d) = run(&d.next, &obs(v, db_replica(1_000, 1, Some("b"))));
    assert_eq!(d.next.paused_leader, None);
}

/// The former leader of a switchover whose candidate cannot take over is excluded from the race
/// only while someone else could take over (Patroni's rule).
#[test]
fn the_former_leader_races_when_nobody_else_can_take_over() {
    let lagging = member(MemberRole::Replica, "running", 10, 1);
    let v = || unlocked().status(5_000_000).failover(Some("a"), Some("b"), None).member("c", lagging.clone());
    let mut st = state("a");
    st.yielding_since = Some(MonoMillis(NOW.0 - 10_000));
    // b and c are far behind: a (the former leader, with the data) may race.
    let (acts, reason, _) = run(&st, &obs(v(), db_replica(5_000_000, 1, None)));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));
    // c is close enough: a stays out.
    let close = member(MemberRole::Replica, "running", 4_999_000, 1);
    let v = unlocked().status(5_000_000).failover(Some("a"), Some("b"), None).member("c", close);
    let (_, reason, _) = run(&st, &obs(v, db_replica(5_000_000, 1, None)));
    assert_eq!(reason, Reason::NotHealthiest(Ineligible::NotTheCandidate { candidate: n("b") }));
}
