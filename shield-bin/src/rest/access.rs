//! Who may send unsafe requests: the allowlist (addresses, networks, host names resolved in the
//! background), the failed-attempt throttle, and the constant-time credential check.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// An address or network in `restapi.allowlist`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `10.0.0.5` or `::1`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an address or network"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Who may send unsafe requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// `restapi.allowlist`'s addresses and networks (with `hosts` empty too: anyone, subject to
    /// basic auth).
    pub allowlist: Vec<Cidr>,
    /// `restapi.allowlist`'s host names, looked up by [`resolver`] off the HA loop.
    pub hosts: Vec<String>,
    /// `restapi.allowlist_include_members`.
    pub include_members: bool,
    /// `verify_client: optional`: unsafe requests need a verified client certificate.
    pub cert_for_unsafe: bool,
}

impl Access {
    /// Whether any allowlist applies.
    pub(crate) fn restricted(&self) -> bool {
        !self.allowlist.is_empty() || !self.hosts.is_empty() || self.include_members
    }
}

/// What the connection task knows about its client, for the access check.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// It presented a certificate the server verified.
    pub verified_cert: bool,
}

/// Limits of the REST server: what one client can hold and send.
pub mod limits {
    use std::time::Duration;
    /// Open connections at once; more are accepted and closed at once.
    pub const MAX_CONNECTIONS: usize = 1024;
    /// A request's headers (and, on a kept-alive connection, the wait for the next request) must
    /// arrive within this.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// A request's body must arrive within this.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
    /// The largest body taken (a whole dynamic config fits many times over).
    pub const MAX_BODY: usize = 1 << 20;
    /// Failed authentications from one client (an IPv6 /64 counts as one) within
    /// [`FAILURE_WINDOW`] before its unsafe requests are refused with 429 for the rest of it.
    pub const MAX_FAILURES: u32 = 5;
    /// See [`MAX_FAILURES`].
    pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
    /// Clients whose failures are remembered at once (the oldest spell is forgotten first).
    pub const MAX_TRACKED: usize = 4096;
    /// How often [`super::resolver`] looks the allowlist's host names and the members up again.
    pub const RESOLVE_EVERY: Duration = Duration::from_secs(15);
}

/// Failed authentications per client, for the rate limit.
#[derive(Debug, Default)]
pub struct Throttle {
    pub(crate) spells: std::collections::HashMap<IpAddr, (Instant, u32)>,
}

/// The key a client's failures count under: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
        v4 => v4,
    }
}

impl Throttle {
    /// Whether `ip` has used up its failures in the current window.
    pub fn locked_out(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = client_key(ip);
        match self.spells.get(&key) {
            Some((since, _)) if now.duration_since(*since) >= limits::FAILURE_WINDOW => {
                self.spells.remove(&key);
                false
            }
            Some((_, n)) => *n >= limits::MAX_FAILURES,
            None => false,
        }
    }

    /// Counts a failed authentication from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.spells.len() >= limits::MAX_TRACKED {
            self.spells.retain(|_, (since, _)| now.duration_since(*since) < limits::FAILURE_WINDOW);
            if self.spells.len() >= limits::MAX_TRACKED {
                if let Some(oldest) = self.spells.iter().min_by_key(|(_, (since, _))| *since).map(|(k, _)| *k) {
                    self.spells.remove(&oldest);
                }
            }
        }
        let spell = self.spells.entry(client_key(ip)).or_insert((now, 0));
        if now.duration_since(spell.0) >= limits::FAILURE_WINDOW {
            *spell = (now, 0);
        }
        spell.1 = spell.1.saturating_add(1);
    }
}

/// Whether `header` (an `Authorization` value) carries exactly `want`'s credentials. The
/// comparison is of SHA-256 digests in constant time, so neither the content nor the length of
/// the secret shows in how long a refusal takes.
pub fn credentials_match(header: Option<&str>, want: &shield_db_postgres::Credentials) -> bool {
    use base64::Engine as _;
    use subtle::ConstantTimeEq as _;
    let got = header
        .and_then(|h| h.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .unwrap_or_default();
    let expected = format!("{}:{}", want.username, want.password);
    let a = ring::digest::digest(&ring::digest::SHA256, &got);
    let b = ring::digest::digest(&ring::digest::SHA256, expected.as_bytes());
    bool::from(a.as_ref().ct_eq(b.as_ref()))
}

/// The addresses of the members' API hosts and of the allowlist's host names.
pub(crate) async fn resolve(access: &Access, cluster: &shield_core::cluster::ClusterView) -> Vec<IpAddr> {
    let mut names: Vec<String> = access.hosts.iter().map(|h| format!("{h}:0")).collect();
    if access.include_members {
        for m in cluster.members.values() {
            let Some(url) = m.data.api_url.as_deref() else { continue };
            let Some(hostport) = url.split("://").nth(1).and_then(|r| r.split('/').next()) else { continue };
            names.push(if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") });
        }
    }
    let mut out = Vec::new();
    for name in names {
        // Bounded: a slow resolver delays the next refresh, never a request.
        match tokio::time::timeout(Duration::from_secs(5), tokio::net::lookup_host(name.as_str())).await {
            Ok(Ok(addrs)) => out.extend(addrs.map(|a| a.ip())),
            Ok(Err(e)) => tracing::debug!(host = %name, error = %e, "REST allowlist: lookup failed"),
            Err(_) => tracing::debug!(host = %name, "REST allowlist: lookup timed out"),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One address as a network.
pub(crate) fn host(ip: IpAddr) -> Cidr {
    Cidr { addr: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_addresses() {
        let c = Cidr::parse("10.16.16.0/24").expect("cidr");
        assert!(c.contains("10.16.16.200".parse().expect("ip")));
        assert!(!c.contains("10.16.17.1".parse().expect("ip")));
        assert!(c.contains("::ffff:10.16.16.5".parse().expect("ip")), "IPv4-mapped peers");
        assert!(Cidr::parse("127.0.0.1").expect("host").contains("127.0.0.1".parse().expect("ip")));
        assert!(Cidr::parse("0.0.0.0/0").expect("all").contains("192.0.2.1".parse().expect("ip")));
        assert!(Cidr::parse("fd00::/8").expect("v6").contains("fd12::1".parse().expect("ip")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("host.example").is_err());
    }
}
