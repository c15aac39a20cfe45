//! Helpers shared by Shield examples (none yet; the examples are in this folder).
