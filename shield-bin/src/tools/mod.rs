//! The operator's tools: `shieldctl` (patronictl's commands), `shield init` and `shield check`.
//! The top layer: may import every room below; nothing imports it.

pub mod check;
pub mod ctl;
pub mod init;
