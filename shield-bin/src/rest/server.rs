//! Serving the REST API: plain HTTP or TLS (`restapi.certfile`), one connection task per client,
//! and Patroni's access rules for unsafe requests (POST, PUT, PATCH, DELETE): `restapi.allowlist`
//! (addresses and networks; `allowlist_include_members` adds the members' own API hosts) and,
//! with `verify_client: optional`, a verified client certificate; then basic auth
//! (`restapi.authentication`), compared in constant time, with a limit on failed attempts per
//! client. Safe requests (health checks, status) are never restricted, as in Patroni, so load
//! balancers keep working. Every connection has a header timeout (which also bounds keep-alive
//! idling), every body a size and time limit, and the server a connection cap ([`limits`]).

use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The router. Health checks are answered by [`health`] through the fallback, as Patroni routes
/// every GET it has no handler for to its health check: the path is matched by substring
/// (`/replica`, `/read-only`, `/health`, ...), and an unknown path answers 503 with the status JSON.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/patroni", get(patroni))
        .route("/cluster", get(cluster))
        .route("/history", get(history))
        .route("/config", get(config).patch(patch_config).put(put_config))
        .route("/metrics", get(metrics))
        .route("/failsafe", get(failsafe).post(failsafe_post))
        .route("/liveness", get(liveness).options(liveness))
        .route("/readiness", get(readiness).options(readiness))
        .route("/switchover", post(switchover).delete(delete_switchover))
        .route("/failover", post(failover))
        .route("/restart", post(restart).delete(delete_restart))
        .route("/reload", post(reload))
        .route("/reinitialize", post(reinitialize))
        .fallback(fallback)
        .with_state(state)
}

use super::access::{limits, Peer};
use super::admin::{delete_restart, reinitialize, reload, restart};
use super::config_edit::{patch_config, put_config};
use super::guard::{bounded_body, guard, resolver};
use super::health::{failsafe, failsafe_post, fallback, liveness, readiness};
use super::metrics::metrics;
use super::state::Shared;
use super::status::{cluster, config, history, patroni};
use super::switch::{delete_switchover, failover, switchover};

/// The REST API as served: [`crate::rest::server::router`] behind the access check and the body limits.
pub fn app(state: Arc<crate::rest::state::ApiState>) -> Router {
    // The last layer runs first: the access check, then the body is read.
    crate::rest::server::router(state.clone())
        .layer(axum::middleware::from_fn(bounded_body))
        .layer(axum::middleware::from_fn_with_state(state, guard))
}

/// Serves the REST API on `listener` until the process ends, over TLS when `tls` is set. Runs on
/// the REST runtime, apart from the HA loop's (see ARCHITECTURE.md), with at most
/// [`limits::MAX_CONNECTIONS`] connections and the timeouts of [`limits`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<crate::rest::state::ApiState>,
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
