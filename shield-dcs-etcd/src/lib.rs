//! etcd v3 DCS backend: not implemented yet (issue 3).
