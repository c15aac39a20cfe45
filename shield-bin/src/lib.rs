//! shield-bin: the `shield` daemon and the `shieldctl` CLI, with the PostgreSQL backend.
//!
//! The daemon is wiring around [`shield_core::decide`]: [`config`] reads the node's YAML, the
//! backends implement shield-core's ports, and the driver runs observe → decide → act.

pub mod config;
