//! The etcd backend against real etcd 3.5 servers on loopback.

#[path = "../../testkit/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use servers::EtcdCluster;
use shield_core::cluster::{MemberData, MemberRole};
use shield_core::ports::{Dcs, DcsKey, ErrorKind};
use shield_core::testing::{run_dcs_conformance, DcsHarness};
use shield_core::{Lsn, MemberName, Revision, SystemId, Timeline};
use shield_dcs_etcd::{EtcdConfig, EtcdDcs, EtcdTls, KeepAliveMode};

const TTL_MS: u64 = 2_000;
const RETRY_MS: u64 = 1_000;

fn name(s: &str) -> MemberName {
    MemberName::new(s).expect("valid name")
}

fn dcs(endpoints: &[String], scope: &str, member: &str) -> EtcdDcs {
    let mut cfg = EtcdConfig::new(endpoints.to_vec(), scope, name(member));
    cfg.ttl_ms = TTL_MS;
    cfg.retry_timeout_ms = RETRY_MS;
    EtcdDcs::new(cfg)
}

/// Waits until the cluster answers reads (a leader is elected).
async fn ready(endpoints: &[String]) {
    let d = dcs(endpoints, "ready", "probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if d.read().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("etcd at {endpoints:?} never became ready");
}

struct Harness {
    endpoints: Vec<String>,
    mode: KeepAliveMode,
    cache: bool,
}

#[async_trait]
impl DcsHarness for Harness {
    type Client = EtcdDcs;
    async fn client(&self, scope: &str, member: &str) -> EtcdDcs {
        let scope = format!("{scope}-{:?}-{}", self.mode, self.cache).to_lowercase();
        let mut cfg = EtcdConfig::new(self.endpoints.clone(), &scope, name(member));
        cfg.ttl_ms = TTL_MS;
        cfg.retry_timeout_ms = RETRY_MS;
        cfg.keepalive = self.mode;
        cfg.cache_view = self.cache;
        EtcdDcs::new(cfg)
    }
    async fn pass_time(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    fn ttl_ms(&self) -> u64 {
        TTL_MS
    }
    fn expiry_slack_ms(&self) -> u64 {
        // etcd revokes expired leases from a loop that runs every 500 ms.
        1_000
    }
    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) {
        let prefix = self.client(scope, "raw").await.prefix().to_owned();
        let mut raw = etcd_client::Client::connect(self.endpoints.clone(), None).await.expect("raw client");
        raw.put(format!("{prefix}{key}"), value, None).await.expect("raw put");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_single_node() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    ready(&etcd.endpoints()).await;
    for (mode, cache) in [(KeepAliveMode::Unary, false), (KeepAliveMode::Stream, false), (KeepAliveMode::Stream, true)]
    {
        let h = Harness { endpoints: etcd.endpoints(), mode, cache };
        run_dcs_conformance(&h).await.unwrap_or_else(|e| panic!("{mode:?}, cache {cache}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_three_node_cluster() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    ready(&etcd.endpoints()).await;
    for (mode, cache) in [(KeepAliveMode::Unary, false), (KeepAliveMode::Stream, true)] {
        let h = Harness { endpoints: etcd.endpoints(), mode, cache };
        run_dcs_conformance(&h).await.unwrap_or_else(|e| panic!("3 members, {mode:?}, cache {cache}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_removes_keys_and_wakes_a_watcher() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let a = dcs(&eps, "expiry", "a");
    let b = dcs(&eps, "expiry", "b");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.expect("touch");
    a.renew_leader(TTL_MS).await.expect("renew");
    let last_renewal = Instant::now();
    let rev = b.read().await.expect("read").revision;
    // a stops renewing; b watches.
    let w = b.watch(rev, 10_000).await.expect("watch");
    let seen = last_renewal.elapsed();
    let v = b.read().await.expect("read");
    assert!(w.revision > rev);
    assert!(v.leader.is_none(), "leader key still there after {seen:?}");
    assert!(!v.members.contains_key(&name("a")));
    println!(
        "etcd lease expiry: watcher saw the leader key vanish {} ms after the last renewal (ttl {TTL_MS} ms)",
        seen.as_millis()
    );
    assert!(seen >= Duration::from_millis(TTL_MS - 100), "expired early: {seen:?}");
    assert!(seen <= Duration::from_millis(TTL_MS + 1_500), "expired late: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_etcd_is_unreachable_within_retry_timeout_and_recovers() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let a = dcs(&eps, "freeze", "a");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    etcd.members[0].freeze();
    for op in ["read", "renew"] {
        let t = Instant::now();
        let kind = match op {
            "read" => a.read().await.map(|_| ()).map_err(|e| e.kind),
            _ => a.renew_leader(TTL_MS).await.map_err(|e| e.kind),
        };
        let took = t.elapsed();
        assert_eq!(kind, Err(ErrorKind::Unreachable), "{op} while frozen");
        assert!(took <= Duration::from_millis(RETRY_MS + 300), "{op} took {took:?}");
    }
    etcd.members[0].thaw();
    // The freeze outlasted the lease, so etcd expires it on waking: the old lock is gone (the
    // daemon has fenced by then) and the same handle takes it again under a new lease, with no
    // manual step.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = match a.renew_leader(TTL_MS).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == ErrorKind::LeaseLost => a.acquire_leader(TTL_MS).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(true) => break,
            Ok(false) => panic!("someone else holds the lock"),
            Err(e) if Instant::now() < deadline => eprintln!("after thaw: {e}"),
            Err(e) => panic!("no recovery after SIGCONT: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a.read().await.expect("read").is_leader(&name("a")));
    a.renew_leader(TTL_MS).await.expect("renewal works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_survives_a_frozen_member_and_fails_without_quorum() {
    let Some(etcd) = EtcdCluster::start(3) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let a = dcs(&eps, "quorum", "a");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    // One member frozen: the majority serves; a call may time out once while the client routes
    // around the frozen member, then service resumes with no manual step.
    etcd.members[0].freeze();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let t = Instant::now();
        let r = a.renew_leader(TTL_MS).await;
        assert!(t.elapsed() <= Duration::from_millis(RETRY_MS + 300), "call took {:?}", t.elapsed());
        match r {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => assert_eq!(e.kind, ErrorKind::Unreachable, "{e}"),
            Err(e) => panic!("majority did not serve with one member frozen: {e}"),
        }
    }
    // Two of three frozen: no quorum. Writes fail as unreachable, in bounded time.
    etcd.members[1].freeze();
    // The surviving member may answer for up to an election timeout (1 s) before it notices the
    // lost quorum and steps down, and a single failure right after the freeze can be the client
    // timing out on the member just frozen while the survivor still serves. So wait for three
    // failures in a row (bounded), and from then on every call must fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut failures_in_a_row = 0;
    while failures_in_a_row < 3 {
        assert!(Instant::now() < deadline, "writes still succeed 10 s after quorum was lost");
        match a.renew_leader(TTL_MS).await {
            Ok(()) => failures_in_a_row = 0,
            Err(_) => failures_in_a_row += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..3 {
        let t = Instant::now();
        let r = a.renew_leader(TTL_MS).await;
        assert_eq!(r.map_err(|e| e.kind), Err(ErrorKind::Unreachable));
        assert!(t.elapsed() <= Duration::from_millis(RETRY_MS + 300), "call took {:?}", t.elapsed());
        let w = a.write_cas(DcsKey::Failover, "{}", None).await;
        assert_eq!(w.map_err(|e| e.kind), Err(ErrorKind::Unreachable));
    }
    etcd.members[0].thaw();
    etcd.members[1].thaw();
}

/// Patroni writes these values; Shield must read them, and write the same shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_formats_round_trip_through_etcd() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    let p = "/service/batman/";
    let fixtures = [
        ("initialize", "7277694203142172922".to_owned()),
        ("config", json!({"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true}}).to_string()),
        ("leader", "postgresql0".to_owned()),
        ("members/postgresql0", json!({"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.3.1","xlog_location":67110040,"timeline":5}).to_string()),
        ("failover", json!({"leader":"postgresql0","member":"postgresql1","scheduled_at":"2024-07-02T17:06:00+02:00"}).to_string()),
        ("history", json!([[1,25165984,"no recovery target specified","2024-07-02T10:00:00+00:00","postgresql1"]]).to_string()),
        ("status", json!({"optime":67110040,"slots":{"postgresql1":67110040}}).to_string()),
        ("sync", json!({"leader":"postgresql0","sync_standby":"postgresql1"}).to_string()),
    ];
    for (k, v) in &fixtures {
        raw.put(format!("{p}{k}"), v.as_str(), None).await.expect("raw put");
    }
    let d = dcs(&eps, "batman", "postgresql1");
    let v = d.read().await.expect("read");
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
    assert_eq!(v.system_id(), Some(SystemId(7277694203142172922)));
    assert!(v.is_leader(&name("postgresql0")));
    assert_eq!(v.members[&name("postgresql0")].data.role, MemberRole::Primary);
    assert_eq!(v.members[&name("postgresql0")].data.timeline, Some(Timeline(5)));
    assert_eq!(v.failover.as_ref().and_then(|f| f.member.clone()), Some(name("postgresql1")));
    assert_eq!(v.history[0].new_leader.as_deref(), Some("postgresql1"));
    assert_eq!(v.optime(), Some(Lsn(67110040)));
    assert_eq!(v.sync.as_ref().map(|s| s.sync_standby.clone()), Some(vec![name("postgresql1")]));
    assert!(v.config.as_ref().is_some_and(|c| c.0.postgresql.use_pg_rewind));

    // What Shield writes is what Patroni writes.
    let mut m = MemberData::new(MemberRole::Replica, "running");
    m.conn_url = Some("postgres://127.0.0.1:5433/postgres".into());
    m.xlog_location = Some(Lsn(67110040));
    m.timeline = Some(Timeline(5));
    d.touch_member(&m).await.expect("touch");
    let got = raw.get(format!("{p}members/postgresql1"), None).await.expect("raw get");
    let kv = &got.kvs()[0];
    assert_ne!(kv.lease(), 0, "member key must be bound to the node's lease");
    let member: serde_json::Value = serde_json::from_slice(kv.value()).expect("member JSON");
    assert_eq!(member["role"], "replica");
    assert_eq!(member["xlog_location"], 67110040);
    assert_eq!(member["conn_url"], "postgres://127.0.0.1:5433/postgres");
    let rev = v.failover_revision.expect("failover revision");
    d.delete_cas(DcsKey::Failover, rev).await.expect("clear failover");
    d.write_status(&shield_core::cluster::Status { optime: shield_core::Lsn(1), ..Default::default() })
        .await
        .expect("status");
    let leader = raw.get(format!("{p}leader"), None).await.expect("raw get");
    assert_eq!(leader.kvs()[0].value(), b"postgresql0", "the leader key holds the plain name");
    assert_eq!(d.renew_leader(TTL_MS).await.map_err(|e| e.kind), Err(ErrorKind::LeaseLost), "not ours");
    assert_eq!(d.acquire_leader(TTL_MS).await, Ok(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_values_are_reported_never_fatal() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    let p = "/service/junk/";
    let garbage: [(&str, &[u8]); 9] = [
        ("members/bad-json", b"{not json"),
        ("members/wrong-types", br#"{"role":7,"state":["x"],"timeline":"five","xlog_location":{"a":1}}"#),
        ("members/binary", b"\xff\xfe\x00\x01"),
        ("leader", b""),
        ("config", br#"{"ttl":"soon"}"#),
        ("failover", br#"{"member":17}"#),
        ("history", br#"{"not":"a list"}"#),
        ("status", b"optime"),
        ("initialize", b"not-a-number"),
    ];
    for (k, v) in garbage {
        raw.put(format!("{p}{k}"), v, None).await.expect("raw put");
    }
    let good = dcs(&eps, "junk", "good");
    good.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.expect("touch");
    let v = good.read().await.expect("a bad key must not fail the read");
    assert_eq!(v.members.len(), 4, "every member shown: {:?}", v.members.keys().collect::<Vec<_>>());
    assert_eq!(v.members[&name("bad-json")].data.state, "unknown");
    assert_eq!(v.members[&name("good")].data.state, "running");
    assert!(v.leader.is_some() && v.leader_name().is_none(), "an empty leader is a typed anomaly");
    assert_eq!(v.anomalies.len(), 8, "{:#?}", v.anomalies);
    // An empty leader value blocks acquisition (the key exists) but not renewal errors.
    assert_eq!(good.acquire_leader(TTL_MS).await, Ok(false));
    assert_eq!(good.renew_leader(TTL_MS).await.map_err(|e| e.kind), Err(ErrorKind::LeaseLost));
}

/// Megabytes of keys nobody parses under the prefix: over gRPC's default 4 MiB answer limit
/// (a plain prefix read with etcd-client's defaults fails), and more keys than one page. The
/// backend still reads the cluster, in pages at one revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_over_four_mib_of_junk_is_still_read() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    let p = "/service/big/";
    let a = dcs(&eps, "big", "a");
    a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.expect("touch a");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    let big = vec![b'x'; 1 << 20];
    for i in 0..6 {
        raw.put(format!("{p}junk/big-{i}"), big.clone(), None).await.expect("put 1 MiB");
    }
    for chunk in 0..12 {
        let puts: Vec<etcd_client::TxnOp> = (0..100)
            .map(|i| etcd_client::TxnOp::put(format!("{p}junk/small-{chunk:02}-{i:03}"), "junk", None))
            .collect();
        raw.txn(etcd_client::Txn::new().and_then(puts)).await.expect("put small keys");
    }
    let b = dcs(&eps, "big", "b");
    b.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.expect("touch b");
    // The premise: etcd-client's default limit cannot read this prefix in one answer.
    let plain = raw.get(p, Some(etcd_client::GetOptions::new().with_prefix())).await;
    assert!(plain.is_err(), "a plain read of over 4 MiB succeeded; the test shows nothing");
    let v = b.read().await.expect("the cluster read must not fail on junk");
    assert_eq!(v.leader_name(), Some(&name("a")));
    assert_eq!(v.members.keys().cloned().collect::<Vec<_>>(), vec![name("a"), name("b")]);
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
    assert!(a.renew_leader(TTL_MS).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password_auth() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    raw.user_add("root", "rootpw", None).await.expect("add root");
    raw.user_grant_role("root", "root").await.expect("grant root");
    raw.role_add("shield").await.expect("role");
    let perm = etcd_client::Permission::read_write("/service/authz/").with_prefix();
    raw.role_grant_permission("shield", perm).await.expect("grant");
    raw.user_add("shield", "s3cret", None).await.expect("add user");
    raw.user_grant_role("shield", "shield").await.expect("grant role");
    raw.auth_enable().await.expect("auth enable");

    let mut cfg = EtcdConfig::new(eps.clone(), "authz", name("a"));
    cfg.retry_timeout_ms = RETRY_MS;
    cfg.auth = Some(("shield".into(), "s3cret".into()));
    let ok = EtcdDcs::new(cfg.clone());
    assert_eq!(ok.acquire_leader(TTL_MS).await, Ok(true));
    assert!(ok.read().await.expect("read").is_leader(&name("a")));

    cfg.auth = Some(("shield".into(), "wrong".into()));
    let bad = EtcdDcs::new(cfg.clone());
    let e = bad.read().await.expect_err("wrong password must fail");
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");

    cfg.auth = Some(("shield".into(), "s3cret".into()));
    cfg.scope = "elsewhere".into();
    let e = EtcdDcs::new(cfg).write_cas(DcsKey::Config, "{}", None).await.expect_err("outside its prefix");
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_revision_and_reports_compaction() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let a = dcs(&eps, "compact", "a");
    let old = a.read().await.expect("read").revision;
    // Changes made while nobody watched are delivered when the watch resumes from `old`.
    a.write_history(&[]).await.expect("put");
    let w = a.watch(old, 5_000).await.expect("resumed watch");
    assert!(w.revision > old);
    // Nothing new: the watch times out and reports the revision it was given.
    let now = a.read().await.expect("read").revision;
    let t = Instant::now();
    assert_eq!(a.watch(now, 300).await.expect("idle watch").revision, now);
    assert!(t.elapsed() >= Duration::from_millis(250));
    // History compacted past `old`: the watch answers at once, so the caller re-reads.
    for i in 0..5 {
        let status = shield_core::cluster::Status { optime: shield_core::Lsn(i), ..Default::default() };
        a.write_status(&status).await.expect("put");
    }
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    let head = a.read().await.expect("read").revision;
    raw.compact(head.to_etcd().expect("etcd revision"), None).await.expect("compact");
    let t = Instant::now();
    let w = a.watch(old, 5_000).await.expect("watch after compaction");
    assert!(w.revision > old && t.elapsed() < Duration::from_secs(2), "{w:?} after {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_and_client_certificate() {
    let certs = servers::TestCerts::generate();
    let Some(etcd) = EtcdCluster::start_tls(1, &certs) else { return };
    let eps = etcd.endpoints();
    assert!(eps[0].starts_with("https://"));
    let mut cfg = EtcdConfig::new(eps.clone(), "tls", name("a"));
    cfg.retry_timeout_ms = 3_000;
    cfg.tls = Some(EtcdTls {
        ca_pem: Some(certs.read("ca.pem")),
        client_cert_key_pem: Some((certs.read("client.pem"), certs.read("client-key.pem"))),
        domain: Some("localhost".into()),
    });
    let ok = EtcdDcs::new(cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ok.acquire_leader(TTL_MS).await {
            Ok(won) => {
                assert!(won);
                break;
            }
            Err(e) if Instant::now() < deadline => eprintln!("waiting for etcd over TLS: {e}"),
            Err(e) => panic!("TLS connection failed: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok.read().await.expect("read over TLS").is_leader(&name("a")));
    // Without the client certificate the server refuses the handshake.
    cfg.tls = Some(EtcdTls {
        ca_pem: Some(certs.read("ca.pem")),
        client_cert_key_pem: None,
        domain: Some("localhost".into()),
    });
    assert!(EtcdDcs::new(cfg).read().await.is_err(), "a client without a certificate must be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoints_fail_fast() {
    let port = servers::free_port();
    let d = dcs(&[format!("http://127.0.0.1:{port}")], "none", "a");
    let t = Instant::now();
    let e = d.read().await.expect_err("nothing listens there");
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(t.elapsed() <= Duration::from_millis(RETRY_MS + 300), "took {:?}", t.elapsed());
    let _ = Revision(0);
}

/// etcd's count of gRPC messages received, by method, from its `/metrics` (plain HTTP on the
/// client port).
async fn etcd_messages(endpoint: &str) -> std::collections::BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("metrics connect");
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.expect("send");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("metrics");
    let mut out = std::collections::BTreeMap::new();
    for l in body.lines().filter(|l| l.starts_with("grpc_server_msg_received_total{")) {
        let method = l.split("grpc_method=\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or("?");
        let n: f64 = l.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        *out.entry(method.to_owned()).or_insert(0.0) += n;
    }
    out
}

fn cached(endpoints: &[String], scope: &str, member: &str) -> EtcdDcs {
    let mut cfg = EtcdConfig::new(endpoints.to_vec(), scope, name(member));
    cfg.ttl_ms = TTL_MS;
    cfg.retry_timeout_ms = RETRY_MS;
    cfg.cache_view = true;
    EtcdDcs::new(cfg)
}

/// Issue 18: with the watched view, a leader's cycle (renew, touch, read, unchanged status) and
/// a member's (touch, read) cost one keep-alive each, and the watch is one stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_cycle_costs_one_request_per_member() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let (a, b) = (cached(&eps, "quiet", "a"), cached(&eps, "quiet", "b"));
    let (da, db) = (MemberData::new(MemberRole::Primary, "running"), MemberData::new(MemberRole::Replica, "streaming"));
    let status = shield_core::cluster::Status { optime: Lsn(7), ..Default::default() };
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    let cycle = |first: bool| {
        let (a, b, da, db, status) = (&a, &b, &da, &db, &status);
        async move {
            a.renew_leader(TTL_MS).await.expect("renew");
            a.touch_member(da).await.expect("touch a");
            let v = a.read().await.expect("read a");
            if first || v.status.as_ref() != Some(status) {
                a.write_status(status).await.expect("status");
            }
            b.touch_member(db).await.expect("touch b");
            let v = b.read().await.expect("read b");
            assert!(v.is_leader(&name("a")), "b sees a as leader");
        }
    };
    for i in 0..3 {
        cycle(i == 0).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let before = etcd_messages(&eps[0]).await;
    let cycles = 10;
    for _ in 0..cycles {
        cycle(false).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let after = etcd_messages(&eps[0]).await;
    let delta: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    let total: f64 = delta.iter().map(|(_, d)| d).sum();
    println!("etcd messages received over {cycles} cycles of a leader and a member: {total} {delta:?}");
    assert!(total <= f64::from(2 * cycles) + 2.0, "more than one request per member per cycle: {delta:?}");
    assert!(delta.iter().all(|(m, _)| m == "LeaseKeepAlive" || m == "Watch"), "{delta:?}");
}

/// The watched view wakes a watcher at once when the leader key goes, resumes after the
/// connection drops, and a leader whose key was deleted behind its back learns it at its next
/// renewal (the view is caught up to the renewal's revision first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watched_view_follows_deletes_and_fences_a_deleted_leader() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let (a, b) = (cached(&eps, "follow", "a"), cached(&eps, "follow", "b"));
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    a.renew_leader(TTL_MS).await.expect("renew");
    let rev = b.read().await.expect("read").revision;
    assert!(b.read().await.expect("read").is_leader(&name("a")));
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    let t = Instant::now();
    let waker = tokio::spawn(async move {
        let w = b.watch(rev, 5_000).await.expect("watch");
        (w, b.read().await.expect("read"), t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    raw.delete(format!("{}leader", a.prefix()), None).await.expect("delete leader");
    let (w, v, took) = waker.await.expect("join");
    assert!(w.revision > rev && v.leader.is_none(), "{w:?} {v:?}");
    assert!(took < Duration::from_millis(1_000), "the watcher woke after {took:?}");
    let r = a.renew_leader(TTL_MS).await;
    assert_eq!(r.map_err(|e| e.kind), Err(ErrorKind::LeaseLost));
    // A write by another client after the renewal's check: a's next read shows it.
    raw.put(format!("{}config", a.prefix()), r#"{"ttl":30}"#, None).await.expect("put config");
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.read().await.expect("read").config.is_none() {
        assert!(Instant::now() < deadline, "the view never showed the new config");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A leader's renewal checks the watched view only once the view holds everything up to the
/// renewal. A view that lags (each watch answer applied 300 ms late, as over a slow link) must
/// never vouch for a leader key another client deleted just before: the renewal fails. This is
/// the fire test of that wait: without it the stale view still shows the key and renewal passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_view_never_vouches_for_a_deleted_leader_key() {
    let Some(etcd) = EtcdCluster::start(1) else { return };
    let eps = etcd.endpoints();
    ready(&eps).await;
    let mut cfg = EtcdConfig::new(eps.to_vec(), "lag", name("a"));
    cfg.ttl_ms = TTL_MS;
    cfg.retry_timeout_ms = RETRY_MS;
    cfg.cache_view = true;
    cfg.view_lag_for_tests = Duration::from_millis(300);
    let a = EtcdDcs::new(cfg);
    let mut raw = etcd_client::Client::connect(&eps, None).await.expect("raw client");
    a.read().await.expect("first read (starts the view)");
    for round in 0..3 {
        assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true), "round {round}");
        // The view shows the key as ours: from here on, a stale view would vouch for it.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(a.read().await.expect("read").is_leader(&name("a")), "round {round}");
        // Twice: the first renewal may open the keep-alive stream, which answers no revision.
        a.renew_leader(TTL_MS).await.expect("renewal while the key is ours");
        a.renew_leader(TTL_MS).await.expect("renewal while the key is ours");
        raw.delete(format!("{}leader", a.prefix()), None).await.expect("delete leader");
        let r = a.renew_leader(TTL_MS).await;
        assert_eq!(r.map_err(|e| e.kind), Err(ErrorKind::LeaseLost), "round {round}: renewed a deleted key");
    }
}
