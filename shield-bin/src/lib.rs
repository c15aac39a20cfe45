//! shield-bin: the `shield` daemon and the `shieldctl` CLI, with the PostgreSQL backend.
//!
//! The daemon is wiring around [`shield_core::decide`]: [`config`] reads the node's YAML, [`pg`]
//! implements the database port, [`driver`] runs observe → decide → act, [`api`] serves
//! Patroni's REST endpoints, and [`journal`] records every decision for replay. [`ctl`] is
//! `shieldctl`: patronictl's commands over the DCS and the members' REST APIs.

pub mod api;
pub mod callbacks;
pub mod check;
pub mod child;
pub mod command_params;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod driver;
pub mod files;
pub mod http;
pub mod init;
pub mod journal;
pub mod keeper;
pub mod metrics;
pub mod pg;
pub mod pgwire;
pub mod sdnotify;
pub mod serve;
pub mod tls;
pub mod vip;
pub mod watchdog;
