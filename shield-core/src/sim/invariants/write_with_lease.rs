//! No write without a lease: every client write a database acknowledges is acknowledged while
//! that node holds the leader lease in the DCS.
//!
//! Checked at every acknowledged write (one per primary per 100 ms tick), not only when a node
//! becomes writable: a primary that keeps taking writes after its lease expired at the DCS, while
//! nobody has promoted yet, breaks the promise as surely as two writers do. Exempt: the brand-new
//! cluster before any node ever held the lock (initdb's primary takes it a moment later), and a
//! paused cluster, where Patroni's rules keep a primary running without the lock on purpose: the
//! DCS says paused, or the node still believes it is (a resume it has not been able to read
//! yet; nobody promotes past it while it answers the peers' probes, which `single-writer`
//! checks). Writes in the last milliseconds of an immediate stop already sent are not counted:
//! the fencing margin covers them when the stop is on time, a late stop shows in the writes
//! before it, and `single-writer` checks they never overlap another primary. With failsafe
//! mode, a failsafe round every member accepted stands in for the lease while nobody holds the
//! key: the writer counts as holding it until the round's send time plus the members' ttl, the
//! time every member stays out of the race (a key someone else holds is still a violation).

use super::{Hook, Invariant, Snapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub struct WriteWithLease {
    someone_led: bool,
}

impl Invariant for WriteWithLease {
    fn name(&self) -> &'static str {
        "write-with-lease"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        self.someone_led |= snap.lease_holder.is_some();
        let Hook::WriteAcked { node } = hook else { return Ok(()) };
        if !self.someone_led || snap.paused || snap.nodes[node].paused || snap.nodes[node].stopping {
            return Ok(());
        }
        let me = &snap.nodes[node].name;
        match &snap.lease_holder {
            Some(h) if h == me => Ok(()),
            Some(h) => Err(format!("{me} acknowledged a write while {h} holds the leader lease")),
            None if snap.nodes[node].failsafe_until.is_some_and(|u| snap.now_ms < u) => Ok(()),
            None => Err(format!("{me} acknowledged a write while nobody holds the leader lease")),
        }
    }
}
