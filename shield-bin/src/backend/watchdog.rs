//! The watchdog backend: Linux `/dev/watchdog` behind shield-core's [`Watchdog`] port.
//!
//! The device is opened when the node is about to promote (opening a watchdog starts its timer),
//! given the timeout with `WDIOC_SETTIMEOUT`, fed by writing a byte after each lease renewal that
//! came back in time, and stopped with the magic close (write `V`, then close) on demotion, in
//! pause and on an orderly shutdown. A device that keeps a longer timeout than asked for is
//! refused: it could let the lease expire while the host still runs.
//!
//! [`Device`] is the seam for tests: [`TestingDevice`] (config `watchdog.driver: testing`) writes
//! each operation with its time to a plain file, so an end-to-end test can check when a frozen
//! daemon stopped feeding.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use shield_core::ports::{ErrorKind, PortError, Watchdog};
use shield_core::WatchdogMode;

/// The operations Shield needs from a watchdog device.
pub trait Device: Send {
    /// Asks for a timeout of `secs` seconds; returns the timeout the device applies.
    fn set_timeout(&mut self, secs: u32) -> io::Result<u32>;
    /// Resets the timer.
    fn keepalive(&mut self) -> io::Result<()>;
    /// Stops the timer for good (the magic close) and closes the device.
    fn magic_close(self: Box<Self>) -> io::Result<()>;
}

/// Opens a device (called on each arming).
pub type Opener = Box<dyn Fn() -> io::Result<Box<dyn Device>> + Send + Sync>;

/// A Linux watchdog character device.
#[derive(Debug)]
pub struct LinuxDevice {
    file: File,
}

/// The two ioctls, from `<linux/watchdog.h>`: `_IOWR('W', 6, int)` and `_IOR('W', 7, int)`.
/// nix generates them as `unsafe fn`s taking a raw fd and pointer; the wrapper below is the only
/// caller, with a valid open fd and a pointer to a local.
#[allow(unsafe_code)]
mod ioctl {
    nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, nix::libc::c_int);
    nix::ioctl_read!(wdioc_gettimeout, b'W', 7, nix::libc::c_int);

    /// `WDIOC_SETTIMEOUT`: the device writes back the timeout it applied.
    pub fn set_timeout(fd: std::os::fd::BorrowedFd<'_>, secs: i32) -> nix::Result<i32> {
        use std::os::fd::AsRawFd;
        let mut v: nix::libc::c_int = secs;
        // SAFETY: `fd` is an open descriptor borrowed for this call, and `v` outlives it.
        unsafe { wdioc_settimeout(fd.as_raw_fd(), &mut v) }?;
        Ok(v)
    }

    /// `WDIOC_GETTIMEOUT`.
    pub fn get_timeout(fd: std::os::fd::BorrowedFd<'_>) -> nix::Result<i32> {
        use std::os::fd::AsRawFd;
        let mut v: nix::libc::c_int = 0;
        // SAFETY: as above.
        unsafe { wdioc_gettimeout(fd.as_raw_fd(), &mut v) }?;
        Ok(v)
    }
}

impl LinuxDevice {
    /// Opens `path` write-only. This starts the timer with the driver's default timeout.
    pub fn open(path: &Path) -> io::Result<LinuxDevice> {
        Ok(LinuxDevice { file: std::fs::OpenOptions::new().write(true).open(path)? })
    }
}

impl Device for LinuxDevice {
    fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
        use std::os::fd::AsFd;
        let want = i32::try_from(secs).unwrap_or(i32::MAX);
        let got = match ioctl::set_timeout(self.file.as_fd(), want) {
            Ok(v) => v,
            // A device without a settable timeout keeps its own; read it.
            Err(nix::Error::ENOTTY | nix::Error::EOPNOTSUPP | nix::Error::EINVAL) => {
                ioctl::get_timeout(self.file.as_fd()).map_err(io::Error::from)?
            }
            Err(e) => return Err(e.into()),
        };
        u32::try_from(got).map_err(|_| io::Error::other(format!("the device reports a timeout of {got} s")))
    }

    fn keepalive(&mut self) -> io::Result<()> {
        // Any byte but 'V' feeds the timer.
        self.file.write_all(b"1")
    }

    fn magic_close(mut self: Box<Self>) -> io::Result<()> {
        self.file.write_all(b"V")
    }
}

/// A stand-in device for tests and demos (`watchdog.driver: testing`): a plain file to which each
/// operation is appended as `<unix ms> <operation>`. It never resets anything.
#[derive(Debug)]
pub struct TestingDevice {
    file: File,
}

impl TestingDevice {
    /// Opens (appends to) the record at `path`.
    pub fn open(path: &Path) -> io::Result<TestingDevice> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let mut d = TestingDevice { file };
        d.record("open")?;
        Ok(d)
    }

    fn record(&mut self, what: &str) -> io::Result<()> {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        writeln!(self.file, "{ms} {what}")
    }
}

impl Device for TestingDevice {
    fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
        self.record(&format!("timeout {secs}"))?;
        Ok(secs)
    }

    fn keepalive(&mut self) -> io::Result<()> {
        self.record("keepalive")
    }

    fn magic_close(mut self: Box<Self>) -> io::Result<()> {
        self.record("close")
    }
}

/// shield-core's watchdog port over a [`Device`].
pub struct DeviceWatchdog {
    what: String,
    open: Opener,
    dev: Mutex<Option<Box<dyn Device>>>,
}

impl std::fmt::Debug for DeviceWatchdog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let armed = self.dev.lock().map(|d| d.is_some()).unwrap_or(false);
        f.debug_struct("DeviceWatchdog").field("device", &self.what).field("armed", &armed).finish()
    }
}

/// Which device implementation a config names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `/dev/watchdog` and the like.
    Linux,
    /// [`TestingDevice`].
    Testing,
}

impl DeviceWatchdog {
    /// A watchdog that opens `path` with `driver` each time it is armed.
    pub fn new(driver: Driver, path: PathBuf) -> DeviceWatchdog {
        let what = path.display().to_string();
        let open: Opener = match driver {
            Driver::Linux => Box::new(move || Ok(Box::new(LinuxDevice::open(&path)?) as Box<dyn Device>)),
            Driver::Testing => Box::new(move || Ok(Box::new(TestingDevice::open(&path)?) as Box<dyn Device>)),
        };
        DeviceWatchdog::with_opener(what, open)
    }

    /// A watchdog over any device (tests inject failing ones).
    pub fn with_opener(what: impl Into<String>, open: Opener) -> DeviceWatchdog {
        DeviceWatchdog { what: what.into(), open, dev: Mutex::new(None) }
    }

    fn failed(&self, doing: &str, e: impl std::fmt::Display) -> PortError {
        PortError::new(ErrorKind::Io, format!("watchdog {}: {doing}: {e}", self.what))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Box<dyn Device>>>, PortError> {
        self.dev.lock().map_err(|_| PortError::new(ErrorKind::Io, "watchdog: lock poisoned"))
    }
}

#[async_trait]
impl Watchdog for DeviceWatchdog {
    async fn arm(&self, timeout_ms: u64) -> Result<(), PortError> {
        self.set_and_feed("arm", timeout_ms, true)
    }

    async fn feed(&self, timeout_ms: u64) -> Result<(), PortError> {
        self.set_and_feed("feed", timeout_ms, false)
    }

    async fn disarm(&self) -> Result<(), PortError> {
        match self.lock()?.take() {
            Some(d) => d.magic_close().map_err(|e| self.failed("magic close", e)),
            None => Ok(()),
        }
    }
}

impl DeviceWatchdog {
    /// Sets the device's timeout to `timeout_ms` in whole seconds (rounded down) and pings it,
    /// opening it first when `open` (arming); a device that keeps a longer timeout is stopped.
    fn set_and_feed(&self, what: &str, timeout_ms: u64, open: bool) -> Result<(), PortError> {
        let secs = u32::try_from(timeout_ms / 1000).unwrap_or(u32::MAX);
        if secs == 0 {
            return Err(self.failed(
                what,
                format!("the timeout the lease allows ({timeout_ms} ms) is under the device's 1 s resolution"),
            ));
        }
        let mut g = self.lock()?;
        if g.is_none() && open {
            *g = Some((self.open)().map_err(|e| self.failed("open", e))?);
        }
        let Some(dev) = g.as_mut() else { return Err(self.failed(what, "not armed")) };
        let applied = dev.set_timeout(secs).map_err(|e| self.failed("set the timeout", e));
        let check = applied.and_then(|got| {
            if got > secs {
                Err(self.failed("arm", format!("the device keeps a {got} s timeout, longer than the {secs} s allowed")))
            } else {
                Ok(())
            }
        });
        let fed = check.and_then(|()| dev.keepalive().map_err(|e| self.failed("keepalive", e)));
        if let Err(e) = fed {
            // A device we cannot trust is stopped again rather than left to reset the host.
            if let Some(d) = g.take() {
                let _ = d.magic_close();
            }
            return Err(e);
        }
        Ok(())
    }
}

/// The `watchdog` section.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchdogSettings {
    /// `mode`: off, automatic (the default) or required.
    pub mode: WatchdogMode,
    /// `device` (`/dev/watchdog`).
    pub device: PathBuf,
    /// `driver`: `default` (Linux) or `testing` (a file recording each operation).
    pub driver: Driver,
    /// `safety_margin` in ms: the timeout is `ttl - safety_margin`. `None`: derived from the
    /// fencing deadline (Shield's default; Patroni's 5 s does not fit a 4 s ttl).
    pub safety_margin_ms: Option<u64>,
}

/// The watchdog for `w`: `None` in mode off, or in mode automatic when the device is not
/// usable (with a warning); an error in mode required, as Patroni exits then.
pub fn open(w: &WatchdogSettings) -> Result<Option<Arc<dyn Watchdog>>, String> {
    if w.mode == WatchdogMode::Off {
        return Ok(None);
    }
    // Opening a watchdog starts it, so only look at the device here; it is opened before promotion.
    let usable = match w.driver {
        Driver::Linux => {
            use std::os::unix::fs::FileTypeExt;
            match std::fs::metadata(&w.device) {
                Err(e) => Err(e.to_string()),
                Ok(m) if !m.file_type().is_char_device() => Err("not a character device".to_owned()),
                Ok(_) => nix::unistd::access(&w.device, nix::unistd::AccessFlags::W_OK).map_err(|e| e.to_string()),
            }
        }
        Driver::Testing => Ok(()),
    };
    match usable {
        Ok(()) => Ok(Some(Arc::new(DeviceWatchdog::new(w.driver.clone(), w.device.clone())))),
        Err(why) if w.mode == WatchdogMode::Required => Err(format!(
            "`watchdog.mode` is required but {} is not usable: {why} (modprobe softdog; give the daemon's user write access)",
            w.device.display()
        )),
        Err(why) => {
            tracing::warn!(device = %w.device.display(), "watchdog: not usable ({why}); running without one");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A device whose operations are logged and which fails where told to.
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
        applies: io::Result<u32>,
        keepalive_fails: bool,
    }

    impl Device for Fake {
        fn set_timeout(&mut self, secs: u32) -> io::Result<u32> {
            self.log.lock().expect("log").push(format!("timeout {secs}"));
            match &self.applies {
                Ok(v) => Ok(*v),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            }
        }
        fn keepalive(&mut self) -> io::Result<()> {
            self.log.lock().expect("log").push("keepalive".into());
            if self.keepalive_fails {
                return Err(io::Error::other("EIO"));
            }
            Ok(())
        }
        fn magic_close(self: Box<Self>) -> io::Result<()> {
            self.log.lock().expect("log").push("close".into());
            Ok(())
        }
    }

    fn watchdog(applies: io::Result<u32>, keepalive_fails: bool) -> (DeviceWatchdog, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let applies = Arc::new(Mutex::new(Some(applies)));
        let open: Opener = Box::new(move || {
            let applies = applies.lock().expect("applies").take().unwrap_or(Ok(2));
            Ok(Box::new(Fake { log: l.clone(), applies, keepalive_fails }) as Box<dyn Device>)
        });
        (DeviceWatchdog::with_opener("fake", open), log)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().build().expect("runtime")
    }

    #[test]
    fn arm_feed_and_magic_close() {
        let (w, log) = watchdog(Ok(2), false);
        rt().block_on(async {
            w.arm(2_700).await.expect("works");
            w.feed(2_000).await.expect("works");
            w.disarm().await.expect("works");
            w.disarm().await.expect("works");
            assert!(w.feed(2_000).await.is_err(), "a disarmed watchdog cannot be fed");
        });
        assert_eq!(*log.lock().expect("log"), ["timeout 2", "keepalive", "timeout 2", "keepalive", "close"]);
    }

    #[test]
    fn an_ioctl_failure_fails_the_arming_and_stops_the_device() {
        let (w, log) = watchdog(Err(io::Error::from_raw_os_error(nix::libc::EIO)), false);
        let e = rt().block_on(w.arm(2_700)).expect_err("fails");
        assert!(e.message.contains("set the timeout"), "{e}");
        assert_eq!(*log.lock().expect("log"), ["timeout 2", "close"]);
    }

    #[test]
    fn a_longer_device_timeout_is_refused() {
        let (w, log) = watchdog(Ok(60), false);
        let e = rt().block_on(w.arm(2_700)).expect_err("fails");
        assert!(e.message.contains("60 s timeout, longer than the 2 s allowed"), "{e}");
        assert_eq!(log.lock().expect("log").last().map(String::as_str), Some("close"));
    }

    /// Each feed sets the timeout afresh; a device that keeps a longer one than the lease allows
    /// is stopped rather than left to reset the host after the lease could have passed.
    #[test]
    fn a_feed_sets_the_timeout_and_refuses_a_longer_one() {
        let (w, log) = watchdog(Ok(3), false);
        rt().block_on(async {
            w.arm(3_500).await.expect("arms at 3 s");
            let e = w.feed(2_900).await.expect_err("the device keeps 3 s where 2 s was asked");
            assert!(e.message.contains("3 s timeout, longer than the 2 s allowed"), "{e}");
            assert!(w.feed(3_000).await.is_err(), "stopped: no longer armed");
        });
        assert_eq!(*log.lock().expect("log"), ["timeout 3", "keepalive", "timeout 2", "close"]);
    }

    #[test]
    fn a_failed_keepalive_is_reported() {
        let (w, _) = watchdog(Ok(2), true);
        assert!(rt().block_on(w.arm(2_700)).is_err());
    }

    #[test]
    fn a_sub_second_timeout_is_refused_before_opening() {
        let (w, log) = watchdog(Ok(1), false);
        let e = rt().block_on(w.arm(900)).expect_err("fails");
        assert!(e.message.contains("under the device's 1 s resolution"), "{e}");
        assert!(log.lock().expect("log").is_empty());
    }

    #[test]
    fn the_testing_device_records_each_operation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("watchdog");
        let w = DeviceWatchdog::new(Driver::Testing, path.clone());
        rt().block_on(async {
            w.arm(3_000).await.expect("works");
            w.feed(2_000).await.expect("works");
            w.disarm().await.expect("works");
        });
        let ops: Vec<String> = std::fs::read_to_string(&path)
            .expect("record")
            .lines()
            .map(|l| l.split_once(' ').expect("time and operation").1.to_owned())
            .collect();
        assert_eq!(ops, ["open", "timeout 3", "keepalive", "timeout 2", "keepalive", "close"]);
    }

    #[test]
    fn a_missing_device_is_an_error_naming_it() {
        let w = DeviceWatchdog::new(Driver::Linux, PathBuf::from("/nonexistent/watchdog"));
        let e = rt().block_on(w.arm(3_000)).expect_err("fails");
        assert!(e.message.contains("/nonexistent/watchdog") && e.message.contains("open"), "{e}");
    }
}
