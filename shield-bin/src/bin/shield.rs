//! The `shield` daemon: `shield CONFIG.yml`, or `shield --validate-config CONFIG.yml`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shield_bin::config::NodeConfig;

#[derive(Parser, Debug)]
#[command(name = "shield", version, about = "Shield: high availability for PostgreSQL-compatible databases")]
struct Args {
    /// Check the config file and exit.
    #[arg(long)]
    validate_config: bool,
    /// The node's YAML config (Patroni's keys).
    config: PathBuf,
}

fn main() -> ExitCode {
    // Internal: the fence keeper child (see shield_bin::keeper).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--fence-keeper") {
        if let Some(dir) = argv.get(2) {
            let vip = argv.get(3).zip(argv.get(4)).map(|(c, i)| (c.clone(), i.clone()));
            shield_bin::keeper::run(std::path::Path::new(dir), vip);
            return ExitCode::SUCCESS;
        }
        eprintln!("shield: --fence-keeper needs the data directory");
        return ExitCode::from(2);
    }
    let args = Args::parse();
    let env: BTreeMap<String, String> =
        std::env::vars().filter(|(k, _)| k.starts_with("PATRONI_") || k.starts_with("SHIELD_")).collect();
    let cfg = match NodeConfig::load(&args.config, &env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shield: {e}");
            return ExitCode::from(2);
        }
    };
    if args.validate_config {
        println!("{}: ok", args.config.display());
        for k in &cfg.ignored {
            println!("{}: note: `{k}` is accepted but not acted on by Shield yet", args.config.display());
        }
        return ExitCode::SUCCESS;
    }
    if nix::unistd::geteuid().is_root() {
        eprintln!("shield: refusing to run as root; run it as the database's owner (e.g. postgres)");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHIELD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        // Colours only on a terminal: a log file or the journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shield: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(shield_bin::daemon::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shield: {e}");
            ExitCode::FAILURE
        }
    }
}
