//! decide() tests: failsafe mode (`failsafe_mode`), leader and replica sides.

use std::collections::BTreeMap;

use super::*;

fn failsafe_cfg() -> DynamicConfig {
    DynamicConfig { failsafe_mode: true, ..DynamicConfig::default() }
}

fn topo(names: &[&str]) -> BTreeMap<String, String> {
    names.iter().map(|m| ((*m).to_owned(), format!("http://{m}:8008/patroni"))).collect()
}

/// A lock holder that last saw the topology `a, b, c`, with the DCS gone since `since`.
fn unreachable_leader(failsafe: bool) -> (NodeState, Observation) {
    let mut st = leader_state("a");
    st.config = DynamicConfig { failsafe_mode: failsafe, ..DynamicConfig::default() };
    st.failsafe_topology = Some(topo(&["a", "b", "c"]));
    let mut o = obs(ViewB::new(), db_primary(5, 1));
    o.dcs = DcsView::Unreachable { since: MonoMillis(NOW.0 - 500) };
    (st, o)
}

fn confirm() -> Action {
    Action::ConfirmFailsafe {
        members: topo(&["b", "c"]),
        ttl_ms: 4_000,
        fence_after_ms: 3_210,
        feed_watchdog: None,
        after_failed_renewal: false,
    }
}

#[test]
fn the_leader_publishes_the_topology_of_every_member_and_itself_when_it_changed() {
    let mut st = leader_state("a");
    st.settings.api_url = Some("http://a:8008/patroni".into());
    let mut b = member(MemberRole::Replica, "running", 5, 1);
    b.api_url = Some("http://b:8008/patroni".into());
    let v = || ViewB::new().leader("a").status(5).member("b", b.clone()).config(failsafe_cfg());
    let (acts, reason, d) = run(&st, &obs(v(), db_primary(5, 1)));
    assert_eq!(reason, Reason::LeaderHealthy);
    assert_eq!(acts, vec![renew(None), Action::WriteFailsafe { topology: topo(&["a", "b"]) }]);
    assert_eq!(d.next.failsafe_topology, Some(topo(&["a", "b"])), "asked from now on");
    // A member gone from the topology is still asked until a read shows the new value (sim
    // seed 5000155: a leader that asked only the old members while a new one raced).
    let mut st2 = st.clone();
    st2.failsafe_topology = Some(topo(&["a", "c"]));
    let mut old_key = v();
    old_key.0.failsafe = Some(topo(&["a", "c"]).into_iter().map(|(k, u)| (k, serde_json::json!(u))).collect());
    let d = decide(&st2, &obs(old_key, db_primary(5, 1)));
    assert_eq!(d.next.failsafe_topology, Some(topo(&["a", "b", "c"])));
    // Unchanged in the DCS: not written again.
    let mut with_key = v();
    with_key.0.failsafe = Some(topo(&["a", "b"]).into_iter().map(|(k, u)| (k, serde_json::json!(u))).collect());
    let (acts, _, d) = run(&st, &obs(ViewB(with_key.0.clone()), db_primary(5, 1)));
    let fallback = Action::ConfirmFailsafe {
        members: topo(&["b"]),
        ttl_ms: 4_000,
        fence_after_ms: 3_210,
        feed_watchdog: None,
        after_failed_renewal: true,
    };
    // Not written again; a round right after the renewal, run only if the renewal gets no answer.
    assert_eq!(acts, vec![renew(None), fallback.clone()]);
    assert_eq!(d.next.failsafe_topology, Some(topo(&["a", "b"])));
    assert!(d.wake_at > NOW, "no failsafe active: the normal cycle");
    // While failsafe is active (a round accepted, no renewal since) the next cycle starts at once.
    let mut active = st.clone();
    active.failsafe_confirmed_at = Some(NOW);
    let d = decide(&active, &obs(with_key, db_primary(5, 1)));
    assert_eq!(d.wake_at, NOW);
    // failsafe_mode off: never written.
    let off = ViewB::new().leader("a").status(5).member("b", b.clone());
    assert_eq!(run(&st, &obs(off, db_primary(5, 1))).0, vec![renew(None)]);
}

#[test]
fn with_the_dcs_gone_the_leader_asks_the_other_members_and_keeps_its_deadline_meanwhile() {
    let (st, o) = unreachable_leader(true);
    let (acts, reason, d) = run(&st, &o);
    assert_eq!(acts, vec![confirm()]);
    assert_eq!(reason, Reason::FailsafeConfirming { confirmed: false });
    assert_eq!(d.fence_at, st.lease.map(|h| h.fence_at), "asking moves nothing");
    // Off: only the renewal, as before.
    let (st, o) = unreachable_leader(false);
    assert_eq!(run(&st, &o).0, vec![renew(None)]);
    // Missing from the topology: Patroni takes that as a refusal; no round.
    let (mut st, o) = unreachable_leader(true);
    st.failsafe_topology = Some(topo(&["b", "c"]));
    assert_eq!(run(&st, &o), (vec![renew(None)], Reason::RenewFailedRetrying, decide(&st, &o)));
}

#[test]
fn a_round_every_member_accepted_moves_the_deadline_as_a_renewal_and_a_refused_one_does_not() {
    let (st, o) = unreachable_leader(true);
    let sent_at = MonoMillis(NOW.0 + 1_000);
    let later = |refused: Vec<(String, String)>| {
        let mut o = with(o.clone(), vec![Outcome::FailsafeConfirmed { sent_at, fence_after_ms: 3_210, refused }]);
        o.now = MonoMillis(NOW.0 + 1_010);
        o
    };
    let d = decide(&st, &later(vec![]));
    assert_eq!(d.fence_at, Some(sent_at.plus(3_210)));
    assert_eq!(d.next.failsafe_confirmed_at, Some(sent_at));
    assert_eq!(d.reason, Reason::FailsafeConfirming { confirmed: true });
    let d = decide(&st, &later(vec![("c".into(), "no answer".into())]));
    assert_eq!(d.fence_at, st.lease.map(|h| h.fence_at), "one member missing: the old deadline stands");
    assert_eq!(d.next.failsafe_confirmed_at, None);
    // Past the deadline the fence rules whatever a round says.
    let mut o = later(vec![]);
    o.outcomes.clear();
    o.now = NOW.plus(3_210);
    let d = decide(&st, &o);
    assert_eq!((d.reason, d.actions.contains(&IMMEDIATE)), (Reason::FenceDeadlinePassed, true));
}

#[test]
fn a_round_never_brings_back_a_lease_given_up() {
    let (mut st, o) = unreachable_leader(true);
    st.lease = None;
    let o = with(o, vec![Outcome::FailsafeConfirmed { sent_at: NOW, fence_after_ms: 3_210, refused: vec![] }]);
    let d = decide(&st, &o);
    assert_eq!((d.next.lease, d.reason), (None, Reason::PrimaryWithoutLock));
}

#[test]
fn with_a_watchdog_an_accepted_round_counts_as_contact_for_the_retry_timeout_rule() {
    let (mut st, mut o) = unreachable_leader(true);
    st.watchdog_armed = true;
    o.dcs = DcsView::Unreachable { since: MonoMillis(NOW.0 - 2_000) };
    // retry_timeout (1.5 s) has passed since the DCS went: a round is tried first.
    assert!(matches!(decide(&st, &o).reason, Reason::FailsafeConfirming { confirmed: false }));
    // Refused since: fenced, as without failsafe.
    st.failsafe_refused_at = Some(MonoMillis(NOW.0 - 300));
    assert!(matches!(decide(&st, &o).reason, Reason::DcsUnreachableFenced { .. }));
    // Accepted after that refusal: carries on.
    st.failsafe_confirmed_at = Some(MonoMillis(NOW.0 - 200));
    assert!(matches!(decide(&st, &o).reason, Reason::FailsafeConfirming { confirmed: true }));
    st.config.failsafe_mode = false;
    assert!(matches!(decide(&st, &o).reason, Reason::DcsUnreachableFenced { .. }));
}

#[test]
fn a_replica_that_accepted_a_leader_less_than_a_ttl_ago_does_not_race() {
    let v = || ViewB::new().status(5).replica("b", 5).config(failsafe_cfg());
    let mut o = obs(v(), db_replica(5, 1, Some("a")));
    o.failsafe_vouched = Some((n("a"), MonoMillis(NOW.0 - 3_999), 0));
    let (acts, reason, _) = run(&state("b"), &o);
    assert_eq!((acts, reason), (vec![], Reason::FailsafeLeaderVouched { leader: n("a") }));
    // A ttl after the acceptance it races again.
    o.failsafe_vouched = Some((n("a"), MonoMillis(NOW.0 - 4_000), 0));
    assert_ne!(run(&state("b"), &o).1, Reason::FailsafeLeaderVouched { leader: n("a") });
    // A leader that counts with a longer ttl (one it read before a change it could not see)
    // is promised that longer time.
    o.failsafe_vouched = Some((n("a"), MonoMillis(NOW.0 - 9_999), 10_000));
    assert_eq!(run(&state("b"), &o).1, Reason::FailsafeLeaderVouched { leader: n("a") });
    // failsafe_mode off: an acceptance counts for nothing.
    let mut o = obs(ViewB::new().status(5).replica("b", 5), db_replica(5, 1, Some("a")));
    o.failsafe_vouched = Some((n("a"), NOW, 0));
    assert_ne!(run(&state("b"), &o).1, Reason::FailsafeLeaderVouched { leader: n("a") });
}

#[test]
fn a_member_missing_from_a_listed_topology_does_not_race() {
    let mut v = ViewB::new().status(5).replica("d", 5).config(failsafe_cfg());
    v.0.failsafe = Some(topo(&["a", "b"]).into_iter().map(|(k, u)| (k, serde_json::json!(u))).collect());
    let (_, reason, _) = run(&state("d"), &obs(v, db_replica(5, 1, None)));
    assert_eq!(reason, Reason::NotHealthiest(Ineligible::NotInFailsafeTopology));
}

#[test]
fn back_from_the_outage_without_its_key_a_failsafe_primary_takes_the_lock_again() {
    let (mut st, _) = unreachable_leader(true);
    st.failsafe_confirmed_at = Some(NOW);
    let v = || ViewB::new().status(5).replica("b", 5).config(failsafe_cfg());
    let (acts, reason, d) = run(&st, &obs(v(), db_primary(5, 1)));
    assert_eq!((acts, reason), (vec![ACQUIRE], Reason::FailsafeReacquiring));
    assert_eq!(d.next.lease, st.lease, "the deadline still holds while it asks");
    // Without a round accepted since the outage it is the lease lost, as before.
    st.failsafe_confirmed_at = None;
    assert_eq!(run(&st, &obs(v(), db_primary(5, 1))).1, Reason::LeaseLost);
}

#[test]
fn the_answer_to_a_failsafe_request() {
    let a = n("a");
    assert_eq!(failsafe_answer(Some(&a), &db_replica(5, 1, Some("a")), &a, false), Ok(Some(Lsn(5))));
    assert_eq!(failsafe_answer(Some(&a), &db_primary(5, 1), &a, false), Err("Running as a leader".into()));
    assert!(failsafe_answer(Some(&a), &db_replica(5, 1, None), &a, true).is_err(), "racing");
    assert!(failsafe_answer(Some(&n("b")), &db_replica(5, 1, None), &a, false).is_err(), "another leader");
    assert!(failsafe_answer(None, &db_replica(5, 1, None), &a, false).is_err(), "no leader seen");
}
