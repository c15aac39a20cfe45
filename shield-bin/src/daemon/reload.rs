//! Reloads: the node's config file (SIGHUP, `POST /reload`) and PostgreSQL's configuration after
//! a parameter change.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::driver::Driver;
use crate::backend::callbacks::Callbacks;

impl Driver {
    /// Re-reads the config file and applies what can change at run time: tags, the REST API's
    /// credentials and the local PostgreSQL parameters. A bad file keeps the running config.
    pub(crate) fn reload_config(&mut self) {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let new = match crate::config::NodeConfig::load(&self.config.file, &env) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reload: the config file has an error; keeping the running configuration");
                return;
            }
        };
        let old = &self.config;
        let fixed = [
            ("scope", old.scope != new.scope),
            ("name", old.name != new.name),
            ("namespace", old.namespace != new.namespace),
            ("the DCS section", old.dcs != new.dcs),
            ("restapi.listen", old.api_listen != new.api_listen),
            ("postgresql.data_dir", old.pg.data_dir != new.pg.data_dir),
            ("postgresql.bin_dir", old.pg.bin_dir != new.pg.bin_dir),
            ("postgresql.listen", old.pg.port != new.pg.port || old.pg.listen_host != new.pg.listen_host),
            ("watchdog", old.watchdog != new.watchdog),
            ("restapi TLS", old.api_tls != new.api_tls),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(key, "reload: this setting changes only when shield restarts");
            }
        }
        self.state.settings.tags = new.tags.clone();
        self.state.settings.local_pg = new.pg.local_pg;
        if let Ok(mut a) = self.api.auth.lock() {
            *a = new.api_auth.clone();
        }
        crate::rest::guard::set_access(&self.api, new.api_access.clone());
        if let Ok(mut c) = self.api.command_params.lock() {
            *c = new.command_params.clone();
        }
        self.db.set_local_parameters(new.pg.parameters.clone());
        // A change asks decide() for a reload.
        self.state.settings.local_parameters = new.pg.parameters.clone();
        if old.scripts != new.scripts {
            // Scripts already running finish (or time out) on their own.
            self.callbacks = Arc::new(Callbacks::new(new.scripts.clone(), &new.scope));
        }
        self.config = new;
        tracing::info!("reload: configuration re-read");
    }

    /// Rewrites the configuration and signals the server (decide()'s `ReloadDb`): Ok(true) when
    /// a server was signalled.
    pub(crate) fn reload_database(&self) -> Result<bool, String> {
        let r = self.db.reload().map_err(|e| e.to_string());
        match &r {
            Ok(true) => tracing::info!("parameters changed: PostgreSQL configuration reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "PostgreSQL configuration reload failed"),
        }
        r
    }
}
