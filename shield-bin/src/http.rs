//! A tiny HTTP client for peer status probes (`GET /patroni`) and shieldctl.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// GETs `url` and parses the body as JSON, within `timeout`. Any status is accepted: health
/// endpoints answer 503 with a status body.
pub async fn get_json(url: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let answer = request("GET", url, None, None, timeout).await?;
    serde_json::from_str(&answer.body).map_err(|e| format!("{url}: not JSON: {e}"))
}

/// The answer to a [`request`]: status code and body text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body, as text.
    pub body: String,
}

/// Sends `method url` with an optional JSON body and HTTP basic credentials, within `timeout`.
/// `Err` means no answer at all (refused, timed out, not HTTP); any status is an `Ok`.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&serde_json::Value>,
    auth: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<Answer, String> {
    use base64::Engine as _;
    use http_body_util::Full;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    if uri.scheme_str() == Some("https") {
        return Err(format!("{url}: REST calls over https are not supported by this client yet"));
    }
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(|e| format!("{method}: {e}"))?;
    let mut req = hyper::Request::builder().method(method).uri(uri);
    if let Some((user, password)) = auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        req = req.header("authorization", format!("Basic {token}"));
    }
    let payload = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Bytes::from(v.to_string())
        }
        None => Bytes::new(),
    };
    let req = req.body(Full::new(payload)).map_err(|e| format!("{url}: {e}"))?;
    let run = async {
        let resp = client.request(req).await.map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        Ok(Answer { status, body: String::from_utf8_lossy(&body).into_owned() })
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}
