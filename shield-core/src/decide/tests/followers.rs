//! decide() tests: followers.

use super::*;

#[test]
fn replica_starts_repoints_and_follows() {
    let v = || ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let (acts, reason, _) = run(&state("a"), &obs(v(), db_stopped(5, 1, false, DbProcess::Stopped)));
    assert_eq!(acts, vec![task(DbTask::Start(StartAs::Replica { upstream: Some(n("l")) }))]);
    assert_eq!(reason, Reason::StartingReplica { leader: Some(n("l")) });
    let (acts, reason, _) = run(&state("a"), &obs(v(), db_replica(5, 1, Some("old"))));
    assert_eq!(
        (acts, reason),
        (vec![task(DbTask::Follow { upstream: n("l") })], Reason::ChangingUpstream { leader: n("l") })
    );
    let (acts, reason, _) = run(&state("a"), &obs(v(), db_replica(5, 1, Some("l"))));
    assert_eq!((acts, reason), (vec![], Reason::Following { leader: n("l") }));
}

/// Leader l on timeline 2, which forked timeline 1 at 100, under `cfg`.
fn diverged_view(cfg: DynamicConfig) -> ViewB {
    ViewB::new()
        .leader("l")
        .member("l", member(MemberRole::Primary, "running", 900, 2))
        .history(&[(1, 100)])
        .config(cfg)
}

#[test]
fn diverged_replica_rewinds_recloneses_or_asks_for_help() {
    // The leader forked timeline 1 at 100; we have WAL up to 150 on timeline 1.
    let v = diverged_view;
    let old = db_stopped(150, 1, true, DbProcess::Crashed);
    let mut cfg = DynamicConfig::default();
    cfg.postgresql.use_pg_rewind = true;
    let (acts, reason, _) = run(&state("a"), &obs(v(cfg), old.clone()));
    assert_eq!((acts, reason), (vec![task(DbTask::Rewind { source: n("l") })], Reason::Rewinding { leader: n("l") }));
    let mut cfg = DynamicConfig::default();
    cfg.postgresql.remove_data_directory_on_diverged_timelines = true;
    let (acts, reason, _) = run(&state("a"), &obs(v(cfg), old.clone()));
    assert_eq!((acts, reason), (vec![task(DbTask::WipeDataDir)], Reason::Reinitializing));
    let (acts, reason, _) = run(&state("a"), &obs(v(DynamicConfig::default()), old));
    assert_eq!((acts, reason), (vec![], Reason::DivergedNeedsOperator { leader: n("l") }));
    // At or before the fork point there is nothing to rewind.
    let fine = db_stopped(100, 1, true, DbProcess::Crashed);
    let (acts, _, _) = run(&state("a"), &obs(v(DynamicConfig::default()), fine));
    assert_eq!(acts, vec![task(DbTask::Start(StartAs::Replica { upstream: Some(n("l")) }))]);
}

/// The node file's `postgresql.use_pg_rewind` and `remove_data_directory_on_*` win over the
/// cluster config's, both ways, as Patroni's effective config has them; unset, the cluster's count.
#[test]
fn local_rewind_and_wipe_settings_win_over_the_clusters() {
    use crate::config::LocalPg;
    let v = diverged_view;
    let old = db_stopped(150, 1, true, DbProcess::Crashed);
    let with = |local: LocalPg| {
        let mut st = state("a");
        st.settings.local_pg = local;
        st
    };
    // Off in the cluster, on in the node file: the data directory is wiped.
    let local = LocalPg { remove_data_directory_on_diverged_timelines: Some(true), ..LocalPg::default() };
    let (acts, reason, _) = run(&with(local), &obs(v(DynamicConfig::default()), old.clone()));
    assert_eq!((acts, reason), (vec![task(DbTask::WipeDataDir)], Reason::Reinitializing));
    // On in the cluster, off in the node file: nothing is wiped; the operator is asked.
    let mut wipe = DynamicConfig::default();
    wipe.postgresql.remove_data_directory_on_diverged_timelines = true;
    let local = LocalPg { remove_data_directory_on_diverged_timelines: Some(false), ..LocalPg::default() };
    let (acts, reason, _) = run(&with(local), &obs(v(wipe.clone()), old.clone()));
    assert_eq!((acts, reason), (vec![], Reason::DivergedNeedsOperator { leader: n("l") }));
    // Not set locally: the cluster's value counts.
    let (acts, _, _) = run(&with(LocalPg::default()), &obs(v(wipe), old.clone()));
    assert_eq!(acts, vec![task(DbTask::WipeDataDir)]);
    // use_pg_rewind from the node file: a rewind; after a failed one, the node file's
    // remove_data_directory_on_rewind_failure wipes, and without it the operator is asked.
    let local = LocalPg { use_pg_rewind: Some(true), ..LocalPg::default() };
    let (acts, _, _) = run(&with(local), &obs(v(DynamicConfig::default()), old.clone()));
    assert_eq!(acts, vec![task(DbTask::Rewind { source: n("l") })]);
    let failed = |local: LocalPg| {
        let mut st = with(local);
        st.rewind_failed = true;
        st
    };
    let local = LocalPg {
        use_pg_rewind: Some(true),
        remove_data_directory_on_rewind_failure: Some(true),
        ..LocalPg::default()
    };
    let (acts, reason, _) = run(&failed(local), &obs(v(DynamicConfig::default()), old.clone()));
    assert_eq!((acts, reason), (vec![task(DbTask::WipeDataDir)], Reason::Reinitializing));
    let mut on_failure = DynamicConfig::default();
    on_failure.postgresql.remove_data_directory_on_rewind_failure = true;
    let local = LocalPg {
        use_pg_rewind: Some(true),
        remove_data_directory_on_rewind_failure: Some(false),
        ..LocalPg::default()
    };
    let (acts, reason, _) = run(&failed(local), &obs(v(on_failure), old));
    assert_eq!((acts, reason), (vec![], Reason::DivergedNeedsOperator { leader: n("l") }));
}

#[test]
fn a_replica_ahead_of_the_leaders_published_timeline_is_not_rewound() {
    // Just after a promotion the leader's member key still says timeline 2 while our WAL
    // receiver already streams its timeline 3.
    let mut cfg = DynamicConfig::default();
    cfg.postgresql.use_pg_rewind = true;
    let v = ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 900, 2)).history(&[(1, 100)]);
    let (acts, reason, _) = run(&state("a"), &obs(v.config(cfg), db_replica(950, 3, Some("l"))));
    assert!(!acts.iter().any(|a| matches!(a, Action::RunDbTask { task: DbTask::Rewind { .. } })), "{acts:?}");
    assert_eq!(reason, Reason::Following { leader: n("l") });
}

/// pg_rewind waits while the leader says its pg_control is still on the old timeline
/// (`checkpoint_after_promote: false`, Patroni's flag), and a failed attempt that a retry may cure
/// runs again at the next timed cycle, not at once (the failed task wakes the loop at once: retried
/// there, a rewind that cannot work yet spins).
#[test]
fn rewind_waits_for_the_leaders_checkpoint_and_retries_at_the_next_cycle() {
    let mut cfg = DynamicConfig::default();
    cfg.postgresql.use_pg_rewind = true;
    let old = db_stopped(150, 1, true, DbProcess::Crashed);
    let mut fresh = member(MemberRole::Primary, "running", 900, 2);
    fresh.checkpoint_after_promote = Some(false);
    let v = ViewB::new().leader("l").member("l", fresh).history(&[(1, 100)]).config(cfg.clone());
    let (acts, reason, _) = run(&state("a"), &obs(v, old.clone()));
    assert_eq!((acts, reason), (vec![], Reason::WaitingForCheckpoint { leader: n("l") }));
    // Checkpointed: the flag is gone and the rewind runs.
    let (acts, reason, _) = run(&state("a"), &obs(diverged_view(cfg.clone()), old.clone()));
    assert_eq!((acts, reason), (vec![task(DbTask::Rewind { source: n("l") })], Reason::Rewinding { leader: n("l") }));
    // It failed, retryably: not again in the cycle the failure wakes, but a loop_wait later.
    let rewind = DbTask::Rewind { source: n("l") };
    let mut failed = obs(diverged_view(cfg.clone()), old.clone());
    failed.outcomes =
        vec![Outcome::DbTaskDone { task: rewind.clone(), result: Err(PortError::new(ErrorKind::Io, "same timeline")) }];
    let d = decide(&state("a"), &failed);
    assert!(!d.next.rewind_failed);
    let mut o = obs(diverged_view(cfg.clone()), old.clone());
    o.now = NOW.plus(10);
    let (acts, reason, d2) = run(&d.next, &o);
    assert_eq!((acts, reason), (vec![], Reason::RewindRetryLater { leader: n("l") }));
    o.now = NOW.plus(d.next.config.timing.loop_wait_ms);
    let (acts, reason, _) = run(&d2.next, &o);
    assert_eq!((acts, reason), (vec![task(rewind)], Reason::Rewinding { leader: n("l") }));
}

/// A promoted primary whose pg_control is still on the old timeline publishes
/// `checkpoint_after_promote: false`, and nothing once the checkpoint is in.
#[test]
fn a_promoted_primary_publishes_its_pending_checkpoint() {
    let published = |checkpoint_tl: u32| {
        let mut db = db_primary(900, 3);
        db.checkpoint_timeline = Some(Timeline(checkpoint_tl));
        let d = decide(&leader_state("a"), &obs(ViewB::new().leader("a").replica("b", 5), db));
        d.actions.iter().find_map(|a| match a {
            Action::TouchMember { data } => Some(data.checkpoint_after_promote),
            _ => None,
        })
    };
    assert_eq!(published(2), Some(Some(false)));
    assert_eq!(published(3), Some(None));
}
