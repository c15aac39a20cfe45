//! Patroni files in the shapes operators run (tests/fixtures/patroni-corpus/ and the seed's Halo
//! file) load unchanged, and every key does what docs/compatibility.md says: acted on, accepted
//! and ignored with exactly one warning naming it, adjusted with a warning, or refused with an
//! error naming it. Needs no server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use shield_bin::backend::dcs::DcsSettings;
use shield_bin::config::NodeConfig;
use shield_core::WatchdogMode;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/patroni-corpus")
}

fn path(name: &str) -> PathBuf {
    if name == "patroni_halo.yml" {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/patroni_halo.yml")
    } else {
        corpus_dir().join(name)
    }
}

fn text(name: &str) -> String {
    std::fs::read_to_string(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// Spilo renders these into its environment; Patroni (and Shield) read them over the file.
const SPILO_ENV: &[(&str, &str)] = &[
    ("PATRONI_NAME", "acid-orders-0"),
    ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "10.2.0.14:5432"),
    ("PATRONI_SUPERUSER_PASSWORD", "su-from-secret"),
    ("PATRONI_REPLICATION_PASSWORD", "repl-from-secret"),
    ("PATRONI_ETCD3_HOSTS", "etcd-0.etcd:2379,etcd-1.etcd:2379,etcd-2.etcd:2379"),
];

fn env_for(name: &str) -> BTreeMap<String, String> {
    if name == "spilo-template.yml" {
        env_of(SPILO_ENV)
    } else {
        BTreeMap::new()
    }
}

fn load(name: &str) -> NodeConfig {
    NodeConfig::parse(&path(name), &text(name), &env_for(name)).unwrap_or_else(|e| panic!("{name} must load: {e}"))
}

/// The key a warning names first (between the first two backquotes).
fn named(w: &str) -> &str {
    w.split('`').nth(1).unwrap_or_default()
}

/// Each warning matches exactly one `(key, words)` (it names `key` first and contains `words`) and
/// each expectation exactly one warning: one warning per key, and nothing unexpected.
fn assert_warnings(file: &str, c: &NodeConfig, expected: &[(&str, &str)]) {
    let mut used = vec![0usize; expected.len()];
    for w in &c.warnings {
        let hits: Vec<usize> = expected
            .iter()
            .enumerate()
            .filter(|(_, (key, words))| named(w) == *key && w.contains(words))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits.len(), 1, "{file}: warning {w:?} matches {} expectations", hits.len());
        used[hits[0]] += 1;
    }
    for (i, n) in used.iter().enumerate() {
        assert_eq!(*n, 1, "{file}: {:?} expected once, warned {n} times; warnings: {:#?}", expected[i], c.warnings);
    }
}

/// The file with `from` replaced by `to` is refused, and the error names the file and `needle`.
fn assert_refused(file: &str, from: &str, to: &str, needle: &str) {
    let original = text(file);
    assert!(original.contains(from), "{file}: {from:?} not in the file");
    let changed = original.replacen(from, to, 1);
    let e = NodeConfig::parse(&path(file), &changed, &env_for(file))
        .map(|_| ())
        .expect_err(&format!("{file} with {to:?} must be refused"));
    let e = e.to_string();
    assert!(e.starts_with(&format!("{}: ", path(file).display())), "{e}");
    assert!(e.contains(needle), "{file} with {to:?}: {e}");
}

fn endpoints(c: &NodeConfig) -> Vec<String> {
    match &c.dcs {
        DcsSettings::Etcd3 { endpoints, .. } => endpoints.clone(),
        other => panic!("etcd3 expected, found {other:?}"),
    }
}

const LOG: &str = "SHIELD_LOG";
const SYNC: &str = "synchronous_standby_names";

#[test]
fn patroni_sample_on_etcd_v2_section() {
    let f = "patroni-sample-etcd.yml";
    let c = load(f);
    // Acted on.
    assert_eq!((c.scope.as_str(), c.name.as_str(), c.namespace.as_str()), ("batman", "postgresql0", "/service"));
    assert_eq!(c.api_listen.to_string(), "127.0.0.1:8008");
    assert_eq!(endpoints(&c), ["http://127.0.0.1:2379"]);
    let t = c.bootstrap_dcs.timing;
    assert_eq!((t.ttl_ms, t.loop_wait_ms, t.retry_timeout_ms), (30_000, 10_000, 10_000));
    assert!(c.bootstrap_dcs.postgresql.use_pg_rewind);
    assert_eq!(c.bootstrap_dcs.postgresql.pg_hba.as_ref().map(Vec::len), Some(2));
    assert!(c.bootstrap_dcs.postgresql.parameters.is_empty(), "`parameters:` with nothing under it");
    assert_eq!(c.initdb_args, ["--encoding=UTF8", "--data-checksums"]);
    assert_eq!((c.pg.port, c.pg.rewind.username.as_str()), (5432, "rewind_user"));
    assert_eq!(c.pg.parameters["unix_socket_directories"], "..");
    assert!(!c.tags.nostream && !c.tags.clonefrom);
    // Accepted, with a warning: the v2 section name (Shield speaks v3).
    assert_warnings(f, &c, &[("etcd", "v3 API")]);
    // Refused.
    assert_refused(f, "etcd:\n", "etcd3:\n  host: 127.0.0.1:2379\netcd:\n", "both `etcd` and `etcd3`");
    assert_refused(f, "  host: 127.0.0.1:2379\n", "  srv: etcd.example.com\n", "does not look up SRV records");
    assert_refused(f, "scope: batman", "scope: batman\nscoop: robin", "`scoop`: unknown key; did you mean `scope`?");
}

#[test]
fn patroni_sample_on_etcd3_with_tls_and_patroni_adjusted_timings() {
    let f = "patroni-sample-etcd3.yml";
    let c = load(f);
    // Acted on.
    assert_eq!(
        endpoints(&c),
        ["https://127.0.0.1:2379", "https://127.0.0.1:22379", "https://127.0.0.1:32379"],
        "the listed hosts, not the SRV lookup"
    );
    let DcsSettings::Etcd3 { tls, .. } = &c.dcs else { panic!("etcd3") };
    assert!(tls.as_ref().is_some_and(|(ca, cert, key)| ca.is_some() && cert.is_some() && key.is_some()));
    let api = c.api_tls.as_ref().expect("REST TLS");
    assert_eq!(api.verify, shield_bin::net::tls::VerifyClient::Optional);
    assert_eq!((c.api_access.allowlist.len(), c.api_access.include_members), (2, true));
    assert_eq!(c.api_auth.as_ref().map(|a| a.username.as_str()), Some("admin"));
    assert_eq!(c.initdb_args, ["--encoding=UTF8", "--locale=en_US.UTF-8", "--data-checksums"]);
    assert_eq!(c.pg_hba.len(), 2, "bootstrap.pg_hba");
    assert_eq!(c.pg.bin_dir, Path::new("/usr/lib/postgresql/16/bin"));
    assert_eq!(c.pg.basebackup_args, ["--max-rate=100M", "--checkpoint=fast"], "the mapping form");
    assert_eq!(c.pg.replication.username, "replicator");
    assert_eq!((c.watchdog.mode, c.watchdog.safety_margin_ms), (WatchdogMode::Automatic, Some(5_000)));
    // Adjusted as Patroni does: 1 + 2*10 > 20, so loop_wait 1 and retry_timeout (20 - 1) / 2.
    let t = c.bootstrap_dcs.timing;
    assert_eq!((t.ttl_ms, t.loop_wait_ms, t.retry_timeout_ms), (20_000, 1_000, 9_000));
    assert_warnings(
        f,
        &c,
        &[
            ("bootstrap.dcs", "loop_wait adjusted from 10 s to 1 s and retry_timeout from 10 s to 9 s"),
            ("thread_pool_size", "no thread pool"),
            ("log.level", LOG),
            ("log.dir", LOG),
            ("log.file_num", LOG),
            ("log.file_size", LOG),
            ("restapi.http_extra_headers", "ignored"),
            ("restapi.https_extra_headers", "ignored"),
            ("restapi.request_queue_size", "ignored"),
            ("restapi.server_tokens", "is a Patroni key Shield does not act on; ignored"),
            ("etcd3.srv", "SRV"),
            ("etcd3.srv_suffix", "SRV"),
            ("postgresql.authentication.replication.sslmode", "user name and password only"),
        ],
    );
    // Refused.
    assert_refused(
        f,
        "  hosts: 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379\n",
        "",
        "`etcd3.srv`: Shield does not look up SRV records",
    );
    assert_refused(f, "  server_tokens: ProductOnly", "  server_token: ProductOnly", "did you mean `server_tokens`?");
    assert_refused(f, "  request_queue_size: 20", "  keyfile_password: s3cret", "encrypted keys are not supported");
}

#[test]
fn consul_with_scripts_slots_and_synchronous_mode() {
    let f = "patroni-consul.yml";
    let c = load(f);
    // Acted on.
    let DcsSettings::Consul { url, token, dc, consistency, service, .. } = &c.dcs else { panic!("consul") };
    assert_eq!((url.as_str(), dc.as_str(), consistency.as_str()), ("http://127.0.0.1:8500", "dc1", "consistent"));
    assert!(token.is_some());
    assert_eq!(service, &Some((vec!["batman".to_owned(), "pg16".to_owned()], 10)));
    let d = &c.bootstrap_dcs;
    assert!(d.synchronous_mode && d.check_timeline && d.postgresql.use_pg_rewind);
    assert_eq!(d.primary_start_timeout_ms, 300_000);
    assert!(d.other.contains_key("slots"), "kept for the DCS, for Patroni's tools");
    assert_eq!(c.pg.pg_ctl_timeout_s, 90);
    assert_eq!(c.scripts.callbacks.len(), 5, "on_reload included");
    assert!(c.scripts.pre_promote.is_some() && c.scripts.before_stop.is_some());
    assert_eq!(c.watchdog.mode, WatchdogMode::Off);
    assert_eq!((c.tags.failover_priority, c.tags.noloadbalance), (Some(2), true));
    assert!(c.tags.other.contains_key("datacenter"), "custom tags are published");
    // Accepted, with a warning each.
    assert_warnings(
        f,
        &c,
        &[
            ("consul.verify", "always verifies"),
            ("consul.service_check_tls_server_name", "ignored"),
            ("bootstrap.dcs.synchronous_mode", SYNC),
            ("bootstrap.dcs.synchronous_node_count", SYNC),
            ("bootstrap.dcs.failsafe_mode", "fences itself"),
            ("bootstrap.dcs.slots", "permanent slots"),
            ("bootstrap.dcs.ignore_slots", "ignored"),
            ("bootstrap.post_bootstrap", "run it yourself"),
            ("postgresql.use_unix_socket", "TCP"),
            ("postgresql.use_unix_socket_repl", "TCP"),
        ],
    );
    // Refused: quorum commit, another DCS, Citus, an unknown callback.
    assert_refused(f, "synchronous_mode: true", "synchronous_mode: quorum", "`synchronous_mode`: `quorum`");
    let zk_only = "zookeeper:\n  hosts: [127.0.0.1:2181]\nwatchdog:";
    let text = text(f);
    let start = text.find("consul:\n").expect("consul");
    let end = text.find("bootstrap:\n").expect("bootstrap");
    let without_consul = format!("{}{}", &text[..start], &text[end..]).replacen("watchdog:", zk_only, 1);
    let e = NodeConfig::parse(&path(f), &without_consul, &BTreeMap::new()).map(|_| ()).expect_err("zookeeper only");
    assert!(e.to_string().contains("`zookeeper`: this DCS is not supported by Shield"), "{e}");
    assert_refused(f, "watchdog:\n", "citus:\n  group: 0\n  database: citus\nwatchdog:\n", "`citus`");
    assert_refused(f, "    on_reload:", "    on_promote:", "`postgresql.callbacks.on_promote`: unknown key");
}

#[test]
fn zookeeper_next_to_consul_is_unused_as_in_patroni() {
    let f = "patroni-consul.yml";
    let t = text(f).replacen("consul:\n", "zookeeper:\n  hosts: [127.0.0.1:2181]\nconsul:\n", 1);
    let c = NodeConfig::parse(&path(f), &t, &BTreeMap::new()).expect("loads");
    assert!(c.warnings.iter().any(|w| named(w) == "zookeeper" && w.contains("not used")), "{:#?}", c.warnings);
    assert!(matches!(c.dcs, DcsSettings::Consul { .. }));
}

#[test]
fn spilo_template_with_environment_values_and_wal_e() {
    let f = "spilo-template.yml";
    let c = load(f);
    // Acted on, partly from the environment.
    assert_eq!(c.name.as_str(), "acid-orders-0");
    assert_eq!(c.pg.connect_address, "10.2.0.14:5432");
    assert_eq!(
        (c.pg.superuser.password.as_str(), c.pg.replication.password.as_str()),
        ("su-from-secret", "repl-from-secret")
    );
    assert_eq!(c.pg.replication.username, "standby");
    assert_eq!(endpoints(&c), ["http://etcd-0.etcd:2379", "http://etcd-1.etcd:2379", "http://etcd-2.etcd:2379"]);
    assert_eq!(c.api_listen.to_string(), "0.0.0.0:8008", "`:8008` listens on every address");
    assert_eq!((c.pg.listen_host.as_str(), c.pg.port), ("*", 5432));
    assert_eq!(c.bootstrap_dcs.maximum_lag_on_failover_bytes, 33_554_432);
    assert!(c.bootstrap_dcs.postgresql.parameters.contains_key("archive_command"));
    assert!(
        c.initdb_args.contains(&"--auth-host=md5".to_owned()) && c.initdb_args.contains(&"--data-checksums".to_owned())
    );
    assert_eq!(c.pg_hba.len(), 10);
    assert_eq!(c.pg.parameters["bg_mon.history_buckets"], "120");
    assert_eq!(c.scripts.callbacks.len(), 1);
    assert_eq!(c.custom_bootstrap, None, "the clone sections are there, no method names them");
    assert_warnings(
        f,
        &c,
        &[
            ("bootstrap.dcs.postgresql.recovery_conf", "primary_conninfo"),
            ("bootstrap.users", "Patroni 3"),
            ("bootstrap.post_init", "run it yourself"),
            ("bootstrap.clone_with_wale", "does not name"),
            ("bootstrap.clone_with_basebackup", "does not name"),
            ("postgresql.use_unix_socket", "TCP"),
            ("postgresql.use_unix_socket_repl", "TCP"),
            ("postgresql.recovery_conf", "primary_conninfo"),
            ("postgresql.create_replica_methods", "`wal_e` is not run"),
            ("postgresql.create_replica_methods", "`basebackup_fast_xlog` is not run"),
        ],
    );
    // Refused: a list without basebackup; the file without its environment.
    assert_refused(f, "  - basebackup\n", "", "Shield can only clone with basebackup");
    assert_refused(f, "  - basebackup\n", "", "(`wal_e`, `basebackup_fast_xlog`)");
    let mut env = env_of(SPILO_ENV);
    env.remove("PATRONI_NAME");
    let e = NodeConfig::parse(&path(f), &text(f), &env).map(|_| ()).expect_err("no PATRONI_NAME");
    assert!(e.to_string().contains("missing field `name`"), "{e}");
}

#[test]
fn pigsty_template_with_tuning_callbacks_tags_and_watchdog() {
    let f = "pigsty-template.yml";
    let c = load(f);
    // Acted on.
    assert_eq!((c.scope.as_str(), c.namespace.as_str()), ("pg-meta", "/pg/"));
    let DcsSettings::Etcd3 { auth, tls, .. } = &c.dcs else { panic!("etcd3") };
    assert_eq!(auth.as_ref().map(|a| a.username.as_str()), Some("pg-meta"));
    assert!(tls.is_some());
    assert_eq!(endpoints(&c).len(), 3);
    let d = &c.bootstrap_dcs;
    assert!(d.check_timeline && !d.synchronous_mode && d.postgresql.remove_data_directory_on_rewind_failure);
    assert_eq!(d.primary_start_timeout_ms, 10_000);
    assert_eq!(d.postgresql.parameters.len(), 18);
    assert_eq!(c.pg.pg_ctl_timeout_s, 120);
    assert_eq!(c.pg.basebackup_args, ["--max-rate=1000M", "--checkpoint=fast", "--verbose"]);
    assert_eq!(c.pg.local_pg.use_pg_rewind, Some(true));
    assert_eq!(c.pg.local_pg.remove_data_directory_on_rewind_failure, Some(true), "acted on, not ignored");
    assert_eq!(c.pg.rewind.username, "replicator");
    assert_eq!(c.scripts.callbacks.len(), 4);
    assert_eq!(c.pg_hba.len(), 6);
    assert_eq!(c.pg.parameters.len(), 42);
    assert_eq!(c.pg.parameters["bgwriter_lru_multiplier"], "5.0");
    assert_eq!((c.watchdog.mode, c.watchdog.safety_margin_ms), (WatchdogMode::Automatic, Some(5_000)));
    assert!(c.tags.clonefrom && c.tags.other.contains_key("spec"));
    assert_warnings(
        f,
        &c,
        &[
            ("log.type", LOG),
            ("log.level", LOG),
            ("log.dir", LOG),
            ("log.file_size", LOG),
            ("log.file_num", LOG),
            ("log.dateformat", LOG),
            ("log.format", LOG),
            ("bootstrap.dcs.primary_stop_timeout", "pg_ctl"),
            ("bootstrap.dcs.max_timelines_history", "whole `history`"),
            ("postgresql.use_unix_socket", "TCP"),
            ("postgresql.use_unix_socket_repl", "TCP"),
            ("postgresql.pg_ident", "pg_ident.conf"),
        ],
    );
    // Refused: another binary name; typos.
    assert_refused(
        f,
        "  bin_dir: /usr/pgsql/bin\n",
        "  bin_dir: /usr/pgsql/bin\n  bin_name:\n    pg_ctl: pg_ctl16\n",
        "`postgresql.bin_name.pg_ctl`: Shield runs `pg_ctl` from `bin_dir`",
    );
    assert_refused(
        f,
        "  parameters:\n    shared_buffers",
        "  paramters:\n    shared_buffers",
        "`postgresql.paramters`: unknown key; did you mean `parameters`?",
    );
    assert_refused(f, "    ttl: 30", "    ttll: 30", "`bootstrap.dcs.ttll`: unknown key; did you mean `ttl`?");
    assert_refused(f, "      use_slots: true", "      use_slot: true", "did you mean `use_slots`?");
    assert_refused(f, "  mode: automatic", "  mode: sometimes", "watchdog.mode");
}

#[test]
fn pgbackrest_custom_bootstrap_and_patroni_4_keys() {
    let f = "pgbackrest-restore.yml";
    let c = load(f);
    // Acted on: the custom method keeps this node from bootstrapping a new cluster.
    assert_eq!(c.custom_bootstrap.as_deref(), Some("pgbackrest"));
    assert_eq!(c.pg.basebackup_args, ["--max-rate=200M"]);
    assert_eq!(c.pg.replication.username, "replicator");
    assert_eq!(endpoints(&c).len(), 3);
    assert_eq!(c.pg_hba.len(), 2);
    assert_warnings(
        f,
        &c,
        &[
            ("bootstrap.method: pgbackrest", "will not bootstrap one"),
            ("postgresql.config_dir", "data_dir"),
            ("postgresql.authentication.replication.sslmode", "user name and password only"),
            ("postgresql.authentication.replication.sslrootcert", "user name and password only"),
            ("postgresql.create_replica_methods", "`pgbackrest` is not run"),
            ("postgresql.rewind", "pg_rewind"),
            ("postgresql.parameters_primary", "every role"),
            ("postgresql.pg_hba_replica", "every role"),
            ("postgresql.recovery_conf", "primary_conninfo"),
            ("postgresql.custom_conf", "parameters"),
            ("postgresql.proxy_address", "proxy_url"),
        ],
    );
    // Refused: a standby cluster; a non-standard binary name.
    assert_refused(
        f,
        "    retry_timeout: 10\n",
        "    retry_timeout: 10\n    standby_cluster:\n      host: 10.30.0.10\n      port: 5432\n",
        "`bootstrap.dcs.standby_cluster`: Shield cannot run a standby cluster",
    );
    assert_refused(f, "    postgres: postgres", "    postgres: halo", "`postgresql.bin_name.postgres`");
    // `method: initdb` is the default method, acted on.
    let t = text(f).replacen("  method: pgbackrest", "  method: initdb", 1);
    let c = NodeConfig::parse(&path(f), &t, &BTreeMap::new()).expect("loads");
    assert_eq!(c.custom_bootstrap, None);
    assert!(c.warnings.iter().any(|w| named(w) == "bootstrap.pgbackrest" && w.contains("does not name")));
}

#[test]
fn the_seeds_halo_file() {
    let f = "patroni_halo.yml";
    let c = load(f);
    assert_eq!((c.pg.port, c.pg.bin_dir.to_str()), (1921, Some("/u01/app/halo/product/dbms/14/bin")));
    assert_eq!(endpoints(&c).len(), 3);
    assert_eq!(c.scripts.callbacks.len(), 3);
    assert!(c.bootstrap_dcs.postgresql.use_slots);
    // Nothing in it is ignored (`nosync: false` is what Shield does anyway).
    assert_warnings(f, &c, &[]);
}

/// Every file in the corpus has its test above, and the daemon's command line accepts each one,
/// printing its warnings.
#[test]
fn every_corpus_file_is_covered_and_validates_with_the_binary() {
    let covered = [
        "patroni-sample-etcd.yml",
        "patroni-sample-etcd3.yml",
        "patroni-consul.yml",
        "spilo-template.yml",
        "pigsty-template.yml",
        "pgbackrest-restore.yml",
    ];
    let mut found: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = covered.iter().map(|s| (*s).to_owned()).collect();
    want.sort();
    assert_eq!(found, want, "a corpus file without a test, or a test without its file");
    for f in covered.iter().chain(&["patroni_halo.yml"]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shield"));
        cmd.arg("--validate-config").arg(path(f));
        for (k, v) in env_for(f) {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run shield");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{f}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            stdout.lines().filter(|l| l.contains(": warning: ")).count(),
            load(f).warnings.len(),
            "{f}: {stdout}"
        );
    }
}

/// `shield check` prints the config's warnings as WARN lines (the DCS is a closed port here, so
/// the DCS line fails; the warnings come first regardless).
#[test]
fn shield_check_prints_the_warnings() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("node.yml");
    let t = text("patroni-sample-etcd3.yml")
        .replace("  hosts: 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379\n", "  hosts: 127.0.0.1:9\n")
        .replace("  protocol: https\n", "  protocol: http\n")
        .replace("  cacert: /etc/patroni/tls/etcd-ca.pem\n  cert: /etc/patroni/tls/etcd-client.pem\n  key: /etc/patroni/tls/etcd-client.key\n", "");
    std::fs::write(&f, t).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_shield")).arg("check").arg(&f).output().expect("shield check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("WARN  config: `restapi.server_tokens` is a Patroni key Shield does not act on; ignored"),
        "{stdout}"
    );
    assert!(
        stdout.contains("WARN  config: `bootstrap.dcs`: `loop_wait + 2*retry_timeout <= ttl` is broken"),
        "{stdout}"
    );
    assert!(!stdout.contains("panicked") && !String::from_utf8_lossy(&out.stderr).contains("panicked"));
}
