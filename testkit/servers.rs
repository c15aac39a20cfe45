//! Real servers for integration tests: etcd (and later Consul and PostgreSQL) as child processes
//! on 127.0.0.1, each on a free port with its own temporary directory, killed on drop.
//!
//! Not a crate: integration tests include this file with `#[path]`, so the workspace keeps its
//! fixed shape. Binaries are found through `SHIELD_ETCD_BIN` (and friends, exported by
//! `scripts/setup.sh`), then `$SHIELD_CACHE` or `~/.cache/shield`, then the checkout's
//! `.cache/servers/usr/bin`, then `PATH`. When one is missing a test
//! skips with a message, unless `SHIELD_REQUIRE_SERVERS=1` (set by `scripts/test.sh`), which
//! turns the skip into a failure.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a missing server must fail the test instead of skipping it.
pub fn servers_required() -> bool {
    std::env::var("SHIELD_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().find(|p| p.join("Cargo.lock").exists()).unwrap_or(here).to_path_buf()
}

/// Finds a server binary, or explains why the test is skipped (panicking when servers are
/// required).
pub fn find_bin(env_var: &str, name: &str) -> Option<PathBuf> {
    let home_cache = std::env::var_os("SHIELD_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/shield")));
    let candidates = [
        std::env::var_os(env_var).map(PathBuf::from),
        home_cache.map(|c| c.join("servers/usr/bin").join(name)),
        Some(workspace_root().join(".cache/servers/usr/bin").join(name)),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
    });
    if found.is_none() {
        let msg = format!("{name} not found (set {env_var} or run scripts/setup.sh)");
        if servers_required() {
            panic!("{msg}; SHIELD_REQUIRE_SERVERS=1 makes this a failure");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// A free TCP port on 127.0.0.1 (bound, then released).
///
/// Ports come from 20000-31999, below Linux's ephemeral range (32768-60999): a port the kernel
/// hands out for `bind(:0)` can be taken by the source port of any outgoing connection (to etcd,
/// say) before the server binds it, and two calls can return the same port. Each call here
/// returns a port no earlier call in this process returned, and that was free just now.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; start each at its own offset anyway.
    let start = (std::process::id() * 97) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = FIRST + (start + n) % SPAN;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port in 20000-31999 on 127.0.0.1");
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits i32"));
    nix::sys::signal::kill(pid, sig).expect("signal the server");
}

/// A server child process: killed (after a SIGCONT, in case it was frozen) on drop.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn new(child: Child) -> Proc {
        Proc { child: Some(child) }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// SIGSTOP: the process stops answering but keeps its sockets.
    pub fn freeze(&self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGSTOP);
    }

    /// SIGCONT.
    pub fn thaw(&self) {
        signal(self.pid(), nix::sys::signal::Signal::SIGCONT);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = signal_quiet(c.id(), nix::sys::signal::Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One etcd member.
pub struct Etcd {
    pub name: String,
    pub scheme: &'static str,
    pub client_port: u16,
    pub peer_port: u16,
    proc_: Proc,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    pub fn pid(&self) -> u32 {
        self.proc_.pid()
    }

    pub fn freeze(&self) {
        self.proc_.freeze();
    }

    pub fn thaw(&self) {
        self.proc_.thaw();
    }
}

fn signal_quiet(pid: u32, sig: nix::sys::signal::Signal) -> Result<(), nix::Error> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    nix::sys::signal::kill(pid, sig)
}

/// A test CA with a server certificate (for `localhost` and `127.0.0.1`) and a client
/// certificate, as PEM files in a temporary directory.
pub struct TestCerts {
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA cert");
        let write = |name: &str, pem: String| std::fs::write(dir.path().join(name), pem).expect("write PEM");
        write("ca.pem", ca.pem());
        let both = || vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        for (who, purposes) in [
            ("server", vec![ExtendedKeyUsagePurpose::ServerAuth]),
            ("client", vec![ExtendedKeyUsagePurpose::ClientAuth]),
            // A member's REST certificate: it serves, and it is presented to other members.
            ("node", both()),
        ] {
            let mut p = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).expect("params");
            p.extended_key_usages = purposes;
            let key = KeyPair::generate().expect("key");
            let cert = p.signed_by(&key, &ca).expect("sign");
            write(&format!("{who}.pem"), cert.pem());
            write(&format!("{who}-key.pem"), key.serialize_pem());
        }
        TestCerts { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).expect("read PEM")
    }
}

/// An etcd cluster of one or more members on loopback.
pub struct EtcdCluster {
    pub members: Vec<Etcd>,
    pub scheme: &'static str,
}

impl EtcdCluster {
    /// Starts `n` members, or returns None (test skipped) when etcd is not installed.
    pub fn start(n: usize) -> Option<EtcdCluster> {
        Self::start_with(n, None)
    }

    /// Starts `n` members serving clients over TLS with client-certificate authentication.
    pub fn start_tls(n: usize, certs: &TestCerts) -> Option<EtcdCluster> {
        Self::start_with(n, Some(certs))
    }

    fn start_with(n: usize, tls: Option<&TestCerts>) -> Option<EtcdCluster> {
        let bin = find_bin("SHIELD_ETCD_BIN", "etcd")?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> =
            ports.iter().enumerate().map(|(i, (_, pp))| format!("e{i}=http://127.0.0.1:{pp}")).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for (i, (cp, pp)) in ports.iter().enumerate() {
            let dir = tempfile::tempdir().expect("temp dir for etcd");
            let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log file");
            let mut cmd = Command::new(&bin);
            if let Some(c) = tls {
                cmd.arg(format!("--cert-file={}", c.path("server.pem").display()))
                    .arg(format!("--key-file={}", c.path("server-key.pem").display()))
                    .arg(format!("--trusted-ca-file={}", c.path("ca.pem").display()))
                    .arg("--client-cert-auth");
            }
            let child = cmd
                .arg(format!("--name=e{i}"))
                .arg(format!("--data-dir={}", dir.path().join("data").display()))
                .arg(format!("--listen-client-urls={scheme}://127.0.0.1:{cp}"))
                .arg(format!("--advertise-client-urls={scheme}://127.0.0.1:{cp}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{pp}"))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{pp}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=shield-test")
                .arg("--log-level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .expect("spawn etcd");
            members.push(Etcd {
                name: format!("e{i}"),
                scheme,
                client_port: *cp,
                peer_port: *pp,
                proc_: Proc::new(child),
                _dir: dir,
            });
        }
        for m in &members {
            assert!(wait_for_port(m.client_port, Duration::from_secs(20)), "etcd {} did not open its port", m.name);
        }
        Some(EtcdCluster { members, scheme })
    }

    /// Every client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Etcd::client_url).collect()
    }
}

/// A Consul agent in `-dev` mode (a single server) on loopback.
pub struct ConsulAgent {
    pub http_port: u16,
    proc_: Proc,
    _dir: tempfile::TempDir,
}

impl ConsulAgent {
    /// Starts an agent with `session_ttl_min` and extra HCL lines, or returns None (test skipped)
    /// when Consul is not installed.
    pub fn start(session_ttl_min: &str, extra_hcl: &[&str]) -> Option<ConsulAgent> {
        let bin = find_bin("SHIELD_CONSUL_BIN", "consul")?;
        let dir = tempfile::tempdir().expect("temp dir for consul");
        let (http, serf_lan, serf_wan, server) = (free_port(), free_port(), free_port(), free_port());
        let log = std::fs::File::create(dir.path().join("consul.log")).expect("consul log file");
        let mut cmd = Command::new(&bin);
        cmd.arg("agent")
            .arg("-dev")
            .arg("-bind=127.0.0.1")
            .arg("-client=127.0.0.1")
            .arg("-advertise=127.0.0.1")
            .arg(format!("-data-dir={}", dir.path().join("data").display()))
            .arg(format!("-hcl=ports {{ http = {http}, https = -1, dns = -1, grpc = -1, serf_lan = {serf_lan}, serf_wan = {serf_wan}, server = {server} }}"))
            .arg(format!("-hcl=session_ttl_min = \"{session_ttl_min}\""))
            .arg("-log-level=warn");
        for h in extra_hcl {
            cmd.arg(format!("-hcl={h}"));
        }
        let child = cmd
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn consul");
        let agent = ConsulAgent { http_port: http, proc_: Proc::new(child), _dir: dir };
        assert!(wait_for_port(http, Duration::from_secs(20)), "consul did not open its HTTP port");
        Some(agent)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn freeze(&self) {
        self.proc_.freeze();
    }

    pub fn thaw(&self) {
        self.proc_.thaw();
    }
}
