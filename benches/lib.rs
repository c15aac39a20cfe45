//! Shared fixtures for Shield's benches: realistic decide() inputs of a given cluster size.

use shield_core::cluster::{ClusterView, Initialize, Leader, Member, MemberData, Status};
use shield_core::{
    DataDir, DbProcess, DbStatus, DcsView, LeaseHold, Lsn, MemberName, MemberRole, MonoMillis, NodeSettings, NodeState,
    Observation, Revision, SystemId, Timeline,
};

fn name(i: usize) -> MemberName {
    MemberName::new(format!("node{i}")).unwrap_or_else(|e| unreachable!("{e}"))
}

/// A healthy cluster of `members` nodes led by node0.
pub fn cluster(members: usize, leader: bool) -> ClusterView {
    let mut v = ClusterView {
        revision: Revision(100),
        initialize: Some(Initialize::SystemId(SystemId(7_277_694_203_142_172_922))),
        status: Some(Status { optime: Lsn(0x5000_0000), ..Status::default() }),
        ..ClusterView::default()
    };
    if leader {
        v.leader = Some(Leader { name: Some(name(0)), revision: Revision(90), owner: Some("1".into()) });
    }
    for i in 0..members {
        let role = if i == 0 { MemberRole::Primary } else { MemberRole::Replica };
        let mut m = MemberData::new(role, "running");
        m.conn_url = Some(format!("postgres://10.0.0.{i}:5432/postgres"));
        m.api_url = Some(format!("http://10.0.0.{i}:8008/patroni"));
        m.xlog_location = Some(Lsn(0x5000_0000));
        m.timeline = Some(Timeline(3));
        v.members.insert(name(i), Member { name: name(i), data: m, revision: Revision(95), owner: None });
    }
    v
}

/// The leader's steady-state cycle: renew, publish status, touch member.
pub fn leader_cycle(members: usize) -> (NodeState, Observation) {
    let mut st = NodeState::new(NodeSettings::new(name(0)));
    st.lease = Some(LeaseHold { renewed_sent_at: MonoMillis(999_000), fence_at: MonoMillis(1_002_210) });
    st.watchdog_armed = true;
    let db = DbStatus {
        data_dir: DataDir::Valid { system_id: SystemId(7_277_694_203_142_172_922), was_primary: true },
        process: DbProcess::Running { in_recovery: false },
        timeline: Some(Timeline(3)),
        write_lsn: Some(Lsn(0x5000_1000)),
        ..DbStatus::empty()
    };
    let obs = Observation {
        now: MonoMillis(1_000_000),
        wall_ms: 1_767_225_600_000,
        dcs: DcsView::Reachable(cluster(members, true)),
        db,
        outcomes: Vec::new(),
        shutdown_requested: false,
        requests: Vec::new(),
        failsafe_vouched: None,
    };
    (st, obs)
}

/// A replica in an unlocked cluster deciding whether to race (the failover path).
pub fn race_cycle(members: usize) -> (NodeState, Observation) {
    let st = NodeState::new(NodeSettings::new(name(1)));
    let db = DbStatus {
        data_dir: DataDir::Valid { system_id: SystemId(7_277_694_203_142_172_922), was_primary: false },
        process: DbProcess::Running { in_recovery: true },
        timeline: Some(Timeline(3)),
        received_lsn: Some(Lsn(0x5000_0000)),
        replayed_lsn: Some(Lsn(0x5000_0000)),
        upstream: Some(name(0)),
        ..DbStatus::empty()
    };
    let obs = Observation {
        now: MonoMillis(1_000_000),
        wall_ms: 1_767_225_600_000,
        dcs: DcsView::Reachable(cluster(members, false)),
        db,
        outcomes: Vec::new(),
        shutdown_requested: false,
        requests: Vec::new(),
        failsafe_vouched: None,
    };
    (st, obs)
}
