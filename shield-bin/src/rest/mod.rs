//! Patroni's REST API. Imports `net/` and `backend/` only; never `config/`, `daemon/` or `tools/`
//! (the daemon hands it what it needs). Inside, imports go one way (tests aside):
//!
//! ```text
//! server ─► guard, admin, health, metrics, status ─► state ─► access, command_params
//!           (health ─► metrics, status; metrics ─► status)
//! ```

pub mod access;
pub mod admin;
pub mod command_params;
pub mod guard;
pub mod health;
pub mod metrics;
pub mod server;
pub mod state;
pub mod status;

#[cfg(test)]
mod guard_tests;
#[cfg(test)]
mod tests;
