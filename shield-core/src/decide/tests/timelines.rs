//! decide() tests: unique timelines.

use super::race::unlocked;
use super::*;

/// A promotion cut off before it could record itself burned timeline 2 (its reservation is the
/// last `history` line): the next promotion, from timeline 1, creates timeline 3, never 2 again.
#[test]
fn promotion_skips_a_timeline_reserved_by_another() {
    let o = with(
        obs(ViewB::new().leader("a").replica("b", 1_000).history(&[(1, 900)]), db_replica(1_000, 1, None)),
        vec![Outcome::LeaderAcquire { sent_at: NOW, fence_after_ms: 3_210, result: Ok(true) }],
    );
    let (acts, reason, _) = run(&state("a"), &o);
    assert_eq!(reason, Reason::Promoting);
    let Some(Action::WriteHistory { lines }) = acts.iter().find(|a| matches!(a, Action::WriteHistory { .. })) else {
        panic!("no reservation: {acts:?}")
    };
    assert_eq!(
        lines.iter().map(|l| (l.timeline, l.lsn)).collect::<Vec<_>>(),
        [(Timeline(1), Lsn(900)), (Timeline(2), Lsn(1_000))]
    );
    assert_eq!(acts.last(), Some(&task(DbTask::Promote { timeline: Timeline(3) })));
}

/// Once promoted, the reserved line takes the server's own switch point; nothing is appended.
#[test]
fn promoted_primary_corrects_its_reserved_history_line() {
    let mut st = leader_state("a");
    st.promoted_from = Some((Timeline(1), Lsn(1_000)));
    let mut db = db_primary(1_200, 2);
    db.branched_from = Some((Timeline(1), Lsn(1_100)));
    let o = obs(ViewB::new().leader("a").replica("b", 1_000).history(&[(1, 1_000)]), db);
    let (acts, _, d) = run(&st, &o);
    let Some(Action::WriteHistory { lines }) = acts.iter().find(|a| matches!(a, Action::WriteHistory { .. })) else {
        panic!("no history write: {acts:?}")
    };
    assert_eq!(lines.iter().map(|l| (l.timeline, l.lsn)).collect::<Vec<_>>(), [(Timeline(1), Lsn(1_100))]);
    assert_eq!(d.next.promoted_from, None);
    // Already exact: no write at all.
    let o = obs(ViewB::new().leader("a").replica("b", 1_000).history(&[(1, 1_100)]), o.db.clone());
    let (acts, _, _) = run(&st, &o);
    assert!(!acts.iter().any(|a| matches!(a, Action::WriteHistory { .. })), "{acts:?}");
}

/// A running member whose key shows a newer timeline than ours is a live server of a newer
/// timeline: we do not race past it, whatever our WAL position.
#[test]
fn a_member_on_a_newer_timeline_blocks_the_race() {
    let v = unlocked().member("b", member(MemberRole::Replica, "running", 10, 2));
    let (acts, reason, _) = run(&state("a"), &obs(v, db_replica(5_000, 1, None)));
    assert_eq!((acts, reason), (vec![], Reason::NotHealthiest(Ineligible::PeerAhead { peer: n("b") })));
}

/// Peers compare as (timeline, LSN): less WAL on a newer timeline is still ahead.
#[test]
fn a_peer_on_a_newer_timeline_is_ahead_whatever_its_lsn() {
    let mut reports = std::collections::BTreeMap::new();
    reports.insert(
        n("b"),
        PeerReport {
            is_primary: false,
            wal_position: Some(Lsn(10)),
            timeline: Some(Timeline(2)),
            can_promote: true,
            priority: 1,
        },
    );
    let o = with(obs(unlocked(), db_replica(5_000, 1, None)), vec![Outcome::PeersProbed { reports }]);
    let (_, reason, _) = run(&state("a"), &o);
    assert_eq!(reason, Reason::NotHealthiest(Ineligible::PeerAhead { peer: n("b") }));
}
