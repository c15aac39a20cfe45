//! An in-memory database: the reference implementation of [`Database`].
//!
//! It models what decide() reads from a PostgreSQL server and what each [`DbTask`] does to it,
//! without WAL or clients: a data directory (empty, or a cluster with a system id, a timeline, an
//! end-of-WAL position and whether it was last a primary), the postmaster (stopped, crashed,
//! running as a primary or a standby), the upstream a standby follows, and physical slots. Tasks
//! finish at once; a task that cannot run on the current state is refused as a real server
//! would refuse it (no data to start, a primary to promote, data to bootstrap over), and changes
//! nothing. Tests move the world with [`MemoryDb::crash`], [`MemoryDb::write`] and
//! [`MemoryDb::fail_next`], and read the task log with [`MemoryDb::tasks`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::action::{DbTask, StartAs, StopMode};
use crate::observation::{DataDir, DbProcess, DbStatus};
use crate::ports::{Database, ErrorKind, PortError};
use crate::types::{Lsn, MemberName, SystemId, Timeline};

/// The end of WAL of a freshly initialised cluster.
const FIRST_LSN: Lsn = Lsn(0x0100_0000);

#[derive(Clone, Debug)]
struct Data {
    system_id: SystemId,
    timeline: Timeline,
    lsn: Lsn,
    was_primary: bool,
    branched_from: Option<(Timeline, Lsn)>,
}

#[derive(Debug)]
struct Inner {
    /// The system id `Bootstrap` creates and `Clone` copies (the cluster's).
    cluster_id: SystemId,
    data: Option<Data>,
    process: DbProcess,
    upstream: Option<MemberName>,
    slots: BTreeSet<String>,
    slot_positions: BTreeMap<String, Lsn>,
    tasks: Vec<DbTask>,
    fail_next: Option<PortError>,
}

/// One node's database, in memory.
#[derive(Clone, Debug)]
pub struct MemoryDb {
    inner: Arc<Mutex<Inner>>,
}

fn refused(why: impl Into<String>) -> PortError {
    PortError::new(ErrorKind::Rejected, why)
}

impl MemoryDb {
    /// An empty data directory and nothing running; `cluster_id` is the system id a bootstrap
    /// creates and a clone copies.
    pub fn new(cluster_id: SystemId) -> MemoryDb {
        MemoryDb {
            inner: Arc::new(Mutex::new(Inner {
                cluster_id,
                data: None,
                process: DbProcess::Stopped,
                upstream: None,
                slots: BTreeSet::new(),
                slot_positions: BTreeMap::new(),
                tasks: Vec::new(),
                fail_next: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every task run so far (refused ones too), in order.
    pub fn tasks(&self) -> Vec<DbTask> {
        self.lock().tasks.clone()
    }

    /// The postmaster dies (`kill -9`): a running server is `Crashed` afterwards.
    pub fn crash(&self) {
        let mut g = self.lock();
        if matches!(g.process, DbProcess::Running { .. } | DbProcess::Starting) {
            g.process = DbProcess::Crashed;
        }
    }

    /// Clients write `bytes` of WAL on a running primary (or a standby replays them). Refused
    /// when the server is not running.
    pub fn write(&self, bytes: u64) -> Result<Lsn, PortError> {
        let mut g = self.lock();
        if !matches!(g.process, DbProcess::Running { .. }) {
            return Err(PortError::new(ErrorKind::Unreachable, "the server is not running"));
        }
        let d = g.data.as_mut().ok_or_else(|| refused("no data directory"))?;
        d.lsn = Lsn(d.lsn.0.saturating_add(bytes));
        Ok(d.lsn)
    }

    /// The next port call (of any method) fails with `error` and changes nothing.
    pub fn fail_next(&self, error: PortError) {
        self.lock().fail_next = Some(error);
    }

    fn take_failure(&self) -> Result<MutexGuard<'_, Inner>, PortError> {
        let mut g = self.lock();
        match g.fail_next.take() {
            Some(e) => Err(e),
            None => Ok(g),
        }
    }
}

impl Inner {
    fn stop(&mut self, mode: StopMode) {
        if matches!(self.process, DbProcess::Running { .. } | DbProcess::Starting) {
            self.process = match mode {
                StopMode::Fast => DbProcess::Stopped,
                // No checkpoint: the data directory needs crash recovery, as after a crash.
                StopMode::Immediate => DbProcess::Crashed,
            };
        }
    }

    fn stopped(&self, what: &str) -> Result<(), PortError> {
        if matches!(self.process, DbProcess::Running { .. } | DbProcess::Starting) {
            return Err(refused(format!("{what}: the server is running")));
        }
        Ok(())
    }

    fn run(&mut self, task: &DbTask) -> Result<(), PortError> {
        match task {
            DbTask::Bootstrap => {
                if self.data.is_some() {
                    return Err(refused("initdb: the data directory is not empty"));
                }
                let system_id = self.cluster_id;
                self.data = Some(Data {
                    system_id,
                    timeline: Timeline(1),
                    lsn: FIRST_LSN,
                    was_primary: true,
                    branched_from: None,
                });
                self.process = DbProcess::Running { in_recovery: false };
                self.upstream = None;
            }
            DbTask::Clone { source } => {
                if self.data.is_some() {
                    return Err(refused("pg_basebackup: the data directory is not empty"));
                }
                let system_id = self.cluster_id;
                self.data = Some(Data {
                    system_id,
                    timeline: Timeline(1),
                    lsn: FIRST_LSN,
                    was_primary: false,
                    branched_from: None,
                });
                self.process = DbProcess::Stopped;
                self.upstream = Some(source.clone());
            }
            DbTask::Start(how) => {
                let d = self.data.as_mut().ok_or_else(|| refused("pg_ctl start: no data directory"))?;
                match how {
                    StartAs::Primary if !d.was_primary => {
                        return Err(refused("pg_ctl start: the data directory is a standby's"))
                    }
                    StartAs::Primary => {
                        self.upstream = None;
                        self.process = DbProcess::Running { in_recovery: false };
                    }
                    StartAs::Replica { upstream } => {
                        d.was_primary = false;
                        self.upstream = upstream.clone();
                        self.process = DbProcess::Running { in_recovery: true };
                    }
                }
            }
            DbTask::Stop(mode) => self.stop(*mode),
            DbTask::Promote { timeline } => {
                if self.process != (DbProcess::Running { in_recovery: true }) {
                    return Err(refused("pg_ctl promote: not a running standby"));
                }
                let d = self.data.as_mut().ok_or_else(|| refused("pg_ctl promote: no data directory"))?;
                if *timeline <= d.timeline {
                    return Err(refused(format!(
                        "pg_ctl promote: timeline {} is not past {}",
                        timeline.0, d.timeline.0
                    )));
                }
                d.branched_from = Some((d.timeline, d.lsn));
                d.timeline = *timeline;
                d.was_primary = true;
                self.upstream = None;
                self.process = DbProcess::Running { in_recovery: false };
            }
            DbTask::Follow { upstream } => {
                if self.data.as_ref().is_none_or(|d| d.was_primary) {
                    return Err(refused("follow: not a standby"));
                }
                self.upstream = Some(upstream.clone());
            }
            DbTask::Rewind { source } => {
                self.stopped("pg_rewind")?;
                let d = self.data.as_mut().ok_or_else(|| refused("pg_rewind: no data directory"))?;
                d.was_primary = false;
                self.upstream = Some(source.clone());
                self.process = DbProcess::Stopped;
            }
            DbTask::WipeDataDir => {
                self.stopped("wipe")?;
                self.data = None;
                self.upstream = None;
                self.process = DbProcess::Stopped;
                self.slots.clear();
                self.slot_positions.clear();
            }
            DbTask::Restart => {
                let d = self.data.as_ref().ok_or_else(|| refused("pg_ctl restart: no data directory"))?;
                self.process = DbProcess::Running { in_recovery: !d.was_primary };
            }
        }
        Ok(())
    }

    fn status(&self) -> DbStatus {
        let mut s = DbStatus::empty();
        s.process = self.process;
        let Some(d) = &self.data else { return s };
        s.data_dir = DataDir::Valid { system_id: d.system_id, was_primary: d.was_primary };
        s.timeline = Some(d.timeline);
        let running = matches!(self.process, DbProcess::Running { .. });
        if self.process == (DbProcess::Running { in_recovery: true }) {
            s.received_lsn = Some(d.lsn);
            s.replayed_lsn = Some(d.lsn);
            s.upstream = self.upstream.clone();
            s.streaming = self.upstream.is_some();
        } else {
            s.write_lsn = Some(d.lsn);
            s.branched_from = d.branched_from;
        }
        if running {
            s.slots = Some(self.slots.iter().map(|n| (n.clone(), false)).collect());
            s.slot_positions = self.slot_positions.clone();
        }
        s
    }
}

#[async_trait]
impl Database for MemoryDb {
    async fn status(&self) -> Result<DbStatus, PortError> {
        Ok(self.take_failure()?.status())
    }

    async fn run(&self, task: &DbTask) -> Result<(), PortError> {
        let mut g = self.take_failure()?;
        g.tasks.push(task.clone());
        g.run(task)
    }

    async fn stop(&self, mode: StopMode) -> Result<(), PortError> {
        self.take_failure()?.stop(mode);
        Ok(())
    }

    async fn sync_slots(&self, create: &[String], drop: &[String], advance: &[(String, Lsn)]) -> Result<(), PortError> {
        let mut g = self.take_failure()?;
        if !matches!(g.process, DbProcess::Running { .. }) {
            return Err(PortError::new(ErrorKind::Unreachable, "slots: the server is not running"));
        }
        for name in create {
            g.slots.insert(name.clone());
        }
        for name in drop {
            g.slots.remove(name);
            g.slot_positions.remove(name);
        }
        for (name, lsn) in advance {
            if g.slots.contains(name) {
                let at = g.slot_positions.entry(name.clone()).or_insert(*lsn);
                *at = (*at).max(*lsn);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::block_on;

    fn name(n: &str) -> MemberName {
        MemberName::new(n.to_owned()).expect("name")
    }

    #[test]
    fn bootstrap_makes_a_running_primary_and_refuses_to_run_twice() {
        let db = MemoryDb::new(SystemId(42));
        let s = block_on(db.status()).expect("status");
        assert_eq!((s.data_dir, s.process), (DataDir::Empty, DbProcess::Stopped));
        block_on(db.run(&DbTask::Bootstrap)).expect("initdb");
        let s = block_on(db.status()).expect("status");
        assert_eq!(s.data_dir, DataDir::Valid { system_id: SystemId(42), was_primary: true });
        assert_eq!(s.process, DbProcess::Running { in_recovery: false });
        assert_eq!((s.timeline, s.write_lsn), (Some(Timeline(1)), Some(FIRST_LSN)));
        let e = block_on(db.run(&DbTask::Bootstrap)).expect_err("not empty");
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert_eq!(db.tasks(), [DbTask::Bootstrap, DbTask::Bootstrap]);
    }

    #[test]
    fn a_clone_starts_as_a_replica_and_promotes_onto_a_new_timeline() {
        let db = MemoryDb::new(SystemId(7));
        block_on(db.run(&DbTask::Clone { source: name("a") })).expect("clone");
        let primary = DbTask::Start(StartAs::Primary);
        assert_eq!(block_on(db.run(&primary)).map_err(|e| e.kind), Err(ErrorKind::Rejected), "a standby's data");
        block_on(db.run(&DbTask::Start(StartAs::Replica { upstream: Some(name("a")) }))).expect("start");
        db.write(100).expect("replay");
        let s = block_on(db.status()).expect("status");
        assert_eq!(s.process, DbProcess::Running { in_recovery: true });
        assert_eq!((s.upstream, s.streaming, s.replayed_lsn), (Some(name("a")), true, Some(Lsn(FIRST_LSN.0 + 100))));
        block_on(db.run(&DbTask::Follow { upstream: name("b") })).expect("follow");
        assert_eq!(block_on(db.status()).expect("status").upstream, Some(name("b")));
        assert!(block_on(db.run(&DbTask::Promote { timeline: Timeline(1) })).is_err(), "not past the current one");
        block_on(db.run(&DbTask::Promote { timeline: Timeline(3) })).expect("promote");
        let s = block_on(db.status()).expect("status");
        assert_eq!(s.process, DbProcess::Running { in_recovery: false });
        assert_eq!((s.timeline, s.branched_from), (Some(Timeline(3)), Some((Timeline(1), Lsn(FIRST_LSN.0 + 100)))));
        assert!(block_on(db.run(&DbTask::Promote { timeline: Timeline(4) })).is_err(), "already a primary");
    }

    #[test]
    fn stops_crashes_rewinds_and_wipes() {
        let db = MemoryDb::new(SystemId(1));
        block_on(db.run(&DbTask::Bootstrap)).expect("initdb");
        db.crash();
        assert_eq!(block_on(db.status()).expect("status").process, DbProcess::Crashed);
        block_on(db.run(&DbTask::Restart)).expect("restart");
        block_on(db.stop(StopMode::Immediate)).expect("stop");
        assert_eq!(block_on(db.status()).expect("status").process, DbProcess::Crashed, "immediate: no checkpoint");
        block_on(db.run(&DbTask::Start(StartAs::Primary))).expect("start");
        assert!(block_on(db.run(&DbTask::WipeDataDir)).is_err(), "never under a running server");
        block_on(db.run(&DbTask::Stop(StopMode::Fast))).expect("stop");
        assert_eq!(block_on(db.status()).expect("status").process, DbProcess::Stopped);
        block_on(db.run(&DbTask::Rewind { source: name("b") })).expect("rewind");
        let s = block_on(db.status()).expect("status");
        assert_eq!(s.data_dir, DataDir::Valid { system_id: SystemId(1), was_primary: false });
        block_on(db.run(&DbTask::WipeDataDir)).expect("wipe");
        assert_eq!(block_on(db.status()).expect("status"), DbStatus::empty());
    }

    #[test]
    fn slots_need_a_running_server_and_only_move_forward() {
        let db = MemoryDb::new(SystemId(1));
        assert_eq!(block_on(db.sync_slots(&[], &[], &[])).map_err(|e| e.kind), Err(ErrorKind::Unreachable));
        block_on(db.run(&DbTask::Bootstrap)).expect("initdb");
        let (a, b) = ("a".to_owned(), "b".to_owned());
        block_on(db.sync_slots(&[a.clone(), b.clone()], &[], &[(a.clone(), Lsn(50))])).expect("sync");
        block_on(db.sync_slots(&[], std::slice::from_ref(&b), &[(a.clone(), Lsn(40))])).expect("sync");
        let s = block_on(db.status()).expect("status");
        assert_eq!(s.slots, Some(vec![(a.clone(), false)]));
        assert_eq!(s.slot_positions.get(&a), Some(&Lsn(50)));
    }

    #[test]
    fn an_injected_failure_changes_nothing() {
        let db = MemoryDb::new(SystemId(1));
        db.fail_next(PortError::new(ErrorKind::Io, "disk full"));
        assert_eq!(block_on(db.run(&DbTask::Bootstrap)).map_err(|e| e.kind), Err(ErrorKind::Io));
        assert_eq!(block_on(db.status()).expect("status"), DbStatus::empty());
        assert!(db.tasks().is_empty(), "the failed call ran nothing");
    }
}
