//! The `postgresql` section of the dynamic config, and the local `postgresql` switches that win
//! over it.

use super::{bad, expect_object, ConfigError, Reader};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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

impl PgDynamic {
    pub(crate) fn from_map(pg: &mut Map<String, Value>) -> Result<PgDynamic, ConfigError> {
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

    pub(crate) fn to_json(&self, extra: Option<&Value>) -> Value {
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
