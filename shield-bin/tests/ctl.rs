//! `shieldctl` against a live 3-node cluster (real etcd, real PostgreSQL 15): every command an
//! operator uses in Halo Shield's runbook, driven as an operator would, prompts included.

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cluster::*;
use serde_json::Value;

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs shieldctl with `args`, feeding `stdin`.
async fn ctl(config: &Path, args: &[&str], stdin: &str) -> Out {
    let config = config.to_owned();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shieldctl"))
            .arg("-c")
            .arg(&config)
            .args(&args)
            // `query` reads the password from the environment, as psql does.
            .env("PGPASSWORD", "su-pass")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn shieldctl");
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin.as_bytes());
        }
        let o = child.wait_with_output().expect("shieldctl output");
        let out = Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        println!("$ shieldctl {}\n{}{}", args.join(" "), out.stdout, out.stderr);
        out
    })
    .await
    .expect("shieldctl task")
}

fn must(o: Out) -> String {
    assert!(o.ok, "shieldctl failed:\n{}{}", o.stdout, o.stderr);
    o.stdout
}

async fn leader(config: &Path) -> String {
    let out = must(ctl(config, &["list", "-f", "json"], "").await);
    let rows: Vec<Value> = serde_json::from_str(&out).expect("list -f json");
    rows.iter()
        .find(|r| r["Role"] == "Leader")
        .and_then(|r| r["Member"].as_str())
        .map(str::to_owned)
        .unwrap_or_default()
}

async fn postmaster_start_time(api_port: u16) -> Option<String> {
    let (_, body) = http_get(api_port, "/patroni").await;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["postmaster_start_time"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shieldctl_operates_a_live_cluster() {
    let Some(mut c) = cluster().await else { return };
    let cfg = c.root.path().join("shieldctl.yml");
    std::fs::write(&cfg, format!("scope: e2e\n{}{}", c.dcs.section(), ctl_section())).expect("ctl config");

    // ---- list reflects reality ----------------------------------------------------------------
    let p = c.primary;
    wait_for("all three members in the DCS", Duration::from_secs(20), || async {
        let out = ctl(&cfg, &["list", "-f", "json"], "").await.stdout;
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        let streaming = rows.iter().filter(|r| r["State"] == "streaming").count();
        (rows.len() == 3 && streaming == 2).then_some(())
    })
    .await;
    let table = must(ctl(&cfg, &["list"], "").await);
    assert!(table.starts_with("+ Cluster: e2e ("), "{table}");
    assert!(table.contains("| Member | Host"), "{table}");
    let leader_row = table.lines().find(|l| l.contains("Leader")).expect("a leader row");
    assert!(leader_row.contains(&c.nodes[p].name), "{table}");
    assert_eq!(leader(&cfg).await, c.nodes[p].name);

    // ---- pause stops automatic failover; resume restores it -----------------------------------
    let out = must(ctl(&cfg, &["pause", "--wait"], "").await);
    assert!(out.contains("Success: cluster management is paused"), "{out}");
    assert!(must(ctl(&cfg, &["list"], "").await).contains(" Maintenance mode: on"));
    let again = ctl(&cfg, &["pause"], "").await;
    assert!(!again.ok && again.stderr.trim() == "Error: Cluster is already paused", "{}", again.stderr);
    // The leader runs as primary and holds the key: resume goes ahead.
    let out = must(ctl(&cfg, &["resume", "--wait"], "").await);
    assert!(out.contains("Success: cluster management is resumed"), "{out}");
    must(ctl(&cfg, &["pause", "--wait"], "").await);
    c.nodes[p].crash();
    // Two ttls (4 s) without a leader: in pause nobody is promoted.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(writable(&c.nodes).await, Vec::<usize>::new(), "a replica was promoted in pause");
    // No running primary holds the leader key (a primary cut off from the DCS might still be
    // writing): resume is refused, saying why, and the cluster stays paused.
    let refused = ctl(&cfg, &["resume", "--wait"], "").await;
    assert!(!refused.ok, "resume without a leader went ahead:\n{}", refused.stdout);
    assert_eq!(
        refused.stderr.trim(),
        "Error: refusing to resume: no member holds the leader key; use --force to resume anyway"
    );
    let edit = ctl(&cfg, &["edit-config", "-s", "pause=false", "--force"], "").await;
    assert!(!edit.ok && edit.stderr.contains("refusing to resume: no member holds the leader key"), "{}", edit.stderr);
    assert!(must(ctl(&cfg, &["list"], "").await).contains(" Maintenance mode: on"));
    let out = must(ctl(&cfg, &["resume", "--force", "--wait"], "").await);
    assert!(out.contains("Success: cluster management is resumed"), "{out}");
    let p = one_writable("a replica to be promoted after resume", Duration::from_secs(30), &c.nodes, None).await;
    let old = c.primary;
    c.nodes[old].start();
    exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('after-resume')").await.expect("write");
    wait_for("the old primary to rejoin", Duration::from_secs(60), || {
        replicas_stream_from(&c.nodes, p, "after-resume")
    })
    .await;

    // ---- switchover --candidate X --force -----------------------------------------------------
    let target = (p + 1) % 3;
    // The rejoined member's data shows in SQL before its daemon's next cycle publishes it as
    // streaming; the switchover's precheck reads the member key, as an operator's would.
    wait_for("the candidate's member key to show it streaming", Duration::from_secs(30), || async {
        let out = ctl(&cfg, &["list", "-f", "json"], "").await.stdout;
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        rows.iter().any(|r| r["Member"] == c.nodes[target].name.as_str() && r["State"] == "streaming").then_some(())
    })
    .await;
    let out = must(ctl(&cfg, &["switchover", "--candidate", &c.nodes[target].name, "--force"], "").await);
    assert!(out.contains(&format!("Successfully switched over to \"{}\"", c.nodes[target].name)), "{out}");
    wait_for("the candidate to be the only writable node", Duration::from_secs(30), || async {
        (writable(&c.nodes).await == vec![target]).then_some(())
    })
    .await;
    let p = target;

    // ---- interactive switchover, answered on stdin as in the seed's transcript ----------------
    wait_for("both replicas to stream", Duration::from_secs(60), || async {
        exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('before-interactive')").await.ok()?;
        replicas_stream_from(&c.nodes, p, "before-interactive").await
    })
    .await;
    let target = (p + 1) % 3;
    // The third node only changes upstream: it knows the timeline it replays, so it never
    // mistakes the new timeline for a divergence and never rewinds.
    let bystander = (p + 2) % 3;
    let bystander_log = c.nodes[bystander].log().len();
    let answers = format!("\n{}\n\ny\n", c.nodes[target].name);
    let out = must(ctl(&cfg, &["switchover"], &answers).await);
    assert!(out.contains("Current cluster topology"), "{out}");
    assert!(out.contains(&format!("Master [{}]: ", c.nodes[p].name)), "{out}");
    assert!(out.contains("When should the switchover take place (e.g. "), "{out}");
    assert!(
        out.contains(&format!(
            "Are you sure you want to switchover cluster e2e, demoting current master {}? [y/N]: ",
            c.nodes[p].name
        )),
        "{out}"
    );
    assert!(out.contains(&format!("Successfully switched over to \"{}\"", c.nodes[target].name)), "{out}");
    wait_for("the interactive candidate to be the only writable node", Duration::from_secs(30), || async {
        (writable(&c.nodes).await == vec![target]).then_some(())
    })
    .await;
    let p = target;
    let refused = ctl(&cfg, &["switchover"], &format!("\n{}\n\nn\n", c.nodes[(p + 1) % 3].name)).await;
    assert!(!refused.ok && refused.stderr.contains("Aborted"), "{}", refused.stderr);
    assert_eq!(writable(&c.nodes).await, vec![p], "an answer of no changes nothing");

    // ---- history lists the switchovers just made ----------------------------------------------
    // The new leader writes the history line a cycle after its promotion.
    let (leaders, timelines) = wait_for("history to list the last switchover", Duration::from_secs(10), || async {
        let out = ctl(&cfg, &["history", "-f", "json"], "").await.stdout;
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        let leaders: Vec<String> = rows.iter().filter_map(|r| r["New Leader"].as_str().map(str::to_owned)).collect();
        let timelines: Vec<u64> = rows.iter().filter_map(|r| r["TL"].as_u64()).collect();
        (leaders.last() == Some(&c.nodes[p].name)).then_some((leaders, timelines))
    })
    .await;
    assert!(leaders.len() >= 3, "failover + 2 switchovers: {leaders:?}");
    // Each line names the timeline that ended: the promoted node knew which one it replayed.
    assert!(timelines.windows(2).all(|w| w[1] == w[0] + 1), "one timeline per promotion: {timelines:?}");
    let table = must(ctl(&cfg, &["history"], "").await);
    assert!(table.contains("| TL |") && table.contains("New Leader"), "{table}");

    // ---- restart: a new postmaster --------------------------------------------------------------
    // A node busy with a database task (following the new leader) refuses a restart at once, as
    // Patroni does; an operator restarts a settled cluster.
    wait_for("both replicas to stream from the new leader", Duration::from_secs(60), || async {
        exec(c.nodes[p].pg_port, "INSERT INTO e2e VALUES ('before-restart')").await.ok()?;
        replicas_stream_from(&c.nodes, p, "before-restart").await
    })
    .await;
    let log = c.nodes[bystander].log();
    assert!(!log[bystander_log..].contains("pg_rewind"), "a streaming replica was rewound:\n{}", &log[bystander_log..]);
    let r = (p + 1) % 3;
    let before = wait_for("postmaster_start_time in /patroni", Duration::from_secs(10), || {
        postmaster_start_time(c.nodes[r].api_port)
    })
    .await;
    let out = must(ctl(&cfg, &["restart", "e2e", &c.nodes[r].name, "--force"], "").await);
    assert!(out.contains(&format!("Success: restart on member {}", c.nodes[r].name)), "{out}");
    let after = wait_for("a new postmaster start time", Duration::from_secs(20), || async {
        postmaster_start_time(c.nodes[r].api_port).await.filter(|t| *t != before)
    })
    .await;
    assert_ne!(before, after);
    let out = must(ctl(&cfg, &["restart", "e2e", "--scheduled", "2030-01-01T00:00", "--force"], "").await);
    assert_eq!(out.matches("Success: restart scheduled on member").count(), 3, "{out}");
    wait_for("the scheduled restart column", Duration::from_secs(10), || async {
        ctl(&cfg, &["list"], "").await.stdout.contains("2030-01-01T00:00:00+00:00").then_some(())
    })
    .await;
    let out = must(ctl(&cfg, &["flush", "e2e", "restart", "--force"], "").await);
    assert_eq!(out.matches("Success: flush scheduled restart for member").count(), 3, "{out}");

    // ---- reinit re-clones a replica -------------------------------------------------------------
    let marker = std::fs::metadata(c.nodes[r].dir.join("data/PG_VERSION")).expect("data").modified().expect("mtime");
    let out = must(ctl(&cfg, &["reinit", "e2e", &c.nodes[r].name, "--force", "--wait"], "").await);
    assert!(out.contains(&format!("Reinitialize is completed on: {}", c.nodes[r].name)), "{out}");
    let fresh = std::fs::metadata(c.nodes[r].dir.join("data/PG_VERSION")).expect("data").modified().expect("mtime");
    assert_ne!(marker, fresh, "the data directory was cloned again");
    let refused = ctl(&cfg, &["reinit", "e2e", &c.nodes[p].name, "--force"], "").await;
    assert!(!refused.ok && refused.stderr.contains("is the leader"), "{}", refused.stderr);

    // ---- edit-config: the DCS changes and the daemons apply it ----------------------------------
    let out = must(ctl(&cfg, &["edit-config", "-s", "ttl=6", "-p", "work_mem=7MB", "--force"], "").await);
    assert!(out.contains("-ttl: 4") && out.contains("+ttl: 6"), "a unified diff: {out}");
    assert!(out.contains("Configuration changed"), "{out}");
    assert!(must(ctl(&cfg, &["show-config"], "").await).contains("ttl: 6"));
    wait_for("work_mem = 7MB on every node", Duration::from_secs(20), || async {
        for n in &c.nodes {
            let rows = sql(n.pg_port, "SHOW work_mem").await.ok()?;
            if rows.first()?.get::<_, String>(0) != "7MB" {
                return None;
            }
        }
        Some(())
    })
    .await;
    let out = must(ctl(&cfg, &["edit-config", "-s", "ttl=6", "--force"], "").await);
    assert!(out.contains("Not changed"), "{out}");
    let bad = ctl(&cfg, &["edit-config", "-s", "loop_wait=60", "--force"], "").await;
    assert!(!bad.ok && bad.stderr.contains("loop_wait"), "an invalid config names the key: {}", bad.stderr);

    // ---- reload, dsn, query, version ------------------------------------------------------------
    // A local parameter added to one node's file takes effect on reload (local beats the DCS).
    let file = c.nodes[r].dir.join("shield.yml");
    let text = std::fs::read_to_string(&file).expect("node config");
    let text = text.replace("    shared_buffers: 16MB\n", "    shared_buffers: 16MB\n    work_mem: 9MB\n");
    std::fs::write(&file, text).expect("edit node config");
    let out = must(ctl(&cfg, &["reload", "e2e", "--force"], "").await);
    assert_eq!(out.matches("Reload request received for member").count(), 3, "{out}");
    wait_for("work_mem = 9MB on the reloaded node", Duration::from_secs(20), || async {
        let rows = sql(c.nodes[r].pg_port, "SHOW work_mem").await.ok()?;
        (rows.first()?.get::<_, String>(0) == "9MB").then_some(())
    })
    .await;
    let out = must(ctl(&cfg, &["dsn"], "").await);
    assert_eq!(out.trim(), format!("host=127.0.0.1 port={}", c.nodes[p].pg_port));
    let out = ctl(&cfg, &["query", "-m", &c.nodes[r].name, "-c", "SELECT pg_is_in_recovery() AS r"], "").await;
    assert_eq!(out.stdout.trim(), "r\nt", "{}", out.stderr);
    let out = must(ctl(&cfg, &["version", "e2e"], "").await);
    assert!(out.contains(&format!("{}: Shield", c.nodes[p].name)) && out.contains("PostgreSQL 15."), "{out}");

    // ---- shield check: the preflight check against the live cluster -----------------------------
    let check = |config: &Path| {
        use std::os::unix::process::CommandExt;
        let o = Command::new(c.nodes[r].dir.join("shield"))
            .arg("check")
            .arg(config)
            .uid(c.nodes[r].uid)
            .gid(c.nodes[r].gid)
            .output()
            .expect("shield check");
        println!("$ shield check {}\n{}", config.display(), String::from_utf8_lossy(&o.stdout));
        (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let (ok, out) = check(&c.nodes[r].dir.join("shield.yml"));
    assert!(ok, "{out}");
    for want in [
        "ok    config:",
        "ok    user:",
        "ok    bin_dir:",
        "PostgreSQL 15",
        "ok    data_dir:",
        "ok    dcs: reachable; cluster e2e: 3 member(s), leader",
        "ok    replication user: replicator connects for replication to",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    let broken = c.nodes[r].dir.join("broken.yml");
    let text = std::fs::read_to_string(c.nodes[r].dir.join("shield.yml")).expect("config");
    let text = text.replace(&format!("bin_dir: {}", c.pg_bin.display()), "bin_dir: /nonexistent/bin");
    let text = text.replace("password: rep-pass", "password: wrong");
    std::fs::write(&broken, text).expect("write");
    let _ = std::os::unix::fs::chown(&broken, Some(c.nodes[r].uid), Some(c.nodes[r].gid));
    let (ok, out) = check(&broken);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  bin_dir: /nonexistent/bin: missing postgres"), "{out}");
    assert!(out.contains("FAIL  replication user: replicator cannot connect"), "{out}");

    // ---- errors are one line ------------------------------------------------------------------
    let e = ctl(&cfg, &["switchover", "--candidate", "nosuch", "--force"], "").await;
    assert!(
        !e.ok && e.stderr.trim() == "Error: Member nosuch does not exist in cluster e2e or is tagged as nofailover"
    );
    let e = ctl(&cfg, &["history", "no-such-cluster"], "").await;
    assert!(!e.ok && e.stderr.lines().count() == 1 && e.stderr.contains("not in the DCS"), "{}", e.stderr);
    let dead = c.root.path().join("dead.yml");
    std::fs::write(&dead, format!("scope: e2e\netcd3:\n  hosts: 127.0.0.1:{}\n", servers::free_port())).expect("cfg");
    let e = ctl(&dead, &["list"], "").await;
    assert!(!e.ok && e.stderr.starts_with("Error: cannot read cluster e2e from the DCS"), "{}", e.stderr);
    let e = ctl(&cfg, &["switchover"], "").await;
    assert!(!e.ok && e.stderr.contains("pass --force"), "a closed stdin: {}", e.stderr);
}

/// The rows of a pretty table: each `| a | b |` line split into trimmed cells.
fn table_rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .collect()
}

/// Asserts that `parts` appear in `out` in this order.
fn in_order(out: &str, parts: &[&str]) {
    let mut at = 0;
    for p in parts {
        match out[at..].find(p) {
            Some(i) => at += i + p.len(),
            None => panic!("expected {p:?} after byte {at} of:\n{out}"),
        }
    }
}

/// `../shared/seed/halo-shield.md`'s operator transcript, word for word: pause, list, the
/// interactive switchover to node2 in pause, list, the interactive restart of node3. Run on the
/// seed's names (cluster `halo-cluster`, members node1-node3, node1 leading, node3 with a
/// pending restart), with a sample every 50 ms that no two nodes ever accept writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_transcript() {
    let Some(dcs) = servers::EtcdCluster::start(1) else { return };
    let seed = |_: &Node, cfg: String| cfg.replacen("scope: e2e\n", "scope: halo-cluster\n", 1);
    let Some(c) = cluster_of(TestDcs::Etcd(dcs), &["node1", "node2", "node3"], true, seed).await else { return };
    assert_eq!(c.primary, 0, "node1 bootstraps the cluster");
    let cfg = c.root.path().join("patronictl.yml");
    std::fs::write(&cfg, format!("scope: halo-cluster\n{}{}", c.dcs.section(), ctl_section())).expect("ctl config");
    let (stop, sampler) = start_sampler(c.nodes.iter().map(|n| n.pg_port).collect());
    // node3's max_connections changed and waits for a restart, as in the seed.
    exec(c.nodes[2].pg_port, "ALTER SYSTEM SET max_connections = 120").await.expect("alter system");
    exec(c.nodes[2].pg_port, "SELECT pg_reload_conf()").await.expect("reload");
    wait_for("node3's pending restart in the member key", Duration::from_secs(20), || async {
        let out = ctl(&cfg, &["list", "-f", "json"], "").await.stdout;
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        let ready = rows.iter().filter(|r| r["Receive Lag"] == 0 && r["Replay Lag"] == 0).count() == 2;
        (ready && rows.iter().any(|r| r["Member"] == "node3" && r["Pending restart"] == "*")).then_some(())
    })
    .await;

    // [halo@node1 ~]$ patronictl pause
    let out = must(ctl(&cfg, &["pause"], "").await);
    assert_eq!(out, "Success: cluster management is paused\n");
    // [halo@node1 ~]$ patronictl list
    let out = must(ctl(&cfg, &["list"], "").await);
    assert!(out.starts_with("+ Cluster: halo-cluster ("), "{out}");
    assert!(out.ends_with("Maintenance mode: on\n"), "{out}");
    let rows = table_rows(&out);
    assert_eq!(rows[0], ["Member", "Host", "Role", "State", "TL", "Lag in MB", "Pending restart"], "{out}");
    let tl = rows[1][4].clone();
    assert_eq!(rows[1][..3], ["node1", &format!("127.0.0.1:{}", c.nodes[0].pg_port), "Leader"], "{out}");
    assert_eq!((rows[1][3].as_str(), rows[1][5].as_str()), ("running", ""), "{out}");
    for (row, name) in rows[2..].iter().zip(["node2", "node3"]) {
        assert_eq!((row[0].as_str(), row[2].as_str(), row[4].as_str(), row[5].as_str()), (name, "Replica", &*tl, "0"));
        assert!(["running", "streaming"].contains(&row[3].as_str()), "{out}");
    }
    assert_eq!(rows[3][6], "*", "node3's pending restart: {out}");

    // 手动主备切换: patronictl switchover, answered as in the seed.
    let out = must(ctl(&cfg, &["switchover"], "\nnode2\n\ny\n").await);
    in_order(
        &out,
        &[
            "Master [node1]: ",
            "Candidate ['node2', 'node3'] []: ",
            "When should the switchover take place (e.g. ",
            " ) [now]: ",
            "Current cluster topology\n+ Cluster: halo-cluster (",
            "| Member | Host",
            "| Pending restart |",
            "Maintenance mode: on\n",
            "Are you sure you want to switchover cluster halo-cluster, demoting current master node1? [y/N]: ",
            " Successfully switched over to \"node2\"\n+ Cluster: halo-cluster (",
            "Maintenance mode: on\n",
        ],
    );
    let line = out.lines().find(|l| l.contains("Successfully switched over")).expect("success line");
    // The answer's line ends the prompt (stdin is not echoed); the timestamp follows it.
    let stamp = line.rsplit("[y/N]: ").next().and_then(|l| l.split(" Successfully").next()).unwrap_or_default();
    assert!(chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S%.f").is_ok(), "{line}");
    let after = table_rows(&out[out.find("Successfully").unwrap_or(0)..]);
    assert!(after.iter().any(|r| r[0] == "node2" && r[2] == "Leader"), "{out}");
    // The old primary ends as a replica of node2, still in pause.
    wait_for("node2 to be the only writable node", Duration::from_secs(30), || async {
        (writable(&c.nodes).await == vec![1]).then_some(())
    })
    .await;
    wait_for("node1 and node3 to stream from node2", Duration::from_secs(60), || async {
        exec(c.nodes[1].pg_port, "INSERT INTO e2e VALUES ('after-seed-switchover')").await.ok()?;
        replicas_stream_from(&c.nodes, 1, "after-seed-switchover").await
    })
    .await;
    let out = must(ctl(&cfg, &["list"], "").await);
    assert!(out.ends_with("Maintenance mode: on\n"), "{out}");

    // 重启其中一个节点: patronictl restart halo-cluster node3
    let started = postmaster_start_time(c.nodes[2].api_port).await.expect("node3's start time");
    let out = must(ctl(&cfg, &["restart", "halo-cluster", "node3"], "\ny\n\n").await);
    in_order(
        &out,
        &[
            "+ Cluster: halo-cluster (",
            "| Pending restart |",
            "Maintenance mode: on\n",
            "When should the restart take place (e.g. ",
            ") [now]: ",
            "Are you sure you want to restart members node3? [y/N]: ",
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) []: ",
            "Success: restart on member node3\n",
        ],
    );
    wait_for("node3 restarted without its pending restart", Duration::from_secs(30), || async {
        let now = postmaster_start_time(c.nodes[2].api_port).await?;
        let out = ctl(&cfg, &["list", "-f", "json"], "").await.stdout;
        let rows: Vec<Value> = serde_json::from_str(&out).ok()?;
        let pending = rows.iter().any(|r| r["Member"] == "node3" && r["Pending restart"] == "*");
        (now != started && !pending).then_some(())
    })
    .await;
    // Still paused, still one writer, and node3 streams again.
    assert!(must(ctl(&cfg, &["list"], "").await).ends_with("Maintenance mode: on\n"));
    wait_for("node3 to stream again", Duration::from_secs(60), || async {
        exec(c.nodes[1].pg_port, "INSERT INTO e2e VALUES ('after-seed-restart')").await.ok()?;
        replicas_stream_from(&c.nodes, 1, "after-seed-restart").await
    })
    .await;
    let _ = stop.send(true);
    let (worst, samples) = sampler.await.expect("sampler");
    assert!(worst <= 1, "two writable nodes at one sample ({samples} samples)");
    assert!(samples >= 10, "the sampler ran ({samples} samples)");
}
