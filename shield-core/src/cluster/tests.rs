use serde_json::json;

use super::*;

fn kv(key: &str, value: &str, rev: u64) -> KvEntry {
    KvEntry { key: key.into(), value: value.as_bytes().to_vec(), revision: Revision(rev), owner: None }
}

fn name(s: &str) -> MemberName {
    MemberName::new(s).expect("valid name")
}

/// Values exactly as Patroni 3.x/4.x writes them.
fn patroni_fixture() -> Vec<KvEntry> {
    vec![
        kv("initialize", "7277694203142172922", 2),
        kv(
            "config",
            r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100}}}"#,
            3,
        ),
        kv("leader", "postgresql0", 9),
        kv(
            "members/postgresql0",
            r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"master","version":"3.3.1","xlog_location":67110040,"timeline":5}"#,
            10,
        ),
        kv(
            "members/postgresql1",
            r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","version":"4.0.0","xlog_location":67110040,"replication_state":"streaming","timeline":5,"tags":{"nofailover":"true","clonefrom":true}}"#,
            11,
        ),
        kv(
            "failover",
            r#"{"leader":"postgresql0","member":"postgresql1","scheduled_at":"2024-07-02T17:06:00+02:00"}"#,
            12,
        ),
        kv(
            "history",
            r#"[[1,25165984,"no recovery target specified","2024-07-02T10:00:00.123456+00:00","postgresql1"],[2,33554592,"no recovery target specified"]]"#,
            13,
        ),
        kv(
            "status",
            r#"{"optime":67110040,"slots":{"postgresql0":67110040,"postgresql1":67110040},"retain_slots":["postgresql0","postgresql1"]}"#,
            14,
        ),
        kv("sync", r#"{"leader":"postgresql0","sync_standby":"postgresql1"}"#, 15),
    ]
}

#[test]
fn patroni_values_parse() {
    let v = ClusterView::from_entries(Revision(15), &patroni_fixture());
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
    assert_eq!(v.system_id(), Some(SystemId(7277694203142172922)));
    assert_eq!(v.leader_name(), Some(&name("postgresql0")));
    let p0 = &v.members[&name("postgresql0")].data;
    assert_eq!(p0.role, MemberRole::Primary);
    assert_eq!(p0.xlog_location, Some(Lsn(67110040)));
    let p1 = &v.members[&name("postgresql1")].data;
    assert!(p1.tags.nofailover && p1.tags.clonefrom && !p1.tags.can_promote());
    let f = v.failover.as_ref().expect("failover");
    assert_eq!(f.member, Some(name("postgresql1")));
    assert_eq!(f.scheduled_at.as_ref().map(|s| s.0), Some(1_719_932_760_000));
    assert_eq!(v.history.len(), 2);
    assert_eq!(v.timeline(), Timeline(3));
    assert_eq!(v.optime(), Some(Lsn(67110040)));
    assert_eq!(v.sync.as_ref().map(|s| s.sync_standby.clone()), Some(vec![name("postgresql1")]));
    assert_eq!(v.config.as_ref().map(|c| c.0.timing.ttl_ms), Some(30_000));
}

#[test]
fn shield_writes_patroni_formats() {
    let v = ClusterView::from_entries(Revision(15), &patroni_fixture());
    let p1 = &v.members[&name("postgresql1")].data;
    let out = p1.to_json();
    assert_eq!(out["role"], json!("replica"));
    assert_eq!(out["xlog_location"], json!(67110040));
    assert_eq!(out["tags"]["nofailover"], json!(true));
    assert_eq!(out["version"], json!("4.0.0"));
    assert_eq!(MemberData::from_json_bytes(out.to_string().as_bytes()).as_ref(), Ok(p1));
    let f = v.failover.as_ref().expect("failover");
    assert_eq!(
        f.to_json(),
        json!({"leader":"postgresql0","member":"postgresql1","scheduled_at":"2024-07-02T17:06:00+02:00"})
    );
    assert_eq!(v.history[0].to_json()[4], json!("postgresql1"));
    assert_eq!(v.history[1].to_json().as_array().map(Vec::len), Some(3));
    assert_eq!(
        v.status.as_ref().map(Status::to_json),
        Some(
            json!({"optime":67110040,"slots":{"postgresql0":67110040,"postgresql1":67110040},"retain_slots":["postgresql0","postgresql1"]})
        )
    );
    // Patroni also accepts retain_slots as a string holding a JSON list.
    let e = [kv("status", r#"{"optime":1,"retain_slots":"[\"a\"]"}"#, 1)];
    assert_eq!(ClusterView::from_entries(Revision(1), &e).status.map(|s| s.retain_slots), Some(vec!["a".to_owned()]));
    assert_eq!(
        v.sync.as_ref().map(SyncState::to_json),
        Some(json!({"leader":"postgresql0","sync_standby":"postgresql1"}))
    );
}

#[test]
fn garbage_never_hides_the_rest() {
    let entries = vec![
        kv("leader", "", 1),
        kv("members/a", "{not json", 2),
        kv("members/b", r#"{"role":"replica","state":"running","timeline":"x","xlog_location":[1]}"#, 3),
        kv("members/c", "[1,2]", 4),
        kv("config", r#"{"ttl":"x"}"#, 5),
        kv("failover", r#"{"leader": 5}"#, 6),
        kv("history", "{}", 7),
        kv("status", "nope", 8),
        kv("sync", "[]", 9),
        kv("initialize", "abc", 10),
    ];
    let v = ClusterView::from_entries(Revision(10), &entries);
    assert_eq!(v.members.len(), 3);
    assert_eq!(v.members[&name("a")].data.state, "unknown");
    assert_eq!(v.members[&name("b")].data.role, MemberRole::Replica);
    assert_eq!(v.members[&name("b")].data.timeline, None);
    assert!(v.leader.is_some() && v.leader_name().is_none());
    assert_eq!(v.initialize, Some(Initialize::Invalid("abc".into())));
    assert_eq!(v.anomalies.len(), 9, "{:#?}", v.anomalies);
    assert!(v.anomalies.iter().any(|a| a.starts_with("config: config key `ttl`")));
}

#[test]
fn failover_legacy_and_empty_forms() {
    assert_eq!(FailoverRequest::parse(b"{}", Revision(1)), Ok(None));
    assert_eq!(FailoverRequest::parse(b"", Revision(1)), Ok(None));
    let r = FailoverRequest::parse(b"a:b", Revision(1)).expect("legacy").expect("some");
    assert_eq!((r.leader, r.member), (Some(name("a")), Some(name("b"))));
    assert!(FailoverRequest::parse(br#"{"member":"b","scheduled_at":"tomorrow"}"#, Revision(1)).is_err());
}

fn resume_view(leader: Option<&str>, members: &[(&str, &str, &str)]) -> ClusterView {
    let mut entries = vec![kv("config", r#"{"ttl":30,"pause":true}"#, 1)];
    if let Some(l) = leader {
        entries.push(kv("leader", l, 2));
    }
    for (n, role, state) in members {
        entries.push(kv(&format!("members/{n}"), &json!({"role": role, "state": state}).to_string(), 3));
    }
    ClusterView::from_entries(Revision(3), &entries)
}

#[test]
fn resume_is_safe_only_while_a_running_primary_holds_the_leader_key() {
    let healthy = [("a", "primary", "running"), ("b", "replica", "running")];
    assert_eq!(resume_view(Some("a"), &healthy).resume_blocker(), None);
    // Patroni before 4.0 writes `master`.
    assert_eq!(resume_view(Some("a"), &[("a", "master", "running")]).resume_blocker(), None);

    let why = |leader, members: &[(&str, &str, &str)]| resume_view(leader, members).resume_blocker();
    assert_eq!(why(None, &healthy).as_deref(), Some("no member holds the leader key"));
    assert_eq!(why(Some(""), &healthy).as_deref(), Some("the leader key names no valid member"));
    assert_eq!(why(Some("c"), &healthy).as_deref(), Some("the leader key is held by c, which has no member key"));
    assert_eq!(
        why(Some("b"), &healthy).as_deref(),
        Some("the leader key is held by b, whose member key says it is not running as primary (role: replica, state: running)")
    );
    assert_eq!(
        why(Some("a"), &[("a", "primary", "stopped")]).as_deref(),
        Some("the leader key is held by a, whose member key says it is not running as primary (role: primary, state: stopped)")
    );
    assert!(why(Some("a"), &[("a", "primary", "starting")]).is_some());
    assert!(why(Some("a"), &[("a", "demoted", "running")]).is_some());
    // An unparseable member key shows as role unknown, state unknown.
    let garbage = ClusterView::from_entries(Revision(2), &[kv("leader", "a", 1), kv("members/a", "{not json", 2)]);
    assert!(garbage.resume_blocker().is_some_and(|w| w.contains("role: unknown, state: unknown")));
}

#[test]
fn patroni_41_lsn_fields_and_the_failsafe_key_are_read_and_written() {
    let raw = r#"{"state":"running","role":"replica","xlog_location":300,"receive_lsn":300,"replay_lsn":200,"replication_state":"streaming"}"#;
    let entries = vec![
        kv("members/b", raw, 3),
        kv("failsafe", r#"{"a":"http://a:8008/patroni","b":"http://b:8008/patroni"}"#, 4),
    ];
    let v = ClusterView::from_entries(Revision(4), &entries);
    let b = &v.members[&name("b")].data;
    assert_eq!((b.receive_lsn, b.replay_lsn), (Some(Lsn(300)), Some(Lsn(200))));
    let out = b.to_json();
    assert_eq!((&out["receive_lsn"], &out["replay_lsn"]), (&json!(300), &json!(200)));
    // Unknown positions are left out, never written as null.
    let bare = MemberData::new(MemberRole::Replica, "running").to_json();
    for k in ["xlog_location", "receive_lsn", "replay_lsn", "timeline", "replication_state"] {
        assert!(bare.get(k).is_none(), "{k} in {bare}");
    }
    let fs = v.failsafe.as_ref().expect("failsafe");
    assert_eq!(fs.get("b"), Some(&json!("http://b:8008/patroni")));
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
    let bad = ClusterView::from_entries(Revision(1), &[kv("failsafe", "[]", 1)]);
    assert_eq!((bad.failsafe.is_none(), bad.anomalies.len()), (true, 1));
}

/// A `config` key with timings Patroni adjusts (loop_wait + 2*retry_timeout > ttl) is read
/// adjusted as Patroni reads it, not taken as garbage.
#[test]
fn a_config_patroni_would_adjust_is_adjusted_not_refused() {
    let e = [kv("config", r#"{"ttl":20,"loop_wait":10,"retry_timeout":10}"#, 1)];
    let v = ClusterView::from_entries(Revision(1), &e);
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
    let t = v.config.as_ref().map(|(c, _)| c.timing).expect("config");
    assert_eq!((t.ttl_ms, t.loop_wait_ms, t.retry_timeout_ms), (20_000, 1_000, 9_000));
    // The stored JSON is kept as written, for edits.
    assert_eq!(v.config_json, Some(json!({"ttl":20,"loop_wait":10,"retry_timeout":10})));
}

#[test]
fn implausible_history_timelines_are_left_out() {
    let member = |tl: u32| format!(r#"{{"role":"replica","state":"running","timeline":{tl}}}"#);
    let history = r#"[[1,100,"a"],[4000000000,200,"b"],[2,300,"c"]]"#;
    let v = ClusterView::from_entries(Revision(9), &[kv("history", history, 3), kv("members/m", &member(3), 4)]);
    assert_eq!(v.history.iter().map(|h| h.timeline.0).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(v.timeline(), Timeline(3));
    assert!(v.anomalies.iter().any(|a| a.contains("4000000000")), "{:?}", v.anomalies);
    // A truncated Patroni history far past its length, corroborated by a member's timeline.
    let truncated = r#"[[57,100,"a"],[58,200,"b"]]"#;
    let v = ClusterView::from_entries(Revision(9), &[kv("history", truncated, 3), kv("members/m", &member(59), 4)]);
    assert_eq!(v.timeline(), Timeline(59));
    assert!(v.anomalies.is_empty(), "{:?}", v.anomalies);
}
