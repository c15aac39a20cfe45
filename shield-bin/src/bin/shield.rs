//! The `shield` daemon: `shield CONFIG.yml`, or `shield --validate-config CONFIG.yml`; and the
//! set-up commands `shield init etcd|node`, `shield check CONFIG`, `shield demo`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shield_bin::config::NodeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "shield",
    version,
    about = "Shield: high availability for PostgreSQL-compatible databases",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Args {
    /// Check the config file and exit.
    #[arg(long)]
    validate_config: bool,
    /// The node's YAML config (Patroni's keys); not needed when PATRONI_CONFIGURATION holds it.
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write the config and systemd unit for an etcd member or a database node.
    Init {
        #[command(subcommand)]
        what: Box<InitCmd>,
    },
    /// Check a node's config against this host: DCS, binaries, data directory, replication user,
    /// VIP interface and capabilities, watchdog.
    Check {
        /// The node's YAML config.
        config: PathBuf,
    },
    /// Start the local demo cluster and run a failover drill (Shield's scripts/demo.sh).
    Demo {
        /// Passed on: --no-drill, --status, --stop.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum InitCmd {
    /// This host's etcd member: etcd.conf.yml and etcd.service (the seed's etcd_config.sh).
    Etcd(Box<shield_bin::tools::init::EtcdInit>),
    /// This database node: the YAML config and shield.service (the seed's patroni_config.sh).
    Node(Box<shield_bin::tools::init::NodeInit>),
}

fn subcommand(cmd: Cmd) -> ExitCode {
    let stdin = std::io::stdin();
    let mut ask = shield_bin::tools::init::Asker::new(stdin.lock(), std::io::stdout());
    let result = match cmd {
        Cmd::Init { what } => match *what {
            InitCmd::Etcd(a) => shield_bin::tools::init::init_etcd(&a, &mut ask),
            InitCmd::Node(a) => shield_bin::tools::init::init_node(&a, &mut ask).map(|_| ()),
        },
        Cmd::Check { config } => return check(&config),
        Cmd::Demo { args } => return demo(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shield: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(config: &std::path::Path) -> ExitCode {
    let env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("PATRONI_") || k.starts_with("SHIELD_")).collect();
    let cfg = match NodeConfig::load(config, &env) {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL  config: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ok    config: {}", config.display());
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("shield: cannot start the runtime");
        return ExitCode::FAILURE;
    };
    let lines = rt.block_on(shield_bin::tools::check::run(&cfg));
    for l in &lines {
        println!("{l}");
    }
    if lines.iter().any(|l| l.level == shield_bin::tools::check::Level::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Raises the soft limit on open files to the hard one: the REST API's connection cap
/// (`serve::limits::MAX_CONNECTIONS`) plus the database and DCS connections must fit under it.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                eprintln!("shield: cannot raise the open-file limit from {soft} to {hard}: {e}");
            }
        }
    }
}

/// `shield demo` runs the demo script of the source tree this binary was built from.
fn demo(args: &[String]) -> ExitCode {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    if !script.is_file() {
        eprintln!(
            "shield: `shield demo` runs scripts/demo.sh from Shield's source tree, not found at {}",
            script.display()
        );
        return ExitCode::FAILURE;
    }
    match std::process::Command::new("bash").arg(&script).args(args).status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => ExitCode::from(u8::try_from(s.code().unwrap_or(1)).unwrap_or(1)),
        Err(e) => {
            eprintln!("shield: cannot run {}: {e}", script.display());
            ExitCode::FAILURE
        }
    }
}

/// Internal: runs the fence keeper child (see shield_bin::daemon::keeper) when asked to with
/// `--fence-keeper DATADIR [VIP-CIDR IFACE]`.
fn fence_keeper(argv: &[String]) -> Option<ExitCode> {
    if argv.get(1).map(String::as_str) != Some("--fence-keeper") {
        return None;
    }
    if let Some(dir) = argv.get(2) {
        let vip = argv.get(3).zip(argv.get(4)).map(|(c, i)| (c.clone(), i.clone()));
        shield_bin::daemon::keeper::run(std::path::Path::new(dir), vip);
        return Some(ExitCode::SUCCESS);
    }
    eprintln!("shield: --fence-keeper needs the data directory");
    Some(ExitCode::from(2))
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = fence_keeper(&argv) {
        return code;
    }
    let args = Args::parse();
    if let Some(cmd) = args.cmd {
        return subcommand(cmd);
    }
    let env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("PATRONI_") || k.starts_with("SHIELD_")).collect();
    let whole = env.contains_key("PATRONI_CONFIGURATION") || env.contains_key("SHIELD_CONFIGURATION");
    let config = match args.config {
        Some(c) => c,
        None if whole => PathBuf::from("$PATRONI_CONFIGURATION"),
        None => {
            eprintln!("shield: a config file is required (shield CONFIG.yml), or PATRONI_CONFIGURATION");
            return ExitCode::from(2);
        }
    };
    let cfg = match NodeConfig::load(&config, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shield: {e}");
            return ExitCode::from(2);
        }
    };
    if args.validate_config {
        println!("{}: ok", config.display());
        for w in &cfg.warnings {
            println!("{}: warning: {w}", config.display());
        }
        return ExitCode::SUCCESS;
    }
    if nix::unistd::geteuid().is_root() {
        eprintln!("shield: refusing to run as root; run it as the database's owner (e.g. postgres)");
        return ExitCode::from(2);
    }
    init_logging();
    raise_descriptor_limit();
    run_daemon(cfg)
}

/// Logs to stdout, filtered by `SHIELD_LOG` (`info` by default): a default level and
/// `target=level` directives, comma-separated (`info,shield_dcs_etcd=debug`). Parsed by
/// tracing-subscriber's `Targets`, not `EnvFilter`, whose span and regex matching the daemon does
/// not need and which would add half a megabyte of code to its resident set.
fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let spec = std::env::var("SHIELD_LOG").unwrap_or_default();
    let filter = spec.parse::<tracing_subscriber::filter::Targets>().unwrap_or_else(|e| {
        eprintln!("shield: SHIELD_LOG={spec:?} is not a log filter ({e}); logging at info");
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
    });
    let filter = if spec.trim().is_empty() {
        tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
    } else {
        filter
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Colours only on a terminal: a log file or the journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    tracing_subscriber::registry().with(fmt).with(filter).init();
}

/// Runs the node until it stops.
fn run_daemon(cfg: NodeConfig) -> ExitCode {
    // Two runtimes: the HA loop's, and one thread for the REST API (see daemon::run). The loop
    // itself runs on this thread (`block_on`); the HA runtime's one worker runs what it spawns
    // (the fence guard, the DCS watch, database connections), so a loop stuck in a call still
    // cannot hold the guard up.
    let built =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).thread_name("shield-ha").enable_all().build();
    let rest = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(4)
        .thread_name("shield-rest")
        .enable_all()
        .build();
    let (rt, rest) = match (built, rest) {
        (Ok(rt), Ok(rest)) => (rt, rest),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("shield: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Boxed: the daemon's future is large, and `block_on` would otherwise keep it (and the copies
    // made while it is moved into place) on this thread's stack.
    let result = rt.block_on(Box::pin(shield_bin::daemon::run(cfg, rest.handle().clone())));
    rest.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shield: {e}");
            ExitCode::FAILURE
        }
    }
}
