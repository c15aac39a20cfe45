//! decide() tests: manual switchover and failover.

use super::race::{probed, report, unlocked};
use super::*;

#[test]
fn switchover_demotes_gracefully_then_hands_over() {
    let v = || ViewB::new().leader("a").replica("b", 5).status(5).failover(Some("a"), Some("b"), None);
    let (acts, reason, d) = run(&leader_state("a"), &obs(v(), db_primary(5, 1)));
    assert_eq!(acts, vec![renew(None), Action::StopDb { mode: StopMode::Fast }]);
    assert_eq!(reason, Reason::SwitchoverDemoting { candidate: Some(n("b")) });
    assert!(d.next.demoting);

    let stopped = db_stopped(6, 1, true, DbProcess::Stopped);
    let (acts, reason, d) = run(&d.next, &obs(v(), stopped));
    assert_eq!(acts, vec![renew(None), final_status(6), Action::ReleaseLeader]);
    assert_eq!(reason, Reason::SwitchoverDemoting { candidate: None });
    assert_eq!(d.next.lease, None);
}

#[test]
fn switchover_requests_are_validated() {
    let base = || ViewB::new().leader("a").replica("b", 5).status(5);
    let cases = [
        (base().failover(Some("x"), Some("b"), None), "leader name does not match"),
        (base().failover(Some("a"), Some("zz"), None), "candidate zz is not a healthy replica"),
        (base().failover(Some("a"), Some("b"), Some(1_767_225_600_000 - 60_000)), "is stale"),
    ];
    for (v, why) in cases {
        let (acts, reason, _) = run(&leader_state("a"), &obs(v, db_primary(5, 1)));
        assert!(matches!(acts.last(), Some(Action::ClearFailover { .. })), "{acts:?}");
        assert!(matches!(&reason, Reason::FailoverRequestCleared { why: w } if w.contains(why)), "{reason:?}");
    }
    let future = base().failover(Some("a"), Some("b"), Some(1_767_225_600_000 + 60_000));
    let (acts, reason, _) = run(&leader_state("a"), &obs(future, db_primary(5, 1)));
    assert_eq!(acts, vec![renew(None)]);
    assert!(matches!(reason, Reason::SwitchoverScheduled { .. }));
}

#[test]
fn named_candidate_takes_the_free_lock_and_others_wait() {
    let v = || unlocked().failover(Some("old"), Some("a"), None);
    // The candidate probes its peers first, and takes the lock once none answers as a primary.
    let (acts, reason, _) = run(&state("a"), &obs(v(), db_replica(1_000, 1, Some("old"))));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));
    let o = with(obs(v(), db_replica(1_000, 1, Some("old"))), probed(&[("b", report(2_000, false, 9))]));
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::AcquiringLock));
    let v = unlocked().failover(Some("old"), Some("b"), None);
    let (acts, reason, d) = run(&state("c"), &obs(v, db_replica(1_000, 1, Some("old"))));
    assert_eq!((acts, reason), (vec![], Reason::WaitingForCandidate { candidate: n("b") }));
    assert_eq!(d.next.yielding_since, Some(NOW));
}
