//! The `mocks` feature's mockall mocks in use: error paths a real backend can rarely be made to
//! take on demand, driven through each port with every [`ErrorKind`].

use async_trait::async_trait;
use shield_core::ports::{
    Database, Dcs, ErrorKind, MockDatabase, MockDcs, MockVip, MockWatchdog, PortError, Vip, Watchdog,
};
use shield_core::testing::{run_dcs_conformance, DcsHarness};
use shield_core::{MemberName, StopMode};

const KINDS: [ErrorKind; 6] = [
    ErrorKind::Unreachable,
    ErrorKind::CompareFailed,
    ErrorKind::LeaseLost,
    ErrorKind::Rejected,
    ErrorKind::Io,
    ErrorKind::BadData,
];

fn name(n: &str) -> MemberName {
    MemberName::new(n).expect("valid")
}

/// A backend whose holder wins the lock and then fails its renewal with `kind`.
struct FailingRenewal {
    kind: ErrorKind,
}

#[async_trait]
impl DcsHarness for FailingRenewal {
    type Client = MockDcs;
    async fn client(&self, _scope: &str, member: &str) -> MockDcs {
        let mut m = MockDcs::new();
        m.expect_member().return_const(name(member));
        let first = member == "a";
        m.expect_acquire_leader().returning(move |_| Ok(first));
        let kind = self.kind;
        m.expect_renew_leader().returning(move |_| Err(PortError::new(kind, "injected")));
        m
    }
    async fn pass_time(&self, _ms: u64) {}
    fn ttl_ms(&self) -> u64 {
        4_000
    }
    fn expiry_slack_ms(&self) -> u64 {
        0
    }
    async fn put_raw(&self, _scope: &str, _key: &str, _value: &[u8]) {}
}

/// The conformance suite names the case and passes the backend's error on, whatever its kind.
#[tokio::test]
async fn conformance_reports_a_failing_backend_with_its_error() {
    for kind in KINDS {
        let f = run_dcs_conformance(&FailingRenewal { kind }).await.expect_err("a failing renewal fails the suite");
        assert_eq!(f.case, "leader-lock");
        assert_eq!(f.problem, format!("holder's renewal failed: {kind}: injected"));
    }
}

/// What a driver does at the fencing deadline: every step is tried even when an earlier one
/// failed, and each failure is reported with its cause.
async fn fence(db: &dyn Database, vip: &dyn Vip, wd: &dyn Watchdog) -> Vec<PortError> {
    let mut errors = Vec::new();
    errors.extend(db.stop(StopMode::Immediate).await.err());
    errors.extend(vip.remove().await.err());
    errors.extend(wd.disarm().await.err());
    errors
}

#[tokio::test]
async fn every_fencing_step_runs_and_reports_each_kind_of_failure() {
    for kind in KINDS {
        let mut db = MockDatabase::new();
        db.expect_stop()
            .withf(|m| *m == StopMode::Immediate)
            .times(1)
            .returning(move |_| Err(PortError::new(kind, "pg_ctl")));
        let mut vip = MockVip::new();
        vip.expect_remove().times(1).returning(move || Err(PortError::new(kind, "ip addr del")));
        let mut wd = MockWatchdog::new();
        wd.expect_disarm().times(1).returning(move || Err(PortError::new(kind, "magic close")));
        let errors = fence(&db, &vip, &wd).await;
        let got: Vec<(ErrorKind, &str)> = errors.iter().map(|e| (e.kind, e.message.as_str())).collect();
        assert_eq!(got, [(kind, "pg_ctl"), (kind, "ip addr del"), (kind, "magic close")]);
        assert!(errors.iter().all(|e| e.is_retryable() == matches!(kind, ErrorKind::Unreachable | ErrorKind::Io)));
    }
    // All well: nothing reported.
    let mut db = MockDatabase::new();
    db.expect_stop().times(1).returning(|_| Ok(()));
    let mut vip = MockVip::new();
    vip.expect_remove().times(1).returning(|| Ok(()));
    let mut wd = MockWatchdog::new();
    wd.expect_disarm().times(1).returning(|| Ok(()));
    assert!(fence(&db, &vip, &wd).await.is_empty());
}

/// The watchdog's feed failing (a device that keeps a longer timeout) and a status query failing
/// come back to the caller unchanged through the trait objects.
#[tokio::test]
async fn port_errors_pass_through_trait_objects_unchanged() {
    for kind in KINDS {
        let err = PortError::new(kind, format!("{kind} from the mock"));
        let mut wd = MockWatchdog::new();
        let e = err.clone();
        wd.expect_feed().withf(|t| *t == 3_000).returning(move |_| Err(e.clone()));
        let wd: &dyn Watchdog = &wd;
        assert_eq!(wd.feed(3_000).await, Err(err.clone()));
        let mut db = MockDatabase::new();
        let e = err.clone();
        db.expect_status().returning(move || Err(e.clone()));
        let db: &dyn Database = &db;
        assert_eq!(db.status().await, Err(err.clone()));
        let mut dcs = MockDcs::new();
        let e = err.clone();
        dcs.expect_read().returning(move || Err(e.clone()));
        let dcs: &dyn Dcs = &dcs;
        assert_eq!(dcs.read().await.map(|_| ()), Err(err));
    }
}
