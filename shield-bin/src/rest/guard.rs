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
