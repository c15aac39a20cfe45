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

use crate::backend::dcs::DcsSettings;
use crate::backend::watchdog::WatchdogSettings;
use shield_db_postgres::{Credentials, PgSettings};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;
use shield_core::{DynamicConfig, MemberName, Tags, WatchdogMode};

/// A config problem, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct ConfigFileError {
    /// The file.
    pub file: String,
    /// What is wrong, with the key.
    pub problem: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
struct RawConfig {
    scope: String,
    #[serde(default)]
    namespace: Option<String>,
    name: String,
    restapi: RawRestApi,
    #[serde(default)]
    etcd3: Option<RawEtcd>,
    #[serde(default)]
    etcd: Option<RawEtcd>,
    #[serde(default)]
    consul: Option<RawConsul>,
    #[serde(default)]
    bootstrap: Option<RawBootstrap>,
    postgresql: RawPostgresql,
    #[serde(default)]
    watchdog: Option<RawWatchdog>,
    /// Shield's own key: Patroni has no VIP.
    #[serde(default)]
    vip: Option<RawVip>,
    #[serde(default)]
    tags: Option<BTreeMap<String, Value>>,
    // Accepted for compatibility, not acted on.
    #[serde(default)]
    log: Option<Value>,
    #[serde(default)]
    ctl: Option<Value>,
    #[serde(default)]
    citus: Option<Value>,
    // Other DCS kinds Patroni knows: accepted by the parser so the error can say "not supported".
    #[serde(default)]
    zookeeper: Option<Value>,
    #[serde(default)]
    exhibitor: Option<Value>,
    #[serde(default)]
    kubernetes: Option<Value>,
    #[serde(default)]
    raft: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
struct RawRestApi {
    listen: String,
    connect_address: String,
    #[serde(default)]
    authentication: Option<RawAuth>,
    #[serde(default)]
    certfile: Option<String>,
    #[serde(default)]
    keyfile: Option<String>,
    #[serde(default)]
    keyfile_password: Option<String>,
    #[serde(default)]
    cafile: Option<String>,
    #[serde(default)]
    ciphers: Option<String>,
    #[serde(default)]
    verify_client: Option<String>,
    #[serde(default)]
    allowlist: Option<Vec<String>>,
    #[serde(default)]
    allowlist_include_members: Option<bool>,
    #[serde(default)]
    http_extra_headers: Option<Value>,
    #[serde(default)]
    https_extra_headers: Option<Value>,
    #[serde(default)]
    request_queue_size: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuth {
    pub(crate) username: String,
    pub(crate) password: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawEtcd {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    hosts: Option<Value>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    srv: Option<String>,
    #[serde(default)]
    srv_suffix: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    use_proxies: Option<bool>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    cacert: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawConsul {
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    verify: Option<bool>,
    #[serde(default)]
    cacert: Option<String>,
    #[serde(default)]
    cert: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    dc: Option<String>,
    #[serde(default)]
    consistency: Option<String>,
    #[serde(default)]
    checks: Option<Vec<String>>,
    #[serde(default)]
    register_service: Option<bool>,
    #[serde(default)]
    service_tags: Option<Vec<String>>,
    #[serde(default)]
    service_check_interval: Option<Value>,
    #[serde(default)]
    service_check_tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
struct RawBootstrap {
    #[serde(default)]
    dcs: Option<serde_json::Value>,
    #[serde(default)]
    initdb: Option<Vec<Value>>,
    #[serde(default)]
    pg_hba: Option<Vec<String>>,
    #[serde(default)]
    users: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    post_bootstrap: Option<String>,
    #[serde(default)]
    post_init: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
struct RawPgAuth {
    #[serde(default)]
    superuser: Option<RawUser>,
    #[serde(default)]
    replication: Option<RawUser>,
    #[serde(default)]
    rewind: Option<RawUser>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawUser {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
struct RawPostgresql {
    listen: String,
    connect_address: String,
    data_dir: String,
    #[serde(default)]
    proxy_address: Option<String>,
    #[serde(default)]
    config_dir: Option<String>,
    #[serde(default)]
    bin_dir: Option<String>,
    #[serde(default)]
    bin_name: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pgpass: Option<String>,
    #[serde(default)]
    authentication: Option<RawPgAuth>,
    #[serde(default)]
    parameters: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pg_hba: Option<Vec<String>>,
    #[serde(default)]
    pg_ident: Option<Vec<String>>,
    #[serde(default)]
    callbacks: Option<BTreeMap<String, String>>,
    #[serde(default)]
    create_replica_methods: Option<Vec<String>>,
    #[serde(default)]
    basebackup: Option<Value>,
    #[serde(default)]
    use_pg_rewind: Option<bool>,
    #[serde(default)]
    remove_data_directory_on_rewind_failure: Option<bool>,
    #[serde(default)]
    remove_data_directory_on_diverged_timelines: Option<bool>,
    #[serde(default)]
    recovery_conf: Option<Value>,
    #[serde(default)]
    custom_conf: Option<String>,
    #[serde(default)]
    pg_ctl_timeout: Option<u64>,
    #[serde(default)]
    use_unix_socket: Option<bool>,
    #[serde(default)]
    use_unix_socket_repl: Option<bool>,
    #[serde(default)]
    pre_promote: Option<String>,
    #[serde(default)]
    before_stop: Option<String>,
    // Shield's own keys.
    #[serde(default)]
    callback_timeout: Option<Value>,
    #[serde(default)]
    callback_primary_role: Option<String>,
    /// Shield's: which command-running parameters the cluster config may change remotely.
    #[serde(default)]
    allow_command_parameters: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
struct RawWatchdog {
    #[serde(default)]
    mode: Option<Value>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    safety_margin: Option<Value>,
    #[serde(default)]
    driver: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVip {
    address: String,
    #[serde(default)]
    netmask: Option<String>,
    #[serde(default)]
    prefix: Option<u8>,
    interface: String,
    #[serde(default)]
    broadcast: Option<String>,
    #[serde(default)]
    announcements: Option<u32>,
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

fn err(file: &Path, problem: impl Into<String>) -> ConfigFileError {
    ConfigFileError { file: file.display().to_string(), problem: problem.into() }
}

/// How an environment override's text becomes a YAML value, as Patroni reads each variable.
#[derive(Clone, Copy)]
enum EnvKind {
    /// Verbatim text (names, addresses, paths, credentials: `"123"` stays a string).
    Text,
    /// A scalar read as YAML: `true`, `8`, `30s`.
    Scalar,
    /// A list: a YAML list (`[a, b]`), or comma-separated text.
    List,
    /// A mapping given as YAML (`{X-Frame-Options: SAMEORIGIN}`).
    Map,
}

/// Environment variables that override keys: every one Patroni documents (docs/ENVIRONMENT.rst)
/// with the `PATRONI_` prefix, each also read with the `SHIELD_` prefix, which wins. A key the
/// file would be warned about or refused for is treated the same way when set from here.
/// `PATRONI_CONFIGURATION` replaces the whole file (and then no other variable is read).
const ENV_KEYS: &[(&str, &[&str], EnvKind)] = {
    use EnvKind::{List, Map, Scalar, Text};
    &[
        ("NAME", &["name"], Text),
        ("SCOPE", &["scope"], Text),
        ("NAMESPACE", &["namespace"], Text),
        ("THREAD_POOL_SIZE", &["thread_pool_size"], Scalar),
        ("LOG_TYPE", &["log", "type"], Text),
        ("LOG_LEVEL", &["log", "level"], Text),
        ("LOG_TRACEBACK_LEVEL", &["log", "traceback_level"], Text),
        ("LOG_FORMAT", &["log", "format"], Text),
        ("LOG_DATEFORMAT", &["log", "dateformat"], Text),
        ("LOG_STATIC_FIELDS", &["log", "static_fields"], Map),
        ("LOG_MAX_QUEUE_SIZE", &["log", "max_queue_size"], Scalar),
        ("LOG_DIR", &["log", "dir"], Text),
        ("LOG_MODE", &["log", "mode"], Scalar),
        ("LOG_FILE_NUM", &["log", "file_num"], Scalar),
        ("LOG_FILE_SIZE", &["log", "file_size"], Scalar),
        ("LOG_LOGGERS", &["log", "loggers"], Map),
        ("LOG_DEDUPLICATE_HEARTBEAT_LOGS", &["log", "deduplicate_heartbeat_logs"], Scalar),
        ("RESTAPI_LISTEN", &["restapi", "listen"], Text),
        ("RESTAPI_CONNECT_ADDRESS", &["restapi", "connect_address"], Text),
        ("RESTAPI_USERNAME", &["restapi", "authentication", "username"], Text),
        ("RESTAPI_PASSWORD", &["restapi", "authentication", "password"], Text),
        ("RESTAPI_CERTFILE", &["restapi", "certfile"], Text),
        ("RESTAPI_KEYFILE", &["restapi", "keyfile"], Text),
        ("RESTAPI_KEYFILE_PASSWORD", &["restapi", "keyfile_password"], Text),
        ("RESTAPI_CAFILE", &["restapi", "cafile"], Text),
        ("RESTAPI_CIPHERS", &["restapi", "ciphers"], Text),
        ("RESTAPI_VERIFY_CLIENT", &["restapi", "verify_client"], Text),
        ("RESTAPI_ALLOWLIST", &["restapi", "allowlist"], List),
        ("RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", &["restapi", "allowlist_include_members"], Scalar),
        ("RESTAPI_HTTP_EXTRA_HEADERS", &["restapi", "http_extra_headers"], Map),
        ("RESTAPI_HTTPS_EXTRA_HEADERS", &["restapi", "https_extra_headers"], Map),
        ("RESTAPI_REQUEST_QUEUE_SIZE", &["restapi", "request_queue_size"], Scalar),
        ("RESTAPI_SERVER_TOKENS", &["restapi", "server_tokens"], Text),
        ("RESTAPI_THREAD_POOL_SIZE", &["restapi", "thread_pool_size"], Scalar),
        ("CTL_USERNAME", &["ctl", "authentication", "username"], Text),
        ("CTL_PASSWORD", &["ctl", "authentication", "password"], Text),
        ("CTL_INSECURE", &["ctl", "insecure"], Scalar),
        ("CTL_CACERT", &["ctl", "cacert"], Text),
        ("CTL_CERTFILE", &["ctl", "certfile"], Text),
        ("CTL_KEYFILE", &["ctl", "keyfile"], Text),
        ("CTL_KEYFILE_PASSWORD", &["ctl", "keyfile_password"], Text),
        ("POSTGRESQL_LISTEN", &["postgresql", "listen"], Text),
        ("POSTGRESQL_CONNECT_ADDRESS", &["postgresql", "connect_address"], Text),
        ("POSTGRESQL_PROXY_ADDRESS", &["postgresql", "proxy_address"], Text),
        ("POSTGRESQL_DATA_DIR", &["postgresql", "data_dir"], Text),
        ("POSTGRESQL_CONFIG_DIR", &["postgresql", "config_dir"], Text),
        ("POSTGRESQL_BIN_DIR", &["postgresql", "bin_dir"], Text),
        ("POSTGRESQL_BIN_PG_CTL", &["postgresql", "bin_name", "pg_ctl"], Text),
        ("POSTGRESQL_BIN_INITDB", &["postgresql", "bin_name", "initdb"], Text),
        ("POSTGRESQL_BIN_PG_CONTROLDATA", &["postgresql", "bin_name", "pg_controldata"], Text),
        ("POSTGRESQL_BIN_PG_BASEBACKUP", &["postgresql", "bin_name", "pg_basebackup"], Text),
        ("POSTGRESQL_BIN_POSTGRES", &["postgresql", "bin_name", "postgres"], Text),
        ("POSTGRESQL_BIN_IS_READY", &["postgresql", "bin_name", "pg_isready"], Text),
        ("POSTGRESQL_BIN_PG_REWIND", &["postgresql", "bin_name", "pg_rewind"], Text),
        ("POSTGRESQL_PGPASS", &["postgresql", "pgpass"], Text),
        ("ETCD3_HOSTS", &["etcd3", "hosts"], Text),
        ("ETCD3_HOST", &["etcd3", "host"], Text),
        ("ETCD3_URL", &["etcd3", "url"], Text),
        ("ETCD3_PROXY", &["etcd3", "proxy"], Text),
        ("ETCD3_SRV", &["etcd3", "srv"], Text),
        ("ETCD3_SRV_SUFFIX", &["etcd3", "srv_suffix"], Text),
        ("ETCD3_USE_PROXIES", &["etcd3", "use_proxies"], Scalar),
        ("ETCD3_PROTOCOL", &["etcd3", "protocol"], Text),
        ("ETCD3_USERNAME", &["etcd3", "username"], Text),
        ("ETCD3_PASSWORD", &["etcd3", "password"], Text),
        ("ETCD3_CACERT", &["etcd3", "cacert"], Text),
        ("ETCD3_CERT", &["etcd3", "cert"], Text),
        ("ETCD3_KEY", &["etcd3", "key"], Text),
        ("ETCD3_KEY_PASSWORD", &["etcd3", "key_password"], Text),
        ("ETCD_HOSTS", &["etcd", "hosts"], Text),
        ("ETCD_HOST", &["etcd", "host"], Text),
        ("ETCD_URL", &["etcd", "url"], Text),
        ("ETCD_PROXY", &["etcd", "proxy"], Text),
        ("ETCD_SRV", &["etcd", "srv"], Text),
        ("ETCD_SRV_SUFFIX", &["etcd", "srv_suffix"], Text),
        ("ETCD_USE_PROXIES", &["etcd", "use_proxies"], Scalar),
        ("ETCD_PROTOCOL", &["etcd", "protocol"], Text),
        ("ETCD_USERNAME", &["etcd", "username"], Text),
        ("ETCD_PASSWORD", &["etcd", "password"], Text),
        ("ETCD_CACERT", &["etcd", "cacert"], Text),
        ("ETCD_CERT", &["etcd", "cert"], Text),
        ("ETCD_KEY", &["etcd", "key"], Text),
        ("CONSUL_HOST", &["consul", "host"], Text),
        ("CONSUL_URL", &["consul", "url"], Text),
        ("CONSUL_PORT", &["consul", "port"], Scalar),
        ("CONSUL_SCHEME", &["consul", "scheme"], Text),
        ("CONSUL_TOKEN", &["consul", "token"], Text),
        ("CONSUL_VERIFY", &["consul", "verify"], Scalar),
        ("CONSUL_CACERT", &["consul", "cacert"], Text),
        ("CONSUL_CERT", &["consul", "cert"], Text),
        ("CONSUL_KEY", &["consul", "key"], Text),
        ("CONSUL_DC", &["consul", "dc"], Text),
        ("CONSUL_CONSISTENCY", &["consul", "consistency"], Text),
        ("CONSUL_CHECKS", &["consul", "checks"], List),
        ("CONSUL_REGISTER_SERVICE", &["consul", "register_service"], Scalar),
        ("CONSUL_SERVICE_TAGS", &["consul", "service_tags"], List),
        ("CONSUL_SERVICE_CHECK_INTERVAL", &["consul", "service_check_interval"], Text),
        ("CONSUL_SERVICE_CHECK_TLS_SERVER_NAME", &["consul", "service_check_tls_server_name"], Text),
        ("ZOOKEEPER_HOSTS", &["zookeeper", "hosts"], List),
        ("EXHIBITOR_HOSTS", &["exhibitor", "hosts"], List),
        ("EXHIBITOR_PORT", &["exhibitor", "port"], Scalar),
        ("KUBERNETES_NAMESPACE", &["kubernetes", "namespace"], Text),
        ("RAFT_SELF_ADDR", &["raft", "self_addr"], Text),
        ("RAFT_PARTNER_ADDRS", &["raft", "partner_addrs"], List),
        ("CITUS_GROUP", &["citus", "group"], Scalar),
        ("CITUS_DATABASE", &["citus", "database"], Text),
    ]
};

/// The credential settings Patroni reads for each of its three users.
const USER_ENV: &[&str] = &[
    "USERNAME",
    "PASSWORD",
    "SSLMODE",
    "SSLKEY",
    "SSLPASSWORD",
    "SSLCERT",
    "SSLROOTCERT",
    "SSLCRL",
    "SSLCRLDIR",
    "SSLNEGOTIATION",
    "GSSENCMODE",
    "CHANNEL_BINDING",
];

fn env_value(text: &str, kind: EnvKind) -> Value {
    let yaml = || serde_yaml_ng::from_str::<Value>(text).ok();
    match kind {
        EnvKind::Text => Value::String(text.to_owned()),
        EnvKind::Scalar => yaml()
            .filter(|v| !v.is_mapping() && !v.is_sequence() && !v.is_null())
            .unwrap_or_else(|| Value::String(text.to_owned())),
        EnvKind::List if text.trim_start().starts_with('[') => yaml().unwrap_or_else(|| Value::String(text.to_owned())),
        EnvKind::List => Value::Sequence(
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_owned())).collect(),
        ),
        EnvKind::Map => yaml().filter(Value::is_mapping).unwrap_or_else(|| Value::String(text.to_owned())),
    }
}

fn set_path(root: &mut Value, path: &[&str], v: Value) {
    let mut cur = root;
    for (i, k) in path.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = Value::Mapping(Default::default());
        }
        let Value::Mapping(m) = cur else { return };
        let key = Value::String((*k).to_owned());
        if i + 1 == path.len() {
            m.insert(key, v);
            return;
        }
        cur = m.entry(key).or_insert(Value::Mapping(Default::default()));
    }
}

/// Applies the `PATRONI_*` (then `SHIELD_*`) overrides to the parsed file.
fn apply_env(root: &mut Value, env: &BTreeMap<String, String>) {
    for prefix in ["PATRONI_", "SHIELD_"] {
        for (suffix, path, kind) in ENV_KEYS {
            if let Some(v) = env.get(&format!("{prefix}{suffix}")) {
                set_path(root, path, env_value(v, *kind));
            }
        }
        for user in ["SUPERUSER", "REPLICATION", "REWIND"] {
            for setting in USER_ENV {
                if let Some(v) = env.get(&format!("{prefix}{user}_{setting}")) {
                    let (u, k) = (user.to_ascii_lowercase(), setting.to_ascii_lowercase());
                    set_path(root, &["postgresql", "authentication", &u, &k], Value::String(v.clone()));
                }
            }
        }
    }
}

impl NodeConfig {
    /// The DCS client this node's config names.
    pub fn build_dcs(&self) -> Result<std::sync::Arc<dyn shield_core::ports::Dcs>, String> {
        let t = &self.bootstrap_dcs.timing;
        crate::backend::dcs::dcs_client(&self.dcs, &self.namespace, &self.scope, self.name.clone(), t)
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
    let bootstrap_dcs = match raw.bootstrap.as_ref().and_then(|b| b.dcs.clone()) {
        None => DynamicConfig::default(),
        Some(v) => {
            let (c, notes) =
                DynamicConfig::from_json_adjusting(v).map_err(|e| err(file, format!("`bootstrap.dcs`: {e}")))?;
            warnings.extend(notes.into_iter().map(|n| format!("`bootstrap.dcs`: {n}")));
            c
        }
    };
    let initdb_args = raw
        .bootstrap
        .as_ref()
        .and_then(|b| b.initdb.clone())
        .unwrap_or_default()
        .iter()
        .map(|v| {
            initdb_arg(v).ok_or_else(|| err(file, format!("`bootstrap.initdb`: cannot use {v:?} as an initdb option")))
        })
        .collect::<Result<Vec<_>, _>>()?;
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
    let callback_primary_role = match raw.postgresql.callback_primary_role.as_deref() {
        None | Some("master") => "master".to_owned(),
        Some("primary") => "primary".to_owned(),
        Some(other) => {
            return Err(err(file, format!("`postgresql.callback_primary_role`: {other:?} is not master or primary")))
        }
    };
    let pg = pg_settings(file, raw.postgresql)?;
    let mode = match raw.watchdog.as_ref().and_then(|w| w.mode.clone()) {
        None => WatchdogMode::Automatic,
        Some(Value::Bool(false)) => WatchdogMode::Off,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "off" | "false" | "disable" => WatchdogMode::Off,
            "automatic" | "auto" => WatchdogMode::Automatic,
            "required" => WatchdogMode::Required,
            other => return Err(err(file, format!("`watchdog.mode`: {other:?} is not off, automatic or required"))),
        },
        Some(v) => return Err(err(file, format!("`watchdog.mode`: {v:?} is not off, automatic or required"))),
    };
    let watchdog = watchdog_settings(file, mode, raw.watchdog.as_ref())?;
    let vip = raw.vip.as_ref().map(|v| vip_settings(file, v)).transpose()?;

    let tags = raw.tags.map(|t| {
        let j: serde_json::Map<String, serde_json::Value> =
            t.into_iter().map(|(k, v)| (k, serde_json::to_value(v).unwrap_or(serde_json::Value::Null))).collect();
        Tags::from_json(&serde_json::Value::Object(j))
    });
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
        tags: tags.unwrap_or_default(),
        warnings,
        custom_bootstrap,
    })
}

fn scripts(file: &Path, raw: &RawPostgresql) -> Result<crate::backend::callbacks::Scripts, ConfigFileError> {
    use crate::backend::callbacks::{split_command, Event};
    let mut callbacks = BTreeMap::new();
    for (k, cmd) in raw.callbacks.iter().flatten() {
        let event = Event::from_key(k).ok_or_else(|| {
            err(file, format!("`postgresql.callbacks.{k}`: not a callback (on_start, on_stop, on_restart, on_reload, on_role_change)"))
        })?;
        let argv = split_command(cmd).map_err(|e| err(file, format!("`postgresql.callbacks.{k}`: {e}")))?;
        callbacks.insert(event, argv);
    }
    let one = |key: &str, cmd: &Option<String>| -> Result<Option<Vec<String>>, ConfigFileError> {
        cmd.as_deref().map(|c| split_command(c).map_err(|e| err(file, format!("`postgresql.{key}`: {e}")))).transpose()
    };
    let timeout = match &raw.callback_timeout {
        None => std::time::Duration::from_secs(30),
        Some(v) => match v.as_f64() {
            Some(s) if s > 0.0 && s <= 3600.0 => std::time::Duration::from_secs_f64(s),
            _ => {
                return Err(err(
                    file,
                    format!("`postgresql.callback_timeout`: {v:?} is not a number of seconds (0-3600]"),
                ))
            }
        },
    };
    Ok(crate::backend::callbacks::Scripts {
        callbacks,
        pre_promote: one("pre_promote", &raw.pre_promote)?,
        before_stop: one("before_stop", &raw.before_stop)?,
        timeout,
    })
}

/// The REST API's TLS files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiTls {
    /// `certfile` (PEM chain).
    pub cert: PathBuf,
    /// `keyfile` (PEM; defaults to `certfile`, which may hold both, as in Patroni).
    pub key: PathBuf,
    /// `cafile`: clients' CA, and the CA Shield trusts when it calls other members.
    pub ca: Option<PathBuf>,
    /// `verify_client`.
    pub verify: crate::net::tls::VerifyClient,
}

fn rest_security(
    file: &Path,
    r: &RawRestApi,
) -> Result<(Option<ApiTls>, crate::rest::access::Access), ConfigFileError> {
    use crate::net::tls::VerifyClient;
    if r.keyfile_password.is_some() {
        return Err(err(
            file,
            "`restapi.keyfile_password`: encrypted keys are not supported; give an unencrypted keyfile",
        ));
    }
    let verify = match r.verify_client.as_deref() {
        None | Some("none") => VerifyClient::None,
        Some("optional") => VerifyClient::Optional,
        Some("required") => VerifyClient::Required,
        Some(v) => return Err(err(file, format!("`restapi.verify_client`: {v:?} is not none, optional or required"))),
    };
    let tls = match (&r.certfile, &r.keyfile) {
        (None, None) => {
            if verify != VerifyClient::None || r.cafile.is_some() {
                return Err(err(file, "`restapi.verify_client`/`cafile` need `restapi.certfile` (TLS)"));
            }
            None
        }
        (None, Some(_)) => return Err(err(file, "`restapi.keyfile` needs `restapi.certfile`")),
        (Some(c), k) => {
            if r.cafile.is_none() {
                return Err(err(
                    file,
                    "`restapi.certfile` needs `restapi.cafile`: the CA members verify each other's API certificates with",
                ));
            }
            Some(ApiTls {
                cert: PathBuf::from(c),
                key: PathBuf::from(k.as_deref().unwrap_or(c)),
                ca: r.cafile.as_deref().map(PathBuf::from),
                verify,
            })
        }
    };
    let mut allowlist = Vec::new();
    let mut hosts = Vec::new();
    for entry in r.allowlist.iter().flatten() {
        match crate::rest::access::Cidr::parse(entry) {
            Ok(c) => allowlist.push(c),
            // A host name: looked up by the REST server in the background (never here: a reload
            // runs in the HA loop, which must not wait for DNS).
            Err(_) if is_host_name(entry) => hosts.push(entry.trim().to_owned()),
            Err(_) => {
                return Err(err(
                    file,
                    format!("`restapi.allowlist`: {entry:?} is not an address, network or host name"),
                ))
            }
        }
    }
    let access = crate::rest::access::Access {
        allowlist,
        hosts,
        include_members: r.allowlist_include_members.unwrap_or(false),
        cert_for_unsafe: verify == VerifyClient::Optional,
    };
    Ok((tls, access))
}

/// A syntactically valid DNS host name (letters, digits, `-`, dot-separated labels).
fn is_host_name(s: &str) -> bool {
    let s = s.trim().trim_end_matches('.');
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

fn vip_settings(file: &Path, raw: &RawVip) -> Result<crate::backend::vip::VipSettings, ConfigFileError> {
    let ip = |key: &str, v: &str| -> Result<std::net::Ipv4Addr, ConfigFileError> {
        match v.trim().parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(a)) => Ok(a),
            Ok(std::net::IpAddr::V6(_)) => {
                Err(err(file, format!("`vip.{key}`: {v:?}: IPv6 VIPs are not supported yet")))
            }
            Err(_) => Err(err(file, format!("`vip.{key}`: {v:?} is not an IPv4 address"))),
        }
    };
    let address = ip("address", &raw.address)?;
    if address.is_unspecified() || address.is_multicast() || address.is_broadcast() {
        return Err(err(file, format!("`vip.address`: {address} cannot be a host address")));
    }
    let prefix = match (&raw.netmask, raw.prefix) {
        (Some(_), Some(_)) => return Err(err(file, "`vip`: give `netmask` or `prefix`, not both")),
        (None, None) => {
            return Err(err(file, "`vip`: `netmask` (e.g. 255.255.255.0) or `prefix` (e.g. 24) is required"))
        }
        (None, Some(p)) if p <= 32 => p,
        (None, Some(p)) => return Err(err(file, format!("`vip.prefix`: {p} is not between 0 and 32"))),
        (Some(m), None) => crate::backend::vip::netmask_prefix(ip("netmask", m)?)
            .ok_or_else(|| err(file, format!("`vip.netmask`: {m:?} is not a netmask (contiguous ones)")))?,
    };
    let interface = raw.interface.trim().to_owned();
    // Linux interface names: 1-15 bytes, no slash, colon or whitespace.
    if interface.is_empty()
        || interface.len() > 15
        || interface.contains(['/', ':'])
        || interface.contains(char::is_whitespace)
    {
        return Err(err(file, format!("`vip.interface`: {:?} is not a network interface name", raw.interface)));
    }
    let broadcast = raw.broadcast.as_deref().map(|b| ip("broadcast", b)).transpose()?;
    let announcements = raw.announcements.unwrap_or(3);
    if announcements > 100 {
        return Err(err(file, format!("`vip.announcements`: {announcements} is too many (at most 100)")));
    }
    Ok(crate::backend::vip::VipSettings { address, prefix, interface, broadcast, announcements })
}

fn watchdog_settings(
    file: &Path,
    mode: WatchdogMode,
    raw: Option<&RawWatchdog>,
) -> Result<WatchdogSettings, ConfigFileError> {
    let device = raw.and_then(|w| w.device.clone()).unwrap_or_else(|| "/dev/watchdog".to_owned());
    if device.trim().is_empty() {
        return Err(err(file, "`watchdog.device` is empty"));
    }
    let driver = match raw.and_then(|w| w.driver.as_deref()) {
        None | Some("default") | Some("linux") => crate::backend::watchdog::Driver::Linux,
        Some("testing") => crate::backend::watchdog::Driver::Testing,
        Some(other) => return Err(err(file, format!("`watchdog.driver`: {other:?} is not default or testing"))),
    };
    // Seconds, as Patroni takes it; -1 is Patroni's "half the ttl", which Shield's derived
    // default (None) replaces with a bound that fits its lease arithmetic.
    let safety_margin_ms = match raw.and_then(|w| w.safety_margin.as_ref()) {
        None => None,
        Some(v) => match v.as_f64() {
            Some(-1.0) => None,
            Some(m) if (0.0..3600.0).contains(&m) => Some((m * 1000.0).round() as u64),
            _ => return Err(err(file, format!("`watchdog.safety_margin`: {v:?} is not a number of seconds (or -1)"))),
        },
    };
    Ok(WatchdogSettings { mode, device: PathBuf::from(device), driver, safety_margin_ms })
}

fn parse_listen(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_port = if s.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        s.to_owned()
    } else {
        format!("{s}:{default_port}")
    };
    let with_host = if with_port.starts_with(':') { format!("0.0.0.0{with_port}") } else { with_port };
    with_host.parse().map_err(|_| format!("{s:?} is not host:port with a numeric IP address"))
}

fn initdb_arg(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(format!("--{s}")),
        Value::Mapping(m) if m.len() == 1 => {
            let (k, v) = m.iter().next()?;
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some(format!("--{}={v}", k.as_str()?))
        }
        _ => None,
    }
}

fn hosts_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(s.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()),
        Value::Sequence(items) => items.iter().map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}

pub(crate) fn dcs_settings(
    file: &Path,
    etcd: Option<RawEtcd>,
    consul: Option<RawConsul>,
) -> Result<DcsSettings, ConfigFileError> {
    match (etcd, consul) {
        (Some(_), Some(_)) => Err(err(file, "both `etcd3` and `consul` are set; configure exactly one DCS")),
        (None, None) => Err(err(file, "no DCS configured: add an `etcd3` (or `consul`) section")),
        (Some(e), None) => {
            let protocol =
                e.protocol.clone().unwrap_or_else(|| if e.cacert.is_some() { "https".into() } else { "http".into() });
            if protocol != "http" && protocol != "https" {
                return Err(err(file, format!("`etcd3.protocol`: {protocol:?} is not http or https")));
            }
            // Patroni's order: a proxy is the one endpoint; else the SRV lookup, which Shield does
            // not do (it uses the listed hosts, Patroni's fallback); else `hosts`, `host`, `url`.
            let hosts = match (&e.proxy, &e.hosts, &e.host, &e.url) {
                (Some(p), _, _, _) => vec![p.clone()],
                (None, Some(h), _, _) => hosts_list(h)
                    .ok_or_else(|| err(file, "`etcd3.hosts`: expected a list or a comma-separated string"))?,
                (None, None, Some(h), _) => vec![h.clone()],
                (None, None, None, Some(u)) => vec![u.clone()],
                _ if e.srv.is_some() => {
                    return Err(err(
                        file,
                        "`etcd3.srv`: Shield does not look up SRV records; list the members in `etcd3.hosts`",
                    ))
                }
                _ => return Err(err(file, "`etcd3`: set `hosts`, `host` or `url`")),
            };
            let endpoints =
                hosts.iter().map(|h| if h.contains("://") { h.clone() } else { format!("{protocol}://{h}") }).collect();
            let auth = match (e.username, e.password) {
                (Some(u), p) => Some(Credentials { username: u, password: p.unwrap_or_default() }),
                (None, Some(_)) => return Err(err(file, "`etcd3.password` without `etcd3.username`")),
                (None, None) => None,
            };
            let tls = (e.cacert.is_some() || e.cert.is_some())
                .then(|| (e.cacert.map(PathBuf::from), e.cert.map(PathBuf::from), e.key.map(PathBuf::from)));
            Ok(DcsSettings::Etcd3 { endpoints, auth, tls })
        }
        (None, Some(c)) => {
            let service = match c.register_service {
                Some(true) => {
                    let interval = match &c.service_check_interval {
                        None => 5,
                        Some(v) => {
                            match v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim_end_matches('s').parse().ok())) {
                                Some(s) if (1..=3600).contains(&s) => s,
                                _ => {
                                    return Err(err(
                                        file,
                                        format!(
                                        "`consul.service_check_interval`: {v:?} is not a number of seconds (1-3600)"
                                    ),
                                    ))
                                }
                            }
                        }
                    };
                    Some((c.service_tags.clone().unwrap_or_default(), interval))
                }
                _ => None,
            };
            let consistency = c.consistency.clone().unwrap_or_else(|| "default".into());
            if !["default", "consistent", "stale"].contains(&consistency.as_str()) {
                return Err(err(
                    file,
                    format!("`consul.consistency`: {consistency:?} is not default, consistent or stale"),
                ));
            }
            let tls = match (c.cacert.clone(), c.cert.clone(), c.key.clone()) {
                (None, None, None) => None,
                (Some(ca), cert, key) if cert.is_some() == key.is_some() => {
                    Some((PathBuf::from(ca), cert.map(PathBuf::from), key.map(PathBuf::from)))
                }
                (None, _, _) => return Err(err(file, "`consul.cert`/`consul.key` need `consul.cacert`")),
                _ => return Err(err(file, "`consul.cert` and `consul.key` must be given together")),
            };
            let checks = c.checks.clone().unwrap_or_default();
            let url = match (c.url, c.host) {
                (Some(u), _) => u,
                (None, Some(h)) => {
                    let scheme = c.scheme.unwrap_or_else(|| "http".into());
                    if h.contains(':') {
                        format!("{scheme}://{h}")
                    } else {
                        format!("{scheme}://{h}:{}", c.port.unwrap_or(8500))
                    }
                }
                (None, None) => "http://127.0.0.1:8500".to_owned(),
            };
            Ok(DcsSettings::Consul {
                url,
                token: c.token,
                dc: c.dc.unwrap_or_default(),
                tls,
                consistency,
                checks,
                service,
            })
        }
    }
}

fn user(file: &Path, which: &str, u: Option<RawUser>, default_name: &str) -> Result<Credentials, ConfigFileError> {
    let u = u.unwrap_or(RawUser { username: None, password: None, other: BTreeMap::new() });
    let allowed = [
        "sslmode",
        "sslcert",
        "sslkey",
        "sslpassword",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "gssencmode",
        "channel_binding",
    ];
    if let Some(k) = u.other.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(file, format!("`postgresql.authentication.{which}.{k}`: unknown key")));
    }
    Ok(Credentials {
        username: u.username.unwrap_or_else(|| default_name.to_owned()),
        password: u.password.unwrap_or_default(),
    })
}

fn pg_settings(file: &Path, p: RawPostgresql) -> Result<PgSettings, ConfigFileError> {
    // Options Shield sets itself (where to write, the source, WAL streaming) cannot be overridden.
    const OWNED: [&str; 5] = ["--pgdata", "--dbname", "--wal-method", "--host", "--port"];
    let basebackup_args = match &p.basebackup {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|v| {
                let arg = initdb_arg(v).ok_or_else(|| {
                    err(file, format!("`postgresql.basebackup`: cannot use {v:?} as a pg_basebackup option"))
                })?;
                if OWNED.iter().any(|o| arg == *o || arg.starts_with(&format!("{o}="))) {
                    return Err(err(file, format!("`postgresql.basebackup`: {arg} is set by Shield")));
                }
                Ok(arg)
            })
            .collect::<Result<Vec<_>, _>>()?,
        // Patroni's other form: a mapping of option to value.
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let one = Value::Mapping([(k.clone(), v.clone())].into_iter().collect());
                let arg = initdb_arg(&one).ok_or_else(|| {
                    err(file, format!("`postgresql.basebackup`: cannot use {k:?}: {v:?} as a pg_basebackup option"))
                })?;
                if OWNED.iter().any(|o| arg == *o || arg.starts_with(&format!("{o}="))) {
                    return Err(err(file, format!("`postgresql.basebackup`: {arg} is set by Shield")));
                }
                Ok(arg)
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(v) => return Err(err(file, format!("`postgresql.basebackup`: {v:?} is not a list of options"))),
    };
    let listen_host;
    let port;
    {
        let first = p.listen.split(',').next().unwrap_or_default().trim().to_owned();
        let (h, pt) = first.rsplit_once(':').unwrap_or((first.as_str(), "5432"));
        port = pt.parse::<u16>().map_err(|_| err(file, format!("`postgresql.listen`: {pt:?} is not a port")))?;
        listen_host = if h.is_empty() { "*".to_owned() } else { h.to_owned() };
    }
    let bin_dir = match p.bin_dir {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("/usr/lib/postgresql/15/bin"),
    };
    let auth = p.authentication.unwrap_or(RawPgAuth { superuser: None, replication: None, rewind: None });
    let superuser = user(file, "superuser", auth.superuser, "postgres")?;
    let replication = user(file, "replication", auth.replication, "replicator")?;
    let rewind = match auth.rewind {
        Some(r) => user(file, "rewind", Some(r), &superuser.username)?,
        None => superuser.clone(),
    };
    let parameters = p
        .parameters
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => {
                    if b {
                        "on".into()
                    } else {
                        "off".into()
                    }
                }
                other => return Err(err(file, format!("`postgresql.parameters.{k}`: {other:?} is not a scalar"))),
            };
            Ok((k, s))
        })
        .collect::<Result<_, _>>()?;
    let data_dir = PathBuf::from(&p.data_dir);
    let pgpass = p.pgpass.map(PathBuf::from).unwrap_or_else(|| {
        data_dir
            .parent()
            .unwrap_or(Path::new("/tmp"))
            .join(format!("pgpass-{}", data_dir.file_name().and_then(|n| n.to_str()).unwrap_or("shield")))
    });
    Ok(PgSettings {
        listen_host,
        port,
        connect_address: p.connect_address,
        data_dir,
        bin_dir,
        pgpass,
        superuser,
        replication,
        rewind,
        parameters,
        local_pg: shield_core::config::LocalPg {
            use_pg_rewind: p.use_pg_rewind,
            remove_data_directory_on_rewind_failure: p.remove_data_directory_on_rewind_failure,
            remove_data_directory_on_diverged_timelines: p.remove_data_directory_on_diverged_timelines,
        },
        pg_ctl_timeout_s: p.pg_ctl_timeout.unwrap_or(60),
        basebackup_args,
    })
}

mod keys;

#[cfg(test)]
mod tests;
