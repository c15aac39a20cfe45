//! `/metrics` against Patroni 4.1's families.

use super::metrics::*;
use super::state::*;

use shield_core::{DbProcess, DbStatus, Lsn, Timeline};

fn families(text: &str) -> Vec<&str> {
    text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect()
}

fn value(text: &str, family: &str) -> String {
    let prefix = format!("{family}{{");
    let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{family} missing"));
    line.rsplit(' ').next().unwrap_or_default().to_owned()
}

fn running_replica() -> Snapshot {
    let mut db = DbStatus::empty();
    db.process = DbProcess::Running { in_recovery: true };
    db.received_lsn = Some(Lsn(5000));
    db.replayed_lsn = Some(Lsn(4000));
    db.timeline = Some(Timeline(3));
    db.streaming = true;
    let mut snap = Snapshot { db: Some(db), dcs_last_seen_unix: 1_700_000_000, ..Default::default() };
    snap.server.server_version = Some(150004);
    snap.server.postmaster_start_us = Some(1_700_000_000_250_000);
    snap.server.replay_timestamp_us = Some(1_700_000_100_000_001);
    snap.server.replay_paused = Some(false);
    snap.decisions.insert("following".into(), 3);
    snap.vip = Some("10.0.0.10/24".into());
    snap
}

#[test]
fn every_patroni_41_family_is_exported_with_its_type_and_labels() {
    let text = render("demo", "node1", &running_replica(), true, true);
    let got = families(&text);
    for f in PATRONI_FAMILIES.iter().chain(SHIELD_FAMILIES) {
        assert!(got.contains(f), "{f} missing from\n{text}");
        assert!(text.contains(&format!("# HELP {f} ")), "{f} has no HELP");
    }
    assert_eq!(got.iter().filter(|f| f.starts_with("patroni_")).count(), PATRONI_FAMILIES.len());
    for f in ["patroni_xlog_location", "patroni_xlog_received_location", "patroni_xlog_replayed_location"] {
        assert!(text.contains(&format!("# TYPE {f} counter\n")), "{f} is a counter in Patroni");
    }
    assert!(text.contains("patroni_postgres_running{scope=\"demo\",name=\"node1\"} 1\n"), "{text}");
    assert!(text.contains("# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap,"), "{text}");
    assert!(text.contains("14=crashed\n"), "{text}");
    assert!(text.contains("shield_decisions{scope=\"demo\",name=\"node1\",reason=\"following\"} 3\n"));
    // Every sample line carries both labels.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.contains("{scope=\"demo\",name=\"node1\""), "{l}");
    }
}

#[test]
fn values_follow_patronis_meanings() {
    let snap = running_replica();
    let text = render("demo", "node1", &snap, true, true);
    let expect = [
        ("patroni_version", "40105".into()),
        ("shield_version", version_number(crate::rest::state::SHIELD_VERSION).to_string()),
        ("patroni_postmaster_start_time", "1700000000.250000".into()),
        ("patroni_primary", "0".into()),
        ("patroni_replica", "1".into()),
        ("patroni_sync_standby", "1".into()),
        ("patroni_xlog_location", "0".into()),
        ("patroni_xlog_received_location", "5000".into()),
        ("patroni_xlog_replayed_location", "4000".into()),
        ("patroni_xlog_replayed_timestamp", "1700000100.000001".into()),
        ("patroni_postgres_streaming", "1".into()),
        ("patroni_postgres_in_archive_recovery", "0".into()),
        ("patroni_postgres_server_version", "150004".into()),
        ("patroni_postgres_timeline", "3".into()),
        ("patroni_cluster_unlocked", "1".into()),
        ("patroni_postgres_state", "5".into()),
        ("patroni_failover_priority", "1".into()),
        ("patroni_dcs_last_seen", "1700000000".into()),
    ];
    for (f, want) in expect {
        assert_eq!(value(&text, f), want, "{f}");
    }
    // A stopped node: zeros, state 12, and no streaming families (as Patroni without a
    // server version).
    let mut stopped = snap.clone();
    if let Some(db) = stopped.db.as_mut() {
        db.process = DbProcess::Stopped;
    }
    stopped.server = Default::default();
    let text = render("demo", "node1", &stopped, false, false);
    assert_eq!(value(&text, "patroni_postgres_state"), "12");
    assert_eq!(value(&text, "patroni_xlog_received_location"), "0");
    assert_eq!(value(&text, "patroni_postmaster_start_time"), "0");
    assert!(!text.contains("patroni_postgres_streaming"), "{text}");
    // nofailover gives priority 0.
    let tagged = Snapshot { tags: serde_json::json!({"nofailover": true}), ..snap };
    assert_eq!(value(&render("demo", "node1", &tagged, false, true), "patroni_failover_priority"), "0");
}

#[test]
fn the_version_metric_is_patronis_integer_form_of_the_reported_version() {
    assert_eq!(version_number("4.1.4"), 40104);
    assert_eq!(version_number("4.1.5"), 40105);
    assert_eq!(version_number("3.0.2"), 30002);
    assert_eq!(version_number("0.1.0"), 100);
    assert_eq!(version_number("1.2.3-rc1"), 10203);
}

#[test]
fn label_values_are_escaped() {
    let text = render("a\"b", "n\\1", &Snapshot::default(), false, false);
    assert!(text.contains("{scope=\"a\\\"b\",name=\"n\\\\1\"}"), "{text}");
}
