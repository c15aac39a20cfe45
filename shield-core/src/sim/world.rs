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
use crate::sim::db::SimDb;
use crate::sim::faults::{self, Fault, FaultKind};
use crate::sim::invariants::{self, Hook, Invariant, NodeSnap, Snapshot};
use crate::sim::trace::Trace;
use crate::sim::{SimConfig, SimReport, Violation};
use crate::testing::{MemoryDcs, MemoryStore};
use crate::types::{MemberName, MonoMillis};

/// Wall-clock time at simulated time zero (2026-01-01T00:00:00Z), for scheduled requests.
const EPOCH_MS: i64 = 1_767_225_600_000;
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
    Wake { node: usize, gen: u64 },
    ReadDone { node: usize, result: Result<Box<crate::cluster::ClusterView>, ErrorKind>, sent: MonoMillis },
    ActNext { node: usize },
    TaskDone { node: usize, seq: u64 },
    FenceGuard { node: usize },
    WatchdogCheck { node: usize },
    Tick,
    FaultStart(Fault),
    FaultEnd(Fault),
    Reboot { node: usize },
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
                let max = crate::config::Timing::MAX_DRIFT_PPM as i64;
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
                }
            })
            .collect();
        let chaos_start = 20_000;
        let faults_end = cfg.duration_ms.saturating_sub(cfg.liveness_bound_ms);
        let schedule = faults::schedule(&mut rng, cfg.profile, &cfg.faults, cfg.nodes, chaos_start, faults_end);
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
            checkers: invariants::all(),
            violation: None,
            report: SimReport::default(),
            faults_end_ms: faults_end,
            last_leader: None,
            task_seq: 0,
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
        self.net.peer_cut[a] == 0 && self.net.peer_cut[b] == 0
    }

    pub(super) fn dcs_latency(&mut self) -> u64 {
        self.rng.gen_range(1..6) + self.net.extra_latency_ms
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { node, gen } if self.nodes[node].wake_gen == gen => self.start_cycle(node),
            Ev::Wake { .. } => {}
            Ev::ReadDone { node, result, sent } => self.read_done(node, result, sent),
            Ev::ActNext { node } => self.act_next(node),
            Ev::TaskDone { node, seq } => self.task_done(node, seq),
            Ev::FenceGuard { node } => self.fence_guard(node),
            Ev::WatchdogCheck { node } => self.watchdog_check(node),
            Ev::Tick => self.tick(),
            Ev::FaultStart(f) => self.fault(f, true),
            Ev::FaultEnd(f) => self.fault(f, false),
            Ev::Reboot { node } => self.reboot(node),
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

    fn start_cycle(&mut self, i: usize) {
        match self.nodes[i].daemon {
            Daemon::Up => {}
            Daemon::Frozen { until_ms } => return self.wake(i, until_ms),
            Daemon::Down => return,
        }
        if self.nodes[i].actions.is_some() {
            return;
        }
        self.nodes[i].actions = Some(VecDeque::new());
        let sent = self.nodes[i].local(self.now);
        if self.dcs_reachable(i) {
            let lat = self.dcs_latency();
            let timeout = self.nodes[i].state.config.timing.retry_timeout_ms;
            let result = if lat > timeout {
                Err(ErrorKind::Unreachable)
            } else {
                ready(self.nodes[i].dcs.read()).map(Box::new).map_err(|e| e.kind)
            };
            self.at(self.now + lat.min(timeout), Ev::ReadDone { node: i, result, sent });
        } else {
            let timeout = self.nodes[i].state.config.timing.retry_timeout_ms;
            self.at(self.now + timeout, Ev::ReadDone { node: i, result: Err(ErrorKind::Unreachable), sent });
        }
    }

    fn read_done(&mut self, i: usize, result: Result<Box<crate::cluster::ClusterView>, ErrorKind>, sent: MonoMillis) {
        match self.nodes[i].daemon {
            Daemon::Up => {}
            Daemon::Frozen { until_ms } => return self.at(until_ms, Ev::ReadDone { node: i, result, sent }),
            Daemon::Down => return,
        }
        let n = &mut self.nodes[i];
        let dcs = match result {
            Ok(view) => {
                n.unreachable_since = None;
                DcsView::Reachable(*view)
            }
            Err(_) => DcsView::Unreachable { since: *n.unreachable_since.get_or_insert(sent) },
        };
        let obs = Observation {
            now: n.local(self.now),
            wall_ms: EPOCH_MS + self.now as i64,
            dcs,
            db: n.db.status(),
            outcomes: std::mem::take(&mut n.outcomes),
            shutdown_requested: false,
            requests: Vec::new(),
        };
        let d = (self.cfg.decide)(&n.state, &obs);
        self.report.decisions += 1;
        let name = n.name.clone();
        self.trace.line(self.now, name.as_str(), || {
            let acts: Vec<String> = d.actions.iter().map(super::trace::action_name).collect();
            format!("{} [{}]", d.reason, acts.join(", "))
        });
        let n = &mut self.nodes[i];
        n.state = d.next;
        n.fence_at = d.fence_at;
        n.wake_local = d.wake_at;
        n.actions = Some(d.actions.into());
        n.lease_gate_failed = false;
        if let Some(f) = d.fence_at {
            let t = self.nodes[i].global(f);
            self.at(t, Ev::FenceGuard { node: i });
        }
        self.act_next(i);
    }

    /// The daemon's fence guard: stops a writable database at the deadline even if the cycle is
    /// stuck in a slow call.
    fn fence_guard(&mut self, i: usize) {
        let n = &self.nodes[i];
        if n.daemon != Daemon::Up {
            return;
        }
        let Some(f) = n.fence_at else { return };
        if n.local(self.now) < f || n.state.config.pause {
            return;
        }
        if n.db.writable() || n.db.task.is_some() {
            self.trace.line(self.now, n.name.as_str(), || "fence guard: immediate stop at the deadline".into());
            self.report.fences += 1;
            let n = &mut self.nodes[i];
            n.db.crash();
            n.vip = false;
        }
    }

    fn watchdog_check(&mut self, i: usize) {
        let Some(exp) = self.nodes[i].watchdog_expire_ms else { return };
        if exp > self.now {
            return;
        }
        self.trace.line(self.now, self.nodes[i].name.as_str(), || "watchdog fired: host reset".into());
        self.report.watchdog_resets += 1;
        self.crash_node(i);
        self.at(self.now + 5_000, Ev::Reboot { node: i });
    }

    pub(super) fn crash_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.daemon = Daemon::Down;
        n.db.crash();
        n.actions = None;
        n.outcomes.clear();
        n.watchdog_expire_ms = None;
        n.fence_at = None;
        n.vip = false;
    }

    fn reboot(&mut self, i: usize) {
        let ttl = self.cfg.config.timing.ttl_ms;
        let n = &mut self.nodes[i];
        if n.daemon != Daemon::Down {
            return;
        }
        n.daemon = Daemon::Up;
        n.state = NodeState::new(n.state.settings.clone());
        n.dcs = self.store.client("service", "sim", n.name.clone(), ttl);
        n.unreachable_since = None;
        self.trace.line(self.now, self.nodes[i].name.as_str(), || "daemon started".into());
        self.wake(i, self.now);
    }

    fn tick(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].db.writable() {
                let grow = self.rng.gen_range(1..32_768);
                if let Some(d) = self.nodes[i].db.data.as_mut() {
                    d.lsn.0 += grow;
                    self.report.writes_acked += 1;
                }
            }
        }
        for i in 0..self.nodes.len() {
            self.replicate(i);
        }
        self.at(self.now + TICK_MS, Ev::Tick);
    }

    fn replicate(&mut self, i: usize) {
        let r = &self.nodes[i];
        let running_replica = r.db.process == crate::sim::db::SimProcess::Running { in_recovery: true };
        let up = r.db.upstream.as_ref().and_then(|u| self.nodes.iter().position(|n| &n.name == u));
        let source = up.filter(|&u| {
            let s = &self.nodes[u];
            running_replica
                && self.peers_connected(i, u)
                && matches!(s.db.process, crate::sim::db::SimProcess::Running { .. })
                && matches!((&s.db.data, &r.db.data), (Some(sd), Some(rd)) if sd.can_serve(rd))
        });
        let Some(u) = source else {
            self.nodes[i].db.streaming = false;
            return;
        };
        let Some(src) = self.nodes[u].db.data.clone() else { return };
        let lag = self.rng.gen_range(0..8_192);
        let r = &mut self.nodes[i];
        if let Some(d) = r.db.data.as_mut() {
            d.timeline = src.timeline;
            d.history = src.history.clone();
            d.lsn = d.lsn.max(crate::types::Lsn(src.lsn.0.saturating_sub(lag)));
        }
        r.db.streaming = true;
    }

    fn fault(&mut self, f: Fault, start: bool) {
        let i = f.node;
        if start {
            self.report.faults += 1;
            self.trace.line(self.now, "fault", || format!("start {f}"));
        } else {
            self.trace.line(self.now, "fault", || format!("end {f}"));
        }
        match f.kind {
            FaultKind::NodeCrash if start => self.crash_node(i),
            FaultKind::NodeCrash => self.reboot(i),
            FaultKind::DbCrash if start => self.nodes[i].db.crash(),
            FaultKind::DbCrash => {}
            FaultKind::Freeze if start => {
                if self.nodes[i].daemon == Daemon::Up {
                    self.nodes[i].daemon = Daemon::Frozen { until_ms: self.now + f.duration_ms };
                }
            }
            FaultKind::Freeze => {
                if matches!(self.nodes[i].daemon, Daemon::Frozen { .. }) {
                    self.nodes[i].daemon = Daemon::Up;
                }
            }
            FaultKind::PartitionDcs => self.net.dcs_cut[i] = bump(self.net.dcs_cut[i], start),
            FaultKind::PartitionPeers => self.net.peer_cut[i] = bump(self.net.peer_cut[i], start),
            FaultKind::Isolate => {
                self.net.dcs_cut[i] = bump(self.net.dcs_cut[i], start);
                self.net.peer_cut[i] = bump(self.net.peer_cut[i], start);
            }
            FaultKind::DcsOutage => self.net.dcs_down = bump(self.net.dcs_down, start),
            FaultKind::DcsDelay => self.net.extra_latency_ms = if start { f.extra_latency_ms } else { 0 },
        }
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
                vip: n.vip,
            })
            .collect();
        let view = ready(self.nodes[0].dcs.read()).ok();
        let snap = Snapshot {
            now_ms: self.now,
            nodes: &nodes,
            lease_holder: view.as_ref().and_then(|v| v.leader_name().cloned()),
            cluster_timeline: view.as_ref().map(|v| v.timeline()).unwrap_or_default(),
        };
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
