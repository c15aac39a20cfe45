//! Bounded loss: a failover loses no more acknowledged writes than `maximum_lag_on_failover`
//! allows (asynchronous replication).
//!
//! Patroni's promise, and Shield's: a replica may take over only while the leader's last
//! published position (the `status` key) is at most `maximum_lag_on_failover` bytes ahead of
//! what the replica has on the cluster's timeline. Checked at every promotion against the
//! simulator's own record of the promoted data (its fork point, limited to where its timeline
//! ended in the `history` the node read) and of the `status` the node read before it decided.
//! Writes acknowledged after that `status` was written are not covered by the promise (the
//! count of writes lost, which includes them, is in the report).

use super::{Hook, Invariant, Snapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub struct BoundedLoss;

impl Invariant for BoundedLoss {
    fn name(&self) -> &'static str {
        "bounded-loss"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        let Hook::TimelineCreated { node, timeline, shared_lsn, seen_optime: Some(optime), .. } = hook else {
            return Ok(());
        };
        let lag = optime.bytes_after(shared_lsn);
        if lag > snap.max_lag_bytes {
            return Err(format!(
                "{} created timeline {timeline} {lag} bytes behind the leader's published position {optime} \
                 (maximum_lag_on_failover {} bytes; shared up to {shared_lsn})",
                snap.nodes[node].name, snap.max_lag_bytes
            ));
        }
        Ok(())
    }
}
