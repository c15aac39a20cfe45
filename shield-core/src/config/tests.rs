//! Unit tests of the dynamic config.

use super::timing::Timing;
use super::*;
use serde_json::json;

#[test]
fn patroni_defaults_parse() {
    let c = DynamicConfig::from_json(json!({
        "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
        "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100}},
        "slots": {"s1": {"type": "physical"}}
    }))
    .expect("valid");
    assert_eq!(c.timing.ttl_ms, 30_000);
    assert!(c.postgresql.use_pg_rewind);
    assert_eq!(c.postgresql.parameters["max_connections"], json!(100));
    assert_eq!(c.other["slots"], json!({"s1": {"type": "physical"}}));
    let back = DynamicConfig::from_json(c.to_json()).expect("round trip");
    assert_eq!(back, c);
}

#[test]
fn errors_name_the_key() {
    let e = DynamicConfig::from_json(json!({"ttl": "soon"})).expect_err("bad");
    assert_eq!(e.to_string(), "config key `ttl`: expected a number, found \"soon\"");
    let e = DynamicConfig::from_json(json!({"postgresql": {"use_pg_rewind": 3}})).expect_err("bad");
    assert!(e.to_string().contains("postgresql.use_pg_rewind"), "{e}");
    let e = DynamicConfig::from_json(json!({"ttl": 5, "loop_wait": 2, "retry_timeout": 2})).expect_err("unsafe");
    assert!(matches!(e, ConfigError::UnsafeTiming(_)), "{e}");
    assert!(DynamicConfig::from_json(json!([1])).is_err());
    let c = DynamicConfig::from_json(json!({"member_slots_ttl": "30min"})).expect("units, as Patroni");
    assert_eq!(c.member_slots_ttl_ms, 1_800_000);
    assert_eq!(DynamicConfig::from_json(json!({"member_slots_ttl": 0})).expect("zero").member_slots_ttl_ms, 0);
    assert!(DynamicConfig::from_json(json!({"member_slots_ttl": "soon"})).is_err());
    assert!(DynamicConfig::from_json_text("{nope").is_err());
    let e = DynamicConfig::from_json(json!({"ttl": -1})).expect_err("negative");
    assert!(e.to_string().contains("negative"));
}

#[test]
fn timings_are_adjusted_as_patroni_does() {
    let t = |ttl: u64, lw: u64, rt: u64| Timing {
        ttl_ms: ttl,
        loop_wait_ms: lw,
        retry_timeout_ms: rt,
        ..Timing::default()
    };
    // 20/10/10: 1 + 2*10 > 20, so loop_wait 1 and retry_timeout (20 - 1) / 2.
    let (a, notes) = t(20_000, 10_000, 10_000).adjusted();
    assert_eq!((a.ttl_ms, a.loop_wait_ms, a.retry_timeout_ms), (20_000, 1_000, 9_000));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("loop_wait adjusted from 10 s to 1 s and retry_timeout from 10 s to 9 s"), "{notes:?}");
    // 30/25/5: only loop_wait shrinks, to ttl - 2*retry_timeout.
    let (a, notes) = t(30_000, 25_000, 5_000).adjusted();
    assert_eq!((a.loop_wait_ms, a.retry_timeout_ms), (20_000, 5_000));
    assert!(notes[0].contains("loop_wait adjusted from 25 s to 20 s"), "{notes:?}");
    // A short ttl keeps the fraction: (2.5 - 1) / 2.
    assert_eq!(t(2_500, 1_000, 1_000).adjusted().0.retry_timeout_ms, 750);
    // Within the rule: nothing changes.
    assert_eq!(t(30_000, 10_000, 10_000).adjusted(), (t(30_000, 10_000, 10_000), Vec::new()));
    // Below the floors: raised, then the rule.
    let (a, notes) = t(1_000, 50, 100).adjusted();
    assert_eq!((a.ttl_ms, a.loop_wait_ms, a.retry_timeout_ms), (2_000, 100, 200));
    assert_eq!(notes.len(), 3, "{notes:?}");
    // Every adjusted timing passes the check (the fence margin is Shield's own and not adjusted).
    for (ttl, lw, rt) in
        [(2_000, 5_000, 5_000), (20_000, 10_000, 10_000), (5_000, 3_000, 3_000), (u64::MAX, u64::MAX, u64::MAX)]
    {
        let (a, _) = t(ttl, lw, rt).adjusted();
        a.checked().expect("adjusted timings are valid");
    }
    let (c, notes) =
        DynamicConfig::from_json_adjusting(json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10})).expect("ok");
    assert_eq!((c.timing.loop_wait_ms, c.timing.retry_timeout_ms, notes.len()), (1_000, 9_000, 1));
    assert!(DynamicConfig::from_json(json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10})).is_err());
}

#[test]
fn quorum_commit_is_refused_by_name() {
    for v in [json!("quorum"), json!("QUORUM")] {
        let e = DynamicConfig::from_json(json!({ "synchronous_mode": v })).expect_err("quorum");
        assert!(e.to_string().contains("`synchronous_mode`") && e.to_string().contains("quorum"), "{e}");
    }
    for v in [json!("on"), json!(true), json!("off")] {
        DynamicConfig::from_json(json!({ "synchronous_mode": v })).expect("on/off");
    }
}

#[test]
fn legacy_master_start_timeout_is_read() {
    let c = DynamicConfig::from_json(json!({"master_start_timeout": 0})).expect("valid");
    assert_eq!(c.primary_start_timeout_ms, 0);
    assert!(!c.other.contains_key("master_start_timeout"));
}

#[test]
fn fence_deadline_is_inside_the_lease() {
    let t = Timing::default().checked().expect("defaults are valid");
    assert!(t.fence_after_ms() < t.ttl_ms);
    assert!(t.fence_after_ms() > t.loop_wait_ms + t.retry_timeout_ms);
    assert_eq!(t.fence_after_ms(), 4_000 - 40 - 750);
}
