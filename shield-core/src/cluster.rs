//! [`ClusterView`]: an immutable snapshot of one cluster's keys in the DCS, in Patroni's model.
//!
//! Every DCS backend reads the cluster prefix into a list of [`KvEntry`] and calls
//! [`ClusterView::from_entries`], so the parsing of Patroni's value formats lives in one place.
//! A garbage value never hides the rest of the cluster: a member whose JSON is bad is shown with
//! state `unknown`, and every problem is listed in [`ClusterView::anomalies`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::DynamicConfig;
use crate::types::{Lsn, MemberName, Revision, SystemId, Timeline};

/// One key under the cluster prefix, as a backend read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The key relative to `/<namespace>/<scope>/`, e.g. `members/node1`.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
    /// etcd mod_revision or Consul ModifyIndex.
    pub revision: Revision,
    /// The lease (etcd) or session (Consul) that holds the key, if any, as text.
    pub owner: Option<String>,
}

/// Node tags (the `tags` section), with Patroni's meanings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tags {
    /// Never promote this node.
    pub nofailover: bool,
    /// Exclude from `/replica` health checks.
    pub noloadbalance: bool,
    /// Other nodes may clone from this one.
    pub clonefrom: bool,
    /// Never a synchronous standby.
    pub nosync: bool,
    /// Does not stream (archive recovery only).
    pub nostream: bool,
    /// Higher wins at equal WAL position; 0 means never promote.
    pub failover_priority: Option<i64>,
    /// Stream from this member instead of the leader.
    pub replicatefrom: Option<MemberName>,
    /// Free-form custom tags, verbatim.
    pub other: BTreeMap<String, Value>,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "true" | "on" | "yes" | "1"),
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        _ => false,
    }
}

impl Tags {
    /// Reads tags leniently, as Patroni does: `"true"`, `true` and `1` are all true.
    pub fn from_json(v: &Value) -> Tags {
        let mut t = Tags::default();
        let Value::Object(m) = v else { return t };
        for (k, v) in m {
            match k.as_str() {
                "nofailover" => t.nofailover = truthy(v),
                "noloadbalance" => t.noloadbalance = truthy(v),
                "clonefrom" => t.clonefrom = truthy(v),
                "nosync" => t.nosync = truthy(v),
                "nostream" => t.nostream = truthy(v),
                "failover_priority" => {
                    t.failover_priority = v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                }
                "replicatefrom" => t.replicatefrom = v.as_str().and_then(|s| MemberName::new(s).ok()),
                _ => {
                    t.other.insert(k.clone(), v.clone());
                }
            }
        }
        t
    }

    /// Whether this node may ever be promoted: not `nofailover`, and a priority above 0 if set.
    /// (When both are set, `nofailover` wins, as in Patroni.)
    pub fn can_promote(&self) -> bool {
        !self.nofailover && self.failover_priority.is_none_or(|p| p > 0)
    }

    /// The priority used to break ties at equal WAL position (default 1).
    pub fn priority(&self) -> i64 {
        self.failover_priority.unwrap_or(1)
    }

    /// Only non-default tags, as Patroni writes them.
    pub fn to_json(&self) -> Value {
        let mut m: Map<String, Value> = self.other.clone().into_iter().collect();
        for (k, on) in [
            ("nofailover", self.nofailover),
            ("noloadbalance", self.noloadbalance),
            ("clonefrom", self.clonefrom),
            ("nosync", self.nosync),
            ("nostream", self.nostream),
        ] {
            if on {
                m.insert(k.into(), Value::Bool(true));
            }
        }
        if let Some(p) = self.failover_priority {
            m.insert("failover_priority".into(), p.into());
            m.entry("nofailover").or_insert(Value::Bool(self.nofailover));
        }
        if let Some(r) = &self.replicatefrom {
            m.insert("replicatefrom".into(), r.as_str().into());
        }
        Value::Object(m)
    }
}

/// A member's role as published in its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MemberRole {
    /// Running as the primary (`master` before Patroni 4.0).
    Primary,
    /// A streaming or archive-recovery replica.
    Replica,
    /// The leader of a standby cluster.
    StandbyLeader,
    /// No data yet.
    Uninitialized,
    /// Just demoted.
    Demoted,
    /// Just promoted.
    Promoted,
    /// A value Shield does not know.
    Unknown,
}

impl MemberRole {
    /// Parses Patroni's role strings, `master` included.
    pub fn parse(s: &str) -> MemberRole {
        match s {
            "master" | "primary" => MemberRole::Primary,
            "replica" => MemberRole::Replica,
            "standby_leader" => MemberRole::StandbyLeader,
            "uninitialized" => MemberRole::Uninitialized,
            "demoted" => MemberRole::Demoted,
            "promoted" => MemberRole::Promoted,
            _ => MemberRole::Unknown,
        }
    }

    /// The string written to the DCS (Patroni 4.0 spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberRole::Primary => "primary",
            MemberRole::Replica => "replica",
            MemberRole::StandbyLeader => "standby_leader",
            MemberRole::Uninitialized => "uninitialized",
            MemberRole::Demoted => "demoted",
            MemberRole::Promoted => "promoted",
            MemberRole::Unknown => "unknown",
        }
    }
}

/// The content of `members/<name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    /// `postgres://host:port/postgres`.
    pub conn_url: Option<String>,
    /// `http://host:8008/patroni`.
    pub api_url: Option<String>,
    /// Patroni's state string (`running`, `stopped`, `crashed`, `creating replica`, ...).
    pub state: String,
    /// The role.
    pub role: MemberRole,
    /// Write LSN on a primary; max(received, replayed) on a replica.
    pub xlog_location: Option<Lsn>,
    /// On a replica: the received (written) LSN, as Patroni 4.1 publishes it (`receive_lsn`).
    #[serde(default)]
    pub receive_lsn: Option<Lsn>,
    /// On a replica: the replayed LSN (`replay_lsn`).
    #[serde(default)]
    pub replay_lsn: Option<Lsn>,
    /// The database timeline.
    pub timeline: Option<Timeline>,
    /// `streaming` or `in archive recovery` on replicas.
    pub replication_state: Option<String>,
    /// The node's tags.
    pub tags: Tags,
    /// A postmaster-context parameter change awaits a restart.
    pub pending_restart: bool,
    /// `checkpoint_after_promote: false` until a new leader's first CHECKPOINT has run.
    pub checkpoint_after_promote: Option<bool>,
    /// The node is in pause mode.
    pub pause: bool,
    /// Shield or Patroni version string.
    pub version: Option<String>,
    /// Every other field, verbatim.
    pub other: BTreeMap<String, Value>,
}

impl MemberData {
    /// A member with the given role and state and nothing else.
    pub fn new(role: MemberRole, state: &str) -> MemberData {
        MemberData {
            conn_url: None,
            api_url: None,
            state: state.to_owned(),
            role,
            xlog_location: None,
            receive_lsn: None,
            replay_lsn: None,
            timeline: None,
            replication_state: None,
            tags: Tags::default(),
            pending_restart: false,
            checkpoint_after_promote: None,
            pause: false,
            version: None,
            other: BTreeMap::new(),
        }
    }

    /// Parses Patroni's member JSON. Wrong types in optional fields are dropped, not fatal; only
    /// a value that is not a JSON object at all is an error.
    pub fn from_json_bytes(raw: &[u8]) -> Result<MemberData, String> {
        let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(mut m) = v else {
            return Err("not a JSON object".to_owned());
        };
        let s = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let lsn = |v: Option<Value>| v.and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())).map(Lsn);
        Ok(MemberData {
            conn_url: s(&mut m, "conn_url"),
            api_url: s(&mut m, "api_url"),
            state: s(&mut m, "state").unwrap_or_else(|| "unknown".to_owned()),
            role: s(&mut m, "role").map_or(MemberRole::Unknown, |r| MemberRole::parse(&r)),
            xlog_location: lsn(m.remove("xlog_location")),
            receive_lsn: lsn(m.remove("receive_lsn")),
            replay_lsn: lsn(m.remove("replay_lsn")),
            timeline: m.remove("timeline").and_then(|v| v.as_u64()).and_then(|t| u32::try_from(t).ok()).map(Timeline),
            replication_state: s(&mut m, "replication_state"),
            tags: m.remove("tags").map(|t| Tags::from_json(&t)).unwrap_or_default(),
            pending_restart: m.remove("pending_restart").is_some_and(|v| truthy(&v)),
            checkpoint_after_promote: m.remove("checkpoint_after_promote").and_then(|v| v.as_bool()),
            pause: m.remove("pause").is_some_and(|v| truthy(&v)),
            version: s(&mut m, "version"),
            other: m.into_iter().collect(),
        })
    }

    /// Patroni's member JSON.
    pub fn to_json(&self) -> Value {
        let mut m: Map<String, Value> = self.other.clone().into_iter().collect();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        if let Some(u) = &self.conn_url {
            put("conn_url", u.as_str().into());
        }
        if let Some(u) = &self.api_url {
            put("api_url", u.as_str().into());
        }
        put("state", self.state.as_str().into());
        put("role", self.role.as_str().into());
        if let Some(v) = &self.version {
            put("version", v.as_str().into());
        }
        if let Some(x) = self.xlog_location {
            put("xlog_location", x.0.into());
        }
        if let Some(x) = self.receive_lsn {
            put("receive_lsn", x.0.into());
        }
        if let Some(x) = self.replay_lsn {
            put("replay_lsn", x.0.into());
        }
        if let Some(t) = self.timeline {
            put("timeline", t.0.into());
        }
        if let Some(r) = &self.replication_state {
            put("replication_state", r.as_str().into());
        }
        let tags = self.tags.to_json();
        if tags.as_object().is_some_and(|o| !o.is_empty()) {
            put("tags", tags);
        }
        if self.pending_restart {
            put("pending_restart", true.into());
        }
        if let Some(c) = self.checkpoint_after_promote {
            put("checkpoint_after_promote", c.into());
        }
        if self.pause {
            put("pause", true.into());
        }
        Value::Object(m)
    }
}

/// One member as seen in the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's name.
    pub name: MemberName,
    /// What it published. A value that could not be parsed shows as role unknown, state unknown.
    pub data: MemberData,
    /// The key's mod revision.
    pub revision: Revision,
    /// The lease or session holding the key.
    pub owner: Option<String>,
}

/// The `leader` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// The holder; `None` when the value is empty or not a valid member name.
    pub name: Option<MemberName>,
    /// The key's mod revision.
    pub revision: Revision,
    /// The lease or session holding the key.
    pub owner: Option<String>,
}

/// The `initialize` key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Initialize {
    /// `""`: a bootstrap race is under way.
    Racing,
    /// The cluster's system identifier.
    SystemId(SystemId),
    /// Something else.
    Invalid(String),
}

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
    fn from_json(v: &Value) -> Option<HistoryLine> {
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

/// An immutable snapshot of one cluster in the DCS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The revision the snapshot was read at.
    pub revision: Revision,
    /// The `initialize` key.
    pub initialize: Option<Initialize>,
    /// The parsed `config` key and its revision.
    pub config: Option<(DynamicConfig, Revision)>,
    /// The `config` key's JSON exactly as stored (when it parsed): what an edit changes, so that
    /// an edit writes back only what the operator changed, never Shield's defaults.
    #[serde(default)]
    pub config_json: Option<serde_json::Value>,
    /// The `leader` key.
    pub leader: Option<Leader>,
    /// Every parseable `members/<name>` key, by name.
    pub members: BTreeMap<MemberName, Member>,
    /// A pending switchover or failover.
    pub failover: Option<FailoverRequest>,
    /// Revision of the `failover` key even when it holds no request (for compare-and-set).
    pub failover_revision: Option<Revision>,
    /// The `sync` key.
    pub sync: Option<SyncState>,
    /// The `history` key.
    pub history: Vec<HistoryLine>,
    /// The `status` key.
    pub status: Option<Status>,
    /// The `status` key's revision, when it parsed.
    #[serde(default)]
    pub status_revision: Option<Revision>,
    /// The `failsafe` key (Patroni's failsafe topology, `{member: api_url}`), when it holds a
    /// JSON object. Shield does not write it; `GET /failsafe` shows it.
    #[serde(default)]
    pub failsafe: Option<BTreeMap<String, Value>>,
    /// Every value that could not be parsed: `key: problem`. Shown to operators, never fatal.
    pub anomalies: Vec<String>,
}

impl ClusterView {
    /// Builds a snapshot from the keys of one prefix read.
    pub fn from_entries(revision: Revision, entries: &[KvEntry]) -> ClusterView {
        let mut view = ClusterView { revision, ..ClusterView::default() };
        for e in entries {
            view.absorb(e);
        }
        view.drop_implausible_history();
        view
    }

    /// The rule for `history`: a line's timeline may be at most [`MAX_TIMELINE_LEAD`] above the
    /// higher of the newest timeline any member key shows and its own place in the list (a
    /// promotion adds one line and one timeline). A line beyond is an anomaly and left out: a
    /// huge timeline would make every promotion try to skip billions of ids (one placeholder
    /// file each) and the next id saturate at `u32::MAX`, so no failover could succeed.
    fn drop_implausible_history(&mut self) {
        let newest_member = self.members.values().filter_map(|m| m.data.timeline).map(|t| t.0).max().unwrap_or(0);
        let mut kept: Vec<HistoryLine> = Vec::with_capacity(self.history.len());
        for line in std::mem::take(&mut self.history) {
            let place = u32::try_from(kept.len()).unwrap_or(u32::MAX).saturating_add(1);
            let bound = newest_member.max(place).saturating_add(MAX_TIMELINE_LEAD);
            if line.timeline.0 > bound {
                self.anomalies.push(self_anomaly(
                    "history",
                    format!("timeline {} is implausible (above {bound}); line left out", line.timeline),
                ));
            } else {
                kept.push(line);
            }
        }
        self.history = kept;
    }

    fn absorb(&mut self, e: &KvEntry) {
        let text = String::from_utf8_lossy(&e.value);
        let anomaly = |problem: String| self_anomaly(&e.key, problem);
        match e.key.as_str() {
            "initialize" => {
                let t = text.trim();
                self.initialize = Some(if t.is_empty() {
                    Initialize::Racing
                } else {
                    t.parse().map_or_else(
                        |_| {
                            self.anomalies.push(anomaly(format!("not a system identifier: {t:?}")));
                            Initialize::Invalid(t.to_owned())
                        },
                        Initialize::SystemId,
                    )
                });
            }
            // Timings Patroni would adjust (20/10/10, written by a Patroni member or an operator)
            // are adjusted the same way, not refused: every member then runs the same timings.
            "config" => match (if text.trim().is_empty() {
                Ok(Value::Object(Map::new()))
            } else {
                serde_json::from_str::<Value>(&text)
            })
            .map_err(|e| crate::config::ConfigError::NotAnObject(e.to_string()))
            .and_then(DynamicConfig::from_json_adjusting)
            {
                Ok((c, _adjusted)) => {
                    self.config = Some((c, e.revision));
                    self.config_json = serde_json::from_str(&text).ok();
                }
                Err(err) => self.anomalies.push(anomaly(err.to_string())),
            },
            "leader" => {
                let name = MemberName::new(text.trim()).ok();
                if name.is_none() {
                    self.anomalies.push(anomaly(format!("not a member name: {text:?}")));
                }
                self.leader = Some(Leader { name, revision: e.revision, owner: e.owner.clone() });
            }
            "failover" => {
                self.failover_revision = Some(e.revision);
                match FailoverRequest::parse(&e.value, e.revision) {
                    Ok(r) => self.failover = r,
                    Err(err) => self.anomalies.push(anomaly(err)),
                }
            }
            "sync" => match parse_sync(&e.value, e.revision) {
                Ok(s) => self.sync = s,
                Err(err) => self.anomalies.push(anomaly(err)),
            },
            "history" => match serde_json::from_slice::<Value>(&e.value) {
                Ok(Value::Array(lines)) => {
                    for l in &lines {
                        match HistoryLine::from_json(l) {
                            Some(h) => self.history.push(h),
                            None => self.anomalies.push(anomaly(format!("bad history line {l}"))),
                        }
                    }
                }
                _ => self.anomalies.push(anomaly("not a JSON list".to_owned())),
            },
            "failsafe" => match serde_json::from_slice::<Value>(&e.value) {
                Ok(Value::Object(m)) => self.failsafe = Some(m.into_iter().collect()),
                _ => self.anomalies.push(anomaly("not a JSON object".to_owned())),
            },
            "status" => match parse_status(&e.value) {
                Some(s) => {
                    self.status = Some(s);
                    self.status_revision = Some(e.revision);
                }
                None => self.anomalies.push(anomaly("not {\"optime\": <int>, ...}".to_owned())),
            },
            key => {
                if let Some(name) = key.strip_prefix("members/") {
                    self.absorb_member(name, e);
                }
            }
        }
    }

    fn absorb_member(&mut self, name: &str, e: &KvEntry) {
        let Ok(name) = MemberName::new(name) else {
            self.anomalies.push(self_anomaly(&e.key, "invalid member name".to_owned()));
            return;
        };
        let data = MemberData::from_json_bytes(&e.value).unwrap_or_else(|err| {
            self.anomalies.push(self_anomaly(&e.key, err));
            MemberData::new(MemberRole::Unknown, "unknown")
        });
        let member = Member { name: name.clone(), data, revision: e.revision, owner: e.owner.clone() };
        self.members.insert(name, member);
    }

    /// The leader's name, if the key exists and holds a valid name.
    pub fn leader_name(&self) -> Option<&MemberName> {
        self.leader.as_ref().and_then(|l| l.name.as_ref())
    }

    /// Whether `name` holds the leader key.
    pub fn is_leader(&self, name: &MemberName) -> bool {
        self.leader_name() == Some(name)
    }

    /// Why resuming automatic failover (turning `pause` off) would be unsafe now, or `None` when
    /// it is safe: the leader key must be held by a member whose own key says it is running as
    /// primary (role `primary`/`master`, state `running`).
    ///
    /// In pause a primary cut off from the DCS keeps running (Patroni's meaning: DCS maintenance
    /// under pause costs no outage) while its leader key expires. Resuming then would let a
    /// replica win the leader race and promote while the old primary still accepts writes. The
    /// one rule shared by `shieldctl resume` and the REST API (`PATCH`/`PUT /config`); both let
    /// an operator force past it.
    pub fn resume_blocker(&self) -> Option<String> {
        let Some(leader) = &self.leader else {
            return Some("no member holds the leader key".to_owned());
        };
        let Some(name) = &leader.name else {
            return Some("the leader key names no valid member".to_owned());
        };
        let Some(m) = self.members.get(name) else {
            return Some(format!("the leader key is held by {name}, which has no member key"));
        };
        if m.data.role == MemberRole::Primary && m.data.state == "running" {
            return None;
        }
        Some(format!(
            "the leader key is held by {name}, whose member key says it is not running as primary (role: {}, state: {})",
            m.data.role.as_str(),
            m.data.state
        ))
    }

    /// The cluster's timeline: the last history line's timeline + 1, or 1.
    pub fn timeline(&self) -> Timeline {
        self.history.last().map_or(Timeline(1), |h| h.timeline.next())
    }

    /// The system id from `initialize`, if valid.
    pub fn system_id(&self) -> Option<SystemId> {
        match self.initialize {
            Some(Initialize::SystemId(s)) => Some(s),
            _ => None,
        }
    }

    /// The leader's WAL position from `status`, or from its member key.
    pub fn optime(&self) -> Option<Lsn> {
        self.status.as_ref().map(|s| s.optime).or_else(|| {
            let l = self.leader_name()?;
            self.members.get(l)?.data.xlog_location
        })
    }
}

fn self_anomaly(key: &str, problem: String) -> String {
    format!("{key}: {problem}")
}

fn parse_sync(raw: &[u8], revision: Revision) -> Result<Option<SyncState>, String> {
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

fn parse_status(raw: &[u8]) -> Option<Status> {
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

#[cfg(test)]
mod tests;
