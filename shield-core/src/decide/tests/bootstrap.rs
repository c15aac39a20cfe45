//! decide() tests: bootstrap.

use super::*;

#[test]
fn empty_cluster_races_for_initialize() {
    let (acts, reason, d) = run(&state("a"), &obs(ViewB::empty(), DbStatus::empty()));
    assert_eq!(acts, vec![Action::RaceInitialize { system_id: None }]);
    assert_eq!(reason, Reason::RacingInitialize);
    assert_eq!(d.wake_at, NOW);
    assert!(matches!(d.actions.last(), Some(Action::TouchMember { data }) if data.role == MemberRole::Uninitialized));
}

#[test]
fn race_winner_runs_initdb_and_loser_waits() {
    let mut v = ViewB::empty();
    v.0.initialize = Some(Initialize::Racing);
    let o = with(obs(v, DbStatus::empty()), vec![Outcome::InitializeRace { result: Ok(true) }]);
    let (acts, reason, d) = run(&state("a"), &o);
    assert_eq!((acts, reason), (vec![task(DbTask::Bootstrap)], Reason::Bootstrapping));
    assert!(d.next.bootstrapping);

    let mut v = ViewB::empty();
    v.0.initialize = Some(Initialize::Racing);
    let o = with(obs(v, DbStatus::empty()), vec![Outcome::InitializeRace { result: Ok(false) }]);
    let (acts, reason, _) = run(&state("b"), &o);
    assert_eq!((acts, reason), (vec![], Reason::WaitingForBootstrap));
}

#[test]
fn finished_bootstrap_publishes_and_takes_the_lock() {
    let mut st = state("a");
    st.bootstrapping = true;
    let mut v = ViewB::empty();
    v.0.initialize = Some(Initialize::Racing);
    let (acts, reason, d) = run(&st, &obs(v, db_primary(0x100_0000, 1)));
    assert_eq!(
        acts,
        vec![
            Action::WriteInitialize { system_id: SYSID },
            Action::WriteConfig { config: Box::new(st.settings.bootstrap_config.clone()) },
            Action::WriteHistory { lines: vec![] },
            ACQUIRE,
        ]
    );
    assert_eq!(reason, Reason::InitializedNewCluster);
    assert!(!d.next.bootstrapping);
}

#[test]
fn empty_node_clones_from_a_clonefrom_member_or_the_leader() {
    let mut tagged = member(MemberRole::Replica, "running", 10, 1);
    tagged.tags.clonefrom = true;
    let v = ViewB::new().leader("l").member("c", tagged);
    let (acts, reason, _) = run(&state("a"), &obs(v, DbStatus::empty()));
    assert_eq!(acts, vec![task(DbTask::Clone { source: n("c") })]);
    assert_eq!(reason, Reason::Cloning { source: n("c") });
    let (acts, _, _) = run(&state("a"), &obs(ViewB::new().leader("l"), DbStatus::empty()));
    assert_eq!(acts, vec![task(DbTask::Clone { source: n("l") })]);
}

#[test]
fn data_from_another_cluster_is_refused() {
    let mut db = db_replica(10, 1, None);
    db.data_dir = DataDir::Valid { system_id: SystemId(1), was_primary: false };
    let (acts, reason, _) = run(&state("a"), &obs(ViewB::new().leader("l"), db));
    assert_eq!(acts, vec![]);
    assert_eq!(reason, Reason::SystemIdMismatch { mine: SystemId(1), cluster: SYSID });
}

#[test]
fn existing_primary_data_is_adopted_and_replica_data_is_not() {
    let (acts, reason, _) = run(&state("a"), &obs(ViewB::empty(), db_primary(10, 3)));
    assert_eq!(acts, vec![Action::RaceInitialize { system_id: Some(SYSID) }]);
    assert_eq!(reason, Reason::AdoptingExistingData { system_id: SYSID });
    let (acts, reason, _) = run(&state("a"), &obs(ViewB::empty(), db_replica(10, 3, None)));
    assert_eq!((acts, reason), (vec![], Reason::ReplicaWithoutCluster));
}
