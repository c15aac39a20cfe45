//! The unsafe endpoints that act on this node: `/restart` (now, scheduled, filtered), `/reload`,
//! `/reinitialize`. Access control runs before them (`guard.rs`).

use super::state::restart_conditions;
use super::state::{ask, parse_body, text, Reject, ScheduledRestart, Shared, Snapshot};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use shield_core::DbProcess;
use std::time::Duration;

/// Parses `15.2`, `15` or `9.6.24` into `server_version_num` form (150002, 150000, 90624).
pub(crate) fn parse_pg_version(v: &str) -> Option<u32> {
    let parts: Vec<u32> = v.trim().split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    match parts.as_slice() {
        [major] if *major >= 10 => Some(major * 10_000),
        [major, minor] if *major >= 10 => Some(major * 10_000 + minor),
        [major, minor] => Some(major * 10_000 + minor * 100),
        [major, minor, patch] if *major < 10 => Some(major * 10_000 + minor * 100 + patch),
        _ => None,
    }
}

/// `POST /restart`: restarts PostgreSQL now and answers when it is back (`timeout` seconds,
/// 60 by default), or schedules the restart (`schedule`). The `role`, `postgres_version` and
/// `restart_pending` filters are checked when the restart would happen.
pub(crate) async fn restart(State(s): State<Shared>, body: String) -> Response {
    let r = match restart_body(&body) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let snap = s.snapshot();
    if let Some((at_ms, at)) = r.schedule {
        let RestartBody { role, below_version, postgres_version, restart_pending, .. } = r;
        let planned = ScheduledRestart { at_ms, at, below_version, postgres_version, restart_pending, role };
        return schedule_restart(&s, snap.paused, planned);
    }
    if let Some(refused) = restart_refused(&snap, &r) {
        return refused;
    }
    let timeout_s = r.timeout_s;
    match ask(&s, shield_core::Request::Restart, Duration::from_secs(timeout_s)).await {
        Some(Ok(())) => text(StatusCode::OK, "restarted successfully"),
        Some(Err(why)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("restart failed: {why}")),
        None => text(StatusCode::SERVICE_UNAVAILABLE, format!("restart did not finish within {timeout_s} s")),
    }
}

/// A checked `POST /restart` body.
struct RestartBody {
    role: Option<&'static str>,
    below_version: Option<u32>,
    postgres_version: Option<String>,
    restart_pending: bool,
    schedule: Option<(i64, String)>,
    timeout_s: u64,
}

/// Reads a `POST /restart` body (empty means no filters, now, 60 s).
fn restart_body(body: &str) -> Result<RestartBody, Reject> {
    let m = if body.trim().is_empty() { serde_json::Map::new() } else { parse_body(body)? };
    let bad = |msg: String| Box::new(text(StatusCode::BAD_REQUEST, msg));
    let mut r = RestartBody {
        role: None,
        below_version: None,
        postgres_version: None,
        restart_pending: false,
        schedule: None,
        timeout_s: 60,
    };
    for (k, v) in &m {
        match (k.as_str(), v) {
            ("role", Value::String(role)) => {
                r.role = Some(match role.as_str() {
                    "primary" | "master" | "leader" => "primary",
                    "replica" => "replica",
                    other => {
                        return Err(bad(format!("PostgreSQL role should be either primary or replica, not {other:?}")))
                    }
                })
            }
            ("postgres_version", Value::String(pv)) => match parse_pg_version(pv) {
                Some(n) => {
                    r.below_version = Some(n);
                    r.postgres_version = Some(pv.clone());
                }
                None => {
                    return Err(bad(format!("PostgreSQL version should be in the first.major.minor format: {pv:?}")))
                }
            },
            ("restart_pending", Value::Bool(b)) => r.restart_pending = *b,
            ("timeout", t) => {
                match t.as_u64().or_else(|| t.as_str().and_then(|x| x.trim_end_matches('s').parse().ok())) {
                    Some(n) if n > 0 => r.timeout_s = n,
                    _ => return Err(bad(format!("`timeout` must be a positive number of seconds, not {t}"))),
                }
            }
            ("schedule", Value::String(t)) => match shield_core::cluster::parse_timestamp_ms(t) {
                Ok(ms) => r.schedule = Some((ms, t.clone())),
                Err(e) => return Err(Box::new(text(StatusCode::UNPROCESSABLE_ENTITY, e))),
            },
            (k @ ("role" | "postgres_version" | "restart_pending" | "schedule"), v) => {
                return Err(bad(format!("`{k}` has the wrong type: {v}")))
            }
            (k, _) => return Err(bad(format!("unknown field `{k}`"))),
        }
    }
    Ok(r)
}

/// Records a scheduled restart, unless paused or another one is scheduled.
fn schedule_restart(s: &Shared, paused: bool, planned: ScheduledRestart) -> Response {
    if paused {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "Can't schedule restart in the paused state");
    }
    let Ok(mut g) = s.scheduled_restart.lock() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "internal state is unavailable");
    };
    if g.is_some() {
        return text(StatusCode::CONFLICT, "Another restart is already scheduled");
    }
    *g = Some(planned);
    text(StatusCode::ACCEPTED, "Restart scheduled")
}

/// The answer when PostgreSQL may not be restarted now: a filter fails, a task runs, or it is down.
fn restart_refused(snap: &Snapshot, r: &RestartBody) -> Option<Response> {
    if let Err(why) = restart_conditions(snap, r.role, r.below_version, r.restart_pending) {
        return Some(text(StatusCode::SERVICE_UNAVAILABLE, format!("restart conditions are not satisfied: {why}")));
    }
    let db = snap.db.as_ref();
    if db.is_some_and(|d| d.busy.is_some()) {
        return Some(text(StatusCode::SERVICE_UNAVAILABLE, "a database task is already in progress"));
    }
    if !matches!(db.map(|d| d.process), Some(DbProcess::Running { .. })) {
        let seen = db.map_or("not observed yet".to_owned(), |d| format!("{:?}", d.process).to_lowercase());
        return Some(text(StatusCode::SERVICE_UNAVAILABLE, format!("PostgreSQL is not running (last seen: {seen})")));
    }
    None
}

/// `DELETE /restart`: forget the scheduled restart.
pub(crate) async fn delete_restart(State(s): State<Shared>) -> Response {
    match s.scheduled_restart.lock().map(|mut g| g.take()) {
        Ok(Some(_)) => text(StatusCode::OK, "scheduled restart deleted"),
        _ => text(StatusCode::NOT_FOUND, "no restarts are scheduled"),
    }
}

/// `POST /reload`: re-read the config file on the next cycle, as SIGHUP does.
pub(crate) async fn reload(State(s): State<Shared>) -> Response {
    s.reload_requested.store(true, std::sync::atomic::Ordering::SeqCst);
    s.wake.notify_one();
    text(StatusCode::ACCEPTED, "reload scheduled")
}

/// `POST /reinitialize`: wipe this replica's data and clone it again from the leader.
pub(crate) async fn reinitialize(State(s): State<Shared>, body: String) -> Response {
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
