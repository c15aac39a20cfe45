//! The node's side effects that no HA rule needs but the operator's tools do: Patroni's
//! callbacks, reloading PostgreSQL after a parameter change, publishing the role to service
//! discovery, and retrying a watchdog disarm that failed. decide() asks for each as an action,
//! so the journal records it and the simulator runs it.

use crate::action::{Action, CallbackEvent, DbRole, DbTask, StartAs};
use crate::decide::Ctx;
use crate::observation::DbProcess;

/// A fingerprint of the PostgreSQL parameters in force: the cluster's `postgresql.parameters`
/// and the node file's. FNV-1a over their JSON (both maps are ordered), so it is the same on
/// every platform and in every run; a change of either asks for a reload.
pub(super) fn parameters_fingerprint(
    cluster: &std::collections::BTreeMap<String, serde_json::Value>,
    local: &std::collections::BTreeMap<String, String>,
) -> u64 {
    let text = serde_json::json!([cluster, local]).to_string();
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The callback a finished database task calls for, as Patroni fires them; and the bookkeeping
/// that goes with it (the role a stop ends, a demotion's stop).
pub(super) fn task_succeeded(cx: &mut Ctx<'_>, task: &DbTask) {
    let (event, role) = match task {
        DbTask::Promote { .. } => (CallbackEvent::OnRoleChange, Some(DbRole::Primary)),
        DbTask::Bootstrap | DbTask::Start(StartAs::Primary) => (CallbackEvent::OnStart, Some(DbRole::Primary)),
        DbTask::Start(StartAs::Replica { .. }) if std::mem::take(&mut cx.st.demoted) => {
            (CallbackEvent::OnRoleChange, Some(DbRole::Replica))
        }
        DbTask::Start(StartAs::Replica { .. }) => (CallbackEvent::OnStart, Some(DbRole::Replica)),
        DbTask::Restart => (CallbackEvent::OnRestart, cx.st.db_role),
        // A switchover's stop: the start as a replica that follows is the role change.
        DbTask::Stop(_) if cx.st.demoting => {
            cx.st.demoted = true;
            return;
        }
        DbTask::Stop(_) => (CallbackEvent::OnStop, cx.st.db_role.take()),
        DbTask::Clone { .. } | DbTask::Follow { .. } | DbTask::Rewind { .. } | DbTask::WipeDataDir => return,
    };
    if let Some(role) = role {
        cx.effects.push(Action::RunCallback { event, role });
    }
}

/// A synchronous stop (fencing) ran: `on_stop` for the role it ended.
pub(super) fn stopped(cx: &mut Ctx<'_>, result: &Result<(), String>) {
    if result.is_ok() {
        if let Some(role) = cx.st.db_role.take() {
            cx.effects.push(Action::RunCallback { event: CallbackEvent::OnStop, role });
        }
    }
}

/// A reload ran: `on_reload` when the server was signalled; tried again when it failed.
pub(super) fn reloaded(cx: &mut Ctx<'_>, result: &Result<bool, String>) {
    match result {
        Ok(true) => {
            if let Some(role) = cx.st.db_role {
                cx.effects.push(Action::RunCallback { event: CallbackEvent::OnReload, role });
            }
        }
        Ok(false) => {}
        Err(_) => cx.st.reload_pending = true,
    }
}

/// Runs after the situation's rules, on every path (fencing and shutdown included): the role
/// as seen now, the first cycle's `on_start`, a reload the parameters call for, the role to
/// publish, a watchdog disarm to retry. The callbacks decided while folding the outcomes go
/// last (before `Exit`): nothing the HA rules ask for waits on a user script.
pub(super) fn after(cx: &mut Ctx<'_>) {
    let db = &cx.obs.db;
    let role = match db.process {
        DbProcess::Running { in_recovery } => Some(if in_recovery { DbRole::Replica } else { DbRole::Primary }),
        _ => None,
    };
    // A database found running when the daemon starts: on_start, as Patroni calls it when it
    // attaches to a live server.
    if let (false, None, Some(r), None) = (cx.st.attached, cx.st.db_role, role, &db.busy) {
        cx.effects.push(Action::RunCallback { event: CallbackEvent::OnStart, role: r });
    }
    if role.is_some() {
        cx.st.db_role = role;
    }
    reload(cx);
    cx.st.attached = true;
    // A watchdog still counted as armed without the lease is one whose disarm failed: it is
    // fed only after renewals, so left armed it would reset the host. Try again.
    // (A disarm this decision already asks for, fencing's say, counts.)
    if cx.st.watchdog_armed && cx.st.lease.is_none() {
        if !cx.actions.contains(&Action::DisarmWatchdog) {
            cx.push(Action::DisarmWatchdog);
        }
        cx.st.watchdog_armed = false;
    }
    register(cx);
    let effects = std::mem::take(&mut cx.effects);
    let at = cx.actions.iter().position(|a| *a == Action::Exit).unwrap_or(cx.actions.len());
    cx.actions.splice(at..at, effects);
}

/// Parameters changed since they were last applied (not on the first cycle, which takes them as
/// applied: the running server, or the start about to happen, has them already): reload once
/// no database task runs and this decision gives the database nothing to do. The reload
/// rewrites the configuration from the parameters in force, so a stopped server is covered too.
fn reload(cx: &mut Ctx<'_>) {
    let fp = parameters_fingerprint(&cx.st.config.postgresql.parameters, &cx.st.settings.local_parameters);
    if cx.st.applied_parameters.is_some_and(|applied| applied != fp) {
        cx.st.reload_pending = true;
    }
    cx.st.applied_parameters = Some(fp);
    let db_action = cx.actions.iter().any(|a| matches!(a, Action::RunDbTask { .. } | Action::StopDb { .. }));
    if cx.st.reload_pending && cx.obs.db.busy.is_none() && !db_action && !cx.st.shutting_down {
        cx.push(Action::ReloadDb);
        cx.st.reload_pending = false;
    }
}

/// Service registration: `primary` for the lock holder running as primary, `replica` for a
/// running replica, published again when that changes or the last publication failed.
fn register(cx: &mut Ctx<'_>) {
    if !cx.st.settings.register_service || cx.st.shutting_down {
        return;
    }
    let want = match (cx.st.lease.is_some(), cx.st.db_role) {
        (true, Some(DbRole::Primary)) => DbRole::Primary,
        (_, Some(DbRole::Replica)) => DbRole::Replica,
        _ => return,
    };
    if cx.st.registered_role != Some(want) {
        cx.push(Action::RegisterService { role: want });
        cx.st.registered_role = Some(want);
    }
}
