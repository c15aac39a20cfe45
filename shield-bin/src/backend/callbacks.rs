//! User scripts run on database events, as Patroni runs them, so existing Halo/Patroni scripts keep
//! working: `postgresql.callbacks.{on_start,on_stop,on_restart,on_reload,on_role_change}` are run
//! as `<cmd> <action> <role> <scope>` (the command split like a shell would, without a shell),
//! asynchronously and one at a time: a new call ends a still-running previous one and its children
//! (SIGKILL to its process group). `on_reload` has its own slot and never ends another callback.
//! `pre_promote` and `before_stop` run synchronously inside the promote and stop tasks. Every run is
//! bounded by `timeout` and logged with its exit status and duration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A callback event: shield-core's, which decide() names in `Action::RunCallback`.
pub use shield_core::action::CallbackEvent as Event;

/// Splits a command line into words as a POSIX shell would (quotes, backslashes, and a word
/// starting with `#` begins a comment), without expanding anything (`shell-words`). `Err` names
/// what is wrong.
pub fn split_command(cmd: &str) -> Result<Vec<String>, String> {
    // Patroni splits with Python's `shlex.split`, where `#` is an ordinary character; to
    // shell-words (as to sh) a word starting with `#` begins a comment, which would drop the
    // rest of the command. Stand `#` in for a private-use character while splitting.
    const HASH: char = '\u{E000}';
    if cmd.contains(HASH) {
        return Err(format!("the command holds the private-use character U+E000: {cmd:?}"));
    }
    let words = shell_words::split(&cmd.replace('#', &HASH.to_string())).map_err(|e| format!("{e} in {cmd:?}"))?;
    let words: Vec<String> = words.into_iter().map(|w| w.replace(HASH, "#")).collect();
    if words.is_empty() {
        return Err("the command is empty".to_owned());
    }
    Ok(words)
}

/// The configured scripts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scripts {
    /// `postgresql.callbacks`, already split into words.
    pub callbacks: BTreeMap<Event, Vec<String>>,
    /// `postgresql.pre_promote`.
    pub pre_promote: Option<Vec<String>>,
    /// `postgresql.before_stop`.
    pub before_stop: Option<Vec<String>>,
    /// Bound on each run.
    pub timeout: Duration,
}

/// A running asynchronous callback: its process group, and a number to tell runs apart.
#[derive(Debug)]
struct Slot {
    pgid: Option<i32>,
    run: u64,
}

/// Runs the scripts for one node.
#[derive(Debug)]
pub struct Callbacks {
    scripts: Scripts,
    scope: String,
    main: Arc<Mutex<Slot>>,
    reload: Arc<Mutex<Slot>>,
}

impl Callbacks {
    /// Scripts for cluster `scope`.
    pub fn new(scripts: Scripts, scope: &str) -> Callbacks {
        let slot = || Arc::new(Mutex::new(Slot { pgid: None, run: 0 }));
        Callbacks { scripts, scope: scope.to_owned(), main: slot(), reload: slot() }
    }

    /// Starts the `event` callback for `role` (if configured) without waiting for it, ending a
    /// still-running previous one first.
    pub fn fire(&self, event: Event, role: &str) {
        let Some(cmd) = self.scripts.callbacks.get(&event) else { return };
        let slot = if event == Event::OnReload { &self.reload } else { &self.main };
        let mut argv = cmd.clone();
        argv.extend([event.as_str().to_owned(), role.to_owned(), self.scope.clone()]);
        let run = {
            let Ok(mut s) = slot.lock() else { return };
            if let Some(pgid) = s.pgid.take() {
                tracing::info!(callback = event.as_str(), "ending the previous callback, still running");
                kill_group(pgid);
            }
            s.run += 1;
            s.run
        };
        let mut child = match spawn(&argv) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(callback = event.as_str(), command = %argv[0], error = %e, "callback could not start");
                return;
            }
        };
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        if let Ok(mut s) = slot.lock() {
            if s.run == run {
                s.pgid = pgid;
            }
        }
        let slot = slot.clone();
        let timeout = self.scripts.timeout;
        tokio::spawn(async move {
            let t = Instant::now();
            let status = tokio::time::timeout(timeout, child.wait()).await;
            if let Ok(mut s) = slot.lock() {
                if s.run == run {
                    s.pgid = None;
                }
            }
            report(&argv, status, t.elapsed(), pgid);
        });
    }

    /// Runs `pre_promote` (if configured) and waits for it: `Err` (a non-zero exit, a timeout,
    /// a failure to start) cancels the promotion.
    pub async fn pre_promote(&self) -> Result<(), String> {
        self.run_sync("pre_promote", self.scripts.pre_promote.as_ref()).await
    }

    /// Runs `before_stop` (if configured) and waits for it. The stop goes ahead whatever it
    /// returns, as in Patroni; the outcome is logged.
    pub async fn before_stop(&self) {
        let _ = self.run_sync("before_stop", self.scripts.before_stop.as_ref()).await;
    }

    async fn run_sync(&self, what: &str, argv: Option<&Vec<String>>) -> Result<(), String> {
        let Some(argv) = argv else { return Ok(()) };
        let mut child = spawn(argv).map_err(|e| {
            tracing::warn!(script = what, command = %argv[0], error = %e, "script could not start");
            format!("{what}: cannot start {}: {e}", argv[0])
        })?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        let t = Instant::now();
        let status = tokio::time::timeout(self.scripts.timeout, child.wait()).await;
        let ok = matches!(status, Ok(Ok(s)) if s.success());
        let shown = describe(&status, self.scripts.timeout);
        report(argv, status, t.elapsed(), pgid);
        if ok {
            Ok(())
        } else {
            Err(format!("{what} {shown}"))
        }
    }
}

fn spawn(argv: &[String]) -> std::io::Result<tokio::process::Child> {
    // No password variables and no ambient capabilities (the VIP's are the daemon's alone).
    let mut c = shield_db_postgres::process::tokio_command(&argv[0], shield_db_postgres::process::Caps::Drop);
    c.args(&argv[1..])
        .stdin(std::process::Stdio::null())
        // Its own process group, so ending it ends whatever it started too.
        .process_group(0)
        .kill_on_drop(false);
    c.spawn()
}

fn kill_group(pgid: i32) {
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL);
}

type Waited = Result<std::io::Result<std::process::ExitStatus>, tokio::time::error::Elapsed>;

fn describe(status: &Waited, timeout: Duration) -> String {
    match status {
        Ok(Ok(s)) => match s.code() {
            Some(0) => "exited 0".to_owned(),
            Some(c) => format!("exited {c}"),
            None => "was killed".to_owned(),
        },
        Ok(Err(e)) => format!("could not be waited for: {e}"),
        Err(_) => format!("did not finish within {} s", timeout.as_secs_f64()),
    }
}

fn report(argv: &[String], status: Waited, took: Duration, pgid: Option<i32>) {
    let shown = describe(&status, Duration::ZERO);
    let command = shell_words::join(argv);
    let ms = took.as_millis() as u64;
    match status {
        Ok(Ok(s)) if s.success() => tracing::info!(%command, took_ms = ms, "script exited 0"),
        Err(_) => {
            if let Some(p) = pgid {
                kill_group(p);
            }
            tracing::warn!(%command, took_ms = ms, "script timed out and was killed");
        }
        _ => tracing::warn!(%command, took_ms = ms, "script {shown}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell() {
        let s = |c: &str| split_command(c).expect("valid");
        assert_eq!(s("/bin/cb.sh"), ["/bin/cb.sh"]);
        assert_eq!(s("  python3  /x/aws.py --region 'eu west' "), ["python3", "/x/aws.py", "--region", "eu west"]);
        assert_eq!(s(r#"a "b \"c\" $d" e\ f ''"#), ["a", r#"b "c" $d"#, "e f", ""]);
        assert!(split_command("a 'b").expect_err("open quote").contains("closing quote"));
        assert!(split_command("a \"b").expect_err("open quote").contains("closing quote"));
        assert!(split_command("   ").expect_err("empty").contains("empty"));
        // As Python's shlex.split (Patroni): `#` is an ordinary character, never a comment.
        assert_eq!(s("a \\"), ["a", "\\"]);
        assert_eq!(s("cb.sh a#b '#c' #d e"), ["cb.sh", "a#b", "#c", "#d", "e"]);
        assert_eq!(s(" # not a comment"), ["#", "not", "a", "comment"]);
    }

    #[test]
    fn events_round_trip_through_their_keys() {
        for e in [Event::OnStart, Event::OnStop, Event::OnRestart, Event::OnReload, Event::OnRoleChange] {
            assert_eq!(Event::from_key(e.as_str()), Some(e));
        }
        assert_eq!(Event::from_key("on_promote"), None);
    }
}
