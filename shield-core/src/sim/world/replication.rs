//! The passage of time for the databases: WAL written on primaries and replicated to followers.

use super::*;

impl World {
    pub(super) fn tick(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].db.writable() {
                let grow = self.rng.gen_range(1..32_768);
                if let Some(d) = self.nodes[i].db.data.as_mut() {
                    d.lsn.0 += grow;
                    self.report.writes_acked += 1;
                    self.acked.push((d.timeline, d.lsn));
                    self.check(Hook::WriteAcked { node: i });
                }
            }
        }
        for i in 0..self.nodes.len() {
            self.replicate(i);
        }
        self.at(self.now + TICK_MS, Ev::Tick);
    }

    pub(super) fn replicate(&mut self, i: usize) {
        let r = &self.nodes[i];
        let running_replica = r.db.process == crate::sim::db::SimProcess::Running { in_recovery: true };
        let up = r.db.upstream.as_ref().and_then(|u| self.nodes.iter().position(|n| &n.name == u));
        let source = up.filter(|&u| {
            let s = &self.nodes[u];
            running_replica
                && self.peers_connected(i, u)
                && matches!(s.db.process, crate::sim::db::SimProcess::Running { .. })
                && !s.db.frozen
                && matches!((&s.db.data, &r.db.data), (Some(sd), Some(rd)) if sd.can_serve(rd))
        });
        let Some(u) = source else {
            self.nodes[i].db.streaming = false;
            return;
        };
        let Some(src) = self.nodes[u].db.data.clone() else { return };
        let lag = self.rng.gen_range(0..8_192);
        let r = &mut self.nodes[i];
        if let Some(d) = r.db.data.as_mut() {
            d.timeline = src.timeline;
            d.history = src.history.clone();
            d.lsn = d.lsn.max(crate::types::Lsn(src.lsn.0.saturating_sub(lag)));
        }
        r.db.streaming = true;
    }
}
