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

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub(crate) mod postgresql;
#[cfg(test)]
mod tests;
mod timing;

pub use postgresql::{LocalPg, PgDynamic, RewindPolicy};
pub use timing::Timing;

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

pub(crate) fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::BadValue { key: key.to_owned(), problem: problem.into() }
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
pub(crate) struct Reader<'a> {
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

pub(crate) fn expect_object(key: &str, v: Value) -> Result<Map<String, Value>, ConfigError> {
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
