//! Named safety and liveness properties, one checker per file.
//!
//! The world calls every checker at a few hooks with a [`Snapshot`] of the cluster; a checker
//! returns `Err(description)` when its property is violated.

mod bounded_loss;
mod liveness;
mod promote_with_lease;
mod single_vip;
mod single_writer;
mod timeline_monotonic;
mod unique_timelines;
mod write_with_lease;

pub use bounded_loss::BoundedLoss;
pub use liveness::Liveness;
pub use promote_with_lease::PromoteWithLease;
pub use single_vip::SingleVip;
pub use single_writer::SingleWriter;
pub use timeline_monotonic::TimelineMonotonic;
pub use unique_timelines::UniqueTimelines;
pub use write_with_lease::WriteWithLease;

use crate::types::{Lsn, MemberName, Timeline};

/// One node as the checkers see it.
#[derive(Clone, Debug)]
pub struct NodeSnap {
    /// Its name.
    pub name: MemberName,
    /// The daemon process exists (not crashed or rebooting). Frozen counts as up.
    pub up: bool,
    /// Its database accepts writes.
    pub writable: bool,
    /// Its database runs in recovery.
    pub replica: bool,
    /// The replica's configured upstream.
    pub upstream: Option<MemberName>,
    /// The replica is streaming.
    pub streaming: bool,
    /// The host holds the cluster VIP.
    pub vip: bool,
    /// The node's daemon believes the cluster is paused (its last view of the DCS `config`).
    pub paused: bool,
    /// An immediate stop of its database was sent and has not finished.
    pub stopping: bool,
    /// Global time until which every member accepted it as failsafe leader and stays out of the
    /// race (see `write-with-lease`).
    pub failsafe_until: Option<u64>,
}

/// The cluster at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot<'a> {
    /// Global simulated time.
    pub now_ms: u64,
    /// Every node.
    pub nodes: &'a [NodeSnap],
    /// Who holds the leader key in the DCS now (an unexpired lease).
    pub lease_holder: Option<MemberName>,
    /// The cluster timeline from the DCS `history` key.
    pub cluster_timeline: Timeline,
    /// The cluster is paused (the DCS `config` says so).
    pub paused: bool,
    /// `maximum_lag_on_failover` of the cluster's config.
    pub max_lag_bytes: u64,
}

/// When a checker is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Node `n`'s database just started accepting writes, by promotion (`promoted`) or otherwise.
    BecameWritable {
        /// The node.
        node: usize,
        /// By `pg_ctl promote` (or restart as primary), not initdb.
        promoted: bool,
    },
    /// The DCS `history` key was written.
    HistoryWritten,
    /// Node `node`'s host resumed after a whole-host freeze, with its database and VIP as the
    /// freeze left them (unless its keeper or fence guard stopped them at once).
    HostThawed {
        /// The node.
        node: usize,
    },
    /// Node `node`'s database acknowledged a client write.
    WriteAcked {
        /// The node.
        node: usize,
    },
    /// Node `node` promoted and created `timeline`, forking its parent at `fork_lsn`.
    TimelineCreated {
        /// The node.
        node: usize,
        /// The new timeline.
        timeline: Timeline,
        /// Where the parent timeline ended.
        fork_lsn: Lsn,
        /// What the promoted data shares with the cluster timeline the node last read: the
        /// fork, or less where its timeline had already ended in that `history`.
        shared_lsn: Lsn,
        /// The leader's position in the `status` key the node last read before promoting.
        seen_optime: Option<Lsn>,
        /// Acknowledged writes this promotion threw away (on branches the new timeline left).
        writes_lost: u64,
    },
    /// Node `node` just bound the VIP.
    VipBound {
        /// The node.
        node: usize,
    },
    /// Faults stopped at `faults_ended_ms` and the liveness bound has passed.
    Settled {
        /// When the last fault ended.
        faults_ended_ms: u64,
    },
}

/// A property checker.
pub trait Invariant: std::fmt::Debug {
    /// The property's name.
    fn name(&self) -> &'static str;
    /// Checks the property at `hook`.
    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String>;
}

/// All checkers, in a fixed order.
pub fn all() -> Vec<Box<dyn Invariant>> {
    vec![
        Box::new(SingleWriter),
        Box::new(WriteWithLease::default()),
        Box::new(SingleVip),
        Box::new(PromoteWithLease),
        Box::new(TimelineMonotonic::default()),
        Box::new(UniqueTimelines::default()),
        Box::new(BoundedLoss),
        Box::new(Liveness),
    ]
}
