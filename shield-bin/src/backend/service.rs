//! Consul's `register_service`: the node's entry in the `<scope>` service, tagged with its role,
//! with an HTTP health check on the REST API's role path.

use std::sync::Arc;
use std::time::Duration;

use shield_core::ports::{ErrorKind, PortError};

/// What keeps the node's service entry current.
#[derive(Debug)]
pub struct Registrar {
    /// A Consul client of its own (registration needs no session).
    pub consul: Arc<shield_dcs_consul::ConsulDcs>,
    /// The database's host and port, as clients connect.
    pub host: String,
    /// See `host`.
    pub port: u16,
    /// The REST API base URL, for the health check on the role path.
    pub api_base: String,
    /// `service_tags`.
    pub tags: Vec<String>,
    /// `service_check_interval`, s.
    pub check_interval_s: u64,
}

impl Registrar {
    /// Registers the entry with role tag `role` (`primary` or `replica`), bounded by `retry`.
    /// decide() asks when the role changes; a failure is returned, and decide() asks again.
    pub async fn register(&self, role: &'static str, retry: Duration) -> Result<(), PortError> {
        let reg = shield_dcs_consul::ServiceRegistration {
            role: role.to_owned(),
            host: self.host.clone(),
            port: self.port,
            api_base: self.api_base.clone(),
            check_interval_s: self.check_interval_s,
            extra_tags: self.tags.clone(),
        };
        match tokio::time::timeout(retry, self.consul.register_service(&reg)).await {
            Ok(Ok(())) => {
                tracing::info!(role, "consul: service registered");
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PortError::new(ErrorKind::Unreachable, "consul: service registration timed out")),
        }
    }
}
