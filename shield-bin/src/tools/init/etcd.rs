//! `shield init etcd`: the etcd member's config and unit, and the root steps to install them.

use super::yaml::{path_value, str_value, to_yaml, yaml_map};
use super::{local_ips, report, root_steps, write_file, Access, Asker, Step, WriteArgs};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `shield init etcd`'s inputs.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct EtcdInit {
    /// The members' addresses, IP1,IP2,IP3 (asked when missing).
    #[arg(long)]
    pub members: Option<String>,
    /// This member's address (default: the member address found on this host).
    #[arg(long)]
    pub this: Option<String>,
    /// etcd's data directory.
    #[arg(long, default_value = "/var/lib/etcd")]
    pub data_dir: PathBuf,
    /// Where to write the files.
    #[arg(long, default_value = "/etc/etcd")]
    pub out: PathBuf,
    /// The etcd binary the unit runs.
    #[arg(long, default_value = "/usr/local/bin/etcd")]
    pub etcd_bin: PathBuf,
    /// How files are written and root steps taken.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// The member config for `this` in a cluster of `members`.
pub fn etcd_config(members: &[Ipv4Addr], this: Ipv4Addr, data_dir: &Path) -> String {
    let name = |ip: &Ipv4Addr| format!("etcd{}", members.iter().position(|m| m == ip).map_or(0, |i| i + 1));
    let cluster: Vec<String> = members.iter().map(|m| format!("{}=http://{m}:2380", name(m))).collect();
    // The same on every member: derived from the member list.
    let token = members.iter().map(|m| u32::from(*m)).fold(0u32, |a, m| a.rotate_left(5) ^ m);
    let me = name(&this);
    let doc = yaml_map([
        ("name", str_value(&me)),
        ("data-dir", path_value(data_dir)),
        ("listen-client-urls", str_value(format!("http://{this}:2379,http://127.0.0.1:2379"))),
        ("advertise-client-urls", str_value(format!("http://{this}:2379"))),
        ("listen-peer-urls", str_value(format!("http://{this}:2380"))),
        ("initial-advertise-peer-urls", str_value(format!("http://{this}:2380"))),
        ("initial-cluster", str_value(cluster.join(","))),
        ("initial-cluster-state", str_value("new")),
        ("initial-cluster-token", str_value(format!("shield-{token}"))),
    ]);
    format!("# etcd member {me} of {}, written by `shield init etcd`.\n{}", members.len(), to_yaml(&doc))
}

// ---- YAML ---------------------------------------------------------------------------------------

fn etcd_unit(etcd_bin: &Path, config: &Path) -> String {
    include_str!("../../../../contrib/systemd/etcd.service")
        .replace("/usr/local/bin/etcd", &etcd_bin.display().to_string())
        .replace("/etc/etcd/etcd.conf.yml", &config.display().to_string())
}

/// Runs `shield init etcd`.
pub fn init_etcd(args: &EtcdInit, ask: &mut Asker<'_>) -> Result<(), String> {
    ask.interactive = args.members.is_none();
    let members = ask.members(args.members.as_deref())?;
    let this = match &args.this {
        Some(t) => {
            let ip: Ipv4Addr = t.parse().map_err(|_| format!("--this: {t:?} is not an IPv4 address"))?;
            if !members.contains(&ip) {
                return Err(format!("--this: {ip} is not in the member list"));
            }
            ip
        }
        None => {
            let local = local_ips();
            members.iter().copied().find(|m| local.contains(m)).ok_or_else(|| {
                "none of the member addresses is on this host; give this member's address with --this".to_owned()
            })?
        }
    };
    ask.say(&format!("{this} will be used as node IP"));
    let conf_path = args.out.join("etcd.conf.yml");
    let unit_path = args.out.join("etcd.service");
    let w = write_file(&conf_path, &etcd_config(&members, this, &args.data_dir), args.write.force, Access::Public)?;
    report(&mut ask.out, &conf_path, &w);
    let w = write_file(&unit_path, &etcd_unit(&args.etcd_bin, &conf_path), args.write.force, Access::Public)?;
    report(&mut ask.out, &unit_path, &w);
    let data = args.data_dir.display().to_string();
    let steps = vec![
        Step::new(&["useradd", "--system", "--home-dir", "/var/lib/etcd", "--shell", "/usr/sbin/nologin", "etcd"])
            .unless(&["id", "etcd"]),
        Step::new(&["install", "-d", "-o", "etcd", "-g", "etcd", "-m", "700", &data]),
        Step::new(&[
            "install",
            "-m",
            "644",
            &unit_path.display().to_string(),
            &args.write.systemd_dir.join("etcd.service").display().to_string(),
        ]),
        Step::new(&["systemctl", "daemon-reload"]),
        Step::new(&["systemctl", "enable", "--now", "etcd"]),
    ];
    root_steps(ask, "on every member; start at least a majority together", &steps, args.write.apply)
}
