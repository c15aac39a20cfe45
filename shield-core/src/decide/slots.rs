//! Replication slots: one per member on every node (Patroni's `use_slots`), Patroni 4's member
//! slots retained for `member_slots_ttl`, and the permanent slots of the dynamic config.

use super::Ctx;
use crate::action::Action;
use crate::cluster::ClusterView;
use crate::types::{Lsn, MemberName};

/// Patroni's slot name for a member: lowercase, anything but `[a-z0-9_]` replaced by `_`.
pub fn slot_name(member: &MemberName) -> String {
    member
        .as_str()
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' { c } else { '_' })
        .collect()
}

/// Physical replication slots, as Patroni 4 keeps them (`use_slots`). With `member_slots_ttl`
/// (the default) every node that may lead keeps a slot for every other member (not `nostream`)
/// and for each name in `retain_slots`, so that after a failover the new leader already holds
/// the WAL every replica still needs; a replica moves its copies forward to the positions the
/// leader publishes in `status`. With `member_slots_ttl: 0`, as Patroni 3: on the leader one per
/// member that streams from it, on a replica one per member that cascades from it. Other
/// physical slots are dropped (a member that left, a demoted primary's), but never an active
/// one. Nothing happens while a database task runs, or with `use_slots: false`.
pub(super) fn sync_slots(cx: &mut Ctx<'_>, view: &ClusterView) {
    let db = &cx.obs.db;
    let Some(existing) = &db.slots else { return };
    if !cx.st.config.postgresql.use_slots {
        // Slots are then the operator's business: none created, none dropped.
        return;
    }
    if db.busy.is_some() || cx.actions.iter().any(|a| matches!(a, Action::RunDbTask { .. } | Action::StopDb { .. })) {
        return;
    }
    let me = cx.me();
    let leader = view.leader_name();
    let am_leader = leader == Some(me) && db.is_running_primary();
    let replica = leader.is_some_and(|l| l != me) && db.is_running_replica();
    let want = if am_leader || replica { slots_wanted(cx, view, leader) } else { Default::default() };
    let have: std::collections::BTreeSet<&str> = existing.iter().map(|(n, _)| n.as_str()).collect();
    let create: Vec<String> = want.iter().filter(|w| !have.contains(w.as_str())).cloned().collect();
    let drop: Vec<String> =
        existing.iter().filter(|(n, active)| !*active && !want.contains(n)).map(|(n, _)| n.clone()).collect();
    let advance: Vec<(String, Lsn)> = existing
        .iter()
        .filter(|(n, active)| !*active && want.contains(n))
        .filter_map(|(n, _)| {
            let at = *db.slot_positions.get(n)?;
            // A replica follows the leader's published position; on any node, a member that
            // cascades from elsewhere reports its own.
            let published = if am_leader { None } else { view.status.as_ref().and_then(|s| s.slots.get(n).copied()) };
            let reported = view
                .members
                .values()
                .find(|m| slot_name(&m.name) == *n && m.data.tags.replicatefrom.is_some())
                .and_then(|m| m.data.xlog_location);
            let to = published.max(reported)?;
            (to > at).then(|| (n.clone(), to))
        })
        .collect();
    if !create.is_empty() || !drop.is_empty() || !advance.is_empty() {
        cx.push(Action::SyncSlots { create, drop, advance });
    } else {
        cx.st.slots_sync_failed = None;
    }
}

/// The slots `me` keeps when `leader` leads (see [`sync_slots`]).
pub(super) fn slots_wanted(
    cx: &Ctx<'_>,
    view: &ClusterView,
    leader: Option<&MemberName>,
) -> std::collections::BTreeSet<String> {
    let me = cx.me();
    let leading = leader == Some(me);
    // Retention: every node that may lead keeps everyone's slot (a nofailover node only its
    // cascading members', as Patroni).
    let retain = cx.st.config.member_slots_ttl_ms > 0 && (leading || cx.st.settings.tags.can_promote());
    let streams_from_me = |m: &crate::cluster::Member| match &m.data.tags.replicatefrom {
        Some(r) if view.members.get(r).is_some_and(|u| u.data.state == "running") && *r != m.name => r == me,
        _ => leading,
    };
    let mut want: std::collections::BTreeSet<String> = view
        .members
        .values()
        .filter(|m| m.name != *me && !m.data.tags.nostream && (retain || streams_from_me(m)))
        .map(|m| slot_name(&m.name))
        .collect();
    if retain {
        if leading {
            want.extend(cx.st.member_slots_seen.keys().cloned());
        } else if let Some(s) = &view.status {
            want.extend(s.retain_slots.iter().cloned());
        }
    }
    want.remove(&slot_name(me));
    want
}
