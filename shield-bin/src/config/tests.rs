use super::*;
use crate::backend::dcs::DcsSettings;

/// Patroni's own sample config (postgres0.yml), trimmed only of comments.
const PATRONI: &str = r#"
scope: batman
namespace: /service/
name: postgresql0
restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008
  authentication:
    username: username
    password: password
ctl:
  insecure: false
etcd3:
  host: 127.0.0.1:2379
bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 100
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator 127.0.0.1/32 md5
  - host all all 0.0.0.0/0 md5
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: data/postgresql0
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: zalando
    rewind:
      username: rewind_user
      password: rewind_password
  parameters:
    unix_socket_directories: '..'
watchdog:
  mode: off
tags:
  noloadbalance: false
  clonefrom: false
  nosync: false
log:
  level: INFO
"#;

fn parse(text: &str) -> Result<NodeConfig, ConfigFileError> {
    NodeConfig::parse(Path::new("postgres0.yml"), text, &BTreeMap::new())
}

#[test]
fn patronis_sample_config_is_accepted_unchanged() {
    let c = parse(PATRONI).expect("valid");
    assert_eq!(c.scope, "batman");
    assert_eq!(c.name.as_str(), "postgresql0");
    assert_eq!(c.api_listen, "127.0.0.1:8008".parse().expect("addr"));
    assert_eq!(c.dcs, DcsSettings::Etcd3 { endpoints: vec!["http://127.0.0.1:2379".into()], auth: None, tls: None });
    assert_eq!(c.bootstrap_dcs.timing.ttl_ms, 30_000);
    assert!(c.bootstrap_dcs.postgresql.use_pg_rewind);
    assert_eq!(c.initdb_args, vec!["--encoding=UTF8", "--data-checksums"]);
    assert_eq!(c.pg.port, 5432);
    assert_eq!(c.pg.rewind.username, "rewind_user");
    assert_eq!(c.pg.parameters["unix_socket_directories"], "..");
    assert_eq!(c.watchdog.mode, WatchdogMode::Off);
    assert_eq!(c.watchdog.device, Path::new("/dev/watchdog"));
    assert_eq!(c.pg_hba.len(), 2);
}

#[test]
fn vip_section_as_the_seed_asks_for_it() {
    let vip = "vip:\n  address: 10.16.16.199\n  interface: eth0\n  netmask: 255.255.255.0\n  broadcast: 10.16.16.255\n";
    let c = parse(&format!("{PATRONI}{vip}")).expect("valid");
    let v = c.vip.expect("a VIP");
    assert_eq!((v.cidr(), v.interface.as_str(), v.announcements), ("10.16.16.199/24".to_owned(), "eth0", 3));
    assert_eq!(v.broadcast, Some("10.16.16.255".parse().expect("ip")));
    let c = parse(&format!("{PATRONI}vip:\n  address: 10.0.0.5\n  prefix: 16\n  interface: bond0\n")).expect("ok");
    assert_eq!(c.vip.expect("vip").cidr(), "10.0.0.5/16");
    assert!(parse(PATRONI).expect("valid").vip.is_none());
    for (bad, names) in [
        ("vip:\n  address: 10.0.0.300\n  prefix: 24\n  interface: eth0\n", "vip.address"),
        ("vip:\n  address: fe80::1\n  prefix: 64\n  interface: eth0\n", "IPv6"),
        ("vip:\n  address: 10.0.0.5\n  interface: eth0\n", "netmask"),
        ("vip:\n  address: 10.0.0.5\n  netmask: 255.0.255.0\n  interface: eth0\n", "vip.netmask"),
        ("vip:\n  address: 10.0.0.5\n  prefix: 33\n  interface: eth0\n", "vip.prefix"),
        ("vip:\n  address: 10.0.0.5\n  prefix: 24\n  netmask: 255.255.255.0\n  interface: eth0\n", "not both"),
        ("vip:\n  address: 10.0.0.5\n  prefix: 24\n  interface: 'eth 0'\n", "vip.interface"),
        ("vip:\n  address: 10.0.0.5\n  prefix: 24\n", "interface"),
        ("vip:\n  address: 0.0.0.0\n  prefix: 24\n  interface: eth0\n", "vip.address"),
    ] {
        let e = parse(&format!("{PATRONI}{bad}")).expect_err(bad);
        assert!(e.to_string().contains(names), "{bad}: {e}");
    }
}

#[test]
fn scripts_are_split_and_checked() {
    let cb = "  callbacks:\n    on_role_change: /usr/local/bin/vip.sh --quiet\n    on_stop: \"'/opt/my scripts/stop.sh'\"\n  pre_promote: /bin/fence-old-primary\n  pgpass: /tmp/pgpass0";
    let c = parse(&PATRONI.replace("  pgpass: /tmp/pgpass0", cb)).expect("valid");
    use crate::backend::callbacks::Event;
    assert_eq!(c.scripts.callbacks[&Event::OnRoleChange], ["/usr/local/bin/vip.sh", "--quiet"]);
    // Split as Patroni's shlex.split does: quotes inside the YAML value keep a space.
    assert_eq!(c.scripts.callbacks[&Event::OnStop], ["/opt/my scripts/stop.sh"]);
    assert_eq!(c.scripts.pre_promote.as_deref(), Some(&["/bin/fence-old-primary".to_owned()][..]));
    assert_eq!(c.callback_primary_role, "master");
    assert!(c.warnings.iter().all(|k| !k.contains("callbacks") && !k.contains("pre_promote")), "{:?}", c.warnings);
    let bad = PATRONI.replace("  pgpass: /tmp/pgpass0", "  callbacks:\n    on_promote: /x\n  pgpass: /tmp/pgpass0");
    assert!(parse(&bad).expect_err("unknown callback").to_string().contains("postgresql.callbacks.on_promote"));
    let bad = PATRONI.replace("  pgpass: /tmp/pgpass0", "  before_stop: \"/x 'y\"\n  pgpass: /tmp/pgpass0");
    assert!(parse(&bad).expect_err("open quote").to_string().contains("postgresql.before_stop"));
    let bad = PATRONI.replace("  pgpass: /tmp/pgpass0", "  callback_timeout: 0\n  pgpass: /tmp/pgpass0");
    assert!(parse(&bad).expect_err("zero timeout").to_string().contains("callback_timeout"));
}

#[test]
fn rest_api_tls_and_allowlist() {
    let rest = |extra: &str| {
        PATRONI.replace("  connect_address: 127.0.0.1:8008\n", &format!("  connect_address: 127.0.0.1:8008\n{extra}"))
    };
    let c = parse(&rest(
        "  certfile: /etc/ssl/api.pem\n  cafile: /etc/ssl/ca.pem\n  verify_client: optional\n  allowlist: [10.0.0.0/8, 127.0.0.1]\n  allowlist_include_members: true\n",
    ))
    .expect("valid");
    let t = c.api_tls.expect("TLS");
    assert_eq!(
        (t.cert.to_str(), t.key.to_str()),
        (Some("/etc/ssl/api.pem"), Some("/etc/ssl/api.pem")),
        "key defaults to certfile"
    );
    assert_eq!(t.verify, crate::net::tls::VerifyClient::Optional);
    assert_eq!(c.api_access.allowlist.len(), 2);
    assert!(c.api_access.include_members && c.api_access.cert_for_unsafe);
    assert!(parse(PATRONI).expect("valid").api_tls.is_none());
    for (bad, names) in [
        ("  verify_client: required\n", "need `restapi.certfile`"),
        ("  certfile: /x.pem\n  verify_client: required\n", "needs `restapi.cafile`"),
        ("  certfile: /x.pem\n", "needs `restapi.cafile`"),
        ("  certfile: /x.pem\n  cafile: /ca.pem\n  verify_client: sometimes\n", "none, optional or required"),
        ("  keyfile: /k.pem\n", "needs `restapi.certfile`"),
        ("  certfile: /x.pem\n  cafile: /ca.pem\n  keyfile_password: s3cret\n", "encrypted keys"),
        ("  allowlist: [10.0.0.0/40]\n", "restapi.allowlist"),
    ] {
        let e = parse(&rest(bad)).expect_err(bad);
        assert!(e.to_string().contains(names), "{bad}: {e}");
    }
}

#[test]
fn basebackup_options_as_patroni_writes_them() {
    let bb = "  basebackup:\n  - max-rate: 100M\n  - checkpoint: spread\n  - verbose\n  pgpass: /tmp/pgpass0";
    let c = parse(&PATRONI.replace("  pgpass: /tmp/pgpass0", bb)).expect("valid");
    assert_eq!(c.pg.basebackup_args, ["--max-rate=100M", "--checkpoint=spread", "--verbose"]);
    let owned =
        PATRONI.replace("  pgpass: /tmp/pgpass0", "  basebackup:\n  - pgdata: /elsewhere\n  pgpass: /tmp/pgpass0");
    assert!(parse(&owned).expect_err("owned").to_string().contains("--pgdata=/elsewhere is set by Shield"));
    let bad = PATRONI.replace("  pgpass: /tmp/pgpass0", "  basebackup: fast\n  pgpass: /tmp/pgpass0");
    assert!(parse(&bad).expect_err("not a list").to_string().contains("postgresql.basebackup"));
}

#[test]
fn watchdog_section() {
    let c = parse(&PATRONI.replace("  mode: off", "  mode: required\n  device: /dev/watchdog1\n  safety_margin: 1.5"))
        .expect("valid");
    assert_eq!(c.watchdog.mode, WatchdogMode::Required);
    assert_eq!(c.watchdog.device, Path::new("/dev/watchdog1"));
    assert_eq!(c.watchdog.safety_margin_ms, Some(1_500));
    assert_eq!(c.watchdog.driver, crate::backend::watchdog::Driver::Linux);
    // Patroni's -1 ("half the ttl") and no section at all: Shield's derived timeout.
    let c = parse(&PATRONI.replace("  mode: off", "  mode: automatic\n  safety_margin: -1")).expect("valid");
    assert_eq!((c.watchdog.mode, c.watchdog.safety_margin_ms), (WatchdogMode::Automatic, None));
    let c = parse(&PATRONI.replace("watchdog:\n  mode: off\n", "")).expect("valid");
    assert_eq!(c.watchdog.mode, WatchdogMode::Automatic, "Patroni's default mode");
    let c =
        parse(&PATRONI.replace("  mode: off", "  mode: required\n  driver: testing\n  device: /tmp/wd")).expect("ok");
    assert_eq!(c.watchdog.driver, crate::backend::watchdog::Driver::Testing);
}

#[test]
fn halo_style_config_with_hosts_list_custom_port_and_bin_dir() {
    let text = PATRONI
        .replace("  host: 127.0.0.1:2379", "  hosts:\n  - 10.16.16.155:2379\n  - 10.16.16.156:2379")
        .replace("listen: 127.0.0.1:5432", "listen: 0.0.0.0:1921")
        .replace(
            "  data_dir: data/postgresql0",
            "  data_dir: /u01/app/halo/data\n  bin_dir: /u01/app/halo/product/dbms/14/bin",
        );
    let c = parse(&text).expect("valid");
    assert_eq!(c.pg.port, 1921);
    assert_eq!(c.pg.bin_dir, PathBuf::from("/u01/app/halo/product/dbms/14/bin"));
    let DcsSettings::Etcd3 { endpoints, .. } = &c.dcs else { panic!("etcd3") };
    assert_eq!(endpoints, &vec!["http://10.16.16.155:2379".to_owned(), "http://10.16.16.156:2379".to_owned()]);
}

#[test]
fn unknown_and_invalid_keys_name_the_key_and_the_file() {
    let e = parse(&PATRONI.replace("scope: batman", "scope: batman\nscoop: 1")).expect_err("unknown key");
    assert!(e.to_string().starts_with("postgres0.yml: "), "{e}");
    assert!(e.to_string().contains("scoop"), "{e}");
    let e =
        parse(&PATRONI.replace("  pgpass: /tmp/pgpass0", "  pgpass: /tmp/pgpass0\n  data_dri: x")).expect_err("typo");
    assert!(e.to_string().contains("`postgresql.data_dri`: unknown key; did you mean `data_dir`?"), "{e}");
    let e = parse(&PATRONI.replace("ttl: 30", "ttl: soon")).expect_err("bad ttl");
    assert!(e.to_string().contains("bootstrap.dcs") && e.to_string().contains("ttl"), "{e}");
    let e = parse(&PATRONI.replace("listen: 127.0.0.1:5432", "listen: 127.0.0.1:port")).expect_err("bad port");
    assert!(e.to_string().contains("postgresql.listen"), "{e}");
    let e = parse(&PATRONI.replace("  mode: off", "  mode: sometimes")).expect_err("bad mode");
    assert!(e.to_string().contains("watchdog.mode"), "{e}");
    let e = parse(&PATRONI.replace("  mode: off", "  mode: required\n  safety_margin: soon")).expect_err("margin");
    assert!(e.to_string().contains("watchdog.safety_margin"), "{e}");
    let e = parse(&PATRONI.replace("  mode: off", "  mode: required\n  driver: acme")).expect_err("driver");
    assert!(e.to_string().contains("watchdog.driver"), "{e}");
    let e = parse(&PATRONI.replace("etcd3:\n  host: 127.0.0.1:2379", "zookeeper:\n  hosts: [a]")).expect_err("zk");
    assert!(e.to_string().contains("`zookeeper`: this DCS is not supported"), "{e}");
    let e = parse("scope: [").expect_err("yaml");
    assert!(e.to_string().contains("not valid YAML"), "{e}");
    let e = parse(&PATRONI.replace("name: postgresql0", "name: a/b")).expect_err("name");
    assert!(e.to_string().contains("`name`"), "{e}");
}

#[test]
fn environment_overrides_patroni_then_shield() {
    let env: BTreeMap<String, String> = [
        ("PATRONI_NAME", "from-patroni"),
        ("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1:6000"),
        ("SHIELD_NAME", "from-shield"),
        ("PATRONI_ETCD3_HOSTS", "a:2379,b:2379"),
        ("PATRONI_SUPERUSER_PASSWORD", "pw"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = NodeConfig::parse(Path::new("x.yml"), PATRONI, &env).expect("valid");
    assert_eq!(c.name.as_str(), "from-shield");
    assert_eq!(c.pg.port, 6000);
    assert_eq!(c.pg.superuser.password, "pw");
    let DcsSettings::Etcd3 { endpoints, .. } = &c.dcs else { panic!("etcd3") };
    assert_eq!(endpoints.len(), 2);
}

/// Every variable Patroni documents is read: typed as Patroni reads it (lists, booleans,
/// mappings), and a key Shield does not act on gets the same warning as in the file.
#[test]
fn patronis_documented_variables_are_read_with_their_types() {
    let env: BTreeMap<String, String> = [
        ("PATRONI_RESTAPI_ALLOWLIST", "127.0.0.1, 10.0.0.0/8"),
        ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "true"),
        ("PATRONI_RESTAPI_SERVER_TOKENS", "Minimal"),
        ("PATRONI_RESTAPI_HTTP_EXTRA_HEADERS", "{X-Frame-Options: SAMEORIGIN}"),
        ("PATRONI_REPLICATION_SSLMODE", "require"),
        ("PATRONI_REWIND_USERNAME", "rewinder"),
        ("PATRONI_REWIND_PASSWORD", "123"),
        ("PATRONI_LOG_LEVEL", "DEBUG"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let c = NodeConfig::parse(Path::new("x.yml"), PATRONI, &env).expect("valid");
    assert_eq!(c.pg.rewind.username, "rewinder");
    assert_eq!(c.pg.rewind.password, "123", "a numeric-looking password stays text");
    let warned = c.warnings.join("\n");
    for key in ["restapi.server_tokens", "restapi.http_extra_headers", "log.level"] {
        assert!(warned.contains(key), "{key} not warned: {warned}");
    }
    // The whole config in PATRONI_CONFIGURATION: the file and the other variables are not read.
    let env: BTreeMap<String, String> = [
        ("PATRONI_CONFIGURATION", PATRONI.replace("name: postgresql0", "name: from-env")),
        ("PATRONI_NAME", "ignored".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let c = NodeConfig::load(Path::new("/nonexistent.yml"), &env).expect("valid");
    assert_eq!(c.name.as_str(), "from-env");
}

#[test]
fn consul_section_is_read_and_checked() {
    let base = PATRONI.replace("etcd3:\n  host: 127.0.0.1:2379\n", "");
    let c = parse(&base.replace(
        "bootstrap:",
        "consul:\n  host: 127.0.0.1:8500\n  token: t\n  consistency: consistent\n  checks: []\nbootstrap:",
    ))
    .expect("valid");
    let DcsSettings::Consul { url, token, consistency, tls, .. } = &c.dcs else { panic!("consul") };
    assert_eq!(
        (url.as_str(), token.as_deref(), consistency.as_str(), tls),
        ("http://127.0.0.1:8500", Some("t"), "consistent", &None)
    );
    let c = parse(&base.replace(
        "bootstrap:",
        "consul:\n  host: 127.0.0.1:8500\n  register_service: true\n  service_tags: [dc1]\n  service_check_interval: 10s\nbootstrap:",
    ))
    .expect("register_service");
    let DcsSettings::Consul { service, .. } = &c.dcs else { panic!("consul") };
    assert_eq!(service, &Some((vec!["dc1".to_owned()], 10)));
    let e = parse(&base.replace(
        "bootstrap:",
        "consul:\n  host: 127.0.0.1:8500\n  register_service: true\n  service_check_interval: often\nbootstrap:",
    ))
    .expect_err("bad interval");
    assert!(e.to_string().contains("service_check_interval"), "{e}");
    let e = parse(&base.replace("bootstrap:", "consul:\n  cert: /a.pem\nbootstrap:")).expect_err("cert without ca");
    assert!(e.to_string().contains("cacert"), "{e}");
    let e = parse(&base.replace("bootstrap:", "consul:\n  consistency: sometimes\nbootstrap:")).expect_err("bad mode");
    assert!(e.to_string().contains("consul.consistency"), "{e}");
}

#[test]
fn patronis_sample_warns_only_about_what_it_ignores() {
    let c = parse(PATRONI).expect("valid");
    // `ctl` is shieldctl's; `nosync: false` is what Shield does anyway.
    assert_eq!(c.warnings, ["`log.level` is a Patroni key Shield does not act on; ignored (Shield logs to stderr (the journal under systemd); set the level with SHIELD_LOG)"]);
}

#[test]
fn keys_patroni_documents_are_accepted_with_one_warning_each() {
    let rest = "  connect_address: 127.0.0.1:8008\n";
    for (section_line, added, key) in [
        (rest, "  server_tokens: Minimal\n", "restapi.server_tokens"),
        (rest, "  thread_pool_size: 5\n", "restapi.thread_pool_size"),
        (rest, "  ciphers: HIGH\n", "restapi.ciphers"),
        ("scope: batman\n", "thread_stack_size: 512kB\n", "thread_stack_size"),
        ("  pgpass: /tmp/pgpass0\n", "  pg_ident: [a b c]\n", "postgresql.pg_ident"),
        ("  pgpass: /tmp/pgpass0\n", "  use_slots: true\n", "postgresql.use_slots"),
        ("  level: INFO\n", "  deduplicate_heartbeat_logs: true\n", "log.deduplicate_heartbeat_logs"),
        ("    ttl: 30\n", "    primary_race_backoff: 5\n", "bootstrap.dcs.primary_race_backoff"),
        ("  nosync: false\n", "  sync_priority: 2\n", "tags.sync_priority"),
    ] {
        let text = PATRONI.replacen(section_line, &format!("{section_line}{added}"), 1);
        let c = parse(&text).unwrap_or_else(|e| panic!("{key}: {e}"));
        let n = c.warnings.iter().filter(|w| w.starts_with(&format!("`{key}` is a Patroni key"))).count();
        assert_eq!(n, 1, "{key}: {:?}", c.warnings);
    }
    // nosync/nostream only when set: off is what Shield does.
    let c = parse(&PATRONI.replace("  nosync: false", "  nosync: true\n  nostream: true")).expect("valid");
    assert!(
        c.warnings.iter().any(|w| w.starts_with("`tags.nosync`"))
            && c.warnings.iter().any(|w| w.starts_with("`tags.nostream`"))
    );
}

#[test]
fn shapes_that_are_no_config_are_refused_by_name() {
    for (text, needle) in [
        ("- a\n- b\n", "expected a mapping of Patroni's keys at the top, found a list"),
        ("42\n", "found a number"),
        (&PATRONI.replace("scope: batman", "scope: batman\n1: one"), "the key 1 is not a name"),
        (&PATRONI.replace("restapi:\n", "restapi: 5\nrestapi_old:\n"), "`restapi`: expected a mapping"),
        (&PATRONI.replace("  level: INFO", "  levle: INFO"), "`log.levle`: unknown key; did you mean `level`?"),
        (
            &PATRONI.replace("  level: INFO", "  colour: red"),
            "`log.colour`: unknown key (not one of Patroni's or Shield's keys)",
        ),
        (&PATRONI.replace("  initdb:", "  method: [a]\n  initdb:"), "`bootstrap.method`: expected a method name"),
        (
            &PATRONI.replace("  pgpass: /tmp/pgpass0", "  create_replica_methods: basebackup"),
            "expected a list of methods",
        ),
        (&PATRONI.replace("  pgpass: /tmp/pgpass0", "  bin_name: pg_ctl"), "`postgresql.bin_name`: expected a mapping"),
        (&PATRONI.replace("  pgpass: /tmp/pgpass0", "  bin_name:\n    pg_ctrl: pg_ctl"), "did you mean `pg_ctl`?"),
    ] {
        let e = parse(text).map(|_| ()).expect_err(needle);
        assert!(e.to_string().contains(needle), "{needle}: {e}");
    }
}

#[test]
fn did_you_mean_is_for_close_names_only() {
    assert_eq!(
        keys::unknown("postgresql.paramters", "paramters", &["parameters", "pg_hba"]),
        "`postgresql.paramters`: unknown key; did you mean `parameters`?"
    );
    assert!(keys::unknown("x.zzzzzz", "zzzzzz", &["parameters", "pg_hba"])
        .ends_with("(not one of Patroni's or Shield's keys)"));
}

/// The node file's rewind and wipe settings are read (not ignored) and handed to decide() as
/// overrides of the cluster's; a key left out stays `None` so the cluster's value counts.
#[test]
fn local_rewind_and_wipe_settings_are_acted_on() {
    let text = PATRONI.replace(
        "  pgpass: /tmp/pgpass0\n",
        "  pgpass: /tmp/pgpass0\n  use_pg_rewind: false\n  remove_data_directory_on_diverged_timelines: true\n",
    );
    let c = parse(&text).expect("valid");
    let want = shield_core::config::LocalPg {
        use_pg_rewind: Some(false),
        remove_data_directory_on_rewind_failure: None,
        remove_data_directory_on_diverged_timelines: Some(true),
    };
    assert_eq!(c.pg.local_pg, want);
    assert!(!c.warnings.iter().any(|w| w.contains("remove_data_directory")), "{:?}", c.warnings);
    let policy = c.pg.local_pg.over(&c.bootstrap_dcs.postgresql);
    assert!(!policy.use_pg_rewind, "the node file's false wins over bootstrap.dcs's true");
    assert!(policy.remove_data_directory_on_diverged_timelines && !policy.remove_data_directory_on_rewind_failure);
    let bad = PATRONI.replace(
        "  pgpass: /tmp/pgpass0\n",
        "  pgpass: /tmp/pgpass0\n  remove_data_directory_on_rewind_failure: maybe\n",
    );
    let e = parse(&bad).expect_err("not a bool");
    assert!(
        e.to_string().contains("`postgresql.remove_data_directory_on_rewind_failure`: maybe is not true or false"),
        "{e}"
    );
}
