//! Ports: the small async traits through which a driver touches the world.
//!
//! decide() never calls these. The daemon calls them to gather an [`crate::Observation`] and to
//! perform [`crate::Action`]s; the simulator has its own in-process world instead. Each trait has
//! an in-memory reference implementation in [`crate::testing`] and, for the DCS, a conformance
//! suite every real backend runs against itself.

mod db;
mod dcs;
mod error;
mod vip;
mod watchdog;

pub use db::Database;
pub use dcs::{encode, Dcs, DcsKey, Watch};
pub use error::{ErrorKind, PortError};
pub use vip::Vip;
pub use watchdog::Watchdog;

#[cfg(any(test, feature = "mocks"))]
pub use db::MockDatabase;
#[cfg(any(test, feature = "mocks"))]
pub use dcs::MockDcs;
#[cfg(any(test, feature = "mocks"))]
pub use vip::MockVip;
#[cfg(any(test, feature = "mocks"))]
pub use watchdog::MockWatchdog;
