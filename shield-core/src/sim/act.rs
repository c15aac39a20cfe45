//! Performing a decision's actions in the simulated world, and the database tasks they start.

use std::collections::BTreeMap;

use rand::Rng;

use crate::action::{Action, DbTask, StopMode};
use crate::observation::{Outcome, PeerReport};
use crate::ports::{Dcs, DcsKey, ErrorKind, PortError};
use crate::sim::db::{SimData, SimProcess, SimTask};
use crate::sim::invariants::Hook;
use crate::sim::world::{ready, Daemon, Ev, World};
use crate::types::{Lsn, SystemId};

/// A member that did not answer a failsafe request (down, frozen, cut off, or unknown).
const NO_ANSWER: &str = "no answer";

impl World {
    /// Runs node `i`'s remaining actions until one needs the DCS (which takes time) or none are left.
    pub(super) fn act_next(&mut self, i: usize) {
        if !self.daemon_runs(i, || Ev::ActNext { node: i }) {
            return;
        }
        loop {
            let Some(action) = self.nodes[i].actions.as_mut().and_then(|q| q.pop_front()) else {
                self.cycle_done(i);
                return;
            };
            if self.nodes[i].lease_gate_failed {
                if let Some(skipped) = Outcome::lease_skipped(&action) {
                    self.nodes[i].outcomes.push(skipped);
                    continue;
                }
            }
            if let Some(delay) = self.perform(i, action) {
                self.at(self.now + delay, Ev::ActNext { node: i });
                return;
            }
        }
    }

    fn cycle_done(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.actions = None;
        let t = n.global(n.wake_local).max(self.now);
        self.wake(i, t);
    }

    /// A DCS call from node `i`: applied now (the most pessimistic point for the caller), its
    /// answer arriving after the latency, or unreachable after retry_timeout.
    fn dcs_call<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&crate::testing::MemoryDcs) -> Result<T, PortError>,
    ) -> (Result<T, ErrorKind>, u64) {
        let timeout = self.nodes[i].state.config.timing.retry_timeout_ms;
        if !self.dcs_reachable(i) {
            return (Err(ErrorKind::Unreachable), timeout);
        }
        let lat = self.dcs_latency();
        let r = f(&self.nodes[i].dcs).map_err(|e| e.kind);
        self.after_dcs_change();
        if lat > timeout {
            (Err(ErrorKind::Unreachable), timeout)
        } else {
            (r, lat)
        }
    }

    fn note_write(&mut self, i: usize, what: &str, r: Result<(), ErrorKind>) {
        if let Err(kind) = r {
            self.nodes[i].outcomes.push(Outcome::DcsWriteFailed { what: what.to_owned(), kind });
        }
    }

    /// Performs one action; `Some(ms)` when it took simulated time.
    fn perform(&mut self, i: usize, action: Action) -> Option<u64> {
        let sent_at = self.nodes[i].local(self.now);
        match action {
            Action::RaceInitialize { system_id } => {
                let (result, lat) = self.dcs_call(i, |d| ready(d.create_initialize(system_id)));
                self.nodes[i].outcomes.push(Outcome::InitializeRace { result });
                Some(lat)
            }
            Action::WriteInitialize { system_id } => {
                let (r, lat) = self.dcs_call(i, |d| ready(d.write_initialize(system_id)));
                self.note_write(i, "initialize", r);
                Some(lat)
            }
            Action::WriteConfig { config } => {
                let (r, lat) = self.dcs_call(i, |d| ready(d.write_config(&config, None)));
                self.note_write(i, "config", r);
                Some(lat)
            }
            Action::AcquireLeader { ttl_ms, fence_after_ms, replacing } => {
                // The driver's guard: not sent after accepting a failsafe leader since the
                // observation this decision was made on; and no acceptance for a ttl after.
                let n = &mut self.nodes[i];
                if n.failsafe_vouched.as_ref().is_some_and(|(_, at, _)| *at >= n.observed_at) {
                    n.lease_gate_failed = true;
                    n.outcomes.push(Outcome::LeaderAcquire { sent_at, fence_after_ms, result: Ok(false) });
                    return None;
                }
                n.acquire_sent_at = Some(sent_at);
                let (result, lat) = match replacing {
                    None => self.dcs_call(i, |d| ready(d.acquire_leader(ttl_ms))),
                    Some(rev) => self.dcs_call(i, |d| ready(d.take_leader(ttl_ms, rev))),
                };
                self.nodes[i].lease_gate_failed |= result != Ok(true);
                self.nodes[i].outcomes.push(Outcome::LeaderAcquire { sent_at, fence_after_ms, result });
                Some(lat)
            }
            Action::RenewLeader { ttl_ms, fence_after_ms, feed_watchdog } => {
                let (result, lat) = self.dcs_call(i, |d| ready(d.renew_leader(ttl_ms)));
                self.nodes[i].lease_gate_failed |= result.is_err();
                self.nodes[i].renewal_unanswered = matches!(result, Err(ErrorKind::Unreachable));
                if result.is_ok() {
                    self.renewed(i, sent_at.plus(fence_after_ms), feed_watchdog, lat);
                }
                self.nodes[i].outcomes.push(Outcome::LeaderRenew { sent_at, fence_after_ms, result });
                Some(lat)
            }
            Action::WriteFailsafe { topology } => {
                let (r, lat) = self.dcs_call(i, |d| ready(d.write_failsafe(&topology)));
                self.nodes[i].lease_gate_failed |= r.is_err();
                self.note_write(i, "failsafe", r);
                Some(lat)
            }
            Action::ConfirmFailsafe { ref members, ttl_ms, fence_after_ms, feed_watchdog, after_failed_renewal } => {
                if after_failed_renewal && !self.nodes[i].renewal_unanswered {
                    return None;
                }
                let refused = self.failsafe_round(i, members, ttl_ms);
                // Peers answer in a few ms; one that does not answer costs the 2 s bound.
                let lat =
                    if refused.iter().any(|(_, why)| why == NO_ANSWER) { 2_000 } else { self.rng.gen_range(1..10) };
                if refused.is_empty() {
                    self.report.failsafe_accepted += 1;
                    // Each member promised the longer of its ttl and the leader's.
                    let ttl = self
                        .nodes
                        .iter()
                        .filter(|p| members.contains_key(p.name.as_str()))
                        .map(|p| p.state.config.timing.ttl_ms.max(ttl_ms))
                        .min()
                        .unwrap_or(ttl_ms);
                    self.nodes[i].failsafe_grant_until = Some(self.now + ttl);
                    self.renewed(i, sent_at.plus(fence_after_ms), feed_watchdog, lat);
                } else {
                    self.report.failsafe_refused += 1;
                }
                self.nodes[i].outcomes.push(Outcome::FailsafeConfirmed { sent_at, fence_after_ms, refused });
                Some(lat)
            }
            Action::ReleaseLeader => {
                let (result, lat) = self.dcs_call(i, |d| ready(d.release_leader()));
                self.nodes[i].outcomes.push(Outcome::LeaderRelease { result });
                Some(lat)
            }
            // Pipelined: sent, and the next action goes on without waiting for the answer.
            Action::TouchMember { data } => {
                let (r, _) = self.dcs_call(i, |d| ready(d.touch_member(&data)));
                self.note_write(i, "member", r);
                None
            }
            Action::WriteStatus { status } => {
                let (r, _) = self.dcs_call(i, |d| ready(d.write_status(&status)));
                self.note_write(i, "status", r);
                None
            }
            Action::WriteHistory { lines } => {
                let (r, lat) = self.dcs_call(i, |d| ready(d.write_history(&lines)));
                self.nodes[i].lease_gate_failed |= r.is_err();
                self.note_write(i, "history", r);
                self.check(Hook::HistoryWritten);
                Some(lat)
            }
            Action::ClearFailover { revision, .. } => {
                let (r, lat) = self.dcs_call(i, |d| ready(d.delete_cas(DcsKey::Failover, revision)));
                self.note_write(i, "failover", r);
                Some(lat)
            }
            Action::ProbePeers => {
                let reports = self.probe(i);
                self.nodes[i].outcomes.push(Outcome::PeersProbed { reports });
                Some(self.rng.gen_range(1..10))
            }
            Action::StopDb { mode: StopMode::Immediate } => {
                if self.nodes[i].db.writable() {
                    self.report.fences += 1;
                }
                self.stop_immediately(i);
                self.nodes[i].outcomes.push(Outcome::Stopped { mode: StopMode::Immediate, result: Ok(()) });
                None
            }
            Action::StopDb { mode: StopMode::Fast } => {
                self.start_task(i, DbTask::Stop(StopMode::Fast));
                None
            }
            Action::RunDbTask { task } => {
                if task.makes_primary() && self.fenced(i) {
                    let result = Err(PortError::new(ErrorKind::LeaseLost, "the fencing deadline passed first"));
                    self.nodes[i].outcomes.push(Outcome::DbTaskDone { task, result });
                    return None;
                }
                self.start_task(i, task);
                None
            }
            // Not modelled (the simulated databases report no slots, so decide() asks for none).
            Action::SyncSlots { .. } => None,
            Action::ArmWatchdog => {
                // The device takes whole seconds, rounded down (at least one).
                let n = &self.nodes[i];
                let asked = n.state.settings.watchdog_timeout_ms(&n.state.config.timing);
                self.set_watchdog(i, self.now, (asked / 1_000).max(1) * 1_000);
                None
            }
            Action::DisarmWatchdog => {
                self.nodes[i].watchdog_expire_ms = None;
                None
            }
            // The simulated server takes the parameters in force at once; a reload needs no time.
            Action::ReloadDb => {
                let running = matches!(self.nodes[i].db.process, SimProcess::Running { .. });
                self.nodes[i].reloads += 1;
                self.report.reloads += 1;
                self.nodes[i].outcomes.push(Outcome::DbReloaded { result: Ok(running) });
                None
            }
            // The script runs in the background: recorded, and nothing comes back.
            Action::RunCallback { event, role } => {
                let name = self.nodes[i].name.clone();
                self.trace.line(self.now, name.as_str(), || format!("callback {} {role:?}", event.as_str()));
                self.nodes[i].callbacks.push((event, role));
                self.report.callbacks += 1;
                None
            }
            // Service registration talks to the local Consul agent: it fails while the node
            // cannot reach the DCS, and decide() publishes again.
            Action::RegisterService { role } => {
                if self.dcs_reachable(i) {
                    self.nodes[i].registered_role = Some(role);
                } else {
                    let reason = "the DCS agent is unreachable".to_owned();
                    self.nodes[i].outcomes.push(Outcome::ServiceRegistrationFailed { role, reason });
                }
                None
            }
            Action::AddVip => {
                let was = self.nodes[i].vip;
                self.nodes[i].vip = !self.fenced(i);
                if self.nodes[i].vip && !was {
                    self.check(Hook::VipBound { node: i });
                }
                None
            }
            Action::RemoveVip => {
                self.nodes[i].vip = false;
                None
            }
            Action::Exit => {
                self.nodes[i].daemon = Daemon::Down;
                None
            }
        }
    }

    /// The fence guard's deadline has passed (or there is none): no primary-making action runs.
    /// Part of the fence guard: a schedule without it lets them run.
    fn fenced(&self, i: usize) -> bool {
        let n = &self.nodes[i];
        self.cfg.fence_guard && n.fence_at.is_none_or(|f| n.local(self.now) >= f)
    }

    /// Arms or feeds the watchdog at `at` with a timeout of `timeout_ms` (whole seconds).
    fn set_watchdog(&mut self, i: usize, at: u64, timeout_ms: u64) {
        let exp = at + timeout_ms;
        self.nodes[i].watchdog_expire_ms = Some(exp);
        self.at(exp, Ev::WatchdogCheck { node: i });
    }

    /// A successful renewal (or failsafe round) sent at local `sent_at`: the driver moves its
    /// guard and the keeper to `to` and feeds the watchdog `lat` later.
    fn renewed(&mut self, i: usize, to: crate::types::MonoMillis, feed: Option<crate::action::WatchdogFeed>, lat: u64) {
        let n = &mut self.nodes[i];
        if n.fence_at.is_some_and(|f| f < to) {
            n.fence_at = Some(to);
            let (t, paused) = (n.global(to), n.state.config.pause);
            if self.cfg.fence_guard {
                self.at(t, Ev::FenceGuard { node: i });
            }
            if !paused {
                self.set_keeper(i, Some(to));
            }
        }
        if let Some(timeout) = feed.and_then(|f| f.timeout_ms(lat)) {
            self.set_watchdog(i, self.now + lat, timeout);
        }
    }

    /// `POST /failsafe` from node `i` to each member: who did not accept, and why. An accepting
    /// member records the leader at its own local time (the answer is applied now, the most
    /// pessimistic point for the asking leader).
    fn failsafe_round(
        &mut self,
        i: usize,
        members: &BTreeMap<String, String>,
        leader_ttl_ms: u64,
    ) -> Vec<(String, String)> {
        let me = self.nodes[i].name.clone();
        let mut refused = Vec::new();
        for name in members.keys() {
            let j = self.nodes.iter().position(|p| p.name.as_str() == name.as_str());
            let answer = match j {
                Some(j) if j != i && self.nodes[j].daemon == Daemon::Up && self.peers_connected(i, j) => {
                    let p = &self.nodes[j];
                    let ttl = p.state.config.timing.ttl_ms;
                    let now = p.local(self.now);
                    let racing = p.acquire_sent_at.is_some_and(|a| now.since(a) < ttl) || p.state.lease.is_some();
                    if !p.state.config.failsafe_mode {
                        Err("failsafe mode is not enabled (502)".to_owned())
                    } else {
                        crate::failsafe_answer(p.last_leader.as_ref(), &p.db.status(), &me, racing).map(|_| now)
                    }
                }
                _ => Err(NO_ANSWER.to_owned()),
            };
            match (answer, j) {
                (Ok(at), Some(j)) => self.nodes[j].failsafe_vouched = Some((me.clone(), at, leader_ttl_ms)),
                (Err(why), _) => refused.push((name.clone(), why)),
                (Ok(_), None) => {}
            }
        }
        refused
    }

    fn probe(&mut self, i: usize) -> BTreeMap<crate::types::MemberName, PeerReport> {
        let mut out = BTreeMap::new();
        for (j, p) in self.nodes.iter().enumerate() {
            if j == i || p.daemon != Daemon::Up || !self.peers_connected(i, j) {
                continue;
            }
            // A peer whose status query does not answer says "unknown", which the daemon's probe
            // does not count, except in pause, where it may be a primary without the lock.
            if p.status_stalled > 0 && !p.state.config.pause {
                continue;
            }
            let st = p.db.status();
            out.insert(
                p.name.clone(),
                PeerReport {
                    is_primary: p.db.writable() || p.status_stalled > 0,
                    wal_position: st.wal_position(),
                    timeline: st.timeline,
                    can_promote: p.state.settings.tags.can_promote(),
                    priority: p.state.settings.tags.priority(),
                },
            );
        }
        out
    }

    fn start_task(&mut self, i: usize, task: DbTask) {
        let ms = match &task {
            DbTask::Bootstrap => self.rng.gen_range(1_000..3_000),
            DbTask::Clone { .. } => self.rng.gen_range(2_000..8_000),
            DbTask::Start(_) | DbTask::Restart => self.rng.gen_range(200..1_500),
            DbTask::Stop(_) => self.rng.gen_range(50..600),
            DbTask::Promote { .. } => self.rng.gen_range(50..500),
            DbTask::Follow { .. } => self.rng.gen_range(50..300),
            DbTask::Rewind { .. } => self.rng.gen_range(500..3_000),
            DbTask::WipeDataDir => self.rng.gen_range(10..200),
        };
        if matches!(task, DbTask::Rewind { .. } | DbTask::WipeDataDir | DbTask::Clone { .. }) {
            // The driver stops the database before replacing its data.
            self.nodes[i].db.stop_now(StopMode::Fast);
        }
        if let DbTask::Start(how) = &task {
            if let Err(why) = self.nodes[i].db.start(how) {
                let result = Err(PortError::new(ErrorKind::Io, why));
                self.nodes[i].outcomes.push(Outcome::DbTaskDone { task, result });
                return;
            }
        }
        self.task_seq += 1;
        let seq = self.task_seq;
        self.nodes[i].db.task = Some(SimTask { task, seq });
        self.at(self.now + ms, Ev::TaskDone { node: i, seq });
    }

    pub(super) fn task_done(&mut self, i: usize, seq: u64) {
        let Some(t) = self.nodes[i].db.task.take_if(|t| t.seq == seq) else { return };
        let result = self.finish_task(i, &t.task).map_err(|(kind, why)| PortError::new(kind, why));
        let name = self.nodes[i].name.clone();
        self.trace.line(self.now, name.as_str(), || format!("task {:?} done: {result:?}", t.task));
        self.nodes[i].outcomes.push(Outcome::DbTaskDone { task: t.task, result });
        // The task changed the database: the daemon forgets the status it last read.
        self.nodes[i].last_status = None;
        // A finished task is worth a prompt look, as the daemon's task completion wakes the loop.
        if self.nodes[i].actions.is_none() && self.nodes[i].daemon == Daemon::Up {
            self.wake(i, self.now + 1);
        }
    }

    fn source_data(&self, i: usize, name: &crate::types::MemberName) -> Result<SimData, (ErrorKind, String)> {
        let unreachable = || (ErrorKind::Unreachable, format!("cannot connect to {name}"));
        let j = self.nodes.iter().position(|n| &n.name == name).ok_or_else(unreachable)?;
        let s = &self.nodes[j];
        if !self.peers_connected(i, j) || !matches!(s.db.process, SimProcess::Running { .. }) {
            return Err(unreachable());
        }
        s.db.data.clone().ok_or_else(unreachable)
    }

    fn finish_task(&mut self, i: usize, task: &DbTask) -> Result<(), (ErrorKind, String)> {
        match task {
            DbTask::Bootstrap => {
                let system_id = SystemId(self.rng.gen_range(7_000_000_000_000_000_000..7_400_000_000_000_000_000));
                let db = &mut self.nodes[i].db;
                db.data = Some(SimData {
                    system_id,
                    timeline: crate::types::Timeline(1),
                    lsn: Lsn(0x0100_0000),
                    history: Vec::new(),
                    was_primary: true,
                    checkpoint_timeline: crate::types::Timeline(1),
                });
                db.process = SimProcess::Running { in_recovery: false };
                self.check(Hook::BecameWritable { node: i, promoted: false });
                Ok(())
            }
            DbTask::Clone { source } => {
                let mut d = self.source_data(i, source)?;
                d.was_primary = false;
                let db = &mut self.nodes[i].db;
                db.data = Some(d);
                db.process = SimProcess::Stopped;
                Ok(())
            }
            DbTask::Start(_) | DbTask::Restart => {
                let db = &mut self.nodes[i].db;
                db.started();
                if db.writable() {
                    self.check(Hook::BecameWritable { node: i, promoted: true });
                }
                Ok(())
            }
            DbTask::Stop(mode) => {
                self.nodes[i].db.stop_now(*mode);
                Ok(())
            }
            DbTask::Promote { timeline } => {
                self.nodes[i].db.promote(*timeline).map_err(|e| (ErrorKind::Io, e))?;
                self.report.promotions += 1;
                // The first checkpoint on the new timeline ends 0-2.5 s later (the daemon asks
                // for it at once; a busy server takes longer). Not drawn from the schedule's
                // random stream, so that seeds keep their schedules.
                if let Some(tl) = self.nodes[i].db.data.as_ref().map(|d| d.timeline) {
                    let ms = (u64::from(tl.0) * 7_919 + i as u64 * 104_729) % 2_500;
                    self.at(self.now + ms, Ev::Checkpointed { node: i, timeline: tl });
                }
                if let Some(d) = self.nodes[i].db.data.clone() {
                    let (parent, fork_lsn) = d.history.last().copied().unwrap_or_default();
                    // Shared with the cluster timeline the node last read: up to where the
                    // parent timeline ended there, if it had.
                    let n = &self.nodes[i];
                    let ended = n.seen_history.iter().filter(|(t, _)| *t >= parent).map(|(_, l)| *l).min();
                    let shared_lsn = ended.map_or(fork_lsn, |e| fork_lsn.min(e));
                    // Acknowledged writes the new timeline's lineage does not contain.
                    let kept =
                        |(t, l): &(crate::types::Timeline, Lsn)| d.history.iter().any(|(ht, end)| ht == t && l <= end);
                    let before = self.acked.len();
                    self.acked.retain(kept);
                    let writes_lost = (before - self.acked.len()) as u64;
                    self.report.writes_lost += writes_lost;
                    let seen_optime = n.seen_optime;
                    self.check(Hook::TimelineCreated {
                        node: i,
                        timeline: d.timeline,
                        fork_lsn,
                        shared_lsn,
                        seen_optime,
                        writes_lost,
                    });
                }
                self.check(Hook::BecameWritable { node: i, promoted: true });
                Ok(())
            }
            DbTask::Follow { upstream } => {
                self.nodes[i].db.upstream = Some(upstream.clone());
                Ok(())
            }
            DbTask::Rewind { source } => {
                let src = self.source_data(i, source)?;
                self.report.rewinds += 1;
                self.nodes[i].db.rewind_from(&src).map_err(|e| (ErrorKind::Io, e))
            }
            DbTask::WipeDataDir => {
                let db = &mut self.nodes[i].db;
                db.data = None;
                db.process = SimProcess::Stopped;
                Ok(())
            }
        }
    }
}
