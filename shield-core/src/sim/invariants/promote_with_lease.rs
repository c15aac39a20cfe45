//! A node promotes only while it holds the leader lease in the DCS.
//!
//! Checked at the instant a promotion (or a lock holder's restart as primary) makes a database
//! writable. A brand-new cluster's initdb is exempt: Patroni and Shield start it before taking the
//! lock, and no other node has data yet.

use super::{Hook, Invariant, Snapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub struct PromoteWithLease;

impl Invariant for PromoteWithLease {
    fn name(&self) -> &'static str {
        "promote-with-lease"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        let Hook::BecameWritable { node, promoted: true } = hook else { return Ok(()) };
        let me = &snap.nodes[node].name;
        match &snap.lease_holder {
            Some(h) if h == me => Ok(()),
            Some(h) => Err(format!("{me} promoted while {h} holds the leader lease")),
            None => Err(format!("{me} promoted while nobody holds the leader lease")),
        }
    }
}
