//! Per-member commands: `restart`, `reinit`, `reload`, `flush ... restart`.

use super::commands::{now_ms, now_utc, parse_schedule, select, QUICK, R};
use super::list::print_table;
use super::prompt::{ask, confirm};
use super::Ctx;
use serde_json::{json, Value};
use shield_core::{DynamicConfig, MemberName};
use std::time::{Duration, Instant};

pub(crate) struct RestartOpts {
    pub(crate) role: String,
    pub(crate) any: bool,
    pub(crate) pg_version: Option<String>,
    pub(crate) pending: bool,
    pub(crate) timeout: Option<u64>,
    pub(crate) scheduled: Option<String>,
    pub(crate) force: bool,
}

pub(crate) async fn restart(ctx: &Ctx, c: &str, names: &[String], o: RestartOpts) -> R {
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

pub(crate) async fn reinit(ctx: &Ctx, c: &str, names: Vec<String>, from_leader: bool, force: bool, wait: bool) -> R {
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

pub(crate) async fn reload(ctx: &Ctx, c: &str, names: &[String], role: &str, force: bool) -> R {
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

pub(crate) async fn flush_restart(ctx: &Ctx, c: &str, names: &[String], role: &str, force: bool) -> R {
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
