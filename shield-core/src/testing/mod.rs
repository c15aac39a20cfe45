//! Test support for Shield and for code embedding it: an in-memory DCS on simulated time and the
//! DCS conformance suite every backend runs against itself.

mod conformance;
mod memory_dcs;

pub use conformance::{run_dcs_conformance, ConformanceFailure, DcsHarness};
pub use memory_dcs::{MemoryDcs, MemoryStore};
