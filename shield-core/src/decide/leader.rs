//! The lock holder: renewal, promotion, crash recovery, manual switchover, and orderly shutdown.

use crate::action::{Action, DbTask, StartAs, StopMode};
use crate::cluster::{ClusterView, FailoverRequest, HistoryLine, MemberRole, Status};
use crate::decide::{Ctx, WatchdogMode};
use crate::observation::{DataDir, DbProcess, DcsView};
use crate::reason::Reason;
use crate::types::{Lsn, MemberName, Timeline};

/// We hold the leader key (per this cycle's snapshot).
pub(super) fn holding(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    cx.st.lost_paused_leader = None;
    cx.st.paused_leader = None;
    cx.push_renew();
    if cx.paused() {
        return paused_leader(cx, view);
    }
    if cx.st.lease.is_none() {
        // The key is ours but no renewal has succeeded in this process yet (a restarted daemon,
        // or an acquisition whose deadline passed before its answer came): the lease this key is
        // under may expire at any moment, so a writable database is stopped at once. A primary
        // found crashed is restarted once the renewal has given a deadline.
        cx.wake_now = true;
        // A database whose status is unknown may be that writable primary.
        let maybe_primary = cx.obs.db.is_running_primary() || cx.obs.db.process == DbProcess::Unknown;
        if maybe_primary || cx.obs.db.busy.as_ref().is_some_and(DbTask::makes_primary) {
            cx.fence();
            return Reason::RestartedHolderFenced;
        }
        return Reason::LeaderBusy;
    }
    match cx.obs.db.busy.clone() {
        Some(DbTask::Promote { .. }) => return Reason::Promoting,
        Some(DbTask::Start(StartAs::Primary)) => return starting_primary(cx, view),
        Some(DbTask::Stop(StopMode::Fast)) if cx.st.demoting => return demoting(view),
        Some(_) => return Reason::LeaderBusy,
        None => {}
    }
    match cx.obs.db.process {
        DbProcess::Running { in_recovery: false } => running_primary(cx, view),
        DbProcess::Running { in_recovery: true } => promote(cx, view),
        DbProcess::Stopped if cx.st.demoting => finish_demote(cx),
        DbProcess::Stopped | DbProcess::Crashed => crashed_primary(cx, view),
        DbProcess::Starting => starting_primary(cx, view),
        DbProcess::Unknown => status_unknown(cx, view),
    }
}

/// The database did not answer its status query (a busy host, a flood of connections, no file
/// descriptor left, or a hung server). That alone is no reason to fence or fail over: the lock
/// holder keeps the lock (the renewal is pushed already) and its role, and changes nothing (no
/// stop, no demotion, no VIP or `status` change) while the query is asked again each cycle. Not
/// forever: once the database has not been seen healthy for
/// [`crate::DynamicConfig::status_unknown_timeout_ms`] (`primary_start_timeout`, at least `ttl`),
/// counted together with any crash or start that follows, it counts as hung and, when another
/// member could take over, is stopped at once, still under the lock. The lock goes once the
/// postmaster is seen gone (the crash rule, [`crashed_primary`], then hands over), so that no
/// write a dying server still acknowledges lands after another member promotes; should it not
/// go within another `ttl`, the lock goes all the same.
fn status_unknown(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    let now = cx.now();
    let since = *cx.st.crash_since.get_or_insert(now);
    let for_ms = now.since(since);
    let bound = cx.st.config.status_unknown_timeout_ms();
    if for_ms <= bound || !failover_possible(cx, view) {
        return Reason::StatusUnknown { for_ms };
    }
    if for_ms > bound.saturating_add(cx.st.config.timing.ttl_ms) {
        cx.fence();
        cx.push(Action::ReleaseLeader);
        cx.st.crash_since = None;
        return Reason::StatusUnknownTimedOut { for_ms };
    }
    cx.drop_vip();
    cx.push(Action::StopDb { mode: StopMode::Immediate });
    cx.wake_now = true;
    Reason::StatusUnknownStopping { for_ms }
}

/// The lock holder in pause: nothing automatic, but a switchover or failover to a named
/// candidate runs as in Patroni (the leader stops and hands the lock over; the candidate promotes).
fn paused_leader(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    if cx.st.watchdog_armed {
        cx.push(Action::DisarmWatchdog);
        cx.st.watchdog_armed = false;
    }
    let held = cx.st.lease.is_some();
    match cx.obs.db.busy.clone() {
        Some(DbTask::Promote { .. }) => return Reason::Promoting,
        Some(DbTask::Stop(StopMode::Fast)) if cx.st.demoting => return demoting(view),
        Some(_) => return Reason::Paused { detail: "no action. I am the leader with the lock".into() },
        None => {}
    }
    if cx.st.demoting && matches!(cx.obs.db.process, DbProcess::Stopped) {
        return finish_demote(cx);
    }
    if cx.obs.db.process == DbProcess::Unknown {
        // Not known to have stopped being the primary: the lock stays (nothing is automatic in
        // pause, and no bound applies).
        return Reason::Paused { detail: "no action. PostgreSQL did not answer its status query".into() };
    }
    if cx.obs.db.is_running_primary() {
        if !held {
            return Reason::Paused { detail: "no action. I am the leader with the lock".into() };
        }
        primary_upkeep(cx, view);
        if let Some(req) = &view.failover {
            return manual_failover(cx, view, req);
        }
        return Reason::Paused { detail: "no action. I am the leader with the lock".into() };
    }
    let named_me =
        view.failover.as_ref().is_some_and(|r| r.member.as_ref() == Some(cx.me()) && r.scheduled_at.is_none());
    // In pause an expired lease is kept (nothing is fenced), but a promotion still needs a live one.
    let live = cx.st.lease.is_some_and(|h| h.fence_at > cx.obs.now);
    if named_me && live && cx.obs.db.is_running_replica() {
        // We took the lock as the named candidate of a switchover in pause.
        return promote(cx, view);
    }
    // The address goes first: once the lock is released another node may bind it.
    cx.drop_vip();
    cx.push(Action::ReleaseLeader);
    Reason::Paused { detail: "released the leader lock: PostgreSQL is not running as primary".into() }
}

/// What a running primary holding the lock keeps true, paused or not: the `history` line of
/// its promotion, the VIP, and its position in `status`.
fn primary_upkeep(cx: &mut Ctx<'_>, view: &ClusterView) {
    record_promotion(cx, view);
    if cx.st.settings.vip && !cx.st.vip_bound {
        cx.push(Action::AddVip);
        cx.st.vip_bound = true;
    }
    publish_status(cx, view);
}

/// The `status` key as Patroni 4's leader writes it: its position; with `member_slots_ttl`, its
/// slots' positions (its own name at its position) and the member slots every node retains,
/// each kept until its member has been gone for `member_slots_ttl`.
fn publish_status(cx: &mut Ctx<'_>, view: &ClusterView) {
    let Some(optime) = cx.obs.db.write_lsn else { return };
    let (now, ttl) = (cx.obs.now, cx.st.config.member_slots_ttl_ms);
    // Only with the server's slots read (PostgreSQL answered the slot query this cycle).
    let retaining = ttl > 0 && cx.st.config.postgresql.use_slots && cx.obs.db.slots.is_some();
    let mine = crate::decide::slot_name(cx.me());
    let seen = &mut cx.st.member_slots_seen;
    if retaining {
        for m in view.members.values().filter(|m| !m.data.tags.nostream) {
            seen.insert(crate::decide::slot_name(&m.name), now);
        }
        seen.insert(mine.clone(), now);
        seen.retain(|_, t| now.since(*t) < ttl);
    } else if ttl == 0 || !cx.st.config.postgresql.use_slots {
        seen.clear();
    }
    let mut slots = std::collections::BTreeMap::new();
    if retaining {
        slots.extend(cx.obs.db.slot_positions.iter().map(|(k, v)| (k.clone(), *v)));
        slots.insert(mine, optime);
    }
    let status = Status { optime, slots, retain_slots: seen.keys().cloned().collect() };
    if view.status.as_ref() != Some(&status) {
        cx.push(Action::WriteStatus { status });
    }
}

/// The last `status` a leader writes as it hands over: its final position, the retained names.
fn final_status(cx: &Ctx<'_>, optime: Lsn) -> Status {
    Status { optime, slots: Default::default(), retain_slots: cx.st.member_slots_seen.keys().cloned().collect() }
}

/// After our promotion, the `history` line for the timeline that ended (its id was reserved
/// before promoting; the server's own record of the switch can be a little further on).
fn record_promotion(cx: &mut Ctx<'_>, view: &ClusterView) {
    let (Some(promoted_from), Some(now_tl)) = (cx.st.promoted_from, cx.obs.db.timeline) else { return };
    if now_tl <= promoted_from.0 {
        return;
    }
    let lsn = cx.obs.db.branched_from.map_or(promoted_from.1, |(_, lsn)| lsn);
    let line = history_line(cx, Timeline(now_tl.0.saturating_sub(1)), lsn);
    let mut lines = view.history.clone();
    match lines.last_mut() {
        Some(last) if last.timeline == line.timeline && last.lsn == line.lsn => {}
        Some(last) if last.timeline == line.timeline => *last = line,
        _ => lines.push(line),
    }
    if lines != view.history {
        cx.push(Action::WriteHistory { lines });
    }
    cx.st.promoted_from = None;
}

fn running_primary(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    cx.st.crash_since = None;
    if cx.st.settings.watchdog != WatchdogMode::Off && !cx.st.watchdog_armed {
        cx.push(Action::ArmWatchdog);
        cx.st.watchdog_armed = true;
    }
    primary_upkeep(cx, view);
    if let Some(req) = &view.failover {
        return manual_failover(cx, view, req);
    }
    Reason::LeaderHealthy
}

fn promote(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    if let Some(req) = &view.failover {
        cx.push(Action::ClearFailover { revision: req.revision, request: req.clone() });
    }
    // In pause the watchdog stays off, as for every paused leader.
    if !cx.paused() && cx.st.settings.watchdog != WatchdogMode::Off && !cx.st.watchdog_armed {
        cx.push(Action::ArmWatchdog);
        cx.st.watchdog_armed = true;
        if cx.st.settings.watchdog == WatchdogMode::Required {
            // Promote only once the arming is known to have worked: its failure arrives as an
            // outcome next cycle (at once), and then the lock goes back instead.
            cx.wake_now = true;
            return Reason::ArmingWatchdog;
        }
    }
    let db = &cx.obs.db;
    let (mine, lsn) = (db.timeline.unwrap_or_default(), db.wal_position().unwrap_or_default());
    // The new timeline id is reserved in `history` before the promotion runs (and the promotion
    // is not run if that write fails): a promotion that is cut off before it could record itself
    // has still burned its id, so the next one, on any node, creates a higher one. No timeline id
    // is ever created twice.
    let timeline = mine.max(view.timeline()).next();
    let mut lines = view.history.clone();
    lines.push(history_line(cx, Timeline(timeline.0.saturating_sub(1)), lsn));
    cx.push(Action::WriteHistory { lines });
    cx.st.promoted_from = Some((mine, lsn));
    // The replicas reconnect the moment the new timeline appears: their slots must exist by then
    // (a standby can hold physical slots), or each waits out a failed start of streaming.
    if cx.st.config.postgresql.use_slots {
        if let Some(existing) = &db.slots {
            // What sync_slots() will keep once this node leads.
            let create: Vec<String> = crate::decide::slots::slots_wanted(cx, view, Some(cx.me()))
                .into_iter()
                .filter(|s| !existing.iter().any(|(e, _)| e == s))
                .collect();
            if !create.is_empty() {
                cx.push(Action::SyncSlots { create, drop: Vec::new(), advance: Vec::new() });
            }
        }
    }
    cx.push(Action::RunDbTask { task: DbTask::Promote { timeline } });
    Reason::Promoting
}

/// Some other member could take over: a running replica that may be promoted.
fn failover_possible(cx: &Ctx<'_>, view: &ClusterView) -> bool {
    view.members.values().any(|m| {
        &m.name != cx.me()
            && m.data.tags.can_promote()
            && m.data.role == MemberRole::Replica
            && m.data.state == "running"
    })
}

fn crashed_primary(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    let now = cx.now();
    let since = *cx.st.crash_since.get_or_insert(now);
    let timeout = cx.st.config.primary_start_timeout_ms;
    if failover_possible(cx, view) && (timeout == 0 || now.since(since) > timeout) {
        cx.fence();
        cx.push(Action::ReleaseLeader);
        cx.st.crash_since = None;
        return if timeout == 0 { Reason::CrashFailover } else { Reason::PrimaryStartTimedOut };
    }
    let was_primary = matches!(cx.obs.db.data_dir, DataDir::Valid { was_primary: true, .. });
    let start = if was_primary { StartAs::Primary } else { StartAs::Replica { upstream: None } };
    cx.push(Action::RunDbTask { task: DbTask::Start(start) });
    Reason::RestartingCrashedPrimary
}

fn starting_primary(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    let now = cx.now();
    let since = *cx.st.crash_since.get_or_insert(now);
    if failover_possible(cx, view) && now.since(since) > cx.st.config.primary_start_timeout_ms {
        cx.fence();
        cx.push(Action::ReleaseLeader);
        cx.st.crash_since = None;
        return Reason::PrimaryStartTimedOut;
    }
    Reason::RestartingCrashedPrimary
}

/// A switchover or failover request while we lead.
fn manual_failover(cx: &mut Ctx<'_>, view: &ClusterView, req: &FailoverRequest) -> Reason {
    let clear = |cx: &mut Ctx<'_>, why: String| {
        cx.push(Action::ClearFailover { revision: req.revision, request: req.clone() });
        Reason::FailoverRequestCleared { why }
    };
    if req.leader.as_ref().is_some_and(|l| l != cx.me()) {
        return clear(cx, "leader name does not match".into());
    }
    if req.member.as_ref() == Some(cx.me()) {
        return clear(cx, "the candidate is already the leader".into());
    }
    if let Some((at_ms, text)) = &req.scheduled_at {
        if cx.paused() {
            return clear(cx, "can't run a scheduled switchover in the paused state".into());
        }
        // In i128: the difference of two i64 (or 1.5 times a u64) can overflow i64.
        let late_ms = i128::from(cx.obs.wall_ms) - i128::from(*at_ms);
        if late_ms < 0 {
            return Reason::SwitchoverScheduled { at: text.clone() };
        }
        if late_ms > i128::from(cx.st.config.timing.loop_wait_ms) * 3 / 2 + 1_000 {
            return clear(cx, format!("the switchover scheduled at {text} is stale"));
        }
    }
    let candidate_ok = |name: &MemberName| {
        view.members.get(name).is_some_and(|m| {
            m.data.tags.can_promote() && m.data.state == "running" && m.data.role == MemberRole::Replica
        })
    };
    match &req.member {
        None if cx.paused() => {
            return clear(cx, "switchover is possible only to a specific candidate in a paused state".into())
        }
        Some(c) if !candidate_ok(c) => return clear(cx, format!("candidate {c} is not a healthy replica")),
        Some(c) if !super::unlocked::listed_if_synchronous(cx, view, c) => {
            return clear(cx, format!("candidate {c} is not a synchronous standby"))
        }
        None if !failover_possible(cx, view) => return clear(cx, "no healthy members found".into()),
        _ => {}
    }
    cx.st.demoting = true;
    cx.drop_vip();
    cx.push(Action::StopDb { mode: StopMode::Fast });
    Reason::SwitchoverDemoting { candidate: req.member.clone() }
}

fn demoting(view: &ClusterView) -> Reason {
    let candidate = view.failover.as_ref().and_then(|r| r.member.clone());
    Reason::SwitchoverDemoting { candidate }
}

/// The graceful stop finished: hand the lock over.
fn finish_demote(cx: &mut Ctx<'_>) -> Reason {
    if let Some(optime) = cx.obs.db.wal_position() {
        cx.push(Action::WriteStatus { status: final_status(cx, optime) });
    }
    cx.push(Action::ReleaseLeader);
    if cx.st.watchdog_armed {
        cx.push(Action::DisarmWatchdog);
        cx.st.watchdog_armed = false;
    }
    cx.st.lease = None;
    cx.st.demoting = false;
    cx.st.rejoin_after_demote = true;
    cx.st.promoted_from = None;
    cx.wake_now = true;
    Reason::SwitchoverDemoting { candidate: None }
}

/// SIGTERM: stop the database (unless paused), release the lock, exit.
pub(super) fn shutdown(cx: &mut Ctx<'_>) -> Reason {
    cx.st.shutting_down = true;
    let reachable = matches!(cx.obs.dcs, DcsView::Reachable(_));
    let holder = match &cx.obs.dcs {
        DcsView::Reachable(v) => v.is_leader(cx.me()),
        DcsView::Unreachable { .. } => cx.st.lease.is_some(),
    };
    if cx.paused() {
        if cx.st.watchdog_armed {
            cx.push(Action::DisarmWatchdog);
            cx.st.watchdog_armed = false;
        }
        cx.push(Action::Exit);
        return Reason::ShutdownComplete;
    }
    let db = &cx.obs.db;
    // A database whose status is unknown may be running: it is stopped before the lock goes.
    let running = matches!(db.process, DbProcess::Running { .. } | DbProcess::Starting | DbProcess::Unknown);
    if running || db.busy.is_some() {
        if holder && reachable {
            cx.push_renew();
        }
        cx.drop_vip();
        if db.busy != Some(DbTask::Stop(StopMode::Fast)) {
            cx.push(Action::StopDb { mode: StopMode::Fast });
        }
        return Reason::ShuttingDown;
    }
    if holder && reachable {
        if let Some(optime) = db.wal_position() {
            cx.push(Action::WriteStatus { status: final_status(cx, optime) });
        }
        cx.push(Action::ReleaseLeader);
    }
    if cx.st.watchdog_armed {
        cx.push(Action::DisarmWatchdog);
        cx.st.watchdog_armed = false;
    }
    cx.st.lease = None;
    cx.push(Action::Exit);
    Reason::ShutdownComplete
}

/// The `history` line for a promotion by this node that ended `timeline` at `lsn`.
fn history_line(cx: &Ctx<'_>, timeline: Timeline, lsn: Lsn) -> HistoryLine {
    HistoryLine {
        timeline,
        lsn,
        reason: "no recovery target specified".into(),
        timestamp: Some(iso_timestamp(cx.obs.wall_ms)),
        new_leader: Some(cx.me().to_string()),
    }
}

/// `2024-07-02T17:06:00.123+00:00`, Patroni's history timestamp form.
fn iso_timestamp(wall_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(wall_ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string())
        .unwrap_or_default()
}
