//! The daemon's loop: observe → decide → act → sleep, and nothing else. What each step does
//! lives beside it: [`super::observe`] (reading the DCS, the database and finished tasks into an
//! `Observation`), [`super::act`] (the only `match action`), [`super::tasks`] (long database tasks
//! in the background, so lease renewal never queues behind a pg_basebackup), [`super::publish`]
//! (the REST snapshot, systemd, the journal), [`super::fence`] (the deadline's enforcers).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shield_core::action::DbTask;
use shield_core::cluster::ClusterView;
use shield_core::observation::{DbStatus, DcsView, Observation, Outcome};
use shield_core::ports::{Dcs, PortError};
use shield_core::{decide, Decision, MonoMillis, NodeState};
use shield_db_postgres::Postgres;
use tokio::sync::{mpsc, watch, Notify};

use super::fence::Fence;
use super::journal::Journal;
use super::tasks::Running;
use crate::backend::callbacks::Callbacks;
use crate::backend::service::Registrar;
use crate::rest::state::{ApiState, Reply};

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

/// What the loop carries from one cycle to the next.
pub(crate) struct Cycle {
    /// The loop's time zero: shield-core's `MonoMillis` count from here.
    pub start: Instant,
    /// Cycles run, this one included.
    pub count: u64,
    /// The database task running in the background, if any.
    pub running: Option<Running>,
    /// Finished tasks report here; `task_done` wakes the loop.
    pub done_tx: mpsc::UnboundedSender<(DbTask, Result<(), PortError>)>,
    pub done_rx: mpsc::UnboundedReceiver<(DbTask, Result<(), PortError>)>,
    pub task_done: Arc<Notify>,
    /// What the last actions returned, for the next observation.
    pub outcomes: Vec<Outcome>,
    /// Since when the DCS has not answered.
    pub unreachable_since: Option<MonoMillis>,
    /// The last reason logged (a reason is logged when it changes).
    pub last_reason: String,
    /// Who waits for the running restart (`POST /restart`) to finish.
    pub restart_waiters: Vec<Reply>,
    /// The status query failed last cycle (logged once per spell).
    pub status_failing: bool,
    /// The last status that answered, for a cycle whose status query does not.
    pub last_status: Option<DbStatus>,
    /// The deadline's enforcers.
    pub fence: Fence,
    /// Since when the logged reason has not changed, and whether the code start-up and the last
    /// change ran was unmapped since ([`crate::backend::footprint`]).
    pub steady_since: Instant,
    pub released: bool,
}

/// How long the reason stays the same before the loop unmaps the code it no longer runs.
const STEADY_BEFORE_RELEASE: Duration = Duration::from_secs(10);

/// The monotonic clock, as shield-core's time.
pub(crate) fn mono(start: Instant) -> MonoMillis {
    MonoMillis(start.elapsed().as_millis() as u64)
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Cycle {
    /// shield-core's instant `m` on the monotonic clock.
    pub fn instant(&self, m: MonoMillis) -> Instant {
        self.start + Duration::from_millis(m.0)
    }
}

impl Driver {
    /// Runs until the decision says Exit.
    pub async fn run(mut self) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let mut cx = Cycle {
            start: Instant::now(),
            count: 0,
            running: None,
            done_tx,
            done_rx,
            task_done: Arc::new(Notify::new()),
            outcomes: Vec::new(),
            unreachable_since: None,
            last_reason: String::new(),
            restart_waiters: Vec::new(),
            status_failing: false,
            last_status: None,
            fence: Fence::start(&self.data_dir, self.config.vip.as_ref()),
            steady_since: Instant::now(),
            released: false,
        };
        loop {
            cx.count += 1;
            let (obs, pending) = self.observe(&mut cx).await;
            let d = decide(&self.state, &obs);
            self.record(&mut cx, &obs, &d, pending);
            if self.act(&mut cx, &obs, &d).await {
                cx.fence.finish();
                tracing::info!("shutdown complete");
                return;
            }
            let seen = match &obs.dcs {
                DcsView::Reachable(v) => Some((v.revision, super::wake::Watched::of(v))),
                DcsView::Unreachable { .. } => None,
            };
            self.sleep(cx.instant(d.wake_at), seen, &cx.task_done).await;
        }
    }

    /// After decide(): the log line, the journal, the next state, the answers to requests, the
    /// fencing deadline and what the REST API and systemd show.
    fn record(&mut self, cx: &mut Cycle, obs: &Observation, d: &Decision, pending: Vec<crate::rest::state::Pending>) {
        let reason = d.reason.to_string();
        if reason != cx.last_reason {
            tracing::info!("{reason}");
            cx.last_reason = reason.clone();
            (cx.steady_since, cx.released) = (Instant::now(), false);
        } else if !cx.released && cx.steady_since.elapsed() >= STEADY_BEFORE_RELEASE {
            cx.released = true;
            let n = crate::backend::footprint::release_unused_code();
            tracing::debug!("steady for {STEADY_BEFORE_RELEASE:?}: unmapped the code not run since ({n} mappings)");
        }
        if let Some(j) = self.journal.as_mut() {
            j.append(&self.state, obs, d);
        }
        self.state = d.next.clone();
        for (p, answer) in pending.into_iter().zip(d.answers.iter().cloned()) {
            let Some(reply) = p.reply else { continue };
            match answer {
                Ok(()) if p.request == shield_core::Request::Restart => cx.restart_waiters.push(reply),
                answer => {
                    let _ = reply.send(answer);
                }
            }
        }
        // In pause Patroni's rules keep a primary running without the lock: no guard then.
        let guard = if d.next.config.pause { None } else { d.fence_at.map(|f| cx.instant(f)) };
        cx.fence.set(guard);
        self.publish(obs, d, &reason);
        self.notify_systemd(obs, d, &reason);
    }
}
