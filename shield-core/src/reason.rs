//! [`Reason`]: the typed "why" of every decision. Its `Display` is the one line an operator reads
//! in the log; the wording follows Patroni's log texts where one exists.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::{Lsn, MemberName, SystemId, Timeline};

/// Why a node is not eligible to promote in a leader race.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "why")]
#[non_exhaustive]
pub enum Ineligible {
    /// Tags forbid promotion.
    NotAllowed,
    /// Too far behind `/status.optime`.
    Lagging {
        /// Our position.
        mine: Lsn,
        /// The leader's last known position.
        optime: Lsn,
        /// The limit.
        max_lag_bytes: u64,
    },
    /// Our timeline is behind the cluster's (check_timeline, or we are an old primary).
    TimelineBehind {
        /// Ours.
        mine: Option<Timeline>,
        /// The cluster's.
        cluster: Timeline,
    },
    /// A peer still runs as primary.
    PrimaryAlive {
        /// Who.
        peer: MemberName,
    },
    /// The last leader we followed was paused, and has not been seen since the cluster was
    /// resumed: it may still run as primary, believing the cluster paused, with no deadline.
    LeaderMayBePaused {
        /// Who.
        peer: MemberName,
    },
    /// A peer has more WAL.
    PeerAhead {
        /// Who.
        peer: MemberName,
    },
    /// A peer has the same WAL and a higher failover_priority.
    PeerHigherPriority {
        /// Who.
        peer: MemberName,
    },
    /// Backing off after a failed promotion attempt.
    BackingOff,
    /// The database is not running or its position is unknown.
    DatabaseNotReady,
    /// Not a synchronous standby while synchronous_mode is on.
    NotSynchronous,
    /// A manual failover names another candidate.
    NotTheCandidate {
        /// The named candidate.
        candidate: MemberName,
    },
    /// The watchdog is required and could not be armed.
    WatchdogRequired,
    /// `failsafe_mode` is on and the `failsafe` key lists members, but not this one: it was not
    /// a member when the last leader wrote the key, so that leader never asked it (Patroni's rule).
    NotInFailsafeTopology,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::NotAllowed => f.write_str("I am not allowed to promote (nofailover/failover_priority)"),
            Ineligible::Lagging { mine, optime, max_lag_bytes } => write!(
                f,
                "my wal position {mine} is {} bytes behind the leader's {optime}, over maximum_lag_on_failover {max_lag_bytes}",
                optime.bytes_after(*mine)
            ),
            Ineligible::TimelineBehind { mine, cluster } => match mine {
                Some(t) => write!(f, "my timeline {t} is behind the cluster timeline {cluster}"),
                None => write!(f, "my timeline is unknown (cluster timeline {cluster})"),
            },
            Ineligible::PrimaryAlive { peer } => write!(f, "primary ({peer}) is still alive"),
            Ineligible::LeaderMayBePaused { peer } => write!(
                f,
                "the last leader ({peer}) was paused and has not been seen since the resume; it may still run as primary"
            ),
            Ineligible::PeerAhead { peer } => write!(f, "{peer} has more WAL than I do"),
            Ineligible::PeerHigherPriority { peer } => {
                write!(f, "{peer} has the same WAL position and a higher failover_priority")
            }
            Ineligible::BackingOff => f.write_str("backing off after a failed promotion"),
            Ineligible::DatabaseNotReady => f.write_str("my database is not running"),
            Ineligible::NotSynchronous => f.write_str("I am not a synchronous standby"),
            Ineligible::NotTheCandidate { candidate } => write!(f, "the failover candidate is {candidate}"),
            Ineligible::WatchdogRequired => f.write_str("the watchdog is required and could not be activated"),
            Ineligible::NotInFailsafeTopology => f.write_str("I am not in the failsafe topology"),
        }
    }
}

/// Why a node decided what it did this cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
#[non_exhaustive]
pub enum Reason {
    // ---- fencing -------------------------------------------------------------------------
    /// The local fencing deadline passed without a successful renewal.
    FenceDeadlinePassed,
    /// The DCS said our lease or leader key is gone.
    LeaseLost,
    /// The DCS has been unreachable longer than retry_timeout while we held the lock with a
    /// watchdog armed: stopping cleanly before the watchdog could reset the host.
    DcsUnreachableFenced {
        /// For how long.
        for_ms: u64,
    },
    /// Another member holds the leader key while we run as primary.
    AnotherLeader {
        /// Who.
        leader: MemberName,
    },
    /// We are primary without a lock and could not take it.
    PrimaryWithoutLock,
    // ---- leader --------------------------------------------------------------------------
    /// Steady state on the leader.
    LeaderHealthy,
    /// We hold the lock and are promoting.
    Promoting,
    /// We hold the lock; the watchdog (mode `required`) is armed before promotion.
    ArmingWatchdog,
    /// Holding the lock while a background database task runs.
    LeaderBusy,
    /// The leader key holds our name but this process holds no lease for it (a restarted
    /// daemon): its database was writable with no deadline it can trust, so it was stopped.
    RestartedHolderFenced,
    /// The lock holder's database crashed; restarting it in place.
    RestartingCrashedPrimary,
    /// The lock holder's database could not be started within primary_start_timeout.
    PrimaryStartTimedOut,
    /// The lock holder released the lock to let another node take over after a crash.
    CrashFailover,
    /// The lock holder's database did not answer its status query: the lock is kept and nothing
    /// is changed while the bound runs (see `DynamicConfig::status_unknown_timeout_ms`).
    StatusUnknown {
        /// How long the lock holder's database has not been seen healthy.
        for_ms: u64,
    },
    /// The lock holder's database stayed unknown past the bound: counted as hung and stopped at
    /// once; the lock goes once it is seen down.
    StatusUnknownStopping {
        /// How long it had not been seen healthy.
        for_ms: u64,
    },
    /// The lock holder's database, stopped as hung, was not seen down within a ttl: the lock is
    /// released all the same.
    StatusUnknownTimedOut {
        /// How long it had not been seen healthy.
        for_ms: u64,
    },
    /// Demoting for a switchover or failover request.
    SwitchoverDemoting {
        /// The named candidate, if any.
        candidate: Option<MemberName>,
    },
    /// A switchover or failover request was dropped.
    FailoverRequestCleared {
        /// Why.
        why: String,
    },
    /// Waiting for a scheduled switchover.
    SwitchoverScheduled {
        /// Its time, as written.
        at: String,
    },
    /// The lock holder could not renew, will retry before the fencing deadline.
    RenewFailedRetrying,
    /// The DCS does not answer; `failsafe_mode` is on: the lock holder asks every member of the
    /// failsafe topology whether it still accepts it, and keeps running only on a round all of
    /// them accepted (each round moves the deadline as a renewal would).
    FailsafeConfirming {
        /// The last round every member accepted counts the deadline (false: none yet, or the
        /// last round was refused, so the deadline of the last renewal or round stands).
        confirmed: bool,
    },
    /// The DCS answers again without our leader key, which expired while failsafe kept this
    /// primary running: taking the free lock back (every member that accepted us stays out of
    /// the race for a ttl).
    FailsafeReacquiring,
    // ---- failsafe replica ----------------------------------------------------------------
    /// Nobody holds the leader key, but this node accepted the named leader over
    /// `POST /failsafe` less than a ttl ago: it stays out of the race.
    FailsafeLeaderVouched {
        /// The leader accepted.
        leader: MemberName,
    },
    // ---- race ----------------------------------------------------------------------------
    /// Asking peers before racing for the lock.
    ProbingPeers,
    /// Trying to take the leader lock.
    AcquiringLock,
    /// Lost the race; following whoever won.
    LostRace,
    /// Not eligible, following.
    NotHealthiest(Ineligible),
    /// Waiting for the named failover candidate to take the lock.
    WaitingForCandidate {
        /// Who.
        candidate: MemberName,
    },
    // ---- follower ------------------------------------------------------------------------
    /// Steady state on a replica.
    Following {
        /// The leader.
        leader: MemberName,
    },
    /// Starting the database as a replica.
    StartingReplica {
        /// The upstream.
        leader: Option<MemberName>,
    },
    /// Pointing the replica at a new leader.
    ChangingUpstream {
        /// The new leader.
        leader: MemberName,
    },
    /// Our timeline diverged from the leader's; running pg_rewind.
    Rewinding {
        /// The leader.
        leader: MemberName,
    },
    /// pg_rewind is due, but the leader's `pg_control` is not yet on its new timeline
    /// (`checkpoint_after_promote: false` in its member key).
    WaitingForCheckpoint {
        /// The leader.
        leader: MemberName,
    },
    /// pg_rewind is due, but the last attempt failed for a reason a retry may cure; it runs
    /// again at the next timed cycle.
    RewindRetryLater {
        /// The leader.
        leader: MemberName,
    },
    /// Our timeline diverged and cannot be rewound; wiping to re-clone.
    Reinitializing,
    /// Our timeline diverged and configuration allows neither rewind nor re-clone.
    DivergedNeedsOperator {
        /// The leader.
        leader: MemberName,
    },
    /// A background database task is running.
    Busy,
    /// No leader and we cannot take it (no lock, waiting).
    NoLeader,
    // ---- bootstrap -----------------------------------------------------------------------
    /// Racing for the `initialize` key.
    RacingInitialize,
    /// Won the race; running initdb.
    Bootstrapping,
    /// Another node is bootstrapping.
    WaitingForBootstrap,
    /// Cloning from a member.
    Cloning {
        /// The source.
        source: MemberName,
    },
    /// Bootstrap finished; taking the lock and publishing initialize/config.
    InitializedNewCluster,
    /// Adopting an existing data directory for an uninitialized cluster.
    AdoptingExistingData {
        /// Its system id.
        system_id: SystemId,
    },
    /// The data directory belongs to another cluster.
    SystemIdMismatch {
        /// Ours.
        mine: SystemId,
        /// The cluster's.
        cluster: SystemId,
    },
    /// The data directory cannot be used.
    DataDirInvalid {
        /// Why.
        why: String,
    },
    /// A replica's data but no cluster: refuse to invent a primary.
    ReplicaWithoutCluster,
    /// A background database task failed.
    TaskFailed {
        /// One line.
        why: String,
    },
    // ---- misc ----------------------------------------------------------------------------
    /// The DCS cannot be reached (replica: nothing to do).
    DcsUnreachable,
    /// Pause: no automatic action.
    Paused {
        /// What we would otherwise have done.
        detail: String,
    },
    /// Restarting PostgreSQL on the operator's request.
    Restarting,
    /// An operator request was refused.
    RequestRefused {
        /// Why.
        why: String,
    },
    /// Orderly shutdown in progress.
    ShuttingDown,
    /// Orderly shutdown finished.
    ShutdownComplete,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Reason as R;
        match self {
            R::FenceDeadlinePassed => {
                f.write_str("demoted self: no successful leader lock renewal before the fencing deadline")
            }
            R::LeaseLost => f.write_str("demoted self because failed to update leader lock in DCS (lease lost)"),
            R::DcsUnreachableFenced { for_ms } => write!(
                f,
                "demoting self because DCS is not accessible and I was a leader (for {}.{:03}s)",
                for_ms / 1000,
                for_ms % 1000
            ),
            R::AnotherLeader { leader } => {
                write!(f, "demoting self because I do not have the lock and I was a leader ({leader} has it)")
            }
            R::PrimaryWithoutLock => f.write_str("stopped a primary that runs without the leader lock"),
            R::LeaderHealthy => f.write_str("no action. I am the leader with the lock"),
            R::Promoting => f.write_str("promoted self to leader by acquiring session lock"),
            R::ArmingWatchdog => f.write_str("arming the watchdog before promotion"),
            R::LeaderBusy => f.write_str("updated leader lock during a database task"),
            R::RestartedHolderFenced => f.write_str(
                "stopped PostgreSQL: the leader key is mine but this process holds no lease for it yet (restarted daemon)",
            ),
            R::RestartingCrashedPrimary => f.write_str("starting primary after failure"),
            R::PrimaryStartTimedOut => f.write_str("released leader lock: primary did not start within primary_start_timeout"),
            R::CrashFailover => f.write_str("stopped PostgreSQL to fail over after a crash"),
            R::StatusUnknown { for_ms } => write!(
                f,
                "updated leader lock: PostgreSQL did not answer its status query (not seen healthy for {}.{:03}s); \
                 will try again",
                for_ms / 1000,
                for_ms % 1000
            ),
            R::StatusUnknownStopping { for_ms } => write!(
                f,
                "stopping PostgreSQL: it has not answered its status query for {}.{:03}s, past \
                 primary_start_timeout; the leader lock goes once it is down",
                for_ms / 1000,
                for_ms % 1000
            ),
            R::StatusUnknownTimedOut { for_ms } => write!(
                f,
                "released leader lock: PostgreSQL has not answered its status query for {}.{:03}s, and was \
                 not seen down after an immediate stop",
                for_ms / 1000,
                for_ms % 1000
            ),
            R::SwitchoverDemoting { candidate } => match candidate {
                Some(c) => write!(f, "manual failover: demoting myself in favour of {c}"),
                None => f.write_str("manual failover: demoting myself"),
            },
            R::FailoverRequestCleared { why } => write!(f, "cleared failover request: {why}"),
            R::SwitchoverScheduled { at } => write!(f, "awaiting switchover scheduled at {at}"),
            R::RenewFailedRetrying => f.write_str("failed to update leader lock, retrying before the fencing deadline"),
            R::FailsafeConfirming { confirmed: true } => f.write_str(
                "continue to run as a leader because failsafe mode is enabled and all members are accessible",
            ),
            R::FailsafeConfirming { confirmed: false } => f.write_str(
                "DCS is not accessible: asking the failsafe members; running until the fencing deadline unless all accept",
            ),
            R::FailsafeReacquiring => {
                f.write_str("DCS is back without our leader key (failsafe kept us running): acquiring the lock again")
            }
            R::FailsafeLeaderVouched { leader } => {
                write!(f, "no leader key, but failsafe mode is active: {leader} confirmed as the leader less than a ttl ago")
            }
            R::ProbingPeers => f.write_str("cluster is unlocked: asking peers for their WAL positions"),
            R::AcquiringLock => f.write_str("cluster is unlocked and I am the healthiest node: acquiring the leader lock"),
            R::LostRace => f.write_str("failed to acquire the leader lock: another node won"),
            R::NotHealthiest(why) => write!(f, "following: not the healthiest node ({why})"),
            R::WaitingForCandidate { candidate } => write!(f, "waiting for failover candidate {candidate} to take the lock"),
            R::Following { leader } => write!(f, "no action. I am a secondary, and following a leader ({leader})"),
            R::StartingReplica { leader } => match leader {
                Some(l) => write!(f, "starting as a secondary following {l}"),
                None => f.write_str("starting as a secondary with no upstream"),
            },
            R::ChangingUpstream { leader } => write!(f, "changing primary_conninfo to follow {leader}"),
            R::Rewinding { leader } => write!(f, "running pg_rewind from {leader}"),
            R::WaitingForCheckpoint { leader } => write!(f, "waiting for checkpoint on {leader} before rewind"),
            R::RewindRetryLater { leader } => {
                write!(f, "pg_rewind from {leader} failed; trying again at the next cycle")
            }
            R::Reinitializing => f.write_str("timeline diverged: removing the data directory to re-clone"),
            R::DivergedNeedsOperator { leader } => write!(
                f,
                "timeline diverged from {leader} and neither use_pg_rewind nor remove_data_directory_on_diverged_timelines is set: consider doing reinitialize"
            ),
            R::Busy => f.write_str("a database task is in progress"),
            R::NoLeader => f.write_str("cluster has no leader"),
            R::RacingInitialize => f.write_str("racing for the initialize key"),
            R::Bootstrapping => f.write_str("won the initialize race: bootstrapping a new cluster"),
            R::WaitingForBootstrap => f.write_str("waiting for leader to bootstrap"),
            R::Cloning { source } => write!(f, "trying to bootstrap from {source}"),
            R::InitializedNewCluster => f.write_str("initialized a new cluster"),
            R::AdoptingExistingData { system_id } => write!(f, "adopting existing data directory (system id {system_id})"),
            R::SystemIdMismatch { mine, cluster } => write!(
                f,
                "system ID mismatch: node belongs to a different cluster: {mine} != {cluster}"
            ),
            R::DataDirInvalid { why } => write!(f, "data directory is not usable: {why}"),
            R::ReplicaWithoutCluster => {
                f.write_str("cluster is not initialized and my data is a replica: please first start Shield on the node running as primary")
            }
            R::TaskFailed { why } => write!(f, "database task failed: {why}"),
            R::DcsUnreachable => f.write_str("DCS is not accessible"),
            R::Paused { detail } => write!(f, "PAUSE: {detail}"),
            R::Restarting => f.write_str("restarting PostgreSQL on request"),
            R::RequestRefused { why } => write!(f, "request refused: {why}"),
            R::ShuttingDown => f.write_str("shutting down"),
            R::ShutdownComplete => f.write_str("shutdown complete"),
        }
    }
}
