//! [`Observation`]: everything one node knows at the start of one cycle.
//!
//! The driver (the daemon, or the simulator) gathers it from the ports, each read bounded by a
//! timeout, and hands it to [`crate::decide`]. Failures are data here, not errors: an unreachable
//! DCS is [`DcsView::Unreachable`], a database that does not answer is [`DbProcess::Unknown`]
//! (see [`DbStatus::unanswered`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::action::{DbTask, StopMode};
use crate::cluster::ClusterView;
use crate::ports::{ErrorKind, PortError};
use crate::types::{Lsn, MemberName, MonoMillis, SystemId, Timeline};

/// One cycle's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The local monotonic clock.
    pub now: MonoMillis,
    /// Wall-clock time, milliseconds since the Unix epoch. Used only for scheduled requests and
    /// history timestamps, never for lease arithmetic.
    pub wall_ms: i64,
    /// The cluster as read from the DCS this cycle.
    pub dcs: DcsView,
    /// The local database.
    pub db: DbStatus,
    /// Outcomes of the previous decision's actions, in the order they ran.
    pub outcomes: Vec<Outcome>,
    /// The operator asked the node to stop (SIGTERM).
    pub shutdown_requested: bool,
    /// Operator requests for this node that arrived since the last cycle (REST).
    #[serde(default)]
    pub requests: Vec<Request>,
    /// The last leader this node accepted over `POST /failsafe` (see [`crate::failsafe_answer`]),
    /// when, on the local clock, and the ttl that leader said it counts its deadline with (0
    /// when it did not say: a Patroni leader). The node stays out of the race for the longer of
    /// that ttl and its own.
    #[serde(default)]
    pub failsafe_vouched: Option<(MemberName, MonoMillis, u64)>,
}

/// An operator's request for this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Restart PostgreSQL in place, keeping the role (`POST /restart`).
    Restart,
    /// Throw the data directory away and clone it again from the leader (`POST /reinitialize`).
    Reinitialize,
}

/// The DCS as seen this cycle. Exactly these two cases, by design.
// One observation is built per cycle; boxing the snapshot would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DcsView {
    /// A snapshot read this cycle.
    Reachable(ClusterView),
    /// No successful read since `since` (the send time of the first call that failed).
    Unreachable {
        /// When the DCS was last known to answer, as the send time of the first failed call.
        since: MonoMillis,
    },
}

/// State of the data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DataDir {
    /// Does not exist.
    Missing,
    /// Exists and is empty.
    Empty,
    /// Holds a cluster with this system id.
    Valid {
        /// From `pg_control`.
        system_id: SystemId,
        /// `pg_control` says this data directory was last a primary (`in production`, or shut
        /// down without a standby.signal), not a standby.
        was_primary: bool,
    },
    /// Exists but is not usable; the text says why.
    Invalid(String),
    /// Not known: the status read did not finish (or could not run) and no earlier read is known.
    /// It says nothing about the data; decide() treats the whole status as
    /// [`DbProcess::Unknown`].
    Unknown,
}

/// What the postmaster is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum DbProcess {
    /// Not running; it was shut down cleanly (or never started).
    Stopped,
    /// Not running, and it did not stop cleanly (or was stopped by someone else).
    Crashed,
    /// Started and not yet accepting connections.
    Starting,
    /// Running and answering queries.
    Running {
        /// `pg_is_in_recovery()`.
        in_recovery: bool,
    },
    /// Not known: the postmaster runs (or its liveness cannot be checked) but the status query
    /// did not answer in time, or failed (a busy host, no connection slot or file descriptor
    /// left, a hung server). A slow or failed status query is this, never a crash and never an
    /// invalid data directory.
    Unknown,
}

/// The local database's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbStatus {
    /// The data directory.
    pub data_dir: DataDir,
    /// The postmaster.
    pub process: DbProcess,
    /// The current timeline (from the server, or `pg_control` when stopped).
    pub timeline: Option<Timeline>,
    /// Write LSN on a primary; the end of WAL from `pg_control` when stopped.
    pub write_lsn: Option<Lsn>,
    /// Received LSN on a replica.
    pub received_lsn: Option<Lsn>,
    /// Replayed LSN on a replica.
    pub replayed_lsn: Option<Lsn>,
    /// The member a replica is configured to stream from.
    pub upstream: Option<MemberName>,
    /// A replica's walreceiver is streaming.
    pub streaming: bool,
    /// A long database task the driver is running in the background.
    pub busy: Option<DbTask>,
    /// On a primary past timeline 1: the parent timeline and the exact switch point, from the
    /// current timeline's history file (what the history key records).
    #[serde(default)]
    pub branched_from: Option<(Timeline, Lsn)>,
    /// The physical replication slots on the running server, as `(name, active)`; `None` when
    /// not known (not running, or not read).
    #[serde(default)]
    pub slots: Option<Vec<(String, bool)>>,
    /// Each physical slot's `restart_lsn`, where it has one (what the leader publishes in
    /// `status`, and what a replica compares before advancing its copy).
    #[serde(default)]
    pub slot_positions: std::collections::BTreeMap<String, Lsn>,
    /// The timeline of the latest checkpoint in `pg_control`. On a primary just promoted it
    /// is the old timeline until the first checkpoint on the new one ends, and pg_rewind
    /// against that primary refuses until then ("same timeline").
    #[serde(default)]
    pub checkpoint_timeline: Option<Timeline>,
}

impl DbStatus {
    /// A node with no data directory and nothing running.
    pub fn empty() -> DbStatus {
        DbStatus {
            data_dir: DataDir::Empty,
            process: DbProcess::Stopped,
            timeline: None,
            write_lsn: None,
            received_lsn: None,
            replayed_lsn: None,
            upstream: None,
            streaming: false,
            busy: None,
            branched_from: None,
            slots: None,
            slot_positions: Default::default(),
            checkpoint_timeline: None,
        }
    }

    /// Running and not in recovery: this database accepts writes.
    pub fn is_running_primary(&self) -> bool {
        self.process == DbProcess::Running { in_recovery: false }
    }

    /// Running in recovery.
    pub fn is_running_replica(&self) -> bool {
        self.process == DbProcess::Running { in_recovery: true }
    }

    /// The position Patroni compares in the leader race: write LSN on a primary, otherwise
    /// max(received, replayed, write).
    pub fn wal_position(&self) -> Option<Lsn> {
        [self.write_lsn, self.received_lsn, self.replayed_lsn].into_iter().flatten().max()
    }

    /// The status is not known this cycle (see [`DbStatus::unanswered`]).
    pub fn is_unknown(&self) -> bool {
        self.process == DbProcess::Unknown || self.data_dir == DataDir::Unknown
    }

    /// What a driver reports when the status read did not answer in time or failed: what is
    /// cheap to know without a query, and nothing more. `last` is the last status that did
    /// answer; `postmaster_alive` says whether the postmaster's process exists (from
    /// `postmaster.pid` and a null signal; `None` when that could not be checked either).
    ///
    /// A live (or unchecked) postmaster is [`DbProcess::Unknown`]; a dead one is
    /// [`DbProcess::Crashed`] (or still [`DbProcess::Stopped`] when it was stopped before), so a
    /// crash is still seen as one. The data directory, timeline, positions and upstream are the
    /// last ones read ([`DataDir::Unknown`], and the process unknown, when nothing was ever read);
    /// slots and streaming are not known. The caller sets `busy`.
    pub fn unanswered(last: Option<&DbStatus>, postmaster_alive: Option<bool>) -> DbStatus {
        let Some(last) = last else {
            return DbStatus { data_dir: DataDir::Unknown, process: DbProcess::Unknown, ..DbStatus::empty() };
        };
        let process = match postmaster_alive {
            Some(false) if last.process == DbProcess::Stopped => DbProcess::Stopped,
            Some(false) => DbProcess::Crashed,
            Some(true) | None => DbProcess::Unknown,
        };
        DbStatus {
            data_dir: last.data_dir.clone(),
            process,
            timeline: last.timeline,
            write_lsn: last.write_lsn,
            received_lsn: last.received_lsn,
            replayed_lsn: last.replayed_lsn,
            upstream: last.upstream.clone(),
            streaming: false,
            busy: None,
            branched_from: last.branched_from,
            slots: None,
            slot_positions: Default::default(),
            checkpoint_timeline: last.checkpoint_timeline,
        }
    }

    /// The data directory's system id, if valid.
    pub fn system_id(&self) -> Option<SystemId> {
        match self.data_dir {
            DataDir::Valid { system_id, .. } => Some(system_id),
            _ => None,
        }
    }
}

/// What a peer answered to a status probe (`GET /patroni` in the daemon).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    /// The peer's database is running as a primary.
    pub is_primary: bool,
    /// Its WAL position.
    pub wal_position: Option<Lsn>,
    /// Its timeline.
    pub timeline: Option<Timeline>,
    /// It may be promoted (tags).
    pub can_promote: bool,
    /// Its failover priority.
    pub priority: i64,
}

/// The result of one action of the previous decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// `AcquireLeader` ran. `sent_at` is when the request was sent.
    LeaderAcquire {
        /// Send time of the request.
        sent_at: MonoMillis,
        /// The action's `fence_after_ms`: the deadline a success gives, counted from `sent_at`.
        #[serde(default)]
        fence_after_ms: u64,
        /// Ok(true): we now hold the lock; Ok(false): someone else does.
        result: Result<bool, ErrorKind>,
    },
    /// `RenewLeader` ran.
    LeaderRenew {
        /// Send time of the request; the fencing deadline is counted from here.
        sent_at: MonoMillis,
        /// The action's `fence_after_ms`: the deadline a success gives, counted from `sent_at`
        /// (from the ttl the lease was renewed with, not from a config read later).
        #[serde(default)]
        fence_after_ms: u64,
        /// Ok(()) on success; [`ErrorKind::LeaseLost`] when the key is no longer ours.
        result: Result<(), ErrorKind>,
    },
    /// `ReleaseLeader` ran.
    LeaderRelease {
        /// Ok or why not.
        result: Result<(), ErrorKind>,
    },
    /// `RaceInitialize` ran.
    InitializeRace {
        /// Ok(true): this node won the bootstrap race.
        result: Result<bool, ErrorKind>,
    },
    /// `ProbePeers` ran: one entry per member that answered.
    PeersProbed {
        /// Answers, by member. Members that did not answer are absent.
        reports: BTreeMap<MemberName, PeerReport>,
    },
    /// `ConfirmFailsafe` ran: every member asked either accepted or is listed in `refused`.
    FailsafeConfirmed {
        /// Send time of the round (of its first request).
        sent_at: MonoMillis,
        /// The action's `fence_after_ms`.
        fence_after_ms: u64,
        /// The members that did not accept (as the topology names them), each with its answer
        /// or why there was none.
        refused: Vec<(String, String)>,
    },
    /// A background database task finished.
    DbTaskDone {
        /// Which task.
        task: DbTask,
        /// Ok, or why not: a retryable kind ([`ErrorKind::Unreachable`]) means the source could
        /// not be reached and the task may simply be tried again.
        result: Result<(), PortError>,
    },
    /// The database was stopped synchronously (fencing).
    Stopped {
        /// How.
        mode: StopMode,
        /// Ok or a one-line reason.
        result: Result<(), String>,
    },
    /// Any other DCS write failed; the text names it.
    DcsWriteFailed {
        /// Which write and why.
        what: String,
        /// The cause.
        kind: ErrorKind,
    },
    /// The watchdog could not be armed.
    WatchdogFailed {
        /// Why.
        reason: String,
    },
    /// Adding (`adding`) or removing the VIP failed; the next cycle tries again.
    VipFailed {
        /// Which of the two.
        adding: bool,
        /// Why.
        reason: String,
    },
    /// The watchdog could not be disarmed: it may still be armed, and reset the host unless fed.
    /// decide() keeps it counted as armed, so the disarm is tried again.
    WatchdogDisarmFailed {
        /// Why.
        reason: String,
    },
    /// `SyncSlots` failed; the slots are read again and the sync retried next cycle.
    SlotsSyncFailed {
        /// Why.
        reason: String,
    },
    /// `ReloadDb` ran.
    DbReloaded {
        /// Ok(true): the server was signalled to reload; Ok(false): the configuration was
        /// rewritten but no server runs to signal; Err: why not (the reload is tried again).
        result: Result<bool, String>,
    },
    /// `RegisterService` failed; the next cycle registers again.
    ServiceRegistrationFailed {
        /// The role that was to be published.
        role: crate::action::DbRole,
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// The outcome of an action the driver did not run because a lease action before it in the
    /// same decision failed (see the execution contract in [`crate::action`]). `None` for an
    /// action that does not need the lease.
    pub fn lease_skipped(action: &crate::Action) -> Option<Outcome> {
        use crate::Action;
        const WHY: &str = "not run: a lease action before it in the same decision failed";
        if !action.needs_lease() {
            return None;
        }
        match action {
            Action::RunDbTask { task } => {
                Some(Outcome::DbTaskDone { task: task.clone(), result: Err(PortError::new(ErrorKind::LeaseLost, WHY)) })
            }
            Action::AddVip => Some(Outcome::VipFailed { adding: true, reason: WHY.to_owned() }),
            Action::WriteHistory { .. } => {
                Some(Outcome::DcsWriteFailed { what: "history".to_owned(), kind: ErrorKind::LeaseLost })
            }
            Action::WriteFailsafe { .. } => {
                Some(Outcome::DcsWriteFailed { what: "failsafe".to_owned(), kind: ErrorKind::LeaseLost })
            }
            Action::RegisterService { role } => {
                Some(Outcome::ServiceRegistrationFailed { role: *role, reason: WHY.to_owned() })
            }
            // needs_lease() said no to every other action.
            Action::RaceInitialize { .. }
            | Action::WriteInitialize { .. }
            | Action::WriteConfig { .. }
            | Action::AcquireLeader { .. }
            | Action::RenewLeader { .. }
            | Action::ReleaseLeader
            | Action::TouchMember { .. }
            | Action::WriteStatus { .. }
            | Action::SyncSlots { .. }
            | Action::ClearFailover { .. }
            | Action::ProbePeers
            | Action::ConfirmFailsafe { .. }
            | Action::StopDb { .. }
            | Action::ArmWatchdog
            | Action::DisarmWatchdog
            | Action::RemoveVip
            | Action::ReloadDb
            | Action::RunCallback { .. }
            | Action::Exit => None,
        }
    }
}
