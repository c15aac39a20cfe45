//! Long database tasks (start, stop, promote, clone, rewind, restart) run in the background and
//! report back through a channel, so lease renewal never queues behind a pg_basebackup; and the
//! callbacks decide() asks for.

use shield_core::action::{CallbackEvent, DbRole, DbTask};
use shield_core::ports::{Database, ErrorKind, PortError};

use super::driver::{Cycle, Driver};

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
    pub(crate) fn callback(&self, event: CallbackEvent, role: DbRole) {
        let role = match role {
            DbRole::Primary => self.config.callback_primary_role.as_str(),
            DbRole::Replica => "replica",
        };
        self.callbacks.fire(event, role);
    }
}
