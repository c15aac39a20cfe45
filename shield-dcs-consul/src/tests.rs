//! Unit tests without an agent.

use super::config::ConsulConfig;
use super::service::service_name;
use shield_core::MemberName;

#[test]
fn prefix_has_no_leading_slash() {
    let m = MemberName::new("a").expect("valid");
    let mut c = ConsulConfig::new("http://127.0.0.1:8500/", "batman", m);
    assert_eq!(c.prefix(), "service/batman/");
    assert_eq!(c.url, "http://127.0.0.1:8500");
    c.namespace = "/".into();
    assert_eq!(c.prefix(), "batman/");
}

#[test]
fn service_names_are_sanitised() {
    assert_eq!(service_name("Halo_Cluster.1"), "halo-cluster-1");
}
