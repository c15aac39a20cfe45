//! `PATCH` and `PUT /config`: Patroni's merge, the command-parameter policy, the refusal to resume
//! without a running primary, and the compare-and-set write.

use super::state::{dcs_permit, parse_body, text, Reject, Shared};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use shield_core::cluster::ClusterView;
use shield_core::ports::DcsKey;
use std::collections::BTreeMap;

/// Patroni's deep merge, which is RFC 7396's JSON merge patch (`json-patch`): objects merge key
/// by key, `null` deletes, anything else replaces. One corner differs from Patroni's
/// `patch_config`, on purpose: an object patched in where there was none keeps no `null` members
/// (Patroni would store them; a `null` in the DCS config means nothing to either).
pub fn merge(into: &mut Value, patch: &Value) {
    json_patch::merge(into, patch);
}

pub(crate) async fn patch_config(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    body: String,
) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, body, true, force).await,
        Err(r) => *r,
    }
}

pub(crate) async fn put_config(
    State(s): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
    body: String,
) -> Response {
    match force_param(&q) {
        Ok(force) => write_config(s, body, false, force).await,
        Err(r) => *r,
    }
}

/// `?force=true` (or `1`) on `/config`: resume even when [`ClusterView::resume_blocker`] objects.
/// A query parameter, so the written config never carries an extra key.
pub(crate) fn force_param(q: &BTreeMap<String, String>) -> Result<bool, Reject> {
    match q.get("force").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => {
            Err(Box::new(text(StatusCode::BAD_REQUEST, format!("force must be true or false, not {other:?}"))))
        }
    }
}

/// The refusal of a config write that turns pause off while resuming is unsafe (see
/// [`ClusterView::resume_blocker`]), unless forced. `view` is the cluster as read before the
/// write.
fn resume_refusal(view: &ClusterView, new_pause: bool, force: bool) -> Option<String> {
    let was_paused = view.config.as_ref().is_some_and(|(c, _)| c.pause);
    if !was_paused || new_pause || force {
        return None;
    }
    let why = view.resume_blocker()?;
    Some(format!("{RESUME_REFUSED}{why}; add ?force=true to resume anyway"))
}

/// How a refused resume begins, in the REST answer and in shieldctl's error.
pub const RESUME_REFUSED: &str = "refusing to resume: ";

/// PATCH (merge) or PUT (replace) the dynamic config, with compare-and-set on the DCS key.
/// Turning pause off is refused with 409 while resuming is unsafe, unless `force`.
pub(crate) async fn write_config(s: Shared, body: String, patch: bool, force: bool) -> Response {
    let req = match parse_body(&body) {
        Ok(m) => Value::Object(m),
        Err(r) => return *r,
    };
    // A PUT is checked whole before the DCS is read; a PATCH once merged.
    if !patch {
        if let Err(e) = shield_core::DynamicConfig::from_json(req.clone()) {
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    }
    let _permit = match dcs_permit(&s).await {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let view = match s.dcs.read().await {
        Ok(v) => v,
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read the DCS: {e}")),
    };
    // The stored JSON, not Shield's reading of it: a PATCH writes back exactly what it changes.
    let (mut cfg, rev) = match &view.config {
        Some((c, r)) => (view.config_json.clone().unwrap_or_else(|| c.to_json()), Some(*r)),
        None if patch => return text(StatusCode::SERVICE_UNAVAILABLE, "config is not set in the DCS"),
        None => (Value::Object(Default::default()), None),
    };
    if patch {
        merge(&mut cfg, &req);
    } else {
        cfg = req;
    }
    let allow = s.command_params.lock().map(|c| c.clone()).unwrap_or_default();
    let before = view.config_json.clone().unwrap_or_default();
    if let Some(refused) = crate::rest::command_params::refusal(&before, &cfg, &allow) {
        tracing::warn!("config change refused: {refused}");
        return text(StatusCode::FORBIDDEN, refused);
    }
    // Refuse what the nodes could not use, naming the key.
    match shield_core::DynamicConfig::from_json(cfg.clone()) {
        Ok(c) => {
            if let Some(refusal) = resume_refusal(&view, c.pause, force) {
                tracing::warn!("{refusal}");
                return text(StatusCode::CONFLICT, refusal);
            }
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let checked = cfg;
    match s.dcs.write_cas(DcsKey::Config, &checked.to_string(), rev).await {
        Ok(()) => {
            s.wake.notify_one();
            Json(checked).into_response()
        }
        Err(e) if e.kind == shield_core::ports::ErrorKind::CompareFailed => {
            text(StatusCode::CONFLICT, "config changed concurrently; read it again and retry")
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, format!("failed to write the config: {e}")),
    }
}
