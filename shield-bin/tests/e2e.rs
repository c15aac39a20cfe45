//! End to end: three `shield` daemons with real PostgreSQL 15 and a real etcd on loopback.
//! The daemons and databases run as an unprivileged user (`SHIELD_TEST_USER`, created by
//! scripts/setup.sh) when the test runs as root.

#[path = "../../testkit/servers.rs"]
mod servers;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use servers::{free_port, EtcdCluster};

fn pg_bindir() -> Option<PathBuf> {
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
fn run_as() -> Option<(u32, u32)> {
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

struct Node {
    name: String,
    dir: PathBuf,
    pg_port: u16,
    api_port: u16,
    child: Option<Child>,
    uid: u32,
    gid: u32,
}

impl Node {
    fn config(&self, etcd: &[String], pg_bin: &Path) -> String {
        let hosts: Vec<String> = etcd.iter().map(|e| e.trim_start_matches("http://").to_owned()).collect();
        self.config_with(&format!("etcd3:\n  hosts: {}\n", hosts.join(",")), pg_bin)
    }

    fn config_with(&self, dcs_section: &str, pg_bin: &Path) -> String {
        format!(
            r#"scope: e2e
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
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
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
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
  mode: off
"#,
            name = self.name,
            api = self.api_port,
            pg = self.pg_port,
            dir = self.dir.display(),
            bin = pg_bin.display(),
        )
    }

    fn start(&mut self) {
        // Run a copy inside the node's own directory: the build tree may sit under a directory
        // the unprivileged user cannot enter (a CI checkout under /root, say).
        let exe = self.dir.join("shield");
        if !exe.exists() {
            std::fs::copy(env!("CARGO_BIN_EXE_shield"), &exe).expect("copy the shield binary");
            let _ = std::os::unix::fs::chown(&exe, Some(self.uid), Some(self.gid));
        }
        let log = std::fs::File::create(self.dir.join("shield.log")).expect("log file");
        let _ = std::os::unix::fs::chown(self.dir.join("shield.log"), Some(self.uid), Some(self.gid));
        let child = Command::new(&exe)
            .arg(self.dir.join("shield.yml"))
            .env("SHIELD_LOG", "info")
            .env("HOME", &self.dir)
            .uid(self.uid)
            .gid(self.gid)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn shield");
        self.child = Some(child);
    }

    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("data/postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// SIGKILL the daemon and the postmaster together (a host crash, as far as the cluster sees).
    fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(pid) = self.postmaster_pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("shield.log")).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.crash();
        // Children of the killed postmaster exit on their own; make sure none linger.
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A query with a hard bound: a frozen server accepts the TCP connection and then never answers.
async fn sql(port: u16, q: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    tokio::time::timeout(Duration::from_secs(3), sql_unbounded(port, q)).await.map_err(|_| "no answer".to_owned())?
}

async fn sql_unbounded(port: u16, q: &str) -> Result<Vec<tokio_postgres::Row>, String> {
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password("su-pass")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2))
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    c.query(q, &[]).await.map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()))
}

async fn exec(port: u16, q: &str) -> Result<(), String> {
    tokio::time::timeout(Duration::from_secs(10), exec_unbounded(port, q)).await.map_err(|_| "no answer".to_owned())?
}

async fn exec_unbounded(port: u16, q: &str) -> Result<(), String> {
    let (c, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password("su-pass")
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2))
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    c.batch_execute(q).await.map_err(|e| e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned()))
}

async fn http_status(port: u16, path: &str) -> u16 {
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
async fn writable(nodes: &[Node]) -> Vec<usize> {
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

/// Every pid in the postmaster's process tree (for SIGSTOP of the whole database).
fn pg_tree(postmaster: i32) -> Vec<i32> {
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

fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) {
    for &p in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Samples every 50 ms which nodes accept writes; returns the worst sample seen.
fn start_sampler(ports: Vec<u16>) -> (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<(usize, usize)>) {
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

async fn wait_for<T, F, Fut>(what: &str, within: Duration, nodes: &[Node], mut f: F) -> T
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
            for n in nodes {
                eprintln!("==== {} log (last 40 lines) ====", n.name);
                let log = n.log();
                let lines: Vec<&str> = log.lines().collect();
                for l in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{l}");
                }
            }
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// All nodes streaming from the single primary `p`, and row `marker` visible everywhere.
async fn replicas_stream_from(nodes: &[Node], p: usize, marker: &str) -> Option<()> {
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

/// A running 3-node cluster. Tests run one at a time: three PostgreSQL servers and daemons per
/// test already fill a 2-core machine.
struct Cluster {
    nodes: Vec<Node>,
    primary: usize,
    _etcd: EtcdCluster,
    _root: tempfile::TempDir,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn cluster() -> Option<Cluster> {
    let serial = SERIAL.lock().await;
    let pg_bin = pg_bindir()?;
    let (uid, gid) = run_as()?;
    let etcd = EtcdCluster::start(1)?;
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
    Some(Cluster { nodes, primary, _etcd: etcd, _root: root, _serial: serial })
}

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
    let Some(c) = cluster().await else { return };
    let p = c.primary;
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

async fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    http_call(port, path, Some(body)).await
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    http_call(port, path, None).await
}

async fn http_call(port: u16, path: &str, body: Option<&str>) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let method = if body.is_some() { hyper::Method::POST } else { hyper::Method::GET };
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://127.0.0.1:{port}{path}"))
        .body(Full::new(bytes::Bytes::from(body.unwrap_or_default().to_owned())))
        .expect("request");
    match tokio::time::timeout(Duration::from_secs(40), client.request(req)).await {
        Ok(Ok(r)) => {
            let code = r.status().as_u16();
            let b = r.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            (code, String::from_utf8_lossy(&b).into_owned())
        }
        _ => (0, String::new()),
    }
}

/// A node whose data directory belongs to another cluster is refused, and its data is kept.
/// Garbage in another member key changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_and_garbage_members_are_refused_without_harm() {
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
