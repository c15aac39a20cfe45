//! shield-bin: the daemon and CLI live in src/bin.
