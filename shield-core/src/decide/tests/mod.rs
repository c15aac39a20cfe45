//! Exact-output scenario tests: for each branch, the full list of actions and the reason.

use super::*;
use crate::action::{Action, DbRole, StopMode};
use crate::action::{CallbackEvent, DbTask, StartAs};
use crate::cluster::{ClusterView, MemberData, MemberRole};
use crate::cluster::{FailoverRequest, HistoryLine, Initialize, Leader, Member, Status};
use crate::config::DynamicConfig;
use crate::observation::{DataDir, DbProcess, DcsView, Observation};
use crate::observation::{DbStatus, Outcome, PeerReport};
use crate::ports::{ErrorKind, PortError};
use crate::reason::Ineligible;
use crate::reason::Reason;
use crate::types::{Lsn, MemberName, MonoMillis};
use crate::types::{Revision, SystemId, Timeline};

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
        failsafe_vouched: None,
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

mod bad_values;
mod bootstrap;
mod effects;
mod failsafe;
mod followers;
mod holder;
mod lease;
mod manual;
mod pause;
mod race;
mod resume;
mod timelines;
mod unknown_status;
