//! Scale: many 3-member clusters on one 3-member etcd, each member running the daemon's loop.
//!
//! Starts a real 3-member etcd on loopback (the test kit's), then `SHIELD_SCALE_CLUSTERS`
//! clusters (default 100) of 3 members each, all in this one process. Every member is an async
//! task running the daemon's cycle: observe (a read of its own `EtcdDcs` handle, with the
//! daemon's settings: `cache_view` on, so the view comes from one long-lived watch and the lease
//! is renewed with one keep-alive stream; and the status of an in-memory database,
//! `shield_core::testing::MemoryDb`), `shield_core::decide`, act (every DCS action exactly as
//! `shield-bin/src/daemon/act.rs` runs it, each bounded by `retry_timeout`; database tasks on the
//! memory database; watchdog, VIP, callbacks and service registration are no-ops that succeed;
//! peers are probed by reading their memory databases), then sleep until `wake_at` or until a
//! watched key changes (the daemon's `wake.rs`). The clusters bootstrap themselves through the
//! initialize race with the timings under test in the bootstrapped dynamic config.
//!
//! Once every cluster has a leader (and a short settling time), it measures for
//! `SHIELD_SCALE_SECS` seconds (default 120): etcd's own gRPC counters summed over the three
//! members (`grpc_server_msg_received_total`: every message a client sent, one per unary call
//! and one per message on a stream; `grpc_server_started_total`: calls and streams opened), the
//! CPU (utime + stime) and RSS of the three etcd processes, the latency of every `renew_leader`
//! call (p50, p99, max), failed renewals and false failovers (a leader key acquired by anyone
//! after the cluster's first leader took it; and, at the end, clusters whose leader key names
//! someone else), and this process's own CPU and RSS. It prints them beside Patroni's measured
//! rate: 7-8 etcd requests per member per minute at its defaults (ttl 30 s, loop_wait 10 s), 60
//! at loop_wait 1 s.
//!
//! Timings (`SHIELD_SCALE_TIMINGS`): `shield` (default: ttl 4 s, loop_wait 1 s, retry_timeout
//! 1.5 s) or `patroni` (ttl 30 s, loop_wait 10 s, retry_timeout 10 s). With
//! `SHIELD_SCALE_WAL_BYTES` > 0 every leader advances its cluster's WAL by that many bytes each
//! cycle (a busy database: status and member keys change every cycle); by default the
//! databases are idle.
//!
//! What it leaves out: no PostgreSQL (the databases are in memory and answer at once), no REST
//! API (no HTTP peer probes, no REST DCS clients), one process for all members (one tokio
//! runtime with 2 worker threads instead of one daemon per host), and everything, etcd included,
//! on loopback on one small machine (2 cores here) shared with the members: etcd's latencies
//! and CPU are those of a box that is also running every member. No faults are injected: any
//! failover counted is a false one.
//!
//! ```text
//! SHIELD_SCALE_CLUSTERS=100 SHIELD_SCALE_TIMINGS=shield SHIELD_SCALE_SECS=120 \
//!     cargo bench -p shield-benches --bench scale
//! ```
//! (etcd from `scripts/setup.sh`, or `SHIELD_ETCD_BIN`.)

#[path = "../testkit/servers.rs"]
mod servers;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shield_core::action::{Action, DbTask, StopMode};
use shield_core::cluster::{ClusterView, MemberData, Tags};
use shield_core::config::{DynamicConfig, Timing};
use shield_core::observation::{DbProcess, DbStatus, DcsView, Observation, Outcome, PeerReport};
use shield_core::ports::{Database, Dcs, DcsKey, ErrorKind, PortError};
use shield_core::testing::MemoryDb;
use shield_core::{
    decide, Decision, MemberName, MonoMillis, NodeSettings, NodeState, Revision, SystemId, WatchdogMode,
};
use shield_dcs_etcd::{EtcdConfig, EtcdDcs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MEMBERS: usize = 3;

/// What every member reports to the measurement.
#[derive(Debug, Default)]
struct Shared {
    /// Inside the measured window.
    measuring: AtomicBool,
    /// Latency of every renewal in the window, µs.
    renewals: Mutex<Vec<u64>>,
    /// Renewals that failed in the window.
    renew_failed: AtomicU64,
    /// Per cluster: who took the leader key first.
    first_leader: Vec<Mutex<Option<MemberName>>>,
    /// Leader keys taken after a cluster's first leader took it: before / in the window.
    changes_before: AtomicU64,
    changes_in_window: AtomicU64,
    /// Lease-losses and demotions seen in the window (a leader that stopped holding).
    leases_lost: AtomicU64,
    /// DCS writes that failed in the window.
    writes_failed: AtomicU64,
    /// Cycles run in the window.
    cycles: AtomicU64,
    /// Cycles in the window whose DCS read failed.
    unreachable_cycles: AtomicU64,
}

impl Shared {
    fn measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }
}

fn name(s: &str) -> MemberName {
    MemberName::new(s.to_owned()).unwrap_or_else(|e| unreachable!("{e}"))
}

fn env_u64(key: &str, default: u64) -> u64 {
    match std::env::var(key) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{key}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

fn mono(start: Instant) -> MonoMillis {
    MonoMillis(start.elapsed().as_millis() as u64)
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A DCS call bounded by `retry_timeout`, as the daemon bounds it.
async fn bounded<T>(t: Duration, f: impl std::future::Future<Output = Result<T, PortError>>) -> Result<T, PortError> {
    tokio::time::timeout(t, f)
        .await
        .unwrap_or_else(|_| Err(PortError::new(ErrorKind::Unreachable, "DCS call exceeded retry_timeout")))
}

/// What a decision turns on in a view (the daemon's `wake::Watched`): a change wakes the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Watched {
    leader: Option<(Option<MemberName>, Revision)>,
    failover: Option<Revision>,
    config: Option<Revision>,
    initialize: Option<String>,
    sync: Option<String>,
}

impl Watched {
    fn of(v: &ClusterView) -> Watched {
        Watched {
            leader: v.leader.as_ref().map(|l| (l.name.clone(), l.revision)),
            failover: v.failover.as_ref().map(|_| v.failover_revision.unwrap_or_default()),
            config: v.config.as_ref().map(|(_, r)| *r),
            initialize: v.initialize.as_ref().map(|i| format!("{i:?}")),
            sync: v.sync.as_ref().map(|s| format!("{s:?}")),
        }
    }
}

/// One member: its DCS handle, its database, its cluster's other databases (for peer probes).
struct Member {
    cluster: usize,
    dcs: EtcdDcs,
    db: MemoryDb,
    peers: Vec<(MemberName, MemoryDb)>,
    state: NodeState,
    shared: Arc<Shared>,
    wal_bytes: u64,
    start: Instant,
    outcomes: Vec<Outcome>,
    unreachable_since: Option<MonoMillis>,
}

impl Member {
    fn retry(&self) -> Duration {
        Duration::from_millis(self.state.config.timing.retry_timeout_ms)
    }

    fn write_failed<T>(&mut self, what: &str, r: Result<T, PortError>) {
        if let Err(e) = r {
            if self.shared.measuring() {
                self.shared.writes_failed.fetch_add(1, Ordering::Relaxed);
            }
            self.outcomes.push(Outcome::DcsWriteFailed { what: what.to_owned(), kind: e.kind });
        }
    }

    /// The daemon's loop: observe, decide, act, sleep.
    async fn run(mut self) {
        loop {
            if self.wal_bytes > 0 && self.state.lease.is_some() {
                // Clients write on the primary and the standbys replay it.
                let _ = self.db.write(self.wal_bytes);
                for (_, p) in &self.peers {
                    let _ = p.write(self.wal_bytes);
                }
            }
            let obs = self.observe().await;
            let d = decide(&self.state, &obs);
            let held = self.state.lease.is_some();
            self.state = d.next.clone();
            if held && self.state.lease.is_none() && self.shared.measuring() {
                self.shared.leases_lost.fetch_add(1, Ordering::Relaxed);
            }
            let (exit, wake_now) = self.act(&obs, &d).await;
            if exit {
                return;
            }
            if self.shared.measuring() {
                self.shared.cycles.fetch_add(1, Ordering::Relaxed);
                if matches!(obs.dcs, DcsView::Unreachable { .. }) {
                    self.shared.unreachable_cycles.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !wake_now {
                let seen = match &obs.dcs {
                    DcsView::Reachable(v) => Some((v.revision, Watched::of(v))),
                    DcsView::Unreachable { .. } => None,
                };
                self.sleep(self.start + Duration::from_millis(d.wake_at.0), seen).await;
            }
        }
    }

    async fn observe(&mut self) -> Observation {
        let sent = mono(self.start);
        let (read, status) = tokio::join!(tokio::time::timeout(self.retry(), self.dcs.read()), self.db.status());
        let dcs = match read {
            Ok(Ok(view)) => {
                self.unreachable_since = None;
                DcsView::Reachable(view)
            }
            Ok(Err(_)) | Err(_) => DcsView::Unreachable { since: *self.unreachable_since.get_or_insert(sent) },
        };
        // The memory database fails only when told to; nothing here tells it.
        let db = status.unwrap_or_else(|_| DbStatus::empty());
        Observation {
            now: mono(self.start),
            wall_ms: wall_ms(),
            dcs,
            db,
            outcomes: std::mem::take(&mut self.outcomes),
            shutdown_requested: false,
            requests: Vec::new(),
            failsafe_vouched: None,
        }
    }

    /// Sleeps until `wake` or until what `seen` holds changes in the handle's view.
    async fn sleep(&self, wake: Instant, seen: Option<(Revision, Watched)>) {
        let dcs = &self.dcs;
        let watch = async move {
            let Some((mut rev, seen)) = seen else { return std::future::pending::<()>().await };
            loop {
                let left = wake.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return std::future::pending::<()>().await;
                }
                match dcs.watch(rev, left.as_millis() as u64).await {
                    Ok(w) if w.revision == rev => return std::future::pending::<()>().await,
                    Ok(w) => match dcs.read().await {
                        Ok(v) if Watched::of(&v) != seen => return,
                        Ok(v) => rev = v.revision.max(w.revision),
                        Err(_) => return std::future::pending::<()>().await,
                    },
                    Err(_) => return std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = watch => {}
        }
    }

    /// Runs the decision's actions in order, as the daemon's `act` does. Returns (exit, whether
    /// a database task finished that wakes the loop at once).
    async fn act(&mut self, obs: &Observation, d: &Decision) -> (bool, bool) {
        let (mut exit, mut wake_now) = (false, false);
        let mut lease_gate_failed = false;
        for action in d.actions.clone() {
            let fenced = d.fence_at.is_none_or(|f| mono(self.start) >= f);
            if lease_gate_failed {
                if let Some(skipped) = Outcome::lease_skipped(&action) {
                    self.outcomes.push(skipped);
                    continue;
                }
            }
            match action {
                Action::Exit => exit = true,
                Action::StopDb { mode: StopMode::Immediate } => {
                    let result = self.db.stop(StopMode::Immediate).await.map_err(|e| e.to_string());
                    self.outcomes.push(Outcome::Stopped { mode: StopMode::Immediate, result });
                }
                Action::StopDb { mode: StopMode::Fast } => {
                    wake_now |= self.run_task(DbTask::Stop(StopMode::Fast)).await
                }
                Action::RunDbTask { task } => {
                    if task.makes_primary() && fenced && !self.state.config.pause {
                        let e = PortError::new(ErrorKind::LeaseLost, "the fencing deadline passed first");
                        self.outcomes.push(Outcome::DbTaskDone { task, result: Err(e) });
                    } else {
                        wake_now |= self.run_task(task).await;
                    }
                }
                Action::RenewLeader { ttl_ms, fence_after_ms, .. } => {
                    let sent_at = mono(self.start);
                    let t0 = Instant::now();
                    let result = bounded(self.retry(), self.dcs.renew_leader(ttl_ms)).await.map_err(|e| e.kind);
                    let took = t0.elapsed();
                    if self.shared.measuring() {
                        if result.is_ok() {
                            if let Ok(mut v) = self.shared.renewals.lock() {
                                v.push(took.as_micros() as u64);
                            }
                        } else {
                            self.shared.renew_failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    lease_gate_failed |= result.is_err();
                    self.outcomes.push(Outcome::LeaderRenew { sent_at, fence_after_ms, result });
                }
                Action::AcquireLeader { ttl_ms, fence_after_ms, replacing } => {
                    let sent_at = mono(self.start);
                    let result = match replacing {
                        None => bounded(self.retry(), self.dcs.acquire_leader(ttl_ms)).await,
                        Some(rev) => bounded(self.retry(), self.dcs.take_leader(ttl_ms, rev)).await,
                    }
                    .map_err(|e| e.kind);
                    let won = result == Ok(true);
                    if won {
                        self.leader_taken();
                    }
                    lease_gate_failed |= !won;
                    self.outcomes.push(Outcome::LeaderAcquire { sent_at, fence_after_ms, result });
                }
                Action::ReleaseLeader => {
                    let result = bounded(self.retry(), self.dcs.release_leader()).await.map_err(|e| e.kind);
                    self.outcomes.push(Outcome::LeaderRelease { result });
                }
                Action::RaceInitialize { system_id } => {
                    let result = bounded(self.retry(), self.dcs.create_initialize(system_id)).await.map_err(|e| e.kind);
                    self.outcomes.push(Outcome::InitializeRace { result });
                }
                Action::WriteInitialize { system_id } => {
                    let r = bounded(self.retry(), self.dcs.write_initialize(system_id)).await;
                    self.write_failed("initialize", r);
                }
                Action::WriteConfig { config } => {
                    let r = bounded(self.retry(), self.dcs.write_config(&config, None)).await;
                    self.write_failed("config", r);
                }
                Action::TouchMember { mut data } => {
                    complete_member(&mut data, &obs.db);
                    let r = bounded(self.retry(), self.dcs.touch_member(&data)).await;
                    self.write_failed("member", r);
                }
                Action::WriteStatus { status } => {
                    let r = bounded(self.retry(), self.dcs.write_status(&status)).await;
                    self.write_failed("status", r);
                }
                Action::WriteHistory { lines } => {
                    let r = bounded(self.retry(), self.dcs.write_history(&lines)).await;
                    lease_gate_failed |= r.is_err();
                    self.write_failed("history", r);
                }
                Action::ClearFailover { revision, .. } => {
                    let r = bounded(self.retry(), self.dcs.delete_cas(DcsKey::Failover, revision)).await;
                    self.write_failed("failover", r);
                }
                Action::ProbePeers => {
                    let reports = self.probe_peers().await;
                    self.outcomes.push(Outcome::PeersProbed { reports });
                }
                Action::WriteFailsafe { topology } => {
                    let r = bounded(self.retry(), self.dcs.write_failsafe(&topology)).await;
                    lease_gate_failed |= r.is_err();
                    self.write_failed("failsafe", r);
                }
                // The scale bench runs without failsafe_mode: no member is asked, none accepts.
                Action::ConfirmFailsafe { members, fence_after_ms, .. } => {
                    let sent_at = mono(self.start);
                    let refused =
                        members.into_keys().map(|m| (m, "not modelled in the scale bench".to_owned())).collect();
                    self.outcomes.push(Outcome::FailsafeConfirmed { sent_at, fence_after_ms, refused });
                }
                Action::SyncSlots { create, drop, advance } => {
                    if let Err(e) = self.db.sync_slots(&create, &drop, &advance).await {
                        self.outcomes.push(Outcome::SlotsSyncFailed { reason: e.to_string() });
                    }
                }
                Action::ReloadDb => {
                    let running = matches!(obs.db.process, DbProcess::Running { .. });
                    self.outcomes.push(Outcome::DbReloaded { result: Ok(running) });
                }
                // No watchdog, VIP, callbacks or Consul here: each succeeds and reports nothing.
                Action::ArmWatchdog
                | Action::DisarmWatchdog
                | Action::AddVip
                | Action::RemoveVip
                | Action::RunCallback { .. }
                | Action::RegisterService { .. } => {}
            }
        }
        (exit, wake_now)
    }

    /// A database task on the memory database (it finishes at once; the daemon runs it in the
    /// background and reports it at the next observation, as here). Returns whether the loop
    /// wakes at once, as the daemon's does after a finished task.
    async fn run_task(&mut self, task: DbTask) -> bool {
        let r = self.db.run(&task).await;
        let wake_now = r.is_ok() || matches!(task, DbTask::Promote { .. } | DbTask::Stop(_));
        self.outcomes.push(Outcome::DbTaskDone { task, result: r });
        wake_now
    }

    /// The peers' answers, read from their memory databases (the daemon asks their REST APIs).
    async fn probe_peers(&self) -> BTreeMap<MemberName, PeerReport> {
        let mut out = BTreeMap::new();
        for (n, db) in &self.peers {
            let Ok(st) = db.status().await else { continue };
            out.insert(
                n.clone(),
                PeerReport {
                    is_primary: st.process == (DbProcess::Running { in_recovery: false }),
                    wal_position: st.wal_position(),
                    timeline: st.timeline,
                    can_promote: Tags::default().can_promote(),
                    priority: Tags::default().priority(),
                },
            );
        }
        out
    }

    /// This member took its cluster's leader key.
    fn leader_taken(&self) {
        let Ok(mut first) = self.shared.first_leader[self.cluster].lock() else { return };
        if first.is_none() {
            *first = Some(self.state.settings.name.clone());
        } else if self.shared.measuring() {
            self.shared.changes_in_window.fetch_add(1, Ordering::Relaxed);
        } else {
            self.shared.changes_before.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The daemon's `publish::complete_member`, from what the memory database reports.
fn complete_member(data: &mut MemberData, db: &DbStatus) {
    if db.is_running_replica() {
        data.receive_lsn = db.received_lsn.filter(|l| l.0 > 0);
        data.replay_lsn = db.replayed_lsn.filter(|l| l.0 > 0);
        data.replication_state = db.streaming.then(|| "streaming".to_owned());
    } else {
        data.receive_lsn = None;
        data.replay_lsn = None;
    }
}

/// etcd's counters: (metric, grpc_method) → value, from `/metrics` of one member.
async fn etcd_metrics(port: u16) -> Result<HashMap<(String, String), f64>, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.map_err(|e| e.to_string())?;
    let mut out = HashMap::new();
    for line in body.lines() {
        for metric in ["grpc_server_msg_received_total", "grpc_server_started_total"] {
            let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{')) else { continue };
            let Some(m) = rest.split("grpc_method=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
            let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else { continue };
            *out.entry((metric.to_owned(), m.to_owned())).or_insert(0.0) += v;
        }
    }
    Ok(out)
}

/// utime + stime of `pid` (or "self"), in clock ticks (100 Hz).
fn cpu_ticks(pid: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0 };
    let Some(after) = s.rsplit_once(')').map(|(_, a)| a) else { return 0 };
    let f: Vec<&str> = after.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    n(11) + n(12)
}

/// VmRSS of `pid` (or "self"), KiB.
fn rss_kib(pid: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e3
}

/// One snapshot of everything counted from outside the members.
struct Snapshot {
    at: Instant,
    metrics: HashMap<(String, String), f64>,
    etcd_ticks: u64,
    self_ticks: u64,
}

async fn snapshot(etcd: &servers::EtcdCluster) -> Result<Snapshot, String> {
    let mut metrics = HashMap::new();
    for m in &etcd.members {
        for (k, v) in etcd_metrics(m.client_port).await.map_err(|e| format!("etcd {} /metrics: {e}", m.name))? {
            *metrics.entry(k).or_insert(0.0) += v;
        }
    }
    Ok(Snapshot {
        at: Instant::now(),
        metrics,
        etcd_ticks: etcd.members.iter().map(|m| cpu_ticks(&m.pid().to_string())).sum(),
        self_ticks: cpu_ticks("self"),
    })
}

fn etcd_rss_kib(etcd: &servers::EtcdCluster) -> u64 {
    etcd.members.iter().map(|m| rss_kib(&m.pid().to_string())).sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clusters = env_u64("SHIELD_SCALE_CLUSTERS", 100).max(1) as usize;
    let secs = env_u64("SHIELD_SCALE_SECS", 120).max(1);
    let wal_bytes = env_u64("SHIELD_SCALE_WAL_BYTES", 0);
    let timings = std::env::var("SHIELD_SCALE_TIMINGS").unwrap_or_else(|_| "shield".to_owned());
    let timing = match timings.as_str() {
        "shield" => Timing::default(),
        "patroni" => Timing { ttl_ms: 30_000, loop_wait_ms: 10_000, retry_timeout_ms: 10_000, ..Timing::default() },
        other => {
            eprintln!("SHIELD_SCALE_TIMINGS={other:?}: expected `shield` or `patroni`");
            std::process::exit(2);
        }
    };
    let Some(etcd) = servers::EtcdCluster::start(3) else {
        eprintln!("etcd not found: run scripts/setup.sh or set SHIELD_ETCD_BIN");
        std::process::exit(1);
    };
    let eps = etcd.endpoints();
    if let Err(e) = wait_ready(&eps).await {
        eprintln!("setup failed: {e}");
        std::process::exit(1);
    }
    let members_total = clusters * MEMBERS;
    println!(
        "{clusters} clusters x {MEMBERS} members = {members_total} members on a 3-member etcd ({}), timings {timings}: \
         ttl {} s, loop_wait {} s, retry_timeout {} s",
        eps.join(" "),
        timing.ttl_ms as f64 / 1e3,
        timing.loop_wait_ms as f64 / 1e3,
        timing.retry_timeout_ms as f64 / 1e3,
    );

    let config = DynamicConfig { timing, ..DynamicConfig::default() };
    let shared =
        Arc::new(Shared { first_leader: (0..clusters).map(|_| Mutex::new(None)).collect(), ..Shared::default() });
    let mut tasks = Vec::with_capacity(members_total);
    let setup = Instant::now();
    for c in 0..clusters {
        let scope = format!("scale-{c:04}");
        let names: Vec<MemberName> = (0..MEMBERS).map(|i| name(&format!("m{i}"))).collect();
        let dbs: Vec<MemoryDb> =
            (0..MEMBERS).map(|_| MemoryDb::new(SystemId(7_300_000_000_000_000_000 + c as u64))).collect();
        for i in 0..MEMBERS {
            let mut cfg = EtcdConfig::new(eps.clone(), &scope, names[i].clone());
            cfg.ttl_ms = timing.ttl_ms;
            cfg.retry_timeout_ms = timing.retry_timeout_ms;
            cfg.cache_view = true;
            let mut settings = NodeSettings::new(names[i].clone());
            settings.bootstrap_config = config.clone();
            settings.watchdog = WatchdogMode::Off;
            settings.conn_url = Some(format!("postgres://127.0.0.{}:5432/postgres", i + 1));
            settings.api_url = Some(format!("http://127.0.0.{}:8008/patroni", i + 1));
            let member = Member {
                cluster: c,
                dcs: EtcdDcs::new(cfg),
                db: dbs[i].clone(),
                peers: (0..MEMBERS).filter(|&j| j != i).map(|j| (names[j].clone(), dbs[j].clone())).collect(),
                state: NodeState::new(settings),
                shared: shared.clone(),
                wal_bytes,
                start: Instant::now(),
                outcomes: Vec::new(),
                unreachable_since: None,
            };
            tasks.push(tokio::spawn(member.run()));
            // Members do not all start in the same millisecond.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    // Every cluster led.
    let deadline = Instant::now() + Duration::from_secs(120.max(clusters as u64));
    loop {
        let led = shared.first_leader.iter().filter(|l| l.lock().is_ok_and(|l| l.is_some())).count();
        if led == clusters {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("setup failed: only {led} of {clusters} clusters have a leader after {:?}", setup.elapsed());
            for t in &tasks {
                t.abort();
            }
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("every cluster led after {:.1} s", setup.elapsed().as_secs_f64());
    // Replicas clone and start, members publish: let the clusters settle into steady state.
    tokio::time::sleep(Duration::from_millis((3 * timing.loop_wait_ms).max(5_000))).await;

    let before = match snapshot(&etcd).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("setup failed: {e}");
            std::process::exit(1);
        }
    };
    shared.measuring.store(true, Ordering::SeqCst);
    let (mut etcd_rss_max, mut self_rss_max) = (0u64, 0u64);
    let end = before.at + Duration::from_secs(secs);
    while Instant::now() < end {
        etcd_rss_max = etcd_rss_max.max(etcd_rss_kib(&etcd));
        self_rss_max = self_rss_max.max(rss_kib("self"));
        tokio::time::sleep(end.saturating_duration_since(Instant::now()).min(Duration::from_secs(5))).await;
    }
    shared.measuring.store(false, Ordering::SeqCst);
    let after = match snapshot(&etcd).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("measurement failed: {e}");
            std::process::exit(1);
        }
    };
    let (etcd_rss_end, self_rss_end) = (etcd_rss_kib(&etcd), rss_kib("self"));
    etcd_rss_max = etcd_rss_max.max(etcd_rss_end);
    self_rss_max = self_rss_max.max(self_rss_end);
    for t in &tasks {
        t.abort();
    }

    // Whose name each cluster's leader key holds now, read directly (no cached view).
    let mut moved = 0usize;
    let mut leaderless = 0usize;
    for c in 0..clusters {
        let first = shared.first_leader[c].lock().ok().and_then(|l| l.clone());
        let mut cfg = EtcdConfig::new(eps.clone(), &format!("scale-{c:04}"), name("observer"));
        cfg.retry_timeout_ms = 5_000;
        match EtcdDcs::new(cfg).read().await {
            Ok(v) => match v.leader.and_then(|l| l.name) {
                Some(n) if Some(&n) == first.as_ref() => {}
                Some(_) => moved += 1,
                None => leaderless += 1,
            },
            Err(_) => leaderless += 1,
        }
    }

    report(Report {
        clusters,
        timings: &timings,
        timing,
        wal_bytes,
        before: &before,
        after: &after,
        etcd_rss: (etcd_rss_end, etcd_rss_max),
        self_rss: (self_rss_end, self_rss_max),
        shared: &shared,
        moved,
        leaderless,
    });
}

/// Waits until etcd answers a read.
async fn wait_ready(eps: &[String]) -> Result<(), String> {
    let d = EtcdDcs::new(EtcdConfig::new(eps.to_vec(), "scale-probe", name("probe")));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match d.read().await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(format!("etcd did not answer within 30 s: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

struct Report<'a> {
    clusters: usize,
    timings: &'a str,
    timing: Timing,
    wal_bytes: u64,
    before: &'a Snapshot,
    after: &'a Snapshot,
    etcd_rss: (u64, u64),
    self_rss: (u64, u64),
    shared: &'a Shared,
    moved: usize,
    leaderless: usize,
}

fn report(r: Report<'_>) {
    let members = (r.clusters * MEMBERS) as f64;
    let secs = r.after.at.duration_since(r.before.at).as_secs_f64();
    let mins = secs / 60.0;
    let per_member_min = |v: f64| v / mins / members;
    // Differences by (metric, method).
    let mut diff: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (k, v) in &r.after.metrics {
        let d = v - r.before.metrics.get(k).copied().unwrap_or(0.0);
        if d > 0.0 {
            diff.insert(k.clone(), d);
        }
    }
    let total = |metric: &str| diff.iter().filter(|((m, _), _)| m == metric).map(|(_, v)| v).fold(0.0, |a, v| a + v);
    let received = total("grpc_server_msg_received_total");
    let started = total("grpc_server_started_total");
    let mut renewals = r.shared.renewals.lock().map(|v| v.clone()).unwrap_or_default();
    renewals.sort_unstable();
    let etcd_cpu = (r.after.etcd_ticks - r.before.etcd_ticks) as f64 / 100.0;
    let self_cpu = (r.after.self_ticks - r.before.self_ticks) as f64 / 100.0;
    let mib = |k: u64| k as f64 / 1024.0;

    println!();
    println!("== scale: {secs:.0} s measured ==");
    println!("{:<44} {} x {MEMBERS} = {members}", "clusters x members", r.clusters);
    println!(
        "{:<44} {} (ttl {} s, loop_wait {} s, retry_timeout {} s){}",
        "timings",
        r.timings,
        r.timing.ttl_ms as f64 / 1e3,
        r.timing.loop_wait_ms as f64 / 1e3,
        r.timing.retry_timeout_ms as f64 / 1e3,
        if r.wal_bytes > 0 { format!(", WAL {} B/cycle", r.wal_bytes) } else { ", idle databases".to_owned() }
    );
    println!("{:<44} {:.2}", "etcd requests /min/member (msgs received)", per_member_min(received));
    for ((m, method), v) in &diff {
        if m == "grpc_server_msg_received_total" {
            println!("{:<44} {:.2}", format!("  {method}"), per_member_min(*v));
        }
    }
    println!("{:<44} {:.2}", "etcd calls+streams opened /min/member", per_member_min(started));
    for ((m, method), v) in &diff {
        if m == "grpc_server_started_total" {
            println!("{:<44} {:.2}", format!("  {method}"), per_member_min(*v));
        }
    }
    println!("{:<44} {:.0}", "etcd requests /s (all members)", received / secs);
    println!(
        "{:<44} {:.1} ({:.0}% of one core)",
        "etcd CPU s/min (sum of 3)",
        etcd_cpu / mins,
        100.0 * etcd_cpu / secs
    );
    println!("{:<44} {:.0} at the end, {:.0} max", "etcd RSS MiB (sum of 3)", mib(r.etcd_rss.0), mib(r.etcd_rss.1));
    println!(
        "{:<44} {:.1} ({:.0}% of one core)",
        "bench process CPU s/min (all members)",
        self_cpu / mins,
        100.0 * self_cpu / secs
    );
    println!("{:<44} {:.0} at the end, {:.0} max", "bench process RSS MiB", mib(r.self_rss.0), mib(r.self_rss.1));
    println!(
        "{:<44} {} renewals: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        "renew_leader latency",
        renewals.len(),
        pct(&renewals, 0.5),
        pct(&renewals, 0.99),
        pct(&renewals, 1.0)
    );
    println!("{:<44} {}", "failed renewals in the window", r.shared.renew_failed.load(Ordering::Relaxed));
    println!(
        "{:<44} {} in the window ({} before it); {} leaders lost the lease",
        "false failovers (leader key taken again)",
        r.shared.changes_in_window.load(Ordering::Relaxed),
        r.shared.changes_before.load(Ordering::Relaxed),
        r.shared.leases_lost.load(Ordering::Relaxed)
    );
    println!(
        "{:<44} {} held by another member, {} without a leader",
        "leader keys at the end vs first leader", r.moved, r.leaderless
    );
    println!(
        "{:<44} {} cycles ({:.1} /min/member), {} with the DCS unreadable, {} failed DCS writes",
        "member cycles in the window",
        r.shared.cycles.load(Ordering::Relaxed),
        r.shared.cycles.load(Ordering::Relaxed) as f64 / mins / members,
        r.shared.unreachable_cycles.load(Ordering::Relaxed),
        r.shared.writes_failed.load(Ordering::Relaxed)
    );
    println!(
        "{:<44} 7-8 at its defaults (ttl 30 s, loop_wait 10 s); 60 at loop_wait 1 s",
        "Patroni (measured) etcd requests /min/member"
    );
}
