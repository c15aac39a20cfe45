//! The commands themselves.

use super::edit::edit_config;
use super::list::{list, query, remove};
use super::members::{flush_restart, reinit, reload, restart, RestartOpts};
use super::pause::pause;
use super::prompt::ask;
use super::render::{self, Format};
use super::switch::{failover, flush_switchover, switchover};
use super::{Command, Ctx};
use serde_json::{json, Value};
use shield_core::cluster::ClusterView;
use shield_core::MemberName;
use std::time::Duration;

pub(crate) type R = Result<(), String>;

/// REST calls that answer at once.
pub(crate) const QUICK: Duration = Duration::from_secs(10);

pub(super) async fn run(ctx: &Ctx, cmd: Command) -> R {
    match cmd {
        Command::List { clusters, extended, timestamp, format, watch_default, watch } => {
            let clusters = if clusters.is_empty() { vec![ctx.cluster(None)?] } else { clusters };
            let every = watch.or(watch_default.then_some(2.0));
            list(ctx, &clusters, extended, timestamp, format, every, false).await
        }
        Command::Topology { clusters, watch_default, watch } => {
            let clusters = if clusters.is_empty() { vec![ctx.cluster(None)?] } else { clusters };
            list(ctx, &clusters, false, false, Format::Pretty, watch.or(watch_default.then_some(2.0)), true).await
        }
        Command::History { cluster, format } => {
            let c = ctx.cluster(cluster.as_deref())?;
            let v = ctx.read_existing(&c).await?;
            println!("{}", render::history(&v.history, format));
            Ok(())
        }
        Command::ShowConfig { cluster } => {
            let c = ctx.cluster(cluster.as_deref())?;
            let v = ctx.read_existing(&c).await?;
            let cfg = v.config.as_ref().map_or(json!({}), |(c, _)| c.to_json());
            print!("{}", yaml(&cfg));
            Ok(())
        }
        Command::Pause { cluster, wait } => pause(ctx, cluster.as_deref(), true, wait, false).await,
        Command::Resume { cluster, wait, force } => pause(ctx, cluster.as_deref(), false, wait, force).await,
        Command::Switchover { cluster, leader, candidate, scheduled, force } => {
            switchover(ctx, cluster.as_deref(), leader, candidate, scheduled, force).await
        }
        Command::Failover { cluster, leader, candidate, force } => {
            if leader.is_some() {
                eprintln!("Warning: failover with --leader is a switchover; use `shieldctl switchover`");
                return switchover(ctx, cluster.as_deref(), leader, candidate, None, force).await;
            }
            failover(ctx, cluster.as_deref(), candidate, force).await
        }
        Command::Restart { cluster, members, role, any, pg_version, pending, timeout, scheduled, force } => {
            let o = RestartOpts { role, any, pg_version, pending, timeout, scheduled, force };
            restart(ctx, &cluster, &members, o).await
        }
        Command::Reinit { cluster, members, from_leader, force, wait } => {
            reinit(ctx, &cluster, members, from_leader, force, wait).await
        }
        Command::Reload { cluster, members, role, force } => reload(ctx, &cluster, &members, &role, force).await,
        Command::Flush { cluster, mut rest, role, force } => {
            let target = rest.pop().unwrap_or_default();
            match target.as_str() {
                "restart" => flush_restart(ctx, &cluster, &rest, &role, force).await,
                "switchover" if rest.is_empty() => flush_switchover(ctx, &cluster).await,
                "switchover" => Err("flush switchover takes no member names".into()),
                other => Err(format!("flush: {other:?} is not restart or switchover")),
            }
        }
        Command::EditConfig { cluster, set, pg, apply, replace, quiet, force } => {
            let c = ctx.cluster(cluster.as_deref())?;
            edit_config(ctx, &c, &set, &pg, apply.as_deref(), replace.as_deref(), quiet, force).await
        }
        Command::Remove { cluster, format, force } => remove(ctx, &cluster, format, force).await,
        Command::Dsn { cluster, role, member } => {
            let c = ctx.cluster(cluster.as_deref())?;
            let v = ctx.read_existing(&c).await?;
            let m = pick_member(&v, role.as_deref(), member.as_deref())?;
            let (host, port) = conn_addr(&v, &m)?;
            println!("host={host} port={port}");
            Ok(())
        }
        Command::Query { cluster, role, member, command, file, username, password, dbname, format, delimiter } => {
            let c = ctx.cluster(cluster.as_deref())?;
            let sql = match (command, file) {
                (Some(c), None) => c,
                (None, Some(f)) => std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?,
                (Some(_), Some(_)) => return Err("pass either -c SQL or --file FILE, not both".into()),
                (None, None) => return Err("nothing to run: pass -c SQL or --file FILE".into()),
            };
            let v = ctx.read_existing(&c).await?;
            let m = pick_member(&v, role.as_deref(), member.as_deref())?;
            let pw = if password { Some(ask("Password", None)?) } else { std::env::var("PGPASSWORD").ok() };
            let user = username.unwrap_or_else(|| "postgres".to_owned());
            query(&v, &m, &sql, &user, pw.as_deref(), &dbname, format, &delimiter).await
        }
        Command::Version { cluster, members } => {
            println!("shieldctl version {}", env!("CARGO_PKG_VERSION"));
            let c = ctx.cluster(cluster.as_deref())?;
            let v = ctx.read_existing(&c).await?;
            for m in select(&v, &c, &members, "any")? {
                match ctx.rest(&v, &m, "GET", "/patroni", None, QUICK).await {
                    Ok(a) => {
                        let s: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
                        let agent = if s["patroni"]["shield"] == json!(true) { "Shield" } else { "Patroni" };
                        let ver = s["patroni"]["shield_version"]
                            .as_str()
                            .or_else(|| s["patroni"]["version"].as_str())
                            .unwrap_or("?");
                        let pg = s["server_version"].as_u64().map(pg_version_text).unwrap_or_else(|| "?".into());
                        println!("{m}: {agent} {ver} PostgreSQL {pg}");
                    }
                    Err(e) => println!("{m}: failed to get version: {e}"),
                }
            }
            Ok(())
        }
    }
}

/// `150004` → `15.4`; `90624` → `9.6.24`.
pub(crate) fn pg_version_text(n: u64) -> String {
    if n >= 100_000 {
        format!("{}.{}", n / 10_000, n % 10_000)
    } else {
        format!("{}.{}.{}", n / 10_000, n / 100 % 100, n % 100)
    }
}

pub(crate) fn yaml(v: &Value) -> String {
    if v.as_object().is_some_and(serde_json::Map::is_empty) {
        return "{}\n".to_owned();
    }
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

pub(crate) fn now_utc() -> chrono::DateTime<chrono::Utc> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_nanos()).unwrap_or_default()
}

pub(crate) fn now_ms() -> i64 {
    now_utc().timestamp_millis()
}

/// Parses a schedule: `now` (`None`), RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` taken as UTC. Returns
/// the text to send, in RFC 3339.
pub(crate) fn parse_schedule(s: &str) -> Result<Option<String>, String> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(Some(t.to_rfc3339()));
    }
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(Some(t.and_utc().to_rfc3339()));
        }
    }
    Err(format!("{s:?} is not a time: use ISO 8601 (2026-11-25T17:06 or 2026-11-25T17:06:00+02:00) or now"))
}

pub(crate) fn name(s: &str) -> Result<MemberName, String> {
    MemberName::new(s).map_err(|e| format!("{s:?}: {e}"))
}

/// Members of `v` named in `names` (all when empty) with `role`.
pub(crate) fn select(v: &ClusterView, cluster: &str, names: &[String], role: &str) -> Result<Vec<MemberName>, String> {
    let with_role = render::members_with_role(v, role)?;
    let mut out = Vec::new();
    if names.is_empty() {
        out.extend(with_role.into_iter().cloned());
    } else {
        for n in names {
            let m = name(n)?;
            if !v.members.contains_key(&m) {
                return Err(format!("{m} is not a member of cluster {cluster}"));
            }
            if with_role.contains(&&m) {
                out.push(m);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("no members of cluster {cluster} match (role {role})"));
    }
    Ok(out)
}

fn pick_member(v: &ClusterView, role: Option<&str>, member: Option<&str>) -> Result<MemberName, String> {
    if let Some(m) = member {
        let m = name(m)?;
        return if v.members.contains_key(&m) { Ok(m) } else { Err(format!("{m} is not a member of the cluster")) };
    }
    let role = role.unwrap_or("leader");
    render::members_with_role(v, role)?
        .into_iter()
        .next()
        .cloned()
        .ok_or_else(|| format!("no member with role {role} in the cluster"))
}

pub(crate) fn conn_addr(v: &ClusterView, m: &MemberName) -> Result<(String, u16), String> {
    v.members
        .get(m)
        .and_then(|x| x.data.conn_url.as_deref())
        .and_then(shield_db_postgres::host_port)
        .ok_or_else(|| format!("member {m} publishes no usable conn_url"))
}

/// The leader first, then the other members: who to ask for cluster-wide changes.
pub(crate) fn members_leader_first(v: &ClusterView) -> Vec<MemberName> {
    let mut all: Vec<MemberName> = v.members.keys().cloned().collect();
    all.sort_by_key(|m| !v.is_leader(m));
    all
}
