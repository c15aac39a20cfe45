//! Wiring: builds the backends from a [`NodeConfig`] and runs the loop, the REST API and the
//! signal handlers.

mod act;
pub mod driver;
pub mod fence;
pub mod journal;
pub mod keeper;
mod observe;
mod peers;
mod publish;
mod reload;
mod tasks;
mod wake;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shield_core::cluster::ClusterView;
use shield_core::{NodeSettings, NodeState};
use tokio::sync::watch;

use crate::backend::dcs::DcsSettings;
use crate::config::NodeConfig;
use crate::daemon::driver::Driver;
use crate::daemon::journal::Journal;
use crate::rest::state::ApiState;
use shield_db_postgres::Postgres;

/// Consul's `register_service`: what the driver needs to keep the node's service entry current.
pub fn service_registrar(cfg: &NodeConfig) -> Result<Option<crate::backend::service::Registrar>, String> {
    let DcsSettings::Consul { service: Some((tags, interval_s)), .. } = &cfg.dcs else { return Ok(None) };
    let consul = crate::backend::dcs::consul_client(
        &cfg.dcs,
        &cfg.namespace,
        &cfg.scope,
        cfg.name.clone(),
        &cfg.bootstrap_dcs.timing,
        false,
    )?;
    let (host, port) = shield_db_postgres::host_port(&cfg.pg.connect_address)
        .ok_or_else(|| format!("`postgresql.connect_address` {:?} is not host:port", cfg.pg.connect_address))?;
    let scheme = if cfg.api_tls.is_some() { "https" } else { "http" };
    Ok(Some(crate::backend::service::Registrar {
        consul: Arc::new(consul),
        host,
        port,
        api_base: format!("{scheme}://{}", cfg.api_connect),
        tags: tags.clone(),
        check_interval_s: *interval_s,
    }))
}

/// The node's settings for decide(), from its config and the backends found usable.
fn node_settings(cfg: &NodeConfig, watchdog: bool, vip: bool) -> NodeSettings {
    let mut settings = NodeSettings::new(cfg.name.clone());
    settings.tags = cfg.tags.clone();
    settings.conn_url = Some(format!("postgres://{}/postgres", cfg.pg.connect_address));
    let scheme = if cfg.api_tls.is_some() { "https" } else { "http" };
    settings.api_url = Some(format!("{scheme}://{}/patroni", cfg.api_connect));
    settings.bootstrap_config = cfg.bootstrap_dcs.clone();
    settings.local_pg = cfg.pg.local_pg;
    settings.watchdog = if watchdog { cfg.watchdog.mode } else { shield_core::WatchdogMode::Off };
    settings.watchdog_safety_margin_ms = cfg.watchdog.safety_margin_ms;
    settings.vip = vip;
    // The same condition as `service_registrar`: Consul with `register_service`.
    settings.register_service = matches!(cfg.dcs, DcsSettings::Consul { service: Some(_), .. });
    settings.local_parameters = cfg.pg.parameters.clone();
    settings
}

/// The database backend, after checking that `bin_dir` holds a server.
fn database(
    cfg: &NodeConfig,
    cluster: Arc<Mutex<ClusterView>>,
    params: Arc<Mutex<BTreeMap<String, String>>>,
) -> Result<Arc<Postgres>, String> {
    if !cfg.pg.bin_dir.join("postgres").is_file() {
        return Err(format!(
            "{}: `postgresql.bin_dir`: no postgres binary in {}",
            cfg.file.display(),
            cfg.pg.bin_dir.display()
        ));
    }
    Ok(Arc::new(Postgres::new(
        cfg.pg.clone(),
        &cfg.scope,
        cfg.name.clone(),
        cfg.pg_hba.clone(),
        cfg.initdb_args.clone(),
        cluster,
        params,
    )))
}

/// The VIP backend when one is configured, and whether its address is bound now. An address left
/// bound by an earlier run is found, so shield-core removes it unless this node holds the lock
/// (and keeps it if it does).
async fn vip(cfg: &NodeConfig) -> Result<(Option<Arc<dyn shield_core::ports::Vip>>, bool), String> {
    let Some(v) = &cfg.vip else { return Ok((None, false)) };
    let vip = crate::backend::vip::IpVip::new(v.clone()).map_err(|e| format!("`vip`: {e}"))?;
    let bound = shield_core::ports::Vip::is_bound(&vip).await.map_err(|e| format!("`vip`: {e}"))?;
    Ok((Some(Arc::new(vip)), bound))
}

/// The REST API's state, with its own DCS client: its calls (and their timeouts) never touch
/// the connection the loop renews the lease on.
fn api_state(cfg: &NodeConfig, vip_bound: bool) -> Result<Arc<ApiState>, String> {
    let api = Arc::new(ApiState::new(cfg.name.clone(), &cfg.scope, cfg.api_auth.clone(), cfg.build_dcs()?));
    if let Ok(mut c) = api.command_params.lock() {
        *c = cfg.command_params.clone();
    }
    if let Ok(mut s) = api.snap.lock() {
        s.vip = cfg.vip.as_ref().map(|v| v.cidr());
        s.vip_bound = vip_bound;
    }
    crate::rest::guard::set_access(&api, cfg.api_access.clone());
    Ok(api)
}

/// Binds the REST listener (errors name the setting) and serves it on the `rest` runtime.
fn start_rest(cfg: &NodeConfig, api: Arc<ApiState>, rest: &tokio::runtime::Handle) -> Result<(), String> {
    let listener = std::net::TcpListener::bind(cfg.api_listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| format!("`restapi.listen` {}: {e}", cfg.api_listen))?;
    if cfg.api_auth.is_none() && !cfg.api_listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.api_listen,
            "REST API: no `restapi.authentication`: anyone who reaches this address may switch over, restart, \
             reinitialize and change the cluster config (`shield init node` writes credentials and an allowlist)"
        );
    }
    let server_tls = match &cfg.api_tls {
        Some(t) => Some(rest_tls(t)?),
        None => None,
    };
    rest.spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => crate::rest::server::serve(l, api, server_tls).await,
            Err(e) => tracing::error!(error = %e, "REST API: cannot serve the listening socket"),
        }
    });
    Ok(())
}

/// The REST server's TLS; calls to other members' APIs trust `cafile`, and present our
/// certificate where members require client certificates.
fn rest_tls(t: &crate::net::tls::ApiTls) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
    use crate::net::tls;
    let server =
        tls::server_config(&t.cert, &t.key, t.ca.as_deref(), t.verify).map_err(|e| format!("`restapi` TLS: {e}"))?;
    if let Some(ca) = &t.ca {
        let identity = (t.verify == tls::VerifyClient::Required).then_some((t.cert.as_path(), t.key.as_path()));
        tls::set_client(tls::client_config(ca, identity).map_err(|e| format!("`restapi.cafile`: {e}"))?);
    }
    Ok(server)
}

/// The decision journal beside the data directory, or none (with a warning) when it cannot open.
fn journal(cfg: &NodeConfig) -> Option<Journal> {
    let path = cfg.pg.data_dir.with_extension("journal.jsonl");
    Journal::open(&path)
        .map_err(|e| {
            tracing::warn!(path = %path.display(), error = %e, "cannot open the decision journal; running without it");
        })
        .ok()
}

/// Runs the node until SIGTERM/SIGINT finishes an orderly shutdown. The HA loop, the fence
/// guard and the loop's DCS client run on the caller's runtime; the REST API runs on `rest`, a
/// runtime of its own, so that no amount of REST traffic delays a renewal.
pub async fn run(cfg: NodeConfig, rest: tokio::runtime::Handle) -> Result<(), String> {
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    let dcs = cfg.build_watched_dcs()?;
    let cluster = Arc::new(Mutex::new(ClusterView::default()));
    let params = Arc::new(Mutex::new(BTreeMap::new()));
    let db = database(&cfg, cluster.clone(), params.clone())?;
    let watchdog = crate::backend::watchdog::open(&cfg.watchdog)?;
    let (vip, vip_bound) = vip(&cfg).await?;
    let settings = node_settings(&cfg, watchdog.is_some(), vip.is_some());
    let api = api_state(&cfg, vip_bound)?;
    start_rest(&cfg, api.clone(), &rest)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signals(stop_tx, api.clone()));
    let mut state = NodeState::new(settings);
    state.vip_bound = vip_bound;
    let driver = Driver {
        dcs,
        db,
        data_dir: cfg.pg.data_dir.clone(),
        cluster,
        dcs_parameters: params,
        api,
        journal: journal(&cfg),
        state,
        shutdown: stop_rx,
        config: cfg.clone(),
        watchdog,
        callbacks: Arc::new(crate::backend::callbacks::Callbacks::new(cfg.scripts.clone(), &cfg.scope)),
        notify: crate::backend::sdnotify::Notifier::from_env(),
        vip,
        registrar: service_registrar(&cfg)?,
    };
    driver.run().await;
    Ok(())
}

async fn signals(stop: watch::Sender<bool>, api: Arc<ApiState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: orderly shutdown"); let _ = stop.send(true); }
            _ = int.recv() => { tracing::info!("SIGINT: orderly shutdown"); let _ = stop.send(true); }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                api.reload_requested.store(true, std::sync::atomic::Ordering::SeqCst);
                api.wake.notify_one();
            }
        }
    }
}
