//! Snapshot tests of patronictl's layouts.

use serde_json::json;
use shield_core::cluster::{ClusterView, KvEntry};
use shield_core::{Lsn, Revision, Timeline};

use super::*;

fn view(entries: &[(&str, String)]) -> ClusterView {
    let e: Vec<KvEntry> = entries
        .iter()
        .map(|(k, v)| KvEntry {
            key: (*k).to_owned(),
            value: v.clone().into_bytes(),
            revision: Revision(1),
            owner: None,
        })
        .collect();
    ClusterView::from_entries(Revision(9), &e)
}

fn member(port: u16, role: &str, state: &str, xlog: u64, extra: serde_json::Value) -> String {
    let mut m = json!({"conn_url": format!("postgres://127.0.0.1:{port}/postgres"),
        "api_url": format!("http://127.0.0.1:{}/patroni", port + 3000), "state": state, "role": role,
        "xlog_location": xlog, "timeline": 5});
    if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    m.to_string()
}

fn batman() -> Vec<(&'static str, String)> {
    vec![
        ("initialize", "7277694203142172922".into()),
        ("leader", "postgresql0".into()),
        ("status", json!({"optime": 67110040}).to_string()),
        ("members/postgresql0", member(5432, "master", "running", 67110040, json!({}))),
        (
            "members/postgresql1",
            member(5433, "replica", "running", 67110040 - 3 * 1024 * 1024, json!({"replication_state": "streaming"})),
        ),
    ]
}

#[test]
fn list_matches_patronictl_layout() {
    let out = list("batman", &view(&batman()), false, false, Format::Pretty);
    let want = "\
+ Cluster: batman (7277694203142172922) -+-----------+----+-----------+
| Member      | Host           | Role    | State     | TL | Lag in MB |
+-------------+----------------+---------+-----------+----+-----------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running   |  5 |           |
| postgresql1 | 127.0.0.1:5433 | Replica | streaming |  5 |         3 |
+-------------+----------------+---------+-----------+----+-----------+";
    assert_eq!(out, want, "\n{out}");
}

#[test]
fn unknown_lag_pause_and_scheduled_switchover_footer() {
    let mut e = batman();
    e[4].1 =
        json!({"conn_url": "postgres://127.0.0.1:5433/postgres", "state": "starting", "role": "replica"}).to_string();
    e.push(("config", json!({"ttl": 4, "pause": true}).to_string()));
    e.push((
        "failover",
        json!({"leader": "postgresql0", "member": "postgresql1", "scheduled_at": "2026-11-25T01:00:00+00:00"})
            .to_string(),
    ));
    let out = list("batman", &view(&e), false, false, Format::Pretty);
    let want = "\
+ Cluster: batman (7277694203142172922) -+----------+----+-----------+
| Member      | Host           | Role    | State    | TL | Lag in MB |
+-------------+----------------+---------+----------+----+-----------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running  |  5 |           |
| postgresql1 | 127.0.0.1:5433 | Replica | starting |    |   unknown |
+-------------+----------------+---------+----------+----+-----------+
 Maintenance mode: on
 Switchover scheduled at: 2026-11-25T01:00:00+00:00
                    from: postgresql0
                      to: postgresql1";
    assert_eq!(out, want, "\n{out}");
}

#[test]
fn hosts_without_ports_when_all_on_5432_and_sync_standby_role() {
    let e = vec![
        ("initialize", "".to_owned()),
        ("leader", "a".into()),
        ("sync", json!({"leader": "a", "sync_standby": "b"}).to_string()),
        ("members/a", json!({"conn_url": "postgres://10.0.0.1:5432/postgres", "state": "running", "role": "master", "xlog_location": 100, "timeline": 2}).to_string()),
        ("members/b", json!({"conn_url": "postgres://10.0.0.2:5432/postgres", "state": "running", "role": "replica", "xlog_location": 100, "timeline": 2}).to_string()),
    ];
    let out = list("c1", &view(&e), false, false, Format::Pretty);
    let want = "\
+ Cluster: c1 (initializing) ------+---------+----+-----------+
| Member | Host     | Role         | State   | TL | Lag in MB |
+--------+----------+--------------+---------+----+-----------+
| a      | 10.0.0.1 | Leader       | running |  2 |           |
| b      | 10.0.0.2 | Sync Standby | running |  2 |         0 |
+--------+----------+--------------+---------+----+-----------+";
    assert_eq!(out, want, "\n{out}");
}

#[test]
fn multi_line_tags_draw_rules_between_rows_and_pending_restart_shows() {
    let mut e = batman();
    e[3].1 = member(5432, "master", "running", 67110040, json!({"tags": {"nofailover": true, "clonefrom": true}}));
    e[4].1 = member(5433, "replica", "running", 67110040, json!({"pending_restart": true}));
    let out = list("batman", &view(&e), false, false, Format::Pretty);
    let want = "\
+ Cluster: batman (7277694203142172922) -+---------+----+-----------+-----------------+------------------+
| Member      | Host           | Role    | State   | TL | Lag in MB | Pending restart | Tags             |
+-------------+----------------+---------+---------+----+-----------+-----------------+------------------+
| postgresql0 | 127.0.0.1:5432 | Leader  | running |  5 |           |                 | clonefrom: true  |
|             |                |         |         |    |           |                 | nofailover: true |
+-------------+----------------+---------+---------+----+-----------+-----------------+------------------+
| postgresql1 | 127.0.0.1:5433 | Replica | running |  5 |         0 | *               |                  |
+-------------+----------------+---------+---------+----+-----------+-----------------+------------------+";
    assert_eq!(out, want, "\n{out}");
}

#[test]
fn uninitialized_cluster_and_a_long_title_widen_the_table() {
    let out = list("a-cluster-with-a-rather-long-name", &view(&[]), false, false, Format::Pretty);
    let first = out.lines().next().unwrap_or_default();
    assert!(first.starts_with("+ Cluster: a-cluster-with-a-rather-long-name (uninitialized) "), "{out}");
    let widths: Vec<usize> = out.lines().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "ragged table:\n{out}");
}

#[test]
fn json_tsv_and_yaml_carry_the_cluster_column_and_numbers() {
    let v = view(&batman());
    let j: serde_json::Value = serde_json::from_str(&list("batman", &v, false, false, Format::Json)).expect("json");
    assert_eq!(
        j,
        json!([
            {"Cluster": "batman", "Member": "postgresql0", "Host": "127.0.0.1:5432", "Role": "Leader", "State": "running", "TL": 5},
            // patronictl 4.1's keys; a member that publishes only xlog_location shows it as
            // received while streaming.
            {"Cluster": "batman", "Member": "postgresql1", "Host": "127.0.0.1:5433", "Role": "Replica", "State": "streaming", "TL": 5,
             "Receive LSN": "0/3D00498", "Receive Lag": 3, "Replay LSN": "unknown"}
        ])
    );
    let tsv = list("batman", &v, false, false, Format::Tsv);
    assert_eq!(
        tsv.lines().next(),
        Some("Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag")
    );
    assert_eq!(
        tsv.lines().nth(2),
        Some("batman\tpostgresql1\t127.0.0.1:5433\tReplica\tstreaming\t5\t0/3D00498\t3\tunknown\t")
    );
    // Members that publish both positions (Patroni 4.1, Shield) show each.
    let mut e = batman();
    e[4].1 = member(
        5433,
        "replica",
        "running",
        67110040,
        json!({"receive_lsn": 67110040, "replay_lsn": 67110040 - 1024 * 1024}),
    );
    let j: serde_json::Value =
        serde_json::from_str(&list("batman", &view(&e), false, false, Format::Json)).expect("json");
    assert_eq!(
        (&j[1]["Receive Lag"], &j[1]["Replay LSN"], &j[1]["Replay Lag"]),
        (&json!(0), &json!("0/3F00498"), &json!(1))
    );
    let y = list("batman", &v, false, false, Format::Yaml);
    assert!(y.starts_with("- Cluster: batman\n  Host: 127.0.0.1:5432\n  Member: postgresql0\n"), "{y}");
}

#[test]
fn topology_puts_replicas_under_the_leader() {
    let mut e = batman();
    e[1].1 = "postgresql1".into();
    let out = list("batman", &view(&e), false, true, Format::Pretty);
    let rows: Vec<&str> = out.lines().skip(3).take(2).collect();
    assert!(rows[0].starts_with("| postgresql1 "), "{out}");
    assert!(rows[1].starts_with("| + postgresql0 "), "{out}");
}

#[test]
fn history_table_has_patronictls_columns() {
    let lines = vec![HistoryLine {
        timeline: Timeline(1),
        lsn: Lsn(25165984),
        reason: "no recovery target specified".into(),
        timestamp: Some("2026-11-24T10:00:00+00:00".into()),
        new_leader: Some("postgresql1".into()),
    }];
    let out = history(&lines, Format::Pretty);
    let want = "\
+----+----------+------------------------------+---------------------------+-------------+
| TL |      LSN | Reason                       | Timestamp                 | New Leader  |
+----+----------+------------------------------+---------------------------+-------------+
|  1 | 25165984 | no recovery target specified | 2026-11-24T10:00:00+00:00 | postgresql1 |
+----+----------+------------------------------+---------------------------+-------------+";
    assert_eq!(out, want, "\n{out}");
}

#[test]
fn role_filters() {
    let v = view(&batman());
    let names = |r: &str| -> Vec<String> {
        members_with_role(&v, r).expect("role").into_iter().map(|n| n.to_string()).collect()
    };
    assert_eq!(names("leader"), ["postgresql0"]);
    assert_eq!(names("replica"), ["postgresql1"]);
    assert_eq!(names("any").len(), 2);
    assert!(members_with_role(&v, "boss").is_err());
}
