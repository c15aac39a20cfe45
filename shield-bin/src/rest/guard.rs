//! The access guard every unsafe request passes (client certificate, allowlist, throttle, basic
//! auth), the request body bounds, and the background resolver of allowlist host names.

use super::access::{credentials_match, host, limits, resolve, Access, Peer};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Instant;

/// Keeps [`crate::rest::state::ApiState::resolved`] current: the allowlist's host names and, with
/// `allowlist_include_members`, the members' API hosts, looked up every
/// [`limits::RESOLVE_EVERY`] on the REST runtime, so that neither a request nor the HA loop
/// waits for DNS.
pub async fn resolver(state: Arc<crate::rest::state::ApiState>) {
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
pub(crate) fn refusal(
    state: &crate::rest::state::ApiState,
    peer: Option<Peer>,
    authorization: Option<&str>,
) -> Option<Response> {
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

/// The access check for unsafe methods (POST, PUT, PATCH, DELETE); safe ones pass. Each refusal
/// is logged with the client, the request and the reason.
pub(crate) async fn guard(
    axum::extract::State(state): axum::extract::State<Arc<crate::rest::state::ApiState>>,
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
pub(crate) async fn bounded_body(req: Request, next: Next) -> Response {
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

/// Replaces the access rules (start-up and config reload); host names are looked up again.
pub fn set_access(state: &crate::rest::state::ApiState, access: Access) {
    if let Ok(mut a) = state.access.lock() {
        *a = access;
    }
    state.access_changed.notify_one();
}

#[cfg(test)]
mod guard_tests {
    use super::*;
    use crate::rest::access::{Cidr, Throttle};
    use crate::rest::server::app;
    use crate::rest::state::ApiState;
    use axum::http::StatusCode;
    use shield_db_postgres::Credentials;
    use std::net::{IpAddr, SocketAddr};
    use std::time::Duration;

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
