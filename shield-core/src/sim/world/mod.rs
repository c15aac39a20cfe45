//! The simulated world: nodes, network, DCS and the event queue, all driven by one seeded RNG.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::action::Action;
use crate::decide::{NodeSettings, NodeState, WatchdogMode};
use crate::observation::{DcsView, Observation, Outcome};
use crate::ports::{Dcs, ErrorKind};
use crate::sim::db::{SimDb, SimProcess};
use crate::sim::faults::{self, Fault, FaultKind};
use crate::sim::invariants::{self, Hook, Invariant, NodeSnap, Snapshot};
use crate::sim::trace::Trace;
use crate::sim::{SimConfig, SimReport, Violation};
use crate::testing::{MemoryDcs, MemoryStore};
use crate::types::{MemberName, MonoMillis};

mod cycle;
mod disruptions;
mod protections;
mod replication;

/// Wall-clock time at simulated time zero (2026-01-01T00:00:00Z), for scheduled requests.
pub(super) const EPOCH_MS: i64 = 1_767_225_600_000;
/// How often replication and client writes advance.
pub(super) const TICK_MS: u64 = 100;

/// Runs a future that the in-memory DCS always completes at once.
pub(super) fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        // Only `watch` can pend, and the simulator never calls it.
        Poll::Pending => unreachable!("in-memory DCS call pended"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Daemon {
    Up,
    Frozen { until_ms: u64 },
    Down,
}

#[derive(Debug)]
pub(super) enum Ev {
    Wake {
        node: usize,
        gen: u64,
    },
    /// The cycle's DCS read is back; `status_answers` is false when the status query, asked
    /// alongside it, did not answer (the cycle then waited the status timeout).
    ReadDone {
        node: usize,
        result: Result<Box<crate::cluster::ClusterView>, ErrorKind>,
        sent: MonoMillis,
        status_answers: bool,
    },
    ActNext {
        node: usize,
    },
    TaskDone {
        node: usize,
        seq: u64,
    },
    /// The first checkpoint on `timeline` after a promotion ended.
    Checkpointed {
        node: usize,
        timeline: crate::types::Timeline,
    },
    FenceGuard {
        node: usize,
    },
    Keeper {
        node: usize,
        epoch: u64,
        at: u64,
    },
    WatchdogCheck {
        node: usize,
    },
    Tick,
    FaultStart(Fault),
    FaultEnd(Fault),
    Reboot {
        node: usize,
    },
    TryResume,
    StopLands {
        node: usize,
    },
}

#[derive(Debug)]
pub(super) struct Node {
    pub name: MemberName,
    pub daemon: Daemon,
    pub state: NodeState,
    pub db: SimDb,
    pub dcs: MemoryDcs,
    /// Local clock = offset + global * (1e6 + drift_ppm) / 1e6.
    pub drift_ppm: i64,
    pub offset_ms: u64,
    pub outcomes: Vec<Outcome>,
    pub actions: Option<VecDeque<Action>>,
    pub wake_gen: u64,
    pub wake_local: MonoMillis,
    pub fence_at: Option<MonoMillis>,
    pub watchdog_expire_ms: Option<u64>,
    pub unreachable_since: Option<MonoMillis>,
    pub vip: bool,
    /// A lease action of the current decision failed: its lease-needing actions are skipped.
    pub lease_gate_failed: bool,
    /// The host is down (crashed or rebooting): the keeper and the database with it.
    pub host_down: bool,
    /// The whole host is frozen (daemon, keeper and database) until this global time.
    pub host_frozen_until: Option<u64>,
    /// The fence keeper process of the running daemon: its instance and its deadline (global).
    pub keeper_epoch: u64,
    pub keeper_at: Option<u64>,
    /// Keepers whose daemon died: each enforces its last deadline, then exits.
    pub orphan_keepers: Vec<(u64, u64)>,
    /// From the node's last successful DCS read: the `status` optime and the `history` lines.
    pub seen_optime: Option<crate::types::Lsn>,
    pub seen_history: Vec<(crate::types::Timeline, crate::types::Lsn)>,
    /// Operator requests (REST) for the next cycle.
    pub requests: Vec<crate::observation::Request>,
    /// Status stalls in force: the status query does not answer.
    pub status_stalled: u32,
    /// The last status that answered, as the daemon keeps it (lost with the daemon).
    pub last_status: Option<crate::observation::DbStatus>,
    /// The callbacks the node ran, in order.
    pub callbacks: Vec<(crate::action::CallbackEvent, crate::action::DbRole)>,
    /// The role its service registration publishes, as last registered.
    pub registered_role: Option<crate::action::DbRole>,
    /// PostgreSQL configuration reloads.
    pub reloads: u64,
    /// The last leader key holder the node saw in the DCS (lost with the daemon).
    pub last_leader: Option<MemberName>,
    /// The leader this node last accepted over `POST /failsafe`, on its local clock.
    pub failsafe_vouched: Option<(MemberName, MonoMillis, u64)>,
    /// When this node last sent a leader acquire, and when its current decision's observation
    /// was taken (local clock): the driver's guard between the two.
    pub acquire_sent_at: Option<MonoMillis>,
    pub observed_at: MonoMillis,
    /// Global time until which a failsafe round every member accepted keeps them all out of
    /// the race (the round's send time plus the shortest ttl among them).
    pub failsafe_grant_until: Option<u64>,
    /// The current decision's renewal got no answer (its failsafe fallback round runs).
    pub renewal_unanswered: bool,
}

impl Node {
    pub fn local(&self, global_ms: u64) -> MonoMillis {
        let scaled = i128::from(global_ms) * (1_000_000 + i128::from(self.drift_ppm)) / 1_000_000;
        MonoMillis(self.offset_ms + scaled as u64)
    }

    /// The first global time at which the local clock reads at least `local`.
    pub fn global(&self, local: MonoMillis) -> u64 {
        let l = i128::from(local.0.saturating_sub(self.offset_ms));
        let g =
            (l * 1_000_000 + (1_000_000 + i128::from(self.drift_ppm)) - 1) / (1_000_000 + i128::from(self.drift_ppm));
        g as u64
    }
}

/// Network state.
#[derive(Debug, Default)]
pub(super) struct Net {
    pub dcs_cut: Vec<u32>,
    pub peer_cut: Vec<u32>,
    /// A split of the cluster in two: the nodes on the minority side (cut from the DCS, which
    /// stays with the majority, and from the majority's nodes; connected among themselves).
    pub minority: Option<Vec<bool>>,
    pub dcs_down: u32,
    pub extra_latency_ms: u64,
}

/// The world.
#[derive(Debug)]
pub struct World {
    pub(super) cfg: SimConfig,
    pub(super) seed: u64,
    pub(super) rng: ChaCha8Rng,
    pub(super) now: u64,
    pub(super) store: MemoryStore,
    pub(super) nodes: Vec<Node>,
    pub(super) queue: BTreeMap<(u64, u64), Ev>,
    pub(super) seq: u64,
    pub(super) net: Net,
    pub(super) trace: Trace,
    pub(super) checkers: Vec<Box<dyn Invariant>>,
    pub(super) violation: Option<Violation>,
    pub(super) report: SimReport,
    pub(super) faults_end_ms: u64,
    pub(super) last_leader: Option<MemberName>,
    pub(super) task_seq: u64,
    /// The checkers' view of the DCS and the store revision it was read at.
    pub(super) dcs_seen: Option<(u64, Option<MemberName>, crate::types::Timeline, bool)>,
    /// Every acknowledged write not yet found lost: (timeline, position after it).
    pub(super) acked: Vec<(crate::types::Timeline, crate::types::Lsn)>,
    /// The cluster config as the operator last set it (timings, pause).
    pub(super) op_config: crate::config::DynamicConfig,
    /// A refused resume is waiting to be tried again.
    pub(super) resume_retrying: bool,
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(cfg: SimConfig, seed: u64) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let store = MemoryStore::new();
        let ttl = cfg.config.timing.ttl_ms;
        let nodes = (0..cfg.nodes)
            .map(|i| {
                let name = MemberName::new(format!("n{i}")).unwrap_or_else(|e| unreachable!("{e}"));
                let mut settings = NodeSettings::new(name.clone());
                settings.bootstrap_config = cfg.config.clone();
                settings.watchdog = if cfg.watchdog { WatchdogMode::Automatic } else { WatchdogMode::Off };
                settings.vip = true;
                settings.register_service = true;
                // Members reach each other's REST API by name (failsafe rounds).
                settings.api_url = Some(format!("http://{name}:8008/patroni"));
                let max = i64::try_from(cfg.max_drift_ppm).unwrap_or(i64::MAX / 2).min(500_000);
                Node {
                    dcs: store.client("service", "sim", name.clone(), ttl),
                    name,
                    daemon: Daemon::Up,
                    state: NodeState::new(settings),
                    db: SimDb::empty(),
                    drift_ppm: rng.gen_range(-max..=max),
                    offset_ms: rng.gen_range(0..1_000_000),
                    outcomes: Vec::new(),
                    actions: None,
                    wake_gen: 0,
                    wake_local: MonoMillis(0),
                    fence_at: None,
                    watchdog_expire_ms: None,
                    unreachable_since: None,
                    vip: false,
                    lease_gate_failed: false,
                    host_down: false,
                    host_frozen_until: None,
                    keeper_epoch: 0,
                    keeper_at: None,
                    orphan_keepers: Vec::new(),
                    seen_optime: None,
                    seen_history: Vec::new(),
                    requests: Vec::new(),
                    status_stalled: 0,
                    last_status: None,
                    callbacks: Vec::new(),
                    registered_role: None,
                    reloads: 0,
                    last_leader: None,
                    failsafe_vouched: None,
                    acquire_sent_at: None,
                    observed_at: MonoMillis(0),
                    failsafe_grant_until: None,
                    renewal_unanswered: false,
                }
            })
            .collect();
        store.set_expiry_delay(rng.gen_range(0..=cfg.lease_overshoot_max_ms));
        let chaos_start = 20_000;
        let faults_end = cfg.duration_ms.saturating_sub(cfg.liveness_bound_ms);
        let mut schedule = faults::schedule(&mut rng, cfg.profile, &cfg.faults, cfg.nodes, chaos_start, faults_end);
        schedule.extend(cfg.extra_faults.iter().copied().filter(|f| f.node < cfg.nodes));
        let op_config = cfg.config.clone();
        let checkers = invariants::all().into_iter().filter(|c| !cfg.invariants_off.contains(&c.name())).collect();
        let mut w = World {
            trace: Trace::new(cfg.trace_all),
            net: Net { dcs_cut: vec![0; cfg.nodes], peer_cut: vec![0; cfg.nodes], ..Net::default() },
            cfg,
            seed,
            rng,
            now: 0,
            store,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            checkers,
            violation: None,
            report: SimReport::default(),
            faults_end_ms: faults_end,
            last_leader: None,
            task_seq: 0,
            dcs_seen: None,
            acked: Vec::new(),
            op_config,
            resume_retrying: false,
        };
        for f in schedule {
            let end = (f.at_ms + f.duration_ms).min(faults_end);
            w.at(f.at_ms, Ev::FaultStart(f));
            w.at(end, Ev::FaultEnd(f));
        }
        for i in 0..w.nodes.len() {
            let jitter = w.rng.gen_range(0..500);
            w.wake(i, jitter);
        }
        w.at(TICK_MS, Ev::Tick);
        w
    }

    pub(super) fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((t.max(self.now), self.seq), ev);
    }

    /// Schedules node `i`'s next cycle at global time `t`, superseding any earlier plan.
    pub(super) fn wake(&mut self, i: usize, t: u64) {
        let n = &mut self.nodes[i];
        n.wake_gen += 1;
        let gen = n.wake_gen;
        self.at(t, Ev::Wake { node: i, gen });
    }

    /// Runs to the end or the first violation.
    pub fn run(mut self) -> SimReport {
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t > self.cfg.duration_ms || self.violation.is_some() {
                break;
            }
            self.advance_to(t);
            self.handle(ev);
        }
        if self.violation.is_none() {
            let faults_ended_ms = self.faults_end_ms;
            self.check(Hook::Settled { faults_ended_ms });
        }
        if self.cfg.max_drift_ppm > crate::config::Timing::MAX_DRIFT_PPM {
            self.report.beyond_the_model = Some(format!(
                "node clocks drift up to {} ppm, beyond the {} ppm the fencing deadline absorbs",
                self.cfg.max_drift_ppm,
                crate::config::Timing::MAX_DRIFT_PPM
            ));
        }
        self.report.seed = self.seed;
        self.report.violation = self.violation.take();
        self.report.trace = self.trace.lines();
        self.report
    }

    fn advance_to(&mut self, t: u64) {
        if t > self.now {
            self.store.advance(t - self.now);
            self.now = t;
            self.after_dcs_change();
        }
    }

    /// Wakes idle, connected nodes when the leader key changed (the watch).
    pub(super) fn after_dcs_change(&mut self) {
        let raw = self.store.get_raw("/service/sim/leader");
        let leader = raw.and_then(|v| MemberName::new(String::from_utf8_lossy(&v).into_owned()).ok());
        if leader == self.last_leader {
            return;
        }
        self.trace.line(self.now, "dcs", || format!("leader key: {:?} -> {:?}", self.last_leader, leader));
        self.last_leader = leader;
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.daemon == Daemon::Up && n.actions.is_none() && self.dcs_reachable(i) {
                let t = self.now + 2;
                self.wake(i, t);
            }
        }
    }

    pub(super) fn dcs_reachable(&self, i: usize) -> bool {
        self.net.dcs_down == 0 && self.net.dcs_cut[i] == 0
    }

    pub(super) fn peers_connected(&self, a: usize, b: usize) -> bool {
        self.net.peer_cut[a] == 0
            && self.net.peer_cut[b] == 0
            && self.net.minority.as_ref().is_none_or(|m| m[a] == m[b])
    }

    pub(super) fn dcs_latency(&mut self) -> u64 {
        self.rng.gen_range(1..6) + self.net.extra_latency_ms
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { node, gen } if self.nodes[node].wake_gen == gen => self.start_cycle(node),
            Ev::Wake { .. } => {}
            Ev::ReadDone { node, result, sent, status_answers } => self.read_done(node, result, sent, status_answers),
            Ev::ActNext { node } => self.act_next(node),
            Ev::TaskDone { node, seq } => self.task_done(node, seq),
            Ev::Checkpointed { node, timeline } => {
                let db = &mut self.nodes[node].db;
                if let Some(d) = db.data.as_mut().filter(|d| d.timeline == timeline) {
                    if matches!(db.process, SimProcess::Running { .. }) {
                        d.checkpoint_timeline = timeline;
                    }
                }
            }
            Ev::FenceGuard { node } => self.fence_guard(node),
            Ev::Keeper { node, epoch, at } => self.keeper(node, epoch, at),
            Ev::WatchdogCheck { node } => self.watchdog_check(node),
            Ev::Tick => self.tick(),
            Ev::FaultStart(f) => self.fault(f, true),
            Ev::FaultEnd(f) => self.fault(f, false),
            Ev::Reboot { node } => self.reboot(node),
            Ev::StopLands { node } => self.stop_lands(node),
            Ev::TryResume => {
                self.resume_retrying = false;
                self.try_resume();
            }
        }
    }

    /// Defers `ev` if node `i`'s daemon is frozen; drops it if down. Returns whether to go on.
    pub(super) fn daemon_runs(&mut self, i: usize, ev: impl FnOnce() -> Ev) -> bool {
        match self.nodes[i].daemon {
            Daemon::Up => true,
            Daemon::Frozen { until_ms } => {
                let e = ev();
                self.at(until_ms, e);
                false
            }
            Daemon::Down => false,
        }
    }

    /// Hands the fence keeper a new deadline (local time), as the driver does after each
    /// decision and each successful renewal. No-op without a keeper.
    pub(super) fn set_keeper(&mut self, i: usize, deadline: Option<MonoMillis>) {
        if !self.cfg.keeper {
            return;
        }
        let n = &mut self.nodes[i];
        let at = deadline.map(|f| n.global(f));
        if n.keeper_at == at {
            return;
        }
        n.keeper_at = at;
        if let Some(t) = at {
            let epoch = n.keeper_epoch;
            self.at(t, Ev::Keeper { node: i, epoch, at: t });
        }
    }

    /// An immediate stop (SIGQUIT to the postmaster): any task is cancelled at once, but a
    /// writable server goes on acknowledging writes for up to 200 ms while its processes exit.
    pub(super) fn stop_immediately(&mut self, i: usize) {
        let delay = self.rng.gen_range(0..=200);
        let db = &mut self.nodes[i].db;
        if !db.writable() || delay == 0 {
            db.crash();
            return;
        }
        db.task = None;
        db.stop_pending = true;
        self.at(self.now + delay, Ev::StopLands { node: i });
    }

    pub(super) fn crash_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.host_down = true;
        n.host_frozen_until = None;
        n.db.frozen = false;
        n.keeper_at = None;
        n.orphan_keepers.clear();
        n.keeper_epoch += 1;
        n.daemon = Daemon::Down;
        n.db.crash();
        n.actions = None;
        n.outcomes.clear();
        n.watchdog_expire_ms = None;
        n.fence_at = None;
        n.vip = false;
    }

    /// Runs every checker at `hook`; records the first violation.
    pub(super) fn check(&mut self, hook: Hook) {
        if self.violation.is_some() {
            return;
        }
        let nodes: Vec<NodeSnap> = self
            .nodes
            .iter()
            .map(|n| NodeSnap {
                name: n.name.clone(),
                up: n.daemon != Daemon::Down,
                writable: n.db.writable(),
                replica: n.db.process == crate::sim::db::SimProcess::Running { in_recovery: true },
                upstream: n.db.upstream.clone(),
                streaming: n.db.streaming,
                // A frozen host answers nothing on the address; it counts again once it thaws.
                vip: n.vip && n.host_frozen_until.is_none(),
                paused: n.state.config.pause,
                stopping: n.db.stop_pending,
                failsafe_until: n.failsafe_grant_until,
            })
            .collect();
        // What the checkers read of the DCS, parsed again only when the store changed (a check
        // runs at every acknowledged write).
        let revision = self.store.revision();
        if self.dcs_seen.as_ref().is_none_or(|(r, ..)| *r != revision) {
            let view = ready(self.nodes[0].dcs.read()).ok();
            self.dcs_seen = Some((
                revision,
                view.as_ref().and_then(|v| v.leader_name().cloned()),
                view.as_ref().map(|v| v.timeline()).unwrap_or_default(),
                view.as_ref().and_then(|v| v.config.as_ref()).is_some_and(|(c, _)| c.pause),
            ));
        }
        let Some((_, lease_holder, cluster_timeline, paused)) = self.dcs_seen.clone() else { return };
        let max_lag_bytes = self.cfg.config.maximum_lag_on_failover_bytes;
        let snap = Snapshot { now_ms: self.now, nodes: &nodes, lease_holder, cluster_timeline, paused, max_lag_bytes };
        for c in &mut self.checkers {
            if let Err(problem) = c.check(hook, &snap) {
                self.trace.line(self.now, "VIOLATION", || format!("{}: {problem}", c.name()));
                self.violation = Some(Violation { invariant: c.name(), problem, at_ms: self.now });
                return;
            }
        }
    }
}

fn bump(v: u32, start: bool) -> u32 {
    if start {
        v + 1
    } else {
        v.saturating_sub(1)
    }
}
