//! A verified handle on a procfs, for every `/proc` file the runtime writes
//! once the container's root is its root (sysctls, `oom_score_adj`).
//!
//! After pivot_root, `/proc` is whatever the image and the spec made of it:
//! a symlink, a plain directory of fake files, a tmpfs over `/proc/sys`, a
//! bind of something else. Writing to a path there could be redirected
//! (CVE-2025-52881), so the runtime never does: it opens a procfs of its own,
//! checks that it is one (`fstatfs` says `PROC_SUPER_MAGIC` and the inode is
//! the root of a procfs), and reaches files beneath it with `openat2`
//! refusing to cross a mount or to leave it, checking each file it opens.
//!
//! Where the handle comes from, first that works (as runc's libpathrs):
//! 1. `fsopen("proc")`: a fresh, detached procfs that nothing can overmount;
//! 2. `open_tree(OPEN_TREE_CLONE)` of `/proc`: a detached copy of the top
//!    mount only, without what is mounted over its children;
//! 3. `/proc` itself, opened without following a symlink.
//!
//! In every case the root is verified, and `RESOLVE_NO_XDEV` below it makes
//! an overmount an error instead of a redirection.

use crate::mountfd;
use crate::sys::{self, AsFdBorrowed};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// `PROC_SUPER_MAGIC` of `statfs(2)`.
const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;
/// The inode number of a procfs's root (`PROC_ROOT_INO`): only the root of a
/// procfs has it.
const PROC_ROOT_INO: u64 = 1;

/// A procfs could not be opened or used safely.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    #[error("procfs: open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("procfs: {path} is not on a real procfs (unsafe procfs detected): refusing to use it")]
    NotProcfs { path: PathBuf },
    #[error("procfs: write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An open, verified procfs root.
pub struct Procfs {
    root: OwnedFd,
}

fn statfs_type(fd: BorrowedFd<'_>) -> std::io::Result<libc::c_long> {
    // SAFETY: zeroed statfs is valid; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as libc::c_long)
}

/// Whether `fd` is on a procfs.
pub fn is_procfs(fd: BorrowedFd<'_>) -> bool {
    statfs_type(fd).is_ok_and(|t| t == PROC_SUPER_MAGIC)
}

/// Whether `fd` is the root directory of a procfs.
fn is_procfs_root(fd: BorrowedFd<'_>) -> bool {
    is_procfs(fd) && sys::fstat(fd).is_ok_and(|st| st.st_ino == PROC_ROOT_INO)
}

/// A fresh procfs of our pid namespace, detached from every tree.
fn fresh() -> std::io::Result<OwnedFd> {
    mountfd::new_fs(c"proc", &[], 0)
}

/// A detached copy of the `/proc` mount (only the top one).
fn cloned() -> std::io::Result<OwnedFd> {
    let p = sys::open(
        Path::new("/proc"),
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )?;
    mountfd::clone_tree(p.as_fd_borrowed(), false)
}

impl Procfs {
    /// Opens a procfs for the runtime's own use; never the container's
    /// `/proc` unless it is verified to be the root of a real procfs.
    pub fn open() -> Result<Procfs, ProcfsError> {
        let candidates: [fn() -> std::io::Result<OwnedFd>; 3] = [fresh, cloned, || {
            sys::open(
                Path::new("/proc"),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
        }];
        let mut last = None;
        for open in candidates {
            match open() {
                Ok(fd) if is_procfs_root(fd.as_fd_borrowed()) => return Ok(Procfs { root: fd }),
                Ok(_) => {
                    last = Some(ProcfsError::NotProcfs {
                        path: "/proc".into(),
                    })
                }
                Err(source) => {
                    last = Some(ProcfsError::Open {
                        path: "/proc".into(),
                        source,
                    })
                }
            }
        }
        Err(last.unwrap_or(ProcfsError::NotProcfs {
            path: "/proc".into(),
        }))
    }

    /// Opens `rel` (relative to the procfs root, e.g. `sys/kernel/x` or
    /// `self/oom_score_adj`) with `flags`, never leaving the procfs nor
    /// crossing a mount on it, and checks the file is a procfs one.
    pub fn open_file(&self, rel: &Path, flags: libc::c_int) -> Result<OwnedFd, ProcfsError> {
        let shown = Path::new("/proc").join(rel);
        let resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_XDEV | libc::RESOLVE_NO_MAGICLINKS;
        let fd =
            sys::openat2(self.root.as_fd_borrowed(), rel, flags, 0, resolve).map_err(|source| {
                ProcfsError::Open {
                    path: shown.clone(),
                    source,
                }
            })?;
        if !is_procfs(fd.as_fd_borrowed()) {
            return Err(ProcfsError::NotProcfs { path: shown });
        }
        Ok(fd)
    }

    /// Writes `value` to the procfs file `rel`.
    pub fn write(&self, rel: &Path, value: &str) -> Result<(), ProcfsError> {
        let fd = self.open_file(rel, libc::O_WRONLY)?;
        sys::write_all(fd.as_fd_borrowed(), value.as_bytes()).map_err(|source| ProcfsError::Write {
            path: Path::new("/proc").join(rel),
            source,
        })
    }
}

/// Writes each sysctl (`/proc/sys/...` paths from the plan) through a
/// verified procfs handle.
pub fn write_sysctls(sysctls: &[(PathBuf, String)]) -> Result<(), ProcfsError> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let proc = Procfs::open()?;
    for (path, value) in sysctls {
        let rel = path.strip_prefix("/proc").unwrap_or(path);
        proc.write(&sys::relative(rel), value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_that_is_not_procfs_is_refused() {
        let tmp = sys::open(Path::new("/tmp"), libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        assert!(!is_procfs_root(tmp.as_fd_borrowed()));
        let sub = sys::open(Path::new("/proc/self"), libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        assert!(is_procfs(sub.as_fd_borrowed()));
        assert!(
            !is_procfs_root(sub.as_fd_borrowed()),
            "a subdirectory of procfs is not its root"
        );
        let root = sys::open(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        assert!(is_procfs_root(root.as_fd_borrowed()));
    }

    #[test]
    fn files_are_reached_beneath_the_handle_only() {
        let p = Procfs {
            root: sys::open(Path::new("/proc"), libc::O_PATH | libc::O_DIRECTORY, 0).unwrap(),
        };
        assert!(p
            .open_file(Path::new("self/status"), libc::O_RDONLY)
            .is_ok());
        assert!(p
            .open_file(Path::new("../etc/passwd"), libc::O_RDONLY)
            .is_err());
        assert!(p
            .open_file(Path::new("/etc/passwd"), libc::O_RDONLY)
            .is_err());
        // A magic link is not followed.
        assert!(p
            .open_file(Path::new("self/cwd/x"), libc::O_RDONLY)
            .is_err());
    }
}
