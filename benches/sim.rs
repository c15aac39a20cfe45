//! Simulator throughput: simulated node-cycles (decide() calls with their actions) per second,
//! for one 10-minute chaos schedule of 3, 5 and 9 nodes.
//!
//! `cargo bench -p shield-benches --bench sim`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shield_core::sim::{run_seed, SimConfig};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    for nodes in [3usize, 5, 9] {
        let cfg = SimConfig { nodes, ..SimConfig::default() };
        let cycles = run_seed(&cfg, 1).decisions;
        g.throughput(Throughput::Elements(cycles));
        g.bench_with_input(BenchmarkId::new("node_cycles_10min_chaos", nodes), &cfg, |b, cfg| {
            b.iter(|| run_seed(cfg, 1))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
