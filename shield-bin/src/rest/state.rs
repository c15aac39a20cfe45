//! The REST API's shared state: the snapshot the loop publishes every cycle, the request queue
//! into the loop, and the helpers every handler uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use shield_core::cluster::ClusterView;
use shield_core::ports::Dcs;
use shield_core::{DbProcess, DbStatus, MemberName};
use shield_db_postgres::Credentials;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    pub server: shield_db_postgres::ServerInfo,
    /// The configured VIP (`address/prefix`), if any.
    pub vip: Option<String>,
    /// Whether this host holds it.
    pub vip_bound: bool,
    /// The role the server last answered its status query with (see [`Snapshot::set_db`]).
    pub last_role: Option<&'static str>,
    /// Failsafe mode is active on this node (filled in by [`ApiState::snapshot`]): as leader,
    /// a round every member accepted less than a ttl ago; as replica, a leader accepted then.
    pub failsafe_active: bool,
}

impl Snapshot {
    /// Publishes the local database's status, remembering the role of a running server.
    pub fn set_db(&mut self, db: DbStatus) {
        match db.process {
            DbProcess::Running { in_recovery } => {
                self.last_role = Some(if in_recovery { "replica" } else { "primary" })
            }
            DbProcess::Unknown => {}
            _ => self.last_role = None,
        }
        self.db = Some(db);
    }
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
    pub access: Mutex<crate::rest::access::Access>,
    /// Woken when `access` changes, so that its host names are looked up again.
    pub access_changed: tokio::sync::Notify,
    /// The allowlist's host names and (with `allowlist_include_members`) the members' API hosts,
    /// as last looked up by [`crate::rest::guard::resolver`].
    pub resolved: Mutex<Vec<std::net::IpAddr>>,
    /// Failed authentications per client.
    pub throttle: Mutex<crate::rest::access::Throttle>,
    /// `postgresql.allow_command_parameters` (replaced by a config reload).
    pub command_params: Mutex<crate::rest::command_params::CommandParams>,
    /// Requests that call the DCS at once; more wait briefly, then get 503, so that a flood of
    /// authorised requests cannot pile work on the DCS the HA loop depends on.
    pub dcs_gate: tokio::sync::Semaphore,
    /// Failsafe mode's shared state: `POST /failsafe` records acceptances under this lock, under
    /// which the loop's leader acquire checks for one (see [`shield_core::failsafe_answer`]).
    pub failsafe: Mutex<FailsafeState>,
}

/// What `POST /failsafe` and the loop share.
#[derive(Debug, Default)]
pub struct FailsafeState {
    /// The last leader key holder the loop saw in the DCS.
    pub last_leader: Option<MemberName>,
    /// The leader last accepted, when, and the ttl it said it counts with (0: not said).
    pub vouched: Option<(MemberName, std::time::Instant, u64)>,
    /// When this node last sent a leader acquire.
    pub acquire_sent: Option<std::time::Instant>,
    /// As leader: when the last failsafe round every member accepted was sent.
    pub confirmed: Option<std::time::Instant>,
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

pub(crate) type Shared = Arc<ApiState>;

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
            access: Mutex::new(crate::rest::access::Access::default()),
            access_changed: tokio::sync::Notify::new(),
            resolved: Mutex::new(Vec::new()),
            throttle: Mutex::new(crate::rest::access::Throttle::default()),
            command_params: Mutex::new(crate::rest::command_params::CommandParams::default()),
            dcs_gate: tokio::sync::Semaphore::new(DCS_REQUESTS),
            failsafe: Mutex::new(FailsafeState::default()),
        }
    }

    /// A copy of the last cycle's snapshot (a poisoned lock gives an empty one).
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut s = self.snap.lock().map(|g| g.clone()).unwrap_or_default();
        if let Ok(f) = self.failsafe.lock() {
            let recent = |t: Option<Instant>| t.is_some_and(|t| t.elapsed() < s.ttl);
            let failsafe_on = s.cluster.config.as_ref().is_some_and(|(c, _)| c.failsafe_mode);
            s.failsafe_active = failsafe_on && (recent(f.confirmed) || recent(f.vouched.as_ref().map(|v| v.1)));
        }
        s
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

/// The role `/patroni` reports: the running server's; while its status query does not answer,
/// the role it last answered with (as Patroni keeps its cached role when the query fails; a
/// primary that stalls is still the primary).
pub(crate) fn role_str(snap: &Snapshot) -> &'static str {
    match snap.db.as_ref().map(|d| d.process) {
        Some(DbProcess::Running { in_recovery: false }) => "primary",
        Some(DbProcess::Running { in_recovery: true }) => "replica",
        Some(DbProcess::Unknown) => snap.last_role.unwrap_or("replica"),
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

/// Whether a restart with these filters applies now; `Err` says why not.
pub(crate) fn restart_conditions(
    snap: &Snapshot,
    role: Option<&'static str>,
    below_version: Option<u32>,
    restart_pending: bool,
) -> Result<(), String> {
    if let Some(want) = role {
        let have = role_str(snap);
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

/// An early answer from a request helper (boxed: a `Response` is large).
pub(crate) type Reject = Box<Response>;

fn enqueue(s: &ApiState, request: shield_core::Request, reply: Option<Reply>) {
    if let Ok(mut q) = s.requests.lock() {
        q.push(Pending { request, reply });
    }
    s.wake.notify_one();
}

/// Hands `request` to the loop and waits up to `timeout` for its answer.
pub(crate) async fn ask(s: &ApiState, request: shield_core::Request, timeout: Duration) -> Option<Result<(), String>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    enqueue(s, request, Some(tx));
    // A dropped sender (the daemon is going down) counts as no answer.
    tokio::time::timeout(timeout, rx).await.ok()?.ok()
}

/// Requests that may call the DCS at once (see [`ApiState::dcs_gate`]).
const DCS_REQUESTS: usize = 4;

/// A turn at the DCS for one request, waited for at most 2 s.
pub(crate) async fn dcs_permit(s: &ApiState) -> Result<tokio::sync::SemaphorePermit<'_>, Reject> {
    match tokio::time::timeout(Duration::from_secs(2), s.dcs_gate.acquire()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err(Box::new(text(StatusCode::SERVICE_UNAVAILABLE, "too many requests at the DCS; retry shortly"))),
    }
}

pub(crate) fn text(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, msg.into()).into_response()
}

pub(crate) fn parse_body(body: &str) -> Result<serde_json::Map<String, Value>, Reject> {
    match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Box::new(text(StatusCode::BAD_REQUEST, "the body must be a JSON object"))),
        Err(e) => Err(Box::new(text(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))),
    }
}

pub(crate) fn name_field(m: &serde_json::Map<String, Value>, k: &str) -> Result<Option<MemberName>, Reject> {
    let bad = |msg: String| Box::new(text(StatusCode::BAD_REQUEST, msg));
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => MemberName::new(s.clone()).map(Some).map_err(|e| bad(format!("`{k}`: {e}"))),
        Some(other) => Err(bad(format!("`{k}` must be a string, not {other}"))),
    }
}
