//! Keeping the long-lived server's resident memory small.
//!
//! The shim runs once per pod, so its resident set is multiplied by the pods on a node. Two things
//! dominate it beyond the code's own allocations:
//!
//! - glibc's per-thread malloc arenas: a shim makes few, small allocations from several threads,
//!   so one arena is enough (`M_ARENA_MAX = 1`).
//! - Code pages. The kernel maps file pages around every fault ("fault-around", 64 KiB), so a
//!   process that ran a create path through a 2 MiB binary and libc maps most of both, although it
//!   will not run that code again until the next create. [`trim_code`] drops the page-table entries
//!   of clean read-only file mappings (`MADV_DONTNEED`): the pages stay in the page cache, shared
//!   by every shim, and are mapped again on the next access. RSS then counts what an idle shim
//!   actually uses; PSS, which splits shared pages, barely changes.

use std::fs;

/// Use a single malloc arena. Call before any thread is started.
pub fn single_arena() {
    // SAFETY: mallopt takes two integers and only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The read-only file mappings of `/proc/self/smaps` (code and constant data) that hold no
/// private copies, as (start, length). Relocated data (RELRO) shows `Anonymous` pages and is left
/// alone: dropping it would lose the relocations.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            current = ((perms == "r-xp" || perms == "r--p") && path.starts_with('/'))
                .then(|| (start, end.saturating_sub(start)));
        } else if first == "Anonymous:" {
            if let Some(m) = current.take() {
                if f.next() == Some("0") {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// Drop this process's page-table entries for its clean code and constant pages (see the module
/// docs). Called once the server is up and after the calls that run a lot of code once (Create,
/// Start, Delete), so an idle shim maps little beyond what its waiting threads use.
pub fn trim_code() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, len) in clean_file_mappings(&smaps) {
        // SAFETY: the range is a whole read-only file mapping of this process with no private
        // pages; dropping its PTEs only makes the next access fault the page in again from the page
        // cache.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
55d0a0000000-55d0a0100000 r--p 00000000 fe:01 123 /usr/bin/shim
Rss:                 100 kB
Anonymous:             0 kB
55d0a0100000-55d0a0300000 r-xp 00100000 fe:01 123 /usr/bin/shim
Anonymous:             0 kB
55d0a0300000-55d0a0308000 r--p 00300000 fe:01 123 /usr/bin/shim
Anonymous:            32 kB
55d0a0308000-55d0a0310000 rw-p 00308000 fe:01 123 /usr/bin/shim
Anonymous:             8 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Anonymous:             4 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![(0x55d0a0000000, 0x100000), (0x55d0a0100000, 0x200000)]
        );
    }

    #[test]
    fn trimming_keeps_the_process_running() {
        let rss = || {
            let smaps = fs::read_to_string("/proc/self/smaps").unwrap();
            let mut total = 0u64;
            let mut counting = false;
            for line in smaps.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.first().is_some_and(|x| x.contains('-')) && f.len() > 1 {
                    counting = f[1] == "r-xp" && f.len() > 5;
                } else if counting && f.first() == Some(&"Rss:") {
                    total += f[1].parse::<u64>().unwrap();
                }
            }
            total
        };
        let before = rss();
        trim_code();
        let after = rss();
        assert!(after < before, "code rss {before} kB -> {after} kB");
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
