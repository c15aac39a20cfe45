//! Patroni's REST API. Imports `net/` and `backend/` only; never `config/`, `daemon/` or `tools/`
//! (the daemon hands it what it needs). Inside, imports go one way (tests aside):
//!
//! ```text
//! server ─► guard, admin, config_edit, switch, health, metrics, status ─► state ─► access, command_params
//!           (health ─► metrics, status; metrics ─► status)
//! ```

pub mod access;
pub mod admin;
pub mod command_params;
pub mod config_edit;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod server;
pub mod state;
pub mod status;
pub mod switch;

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod health_tests;
#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod tests;
