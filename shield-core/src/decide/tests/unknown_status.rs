//! decide() tests: a status query that does not answer.

use super::race::{probed, report, unlocked};
use super::*;

/// The member data a decision publishes.
pub(crate) fn published(d: &Decision) -> MemberData {
    match d.actions.last() {
        Some(Action::TouchMember { data }) => (**data).clone(),
        other => panic!("no member key written: {other:?}"),
    }
}

/// One cycle later: the renewal of the previous decision came back, sent when it was decided.
fn next_cycle(d: &Decision, o: &Observation, after_ms: u64) -> Observation {
    let mut o = with(o.clone(), vec![Outcome::LeaderRenew { sent_at: o.now, fence_after_ms: 3_210, result: Ok(()) }]);
    o.now = o.now.plus(after_ms);
    assert!(d.actions.contains(&renew(None)), "{:?}", d.actions);
    o
}

#[test]
fn a_leader_whose_status_does_not_answer_keeps_the_lock_until_primary_start_timeout() {
    let v = || ViewB::new().leader("a").replica("b", 1_000).status(1_000);
    // As the driver reports it: the postmaster lives, the rest as last read.
    let unknown = DbStatus::unanswered(Some(&db_primary(1_000, 1)), Some(true));
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    let mut o = obs(v(), unknown.clone());
    let (acts, reason, mut d) = run(&st, &o);
    // Renewed, nothing else: no stop, no release, the VIP and `status` left as they are.
    assert_eq!((acts, reason), (vec![renew(None)], Reason::StatusUnknown { for_ms: 0 }));
    assert_eq!((d.next.crash_since, d.next.vip_bound), (Some(NOW), true));
    let m = published(&d);
    assert_eq!((m.role, m.state.as_str()), (MemberRole::Primary, "unknown"));
    // Every cycle up to primary_start_timeout (30 s) the same.
    for _ in 0..30 {
        o = next_cycle(&d, &o, 1_000);
        d = decide(&d.next, &o);
        assert!(d.next.lease.is_some(), "{}", d.reason);
        assert!(
            !d.actions.iter().any(|a| matches!(a, Action::StopDb { .. } | Action::ReleaseLeader)),
            "{:?}",
            d.actions
        );
    }
    assert_eq!(d.reason, Reason::StatusUnknown { for_ms: 30_000 });
    // Past it, with a replica able to take over, the database counts as hung: stopped at once,
    // under the lock, which goes once the postmaster is seen gone (as a crash past the timeout).
    o = next_cycle(&d, &o, 1);
    let after = decide(&d.next, &o);
    assert_eq!(after.reason, Reason::StatusUnknownStopping { for_ms: 30_001 });
    let tail: Vec<Action> = after.actions[..after.actions.len() - 1].to_vec();
    assert_eq!(tail, vec![renew(None), Action::RemoveVip, IMMEDIATE]);
    assert!(after.next.lease.is_some() && after.wake_at == o.now);
    let mut gone = next_cycle(&after, &o, 100);
    gone.db = DbStatus::unanswered(Some(&db_primary(1_000, 1)), Some(false));
    let (acts, reason, _) = run(&after.next, &gone);
    assert_eq!((acts, reason), (vec![renew(None), Action::ReleaseLeader], Reason::PrimaryStartTimedOut));
    // Not seen gone within a ttl (4 s) of the bound: the lock goes all the same.
    let stuck = next_cycle(&after, &o, 100);
    let mut st = after.next.clone();
    st.crash_since = Some(MonoMillis(stuck.now.0 - 34_000));
    let (acts, reason, _) = run(&st, &stuck);
    assert_eq!((acts, reason), (vec![renew(None), IMMEDIATE], Reason::StatusUnknownStopping { for_ms: 34_000 }));
    st.crash_since = Some(MonoMillis(stuck.now.0 - 34_001));
    let (acts, reason, _) = run(&st, &stuck);
    assert_eq!(
        (acts, reason),
        (vec![renew(None), IMMEDIATE, Action::ReleaseLeader], Reason::StatusUnknownTimedOut { for_ms: 34_001 })
    );
    // With nobody to take over, it keeps the lock.
    let mut alone = o.clone();
    alone.dcs = DcsView::Reachable(ViewB::new().leader("a").status(1_000).0);
    let d2 = decide(&d.next, &alone);
    assert_eq!(d2.reason, Reason::StatusUnknown { for_ms: 30_001 });
    assert!(d2.next.lease.is_some());
    // An answer ends the spell.
    let healthy = decide(&d.next, &with(obs(v(), db_primary(1_200, 1)), o.outcomes.clone()));
    assert_eq!((healthy.reason, healthy.next.crash_since), (Reason::LeaderHealthy, None));
}

#[test]
fn a_status_unknown_since_the_daemon_started_is_treated_alike() {
    // Nothing ever read (DataDir::Unknown), whatever the process field says.
    let unknown = DbStatus::unanswered(None, None);
    assert_eq!((unknown.data_dir.clone(), unknown.process), (DataDir::Unknown, DbProcess::Unknown));
    let v = || ViewB::new().leader("a").replica("b", 1_000);
    for db in [unknown.clone(), DbStatus { process: DbProcess::Crashed, ..unknown.clone() }] {
        let (acts, reason, _) = run(&leader_state("a"), &obs(v(), db));
        assert_eq!((acts, reason), (vec![renew(None)], Reason::StatusUnknown { for_ms: 0 }));
    }
    // A holder without a lease of its own (a restarted daemon) cannot tell its database is not a
    // writable primary: it stops it, as it would a running one.
    let (acts, reason, _) = run(&state("a"), &obs(v(), unknown));
    assert_eq!((acts, reason), (vec![renew(None), IMMEDIATE], Reason::RestartedHolderFenced));
}

#[test]
fn the_bound_on_an_unknown_status_is_never_shorter_than_ttl() {
    let cfg = DynamicConfig { primary_start_timeout_ms: 0, ..DynamicConfig::default() };
    assert_eq!(cfg.status_unknown_timeout_ms(), 4_000);
    let v = || ViewB::new().leader("a").replica("b", 1_000).config(cfg.clone());
    let unknown = DbStatus::unanswered(Some(&db_primary(1_000, 1)), Some(true));
    let mut st = leader_state("a");
    st.crash_since = Some(MonoMillis(NOW.0 - 4_000));
    let (_, reason, _) = run(&st, &obs(v(), unknown.clone()));
    assert_eq!(reason, Reason::StatusUnknown { for_ms: 4_000 });
    st.crash_since = Some(MonoMillis(NOW.0 - 4_001));
    let (acts, reason, _) = run(&st, &obs(v(), unknown));
    assert_eq!((acts, reason), (vec![renew(None), IMMEDIATE], Reason::StatusUnknownStopping { for_ms: 4_001 }));
    // A crash is still a crash: with the postmaster gone, the lock holder restarts it at once
    // (or, with primary_start_timeout 0, hands over at once).
    let dead = DbStatus::unanswered(Some(&db_primary(1_000, 1)), Some(false));
    assert_eq!(dead.process, DbProcess::Crashed);
    let (acts, reason, _) = run(&leader_state("a"), &obs(ViewB::new().leader("a").replica("b", 1_000), dead.clone()));
    assert_eq!(
        (acts, reason),
        (vec![renew(None), task(DbTask::Start(StartAs::Primary))], Reason::RestartingCrashedPrimary)
    );
    let (_, reason, _) = run(&leader_state("a"), &obs(v(), dead));
    assert_eq!(reason, Reason::CrashFailover);
}

#[test]
fn a_replica_whose_status_does_not_answer_neither_races_nor_promotes() {
    let unknown = DbStatus::unanswered(Some(&db_replica(1_000, 1, Some("a"))), Some(true));
    // Nobody leads, and the probe says we are the healthiest: no race all the same.
    let o = with(obs(unlocked(), unknown.clone()), probed(&[("b", report(10, false, 1))]));
    let (acts, reason, _) = run(&state("c"), &o);
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::DatabaseNotReady)));
    // Holding a lock just won: no promotion while the status is unknown.
    let (acts, reason, _) = run(&leader_state("c"), &obs(ViewB::new().leader("c").replica("b", 10), unknown.clone()));
    assert_eq!((acts, reason), (vec![renew(None)], Reason::StatusUnknown { for_ms: 0 }));
    // Following: nothing restarted or rewound on the positions last read, though they diverge.
    let diverged = DbStatus { timeline: Some(Timeline(1)), received_lsn: Some(Lsn(9_000)), ..unknown.clone() };
    let v =
        ViewB::new().leader("a").member("a", member(MemberRole::Primary, "running", 9_500, 2)).history(&[(1, 5_000)]);
    let (acts, reason, _) = run(&state("c"), &obs(v, diverged));
    assert_eq!((acts, reason), (vec![], Reason::Following { leader: n("a") }));
    // A former lock holder that finds another leader stops a database it cannot see.
    let (acts, reason, _) = run(&leader_state("c"), &obs(ViewB::new().leader("b"), unknown));
    assert_eq!((acts, reason), (vec![IMMEDIATE], Reason::AnotherLeader { leader: n("b") }));
}

#[test]
fn an_unknown_status_in_pause_and_at_shutdown() {
    let unknown = DbStatus::unanswered(Some(&db_primary(1_000, 1)), Some(true));
    // Paused: the lock stays, whatever the time (no bound applies in pause).
    let mut st = leader_state("a");
    st.crash_since = Some(MonoMillis(0));
    let (acts, reason, _) = run(&st, &obs(ViewB::new().leader("a").replica("b", 1_000).paused(), unknown.clone()));
    assert_eq!(acts, vec![renew(None)]);
    assert!(matches!(reason, Reason::Paused { .. }), "{reason}");
    // Shutdown: the database, which may be running, is stopped before the lock goes.
    let mut o = obs(ViewB::new().leader("a"), unknown);
    o.shutdown_requested = true;
    let d = decide(&leader_state("a"), &o);
    assert_eq!(
        (d.actions, d.reason),
        (vec![renew(None), Action::StopDb { mode: StopMode::Fast }], Reason::ShuttingDown)
    );
}
