//! Do the fast defaults cost false failovers? A 3-node cluster on real etcd and PostgreSQL 15 runs
//! for a while under pgbench on the primary, a CPU hog per node, and etcd frozen (SIGSTOP) for 1 to
//! 2 s every 10 to 20 s; the program counts leader changes, self-fencing and write outages.
//!
//! `cargo bench -p shield-bin --bench load` (`SHIELD_LOAD_SECONDS`, default 120;
//! `SHIELD_LOAD_PROFILE=conservative` for docs/defaults.md's slower profile;
//! `SHIELD_LOAD_WATCHDOG=off` for nodes without a watchdog).

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::*;

/// A deterministic generator for the freeze schedule (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(lo_ms + self.next() % (hi_ms - lo_ms + 1))
    }
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Log lines that mean the primary gave up or another node took over.
const EVENTS: [(&str, &str); 4] = [
    ("promotions", "promoted self to leader"),
    ("fenced: deadline passed", "no successful leader lock renewal before the fencing deadline"),
    ("stopped without a lease", "stopped a primary that runs without the leader lock"),
    ("renewal retries", "failed to update leader lock, retrying"),
];

fn count(nodes: &[Node], what: &str) -> usize {
    nodes.iter().map(|n| n.log().matches(what).count()).sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs: u64 = std::env::var("SHIELD_LOAD_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(120);
    let profile = std::env::var("SHIELD_LOAD_PROFILE").unwrap_or_else(|_| "default".to_owned());
    let Some(etcd) = servers::EtcdCluster::start(1) else { return };
    let dcs = TestDcs::Etcd(etcd);
    let conservative = profile == "conservative";
    // SHIELD_LOAD_WATCHDOG=off: a host without a watchdog device (the test nodes arm a testing one).
    let watchdog = std::env::var("SHIELD_LOAD_WATCHDOG").map_or(true, |v| v != "off");
    let Some(c) = cluster_edited(dcs, |_, config| {
        let config = if watchdog { config } else { config.replacen("  mode: required\n", "  mode: off\n", 1) };
        if conservative {
            config.replacen(
                "    ttl: 4\n    loop_wait: 1\n    retry_timeout: 1.5\n",
                "    ttl: 10\n    loop_wait: 2\n    retry_timeout: 4\n    fence_margin: 2\n",
                1,
            )
        } else {
            config
        }
    })
    .await
    else {
        return;
    };
    let p = c.primary;
    let pgbench = c.pg_bin.join("pgbench");
    let pg = |args: &[&str]| {
        let mut cmd = Command::new(&pgbench);
        cmd.args(["-h", "127.0.0.1", "-p", &c.nodes[p].pg_port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .env("PGPASSWORD", "su-pass");
        cmd
    };
    let init = pg(&["-i", "-s", "5", "-q"]).output().expect("pgbench -i");
    assert!(init.status.success(), "pgbench -i: {}", String::from_utf8_lossy(&init.stderr));
    let bench = pg(&["-c", "4", "-j", "2", "-T", &secs.to_string(), "-P", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pgbench");
    // One busy loop per node: the daemons compete with them for the two cores.
    let hogs =
        Killed((0..3).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("hog")).collect());
    let before: Vec<usize> = EVENTS.iter().map(|(_, s)| count(&c.nodes, s)).collect();
    let etcd = c.dcs.etcd().expect("etcd");
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut freezes, mut frozen, mut longest) = (0u32, Duration::ZERO, Duration::ZERO);
    let (mut changes, mut outage, mut worst_outage) = (0u32, Duration::ZERO, Duration::ZERO);
    let mut last_primary = Some(p);
    let mut no_primary_since: Option<Instant> = None;
    let start = Instant::now();
    let mut next_freeze = start + rng.between(10_000, 20_000);
    while start.elapsed() < Duration::from_secs(secs) {
        if Instant::now() >= next_freeze {
            let d = rng.between(1_000, 2_000);
            etcd.members[0].freeze();
            tokio::time::sleep(d).await;
            etcd.members[0].thaw();
            freezes += 1;
            frozen += d;
            longest = longest.max(d);
            next_freeze = Instant::now() + rng.between(10_000, 20_000);
        }
        let w = writable(&c.nodes).await;
        let now = w.first().copied();
        match (now, no_primary_since) {
            (None, None) => no_primary_since = Some(Instant::now()),
            (Some(_), Some(t)) => {
                outage += t.elapsed();
                worst_outage = worst_outage.max(t.elapsed());
                no_primary_since = None;
            }
            _ => {}
        }
        if now.is_some() && now != last_primary {
            changes += 1;
            last_primary = now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(hogs);
    let out = bench.wait_with_output().expect("pgbench result");
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text.lines().find(|l| l.starts_with("tps = ")).unwrap_or("tps = ? (pgbench did not finish)").to_owned();
    let wd = if watchdog { "watchdog armed" } else { "no watchdog" };
    println!("profile {profile}, {wd}, {secs} s under pgbench (-c 4), 3 CPU hogs on 2 cores");
    println!(
        "etcd frozen {freezes} times, {:.1} s in all, longest {:.2} s",
        frozen.as_secs_f64(),
        longest.as_secs_f64()
    );
    println!("pgbench: {tps}");
    println!(
        "primary changes: {changes}; time without a writable primary: {:.2} s (longest {:.2} s)",
        outage.as_secs_f64(),
        worst_outage.as_secs_f64()
    );
    for ((what, s), b) in EVENTS.iter().zip(before) {
        println!("{what}: {}", count(&c.nodes, s) - b);
    }
}
