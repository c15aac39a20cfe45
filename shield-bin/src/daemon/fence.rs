//! Fencing, in one place: the deadline decide() computes (`Decision::fence_at`, moved later by
//! each successful renewal) is enforced twice, by an in-process guard task that stops a writable
//! database the moment it passes even while the loop is blocked in a slow call, and by the fence
//! keeper child process ([`super::keeper`]), which does the same while the daemon is frozen or
//! dead. The watchdog device (`backend/watchdog.rs`) covers a frozen host; decide() says when it
//! is armed and fed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use shield_db_postgres::Postgres;
use tokio::sync::watch;

use super::keeper::Keeper;
use crate::backend::vip::VipSettings;

/// The two enforcers of one deadline.
#[derive(Debug)]
pub struct Fence {
    guard: watch::Sender<Option<Instant>>,
    keeper: Keeper,
}

impl Fence {
    /// Starts the guard task (on the current runtime) and the keeper process.
    pub fn start(data_dir: &Path, vip: Option<&VipSettings>) -> Fence {
        let (guard, rx) = watch::channel::<Option<Instant>>(None);
        tokio::spawn(guard_task(rx, data_dir.to_path_buf()));
        Fence { guard, keeper: Keeper::start(data_dir, vip) }
    }

    /// Sets the deadline (None: nothing to enforce, no lease or paused).
    pub fn set(&mut self, at: Option<Instant>) {
        let _ = self.guard.send(at);
        self.keeper.set(at);
    }

    /// Moves a held deadline later after a successful renewal (never earlier, never from none).
    pub fn extend(&mut self, to: Instant) {
        let moved = self.guard.send_if_modified(|g| match g {
            Some(old) if *old < to => {
                *g = Some(to);
                true
            }
            _ => false,
        });
        if moved {
            self.keeper.set(Some(to));
        }
    }

    /// Clears the deadline and lets the keeper exit (orderly shutdown).
    pub fn finish(self) {
        self.keeper.finish();
    }
}

/// Stops the database at the deadline unless a newer deadline replaced it.
async fn guard_task(mut rx: watch::Receiver<Option<Instant>>, data_dir: PathBuf) {
    loop {
        let deadline = *rx.borrow_and_update();
        match deadline {
            None => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => {
                        if *rx.borrow() == Some(at) {
                            tracing::error!("fence guard: the lease deadline passed without a renewal; stopping PostgreSQL immediately");
                            Postgres::kill_now(&data_dir);
                            let _ = rx.changed().await;
                        }
                    }
                    r = rx.changed() => if r.is_err() { return },
                }
            }
        }
    }
}
