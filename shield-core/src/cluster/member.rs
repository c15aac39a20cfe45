//! A member key: Patroni's member JSON (`MemberData`), its role and its tags.

use crate::types::{Lsn, MemberName, Revision, Timeline};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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
