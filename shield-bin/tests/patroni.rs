//! Shield beside a real Patroni 4.1.5 (installed by scripts/setup.sh into a cached virtual
//! environment) on one etcd: mixed clusters in which either side leads, fails over to the other
//! and is switched over by either CLI, and a Patroni cluster taken over node by node. Black-box:
//! both are driven through their CLIs, REST APIs and the DCS, on the same config files.
//!
//! Patroni's timing floor applies to the whole cluster (ttl 20 s, retry_timeout 3 s), so each
//! crash takes about 20 s to fail over. Tests run one at a time (`SERIAL`).

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::*;
use serde_json::Value;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A config both Patroni and Shield run unchanged: Patroni's timing floor, a rewind user as in
/// Patroni's own examples, and no watchdog on Patroni nodes (Patroni has no testing device).
fn mixed_config(n: &Node, dcs: &TestDcs, pg_bin: &Path) -> String {
    let cfg = n.config_with(&dcs.section(), pg_bin);
    let cfg = cfg.replacen(
        "    ttl: 4\n    loop_wait: 1\n    retry_timeout: 1.5\n",
        "    ttl: 20\n    loop_wait: 1\n    retry_timeout: 3\n",
        1,
    );
    let cfg = cfg.replacen(
        "    replication:\n      username: replicator\n      password: rep-pass\n",
        "    replication:\n      username: replicator\n      password: rep-pass\n    rewind:\n      username: rewinder\n      password: rewind-pass\n",
        1,
    );
    assert!(cfg.contains("ttl: 20") && cfg.contains("rewinder"), "the config template changed:\n{cfg}");
    if n.patroni {
        let at = cfg.find("watchdog:\n").expect("a watchdog section");
        format!("{}watchdog:\n  mode: off\n", &cfg[..at])
    } else {
        cfg
    }
}

/// Writes the node's config and starts its daemon (Patroni or Shield).
fn launch(n: &mut Node, dcs: &TestDcs, pg_bin: &Path) {
    std::fs::write(n.dir.join("shield.yml"), mixed_config(n, dcs, pg_bin)).expect("config");
    n.start();
}

struct Mixed {
    nodes: Vec<Node>,
    dcs: TestDcs,
    root: tempfile::TempDir,
}

/// `kinds[i]`: node i runs Patroni. The first node is started alone and bootstraps.
async fn mixed(kinds: &[bool]) -> Option<Mixed> {
    patroni_bin()?;
    let pg_bin = pg_bindir()?;
    let (uid, gid) = run_as()?;
    let dcs = TestDcs::Etcd(servers::EtcdCluster::start(1)?);
    let root = tempfile::tempdir().expect("temp dir");
    let _ = std::os::unix::fs::chown(root.path(), Some(uid), Some(gid));
    let mut nodes: Vec<Node> = kinds
        .iter()
        .enumerate()
        .map(|(i, &p)| {
            let mut n = new_node(root.path(), &format!("{}{}", if p { "pat" } else { "sh" }, i + 1), uid, gid);
            n.patroni = p;
            n
        })
        .collect();
    launch(&mut nodes[0], &dcs, &pg_bin);
    one_writable("the first node to bootstrap", Duration::from_secs(120), &nodes[..1], None).await;
    exec(nodes[0].pg_port, "CREATE TABLE e2e (v text); INSERT INTO e2e VALUES ('boot')").await.expect("write");
    for n in &mut nodes[1..] {
        launch(n, &dcs, &pg_bin);
    }
    wait_for("replicas streaming the row", Duration::from_secs(120), || replicas_stream_from(&nodes, 0, "boot")).await;
    Some(Mixed { nodes, dcs, root })
}

/// Runs patronictl (or shieldctl) with the cluster's config, feeding `stdin`.
fn cli(exe: &Path, config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(exe)
        .arg("-c")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the CLI");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let o = child.wait_with_output().expect("CLI output");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    println!("$ {} {}\n{text}", exe.file_name().and_then(|f| f.to_str()).unwrap_or("?"), args.join(" "));
    (o.status.success(), text)
}

/// Which CLI drives a switchover.
#[derive(Clone, Copy, Debug)]
enum Cli {
    Patronictl,
    Shieldctl,
}

impl Mixed {
    fn ctl_config(&self) -> std::path::PathBuf {
        let p = self.root.path().join("ctl.yml");
        std::fs::write(&p, format!("scope: e2e\n{}{}", self.dcs.section(), ctl_section())).expect("ctl config");
        p
    }
    fn patronictl(&self, args: &[&str]) -> (bool, String) {
        cli(&patronictl_bin().expect("patronictl"), &self.ctl_config(), args, "")
    }
    fn shieldctl(&self, args: &[&str]) -> (bool, String) {
        cli(Path::new(env!("CARGO_BIN_EXE_shieldctl")), &self.ctl_config(), args, "")
    }
    /// Switches over to node `to` with `cli`, then waits until it is the only writable node and
    /// the others stream from it. The candidate's member key must show it streaming first: the
    /// leader checks that.
    async fn switch_over(&self, cli: Cli, to: usize) {
        let name = self.nodes[to].name.clone();
        self.wait_streaming(&name).await;
        let args = ["switchover", "--candidate", &name, "--force"];
        let (ok, out) = match cli {
            Cli::Patronictl => self.patronictl(&args),
            Cli::Shieldctl => self.shieldctl(&args),
        };
        assert!(ok && out.contains(&format!("Successfully switched over to \"{name}\"")), "{out}");
        wait_for(&format!("{name} to be the only writable node"), Duration::from_secs(60), || async {
            (writable(&self.nodes).await == vec![to]).then_some(())
        })
        .await;
        let marker = format!("on-{name}-{cli:?}");
        wait_for(&format!("the others to stream from {name}"), Duration::from_secs(90), || async {
            exec(self.nodes[to].pg_port, &format!("INSERT INTO e2e VALUES ('{marker}')")).await.ok()?;
            replicas_stream_from(&self.nodes, to, &marker).await
        })
        .await;
    }

    /// Waits until patronictl lists `name` as a streaming replica (its member key says so).
    async fn wait_streaming(&self, name: &str) {
        wait_for(&format!("patronictl to list {name} as a streaming replica"), Duration::from_secs(60), || async {
            let v = self.patroni_view()?;
            v.iter().any(|(n, r, s)| n == name && r == "Replica" && s == "streaming").then_some(())
        })
        .await;
    }

    /// patronictl's view: member name → (role, state), once it parses.
    fn patroni_view(&self) -> Option<Vec<(String, String, String)>> {
        let (ok, out) = self.patronictl(&["list", "-f", "json"]);
        let rows: Vec<Value> = serde_json::from_str(out.lines().find(|l| l.starts_with('['))?).ok()?;
        ok.then(|| {
            rows.iter()
                .map(|r| {
                    let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                    (s("Member"), s("Role"), s("State"))
                })
                .collect()
        })
    }
}

/// A Patroni primary with two Shield replicas: each side reads the other's keys, each CLI
/// switches over in both directions (Patroni to Shield and back), and either side's crash fails
/// over to the other; never two writable nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_cluster_fails_over_and_switches_over_both_ways() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mixed(&[true, false, false]).await else { return };
    let (stop, sampler) = start_sampler(m.nodes.iter().map(|n| n.pg_port).collect());
    // patronictl sees the Shield members as streaming replicas of the Patroni leader.
    wait_for("patronictl to list two streaming Shield replicas", Duration::from_secs(30), || async {
        let v = m.patroni_view()?;
        let streaming = v.iter().filter(|(n, r, s)| n.starts_with("sh") && r == "Replica" && s == "streaming").count();
        (v.len() == 3 && streaming == 2 && v.iter().any(|(n, r, _)| n == "pat1" && r == "Leader")).then_some(())
    })
    .await;
    // shieldctl switches over to Shield; Patroni follows.
    m.switch_over(Cli::Shieldctl, 2).await;
    // Every node keeps a slot per other member (Patroni 4's member slots), and none of them
    // holds old WAL: Patroni advances its copies to what the Shield leader publishes, Shield
    // does the same on its replica.
    for _ in 0..3 {
        exec(m.nodes[2].pg_port, "INSERT INTO e2e VALUES ('wal'); SELECT pg_switch_wal()").await.expect("switch wal");
    }
    wait_for("every node's member slots to keep up with the Shield leader", Duration::from_secs(60), || {
        slots_keep_up(&m.nodes, 2)
    })
    .await;
    // patronictl switches back to Patroni; then the other way round with each CLI.
    m.switch_over(Cli::Patronictl, 0).await;
    m.switch_over(Cli::Patronictl, 1).await;
    m.switch_over(Cli::Shieldctl, 0).await;
    // The Patroni leader crashes: a Shield node takes over; Patroni rejoins it.
    m.nodes[0].crash();
    let p = one_writable(
        "a Shield node to take over from the crashed Patroni leader",
        Duration::from_secs(90),
        &m.nodes,
        Some(0),
    )
    .await;
    // The replicas that streamed from the dead leader neither stopped nor rewound against it.
    for n in &m.nodes[1..] {
        assert!(!n.log().contains("pg_rewind from pat1"), "{} rewound against the dead leader:\n{}", n.name, n.log());
    }
    m.nodes[0].start();
    wait_for("pat1 to rejoin the Shield leader", Duration::from_secs(120), || async {
        exec(m.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-pat-crash')").await.ok()?;
        replicas_stream_from(&m.nodes, p, "after-pat-crash").await
    })
    .await;
    // The Shield leader crashes: the other side (either) takes over; it rejoins.
    m.nodes[p].crash();
    let q = one_writable(
        "another node to take over from the crashed Shield leader",
        Duration::from_secs(90),
        &m.nodes,
        Some(p),
    )
    .await;
    m.nodes[p].start();
    wait_for("the old Shield leader to rejoin", Duration::from_secs(120), || async {
        exec(m.nodes[q].pg_port, "INSERT INTO e2e VALUES ('after-shield-crash')").await.ok()?;
        replicas_stream_from(&m.nodes, q, "after-shield-crash").await
    })
    .await;
    let _ = stop.send(true);
    let (worst, samples) = sampler.await.expect("sampler");
    assert!(worst <= 1, "two writable nodes at one sample ({samples} samples)");
}

/// Every node holds a physical slot for each other member, and no inactive slot is more than
/// 32 MB behind the node's own position.
async fn slots_keep_up(nodes: &[Node], leader: usize) -> Option<()> {
    for (i, n) in nodes.iter().enumerate() {
        let at = if i == leader { "pg_current_wal_lsn()" } else { "pg_last_wal_replay_lsn()" };
        let q = format!(
            "SELECT count(*), count(*) FILTER (WHERE NOT active AND (restart_lsn IS NULL OR {at} - restart_lsn > 32 * 1024 * 1024)) \
             FROM pg_replication_slots WHERE slot_type = 'physical'"
        );
        let rows = sql(n.pg_port, &q).await.ok()?;
        let (all, behind): (i64, i64) = (rows[0].get(0), rows[0].get(1));
        if all != nodes.len() as i64 - 1 || behind != 0 {
            println!("{}: {all} slots, {behind} behind", n.name);
            return None;
        }
    }
    Some(())
}

/// Tries a write on `port` every 100 ms until told to stop; returns (attempts, failures).
fn start_writer(port: u16) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<(usize, usize)>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let h = tokio::spawn(async move {
        let (mut tries, mut failed) = (0, 0);
        while !*stop_rx.borrow() {
            tries += 1;
            if exec(port, "INSERT INTO e2e VALUES ('writer')").await.is_err() {
                failed += 1;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (tries, failed)
    });
    (stop_tx, h)
}

/// A Patroni cluster taken over node by node on the same data directories and config files:
/// the replicas first (stop Patroni, start Shield), then the leader in pause, where stopping
/// Patroni leaves PostgreSQL running and Shield adopts it: the primary never restarts and never
/// refuses a write. Then a failover on the all-Shield cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_cluster_is_taken_over_node_by_node() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mixed(&[true, true, true]).await else { return };
    let (stop, sampler) = start_sampler(m.nodes.iter().map(|n| n.pg_port).collect());
    for i in 1..3 {
        m.nodes[i].stop();
        m.nodes[i].patroni = false;
        m.nodes[i].start();
        let marker = format!("shield-replica-{i}");
        wait_for(&format!("{} to stream again under Shield", m.nodes[i].name), Duration::from_secs(60), || async {
            exec(m.nodes[0].pg_port, &format!("INSERT INTO e2e VALUES ('{marker}')")).await.ok()?;
            replicas_stream_from(&m.nodes, 0, &marker).await
        })
        .await;
    }
    // patronictl still reads the cluster, Shield members included.
    wait_for("patronictl to list the Shield replicas", Duration::from_secs(30), || async {
        let v = m.patroni_view()?;
        (v.iter().filter(|(_, r, s)| r == "Replica" && s == "streaming").count() == 2).then_some(())
    })
    .await;
    // The leader: pause, so that stopping Patroni leaves PostgreSQL running.
    let (ok, out) = m.patronictl(&["pause", "--wait"]);
    assert!(ok, "{out}");
    let pid = m.nodes[0].postmaster_pid().expect("the primary's postmaster");
    let (stop_writer, writer) = start_writer(m.nodes[0].pg_port);
    m.nodes[0].stop();
    assert_eq!(writable(&m.nodes).await, vec![0], "Patroni stopped in pause leaves the primary running");
    m.nodes[0].patroni = false;
    m.nodes[0].start();
    let api = m.nodes[0].api_port;
    wait_for("Shield to answer /primary on the leader", Duration::from_secs(30), || async {
        (http_status(api, "/primary").await == 200).then_some(())
    })
    .await;
    let (ok, out) = m.shieldctl(&["resume", "--wait"]);
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_writer.send(true);
    let (tries, failed) = writer.await.expect("writer");
    assert_eq!(failed, 0, "{failed} of {tries} writes failed during the leader's takeover");
    assert_eq!(m.nodes[0].postmaster_pid(), Some(pid), "the primary was restarted");
    assert_eq!(writable(&m.nodes).await, vec![0]);
    // An all-Shield cluster now: a crash fails over, and the old primary rejoins.
    m.nodes[0].crash();
    let p = one_writable("a failover after the takeover", Duration::from_secs(60), &m.nodes, Some(0)).await;
    m.nodes[0].start();
    wait_for("the old primary to rejoin", Duration::from_secs(120), || async {
        exec(m.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-takeover')").await.ok()?;
        replicas_stream_from(&m.nodes, p, "after-takeover").await
    })
    .await;
    let _ = stop.send(true);
    let (worst, samples) = sampler.await.expect("sampler");
    assert!(worst <= 1, "two writable nodes at one sample ({samples} samples)");
}

/// A Shield-born cluster that Patroni joins: Shield created the roles Patroni's config names
/// (the rewind user with pg_rewind's grants), Patroni clones from Shield, and patronictl fails
/// over to it; its crash fails back over to Shield, and it rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_joins_a_shield_born_cluster() {
    let _serial = SERIAL.lock().await;
    let Some(mut m) = mixed(&[false, true, false]).await else { return };
    let (stop, sampler) = start_sampler(m.nodes.iter().map(|n| n.pg_port).collect());
    let q = "SELECT rolcanlogin, NOT rolsuper, has_function_privilege('rewinder', \
             'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE') \
             FROM pg_roles WHERE rolname = 'rewinder'";
    let rows = sql(m.nodes[0].pg_port, q).await.expect("roles");
    let row = rows.first().expect("Shield created the rewind user at bootstrap");
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1) && row.get::<_, bool>(2), "rewinder's grants");
    m.wait_streaming("pat2").await;
    let (ok, out) = m.patronictl(&["failover", "--candidate", "pat2", "--force"]);
    assert!(ok && out.contains("Successfully failed over to \"pat2\""), "{out}");
    wait_for("pat2 to be the only writable node", Duration::from_secs(60), || async {
        (writable(&m.nodes).await == vec![1]).then_some(())
    })
    .await;
    wait_for("the Shield nodes to stream from pat2", Duration::from_secs(90), || async {
        exec(m.nodes[1].pg_port, "INSERT INTO e2e VALUES ('on-pat2')").await.ok()?;
        replicas_stream_from(&m.nodes, 1, "on-pat2").await
    })
    .await;
    m.nodes[1].crash();
    let p =
        one_writable("Shield to take over from the crashed Patroni leader", Duration::from_secs(90), &m.nodes, Some(1))
            .await;
    m.nodes[1].start();
    wait_for("pat2 to rejoin", Duration::from_secs(120), || async {
        exec(m.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-pat2-crash')").await.ok()?;
        replicas_stream_from(&m.nodes, p, "after-pat2-crash").await
    })
    .await;
    let _ = stop.send(true);
    let (worst, samples) = sampler.await.expect("sampler");
    assert!(worst <= 1, "two writable nodes at one sample ({samples} samples)");
}
