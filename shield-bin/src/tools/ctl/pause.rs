//! `pause` and `resume`, with Patroni's refusal to resume without a running primary.

use super::commands::{members_leader_first, QUICK, R};
use super::Ctx;
use crate::rest::config_edit::RESUME_REFUSED;
use serde_json::{json, Value};
use shield_core::cluster::ClusterView;
use std::time::{Duration, Instant};

/// shieldctl's refusal to resume, naming why (see [`ClusterView::resume_blocker`]).
fn resume_refused(why: &str) -> String {
    format!("{RESUME_REFUSED}{why}; use --force to resume anyway")
}

/// Whether `resume` may go ahead on the cluster as read: only while a running primary holds the
/// leader key, unless forced.
pub(crate) fn resume_check(v: &ClusterView, force: bool) -> R {
    match v.resume_blocker() {
        Some(why) if !force => Err(resume_refused(&why)),
        _ => Ok(()),
    }
}

pub(crate) async fn pause(ctx: &Ctx, cluster: Option<&str>, on: bool, wait: bool, force: bool) -> R {
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
