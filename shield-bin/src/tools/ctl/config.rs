//! shieldctl's settings: the DCS to read and the credentials for members' REST APIs, from the
//! same YAML the daemon reads (or a shorter file with just those sections), or from `--dcs-url`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::dcs::DcsSettings;
use crate::config::dcs::dcs_settings;
use crate::config::raw::{RawAuth, RawConsul, RawEtcd};

/// What shieldctl needs to reach a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlConfig {
    /// The default cluster (`scope`).
    pub scope: Option<String>,
    /// The DCS namespace.
    pub namespace: String,
    /// The DCS.
    pub dcs: DcsSettings,
    /// Basic auth for unsafe REST calls: `ctl.authentication`, else `restapi.authentication`.
    pub auth: Option<(String, String)>,
    /// For REST calls over https: the CA to trust (`ctl.cacert`, else `restapi.cafile`) and the
    /// client certificate and key to present (`ctl.certfile`, `ctl.keyfile`).
    pub tls: Option<(PathBuf, Option<(PathBuf, PathBuf)>)>,
    /// Accept any REST certificate (`ctl.insecure`, or `-k`).
    pub insecure: bool,
    /// `postgresql.allow_command_parameters`: what `edit-config` may change among the
    /// parameters that run commands.
    pub command_params: crate::rest::command_params::CommandParams,
}

/// The file's sections shieldctl reads; everything else in a node config is ignored here.
#[derive(Debug, Default, Deserialize)]
struct RawCtlFile {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    etcd3: Option<RawEtcd>,
    #[serde(default)]
    etcd: Option<RawEtcd>,
    #[serde(default)]
    consul: Option<RawConsul>,
    #[serde(default)]
    restapi: Option<RawRestAuth>,
    #[serde(default)]
    ctl: Option<RawCtl>,
    #[serde(default)]
    postgresql: Option<RawCtlPg>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCtlPg {
    #[serde(default)]
    allow_command_parameters: Option<serde_yaml_ng::Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRestAuth {
    #[serde(default)]
    authentication: Option<RawAuth>,
    #[serde(default)]
    cafile: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCtl {
    #[serde(default)]
    authentication: Option<RawAuth>,
    #[serde(default)]
    insecure: Option<bool>,
    #[serde(default)]
    cacert: Option<String>,
    #[serde(default)]
    certfile: Option<String>,
    #[serde(default)]
    keyfile: Option<String>,
}

/// The config files tried when none is named, in order.
pub fn default_paths(home: Option<&Path>) -> Vec<PathBuf> {
    let Some(home) = home else { return Vec::new() };
    vec![home.join(".config/shield/shieldctl.yaml"), home.join(".config/patroni/patronictl.yaml")]
}

impl CtlConfig {
    /// Parses a config file's text (`file` names it in errors).
    pub fn parse(file: &Path, text: &str) -> Result<CtlConfig, String> {
        let raw: RawCtlFile = serde_yaml_ng::from_str::<Option<RawCtlFile>>(text)
            .map_err(|e| format!("{}: {e}", file.display()))?
            .unwrap_or_default();
        let ctl = raw.ctl.as_ref();
        let insecure = ctl.and_then(|c| c.insecure) == Some(true);
        let ca = ctl.and_then(|c| c.cacert.clone()).or_else(|| raw.restapi.as_ref().and_then(|r| r.cafile.clone()));
        let identity = match (ctl.and_then(|c| c.certfile.clone()), ctl.and_then(|c| c.keyfile.clone())) {
            (Some(c), k) => Some((PathBuf::from(&c), PathBuf::from(k.unwrap_or(c)))),
            (None, Some(_)) => return Err(format!("{}: `ctl.keyfile` needs `ctl.certfile`", file.display())),
            (None, None) => None,
        };
        let tls = match (ca, identity) {
            (Some(ca), identity) => Some((PathBuf::from(ca), identity)),
            (None, Some(_)) if !insecure => {
                return Err(format!("{}: `ctl.certfile` needs `ctl.cacert` (or `ctl.insecure`)", file.display()))
            }
            (None, Some(identity)) => Some((PathBuf::new(), Some(identity))),
            (None, None) => None,
        };
        let dcs = dcs_settings(file, raw.etcd3.or(raw.etcd), raw.consul).map_err(|e| e.to_string())?;
        let command_params = match raw.postgresql.and_then(|p| p.allow_command_parameters) {
            Some(v) => crate::rest::command_params::CommandParams::from_yaml(&v)
                .map_err(|e| format!("{}: {e}", file.display()))?,
            None => crate::rest::command_params::CommandParams::default(),
        };
        let auth = raw
            .ctl
            .and_then(|c| c.authentication)
            .or_else(|| raw.restapi.and_then(|r| r.authentication))
            .map(|a| (a.username, a.password));
        Ok(CtlConfig {
            scope: raw.scope,
            namespace: raw.namespace.unwrap_or_else(|| "/service".to_owned()),
            dcs,
            auth,
            tls,
            insecure,
            command_params,
        })
    }

    /// Parses `--dcs-url`: `etcd3://host:port[,host:port..][/namespace]`, `etcd://...` or
    /// `consul://host:port[/namespace]`.
    pub fn from_url(url: &str) -> Result<CtlConfig, String> {
        let (scheme, rest) =
            url.split_once("://").ok_or_else(|| format!("--dcs-url {url:?}: expected etcd3://host:port/namespace"))?;
        let (hosts, namespace) = match rest.split_once('/') {
            Some((h, ns)) if !ns.trim_matches('/').is_empty() => (h, format!("/{}", ns.trim_matches('/'))),
            Some((h, _)) => (h, "/service".to_owned()),
            None => (rest, "/service".to_owned()),
        };
        let hosts: Vec<&str> = hosts.split(',').map(str::trim).filter(|h| !h.is_empty()).collect();
        if hosts.is_empty() {
            return Err(format!("--dcs-url {url:?}: no host"));
        }
        for h in &hosts {
            let ok = h.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return Err(format!("--dcs-url {url:?}: {h:?} is not host:port"));
            }
        }
        let dcs = match scheme {
            "etcd3" | "etcd" => DcsSettings::Etcd3 {
                endpoints: hosts.iter().map(|h| format!("http://{h}")).collect(),
                auth: None,
                tls: None,
            },
            "consul" => DcsSettings::Consul {
                url: format!("http://{}", hosts[0]),
                token: None,
                dc: String::new(),
                tls: None,
                consistency: "consistent".into(),
                checks: Vec::new(),
                service: None,
            },
            other => return Err(format!("--dcs-url {url:?}: unknown DCS {other:?}; use etcd3:// or consul://")),
        };
        Ok(CtlConfig {
            scope: None,
            namespace,
            dcs,
            auth: None,
            tls: None,
            insecure: false,
            command_params: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_full_node_config_and_prefers_ctl_credentials() {
        let text = "scope: batman\nname: n1\nrestapi:\n  listen: 0.0.0.0:8008\n  connect_address: 10.0.0.1:8008\n  authentication: {username: a, password: b}\nctl:\n  authentication: {username: c, password: d}\netcd3:\n  hosts: 10.0.0.1:2379,10.0.0.2:2379\npostgresql:\n  data_dir: /x\n";
        let c = CtlConfig::parse(Path::new("p.yml"), text).expect("parses");
        assert_eq!(c.scope.as_deref(), Some("batman"));
        assert_eq!(c.auth, Some(("c".into(), "d".into())));
        assert!(
            matches!(&c.dcs, DcsSettings::Etcd3 { endpoints, .. } if endpoints == &["http://10.0.0.1:2379", "http://10.0.0.2:2379"])
        );
    }

    #[test]
    fn a_config_without_a_dcs_is_an_error_that_says_so() {
        let e = CtlConfig::parse(Path::new("p.yml"), "scope: x\n").expect_err("no DCS");
        assert!(e.contains("no DCS configured"), "{e}");
        let e = CtlConfig::parse(Path::new("p.yml"), "scope: [").expect_err("bad YAML");
        assert!(e.starts_with("p.yml:"), "{e}");
    }

    #[test]
    fn dcs_urls() {
        let c = CtlConfig::from_url("etcd3://127.0.0.1:2379/custom").expect("url");
        assert_eq!(c.namespace, "/custom");
        let c = CtlConfig::from_url("consul://127.0.0.1:8500").expect("url");
        assert_eq!(c.namespace, "/service");
        assert!(CtlConfig::from_url("zk://h:1").is_err());
        assert!(CtlConfig::from_url("etcd3://nohost").is_err());
        assert!(CtlConfig::from_url("127.0.0.1:2379").is_err());
    }

    #[test]
    fn https_settings_for_rest_calls() {
        let base = "scope: x\netcd3:\n  host: 127.0.0.1:2379\n";
        let c = CtlConfig::parse(
            Path::new("p.yml"),
            &format!("{base}ctl:\n  cacert: /ca.pem\n  certfile: /c.pem\n  keyfile: /k.pem\n"),
        )
        .expect("valid");
        assert_eq!(c.tls, Some((PathBuf::from("/ca.pem"), Some((PathBuf::from("/c.pem"), PathBuf::from("/k.pem"))))));
        // restapi.cafile serves when ctl has none (a node's own config file).
        let c = CtlConfig::parse(Path::new("p.yml"), &format!("{base}restapi:\n  cafile: /ca.pem\n")).expect("valid");
        assert_eq!(c.tls, Some((PathBuf::from("/ca.pem"), None)));
        let c = CtlConfig::parse(Path::new("p.yml"), &format!("{base}ctl:\n  insecure: true\n")).expect("insecure");
        assert!(c.insecure);
        let e = CtlConfig::parse(Path::new("p.yml"), &format!("{base}ctl:\n  certfile: /c.pem\n")).expect_err("no CA");
        assert!(e.contains("needs `ctl.cacert`"), "{e}");
    }
}
