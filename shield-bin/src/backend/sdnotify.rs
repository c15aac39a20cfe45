//! systemd integration (`Type=notify`): READY once the first cycle has run, STATUS with the role
//! and the current decision, WATCHDOG=1 keep-alives when the unit sets `WatchdogSec`, STOPPING on
//! an orderly shutdown. Nothing is sent when `NOTIFY_SOCKET` is not set (not under systemd).
//!
//! Child processes (PostgreSQL, which Debian builds with systemd support, callbacks, the fence
//! keeper) must not see `NOTIFY_SOCKET`: every spawn goes through `scrub` in
//! [`shield_db_postgres::process`], which also removes password variables and ambient capabilities).

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// The daemon's messages to systemd.
#[derive(Debug)]
pub struct Notifier {
    active: bool,
    ready: bool,
    stopping: bool,
    status: String,
    /// Half the unit's watchdog interval, and when the last keep-alive went out.
    keepalive: Option<(Duration, Option<Instant>)>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let active = std::env::var_os("NOTIFY_SOCKET").is_some();
        let keepalive = sd_notify::watchdog_enabled().filter(|_| active).map(|d| (d / 2, None));
        Notifier { active, ready: false, stopping: false, status: String::new(), keepalive }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    /// After each cycle: READY the first time, STATUS when it changed, WATCHDOG=1 when due. The
    /// keep-alive goes out from the HA loop itself, so a stuck loop lets systemd act.
    pub fn cycle(&mut self, status: &str) {
        if !self.active {
            return;
        }
        let mut states = Vec::new();
        if !self.ready {
            self.ready = true;
            states.push(NotifyState::Ready);
        }
        if status != self.status {
            self.status = status.to_owned();
            states.push(NotifyState::Status(&self.status));
        }
        if let Some((every, last)) = &mut self.keepalive {
            if last.is_none_or(|l| l.elapsed() >= *every) {
                *last = Some(Instant::now());
                states.push(NotifyState::Watchdog);
            }
        }
        if !states.is_empty() {
            self.send(&states);
        }
    }

    /// The orderly shutdown has begun (sent once).
    pub fn stopping(&mut self) {
        if self.active && !self.stopping {
            self.stopping = true;
            self.send(&[NotifyState::Stopping]);
        }
    }
}
