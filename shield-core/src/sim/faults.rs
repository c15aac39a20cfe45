//! Fault kinds and seeded fault schedules.

use std::fmt;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// A kind of fault the simulator can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The whole node dies (daemon and database) and reboots later.
    NodeCrash,
    /// The database crashes; the daemon lives.
    DbCrash,
    /// The daemon stops running for a while (a GC-style pause); the database keeps running.
    Freeze,
    /// The node cannot reach the DCS.
    PartitionDcs,
    /// The node cannot reach its peers (replication and status probes).
    PartitionPeers,
    /// The node can reach neither the DCS nor its peers.
    Isolate,
    /// The cluster splits in two: a minority of `(n - 1) / 2` nodes, from this one on, loses the
    /// DCS and the majority, but its members still reach each other.
    Split,
    /// The DCS answers nobody.
    DcsOutage,
    /// DCS calls are slow for everybody.
    DcsDelay,
    /// The whole host stops (daemon, fence keeper and database together: a VM pause, a
    /// cgroup freeze); the hardware watchdog keeps counting.
    HostFreeze,
    /// The daemon process dies and restarts later; the database keeps running and the fence
    /// keeper enforces the last deadline it had.
    DaemonCrash,
    /// An operator changes the cluster's timings in the DCS `config` while it runs (`shieldctl
    /// edit-config -s ttl=30 -s loop_wait=10 -s retry_timeout=10`, and others), and puts them
    /// back when the fault ends.
    TimingChange,
    /// An operator pauses the cluster (`shieldctl pause`) and resumes it when the fault ends,
    /// once resuming is safe (the leader key held by a member running as primary), retrying
    /// every second until it is.
    Pause,
    /// `shieldctl switchover` to this node: now, or (half the time) scheduled a few seconds on.
    Switchover,
    /// `shieldctl failover` to this node (no leader named).
    Failover,
    /// `POST /restart` on this node.
    RestartRequest,
    /// `POST /reinitialize` on this node.
    Reinitialize,
    /// The node carries the `nofailover` tag for a while.
    NoFailover,
    /// The node's database status query does not answer (a busy host, a connection flood, no
    /// file descriptor left, a hung server): each cycle waits the status timeout and reports
    /// what the driver reports then ([`crate::DbStatus::unanswered`]). The database itself keeps
    /// running and taking writes; its postmaster's liveness is still seen.
    StatusStall,
}

/// The timings a [`FaultKind::TimingChange`] sets: (ttl, loop_wait, retry_timeout) in ms.
pub const TIMING_CHANGES: [(u64, u64, u64); 4] =
    [(30_000, 10_000, 10_000), (10_000, 2_000, 3_000), (6_000, 1_000, 2_000), (3_000, 500, 1_000)];

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 19] = [
        FaultKind::NodeCrash,
        FaultKind::DbCrash,
        FaultKind::Freeze,
        FaultKind::PartitionDcs,
        FaultKind::PartitionPeers,
        FaultKind::Isolate,
        FaultKind::DcsOutage,
        FaultKind::DcsDelay,
        FaultKind::HostFreeze,
        FaultKind::DaemonCrash,
        FaultKind::TimingChange,
        FaultKind::Pause,
        FaultKind::Switchover,
        FaultKind::Failover,
        FaultKind::RestartRequest,
        FaultKind::Reinitialize,
        FaultKind::NoFailover,
        FaultKind::Split,
        FaultKind::StatusStall,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::NodeCrash => "crash",
            FaultKind::DbCrash => "dbcrash",
            FaultKind::Freeze => "freeze",
            FaultKind::PartitionDcs => "partition-dcs",
            FaultKind::PartitionPeers => "partition-peers",
            FaultKind::Isolate => "isolate",
            FaultKind::Split => "split",
            FaultKind::DcsOutage => "dcs-outage",
            FaultKind::DcsDelay => "dcs-delay",
            FaultKind::HostFreeze => "host-freeze",
            FaultKind::DaemonCrash => "daemon-crash",
            FaultKind::TimingChange => "timing-change",
            FaultKind::Pause => "pause",
            FaultKind::Switchover => "switchover",
            FaultKind::Failover => "failover",
            FaultKind::RestartRequest => "restart",
            FaultKind::Reinitialize => "reinitialize",
            FaultKind::NoFailover => "nofailover",
            FaultKind::StatusStall => "status-stall",
        }
    }

    /// Parses a comma-separated list, or `all`, or `none`.
    pub fn parse_list(s: &str) -> Result<Vec<FaultKind>, String> {
        match s.trim() {
            "all" => return Ok(Self::ALL.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        s.split(',')
            .map(|w| {
                let w = w.trim();
                Self::ALL.iter().copied().find(|k| k.name() == w).ok_or_else(|| {
                    let names: Vec<_> = Self::ALL.iter().map(|k| k.name()).collect();
                    format!("unknown fault {w:?}; expected all, none, or some of {}", names.join(", "))
                })
            })
            .collect()
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scheduled fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// What.
    pub kind: FaultKind,
    /// Which node (ignored for cluster-wide kinds).
    pub node: usize,
    /// When it starts, global ms.
    pub at_ms: u64,
    /// How long it lasts.
    pub duration_ms: u64,
    /// Extra DCS latency for [`FaultKind::DcsDelay`]; for [`FaultKind::TimingChange`], the
    /// index into [`TIMING_CHANGES`].
    pub extra_latency_ms: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::DcsOutage => write!(f, "dcs-outage for {}ms", self.duration_ms),
            FaultKind::DcsDelay => {
                write!(f, "dcs-delay +{}ms for {}ms", self.extra_latency_ms, self.duration_ms)
            }
            FaultKind::DbCrash => write!(f, "dbcrash n{}", self.node),
            FaultKind::Switchover if self.extra_latency_ms > 0 => {
                write!(f, "switchover to n{} scheduled {}ms ahead", self.node, self.extra_latency_ms)
            }
            FaultKind::Switchover | FaultKind::Failover | FaultKind::RestartRequest | FaultKind::Reinitialize => {
                write!(f, "{} n{}", self.kind, self.node)
            }
            FaultKind::TimingChange => {
                let (ttl, lw, rt) = TIMING_CHANGES[self.extra_latency_ms as usize % TIMING_CHANGES.len()];
                write!(f, "timing-change ttl={ttl}ms loop_wait={lw}ms retry_timeout={rt}ms for {}ms", self.duration_ms)
            }
            k => write!(f, "{k} n{} for {}ms", self.node, self.duration_ms),
        }
    }
}

/// How harsh the drawn faults are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultProfile {
    /// Anything, including freezes and stalls far beyond the lease: tests safety and recovery.
    #[default]
    Chaos,
    /// What a healthy production cluster sees: daemon pauses up to 1.5 s (GC, CPU starvation,
    /// swapping), DCS latency spikes up to 1 s (fsync stalls, leader elections), and database
    /// status queries that do not answer for up to 15 s (a busy host, a connection flood).
    /// Shield's defaults must not fail over or demote under these.
    Realistic,
}

/// Draws a fault schedule over `[start_ms, end_ms)`: one fault every 4 to 40 s.
pub fn schedule(
    rng: &mut ChaCha8Rng,
    profile: FaultProfile,
    kinds: &[FaultKind],
    nodes: usize,
    start_ms: u64,
    end_ms: u64,
) -> Vec<Fault> {
    if profile == FaultProfile::Realistic {
        return realistic(rng, nodes, start_ms, end_ms);
    }
    let mut out = Vec::new();
    if kinds.is_empty() || nodes == 0 {
        return out;
    }
    let mut t = start_ms;
    loop {
        t += rng.gen_range(4_000..40_000);
        if t >= end_ms {
            break;
        }
        let kind = kinds[rng.gen_range(0..kinds.len())];
        let duration_ms = match kind {
            FaultKind::NodeCrash => rng.gen_range(2_000..30_000),
            FaultKind::DbCrash => 0,
            // Mostly short pauses, sometimes longer than the lease.
            FaultKind::Freeze if rng.gen_bool(0.7) => rng.gen_range(50..1_500),
            FaultKind::Freeze => rng.gen_range(1_500..12_000),
            FaultKind::HostFreeze if rng.gen_bool(0.7) => rng.gen_range(50..1_500),
            FaultKind::HostFreeze => rng.gen_range(1_500..12_000),
            FaultKind::DaemonCrash => rng.gen_range(500..10_000),
            FaultKind::TimingChange => rng.gen_range(10_000..90_000),
            FaultKind::Pause => rng.gen_range(2_000..60_000),
            FaultKind::NoFailover => rng.gen_range(5_000..60_000),
            FaultKind::Switchover | FaultKind::Failover | FaultKind::RestartRequest | FaultKind::Reinitialize => 0,
            FaultKind::DcsOutage => rng.gen_range(500..15_000),
            FaultKind::DcsDelay => rng.gen_range(1_000..20_000),
            // Mostly shorter than primary_start_timeout (the lock holder rides it out), sometimes
            // longer (a hung database: the lock goes to another member).
            FaultKind::StatusStall if rng.gen_bool(0.7) => rng.gen_range(500..20_000),
            FaultKind::StatusStall => rng.gen_range(20_000..90_000),
            _ => rng.gen_range(500..20_000),
        };
        let extra_latency_ms = match kind {
            FaultKind::DcsDelay => rng.gen_range(100..2_500),
            // Which of TIMING_CHANGES.
            FaultKind::TimingChange => rng.gen_range(0..TIMING_CHANGES.len() as u64),
            // Scheduled this many ms ahead (0: now).
            FaultKind::Switchover if rng.gen_bool(0.5) => rng.gen_range(1_000..20_000),
            _ => 0,
        };
        out.push(Fault { kind, node: rng.gen_range(0..nodes), at_ms: t, duration_ms, extra_latency_ms });
    }
    out
}

fn realistic(rng: &mut ChaCha8Rng, nodes: usize, start_ms: u64, end_ms: u64) -> Vec<Fault> {
    let mut out = Vec::new();
    let mut t = start_ms;
    loop {
        t += rng.gen_range(2_000..20_000);
        if t >= end_ms || nodes == 0 {
            return out;
        }
        let node = rng.gen_range(0..nodes);
        let f = match rng.gen_range(0..3) {
            0 => Fault {
                kind: FaultKind::Freeze,
                node,
                at_ms: t,
                duration_ms: rng.gen_range(50..1_500),
                extra_latency_ms: 0,
            },
            // A status query that does not answer for a while, well within primary_start_timeout.
            1 => Fault {
                kind: FaultKind::StatusStall,
                node,
                at_ms: t,
                duration_ms: rng.gen_range(500..15_000),
                extra_latency_ms: 0,
            },
            _ => {
                let duration_ms = rng.gen_range(500..10_000);
                Fault {
                    kind: FaultKind::DcsDelay,
                    node,
                    at_ms: t,
                    duration_ms,
                    extra_latency_ms: rng.gen_range(100..1_000),
                }
            }
        };
        // One at a time: a pause, a stall and a latency spike each, not together.
        t += f.duration_ms;
        out.push(f);
    }
}
