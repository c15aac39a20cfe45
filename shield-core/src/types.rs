//! Domain newtypes. Each wraps one plain value so that a member name can never be passed where an
//! LSN is expected, and each unit is in the name (`MonoMillis`, not `u64`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point on the local node's monotonic clock, in milliseconds. shield-core never reads a clock:
/// the daemon (or the simulator) passes one in with every observation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MonoMillis(pub u64);

impl MonoMillis {
    /// `self + ms`, saturating.
    #[must_use]
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 if `earlier` is later.
    #[must_use]
    pub fn since(self, earlier: Self) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for MonoMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

/// A member's name: the `name` key of the node config and the last segment of `members/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemberName(String);

/// Why a string is not a valid [`MemberName`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemberNameError {
    /// The name is empty or only white space.
    #[error("member name is empty")]
    Empty,
    /// The name contains `/`, which would change the DCS key layout.
    #[error("member name {0:?} contains '/'")]
    Slash(String),
    /// The name contains a control character.
    #[error("member name {0:?} contains a control character")]
    Control(String),
    /// Longer than 253 bytes (a DNS name's limit; Consul service ids use it).
    #[error("member name is {0} bytes long; the limit is 253")]
    TooLong(usize),
}

impl MemberName {
    /// Checks and wraps a member name.
    pub fn new(name: impl Into<String>) -> Result<Self, MemberNameError> {
        let name = name.into();
        if name.trim().is_empty() {
            return Err(MemberNameError::Empty);
        }
        if name.len() > 253 {
            return Err(MemberNameError::TooLong(name.len()));
        }
        if name.contains('/') {
            return Err(MemberNameError::Slash(name));
        }
        if name.chars().any(char::is_control) {
            return Err(MemberNameError::Control(name));
        }
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for MemberName {
    type Error = MemberNameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl From<MemberName> for String {
    fn from(m: MemberName) -> Self {
        m.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A WAL position in bytes (PostgreSQL's `pg_lsn` as an integer, as Patroni stores it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Bytes from `other` up to `self`, 0 if `other` is ahead.
    #[must_use]
    pub fn bytes_after(self, other: Lsn) -> u64 {
        self.0.saturating_sub(other.0)
    }

    /// Parses PostgreSQL's `XXXXXXXX/XXXXXXXX` text form.
    pub fn parse_pg(text: &str) -> Option<Lsn> {
        let (hi, lo) = text.split_once('/')?;
        let hi = u64::from_str_radix(hi, 16).ok()?;
        let lo = u64::from_str_radix(lo, 16).ok()?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return None;
        }
        Some(Lsn((hi << 32) | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A PostgreSQL timeline id. Promotion forks a new, higher one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeline(pub u32);

impl Default for Timeline {
    fn default() -> Self {
        Timeline(1)
    }
}

impl Timeline {
    /// The timeline a promotion from this one creates.
    #[must_use]
    pub fn next(self) -> Timeline {
        Timeline(self.0.saturating_add(1))
    }
}

impl fmt::Display for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A DCS modification index: etcd's mod_revision, Consul's ModifyIndex. Used for compare-and-set.
///
/// Unsigned, as Consul's indexes are (`uint64`): a Consul index is carried unchanged from the
/// answer that held it to the compare-and-set that sends it back. etcd's revisions are signed
/// (`int64`) and never negative; the etcd backend converts both ways with checks, refusing a
/// value that does not fit rather than wrapping it ([`Revision::from_etcd`], [`Revision::to_etcd`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Revision(pub u64);

impl Revision {
    /// An etcd revision (`int64`); `None` for a negative one, which etcd never sends.
    pub fn from_etcd(rev: i64) -> Option<Revision> {
        u64::try_from(rev).ok().map(Revision)
    }

    /// This revision as etcd's `int64`; `None` above `i64::MAX` (no etcd revision is).
    pub fn to_etcd(self) -> Option<i64> {
        i64::try_from(self.0).ok()
    }

    /// The revision after this one, saturating.
    #[must_use]
    pub fn next(self) -> Revision {
        Revision(self.0.saturating_add(1))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A database system identifier (`pg_control`'s, printed by `pg_controldata`). Stored in the
/// `initialize` key as decimal text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for SystemId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse().map(SystemId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips() {
        let l = Lsn::parse_pg("1/2A0000D8").expect("valid");
        assert_eq!(l.0, 0x1_2A00_00D8);
        assert_eq!(l.to_string(), "1/2A0000D8");
        assert_eq!(Lsn::parse_pg("zz/1"), None);
        assert_eq!(Lsn::parse_pg("1"), None);
        assert_eq!(Lsn::parse_pg("100000000/0"), None);
    }

    #[test]
    fn member_names_are_checked() {
        assert!(MemberName::new("node1").is_ok());
        assert_eq!(MemberName::new(" "), Err(MemberNameError::Empty));
        assert!(matches!(MemberName::new("a/b"), Err(MemberNameError::Slash(_))));
        assert!(matches!(MemberName::new("a\nb"), Err(MemberNameError::Control(_))));
        let err = serde_json::from_str::<MemberName>("\"\"").expect_err("empty");
        assert!(err.to_string().contains("empty"));
    }

    #[test]
    fn etcd_revisions_convert_with_checks() {
        assert_eq!(Revision::from_etcd(7), Some(Revision(7)));
        assert_eq!(Revision::from_etcd(-1), None);
        assert_eq!(Revision(u64::MAX).to_etcd(), None);
        assert_eq!(Revision(i64::MAX as u64 + 1).to_etcd(), None);
        assert_eq!(Revision(i64::MAX as u64).to_etcd(), Some(i64::MAX));
        assert_eq!(Revision(u64::MAX).next(), Revision(u64::MAX));
    }

    #[test]
    fn mono_millis_arithmetic_saturates() {
        assert_eq!(MonoMillis(5).since(MonoMillis(9)), 0);
        assert_eq!(MonoMillis(u64::MAX).plus(1), MonoMillis(u64::MAX));
        assert_eq!(MonoMillis(1500).to_string(), "1.500s");
    }
}
