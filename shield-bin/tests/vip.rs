//! The VIP follows the primary, on real hosts simulated with network namespaces: three database
//! hosts, an etcd host and a client on one bridge (10.77.0.0/24, nothing else), each daemon
//! running as the unprivileged test user with only CAP_NET_ADMIN and CAP_NET_RAW, as the systemd
//! unit grants them. Needs root (to create the namespaces), `ip`, `arping` and `setpriv`;
//! `scripts/test.sh` runs it as root and provides the tools (and curl).

#[path = "../../testkit/cluster.rs"]
mod cluster;
#[path = "../../testkit/servers.rs"]
mod servers;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::*;

const VIP: &str = "10.77.0.100";
const ETCD_IP: &str = "10.77.0.10";
const CLIENT_IP: &str = "10.77.0.20";

/// The database hosts' own addresses.
const IPS: [&str; 3] = ["10.77.0.1", "10.77.0.2", "10.77.0.3"];

fn host_ip(i: usize) -> String {
    IPS[i].to_owned()
}

/// Runs `ip args`, panicking with its stderr on failure.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces of one test run; deleted (with their links) when dropped.
struct Net {
    prefix: String,
    made: Vec<String>,
}

impl Net {
    fn new() -> Net {
        Net { prefix: format!("shv{}", std::process::id()), made: Vec::new() }
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    fn add_ns(&mut self, host: &str) -> String {
        let ns = self.ns(host);
        ip(&["netns", "add", &ns]);
        self.made.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// The switch: a bridge in its own namespace.
    fn switch(&mut self) {
        let sw = self.add_ns("sw");
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
    }

    /// A host with `eth0` at `addr`/24 on the bridge (port `port` on the switch).
    fn host(&mut self, host: &str, addr: &str, port: &str) -> String {
        let ns = self.add_ns(host);
        let sw = self.ns("sw");
        ip(&["link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", port, "netns", &sw]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &sw, "link", "set", port, "master", "br0"]);
        ip(&["-n", &sw, "link", "set", port, "up"]);
        ns
    }

    /// Cuts (or restores) a host's cable at the switch.
    fn cable(&self, port: &str, up: bool) {
        ip(&["-n", &self.ns("sw"), "link", "set", port, if up { "up" } else { "down" }]);
    }

    fn holds_vip(&self, host: &str) -> bool {
        ip(&["-n", &self.ns(host), "-o", "-4", "addr", "show", "dev", "eth0"]).contains(&format!("inet {VIP}/"))
    }

    fn mac(&self, host: &str) -> String {
        let out = ip(&["-n", &self.ns(host), "-o", "link", "show", "dev", "eth0"]);
        out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).expect("a MAC").to_owned()
    }

    /// The client's neighbour entry for the VIP: its MAC, if any.
    fn client_sees(&self) -> Option<String> {
        let out = ip(&["-n", &self.ns("cl"), "neigh", "show", VIP, "dev", "eth0"]);
        out.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).map(str::to_owned)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the client reaches through the VIP: (in recovery, data directory).
fn through_vip(net: &Net, pg_bin: &Path) -> Option<(bool, String)> {
    let out = Command::new("ip")
        .args(["netns", "exec", &net.ns("cl")])
        .arg(pg_bin.join("psql"))
        .args(["-h", VIP, "-p", "5432", "-U", "postgres", "-d", "postgres", "-Atc"])
        .arg("SELECT pg_is_in_recovery(), current_setting('data_directory')")
        .env("PGPASSWORD", "su-pass")
        .env("PGCONNECT_TIMEOUT", "2")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (rec, dir) = text.trim().split_once('|')?;
    Some((rec == "t", dir.to_owned()))
}

/// Whether host `i`'s database streams from its upstream (asked on the host itself).
fn streams(net: &Net, i: usize, pg_bin: &Path) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", &net.ns(&format!("h{i}"))])
        .arg(pg_bin.join("psql"))
        .args(["-h", &host_ip(i), "-p", "5432", "-U", "postgres", "-d", "postgres", "-Atc"])
        .arg("SELECT status FROM pg_stat_wal_receiver")
        .env("PGPASSWORD", "su-pass")
        .env("PGCONNECT_TIMEOUT", "2")
        .stderr(Stdio::null())
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "streaming")
}

/// The node whose data directory the client reached through the VIP, if it is a primary.
async fn primary_via_vip(net: &Net, pg_bin: &Path, nodes: &[Node]) -> Option<usize> {
    let (in_recovery, dir) = through_vip(net, pg_bin)?;
    (!in_recovery).then(|| nodes.iter().position(|n| Path::new(&dir).starts_with(&n.dir)))?
}

/// The time (Unix ms) of the last log line of `node` containing `what`.
fn logged_at(node: &Node, what: &str) -> Option<i64> {
    let log = node.log();
    let line = log.lines().rev().find(|l| l.contains(what))?;
    chrono::DateTime::parse_from_rfc3339(line.split_whitespace().next()?).ok().map(|t| t.timestamp_millis())
}

/// Writes node `i`'s config with `shield init node`, as an operator would (flags, no prompts).
fn init_node(i: usize, node: &Node, pg_bin: &Path) {
    let out = node.dir.join("shield.yml");
    let run = Command::new(env!("CARGO_BIN_EXE_shield"))
        .args(["init", "node", "--etcd", ETCD_IP, "--name", &node.name, "--vip", &format!("{VIP}/24")])
        .args(["--interface", "eth0", "--scope", "vip", "--this", &host_ip(i)])
        .args(["--superuser-password", "su-pass", "--replication-password", "rep-pass"])
        .arg("--data-dir")
        .arg(node.dir.join("data"))
        .arg("--bin-dir")
        .arg(pg_bin)
        .arg("--socket-dir")
        .arg(&node.dir)
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .expect("shield init node");
    assert!(run.status.success(), "shield init node: {}", String::from_utf8_lossy(&run.stderr));
    for f in [out.clone(), node.dir.join("shield.service")] {
        let _ = std::os::unix::fs::chown(&f, Some(node.uid), Some(node.gid));
    }
}

fn tools_present() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["ip", "arping", "setpriv", "curl"].iter().all(|t| shield_bin::backend::vip::find_tool(t).is_some());
    if !(root && tools) {
        let msg = "VIP tests need root (network namespaces) and ip, arping, setpriv and curl";
        assert!(!servers::servers_required(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return false;
    }
    true
}

/// One test run's world, dropped in this order: the daemons, etcd, the files, the namespaces.
struct World {
    nodes: Vec<Node>,
    etcd: Etcd,
    _root: tempfile::TempDir,
    net: Net,
    pg_bin: std::path::PathBuf,
}

/// The tests share the namespace names and addresses: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bridge, etcd's host, the client and three database hosts, each node configured by
/// `shield init node` (then `edit` on its YAML) and started. `None` when a tool or server is
/// missing (a failure in CI, see `tools_present`).
fn world(edit: impl Fn(&mut serde_yaml_ng::Value)) -> Option<World> {
    if !tools_present() {
        return None;
    }
    let (Some(pg_bin), Some((uid, gid)), Some(etcd_bin)) =
        (pg_bindir(), run_as(), servers::find_bin("SHIELD_ETCD_BIN", "etcd"))
    else {
        return None;
    };
    let mut net = Net::new();
    net.switch();
    let dc = net.host("dc", ETCD_IP, "pdc");
    net.host("cl", CLIENT_IP, "pcl");
    for i in 0..3 {
        net.host(&format!("h{i}"), &host_ip(i), &format!("p{i}"));
    }
    let root = tempfile::tempdir().expect("temp dir");
    let _ = std::os::unix::fs::chown(root.path(), Some(uid), Some(gid));
    let url = format!("http://{ETCD_IP}:2379");
    let peer = format!("http://{ETCD_IP}:2380");
    let etcd = Etcd(
        Command::new("ip")
            .args(["netns", "exec", &dc])
            .arg(&etcd_bin)
            .args(["--name", "e0", "--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("e0={peer}"), "--data-dir"])
            .arg(root.path().join("etcd"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd"),
    );
    let mut nodes: Vec<Node> = (0..3).map(|i| new_node(root.path(), &format!("node{i}"), uid, gid)).collect();
    // Each host has its own addresses: every node on the usual ports, configured by `shield
    // init node` (which also proves its configs start a cluster).
    for (i, n) in nodes.iter_mut().enumerate() {
        n.netns = Some(net.ns(&format!("h{i}")));
        (n.pg_port, n.api_port) = (5432, 8008);
        init_node(i, n, &pg_bin);
        let file = n.dir.join("shield.yml");
        let mut yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&file).expect("config")).expect("YAML");
        edit(&mut yaml);
        std::fs::write(&file, serde_yaml_ng::to_string(&yaml).expect("YAML")).expect("write config");
    }
    for n in &mut nodes {
        n.start();
    }
    Some(World { nodes, etcd, _root: root, net, pg_bin })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vip_follows_the_primary_across_crash_and_partition() {
    let _serial = SERIAL.lock().await;
    let Some(mut w) = world(|_| {}) else { return };
    let (nodes, net, pg_bin) = (&mut w.nodes, &w.net, &w.pg_bin);
    // ---- after bootstrap the client reaches the primary through the VIP ----------------------
    let p = wait_for("the client to reach a primary through the VIP", Duration::from_secs(90), || {
        primary_via_vip(net, pg_bin, nodes)
    })
    .await;
    wait_for("both replicas to stream", Duration::from_secs(90), || async {
        let streaming = (0..3).filter(|&i| i != p && nodes[i].log().contains("following a leader")).count();
        (streaming == 2).then_some(())
    })
    .await;
    let holders: Vec<usize> = (0..3).filter(|&i| net.holds_vip(&format!("h{i}"))).collect();
    assert_eq!(holders, vec![p], "exactly the primary's host holds the VIP");
    assert_eq!(net.client_sees(), Some(net.mac(&format!("h{p}"))), "the client resolved the VIP to the primary");
    let patroni = Command::new("ip")
        .args(["netns", "exec", &net.ns("cl"), "curl", "-s", "--max-time", "5"])
        .arg(format!("http://{}:8008/patroni", host_ip(p)))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .expect("curl");
    assert!(patroni.contains(r#""vip":{"address":"10.77.0.100/24","bound":true}"#), "{patroni}");

    // ---- node crash: the keeper drops the VIP, the new primary binds and announces it -------
    let t = Instant::now();
    nodes[p].crash();
    let q = wait_for("a new primary's host to hold the VIP", Duration::from_secs(30), || async {
        (0..3).find(|&i| i != p && net.holds_vip(&format!("h{i}")))
    })
    .await;
    println!("vip: crash of node{p} → the VIP on node{q} after {:?}", t.elapsed());
    assert!(!net.holds_vip(&format!("h{p}")), "the crashed node's keeper removed the VIP");
    // The client has sent nothing since: only the gratuitous ARP can have told it the new MAC.
    let new_mac = net.mac(&format!("h{q}"));
    wait_for("the client's ARP cache to learn the new MAC", Duration::from_secs(5), || async {
        (net.client_sees().as_ref() == Some(&new_mac)).then_some(())
    })
    .await;
    let reached = wait_for("the client to reach the new primary through the VIP", Duration::from_secs(30), || {
        primary_via_vip(net, pg_bin, nodes)
    })
    .await;
    assert_eq!(reached, q);
    nodes[p].start();

    // Both replicas stream from the new primary before the next fault.
    wait_for("both replicas to stream from the new primary", Duration::from_secs(60), || async {
        let streaming = (0..3).filter(|&i| i != q && streams(net, i, pg_bin)).count();
        (streaming == 2).then_some(())
    })
    .await;

    // ---- partition: the old primary drops the VIP before the new one binds it ---------------
    let bound_before = logged_at(&nodes[q], "vip: bound");
    net.cable(&format!("p{q}"), false);
    let r = wait_for("another host to take the VIP", Duration::from_secs(30), || async {
        (0..3).find(|&i| i != q && net.holds_vip(&format!("h{i}")))
    })
    .await;
    let removed = logged_at(&nodes[q], "vip: removed").expect("the partitioned primary removed the VIP");
    let bound = logged_at(&nodes[r], "vip: bound").expect("the new primary bound it");
    assert!(bound_before.is_some_and(|b| b < removed), "the removal is the one after the partition");
    println!("vip: partitioned node{q} removed the VIP {} ms before node{r} bound it", bound - removed);
    assert!(removed < bound, "removed at {removed}, bound elsewhere at {bound}");
    assert!(!net.holds_vip(&format!("h{q}")));
    net.cable(&format!("p{q}"), true);
    let reached = wait_for("the client to reach the newest primary", Duration::from_secs(30), || {
        primary_via_vip(net, pg_bin, nodes)
    })
    .await;
    assert_eq!(reached, r);
}

/// Failsafe mode with one member cut off (issue 16): etcd stops answering (SIGSTOP) and a
/// replica's cable is pulled at the same time, so the primary's `POST /failsafe` to it gets no
/// answer. Not every member confirms: the primary stops by its fencing deadline, nobody
/// promotes while the DCS is silent, and one primary runs again once etcd and the cable are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_stops_the_primary_when_a_member_is_cut_off() {
    let _serial = SERIAL.lock().await;
    let on = |y: &mut serde_yaml_ng::Value| {
        y["bootstrap"]["dcs"]["failsafe_mode"] = serde_yaml_ng::Value::Bool(true);
    };
    let Some(w) = world(on) else { return };
    let p = wait_for("a primary", Duration::from_secs(90), || primary_via_vip(&w.net, &w.pg_bin, &w.nodes)).await;
    let r = (p + 1) % 3;
    wait_for("both replicas to stream", Duration::from_secs(90), || async {
        let streaming = (0..3).filter(|&i| i != p && streams(&w.net, i, &w.pg_bin)).count();
        (streaming == 2).then_some(())
    })
    .await;
    wait_for("the failsafe topology to list every member", Duration::from_secs(30), || async {
        let out = Command::new("ip")
            .args(["netns", "exec", &w.net.ns("cl"), "curl", "-s", "--max-time", "2"])
            .arg(format!("http://{}:8008/failsafe", host_ip(p)))
            .output()
            .ok()?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        (0..3).all(|i| body.contains(&format!("\"node{i}\""))).then_some(())
    })
    .await;
    let postmaster = w.nodes[p].postmaster_pid().expect("the primary's postmaster");
    let etcd_pid = nix::unistd::Pid::from_raw(w.etcd.0.id() as i32);
    nix::sys::signal::kill(etcd_pid, nix::sys::signal::Signal::SIGSTOP).expect("freeze etcd");
    w.net.cable(&format!("p{r}"), false);
    let t = Instant::now();
    let stopped = wait_for_exit(postmaster, Duration::from_secs(15)).await;
    println!("vip/failsafe: etcd frozen and node{r} cut off → primary node{p} stopped after {stopped:?}");
    let stopped = stopped.expect("the primary stopped: not every member confirmed it");
    // The deadline of the last renewal (3.2 s) or of an accepted round before the cut, plus
    // the time the postmaster takes to exit.
    assert!(stopped < Duration::from_secs(6), "stopped only after {stopped:?}");
    // (The round to the cut-off member waits its 2 s bound and a retry: the deadline of the
    // last renewal usually passes first, which is the point: no extension without an answer.)
    // Nobody promotes while the DCS is silent.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t.elapsed())).await;
    assert_eq!(primary_via_vip(&w.net, &w.pg_bin, &w.nodes).await, None, "no primary without the DCS");
    nix::sys::signal::kill(etcd_pid, nix::sys::signal::Signal::SIGCONT).expect("thaw etcd");
    w.net.cable(&format!("p{r}"), true);
    let q =
        wait_for("one primary again", Duration::from_secs(90), || primary_via_vip(&w.net, &w.pg_bin, &w.nodes)).await;
    println!("vip/failsafe: node{q} primary {:?} after the fault began", t.elapsed());
}
