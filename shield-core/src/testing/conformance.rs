//! The DCS conformance suite: what every [`Dcs`] implementation must do, checked against itself.
//!
//! A backend's test implements [`DcsHarness`] (how to make clients, how to let time pass) and
//! calls [`run_dcs_conformance`]. Each case uses its own cluster scope, so cases never see each
//! other's keys. A failure is an `Err` naming the case and what went wrong.

use async_trait::async_trait;

use crate::cluster::{ClusterView, FailoverRequest, HistoryLine, MemberData, MemberRole, Status};
use crate::config::DynamicConfig;
use crate::ports::{Dcs, DcsKey, ErrorKind};
use crate::types::{Lsn, MemberName, Revision, SystemId, Timeline};

/// What the suite needs from a backend's test.
#[async_trait]
pub trait DcsHarness: Send + Sync {
    /// The client type.
    type Client: Dcs;
    /// A new client (with its own lease) for `member` of cluster `scope`.
    async fn client(&self, scope: &str, member: &str) -> Self::Client;
    /// Lets `ms` milliseconds pass: sleep for a real server, advance a simulated clock otherwise.
    async fn pass_time(&self, ms: u64);
    /// The lease TTL the clients were made with.
    fn ttl_ms(&self) -> u64;
    /// How much later than the TTL a real server may expire a lease (etcd checks every 500 ms;
    /// Consul may take up to twice the session TTL).
    fn expiry_slack_ms(&self) -> u64;
    /// Writes `value` into `key` of cluster `scope` (relative to its prefix, as the clients of
    /// [`DcsHarness::client`] see it) as a foreign client would: a plain put, with no lease of
    /// its own (Consul: without `acquire`, so a lock on the key keeps its session).
    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]);
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DCS conformance case `{case}`: {problem}")]
pub struct ConformanceFailure {
    /// The case.
    pub case: &'static str,
    /// What went wrong.
    pub problem: String,
}

type CaseResult = Result<(), String>;

fn check(cond: bool, what: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn name(s: &str) -> MemberName {
    // The suite only uses literal, valid names.
    MemberName::new(s).unwrap_or_else(|e| panic!("suite bug: {e}"))
}

/// Reads through `d` until the view satisfies `want`, letting 20 ms pass between tries, for up to
/// 2 s; returns the last view. A handle reads its own writes at once; another handle's writes
/// may reach a backend that keeps its view from a watch a moment later.
async fn read_until<H: DcsHarness, D: Dcs>(
    h: &H,
    d: &D,
    want: impl Fn(&ClusterView) -> bool,
) -> Result<ClusterView, String> {
    let mut v = d.read().await.map_err(|e| e.to_string())?;
    for _ in 0..100 {
        if want(&v) {
            break;
        }
        h.pass_time(20).await;
        v = d.read().await.map_err(|e| e.to_string())?;
    }
    Ok(v)
}

/// Runs every case; returns the first failure.
pub async fn run_dcs_conformance<H: DcsHarness>(h: &H) -> Result<(), ConformanceFailure> {
    macro_rules! case {
        ($name:literal, $f:ident) => {
            $f(h, concat!("conf-", $name)).await.map_err(|problem| ConformanceFailure { case: $name, problem })?;
        };
    }
    case!("leader-lock", leader_lock);
    case!("create-only", create_only);
    case!("compare-and-set", compare_and_set);
    case!("plain-puts-and-prefix-read", plain_puts_and_prefix_read);
    case!("watch-wakes", watch_wakes);
    case!("renewal-outlives-ttl", renewal_outlives_ttl);
    case!("lease-expiry", lease_expiry);
    case!("ttl-change", ttl_change);
    case!("delete-cluster", delete_cluster);
    case!("take-dead-leader-key", take_dead_leader_key);
    Ok(())
}

async fn leader_lock<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let b = h.client(scope, "b").await;
    let got = a.acquire_leader(h.ttl_ms()).await;
    check(got == Ok(true), || format!("a could not acquire a free lock: {got:?}"))?;
    check(b.acquire_leader(h.ttl_ms()).await == Ok(false), || "b acquired a held lock".into())?;
    a.renew_leader(h.ttl_ms()).await.map_err(|e| format!("holder's renewal failed: {e}"))?;
    let b_renew = b.renew_leader(h.ttl_ms()).await;
    check(matches!(&b_renew, Err(e) if e.kind == ErrorKind::LeaseLost), || {
        format!("a non-holder's renewal gave {b_renew:?}, not lease lost")
    })?;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.leader_name() == Some(&name("a")), || format!("leader is {:?}, not a", v.leader))?;
    b.release_leader().await.map_err(|e| e.to_string())?;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.leader_name() == Some(&name("a")), || "a non-holder's release deleted the lock".into())?;
    a.release_leader().await.map_err(|e| e.to_string())?;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.leader.is_none(), || "the holder's release left the key".into())?;
    check(b.acquire_leader(h.ttl_ms()).await == Ok(true), || "b could not acquire a released lock".into())?;
    let a_renew = a.renew_leader(h.ttl_ms()).await;
    check(matches!(&a_renew, Err(e) if e.kind == ErrorKind::LeaseLost), || {
        format!("the old holder's renewal gave {a_renew:?}, not lease lost")
    })
}

async fn create_only<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let b = h.client(scope, "b").await;
    check(a.create_initialize(None).await == Ok(true), || "initialize race not won on an empty cluster".into())?;
    check(b.create_initialize(None).await == Ok(false), || "initialize created twice".into())?;
    a.write_initialize(SystemId(7277694203142172922)).await.map_err(|e| e.to_string())?;
    let v = read_until(h, &b, |v| v.system_id().is_some()).await?;
    check(v.system_id() == Some(SystemId(7277694203142172922)), || format!("initialize reads {:?}", v.initialize))?;
    let mut config = DynamicConfig::default();
    config.timing.ttl_ms = 30_000;
    a.write_config(&config, None).await.map_err(|e| format!("create config: {e}"))?;
    let v = read_until(h, &b, |v| v.config.is_some()).await?;
    check(v.config.as_ref().is_some_and(|(c, _)| c.timing.ttl_ms == 30_000), || {
        format!("config reads {:?}", v.config)
    })?;
    let again = b.write_cas(DcsKey::Config, r#"{"ttl":20}"#, None).await;
    check(matches!(&again, Err(e) if e.kind == ErrorKind::CompareFailed), || {
        format!("a second create-only config write gave {again:?}")
    })
}

async fn compare_and_set<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let b = h.client(scope, "b").await;
    let request = |leader: Option<&str>, member: &str| FailoverRequest {
        leader: leader.map(name),
        member: Some(name(member)),
        scheduled_at: None,
        revision: Revision(0),
    };
    a.write_failover(&request(Some("a"), "b"), None).await.map_err(|e| e.to_string())?;
    let v = a.read().await.map_err(|e| e.to_string())?;
    let rev = v.failover_revision.ok_or("failover key not read back")?;
    check(v.failover.as_ref().and_then(|f| f.member.clone()) == Some(name("b")), || "failover value lost".into())?;
    a.write_failover(&request(None, "a"), Some(rev)).await.map_err(|e| format!("fresh CAS: {e}"))?;
    let stale = b.write_cas(DcsKey::Failover, r#"{"member":"b"}"#, Some(rev)).await;
    check(matches!(&stale, Err(e) if e.kind == ErrorKind::CompareFailed), || format!("stale CAS gave {stale:?}"))?;
    let stale_del = b.delete_cas(DcsKey::Failover, rev).await;
    check(matches!(&stale_del, Err(e) if e.kind == ErrorKind::CompareFailed), || {
        format!("stale compare-and-delete gave {stale_del:?}")
    })?;
    let v = read_until(h, &b, |v| v.failover.as_ref().and_then(|f| f.member.clone()) == Some(name("a"))).await?;
    let rev = v.failover_revision.ok_or("failover key vanished")?;
    b.delete_cas(DcsKey::Failover, rev).await.map_err(|e| format!("fresh compare-and-delete: {e}"))?;
    let v = b.read().await.map_err(|e| e.to_string())?;
    check(v.failover_revision.is_none(), || "compare-and-delete left the key".into())
}

async fn plain_puts_and_prefix_read<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let other = h.client(&format!("{scope}-other"), "z").await;
    other.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.map_err(|e| e.to_string())?;
    let mut m = MemberData::new(MemberRole::Primary, "running");
    m.conn_url = Some("postgres://127.0.0.1:5432/postgres".into());
    a.touch_member(&m).await.map_err(|e| e.to_string())?;
    let line = HistoryLine {
        timeline: Timeline(1),
        lsn: Lsn(25165984),
        reason: "no recovery target specified".into(),
        timestamp: Some("2024-07-02T10:00:00+00:00".into()),
        new_leader: Some("a".into()),
    };
    a.write_history(&[line]).await.map_err(|e| e.to_string())?;
    let status = Status { optime: Lsn(67110040), slots: Default::default(), retain_slots: Vec::new() };
    a.write_status(&status).await.map_err(|e| e.to_string())?;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.members.len() == 1, || format!("prefix read saw members {:?}", v.members.keys().collect::<Vec<_>>()))?;
    check(v.members.get(&name("a")).map(|m| &m.data) == Some(&m), || "member value changed in transit".into())?;
    check(v.history.len() == 1 && v.history[0].new_leader.as_deref() == Some("a"), || "history lost".into())?;
    check(v.status.as_ref().map(|s| s.optime.0) == Some(67110040), || "status lost".into())?;
    let max_rev = v.members.values().map(|m| m.revision).max().unwrap_or_default();
    check(v.revision >= max_rev, || "snapshot revision older than a key it holds".into())?;
    check(v.anomalies.is_empty(), || format!("anomalies: {:?}", v.anomalies))
}

async fn watch_wakes<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let b = h.client(scope, "b").await;
    check(a.acquire_leader(h.ttl_ms()).await == Ok(true), || "acquire failed".into())?;
    let rev = read_until(h, &b, |v| v.leader.is_some()).await?.revision;
    a.release_leader().await.map_err(|e| e.to_string())?;
    let w = b.watch(rev, 10_000).await.map_err(|e| format!("watch: {e}"))?;
    check(w.revision > rev, || format!("watch after a deletion returned revision {} <= {rev}", w.revision))?;
    let v = read_until(h, &b, |v| v.leader.is_none()).await?;
    check(v.leader.is_none(), || "leader still present after release".into())
}

async fn renewal_outlives_ttl<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    check(a.acquire_leader(h.ttl_ms()).await == Ok(true), || "acquire failed".into())?;
    a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.map_err(|e| e.to_string())?;
    let step = h.ttl_ms() / 3;
    for i in 0..5 {
        h.pass_time(step).await;
        a.renew_leader(h.ttl_ms()).await.map_err(|e| format!("renewal {i} failed: {e}"))?;
        a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.map_err(|e| e.to_string())?;
    }
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.is_leader(&name("a")), || "lock lost despite renewals".into())?;
    check(v.members.contains_key(&name("a")), || "member key lost despite renewals".into())
}

async fn lease_expiry<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let b = h.client(scope, "b").await;
    check(a.acquire_leader(h.ttl_ms()).await == Ok(true), || "acquire failed".into())?;
    a.touch_member(&MemberData::new(MemberRole::Primary, "running")).await.map_err(|e| e.to_string())?;
    b.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.map_err(|e| e.to_string())?;
    let rev = read_until(h, &b, |v| v.leader.is_some() && v.members.contains_key(&name("a"))).await?.revision;
    // b keeps its lease alive; a goes silent.
    let half = h.ttl_ms() / 2;
    let mut waited = 0;
    while waited < h.ttl_ms() + h.expiry_slack_ms() {
        h.pass_time(half).await;
        waited += half;
        b.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.map_err(|e| e.to_string())?;
    }
    let w = b.watch(rev, 10_000).await.map_err(|e| format!("watch: {e}"))?;
    check(w.revision > rev, || "no watch event after expiry".into())?;
    let v = read_until(h, &b, |v| v.leader.is_none() && !v.members.contains_key(&name("a"))).await?;
    check(v.leader.is_none(), || format!("leader key outlived its lease: {:?}", v.leader))?;
    check(!v.members.contains_key(&name("a")), || "member key outlived its lease".into())?;
    check(v.members.contains_key(&name("b")), || "a live member key vanished".into())?;
    let late = a.renew_leader(h.ttl_ms()).await;
    check(matches!(&late, Err(e) if e.kind == ErrorKind::LeaseLost), || format!("late renewal gave {late:?}"))?;
    // A backend may hold a released lock back for a while (Consul's lock-delay): the lock must be
    // free again within the slack.
    let mut waited = 0;
    loop {
        match b.acquire_leader(h.ttl_ms()).await {
            Ok(true) => return Ok(()),
            Ok(false) if waited < h.expiry_slack_ms() => {
                h.pass_time(200).await;
                waited += 200;
            }
            other => return Err(format!("expired lock could not be taken: {other:?}")),
        }
    }
}

/// A renewal with a longer ttl moves the leader key to a lease of that ttl: it outlives the old
/// ttl (the holder's fencing deadline now counts on the new one). Back to the old ttl, the key
/// expires on it again.
async fn ttl_change<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let (ttl, slack) = (h.ttl_ms(), h.expiry_slack_ms());
    let long = 4 * ttl + 2 * slack;
    check(a.acquire_leader(ttl).await == Ok(true), || "acquire failed".into())?;
    a.renew_leader(long).await.map_err(|e| format!("renewal with a longer ttl failed: {e}"))?;
    h.pass_time(ttl + slack).await;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.is_leader(&name("a")), || {
        format!("the key expired on the old ttl of {ttl} ms after a renewal for {long} ms")
    })?;
    a.renew_leader(ttl).await.map_err(|e| format!("renewal back to the old ttl failed: {e}"))?;
    h.pass_time(ttl + slack).await;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.leader.is_none(), || "the key outlived the ttl it was last renewed with".into())
}

async fn delete_cluster<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    a.create_initialize(Some(SystemId(1))).await.map_err(|e| e.to_string())?;
    a.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.map_err(|e| e.to_string())?;
    a.delete_cluster().await.map_err(|e| e.to_string())?;
    let v = a.read().await.map_err(|e| e.to_string())?;
    check(v.initialize.is_none() && v.members.is_empty(), || "keys left after delete_cluster".into())
}

/// A leader key overwritten with a value that names no member: its holder can no longer renew
/// it, and `take_leader` replaces it only at the exact revision read, for one taker only.
async fn take_dead_leader_key<H: DcsHarness>(h: &H, scope: &str) -> CaseResult {
    let a = h.client(scope, "a").await;
    let b = h.client(scope, "b").await;
    let c = h.client(scope, "c").await;
    let got = a.acquire_leader(h.ttl_ms()).await;
    check(got == Ok(true), || format!("a could not acquire a free lock: {got:?}"))?;
    h.put_raw(scope, "leader", b"\xffnot a member/").await;
    let renew = a.renew_leader(h.ttl_ms()).await;
    check(matches!(&renew, Err(e) if e.kind == ErrorKind::LeaseLost), || {
        format!("the old holder renewed a leader key holding garbage: {renew:?}")
    })?;
    let view = read_until(h, &b, |v| v.leader.as_ref().is_some_and(|l| l.name.is_none())).await?;
    let key = view.leader.ok_or("the garbage leader key is not in the read")?;
    check(key.name.is_none(), || format!("garbage parsed as a name: {:?}", key.name))?;
    let wrong = crate::types::Revision(key.revision.0.saturating_add(1_000));
    check(b.take_leader(h.ttl_ms(), wrong).await == Ok(false), || "taken at a revision it does not have".into())?;
    check(b.acquire_leader(h.ttl_ms()).await == Ok(false), || "a plain acquire took a key that exists".into())?;
    // Two takers of the one revision seen: the second finds the key moved on.
    let rb = b.take_leader(h.ttl_ms(), key.revision).await.map_err(|e| format!("b: {e}"))?;
    let rc = c.take_leader(h.ttl_ms(), key.revision).await.map_err(|e| format!("c: {e}"))?;
    check(rb && !rc, || format!("takers of one revision: b {rb}, c {rc} (want exactly b)"))?;
    let (winner, loser, wname) = (&b, &c, "b");
    let view = read_until(h, &a, |v| v.leader_name() == Some(&name(wname))).await?;
    check(view.leader_name() == Some(&name(wname)), || format!("leader after the take: {:?}", view.leader))?;
    winner.renew_leader(h.ttl_ms()).await.map_err(|e| format!("the taker's renewal failed: {e}"))?;
    let lost = loser.renew_leader(h.ttl_ms()).await;
    check(matches!(&lost, Err(e) if e.kind == ErrorKind::LeaseLost), || format!("the loser renewed: {lost:?}"))?;
    let held = view.leader.map(|l| l.revision).unwrap_or_default();
    winner.release_leader().await.map_err(|e| format!("release: {e}"))?;
    check(loser.take_leader(h.ttl_ms(), held).await == Ok(false), || "a deleted key was taken (created)".into())?;
    Ok(())
}
