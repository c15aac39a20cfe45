//! Test support for Shield and for code embedding it: in-memory reference implementations of
//! every port (a DCS on simulated time, a database, a VIP, a watchdog on simulated time) and the
//! DCS conformance suite every backend runs against itself.

mod conformance;
mod memory_db;
mod memory_dcs;
mod memory_vip;
mod memory_watchdog;

pub use conformance::{run_dcs_conformance, ConformanceFailure, DcsHarness};
pub use memory_db::MemoryDb;
pub use memory_dcs::{MemoryDcs, MemoryStore};
pub use memory_vip::{MemoryVip, MemoryVipNetwork};
pub use memory_watchdog::{MemoryWatchdog, WatchdogEvent};

/// Runs a future of an in-memory port to completion. They never wait on anything outside
/// themselves, so one poll settles them; a future that is still pending is a bug in the port.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("an in-memory port's future did not complete at once"),
    }
}
