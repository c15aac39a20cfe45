//! `shieldctl`: patronictl's commands, prompts and tables over Shield's (and Patroni's) DCS
//! layout and REST API.
//!
//! It reads the cluster straight from the DCS and calls the members' REST APIs for everything a
//! running node must do itself (switchover, restart, reload, reinitialize, pause). Every command
//! runs without a terminal when given `--force`; a failure is one line on stderr and exit code 1.

pub mod config;
pub mod render;

mod commands;
mod prompt;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shield_core::cluster::ClusterView;
use shield_core::ports::Dcs;
use shield_core::MemberName;

pub use self::config::CtlConfig;
use self::render::Format;
use crate::net::http::Answer;

/// shieldctl's command line.
#[derive(Debug, Parser)]
#[command(name = "shieldctl", version, about = "Operate Shield (and Patroni) clusters, as patronictl does")]
pub struct Cli {
    /// The config file (before the command, as with patronictl): a node's config, or one with just the DCS section, `scope` and `ctl`.
    #[arg(short = 'c', long = "config-file", env = "SHIELDCTL_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,
    /// The DCS to use instead of a config file: etcd3://host:port[/namespace] or consul://host:port.
    #[arg(short = 'd', long = "dcs-url", visible_alias = "dcs", env = "DCS_URL")]
    pub dcs_url: Option<String>,
    /// Do not verify the REST API's certificate over https (self-signed certificates), as
    /// patronictl's -k; a warning says so on every use.
    #[arg(short = 'k', long)]
    pub insecure: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// One shieldctl command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the members of one or more clusters.
    List {
        /// Cluster names (default: the config's scope).
        clusters: Vec<String>,
        /// Show every optional column.
        #[arg(short = 'e', long)]
        extended: bool,
        /// Print a timestamp (UTC) before each table.
        #[arg(short = 't', long)]
        timestamp: bool,
        /// Output format.
        #[arg(short = 'f', long, value_enum, default_value = "pretty")]
        format: Format,
        /// Refresh every 2 seconds.
        #[arg(short = 'W')]
        watch_default: bool,
        /// Refresh every N seconds (fractions allowed).
        #[arg(short = 'w', long = "watch", value_name = "N")]
        watch: Option<f64>,
    },
    /// The members as a tree under the leader.
    Topology {
        /// Cluster names (default: the config's scope).
        clusters: Vec<String>,
        /// Refresh every 2 seconds.
        #[arg(short = 'W')]
        watch_default: bool,
        /// Refresh every N seconds (fractions allowed).
        #[arg(short = 'w', long = "watch", value_name = "N")]
        watch: Option<f64>,
    },
    /// The cluster's timeline history.
    History {
        /// Cluster name.
        cluster: Option<String>,
        /// Output format.
        #[arg(short = 'f', long, value_enum, default_value = "pretty")]
        format: Format,
    },
    /// Print the dynamic configuration (YAML).
    ShowConfig {
        /// Cluster name.
        cluster: Option<String>,
    },
    /// Disable automatic failover (maintenance mode).
    Pause {
        /// Cluster name.
        cluster: Option<String>,
        /// Wait until every member has seen it.
        #[arg(long)]
        wait: bool,
    },
    /// Resume automatic failover (refused unless a running primary holds the leader key).
    Resume {
        /// Cluster name.
        cluster: Option<String>,
        /// Wait until every member has seen it.
        #[arg(long)]
        wait: bool,
        /// Resume even though no running primary holds the leader key.
        #[arg(long)]
        force: bool,
    },
    /// Move the primary role to a healthy replica, now or at a given time.
    Switchover {
        /// Cluster name.
        cluster: Option<String>,
        /// The current primary.
        #[arg(long, visible_alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to promote (default: the healthiest).
        #[arg(long)]
        candidate: Option<String>,
        /// When: an ISO 8601 timestamp (UTC when no offset is given), or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Promote a named member, with or without a leader.
    Failover {
        /// Cluster name.
        cluster: Option<String>,
        /// Deprecated: with a leader this is a switchover.
        #[arg(long, visible_alias = "primary", alias = "master")]
        leader: Option<String>,
        /// The member to promote.
        #[arg(long)]
        candidate: Option<String>,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Restart PostgreSQL on members (all by default).
    Restart {
        /// Cluster name.
        cluster: String,
        /// Members (default: all).
        members: Vec<String>,
        /// Only members with this role.
        #[arg(short = 'r', long, default_value = "any")]
        role: String,
        /// Restart one member chosen at random.
        #[arg(long)]
        any: bool,
        /// Only if the PostgreSQL version is lower than this.
        #[arg(long = "pg-version")]
        pg_version: Option<String>,
        /// Only members with a pending restart.
        #[arg(long)]
        pending: bool,
        /// How long to wait for each restart: seconds, or with a unit (`90s`, `2min`, `1h`).
        #[arg(long, value_parser = parse_timeout)]
        timeout: Option<u64>,
        /// When: an ISO 8601 timestamp, or `now`.
        #[arg(long)]
        scheduled: Option<String>,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Wipe replicas and clone them again from the leader.
    Reinit {
        /// Cluster name.
        cluster: String,
        /// Members to reinitialize.
        members: Vec<String>,
        /// Clone from the leader (also when another member is configured to clone from).
        #[arg(long)]
        from_leader: bool,
        /// Do not ask.
        #[arg(long)]
        force: bool,
        /// Wait until each member runs again.
        #[arg(long)]
        wait: bool,
    },
    /// Make members re-read their config file.
    Reload {
        /// Cluster name.
        cluster: String,
        /// Members (default: all).
        members: Vec<String>,
        /// Only members with this role.
        #[arg(short = 'r', long, default_value = "any")]
        role: String,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Cancel scheduled restarts or a scheduled switchover: `flush CLUSTER [MEMBER..] restart|switchover`.
    Flush {
        /// Cluster name.
        cluster: String,
        /// Members (for restart), then `restart` or `switchover`.
        #[arg(required = true, value_name = "MEMBER.. restart|switchover")]
        rest: Vec<String>,
        /// Only members with this role.
        #[arg(short = 'r', long, default_value = "any")]
        role: String,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Change the dynamic configuration (opens $EDITOR without options).
    EditConfig {
        /// Cluster name.
        cluster: Option<String>,
        /// Set a key: `ttl=30`, `postgresql.use_pg_rewind=true`; `null` removes it.
        #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Set a PostgreSQL parameter: `max_connections=200`.
        #[arg(short = 'p', long = "pg", value_name = "PARAM=VALUE")]
        pg: Vec<String>,
        /// Merge a YAML file (`-` for stdin) into the config.
        #[arg(long, value_name = "FILE")]
        apply: Option<String>,
        /// Replace the config with a YAML file (`-` for stdin).
        #[arg(long, value_name = "FILE")]
        replace: Option<String>,
        /// Do not print the diff.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Do not ask.
        #[arg(long)]
        force: bool,
    },
    /// Delete a cluster's keys from the DCS.
    Remove {
        /// Cluster name.
        cluster: String,
        /// The format of the table shown before the questions.
        #[arg(short = 'f', long, value_enum, default_value = "pretty")]
        format: Format,
        /// Do not ask (for scripts; the keys are gone for good).
        #[arg(long)]
        force: bool,
    },
    /// Print a member's connection string.
    Dsn {
        /// Cluster name.
        cluster: Option<String>,
        /// The member with this role (default: the leader).
        #[arg(short = 'r', long)]
        role: Option<String>,
        /// This member.
        #[arg(short = 'm', long)]
        member: Option<String>,
    },
    /// Run SQL on a member.
    Query {
        /// Cluster name.
        cluster: Option<String>,
        /// The member with this role (default: the leader).
        #[arg(short = 'r', long)]
        role: Option<String>,
        /// This member.
        #[arg(short = 'm', long)]
        member: Option<String>,
        /// The SQL.
        #[arg(short = 'c', long)]
        command: Option<String>,
        /// A file with the SQL.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// Database user (default: postgres).
        #[arg(short = 'U', long)]
        username: Option<String>,
        /// Read the password from the first line of stdin (or set PGPASSWORD).
        #[arg(long)]
        password: bool,
        /// Database name.
        #[arg(short = 'd', long, default_value = "postgres")]
        dbname: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "tsv")]
        format: Format,
        /// Column delimiter for tsv.
        #[arg(long, default_value = "\t")]
        delimiter: String,
    },
    /// Print versions: shieldctl's, and each member's.
    Version {
        /// Cluster name.
        cluster: Option<String>,
        /// Members (default: all).
        members: Vec<String>,
    },
}

/// `--timeout`: whole seconds, bare or with Patroni's units (`ms`, `s`, `min`, `h`, `d`).
fn parse_timeout(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 60, 90s, 2min)"))?;
    let secs = match unit.trim() {
        "" | "s" => Some(n),
        "ms" => Some(n.div_ceil(1000)),
        "min" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        u => return Err(format!("{text:?}: unknown unit {u:?} (ms, s, min, h, d)")),
    };
    secs.ok_or_else(|| format!("{text:?} is too long"))
}

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
        crate::backend::dcs::dcs_client(&self.cfg.dcs, &self.cfg.namespace, cluster, me, &timing)
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

#[cfg(test)]
mod tests {
    #[test]
    fn patronictl_flags_parse() {
        use clap::Parser;
        for args in [
            &["shieldctl", "-k", "list", "-f", "yml", "-w", "0.5"][..],
            &["shieldctl", "list", "-f", "topology"],
            &["shieldctl", "topology", "a", "b"],
            &["shieldctl", "reinit", "c", "m1", "--from-leader", "--force"],
            &["shieldctl", "remove", "c", "-f", "json"],
            &["shieldctl", "restart", "c", "--timeout", "2min", "--force"],
            &["shieldctl", "query", "-f", "/tmp/q.sql"],
        ] {
            super::Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert_eq!(super::parse_timeout("2min"), Ok(120));
        assert_eq!(super::parse_timeout("90"), Ok(90));
        assert!(super::parse_timeout("soon").is_err());
        assert!(super::parse_timeout("9999999999999999d").is_err());
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
