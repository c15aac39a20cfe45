//! The cluster-wide values: `failover`, `sync`, `history` and `status`, with their parsers.

use crate::types::{Lsn, MemberName, Revision, Timeline};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The `failover` key: a switchover or failover request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRequest {
    /// The primary to move away from (switchover), if named.
    pub leader: Option<MemberName>,
    /// The candidate to promote, if named.
    pub member: Option<MemberName>,
    /// When to act, as milliseconds since the Unix epoch, and the original text.
    pub scheduled_at: Option<(i64, String)>,
    /// The key's mod revision, for compare-and-set clearing.
    pub revision: Revision,
}

impl FailoverRequest {
    /// Parses Patroni's JSON (or the legacy `leader:candidate` string). `{}` and empty values
    /// mean "no request" and give `Ok(None)`.
    pub fn parse(raw: &[u8], revision: Revision) -> Result<Option<FailoverRequest>, String> {
        let text = std::str::from_utf8(raw).map_err(|_| "not UTF-8".to_owned())?.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let name = |s: &str| -> Result<Option<MemberName>, String> {
            if s.is_empty() {
                Ok(None)
            } else {
                MemberName::new(s).map(Some).map_err(|e| e.to_string())
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            let (l, m) = text.split_once(':').ok_or_else(|| format!("not JSON nor leader:member: {text:?}"))?;
            return Ok(Some(FailoverRequest { leader: name(l)?, member: name(m)?, scheduled_at: None, revision }));
        };
        let Value::Object(m) = v else { return Err("not a JSON object".to_owned()) };
        let field = |k: &str| -> Result<Option<MemberName>, String> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => name(s),
                Some(other) => Err(format!("`{k}` is not a string: {other}")),
            }
        };
        let leader = field("leader")?;
        let member = field("member")?;
        let scheduled_at = match m.get("scheduled_at") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some((parse_timestamp_ms(s)?, s.clone())),
            Some(other) => return Err(format!("`scheduled_at` is not a string: {other}")),
        };
        if leader.is_none() && member.is_none() {
            return Ok(None);
        }
        Ok(Some(FailoverRequest { leader, member, scheduled_at, revision }))
    }

    /// Patroni's JSON for this request.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(l) = &self.leader {
            m.insert("leader".into(), l.as_str().into());
        }
        if let Some(c) = &self.member {
            m.insert("member".into(), c.as_str().into());
        }
        if let Some((_, text)) = &self.scheduled_at {
            m.insert("scheduled_at".into(), text.as_str().into());
        }
        Value::Object(m)
    }
}

/// Parses an ISO 8601 / RFC 3339 timestamp with an offset into milliseconds since the epoch.
pub fn parse_timestamp_ms(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .or_else(|_| chrono::DateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("timestamp {s:?} is not ISO 8601 with a time zone: {e}"))
}

/// The `sync` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The leader that wrote it.
    pub leader: Option<MemberName>,
    /// The synchronous standbys, sorted.
    pub sync_standby: Vec<MemberName>,
    /// The key's mod revision.
    pub revision: Revision,
}

/// One line of the `history` key: `[timeline, switch_lsn, reason, timestamp?, new_leader?]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// The timeline that ended.
    pub timeline: Timeline,
    /// Where it ended.
    pub lsn: Lsn,
    /// Why.
    pub reason: String,
    /// When (ISO 8601), if recorded.
    pub timestamp: Option<String>,
    /// Who was promoted, if recorded.
    pub new_leader: Option<String>,
}

impl HistoryLine {
    pub(crate) fn from_json(v: &Value) -> Option<HistoryLine> {
        let a = v.as_array()?;
        Some(HistoryLine {
            timeline: Timeline(u32::try_from(a.first()?.as_u64()?).ok()?),
            lsn: Lsn(a.get(1)?.as_u64()?),
            reason: a.get(2).and_then(Value::as_str).unwrap_or_default().to_owned(),
            timestamp: a.get(3).and_then(Value::as_str).map(str::to_owned),
            new_leader: a.get(4).and_then(Value::as_str).map(str::to_owned),
        })
    }

    /// Patroni's list form.
    pub fn to_json(&self) -> Value {
        let mut a = vec![Value::from(self.timeline.0), Value::from(self.lsn.0), self.reason.as_str().into()];
        if let Some(t) = &self.timestamp {
            a.push(t.as_str().into());
            if let Some(l) = &self.new_leader {
                a.push(l.as_str().into());
            }
        }
        Value::Array(a)
    }
}

/// How far a `history` line's timeline may lead the newest timeline a member key shows, or its
/// place in the list ([`ClusterView::from_entries`] leaves out lines beyond).
pub const MAX_TIMELINE_LEAD: u32 = 16;

/// The `status` key: the leader's last known WAL position and slots.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The leader's WAL position.
    pub optime: Lsn,
    /// Slot positions.
    pub slots: BTreeMap<String, Lsn>,
    /// Member slot names every node keeps (Patroni 4's `retain_slots`): members seen within
    /// `member_slots_ttl`, so that a member that comes back finds its WAL still there.
    #[serde(default)]
    pub retain_slots: Vec<String>,
}

pub(crate) fn parse_sync(raw: &[u8], revision: Revision) -> Result<Option<SyncState>, String> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(m) = v else { return Err("not a JSON object".to_owned()) };
    let leader = m.get("leader").and_then(Value::as_str).and_then(|s| MemberName::new(s).ok());
    let mut sync_standby: Vec<MemberName> = match m.get("sync_standby") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => s.split(',').filter_map(|n| MemberName::new(n.trim()).ok()).collect(),
        Some(other) => return Err(format!("sync_standby is not a string: {other}")),
    };
    sync_standby.sort();
    Ok(Some(SyncState { leader, sync_standby, revision }))
}

pub(crate) fn parse_status(raw: &[u8]) -> Option<Status> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    // Patroni < 2.1 wrote a bare integer into optime/leader; accept a bare integer here too.
    if let Some(n) = v.as_u64() {
        return Some(Status { optime: Lsn(n), ..Status::default() });
    }
    let m = v.as_object()?;
    let optime = Lsn(m.get("optime")?.as_u64()?);
    let slots = m
        .get("slots")
        .and_then(Value::as_object)
        .map(|s| s.iter().filter_map(|(k, v)| Some((k.clone(), Lsn(v.as_u64()?)))).collect())
        .unwrap_or_default();
    // Patroni accepts a JSON list or a string holding one; anything else is no list.
    let retain_slots = match m.get("retain_slots") {
        Some(Value::String(s)) => serde_json::from_str::<Vec<Value>>(s).unwrap_or_default(),
        Some(Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let retain_slots = retain_slots.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect();
    Some(Status { optime, slots, retain_slots })
}

impl Status {
    /// Patroni's JSON.
    pub fn to_json(&self) -> Value {
        let slots: Map<String, Value> = self.slots.iter().map(|(k, v)| (k.clone(), v.0.into())).collect();
        let mut v = serde_json::json!({"optime": self.optime.0, "slots": slots});
        if !self.retain_slots.is_empty() {
            v["retain_slots"] = self.retain_slots.clone().into();
        }
        v
    }
}

impl SyncState {
    /// Patroni's JSON.
    pub fn to_json(&self) -> Value {
        let standby = if self.sync_standby.is_empty() {
            Value::Null
        } else {
            self.sync_standby.iter().map(MemberName::as_str).collect::<Vec<_>>().join(",").into()
        };
        serde_json::json!({"leader": self.leader.as_ref().map(MemberName::as_str), "sync_standby": standby})
    }
}
