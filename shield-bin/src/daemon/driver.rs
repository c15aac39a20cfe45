//! The daemon's loop: observe → decide → act. The only `match action` in the binary.
//!
//! Long database tasks run in the background and report back through a channel, so lease renewal
//! never queues behind a pg_basebackup. A fence guard task stops a writable database at the
//! decision's `fence_at` even while the loop is blocked in a slow call.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shield_core::action::{Action, CallbackEvent, DbRole, DbTask, StopMode, WatchdogFeed};
use shield_core::cluster::{ClusterView, MemberData};
use shield_core::observation::{DbStatus, DcsView, Observation, Outcome, PeerReport};
use shield_core::ports::{Database, Dcs, DcsKey, ErrorKind, PortError};
use shield_core::{decide, Lsn, MemberName, MonoMillis, NodeState, Timeline};
use tokio::sync::{mpsc, watch, Notify};

use crate::backend::callbacks::Callbacks;
use crate::daemon::journal::Journal;
use crate::rest::state::ApiState;
use shield_db_postgres::Postgres;

/// Everything the loop drives.
#[allow(missing_debug_implementations)] // holds trait objects and channels; nothing to show
pub struct Driver {
    pub dcs: Arc<dyn Dcs>,
    pub db: Arc<Postgres>,
    pub data_dir: PathBuf,
    pub cluster: Arc<Mutex<ClusterView>>,
    pub dcs_parameters: Arc<Mutex<BTreeMap<String, String>>>,
    pub api: Arc<ApiState>,
    pub journal: Option<Journal>,
    pub state: NodeState,
    pub shutdown: watch::Receiver<bool>,
    /// The node config as last loaded (a reload re-reads its file).
    pub config: crate::config::NodeConfig,
    /// The watchdog, when one is configured and usable.
    pub watchdog: Option<Arc<dyn shield_core::ports::Watchdog>>,
    /// User scripts on database events.
    pub callbacks: Arc<Callbacks>,
    /// Messages to systemd.
    pub notify: crate::backend::sdnotify::Notifier,
    /// The cluster VIP, when configured.
    pub vip: Option<Arc<dyn shield_core::ports::Vip>>,
    /// Consul service registration, when `register_service` is on.
    pub registrar: Option<Registrar>,
}

/// Consul's `register_service`: the node's entry in the `<scope>` service, tagged with its role.
#[derive(Debug)]
pub struct Registrar {
    /// A Consul client of its own (registration needs no session).
    pub consul: Arc<shield_dcs_consul::ConsulDcs>,
    /// The database's host and port, as clients connect.
    pub host: String,
    /// See `host`.
    pub port: u16,
    /// The REST API base URL, for the health check on the role path.
    pub api_base: String,
    /// `service_tags`.
    pub tags: Vec<String>,
    /// `service_check_interval`, s.
    pub check_interval_s: u64,
}

struct Running {
    task: DbTask,
    handle: tokio::task::JoinHandle<()>,
}

/// The monotonic clock, as shield-core's time.
fn mono(start: Instant) -> MonoMillis {
    MonoMillis(start.elapsed().as_millis() as u64)
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Driver {
    /// Registers the Consul service entry with its role tag (`primary` or `replica`), as
    /// decide() asks when the role changes.
    async fn register_service(&self, role: DbRole, retry: Duration) -> Result<(), String> {
        let Some(r) = &self.registrar else { return Err("no service registration is configured".to_owned()) };
        let role = match role {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
        };
        let reg = shield_dcs_consul::ServiceRegistration {
            role: role.to_owned(),
            host: r.host.clone(),
            port: r.port,
            api_base: r.api_base.clone(),
            check_interval_s: r.check_interval_s,
            extra_tags: r.tags.clone(),
        };
        match tokio::time::timeout(retry, r.consul.register_service(&reg)).await {
            Ok(Ok(())) => {
                tracing::info!(role, "consul: service registered");
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }

    fn callback(&self, event: CallbackEvent, role: DbRole) {
        let role = match role {
            DbRole::Primary => self.config.callback_primary_role.as_str(),
            DbRole::Replica => "replica",
        };
        self.callbacks.fire(event, role);
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

    /// Runs until the decision says Exit.
    pub async fn run(mut self) {
        let start = Instant::now();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(DbTask, Result<(), PortError>)>();
        let task_done = Arc::new(Notify::new());
        let (guard_tx, guard_rx) = watch::channel::<Option<Instant>>(None);
        tokio::spawn(fence_guard(guard_rx, self.data_dir.clone()));
        let mut keeper = crate::daemon::keeper::Keeper::start(&self.data_dir, self.config.vip.as_ref());
        let mut running: Option<Running> = None;
        let mut outcomes: Vec<Outcome> = Vec::new();
        let mut unreachable_since: Option<MonoMillis> = None;
        let mut last_reason = String::new();
        // Who waits for the running restart (`POST /restart`) to finish.
        let mut restart_waiters: Vec<crate::rest::state::Reply> = Vec::new();
        let mut status_failing = false;
        // The last status that answered, for a cycle whose status query does not.
        let mut last_status: Option<DbStatus> = None;
        loop {
            // ---- observe -------------------------------------------------------------------
            while let Ok((task, result)) = done_rx.try_recv() {
                if running.as_ref().is_some_and(|r| r.task == task) {
                    running = None;
                }
                if let Err(e) = &result {
                    tracing::warn!(task = ?task, error = %e, "database task failed");
                }
                // The task changed the database: what was last read of it no longer holds.
                last_status = None;
                if task == DbTask::Restart {
                    for w in restart_waiters.drain(..) {
                        let _ = w.send(result.clone().map_err(|e| e.to_string()));
                    }
                }
                outcomes.push(Outcome::DbTaskDone { task, result });
            }
            if self.api.reload_requested.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.reload_config();
            }
            self.api.fire_due_restart(wall_ms());
            let sent = mono(start);
            let retry = Duration::from_millis(self.state.config.timing.retry_timeout_ms);
            // The status is asked alongside the DCS read, within the same bound: a status query
            // that does not answer holds the next renewal up no longer than a slow read may, and
            // is asked again next cycle on a new connection.
            let status_wait = Duration::from_millis(self.state.config.timing.status_timeout_ms());
            let (read, status) = tokio::join!(
                tokio::time::timeout(retry, self.dcs.read()),
                tokio::time::timeout(status_wait, self.db.status())
            );
            let dcs_view = match read {
                Ok(Ok(view)) => {
                    unreachable_since = None;
                    if let Ok(mut c) = self.cluster.lock() {
                        *c = view.clone();
                    }
                    if let Some((cfg, _)) = &view.config {
                        let new: BTreeMap<String, String> =
                            cfg.postgresql.parameters.iter().map(|(k, v)| (k.clone(), json_scalar(v))).collect();
                        // What the next start or reload writes; decide() asks for the reload when
                        // they change (what needs a restart shows as pending_restart).
                        if let Ok(mut p) = self.dcs_parameters.lock() {
                            *p = new;
                        }
                    }
                    DcsView::Reachable(view)
                }
                Ok(Err(_)) | Err(_) => DcsView::Unreachable { since: *unreachable_since.get_or_insert(sent) },
            };
            let mut db = match status {
                Ok(Ok(s)) => {
                    status_failing = false;
                    last_status = Some(s.clone());
                    s
                }
                failed => {
                    // Once per spell of failures: the database then shows as "unknown". Never an
                    // invalid data directory: a slow status is no reason to fence (decide() keeps
                    // the lock for primary_start_timeout).
                    if !std::mem::replace(&mut status_failing, true) {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => format!("no answer within {status_wait:?}"),
                        };
                        tracing::warn!(error = %why, "database status unavailable; will ask again next cycle");
                    }
                    // A dead postmaster is still seen as one (a crash, not an unknown).
                    DbStatus::unanswered(last_status.as_ref(), self.db.postmaster_alive())
                }
            };
            db.busy = running.as_ref().map(|r| r.task.clone());
            let shutdown_requested = *self.shutdown.borrow();
            let pending = self.api.requests.lock().map(|mut q| std::mem::take(&mut *q)).unwrap_or_default();
            let requests = pending.iter().map(|p| p.request).collect();
            let obs = Observation {
                now: mono(start),
                wall_ms: wall_ms(),
                dcs: dcs_view,
                db,
                outcomes: std::mem::take(&mut outcomes),
                shutdown_requested,
                requests,
            };
            // ---- decide --------------------------------------------------------------------
            let d = decide(&self.state, &obs);
            let reason = d.reason.to_string();
            if reason != last_reason {
                tracing::info!("{reason}");
                last_reason = reason.clone();
            }
            if let Some(j) = self.journal.as_mut() {
                j.append(&self.state, &obs, &d);
            }
            self.state = d.next.clone();
            for (p, answer) in pending.into_iter().zip(d.answers.iter().cloned()) {
                let Some(reply) = p.reply else { continue };
                match answer {
                    Ok(()) if p.request == shield_core::Request::Restart => restart_waiters.push(reply),
                    answer => {
                        let _ = reply.send(answer);
                    }
                }
            }
            let to_instant = |m: MonoMillis| start + Duration::from_millis(m.0);
            // In pause Patroni's rules keep a primary running without the lock: no guard then.
            let guard = if d.next.config.pause { None } else { d.fence_at.map(to_instant) };
            let _ = guard_tx.send(guard);
            keeper.set(guard);
            self.publish(&obs, &d, &reason);
            if shutdown_requested {
                self.notify.stopping();
            }
            let role = match (d.next.lease.is_some(), d.next.db_role) {
                (true, _) => "leader",
                (false, Some(DbRole::Primary)) => "primary",
                (false, Some(DbRole::Replica)) => "replica",
                (false, None) => "database not running",
            };
            self.notify.cycle(&format!("{role}: {reason}"));
            // ---- act -----------------------------------------------------------------------
            let mut exit = false;
            // Set when a lease action of this decision failed: what needs the lease is skipped.
            let mut lease_gate_failed = false;
            for action in d.actions.clone() {
                let fenced = d.fence_at.is_none_or(|f| mono(start) >= f);
                if lease_gate_failed {
                    if let Some(skipped) = Outcome::lease_skipped(&action) {
                        tracing::warn!(action = ?action, "not run: a lease action before it failed");
                        outcomes.push(skipped);
                        continue;
                    }
                }
                match action {
                    Action::Exit => exit = true,
                    Action::StopDb { mode: StopMode::Immediate } => {
                        if let Some(r) = running.take() {
                            r.handle.abort();
                            if r.task == DbTask::Restart {
                                for w in restart_waiters.drain(..) {
                                    let _ = w.send(Err(format!("interrupted: {reason}")));
                                }
                            }
                        }
                        let result = self.db.stop(StopMode::Immediate).await.map_err(|e| e.to_string());
                        outcomes.push(Outcome::Stopped { mode: StopMode::Immediate, result });
                    }
                    Action::StopDb { mode: StopMode::Fast } => {
                        running = Some(self.spawn_task(DbTask::Stop(StopMode::Fast), &done_tx, &task_done));
                    }
                    Action::RunDbTask { task } => {
                        if task.makes_primary() && fenced && !self.state.config.pause {
                            let e = PortError::new(ErrorKind::LeaseLost, "the fencing deadline passed first");
                            outcomes.push(Outcome::DbTaskDone { task, result: Err(e) });
                        } else {
                            running = Some(self.spawn_task(task, &done_tx, &task_done));
                        }
                    }
                    Action::RenewLeader { ttl_ms, fence_after_ms, feed_watchdog } => {
                        let sent_at = mono(start);
                        let result = bounded(retry, self.dcs.renew_leader(ttl_ms)).await.map_err(|e| e.kind);
                        lease_gate_failed |= result.is_err();
                        if result.is_ok() {
                            self.feed_watchdog(mono(start).since(sent_at), feed_watchdog, &mut outcomes).await;
                            if let Ok(mut s) = self.api.snap.lock() {
                                s.renew_latency_ms = mono(start).since(sent_at) as i64;
                            }
                            let to = to_instant(sent_at.plus(fence_after_ms));
                            let moved = guard_tx.send_if_modified(|g| match g {
                                Some(old) if *old < to => {
                                    *g = Some(to);
                                    true
                                }
                                _ => false,
                            });
                            if moved {
                                keeper.set(Some(to));
                            }
                        }
                        outcomes.push(Outcome::LeaderRenew { sent_at, fence_after_ms, result });
                    }
                    Action::AcquireLeader { ttl_ms, fence_after_ms, replacing } => {
                        let sent_at = mono(start);
                        let result = match replacing {
                            None => bounded(retry, self.dcs.acquire_leader(ttl_ms)).await,
                            Some(rev) => bounded(retry, self.dcs.take_leader(ttl_ms, rev)).await,
                        }
                        .map_err(|e| e.kind);
                        lease_gate_failed |= result != Ok(true);
                        outcomes.push(Outcome::LeaderAcquire { sent_at, fence_after_ms, result });
                    }
                    Action::ReleaseLeader => {
                        let result = bounded(retry, self.dcs.release_leader()).await.map_err(|e| e.kind);
                        outcomes.push(Outcome::LeaderRelease { result });
                    }
                    // A new cluster (no data to adopt) with a custom `bootstrap.method`: Shield
                    // cannot run the method and initdb would make an empty cluster in its place,
                    // so this node does not enter the race (nothing is written to the DCS).
                    Action::RaceInitialize { system_id: None } if self.config.custom_bootstrap.is_some() => {
                        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                        if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::error!(
                                method = self.config.custom_bootstrap.as_deref().unwrap_or_default(),
                                "not bootstrapping a new cluster: `bootstrap.method` names a method Shield cannot \
                                 run; restore the data directory with it (Shield then adopts it) or remove the key \
                                 to bootstrap with initdb"
                            );
                        }
                        // decide() asks to run again at once after a race; a regular cycle's
                        // pause keeps this refusal from spinning.
                        tokio::time::sleep(Duration::from_millis(self.state.config.timing.loop_wait_ms)).await;
                        outcomes.push(Outcome::InitializeRace { result: Err(ErrorKind::Rejected) });
                    }
                    Action::RaceInitialize { system_id } => {
                        let result = bounded(retry, self.dcs.create_initialize(system_id)).await.map_err(|e| e.kind);
                        outcomes.push(Outcome::InitializeRace { result });
                    }
                    Action::WriteInitialize { system_id } => {
                        let r = bounded(retry, self.dcs.write_initialize(system_id)).await;
                        note(&mut outcomes, "initialize", r);
                    }
                    Action::WriteConfig { config } => {
                        let r = bounded(retry, self.dcs.write_config(&config, None)).await;
                        note(&mut outcomes, "config", r);
                    }
                    Action::TouchMember { mut data } => {
                        let scheduled = self.api.scheduled_restart();
                        complete_member(&mut data, &obs.db, &self.db.info(), scheduled.as_ref());
                        let r = bounded(retry, self.dcs.touch_member(&data)).await;
                        note(&mut outcomes, "member", r);
                    }
                    Action::WriteStatus { status } => {
                        let r = bounded(retry, self.dcs.write_status(&status)).await;
                        note(&mut outcomes, "status", r);
                    }
                    Action::WriteHistory { lines } => {
                        let r = bounded(retry, self.dcs.write_history(&lines)).await;
                        lease_gate_failed |= r.is_err();
                        note(&mut outcomes, "history", r);
                    }
                    Action::ClearFailover { revision, .. } => {
                        let r = bounded(retry, self.dcs.delete_cas(DcsKey::Failover, revision)).await;
                        note(&mut outcomes, "failover", r);
                    }
                    Action::ProbePeers => {
                        let reports = self.probe_peers(&obs).await;
                        outcomes.push(Outcome::PeersProbed { reports });
                    }
                    Action::ArmWatchdog => {
                        let timeout_ms = self.state.settings.watchdog_timeout_ms(&self.state.config.timing);
                        let armed = match &self.watchdog {
                            Some(w) => w.arm(timeout_ms).await,
                            None => Err(PortError::new(ErrorKind::Io, "no watchdog device is usable")),
                        };
                        match armed {
                            Ok(()) => tracing::info!(timeout_ms, "watchdog armed"),
                            Err(e) => {
                                tracing::warn!(error = %e, "watchdog: cannot arm");
                                outcomes.push(Outcome::WatchdogFailed { reason: e.to_string() });
                            }
                        }
                    }
                    Action::DisarmWatchdog => {
                        if let Some(w) = &self.watchdog {
                            match w.disarm().await {
                                Ok(()) => tracing::info!("watchdog disarmed"),
                                Err(e) => {
                                    tracing::warn!(error = %e, "watchdog: cannot disarm; it may reset the host");
                                    outcomes.push(Outcome::WatchdogDisarmFailed { reason: e.to_string() });
                                }
                            }
                        }
                    }
                    Action::SyncSlots { create, drop, advance } => {
                        if let Err(e) = self.db.sync_slots(&create, &drop, &advance).await {
                            // Retried next cycle: the slots are read again.
                            tracing::warn!(error = %e, "replication slots: sync failed");
                            outcomes.push(Outcome::SlotsSyncFailed { reason: e.to_string() });
                        }
                    }
                    Action::ReloadDb => {
                        let result = self.reload_database();
                        outcomes.push(Outcome::DbReloaded { result });
                    }
                    Action::RunCallback { event, role } => self.callback(event, role),
                    Action::RegisterService { role } => {
                        if let Err(reason) = self.register_service(role, retry).await {
                            tracing::warn!(error = %reason, "consul: service registration failed");
                            outcomes.push(Outcome::ServiceRegistrationFailed { role, reason });
                        }
                    }
                    Action::AddVip | Action::RemoveVip => {
                        let adding = action == Action::AddVip;
                        // Never bind past the fencing deadline: the lease may be someone else's.
                        let result = match &self.vip {
                            Some(_) if adding && fenced => {
                                Err(PortError::new(ErrorKind::LeaseLost, "past the fencing deadline"))
                            }
                            Some(v) if adding => v.add().await,
                            Some(v) => v.remove().await,
                            None => Err(PortError::new(ErrorKind::Io, "no VIP is configured")),
                        };
                        let bound = result.is_ok() == adding;
                        if let Err(e) = result {
                            tracing::error!(error = %e, adding, "vip: failed");
                            outcomes.push(Outcome::VipFailed { adding, reason: e.to_string() });
                        }
                        if let Ok(mut s) = self.api.snap.lock() {
                            s.vip_bound = bound;
                        }
                    }
                }
            }
            if exit {
                keeper.finish();
                tracing::info!("shutdown complete");
                return;
            }
            // ---- sleep ---------------------------------------------------------------------
            let wake = to_instant(d.wake_at);
            let revision = match &obs.dcs {
                DcsView::Reachable(v) => Some((v.revision, v.leader_name().cloned())),
                DcsView::Unreachable { .. } => None,
            };
            self.sleep(wake, revision, &task_done).await;
        }
    }

    fn spawn_task(
        &self,
        task: DbTask,
        done: &mpsc::UnboundedSender<(DbTask, Result<(), PortError>)>,
        notify: &Arc<Notify>,
    ) -> Running {
        tracing::info!(task = ?task, "starting database task");
        let db = self.db.clone();
        let done = done.clone();
        let notify = notify.clone();
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
        Running { task, handle }
    }

    /// Sleeps until `wake`, a change of the leader key, a finished task, an API request, or
    /// shutdown.
    async fn sleep(
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

    /// `GET /patroni` on every other member, in parallel, 1 s each.
    async fn probe_peers(&self, obs: &Observation) -> BTreeMap<MemberName, PeerReport> {
        let DcsView::Reachable(view) = &obs.dcs else { return BTreeMap::new() };
        let me = self.state.me().clone();
        let mut set = tokio::task::JoinSet::new();
        for m in view.members.values().filter(|m| m.name != me) {
            let Some(url) = m.data.api_url.clone() else { continue };
            let name = m.name.clone();
            let tags = m.data.tags.clone();
            set.spawn(async move {
                let body = match crate::net::http::get_json(&url, Duration::from_secs(1)).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Down members are expected in a race; a TLS or auth mistake shows here.
                        tracing::info!(member = %name, error = %e, "peer probe failed");
                        return None;
                    }
                };
                let role = body.get("role").and_then(Value::as_str).unwrap_or_default();
                let state = body.get("state").and_then(Value::as_str).unwrap_or_default();
                let x = body.get("xlog");
                let pos = |k: &str| x.and_then(|x| x.get(k)).and_then(Value::as_u64);
                let wal = pos("location").or_else(|| pos("received_location").max(pos("replayed_location")));
                // A peer whose database does not answer its status query ("unknown", its position
                // the last one read) cannot take over itself and must not hold the race up: it
                // counts as not answering, as a Patroni node whose API hangs on its database
                // would. In pause, though, where nothing fences a primary that lost the lock, it
                // may be one, and counts as one.
                let paused = body.get("pause").and_then(Value::as_bool).unwrap_or(false);
                if state == "unknown" && !paused {
                    tracing::info!(member = %name, "peer probe: its database status is unknown; not counted");
                    return None;
                }
                let running_primary = state == "running" && (role == "primary" || role == "master");
                Some((
                    name,
                    PeerReport {
                        is_primary: running_primary || (state == "unknown" && paused),
                        wal_position: wal.map(Lsn),
                        timeline: body
                            .get("timeline")
                            .and_then(Value::as_u64)
                            .and_then(|t| u32::try_from(t).ok())
                            .map(Timeline),
                        can_promote: tags.can_promote(),
                        priority: tags.priority(),
                    },
                ))
            });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some((n, rep))) = r {
                out.insert(n, rep);
            }
        }
        out
    }

    /// Re-reads the config file and applies what can change at run time: tags, the REST API's
    /// credentials and the local PostgreSQL parameters. A bad file keeps the running config.
    fn reload_config(&mut self) {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let new = match crate::config::NodeConfig::load(&self.config.file, &env) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload: the config file has an error; keeping the running configuration");
                return;
            }
        };
        let old = &self.config;
        let fixed = [
            ("scope", old.scope != new.scope),
            ("name", old.name != new.name),
            ("namespace", old.namespace != new.namespace),
            ("the DCS section", old.dcs != new.dcs),
            ("restapi.listen", old.api_listen != new.api_listen),
            ("postgresql.data_dir", old.pg.data_dir != new.pg.data_dir),
            ("postgresql.bin_dir", old.pg.bin_dir != new.pg.bin_dir),
            ("postgresql.listen", old.pg.port != new.pg.port || old.pg.listen_host != new.pg.listen_host),
            ("watchdog", old.watchdog != new.watchdog),
            ("restapi TLS", old.api_tls != new.api_tls),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(key, "reload: this setting changes only when shield restarts");
            }
        }
        self.state.settings.tags = new.tags.clone();
        self.state.settings.local_pg = new.pg.local_pg;
        if let Ok(mut a) = self.api.auth.lock() {
            *a = new.api_auth.clone();
        }
        crate::rest::guard::set_access(&self.api, new.api_access.clone());
        if let Ok(mut c) = self.api.command_params.lock() {
            *c = new.command_params.clone();
        }
        self.db.set_local_parameters(new.pg.parameters.clone());
        // A change asks decide() for a reload.
        self.state.settings.local_parameters = new.pg.parameters.clone();
        if old.scripts != new.scripts {
            // Scripts already running finish (or time out) on their own.
            self.callbacks = Arc::new(Callbacks::new(new.scripts.clone(), &new.scope));
        }
        self.config = new;
        tracing::info!("reload: configuration re-read");
    }

    /// Rewrites the configuration and signals the server: Ok(true) when one was signalled.
    fn reload_database(&self) -> Result<bool, String> {
        let r = self.db.reload().map_err(|e| e.to_string());
        match &r {
            Ok(true) => tracing::info!("parameters changed: PostgreSQL configuration reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "PostgreSQL configuration reload failed"),
        }
        r
    }

    fn publish(&self, obs: &Observation, d: &shield_core::Decision, reason: &str) {
        let Ok(mut s) = self.api.snap.lock() else { return };
        if let DcsView::Reachable(v) = &obs.dcs {
            s.cluster = v.clone();
        }
        s.db = Some(obs.db.clone());
        s.server = self.db.info();
        s.holds_lock = d.next.lease.is_some();
        s.paused = d.next.config.pause;
        s.reason = reason.to_owned();
        s.last_cycle = Some(Instant::now());
        s.ttl = Duration::from_millis(d.next.config.timing.ttl_ms);
        s.tags = d.next.settings.tags.to_json();
        if matches!(obs.dcs, DcsView::Reachable(_)) {
            s.dcs_last_seen_unix = wall_ms() / 1000;
            s.dcs_seen = Some(Instant::now());
        }
        s.fence_margin_ms = d.fence_at.map_or(0, |f| f.0.saturating_sub(obs.now.0) as i64);
        let kind = serde_json::to_value(&d.reason)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        *s.decisions.entry(kind).or_insert(0) += 1;
    }
}

/// Fills in what the member key carries beyond decide()'s [`MemberData`], as Patroni 4.1's
/// `touch_member` writes it: on a running replica `receive_lsn` (the larger of the received and
/// the walreceiver's written position) and `replay_lsn`, each only when known (never `null`), and
/// `replication_state` only when streaming or, with a `restore_command`, in archive recovery;
/// `pending_restart` and the scheduled restart.
pub(crate) fn complete_member(
    data: &mut MemberData,
    db: &DbStatus,
    info: &shield_db_postgres::ServerInfo,
    scheduled: Option<&crate::rest::state::ScheduledRestart>,
) {
    data.pending_restart = !info.pending_restart.is_empty();
    if let Some(r) = scheduled {
        data.other.insert("scheduled_restart".into(), r.to_json());
    }
    if db.is_running_replica() {
        data.receive_lsn = db.received_lsn.max(info.written_lsn).filter(|l| l.0 > 0);
        data.replay_lsn = db.replayed_lsn.filter(|l| l.0 > 0);
        data.replication_state = if db.streaming {
            Some("streaming".to_owned())
        } else if info.restore_command {
            Some("in archive recovery".to_owned())
        } else {
            None
        };
    } else {
        data.receive_lsn = None;
        data.replay_lsn = None;
    }
}

fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "on".into()
            } else {
                "off".into()
            }
        }
        other => other.to_string(),
    }
}

async fn bounded<T>(t: Duration, f: impl std::future::Future<Output = Result<T, PortError>>) -> Result<T, PortError> {
    tokio::time::timeout(t, f)
        .await
        .unwrap_or_else(|_| Err(PortError::new(ErrorKind::Unreachable, "DCS call exceeded retry_timeout")))
}

fn note<T>(outcomes: &mut Vec<Outcome>, what: &str, r: Result<T, PortError>) {
    if let Err(e) = r {
        tracing::warn!(what, error = %e, "DCS write failed");
        outcomes.push(Outcome::DcsWriteFailed { what: what.to_owned(), kind: e.kind });
    }
}

/// Stops the database at the deadline unless a newer deadline replaced it.
async fn fence_guard(mut rx: watch::Receiver<Option<Instant>>, data_dir: PathBuf) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {
                        if *rx.borrow() == Some(at) {
                            tracing::error!("fence guard: the lease deadline passed without a renewal; stopping PostgreSQL immediately");
                            Postgres::kill_now(&data_dir);
                            let _ = rx.changed().await;
                        }
                    }
                    r = rx.changed() => if r.is_err() { return },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shield_core::cluster::MemberRole;
    use shield_core::observation::DbProcess;

    fn replica_db(received: Option<u64>, replayed: Option<u64>, streaming: bool) -> DbStatus {
        let mut db = DbStatus::empty();
        db.process = DbProcess::Running { in_recovery: true };
        db.received_lsn = received.map(Lsn);
        db.replayed_lsn = replayed.map(Lsn);
        db.streaming = streaming;
        db
    }

    #[test]
    fn the_member_key_carries_patroni_41s_lsn_fields_and_never_null() {
        let info = shield_db_postgres::ServerInfo { written_lsn: Some(Lsn(350)), ..Default::default() };
        let mut m = MemberData::new(MemberRole::Replica, "running");
        m.replication_state = Some("streaming".into());
        complete_member(&mut m, &replica_db(Some(300), Some(200), true), &info, None);
        let j = m.to_json();
        assert_eq!((&j["receive_lsn"], &j["replay_lsn"]), (&json!(350), &json!(200)), "{j}");
        assert_eq!(j["replication_state"], json!("streaming"));
        // Unknown positions are left out; a replica that does not stream and has no
        // restore_command has no replication_state, as in Patroni.
        let mut m = MemberData::new(MemberRole::Replica, "running");
        m.replication_state = Some("in archive recovery".into());
        complete_member(&mut m, &replica_db(None, None, false), &Default::default(), None);
        let j = m.to_json();
        for k in ["receive_lsn", "replay_lsn", "replication_state"] {
            assert!(j.get(k).is_none(), "{k} in {j}");
        }
        assert!(!j.to_string().contains("null"), "{j}");
        let archive = shield_db_postgres::ServerInfo { restore_command: true, ..Default::default() };
        complete_member(&mut m, &replica_db(None, Some(10), false), &archive, None);
        assert_eq!(m.to_json()["replication_state"], json!("in archive recovery"));
        // A primary publishes neither.
        let mut p = MemberData::new(MemberRole::Primary, "running");
        let mut db = DbStatus::empty();
        db.process = DbProcess::Running { in_recovery: false };
        db.received_lsn = Some(Lsn(5));
        complete_member(&mut p, &db, &info, None);
        assert!(p.to_json().get("receive_lsn").is_none());
    }
}
