//! End to end: three `shield` daemons with real PostgreSQL 15 and a real etcd (or Consul) on
//! loopback. The daemons and databases run as an unprivileged user (`SHIELD_TEST_USER`, created
//! by scripts/setup.sh) when the test runs as root. Tests run one at a time (`SERIAL`): three
//! servers and three daemons per test already fill a 2-core machine.

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use cluster::*;
use servers::{free_port, EtcdCluster};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_replicate_and_fail_over() {
    let _serial = SERIAL.lock().await;
    let Some(pg_bin) = pg_bindir() else { return };
    let Some((uid, gid)) = run_as() else { return };
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let root = tempfile::tempdir().expect("temp dir");
    let _ = std::os::unix::fs::chown(root.path(), Some(uid), Some(gid));
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let dir = root.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let _ = std::os::unix::fs::chown(&dir, Some(uid), Some(gid));
            Node { name: format!("node{i}"), dir, pg_port: free_port(), api_port: free_port(), child: None, uid, gid }
        })
        .collect();
    for n in &mut nodes {
        std::fs::write(n.dir.join("shield.yml"), n.config(&etcd.endpoints(), &pg_bin)).expect("config");
        n.start();
    }

    // ---- bootstrap: one primary, two streaming replicas, a row everywhere -------------------
    let t = Instant::now();
    let primary = wait_for("one writable node", Duration::from_secs(90), &nodes, || async {
        let w = writable(&nodes).await;
        (w.len() == 1).then(|| w[0])
    })
    .await;
    exec(nodes[primary].pg_port, "CREATE TABLE e2e (v text); INSERT INTO e2e VALUES ('boot')")
        .await
        .expect("write on the primary");
    wait_for("replicas streaming the row", Duration::from_secs(90), &nodes, || {
        replicas_stream_from(&nodes, primary, "boot")
    })
    .await;
    println!("e2e: 3 nodes bootstrapped and streaming in {:?}", t.elapsed());
    // Health endpoints follow within a cycle.
    wait_for(
        "/primary and /replica to answer 200 on the right nodes only",
        Duration::from_secs(10),
        &nodes,
        || async {
            for (i, n) in nodes.iter().enumerate() {
                let got = (http_status(n.api_port, "/primary").await, http_status(n.api_port, "/replica").await);
                let want = if i == primary { (200, 503) } else { (503, 200) };
                if got != want || http_status(n.api_port, "/health").await != 200 {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    // ---- node crash: SIGKILL daemon and postmaster of the primary -----------------------------
    let t = Instant::now();
    nodes[primary].crash();
    let new_primary = wait_for("a new primary", Duration::from_secs(30), &nodes, || async {
        let w = writable(&nodes).await;
        (w.len() == 1 && w[0] != primary).then(|| w[0])
    })
    .await;
    exec(nodes[new_primary].pg_port, "INSERT INTO e2e VALUES ('after-failover')")
        .await
        .expect("commit on the new primary");
    println!("e2e: node crash → first commit on {} after {:?}", nodes[new_primary].name, t.elapsed());

    // ---- the old node comes back and rejoins as a replica ---------------------------------------
    let t = Instant::now();
    nodes[primary].start();
    wait_for("the old primary to rejoin and stream", Duration::from_secs(90), &nodes, || {
        replicas_stream_from(&nodes, new_primary, "after-failover")
    })
    .await;
    println!("e2e: old primary rejoined as a streaming replica in {:?}", t.elapsed());
    assert_eq!(writable(&nodes).await, vec![new_primary], "exactly one writable node");
    let log = nodes[primary].log();
    assert!(!log.contains("panicked"), "a daemon panicked:\n{log}");

    // Every decision the daemons made replays through decide() to the same result.
    for n in &nodes {
        let entries = shield_bin::journal::read(&n.dir.join("data.journal.jsonl")).expect("journal");
        assert!(entries.len() > 5, "{}: only {} journal lines", n.name, entries.len());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(shield_core::decide(&e.state, &e.obs), e.decision, "{} line {}", n.name, i + 1);
        }
        println!("e2e: {} journal lines of {} replayed identically", entries.len(), n.name);
    }
}

/// Freeze the primary's daemon *and* its whole database; nothing may let two nodes take writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_primary_never_leaves_two_writers() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let p = c.primary;
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
    let (stop, sampler) = start_sampler(ports);
    let daemon = c.nodes[p].child.as_ref().map(|ch| ch.id() as i32).expect("daemon");
    let tree = pg_tree(c.nodes[p].postmaster_pid().expect("postmaster"));
    signal_all(&tree, nix::sys::signal::Signal::SIGSTOP);
    signal_all(&[daemon], nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    let new_p = wait_for("another node to be promoted", Duration::from_secs(30), &c.nodes, || async {
        let w = writable(&c.nodes).await;
        w.iter().copied().find(|&i| i != p)
    })
    .await;
    println!("e2e: frozen primary → {} promoted after {:?}", c.nodes[new_p].name, t.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal_all(&[daemon], nix::sys::signal::Signal::SIGCONT);
    signal_all(&tree, nix::sys::signal::Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(true);
    let (worst, samples) = sampler.await.expect("sampler");
    println!("e2e: {samples} samples, at most {worst} writable node(s) at once");
    assert!(worst <= 1, "two nodes accepted writes at the same time");
    assert_eq!(writable(&c.nodes).await, vec![new_p], "the old primary must not be writable after it wakes");
}

/// Freeze only the primary's daemon: the fence keeper stops its database before the lease can
/// expire, so the promotion elsewhere never overlaps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_daemon_is_fenced_by_the_keeper() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let p = c.primary;
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
    let (stop, sampler) = start_sampler(ports);
    let daemon = c.nodes[p].child.as_ref().map(|ch| ch.id() as i32).expect("daemon");
    signal_all(&[daemon], nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    let new_p = wait_for("another node to be promoted", Duration::from_secs(30), &c.nodes, || async {
        let w = writable(&c.nodes).await;
        w.iter().copied().find(|&i| i != p)
    })
    .await;
    println!("e2e: frozen daemon → {} promoted after {:?}", c.nodes[new_p].name, t.elapsed());
    signal_all(&[daemon], nix::sys::signal::Signal::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop.send(true);
    let (worst, samples) = sampler.await.expect("sampler");
    println!("e2e: {samples} samples, at most {worst} writable node(s) at once");
    assert!(worst <= 1, "two nodes accepted writes at the same time");
    let log = c.nodes[p].log();
    assert!(log.contains("fence keeper"), "the keeper should have fenced the frozen daemon's database:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_primary_and_records_history() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let p = c.primary;
    let cand = (p + 1) % 3;
    let body = format!(r#"{{"leader":"{}","candidate":"{}"}}"#, c.nodes[p].name, c.nodes[cand].name);
    let t = Instant::now();
    let (code, text) = http_post(c.nodes[p].api_port, "/switchover", &body).await;
    assert_eq!(code, 200, "{text}\nleader log:\n{}", c.nodes[p].log());
    assert!(text.contains("Successfully switched over"), "{text}");
    let now_p = wait_for("the candidate to take writes", Duration::from_secs(30), &c.nodes, || async {
        let w = writable(&c.nodes).await;
        (w == vec![cand]).then_some(cand)
    })
    .await;
    println!("e2e: switchover to {} in {:?}", c.nodes[now_p].name, t.elapsed());
    exec(c.nodes[cand].pg_port, "INSERT INTO e2e VALUES ('after-switchover')").await.expect("write on the new primary");
    wait_for("the old primary to follow", Duration::from_secs(60), &c.nodes, || {
        replicas_stream_from(&c.nodes, cand, "after-switchover")
    })
    .await;
    let want = c.nodes[cand].name.clone();
    wait_for("the history key to record the switchover", Duration::from_secs(10), &c.nodes, || async {
        let (code, hist) = http_get(c.nodes[cand].api_port, "/history").await;
        (code == 200 && hist.contains(&want)).then_some(())
    })
    .await;
    // Bad bodies are refused with a message, never a crash.
    for bad in ["{", "[]", r#"{"leader": 5}"#, r#"{"leader":"nobody","candidate":"x"}"#] {
        let (code, _) = http_post(c.nodes[cand].api_port, "/switchover", bad).await;
        assert!(code == 400 || code == 412, "{bad}: {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_primary_hands_over() {
    let _serial = SERIAL.lock().await;
    let Some(mut c) = cluster().await else { return };
    let p = c.primary;
    let daemon = c.nodes[p].child.as_ref().map(|ch| ch.id() as i32).expect("daemon");
    let t = Instant::now();
    signal_all(&[daemon], nix::sys::signal::Signal::SIGTERM);
    let new_p = wait_for("a replica to take over", Duration::from_secs(20), &c.nodes, || async {
        let w = writable(&c.nodes).await;
        (w.len() == 1 && w[0] != p).then(|| w[0])
    })
    .await;
    println!("e2e: SIGTERM on the primary → {} took over in {:?}", c.nodes[new_p].name, t.elapsed());
    let status = c.nodes[p].child.as_mut().expect("child").wait().expect("wait");
    assert!(status.success(), "the daemon exits cleanly: {status}");
    c.nodes[p].child = None;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_database_restarts_in_place() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let p = c.primary;
    // /metrics speaks Patroni's names.
    let want = format!("patroni_primary{{scope=\"e2e\",name=\"{}\"}} 1", c.nodes[p].name);
    wait_for("/metrics to show the primary", Duration::from_secs(10), &c.nodes, || async {
        let (code, text) = http_get(c.nodes[p].api_port, "/metrics").await;
        (code == 200 && text.contains(&want) && text.contains("shield_decisions")).then_some(())
    })
    .await;
    let pid = c.nodes[p].postmaster_pid().expect("postmaster");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    wait_for("the same node to be primary again", Duration::from_secs(30), &c.nodes, || async {
        let w = writable(&c.nodes).await;
        (w == vec![p] && c.nodes[p].postmaster_pid() != Some(pid)).then_some(())
    })
    .await;
    exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-restart')").await.expect("write after restart");
    wait_for("replicas streaming again", Duration::from_secs(60), &c.nodes, || {
        replicas_stream_from(&c.nodes, p, "after-restart")
    })
    .await;
}

/// A node whose data directory belongs to another cluster is refused, and its data is kept.
/// Garbage in another member key changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_and_garbage_members_are_refused_without_harm() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let pg_bin = pg_bindir().expect("checked by cluster()");
    let (uid, gid) = (c.nodes[0].uid, c.nodes[0].gid);
    let dir = c._root.path().join("node3");
    std::fs::create_dir_all(&dir).expect("dir");
    let _ = std::os::unix::fs::chown(&dir, Some(uid), Some(gid));
    let out = Command::new(pg_bin.join("initdb"))
        .arg("-D")
        .arg(dir.join("data"))
        .arg("-U")
        .arg("postgres")
        .uid(uid)
        .gid(gid)
        .output()
        .expect("initdb");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut stranger =
        Node { name: "node3".into(), dir, pg_port: free_port(), api_port: free_port(), child: None, uid, gid };
    std::fs::write(stranger.dir.join("shield.yml"), stranger.config(&c._etcd.endpoints(), &pg_bin)).expect("config");
    // Garbage written straight into etcd, as a broken tool would.
    let ctl = servers::find_bin("SHIELD_ETCDCTL_BIN", "etcdctl").expect("etcdctl");
    let put = Command::new(ctl)
        .arg(format!("--endpoints={}", c._etcd.endpoints()[0]))
        .args(["put", "/service/e2e/members/junk", "{not json"])
        .output()
        .expect("etcdctl");
    assert!(put.status.success());
    stranger.start();
    wait_for("the stranger to report the mismatch", Duration::from_secs(20), &c.nodes, || async {
        stranger.log().contains("system ID mismatch").then_some(())
    })
    .await;
    assert!(stranger.dir.join("data/PG_VERSION").exists(), "the foreign data directory must be kept");
    assert_eq!(writable(&c.nodes).await, vec![c.primary], "the cluster is unaffected");
    exec(c.nodes[c.primary].pg_port, "INSERT INTO e2e VALUES ('still-fine')").await.expect("write");
    for n in c.nodes.iter().chain(std::iter::once(&stranger)) {
        assert!(!n.log().contains("panicked"), "{} panicked", n.name);
    }
}

/// The same bootstrap and node-crash failover with Consul as the DCS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_and_fail_over_on_consul() {
    let _serial = SERIAL.lock().await;
    let Some(pg_bin) = pg_bindir() else { return };
    let Some((uid, gid)) = run_as() else { return };
    let Some(consul) = servers::ConsulAgent::start("1s", &[]) else { return };
    let root = tempfile::tempdir().expect("temp dir");
    let _ = std::os::unix::fs::chown(root.path(), Some(uid), Some(gid));
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let dir = root.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            let _ = std::os::unix::fs::chown(&dir, Some(uid), Some(gid));
            Node { name: format!("node{i}"), dir, pg_port: free_port(), api_port: free_port(), child: None, uid, gid }
        })
        .collect();
    let section = format!("consul:\n  url: {}\n", consul.url());
    for n in &mut nodes {
        std::fs::write(n.dir.join("shield.yml"), n.config_with(&section, &pg_bin)).expect("config");
        n.start();
    }
    let primary = wait_for("one writable node", Duration::from_secs(90), &nodes, || async {
        let w = writable(&nodes).await;
        (w.len() == 1).then(|| w[0])
    })
    .await;
    exec(nodes[primary].pg_port, "CREATE TABLE e2e (v text); INSERT INTO e2e VALUES ('boot')").await.expect("write");
    wait_for("replicas streaming the row", Duration::from_secs(90), &nodes, || {
        replicas_stream_from(&nodes, primary, "boot")
    })
    .await;
    let t = Instant::now();
    nodes[primary].crash();
    let new_primary = wait_for("a new primary", Duration::from_secs(30), &nodes, || async {
        let w = writable(&nodes).await;
        (w.len() == 1 && w[0] != primary).then(|| w[0])
    })
    .await;
    exec(nodes[new_primary].pg_port, "INSERT INTO e2e VALUES ('after-failover')")
        .await
        .expect("commit on the new primary");
    println!("e2e (consul): node crash → first commit on {} after {:?}", nodes[new_primary].name, t.elapsed());
    nodes[primary].start();
    wait_for("the old primary to rejoin", Duration::from_secs(90), &nodes, || {
        replicas_stream_from(&nodes, new_primary, "after-failover")
    })
    .await;
    assert_eq!(writable(&nodes).await, vec![new_primary]);
}
