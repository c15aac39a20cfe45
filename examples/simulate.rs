//! Runs Shield's seeded cluster simulator.
//!
//! ```text
//! cargo run --release --example simulate -- --seed 42 --nodes 5 --faults all
//! cargo run --release --example simulate -- --seeds 100000 --nodes 3
//! ```
//!
//! With `--seed` it prints the whole trace and the invariant summary. With `--seeds N` it soaks
//! seeds `--first .. --first+N` and prints one line per violation and a summary. The exit code is
//! 1 when any invariant was violated.

use std::process::ExitCode;

use clap::Parser;
use shield_core::sim::{run_seed, FaultKind, FaultProfile, SimConfig};

#[derive(Parser, Debug)]
#[command(about = "Shield's seeded cluster simulator")]
struct Args {
    /// Run this one seed and print its whole trace.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Soak this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// First seed of a soak.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Nodes in the cluster (1 to 9).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
    nodes: u64,
    /// Faults to inject: all, none, or a comma list of
    /// crash,dbcrash,freeze,partition-dcs,partition-peers,isolate,dcs-outage,dcs-delay.
    #[arg(long, default_value = "all")]
    faults: String,
    /// Simulated minutes per seed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=1440))]
    minutes: u64,
    /// Fault profile: chaos (anything) or realistic (pauses up to 1.5 s, DCS spikes up to 1 s).
    #[arg(long, default_value = "chaos")]
    profile: String,
    /// Disable the watchdog (shows what it protects against).
    #[arg(long)]
    no_watchdog: bool,
    /// Leave out the fence keeper process.
    #[arg(long)]
    no_keeper: bool,
    /// Leave out the daemon's in-process fence guard.
    #[arg(long)]
    no_fence_guard: bool,
    /// The largest clock-rate drift of a node, in ppm (beyond 10000 the report says the run went
    /// beyond the model's bounds).
    #[arg(long, default_value_t = 10_000)]
    max_drift_ppm: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let faults = match FaultKind::parse_list(&args.faults) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("simulate: --faults: {e}");
            return ExitCode::from(2);
        }
    };
    let profile = match args.profile.as_str() {
        "chaos" => FaultProfile::Chaos,
        "realistic" => FaultProfile::Realistic,
        other => {
            eprintln!("simulate: --profile: expected chaos or realistic, found {other:?}");
            return ExitCode::from(2);
        }
    };
    let cfg = SimConfig {
        profile,
        nodes: args.nodes as usize,
        duration_ms: args.minutes * 60_000,
        faults,
        watchdog: !args.no_watchdog,
        keeper: !args.no_keeper,
        fence_guard: !args.no_fence_guard,
        max_drift_ppm: args.max_drift_ppm,
        trace_all: args.seed.is_some(),
        ..SimConfig::default()
    };
    if let Some(seed) = args.seed {
        let r = run_seed(&cfg, seed);
        for l in &r.trace {
            println!("{l}");
        }
        println!("{}", r.render().lines().next().unwrap_or_default());
        return match &r.violation {
            None => {
                let checked: Vec<String> = shield_core::sim::invariants::all()
                    .iter()
                    .map(|c| c.name())
                    .filter(|n| !cfg.invariants_off.contains(n))
                    .map(|n| format!("{n} ok"))
                    .collect();
                println!("invariants: {}", checked.join(", "));
                ExitCode::SUCCESS
            }
            Some(v) => {
                println!("VIOLATION of {}: {}", v.invariant, v.problem);
                ExitCode::FAILURE
            }
        };
    }
    let n = args.seeds.unwrap_or(100);
    let mut bad = 0u64;
    let mut total = shield_core::sim::SimReport::default();
    for seed in args.first..args.first + n {
        let r = run_seed(&cfg, seed);
        total.add_counts(&r);
        if let Some(v) = &r.violation {
            bad += 1;
            println!("seed {seed}: VIOLATION of {}: {}", v.invariant, v.problem);
        }
    }
    println!(
        "{n} seeds, {} nodes, {} min each, {} faults: {bad} violations, {} promotions, {} fences, \
         {} watchdog resets, {} decisions, {} of {} acknowledged writes lost at failovers",
        args.nodes,
        args.minutes,
        args.profile,
        total.promotions,
        total.fences,
        total.watchdog_resets,
        total.decisions,
        total.writes_lost,
        total.writes_acked
    );
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
