//! # shield-core
//!
//! The pure heart of Shield, a high-availability manager for PostgreSQL-compatible databases.
//!
//! ```text
//!   ┌──────── driver (shield daemon, or sim::World) ─────────┐
//!   │  observe: DCS snapshot, DB status, last outcomes, now  │
//!   │        │                                               │
//!   │        ▼                                               │
//!   │  decide(&NodeState, &Observation) -> Decision          │  <- this crate: pure, total
//!   │        │   actions, next state, reason, wake_at        │
//!   │        ▼                                               │
//!   │  act: run actions in order through the ports           │
//!   │  sleep until wake_at or a DCS watch event; repeat      │
//!   └────────────────────────────────────────────────────────┘
//! ```
//!
//! What it holds:
//! - [`decide()`]: one node's next step. No I/O, no clock, no randomness, no `Result`.
//! - The types it speaks: [`Observation`], [`Decision`], [`Action`], [`Reason`], [`ClusterView`]
//!   (Patroni's DCS model), [`DynamicConfig`] (Patroni's dynamic config keys).
//! - [`ports`]: the async traits for the DCS, the database, the VIP and the watchdog.
//! - [`testing`]: an in-memory DCS on simulated time and the DCS conformance suite.
//! - [`sim`]: a seeded many-node cluster simulator with faults and named invariants.
//!
//! What it does not do: it never reads a clock, sleeps, opens a socket, spawns a task, or draws
//! an unseeded random number, and it depends on no async runtime. The daemon (`shield-bin`) and
//! the DCS backends (`shield-dcs-etcd`, `shield-dcs-consul`) do the I/O.

pub mod action;
pub mod cluster;
pub mod config;
mod decide;
pub mod observation;
pub mod ports;
pub mod reason;
#[cfg(feature = "sim")]
pub mod sim;
pub mod testing;
pub mod types;

pub use action::{Action, CallbackEvent, DbRole, DbTask, StartAs, StopMode};
pub use cluster::{ClusterView, KvEntry, MemberData, MemberRole, Tags};
pub use config::{ConfigError, DynamicConfig, Timing};
pub use decide::{decide, failsafe_answer, slot_name, Decision, LeaseHold, NodeSettings, NodeState, WatchdogMode};
pub use observation::{DataDir, DbProcess, DbStatus, DcsView, Observation, Outcome, PeerReport, Request};
pub use reason::{Ineligible, Reason};
pub use types::{Lsn, MemberName, MonoMillis, Revision, SystemId, Timeline};

/// The Patroni release whose interfaces Shield speaks (DCS values, REST, metrics). Shield
/// reports it where Patroni reports its own version (the member key's `version`, `/patroni`'s
/// `patroni.version`, the `patroni_version` metric), because Patroni members and tools read
/// those to decide which formats a peer understands; Shield's own version is reported beside it.
pub const PATRONI_COMPAT_VERSION: &str = "4.1.5";
