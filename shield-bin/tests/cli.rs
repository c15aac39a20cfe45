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
fn validate_config_accepts_a_patroni_file_and_notes_ignored_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = write(&dir, "ok.yml", GOOD);
    let out = shield().arg("--validate-config").arg(&f).output().expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(": ok"), "{stdout}");
    assert!(stdout.contains("`log` is accepted but not acted on"), "{stdout}");
}

#[test]
fn bad_configs_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        ("typo.yml", GOOD.replace("scope: batman", "scope: batman\nscpoe: x"), "scpoe"),
        ("port.yml", GOOD.replace("listen: 127.0.0.1:5432", "listen: 127.0.0.1:http"), "postgresql.listen"),
        ("nodcs.yml", GOOD.replace("etcd3:\n  hosts: 127.0.0.1:2379\n", ""), "no DCS configured"),
        ("yaml.yml", "scope: [".to_owned(), "not valid YAML"),
        (
            "ttl.yml",
            format!("{GOOD}bootstrap:\n  dcs:\n    ttl: 5\n    loop_wait: 3\n    retry_timeout: 3\n"),
            "loop_wait",
        ),
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
