//! `Timing`: ttl, loop_wait, retry_timeout and the derived bounds (the fencing rule, Patroni's
//! timing adjustment, status and start timeouts).

use super::{bad, ConfigError};
use serde::{Deserialize, Serialize};

/// The HA timings in milliseconds, checked for the fencing rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// Lease time to live (`ttl`).
    pub ttl_ms: u64,
    /// Cycle period (`loop_wait`).
    pub loop_wait_ms: u64,
    /// Bound on each DCS call and on DCS unreachability before a primary demotes (`retry_timeout`).
    pub retry_timeout_ms: u64,
    /// Subtracted from `ttl` to give the local fencing deadline (`fence_margin`, Shield's own key).
    pub fence_margin_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { ttl_ms: 4_000, loop_wait_ms: 1_000, retry_timeout_ms: 1_500, fence_margin_ms: 750 }
    }
}

impl Timing {
    /// Lowest accepted ttl.
    pub const MIN_TTL_MS: u64 = 2_000;
    /// Lowest accepted loop_wait.
    pub const MIN_LOOP_WAIT_MS: u64 = 100;
    /// Lowest accepted retry_timeout.
    pub const MIN_RETRY_TIMEOUT_MS: u64 = 200;
    /// Largest clock-rate drift between any node and the DCS that the fencing deadline absorbs,
    /// in parts per million (1%). The simulator draws node clock rates within this bound.
    pub const MAX_DRIFT_PPM: u64 = 10_000;

    /// The loop_wait Patroni falls back to when `loop_wait + 2*retry_timeout <= ttl` is broken.
    pub const ADJUSTED_LOOP_WAIT_MS: u64 = 1_000;

    /// Adjusts the timings as Patroni does (`Config._validate_and_adjust_timeouts`), returning one
    /// message per change: a value below Shield's floor is raised to it (Patroni raises to its own,
    /// higher, minimums); then, if `1 s + 2*retry_timeout > ttl`, loop_wait becomes 1 s and
    /// retry_timeout `(ttl - 1 s) / 2`; else, if `loop_wait + 2*retry_timeout > ttl`, loop_wait
    /// becomes `ttl - 2*retry_timeout`. The result still goes through [`Timing::checked`].
    pub fn adjusted(self) -> (Timing, Vec<String>) {
        let mut t = self;
        let mut notes = Vec::new();
        let s = |ms: u64| format!("{} s", ms as f64 / 1000.0);
        for (key, value, floor) in [
            ("ttl", &mut t.ttl_ms, Self::MIN_TTL_MS),
            ("loop_wait", &mut t.loop_wait_ms, Self::MIN_LOOP_WAIT_MS),
            ("retry_timeout", &mut t.retry_timeout_ms, Self::MIN_RETRY_TIMEOUT_MS),
        ] {
            if *value < floor {
                notes.push(format!("`{key}`: {} is below Shield's minimum; adjusted to {}", s(*value), s(floor)));
                *value = floor;
            }
        }
        // In u128, so that no u64 values overflow.
        let twice_retry = 2 * u128::from(t.retry_timeout_ms);
        let min_loop = Self::ADJUSTED_LOOP_WAIT_MS;
        if u128::from(min_loop) + twice_retry > u128::from(t.ttl_ms) {
            // Patroni divides whole seconds; so does Shield once the result is a second or more.
            let retry = match (t.ttl_ms - min_loop) / 2 {
                r if r >= 1_000 => r / 1_000 * 1_000,
                r => r,
            };
            notes.push(format!(
                "`loop_wait + 2*retry_timeout <= ttl` is broken (ttl {}): loop_wait adjusted from {} to {} and \
                 retry_timeout from {} to {}, as Patroni does",
                s(t.ttl_ms),
                s(t.loop_wait_ms),
                s(min_loop),
                s(t.retry_timeout_ms),
                s(retry)
            ));
            t.loop_wait_ms = min_loop;
            t.retry_timeout_ms = retry;
        } else if u128::from(t.loop_wait_ms) + twice_retry > u128::from(t.ttl_ms) {
            let lw = t.ttl_ms - 2 * t.retry_timeout_ms;
            notes.push(format!(
                "`loop_wait + 2*retry_timeout <= ttl` is broken (ttl {}, retry_timeout {}): loop_wait adjusted \
                 from {} to {}, as Patroni does",
                s(t.ttl_ms),
                s(t.retry_timeout_ms),
                s(t.loop_wait_ms),
                s(lw)
            ));
            t.loop_wait_ms = lw;
        }
        (t, notes)
    }

    /// Checks the rule `loop_wait + 2*retry_timeout <= ttl` (Patroni's) and that the fencing
    /// deadline leaves room for at least one renewal per cycle. A broken rule is an error here; a
    /// config file's `bootstrap.dcs` goes through [`Timing::adjusted`] first, as Patroni adjusts.
    pub fn checked(self) -> Result<Timing, ConfigError> {
        if self.ttl_ms < Self::MIN_TTL_MS {
            return Err(bad("ttl", format!("{} ms is below the minimum of 2 s", self.ttl_ms)));
        }
        if self.loop_wait_ms < Self::MIN_LOOP_WAIT_MS {
            return Err(bad("loop_wait", "below the minimum of 0.1 s"));
        }
        if self.retry_timeout_ms < Self::MIN_RETRY_TIMEOUT_MS {
            return Err(bad("retry_timeout", "below the minimum of 0.2 s"));
        }
        // In u128, so that no u64 values overflow: a sum past u64::MAX exceeds any ttl.
        let busy_ms = u128::from(self.loop_wait_ms) + 2 * u128::from(self.retry_timeout_ms);
        if busy_ms > u128::from(self.ttl_ms) {
            return Err(ConfigError::UnsafeTiming(format!(
                "loop_wait ({} ms) + 2 * retry_timeout ({} ms) must not exceed ttl ({} ms)",
                self.loop_wait_ms, self.retry_timeout_ms, self.ttl_ms
            )));
        }
        if self.fence_after_ms() <= self.loop_wait_ms {
            return Err(ConfigError::UnsafeTiming(format!(
                "ttl ({} ms) minus fence_margin ({} ms) and clock drift leaves no room for a renewal \
                 every loop_wait ({} ms)",
                self.ttl_ms, self.fence_margin_ms, self.loop_wait_ms
            )));
        }
        Ok(self)
    }

    /// How long after sending a renewal that succeeded the primary may keep running: `ttl` shrunk
    /// by the maximum drift, minus `fence_margin`. Because it is counted from the *send* time, the
    /// lease cannot expire at the DCS before this point has passed on the local clock.
    pub fn fence_after_ms(&self) -> u64 {
        self.ttl_ms.saturating_sub(self.drift_ms()).saturating_sub(self.fence_margin_ms)
    }

    /// The most a ttl can shrink by clock-rate drift: `ttl * MAX_DRIFT_PPM / 1e6`, rounded down.
    pub fn drift_ms(&self) -> u64 {
        // In u128, so that no ttl overflows. The quotient is at most ttl; should it not fit, the
        // whole ttl counts as drift, which only moves deadlines earlier.
        let drift = u128::from(self.ttl_ms) * u128::from(Self::MAX_DRIFT_PPM) / 1_000_000;
        u64::try_from(drift).unwrap_or(self.ttl_ms)
    }

    /// How long the driver waits for the database's status each cycle: `retry_timeout`, the
    /// bound of every call the loop makes. The status is read alongside the DCS, so a status that
    /// does not answer delays the next renewal no more than a slow DCS read may; it is then
    /// reported unknown ([`crate::DbStatus::unanswered`]) and asked again the next cycle.
    pub fn status_timeout_ms(&self) -> u64 {
        self.retry_timeout_ms
    }
}
