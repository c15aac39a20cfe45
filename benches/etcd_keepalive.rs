//! Lease renewal latency against a real etcd on loopback: a fresh keep-alive stream per renewal
//! (unary) against one long-lived stream, plus the whole `renew_leader` call in each mode.
//!
//! `cargo bench -p shield-benches --bench etcd_keepalive` (etcd from `scripts/setup.sh`)

#[path = "../testkit/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use shield_core::ports::Dcs;
use shield_core::MemberName;
use shield_dcs_etcd::{EtcdConfig, EtcdDcs, KeepAliveMode};

const ROUNDS: usize = 2_000;
/// The lease ttl the benchmark renews with (the default config's).
const TTL_MS: u64 = 4_000;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(etcd) = servers::EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    println!("{ROUNDS} renewals per mode against etcd at {}", eps[0]);
    println!("{:<8} {:>9} {:>9} {:>9} {:>9}", "mode", "min ms", "p50 ms", "p99 ms", "max ms");
    for mode in [KeepAliveMode::Unary, KeepAliveMode::Stream] {
        let member = MemberName::new("bench").unwrap_or_else(|e| unreachable!("{e}"));
        let mut cfg = EtcdConfig::new(eps.clone(), &format!("bench-{mode:?}"), member);
        cfg.keepalive = mode;
        let d = EtcdDcs::new(cfg);
        let deadline = Instant::now() + Duration::from_secs(20);
        while d.acquire_leader(TTL_MS).await != Ok(true) {
            assert!(Instant::now() < deadline, "etcd never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..100 {
            d.renew_leader(TTL_MS).await.expect("warm-up renewal");
        }
        let mut t = Vec::with_capacity(ROUNDS);
        for _ in 0..ROUNDS {
            let s = Instant::now();
            d.renew_leader(TTL_MS).await.expect("renewal");
            t.push(s.elapsed());
        }
        t.sort();
        println!(
            "{:<8} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            format!("{mode:?}"),
            pct(&t, 0.0),
            pct(&t, 0.5),
            pct(&t, 0.99),
            pct(&t, 1.0)
        );
    }
}
