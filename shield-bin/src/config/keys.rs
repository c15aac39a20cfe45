//! Patroni's key list, and what Shield does with each key of a node's YAML file.
//!
//! [`sort`] walks the file before it is parsed: a key Shield acts on is left in place; a key
//! Patroni documents that Shield does not act on gets one warning naming it and is taken out; a key
//! whose being ignored would change safety is an error saying what to do; any other key is an
//! error naming it (with a "did you mean" when a known key is close). docs/compatibility.md lists
//! every key and why.

use serde_yaml_ng::{Mapping, Value};

/// What Shield does with a key.
pub(super) enum K {
    /// Shield reads it (the whole value, whatever is below).
    Acted,
    /// A section Shield reads: every key below is checked against this list.
    Section(&'static [(&'static str, K)]),
    /// A Patroni key Shield does not act on: accepted with a warning (the text says why), then
    /// removed before parsing.
    Ignored(&'static str),
}

use K::{Acted, Ignored, Section};

const SSL_IGNORED: &str = "Shield connects with the user name and password only";
const USER: &[(&str, K)] = &[
    ("username", Acted),
    ("password", Acted),
    ("sslmode", Ignored(SSL_IGNORED)),
    ("sslkey", Ignored(SSL_IGNORED)),
    ("sslpassword", Ignored(SSL_IGNORED)),
    ("sslcert", Ignored(SSL_IGNORED)),
    ("sslrootcert", Ignored(SSL_IGNORED)),
    ("sslcrl", Ignored(SSL_IGNORED)),
    ("sslcrldir", Ignored(SSL_IGNORED)),
    ("sslnegotiation", Ignored(SSL_IGNORED)),
    ("gssencmode", Ignored(SSL_IGNORED)),
    ("channel_binding", Ignored(SSL_IGNORED)),
];

const LOG: &str = "Shield logs to stderr (the journal under systemd); set the level with SHIELD_LOG";
const ETCD: &[(&str, K)] = &[
    ("host", Acted),
    ("hosts", Acted),
    ("url", Acted),
    ("proxy", Acted),
    // `srv` and `srv_suffix` are sorted out in `etcd_srv`.
    ("srv", Acted),
    ("srv_suffix", Acted),
    ("protocol", Acted),
    ("use_proxies", Ignored("Shield uses the listed endpoints as given and never discovers other etcd members")),
    ("username", Acted),
    ("password", Acted),
    ("cacert", Acted),
    ("cert", Acted),
    ("key", Acted),
    ("key_password", Ignored("encrypted client keys are not supported; an encrypted `key` fails to load")),
];

const ROLE_SPECIFIC: &str = "Shield applies the same settings to every role";

/// The top level of a node's file.
pub(super) const TOP: &[(&str, K)] = &[
    ("scope", Acted),
    ("namespace", Acted),
    ("name", Acted),
    ("thread_pool_size", Ignored("Shield has no thread pool to size")),
    ("thread_stack_size", Ignored("Shield has no thread pool to size")),
    (
        "log",
        Section(&[
            ("type", Ignored(LOG)),
            ("level", Ignored(LOG)),
            ("traceback_level", Ignored(LOG)),
            ("format", Ignored(LOG)),
            ("dateformat", Ignored(LOG)),
            ("static_fields", Ignored(LOG)),
            ("max_queue_size", Ignored(LOG)),
            ("dir", Ignored(LOG)),
            ("mode", Ignored(LOG)),
            ("file_num", Ignored(LOG)),
            ("file_size", Ignored(LOG)),
            ("loggers", Ignored(LOG)),
            ("deduplicate_heartbeat_logs", Ignored(LOG)),
        ]),
    ),
    // Read by shieldctl (docs/shieldctl.md), not by the daemon.
    (
        "ctl",
        Section(&[
            ("authentication", Acted),
            ("insecure", Acted),
            ("cacert", Acted),
            ("certfile", Acted),
            ("keyfile", Acted),
            ("keyfile_password", Ignored("shieldctl does not decrypt keys; give it an unencrypted `ctl.keyfile`")),
        ]),
    ),
    (
        "restapi",
        Section(&[
            ("listen", Acted),
            ("connect_address", Acted),
            ("authentication", Section(&[("username", Acted), ("password", Acted)])),
            ("certfile", Acted),
            ("keyfile", Acted),
            ("keyfile_password", Acted),
            ("cafile", Acted),
            ("ciphers", Ignored("Shield's TLS (rustls) offers only TLS 1.2 and 1.3 with AEAD cipher suites")),
            ("verify_client", Acted),
            ("allowlist", Acted),
            ("allowlist_include_members", Acted),
            ("http_extra_headers", Ignored("Shield's REST API sends no extra headers")),
            ("https_extra_headers", Ignored("Shield's REST API sends no extra headers")),
            ("request_queue_size", Ignored("the listen backlog is the operating system's default")),
            ("server_tokens", Ignored("Shield's REST API sends no `Server` header")),
            ("thread_pool_size", Ignored("Shield has no thread pool to size")),
        ]),
    ),
    ("etcd3", Section(ETCD)),
    ("etcd", Section(ETCD)),
    (
        "consul",
        Section(&[
            ("host", Acted),
            ("url", Acted),
            ("port", Acted),
            ("scheme", Acted),
            ("token", Acted),
            ("verify", Ignored("Shield always verifies the agent's certificate when it talks https")),
            ("cacert", Acted),
            ("cert", Acted),
            ("key", Acted),
            ("dc", Acted),
            ("consistency", Acted),
            ("checks", Acted),
            ("register_service", Acted),
            ("service_tags", Acted),
            ("service_check_interval", Acted),
            ("service_check_tls_server_name", Ignored("the service check uses the REST API's own address")),
        ]),
    ),
    // Other DCS kinds: sorted out in `other_dcs`.
    ("zookeeper", Acted),
    ("exhibitor", Acted),
    ("kubernetes", Acted),
    ("raft", Acted),
    // Refused in `sort` (a different DCS layout).
    ("citus", Acted),
    (
        "bootstrap",
        Section(&[
            // Checked key by key in `bootstrap_dcs`.
            ("dcs", Acted),
            // `method` and the method sections: `bootstrap_method`.
            ("method", Acted),
            ("initdb", Acted),
            ("pg_hba", Acted),
            (
                "users",
                Ignored("Patroni 3's user list (gone in Patroni 4): create the users yourself once the cluster runs"),
            ),
            ("post_bootstrap", Ignored("Shield runs no script after initdb; run it yourself once")),
            ("post_init", Ignored("Shield runs no script after initdb; run it yourself once")),
        ]),
    ),
    (
        "postgresql",
        Section(&[
            ("listen", Acted),
            ("connect_address", Acted),
            ("proxy_address", Ignored("Shield does not publish a `proxy_url` in the member key")),
            ("data_dir", Acted),
            // Warned about in `sort` only when it differs from data_dir.
            ("config_dir", Acted),
            ("bin_dir", Acted),
            // Checked in `bin_name`.
            ("bin_name", Acted),
            ("pgpass", Acted),
            (
                "authentication",
                Section(&[("superuser", Section(USER)), ("replication", Section(USER)), ("rewind", Section(USER))]),
            ),
            ("parameters", Acted),
            ("parameters_primary", Ignored(ROLE_SPECIFIC)),
            ("parameters_replica", Ignored(ROLE_SPECIFIC)),
            ("parameters_standby_leader", Ignored(ROLE_SPECIFIC)),
            ("pg_hba", Acted),
            ("pg_hba_primary", Ignored(ROLE_SPECIFIC)),
            ("pg_hba_replica", Ignored(ROLE_SPECIFIC)),
            ("pg_hba_standby_leader", Ignored(ROLE_SPECIFIC)),
            ("pg_ident", Ignored("Shield does not write pg_ident.conf; the server's own file is used")),
            ("pg_ident_primary", Ignored(ROLE_SPECIFIC)),
            ("pg_ident_replica", Ignored(ROLE_SPECIFIC)),
            ("pg_ident_standby_leader", Ignored(ROLE_SPECIFIC)),
            (
                "callbacks",
                Section(&[
                    ("on_start", Acted),
                    ("on_stop", Acted),
                    ("on_restart", Acted),
                    ("on_reload", Acted),
                    ("on_role_change", Acted),
                ]),
            ),
            // Checked with the method sections in `replica_methods`.
            ("create_replica_methods", Acted),
            ("basebackup", Acted),
            ("rewind", Ignored("Shield runs pg_rewind with its own options")),
            ("use_pg_rewind", Acted),
            // Each wins over the cluster config's when set, as in Patroni (shield_core::config::LocalPg).
            ("remove_data_directory_on_rewind_failure", Acted),
            ("remove_data_directory_on_diverged_timelines", Acted),
            ("use_slots", Ignored("only the cluster config's `postgresql.use_slots` counts, in Patroni too")),
            (
                "recovery_conf",
                Ignored("Shield writes primary_conninfo itself; put restore_command and the like in `parameters`"),
            ),
            ("custom_conf", Ignored("Shield writes postgresql.conf itself; move the file's settings to `parameters`")),
            ("pg_ctl_timeout", Acted),
            ("use_unix_socket", Ignored("Shield connects over TCP to `listen`")),
            ("use_unix_socket_repl", Ignored("Shield connects over TCP to `listen`")),
            ("pre_promote", Acted),
            ("before_stop", Acted),
            // Shield's own keys.
            ("callback_timeout", Acted),
            ("callback_primary_role", Acted),
            ("allow_command_parameters", Acted),
        ]),
    ),
    ("watchdog", Section(&[("mode", Acted), ("device", Acted), ("safety_margin", Acted), ("driver", Acted)])),
    // Free-form (custom tags are published as they are); the Patroni ones are checked in `tags`.
    ("tags", Acted),
    // Shield's own.
    ("vip", Acted),
];

/// `bootstrap.dcs` keys: what Shield does with each. Checked on the JSON form.
const DCS_ACTED: &[&str] = &[
    "ttl",
    "loop_wait",
    "retry_timeout",
    "fence_margin",
    "maximum_lag_on_failover",
    "primary_start_timeout",
    "master_start_timeout",
    "pause",
    "check_timeline",
    "postgresql",
    "synchronous_mode",
    "member_slots_ttl",
];
const DCS_IGNORED: &[(&str, &str)] = &[
    ("synchronous_mode_strict", "Shield does not manage synchronous_standby_names, so nothing blocks writes"),
    ("synchronous_node_count", "Shield does not manage synchronous_standby_names"),
    ("maximum_lag_on_syncnode", "Shield does not manage synchronous_standby_names"),
    ("primary_stop_timeout", "Shield stops PostgreSQL with pg_ctl's fast mode and `pg_ctl_timeout`"),
    ("master_stop_timeout", "Shield stops PostgreSQL with pg_ctl's fast mode and `pg_ctl_timeout`"),
    ("failsafe_mode", "a primary that loses the DCS always fences itself by its deadline"),
    ("max_timelines_history", "Shield keeps the whole `history`"),
    ("slots", "Shield creates no permanent slots; logical slots are not kept across a failover"),
    ("ignore_slots", "Shield drops no slots other than its members' own"),
    ("primary_race_backoff", "replicas race as soon as the leader key is gone"),
];
const DCS_PG_ACTED: &[&str] = &[
    "use_pg_rewind",
    "use_slots",
    "remove_data_directory_on_rewind_failure",
    "remove_data_directory_on_diverged_timelines",
    "parameters",
    "pg_hba",
];
const DCS_PG_IGNORED: &[(&str, &str)] = &[
    ("recovery_conf", "Shield writes primary_conninfo itself; put restore_command and the like in `parameters`"),
    ("parameters_primary", ROLE_SPECIFIC),
    ("parameters_replica", ROLE_SPECIFIC),
    ("parameters_standby_leader", ROLE_SPECIFIC),
    ("pg_hba_primary", ROLE_SPECIFIC),
    ("pg_hba_replica", ROLE_SPECIFIC),
    ("pg_hba_standby_leader", ROLE_SPECIFIC),
    ("pg_ident", "Shield does not write pg_ident.conf; the server's own file is used"),
    ("pg_ident_primary", ROLE_SPECIFIC),
    ("pg_ident_replica", ROLE_SPECIFIC),
    ("pg_ident_standby_leader", ROLE_SPECIFIC),
    ("rewind", "Shield runs pg_rewind with its own options"),
    ("basebackup", "Shield reads `basebackup` from the node's `postgresql` section"),
    ("pg_ctl_timeout", "Shield reads `pg_ctl_timeout` from the node's `postgresql` section"),
    ("use_unix_socket", "Shield connects over TCP to `listen`"),
];

/// The binaries `postgresql.bin_name` may name.
const BINARIES: &[&str] =
    &["pg_ctl", "initdb", "pg_controldata", "pg_basebackup", "postgres", "pg_isready", "pg_rewind"];

/// The message for a key Shield accepts and does not act on.
pub(super) fn ignored(path: &str, why: &str) -> String {
    format!("`{path}` is a Patroni key Shield does not act on; ignored ({why})")
}

/// What [`sort`] found: the warnings, and the custom bootstrap method if one is configured.
#[derive(Debug, Default)]
pub(super) struct Sorted {
    /// One per key accepted and not acted on (or adjusted), in file order.
    pub warnings: Vec<String>,
    /// `bootstrap.method` when it is not `initdb`: this node must not bootstrap a new cluster.
    pub custom_bootstrap: Option<String>,
}

/// Checks every key of the file (`root`, after environment overrides), removes the ones Shield
/// does not act on, and returns the warnings; `Err` names the key that cannot be accepted.
pub(super) fn sort(root: &mut Value) -> Result<Sorted, String> {
    let mut out = Sorted::default();
    let what = kind(root);
    let Some(top) = root.as_mapping_mut() else {
        return Err(format!("expected a mapping of Patroni's keys at the top, found {what}"));
    };
    if top.contains_key("citus") {
        return Err("`citus`: Citus clusters keep their keys per group (`<scope>/<group>/`), which Shield does \
                    not do: its nodes would form a different cluster from Patroni's. Shield does not manage \
                    Citus clusters"
            .into());
    }
    other_dcs(top, &mut out.warnings)?;
    if let Some(Value::Mapping(b)) = top.get_mut("bootstrap") {
        out.custom_bootstrap = bootstrap_method(b, &mut out.warnings)?;
        if let Some(dcs) = b.get_mut("dcs") {
            bootstrap_dcs(dcs, &mut out.warnings)?;
        }
    }
    if let Some(Value::Mapping(p)) = top.get_mut("postgresql") {
        replica_methods(p, &mut out.warnings)?;
        bin_name(p)?;
        let data_dir = p.get("data_dir").and_then(Value::as_str).map(|d| d.trim_end_matches('/').to_owned());
        if let Some(c) = p.get("config_dir").and_then(Value::as_str) {
            if Some(c.trim_end_matches('/')) != data_dir.as_deref() {
                out.warnings.push(ignored(
                    "postgresql.config_dir",
                    "Shield keeps postgresql.conf and pg_hba.conf in `data_dir`",
                ));
            }
        }
        p.remove("config_dir");
    }
    for section in ["etcd3", "etcd"] {
        if let Some(Value::Mapping(e)) = top.get_mut(section) {
            etcd_srv(section, e, &mut out.warnings)?;
        }
    }
    if top.contains_key("etcd") {
        if top.contains_key("etcd3") {
            return Err("both `etcd` and `etcd3` are set: Patroni would use `etcd` (the v2 API) and Shield uses \
                        `etcd3`, so mixed nodes would not see each other; keep one"
                .into());
        }
        out.warnings.push(
            "`etcd`: Shield speaks etcd's v3 API; keys Patroni wrote through the v2 API (`etcd`) are not visible \
             to it, so do not run Patroni nodes with `etcd` and Shield nodes in one cluster (rename the section \
             `etcd3` to say so)"
                .into(),
        );
    }
    if let Some(Value::Mapping(t)) = top.get("tags") {
        tags(t, &mut out.warnings);
    }
    walk("", top, TOP, &mut out.warnings)?;
    Ok(out)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks `map` against `schema`: ignored keys are warned about and removed, unknown ones refused.
fn walk(prefix: &str, map: &mut Mapping, schema: &[(&str, K)], warnings: &mut Vec<String>) -> Result<(), String> {
    let mut remove = Vec::new();
    for (k, v) in map.iter_mut() {
        let Some(name) = k.as_str() else {
            let shown = serde_yaml_ng::to_string(k).unwrap_or_default();
            return Err(format!(
                "`{}`: the key {} is not a name",
                if prefix.is_empty() { "(top level)" } else { prefix },
                shown.trim()
            ));
        };
        let path = join(prefix, name);
        match schema.iter().find(|(n, _)| *n == name) {
            Some((_, Acted)) => {}
            Some((_, Section(children))) => match v {
                Value::Mapping(m) => walk(&path, m, children, warnings)?,
                Value::Null => {}
                other => return Err(format!("`{path}`: expected a mapping, found {}", kind(other))),
            },
            Some((_, Ignored(why))) => {
                warnings.push(ignored(&path, why));
                remove.push(k.clone());
            }
            None => {
                let names: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
                return Err(unknown(&path, name, &names));
            }
        }
    }
    for k in remove {
        map.remove(&k);
    }
    Ok(())
}

/// "unknown key", with the closest known name when one is close.
pub(super) fn unknown(path: &str, name: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (distance(&name.to_ascii_lowercase(), k), *k))
        .filter(|(d, k)| *d <= 2usize.max(k.len() / 4))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((_, k)) => format!("`{path}`: unknown key; did you mean `{k}`?"),
        None => format!("`{path}`: unknown key (not one of Patroni's or Shield's keys)"),
    }
}

/// Levenshtein distance (with transpositions counted as one edit).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// ZooKeeper, Exhibitor, Kubernetes, Raft: refused as the only DCS; unused (as in Patroni, which
/// picks Consul or etcd first) next to an etcd or Consul section.
fn other_dcs(top: &mut Mapping, warnings: &mut Vec<String>) -> Result<(), String> {
    let has_supported = ["etcd3", "etcd", "consul"].iter().any(|k| top.contains_key(*k));
    for name in ["zookeeper", "exhibitor", "kubernetes", "raft"] {
        if top.contains_key(name) {
            if !has_supported {
                return Err(format!(
                    "`{name}`: this DCS is not supported by Shield; use etcd3 or consul (docs/compatibility.md)"
                ));
            }
            warnings.push(format!(
                "`{name}` is not used: the file also configures etcd or Consul, which Patroni picks first too; ignored"
            ));
            top.remove(name);
        }
    }
    Ok(())
}

/// `bootstrap.method` and the method sections next to it.
fn bootstrap_method(b: &mut Mapping, warnings: &mut Vec<String>) -> Result<Option<String>, String> {
    let method = match b.get("method") {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if m.trim().is_empty() || m == "initdb" => None,
        Some(Value::String(m)) => Some(m.clone()),
        Some(other) => return Err(format!("`bootstrap.method`: expected a method name, found {}", kind(other))),
    };
    let known: Vec<&str> = match TOP.iter().find(|(n, _)| *n == "bootstrap") {
        Some((_, Section(c))) => c.iter().map(|(n, _)| *n).collect(),
        _ => Vec::new(),
    };
    let mut sections = Vec::new();
    for (k, v) in b.iter() {
        let Some(name) = k.as_str() else { continue };
        if known.contains(&name) {
            continue;
        }
        let is_method = Some(name) == method.as_deref() || matches!(v, Value::Mapping(m) if m.contains_key("command"));
        if is_method {
            sections.push(name.to_owned());
        }
    }
    if let Some(m) = &method {
        warnings.push(format!(
            "`bootstrap.method: {m}` is a Patroni key Shield does not act on: Shield bootstraps a new cluster \
             only with initdb, so this node will not bootstrap one (it joins an existing cluster, or adopts a \
             data directory that `{m}` already restored); ignored"
        ));
        b.remove("method");
    }
    for s in sections {
        if Some(s.as_str()) != method.as_deref() {
            warnings.push(ignored(
                &format!("bootstrap.{s}"),
                "a bootstrap method section `bootstrap.method` does not name",
            ));
        }
        b.remove(s.as_str());
    }
    Ok(method)
}

/// `bootstrap.dcs`, key by key (the JSON parse in `DynamicConfig` checks the values). Keys Shield
/// does not act on are warned about and kept: they are written to the DCS with the rest, for
/// Patroni's tools.
fn bootstrap_dcs(dcs: &Value, warnings: &mut Vec<String>) -> Result<(), String> {
    let Value::Mapping(m) = dcs else { return Ok(()) };
    let known: Vec<&str> =
        DCS_ACTED.iter().copied().chain(DCS_IGNORED.iter().map(|(k, _)| *k)).chain(["standby_cluster"]).collect();
    for (k, v) in m {
        let Some(name) = k.as_str() else { return Err("`bootstrap.dcs`: a key is not a name".into()) };
        let path = format!("bootstrap.dcs.{name}");
        if name == "standby_cluster" {
            return Err("`bootstrap.dcs.standby_cluster`: Shield cannot run a standby cluster; ignoring the key \
                        would bootstrap a new, writable primary instead of a copy of the remote one. Remove it \
                        only if this cluster is meant to accept writes"
                .into());
        }
        if name == "synchronous_mode" {
            let on = match v {
                Value::Bool(b) => *b,
                Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
                _ => false,
            };
            if on {
                warnings.push(format!(
                    "`{path}`: Shield does not manage synchronous_standby_names yet: commits stay asynchronous \
                     and a failover may lose what was committed within `maximum_lag_on_failover`; Shield only \
                     keeps a non-synchronous standby out of the leader race while the `sync` key names others"
                ));
            }
            continue;
        }
        if let Some((_, why)) = DCS_IGNORED.iter().find(|(n, _)| *n == name) {
            // Off or zero is Patroni's default for each of these: ignoring it changes nothing.
            if !is_off(v) {
                warnings.push(ignored(&path, why));
            }
            continue;
        }
        if !known.contains(&name) {
            return Err(unknown(&path, name, &known));
        }
    }
    if let Some(Value::Mapping(pg)) = m.get("postgresql") {
        let known: Vec<&str> = DCS_PG_ACTED.iter().copied().chain(DCS_PG_IGNORED.iter().map(|(k, _)| *k)).collect();
        for k in pg.keys() {
            let Some(name) = k.as_str() else { return Err("`bootstrap.dcs.postgresql`: a key is not a name".into()) };
            let path = format!("bootstrap.dcs.postgresql.{name}");
            if let Some((_, why)) = DCS_PG_IGNORED.iter().find(|(n, _)| *n == name) {
                warnings.push(ignored(&path, why));
            } else if !known.contains(&name) {
                return Err(unknown(&path, name, &known));
            }
        }
    }
    Ok(())
}

/// false, 0, nothing, or an empty list or mapping.
fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0"),
        Value::Sequence(s) => s.is_empty(),
        Value::Mapping(m) => m.is_empty(),
        Value::Tagged(_) => false,
    }
}

/// `postgresql.create_replica_methods` and the method sections it names.
fn replica_methods(p: &mut Mapping, warnings: &mut Vec<String>) -> Result<(), String> {
    let methods: Vec<String> = match p.get("create_replica_methods") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    format!("`postgresql.create_replica_methods`: expected method names, found {}", kind(i))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(format!(
                "`postgresql.create_replica_methods`: expected a list of methods, found {}",
                kind(other)
            ))
        }
    };
    let others: Vec<&String> = methods.iter().filter(|m| *m != "basebackup").collect();
    if !methods.is_empty() && others.len() == methods.len() {
        let names = others.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ");
        return Err(format!(
            "`postgresql.create_replica_methods`: Shield can only clone with basebackup (pg_basebackup from the \
             leader or a `clonefrom` member), and this list leaves it out ({names}), so cloning a replica would \
             not do what it asks. Add `basebackup` to the list to let Shield clone with pg_basebackup, or \
             remove the key"
        ));
    }
    for m in &others {
        warnings.push(format!(
            "`postgresql.create_replica_methods`: `{m}` is not run (and `postgresql.{m}` is ignored): Shield \
             clones only with basebackup, which the list also names"
        ));
    }
    let known: Vec<&str> = match TOP.iter().find(|(n, _)| *n == "postgresql") {
        Some((_, Section(c))) => c.iter().map(|(n, _)| *n).collect(),
        _ => Vec::new(),
    };
    let mut remove = Vec::new();
    for (k, v) in p.iter() {
        let Some(name) = k.as_str() else { continue };
        if known.contains(&name) {
            continue;
        }
        if others.iter().any(|m| m.as_str() == name) {
            remove.push(name.to_owned());
        } else if matches!(v, Value::Mapping(m) if m.contains_key("command")) {
            // A method section the list does not name: Patroni never runs it either.
            warnings.push(ignored(
                &format!("postgresql.{name}"),
                "a replica method section `create_replica_methods` does not name",
            ));
            remove.push(name.to_owned());
        }
    }
    for r in remove {
        p.remove(r.as_str());
    }
    Ok(())
}

/// `postgresql.bin_name`: only the standard names (Shield runs them from `bin_dir`).
fn bin_name(p: &mut Mapping) -> Result<(), String> {
    let Some(v) = p.get("bin_name") else { return Ok(()) };
    let Value::Mapping(m) = v else {
        return Err(format!("`postgresql.bin_name`: expected a mapping, found {}", kind(v)));
    };
    for (k, v) in m {
        let name = k.as_str().unwrap_or_default();
        if !BINARIES.contains(&name) {
            return Err(unknown(&format!("postgresql.bin_name.{name}"), name, BINARIES));
        }
        let given = v.as_str().unwrap_or_default();
        if given != name {
            return Err(format!(
                "`postgresql.bin_name.{name}`: Shield runs `{name}` from `bin_dir` and would not run {given:?}; \
                 point `bin_dir` at a directory holding the standard names (links are fine)"
            ));
        }
    }
    p.remove("bin_name");
    Ok(())
}

/// `srv` (and `srv_suffix`): Patroni falls back to the listed hosts when the SRV lookup finds
/// nothing; Shield uses the listed hosts and needs them.
fn etcd_srv(section: &str, e: &mut Mapping, warnings: &mut Vec<String>) -> Result<(), String> {
    let listed = ["host", "hosts", "url", "proxy"].iter().any(|k| e.contains_key(*k));
    for key in ["srv", "srv_suffix"] {
        if e.contains_key(key) {
            if !listed {
                return Err(format!(
                    "`{section}.{key}`: Shield does not look up SRV records; list the etcd members in \
                     `{section}.hosts`"
                ));
            }
            warnings.push(ignored(
                &format!("{section}.{key}"),
                "Shield does not look up SRV records; it uses the listed hosts, as Patroni does when the lookup finds none",
            ));
            e.remove(key);
        }
    }
    Ok(())
}

/// Patroni's tags Shield does not act on (custom tags are published as they are).
fn tags(t: &Mapping, warnings: &mut Vec<String>) {
    let truthy = |v: &Value| match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    };
    for (k, v) in t {
        match k.as_str() {
            Some("nosync") if truthy(v) => warnings
                .push(ignored("tags.nosync", "published in the member key; Shield chooses no synchronous standbys")),
            Some("sync_priority") => warnings.push(ignored(
                "tags.sync_priority",
                "published in the member key; Shield chooses no synchronous standbys",
            )),
            Some("nostream") if truthy(v) => warnings.push(ignored(
                "tags.nostream",
                "published in the member key; this node still streams from its upstream",
            )),
            _ => {}
        }
    }
}
