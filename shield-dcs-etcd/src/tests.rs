//! Unit tests without a server.

use super::config::EtcdConfig;
use super::port::prefix_end;
use shield_core::MemberName;

#[test]
fn prefix_end_covers_exactly_the_prefix() {
    assert_eq!(prefix_end("/service/batman/"), b"/service/batman0".to_vec());
    assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
}

#[test]
fn prefix_collapses_slashes() {
    let m = MemberName::new("a").expect("valid");
    let mut c = EtcdConfig::new(vec![], "batman", m);
    assert_eq!(c.prefix(), "/service/batman/");
    c.namespace = "//custom/".into();
    assert_eq!(c.prefix(), "/custom/batman/");
}
