//! A simulated PostgreSQL: a WAL position on a timeline with a fork history, a postmaster that
//! starts, stops, crashes and promotes, and background tasks that take time.

use crate::action::{DbTask, StartAs, StopMode};
use crate::observation::{DataDir, DbProcess, DbStatus};
use crate::types::{Lsn, MemberName, SystemId, Timeline};

/// What is on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimData {
    /// The cluster's system id.
    pub system_id: SystemId,
    /// Current timeline.
    pub timeline: Timeline,
    /// End of local WAL.
    pub lsn: Lsn,
    /// Forks: (timeline that ended, where it ended), oldest first.
    pub history: Vec<(Timeline, Lsn)>,
    /// pg_control says "primary" (not a standby).
    pub was_primary: bool,
    /// The timeline of pg_control's latest checkpoint: after a promotion the old one until the
    /// first checkpoint on the new timeline ends (pg_rewind from this server refuses until then).
    pub checkpoint_timeline: Timeline,
}

impl SimData {
    /// Where `tl` ended in this history, if it did.
    fn switch_point(&self, tl: Timeline) -> Option<Lsn> {
        self.history.iter().find(|(t, _)| *t == tl).map(|(_, l)| *l)
    }

    /// Whether a standby with `other`'s data can stream from a server with this data.
    pub fn can_serve(&self, other: &SimData) -> bool {
        if self.system_id != other.system_id || other.timeline > self.timeline {
            return false;
        }
        if other.timeline == self.timeline {
            return other.history == self.history;
        }
        // Our history must contain the standby's, and the standby must not be past the fork.
        other.history.iter().all(|h| self.history.contains(h))
            && self.switch_point(other.timeline).is_some_and(|s| other.lsn <= s)
    }
}

/// The last WAL position `mine` and `source` have in common, as pg_rewind finds it by comparing
/// their timeline histories.
fn fork_point(mine: &SimData, source: &SimData) -> Lsn {
    let common = mine.history.iter().zip(&source.history).take_while(|(a, b)| a == b).count();
    match (mine.history.get(common), source.history.get(common)) {
        (Some(a), Some(b)) => a.1.min(b.1),
        (None, Some(b)) => b.1,
        (Some(a), None) => a.1.min(source.lsn),
        (None, None) => mine.lsn.min(source.lsn),
    }
}

/// The postmaster's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimProcess {
    /// Stopped cleanly.
    Stopped,
    /// Stopped by a crash or an immediate stop.
    Crashed,
    /// Starting; becomes running when the start task ends.
    Starting,
    /// Running.
    Running {
        /// In recovery (a standby).
        in_recovery: bool,
    },
}

/// A task in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimTask {
    /// What.
    pub task: DbTask,
    /// Identifies this run of the task, so a cancelled one's completion is ignored.
    pub seq: u64,
}

/// One node's database.
#[derive(Clone, Debug)]
pub struct SimDb {
    /// On-disk data, if any.
    pub data: Option<SimData>,
    /// The postmaster.
    pub process: SimProcess,
    /// The configured upstream.
    pub upstream: Option<MemberName>,
    /// The walreceiver is streaming.
    pub streaming: bool,
    /// A background task.
    pub task: Option<SimTask>,
    /// The whole host is frozen: the postmaster answers nothing and acknowledges no write.
    pub frozen: bool,
    /// An immediate stop was sent and has not finished yet.
    pub stop_pending: bool,
}

impl SimDb {
    /// A node with an empty data directory.
    pub fn empty() -> SimDb {
        SimDb {
            data: None,
            process: SimProcess::Stopped,
            upstream: None,
            streaming: false,
            task: None,
            frozen: false,
            stop_pending: false,
        }
    }

    /// Accepts writes.
    pub fn writable(&self) -> bool {
        self.process == SimProcess::Running { in_recovery: false } && !self.frozen
    }

    /// The status the daemon would observe.
    pub fn status(&self) -> DbStatus {
        let process = match self.process {
            // The daemon sent SIGQUIT: it counts the server as stopped, though its processes may
            // still be exiting (and acknowledging writes).
            _ if self.stop_pending => DbProcess::Crashed,
            SimProcess::Stopped => DbProcess::Stopped,
            SimProcess::Crashed => DbProcess::Crashed,
            SimProcess::Starting => DbProcess::Starting,
            SimProcess::Running { in_recovery } => DbProcess::Running { in_recovery },
        };
        let d = self.data.as_ref();
        let running_replica = self.process == SimProcess::Running { in_recovery: true };
        DbStatus {
            data_dir: d
                .map_or(DataDir::Empty, |d| DataDir::Valid { system_id: d.system_id, was_primary: d.was_primary }),
            process,
            timeline: d.map(|d| d.timeline),
            write_lsn: d.filter(|_| !running_replica).map(|d| d.lsn),
            received_lsn: d.filter(|_| running_replica).map(|d| d.lsn),
            replayed_lsn: d.filter(|_| running_replica).map(|d| d.lsn),
            upstream: self.upstream.clone(),
            streaming: self.streaming,
            busy: self.task.as_ref().map(|t| t.task.clone()),
            branched_from: d.filter(|_| self.writable()).and_then(|d| d.history.last().copied()),
            // Slots are not modelled: no slot actions in the simulation.
            slots: None,
            slot_positions: Default::default(),
            checkpoint_timeline: d.map(|d| d.checkpoint_timeline),
        }
    }

    /// Immediate stop or crash: cancels any task.
    pub fn crash(&mut self) {
        self.stop_pending = false;
        if self.process != SimProcess::Stopped || self.task.is_some() {
            self.process = SimProcess::Crashed;
        }
        self.task = None;
        self.streaming = false;
    }

    /// Stop in the given mode, right now.
    pub fn stop_now(&mut self, mode: StopMode) {
        match mode {
            StopMode::Immediate => self.crash(),
            StopMode::Fast => {
                self.process = SimProcess::Stopped;
                self.streaming = false;
            }
        }
    }

    /// Starts the postmaster (the start task ends it in `Running`).
    pub fn start(&mut self, how: &StartAs) -> Result<(), String> {
        let Some(d) = self.data.as_mut() else { return Err("no data directory".into()) };
        match how {
            StartAs::Primary if !d.was_primary => return Err("data directory is a standby's".into()),
            StartAs::Primary => self.upstream = None,
            StartAs::Replica { upstream } => {
                d.was_primary = false;
                self.upstream = upstream.clone();
            }
        }
        self.process = SimProcess::Starting;
        Ok(())
    }

    /// The start task ended.
    pub fn started(&mut self) {
        let in_recovery = !self.data.as_ref().is_some_and(|d| d.was_primary);
        self.process = SimProcess::Running { in_recovery };
        if let Some(d) = self.data.as_mut().filter(|_| !in_recovery) {
            // Crash recovery ends with a checkpoint.
            d.checkpoint_timeline = d.timeline;
        }
    }

    /// Promotion: a new timeline forks at the current position. Its id is the next one, or
    /// `at_least` if that is higher (ids another promotion reserved are skipped, as the daemon
    /// makes PostgreSQL do).
    pub fn promote(&mut self, at_least: Timeline) -> Result<(), String> {
        if self.process != (SimProcess::Running { in_recovery: true }) {
            return Err("not a running standby".into());
        }
        let Some(d) = self.data.as_mut() else { return Err("no data directory".into()) };
        d.history.push((d.timeline, d.lsn));
        d.timeline = d.timeline.next().max(at_least);
        d.was_primary = true;
        self.process = SimProcess::Running { in_recovery: false };
        self.upstream = None;
        self.streaming = false;
        Ok(())
    }

    /// pg_rewind against `source`: take its history, rewound to where ours forked.
    pub fn rewind_from(&mut self, source: &SimData) -> Result<(), String> {
        let Some(d) = self.data.as_mut() else { return Err("no data directory".into()) };
        if d.system_id != source.system_id {
            return Err("source belongs to another cluster".into());
        }
        if source.checkpoint_timeline == d.timeline {
            // pg_rewind reads the source's timeline from its pg_control.
            return Err("source and target cluster are on the same timeline".into());
        }
        d.lsn = d.lsn.min(fork_point(d, source));
        d.timeline = source.timeline;
        d.checkpoint_timeline = source.checkpoint_timeline;
        d.history = source.history.clone();
        d.was_primary = false;
        self.process = SimProcess::Stopped;
        Ok(())
    }
}
