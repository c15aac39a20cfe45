//! Patroni's REST API: the shared state the loop publishes into, access control for unsafe
//! methods, the health and admin endpoints, and Prometheus metrics. Imports `net/` and
//! `backend/`; never `config/`, `daemon/` or `tools/` (the daemon hands it what it needs).

pub mod api;
pub mod command_params;
pub mod metrics;
pub mod serve;
