//! Which mounts may go on `/proc` or below it, as runc's `checkProcMount`
//! decides (runc 1.2 and later; see the README's security section for how
//! runc 1.1.5 differs).
//!
//! Something mounted over a procfs file redirects what the runtime and the
//! container's tools read and write there (a tmpfs over `/proc/sys` swallows
//! sysctls; a bind over `/proc/self/attr` redirects LSM labels): only a
//! procfs may cover `/proc` itself, and below it only the files that lxcfs
//! emulates may be covered. The destination is checked after resolving it
//! inside the rootfs, so a symlink in the image (`/x -> /proc/sys`) is
//! checked as what it points to.

use std::path::{Component, Path, PathBuf};

/// Files below `/proc` that may be bind-mounted over (lxcfs and similar
/// emulate them for tools such as `top` and `free`), runc's list.
pub const ALLOWED_BELOW_PROC: [&str; 11] = [
    "cpuinfo",
    "diskstats",
    "meminfo",
    "stat",
    "swaps",
    "uptime",
    "loadavg",
    "slabinfo",
    "net/dev",
    "sys/kernel/ns_last_pid",
    "sys/crypto/fips_enabled",
];

/// What is to be mounted, as far as the rule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A new procfs (`type: proc`).
    NewProcfs,
    /// A bind of something on a procfs.
    ProcfsBind,
    /// Anything else: another filesystem, or a bind of something not on a
    /// procfs.
    Other,
}

/// Why a mount is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcMountError {
    #[error("{0:?} cannot be mounted because it is not of type proc")]
    NotProc(PathBuf),
    #[error("{0:?} cannot be mounted because it is inside /proc")]
    InsideProc(PathBuf),
}

/// Normalizes a container path lexically (`.` and `..` inside the root).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Checks a mount whose destination, resolved inside the rootfs, is
/// `resolved` (an absolute container path).
pub fn check(resolved: &Path, source: Source) -> Result<(), ProcMountError> {
    let resolved = normalize(resolved);
    let Ok(below) = resolved.strip_prefix("/proc") else {
        return Ok(());
    };
    if below.as_os_str().is_empty() {
        return match source {
            Source::NewProcfs | Source::ProcfsBind => Ok(()),
            Source::Other => Err(ProcMountError::NotProc(resolved)),
        };
    }
    if ALLOWED_BELOW_PROC.iter().any(|a| Path::new(a) == below) {
        return Ok(());
    }
    Err(ProcMountError::InsideProc(resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_procfs_covers_proc() {
        assert!(check(Path::new("/proc"), Source::NewProcfs).is_ok());
        assert!(check(Path::new("/proc/"), Source::ProcfsBind).is_ok());
        assert_eq!(
            check(Path::new("/proc"), Source::Other),
            Err(ProcMountError::NotProc("/proc".into()))
        );
        assert!(check(Path::new("/x/../proc"), Source::Other).is_err());
    }

    #[test]
    fn below_proc_only_the_lxcfs_files() {
        for ok in [
            "/proc/meminfo",
            "/proc/net/dev",
            "/proc/sys/kernel/ns_last_pid",
        ] {
            assert!(check(Path::new(ok), Source::Other).is_ok(), "{ok}");
        }
        for bad in [
            "/proc/sys",
            "/proc/self/attr",
            "/proc/net",
            "/proc/meminfo/x",
            "/proc/1",
        ] {
            assert_eq!(
                check(Path::new(bad), Source::Other),
                Err(ProcMountError::InsideProc(bad.into())),
                "{bad}"
            );
            // Not even a procfs may go below /proc.
            assert!(check(Path::new(bad), Source::NewProcfs).is_err(), "{bad}");
        }
    }

    #[test]
    fn elsewhere_anything_goes() {
        for p in ["/", "/procfoo", "/sys", "/run/proc", "/dev/pts"] {
            assert!(check(Path::new(p), Source::Other).is_ok(), "{p}");
        }
    }
}
