//! An in-memory VIP: the reference implementation of [`Vip`].
//!
//! Binding and removing are idempotent, as the port requires; every successful `add` counts as
//! one announcement (what `arping -U` sends on a real host). Hosts that should contend for one
//! address share a [`MemoryVipNetwork`], which records every host holding it: a test can assert
//! that no two hosts ever held it at once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::ports::{PortError, Vip};

#[derive(Debug, Default)]
struct NetInner {
    /// The hosts holding the address now.
    holders: BTreeSet<String>,
    /// The most hosts that held it at the same time, ever.
    most_holders: usize,
}

/// The network segment one VIP lives on, shared by the [`MemoryVip`]s of a cluster's hosts.
#[derive(Clone, Debug, Default)]
pub struct MemoryVipNetwork {
    inner: Arc<Mutex<NetInner>>,
}

impl MemoryVipNetwork {
    /// A segment where nobody holds the address.
    pub fn new() -> MemoryVipNetwork {
        MemoryVipNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, NetInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hosts holding the address now, by name.
    pub fn holders(&self) -> Vec<String> {
        self.lock().holders.iter().cloned().collect()
    }

    /// The most hosts that ever held the address at the same time (more than 1 is a split brain).
    pub fn most_holders(&self) -> usize {
        self.lock().most_holders
    }

    /// The VIP handle of host `host` on this segment.
    pub fn host(&self, host: impl Into<String>) -> MemoryVip {
        MemoryVip { host: host.into(), net: self.clone(), state: Arc::new(Mutex::new(HostInner::default())) }
    }
}

#[derive(Debug, Default)]
struct HostInner {
    announcements: u64,
    /// The error every call returns while set (a missing tool, a lost capability).
    failing: Option<PortError>,
}

/// One host's handle on the VIP.
#[derive(Clone, Debug)]
pub struct MemoryVip {
    host: String,
    net: MemoryVipNetwork,
    state: Arc<Mutex<HostInner>>,
}

impl Default for MemoryVip {
    fn default() -> MemoryVip {
        MemoryVip::new()
    }
}

impl MemoryVip {
    /// A VIP on a segment of its own, for host `local`.
    pub fn new() -> MemoryVip {
        MemoryVipNetwork::new().host("local")
    }

    fn lock(&self) -> MutexGuard<'_, HostInner> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), PortError> {
        self.lock().failing.clone().map_or(Ok(()), Err)
    }

    /// How many times the address was announced (each successful [`Vip::add`]).
    pub fn announcements(&self) -> u64 {
        self.lock().announcements
    }

    /// Makes every call fail with `error` until [`MemoryVip::recover`].
    pub fn fail_with(&self, error: PortError) {
        self.lock().failing = Some(error);
    }

    /// Ends [`MemoryVip::fail_with`].
    pub fn recover(&self) {
        self.lock().failing = None;
    }

    /// The host's name on its segment.
    pub fn host(&self) -> &str {
        &self.host
    }
}

#[async_trait]
impl Vip for MemoryVip {
    async fn add(&self) -> Result<(), PortError> {
        self.check()?;
        let mut net = self.net.lock();
        net.holders.insert(self.host.clone());
        net.most_holders = net.most_holders.max(net.holders.len());
        drop(net);
        self.lock().announcements += 1;
        Ok(())
    }

    async fn remove(&self) -> Result<(), PortError> {
        self.check()?;
        self.net.lock().holders.remove(&self.host);
        Ok(())
    }

    async fn is_bound(&self) -> Result<bool, PortError> {
        self.check()?;
        Ok(self.net.lock().holders.contains(&self.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::ErrorKind;

    use crate::testing::block_on as block;

    #[test]
    fn binding_and_removing_are_idempotent() {
        let vip = MemoryVip::new();
        assert_eq!(block(vip.is_bound()), Ok(false));
        assert_eq!(block(vip.remove()), Ok(()), "removing an unbound address is fine");
        assert_eq!(block(vip.add()), Ok(()));
        assert_eq!(block(vip.add()), Ok(()), "binding twice is fine");
        assert_eq!(block(vip.is_bound()), Ok(true));
        assert_eq!(vip.announcements(), 2, "every add announces");
        assert_eq!(block(vip.remove()), Ok(()));
        assert_eq!(block(vip.remove()), Ok(()));
        assert_eq!(block(vip.is_bound()), Ok(false));
    }

    #[test]
    fn a_shared_segment_sees_every_holder() {
        let net = MemoryVipNetwork::new();
        let (a, b) = (net.host("a"), net.host("b"));
        block(a.add()).expect("add");
        block(a.remove()).expect("remove");
        block(b.add()).expect("add");
        assert_eq!((net.holders(), net.most_holders()), (vec!["b".to_owned()], 1));
        block(a.add()).expect("add");
        assert_eq!(net.most_holders(), 2, "two hosts held it at once");
        assert_eq!(block(b.is_bound()), Ok(true));
    }

    #[test]
    fn a_failing_host_changes_nothing() {
        let vip = MemoryVip::new();
        vip.fail_with(PortError::new(ErrorKind::Io, "ip addr add: Operation not permitted"));
        assert_eq!(block(vip.add()).map_err(|e| e.kind), Err(ErrorKind::Io));
        assert!(block(vip.is_bound()).is_err());
        vip.recover();
        assert_eq!(block(vip.is_bound()), Ok(false));
        assert_eq!(vip.announcements(), 0);
    }
}
