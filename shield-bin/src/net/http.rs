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
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let client = match (uri.scheme_str(), crate::net::tls::client()) {
        (Some("https"), None) => {
            return Err(format!("{url}: https needs a CA to trust (restapi.cafile, or ctl.cacert for shieldctl)"))
        }
        (_, Some(tls)) => {
            let conn = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config((*tls).clone())
                .https_or_http()
                .enable_http1()
                .build();
            Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(conn)
        }
        (_, None) => {
            let conn = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(plain_only())
                .https_or_http()
                .enable_http1()
                .build();
            Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(conn)
        }
    };
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

/// A client config for the plain-HTTP case: one connector type for both schemes; https URLs are
/// refused before it could be used.
fn plain_only() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth())
        .unwrap_or_else(|_| unreachable!("ring supports the default protocol versions"))
}
