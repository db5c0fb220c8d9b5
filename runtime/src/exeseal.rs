//! The runtime's binary sealed before the runtime enters a container
//! (CVE-2019-5736 and its class).
//!
//! skiff clones the container's init and `exec`'s process from itself: until
//! they execve, they run the runtime's image, and `/proc/<pid>/exe` of each
//! is the runtime's binary. A non-dumpable process keeps a container's
//! processes out of that link, except one with `CAP_SYS_PTRACE` (a
//! privileged container); ETXTBSY refuses a write open only while some
//! process runs the binary, and a read-only handle taken meanwhile is
//! reopened for writing through `/proc/self/fd` once none does. So `create`,
//! `run` and `exec` first re-execute themselves, once, from a view of the
//! binary that cannot be written and then cannot be executed:
//!
//! 1. an overlayfs with no upper layer (the binary's directory over an
//!    empty tmpfs), detached, never attached anywhere: read-only in its
//!    superblock, which no mount flag or remount can change (a read-only
//!    bind mount could be made writable again by a process with
//!    `CAP_SYS_ADMIN` holding a handle on it); once the runtime runs from
//!    it, the mount is made `noexec`, so `/proc/<pid>/exe` cannot be run
//!    either (nor `#!/proc/self/exe`);
//! 2. where overlayfs is not available, a sealed memfd copy of the binary
//!    (writes, growing and shrinking sealed; it can still be executed).
//!
//! `SKIFF_EXE_SEAL=memfd` picks the second (tests; hosts where the overlay
//! cannot be made). The cost is measured in the README (Security).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::mountfd;
use crate::sys;

/// Set by the runtime for its own re-execution: the descriptor of the
/// overlay mount to make `noexec` (or `memfd`). Removed from the
/// environment at once, so nothing the runtime starts sees it.
const MARKER: &str = "_SKIFF_SEALED_EXE";
/// Chooses the seal: `overlay` (default) or `memfd`.
const MODE_VAR: &str = "SKIFF_EXE_SEAL";

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Why the binary could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("sealing the runtime binary: {what}: {source}")]
    Sys {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "sealing the runtime binary: re-executed, but /proc/self/exe is not a sealed view \
         (overlay: {overlay}; memfd: {memfd})"
    )]
    NotSealed { overlay: String, memfd: String },
}

fn sys_err(what: &'static str) -> impl FnOnce(io::Error) -> SealError {
    move |source| SealError::Sys { what, source }
}

/// Makes sure this process runs from a sealed view of its binary,
/// re-executing itself (same argv, environment and descriptors) when it
/// does not yet. Returns in the sealed process.
///
/// `state_root` (the `--root` directory, when it exists) serves as the
/// overlay's second layer.
pub fn ensure(state_root: &Path) -> Result<(), SealError> {
    ensure_with(state_root, true)
}

/// [`ensure`], with the memfd copy allowed or not: a long-lived process (the
/// shim, one per pod) must not hold a private copy of its binary, so it asks
/// for the overlay view only and does without a seal where there is none.
pub fn ensure_with(state_root: &Path, allow_memfd: bool) -> Result<(), SealError> {
    let marker = std::env::var_os(MARKER);
    if let Some(m) = &marker {
        // Single-threaded: nothing else reads the environment now.
        std::env::remove_var(MARKER);
        finish(m)?;
    }
    let exe = sys::open(
        Path::new("/proc/self/exe"),
        libc::O_RDONLY | libc::O_CLOEXEC,
        0,
    )
    .map_err(sys_err("open /proc/self/exe"))?;
    if is_sealed(exe.as_fd()) {
        return Ok(());
    }
    if marker.is_some() {
        return Err(SealError::NotSealed {
            overlay: "re-executed from it".into(),
            memfd: "-".into(),
        });
    }
    let memfd_only = allow_memfd && std::env::var_os(MODE_VAR).is_some_and(|m| m == "memfd");
    let overlay = if memfd_only {
        Err(SealError::Sys {
            what: "overlay",
            source: io::Error::other(format!("{MODE_VAR}=memfd")),
        })
    } else {
        overlay_view(exe.as_fd(), Some(state_root))
    };
    let (file, mark) = match overlay {
        Ok((file, mnt)) => {
            let mark = mnt.as_raw_fd().to_string();
            // Kept open across the execve (no close-on-exec) for `finish`.
            clear_cloexec(mnt.as_fd())?;
            std::mem::forget(mnt);
            (file, mark)
        }
        Err(overlay) if !allow_memfd => {
            return Err(SealError::NotSealed {
                overlay: overlay.to_string(),
                memfd: "not wanted".into(),
            })
        }
        Err(overlay) => match memfd_copy(exe.as_fd()) {
            Ok(file) => (file, "memfd".to_string()),
            Err(memfd) => {
                return Err(SealError::NotSealed {
                    overlay: overlay.to_string(),
                    memfd: memfd.to_string(),
                })
            }
        },
    };
    drop(exe);
    reexec(file.as_fd(), &mark)
}

/// In the re-executed runtime: makes the overlay mount `noexec` (the
/// runtime already runs from it; nothing may start it again from there)
/// and closes it.
fn finish(marker: &OsStr) -> Result<(), SealError> {
    let Some(fd) = marker.to_str().and_then(|m| m.parse::<libc::c_int>().ok()) else {
        return Ok(());
    };
    // SAFETY: the descriptor was left open for us by the runtime that
    // re-executed us (it is ours alone: nothing else runs in between).
    let mnt = unsafe { OwnedFd::from_raw_fd(fd) };
    if sys::fstatfs_type(mnt.as_fd()).ok() != Some(OVERLAYFS_SUPER_MAGIC) {
        // Not what we left there: leave it alone.
        std::mem::forget(mnt);
        return Err(SealError::NotSealed {
            overlay: format!("{MARKER}={fd} is not an overlay mount"),
            memfd: "-".into(),
        });
    }
    sys::mount_setattr(mnt.as_fd(), MOUNT_ATTR_NOEXEC, 0).map_err(sys_err(
        "mount_setattr(MOUNT_ATTR_NOEXEC) on the overlay view",
    ))?;
    // Closed now, although the close of the last handle on a detached mount
    // waits for an RCU grace period (about 0.4 ms here): left open, the
    // init would hold a directory handle on the view through `created`.
    drop(mnt);
    Ok(())
}

/// Whether `exe` is a view that cannot be written: a file on a read-only
/// overlayfs, or a memfd sealed against writes.
fn is_sealed(exe: BorrowedFd<'_>) -> bool {
    if sys::fstatfs_type(exe).ok() == Some(OVERLAYFS_SUPER_MAGIC) {
        return sys::mount_flags(exe).is_ok_and(|f| f & libc::ST_RDONLY != 0);
    }
    // SAFETY: fcntl(F_GET_SEALS) on a valid descriptor.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// The running binary's path, and its directory and name.
fn exe_path() -> io::Result<(PathBuf, PathBuf, OsString)> {
    let path = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::other(format!(
            "{} has no directory",
            path.display()
        )));
    };
    Ok((path.clone(), dir.to_path_buf(), name.to_os_string()))
}

/// The binary through a detached overlayfs with no upper layer: its
/// directory over a second, unrelated one (overlayfs wants two lower
/// layers when it has no upper one): the state root `second` when there is
/// one, which costs nothing, else an empty tmpfs made for it (whose
/// teardown waits for an RCU grace period, about 0.3 ms). Neither is ever
/// reachable: a handle on the file does not lead to its directory. Returns
/// the file and the overlay mount.
fn overlay_view(
    exe: BorrowedFd<'_>,
    second: Option<&Path>,
) -> Result<(OwnedFd, OwnedFd), SealError> {
    let (path, dir, name) = exe_path().map_err(sys_err("readlink /proc/self/exe"))?;
    let dir_c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| sys_err("the binary's directory")(io::Error::other(e)))?;
    let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    let with = |layer: &str| -> io::Result<OwnedFd> {
        let layer_c = CString::new(layer).map_err(io::Error::other)?;
        mountfd::new_fs(
            c"overlay",
            &[(c"lowerdir+", &dir_c), (c"lowerdir+", &layer_c)],
            attrs,
        )
        .or_else(|_| {
            // Before Linux 6.8 (no `lowerdir+`): one string, `:` separating
            // the layers (escaped in the paths).
            let joined = format!(
                "{}:{}",
                escape_layer(dir.as_os_str()),
                escape_layer(OsStr::new(layer))
            );
            let joined = CString::new(joined).map_err(io::Error::other)?;
            mountfd::new_fs(c"overlay", &[(c"lowerdir", &joined)], attrs)
        })
    };
    // The root fails where it overlaps the binary's directory (one inside
    // the other) or is on a filesystem overlayfs does not take.
    let from_root = second
        .filter(|r| r.is_absolute() && r.is_dir())
        .and_then(|r| r.to_str())
        .and_then(|r| with(r).ok());
    let mnt = match from_root {
        Some(mnt) => mnt,
        None => {
            let empty = mountfd::new_fs(c"tmpfs", &[], mountfd::MOUNT_ATTR_RDONLY)
                .map_err(sys_err("an empty tmpfs for the overlay view"))?;
            with(&format!("/proc/self/fd/{}", empty.as_raw_fd()))
                .map_err(sys_err("an overlayfs view of the binary's directory"))?
        }
    };
    let name = PathBuf::from(name);
    let file = sys::openat(mnt.as_fd(), &name, libc::O_RDONLY | libc::O_CLOEXEC)
        .map_err(sys_err("open the binary in the overlay view"))?;
    // The path may name another file by now (the binary replaced since we
    // started): the view must hold the very file we run.
    let (a, b) = (
        sys::fstat(exe).map_err(sys_err("fstat /proc/self/exe"))?,
        sys::fstat(file.as_fd()).map_err(sys_err("fstat the overlay view"))?,
    );
    if (a.st_ino, a.st_size) != (b.st_ino, b.st_size) {
        return Err(sys_err("the overlay view")(io::Error::other(format!(
            "{} is no longer the running binary",
            path.display()
        ))));
    }
    Ok((file, mnt))
}

/// `path` as one overlayfs `lowerdir` layer: `\` and `:` escaped.
fn escape_layer(path: &OsStr) -> String {
    let mut out = String::new();
    for c in path.to_string_lossy().chars() {
        if c == '\\' || c == ':' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A memfd copy of the running binary, sealed against writes and resizes.
fn memfd_copy(exe: BorrowedFd<'_>) -> Result<OwnedFd, SealError> {
    // SAFETY: a valid C string and flags.
    let fd = unsafe {
        libc::memfd_create(
            c"skiff".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(sys_err("memfd_create")(io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = sys::fstat(exe)
        .map_err(sys_err("fstat /proc/self/exe"))?
        .st_size;
    let mut left = usize::try_from(size).unwrap_or(0);
    while left > 0 {
        // SAFETY: valid descriptors; the kernel keeps the offsets.
        let n = unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                exe.as_raw_fd(),
                std::ptr::null_mut(),
                left,
            )
        };
        if n < 0 {
            return Err(sys_err("copy the binary into a memfd")(
                io::Error::last_os_error(),
            ));
        }
        if n == 0 {
            return Err(sys_err("copy the binary into a memfd")(io::Error::other(
                "short read",
            )));
        }
        left -= n as usize;
    }
    // SAFETY: fcntl(F_ADD_SEALS) on our memfd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(sys_err("seal the memfd")(io::Error::last_os_error()));
    }
    Ok(memfd)
}

fn clear_cloexec(fd: BorrowedFd<'_>) -> Result<(), SealError> {
    // SAFETY: fcntl(F_SETFD) on a valid descriptor.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } < 0 {
        return Err(sys_err("fcntl(F_SETFD)")(io::Error::last_os_error()));
    }
    Ok(())
}

/// execveat(`file`) with our own argv and environment plus the marker.
fn reexec(file: BorrowedFd<'_>, mark: &str) -> Result<(), SealError> {
    let to_c = |s: &[u8]| CString::new(s).map_err(|e| sys_err("argv")(io::Error::other(e)));
    let args: Vec<CString> = std::env::args_os()
        .map(|a| to_c(a.as_bytes()))
        .collect::<Result<_, _>>()?;
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            to_c(&kv)
        })
        .collect::<Result<_, _>>()?;
    env.push(to_c(format!("{MARKER}={mark}").as_bytes())?);
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: valid descriptor, empty path with AT_EMPTY_PATH, and
    // NULL-terminated arrays of C strings that outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            file.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(sys_err("execveat of the sealed binary")(
        io::Error::last_os_error(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_escape_colons_and_backslashes() {
        assert_eq!(escape_layer(OsStr::new("/usr/bin")), "/usr/bin");
        assert_eq!(escape_layer(OsStr::new("/a:b\\c")), "/a\\:b\\\\c");
    }
}
