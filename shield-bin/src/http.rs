//! A tiny HTTP client for peer status probes (`GET /patroni`) and shieldctl.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// GETs `url` and parses the body as JSON, within `timeout`. Any status is accepted: health
/// endpoints answer 503 with a status body.
pub async fn get_json(url: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let run = async {
        let resp = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
        let body = resp.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
        serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| format!("{url}: no answer within {timeout:?}"))?
}
