//! What the loop shows after each decision: the REST API's snapshot, systemd's status line, and
//! the member key's fields only the daemon knows.

use std::time::{Duration, Instant};

use serde_json::Value;
use shield_core::cluster::MemberData;
use shield_core::observation::{DbStatus, DcsView, Observation};

use shield_core::action::DbRole;

use super::driver::{wall_ms, Driver};

impl Driver {
    /// systemd's status line (the role and the decision) and, on shutdown, STOPPING.
    pub(crate) fn notify_systemd(&mut self, obs: &Observation, d: &shield_core::Decision, reason: &str) {
        if obs.shutdown_requested {
            self.notify.stopping();
        }
        let role = match (d.next.lease.is_some(), d.next.db_role) {
            (true, _) => "leader",
            (false, Some(DbRole::Primary)) => "primary",
            (false, Some(DbRole::Replica)) => "replica",
            (false, None) => "database not running",
        };
        self.notify.cycle(&format!("{role}: {reason}"));
    }

    pub(crate) fn publish(&self, obs: &Observation, d: &shield_core::Decision, reason: &str) {
        let Ok(mut s) = self.api.snap.lock() else { return };
        if let DcsView::Reachable(v) = &obs.dcs {
            s.cluster = v.clone();
        }
        s.set_db(obs.db.clone());
        s.server = self.db.info();
        s.holds_lock = d.next.lease.is_some();
        s.paused = d.next.config.pause;
        s.reason = reason.to_owned();
        s.last_cycle = Some(Instant::now());
        s.ttl = Duration::from_millis(d.next.config.timing.ttl_ms);
        s.tags = d.next.settings.tags.to_json();
        if matches!(obs.dcs, DcsView::Reachable(_)) {
            s.dcs_last_seen_unix = wall_ms() / 1000;
            s.dcs_seen = Some(Instant::now());
        }
        s.fence_margin_ms = d.fence_at.map_or(0, |f| f.0.saturating_sub(obs.now.0) as i64);
        let kind = serde_json::to_value(&d.reason)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "unknown".into());
        *s.decisions.entry(kind).or_insert(0) += 1;
    }
}

/// Fills in what the member key carries beyond decide()'s [`MemberData`], as Patroni 4.1's
/// `touch_member` writes it: on a running replica `receive_lsn` (the larger of the received and
/// the walreceiver's written position) and `replay_lsn`, each only when known (never `null`), and
/// `replication_state` only when streaming or, with a `restore_command`, in archive recovery;
/// `pending_restart` and the scheduled restart.
pub(crate) fn complete_member(
    data: &mut MemberData,
    db: &DbStatus,
    info: &shield_db_postgres::ServerInfo,
    scheduled: Option<&crate::rest::state::ScheduledRestart>,
) {
    data.pending_restart = !info.pending_restart.is_empty();
    if let Some(r) = scheduled {
        data.other.insert("scheduled_restart".into(), r.to_json());
    }
    if db.is_running_replica() {
        data.receive_lsn = db.received_lsn.max(info.written_lsn).filter(|l| l.0 > 0);
        data.replay_lsn = db.replayed_lsn.filter(|l| l.0 > 0);
        data.replication_state = if db.streaming {
            Some("streaming".to_owned())
        } else if info.restore_command {
            Some("in archive recovery".to_owned())
        } else {
            None
        };
    } else {
        data.receive_lsn = None;
        data.replay_lsn = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use shield_core::cluster::MemberRole;
    use shield_core::observation::DbProcess;
    use shield_core::Lsn;

    fn replica_db(received: Option<u64>, replayed: Option<u64>, streaming: bool) -> DbStatus {
        let mut db = DbStatus::empty();
        db.process = DbProcess::Running { in_recovery: true };
        db.received_lsn = received.map(Lsn);
        db.replayed_lsn = replayed.map(Lsn);
        db.streaming = streaming;
        db
    }

    #[test]
    fn the_member_key_carries_patroni_41s_lsn_fields_and_never_null() {
        let info = shield_db_postgres::ServerInfo { written_lsn: Some(Lsn(350)), ..Default::default() };
        let mut m = MemberData::new(MemberRole::Replica, "running");
        m.replication_state = Some("streaming".into());
        complete_member(&mut m, &replica_db(Some(300), Some(200), true), &info, None);
        let j = m.to_json();
        assert_eq!((&j["receive_lsn"], &j["replay_lsn"]), (&json!(350), &json!(200)), "{j}");
        assert_eq!(j["replication_state"], json!("streaming"));
        // Unknown positions are left out; a replica that does not stream and has no
        // restore_command has no replication_state, as in Patroni.
        let mut m = MemberData::new(MemberRole::Replica, "running");
        m.replication_state = Some("in archive recovery".into());
        complete_member(&mut m, &replica_db(None, None, false), &Default::default(), None);
        let j = m.to_json();
        for k in ["receive_lsn", "replay_lsn", "replication_state"] {
            assert!(j.get(k).is_none(), "{k} in {j}");
        }
        assert!(!j.to_string().contains("null"), "{j}");
        let archive = shield_db_postgres::ServerInfo { restore_command: true, ..Default::default() };
        complete_member(&mut m, &replica_db(None, Some(10), false), &archive, None);
        assert_eq!(m.to_json()["replication_state"], json!("in archive recovery"));
        // A primary publishes neither.
        let mut p = MemberData::new(MemberRole::Primary, "running");
        let mut db = DbStatus::empty();
        db.process = DbProcess::Running { in_recovery: false };
        db.received_lsn = Some(Lsn(5));
        complete_member(&mut p, &db, &info, None);
        assert!(p.to_json().get("receive_lsn").is_none());
    }
}
