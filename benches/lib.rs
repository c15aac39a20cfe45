//! Criterion benches for Shield live beside this file.
