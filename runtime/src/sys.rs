//! Thin, checked wrappers around the syscalls that neither `nix` nor `std`
//! exposes the way the runtime needs them: `clone3` with fork semantics,
//! `openat2` confined to a root, `pivot_root`, and mounting through file
//! descriptors so that no path is resolved twice.
//!
//! Every wrapper returns `std::io::Error` carrying errno; callers add the
//! context (which path, which step) in their own error types.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Converts a path or string to a `CString`, refusing interior NULs.
pub fn cstr(s: impl AsRef<OsStr>) -> io::Result<CString> {
    CString::new(s.as_ref().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A libc return value: negative is the thread's errno.
pub(crate) fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `struct clone_args` of `clone3(2)` (the version-2 layout with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (since Linux 5.7), a 64-bit flag of clone3 only.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// What `clone_fork` returned: like `fork`, in which process we now are.
pub enum Forked {
    Parent(libc::pid_t),
    Child,
}

/// Forks with `flags` (namespace flags) and, when `cgroup` is given and the
/// kernel supports it, straight into that cgroup v2 directory
/// (`CLONE_INTO_CGROUP`), so the child never runs outside its cgroup.
///
/// Uses `clone3` with no new stack, which gives `fork` semantics; falls back
/// to the legacy `clone` syscall where `clone3` is missing. The caller must
/// be single-threaded (the runtime is).
pub fn clone_fork(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    // With CLONE_PARENT the child's exit signal is the caller's (SIGCHLD to
    // its parent), and clone3 refuses one of its own.
    let exit_signal = match flags & libc::CLONE_PARENT as u64 {
        0 => libc::SIGCHLD as u64,
        _ => 0,
    };
    let mut args = CloneArgs {
        flags,
        exit_signal,
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 with a zero stack duplicates the calling thread like
    // fork; the struct outlives the call and its size is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    let ret = match check_long(ret) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) && cgroup.is_none() => {
            // SAFETY: the legacy clone with a null stack also behaves as fork.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flags | libc::SIGCHLD as u64) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            check_long(r)?
        }
        Err(e) => return Err(e),
    };
    if ret == 0 {
        Ok(Forked::Child)
    } else {
        Ok(Forked::Parent(ret as libc::pid_t))
    }
}

/// `openat2(2)` with `how`.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: libc::c_int,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is plain data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & (libc::O_CREAT | libc::O_TMPFILE) != 0 {
        mode as u64
    } else {
        0
    };
    how.resolve = resolve;
    // With RESOLVE_IN_ROOT or RESOLVE_BENEATH the kernel answers EAGAIN when a
    // rename or a mount anywhere on the system raced a `..` step of the walk
    // (openat2(2)); on a node starting containers that is routine, and the
    // answer is to walk again. The bound only stops a livelock.
    let scoped = resolve & (libc::RESOLVE_IN_ROOT | libc::RESOLVE_BENEATH) != 0;
    let mut tries = 0;
    loop {
        // SAFETY: valid pointers for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        match check_long(fd) {
            // SAFETY: the kernel returned a fresh descriptor we now own.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
            Err(e)
                if scoped && e.raw_os_error() == Some(libc::EAGAIN) && tries < OPENAT2_RETRIES =>
            {
                tries += 1
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many times an openat2 walk that raced a rename or a mount is retried.
const OPENAT2_RETRIES: u32 = 1024;

/// Resolve flags used for every path inside a container's rootfs: symlinks
/// are followed but can never leave the root, and magic links in /proc are
/// refused.
pub const IN_ROOT: u64 = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;

/// Opens `path` relative to the rootfs directory `root` with `O_PATH`,
/// never escaping it.
pub fn open_path_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    openat2(root, &relative(path), libc::O_PATH, 0, IN_ROOT)
}

/// Strips the leading `/` (and `.` components) so a container path can be
/// given to an `*at` call relative to the rootfs.
pub fn relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => out.push(".."),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Creates every missing directory of `path` inside `root` (each `mkdirat`
/// names a single component below a directory already opened inside the
/// root, so a symlink cannot redirect it) and returns an `O_PATH` fd of the
/// last one.
pub fn mkdir_all_in_root(root: BorrowedFd<'_>, path: &Path, mode: u32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    match openat2(root, &rel, libc::O_PATH | libc::O_DIRECTORY, 0, IN_ROOT) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    // Start below the deepest ancestor that exists (usually the parent), so
    // only the missing tail is created and reopened.
    let comps: Vec<Component<'_>> = rel.components().collect();
    let mut have = comps.len().saturating_sub(1);
    let mut cur = loop {
        if have == 0 {
            break openat2(root, Path::new("."), libc::O_PATH | libc::O_DIRECTORY, 0, 0)?;
        }
        let prefix: PathBuf = comps[..have].iter().collect();
        match openat2(root, &prefix, libc::O_PATH | libc::O_DIRECTORY, 0, IN_ROOT) {
            Ok(fd) => break fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => have -= 1,
            Err(e) => return Err(e),
        }
    };
    let mut walked: PathBuf = comps[..have].iter().collect();
    for comp in &comps[have..] {
        walked.push(comp);
        let name = comp.as_os_str();
        let c = cstr(name)?;
        // SAFETY: cur is a valid directory fd and c a NUL-terminated name.
        let r = unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), mode) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
        }
        // Resolve what we just made (or found) from the root again, so a
        // component that is a symlink is followed only inside the root.
        cur = openat2(root, &walked, libc::O_PATH | libc::O_DIRECTORY, 0, IN_ROOT)?;
    }
    Ok(cur)
}

/// `mkdirat` of the single component `name` in `dir` (one already there is
/// kept), then an `O_PATH` fd of it that refuses to follow a symlink.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &Path, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: dir is a valid directory fd and c a NUL-terminated name.
    let r = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    openat2(
        dir,
        name,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    )
}

/// Creates an empty regular file at `path` inside `root` (parents made as
/// needed) unless something already exists there, and returns an `O_PATH`
/// fd of what is there.
pub fn touch_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    let rel = relative(path);
    match openat2(root, &rel, libc::O_PATH, 0, IN_ROOT) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let parent = rel.parent().unwrap_or(Path::new("."));
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    let dir = mkdir_all_in_root(root, parent, 0o755)?;
    let dir = reopen(dir.as_fd_borrowed(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    let c = cstr(name)?;
    // SAFETY: valid dir fd and name; O_NOFOLLOW refuses a racing symlink.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o644,
        )
    };
    let fd = check(fd)?;
    // SAFETY: fresh descriptor.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    openat2(root, &rel, libc::O_PATH, 0, IN_ROOT)
}

/// Small helper so `OwnedFd` reads like `BorrowedFd` at call sites.
pub trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// The `/proc/self/fd/N` path of a descriptor: mounting onto it or opening
/// it acts on the exact inode the descriptor holds, never on a path that
/// could have been swapped.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Re-opens an `O_PATH` descriptor with real access `flags`.
pub fn reopen(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<OwnedFd> {
    let p = cstr(fd_path(fd))?;
    // SAFETY: valid path; result checked.
    let r = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    let r = check(r)?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// `mount(2)`; `None` arguments are passed as NULL.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(cstr).transpose()?;
    let tgt = cstr(target)?;
    let fst = fstype.map(cstr).transpose()?;
    let dat = data.filter(|d| !d.is_empty()).map(cstr).transpose()?;
    // SAFETY: each pointer is either NULL or a valid C string.
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fst.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            dat.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr() as *const libc::c_void),
        )
    };
    check(r).map(|_| ())
}

/// The id of the mount holding `fd` (`statx(2)`'s `stx_mnt_id`, the first
/// field of a mountinfo line).
pub fn mount_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: zeroed statx is valid; the kernel fills it.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, empty C string and pointer.
    check(unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_MNT_ID,
            &mut st,
        )
    })?;
    if st.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    Ok(st.stx_mnt_id)
}

/// `struct mount_attr` of `mount_setattr(2)` (size `MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
#[derive(Default)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

/// `mount_setattr(2)` on the mount `fd` is the root of, and with
/// `AT_RECURSIVE` on every mount below it: sets the `MOUNT_ATTR_*` bits of
/// `set` and clears those of `clear`.
pub fn mount_setattr(fd: BorrowedFd<'_>, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        ..MountAttr::default()
    };
    mount_setattr_with(fd, &attr, true)
}

/// `mount_setattr(2)` with the whole `attr` on the mount `fd` is the root of
/// (and with `AT_RECURSIVE` when `recursive`, every mount below it).
pub fn mount_setattr_with(fd: BorrowedFd<'_>, attr: &MountAttr, recursive: bool) -> io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: valid fd, empty C string and a pointer to a struct of the
    // size passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(|_| ())
}

/// `umount2(2)`.
pub fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(|_| ())
}

/// `pivot_root(".", ".")` after `fchdir` into the new root: the old root is
/// stacked under the new one and is detached by the caller.
pub fn pivot_root_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: constant C strings.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })
        .map(|_| ())
}

/// `fchdir(2)`.
pub fn fchdir(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchdir(fd.as_raw_fd()) }).map(|_| ())
}

/// `chdir(2)`.
pub fn chdir(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(c.as_ptr()) }).map(|_| ())
}

/// `chroot(2)`.
pub fn chroot(path: &Path) -> io::Result<()> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chroot(c.as_ptr()) }).map(|_| ())
}

/// `setns(2)`.
pub fn setns(fd: BorrowedFd<'_>, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::setns(fd.as_raw_fd(), nstype) }).map(|_| ())
}

/// `unshare(2)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::unshare(flags) }).map(|_| ())
}

/// `prctl(2)` with up to two arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong, arg3: libc::c_ulong) -> io::Result<()> {
    // SAFETY: the options used by the runtime take integer arguments.
    check(unsafe { libc::prctl(option, arg2, arg3, 0 as libc::c_ulong, 0 as libc::c_ulong) })
        .map(|_| ())
}

/// Opens a path with `O_CLOEXEC` added.
pub fn open(path: &Path, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: valid C string.
    let fd = check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads a small kernel file (procfs, cgroupfs) whole. Unlike
/// `fs::read_to_string`, it asks for no size first (these files report 0)
/// and reads in page-sized chunks instead of a growing series of small
/// reads, each of which the kernel answers by formatting the file again.
pub fn read_text<P: AsRef<Path>>(path: P) -> io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `fstat(2)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is valid; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// `fstatfs(2)`'s filesystem type (`f_type`, a `*_SUPER_MAGIC`) of `fd`.
pub fn fstatfs_type(fd: BorrowedFd<'_>) -> io::Result<i64> {
    // SAFETY: zeroed statfs is valid; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    check(unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_type as i64)
}

/// `openat(2)` of `name` (relative) in the directory `dir`.
pub fn openat(dir: BorrowedFd<'_>, name: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: valid fd and C string.
    let fd = check(unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags) })?;
    // SAFETY: a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatfs(2)`'s mount flags (`ST_*`) of the filesystem holding `fd`.
pub fn mount_flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_ulong> {
    // SAFETY: zeroed statvfs is valid; the kernel fills it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    Ok(st.f_flag)
}

/// Writes all of `data` to `fd`.
pub fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// A pipe, both ends close-on-exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array on success.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: two fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes `fd`'s open file description non-blocking (only for descriptions
/// the runtime made itself: the flag is shared with every holder).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    let flags = check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) })
        .map(|_| ())
}

/// One `read(2)`: Ok(None) when it would block, Ok(Some(0)) at end of file.
pub fn read_some(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: valid buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(e),
        }
    }
}

/// One `write(2)`: Ok(0) when it would block.
pub fn write_some(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: valid buffer of data.len() bytes.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// `poll(2)` retried on EINTR; returns how many descriptors are ready.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: a valid array of fds.len() pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec, so nothing the
/// runtime opened reaches the container's process (CVE-2024-21626).
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Older kernels: walk /proc/self/fd.
    let dir = std::fs::read_dir("/proc/self/fd")?;
    let fds: Vec<RawFd> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC on a possibly-stale fd is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// A copy of descriptor `fd` of process `pid`, close-on-exec
/// (`pidfd_getfd(2)`, as runc fetches the init's seccomp listener).
pub fn pidfd_getfd(pid: libc::pid_t, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the result is a new descriptor we own.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    // SAFETY: plain syscall.
    let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(copy as RawFd) })
}

/// Sends `fd` over the Unix socket `sock` with SCM_RIGHTS, with `name` as
/// the payload (what runc and containerd's console receivers expect).
pub fn send_fd(sock: BorrowedFd<'_>, name: &CStr, fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [io::IoSlice::new(name.to_bytes())];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
        .map(|_| ())
        .map_err(io::Error::from)
}

/// Receives one descriptor sent with SCM_RIGHTS on `sock`.
pub fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "no file descriptor in message",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_strips_root_and_dots() {
        assert_eq!(relative(Path::new("/a/./b")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(relative(Path::new("x/../y")), PathBuf::from("x/../y"));
    }

    #[test]
    fn openat2_stays_in_root() {
        let dir = std::env::temp_dir().join(format!("skiff-sys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("inside")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
        let root = open(&dir, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        // /etc inside the root does not exist: the symlink is resolved in it.
        let e = open_path_in_root(root.as_fd_borrowed(), Path::new("/escape/passwd")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // A dangling symlink is never followed out: creating through it fails.
        assert!(mkdir_all_in_root(root.as_fd_borrowed(), Path::new("/escape/sub"), 0o755).is_err());
        assert!(!Path::new("/etc/sub").exists());
        mkdir_all_in_root(root.as_fd_borrowed(), Path::new("/inside/a/b"), 0o755).unwrap();
        assert!(dir.join("inside/a/b").is_dir());
        // An absolute symlink is followed inside the root, for the existing part and the new.
        std::os::unix::fs::symlink("/inside/a", dir.join("link")).unwrap();
        mkdir_all_in_root(root.as_fd_borrowed(), Path::new("/link/c/d"), 0o755).unwrap();
        assert!(dir.join("inside/a/c/d").is_dir());
        // A file on the way is an error, not something to create around.
        std::fs::write(dir.join("inside/file"), "").unwrap();
        let e = mkdir_all_in_root(root.as_fd_borrowed(), Path::new("/inside/file/x"), 0o755);
        assert_eq!(e.unwrap_err().raw_os_error(), Some(libc::ENOTDIR));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// openat2 with RESOLVE_IN_ROOT fails with EAGAIN when any rename or mount anywhere on the
    /// system races a `..` step of the walk (a loaded node starting containers does both all the
    /// time); the resolution is retried, so a path climbing with `..` never fails because of
    /// something unrelated happening elsewhere.
    #[test]
    fn openat2_in_root_survives_concurrent_renames() {
        let dir = std::env::temp_dir().join(format!("skiff-sys-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
        std::fs::create_dir_all(dir.join("churn")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (stop, d) = (stop.clone(), dir.join("churn"));
            std::thread::spawn(move || {
                let (x, y) = (d.join("x"), d.join("y"));
                std::fs::write(&x, "").unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::fs::rename(&x, &y).unwrap();
                    std::fs::rename(&y, &x).unwrap();
                }
            })
        };
        let root = open(&dir, libc::O_PATH | libc::O_DIRECTORY, 0).unwrap();
        let climb = format!("a/b/c/{}a/b", "../".repeat(16));
        let mut failures = 0;
        for _ in 0..20_000 {
            if openat2(
                root.as_fd_borrowed(),
                Path::new(&climb),
                libc::O_PATH,
                0,
                IN_ROOT,
            )
            .is_err()
            {
                failures += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            failures, 0,
            "openat2 failed {failures} times under concurrent renames"
        );
    }
}
