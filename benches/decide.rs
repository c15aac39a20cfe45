//! decide() latency for 3, 5 and 9 members: the leader's steady cycle and a replica's race.
//!
//! `cargo bench -p shield-benches --bench decide`

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use shield_benches::{leader_cycle, race_cycle};
use shield_core::decide;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide");
    for members in [3usize, 5, 9] {
        let (st, obs) = leader_cycle(members);
        g.bench_with_input(BenchmarkId::new("leader_steady", members), &(st, obs), |b, (st, obs)| {
            b.iter(|| decide(black_box(st), black_box(obs)))
        });
        let (st, obs) = race_cycle(members);
        g.bench_with_input(BenchmarkId::new("replica_race", members), &(st, obs), |b, (st, obs)| {
            b.iter(|| decide(black_box(st), black_box(obs)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
