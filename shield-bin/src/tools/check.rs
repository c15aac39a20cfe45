//! `shield check CONFIG`: the preflight check. One line per check, `ok`, `WARN` or `FAIL`, and
//! for anything not ok what to do about it. Exit status 1 when something fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use crate::config::NodeConfig;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but not as it should in production.
    Warn,
    /// Shield will not work like this.
    Fail,
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// How it came out.
    pub level: Level,
    /// What was checked.
    pub what: String,
    /// What was found, or what to do.
    pub detail: String,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag}  {}: {}", self.what, self.detail)
    }
}

fn line(level: Level, what: &str, detail: impl Into<String>) -> Line {
    Line { level, what: what.to_owned(), detail: detail.into() }
}

/// The config's warnings: one line per key Shield accepts and does not act on, or adjusted.
pub fn config_warnings(cfg: &NodeConfig) -> Vec<Line> {
    cfg.warnings.iter().map(|w| line(Level::Warn, "config", w.clone())).collect()
}

/// Runs every check for `cfg`.
pub async fn run(cfg: &NodeConfig) -> Vec<Line> {
    let mut out = config_warnings(cfg);
    out.push(user());
    out.push(rest_api(cfg));
    out.extend(binaries(&cfg.pg.bin_dir));
    out.push(data_dir(&cfg.pg.data_dir));
    let view = match cfg.build_dcs() {
        Err(e) => {
            out.push(line(Level::Fail, "dcs", e));
            None
        }
        Ok(dcs) => match tokio::time::timeout(Duration::from_secs(5), dcs.read()).await {
            Ok(Ok(v)) => {
                let leader = v.leader_name().map_or("no leader".to_owned(), |l| format!("leader {l}"));
                let detail = if v.members.is_empty() && v.initialize.is_none() {
                    format!("reachable; cluster {} not bootstrapped yet", cfg.scope)
                } else {
                    format!("reachable; cluster {}: {} member(s), {leader}", cfg.scope, v.members.len())
                };
                out.push(line(Level::Ok, "dcs", detail));
                Some(v)
            }
            Ok(Err(e)) => {
                out.push(line(Level::Fail, "dcs", format!("{e} (check the DCS section's hosts, TLS and credentials)")));
                None
            }
            Err(_) => {
                out.push(line(Level::Fail, "dcs", "no answer within 5 s (is etcd/Consul running and reachable?)"));
                None
            }
        },
    };
    out.push(replication(cfg, view.as_ref()).await);
    if let Some(v) = &cfg.vip {
        out.extend(vip(v));
    }
    out.push(watchdog(cfg));
    out
}

/// Who can send the REST API's unsafe requests.
pub fn rest_api(cfg: &NodeConfig) -> Line {
    let what = "rest api";
    let loopback = cfg.api_listen.ip().is_loopback();
    let listed =
        !cfg.api_access.allowlist.is_empty() || !cfg.api_access.hosts.is_empty() || cfg.api_access.include_members;
    match (cfg.api_auth.is_some(), listed || loopback) {
        (true, true) => line(
            Level::Ok,
            what,
            format!("{}: unsafe requests need credentials and an allowed address", cfg.api_listen),
        ),
        (true, false) => line(
            Level::Warn,
            what,
            format!("{}: unsafe requests need credentials, from any address (set restapi.allowlist)", cfg.api_listen),
        ),
        (false, _) if loopback => line(
            Level::Warn,
            what,
            format!(
                "{}: no restapi.authentication: any local user may switch over, restart or reinitialize",
                cfg.api_listen
            ),
        ),
        (false, _) => line(
            Level::Fail,
            what,
            format!(
                "{}: no restapi.authentication: anyone who reaches this port may switch over, restart, reinitialize \
                 and change the cluster config (see docs/security.md)",
                cfg.api_listen
            ),
        ),
    }
}

fn user() -> Line {
    if nix::unistd::geteuid().is_root() {
        line(Level::Fail, "user", "running as root; run shield as the database's owner (it refuses root)")
    } else {
        let name = nix::unistd::User::from_uid(nix::unistd::geteuid()).ok().flatten().map(|u| u.name);
        line(Level::Ok, "user", name.unwrap_or_else(|| "unprivileged".to_owned()))
    }
}

fn binaries(bin_dir: &Path) -> Vec<Line> {
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for b in ["postgres", "pg_ctl", "initdb", "pg_basebackup", "pg_rewind", "pg_controldata"] {
        let p = bin_dir.join(b);
        let ok = std::fs::metadata(&p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            missing.push(b);
        }
    }
    if missing.is_empty() {
        let version =
            shield_db_postgres::process::command(bin_dir.join("postgres"), shield_db_postgres::process::Caps::Drop)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        match version {
            Some(v) => out.push(line(Level::Ok, "bin_dir", format!("{}: {v}", bin_dir.display()))),
            None => out.push(line(Level::Fail, "bin_dir", format!("{}/postgres --version fails", bin_dir.display()))),
        }
    } else {
        out.push(line(
            Level::Fail,
            "bin_dir",
            format!(
                "{}: missing {} (set postgresql.bin_dir to the server's bin directory)",
                bin_dir.display(),
                missing.join(", ")
            ),
        ));
    }
    out
}

fn data_dir(d: &Path) -> Line {
    let me = nix::unistd::geteuid().as_raw();
    match std::fs::metadata(d) {
        Ok(m) if !m.is_dir() => line(Level::Fail, "data_dir", format!("{} is not a directory", d.display())),
        Ok(m) if m.uid() != me => line(
            Level::Fail,
            "data_dir",
            format!("{} belongs to uid {}, not to this user (chown it to the database's user)", d.display(), m.uid()),
        ),
        Ok(m) if m.permissions().mode() & 0o027 != 0 => line(
            Level::Fail,
            "data_dir",
            format!(
                "{} has mode {:o}; PostgreSQL needs 0700 or 0750 (chmod 700)",
                d.display(),
                m.permissions().mode() & 0o777
            ),
        ),
        Ok(_) => {
            let pgv = std::fs::read_to_string(d.join("PG_VERSION")).map(|v| v.trim().to_owned());
            match pgv {
                Ok(v) => {
                    line(Level::Ok, "data_dir", format!("{}: PostgreSQL {v} data, owned by this user", d.display()))
                }
                Err(_) => line(Level::Ok, "data_dir", format!("{}: empty; Shield creates or clones it", d.display())),
            }
        }
        Err(_) => {
            let parent = d.parent().unwrap_or(Path::new("/"));
            if nix::unistd::access(parent, nix::unistd::AccessFlags::W_OK).is_ok() {
                line(Level::Ok, "data_dir", format!("{} does not exist yet; Shield creates it", d.display()))
            } else {
                line(
                    Level::Fail,
                    "data_dir",
                    format!("{} does not exist and {} is not writable by this user (create it, owned by this user, mode 0700)", d.display(), parent.display()),
                )
            }
        }
    }
}

async fn replication(cfg: &NodeConfig, view: Option<&shield_core::cluster::ClusterView>) -> Line {
    let what = "replication user";
    let Some(view) = view else { return line(Level::Warn, what, "not checked: the DCS did not answer") };
    let Some(leader) = view.leader_name().filter(|l| **l != cfg.name) else {
        return line(Level::Warn, what, "not checked: no other node leads the cluster yet");
    };
    let addr =
        view.members.get(leader).and_then(|m| m.data.conn_url.as_deref()).and_then(shield_db_postgres::host_port);
    let Some((host, port)) = addr else {
        return line(Level::Warn, what, format!("not checked: {leader} has no conn_url"));
    };
    let r = &cfg.pg.replication;
    let target = shield_db_postgres::pgwire::Target { host: &host, port, user: &r.username, password: &r.password };
    match shield_db_postgres::pgwire::identify_system(target, Duration::from_secs(5)).await {
        Ok(id) => line(
            Level::Ok,
            what,
            format!("{} connects for replication to {leader} at {host}:{port} (system {})", r.username, id.system_id),
        ),
        Err(e) => line(
            Level::Fail,
            what,
            format!(
                "{} cannot connect for replication to {leader} at {host}:{port}: {e} (check its password and the leader's pg_hba `replication` line for this host)",
                r.username
            ),
        ),
    }
}

/// Whether this process has capability `bit` in its effective set.
fn has_cap(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff =
        status.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    eff.is_some_and(|e| e & (1 << bit) != 0)
}

fn vip(v: &crate::backend::vip::VipSettings) -> Vec<Line> {
    let mut out = Vec::new();
    if Path::new("/sys/class/net").join(&v.interface).exists() {
        out.push(line(Level::Ok, "vip interface", format!("{} exists", v.interface)));
    } else {
        out.push(line(
            Level::Fail,
            "vip interface",
            format!("no interface {} on this host (vip.interface)", v.interface),
        ));
    }
    for (tool, pkg) in [("ip", "iproute2"), ("arping", "iputils-arping")] {
        if crate::backend::vip::find_tool(tool).is_none() {
            let level = if tool == "ip" { Level::Fail } else { Level::Warn };
            out.push(line(level, "vip tools", format!("`{tool}` is not installed (install {pkg})")));
        }
    }
    // CAP_NET_ADMIN is 12, CAP_NET_RAW 13.
    if has_cap(12) && has_cap(13) {
        out.push(line(Level::Ok, "vip capabilities", "CAP_NET_ADMIN and CAP_NET_RAW"));
    } else {
        out.push(line(
            Level::Warn,
            "vip capabilities",
            "this process lacks CAP_NET_ADMIN/CAP_NET_RAW; the shipped systemd unit grants them (AmbientCapabilities)",
        ));
    }
    out
}

fn watchdog(cfg: &NodeConfig) -> Line {
    use shield_core::WatchdogMode;
    let w = &cfg.watchdog;
    if w.mode == WatchdogMode::Off || w.driver == crate::backend::watchdog::Driver::Testing {
        return line(
            Level::Ok,
            "watchdog",
            format!("mode {:?}, driver {:?}: nothing to check", w.mode, w.driver).to_lowercase(),
        );
    }
    let usable =
        std::fs::metadata(&w.device).is_ok() && nix::unistd::access(&w.device, nix::unistd::AccessFlags::W_OK).is_ok();
    let level = match (usable, w.mode) {
        (true, _) => Level::Ok,
        (false, WatchdogMode::Required) => Level::Fail,
        (false, _) => Level::Warn,
    };
    let detail = if usable {
        format!("{} is writable", w.device.display())
    } else {
        format!(
            "{} is missing or not writable (modprobe softdog; a udev rule giving this user the device)",
            w.device.display()
        )
    };
    line(level, "watchdog", detail)
}
