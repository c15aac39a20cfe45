//! Unmaps the code the daemon ran while it started and no longer runs, so that its resident set
//! is the steady loop's working set.
//!
//! Why by hand: no maintained crate does this. The kernel maps a program's file pages lazily,
//! but each fault maps the 64 KiB around the faulting page ("fault-around"), and start-up runs
//! code the loop never runs again (argument and config parsing, bootstrap, clone, rewind). Of the
//! daemon's 6 MB of text about 5 MB stayed mapped for its whole life. `MADV_DONTNEED` on a
//! clean, read-only, file-backed private mapping only drops its page-table entries: the pages stay
//! in the page cache and the next access maps them back with a minor fault, exactly as after the
//! kernel's own reclaim, which may drop them at any time anyway. Mappings with a private copy of
//! a page (`Anonymous` above zero in smaps: the relocated RELRO segment, or a debugger's
//! breakpoint) are left alone, since for them the call would discard data. Only the executable
//! and the C runtime the loader mapped before `main` (libc, libm, libgcc_s, the loader itself)
//! are advised: those are never unmapped, so the range read from smaps cannot have become
//! another mapping (a library a `dlopen` brought in could be closed and its range reused).

use std::ptr::NonNull;

/// One read-only, file-backed private mapping with no private page.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Clean {
    start: usize,
    len: usize,
}

/// The C runtime's files, mapped before `main` and never unmapped.
const RUNTIME: [&str; 4] = ["libc.so", "libm.so", "libgcc_s.so", "ld-linux"];

/// Whether `path` is the executable `exe` or one of the [`RUNTIME`] libraries.
fn never_unmapped(path: &str, exe: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    path == exe || RUNTIME.iter().any(|r| name.starts_with(r))
}

/// The mappings of `/proc/self/smaps` text that are safe to drop: private (`p`), not writable,
/// of a file that is [`never_unmapped`], and with `Anonymous: 0 kB` stated (a mapping whose
/// smaps entry does not say so is kept).
fn clean_mappings(smaps: &str, exe: &str) -> Vec<Clean> {
    let mut out = Vec::new();
    // The mapping being read, whether its line qualifies, and whether `Anonymous: 0` was seen.
    let mut current: Option<(Clean, bool, bool)> = None;
    let finish = |c: Option<(Clean, bool, bool)>, out: &mut Vec<Clean>| {
        if let Some((m, true, true)) = c {
            out.push(m);
        }
    };
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
                continue;
            };
            finish(current.take(), &mut out);
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let candidate = perms.len() == 4
                && perms.as_bytes()[1] == b'-'
                && perms.ends_with('p')
                && never_unmapped(path, exe)
                && end > start;
            current = Some((Clean { start, len: end - start }, candidate, false));
        } else if first == "Anonymous:" {
            if let Some((_, _, zero)) = current.as_mut() {
                *zero = fields.next() == Some("0");
            }
        }
    }
    finish(current.take(), &mut out);
    out
}

/// Drops the page-table entries of this process's clean file-backed mappings; returns how many
/// mappings it advised. Errors (no `/proc`, a refused call) only mean nothing was dropped.
pub fn release_unused_code() -> usize {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else { return 0 };
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut n = 0;
    for m in clean_mappings(&smaps, &exe.to_string_lossy()) {
        if advise_dontneed(&m).is_ok() {
            n += 1;
        }
    }
    n
}

/// `madvise(MADV_DONTNEED)` on one mapping.
#[allow(unsafe_code)]
fn advise_dontneed(m: &Clean) -> nix::Result<()> {
    let Some(addr) = NonNull::new(m.start as *mut std::ffi::c_void) else { return Ok(()) };
    // SAFETY: the range is one whole mapping of this process as smaps listed it a moment ago:
    // read-only, private, file-backed, and holding no private (anonymous) page, so dropping its
    // entries loses nothing: every page is read back from the same file on the next access.
    // Nothing in this process maps or unmaps files at run time (no dlopen after start-up), so
    // the range still is that mapping.
    unsafe { nix::sys::mman::madvise(addr, m.len, nix::sys::mman::MmapAdvise::MADV_DONTNEED) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 08:01 123 /usr/bin/shield
Size:               1024 kB
Anonymous:             0 kB
55d0a0100000-55d0a0700000 r-xp 00100000 08:01 123 /usr/bin/shield
Size:               6144 kB
Anonymous:             0 kB
55d0a0700000-55d0a0740000 r--p 00700000 08:01 123 /usr/bin/shield
Size:                256 kB
Anonymous:           228 kB
55d0a0740000-55d0a0750000 rw-p 00740000 08:01 123 /usr/bin/shield
Anonymous:            64 kB
55d0a1000000-55d0a1100000 rw-p 00000000 00:00 0 [heap]
Anonymous:           332 kB
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
7f0000100000-7f0000200000 r-xp 00000000 00:00 0
Anonymous:             0 kB
7f0000300000-7f0000400000 r-xs 00000000 08:01 99 /dev/shm/x
Anonymous:             0 kB
7f0000500000-7f0000600000 r-xp 00028000 08:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_mappings_of_the_program_and_its_runtime_are_dropped() {
        let got = clean_mappings(SMAPS, "/usr/bin/shield");
        let starts: Vec<usize> = got.iter().map(|m| m.start).collect();
        assert_eq!(starts, vec![0x55d0a0000000, 0x55d0a0100000, 0x7f0000500000], "{got:?}");
        assert_eq!(got[1].len, 0x600000);
        // Another program's view: its executable is not /usr/bin/shield.
        let other = clean_mappings(SMAPS, "/usr/bin/other");
        assert_eq!(other.iter().map(|m| m.start).collect::<Vec<_>>(), vec![0x7f0000500000]);
    }

    #[test]
    fn a_mapping_is_kept_unless_smaps_states_it_has_no_private_page() {
        let libm = "7f0000500000-7f0000600000 r-xp 00028000 08:01 77 /lib/libm.so.6\n";
        assert!(clean_mappings(libm, "/x").is_empty(), "no Anonymous line");
        let stated = format!("{libm}Anonymous:             0 kB\n");
        assert_eq!(clean_mappings(&stated, "/x"), vec![Clean { start: 0x7f0000500000, len: 0x100000 }]);
        let dlopened = "7f0000500000-7f0000600000 r-xp 0 08:01 78 /lib/libnss_files.so.2\nAnonymous: 0 kB\n";
        assert!(clean_mappings(dlopened, "/x").is_empty(), "a dlopen-ed library may be unmapped");
        assert!(clean_mappings("garbage\n\nzz-yy r-xp\n", "/x").is_empty());
    }

    #[test]
    fn dropping_our_own_code_leaves_the_process_running() {
        // The test binary drops its own clean mappings and keeps running the code in them.
        assert!(release_unused_code() > 0);
        let v: Vec<u64> = (0..1000).map(|i| i * 3).collect();
        assert_eq!(v.iter().sum::<u64>(), 1_498_500);
    }
}
