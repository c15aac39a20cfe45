//! `GET /metrics`: Prometheus text with Patroni's `patroni_*` names (labels `scope`, `name`) and
//! Shield's own `shield_*` metrics, rendered by prometheus-client from the last cycle's snapshot.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shield_core::DbProcess;

use crate::api::Snapshot;

type Labels = Vec<(String, String)>;

/// Renders the metrics for one snapshot.
pub fn render(scope: &str, name: &str, snap: &Snapshot) -> String {
    let mut reg = Registry::default();
    let base: Labels = vec![("scope".into(), scope.into()), ("name".into(), name.into())];
    let mut gauge = |metric: &str, help: &str, v: i64| {
        let f = Family::<Labels, Gauge>::default();
        f.get_or_create(&base).set(v);
        reg.register(metric, help, f);
    };
    let db = snap.db.as_ref();
    let running = matches!(db.map(|d| d.process), Some(DbProcess::Running { .. }));
    let primary = db.is_some_and(|d| d.is_running_primary());
    let replica = db.is_some_and(|d| d.is_running_replica());
    let lsn = |l: Option<shield_core::Lsn>| l.map_or(0, |l| l.0 as i64);
    gauge("patroni_version", "Shield's version, as Patroni's integer form", 100);
    gauge("patroni_postgres_running", "1 if PostgreSQL is running", i64::from(running));
    gauge("patroni_primary", "1 if this node is the leader and runs as primary", i64::from(primary && snap.holds_lock));
    gauge("patroni_replica", "1 if this node runs as a replica", i64::from(replica));
    gauge("patroni_standby_leader", "1 if this node leads a standby cluster", 0);
    gauge(
        "patroni_xlog_location",
        "WAL position of the primary",
        if primary { lsn(db.and_then(|d| d.write_lsn)) } else { 0 },
    );
    gauge("patroni_xlog_received_location", "received WAL position", lsn(db.and_then(|d| d.received_lsn)));
    gauge("patroni_xlog_replayed_location", "replayed WAL position", lsn(db.and_then(|d| d.replayed_lsn)));
    gauge("patroni_postgres_streaming", "1 if the replica streams", i64::from(db.is_some_and(|d| d.streaming)));
    gauge(
        "patroni_postgres_timeline",
        "PostgreSQL timeline",
        db.and_then(|d| d.timeline).map_or(0, |t| i64::from(t.0)),
    );
    gauge("patroni_cluster_unlocked", "1 if nobody holds the leader key", i64::from(snap.cluster.leader.is_none()));
    gauge("patroni_is_paused", "1 in maintenance mode", i64::from(snap.paused));
    gauge("patroni_dcs_last_seen", "Unix time of the last successful DCS read", snap.dcs_last_seen_unix);
    gauge("shield_lease_renew_milliseconds", "round trip of the last successful lease renewal", snap.renew_latency_ms);
    gauge(
        "shield_fence_margin_milliseconds",
        "time left before the fencing deadline at the last cycle (0 without a lease)",
        snap.fence_margin_ms,
    );
    if snap.vip.is_some() {
        gauge("shield_vip_bound", "1 if this host holds the cluster VIP", i64::from(snap.vip_bound));
    }
    let decisions = Family::<Labels, Gauge>::default();
    for (reason, n) in &snap.decisions {
        let mut l = base.clone();
        l.push(("reason".into(), reason.clone()));
        decisions.get_or_create(&l).set(*n as i64);
    }
    reg.register("shield_decisions", "decisions taken since start, by reason", decisions);
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        return "# metrics could not be encoded\n".to_owned();
    }
    out
}
