//! `switchover` and `failover` (prompts, candidate checks, scheduled switchovers) and
//! `flush ... switchover`.

use super::commands::{members_leader_first, name, now_utc, parse_schedule, QUICK, R};
use super::list::print_table;
use super::prompt::{ask, confirm};
use super::Ctx;
use serde_json::json;
use shield_core::cluster::{ClusterView, FailoverRequest};
use shield_core::ports::DcsKey;
use shield_core::{MemberName, Revision};
use std::time::{Duration, Instant};

/// Members that may be promoted: not the leader, not tagged nofailover.
fn candidates(v: &ClusterView) -> Vec<MemberName> {
    v.members.values().filter(|m| !v.is_leader(&m.name) && m.data.tags.can_promote()).map(|m| m.name.clone()).collect()
}

fn quoted_list(names: &[MemberName]) -> String {
    let items: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", items.join(", "))
}

pub(crate) async fn switchover(
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
    let candidate = switchover_candidate(&c, &current, &cands, candidate, force)?;
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
    request_switchover(ctx, &c, &v, &current, candidate, at.as_ref()).await?;
    if at.is_none() {
        print_table(&c, &ctx.read(&c).await?);
    }
    Ok(())
}

/// The switchover target: as given, asked for (blank for any), or none with `force`; it must be
/// a candidate other than the leader.
fn switchover_candidate(
    c: &str,
    current: &MemberName,
    cands: &[MemberName],
    candidate: Option<String>,
    force: bool,
) -> Result<Option<MemberName>, String> {
    let candidate = match candidate {
        Some(x) => Some(x),
        None if force => None,
        None => Some(ask(&format!("Candidate {}", quoted_list(cands)), Some(""))?).filter(|s| !s.is_empty()),
    };
    let candidate = candidate.map(|x| name(&x)).transpose()?;
    if let Some(x) = &candidate {
        if x == current {
            return Err("Switchover target and source are the same".into());
        }
        if !cands.contains(x) {
            return Err(format!("Member {x} does not exist in cluster {c} or is tagged as nofailover"));
        }
    }
    Ok(candidate)
}

/// Asks the leader's REST API for the switchover; if it cannot be reached, writes the failover
/// key and (unless scheduled) waits for the new leader.
async fn request_switchover(
    ctx: &Ctx,
    c: &str,
    v: &ClusterView,
    current: &MemberName,
    candidate: Option<MemberName>,
    at: Option<&String>,
) -> R {
    let mut body = json!({ "leader": current.as_str() });
    if let Some(x) = &candidate {
        body["candidate"] = json!(x.as_str());
    }
    if let Some(t) = at {
        body["scheduled_at"] = json!(t);
    }
    match ctx.rest(v, current, "POST", "/switchover", Some(&body), Duration::from_secs(45)).await {
        Ok(a) if a.status == 200 || a.status == 202 => {
            println!("{} {}", now_utc().format("%Y-%m-%d %H:%M:%S.%6f"), a.body.trim());
        }
        Ok(a) => return Err(format!("Switchover failed, details: {}, {}", a.status, a.body.trim())),
        Err(e) => {
            println!("Could not switchover using the REST API ({e}), falling back to DCS");
            let req = FailoverRequest {
                leader: Some(current.clone()),
                member: candidate,
                scheduled_at: at.map(|t| (0, t.clone())),
                revision: Revision(0),
            };
            ctx.dcs(c)?
                .write_failover(&req, v.failover_revision)
                .await
                .map_err(|e| format!("writing the failover key failed: {e}"))?;
            println!("Switchover request written to the DCS; the leader acts on it in its next cycle");
            if at.is_none() {
                wait_for_new_leader(ctx, c, current, Duration::from_secs(30)).await?;
            }
        }
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

pub(crate) async fn failover(ctx: &Ctx, cluster: Option<&str>, candidate: Option<String>, force: bool) -> R {
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

pub(crate) async fn flush_switchover(ctx: &Ctx, c: &str) -> R {
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
