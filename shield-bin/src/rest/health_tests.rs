//! Health checks, `/patroni`, `/cluster` and `/failsafe` through the router.

use axum::http::StatusCode;
use serde_json::{json, Value};
use shield_core::cluster::ClusterView;
use shield_core::{DbProcess, DbStatus, Lsn, Revision};
use std::time::{Duration, Instant};

use super::server::router;
use super::state::{Shared, Snapshot, SHIELD_VERSION};
use super::tests::state_with;

/// Sends one request through the router; the status and the body as text.
pub(crate) async fn call(s: &Shared, method: &str, uri: &str) -> (StatusCode, String) {
    use hyper::service::Service as _;
    let svc = hyper_util::service::TowerToHyperService::new(router(s.clone()));
    let req = axum::http::Request::builder().method(method).uri(uri).body(axum::body::Body::empty()).expect("request");
    let r = svc.call(req).await.expect("the router never fails");
    let code = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) async fn code(s: &Shared, uri: &str) -> StatusCode {
    call(s, "GET", uri).await.0
}

pub(crate) fn db(in_recovery: bool, received: Option<u64>, replayed: Option<u64>, streaming: bool) -> DbStatus {
    let mut d = DbStatus::empty();
    d.process = DbProcess::Running { in_recovery };
    d.write_lsn = (!in_recovery).then_some(Lsn(1000));
    d.received_lsn = received.map(Lsn);
    d.replayed_lsn = replayed.map(Lsn);
    d.streaming = streaming;
    d.timeline = Some(shield_core::Timeline(2));
    d
}

/// Member `a` of cluster `c` as a streaming replica 100 bytes (received) / 200 bytes
/// (replayed) behind leader `b`, whose optime is 1000; `sync` names `a` and synchronous mode
/// is on; the DCS was read just now.
fn replica_state() -> Shared {
    let (s, _) = state_with(&[]);
    let entries: Vec<shield_core::cluster::KvEntry> = [
        ("config", r#"{"ttl":30,"synchronous_mode":true,"maximum_lag_on_failover":500}"#),
        ("leader", "b"),
        ("status", r#"{"optime":1000}"#),
        ("sync", r#"{"leader":"b","sync_standby":"a"}"#),
        ("members/a", r#"{"role":"replica","state":"running","api_url":"http://h1:8008/patroni","conn_url":"postgres://h1:5432/postgres","xlog_location":900,"receive_lsn":900,"replay_lsn":800,"replication_state":"streaming","timeline":2}"#),
        ("members/b", r#"{"role":"primary","state":"running","api_url":"http://h2:8008/patroni","conn_url":"postgres://h2:5432/postgres","xlog_location":1000,"timeline":2}"#),
        ("members/c", r#"{"role":"replica","state":"starting"}"#),
    ]
    .iter()
    .map(|(k, v)| shield_core::cluster::KvEntry {
        key: (*k).to_owned(),
        value: v.as_bytes().to_vec(),
        revision: Revision(1),
        owner: None,
    })
    .collect();
    let snap = Snapshot {
        cluster: ClusterView::from_entries(Revision(1), &entries),
        db: Some(db(true, Some(900), Some(800), true)),
        ttl: Duration::from_secs(30),
        dcs_seen: Some(Instant::now()),
        last_cycle: Some(Instant::now()),
        tags: json!({"nofailover": true, "zone": "a", "weight": 3}),
        ..Snapshot::default()
    };
    *s.snap.lock().expect("lock") = snap;
    s
}

fn edit(s: &Shared, f: impl FnOnce(&mut Snapshot)) {
    f(&mut s.snap.lock().expect("lock"));
}

#[tokio::test]
async fn unknown_paths_answer_like_patronis_fall_through_health_check() {
    let s = replica_state();
    // An unknown GET path: 503 with the status JSON (Patroni's do_GET falls through to it).
    let (c, body) = call(&s, "GET", "/no-such-thing").await;
    assert_eq!(c, StatusCode::SERVICE_UNAVAILABLE);
    let v: Value = serde_json::from_str(&body).expect("status JSON");
    assert_eq!((v["state"].as_str(), v["role"].as_str()), (Some("running"), Some("replica")));
    assert_eq!(call(&s, "HEAD", "/no-such-thing").await, (StatusCode::SERVICE_UNAVAILABLE, String::new()));
    assert_eq!(call(&s, "OPTIONS", "/replica").await, (StatusCode::OK, String::new()));
    // Patroni matches health paths by substring, and routes by the first path segment.
    assert_eq!(code(&s, "/replica/").await, StatusCode::OK);
    assert_eq!(code(&s, "/health").await, StatusCode::OK);
    assert_eq!(code(&s, "/").await, StatusCode::SERVICE_UNAVAILABLE);
    let (c, body) = call(&s, "GET", "/patroni/").await;
    assert_eq!(c, StatusCode::OK);
    assert!(body.contains("\"xlog\""), "{body}");
    // Other methods on unknown paths: 501, as Patroni.
    let (c, body) = call(&s, "POST", "/no-such-thing").await;
    assert_eq!((c, body.as_str()), (StatusCode::NOT_IMPLEMENTED, "Unsupported method (\"POST\")"));
}

#[tokio::test]
async fn sync_quorum_and_read_only_variants_answer_with_patronis_codes() {
    let s = replica_state();
    let expect = [
        ("/sync", 200),
        ("/synchronous", 200),
        ("/async", 503),
        ("/asynchronous", 503),
        ("/quorum", 503),
        ("/read-only-sync", 200),
        ("/read-only-synchronous", 200),
        ("/read-only-quorum", 503),
        ("/read-only", 200),
        ("/replica", 200),
        ("/primary", 503),
        ("/leader", 503),
        ("/standby-leader", 503),
    ];
    for (path, want) in expect {
        assert_eq!(code(&s, path).await.as_u16(), want, "{path}");
    }
    // Out of the sync key: async.
    edit(&s, |snap| snap.cluster.sync = None);
    assert_eq!(code(&s, "/async").await, StatusCode::OK);
    assert_eq!(code(&s, "/read-only-sync").await, StatusCode::SERVICE_UNAVAILABLE);
    // Without a fresh DCS view the sync checks fail, the plain replica check does not.
    edit(&s, |snap| snap.dcs_seen = None);
    assert_eq!(code(&s, "/async").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code(&s, "/replica").await, StatusCode::OK);
    // The lock-holding primary passes every read-only variant and the leader paths.
    edit(&s, |snap| {
        snap.dcs_seen = Some(Instant::now());
        snap.holds_lock = true;
        snap.db = Some(db(false, None, None, false));
    });
    for path in ["/", "/primary", "/read-write", "/leader", "/read-only", "/read-only-sync", "/read-only-quorum"] {
        assert_eq!(code(&s, path).await, StatusCode::OK, "{path}");
    }
    for path in ["/replica", "/sync", "/async", "/quorum"] {
        assert_eq!(code(&s, path).await, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
}

#[tokio::test]
async fn failsafe_shows_the_topology_or_502() {
    let s = replica_state();
    let (c, body) = call(&s, "GET", "/failsafe").await;
    assert_eq!(c, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(call(&s, "POST", "/failsafe").await.0, StatusCode::BAD_GATEWAY);
    edit(&s, |snap| {
        let m = [("a", "http://h1:8008/patroni"), ("b", "http://h2:8008/patroni")];
        snap.cluster.failsafe = Some(m.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect());
    });
    let (c, body) = call(&s, "GET", "/failsafe").await;
    assert_eq!(c, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&body).ok(),
        Some(json!({"a": "http://h1:8008/patroni", "b": "http://h2:8008/patroni"}))
    );
}

#[tokio::test]
async fn health_query_parameters_lag_tags_and_replication_state() {
    let s = replica_state();
    // Replayed 800, leader at 1000: 200 bytes behind.
    let expect = [
        ("/replica?lag=199", 503),
        ("/replica?lag=200", 200),
        ("/replica?lag=1kB", 200),
        ("/replica?lag=16MB", 200),
        ("/async?lag=100", 503),
        ("/read-only?lag=100", 503),
        ("/sync?lag=100", 503),
        ("/replica?lag=", 200),
        ("/replica?tag_nofailover=true", 200),
        ("/replica?tag_nofailover=True", 503),
        ("/replica?tag_nofailover=false", 503),
        ("/replica?tag_zone=a", 200),
        ("/replica?tag_zone=b", 503),
        ("/replica?tag_weight=3", 200),
        ("/replica?tag_rack=1", 503),
        ("/health?tag_zone=b", 503),
        ("/replica?replication_state=streaming", 200),
        ("/replica?replication_state=in%20archive%20recovery", 503),
        ("/replica?unknown=1", 200),
    ];
    for (uri, want) in expect {
        assert_eq!(code(&s, uri).await.as_u16(), want, "{uri}");
    }
    // Bad values: 400 naming the parameter.
    for (uri, names) in [
        ("/replica?lag=lots", "lag=\"lots\""),
        ("/replica?lag=-5", "lag=\"-5\""),
        ("/async?lag=1XB", "unknown unit \"XB\""),
        ("/replica?replication_state=running", "replication_state=\"running\""),
        ("/readiness?mode=fast", "mode=\"fast\""),
    ] {
        let (c, body) = call(&s, "GET", uri).await;
        assert_eq!(c, StatusCode::BAD_REQUEST, "{uri}");
        assert!(body.contains(names), "{uri}: {body}");
    }
    // Tags are ignored on the leader paths.
    edit(&s, |snap| {
        snap.holds_lock = true;
        snap.db = Some(db(false, None, None, false));
    });
    assert_eq!(code(&s, "/primary?tag_zone=b").await, StatusCode::OK);
    assert_eq!(code(&s, "/read-only?tag_zone=b").await, StatusCode::SERVICE_UNAVAILABLE);
    // noloadbalance takes a replica out of /replica, not out of /health.
    edit(&s, |snap| {
        snap.holds_lock = false;
        snap.db = Some(db(true, Some(900), Some(800), true));
        snap.tags = json!({"noloadbalance": true});
    });
    assert_eq!(code(&s, "/replica").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code(&s, "/health").await, StatusCode::OK);
}

#[tokio::test]
async fn readiness_needs_a_streaming_replica_within_the_lag_limit() {
    let s = replica_state();
    // 200 bytes behind, maximum_lag_on_failover is 500.
    assert_eq!(call(&s, "GET", "/readiness").await, (StatusCode::OK, String::new()));
    assert_eq!(code(&s, "/readiness?lag=199").await, StatusCode::SERVICE_UNAVAILABLE);
    // mode=write counts from the received position (100 behind).
    assert_eq!(code(&s, "/readiness?lag=150&mode=write").await, StatusCode::OK);
    assert_eq!(code(&s, "/readiness?lag=150&mode=apply").await, StatusCode::SERVICE_UNAVAILABLE);
    edit(&s, |snap| {
        if let Some((c, _)) = snap.cluster.config.as_mut() {
            c.maximum_lag_on_failover_bytes = 100;
        }
    });
    assert_eq!(code(&s, "/readiness").await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(code(&s, "/readiness?lag=1MB").await, StatusCode::OK);
    // Not streaming: not ready, whatever the lag.
    edit(&s, |snap| snap.db = Some(db(true, Some(1000), Some(1000), false)));
    assert_eq!(code(&s, "/readiness?lag=1GB").await, StatusCode::SERVICE_UNAVAILABLE);
    // Stopped: not ready; the lock holder: ready.
    edit(&s, |snap| snap.db.as_mut().map_or((), |d| d.process = DbProcess::Stopped));
    assert_eq!(code(&s, "/readiness").await, StatusCode::SERVICE_UNAVAILABLE);
    edit(&s, |snap| snap.holds_lock = true);
    assert_eq!(code(&s, "/readiness").await, StatusCode::OK);
    assert_eq!(code(&s, "/liveness").await, StatusCode::OK);
}

/// A primary whose status query stops answering still reports role primary (state unknown), as
/// Patroni reports its cached role; once the server is seen stopped the remembered role goes.
#[tokio::test]
async fn a_primary_whose_status_does_not_answer_still_reports_role_primary() {
    let s = replica_state();
    let role = |s: Shared| async move {
        let (_, body) = call(&s, "GET", "/patroni").await;
        let v: Value = serde_json::from_str(&body).expect("JSON");
        (v["role"].as_str().unwrap_or_default().to_owned(), v["state"].as_str().unwrap_or_default().to_owned())
    };
    edit(&s, |snap| snap.set_db(db(false, None, None, false)));
    assert_eq!(role(s.clone()).await, ("primary".to_owned(), "running".to_owned()));
    let unknown = DbStatus::unanswered(Some(&db(false, None, None, false)), Some(true));
    edit(&s, |snap| snap.set_db(unknown.clone()));
    assert_eq!(role(s.clone()).await, ("primary".to_owned(), "unknown".to_owned()));
    let mut stopped = db(false, None, None, false);
    stopped.process = DbProcess::Stopped;
    edit(&s, |snap| snap.set_db(stopped));
    edit(&s, |snap| snap.set_db(unknown));
    assert_eq!(role(s.clone()).await.0, "replica");
}

#[tokio::test]
async fn status_json_never_carries_null_positions() {
    let s = replica_state();
    let get = |s: Shared| async move {
        let (c, body) = call(&s, "GET", "/patroni").await;
        assert_eq!(c, StatusCode::OK);
        serde_json::from_str::<Value>(&body).expect("JSON")
    };
    let v = get(s.clone()).await;
    assert_eq!(v["xlog"]["received_location"], json!(900));
    assert_eq!(v["xlog"]["replayed_location"], json!(800));
    assert_eq!(v["replication_state"], json!("streaming"));
    assert_eq!(v["sync_standby"], json!(true));
    assert_eq!(v["patroni"]["version"], json!(shield_core::PATRONI_COMPAT_VERSION));
    assert_eq!(v["patroni"]["shield_version"], json!(SHIELD_VERSION));
    // Nothing received yet: the replayed position stands in, as in Patroni.
    edit(&s, |snap| snap.db = Some(db(true, None, Some(800), true)));
    assert_eq!(get(s.clone()).await["xlog"]["received_location"], json!(800));
    // Nothing known: the keys are absent, not null (a Patroni peer's max() fails on null).
    edit(&s, |snap| snap.db = Some(db(true, None, None, false)));
    let v = get(s.clone()).await;
    let x = v["xlog"].as_object().expect("xlog");
    assert!(!x.contains_key("received_location") && !x.contains_key("replayed_location"), "{v}");
    assert!(v.get("replication_state").is_none(), "{v}");
    // A stopped node has no xlog at all, as Patroni's; no other value is null either.
    let mut stopped = db(true, Some(5), Some(5), false);
    stopped.process = DbProcess::Stopped;
    edit(&s, |snap| snap.db = Some(stopped));
    let v = get(s.clone()).await;
    assert!(v.get("xlog").is_none(), "{v}");
    let nulls: Vec<&String> =
        v.as_object().expect("object").iter().filter(|(_, x)| x.is_null()).map(|(k, _)| k).collect();
    assert!(nulls.is_empty(), "{nulls:?} in {v}");
    // A primary: its location only.
    edit(&s, |snap| snap.db = Some(db(false, None, None, false)));
    assert_eq!(get(s.clone()).await["xlog"], json!({"location": 1000}));
}

#[tokio::test]
async fn cluster_names_a_streaming_replica_streaming_with_patroni_41s_lags() {
    let s = replica_state();
    let (c, body) = call(&s, "GET", "/cluster").await;
    assert_eq!(c, StatusCode::OK);
    let v: Value = serde_json::from_str(&body).expect("JSON");
    let m = v["members"].as_array().expect("members");
    let names: Vec<&str> = m.iter().filter_map(|x| x["name"].as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(m[0]["role"], json!("sync_standby"));
    assert_eq!(m[0]["state"], json!("streaming"));
    assert_eq!((&m[0]["host"], &m[0]["port"]), (&json!("h1"), &json!(5432)));
    assert_eq!((&m[0]["lsn"], &m[0]["lag"]), (&json!("0/384"), &json!(100)));
    assert_eq!((&m[0]["receive_lsn"], &m[0]["receive_lag"]), (&json!("0/384"), &json!(100)));
    assert_eq!((&m[0]["replay_lsn"], &m[0]["replay_lag"]), (&json!("0/320"), &json!(200)));
    assert_eq!((&m[1]["role"], &m[1]["state"]), (&json!("leader"), &json!("running")));
    assert!(m[1].get("lag").is_none() && m[1].get("lsn").is_none(), "{}", m[1]);
    assert_eq!((&m[2]["role"], &m[2]["state"]), (&json!("replica"), &json!("starting")));
    assert_eq!((&m[2]["lag"], &m[2]["replay_lsn"]), (&json!("unknown"), &json!("unknown")));
    assert!(m[2].get("host").is_none() && m[2].get("timeline").is_none(), "{}", m[2]);
    assert_eq!(v["scope"], json!("c"));
}
