//! The container's terminal: a pty made inside the container's devpts,
//! whose master goes to the `--console-socket` by SCM_RIGHTS, and whose
//! slave becomes the process's stdio, controlling terminal and
//! /dev/console.

use crate::mountfd;
use crate::sys::{self, AsFdBorrowed};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// The terminal could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    #[error("process.terminal: {step}: {source}")]
    Step {
        step: &'static str,
        source: std::io::Error,
    },
    #[error("--console-socket {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn step(step: &'static str) -> impl FnOnce(std::io::Error) -> TtyError {
    move |source| TtyError::Step { step, source }
}

fn ioctl(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: *mut libc::c_void) -> std::io::Result<()> {
    // SAFETY: the requests used here take a pointer to an int or winsize
    // that outlives the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Connects to the console socket (in the runtime's mount namespace, before
/// the clone).
pub fn connect(path: &Path) -> Result<OwnedFd, TtyError> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|source| TtyError::Connect {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(OwnedFd::from(s))
}

/// Opens a pty in the container, sends its master to `socket`, makes the
/// slave the controlling terminal and stdio, and (for the container's init,
/// `bind_console`) bind-mounts it over /dev/console. Runs after pivot_root
/// (or joining the mount namespace) and setsid.
pub fn setup(
    socket: BorrowedFd<'_>,
    size: Option<(u16, u16)>,
    bind_console: bool,
) -> Result<(), TtyError> {
    let root =
        sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0).map_err(step("open /"))?;
    let master = open_ptmx(root.as_fd_borrowed())?;
    let mut unlock: libc::c_int = 0;
    ioctl(
        master.as_fd_borrowed(),
        libc::TIOCSPTLCK,
        (&mut unlock as *mut libc::c_int).cast(),
    )
    .map_err(step("unlockpt"))?;
    let slave = open_peer(master.as_fd_borrowed())?;
    if let Some((rows, cols)) = size {
        let mut ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        ioctl(
            slave.as_fd_borrowed(),
            libc::TIOCSWINSZ,
            (&mut ws as *mut libc::winsize).cast(),
        )
        .map_err(step("set window size"))?;
    }
    sys::send_fd(socket, c"/dev/ptmx", master.as_fd_borrowed())
        .map_err(step("send the pty master to the console socket"))?;
    drop(master);
    // /dev/console is the terminal too, as on a real system: bound from the
    // slave's descriptor, never from a path.
    if bind_console {
        let console = console_target(root.as_fd_borrowed())?;
        mountfd::bind(slave.as_fd_borrowed(), console.as_fd_borrowed(), false)
            .map_err(step("bind /dev/console"))?;
    }
    ioctl(
        slave.as_fd_borrowed(),
        libc::TIOCSCTTY,
        std::ptr::null_mut(),
    )
    .map_err(step("set controlling terminal"))?;
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(step("dup2")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The terminal `run` or `exec` in the foreground gives a process with a
/// terminal, found as runc finds it: the first of stderr, stdout and stdin
/// that is one, else the controlling terminal (/dev/tty). Without one the
/// command fails before anything is created (runc: `open /dev/tty: no such
/// device or address`), rather than relaying into a terminal nobody reads.
pub fn host_console() -> std::io::Result<OwnedFd> {
    for fd in [2, 1, 0] {
        // SAFETY: isatty and fcntl on the standard descriptors; the
        // duplicate is a fresh descriptor we own.
        unsafe {
            if libc::isatty(fd) == 1 {
                let dup = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
                if dup < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                return Ok(std::os::fd::FromRawFd::from_raw_fd(dup));
            }
        }
    }
    sys::open(Path::new("/dev/tty"), libc::O_RDWR | libc::O_NOCTTY, 0)
}

/// `DEVPTS_SUPER_MAGIC` of `statfs(2)`.
const DEVPTS_SUPER_MAGIC: libc::c_long = 0x1cd1;
/// `TIOCGPTPEER`: opens the slave of a pty from its master (Linux 4.13).
const TIOCGPTPEER: libc::c_ulong = 0x5441;
/// The major numbers of Unix98 pty slaves (`UNIX98_PTY_SLAVE_MAJOR` and the
/// seven after it).
const PTY_SLAVE_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

fn statfs_type(fd: BorrowedFd<'_>) -> std::io::Result<libc::c_long> {
    // SAFETY: zeroed statfs is valid; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as libc::c_long)
}

/// Opens the container's `/dev/ptmx` (resolved inside its root) and checks
/// it is the pty multiplexer (character device 5:2, the devpts `ptmx` node or
/// the legacy one): the image or a process of the container may have
/// replaced it with anything.
fn open_ptmx(root: BorrowedFd<'_>) -> Result<OwnedFd, TtyError> {
    // O_NONBLOCK: whatever the container put there, opening it must not
    // hang (a fifo, a terminal waiting for its carrier).
    let fd = sys::openat2(
        root,
        Path::new("dev/ptmx"),
        libc::O_RDWR | libc::O_NOCTTY | libc::O_NONBLOCK,
        0,
        sys::IN_ROOT,
    )
    .map_err(step("open /dev/ptmx"))?;
    let st = sys::fstat(fd.as_fd_borrowed()).map_err(step("stat /dev/ptmx"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(5, 2) {
        return Err(step("/dev/ptmx")(std::io::Error::other(
            "not the pty multiplexer (character device 5:2): refusing it",
        )));
    }
    // The master is handed over blocking, as a plain open would give it.
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_RDWR) } < 0 {
        return Err(step("/dev/ptmx: clear O_NONBLOCK")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// The slave of the pty whose master is `master`, opened from the master
/// itself rather than by its `/dev/pts/N` path (which the container can
/// make name something else), and checked to be a devpts pty slave.
fn open_peer(master: BorrowedFd<'_>) -> Result<OwnedFd, TtyError> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: TIOCGPTPEER takes the open flags as its integer argument and
    // returns a new descriptor.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), TIOCGPTPEER as _, flags) };
    if r < 0 {
        return Err(step("open pty slave (TIOCGPTPEER)")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel returned a fresh descriptor that we now own.
    let slave = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(r) };
    let st = sys::fstat(slave.as_fd_borrowed()).map_err(step("stat pty slave"))?;
    let on_devpts = statfs_type(slave.as_fd_borrowed()).is_ok_and(|t| t == DEVPTS_SUPER_MAGIC);
    if !on_devpts
        || st.st_mode & libc::S_IFMT != libc::S_IFCHR
        || !PTY_SLAVE_MAJORS.contains(&libc::major(st.st_rdev))
    {
        return Err(step("pty slave")(std::io::Error::other(
            "not a devpts pty slave: refusing it",
        )));
    }
    Ok(slave)
}

/// Copies the window size of terminal `from` to `to` (no-op when `from` is
/// not a terminal).
pub fn copy_winsize(from: std::os::fd::RawFd, to: std::os::fd::RawFd) {
    // SAFETY: zeroed winsize is valid; ioctls on caller-owned fds.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Puts a terminal in raw mode for as long as the value lives (no-op when
/// the fd is not a terminal): `run` in the foreground passes keys through.
pub struct RawMode {
    fd: std::os::fd::RawFd,
    saved: Option<libc::termios>,
}

impl RawMode {
    pub fn enter(fd: std::os::fd::RawFd) -> RawMode {
        // SAFETY: zeroed termios is valid; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: plain terminal ioctls on a caller-owned fd.
        let saved = unsafe {
            if libc::tcgetattr(fd, &mut t) != 0 {
                None
            } else {
                let saved = t;
                libc::cfmakeraw(&mut t);
                libc::tcsetattr(fd, libc::TCSANOW, &t);
                Some(saved)
            }
        };
        RawMode { fd, saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            // SAFETY: restoring the attributes saved in enter().
            unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, t) };
        }
    }
}

/// Opens (creating it if missing) /dev/console as a mount target without
/// following any symlink: the image may have replaced it with a link to a
/// file it wants covered or exposed (CVE-2025-52565).
fn console_target(root: BorrowedFd<'_>) -> Result<OwnedFd, TtyError> {
    // /dev itself is resolved inside the root (the image's /dev may be a
    // symlink: CVE-2026-41579); below it, no symlink at all.
    let dev = sys::openat2(
        root,
        Path::new("dev"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        sys::IN_ROOT,
    )
    .map_err(step("open /dev"))?;
    let root = dev.as_fd_borrowed();
    let strict = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    let rel = Path::new("console");
    let fd = match sys::openat2(root, rel, libc::O_PATH, 0, strict) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            let created = sys::openat2(
                root,
                rel,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW,
                0o600,
                strict,
            )
            .map_err(step("create /dev/console"))?;
            drop(created);
            sys::openat2(root, rel, libc::O_PATH, 0, strict).map_err(step("open /dev/console"))?
        }
        Err(e) => return Err(step("open /dev/console (it must not be a symlink)")(e)),
    };
    let st = sys::fstat(fd.as_fd_borrowed()).map_err(step("stat /dev/console"))?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFCHR {
        return Err(step("/dev/console")(std::io::Error::other(
            "not a regular file or character device",
        )));
    }
    Ok(fd)
}
