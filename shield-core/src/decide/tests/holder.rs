//! decide() tests: lock holder.

use super::*;

#[test]
fn won_lock_promotes_arming_the_watchdog_first() {
    let mut st = state("a");
    st.settings.watchdog = WatchdogMode::Automatic;
    let o = with(
        obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None)),
        vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }],
    );
    let (acts, reason, d) = run(&st, &o);
    assert_eq!(acts.len(), 4, "{acts:?}");
    assert_eq!(acts[..2], [renew(None), Action::ArmWatchdog]);
    // The new timeline is reserved in `history` before the promotion, which creates exactly it.
    let Action::WriteHistory { lines } = &acts[2] else { panic!("no reservation: {acts:?}") };
    assert_eq!((lines.len(), lines[0].timeline, lines[0].lsn), (1, Timeline(1), Lsn(1_000)));
    assert_eq!(lines[0].new_leader.as_deref(), Some("a"));
    assert_eq!(acts[3], task(DbTask::Promote { timeline: Timeline(2) }));
    assert_eq!(reason, Reason::Promoting);
    assert_eq!(d.fence_at, Some(NOW.plus(st.config.timing.fence_after_ms())));
    assert_eq!(d.next.promoted_from, Some((Timeline(1), Lsn(1_000))));
}

#[test]
fn only_the_lock_holder_keeps_the_vip_and_failures_are_retried() {
    // A replica that finds the VIP bound (left from an earlier run) drops it.
    let mut st = state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    let v = ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let (acts, _, d) = run(&st, &obs(v, db_replica(5, 1, Some("l"))));
    assert!(acts.contains(&Action::RemoveVip), "{acts:?}");
    assert!(!d.next.vip_bound);
    // The removal failed: believed bound again, so the next cycle removes it again.
    let v = ViewB::new().leader("l").member("l", member(MemberRole::Primary, "running", 9, 1));
    let o =
        with(obs(v, db_replica(5, 1, Some("l"))), vec![Outcome::VipFailed { adding: false, reason: "EPERM".into() }]);
    let (acts, _, _) = run(&d.next, &o);
    assert!(acts.contains(&Action::RemoveVip), "{acts:?}");
    // The leader's add failed: added again next cycle.
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    let o = with(
        obs(ViewB::new().leader("a").status(1_000), db_primary(1_000, 2)),
        vec![Outcome::VipFailed { adding: true, reason: "no such device".into() }],
    );
    let (acts, _, _) = run(&st, &o);
    assert!(acts.contains(&Action::AddVip), "{acts:?}");
}

/// `member_slots_ttl: 0`: slots as Patroni 3 keeps them.
#[test]
fn slots_follow_the_members_that_stream_from_this_node() {
    let sync = |acts: &[Action]| {
        acts.iter().find_map(|a| match a {
            Action::SyncSlots { create, drop, .. } => Some((create.clone(), drop.clone())),
            _ => None,
        })
    };
    let mut cascading = member(MemberRole::Replica, "running", 900, 1);
    cascading.tags.replicatefrom = Some(n("b"));
    let no_retention = DynamicConfig { member_slots_ttl_ms: 0, ..DynamicConfig::default() };
    let v = || {
        ViewB::new()
            .leader("a")
            .status(1_000)
            .config(no_retention.clone())
            .member("b", member(MemberRole::Replica, "running", 900, 1))
            .member("Node-C", member(MemberRole::Replica, "running", 900, 1))
            .member("d", cascading.clone())
    };
    // The leader: one slot per member streaming from it (not d, which cascades from b); a slot
    // of a member that left goes, an active one stays whatever it is.
    let mut db = db_primary(1_000, 1);
    db.slots = Some(vec![("b".into(), true), ("gone".into(), false), ("backup".into(), true)]);
    let (acts, _, _) = run(&leader_state("a"), &obs(v(), db.clone()));
    assert_eq!(sync(&acts), Some((vec!["node_c".to_owned()], vec!["gone".to_owned()])), "{acts:?}");
    // Everything in place: nothing to do.
    db.slots = Some(vec![("b".into(), true), ("node_c".into(), true)]);
    let (acts, _, _) = run(&leader_state("a"), &obs(v(), db));
    assert_eq!(sync(&acts), None);
    // Replica b keeps a slot for d, which cascades from it, and drops a demoted primary's slots.
    let mut db = db_replica(900, 1, Some("a"));
    db.slots = Some(vec![("node_c".into(), false)]);
    let (acts, _, _) = run(&state("b"), &obs(v(), db.clone()));
    assert_eq!(sync(&acts), Some((vec!["d".to_owned()], vec!["node_c".to_owned()])), "{acts:?}");
    // use_slots: false leaves slots alone.
    let mut cfg = no_retention.clone();
    cfg.postgresql.use_slots = false;
    let (acts, _, _) = run(&state("b"), &obs(v().config(cfg), db));
    assert_eq!(sync(&acts), None);
}

/// Patroni 4's member slots (`member_slots_ttl`, on by default): the leader keeps a slot for every
/// member and publishes their positions, its own at its position, and the names every node
/// retains; a replica keeps the same slots and moves them to the published positions; a member
/// that left is retained for `member_slots_ttl`, then dropped.
#[test]
fn every_node_keeps_member_slots_and_replicas_follow_the_leaders_positions() {
    let sync = |acts: &[Action]| {
        acts.iter().find_map(|a| match a {
            Action::SyncSlots { create, drop, advance } => Some((create.clone(), drop.clone(), advance.clone())),
            _ => None,
        })
    };
    let status = |acts: &[Action]| {
        acts.iter().find_map(|a| match a {
            Action::WriteStatus { status } => Some(status.clone()),
            _ => None,
        })
    };
    let mut cascading = member(MemberRole::Replica, "running", 900, 1);
    cascading.tags.replicatefrom = Some(n("b"));
    let mut nostream = member(MemberRole::Replica, "running", 0, 1);
    nostream.tags.nostream = true;
    let v = || {
        ViewB::new()
            .leader("a")
            .member("a", member(MemberRole::Primary, "running", 1_000, 1))
            .member("b", member(MemberRole::Replica, "running", 900, 1))
            .member("d", cascading.clone())
            .member("x", nostream.clone())
    };
    // The leader: slots for b and d (d cascades, yet the leader keeps its slot and moves it to
    // what d reports), none for x; it publishes positions and the retained names.
    let mut db = db_primary(1_000, 1);
    db.slots = Some(vec![("b".into(), true), ("d".into(), false)]);
    db.slot_positions = [("b".to_owned(), Lsn(990)), ("d".to_owned(), Lsn(500))].into();
    let (acts, _, d) = run(&leader_state("a"), &obs(v(), db.clone()));
    assert_eq!(sync(&acts), Some((vec![], vec![], vec![("d".to_owned(), Lsn(900))])), "{acts:?}");
    let published = status(&acts).expect("status");
    assert_eq!(
        published.slots,
        [("a".to_owned(), Lsn(1_000)), ("b".to_owned(), Lsn(990)), ("d".to_owned(), Lsn(500))].into()
    );
    assert_eq!(published.retain_slots, ["a", "b", "d"]);
    // b's member key expires: its slot is kept (and still retained) for member_slots_ttl.
    let gone = || {
        ViewB::new()
            .leader("a")
            .member("a", member(MemberRole::Primary, "running", 1_000, 1))
            .member("d", cascading.clone())
    };
    db.slots = Some(vec![("b".into(), false), ("d".into(), false)]);
    let mut o = obs(gone(), db.clone());
    o.now = NOW.plus(1_000);
    let (acts, _, d) = run(&d.next, &o);
    assert_eq!(sync(&acts).map(|s| s.1), Some(vec![]), "b's slot stays: {acts:?}");
    assert_eq!(status(&acts).expect("status").retain_slots, ["a", "b", "d"]);
    let mut o = obs(gone(), db);
    o.now = NOW.plus(1_800_001);
    let mut st = d.next.clone();
    st.lease = Some(LeaseHold { renewed_sent_at: o.now, fence_at: o.now.plus(3_210) });
    let (acts, _, _) = run(&st, &o);
    assert_eq!(sync(&acts).map(|s| s.1), Some(vec!["b".to_owned()]), "retention over: {acts:?}");
    assert_eq!(status(&acts).expect("status").retain_slots, ["a", "d"]);

    // A replica keeps slots for the leader and every other member, and for retained names, and
    // moves them to the leader's published positions (never back).
    let mut published = Status { optime: Lsn(1_000), ..Status::default() };
    published.slots = [("a".to_owned(), Lsn(1_000)), ("d".to_owned(), Lsn(800)), ("old".to_owned(), Lsn(10))].into();
    published.retain_slots = vec!["a".into(), "b".into(), "d".into(), "old".into()];
    let with_status = || {
        let mut b = v();
        b.0.status = Some(published.clone());
        b
    };
    let mut db = db_replica(900, 1, Some("a"));
    db.slots = Some(vec![("a".into(), false), ("d".into(), true), ("old".into(), false), ("stray".into(), false)]);
    db.slot_positions = [("a".to_owned(), Lsn(700)), ("old".to_owned(), Lsn(50))].into();
    let (acts, _, _) = run(&state("b"), &obs(with_status(), db.clone()));
    assert_eq!(sync(&acts), Some((vec![], vec!["stray".to_owned()], vec![("a".to_owned(), Lsn(1_000))])), "{acts:?}");
    // A nofailover replica keeps only the slots of members that cascade from it.
    let mut st = state("b");
    st.settings.tags.nofailover = true;
    let (acts, _, _) = run(&st, &obs(with_status(), db));
    assert_eq!(sync(&acts).map(|s| s.1), Some(vec!["a".to_owned(), "old".to_owned(), "stray".to_owned()]), "{acts:?}");
}

#[test]
fn history_records_the_servers_own_switch_point() {
    let mut st = leader_state("a");
    st.promoted_from = Some((Timeline(1), Lsn(900)));
    let mut db = db_primary(1_000, 2);
    db.branched_from = Some((Timeline(1), Lsn(950)));
    let (acts, _, _) = run(&st, &obs(ViewB::new().leader("a").status(1_000), db));
    let Action::WriteHistory { lines } = &acts[1] else { panic!("{acts:?}") };
    assert_eq!((lines[0].timeline, lines[0].lsn), (Timeline(1), Lsn(950)));
}

#[test]
fn the_new_leader_creates_the_replicas_slots_before_promoting() {
    let mut db = db_replica(1_000, 1, None);
    db.slots = Some(vec![("c".into(), false)]);
    let v = ViewB::new().leader("a").replica("b", 1_000).replica("c", 1_000);
    let o = with(obs(v, db), vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }]);
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!(reason, Reason::Promoting);
    let at = |want: &dyn Fn(&Action) -> bool| acts.iter().position(want);
    let slots = at(&|a| *a == Action::SyncSlots { create: vec!["b".into()], drop: vec![], advance: vec![] });
    let promote = at(&|a| *a == task(DbTask::Promote { timeline: Timeline(2) }));
    assert!(slots.is_some() && slots < promote, "{acts:?}");
}

#[test]
fn required_watchdog_is_armed_a_cycle_before_promotion() {
    let mut st = state("a");
    st.settings.watchdog = WatchdogMode::Required;
    let won = vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }];
    let o = with(obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None)), won);
    let (acts, reason, d) = run(&st, &o);
    assert_eq!((acts, reason), (vec![renew(None), Action::ArmWatchdog], Reason::ArmingWatchdog));
    assert_eq!(d.wake_at, NOW, "the next cycle comes at once");

    // Armed without complaint: promote.
    let o = obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None));
    let (acts, reason, _) = run(&d.next, &o);
    assert_eq!(acts.last(), Some(&task(DbTask::Promote { timeline: Timeline(2) })), "{acts:?}");
    assert_eq!(reason, Reason::Promoting);

    // The arming failed: the lock goes back and the database is never promoted.
    let failed = vec![Outcome::WatchdogFailed { reason: "no device".into() }];
    let o = with(obs(ViewB::new().leader("a").replica("b", 1_000), db_replica(1_000, 1, None)), failed);
    let (acts, reason, d2) = run(&d.next, &o);
    assert!(
        acts.contains(&Action::ReleaseLeader) && !acts.contains(&task(DbTask::Promote { timeline: Timeline(2) })),
        "{acts:?}"
    );
    assert_eq!(reason, Reason::NotHealthiest(crate::reason::Ineligible::WatchdogRequired));
    assert!(d2.next.lease.is_none());
}

#[test]
fn healthy_leader_renews_binds_the_vip_and_records_history() {
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.promoted_from = Some((Timeline(1), Lsn(900)));
    let v = ViewB::new().leader("a").status(1_000);
    let (acts, reason, d) = run(&st, &obs(v, db_primary(1_000, 2)));
    let Action::WriteHistory { lines } = &acts[1] else { panic!("{acts:?}") };
    assert_eq!((lines.len(), lines[0].timeline, lines[0].lsn), (1, Timeline(1), Lsn(900)));
    assert_eq!(lines[0].new_leader.as_deref(), Some("a"));
    assert_eq!(acts[2..], [Action::AddVip]);
    assert_eq!(acts[0], renew(None));
    assert_eq!(reason, Reason::LeaderHealthy);
    assert_eq!(d.wake_at, NOW.plus(1_000));
}

#[test]
fn renewal_moves_the_fencing_deadline_from_its_send_time() {
    let st = leader_state("a");
    let sent = NOW.plus(50);
    let mut o = with(
        obs(ViewB::new().leader("a").status(5), db_primary(5, 1)),
        vec![Outcome::LeaderRenew { sent_at: sent, fence_after_ms: 3_210, result: Ok(()) }],
    );
    o.now = NOW.plus(60);
    let d = decide(&st, &o);
    assert_eq!(d.fence_at, Some(sent.plus(st.config.timing.fence_after_ms())));
}

#[test]
fn passed_fencing_deadline_stops_the_primary_at_once() {
    let mut st = leader_state("a");
    st.settings.vip = true;
    st.vip_bound = true;
    st.watchdog_armed = true;
    let mut o = obs(ViewB::new().leader("a"), db_primary(5, 1));
    o.now = NOW.plus(3_210);
    let d = decide(&st, &o);
    assert_eq!(d.actions, vec![Action::RemoveVip, IMMEDIATE, Action::DisarmWatchdog]);
    assert_eq!(d.reason, Reason::FenceDeadlinePassed);
    assert_eq!((d.next.lease, d.fence_at), (None, None));
}

#[test]
fn lost_lease_fences_immediately() {
    let o = with(
        obs(ViewB::new().leader("b"), db_primary(5, 1)),
        vec![Outcome::LeaderRenew { sent_at: NOW, fence_after_ms: 3_210, result: Err(ErrorKind::LeaseLost) }],
    );
    let d = decide(&leader_state("a"), &o);
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::LeaseLost));
}

#[test]
fn unreachable_dcs_is_ridden_out_until_the_fencing_deadline() {
    let mut o = obs(ViewB::new(), db_primary(5, 1));
    o.dcs = DcsView::Unreachable { since: NOW.plus(0) };
    o.now = NOW.plus(1_000);
    let st = leader_state("a");
    let d = decide(&st, &o);
    assert_eq!((d.actions.clone(), d.reason), (vec![renew(None)], Reason::RenewFailedRetrying));
    assert_eq!(d.wake_at, NOW.plus(2_000));
    // Past retry_timeout the lease is still ours: keep renewing (an etcd stall costs nothing).
    o.now = NOW.plus(2_500);
    let d = decide(&st, &o);
    assert_eq!((d.actions, d.reason), (vec![renew(None)], Reason::RenewFailedRetrying));
    // At the deadline, the last moment before the lease could expire: stop.
    o.now = NOW.plus(3_210);
    let d = decide(&st, &o);
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::FenceDeadlinePassed));
    // A primary with no lease of ours stops at once.
    o.now = NOW.plus(100);
    let d = decide(&state("a"), &o);
    assert_eq!((d.actions, d.reason), (vec![IMMEDIATE], Reason::PrimaryWithoutLock));
    // With a watchdog armed it stops after retry_timeout instead, before the watchdog (fed only
    // after renewals) could reset the host.
    let mut st = leader_state("a");
    st.watchdog_armed = true;
    st.settings.watchdog = WatchdogMode::Automatic;
    o.now = NOW.plus(1_501);
    let d = decide(&st, &o);
    assert_eq!(d.reason, Reason::DcsUnreachableFenced { for_ms: 1_501 });
    assert!(d.actions.contains(&IMMEDIATE) && d.actions.contains(&Action::DisarmWatchdog), "{:?}", d.actions);
}

#[test]
fn primary_that_sees_another_holder_demotes() {
    let (acts, reason, _) = run(&state("a"), &obs(ViewB::new().leader("b"), db_primary(5, 1)));
    assert_eq!((acts, reason), (vec![IMMEDIATE], Reason::AnotherLeader { leader: n("b") }));
}

#[test]
fn crashed_primary_restarts_in_place_or_fails_over() {
    let v = || ViewB::new().leader("a").replica("b", 5);
    let crashed = db_stopped(5, 1, true, DbProcess::Crashed);
    let (acts, reason, d) = run(&leader_state("a"), &obs(v(), crashed.clone()));
    assert_eq!(acts, vec![renew(None), task(DbTask::Start(StartAs::Primary))]);
    assert_eq!(reason, Reason::RestartingCrashedPrimary);
    assert_eq!(d.next.crash_since, Some(NOW));

    let cfg = DynamicConfig { primary_start_timeout_ms: 0, ..DynamicConfig::default() };
    let (acts, reason, _) = run(&leader_state("a"), &obs(v().config(cfg), crashed.clone()));
    assert_eq!((acts, reason), (vec![renew(None), Action::ReleaseLeader], Reason::CrashFailover));

    let mut late = leader_state("a");
    late.crash_since = Some(MonoMillis(NOW.0 - 30_001));
    let starting = DbStatus { process: DbProcess::Starting, ..crashed };
    let (acts, reason, _) = run(&late, &obs(v(), starting));
    assert_eq!((acts, reason), (vec![renew(None), IMMEDIATE, Action::ReleaseLeader], Reason::PrimaryStartTimedOut));
}
