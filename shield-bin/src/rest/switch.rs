//! `/switchover` and `/failover` (and `DELETE /switchover`): the checks on the request alone, then
//! against a fresh DCS read, the failover key, and the wait for the new leader.

use super::state::{dcs_permit, name_field, parse_body, text, Reject, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;
use shield_core::cluster::{ClusterView, FailoverRequest};
use shield_core::ports::DcsKey;
use shield_core::{MemberName, Revision};
use std::time::{Duration, Instant};

pub(crate) async fn delete_switchover(State(s): State<Shared>) -> Response {
    let _permit = match dcs_permit(&s).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let view = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the DCS: {e}")),
    };
    let scheduled = view.failover.as_ref().is_some_and(|f| f.scheduled_at.is_some());
    let (true, Some(rev)) = (scheduled, view.failover_revision) else {
        return text(StatusCode::NOT_FOUND, "no switchover is scheduled");
    };
    match s.dcs.delete_cas(DcsKey::Failover, rev).await {
        Ok(()) => text(StatusCode::OK, "scheduled switchover deleted"),
        Err(e) if e.kind == shield_core::ports::ErrorKind::CompareFailed => {
            text(StatusCode::CONFLICT, "the switchover changed concurrently")
        }
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("failed to delete the switchover: {e}")),
    }
}

pub(crate) async fn switchover(State(s): State<Shared>, body: String) -> Response {
    manual(s, body, false).await
}

pub(crate) async fn failover(State(s): State<Shared>, body: String) -> Response {
    manual(s, body, true).await
}

async fn manual(s: Shared, body: String, failover: bool) -> Response {
    let (leader, candidate, scheduled) = match manual_request(&body, failover) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let snap = s.snapshot();
    if snap.paused && candidate.is_none() {
        return text(StatusCode::BAD_REQUEST, "Switchover is possible only to a specific candidate in a paused state");
    }
    let _permit = match dcs_permit(&s).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    // Validate against a fresh read, not the last cycle's snapshot.
    let fresh = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the cluster from the DCS: {e}")),
    };
    let view = &fresh;
    if let Err(r) = manual_fits(view, &leader, &candidate) {
        return *r;
    }
    let req = FailoverRequest {
        leader: leader.clone(),
        member: candidate.clone(),
        scheduled_at: scheduled.clone(),
        revision: Revision(0),
    };
    if let Err(e) = s.dcs.write_failover(&req, view.failover_revision).await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("failed to write the request to the DCS: {e}"));
    }
    s.wake.notify_one();
    if let Some((_, at)) = scheduled {
        return text(StatusCode::ACCEPTED, format!("Switchover scheduled at: {at}"));
    }
    await_new_leader(&s, view.leader_name().cloned(), candidate, failover).await
}

/// A switchover or failover body's leader, candidate and schedule, with everything the request
/// alone shows checked before the DCS is asked anything.
fn manual_request(body: &str, failover: bool) -> Result<ManualRequest, Reject> {
    let m = parse_body(body)?;
    let (leader, candidate) = match (name_field(&m, "leader"), name_field(&m, "candidate")) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(r), _) | (_, Err(r)) => return Err(r),
    };
    let bad = |msg: &str| Err(Box::new(text(StatusCode::BAD_REQUEST, msg)));
    let scheduled = match m.get("scheduled_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => match shield_core::cluster::parse_timestamp_ms(t) {
            Ok(ms) => Some((ms, t.clone())),
            Err(e) => return Err(Box::new(text(StatusCode::UNPROCESSABLE_ENTITY, e))),
        },
        Some(other) => return bad(&format!("`scheduled_at` must be a string, not {other}")),
    };
    if failover && candidate.is_none() {
        return bad("Failover could be performed only to a specific candidate");
    }
    if failover && scheduled.is_some() {
        return bad("Failover can't be scheduled");
    }
    if !failover && leader.is_none() {
        return bad("Switchover could be performed only from a specific leader");
    }
    Ok((leader, candidate, scheduled))
}

/// A switchover or failover request: the leader, the candidate, and when (ms and as given).
type ManualRequest = (Option<MemberName>, Option<MemberName>, Option<(i64, String)>);

/// Checks the request's leader and candidate against a fresh read of the cluster.
fn manual_fits(view: &ClusterView, leader: &Option<MemberName>, candidate: &Option<MemberName>) -> Result<(), Reject> {
    if leader.is_some() && leader.as_ref() != view.leader_name() {
        return Err(Box::new(text(StatusCode::PRECONDITION_FAILED, "leader name does not match")));
    }
    if let Some(c) = candidate {
        if Some(c) == view.leader_name() {
            return Err(Box::new(text(StatusCode::BAD_REQUEST, "candidate is already the leader")));
        }
        if !view.members.get(c).is_some_and(|m| m.data.state == "running" && m.data.tags.can_promote()) {
            return Err(Box::new(text(
                StatusCode::PRECONDITION_FAILED,
                format!("candidate {c} is not a running member that may be promoted"),
            )));
        }
    }
    Ok(())
}

/// Waits for the new leader, as Patroni does (bounded, 30 s).
async fn await_new_leader(
    s: &Shared,
    old: Option<MemberName>,
    candidate: Option<MemberName>,
    failover: bool,
) -> Response {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(v) = s.dcs.read().await {
            match (v.leader_name(), &candidate) {
                (Some(l), Some(c)) if l == c => {
                    let verb = if failover { "failed over" } else { "switched over" };
                    return text(StatusCode::OK, format!("Successfully {verb} to \"{c}\""));
                }
                (Some(l), None) if Some(l) != old.as_ref() => {
                    return text(StatusCode::OK, format!("Successfully switched over to \"{l}\""));
                }
                _ => {}
            }
        }
    }
    text(StatusCode::SERVICE_UNAVAILABLE, "Switchover status unknown")
}
