//! Liveness: once faults stop, the cluster settles within a bound to exactly one primary, which
//! holds the lease, and every other running node streams from it.

use super::{Hook, Invariant, Snapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub struct Liveness;

impl Liveness {
    /// Whether the cluster has settled; `Err` says how it has not.
    pub fn settled(snap: &Snapshot<'_>) -> Result<(), String> {
        let writers: Vec<_> = snap.nodes.iter().filter(|n| n.writable).collect();
        let [primary] = writers.as_slice() else {
            let names: Vec<String> = writers.iter().map(|n| n.name.to_string()).collect();
            return Err(format!("{} writable nodes ({})", writers.len(), names.join(", ")));
        };
        if snap.lease_holder.as_ref() != Some(&primary.name) {
            return Err(format!("primary {} does not hold the lease ({:?} does)", primary.name, snap.lease_holder));
        }
        for n in snap.nodes.iter().filter(|n| n.up && n.name != primary.name) {
            if !(n.replica && n.streaming && n.upstream.as_ref() == Some(&primary.name)) {
                return Err(format!(
                    "{} is not streaming from {} (replica={}, streaming={}, upstream={:?})",
                    n.name, primary.name, n.replica, n.streaming, n.upstream
                ));
            }
        }
        Ok(())
    }
}

impl Invariant for Liveness {
    fn name(&self) -> &'static str {
        "liveness"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        let Hook::Settled { faults_ended_ms } = hook else { return Ok(()) };
        Liveness::settled(snap).map_err(|e| {
            format!("not settled {} ms after the last fault: {e}", snap.now_ms.saturating_sub(faults_ended_ms))
        })
    }
}
