//! Sleep: until the decision's `wake_at`, or sooner when the DCS shows a change the loop must act
//! on at once (a DCS watch), a background task finishes, an API request arrives, or the daemon is
//! asked to stop.
//!
//! The changes that wake the loop are the ones a decision turns on: the leader key (gone, taken,
//! taken again), a failover or switchover request, the dynamic config, `initialize` and `sync`,
//! and the set of members (a member that joins or comes back needs its replication slot on the
//! leader before it can stream; one that leaves is no longer a candidate). The contents of member
//! and status keys change every cycle on a busy cluster and wake nobody. With the watched
//! DCS handle the wait is on the handle's own view: no request is sent while sleeping.

use std::time::Instant;

use shield_core::cluster::ClusterView;
use shield_core::{MemberName, Revision};
use tokio::sync::Notify;

use super::driver::Driver;

/// What a decision turns on, in a view: when it differs from what the cycle saw, the loop wakes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Watched {
    leader: Option<(Option<MemberName>, Revision)>,
    failover: Option<Revision>,
    config: Option<Revision>,
    initialize: Option<String>,
    sync: Option<String>,
    members: Vec<MemberName>,
}

impl Watched {
    pub(crate) fn of(v: &ClusterView) -> Watched {
        Watched {
            leader: v.leader.as_ref().map(|l| (l.name.clone(), l.revision)),
            failover: v.failover.as_ref().map(|_| v.failover_revision.unwrap_or_default()),
            config: v.config.as_ref().map(|(_, r)| *r),
            initialize: v.initialize.as_ref().map(|i| format!("{i:?}")),
            sync: v.sync.as_ref().map(|s| format!("{s:?}")),
            members: v.members.keys().cloned().collect(),
        }
    }
}

impl Driver {
    /// Sleeps until `wake`, a change of what `seen` holds, a finished task, an API request, or
    /// shutdown.
    pub(crate) async fn sleep(&mut self, wake: Instant, seen: Option<(Revision, Watched)>, task_done: &Notify) {
        let dcs = self.dcs.clone();
        let watch = async move {
            let Some((mut rev, seen)) = seen else { return std::future::pending::<()>().await };
            loop {
                let left = wake.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return std::future::pending::<()>().await;
                }
                match dcs.watch(rev, left.as_millis() as u64).await {
                    Ok(w) if w.revision == rev => return std::future::pending::<()>().await,
                    Ok(w) => match dcs.read().await {
                        Ok(v) if Watched::of(&v) != seen => return,
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
            _ = watch => {}
            _ = task_done.notified() => {}
            _ = self.api.wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use shield_core::cluster::{Member, MemberData};

    use super::*;

    fn member(name: &str, lsn: u64) -> Member {
        let mut data = MemberData::new(shield_core::MemberRole::Replica, "running");
        data.xlog_location = Some(shield_core::Lsn(lsn));
        Member { name: MemberName::new(name).expect("name"), data, revision: Revision(lsn), owner: None }
    }

    fn view(members: &[Member]) -> ClusterView {
        let mut v = ClusterView::default();
        for m in members {
            v.members.insert(m.name.clone(), m.clone());
        }
        v
    }

    #[test]
    fn a_member_that_joins_or_leaves_wakes_the_loop_but_its_positions_do_not() {
        let seen = Watched::of(&view(&[member("a", 1), member("b", 1)]));
        assert_eq!(Watched::of(&view(&[member("a", 9), member("b", 7)])), seen, "positions moved");
        assert_ne!(Watched::of(&view(&[member("a", 1), member("b", 1), member("c", 1)])), seen, "c joined");
        assert_ne!(Watched::of(&view(&[member("a", 1)])), seen, "b left");
    }
}
