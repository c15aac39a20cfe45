//! Wiring: builds the backends from a [`NodeConfig`] and runs the loop, the REST API and the
//! signal handlers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use shield_core::cluster::ClusterView;
use shield_core::ports::Dcs;
use shield_core::{NodeSettings, NodeState};
use shield_dcs_consul::{Consistency, ConsulConfig, ConsulDcs};
use shield_dcs_etcd::{EtcdConfig, EtcdDcs, EtcdTls};
use tokio::sync::watch;

use crate::api::ApiState;
use crate::config::{DcsSettings, NodeConfig};
use crate::driver::Driver;
use crate::journal::Journal;
use crate::pg::Postgres;

/// Reads a TLS file named in the config; the error names the file.
fn read_pem(p: &std::path::PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Builds the DCS client the config names.
pub fn build_dcs(cfg: &NodeConfig) -> Result<Arc<dyn Dcs>, String> {
    let t = &cfg.bootstrap_dcs.timing;
    dcs_client(&cfg.dcs, &cfg.namespace, &cfg.scope, cfg.name.clone(), t)
}

/// A DCS client for cluster `scope` under `namespace`, acting as `member`.
pub fn dcs_client(
    dcs: &DcsSettings,
    namespace: &str,
    scope: &str,
    member: shield_core::MemberName,
    t: &shield_core::Timing,
) -> Result<Arc<dyn Dcs>, String> {
    match dcs {
        DcsSettings::Etcd3 { endpoints, auth, tls } => {
            let mut e = EtcdConfig::new(endpoints.clone(), scope, member);
            e.namespace = namespace.to_owned();
            e.ttl_ms = t.ttl_ms;
            e.retry_timeout_ms = t.retry_timeout_ms;
            e.auth = auth.as_ref().map(|a| (a.username.clone(), a.password.clone()));
            if let Some((ca, cert, key)) = tls {
                let ca_pem = ca.as_ref().map(read_pem).transpose()?;
                let client = match (cert, key) {
                    (Some(c), Some(k)) => Some((read_pem(c)?, read_pem(k)?)),
                    (None, None) => None,
                    _ => return Err("etcd3: `cert` and `key` must be given together".into()),
                };
                e.tls = Some(EtcdTls { ca_pem, client_cert_key_pem: client, domain: None });
            }
            Ok(Arc::new(EtcdDcs::new(e)))
        }
        DcsSettings::Consul { .. } => Ok(Arc::new(consul_client(dcs, namespace, scope, member, t)?)),
    }
}

/// The Consul backend for `DcsSettings::Consul` (also used on its own to register the service).
fn consul_client(
    dcs: &DcsSettings,
    namespace: &str,
    scope: &str,
    member: shield_core::MemberName,
    t: &shield_core::Timing,
) -> Result<ConsulDcs, String> {
    let DcsSettings::Consul { url, token, dc, tls, consistency, checks, .. } = dcs else {
        return Err("not a Consul DCS".to_owned());
    };
    let mut c = ConsulConfig::new(url, scope, member);
    c.namespace = namespace.to_owned();
    c.ttl_ms = t.ttl_ms;
    c.retry_timeout_ms = t.retry_timeout_ms;
    c.token = token.clone();
    c.dc = dc.clone();
    c.checks = checks.clone();
    c.consistency = match consistency.as_str() {
        "consistent" => Consistency::Consistent,
        "stale" => Consistency::Stale,
        _ => Consistency::Default,
    };
    if let Some((ca, cert, key)) = tls {
        let ca = read_pem(ca)?;
        let pair = match (cert, key) {
            (Some(c), Some(k)) => Some((read_pem(c)?, read_pem(k)?)),
            _ => None,
        };
        let client = shield_dcs_consul::tls_client(&ca, pair.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())))
            .map_err(|e| format!("consul: {e}"))?;
        c.client = Some(client);
    }
    Ok(ConsulDcs::new(c))
}

/// Consul's `register_service`: what the driver needs to keep the node's service entry current.
pub fn service_registrar(cfg: &NodeConfig) -> Result<Option<crate::driver::Registrar>, String> {
    let DcsSettings::Consul { service: Some((tags, interval_s)), .. } = &cfg.dcs else { return Ok(None) };
    let consul = consul_client(&cfg.dcs, &cfg.namespace, &cfg.scope, cfg.name.clone(), &cfg.bootstrap_dcs.timing)?;
    let (host, port) = crate::pg::host_port(&cfg.pg.connect_address)
        .ok_or_else(|| format!("`postgresql.connect_address` {:?} is not host:port", cfg.pg.connect_address))?;
    let scheme = if cfg.api_tls.is_some() { "https" } else { "http" };
    Ok(Some(crate::driver::Registrar {
        consul: Arc::new(consul),
        host,
        port,
        api_base: format!("{scheme}://{}", cfg.api_connect),
        tags: tags.clone(),
        check_interval_s: *interval_s,
        registered: None,
    }))
}

/// The watchdog for `w`: `None` in mode off, or in mode automatic when the device is not
/// usable (with a warning); an error in mode required, as Patroni exits then.
fn watchdog(w: &crate::config::WatchdogSettings) -> Result<Option<Arc<dyn shield_core::ports::Watchdog>>, String> {
    use crate::watchdog::{DeviceWatchdog, Driver};
    use shield_core::WatchdogMode;
    if w.mode == WatchdogMode::Off {
        return Ok(None);
    }
    // Opening a watchdog starts it, so only look at the device here; it is opened before promotion.
    let usable = match w.driver {
        Driver::Linux => {
            use std::os::unix::fs::FileTypeExt;
            match std::fs::metadata(&w.device) {
                Err(e) => Err(e.to_string()),
                Ok(m) if !m.file_type().is_char_device() => Err("not a character device".to_owned()),
                Ok(_) => nix::unistd::access(&w.device, nix::unistd::AccessFlags::W_OK).map_err(|e| e.to_string()),
            }
        }
        Driver::Testing => Ok(()),
    };
    match usable {
        Ok(()) => Ok(Some(Arc::new(DeviceWatchdog::new(w.driver.clone(), w.device.clone())))),
        Err(why) if w.mode == WatchdogMode::Required => Err(format!(
            "`watchdog.mode` is required but {} is not usable: {why} (modprobe softdog; give the daemon's user write access)",
            w.device.display()
        )),
        Err(why) => {
            tracing::warn!(device = %w.device.display(), "watchdog: not usable ({why}); running without one");
            Ok(None)
        }
    }
}

/// Runs the node until SIGTERM/SIGINT finishes an orderly shutdown. The HA loop, the fence
/// guard and the loop's DCS client run on the caller's runtime; the REST API runs on `rest`, a
/// runtime of its own, so that no amount of REST traffic delays a renewal.
pub async fn run(cfg: NodeConfig, rest: tokio::runtime::Handle) -> Result<(), String> {
    for w in &cfg.warnings {
        tracing::warn!("config: {w}");
    }
    let dcs = build_dcs(&cfg)?;
    let cluster = Arc::new(Mutex::new(ClusterView::default()));
    let params = Arc::new(Mutex::new(BTreeMap::new()));
    let db = Arc::new(Postgres::new(
        cfg.pg.clone(),
        &cfg.scope,
        cfg.name.clone(),
        cfg.pg_hba.clone(),
        cfg.initdb_args.clone(),
        cluster.clone(),
        params.clone(),
    ));
    if !cfg.pg.bin_dir.join("postgres").is_file() {
        return Err(format!(
            "{}: `postgresql.bin_dir`: no postgres binary in {}",
            cfg.file.display(),
            cfg.pg.bin_dir.display()
        ));
    }
    let mut settings = NodeSettings::new(cfg.name.clone());
    settings.tags = cfg.tags.clone();
    settings.conn_url = Some(format!("postgres://{}/postgres", cfg.pg.connect_address));
    let scheme = if cfg.api_tls.is_some() { "https" } else { "http" };
    settings.api_url = Some(format!("{scheme}://{}/patroni", cfg.api_connect));
    settings.bootstrap_config = cfg.bootstrap_dcs.clone();
    settings.local_pg = cfg.pg.local_pg;
    let watchdog = watchdog(&cfg.watchdog)?;
    settings.watchdog = if watchdog.is_some() { cfg.watchdog.mode } else { shield_core::WatchdogMode::Off };
    settings.watchdog_safety_margin_ms = cfg.watchdog.safety_margin_ms;
    let vip: Option<Arc<dyn shield_core::ports::Vip>> = match &cfg.vip {
        Some(v) => Some(Arc::new(crate::vip::IpVip::new(v.clone()).map_err(|e| format!("`vip`: {e}"))?)),
        None => None,
    };
    settings.vip = vip.is_some();
    // An address left bound by an earlier run is found, so shield-core removes it unless this
    // node holds the lock (and keeps it if it does).
    let vip_bound = match &vip {
        Some(v) => v.is_bound().await.map_err(|e| format!("`vip`: {e}"))?,
        None => false,
    };
    // The REST API's own DCS client: its calls (and their timeouts) never touch the connection
    // the loop renews the lease on.
    let api_dcs = build_dcs(&cfg)?;
    let api = Arc::new(ApiState::new(cfg.name.clone(), &cfg.scope, cfg.api_auth.clone(), api_dcs));
    if let Ok(mut c) = api.command_params.lock() {
        *c = cfg.command_params.clone();
    }
    if let Ok(mut s) = api.snap.lock() {
        s.vip = cfg.vip.as_ref().map(|v| v.cidr());
        s.vip_bound = vip_bound;
    }
    // Bound here (errors name the setting), registered with the REST runtime's reactor there.
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
    crate::serve::set_access(&api, cfg.api_access.clone());
    let server_tls = match &cfg.api_tls {
        Some(t) => {
            let server = crate::tls::server_config(&t.cert, &t.key, t.ca.as_deref(), t.verify)
                .map_err(|e| format!("`restapi` TLS: {e}"))?;
            // Calls to other members' APIs trust `cafile`, and present our certificate where
            // members require client certificates.
            if let Some(ca) = &t.ca {
                let identity =
                    (t.verify == crate::tls::VerifyClient::Required).then_some((t.cert.as_path(), t.key.as_path()));
                crate::tls::set_client(
                    crate::tls::client_config(ca, identity).map_err(|e| format!("`restapi.cafile`: {e}"))?,
                );
            }
            Some(server)
        }
        None => None,
    };
    let served = api.clone();
    rest.spawn(async move {
        match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => crate::serve::serve(l, served, server_tls).await,
            Err(e) => tracing::error!(error = %e, "REST API: cannot serve the listening socket"),
        }
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(signals(stop_tx, api.clone()));
    let journal_path = cfg.pg.data_dir.with_extension("journal.jsonl");
    let journal = match Journal::open(&journal_path) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::warn!(path = %journal_path.display(), error = %e, "cannot open the decision journal; running without it");
            None
        }
    };
    let driver = Driver {
        dcs,
        db,
        data_dir: cfg.pg.data_dir.clone(),
        cluster,
        dcs_parameters: params,
        api,
        journal,
        state: {
            let mut st = NodeState::new(settings);
            st.vip_bound = vip_bound;
            st
        },
        shutdown: stop_rx,
        config: cfg.clone(),
        db_reload_pending: false,
        watchdog,
        callbacks: Arc::new(crate::callbacks::Callbacks::new(cfg.scripts.clone(), &cfg.scope)),
        db_role: None,
        demote_pending: false,
        notify: crate::sdnotify::Notifier::from_env(),
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
