//! The commands themselves.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shield_core::cluster::{ClusterView, FailoverRequest};
use shield_core::ports::{DcsKey, ErrorKind};
use shield_core::{DynamicConfig, MemberName, Revision};

use super::prompt::{ask, confirm};
use super::render::{self, Cell, Format, Grid};
use super::{Command, Ctx};
use crate::rest::admin::RESUME_REFUSED;

type R = Result<(), String>;

/// REST calls that answer at once.
const QUICK: Duration = Duration::from_secs(10);

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
fn pg_version_text(n: u64) -> String {
    if n >= 100_000 {
        format!("{}.{}", n / 10_000, n % 10_000)
    } else {
        format!("{}.{}.{}", n / 10_000, n / 100 % 100, n % 100)
    }
}

fn yaml(v: &Value) -> String {
    if v.as_object().is_some_and(serde_json::Map::is_empty) {
        return "{}\n".to_owned();
    }
    serde_yaml_ng::to_string(v).unwrap_or_default()
}

fn now_utc() -> chrono::DateTime<chrono::Utc> {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    chrono::DateTime::from_timestamp(d.as_secs() as i64, d.subsec_nanos()).unwrap_or_default()
}

fn now_ms() -> i64 {
    now_utc().timestamp_millis()
}

/// Parses a schedule: `now` (`None`), RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` taken as UTC. Returns
/// the text to send, in RFC 3339.
fn parse_schedule(s: &str) -> Result<Option<String>, String> {
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

fn name(s: &str) -> Result<MemberName, String> {
    MemberName::new(s).map_err(|e| format!("{s:?}: {e}"))
}

async fn list(
    ctx: &Ctx,
    clusters: &[String],
    extended: bool,
    timestamp: bool,
    format: Format,
    every: Option<f64>,
    topology: bool,
) -> R {
    let every = match every {
        Some(s) if (0.1..=86_400.0).contains(&s) => Some(Duration::from_secs_f64(s)),
        Some(s) => return Err(format!("-w {s}: the interval must be between 0.1 and 86400 seconds")),
        None => None,
    };
    loop {
        let mut out = String::new();
        if every.is_some() {
            out.push_str("\x1b[H\x1b[2J");
        }
        if timestamp {
            out.push_str(&now_utc().format("%Y-%m-%d %H:%M:%S UTC\n").to_string());
        }
        for c in clusters {
            let v = ctx.read(c).await?;
            out.push_str(&render::list(c, &v, extended, topology, format));
            out.push('\n');
        }
        print!("{out}");
        match every {
            None => return Ok(()),
            Some(d) => tokio::time::sleep(d).await,
        }
    }
}

fn print_table(cluster: &str, v: &ClusterView) {
    println!("{}", render::list(cluster, v, false, false, Format::Pretty));
}

/// Members of `v` named in `names` (all when empty) with `role`.
fn select(v: &ClusterView, cluster: &str, names: &[String], role: &str) -> Result<Vec<MemberName>, String> {
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

fn conn_addr(v: &ClusterView, m: &MemberName) -> Result<(String, u16), String> {
    v.members
        .get(m)
        .and_then(|x| x.data.conn_url.as_deref())
        .and_then(shield_db_postgres::host_port)
        .ok_or_else(|| format!("member {m} publishes no usable conn_url"))
}

/// The leader first, then the other members: who to ask for cluster-wide changes.
fn members_leader_first(v: &ClusterView) -> Vec<MemberName> {
    let mut all: Vec<MemberName> = v.members.keys().cloned().collect();
    all.sort_by_key(|m| !v.is_leader(m));
    all
}

/// shieldctl's refusal to resume, naming why (see [`ClusterView::resume_blocker`]).
fn resume_refused(why: &str) -> String {
    format!("{RESUME_REFUSED}{why}; use --force to resume anyway")
}

/// Whether `resume` may go ahead on the cluster as read: only while a running primary holds the
/// leader key, unless forced.
fn resume_check(v: &ClusterView, force: bool) -> R {
    match v.resume_blocker() {
        Some(why) if !force => Err(resume_refused(&why)),
        _ => Ok(()),
    }
}

async fn pause(ctx: &Ctx, cluster: Option<&str>, on: bool, wait: bool, force: bool) -> R {
    let c = ctx.cluster(cluster)?;
    let v = ctx.read_existing(&c).await?;
    let paused = v.config.as_ref().is_some_and(|(cfg, _)| cfg.pause);
    if on && paused {
        return Err("Cluster is already paused".into());
    }
    if !on && !paused {
        return Err("Cluster is not paused".into());
    }
    if !on {
        // Checked here too, so the rule holds whatever the members' REST API checks (a Patroni
        // member does not).
        resume_check(&v, force)?;
    }
    let body = json!({ "pause": if on { Value::Bool(true) } else { Value::Null } });
    // `force` travels as a query parameter: the config written stays free of it.
    let path = if force { "/config?force=true" } else { "/config" };
    let mut last = String::from("no member publishes an api_url");
    let mut done = false;
    for m in members_leader_first(&v) {
        match ctx.rest(&v, &m, "PATCH", path, Some(&body), QUICK).await {
            Ok(a) if a.status == 200 => {
                done = true;
                break;
            }
            Ok(a) if a.status == 401 || a.status == 403 => {
                return Err(format!("{m} refused the request (status {}): check ctl.authentication", a.status))
            }
            // The member saw the cluster change since our read: its reason, with our hint.
            Ok(a) if a.status == 409 && a.body.starts_with(RESUME_REFUSED) => {
                let rest = a.body.strip_prefix(RESUME_REFUSED).unwrap_or_default();
                let why = rest.split("; ").next().unwrap_or_default();
                return Err(resume_refused(why.trim()));
            }
            Ok(a) => last = format!("{m}: status {} ({})", a.status, a.body.trim()),
            Err(e) => last = e,
        }
    }
    if !done {
        return Err(format!("no member accepted the change: {last}"));
    }
    let word = if on { "paused" } else { "resumed" };
    if wait {
        println!("'{}' request sent, waiting until it is recognized by all nodes", if on { "pause" } else { "resume" });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = ctx.read(&c).await?;
            if v.members.values().all(|m| m.data.pause == on) {
                break;
            }
            if Instant::now() > deadline {
                let behind: Vec<String> =
                    v.members.values().filter(|m| m.data.pause != on).map(|m| m.name.to_string()).collect();
                return Err(format!("members {} did not report the change within 60 s", behind.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!("Success: cluster management is {word}");
    Ok(())
}

/// Members that may be promoted: not the leader, not tagged nofailover.
fn candidates(v: &ClusterView) -> Vec<MemberName> {
    v.members.values().filter(|m| !v.is_leader(&m.name) && m.data.tags.can_promote()).map(|m| m.name.clone()).collect()
}

fn quoted_list(names: &[MemberName]) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", items.join(", "))
}

async fn switchover(
    ctx: &Ctx,
    cluster: Option<&str>,
    leader: Option<String>,
    candidate: Option<String>,
    scheduled: Option<String>,
    force: bool,
) -> R {
    let c = ctx.cluster(cluster)?;
    let v = ctx.read_existing(&c).await?;
    let current = v.leader_name().cloned().ok_or("This cluster has no leader")?;
    let cands = candidates(&v);
    if cands.is_empty() {
        return Err("No candidates found to switchover to".into());
    }
    // The prompts, their order and their wording are Halo Shield's (the seed's transcript):
    // the questions first, then the topology, then the confirmation.
    let leader = match leader {
        Some(l) => l,
        None if force => current.to_string(),
        None => ask("Master", Some(current.as_str()))?,
    };
    if leader != current.as_str() {
        return Err(format!("Member {leader} is not the leader of cluster {c}"));
    }
    let candidate = match candidate {
        Some(x) => Some(x),
        None if force => None,
        None => Some(ask(&format!("Candidate {}", quoted_list(&cands)), Some(""))?).filter(|s| !s.is_empty()),
    };
    let candidate = candidate.map(|x| name(&x)).transpose()?;
    if let Some(x) = &candidate {
        if x == &current {
            return Err("Switchover target and source are the same".into());
        }
        if !cands.contains(x) {
            return Err(format!("Member {x} does not exist in cluster {c} or is tagged as nofailover"));
        }
    }
    let when = match scheduled {
        Some(s) => s,
        None if force => "now".to_owned(),
        None => {
            let example = (now_utc() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
            ask(&format!("When should the switchover take place (e.g. {example} ) "), Some("now"))?
        }
    };
    let at = parse_schedule(&when)?;
    let paused = v.config.as_ref().is_some_and(|(cfg, _)| cfg.pause);
    if at.is_some() && paused {
        return Err("Can't schedule switchover in the paused state".into());
    }
    if !force {
        println!("Current cluster topology");
        print_table(&c, &v);
        match &at {
            Some(t) => confirm(&format!(
                "Are you sure you want to schedule switchover of cluster {c} at {t}, demoting current master {current}?"
            ))?,
            None => confirm(&format!(
                "Are you sure you want to switchover cluster {c}, demoting current master {current}?"
            ))?,
        }
    }
    let mut body = json!({ "leader": current.as_str() });
    if let Some(x) = &candidate {
        body["candidate"] = json!(x.as_str());
    }
    if let Some(t) = &at {
        body["scheduled_at"] = json!(t);
    }
    match ctx.rest(&v, &current, "POST", "/switchover", Some(&body), Duration::from_secs(45)).await {
        Ok(a) if a.status == 200 || a.status == 202 => {
            println!("{} {}", now_utc().format("%Y-%m-%d %H:%M:%S.%6f"), a.body.trim());
        }
        Ok(a) => return Err(format!("Switchover failed, details: {}, {}", a.status, a.body.trim())),
        Err(e) => {
            println!("Could not switchover using the REST API ({e}), falling back to DCS");
            let req = FailoverRequest {
                leader: Some(current.clone()),
                member: candidate.clone(),
                scheduled_at: at.as_ref().map(|t| (0, t.clone())),
                revision: Revision(0),
            };
            ctx.dcs(&c)?
                .write_failover(&req, v.failover_revision)
                .await
                .map_err(|e| format!("writing the failover key failed: {e}"))?;
            println!("Switchover request written to the DCS; the leader acts on it in its next cycle");
            if at.is_none() {
                wait_for_new_leader(ctx, &c, &current, Duration::from_secs(30)).await?;
            }
        }
    }
    if at.is_none() {
        print_table(&c, &ctx.read(&c).await?);
    }
    Ok(())
}

async fn wait_for_new_leader(ctx: &Ctx, c: &str, old: &MemberName, limit: Duration) -> R {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(v) = ctx.read(c).await {
            if v.leader_name().is_some_and(|l| l != old) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("{old} is still the leader after {} s", limit.as_secs()))
}

async fn failover(ctx: &Ctx, cluster: Option<&str>, candidate: Option<String>, force: bool) -> R {
    let c = ctx.cluster(cluster)?;
    let v = ctx.read_existing(&c).await?;
    let cands = candidates(&v);
    let candidate = match candidate {
        Some(x) => x,
        None if force => return Err("Failover could be performed only to a specific candidate".into()),
        None => ask(&format!("Candidate {}", quoted_list(&cands)), Some(""))?,
    };
    if candidate.is_empty() {
        return Err("Failover could be performed only to a specific candidate".into());
    }
    let candidate = name(&candidate)?;
    if !cands.contains(&candidate) {
        return Err(format!("Member {candidate} does not exist in cluster {c} or is tagged as nofailover"));
    }
    let sync_mode = v.config.as_ref().is_some_and(|(cfg, _)| cfg.synchronous_mode);
    let is_sync = v.sync.as_ref().is_some_and(|s| s.sync_standby.contains(&candidate));
    if !force {
        println!("Current cluster topology");
        print_table(&c, &v);
        if sync_mode && !is_sync {
            confirm(&format!("Are you sure you want to failover to the asynchronous node {candidate}?"))?;
        }
        match v.leader_name() {
            Some(l) => {
                confirm(&format!("Are you sure you want to failover cluster {c}, demoting current master {l}?"))?
            }
            None => confirm(&format!("Are you sure you want to failover cluster {c}?"))?,
        }
    }
    let body = json!({ "candidate": candidate.as_str() });
    let ask_member = v.leader_name().cloned().unwrap_or_else(|| candidate.clone());
    match ctx.rest(&v, &ask_member, "POST", "/failover", Some(&body), Duration::from_secs(45)).await {
        Ok(a) if a.status == 200 => println!("{} {}", now_utc().format("%Y-%m-%d %H:%M:%S.%6f"), a.body.trim()),
        Ok(a) => return Err(format!("Failover failed, details: {}, {}", a.status, a.body.trim())),
        Err(e) => {
            println!("Could not failover using the REST API ({e}), falling back to DCS");
            let req = FailoverRequest {
                leader: None,
                member: Some(candidate.clone()),
                scheduled_at: None,
                revision: Revision(0),
            };
            ctx.dcs(&c)?
                .write_failover(&req, v.failover_revision)
                .await
                .map_err(|e| format!("writing the failover key failed: {e}"))?;
            println!("Failover request written to the DCS");
        }
    }
    print_table(&c, &ctx.read(&c).await?);
    Ok(())
}

struct RestartOpts {
    role: String,
    any: bool,
    pg_version: Option<String>,
    pending: bool,
    timeout: Option<u64>,
    scheduled: Option<String>,
    force: bool,
}

async fn restart(ctx: &Ctx, c: &str, names: &[String], o: RestartOpts) -> R {
    let v = ctx.read_existing(c).await?;
    let mut members = select(&v, c, names, &o.role)?;
    if o.any {
        let i = (now_ms().unsigned_abs() as usize) % members.len();
        members = vec![members.swap_remove(i)];
    }
    if !o.force {
        print_table(c, &v);
    }
    let when = match o.scheduled {
        Some(s) => s,
        None if o.force => "now".to_owned(),
        None => {
            let example = (now_utc() + chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M");
            ask(&format!("When should the restart take place (e.g. {example}) "), Some("now"))?
        }
    };
    let at = parse_schedule(&when)?;
    let list: Vec<String> = members.iter().map(ToString::to_string).collect();
    if !o.force {
        match &at {
            Some(t) => {
                confirm(&format!("Are you sure you want to schedule restart of members {} at {t}?", list.join(", ")))?
            }
            None => confirm(&format!("Are you sure you want to restart members {}?", list.join(", ")))?,
        }
    }
    let version = match o.pg_version {
        Some(x) => Some(x),
        None if o.force => None,
        None => Some(ask("Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ", Some(""))?)
            .filter(|s| !s.is_empty()),
    };
    let mut body = json!({});
    if o.pending {
        body["restart_pending"] = json!(true);
    }
    if let Some(x) = &version {
        body["postgres_version"] = json!(x);
    }
    if let Some(t) = o.timeout {
        body["timeout"] = json!(t);
    }
    if let Some(t) = &at {
        body["schedule"] = json!(t);
    }
    let wait = Duration::from_secs(o.timeout.unwrap_or(60) + 10);
    let mut failed = 0;
    for m in &members {
        match ctx.rest(&v, m, "POST", "/restart", Some(&body), wait).await {
            Ok(a) if a.status == 200 => println!("Success: restart on member {m}"),
            Ok(a) if a.status == 202 => println!("Success: restart scheduled on member {m}"),
            Ok(a) if a.status == 409 => {
                failed += 1;
                println!("Failed: another restart is already scheduled on member {m}");
            }
            Ok(a) => {
                failed += 1;
                println!("Failed: restart for member {m}, status code={}, ({})", a.status, a.body.trim());
            }
            Err(e) => {
                failed += 1;
                println!("Failed: restart for member {m}: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} restarts failed", members.len()));
    }
    Ok(())
}

async fn reinit(ctx: &Ctx, c: &str, names: Vec<String>, from_leader: bool, force: bool, wait: bool) -> R {
    let v = ctx.read_existing(c).await?;
    let names = if names.is_empty() {
        if force {
            return Err("name the members to reinitialize".into());
        }
        let replicas: Vec<MemberName> = v.members.keys().filter(|m| !v.is_leader(m)).cloned().collect();
        let shown: Vec<String> = replicas.iter().map(ToString::to_string).collect();
        vec![ask(&format!("Which member do you want to reinitialize [{}]? ", shown.join(", ")), Some(""))?]
    } else {
        names
    };
    let members = select(&v, c, &names, "any")?;
    if let Some(l) = members.iter().find(|m| v.is_leader(m)) {
        return Err(format!("{l} is the leader; reinitialize works on replicas only"));
    }
    if !force {
        let list: Vec<String> = members.iter().map(ToString::to_string).collect();
        confirm(&format!("Are you sure you want to reinitialize members {}?", list.join(", ")))?;
    }
    let mut started = Vec::new();
    // A member is done once it runs and streams under a new postmaster: its status may still
    // show the old server for a moment after the request was taken.
    let mut before = std::collections::BTreeMap::new();
    for m in &members {
        if let Ok(a) = ctx.rest(&v, m, "GET", "/patroni", None, QUICK).await {
            let s: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
            before.insert(m.clone(), s["postmaster_start_time"].clone());
        }
    }
    for m in &members {
        let body = json!({ "force": force, "from_leader": from_leader });
        match ctx.rest(&v, m, "POST", "/reinitialize", Some(&body), QUICK).await {
            Ok(a) if a.status == 200 => {
                println!("Success: reinitialize for member {m}");
                started.push(m.clone());
            }
            Ok(a) => return Err(format!("reinitialize for member {m}, status code={}, ({})", a.status, a.body.trim())),
            Err(e) => return Err(format!("reinitialize for member {m}: {e}")),
        }
    }
    if wait {
        for m in &started {
            println!("Waiting for reinitialize to complete on: {m}");
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut left = started.clone();
        // Give the node one cycle to start the task before judging its state.
        tokio::time::sleep(Duration::from_secs(2)).await;
        while !left.is_empty() {
            if Instant::now() > deadline {
                return Err(format!("reinitialize did not complete within 600 s on: {left:?}"));
            }
            let mut still = Vec::new();
            for m in left {
                let done = match ctx.rest(&v, &m, "GET", "/patroni", None, QUICK).await {
                    Ok(a) => {
                        let s: Value = serde_json::from_str(&a.body).unwrap_or(Value::Null);
                        let restarted = before.get(&m).is_none_or(|b| *b != s["postmaster_start_time"]);
                        restarted && s["state"] == "running" && s["replication_state"] == "streaming"
                    }
                    Err(_) => false,
                };
                if done {
                    println!("Reinitialize is completed on: {m}");
                } else {
                    still.push(m);
                }
            }
            left = still;
            if !left.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}

async fn reload(ctx: &Ctx, c: &str, names: &[String], role: &str, force: bool) -> R {
    let v = ctx.read_existing(c).await?;
    let members = select(&v, c, names, role)?;
    // The nodes act on a reload in their next cycle: loop_wait as the cluster runs with it.
    let loop_wait_ms =
        v.config.as_ref().map_or(DynamicConfig::default().timing.loop_wait_ms, |(cfg, _)| cfg.timing.loop_wait_ms);
    if !force {
        let list: Vec<String> = members.iter().map(ToString::to_string).collect();
        confirm(&format!("Are you sure you want to reload members {}?", list.join(", ")))?;
    }
    let mut failed = 0;
    for m in &members {
        match ctx.rest(&v, m, "POST", "/reload", None, QUICK).await {
            Ok(a) if a.status == 202 || a.status == 200 => println!(
                "Reload request received for member {m} and will be processed within {} seconds",
                loop_wait_ms.div_ceil(1000)
            ),
            Ok(a) => {
                failed += 1;
                println!("Failed: reload for member {m}, status code={}, ({})", a.status, a.body.trim());
            }
            Err(e) => {
                failed += 1;
                println!("Failed: reload for member {m}: {e}");
            }
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} reloads failed", members.len()));
    }
    Ok(())
}

async fn flush_restart(ctx: &Ctx, c: &str, names: &[String], role: &str, force: bool) -> R {
    let v = ctx.read_existing(c).await?;
    let members = select(&v, c, names, role)?;
    if !force {
        let list: Vec<String> = members.iter().map(ToString::to_string).collect();
        confirm(&format!("Are you sure you want to flush scheduled restarts of members {}?", list.join(", ")))?;
    }
    for m in &members {
        match ctx.rest(&v, m, "DELETE", "/restart", None, QUICK).await {
            Ok(a) if a.status == 200 => println!("Success: flush scheduled restart for member {m}"),
            Ok(a) if a.status == 404 => println!("No scheduled restart on member {m}"),
            Ok(a) => println!(
                "Failed: flush scheduled restart for member {m}, status code={}, ({})",
                a.status,
                a.body.trim()
            ),
            Err(e) => return Err(format!("flush scheduled restart for member {m}: {e}")),
        }
    }
    Ok(())
}

async fn flush_switchover(ctx: &Ctx, c: &str) -> R {
    let v = ctx.read_existing(c).await?;
    let scheduled = v.failover.as_ref().is_some_and(|f| f.scheduled_at.is_some());
    let Some(rev) = v.failover_revision.filter(|_| scheduled) else {
        println!("No pending scheduled switchover");
        return Ok(());
    };
    for m in members_leader_first(&v) {
        if let Ok(a) = ctx.rest(&v, &m, "DELETE", "/switchover", None, QUICK).await {
            if a.status == 200 || a.status == 404 {
                println!("Success: scheduled switchover deleted");
                return Ok(());
            }
        }
    }
    ctx.dcs(c)?
        .delete_cas(DcsKey::Failover, rev)
        .await
        .map_err(|e| format!("clearing the failover key failed: {e}"))?;
    println!("Success: scheduled switchover deleted");
    Ok(())
}

/// Sets `path` (dotted) in `root` to `value`; `null` removes the key.
fn set_path(root: &mut Value, path: &str, value: Value) -> R {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(format!("{path:?} is not a key path like ttl or postgresql.parameters.work_mem"));
    }
    let mut cur = root;
    for p in &parts[..parts.len() - 1] {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Some(obj) = cur.as_object_mut() else { return Err(format!("{path}: not an object")) };
        cur = obj.entry((*p).to_owned()).or_insert_with(|| json!({}));
        if !cur.is_object() {
            *cur = json!({});
        }
    }
    let Some(obj) = cur.as_object_mut() else { return Err(format!("{path}: not an object")) };
    let last = parts[parts.len() - 1].to_owned();
    if value.is_null() {
        obj.remove(&last);
    } else {
        obj.insert(last, value);
    }
    Ok(())
}

/// A `-s`/`-p` value as YAML would read it (`30` a number, `true` a bool, `null` removal).
fn scalar(v: &str) -> Value {
    serde_yaml_ng::from_str::<Value>(v).ok().filter(|x| !x.is_object() && !x.is_array()).unwrap_or_else(|| json!(v))
}

fn read_yaml_source(src: &str) -> Result<Value, String> {
    let text = if src == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|e| format!("stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(src).map_err(|e| format!("{src}: {e}"))?
    };
    let v: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{src}: not valid YAML: {e}"))?;
    if v.is_null() {
        return Ok(json!({}));
    }
    if !v.is_object() {
        return Err(format!("{src}: the config must be a mapping"));
    }
    Ok(v)
}

fn edit_in_editor(current: &str) -> Result<Value, String> {
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".to_owned());
    let dir = std::env::temp_dir().join(format!("shieldctl-{}", std::process::id()));
    // A new owner-only directory, never one another user created under the predictable name
    // (they could change the config between the editor and the DCS write).
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .map_err(|e| format!("{}: {e} (remove it if no shieldctl is running)", dir.display()))?;
    let file = dir.join("config.yaml");
    shield_db_postgres::files::write_secret(&file, current.as_bytes())
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status()
        .map_err(|e| format!("cannot start the editor {editor:?}: {e}"))?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()));
    let _ = std::fs::remove_dir_all(&dir);
    if !status.success() {
        return Err(format!("the editor {editor:?} exited with {status}; nothing changed"));
    }
    let v: Value = serde_yaml_ng::from_str(&text?).map_err(|e| format!("the edited config is not valid YAML: {e}"))?;
    Ok(if v.is_null() { json!({}) } else { v })
}

#[allow(clippy::too_many_arguments)] // one per command-line option
async fn edit_config(
    ctx: &Ctx,
    c: &str,
    set: &[String],
    pg: &[String],
    apply: Option<&str>,
    replace: Option<&str>,
    quiet: bool,
    force: bool,
) -> R {
    let v = ctx.read_existing(c).await?;
    // The stored JSON, not Shield's reading of it: the edit writes back exactly what changes.
    let (current, rev) = match &v.config {
        Some((cfg, rev)) => (v.config_json.clone().unwrap_or_else(|| cfg.to_json()), Some(*rev)),
        None => (json!({}), None),
    };
    let before = yaml(&current);
    let mut new = current.clone();
    let interactive = set.is_empty() && pg.is_empty() && apply.is_none() && replace.is_none();
    if let Some(src) = replace {
        new = read_yaml_source(src)?;
    }
    if let Some(src) = apply {
        crate::rest::admin::merge(&mut new, &read_yaml_source(src)?);
    }
    for kv in set {
        let (k, val) = kv.split_once('=').ok_or_else(|| format!("-s {kv:?}: expected KEY=VALUE"))?;
        set_path(&mut new, k.trim(), scalar(val.trim()))?;
    }
    for kv in pg {
        let (k, val) = kv.split_once('=').ok_or_else(|| format!("-p {kv:?}: expected PARAM=VALUE"))?;
        set_path(&mut new, &format!("postgresql.parameters.{}", k.trim()), scalar(val.trim()))?;
    }
    if interactive {
        new = edit_in_editor(&before)?;
    }
    if let Some(refused) = crate::rest::command_params::refusal(&current, &new, &ctx.cfg.command_params) {
        return Err(refused);
    }
    // Refuse what the nodes could not use, naming the key, before anything is written.
    let parsed = DynamicConfig::from_json(new.clone()).map_err(|e| format!("the new config is invalid: {e}"))?;
    // Turning pause off here is a resume, under the same rule; forcing it is `resume --force`'s.
    let was_paused = v.config.as_ref().is_some_and(|(cfg, _)| cfg.pause);
    if let Some(why) = v.resume_blocker().filter(|_| was_paused && !parsed.pause) {
        return Err(format!("{RESUME_REFUSED}{why}; use `shieldctl resume --force` to resume anyway"));
    }
    let checked = new;
    let after = yaml(&checked);
    if after == before {
        println!("Not changed");
        return Ok(());
    }
    if !quiet {
        let diff = similar::TextDiff::from_lines(&before, &after);
        print!("{}", diff.unified_diff().context_radius(3).header("", ""));
    }
    if !force {
        confirm("Apply these changes?")?;
    }
    match ctx.dcs(c)?.write_cas(DcsKey::Config, &checked.to_string(), rev).await {
        Ok(()) => {
            println!("Configuration changed");
            Ok(())
        }
        Err(e) if e.kind == ErrorKind::CompareFailed => {
            Err("Config modification aborted due to concurrent changes".into())
        }
        Err(e) => Err(format!("writing the config failed: {e}")),
    }
}

async fn remove(ctx: &Ctx, c: &str, format: Format, force: bool) -> R {
    let v = ctx.read_existing(c).await?;
    if !force {
        println!("{}", render::list(c, &v, false, false, format));
        let typed = ask("Please confirm the cluster name to remove", None)?;
        if typed != c {
            return Err("Cluster names specified do not match".into());
        }
        let typed = ask(
            &format!("You are about to remove all information in DCS for {c}, please type: \"Yes I am aware\""),
            None,
        )?;
        if typed != "Yes I am aware" {
            return Err("You did not exactly type \"Yes I am aware\"".into());
        }
        if let Some(l) = v.leader_name() {
            let typed = ask("This cluster currently is healthy. Please specify the leader name to continue", None)?;
            if typed != l.as_str() {
                return Err("You did not specify the current leader of the cluster".into());
            }
        }
    }
    ctx.dcs(c)?.delete_cluster().await.map_err(|e| format!("removing cluster {c} failed: {e}"))?;
    println!("Cluster {c} removed from the DCS");
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one per command-line option
async fn query(
    v: &ClusterView,
    m: &MemberName,
    sql: &str,
    user: &str,
    password: Option<&str>,
    dbname: &str,
    format: Format,
    delimiter: &str,
) -> R {
    let (host, port) = conn_addr(v, m)?;
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&host).port(port).user(user).dbname(dbname).connect_timeout(Duration::from_secs(5));
    if let Some(p) = password {
        cfg.password(p);
    }
    let (client, conn) = tokio::time::timeout(Duration::from_secs(10), cfg.connect(tokio_postgres::NoTls))
        .await
        .map_err(|_| format!("{m} ({host}:{port}): no answer within 10 s"))?
        .map_err(|e| format!("{m} ({host}:{port}): {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let msgs = client.simple_query(sql).await.map_err(|e| format!("{m}: {e}"))?;
    let mut grid = Grid::default();
    for msg in msgs {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = msg {
            if grid.columns.is_empty() {
                grid.columns = r.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            grid.rows.push(
                (0..r.len())
                    .map(|i| r.get(i).map_or(Cell::Text("NULL".into()), |s| Cell::Text(s.to_owned())))
                    .collect(),
            );
        }
    }
    if grid.columns.is_empty() {
        return Ok(());
    }
    let out = grid.render(format, &[]);
    if format == Format::Tsv && delimiter != "\t" {
        println!("{}", out.replace('\t', delimiter));
    } else {
        println!("{out}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(entries: &[(&str, &str)]) -> ClusterView {
        let kv: Vec<_> = entries
            .iter()
            .map(|(k, v)| shield_core::cluster::KvEntry {
                key: (*k).into(),
                value: v.as_bytes().to_vec(),
                revision: Revision(1),
                owner: None,
            })
            .collect();
        ClusterView::from_entries(Revision(1), &kv)
    }

    #[test]
    fn resume_needs_a_running_primary_holding_the_leader_key_unless_forced() {
        let cfg = ("config", r#"{"pause":true}"#);
        let primary = ("members/a", r#"{"role":"primary","state":"running"}"#);
        assert_eq!(resume_check(&view(&[cfg, ("leader", "a"), primary]), false), Ok(()));

        let no_leader = view(&[cfg, primary]);
        assert_eq!(
            resume_check(&no_leader, false),
            Err("refusing to resume: no member holds the leader key; use --force to resume anyway".into())
        );
        assert_eq!(resume_check(&no_leader, true), Ok(()));

        let stopped = view(&[cfg, ("leader", "a"), ("members/a", r#"{"role":"primary","state":"stopped"}"#)]);
        let err = resume_check(&stopped, false).expect_err("refused");
        assert!(err.contains("held by a, whose member key says it is not running as primary"), "{err}");
        assert!(err.contains("state: stopped") && err.ends_with("use --force to resume anyway"), "{err}");
        assert_eq!(resume_check(&stopped, true), Ok(()));
    }

    #[test]
    fn schedules() {
        assert_eq!(parse_schedule("now"), Ok(None));
        assert_eq!(parse_schedule(""), Ok(None));
        assert_eq!(parse_schedule("2026-11-25T17:06"), Ok(Some("2026-11-25T17:06:00+00:00".into())));
        assert_eq!(parse_schedule("2026-11-25T17:06:00+02:00"), Ok(Some("2026-11-25T17:06:00+02:00".into())));
        assert!(parse_schedule("tomorrow").is_err());
    }

    #[test]
    fn key_paths_set_and_remove() {
        let mut c = json!({"ttl": 4, "postgresql": {"parameters": {"a": "1"}}});
        set_path(&mut c, "postgresql.parameters.b", scalar("2")).expect("set");
        set_path(&mut c, "postgresql.parameters.a", scalar("null")).expect("remove");
        set_path(&mut c, "pause", scalar("true")).expect("set");
        assert_eq!(c, json!({"ttl": 4, "pause": true, "postgresql": {"parameters": {"b": 2}}}));
        assert!(set_path(&mut c, "a..b", json!(1)).is_err());
        assert_eq!(scalar("64MB"), json!("64MB"));
    }

    #[test]
    fn version_numbers_print_as_postgresql_does() {
        assert_eq!(pg_version_text(150004), "15.4");
        assert_eq!(pg_version_text(90624), "9.6.24");
    }
}
