//! The watchdog port: a device that resets the host unless fed in time.

use async_trait::async_trait;

use crate::ports::PortError;

/// A hardware or software watchdog (Linux `/dev/watchdog`).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Watchdog: Send + Sync {
    /// Opens and arms the device with `timeout_ms` (rounded down to whole seconds by Linux).
    async fn arm(&self, timeout_ms: u64) -> Result<(), PortError>;
    /// Feeds it, setting its timeout to `timeout_ms` (whole seconds, rounded down) at the same
    /// time. A device that keeps a longer timeout than asked is an error (and is disarmed).
    async fn feed(&self, timeout_ms: u64) -> Result<(), PortError>;
    /// Disarms it with the magic close.
    async fn disarm(&self) -> Result<(), PortError>;
}
