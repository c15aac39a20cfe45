//! An in-memory watchdog on simulated time: the reference implementation of [`Watchdog`].
//!
//! It behaves as Linux's `/dev/watchdog` does for the port: timeouts are whole seconds (rounded
//! down; under one second is an error), `arm` opens the device, `feed` sets the timeout and
//! pings it, `disarm` is the magic close. Time only moves when the test calls
//! [`MemoryWatchdog::advance`]; a device armed and not fed within its timeout has *expired*: the
//! host would have been reset. It records every call with the simulated time it came at.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::ports::{ErrorKind, PortError, Watchdog};

/// One thing that happened to the device, at simulated time `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogEvent {
    /// Opened and armed with a timeout of `timeout_s` seconds.
    Armed {
        /// When.
        at_ms: u64,
        /// The timeout set.
        timeout_s: u64,
    },
    /// Fed, with the timeout set to `timeout_s` seconds.
    Fed {
        /// When.
        at_ms: u64,
        /// The timeout set.
        timeout_s: u64,
    },
    /// Disarmed (magic close).
    Disarmed {
        /// When.
        at_ms: u64,
    },
    /// Not fed in time: the host would have been reset at `at_ms`.
    Expired {
        /// When the timeout ran out.
        at_ms: u64,
    },
}

#[derive(Debug, Default)]
struct Inner {
    now_ms: u64,
    /// While armed: the time it runs out.
    deadline_ms: Option<u64>,
    events: Vec<WatchdogEvent>,
    expired_at: Option<u64>,
}

impl Inner {
    /// Records an expiry that happened by now.
    fn settle(&mut self) {
        if let Some(d) = self.deadline_ms.filter(|d| *d <= self.now_ms) {
            self.deadline_ms = None;
            self.expired_at = Some(d);
            self.events.push(WatchdogEvent::Expired { at_ms: d });
        }
    }
}

/// A watchdog device on its own simulated clock (starting at 0 ms).
#[derive(Clone, Debug, Default)]
pub struct MemoryWatchdog {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryWatchdog {
    /// A closed device at time 0.
    pub fn new() -> MemoryWatchdog {
        MemoryWatchdog::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the clock forward by `ms`; an armed device whose timeout runs out expires.
    pub fn advance(&self, ms: u64) {
        let mut g = self.lock();
        g.now_ms = g.now_ms.saturating_add(ms);
        g.settle();
    }

    /// The simulated time now.
    pub fn now_ms(&self) -> u64 {
        self.lock().now_ms
    }

    /// Whether the device is armed (and has not expired).
    pub fn is_armed(&self) -> bool {
        self.lock().deadline_ms.is_some()
    }

    /// When the device expired (the host would have been reset), if it did.
    pub fn expired_at(&self) -> Option<u64> {
        self.lock().expired_at
    }

    /// Everything that happened, in order.
    pub fn events(&self) -> Vec<WatchdogEvent> {
        self.lock().events.clone()
    }

    fn set(&self, what: &str, timeout_ms: u64, open: bool) -> Result<(), PortError> {
        let mut g = self.lock();
        g.settle();
        if let Some(at) = g.expired_at {
            return Err(PortError::new(ErrorKind::Io, format!("watchdog {what}: it expired at {at} ms (host reset)")));
        }
        let timeout_s = timeout_ms / 1000;
        if timeout_s == 0 {
            return Err(PortError::new(
                ErrorKind::Io,
                format!("watchdog {what}: {timeout_ms} ms is under the device's 1 s resolution"),
            ));
        }
        if g.deadline_ms.is_none() && !open {
            return Err(PortError::new(ErrorKind::Io, format!("watchdog {what}: not armed")));
        }
        let at_ms = g.now_ms;
        g.deadline_ms = Some(at_ms.saturating_add(timeout_s * 1000));
        g.events.push(if open {
            WatchdogEvent::Armed { at_ms, timeout_s }
        } else {
            WatchdogEvent::Fed { at_ms, timeout_s }
        });
        Ok(())
    }
}

#[async_trait]
impl Watchdog for MemoryWatchdog {
    async fn arm(&self, timeout_ms: u64) -> Result<(), PortError> {
        self.set("arm", timeout_ms, true)
    }

    async fn feed(&self, timeout_ms: u64) -> Result<(), PortError> {
        self.set("feed", timeout_ms, false)
    }

    async fn disarm(&self) -> Result<(), PortError> {
        let mut g = self.lock();
        g.settle();
        if g.deadline_ms.take().is_some() {
            let at_ms = g.now_ms;
            g.events.push(WatchdogEvent::Disarmed { at_ms });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::block_on;

    #[test]
    fn arm_feed_and_disarm_are_recorded_in_whole_seconds() {
        let w = MemoryWatchdog::new();
        assert!(block_on(w.feed(5_000)).expect_err("not armed").message.contains("not armed"));
        block_on(w.arm(5_999)).expect("arm");
        assert!(w.is_armed());
        w.advance(4_000);
        block_on(w.feed(3_000)).expect("feed");
        w.advance(2_999);
        assert_eq!(w.expired_at(), None);
        block_on(w.disarm()).expect("disarm");
        block_on(w.disarm()).expect("disarming twice is fine");
        w.advance(60_000);
        assert_eq!(w.expired_at(), None, "a disarmed device never fires");
        assert_eq!(
            w.events(),
            [
                WatchdogEvent::Armed { at_ms: 0, timeout_s: 5 },
                WatchdogEvent::Fed { at_ms: 4_000, timeout_s: 3 },
                WatchdogEvent::Disarmed { at_ms: 6_999 },
            ]
        );
    }

    #[test]
    fn fed_too_late_it_expires_and_refuses_further_feeds() {
        let w = MemoryWatchdog::new();
        block_on(w.arm(2_000)).expect("arm");
        w.advance(1_500);
        block_on(w.feed(2_000)).expect("in time");
        w.advance(2_000);
        assert_eq!(w.expired_at(), Some(3_500), "fed at 1.5 s with 2 s: runs out at 3.5 s");
        assert!(!w.is_armed());
        let e = block_on(w.feed(2_000)).expect_err("too late");
        assert_eq!(e.kind, ErrorKind::Io);
        assert!(e.message.contains("expired at 3500 ms"), "{e}");
        assert_eq!(w.events().last(), Some(&WatchdogEvent::Expired { at_ms: 3_500 }));
    }

    #[test]
    fn a_timeout_under_one_second_is_refused() {
        let w = MemoryWatchdog::new();
        assert!(block_on(w.arm(999)).expect_err("resolution").message.contains("1 s resolution"));
        assert!(!w.is_armed() && w.events().is_empty());
    }
}
