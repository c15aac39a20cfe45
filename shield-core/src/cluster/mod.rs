//! [`ClusterView`]: an immutable snapshot of one cluster's keys in the DCS, in Patroni's model.
//!
//! Every DCS backend reads the cluster prefix into a list of [`KvEntry`] and calls
//! [`ClusterView::from_entries`], so the parsing of Patroni's value formats lives in one place.
//! A garbage value never hides the rest of the cluster: a member whose JSON is bad is shown with
//! state `unknown`, and every problem is listed in [`ClusterView::anomalies`].

use crate::config::DynamicConfig;
use crate::types::{Lsn, MemberName, Revision, SystemId, Timeline};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub(crate) mod member;
mod values;

use self::values::{parse_status, parse_sync};
pub use member::{Member, MemberData, MemberRole, Tags};
pub use values::{parse_timestamp_ms, FailoverRequest, HistoryLine, Status, SyncState, MAX_TIMELINE_LEAD};

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
    /// JSON object. The leader writes it with `failsafe_mode` on; `GET /failsafe` shows it.
    #[serde(default)]
    pub failsafe: Option<BTreeMap<String, Value>>,
    /// Every value that could not be parsed: `key: problem`. Shown to operators, never fatal.
    pub anomalies: Vec<String>,
}

impl ClusterView {
    /// The `failsafe` key as `{member: api_url}`: its entries whose value is a string (Patroni
    /// writes nothing else there). `None` when the key is absent or not a JSON object.
    pub fn failsafe_topology(&self) -> Option<BTreeMap<String, String>> {
        let f = self.failsafe.as_ref()?;
        Some(f.iter().filter_map(|(k, v)| v.as_str().map(|u| (k.clone(), u.to_owned()))).collect())
    }

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

#[cfg(test)]
mod tests;
