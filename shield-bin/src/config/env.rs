//! `PATRONI_*` and `SHIELD_*` environment overrides, applied to the YAML before it is parsed,
//! as Patroni applies them.

use serde_yaml_ng::Value;
use std::collections::BTreeMap;

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
pub(crate) fn apply_env(root: &mut Value, env: &BTreeMap<String, String>) {
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
