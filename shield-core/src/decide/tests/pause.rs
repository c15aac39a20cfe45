//! decide() tests: pause and shutdown.

use super::race::{probed, report};
use super::*;

#[test]
fn pause_keeps_the_lock_and_takes_no_automatic_action() {
    let mut st = leader_state("a");
    st.lease = Some(LeaseHold { renewed_sent_at: NOW, fence_at: NOW });
    let (acts, reason, _) = run(&st, &obs(ViewB::new().leader("a").status(5).paused(), db_primary(5, 1)));
    assert_eq!(acts, vec![renew(None)]);
    assert!(matches!(reason, Reason::Paused { .. }));
    let (acts, reason, _) =
        run(&state("b"), &obs(ViewB::new().leader("a").paused(), db_stopped(5, 1, false, DbProcess::Crashed)));
    assert_eq!(acts, vec![]);
    assert!(matches!(reason, Reason::Paused { .. }));
}

/// A paused leader whose database crashed releases the lock, and unbinds the VIP before it does:
/// once the lock is free another node may take it and bind the address.
#[test]
fn a_paused_leader_whose_database_crashed_unbinds_the_vip_before_releasing() {
    let mut st = leader_state("a");
    st.lease = Some(LeaseHold { renewed_sent_at: NOW, fence_at: NOW });
    st.settings.vip = true;
    st.vip_bound = true;
    let crashed = db_stopped(5, 1, false, DbProcess::Crashed);
    let (acts, reason, next) = run(&st, &obs(ViewB::new().leader("a").status(5).paused(), crashed));
    assert!(matches!(reason, Reason::Paused { .. }), "{reason:?}");
    let vip = acts.iter().position(|a| *a == Action::RemoveVip).expect("the VIP is removed");
    let release = acts.iter().position(|a| *a == Action::ReleaseLeader).expect("the lock is released");
    assert!(vip < release, "{acts:?}");
    assert!(!next.next.vip_bound);
}

/// The seed's transcript: in pause, a switchover to a named candidate runs as in Patroni. The
/// leader stops and hands the lock over, the candidate (once a probe shows the old leader is no
/// primary) takes it and promotes, and the old leader comes back as a replica.
#[test]
fn a_switchover_to_a_named_candidate_runs_in_pause() {
    let paused = || ViewB::new().status(5).paused().failover(Some("a"), Some("b"), None);
    let with_leader = |l: &str| paused().leader(l).replica("b", 5).replica("c", 5);
    // The leader demotes: VIP first, then a fast stop.
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    let (acts, reason, d) = run(&st, &obs(with_leader("a"), db_primary(5, 1)));
    assert_eq!(acts, vec![renew(None), Action::RemoveVip, Action::StopDb { mode: StopMode::Fast }]);
    assert_eq!(reason, Reason::SwitchoverDemoting { candidate: Some(n("b")) });
    let stopped = db_stopped(6, 1, true, DbProcess::Stopped);
    let (acts, _, d) = run(&d.next, &obs(with_leader("a"), stopped.clone()));
    assert_eq!(acts, vec![renew(None), final_status(6), Action::ReleaseLeader]);
    assert!(d.next.rejoin_after_demote && d.next.lease.is_none());
    // The old leader starts again as a replica while the lock is free, and follows the new one.
    let (acts, _, old) = run(&d.next, &obs(paused().replica("b", 5), stopped));
    assert_eq!(acts, vec![task(DbTask::Start(StartAs::Replica { upstream: None }))]);
    let (acts, _, old) = run(&old.next, &obs(with_leader("b"), db_replica(6, 1, None)));
    assert_eq!(acts, vec![task(DbTask::Follow { upstream: n("b") })]);
    assert!(!old.next.rejoin_after_demote);

    // The candidate probes first; the old leader's own answer that it is not a primary lets it
    // take the lock.
    let free = || paused().replica("a", 6).replica("b", 6);
    let (acts, reason, _) = run(&state("b"), &obs(free(), db_replica(6, 1, Some("a"))));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));
    let answered = probed(&[("a", report(6, false, 1))]);
    let (acts, reason, _) = run(&state("b"), &with(obs(free(), db_replica(6, 1, Some("a"))), answered));
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::AcquiringLock));
    // Any other peer still running as primary holds it back too, whatever the named leader says.
    let third_primary = probed(&[("a", report(6, false, 1)), ("c", report(6, true, 1))]);
    let (acts, reason, _) = run(&state("b"), &with(obs(free(), db_replica(6, 1, Some("a"))), third_primary));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::PrimaryAlive { peer: n("c") })));
    for silent_or_primary in [probed(&[]), probed(&[("a", report(6, true, 1))])] {
        let (acts, reason, _) = run(&state("b"), &with(obs(free(), db_replica(6, 1, Some("a"))), silent_or_primary));
        assert_eq!(acts, vec![]);
        assert!(matches!(reason, Reason::NotHealthiest(_)), "{reason:?}");
    }
    // Nobody else moves in pause.
    let (acts, _, _) = run(&state("c"), &obs(free(), db_replica(6, 1, Some("a"))));
    assert_eq!(acts, vec![]);
    // Holding the lock, the candidate promotes (no watchdog in pause), then keeps the VIP and
    // records the new timeline.
    let mut st = leader_state("b");
    st.settings.watchdog = WatchdogMode::Required;
    st.settings.vip = true;
    let (acts, reason, d) = run(&st, &obs(with_leader("b"), db_replica(6, 1, Some("a"))));
    assert!(matches!(acts[1], Action::ClearFailover { .. }), "{acts:?}");
    assert!(matches!(acts[2], Action::WriteHistory { .. }), "{acts:?}");
    assert_eq!(acts[3], task(DbTask::Promote { timeline: Timeline(2) }));
    assert!(!acts.contains(&Action::ArmWatchdog), "{acts:?}");
    assert_eq!(reason, Reason::Promoting);
    let promoted = ViewB::new().status(5).paused().leader("b").replica("a", 6).history(&[(1, 6)]);
    let (acts, _, _) = run(&d.next, &obs(promoted, db_primary(7, 2)));
    assert!(acts.contains(&Action::AddVip) && !acts.contains(&Action::ArmWatchdog), "{acts:?}");
}

/// A failover in pause past a paused leader whose key went (a primary cut off from the DCS keeps
/// running in pause, unfenced) waits until that leader answers that it is not a primary.
#[test]
fn a_failover_in_pause_waits_for_the_lost_leader_to_answer() {
    let following = ViewB::new().status(5).paused().leader("a").member("a", {
        let mut m = member(MemberRole::Primary, "running", 5, 1);
        m.pause = true;
        m
    });
    let (_, _, d) = run(&state("b"), &obs(following, db_replica(5, 1, Some("a"))));
    assert_eq!(d.next.paused_leader, Some(n("a")));
    let gone = || ViewB::new().status(5).paused().replica("b", 5).replica("c", 5);
    let (_, _, d) = run(&d.next, &obs(gone(), db_replica(5, 1, Some("a"))));
    assert_eq!(d.next.lost_paused_leader, Some(n("a")));
    let request = || gone().failover(None, Some("b"), None);
    let (acts, reason, _) =
        run(&d.next, &with(obs(request(), db_replica(5, 1, None)), probed(&[("c", report(5, false, 1))])));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::LeaderMayBePaused { peer: n("a") })));
    let answered = probed(&[("a", report(5, false, 1)), ("c", report(5, false, 1))]);
    let (acts, _, _) = run(&d.next, &with(obs(request(), db_replica(5, 1, None)), answered));
    assert_eq!(acts, vec![ACQUIRE]);
}

/// In pause, scheduled requests and requests without a candidate are refused as in Patroni.
#[test]
fn pause_refuses_scheduled_and_candidateless_switchovers() {
    let base = || ViewB::new().leader("a").replica("b", 5).status(5).paused();
    let cases = [
        (base().failover(Some("a"), None, None), "only to a specific candidate"),
        (base().failover(Some("a"), Some("b"), Some(1_767_225_600_000 + 1_000)), "paused state"),
    ];
    for (v, why) in cases {
        let (acts, reason, _) = run(&leader_state("a"), &obs(v, db_primary(5, 1)));
        assert!(matches!(acts.last(), Some(Action::ClearFailover { .. })), "{acts:?}");
        assert!(matches!(&reason, Reason::FailoverRequestCleared { why: w } if w.contains(why)), "{reason:?}");
    }
    // A scheduled request never makes the named candidate take a free lock in pause.
    let v = ViewB::new().status(5).paused().replica("b", 5).failover(Some("a"), Some("b"), Some(1));
    let (acts, _, _) = run(&state("b"), &obs(v, db_replica(5, 1, Some("a"))));
    assert_eq!(acts, vec![]);
}

#[test]
fn orderly_shutdown_stops_then_releases_then_exits() {
    let mut o = obs(ViewB::new().leader("a"), db_primary(5, 1));
    o.shutdown_requested = true;
    let d = decide(&leader_state("a"), &o);
    assert_eq!(d.actions, vec![renew(None), Action::StopDb { mode: StopMode::Fast }]);
    assert_eq!(d.reason, Reason::ShuttingDown);
    let mut o = obs(ViewB::new().leader("a"), db_stopped(6, 1, true, DbProcess::Stopped));
    o.shutdown_requested = true;
    let d = decide(&d.next, &o);
    assert_eq!(d.actions, vec![final_status(6), Action::ReleaseLeader, Action::Exit]);
    assert_eq!(d.reason, Reason::ShutdownComplete);
}

#[test]
fn paused_shutdown_leaves_the_database_running() {
    let mut o = obs(ViewB::new().leader("a").paused(), db_primary(5, 1));
    o.shutdown_requested = true;
    let d = decide(&leader_state("a"), &o);
    assert_eq!((d.actions, d.reason), (vec![Action::Exit], Reason::ShutdownComplete));
}

#[test]
fn reasons_read_like_patroni_log_lines() {
    assert_eq!(
        Reason::Following { leader: n("l") }.to_string(),
        "no action. I am a secondary, and following a leader (l)"
    );
    assert_eq!(
        Reason::NotHealthiest(Ineligible::PrimaryAlive { peer: n("b") }).to_string(),
        "following: not the healthiest node (primary (b) is still alive)"
    );
}

#[test]
fn operator_restart_and_reinitialize_requests() {
    let v = || ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let mut o = obs(v(), db_replica(5, 1, Some("l")));
    o.requests = vec![crate::observation::Request::Restart];
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![task(DbTask::Restart)], Reason::Restarting));

    o.requests = vec![crate::observation::Request::Reinitialize];
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![task(DbTask::WipeDataDir)], Reason::Reinitializing));

    // The leader keeps renewing and refuses to wipe itself.
    let mut o = obs(ViewB::new().leader("a").status(5), db_primary(5, 1));
    o.requests = vec![crate::observation::Request::Reinitialize];
    let (acts, reason, _) = run(&leader_state("a"), &o);
    assert_eq!(acts, vec![renew(None)]);
    assert_eq!(reason, Reason::RequestRefused { why: "I am the leader, can not reinitialize".into() });
    o.requests = vec![crate::observation::Request::Restart];
    let (acts, reason, _) = run(&leader_state("a"), &o);
    assert_eq!((acts, reason), (vec![renew(None), task(DbTask::Restart)], Reason::Restarting));

    // A stopped database cannot be restarted in place.
    let mut o = obs(v(), db_stopped(5, 1, false, DbProcess::Crashed));
    o.requests = vec![crate::observation::Request::Restart];
    let (_, reason, d) = run(&state("a"), &o);
    assert!(matches!(reason, Reason::RequestRefused { .. }), "{reason:?}");
    // (The loop starts it this cycle, so that is the task in the way.)
    assert_eq!(d.answers, vec![Err("a database task is already in progress".to_owned())]);
}

#[test]
fn every_request_gets_an_answer() {
    use crate::observation::Request;
    let v = || ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    // Two requests in one cycle: the first runs, the second would be a second task at once.
    let mut o = obs(v(), db_replica(5, 1, Some("l")));
    o.requests = vec![Request::Restart, Request::Reinitialize];
    let (acts, reason, d) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![task(DbTask::Restart)], Reason::Restarting));
    assert_eq!(d.answers, vec![Ok(()), Err("a database task is already in progress".to_owned())]);

    // A refusal followed by an accepted request: the reason names what the node does.
    let mut o = obs(ViewB::new().leader("a").status(5), db_primary(5, 1));
    o.requests = vec![Request::Reinitialize, Request::Restart];
    let (_, reason, d) = run(&leader_state("a"), &o);
    assert_eq!(reason, Reason::Restarting);
    assert_eq!(d.answers, vec![Err("I am the leader, can not reinitialize".to_owned()), Ok(())]);

    // While a task runs, a restart is refused, not lost.
    let mut o = obs(v(), db_replica(5, 1, Some("l")));
    o.db.busy = Some(DbTask::Promote { timeline: Timeline(2) });
    o.requests = vec![Request::Restart];
    let (acts, _, d) = run(&state("a"), &o);
    assert!(!acts.contains(&task(DbTask::Restart)), "{acts:?}");
    assert_eq!(d.answers, vec![Err("a database task is already in progress".to_owned())]);

    // A cycle that never reaches the requests (the DCS is unreachable) still answers them.
    let mut o = obs(v(), db_replica(5, 1, Some("l")));
    o.dcs = DcsView::Unreachable { since: NOW.plus(0) };
    o.requests = vec![Request::Restart, Request::Restart];
    let d = decide(&state("a"), &o);
    assert_eq!(d.answers.len(), 2);
    assert!(d.answers.iter().all(|a| a.as_ref().is_err_and(|e| e.starts_with("not now: "))), "{:?}", d.answers);
}
