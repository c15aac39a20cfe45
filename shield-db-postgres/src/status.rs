//! Reading the server's state: the postmaster pid file, `pg_controldata`, the status query, a
//! standby's replayed timeline and the timeline history files.

use crate::process::Caps;
use crate::{process, Postgres, ServerInfo};
use shield_core::observation::{DbProcess, DbStatus};
use shield_core::ports::{ErrorKind, PortError};
use shield_core::{Lsn, Timeline};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long a status query may take before the database counts as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The last entry of a timeline history file (`<parent tli>\t<switch lsn>\t<reason>` lines).
pub(crate) fn parse_history_tail(text: &str) -> Option<(Timeline, Lsn)> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    let mut f = line.split_whitespace();
    let tl = f.next()?.parse().ok()?;
    let lsn = Lsn::parse_pg(f.next()?)?;
    Some((Timeline(tl), lsn))
}

/// A standby's replayed timeline, read for the postmaster started at `started`.
#[derive(Clone, Debug)]
pub(crate) struct ReplayTimeline {
    started: Option<String>,
    timeline: u32,
}

/// Replaces a file in the data directory atomically, keeping its mode if it has one (a cluster
/// initialised with group access has 0640 files), never wider than 0640; new files get 0600 as
/// initdb gives them. A crash or a full disk leaves the old file, never a partial one that
/// PostgreSQL would refuse to start with.
/// `postmaster.pid`'s pid (line 1) and status (line 8: `starting`, `ready`, `standby`,
/// `stopping`, padded; absent before PostgreSQL 10).
pub(crate) fn parse_postmaster_pid(text: &str) -> Option<(i32, String)> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<i32>().ok()?;
    Some((pid, lines.nth(6).unwrap_or_default().trim().to_owned()))
}

/// The error says the process ran short of descriptors or memory (`EMFILE`, `ENFILE`,
/// `ENOMEM`, `EAGAIN`, `EINTR`): it says nothing about the file.
pub(crate) fn is_shortage(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR))
}

impl Postgres {
    /// `pg_controldata` fields, or None when there is no valid cluster.
    pub(crate) async fn controldata(&self) -> Option<BTreeMap<String, String>> {
        self.read_controldata().await.ok().flatten()
    }

    /// `pg_controldata` fields: `Ok(None)` when it ran and found no valid cluster, `Err` when it
    /// could not run or did not finish (no process or descriptor left, a stalled host), which
    /// says nothing about the data directory.
    ///
    /// Run again only when `global/pg_control` changed (its inode, size or modification time):
    /// the server rewrites it at every checkpoint, restartpoint and state change, and a process
    /// spawned every cycle was most of an idle daemon's CPU.
    pub(crate) async fn read_controldata(&self) -> Result<Option<BTreeMap<String, String>>, PortError> {
        let key = control_file_key(&self.data().join("global/pg_control"));
        if let (Some(k), Ok(cached)) = (&key, self.controldata_cache.lock()) {
            if let Some((ck, fields)) = cached.as_ref() {
                if ck == k {
                    return Ok(Some(fields.clone()));
                }
            }
        }
        let fields = self.run_controldata().await?;
        if let (Some(k), Some(f), Ok(mut cached)) = (key, &fields, self.controldata_cache.lock()) {
            *cached = Some((k, f.clone()));
        }
        Ok(fields)
    }

    async fn run_controldata(&self) -> Result<Option<BTreeMap<String, String>>, PortError> {
        let path = self.bin("pg_controldata");
        let mut cmd = process::tokio_command(&path, Caps::Drop);
        cmd.arg(self.data()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
            .await
            .map_err(|_| PortError::new(ErrorKind::Unreachable, "pg_controldata did not finish within 10 s"))?
            .map_err(|e| PortError::new(ErrorKind::Unreachable, format!("cannot run {}: {e}", path.display())))?;
        if !out.status.success() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(Some(
            text.lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        ))
    }

    /// The postmaster's pid if it is alive.
    pub(crate) fn postmaster_pid(&self) -> Option<i32> {
        self.postmaster().ok().flatten().map(|p| p.0)
    }

    /// The live postmaster's pid and the status line of `postmaster.pid` (`starting`, `ready`,
    /// `standby`, `stopping`; empty before PostgreSQL 10), or `None` when there is no pid file
    /// or its process is gone. `Err` when the file exists but cannot be read (no descriptor
    /// left, say): whether the postmaster lives is then not known. No query, no child process.
    pub(crate) fn postmaster(&self) -> std::io::Result<Option<(i32, String)>> {
        let text = match std::fs::read_to_string(self.data().join("postmaster.pid")) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some((pid, status)) = parse_postmaster_pid(&text) else { return Ok(None) };
        // Our own postmaster answers the null signal; a pid reused by another user's process
        // (a stale file) does not.
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        Ok(alive.then_some((pid, status)))
    }

    /// Whether the postmaster lives, from `postmaster.pid` and a null signal alone (for a status
    /// that did not answer); `None` when that cannot be told either.
    pub fn postmaster_alive(&self) -> Option<bool> {
        self.postmaster().ok().map(|p| p.is_some())
    }

    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client, PortError> {
        self.connect_with(None).await
    }

    /// A connection for the status query: the server ends a statement that outlives
    /// [`STATUS_TIMEOUT`] itself, so the queries of cycles that gave up on them do not pile up
    /// on a busy server (a backend only notices its client left when it next writes to it).
    pub(crate) async fn status_connect(&self) -> Result<tokio_postgres::Client, PortError> {
        let ms = STATUS_TIMEOUT.as_millis();
        self.connect_with(Some(&format!("-c statement_timeout={ms} -c lock_timeout={ms}"))).await
    }

    pub(crate) async fn connect_with(&self, options: Option<&str>) -> Result<tokio_postgres::Client, PortError> {
        let su = &self.cfg.superuser;
        let mut c = tokio_postgres::Config::new();
        c.host("127.0.0.1").port(self.cfg.port).user(&su.username).dbname("postgres").connect_timeout(STATUS_TIMEOUT);
        if let Some(o) = options {
            c.options(o);
        }
        if !su.password.is_empty() {
            c.password(&su.password);
        }
        let (client, conn) = tokio::time::timeout(STATUS_TIMEOUT, c.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| PortError::new(ErrorKind::Unreachable, "postgres: connect timed out"))?
            .map_err(|e| PortError::new(ErrorKind::Unreachable, format!("postgres: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// The timeline a standby is on: the one it replays (`IDENTIFY_SYSTEM`, cached while the
    /// postmaster and the hints stay the same), or the WAL receiver's if that is ahead (WAL it
    /// streams on a timeline is valid on that timeline). Without a replication connection, the
    /// best guess from `received_tli` and the last restartpoint, which can lag a timeline switch.
    pub(crate) async fn standby_timeline(
        &self,
        started: Option<&str>,
        recv_tl: Option<u32>,
        ckpt_tl: Option<u32>,
    ) -> Option<u32> {
        let leader_tl = {
            let view = self.cluster.lock().ok()?;
            view.leader_name().and_then(|l| view.members.get(l)).and_then(|m| m.data.timeline).map(|t| t.0)
        };
        let hint = [recv_tl, ckpt_tl, leader_tl].into_iter().flatten().max();
        let cached = self.replay_tl.lock().ok().and_then(|c| c.clone());
        let fresh = |c: &ReplayTimeline| c.started.as_deref() == started && hint.is_none_or(|h| c.timeline >= h);
        let replay = match cached {
            Some(c) if fresh(&c) => Some(c.timeline),
            _ => {
                let r = &self.cfg.replication;
                let target = crate::pgwire::Target {
                    host: "127.0.0.1",
                    port: self.cfg.port,
                    user: &r.username,
                    password: &r.password,
                };
                match crate::pgwire::identify_system(target, STATUS_TIMEOUT).await {
                    Ok(id) => {
                        if let Ok(mut c) = self.replay_tl.lock() {
                            *c = Some(ReplayTimeline { started: started.map(str::to_owned), timeline: id.timeline });
                        }
                        Some(id.timeline)
                    }
                    Err(e) => {
                        if !self.replay_tl_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            tracing::warn!(
                                "cannot read the replayed timeline (IDENTIFY_SYSTEM as {} on 127.0.0.1:{}): {e}; \
                                 pg_hba must allow that replication connection, or the timeline shown can lag",
                                r.username,
                                self.cfg.port
                            );
                        }
                        ckpt_tl
                    }
                }
            }
        };
        [replay, recv_tl].into_iter().flatten().max()
    }

    /// Where timeline `tl` branched off its parent: the last entry of `pg_wal/<tl>.history`
    /// (read once per timeline).
    pub(crate) fn branch_point(&self, tl: u32) -> Option<(Timeline, Lsn)> {
        if let Ok(c) = self.branch.lock() {
            if let Some((cached_tl, b)) = *c {
                if cached_tl == tl {
                    return Some(b);
                }
            }
        }
        let text = std::fs::read_to_string(self.data().join(format!("pg_wal/{tl:08X}.history"))).ok()?;
        let b = parse_history_tail(&text)?;
        if let Ok(mut c) = self.branch.lock() {
            *c = Some((tl, b));
        }
        Some(b)
    }

    /// Reads the running server's state into `st` (and its [`ServerInfo`]) with one status query.
    pub(crate) async fn live_status(&self, st: &mut DbStatus) -> Result<(), PortError> {
        let row = self.status_row().await?;
        let in_recovery: bool = row.get(0);
        let lsn = |i: usize| row.get::<_, Option<String>>(i).as_deref().and_then(Lsn::parse_pg);
        st.process = DbProcess::Running { in_recovery };
        st.write_lsn = lsn(1);
        st.received_lsn = lsn(2);
        st.replayed_lsn = lsn(3);
        let primary_tl = row.get::<_, Option<String>>(4).and_then(|h| u32::from_str_radix(&h, 16).ok());
        let recv_tl = row.get::<_, Option<i32>>(5).and_then(|t| u32::try_from(t).ok());
        let ckpt_tl = row.get::<_, Option<i32>>(7).and_then(|t| u32::try_from(t).ok());
        st.streaming = row.get::<_, Option<String>>(6).as_deref() == Some("streaming");
        let started: Option<String> = row.get(8);
        st.timeline = match primary_tl {
            Some(tl) => Some(Timeline(tl)),
            None => self.standby_timeline(started.as_deref(), recv_tl, ckpt_tl).await.map(Timeline),
        };
        st.branched_from = primary_tl.filter(|&tl| tl > 1).and_then(|tl| self.branch_point(tl));
        let slots = parse_slots(row.get::<_, Option<String>>(11));
        st.slot_positions = slots.iter().filter_map(|(n, _, p)| Some((n.clone(), (*p)?))).collect();
        st.slots = Some(slots.into_iter().map(|(n, a, _)| (n, a)).collect());
        let info = server_info(&row, started);
        if let Ok(mut i) = self.info.lock() {
            *i = info;
        }
        Ok(())
    }
}

/// What identifies one version of `pg_control`: inode, size, modification time (ns).
pub(crate) type ControlKey = (u64, u64, i64, i64);

fn control_file_key(path: &std::path::Path) -> Option<ControlKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl Postgres {
    /// The status query's row, on the kept connection when it still works, else on a new one
    /// (a server restarted since the last cycle closed the old one). A connection that failed or
    /// timed out is dropped, never reused.
    async fn status_row(&self) -> Result<tokio_postgres::Row, PortError> {
        let mut kept = self.status_conn.lock().await;
        if let Some(c) = kept.take().filter(|c| !c.is_closed()) {
            if let Ok(Ok(row)) = tokio::time::timeout(STATUS_TIMEOUT, c.query_one(LIVE_STATUS_QUERY, &[])).await {
                *kept = Some(c);
                return Ok(row);
            }
        }
        let c = self.status_connect().await?;
        let row = tokio::time::timeout(STATUS_TIMEOUT, c.query_one(LIVE_STATUS_QUERY, &[]))
            .await
            .map_err(|_| PortError::new(ErrorKind::Unreachable, "postgres: status query timed out"))?
            .map_err(|e| PortError::new(ErrorKind::Unreachable, format!("postgres: {e}")))?;
        *kept = Some(c);
        Ok(row)
    }
}

/// The status query [`Postgres::live_status`] runs; the columns are read by position.
const LIVE_STATUS_QUERY: &str = "SELECT pg_is_in_recovery(), \
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END, \
                 pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                 CASE WHEN pg_is_in_recovery() THEN NULL ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END, \
                 (SELECT received_tli FROM pg_stat_wal_receiver), \
                 (SELECT status FROM pg_stat_wal_receiver), \
                 (SELECT timeline_id FROM pg_control_checkpoint()), \
                 pg_postmaster_start_time()::text, current_setting('server_version_num')::int, \
                 (SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE pending_restart), \
                 (SELECT string_agg(slot_name || ':' || active || ':' || coalesce(restart_lsn::text, ''), ',' \
                    ORDER BY slot_name) FROM pg_replication_slots WHERE slot_type = 'physical'), \
                 (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::int8, \
                 pg_last_xact_replay_timestamp()::text, \
                 (extract(epoch FROM pg_last_xact_replay_timestamp()) * 1000000)::int8, \
                 CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END, \
                 (SELECT latest_end_lsn::text FROM pg_stat_wal_receiver), \
                 (SELECT written_lsn::text FROM pg_stat_wal_receiver), \
                 current_setting('restore_command') <> ''";

/// The physical slots from the status query's `name:active:restart_lsn` list (slot names are
/// [a-z0-9_]; the position may be empty).
fn parse_slots(list: Option<String>) -> Vec<(String, bool, Option<Lsn>)> {
    list.map(|s| {
        s.split(',')
            .filter_map(|e| {
                let mut f = e.splitn(3, ':');
                let (n, a, p) = (f.next()?, f.next()?, f.next().unwrap_or_default());
                Some((n.to_owned(), a == "true", Lsn::parse_pg(p)))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The server facts from the status query's row (`started`: the postmaster start time, column 8).
fn server_info(row: &tokio_postgres::Row, started: Option<String>) -> ServerInfo {
    let lsn = |i: usize| row.get::<_, Option<String>>(i).as_deref().and_then(Lsn::parse_pg);
    ServerInfo {
        postmaster_start_time: started,
        server_version: row.get::<_, Option<i32>>(9).and_then(|v| u32::try_from(v).ok()),
        pending_restart: row
            .get::<_, Option<String>>(10)
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        postmaster_start_us: row.get(12),
        replay_timestamp: row.get(13),
        replay_timestamp_us: row.get(14),
        replay_paused: row.get(15),
        latest_end_lsn: lsn(16),
        written_lsn: lsn(17),
        restore_command: row.get::<_, Option<bool>>(18).unwrap_or(false),
    }
}
