//! Serving the REST API: plain HTTP or TLS (`restapi.certfile`), one connection task per client,
//! and Patroni's access rules for unsafe requests (POST, PUT, PATCH, DELETE): `restapi.allowlist`
//! (addresses and networks; `allowlist_include_members` adds the members' own API hosts) and,
//! with `verify_client: optional`, a verified client certificate; then basic auth
//! (`restapi.authentication`), compared in constant time, with a limit on failed attempts per
//! client. Safe requests (health checks, status) are never restricted, as in Patroni, so load
//! balancers keep working. Every connection has a header timeout (which also bounds keep-alive
//! idling), every body a size and time limit, and the server a connection cap ([`limits`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

/// An address or network in `restapi.allowlist`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl Cidr {
    /// Parses `10.0.0.0/8`, `10.0.0.5` or `::1` (host bits may be set: `10.0.0.5/24` is the
    /// network `10.0.0.0/24`).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let t = s.trim();
        if let Ok(addr) = t.parse::<IpAddr>() {
            return Ok(Cidr(ipnet::IpNet::from(addr)));
        }
        let (a, _) = t.split_once('/').ok_or_else(|| format!("{s:?} is not an address or network"))?;
        if a.parse::<IpAddr>().is_err() {
            return Err(format!("{s:?} is not an address or network"));
        }
        t.parse::<ipnet::IpNet>().map(Cidr).map_err(|_| format!("{s:?}: bad prefix length"))
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.contains(&ip)
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
    fn restricted(&self) -> bool {
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
    spells: std::collections::HashMap<IpAddr, (Instant, u32)>,
}

/// The key a client's failures count under: its IPv4 address, or its IPv6 /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(ipnet::Ipv6Net::new_assert(v6, 64).network()),
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
pub fn credentials_match(header: Option<&str>, want: &crate::config::Credentials) -> bool {
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
async fn resolve(access: &Access, cluster: &shield_core::cluster::ClusterView) -> Vec<IpAddr> {
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

/// Keeps [`crate::api::ApiState::resolved`] current: the allowlist's host names and, with
/// `allowlist_include_members`, the members' API hosts, looked up every
/// [`limits::RESOLVE_EVERY`] on the REST runtime, so that neither a request nor the HA loop
/// waits for DNS.
pub async fn resolver(state: Arc<crate::api::ApiState>) {
    loop {
        let access = state.access.lock().map(|a| a.clone()).unwrap_or_default();
        if !access.hosts.is_empty() || access.include_members {
            let cluster = state.snap.lock().map(|s| s.cluster.clone()).unwrap_or_default();
            let ips = resolve(&access, &cluster).await;
            if let Ok(mut r) = state.resolved.lock() {
                *r = ips;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(limits::RESOLVE_EVERY) => {}
            _ = state.access_changed.notified() => {}
        }
    }
}

/// Why an unsafe request is refused, if it is: the access rules, then the failed-attempt limit,
/// then basic auth.
fn refusal(state: &crate::api::ApiState, peer: Option<Peer>, authorization: Option<&str>) -> Option<Response> {
    let access = state.access.lock().map(|a| a.clone()).unwrap_or_default();
    if access.cert_for_unsafe && !peer.is_some_and(|p| p.verified_cert) {
        return Some(
            (StatusCode::FORBIDDEN, "a verified client certificate is required for this request").into_response(),
        );
    }
    let ip = peer.map(|p| p.addr.ip());
    if access.restricted() {
        let Some(ip) = ip else {
            return Some((StatusCode::FORBIDDEN, "the client address is unknown").into_response());
        };
        let allowed = access.allowlist.iter().any(|c| c.contains(ip))
            || state.resolved.lock().is_ok_and(|r| r.iter().any(|m| host(*m).contains(ip)));
        if !allowed {
            return Some((StatusCode::FORBIDDEN, format!("{ip} is not in restapi.allowlist")).into_response());
        }
    }
    let want = state.auth.lock().ok().and_then(|g| g.clone())?;
    let now = Instant::now();
    if let Some(ip) = ip {
        if state.throttle.lock().is_ok_and(|mut t| t.locked_out(ip, now)) {
            return Some(
                (StatusCode::TOO_MANY_REQUESTS, "too many failed authentications from this address; try again later")
                    .into_response(),
            );
        }
    }
    if credentials_match(authorization, &want) {
        return None;
    }
    if let (Some(ip), Ok(mut t)) = (ip, state.throttle.lock()) {
        t.failed(ip, now);
    }
    let msg = if authorization.is_some() { "not authenticated" } else { "no auth header received" };
    Some((StatusCode::UNAUTHORIZED, [("WWW-Authenticate", "Basic realm=\"Patroni\"")], msg).into_response())
}

/// One address as a network.
fn host(ip: IpAddr) -> Cidr {
    Cidr(ipnet::IpNet::from(ip))
}

/// The access check for unsafe methods (POST, PUT, PATCH, DELETE); safe ones pass. Each refusal
/// is logged with the client, the request and the reason.
async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<crate::api::ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let unsafe_method = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
    if !unsafe_method {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().copied();
    let authorization = req.headers().get("authorization").and_then(|h| h.to_str().ok());
    match refusal(&state, peer, authorization) {
        None => next.run(req).await,
        Some(refused) => {
            tracing::warn!(
                client = %peer.map_or("unknown".to_owned(), |p| p.addr.to_string()),
                method = %req.method(),
                path = %req.uri().path(),
                status = refused.status().as_u16(),
                "REST API: request refused"
            );
            refused
        }
    }
}

/// Reads the whole body within [`limits::BODY_TIMEOUT`] and [`limits::MAX_BODY`] before any
/// handler sees the request, so a client trickling a body holds nothing but its connection.
async fn bounded_body(req: Request, next: Next) -> Response {
    let declared =
        req.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits::MAX_BODY as u64) {
        return (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {} bytes", limits::MAX_BODY)).into_response();
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(limits::BODY_TIMEOUT, axum::body::to_bytes(body, limits::MAX_BODY)).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        Ok(Err(_)) => {
            (StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {} bytes", limits::MAX_BODY)).into_response()
        }
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time").into_response(),
    }
}

/// The REST API as served: [`crate::api::router`] behind the access check and the body limits.
pub fn app(state: Arc<crate::api::ApiState>) -> Router {
    // The last layer runs first: the access check, then the body is read.
    crate::api::router(state.clone())
        .layer(axum::middleware::from_fn(bounded_body))
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Serves the REST API on `listener` until the process ends, over TLS when `tls` is set. Runs on
/// the REST runtime, apart from the HA loop's (see ARCHITECTURE.md), with at most
/// [`limits::MAX_CONNECTIONS`] connections and the timeouts of [`limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<crate::api::ApiState>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let app = app(state.clone());
    tokio::spawn(resolver(state));
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits::MAX_CONNECTIONS));
    let mut last_full_warning: Option<Instant> = None;
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
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if last_full_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_full_warning = Some(Instant::now());
                tracing::warn!(
                    limit = limits::MAX_CONNECTIONS,
                    "REST API: connection limit reached; closing new connections"
                );
            }
            drop(tcp);
            continue;
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                None => connection(tcp, app, Peer { addr, verified_cert: false }).await,
                Some(acc) => match tokio::time::timeout(limits::HEADER_TIMEOUT, acc.accept(tcp)).await {
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
    // The header timeout also bounds how long a kept-alive connection may sit idle: hyper starts
    // it whenever it waits for the next request's head.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits::HEADER_TIMEOUT)
        .serve_connection(io, svc)
        .await;
    if let Err(e) = served {
        tracing::debug!(peer = %peer.addr, error = %e, "REST API: connection ended with an error");
    }
}

/// Replaces the access rules (start-up and config reload); host names are looked up again.
pub fn set_access(state: &crate::api::ApiState, access: Access) {
    if let Ok(mut a) = state.access.lock() {
        *a = access;
    }
    state.access_changed.notify_one();
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

#[cfg(test)]
mod guard_tests {
    use super::*;
    use crate::api::ApiState;
    use crate::config::Credentials;
    use axum::http::StatusCode;

    fn state(auth: bool, access: Access) -> Arc<ApiState> {
        let store = shield_core::testing::MemoryStore::new();
        let name = shield_core::MemberName::new("a").expect("name");
        let dcs = Arc::new(store.client("/service", "c", name.clone(), 30_000));
        let creds = auth.then(|| Credentials { username: "shield".into(), password: "s3cret".into() });
        let s = Arc::new(ApiState::new(name, "c", creds, dcs));
        set_access(&s, access);
        s
    }

    fn basic(user: &str, password: &str) -> String {
        use base64::Engine as _;
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
    }

    async fn call(s: &Arc<ApiState>, req: axum::http::Request<axum::body::Body>) -> StatusCode {
        use hyper::service::Service as _;
        let svc = hyper_util::service::TowerToHyperService::new(app(s.clone()));
        svc.call(req).await.expect("the app never fails").status()
    }

    /// Sends one request through the served app (guard and body limits included) from `from`.
    async fn send(s: &Arc<ApiState>, method: &str, path: &str, auth: Option<&str>, from: &str) -> StatusCode {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let mut req = req.body(axum::body::Body::from("{}")).expect("request");
        let addr: SocketAddr = format!("{from}:40000").parse().expect("addr");
        req.extensions_mut().insert(Peer { addr, verified_cert: false });
        call(s, req).await
    }

    #[tokio::test]
    async fn unsafe_requests_need_the_credentials_and_safe_ones_do_not() {
        let s = state(true, Access::default());
        let ok = basic("shield", "s3cret");
        assert_eq!(send(&s, "POST", "/reload", None, "10.0.0.1").await, StatusCode::UNAUTHORIZED);
        assert_eq!(
            send(&s, "POST", "/reload", Some(&basic("shield", "s3cre")), "10.0.0.1").await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&s, "POST", "/reload", Some(&basic("shield", "s3cret!")), "10.0.0.1").await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(send(&s, "POST", "/reload", Some("Bearer s3cret"), "10.0.0.2").await, StatusCode::UNAUTHORIZED);
        assert_eq!(send(&s, "POST", "/reload", Some(&ok), "10.0.0.2").await, StatusCode::ACCEPTED);
        // Every unsafe method, routed or not, is checked (an unrouted one would answer 501).
        for m in ["PUT", "PATCH", "DELETE"] {
            assert_eq!(send(&s, m, "/nowhere", None, "10.0.0.3").await, StatusCode::UNAUTHORIZED, "{m}");
        }
        assert_eq!(send(&s, "GET", "/cluster", None, "10.0.0.4").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn failed_attempts_lock_a_client_out_but_not_its_neighbours() {
        let s = state(true, Access::default());
        let bad = basic("shield", "guess");
        for _ in 0..limits::MAX_FAILURES {
            assert_eq!(send(&s, "POST", "/reload", Some(&bad), "10.0.0.9").await, StatusCode::UNAUTHORIZED);
        }
        let ok = basic("shield", "s3cret");
        assert_eq!(
            send(&s, "POST", "/reload", Some(&ok), "10.0.0.9").await,
            StatusCode::TOO_MANY_REQUESTS,
            "even the right password waits out the window"
        );
        assert_eq!(send(&s, "POST", "/reload", Some(&ok), "10.0.0.10").await, StatusCode::ACCEPTED);
        // An IPv6 client's whole /64 counts as one.
        for i in 0..limits::MAX_FAILURES {
            assert_eq!(
                send(&s, "POST", "/reload", Some(&bad), &format!("[fd00::{i}]")).await,
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(send(&s, "POST", "/reload", Some(&ok), "[fd00::99]").await, StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn a_lockout_ends_with_its_window_and_the_table_stays_bounded() {
        let mut t = Throttle::default();
        let ip: IpAddr = "10.1.1.1".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..limits::MAX_FAILURES {
            t.failed(ip, t0);
        }
        assert!(t.locked_out(ip, t0 + Duration::from_secs(1)));
        assert!(!t.locked_out(ip, t0 + limits::FAILURE_WINDOW));
        for i in 0..(limits::MAX_TRACKED as u32 + 10) {
            t.failed(IpAddr::V4(std::net::Ipv4Addr::from(i)), t0);
        }
        assert!(t.spells.len() <= limits::MAX_TRACKED);
    }

    #[tokio::test]
    async fn the_allowlist_comes_before_authentication() {
        let access = Access { allowlist: vec![Cidr::parse("10.0.0.0/24").expect("net")], ..Access::default() };
        let s = state(true, access);
        let ok = basic("shield", "s3cret");
        assert_eq!(send(&s, "POST", "/reload", Some(&ok), "10.0.1.1").await, StatusCode::FORBIDDEN);
        assert_eq!(send(&s, "POST", "/reload", Some(&ok), "10.0.0.7").await, StatusCode::ACCEPTED);
        // Names are matched through what the resolver found, never looked up by a request.
        let s = state(false, Access { hosts: vec!["db1.example".into()], ..Access::default() });
        assert_eq!(send(&s, "POST", "/reload", None, "192.0.2.5").await, StatusCode::FORBIDDEN);
        *s.resolved.lock().expect("lock") = vec!["192.0.2.5".parse().expect("ip")];
        assert_eq!(send(&s, "POST", "/reload", None, "192.0.2.5").await, StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused() {
        let s = state(false, Access::default());
        let body = format!("{{\"x\":\"{}\"}}", "a".repeat(limits::MAX_BODY));
        let req = axum::http::Request::builder()
            .method("PATCH")
            .uri("/config")
            .body(axum::body::Body::from(body))
            .expect("request");
        assert_eq!(call(&s, req).await, StatusCode::PAYLOAD_TOO_LARGE);
    }
}
