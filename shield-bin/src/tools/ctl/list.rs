//! `list`, `topology`, `query` and `remove`: reading and removing the cluster.

use super::commands::{conn_addr, now_utc, R};
use super::prompt::ask;
use super::render::{self, Cell, Format, Grid};
use super::Ctx;
use shield_core::cluster::ClusterView;
use shield_core::MemberName;
use std::time::Duration;

pub(crate) async fn list(
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

pub(crate) fn print_table(cluster: &str, v: &ClusterView) {
    println!("{}", render::list(cluster, v, false, false, Format::Pretty));
}

pub(crate) async fn remove(ctx: &Ctx, c: &str, format: Format, force: bool) -> R {
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
pub(crate) async fn query(
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
