//! The cluster benchmark: real etcd, three `shield` daemons and PostgreSQL 15 on loopback.
//! Reports min/median/max over `SHIELD_BENCH_RUNS` runs (default 5) of: bootstrap time,
//! node-crash RTO, old-primary rejoin, switchover write-unavailability, frozen-primary RTO, and
//! each idle daemon's RSS, CPU seconds per minute and DCS requests per minute.
//!
//! `cargo bench -p shield-bin --bench cluster` (servers from scripts/setup.sh; as root, the nodes
//! run as the unprivileged test user). `SHIELD_BENCH_TIMINGS=patroni` runs the cluster at
//! Patroni's default timings (ttl 30, loop_wait 10, retry_timeout 10) instead of Shield's
//! (ttl 4, loop_wait 1, retry_timeout 1.5). etcd's requests are its own counters
//! (`grpc_server_msg_received_total`: every message a client sent, one per unary call and one
//! per message on a stream; `grpc_server_started_total`: calls and streams opened).

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

/// Every mapping of `pid` from `/proc/PID/smaps`: (resident KiB, path or "", permissions).
fn smaps(pid: u32) -> Vec<(u64, String, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut maps = Vec::new();
    let mut current = (String::new(), String::new());
    for l in s.lines() {
        if let Some(kib) = l.strip_prefix("Rss:") {
            let kib: u64 = kib.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
            maps.push((kib, current.0.clone(), current.1.clone()));
        } else if l.split_whitespace().next().is_some_and(|f| f.contains('-') && !f.ends_with(':')) {
            // A mapping's header: address range, perms, offset, dev, inode, then the path.
            let f: Vec<&str> = l.split_whitespace().collect();
            current = (f.get(5).copied().unwrap_or("").to_owned(), f.get(1).copied().unwrap_or("").to_owned());
        }
    }
    maps
}

/// Resident KiB by mapping: (the daemon's own binary, shared libraries, anonymous and stacks).
fn proc_rss_by_mapping(pid: u32) -> (u64, u64, u64) {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let (mut bin, mut libs, mut anon) = (0, 0, 0);
    for (kib, path, _) in smaps(pid) {
        if !path.is_empty() && std::path::Path::new(&path) == exe {
            bin += kib;
        } else if path.starts_with('/') {
            libs += kib;
        } else {
            anon += kib;
        }
    }
    (bin, libs, anon)
}

/// The eight largest resident mappings of `pid`, as "KiB path-or-kind perms".
fn largest_mappings(pid: u32) -> String {
    let mut maps = smaps(pid);
    maps.sort_by_key(|m| std::cmp::Reverse(m.0));
    maps.iter()
        .take(8)
        .map(|(k, path, perms)| {
            let name = if path.is_empty() { "[anon]" } else { path.rsplit('/').next().unwrap_or(path) };
            format!("{k} {name} {perms}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = s.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
}

/// etcd's counter `metric` (all clients), by gRPC method.
async fn etcd_counts(url: &str, metric: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(v) = shield_bin_metrics(url).await else { return out };
    for l in v.lines().filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{')) {
        let method = l.split("grpc_method=\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or("?").to_owned();
        let n: f64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(method).or_insert(0.0) += n;
    }
    out
}

/// `after - before` per method, scaled to a minute of `secs`, and the total.
fn per_minute(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, secs: f64) -> (f64, String) {
    let mut parts = Vec::new();
    let mut total = 0.0;
    for (k, v) in after {
        let d = (v - before.get(k).copied().unwrap_or(0.0)) * 60.0 / secs;
        if d > 0.0 {
            total += d;
            parts.push(format!("{k} {d:.0}"));
        }
    }
    (total, parts.join(", "))
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

/// The timings the cluster runs at: (name, ttl s, loop_wait s, retry_timeout s).
fn timings() -> (&'static str, u64, u64, &'static str) {
    match std::env::var("SHIELD_BENCH_TIMINGS").as_deref() {
        Ok("patroni") => ("Patroni's defaults", 30, 10, "10"),
        _ => ("Shield's defaults", 4, 1, "1.5"),
    }
}

type Measures = BTreeMap<&'static str, Vec<f64>>;

/// Idle resource use over `secs`: daemon CPU and RSS, etcd CPU, etcd's requests by method.
async fn idle(c: &Cluster, m: &mut Measures, notes: &mut Vec<String>, secs: u64) {
    let pids: Vec<u32> = c.nodes.iter().filter_map(|n| n.child.as_ref().map(std::process::Child::id)).collect();
    let etcd_url = c.dcs.etcd_endpoint().expect("etcd");
    let etcd_pid = c.dcs.etcd().and_then(|e| e.members.first()).map(|e| e.pid()).expect("etcd pid");
    // Idle means no WAL, as on a cluster that has been quiet for a while: every database that
    // takes connections is analysed now (not by autovacuum inside the window: pg_waldump showed
    // its pg_statistic updates in template1 moving the positions), a checkpoint writes what that
    // left pending, and the wait lets the standby snapshot that follows any activity (every
    // 15 s) pass and the members publish the last position. Each later WAL position change
    // costs one put per member (and the leader's status key), as with Patroni.
    let primary = c.nodes[c.primary].pg_port;
    for db in ["template1", "postgres"] {
        exec_in(primary, db, "VACUUM ANALYZE").await.expect("vacuum");
    }
    exec(primary, "CHECKPOINT").await.expect("checkpoint");
    let (_, _, loop_wait, _) = timings();
    tokio::time::sleep(Duration::from_secs(30 + loop_wait)).await;
    let wal0 = wal_bytes(primary).await;
    // Which keys were written in the window (an etcdctl watch, opened before the counters start).
    let ctl = servers::find_bin("SHIELD_ETCDCTL_BIN", "etcdctl").expect("etcdctl");
    let puts = std::process::Command::new(ctl)
        .arg(format!("--endpoints={etcd_url}"))
        .args(["watch", "--prefix", "/service/e2e/"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl watch");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticks0 = pids.iter().map(|&p| proc_cpu_ticks(p)).sum::<u64>();
    let etcd0 = proc_cpu_ticks(etcd_pid);
    let msgs0 = etcd_counts(&etcd_url, "grpc_server_msg_received_total").await;
    let started0 = etcd_counts(&etcd_url, "grpc_server_started_total").await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ticks1 = pids.iter().map(|&p| proc_cpu_ticks(p)).sum::<u64>();
    let etcd1 = proc_cpu_ticks(etcd_pid);
    let msgs1 = etcd_counts(&etcd_url, "grpc_server_msg_received_total").await;
    let started1 = etcd_counts(&etcd_url, "grpc_server_started_total").await;
    let wal1 = wal_bytes(primary).await;
    notes.push(format!(
        "keys written in the idle window: {}; WAL written by the primary in it: {} bytes{}",
        watched_puts(puts),
        wal1 - wal0,
        wal_records(&c.nodes[c.primary], wal0, wal1)
    ));
    let (hz, per_min) = (100.0, 60.0 / secs as f64);
    m.entry("idle daemon CPU (s per minute)")
        .or_default()
        .push((ticks1 - ticks0) as f64 / hz / pids.len() as f64 * per_min);
    m.entry("etcd CPU (s per minute)").or_default().push((etcd1 - etcd0) as f64 / hz * per_min);
    let (msgs, by_method) = per_minute(&msgs0, &msgs1, secs as f64);
    let (streams, opened) = per_minute(&started0, &started1, secs as f64);
    m.entry("etcd requests per minute, whole cluster").or_default().push(msgs);
    m.entry("etcd requests per minute per member").or_default().push(msgs / pids.len() as f64);
    m.entry("etcd calls and streams opened per minute").or_default().push(streams);
    notes.push(format!("requests/min by method: {by_method}; opened/min: {opened}"));
    if let Some(&p) = pids.first() {
        let threads = std::fs::read_dir(format!("/proc/{p}/task")).map(|d| d.count()).unwrap_or(0);
        notes.push(format!("daemon threads: {threads}; its largest resident mappings: {}", largest_mappings(p)));
    }
    for &p in &pids {
        m.entry("idle daemon RSS (MiB)").or_default().push(proc_rss_kib(p) as f64 / 1024.0);
        let (bin, libs, anon) = proc_rss_by_mapping(p);
        m.entry("idle daemon RSS: its binary (MiB)").or_default().push(bin as f64 / 1024.0);
        m.entry("idle daemon RSS: shared libraries (MiB)").or_default().push(libs as f64 / 1024.0);
        m.entry("idle daemon RSS: anonymous (MiB)").or_default().push(anon as f64 / 1024.0);
    }
}

/// The primary's current WAL position, in bytes.
async fn wal_bytes(port: u16) -> i64 {
    let rows = sql(port, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint").await.expect("wal position");
    rows.first().map(|r| r.get::<_, i64>(0)).unwrap_or_default()
}

/// What the WAL between two positions holds, by record type (pg_waldump's `--stats=record`
/// lines with a count), so a window that was not idle says why; empty when nothing was written.
fn wal_records(node: &Node, from: i64, to: i64) -> String {
    if to <= from {
        return String::new();
    }
    let lsn = |b: i64| format!("{:X}/{:X}", b >> 32, b & 0xffff_ffff);
    let Some(bin) = pg_bindir() else { return String::new() };
    let out = std::process::Command::new(bin.join("pg_waldump"))
        .arg("--stats=record")
        .arg("-p")
        .arg(node.dir.join("data/pg_wal"))
        .args(["-s", &lsn(from), "-e", &lsn(to)])
        .output();
    let Ok(out) = out else { return " (pg_waldump did not run)".into() };
    let text = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (kind, count) = (f.next()?, f.next()?.parse::<u64>().ok()?);
            (kind.contains('/') && count > 0).then(|| format!("{kind} x{count}"))
        })
        .collect();
    format!(" ({})", kinds.join(", "))
}

/// Ends an `etcdctl watch` and counts its events by key (event lines are the type, key, value).
fn watched_puts(mut child: std::process::Child) -> String {
    let _ = child.kill();
    let Ok(out) = child.wait_with_output() else { return "unknown".into() };
    let text = String::from_utf8_lossy(&out.stdout);
    if let Ok(path) = std::env::var("SHIELD_BENCH_PUTS_LOG") {
        let _ = std::fs::write(path, text.as_bytes());
    }
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l == "PUT" || l == "DELETE" {
            if let Some(k) = lines.next() {
                *by_key.entry(format!("{l} {}", k.trim_start_matches("/service/e2e/"))).or_default() += 1;
            }
        }
    }
    by_key.iter().map(|(k, n)| format!("{k} x{n}")).collect::<Vec<_>>().join(", ")
}

/// Waits until the leader key is gone (polling a watched handle: no requests); returns when.
async fn leader_key_gone(dcs: &shield_dcs_etcd::EtcdDcs, within: Duration) -> Option<Instant> {
    use shield_core::ports::Dcs;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if dcs.read().await.is_ok_and(|v| v.leader.is_none()) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

fn watcher(c: &Cluster) -> shield_dcs_etcd::EtcdDcs {
    let name = shield_core::MemberName::new("bench-watcher").expect("name");
    let mut cfg = shield_dcs_etcd::EtcdConfig::new(vec![c.dcs.etcd_endpoint().expect("etcd")], "e2e", name);
    cfg.cache_view = true;
    shield_dcs_etcd::EtcdDcs::new(cfg)
}

/// Node crash: RTO, the part of it after the lease ran out, and the old primary's rejoin.
async fn crash_and_rejoin(c: &mut Cluster, m: &mut Measures, p: usize, run: usize) -> usize {
    let w = watcher(c);
    let _ = shield_core::ports::Dcs::read(&w).await;
    let t = Instant::now();
    c.nodes[p].crash();
    let gone = tokio::spawn(async move { leader_key_gone(&w, Duration::from_secs(90)).await });
    let Some((at, np)) = first_commit(&c.nodes, Some(p), Instant::now() + Duration::from_secs(90)).await else {
        panic!("run {run}: no new primary after a node crash")
    };
    m.entry("node-crash RTO (s)").or_default().push((at - t).as_secs_f64());
    if let Ok(Some(g)) = gone.await {
        m.entry("lease left at the crash (s)").or_default().push((g - t).as_secs_f64());
        m.entry("crash RTO beyond the lease's end (s)")
            .or_default()
            .push(at.saturating_duration_since(g).as_secs_f64());
    }
    let t = Instant::now();
    c.nodes[p].start();
    exec(c.nodes[np].pg_port, "INSERT INTO e2e VALUES ('rejoin')").await.expect("write");
    wait_for("the old primary to rejoin", Duration::from_secs(90), || replicas_stream_from(&c.nodes, np, "rejoin"))
        .await;
    m.entry("old-primary rejoin (s)").or_default().push(t.elapsed().as_secs_f64());
    if t.elapsed() > Duration::from_secs(3) {
        for i in [p, np] {
            let log = c.nodes[i].log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "run {run}: slow rejoin; {} log:\n{}",
                c.nodes[i].name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    np
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("SHIELD_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let mut m: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut two_writers = 0usize;
    let mut notes = Vec::new();
    for run in 0..runs {
        let t = Instant::now();
        let (_, ttl, loop_wait, retry) = timings();
        let edit = move |_: &Node, cfg: String| {
            cfg.replace(
                "ttl: 4\n    loop_wait: 1\n    retry_timeout: 1.5",
                &format!("ttl: {ttl}\n    loop_wait: {loop_wait}\n    retry_timeout: {retry}"),
            )
        };
        let Some(mut c) = cluster_edited(TestDcs::Etcd(servers::EtcdCluster::start(1).expect("etcd")), edit).await
        else {
            return;
        };
        m.entry("bootstrap of 3 nodes (s)").or_default().push(t.elapsed().as_secs_f64());
        idle(&c, &mut m, &mut notes, (loop_wait * 6).max(30)).await;

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
        let np = crash_and_rejoin(&mut c, &mut m, cand, run).await;
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
    let (name, ttl, loop_wait, retry) = timings();
    println!("{name}: ttl {ttl}, loop_wait {loop_wait}, retry_timeout {retry}");
    println!("{runs} runs; runs in which two nodes accepted writes at once: {two_writers}");
    for n in &notes {
        println!("{n}");
    }
    println!("{:<40} {:>8} {:>8} {:>8}", "measure", "min", "median", "max");
    for (k, mut v) in m {
        v.sort_by(f64::total_cmp);
        println!("{k:<40} {:>8.2} {:>8.2} {:>8.2}", v[0], v[v.len() / 2], v[v.len() - 1]);
    }
}
