//! Consul DCS backend: not implemented yet (issue 6).
