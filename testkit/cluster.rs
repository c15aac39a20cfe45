//! A 3-node Shield cluster on loopback for end-to-end tests and the cluster benchmark: real
//! PostgreSQL, real etcd or Consul, and `shield` daemons run as an unprivileged user (the test
//! user from scripts/setup.sh when the caller is root).
//!
//! Not a crate: shield-bin's integration tests and bench include it with `#[path]`, next to
//! `servers.rs`, which must be included as `mod servers` by the includer.

#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::servers::{self, free_port, EtcdCluster};
/// Patroni 4.1.5's `patroni` from scripts/setup.sh's virtual environment, or `None` (a failure
/// under scripts/test.sh, which provides it).
pub fn patroni_bin() -> Option<PathBuf> {
    let found = std::env::var_os("SHIELD_PATRONI_BIN").map(PathBuf::from).filter(|p| p.is_file());
    if found.is_none() {
        let msg = "Patroni not found (set SHIELD_PATRONI_BIN or run scripts/setup.sh)";
        assert!(!servers::servers_required(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// `patronictl` beside [`patroni_bin`].
pub fn patronictl_bin() -> Option<PathBuf> {
    Some(patroni_bin()?.with_file_name("patronictl"))
}

pub fn pg_bindir() -> Option<PathBuf> {
    let candidates =
        [std::env::var_os("SHIELD_PG_BINDIR").map(PathBuf::from), Some(PathBuf::from("/usr/lib/postgresql/15/bin"))];
    let found = candidates.into_iter().flatten().find(|p| p.join("postgres").is_file());
    if found.is_none() {
        let msg = "PostgreSQL 15 server binaries not found (set SHIELD_PG_BINDIR or run scripts/setup.sh)";
        assert!(!servers::servers_required(), "{msg}");
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// The uid/gid to run nodes as: ourselves, or the test user when we are root.
pub fn run_as() -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return Some((nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw()));
    }
    let name = std::env::var("SHIELD_TEST_USER").unwrap_or_else(|_| "shieldtest".into());
    match nix::unistd::User::from_name(&name) {
        Ok(Some(u)) => Some((u.uid.as_raw(), u.gid.as_raw())),
        _ => {
            let msg =
                format!("running as root and the unprivileged user {name:?} does not exist (run scripts/setup.sh)");
            assert!(!servers::servers_required(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// The REST credentials every test node's config carries (secure by default, as `shield init
/// node` writes it): unsafe requests from tests and CLIs must present them.
pub const REST_AUTH: (&str, &str) = ("shield", "rest-pass");

/// The `ctl` section that gives shieldctl and patronictl the nodes' REST credentials.
pub fn ctl_section() -> String {
    format!("ctl:\n  authentication:\n    username: {}\n    password: {}\n", REST_AUTH.0, REST_AUTH.1)
}

/// Where a node's daemon and database are reached.
pub struct Host {
    /// The address published to the cluster.
    pub ip: &'static str,
    /// What PostgreSQL listens on.
    pub listen: &'static str,
    /// A network allowed in pg_hba besides loopback.
    pub net: Option<&'static str>,
}

impl Host {
    pub const LOOPBACK: Host = Host { ip: "127.0.0.1", listen: "127.0.0.1", net: None };
}

pub struct Node {
    pub name: String,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    pub child: Option<Child>,
    pub uid: u32,
    pub gid: u32,
    /// The network namespace the daemon runs in (VIP tests), with CAP_NET_ADMIN and CAP_NET_RAW
    /// as ambient capabilities, as the systemd unit grants them.
    pub netns: Option<String>,
    /// The daemon is a real Patroni (`$SHIELD_PATRONI_BIN`, from scripts/setup.sh) on the same
    /// config file, not shield.
    pub patroni: bool,
}

impl Node {
    pub fn config_with(&self, dcs_section: &str, pg_bin: &Path) -> String {
        self.config_on(&Host::LOOPBACK, dcs_section, pg_bin)
    }

    /// The node's config for a daemon reachable at `host`.
    pub fn config_on(&self, host: &Host, dcs_section: &str, pg_bin: &Path) -> String {
        let hba: String = host
            .net
            .iter()
            .map(|n| format!("  - host replication replicator {n} md5\n  - host all all {n} md5\n"))
            .collect();
        format!(
            r#"scope: e2e
name: {name}
restapi:
  listen: {ip}:{api}
  connect_address: {ip}:{api}
  authentication:
    username: {rest_user}
    password: {rest_password}
  allowlist: ['127.0.0.1', '{ip}']
{dcs_section}bootstrap:
  dcs:
    ttl: 4
    loop_wait: 1
    retry_timeout: 1.5
    postgresql:
      use_pg_rewind: true
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator 127.0.0.1/32 md5
  - host all all 127.0.0.1/32 md5
{hba}postgresql:
  basebackup:
  - max-rate: 500M
  callbacks:
    on_start: {dir}/callback.sh
    on_stop: {dir}/callback.sh
    on_role_change: {dir}/callback.sh
  listen: {listen}:{pg}
  connect_address: {ip}:{pg}
  data_dir: {dir}/data
  bin_dir: {bin}
  pgpass: {dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: su-pass
    replication:
      username: replicator
      password: rep-pass
  parameters:
    unix_socket_directories: '{dir}'
    shared_buffers: 16MB
watchdog:
  mode: required
  driver: testing
  device: {dir}/watchdog
"#,
            name = self.name,
            api = self.api_port,
            pg = self.pg_port,
            dir = self.dir.display(),
            bin = pg_bin.display(),
            ip = host.ip,
            listen = host.listen,
            rest_user = REST_AUTH.0,
            rest_password = REST_AUTH.1,
        )
    }

    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        // Run a copy inside the node's own directory: the build tree may sit under a directory
        // the unprivileged user cannot enter (a CI checkout under /root, say).
        let exe =
            if self.patroni { patroni_bin().expect("Patroni (run scripts/setup.sh)") } else { self.dir.join("shield") };
        if !exe.exists() {
            std::fs::copy(env!("CARGO_BIN_EXE_shield"), &exe).expect("copy the shield binary");
            let _ = std::os::unix::fs::chown(&exe, Some(self.uid), Some(self.gid));
        }
        let log = std::fs::File::create(self.dir.join("shield.log")).expect("log file");
        let _ = std::os::unix::fs::chown(self.dir.join("shield.log"), Some(self.uid), Some(self.gid));
        let mut cmd = match &self.netns {
            // `ip netns exec` and setpriv both exec, so the child's pid is the daemon's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "setpriv"])
                    .arg(format!("--reuid={}", self.uid))
                    .arg(format!("--regid={}", self.gid))
                    .args(["--clear-groups", "--inh-caps=+net_admin,+net_raw", "--ambient-caps=+net_admin,+net_raw"])
                    .arg(&exe);
                c
            }
            None => {
                let mut c = Command::new(&exe);
                c.uid(self.uid).gid(self.gid);
                c
            }
        };
        cmd.arg(self.dir.join("shield.yml"))
            .env("SHIELD_LOG", "info")
            // Patroni's log lines reach the file as they are written.
            .env("PYTHONUNBUFFERED", "1")
            .env("HOME", &self.dir)
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log));
        // A copy another test thread has just written can be held open for writing a moment
        // longer by a child that thread forked (it inherits the descriptor until its exec):
        // exec then fails with ETXTBSY. Try again briefly.
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                r => break r.expect("spawn shield"),
            }
        };
        self.child = Some(child);
    }

    pub fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// SIGTERM the daemon and wait for it to exit (what `systemctl stop` does).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(90);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            panic!("{} did not exit within 90 s of SIGTERM", self.name);
        }
    }

    /// SIGKILL the daemon and the postmaster together (a host crash, as far as the cluster sees).
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// When the (testing) watchdog would have reset this host, in Unix ms: the last keepalive
    /// plus the timeout it was armed with. `None` if it was never armed or was closed since.
    pub fn watchdog_fires_at(&self) -> Option<i64> {
        let record = std::fs::read_to_string(self.dir.join("watchdog")).ok()?;
        let (mut timeout_ms, mut last) = (None, None);
        for line in record.lines() {
            let (ms, op) = line.split_once(' ')?;
            let ms: i64 = ms.parse().ok()?;
            match op.split_once(' ') {
                Some(("timeout", s)) => timeout_ms = s.parse::<i64>().ok().map(|s| s * 1000),
                _ if op == "keepalive" => last = Some(ms),
                _ if op == "close" => last = None,
                _ => {}
            }
        }
        Some(last? + timeout_ms?)
    }

    /// When this node last took the leader lock (from its log), in Unix ms.
    pub fn lock_taken_at(&self) -> Option<i64> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains("by acquiring session lock"))?;
        let stamp = line.split_whitespace().next()?;
        chrono::DateTime::parse_from_rfc3339(stamp).ok().map(|t| t.timestamp_millis())
    }

    /// The callbacks this node ran so far (`<action> <role> <scope>` lines).
    pub fn callbacks(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("callbacks.log")).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("shield.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.crash();
        if std::thread::panicking() {
            // A failed test shows what each daemon was doing, whatever assertion failed.
            eprintln!("==== {} log (last 60 lines) ====", self.name);
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            for l in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{l}");
            }
            let pg = std::fs::read_to_string(self.dir.join("data.postgres.log")).unwrap_or_default();
            let lines: Vec<&str> = pg.lines().collect();
            eprintln!("==== {} PostgreSQL log (last 15 lines) ====", self.name);
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("{l}");
            }
        }
        // Children of the killed postmaster exit on their own; make sure none linger.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A query with a hard bound: a frozen server accepts the TCP connection and then never answers.
pub async fn sql(port: u16, q: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    tokio::time::timeout(Duration::from_secs(3), sql_unbounded(port, q)).await.map_err(|_| "no answer".to_owned())?
}

/// A superuser connection to the node's database on `port`.
async fn connect(port: u16) -> Result<tokio_postgres::Client, String> {
    connect_to(port, "postgres").await
}

/// A superuser connection to database `db` on `port`.
async fn connect_to(port: u16, db: &str) -> Result<tokio_postgres::Client, String> {
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password("su-pass")
        .dbname(db)
        .connect_timeout(Duration::from_secs(2))
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(c)
}

fn db_message(e: tokio_postgres::Error) -> String {
    e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

pub async fn sql_unbounded(port: u16, q: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    connect(port).await?.query(q, &[]).await.map_err(db_message)
}

pub async fn exec(port: u16, q: &str) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(10), exec_unbounded(port, q)).await.map_err(|_| "no answer".to_owned())?
}

/// `exec` in database `db`.
pub async fn exec_in(port: u16, db: &str, q: &str) -> Result<(), String> {
    let run = async { connect_to(port, db).await?.batch_execute(q).await.map_err(db_message) };
    tokio::time::timeout(Duration::from_secs(60), run).await.map_err(|_| "no answer".to_owned())?
}

pub async fn exec_unbounded(port: u16, q: &str) -> Result<(), String> {
    connect(port).await?.batch_execute(q).await.map_err(db_message)
}

pub async fn http_status(port: u16, path: &str) -> u16 {
    use http_body_util::Empty;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://127.0.0.1:{port}{path}").parse().expect("uri");
    match tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await {
        Ok(Ok(r)) => r.status().as_u16(),
        _ => 0,
    }
}

/// Which nodes run a writable database.
pub async fn writable(nodes: &[Node]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        if let Ok(rows) = sql(n.pg_port, "SELECT NOT pg_is_in_recovery()").await {
            if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
                out.push(i);
            }
        }
    }
    out
}

/// How long until `pid` exits (gone, or a zombie not yet reaped), polled every 10 ms; `None`
/// if it still runs after `within`.
pub async fn wait_for_exit(pid: i32, within: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < within {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next());
        if matches!(state, None | Some("Z" | "X")) {
            return Some(t.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// Every pid in the postmaster's process tree (for SIGSTOP of the whole database).
pub fn pg_tree(postmaster: i32) -> Vec<i32> {
    let mut pids = vec![postmaster];
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid =
                stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<i32>().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
    }
    pids
}

pub fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) {
    for &p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Samples every 50 ms which nodes accept writes; returns the worst sample seen.
pub fn start_sampler(ports: Vec<u16>) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<(usize, usize)>) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let h = tokio::spawn(async move {
        let (mut worst, mut samples) = (0usize, 0usize);
        while !*stop_rx.borrow() {
            let mut n = 0;
            for &p in &ports {
                let q = tokio::time::timeout(Duration::from_millis(40), sql(p, "SELECT NOT pg_is_in_recovery()")).await;
                if let Ok(Ok(rows)) = q {
                    if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
                        n += 1;
                    }
                }
            }
            worst = worst.max(n);
            samples += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (worst, samples)
    });
    (stop_tx, h)
}

pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            // Each node prints its log tail as the panic drops it.
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until exactly one node accepts writes (one other than `except`, if given) and returns it.
pub async fn one_writable(what: &str, within: Duration, nodes: &[Node], except: Option<usize>) -> usize {
    wait_for(what, within, || async {
        let w = writable(nodes).await;
        (w.len() == 1 && Some(w[0]) != except).then(|| w[0])
    })
    .await
}

/// All nodes streaming from the single primary `p`, and row `marker` visible everywhere.
pub async fn replicas_stream_from(nodes: &[Node], p: usize, marker: &str) -> Option<()> {
    for (i, n) in nodes.iter().enumerate() {
        if i == p {
            continue;
        }
        let rows = sql(n.pg_port, "SELECT status FROM pg_stat_wal_receiver").await.ok()?;
        if rows.first().map(|r| r.get::<_, String>(0)).as_deref() != Some("streaming") {
            return None;
        }
        let found = sql(n.pg_port, &format!("SELECT 1 FROM e2e WHERE v = '{marker}'")).await.ok()?;
        if found.is_empty() {
            return None;
        }
    }
    Some(())
}

/// SIGKILLs the primary's daemon and postmaster, waits for another node to commit a row, then
/// restarts the old node and waits until it streams that row. Returns the new primary, the time
/// to its first commit, and the time the old node took to rejoin.
pub async fn crash_primary_and_rejoin(nodes: &mut [Node], primary: usize) -> (usize, Duration, Duration) {
    let t = Instant::now();
    nodes[primary].crash();
    let new_primary = one_writable("a new primary", Duration::from_secs(30), nodes, Some(primary)).await;
    exec(nodes[new_primary].pg_port, "INSERT INTO e2e VALUES ('after-failover')")
        .await
        .expect("commit on the new primary");
    let rto = t.elapsed();
    let t = Instant::now();
    nodes[primary].start();
    wait_for("the old primary to rejoin and stream", Duration::from_secs(90), || {
        replicas_stream_from(nodes, new_primary, "after-failover")
    })
    .await;
    (new_primary, rto, t.elapsed())
}

/// The DCS a test cluster runs on.
pub enum TestDcs {
    /// A one-member etcd.
    Etcd(EtcdCluster),
    /// A `consul agent -dev` with `session_ttl_min = 1s`.
    Consul(servers::ConsulAgent),
}

impl TestDcs {
    /// The node config's DCS section.
    pub fn section(&self) -> String {
        match self {
            TestDcs::Etcd(e) => {
                let hosts: Vec<String> =
                    e.endpoints().iter().map(|h| h.trim_start_matches("http://").to_owned()).collect();
                format!("etcd3:\n  hosts: {}\n", hosts.join(","))
            }
            TestDcs::Consul(c) => format!("consul:\n  url: {}\n", c.url()),
        }
    }

    /// The etcd endpoint, if this is etcd.
    pub fn etcd_endpoint(&self) -> Option<String> {
        match self {
            TestDcs::Etcd(e) => e.endpoints().first().cloned(),
            TestDcs::Consul(_) => None,
        }
    }

    /// The etcd cluster, if this is etcd.
    pub fn etcd(&self) -> Option<&EtcdCluster> {
        match self {
            TestDcs::Etcd(e) => Some(e),
            TestDcs::Consul(_) => None,
        }
    }
}

/// A running 3-node cluster.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub primary: usize,
    pub dcs: TestDcs,
    pub pg_bin: PathBuf,
    pub root: tempfile::TempDir,
}

impl Cluster {
    /// A node directory under the cluster's root, owned by the unprivileged user.
    pub fn new_node(&self, name: &str) -> Node {
        new_node(self.root.path(), name, self.nodes[0].uid, self.nodes[0].gid)
    }
}

pub fn new_node(root: &Path, name: &str, uid: u32, gid: u32) -> Node {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("node dir");
    let _ = std::os::unix::fs::chown(&dir, Some(uid), Some(gid));
    // The callback every node runs: one line per call, `<action> <role> <scope>`.
    let script = dir.join("callback.sh");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$@\" >> {}\n", dir.join("callbacks.log").display()))
        .expect("callback script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    Node {
        name: name.to_owned(),
        dir,
        pg_port: free_port(),
        api_port: free_port(),
        child: None,
        uid,
        gid,
        netns: None,
        patroni: false,
    }
}

/// Three nodes on etcd, bootstrapped, with table `e2e` replicated everywhere.
pub async fn cluster() -> Option<Cluster> {
    cluster_on(false).await
}

/// Three nodes on etcd or (`consul`) Consul, bootstrapped and streaming.
pub async fn cluster_on(consul: bool) -> Option<Cluster> {
    let dcs = if consul {
        TestDcs::Consul(servers::ConsulAgent::start("1s", &[])?)
    } else {
        TestDcs::Etcd(EtcdCluster::start(1)?)
    };
    cluster_with(dcs).await
}

/// Three nodes on the given DCS, bootstrapped and streaming.
pub async fn cluster_with(dcs: TestDcs) -> Option<Cluster> {
    cluster_edited(dcs, |_, config| config).await
}

/// Three nodes whose configs `edit` changes first, bootstrapped and streaming.
pub async fn cluster_edited(dcs: TestDcs, edit: impl Fn(&Node, String) -> String) -> Option<Cluster> {
    cluster_of(dcs, &["node0", "node1", "node2"], false, edit).await
}

/// Nodes named `names` whose configs `edit` changes first, bootstrapped and streaming. With
/// `first_leads`, the first node is started alone and bootstraps the cluster before the others.
pub async fn cluster_of(
    dcs: TestDcs,
    names: &[&str],
    first_leads: bool,
    edit: impl Fn(&Node, String) -> String,
) -> Option<Cluster> {
    let pg_bin = pg_bindir()?;
    let (uid, gid) = run_as()?;
    let root = tempfile::tempdir().expect("temp dir");
    let _ = std::os::unix::fs::chown(root.path(), Some(uid), Some(gid));
    let mut nodes: Vec<Node> = names.iter().map(|name| new_node(root.path(), name, uid, gid)).collect();
    for (i, n) in nodes.iter_mut().enumerate() {
        std::fs::write(n.dir.join("shield.yml"), edit(n, n.config_with(&dcs.section(), &pg_bin))).expect("config");
        n.start();
        if first_leads && i == 0 {
            one_writable("the first node to bootstrap", Duration::from_secs(90), std::slice::from_ref(n), None).await;
        }
    }
    let primary = one_writable("one writable node", Duration::from_secs(90), &nodes, None).await;
    exec(nodes[primary].pg_port, "CREATE TABLE e2e (v text); INSERT INTO e2e VALUES ('boot')")
        .await
        .expect("write on the primary");
    wait_for("replicas streaming the row", Duration::from_secs(90), || replicas_stream_from(&nodes, primary, "boot"))
        .await;
    // What the databases do reaches the leader's view a cycle later: a test acting through the
    // REST API (a switchover naming a candidate) needs the leader to see every member running.
    let (api, count) = (nodes[primary].api_port, nodes.len());
    wait_for("the leader to see every member running", Duration::from_secs(20), || async move {
        let (code, body) = http_get(api, "/cluster").await;
        if code == 0 {
            // No plain-HTTP answer: a TLS cluster, which its test checks over https itself.
            return Some(());
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let members = v["members"].as_array()?;
        // /cluster calls a streaming replica "streaming", as Patroni 4.1 does.
        let up = |m: &serde_json::Value| m["state"] == "running" || m["state"] == "streaming";
        (members.len() == count && members.iter().all(up)).then_some(())
    })
    .await;
    Some(Cluster { nodes, primary, dcs, pg_bin, root })
}

pub async fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    http_call(port, path, Some(body)).await
}

pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    http_call(port, path, None).await
}

pub async fn http_patch(port: u16, path: &str, body: &str) -> (u16, String) {
    http_call_method(port, path, Some(body), hyper::Method::PATCH).await
}

pub async fn http_call(port: u16, path: &str, body: Option<&str>) -> (u16, String) {
    let method = if body.is_some() { hyper::Method::POST } else { hyper::Method::GET };
    http_call_method(port, path, body, method).await
}

/// A REST call to the node at `port`; unsafe methods carry [`REST_AUTH`].
pub async fn http_call_method(port: u16, path: &str, body: Option<&str>, method: hyper::Method) -> (u16, String) {
    let auth = (method != hyper::Method::GET).then_some(REST_AUTH);
    http_call_as(port, path, body, method, auth).await
}

/// A REST call with the given basic credentials, or none.
pub async fn http_call_as(
    port: u16,
    path: &str,
    body: Option<&str>,
    method: hyper::Method,
    auth: Option<(&str, &str)>,
) -> (u16, String) {
    use base64::Engine as _;
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = hyper::Request::builder().method(method).uri(format!("http://127.0.0.1:{port}{path}"));
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        req = req.header("authorization", format!("Basic {token}"));
    }
    let req = req.body(Full::new(bytes::Bytes::from(body.unwrap_or_default().to_owned()))).expect("request");
    match tokio::time::timeout(Duration::from_secs(40), client.request(req)).await {
        Ok(Ok(r)) => {
            let code = r.status().as_u16();
            let b = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (code, String::from_utf8_lossy(&b).into_owned())
        }
        _ => (0, String::new()),
    }
}
