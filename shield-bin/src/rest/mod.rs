//! Patroni's REST API. Imports `net/` and `backend/` only; never `config/`, `daemon/` or `tools/`
//! (the daemon hands it what it needs). Inside, the modules import one way:
//!
//! ```text
//! server  ── router, server loop
//!   ├ guard    ── access guard, body bounds, resolver      ─┐
//!   ├ admin    ── unsafe endpoints                           │
//!   ├ health   ── health checks, fallback ── status          ├─► state ─► access, command_params
//!   └ metrics  ── /metrics                ── status         ─┘
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
mod tests;
