//! The daemon's protections as the simulator models them: the fence keeper, the in-process
//! fence guard, the watchdog device, a daemon crash and a host reboot.

use super::*;

impl World {
    /// The fence keeper's timer: a separate process, so it runs while the daemon is frozen or
    /// dead, but not while the whole host is frozen or down. At a deadline that no newer one
    /// replaced (or the last one of a keeper whose daemon died) it stops the postmaster
    /// immediately and removes the VIP.
    pub(super) fn keeper(&mut self, i: usize, epoch: u64, at: u64) {
        let n = &mut self.nodes[i];
        if n.host_down {
            return;
        }
        if let Some(until) = n.host_frozen_until {
            return self.at(until, Ev::Keeper { node: i, epoch, at });
        }
        let live = epoch == n.keeper_epoch && n.keeper_at == Some(at);
        let orphan = n.orphan_keepers.contains(&(epoch, at));
        if !live && !orphan {
            return;
        }
        n.orphan_keepers.retain(|o| *o != (epoch, at));
        if live {
            n.keeper_at = None;
        }
        if matches!(n.db.process, crate::sim::db::SimProcess::Running { .. } | crate::sim::db::SimProcess::Starting)
            || n.db.task.is_some()
        {
            if n.db.writable() {
                self.report.fences += 1;
            }
            self.trace
                .line(self.now, self.nodes[i].name.as_str(), || "fence keeper: immediate stop at the deadline".into());
            self.stop_immediately(i);
        }
        self.nodes[i].vip = false;
    }

    /// The daemon's fence guard: stops a writable database at the deadline even if the cycle is
    /// stuck in a slow call.
    pub(super) fn fence_guard(&mut self, i: usize) {
        let n = &self.nodes[i];
        if n.daemon != Daemon::Up || !self.cfg.fence_guard {
            return;
        }
        let Some(f) = n.fence_at else { return };
        if n.local(self.now) < f || n.state.config.pause {
            return;
        }
        if n.db.writable() || n.db.task.is_some() {
            self.trace.line(self.now, n.name.as_str(), || "fence guard: immediate stop at the deadline".into());
            self.report.fences += 1;
            self.stop_immediately(i);
            self.nodes[i].vip = false;
        }
    }

    pub(super) fn stop_lands(&mut self, i: usize) {
        let db = &mut self.nodes[i].db;
        if std::mem::take(&mut db.stop_pending) {
            db.crash();
        }
    }

    pub(super) fn watchdog_check(&mut self, i: usize) {
        let Some(exp) = self.nodes[i].watchdog_expire_ms else { return };
        if exp > self.now {
            return;
        }
        self.trace.line(self.now, self.nodes[i].name.as_str(), || "watchdog fired: host reset".into());
        self.report.watchdog_resets += 1;
        self.crash_node(i);
        self.at(self.now + 5_000, Ev::Reboot { node: i });
    }

    /// The daemon process dies (kill -9, a panic); the database keeps running, and the fence
    /// keeper enforces the deadline it last had, then exits. The watchdog device, closed without
    /// the magic character, stays armed.
    pub(super) fn daemon_crash(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.daemon == Daemon::Down {
            return;
        }
        n.daemon = Daemon::Down;
        n.actions = None;
        n.outcomes.clear();
        n.fence_at = None;
        if let Some(at) = n.keeper_at.take() {
            n.orphan_keepers.push((n.keeper_epoch, at));
        }
        n.keeper_epoch += 1;
    }

    pub(super) fn reboot(&mut self, i: usize) {
        let ttl = self.cfg.config.timing.ttl_ms;
        let n = &mut self.nodes[i];
        if n.daemon != Daemon::Down {
            return;
        }
        n.host_down = false;
        n.daemon = Daemon::Up;
        n.state = NodeState::new(n.state.settings.clone());
        n.last_status = None;
        (n.last_leader, n.failsafe_vouched, n.acquire_sent_at) = (None, None, None);
        n.dcs = self.store.client("service", "sim", n.name.clone(), ttl);
        n.unreachable_since = None;
        self.trace.line(self.now, self.nodes[i].name.as_str(), || "daemon started".into());
        self.wake(i, self.now);
    }
}
