//! Long database tasks (start, stop, promote, clone, rewind, restart) run in the background and
//! report back through a channel, so lease renewal never queues behind a pg_basebackup; and the
//! callbacks their completion calls for.

use shield_core::action::{DbTask, StartAs};
use shield_core::ports::{Database, ErrorKind, PortError};

use super::driver::{Cycle, Driver, Role};
use crate::backend::callbacks::Event;

/// The task running in the background.
pub(crate) struct Running {
    /// What it is.
    pub task: DbTask,
    /// Its task, aborted by an immediate stop.
    pub handle: tokio::task::JoinHandle<()>,
}

impl Driver {
    /// Starts `task` in the background; it reports on `cx.done_tx` and wakes the loop.
    pub(crate) fn start_task(&mut self, cx: &mut Cycle, task: DbTask) {
        tracing::info!(task = ?task, "starting database task");
        let db = self.db.clone();
        let done = cx.done_tx.clone();
        let notify = cx.task_done.clone();
        let t = task.clone();
        let scripts = self.callbacks.clone();
        let handle = tokio::spawn(async move {
            let r = match &t {
                // A failing pre_promote cancels the promotion; shield-core gives the lock back.
                DbTask::Promote { .. } => match scripts.pre_promote().await {
                    Ok(()) => db.run(&t).await,
                    Err(why) => Err(PortError::new(ErrorKind::Rejected, why)),
                },
                DbTask::Stop(_) | DbTask::Restart => {
                    scripts.before_stop().await;
                    db.run(&t).await
                }
                _ => db.run(&t).await,
            };
            // A finished task wakes the loop at once, except a failed start, clone or the like:
            // retried on the next regular cycle, not in a tight loop (a port in use, say).
            let wake_now = r.is_ok() || matches!(t, DbTask::Promote { .. } | DbTask::Stop(_));
            let _ = done.send((t, r));
            if wake_now {
                notify.notify_one();
            }
        });
        cx.running = Some(Running { task, handle });
    }

    /// Runs the callback script for `event`, naming the role as callbacks expect it.
    pub(crate) fn callback(&self, event: Event, role: Role) {
        let role = match role {
            Role::Primary => self.config.callback_primary_role.as_str(),
            Role::Replica => "replica",
        };
        self.callbacks.fire(event, role);
    }

    /// The callback a finished database task calls for, as Patroni fires them.
    pub(crate) fn task_callback(&mut self, task: &DbTask) {
        match task {
            DbTask::Promote { .. } => self.callback(Event::OnRoleChange, Role::Primary),
            DbTask::Bootstrap | DbTask::Start(StartAs::Primary) => self.callback(Event::OnStart, Role::Primary),
            DbTask::Start(StartAs::Replica { .. }) if std::mem::take(&mut self.demote_pending) => {
                self.callback(Event::OnRoleChange, Role::Replica)
            }
            DbTask::Start(StartAs::Replica { .. }) => self.callback(Event::OnStart, Role::Replica),
            DbTask::Restart => {
                if let Some(r) = self.db_role {
                    self.callback(Event::OnRestart, r);
                }
            }
            DbTask::Stop(_) if self.state.demoting => self.demote_pending = true,
            DbTask::Stop(_) => {
                if let Some(r) = self.db_role.take() {
                    self.callback(Event::OnStop, r);
                }
            }
            _ => {}
        }
    }
}
