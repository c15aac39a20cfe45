//! `shield init etcd|node`: the seed's `etcd_config.sh` and `patroni_config.sh`, done right.
//!
//! Each writes its files (the etcd member's config and unit; the node's YAML and unit), asks the
//! seed's questions with the seed's defaults when a value is not given as a flag, validates every
//! answer (a bad one is asked again), never overwrites a changed file without `--force` (it shows
//! the diff instead), and prints the root steps that remain, which no longer include sudoers lines:
//! the unit grants the daemon the two capabilities the VIP needs.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where answers come from: flags first, then the prompt (stdin), re-asking a bad answer.
pub struct Asker<'a> {
    input: Box<dyn BufRead + 'a>,
    out: Box<dyn Write + 'a>,
    /// False once any value came as a flag: then nothing is asked, defaults apply, and a value
    /// without a default is an error naming its flag.
    interactive: bool,
}

impl std::fmt::Debug for Asker<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Asker")
    }
}

/// How many times a bad answer is asked again before giving up.
const TRIES: usize = 3;

impl<'a> Asker<'a> {
    /// Prompts on `out`, answers from `input`.
    pub fn new(input: impl BufRead + 'a, out: impl Write + 'a) -> Asker<'a> {
        Asker { input: Box::new(input), out: Box::new(out), interactive: true }
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    /// `given` if set (checked), else asks `question` (with `default` on an empty line) until
    /// `check` accepts the answer. The seed's style: the question, `Default: x`, then
    /// `<value> will be used as <what>`.
    fn value<T>(
        &mut self,
        given: Option<&str>,
        question: &str,
        default: Option<&str>,
        what: &str,
        check: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        if let Some(g) = given {
            return check(g).map_err(|e| format!("{what}: {e}"));
        }
        if !self.interactive {
            return match default {
                Some(d) => check(d).map_err(|e| format!("{what}: {e}")),
                None => Err(format!("the {what} is required (give it as a flag, or give no flags to be asked)")),
            };
        }
        for _ in 0..TRIES {
            self.say(question);
            if let Some(d) = default {
                self.say(&format!("Default: {d}"));
            }
            let _ = self.out.flush();
            let mut line = String::new();
            let n = self.input.read_line(&mut line).map_err(|e| format!("cannot read an answer: {e}"))?;
            if n == 0 {
                return Err(format!("no answer for the {what} (stdin is closed); give it as a flag"));
            }
            let answer = match (line.trim(), default) {
                ("", Some(d)) => d.to_owned(),
                (a, _) => a.to_owned(),
            };
            match check(&answer) {
                Ok(v) => {
                    self.say(&format!("{answer} will be used as {what}"));
                    return Ok(v);
                }
                Err(e) => self.say(&format!("{answer:?} is not a valid {what}: {e}")),
            }
        }
        Err(format!("no valid {what} after {TRIES} answers"))
    }
}

impl Asker<'_> {
    /// The etcd members, as the seed's scripts ask for them; warnings are shown.
    fn members(&mut self, given: Option<&str>) -> Result<Vec<Ipv4Addr>, String> {
        let (ips, warnings) = self.value(
            given,
            "Please input IP list where etcd cluster will be running\ne.g. 192.168.1.1,192.168.1.2,192.168.1.3",
            None,
            "etcd member list",
            member_ips,
        )?;
        for w in &warnings {
            self.say(&format!("warning: {w}"));
        }
        Ok(ips)
    }
}

/// Parses `IP1,IP2,IP3`: every entry an IPv4 address, no duplicates. Warnings for a cluster that
/// cannot tolerate a failure, or an even count.
pub fn member_ips(list: &str) -> Result<(Vec<Ipv4Addr>, Vec<String>), String> {
    let mut ips = Vec::new();
    let mut seen = BTreeSet::new();
    for part in list.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("{list:?} has an empty entry"));
        }
        let ip: Ipv4Addr = part.parse().map_err(|_| format!("{part:?} is not an IPv4 address"))?;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
            return Err(format!("{ip} cannot be a member address"));
        }
        if !seen.insert(ip) {
            return Err(format!("{ip} is listed twice"));
        }
        ips.push(ip);
    }
    let mut warnings = Vec::new();
    if ips.len() < 3 {
        warnings.push(format!("{} member(s): the cluster cannot survive losing one; use 3 or 5", ips.len()));
    } else if ips.len() % 2 == 0 {
        warnings.push(format!(
            "{} members tolerate no more failures than {}; use an odd count",
            ips.len(),
            ips.len() - 1
        ));
    }
    Ok((ips, warnings))
}

/// The IPv4 addresses of this host's interfaces.
pub fn local_ips() -> Vec<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter_map(|i| i.address.and_then(|a| a.as_sockaddr_in().map(|s| s.ip()))).collect::<Vec<Ipv4Addr>>()
        })
        .unwrap_or_default()
}

/// A file to write, and what became of it.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// It did not exist.
    Created,
    /// It held exactly this.
    Unchanged,
    /// It differed and `--force` replaced it (the old one kept as `<file>.bak`).
    Replaced,
}

/// Who may read a file `shield init` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// It holds passwords: created 0600, and its backup is never readable by others either.
    Secret,
    /// A unit or a config without secrets: 0644; its backup keeps the old file's mode.
    Public,
}

impl Access {
    fn mode(self) -> u32 {
        match self {
            Access::Secret => shield_db_postgres::files::SECRET_MODE,
            Access::Public => 0o644,
        }
    }

    /// The widest mode a backup of such a file may have.
    fn backup_max(self) -> u32 {
        match self {
            Access::Secret => shield_db_postgres::files::SECRET_MODE,
            Access::Public => 0o777,
        }
    }
}

/// Writes `text` to `path` unless a different file is there: then `Err` with the unified diff
/// (password values hidden), unless `force`. Writes are atomic and a new file has its mode from
/// creation; an unchanged secret file that an older version left readable is narrowed to 0600.
pub fn write_file(path: &Path, text: &str, force: bool, access: Access) -> Result<Written, String> {
    let at = |e: std::io::Error| format!("{}: {e}", path.display());
    match std::fs::read_to_string(path) {
        Ok(old) if old == text => {
            if access == Access::Secret {
                shield_db_postgres::files::restrict(path, access.mode()).map_err(at)?;
            }
            return Ok(Written::Unchanged);
        }
        Ok(old) if !force => {
            return Err(format!(
                "{} has changed; not overwriting it without --force:\n{}",
                path.display(),
                shown_diff(path, &old, text)
            ));
        }
        Ok(_) => {
            shield_db_postgres::files::backup(path, access.backup_max()).map_err(at)?;
            shield_db_postgres::files::write_atomic(path, text.as_bytes(), access.mode()).map_err(at)?;
            return Ok(Written::Replaced);
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(at(e)),
        Err(_) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    shield_db_postgres::files::write_atomic(path, text.as_bytes(), access.mode()).map_err(at)?;
    Ok(Written::Created)
}

/// The unified diff from `old` to `new` with secret values hidden: it goes to a terminal and
/// maybe a ticket, so it must not show the passwords of either file.
fn shown_diff(path: &Path, old: &str, new: &str) -> String {
    let (old_r, new_r) = (redact(old), redact(new));
    let diff = similar::TextDiff::from_lines(old_r.as_str(), new_r.as_str());
    let mut shown = diff.unified_diff().context_radius(2).header(&path.display().to_string(), "(new)").to_string();
    let secrets = |t: &str| t.lines().filter(|l| redact_line(l) != *l).map(str::to_owned).collect::<Vec<_>>();
    if secrets(old) != secrets(new) {
        shown.push_str("(secret values differ too; they are not shown)\n");
    }
    shown
}

/// `text` with the values of secret keys (`password`, `token`, `secret`, ...) replaced.
fn redact(text: &str) -> String {
    text.lines().map(|l| redact_line(l) + "\n").collect()
}

fn redact_line(line: &str) -> String {
    let Some((key, value)) = line.split_once(':') else { return line.to_owned() };
    let k = key.trim().trim_start_matches("- ").to_ascii_lowercase();
    let secret = ["password", "token", "secret"].iter().any(|s| k.contains(s));
    if secret && !value.trim().is_empty() {
        format!("{key}: <hidden>")
    } else {
        line.to_owned()
    }
}

fn report(out: &mut dyn Write, path: &Path, w: &Written) {
    let what = match w {
        Written::Created => "written",
        Written::Unchanged => "unchanged",
        Written::Replaced => "replaced (the old file kept as .bak)",
    };
    let _ = writeln!(out, "{}: {what}", path.display());
}

// ---- etcd ---------------------------------------------------------------------------------------

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

/// The options `shield init etcd` and `shield init node` share.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct WriteArgs {
    /// Run the root steps instead of printing them (as root).
    #[arg(long)]
    pub apply: bool,
    /// Where --apply installs the unit.
    #[arg(long, default_value = "/etc/systemd/system")]
    pub systemd_dir: PathBuf,
    /// Replace files that differ (the old one is kept as .bak).
    #[arg(long)]
    pub force: bool,
}

/// The member config for `this` in a cluster of `members`.
pub fn etcd_config(members: &[Ipv4Addr], this: Ipv4Addr, data_dir: &Path) -> String {
    let name = |ip: &Ipv4Addr| format!("etcd{}", members.iter().position(|m| m == ip).map_or(0, |i| i + 1));
    let cluster: Vec<String> = members.iter().map(|m| format!("{}=http://{m}:2380", name(m))).collect();
    format!(
        "# etcd member {me} of {n}, written by `shield init etcd`.\n\
         name: {me}\n\
         data-dir: {dir}\n\
         listen-client-urls: http://{this}:2379,http://127.0.0.1:2379\n\
         advertise-client-urls: http://{this}:2379\n\
         listen-peer-urls: http://{this}:2380\n\
         initial-advertise-peer-urls: http://{this}:2380\n\
         initial-cluster: {cluster}\n\
         initial-cluster-state: new\n\
         initial-cluster-token: shield-{token}\n",
        me = name(&this),
        n = members.len(),
        dir = data_dir.display(),
        cluster = cluster.join(","),
        // The same on every member: derived from the member list.
        token = members.iter().map(|m| u32::from(*m)).fold(0u32, |a, m| a.rotate_left(5) ^ m),
    )
}

fn etcd_unit(etcd_bin: &Path, config: &Path) -> String {
    include_str!("../../../contrib/systemd/etcd.service")
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

/// A root step `shield init` prints, or runs with `--apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    argv: Vec<String>,
    /// Skipped when this command succeeds (`id etcd`: the user exists).
    unless: Option<Vec<String>>,
}

impl Step {
    fn new(argv: &[&str]) -> Step {
        Step { argv: argv.iter().map(|a| (*a).to_owned()).collect(), unless: None }
    }

    fn unless(mut self, argv: &[&str]) -> Step {
        self.unless = Some(argv.iter().map(|a| (*a).to_owned()).collect());
        self
    }

    fn shown(&self) -> String {
        let cmd = self.argv.join(" ");
        match &self.unless {
            Some(u) => format!("{} >/dev/null 2>&1 || {cmd}", u.join(" ")),
            None => cmd,
        }
    }
}

/// Prints the root steps, or runs them in order (`--apply`, as root), stopping at the first
/// failure with the step and its error output.
fn root_steps(ask: &mut Asker<'_>, note: &str, steps: &[Step], apply: bool) -> Result<(), String> {
    if !apply {
        ask.say(&format!("Run as root ({note}), or re-run with --apply:"));
        for s in steps {
            ask.say(&format!("  {}", s.shown()));
        }
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("--apply needs root: run the printed steps as root, or this command with sudo".to_owned());
    }
    let run = |argv: &[String]| {
        shield_db_postgres::process::command(&argv[0], shield_db_postgres::process::Caps::Drop)
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
    };
    for s in steps {
        if let Some(u) = &s.unless {
            if run(u).is_ok_and(|o| o.status.success()) {
                ask.say(&format!("skipped (already done): {}", s.argv.join(" ")));
                continue;
            }
        }
        let out = run(&s.argv).map_err(|e| format!("`{}`: cannot run it: {e}", s.argv.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                s.argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        ask.say(&format!("done: {}", s.argv.join(" ")));
    }
    Ok(())
}

// ---- node ---------------------------------------------------------------------------------------

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
    let host_bits = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(ip) | host_bits)
}

fn in_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    u32::from(a) & mask == u32::from(b) & mask
}

/// A password for a generated config: 24 characters from the OS's random source.
fn password() -> Result<String, String> {
    use std::io::Read;
    let mut b = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The passwords a node's file holds; `None` ones are generated.
#[derive(Debug, Default)]
struct Secrets {
    superuser: Option<String>,
    replication: Option<String>,
    /// `restapi.authentication`'s password (the user is always `shield`).
    rest: Option<String>,
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
    Ok(Secrets {
        superuser: args.superuser_password.clone().or(from.superuser).or(old.superuser),
        replication: args.replication_password.clone().or(from.replication).or(old.replication),
        rest: from.rest.or(old.rest),
    })
}

/// Passwords already in an earlier version of the file, so a re-run produces the same file.
fn existing_passwords(path: &Path) -> Secrets {
    let Ok(text) = std::fs::read_to_string(path) else { return Secrets::default() };
    let Ok(v) = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text) else { return Secrets::default() };
    let pw = |who: &str| v["postgresql"]["authentication"][who]["password"].as_str().map(str::to_owned);
    Secrets {
        superuser: pw("superuser"),
        replication: pw("replication"),
        rest: v["restapi"]["authentication"]["password"].as_str().map(str::to_owned),
    }
}

fn vip_yaml(vip: Ipv4Addr, prefix: u8, interface: &str, broadcast: Ipv4Addr) -> String {
    format!(
        "vip:\n  address: {vip}\n  netmask: {}\n  broadcast: {broadcast}\n  interface: {interface}\n",
        Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
    )
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
    let default_mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(vip_prefix.unwrap_or(24))).unwrap_or(0));
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
    let text = match &patroni {
        Some(p) => {
            let mut t = p.clone();
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
            t + &vip_yaml(vip, prefix, &interface, broadcast)
        }
        None => {
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
            let bin_dir =
                args.bin_dir.clone().or_else(pg_config_bindir).ok_or("--bin-dir is required (no pg_config)")?;
            let secrets = chosen_passwords(args, ask)?;
            let generated = secrets.superuser.is_none() || secrets.replication.is_none() || secrets.rest.is_none();
            let or_new = |p: Option<String>| p.map_or_else(password, Ok);
            let su = or_new(secrets.superuser)?;
            let rep = or_new(secrets.replication)?;
            let rest = or_new(secrets.rest)?;
            // Unsafe REST requests: from the members and this host's loopback only.
            let members = match &args.members {
                Some(m) => member_ips(m)?.0,
                None => etcd.clone(),
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
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let net = format!("{}/{prefix}", Ipv4Addr::from(u32::from(vip) & mask));
            node_yaml(&NodeYaml {
                net: &net,
                socket_dir: args.socket_dir.as_deref(),
                scope: &args.scope,
                name: &name,
                this,
                port: args.port,
                etcd: &etcd,
                data_dir: &data_dir,
                bin_dir: &bin_dir,
                su_password: &su,
                rep_password: &rep,
                rest_password: &rest,
                members: &members,
                rest_loopback_only: args.rest_loopback_only,
            }) + &vip_yaml(vip, prefix, &interface, broadcast)
        }
    };
    // What is written must be what the daemon accepts.
    let env = std::collections::BTreeMap::new();
    crate::config::NodeConfig::parse(&args.out, &text, &env)
        .map_err(|e| format!("the generated config is invalid: {e}"))?;
    // It holds passwords: 0600 from its creation, and so is its backup.
    let w = write_file(&args.out, &text, args.write.force, Access::Secret)?;
    report(&mut ask.out, &args.out, &w);
    let user = args.user.clone().or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "postgres".to_owned());
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/local/bin/shield"));
    let unit_path = args.out.with_file_name("shield.service");
    let unit = include_str!("../../../contrib/systemd/shield.service")
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
    Ok(args.out.clone())
}

fn pg_config_bindir() -> Option<PathBuf> {
    let out = shield_db_postgres::process::command("pg_config", shield_db_postgres::process::Caps::Drop)
        .arg("--bindir")
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

struct NodeYaml<'a> {
    /// The cluster's network (the VIP's subnet), for pg_hba.
    net: &'a str,
    socket_dir: Option<&'a Path>,
    scope: &'a str,
    name: &'a str,
    this: Ipv4Addr,
    port: u16,
    etcd: &'a [Ipv4Addr],
    data_dir: &'a Path,
    bin_dir: &'a Path,
    su_password: &'a str,
    rep_password: &'a str,
    /// `restapi.authentication`'s password.
    rest_password: &'a str,
    /// The addresses allowed to send unsafe REST requests (with loopback).
    members: &'a [Ipv4Addr],
    rest_loopback_only: bool,
}

/// The `restapi` section: credentials for unsafe requests always; an allowlist of the members
/// and loopback, or a loopback-only listen.
fn restapi_yaml(n: &NodeYaml<'_>) -> String {
    let listen = if n.rest_loopback_only { "127.0.0.1:8008" } else { "0.0.0.0:8008" };
    let mut allow = vec!["127.0.0.1".to_owned(), "::1".to_owned()];
    if !n.rest_loopback_only {
        for a in n.members.iter().chain([&n.this]) {
            if !allow.contains(&a.to_string()) {
                allow.push(a.to_string());
            }
        }
    }
    let allow: Vec<String> = allow.iter().map(|a| format!("  - '{a}'\n")).collect();
    format!(
        "restapi:\n  listen: {listen}\n  connect_address: {this}:8008\n\
         \x20 authentication:\n    username: shield\n    password: {pw}\n\
         \x20 allowlist:\n{allow}\
         \x20 allowlist_include_members: {members}\n",
        this = n.this,
        pw = n.rest_password,
        allow = allow.concat(),
        members = !n.rest_loopback_only,
    )
}

fn node_yaml(n: &NodeYaml<'_>) -> String {
    let hosts: Vec<String> = n.etcd.iter().map(|e| format!("  - {e}:2379\n")).collect();
    let data = n.data_dir.display();
    format!(
        "# Node {name} of cluster {scope}, written by `shield init node`. Patroni's keys, plus `vip`.\n\
         scope: {scope}\n\
         name: {name}\n\
         {restapi}\
         etcd3:\n  hosts:\n{hosts}\
         bootstrap:\n  dcs:\n    ttl: 4\n    loop_wait: 1\n    retry_timeout: 1.5\n    postgresql:\n      use_pg_rewind: true\n\
         \x20 initdb:\n  - encoding: UTF8\n  - data-checksums\n\
         \x20 pg_hba:\n  - host replication replicator {net} scram-sha-256\n  - host all all {net} scram-sha-256\n\
         \x20 - host replication replicator 127.0.0.1/32 scram-sha-256\n  - host all all 127.0.0.1/32 scram-sha-256\n\
         postgresql:\n  listen: 0.0.0.0:{port}\n  connect_address: {this}:{port}\n  data_dir: {data}\n  bin_dir: {bin}\n\
         \x20 pgpass: {data}.pgpass\n\
         \x20 authentication:\n    superuser:\n      username: postgres\n      password: {su}\n\
         \x20   replication:\n      username: replicator\n      password: {rep}\n\
         {params}\
         watchdog:\n  mode: automatic\n",
        restapi = restapi_yaml(n),
        net = n.net,
        params = n
            .socket_dir
            .map(|d| format!("  parameters:\n    unix_socket_directories: '{}'\n", d.display()))
            .unwrap_or_default(),
        name = n.name,
        scope = n.scope,
        this = n.this,
        hosts = hosts.concat(),
        port = n.port,
        bin = n.bin_dir.display(),
        su = n.su_password,
        rep = n.rep_password,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_are_checked() {
        let (ips, w) = member_ips("10.0.0.1, 10.0.0.2,10.0.0.3").expect("valid");
        assert_eq!(ips.len(), 3);
        assert!(w.is_empty());
        assert!(member_ips("10.0.0.1,10.0.0.1,10.0.0.2").expect_err("dup").contains("twice"));
        assert!(member_ips("10.0.0.1,10.0.0.300").expect_err("bad").contains("10.0.0.300"));
        assert!(member_ips("10.0.0.1,,10.0.0.2").expect_err("empty").contains("empty"));
        assert!(member_ips("10.0.0.1,10.0.0.2").expect("ok").1[0].contains("cannot survive"));
        assert!(member_ips("10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4").expect("ok").1[0].contains("odd"));
    }

    #[test]
    fn broadcast_is_derived() {
        assert_eq!(
            broadcast_of("10.16.16.199".parse().expect("ip"), 24),
            "10.16.16.255".parse::<Ipv4Addr>().expect("ip")
        );
        assert_eq!(
            broadcast_of("10.16.16.199".parse().expect("ip"), 32),
            "10.16.16.199".parse::<Ipv4Addr>().expect("ip")
        );
        assert_eq!(
            broadcast_of("10.16.17.1".parse().expect("ip"), 23),
            "10.16.17.255".parse::<Ipv4Addr>().expect("ip")
        );
    }

    #[test]
    fn etcd_config_names_every_member_the_same_way() {
        let m: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().map(|s| s.parse().expect("ip")).collect();
        let a = etcd_config(&m, m[0], Path::new("/var/lib/etcd"));
        let b = etcd_config(&m, m[1], Path::new("/var/lib/etcd"));
        let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).map(str::to_owned);
        assert_eq!(line(&a, "initial-cluster:"), line(&b, "initial-cluster:"));
        assert_eq!(line(&a, "initial-cluster-token:"), line(&b, "initial-cluster-token:"));
        assert_eq!(line(&b, "name:").as_deref(), Some("name: etcd2"));
        assert!(a.contains(
            "initial-cluster: etcd1=http://10.0.0.1:2380,etcd2=http://10.0.0.2:2380,etcd3=http://10.0.0.3:2380"
        ));
    }

    #[test]
    fn bad_answers_are_asked_again() {
        let input = "10.0.0.1,10.0.0.1\n10.0.0.1,10.0.0.2,10.0.0.3\n";
        let mut out = Vec::new();
        let got = {
            let mut a = Asker::new(input.as_bytes(), &mut out);
            a.value(None, "Please input IP list", None, "etcd member list", member_ips).expect("second answer")
        };
        assert_eq!(got.0.len(), 3);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("is not a valid etcd member list: 10.0.0.1 is listed twice"), "{text}");
        let mut out = Vec::new();
        let mut a = Asker::new("x\ny\nz\n".as_bytes(), &mut out);
        assert!(a
            .value(None, "Q", None, "VIP", |_| Err::<(), _>("no".to_owned()))
            .expect_err("3 bad")
            .contains("after 3"));
    }

    #[test]
    fn files_are_not_overwritten_without_force() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("sub/x.yml");
        assert_eq!(write_file(&p, "a: 1\n", false, Access::Public), Ok(Written::Created));
        assert_eq!(write_file(&p, "a: 1\n", false, Access::Public), Ok(Written::Unchanged));
        let e = write_file(&p, "a: 2\n", false, Access::Public).expect_err("changed");
        assert!(e.contains("-a: 1") && e.contains("+a: 2") && e.contains("--force"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "a: 1\n");
        assert_eq!(write_file(&p, "a: 2\n", true, Access::Public), Ok(Written::Replaced));
        assert_eq!(std::fs::read_to_string(p.with_extension("bak")).expect("bak"), "a: 1\n");
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn secret_files_and_their_backups_are_owner_only_and_diffs_hide_passwords() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("shield.yml");
        let v1 = "scope: a\npostgresql:\n  authentication:\n    superuser:\n      password: s3cret-one\n";
        assert_eq!(write_file(&p, v1, false, Access::Secret), Ok(Written::Created));
        assert_eq!(mode(&p), 0o600, "0600 from creation, no chmod afterwards");
        // Left readable by an older version: an unchanged re-run narrows it.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(write_file(&p, v1, false, Access::Secret), Ok(Written::Unchanged));
        assert_eq!(mode(&p), 0o600);
        // A changed file: the diff shows what changed but neither password.
        let v2 = v1.replace("scope: a", "scope: b").replace("s3cret-one", "s3cret-two");
        let e = write_file(&p, &v2, false, Access::Secret).expect_err("changed");
        assert!(e.contains("-scope: a") && e.contains("+scope: b"), "{e}");
        assert!(!e.contains("s3cret") && e.contains("not shown"), "{e}");
        // Only a password changed: still said, still not shown.
        let v3 = v1.replace("s3cret-one", "s3cret-three");
        let e = write_file(&p, &v3, false, Access::Secret).expect_err("changed");
        assert!(!e.contains("s3cret") && e.contains("secret values differ"), "{e}");
        // --force: the backup with the old password is owner-only too, even from a wide original.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(write_file(&p, &v2, true, Access::Secret), Ok(Written::Replaced));
        assert_eq!((mode(&p), mode(&p.with_extension("bak"))), (0o600, 0o600));
        assert_eq!(std::fs::read_to_string(p.with_extension("bak")).expect("bak"), v1);
    }

    #[test]
    fn secret_values_are_redacted_line_by_line() {
        assert_eq!(redact_line("      password: abc"), "      password: <hidden>");
        assert_eq!(redact_line("  keyfile_password: 'x:y'"), "  keyfile_password: <hidden>");
        assert_eq!(redact_line("  token: t"), "  token: <hidden>");
        assert_eq!(redact_line("    superuser:"), "    superuser:");
        assert_eq!(redact_line("  listen: 0.0.0.0:8008"), "  listen: 0.0.0.0:8008");
    }
}
