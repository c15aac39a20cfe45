//! The operator in the simulated world: what `shieldctl` and the REST API do to a running
//! cluster (edit-config, pause and resume, switchover and failover, restart, reinitialize, tags),
//! drawn into the schedule like faults.

use crate::ports::Dcs;
use crate::sim::faults;
use crate::sim::world::{ready, Ev, World, EPOCH_MS};
use crate::types::MemberName;

const CONFIG_KEY: &str = "/service/sim/config";
const FAILOVER_KEY: &str = "/service/sim/failover";

impl World {
    /// Writes the operator's config, as `shieldctl edit-config` does (only once the cluster has
    /// one: the bootstrap winner writes the first; not while the DCS answers nobody).
    fn write_config(&mut self) {
        if self.net.dcs_down == 0 && self.store.get_raw(CONFIG_KEY).is_some() {
            self.store.put_raw(CONFIG_KEY, self.op_config.to_json().to_string().as_bytes());
            self.after_dcs_change();
        }
    }

    /// `edit-config -s ttl=… -s loop_wait=… -s retry_timeout=…`: the timings of
    /// `TIMING_CHANGES[which]`, or back to the schedule's own (`None`).
    pub(super) fn change_timing(&mut self, which: Option<u64>) {
        let timing = match which {
            Some(w) => {
                let (ttl, lw, rt) = faults::TIMING_CHANGES[w as usize % faults::TIMING_CHANGES.len()];
                crate::config::Timing { ttl_ms: ttl, loop_wait_ms: lw, retry_timeout_ms: rt, ..self.cfg.config.timing }
            }
            None => self.cfg.config.timing,
        };
        self.op_config.timing = timing;
        // A parameter changes with the timings, so that every node reloads its configuration.
        let generation = which.map_or(serde_json::Value::Null, serde_json::Value::from);
        self.op_config.postgresql.parameters.insert("shield.sim_timing".to_owned(), generation);
        self.write_config();
    }

    pub(super) fn set_pause(&mut self, pause: bool) {
        self.op_config.pause = pause;
        self.write_config();
    }

    /// `shieldctl resume` without `--force`: refused while the leader key is not held by a
    /// member running as primary; the operator tries again a second later.
    pub(super) fn try_resume(&mut self) {
        if !self.op_config.pause {
            return;
        }
        if self.resume_retrying {
            return;
        }
        if self.net.dcs_down > 0 {
            // shieldctl cannot reach the DCS either: try again later.
            self.resume_retrying = true;
            self.at(self.now + 1_000, Ev::TryResume);
            return;
        }
        let view = ready(self.store.client("service", "sim", self.nodes[0].name.clone(), 1_000).read()).ok();
        // What a careful operator checks on the hosts before `resume --force`: no database
        // anywhere runs as primary (frozen or not), so none can keep writing after resume.
        let no_primary_anywhere = self
            .nodes
            .iter()
            .all(|n| n.host_down || n.db.process != crate::sim::db::SimProcess::Running { in_recovery: false });
        // The DCS view, confirmed live as `shieldctl resume` does over REST: the leader's daemon
        // answers (not dead, not frozen, reachable) and reports a running primary.
        let leader_live = view.as_ref().and_then(|v| v.leader_name()).is_some_and(|l| {
            self.nodes.iter().enumerate().any(|(j, n)| {
                &n.name == l
                    && n.daemon == crate::sim::world::Daemon::Up
                    && self.net.peer_cut[j] == 0
                    && self.net.minority.as_ref().is_none_or(|m| !m[j])
                    && n.db.writable()
            })
        });
        if view.as_ref().is_some_and(|v| v.resume_blocker().is_none()) && leader_live {
            self.trace.line(self.now, "operator", || "resume".into());
            self.set_pause(false);
        } else if no_primary_anywhere {
            self.trace.line(self.now, "operator", || "resume --force: no database runs as primary anywhere".into());
            self.set_pause(false);
        } else {
            self.trace.line(self.now, "operator", || "resume refused: no running primary holds the leader key".into());
            self.resume_retrying = true;
            self.at(self.now + 1_000, Ev::TryResume);
        }
    }

    /// `shieldctl switchover --candidate nX [--scheduled …]` (names the current leader) or
    /// `shieldctl failover --candidate nX` (names none): the `failover` key, as the REST API
    /// writes it.
    pub(super) fn request_failover(&mut self, candidate: usize, switchover: bool, ahead_ms: u64) {
        let Some(c) = self.nodes.get(candidate).map(|n| n.name.clone()) else { return };
        let leader =
            self.store.get_raw("/service/sim/leader").and_then(|v| MemberName::new(String::from_utf8_lossy(&v)).ok());
        let mut req = serde_json::Map::new();
        req.insert("member".into(), c.as_str().into());
        if switchover {
            let Some(l) = leader.filter(|l| *l != c) else { return };
            req.insert("leader".into(), l.as_str().into());
            if ahead_ms > 0 {
                let at = EPOCH_MS + (self.now + ahead_ms) as i64;
                let text = chrono::DateTime::from_timestamp_millis(at)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string())
                    .unwrap_or_default();
                req.insert("scheduled_at".into(), text.into());
            }
        }
        let value = serde_json::Value::Object(req).to_string();
        if self.net.dcs_down > 0 {
            return;
        }
        self.trace.line(self.now, "operator", || format!("failover key: {value}"));
        self.store.put_raw(FAILOVER_KEY, value.as_bytes());
        self.after_dcs_change();
    }
}
