//! Checking the smaller sections: callbacks, REST API security, VIP, watchdog, listen addresses.

use super::raw::{RawPostgresql, RawRestApi, RawVip, RawWatchdog};
use super::{err, ConfigFileError};
use crate::backend::watchdog::WatchdogSettings;
use crate::net::tls::ApiTls;
use serde_yaml_ng::Value;
use shield_core::WatchdogMode;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub(crate) fn scripts(file: &Path, raw: &RawPostgresql) -> Result<crate::backend::callbacks::Scripts, ConfigFileError> {
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

pub(crate) fn rest_security(
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

pub(crate) fn vip_settings(file: &Path, raw: &RawVip) -> Result<crate::backend::vip::VipSettings, ConfigFileError> {
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

pub(crate) fn watchdog_settings(
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

pub(crate) fn parse_listen(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    let s = s.trim();
    let with_port = if s.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        s.to_owned()
    } else {
        format!("{s}:{default_port}")
    };
    let with_host = if with_port.starts_with(':') { format!("0.0.0.0{with_port}") } else { with_port };
    with_host.parse().map_err(|_| format!("{s:?} is not host:port with a numeric IP address"))
}

pub(crate) fn initdb_arg(v: &Value) -> Option<String> {
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

pub(crate) fn hosts_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(s.split(',').map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect()),
        Value::Sequence(items) => items.iter().map(|i| i.as_str().map(str::to_owned)).collect(),
        _ => None,
    }
}
