//! shieldctl's command line: patronictl's commands, flags and their spellings (clap).

use super::render::Format;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
