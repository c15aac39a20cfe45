//! decide() is total: it never panics, whatever the state and the observation hold.
//!
//! The generators here are deliberately unrealistic. Every number is drawn over its full range,
//! with a bias towards the edges (0, 1, MAX, MAX - 1, i64::MIN) and towards a shared window of
//! ordinary values so that edges meet ordinary values in the same comparison. Every `Outcome`,
//! `DbTask`, `DataDir` and `DbProcess` variant is drawn. The DCS parsers are fed arbitrary bytes
//! and arbitrary JSON under every key they read.

use proptest::prelude::*;
use serde_json::Value;
use shield_core::cluster::{
    parse_timestamp_ms, ClusterView, FailoverRequest, HistoryLine, Initialize, Leader, Member, MemberData, Status,
    SyncState,
};
use shield_core::observation::PeerReport;
use shield_core::ports::{ErrorKind, PortError};
use shield_core::{
    decide, DataDir, DbProcess, DbStatus, DbTask, DcsView, DynamicConfig, KvEntry, LeaseHold, Lsn, MemberName,
    MemberRole, MonoMillis, NodeSettings, NodeState, Observation, Outcome, Request, Revision, StartAs, StopMode,
    SystemId, Tags, Timeline, Timing, WatchdogMode,
};

/// The ordinary window that edge values are mixed with.
const NOW: u64 = 1_000_000;
/// 2026-01-01T00:00:00Z.
const WALL: i64 = 1_767_225_600_000;

fn name(i: u8) -> MemberName {
    // n0 is always "me"; the last one exercises slot_name's character mapping.
    let s = match i % 5 {
        4 => "Node-4.Example".to_owned(),
        i => format!("n{i}"),
    };
    MemberName::new(s).expect("valid")
}

fn arb_name() -> impl Strategy<Value = MemberName> {
    (0u8..5).prop_map(name)
}

fn ext_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(0u64),
        1 => Just(1u64),
        2 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(u64::MAX / 2),
        2 => any::<u64>(),
        3 => 0u64..20_000,
        2 => u64::MAX - 20_000..=u64::MAX,
    ]
}

/// Points in time: edges, anything, or a window around NOW so that deadlines and now meet.
fn ext_time() -> impl Strategy<Value = MonoMillis> {
    prop_oneof![
        3 => ext_u64(),
        3 => NOW - 10_000..NOW + 10_000,
    ]
    .prop_map(MonoMillis)
}

fn ext_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        2 => Just(i64::MIN),
        2 => Just(i64::MAX),
        1 => Just(i64::MIN + 1),
        1 => Just(0i64),
        1 => Just(-1i64),
        2 => any::<i64>(),
        3 => WALL - 100_000..WALL + 100_000,
    ]
}

fn ext_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        1 => Just(0u32),
        2 => Just(u32::MAX),
        1 => Just(u32::MAX - 1),
        2 => any::<u32>(),
        3 => 1u32..5,
    ]
}

fn arb_lsn() -> impl Strategy<Value = Lsn> {
    ext_u64().prop_map(Lsn)
}

fn arb_tl() -> impl Strategy<Value = Timeline> {
    ext_u32().prop_map(Timeline)
}

fn arb_kind() -> impl Strategy<Value = ErrorKind> {
    prop_oneof![
        Just(ErrorKind::Unreachable),
        Just(ErrorKind::CompareFailed),
        Just(ErrorKind::LeaseLost),
        Just(ErrorKind::Rejected),
        Just(ErrorKind::Io),
        Just(ErrorKind::BadData),
    ]
}

fn arb_task() -> impl Strategy<Value = DbTask> {
    prop_oneof![
        Just(DbTask::Bootstrap),
        arb_name().prop_map(|source| DbTask::Clone { source }),
        Just(DbTask::Start(StartAs::Primary)),
        prop::option::of(arb_name()).prop_map(|upstream| DbTask::Start(StartAs::Replica { upstream })),
        Just(DbTask::Stop(StopMode::Fast)),
        Just(DbTask::Stop(StopMode::Immediate)),
        any::<u32>().prop_map(|t| DbTask::Promote { timeline: Timeline(t) }),
        arb_name().prop_map(|upstream| DbTask::Follow { upstream }),
        arb_name().prop_map(|source| DbTask::Rewind { source }),
        Just(DbTask::WipeDataDir),
        Just(DbTask::Restart),
    ]
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

/// Any timing at all, including ones `Timing::checked` refuses (a journal line or a hand-built
/// state can hold them).
fn arb_any_timing() -> impl Strategy<Value = Timing> {
    (ext_u64(), ext_u64(), ext_u64(), ext_u64()).prop_map(
        |(ttl_ms, loop_wait_ms, retry_timeout_ms, fence_margin_ms)| Timing {
            ttl_ms,
            loop_wait_ms,
            retry_timeout_ms,
            fence_margin_ms,
        },
    )
}

/// Extreme timings that `Timing::checked` accepts: a ttl up to u64::MAX, the other values at
/// their floors or anywhere in the room the fencing rule leaves.
fn arb_accepted_timing() -> impl Strategy<Value = Timing> {
    let ttl = prop_oneof![Just(Timing::MIN_TTL_MS), Just(u64::MAX), Just(u64::MAX / 2), Timing::MIN_TTL_MS..u64::MAX];
    (ttl, any::<u64>(), any::<u64>(), any::<u64>(), any::<(bool, bool, bool)>()).prop_filter_map(
        "refused by Timing::checked",
        |(ttl_ms, a, b, c, (min_loop, min_retry, no_margin))| {
            let loop_wait_ms =
                if min_loop { Timing::MIN_LOOP_WAIT_MS } else { Timing::MIN_LOOP_WAIT_MS + a % (ttl_ms / 4) };
            let retry_timeout_ms =
                if min_retry { Timing::MIN_RETRY_TIMEOUT_MS } else { Timing::MIN_RETRY_TIMEOUT_MS + b % (ttl_ms / 8) };
            let fence_margin_ms = if no_margin { 0 } else { c % (ttl_ms / 2) };
            Timing { ttl_ms, loop_wait_ms, retry_timeout_ms, fence_margin_ms }.checked().ok()
        },
    )
}

fn arb_timing() -> BoxedStrategy<Timing> {
    prop_oneof![Just(Timing::default()), arb_accepted_timing(), arb_any_timing()].boxed()
}

fn arb_config() -> BoxedStrategy<DynamicConfig> {
    (
        arb_timing(),
        (ext_u64(), prop::option::of(ext_u64()), ext_u64(), ext_u64()),
        (any::<[bool; 9]>(), prop::bool::weighted(0.2)),
        (ext_u32(), ext_u32()),
    )
        .prop_map(|(timing, (lag, sync_lag, start, stop), (b, pause), (sync_count, max_history))| {
            let mut c = DynamicConfig {
                timing,
                maximum_lag_on_failover_bytes: lag,
                maximum_lag_on_syncnode_bytes: sync_lag,
                primary_start_timeout_ms: start,
                primary_stop_timeout_ms: stop,
                pause,
                synchronous_mode: b[1],
                synchronous_mode_strict: b[2],
                synchronous_node_count: sync_count,
                check_timeline: b[3],
                failsafe_mode: b[4] && b[0],
                max_timelines_history: max_history,
                ..DynamicConfig::default()
            };
            c.postgresql.use_pg_rewind = b[5];
            c.postgresql.use_slots = b[6];
            c.postgresql.remove_data_directory_on_rewind_failure = b[7];
            c.postgresql.remove_data_directory_on_diverged_timelines = b[8];
            c
        })
        .boxed()
}

fn arb_tags() -> impl Strategy<Value = Tags> {
    (any::<(bool, bool, bool)>(), prop::option::of(ext_i64()), prop::option::of(arb_name())).prop_map(
        |((nofailover, clonefrom, nosync), failover_priority, replicatefrom)| Tags {
            nofailover,
            clonefrom,
            nosync,
            failover_priority,
            replicatefrom,
            ..Tags::default()
        },
    )
}

fn arb_state() -> BoxedStrategy<NodeState> {
    (
        (
            arb_tags(),
            prop_oneof![Just(WatchdogMode::Off), Just(WatchdogMode::Automatic), Just(WatchdogMode::Required)],
            prop::option::of(ext_u64()),
            any::<bool>(),
            arb_config(),
        ),
        prop::option::of((ext_time(), ext_time())),
        prop::option::of((arb_tl(), arb_lsn())),
        (
            prop::option::of(ext_time()),
            prop::option::of(ext_time()),
            prop::option::of(ext_time()),
            prop::option::of(ext_time()),
        ),
        any::<[bool; 8]>(),
    )
        .prop_map(|((tags, watchdog, margin, vip, config), lease, promoted_from, times, b)| {
            let mut s = NodeSettings::new(name(0));
            s.tags = tags;
            s.watchdog = watchdog;
            s.watchdog_safety_margin_ms = margin;
            s.vip = vip;
            let mut st = NodeState::new(s);
            st.config = config;
            st.lease = lease.map(|(renewed_sent_at, fence_at)| LeaseHold { renewed_sent_at, fence_at });
            st.promoted_from = promoted_from;
            (st.crash_since, st.backoff_until, st.yielding_since, st.not_streaming_since) = times;
            st.watchdog_armed = b[0];
            st.vip_bound = b[1];
            st.bootstrapping = b[2];
            st.demoting = b[3];
            st.shutting_down = b[4] && b[5];
            st.rewind_failed = b[6];
            st.probe_requested = b[7];
            st
        })
        .boxed()
}

fn arb_member_data() -> BoxedStrategy<MemberData> {
    (
        prop_oneof![
            Just(MemberRole::Primary),
            Just(MemberRole::Replica),
            Just(MemberRole::StandbyLeader),
            Just(MemberRole::Uninitialized),
            Just(MemberRole::Demoted),
            Just(MemberRole::Promoted),
            Just(MemberRole::Unknown),
        ],
        prop::sample::select(vec!["running", "stopped", "crashed", "starting", "unknown", "creating replica", ""]),
        prop::option::of(arb_lsn()),
        prop::option::of(arb_tl()),
        arb_tags(),
    )
        .prop_map(|(role, state, xlog, tl, tags)| {
            let mut m = MemberData::new(role, state);
            m.xlog_location = xlog;
            m.timeline = tl;
            m.tags = tags;
            m
        })
        .boxed()
}

fn arb_view() -> BoxedStrategy<ClusterView> {
    let failover = (
        prop::option::of(arb_name()),
        prop::option::of(arb_name()),
        prop::option::of(ext_i64()),
        ext_u64().prop_map(Revision),
    )
        .prop_map(|(leader, member, at, revision)| FailoverRequest {
            leader,
            member,
            scheduled_at: at.map(|ms| (ms, format!("at {ms}"))),
            revision,
        });
    (
        (
            ext_u64().prop_map(Revision),
            prop_oneof![
                Just(None),
                Just(Some(Initialize::Racing)),
                ext_u64().prop_map(|s| Some(Initialize::SystemId(SystemId(s)))),
                Just(Some(Initialize::Invalid("x".into()))),
            ],
            prop::option::of(arb_config()),
            prop::option::of(prop::option::of(arb_name())),
        ),
        prop::collection::vec((arb_name(), arb_member_data()), 0..5),
        (prop::option::of(failover), prop::option::of(ext_u64())),
        prop::option::of((prop::option::of(arb_name()), prop::collection::vec(arb_name(), 0..3))),
        prop::collection::vec((arb_tl(), arb_lsn()), 0..3),
        prop::option::of((arb_lsn(), prop::collection::vec(arb_lsn(), 0..2))),
    )
        .prop_map(|((revision, initialize, config, leader), members, (failover, frev), sync, history, status)| {
            ClusterView {
                revision,
                initialize,
                config: config.map(|c| (c, Revision(1))),
                config_json: None,
                leader: leader.map(|name| Leader { name, revision: Revision(u64::MAX), owner: None }),
                members: members
                    .into_iter()
                    .map(|(n, data)| (n.clone(), Member { name: n, data, revision: Revision(0), owner: None }))
                    .collect(),
                failover,
                failover_revision: frev.map(Revision),
                status_revision: frev.map(Revision),
                sync: sync.map(|(leader, sync_standby)| SyncState { leader, sync_standby, revision: Revision(0) }),
                history: history
                    .into_iter()
                    .map(|(timeline, lsn)| HistoryLine {
                        timeline,
                        lsn,
                        reason: String::new(),
                        timestamp: None,
                        new_leader: None,
                    })
                    .collect(),
                status: status.map(|(optime, slots)| Status {
                    optime,
                    retain_slots: (0..slots.len()).map(|i| format!("s{i}")).collect(),
                    slots: slots.into_iter().enumerate().map(|(i, l)| (format!("s{i}"), l)).collect(),
                }),
                failsafe: None,
                anomalies: Vec::new(),
            }
        })
        .boxed()
}

fn arb_db() -> BoxedStrategy<DbStatus> {
    (
        prop_oneof![
            Just(DataDir::Missing),
            Just(DataDir::Empty),
            (ext_u64(), any::<bool>())
                .prop_map(|(s, was_primary)| DataDir::Valid { system_id: SystemId(s), was_primary }),
            Just(DataDir::Invalid("bad".into())),
            Just(DataDir::Unknown),
        ],
        arb_process(),
        prop::option::of(arb_tl()),
        (prop::option::of(arb_lsn()), prop::option::of(arb_lsn()), prop::option::of(arb_lsn())),
        (prop::option::of(arb_name()), any::<bool>(), prop::option::of(arb_task())),
        (prop::option::of((arb_tl(), arb_lsn())), prop::option::of(arb_tl())),
        prop::option::of(prop::collection::vec(
            (arb_name().prop_map(|n| shield_core::slot_name(&n)), any::<bool>()),
            0..4,
        )),
    )
        .prop_map(
            |(
                data_dir,
                process,
                timeline,
                (w, r, p),
                (upstream, streaming, busy),
                (branched_from, checkpoint_timeline),
                slots,
            )| {
                DbStatus {
                    data_dir,
                    process,
                    timeline,
                    write_lsn: w,
                    received_lsn: r,
                    replayed_lsn: p,
                    upstream,
                    streaming,
                    busy,
                    slot_positions: slots
                        .iter()
                        .flatten()
                        .enumerate()
                        .map(|(i, (n, _))| (n.clone(), shield_core::Lsn(i as u64 * 1_000)))
                        .collect(),
                    branched_from,
                    slots,
                    checkpoint_timeline,
                }
            },
        )
        .boxed()
}

fn arb_outcome() -> BoxedStrategy<Outcome> {
    let report = (any::<(bool, bool)>(), prop::option::of(arb_lsn()), prop::option::of(arb_tl()), ext_i64()).prop_map(
        |((is_primary, can_promote), wal_position, timeline, priority)| PeerReport {
            is_primary,
            wal_position,
            timeline,
            can_promote,
            priority,
        },
    );
    prop_oneof![
        (ext_time(), prop_oneof![any::<bool>().prop_map(Ok), arb_kind().prop_map(Err)])
            .prop_map(|(sent_at, result)| Outcome::LeaderAcquire { sent_at, fence_after_ms: sent_at.0 / 7, result }),
        (ext_time(), prop_oneof![Just(Ok(())), arb_kind().prop_map(Err)]).prop_map(|(sent_at, result)| {
            Outcome::LeaderRenew { sent_at, fence_after_ms: u64::MAX - sent_at.0 / 3, result }
        }),
        prop_oneof![Just(Ok(())), arb_kind().prop_map(Err)].prop_map(|result| Outcome::LeaderRelease { result }),
        prop_oneof![any::<bool>().prop_map(Ok), arb_kind().prop_map(Err)]
            .prop_map(|result| Outcome::InitializeRace { result }),
        prop::collection::btree_map(arb_name(), report, 0..4).prop_map(|reports| Outcome::PeersProbed { reports }),
        (ext_time(), ext_u64(), prop::collection::vec((".{0,8}", ".{0,8}"), 0..3)).prop_map(
            |(sent_at, fence_after_ms, refused)| Outcome::FailsafeConfirmed { sent_at, fence_after_ms, refused }
        ),
        (arb_task(), prop::option::of(arb_kind())).prop_map(|(task, err)| Outcome::DbTaskDone {
            task,
            result: err.map_or(Ok(()), |k| Err(PortError::new(k, "failed"))),
        }),
        (prop_oneof![Just(StopMode::Fast), Just(StopMode::Immediate)], any::<bool>())
            .prop_map(|(mode, ok)| { Outcome::Stopped { mode, result: if ok { Ok(()) } else { Err("no".into()) } } }),
        arb_kind().prop_map(|kind| Outcome::DcsWriteFailed { what: "status".into(), kind }),
        Just(Outcome::WatchdogFailed { reason: "no device".into() }),
        any::<bool>().prop_map(|adding| Outcome::VipFailed { adding, reason: "no".into() }),
    ]
    .boxed()
}

fn arb_obs() -> BoxedStrategy<Observation> {
    (
        ext_time(),
        ext_i64(),
        prop_oneof![
            4 => arb_view().prop_map(DcsView::Reachable),
            1 => ext_time().prop_map(|since| DcsView::Unreachable { since }),
        ],
        arb_db(),
        prop::collection::vec(arb_outcome(), 0..4),
        any::<bool>(),
        prop::collection::vec(prop_oneof![Just(Request::Restart), Just(Request::Reinitialize)], 0..3),
        prop::option::of((arb_name(), ext_time(), ext_u64())),
    )
        .prop_map(|(now, wall_ms, dcs, db, outcomes, shutdown_requested, requests, failsafe_vouched)| Observation {
            now,
            wall_ms,
            dcs,
            db,
            outcomes,
            shutdown_requested,
            requests,
            failsafe_vouched,
        })
        .boxed()
}

/// The situation a case is steered into. Fully random cases rarely reach deep branches (a lock
/// holder with a running primary and a scheduled switchover is one case in ten thousand), so
/// three quarters of the cases keep their full-range numbers but have the structure of one
/// handler imposed.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Random,
    Leader,
    Follower,
    Unlocked,
}

fn shaped(
    shape: Shape,
    mut st: NodeState,
    mut o: Observation,
    knobs: [bool; 6],
    ahead_ms: u64,
) -> (NodeState, Observation) {
    if matches!(shape, Shape::Random) {
        return (st, o);
    }
    let DcsView::Reachable(view) = &mut o.dcs else { return (st, o) };
    let system_id = o.db.system_id().unwrap_or(SystemId(7));
    o.db.data_dir = DataDir::Valid { system_id, was_primary: knobs[0] };
    view.initialize = knobs[1].then_some(Initialize::SystemId(system_id));
    if knobs[2] {
        o.db.busy = None;
    }
    o.shutdown_requested = false;
    st.shutting_down = false;
    if let Some((c, _)) = &mut view.config {
        c.pause &= knobs[3];
    }
    st.config.pause &= knobs[3];
    match shape {
        Shape::Random => {}
        Shape::Leader => {
            view.leader = Some(Leader { name: Some(name(0)), revision: Revision(1), owner: None });
            if knobs[4] {
                o.db.process = DbProcess::Running { in_recovery: false };
            }
            if knobs[5] {
                // A lease whose deadline is still ahead (unless `now` is at the very end of time).
                let fence_at = o.now.plus(ahead_ms);
                st.lease = Some(LeaseHold { renewed_sent_at: o.now, fence_at });
                o.outcomes.clear();
            }
            if let Some(f) = &mut view.failover {
                f.leader = None;
            }
        }
        Shape::Follower => {
            view.leader = Some(Leader { name: Some(name(1)), revision: Revision(1), owner: None });
            if knobs[4] {
                o.db.process = DbProcess::Running { in_recovery: true };
                o.db.upstream = Some(name(1));
            }
        }
        Shape::Unlocked => {
            view.leader = None;
            if knobs[4] {
                o.db.process = DbProcess::Running { in_recovery: true };
            }
            if knobs[5] {
                st.lease = None;
            }
        }
    }
    (st, o)
}

fn arb_case() -> impl Strategy<Value = (NodeState, Observation)> {
    let shape = prop_oneof![Just(Shape::Random), Just(Shape::Leader), Just(Shape::Follower), Just(Shape::Unlocked)];
    let knobs = prop::array::uniform6(prop::bool::weighted(0.8));
    (shape, arb_state(), arb_obs(), knobs, prop_oneof![1u64..10_000, ext_u64()])
        .prop_map(|(shape, st, o, knobs, ahead)| shaped(shape, st, o, knobs, ahead))
}

/// Runs two cycles and touches everything a driver would use, so that a panic anywhere in
/// producing or printing the decision shows.
fn exercise(st: &NodeState, o: &Observation) {
    let d = decide(st, o);
    let _ = d.reason.to_string();
    let _ = serde_json::to_string(&d).expect("a decision serializes");
    assert_eq!(d.answers.len(), o.requests.len());
    let d2 = decide(&d.next, o);
    let _ = d2.reason.to_string();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4_096))]

    /// decide() never panics, over full-range states and observations.
    #[test]
    fn decide_never_panics((st, o) in arb_case()) {
        exercise(&st, &o);
    }

    /// The fencing deadline of the accepted timings lies inside the lease, however large.
    #[test]
    fn accepted_timings_fence_inside_the_lease(t in arb_accepted_timing()) {
        prop_assert!(t.fence_after_ms() < t.ttl_ms);
        prop_assert!(t.fence_after_ms() > t.loop_wait_ms);
    }

    /// Timing::checked and the derived values never panic, whatever the numbers.
    #[test]
    fn timing_arithmetic_never_panics(t in arb_any_timing(), margin in prop::option::of(ext_u64())) {
        let _ = t.checked();
        let f = t.fence_after_ms();
        prop_assert!(f <= t.ttl_ms);
        let mut s = NodeSettings::new(name(0));
        s.watchdog_safety_margin_ms = margin;
        let _ = s.watchdog_timeout_ms(&t);
    }
}

// ---- the DCS parsers ----------------------------------------------------------------------------

/// Every key ClusterView::from_entries reads, and a few it must ignore or refuse.
const KEYS: &[&str] = &[
    "initialize",
    "config",
    "leader",
    "failover",
    "sync",
    "history",
    "status",
    "members/n1",
    "members/",
    "members/a\u{7}",
    "optime/leader",
    "",
];

/// Keys that Patroni's values use, so that generated objects hit the parsers' fields.
const FIELDS: &[&str] = &[
    "optime",
    "slots",
    "leader",
    "member",
    "scheduled_at",
    "sync_standby",
    "ttl",
    "loop_wait",
    "retry_timeout",
    "fence_margin",
    "maximum_lag_on_failover",
    "maximum_lag_on_syncnode",
    "primary_start_timeout",
    "master_start_timeout",
    "primary_stop_timeout",
    "synchronous_node_count",
    "max_timelines_history",
    "pause",
    "postgresql",
    "use_pg_rewind",
    "parameters",
    "pg_hba",
    "timeline",
    "xlog_location",
    "receive_lsn",
    "replay_lsn",
    "state",
    "role",
    "tags",
    "failover_priority",
    "replicatefrom",
    "nofailover",
];

fn arb_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        ext_u64().prop_map(Value::from),
        ext_i64().prop_map(Value::from),
        prop_oneof![
            Just(f64::MAX),
            Just(f64::MIN),
            Just(f64::MIN_POSITIVE),
            Just(-0.0),
            Just(9.3e18),
            Just(-9.3e18),
            Just(3.2e10),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
        ]
        .prop_map(Value::from),
        prop_oneof![
            Just("2026-01-01T00:00:00+00:00".to_owned()),
            Just("+262143-12-31T23:59:59.999+00:00".to_owned()),
            Just("-262143-01-01T00:00:00Z".to_owned()),
            Just("9999-12-31T23:59:59.999999999+23:59".to_owned()),
            Just("18446744073709551615".to_owned()),
            Just("-9223372036854775808".to_owned()),
            Just("1e400".to_owned()),
            Just("NaN".to_owned()),
            Just("true".to_owned()),
            Just("n1,n2, n0".to_owned()),
            Just("FFFFFFFF/FFFFFFFF".to_owned()),
            ".{0,12}",
        ]
        .prop_map(Value::String),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    arb_json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(FIELDS), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn entry(key: &str, value: Vec<u8>, revision: u64) -> KvEntry {
    KvEntry { key: key.to_owned(), value, revision: Revision(revision), owner: None }
}

/// A parsed view is also fed to decide(): whatever the parsers let through must be decidable.
fn parse_and_decide(entries: &[KvEntry], now: MonoMillis, wall_ms: i64) {
    let view = ClusterView::from_entries(Revision(1), entries);
    let o = Observation {
        now,
        wall_ms,
        dcs: DcsView::Reachable(view),
        db: DbStatus::empty(),
        outcomes: Vec::new(),
        shutdown_requested: false,
        requests: Vec::new(),
        failsafe_vouched: None,
    };
    exercise(&NodeState::new(NodeSettings::new(name(0))), &o);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_048))]

    /// Arbitrary bytes under any key never make the snapshot parser panic.
    #[test]
    fn any_bytes_parse_without_panic(
        entries in prop::collection::vec(
            (prop::sample::select(KEYS), prop::collection::vec(any::<u8>(), 0..48), ext_u64()), 0..6),
        now in ext_time(),
        wall in ext_i64(),
    ) {
        let entries: Vec<KvEntry> = entries.into_iter().map(|(k, v, r)| entry(k, v, r)).collect();
        parse_and_decide(&entries, now, wall);
    }

    /// Arbitrary JSON (extreme numbers, Patroni's field names) under any key never makes a parser
    /// panic: the snapshot parser, and each value parser on its own.
    #[test]
    fn any_json_parses_without_panic(
        values in prop::collection::vec((prop::sample::select(KEYS), arb_json()), 0..6),
        now in ext_time(),
        wall in ext_i64(),
    ) {
        let entries: Vec<KvEntry> = values
            .iter()
            .map(|(k, v)| entry(k, serde_json::to_vec(v).expect("JSON serializes"), 1))
            .collect();
        for (_, v) in &values {
            let bytes = serde_json::to_vec(v).expect("JSON serializes");
            let _ = MemberData::from_json_bytes(&bytes);
            let _ = FailoverRequest::parse(&bytes, Revision(0));
            let _ = DynamicConfig::from_json(v.clone()).map(|c| c.to_json());
            if let Some(s) = v.as_str() {
                let _ = parse_timestamp_ms(s);
                let _ = Lsn::parse_pg(s);
            }
        }
        parse_and_decide(&entries, now, wall);
    }

    /// Lsn::parse_pg never panics and round-trips what it accepts.
    #[test]
    fn lsn_text_never_panics(hi in "[+-]?[0-9A-Fa-f]{0,17}", lo in "[+-]?[0-9A-Fa-f]{0,17}") {
        if let Some(l) = Lsn::parse_pg(&format!("{hi}/{lo}")) {
            prop_assert_eq!(Lsn::parse_pg(&l.to_string()), Some(l));
        }
    }
}

/// The largest values the key formats can carry: timeline u32::MAX in `history`, LSN u64::MAX in
/// `status` and in a member key, a scheduled failover at the edges of chrono's range.
#[test]
fn extreme_dcs_values_parse_and_decide() {
    let max = u64::MAX;
    let entries = vec![
        entry("initialize", b"18446744073709551615".to_vec(), 1),
        entry("leader", b"n1".to_vec(), 2),
        entry("history", format!("[[{}, {max}, \"r\"], [4294967296, 1, \"too big\"]]", u32::MAX).into_bytes(), 3),
        entry("status", format!("{{\"optime\": {max}, \"slots\": {{\"n0\": {max}}}}}").into_bytes(), 4),
        entry(
            "members/n1",
            format!(
                "{{\"role\": \"primary\", \"state\": \"running\", \"xlog_location\": {max}, \"timeline\": {}}}",
                u32::MAX
            )
            .into_bytes(),
            5,
        ),
        entry(
            "failover",
            b"{\"leader\": \"n1\", \"member\": \"n0\", \"scheduled_at\": \"0000-01-01T00:00:00+00:00\"}".to_vec(),
            u64::MAX,
        ),
    ];
    let view = ClusterView::from_entries(Revision(u64::MAX), &entries);
    assert_eq!(view.history.len(), 1, "{:?}", view.anomalies);
    assert_eq!(view.timeline(), Timeline(u32::MAX), "the cluster timeline saturates");
    assert_eq!(view.optime(), Some(Lsn(max)));
    assert_eq!(view.system_id(), Some(SystemId(max)));
    let at = view.failover.as_ref().and_then(|f| f.scheduled_at.as_ref()).map(|s| s.0);
    assert_eq!(at, Some(-62_167_219_200_000));
    for wall in [i64::MIN, 0, WALL, i64::MAX] {
        for now in [0, NOW, max] {
            parse_and_decide(&entries, MonoMillis(now), wall);
        }
    }
    assert_eq!(parse_status(format!("{max}")), Some(Lsn(max)));
    assert_eq!(parse_status(format!("{}", u128::from(max) + 1)), None);
}

fn parse_status(raw: String) -> Option<Lsn> {
    ClusterView::from_entries(Revision(0), &[entry("status", raw.into_bytes(), 0)]).status.map(|s| s.optime)
}

// ---- regressions --------------------------------------------------------------------------------

fn leader_with_scheduled_switchover(wall_ms: i64, at_ms: i64) -> (NodeState, Observation) {
    let mut st = NodeState::new(NodeSettings::new(name(0)));
    st.settings.watchdog = WatchdogMode::Off;
    st.lease = Some(LeaseHold { renewed_sent_at: MonoMillis(NOW), fence_at: MonoMillis(NOW + 3_000) });
    let mut view = ClusterView { initialize: Some(Initialize::SystemId(SystemId(7))), ..ClusterView::default() };
    view.leader = Some(Leader { name: Some(name(0)), revision: Revision(1), owner: None });
    let mut replica = MemberData::new(MemberRole::Replica, "running");
    replica.xlog_location = Some(Lsn(5));
    view.members.insert(name(1), Member { name: name(1), data: replica, revision: Revision(2), owner: None });
    view.status = Some(Status { optime: Lsn(5), ..Status::default() });
    view.failover = Some(FailoverRequest {
        leader: Some(name(0)),
        member: Some(name(1)),
        scheduled_at: Some((at_ms, "edge".to_owned())),
        revision: Revision(3),
    });
    let db = DbStatus {
        data_dir: DataDir::Valid { system_id: SystemId(7), was_primary: true },
        process: DbProcess::Running { in_recovery: false },
        timeline: Some(Timeline(1)),
        write_lsn: Some(Lsn(5)),
        ..DbStatus::empty()
    };
    let o = Observation {
        now: MonoMillis(NOW + 10),
        wall_ms,
        dcs: DcsView::Reachable(view),
        db,
        outcomes: Vec::new(),
        shutdown_requested: false,
        requests: Vec::new(),
        failsafe_vouched: None,
    };
    (st, o)
}

/// Regression: a switchover scheduled far in the past overflowed `wall_ms - at_ms` (i64) in the
/// leader's switchover check. It is stale, and cleared.
#[test]
fn switchover_scheduled_at_the_dawn_of_time_is_stale_not_a_panic() {
    let (st, o) = leader_with_scheduled_switchover(WALL, i64::MIN);
    let d = decide(&st, &o);
    assert!(
        matches!(&d.reason, shield_core::Reason::FailoverRequestCleared { why } if why.contains("stale")),
        "{:?}",
        d.reason
    );
    // And one scheduled at the end of time, seen from a clock at the start of it, is waited for.
    let (st, o) = leader_with_scheduled_switchover(i64::MIN, i64::MAX);
    let d = decide(&st, &o);
    assert!(matches!(d.reason, shield_core::Reason::SwitchoverScheduled { .. }), "{:?}", d.reason);
    // From the end of time, one at the start of it is stale.
    let (st, o) = leader_with_scheduled_switchover(i64::MAX, i64::MIN);
    let d = decide(&st, &o);
    assert!(matches!(d.reason, shield_core::Reason::FailoverRequestCleared { .. }), "{:?}", d.reason);
}
