//! Sleep: until the decision's `wake_at`, or sooner when the leader key changes or a failover
//! request appears (a DCS watch), a background task finishes, an API request arrives, or the
//! daemon is asked to stop.

use std::time::Instant;

use shield_core::MemberName;
use tokio::sync::Notify;

use super::driver::Driver;

impl Driver {
    /// Sleeps until `wake`, a change of the leader key, a finished task, an API request, or
    /// shutdown.
    pub(crate) async fn sleep(
        &mut self,
        wake: Instant,
        revision: Option<(shield_core::Revision, Option<MemberName>)>,
        task_done: &Notify,
    ) {
        let dcs = self.dcs.clone();
        let watch_leader = async move {
            let Some((mut rev, leader)) = revision else { return std::future::pending::<()>().await };
            loop {
                let left = wake.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return std::future::pending::<()>().await;
                }
                match dcs.watch(rev, left.as_millis() as u64).await {
                    Ok(w) if w.revision == rev => return std::future::pending::<()>().await,
                    Ok(w) => match dcs.read().await {
                        Ok(v) if v.leader_name() != leader.as_ref() || v.failover.is_some() => return,
                        Ok(v) => rev = v.revision.max(w.revision),
                        Err(_) => return std::future::pending::<()>().await,
                    },
                    Err(_) => return std::future::pending::<()>().await,
                }
            }
        };
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = watch_leader => {}
            _ = task_done.notified() => {}
            _ = self.api.wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}
