//! The database port: process control and status of the local PostgreSQL-compatible server.

use async_trait::async_trait;

use crate::action::{DbTask, StopMode};
use crate::observation::DbStatus;
use crate::ports::PortError;

/// The local database. The driver runs [`DbTask`]s in the background and never lets them delay
/// lease renewal or fencing.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Database: Send + Sync {
    /// Current status (bounded by a timeout inside the implementation).
    async fn status(&self) -> Result<DbStatus, PortError>;

    /// Runs a long task to completion.
    async fn run(&self, task: &DbTask) -> Result<(), PortError>;

    /// Stops the postmaster now. With [`StopMode::Immediate`] this must not wait on clients.
    async fn stop(&self, mode: StopMode) -> Result<(), PortError>;

    /// Creates, drops and advances physical replication slots on the running server (quick).
    /// Moves inactive slots forward to the given positions (`advance`).
    async fn sync_slots(
        &self,
        create: &[String],
        drop: &[String],
        advance: &[(String, crate::Lsn)],
    ) -> Result<(), PortError>;
}
