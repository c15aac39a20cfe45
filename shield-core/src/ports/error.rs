//! Port errors, typed by cause and by whether a retry can help.

use serde::{Deserialize, Serialize};

/// The cause of a port failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The service did not answer in time, or the connection failed.
    Unreachable,
    /// A compare-and-set or create-only write found another value or revision.
    CompareFailed,
    /// Our lease or session is gone, or the key is held by someone else.
    LeaseLost,
    /// The service answered with a refusal (auth, permission, invalid request).
    Rejected,
    /// Local I/O failed (file, process, device).
    Io,
    /// The service answered with something we could not parse.
    BadData,
}

impl ErrorKind {
    /// Whether the same call may succeed if repeated later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unreachable | ErrorKind::Io)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::CompareFailed => "compare failed",
            ErrorKind::LeaseLost => "lease lost",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Io => "i/o error",
            ErrorKind::BadData => "bad data",
        })
    }
}

/// An error from a port: its cause and a message naming what failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{kind}: {message}")]
pub struct PortError {
    /// The cause.
    pub kind: ErrorKind,
    /// What failed, for the log.
    pub message: String,
}

impl PortError {
    /// Builds an error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> PortError {
        PortError { kind, message: message.into() }
    }

    /// Whether a retry can help.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}
