//! At most one host holds the VIP at any instant, and only a node holding an unexpired lease
//! binds it.
//!
//! The VIP is only ever bound through [`Hook::VipBound`], so checking there checks every instant:
//! the old primary must have dropped it (by its own fencing, or the fence keeper's) before any
//! other node could bind it.

use super::{Hook, Invariant, Snapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub struct SingleVip;

impl Invariant for SingleVip {
    fn name(&self) -> &'static str {
        "single-vip"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        let node = match hook {
            Hook::VipBound { node } => node,
            // A thawed host answers on the address again: nobody else may have it by then.
            Hook::HostThawed { node } if snap.nodes[node].vip => node,
            _ => return Ok(()),
        };
        let me = &snap.nodes[node].name;
        if matches!(hook, Hook::VipBound { .. }) && snap.lease_holder.as_ref() != Some(me) {
            return Err(format!("{me} bound the VIP without holding the leader lease"));
        }
        let others: Vec<String> = snap
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.vip)
            .map(|(_, n)| n.name.to_string())
            .collect();
        if others.is_empty() {
            Ok(())
        } else {
            Err(format!("{me} bound the VIP while {} still holds it", others.join(", ")))
        }
    }
}
