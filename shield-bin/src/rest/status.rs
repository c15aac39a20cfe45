//! The status documents: `/patroni` (what peers read in the leader race), `/cluster`, `/history`
//! and `GET /config`.

use super::state::{role_str, state_str};
use super::state::{ApiState, Shared, Snapshot, SHIELD_VERSION};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use shield_core::cluster::{ClusterView, Member};
use shield_core::{DbStatus, Lsn};

/// A running replica's `replication_state`, as Patroni names it: `streaming`, or
/// `in archive recovery` when it does not stream but has a `restore_command`; else none.
pub(crate) fn replication_state(snap: &Snapshot) -> Option<&'static str> {
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
pub(crate) fn dcs_fresh(snap: &Snapshot) -> bool {
    snap.dcs_seen.is_some_and(|t| t.elapsed() < snap.ttl)
}

/// This node is a synchronous standby: a running replica named in the `sync` key while
/// `synchronous_mode` is on (names compared case-insensitively, as Patroni does).
pub(crate) fn is_sync_standby(s: &ApiState, snap: &Snapshot) -> bool {
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
pub(crate) fn replica_positions(snap: &Snapshot) -> (Option<Lsn>, Option<Lsn>) {
    let Some(db) = snap.db.as_ref() else { return (None, None) };
    let received = db.received_lsn.max(snap.server.written_lsn).or(db.replayed_lsn);
    (received, db.replayed_lsn)
}

/// The status JSON (`GET /patroni`, and the body of every health answer). A value that is not
/// known is left out, never sent as `null`: Patroni peers compare the positions in their leader
/// race and fail on a `null`.
pub(crate) fn status_json(s: &ApiState, snap: &Snapshot) -> Value {
    let db = snap.db.as_ref();
    let mut v = json!({
        "state": state_str(db),
        "role": role_str(snap),
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
    if snap.failsafe_active {
        v["failsafe_mode_is_active"] = json!(true);
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
    add_positions(&mut v, s, snap, db);
    v
}

/// Adds `xlog` (and a replica's `replication_state` and `sync_standby`) to the status JSON.
fn add_positions(v: &mut Value, s: &ApiState, snap: &Snapshot, db: &DbStatus) {
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
}

pub(crate) async fn patroni(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(status_json(&s, &snap)).into_response()
}

/// `GET /cluster`, as Patroni 4.1's: members sorted by name with role `leader`, `sync_standby`
/// or `replica`; a replica's state is its `replication_state` (`streaming`) when it has one;
/// `lsn`/`receive_lsn`/`replay_lsn` with their lags (or `unknown`) for every non-leader.
pub(crate) async fn cluster(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(cluster_json(&s.scope, &snap.cluster, snap.paused)).into_response()
}

fn cluster_json(scope: &str, v: &ClusterView, paused: bool) -> Value {
    let members: Vec<Value> = v.members.values().map(|m| member_json(v, m)).collect();
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

/// One member of `GET /cluster`.
fn member_json(v: &ClusterView, m: &Member) -> Value {
    let sync_mode = v.config.as_ref().is_some_and(|(c, _)| c.synchronous_mode);
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
    if let Some((host, port)) = m.data.conn_url.as_deref().and_then(shield_db_postgres::host_port) {
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
        insert_lags(&mut o, m, v.optime().map_or(0, |l| l.0));
    }
    Value::Object(o)
}

/// A non-leader's `lsn`/`receive_lsn`/`replay_lsn` and their lags behind `cluster_lsn` (or `unknown`).
fn insert_lags(o: &mut serde_json::Map<String, Value>, m: &Member, cluster_lsn: u64) {
    for (prefix, lsn) in [("receive_", m.data.receive_lsn), ("replay_", m.data.replay_lsn), ("", m.data.xlog_location)]
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

pub(crate) async fn history(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    Json(Value::Array(snap.cluster.history.iter().map(|h| h.to_json()).collect())).into_response()
}

pub(crate) async fn config(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    match &snap.cluster.config {
        Some((c, _)) => Json(c.to_json()).into_response(),
        None => (StatusCode::BAD_GATEWAY, "config is not set in the DCS").into_response(),
    }
}
