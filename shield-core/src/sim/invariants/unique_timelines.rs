//! Each timeline id is created by at most one promotion.
//!
//! Two servers that both promote to "timeline 5" from different points have histories that
//! PostgreSQL cannot tell apart by id: a standby may stream from the wrong one and pg_rewind may
//! find no divergence where there is one. Checked at every promotion, with the fork it was made
//! from: a second promotion to a timeline id already created (from any fork) is a violation.

use std::collections::BTreeMap;

use super::{Hook, Invariant, Snapshot};
use crate::types::{Lsn, MemberName, Timeline};

/// See the module docs.
#[derive(Debug, Default)]
pub struct UniqueTimelines {
    created: BTreeMap<Timeline, (MemberName, Lsn)>,
}

impl Invariant for UniqueTimelines {
    fn name(&self) -> &'static str {
        "unique-timelines"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        let Hook::TimelineCreated { node, timeline, fork_lsn, .. } = hook else { return Ok(()) };
        let me = &snap.nodes[node].name;
        if let Some((who, at)) = self.created.get(&timeline) {
            return Err(format!(
                "{me} created timeline {timeline} (forked at {fork_lsn}), which {who} already created (forked at {at})"
            ));
        }
        self.created.insert(timeline, (me.clone(), fork_lsn));
        Ok(())
    }
}
