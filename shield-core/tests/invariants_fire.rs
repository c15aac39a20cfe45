//! Each invariant fires on a deliberately broken decision rule: the checkers are not vacuous.

use shield_core::sim::{run_seed, FaultKind, SimConfig, SimReport};
use shield_core::{
    decide, Action, DbProcess, DbTask, Decision, MonoMillis, NodeState, Observation, StopMode, Timeline,
};

/// Runs seeds until one violates something; returns that report.
fn first_violation(cfg: &SimConfig) -> SimReport {
    for seed in 0..200 {
        let r = run_seed(cfg, seed);
        if r.violation.is_some() {
            return r;
        }
    }
    panic!("no seed in 0..200 broke any invariant");
}

fn fired(cfg: &SimConfig) -> &'static str {
    let r = first_violation(cfg);
    let v = r.violation.as_ref().expect("violation");
    // The report names the seed and carries a trace to reproduce it.
    assert!(r.render().contains(&format!("--seed {}", r.seed)));
    assert!(!r.trace.is_empty());
    v.invariant
}

/// A deadline an hour away: the driver's fence guard never fires and never refuses a promotion.
fn far_future(o: &Observation) -> Option<MonoMillis> {
    Some(o.now.plus(3_600_000))
}

/// Never fences: ignores the deadline and the lease-lost signal.
fn never_fence(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    d.actions.retain(|a| *a != Action::StopDb { mode: StopMode::Immediate });
    d.fence_at = far_future(o);
    d
}

#[test]
fn single_writer_fires_when_fencing_is_broken() {
    let cfg = SimConfig {
        faults: vec![FaultKind::PartitionDcs, FaultKind::Isolate],
        watchdog: false,
        decide: never_fence,
        ..SimConfig::default()
    };
    assert_eq!(fired(&cfg), "single-writer");
}

/// Promotes as soon as the cluster is unlocked, instead of racing for the lock.
fn promote_without_lock(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    let replica = o.db.process == DbProcess::Running { in_recovery: true };
    for a in &mut d.actions {
        if *a == Action::ProbePeers && replica {
            *a = Action::RunDbTask { task: DbTask::Promote { timeline: Timeline(99) } };
            d.fence_at = far_future(o);
        }
    }
    d
}

#[test]
fn promote_with_lease_fires_when_a_node_promotes_without_the_lock() {
    let cfg = SimConfig { faults: vec![FaultKind::NodeCrash], decide: promote_without_lock, ..SimConfig::default() };
    assert_eq!(fired(&cfg), "promote-with-lease");
}

/// Writes a history that forgets the newest line.
fn forgetful_history(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    for a in &mut d.actions {
        if let Action::WriteHistory { lines } = a {
            if lines.len() >= 2 {
                lines.truncate(lines.len() - 2);
            }
        }
    }
    d
}

#[test]
fn timeline_monotonic_fires_when_history_goes_back() {
    let cfg = SimConfig { faults: vec![FaultKind::NodeCrash], decide: forgetful_history, ..SimConfig::default() };
    assert_eq!(fired(&cfg), "timeline-monotonic");
}

/// Never takes the lock once a database exists: no failover ever completes.
fn never_acquire(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    if o.db.process == (DbProcess::Running { in_recovery: true }) {
        d.actions.retain(|a| !matches!(a, Action::AcquireLeader { .. }));
    }
    d
}

#[test]
fn liveness_fires_when_nobody_takes_over() {
    let cfg = SimConfig { faults: vec![FaultKind::NodeCrash], decide: never_acquire, ..SimConfig::default() };
    assert_eq!(fired(&cfg), "liveness");
}

/// Fences the database but never gives the VIP up, and has no fence keeper (which would drop
/// the VIP at the deadline).
fn keep_the_vip(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    d.actions.retain(|a| *a != Action::RemoveVip);
    d.fence_at = far_future(o);
    d
}

#[test]
fn single_vip_fires_when_the_vip_is_never_removed() {
    let cfg = SimConfig {
        faults: vec![FaultKind::PartitionDcs, FaultKind::Isolate],
        decide: keep_the_vip,
        ..SimConfig::default()
    };
    assert_eq!(fired(&cfg), "single-vip");
}
