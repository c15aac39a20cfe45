//! Act: runs a decision's actions in order, each bounded, and turns what they return into the
//! next observation's outcomes. The only `match action` in the binary.

use std::time::Duration;

use shield_core::action::{Action, DbRole, DbTask, StopMode, WatchdogFeed};
use shield_core::observation::{Observation, Outcome};
use shield_core::ports::{DcsKey, ErrorKind, PortError};
use shield_core::{Decision, Revision, SystemId};

use super::driver::{mono, Cycle, Driver};

/// A DCS call bounded by `retry_timeout`.
async fn bounded<T>(t: Duration, f: impl std::future::Future<Output = Result<T, PortError>>) -> Result<T, PortError> {
    tokio::time::timeout(t, f)
        .await
        .unwrap_or_else(|_| Err(PortError::new(ErrorKind::Unreachable, "DCS call exceeded retry_timeout")))
}

/// A failed DCS write, logged and reported.
fn note<T>(outcomes: &mut Vec<Outcome>, what: &str, r: Result<T, PortError>) {
    if let Err(e) = r {
        tracing::warn!(what, error = %e, "DCS write failed");
        outcomes.push(Outcome::DcsWriteFailed { what: what.to_owned(), kind: e.kind });
    }
}

impl Driver {
    fn retry(&self) -> Duration {
        Duration::from_millis(self.state.config.timing.retry_timeout_ms)
    }

    /// Runs `d`'s actions in order. Returns true when the decision says exit.
    pub(crate) async fn act(&mut self, cx: &mut Cycle, obs: &Observation, d: &Decision) -> bool {
        let mut exit = false;
        // Set when a lease action of this decision failed: what needs the lease is skipped.
        let mut lease_gate_failed = false;
        // This decision's renewal got no answer: its failsafe fallback round runs.
        let mut renewal_unanswered = false;
        for action in d.actions.clone() {
            let fenced = d.fence_at.is_none_or(|f| mono(cx.start) >= f);
            if lease_gate_failed {
                if let Some(skipped) = Outcome::lease_skipped(&action) {
                    tracing::warn!(action = ?action, "not run: a lease action before it failed");
                    cx.outcomes.push(skipped);
                    continue;
                }
            }
            // After a renewal that got no answer, the member and status writes of the same
            // decision would each wait retry_timeout for the same silent DCS, delaying the next
            // cycle (and with failsafe, its round) past the deadline: they are retried next cycle.
            if renewal_unanswered && matches!(action, Action::TouchMember { .. } | Action::WriteStatus { .. }) {
                let what = if matches!(action, Action::TouchMember { .. }) { "member" } else { "status" };
                cx.outcomes.push(Outcome::DcsWriteFailed {
                    what: what.to_owned(),
                    kind: shield_core::ports::ErrorKind::Unreachable,
                });
                continue;
            }
            // One arm per action; each arm is a call, so the match is the table of what runs.
            match action {
                Action::Exit => exit = true,
                Action::StopDb { mode: StopMode::Immediate } => self.stop_now(cx).await,
                Action::StopDb { mode: StopMode::Fast } => self.start_task(cx, DbTask::Stop(StopMode::Fast)),
                Action::RunDbTask { task } => self.run_task(cx, task, fenced),
                Action::RenewLeader { ttl_ms, fence_after_ms, feed_watchdog } => {
                    lease_gate_failed |= !self.renew(cx, ttl_ms, fence_after_ms, feed_watchdog).await;
                    renewal_unanswered = matches!(
                        cx.outcomes.last(),
                        Some(Outcome::LeaderRenew { result: Err(shield_core::ports::ErrorKind::Unreachable), .. })
                    );
                }
                Action::AcquireLeader { ttl_ms, fence_after_ms, replacing } => {
                    lease_gate_failed |= !self.acquire(cx, obs, ttl_ms, fence_after_ms, replacing).await;
                }
                Action::WriteFailsafe { topology } => {
                    let r = bounded(self.retry(), self.dcs.write_failsafe(&topology)).await;
                    lease_gate_failed |= r.is_err();
                    note(&mut cx.outcomes, "failsafe", r);
                }
                Action::ConfirmFailsafe { members, ttl_ms, fence_after_ms, feed_watchdog, after_failed_renewal } => {
                    if !after_failed_renewal || renewal_unanswered {
                        self.confirm_failsafe(cx, members, ttl_ms, fence_after_ms, feed_watchdog).await;
                    }
                }
                Action::ReleaseLeader => {
                    let result = bounded(self.retry(), self.dcs.release_leader()).await.map_err(|e| e.kind);
                    cx.outcomes.push(Outcome::LeaderRelease { result });
                }
                Action::RaceInitialize { system_id } => self.race_initialize(cx, system_id).await,
                Action::WriteInitialize { system_id } => {
                    let r = bounded(self.retry(), self.dcs.write_initialize(system_id)).await;
                    note(&mut cx.outcomes, "initialize", r);
                }
                Action::WriteConfig { config } => {
                    let r = bounded(self.retry(), self.dcs.write_config(&config, None)).await;
                    note(&mut cx.outcomes, "config", r);
                }
                Action::TouchMember { mut data } => {
                    let scheduled = self.api.scheduled_restart();
                    super::publish::complete_member(&mut data, &obs.db, &self.db.info(), scheduled.as_ref());
                    let r = bounded(self.retry(), self.dcs.touch_member(&data)).await;
                    note(&mut cx.outcomes, "member", r);
                }
                Action::WriteStatus { status } => {
                    let r = bounded(self.retry(), self.dcs.write_status(&status)).await;
                    note(&mut cx.outcomes, "status", r);
                }
                Action::WriteHistory { lines } => {
                    let r = bounded(self.retry(), self.dcs.write_history(&lines)).await;
                    lease_gate_failed |= r.is_err();
                    note(&mut cx.outcomes, "history", r);
                }
                Action::ClearFailover { revision, .. } => {
                    let r = bounded(self.retry(), self.dcs.delete_cas(DcsKey::Failover, revision)).await;
                    note(&mut cx.outcomes, "failover", r);
                }
                Action::ProbePeers => {
                    let reports = self.probe_peers(obs).await;
                    cx.outcomes.push(Outcome::PeersProbed { reports });
                }
                Action::ArmWatchdog => self.arm_watchdog(cx).await,
                Action::DisarmWatchdog => self.disarm_watchdog(cx).await,
                Action::SyncSlots { create, drop, advance } => {
                    if let Err(e) = shield_core::ports::Database::sync_slots(&*self.db, &create, &drop, &advance).await
                    {
                        // Retried next cycle: the slots are read again.
                        tracing::warn!(error = %e, "replication slots: sync failed");
                        cx.outcomes.push(Outcome::SlotsSyncFailed { reason: e.to_string() });
                    }
                }
                Action::AddVip => self.vip(cx, true, fenced).await,
                Action::RemoveVip => self.vip(cx, false, fenced).await,
                Action::ReloadDb => {
                    let result = self.reload_database();
                    cx.outcomes.push(Outcome::DbReloaded { result });
                }
                Action::RunCallback { event, role } => self.callback(event, role),
                Action::RegisterService { role } => self.register_service(cx, role).await,
            }
        }
        exit
    }

    /// Stops the database at once, interrupting whatever task runs.
    async fn stop_now(&mut self, cx: &mut Cycle) {
        if let Some(r) = cx.running.take() {
            r.handle.abort();
            if r.task == DbTask::Restart {
                for w in cx.restart_waiters.drain(..) {
                    let _ = w.send(Err(format!("interrupted: {}", cx.last_reason)));
                }
            }
        }
        let db = self.db.clone();
        let result = shield_core::ports::Database::stop(&*db, StopMode::Immediate).await.map_err(|e| e.to_string());
        cx.outcomes.push(Outcome::Stopped { mode: StopMode::Immediate, result });
    }

    /// A database task, unless it makes a primary and the fencing deadline passed first.
    fn run_task(&mut self, cx: &mut Cycle, task: DbTask, fenced: bool) {
        if task.makes_primary() && fenced && !self.state.config.pause {
            let e = PortError::new(ErrorKind::LeaseLost, "the fencing deadline passed first");
            cx.outcomes.push(Outcome::DbTaskDone { task, result: Err(e) });
        } else {
            self.start_task(cx, task);
        }
    }

    /// Renews the lease; on success feeds the watchdog and moves the fencing deadline. Returns
    /// whether it succeeded.
    async fn renew(&mut self, cx: &mut Cycle, ttl_ms: u64, fence_after_ms: u64, feed: Option<WatchdogFeed>) -> bool {
        let sent_at = mono(cx.start);
        let result = bounded(self.retry(), self.dcs.renew_leader(ttl_ms)).await.map_err(|e| e.kind);
        if result.is_ok() {
            let took = mono(cx.start).since(sent_at);
            self.feed_watchdog(took, feed, &mut cx.outcomes).await;
            if let Ok(mut s) = self.api.snap.lock() {
                s.renew_latency_ms = took as i64;
            }
            cx.fence.extend(cx.instant(sent_at.plus(fence_after_ms)));
        }
        let ok = result.is_ok();
        cx.outcomes.push(Outcome::LeaderRenew { sent_at, fence_after_ms, result });
        ok
    }

    /// Takes the leader key (a free one, or a dead one at its exact revision). Returns whether
    /// this node holds it now.
    ///
    /// Not sent when this node accepted a failsafe leader after the observation the decision
    /// was made on (decide() did not see that acceptance); checked and recorded under the lock
    /// `POST /failsafe` takes, so that no acceptance lands between the check and the send.
    async fn acquire(
        &mut self,
        cx: &mut Cycle,
        obs: &Observation,
        ttl_ms: u64,
        fence_after_ms: u64,
        replacing: Option<Revision>,
    ) -> bool {
        let sent_at = mono(cx.start);
        if let Ok(mut f) = self.api.failsafe.lock() {
            let observed = cx.instant(obs.now);
            if let Some((leader, ..)) = f.vouched.as_ref().filter(|(_, at, _)| *at >= observed) {
                tracing::info!(%leader, "not racing: accepted a failsafe leader after this cycle's observation");
                cx.outcomes.push(Outcome::LeaderAcquire { sent_at, fence_after_ms, result: Ok(false) });
                return false;
            }
            f.acquire_sent = Some(std::time::Instant::now());
        }
        let result = match replacing {
            None => bounded(self.retry(), self.dcs.acquire_leader(ttl_ms)).await,
            Some(rev) => bounded(self.retry(), self.dcs.take_leader(ttl_ms, rev)).await,
        }
        .map_err(|e| e.kind);
        let won = result == Ok(true);
        cx.outcomes.push(Outcome::LeaderAcquire { sent_at, fence_after_ms, result });
        won
    }

    /// One failsafe round: `POST /failsafe` to every member at once (2 s bound, one retry, as
    /// Patroni). All accepted: the round counts as a renewal sent at its start (guard, keeper
    /// and watchdog move as after one).
    async fn confirm_failsafe(
        &mut self,
        cx: &mut Cycle,
        members: std::collections::BTreeMap<String, String>,
        ttl_ms: u64,
        fence_after_ms: u64,
        feed: Option<WatchdogFeed>,
    ) {
        let sent_at = mono(cx.start);
        let started = std::time::Instant::now();
        let refused = super::peers::failsafe_round(&self.api, &self.state.settings, members, ttl_ms).await;
        if refused.is_empty() {
            let took = mono(cx.start).since(sent_at);
            self.feed_watchdog(took, feed, &mut cx.outcomes).await;
            cx.fence.extend(cx.instant(sent_at.plus(fence_after_ms)));
            if let Ok(mut f) = self.api.failsafe.lock() {
                f.confirmed = Some(started);
            }
        } else {
            tracing::warn!(?refused, "failsafe: not every member accepted this leader");
        }
        cx.outcomes.push(Outcome::FailsafeConfirmed { sent_at, fence_after_ms, refused });
    }

    /// The bootstrap race: creates `initialize`. A new cluster with a custom `bootstrap.method`
    /// (no data to adopt) does not enter it: Shield cannot run the method and initdb would make
    /// an empty cluster in its place (nothing is written to the DCS).
    async fn race_initialize(&mut self, cx: &mut Cycle, system_id: Option<SystemId>) {
        if system_id.is_none() && self.config.custom_bootstrap.is_some() {
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::error!(
                    method = self.config.custom_bootstrap.as_deref().unwrap_or_default(),
                    "not bootstrapping a new cluster: `bootstrap.method` names a method Shield cannot \
                     run; restore the data directory with it (Shield then adopts it) or remove the key \
                     to bootstrap with initdb"
                );
            }
            // decide() asks to run again at once after a race; a regular cycle's pause keeps
            // this refusal from spinning.
            tokio::time::sleep(Duration::from_millis(self.state.config.timing.loop_wait_ms)).await;
            cx.outcomes.push(Outcome::InitializeRace { result: Err(ErrorKind::Rejected) });
            return;
        }
        let result = bounded(self.retry(), self.dcs.create_initialize(system_id)).await.map_err(|e| e.kind);
        cx.outcomes.push(Outcome::InitializeRace { result });
    }

    /// Feeds the watchdog after a renewal that took `took_ms`, if shield-core asked for it, with
    /// the timeout that still fires before the renewed lease can expire.
    async fn feed_watchdog(&self, took_ms: u64, feed: Option<WatchdogFeed>, outcomes: &mut Vec<Outcome>) {
        let (Some(w), Some(feed)) = (&self.watchdog, feed) else { return };
        let Some(timeout_ms) = feed.timeout_ms(took_ms) else {
            tracing::warn!(took_ms, budget_ms = feed.budget_ms, "watchdog not fed: the renewal came back too late");
            return;
        };
        if let Err(e) = w.feed(timeout_ms).await {
            tracing::warn!(error = %e, "watchdog: cannot feed");
            outcomes.push(Outcome::WatchdogFailed { reason: e.to_string() });
        }
    }

    async fn arm_watchdog(&mut self, cx: &mut Cycle) {
        let timeout_ms = self.state.settings.watchdog_timeout_ms(&self.state.config.timing);
        let armed = match &self.watchdog {
            Some(w) => w.arm(timeout_ms).await,
            None => Err(PortError::new(ErrorKind::Io, "no watchdog device is usable")),
        };
        match armed {
            Ok(()) => tracing::info!(timeout_ms, "watchdog armed"),
            Err(e) => {
                tracing::warn!(error = %e, "watchdog: cannot arm");
                cx.outcomes.push(Outcome::WatchdogFailed { reason: e.to_string() });
            }
        }
    }

    /// Disarms the watchdog; a failure comes back, and decide() asks again.
    async fn disarm_watchdog(&mut self, cx: &mut Cycle) {
        if let Some(w) = &self.watchdog {
            match w.disarm().await {
                Ok(()) => tracing::info!("watchdog disarmed"),
                Err(e) => {
                    tracing::warn!(error = %e, "watchdog: cannot disarm; it may reset the host");
                    cx.outcomes.push(Outcome::WatchdogDisarmFailed { reason: e.to_string() });
                }
            }
        }
    }

    /// Binds or unbinds the VIP; never binds past the fencing deadline (the lease may be
    /// someone else's).
    async fn vip(&mut self, cx: &mut Cycle, adding: bool, fenced: bool) {
        let result = match &self.vip {
            Some(_) if adding && fenced => Err(PortError::new(ErrorKind::LeaseLost, "past the fencing deadline")),
            Some(v) if adding => v.add().await,
            Some(v) => v.remove().await,
            None => Err(PortError::new(ErrorKind::Io, "no VIP is configured")),
        };
        let bound = result.is_ok() == adding;
        if let Err(e) = result {
            tracing::error!(error = %e, adding, "vip: failed");
            cx.outcomes.push(Outcome::VipFailed { adding, reason: e.to_string() });
        }
        if let Ok(mut s) = self.api.snap.lock() {
            s.vip_bound = bound;
        }
    }

    /// Registers the Consul service entry with role tag `role`, as decide() asks when the role
    /// changes; a failure comes back, and decide() asks again.
    async fn register_service(&mut self, cx: &mut Cycle, role: DbRole) {
        let retry = self.retry();
        let tag = match role {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
        };
        let result = match &self.registrar {
            Some(r) => r.register(tag, retry).await.map_err(|e| e.to_string()),
            None => Err("no service registration is configured".to_owned()),
        };
        if let Err(reason) = result {
            tracing::warn!(error = %reason, "consul: service registration failed");
            cx.outcomes.push(Outcome::ServiceRegistrationFailed { role, reason });
        }
    }
}
