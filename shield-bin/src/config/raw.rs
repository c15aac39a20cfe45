//! The node's YAML as written: Patroni's sections and keys, before any check.

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawConfig {
    pub(crate) scope: String,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
    pub(crate) restapi: RawRestApi,
    #[serde(default)]
    pub(crate) etcd3: Option<RawEtcd>,
    #[serde(default)]
    pub(crate) etcd: Option<RawEtcd>,
    #[serde(default)]
    pub(crate) consul: Option<RawConsul>,
    #[serde(default)]
    pub(crate) bootstrap: Option<RawBootstrap>,
    pub(crate) postgresql: RawPostgresql,
    #[serde(default)]
    pub(crate) watchdog: Option<RawWatchdog>,
    /// Shield's own key: Patroni has no VIP.
    #[serde(default)]
    pub(crate) vip: Option<RawVip>,
    #[serde(default)]
    pub(crate) tags: Option<BTreeMap<String, Value>>,
    // Accepted for compatibility, not acted on.
    #[serde(default)]
    pub(crate) log: Option<Value>,
    #[serde(default)]
    pub(crate) ctl: Option<Value>,
    #[serde(default)]
    pub(crate) citus: Option<Value>,
    // Other DCS kinds Patroni knows: accepted by the parser so the error can say "not supported".
    #[serde(default)]
    pub(crate) zookeeper: Option<Value>,
    #[serde(default)]
    pub(crate) exhibitor: Option<Value>,
    #[serde(default)]
    pub(crate) kubernetes: Option<Value>,
    #[serde(default)]
    pub(crate) raft: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawRestApi {
    pub(crate) listen: String,
    pub(crate) connect_address: String,
    #[serde(default)]
    pub(crate) authentication: Option<RawAuth>,
    #[serde(default)]
    pub(crate) certfile: Option<String>,
    #[serde(default)]
    pub(crate) keyfile: Option<String>,
    #[serde(default)]
    pub(crate) keyfile_password: Option<String>,
    #[serde(default)]
    pub(crate) cafile: Option<String>,
    #[serde(default)]
    pub(crate) ciphers: Option<String>,
    #[serde(default)]
    pub(crate) verify_client: Option<String>,
    #[serde(default)]
    pub(crate) allowlist: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) allowlist_include_members: Option<bool>,
    #[serde(default)]
    pub(crate) http_extra_headers: Option<Value>,
    #[serde(default)]
    pub(crate) https_extra_headers: Option<Value>,
    #[serde(default)]
    pub(crate) request_queue_size: Option<u32>,
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
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) hosts: Option<Value>,
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) proxy: Option<String>,
    #[serde(default)]
    pub(crate) srv: Option<String>,
    #[serde(default)]
    pub(crate) srv_suffix: Option<String>,
    #[serde(default)]
    pub(crate) protocol: Option<String>,
    #[serde(default)]
    pub(crate) use_proxies: Option<bool>,
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) password: Option<String>,
    #[serde(default)]
    pub(crate) cacert: Option<String>,
    #[serde(default)]
    pub(crate) cert: Option<String>,
    #[serde(default)]
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) key_password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawConsul {
    #[serde(default)]
    pub(crate) host: Option<String>,
    #[serde(default)]
    pub(crate) url: Option<String>,
    #[serde(default)]
    pub(crate) port: Option<u16>,
    #[serde(default)]
    pub(crate) scheme: Option<String>,
    #[serde(default)]
    pub(crate) token: Option<String>,
    #[serde(default)]
    pub(crate) verify: Option<bool>,
    #[serde(default)]
    pub(crate) cacert: Option<String>,
    #[serde(default)]
    pub(crate) cert: Option<String>,
    #[serde(default)]
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) dc: Option<String>,
    #[serde(default)]
    pub(crate) consistency: Option<String>,
    #[serde(default)]
    pub(crate) checks: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) register_service: Option<bool>,
    #[serde(default)]
    pub(crate) service_tags: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) service_check_interval: Option<Value>,
    #[serde(default)]
    pub(crate) service_check_tls_server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawBootstrap {
    #[serde(default)]
    pub(crate) dcs: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) initdb: Option<Vec<Value>>,
    #[serde(default)]
    pub(crate) pg_hba: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) users: Option<Value>,
    #[serde(default)]
    pub(crate) method: Option<String>,
    #[serde(default)]
    pub(crate) post_bootstrap: Option<String>,
    #[serde(default)]
    pub(crate) post_init: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawPgAuth {
    #[serde(default)]
    pub(crate) superuser: Option<RawUser>,
    #[serde(default)]
    pub(crate) replication: Option<RawUser>,
    #[serde(default)]
    pub(crate) rewind: Option<RawUser>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawUser {
    #[serde(default)]
    pub(crate) username: Option<String>,
    #[serde(default)]
    pub(crate) password: Option<String>,
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawPostgresql {
    pub(crate) listen: String,
    pub(crate) connect_address: String,
    pub(crate) data_dir: String,
    #[serde(default)]
    pub(crate) proxy_address: Option<String>,
    #[serde(default)]
    pub(crate) config_dir: Option<String>,
    #[serde(default)]
    pub(crate) bin_dir: Option<String>,
    #[serde(default)]
    pub(crate) bin_name: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) pgpass: Option<String>,
    #[serde(default)]
    pub(crate) authentication: Option<RawPgAuth>,
    #[serde(default)]
    pub(crate) parameters: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub(crate) pg_hba: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) pg_ident: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) callbacks: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(crate) create_replica_methods: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) basebackup: Option<Value>,
    #[serde(default)]
    pub(crate) use_pg_rewind: Option<bool>,
    #[serde(default)]
    pub(crate) remove_data_directory_on_rewind_failure: Option<bool>,
    #[serde(default)]
    pub(crate) remove_data_directory_on_diverged_timelines: Option<bool>,
    #[serde(default)]
    pub(crate) recovery_conf: Option<Value>,
    #[serde(default)]
    pub(crate) custom_conf: Option<String>,
    #[serde(default)]
    pub(crate) pg_ctl_timeout: Option<u64>,
    #[serde(default)]
    pub(crate) use_unix_socket: Option<bool>,
    #[serde(default)]
    pub(crate) use_unix_socket_repl: Option<bool>,
    #[serde(default)]
    pub(crate) pre_promote: Option<String>,
    #[serde(default)]
    pub(crate) before_stop: Option<String>,
    // Shield's own keys.
    #[serde(default)]
    pub(crate) callback_timeout: Option<Value>,
    #[serde(default)]
    pub(crate) callback_primary_role: Option<String>,
    /// Shield's: which command-running parameters the cluster config may change remotely.
    #[serde(default)]
    pub(crate) allow_command_parameters: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // not every key is acted on (see config/keys.rs)
pub(crate) struct RawWatchdog {
    #[serde(default)]
    pub(crate) mode: Option<Value>,
    #[serde(default)]
    pub(crate) device: Option<String>,
    #[serde(default)]
    pub(crate) safety_margin: Option<Value>,
    #[serde(default)]
    pub(crate) driver: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVip {
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) netmask: Option<String>,
    #[serde(default)]
    pub(crate) prefix: Option<u8>,
    pub(crate) interface: String,
    #[serde(default)]
    pub(crate) broadcast: Option<String>,
    #[serde(default)]
    pub(crate) announcements: Option<u32>,
}
