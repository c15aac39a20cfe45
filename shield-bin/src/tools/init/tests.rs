//! Unit tests of `shield init`.

use super::etcd::etcd_config;
use super::node::{broadcast_of, existing_passwords};
use super::yaml::{node_yaml, vip_yaml, NodeYaml};
use super::{member_ips, redact_line, write_file, Access, Asker, Written};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[test]
fn member_lists_are_checked() {
    let (ips, w) = member_ips("10.0.0.1, 10.0.0.2,10.0.0.3").expect("valid");
    assert_eq!(ips.len(), 3);
    assert!(w.is_empty());
    assert!(member_ips("10.0.0.1,10.0.0.1,10.0.0.2").expect_err("dup").contains("twice"));
    assert!(member_ips("10.0.0.1,10.0.0.300").expect_err("bad").contains("10.0.0.300"));
    assert!(member_ips("10.0.0.1,,10.0.0.2").expect_err("empty").contains("empty"));
    assert!(member_ips("10.0.0.1,10.0.0.2").expect("ok").1[0].contains("cannot survive"));
    assert!(member_ips("10.0.0.1,10.0.0.2,10.0.0.3,10.0.0.4").expect("ok").1[0].contains("odd"));
}

#[test]
fn broadcast_is_derived() {
    assert_eq!(broadcast_of("10.16.16.199".parse().expect("ip"), 24), "10.16.16.255".parse::<Ipv4Addr>().expect("ip"));
    assert_eq!(broadcast_of("10.16.16.199".parse().expect("ip"), 32), "10.16.16.199".parse::<Ipv4Addr>().expect("ip"));
    assert_eq!(broadcast_of("10.16.17.1".parse().expect("ip"), 23), "10.16.17.255".parse::<Ipv4Addr>().expect("ip"));
}

#[test]
fn etcd_config_names_every_member_the_same_way() {
    let m: Vec<Ipv4Addr> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().map(|s| s.parse().expect("ip")).collect();
    let a = etcd_config(&m, m[0], Path::new("/var/lib/etcd"));
    let b = etcd_config(&m, m[1], Path::new("/var/lib/etcd"));
    let line = |t: &str, k: &str| t.lines().find(|l| l.starts_with(k)).map(str::to_owned);
    assert_eq!(line(&a, "initial-cluster:"), line(&b, "initial-cluster:"));
    assert_eq!(line(&a, "initial-cluster-token:"), line(&b, "initial-cluster-token:"));
    assert_eq!(line(&b, "name:").as_deref(), Some("name: etcd2"));
    assert!(
        a.contains("initial-cluster: etcd1=http://10.0.0.1:2380,etcd2=http://10.0.0.2:2380,etcd3=http://10.0.0.3:2380")
    );
}

#[test]
fn bad_answers_are_asked_again() {
    let input = "10.0.0.1,10.0.0.1\n10.0.0.1,10.0.0.2,10.0.0.3\n";
    let mut out = Vec::new();
    let got = {
        let mut a = Asker::new(input.as_bytes(), &mut out);
        a.value(None, "Please input IP list", None, "etcd member list", member_ips).expect("second answer")
    };
    assert_eq!(got.0.len(), 3);
    let text = String::from_utf8(out).expect("utf8");
    assert!(text.contains("is not a valid etcd member list: 10.0.0.1 is listed twice"), "{text}");
    let mut out = Vec::new();
    let mut a = Asker::new("x\ny\nz\n".as_bytes(), &mut out);
    assert!(a.value(None, "Q", None, "VIP", |_| Err::<(), _>("no".to_owned())).expect_err("3 bad").contains("after 3"));
}

#[test]
fn files_are_not_overwritten_without_force() {
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path().join("sub/x.yml");
    assert_eq!(write_file(&p, "a: 1\n", false, Access::Public), Ok(Written::Created));
    assert_eq!(write_file(&p, "a: 1\n", false, Access::Public), Ok(Written::Unchanged));
    let e = write_file(&p, "a: 2\n", false, Access::Public).expect_err("changed");
    assert!(e.contains("-a: 1") && e.contains("+a: 2") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read_to_string(&p).expect("read"), "a: 1\n");
    assert_eq!(write_file(&p, "a: 2\n", true, Access::Public), Ok(Written::Replaced));
    assert_eq!(std::fs::read_to_string(p.with_extension("bak")).expect("bak"), "a: 1\n");
}

pub(crate) fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn secret_files_and_their_backups_are_owner_only_and_diffs_hide_passwords() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let p = dir.path().join("shield.yml");
    let v1 = "scope: a\npostgresql:\n  authentication:\n    superuser:\n      password: s3cret-one\n";
    assert_eq!(write_file(&p, v1, false, Access::Secret), Ok(Written::Created));
    assert_eq!(mode(&p), 0o600, "0600 from creation, no chmod afterwards");
    // Left readable by an older version: an unchanged re-run narrows it.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(write_file(&p, v1, false, Access::Secret), Ok(Written::Unchanged));
    assert_eq!(mode(&p), 0o600);
    // A changed file: the diff shows what changed but neither password.
    let v2 = v1.replace("scope: a", "scope: b").replace("s3cret-one", "s3cret-two");
    let e = write_file(&p, &v2, false, Access::Secret).expect_err("changed");
    assert!(e.contains("-scope: a") && e.contains("+scope: b"), "{e}");
    assert!(!e.contains("s3cret") && e.contains("not shown"), "{e}");
    // Only a password changed: still said, still not shown.
    let v3 = v1.replace("s3cret-one", "s3cret-three");
    let e = write_file(&p, &v3, false, Access::Secret).expect_err("changed");
    assert!(!e.contains("s3cret") && e.contains("secret values differ"), "{e}");
    // --force: the backup with the old password is owner-only too, even from a wide original.
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(write_file(&p, &v2, true, Access::Secret), Ok(Written::Replaced));
    assert_eq!((mode(&p), mode(&p.with_extension("bak"))), (0o600, 0o600));
    assert_eq!(std::fs::read_to_string(p.with_extension("bak")).expect("bak"), v1);
}

/// Hostile values (YAML indicators, quotes, comments, line breaks, unicode) in everything
/// `shield init node` writes from an answer come back exactly through the daemon's loader.
#[test]
fn hostile_values_round_trip_through_the_config_loader() {
    let hostile = [
        "pw #not-a-comment",
        "#starts-with-hash",
        "it's \"quoted\" 'twice'",
        "key: value",
        "trailing colon:",
        "- leading dash",
        "*alias",
        "&anchor",
        "!tag",
        "{flow: map}",
        "[flow, seq]",
        "|literal",
        ">folded",
        "%directive",
        "@at`tick`",
        "  spaces around  ",
        "true",
        "null",
        "~",
        "0x1F",
        "1.5e3",
        "0755",
        "yes",
        "ünïcödé ✓ 密码 🐘",
        "back\\slash \\n not a newline",
        "tab\there",
        "---",
        "...",
    ];
    let dir_of = |h: &str| PathBuf::from(format!("/srv/{h}/data"));
    for (i, h) in hostile.iter().enumerate() {
        let rest = format!("{h}-rest");
        let data_dir = dir_of(h);
        let bin_dir = PathBuf::from(format!("/opt/{h}/bin"));
        let socket_dir = PathBuf::from(format!("/run/{h}"));
        // A scope may hold line breaks only in the comment-escaped header.
        let scope = format!("{h}\nscope");
        let n = NodeYaml {
            net: "10.0.0.0/24",
            socket_dir: Some(&socket_dir),
            scope: &scope,
            name: "node1",
            this: Ipv4Addr::new(10, 0, 0, 1),
            port: 5432,
            etcd: &[Ipv4Addr::new(10, 0, 0, 1)],
            data_dir: &data_dir,
            bin_dir: &bin_dir,
            su_password: h,
            rep_password: &format!("{h}{h}"),
            rest_password: &rest,
            members: &[Ipv4Addr::new(10, 0, 0, 2)],
            rest_loopback_only: false,
        };
        let text = node_yaml(&n) + &vip_yaml(Ipv4Addr::new(10, 0, 0, 99), 24, "eth0", Ipv4Addr::new(10, 0, 0, 255));
        let env = std::collections::BTreeMap::new();
        let c = crate::config::NodeConfig::parse(Path::new("/etc/shield/shield.yml"), &text, &env)
            .unwrap_or_else(|e| panic!("case {i} ({h:?}): {e}\n{text}"));
        assert_eq!(c.pg.superuser.password, *h, "{text}");
        assert_eq!(c.pg.superuser.username, "postgres");
        assert_eq!(c.pg.replication.password, format!("{h}{h}"), "{text}");
        assert_eq!(c.api_auth.as_ref().map(|a| a.password.as_str()), Some(rest.as_str()), "{text}");
        assert_eq!(c.pg.data_dir, data_dir, "{text}");
        assert_eq!(c.pg.bin_dir, bin_dir, "{text}");
        assert_eq!(c.pg.pgpass, PathBuf::from(format!("{}.pgpass", data_dir.display())), "{text}");
        assert_eq!(c.scope, scope, "{text}");
        assert_eq!(c.pg.parameters.get("unix_socket_directories"), Some(&socket_dir.display().to_string()));
        // What `existing_passwords` reads back for a re-run is the same.
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("shield.yml");
        std::fs::write(&p, &text).expect("write");
        let got = existing_passwords(&p);
        assert_eq!(got.superuser.as_deref(), Some(*h));
        assert_eq!(got.rest.as_deref(), Some(rest.as_str()));
    }
    // Line breaks in a path survive as well (passwords refuse them: .pgpass cannot hold one).
    let data_dir = PathBuf::from("/srv/two\nlines #x/data");
    let text = etcd_config(&[Ipv4Addr::new(10, 0, 0, 1)], Ipv4Addr::new(10, 0, 0, 1), &data_dir);
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    assert_eq!(v["data-dir"].as_str(), Some("/srv/two\nlines #x/data"), "{text}");
}

#[test]
fn secret_values_are_redacted_line_by_line() {
    assert_eq!(redact_line("      password: abc"), "      password: <hidden>");
    assert_eq!(redact_line("  keyfile_password: 'x:y'"), "  keyfile_password: <hidden>");
    assert_eq!(redact_line("  token: t"), "  token: <hidden>");
    assert_eq!(redact_line("    superuser:"), "    superuser:");
    assert_eq!(redact_line("  listen: 0.0.0.0:8008"), "  listen: 0.0.0.0:8008");
}
