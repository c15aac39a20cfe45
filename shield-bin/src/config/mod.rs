//! The node's YAML config, with Patroni's keys, and environment overrides.
//!
//! A Patroni config file starts Shield unchanged: every key Patroni documents is accepted. A key
//! Shield does not act on (`log`, `restapi.server_tokens`, ...) gets one warning naming it
//! ([`NodeConfig::warnings`]); a key whose being ignored would change safety (`citus`,
//! `bootstrap.dcs.standby_cluster`, a `create_replica_methods` list without `basebackup`, ...) is
//! an error saying what to do; timings that break Patroni's rule are adjusted as Patroni adjusts
//! them, with a warning. Anything else is an error that names the key and the file. The key list
//! is in `config/keys.rs` and docs/compatibility.md. `PATRONI_*` environment variables override
//! the file as Patroni defines them, and `SHIELD_*` variables of the same names override both.

use self::dcs::dcs_settings;
use self::env::apply_env;
use self::pg::pg_settings;
use self::raw::RawConfig;
use self::sections::{initdb_arg, parse_listen, rest_security, scripts, vip_settings, watchdog_settings};
use crate::backend::dcs::DcsSettings;
use crate::backend::watchdog::WatchdogSettings;
use crate::net::tls::ApiTls;
use serde_yaml_ng::Value;
use shield_core::{DynamicConfig, MemberName, Tags, WatchdogMode};
use shield_db_postgres::{Credentials, PgSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A config problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct ConfigFileError {
    /// The file.
    pub file: String,
    /// What is wrong, with the key.
    pub problem: String,
}

/// The node's checked config.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Where it was read from.
    pub file: PathBuf,
    /// Cluster name.
    pub scope: String,
    /// DCS namespace.
    pub namespace: String,
    /// This member.
    pub name: MemberName,
    /// REST listen address.
    pub api_listen: SocketAddr,
    /// REST address published to peers (`host:port`).
    pub api_connect: String,
    /// Basic auth for unsafe REST methods.
    pub api_auth: Option<Credentials>,
    /// REST API TLS (`restapi.certfile`, `keyfile`, `cafile`, `verify_client`).
    pub api_tls: Option<ApiTls>,
    /// Who may send unsafe REST requests (`restapi.allowlist`, `allowlist_include_members`).
    pub api_access: crate::rest::access::Access,
    /// The DCS.
    pub dcs: DcsSettings,
    /// `bootstrap.dcs`.
    pub bootstrap_dcs: DynamicConfig,
    /// `bootstrap.initdb` as command-line options.
    pub initdb_args: Vec<String>,
    /// `bootstrap.pg_hba` (or `postgresql.pg_hba`).
    pub pg_hba: Vec<String>,
    /// PostgreSQL settings.
    pub pg: PgSettings,
    /// The watchdog.
    pub watchdog: WatchdogSettings,
    /// The `vip` section, if any.
    pub vip: Option<crate::backend::vip::VipSettings>,
    /// `postgresql.callbacks`, `pre_promote`, `before_stop`.
    pub scripts: crate::backend::callbacks::Scripts,
    /// The role name callbacks get for a primary: `master` (Patroni before 4.0, what Halo Shield
    /// ships) unless `postgresql.callback_primary_role: primary`.
    pub callback_primary_role: String,
    /// `postgresql.allow_command_parameters` (see [`crate::rest::command_params`]).
    pub command_params: crate::rest::command_params::CommandParams,
    /// Node tags.
    pub tags: Tags,
    /// One line per key accepted and not acted on, or adjusted (logged at start-up, printed by
    /// `shield check` and `--validate-config`).
    pub warnings: Vec<String>,
    /// `bootstrap.method` when it is not `initdb`: this node never bootstraps a new cluster (it
    /// joins one or adopts an existing data directory), as Shield cannot run the method.
    pub custom_bootstrap: Option<String>,
}

pub(crate) fn err(file: &Path, problem: impl Into<String>) -> ConfigFileError {
    ConfigFileError { file: file.display().to_string(), problem: problem.into() }
}

impl NodeConfig {
    /// The DCS client this node's config names, reading the DCS on every `read()` (the REST
    /// API's, `shield check`'s).
    pub fn build_dcs(&self) -> Result<std::sync::Arc<dyn shield_core::ports::Dcs>, String> {
        let t = &self.bootstrap_dcs.timing;
        crate::backend::dcs::dcs_client(&self.dcs, &self.namespace, &self.scope, self.name.clone(), t, false)
    }

    /// The daemon loop's DCS client: it keeps the cluster view from one long-lived watch, so a
    /// cycle reads nothing it already knows (docs/etcd.md, docs/consul.md).
    pub fn build_watched_dcs(&self) -> Result<std::sync::Arc<dyn shield_core::ports::Dcs>, String> {
        let t = &self.bootstrap_dcs.timing;
        crate::backend::dcs::dcs_client(&self.dcs, &self.namespace, &self.scope, self.name.clone(), t, true)
    }

    /// Reads and checks a config file, applying environment overrides from `env`.
    pub fn load(file: &Path, env: &BTreeMap<String, String>) -> Result<NodeConfig, ConfigFileError> {
        if env.contains_key("SHIELD_CONFIGURATION") || env.contains_key("PATRONI_CONFIGURATION") {
            return Self::parse(file, "", env);
        }
        let text = std::fs::read_to_string(file).map_err(|e| err(file, format!("cannot read: {e}")))?;
        Self::parse(file, &text, env)
    }

    /// Parses config text (the file name is for messages).
    pub fn parse(file: &Path, text: &str, env: &BTreeMap<String, String>) -> Result<NodeConfig, ConfigFileError> {
        // PATRONI_CONFIGURATION (or SHIELD_CONFIGURATION) is the whole config, as in Patroni:
        // then no other variable is read.
        let whole = env.get("SHIELD_CONFIGURATION").or_else(|| env.get("PATRONI_CONFIGURATION"));
        let (text, file) = match whole {
            Some(t) => (t.as_str(), Path::new("$PATRONI_CONFIGURATION")),
            None => (text, file),
        };
        let mut root: Value = serde_yaml_ng::from_str(text).map_err(|e| err(file, format!("not valid YAML: {e}")))?;
        if root.is_null() {
            root = Value::Mapping(Default::default());
        }
        if whole.is_none() {
            apply_env(&mut root, env);
        }
        let sorted = keys::sort(&mut root).map_err(|e| err(file, e))?;
        local_switches(&root).map_err(|e| err(file, e))?;
        let raw: RawConfig = serde_yaml_ng::from_value(root).map_err(|e| err(file, e.to_string()))?;
        check(file, raw, sorted)
    }
}

/// The node file's `postgresql` switches that decide whether a data directory may be wiped must be
/// booleans, named when they are not (serde's own error names no key).
fn local_switches(root: &Value) -> Result<(), String> {
    let pg = &root["postgresql"];
    for key in
        ["use_pg_rewind", "remove_data_directory_on_rewind_failure", "remove_data_directory_on_diverged_timelines"]
    {
        match &pg[key] {
            Value::Null | Value::Bool(_) => {}
            other => {
                let shown = serde_yaml_ng::to_string(other).unwrap_or_default();
                return Err(format!("`postgresql.{key}`: {} is not true or false", shown.trim()));
            }
        }
    }
    Ok(())
}

fn check(file: &Path, raw: RawConfig, sorted: keys::Sorted) -> Result<NodeConfig, ConfigFileError> {
    let keys::Sorted { mut warnings, custom_bootstrap } = sorted;
    let (api_tls, api_access) = rest_security(file, &raw.restapi)?;
    let name = MemberName::new(raw.name.clone()).map_err(|e| err(file, format!("`name`: {e}")))?;
    if raw.scope.trim().is_empty() || raw.scope.contains('/') {
        return Err(err(file, format!("`scope`: {:?} is not a valid cluster name", raw.scope)));
    }
    let api_listen =
        parse_listen(&raw.restapi.listen, 8008).map_err(|e| err(file, format!("`restapi.listen`: {e}")))?;
    let api_auth = raw.restapi.authentication.map(|a| Credentials { username: a.username, password: a.password });
    let dcs = dcs_settings(file, raw.etcd3.or(raw.etcd), raw.consul)?;
    let bootstrap_dcs = bootstrap_dcs(file, raw.bootstrap.as_ref(), &mut warnings)?;
    let initdb_args = initdb_args(file, raw.bootstrap.as_ref())?;
    let pg_hba = raw
        .postgresql
        .pg_hba
        .clone()
        .or_else(|| raw.bootstrap.as_ref().and_then(|b| b.pg_hba.clone()))
        .unwrap_or_default();
    let scripts = scripts(file, &raw.postgresql)?;
    let command_params = match &raw.postgresql.allow_command_parameters {
        Some(v) => crate::rest::command_params::CommandParams::from_yaml(v).map_err(|e| err(file, e))?,
        None => crate::rest::command_params::CommandParams::default(),
    };
    let callback_primary_role = callback_primary_role(file, raw.postgresql.callback_primary_role.as_deref())?;
    let pg = pg_settings(file, raw.postgresql)?;
    let mode = watchdog_mode(file, raw.watchdog.as_ref().and_then(|w| w.mode.clone()))?;
    let watchdog = watchdog_settings(file, mode, raw.watchdog.as_ref())?;
    let vip = raw.vip.as_ref().map(|v| vip_settings(file, v)).transpose()?;
    Ok(NodeConfig {
        file: file.to_path_buf(),
        scope: raw.scope,
        namespace: raw.namespace.unwrap_or_else(|| "/service".to_owned()),
        name,
        api_listen,
        api_connect: raw.restapi.connect_address,
        api_auth,
        api_tls,
        api_access,
        dcs,
        bootstrap_dcs,
        initdb_args,
        pg_hba,
        pg,
        watchdog,
        vip,
        scripts,
        callback_primary_role,
        command_params,
        tags: raw.tags.map(tags).unwrap_or_default(),
        warnings,
        custom_bootstrap,
    })
}

/// `bootstrap.dcs` as a dynamic config, adjusted as Patroni adjusts it (each adjustment a warning).
fn bootstrap_dcs(
    file: &Path,
    bootstrap: Option<&raw::RawBootstrap>,
    warnings: &mut Vec<String>,
) -> Result<DynamicConfig, ConfigFileError> {
    match bootstrap.and_then(|b| b.dcs.clone()) {
        None => Ok(DynamicConfig::default()),
        Some(v) => {
            let (c, notes) =
                DynamicConfig::from_json_adjusting(v).map_err(|e| err(file, format!("`bootstrap.dcs`: {e}")))?;
            warnings.extend(notes.into_iter().map(|n| format!("`bootstrap.dcs`: {n}")));
            Ok(c)
        }
    }
}

/// `bootstrap.initdb` as initdb arguments.
fn initdb_args(file: &Path, bootstrap: Option<&raw::RawBootstrap>) -> Result<Vec<String>, ConfigFileError> {
    bootstrap
        .and_then(|b| b.initdb.clone())
        .unwrap_or_default()
        .iter()
        .map(|v| {
            initdb_arg(v).ok_or_else(|| err(file, format!("`bootstrap.initdb`: cannot use {v:?} as an initdb option")))
        })
        .collect()
}

/// `postgresql.callback_primary_role`: the role name callbacks get for a primary (`master` by default).
fn callback_primary_role(file: &Path, role: Option<&str>) -> Result<String, ConfigFileError> {
    match role {
        None | Some("master") => Ok("master".to_owned()),
        Some("primary") => Ok("primary".to_owned()),
        Some(other) => {
            Err(err(file, format!("`postgresql.callback_primary_role`: {other:?} is not master or primary")))
        }
    }
}

/// `watchdog.mode` (automatic by default; `false` and Patroni's spellings accepted).
fn watchdog_mode(file: &Path, mode: Option<Value>) -> Result<WatchdogMode, ConfigFileError> {
    match mode {
        None => Ok(WatchdogMode::Automatic),
        Some(Value::Bool(false)) => Ok(WatchdogMode::Off),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "off" | "false" | "disable" => Ok(WatchdogMode::Off),
            "automatic" | "auto" => Ok(WatchdogMode::Automatic),
            "required" => Ok(WatchdogMode::Required),
            other => Err(err(file, format!("`watchdog.mode`: {other:?} is not off, automatic or required"))),
        },
        Some(v) => Err(err(file, format!("`watchdog.mode`: {v:?} is not off, automatic or required"))),
    }
}

/// The `tags` section as member tags.
fn tags(t: BTreeMap<String, Value>) -> Tags {
    let j: serde_json::Map<String, serde_json::Value> =
        t.into_iter().map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(serde_json::Value::Null))).collect();
    Tags::from_json(&serde_json::Value::Object(j))
}

pub(crate) mod dcs;
pub(crate) mod env;
pub(crate) mod keys;
mod pg;
pub(crate) mod raw;
mod sections;

#[cfg(test)]
mod tests;
