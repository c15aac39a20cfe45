//! The PostgreSQL backend: shield-core's [`Database`] port over `initdb`, `pg_ctl`,
//! `pg_basebackup`, `pg_rewind`, `pg_controldata` and a tokio-postgres status query.
//!
//! Shield owns `postgresql.conf` in the data directory: the file initdb wrote is kept as
//! `postgresql.base.conf` and included first, then Shield's settings follow (listen address,
//! port, cluster name, the replication settings failover needs, the DCS and local parameters,
//! and on a standby `primary_conninfo`). `pg_hba.conf` is written from the config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use process::Caps;
use shield_core::action::{DbTask, StartAs, StopMode};
use shield_core::cluster::ClusterView;
use shield_core::observation::{DataDir, DbProcess, DbStatus};
use shield_core::ports::{Database, ErrorKind, PortError};
use shield_core::{Lsn, MemberName, SystemId, Timeline};

pub mod files;
pub mod pgwire;
pub mod process;
mod settings;

pub use settings::{Credentials, PgSettings};

/// How long a status query may take before the database counts as not answering.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

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
}

/// The last entry of a timeline history file (`<parent tli>\t<switch lsn>\t<reason>` lines).
fn parse_history_tail(text: &str) -> Option<(Timeline, Lsn)> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty() && !l.starts_with('#'))?;
    let mut f = line.split_whitespace();
    let tl = f.next()?.parse().ok()?;
    let lsn = Lsn::parse_pg(f.next()?)?;
    Some((Timeline(tl), lsn))
}

/// A standby's replayed timeline, read for the postmaster started at `started`.
#[derive(Clone, Debug)]
struct ReplayTimeline {
    started: Option<String>,
    timeline: u32,
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

fn io(what: &str, e: impl std::fmt::Display) -> PortError {
    PortError::new(ErrorKind::Io, format!("{what}: {e}"))
}

/// What pg_rewind runs on its source server, granted to a rewind user that is not a superuser
/// (as Patroni grants them).
const REWIND_FUNCTIONS: [&str; 4] = [
    "pg_ls_dir(text, boolean, boolean)",
    "pg_stat_file(text, boolean)",
    "pg_read_binary_file(text)",
    "pg_read_binary_file(text, bigint, bigint, boolean)",
];

/// Creates the role with `attributes` and the password, or sets them on the existing role.
/// (Plain statements, not a DO block: a password may hold any text, `$$` included.)
async fn ensure_role(
    c: &tokio_postgres::Client,
    user: &Credentials,
    attributes: &str,
) -> Result<(), tokio_postgres::Error> {
    let exists = c.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user.username]).await?.is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let sql =
        format!("{verb} ROLE {} WITH {attributes} PASSWORD {}", sql_ident(&user.username), sql_literal(&user.password));
    c.batch_execute(&sql).await
}

/// Whether a postgresql.conf includes `postgresql.base.conf`: a wrapper generated by Shield or
/// Patroni, not a base of its own.
fn includes_base(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.split('#').next().unwrap_or_default().trim();
        let Some(rest) = l.strip_prefix("include_if_exists").or_else(|| l.strip_prefix("include")) else {
            return false;
        };
        let target = rest.trim_start_matches([' ', '\t', '=']).trim().trim_matches(['\'', '"']);
        Path::new(target).file_name().is_some_and(|f| f == "postgresql.base.conf")
    })
}

/// Quotes a value for postgresql.conf.
fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a libpq connection-string value.
fn conninfo_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
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

    /// Rewrites postgresql.conf from the current DCS and local parameters and, if the server is
    /// running, signals it to re-read its configuration (settings that need a restart then show
    /// as pending). Does nothing without a valid data directory.
    pub fn reload(&self) -> Result<bool, PortError> {
        if !self.data().join("PG_VERSION").is_file() || !self.data().join("postgresql.base.conf").is_file() {
            return Ok(false);
        }
        self.write_config(self.configured_upstream().as_ref())?;
        let Some(pid) = self.postmaster_pid() else { return Ok(false) };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGHUP)
            .map_err(|e| io("signal the postmaster to reload", e))?;
        Ok(true)
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.cfg.bin_dir.join(name)
    }

    fn data(&self) -> &Path {
        &self.cfg.data_dir
    }

    fn log_file(&self) -> PathBuf {
        let dir = self.data().parent().unwrap_or(Path::new("/tmp"));
        dir.join(format!("{}.postgres.log", self.data().file_name().and_then(|n| n.to_str()).unwrap_or("pg")))
    }

    /// Runs a server binary; Err carries its stderr.
    async fn run_bin(&self, bin: &str, args: &[String], timeout: Duration) -> Result<String, PortError> {
        let path = self.bin(bin);
        // Credentials come from the pgpass file only: the daemon's password variables are removed.
        let mut cmd = process::tokio_command(&path, Caps::Drop);
        cmd.args(args).env("PGPASSFILE", &self.cfg.pgpass).kill_on_drop(true);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| PortError::new(ErrorKind::Io, format!("{bin} did not finish within {timeout:?}")))?
            .map_err(|e| io(&format!("cannot run {}", path.display()), e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            // The last few lines: libpq's cause comes a line before its "Is the server running"
            // hint, and the hint alone names no cause.
            let err = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" / ");
            let tail = if tail.is_empty() { "(no output)".to_owned() } else { tail };
            Err(PortError::new(ErrorKind::Io, format!("{bin} failed ({}): {tail}", out.status)))
        }
    }

    /// The member's host and port from the latest snapshot.
    fn member_addr(&self, m: &MemberName) -> Result<(String, u16), PortError> {
        let view = self.cluster.lock().map_err(|_| io("cluster view", "poisoned"))?;
        let url = view.members.get(m).and_then(|x| x.data.conn_url.clone());
        url.as_deref().and_then(host_port).ok_or_else(|| {
            PortError::new(ErrorKind::Unreachable, format!("member {m} has no usable conn_url in the DCS"))
        })
    }

    /// Writes `.pgpass` with the replication and rewind credentials: created 0600, replaced
    /// atomically (a crash or a full disk never leaves a truncated file that fails every login).
    pub fn write_pgpass(&self) -> Result<(), PortError> {
        let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
        let mut text = String::new();
        for c in [&self.cfg.replication, &self.cfg.rewind, &self.cfg.superuser] {
            text.push_str(&format!("*:*:*:{}:{}\n", esc(&c.username), esc(&c.password)));
        }
        files::write_secret(&self.cfg.pgpass, text.as_bytes())
            .map_err(|e| io(&format!("write {} (its directory must be writable)", self.cfg.pgpass.display()), e))
    }

    /// `postgresql.conf`, `pg_hba.conf` and (for a standby) `standby.signal`, each replaced
    /// atomically (see [`write_data_file`]).
    fn write_config(&self, upstream: Option<&MemberName>) -> Result<(), PortError> {
        let d = self.data();
        let base = d.join("postgresql.base.conf");
        let conf = d.join("postgresql.conf");
        if !base.exists() {
            let text = std::fs::read_to_string(&conf).unwrap_or_default();
            if includes_base(&text) {
                // A generated wrapper (ours or Patroni's) whose base went missing: renaming it
                // would make the base include itself ("configuration file recursion"). What it
                // wrapped is gone; an empty base keeps the include valid.
                tracing::warn!("postgresql.base.conf is missing; starting from an empty one");
                write_data_file(&base, b"").map_err(|e| io("write postgresql.base.conf", e))?;
            } else {
                std::fs::rename(&conf, &base).map_err(|e| io("keep initdb's postgresql.conf", e))?;
            }
        }
        let mut p: BTreeMap<String, String> = BTreeMap::new();
        p.insert("wal_level".into(), "replica".into());
        p.insert("hot_standby".into(), "on".into());
        p.insert("wal_log_hints".into(), "on".into());
        p.insert("max_wal_senders".into(), "10".into());
        p.insert("max_replication_slots".into(), "10".into());
        p.insert("wal_keep_size".into(), "128MB".into());
        // A replica whose slot the leader creates a cycle after it connects retries in 1 s, not
        // PostgreSQL's 5 s.
        p.insert("wal_retrieve_retry_interval".into(), "1s".into());
        if let Ok(dcs) = self.dcs_parameters.lock() {
            p.extend(dcs.clone());
        }
        if let Ok(local) = self.local_parameters.lock() {
            p.extend(local.clone());
        }
        p.insert("listen_addresses".into(), self.cfg.listen_host.clone());
        p.insert("port".into(), self.cfg.port.to_string());
        p.insert("cluster_name".into(), self.scope.clone());
        p.insert("hba_file".into(), d.join("pg_hba.conf").display().to_string());
        let mut text =
            String::from("# Written by Shield; edits are overwritten. Local settings: postgresql.parameters.\n");
        text.push_str("include 'postgresql.base.conf'\n");
        for (k, v) in &p {
            text.push_str(&format!("{k} = {}\n", conf_quote(v)));
        }
        // A standby without upstream keeps the standby.signal start() wrote.
        if let Some(m) = upstream {
            let (host, port) = self.member_addr(m)?;
            let r = &self.cfg.replication;
            let info = format!(
                "host={} port={port} user={} application_name={} passfile={} sslmode=prefer",
                conninfo_quote(&host),
                conninfo_quote(&r.username),
                conninfo_quote(self.name.as_str()),
                conninfo_quote(&self.cfg.pgpass.display().to_string())
            );
            text.push_str(&format!("# shield upstream: {m}\nprimary_conninfo = {}\n", conf_quote(&info)));
            if self.use_slots() {
                let slot = shield_core::slot_name(&self.name);
                text.push_str(&format!("primary_slot_name = {}\n", conf_quote(&slot)));
            }
            text.push_str("recovery_target_timeline = 'latest'\n");
            write_data_file(&d.join("standby.signal"), b"").map_err(|e| io("write standby.signal", e))?;
        }
        write_data_file(&conf, text.as_bytes()).map_err(|e| io("write postgresql.conf", e))?;
        // Exactly the configured lines, as Patroni writes them: no implicit trust for local users.
        let mut hba = String::from("# Written by Shield from the config's pg_hba.\n");
        for l in &self.hba {
            hba.push_str(l);
            hba.push('\n');
        }
        write_data_file(&d.join("pg_hba.conf"), hba.as_bytes()).map_err(|e| io("write pg_hba.conf", e))
    }

    fn was_standby_requested(&self) -> bool {
        self.data().join("standby.signal").exists()
    }

    /// The upstream recorded in postgresql.conf.
    fn configured_upstream(&self) -> Option<MemberName> {
        let text = std::fs::read_to_string(self.data().join("postgresql.conf")).ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("# shield upstream: "))?;
        MemberName::new(line.trim()).ok()
    }

    /// `pg_controldata` fields, or None when there is no valid cluster.
    async fn controldata(&self) -> Option<BTreeMap<String, String>> {
        self.read_controldata().await.ok().flatten()
    }

    /// `pg_controldata` fields: `Ok(None)` when it ran and found no valid cluster, `Err` when it
    /// could not run or did not finish (no process or descriptor left, a stalled host), which
    /// says nothing about the data directory.
    async fn read_controldata(&self) -> Result<Option<BTreeMap<String, String>>, PortError> {
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

    /// The cluster's `postgresql.use_slots` (Patroni's default: true).
    fn use_slots(&self) -> bool {
        self.cluster.lock().ok().and_then(|v| v.config.as_ref().map(|(c, _)| c.postgresql.use_slots)).unwrap_or(true)
    }

    /// The postmaster's pid if it is alive.
    fn postmaster_pid(&self) -> Option<i32> {
        self.postmaster().ok().flatten().map(|p| p.0)
    }

    /// The live postmaster's pid and the status line of `postmaster.pid` (`starting`, `ready`,
    /// `standby`, `stopping`; empty before PostgreSQL 10), or `None` when there is no pid file
    /// or its process is gone. `Err` when the file exists but cannot be read (no descriptor
    /// left, say): whether the postmaster lives is then not known. No query, no child process.
    fn postmaster(&self) -> std::io::Result<Option<(i32, String)>> {
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

    async fn connect(&self) -> Result<tokio_postgres::Client, PortError> {
        self.connect_with(None).await
    }

    /// A connection for the status query: the server ends a statement that outlives
    /// [`STATUS_TIMEOUT`] itself, so the queries of cycles that gave up on them do not pile up
    /// on a busy server (a backend only notices its client left when it next writes to it).
    async fn status_connect(&self) -> Result<tokio_postgres::Client, PortError> {
        let ms = STATUS_TIMEOUT.as_millis();
        self.connect_with(Some(&format!("-c statement_timeout={ms} -c lock_timeout={ms}"))).await
    }

    async fn connect_with(&self, options: Option<&str>) -> Result<tokio_postgres::Client, PortError> {
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
    async fn standby_timeline(&self, started: Option<&str>, recv_tl: Option<u32>, ckpt_tl: Option<u32>) -> Option<u32> {
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
    fn branch_point(&self, tl: u32) -> Option<(Timeline, Lsn)> {
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

    async fn live_status(&self, st: &mut DbStatus) -> Result<(), PortError> {
        let c = self.status_connect().await?;
        let q = "SELECT pg_is_in_recovery(), \
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
        let row = tokio::time::timeout(STATUS_TIMEOUT, c.query_one(q, &[]))
            .await
            .map_err(|_| PortError::new(ErrorKind::Unreachable, "postgres: status query timed out"))?
            .map_err(|e| PortError::new(ErrorKind::Unreachable, format!("postgres: {e}")))?;
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
        // `name:active:restart_lsn` (slot names are [a-z0-9_]; the position may be empty).
        let slots: Vec<(String, bool, Option<Lsn>)> = row
            .get::<_, Option<String>>(11)
            .map(|s| {
                s.split(',')
                    .filter_map(|e| {
                        let mut f = e.splitn(3, ':');
                        let (n, a, p) = (f.next()?, f.next()?, f.next().unwrap_or_default());
                        Some((n.to_owned(), a == "true", Lsn::parse_pg(p)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        st.slot_positions = slots.iter().filter_map(|(n, _, p)| Some((n.clone(), (*p)?))).collect();
        st.slots = Some(slots.into_iter().map(|(n, a, _)| (n, a)).collect());
        let info = ServerInfo {
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
        };
        if let Ok(mut i) = self.info.lock() {
            *i = info;
        }
        Ok(())
    }

    async fn start(&self, how: &StartAs) -> Result<(), PortError> {
        self.write_pgpass()?;
        let upstream = match how {
            StartAs::Primary => {
                let _ = std::fs::remove_file(self.data().join("standby.signal"));
                None
            }
            StartAs::Replica { upstream } => {
                write_data_file(&self.data().join("standby.signal"), b"").map_err(|e| io("write standby.signal", e))?;
                upstream.clone()
            }
        };
        self.write_config(upstream.as_ref())?;
        let t = self.cfg.pg_ctl_timeout_s;
        let args = vec![
            "start".into(),
            "-D".into(),
            self.data().display().to_string(),
            "-l".into(),
            self.log_file().display().to_string(),
            "-w".into(),
            "-t".into(),
            t.to_string(),
        ];
        self.run_bin("pg_ctl", &args, Duration::from_secs(t + 5)).await.map(|_| ())
    }

    async fn stop_now(&self, mode: StopMode) -> Result<(), PortError> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        let m = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let args =
            vec!["stop".into(), "-D".into(), self.data().display().to_string(), "-m".into(), m.into(), "-w".into()];
        self.run_bin("pg_ctl", &args, Duration::from_secs(self.cfg.pg_ctl_timeout_s + 5)).await.map(|_| ())
    }

    async fn bootstrap(&self) -> Result<(), PortError> {
        std::fs::create_dir_all(self.data()).map_err(|e| io("create data_dir", e))?;
        set_mode_0700(self.data())?;
        let pwfile = self.data().with_extension("pwfile");
        // initdb reads the superuser's password from this file: owner-only from its creation.
        files::write_secret(&pwfile, format!("{}\n", self.cfg.superuser.password).as_bytes())
            .map_err(|e| io("write pwfile", e))?;
        let mut args = vec![
            "-D".to_owned(),
            self.data().display().to_string(),
            "-U".to_owned(),
            self.cfg.superuser.username.clone(),
            format!("--pwfile={}", pwfile.display()),
            "--auth-local=trust".to_owned(),
        ];
        args.extend(self.initdb_args.iter().cloned());
        let r = self.run_bin("initdb", &args, Duration::from_secs(300)).await;
        let _ = std::fs::remove_file(&pwfile);
        r?;
        self.start(&StartAs::Primary).await?;
        let c = self.connect().await?;
        // The roles Patroni creates at bootstrap, so that its configs work unchanged: the
        // replication user, and a rewind user (when one is configured apart from the superuser)
        // with the functions pg_rewind calls on its source.
        ensure_role(&c, &self.cfg.replication, "REPLICATION LOGIN")
            .await
            .map_err(|e| io("create the replication user", e))?;
        let rw = &self.cfg.rewind;
        if rw.username != self.cfg.superuser.username {
            ensure_role(&c, rw, "LOGIN").await.map_err(|e| io("create the rewind user", e))?;
            for f in REWIND_FUNCTIONS {
                let sql = format!("GRANT EXECUTE ON FUNCTION pg_catalog.{f} TO {}", sql_ident(&rw.username));
                c.batch_execute(&sql).await.map_err(|e| io("grant the rewind user what pg_rewind runs", e))?;
            }
        }
        Ok(())
    }

    async fn clone_from(&self, source: &MemberName) -> Result<(), PortError> {
        let (host, port) = self.member_addr(source)?;
        self.write_pgpass()?;
        if self.data().exists() && std::fs::read_dir(self.data()).map(|mut d| d.next().is_some()).unwrap_or(false) {
            return Err(PortError::new(
                ErrorKind::Io,
                format!("{} is not empty; refusing to clone over it", self.data().display()),
            ));
        }
        let mut args = vec![
            format!("--pgdata={}", self.data().display()),
            "--wal-method=stream".into(),
            "--checkpoint=fast".into(),
            format!(
                "--dbname=host={host} port={port} user={} application_name={}",
                self.cfg.replication.username, self.name
            ),
        ];
        // postgresql.basebackup (a later --checkpoint or --max-rate wins over the defaults).
        args.extend(self.cfg.basebackup_args.iter().cloned());
        let r = self.run_bin("pg_basebackup", &args, Duration::from_secs(3600)).await;
        if let Err(e) = r {
            // Leave nothing half-copied behind: the next try needs an empty directory.
            let _ = std::fs::remove_dir_all(self.data());
            return Err(PortError::new(ErrorKind::Unreachable, e.message));
        }
        set_mode_0700(self.data())?;
        // The copy carries the source's files: its postgresql.base.conf (initdb's settings, kept
        // by Shield and Patroni alike) stays, and start() rewrites the postgresql.conf that wraps
        // it, whoever wrote that.
        Ok(())
    }

    async fn rewind(&self, source: &MemberName) -> Result<(), PortError> {
        self.stop_now(StopMode::Fast).await?;
        if let Some(cd) = self.controldata().await {
            let state = cd.get("Database cluster state").cloned().unwrap_or_default();
            if !state.starts_with("shut down") {
                // pg_rewind needs a clean shutdown: finish crash recovery in single-user mode.
                // Single-user mode refuses to run with a standby or recovery signal file
                // ("standby mode is not supported by single-user servers"); rewind writes
                // standby.signal again when it is done.
                for f in ["standby.signal", "recovery.signal"] {
                    let _ = std::fs::remove_file(self.data().join(f));
                }
                let args = vec![
                    "--single".into(),
                    "-c".into(),
                    "archive_mode=off".into(),
                    "-D".into(),
                    self.data().display().to_string(),
                    "postgres".into(),
                ];
                let mut cmd = process::tokio_command(self.bin("postgres"), Caps::Drop);
                cmd.args(&args).stdin(std::process::Stdio::null()).kill_on_drop(true);
                let _ = tokio::time::timeout(Duration::from_secs(300), cmd.output()).await;
            }
        }
        let (host, port) = self.member_addr(source)?;
        self.write_pgpass()?;
        let rw = &self.cfg.rewind;
        let args = vec![
            format!("--target-pgdata={}", self.data().display()),
            format!("--source-server=host={host} port={port} user={} dbname=postgres", rw.username),
        ];
        let r = self.run_bin("pg_rewind", &args, Duration::from_secs(3600)).await;
        if let Err(e) = &r {
            let kind = if e.message.contains("could not connect") { ErrorKind::Unreachable } else { ErrorKind::Io };
            return Err(PortError::new(kind, e.message.clone()));
        }
        // The rewind itself succeeded: a failure here must not count as a failed rewind (which
        // may wipe the data directory). Starting as a replica writes the file again.
        if let Err(e) = write_data_file(&self.data().join("standby.signal"), b"") {
            tracing::warn!(error = %e, "after pg_rewind: cannot write standby.signal; the start as a replica writes it");
        }
        Ok(())
    }

    async fn follow(&self, upstream: &MemberName) -> Result<(), PortError> {
        self.write_pgpass()?;
        self.write_config(Some(upstream))?;
        let c = self.connect().await?;
        c.batch_execute("SELECT pg_reload_conf()").await.map_err(|e| io("reload", e))
    }
}

/// Replaces a file in the data directory atomically, keeping its mode if it has one (a cluster
/// initialised with group access has 0640 files), never wider than 0640; new files get 0600 as
/// initdb gives them. A crash or a full disk leaves the old file, never a partial one that
/// PostgreSQL would refuse to start with.
/// `postmaster.pid`'s pid (line 1) and status (line 8: `starting`, `ready`, `standby`,
/// `stopping`, padded; absent before PostgreSQL 10).
fn parse_postmaster_pid(text: &str) -> Option<(i32, String)> {
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse::<i32>().ok()?;
    Some((pid, lines.nth(6).unwrap_or_default().trim().to_owned()))
}

/// The error says the process ran short of descriptors or memory (`EMFILE`, `ENFILE`,
/// `ENOMEM`, `EAGAIN`, `EINTR`): it says nothing about the file.
fn is_shortage(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::EINTR))
}

fn write_data_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    files::write_atomic(path, bytes, files::kept_mode(path, 0o600, 0o640))
}

fn set_mode_0700(p: &Path) -> Result<(), PortError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod data_dir", e))
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
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
                self.run_bin("pg_ctl", &args, Duration::from_secs(self.cfg.pg_ctl_timeout_s + 5)).await.map(|_| ())
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
            _ => Err(PortError::new(ErrorKind::Rejected, format!("unsupported task {task:?}"))),
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

impl Postgres {
    /// Makes the coming promotion create timeline `target`. PostgreSQL names a promotion's new
    /// timeline one past the newest consecutive history file it finds after its own
    /// (`findNewestTimeLine`); ids between the standby's timeline and `target` were reserved in
    /// the DCS by promotions elsewhere that may have run, so a placeholder history file for each
    /// makes PostgreSQL skip them. No PostgreSQL interface chooses the id directly, hence these
    /// files. They stay: a standby that follows the new timeline fetches the history file of
    /// every id between its own timeline and the primary's (and fails without them); nothing
    /// parses them, since the new timeline's own history names its real parent.
    async fn skip_reserved_timelines(&self, target: Timeline) -> Result<(), PortError> {
        let current = Database::status(self).await?.timeline.unwrap_or_default();
        let parent =
            std::fs::read_to_string(self.data().join(format!("pg_wal/{:08X}.history", current.0))).unwrap_or_default();
        let mut made = false;
        for tl in current.0.saturating_add(1)..target.0 {
            let path = self.data().join(format!("pg_wal/{tl:08X}.history"));
            if path.exists() {
                continue;
            }
            let text =
                format!("{parent}# timeline {tl} was reserved by another promotion in the DCS; skipped by shield\n");
            write_data_file(&path, text.as_bytes()).map_err(|e| io("write a placeholder timeline history file", e))?;
            made = true;
        }
        if made {
            tracing::info!(from = current.0, to = target.0, "promotion skips timeline ids reserved elsewhere");
        }
        Ok(())
    }

    /// Immediate stop without async (for the fence guard).
    pub fn kill_now(data_dir: &Path) {
        let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else { return };
        if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGQUIT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postmaster_pid_files_give_the_pid_and_the_status() {
        let file = "4242\n/var/lib/pg/data\n1733300000\n5432\n/tmp\n127.0.0.1\n  5432001    65538\nready   \n";
        assert_eq!(parse_postmaster_pid(file), Some((4242, "ready".to_owned())));
        let starting = file.replace("ready   ", "starting");
        assert_eq!(parse_postmaster_pid(&starting), Some((4242, "starting".to_owned())));
        // Before PostgreSQL 10 (no status line), or cut short while written.
        assert_eq!(parse_postmaster_pid("4242\n/var/lib/pg/data\n"), Some((4242, String::new())));
        assert_eq!(parse_postmaster_pid(""), None);
        assert_eq!(parse_postmaster_pid("garbage\n"), None);
    }

    #[test]
    fn running_short_of_descriptors_says_nothing_about_the_file() {
        assert!(is_shortage(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_shortage(&std::io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_shortage(&std::io::Error::from_raw_os_error(libc::EACCES)));
        assert!(!is_shortage(&std::io::Error::from_raw_os_error(libc::ENOTDIR)));
    }

    #[test]
    fn conn_urls_give_host_and_port() {
        assert_eq!(host_port("postgres://127.0.0.1:5433/postgres"), Some(("127.0.0.1".into(), 5433)));
        assert_eq!(host_port("10.0.0.1:1921"), Some(("10.0.0.1".into(), 1921)));
        assert_eq!(host_port("postgres://[::1]:5432/postgres"), Some(("::1".into(), 5432)));
        assert_eq!(host_port("nonsense"), None);
    }

    #[test]
    fn generated_wrappers_are_told_from_bases() {
        // Patroni's wrapper, as pg_basebackup copies it from a Patroni primary.
        let patroni =
            "# Do not edit this file manually!\n# It will be overwritten by Patroni!\ninclude 'postgresql.base.conf'\n";
        assert!(includes_base(patroni));
        assert!(includes_base("# Written by Shield\ninclude 'postgresql.base.conf'\nport = '5432'\n"));
        assert!(includes_base("include_if_exists = \"/data/postgresql.base.conf\"\n"));
        // initdb's own file, and one that only mentions the name in a comment, are bases.
        assert!(!includes_base("max_connections = 100\n#include 'postgresql.base.conf'\n"));
        assert!(!includes_base("include 'other.conf'\n"));
    }

    #[test]
    fn history_files_give_the_last_switch() {
        let text = "1\t0/3000060\tno recovery target specified\n\n2\t0/40001C8\tno recovery target specified\n";
        assert_eq!(parse_history_tail(text), Some((Timeline(2), Lsn(0x0400_01C8))));
        assert_eq!(parse_history_tail("# comment only\n"), None);
        assert_eq!(parse_history_tail("x\t0/1\n"), None, "garbage is no answer, not a panic");
        assert_eq!(parse_history_tail("1\tnot-an-lsn\n"), None);
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("it's"), "'it''s'");
        assert_eq!(conninfo_quote("a'b"), "'a\\'b'");
        assert_eq!(sql_ident("a\"b"), "\"a\"\"b\"");
    }
}
