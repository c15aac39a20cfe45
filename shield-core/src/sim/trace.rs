//! The simulator trace: one line per event, kept in a bounded ring unless the whole trace is asked
//! for. Lines are only formatted when they will be kept.

use std::collections::VecDeque;

use crate::action::Action;

/// How many lines a run keeps for its violation report when the full trace is off.
const RING: usize = 400;

/// The trace.
#[derive(Debug)]
pub struct Trace {
    all: bool,
    lines: VecDeque<String>,
}

impl Trace {
    /// A trace keeping every line (`all`) or the last few hundred.
    pub fn new(all: bool) -> Trace {
        Trace { all, lines: VecDeque::new() }
    }

    /// Adds `  12.345s n1    <text>`.
    pub fn line(&mut self, t_ms: u64, who: &str, text: impl FnOnce() -> String) {
        if !self.all && self.lines.len() == RING {
            self.lines.pop_front();
        }
        self.lines.push_back(format!("{:>4}.{:03}s {who:<9} {}", t_ms / 1000, t_ms % 1000, text()));
    }

    /// The kept lines.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }
}

/// A short name for an action in a trace line.
pub fn action_name(a: &Action) -> String {
    match a {
        Action::RunDbTask { task } => format!("{task:?}"),
        Action::StopDb { mode } => format!("StopDb({mode:?})"),
        Action::TouchMember { .. } => "TouchMember".into(),
        Action::WriteConfig { .. } => "WriteConfig".into(),
        Action::WriteHistory { lines } => format!("WriteHistory({})", lines.len()),
        Action::WriteStatus { status } => format!("WriteStatus({})", status.optime),
        Action::ClearFailover { .. } => "ClearFailover".into(),
        Action::RenewLeader { .. } => "RenewLeader".into(),
        other => {
            let s = format!("{other:?}");
            s.split([' ', '{']).next().unwrap_or_default().to_owned()
        }
    }
}
