//! The decision journal: one JSON line per cycle with the state before, the observation, and the
//! decision, so any production decision can be replayed through `decide()` and explained.
//! The file rotates at 64 MiB (one old file, `.1`, is kept).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use shield_core::{Decision, NodeState, Observation};

/// Rotate when the file reaches this size.
const ROTATE_BYTES: u64 = 64 << 20;

/// One line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The state decide() was given.
    pub state: NodeState,
    /// The observation.
    pub obs: Observation,
    /// What it decided.
    pub decision: Decision,
}

/// An open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
}

impl Journal {
    /// Opens (appends to) the journal at `path`.
    pub fn open(path: &Path) -> std::io::Result<Journal> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Journal { path: path.to_path_buf(), file, size })
    }

    /// Appends one cycle. A write failure is logged, never fatal: the HA loop must go on.
    pub fn append(&mut self, state: &NodeState, obs: &Observation, decision: &Decision) {
        #[derive(Serialize)]
        struct Line<'a> {
            state: &'a NodeState,
            obs: &'a Observation,
            decision: &'a Decision,
        }
        let mut line = match serde_json::to_string(&Line { state, obs, decision }) {
            Ok(l) => l,
            Err(e) => return tracing::warn!(error = %e, "journal: cannot serialise a cycle"),
        };
        line.push('\n');
        if self.size + line.len() as u64 > ROTATE_BYTES {
            let old = self.path.with_extension("jsonl.1");
            let reopened = std::fs::rename(&self.path, &old)
                .and_then(|()| OpenOptions::new().create(true).append(true).open(&self.path));
            match reopened {
                Ok(f) => {
                    self.file = f;
                    self.size = 0;
                }
                Err(e) => tracing::warn!(error = %e, "journal: rotation failed"),
            }
        }
        match self.file.write_all(line.as_bytes()) {
            Ok(()) => self.size += line.len() as u64,
            Err(e) => tracing::warn!(error = %e, "journal: write failed"),
        }
    }
}

/// Reads every entry of a journal file (lines that do not parse are reported, not skipped
/// silently).
pub fn read(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1)))
        .collect()
}
