//! The access guard through the router: allowlist, throttle, credentials, body bounds.

use super::access::*;
use super::guard::*;
use crate::rest::access::{Cidr, Throttle};
use crate::rest::server::app;
use crate::rest::state::ApiState;
use axum::http::StatusCode;
use shield_db_postgres::Credentials;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

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
        assert_eq!(send(&s, "POST", "/reload", Some(&bad), &format!("[fd00::{i}]")).await, StatusCode::UNAUTHORIZED);
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
