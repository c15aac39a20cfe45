//! decide() tests: leader race.

use super::*;

pub(crate) fn unlocked() -> ViewB {
    ViewB::new().replica("b", 1_000).replica("c", 1_000).status(1_000)
}

#[test]
fn unlocked_cluster_probes_peers_first() {
    let (acts, reason, d) = run(&state("a"), &obs(unlocked(), db_replica(1_000, 1, Some("old"))));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));
    assert_eq!(d.wake_at, NOW);
}

pub(crate) fn report(lsn: u64, primary: bool, priority: i64) -> PeerReport {
    PeerReport {
        is_primary: primary,
        wal_position: Some(Lsn(lsn)),
        timeline: Some(Timeline(1)),
        can_promote: true,
        priority,
    }
}

pub(crate) fn probed(reports: &[(&str, PeerReport)]) -> Vec<Outcome> {
    vec![Outcome::PeersProbed { reports: reports.iter().map(|(k, r)| (n(k), r.clone())).collect() }]
}

#[test]
fn healthiest_node_acquires_the_lock() {
    let o = with(
        obs(unlocked(), db_replica(1_000, 1, None)),
        probed(&[("b", report(1_000, false, 1)), ("c", report(900, false, 5))]),
    );
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::AcquiringLock));
}

#[test]
fn peers_disqualify_in_patronis_order() {
    let cases = [
        (report(1_000, true, 1), Ineligible::PrimaryAlive { peer: n("b") }),
        (report(1_001, false, 1), Ineligible::PeerAhead { peer: n("b") }),
        (report(1_000, false, 2), Ineligible::PeerHigherPriority { peer: n("b") }),
    ];
    for (r, why) in cases {
        let o = with(obs(unlocked(), db_replica(1_000, 1, None)), probed(&[("b", r)]));
        let (acts, reason, _) = run(&state("a"), &o);
        assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(why)));
    }
}

#[test]
fn peers_behind_the_cluster_timeline_do_not_hold_the_race_up() {
    let mut stale = report(5_000, false, 1);
    stale.timeline = Some(Timeline(1));
    let v = unlocked().history(&[(1, 900)]);
    let o = with(obs(v, db_replica(1_000, 2, None)), probed(&[("b", stale)]));
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::AcquiringLock));
}

#[test]
fn own_rules_disqualify_before_probing() {
    let mut nofail = state("a");
    nofail.settings.tags.nofailover = true;
    let (acts, reason, _) = run(&nofail, &obs(unlocked(), db_replica(1_000, 1, None)));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::NotAllowed)));

    let lag = obs(unlocked().status(3_000_000), db_replica(1_000, 1, None));
    let (_, reason, _) = run(&state("a"), &lag);
    assert_eq!(
        reason,
        Reason::NotHealthiest(Ineligible::Lagging {
            mine: Lsn(1_000),
            optime: Lsn(3_000_000),
            max_lag_bytes: 1_048_576
        })
    );

    // Behind the cluster timeline: only Patroni's check_timeline refuses outright (the cluster
    // timeline may have been reserved by a promotion that never ran); otherwise the peers decide.
    let behind = obs(unlocked().history(&[(1, 500)]), db_replica(1_000, 1, None));
    let mut strict = state("a");
    strict.config.check_timeline = true;
    let (_, reason, _) = run(&strict, &behind);
    assert_eq!(
        reason,
        Reason::NotHealthiest(Ineligible::TimelineBehind { mine: Some(Timeline(1)), cluster: Timeline(2) })
    );
    let (acts, reason, _) = run(&state("a"), &behind);
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));

    let mut backoff = state("a");
    backoff.backoff_until = Some(NOW.plus(1));
    let (_, reason, _) = run(&backoff, &obs(unlocked(), db_replica(1_000, 1, None)));
    assert_eq!(reason, Reason::NotHealthiest(Ineligible::BackingOff));
}

#[test]
fn old_primary_still_running_retakes_the_lock_unless_superseded() {
    let (acts, reason, _) = run(&state("a"), &obs(unlocked(), db_primary(1_000, 1)));
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::AcquiringLock));
    let (acts, reason, _) = run(&state("a"), &obs(unlocked().history(&[(1, 900)]), db_primary(1_000, 1)));
    assert_eq!(acts, vec![]);
    assert_eq!(
        reason,
        Reason::NotHealthiest(Ineligible::TimelineBehind { mine: Some(Timeline(1)), cluster: Timeline(2) })
    );
}

#[test]
fn stopped_node_in_an_unlocked_cluster_starts_read_only() {
    let o = obs(unlocked(), db_stopped(1_000, 1, true, DbProcess::Crashed));
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!(acts, vec![task(DbTask::Start(StartAs::Replica { upstream: None }))]);
    assert_eq!(reason, Reason::StartingReplica { leader: None });
}
