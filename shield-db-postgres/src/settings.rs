//! The backend's settings: what the node config (`postgresql` section) says about the server and
//! the users Shield connects as. Loaded and checked by the daemon's config layer.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// A user and password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password (may be empty: trust or peer auth).
    pub password: String,
}

/// PostgreSQL settings.
#[derive(Clone, Debug)]
pub struct PgSettings {
    /// `listen`: host and port.
    pub listen_host: String,
    /// Port.
    pub port: u16,
    /// `connect_address`: published `host:port`.
    pub connect_address: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where the server binaries are.
    pub bin_dir: PathBuf,
    /// `.pgpass` file Shield writes.
    pub pgpass: PathBuf,
    /// Superuser.
    pub superuser: Credentials,
    /// Replication user.
    pub replication: Credentials,
    /// Rewind user (defaults to the superuser).
    pub rewind: Credentials,
    /// `postgresql.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// `use_pg_rewind` and `remove_data_directory_on_*`: each wins over the DCS when set, as in
    /// Patroni.
    pub local_pg: shield_core::config::LocalPg,
    /// `pg_ctl_timeout`, seconds.
    pub pg_ctl_timeout_s: u64,
    /// `basebackup`: extra pg_basebackup options (Patroni's list of `option` or `{option: value}`).
    pub basebackup_args: Vec<String>,
}
