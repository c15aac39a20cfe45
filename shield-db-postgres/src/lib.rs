//! The PostgreSQL backend: shield-core's [`Database`] port over `initdb`, `pg_ctl`,
//! `pg_basebackup`, `pg_rewind`, `pg_controldata` and a tokio-postgres status query.
//!
//! Shield owns `postgresql.conf` in the data directory: the file initdb wrote is kept as
//! `postgresql.base.conf` and included first, then Shield's settings follow (listen address,
//! port, cluster name, the replication settings failover needs, the DCS and local parameters,
//! and on a standby `primary_conninfo`). `pg_hba.conf` is written from the config.
//!
//! The crate imports only shield-core. `conf` writes the files, `status` reads the server's state,
//! `tasks` runs the long operations, `process` builds every child process (PostgreSQL's tools and,
//! for the daemon, callbacks and the VIP's tools), `files` does atomic and secret writes, `pgwire`
//! speaks the replication protocol's `IDENTIFY_SYSTEM`.

use async_trait::async_trait;
use shield_core::action::{DbTask, StartAs, StopMode};
use shield_core::cluster::ClusterView;
use shield_core::observation::{DataDir, DbProcess, DbStatus};
use shield_core::ports::{Database, ErrorKind, PortError};
use shield_core::{Lsn, MemberName, SystemId, Timeline};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod conf;
pub mod files;
pub mod pgwire;
pub mod process;
mod settings;
mod status;
mod tasks;
#[cfg(test)]
mod tests;

use crate::status::{is_shortage, ReplayTimeline};
use crate::tasks::sql_literal;
pub use settings::{Credentials, PgSettings};

/// The local PostgreSQL-compatible server.
#[derive(Debug)]
pub struct Postgres {
    cfg: PgSettings,
    scope: String,
    name: MemberName,
    hba: Vec<String>,
    initdb_args: Vec<String>,
    /// The latest cluster snapshot, to resolve member names to hosts (set by the driver).
    cluster: Arc<Mutex<ClusterView>>,
    /// Parameters from the DCS config (the driver keeps them current).
    dcs_parameters: Arc<Mutex<BTreeMap<String, String>>>,
    /// Local `postgresql.parameters` (replaced by a config reload).
    local_parameters: Mutex<BTreeMap<String, String>>,
    /// What the last status query learned about the running server.
    info: Mutex<ServerInfo>,
    /// A standby's replayed timeline, as last read.
    replay_tl: Mutex<Option<ReplayTimeline>>,
    /// Whether the failure to read it has been logged.
    replay_tl_warned: std::sync::atomic::AtomicBool,
    /// The current timeline and where it branched off, as last read from its history file.
    branch: Mutex<Option<(u32, (Timeline, Lsn))>>,
    /// The status query failed last time (logged once per spell).
    live_failing: std::sync::atomic::AtomicBool,
    /// The status query's connection, kept between cycles (a new one costs a backend fork and,
    /// with SCRAM, most of a cycle's CPU); dropped after any failure or timeout.
    status_conn: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
    /// `pg_controldata`'s fields, and the version of `pg_control` they were read from.
    controldata_cache: Mutex<Option<(status::ControlKey, BTreeMap<String, String>)>>,
}

/// Facts about the running server for the REST API and `shieldctl`, from the last status query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `pg_postmaster_start_time()`, as PostgreSQL prints it.
    pub postmaster_start_time: Option<String>,
    /// `server_version_num`, e.g. 150004.
    pub server_version: Option<u32>,
    /// Parameters whose new value waits for a restart (`pg_settings.pending_restart`).
    pub pending_restart: Vec<String>,
    /// `pg_postmaster_start_time()` in microseconds since the Unix epoch.
    pub postmaster_start_us: Option<i64>,
    /// On a replica: `pg_last_xact_replay_timestamp()`, as PostgreSQL prints it.
    pub replay_timestamp: Option<String>,
    /// The same in microseconds since the Unix epoch.
    pub replay_timestamp_us: Option<i64>,
    /// On a replica: `pg_is_wal_replay_paused()`.
    pub replay_paused: Option<bool>,
    /// On a replica: the walreceiver's `latest_end_lsn` (the upstream's position as last
    /// reported to it), which Patroni counts in the leader's position for `?lag=` and readiness.
    pub latest_end_lsn: Option<Lsn>,
    /// On a replica: the walreceiver's `written_lsn` (written, maybe not yet flushed).
    pub written_lsn: Option<Lsn>,
    /// `restore_command` is set: a replica that does not stream is "in archive recovery".
    pub restore_command: bool,
}

pub(crate) fn io(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::new(ErrorKind::Io, format!("{what}: {e}"))
}

/// Parses `host:port` (IPv6 in brackets allowed) from a connect address or `postgres://` URL.
pub fn host_port(addr: &str) -> Option<(String, u16)> {
    let a = addr.strip_prefix("postgres://").or_else(|| addr.strip_prefix("postgresql://")).unwrap_or(addr);
    let a = a.split('/').next()?;
    let a = a.rsplit_once('@').map_or(a, |(_, h)| h);
    let (h, p) = a.rsplit_once(':')?;
    Some((h.trim_matches(['[', ']']).to_owned(), p.parse().ok()?))
}

impl Postgres {
    /// A backend for the configured server.
    pub fn new(
        cfg: PgSettings,
        scope: &str,
        name: MemberName,
        hba: Vec<String>,
        initdb_args: Vec<String>,
        cluster: Arc<Mutex<ClusterView>>,
        dcs_parameters: Arc<Mutex<BTreeMap<String, String>>>,
    ) -> Postgres {
        let local_parameters = Mutex::new(cfg.parameters.clone());
        let info = Mutex::new(ServerInfo::default());
        Postgres {
            cfg,
            scope: scope.to_owned(),
            name,
            hba,
            initdb_args,
            cluster,
            dcs_parameters,
            local_parameters,
            info,
            replay_tl: Mutex::new(None),
            replay_tl_warned: std::sync::atomic::AtomicBool::new(false),
            branch: Mutex::new(None),
            live_failing: std::sync::atomic::AtomicBool::new(false),
            status_conn: tokio::sync::Mutex::new(None),
            controldata_cache: Mutex::new(None),
        }
    }

    /// What the last status query learned (empty while the server is not running).
    pub fn info(&self) -> ServerInfo {
        self.info.lock().map(|i| i.clone()).unwrap_or_default()
    }

    /// Replaces the local `postgresql.parameters` (a config reload); [`Self::reload`] applies them.
    pub fn set_local_parameters(&self, p: BTreeMap<String, String>) {
        if let Ok(mut l) = self.local_parameters.lock() {
            *l = p;
        }
    }

    pub(crate) fn bin(&self, name: &str) -> PathBuf {
        self.cfg.bin_dir.join(name)
    }

    pub(crate) fn data(&self) -> &Path {
        &self.cfg.data_dir
    }
}

#[async_trait]
impl Database for Postgres {
    async fn sync_slots(&self, create: &[String], drop: &[String], advance: &[(String, Lsn)]) -> Result<(), PortError> {
        let c = self.connect().await?;
        for name in create {
            // Reserve WAL at once, so the member's WAL is kept from now on.
            let q = format!("SELECT pg_create_physical_replication_slot({}, true)", sql_literal(name));
            c.batch_execute(&q).await.map_err(|e| io(&format!("create slot {name}"), e))?;
            tracing::info!(slot = %name, "replication slot created");
        }
        for name in drop {
            let q = format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = {} AND slot_type = 'physical' AND NOT active",
                sql_literal(name)
            );
            c.batch_execute(&q).await.map_err(|e| io(&format!("drop slot {name}"), e))?;
            tracing::info!(slot = %name, "replication slot dropped");
        }
        for (name, to) in advance {
            // PostgreSQL stops at what this server has (flushed, or replayed on a standby).
            let q = format!(
                "SELECT pg_replication_slot_advance(slot_name, {}) FROM pg_replication_slots \
                 WHERE slot_name = {} AND slot_type = 'physical' AND NOT active AND restart_lsn IS NOT NULL",
                sql_literal(&to.to_string()),
                sql_literal(name)
            );
            c.batch_execute(&q).await.map_err(|e| io(&format!("advance slot {name}"), e))?;
        }
        Ok(())
    }

    async fn status(&self) -> Result<DbStatus, PortError> {
        let mut st = DbStatus::empty();
        let d = self.data();
        let empty = match std::fs::read_dir(d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                st.data_dir = DataDir::Missing;
                return Ok(st);
            }
            // No descriptor or memory left: nothing known about the data directory.
            Err(e) if is_shortage(&e) => return Err(io(&format!("cannot read {}", d.display()), e)),
            Err(e) => {
                st.data_dir = DataDir::Invalid(format!("cannot read {}: {e}", d.display()));
                return Ok(st);
            }
            Ok(mut it) => it.next().is_none(),
        };
        if empty {
            st.data_dir = DataDir::Empty;
            return Ok(st);
        }
        let Some(cd) = self.read_controldata().await? else {
            st.data_dir = DataDir::Invalid(format!("{} is not empty and pg_controldata cannot read it", d.display()));
            return Ok(st);
        };
        let Some(system_id) = cd.get("Database system identifier").and_then(|s| s.parse().ok()).map(SystemId) else {
            st.data_dir = DataDir::Invalid("pg_controldata shows no system identifier".into());
            return Ok(st);
        };
        let state = cd.get("Database cluster state").cloned().unwrap_or_default();
        let was_primary = !state.contains("recovery") && !self.was_standby_requested();
        st.data_dir = DataDir::Valid { system_id, was_primary };
        st.timeline = cd.get("Latest checkpoint's TimeLineID").and_then(|t| t.parse().ok()).map(Timeline);
        st.checkpoint_timeline = st.timeline;
        st.write_lsn = cd
            .get("Minimum recovery ending location")
            .and_then(|l| Lsn::parse_pg(l))
            .filter(|l| l.0 > 0)
            .or_else(|| cd.get("Latest checkpoint location").and_then(|l| Lsn::parse_pg(l)));
        st.upstream = self.configured_upstream();
        let pm = self.postmaster().map_err(|e| io("cannot read postmaster.pid", e))?;
        if pm.is_none() {
            if let Ok(mut i) = self.info.lock() {
                *i = ServerInfo::default();
            }
        }
        st.process = match pm {
            None if state.starts_with("shut down") => DbProcess::Stopped,
            None => DbProcess::Crashed,
            Some((_, pm_status)) => {
                match self.live_status(&mut st).await {
                    Ok(()) => self.live_failing.store(false, std::sync::atomic::Ordering::Relaxed),
                    // Running but not answering: starting (as postmaster.pid says while it
                    // recovers), or busy or hung, which is not known. Said once per spell.
                    Err(e) => {
                        let starting = pm_status == "starting";
                        if !self.live_failing.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            let counted = if starting { "starting" } else { "unknown" };
                            tracing::info!(error = %e, "PostgreSQL runs but its status query failed; counted as {counted}");
                        }
                        st.process = if starting { DbProcess::Starting } else { DbProcess::Unknown };
                    }
                }
                st.process
            }
        };
        Ok(st)
    }

    async fn run(&self, task: &DbTask) -> Result<(), PortError> {
        match task {
            DbTask::Bootstrap => self.bootstrap().await,
            DbTask::Clone { source } => self.clone_from(source).await,
            DbTask::Start(how) => self.start(how).await,
            DbTask::Stop(mode) => self.stop_now(*mode).await,
            DbTask::Promote { timeline } => {
                self.skip_reserved_timelines(*timeline).await?;
                let args = vec!["promote".into(), "-D".into(), self.data().display().to_string(), "-w".into()];
                self.run_bin("pg_ctl", &args, Duration::from_secs(self.cfg.pg_ctl_timeout_s + 5)).await?;
                self.checkpoint_after_promote().await;
                Ok(())
            }
            DbTask::Follow { upstream } => self.follow(upstream).await,
            DbTask::Rewind { source } => self.rewind(source).await,
            DbTask::WipeDataDir => {
                self.stop_now(StopMode::Immediate).await?;
                std::fs::remove_dir_all(self.data()).map_err(|e| io("remove data_dir", e))
            }
            DbTask::Restart => {
                self.stop_now(StopMode::Fast).await?;
                let how = if self.was_standby_requested() {
                    StartAs::Replica { upstream: self.configured_upstream() }
                } else {
                    StartAs::Primary
                };
                self.start(&how).await
            }
        }
    }

    async fn stop(&self, mode: StopMode) -> Result<(), PortError> {
        if mode == StopMode::Immediate {
            // Fencing: SIGQUIT to the postmaster is an immediate shutdown; don't wait on pg_ctl.
            if let Some(pid) = self.postmaster_pid() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGQUIT);
            }
            return Ok(());
        }
        self.stop_now(mode).await
    }
}
