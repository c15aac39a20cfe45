//! The simulation run in CI: thousands of seeded fault schedules with zero violations.
//!
//! `SHIELD_SIM_SEEDS` sets the number of chaos schedules (default 2,000: half 3-node, half
//! 5-node, 10 simulated minutes each). A longer soak:
//! `cargo run --release --example simulate -- --seeds 100000`.

use std::thread;

use shield_core::sim::{run_seed, FaultProfile, SimConfig, SimReport};

/// Runs `seeds` on two threads and returns every report with a violation, plus totals.
fn soak(cfg: &SimConfig, seeds: std::ops::Range<u64>) -> (Vec<SimReport>, SimReport) {
    let seeds: Vec<u64> = seeds.collect();
    let halves: Vec<&[u64]> = seeds.chunks(seeds.len().div_ceil(2).max(1)).collect();
    let results: Vec<(Vec<SimReport>, SimReport)> = thread::scope(|s| {
        let handles: Vec<_> = halves
            .iter()
            .map(|part| {
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut total = SimReport::default();
                    for &seed in *part {
                        let r = run_seed(cfg, seed);
                        total.add_counts(&r);
                        if r.violation.is_some() {
                            bad.push(r);
                        }
                    }
                    (bad, total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("soak thread panicked")).collect()
    });
    let mut bad = Vec::new();
    let mut total = SimReport::default();
    for (b, t) in results {
        bad.extend(b);
        total.add_counts(&t);
    }
    (bad, total)
}

fn seeds_from_env() -> u64 {
    std::env::var("SHIELD_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2_000)
}

#[test]
fn chaos_schedules_hold_every_invariant() {
    let total = seeds_from_env();
    for (nodes, first) in [(3usize, 0u64), (5, 1_000_000)] {
        let cfg = SimConfig { nodes, ..SimConfig::default() };
        let n = total / 2;
        let (bad, t) = soak(&cfg, first..first + n);
        println!(
            "{n} chaos schedules, {nodes} nodes, 10 simulated minutes each: {} violations; {} faults, {} promotions, \
             {} fences, {} watchdog resets, {} rewinds, {} decisions",
            bad.len(),
            t.faults,
            t.promotions,
            t.fences,
            t.watchdog_resets,
            t.rewinds,
            t.decisions
        );
        if let Some(first_bad) = bad.first() {
            let seeds: Vec<u64> = bad.iter().map(|r| r.seed).collect();
            panic!("violations at seeds {seeds:?}; the first:\n{}", first_bad.render());
        }
        assert!(t.promotions > n, "the faults should force failovers; only {} promotions", t.promotions);
    }
}

#[test]
fn realistic_pauses_and_latency_spikes_cause_no_failover_or_demotion() {
    for nodes in [3usize, 5] {
        let cfg = SimConfig { nodes, profile: FaultProfile::Realistic, ..SimConfig::default() };
        let (bad, t) = soak(&cfg, 0..200);
        println!(
            "200 realistic schedules, {nodes} nodes: {} faults, {} promotions, {} fences, {} watchdog resets",
            t.faults, t.promotions, t.fences, t.watchdog_resets
        );
        assert!(bad.is_empty(), "{}", bad[0].render());
        assert!(t.faults > 2_000, "too few faults drawn: {}", t.faults);
        assert_eq!((t.promotions, t.fences, t.watchdog_resets), (0, 0, 0));
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let cfg = SimConfig { nodes: 5, trace_all: true, duration_ms: 180_000, ..SimConfig::default() };
    let a = run_seed(&cfg, 12_345);
    let b = run_seed(&cfg, 12_345);
    assert!(a.trace.len() > 500, "trace too short: {}", a.trace.len());
    assert_eq!(a.trace, b.trace);
    let c = run_seed(&cfg, 12_346);
    assert_ne!(a.trace, c.trace);
}

#[test]
fn a_single_node_cluster_recovers_from_its_own_faults() {
    let cfg = SimConfig { nodes: 1, ..SimConfig::default() };
    let (bad, _) = soak(&cfg, 0..50);
    assert!(bad.is_empty(), "{}", bad[0].render());
}

/// Seeds that once broke an invariant in long soaks, kept as regressions. 3 nodes unless noted.
#[test]
fn regression_seeds_from_long_soaks() {
    // 14413, 19858: a promotion queued behind a slow DCS call started after the fencing
    // deadline. The others: a peer behind the cluster timeline held the race up forever.
    let seeds = [7_566, 7_577, 10_848, 12_600, 14_361, 14_413, 17_365, 18_136, 19_858, 20_161];
    let cfg = SimConfig::default();
    for seed in seeds {
        let r = run_seed(&cfg, seed);
        assert!(r.violation.is_none(), "{}", r.render());
    }
}
