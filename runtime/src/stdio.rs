//! Foreground stdio without a terminal, as runc's (its `setupProcessPipes`):
//! `run` and `exec` in the foreground give the process three pipes for its
//! stdin, stdout and stderr, and copy between them and their own. The
//! process never holds the caller's descriptors. A detached `run -d`,
//! `create` and `exec -d` pass theirs through instead (containerd's shim and
//! conmon rely on that).
//!
//! | pipe | the process's end | ours | copy |
//! | --- | --- | --- | --- |
//! | stdin | read end, fd 0 | write end | our fd 0 → pipe; at our end of file the pipe is closed (the process sees end of file) |
//! | stdout | write end, fd 1 | read end | pipe → our fd 1, until end of file |
//! | stderr | write end, fd 2 | read end | pipe → our fd 2, until end of file |
//!
//! The copies run on the loop that forwards signals (the runtime has no
//! threads), so a descriptor of ours is written only once poll says it can
//! take a write, and never so that the write blocks: our stdout or stderr
//! when a pipe is reopened as a non-blocking description of our own, a
//! terminal or socket gets `PIPE_BUF` bytes at a time. A slow reader never
//! stops signals from being forwarded. A write
//! that fails (the reader went away) ends that copy and closes the pipe, so
//! the process sees EPIPE; the SIGPIPE it raised here is forwarded to the
//! process, as runc forwards every signal it gets.
//!
//! When the process has exited, `run` and `exec` return only once stdout and
//! stderr reach end of file (every writer gone, as runc's `tty.Close`
//! waits), so no output is cut off; `run` first deletes the container, which
//! kills what it left behind.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::sys;

/// How much of one direction is buffered before its source waits.
const BUF: usize = 64 << 10;

/// The process's ends, in fd order: stdin's read end, stdout's and
/// stderr's write ends (close-on-exec: the child moves them onto 0-2).
pub type Theirs = [OwnedFd; 3];

/// How bytes are written to one of our own descriptors without blocking
/// the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Whole buffers: a non-blocking descriptor (a pipe reopened for us, or
    /// the process's stdin pipe), or one that never blocks for long (a
    /// regular file, /dev/null).
    Whole,
    /// At most `PIPE_BUF` bytes once poll says there is room (a terminal, a
    /// socket: blocking descriptions shared with the caller).
    Chunked,
}

/// One direction: a pipe of ours and one of our descriptors 0-2.
struct Copy {
    /// Our end of the pipe; None once the copy ended.
    pipe: Option<OwnedFd>,
    /// Our own fd (0, 1 or 2).
    own: RawFd,
    /// Our stdout or stderr when it is a pipe: reopened through /proc as a
    /// description of our own, non-blocking (the flag on `own` would be
    /// the caller's too).
    own_nonblocking: Option<OwnedFd>,
    /// stdin: from `own` into `pipe`; stdout, stderr: the other way.
    inbound: bool,
    /// Whether the source can still give bytes.
    open: bool,
    writes: Writes,
    buf: Vec<u8>,
    /// `buf[at..len]` is still to be written.
    at: usize,
    len: usize,
}

impl Copy {
    fn new(pipe: OwnedFd, own: RawFd, inbound: bool) -> std::io::Result<Self> {
        sys::set_nonblocking(pipe.as_fd())?;
        let mut own_nonblocking = None;
        let writes = if inbound {
            Writes::Whole
        } else {
            // SAFETY: `own` is one of our standard descriptors, borrowed
            // for the fstat only.
            let st = sys::fstat(unsafe { BorrowedFd::borrow_raw(own) }).ok();
            let kind = st.map_or(0, |s| s.st_mode & libc::S_IFMT);
            let dev_null =
                st.is_some_and(|s| kind == libc::S_IFCHR && s.st_rdev == libc::makedev(1, 3));
            if kind == libc::S_IFIFO {
                own_nonblocking = sys::open(
                    std::path::Path::new(&format!("/proc/self/fd/{own}")),
                    libc::O_WRONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
                    0,
                )
                .ok();
            }
            if kind == libc::S_IFREG || dev_null || own_nonblocking.is_some() {
                Writes::Whole
            } else {
                Writes::Chunked
            }
        };
        Ok(Copy {
            pipe: Some(pipe),
            own,
            own_nonblocking,
            inbound,
            open: true,
            writes,
            buf: Vec::new(),
            at: 0,
            len: 0,
        })
    }

    fn pending(&self) -> bool {
        self.at < self.len
    }

    fn done(&self) -> bool {
        self.pipe.is_none()
    }

    fn src(&self) -> RawFd {
        match (&self.pipe, self.inbound) {
            (Some(_), true) => self.own,
            (Some(p), false) => p.as_raw_fd(),
            (None, _) => -1,
        }
    }

    fn dst(&self) -> RawFd {
        match (&self.pipe, self.inbound) {
            (Some(p), true) => p.as_raw_fd(),
            (Some(_), false) => self
                .own_nonblocking
                .as_ref()
                .map_or(self.own, |f| f.as_raw_fd()),
            (None, _) => -1,
        }
    }

    /// What to wait for: room in the destination while bytes are pending,
    /// else bytes from the source.
    fn pollfd(&self) -> libc::pollfd {
        let (fd, events) = if self.pending() {
            (self.dst(), libc::POLLOUT)
        } else if self.open {
            (self.src(), libc::POLLIN)
        } else {
            (-1, 0)
        };
        libc::pollfd {
            fd,
            events,
            revents: 0,
        }
    }

    /// Ends the copy: our end of the pipe closes (the process sees end of
    /// file on stdin, EPIPE on stdout or stderr).
    fn close(&mut self) {
        self.pipe = None;
        self.own_nonblocking = None;
        self.open = false;
        self.buf = Vec::new();
        self.at = 0;
        self.len = 0;
    }

    /// Moves bytes after poll said `revents`.
    fn ready(&mut self, revents: libc::c_short) {
        if revents == 0 || self.done() {
            return;
        }
        if self.pending() {
            self.write();
        } else {
            self.read();
        }
        if !self.open && !self.pending() {
            self.close();
        }
    }

    fn read(&mut self) {
        if self.buf.is_empty() {
            self.buf = vec![0; BUF];
        }
        self.at = 0;
        self.len = 0;
        match sys::read_some(self.src(), &mut self.buf) {
            Ok(Some(n)) if n > 0 => self.len = n,
            Ok(None) => {}
            // End of file, or an error reading (our stdin a terminal we may
            // not read from, or closed): the source is done.
            Ok(Some(_)) | Err(_) => self.open = false,
        }
    }

    fn write(&mut self) {
        let end = match self.writes {
            Writes::Whole => self.len,
            Writes::Chunked => self.len.min(self.at + libc::PIPE_BUF),
        };
        match sys::write_some(self.dst(), &self.buf[self.at..end]) {
            Ok(n) => self.at += n,
            Err(_) => self.close(),
        }
    }
}

/// Our side of the three pipes.
pub struct Pipes {
    copies: [Copy; 3],
}

impl Pipes {
    /// The three pipes: the process's ends and ours.
    pub fn new() -> std::io::Result<(Theirs, Pipes)> {
        let (in_r, in_w) = sys::pipe()?;
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        let pipes = Pipes {
            copies: [
                Copy::new(in_w, 0, true)?,
                Copy::new(out_r, 1, false)?,
                Copy::new(err_r, 2, false)?,
            ],
        };
        Ok(([in_r, out_w, err_w], pipes))
    }

    /// Gives the pipes to the container's root user as `pid` (the init)
    /// maps it, as runc does, so that the process can reopen them
    /// (`/dev/stdout`, `/proc/self/fd/1`) in a user namespace.
    pub fn chown_to_root_of(&self, pid: libc::pid_t) -> std::io::Result<()> {
        let uid = host_id_of_root(&format!("/proc/{pid}/uid_map"))?;
        let gid = host_id_of_root(&format!("/proc/{pid}/gid_map"))?;
        if (uid, gid) == (Some(0), Some(0)) {
            return Ok(());
        }
        let (Some(uid), Some(gid)) = (uid, gid) else {
            // No root in the namespace: nothing to give the pipes to.
            return Ok(());
        };
        for c in &self.copies {
            if let Some(p) = &c.pipe {
                // SAFETY: fchown on our own pipe.
                if unsafe { libc::fchown(p.as_raw_fd(), uid, gid) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// The descriptors to poll, in the order [`Pipes::ready`] takes them.
    pub fn pollfds(&self) -> [libc::pollfd; 3] {
        [
            self.copies[0].pollfd(),
            self.copies[1].pollfd(),
            self.copies[2].pollfd(),
        ]
    }

    /// Moves bytes where poll said they can move.
    pub fn ready(&mut self, fds: &[libc::pollfd]) {
        for (c, fd) in self.copies.iter_mut().zip(fds) {
            c.ready(fd.revents);
        }
    }

    /// Copies what is ready now, without waiting (the process has just
    /// exited: its last output goes out before anything else is printed).
    pub fn flush_ready(&mut self) -> std::io::Result<()> {
        for _ in 0..1024 {
            let mut fds = self.pollfds();
            if sys::poll(&mut fds, 0)? == 0 {
                break;
            }
            self.ready(&fds);
        }
        Ok(())
    }

    /// Stops feeding the process's stdin (it has exited): the pipe closes.
    /// Bytes read from ours and not yet written are dropped.
    pub fn stop_stdin(&mut self) {
        self.copies[0].close();
    }

    /// Whether stdout and stderr have both reached end of file (or failed).
    pub fn output_done(&self) -> bool {
        self.copies[1].done() && self.copies[2].done()
    }
}

/// The host id that id 0 maps to in a `uid_map` or `gid_map`; None when
/// the namespace has no 0.
fn host_id_of_root(path: &str) -> std::io::Result<Option<u32>> {
    let text = sys::read_text(path)?;
    Ok(text.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        match f[..] {
            [inside, outside, len] if inside == 0 && len > 0 => u32::try_from(outside).ok(),
            _ => None,
        }
    }))
}

/// In the child, before anything else: its stdio becomes `theirs`. Each
/// end is first copied above 2 (one of them could be 0-2 itself if the
/// runtime was started with a standard descriptor closed). Only raw
/// syscalls: this runs after the clone.
pub fn install(theirs: &Theirs) -> std::io::Result<()> {
    let mut high = [-1; 3];
    for (i, fd) in theirs.iter().enumerate() {
        // SAFETY: fcntl on a descriptor we hold; the copy is close-on-exec.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high[i] = r;
    }
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: dup2 onto a standard descriptor; the new one is not
        // close-on-exec, which is the point.
        if unsafe { libc::dup2(*fd, target as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: our own close-on-exec copy, no longer needed.
        unsafe { libc::close(*fd) };
    }
    Ok(())
}
