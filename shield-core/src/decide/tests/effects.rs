//! decide() tests: effects: callbacks, reloads, service registration.

use super::*;

fn callback(event: CallbackEvent, role: DbRole) -> Action {
    Action::RunCallback { event, role }
}

fn with_parameter(view: ViewB, value: i64) -> ViewB {
    let mut cfg = DynamicConfig::default();
    cfg.postgresql.parameters.insert("work_mem".into(), serde_json::json!(value));
    view.config(cfg)
}

#[test]
fn first_cycle_calls_on_start_for_a_database_found_running_and_reloads_nothing() {
    let st = NodeState::new(settings("a"));
    let v = || with_parameter(ViewB::new().leader("l"), 1);
    let d = decide(&st, &obs(v(), db_replica(10, 1, Some("l"))));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStart, DbRole::Replica)), "{:?}", d.actions);
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    assert_eq!((d.next.attached, d.next.db_role), (true, Some(DbRole::Replica)));
    // Only once: the next cycle finds it running as before.
    let d = decide(&d.next, &obs(v(), db_replica(10, 1, Some("l"))));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. } | Action::ReloadDb)), "{:?}", d.actions);
    // A database busy with a task on the first cycle, or not running, gets no on_start.
    let mut db = db_replica(10, 1, Some("l"));
    db.busy = Some(DbTask::Restart);
    let d = decide(&st, &obs(v(), db));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
    let d = decide(&st, &obs(v(), db_stopped(10, 1, false, DbProcess::Stopped)));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
}

#[test]
fn changed_parameters_reload_once_no_task_runs() {
    let db = || db_replica(10, 1, Some("l"));
    let first = decide(&state("a"), &obs(with_parameter(ViewB::new().leader("l"), 1), db())).next;
    assert!(first.applied_parameters.is_some() && !first.reload_pending);
    // Unchanged: nothing.
    let d = decide(&first, &obs(with_parameter(ViewB::new().leader("l"), 1), db()));
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    // Changed: a reload.
    let d = decide(&first, &obs(with_parameter(ViewB::new().leader("l"), 2), db()));
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    assert!(!d.next.reload_pending);
    // Changed while a task runs: owed, and run once the task is over.
    let mut busy = db();
    busy.busy = Some(DbTask::Follow { upstream: n("l") });
    let d = decide(&first, &obs(with_parameter(ViewB::new().leader("l"), 2), busy));
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    assert!(d.next.reload_pending);
    let d = decide(&d.next, &obs(with_parameter(ViewB::new().leader("l"), 2), db()));
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    // The node file's parameters count too.
    let mut local = first.clone();
    local.settings.local_parameters.insert("work_mem".into(), "8MB".into());
    let d = decide(&local, &obs(with_parameter(ViewB::new().leader("l"), 1), db()));
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
}

#[test]
fn a_failed_reload_is_retried_and_a_done_one_calls_on_reload() {
    let mut st = state("a");
    st.db_role = Some(DbRole::Replica);
    let v = || ViewB::new().leader("l");
    st.applied_parameters = decide(&st, &obs(v(), db_replica(10, 1, Some("l")))).next.applied_parameters;
    let failed = with(obs(v(), db_replica(10, 1, Some("l"))), vec![Outcome::DbReloaded { result: Err("boom".into()) }]);
    let d = decide(&st, &failed);
    assert!(d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    let done = with(obs(v(), db_replica(10, 1, Some("l"))), vec![Outcome::DbReloaded { result: Ok(true) }]);
    let d = decide(&st, &done);
    assert!(d.actions.contains(&callback(CallbackEvent::OnReload, DbRole::Replica)), "{:?}", d.actions);
    assert!(!d.actions.contains(&Action::ReloadDb), "{:?}", d.actions);
    // Nothing signalled (no server running): no on_reload.
    let idle = with(obs(v(), db_replica(10, 1, Some("l"))), vec![Outcome::DbReloaded { result: Ok(false) }]);
    let d = decide(&st, &idle);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
}

#[test]
fn a_promotion_calls_on_role_change_with_role_primary() {
    let mut st = leader_state("a");
    st.db_role = Some(DbRole::Replica);
    let done = Outcome::DbTaskDone { task: DbTask::Promote { timeline: Timeline(2) }, result: Ok(()) };
    let o = with(obs(ViewB::new().leader("a").status(1_000), db_primary(1_000, 2)), vec![done]);
    let d = decide(&st, &o);
    assert!(d.actions.contains(&callback(CallbackEvent::OnRoleChange, DbRole::Primary)), "{:?}", d.actions);
    assert_eq!(d.next.db_role, Some(DbRole::Primary));
    // A failed promotion calls nothing.
    let failed = Outcome::DbTaskDone {
        task: DbTask::Promote { timeline: Timeline(2) },
        result: Err(PortError::new(ErrorKind::Io, "boom")),
    };
    let o = with(obs(ViewB::new().leader("a"), db_replica(1_000, 1, None)), vec![failed]);
    let d = decide(&st, &o);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
}

#[test]
fn starts_stops_and_a_demotion_call_their_callbacks() {
    let v = || ViewB::new().leader("l");
    let ok = |task| vec![Outcome::DbTaskDone { task, result: Ok(()) }];
    // A start as a replica: on_start.
    let start = DbTask::Start(StartAs::Replica { upstream: Some(n("l")) });
    let d = decide(&state("a"), &with(obs(v(), db_replica(10, 1, Some("l"))), ok(start.clone())));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStart, DbRole::Replica)), "{:?}", d.actions);
    // A restart: on_restart with the role it had.
    let mut st = state("a");
    st.db_role = Some(DbRole::Replica);
    let d = decide(&st, &with(obs(v(), db_replica(10, 1, Some("l"))), ok(DbTask::Restart)));
    assert!(d.actions.contains(&callback(CallbackEvent::OnRestart, DbRole::Replica)), "{:?}", d.actions);
    // A plain stop, or a synchronous (fencing) one: on_stop, and the role is forgotten.
    let stopped = db_stopped(10, 1, false, DbProcess::Stopped);
    let d = decide(&st, &with(obs(v(), stopped.clone()), ok(DbTask::Stop(StopMode::Fast))));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStop, DbRole::Replica)), "{:?}", d.actions);
    assert_eq!(d.next.db_role, None);
    let fenced = Outcome::Stopped { mode: StopMode::Immediate, result: Ok(()) };
    let d = decide(&st, &with(obs(v(), stopped.clone()), vec![fenced]));
    assert!(d.actions.contains(&callback(CallbackEvent::OnStop, DbRole::Replica)), "{:?}", d.actions);
    // A switchover's stop calls nothing; the start as a replica after it is the role change.
    let mut st = state("a");
    st.db_role = Some(DbRole::Primary);
    st.demoting = true;
    let d = decide(&st, &with(obs(v(), stopped), ok(DbTask::Stop(StopMode::Fast))));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RunCallback { .. })), "{:?}", d.actions);
    assert!(d.next.demoted);
    let mut next = d.next;
    next.demoting = false;
    let d = decide(&next, &with(obs(v(), db_replica(10, 1, Some("l"))), ok(start)));
    assert!(d.actions.contains(&callback(CallbackEvent::OnRoleChange, DbRole::Replica)), "{:?}", d.actions);
    assert!(!d.next.demoted);
}

#[test]
fn the_role_is_registered_when_it_changes_and_again_after_a_failure() {
    let mut st = leader_state("a");
    st.settings.register_service = true;
    let v = || ViewB::new().leader("a").status(1_000);
    let d = decide(&st, &obs(v(), db_primary(1_000, 1)));
    let register = Action::RegisterService { role: DbRole::Primary };
    assert!(d.actions.contains(&register), "{:?}", d.actions);
    assert_eq!(d.next.registered_role, Some(DbRole::Primary));
    // Registered: not again.
    let d2 = decide(&d.next, &obs(v(), db_primary(1_000, 1)));
    assert!(!d2.actions.contains(&register), "{:?}", d2.actions);
    // A failed registration is published again.
    let failed = Outcome::ServiceRegistrationFailed { role: DbRole::Primary, reason: "agent down".into() };
    let d3 = decide(&d.next, &with(obs(v(), db_primary(1_000, 1)), vec![failed]));
    assert!(d3.actions.contains(&register), "{:?}", d3.actions);
    // A replica registers as one; a node without `register_service` never registers.
    let mut r = state("a");
    r.settings.register_service = true;
    let d = decide(&r, &obs(ViewB::new().leader("l"), db_replica(10, 1, Some("l"))));
    assert!(d.actions.contains(&Action::RegisterService { role: DbRole::Replica }), "{:?}", d.actions);
    let d = decide(&state("a"), &obs(ViewB::new().leader("l"), db_replica(10, 1, Some("l"))));
    assert!(!d.actions.iter().any(|a| matches!(a, Action::RegisterService { .. })), "{:?}", d.actions);
    // Announcing a primary needs the lease: skipped after a failed renewal, and retried.
    assert!(register.needs_lease());
    assert!(matches!(Outcome::lease_skipped(&register), Some(Outcome::ServiceRegistrationFailed { .. })));
}

#[test]
fn a_failed_watchdog_disarm_is_retried_and_a_failed_slot_sync_is_remembered() {
    let v = || ViewB::new().leader("l");
    let failed = Outcome::WatchdogDisarmFailed { reason: "EBUSY".into() };
    let d = decide(&state("a"), &with(obs(v(), db_replica(10, 1, Some("l"))), vec![failed]));
    assert!(d.actions.contains(&Action::DisarmWatchdog), "{:?}", d.actions);
    assert!(!d.next.watchdog_armed);
    // Without a failure, nothing.
    let d = decide(&state("a"), &obs(v(), db_replica(10, 1, Some("l"))));
    assert!(!d.actions.contains(&Action::DisarmWatchdog), "{:?}", d.actions);
    // A failed disarm learnt as the lease is lost: the fencing's disarm is the retry, once.
    let lost = Outcome::LeaderRenew { sent_at: NOW, fence_after_ms: 3_210, result: Err(ErrorKind::LeaseLost) };
    let failed = Outcome::WatchdogDisarmFailed { reason: "EBUSY".into() };
    let mut st = leader_state("a");
    st.watchdog_armed = true;
    let d = decide(&st, &with(obs(ViewB::new().leader("a"), db_primary(10, 1)), vec![lost, failed]));
    assert_eq!(d.actions.iter().filter(|a| **a == Action::DisarmWatchdog).count(), 1, "{:?}", d.actions);
    assert!(!d.next.watchdog_armed && d.next.lease.is_none());

    let failed = Outcome::SlotsSyncFailed { reason: "connection refused".into() };
    let mut db = db_primary(1_000, 1);
    db.slots = Some(vec![]);
    let st = leader_state("a");
    let view = || ViewB::new().leader("a").replica("b", 1_000).status(1_000);
    let d = decide(&st, &with(obs(view(), db.clone()), vec![failed]));
    assert_eq!(d.next.slots_sync_failed.as_deref(), Some("connection refused"));
    // Asked for again, and forgotten once the slots need nothing.
    assert!(d.actions.iter().any(|a| matches!(a, Action::SyncSlots { .. })), "{:?}", d.actions);
    db.slots = Some(vec![("b".into(), true)]);
    let d = decide(&d.next, &obs(view(), db));
    assert_eq!(d.next.slots_sync_failed, None);
}
