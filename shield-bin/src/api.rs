//! The REST API (axum), with Patroni's paths and status codes for health checks, the status JSON
//! peers read in the leader race, and the switchover/failover requests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shield_core::cluster::{ClusterView, FailoverRequest, MemberRole};
use shield_core::ports::{Dcs, DcsKey};
use shield_core::{DbProcess, DbStatus, MemberName, Revision};

use crate::config::Credentials;

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
    /// Lag limit for `/replica?lag=` defaults (unused) and ttl for liveness.
    pub ttl: Duration,
    /// Tags.
    pub tags: Value,
    /// Unix time of the last successful DCS read.
    pub dcs_last_seen_unix: i64,
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

/// The router.
pub fn router(state: Shared) -> Router {
    let health = |p: &'static str| (p, any(move |s, q, m| health(s, q, m, p)));
    let mut r = Router::new();
    for (path, h) in [
        health("/"),
        health("/primary"),
        health("/master"),
        health("/read-write"),
        health("/leader"),
        health("/standby-leader"),
        health("/standby_leader"),
        health("/replica"),
        health("/read-only"),
        health("/health"),
        health("/liveness"),
        health("/readiness"),
        health("/sync"),
        health("/synchronous"),
        health("/async"),
        health("/asynchronous"),
    ] {
        r = r.route(path, h);
    }
    r.route("/patroni", get(patroni))
        .route("/cluster", get(cluster))
        .route("/history", get(history))
        .route("/config", get(config).patch(patch_config).put(put_config))
        .route("/metrics", get(metrics))
        .route("/switchover", post(switchover).delete(delete_switchover))
        .route("/failover", post(failover))
        .route("/restart", post(restart).delete(delete_restart))
        .route("/reload", post(reload))
        .route("/reinitialize", post(reinitialize))
        .with_state(state)
}

fn role_str(db: Option<&DbStatus>) -> &'static str {
    match db.map(|d| d.process) {
        Some(DbProcess::Running { in_recovery: false }) => "primary",
        Some(DbProcess::Running { in_recovery: true }) => "replica",
        _ => "replica",
    }
}

fn state_str(db: Option<&DbStatus>) -> &'static str {
    match db.map(|d| d.process) {
        Some(DbProcess::Running { .. }) => "running",
        Some(DbProcess::Starting) => "starting",
        Some(DbProcess::Crashed) => "crashed",
        Some(DbProcess::Stopped) => "stopped",
        _ => "unknown",
    }
}

/// The status JSON (`GET /patroni`, and the body of every health answer).
fn status_json(s: &ApiState, snap: &Snapshot) -> Value {
    let db = snap.db.as_ref();
    let mut v = json!({
        "state": state_str(db),
        "role": role_str(db),
        "patroni": {"version": env!("CARGO_PKG_VERSION"), "scope": s.scope, "name": s.name.as_str(), "shield": true},
        "tags": snap.tags,
        "cluster_unlocked": snap.cluster.leader.is_none(),
        "pause": snap.paused,
        "reason": snap.reason,
    });
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
    if let Some(db) = db {
        if let Some(t) = db.timeline {
            v["timeline"] = json!(t.0);
        }
        if let Some(id) = db.system_id() {
            v["database_system_identifier"] = json!(id.to_string());
        }
        if role_str(Some(db)) == "primary" {
            v["xlog"] = json!({"location": db.write_lsn.map(|l| l.0)});
        } else {
            v["xlog"] = json!({"received_location": db.received_lsn.map(|l| l.0), "replayed_location": db.replayed_lsn.map(|l| l.0)});
            if db.streaming {
                v["replication_state"] = json!("streaming");
            }
        }
    }
    v
}

/// Parses `lag=` values: bytes, or with kB/MB/GB units.
fn parse_lag(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.find(|c: char| !c.is_ascii_digit()) {
        None => (s, 1),
        Some(i) => {
            let unit = s[i..].trim().to_ascii_lowercase();
            let m = match unit.as_str() {
                "b" => 1,
                "kb" => 1024,
                "mb" => 1024 * 1024,
                "gb" => 1024 * 1024 * 1024,
                "tb" => 1024u64.pow(4),
                _ => return None,
            };
            (&s[..i], m)
        }
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

async fn health(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    path: &'static str,
) -> Response {
    let snap = s.snapshot();
    let db = snap.db.as_ref();
    let running = matches!(db.map(|d| d.process), Some(DbProcess::Running { .. }));
    let primary = snap.holds_lock && role_str(db) == "primary";
    let replica_ok = || -> bool {
        if !(running && role_str(db) == "replica") {
            return false;
        }
        if snap.tags.get("noloadbalance").is_some_and(|v| v.as_bool() == Some(true) || v.as_str() == Some("true")) {
            return false;
        }
        if let Some(lag) = q.get("lag") {
            let Some(max) = parse_lag(lag) else { return false };
            let mine = db.and_then(|d| d.replayed_lsn.or(d.received_lsn)).map_or(0, |l| l.0);
            let optime = snap.cluster.optime().map_or(0, |l| l.0);
            if optime.saturating_sub(mine) > max {
                return false;
            }
        }
        q.iter().filter_map(|(k, v)| k.strip_prefix("tag_").map(|t| (t, v))).all(|(t, want)| {
            snap.tags.get(t).is_some_and(|have| match have {
                Value::String(h) => h == want,
                other => other.to_string().eq_ignore_ascii_case(want),
            })
        })
    };
    let in_sync = snap.cluster.sync.as_ref().is_some_and(|x| x.sync_standby.contains(&s.name));
    let ok = match path {
        "/" | "/primary" | "/master" | "/read-write" => primary,
        "/leader" => snap.holds_lock,
        "/standby-leader" | "/standby_leader" => false,
        "/replica" => replica_ok(),
        "/read-only" => primary || replica_ok(),
        "/health" => running,
        "/liveness" => snap.paused || snap.last_cycle.is_some_and(|t| t.elapsed() < snap.ttl * 2),
        "/readiness" => snap.holds_lock || running,
        "/sync" | "/synchronous" => running && in_sync && role_str(db) == "replica",
        "/async" | "/asynchronous" => running && !in_sync && role_str(db) == "replica",
        _ => false,
    };
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if method == Method::HEAD || method == Method::OPTIONS || path == "/liveness" || path == "/readiness" {
        return code.into_response();
    }
    (code, Json(status_json(&s, &snap))).into_response()
}

async fn patroni(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(status_json(&s, &snap)).into_response()
}

async fn cluster(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    let v = &snap.cluster;
    let members: Vec<Value> = v
        .members
        .values()
        .map(|m| {
            let role = if v.is_leader(&m.name) {
                "leader"
            } else if m.data.role == MemberRole::Primary {
                "primary"
            } else {
                "replica"
            };
            let lag = match (v.optime(), m.data.xlog_location) {
                (Some(o), Some(x)) if !v.is_leader(&m.name) => json!(o.bytes_after(x)),
                _ => Value::Null,
            };
            let (host, port) = m.data.conn_url.as_deref().and_then(crate::pg::host_port).unwrap_or_default();
            json!({"name": m.name.as_str(), "role": role, "state": m.data.state, "api_url": m.data.api_url,
                   "host": host, "port": port, "timeline": m.data.timeline.map(|t| t.0), "lag": lag,
                   "tags": m.data.tags.to_json()})
        })
        .collect();
    let mut out = json!({"members": members, "scope": s.scope});
    if snap.paused {
        out["pause"] = json!(true);
    }
    if let Some(f) = &v.failover {
        if let Some((_, at)) = &f.scheduled_at {
            out["scheduled_switchover"] = json!({"at": at, "from": f.leader.as_ref().map(MemberName::as_str), "to": f.member.as_ref().map(MemberName::as_str)});
        }
    }
    Json(out).into_response()
}

async fn metrics(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    let body = crate::metrics::render(&s.scope, s.name.as_str(), &snap);
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

/// Patroni's deep merge: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge(into: &mut Value, patch: &Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(k);
                } else {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

async fn patch_config(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, headers, body, true, force).await,
        Err(r) => *r,
    }
}

async fn put_config(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, headers, body, false, force).await,
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
async fn write_config(s: Shared, headers: HeaderMap, body: String, patch: bool, force: bool) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let req = match parse_body(&body) {
        Ok(m) => Value::Object(m),
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
async fn restart(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
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
async fn delete_restart(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    match s.scheduled_restart.lock().map(|mut g| g.take()) {
        Ok(Some(_)) => text(StatusCode::OK, "scheduled restart deleted"),
        _ => text(StatusCode::NOT_FOUND, "no restarts are scheduled"),
    }
}

/// `POST /reload`: re-read the config file on the next cycle, as SIGHUP does.
async fn reload(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    s.reload_requested.store(true, std::sync::atomic::Ordering::SeqCst);
    s.wake.notify_one();
    text(StatusCode::ACCEPTED, "reload scheduled")
}

/// `POST /reinitialize`: wipe this replica's data and clone it again from the leader.
async fn reinitialize(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
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

async fn delete_switchover(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
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

fn authorized(s: &ApiState, headers: &HeaderMap) -> Result<(), Reject> {
    use base64::Engine as _;
    let Some(want) = s.auth.lock().ok().and_then(|g| g.clone()) else { return Ok(()) };
    let got = headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    if got.as_deref() == Some(&format!("{}:{}", want.username, want.password)) {
        Ok(())
    } else {
        let r =
            (StatusCode::UNAUTHORIZED, [("WWW-Authenticate", "Basic realm=\"Patroni\"")], "no auth header received");
        Err(Box::new(r.into_response()))
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

async fn switchover(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    manual(s, headers, body, false).await
}

async fn failover(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    manual(s, headers, body, true).await
}

async fn manual(s: Shared, headers: HeaderMap, body: String, failover: bool) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
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
    let snap = s.snapshot();
    // Validate against a fresh read, not the last cycle's snapshot.
    let fresh = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the cluster from the DCS: {e}")),
    };
    let view = &fresh;
    if failover && candidate.is_none() {
        return text(StatusCode::BAD_REQUEST, "Failover could be performed only to a specific candidate");
    }
    if failover && scheduled.is_some() {
        return text(StatusCode::BAD_REQUEST, "Failover can't be scheduled");
    }
    if !failover && leader.is_none() {
        return text(StatusCode::BAD_REQUEST, "Switchover could be performed only from a specific leader");
    }
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
    if snap.paused && candidate.is_none() {
        return text(StatusCode::BAD_REQUEST, "Switchover is possible only to a specific candidate in a paused state");
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
        tokio::time::sleep(Duration::from_millis(100)).await;
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
        let r = write_config(s.clone(), HeaderMap::new(), body.to_owned(), patch, force).await;
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
        assert_eq!(parse_lag("1024"), Some(1024));
        assert_eq!(parse_lag("16kB"), Some(16 * 1024));
        assert_eq!(parse_lag("64MB"), Some(64 << 20));
        assert_eq!(parse_lag("1GB"), Some(1 << 30));
        assert_eq!(parse_lag("1 parsec"), None);
    }
}
