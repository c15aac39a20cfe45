//! At most one node accepts writes at any instant of simulated time.
//!
//! A database only becomes writable through a transition the world reports as
//! [`Hook::BecameWritable`], so checking at those instants checks every instant: the old primary
//! must have been fenced before any other node was promoted.

use super::{Hook, Invariant, Snapshot};

/// See the module docs.
#[derive(Debug, Default)]
pub struct SingleWriter;

impl Invariant for SingleWriter {
    fn name(&self) -> &'static str {
        "single-writer"
    }

    fn check(&mut self, hook: Hook, snap: &Snapshot<'_>) -> Result<(), String> {
        let node = match hook {
            Hook::BecameWritable { node, .. } => node,
            // A thawed primary takes writes again: nobody else may by then.
            Hook::HostThawed { node } if snap.nodes[node].writable => node,
            _ => return Ok(()),
        };
        let others: Vec<String> = snap
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| *i != node && n.writable)
            .map(|(_, n)| n.name.to_string())
            .collect();
        if others.is_empty() {
            Ok(())
        } else {
            Err(format!("{} became writable while {} still accepts writes", snap.nodes[node].name, others.join(", ")))
        }
    }
}
