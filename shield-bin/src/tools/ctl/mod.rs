//! `shieldctl`: patronictl's commands, prompts and tables over Shield's (and Patroni's) DCS
//! layout and REST API.
//!
//! It reads the cluster straight from the DCS and calls the members' REST APIs for everything a
//! running node must do itself (switchover, restart, reload, reinitialize, pause). Every command
//! runs without a terminal when given `--force`; a failure is one line on stderr and exit code 1.

pub use self::cli::{Cli, Command};
pub use self::config::CtlConfig;
use crate::net::http::Answer;
use shield_core::cluster::ClusterView;
use shield_core::ports::Dcs;
use shield_core::MemberName;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod config;

pub mod render;

mod cli;
mod commands;

#[cfg(test)]
mod commands_tests;

mod edit;

mod list;

mod members;

mod pause;

mod prompt;

mod switch;

/// What every command uses: the settings, and how to reach the DCS and the members.
#[derive(Debug)]
pub struct Ctx {
    cfg: CtlConfig,
}

/// The name shieldctl uses towards the DCS (it never takes a lease).
const CTL_MEMBER: &str = "shieldctl";

impl Ctx {
    /// Loads the settings the command line names.
    pub fn load(cli: &Cli) -> Result<Ctx, String> {
        let mut cfg = Ctx::load_config(cli)?;
        cfg.insecure |= cli.insecure;
        Ctx::with(cfg)
    }

    fn load_config(cli: &Cli) -> Result<CtlConfig, String> {
        if let Some(url) = &cli.dcs_url {
            let mut cfg = CtlConfig::from_url(url)?;
            if let Some(file) = config_file(cli) {
                // A config file still gives the scope and credentials.
                if let Ok(text) = std::fs::read_to_string(&file) {
                    if let Ok(f) = CtlConfig::parse(&file, &text) {
                        cfg.scope = f.scope;
                        cfg.auth = f.auth;
                        cfg.tls = f.tls;
                        cfg.insecure = f.insecure;
                        cfg.command_params = f.command_params;
                    }
                }
            }
            return Ok(cfg);
        }
        let Some(file) = config_file(cli) else {
            return Err(
                "no config: pass -c FILE, set SHIELDCTL_CONFIG_FILE, or pass --dcs-url etcd3://host:port".into()
            );
        };
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        CtlConfig::parse(&file, &text)
    }

    /// Settles the process's TLS client for https REST calls, then the context.
    fn with(cfg: CtlConfig) -> Result<Ctx, String> {
        let identity = cfg.tls.as_ref().and_then(|(_, id)| id.as_ref()).map(|(c, k)| (c.as_path(), k.as_path()));
        if cfg.insecure {
            eprintln!("Warning: -k: the REST API's certificate is not verified");
            crate::net::tls::set_client(
                crate::net::tls::insecure_client_config(identity).map_err(|e| format!("ctl TLS: {e}"))?,
            );
        } else if let Some((ca, _)) = &cfg.tls {
            crate::net::tls::set_client(
                crate::net::tls::client_config(ca, identity).map_err(|e| format!("ctl TLS: {e}"))?,
            );
        }
        Ok(Ctx { cfg })
    }

    /// The named cluster, or the config's scope.
    fn cluster(&self, given: Option<&str>) -> Result<String, String> {
        match given.or(self.cfg.scope.as_deref()) {
            Some(c) if !c.is_empty() && !c.contains('/') => Ok(c.to_owned()),
            Some(c) => Err(format!("{c:?} is not a valid cluster name")),
            None => Err("no cluster name given and no `scope` in the config".into()),
        }
    }

    fn dcs(&self, cluster: &str) -> Result<Arc<dyn Dcs>, String> {
        let mut timing = shield_core::DynamicConfig::default().timing;
        timing.retry_timeout_ms = 3_000;
        let me = MemberName::new(CTL_MEMBER).map_err(|e| e.to_string())?;
        crate::backend::dcs::dcs_client(&self.cfg.dcs, &self.cfg.namespace, cluster, me, &timing, false)
    }

    /// The cluster as the DCS holds it now.
    async fn read(&self, cluster: &str) -> Result<ClusterView, String> {
        let v =
            self.dcs(cluster)?.read().await.map_err(|e| format!("cannot read cluster {cluster} from the DCS: {e}"))?;
        Ok(v)
    }

    /// Like [`Self::read`], but an empty cluster is an error.
    async fn read_existing(&self, cluster: &str) -> Result<ClusterView, String> {
        let v = self.read(cluster).await?;
        if v.members.is_empty() && v.initialize.is_none() && v.leader.is_none() && v.config.is_none() {
            return Err(format!(
                "cluster {cluster:?} is not in the DCS (no keys under {}/{cluster}/)",
                self.cfg.namespace.trim_end_matches('/')
            ));
        }
        Ok(v)
    }

    /// Calls `method path` on a member's REST API.
    async fn rest(
        &self,
        v: &ClusterView,
        member: &MemberName,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let base = api_base(v, member)?;
        let auth = self.cfg.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
        crate::net::http::request(method, &format!("{base}{path}"), body, auth, timeout).await
    }
}

/// A member's REST base URL (`http://host:port`), from its `api_url`.
fn api_base(v: &ClusterView, member: &MemberName) -> Result<String, String> {
    let m = v.members.get(member).ok_or_else(|| format!("{member} is not a member of this cluster"))?;
    let url = m.data.api_url.as_deref().ok_or_else(|| format!("member {member} publishes no api_url"))?;
    let base = url.strip_suffix("/patroni").unwrap_or(url).trim_end_matches('/');
    Ok(base.to_owned())
}

fn config_file(cli: &Cli) -> Option<PathBuf> {
    if let Some(f) = &cli.config_file {
        return Some(f.clone());
    }
    if let Some(f) = std::env::var_os("PATRONICTL_CONFIG_FILE") {
        return Some(PathBuf::from(f));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    config::default_paths(home.as_deref()).into_iter().find(|p| p.is_file())
}

/// Runs the parsed command line; `Err` is the one-line reason for a failure.
pub async fn run(cli: Cli) -> Result<(), String> {
    if let Command::Version { cluster: None, .. } = &cli.command {
        println!("shieldctl version {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    let ctx = Ctx::load(&cli)?;
    commands::run(&ctx, cli.command).await
}
