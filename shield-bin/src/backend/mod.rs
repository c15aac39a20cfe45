//! The node's backends other than the database (which is `shield-db-postgres`): the VIP, the
//! watchdog device, callback scripts, systemd notification, and DCS client construction (one
//! place, used by the daemon, shieldctl and `shield check`). Imports only `net/` of this crate.

pub mod callbacks;
pub mod dcs;
pub mod footprint;
pub mod sdnotify;
pub mod service;
pub mod vip;
pub mod watchdog;
