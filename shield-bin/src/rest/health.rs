//! Health checks with Patroni's paths, query parameters and status codes (`/primary`, `/replica`,
//! `/read-only`, `?lag=`, `?tag_*=`, ...), `/liveness`, `/readiness`, `/failsafe`, and the
//! fallback that routes every other GET to a health check as Patroni does.

use super::metrics::metrics;
use super::state::role_str;
use super::state::{text, ApiState, Shared, Snapshot};
use super::status::{
    cluster, config, dcs_fresh, history, is_sync_standby, patroni, replica_positions, replication_state, status_json,
};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use shield_core::{DbProcess, DbStatus};

/// Every request no route takes. GET, HEAD and OPTIONS are health checks, except that a GET
/// whose first path segment names a status endpoint (`/patroni/`, `/cluster/x`) goes there, as
/// Patroni routes by first segment. Other methods: 501, as Patroni answers them.
pub(crate) async fn fallback(
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

/// Parses a `lag=` value as Patroni does: bytes, or a size with a unit (`B`, `kB`, `MB`, `GB`,
/// `TB`, 1024-based; Shield also takes them in any case), an optional fraction, and strtol's
/// `0x` hex and leading-zero octal forms. `Err` names the problem.
pub(crate) fn parse_lag(raw: &str) -> Result<u64, String> {
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
    let role = role_str(snap);
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
pub(crate) fn health(s: &ApiState, q: &[(String, String)], method: &Method, path: &str) -> Response {
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
pub(crate) async fn liveness(State(s): State<Shared>) -> Response {
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
pub(crate) async fn readiness(State(s): State<Shared>, Query(q): Query<Vec<(String, String)>>) -> Response {
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
pub(crate) async fn failsafe(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    match &snap.cluster.failsafe {
        Some(m) => Json(m).into_response(),
        None => text(StatusCode::BAD_GATEWAY, "failsafe mode is not active: the DCS holds no failsafe topology"),
    }
}

/// `POST /failsafe`: a leader cut off from the DCS asks whether this member still accepts it
/// (Patroni's body: `name`, `conn_url`, `api_url`, `slots`). 200 `Accepted` with this node's WAL
/// position in the `lsn` header, 500 with the reason it does not ([`shield_core::failsafe_answer`]),
/// 502 with failsafe mode off, 400 for a body without a member name.
pub(crate) async fn failsafe_post(State(s): State<Shared>, body: axum::body::Bytes) -> Response {
    let snap = s.snapshot();
    if !snap.cluster.config.as_ref().is_some_and(|(c, _)| c.failsafe_mode) {
        return text(StatusCode::BAD_GATEWAY, "failsafe mode is not enabled");
    }
    let body = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
    let leader_ttl_ms = body.get("shield_ttl_ms").and_then(serde_json::Value::as_u64).unwrap_or(0);
    let from = body.get("name").and_then(serde_json::Value::as_str).map(shield_core::MemberName::new);
    let from = match from {
        Some(Ok(n)) => n,
        Some(Err(e)) => return text(StatusCode::BAD_REQUEST, format!("failsafe: bad member name: {e}")),
        None => return text(StatusCode::BAD_REQUEST, "failsafe: the body must be a JSON object with a \"name\""),
    };
    let Some(db) = snap.db.as_ref() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "the HA loop has not run yet");
    };
    let Ok(mut f) = s.failsafe.lock() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "failsafe state poisoned");
    };
    let now = std::time::Instant::now();
    let racing = f.acquire_sent.is_some_and(|a| now.duration_since(a) < snap.ttl) || snap.holds_lock;
    match shield_core::failsafe_answer(f.last_leader.as_ref(), db, &from, racing) {
        Ok(lsn) => {
            f.vouched = Some((from, now, leader_ttl_ms));
            let mut r = text(StatusCode::OK, "Accepted");
            if let Some(v) = lsn.and_then(|l| axum::http::HeaderValue::from_str(&l.0.to_string()).ok()) {
                r.headers_mut().insert("lsn", v);
            }
            r
        }
        Err(why) => {
            tracing::info!(leader = %from, "failsafe: not accepted: {why}");
            text(StatusCode::INTERNAL_SERVER_ERROR, why)
        }
    }
}
