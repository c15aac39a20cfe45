//! The VIP backend: the cluster's virtual IPv4 address on this host, behind shield-core's [`Vip`]
//! port.
//!
//! It drives iproute2's `ip` (add, delete, show) and iputils' `arping -U` (gratuitous ARP), the
//! tools Halo Shield already relies on, rather than raw netlink and packet sockets: the tools are
//! on every host, their effect is what an operator checks with the same commands, and the daemon
//! needs no unsafe socket code. They run without root: the systemd unit grants the daemon
//! `CAP_NET_ADMIN` and `CAP_NET_RAW` as *ambient* capabilities, which the tools inherit (no sudo,
//! unlike the seed's set-up).
//!
//! Binding is idempotent (an address already present is kept), and is followed by a few
//! unsolicited ARP announcements, sent in the background so the HA loop never waits on them, so
//! switches and peers replace the old primary's MAC at once instead of after their cache timeout.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use shield_core::ports::{ErrorKind, PortError, Vip};

/// The `vip` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipSettings {
    /// `address`.
    pub address: Ipv4Addr,
    /// From `netmask` or `prefix`.
    pub prefix: u8,
    /// `interface`.
    pub interface: String,
    /// `broadcast`, if given.
    pub broadcast: Option<Ipv4Addr>,
    /// `announcements`: how many gratuitous ARPs after binding (default 3; 0: none).
    pub announcements: u32,
}

impl VipSettings {
    /// `address/prefix`, as `ip` takes it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }
}

/// The prefix length of a dotted netmask, if it is one (contiguous ones).
pub fn netmask_prefix(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

/// Finds a tool in `PATH`, then in the sbin directories a service's PATH may lack.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The VIP through `ip` and `arping`.
#[derive(Debug)]
pub struct IpVip {
    s: VipSettings,
    ip: PathBuf,
    arping: Option<PathBuf>,
}

impl IpVip {
    /// A VIP for `s`; `Err` when `ip` is missing. Without `arping` the address is bound
    /// unannounced, with a warning.
    pub fn new(s: VipSettings) -> Result<IpVip, String> {
        let ip = find_tool("ip").ok_or("the `ip` command (iproute2) is not installed")?;
        let arping = find_tool("arping");
        if arping.is_none() && s.announcements > 0 {
            tracing::warn!("vip: `arping` (iputils-arping) is not installed; the VIP will not be announced");
        }
        Ok(IpVip { s, ip, arping })
    }

    fn failed(&self, doing: &str, e: impl std::fmt::Display) -> PortError {
        PortError::new(ErrorKind::Io, format!("vip {} on {}: {doing}: {e}", self.s.cidr(), self.s.interface))
    }

    async fn ip(&self, args: &[&str]) -> Result<String, PortError> {
        run(&self.ip, args).await.map_err(|e| self.failed(&format!("ip {}", args.join(" ")), e))
    }

    fn announce(&self) {
        let (Some(arping), n) = (self.arping.clone(), self.s.announcements) else { return };
        if n == 0 {
            return;
        }
        let args =
            ["-U", "-c", &n.to_string(), "-I", &self.s.interface, &self.s.address.to_string()].map(str::to_owned);
        tokio::spawn(async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            match tokio::time::timeout(Duration::from_secs(u64::from(n) + 3), run(&arping, &refs)).await {
                Ok(Ok(_)) => tracing::info!(count = n, "vip: announced with gratuitous ARP"),
                Ok(Err(e)) => tracing::warn!(error = %e, "vip: gratuitous ARP failed"),
                Err(_) => tracing::warn!("vip: gratuitous ARP did not finish"),
            }
        });
    }
}

/// Runs `bin args`, bounded; `Err` carries its stderr.
async fn run(bin: &Path, args: &[&str]) -> Result<String, String> {
    // `ip` and `arping` are the only programs that keep the daemon's ambient capabilities.
    let mut cmd = shield_db_postgres::process::tokio_command(bin, shield_db_postgres::process::Caps::KeepForVip);
    cmd.args(args).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(10), cmd.output())
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{} ({})", String::from_utf8_lossy(&out.stderr).trim(), out.status))
    }
}

/// Whether `ip -o -4 addr show` output lists `addr` as an address (any prefix).
fn listed(show: &str, addr: Ipv4Addr) -> bool {
    let want = format!("inet {addr}/");
    show.lines().any(|l| l.contains(&want))
}

#[async_trait]
impl Vip for IpVip {
    async fn add(&self) -> Result<(), PortError> {
        if !self.is_bound().await? {
            let cidr = self.s.cidr();
            let brd = self.s.broadcast.map(|b| b.to_string());
            let mut args = vec!["addr", "add", &cidr];
            if let Some(b) = &brd {
                args.extend(["brd", b]);
            }
            args.extend(["dev", &self.s.interface]);
            self.ip(&args).await?;
            tracing::info!(address = %cidr, interface = %self.s.interface, "vip: bound");
        }
        self.announce();
        Ok(())
    }

    async fn remove(&self) -> Result<(), PortError> {
        if self.is_bound().await? {
            let cidr = self.s.cidr();
            self.ip(&["addr", "del", &cidr, "dev", &self.s.interface]).await?;
            tracing::info!(address = %cidr, interface = %self.s.interface, "vip: removed");
        }
        Ok(())
    }

    async fn is_bound(&self) -> Result<bool, PortError> {
        let show = self.ip(&["-o", "-4", "addr", "show", "dev", &self.s.interface]).await?;
        Ok(listed(&show, self.s.address))
    }
}

/// Removes the VIP without the async runtime (the fence keeper, which prints the line returned).
pub fn remove_blocking(cidr: &str, interface: &str) -> String {
    let Some(ip) = find_tool("ip") else {
        return format!("cannot remove the VIP {cidr}: `ip` is not installed");
    };
    let out = shield_db_postgres::process::command(ip, shield_db_postgres::process::Caps::KeepForVip)
        .args(["addr", "del", cidr, "dev", interface])
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => format!("vip: removed {cidr} from {interface}"),
        Ok(o) => format!("removing the VIP {cidr}: {}", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("removing the VIP {cidr}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_give_prefixes() {
        let p = |m: &str| netmask_prefix(m.parse().expect("ip"));
        assert_eq!(p("255.255.255.0"), Some(24));
        assert_eq!(p("255.255.255.255"), Some(32));
        assert_eq!(p("0.0.0.0"), Some(0));
        assert_eq!(p("255.255.254.0"), Some(23));
        assert_eq!(p("255.0.255.0"), None, "not contiguous");
    }

    #[test]
    fn ip_show_output_is_read() {
        let show = "2: eth0    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\\       valid_lft forever\n\
                    2: eth0    inet 10.0.0.199/24 brd 10.0.0.255 scope global secondary eth0\\       valid_lft forever\n";
        assert!(listed(show, "10.0.0.199".parse().expect("ip")));
        assert!(!listed(show, "10.0.0.19".parse().expect("ip")));
        assert!(!listed("", "10.0.0.199".parse().expect("ip")));
    }
}
