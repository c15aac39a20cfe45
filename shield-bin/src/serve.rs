//! Serving the REST API: plain HTTP or TLS (`restapi.certfile`), one connection task per client,
//! and Patroni's access rules for unsafe requests (POST, PUT, PATCH, DELETE): `restapi.allowlist`
//! (addresses and networks; `allowlist_include_members` adds the members' own API hosts) and,
//! with `verify_client: optional`, a verified client certificate. Safe requests (health checks,
//! status) are never restricted, as in Patroni, so load balancers keep working.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

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
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// `restapi.allowlist` (empty: anyone, subject to basic auth).
    pub allowlist: Vec<Cidr>,
    /// `restapi.allowlist_include_members`.
    pub include_members: bool,
    /// `verify_client: optional`: unsafe requests need a verified client certificate.
    pub cert_for_unsafe: bool,
}

/// What the connection task knows about its client, for the access check.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// It presented a certificate the server verified.
    pub verified_cert: bool,
}

/// The members' API hosts, for `allowlist_include_members` (names are looked up).
async fn member_ips(cluster: &shield_core::cluster::ClusterView) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for m in cluster.members.values() {
        let Some(url) = m.data.api_url.as_deref() else { continue };
        let Some(hostport) = url.split("://").nth(1).and_then(|r| r.split('/').next()) else { continue };
        let hostport = if hostport.contains(':') { hostport.to_owned() } else { format!("{hostport}:80") };
        if let Ok(addrs) = tokio::net::lookup_host(hostport).await {
            out.extend(addrs.map(|a| a.ip()));
        }
    }
    out
}

async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<crate::api::ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let unsafe_method = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if !unsafe_method {
        return next.run(req).await;
    }
    let access = state.access.lock().map(|a| a.clone()).unwrap_or_default();
    let peer = req.extensions().get::<Peer>().copied();
    if access.cert_for_unsafe && !peer.is_some_and(|p| p.verified_cert) {
        return (StatusCode::FORBIDDEN, "a verified client certificate is required for this request").into_response();
    }
    if !access.allowlist.is_empty() || access.include_members {
        let Some(ip) = peer.map(|p| p.addr.ip()) else {
            return (StatusCode::FORBIDDEN, "the client address is unknown").into_response();
        };
        let mut allowed = access.allowlist.iter().any(|c| c.contains(ip));
        if !allowed && access.include_members {
            let cluster = state.snap.lock().map(|s| s.cluster.clone()).unwrap_or_default();
            allowed = member_ips(&cluster)
                .await
                .iter()
                .any(|m| Cidr { addr: *m, prefix: if m.is_ipv4() { 32 } else { 128 } }.contains(ip));
        }
        if !allowed {
            return (StatusCode::FORBIDDEN, format!("{ip} is not in restapi.allowlist")).into_response();
        }
    }
    next.run(req).await
}

/// Serves `app` on `listener` until the process ends, over TLS when `tls` is set.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<crate::api::ApiState>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let app = app.layer(axum::middleware::from_fn_with_state(state, guard));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "REST API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                None => connection(tcp, app, Peer { addr, verified_cert: false }).await,
                Some(acc) => match tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let verified_cert = stream.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                        connection(stream, app, Peer { addr, verified_cert }).await;
                    }
                    Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "REST API: TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %addr, "REST API: TLS handshake timed out"),
                },
            }
        });
    }
}

async fn connection<S>(stream: S, app: Router, peer: Peer)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = app.layer(axum::Extension(peer));
    let svc = hyper_util::service::TowerToHyperService::new(svc);
    let io = hyper_util::rt::TokioIo::new(stream);
    if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await {
        tracing::debug!(peer = %peer.addr, error = %e, "REST API: connection ended with an error");
    }
}

/// Replaces the access rules (start-up and config reload).
pub fn set_access(state: &crate::api::ApiState, access: Access) {
    if let Ok(mut a) = state.access.lock() {
        *a = access;
    }
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
