//! Observe: finished tasks, a requested config reload, one DCS read and one status query (in
//! parallel, each bounded), and the operator's requests, as one `Observation` for decide().

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use shield_core::action::DbTask;
use shield_core::cluster::ClusterView;
use shield_core::observation::{DbStatus, DcsView, Observation, Outcome};
use shield_core::ports::{Database, PortError};

use super::driver::{mono, wall_ms, Cycle, Driver};
use crate::rest::state::Pending;

impl Driver {
    /// One observation, and the requests it carries (answered after decide()).
    pub(crate) async fn observe(&mut self, cx: &mut Cycle) -> (Observation, Vec<Pending>) {
        self.finished_tasks(cx);
        if self.api.reload_requested.swap(false, std::sync::atomic::Ordering::SeqCst) {
            self.reload_config();
        }
        self.api.fire_due_restart(wall_ms());
        let sent = mono(cx.start);
        let retry = Duration::from_millis(self.state.config.timing.retry_timeout_ms);
        // The status is asked alongside the DCS read, within the same bound: a status query
        // that does not answer holds the next renewal up no longer than a slow read may, and
        // is asked again next cycle on a new connection.
        let status_wait = Duration::from_millis(self.state.config.timing.status_timeout_ms());
        let (read, status) = tokio::join!(
            tokio::time::timeout(retry, self.dcs.read()),
            tokio::time::timeout(status_wait, self.db.status())
        );
        let dcs = match read {
            Ok(Ok(view)) => {
                cx.unreachable_since = None;
                self.dcs_read(&view);
                DcsView::Reachable(view)
            }
            Ok(Err(_)) | Err(_) => DcsView::Unreachable { since: *cx.unreachable_since.get_or_insert(sent) },
        };
        let mut db = self.status_read(cx, status, status_wait);
        db.busy = cx.running.as_ref().map(|r| r.task.clone());
        let pending = self.api.requests.lock().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default();
        let obs = Observation {
            now: mono(cx.start),
            wall_ms: wall_ms(),
            dcs,
            db,
            outcomes: std::mem::take(&mut cx.outcomes),
            shutdown_requested: *self.shutdown.borrow(),
            requests: pending.iter().map(|p| p.request).collect(),
            failsafe_vouched: self.failsafe_vouched(cx),
        };
        (obs, pending)
    }

    /// Collects the background tasks that finished since the last cycle.
    fn finished_tasks(&mut self, cx: &mut Cycle) {
        while let Ok((task, result)) = cx.done_rx.try_recv() {
            if cx.running.as_ref().is_some_and(|r| r.task == task) {
                cx.running = None;
            }
            if let Err(e) = &result {
                tracing::warn!(task = ?task, error = %e, "database task failed");
            }
            // The task changed the database: what was last read of it no longer holds.
            cx.last_status = None;
            if task == DbTask::Restart {
                for w in cx.restart_waiters.drain(..) {
                    let _ = w.send(result.clone().map_err(|e| e.to_string()));
                }
            }
            cx.outcomes.push(Outcome::DbTaskDone { task, result });
        }
    }

    /// Keeps what others read of the cluster current, and the parameters the next start or
    /// reload writes (decide() asks for the reload when they change; what needs a restart shows
    /// as pending_restart).
    fn dcs_read(&mut self, view: &ClusterView) {
        if let Ok(mut c) = self.cluster.lock() {
            *c = view.clone();
        }
        if let (Some(l), Ok(mut f)) = (view.leader_name(), self.api.failsafe.lock()) {
            f.last_leader = Some(l.clone());
        }
        let Some((cfg, _)) = &view.config else { return };
        let new: BTreeMap<String, String> =
            cfg.postgresql.parameters.iter().map(|(k, v)| (k.clone(), json_scalar(v))).collect();
        if let Ok(mut p) = self.dcs_parameters.lock() {
            *p = new;
        }
    }

    /// The leader this node last accepted over `POST /failsafe`, on shield-core's clock.
    fn failsafe_vouched(&self, cx: &Cycle) -> Option<(shield_core::MemberName, shield_core::MonoMillis, u64)> {
        let f = self.api.failsafe.lock().ok()?;
        let (name, at, ttl) = f.vouched.as_ref()?;
        Some((name.clone(), shield_core::MonoMillis(at.saturating_duration_since(cx.start).as_millis() as u64), *ttl))
    }

    /// The status as read, or, when the query failed or did not answer in time, the last one
    /// marked unknown.
    fn status_read(
        &self,
        cx: &mut Cycle,
        status: Result<Result<DbStatus, PortError>, tokio::time::error::Elapsed>,
        waited: Duration,
    ) -> DbStatus {
        match status {
            Ok(Ok(s)) => {
                cx.status_failing = false;
                cx.last_status = Some(s.clone());
                s
            }
            failed => {
                // Once per spell of failures: the database then shows as "unknown". Never an
                // invalid data directory: a slow status is no reason to fence (decide() keeps
                // the lock for primary_start_timeout).
                if !std::mem::replace(&mut cx.status_failing, true) {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {waited:?}"),
                    };
                    tracing::warn!(error = %why, "database status unavailable; will ask again next cycle");
                }
                // A dead postmaster is still seen as one (a crash, not an unknown).
                DbStatus::unanswered(cx.last_status.as_ref(), self.db.postmaster_alive())
            }
        }
    }
}

/// A DCS parameter value as postgresql.conf takes it (`on`/`off` for booleans).
fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        other => other.to_string(),
    }
}
