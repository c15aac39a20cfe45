//! Applying and lifting faults: partitions, freezes, stalls, clock and disk trouble.

use super::*;

impl World {
    pub(super) fn fault(&mut self, f: Fault, start: bool) {
        let i = f.node;
        if start {
            self.report.faults += 1;
            self.trace.line(self.now, "fault", || format!("start {f}"));
        } else {
            self.trace.line(self.now, "fault", || format!("end {f}"));
        }
        match f.kind {
            FaultKind::NodeCrash if start => self.crash_node(i),
            FaultKind::NodeCrash => self.reboot(i),
            FaultKind::DbCrash if start => self.nodes[i].db.crash(),
            FaultKind::DbCrash => {}
            FaultKind::Freeze if start => {
                if self.nodes[i].daemon == Daemon::Up {
                    self.nodes[i].daemon = Daemon::Frozen { until_ms: self.now + f.duration_ms };
                }
            }
            FaultKind::Freeze => {
                if matches!(self.nodes[i].daemon, Daemon::Frozen { .. }) && self.nodes[i].host_frozen_until.is_none() {
                    self.nodes[i].daemon = Daemon::Up;
                }
            }
            FaultKind::HostFreeze if start => {
                let n = &mut self.nodes[i];
                if !n.host_down && n.host_frozen_until.is_none() {
                    let until = self.now + f.duration_ms;
                    n.host_frozen_until = Some(until);
                    n.db.frozen = true;
                    if n.daemon != Daemon::Down {
                        n.daemon = Daemon::Frozen { until_ms: until };
                    }
                }
            }
            FaultKind::HostFreeze => self.thaw(i),
            FaultKind::TimingChange => self.change_timing(start.then_some(f.extra_latency_ms)),
            FaultKind::Pause if start => self.set_pause(true),
            FaultKind::Pause => self.try_resume(),
            FaultKind::Switchover if start => self.request_failover(i, true, f.extra_latency_ms),
            FaultKind::Failover if start => self.request_failover(i, false, 0),
            FaultKind::RestartRequest if start => self.nodes[i].requests.push(crate::observation::Request::Restart),
            FaultKind::Reinitialize if start => self.nodes[i].requests.push(crate::observation::Request::Reinitialize),
            FaultKind::NoFailover => self.nodes[i].state.settings.tags.nofailover = start,
            FaultKind::Switchover | FaultKind::Failover | FaultKind::RestartRequest | FaultKind::Reinitialize => {}
            FaultKind::DaemonCrash if start => self.daemon_crash(i),
            FaultKind::DaemonCrash => {
                if !self.nodes[i].host_down {
                    self.reboot(i);
                }
            }
            FaultKind::PartitionDcs => self.net.dcs_cut[i] = bump(self.net.dcs_cut[i], start),
            FaultKind::Split => self.split(i, start),
            FaultKind::PartitionPeers => self.net.peer_cut[i] = bump(self.net.peer_cut[i], start),
            FaultKind::Isolate => {
                self.net.dcs_cut[i] = bump(self.net.dcs_cut[i], start);
                self.net.peer_cut[i] = bump(self.net.peer_cut[i], start);
            }
            FaultKind::DcsOutage => self.net.dcs_down = bump(self.net.dcs_down, start),
            FaultKind::DcsDelay => self.net.extra_latency_ms = if start { f.extra_latency_ms } else { 0 },
            FaultKind::StatusStall => self.nodes[i].status_stalled = bump(self.nodes[i].status_stalled, start),
        }
    }

    /// Splits the cluster: `(n - 1) / 2` nodes from `first` on form the minority side, cut from
    /// the DCS and from the majority (one split at a time); `start == false` heals it.
    pub(super) fn split(&mut self, first: usize, start: bool) {
        let n = self.nodes.len();
        let size = n.saturating_sub(1) / 2;
        if start {
            if self.net.minority.is_some() || size == 0 {
                return;
            }
            let mut m = vec![false; n];
            for k in 0..size {
                m[(first + k) % n] = true;
            }
            for (i, cut) in m.iter().enumerate() {
                if *cut {
                    self.net.dcs_cut[i] += 1;
                }
            }
            self.net.minority = Some(m);
        } else if let Some(m) = self.net.minority.take() {
            for (i, cut) in m.iter().enumerate() {
                if *cut {
                    self.net.dcs_cut[i] = self.net.dcs_cut[i].saturating_sub(1);
                }
            }
        }
    }

    /// The whole host resumes. Every process wakes at once; the keeper's and the fence guard's
    /// overdue deadlines are enforced before the database acknowledges anything (their timers are
    /// already due; the milliseconds a real postmaster may answer first are not modelled).
    pub(super) fn thaw(&mut self, i: usize) {
        if self.nodes[i].host_frozen_until.take().is_none() {
            return;
        }
        let now = self.now;
        let n = &self.nodes[i];
        let local = n.local(now);
        let keeper_due = n.keeper_at.is_some_and(|t| t <= now) || n.orphan_keepers.iter().any(|&(_, t)| t <= now);
        let guard_due = self.cfg.fence_guard
            && n.daemon != Daemon::Down
            && n.fence_at.is_some_and(|f| f <= local)
            && !n.state.config.pause;
        if keeper_due || guard_due {
            let n = &mut self.nodes[i];
            n.keeper_at = n.keeper_at.filter(|&t| t > now);
            n.orphan_keepers.retain(|&(_, t)| t > now);
            if n.db.process == (crate::sim::db::SimProcess::Running { in_recovery: false }) {
                self.report.fences += 1;
            }
            n.db.crash();
            n.vip = false;
            self.trace.line(now, self.nodes[i].name.as_str(), || "thawed past the deadline: immediate stop".into());
        }
        let n = &mut self.nodes[i];
        n.db.frozen = false;
        if matches!(n.daemon, Daemon::Frozen { .. }) {
            n.daemon = Daemon::Up;
        }
        self.check(Hook::HostThawed { node: i });
    }
}
