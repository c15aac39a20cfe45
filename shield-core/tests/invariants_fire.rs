//! Each invariant fires on a deliberately broken decision rule: the checkers are not vacuous.

use shield_core::sim::{run_seed, FaultKind, SimConfig, SimReport};
use shield_core::{
    decide, Action, DbProcess, DbTask, Decision, MonoMillis, NodeState, Observation, StopMode, Timeline,
};

/// Runs seeds until one violates something; returns that report.
fn first_violation(cfg: &SimConfig, seeds: u64) -> SimReport {
    for seed in 0..seeds {
        let r = run_seed(cfg, seed);
        if r.violation.is_some() {
            return r;
        }
    }
    panic!("no seed in 0..{seeds} broke any invariant");
}

fn fired(cfg: &SimConfig) -> &'static str {
    fired_within(cfg, 200)
}

fn fired_within(cfg: &SimConfig, seeds: u64) -> &'static str {
    let r = first_violation(cfg, seeds);
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
        // The old primary's first write past its lease would be caught first.
        invariants_off: vec!["write-with-lease"],
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

/// Promotes without reserving the new timeline in `history` first, onto the next id after its
/// own, as PostgreSQL would pick it with no help: the rule seed 869 broke before the fix.
fn promote_unreserved(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    if d.actions.iter().any(|a| matches!(a, Action::RunDbTask { task: DbTask::Promote { .. } })) {
        d.actions.retain(|a| !matches!(a, Action::WriteHistory { .. }));
        let next = o.db.timeline.unwrap_or_default().next();
        for a in &mut d.actions {
            if let Action::RunDbTask { task: DbTask::Promote { timeline } } = a {
                *timeline = next;
            }
        }
    }
    d
}

#[test]
fn unique_timelines_fires_when_a_promotion_does_not_reserve_its_id() {
    for watchdog in [false, true] {
        let cfg = SimConfig {
            faults: vec![FaultKind::Isolate, FaultKind::PartitionDcs, FaultKind::NodeCrash],
            decide: promote_unreserved,
            watchdog,
            ..SimConfig::default()
        };
        assert_eq!(fired_within(&cfg, 2_000), "unique-timelines", "watchdog: {watchdog}");
    }
}

/// Ignores the fencing deadline in decide(). Run with the daemon's fence guard and keeper left
/// out, so that decide()'s own rule is what is tested (they would mask it).
fn ignore_the_deadline(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    if matches!(d.reason, shield_core::Reason::FenceDeadlinePassed | shield_core::Reason::DcsUnreachableFenced { .. }) {
        d.actions.retain(|a| *a != Action::StopDb { mode: StopMode::Immediate });
        d.next.lease = st.lease;
        d.fence_at = far_future(o);
    }
    d
}

#[test]
fn write_with_lease_fires_when_the_deadline_is_ignored() {
    for watchdog in [false, true] {
        let cfg = SimConfig {
            faults: vec![FaultKind::PartitionDcs],
            decide: ignore_the_deadline,
            watchdog,
            fence_guard: false,
            keeper: false,
            ..SimConfig::default()
        };
        let fired = fired(&cfg);
        assert!(matches!(fired, "write-with-lease" | "single-writer"), "watchdog {watchdog}: {fired}");
    }
}

/// The daemon's protections, each left out in turn: the simulator must then find the gap they
/// fill. A frozen daemon whose database keeps running is stopped only by the fence keeper (or a
/// watchdog); a cycle stuck in slow DCS calls is stopped at its deadline only by the fence guard.
#[test]
fn a_frozen_daemon_without_keeper_or_watchdog_is_caught() {
    let cfg = SimConfig { faults: vec![FaultKind::Freeze], watchdog: false, keeper: false, ..SimConfig::default() };
    let fired = fired(&cfg);
    assert!(matches!(fired, "write-with-lease" | "single-writer"), "{fired}");
}

#[test]
fn a_crashed_daemon_without_keeper_or_watchdog_is_caught() {
    let cfg =
        SimConfig { faults: vec![FaultKind::DaemonCrash], watchdog: false, keeper: false, ..SimConfig::default() };
    let fired = fired(&cfg);
    assert!(matches!(fired, "write-with-lease" | "single-writer"), "{fired}");
}

#[test]
fn a_stuck_loop_without_fence_guard_keeper_or_watchdog_is_caught() {
    let cfg = SimConfig {
        faults: vec![FaultKind::DcsDelay, FaultKind::PartitionDcs],
        watchdog: false,
        keeper: false,
        fence_guard: false,
        ..SimConfig::default()
    };
    let fired = fired(&cfg);
    assert!(matches!(fired, "write-with-lease" | "single-writer"), "{fired}");
}

/// The same protections present: the same faults break nothing (the control for the three
/// tests above).
#[test]
fn the_same_faults_with_the_protections_break_nothing() {
    for (faults, watchdog) in [
        (vec![FaultKind::Freeze, FaultKind::DaemonCrash, FaultKind::HostFreeze], true),
        (vec![FaultKind::Freeze, FaultKind::DaemonCrash, FaultKind::DcsDelay, FaultKind::PartitionDcs], false),
    ] {
        let cfg = SimConfig { faults, watchdog, ..SimConfig::default() };
        for seed in 0..100 {
            let r = run_seed(&cfg, seed);
            assert!(r.violation.is_none(), "{}", r.render());
        }
    }
}

/// Renews and acquires with the node's own start-up ttl (4 s) whatever the DCS `config` says,
/// while the deadline follows the config: the bug of a lease ttl fixed at start.
fn fixed_lease_ttl(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    for a in &mut d.actions {
        if let Action::RenewLeader { ttl_ms, .. } | Action::AcquireLeader { ttl_ms, .. } = a {
            *ttl_ms = 4_000;
        }
    }
    d
}

#[test]
fn write_with_lease_fires_when_the_lease_ignores_a_changed_ttl() {
    for watchdog in [false, true] {
        let cfg = SimConfig {
            faults: vec![FaultKind::TimingChange, FaultKind::NodeCrash],
            decide: fixed_lease_ttl,
            watchdog,
            ..SimConfig::default()
        };
        let fired = fired(&cfg);
        assert!(matches!(fired, "write-with-lease" | "single-writer"), "watchdog {watchdog}: {fired}");
    }
}

/// Ignores `maximum_lag_on_failover`: any replica may take over however far behind.
fn ignore_the_lag(st: &NodeState, o: &Observation) -> Decision {
    let mut lax = st.clone();
    lax.config.maximum_lag_on_failover_bytes = u64::MAX;
    let mut o = o.clone();
    if let shield_core::DcsView::Reachable(v) = &mut o.dcs {
        if let Some((c, _)) = &mut v.config {
            c.maximum_lag_on_failover_bytes = u64::MAX;
        }
    }
    decide(&lax, &o)
}

#[test]
fn bounded_loss_fires_when_the_lag_rule_is_ignored() {
    for watchdog in [false, true] {
        let cfg = SimConfig {
            faults: vec![FaultKind::PartitionPeers, FaultKind::NodeCrash, FaultKind::Isolate],
            decide: ignore_the_lag,
            watchdog,
            ..SimConfig::default()
        };
        assert_eq!(fired_within(&cfg, 2_000), "bounded-loss", "watchdog {watchdog}");
    }
}

/// Failsafe that leaves one member out of its rounds: the primary keeps running although that
/// member never confirmed it (and may race).
fn failsafe_skips_a_member(st: &NodeState, o: &Observation) -> Decision {
    let mut d = decide(st, o);
    for a in &mut d.actions {
        if let Action::ConfirmFailsafe { members, .. } = a {
            members.pop_last();
        }
    }
    d
}

#[test]
fn a_failsafe_rule_that_keeps_a_primary_running_without_every_member_is_caught() {
    let cfg = SimConfig {
        config: shield_core::DynamicConfig { failsafe_mode: true, ..SimConfig::default().config },
        // The leader cut from the DCS while the member it skips is cut from its peers (else
        // that member's probe finds the primary alive and it does not race).
        faults: vec![FaultKind::PartitionDcs, FaultKind::PartitionPeers],
        watchdog: false,
        decide: failsafe_skips_a_member,
        ..SimConfig::default()
    };
    let fired = fired_within(&cfg, 400);
    assert!(["write-with-lease", "single-writer"].contains(&fired), "{fired}");
    // The same schedules with the real rule hold.
    let ok = SimConfig { decide, ..cfg };
    for seed in 0..50 {
        let r = run_seed(&ok, seed);
        assert!(r.violation.is_none(), "{}", r.render());
    }
}
