//! Every child process the daemon starts is built here, so that none inherits what it must not
//! have:
//!
//! - systemd's notification variables ([`scrub`]);
//! - password variables (`PGPASSWORD`, `PATRONI_SUPERUSER_PASSWORD`, `PATRONI_CONFIGURATION`,
//!   ...): PostgreSQL's tools get their credentials from the pgpass file (`PGPASSFILE`), and
//!   callbacks and `archive_command` have no business reading the daemon's;
//! - the ambient capabilities the systemd unit grants the daemon (CAP_NET_ADMIN, CAP_NET_RAW) for
//!   the VIP: only `ip` and `arping` (and the fence keeper, which runs `ip`) keep them. Without
//!   this, PostgreSQL, every `archive_command` it runs and every callback script could
//!   reconfigure the host's network.

use std::ffi::{OsStr, OsString};

/// Whether a child keeps the daemon's ambient capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caps {
    /// Cleared before the program runs (everything but the VIP's tools).
    Drop,
    /// Kept: `ip`, `arping` and the fence keeper.
    KeepForVip,
}

/// Whether an environment variable holds a password, token or a whole config with them.
pub fn is_secret_var(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    if n.ends_with("PASSWORD") || n.ends_with("_PASS") {
        return true;
    }
    let ours = n.starts_with("PATRONI_") || n.starts_with("SHIELD_");
    // `*_TOKEN`, not `*_TOKENS`: PATRONI_RESTAPI_SERVER_TOKENS is a header setting.
    ours && (n.contains("PASSWORD") || n.contains("SECRET") || n.ends_with("_TOKEN") || n.ends_with("CONFIGURATION"))
}

/// The names in `vars` that [`is_secret_var`] removes (non-UTF-8 names are compared lossily).
fn secret_names(vars: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    vars.into_iter().filter(|n| is_secret_var(&n.to_string_lossy())).collect()
}

/// Removes the daemon's secret variables from `cmd`'s environment.
fn scrub_secrets(cmd: &mut std::process::Command, names: &[OsString]) {
    for n in names {
        cmd.env_remove(n);
    }
}

/// A child process with a clean environment and, unless `caps` keeps them, no ambient
/// capabilities. Everything the daemon spawns comes from here (or [`tokio_command`]).
pub fn command(program: impl AsRef<OsStr>, caps: Caps) -> std::process::Command {
    let mut cmd = std::process::Command::new(program);
    scrub(&mut cmd);
    scrub_secrets(&mut cmd, &secret_names(std::env::vars_os().map(|(k, _)| k)));
    if caps == Caps::Drop {
        drop_ambient_caps(&mut cmd);
    }
    cmd
}

/// [`command`] for tokio.
pub fn tokio_command(program: impl AsRef<OsStr>, caps: Caps) -> tokio::process::Command {
    tokio::process::Command::from(command(program, caps))
}

/// Clears the child's ambient capability set between fork and exec.
///
/// Safe for the daemon: it runs in the forked child only, so the daemon keeps its own
/// capabilities for `ip`/`arping`. Safe for the child: an unprivileged program (PostgreSQL, a
/// script) needs none of them, and without ambient capabilities its capabilities after exec are
/// only what its file grants, as for any program run by that user. On kernels without ambient
/// capabilities (before 4.3) prctl answers EINVAL and there is nothing to clear.
#[allow(unsafe_code)]
fn drop_ambient_caps(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only async-signal-safe
    // operations are allowed. It makes one prctl system call and reads errno; it allocates
    // nothing, takes no lock and touches no state shared with the parent.
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
            if r == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) {
                Ok(())
            } else {
                Err(e)
            }
        });
    }
}

/// systemd's notification variables, removed from every child's environment: PostgreSQL (which
/// Debian builds with systemd support), callbacks and the fence keeper must not talk to systemd
/// on the daemon's behalf.
pub const CHILD_ENV_REMOVE: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Removes systemd's notification variables from a child's environment.
pub fn scrub(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for v in CHILD_ENV_REMOVE {
        cmd.env_remove(v);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_variables_are_told_apart() {
        for secret in [
            "PGPASSWORD",
            "PATRONI_SUPERUSER_PASSWORD",
            "PATRONI_REPLICATION_PASSWORD",
            "PATRONI_REWIND_PASSWORD",
            "PATRONI_RESTAPI_PASSWORD",
            "PATRONI_RESTAPI_KEYFILE_PASSWORD",
            "PATRONI_SUPERUSER_SSLPASSWORD",
            "PATRONI_ETCD3_PASSWORD",
            "PATRONI_CONSUL_TOKEN",
            "PATRONI_CONFIGURATION",
            "SHIELD_CONFIGURATION",
            "SHIELD_CTL_PASSWORD",
            "SHIELD_SOME_SECRET_FILE",
            "PATRONI_admin_PASSWORD",
            "ETCDCTL_PASSWORD",
            "MY_DB_PASS",
            "pgpassword",
        ] {
            assert!(is_secret_var(secret), "{secret} must be removed");
        }
        for kept in [
            "PATH",
            "HOME",
            "PGPASSFILE",
            "PGDATA",
            "PATRONI_SCOPE",
            "PATRONI_NAME",
            "PATRONI_RESTAPI_SERVER_TOKENS",
            "PATRONI_SUPERUSER_USERNAME",
            "SHIELD_LOG",
            "PASSAGE",
            "COMPASS",
            "TOKEN_BUCKET",
        ] {
            assert!(!is_secret_var(kept), "{kept} must be kept");
        }
    }

    #[test]
    fn children_lose_the_secret_variables_and_keep_the_rest() {
        let names: Vec<OsString> = ["PATH", "PGPASSWORD", "PATRONI_SCOPE", "PATRONI_SUPERUSER_PASSWORD"]
            .into_iter()
            .map(OsString::from)
            .collect();
        let removed = secret_names(names);
        assert_eq!(removed, ["PGPASSWORD", "PATRONI_SUPERUSER_PASSWORD"]);
        let mut cmd = std::process::Command::new("true");
        scrub_secrets(&mut cmd, &removed);
        let envs: Vec<(&OsStr, Option<&OsStr>)> = cmd.get_envs().collect();
        assert_eq!(envs, [(OsStr::new("PATRONI_SUPERUSER_PASSWORD"), None), (OsStr::new("PGPASSWORD"), None)]);
        // What the helper builds removes systemd's variables too.
        let built = command("true", Caps::Drop);
        let removed: Vec<&OsStr> = built.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k).collect();
        assert!(removed.contains(&OsStr::new("NOTIFY_SOCKET")), "{removed:?}");
    }

    /// The child starts with an empty ambient set (the pre_exec hook runs and does not fail).
    #[test]
    fn children_start_without_ambient_capabilities() {
        let out = command("sh", Caps::Drop).args(["-c", "grep CapAmb /proc/self/status"]).output().expect("run sh");
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.split_whitespace().nth(1), Some("0000000000000000"), "{text}");
    }
}
