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

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_replicate_and_fail_over() {
    let _serial = SERIAL.lock().await;
    // ---- bootstrap: one primary, two streaming replicas, a row everywhere -------------------
    let t = Instant::now();
    let Some(mut c) = cluster().await else { return };
    let primary = c.primary;
    println!("e2e: 3 nodes bootstrapped and streaming in {:?}", t.elapsed());
    let nodes = &mut c.nodes;
    // Health endpoints follow within a cycle.
    wait_for("/primary and /replica to answer 200 on the right nodes only", Duration::from_secs(10), || async {
        for (i, n) in nodes.iter().enumerate() {
            let got = (http_status(n.api_port, "/primary").await, http_status(n.api_port, "/replica").await);
            let want = if i == primary { (200, 503) } else { (503, 200) };
            if got != want || http_status(n.api_port, "/health").await != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;

    // ---- a promotion that reserved timeline 2 and never ran (the ghost's line in `history`) ---
    // A real reservation names the reserving replica's position, within maximum_lag_on_failover
    // of the leader's: take the primary's.
    let q = "SELECT (pg_current_wal_lsn() - '0/0')::bigint";
    let lsn: i64 = sql(nodes[primary].pg_port, q).await.expect("position")[0].get(0);
    let ghost = shield_core::cluster::HistoryLine {
        timeline: shield_core::Timeline(1),
        lsn: shield_core::Lsn(lsn as u64),
        reason: "no recovery target specified".to_owned(),
        timestamp: Some("2026-01-01T00:00:00.000+00:00".to_owned()),
        new_leader: Some("ghost".to_owned()),
    };
    let etcd = c.dcs.etcd_endpoint().expect("an etcd cluster");
    let me = shield_core::MemberName::new("history-writer").expect("name");
    let dcs = shield_dcs_etcd::EtcdDcs::new(shield_dcs_etcd::EtcdConfig::new(vec![etcd], "e2e", me));
    shield_core::ports::Dcs::write_history(&dcs, &[ghost]).await.expect("write the reservation");

    // ---- node crash, then the old node rejoins as a replica -----------------------------------
    let (new_primary, rto, rejoin) = crash_primary_and_rejoin(nodes, primary).await;
    println!("e2e: node crash → first commit on {} after {rto:?}", nodes[new_primary].name);
    // PostgreSQL skipped the reserved id: the new primary writes on timeline 3, and `history`
    // holds the ghost's reservation and this promotion's line.
    let q = "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)";
    let tli = sql(nodes[new_primary].pg_port, q).await.expect("timeline")[0].get::<_, String>(0);
    assert_eq!(tli, "00000003", "the promotion must skip the reserved timeline 2");
    let view = wait_for("history to record the promotion", Duration::from_secs(10), || async {
        let v = shield_core::ports::Dcs::read(&dcs).await.ok()?;
        (v.history.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(view.timeline(), shield_core::Timeline(3), "{:?}", view.history);
    assert_eq!(view.history[1].new_leader.as_deref(), Some(nodes[new_primary].name.as_str()));
    println!("e2e: old primary rejoined as a streaming replica in {rejoin:?}");
    assert_eq!(writable(nodes).await, vec![new_primary], "exactly one writable node");
    let log = nodes[primary].log();
    assert!(!log.contains("panicked"), "a daemon panicked:\n{log}");

    // Every decision the daemons made replays through decide() to the same result.
    for n in nodes.iter() {
        let entries = shield_bin::daemon::journal::read(&n.dir.join("data.journal.jsonl")).expect("journal");
        assert!(entries.len() > 5, "{}: only {} journal lines", n.name, entries.len());
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(shield_core::decide(&e.state, &e.obs), e.decision, "{} line {}", n.name, i + 1);
        }
        println!("e2e: {} journal lines of {} replayed identically", entries.len(), n.name);
    }
}

/// The frozen primary stopped feeding its watchdog early enough that the watchdog would have
/// reset the host before another node could take the leader lock.
fn assert_watchdog_fires_first(frozen: &Node, new_leader: &Node) {
    let fires = frozen.watchdog_fires_at().expect("the primary's watchdog was armed and fed");
    let taken = new_leader.lock_taken_at().expect("the new leader logged taking the lock");
    println!("e2e: the frozen primary's watchdog fires {} ms before the lock is taken elsewhere", taken - fires);
    assert!(fires < taken, "watchdog fires at {fires}, the lock was taken at {taken}");
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
    let new_p = wait_for("another node to be promoted", Duration::from_secs(30), || async {
        let w = writable(&c.nodes).await;
        w.iter().copied().find(|&i| i != p)
    })
    .await;
    println!("e2e: frozen primary → {} promoted after {:?}", c.nodes[new_p].name, t.elapsed());
    assert_watchdog_fires_first(&c.nodes[p], &c.nodes[new_p]);
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
    let new_p = wait_for("another node to be promoted", Duration::from_secs(30), || async {
        let w = writable(&c.nodes).await;
        w.iter().copied().find(|&i| i != p)
    })
    .await;
    println!("e2e: frozen daemon → {} promoted after {:?}", c.nodes[new_p].name, t.elapsed());
    assert_watchdog_fires_first(&c.nodes[p], &c.nodes[new_p]);
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
    let now_p = wait_for("the candidate to take writes", Duration::from_secs(30), || async {
        let w = writable(&c.nodes).await;
        (w == vec![cand]).then_some(cand)
    })
    .await;
    println!("e2e: switchover to {} in {:?}", c.nodes[now_p].name, t.elapsed());
    exec(c.nodes[cand].pg_port, "INSERT INTO e2e VALUES ('after-switchover')").await.expect("write on the new primary");
    wait_for("the old primary to follow", Duration::from_secs(60), || {
        replicas_stream_from(&c.nodes, cand, "after-switchover")
    })
    .await;
    // Replication slots as Patroni 4 keeps them (member_slots_ttl): the new primary holds one
    // active slot per replica; the old primary, now a replica, keeps an inactive copy for each of
    // the other members, advanced to the positions the new primary publishes.
    wait_for("the slots to follow the new primary", Duration::from_secs(20), || async {
        let q = "SELECT count(*) FILTER (WHERE active), count(*) FROM pg_replication_slots";
        let new = sql(c.nodes[cand].pg_port, q).await.ok()?;
        let old = sql(c.nodes[p].pg_port, q).await.ok()?;
        let counts = |rows: &[tokio_postgres::Row]| rows.first().map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
        (counts(&new) == Some((2, 2)) && counts(&old) == Some((0, 2))).then_some(())
    })
    .await;
    // Callbacks as Patroni calls them: the old primary became a replica, the candidate a master.
    wait_for("the role-change callbacks", Duration::from_secs(10), || async {
        let old = c.nodes[p].callbacks();
        let new = c.nodes[cand].callbacks();
        (old.last().map(String::as_str) == Some("on_role_change replica e2e")
            && new.last().map(String::as_str) == Some("on_role_change master e2e"))
        .then_some(())
    })
    .await;
    // The bootstrap node's first callback was on_start as master, a cloned replica's as replica.
    assert_eq!(c.nodes[p].callbacks().first().map(String::as_str), Some("on_start master e2e"));
    assert_eq!(c.nodes[cand].callbacks().first().map(String::as_str), Some("on_start replica e2e"));
    let want = c.nodes[cand].name.clone();
    wait_for("the history key to record the switchover", Duration::from_secs(10), || async {
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
    let new_p = one_writable("a replica to take over", Duration::from_secs(20), &c.nodes, Some(p)).await;
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
    wait_for("/metrics to show the primary", Duration::from_secs(10), || async {
        let (code, text) = http_get(c.nodes[p].api_port, "/metrics").await;
        (code == 200 && text.contains(&want) && text.contains("shield_decisions")).then_some(())
    })
    .await;
    let pid = c.nodes[p].postmaster_pid().expect("postmaster");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).expect("kill");
    wait_for("the same node to be primary again", Duration::from_secs(30), || async {
        let w = writable(&c.nodes).await;
        (w == vec![p] && c.nodes[p].postmaster_pid() != Some(pid)).then_some(())
    })
    .await;
    exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-restart')").await.expect("write after restart");
    // PATCH /config merges, checks and writes with compare-and-set; bad values are refused.
    let (code, text) = http_patch(
        c.nodes[p].api_port,
        "/config",
        r#"{"maximum_lag_on_failover": 2097152, "postgresql": {"parameters": {"work_mem": "8MB"}}}"#,
    )
    .await;
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("2097152") && text.contains("work_mem"), "{text}");
    let (code, text) = http_patch(c.nodes[p].api_port, "/config", r#"{"ttl": "soon"}"#).await;
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("ttl"), "{text}");
    let (code, _) = http_call_method(c.nodes[p].api_port, "/switchover", None, hyper::Method::DELETE).await;
    assert_eq!(code, 404, "nothing scheduled");
    wait_for("replicas streaming again", Duration::from_secs(60), || {
        replicas_stream_from(&c.nodes, p, "after-restart")
    })
    .await;
}

/// The primary's postmaster stops answering (SIGSTOP: it accepts no connection, while the
/// backends it forked, the WAL senders among them, go on), for a spell shorter than
/// primary_start_timeout (30 s): its status query does not answer, and that alone costs nothing.
/// The leader keeps the lock, publishes itself as an "unknown" primary, and is the primary again
/// when the postmaster resumes; nobody else is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_status_does_not_answer_keeps_the_lock() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let p = c.primary;
    let pid = c.nodes[p].postmaster_pid().expect("postmaster");
    let replica_api = c.nodes[(p + 1) % 3].api_port;
    let leader_state = || async move {
        let (_, body) = http_get(replica_api, "/cluster").await;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let leader = v["members"].as_array()?.iter().find(|m| m["role"] == "leader")?.clone();
        Some((leader["name"].as_str()?.to_owned(), leader["state"].as_str()?.to_owned()))
    };
    // The whole tree: the daemon keeps its status connection open, so stopping the postmaster
    // alone leaves that connection's backend answering (a database that answers).
    let tree = pg_tree(pid);
    signal_all(&tree, nix::sys::signal::Signal::SIGSTOP);
    let t = Instant::now();
    let seen = wait_for("the leader to publish an unknown status", Duration::from_secs(10), || async {
        leader_state().await.filter(|(_, state)| state == "unknown")
    })
    .await;
    assert_eq!(seen.0, c.nodes[p].name, "the lock holder changed");
    println!("e2e: the stopped postmaster's status shows as unknown after {:?}", t.elapsed());
    // Hold it for 12 s in all, checking that the lock stays where it is.
    while t.elapsed() < Duration::from_secs(12) {
        let (leader, _) = leader_state().await.expect("/cluster on a replica");
        assert_eq!(leader, c.nodes[p].name, "the lock moved while the status was unknown");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    signal_all(&tree, nix::sys::signal::Signal::SIGCONT);
    wait_for("the leader to be seen running again", Duration::from_secs(10), || async {
        leader_state().await.filter(|(name, state)| *name == c.nodes[p].name && state == "running")
    })
    .await;
    assert_eq!(writable(&c.nodes).await, vec![p], "the same single primary");
    assert_eq!(c.nodes[p].postmaster_pid(), Some(pid), "the postmaster was not restarted");
    exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-stall')").await.expect("write after the stall");
    let log = c.nodes[p].log();
    assert!(log.contains("did not answer its status query"), "{log}");
    assert!(!log.contains("released leader lock") && !log.contains("demot"), "{log}");
    for (i, n) in c.nodes.iter().enumerate().filter(|(i, _)| *i != p) {
        assert!(n.lock_taken_at().is_none(), "node {i} took the lock:\n{}", n.log());
    }
    wait_for("replicas streaming the new row", Duration::from_secs(30), || {
        replicas_stream_from(&c.nodes, p, "after-stall")
    })
    .await;
}

/// A node whose data directory belongs to another cluster is refused, and its data is kept.
/// Garbage in another member key changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_and_garbage_members_are_refused_without_harm() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let mut stranger = c.new_node("node3");
    let (uid, gid) = (stranger.uid, stranger.gid);
    let out = Command::new(c.pg_bin.join("initdb"))
        .arg("-D")
        .arg(stranger.dir.join("data"))
        .arg("-U")
        .arg("postgres")
        .uid(uid)
        .gid(gid)
        .output()
        .expect("initdb");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(stranger.dir.join("shield.yml"), stranger.config_with(&c.dcs.section(), &c.pg_bin)).expect("config");
    // Garbage written straight into etcd, as a broken tool would.
    let ctl = servers::find_bin("SHIELD_ETCDCTL_BIN", "etcdctl").expect("etcdctl");
    let put = Command::new(ctl)
        .arg(format!("--endpoints={}", c.dcs.etcd_endpoint().expect("etcd")))
        .args(["put", "/service/e2e/members/junk", "{not json"])
        .output()
        .expect("etcdctl");
    assert!(put.status.success());
    stranger.start();
    wait_for("the stranger to report the mismatch", Duration::from_secs(20), || async {
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
    let Some(agent) = servers::ConsulAgent::start("1s", &[]) else { return };
    let catalog = format!("{}/v1/catalog/service/e2e", agent.url());
    // Patroni's register_service: each node is an instance of service `e2e`, tagged with its role.
    let Some(mut c) = cluster_edited(TestDcs::Consul(agent), |_, config| {
        config.replacen("consul:\n", "consul:\n  register_service: true\n  service_check_interval: 1\n", 1)
    })
    .await
    else {
        return;
    };
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    let roles = |primary: usize| {
        let (catalog, names) = (catalog.clone(), names.clone());
        async move {
            let v = shield_bin::net::http::get_json(&catalog, Duration::from_secs(2)).await.ok()?;
            let entries = v.as_array()?;
            let tagged = |name: &str, tag: &str| {
                entries.iter().any(|e| {
                    e["ServiceID"] == format!("e2e/{name}")
                        && e["ServiceTags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag))
                })
            };
            let ok = names.iter().enumerate().all(|(i, n)| tagged(n, if i == primary { "primary" } else { "replica" }));
            ok.then_some(())
        }
    };
    wait_for("the Consul service to list the primary and the replicas", Duration::from_secs(20), || roles(c.primary))
        .await;
    let (primary, nodes) = (c.primary, &mut c.nodes);
    let (new_primary, rto, _) = crash_primary_and_rejoin(nodes, primary).await;
    println!("e2e (consul): node crash → first commit on {} after {rto:?}", nodes[new_primary].name);
    assert_eq!(writable(nodes).await, vec![new_primary]);
    wait_for("the Consul service to follow the failover", Duration::from_secs(20), || roles(new_primary)).await;
}

/// etcd loses quorum (2 of 3 members frozen): the primary fences itself before its lease could
/// expire, nobody else can take the lock, and the cluster recovers by itself afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_quorum_loss_fences_the_primary_and_recovers() {
    let _serial = SERIAL.lock().await;
    let Some(etcd) = servers::EtcdCluster::start(3) else { return };
    let Some(c) = cluster_with(TestDcs::Etcd(etcd)).await else { return };
    let p = c.primary;
    let etcd = c.dcs.etcd().expect("etcd");
    let postmaster = c.nodes[p].postmaster_pid().expect("the primary's postmaster");
    etcd.members[1].freeze();
    etcd.members[2].freeze();
    // The fence is the postmaster's exit, watched every 10 ms: a SQL probe of all three nodes
    // can itself take seconds on a loaded machine and would time the probe, not the fence.
    let fenced = wait_for_exit(postmaster, Duration::from_secs(10)).await.expect("the primary to fence itself");
    println!("e2e: etcd quorum lost → primary's postmaster gone after {fenced:?} (ttl 4 s)");
    // The lease lasts 4 s from the last renewal, which was before the freeze.
    assert!(fenced < Duration::from_millis(4_200), "fenced only after {fenced:?}, past the lease");
    assert!(writable(&c.nodes).await.is_empty(), "no node accepts writes after the fence");
    // Nobody may become primary while there is no quorum.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(writable(&c.nodes).await.is_empty(), "a node accepted writes without a DCS quorum");
    etcd.members[1].thaw();
    etcd.members[2].thaw();
    let t = Instant::now();
    let np = one_writable("one primary again", Duration::from_secs(60), &c.nodes, None).await;
    println!("e2e: quorum back → {} primary after {:?} (was {})", c.nodes[np].name, t.elapsed(), c.nodes[p].name);
    exec(c.nodes[np].pg_port, "INSERT INTO e2e VALUES ('after-quorum')").await.expect("write");
    wait_for("replicas streaming again", Duration::from_secs(60), || {
        replicas_stream_from(&c.nodes, np, "after-quorum")
    })
    .await;
}

/// Failsafe mode (issue 16): every etcd member frozen for 30 s under a writer. Each member
/// accepts the primary over `POST /failsafe`, so the primary keeps taking writes and nobody
/// promotes; once etcd is back the primary holds the leader key again (taking it back if it
/// expired), with the same postmaster throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_keeps_the_primary_through_an_etcd_outage() {
    let _serial = SERIAL.lock().await;
    let Some(etcd) = servers::EtcdCluster::start(3) else { return };
    let Some(c) = cluster_with(TestDcs::Etcd(etcd)).await else { return };
    let p = c.primary;
    let (code, text) = http_patch(c.nodes[p].api_port, "/config", r#"{"failsafe_mode": true}"#).await;
    assert_eq!(code, 200, "{text}");
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    wait_for("the leader to publish every member as the failsafe topology", Duration::from_secs(20), || async {
        let (code, body) = http_get(c.nodes[p].api_port, "/failsafe").await;
        (code == 200 && names.iter().all(|n| body.contains(&format!("\"{n}\"")))).then_some(())
    })
    .await;
    let postmaster = c.nodes[p].postmaster_pid().expect("the primary's postmaster");
    let etcd = c.dcs.etcd().expect("etcd");
    for m in &etcd.members {
        m.freeze();
    }
    let t = Instant::now();
    let mut writes = 0u32;
    while t.elapsed() < Duration::from_secs(30) {
        exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('during-the-outage')")
            .await
            .unwrap_or_else(|e| panic!("the primary refused a write {:?} into the outage: {e}", t.elapsed()));
        writes += 1;
        if writes.is_multiple_of(10) {
            assert_eq!(writable(&c.nodes).await, vec![p], "one primary, the same, {:?} into the outage", t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, status) = http_get(c.nodes[p].api_port, "/patroni").await;
    assert!(status.contains("\"failsafe_mode_is_active\":true"), "{status}");
    let (_, metrics) = http_get(c.nodes[p].api_port, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("patroni_failsafe_mode_is_active{") && l.ends_with(" 1")),
        "{metrics}"
    );
    println!("e2e: etcd frozen for {:?}: {writes} writes on the primary, no failover", t.elapsed());
    for m in &etcd.members {
        m.thaw();
    }
    wait_for("the primary to hold the leader key again", Duration::from_secs(30), || async {
        (http_status(c.nodes[p].api_port, "/leader").await == 200).then_some(())
    })
    .await;
    assert_eq!(c.nodes[p].postmaster_pid(), Some(postmaster), "the primary was never restarted");
    assert_eq!(writable(&c.nodes).await, vec![p]);
    exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-the-outage')").await.expect("write");
    wait_for("replicas streaming the writes", Duration::from_secs(30), || {
        replicas_stream_from(&c.nodes, p, "after-the-outage")
    })
    .await;
    assert!(c.nodes[p].log().contains("failsafe mode is enabled and all members are accessible"));
}

/// `POST /restart` restarts a member's PostgreSQL (a new postmaster) and `POST /reinitialize`
/// re-clones a replica; the leader refuses to reinitialize itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_and_reinitialize_over_rest() {
    let _serial = SERIAL.lock().await;
    let Some(c) = cluster().await else { return };
    let p = c.primary;
    let r = (p + 1) % 3;
    let before = c.nodes[r].postmaster_pid();
    let (code, text) = http_post(c.nodes[r].api_port, "/restart", "").await;
    assert_eq!(code, 200, "{text}");
    assert_ne!(c.nodes[r].postmaster_pid(), before, "a new postmaster");
    let later = r#"{"schedule": "2030-01-01T00:00:00+00:00"}"#;
    let (code, text) = http_post(c.nodes[r].api_port, "/restart", later).await;
    assert_eq!((code, text.as_str()), (202, "Restart scheduled"));
    let (code, text) = http_post(c.nodes[r].api_port, "/restart", later).await;
    assert_eq!(code, 409, "one scheduled restart at a time: {text}");
    let (_, status) = http_get(c.nodes[r].api_port, "/patroni").await;
    assert!(status.contains("2030-01-01T00:00:00+00:00"), "scheduled_restart in /patroni: {status}");
    let (code, text) = http_post(c.nodes[r].api_port, "/restart", r#"{"role": "primary"}"#).await;
    assert_eq!(code, 503, "a replica does not match role primary: {text}");
    let (code, text) = http_post(c.nodes[r].api_port, "/restart", r#"{"postgres_version": "fifteen"}"#).await;
    assert_eq!(code, 400, "{text}");
    let (code, _) = http_call_method(c.nodes[r].api_port, "/restart", None, hyper::Method::DELETE).await;
    assert_eq!(code, 200);
    let (code, _) = http_call_method(c.nodes[r].api_port, "/restart", None, hyper::Method::DELETE).await;
    assert_eq!(code, 404);

    let (code, text) = http_post(c.nodes[p].api_port, "/reinitialize", "{}").await;
    assert_eq!((code, text.as_str()), (503, "I am the leader, can not reinitialize"));
    exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('before-reinit')").await.expect("write");
    let marker = std::fs::metadata(c.nodes[r].dir.join("data/PG_VERSION")).expect("data").modified().expect("mtime");
    let (code, text) = http_post(c.nodes[r].api_port, "/reinitialize", "").await;
    assert_eq!(code, 200, "{text}");
    wait_for("the replica to be re-cloned and stream", Duration::from_secs(60), || async {
        let fresh = std::fs::metadata(c.nodes[r].dir.join("data/PG_VERSION")).ok()?.modified().ok()? != marker;
        if !fresh {
            return None;
        }
        replicas_stream_from(&c.nodes, p, "before-reinit").await
    })
    .await;
    assert_eq!(writable(&c.nodes).await, vec![p]);
}

/// Under systemd (`Type=notify`): READY after the first cycle, STATUS with role and decision,
/// WATCHDOG=1 keep-alives, STOPPING on SIGTERM; PostgreSQL (built with systemd support on Debian)
/// must not speak on the daemon's socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications() {
    let _serial = SERIAL.lock().await;
    let Some(mut c) = cluster().await else { return };
    let r = (c.primary + 1) % 3;
    let path = c.nodes[r].dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777)).expect("chmod");
    sock.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    c.nodes[r].crash();
    let socket = path.display().to_string();
    c.nodes[r].start_with_env(&[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "1000000")]);
    let mut got: Vec<String> = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    let enough = |got: &[String]| {
        got.iter().any(|m| m.contains("STATUS=replica: "))
            && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    };
    while t.elapsed() < Duration::from_secs(30) && !enough(&got) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    println!("e2e: sd_notify messages: {got:?}");
    assert!(got.first().is_some_and(|m| m.starts_with("READY=1\n")), "READY first: {got:?}");
    assert_eq!(got.iter().filter(|m| m.contains("READY=1")).count(), 1, "one READY, from Shield only: {got:?}");
    assert!(enough(&got), "status and keep-alives: {got:?}");
    let daemon = c.nodes[r].child.as_ref().map(|ch| ch.id() as i32).expect("daemon");
    signal_all(&[daemon], nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    let mut stopping = false;
    while t.elapsed() < Duration::from_secs(20) && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1");
        }
    }
    assert!(stopping, "STOPPING=1 on SIGTERM");
}

/// The REST API over TLS with client certificates required: members probe each other over https
/// in the leader race, and a node crash fails over as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_rest_api_with_client_certificates() {
    let _serial = SERIAL.lock().await;
    let certs = servers::TestCerts::generate();
    // The nodes run as the unprivileged user: let it read the test certificates.
    let _ = std::fs::set_permissions(certs.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755));
    for f in ["ca.pem", "node.pem", "node-key.pem"] {
        let _ = std::fs::set_permissions(certs.path(f), std::os::unix::fs::PermissionsExt::from_mode(0o644));
    }
    let tls = format!(
        "  certfile: {}\n  keyfile: {}\n  cafile: {}\n  verify_client: required\n",
        certs.path("node.pem").display(),
        certs.path("node-key.pem").display(),
        certs.path("ca.pem").display()
    );
    let Some(dcs) = servers::EtcdCluster::start(1).map(TestDcs::Etcd) else { return };
    let Some(mut c) = cluster_edited(dcs, |n, config| {
        let at = format!("  connect_address: 127.0.0.1:{}\n", n.api_port);
        config.replacen(&at, &format!("{at}{tls}"), 1)
    })
    .await
    else {
        return;
    };
    let p = c.primary;
    // Plain HTTP gets nothing; https with the CA and a client certificate gets the status.
    assert_eq!(http_status(c.nodes[p].api_port, "/patroni").await, 0, "plain HTTP answered on a TLS port");
    shield_bin::net::tls::set_client(
        shield_bin::net::tls::client_config(
            &certs.path("ca.pem"),
            Some((&certs.path("client.pem"), &certs.path("client-key.pem"))),
        )
        .expect("client TLS"),
    );
    let url = format!("https://127.0.0.1:{}/patroni", c.nodes[p].api_port);
    let status = shield_bin::net::http::get_json(&url, Duration::from_secs(3)).await.expect("https status");
    assert_eq!(status["role"], "primary", "{status}");
    // shieldctl's REST calls go over https too, with ctl.cacert and its client certificate.
    let ctl_cfg = c.root.path().join("ctl.yml");
    let ctl_text = format!(
        "scope: e2e\n{}ctl:\n  authentication:\n    username: {}\n    password: {}\n  cacert: {}\n  certfile: {}\n  keyfile: {}\n",
        c.dcs.section(),
        REST_AUTH.0,
        REST_AUTH.1,
        certs.path("ca.pem").display(),
        certs.path("client.pem").display(),
        certs.path("client-key.pem").display()
    );
    std::fs::write(&ctl_cfg, ctl_text).expect("ctl config");
    let r = (p + 1) % 3;
    let restart = || async {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shieldctl"))
            .arg("-c")
            .arg(&ctl_cfg)
            .args(["restart", "e2e", &c.nodes[r].name, "--force"])
            .output()
            .expect("shieldctl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("shieldctl restart over https: {text}{}", String::from_utf8_lossy(&out.stderr));
        // A node still settling answers 503 with the reason; an operator would try again.
        text.contains(&format!("Success: restart on member {}", c.nodes[r].name)).then_some(())
    };
    wait_for("shieldctl restart over https to succeed", Duration::from_secs(20), restart).await;
    wait_for("the restarted replica to stream again", Duration::from_secs(30), || {
        replicas_stream_from(&c.nodes, p, "boot")
    })
    .await;
    // A crash: the race probes peers over https with the members' certificates.
    c.nodes[p].crash();
    let q = one_writable("a new primary", Duration::from_secs(30), &c.nodes, Some(p)).await;
    let log = c.nodes[q].log();
    assert!(log.contains("promoted self to leader"), "{log}");
    let failed: Vec<&str> =
        log.lines().filter(|l| l.contains("peer probe failed") && !l.contains(&c.nodes[p].name)).collect();
    assert!(failed.is_empty(), "probes of live members failed: {failed:?}");
}
