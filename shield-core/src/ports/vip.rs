//! The VIP port: a virtual IP address that follows the primary.

use async_trait::async_trait;

use crate::ports::PortError;

/// The node's handle on the cluster VIP.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Vip: Send + Sync {
    /// Binds the address (idempotent) and announces it.
    async fn add(&self) -> Result<(), PortError>;
    /// Removes the address (idempotent).
    async fn remove(&self) -> Result<(), PortError>;
    /// Whether the address is bound on this host now.
    async fn is_bound(&self) -> Result<bool, PortError>;
}
