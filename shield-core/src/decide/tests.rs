//! Exact-output scenario tests: for each branch, the full list of actions and the reason.

use super::*;
use crate::action::{CallbackEvent, DbTask, StartAs};
use crate::cluster::{FailoverRequest, HistoryLine, Initialize, Leader, Member, Status};
use crate::observation::{DbStatus, Outcome, PeerReport};
use crate::ports::{ErrorKind, PortError};
use crate::reason::Ineligible;
use crate::types::{Revision, SystemId};

const SYSID: SystemId = SystemId(7_277_694_203_142_172_922);
const NOW: MonoMillis = MonoMillis(100_000);

fn n(s: &str) -> MemberName {
    MemberName::new(s).expect("valid name")
}

fn settings(me: &str) -> NodeSettings {
    let mut s = NodeSettings::new(n(me));
    s.watchdog = WatchdogMode::Off;
    s
}

/// A node past its first cycle (the first one attaches: see `first_cycle_*`).
fn state(me: &str) -> NodeState {
    NodeState { attached: true, ..NodeState::new(settings(me)) }
}

/// A state that holds the lock, renewed just now.
fn leader_state(me: &str) -> NodeState {
    let mut st = state(me);
    st.lease = Some(LeaseHold { renewed_sent_at: NOW, fence_at: NOW.plus(3_210) });
    st
}

fn member(role: MemberRole, state: &str, lsn: u64, tl: u32) -> MemberData {
    let mut m = MemberData::new(role, state);
    m.xlog_location = Some(Lsn(lsn));
    m.timeline = Some(Timeline(tl));
    m
}

struct ViewB(ClusterView);

impl ViewB {
    fn new() -> ViewB {
        ViewB(ClusterView {
            revision: Revision(10),
            initialize: Some(Initialize::SystemId(SYSID)),
            ..ClusterView::default()
        })
    }
    fn empty() -> ViewB {
        ViewB(ClusterView::default())
    }
    fn leader(mut self, l: &str) -> ViewB {
        self.0.leader = Some(Leader { name: Some(n(l)), revision: Revision(5), owner: None });
        self
    }
    fn member(mut self, name: &str, data: MemberData) -> ViewB {
        self.0.members.insert(n(name), Member { name: n(name), data, revision: Revision(3), owner: None });
        self
    }
    fn replica(self, name: &str, lsn: u64) -> ViewB {
        self.member(name, member(MemberRole::Replica, "running", lsn, 1))
    }
    fn status(mut self, optime: u64) -> ViewB {
        self.0.status = Some(Status { optime: Lsn(optime), ..Status::default() });
        self
    }
    fn history(mut self, lines: &[(u32, u64)]) -> ViewB {
        self.0.history = lines
            .iter()
            .map(|&(tl, lsn)| HistoryLine {
                timeline: Timeline(tl),
                lsn: Lsn(lsn),
                reason: "x".into(),
                timestamp: None,
                new_leader: None,
            })
            .collect();
        self
    }
    fn failover(mut self, leader: Option<&str>, member: Option<&str>, at: Option<i64>) -> ViewB {
        self.0.failover = Some(FailoverRequest {
            leader: leader.map(n),
            member: member.map(n),
            scheduled_at: at.map(|ms| (ms, "2026-01-01T00:00:00+00:00".to_owned())),
            revision: Revision(8),
        });
        self
    }
    fn paused(mut self) -> ViewB {
        let cfg = DynamicConfig { pause: true, ..DynamicConfig::default() };
        self.0.config = Some((cfg, Revision(2)));
        self
    }
    fn config(mut self, cfg: DynamicConfig) -> ViewB {
        self.0.config = Some((cfg, Revision(2)));
        self
    }
}

fn data(was_primary: bool) -> DataDir {
    DataDir::Valid { system_id: SYSID, was_primary }
}

fn db_primary(lsn: u64, tl: u32) -> DbStatus {
    DbStatus {
        data_dir: data(true),
        process: DbProcess::Running { in_recovery: false },
        timeline: Some(Timeline(tl)),
        write_lsn: Some(Lsn(lsn)),
        ..DbStatus::empty()
    }
}

fn db_replica(lsn: u64, tl: u32, upstream: Option<&str>) -> DbStatus {
    DbStatus {
        data_dir: data(false),
        process: DbProcess::Running { in_recovery: true },
        timeline: Some(Timeline(tl)),
        received_lsn: Some(Lsn(lsn)),
        replayed_lsn: Some(Lsn(lsn)),
        upstream: upstream.map(n),
        streaming: upstream.is_some(),
        ..DbStatus::empty()
    }
}

fn db_stopped(lsn: u64, tl: u32, was_primary: bool, process: DbProcess) -> DbStatus {
    DbStatus {
        data_dir: data(was_primary),
        process,
        timeline: Some(Timeline(tl)),
        write_lsn: Some(Lsn(lsn)),
        ..DbStatus::empty()
    }
}

fn obs(view: ViewB, db: DbStatus) -> Observation {
    Observation {
        now: NOW,
        wall_ms: 1_767_225_600_000,
        dcs: DcsView::Reachable(view.0),
        db,
        outcomes: Vec::new(),
        shutdown_requested: false,
        requests: Vec::new(),
    }
}

fn with(mut o: Observation, outcomes: Vec<Outcome>) -> Observation {
    o.outcomes = outcomes;
    o
}

/// The action list with the trailing TouchMember (present on every reachable cycle) checked and
/// removed, so each test states only what matters.
fn run(st: &NodeState, o: &Observation) -> (Vec<Action>, Reason, Decision) {
    let d = decide(st, o);
    let mut acts = d.actions.clone();
    if matches!(acts.last(), Some(Action::TouchMember { .. })) {
        acts.pop();
    }
    (acts, d.reason.clone(), d)
}

fn renew(feed: Option<u64>) -> Action {
    let feed_watchdog = feed.map(|max_timeout_ms| crate::action::WatchdogFeed { budget_ms: 3_860, max_timeout_ms });
    Action::RenewLeader { ttl_ms: 4_000, fence_after_ms: 3_210, feed_watchdog }
}

fn task(t: DbTask) -> Action {
    Action::RunDbTask { task: t }
}

/// The last `status` of a leader that hands over (nothing retained yet in these tests).
fn final_status(optime: u64) -> Action {
    Action::WriteStatus { status: Status { optime: Lsn(optime), ..Status::default() } }
}

const ACQUIRE: Action = Action::AcquireLeader { ttl_ms: 4_000, fence_after_ms: 3_210, replacing: None };

const IMMEDIATE: Action = Action::StopDb { mode: StopMode::Immediate };

// ---- bootstrap -------------------------------------------------------------------------------

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

// ---- leader race ------------------------------------------------------------------------------

fn unlocked() -> ViewB {
    ViewB::new().replica("b", 1_000).replica("c", 1_000).status(1_000)
}

#[test]
fn unlocked_cluster_probes_peers_first() {
    let (acts, reason, d) = run(&state("a"), &obs(unlocked(), db_replica(1_000, 1, Some("old"))));
    assert_eq!((acts, reason), (vec![Action::ProbePeers], Reason::ProbingPeers));
    assert_eq!(d.wake_at, NOW);
}

fn report(lsn: u64, primary: bool, priority: i64) -> PeerReport {
    PeerReport {
        is_primary: primary,
        wal_position: Some(Lsn(lsn)),
        timeline: Some(Timeline(1)),
        can_promote: true,
        priority,
    }
}

fn probed(reports: &[(&str, PeerReport)]) -> Vec<Outcome> {
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

// ---- lock holder ------------------------------------------------------------------------------

#[test]
fn won_lock_promotes_arming_the_watchdog_first() {
    let mut st = state("a");
    st.settings.watchdog = WatchdogMode::Automatic;
    let o = with(
        obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None)),
        vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }],
    );
    let (acts, reason, d) = run(&st, &o);
    assert_eq!(acts.len(), 4, "{acts:?}");
    assert_eq!(acts[..2], [renew(None), Action::ArmWatchdog]);
    // The new timeline is reserved in `history` before the promotion, which creates exactly it.
    let Action::WriteHistory { lines } = &acts[2] else { panic!("no reservation: {acts:?}") };
    assert_eq!((lines.len(), lines[0].timeline, lines[0].lsn), (1, Timeline(1), Lsn(1_000)));
    assert_eq!(lines[0].new_leader.as_deref(), Some("a"));
    assert_eq!(acts[3], task(DbTask::Promote { timeline: Timeline(2) }));
    assert_eq!(reason, Reason::Promoting);
    assert_eq!(d.fence_at, Some(NOW.plus(st.config.timing.fence_after_ms())));
    assert_eq!(d.next.promoted_from, Some((Timeline(1), Lsn(1_000))));
}

#[test]
fn only_the_lock_holder_keeps_the_vip_and_failures_are_retried() {
    // A replica that finds the VIP bound (left from an earlier run) drops it.
    let mut st = state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    let v = ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let (acts, _, d) = run(&st, &obs(v, db_replica(5, 1, Some("l"))));
    assert!(acts.contains(&Action::RemoveVip), "{acts:?}");
    assert!(!d.next.vip_bound);
    // The removal failed: believed bound again, so the next cycle removes it again.
    let v = ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let o =
        with(obs(v, db_replica(5, 1, Some("l"))), vec![Outcome::VipFailed { adding: false, reason: "EPERM".into() }]);
    let (acts, _, _) = run(&d.next, &o);
    assert!(acts.contains(&Action::RemoveVip), "{acts:?}");
    // The leader's add failed: added again next cycle.
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    let o = with(
        obs(ViewB::new().leader("a").status(1_000), db_primary(1_000, 2)),
        vec![Outcome::VipFailed { adding: true, reason: "no such device".into() }],
    );
    let (acts, _, _) = run(&st, &o);
    assert!(acts.contains(&Action::AddVip), "{acts:?}");
}

/// `member_slots_ttl: 0`: slots as Patroni 3 keeps them.
#[test]
fn slots_follow_the_members_that_stream_from_this_node() {
    let sync = |acts: &[Action]| {
        acts.iter().find_map(|a| match a {
            Action::SyncSlots { create, drop, .. } => Some((create.clone(), drop.clone())),
            _ => None,
        })
    };
    let mut cascading = member(MemberRole::Replica, "running", 900, 1);
    cascading.tags.replicatefrom = Some(n("b"));
    let no_retention = DynamicConfig { member_slots_ttl_ms: 0, ..DynamicConfig::default() };
    let v = || {
        ViewB::new()
            .leader("a")
            .status(1_000)
            .config(no_retention.clone())
            .member("b", member(MemberRole::Replica, "running", 900, 1))
            .member("Node-C", member(MemberRole::Replica, "running", 900, 1))
            .member("d", cascading.clone())
    };
    // The leader: one slot per member streaming from it (not d, which cascades from b); a slot
    // of a member that left goes, an active one stays whatever it is.
    let mut db = db_primary(1_000, 1);
    db.slots = Some(vec![("b".into(), true), ("gone".into(), false), ("backup".into(), true)]);
    let (acts, _, _) = run(&leader_state("a"), &obs(v(), db.clone()));
    assert_eq!(sync(&acts), Some((vec!["node_c".to_owned()], vec!["gone".to_owned()])), "{acts:?}");
    // Everything in place: nothing to do.
    db.slots = Some(vec![("b".into(), true), ("node_c".into(), true)]);
    let (acts, _, _) = run(&leader_state("a"), &obs(v(), db));
    assert_eq!(sync(&acts), None);
    // Replica b keeps a slot for d, which cascades from it, and drops a demoted primary's slots.
    let mut db = db_replica(900, 1, Some("a"));
    db.slots = Some(vec![("node_c".into(), false)]);
    let (acts, _, _) = run(&state("b"), &obs(v(), db.clone()));
    assert_eq!(sync(&acts), Some((vec!["d".to_owned()], vec!["node_c".to_owned()])), "{acts:?}");
    // use_slots: false leaves slots alone.
    let mut cfg = no_retention.clone();
    cfg.postgresql.use_slots = false;
    let (acts, _, _) = run(&state("b"), &obs(v().config(cfg), db));
    assert_eq!(sync(&acts), None);
}

/// Patroni 4's member slots (`member_slots_ttl`, on by default): the leader keeps a slot for every
/// member and publishes their positions, its own at its position, and the names every node
/// retains; a replica keeps the same slots and moves them to the published positions; a member
/// that left is retained for `member_slots_ttl`, then dropped.
#[test]
fn every_node_keeps_member_slots_and_replicas_follow_the_leaders_positions() {
    let sync = |acts: &[Action]| {
        acts.iter().find_map(|a| match a {
            Action::SyncSlots { create, drop, advance } => Some((create.clone(), drop.clone(), advance.clone())),
            _ => None,
        })
    };
    let status = |acts: &[Action]| {
        acts.iter().find_map(|a| match a {
            Action::WriteStatus { status } => Some(status.clone()),
            _ => None,
        })
    };
    let mut cascading = member(MemberRole::Replica, "running", 900, 1);
    cascading.tags.replicatefrom = Some(n("b"));
    let mut nostream = member(MemberRole::Replica, "running", 0, 1);
    nostream.tags.nostream = true;
    let v = || {
        ViewB::new()
            .leader("a")
            .member("a", member(MemberRole::Primary, "running", 1_000, 1))
            .member("b", member(MemberRole::Replica, "running", 900, 1))
            .member("d", cascading.clone())
            .member("x", nostream.clone())
    };
    // The leader: slots for b and d (d cascades, yet the leader keeps its slot and moves it to
    // what d reports), none for x; it publishes positions and the retained names.
    let mut db = db_primary(1_000, 1);
    db.slots = Some(vec![("b".into(), true), ("d".into(), false)]);
    db.slot_positions = [("b".to_owned(), Lsn(990)), ("d".to_owned(), Lsn(500))].into();
    let (acts, _, d) = run(&leader_state("a"), &obs(v(), db.clone()));
    assert_eq!(sync(&acts), Some((vec![], vec![], vec![("d".to_owned(), Lsn(900))])), "{acts:?}");
    let published = status(&acts).expect("status");
    assert_eq!(
        published.slots,
        [("a".to_owned(), Lsn(1_000)), ("b".to_owned(), Lsn(990)), ("d".to_owned(), Lsn(500))].into()
    );
    assert_eq!(published.retain_slots, ["a", "b", "d"]);
    // b's member key expires: its slot is kept (and still retained) for member_slots_ttl.
    let gone = || {
        ViewB::new()
            .leader("a")
            .member("a", member(MemberRole::Primary, "running", 1_000, 1))
            .member("d", cascading.clone())
    };
    db.slots = Some(vec![("b".into(), false), ("d".into(), false)]);
    let mut o = obs(gone(), db.clone());
    o.now = NOW.plus(1_000);
    let (acts, _, d) = run(&d.next, &o);
    assert_eq!(sync(&acts).map(|s| s.1), Some(vec![]), "b's slot stays: {acts:?}");
    assert_eq!(status(&acts).expect("status").retain_slots, ["a", "b", "d"]);
    let mut o = obs(gone(), db);
    o.now = NOW.plus(1_800_001);
    let mut st = d.next.clone();
    st.lease = Some(LeaseHold { renewed_sent_at: o.now, fence_at: o.now.plus(3_210) });
    let (acts, _, _) = run(&st, &o);
    assert_eq!(sync(&acts).map(|s| s.1), Some(vec!["b".to_owned()]), "retention over: {acts:?}");
    assert_eq!(status(&acts).expect("status").retain_slots, ["a", "d"]);

    // A replica keeps slots for the leader and every other member, and for retained names, and
    // moves them to the leader's published positions (never back).
    let mut published = Status { optime: Lsn(1_000), ..Status::default() };
    published.slots = [("a".to_owned(), Lsn(1_000)), ("d".to_owned(), Lsn(800)), ("old".to_owned(), Lsn(10))].into();
    published.retain_slots = vec!["a".into(), "b".into(), "d".into(), "old".into()];
    let with_status = || {
        let mut b = v();
        b.0.status = Some(published.clone());
        b
    };
    let mut db = db_replica(900, 1, Some("a"));
    db.slots = Some(vec![("a".into(), false), ("d".into(), true), ("old".into(), false), ("stray".into(), false)]);
    db.slot_positions = [("a".to_owned(), Lsn(700)), ("old".to_owned(), Lsn(50))].into();
    let (acts, _, _) = run(&state("b"), &obs(with_status(), db.clone()));
    assert_eq!(sync(&acts), Some((vec![], vec!["stray".to_owned()], vec![("a".to_owned(), Lsn(1_000))])), "{acts:?}");
    // A nofailover replica keeps only the slots of members that cascade from it.
    let mut st = state("b");
    st.settings.tags.nofailover = true;
    let (acts, _, _) = run(&st, &obs(with_status(), db));
    assert_eq!(sync(&acts).map(|s| s.1), Some(vec!["a".to_owned(), "old".to_owned(), "stray".to_owned()]), "{acts:?}");
}

#[test]
fn history_records_the_servers_own_switch_point() {
    let mut st = leader_state("a");
    st.promoted_from = Some((Timeline(1), Lsn(900)));
    let mut db = db_primary(1_000, 2);
    db.branched_from = Some((Timeline(1), Lsn(950)));
    let (acts, _, _) = run(&st, &obs(ViewB::new().leader("a").status(1_000), db));
    let Action::WriteHistory { lines } = &acts[1] else { panic!("{acts:?}") };
    assert_eq!((lines[0].timeline, lines[0].lsn), (Timeline(1), Lsn(950)));
}

#[test]
fn the_new_leader_creates_the_replicas_slots_before_promoting() {
    let mut db = db_replica(1_000, 1, None);
    db.slots = Some(vec![("c".into(), false)]);
    let v = ViewB::new().leader("a").replica("b", 1_000).replica("c", 1_000);
    let o = with(obs(v, db), vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }]);
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!(reason, Reason::Promoting);
    let at = |want: &dyn Fn(&Action) -> bool| acts.iter().position(want);
    let slots = at(&|a| *a == Action::SyncSlots { create: vec!["b".into()], drop: vec![], advance: vec![] });
    let promote = at(&|a| *a == task(DbTask::Promote { timeline: Timeline(2) }));
    assert!(slots.is_some() && slots < promote, "{acts:?}");
}

#[test]
fn required_watchdog_is_armed_a_cycle_before_promotion() {
    let mut st = state("a");
    st.settings.watchdog = WatchdogMode::Required;
    let won = vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }];
    let o = with(obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None)), won);
    let (acts, reason, d) = run(&st, &o);
    assert_eq!((acts, reason), (vec![renew(None), Action::ArmWatchdog], Reason::ArmingWatchdog));
    assert_eq!(d.wake_at, NOW, "the next cycle comes at once");

    // Armed without complaint: promote.
    let o = obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None));
    let (acts, reason, _) = run(&d.next, &o);
    assert_eq!(acts.last(), Some(&task(DbTask::Promote { timeline: Timeline(2) })), "{acts:?}");
    assert_eq!(reason, Reason::Promoting);

    // The arming failed: the lock goes back and the database is never promoted.
    let failed = vec![Outcome::WatchdogFailed { reason: "no device".into() }];
    let o = with(obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None)), failed);
    let (acts, reason, d2) = run(&d.next, &o);
    assert!(
        acts.contains(&Action::ReleaseLeader) && !acts.contains(&task(DbTask::Promote { timeline: Timeline(2) })),
        "{acts:?}"
    );
    assert_eq!(reason, Reason::NotHealthiest(crate::reason::Ineligible::WatchdogRequired));
    assert!(d2.next.lease.is_none());
}

#[test]
fn healthy_leader_renews_binds_the_vip_and_records_history() {
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.promoted_from = Some((Timeline(1), Lsn(900)));
    let v = ViewB::new().leader("a").status(1_000);
    let (acts, reason, d) = run(&st, &obs(v, db_primary(1_000, 2)));
    let Action::WriteHistory { lines } = &acts[1] else { panic!("{acts:?}") };
    assert_eq!((lines.len(), lines[0].timeline, lines[0].lsn), (1, Timeline(1), Lsn(900)));
    assert_eq!(lines[0].new_leader.as_deref(), Some("a"));
    assert_eq!(acts[2..], [Action::AddVip]);
    assert_eq!(acts[0], renew(None));
    assert_eq!(reason, Reason::LeaderHealthy);
    assert_eq!(d.wake_at, NOW.plus(1_000));
}

#[test]
fn renewal_moves_the_fencing_deadline_from_its_send_time() {
    let st = leader_state("a");
    let sent = NOW.plus(50);
    let mut o = with(
        obs(ViewB::new().leader("a").status(5), db_primary(5, 1)),
        vec![Outcome::LeaderRenew { sent_at: sent, fence_after_ms: 3_210, result: Ok(()) }],
    );
    o.now = NOW.plus(60);
    let d = decide(&st, &o);
    assert_eq!(d.fence_at, Some(sent.plus(st.config.timing.fence_after_ms())));
}

#[test]
fn passed_fencing_deadline_stops_the_primary_at_once() {
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    st.watchdog_armed = true;
    let mut o = obs(ViewB::new().leader("a"), db_primary(5, 1));
    o.now = NOW.plus(3_210);
    let d = decide(&st, &o);
    assert_eq!(d.actions, vec![Action::RemoveVip, IMMEDIATE, Action::DisarmWatchdog]);
    assert_eq!(d.reason, Reason::FenceDeadlinePassed);
    assert_eq!((d.next.lease, d.fence_at), (None, None));
}

#[test]
fn lost_lease_fences_immediately() {
    let o = with(
        obs(ViewB::new().leader("b"), db_primary(5, 1)),
        vec![Outcome::LeaderRenew { sent_at: NOW, fence_after_ms: 3_210, result: Err(ErrorKind::LeaseLost) }],
    );
    let d = decide(&leader_state("a"), &o);
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::LeaseLost));
}

#[test]
fn unreachable_dcs_is_ridden_out_until_the_fencing_deadline() {
    let mut o = obs(ViewB::new(), db_primary(5, 1));
    o.dcs = DcsView::Unreachable { since: NOW.plus(0) };
    o.now = NOW.plus(1_000);
    let st = leader_state("a");
    let d = decide(&st, &o);
    assert_eq!((d.actions.clone(), d.reason), (vec![renew(None)], Reason::RenewFailedRetrying));
    assert_eq!(d.wake_at, NOW.plus(2_000));
    // Past retry_timeout the lease is still ours: keep renewing (an etcd stall costs nothing).
    o.now = NOW.plus(2_500);
    let d = decide(&st, &o);
    assert_eq!((d.actions, d.reason), (vec![renew(None)], Reason::RenewFailedRetrying));
    // At the deadline, the last moment before the lease could expire: stop.
    o.now = NOW.plus(3_210);
    let d = decide(&st, &o);
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::FenceDeadlinePassed));
    // A primary with no lease of ours stops at once.
    o.now = NOW.plus(100);
    let d = decide(&state("a"), &o);
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::PrimaryWithoutLock));
    // With a watchdog armed it stops after retry_timeout instead, before the watchdog (fed only
    // after renewals) could reset the host.
    let mut st = leader_state("a");
    st.watchdog_armed = true;
    st.settings.watchdog = WatchdogMode::Automatic;
    o.now = NOW.plus(1_501);
    let d = decide(&st, &o);
    assert_eq!(d.reason, Reason::DcsUnreachableFenced { for_ms: 1_501 });
    assert!(d.actions.contains(&IMMEDIATE) && d.actions.contains(&Action::DisarmWatchdog), "{:?}", d.actions);
}

#[test]
fn primary_that_sees_another_holder_demotes() {
    let (acts, reason, _) = run(&state("a"), &obs(ViewB::new().leader("b"), db_primary(5, 1)));
    assert_eq!((acts, reason), (vec![IMMEDIATE], Reason::AnotherLeader { leader: n("b") }));
}

#[test]
fn crashed_primary_restarts_in_place_or_fails_over() {
    let v = || ViewB::new().leader("a").replica("b", 5);
    let crashed = db_stopped(5, 1, true, DbProcess::Crashed);
    let (acts, reason, d) = run(&leader_state("a"), &obs(v(), crashed.clone()));
    assert_eq!(acts, vec![renew(None), task(DbTask::Start(StartAs::Primary))]);
    assert_eq!(reason, Reason::RestartingCrashedPrimary);
    assert_eq!(d.next.crash_since, Some(NOW));

    let cfg = DynamicConfig { primary_start_timeout_ms: 0, ..DynamicConfig::default() };
    let (acts, reason, _) = run(&leader_state("a"), &obs(v().config(cfg), crashed.clone()));
    assert_eq!((acts, reason), (vec![renew(None), Action::ReleaseLeader], Reason::CrashFailover));

    let mut late = leader_state("a");
    late.crash_since = Some(MonoMillis(NOW.0 - 30_001));
    let starting = DbStatus { process: DbProcess::Starting, ..crashed };
    let (acts, reason, _) = run(&late, &obs(v(), starting));
    assert_eq!((acts, reason), (vec![renew(None), IMMEDIATE, Action::ReleaseLeader], Reason::PrimaryStartTimedOut));
}

// ---- manual switchover and failover -----------------------------------------------------------

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

// ---- followers --------------------------------------------------------------------------------

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

// ---- pause and shutdown -----------------------------------------------------------------------

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

// ---- unique timelines --------------------------------------------------------------------------

/// A promotion cut off before it could record itself burned timeline 2 (its reservation is the
/// last `history` line): the next promotion, from timeline 1, creates timeline 3, never 2 again.
#[test]
fn promotion_skips_a_timeline_reserved_by_another() {
    let o = with(
        obs(ViewB::new().leader("a").replica("b", 1_000).history(&[(1, 900)]), db_replica(1_000, 1, None)),
        vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }],
    );
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!(reason, Reason::Promoting);
    let Some(Action::WriteHistory { lines }) = acts.iter().find(|a| matches!(a, Action::WriteHistory { .. })) else {
        panic!("no reservation: {acts:?}")
    };
    assert_eq!(
        lines.iter().map(|l| (l.timeline, l.lsn)).collect::<Vec<_>>(),
        [(Timeline(1), Lsn(900)), (Timeline(2), Lsn(1_000))]
    );
    assert_eq!(acts.last(), Some(&task(DbTask::Promote { timeline: Timeline(3) })));
}

/// Once promoted, the reserved line takes the server's own switch point; nothing is appended.
#[test]
fn promoted_primary_corrects_its_reserved_history_line() {
    let mut st = leader_state("a");
    st.promoted_from = Some((Timeline(1), Lsn(1_000)));
    let mut db = db_primary(1_200, 2);
    db.branched_from = Some((Timeline(1), Lsn(1_100)));
    let o = obs(ViewB::new().leader("a").replica("b", 1_000).history(&[(1, 1_000)]), db);
    let (acts, _, d) = run(&st, &o);
    let Some(Action::WriteHistory { lines }) = acts.iter().find(|a| matches!(a, Action::WriteHistory { .. })) else {
        panic!("no history write: {acts:?}")
    };
    assert_eq!(lines.iter().map(|l| (l.timeline, l.lsn)).collect::<Vec<_>>(), [(Timeline(1), Lsn(1_100))]);
    assert_eq!(d.next.promoted_from, None);
    // Already exact: no write at all.
    let o = obs(ViewB::new().leader("a").replica("b", 1_000).history(&[(1, 1_100)]), o.db.clone());
    let (acts, _, _) = run(&st, &o);
    assert!(!acts.iter().any(|a| matches!(a, Action::WriteHistory { .. })), "{acts:?}");
}

/// A running member whose key shows a newer timeline than ours is a live server of a newer
/// timeline: we do not race past it, whatever our WAL position.
#[test]
fn a_member_on_a_newer_timeline_blocks_the_race() {
    let v = unlocked().member("b", member(MemberRole::Replica, "running", 10, 2));
    let (acts, reason, _) = run(&state("a"), &obs(v, db_replica(5_000, 1, None)));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::PeerAhead { peer: n("b") })));
}

/// Peers compare as (timeline, LSN): less WAL on a newer timeline is still ahead.
#[test]
fn a_peer_on_a_newer_timeline_is_ahead_whatever_its_lsn() {
    let mut reports = std::collections::BTreeMap::new();
    reports.insert(
        n("b"),
        PeerReport {
            is_primary: false,
            wal_position: Some(Lsn(10)),
            timeline: Some(Timeline(2)),
            can_promote: true,
            priority: 1,
        },
    );
    let o = with(obs(unlocked(), db_replica(5_000, 1, None)), vec![Outcome::PeersProbed { reports }]);
    let (_, reason, _) = run(&state("a"), &o);
    assert_eq!(reason, Reason::NotHealthiest(Ineligible::PeerAhead { peer: n("b") }));
}

// ---- lease bookkeeping at its boundaries (mutation testing) -------------------------------------

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

// ---- pause and resume ---------------------------------------------------------------------------

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

// ---- bad values in the DCS (docs/security.md) --------------------------------------------------

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

// ---- a status query that does not answer ------------------------------------------------------

/// The member data a decision publishes.
fn published(d: &Decision) -> MemberData {
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

// ---- effects: callbacks, reloads, service registration ----------------------------------------

fn callback(event: CallbackEvent, role: DbRole) -> Action {
    Action::RunCallback { event, role }
}

fn with_parameter(view: ViewB, value: i64) -> ViewB {
    let mut cfg = DynamicConfig::default();
    cfg.postgresql.parameters.insert("work_mem".into(), serde_json::json!(value));
    view.config(cfg)
}

#[test]
fn first_cycle_calls_on_start_for_a_database_found_running_and_reloads_nothing() {
    let st = NodeState::new(settings("a"));
    let v = || with_parameter(ViewB::new().leader("l"), 1);
    let d = decide(&st, &obs(v(), db_replica(10, 1, Some("l"))));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStart, DbRole::Replica)), "{:?}", d.actions);
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    assert_eq!((d.next.attached, d.next.db_role), (true, Some(DbRole::Replica)));
    // Only once: the next cycle finds it running as before.
    let d = decide(&d.next, &obs(v(), db_replica(10, 1, Some("l"))));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. } | Action::ReloadDb)), "{:?}", d.actions);
    // A database busy with a task on the first cycle, or not running, gets no on_start.
    let mut db = db_replica(10, 1, Some("l"));
    db.busy = Some(DbTask::Restart);
    let d = decide(&st, &obs(v(), db));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
    let d = decide(&st, &obs(v(), db_stopped(10, 1, false, DbProcess::Stopped)));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
}

#[test]
fn changed_parameters_reload_once_no_task_runs() {
    let db = || db_replica(10, 1, Some("l"));
    let first = decide(&state("a"), &obs(with_parameter(ViewB::new().leader("l"), 1), db())).next;
    assert!(first.applied_parameters.is_some() && !first.reload_pending);
    // Unchanged: nothing.
    let d = decide(&first, &obs(with_parameter(ViewB::new().leader("l"), 1), db()));
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    // Changed: a reload.
    let d = decide(&first, &obs(with_parameter(ViewB::new().leader("l"), 2), db()));
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    assert!(!d.next.reload_pending);
    // Changed while a task runs: owed, and run once the task is over.
    let mut busy = db();
    busy.busy = Some(DbTask::Follow { upstream: n("l") });
    let d = decide(&first, &obs(with_parameter(ViewB::new().leader("l"), 2), busy));
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    assert!(d.next.reload_pending);
    let d = decide(&d.next, &obs(with_parameter(ViewB::new().leader("l"), 2), db()));
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    // The node file's parameters count too.
    let mut local = first.clone();
    local.settings.local_parameters.insert("work_mem".into(), "8MB".into());
    let d = decide(&local, &obs(with_parameter(ViewB::new().leader("l"), 1), db()));
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
}

#[test]
fn a_failed_reload_is_retried_and_a_done_one_calls_on_reload() {
    let mut st = state("a");
    st.db_role = Some(DbRole::Replica);
    let v = || ViewB::new().leader("l");
    st.applied_parameters = decide(&st, &obs(v(), db_replica(10, 1, Some("l")))).next.applied_parameters;
    let failed = with(obs(v(), db_replica(10, 1, Some("l"))), vec![Outcome::DbReloaded { result: Err("boom".into()) }]);
    let d = decide(&st, &failed);
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    let done = with(obs(v(), db_replica(10, 1, Some("l"))), vec![Outcome::DbReloaded { result: Ok(true) }]);
    let d = decide(&st, &done);
    assert!(d.actions.contains(&callback(CallbackEvent::OnReload, DbRole::Replica)), "{:?}", d.actions);
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    // Nothing signalled (no server running): no on_reload.
    let idle = with(obs(v(), db_replica(10, 1, Some("l"))), vec![Outcome::DbReloaded { result: Ok(false) }]);
    let d = decide(&st, &idle);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
}

#[test]
fn a_promotion_calls_on_role_change_with_role_primary() {
    let mut st = leader_state("a");
    st.db_role = Some(DbRole::Replica);
    let done = Outcome::DbTaskDone { task: DbTask::Promote { timeline: Timeline(2) }, result: Ok(()) };
    let o = with(obs(ViewB::new().leader("a").status(1_000), db_primary(1_000, 2)), vec![done]);
    let d = decide(&st, &o);
    assert!(d.actions.contains(&callback(CallbackEvent::OnRoleChange, DbRole::Primary)), "{:?}", d.actions);
    assert_eq!(d.next.db_role, Some(DbRole::Primary));
    // A failed promotion calls nothing.
    let failed = Outcome::DbTaskDone {
        task: DbTask::Promote { timeline: Timeline(2) },
        result: Err(PortError::new(ErrorKind::Io, "boom")),
    };
    let o = with(obs(ViewB::new().leader("a"), db_replica(1_000, 1, None)), vec![failed]);
    let d = decide(&st, &o);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
}

#[test]
fn starts_stops_and_a_demotion_call_their_callbacks() {
    let v = || ViewB::new().leader("l");
    let ok = |task| vec![Outcome::DbTaskDone { task, result: Ok(()) }];
    // A start as a replica: on_start.
    let start = DbTask::Start(StartAs::Replica { upstream: Some(n("l")) });
    let d = decide(&state("a"), &with(obs(v(), db_replica(10, 1, Some("l"))), ok(start.clone())));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStart, DbRole::Replica)), "{:?}", d.actions);
    // A restart: on_restart with the role it had.
    let mut st = state("a");
    st.db_role = Some(DbRole::Replica);
    let d = decide(&st, &with(obs(v(), db_replica(10, 1, Some("l"))), ok(DbTask::Restart)));
    assert!(d.actions.contains(&callback(CallbackEvent::OnRestart, DbRole::Replica)), "{:?}", d.actions);
    // A plain stop, or a synchronous (fencing) one: on_stop, and the role is forgotten.
    let stopped = db_stopped(10, 1, false, DbProcess::Stopped);
    let d = decide(&st, &with(obs(v(), stopped.clone()), ok(DbTask::Stop(StopMode::Fast))));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStop, DbRole::Replica)), "{:?}", d.actions);
    assert_eq!(d.next.db_role, None);
    let fenced = Outcome::Stopped { mode: StopMode::Immediate, result: Ok(()) };
    let d = decide(&st, &with(obs(v(), stopped.clone()), vec![fenced]));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStop, DbRole::Replica)), "{:?}", d.actions);
    // A switchover's stop calls nothing; the start as a replica after it is the role change.
    let mut st = state("a");
    st.db_role = Some(DbRole::Primary);
    st.demoting = true;
    let d = decide(&st, &with(obs(v(), stopped), ok(DbTask::Stop(StopMode::Fast))));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
    assert!(d.next.demoted);
    let mut next = d.next;
    next.demoting = false;
    let d = decide(&next, &with(obs(v(), db_replica(10, 1, Some("l"))), ok(start)));
    assert!(d.actions.contains(&callback(CallbackEvent::OnRoleChange, DbRole::Replica)), "{:?}", d.actions);
    assert!(!d.next.demoted);
}

#[test]
fn the_role_is_registered_when_it_changes_and_again_after_a_failure() {
    let mut st = leader_state("a");
    st.settings.register_service = true;
    let v = || ViewB::new().leader("a").status(1_000);
    let d = decide(&st, &obs(v(), db_primary(1_000, 1)));
    let register = Action::RegisterService { role: DbRole::Primary };
    assert!(d.actions.contains(&register), "{:?}", d.actions);
    assert_eq!(d.next.registered_role, Some(DbRole::Primary));
    // Registered: not again.
    let d2 = decide(&d.next, &obs(v(), db_primary(1_000, 1)));
    assert!(!d2.actions.contains(&register), "{:?}", d2.actions);
    // A failed registration is published again.
    let failed = Outcome::ServiceRegistrationFailed { role: DbRole::Primary, reason: "agent down".into() };
    let d3 = decide(&d.next, &with(obs(v(), db_primary(1_000, 1)), vec![failed]));
    assert!(d3.actions.contains(&register), "{:?}", d3.actions);
    // A replica registers as one; a node without `register_service` never registers.
    let mut r = state("a");
    r.settings.register_service = true;
    let d = decide(&r, &obs(ViewB::new().leader("l"), db_replica(10, 1, Some("l"))));
    assert!(d.actions.contains(&Action::RegisterService { role: DbRole::Replica }), "{:?}", d.actions);
    let d = decide(&state("a"), &obs(ViewB::new().leader("l"), db_replica(10, 1, Some("l"))));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RegisterService { .. })), "{:?}", d.actions);
    // Announcing a primary needs the lease: skipped after a failed renewal, and retried.
    assert!(register.needs_lease());
    assert!(matches!(Outcome::lease_skipped(&register), Some(Outcome::ServiceRegistrationFailed { .. })));
}

#[test]
fn a_failed_watchdog_disarm_is_retried_and_a_failed_slot_sync_is_remembered() {
    let v = || ViewB::new().leader("l");
    let failed = Outcome::WatchdogDisarmFailed { reason: "EBUSY".into() };
    let d = decide(&state("a"), &with(obs(v(), db_replica(10, 1, Some("l"))), vec![failed]));
    assert!(d.actions.contains(&Action::DisarmWatchdog), "{:?}", d.actions);
    assert!(!d.next.watchdog_armed);
    // Without a failure, nothing.
    let d = decide(&state("a"), &obs(v(), db_replica(10, 1, Some("l"))));
    assert!(!d.actions.contains(&Action::DisarmWatchdog), "{:?}", d.actions);
    // A failed disarm learnt as the lease is lost: the fencing's disarm is the retry, once.
    let lost = Outcome::LeaderRenew { sent_at: NOW, fence_after_ms: 3_210, result: Err(ErrorKind::LeaseLost) };
    let failed = Outcome::WatchdogDisarmFailed { reason: "EBUSY".into() };
    let mut st = leader_state("a");
    st.watchdog_armed = true;
    let d = decide(&st, &with(obs(ViewB::new().leader("a"), db_primary(10, 1)), vec![lost, failed]));
    assert_eq!(d.actions.iter().filter(|a| **a == Action::DisarmWatchdog).count(), 1, "{:?}", d.actions);
    assert!(!d.next.watchdog_armed && d.next.lease.is_none());

    let failed = Outcome::SlotsSyncFailed { reason: "connection refused".into() };
    let mut db = db_primary(1_000, 1);
    db.slots = Some(vec![]);
    let st = leader_state("a");
    let view = || ViewB::new().leader("a").replica("b", 1_000).status(1_000);
    let d = decide(&st, &with(obs(view(), db.clone()), vec![failed]));
    assert_eq!(d.next.slots_sync_failed.as_deref(), Some("connection refused"));
    // Asked for again, and forgotten once the slots need nothing.
    assert!(d.actions.iter().any(|a| matches!(a, Action::SyncSlots { .. })), "{:?}", d.actions);
    db.slots = Some(vec![("b".into(), true)]);
    let d = decide(&d.next, &obs(view(), db));
    assert_eq!(d.next.slots_sync_failed, None);
}
