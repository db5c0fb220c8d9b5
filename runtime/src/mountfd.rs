//! Mounting between file descriptors with the kernel's mount API
//! (`open_tree`, `move_mount`, `mount_setattr`, `fsopen`/`fsmount`), so that
//! no mount target or source is ever named by a path.
//!
//! After pivot_root, `/proc/self/fd/N` is resolved through the container's
//! own `/proc`, which the image or the spec controls (a plain directory of
//! symlinks, a tmpfs, a bind of something else): a mount made through such a
//! path can land anywhere in the container (CVE-2025-52881). These calls
//! take the descriptors themselves.
//!
//! Every wrapper returns `std::io::Error` carrying errno; callers add the
//! context.

use crate::sys::MountAttr;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
/// `MOUNT_ATTR_RDONLY` of `mount_setattr(2)` and `fsmount(2)`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) })
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A detached copy of the mount at `fd` (a bind of exactly what `fd`
/// holds), with its submounts when `recursive`.
pub fn clone_tree(fd: BorrowedFd<'_>, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as u32;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: valid fd and an empty C string; flags as documented.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) };
    fd_result(r)
}

/// Attaches the detached mount `tree` on top of what `target` holds.
pub fn move_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fds and empty C strings.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    unit_result(r)
}

/// Binds what `source` holds onto what `target` holds.
pub fn bind(source: BorrowedFd<'_>, target: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    let tree = clone_tree(source, recursive)?;
    move_onto(tree.as_fd(), target)
}

/// Sets `attrs` (`MOUNT_ATTR_*`) on the mount `fd` is on, leaving its other
/// flags (including the ones the kernel locks in a user namespace) alone.
pub fn set_attrs(fd: BorrowedFd<'_>, attrs: u64, recursive: bool) -> io::Result<()> {
    setattr(
        fd,
        MountAttr {
            attr_set: attrs,
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        },
        recursive,
    )
}

/// `MOUNT_ATTR_IDMAP` of `mount_setattr(2)`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Idmaps the detached mount `fd` (and its submounts when `recursive`)
/// with the id mapping of the user namespace `userns`.
pub fn set_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    setattr(
        fd,
        MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        },
        recursive,
    )
}

/// Sets the propagation type (`MS_PRIVATE`, `MS_SLAVE`, ...) of the mount
/// `fd` is on, and of its submounts when `recursive`.
pub fn set_propagation(
    fd: BorrowedFd<'_>,
    propagation: libc::c_ulong,
    recursive: bool,
) -> io::Result<()> {
    setattr(
        fd,
        MountAttr {
            attr_set: 0,
            attr_clr: 0,
            propagation,
            userns_fd: 0,
        },
        recursive,
    )
}

fn setattr(fd: BorrowedFd<'_>, attr: MountAttr, recursive: bool) -> io::Result<()> {
    crate::sys::mount_setattr_with(fd, &attr, recursive)
}

/// A new, detached mount of filesystem `fstype` configured with `options`
/// (key, value; an empty value sets `key` as a flag, such as `ro`) and
/// mounted with `attrs`.
pub fn new_fs(fstype: &CStr, options: &[(&CStr, &CStr)], attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: valid C string.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) };
    let ctx = fd_result(r)?;
    for (key, value) in options {
        let (cmd, value) = if value.is_empty() {
            (FSCONFIG_SET_FLAG, std::ptr::null())
        } else {
            (FSCONFIG_SET_STRING, value.as_ptr())
        };
        // SAFETY: valid fd and C strings (no value for a flag).
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                cmd,
                key.as_ptr(),
                value,
                0,
            )
        };
        unit_result(r)?;
    }
    // SAFETY: valid fd; no key or value for CMD_CREATE.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    unit_result(r)?;
    // SAFETY: valid fd.
    let r = unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) };
    fd_result(r)
}
