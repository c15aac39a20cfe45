//! A small hand-written client for the Consul HTTP endpoints rs-consul does not cover.
//!
//! Why by hand: rs-consul (0.15) has no session API at all (create, renew, destroy, info), its
//! `read_key` fails a whole recursive read when one value is not UTF-8 (so one garbage key would
//! hide the cluster), on a 404 it drops the `X-Consul-Index` header that a blocking query on a
//! missing key needs, and its `delete_key` always sends `recurse=`, which Consul 1.8 refuses next
//! to `cas` ("Conflicting flags"). This module covers exactly those, on the hyper client rs-consul
//! itself uses (one connection pool shared by both).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use shield_core::ports::{ErrorKind, PortError};

/// The client type rs-consul is built on.
pub type HttpsClient = rs_consul::HttpsClient;

/// One raw answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `X-Consul-Index`, when sent.
    pub index: Option<u64>,
    pub body: Bytes,
}

/// Raw access to one agent.
#[derive(Clone)]
pub struct Raw {
    pub client: HttpsClient,
    pub base: String,
    pub token: Option<String>,
    pub timeout: Duration,
    /// Requests sent through this client (and its clones that share the counter).
    pub sent: Arc<AtomicU64>,
    /// Requests that got no answer, or a 5xx one (the cached view stops trusting itself).
    pub failed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raw").field("base", &self.base).finish()
    }
}

/// Sorts an HTTP status into Shield's error kinds.
pub fn status_error(what: &str, status: StatusCode, body: &[u8]) -> PortError {
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::Rejected,
        400 | 405 | 413 => ErrorKind::Rejected,
        404 => ErrorKind::LeaseLost,
        _ => ErrorKind::Unreachable,
    };
    let text = String::from_utf8_lossy(body);
    PortError::new(kind, format!("consul {what}: HTTP {status}: {}", text.trim()))
}

impl Raw {
    /// Sends one request, bounded by `timeout` (or the client's retry_timeout).
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Result<Answer, PortError> {
        let uri = format!("{}{path_and_query}", self.base);
        self.sent.fetch_add(1, Ordering::Relaxed);
        let body: BoxBody<Bytes, Infallible> = BoxBody::new(Full::new(Bytes::from(body.unwrap_or_default())));
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header("X-Consul-Token", t.as_str());
        }
        let req = req.body(body).map_err(|e| PortError::new(ErrorKind::Rejected, format!("consul {what}: {e}")))?;
        let unreachable = |e: String| PortError::new(ErrorKind::Unreachable, format!("consul {what}: {e}"));
        let run = async {
            let resp = self.client.request(req).await.map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let index = resp.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
            let body = resp.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
            Ok(Answer { status, index, body })
        };
        let r = tokio::time::timeout(timeout.unwrap_or(self.timeout), run)
            .await
            .map_err(|_| unreachable("no answer within retry_timeout".to_owned()))
            .and_then(|r| r);
        if r.as_ref().map_or(true, |a: &Answer| a.status.is_server_error()) {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

/// A KV entry as Consul's JSON has it (value base64, maybe not UTF-8).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RawKv {
    pub key: String,
    pub value: Option<String>,
    /// Consul's `uint64`, kept as one: it goes back unchanged in a compare-and-set.
    pub modify_index: u64,
    pub session: Option<String>,
}

/// The session client.
#[derive(Debug, Deserialize)]
struct SessionId {
    #[serde(rename = "ID")]
    id: String,
}

/// What a session is created with.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub name: String,
    pub ttl_s: u64,
    pub lock_delay_ms: u64,
    pub checks: Vec<String>,
}

impl Raw {
    /// `PUT /v1/session/create` with `Behavior=delete`. A TTL below the agent's `session_ttl_min`
    /// is refused by Consul; the caller raises it (see [`min_ttl_from_error`]).
    pub async fn session_create(&self, spec: &SessionSpec, dc: &str) -> Result<String, PortError> {
        let body = serde_json::json!({
            "Name": spec.name,
            "TTL": format!("{}s", spec.ttl_s),
            "Behavior": "delete",
            "LockDelay": format!("{}ms", spec.lock_delay_ms),
            "Checks": spec.checks,
        });
        let a = self
            .send(
                "session create",
                Method::PUT,
                &with_dc("/v1/session/create", dc),
                Some(body.to_string().into_bytes()),
                None,
            )
            .await?;
        if a.status != StatusCode::OK {
            return Err(status_error("session create", a.status, &a.body));
        }
        let s: SessionId = serde_json::from_slice(&a.body)
            .map_err(|e| PortError::new(ErrorKind::BadData, format!("consul session create: {e}")))?;
        Ok(s.id)
    }

    /// `PUT /v1/session/renew/<id>`. `LeaseLost` when the session is gone (404).
    pub async fn session_renew(&self, id: &str, dc: &str) -> Result<(), PortError> {
        let a = self
            .send("session renew", Method::PUT, &with_dc(&format!("/v1/session/renew/{id}"), dc), None, None)
            .await?;
        match a.status {
            StatusCode::OK => Ok(()),
            StatusCode::NOT_FOUND => {
                Err(PortError::new(ErrorKind::LeaseLost, format!("consul session {id} has expired")))
            }
            s => Err(status_error("session renew", s, &a.body)),
        }
    }

    /// `PUT /v1/session/destroy/<id>`.
    pub async fn session_destroy(&self, id: &str, dc: &str) -> Result<(), PortError> {
        let a = self
            .send("session destroy", Method::PUT, &with_dc(&format!("/v1/session/destroy/{id}"), dc), None, None)
            .await?;
        if a.status == StatusCode::OK {
            Ok(())
        } else {
            Err(status_error("session destroy", a.status, &a.body))
        }
    }

    /// `GET /v1/session/info/<id>`: whether the session exists.
    pub async fn session_info(&self, id: &str, dc: &str) -> Result<bool, PortError> {
        let a =
            self.send("session info", Method::GET, &with_dc(&format!("/v1/session/info/{id}"), dc), None, None).await?;
        if a.status != StatusCode::OK {
            return Err(status_error("session info", a.status, &a.body));
        }
        let list: Vec<serde_json::Value> = serde_json::from_slice(&a.body).unwrap_or_default();
        Ok(!list.is_empty())
    }

    /// A recursive KV read that tolerates values that are not UTF-8, and keeps the index of a 404.
    pub async fn kv_recurse(
        &self,
        prefix: &str,
        query: &str,
        timeout: Option<Duration>,
    ) -> Result<(u64, Vec<RawKv>), PortError> {
        let a = self.send("read", Method::GET, &format!("/v1/kv/{prefix}?recurse{query}"), None, timeout).await?;
        match a.status {
            StatusCode::OK => {
                let kvs: Vec<RawKv> = serde_json::from_slice(&a.body)
                    .map_err(|e| PortError::new(ErrorKind::BadData, format!("consul read: {e}")))?;
                Ok((a.index.unwrap_or(0), kvs))
            }
            StatusCode::NOT_FOUND => Ok((a.index.unwrap_or(0), Vec::new())),
            s => Err(status_error("read", s, &a.body)),
        }
    }
}

/// The `cas=<index>` a compare-and-set sends: `None` (no compare) stays none, `Some(None)`
/// (create only if absent) is Consul's `cas=0`, and an index is sent as it was read. An index of
/// 0 is no ModifyIndex (Consul's start at 1) and would mean "only if absent" or, to a delete,
/// "unconditionally": it is refused.
pub fn cas_query(what: &str, cas: Option<Option<u64>>) -> Result<String, PortError> {
    match cas {
        None => Ok(String::new()),
        Some(None) => Ok("cas=0".to_owned()),
        Some(Some(0)) => {
            Err(PortError::new(ErrorKind::Rejected, format!("consul {what}: index 0 is not a ModifyIndex")))
        }
        Some(Some(i)) => Ok(format!("cas={i}")),
    }
}

impl Raw {
    /// `GET /v1/kv/<key>` (no recursion): the entry, or `None` on a 404.
    pub async fn kv_get(&self, key: &str, query: &str) -> Result<Option<RawKv>, PortError> {
        let a = self.send("read key", Method::GET, &format!("/v1/kv/{key}?{query}"), None, None).await?;
        match a.status {
            StatusCode::OK => {
                let kvs: Vec<RawKv> = serde_json::from_slice(&a.body)
                    .map_err(|e| PortError::new(ErrorKind::BadData, format!("consul read key: {e}")))?;
                Ok(kvs.into_iter().find(|kv| kv.key == key))
            }
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(status_error("read key", s, &a.body)),
        }
    }

    /// `PUT /v1/kv/<key>` with an optional compare-and-set (see [`cas_query`]) and lock
    /// acquisition: true if written, false if the compare or the lock failed.
    pub async fn kv_put(
        &self,
        what: &str,
        key: &str,
        value: &[u8],
        cas: Option<Option<u64>>,
        acquire: Option<&str>,
        dc: &str,
    ) -> Result<bool, PortError> {
        let mut query: Vec<String> = Vec::new();
        let cas = cas_query(what, cas)?;
        if !cas.is_empty() {
            query.push(cas);
        }
        if let Some(session) = acquire {
            query.push(format!("acquire={session}"));
        }
        let path = with_dc(&format!("/v1/kv/{key}?{}", query.join("&")), dc);
        let a = self.send(what, Method::PUT, &path, Some(value.to_vec()), None).await?;
        if a.status != StatusCode::OK {
            return Err(status_error(what, a.status, &a.body));
        }
        Ok(String::from_utf8_lossy(&a.body).trim() == "true")
    }

    /// `PUT /v1/txn`: true if every operation applied, false if Consul rolled the transaction
    /// back (409: a check failed).
    pub async fn txn(&self, what: &str, ops: &serde_json::Value, dc: &str) -> Result<bool, PortError> {
        let a = self.send(what, Method::PUT, &with_dc("/v1/txn", dc), Some(ops.to_string().into_bytes()), None).await?;
        match a.status {
            StatusCode::OK => Ok(true),
            StatusCode::CONFLICT => Ok(false),
            s => Err(status_error(what, s, &a.body)),
        }
    }

    /// `DELETE /v1/kv/<key>?cas=<index>`: true if deleted, false if the index did not match.
    pub async fn kv_delete_cas(&self, key: &str, cas: u64, dc: &str) -> Result<bool, PortError> {
        let path = with_dc(&format!("/v1/kv/{key}?{}", cas_query("compare-and-delete", Some(Some(cas)))?), dc);
        let a = self.send("compare-and-delete", Method::DELETE, &path, None, None).await?;
        if a.status != StatusCode::OK {
            return Err(status_error("compare-and-delete", a.status, &a.body));
        }
        Ok(String::from_utf8_lossy(&a.body).trim() == "true")
    }
}

/// Appends `dc=` when a datacenter is configured.
pub fn with_dc(path: &str, dc: &str) -> String {
    if dc.is_empty() {
        path.to_owned()
    } else {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{path}{sep}dc={dc}")
    }
}

/// Consul refuses a TTL below `session_ttl_min` with "Invalid Session TTL '2s', must be between
/// [10s=24h0m0s]": the minimum, in whole seconds, if the error says so.
pub fn min_ttl_from_error(e: &PortError) -> Option<u64> {
    let m = &e.message;
    let start = m.find("must be between [")? + "must be between [".len();
    let rest = &m[start..];
    let end = rest.find('=')?;
    parse_go_duration_s(&rest[..end])
}

/// Parses Go durations like `10s`, `1m0s`, `1.5s` into whole seconds (rounded up).
fn parse_go_duration_s(s: &str) -> Option<u64> {
    let mut total = 0.0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        total += v * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
    }
    if !num.is_empty() {
        return None;
    }
    Some(total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_ttl_is_read_from_consuls_refusal() {
        let e = PortError::new(
            ErrorKind::Rejected,
            "consul session create: HTTP 400 Bad Request: Invalid Session TTL '2000000000', must be between [10s=24h0m0s]",
        );
        assert_eq!(min_ttl_from_error(&e), Some(10));
        assert_eq!(parse_go_duration_s("1m0s"), Some(60));
        assert_eq!(parse_go_duration_s("1500ms"), Some(2));
        assert_eq!(parse_go_duration_s("x"), None);
    }

    #[test]
    fn indexes_go_out_as_read_and_zero_is_refused() {
        assert_eq!(cas_query("w", None).ok(), Some(String::new()));
        assert_eq!(cas_query("w", Some(None)).ok(), Some("cas=0".to_owned()));
        // Above u32::MAX and above i64::MAX: sent exactly as read, never wrapped or truncated.
        assert_eq!(cas_query("w", Some(Some(1 << 40))).ok(), Some(format!("cas={}", 1u64 << 40)));
        assert_eq!(cas_query("w", Some(Some(u64::MAX))).ok(), Some(format!("cas={}", u64::MAX)));
        let zero = cas_query("w", Some(Some(0))).expect_err("0 is no index");
        assert_eq!(zero.kind, ErrorKind::Rejected);
    }

    #[test]
    fn raw_entries_keep_indexes_above_i64() {
        let body = format!(r#"[{{"Key":"a","Value":null,"ModifyIndex":{},"Session":null}}]"#, u64::MAX);
        let kvs: Vec<RawKv> = serde_json::from_str(&body).expect("u64 index");
        assert_eq!(kvs[0].modify_index, u64::MAX);
    }

    #[test]
    fn datacenter_is_appended() {
        assert_eq!(with_dc("/v1/session/create", ""), "/v1/session/create");
        assert_eq!(with_dc("/v1/kv/a?recurse", "dc2"), "/v1/kv/a?recurse&dc=dc2");
    }
}
