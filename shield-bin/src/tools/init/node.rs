//! `shield init node`: the seed's questions (members, name, VIP), the passwords, the node's
//! config (new, or a Patroni file with Shield's `vip` section added), its unit and root steps.

use super::yaml::{node_yaml, vip_yaml, NodeYaml};
use super::{local_ips, member_ips, report, root_steps, write_file, Access, Asker, Step, WriteArgs};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `shield init node`'s inputs.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct NodeInit {
    /// The etcd members, IP1,IP2,IP3 (asked when missing).
    #[arg(long)]
    pub etcd: Option<String>,
    /// This node's name (asked; default node1).
    #[arg(long)]
    pub name: Option<String>,
    /// The VIP, as an address or address/prefix (asked when missing).
    #[arg(long)]
    pub vip: Option<String>,
    /// The interface to bind the VIP on (asked; default eth0).
    #[arg(long)]
    pub interface: Option<String>,
    /// The VIP's netmask (asked; default 255.255.255.0, or from --vip's prefix).
    #[arg(long)]
    pub netmask: Option<String>,
    /// The VIP's broadcast address (asked; default derived from the VIP).
    #[arg(long)]
    pub broadcast: Option<String>,
    /// The cluster's name.
    #[arg(long, default_value = "halo-cluster")]
    pub scope: String,
    /// This host's address (default: its address in the VIP's subnet).
    #[arg(long)]
    pub this: Option<String>,
    /// The database port (Halo uses 1921).
    #[arg(long, default_value_t = 5432)]
    pub port: u16,
    /// The data directory (default $PGDATA).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The server binaries (default: pg_config --bindir).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The config file to write; shield.service goes beside it.
    #[arg(long, default_value = "/etc/shield/shield.yml")]
    pub out: PathBuf,
    /// The database's OS user, for the unit (default: this user).
    #[arg(long)]
    pub user: Option<String>,
    /// Keep this Patroni config and add Shield's VIP section to it.
    #[arg(long)]
    pub from_patroni: Option<PathBuf>,
    /// PostgreSQL's unix_socket_directories (default: the server's default).
    #[arg(long)]
    pub socket_dir: Option<PathBuf>,
    /// Take the superuser and replication passwords from another node's config (the first node's
    /// shield.yml, copied here), so that every node has the same ones without a password on a
    /// command line.
    #[arg(long)]
    pub passwords_from: Option<PathBuf>,
    /// The superuser's password, the same on every node (default: from --passwords-from, kept
    /// from an earlier file, or generated). Visible in `ps`: prefer --passwords-from.
    #[arg(long)]
    pub superuser_password: Option<String>,
    /// The replication user's password, the same on every node (as above).
    #[arg(long)]
    pub replication_password: Option<String>,
    /// The database nodes' addresses, IP1,IP2,IP3, allowed to send the REST API's unsafe requests
    /// (switchover, restart, config changes) besides this host's loopback (default: the etcd
    /// members, as the seed's layout puts etcd on the database nodes).
    #[arg(long)]
    pub members: Option<String>,
    /// Serve the REST API on 127.0.0.1 only instead of to the members. Load balancers' health
    /// checks and the members' status probes cannot reach it then: a failover is decided on
    /// the DCS alone.
    #[arg(long)]
    pub rest_loopback_only: bool,
    /// How files are written and root steps taken.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// The broadcast address of `ip`/`prefix`.
pub fn broadcast_of(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    subnet(ip, prefix).broadcast()
}

/// `ip`/`prefix` as a network (a prefix over 32 counts as 32).
pub(crate) fn subnet(ip: Ipv4Addr, prefix: u8) -> ipnet::Ipv4Net {
    ipnet::Ipv4Net::new_assert(ip, prefix.min(32))
}

fn in_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    subnet(b, prefix).contains(&a)
}

/// A password for a generated config: 24 characters from the OS's random source.
pub(crate) fn password() -> Result<String, String> {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).map_err(|e| format!("the OS's random source: {e}"))?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The passwords a node's file holds; `None` ones are generated.
#[derive(Debug, Default)]
pub(crate) struct Secrets {
    pub(crate) superuser: Option<String>,
    pub(crate) replication: Option<String>,
    /// `restapi.authentication`'s password (the user is always `shield`).
    pub(crate) rest: Option<String>,
}

/// The passwords: the flags, else `--passwords-from`, else the ones already in the file being
/// written (a re-run gives the same file).
fn chosen_passwords(args: &NodeInit, ask: &mut Asker<'_>) -> Result<Secrets, String> {
    for (given, flag) in
        [(&args.superuser_password, "--superuser-password"), (&args.replication_password, "--replication-password")]
    {
        if given.is_some() {
            ask.say(&format!(
                "warning: {flag} puts a password on a command line (visible in `ps` and shell history); \
                 prefer --passwords-from"
            ));
        }
    }
    let from = match &args.passwords_from {
        Some(f) => {
            std::fs::metadata(f).map_err(|e| format!("--passwords-from {}: {e}", f.display()))?;
            let got = existing_passwords(f);
            if got.superuser.is_none() || got.replication.is_none() {
                return Err(format!(
                    "--passwords-from {}: no postgresql.authentication superuser and replication passwords in it",
                    f.display()
                ));
            }
            if got.rest.is_none() {
                ask.say(&format!(
                    "warning: --passwords-from {}: no restapi.authentication in it; this node gets its own REST \
                     password, and shieldctl on other nodes cannot make changes through this node's API",
                    f.display()
                ));
            }
            got
        }
        None => Secrets::default(),
    };
    let old = existing_passwords(&args.out);
    let chosen = Secrets {
        superuser: args.superuser_password.clone().or(from.superuser).or(old.superuser),
        replication: args.replication_password.clone().or(from.replication).or(old.replication),
        rest: from.rest.or(old.rest),
    };
    for (pw, what) in [(&chosen.superuser, "superuser"), (&chosen.replication, "replication"), (&chosen.rest, "REST")] {
        if pw.as_deref().is_some_and(|p| p.is_empty() || p.contains(['\n', '\r', '\0'])) {
            // A .pgpass line (and libpq's password file) cannot hold a line break.
            return Err(format!("the {what} password is empty or holds a line break or NUL, which .pgpass cannot"));
        }
    }
    Ok(chosen)
}

/// Passwords already in an earlier version of the file, so a re-run produces the same file.
pub(crate) fn existing_passwords(path: &Path) -> Secrets {
    let Ok(text) = std::fs::read_to_string(path) else { return Secrets::default() };
    let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else { return Secrets::default() };
    let pw = |who: &str| v["postgresql"]["authentication"][who]["password"].as_str().map(str::to_owned);
    Secrets {
        superuser: pw("superuser"),
        replication: pw("replication"),
        rest: v["restapi"]["authentication"]["password"].as_str().map(str::to_owned),
    }
}

/// Runs `shield init node`; returns the config's path.
pub fn init_node(args: &NodeInit, ask: &mut Asker<'_>) -> Result<PathBuf, String> {
    let patroni = match &args.from_patroni {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| format!("--from-patroni {}: {e}", p.display()))?),
        None => None,
    };
    let flags = [&args.etcd, &args.name, &args.vip, &args.interface, &args.netmask, &args.broadcast];
    ask.interactive = flags.iter().all(|f| f.is_none());
    // A Patroni file already names the DCS, the node and the database: only the VIP is asked.
    let (etcd, name) = if patroni.is_some() {
        (Vec::new(), String::new())
    } else {
        let etcd = ask.members(args.etcd.as_deref())?;
        let name = ask.value(args.name.as_deref(), "Input current node name", Some("node1"), "node name", |n| {
            shield_core::MemberName::new(n.to_owned()).map(|_| n.to_owned()).map_err(|e| e.to_string())
        })?;
        (etcd, name)
    };
    let v = ask_vip(args, ask)?;
    let text = match &patroni {
        Some(p) => with_vip_section(p, &v, ask)?,
        None => new_node_config(args, ask, &etcd, &name, &v)?,
    };
    // What is written must be what the daemon accepts.
    let env = std::collections::BTreeMap::new();
    crate::config::NodeConfig::parse(&args.out, &text, &env)
        .map_err(|e| format!("the generated config is invalid: {e}"))?;
    // It holds passwords: 0600 from its creation, and so is its backup.
    let w = write_file(&args.out, &text, args.write.force, Access::Secret)?;
    report(&mut ask.out, &args.out, &w);
    install_unit(args, ask)?;
    Ok(args.out.clone())
}

/// The seed's VIP answers.
struct VipChoice {
    vip: Ipv4Addr,
    prefix: u8,
    interface: String,
    broadcast: Ipv4Addr,
}

impl VipChoice {
    fn yaml(&self) -> String {
        vip_yaml(self.vip, self.prefix, &self.interface, self.broadcast)
    }
}

/// Asks (or takes from the flags) the VIP, its interface, netmask and broadcast address.
fn ask_vip(args: &NodeInit, ask: &mut Asker<'_>) -> Result<VipChoice, String> {
    let (vip, vip_prefix) = ask.value(args.vip.as_deref(), "Input VIP for the HA cluster", None, "VIP", |v| {
        let (a, p) = match v.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or("the prefix is not 0-32")?)),
            None => (v, None),
        };
        let ip: Ipv4Addr = a.trim().parse().map_err(|_| "not an IPv4 address".to_owned())?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err("cannot be a VIP".to_owned());
        }
        Ok((ip, p))
    })?;
    let interface = ask.value(
        args.interface.as_deref(),
        "Input network interface to bind the VIP",
        Some("eth0"),
        "network interface",
        |i| {
            let ok = !i.is_empty() && i.len() <= 15 && !i.contains(['/', ':']) && !i.contains(char::is_whitespace);
            ok.then(|| i.to_owned()).ok_or_else(|| "not an interface name".to_owned())
        },
    )?;
    let default_mask = subnet(vip, vip_prefix.unwrap_or(24)).netmask();
    let prefix = match vip_prefix {
        Some(p) if args.netmask.is_none() => p,
        _ => ask.value(
            args.netmask.as_deref(),
            "Input VIP netmask",
            Some(&default_mask.to_string()),
            "VIP netmask",
            |m| {
                let m: Ipv4Addr = m.parse().map_err(|_| "not a netmask".to_owned())?;
                crate::backend::vip::netmask_prefix(m).ok_or_else(|| "not a netmask (contiguous ones)".to_owned())
            },
        )?,
    };
    let brd_default = broadcast_of(vip, prefix).to_string();
    let broadcast = ask.value(
        args.broadcast.as_deref(),
        "Input VIP broadcast address",
        Some(&brd_default),
        "VIP broadcast address",
        |b| {
            let b: Ipv4Addr = b.parse().map_err(|_| "not an IPv4 address".to_owned())?;
            in_subnet(b, vip, prefix).then_some(b).ok_or_else(|| "not in the VIP's subnet".to_owned())
        },
    )?;
    Ok(VipChoice { vip, prefix, interface, broadcast })
}

/// A Patroni file with Shield's `vip` section added (it must not have one already).
fn with_vip_section(p: &str, v: &VipChoice, ask: &mut Asker<'_>) -> Result<String, String> {
    let mut t = p.to_owned();
    let parsed: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(p).map_err(|e| format!("--from-patroni: not valid YAML: {e}"))?;
    if !parsed["vip"].is_null() {
        return Err("the Patroni file already has a `vip` section".to_owned());
    }
    if parsed["restapi"]["authentication"].is_null() {
        ask.say(
            "warning: the Patroni file has no restapi.authentication: anyone who reaches its REST port \
             may switch over, restart or reinitialize; add credentials and an allowlist (docs/security.md)",
        );
    }
    if !t.ends_with('\n') {
        t.push('\n');
    }
    t.push_str("# Shield's own section (Patroni has no VIP), added by `shield init node --from-patroni`.\n");
    Ok(t + &v.yaml())
}

/// A new node's config: this host's address, the directories, the passwords (given, copied or
/// generated) and the members' allowlist.
fn new_node_config(
    args: &NodeInit,
    ask: &mut Asker<'_>,
    etcd: &[Ipv4Addr],
    name: &str,
    v: &VipChoice,
) -> Result<String, String> {
    let (vip, prefix) = (v.vip, v.prefix);
    let this = match &args.this {
        Some(t) => t.parse::<Ipv4Addr>().map_err(|_| format!("--this: {t:?} is not an IPv4 address"))?,
        None => local_ips()
            .into_iter()
            .find(|ip| !ip.is_loopback() && *ip != vip && in_subnet(*ip, vip, prefix))
            .ok_or("no address of this host is in the VIP's subnet; give this host's address with --this")?,
    };
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| std::env::var_os("PGDATA").map(PathBuf::from))
        .ok_or("--data-dir is required (or set PGDATA)")?;
    let bin_dir = args.bin_dir.clone().or_else(pg_config_bindir).ok_or("--bin-dir is required (no pg_config)")?;
    let secrets = chosen_passwords(args, ask)?;
    let generated = secrets.superuser.is_none() || secrets.replication.is_none() || secrets.rest.is_none();
    let or_new = |p: Option<String>| p.map_or_else(password, Ok);
    let su = or_new(secrets.superuser)?;
    let rep = or_new(secrets.replication)?;
    let rest = or_new(secrets.rest)?;
    // Unsafe REST requests: from the members and this host's loopback only.
    let members = match &args.members {
        Some(m) => member_ips(m)?.0,
        None => etcd.to_vec(),
    };
    if generated {
        // Never the passwords themselves: a terminal, its scrollback and a pasted command
        // line (visible in `ps` and shell history) are no place for them.
        ask.say(&format!(
            "note: generated passwords, kept in {} (readable by its owner only); every node of the \
             cluster needs the same ones: copy that file to each other node (scp, mode 0600) and run there",
            args.out.display()
        ));
        ask.say("  shield init node ... --passwords-from <the copied file>");
    }
    let net = subnet(vip, prefix).trunc().to_string();
    Ok(node_yaml(&NodeYaml {
        net: &net,
        socket_dir: args.socket_dir.as_deref(),
        scope: &args.scope,
        name,
        this,
        port: args.port,
        etcd,
        data_dir: &data_dir,
        bin_dir: &bin_dir,
        su_password: &su,
        rep_password: &rep,
        rest_password: &rest,
        members: &members,
        rest_loopback_only: args.rest_loopback_only,
    }) + &v.yaml())
}

/// The systemd unit for this node, and the root steps that install and start it.
fn install_unit(args: &NodeInit, ask: &mut Asker<'_>) -> Result<(), String> {
    let user = args.user.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "postgres".to_owned());
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/shield"));
    let unit_path = args.out.with_file_name("shield.service");
    let unit = include_str!("../../../../contrib/systemd/shield.service")
        .replace("/usr/local/bin/shield /etc/shield/shield.yml", &format!("{} {}", exe.display(), args.out.display()))
        .replace("User=postgres", &format!("User={user}"))
        .replace("Group=postgres", &format!("Group={user}"));
    let w = write_file(&unit_path, &unit, args.write.force, Access::Public)?;
    report(&mut ask.out, &unit_path, &w);
    ask.say("Next:");
    ask.say(&format!("  export SHIELDCTL_CONFIG_FILE={}", args.out.display()));
    ask.say(&format!("  shield check {}", args.out.display()));
    let steps = vec![
        Step::new(&[
            "install",
            "-m",
            "644",
            &unit_path.display().to_string(),
            &args.write.systemd_dir.join("shield.service").display().to_string(),
        ]),
        Step::new(&["systemctl", "daemon-reload"]),
        Step::new(&["systemctl", "enable", "--now", "shield"]),
    ];
    root_steps(ask, "on this node", &steps, args.write.apply)?;
    ask.say("(No sudoers lines: the unit grants the daemon CAP_NET_ADMIN and CAP_NET_RAW for the VIP.)");
    Ok(())
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = shield_db_postgres::process::command("pg_config", shield_db_postgres::process::Caps::Drop)
        .arg("--bindir")
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
