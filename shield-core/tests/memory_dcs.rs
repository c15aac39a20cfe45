//! The in-memory DCS passes the conformance suite, and its fault switch behaves.

use async_trait::async_trait;
use shield_core::cluster::{MemberData, MemberRole};
use shield_core::ports::{Dcs, ErrorKind};
use shield_core::testing::{run_dcs_conformance, DcsHarness, MemoryDcs, MemoryStore};
use shield_core::MemberName;

struct Harness {
    store: MemoryStore,
}

#[async_trait]
impl DcsHarness for Harness {
    type Client = MemoryDcs;
    async fn client(&self, scope: &str, member: &str) -> MemoryDcs {
        self.store.client("/service", scope, MemberName::new(member).expect("valid"), self.ttl_ms())
    }
    async fn pass_time(&self, ms: u64) {
        self.store.advance(ms);
    }
    fn ttl_ms(&self) -> u64 {
        4_000
    }
    fn expiry_slack_ms(&self) -> u64 {
        0
    }
    async fn put_raw(&self, scope: &str, key: &str, value: &[u8]) {
        self.store.put_raw(&format!("/service/{scope}/{key}"), value);
    }
}

#[tokio::test]
async fn memory_dcs_passes_conformance() {
    let h = Harness { store: MemoryStore::new() };
    run_dcs_conformance(&h).await.expect("conformance");
}

#[tokio::test]
async fn unreachable_store_fails_every_call_as_unreachable() {
    let store = MemoryStore::new();
    let a = store.client("service", "c", MemberName::new("a").expect("valid"), 4_000);
    store.set_reachable(false);
    assert_eq!(a.read().await.map(|_| ()).map_err(|e| e.kind), Err(ErrorKind::Unreachable));
    assert_eq!(a.acquire_leader(4_000).await.map_err(|e| e.kind), Err(ErrorKind::Unreachable));
    let m = MemberData::new(MemberRole::Replica, "running");
    assert_eq!(a.touch_member(&m).await.map_err(|e| e.kind), Err(ErrorKind::Unreachable));
    store.set_reachable(true);
    assert!(a.read().await.is_ok());
}

#[tokio::test]
async fn garbage_written_by_a_foreign_client_is_reported_not_fatal() {
    let store = MemoryStore::new();
    let a = store.client("service", "c", MemberName::new("a").expect("valid"), 4_000);
    a.touch_member(&MemberData::new(MemberRole::Replica, "running")).await.expect("touch");
    store.put_raw("/service/c/members/bad", b"\xff\xfe not json");
    store.put_raw("/service/c/leader", b"");
    let v = a.read().await.expect("read");
    assert_eq!(v.members.len(), 2);
    assert!(v.leader.is_some() && v.leader_name().is_none());
    assert_eq!(v.anomalies.len(), 2, "{:?}", v.anomalies);
}
