//! Properties of decide() over arbitrary states and observations.
//!
//! Each property counts how often its premise held (the case where its assertions can fail) and
//! fails when that was under 10% of the cases: a property whose premise a generator almost never
//! meets proves nothing. Run with `--nocapture` to see the shares.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use shield_core::cluster::{ClusterView, FailoverRequest, Initialize, Leader, Member, MemberData, Status};
use shield_core::observation::PeerReport;
use shield_core::ports::ErrorKind;
use shield_core::{
    decide, Action, DataDir, DbProcess, DbRole, DbStatus, DbTask, DcsView, DynamicConfig, LeaseHold, Lsn, MemberName,
    MemberRole, MonoMillis, NodeSettings, NodeState, Observation, Outcome, Revision, StopMode, SystemId, Timeline,
    WatchdogMode,
};

const NOW: u64 = 1_000_000;

fn name(i: u8) -> MemberName {
    MemberName::new(format!("n{i}")).expect("valid")
}

fn arb_process() -> impl Strategy<Value = DbProcess> {
    prop_oneof![
        Just(DbProcess::Stopped),
        Just(DbProcess::Crashed),
        Just(DbProcess::Starting),
        Just(DbProcess::Running { in_recovery: true }),
        Just(DbProcess::Running { in_recovery: false }),
        Just(DbProcess::Unknown),
    ]
}

fn arb_db() -> impl Strategy<Value = DbStatus> {
    (
        prop_oneof![
            Just(DataDir::Empty),
            any::<bool>().prop_map(|p| DataDir::Valid { system_id: SystemId(42), was_primary: p }),
            Just(DataDir::Valid { system_id: SystemId(7), was_primary: true }),
            Just(DataDir::Invalid("bad".into())),
            Just(DataDir::Unknown),
        ],
        arb_process(),
        prop::option::of(1u32..5),
        prop::option::of(0u64..10_000_000),
        prop::option::of(0u8..4),
        any::<bool>(),
        prop::option::of(prop_oneof![
            Just(DbTask::Promote { timeline: Timeline(2) }),
            Just(DbTask::Bootstrap),
            Just(DbTask::Stop(StopMode::Fast)),
            Just(DbTask::Rewind { source: name(1) }),
        ]),
    )
        .prop_map(|(data_dir, process, tl, lsn, up, streaming, busy)| DbStatus {
            data_dir,
            process,
            timeline: tl.map(Timeline),
            write_lsn: lsn.map(Lsn),
            received_lsn: lsn.map(Lsn),
            replayed_lsn: None,
            upstream: up.map(name),
            streaming,
            busy,
            // An arbitrary switch record, consistent or not with the timeline.
            branched_from: tl.zip(lsn).map(|(t, l)| (Timeline(t / 2), Lsn(l / 2))),
            slots: up.map(|u| vec![(format!("n{u}"), streaming), ("backup".to_owned(), true)]),
            slot_positions: up.map(|u| (format!("n{u}"), Lsn(lsn.unwrap_or(0) / 3))).into_iter().collect(),
            // Behind the timeline half the time: a primary promoted and not yet checkpointed.
            checkpoint_timeline: tl.map(|t| Timeline(t - u32::from(streaming && t > 1))),
        })
}

fn arb_view() -> impl Strategy<Value = ClusterView> {
    (
        prop::option::of(0u8..4),
        prop::collection::vec((0u8..4, any::<bool>(), 0u64..10_000_000), 0..4),
        prop::option::of(0u64..10_000_000),
        any::<bool>(),
        prop::option::of((prop::option::of(0u8..4), prop::option::of(0u8..4))),
        0u8..3,
    )
        .prop_map(|(leader, members, optime, pause, failover, init)| {
            let mut v = ClusterView { revision: Revision(9), ..ClusterView::default() };
            v.initialize = match init {
                0 => None,
                1 => Some(Initialize::Racing),
                _ => Some(Initialize::SystemId(SystemId(42))),
            };
            v.leader = leader.map(|l| Leader { name: Some(name(l)), revision: Revision(3), owner: None });
            for (m, primary, lsn) in members {
                let role = if primary { MemberRole::Primary } else { MemberRole::Replica };
                let mut data = MemberData::new(role, "running");
                data.xlog_location = Some(Lsn(lsn));
                v.members.insert(name(m), Member { name: name(m), data, revision: Revision(2), owner: None });
            }
            v.status = optime.map(|o| Status { optime: Lsn(o), ..Status::default() });
            v.config = Some((DynamicConfig { pause, ..DynamicConfig::default() }, Revision(1)));
            v.failover = failover.map(|(l, m)| FailoverRequest {
                leader: l.map(name),
                member: m.map(name),
                scheduled_at: None,
                revision: Revision(4),
            });
            v
        })
}

fn arb_outcomes() -> impl Strategy<Value = Vec<Outcome>> {
    let one = prop_oneof![
        (NOW - 5_000..NOW, any::<bool>()).prop_map(|(t, ok)| Outcome::LeaderAcquire {
            sent_at: MonoMillis(t),
            fence_after_ms: 3_210,
            result: Ok(ok)
        }),
        (NOW - 5_000..NOW).prop_map(|t| Outcome::LeaderRenew {
            sent_at: MonoMillis(t),
            fence_after_ms: 3_210,
            result: Ok(())
        }),
        prop_oneof![Just(ErrorKind::LeaseLost), Just(ErrorKind::Unreachable)].prop_map(|k| Outcome::LeaderRenew {
            sent_at: MonoMillis(NOW - 10),
            fence_after_ms: 3_210,
            result: Err(k)
        }),
        any::<bool>().prop_map(|ok| Outcome::InitializeRace { result: Ok(ok) }),
        (0u64..10_000_000, any::<bool>()).prop_map(|(l, p)| Outcome::PeersProbed {
            reports: [(
                name(1),
                PeerReport {
                    is_primary: p,
                    wal_position: Some(Lsn(l)),
                    timeline: None,
                    can_promote: true,
                    priority: 1
                }
            )]
            .into_iter()
            .collect()
        }),
        any::<bool>().prop_map(|ok| Outcome::DbReloaded { result: if ok { Ok(true) } else { Err("boom".into()) } }),
        any::<bool>().prop_map(|primary| Outcome::ServiceRegistrationFailed {
            role: if primary { DbRole::Primary } else { DbRole::Replica },
            reason: "agent down".into()
        }),
        Just(Outcome::WatchdogDisarmFailed { reason: "EBUSY".into() }),
        Just(Outcome::SlotsSyncFailed { reason: "connection refused".into() }),
    ];
    prop::collection::vec(one, 0..3)
}

fn arb_state() -> impl Strategy<Value = NodeState> {
    (prop::option::of(NOW - 4_000..NOW + 4_000), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(fence, armed, bootstrapping, demoting, nofailover)| {
            let mut s = NodeSettings::new(name(0));
            s.watchdog = WatchdogMode::Automatic;
            s.vip = true;
            s.tags.nofailover = nofailover;
            let mut st = NodeState::new(s);
            st.lease = fence.map(|f| LeaseHold { renewed_sent_at: MonoMillis(f - 3_210), fence_at: MonoMillis(f) });
            st.watchdog_armed = armed;
            st.bootstrapping = bootstrapping;
            st.demoting = demoting;
            st
        },
    )
}

fn arb_obs() -> impl Strategy<Value = Observation> {
    (prop_oneof![4 => arb_view().prop_map(DcsView::Reachable), 1 => (NOW - 5_000..NOW).prop_map(|s| DcsView::Unreachable { since: MonoMillis(s) })], arb_db(), arb_outcomes(), any::<bool>())
        .prop_map(|(dcs, db, outcomes, shutdown_requested)| Observation {
            now: MonoMillis(NOW),
            wall_ms: 1_767_225_600_000,
            dcs,
            db,
            outcomes,
            shutdown_requested,
            requests: Vec::new(),
            failsafe_vouched: None,
        })
}

/// A lease in one of the states that matter at the promotion and fencing boundaries.
fn arb_lease() -> impl Strategy<Value = Option<LeaseHold>> {
    let hold = |fence: u64| Some(LeaseHold { renewed_sent_at: MonoMillis(fence - 3_210), fence_at: MonoMillis(fence) });
    prop_oneof![
        5 => (NOW + 1..NOW + 3_210).prop_map(hold),
        2 => (NOW - 3_000..=NOW).prop_map(hold),
        1 => Just(hold(NOW)),
        2 => Just(None),
    ]
}

/// Outcomes that touch the lease: none, a renewal or an acquisition that succeeded (recently or
/// too long ago to count), or one that failed.
fn arb_lease_outcomes() -> impl Strategy<Value = Vec<Outcome>> {
    let one = prop_oneof![
        (NOW - 5_000..=NOW).prop_map(|t| Outcome::LeaderRenew {
            sent_at: MonoMillis(t),
            fence_after_ms: 3_210,
            result: Ok(())
        }),
        (NOW - 5_000..=NOW).prop_map(|t| Outcome::LeaderAcquire {
            sent_at: MonoMillis(t),
            fence_after_ms: 3_210,
            result: Ok(true)
        }),
        prop_oneof![Just(ErrorKind::LeaseLost), Just(ErrorKind::Unreachable), Just(ErrorKind::CompareFailed)].prop_map(
            |k| Outcome::LeaderRenew { sent_at: MonoMillis(NOW - 10), fence_after_ms: 3_210, result: Err(k) }
        ),
        Just(Outcome::WatchdogFailed { reason: "no device".into() }),
    ];
    prop_oneof![3 => Just(Vec::new()), 2 => prop::collection::vec(one, 1..3)]
}

/// The situation around a promotion: this node (n0) mostly holds the leader key, its database is
/// mostly a running replica with nothing busy, and its lease is fresh, expired, exactly at the
/// deadline or absent, with outcomes that extend it or take it away. A few cases break each
/// premise (someone else's key, a paused cluster, an unreachable DCS, a busy database).
fn arb_promotion_case() -> impl Strategy<Value = (NodeState, Observation)> {
    let settings = (
        prop_oneof![2 => Just(WatchdogMode::Off), 2 => Just(WatchdogMode::Automatic), 1 => Just(WatchdogMode::Required)],
        any::<bool>(),
        arb_lease(),
        prop::bool::weighted(0.1),
    );
    let view = (
        prop_oneof![8 => Just(Some(0u8)), 1 => Just(Some(1u8)), 1 => Just(None)],
        prop::bool::weighted(0.1),
        prop::option::weighted(0.2, (prop::option::of(0u8..3), prop::option::of(0u8..3))),
        1u32..4,
        0u64..10_000_000,
    );
    let db = (
        prop_oneof![9 => Just(DbProcess::Running { in_recovery: true }), 1 => arb_process()],
        prop::option::weighted(0.1, Just(DbTask::Promote { timeline: Timeline(2) })),
        1u32..4,
        0u64..10_000_000,
    );
    (settings, view, db, arb_lease_outcomes(), prop::bool::weighted(0.1)).prop_map(
        |((watchdog, armed, lease, nofailover), (leader, pause, failover, history, optime), db, outcomes, down)| {
            let mut s = NodeSettings::new(name(0));
            s.watchdog = watchdog;
            s.tags.nofailover = nofailover;
            let mut st = NodeState::new(s);
            st.lease = lease;
            st.watchdog_armed = armed;
            let (process, busy, tl, lsn) = db;
            let db = DbStatus {
                data_dir: DataDir::Valid { system_id: SystemId(42), was_primary: false },
                process,
                timeline: Some(Timeline(tl)),
                received_lsn: Some(Lsn(lsn)),
                replayed_lsn: Some(Lsn(lsn)),
                busy,
                slots: Some(vec![("n2".to_owned(), false)]),
                ..DbStatus::empty()
            };
            let mut v = ClusterView { revision: Revision(9), ..ClusterView::default() };
            v.initialize = Some(Initialize::SystemId(SystemId(42)));
            v.leader = leader.map(|l| Leader { name: Some(name(l)), revision: Revision(3), owner: None });
            for m in 1..3 {
                let mut data = MemberData::new(MemberRole::Replica, "running");
                data.xlog_location = Some(Lsn(optime));
                v.members.insert(name(m), Member { name: name(m), data, revision: Revision(2), owner: None });
            }
            v.status = Some(Status { optime: Lsn(optime), ..Status::default() });
            v.config = Some((DynamicConfig { pause, ..DynamicConfig::default() }, Revision(1)));
            v.history = (1..history)
                .map(|t| shield_core::cluster::HistoryLine {
                    timeline: Timeline(t),
                    lsn: Lsn(1_000 * u64::from(t)),
                    reason: "x".into(),
                    timestamp: None,
                    new_leader: None,
                })
                .collect();
            v.failover = failover.map(|(l, m)| FailoverRequest {
                leader: l.map(name),
                member: m.map(name),
                scheduled_at: None,
                revision: Revision(4),
            });
            let dcs =
                if down { DcsView::Unreachable { since: MonoMillis(NOW - 2_000) } } else { DcsView::Reachable(v) };
            let o = Observation {
                now: MonoMillis(NOW),
                wall_ms: 1_767_225_600_000,
                dcs,
                db,
                outcomes,
                shutdown_requested: false,
                requests: Vec::new(),
                failsafe_vouched: None,
            };
            (st, o)
        },
    )
}

/// The situation around slot maintenance: use_slots on, nothing busy, this node either the running
/// primary holding the key or a running replica of n1, members cascading from each other, and
/// existing slots, active or not, that are wanted, unwanted or unknown.
fn arb_slot_case() -> impl Strategy<Value = (NodeState, Observation)> {
    (
        any::<bool>(),
        prop::collection::vec(prop::option::of(0u8..4), 3),
        prop::collection::vec((0u8..6, any::<bool>()), 0..5),
        prop::bool::weighted(0.9),
    )
        .prop_map(|(leading, cascades, slots, use_slots)| {
            let mut st = NodeState::new(NodeSettings::new(name(0)));
            st.settings.watchdog = WatchdogMode::Off;
            if leading {
                st.lease = Some(LeaseHold { renewed_sent_at: MonoMillis(NOW - 10), fence_at: MonoMillis(NOW + 3_200) });
            }
            let mut v = ClusterView { revision: Revision(9), ..ClusterView::default() };
            v.initialize = Some(Initialize::SystemId(SystemId(42)));
            let leader = if leading { 0 } else { 1 };
            v.leader = Some(Leader { name: Some(name(leader)), revision: Revision(3), owner: None });
            for (m, cascade) in (1..4).zip(cascades) {
                let mut data = MemberData::new(MemberRole::Replica, "running");
                data.xlog_location = Some(Lsn(5));
                data.tags.replicatefrom = cascade.map(name);
                v.members.insert(name(m), Member { name: name(m), data, revision: Revision(2), owner: None });
            }
            let mut cfg = DynamicConfig::default();
            cfg.postgresql.use_slots = use_slots;
            v.config = Some((cfg, Revision(1)));
            v.status = Some(Status { optime: Lsn(5), ..Status::default() });
            let names = ["n0", "n1", "n2", "n3", "old", "backup"];
            let mut slots: Vec<(String, bool)> =
                slots.into_iter().map(|(i, a)| (names[usize::from(i)].to_owned(), a)).collect();
            slots.sort();
            slots.dedup_by(|a, b| a.0 == b.0);
            let db = DbStatus {
                data_dir: DataDir::Valid { system_id: SystemId(42), was_primary: leading },
                process: DbProcess::Running { in_recovery: !leading },
                timeline: Some(Timeline(1)),
                write_lsn: Some(Lsn(5)),
                upstream: (!leading).then(|| name(1)),
                streaming: true,
                slots: Some(slots),
                ..DbStatus::empty()
            };
            let o = Observation {
                now: MonoMillis(NOW),
                wall_ms: 1_767_225_600_000,
                dcs: DcsView::Reachable(v),
                db,
                outcomes: Vec::new(),
                shutdown_requested: false,
                requests: Vec::new(),
                failsafe_vouched: None,
            };
            (st, o)
        })
}

fn arb_any_case() -> impl Strategy<Value = (NodeState, Observation)> {
    (arb_state(), arb_obs())
}

fn paused(o: &Observation, st: &NodeState) -> bool {
    match &o.dcs {
        DcsView::Reachable(v) => v.config.as_ref().map_or(st.config.pause, |c| c.0.pause),
        DcsView::Unreachable { .. } => st.config.pause,
    }
}

const CASES: u32 = 2_000;
/// A property whose premise holds in fewer cases than this checks almost nothing.
const MIN_PREMISE_SHARE: f64 = 0.10;

/// Runs `CASES` cases of `strategy` through `property`, which returns whether the property's
/// premise held (the case where its assertions bite). Fails on a counterexample, and when the
/// premise held in under `MIN_PREMISE_SHARE` of the cases: then the generators need steering.
fn check<S>(name: &str, strategy: S, property: impl Fn(S::Value) -> Result<bool, TestCaseError>)
where
    S: Strategy,
{
    let held = AtomicU64::new(0);
    let total = AtomicU64::new(0);
    let config = ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |case| {
        total.fetch_add(1, Ordering::Relaxed);
        if property(case)? {
            held.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    let (held, total) = (held.load(Ordering::Relaxed), total.load(Ordering::Relaxed));
    let share = held as f64 / total.max(1) as f64;
    println!("{name}: premise held in {held} of {total} cases ({:.1}%)", share * 100.0);
    assert!(share >= MIN_PREMISE_SHARE, "{name}: premise held in only {:.1}% of cases", share * 100.0);
}

/// A promotion is only ever started by a node that, in this very observation, holds the
/// leader key and a lease whose fencing deadline has not passed.
/// Premise: the decision starts a promotion.
#[test]
fn never_promotes_without_the_lease() {
    let cases = prop_oneof![1 => arb_any_case(), 4 => arb_promotion_case()];
    check("never_promotes_without_the_lease", cases, |(st, o)| {
        let d = decide(&st, &o);
        if !d.actions.iter().any(|a| matches!(a, Action::RunDbTask { task: DbTask::Promote { .. } })) {
            return Ok(false);
        }
        let DcsView::Reachable(v) = &o.dcs else { panic!("promoted with the DCS unreachable") };
        prop_assert!(v.is_leader(&name(0)), "promoted without the leader key");
        let hold = d.next.lease.expect("promoted without a lease");
        prop_assert!(hold.fence_at > o.now, "promoted past the fencing deadline");
        Ok(true)
    });
}

/// The side effects decide() asks for keep their rules whatever else happens: no reload while a
/// database task runs or this decision gives the database something to do, no `primary`
/// announced without the lease, and no watchdog left counted as armed without the lease (a
/// failed disarm is tried again).
/// Premise: the decision asks for a reload or a registration.
#[test]
fn side_effects_keep_their_rules() {
    let cases = (arb_any_case(), any::<bool>(), any::<bool>()).prop_map(|((mut st, o), pending, register)| {
        st.reload_pending = pending;
        st.applied_parameters = Some(0);
        st.attached = true;
        st.settings.register_service = register;
        (st, o)
    });
    check("side_effects_keep_their_rules", cases, |(st, o)| {
        let d = decide(&st, &o);
        let db_action = d.actions.iter().any(|a| matches!(a, Action::RunDbTask { .. } | Action::StopDb { .. }));
        if d.actions.contains(&Action::ReloadDb) {
            prop_assert!(o.db.busy.is_none() && !db_action, "reload beside a database task: {:?}", d.actions);
        }
        if d.actions.contains(&Action::RegisterService { role: DbRole::Primary }) {
            prop_assert!(d.next.lease.is_some(), "primary announced without the lease");
        }
        prop_assert!(!d.next.watchdog_armed || d.next.lease.is_some(), "watchdog armed without the lease");
        let premise = d.actions.iter().any(|a| matches!(a, Action::ReloadDb | Action::RegisterService { .. }));
        Ok(premise)
    });
}

/// Once the fencing deadline has passed, the node fences: it holds no lease afterwards and a
/// running database is stopped immediately (unless paused, where Patroni's rules keep it).
/// Premise: the lease held going in has expired, no outcome extends it, and the cluster is not
/// paused.
#[test]
fn passed_deadline_always_fences() {
    let cases = prop_oneof![1 => arb_any_case(), 3 => arb_promotion_case()];
    check("passed_deadline_always_fences", cases, |(st, o)| {
        let d = decide(&st, &o);
        let fence_after = DynamicConfig::default().timing.fence_after_ms();
        let extended = o.outcomes.iter().any(|x| match x {
            Outcome::LeaderRenew { sent_at, result: Ok(()), .. }
            | Outcome::LeaderAcquire { sent_at, result: Ok(true), .. } => sent_at.0 + fence_after > o.now.0,
            _ => false,
        });
        if !paused(&o, &st) {
            prop_assert!(d.next.lease.is_none_or(|h| h.fence_at > o.now), "kept an expired lease");
        }
        let expired = st.lease.is_some_and(|h| h.fence_at <= o.now);
        if !(expired && !extended && !paused(&o, &st)) {
            return Ok(false);
        }
        prop_assert_eq!(d.next.lease, None);
        let running = matches!(o.db.process, DbProcess::Running { .. } | DbProcess::Starting | DbProcess::Unknown);
        if running || o.db.busy.is_some() {
            prop_assert!(d.actions.contains(&Action::StopDb { mode: StopMode::Immediate }), "{:?}", d.actions);
        }
        prop_assert!(!d.actions.contains(&Action::AddVip));
        Ok(true)
    });
}

/// The fencing deadline handed to the driver is never later than ttl after the renewal it
/// was counted from, and the next wake-up is never after it.
/// Premise: the decision hands the driver a fencing deadline (the node holds a lease).
#[test]
fn wake_is_never_after_the_fence() {
    let cases = prop_oneof![1 => arb_any_case(), 1 => arb_promotion_case()];
    check("wake_is_never_after_the_fence", cases, |(st, o)| {
        let d = decide(&st, &o);
        let (Some(f), Some(h)) = (d.fence_at, d.next.lease) else { return Ok(false) };
        prop_assert!(d.wake_at <= f);
        prop_assert!(f.0 < h.renewed_sent_at.0 + d.next.config.timing.ttl_ms);
        Ok(true)
    });
}

/// Slots in use are never dropped, existing ones are not created again, and a slot is only
/// moved forward, only while inactive, and never on the node's own name.
/// Premise: the decision creates, drops or advances a slot.
#[test]
fn never_drops_an_active_slot() {
    let cases = prop_oneof![1 => arb_any_case(), 1 => arb_promotion_case(), 3 => arb_slot_case()];
    check("never_drops_an_active_slot", cases, |(st, o)| {
        let d = decide(&st, &o);
        let mut synced = false;
        for a in &d.actions {
            if let Action::SyncSlots { drop, create, advance } = a {
                synced = true;
                let slots = o.db.slots.clone().unwrap_or_default();
                for (n, to) in advance {
                    prop_assert!(slots.iter().any(|(s, active)| s == n && !active), "advanced {n} in {slots:?}");
                    prop_assert!(o.db.slot_positions.get(n).is_some_and(|at| at < to), "moved {n} back to {to}");
                }
                for n in drop {
                    prop_assert!(slots.iter().any(|(s, active)| s == n && !active), "dropped {n} from {slots:?}");
                }
                prop_assert!(create.iter().all(|c| !slots.iter().any(|(s, _)| s == c)), "created an existing slot");
            }
        }
        Ok(synced)
    });
}

/// Observations, states and decisions survive a JSON round trip (the decision journal), and
/// deciding on the round-tripped observation gives the same decision.
/// Premise: the decision has an action besides publishing the member key.
#[test]
fn serde_round_trips() {
    let cases = prop_oneof![1 => arb_any_case(), 1 => arb_promotion_case()];
    check("serde_round_trips", cases, |(st, o)| {
        let d = decide(&st, &o);
        let o2: Observation = serde_json::from_str(&serde_json::to_string(&o).expect("ser")).expect("de");
        prop_assert_eq!(&o2, &o);
        let d2: shield_core::Decision = serde_json::from_str(&serde_json::to_string(&d).expect("ser")).expect("de");
        prop_assert_eq!(&d2, &d);
        prop_assert_eq!(decide(&st, &o2), d.clone());
        Ok(d.actions.iter().any(|a| !matches!(a, Action::TouchMember { .. })))
    });
}

/// A node restarted from its journal decides as the running one would have: the state decide()
/// returned, written as JSON and read back, gives the same next decision, and so does the state
/// it started from.
/// Premise: the decision changed the state (so the restored state is one decide() produced).
#[test]
fn a_state_restored_from_the_journal_decides_the_same() {
    let cases = prop_oneof![1 => arb_any_case(), 1 => arb_promotion_case()];
    check("a_state_restored_from_the_journal_decides_the_same", cases, |(st, o)| {
        let restore =
            |s: &NodeState| -> NodeState { serde_json::from_str(&serde_json::to_string(s).expect("ser")).expect("de") };
        let d = decide(&st, &o);
        prop_assert_eq!(&decide(&restore(&st), &o), &d);
        let next = decide(&d.next, &o);
        prop_assert_eq!(decide(&restore(&d.next), &o), next);
        Ok(d.next != st)
    });
}

// ---- each DCS key's parser, over arbitrary bytes and JSON (docs/security.md) -------------------

/// A value for one key: arbitrary bytes, or JSON of roughly the key's shape with edge values.
fn arb_value(shaped: BoxedStrategy<serde_json::Value>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![prop::collection::vec(any::<u8>(), 0..24), shaped.prop_map(|v| v.to_string().into_bytes()),]
}

fn arb_scalar() -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just(0u64), Just(u64::MAX), Just(1 << 62), 0u64..100_000].prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![Just(""), Just(" "), Just("n1"), Just("n1,n2"), Just("a/b"), Just("\u{7}"), Just("10")]
            .prop_map(Value::from),
    ]
    .boxed()
}

fn arb_shaped(fields: &'static [&'static str]) -> BoxedStrategy<serde_json::Value> {
    use serde_json::Value;
    arb_scalar()
        .prop_recursive(2, 16, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(prop::sample::select(fields), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
            ]
        })
        .boxed()
}

fn parse_one(key: &str, value: &[u8], revision: u64) -> ClusterView {
    let e = shield_core::cluster::KvEntry {
        key: key.to_owned(),
        value: value.to_vec(),
        revision: Revision(revision),
        owner: None,
    };
    ClusterView::from_entries(Revision(revision), &[e])
}

fn has_anomaly(v: &ClusterView, key: &str) -> bool {
    v.anomalies.iter().any(|a| a.starts_with(&format!("{key}:")))
}

/// `leader`: the key is always there with its revision; it names a member exactly when its
/// trimmed text is a valid member name, and is an anomaly otherwise.
/// Premise: the value is no member name (a dead key).
#[test]
fn leader_values_are_a_name_or_an_anomaly() {
    check("leader", (arb_value(arb_scalar()), 1u64..u64::MAX), |(raw, rev)| {
        let v = parse_one("leader", &raw, rev);
        let key = v.leader.clone().ok_or_else(|| TestCaseError::fail("leader key lost"))?;
        prop_assert_eq!(key.revision, Revision(rev));
        let text = String::from_utf8_lossy(&raw);
        prop_assert_eq!(key.name.clone(), MemberName::new(text.trim()).ok());
        prop_assert_eq!(key.name.is_none(), has_anomaly(&v, "leader"));
        Ok(key.name.is_none())
    });
}

/// `members/<name>`: always a member; role and state `unknown` with an anomaly exactly when the
/// value is not a JSON object. Premise: it is not.
#[test]
fn member_values_are_a_member_whatever_they_hold() {
    let fields = &["role", "state", "timeline", "xlog_location", "tags", "conn_url", "pause"];
    check("members", arb_value(arb_shaped(fields)), |raw| {
        let v = parse_one("members/n1", &raw, 3);
        let m = v.members.get(&name(1)).ok_or_else(|| TestCaseError::fail("member lost"))?;
        let object = serde_json::from_slice::<serde_json::Value>(&raw).is_ok_and(|j| j.is_object());
        prop_assert_eq!(!object, has_anomaly(&v, "members/n1"));
        if !object {
            prop_assert_eq!(m.data.role, MemberRole::Unknown);
            prop_assert_eq!(m.data.state.as_str(), "unknown");
        }
        Ok(!object)
    });
}

/// `history`: every line kept obeys the timeline bound, and the cluster timeline stays within
/// it. Premise: some line was left out as implausible.
#[test]
fn history_timelines_obey_their_bound() {
    let line = (prop_oneof![1u32..40, Just(u32::MAX), any::<u32>()], any::<u64>())
        .prop_map(|(tl, lsn)| serde_json::json!([tl, lsn, "r"]));
    let raw = prop_oneof![
        prop::collection::vec(line, 0..6).prop_map(|l| serde_json::Value::Array(l).to_string().into_bytes()),
        arb_value(arb_shaped(&["x"])),
    ];
    check("history", raw, |raw| {
        let v = parse_one("history", &raw, 3);
        for (i, h) in v.history.iter().enumerate() {
            prop_assert!(h.timeline.0 <= i as u32 + 1 + shield_core::cluster::MAX_TIMELINE_LEAD, "{:?}", v.history);
        }
        prop_assert!(v.timeline().0 <= v.history.len() as u32 + 2 + shield_core::cluster::MAX_TIMELINE_LEAD);
        Ok(v.anomalies.iter().any(|a| a.contains("implausible")))
    });
}

/// `status`, `sync`, `failover`, `config`, `initialize`: a value either parses into something
/// that obeys the key's rule or is an anomaly, never dropped silently.
/// Premise: the value parsed (not an anomaly).
#[test]
fn other_keys_parse_into_their_rule_or_an_anomaly() {
    let keys = prop::sample::select(&["status", "sync", "failover", "config", "initialize"][..]);
    let fields = &["optime", "slots", "leader", "sync_standby", "member", "scheduled_at", "ttl", "loop_wait"];
    check("other keys", (keys, arb_value(arb_shaped(fields))), |(key, raw)| {
        let v = parse_one(key, &raw, 7);
        let bad = has_anomaly(&v, key);
        match key {
            "status" => {
                prop_assert_eq!(v.status.is_some(), !bad);
                prop_assert_eq!(v.status_revision, v.status.as_ref().map(|_| Revision(7)));
            }
            "sync" => {
                if let Some(s) = &v.sync {
                    prop_assert!(s.sync_standby.windows(2).all(|w| w[0] <= w[1]));
                }
            }
            "failover" => {
                prop_assert_eq!(v.failover_revision, Some(Revision(7)));
                if let Some(f) = &v.failover {
                    prop_assert!(f.leader.is_some() || f.member.is_some(), "{:?}", f);
                }
            }
            "config" => prop_assert_eq!(v.config.is_some(), !bad),
            _ => {
                let text = String::from_utf8_lossy(&raw);
                let want = match text.trim() {
                    "" => Initialize::Racing,
                    t => t.parse().map_or_else(|_| Initialize::Invalid(t.to_owned()), Initialize::SystemId),
                };
                prop_assert_eq!(matches!(want, Initialize::Invalid(_)), bad);
                prop_assert_eq!(v.initialize, Some(want));
            }
        }
        Ok(!bad)
    });
}

/// decide() and a dead leader key: a replica replaces the key only at the revision it has seen
/// stand for a whole ttl, only when the key names no member with a key, and then it does
/// (liveness). Premise: the key is dead and has stood for ttl.
#[test]
fn a_dead_leader_key_is_replaced_only_after_ttl_at_its_revision() {
    let case =
        (arb_value(arb_scalar()), prop::sample::select(&[0u8, 1, 2][..]), 0u64..8_000, 1u64..1_000, any::<bool>());
    check("dead leader key", case, |(raw, members, waited, rev, same_rev)| {
        let mut view = parse_one("leader", &raw, rev);
        for i in 1..=members {
            let data = MemberData::new(MemberRole::Replica, "running");
            view.members.insert(name(i), Member { name: name(i), data, revision: Revision(1), owner: None });
        }
        let mut st = NodeState::new(NodeSettings::new(name(9)));
        st.settings.watchdog = WatchdogMode::Off;
        let seen = if same_rev { rev } else { rev + 1 };
        st.dead_leader_key = Some((Revision(seen), MonoMillis(NOW - waited)));
        let db = DbStatus {
            data_dir: DataDir::Valid { system_id: SystemId(42), was_primary: false },
            process: DbProcess::Running { in_recovery: true },
            timeline: Some(Timeline(1)),
            received_lsn: Some(Lsn(10)),
            replayed_lsn: Some(Lsn(10)),
            ..DbStatus::empty()
        };
        let dead = view.leader.as_ref().is_some_and(|l| l.name.as_ref().is_none_or(|n| !view.members.contains_key(n)));
        let due = dead && same_rev && waited >= st.config.timing.ttl_ms;
        view.initialize = Some(Initialize::SystemId(SystemId(42)));
        let obs = Observation {
            now: MonoMillis(NOW),
            wall_ms: 0,
            dcs: DcsView::Reachable(view),
            db,
            outcomes: vec![Outcome::PeersProbed { reports: Default::default() }],
            shutdown_requested: false,
            requests: Vec::new(),
            failsafe_vouched: None,
        };
        let d = decide(&st, &obs);
        let took: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::AcquireLeader { replacing, .. } => Some(*replacing),
                _ => None,
            })
            .collect();
        if due {
            prop_assert_eq!(took, vec![Some(Revision(rev))], "{:?}", d.reason);
        } else {
            prop_assert!(took.is_empty(), "{:?} {:?}", took, d.reason);
        }
        Ok(due)
    });
}

/// An observation at `NOW` of `view`, `db` and at most one outcome, with nothing else asked.
fn reachable(view: ClusterView, db: DbStatus, outcome: Option<Outcome>) -> Observation {
    Observation {
        now: MonoMillis(NOW),
        wall_ms: 1_767_225_600_000,
        dcs: DcsView::Reachable(view),
        db,
        outcomes: outcome.into_iter().collect(),
        shutdown_requested: false,
        requests: Vec::new(),
        failsafe_vouched: None,
    }
}

/// A lock holder whose database does not answer its status query, as the driver reports it:
/// the last status read (a primary, a replica, or none) with a live or unchecked postmaster, a
/// lease that is still good (perhaps just renewed), a spell that began up to
/// `primary_start_timeout` ago, members that could or could not take over, a switchover request
/// or not.
fn arb_unknown_holder_case() -> impl Strategy<Value = (NodeState, Observation)> {
    let bound = DynamicConfig::default().status_unknown_timeout_ms();
    (
        prop_oneof![Just(None), Just(Some(true)), Just(Some(false))],
        prop_oneof![Just(None), Just(Some(true))],
        (NOW + 1..NOW + 3_210, prop::option::of(NOW - bound..=NOW), any::<bool>(), any::<bool>()),
        (prop::collection::vec((1u8..4, any::<bool>()), 0..3), prop::bool::weighted(0.2), prop::bool::weighted(0.2)),
    )
        .prop_map(|(last, alive, (fence, since, armed, renewed), (members, failover, vip))| {
            let mut s = NodeSettings::new(name(0));
            s.watchdog = WatchdogMode::Automatic;
            s.vip = vip;
            let mut st = NodeState::new(s);
            st.lease = Some(LeaseHold { renewed_sent_at: MonoMillis(fence - 3_210), fence_at: MonoMillis(fence) });
            st.crash_since = since.map(MonoMillis);
            st.watchdog_armed = armed;
            st.vip_bound = vip;
            let last = last.map(|primary| DbStatus {
                data_dir: DataDir::Valid { system_id: SystemId(42), was_primary: primary },
                process: DbProcess::Running { in_recovery: !primary },
                timeline: Some(Timeline(1)),
                write_lsn: Some(Lsn(5_000)),
                ..DbStatus::empty()
            });
            let db = DbStatus::unanswered(last.as_ref(), alive);
            let mut v = ClusterView { revision: Revision(9), ..ClusterView::default() };
            v.initialize = Some(Initialize::SystemId(SystemId(42)));
            v.leader = Some(Leader { name: Some(name(0)), revision: Revision(3), owner: None });
            for (m, running) in members {
                let mut data = MemberData::new(MemberRole::Replica, if running { "running" } else { "stopped" });
                data.xlog_location = Some(Lsn(5_000));
                v.members.insert(name(m), Member { name: name(m), data, revision: Revision(2), owner: None });
            }
            v.config = Some((DynamicConfig::default(), Revision(1)));
            v.status = Some(Status { optime: Lsn(5_000), ..Status::default() });
            v.failover = failover.then(|| FailoverRequest {
                leader: Some(name(0)),
                member: Some(name(1)),
                scheduled_at: None,
                revision: Revision(4),
            });
            let renewal =
                Outcome::LeaderRenew { sent_at: MonoMillis(NOW - 1_000), fence_after_ms: 3_210, result: Ok(()) };
            (st, reachable(v, db, renewed.then_some(renewal)))
        })
}

/// A status query that does not answer is never by itself a reason for the lock holder to stop,
/// demote or give up the lock: within `primary_start_timeout` (at least `ttl`) of the start of
/// the spell it renews and keeps everything as it is.
/// Premise: the node holds the key and a good lease, and its status is unknown.
#[test]
fn an_unknown_status_alone_never_costs_the_lock() {
    check("an_unknown_status_alone_never_costs_the_lock", arb_unknown_holder_case(), |(st, o)| {
        let d = decide(&st, &o);
        prop_assert!(o.db.is_unknown());
        prop_assert!(d.next.lease.is_some(), "{}", d.reason);
        prop_assert!(d.actions.iter().any(|a| matches!(a, Action::RenewLeader { .. })), "{:?}", d.actions);
        for a in &d.actions {
            let bad = matches!(
                a,
                Action::StopDb { .. }
                    | Action::ReleaseLeader
                    | Action::RunDbTask { .. }
                    | Action::RemoveVip
                    | Action::DisarmWatchdog
                    | Action::WriteStatus { .. }
            );
            prop_assert!(!bad, "{a:?} in {:?} ({})", d.actions, d.reason);
        }
        Ok(true)
    });
}

/// A replica whose status query does not answer, in a cluster whose leader key is gone, as the
/// driver reports it (its position the last one read, ahead of everyone's), with the peers' answers
/// that would make it the healthiest, in pause or not, named in a failover or not.
fn arb_unknown_racer_case() -> impl Strategy<Value = (NodeState, Observation)> {
    (any::<bool>(), any::<bool>(), any::<bool>(), prop_oneof![Just(None), Just(Some(true))]).prop_map(
        |(pause, named, probed, alive)| {
            let mut st = NodeState::new(NodeSettings::new(name(0)));
            st.settings.watchdog = WatchdogMode::Off;
            let last = DbStatus {
                data_dir: DataDir::Valid { system_id: SystemId(42), was_primary: false },
                process: DbProcess::Running { in_recovery: true },
                timeline: Some(Timeline(1)),
                received_lsn: Some(Lsn(9_000)),
                replayed_lsn: Some(Lsn(9_000)),
                upstream: Some(name(1)),
                streaming: true,
                ..DbStatus::empty()
            };
            let mut v = ClusterView { revision: Revision(9), ..ClusterView::default() };
            v.initialize = Some(Initialize::SystemId(SystemId(42)));
            v.config = Some((DynamicConfig { pause, ..DynamicConfig::default() }, Revision(1)));
            v.status = Some(Status { optime: Lsn(9_000), ..Status::default() });
            v.failover = named.then(|| FailoverRequest {
                leader: None,
                member: Some(name(0)),
                scheduled_at: None,
                revision: Revision(4),
            });
            let behind = PeerReport {
                is_primary: false,
                wal_position: Some(Lsn(10)),
                timeline: Some(Timeline(1)),
                can_promote: true,
                priority: 1,
            };
            let probe = Outcome::PeersProbed { reports: [(name(2), behind)].into_iter().collect() };
            (st, reachable(v, DbStatus::unanswered(Some(&last), alive), probed.then_some(probe)))
        },
    )
}

/// A node whose status is unknown never takes the lock or promotes, whatever else it sees.
/// Premise: the status is unknown.
#[test]
fn an_unknown_status_never_takes_the_lock_or_promotes() {
    let cases = prop_oneof![
        1 => arb_any_case(),
        1 => arb_promotion_case(),
        1 => arb_unknown_holder_case(),
        2 => arb_unknown_racer_case()
    ];
    check("an_unknown_status_never_takes_the_lock_or_promotes", cases, |(st, o)| {
        if !o.db.is_unknown() {
            return Ok(false);
        }
        let d = decide(&st, &o);
        for a in &d.actions {
            let bad = matches!(a, Action::AcquireLeader { .. } | Action::RunDbTask { task: DbTask::Promote { .. } });
            prop_assert!(!bad, "{a:?} in {:?} ({})", d.actions, d.reason);
        }
        Ok(true)
    });
}
