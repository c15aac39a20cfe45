//! `GET /metrics`: Prometheus text (exposition format 0.0.4). Every `patroni_*` family Patroni 4.1
//! exports, with its name, HELP and TYPE lines, labels `scope` and `name`, and value meaning, then
//! Shield's own `shield_*` families. Rendered by hand from the last cycle's snapshot: Patroni's
//! `counter` families carry no `_total` suffix and its `patroni_postgres_state` family has a
//! `# Values:` comment, which a metrics library would not reproduce.

use std::fmt::Write as _;

use shield_core::cluster::Tags;
use shield_core::{DbProcess, DbStatus};

use super::state::{Shared, Snapshot};
use super::status::{dcs_fresh, is_sync_standby};
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// Every `patroni_*` family Patroni 4.1 exports, in its order. `patroni_postgres_streaming` and
/// `patroni_postgres_in_archive_recovery` are left out while the server version is unknown (the
/// database is not running), as Patroni leaves them out then.
pub const PATRONI_FAMILIES: &[&str] = &[
    "patroni_version",
    "patroni_postgres_running",
    "patroni_postmaster_start_time",
    "patroni_primary",
    "patroni_xlog_location",
    "patroni_standby_leader",
    "patroni_replica",
    "patroni_sync_standby",
    "patroni_quorum_standby",
    "patroni_xlog_received_location",
    "patroni_xlog_replayed_location",
    "patroni_xlog_replayed_timestamp",
    "patroni_xlog_paused",
    "patroni_postgres_streaming",
    "patroni_postgres_in_archive_recovery",
    "patroni_postgres_server_version",
    "patroni_cluster_unlocked",
    "patroni_failsafe_mode_is_active",
    "patroni_failsafe_mode_enabled",
    "patroni_failsafe_member",
    "patroni_postgres_timeline",
    "patroni_dcs_last_seen",
    "patroni_pending_restart",
    "patroni_is_paused",
    "patroni_postgres_state",
    "patroni_failover_priority",
];

/// Shield's own families (`shield_vip_bound` only with a VIP configured; `shield_decisions`
/// has one series per decision kind taken so far).
pub const SHIELD_FAMILIES: &[&str] =
    &["shield_lease_renew_milliseconds", "shield_fence_margin_milliseconds", "shield_vip_bound", "shield_decisions"];

/// Patroni's `PostgresqlState` names and their fixed indexes, for `patroni_postgres_state`.
const POSTGRES_STATES: &[(&str, &str)] = &[
    ("initdb", "initializing new cluster"),
    ("initdb_failed", "initdb failed"),
    ("custom_bootstrap", "running custom bootstrap script"),
    ("custom_bootstrap_failed", "custom bootstrap failed"),
    ("creating_replica", "creating replica"),
    ("running", "running"),
    ("starting", "starting"),
    ("bootstrap_starting", "starting after custom bootstrap"),
    ("start_failed", "start failed"),
    ("restarting", "restarting"),
    ("restart_failed", "restart failed"),
    ("stopping", "stopping"),
    ("stopped", "stopped"),
    ("stop_failed", "stop failed"),
    ("crashed", "crashed"),
];

/// Patroni's integer form of a version: each dotted part zero-padded to two digits and joined
/// (`4.1.4` → 40104, `0.1.0` → 100). Parts that are not numbers count as 0.
pub fn version_number(v: &str) -> u64 {
    v.split('.').fold(0u64, |acc, part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        acc.saturating_mul(100).saturating_add(digits.parse::<u64>().unwrap_or(0))
    })
}

/// Microseconds since the epoch as Patroni prints epoch seconds (a float), 0 when unknown.
fn epoch_seconds(us: Option<i64>) -> String {
    match us {
        Some(us) if us != 0 => {
            let sign = if us < 0 { "-" } else { "" };
            let a = us.unsigned_abs();
            format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
        }
        _ => "0".to_owned(),
    }
}

/// A label value, escaped as the text format asks.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn family(&mut self, name: &str, help: &str, kind: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "{name}{} {value}", self.labels);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, help, "gauge", value);
    }
}

/// The database's standing in one snapshot, as the families read it.
struct Db<'a> {
    status: Option<&'a DbStatus>,
    running: bool,
    primary: bool,
    replica: bool,
}

impl<'a> Db<'a> {
    fn of(snap: &'a Snapshot) -> Self {
        let status = snap.db.as_ref();
        Db {
            status,
            running: matches!(status.map(|d| d.process), Some(DbProcess::Running { .. })),
            primary: status.is_some_and(|d| d.is_running_primary()),
            replica: status.is_some_and(|d| d.is_running_replica()),
        }
    }
}

/// A position as a metric value, 0 when unknown.
fn lsn(l: Option<shield_core::Lsn>) -> u64 {
    l.map_or(0, |l| l.0)
}

/// Renders the metrics for one snapshot. `in_sync` says whether this node is a synchronous
/// standby, `dcs_fresh` whether the DCS view is fresh (an unknown cluster counts as unlocked, as
/// in Patroni).
pub fn render(scope: &str, name: &str, snap: &Snapshot, in_sync: bool, dcs_fresh: bool) -> String {
    let base = format!("scope=\"{}\",name=\"{}\"", escape(scope), escape(name));
    let mut o = Out { text: String::new(), labels: format!("{{{base}}}") };
    let db = Db::of(snap);
    node_families(&mut o, snap, &db, in_sync);
    replication_families(&mut o, snap, &db);
    cluster_families(&mut o, name, snap, &db, dcs_fresh);
    shield_families(&mut o, &base, snap);
    o.text
}

/// Patroni's families from `patroni_version` to `patroni_quorum_standby`: versions, whether
/// PostgreSQL runs, and this node's role.
fn node_families(o: &mut Out, snap: &Snapshot, db: &Db<'_>, in_sync: bool) {
    let info = &snap.server;
    // The Patroni release Shield speaks (4.1.5 → 40105); Shield's own version beside it.
    o.gauge("patroni_version", "Patroni semver without periods.", version_number(shield_core::PATRONI_COMPAT_VERSION));
    o.gauge("shield_version", "Shield semver without periods.", version_number(crate::rest::state::SHIELD_VERSION));
    o.gauge("patroni_postgres_running", "Value is 1 if Postgres is running, 0 otherwise.", u8::from(db.running));
    o.gauge(
        "patroni_postmaster_start_time",
        "Epoch seconds since Postgres started.",
        epoch_seconds(info.postmaster_start_us.filter(|_| db.running)),
    );
    o.gauge("patroni_primary", "Value is 1 if this node is the leader, 0 otherwise.", u8::from(db.primary));
    o.family(
        "patroni_xlog_location",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        "counter",
        if db.primary { lsn(db.status.and_then(|d| d.write_lsn)) } else { 0 },
    );
    o.gauge("patroni_standby_leader", "Value is 1 if this node is the standby_leader, 0 otherwise.", 0);
    o.gauge("patroni_replica", "Value is 1 if this node is a replica, 0 otherwise.", u8::from(db.replica));
    o.gauge("patroni_sync_standby", "Value is 1 if this node is a sync standby, 0 otherwise.", u8::from(in_sync));
    o.gauge("patroni_quorum_standby", "Value is 1 if this node is a quorum standby, 0 otherwise.", 0);
}

/// Patroni's replica families, `patroni_xlog_received_location` to
/// `patroni_postgres_in_archive_recovery`.
fn replication_families(o: &mut Out, snap: &Snapshot, db: &Db<'_>) {
    let info = &snap.server;
    let replica = db.replica;
    let (received, replayed) = if replica {
        let d = db.status.map(|d| (d.received_lsn.max(info.written_lsn).or(d.replayed_lsn), d.replayed_lsn));
        d.unwrap_or_default()
    } else {
        (None, None)
    };
    let streaming = replica && db.status.is_some_and(|d| d.streaming);
    o.family(
        "patroni_xlog_received_location",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        "counter",
        lsn(received),
    );
    o.family(
        "patroni_xlog_replayed_location",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        "counter",
        lsn(replayed),
    );
    o.gauge(
        "patroni_xlog_replayed_timestamp",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        epoch_seconds(info.replay_timestamp_us.filter(|_| replica)),
    );
    o.gauge(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        u8::from(replica && info.replay_paused == Some(true)),
    );
    if db.running && info.server_version.is_some_and(|v| v >= 90600) {
        o.gauge("patroni_postgres_streaming", "Value is 1 if Postgres is streaming, 0 otherwise.", u8::from(streaming));
        o.gauge(
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            u8::from(replica && !streaming && info.restore_command),
        );
    }
}

/// Patroni's families from `patroni_postgres_server_version` to `patroni_failover_priority`:
/// the cluster's state (lock, failsafe, pause) and this node's server version, timeline, DCS
/// contact, pending restart, state and priority.
fn cluster_families(o: &mut Out, name: &str, snap: &Snapshot, db: &Db<'_>, dcs_fresh: bool) {
    let info = &snap.server;
    let config = snap.cluster.config.as_ref().map(|(c, _)| c);
    o.gauge(
        "patroni_postgres_server_version",
        "Version of Postgres (if running), 0 otherwise.",
        info.server_version.filter(|_| db.running).unwrap_or(0),
    );
    o.gauge(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        u8::from(!dcs_fresh || snap.cluster.leader.is_none()),
    );
    o.gauge(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        u8::from(snap.failsafe_active),
    );
    o.gauge(
        "patroni_failsafe_mode_enabled",
        "Value is 1 if failsafe_mode is enabled, 0 otherwise.",
        u8::from(config.is_some_and(|c| c.failsafe_mode)),
    );
    o.gauge(
        "patroni_failsafe_member",
        "Value is 1 if this node is a member of failsafe, 0 otherwise.",
        u8::from(snap.cluster.failsafe.as_ref().is_some_and(|f| f.contains_key(name))),
    );
    o.gauge(
        "patroni_postgres_timeline",
        "Postgres timeline of this node (if running), 0 otherwise.",
        db.status.and_then(|d| d.timeline).filter(|_| db.running).map_or(0, |t| t.0),
    );
    o.gauge(
        "patroni_dcs_last_seen",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        snap.dcs_last_seen_unix,
    );
    o.gauge(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        u8::from(!info.pending_restart.is_empty()),
    );
    o.gauge("patroni_is_paused", "Value is 1 if auto failover is disabled, 0 otherwise.", u8::from(snap.paused));
    postgres_state(o, db.status);
    let tags = Tags::from_json(&snap.tags);
    o.gauge(
        "patroni_failover_priority",
        "Failover priority of this node.",
        if tags.nofailover { 0 } else { tags.priority() },
    );
}

/// `patroni_postgres_state`, with Patroni's `# Values:` comment listing the state indexes.
fn postgres_state(o: &mut Out, db: Option<&DbStatus>) {
    let _ = writeln!(o.text, "# HELP patroni_postgres_state Numeric representation of Postgres state.");
    let values: Vec<String> = POSTGRES_STATES.iter().enumerate().map(|(i, (n, _))| format!("{i}={n}")).collect();
    let _ = writeln!(o.text, "# Values: {}", values.join(", "));
    let _ = writeln!(o.text, "# TYPE patroni_postgres_state gauge");
    let state = crate::rest::state::state_str(db);
    let index = POSTGRES_STATES.iter().position(|(_, s)| *s == state).map_or(-1, |i| i as i64);
    let _ = writeln!(o.text, "patroni_postgres_state{} {index}", o.labels);
}

/// Shield's own families (`base`: the `scope` and `name` labels, for `shield_decisions`).
fn shield_families(o: &mut Out, base: &str, snap: &Snapshot) {
    o.gauge(
        "shield_lease_renew_milliseconds",
        "round trip of the last successful lease renewal.",
        snap.renew_latency_ms,
    );
    o.gauge(
        "shield_fence_margin_milliseconds",
        "time left before the fencing deadline at the last cycle (0 without a lease).",
        snap.fence_margin_ms,
    );
    if snap.vip.is_some() {
        o.gauge("shield_vip_bound", "1 if this host holds the cluster VIP.", u8::from(snap.vip_bound));
    }
    let _ = writeln!(o.text, "# HELP shield_decisions decisions taken since start, by reason.");
    let _ = writeln!(o.text, "# TYPE shield_decisions gauge");
    for (reason, n) in &snap.decisions {
        let _ = writeln!(o.text, "shield_decisions{{{base},reason=\"{}\"}} {n}", escape(reason));
    }
}

pub(crate) async fn metrics(State(s): State<Shared>) -> Response {
    let snap = s.snapshot();
    let body =
        crate::rest::metrics::render(&s.scope, s.name.as_str(), &snap, is_sync_standby(&s, &snap), dcs_fresh(&snap));
    ([("content-type", "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}
