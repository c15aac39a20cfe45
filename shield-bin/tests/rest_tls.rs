//! The REST API over TLS, with client verification and the allowlist for unsafe requests, served
//! by the daemon's own server code against a real rustls client (Shield's HTTP client, as peers
//! and shieldctl use it).

#[path = "../../testkit/servers.rs"]
mod servers;

use std::sync::Arc;
use std::time::Duration;

use servers::TestCerts;
use shield_bin::net::tls::VerifyClient;
use shield_bin::rest::access::{Access, Cidr};
use shield_bin::rest::state::ApiState;

/// Serves the API on a free port; returns its base URL.
async fn serve(tls: Option<Arc<rustls::ServerConfig>>, access: Access) -> String {
    let store = shield_core::testing::MemoryStore::new();
    let name = shield_core::MemberName::new("n1".to_owned()).expect("name");
    let dcs = Arc::new(store.client("/service", "tls", name.clone(), 4_000));
    let state = Arc::new(ApiState::new(name, "tls", None, dcs));
    shield_bin::rest::guard::set_access(&state, access);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(shield_bin::rest::server::serve(listener, state, tls));
    format!("127.0.0.1:{port}")
}

const T: Duration = Duration::from_secs(5);

async fn get(url: &str) -> Result<u16, String> {
    shield_bin::net::http::request("GET", url, None, None, T).await.map(|a| a.status)
}

async fn post(url: &str) -> Result<(u16, String), String> {
    let body = serde_json::json!({});
    shield_bin::net::http::request("POST", url, Some(&body), None, T).await.map(|a| (a.status, a.body))
}

/// One test, because the process's TLS client is set once (as in the daemon and shieldctl).
#[tokio::test]
async fn rest_api_over_tls_with_client_certificates_and_an_allowlist() {
    let certs = TestCerts::generate();
    let server = |verify| {
        shield_bin::net::tls::server_config(
            &certs.path("server.pem"),
            &certs.path("server-key.pem"),
            Some(&certs.path("ca.pem")),
            verify,
        )
        .expect("server config")
    };

    // Before a client config exists, https is refused with the reason.
    let plain = serve(None, Access::default()).await;
    let e = get(&format!("https://{plain}/patroni")).await.expect_err("no CA");
    assert!(e.contains("https needs a CA"), "{e}");

    shield_bin::net::tls::set_client(
        shield_bin::net::tls::client_config(
            &certs.path("ca.pem"),
            Some((&certs.path("client.pem"), &certs.path("client-key.pem"))),
        )
        .expect("client config"),
    );

    // TLS, no client verification: health checks and status answer over https only.
    let a = serve(Some(server(VerifyClient::None)), Access::default()).await;
    let status = get(&format!("https://{a}/patroni")).await.expect("an https answer");
    assert_eq!(status, 200);
    assert!(get(&format!("https://{a}/health")).await.is_ok());
    assert!(get(&format!("http://{a}/patroni")).await.is_err(), "plain HTTP to a TLS port gets no answer");

    // verify_client: required: our client certificate is verified; the same server refuses a
    // client without one (a plain rustls client with the CA only).
    let b = serve(Some(server(VerifyClient::Required)), Access::default()).await;
    assert_eq!(get(&format!("https://{b}/patroni")).await.expect("with a client certificate"), 200);
    let no_cert = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            use rustls::pki_types::pem::PemObject as _;
            for c in rustls::pki_types::CertificateDer::pem_file_iter(certs.path("ca.pem")).expect("ca") {
                r.add(c.expect("cert")).expect("add");
            }
            r
        })
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(no_cert));
    let tcp = tokio::net::TcpStream::connect(&b).await.expect("connect");
    let sni = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let refused = match connector.connect(sni, tcp).await {
        Err(_) => true,
        // TLS 1.3 reports the missing certificate on the first read.
        Ok(mut s) => {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"GET /patroni HTTP/1.1\r\nhost: x\r\n\r\n").await;
            let mut buf = [0u8; 64];
            !matches!(s.read(&mut buf).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate was served");

    // The allowlist: safe requests from anywhere, unsafe ones only from listed networks.
    let outside = Access { allowlist: vec![Cidr::parse("10.0.0.0/8").expect("cidr")], ..Access::default() };
    let c = serve(Some(server(VerifyClient::None)), outside).await;
    assert_eq!(get(&format!("https://{c}/patroni")).await.expect("safe"), 200);
    let (code, body) = post(&format!("https://{c}/reload")).await.expect("an answer");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("127.0.0.1 is not in restapi.allowlist"), "{body}");
    let inside = Access { allowlist: vec![Cidr::parse("127.0.0.0/8").expect("cidr")], ..Access::default() };
    let d = serve(Some(server(VerifyClient::None)), inside).await;
    let (code, body) = post(&format!("https://{d}/reload")).await.expect("an answer");
    assert_ne!(code, 403, "{body}");
}
