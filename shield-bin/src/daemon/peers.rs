//! The peer probe decide() asks for in a leader race: `GET /patroni` on every other member.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use shield_core::observation::{DcsView, Observation, PeerReport};
use shield_core::{Lsn, MemberName, Timeline};

use super::driver::Driver;

impl Driver {
    /// `GET /patroni` on every other member, in parallel, 1 s each.
    pub(crate) async fn probe_peers(&self, obs: &Observation) -> BTreeMap<MemberName, PeerReport> {
        let DcsView::Reachable(view) = &obs.dcs else { return BTreeMap::new() };
        let me = self.state.me().clone();
        let mut set = tokio::task::JoinSet::new();
        for m in view.members.values().filter(|m| m.name != me) {
            let Some(url) = m.data.api_url.clone() else { continue };
            let name = m.name.clone();
            let tags = m.data.tags.clone();
            set.spawn(async move {
                let body = match crate::net::http::get_json(&url, Duration::from_secs(1)).await {
                    Ok(b) => b,
                    Err(e) => {
                        // Down members are expected in a race; a TLS or auth mistake shows here.
                        tracing::info!(member = %name, error = %e, "peer probe failed");
                        return None;
                    }
                };
                let role = body.get("role").and_then(Value::as_str).unwrap_or_default();
                let state = body.get("state").and_then(Value::as_str).unwrap_or_default();
                let x = body.get("xlog");
                let pos = |k: &str| x.and_then(|x| x.get(k)).and_then(Value::as_u64);
                let wal = pos("location").or_else(|| pos("received_location").max(pos("replayed_location")));
                // A peer whose database does not answer its status query ("unknown", its position
                // the last one read) cannot take over itself and must not hold the race up: it
                // counts as not answering, as a Patroni node whose API hangs on its database
                // would. In pause, though, where nothing fences a primary that lost the lock, it
                // may be one, and counts as one.
                let paused = body.get("pause").and_then(Value::as_bool).unwrap_or(false);
                if state == "unknown" && !paused {
                    tracing::info!(member = %name, "peer probe: its database status is unknown; not counted");
                    return None;
                }
                let running_primary = state == "running" && (role == "primary" || role == "master");
                Some((
                    name,
                    PeerReport {
                        is_primary: running_primary || (state == "unknown" && paused),
                        wal_position: wal.map(Lsn),
                        timeline: body
                            .get("timeline")
                            .and_then(Value::as_u64)
                            .and_then(|t| u32::try_from(t).ok())
                            .map(Timeline),
                        can_promote: tags.can_promote(),
                        priority: tags.priority(),
                    },
                ))
            });
        }
        let mut out = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            if let Ok(Some((n, rep))) = r {
                out.insert(n, rep);
            }
        }
        out
    }
}

/// `http://host:port/<anything>` → `http://host:port/failsafe`, as Patroni builds a member's
/// endpoint from its `api_url`.
fn failsafe_url(api_url: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    let host = rest.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{scheme}://{host}/failsafe"))
}

/// Asks every member (`{name: api_url}`) over `POST /failsafe` whether it accepts this node as
/// its leader; returns the members that did not, with their answer or why there was none.
/// Patroni's body (`name`, `conn_url`, `api_url`) and bounds (2 s, one retry); the node's
/// `restapi.authentication`, which Patroni's request also carries. `shield_ttl_ms` (which
/// Patroni ignores) tells a Shield member how long this leader counts its deadline with.
pub(crate) async fn failsafe_round(
    api: &crate::rest::state::ApiState,
    me: &shield_core::NodeSettings,
    members: BTreeMap<String, String>,
    ttl_ms: u64,
) -> Vec<(String, String)> {
    let body = serde_json::json!({
        "name": me.name.as_str(),
        "conn_url": me.conn_url,
        "api_url": me.api_url,
        "shield_ttl_ms": ttl_ms,
    });
    let auth = api.auth.lock().ok().and_then(|a| a.as_ref().map(|c| (c.username.clone(), c.password.clone())));
    let mut set = tokio::task::JoinSet::new();
    for (name, api_url) in members {
        let (body, auth) = (body.clone(), auth.clone());
        set.spawn(async move {
            let Some(url) = failsafe_url(&api_url) else {
                return Some((name, format!("bad api_url {api_url:?}")));
            };
            let mut last = String::new();
            for _ in 0..2 {
                let creds = auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()));
                match crate::net::http::request("POST", &url, Some(&body), creds, Duration::from_secs(2)).await {
                    Ok(a) if a.status == 200 && a.body == "Accepted" => return None,
                    // An answer is final; only no answer is retried.
                    Ok(a) => return Some((name, format!("{} {}", a.status, a.body.trim()))),
                    Err(e) => last = e,
                }
            }
            Some((name, last))
        });
    }
    let mut refused = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Some(x)) => refused.push(x),
            Ok(None) => {}
            Err(e) => refused.push(("?".to_owned(), format!("request task failed: {e}"))),
        }
    }
    refused.sort();
    refused
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_failsafe_endpoint_replaces_the_api_urls_path() {
        assert_eq!(
            super::failsafe_url("http://10.0.0.1:8008/patroni").as_deref(),
            Some("http://10.0.0.1:8008/failsafe")
        );
        assert_eq!(super::failsafe_url("https://h:1").as_deref(), Some("https://h:1/failsafe"));
        assert_eq!(super::failsafe_url("nonsense"), None);
        assert_eq!(super::failsafe_url("http:///x"), None);
    }
}
