//! `tmpcopyup` (runc's mount extension): the tree of the directory a tmpfs
//! covers is copied into the new tmpfs, as runc copies it.
//!
//! runc (`fileutils.CopyDirectory` under a umask of 022) keeps each entry's
//! owner, a file's whole mode (set-id and sticky bits included) and a
//! symlink's target; a directory gets its permission and sticky bits less
//! the group and other write bits, and no set-id bit (mkdir drops them and
//! runc chmods no directory); hard links become separate files and times are
//! not kept. runc 1.1.5 fails on device nodes and fifos; they are made here
//! with their numbers, owner and mode.
//!
//! Both trees are walked by descriptor: each name is opened below its parent
//! with `RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH`, so no symlink in the image
//! is ever followed, and nothing is resolved from the container's root.

use crate::sys::{self, AsFdBorrowed};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where a copy failed (relative to the copied directory) and why.
#[derive(Debug)]
pub struct CopyError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The permission bits a copied directory keeps (runc's mkdir under its
/// umask of 022; set-id bits are not kept by mkdir).
const DIR_MODE_MASK: libc::mode_t = 0o1755;

/// One name below a directory, never through a symlink.
const BENEATH: u64 = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;

/// Copies the entries of directory `src` into directory `dst` (both opened
/// for reading), recursively.
pub fn copy_tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<(), CopyError> {
    copy_dir(src, dst, Path::new(""))
}

fn at(rel: &Path) -> impl Fn(std::io::Error) -> CopyError + '_ {
    move |source| CopyError {
        path: rel.to_path_buf(),
        source,
    }
}

fn copy_dir(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, rel: &Path) -> Result<(), CopyError> {
    let mut names: Vec<OsString> = Vec::new();
    for entry in std::fs::read_dir(sys::fd_path(src)).map_err(at(rel))? {
        names.push(entry.map_err(at(rel))?.file_name());
    }
    names.sort();
    for name in names {
        let here = rel.join(&name);
        copy_entry(src, dst, &name, &here)?;
    }
    Ok(())
}

/// Copies entry `name` of `src` into `dst`; `rel` names it in errors.
fn copy_entry(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    name: &OsStr,
    rel: &Path,
) -> Result<(), CopyError> {
    let c = sys::cstr(name).map_err(at(rel))?;
    let st = fstatat(src, &c).map_err(at(rel))?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // SAFETY: valid dir fd and C string.
        sys::check(unsafe { libc::mkdirat(dst.as_raw_fd(), c.as_ptr(), 0o700) })
            .map_err(at(rel))?;
        let from = open_below(src, name, libc::O_RDONLY | libc::O_DIRECTORY).map_err(at(rel))?;
        let to = open_below(dst, name, libc::O_RDONLY | libc::O_DIRECTORY).map_err(at(rel))?;
        copy_dir(from.as_fd_borrowed(), to.as_fd_borrowed(), rel)?;
        // Owner and mode once its entries are in, as runc.
        chown_at(dst, &c, &st).map_err(at(rel))?;
        return chmod_at(dst, &c, st.st_mode & DIR_MODE_MASK).map_err(at(rel));
    }
    copy_leaf(src, dst, name, &c, &st).map_err(at(rel))
}

/// Copies a non-directory entry: a file's content, a symlink's target, or
/// a node.
fn copy_leaf(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    name: &OsStr,
    c: &std::ffi::CStr,
    st: &libc::stat,
) -> std::io::Result<()> {
    let perm = st.st_mode & 0o7777;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let from = File::from(open_below(src, name, libc::O_RDONLY)?);
            let to = File::from(sys::openat2(
                dst,
                Path::new(name),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
                BENEATH,
            )?);
            std::io::copy(&mut &from, &mut &to)?;
            // Owner first: a chown clears the set-id bits the mode restores.
            // SAFETY: valid descriptor.
            sys::check(unsafe { libc::fchown(to.as_raw_fd(), st.st_uid, st.st_gid) })?;
            // SAFETY: valid descriptor.
            sys::check(unsafe { libc::fchmod(to.as_raw_fd(), perm) })?;
            Ok(())
        }
        libc::S_IFLNK => {
            let target = readlink_at(src, c)?;
            let t = sys::cstr(&target)?;
            // SAFETY: valid C strings and dir fd.
            sys::check(unsafe { libc::symlinkat(t.as_ptr(), dst.as_raw_fd(), c.as_ptr()) })?;
            chown_at(dst, c, st)
        }
        kind => {
            // Device nodes, fifos and sockets: the node itself.
            // SAFETY: valid dir fd and C string.
            sys::check(unsafe {
                libc::mknodat(dst.as_raw_fd(), c.as_ptr(), kind | 0o600, st.st_rdev)
            })?;
            chown_at(dst, c, st)?;
            chmod_at(dst, c, perm)
        }
    }
}

fn open_below(dir: BorrowedFd<'_>, name: &OsStr, flags: libc::c_int) -> std::io::Result<OwnedFd> {
    sys::openat2(dir, Path::new(name), flags, 0, BENEATH)
}

fn fstatat(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> std::io::Result<libc::stat> {
    // SAFETY: stat is plain data; zeroed is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dir fd, C string and out pointer.
    sys::check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn readlink_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> std::io::Result<OsString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: valid dir fd, C string and buffer of the given length.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(OsStr::from_bytes(&buf).to_os_string())
}

fn chown_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr, st: &libc::stat) -> std::io::Result<()> {
    // SAFETY: valid dir fd and C string; the link itself, never its target.
    sys::check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.st_uid,
            st.st_gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

fn chmod_at(dir: BorrowedFd<'_>, name: &std::ffi::CStr, mode: libc::mode_t) -> std::io::Result<()> {
    // SAFETY: valid dir fd and C string (never a symlink: not called for one).
    sys::check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}
