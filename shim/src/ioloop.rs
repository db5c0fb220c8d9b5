//! The I/O loop: one thread and one epoll set for every byte of container stdio the shim copies,
//! plus the OOM notification fds ([`crate::oom`]) and `SIGCHLD` (a signalfd that drives the
//! [`Reaper`]).
//!
//! | stream | source | sink | ends when |
//! | --- | --- | --- | --- |
//! | stdin | containerd's stdin fifo | the process's stdin pipe, or the pty master | EOF on the fifo; `CloseIO` (after what is pending is written); `Delete` |
//! | output | the process's stdout or stderr pipe, or the pty master | containerd's fifo | EOF on the source (EIO on a pty) and everything written |
//!
//! Rules:
//! - Every fd is non-blocking and registered edge-triggered. A stream reads until `EAGAIN`, EOF or
//!   a full buffer, and writes until `EAGAIN` or an empty buffer ([`Flow::pump`]).
//! - Backpressure: a stream buffers at most [`PENDING_MAX`] bytes; while full it does not read its
//!   source, so a writer blocks in the kernel instead of the shim growing. The buffer is freed
//!   whenever it empties, so an idle stream holds no memory.
//! - Output written before containerd's reader is there is not lost: a fifo sink is opened
//!   `O_WRONLY | O_NONBLOCK`, which fails with `ENXIO` while nobody reads it, and is retried every
//!   [`RETRY_OPEN`]; until it opens the source is not read, so the bytes wait in the pipe.
//! - A sink that fails (`EPIPE`: the reader went away) is dropped and its source drained and
//!   discarded from then on, so the process never blocks on output nobody reads.
//! - An output stream holds an [`OutputGuard`] until it ends, which is how an exit is reported
//!   only after the process's output was written ([`crate::io::OutputWaiter`]).
//! - The loop thread owns its tables. Other threads send a [`Command`] over a channel and wake the
//!   loop through an eventfd.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::io::OutputGuard;
use crate::reaper::Reaper;

/// The most a stream buffers before it stops reading its source.
pub const PENDING_MAX: usize = 64 * 1024;
/// The most one read takes (one buffer for the whole loop).
const SCRATCH: usize = 32 * 1024;
/// How often a fifo without a reader is tried again.
const RETRY_OPEN: Duration = Duration::from_millis(100);
/// The loop's stack: it runs no deep code.
const STACK: usize = 128 * 1024;

/// Token tags (the low bits of an epoll token; the rest is the stream or watch id).
const TAG_WAKE: u64 = 0;
const TAG_SIGNAL: u64 = 1;
const TAG_SOURCE: u64 = 2;
const TAG_SINK: u64 = 3;
const TAG_WATCH: u64 = 4;
const TAG_BITS: u32 = 3;

fn token(id: u64, tag: u64) -> u64 {
    (id << TAG_BITS) | tag
}

/// Why the loop could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("creating the I/O loop's {what}: {errno}")]
    Setup { what: &'static str, errno: Errno },
    #[error("starting the I/O thread: {0}")]
    Thread(std::io::Error),
}

/// What a stream is, for `CloseIO` and `Delete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// containerd's stdin to the process; `terminal` when the sink is a pty master.
    Stdin { terminal: bool },
    /// The process's stdout or stderr (or the pty) to containerd.
    Output,
}

/// Where a new stream writes.
#[derive(Debug)]
pub enum NewSink {
    /// An fd the shim already has (a pipe, the pty master).
    Fd(File),
    /// containerd's fifo, opened by the loop once it has a reader.
    Fifo(PathBuf),
}

/// A stream handed to the loop.
#[derive(Debug)]
pub struct NewStream {
    /// The process it belongs to (an id from [`IoLoop::next_id`]).
    pub process: u64,
    pub role: Role,
    /// `None`: nothing to read (a stdin fifo that could not be opened).
    pub source: Option<File>,
    pub sink: NewSink,
    /// Released when the stream ends.
    pub guard: Option<OutputGuard>,
}

/// Called on the loop thread when a watched fd became readable (after the loop drained it).
pub type OnReady = Box<dyn FnMut() + Send>;

/// What other threads ask of the loop.
pub enum Command {
    /// Start copying these streams.
    Add(Vec<NewStream>),
    /// `CloseIO`: close the process's stdin once what is pending is written (a terminal gets
    /// `^D` instead, after the pending bytes).
    CloseStdin(u64),
    /// `Delete`: drop the process's stdin; outputs still waiting for a reader are drained and
    /// discarded from now on.
    Shutdown(u64),
    /// Watch `fd` (readable) under `key`.
    Watch {
        key: u64,
        fd: OwnedFd,
        on_ready: OnReady,
    },
    /// Stop watching `key` and close its fd.
    Unwatch(u64),
}

/// The handle other threads use.
pub struct IoLoop {
    tx: Sender<Command>,
    wake: Arc<EventFd>,
    next: AtomicU64,
}

impl std::fmt::Debug for IoLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IoLoop")
    }
}

fn setup(what: &'static str) -> impl FnOnce(Errno) -> LoopError {
    move |errno| LoopError::Setup { what, errno }
}

impl IoLoop {
    /// Start the loop thread. With a reaper, the loop also reaps on `SIGCHLD` (which must be
    /// blocked in every thread already: [`Reaper::new`]).
    pub fn start(reaper: Option<Arc<Reaper>>) -> Result<Arc<IoLoop>, LoopError> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(setup("epoll"))?;
        let wake = Arc::new(
            EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(setup("eventfd"))?,
        );
        epoll
            .add(
                wake.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, TAG_WAKE),
            )
            .map_err(setup("eventfd registration"))?;
        let signals = match reaper {
            Some(r) => {
                let mut set = SigSet::empty();
                set.add(Signal::SIGCHLD);
                let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
                    .map_err(setup("signalfd"))?;
                epoll
                    .add(
                        fd.as_fd(),
                        EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, TAG_SIGNAL),
                    )
                    .map_err(setup("signalfd registration"))?;
                Some((fd, r))
            }
            None => None,
        };
        let (tx, rx) = channel();
        let state = Loop {
            epoll,
            wake: wake.clone(),
            rx,
            signals,
            streams: HashMap::new(),
            watches: HashMap::new(),
            next_stream: 0,
            scratch: Vec::new(),
            last_retry: Instant::now(),
            orphaned: false,
        };
        std::thread::Builder::new()
            .name("io".into())
            .stack_size(STACK)
            .spawn(move || state.run())
            .map_err(LoopError::Thread)?;
        Ok(Arc::new(IoLoop {
            tx,
            wake,
            next: AtomicU64::new(1),
        }))
    }

    /// A fresh id for a process or a watch.
    pub fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Hand `cmd` to the loop.
    pub fn send(&self, cmd: Command) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.wake.write(1);
        }
    }
}

impl Drop for IoLoop {
    fn drop(&mut self) {
        // The channel is closing: let the loop notice.
        let _ = self.wake.write(1);
    }
}

// ---------------------------------------------------------------------------------------------
// The copy logic, free of fds: a bounded buffer and the pump.

/// A stream's bounded buffer: bytes read from the source that the sink has not taken yet.
#[derive(Debug, Default)]
pub struct Pending {
    buf: Vec<u8>,
    start: usize,
}

impl Pending {
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How much more may be read before the source has to wait.
    pub fn space(&self) -> usize {
        PENDING_MAX.saturating_sub(self.len())
    }

    /// The bytes to write next.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Append bytes (the caller keeps to [`Pending::space`]; a terminal's `^D` may exceed it by one).
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.reserve_exact(data.len());
        self.buf.extend_from_slice(data);
    }

    /// `n` bytes were written.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.clear();
        }
    }

    /// Drop everything and give the memory back.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
    }

    /// The allocation held (tests: an empty buffer holds none).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

/// What a stream does with what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The sink is not open yet: leave the bytes in the source.
    Hold,
    /// Copy to the sink.
    Copy,
    /// No sink (it failed, or was given up on): read and drop, so the writer never blocks.
    Discard,
}

/// The two ends of a stream as [`Flow::pump`] sees them.
pub trait Ends {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize>;
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize>;
}

/// The state of one stream apart from its fds.
#[derive(Debug)]
pub struct Flow {
    pub pending: Pending,
    pub mode: Mode,
    /// The source reported readiness and has not said `EAGAIN` since.
    pub readable: bool,
    /// The sink reported readiness and has not said `EAGAIN` since.
    pub writable: bool,
    /// The source ended (EOF, EIO from a pty, an error).
    pub eof: bool,
    /// `CloseIO`: the source ends at its next `EAGAIN`.
    pub closing: bool,
}

/// What one write did.
enum Wrote {
    Some(usize),
    Blocked,
    Failed,
}

fn write_to(ends: &mut impl Ends, data: &[u8]) -> Wrote {
    loop {
        return match ends.write(data) {
            Ok(0) => Wrote::Failed,
            Ok(n) => Wrote::Some(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Wrote::Blocked,
            Err(_) => Wrote::Failed,
        };
    }
}

impl Flow {
    pub fn new(mode: Mode) -> Flow {
        Flow {
            pending: Pending::default(),
            mode,
            readable: false,
            writable: false,
            eof: false,
            closing: false,
        }
    }

    /// The sink failed: from now on the source is drained and dropped.
    fn sink_failed(&mut self) {
        self.mode = Mode::Discard;
        self.writable = false;
        self.pending.clear();
    }

    /// Bytes just read: write them straight through while the sink takes them, keep the rest.
    fn took(&mut self, ends: &mut impl Ends, data: &[u8]) {
        if self.mode != Mode::Copy {
            return;
        }
        let mut done = 0;
        while self.pending.is_empty() && self.writable && done < data.len() {
            match write_to(ends, &data[done..]) {
                Wrote::Some(n) => done += n,
                Wrote::Blocked => self.writable = false,
                Wrote::Failed => return self.sink_failed(),
            }
        }
        self.pending.push(&data[done..]);
    }

    /// How much the next read may take.
    fn room(&self) -> usize {
        match self.mode {
            Mode::Hold => 0,
            Mode::Copy => self.pending.space(),
            Mode::Discard => usize::MAX,
        }
    }

    /// Move bytes until each end would block or has nothing to do. Returns whether the stream is
    /// finished: its source ended and everything read was written (or dropped).
    pub fn pump(&mut self, ends: &mut impl Ends, scratch: &mut [u8]) -> bool {
        loop {
            if self.mode == Mode::Copy && self.writable && !self.pending.is_empty() {
                match write_to(ends, self.pending.bytes()) {
                    Wrote::Some(n) => self.pending.consume(n),
                    Wrote::Blocked => self.writable = false,
                    Wrote::Failed => self.sink_failed(),
                }
                continue;
            }
            let room = self.room().min(scratch.len());
            if self.readable && !self.eof && room > 0 {
                match ends.read(&mut scratch[..room]) {
                    Ok(0) => self.eof = true,
                    Ok(n) => self.took(ends, &scratch[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        self.readable = false;
                        self.eof = self.closing;
                    }
                    // EIO: a pty master whose slave is closed everywhere.
                    Err(_) => self.eof = true,
                }
                continue;
            }
            return self.finished();
        }
    }

    /// The source ended and nothing is left to write.
    pub fn finished(&self) -> bool {
        self.eof && (self.pending.is_empty() || self.mode == Mode::Discard)
    }
}

// ---------------------------------------------------------------------------------------------
// The loop thread.

enum Sink {
    /// containerd's fifo, not opened yet (no reader).
    Waiting(PathBuf),
    Open(File),
    None,
}

struct Stream {
    process: u64,
    role: Role,
    source: Option<File>,
    sink: Sink,
    flow: Flow,
    _guard: Option<OutputGuard>,
}

struct FdEnds<'a> {
    source: Option<&'a File>,
    sink: Option<&'a File>,
}

impl Ends for FdEnds<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.source {
            Some(mut f) => f.read(buf),
            None => Ok(0),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.sink {
            Some(mut f) => f.write(buf),
            None => Err(ErrorKind::BrokenPipe.into()),
        }
    }
}

struct Watch {
    fd: OwnedFd,
    on_ready: OnReady,
}

struct Loop {
    epoll: Epoll,
    wake: Arc<EventFd>,
    rx: Receiver<Command>,
    signals: Option<(SignalFd, Arc<Reaper>)>,
    streams: HashMap<u64, Stream>,
    watches: HashMap<u64, Watch>,
    next_stream: u64,
    /// One read buffer for every stream, allocated on first use.
    scratch: Vec<u8>,
    last_retry: Instant,
    /// Every handle is gone: end once the streams have.
    orphaned: bool,
}

fn set_nonblocking(f: &impl AsRawFd) {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on an fd the caller owns, with integer arguments only.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Open containerd's fifo for writing without blocking: `Ok(None)` while it has no reader.
fn open_fifo(path: &PathBuf) -> std::io::Result<Option<File>> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Loop {
    fn run(mut self) {
        if let Some((_, reaper)) = &self.signals {
            // Children may have exited before the signalfd existed.
            reaper.reap_all();
        }
        let mut events = [EpollEvent::empty(); 32];
        // Without handles and streams there is nothing left to do, unless the loop reaps.
        while !(self.orphaned && self.streams.is_empty() && self.signals.is_none()) {
            let timeout = if self.any_waiting() {
                EpollTimeout::from(RETRY_OPEN.as_millis() as u16)
            } else {
                EpollTimeout::NONE
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    log_line!("skiff-shim: epoll_wait: {e}");
                    std::thread::sleep(RETRY_OPEN);
                    0
                }
            };
            for ev in &events[..n] {
                self.dispatch(ev.data(), ev.events());
            }
            if self.any_waiting() && self.last_retry.elapsed() >= RETRY_OPEN {
                self.retry_opens();
            }
        }
    }

    fn dispatch(&mut self, data: u64, flags: EpollFlags) {
        let id = data >> TAG_BITS;
        match data & ((1 << TAG_BITS) - 1) {
            TAG_WAKE => {
                let _ = self.wake.read();
                self.commands();
            }
            TAG_SIGNAL => {
                if let Some((fd, reaper)) = &self.signals {
                    while let Ok(Some(_)) = fd.read_signal() {}
                    reaper.reap_all();
                }
            }
            TAG_SOURCE => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.flow.readable = true;
                    self.pump(id);
                }
            }
            TAG_SINK => {
                if let Some(s) = self.streams.get_mut(&id) {
                    s.flow.writable = true;
                    self.pump(id);
                }
            }
            TAG_WATCH => self.watch_ready(id, flags),
            _ => {}
        }
    }

    fn commands(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.orphaned = true;
                    return;
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Add(streams) => {
                for s in streams {
                    self.add(s);
                }
            }
            Command::CloseStdin(process) => {
                for id in self.of_process(process) {
                    let Some(s) = self.streams.get_mut(&id) else {
                        continue;
                    };
                    match s.role {
                        Role::Stdin { terminal: true } => {
                            if s.flow.mode == Mode::Copy {
                                // A terminal reads EOF from ^D at the start of a line.
                                s.flow.pending.push(&[4]);
                            }
                        }
                        Role::Stdin { terminal: false } => {
                            s.flow.closing = true;
                            // Take what the fifo holds now, then end.
                            s.flow.readable = true;
                        }
                        Role::Output => continue,
                    }
                    self.pump(id);
                }
            }
            Command::Shutdown(process) => {
                for id in self.of_process(process) {
                    let Some(s) = self.streams.get_mut(&id) else {
                        continue;
                    };
                    let role = s.role;
                    match role {
                        Role::Stdin { .. } => self.remove(id),
                        Role::Output => {
                            if matches!(s.sink, Sink::Waiting(_)) {
                                s.sink = Sink::None;
                                s.flow.mode = Mode::Discard;
                                self.pump(id);
                            }
                        }
                    }
                }
            }
            Command::Watch { key, fd, on_ready } => {
                let ev = EpollEvent::new(
                    EpollFlags::EPOLLIN | EpollFlags::EPOLLET,
                    token(key, TAG_WATCH),
                );
                match self.epoll.add(fd.as_fd(), ev) {
                    Ok(()) => {
                        self.watches.insert(key, Watch { fd, on_ready });
                    }
                    Err(e) => log_line!("skiff-shim: watching fd: {e}"),
                }
            }
            Command::Unwatch(key) => {
                if let Some(w) = self.watches.remove(&key) {
                    let _ = self.epoll.delete(w.fd.as_fd());
                }
            }
        }
    }

    fn of_process(&self, process: u64) -> Vec<u64> {
        self.streams
            .iter()
            .filter(|(_, s)| s.process == process)
            .map(|(id, _)| *id)
            .collect()
    }

    fn any_waiting(&self) -> bool {
        self.streams
            .values()
            .any(|s| matches!(s.sink, Sink::Waiting(_)))
    }

    /// Register `f` for `flags`; a file epoll refuses (a regular file) is always ready.
    fn register(&self, f: &File, flags: EpollFlags, token: u64) -> bool {
        set_nonblocking(f);
        match self.epoll.add(
            f.as_fd(),
            EpollEvent::new(flags | EpollFlags::EPOLLET, token),
        ) {
            Ok(()) => false,
            Err(Errno::EPERM) => true,
            Err(e) => {
                log_line!("skiff-shim: registering a stdio fd: {e}");
                false
            }
        }
    }

    fn add(&mut self, new: NewStream) {
        let id = self.next_stream;
        self.next_stream += 1;
        let mut flow = Flow::new(Mode::Hold);
        if let Some(src) = &new.source {
            flow.readable = self.register(src, EpollFlags::EPOLLIN, token(id, TAG_SOURCE));
        }
        let sink = match new.sink {
            NewSink::Fd(f) => Sink::Open(f),
            NewSink::Fifo(path) => match open_fifo(&path) {
                Ok(Some(f)) => Sink::Open(f),
                Ok(None) => Sink::Waiting(path),
                Err(_) => Sink::None,
            },
        };
        match &sink {
            Sink::Open(f) => {
                flow.mode = Mode::Copy;
                flow.writable = self.register(f, EpollFlags::EPOLLOUT, token(id, TAG_SINK));
            }
            Sink::Waiting(_) => flow.mode = Mode::Hold,
            Sink::None => flow.mode = Mode::Discard,
        }
        self.streams.insert(
            id,
            Stream {
                process: new.process,
                role: new.role,
                source: new.source,
                sink,
                flow,
                _guard: new.guard,
            },
        );
        self.pump(id);
    }

    fn retry_opens(&mut self) {
        self.last_retry = Instant::now();
        let waiting: Vec<(u64, PathBuf)> = self
            .streams
            .iter()
            .filter_map(|(id, s)| match &s.sink {
                Sink::Waiting(p) => Some((*id, p.clone())),
                _ => None,
            })
            .collect();
        for (id, path) in waiting {
            let (sink, mode) = match open_fifo(&path) {
                Ok(None) => continue,
                Ok(Some(f)) => (Sink::Open(f), Mode::Copy),
                Err(_) => (Sink::None, Mode::Discard),
            };
            let writable = match &sink {
                Sink::Open(f) => self.register(f, EpollFlags::EPOLLOUT, token(id, TAG_SINK)),
                _ => false,
            };
            if let Some(s) = self.streams.get_mut(&id) {
                s.sink = sink;
                s.flow.mode = mode;
                s.flow.writable = writable;
            }
            self.pump(id);
        }
    }

    fn pump(&mut self, id: u64) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if self.scratch.is_empty() {
            self.scratch = vec![0; SCRATCH];
        }
        let mut ends = FdEnds {
            source: s.source.as_ref(),
            sink: match &s.sink {
                Sink::Open(f) => Some(f),
                _ => None,
            },
        };
        let done = s.flow.pump(&mut ends, &mut self.scratch);
        if s.flow.mode == Mode::Discard {
            if let Sink::Open(f) = std::mem::replace(&mut s.sink, Sink::None) {
                let _ = self.epoll.delete(f.as_fd());
            }
        }
        if done {
            self.remove(id);
        }
    }

    /// End a stream: deregister (a pty master's dups share one open file, so closing one fd
    /// would not deregister it) and close both ends.
    fn remove(&mut self, id: u64) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        if let Some(f) = &s.source {
            let _ = self.epoll.delete(f.as_fd());
        }
        if let Sink::Open(f) = &s.sink {
            let _ = self.epoll.delete(f.as_fd());
        }
    }

    fn watch_ready(&mut self, key: u64, flags: EpollFlags) {
        if self.scratch.is_empty() {
            self.scratch = vec![0; SCRATCH];
        }
        let Some(w) = self.watches.get_mut(&key) else {
            return;
        };
        // Drain the notification (inotify events, an eventfd counter); the fd is non-blocking.
        while matches!(nix::unistd::read(&w.fd, &mut self.scratch), Ok(n) if n > 0) {}
        (w.on_ready)();
        if flags.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            if let Some(w) = self.watches.remove(&key) {
                let _ = self.epoll.delete(w.fd.as_fd());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A source that hands out `input` in reads of at most `chunk`, then would block (or ends),
    /// and a sink that takes at most `room` bytes before it would block.
    struct Fake {
        input: VecDeque<u8>,
        chunk: usize,
        ended: bool,
        output: Vec<u8>,
        room: usize,
        broken: bool,
        reads: usize,
    }

    impl Fake {
        fn new(input: &[u8], room: usize) -> Fake {
            Fake {
                input: input.iter().copied().collect(),
                chunk: 1000,
                ended: false,
                output: Vec::new(),
                room,
                broken: false,
                reads: 0,
            }
        }
    }

    impl Ends for Fake {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.reads += 1;
            if self.input.is_empty() {
                return if self.ended {
                    Ok(0)
                } else {
                    Err(ErrorKind::WouldBlock.into())
                };
            }
            let n = buf.len().min(self.chunk).min(self.input.len());
            for b in buf.iter_mut().take(n) {
                *b = self.input.pop_front().unwrap();
            }
            Ok(n)
        }

        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.broken {
                return Err(ErrorKind::BrokenPipe.into());
            }
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.output.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
    }

    fn ready(mode: Mode) -> Flow {
        let mut f = Flow::new(mode);
        f.readable = true;
        f.writable = true;
        f
    }

    #[test]
    fn pending_is_bounded_and_freed_when_empty() {
        let mut p = Pending::default();
        assert_eq!(p.space(), PENDING_MAX);
        p.push(&[1; 1000]);
        assert_eq!((p.len(), p.space()), (1000, PENDING_MAX - 1000));
        p.consume(400);
        assert_eq!(p.bytes(), &[1; 600][..]);
        p.push(&[2; 10]);
        assert_eq!(p.len(), 610);
        assert_eq!(p.bytes()[600], 2);
        p.consume(610);
        assert!(p.is_empty());
        assert_eq!(p.capacity(), 0, "an empty buffer holds no memory");
    }

    #[test]
    fn data_goes_straight_through_without_buffering() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut ends = Fake::new(&data, usize::MAX);
        let mut flow = ready(Mode::Copy);
        let mut scratch = vec![0; 512];
        assert!(!flow.pump(&mut ends, &mut scratch));
        assert_eq!(ends.output, data);
        assert!(!flow.readable, "read until EAGAIN");
        assert_eq!(flow.pending.capacity(), 0);
        ends.ended = true;
        flow.readable = true;
        assert!(
            flow.pump(&mut ends, &mut scratch),
            "EOF with nothing pending ends it"
        );
    }

    #[test]
    fn a_full_buffer_stops_reading_until_the_sink_drains() {
        let data = vec![7u8; PENDING_MAX * 3];
        let mut ends = Fake::new(&data, 100);
        let mut flow = ready(Mode::Copy);
        let mut scratch = vec![0; SCRATCH];
        assert!(!flow.pump(&mut ends, &mut scratch));
        // The sink took 100 bytes, the buffer filled up, and the rest stayed in the source.
        assert_eq!(ends.output.len(), 100);
        assert_eq!(flow.pending.len(), PENDING_MAX);
        assert_eq!(ends.input.len(), data.len() - 100 - PENDING_MAX);
        assert!(
            flow.readable,
            "the source is not drained: it is backpressured"
        );
        assert!(!flow.writable);
        let reads = ends.reads;
        // Another readiness event for the source changes nothing while the buffer is full.
        assert!(!flow.pump(&mut ends, &mut scratch));
        assert_eq!(ends.reads, reads);
        // The sink drains: reading resumes, and everything arrives in order.
        ends.room = usize::MAX;
        ends.ended = true;
        flow.writable = true;
        assert!(flow.pump(&mut ends, &mut scratch));
        assert_eq!(ends.output, data);
        assert_eq!(flow.pending.capacity(), 0);
    }

    #[test]
    fn hold_reads_nothing_until_the_sink_opens() {
        let mut ends = Fake::new(b"early", usize::MAX);
        let mut flow = ready(Mode::Hold);
        let mut scratch = vec![0; 64];
        assert!(!flow.pump(&mut ends, &mut scratch));
        assert_eq!(ends.reads, 0);
        flow.mode = Mode::Copy;
        assert!(!flow.pump(&mut ends, &mut scratch));
        assert_eq!(ends.output, b"early");
    }

    #[test]
    fn a_broken_sink_drains_and_discards_the_source() {
        let mut ends = Fake::new(&vec![1u8; 4 * PENDING_MAX], 10);
        let mut flow = ready(Mode::Copy);
        let mut scratch = vec![0; 1024];
        assert!(!flow.pump(&mut ends, &mut scratch));
        assert_eq!(flow.pending.len(), PENDING_MAX);
        ends.broken = true;
        ends.room = usize::MAX;
        ends.ended = true;
        flow.writable = true;
        assert!(flow.pump(&mut ends, &mut scratch));
        assert_eq!(flow.mode, Mode::Discard);
        assert!(ends.input.is_empty(), "the source was drained");
        assert_eq!(ends.output.len(), 10);
    }

    #[test]
    fn closing_ends_at_the_next_eagain_after_flushing() {
        let mut ends = Fake::new(b"last words", 4);
        let mut flow = ready(Mode::Copy);
        flow.closing = true;
        let mut scratch = vec![0; 64];
        // The sink is slow: the stream is not finished while bytes are pending.
        assert!(!flow.pump(&mut ends, &mut scratch));
        assert!(flow.eof);
        assert_eq!(flow.pending.bytes(), b" words");
        ends.room = usize::MAX;
        flow.writable = true;
        assert!(flow.pump(&mut ends, &mut scratch));
        assert_eq!(ends.output, b"last words");
    }

    #[test]
    fn streams_copy_through_the_loop() {
        let io = IoLoop::start(None).unwrap();
        let (src_r, mut src_w) = nix::unistd::pipe()
            .map(|(r, w)| (File::from(r), File::from(w)))
            .unwrap();
        let (mut dst_r, dst_w) = nix::unistd::pipe()
            .map(|(r, w)| (File::from(r), File::from(w)))
            .unwrap();
        let process = io.next_id();
        io.send(Command::Add(vec![NewStream {
            process,
            role: Role::Stdin { terminal: false },
            source: Some(src_r),
            sink: NewSink::Fd(dst_w),
            guard: None,
        }]));
        // More than a pipe and the buffer hold: the writer is backpressured, not the shim grown.
        let data: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            src_w.write_all(&data).unwrap();
            // Keep the source open: CloseIO, not EOF, ends the stream.
            src_w
        });
        let mut got = vec![0u8; expected.len()];
        dst_r.read_exact(&mut got).unwrap();
        assert!(got == expected);
        let _src_w = writer.join().unwrap();
        io.send(Command::CloseStdin(process));
        let mut rest = Vec::new();
        dst_r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "CloseIO closed the sink");
    }
}
