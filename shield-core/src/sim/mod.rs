//! A seeded cluster simulator.
//!
//! N nodes each run [`crate::decide`] against an in-memory DCS with TTL leases (the same
//! [`crate::testing::MemoryStore`] the unit tests use), a simulated network and simulated
//! PostgreSQL, all driven by one seeded RNG on simulated time. Faults ([`FaultKind`]) are drawn
//! from the seed; named invariants ([`invariants`]) are checked as the run goes. The same seed
//! always gives the same trace.
//!
//! ```
//! use shield_core::sim::{run_seed, SimConfig};
//! let report = run_seed(&SimConfig { nodes: 3, duration_ms: 120_000, ..SimConfig::default() }, 7);
//! assert!(report.violation.is_none(), "{}", report.render());
//! ```
//!
//! The model, and what it leaves out:
//! - DCS calls are applied at the instant they are sent and answered after a latency (1-5 ms, more
//!   under [`FaultKind::DcsDelay`]); a call slower than `retry_timeout` is reported unreachable
//!   although it took effect. A lease renewal is therefore counted from the earliest point it
//!   could have reached the DCS, the pessimistic case for fencing.
//! - Each node's clock runs at a fixed rate within ±[`crate::Timing::MAX_DRIFT_PPM`] of the DCS's.
//! - The database's WAL grows on the primary every 100 ms; replicas stream from their upstream
//!   when the network and their timeline history allow, with up to 8 KiB of lag.
//! - The watchdog is modelled as hardware: armed and not fed in time, it resets the node.
//! - Not modelled: synchronous replication, disk failures, byzantine DCS answers.

mod act;
mod db;
mod faults;
pub mod invariants;
mod operator;
mod trace;
mod world;

use crate::config::DynamicConfig;
use crate::decide::{Decision, NodeState};
use crate::observation::Observation;

pub use db::{SimData, SimDb, SimProcess};
pub use faults::{schedule, Fault, FaultKind, FaultProfile};
pub use trace::action_name;
pub use world::World;

/// A decision function: [`crate::decide`], or a deliberately broken one in tests.
pub type DecideFn = fn(&NodeState, &Observation) -> Decision;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Total simulated time.
    pub duration_ms: u64,
    /// Faults stop this long before the end; then the cluster must have settled.
    pub liveness_bound_ms: u64,
    /// Which faults to draw (for [`FaultProfile::Chaos`]).
    pub faults: Vec<FaultKind>,
    /// Faults injected as given, besides the drawn ones (a test's own schedule; those that end
    /// after the faults stop are cut short).
    pub extra_faults: Vec<Fault>,
    /// How harsh the faults are.
    pub profile: FaultProfile,
    /// The cluster's dynamic config.
    pub config: DynamicConfig,
    /// Nodes have a watchdog (mode automatic).
    pub watchdog: bool,
    /// The daemon's in-process fence guard: a timer that stops a writable database at the
    /// decision's deadline however long the loop is stuck, and refuses to start a promotion, a
    /// start as primary or a VIP binding past it. Off: only decide() itself fences.
    pub fence_guard: bool,
    /// The fence keeper: a separate process that enforces the deadline while the daemon is
    /// frozen or dead (not while the whole host is).
    pub keeper: bool,
    /// The largest clock-rate drift drawn for a node, in parts per million. Beyond
    /// [`crate::Timing::MAX_DRIFT_PPM`] the fencing deadline no longer covers it: the report then
    /// says so on its first line, and violations are expected.
    pub max_drift_ppm: u64,
    /// Leases outlive their TTL by a delay drawn per schedule from `0..=` this (an etcd leader
    /// election can keep a lease up to an election timeout longer).
    pub lease_overshoot_max_ms: u64,
    /// Invariants not checked (by name), so that a fire test can show one checker catching its
    /// rule although another would have caught the same run first.
    pub invariants_off: Vec<&'static str>,
    /// Keep the whole trace, not just the last lines.
    pub trace_all: bool,
    /// The decision function.
    pub decide: DecideFn,
}

impl Default for SimConfig {
    fn default() -> Self {
        let mut config = DynamicConfig::default();
        config.postgresql.use_pg_rewind = true;
        SimConfig {
            nodes: 3,
            duration_ms: 600_000,
            liveness_bound_ms: 60_000,
            faults: FaultKind::ALL.to_vec(),
            extra_faults: Vec::new(),
            profile: FaultProfile::Chaos,
            config,
            watchdog: true,
            fence_guard: true,
            keeper: true,
            max_drift_ppm: crate::config::Timing::MAX_DRIFT_PPM,
            lease_overshoot_max_ms: 1_000,
            invariants_off: Vec::new(),
            trace_all: false,
            decide: crate::decide,
        }
    }
}

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// What happened.
    pub problem: String,
    /// When, global simulated ms.
    pub at_ms: u64,
}

/// The result of one seeded run.
#[derive(Clone, Debug, Default)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// The first violation, if any.
    pub violation: Option<Violation>,
    /// The trace (all lines, or the last few hundred).
    pub trace: Vec<String>,
    /// decide() calls.
    pub decisions: u64,
    /// Promotions.
    pub promotions: u64,
    /// pg_rewind runs.
    pub rewinds: u64,
    /// Faults injected.
    pub faults: u64,
    /// Watchdog resets.
    pub watchdog_resets: u64,
    /// Writable databases stopped by fencing (decision or fence guard).
    pub fences: u64,
    /// Client writes acknowledged (one per primary per 100 ms).
    pub writes_acked: u64,
    /// Acknowledged writes that a promotion left out of the new timeline's lineage (lost at a
    /// failover, asynchronous replication).
    pub writes_lost: u64,
    /// Callbacks run (`on_start`, `on_role_change`, ...).
    pub callbacks: u64,
    /// PostgreSQL configuration reloads.
    pub reloads: u64,
    /// Failsafe rounds every member accepted, and rounds some member refused or did not answer.
    pub failsafe_accepted: u64,
    pub failsafe_refused: u64,
    /// Set when the schedule went beyond what Shield's guarantees assume (clock drift beyond the
    /// bound the fencing deadline absorbs): a violation is then no bug, and no pass is a proof.
    pub beyond_the_model: Option<String>,
}

impl SimReport {
    /// Adds another run's counters to this one (for soak totals).
    pub fn add_counts(&mut self, other: &SimReport) {
        self.decisions += other.decisions;
        self.promotions += other.promotions;
        self.rewinds += other.rewinds;
        self.faults += other.faults;
        self.watchdog_resets += other.watchdog_resets;
        self.fences += other.fences;
        self.writes_acked += other.writes_acked;
        self.writes_lost += other.writes_lost;
        self.callbacks += other.callbacks;
        self.reloads += other.reloads;
        self.failsafe_accepted += other.failsafe_accepted;
        self.failsafe_refused += other.failsafe_refused;
    }

    /// One summary line, and on a violation the seed to reproduce it and the trace.
    pub fn render(&self) -> String {
        let mut s = format!(
            "seed {}: {} decisions, {} faults, {} promotions, {} fences, {} rewinds, {} watchdog resets, {} writes ({} lost at failovers)",
            self.seed,
            self.decisions,
            self.faults,
            self.promotions,
            self.fences,
            self.rewinds,
            self.watchdog_resets,
            self.writes_acked,
            self.writes_lost
        );
        if let Some(why) = &self.beyond_the_model {
            s.push_str(&format!("\nBEYOND THE MODEL'S BOUNDS: {why}"));
        }
        if let Some(v) = &self.violation {
            s.push_str(&format!(
                "\nVIOLATION of {} at {}.{:03}s: {}\nreproduce: cargo run --release --example simulate -- --seed {}\ntrace:\n",
                v.invariant,
                v.at_ms / 1000,
                v.at_ms % 1000,
                v.problem,
                self.seed
            ));
            for l in &self.trace {
                s.push_str(l);
                s.push('\n');
            }
        }
        s
    }
}

/// Runs one seed.
pub fn run_seed(cfg: &SimConfig, seed: u64) -> SimReport {
    World::new(cfg.clone(), seed).run()
}
