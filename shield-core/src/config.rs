//! The dynamic cluster configuration: the JSON stored in the DCS `config` key, with Patroni's keys.
//!
//! [`DynamicConfig::from_json`] parses that JSON into checked types and names the key of every
//! problem. Keys Shield does not interpret (`slots`, `standby_cluster`, ...) are kept verbatim in
//! [`DynamicConfig::other`] so that writing the config back never loses them.
//!
//! # Shield's defaults, and why
//!
//! | key | Shield | Patroni | why |
//! |---|---|---|---|
//! | `ttl` | 4 s | 30 s | A dead primary's lease expires `ttl` after its last renewal; this is the floor of the node-crash RTO. The simulator (daemon pauses up to 1.5 s, DCS stalls up to 2 s, 1% clock drift) shows no needless failover at 4 s. |
//! | `loop_wait` | 1 s | 10 s | One cycle a second keeps three renewal attempts inside every lease. |
//! | `retry_timeout` | 1.5 s | 10 s | Bounds every DCS call. `loop_wait + 2*retry_timeout <= ttl` holds (1 + 3 = 4). |
//! | `fence_margin` | 0.75 s | – | Shield's own. The primary fences itself `ttl - fence_margin` after the last successful renewal was *sent*. Covers demote time and clock-rate drift (see [`Timing::fence_after_ms`]). |
//! | `maximum_lag_on_failover` | 1 MiB | 1 MiB | Same as Patroni. |
//! | `primary_start_timeout` | 30 s | 300 s | A crashed primary gets 30 s to restart in place before the lock is released; a primary whose status query does not answer keeps the lock as long (at least `ttl`, [`DynamicConfig::status_unknown_timeout_ms`]). |
//!
//! Patroni's minimums (ttl 20, loop_wait 1, retry_timeout 3) are not enforced, because Shield's
//! fencing is counted from the send time of the last successful renewal rather than from
//! `retry_timeout` alone. Shield's own floors are ttl 2 s, loop_wait 0.1 s, retry_timeout 0.2 s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why a dynamic config could not be used. Every variant names the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The whole value is not a JSON object.
    #[error("dynamic config is not a JSON object: {0}")]
    NotAnObject(String),
    /// A key has a value of the wrong type or out of range.
    #[error("config key `{key}`: {problem}")]
    BadValue {
        /// Dotted path of the key, e.g. `postgresql.use_pg_rewind`.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The timing rule that makes fencing safe is broken.
    #[error("config: {0}")]
    UnsafeTiming(String),
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::BadValue { key: key.to_owned(), problem: problem.into() }
}

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

/// The part of `postgresql` in the dynamic config that Shield interprets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PgDynamic {
    /// `postgresql.use_pg_rewind`.
    pub use_pg_rewind: bool,
    /// `postgresql.use_slots` (default true).
    pub use_slots: bool,
    /// `postgresql.remove_data_directory_on_rewind_failure`.
    pub remove_data_directory_on_rewind_failure: bool,
    /// `postgresql.remove_data_directory_on_diverged_timelines`.
    pub remove_data_directory_on_diverged_timelines: bool,
    /// `postgresql.parameters`, verbatim.
    pub parameters: BTreeMap<String, Value>,
    /// `postgresql.pg_hba`, if given.
    pub pg_hba: Option<Vec<String>>,
}

/// The node file's own `postgresql` settings that Patroni lets win over the dynamic config:
/// Patroni builds its effective config from the dynamic one and then overwrites each
/// `postgresql` key the local file sets (all but `use_slots`, which is cluster-wide, and
/// `parameters`, which are merged). A key the node file leaves out (`None`) takes the cluster's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalPg {
    /// `postgresql.use_pg_rewind` in the node file.
    pub use_pg_rewind: Option<bool>,
    /// `postgresql.remove_data_directory_on_rewind_failure` in the node file.
    pub remove_data_directory_on_rewind_failure: Option<bool>,
    /// `postgresql.remove_data_directory_on_diverged_timelines` in the node file.
    pub remove_data_directory_on_diverged_timelines: Option<bool>,
}

/// What a replica whose timeline diverged may do, after the node file and the cluster config
/// are combined (see [`LocalPg`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RewindPolicy {
    /// Run pg_rewind.
    pub use_pg_rewind: bool,
    /// Wipe the data directory (and clone again) when pg_rewind failed.
    pub remove_data_directory_on_rewind_failure: bool,
    /// Wipe the data directory when the timeline diverged (and pg_rewind is off or failed).
    pub remove_data_directory_on_diverged_timelines: bool,
}

impl LocalPg {
    /// The node file's values where it sets them, the cluster config's `pg` otherwise.
    pub fn over(&self, pg: &PgDynamic) -> RewindPolicy {
        RewindPolicy {
            use_pg_rewind: self.use_pg_rewind.unwrap_or(pg.use_pg_rewind),
            remove_data_directory_on_rewind_failure: self
                .remove_data_directory_on_rewind_failure
                .unwrap_or(pg.remove_data_directory_on_rewind_failure),
            remove_data_directory_on_diverged_timelines: self
                .remove_data_directory_on_diverged_timelines
                .unwrap_or(pg.remove_data_directory_on_diverged_timelines),
        }
    }
}

/// The dynamic cluster config (the DCS `config` key), parsed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// ttl, loop_wait, retry_timeout and fence_margin.
    pub timing: Timing,
    /// `maximum_lag_on_failover`, bytes.
    pub maximum_lag_on_failover_bytes: u64,
    /// `maximum_lag_on_syncnode`, bytes; `None` when -1 (off).
    pub maximum_lag_on_syncnode_bytes: Option<u64>,
    /// `primary_start_timeout` (or the legacy `master_start_timeout`), ms. 0 = fail over at once.
    pub primary_start_timeout_ms: u64,
    /// `primary_stop_timeout`, ms; 0 = off.
    pub primary_stop_timeout_ms: u64,
    /// `pause`: maintenance mode.
    pub pause: bool,
    /// `synchronous_mode`.
    pub synchronous_mode: bool,
    /// `synchronous_mode_strict`.
    pub synchronous_mode_strict: bool,
    /// `synchronous_node_count` (≥ 1).
    pub synchronous_node_count: u32,
    /// `check_timeline`.
    pub check_timeline: bool,
    /// `failsafe_mode` (parsed and kept; Shield does not act on it yet).
    pub failsafe_mode: bool,
    /// `max_timelines_history`; 0 keeps all.
    pub max_timelines_history: u32,
    /// `member_slots_ttl`, ms (Patroni 4; default 30 min): how long every node keeps the slot of a
    /// member that went away; 0 keeps member slots on the leader only, as Patroni 3 did.
    #[serde(default = "default_member_slots_ttl")]
    pub member_slots_ttl_ms: u64,
    /// The interpreted part of `postgresql`.
    pub postgresql: PgDynamic,
    /// Every other top-level key, verbatim, and the uninterpreted keys of `postgresql`
    /// (under `"postgresql"`), so nothing is lost on write-back.
    pub other: BTreeMap<String, Value>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig {
            timing: Timing::default(),
            maximum_lag_on_failover_bytes: 1_048_576,
            maximum_lag_on_syncnode_bytes: None,
            primary_start_timeout_ms: 30_000,
            primary_stop_timeout_ms: 0,
            pause: false,
            synchronous_mode: false,
            synchronous_mode_strict: false,
            synchronous_node_count: 1,
            check_timeline: false,
            failsafe_mode: false,
            max_timelines_history: 0,
            member_slots_ttl_ms: default_member_slots_ttl(),
            postgresql: PgDynamic { use_slots: true, ..PgDynamic::default() },
            other: BTreeMap::new(),
        }
    }
}

fn default_member_slots_ttl() -> u64 {
    1_800_000
}

/// Reads keys out of a JSON object, removing each one it reads, so what is left is "other".
struct Reader<'a> {
    map: &'a mut Map<String, Value>,
    prefix: &'static str,
}

impl Reader<'_> {
    fn path(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.remove(key).filter(|v| !v.is_null())
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.take(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(b),
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Ok(true),
                "false" | "off" | "no" | "0" => Ok(false),
                _ => Err(bad(&self.path(key), format!("expected a boolean, found {s:?}"))),
            },
            Some(v) => Err(bad(&self.path(key), format!("expected a boolean, found {v}"))),
        }
    }

    fn number(&mut self, key: &str) -> Result<Option<f64>, ConfigError> {
        let path = self.path(key);
        match self.take(key) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                n.as_f64().filter(|f| f.is_finite()).map(Some).ok_or_else(|| bad(&path, "not a finite number"))
            }
            Some(Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Ok(Some(f)),
                _ => Err(bad(&path, format!("expected a number, found {s:?}"))),
            },
            Some(v) => Err(bad(&path, format!("expected a number, found {v}"))),
        }
    }

    /// Seconds (integer or fractional) to milliseconds.
    fn seconds_ms(&mut self, key: &str, default_ms: u64) -> Result<u64, ConfigError> {
        match self.number(key)? {
            None => Ok(default_ms),
            Some(s) if s < 0.0 => Err(bad(&self.path(key), "must not be negative")),
            Some(s) if s > 86_400.0 * 365.0 => Err(bad(&self.path(key), "is longer than a year")),
            Some(s) => Ok((s * 1000.0).round() as u64),
        }
    }

    /// A duration in seconds, or a string with Patroni's units (`30min`, `1h`, `500ms`, `1d`).
    fn duration_ms(&mut self, key: &str, default_ms: u64) -> Result<u64, ConfigError> {
        if let Some(Value::String(text)) = self.map.get(key) {
            let t = text.trim().to_owned();
            let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
            let (num, unit) = t.split_at(split);
            let factor_ms = match unit.trim() {
                "ms" => Some(1.0),
                "s" => Some(1_000.0),
                "min" => Some(60_000.0),
                "h" => Some(3_600_000.0),
                "d" => Some(86_400_000.0),
                _ => None,
            };
            if let (Ok(n), Some(f)) = (num.parse::<f64>(), factor_ms) {
                self.take(key);
                if !n.is_finite() || n * f > 86_400_000.0 * 365.0 {
                    return Err(bad(&self.path(key), "is longer than a year"));
                }
                return Ok((n * f).round() as u64);
            }
        }
        self.seconds_ms(key, default_ms)
    }

    fn int(&mut self, key: &str, min: i64, max: i64) -> Result<Option<i64>, ConfigError> {
        match self.number(key)? {
            None => Ok(None),
            Some(f) if f.fract() != 0.0 => Err(bad(&self.path(key), "expected a whole number")),
            Some(f) if f < min as f64 || f > max as f64 => {
                Err(bad(&self.path(key), format!("must be between {min} and {max}")))
            }
            Some(f) => Ok(Some(f as i64)),
        }
    }
}

fn expect_object(key: &str, v: Value) -> Result<Map<String, Value>, ConfigError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(bad(key, format!("expected an object, found {other}"))),
    }
}

impl DynamicConfig {
    /// How long a lock holder whose database does not answer its status query keeps the lock
    /// before the database counts as hung: `primary_start_timeout` (Patroni's "time a primary is
    /// allowed to recover from failures before failover"), but never less than `ttl`, the time a
    /// dead host's lock takes to expire anyway, so that `primary_start_timeout: 0` (fail over at
    /// once after a crash) does not fail over on one slow query.
    pub fn status_unknown_timeout_ms(&self) -> u64 {
        self.primary_start_timeout_ms.max(self.timing.ttl_ms)
    }

    /// Parses the DCS `config` value. An empty string or `{}` gives the defaults.
    pub fn from_json_text(text: &str) -> Result<DynamicConfig, ConfigError> {
        if text.trim().is_empty() {
            return Ok(DynamicConfig::default());
        }
        let v: Value = serde_json::from_str(text).map_err(|e| ConfigError::NotAnObject(e.to_string()))?;
        DynamicConfig::from_json(v)
    }

    /// Parses an already decoded JSON value. Timings that break the rules are an error.
    pub fn from_json(v: Value) -> Result<DynamicConfig, ConfigError> {
        Self::parse(v, false).map(|(c, _)| c)
    }

    /// Parses an already decoded JSON value, adjusting timings that break Patroni's rule as
    /// Patroni does ([`Timing::adjusted`]); returns one message per adjustment.
    pub fn from_json_adjusting(v: Value) -> Result<(DynamicConfig, Vec<String>), ConfigError> {
        Self::parse(v, true)
    }

    fn parse(v: Value, adjust: bool) -> Result<(DynamicConfig, Vec<String>), ConfigError> {
        let Value::Object(mut map) = v else {
            return Err(ConfigError::NotAnObject(format!("found {v}")));
        };
        let d = DynamicConfig::default();
        let mut r = Reader { map: &mut map, prefix: "" };
        let timing = Timing {
            ttl_ms: r.seconds_ms("ttl", d.timing.ttl_ms)?,
            loop_wait_ms: r.seconds_ms("loop_wait", d.timing.loop_wait_ms)?,
            retry_timeout_ms: r.seconds_ms("retry_timeout", d.timing.retry_timeout_ms)?,
            fence_margin_ms: r.seconds_ms("fence_margin", d.timing.fence_margin_ms)?,
        };
        let (timing, notes) = if adjust { timing.adjusted() } else { (timing, Vec::new()) };
        let timing = timing.checked()?;
        // Patroni 4's quorum commit: its `sync` key lists more standbys than acknowledge each
        // commit, so treating it as plain `on` could promote one that missed acknowledged commits.
        if r.map.get("synchronous_mode").and_then(Value::as_str).is_some_and(|s| s.eq_ignore_ascii_case("quorum")) {
            return Err(bad(
                "synchronous_mode",
                "`quorum` (quorum commit) is not supported by Shield: a failover could promote a standby \
                 that missed commits the others acknowledged; use `on` or `off`",
            ));
        }
        let lag = r.int("maximum_lag_on_failover", 0, i64::MAX)?;
        let sync_lag = r.int("maximum_lag_on_syncnode", -1, i64::MAX)?;
        let start_timeout = match r.seconds_ms("primary_start_timeout", u64::MAX)? {
            u64::MAX => r.seconds_ms("master_start_timeout", d.primary_start_timeout_ms)?,
            v => {
                r.take("master_start_timeout");
                v
            }
        };
        let stop_timeout = match r.seconds_ms("primary_stop_timeout", u64::MAX)? {
            u64::MAX => r.seconds_ms("master_stop_timeout", 0)?,
            v => {
                r.take("master_stop_timeout");
                v
            }
        };
        let mut cfg = DynamicConfig {
            timing,
            maximum_lag_on_failover_bytes: lag.map_or(d.maximum_lag_on_failover_bytes, |l| l as u64),
            maximum_lag_on_syncnode_bytes: sync_lag.and_then(|l| u64::try_from(l).ok()),
            primary_start_timeout_ms: start_timeout,
            primary_stop_timeout_ms: stop_timeout,
            pause: r.bool("pause", false)?,
            synchronous_mode: r.bool("synchronous_mode", false)?,
            synchronous_mode_strict: r.bool("synchronous_mode_strict", false)?,
            synchronous_node_count: r.int("synchronous_node_count", 1, 1024)?.unwrap_or(1) as u32,
            check_timeline: r.bool("check_timeline", false)?,
            failsafe_mode: r.bool("failsafe_mode", false)?,
            max_timelines_history: r.int("max_timelines_history", 0, i64::from(u32::MAX))?.unwrap_or(0) as u32,
            member_slots_ttl_ms: r.duration_ms("member_slots_ttl", d.member_slots_ttl_ms)?,
            postgresql: PgDynamic { use_slots: true, ..PgDynamic::default() },
            other: BTreeMap::new(),
        };
        if let Some(pg) = map.remove("postgresql").filter(|v| !v.is_null()) {
            let mut pg = expect_object("postgresql", pg)?;
            cfg.postgresql = PgDynamic::from_map(&mut pg)?;
            if !pg.is_empty() {
                cfg.other.insert("postgresql".to_owned(), Value::Object(pg));
            }
        }
        cfg.other.extend(map);
        Ok((cfg, notes))
    }

    /// The JSON written to the DCS: Patroni's keys in seconds, plus everything kept in `other`.
    pub fn to_json(&self) -> Value {
        let secs = |ms: u64| -> Value {
            if ms.is_multiple_of(1000) {
                Value::from(ms / 1000)
            } else {
                Value::from(ms as f64 / 1000.0)
            }
        };
        let mut m = Map::new();
        for (k, v) in &self.other {
            if k != "postgresql" {
                m.insert(k.clone(), v.clone());
            }
        }
        m.insert("ttl".into(), secs(self.timing.ttl_ms));
        m.insert("loop_wait".into(), secs(self.timing.loop_wait_ms));
        m.insert("retry_timeout".into(), secs(self.timing.retry_timeout_ms));
        m.insert("fence_margin".into(), secs(self.timing.fence_margin_ms));
        m.insert("maximum_lag_on_failover".into(), self.maximum_lag_on_failover_bytes.into());
        if let Some(l) = self.maximum_lag_on_syncnode_bytes {
            m.insert("maximum_lag_on_syncnode".into(), l.into());
        }
        m.insert("primary_start_timeout".into(), secs(self.primary_start_timeout_ms));
        if self.primary_stop_timeout_ms > 0 {
            m.insert("primary_stop_timeout".into(), secs(self.primary_stop_timeout_ms));
        }
        for (k, v) in [
            ("pause", self.pause),
            ("synchronous_mode", self.synchronous_mode),
            ("synchronous_mode_strict", self.synchronous_mode_strict),
            ("check_timeline", self.check_timeline),
            ("failsafe_mode", self.failsafe_mode),
        ] {
            if v {
                m.insert(k.into(), Value::Bool(true));
            }
        }
        if self.synchronous_node_count != 1 {
            m.insert("synchronous_node_count".into(), self.synchronous_node_count.into());
        }
        if self.max_timelines_history != 0 {
            m.insert("max_timelines_history".into(), self.max_timelines_history.into());
        }
        if self.member_slots_ttl_ms != default_member_slots_ttl() {
            m.insert("member_slots_ttl".into(), secs(self.member_slots_ttl_ms));
        }
        m.insert("postgresql".into(), self.postgresql.to_json(self.other.get("postgresql")));
        Value::Object(m)
    }
}

impl PgDynamic {
    fn from_map(pg: &mut Map<String, Value>) -> Result<PgDynamic, ConfigError> {
        let mut r = Reader { map: pg, prefix: "postgresql." };
        let out = PgDynamic {
            use_pg_rewind: r.bool("use_pg_rewind", false)?,
            use_slots: r.bool("use_slots", true)?,
            remove_data_directory_on_rewind_failure: r.bool("remove_data_directory_on_rewind_failure", false)?,
            remove_data_directory_on_diverged_timelines: r
                .bool("remove_data_directory_on_diverged_timelines", false)?,
            parameters: match r.take("parameters") {
                None => BTreeMap::new(),
                Some(v) => expect_object("postgresql.parameters", v)?.into_iter().collect(),
            },
            pg_hba: match r.take("pg_hba") {
                None => None,
                Some(Value::Array(lines)) => Some(
                    lines
                        .into_iter()
                        .map(|l| match l {
                            Value::String(s) => Ok(s),
                            other => Err(bad("postgresql.pg_hba", format!("expected strings, found {other}"))),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                Some(v) => return Err(bad("postgresql.pg_hba", format!("expected a list, found {v}"))),
            },
        };
        Ok(out)
    }

    fn to_json(&self, extra: Option<&Value>) -> Value {
        let mut m = match extra {
            Some(Value::Object(e)) => e.clone(),
            _ => Map::new(),
        };
        m.insert("use_pg_rewind".into(), self.use_pg_rewind.into());
        if !self.use_slots {
            m.insert("use_slots".into(), false.into());
        }
        if self.remove_data_directory_on_rewind_failure {
            m.insert("remove_data_directory_on_rewind_failure".into(), true.into());
        }
        if self.remove_data_directory_on_diverged_timelines {
            m.insert("remove_data_directory_on_diverged_timelines".into(), true.into());
        }
        if !self.parameters.is_empty() {
            let p: Map<String, Value> = self.parameters.clone().into_iter().collect();
            m.insert("parameters".into(), Value::Object(p));
        }
        if let Some(h) = &self.pg_hba {
            m.insert("pg_hba".into(), h.clone().into());
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn patroni_defaults_parse() {
        let c = DynamicConfig::from_json(json!({
            "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "maximum_lag_on_failover": 1048576,
            "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 100}},
            "slots": {"s1": {"type": "physical"}}
        }))
        .expect("valid");
        assert_eq!(c.timing.ttl_ms, 30_000);
        assert!(c.postgresql.use_pg_rewind);
        assert_eq!(c.postgresql.parameters["max_connections"], json!(100));
        assert_eq!(c.other["slots"], json!({"s1": {"type": "physical"}}));
        let back = DynamicConfig::from_json(c.to_json()).expect("round trip");
        assert_eq!(back, c);
    }

    #[test]
    fn errors_name_the_key() {
        let e = DynamicConfig::from_json(json!({"ttl": "soon"})).expect_err("bad");
        assert_eq!(e.to_string(), "config key `ttl`: expected a number, found \"soon\"");
        let e = DynamicConfig::from_json(json!({"postgresql": {"use_pg_rewind": 3}})).expect_err("bad");
        assert!(e.to_string().contains("postgresql.use_pg_rewind"), "{e}");
        let e = DynamicConfig::from_json(json!({"ttl": 5, "loop_wait": 2, "retry_timeout": 2})).expect_err("unsafe");
        assert!(matches!(e, ConfigError::UnsafeTiming(_)), "{e}");
        assert!(DynamicConfig::from_json(json!([1])).is_err());
        let c = DynamicConfig::from_json(json!({"member_slots_ttl": "30min"})).expect("units, as Patroni");
        assert_eq!(c.member_slots_ttl_ms, 1_800_000);
        assert_eq!(DynamicConfig::from_json(json!({"member_slots_ttl": 0})).expect("zero").member_slots_ttl_ms, 0);
        assert!(DynamicConfig::from_json(json!({"member_slots_ttl": "soon"})).is_err());
        assert!(DynamicConfig::from_json_text("{nope").is_err());
        let e = DynamicConfig::from_json(json!({"ttl": -1})).expect_err("negative");
        assert!(e.to_string().contains("negative"));
    }

    #[test]
    fn timings_are_adjusted_as_patroni_does() {
        let t = |ttl: u64, lw: u64, rt: u64| Timing {
            ttl_ms: ttl,
            loop_wait_ms: lw,
            retry_timeout_ms: rt,
            ..Timing::default()
        };
        // 20/10/10: 1 + 2*10 > 20, so loop_wait 1 and retry_timeout (20 - 1) / 2.
        let (a, notes) = t(20_000, 10_000, 10_000).adjusted();
        assert_eq!((a.ttl_ms, a.loop_wait_ms, a.retry_timeout_ms), (20_000, 1_000, 9_000));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("loop_wait adjusted from 10 s to 1 s and retry_timeout from 10 s to 9 s"),
            "{notes:?}"
        );
        // 30/25/5: only loop_wait shrinks, to ttl - 2*retry_timeout.
        let (a, notes) = t(30_000, 25_000, 5_000).adjusted();
        assert_eq!((a.loop_wait_ms, a.retry_timeout_ms), (20_000, 5_000));
        assert!(notes[0].contains("loop_wait adjusted from 25 s to 20 s"), "{notes:?}");
        // A short ttl keeps the fraction: (2.5 - 1) / 2.
        assert_eq!(t(2_500, 1_000, 1_000).adjusted().0.retry_timeout_ms, 750);
        // Within the rule: nothing changes.
        assert_eq!(t(30_000, 10_000, 10_000).adjusted(), (t(30_000, 10_000, 10_000), Vec::new()));
        // Below the floors: raised, then the rule.
        let (a, notes) = t(1_000, 50, 100).adjusted();
        assert_eq!((a.ttl_ms, a.loop_wait_ms, a.retry_timeout_ms), (2_000, 100, 200));
        assert_eq!(notes.len(), 3, "{notes:?}");
        // Every adjusted timing passes the check (the fence margin is Shield's own and not adjusted).
        for (ttl, lw, rt) in
            [(2_000, 5_000, 5_000), (20_000, 10_000, 10_000), (5_000, 3_000, 3_000), (u64::MAX, u64::MAX, u64::MAX)]
        {
            let (a, _) = t(ttl, lw, rt).adjusted();
            a.checked().expect("adjusted timings are valid");
        }
        let (c, notes) =
            DynamicConfig::from_json_adjusting(json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10})).expect("ok");
        assert_eq!((c.timing.loop_wait_ms, c.timing.retry_timeout_ms, notes.len()), (1_000, 9_000, 1));
        assert!(DynamicConfig::from_json(json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 10})).is_err());
    }

    #[test]
    fn quorum_commit_is_refused_by_name() {
        for v in [json!("quorum"), json!("QUORUM")] {
            let e = DynamicConfig::from_json(json!({ "synchronous_mode": v })).expect_err("quorum");
            assert!(e.to_string().contains("`synchronous_mode`") && e.to_string().contains("quorum"), "{e}");
        }
        for v in [json!("on"), json!(true), json!("off")] {
            DynamicConfig::from_json(json!({ "synchronous_mode": v })).expect("on/off");
        }
    }

    #[test]
    fn legacy_master_start_timeout_is_read() {
        let c = DynamicConfig::from_json(json!({"master_start_timeout": 0})).expect("valid");
        assert_eq!(c.primary_start_timeout_ms, 0);
        assert!(!c.other.contains_key("master_start_timeout"));
    }

    #[test]
    fn fence_deadline_is_inside_the_lease() {
        let t = Timing::default().checked().expect("defaults are valid");
        assert!(t.fence_after_ms() < t.ttl_ms);
        assert!(t.fence_after_ms() > t.loop_wait_ms + t.retry_timeout_ms);
        assert_eq!(t.fence_after_ms(), 4_000 - 40 - 750);
    }
}
