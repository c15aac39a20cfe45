//! One node's cycle in the simulated world: its DCS read (through the simulated network),
//! decide(), and the decision's actions and timers.

use super::*;

impl World {
    pub(super) fn start_cycle(&mut self, i: usize) {
        match self.nodes[i].daemon {
            Daemon::Up => {}
            Daemon::Frozen { until_ms } => return self.wake(i, until_ms),
            Daemon::Down => return,
        }
        if self.nodes[i].actions.is_some() {
            return;
        }
        self.nodes[i].actions = Some(VecDeque::new());
        let sent = self.nodes[i].local(self.now);
        // The status query runs alongside the read; one that does not answer holds the cycle up
        // for the status timeout.
        let status_answers = self.nodes[i].status_stalled == 0;
        let status_wait = if status_answers { 0 } else { self.nodes[i].state.config.timing.status_timeout_ms() };
        let timeout = self.nodes[i].state.config.timing.retry_timeout_ms;
        let (result, wait) = if self.dcs_reachable(i) {
            let lat = self.dcs_latency();
            let result = if lat > timeout {
                Err(ErrorKind::Unreachable)
            } else {
                ready(self.nodes[i].dcs.read()).map(Box::new).map_err(|e| e.kind)
            };
            (result, lat.min(timeout))
        } else {
            (Err(ErrorKind::Unreachable), timeout)
        };
        self.at(self.now + wait.max(status_wait), Ev::ReadDone { node: i, result, sent, status_answers });
    }

    pub(super) fn read_done(
        &mut self,
        i: usize,
        result: Result<Box<crate::cluster::ClusterView>, ErrorKind>,
        sent: MonoMillis,
        status_answers: bool,
    ) {
        match self.nodes[i].daemon {
            Daemon::Up => {}
            Daemon::Frozen { until_ms } => {
                return self.at(until_ms, Ev::ReadDone { node: i, result, sent, status_answers })
            }
            Daemon::Down => return,
        }
        let n = &mut self.nodes[i];
        let dcs = match result {
            Ok(view) => {
                n.unreachable_since = None;
                if let Some(l) = view.leader_name() {
                    n.last_leader = Some(l.clone());
                }
                n.seen_optime = view.optime();
                n.seen_history = view.history.iter().map(|h| (h.timeline, h.lsn)).collect();
                DcsView::Reachable(*view)
            }
            Err(_) => DcsView::Unreachable { since: *n.unreachable_since.get_or_insert(sent) },
        };
        let db = if status_answers {
            let st = n.db.status();
            n.last_status = Some(st.clone());
            st
        } else {
            // What the driver reports: the postmaster's liveness (no query), the rest as last read.
            let alive = matches!(n.db.process, SimProcess::Running { .. } | SimProcess::Starting) && !n.db.stop_pending;
            let mut st = crate::observation::DbStatus::unanswered(n.last_status.as_ref(), Some(alive));
            st.busy = n.db.task.as_ref().map(|t| t.task.clone());
            st
        };
        let obs = Observation {
            now: n.local(self.now),
            wall_ms: EPOCH_MS + self.now as i64,
            dcs,
            db,
            outcomes: std::mem::take(&mut n.outcomes),
            shutdown_requested: false,
            requests: std::mem::take(&mut n.requests),
            failsafe_vouched: n.failsafe_vouched.clone(),
        };
        n.observed_at = obs.now;
        let d = (self.cfg.decide)(&n.state, &obs);
        self.report.decisions += 1;
        let name = n.name.clone();
        self.trace.line(self.now, name.as_str(), || {
            let acts: Vec<String> = d.actions.iter().map(crate::sim::trace::action_name).collect();
            format!("{} [{}]", d.reason, acts.join(", "))
        });
        let n = &mut self.nodes[i];
        n.state = d.next;
        n.fence_at = d.fence_at;
        n.wake_local = d.wake_at;
        n.actions = Some(d.actions.into());
        n.lease_gate_failed = false;
        n.renewal_unanswered = false;
        if let Some(f) = d.fence_at.filter(|_| self.cfg.fence_guard) {
            let t = self.nodes[i].global(f);
            self.at(t, Ev::FenceGuard { node: i });
        }
        // The driver hands the keeper the same deadline, except in pause.
        let keep = d.fence_at.filter(|_| !self.nodes[i].state.config.pause);
        self.set_keeper(i, keep);
        self.act_next(i);
    }
}
