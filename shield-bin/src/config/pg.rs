//! Checking the `postgresql` section into [`PgSettings`].

use super::raw::{RawPgAuth, RawPostgresql, RawUser};
use super::sections::initdb_arg;
use super::{err, ConfigFileError};
use serde_yaml_ng::Value;
use shield_db_postgres::{Credentials, PgSettings};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub(crate) fn user(
    file: &Path,
    which: &str,
    u: Option<RawUser>,
    default_name: &str,
) -> Result<Credentials, ConfigFileError> {
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

pub(crate) fn pg_settings(file: &Path, p: RawPostgresql) -> Result<PgSettings, ConfigFileError> {
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
