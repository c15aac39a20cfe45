//! Properties of decide() over arbitrary states and observations.

use proptest::prelude::*;
use shield_core::cluster::{ClusterView, FailoverRequest, Initialize, Leader, Member, MemberData, Status};
use shield_core::observation::PeerReport;
use shield_core::ports::ErrorKind;
use shield_core::{
    decide, Action, DataDir, DbProcess, DbStatus, DbTask, DcsView, DynamicConfig, LeaseHold, Lsn, MemberName,
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
            v.status = optime.map(|o| Status { optime: Lsn(o), slots: Default::default() });
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
        })
}

fn paused(o: &Observation, st: &NodeState) -> bool {
    match &o.dcs {
        DcsView::Reachable(v) => v.config.as_ref().map_or(st.config.pause, |c| c.0.pause),
        DcsView::Unreachable { .. } => st.config.pause,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// A promotion is only ever started by a node that, in this very observation, holds the
    /// leader key and a lease whose fencing deadline has not passed.
    #[test]
    fn never_promotes_without_the_lease(st in arb_state(), o in arb_obs()) {
        let d = decide(&st, &o);
        if d.actions.iter().any(|a| matches!(a, Action::RunDbTask { task: DbTask::Promote { .. } })) {
            let DcsView::Reachable(v) = &o.dcs else { panic!("promoted with the DCS unreachable") };
            prop_assert!(v.is_leader(&name(0)), "promoted without the leader key");
            let hold = d.next.lease.expect("promoted without a lease");
            prop_assert!(hold.fence_at > o.now, "promoted past the fencing deadline");
        }
    }

    /// Once the fencing deadline has passed, the node fences: it holds no lease afterwards and a
    /// running database is stopped immediately (unless paused, where Patroni's rules keep it).
    #[test]
    fn passed_deadline_always_fences(st in arb_state(), o in arb_obs()) {
        let d = decide(&st, &o);
        let fence_after = DynamicConfig::default().timing.fence_after_ms();
        let extended = o.outcomes.iter().any(|x| match x {
            Outcome::LeaderRenew { sent_at, result: Ok(()), .. } | Outcome::LeaderAcquire { sent_at, result: Ok(true), .. } => {
                sent_at.0 + fence_after > o.now.0
            }
            _ => false,
        });
        if !paused(&o, &st) {
            prop_assert!(d.next.lease.is_none_or(|h| h.fence_at > o.now), "kept an expired lease");
        }
        let expired = st.lease.is_some_and(|h| h.fence_at <= o.now);
        if expired && !extended && !paused(&o, &st) {
            prop_assert_eq!(d.next.lease, None);
            let running = matches!(o.db.process, DbProcess::Running { .. } | DbProcess::Starting | DbProcess::Unknown);
            if running || o.db.busy.is_some() {
                prop_assert!(d.actions.contains(&Action::StopDb { mode: StopMode::Immediate }), "{:?}", d.actions);
            }
            prop_assert!(!d.actions.contains(&Action::AddVip));
        }
    }

    /// The fencing deadline handed to the driver is never later than ttl after the renewal it
    /// was counted from, and the next wake-up is never after it.
    #[test]
    fn wake_is_never_after_the_fence(st in arb_state(), o in arb_obs()) {
        let d = decide(&st, &o);
        if let (Some(f), Some(h)) = (d.fence_at, d.next.lease) {
            prop_assert!(d.wake_at <= f);
            prop_assert!(f.0 < h.renewed_sent_at.0 + d.next.config.timing.ttl_ms);
        }
    }

    /// Slots in use are never dropped, and existing ones are not created again.
    #[test]
    fn never_drops_an_active_slot(st in arb_state(), o in arb_obs()) {
        let d = decide(&st, &o);
        for a in &d.actions {
            if let Action::SyncSlots { drop, create } = a {
                let slots = o.db.slots.clone().unwrap_or_default();
                for n in drop {
                    prop_assert!(slots.iter().any(|(s, active)| s == n && !active), "dropped {n} from {slots:?}");
                }
                prop_assert!(create.iter().all(|c| !slots.iter().any(|(s, _)| s == c)), "created an existing slot");
            }
        }
    }

    /// Same input, same output.
    #[test]
    fn decide_is_deterministic(st in arb_state(), o in arb_obs()) {
        prop_assert_eq!(decide(&st, &o), decide(&st, &o));
    }

    /// Observations, states and decisions survive a JSON round trip (the decision journal).
    #[test]
    fn serde_round_trips(st in arb_state(), o in arb_obs()) {
        let d = decide(&st, &o);
        let o2: Observation = serde_json::from_str(&serde_json::to_string(&o).expect("ser")).expect("de");
        prop_assert_eq!(&o2, &o);
        let d2: shield_core::Decision = serde_json::from_str(&serde_json::to_string(&d).expect("ser")).expect("de");
        prop_assert_eq!(&d2, &d);
        prop_assert_eq!(decide(&st, &o2), d);
    }
}
