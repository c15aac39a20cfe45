//! The cluster benchmark: real etcd, three `shield` daemons and PostgreSQL 15 on loopback.
//! Reports min/median/max over `SHIELD_BENCH_RUNS` runs (default 5) of: bootstrap time,
//! node-crash RTO, old-primary rejoin, switchover write-unavailability, frozen-primary RTO, and
//! each idle daemon's RSS, CPU seconds per minute and DCS requests per minute.
//!
//! `cargo bench -p shield-bin --bench cluster` (servers from scripts/setup.sh; as root, the nodes
//! run as the unprivileged test user).

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cluster::*;

/// Commits one row on whichever node accepts writes, retrying every 10 ms, until `deadline`.
/// Returns when the first commit lands, and on which node.
async fn first_commit(nodes: &[Node], not: Option<usize>, deadline: Instant) -> Option<(Instant, usize)> {
    while Instant::now() < deadline {
        for (i, n) in nodes.iter().enumerate() {
            if Some(i) == not {
                continue;
            }
            let q =
                tokio::time::timeout(Duration::from_millis(200), exec(n.pg_port, "INSERT INTO e2e VALUES ('bench')"));
            if let Ok(Ok(())) = q.await {
                return Some((Instant::now(), i));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Longest gap between successful commits while `during` runs.
async fn write_gap<F: std::future::Future<Output = ()>>(nodes: &[Node], during: F) -> Duration {
    let ports: Vec<u16> = nodes.iter().map(|n| n.pg_port).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let mut last = Instant::now();
        let mut worst = Duration::ZERO;
        let mut current = 0usize;
        while !*stop_rx.borrow() {
            let mut ok = false;
            for k in 0..ports.len() {
                let i = (current + k) % ports.len();
                let q =
                    tokio::time::timeout(Duration::from_millis(200), exec(ports[i], "INSERT INTO e2e VALUES ('w')"));
                if let Ok(Ok(())) = q.await {
                    current = i;
                    ok = true;
                    break;
                }
            }
            if ok {
                worst = worst.max(last.elapsed());
                last = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst
    });
    during.await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    writer.await.unwrap_or_default()
}

fn proc_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

/// etcd's count of handled gRPC requests (all clients).
async fn etcd_requests(url: &str) -> f64 {
    let Ok(v) = shield_bin_metrics(url).await else { return 0.0 };
    v.lines()
        .filter(|l| l.starts_with("grpc_server_handled_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn shield_bin_metrics(url: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri = format!("{url}/metrics").parse().map_err(|e| format!("{e}"))?;
    let r = client.get(uri).await.map_err(|e| e.to_string())?;
    let b = r.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(String::from_utf8_lossy(&b).into_owned())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("SHIELD_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut m: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut two_writers = 0usize;
    for run in 0..runs {
        let t = Instant::now();
        let Some(mut c) = cluster().await else { return };
        m.entry("bootstrap of 3 nodes (s)").or_default().push(t.elapsed().as_secs_f64());

        // Idle resource use over 30 s.
        let pids: Vec<u32> = c.nodes.iter().filter_map(|n| n.child.as_ref().map(std::process::Child::id)).collect();
        let etcd_url = c.dcs.etcd_endpoint().expect("etcd");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (ticks0, req0) = (pids.iter().map(|&p| proc_cpu_ticks(p)).sum::<u64>(), etcd_requests(&etcd_url).await);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let (ticks1, req1) = (pids.iter().map(|&p| proc_cpu_ticks(p)).sum::<u64>(), etcd_requests(&etcd_url).await);
        let hz = 100.0;
        m.entry("idle daemon CPU (s per minute)")
            .or_default()
            .push((ticks1 - ticks0) as f64 / hz / pids.len() as f64 * 2.0);
        m.entry("DCS requests per minute per node").or_default().push((req1 - req0) * 2.0 / pids.len() as f64);
        for &p in &pids {
            m.entry("idle daemon RSS (MiB)").or_default().push(proc_rss_kib(p) as f64 / 1024.0);
        }

        // Switchover write-unavailability.
        let p = c.primary;
        let cand = (p + 1) % 3;
        let body = format!(r#"{{"leader":"{}","candidate":"{}"}}"#, c.nodes[p].name, c.nodes[cand].name);
        let api = c.nodes[p].api_port;
        let gap = write_gap(&c.nodes, async move {
            let _ = http_post(api, "/switchover", &body).await;
        })
        .await;
        m.entry("switchover write-unavailability (s)").or_default().push(gap.as_secs_f64());
        wait_for("the old primary to follow", Duration::from_secs(60), || async {
            let w = writable(&c.nodes).await;
            (w == vec![cand]).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Node crash RTO and rejoin.
        let p = cand;
        let t = Instant::now();
        c.nodes[p].crash();
        let Some((at, np)) = first_commit(&c.nodes, Some(p), Instant::now() + Duration::from_secs(60)).await else {
            panic!("run {run}: no new primary after a node crash")
        };
        m.entry("node-crash RTO (s)").or_default().push((at - t).as_secs_f64());
        let t = Instant::now();
        c.nodes[p].start();
        exec(c.nodes[np].pg_port, "INSERT INTO e2e VALUES ('rejoin')").await.expect("write");
        wait_for("the old primary to rejoin", Duration::from_secs(90), || replicas_stream_from(&c.nodes, np, "rejoin"))
            .await;
        m.entry("old-primary rejoin (s)").or_default().push(t.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_secs(3)).await;

        // Frozen primary RTO, sampling for two writers.
        let p = np;
        let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
        let (stop, sampler) = start_sampler(ports);
        let daemon = c.nodes[p].child.as_ref().map(|ch| ch.id() as i32).expect("daemon");
        let tree = pg_tree(c.nodes[p].postmaster_pid().expect("postmaster"));
        let t = Instant::now();
        signal_all(&tree, nix::sys::signal::Signal::SIGSTOP);
        signal_all(&[daemon], nix::sys::signal::Signal::SIGSTOP);
        let Some((at, _)) = first_commit(&c.nodes, Some(p), Instant::now() + Duration::from_secs(60)).await else {
            panic!("run {run}: no new primary after freezing the primary")
        };
        m.entry("frozen-primary RTO (s)").or_default().push((at - t).as_secs_f64());
        signal_all(&[daemon], nix::sys::signal::Signal::SIGCONT);
        signal_all(&tree, nix::sys::signal::Signal::SIGCONT);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = stop.send(true);
        let (worst, _) = sampler.await.unwrap_or_default();
        if worst > 1 {
            two_writers += 1;
        }
        eprintln!("run {} of {runs} done", run + 1);
    }
    println!("{runs} runs; runs in which two nodes accepted writes at once: {two_writers}");
    println!("{:<40} {:>8} {:>8} {:>8}", "measure", "min", "median", "max");
    for (k, mut v) in m {
        v.sort_by(f64::total_cmp);
        println!("{k:<40} {:>8.2} {:>8.2} {:>8.2}", v[0], v[v.len() / 2], v[v.len() - 1]);
    }
}
