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

pub(crate) mod etcd;
pub(crate) mod node;
#[cfg(test)]
mod tests;
pub(crate) mod yaml;

pub use etcd::{etcd_config, init_etcd, EtcdInit};
pub use node::{broadcast_of, init_node, NodeInit};

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

pub(crate) fn redact_line(line: &str) -> String {
    let Some((key, value)) = line.split_once(':') else { return line.to_owned() };
    let k = key.trim().trim_start_matches("- ").to_ascii_lowercase();
    let secret = ["password", "token", "secret"].iter().any(|s| k.contains(s));
    if secret && !value.trim().is_empty() {
        format!("{key}: <hidden>")
    } else {
        line.to_owned()
    }
}

pub(crate) fn report(out: &mut dyn Write, path: &Path, w: &Written) {
    let what = match w {
        Written::Created => "written",
        Written::Unchanged => "unchanged",
        Written::Replaced => "replaced (the old file kept as .bak)",
    };
    let _ = writeln!(out, "{}: {what}", path.display());
}

// ---- etcd ---------------------------------------------------------------------------------------

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
        // Quoted for a shell: these lines are meant to be pasted (paths may hold spaces).
        let cmd = shell_words::join(&self.argv);
        match &self.unless {
            Some(u) => format!("{} >/dev/null 2>&1 || {cmd}", shell_words::join(u)),
            None => cmd,
        }
    }
}

/// Prints the root steps, or runs them in order (`--apply`, as root), stopping at the first
/// failure with the step and its error output.
pub(crate) fn root_steps(ask: &mut Asker<'_>, note: &str, steps: &[Step], apply: bool) -> Result<(), String> {
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
                ask.say(&format!("skipped (already done): {}", shell_words::join(&s.argv)));
                continue;
            }
        }
        let out = run(&s.argv).map_err(|e| format!("`{}`: cannot run it: {e}", shell_words::join(&s.argv)))?;
        if !out.status.success() {
            return Err(format!(
                "`{}` failed ({}): {}",
                shell_words::join(&s.argv),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        ask.say(&format!("done: {}", shell_words::join(&s.argv)));
    }
    Ok(())
}

// ---- node ---------------------------------------------------------------------------------------
