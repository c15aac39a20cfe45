//! The YAML documents `shield init` writes, built as serde_yaml_ng values (never by string
//! formatting, so any password, path or name reads back exactly).

use super::node::subnet;
use std::net::Ipv4Addr;
use std::path::Path;

/// A YAML mapping with its keys in the given order (serde_yaml_ng keeps insertion order).
pub(crate) fn yaml_map<const N: usize>(pairs: [(&str, serde_yaml_ng::Value); N]) -> serde_yaml_ng::Value {
    serde_yaml_ng::Value::Mapping(pairs.into_iter().map(|(k, v)| (str_value(k), v)).collect())
}

/// A YAML string: serde_yaml_ng quotes and escapes it as it needs (` #`, quotes, colons, a
/// leading `-`, `*`, `&`, `!`, `{`, newlines, and text that would read back as a number or bool).
pub(crate) fn str_value(s: impl Into<String>) -> serde_yaml_ng::Value {
    serde_yaml_ng::Value::String(s.into())
}

/// A path as a YAML string (a path that is not UTF-8 is written as `Path::display` shows it).
pub(crate) fn path_value(p: &Path) -> serde_yaml_ng::Value {
    str_value(p.display().to_string())
}

/// A YAML sequence.
fn seq_value(items: impl IntoIterator<Item = serde_yaml_ng::Value>) -> serde_yaml_ng::Value {
    serde_yaml_ng::Value::Sequence(items.into_iter().collect())
}

/// The YAML text of a document made of mappings, sequences, strings, numbers and bools.
pub(crate) fn to_yaml(doc: &serde_yaml_ng::Value) -> String {
    // Serialising such a value cannot fail: every key is a string and nothing is borrowed.
    serde_yaml_ng::to_string(doc).expect("a YAML value of plain data serialises")
}

/// A comment line's text with control characters (a newline would end the comment) escaped.
fn comment_text(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}

pub(crate) fn vip_yaml(vip: Ipv4Addr, prefix: u8, interface: &str, broadcast: Ipv4Addr) -> String {
    let netmask = subnet(vip, prefix).netmask();
    to_yaml(&yaml_map([(
        "vip",
        yaml_map([
            ("address", str_value(vip.to_string())),
            ("netmask", str_value(netmask.to_string())),
            ("broadcast", str_value(broadcast.to_string())),
            ("interface", str_value(interface)),
        ]),
    )]))
}

pub(crate) struct NodeYaml<'a> {
    /// The cluster's network (the VIP's subnet), for pg_hba.
    pub(crate) net: &'a str,
    pub(crate) socket_dir: Option<&'a Path>,
    pub(crate) scope: &'a str,
    pub(crate) name: &'a str,
    pub(crate) this: Ipv4Addr,
    pub(crate) port: u16,
    pub(crate) etcd: &'a [Ipv4Addr],
    pub(crate) data_dir: &'a Path,
    pub(crate) bin_dir: &'a Path,
    pub(crate) su_password: &'a str,
    pub(crate) rep_password: &'a str,
    /// `restapi.authentication`'s password.
    pub(crate) rest_password: &'a str,
    /// The addresses allowed to send unsafe REST requests (with loopback).
    pub(crate) members: &'a [Ipv4Addr],
    pub(crate) rest_loopback_only: bool,
}

/// The `restapi` section: credentials for unsafe requests always; an allowlist of the members
/// and loopback, or a loopback-only listen.
fn restapi_yaml(n: &NodeYaml<'_>) -> serde_yaml_ng::Value {
    let listen = if n.rest_loopback_only { "127.0.0.1:8008" } else { "0.0.0.0:8008" };
    let mut allow = vec!["127.0.0.1".to_owned(), "::1".to_owned()];
    if !n.rest_loopback_only {
        for a in n.members.iter().chain([&n.this]) {
            if !allow.contains(&a.to_string()) {
                allow.push(a.to_string());
            }
        }
    }
    yaml_map([
        ("listen", str_value(listen)),
        ("connect_address", str_value(format!("{}:8008", n.this))),
        ("authentication", yaml_map([("username", str_value("shield")), ("password", str_value(n.rest_password))])),
        ("allowlist", seq_value(allow.into_iter().map(str_value))),
        ("allowlist_include_members", serde_yaml_ng::Value::Bool(!n.rest_loopback_only)),
    ])
}

pub(crate) fn node_yaml(n: &NodeYaml<'_>) -> String {
    let hba = |what: &str, net: &str| str_value(format!("host {what} {net} scram-sha-256"));
    let bootstrap = yaml_map([
        (
            "dcs",
            yaml_map([
                ("ttl", 4.into()),
                ("loop_wait", 1.into()),
                ("retry_timeout", 1.5.into()),
                ("postgresql", yaml_map([("use_pg_rewind", true.into())])),
            ]),
        ),
        ("initdb", seq_value([yaml_map([("encoding", str_value("UTF8"))]), str_value("data-checksums")])),
        (
            "pg_hba",
            seq_value([
                hba("replication replicator", n.net),
                hba("all all", n.net),
                hba("replication replicator", "127.0.0.1/32"),
                hba("all all", "127.0.0.1/32"),
            ]),
        ),
    ]);
    let user =
        |name: &str, password: &str| yaml_map([("username", str_value(name)), ("password", str_value(password))]);
    let mut postgresql = yaml_map([
        ("listen", str_value(format!("0.0.0.0:{}", n.port))),
        ("connect_address", str_value(format!("{}:{}", n.this, n.port))),
        ("data_dir", path_value(n.data_dir)),
        ("bin_dir", path_value(n.bin_dir)),
        ("pgpass", str_value(format!("{}.pgpass", n.data_dir.display()))),
        (
            "authentication",
            yaml_map([
                ("superuser", user("postgres", n.su_password)),
                ("replication", user("replicator", n.rep_password)),
            ]),
        ),
    ]);
    if let (Some(dir), serde_yaml_ng::Value::Mapping(pg)) = (n.socket_dir, &mut postgresql) {
        pg.insert(str_value("parameters"), yaml_map([("unix_socket_directories", path_value(dir))]));
    }
    let doc = yaml_map([
        ("scope", str_value(n.scope)),
        ("name", str_value(n.name)),
        ("restapi", restapi_yaml(n)),
        ("etcd3", yaml_map([("hosts", seq_value(n.etcd.iter().map(|e| str_value(format!("{e}:2379")))))])),
        ("bootstrap", bootstrap),
        ("postgresql", postgresql),
        ("watchdog", yaml_map([("mode", str_value("automatic"))])),
    ]);
    format!(
        "# Node {} of cluster {}, written by `shield init node`. Patroni's keys, plus `vip`.\n{}",
        comment_text(n.name),
        comment_text(n.scope),
        to_yaml(&doc)
    )
}
