//! The data directory: bootstrap race, cloning, adopting existing data, and refusing data that
//! belongs elsewhere.

use crate::action::{Action, DbTask};
use crate::cluster::{ClusterView, Initialize};
use crate::decide::Ctx;
use crate::observation::{DataDir, DbProcess};
use crate::reason::Reason;
use crate::types::{MemberName, SystemId};

/// Handles every case where the data directory decides the cycle. `None`: the data is valid and
/// belongs to this cluster; carry on with the lock logic.
pub(super) fn check_data(cx: &mut Ctx<'_>, view: &ClusterView) -> Option<Reason> {
    if let Some(task @ (DbTask::Bootstrap | DbTask::Clone { .. } | DbTask::WipeDataDir)) = &cx.obs.db.busy {
        return Some(match task {
            DbTask::Clone { source } => Reason::Cloning { source: source.clone() },
            DbTask::Bootstrap => Reason::Bootstrapping,
            _ => Reason::Busy,
        });
    }
    match cx.obs.db.data_dir.clone() {
        DataDir::Missing | DataDir::Empty => Some(no_data(cx, view)),
        DataDir::Invalid(why) => {
            if view.is_leader(cx.me()) {
                cx.fence();
                cx.push(Action::ReleaseLeader);
            }
            Some(Reason::DataDirInvalid { why })
        }
        DataDir::Valid { system_id, was_primary } => valid_data(cx, view, system_id, was_primary),
        // The status read did not finish: nothing to judge the data by, and no reason to act on
        // it. The lock logic handles the unknown status (decide() made the process unknown too).
        DataDir::Unknown => None,
    }
}

fn no_data(cx: &mut Ctx<'_>, view: &ClusterView) -> Reason {
    if view.is_leader(cx.me()) {
        // Our data is gone while we hold the lock: let someone with data lead.
        cx.fence();
        cx.push(Action::ReleaseLeader);
        return Reason::DataDirInvalid { why: "data directory is empty while holding the leader lock".into() };
    }
    if cx.paused() {
        return Reason::Paused { detail: "running with empty data directory".into() };
    }
    if cx.st.bootstrapping {
        cx.push(Action::RunDbTask { task: DbTask::Bootstrap });
        return Reason::Bootstrapping;
    }
    if let Some(source) = clone_source(cx, view) {
        cx.push(Action::RunDbTask { task: DbTask::Clone { source: source.clone() } });
        return Reason::Cloning { source };
    }
    if view.leader.is_none() && view.initialize.is_none() && cx.st.settings.tags.can_promote() {
        cx.push(Action::RaceInitialize { system_id: None });
        cx.wake_now = true;
        return Reason::RacingInitialize;
    }
    Reason::WaitingForBootstrap
}

/// A running `clonefrom` member other than the leader (first by name, for determinism), or the
/// leader itself.
fn clone_source(cx: &Ctx<'_>, view: &ClusterView) -> Option<MemberName> {
    let leader = view.leader_name()?;
    let tagged = view
        .members
        .values()
        .find(|m| m.data.tags.clonefrom && &m.name != leader && &m.name != cx.me() && m.data.state == "running");
    Some(tagged.map_or_else(|| leader.clone(), |m| m.name.clone()))
}

fn valid_data(cx: &mut Ctx<'_>, view: &ClusterView, mine: SystemId, was_primary: bool) -> Option<Reason> {
    match &view.initialize {
        Some(Initialize::SystemId(cluster)) if *cluster != mine => {
            if view.is_leader(cx.me()) {
                cx.fence();
                cx.push(Action::ReleaseLeader);
            }
            Some(Reason::SystemIdMismatch { mine, cluster: *cluster })
        }
        Some(Initialize::Racing) if cx.st.bootstrapping => Some(finish_bootstrap(cx, view, mine)),
        Some(Initialize::Racing) => Some(Reason::WaitingForBootstrap),
        None if view.leader.is_none() => Some(uninitialized_with_data(cx, mine, was_primary)),
        _ => None,
    }
}

/// initdb has finished and the database runs as a primary: publish the cluster and take the lock.
fn finish_bootstrap(cx: &mut Ctx<'_>, view: &ClusterView, mine: SystemId) -> Reason {
    if !cx.obs.db.is_running_primary() {
        return Reason::Bootstrapping;
    }
    cx.push(Action::WriteInitialize { system_id: mine });
    if view.config.is_none() {
        cx.push(Action::WriteConfig { config: Box::new(cx.st.settings.bootstrap_config.clone()) });
    }
    cx.push(Action::WriteHistory { lines: Vec::new() });
    cx.push(cx.acquire_action());
    cx.st.bootstrapping = false;
    cx.wake_now = true;
    Reason::InitializedNewCluster
}

fn uninitialized_with_data(cx: &mut Ctx<'_>, mine: SystemId, was_primary: bool) -> Reason {
    let primary_data = match cx.obs.db.process {
        DbProcess::Running { in_recovery } => !in_recovery,
        _ => was_primary,
    };
    if !primary_data {
        return Reason::ReplicaWithoutCluster;
    }
    if cx.paused() {
        return Reason::Paused { detail: "not adopting existing data while paused".into() };
    }
    cx.push(Action::RaceInitialize { system_id: Some(mine) });
    cx.wake_now = true;
    Reason::AdoptingExistingData { system_id: mine }
}
