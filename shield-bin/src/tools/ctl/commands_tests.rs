//! Unit tests of the command helpers.

use super::commands::{parse_schedule, pg_version_text};
use super::edit::{scalar, set_path};
use super::pause::resume_check;
use serde_json::json;
use shield_core::cluster::ClusterView;
use shield_core::Revision;

fn view(entries: &[(&str, &str)]) -> ClusterView {
    let kv: Vec<_> = entries
        .iter()
        .map(|(k, v)| shield_core::cluster::KvEntry {
            key: (*k).into(),
            value: v.as_bytes().to_vec(),
            revision: Revision(1),
            owner: None,
        })
        .collect();
    ClusterView::from_entries(Revision(1), &kv)
}

#[test]
fn resume_needs_a_running_primary_holding_the_leader_key_unless_forced() {
    let cfg = ("config", r#"{"pause":true}"#);
    let primary = ("members/a", r#"{"role":"primary","state":"running"}"#);
    assert_eq!(resume_check(&view(&[cfg, ("leader", "a"), primary]), false), Ok(()));

    let no_leader = view(&[cfg, primary]);
    assert_eq!(
        resume_check(&no_leader, false),
        Err("refusing to resume: no member holds the leader key; use --force to resume anyway".into())
    );
    assert_eq!(resume_check(&no_leader, true), Ok(()));

    let stopped = view(&[cfg, ("leader", "a"), ("members/a", r#"{"role":"primary","state":"stopped"}"#)]);
    let err = resume_check(&stopped, false).expect_err("refused");
    assert!(err.contains("held by a, whose member key says it is not running as primary"), "{err}");
    assert!(err.contains("state: stopped") && err.ends_with("use --force to resume anyway"), "{err}");
    assert_eq!(resume_check(&stopped, true), Ok(()));
}

#[test]
fn schedules() {
    assert_eq!(parse_schedule("now"), Ok(None));
    assert_eq!(parse_schedule(""), Ok(None));
    assert_eq!(parse_schedule("2026-11-25T17:06"), Ok(Some("2026-11-25T17:06:00+00:00".into())));
    assert_eq!(parse_schedule("2026-11-25T17:06:00+02:00"), Ok(Some("2026-11-25T17:06:00+02:00".into())));
    assert!(parse_schedule("tomorrow").is_err());
}

#[test]
fn key_paths_set_and_remove() {
    let mut c = json!({"ttl": 4, "postgresql": {"parameters": {"a": "1"}}});
    set_path(&mut c, "postgresql.parameters.b", scalar("2")).expect("set");
    set_path(&mut c, "postgresql.parameters.a", scalar("null")).expect("remove");
    set_path(&mut c, "pause", scalar("true")).expect("set");
    assert_eq!(c, json!({"ttl": 4, "pause": true, "postgresql": {"parameters": {"b": 2}}}));
    assert!(set_path(&mut c, "a..b", json!(1)).is_err());
    assert_eq!(scalar("64MB"), json!("64MB"));
}

#[test]
fn version_numbers_print_as_postgresql_does() {
    assert_eq!(pg_version_text(150004), "15.4");
    assert_eq!(pg_version_text(90624), "9.6.24");
}
