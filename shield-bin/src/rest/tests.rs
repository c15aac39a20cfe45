//! Handler tests through the router.

use axum::http::StatusCode;
use serde_json::{json, Value};
use shield_core::MemberName;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::admin::parse_pg_version;
use super::config_edit::{force_param, merge, write_config};
use super::health::parse_lag;
use super::state::{ApiState, Shared};

#[test]
fn config_patches_merge_deeply_and_null_deletes() {
    let mut c = json!({"ttl": 4, "postgresql": {"parameters": {"a": 1, "b": 2}}, "pause": true});
    merge(&mut c, &json!({"ttl": 6, "postgresql": {"parameters": {"a": null, "c": 3}}, "pause": null}));
    assert_eq!(c, json!({"ttl": 6, "postgresql": {"parameters": {"b": 2, "c": 3}}}));
    // RFC 7396: a non-object is replaced whole; a new object carries no nulls.
    let mut c = json!({"tags": ["a"], "ttl": 4});
    merge(&mut c, &json!({"tags": {"x": 1, "y": null}, "slots": {"s": {"type": "physical", "gone": null}}}));
    assert_eq!(c, json!({"tags": {"x": 1}, "ttl": 4, "slots": {"s": {"type": "physical"}}}));
    let mut c = json!({"ttl": 4});
    merge(&mut c, &json!([1]));
    assert_eq!(c, json!([1]));
}

/// An API state over an in-memory DCS holding `entries` (relative keys) for cluster `c`.
pub(super) fn state_with(entries: &[(&str, &str)]) -> (Shared, shield_core::testing::MemoryStore) {
    let store = shield_core::testing::MemoryStore::new();
    for (k, v) in entries {
        store.put_raw(&format!("/service/c/{k}"), v.as_bytes());
    }
    let name = MemberName::new("a").expect("name");
    let dcs = Arc::new(store.client("/service", "c", name.clone(), 30_000));
    (Arc::new(ApiState::new(name, "c", None, dcs)), store)
}

pub(crate) async fn send(s: &Shared, body: &str, patch: bool, force: bool) -> (StatusCode, String) {
    let r = write_config(s.clone(), body.to_owned(), patch, force).await;
    let code = r.status();
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
    (code, String::from_utf8_lossy(&bytes).into_owned())
}

fn stored_config(store: &shield_core::testing::MemoryStore) -> Value {
    let raw = store.get_raw("/service/c/config").expect("config key");
    serde_json::from_slice(&raw).expect("config JSON")
}

/// A PATCH writes back exactly the stored JSON with its change: no defaults Shield fills in
/// (`fence_margin`, `primary_start_timeout`), keys it does not know kept as they were.
#[tokio::test]
async fn a_patch_writes_exactly_what_it_changes() {
    let stored =
        r#"{"ttl":20,"loop_wait":10,"retry_timeout":5,"postgresql":{"parameters":{"a":"1"}},"custom":{"x":[1]}}"#;
    let (s, store) = state_with(&[("config", stored)]);
    let (code, text) = send(&s, r#"{"ttl":30,"postgresql":{"parameters":{"b":"2"}}}"#, true, false).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let want = json!({"ttl":30,"loop_wait":10,"retry_timeout":5,"postgresql":{"parameters":{"a":"1","b":"2"}},"custom":{"x":[1]}});
    assert_eq!(stored_config(&store), want);
    assert_eq!(serde_json::from_str::<Value>(&text).expect("answer"), want);
}

/// A parameter that runs a command is refused unless the node allows it; one left as it is
/// passes, so other settings of a cluster that archives stay editable.
#[tokio::test]
async fn command_parameters_change_only_where_the_node_allows_it() {
    let stored = r#"{"ttl":20,"postgresql":{"parameters":{"archive_command":"cp %p /a/%f"}}}"#;
    let (s, store) = state_with(&[("config", stored)]);
    let (code, text) =
        send(&s, r#"{"postgresql":{"parameters":{"archive_command":"curl x | sh"}}}"#, true, false).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{text}");
    assert!(text.contains("archive_command") && text.contains("allow_command_parameters"), "{text}");
    let (code, text) = send(&s, r#"{"ttl":30,"postgresql":{"parameters":{"work_mem":"8MB"}}}"#, true, false).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let (code, text) =
        send(&s, r#"{"ttl":30,"postgresql":{"parameters":{"shared_preload_libraries":"x"}}}"#, false, false).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "a PUT that drops it and adds another: {text}");
    *s.command_params.lock().expect("lock") = crate::rest::command_params::CommandParams::AllowAll;
    let (code, text) =
        send(&s, r#"{"postgresql":{"parameters":{"archive_command":"cp %p /b/%f"}}}"#, true, false).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(stored_config(&store)["postgresql"]["parameters"]["archive_command"], "cp %p /b/%f");
}

/// A PUT whose body is not a config the nodes could use is refused before the DCS is read.
#[tokio::test]
async fn a_bad_put_is_refused_before_any_dcs_call() {
    let (s, store) = state_with(&[("config", r#"{"ttl":20}"#)]);
    store.set_reachable(false);
    let (code, text) = send(&s, r#"{"ttl":"soon"}"#, false, false).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
}

#[tokio::test]
async fn turning_pause_off_is_refused_without_a_running_primary_unless_forced() {
    let paused = ("config", r#"{"ttl":30,"pause":true}"#);
    let stopped = ("members/a", r#"{"role":"primary","state":"stopped"}"#);
    let (s, store) = state_with(&[paused, ("leader", "a"), stopped]);
    for (body, patch) in [(r#"{"pause":null}"#, true), (r#"{"pause":false}"#, true), (r#"{"ttl":30}"#, false)] {
        let (code, text) = send(&s, body, patch, false).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}: {text}");
        assert_eq!(
            text,
            "refusing to resume: the leader key is held by a, whose member key says it is not running as \
             primary (role: primary, state: stopped); add ?force=true to resume anyway"
        );
        assert_eq!(stored_config(&store)["pause"], json!(true), "nothing written");
    }
    // Other changes in pause are not resumes.
    let (code, text) = send(&s, r#"{"ttl":20}"#, true, false).await;
    assert_eq!((code, stored_config(&store)["ttl"].clone()), (StatusCode::OK, json!(20)), "{text}");
    // Forced: resumed, and the written config carries no extra key.
    let (code, text) = send(&s, r#"{"pause":null}"#, true, true).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    let cfg = stored_config(&store);
    assert!(cfg.get("pause").is_none_or(|p| p == &json!(false)) && cfg.get("force").is_none(), "{cfg}");
}

#[tokio::test]
async fn resume_goes_ahead_while_a_running_primary_holds_the_leader_key() {
    let (s, store) = state_with(&[
        ("config", r#"{"ttl":30,"pause":true}"#),
        ("leader", "a"),
        ("members/a", r#"{"role":"primary","state":"running"}"#),
    ]);
    let (code, text) = send(&s, r#"{"pause":null}"#, true, false).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert!(stored_config(&store).get("pause").is_none_or(|p| p == &json!(false)));
    // Without a leader key only pausing and forced resumes pass.
    let (s, _) = state_with(&[("config", r#"{"ttl":30,"pause":true}"#)]);
    let (code, text) = send(&s, r#"{"pause":false}"#, true, false).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert!(text.starts_with("refusing to resume: no member holds the leader key;"), "{text}");
}

#[test]
fn the_force_parameter_is_a_boolean() {
    let q = |v: &str| BTreeMap::from([("force".to_owned(), v.to_owned())]);
    assert!(matches!(force_param(&BTreeMap::new()), Ok(false)));
    assert!(matches!(force_param(&q("true")), Ok(true)));
    assert!(matches!(force_param(&q("1")), Ok(true)));
    assert!(matches!(force_param(&q("false")), Ok(false)));
    assert!(force_param(&q("maybe")).is_err());
}

#[test]
fn postgres_versions_parse_into_version_numbers() {
    assert_eq!(parse_pg_version("15.2"), Some(150002));
    assert_eq!(parse_pg_version("15"), Some(150000));
    assert_eq!(parse_pg_version("9.6.24"), Some(90624));
    assert_eq!(parse_pg_version("9.6"), Some(90600));
    assert_eq!(parse_pg_version("fifteen"), None);
    assert_eq!(parse_pg_version("15.2.1"), None);
}

#[test]
fn lag_values_parse_like_patronis() {
    assert_eq!(parse_lag("1024"), Ok(1024));
    assert_eq!(parse_lag(" 1024 "), Ok(1024));
    assert_eq!(parse_lag("16kB"), Ok(16 * 1024));
    assert_eq!(parse_lag("64MB"), Ok(64 << 20));
    assert_eq!(parse_lag("64 MB"), Ok(64 << 20));
    assert_eq!(parse_lag("1GB"), Ok(1 << 30));
    assert_eq!(parse_lag("2TB"), Ok(2 << 40));
    assert_eq!(parse_lag("1.5kB"), Ok(1536));
    assert_eq!(parse_lag("16mb"), Ok(16 << 20), "units in any case");
    assert_eq!(parse_lag("0x400"), Ok(1024), "strtol's hex");
    assert_eq!(parse_lag("010"), Ok(8), "strtol's octal");
    assert_eq!(parse_lag("0"), Ok(0));
    for bad in ["1 parsec", "abc", "-1", "MB", "99999999999999999999999", "1e400"] {
        let e = parse_lag(bad).expect_err(bad);
        assert!(e.starts_with(&format!("lag={bad:?}: ")), "{e}");
    }
}
