//! The `shield` binary's command line: config validation, bad input, refusing root.

use std::process::Command;

fn shield() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shield"))
}

const GOOD: &str = "scope: batman
name: node1
restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008
etcd3:
  hosts: 127.0.0.1:2379
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /tmp/does-not-matter
log:
  level: INFO
";

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, text).expect("write config");
    p
}

#[test]
fn validate_config_accepts_a_patroni_file_and_warns_about_ignored_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(&dir, "ok.yml", GOOD);
    let out = shield().arg("--validate-config").arg(&f).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("warning: `log.level` is a Patroni key Shield does not act on; ignored"), "{stdout}");
    // Timings that break Patroni's rule are adjusted as Patroni does, with a warning.
    let f = write(
        &dir,
        "ttl.yml",
        &format!("{GOOD}bootstrap:\n  dcs:\n    ttl: 5\n    loop_wait: 3\n    retry_timeout: 3\n"),
    );
    let out = shield().arg("--validate-config").arg(&f).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("loop_wait adjusted from 3 s to 1 s and retry_timeout from 3 s to 2 s"), "{stdout}");
}

#[test]
fn bad_configs_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        ("typo.yml", GOOD.replace("scope: batman", "scope: batman\nscpoe: x"), "scpoe"),
        ("port.yml", GOOD.replace("listen: 127.0.0.1:5432", "listen: 127.0.0.1:http"), "postgresql.listen"),
        ("nodcs.yml", GOOD.replace("etcd3:\n  hosts: 127.0.0.1:2379\n", ""), "no DCS configured"),
        ("yaml.yml", "scope: [".to_owned(), "not valid YAML"),
        ("margin.yml", format!("{GOOD}bootstrap:\n  dcs:\n    ttl: 5\n    fence_margin: 4.5\n"), "fence_margin"),
        ("typo2.yml", GOOD.replace("  data_dir:", "  dta_dir:"), "did you mean `data_dir`?"),
    ];
    for (name, text, needle) in cases {
        let f = write(&dir, name, &text);
        let out = shield().arg("--validate-config").arg(&f).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(name) && err.contains(needle), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    let out = shield().arg("--validate-config").arg(dir.path().join("missing.yml")).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn refuses_to_run_as_root() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("not root: nothing to check");
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(&dir, "ok.yml", GOOD);
    let out = shield().arg(&f).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to run as root"));
}

#[test]
fn a_missing_bin_dir_is_a_clear_error() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tmp");
    let text = GOOD
        .replace("  data_dir: /tmp/does-not-matter", "  data_dir: /tmp/does-not-matter\n  bin_dir: /nonexistent/bin");
    let f = write(&dir, "bin.yml", &text);
    let mut cmd = shield();
    if nix::unistd::geteuid().is_root() {
        // Run it as the unprivileged test user, as the daemon must be.
        let name = std::env::var("SHIELD_TEST_USER").unwrap_or_else(|_| "shieldtest".into());
        let Ok(Some(u)) = nix::unistd::User::from_name(&name) else {
            assert!(std::env::var("SHIELD_REQUIRE_SERVERS").as_deref() != Ok("1"), "user {name} missing");
            return;
        };
        let _ = std::os::unix::fs::chown(dir.path(), Some(u.uid.as_raw()), Some(u.gid.as_raw()));
        let _ = std::os::unix::fs::chown(&f, Some(u.uid.as_raw()), Some(u.gid.as_raw()));
        let exe = dir.path().join("shield");
        std::fs::copy(env!("CARGO_BIN_EXE_shield"), &exe).expect("copy the binary where the user can run it");
        cmd = Command::new(&exe);
        cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    let out = cmd.arg(&f).output().expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bin_dir") && err.contains("/nonexistent/bin"), "{err}");
}

/// The shipped systemd units are valid: `systemd-analyze verify` accepts them without a warning
/// (binaries pointed at ones that exist here).
#[test]
fn shipped_systemd_units_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        assert!(std::env::var("SHIELD_REQUIRE_SERVERS").is_err(), "systemd-analyze is missing");
        eprintln!("SKIPPED: systemd-analyze not found");
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let units = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib/systemd");
    for (unit, bin) in [("shield.service", "/usr/local/bin/shield"), ("etcd.service", "/usr/local/bin/etcd")] {
        let text = std::fs::read_to_string(format!("{units}/{unit}")).expect("unit file");
        assert!(text.contains("Type=notify"), "{unit}");
        write(&dir, unit, &text.replace(bin, env!("CARGO_BIN_EXE_shield")));
    }
    let shield = std::fs::read_to_string(format!("{units}/shield.service")).expect("unit");
    assert!(shield.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW") && shield.contains("User=postgres"));
    let out = Command::new(analyze)
        .current_dir(dir.path())
        .args(["verify", "./shield.service", "./etcd.service"])
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

fn which(cmd: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|d| d.join(cmd)).find(|p| p.is_file()).ok_or(())
}

fn init(dir: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = shield()
        .current_dir(dir)
        .arg("init")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("shield init");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(stdin.as_bytes());
    }
    let o = child.wait_with_output().expect("output");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn validates(path: &std::path::Path) {
    let o = shield().arg("--validate-config").arg(path).output().expect("validate");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn init_etcd_writes_checks_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().expect("dir");
    let args = ["etcd", "--members", "10.0.0.1,10.0.0.2,10.0.0.3", "--this", "10.0.0.2", "--out", "etc"];
    let (ok, out, err) = init(dir.path(), &args, "");
    assert!(ok, "{err}");
    assert!(out.contains("10.0.0.2 will be used as node IP") && out.contains("systemctl daemon-reload"), "{out}");
    let conf = std::fs::read_to_string(dir.path().join("etc/etcd.conf.yml")).expect("config");
    assert!(conf.contains("name: etcd2") && conf.contains("advertise-client-urls: http://10.0.0.2:2379"), "{conf}");
    let unit = std::fs::read_to_string(dir.path().join("etc/etcd.service")).expect("unit");
    assert!(unit.contains("--config-file etc/etcd.conf.yml"), "{unit}");
    // Again: nothing changes. A different member list: a diff and no write without --force.
    let (ok, out, _) = init(dir.path(), &args, "");
    assert!(ok && out.contains("etcd.conf.yml: unchanged"), "{out}");
    let changed = ["etcd", "--members", "10.0.0.1,10.0.0.2,10.0.0.5", "--this", "10.0.0.2", "--out", "etc"];
    let (ok, _, err) = init(dir.path(), &changed, "");
    assert!(
        !ok && err.contains(
            "+initial-cluster: etcd1=http://10.0.0.1:2380,etcd2=http://10.0.0.2:2380,etcd3=http://10.0.0.5:2380"
        ),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(dir.path().join("etc/etcd.conf.yml")).expect("config"), conf);
    let forced: Vec<&str> = changed.iter().copied().chain(["--force"]).collect();
    let (ok, out, _) = init(dir.path(), &forced, "");
    assert!(ok && out.contains("replaced"), "{out}");
    // Bad lists are refused (flags) or asked again (prompt); two members get a warning.
    let (ok, _, err) = init(dir.path(), &["etcd", "--members", "10.0.0.1,10.0.0.1", "--this", "10.0.0.1"], "");
    assert!(!ok && err.contains("10.0.0.1 is listed twice"), "{err}");
    let (ok, out, err) =
        init(dir.path(), &["etcd", "--this", "10.0.0.1", "--out", "two"], "10.0.0.1,banana\n10.0.0.1,10.0.0.2\n");
    assert!(ok, "{err}");
    assert!(out.contains("Please input IP list where etcd cluster will be running"), "{out}");
    assert!(out.contains("\"10.0.0.1,banana\" is not a valid etcd member list"), "{out}");
    assert!(out.contains("warning: 2 member(s): the cluster cannot survive losing one"), "{out}");
}

#[test]
fn init_node_asks_the_seeds_questions_and_writes_a_config_the_daemon_accepts() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let common = ["--this", "10.16.16.155", "--bin-dir", "/usr/lib/postgresql/15/bin", "--out", "node/shield.yml"];
    let mut args = vec!["node", "--data-dir", data.to_str().expect("utf8")];
    args.extend(common);
    // The seed's answers: the etcd list, then the defaults except the VIP (one bad answer first).
    let answers = "10.16.16.155,10.16.16.156,10.16.16.157\n\n10.16.16.300\n10.16.16.199\n\n\n\n";
    let (ok, out, err) = init(dir.path(), &args, answers);
    assert!(ok, "{err}\n{out}");
    for q in [
        "Input current node name\nDefault: node1\nnode1 will be used as node name",
        "\"10.16.16.300\" is not a valid VIP",
        "10.16.16.199 will be used as VIP",
        "Default: eth0\neth0 will be used as network interface",
        "Default: 255.255.255.0\n255.255.255.0 will be used as VIP netmask",
        "Default: 10.16.16.255\n10.16.16.255 will be used as VIP broadcast address",
        "every node of the cluster needs the same ones",
    ] {
        assert!(out.contains(q), "missing {q:?} in:\n{out}");
    }
    let config = dir.path().join("node/shield.yml");
    validates(&config);
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.contains(
        "vip:\n  address: 10.16.16.199\n  netmask: 255.255.255.0\n  broadcast: 10.16.16.255\n  interface: eth0"
    ));
    assert!(text.contains("  - host replication replicator 10.16.16.0/24 scram-sha-256"), "{text}");
    // Secure by default: REST credentials, and unsafe requests from the members and loopback only.
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    assert_eq!(v["restapi"]["authentication"]["username"].as_str(), Some("shield"), "{text}");
    assert!(v["restapi"]["authentication"]["password"].as_str().is_some_and(|p| p.len() >= 20), "{text}");
    let allow: Vec<&str> =
        v["restapi"]["allowlist"].as_sequence().expect("allowlist").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(allow, ["127.0.0.1", "::1", "10.16.16.155", "10.16.16.156", "10.16.16.157"], "{text}");
    assert_eq!(v["restapi"]["allowlist_include_members"].as_bool(), Some(true), "{text}");
    assert_eq!(v["restapi"]["listen"].as_str(), Some("0.0.0.0:8008"), "{text}");
    // Declined: loopback only (the published address stays this host's).
    let mut local: Vec<&str> =
        args.iter().map(|a| if *a == "node/shield.yml" { "local/shield.yml" } else { *a }).collect();
    local.push("--rest-loopback-only");
    let (ok, out, err) = init(dir.path(), &local, answers);
    assert!(ok, "{err}\n{out}");
    let text = std::fs::read_to_string(dir.path().join("local/shield.yml")).expect("config");
    validates(&dir.path().join("local/shield.yml"));
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    assert_eq!(v["restapi"]["listen"].as_str(), Some("127.0.0.1:8008"), "{text}");
    assert_eq!(v["restapi"]["connect_address"].as_str(), Some("10.16.16.155:8008"), "{text}");
    assert_eq!(v["restapi"]["allowlist_include_members"].as_bool(), Some(false), "{text}");
    let unit = std::fs::read_to_string(dir.path().join("node/shield.service")).expect("unit");
    assert!(
        unit.contains("AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW") && unit.contains("node/shield.yml"),
        "{unit}"
    );
    // The same answers again: the same file (the passwords are kept), nothing rewritten.
    let (ok, out, _) = init(dir.path(), &args, answers);
    assert!(ok && out.contains("shield.yml: unchanged"), "{out}");
    // With flags nothing is asked; a missing value without a default is named.
    let (ok, _, err) = init(dir.path(), &["node", "--name", "node2", "--out", "n2/shield.yml"], "");
    assert!(!ok && err.contains("etcd member list is required"), "{err}");
}

/// The passwords in a config `shield init node` wrote.
fn passwords_in(config: &std::path::Path) -> Vec<String> {
    let text = std::fs::read_to_string(config).expect("config");
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let mut pws: Vec<String> = ["superuser", "replication"]
        .iter()
        .map(|u| v["postgresql"]["authentication"][*u]["password"].as_str().expect("password").to_owned())
        .collect();
    pws.push(v["restapi"]["authentication"]["password"].as_str().expect("REST password").to_owned());
    pws
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

/// No password `shield init node` generates, is given or finds is ever printed, nor suggested on
/// a command line; the config and its backup are owner-only.
#[test]
fn init_node_never_prints_a_password() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let base = ["node", "--etcd", "10.0.0.1,10.0.0.2,10.0.0.3", "--vip", "10.0.0.99/24", "--this", "10.0.0.1"];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--bin-dir", "/usr/lib/postgresql/15/bin", "--data-dir", data.to_str().expect("utf8")]);
    let no_secret = |pws: &[String], out: &str, err: &str| {
        for pw in pws {
            assert!(!out.contains(pw.as_str()) && !err.contains(pw.as_str()), "{pw:?} printed:\n{out}\n{err}");
        }
    };
    // Generated passwords: a note on reusing them that names a file, not the passwords.
    let first: Vec<&str> = args.iter().copied().chain(["--name", "node1", "--out", "n1/shield.yml"]).collect();
    let (ok, out, err) = init(dir.path(), &first, "");
    assert!(ok, "{err}\n{out}");
    let n1 = dir.path().join("n1/shield.yml");
    let generated = passwords_in(&n1);
    no_secret(&generated, &out, &err);
    assert!(out.contains("--passwords-from") && !out.contains("--superuser-password"), "{out}");
    assert_eq!(mode(&n1), 0o600);
    // The second node takes them from a copy of the first node's file.
    let second: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--name", "node2", "--out", "n2/shield.yml", "--passwords-from", "n1/shield.yml"])
        .collect();
    let (ok, out, err) = init(dir.path(), &second, "");
    assert!(ok, "{err}\n{out}");
    assert_eq!(passwords_in(&dir.path().join("n2/shield.yml")), generated);
    no_secret(&generated, &out, &err);
    // Passwords given as flags (still accepted, with a warning) are not echoed either.
    let given = ["given-su-pw-4711", "given-rep-pw-0815"];
    let flags: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--name", "node3", "--out", "n3/shield.yml", "--superuser-password", given[0]])
        .chain(["--replication-password", given[1]])
        .collect();
    let (ok, out, err) = init(dir.path(), &flags, "");
    assert!(ok, "{err}\n{out}");
    assert!(out.contains("visible in `ps`"), "{out}");
    let given: Vec<String> = given.iter().map(|g| (*g).to_owned()).collect();
    no_secret(&given, &out, &err);
    // A changed file: the diff hides both the old and the new passwords; --force keeps the old
    // file as an owner-only backup.
    let changed: Vec<&str> = first.iter().copied().chain(["--passwords-from", "n3/shield.yml"]).collect();
    let (ok, out, err) = init(dir.path(), &changed, "");
    assert!(!ok && err.contains("not overwriting it without --force"), "{err}");
    no_secret(&generated, &out, &err);
    no_secret(&given, &out, &err);
    let forced: Vec<&str> = changed.iter().copied().chain(["--force"]).collect();
    let (ok, out, err) = init(dir.path(), &forced, "");
    assert!(ok, "{err}\n{out}");
    no_secret(&given, &out, &err);
    assert_eq!((mode(&n1), mode(&dir.path().join("n1/shield.bak"))), (0o600, 0o600));
    // A --passwords-from file without them is refused, naming it.
    std::fs::write(dir.path().join("empty.yml"), "scope: x\n").expect("write");
    let bad: Vec<&str> =
        args.iter().copied().chain(["--out", "n4/shield.yml", "--passwords-from", "empty.yml"]).collect();
    let (ok, _, err) = init(dir.path(), &bad, "");
    assert!(!ok && err.contains("--passwords-from empty.yml") && !err.contains("panicked"), "{err}");
}

/// Passwords and paths with YAML's special characters (` #`, quotes, colons, a leading `-`,
/// `*`, `&`, `!`, `{`, unicode) are written so that they read back exactly; a password with a
/// line break (which .pgpass cannot hold) is refused.
#[test]
fn init_node_writes_hostile_values_that_read_back_exactly() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("da ta #1: 'x' \"y\"");
    let bin = "/opt/-pg: *&!{bin} #x";
    let su = "s3cret #not a comment";
    let rep = "- 'rep': \"pw\" *a &b !c {d} ünï ✓";
    let rep_flag = format!("--replication-password={rep}");
    let args = [
        "node",
        "--etcd",
        "10.0.0.1,10.0.0.2,10.0.0.3",
        "--vip",
        "10.0.0.99/24",
        "--this",
        "10.0.0.1",
        "--name",
        "node1",
        "--bin-dir",
        bin,
        "--data-dir",
        data.to_str().expect("utf8"),
        "--superuser-password",
        su,
        // A value starting with `-` goes after `=`, as clap needs it.
        &rep_flag,
        "--out",
        "h/shield.yml",
    ];
    let (ok, out, err) = init(dir.path(), &args, "");
    assert!(ok, "{err}\n{out}");
    let config = dir.path().join("h/shield.yml");
    validates(&config);
    let text = std::fs::read_to_string(&config).expect("config");
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    assert_eq!(v["postgresql"]["authentication"]["superuser"]["password"].as_str(), Some(su), "{text}");
    assert_eq!(v["postgresql"]["authentication"]["replication"]["password"].as_str(), Some(rep), "{text}");
    assert_eq!(v["postgresql"]["bin_dir"].as_str(), Some(bin), "{text}");
    assert_eq!(v["postgresql"]["data_dir"].as_str(), data.to_str(), "{text}");
    // A re-run keeps them: the same file.
    let (ok, out, _) = init(dir.path(), &args, "");
    assert!(ok && out.contains("shield.yml: unchanged"), "{out}");
    let broken: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == su {
                "two\nlines"
            } else if *a == "h/shield.yml" {
                "b/shield.yml"
            } else {
                *a
            }
        })
        .collect();
    let (ok, _, err) = init(dir.path(), &broken, "");
    assert!(!ok && err.contains("line break"), "{err}");
}

#[test]
fn init_node_from_a_halo_patroni_file_keeps_it_and_adds_the_vip() {
    let dir = tempfile::tempdir().expect("dir");
    let halo = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/patroni_halo.yml");
    // Shield runs Halo's file unchanged.
    validates(std::path::Path::new(halo));
    let (ok, out, err) =
        init(dir.path(), &["node", "--from-patroni", halo, "--vip", "10.16.16.199/24", "--out", "shield.yml"], "");
    assert!(ok, "{err}{out}");
    let text = std::fs::read_to_string(dir.path().join("shield.yml")).expect("config");
    let original = std::fs::read_to_string(halo).expect("fixture");
    assert!(text.starts_with(&original), "the Patroni file is kept as it was");
    assert!(text.ends_with(
        "vip:\n  address: 10.16.16.199\n  netmask: 255.255.255.0\n  broadcast: 10.16.16.255\n  interface: eth0\n"
    ));
    validates(&dir.path().join("shield.yml"));
    // Converting twice is refused, naming why.
    let (ok, _, err) =
        init(dir.path(), &["node", "--from-patroni", "shield.yml", "--vip", "10.16.16.199", "--out", "again.yml"], "");
    assert!(!ok && err.contains("already has a `vip` section"), "{err}");
}

/// `--apply` runs the printed root steps in order (the system tools replaced by recording fakes
/// on PATH, so the test changes nothing on the host), skips what is already done, and stops at a
/// failing step naming it.
#[test]
fn init_apply_runs_the_root_steps() {
    if !nix::unistd::geteuid().is_root() {
        assert!(std::env::var("SHIELD_REQUIRE_SERVERS").is_err(), "--apply is tested as root");
        eprintln!("SKIPPED: --apply needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).expect("bin");
    let log = dir.path().join("calls.log");
    for (tool, status) in [("id", "1"), ("useradd", "0"), ("install", "0"), ("systemctl", "${FAIL_SYSTEMCTL:-0}")] {
        let p = fake.join(tool);
        std::fs::write(&p, format!("#!/bin/sh\necho \"{tool} $*\" >> {}\nexit {status}\n", log.display()))
            .expect("fake");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let path = format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default());
    let run = |args: &[&str], fail: &str| {
        shield()
            .current_dir(dir.path())
            .arg("init")
            .args(args)
            .env("PATH", &path)
            .env("FAIL_SYSTEMCTL", fail)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("shield init")
    };
    let etcd = ["etcd", "--members", "10.0.0.1,10.0.0.2,10.0.0.3", "--this", "10.0.0.1", "--out", "etc"];
    let args: Vec<&str> =
        etcd.iter().copied().chain(["--apply", "--data-dir", "/srv/etcd", "--systemd-dir", "units"]).collect();
    let o = run(&args, "0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let calls = std::fs::read_to_string(&log).expect("calls");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "id etcd",
            "useradd --system --home-dir /var/lib/etcd --shell /usr/sbin/nologin etcd",
            "install -d -o etcd -g etcd -m 700 /srv/etcd",
            "install -m 644 etc/etcd.service units/etcd.service",
            "systemctl daemon-reload",
            "systemctl enable --now etcd",
        ]
    );
    // A failing step stops the run and is named.
    let o = run(&args, "1");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("`systemctl daemon-reload` failed"), "{err}");
}
