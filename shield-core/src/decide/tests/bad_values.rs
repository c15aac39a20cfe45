//! decide() tests: bad values in the DCS (docs/security.md).

use super::race::{probed, report, unlocked};
use super::*;

/// The `failover` key is data: a candidate named in it passes every eligibility rule a racing
/// node passes (tags, synchronous standbys, the lag limit, a probe finding no primary).
#[test]
fn a_failover_key_never_bypasses_eligibility() {
    let v = || unlocked().failover(None, Some("a"), None);
    let replica = || db_replica(1_000, 1, Some("old"));
    let none_primary = || probed(&[("b", report(1_000, false, 1))]);
    // nofailover.
    let mut st = state("a");
    st.settings.tags.nofailover = true;
    let (acts, reason, _) = run(&st, &with(obs(v(), replica()), none_primary()));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::NotAllowed)));
    // Synchronous mode, and the sync key lists only b.
    let cfg = DynamicConfig { synchronous_mode: true, ..DynamicConfig::default() };
    let mut sync = v().config(cfg.clone());
    sync.0.sync =
        Some(crate::cluster::SyncState { leader: Some(n("old")), sync_standby: vec![n("b")], revision: Revision(4) });
    let mut st = state("a");
    st.config = cfg;
    let (acts, reason, _) = run(&st, &with(obs(sync, replica()), none_primary()));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::NotSynchronous)));
    // Lagging beyond maximum_lag_on_failover (1 MiB by default).
    let far = v().status(1_000 + 2 * 1_048_576);
    let (acts, reason, _) = run(&state("a"), &with(obs(far, replica()), none_primary()));
    assert!(acts.is_empty() && matches!(reason, Reason::NotHealthiest(Ineligible::Lagging { .. })), "{reason:?}");
    // A peer still running as primary.
    let o = with(obs(v(), replica()), probed(&[("b", report(1_000, true, 1))]));
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::PrimaryAlive { peer: n("b") })));
    // A running member on a newer timeline.
    let newer = v().member("c", member(MemberRole::Replica, "running", 1_000, 2));
    let (acts, reason, _) = run(&state("a"), &with(obs(newer, replica()), none_primary()));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::PeerAhead { peer: n("c") })));
}

/// Nobody waits for a named candidate whose own key says it may not be promoted, and a leader
/// refuses a switchover to a candidate that is not a synchronous standby.
#[test]
fn an_ineligible_candidate_is_not_waited_for_nor_switched_to() {
    let mut nofailover = member(MemberRole::Replica, "running", 1_000, 1);
    nofailover.tags.nofailover = true;
    let v = unlocked().member("b", nofailover).failover(None, Some("b"), None);
    let (acts, reason, _) = run(&state("a"), &obs(v, db_replica(1_000, 1, Some("old"))));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));

    let cfg = DynamicConfig { synchronous_mode: true, ..DynamicConfig::default() };
    let mut v = ViewB::new().leader("a").replica("b", 5).replica("c", 5).status(5).config(cfg.clone());
    v.0.sync =
        Some(crate::cluster::SyncState { leader: Some(n("a")), sync_standby: vec![n("c")], revision: Revision(4) });
    let v = v.failover(Some("a"), Some("b"), None);
    let mut st = leader_state("a");
    st.config = cfg;
    let (acts, reason, _) = run(&st, &obs(v, db_primary(5, 1)));
    assert!(matches!(acts.last(), Some(Action::ClearFailover { .. })), "{acts:?}");
    assert!(matches!(&reason, Reason::FailoverRequestCleared { why } if why.contains("not a synchronous standby")));
}

/// A view whose leader key holds `value` (parsed as the backends do) at `revision`.
fn dead_key(value: &str, revision: u64) -> ViewB {
    let mut v = unlocked();
    v.0.leader = Some(Leader { name: MemberName::new(value).ok(), revision: Revision(revision), owner: None });
    v
}

/// A leader key whose value is no member name, or names no member key, is taken as an expired
/// lock once it has stood at one revision for a whole ttl: the race then replaces exactly that
/// revision. Before, nobody takes it; a new revision starts the wait again.
#[test]
fn a_dead_leader_key_is_taken_after_ttl_at_its_revision() {
    let take = |rev| Action::AcquireLeader { ttl_ms: 4_000, fence_after_ms: 3_210, replacing: Some(Revision(rev)) };
    for value in ["\u{0}garbage/", "ghost"] {
        let at = |now: MonoMillis, v: ViewB, st: &NodeState, outcomes| {
            let mut o = with(obs(v, db_replica(1_000, 1, None)), outcomes);
            o.now = now;
            run(st, &o)
        };
        let (acts, _, d) = at(NOW, dead_key(value, 5), &state("a"), vec![]);
        assert!(!acts.iter().any(|a| matches!(a, Action::AcquireLeader { .. })), "{value}: {acts:?}");
        assert_eq!(d.next.dead_leader_key, Some((Revision(5), NOW)));
        // Not yet at ttl - 1, even with a probe that finds no primary.
        let (acts, _, d1) = at(NOW.plus(3_999), dead_key(value, 5), &d.next, probed(&[]));
        assert!(!acts.iter().any(|a| matches!(a, Action::AcquireLeader { .. })), "{value}: {acts:?}");
        // At ttl: the race, which probes first, then replaces revision 5.
        let (acts, reason, d2) = at(NOW.plus(4_000), dead_key(value, 5), &d1.next, vec![]);
        assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers), "{value}");
        let (acts, reason, _) = at(NOW.plus(4_000), dead_key(value, 5), &d2.next, probed(&[]));
        assert_eq!((acts, reason), (vec![take(5)], Reason::AcquiringLock), "{value}");
        // The key written again (revision 6) restarts the wait.
        let (acts, _, d3) = at(NOW.plus(4_000), dead_key(value, 6), &d1.next, probed(&[]));
        assert!(!acts.iter().any(|a| matches!(a, Action::AcquireLeader { .. })), "{value}: {acts:?}");
        assert_eq!(d3.next.dead_leader_key, Some((Revision(6), NOW.plus(4_000))));
    }
    // A leader key naming a member with a key is followed, never taken, however long it stays.
    let mut st = state("a");
    st.dead_leader_key = Some((Revision(5), MonoMillis(0)));
    let live = dead_key("b", 5);
    let (acts, reason, d) = run(&st, &obs(live, db_replica(1_000, 1, Some("b"))));
    assert_eq!((acts, reason), (vec![], Reason::Following { leader: n("b") }));
    assert_eq!(d.next.dead_leader_key, None);
}

/// While a dead leader key waits out its ttl, a primary without the lock is stopped.
#[test]
fn a_primary_under_a_dead_leader_key_is_fenced() {
    let (acts, reason, _) = run(&state("a"), &obs(dead_key("\u{1}", 5), db_primary(1_000, 1)));
    assert_eq!(acts, vec![Action::StopDb { mode: StopMode::Immediate }]);
    assert_eq!(reason, Reason::PrimaryWithoutLock);
}

/// A `status` optime written while no leader held the lock and above every member's own
/// position is ignored by a node that saw the last status under a live leader; one it saw
/// under the leader, or one some member key corroborates, counts, and a node with no such
/// memory counts it as it is.
#[test]
fn an_uncorroborated_status_optime_does_not_block_failover() {
    let huge = 1u64 << 62;
    let with_status = |v: ViewB, optime: u64, rev: u64| {
        let mut v = v.status(optime);
        v.0.status_revision = Some(Revision(rev));
        v
    };
    // Seen under the live leader l: revision 20 at 1_000.
    let live =
        with_status(ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 1_000, 1)), 1_000, 20);
    let (_, _, d) = run(&state("a"), &obs(live, db_replica(1_000, 1, Some("l"))));
    assert_eq!(d.next.status_seen, Some((Revision(20), Lsn(1_000))));
    let replica = || db_replica(1_000, 1, Some("l"));
    let lagging = |r: &Reason| matches!(r, Reason::NotHealthiest(Ineligible::Lagging { .. }));
    // The leader gone, then a huge optime written at revision 21: ignored, the race goes on.
    let garbage = || with_status(ViewB::new().replica("b", 1_000), huge, 21);
    let (acts, reason, _) = run(&d.next, &obs(garbage(), replica()));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));
    // Without the memory it counts: every replica lags.
    let (_, reason, _) = run(&state("a"), &obs(garbage(), replica()));
    assert!(lagging(&reason), "{reason:?}");
    // The revision seen under the leader counts however far it is.
    let (_, reason, _) = run(&d.next, &obs(with_status(ViewB::new().replica("b", 1_000), huge, 20), replica()));
    assert!(lagging(&reason), "{reason:?}");
    // A member key at or past the value corroborates it.
    let far = 1_000 + 2 * 1_048_576;
    let v = with_status(ViewB::new().member("b", member(MemberRole::Replica, "stopped", far, 1)), far, 21);
    let (_, reason, _) = run(&d.next, &obs(v, replica()));
    assert!(lagging(&reason), "{reason:?}");
}

/// Simulator seed 61105 (pause, failovers, partitions; no watchdog): an optime that a member key
/// vouched for stays the reference after that member's key expires. Before, the node counted the
/// older optime it had seen under the leader, found itself within `maximum_lag_on_failover`,
/// and promoted 1.26 MB behind the last leader's final position.
#[test]
fn an_optime_a_member_vouched_for_stays_the_reference_when_that_member_leaves() {
    let with_status = |v: ViewB, optime: u64, rev: u64| {
        let mut v = v.status(optime);
        v.0.status_revision = Some(Revision(rev));
        v
    };
    let lagging = |r: &Reason| matches!(r, Reason::NotHealthiest(Ineligible::Lagging { .. }));
    let mine = 1_000;
    // Under the live leader l: optime 1_000 at revision 20.
    let live =
        with_status(ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", mine, 1)), mine, 20);
    let (_, _, d) = run(&state("a"), &obs(live, db_replica(mine, 1, Some("l"))));
    // l wrote its final position on release (revision 21), 1.5 MiB on; l's member key shows it.
    let last = mine + 3 * 524_288;
    let vouched = with_status(ViewB::new().member("l", member(MemberRole::Replica, "running", last, 1)), last, 21);
    let (_, reason, d) = run(&d.next, &obs(vouched, db_replica(mine, 1, Some("l"))));
    assert!(lagging(&reason), "{reason:?}");
    assert_eq!(d.next.status_seen, Some((Revision(21), Lsn(last))));
    // l's key expired: still lagging against 21's optime.
    let gone = with_status(ViewB::new().replica("b", mine), last, 21);
    let (_, reason, _) = run(&d.next, &obs(gone, db_replica(mine, 1, Some("l"))));
    assert!(lagging(&reason), "{reason:?}");
}
