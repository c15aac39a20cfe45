//! Checking the `etcd3`/`etcd` and `consul` sections into [`DcsSettings`].

use super::raw::{RawConsul, RawEtcd};
use super::sections::hosts_list;
use super::{err, ConfigFileError};
use crate::backend::dcs::DcsSettings;
use shield_db_postgres::Credentials;
use std::path::{Path, PathBuf};

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
