//! The long tasks: start, stop, initdb, pg_basebackup, pg_rewind, following a new upstream.

use super::conf::{set_mode_0700, write_data_file};
use crate::process::Caps;
use crate::{files, host_port, io, process, Credentials, Postgres};
use shield_core::action::{StartAs, StopMode};
use shield_core::ports::{Database, ErrorKind, PortError};
use shield_core::{MemberName, Timeline};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn sql_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

impl Postgres {
    pub(crate) fn log_file(&self) -> PathBuf {
        let dir = self.data().parent().unwrap_or(Path::new("/tmp"));
        dir.join(format!("{}.postgres.log", self.data().file_name().and_then(|n| n.to_str()).unwrap_or("pg")))
    }

    /// Runs a server binary; Err carries its stderr.
    pub(crate) async fn run_bin(&self, bin: &str, args: &[String], timeout: Duration) -> Result<String, PortError> {
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
    pub(crate) fn member_addr(&self, m: &MemberName) -> Result<(String, u16), PortError> {
        let view = self.cluster.lock().map_err(|_| io("cluster view", "poisoned"))?;
        let url = view.members.get(m).and_then(|x| x.data.conn_url.clone());
        url.as_deref().and_then(host_port).ok_or_else(|| {
            PortError::new(ErrorKind::Unreachable, format!("member {m} has no usable conn_url in the DCS"))
        })
    }

    pub(crate) async fn start(&self, how: &StartAs) -> Result<(), PortError> {
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

    pub(crate) async fn stop_now(&self, mode: StopMode) -> Result<(), PortError> {
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

    pub(crate) async fn bootstrap(&self) -> Result<(), PortError> {
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

    pub(crate) async fn clone_from(&self, source: &MemberName) -> Result<(), PortError> {
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

    pub(crate) async fn rewind(&self, source: &MemberName) -> Result<(), PortError> {
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

    /// Asks for an immediate checkpoint after a promotion, in the background, as Patroni does:
    /// the one PostgreSQL starts itself is spread over `checkpoint_completion_target`, and until
    /// a checkpoint on the new timeline ends, `pg_control` names the old timeline and pg_rewind
    /// refuses to rewind the old primary from this one. The member key says
    /// `checkpoint_after_promote: false` until then. A failure here only means waiting for the
    /// server's own checkpoint.
    pub(crate) async fn checkpoint_after_promote(&self) {
        match self.connect_with(Some("-c statement_timeout=0")).await {
            Ok(c) => {
                tokio::spawn(async move {
                    if let Err(e) = c.batch_execute("CHECKPOINT").await {
                        tracing::warn!(error = %e, "the checkpoint after promotion failed; waiting for the server's own");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot ask for a checkpoint after promotion"),
        }
    }

    pub(crate) async fn follow(&self, upstream: &MemberName) -> Result<(), PortError> {
        self.write_pgpass()?;
        self.write_config(Some(upstream))?;
        let c = self.connect().await?;
        c.batch_execute("SELECT pg_reload_conf()").await.map_err(|e| io("reload", e))
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
    pub(crate) async fn skip_reserved_timelines(&self, target: Timeline) -> Result<(), PortError> {
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
