//! The cluster timeline recorded in the DCS never goes backwards.
//!
//! Every write of the `history` key must leave the cluster timeline (last line + 1) at or above
//! the highest one seen so far.

use super::{Hook, Invariant, Snapshot};
use crate::types::Timeline;

/// See the module docs.
#[derive(Debug, Default)]
pub struct TimelineMonotonic {
    highest: Option<Timeline>,
}

impl Invariant for TimelineMonotonic {
    fn name(&self) -> &'static str {
        "timeline-monotonic"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        if hook != Hook::HistoryWritten {
            return Ok(());
        }
        let now = snap.cluster_timeline;
        match self.highest {
            Some(h) if now < h => Err(format!("cluster timeline went back from {h} to {now}")),
            _ => {
                self.highest = Some(now);
                Ok(())
            }
        }
    }
}
