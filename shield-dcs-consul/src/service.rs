//! Consul's `register_service`: the node's entry in the `<scope>` service.

use crate::http;
use crate::ConsulDcs;
use hyper::Method;
use shield_core::ports::PortError;

/// What [`ConsulDcs::register_service`] registers.
#[derive(Clone, Debug)]
pub struct ServiceRegistration {
    /// `primary`, `replica` or `standby-leader`.
    pub role: String,
    /// The database host clients connect to.
    pub host: String,
    /// The database port.
    pub port: u16,
    /// The REST API base URL (`http://host:8008`): the check calls `<base>/<role>`.
    pub api_base: String,
    /// Check interval (Patroni's `service_check_interval`, default 5 s).
    pub check_interval_s: u64,
    /// Patroni's `service_tags`.
    pub extra_tags: Vec<String>,
}

/// A Consul service name from a scope: lower case, `[a-z0-9-]` only (Patroni's rule).
pub fn service_name(scope: &str) -> String {
    let s: String =
        scope.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    s.trim_matches('-').to_owned()
}

impl ConsulDcs {
    /// Whether our session still exists (`GET /v1/session/info`).
    pub async fn session_alive(&self) -> Result<bool, PortError> {
        let id = self.session.lock().await.id.clone();
        match id {
            Some(id) => self.raw.session_info(&id, &self.cfg.dc).await,
            None => Ok(false),
        }
    }

    /// Registers this node as an instance of service `<scope>` with its role as tag and an HTTP
    /// health check on the REST API's role path (Patroni's `register_service`), so DNS finds the
    /// primary as `primary.<scope>.service.consul`.
    pub async fn register_service(&self, reg: &ServiceRegistration) -> Result<(), PortError> {
        let mut tags = vec![reg.role.clone()];
        if reg.role == "primary" {
            tags.push("master".into());
        }
        tags.extend(reg.extra_tags.iter().cloned());
        let body = serde_json::json!({
            "ID": format!("{}/{}", self.cfg.scope, self.cfg.member),
            "Name": service_name(&self.cfg.scope),
            "Tags": tags,
            "Address": reg.host,
            "Port": reg.port,
            "Check": {
                "HTTP": format!("{}/{}", reg.api_base.trim_end_matches('/'), reg.role),
                "Interval": format!("{}s", reg.check_interval_s),
                "DeregisterCriticalServiceAfter": format!("{}s", (self.cfg.ttl_ms / 1000).max(1) * 10),
            },
        });
        let path = http::with_dc("/v1/agent/service/register", "");
        let a =
            self.raw.send("register service", Method::PUT, &path, Some(body.to_string().into_bytes()), None).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(http::status_error("register service", a.status, &a.body))
        }
    }
}
