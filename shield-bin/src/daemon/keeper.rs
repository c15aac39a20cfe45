//! The fence keeper: a small child process that enforces the fencing deadline even when the
//! daemon itself is frozen (SIGSTOP, a stalled VM thread, a debugger).
//!
//! The daemon's in-process fence guard stops working the moment the daemon stops running. The
//! keeper is a separate process (`shield --fence-keeper DATA_DIR [VIP/PREFIX INTERFACE]`) that
//! reads deadlines from its stdin, one per line, as `CLOCK_MONOTONIC` nanoseconds (`-` clears it).
//! When a deadline passes without a newer one, it sends SIGQUIT (immediate shutdown) to the
//! postmaster and removes the VIP. If the daemon
//! dies, the pipe closes and the keeper enforces the last deadline before exiting, so a crashed
//! daemon cannot leave a primary running past its lease either.
//!
//! A hardware watchdog is still the only protection when the whole host freezes; this covers the
//! common case of the daemon alone being stuck.

use std::io::BufRead;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use shield_db_postgres::Postgres;

/// Prints a keeper message to the daemon's log, timestamped like the daemon's own lines (the
/// keeper runs without the daemon's logger).
pub fn say(msg: &str) {
    let now = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    eprintln!("{now}  WARN shield fence keeper: {msg}");
}

/// Now on CLOCK_MONOTONIC, in nanoseconds (shared by every process on the host).
pub fn mono_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64).unwrap_or(0)
}

/// What the keeper does at a deadline: stop the postmaster at once, then drop the VIP (`cidr`,
/// `interface`) if one is configured, so the fenced host neither takes writes nor answers on it.
fn fence(data_dir: &Path, vip: Option<&(String, String)>) {
    Postgres::kill_now(data_dir);
    if let Some((cidr, interface)) = vip {
        say(&crate::backend::vip::remove_blocking(cidr, interface));
    }
}

/// The keeper's main loop. Returns when stdin closes and any pending deadline is settled.
pub fn run(data_dir: &Path, vip: Option<(String, String)>) {
    let (tx, rx) = mpsc::channel::<Option<u64>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().parse::<u64>().ok()).is_err() {
                return;
            }
        }
    });
    let mut deadline: Option<u64> = None;
    loop {
        let wait = deadline.map_or(Duration::from_secs(3600), |d| Duration::from_nanos(d.saturating_sub(mono_ns())));
        match rx.recv_timeout(wait) {
            Ok(d) => deadline = d,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| mono_ns() >= d) {
                    say("lease deadline passed without renewal; stopping PostgreSQL");
                    fence(data_dir, vip.as_ref());
                    deadline = None;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The daemon is gone: enforce what it last promised, then leave.
                if let Some(d) = deadline {
                    std::thread::sleep(Duration::from_nanos(d.saturating_sub(mono_ns())));
                    say("the daemon exited holding the lease; stopping PostgreSQL at its deadline");
                    fence(data_dir, vip.as_ref());
                }
                return;
            }
        }
    }
}

/// The daemon's end of the keeper: starts the child and sends it deadlines.
#[derive(Debug)]
pub struct Keeper {
    stdin: Option<std::process::ChildStdin>,
    child: Option<std::process::Child>,
}

impl Keeper {
    /// Starts `shield --fence-keeper DATA_DIR`. On failure only the in-process guard works,
    /// and that is logged.
    pub fn start(data_dir: &Path, vip: Option<&crate::backend::vip::VipSettings>) -> Keeper {
        let vip_args: Vec<String> = vip.map(|v| vec![v.cidr(), v.interface.clone()]).unwrap_or_default();
        let spawned = std::env::current_exe().and_then(|exe| {
            // The keeper runs `ip` to remove the VIP, so it keeps the ambient capabilities.
            shield_db_postgres::process::command(exe, shield_db_postgres::process::Caps::KeepForVip)
                .arg("--fence-keeper")
                .arg(data_dir)
                .args(&vip_args)
                .stdin(std::process::Stdio::piped())
                .spawn()
        });
        match spawned {
            Ok(mut c) => Keeper { stdin: c.stdin.take(), child: Some(c) },
            Err(e) => {
                tracing::error!(error = %e, "fence keeper: cannot start it; only the in-process guard is active");
                Keeper { stdin: None, child: None }
            }
        }
    }

    /// Sends the deadline (None clears it).
    pub fn set(&mut self, deadline: Option<std::time::Instant>) {
        use std::io::Write;
        let line = match deadline {
            Some(at) => {
                format!("{}\n", mono_ns() + at.saturating_duration_since(std::time::Instant::now()).as_nanos() as u64)
            }
            None => "-\n".to_owned(),
        };
        if let Some(s) = self.stdin.as_mut() {
            if let Err(e) = s.write_all(line.as_bytes()) {
                tracing::error!(error = %e, "fence keeper: it exited; only the in-process guard is active");
                self.stdin = None;
            }
        }
    }

    /// Clears the deadline and lets the keeper exit (orderly shutdown).
    pub fn finish(mut self) {
        self.set(None);
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}
