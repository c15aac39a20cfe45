//! [`Action`]: the imperative verbs a [`crate::Decision`] asks the driver to perform, in order.
//!
//! Execution contract (what every driver, the daemon and the simulator alike, must do):
//! - Actions run in the order given. DCS, VIP and watchdog actions are quick and synchronous,
//!   each bounded by `retry_timeout`.
//! - [`Action::StopDb`] with [`StopMode::Immediate`] is synchronous: fencing never waits, and it
//!   cancels a background task that is still running.
//! - The driver keeps a fence guard at the decision's `fence_at`. Once that deadline has passed
//!   it stops a writable (or promoting) database at once, and it never *starts* a promotion, a
//!   start as primary, or a VIP binding: it reports the task as failed with
//!   [`crate::ports::ErrorKind::LeaseLost`] instead. (Actions run one after another, and a slow
//!   DCS call before a `Promote` can use up the lease.)
//! - [`Action::RunDbTask`] (and [`Action::StopDb`] with [`StopMode::Fast`]) start a background
//!   [`DbTask`]; while it runs the observation reports `db.busy`, and its end arrives as
//!   [`crate::Outcome::DbTaskDone`].
//! - Every action's result comes back in the next observation's `outcomes`.
//! - A failed lease action ([`Action::is_lease_gate`]: acquire, renew, or the `history` write
//!   that reserves a promotion's timeline) stops every later action of the same decision that
//!   needs the lease ([`Action::needs_lease`]): the driver reports each as failed with
//!   [`crate::ports::ErrorKind::LeaseLost`] instead of running it. A renewal that came back
//!   "lease lost" must never be followed by the promotion decided beside it.
//! - [`Action::TouchMember`] and [`Action::WriteStatus`] are plain puts nothing else depends on:
//!   the driver may pipeline them (send and go on without waiting for the answer), so that a slow
//!   DCS does not push the next lease renewal back. A failure still comes back as an outcome.
//! - [`Action::RunCallback`], [`Action::ReloadDb`] and [`Action::RegisterService`] are the node's
//!   side effects: decide() asks for each (the driver never acts on its own), a callback runs in
//!   the background, and a failed reload or registration comes back as an outcome so that
//!   decide() asks again. Every action is matched exhaustively by every driver: a new variant
//!   does not compile until each one runs it.

use serde::{Deserialize, Serialize};

use crate::cluster::{FailoverRequest, HistoryLine, MemberData};
use crate::config::DynamicConfig;
use crate::types::{Lsn, MemberName, Revision, SystemId, Timeline};

/// How to stop PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// `pg_ctl stop -m fast` after a CHECKPOINT (switchover, orderly shutdown).
    Fast,
    /// `pg_ctl stop -m immediate` (fencing: no waiting on clients or checkpoints).
    Immediate,
}

/// How a database should start.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAs {
    /// As a primary (only the lock holder restarting after a crash).
    Primary,
    /// As a standby streaming from `leader` (None: no upstream yet, recover from the archive).
    Replica {
        /// The member to stream from.
        upstream: Option<MemberName>,
    },
}

/// How the driver feeds the watchdog after a successful renewal: it sets the device's timeout
/// afresh at each feed, to the whole seconds (what watchdog devices take) that still fit
/// between the feed and the earliest moment the renewed lease could expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogFeed {
    /// From the renewal's send time, the time by which a watchdog fed after it must have reset
    /// the host: the lease less clock drift and the time a reset takes.
    pub budget_ms: u64,
    /// The longest timeout to set (`ttl - watchdog.safety_margin` when that is configured).
    pub max_timeout_ms: u64,
}

impl WatchdogFeed {
    /// The timeout to set after a renewal whose round trip took `rtt_ms`, in whole seconds
    /// rounded down; `None` when not even one second is left (then the watchdog is not fed).
    pub fn timeout_ms(&self, rtt_ms: u64) -> Option<u64> {
        let ms = self.budget_ms.saturating_sub(rtt_ms).min(self.max_timeout_ms);
        let secs = ms / 1_000;
        (secs >= 1).then_some(secs * 1_000)
    }
}

/// A long database task, run in the background by the driver.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbTask {
    /// initdb, configure and start as a primary.
    Bootstrap,
    /// pg_basebackup from `source` (the data directory is empty or was wiped).
    Clone {
        /// The member to copy from.
        source: MemberName,
    },
    /// Start the postmaster.
    Start(StartAs),
    /// Graceful stop (the immediate stop is synchronous, see [`Action::StopDb`]).
    Stop(StopMode),
    /// `pg_ctl promote`, creating timeline `timeline` (reserved in the DCS `history` first, so
    /// that no two promotions ever create the same timeline id). The backend makes the server
    /// skip ids below it that another promotion reserved.
    Promote {
        /// The timeline the promotion creates.
        timeline: Timeline,
    },
    /// Point a running standby at a new upstream (rewrite primary_conninfo and reload/restart).
    Follow {
        /// The new upstream.
        upstream: MemberName,
    },
    /// pg_rewind against `source` (the database is stopped first).
    Rewind {
        /// The member to rewind from (the leader).
        source: MemberName,
    },
    /// Remove the data directory so the node can be re-cloned.
    WipeDataDir,
    /// Restart in place, keeping the role.
    Restart,
}

/// One imperative step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Create `initialize` only if absent: with `""` for the bootstrap race, or with the system id
    /// when adopting an existing primary's data.
    RaceInitialize {
        /// The value to create; `None` writes `""`.
        system_id: Option<SystemId>,
    },
    /// Write the system id into `initialize` (after bootstrap, or when adopting existing data).
    WriteInitialize {
        /// The system id.
        system_id: SystemId,
    },
    /// Write `config` only if absent (the bootstrap winner, or a leader finding it empty).
    WriteConfig {
        /// The config to write.
        config: Box<DynamicConfig>,
    },
    /// Create the leader key with a lease of `ttl_ms`, only if absent; or, with `replacing`,
    /// replace it only if it is still at that revision ([`crate::ports::Dcs::take_leader`]).
    AcquireLeader {
        /// The lease's time to live: the cluster's `ttl` as this decision knows it. The backend
        /// grants a new lease when the one it holds was granted for another ttl.
        ttl_ms: u64,
        /// The fencing deadline a success gives, counted from the send time (computed from
        /// `ttl_ms`, so the deadline is never later than the lease it guards).
        fence_after_ms: u64,
        /// A leader key that names no member and has not changed for `ttl`, taken as an expired
        /// lock: its revision, which the key must still have for the take to succeed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replacing: Option<Revision>,
    },
    /// Renew our lease (of `ttl_ms`) and re-assert the leader key. On success the driver moves
    /// its fence guard to `sent_at + fence_after_ms` at once (the deadline the next decision will
    /// compute, so a slow cycle never fences on a stale deadline), and feeds the watchdog as
    /// `feed_watchdog` says.
    RenewLeader {
        /// The lease's time to live, as for [`Action::AcquireLeader`]: a changed `ttl` moves the
        /// leader key to a new lease granted for it.
        ttl_ms: u64,
        /// The guard's new deadline, counted from the send time of a successful renewal.
        fence_after_ms: u64,
        /// How to feed the watchdog after a success. `None`: do not feed (watchdog disarmed).
        feed_watchdog: Option<WatchdogFeed>,
    },
    /// Delete the leader key if it still holds our name.
    ReleaseLeader,
    /// Publish our member key (the driver may skip an unchanged value).
    TouchMember {
        /// The value.
        data: Box<MemberData>,
    },
    /// Plain put of `status`.
    WriteStatus {
        /// The leader's WAL position, its slots' positions (its own name at `optime`, so that
        /// replicas advance their copy of its slot) and the member slots every node retains.
        status: crate::cluster::Status,
    },
    /// Create and drop physical replication slots on the running server (quick SQL).
    SyncSlots {
        /// Slots to create.
        create: Vec<String>,
        /// Slots to drop (never an active one).
        drop: Vec<String>,
        /// Inactive slots to move forward (`pg_replication_slot_advance`), to the position the
        /// leader publishes for them (or a cascading member reports), so they hold no old WAL.
        #[serde(default)]
        advance: Vec<(String, Lsn)>,
    },
    /// Append to `history` (plain put of the whole list).
    WriteHistory {
        /// The full new list.
        lines: Vec<HistoryLine>,
    },
    /// Clear the `failover` key with compare-and-set on its revision.
    ClearFailover {
        /// The revision read.
        revision: Revision,
        /// The request being cleared, for the log.
        request: FailoverRequest,
    },
    /// Ask every other member for its status (`GET /patroni`); answers come back as
    /// [`crate::Outcome::PeersProbed`].
    ProbePeers,
    /// Put `failsafe` (Patroni's failsafe topology) after the renewal, as Patroni's leader does
    /// with `failsafe_mode` on.
    WriteFailsafe {
        /// `{member: api_url}`, this node included.
        topology: std::collections::BTreeMap<String, String>,
    },
    /// The DCS does not answer and `failsafe_mode` is on: ask every member of the failsafe
    /// topology but this one (`POST /failsafe`, Patroni's body and 2 s bound) whether it still
    /// accepts this node as its leader. The answers come back as
    /// [`crate::Outcome::FailsafeConfirmed`]; when every member accepted, the round counts as a
    /// renewal sent when the round was: the driver moves its fence guard to `sent_at +
    /// fence_after_ms` and feeds the watchdog as for [`Action::RenewLeader`].
    ConfirmFailsafe {
        /// `{member: api_url}` of the members to ask.
        members: std::collections::BTreeMap<String, String>,
        /// The ttl this leader counts with, sent along (`shield_ttl_ms`, which Patroni ignores):
        /// an accepting Shield member stays out of the race at least that long.
        ttl_ms: u64,
        /// The guard's new deadline, counted from the round's send time, when all accept.
        fence_after_ms: u64,
        /// How to feed the watchdog when all accept.
        feed_watchdog: Option<WatchdogFeed>,
        /// Run only if the [`Action::RenewLeader`] just before it in the same decision failed
        /// without saying the lease is lost (no answer in time): the leader's view came from a
        /// watch that cannot tell a silent DCS, and the round must not wait a cycle.
        #[serde(default)]
        after_failed_renewal: bool,
    },
    /// Stop the database now. `Immediate` is synchronous (fencing); `Fast` is a background task.
    StopDb {
        /// How.
        mode: StopMode,
    },
    /// Start a background database task.
    RunDbTask {
        /// The task.
        task: DbTask,
    },
    /// Arm the watchdog (before promotion).
    ArmWatchdog,
    /// Disarm the watchdog with the magic close.
    DisarmWatchdog,
    /// Bind the VIP and announce it.
    AddVip,
    /// Remove the VIP.
    RemoveVip,
    /// Re-apply the PostgreSQL parameters (rewrite the configuration and signal the server to
    /// reload it), after the cluster's `postgresql.parameters` or the node file's changed. Never
    /// while a database task runs. The result comes back as [`crate::Outcome::DbReloaded`].
    ReloadDb,
    /// Run the user's callback script for `event` with `role` (Patroni's `on_*` callbacks). It
    /// runs in the background; a failing script changes nothing, so no outcome comes back.
    RunCallback {
        /// Which event.
        event: CallbackEvent,
        /// The database's role, as the script is told.
        role: DbRole,
    },
    /// Publish the node's role to service discovery (Consul's `register_service`: the service
    /// entry tagged with the role). Only failures come back, as
    /// [`crate::Outcome::ServiceRegistrationFailed`]; decide() then publishes again.
    RegisterService {
        /// The role to publish.
        role: DbRole,
    },
    /// Stop the daemon (after an orderly shutdown has finished).
    Exit,
}

/// A running database's role, as callbacks and service registration name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DbRole {
    /// Accepts writes.
    Primary,
    /// In recovery.
    Replica,
}

/// A callback event: the `postgresql.callbacks` key that names the script, and the action
/// argument it is given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackEvent {
    /// PostgreSQL was started (or found running when the daemon started).
    OnStart,
    /// PostgreSQL was stopped (not as part of a restart or a demotion).
    OnStop,
    /// PostgreSQL was restarted without a role change.
    OnRestart,
    /// PostgreSQL reloaded its configuration.
    OnReload,
    /// Promotion or demotion.
    OnRoleChange,
}

impl CallbackEvent {
    /// Every event, in the order Patroni documents them.
    pub const ALL: [CallbackEvent; 5] = [
        CallbackEvent::OnStart,
        CallbackEvent::OnStop,
        CallbackEvent::OnRestart,
        CallbackEvent::OnReload,
        CallbackEvent::OnRoleChange,
    ];

    /// The action argument and config key.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackEvent::OnStart => "on_start",
            CallbackEvent::OnStop => "on_stop",
            CallbackEvent::OnRestart => "on_restart",
            CallbackEvent::OnReload => "on_reload",
            CallbackEvent::OnRoleChange => "on_role_change",
        }
    }

    /// The event a config key names.
    pub fn from_key(k: &str) -> Option<CallbackEvent> {
        CallbackEvent::ALL.into_iter().find(|e| e.as_str() == k)
    }
}

impl DbTask {
    /// The task makes the server a writable primary.
    pub fn makes_primary(&self) -> bool {
        matches!(self, DbTask::Promote { .. } | DbTask::Start(StartAs::Primary))
    }
}

impl Action {
    /// A lease action: when it fails, the later actions of the same decision that
    /// [`Action::needs_lease`] are not run (the execution contract above).
    pub fn is_lease_gate(&self) -> bool {
        matches!(self, Action::AcquireLeader { .. } | Action::RenewLeader { .. } | Action::WriteHistory { .. })
    }

    /// Runs only while every lease action before it in the same decision succeeded: what makes
    /// or announces a primary, and the `history` write. (Exhaustive on purpose: a new action
    /// must say whether it needs the lease.)
    pub fn needs_lease(&self) -> bool {
        match self {
            Action::RunDbTask { task } => task.makes_primary(),
            Action::AddVip | Action::WriteHistory { .. } | Action::WriteFailsafe { .. } => true,
            Action::RegisterService { role } => *role == DbRole::Primary,
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
            | Action::Exit => false,
        }
    }
}
