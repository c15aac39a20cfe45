//! Callback scripts, run for real through /bin/sh scripts: arguments, order, one at a time with
//! cancel-on-new-call, timeouts and failures.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shield_bin::backend::callbacks::{Callbacks, Event, Scripts};

/// A script that appends `<tag> <args...>` to `out`, after `sleep` seconds.
fn script(dir: &Path, name: &str, body: &str) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    vec![p.display().to_string()]
}

fn lines(p: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_owned).collect()
}

async fn wait_lines(p: &PathBuf, n: usize) -> Vec<String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let l = lines(p);
        if l.len() >= n {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines(p)
}

fn scripts(timeout_ms: u64) -> Scripts {
    Scripts { timeout: Duration::from_millis(timeout_ms), ..Scripts::default() }
}

#[tokio::test]
async fn callbacks_get_action_role_and_scope_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out");
    let cmd = script(dir.path(), "cb.sh", &format!("echo \"$@\" >> {}", out.display()));
    let mut s = scripts(5_000);
    for e in [Event::OnStart, Event::OnRoleChange, Event::OnStop] {
        s.callbacks.insert(e, cmd.clone());
    }
    let cb = Callbacks::new(s, "batman");
    cb.fire(Event::OnStart, "replica");
    wait_lines(&out, 1).await;
    cb.fire(Event::OnRoleChange, "master");
    wait_lines(&out, 2).await;
    cb.fire(Event::OnStop, "master");
    cb.fire(Event::OnRestart, "master"); // not configured: nothing runs
    let got = wait_lines(&out, 3).await;
    assert_eq!(got, ["on_start replica batman", "on_role_change master batman", "on_stop master batman"]);
}

#[tokio::test]
async fn a_new_call_ends_the_running_one_and_its_children() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out");
    // The slow part runs in a child process of the script: ending the call ends it too.
    let cmd = script(
        dir.path(),
        "cb.sh",
        &format!(
            "echo \"start $1\" >> {o}\nif [ \"$1\" = on_start ]; then sh -c 'sleep 3; echo late >> {o}'; fi\necho \"done $1\" >> {o}",
            o = out.display()
        ),
    );
    let mut s = scripts(10_000);
    s.callbacks.insert(Event::OnStart, cmd.clone());
    s.callbacks.insert(Event::OnRoleChange, cmd.clone());
    s.callbacks.insert(Event::OnReload, cmd);
    let cb = Callbacks::new(s, "batman");
    cb.fire(Event::OnStart, "replica");
    wait_lines(&out, 1).await;
    // on_reload has its own slot: it does not end on_start.
    cb.fire(Event::OnReload, "replica");
    wait_lines(&out, 3).await;
    cb.fire(Event::OnRoleChange, "master");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = lines(&out);
    assert!(got.contains(&"done on_role_change".to_owned()), "{got:?}");
    assert!(got.contains(&"done on_reload".to_owned()), "{got:?}");
    assert!(!got.iter().any(|l| l == "late" || l == "done on_start"), "the first call was not ended: {got:?}");
}

#[tokio::test]
async fn pre_promote_failure_and_timeout_cancel_promotion() {
    let dir = tempfile::tempdir().expect("dir");
    let mut s = scripts(1_000);
    s.pre_promote = Some(script(dir.path(), "fail.sh", "exit 3"));
    let e = Callbacks::new(s.clone(), "batman").pre_promote().await.expect_err("non-zero exit");
    assert_eq!(e, "pre_promote exited 3");

    s.pre_promote = Some(script(dir.path(), "slow.sh", "sleep 30"));
    let t = Instant::now();
    let e = Callbacks::new(s.clone(), "batman").pre_promote().await.expect_err("timeout");
    assert!(e.contains("did not finish within 1 s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "bounded by the timeout");

    s.pre_promote = Some(vec![dir.path().join("missing.sh").display().to_string()]);
    let e = Callbacks::new(s.clone(), "batman").pre_promote().await.expect_err("missing");
    assert!(e.contains("cannot start") && e.contains("missing.sh"), "{e}");

    s.pre_promote = Some(script(dir.path(), "ok.sh", "exit 0"));
    Callbacks::new(s.clone(), "batman").pre_promote().await.expect("exit 0 lets promotion go ahead");
    s.pre_promote = None;
    Callbacks::new(s, "batman").pre_promote().await.expect("nothing configured");
}

#[tokio::test]
async fn before_stop_runs_to_completion_first() {
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("out");
    let mut s = scripts(5_000);
    s.before_stop = Some(script(dir.path(), "bs.sh", &format!("sleep 0.3; echo drained >> {}", out.display())));
    Callbacks::new(s, "batman").before_stop().await;
    assert_eq!(lines(&out), ["drained"], "before_stop finished before the call returned");
}
