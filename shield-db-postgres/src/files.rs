//! Writing files so that neither a crash nor a full disk leaves a partial one, and so that a
//! file holding secrets is never readable by others, not even for a moment.
//!
//! [`write_atomic`] writes a temporary file beside the target (created with its final mode, so
//! there is no window between creation and a `chmod`), syncs it, renames it over the target and
//! syncs the directory: a reader sees the old file or the new one, never a mix, and after a crash
//! the rename is either on disk or not. [`write_secret`] does the same with mode 0600, and
//! [`backup`] copies a file to `<file>.bak` with the original's mode, never wider.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode of files that hold passwords: readable and writable by the owner only.
pub const SECRET_MODE: u32 = 0o600;

/// Distinguishes the temporary files of concurrent writes from one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically; a new file gets `mode` at creation (the umask can only
/// narrow it). On `Err` the old file, if any, is untouched and no temporary file is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, mode, |f| f.write_all(bytes))
}

/// [`write_atomic`] with mode 0600, for files that hold passwords (pgpass, configs).
pub fn write_secret(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, bytes, SECRET_MODE)
}

/// The existing file's permission bits, narrowed to `max`, or `default` when there is no file.
/// For rewriting a file whose mode an operator may have chosen (group-readable configs), without
/// ever widening it past `max`.
pub fn kept_mode(path: &Path, default: u32, max: u32) -> u32 {
    std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777 & max).unwrap_or(default)
}

/// Copies `path` to `<path>.bak` (atomically) with the original's mode narrowed to `max`: a
/// backup is never more readable than the file it keeps, and a file that held secrets
/// (`max` = [`SECRET_MODE`]) stays owner-only even if the original was left wider. Returns the
/// backup's path.
pub fn backup(path: &Path, max: u32) -> io::Result<PathBuf> {
    let bak = path.with_extension("bak");
    let old = std::fs::read(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777 & max;
    write_atomic(&bak, &old, mode)?;
    Ok(bak)
}

/// Narrows an existing file's mode to `max` (a config written before it was created 0600).
/// Errors are returned, never ignored: a secret left readable is a failure.
pub fn restrict(path: &Path, max: u32) -> io::Result<()> {
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & !max != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & max))?;
    }
    Ok(())
}

/// The temporary file beside `path`: hidden, and unique per process and write.
fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display())))?;
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{}.tmp-{}-{seq}", name.to_string_lossy(), std::process::id());
    Ok(path.with_file_name(tmp))
}

/// The directory a relative or absolute `path` lives in.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The steps of [`write_atomic`], with the content written by `fill` (tests make it fail).
fn write_with(path: &Path, mode: u32, fill: impl FnOnce(&mut File) -> io::Result<()>) -> io::Result<()> {
    let tmp = temp_path(path)?;
    // create_new: never follow a link or reuse a file someone else planted under that name.
    let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
    let written = fill(&mut f).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory is synced.
    File::open(dir_of(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    /// Nothing but the named files in `dir` (no temporary file left behind).
    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_get_their_mode_at_creation() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("pgpass");
        write_secret(&p, b"*:*:*:u:pw\n").expect("write");
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).expect("read"), b"*:*:*:u:pw\n");
        // Replacing a wider file gives the new mode (a new inode), not the old one.
        let q = dir.path().join("shield.yml");
        std::fs::write(&q, "old").expect("old");
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_secret(&q, b"new").expect("write");
        assert_eq!((mode(&q), std::fs::read_to_string(&q).expect("read").as_str()), (0o600, "new"));
        write_atomic(&dir.path().join("unit"), b"[Unit]\n", 0o644).expect("write");
        assert_eq!(mode(&dir.path().join("unit")), 0o644 & !current_umask());
        assert_eq!(listing(dir.path()), ["pgpass", "shield.yml", "unit"]);
    }

    /// The process's umask, read from /proc (changing it to read it would race other tests).
    fn current_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).expect("Umask line");
        u32::from_str_radix(line.trim(), 8).expect("octal")
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_partial_one() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("postgresql.conf");
        std::fs::write(&p, "port = '5432'\n").expect("old");
        // The disk fills up halfway through.
        let r = write_with(&p, 0o600, |f| {
            f.write_all(b"port = '54")?;
            Err(io::Error::new(io::ErrorKind::StorageFull, "no space left on device"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "port = '5432'\n");
        assert_eq!(listing(dir.path()), ["postgresql.conf"]);
        // The rename fails (the target is a directory): the temporary file is removed too.
        let d = dir.path().join("taken");
        std::fs::create_dir_all(d.join("x")).expect("mkdir");
        assert!(write_atomic(&d, b"x", 0o600).is_err());
        assert_eq!(listing(dir.path()), ["postgresql.conf", "taken"]);
        // A path naming no file is an error, not a panic.
        assert!(write_atomic(Path::new("/"), b"x", 0o600).is_err());
    }

    #[test]
    fn a_read_only_directory_refuses_the_write_and_keeps_the_old_file() {
        if nix::unistd::geteuid().is_root() {
            eprintln!("root ignores directory permissions: covered by the injected failure above");
            return;
        }
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("pg_hba.conf");
        std::fs::write(&p, "old\n").expect("old");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o500)).expect("chmod");
        let r = write_atomic(&p, b"new\n", 0o600);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod back");
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "old\n");
        assert_eq!(listing(dir.path()), ["pg_hba.conf"]);
    }

    #[test]
    fn backups_keep_the_mode_and_never_widen_it() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("shield.yml");
        std::fs::write(&p, "password: old\n").expect("old");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let bak = backup(&p, 0o777).expect("backup");
        assert_eq!(bak, dir.path().join("shield.bak"));
        assert_eq!((mode(&bak), std::fs::read_to_string(&bak).expect("read").as_str()), (0o600, "password: old\n"));
        // A secret file left readable by an older version: its backup is owner-only.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(mode(&backup(&p, SECRET_MODE).expect("backup")), 0o600);
        // A plain file keeps its mode, and a stale wide backup is replaced, not reused.
        let unit = dir.path().join("etcd.service");
        std::fs::write(&unit, "[Unit]\n").expect("unit");
        std::fs::set_permissions(&unit, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        std::fs::write(dir.path().join("etcd.bak"), "stale").expect("stale");
        std::fs::set_permissions(dir.path().join("etcd.bak"), std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert_eq!(mode(&backup(&unit, 0o777).expect("backup")), 0o640);
        // No original: an error, not an empty backup.
        assert!(backup(&dir.path().join("missing.yml"), 0o777).is_err());
    }

    #[test]
    fn modes_are_kept_narrowed_and_restricted() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("postgresql.conf");
        assert_eq!(kept_mode(&p, 0o600, 0o640), 0o600, "no file: the default");
        std::fs::write(&p, "x").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        assert_eq!(kept_mode(&p, 0o600, 0o640), 0o640);
        restrict(&p, SECRET_MODE).expect("restrict");
        assert_eq!(mode(&p), 0o600);
        assert!(restrict(&dir.path().join("missing"), SECRET_MODE).is_err());
    }
}
