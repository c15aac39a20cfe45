//! The Consul backend against a real Consul 1.8 agent (`consul agent -dev`) on loopback.

#[path = "../../testkit/servers.rs"]
mod servers;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use servers::ConsulAgent;
use shield_core::cluster::{MemberData, MemberRole, Status};
use shield_core::ports::{Dcs, DcsKey, ErrorKind};
use shield_core::testing::{run_dcs_conformance, DcsHarness};
use shield_core::{Lsn, MemberName, SystemId};
use shield_dcs_consul::{ConsulConfig, ConsulDcs, ServiceRegistration};

const TTL_MS: u64 = 4_000;
const RETRY_MS: u64 = 1_000;

fn name(s: &str) -> MemberName {
    MemberName::new(s).expect("valid name")
}

fn dcs(url: &str, scope: &str, member: &str) -> ConsulDcs {
    let mut cfg = ConsulConfig::new(url, scope, name(member));
    cfg.ttl_ms = TTL_MS;
    cfg.retry_timeout_ms = RETRY_MS;
    ConsulDcs::new(cfg)
}

/// A handle with `cache_view` on, as the daemon makes it.
fn cached(url: &str, scope: &str, member: &str) -> ConsulDcs {
    let mut cfg = ConsulConfig::new(url, scope, name(member));
    cfg.ttl_ms = TTL_MS;
    cfg.retry_timeout_ms = RETRY_MS;
    cfg.cache_view = true;
    ConsulDcs::new(cfg)
}

/// Requests a handle sent other than its cache loop's blocking queries.
fn direct(d: &ConsulDcs) -> u64 {
    d.requests_sent() - d.cache_queries_sent()
}

/// Reads until a read is served by the live cache (no direct request), within 5 s.
async fn warm(d: &ConsulDcs) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let before = direct(d);
        d.read().await.expect("read");
        if direct(d) == before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the cache never served a read");
}

/// Waits until the agent has a leader and answers KV calls.
async fn ready(url: &str) {
    let d = dcs(url, "ready", "probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    // Ready for KV first, then for sessions: a freshly started agent serves KV before its
    // serfHealth check passes, and a session (the leader lock) cannot be created until it does.
    while Instant::now() < deadline {
        if d.create_initialize(None).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while Instant::now() < deadline {
        if d.acquire_leader(4_000).await == Ok(true) {
            let _ = d.release_leader().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("consul at {url} never became ready");
}

async fn raw_put(url: &str, key: &str, value: &[u8]) {
    let d = dcs(url, "raw", "raw");
    let _ = &d;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = hyper::Request::put(format!("{url}/v1/kv/{key}"))
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(value)))
        .expect("request");
    let resp = client.request(req).await.expect("raw put");
    assert!(resp.status().is_success(), "raw put {key}: {}", resp.status());
}

struct Harness {
    url: String,
}

#[async_trait]
impl DcsHarness for Harness {
    type Client = ConsulDcs;
    async fn client(&self, scope: &str, member: &str) -> ConsulDcs {
        dcs(&self.url, scope, member)
    }
    async fn pass_time(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    fn ttl_ms(&self) -> u64 {
        TTL_MS
    }
    fn expiry_slack_ms(&self) -> u64 {
        // Consul invalidates between TTL (ttl/2) and 2×TTL (ttl); then the lock-delay (ttl/2).
        TTL_MS / 2 + 2_000
    }
    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) {
        let prefix = dcs(&self.url, scope, "raw").prefix().to_owned();
        raw_put(&self.url, &format!("{prefix}{key}"), value).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    ready(&agent.url()).await;
    run_dcs_conformance(&Harness { url: agent.url() }).await.expect("conformance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_with_the_cached_view() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    ready(&agent.url()).await;
    run_dcs_conformance(&CachedHarness(Harness { url: agent.url() })).await.expect("conformance, cache_view on");
}

/// The conformance suite with `cache_view` on. A handle reads its own writes at once; another
/// handle's show once the answer of its blocking query has arrived (a few ms), which the suite
/// allows for by reading again until they show (up to 2 s).
struct CachedHarness(Harness);

#[async_trait]
impl DcsHarness for CachedHarness {
    type Client = ConsulDcs;
    async fn client(&self, scope: &str, member: &str) -> ConsulDcs {
        cached(&self.0.url, scope, member)
    }
    async fn pass_time(&self, ms: u64) {
        self.0.pass_time(ms).await;
    }
    fn ttl_ms(&self) -> u64 {
        self.0.ttl_ms()
    }
    fn expiry_slack_ms(&self) -> u64 {
        self.0.expiry_slack_ms()
    }
    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) {
        self.0.put_raw(scope, key, value).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_deletes_keys_and_wakes_a_watcher() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = dcs(&url, "expiry", "a");
    let b = dcs(&url, "expiry", "b");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.expect("touch");
    a.renew_leader(TTL_MS).await.expect("renew");
    let last = Instant::now();
    let mut rev = b.read().await.expect("read").revision;
    loop {
        let w = b.watch(rev, 10_000).await.expect("watch");
        rev = w.revision;
        if b.read().await.expect("read").leader.is_none() || last.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    let seen = last.elapsed();
    let v = b.read().await.expect("read");
    assert!(v.leader.is_none() && !v.members.contains_key(&name("a")), "keys outlived the session");
    println!(
        "consul session expiry: watcher saw the leader key vanish {} ms after the last renewal (session TTL {} s, ttl {TTL_MS} ms)",
        seen.as_millis(),
        a.session_ttl_s().await
    );
    assert!(seen >= Duration::from_millis(TTL_MS / 2), "invalidated before the session TTL: {seen:?}");
    assert!(seen <= Duration::from_millis(TTL_MS + 1_500), "invalidated late: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_keeps_an_invalidated_lock_from_being_retaken_early() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = dcs(&url, "delay", "a");
    let b = dcs(&url, "delay", "b");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    // Invalidating the session (as expiry does) starts the lock-delay of ttl/2.
    a.destroy_session().await.expect("destroy");
    let t = Instant::now();
    assert!(b.read().await.expect("read").leader.is_none(), "behavior=delete removes the key");
    assert_eq!(b.acquire_leader(TTL_MS).await, Ok(false), "re-acquired inside the lock-delay");
    let mut got = false;
    while t.elapsed() < Duration::from_millis(TTL_MS) {
        if b.acquire_leader(TTL_MS).await == Ok(true) {
            got = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = t.elapsed();
    assert!(got, "lock never freed");
    println!("consul lock-delay: the lock was free again {} ms after invalidation", after.as_millis());
    assert!(after >= Duration::from_millis(TTL_MS / 2 - 200), "lock-delay too short: {after:?}");
    // An explicit release has no lock-delay.
    b.release_leader().await.expect("release");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_session_ttl_is_raised_to_the_agents_minimum() {
    let Some(agent) = ConsulAgent::start("5s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = dcs(&url, "minttl", "a");
    assert_eq!(a.session_ttl_s().await, 2);
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true), "the raised TTL is accepted");
    assert_eq!(a.session_ttl_s().await, 5);
    assert!(a.session_alive().await.expect("info"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_agent_is_unreachable_within_retry_timeout_and_recovers() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = dcs(&url, "freeze", "a");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    agent.freeze();
    for op in ["read", "renew"] {
        let t = Instant::now();
        let r = match op {
            "read" => a.read().await.map(|_| ()),
            _ => a.renew_leader(TTL_MS).await,
        };
        assert_eq!(r.map_err(|e| e.kind), Err(ErrorKind::Unreachable), "{op} while frozen");
        assert!(t.elapsed() <= Duration::from_millis(RETRY_MS + 300), "{op} took {:?}", t.elapsed());
    }
    agent.thaw();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = match a.renew_leader(TTL_MS).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind == ErrorKind::LeaseLost => a.acquire_leader(TTL_MS).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(true) => break,
            Ok(false) | Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("no recovery after SIGCONT: {other:?}"),
        }
    }
    assert!(a.read().await.expect("read").is_leader(&name("a")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_formats_and_garbage() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let p = "service/batman";
    raw_put(&url, &format!("{p}/initialize"), b"7277694203142172922").await;
    raw_put(&url, &format!("{p}/members/postgresql0"), br#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","xlog_location":67110040,"timeline":5}"#).await;
    raw_put(
        &url,
        &format!("{p}/history"),
        br#"[[1,25165984,"no recovery target specified","2024-07-02T10:00:00+00:00","postgresql0"]]"#,
    )
    .await;
    raw_put(&url, &format!("{p}/status"), br#"{"optime":67110040,"slots":{}}"#).await;
    let d = dcs(&url, "batman", "postgresql1");
    let v = d.read().await.expect("read");
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
    assert_eq!(v.system_id(), Some(SystemId(7277694203142172922)));
    assert_eq!(v.members[&name("postgresql0")].data.role, MemberRole::Primary);
    assert_eq!(v.optime(), Some(Lsn(67110040)));
    assert_eq!(v.history.len(), 1);

    // Garbage, including a value that is not UTF-8: reported, never fatal.
    raw_put(&url, &format!("{p}/members/binary"), b"\xff\xfe\x00").await;
    raw_put(&url, &format!("{p}/members/bad"), b"{nope").await;
    raw_put(&url, &format!("{p}/config"), br#"{"ttl":[]}"#).await;
    raw_put(&url, &format!("{p}/leader"), b"").await;
    let v = d.read().await.expect("a bad key must not fail the read");
    assert_eq!(v.members.len(), 3, "{:?}", v.members.keys().collect::<Vec<_>>());
    assert_eq!(v.members[&name("binary")].data.state, "unknown");
    assert!(v.leader.is_some() && v.leader_name().is_none());
    assert_eq!(v.anomalies.len(), 4, "{:#?}", v.anomalies);
    // The leader key exists (empty, no session): acquire with our session may take it, as Consul
    // locks a key that no session holds. Either way nothing panics and the answer is typed.
    assert!(d.acquire_leader(TTL_MS).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_an_empty_prefix_blocks_until_its_wait() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    for d in [dcs(&url, "nothing-here", "a"), cached(&url, "nothing-here", "b")] {
        let v = d.read().await.expect("read of a missing prefix");
        assert!(v.members.is_empty());
        if d.cache_queries_sent() > 0 {
            // The cache's blocking query on the missing prefix (a 404 with an index) blocks too.
            warm(&d).await;
        }
        let v = d.read().await.expect("read of a missing prefix");
        let (t, before) = (Instant::now(), direct(&d));
        let w = d.watch(v.revision, 1_000).await.expect("watch");
        assert!(t.elapsed() >= Duration::from_millis(900), "returned after {:?}", t.elapsed());
        assert!(w.revision.0 >= v.revision.0);
        if d.cache_queries_sent() > 0 {
            assert_eq!(direct(&d), before, "a cached watch sent a request");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_token_is_required_and_used() {
    let acl = r#"acl { enabled = true, default_policy = "deny", tokens { master = "root-token" } }"#;
    let Some(agent) = ConsulAgent::start("1s", &[acl]) else { return };
    let url = agent.url();
    let mut cfg = ConsulConfig::new(&url, "acl", name("a"));
    cfg.retry_timeout_ms = RETRY_MS;
    cfg.token = Some("root-token".into());
    let with = ConsulDcs::new(cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match with.acquire_leader(TTL_MS).await {
            Ok(true) => break,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("with the token: {other:?}"),
        }
    }
    cfg.token = None;
    let without = ConsulDcs::new(cfg);
    let e = without.write_cas(DcsKey::Config, "{}", None).await.expect_err("no token");
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_registration_tags_the_role() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let d = dcs(&url, "Halo_Cluster", "node1");
    let reg = ServiceRegistration {
        role: "primary".into(),
        host: "127.0.0.1".into(),
        port: 1921,
        api_base: "http://127.0.0.1:8008".into(),
        check_interval_s: 5,
        extra_tags: vec!["dc1".into()],
    };
    d.register_service(&reg).await.expect("register");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp =
        client.get(format!("{url}/v1/catalog/service/halo-cluster").parse().expect("uri")).await.expect("catalog");
    use http_body_util::BodyExt as _;
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let list: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let svc = &list[0];
    assert_eq!(svc["ServiceID"], "Halo_Cluster/node1");
    assert_eq!(svc["ServicePort"], 1921);
    let tags: Vec<&str> = svc["ServiceTags"].as_array().expect("tags").iter().filter_map(|t| t.as_str()).collect();
    assert_eq!(tags, vec!["primary", "master", "dc1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_ca_and_client_certificate() {
    let certs = servers::TestCerts::generate();
    let https = servers::free_port();
    let hcl = [
        format!("ports {{ https = {https} }}"),
        format!("ca_file = \"{}\"", certs.path("ca.pem").display()),
        format!("cert_file = \"{}\"", certs.path("server.pem").display()),
        format!("key_file = \"{}\"", certs.path("server-key.pem").display()),
        "verify_incoming_https = true".to_owned(),
    ];
    let hcl: Vec<&str> = hcl.iter().map(String::as_str).collect();
    let Some(_agent) = ConsulAgent::start("1s", &hcl) else { return };
    assert!(servers::wait_for_port(https, Duration::from_secs(20)), "no https port");
    let url = format!("https://localhost:{https}");
    let client = shield_dcs_consul::tls_client(
        &certs.read("ca.pem"),
        Some((&certs.read("client.pem"), &certs.read("client-key.pem"))),
    )
    .expect("TLS client");
    let mut cfg = ConsulConfig::new(&url, "tls", name("a"));
    cfg.retry_timeout_ms = 3_000;
    cfg.client = Some(client);
    let d = ConsulDcs::new(cfg.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match d.acquire_leader(TTL_MS).await {
            Ok(true) => break,
            other if Instant::now() < deadline => {
                eprintln!("waiting for consul over TLS: {other:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            other => panic!("TLS: {other:?}"),
        }
    }
    assert!(d.read().await.expect("read over TLS").is_leader(&name("a")));
    // Without a client certificate the agent refuses the connection.
    cfg.client = Some(shield_dcs_consul::tls_client(&certs.read("ca.pem"), None).expect("TLS client"));
    assert!(ConsulDcs::new(cfg).read().await.is_err(), "a client without a certificate must be refused");
}

async fn raw_delete(url: &str, key: &str) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::delete(format!("{url}/v1/kv/{key}")).body(http_body_util::Empty::new()).expect("request");
    let resp = client.request(req).await.expect("raw delete");
    assert!(resp.status().is_success(), "raw delete {key}: {}", resp.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_read_shows_another_handles_write_without_a_request() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = cached(&url, "cache-read", "a");
    let b = dcs(&url, "cache-read", "b");
    warm(&a).await;
    let before = direct(&a);
    b.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.expect("touch");
    let t = Instant::now();
    while !a.read().await.expect("read").members.contains_key(&name("b")) {
        assert!(t.elapsed() < Duration::from_secs(1), "b's member key not in a's cached read after 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("consul cache: another handle's write showed in a cached read after {} ms", t.elapsed().as_millis());
    assert_eq!(direct(&a), before, "a cached read sent a request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_watch_wakes_on_a_deleted_leader_key() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = cached(&url, "cache-watch", "a");
    let b = dcs(&url, "cache-watch", "b");
    assert_eq!(b.acquire_leader(TTL_MS).await, Ok(true));
    warm(&a).await;
    assert!(a.read().await.expect("read").is_leader(&name("b")), "a does not see b's leader key");
    let rev = a.read().await.expect("read").revision;
    let before = direct(&a);
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.release_leader().await.expect("release");
        Instant::now()
    };
    let (w, released) = tokio::join!(a.watch(rev, 10_000), release);
    let woke = released.elapsed();
    let w = w.expect("watch");
    assert!(w.revision > rev, "watch returned {} <= {rev}", w.revision);
    println!("consul cache: a cached watch woke {} ms after the leader key was deleted", woke.as_millis());
    assert!(woke < Duration::from_millis(500), "cached watch woke late: {woke:?}");
    assert_eq!(direct(&a), before, "a cached watch sent a request");
    assert!(a.read().await.expect("read").leader.is_none());
}

/// One daemon cycle: the leader renews, touches, reads and writes an unchanged status; the
/// member touches and reads.
async fn cycle(leader: &ConsulDcs, member: &ConsulDcs) {
    let status = Status { optime: Lsn(1), slots: Default::default(), retain_slots: Vec::new() };
    leader.renew_leader(TTL_MS).await.expect("renew");
    leader.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.expect("touch leader");
    assert!(leader.read().await.expect("read").is_leader(&name("l")));
    leader.write_status(&status).await.expect("status");
    member.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.expect("touch member");
    assert!(member.read().await.expect("read").is_leader(&name("l")));
}

/// Requests (total, blocking) of a leader and a member over 10 cycles 600 ms apart.
async fn count_cycles(leader: &ConsulDcs, member: &ConsulDcs) -> [(u64, u64); 2] {
    assert_eq!(leader.acquire_leader(TTL_MS).await, Ok(true));
    for _ in 0..2 {
        cycle(leader, member).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let start = [leader, member].map(|d| (d.requests_sent(), d.cache_queries_sent()));
    for _ in 0..10 {
        cycle(leader, member).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    let end = [leader, member].map(|d| (d.requests_sent(), d.cache_queries_sent()));
    [0, 1].map(|i| (end[i].0 - start[i].0, end[i].1 - start[i].1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_cycles_cost_one_request_per_member() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let plain = count_cycles(&dcs(&url, "count-plain", "l"), &dcs(&url, "count-plain", "m")).await;
    let (leader, member) = (cached(&url, "count-cached", "l"), cached(&url, "count-cached", "m"));
    let with_cache = count_cycles(&leader, &member).await;
    for (what, [l, m]) in [("cache_view off", plain), ("cache_view on", with_cache)] {
        println!(
            "consul requests over 10 cycles, {what}: leader {} ({} blocking), member {} ({} blocking)",
            l.0, l.1, m.0, m.1
        );
    }
    // No key changes during the counted cycles: no blocking query is answered, so none is sent.
    for (who, (total, blocking)) in [("leader", with_cache[0]), ("member", with_cache[1])] {
        assert!(total - blocking <= 10, "{who} sent {} direct requests in 10 cycles", total - blocking);
        assert!(blocking <= 1, "{who} sent {blocking} blocking queries with nothing changing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_renewal_sees_a_deleted_leader_key() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = cached(&url, "cache-lost", "a");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.expect("touch");
    warm(&a).await;
    a.renew_leader(TTL_MS).await.expect("renew");
    let before = direct(&a);
    a.renew_leader(TTL_MS).await.expect("renew");
    assert_eq!(direct(&a) - before, 1, "a renewal with a current cache is the session renewal alone");
    raw_delete(&url, &format!("{}leader", a.prefix())).await;
    let t = Instant::now();
    // The cache may lag the deletion by a few ms; the renewal must say LeaseLost promptly.
    let mut attempts = 0;
    let r = loop {
        attempts += 1;
        match a.renew_leader(TTL_MS).await {
            Ok(()) if t.elapsed() < Duration::from_millis(500) => tokio::time::sleep(Duration::from_millis(20)).await,
            r => break r,
        }
    };
    println!(
        "consul cache: renewal after the leader key was deleted gave {r:?} after {} ms ({attempts} attempt(s))",
        t.elapsed().as_millis()
    );
    assert_eq!(r.map_err(|e| e.kind), Err(ErrorKind::LeaseLost));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_handle_on_a_frozen_agent_stops_serving_the_cache() {
    let Some(agent) = ConsulAgent::start("1s", &[]) else { return };
    let url = agent.url();
    ready(&url).await;
    let a = cached(&url, "cache-freeze", "a");
    assert_eq!(a.acquire_leader(TTL_MS).await, Ok(true));
    warm(&a).await;
    agent.freeze();
    // The blocking query only times out after its wait; the failed renewal is what tells.
    let r = a.renew_leader(TTL_MS).await.map_err(|e| e.kind);
    assert_eq!(r, Err(ErrorKind::Unreachable), "renewal while frozen");
    let t = Instant::now();
    let r = a.read().await.map(|_| ()).map_err(|e| e.kind);
    assert_eq!(r, Err(ErrorKind::Unreachable), "a read after a failed request must not come from the cache");
    assert!(t.elapsed() <= Duration::from_millis(RETRY_MS + 300), "read took {:?}", t.elapsed());
    agent.thaw();
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.read().await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after SIGCONT");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    warm(&a).await;
}
