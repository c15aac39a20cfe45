//! shield-bin: the `shield` daemon and the `shieldctl` CLI.
//!
//! The crate is in layers, and a room imports only from the rooms below it (checked by
//! `tests/layers.rs`):
//!
//! ```text
//! tools/    shieldctl, shield init, shield check          (top)
//! daemon/   wiring, the loop (observe → decide → act), fencing, the journal
//! config/   the node's YAML (Patroni's keys), environment overrides, checked settings
//! rest/     Patroni's REST API: state, access control, health, admin endpoints, metrics
//! backend/  VIP, watchdog, callbacks, systemd, DCS client construction
//! net/      HTTP client, TLS                                (bottom)
//! ```
//!
//! Below them all are the backend crates (`shield-db-postgres`, `shield-dcs-etcd`,
//! `shield-dcs-consul`) and `shield-core`, which imports none of them.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod net;
pub mod rest;
pub mod tools;
