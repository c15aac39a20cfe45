//! The unsafe endpoints: `PATCH`/`PUT /config`, `/restart`, `/reload`, `/reinitialize`,
//! `/switchover` and `/failover`. Access control runs before them (`guard.rs`).

use super::state::{ask, dcs_permit, name_field, parse_body, text, Reject, ScheduledRestart, Shared, Snapshot};

use super::state::restart_conditions;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use shield_core::cluster::{ClusterView, FailoverRequest};
use shield_core::ports::DcsKey;
use shield_core::{DbProcess, MemberName, Revision};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Patroni's deep merge, which is RFC 7396's JSON merge patch (`json-patch`): objects merge key
/// by key, `null` deletes, anything else replaces. One corner differs from Patroni's
/// `patch_config`, on purpose: an object patched in where there was none keeps no `null` members
/// (Patroni would store them; a `null` in the DCS config means nothing to either).
pub fn merge(into: &mut Value, patch: &Value) {
    json_patch::merge(into, patch);
}

pub(crate) async fn patch_config(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    body: String,
) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, body, true, force).await,
        Err(r) => *r,
    }
}

pub(crate) async fn put_config(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    body: String,
) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, body, false, force).await,
        Err(r) => *r,
    }
}

/// `?force=true` (or `1`) on `/config`: resume even when [`ClusterView::resume_blocker`] objects.
/// A query parameter, so the written config never carries an extra key.
pub(crate) fn force_param(q: &BTreeMap<String, String>) -> Result<bool, Reject> {
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
pub(crate) async fn write_config(s: Shared, body: String, patch: bool, force: bool) -> Response {
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
    if let Some(refused) = crate::rest::command_params::refusal(&before, &cfg, &allow) {
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

pub(crate) async fn delete_switchover(State(s): State<Shared>) -> Response {
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

pub(crate) async fn switchover(State(s): State<Shared>, body: String) -> Response {
    manual(s, body, false).await
}

pub(crate) async fn failover(State(s): State<Shared>, body: String) -> Response {
    manual(s, body, true).await
}

async fn manual(s: Shared, body: String, failover: bool) -> Response {
    let (leader, candidate, scheduled) = match manual_request(&body, failover) {
        Ok(r) => r,
        Err(r) => return *r,
    };
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
    if let Err(r) = manual_fits(view, &leader, &candidate) {
        return *r;
    }
    let req = FailoverRequest {
        leader: leader.clone(),
        member: candidate.clone(),
        scheduled_at: scheduled.clone(),
        revision: Revision(0),
    };
    if let Err(e) = s.dcs.write_failover(&req, view.failover_revision).await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("failed to write the request to the DCS: {e}"));
    }
    s.wake.notify_one();
    if let Some((_, at)) = scheduled {
        return text(StatusCode::ACCEPTED, format!("Switchover scheduled at: {at}"));
    }
    await_new_leader(&s, view.leader_name().cloned(), candidate, failover).await
}

/// A switchover or failover body's leader, candidate and schedule, with everything the request
/// alone shows checked before the DCS is asked anything.
fn manual_request(body: &str, failover: bool) -> Result<ManualRequest, Reject> {
    let m = parse_body(body)?;
    let (leader, candidate) = match (name_field(&m, "leader"), name_field(&m, "candidate")) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(r), _) | (_, Err(r)) => return Err(r),
    };
    let bad = |msg: &str| Err(Box::new(text(StatusCode::BAD_REQUEST, msg)));
    let scheduled = match m.get("scheduled_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => match shield_core::cluster::parse_timestamp_ms(t) {
            Ok(ms) => Some((ms, t.clone())),
            Err(e) => return Err(Box::new(text(StatusCode::UNPROCESSABLE_ENTITY, e))),
        },
        Some(other) => return bad(&format!("`scheduled_at` must be a string, not {other}")),
    };
    if failover && candidate.is_none() {
        return bad("Failover could be performed only to a specific candidate");
    }
    if failover && scheduled.is_some() {
        return bad("Failover can't be scheduled");
    }
    if !failover && leader.is_none() {
        return bad("Switchover could be performed only from a specific leader");
    }
    Ok((leader, candidate, scheduled))
}

/// A switchover or failover request: the leader, the candidate, and when (ms and as given).
type ManualRequest = (Option<MemberName>, Option<MemberName>, Option<(i64, String)>);

/// Checks the request's leader and candidate against a fresh read of the cluster.
fn manual_fits(view: &ClusterView, leader: &Option<MemberName>, candidate: &Option<MemberName>) -> Result<(), Reject> {
    if leader.is_some() && leader.as_ref() != view.leader_name() {
        return Err(Box::new(text(StatusCode::PRECONDITION_FAILED, "leader name does not match")));
    }
    if let Some(c) = candidate {
        if Some(c) == view.leader_name() {
            return Err(Box::new(text(StatusCode::BAD_REQUEST, "candidate is already the leader")));
        }
        if !view.members.get(c).is_some_and(|m| m.data.state == "running" && m.data.tags.can_promote()) {
            return Err(Box::new(text(
                StatusCode::PRECONDITION_FAILED,
                format!("candidate {c} is not a running member that may be promoted"),
            )));
        }
    }
    Ok(())
}

/// Waits for the new leader, as Patroni does (bounded, 30 s).
async fn await_new_leader(
    s: &Shared,
    old: Option<MemberName>,
    candidate: Option<MemberName>,
    failover: bool,
) -> Response {
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
