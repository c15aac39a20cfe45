//! Network plumbing shared by the REST server, shieldctl and the peer probe: an HTTP client and
//! TLS configuration. Imports nothing else of this crate.

pub mod http;
pub mod tls;
