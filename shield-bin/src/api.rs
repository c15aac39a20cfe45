//! The REST API (axum), with Patroni's paths and status codes for health checks, the status JSON
//! peers read in the leader race, and the switchover/failover requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shield_core::cluster::{ClusterView, FailoverRequest};
use shield_core::ports::{Dcs, DcsKey};
use shield_core::{DbProcess, DbStatus, Lsn, MemberName, Revision};

use crate::config::Credentials;

/// Shield's own version: `patroni.shield_version` in `/patroni` and the `shield_version` metric.
/// (`patroni.version` and `patroni_version` carry [`shield_core::PATRONI_COMPAT_VERSION`].)
pub const SHIELD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the API reports; the driver replaces it every cycle.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The last cluster view read.
    pub cluster: ClusterView,
    /// The local database.
    pub db: Option<DbStatus>,
    /// We hold the leader key (per the last cycle, and the lease is unexpired).
    pub holds_lock: bool,
    /// Maintenance mode.
    pub paused: bool,
    /// The last decision's reason.
    pub reason: String,
    /// When the last cycle ran.
    pub last_cycle: Option<Instant>,
    /// The cluster's ttl: for liveness and the freshness of the DCS view.
    pub ttl: Duration,
    /// Tags.
    pub tags: Value,
    /// Unix time of the last successful DCS read.
    pub dcs_last_seen_unix: i64,
    /// When the last successful DCS read was (the view counts as fresh for ttl after it).
    pub dcs_seen: Option<Instant>,
    /// Round trip of the last successful lease renewal, ms.
    pub renew_latency_ms: i64,
    /// Time left before the fencing deadline at the last cycle, ms (0 without a lease).
    pub fence_margin_ms: i64,
    /// Decisions since start, by reason kind.
    pub decisions: std::collections::BTreeMap<String, u64>,
    /// What the last status query learned about the running server.
    pub server: crate::pg::ServerInfo,
    /// The configured VIP (`address/prefix`), if any.
    pub vip: Option<String>,
    /// Whether this host holds it.
    pub vip_bound: bool,
}

/// A restart scheduled with `POST /restart {"schedule": ...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduledRestart {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The timestamp as given.
    pub at: String,
    /// Restart only if the server version is lower than this (`server_version_num` form).
    pub below_version: Option<u32>,
    /// The version as given.
    pub postgres_version: Option<String>,
    /// Restart only if a parameter change is pending.
    pub restart_pending: bool,
    /// Restart only if the role is this (`primary` or `replica`).
    pub role: Option<&'static str>,
}

impl ScheduledRestart {
    /// Patroni's `scheduled_restart` field, in `/patroni` and in the member key.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ "schedule": self.at });
        if let Some(pv) = &self.postgres_version {
            v["postgres_version"] = json!(pv);
        }
        v
    }
}

/// Shared API state.
pub struct ApiState {
    /// The snapshot.
    pub snap: Mutex<Snapshot>,
    /// This member.
    pub name: MemberName,
    /// The cluster.
    pub scope: String,
    /// Basic auth for unsafe methods (replaced by a config reload).
    pub auth: Mutex<Option<Credentials>>,
    /// For switchover/failover requests.
    pub dcs: Arc<dyn Dcs>,
    /// Wakes the loop (after a request is written).
    pub wake: tokio::sync::Notify,
    /// Operator requests for the next cycle.
    pub requests: Mutex<Vec<Pending>>,
    /// The restart waiting for its time, if any.
    pub scheduled_restart: Mutex<Option<ScheduledRestart>>,
    /// A configuration reload was asked for (SIGHUP or `POST /reload`).
    pub reload_requested: std::sync::atomic::AtomicBool,
    /// Who may send unsafe requests (`restapi.allowlist`, `verify_client`).
    pub access: Mutex<crate::serve::Access>,
    /// Woken when `access` changes, so that its host names are looked up again.
    pub access_changed: tokio::sync::Notify,
    /// The allowlist's host names and (with `allowlist_include_members`) the members' API hosts,
    /// as last looked up by [`crate::serve::resolver`].
    pub resolved: Mutex<Vec<std::net::IpAddr>>,
    /// Failed authentications per client.
    pub throttle: Mutex<crate::serve::Throttle>,
    /// `postgresql.allow_command_parameters` (replaced by a config reload).
    pub command_params: Mutex<crate::command_params::CommandParams>,
    /// Requests that call the DCS at once; more wait briefly, then get 503, so that a flood of
    /// authorised requests cannot pile work on the DCS the HA loop depends on.
    pub dcs_gate: tokio::sync::Semaphore,
}

/// What a request's asker hears back: `Ok` when done (a restart: PostgreSQL is back), or why not.
pub type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// An operator request on its way to the HA loop, with whoever waits for its answer.
#[derive(Debug)]
pub struct Pending {
    /// What is asked.
    pub request: shield_core::Request,
    /// Answered by the loop: at once when refused, when the work is done otherwise.
    pub reply: Option<Reply>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("name", &self.name).finish()
    }
}

type Shared = Arc<ApiState>;

impl ApiState {
    /// A state for member `name` of cluster `scope`, with an empty snapshot.
    pub fn new(name: MemberName, scope: &str, auth: Option<Credentials>, dcs: Arc<dyn Dcs>) -> ApiState {
        ApiState {
            snap: Mutex::new(Snapshot::default()),
            name,
            scope: scope.to_owned(),
            auth: Mutex::new(auth),
            dcs,
            wake: tokio::sync::Notify::new(),
            requests: Mutex::new(Vec::new()),
            scheduled_restart: Mutex::new(None),
            reload_requested: std::sync::atomic::AtomicBool::new(false),
            access: Mutex::new(crate::serve::Access::default()),
            access_changed: tokio::sync::Notify::new(),
            resolved: Mutex::new(Vec::new()),
            throttle: Mutex::new(crate::serve::Throttle::default()),
            command_params: Mutex::new(crate::command_params::CommandParams::default()),
            dcs_gate: tokio::sync::Semaphore::new(DCS_REQUESTS),
        }
    }

    /// A copy of the last cycle's snapshot (a poisoned lock gives an empty one).
    fn snapshot(&self) -> Snapshot {
        self.snap.lock().map(|g| g.clone()).unwrap_or_default()
    }

    /// The scheduled restart, if any.
    pub fn scheduled_restart(&self) -> Option<ScheduledRestart> {
        self.scheduled_restart.lock().ok().and_then(|g| g.clone())
    }

    /// Asks the loop for a restart if the scheduled one is due at `now_ms` (and clears it). The
    /// filters are checked now, when the restart would happen, as Patroni does.
    pub fn fire_due_restart(&self, now_ms: i64) {
        let due = {
            let Ok(mut g) = self.scheduled_restart.lock() else { return };
            match g.as_ref() {
                Some(r) if r.at_ms <= now_ms => g.take(),
                _ => None,
            }
        };
        let Some(r) = due else { return };
        let snap = self.snapshot();
        match restart_conditions(&snap, r.role, r.below_version, r.restart_pending) {
            Ok(()) => {
                tracing::info!(at = %r.at, "running the scheduled restart");
                enqueue(self, shield_core::Request::Restart, None);
            }
            Err(why) => tracing::info!(at = %r.at, "scheduled restart skipped: {why}"),
        }
    }
}

/// An early answer from a request helper (boxed: a `Response` is large).
type Reject = Box<Response>;

/// The router. Health checks are answered by [`health`] through the fallback, as Patroni routes
/// every GET it has no handler for to its health check: the path is matched by substring
/// (`/replica`, `/read-only`, `/health`, ...), and an unknown path answers 503 with the status JSON.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/patroni", get(patroni))
        .route("/cluster", get(cluster))
        .route("/history", get(history))
        .route("/config", get(config).patch(patch_config).put(put_config))
        .route("/metrics", get(metrics))
        .route("/failsafe", get(failsafe).post(failsafe_post))
        .route("/liveness", get(liveness).options(liveness))
        .route("/readiness", get(readiness).options(readiness))
        .route("/switchover", post(switchover).delete(delete_switchover))
        .route("/failover", post(failover))
        .route("/restart", post(restart).delete(delete_restart))
        .route("/reload", post(reload))
        .route("/reinitialize", post(reinitialize))
        .fallback(fallback)
        .with_state(state)
}

/// Every request no route takes. GET, HEAD and OPTIONS are health checks, except that a GET
/// whose first path segment names a status endpoint (`/patroni/`, `/cluster/x`) goes there, as
/// Patroni routes by first segment. Other methods: 501, as Patroni answers them.
async fn fallback(
    State(s): State<Shared>,
    method: Method,
    uri: axum::http::Uri,
    Query(q): Query<Vec<(String, String)>>,
) -> Response {
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return text(StatusCode::NOT_IMPLEMENTED, format!("Unsupported method ({:?})", method.as_str()));
    }
    let path = uri.path();
    if method == Method::GET {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        let st = State(s.clone());
        match first {
            "patroni" => return patroni(st).await,
            "cluster" => return cluster(st).await,
            "history" => return history(st).await,
            "config" => return config(st).await,
            "metrics" => return metrics(st).await,
            "failsafe" => return failsafe(st).await,
            "liveness" => return liveness(st).await,
            "readiness" => return readiness(st, Query(q)).await,
            _ => {}
        }
    }
    health(&s, &q, &method, path)
}

fn role_str(db: Option<&DbStatus>) -> &'static str {
    match db.map(|d| d.process) {
        Some(DbProcess::Running { in_recovery: false }) => "primary",
        Some(DbProcess::Running { in_recovery: true }) => "replica",
        _ => "replica",
    }
}

pub(crate) fn state_str(db: Option<&DbStatus>) -> &'static str {
    match db.map(|d| d.process) {
        Some(DbProcess::Running { .. }) => "running",
        Some(DbProcess::Starting) => "starting",
        Some(DbProcess::Crashed) => "crashed",
        Some(DbProcess::Stopped) => "stopped",
        _ => "unknown",
    }
}

/// A running replica's `replication_state`, as Patroni names it: `streaming`, or
/// `in archive recovery` when it does not stream but has a `restore_command`; else none.
fn replication_state(snap: &Snapshot) -> Option<&'static str> {
    let db = snap.db.as_ref().filter(|d| d.is_running_replica())?;
    if db.streaming {
        Some("streaming")
    } else if snap.server.restore_command {
        Some("in archive recovery")
    } else {
        None
    }
}

/// The DCS view is fresh: read successfully within ttl (Patroni's cluster view expires then).
fn dcs_fresh(snap: &Snapshot) -> bool {
    snap.dcs_seen.is_some_and(|t| t.elapsed() < snap.ttl)
}

/// This node is a synchronous standby: a running replica named in the `sync` key while
/// `synchronous_mode` is on (names compared case-insensitively, as Patroni does).
fn is_sync_standby(s: &ApiState, snap: &Snapshot) -> bool {
    let sync_mode = snap.cluster.config.as_ref().is_some_and(|(c, _)| c.synchronous_mode);
    let listed = snap
        .cluster
        .sync
        .as_ref()
        .is_some_and(|x| x.sync_standby.iter().any(|m| m.as_str().eq_ignore_ascii_case(s.name.as_str())));
    sync_mode && listed && snap.db.as_ref().is_some_and(DbStatus::is_running_replica)
}

/// A replica's positions as `/patroni` shows them: received (the larger of the received and the
/// walreceiver's written position, else the replayed one, as Patroni falls back) and replayed.
fn replica_positions(snap: &Snapshot) -> (Option<Lsn>, Option<Lsn>) {
    let Some(db) = snap.db.as_ref() else { return (None, None) };
    let received = db.received_lsn.max(snap.server.written_lsn).or(db.replayed_lsn);
    (received, db.replayed_lsn)
}

/// The status JSON (`GET /patroni`, and the body of every health answer). A value that is not
/// known is left out, never sent as `null`: Patroni peers compare the positions in their leader
/// race and fail on a `null`.
fn status_json(s: &ApiState, snap: &Snapshot) -> Value {
    let db = snap.db.as_ref();
    let mut v = json!({
        "state": state_str(db),
        "role": role_str(db),
        "patroni": {
            "version": shield_core::PATRONI_COMPAT_VERSION,
            "scope": s.scope,
            "name": s.name.as_str(),
            "shield": true,
            "shield_version": SHIELD_VERSION,
        },
        "cluster_unlocked": !dcs_fresh(snap) || snap.cluster.leader.is_none(),
        "pause": snap.paused,
        "dcs_last_seen": snap.dcs_last_seen_unix,
        "reason": snap.reason,
    });
    if snap.tags.as_object().is_some_and(|t| !t.is_empty()) {
        v["tags"] = snap.tags.clone();
    }
    if let Some(t) = &snap.server.postmaster_start_time {
        v["postmaster_start_time"] = json!(t);
    }
    if let Some(n) = snap.server.server_version {
        v["server_version"] = json!(n);
    }
    if !snap.server.pending_restart.is_empty() {
        v["pending_restart"] = json!(true);
        v["pending_restart_reason"] = json!(snap.server.pending_restart);
    }
    if let Some(vip) = &snap.vip {
        v["vip"] = json!({"address": vip, "bound": snap.vip_bound});
    }
    if let Some(r) = s.scheduled_restart() {
        v["scheduled_restart"] = r.to_json();
    }
    let Some(db) = db else { return v };
    if let Some(id) = db.system_id() {
        v["database_system_identifier"] = json!(id.to_string());
    }
    if let Some(t) = db.timeline {
        v["timeline"] = json!(t.0);
    }
    // Positions only from a running server, as Patroni (which reads them with a query).
    if db.is_running_primary() {
        let mut x = serde_json::Map::new();
        if let Some(l) = db.write_lsn {
            x.insert("location".into(), json!(l.0));
        }
        v["xlog"] = Value::Object(x);
    } else if db.is_running_replica() {
        let mut x = serde_json::Map::new();
        let (received, replayed) = replica_positions(snap);
        if let Some(l) = received {
            x.insert("received_location".into(), json!(l.0));
        }
        if let Some(l) = replayed {
            x.insert("replayed_location".into(), json!(l.0));
        }
        // Patroni sends `null` for a replica that has replayed no transaction yet.
        x.insert("replayed_timestamp".into(), json!(snap.server.replay_timestamp));
        if let Some(p) = snap.server.replay_paused {
            x.insert("paused".into(), json!(p));
        }
        v["xlog"] = Value::Object(x);
        if let Some(r) = replication_state(snap) {
            v["replication_state"] = json!(r);
        }
        if is_sync_standby(s, snap) {
            v["sync_standby"] = json!(true);
        }
    }
    v
}

/// Parses a `lag=` value as Patroni does: bytes, or a size with a unit (`B`, `kB`, `MB`, `GB`,
/// `TB`, 1024-based; Shield also takes them in any case), an optional fraction, and strtol's
/// `0x` hex and leading-zero octal forms. `Err` names the problem.
fn parse_lag(raw: &str) -> Result<u64, String> {
    let bad = |why: &str| format!("lag={raw:?}: {why}; expected bytes or a size such as 16MB or 1GB");
    let s = raw.trim();
    if s.starts_with('-') {
        return Err(bad("must not be negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    let split = |s: &str, radix: u32| s.find(|c: char| !c.is_digit(radix)).unwrap_or(s.len());
    let (value, rest): (f64, &str) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let i = split(h, 16);
        let n = u64::from_str_radix(&h[..i], 16).map_err(|_| bad("not a number"))?;
        (n as f64, &h[i..])
    } else {
        let i = split(s, 10);
        let rest = &s[i..];
        if rest.starts_with(['.', 'e', 'E']) {
            let end =
                s.find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))).unwrap_or(s.len());
            (s[..end].parse::<f64>().map_err(|_| bad("not a number"))?, &s[end..])
        } else if i == 0 {
            return Err(bad("not a number"));
        } else if s.len() > 1 && s.starts_with('0') && s[..i].bytes().all(|b| b < b'8') {
            (u64::from_str_radix(&s[..i], 8).map_err(|_| bad("not a number"))? as f64, rest)
        } else {
            (s[..i].parse::<u64>().map_err(|_| bad("too large"))? as f64, rest)
        }
    };
    let mult: f64 = match rest.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1024.0,
        "mb" => 1024.0 * 1024.0,
        "gb" => 1024.0 * 1024.0 * 1024.0,
        "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad(&format!("unknown unit {:?}", rest.trim()))),
    };
    let bytes = (value * mult).round();
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(bad("out of range"));
    }
    Ok(bytes as u64)
}

/// The query parameters of a health check, checked.
#[derive(Debug, Default, PartialEq)]
struct HealthQuery {
    /// `lag=`: the most a replica may lag, bytes.
    lag: Option<u64>,
    /// `replication_state=`: `streaming` or `in archive recovery`.
    replication_state: Option<String>,
    /// `tag_<key>=<value>`: tags the node must have, with these values.
    tags: Vec<(String, String)>,
    /// `/readiness?mode=write`: count the lag from the received position, not the replayed one.
    write_mode: bool,
}

impl HealthQuery {
    /// Reads the parameters Patroni knows, the first value of each (as Patroni's `parse_qs`),
    /// ignoring empty values and unknown names as Patroni does. A value Shield cannot use is an
    /// error naming it (Patroni silently ignores a `lag` it cannot parse).
    fn parse(q: &[(String, String)]) -> Result<HealthQuery, String> {
        let mut out = HealthQuery::default();
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in q {
            if v.is_empty() || !seen.insert(k.as_str()) {
                continue;
            }
            match k.as_str() {
                "lag" => out.lag = Some(parse_lag(v)?),
                "replication_state" => match v.as_str() {
                    "streaming" | "in archive recovery" => out.replication_state = Some(v.clone()),
                    other => {
                        return Err(format!(
                            "replication_state={other:?}: expected \"streaming\" or \"in archive recovery\""
                        ))
                    }
                },
                "mode" => match v.as_str() {
                    "write" => out.write_mode = true,
                    "apply" => out.write_mode = false,
                    other => return Err(format!("mode={other:?}: expected \"write\" or \"apply\"")),
                },
                _ => {
                    if let Some(t) = k.strip_prefix("tag_") {
                        out.tags.push((t.to_owned(), v.clone()));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a health path checks. Patroni matches the path by substring, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Check {
    StandbyLeader,
    Leader,
    Primary,
    Replica,
    ReadOnly,
    Health,
    Sync,
    Quorum,
    Async,
    ReadOnlyQuorum,
    ReadOnlySync,
    /// Any other path: 503.
    Unknown,
}

fn classify(path: &str) -> Check {
    let p = if path == "/" { "/primary" } else { path };
    let has = |w: &str| p.contains(w);
    if has("standby_leader") || has("standby-leader") {
        Check::StandbyLeader
    } else if has("leader") {
        Check::Leader
    } else if has("master") || has("primary") || has("read-write") {
        Check::Primary
    } else if has("replica") {
        Check::Replica
    } else if has("read-only") && !has("sync") && !has("quorum") {
        Check::ReadOnly
    } else if has("health") {
        Check::Health
    } else {
        match p {
            "/sync" | "/synchronous" => Check::Sync,
            "/quorum" => Check::Quorum,
            "/async" | "/asynchronous" => Check::Async,
            "/read-only-quorum" => Check::ReadOnlyQuorum,
            "/read-only-sync" | "/read-only-synchronous" => Check::ReadOnlySync,
            _ => Check::Unknown,
        }
    }
}

/// The leader's position as Patroni counts it for `?lag=` and readiness: the larger of the
/// cluster's optime (when the DCS view is fresh) and the walreceiver's `latest_end_lsn`.
fn leader_optime(snap: &Snapshot) -> u64 {
    let cluster = if dcs_fresh(snap) { snap.cluster.optime().map_or(0, |l| l.0) } else { 0 };
    cluster.max(snap.server.latest_end_lsn.map_or(0, |l| l.0))
}

/// A tag the node has, as Patroni compares it with `tag_<key>=`: strings as they are, other
/// values as their lowercase text (`true`, `1`).
fn tag_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string().to_lowercase(),
    }
}

/// Whether the health check `check` passes, by Patroni's rules (see [`health`]).
fn health_ok(s: &ApiState, snap: &Snapshot, check: Check, q: &HealthQuery) -> bool {
    let db = snap.db.as_ref();
    let running = matches!(db.map(|d| d.process), Some(DbProcess::Running { .. }));
    let role = role_str(db);
    let fresh = dcs_fresh(snap);
    let tags = shield_core::cluster::Tags::from_json(&snap.tags);
    let lagging = || {
        let optime = leader_optime(snap);
        let replayed = db.and_then(|d| d.replayed_lsn).map_or(0, |l| l.0);
        optime > 0 && optime > replayed.saturating_add(q.lag.unwrap_or(u64::MAX))
    };
    let replica_ok = running
        && role == "replica"
        && !tags.noloadbalance
        && !lagging()
        && q.replication_state.as_deref().is_none_or(|want| replication_state(snap) == Some(want));
    // Shield has no standby clusters: nobody is a standby leader.
    let (leader, primary, standby_leader) = if !fresh && snap.paused {
        // In pause with the DCS unavailable, the role decides (as in Patroni).
        (role == "primary" && running, role == "primary" && running, false)
    } else if snap.holds_lock {
        (true, role == "primary" && running, false)
    } else {
        (false, false, false)
    };
    let in_sync = is_sync_standby(s, snap);
    let in_quorum = false; // Shield has no quorum commit mode.
    let (ok, ignore_tags) = match check {
        Check::StandbyLeader => (standby_leader, true),
        Check::Leader => (leader, true),
        Check::Primary => (primary, true),
        Check::Replica => (replica_ok, false),
        Check::ReadOnly => (primary || standby_leader || replica_ok, false),
        Check::Health => (running, false),
        _ if !fresh => (false, false),
        Check::Sync => (in_sync && replica_ok, false),
        Check::Quorum => (in_quorum && replica_ok, false),
        Check::Async => (!in_sync && !in_quorum && replica_ok, false),
        Check::ReadOnlyQuorum => (primary || standby_leader || (in_quorum && replica_ok), false),
        Check::ReadOnlySync => (primary || standby_leader || (in_sync && replica_ok), false),
        Check::Unknown => (false, false),
    };
    if !ok || ignore_tags {
        return ok;
    }
    q.tags.iter().all(|(k, want)| snap.tags.get(k).is_some_and(|have| tag_text(have) == *want))
}

/// A health check: 200 or 503 with the status JSON (only the status line for HEAD and OPTIONS,
/// as HAProxy reads it); 400 naming a query parameter Shield cannot use.
fn health(s: &ApiState, q: &[(String, String)], method: &Method, path: &str) -> Response {
    let q = match HealthQuery::parse(q) {
        Ok(q) => q,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let snap = s.snapshot();
    let ok = health_ok(s, &snap, classify(path), &q);
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if method == Method::HEAD || method == Method::OPTIONS {
        return code.into_response();
    }
    (code, Json(status_json(s, &snap))).into_response()
}

/// `GET /liveness`: 200 while paused or while the HA loop ran within ttl on a primary (twice
/// ttl on a replica), as Patroni. Status only.
async fn liveness(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    let primary = snap.db.as_ref().is_some_and(DbStatus::is_running_primary);
    let threshold = if primary { snap.ttl } else { snap.ttl * 2 };
    let ok = snap.paused || snap.last_cycle.is_some_and(|t| t.elapsed() < threshold);
    if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }.into_response()
}

/// Why this node is not ready, by Patroni 4.1's readiness rule; `None` when ready.
fn not_ready(snap: &Snapshot, q: &HealthQuery) -> Option<String> {
    if snap.holds_lock {
        return None;
    }
    let db = snap.db.as_ref();
    if !matches!(db.map(|d| d.process), Some(DbProcess::Running { .. })) {
        return Some("PostgreSQL is not running".into());
    }
    if replication_state(snap) != Some("streaming") {
        return Some("PostgreSQL replication state is not streaming".into());
    }
    if !dcs_fresh(snap) && snap.server.latest_end_lsn.is_none_or(|l| l.0 == 0) {
        return Some("DCS is not accessible".into());
    }
    let optime = leader_optime(snap);
    let (received, replayed) = replica_positions(snap);
    let (mode, at) = if q.write_mode { ("write", received) } else { ("apply", replayed) };
    let lag = optime.saturating_sub(at.map_or(0, |l| l.0));
    let max = q
        .lag
        .unwrap_or_else(|| snap.cluster.config.as_ref().map_or(1_048_576, |(c, _)| c.maximum_lag_on_failover_bytes));
    (lag > max).then(|| format!("Replication {mode} lag {lag} exceeds maximum allowable {max}"))
}

/// `GET /readiness`: 200 when this node holds the leader key, or runs a replica that streams
/// and lags at most `?lag=` (default `maximum_lag_on_failover`) behind the leader, counted from
/// the replayed position (`?mode=write`: the received one). Status only, as Patroni.
async fn readiness(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
    let q = match HealthQuery::parse(&q) {
        Ok(q) => q,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    match not_ready(&s.snapshot(), &q) {
        None => StatusCode::OK.into_response(),
        Some(why) => {
            tracing::debug!("readiness check failure: {why}");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

/// `GET /failsafe`: the failsafe topology from the DCS, or 502 when there is none (failsafe
/// mode off), as Patroni.
async fn failsafe(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    match &snap.cluster.failsafe {
        Some(m) => Json(m).into_response(),
        None => text(StatusCode::BAD_GATEWAY, "failsafe mode is not active: the DCS holds no failsafe topology"),
    }
}

/// `POST /failsafe`: 502, as Patroni answers with failsafe mode off. Shield does not act on
/// `failsafe_mode`, so it never takes part in a failsafe leader's checks.
async fn failsafe_post() -> Response {
    text(StatusCode::BAD_GATEWAY, "failsafe mode is not supported by Shield")
}

async fn patroni(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(status_json(&s, &snap)).into_response()
}

/// `GET /cluster`, as Patroni 4.1's: members sorted by name with role `leader`, `sync_standby`
/// or `replica`; a replica's state is its `replication_state` (`streaming`) when it has one;
/// `lsn`/`receive_lsn`/`replay_lsn` with their lags (or `unknown`) for every non-leader.
async fn cluster(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(cluster_json(&s.scope, &snap.cluster, snap.paused)).into_response()
}

fn cluster_json(scope: &str, v: &ClusterView, paused: bool) -> Value {
    let sync_mode = v.config.as_ref().is_some_and(|(c, _)| c.synchronous_mode);
    let cluster_lsn = v.optime().map_or(0, |l| l.0);
    let members: Vec<Value> = v
        .members
        .values()
        .map(|m| {
            let leader = v.is_leader(&m.name);
            let in_sync = v
                .sync
                .as_ref()
                .is_some_and(|x| x.sync_standby.iter().any(|n| n.as_str().eq_ignore_ascii_case(m.name.as_str())));
            let role = if leader {
                "leader"
            } else if sync_mode && in_sync {
                "sync_standby"
            } else {
                "replica"
            };
            let state = match &m.data.replication_state {
                Some(r) if !leader && !r.is_empty() => r.as_str(),
                _ => m.data.state.as_str(),
            };
            let mut o = serde_json::Map::new();
            o.insert("name".into(), json!(m.name.as_str()));
            o.insert("role".into(), json!(role));
            o.insert("state".into(), json!(state));
            o.insert("api_url".into(), json!(m.data.api_url));
            if let Some((host, port)) = m.data.conn_url.as_deref().and_then(crate::pg::host_port) {
                o.insert("host".into(), json!(host));
                o.insert("port".into(), json!(port));
            }
            if let Some(t) = m.data.timeline {
                o.insert("timeline".into(), json!(t.0));
            }
            if m.data.pending_restart {
                o.insert("pending_restart".into(), json!(true));
            }
            for k in ["pending_restart_reason", "scheduled_restart"] {
                if let Some(x) = m.data.other.get(k) {
                    o.insert(k.into(), x.clone());
                }
            }
            let tags = m.data.tags.to_json();
            if tags.as_object().is_some_and(|t| !t.is_empty()) {
                o.insert("tags".into(), tags);
            }
            if !leader {
                for (prefix, lsn) in
                    [("receive_", m.data.receive_lsn), ("replay_", m.data.replay_lsn), ("", m.data.xlog_location)]
                {
                    let (lsn_key, lag_key) = (format!("{prefix}lsn"), format!("{prefix}lag"));
                    match lsn.filter(|l| l.0 > 0) {
                        None => {
                            o.insert(lsn_key, json!("unknown"));
                            o.insert(lag_key, json!("unknown"));
                        }
                        Some(l) => {
                            o.insert(lsn_key, json!(l.to_string()));
                            o.insert(lag_key, json!(cluster_lsn.saturating_sub(l.0)));
                        }
                    }
                }
            }
            Value::Object(o)
        })
        .collect();
    let mut out = json!({"members": members, "scope": scope});
    if paused {
        out["pause"] = json!(true);
    }
    if let Some(f) = &v.failover {
        if let Some((_, at)) = &f.scheduled_at {
            let mut sw = json!({"at": at});
            if let Some(l) = &f.leader {
                sw["from"] = json!(l.as_str());
            }
            if let Some(c) = &f.member {
                sw["to"] = json!(c.as_str());
            }
            out["scheduled_switchover"] = sw;
        }
    }
    out
}

async fn metrics(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    let body = crate::metrics::render(&s.scope, s.name.as_str(), &snap, is_sync_standby(&s, &snap), dcs_fresh(&snap));
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn history(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(Value::Array(snap.cluster.history.iter().map(|h| h.to_json()).collect())).into_response()
}

async fn config(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    match &snap.cluster.config {
        Some((c, _)) => Json(c.to_json()).into_response(),
        None => (StatusCode::BAD_GATEWAY, "config is not set in the DCS").into_response(),
    }
}

/// Patroni's deep merge, which is RFC 7396's JSON merge patch (`json-patch`): objects merge key
/// by key, `null` deletes, anything else replaces. One corner differs from Patroni's
/// `patch_config`, on purpose: an object patched in where there was none keeps no `null` members
/// (Patroni would store them; a `null` in the DCS config means nothing to either).
pub fn merge(into: &mut Value, patch: &Value) {
    json_patch::merge(into, patch);
}

async fn patch_config(State(s): State<Shared>, Query(q): Query<BTreeMap<String, String>>, body: String) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, body, true, force).await,
        Err(r) => *r,
    }
}

async fn put_config(State(s): State<Shared>, Query(q): Query<BTreeMap<String, String>>, body: String) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, body, false, force).await,
        Err(r) => *r,
    }
}

/// `?force=true` (or `1`) on `/config`: resume even when [`ClusterView::resume_blocker`] objects.
/// A query parameter, so the written config never carries an extra key.
fn force_param(q: &BTreeMap<String, String>) -> Result<bool, Reject> {
    match q.get("force").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => {
            Err(Box::new(text(StatusCode::BAD_REQUEST, format!("force must be true or false, not {other:?}"))))
        }
    }
}

/// The refusal of a config write that turns pause off while resuming is unsafe (see
/// [`ClusterView::resume_blocker`]), unless forced. `view` is the cluster as read before the
/// write.
fn resume_refusal(view: &ClusterView, new_pause: bool, force: bool) -> Option<String> {
    let was_paused = view.config.as_ref().is_some_and(|(c, _)| c.pause);
    if !was_paused || new_pause || force {
        return None;
    }
    let why = view.resume_blocker()?;
    Some(format!("{RESUME_REFUSED}{why}; add ?force=true to resume anyway"))
}

/// How a refused resume begins, in the REST answer and in shieldctl's error.
pub const RESUME_REFUSED: &str = "refusing to resume: ";

/// PATCH (merge) or PUT (replace) the dynamic config, with compare-and-set on the DCS key.
/// Turning pause off is refused with 409 while resuming is unsafe, unless `force`.
async fn write_config(s: Shared, body: String, patch: bool, force: bool) -> Response {
    let req = match parse_body(&body) {
        Ok(m) => Value::Object(m),
        Err(r) => return *r,
    };
    // A PUT is checked whole before the DCS is read; a PATCH once merged.
    if !patch {
        if let Err(e) = shield_core::DynamicConfig::from_json(req.clone()) {
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    }
    let _permit = match dcs_permit(&s).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let view = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the DCS: {e}")),
    };
    // The stored JSON, not Shield's reading of it: a PATCH writes back exactly what it changes.
    let (mut cfg, rev) = match &view.config {
        Some((c, r)) => (view.config_json.clone().unwrap_or_else(|| c.to_json()), Some(*r)),
        None if patch => return text(StatusCode::SERVICE_UNAVAILABLE, "config is not set in the DCS"),
        None => (Value::Object(Default::default()), None),
    };
    if patch {
        merge(&mut cfg, &req);
    } else {
        cfg = req;
    }
    let allow = s.command_params.lock().map(|c| c.clone()).unwrap_or_default();
    let before = view.config_json.clone().unwrap_or_default();
    if let Some(refused) = crate::command_params::refusal(&before, &cfg, &allow) {
        tracing::warn!("config change refused: {refused}");
        return text(StatusCode::FORBIDDEN, refused);
    }
    // Refuse what the nodes could not use, naming the key.
    match shield_core::DynamicConfig::from_json(cfg.clone()) {
        Ok(c) => {
            if let Some(refusal) = resume_refusal(&view, c.pause, force) {
                tracing::warn!("{refusal}");
                return text(StatusCode::CONFLICT, refusal);
            }
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let checked = cfg;
    match s.dcs.write_cas(DcsKey::Config, &checked.to_string(), rev).await {
        Ok(()) => {
            s.wake.notify_one();
            Json(checked).into_response()
        }
        Err(e) if e.kind == shield_core::ports::ErrorKind::CompareFailed => {
            text(StatusCode::CONFLICT, "config changed concurrently; read it again and retry")
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("failed to write the config: {e}")),
    }
}

fn enqueue(s: &ApiState, request: shield_core::Request, reply: Option<Reply>) {
    if let Ok(mut q) = s.requests.lock() {
        q.push(Pending { request, reply });
    }
    s.wake.notify_one();
}

/// Hands `request` to the loop and waits up to `timeout` for its answer.
async fn ask(s: &ApiState, request: shield_core::Request, timeout: Duration) -> Option<Result<(), String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    enqueue(s, request, Some(tx));
    // A dropped sender (the daemon is going down) counts as no answer.
    tokio::time::timeout(timeout, rx).await.ok()?.ok()
}

/// Parses `15.2`, `15` or `9.6.24` into `server_version_num` form (150002, 150000, 90624).
fn parse_pg_version(v: &str) -> Option<u32> {
    let parts: Vec<u32> = v.trim().split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [major] if *major >= 10 => Some(major * 10_000),
        [major, minor] if *major >= 10 => Some(major * 10_000 + minor),
        [major, minor] => Some(major * 10_000 + minor * 100),
        [major, minor, patch] if *major < 10 => Some(major * 10_000 + minor * 100 + patch),
        _ => None,
    }
}

/// Whether a restart with these filters applies now; `Err` says why not.
fn restart_conditions(
    snap: &Snapshot,
    role: Option<&'static str>,
    below_version: Option<u32>,
    restart_pending: bool,
) -> Result<(), String> {
    let db = snap.db.as_ref();
    if let Some(want) = role {
        let have = role_str(db);
        if have != want {
            return Err(format!("role {have} does not match {want}"));
        }
    }
    if let (Some(below), Some(have)) = (below_version, snap.server.server_version) {
        if have >= below {
            return Err(format!("PostgreSQL version {have} is not lower than {below}"));
        }
    }
    if restart_pending && snap.server.pending_restart.is_empty() {
        return Err("no restart is pending".to_owned());
    }
    Ok(())
}

/// `POST /restart`: restarts PostgreSQL now and answers when it is back (`timeout` seconds,
/// 60 by default), or schedules the restart (`schedule`). The `role`, `postgres_version` and
/// `restart_pending` filters are checked when the restart would happen.
async fn restart(State(s): State<Shared>, body: String) -> Response {
    let m = if body.trim().is_empty() {
        serde_json::Map::new()
    } else {
        match parse_body(&body) {
            Ok(m) => m,
            Err(r) => return *r,
        }
    };
    let bad = |msg: String| text(StatusCode::BAD_REQUEST, msg);
    let mut role = None;
    let mut below_version = None;
    let mut postgres_version = None;
    let mut restart_pending = false;
    let mut schedule = None;
    let mut timeout_s = 60u64;
    for (k, v) in &m {
        match (k.as_str(), v) {
            ("role", Value::String(r)) => {
                role = Some(match r.as_str() {
                    "primary" | "master" | "leader" => "primary",
                    "replica" => "replica",
                    other => return bad(format!("PostgreSQL role should be either primary or replica, not {other:?}")),
                })
            }
            ("postgres_version", Value::String(pv)) => match parse_pg_version(pv) {
                Some(n) => {
                    below_version = Some(n);
                    postgres_version = Some(pv.clone());
                }
                None => return bad(format!("PostgreSQL version should be in the first.major.minor format: {pv:?}")),
            },
            ("restart_pending", Value::Bool(b)) => restart_pending = *b,
            ("timeout", t) => {
                match t.as_u64().or_else(|| t.as_str().and_then(|x| x.trim_end_matches('s').parse().ok())) {
                    Some(n) if n > 0 => timeout_s = n,
                    _ => return bad(format!("`timeout` must be a positive number of seconds, not {t}")),
                }
            }
            ("schedule", Value::String(t)) => match shield_core::cluster::parse_timestamp_ms(t) {
                Ok(ms) => schedule = Some((ms, t.clone())),
                Err(e) => return text(StatusCode::UNPROCESSABLE_ENTITY, e),
            },
            (k @ ("role" | "postgres_version" | "restart_pending" | "schedule"), v) => {
                return bad(format!("`{k}` has the wrong type: {v}"))
            }
            (k, _) => return bad(format!("unknown field `{k}`")),
        }
    }
    let snap = s.snapshot();
    if let Some((at_ms, at)) = schedule {
        if snap.paused {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "Can't schedule restart in the paused state");
        }
        let Ok(mut g) = s.scheduled_restart.lock() else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "internal state is unavailable");
        };
        if g.is_some() {
            return text(StatusCode::CONFLICT, "Another restart is already scheduled");
        }
        *g = Some(ScheduledRestart { at_ms, at, below_version, postgres_version, restart_pending, role });
        return text(StatusCode::ACCEPTED, "Restart scheduled");
    }
    if let Err(why) = restart_conditions(&snap, role, below_version, restart_pending) {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("restart conditions are not satisfied: {why}"));
    }
    let db = snap.db.as_ref();
    if db.is_some_and(|d| d.busy.is_some()) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "a database task is already in progress");
    }
    if !matches!(db.map(|d| d.process), Some(DbProcess::Running { .. })) {
        let seen = db.map_or("not observed yet".to_owned(), |d| format!("{:?}", d.process).to_lowercase());
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("PostgreSQL is not running (last seen: {seen})"));
    }
    match ask(&s, shield_core::Request::Restart, Duration::from_secs(timeout_s)).await {
        Some(Ok(())) => text(StatusCode::OK, "restarted successfully"),
        Some(Err(why)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("restart failed: {why}")),
        None => text(StatusCode::SERVICE_UNAVAILABLE, format!("restart did not finish within {timeout_s} s")),
    }
}

/// `DELETE /restart`: forget the scheduled restart.
async fn delete_restart(State(s): State<Shared>) -> Response {
    match s.scheduled_restart.lock().map(|mut g| g.take()) {
        Ok(Some(_)) => text(StatusCode::OK, "scheduled restart deleted"),
        _ => text(StatusCode::NOT_FOUND, "no restarts are scheduled"),
    }
}

/// `POST /reload`: re-read the config file on the next cycle, as SIGHUP does.
async fn reload(State(s): State<Shared>) -> Response {
    s.reload_requested.store(true, std::sync::atomic::Ordering::SeqCst);
    s.wake.notify_one();
    text(StatusCode::ACCEPTED, "reload scheduled")
}

/// `POST /reinitialize`: wipe this replica's data and clone it again from the leader.
async fn reinitialize(State(s): State<Shared>, body: String) -> Response {
    if !body.trim().is_empty() {
        if let Err(r) = parse_body(&body) {
            return *r;
        }
    }
    let snap = s.snapshot();
    if snap.holds_lock {
        return text(StatusCode::SERVICE_UNAVAILABLE, "I am the leader, can not reinitialize");
    }
    if snap.cluster.leader_name().is_none() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Cluster has no leader, can not reinitialize");
    }
    if snap.db.as_ref().is_some_and(|d| d.busy.is_some()) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "a database task is already in progress");
    }
    // The loop answers within a cycle or two; the re-clone itself is followed through /patroni.
    match ask(&s, shield_core::Request::Reinitialize, Duration::from_secs(30)).await {
        Some(Ok(())) => text(StatusCode::OK, "reinitialize started"),
        Some(Err(why)) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "the HA loop did not take the request within 30 s"),
    }
}

async fn delete_switchover(State(s): State<Shared>) -> Response {
    let _permit = match dcs_permit(&s).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let view = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the DCS: {e}")),
    };
    let scheduled = view.failover.as_ref().is_some_and(|f| f.scheduled_at.is_some());
    let (true, Some(rev)) = (scheduled, view.failover_revision) else {
        return text(StatusCode::NOT_FOUND, "no switchover is scheduled");
    };
    match s.dcs.delete_cas(DcsKey::Failover, rev).await {
        Ok(()) => text(StatusCode::OK, "scheduled switchover deleted"),
        Err(e) if e.kind == shield_core::ports::ErrorKind::CompareFailed => {
            text(StatusCode::CONFLICT, "the switchover changed concurrently")
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("failed to delete the switchover: {e}")),
    }
}

/// Requests that may call the DCS at once (see [`ApiState::dcs_gate`]).
const DCS_REQUESTS: usize = 4;

/// A turn at the DCS for one request, waited for at most 2 s.
async fn dcs_permit(s: &ApiState) -> Result<tokio::sync::SemaphorePermit<'_>, Reject> {
    match tokio::time::timeout(Duration::from_secs(2), s.dcs_gate.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(Box::new(text(StatusCode::SERVICE_UNAVAILABLE, "too many requests at the DCS; retry shortly"))),
    }
}

fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

fn parse_body(body: &str) -> Result<serde_json::Map<String, Value>, Reject> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Box::new(text(StatusCode::BAD_REQUEST, "the body must be a JSON object"))),
        Err(e) => Err(Box::new(text(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))),
    }
}

fn name_field(m: &serde_json::Map<String, Value>, k: &str) -> Result<Option<MemberName>, Reject> {
    let bad = |msg: String| Box::new(text(StatusCode::BAD_REQUEST, msg));
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => MemberName::new(s.clone()).map(Some).map_err(|e| bad(format!("`{k}`: {e}"))),
        Some(other) => Err(bad(format!("`{k}` must be a string, not {other}"))),
    }
}

async fn switchover(State(s): State<Shared>, body: String) -> Response {
    manual(s, body, false).await
}

async fn failover(State(s): State<Shared>, body: String) -> Response {
    manual(s, body, true).await
}

async fn manual(s: Shared, body: String, failover: bool) -> Response {
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let (leader, candidate) = match (name_field(&m, "leader"), name_field(&m, "candidate")) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(r), _) | (_, Err(r)) => return *r,
    };
    let scheduled = match m.get("scheduled_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => match shield_core::cluster::parse_timestamp_ms(t) {
            Ok(ms) => Some((ms, t.clone())),
            Err(e) => return text(StatusCode::UNPROCESSABLE_ENTITY, e),
        },
        Some(other) => return text(StatusCode::BAD_REQUEST, format!("`scheduled_at` must be a string, not {other}")),
    };
    // Everything the request alone shows is checked before the DCS is asked anything.
    if failover && candidate.is_none() {
        return text(StatusCode::BAD_REQUEST, "Failover could be performed only to a specific candidate");
    }
    if failover && scheduled.is_some() {
        return text(StatusCode::BAD_REQUEST, "Failover can't be scheduled");
    }
    if !failover && leader.is_none() {
        return text(StatusCode::BAD_REQUEST, "Switchover could be performed only from a specific leader");
    }
    let snap = s.snapshot();
    if snap.paused && candidate.is_none() {
        return text(StatusCode::BAD_REQUEST, "Switchover is possible only to a specific candidate in a paused state");
    }
    let _permit = match dcs_permit(&s).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    // Validate against a fresh read, not the last cycle's snapshot.
    let fresh = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the cluster from the DCS: {e}")),
    };
    let view = &fresh;
    if leader.is_some() && leader.as_ref() != view.leader_name() {
        return text(StatusCode::PRECONDITION_FAILED, "leader name does not match");
    }
    if let Some(c) = &candidate {
        if Some(c) == view.leader_name() {
            return text(StatusCode::BAD_REQUEST, "candidate is already the leader");
        }
        if !view.members.get(c).is_some_and(|m| m.data.state == "running" && m.data.tags.can_promote()) {
            return text(
                StatusCode::PRECONDITION_FAILED,
                format!("candidate {c} is not a running member that may be promoted"),
            );
        }
    }
    let req = FailoverRequest {
        leader: leader.clone(),
        member: candidate.clone(),
        scheduled_at: scheduled.clone(),
        revision: Revision(0),
    };
    let value = req.to_json().to_string();
    if let Err(e) = s.dcs.write_cas(DcsKey::Failover, &value, view.failover_revision).await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("failed to write the request to the DCS: {e}"));
    }
    s.wake.notify_one();
    if let Some((_, at)) = scheduled {
        return text(StatusCode::ACCEPTED, format!("Switchover scheduled at: {at}"));
    }
    // Wait for the new leader, as Patroni does (bounded).
    let old = view.leader_name().cloned();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(v) = s.dcs.read().await {
            match (v.leader_name(), &candidate) {
                (Some(l), Some(c)) if l == c => {
                    let verb = if failover { "failed over" } else { "switched over" };
                    return text(StatusCode::OK, format!("Successfully {verb} to \"{c}\""));
                }
                (Some(l), None) if Some(l) != old.as_ref() => {
                    return text(StatusCode::OK, format!("Successfully switched over to \"{l}\""));
                }
                _ => {}
            }
        }
    }
    text(StatusCode::SERVICE_UNAVAILABLE, "Switchover status unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_patches_merge_deeply_and_null_deletes() {
        let mut c = json!({"ttl": 4, "postgresql": {"parameters": {"a": 1, "b": 2}}, "pause": true});
        merge(&mut c, &json!({"ttl": 6, "postgresql": {"parameters": {"a": null, "c": 3}}, "pause": null}));
        assert_eq!(c, json!({"ttl": 6, "postgresql": {"parameters": {"b": 2, "c": 3}}}));
        // RFC 7396: a non-object is replaced whole; a new object carries no nulls.
        let mut c = json!({"tags": ["a"], "ttl": 4});
        merge(&mut c, &json!({"tags": {"x": 1, "y": null}, "slots": {"s": {"type": "physical", "gone": null}}}));
        assert_eq!(c, json!({"tags": {"x": 1}, "ttl": 4, "slots": {"s": {"type": "physical"}}}));
        let mut c = json!({"ttl": 4});
        merge(&mut c, &json!([1]));
        assert_eq!(c, json!([1]));
    }

    /// An API state over an in-memory DCS holding `entries` (relative keys) for cluster `c`.
    fn state_with(entries: &[(&str, &str)]) -> (Shared, shield_core::testing::MemoryStore) {
        let store = shield_core::testing::MemoryStore::new();
        for (k, v) in entries {
            store.put_raw(&format!("/service/c/{k}"), v.as_bytes());
        }
        let name = MemberName::new("a").expect("name");
        let dcs = Arc::new(store.client("/service", "c", name.clone(), 30_000));
        (Arc::new(ApiState::new(name, "c", None, dcs)), store)
    }

    async fn send(s: &Shared, body: &str, patch: bool, force: bool) -> (StatusCode, String) {
        let r = write_config(s.clone(), body.to_owned(), patch, force).await;
        let code = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn stored_config(store: &shield_core::testing::MemoryStore) -> Value {
        let raw = store.get_raw("/service/c/config").expect("config key");
        serde_json::from_slice(&raw).expect("config JSON")
    }

    /// A PATCH writes back exactly the stored JSON with its change: no defaults Shield fills in
    /// (`fence_margin`, `primary_start_timeout`), keys it does not know kept as they were.
    #[tokio::test]
    async fn a_patch_writes_exactly_what_it_changes() {
        let stored =
            r#"{"ttl":20,"loop_wait":10,"retry_timeout":5,"postgresql":{"parameters":{"a":"1"}},"custom":{"x":[1]}}"#;
        let (s, store) = state_with(&[("config", stored)]);
        let (code, text) = send(&s, r#"{"ttl":30,"postgresql":{"parameters":{"b":"2"}}}"#, true, false).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        let want = json!({"ttl":30,"loop_wait":10,"retry_timeout":5,"postgresql":{"parameters":{"a":"1","b":"2"}},"custom":{"x":[1]}});
        assert_eq!(stored_config(&store), want);
        assert_eq!(serde_json::from_str::<Value>(&text).expect("answer"), want);
    }

    /// A parameter that runs a command is refused unless the node allows it; one left as it is
    /// passes, so other settings of a cluster that archives stay editable.
    #[tokio::test]
    async fn command_parameters_change_only_where_the_node_allows_it() {
        let stored = r#"{"ttl":20,"postgresql":{"parameters":{"archive_command":"cp %p /a/%f"}}}"#;
        let (s, store) = state_with(&[("config", stored)]);
        let (code, text) =
            send(&s, r#"{"postgresql":{"parameters":{"archive_command":"curl x | sh"}}}"#, true, false).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{text}");
        assert!(text.contains("archive_command") && text.contains("allow_command_parameters"), "{text}");
        let (code, text) = send(&s, r#"{"ttl":30,"postgresql":{"parameters":{"work_mem":"8MB"}}}"#, true, false).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        let (code, text) =
            send(&s, r#"{"ttl":30,"postgresql":{"parameters":{"shared_preload_libraries":"x"}}}"#, false, false).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "a PUT that drops it and adds another: {text}");
        *s.command_params.lock().expect("lock") = crate::command_params::CommandParams::AllowAll;
        let (code, text) =
            send(&s, r#"{"postgresql":{"parameters":{"archive_command":"cp %p /b/%f"}}}"#, true, false).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        assert_eq!(stored_config(&store)["postgresql"]["parameters"]["archive_command"], "cp %p /b/%f");
    }

    /// A PUT whose body is not a config the nodes could use is refused before the DCS is read.
    #[tokio::test]
    async fn a_bad_put_is_refused_before_any_dcs_call() {
        let (s, store) = state_with(&[("config", r#"{"ttl":20}"#)]);
        store.set_reachable(false);
        let (code, text) = send(&s, r#"{"ttl":"soon"}"#, false, false).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    }

    #[tokio::test]
    async fn turning_pause_off_is_refused_without_a_running_primary_unless_forced() {
        let paused = ("config", r#"{"ttl":30,"pause":true}"#);
        let stopped = ("members/a", r#"{"role":"primary","state":"stopped"}"#);
        let (s, store) = state_with(&[paused, ("leader", "a"), stopped]);
        for (body, patch) in [(r#"{"pause":null}"#, true), (r#"{"pause":false}"#, true), (r#"{"ttl":30}"#, false)] {
            let (code, text) = send(&s, body, patch, false).await;
            assert_eq!(code, StatusCode::CONFLICT, "{body}: {text}");
            assert_eq!(
                text,
                "refusing to resume: the leader key is held by a, whose member key says it is not running as \
                 primary (role: primary, state: stopped); add ?force=true to resume anyway"
            );
            assert_eq!(stored_config(&store)["pause"], json!(true), "nothing written");
        }
        // Other changes in pause are not resumes.
        let (code, text) = send(&s, r#"{"ttl":20}"#, true, false).await;
        assert_eq!((code, stored_config(&store)["ttl"].clone()), (StatusCode::OK, json!(20)), "{text}");
        // Forced: resumed, and the written config carries no extra key.
        let (code, text) = send(&s, r#"{"pause":null}"#, true, true).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        let cfg = stored_config(&store);
        assert!(cfg.get("pause").is_none_or(|p| p == &json!(false)) && cfg.get("force").is_none(), "{cfg}");
    }

    #[tokio::test]
    async fn resume_goes_ahead_while_a_running_primary_holds_the_leader_key() {
        let (s, store) = state_with(&[
            ("config", r#"{"ttl":30,"pause":true}"#),
            ("leader", "a"),
            ("members/a", r#"{"role":"primary","state":"running"}"#),
        ]);
        let (code, text) = send(&s, r#"{"pause":null}"#, true, false).await;
        assert_eq!(code, StatusCode::OK, "{text}");
        assert!(stored_config(&store).get("pause").is_none_or(|p| p == &json!(false)));
        // Without a leader key only pausing and forced resumes pass.
        let (s, _) = state_with(&[("config", r#"{"ttl":30,"pause":true}"#)]);
        let (code, text) = send(&s, r#"{"pause":false}"#, true, false).await;
        assert_eq!(code, StatusCode::CONFLICT);
        assert!(text.starts_with("refusing to resume: no member holds the leader key;"), "{text}");
    }

    #[test]
    fn the_force_parameter_is_a_boolean() {
        let q = |v: &str| BTreeMap::from([("force".to_owned(), v.to_owned())]);
        assert!(matches!(force_param(&BTreeMap::new()), Ok(false)));
        assert!(matches!(force_param(&q("true")), Ok(true)));
        assert!(matches!(force_param(&q("1")), Ok(true)));
        assert!(matches!(force_param(&q("false")), Ok(false)));
        assert!(force_param(&q("maybe")).is_err());
    }

    #[test]
    fn postgres_versions_parse_into_version_numbers() {
        assert_eq!(parse_pg_version("15.2"), Some(150002));
        assert_eq!(parse_pg_version("15"), Some(150000));
        assert_eq!(parse_pg_version("9.6.24"), Some(90624));
        assert_eq!(parse_pg_version("9.6"), Some(90600));
        assert_eq!(parse_pg_version("fifteen"), None);
        assert_eq!(parse_pg_version("15.2.1"), None);
    }

    #[test]
    fn lag_values_parse_like_patronis() {
        assert_eq!(parse_lag("1024"), Ok(1024));
        assert_eq!(parse_lag(" 1024 "), Ok(1024));
        assert_eq!(parse_lag("16kB"), Ok(16 * 1024));
        assert_eq!(parse_lag("64MB"), Ok(64 << 20));
        assert_eq!(parse_lag("64 MB"), Ok(64 << 20));
        assert_eq!(parse_lag("1GB"), Ok(1 << 30));
        assert_eq!(parse_lag("2TB"), Ok(2 << 40));
        assert_eq!(parse_lag("1.5kB"), Ok(1536));
        assert_eq!(parse_lag("16mb"), Ok(16 << 20), "units in any case");
        assert_eq!(parse_lag("0x400"), Ok(1024), "strtol's hex");
        assert_eq!(parse_lag("010"), Ok(8), "strtol's octal");
        assert_eq!(parse_lag("0"), Ok(0));
        for bad in ["1 parsec", "abc", "-1", "MB", "99999999999999999999999", "1e400"] {
            let e = parse_lag(bad).expect_err(bad);
            assert!(e.starts_with(&format!("lag={bad:?}: ")), "{e}");
        }
    }

    // ---- health checks, /patroni, /cluster, /failsafe through the router ---------------------

    /// Sends one request through the router; the status and the body as text.
    async fn call(s: &Shared, method: &str, uri: &str) -> (StatusCode, String) {
        use hyper::service::Service as _;
        let svc = hyper_util::service::TowerToHyperService::new(router(s.clone()));
        let req =
            axum::http::Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request");
        let r = svc.call(req).await.expect("the router never fails");
        let code = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        (code, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn code(s: &Shared, uri: &str) -> StatusCode {
        call(s, "GET", uri).await.0
    }

    fn db(in_recovery: bool, received: Option<u64>, replayed: Option<u64>, streaming: bool) -> DbStatus {
        let mut d = DbStatus::empty();
        d.process = DbProcess::Running { in_recovery };
        d.write_lsn = (!in_recovery).then_some(Lsn(1000));
        d.received_lsn = received.map(Lsn);
        d.replayed_lsn = replayed.map(Lsn);
        d.streaming = streaming;
        d.timeline = Some(shield_core::Timeline(2));
        d
    }

    /// Member `a` of cluster `c` as a streaming replica 100 bytes (received) / 200 bytes
    /// (replayed) behind leader `b`, whose optime is 1000; `sync` names `a` and synchronous mode
    /// is on; the DCS was read just now.
    fn replica_state() -> Shared {
        let (s, _) = state_with(&[]);
        let entries: Vec<shield_core::cluster::KvEntry> = [
            ("config", r#"{"ttl":30,"synchronous_mode":true,"maximum_lag_on_failover":500}"#),
            ("leader", "b"),
            ("status", r#"{"optime":1000}"#),
            ("sync", r#"{"leader":"b","sync_standby":"a"}"#),
            ("members/a", r#"{"role":"replica","state":"running","api_url":"http://h1:8008/patroni","conn_url":"postgres://h1:5432/postgres","xlog_location":900,"receive_lsn":900,"replay_lsn":800,"replication_state":"streaming","timeline":2}"#),
            ("members/b", r#"{"role":"primary","state":"running","api_url":"http://h2:8008/patroni","conn_url":"postgres://h2:5432/postgres","xlog_location":1000,"timeline":2}"#),
            ("members/c", r#"{"role":"replica","state":"starting"}"#),
        ]
        .iter()
        .map(|(k, v)| shield_core::cluster::KvEntry {
            key: (*k).to_owned(),
            value: v.as_bytes().to_vec(),
            revision: Revision(1),
            owner: None,
        })
        .collect();
        let snap = Snapshot {
            cluster: ClusterView::from_entries(Revision(1), &entries),
            db: Some(db(true, Some(900), Some(800), true)),
            ttl: Duration::from_secs(30),
            dcs_seen: Some(Instant::now()),
            last_cycle: Some(Instant::now()),
            tags: json!({"nofailover": true, "zone": "a", "weight": 3}),
            ..Snapshot::default()
        };
        *s.snap.lock().expect("lock") = snap;
        s
    }

    fn edit(s: &Shared, f: impl FnOnce(&mut Snapshot)) {
        f(&mut s.snap.lock().expect("lock"));
    }

    #[tokio::test]
    async fn unknown_paths_answer_like_patronis_fall_through_health_check() {
        let s = replica_state();
        // An unknown GET path: 503 with the status JSON (Patroni's do_GET falls through to it).
        let (c, body) = call(&s, "GET", "/no-such-thing").await;
        assert_eq!(c, StatusCode::SERVICE_UNAVAILABLE);
        let v: Value = serde_json::from_str(&body).expect("status JSON");
        assert_eq!((v["state"].as_str(), v["role"].as_str()), (Some("running"), Some("replica")));
        assert_eq!(call(&s, "HEAD", "/no-such-thing").await, (StatusCode::SERVICE_UNAVAILABLE, String::new()));
        assert_eq!(call(&s, "OPTIONS", "/replica").await, (StatusCode::OK, String::new()));
        // Patroni matches health paths by substring, and routes by the first path segment.
        assert_eq!(code(&s, "/replica/").await, StatusCode::OK);
        assert_eq!(code(&s, "/health").await, StatusCode::OK);
        assert_eq!(code(&s, "/").await, StatusCode::SERVICE_UNAVAILABLE);
        let (c, body) = call(&s, "GET", "/patroni/").await;
        assert_eq!(c, StatusCode::OK);
        assert!(body.contains("\"xlog\""), "{body}");
        // Other methods on unknown paths: 501, as Patroni.
        let (c, body) = call(&s, "POST", "/no-such-thing").await;
        assert_eq!((c, body.as_str()), (StatusCode::NOT_IMPLEMENTED, "Unsupported method (\"POST\")"));
    }

    #[tokio::test]
    async fn sync_quorum_and_read_only_variants_answer_with_patronis_codes() {
        let s = replica_state();
        let expect = [
            ("/sync", 200),
            ("/synchronous", 200),
            ("/async", 503),
            ("/asynchronous", 503),
            ("/quorum", 503),
            ("/read-only-sync", 200),
            ("/read-only-synchronous", 200),
            ("/read-only-quorum", 503),
            ("/read-only", 200),
            ("/replica", 200),
            ("/primary", 503),
            ("/leader", 503),
            ("/standby-leader", 503),
        ];
        for (path, want) in expect {
            assert_eq!(code(&s, path).await.as_u16(), want, "{path}");
        }
        // Out of the sync key: async.
        edit(&s, |snap| snap.cluster.sync = None);
        assert_eq!(code(&s, "/async").await, StatusCode::OK);
        assert_eq!(code(&s, "/read-only-sync").await, StatusCode::SERVICE_UNAVAILABLE);
        // Without a fresh DCS view the sync checks fail, the plain replica check does not.
        edit(&s, |snap| snap.dcs_seen = None);
        assert_eq!(code(&s, "/async").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code(&s, "/replica").await, StatusCode::OK);
        // The lock-holding primary passes every read-only variant and the leader paths.
        edit(&s, |snap| {
            snap.dcs_seen = Some(Instant::now());
            snap.holds_lock = true;
            snap.db = Some(db(false, None, None, false));
        });
        for path in ["/", "/primary", "/read-write", "/leader", "/read-only", "/read-only-sync", "/read-only-quorum"] {
            assert_eq!(code(&s, path).await, StatusCode::OK, "{path}");
        }
        for path in ["/replica", "/sync", "/async", "/quorum"] {
            assert_eq!(code(&s, path).await, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        }
    }

    #[tokio::test]
    async fn failsafe_shows_the_topology_or_502() {
        let s = replica_state();
        let (c, body) = call(&s, "GET", "/failsafe").await;
        assert_eq!(c, StatusCode::BAD_GATEWAY, "{body}");
        assert_eq!(call(&s, "POST", "/failsafe").await.0, StatusCode::BAD_GATEWAY);
        edit(&s, |snap| {
            let m = [("a", "http://h1:8008/patroni"), ("b", "http://h2:8008/patroni")];
            snap.cluster.failsafe = Some(m.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect());
        });
        let (c, body) = call(&s, "GET", "/failsafe").await;
        assert_eq!(c, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<Value>(&body).ok(),
            Some(json!({"a": "http://h1:8008/patroni", "b": "http://h2:8008/patroni"}))
        );
    }

    #[tokio::test]
    async fn health_query_parameters_lag_tags_and_replication_state() {
        let s = replica_state();
        // Replayed 800, leader at 1000: 200 bytes behind.
        let expect = [
            ("/replica?lag=199", 503),
            ("/replica?lag=200", 200),
            ("/replica?lag=1kB", 200),
            ("/replica?lag=16MB", 200),
            ("/async?lag=100", 503),
            ("/read-only?lag=100", 503),
            ("/sync?lag=100", 503),
            ("/replica?lag=", 200),
            ("/replica?tag_nofailover=true", 200),
            ("/replica?tag_nofailover=True", 503),
            ("/replica?tag_nofailover=false", 503),
            ("/replica?tag_zone=a", 200),
            ("/replica?tag_zone=b", 503),
            ("/replica?tag_weight=3", 200),
            ("/replica?tag_rack=1", 503),
            ("/health?tag_zone=b", 503),
            ("/replica?replication_state=streaming", 200),
            ("/replica?replication_state=in%20archive%20recovery", 503),
            ("/replica?unknown=1", 200),
        ];
        for (uri, want) in expect {
            assert_eq!(code(&s, uri).await.as_u16(), want, "{uri}");
        }
        // Bad values: 400 naming the parameter.
        for (uri, names) in [
            ("/replica?lag=lots", "lag=\"lots\""),
            ("/replica?lag=-5", "lag=\"-5\""),
            ("/async?lag=1XB", "unknown unit \"XB\""),
            ("/replica?replication_state=running", "replication_state=\"running\""),
            ("/readiness?mode=fast", "mode=\"fast\""),
        ] {
            let (c, body) = call(&s, "GET", uri).await;
            assert_eq!(c, StatusCode::BAD_REQUEST, "{uri}");
            assert!(body.contains(names), "{uri}: {body}");
        }
        // Tags are ignored on the leader paths.
        edit(&s, |snap| {
            snap.holds_lock = true;
            snap.db = Some(db(false, None, None, false));
        });
        assert_eq!(code(&s, "/primary?tag_zone=b").await, StatusCode::OK);
        assert_eq!(code(&s, "/read-only?tag_zone=b").await, StatusCode::SERVICE_UNAVAILABLE);
        // noloadbalance takes a replica out of /replica, not out of /health.
        edit(&s, |snap| {
            snap.holds_lock = false;
            snap.db = Some(db(true, Some(900), Some(800), true));
            snap.tags = json!({"noloadbalance": true});
        });
        assert_eq!(code(&s, "/replica").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code(&s, "/health").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn readiness_needs_a_streaming_replica_within_the_lag_limit() {
        let s = replica_state();
        // 200 bytes behind, maximum_lag_on_failover is 500.
        assert_eq!(call(&s, "GET", "/readiness").await, (StatusCode::OK, String::new()));
        assert_eq!(code(&s, "/readiness?lag=199").await, StatusCode::SERVICE_UNAVAILABLE);
        // mode=write counts from the received position (100 behind).
        assert_eq!(code(&s, "/readiness?lag=150&mode=write").await, StatusCode::OK);
        assert_eq!(code(&s, "/readiness?lag=150&mode=apply").await, StatusCode::SERVICE_UNAVAILABLE);
        edit(&s, |snap| {
            if let Some((c, _)) = snap.cluster.config.as_mut() {
                c.maximum_lag_on_failover_bytes = 100;
            }
        });
        assert_eq!(code(&s, "/readiness").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(code(&s, "/readiness?lag=1MB").await, StatusCode::OK);
        // Not streaming: not ready, whatever the lag.
        edit(&s, |snap| snap.db = Some(db(true, Some(1000), Some(1000), false)));
        assert_eq!(code(&s, "/readiness?lag=1GB").await, StatusCode::SERVICE_UNAVAILABLE);
        // Stopped: not ready; the lock holder: ready.
        edit(&s, |snap| snap.db.as_mut().map_or((), |d| d.process = DbProcess::Stopped));
        assert_eq!(code(&s, "/readiness").await, StatusCode::SERVICE_UNAVAILABLE);
        edit(&s, |snap| snap.holds_lock = true);
        assert_eq!(code(&s, "/readiness").await, StatusCode::OK);
        assert_eq!(code(&s, "/liveness").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn status_json_never_carries_null_positions() {
        let s = replica_state();
        let get = |s: Shared| async move {
            let (c, body) = call(&s, "GET", "/patroni").await;
            assert_eq!(c, StatusCode::OK);
            serde_json::from_str::<Value>(&body).expect("JSON")
        };
        let v = get(s.clone()).await;
        assert_eq!(v["xlog"]["received_location"], json!(900));
        assert_eq!(v["xlog"]["replayed_location"], json!(800));
        assert_eq!(v["replication_state"], json!("streaming"));
        assert_eq!(v["sync_standby"], json!(true));
        assert_eq!(v["patroni"]["version"], json!(shield_core::PATRONI_COMPAT_VERSION));
        assert_eq!(v["patroni"]["shield_version"], json!(SHIELD_VERSION));
        // Nothing received yet: the replayed position stands in, as in Patroni.
        edit(&s, |snap| snap.db = Some(db(true, None, Some(800), true)));
        assert_eq!(get(s.clone()).await["xlog"]["received_location"], json!(800));
        // Nothing known: the keys are absent, not null (a Patroni peer's max() fails on null).
        edit(&s, |snap| snap.db = Some(db(true, None, None, false)));
        let v = get(s.clone()).await;
        let x = v["xlog"].as_object().expect("xlog");
        assert!(!x.contains_key("received_location") && !x.contains_key("replayed_location"), "{v}");
        assert!(v.get("replication_state").is_none(), "{v}");
        // A stopped node has no xlog at all, as Patroni's; no other value is null either.
        let mut stopped = db(true, Some(5), Some(5), false);
        stopped.process = DbProcess::Stopped;
        edit(&s, |snap| snap.db = Some(stopped));
        let v = get(s.clone()).await;
        assert!(v.get("xlog").is_none(), "{v}");
        let nulls: Vec<&String> =
            v.as_object().expect("object").iter().filter(|(_, x)| x.is_null()).map(|(k, _)| k).collect();
        assert!(nulls.is_empty(), "{nulls:?} in {v}");
        // A primary: its location only.
        edit(&s, |snap| snap.db = Some(db(false, None, None, false)));
        assert_eq!(get(s.clone()).await["xlog"], json!({"location": 1000}));
    }

    #[tokio::test]
    async fn cluster_names_a_streaming_replica_streaming_with_patroni_41s_lags() {
        let s = replica_state();
        let (c, body) = call(&s, "GET", "/cluster").await;
        assert_eq!(c, StatusCode::OK);
        let v: Value = serde_json::from_str(&body).expect("JSON");
        let m = v["members"].as_array().expect("members");
        let names: Vec<&str> = m.iter().filter_map(|x| x["name"].as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m[0]["role"], json!("sync_standby"));
        assert_eq!(m[0]["state"], json!("streaming"));
        assert_eq!((&m[0]["host"], &m[0]["port"]), (&json!("h1"), &json!(5432)));
        assert_eq!((&m[0]["lsn"], &m[0]["lag"]), (&json!("0/384"), &json!(100)));
        assert_eq!((&m[0]["receive_lsn"], &m[0]["receive_lag"]), (&json!("0/384"), &json!(100)));
        assert_eq!((&m[0]["replay_lsn"], &m[0]["replay_lag"]), (&json!("0/320"), &json!(200)));
        assert_eq!((&m[1]["role"], &m[1]["state"]), (&json!("leader"), &json!("running")));
        assert!(m[1].get("lag").is_none() && m[1].get("lsn").is_none(), "{}", m[1]);
        assert_eq!((&m[2]["role"], &m[2]["state"]), (&json!("replica"), &json!("starting")));
        assert_eq!((&m[2]["lag"], &m[2]["replay_lsn"]), (&json!("unknown"), &json!("unknown")));
        assert!(m[2].get("host").is_none() && m[2].get("timeline").is_none(), "{}", m[2]);
        assert_eq!(v["scope"], json!("c"));
    }
}
