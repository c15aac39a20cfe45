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
    let cfg = cfg.replacen("    ttl: 4\n    loop_wait: 1\n    retry_timeout: 1.5\n", "    ttl: 20\n    loop_wait: 1\n    retry_timeout: 3\n", 1);
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

impl Mixed {
    fn ctl_config(&self) -> std::path::PathBuf {
        let p = self.root.path().join("ctl.yml");
        std::fs::write(&p, format!("scope: e2e\n{}", self.dcs.section())).expect("ctl config");
        p
    }
    fn patronictl(&self, args: &[&str]) -> (bool, String) {
        cli(&patronictl_bin().expect("patronictl"), &self.ctl_config(), args, "")
    }
    fn shieldctl(&self, args: &[&str]) -> (bool, String) {
        cli(Path::new(env!("CARGO_BIN_EXE_shieldctl")), &self.ctl_config(), args, "")
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

/// A Patroni primary with two Shield replicas: each side reads the other's keys, either CLI
/// switches over in both directions, and either side's crash fails over to the other; never
/// two writable nodes.
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
    let (ok, out) = m.shieldctl(&["switchover", "--candidate", "sh3", "--force"]);
    assert!(ok && out.contains("Successfully switched over to \"sh3\""), "{out}");
    wait_for("sh3 to be the only writable node", Duration::from_secs(60), || async {
        (writable(&m.nodes).await == vec![2]).then_some(())
    })
    .await;
    wait_for("pat1 and sh2 to stream from sh3", Duration::from_secs(90), || async {
        exec(m.nodes[2].pg_port, "INSERT INTO e2e VALUES ('on-sh3')").await.ok()?;
        replicas_stream_from(&m.nodes, 2, "on-sh3").await
    })
    .await;
    // patronictl switches back to Patroni.
    let (ok, out) = m.patronictl(&["switchover", "--candidate", "pat1", "--force"]);
    assert!(ok, "{out}");
    wait_for("pat1 to be the only writable node", Duration::from_secs(60), || async {
        (writable(&m.nodes).await == vec![0]).then_some(())
    })
    .await;
    wait_for("sh2 and sh3 to stream from pat1", Duration::from_secs(90), || async {
        exec(m.nodes[0].pg_port, "INSERT INTO e2e VALUES ('on-pat1')").await.ok()?;
        replicas_stream_from(&m.nodes, 0, "on-pat1").await
    })
    .await;
    // The Patroni leader crashes: a Shield node takes over; Patroni rejoins it.
    m.nodes[0].crash();
    let p = one_writable("a Shield node to take over from the crashed Patroni leader", Duration::from_secs(90), &m.nodes, Some(0)).await;
    m.nodes[0].start();
    wait_for("pat1 to rejoin the Shield leader", Duration::from_secs(120), || async {
        exec(m.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-pat-crash')").await.ok()?;
        replicas_stream_from(&m.nodes, p, "after-pat-crash").await
    })
    .await;
    // The Shield leader crashes: the other side (either) takes over; it rejoins.
    m.nodes[p].crash();
    let q = one_writable("another node to take over from the crashed Shield leader", Duration::from_secs(90), &m.nodes, Some(p)).await;
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
