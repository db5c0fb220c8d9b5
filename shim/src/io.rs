//! The stdio of container processes.
//!
//! | containerd gives | the process gets | the shim does |
//! | --- | --- | --- |
//! | fifo paths (`stdin`, `stdout`, `stderr`) | pipes | the I/O loop ([`crate::ioloop`]) copies between the pipes and the fifos |
//! | `binary:///path?k=v` | pipes | starts the logger with the read ends as fds 3 and 4 and waits until it closes fd 5 |
//! | `file:///path` | the file itself, for stdout and stderr | nothing |
//! | `terminal: true` | a pty slave from the runtime | receives the master over the console socket (`SCM_RIGHTS`); the I/O loop copies stdin fifo → master → stdout fifo |
//!
//! Output is never lost when the process exits before the reader attaches: the pipe (or pty)
//! keeps the bytes, and the loop reads it only once containerd's fifo is open for writing.
//! `CloseIO` closes the process's stdin pipe once what the loop holds for it is written, so the
//! process sees EOF; a terminal gets `^D` instead.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::ioloop::{Command as LoopCommand, IoLoop, NewSink, NewStream, Role};
use crate::runtime::ChildStdio;

/// How long a `binary://` logger may take to signal that it is ready.
const LOGGER_READY: Duration = Duration::from_secs(10);

/// Why stdio could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("creating a pipe: {0}")]
    Pipe(nix::errno::Errno),
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unsupported stdio URI {0:?}")]
    Uri(String),
    #[error("starting logger {path}: {source}")]
    Logger {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("logger {path} did not signal ready (close fd 5) within {secs}s", secs = LOGGER_READY.as_secs())]
    LoggerReady { path: PathBuf },
    #[error("console socket {path}: {source}")]
    Console {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the runtime sent no pty master on the console socket")]
    NoConsole,
    #[error("resizing the pty: {0}")]
    Resize(nix::errno::Errno),
}

/// The stdio containerd asked for.
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Who the process belongs to, for `binary://` loggers.
#[derive(Debug, Clone)]
pub struct Owner {
    pub container_id: String,
    pub namespace: String,
}

/// Counts the output streams still being copied, so an exit can wait for the output to be written.
#[derive(Debug, Default)]
pub struct Outputs {
    running: Mutex<usize>,
    done: Condvar,
}

/// One output stream of a process, counted in its [`Outputs`] until the I/O loop drops it.
#[derive(Debug)]
pub struct OutputGuard(Arc<Outputs>);

impl OutputGuard {
    fn new(outputs: &Arc<Outputs>) -> OutputGuard {
        if let Ok(mut n) = outputs.running.lock() {
            *n += 1;
        }
        OutputGuard(outputs.clone())
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        if let Ok(mut n) = self.0.running.lock() {
            *n = n.saturating_sub(1);
        }
        self.0.done.notify_all();
    }
}

/// Waits for a process's output streams to finish.
#[derive(Debug, Clone)]
pub struct OutputWaiter(Arc<Outputs>);

impl OutputWaiter {
    /// Whether every output stream reached EOF and was written already.
    pub fn is_done(&self) -> bool {
        self.0.running.lock().map(|n| *n == 0).unwrap_or(true)
    }

    /// Wait (at most `timeout`) until every output stream reached EOF and was written.
    pub fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let Ok(mut n) = self.0.running.lock() else {
            return;
        };
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.0.done.wait_timeout(n, left) {
                Ok((guard, _)) => n = guard,
                Err(_) => return,
            }
        }
    }
}

/// The shim's side of one process's stdio: its streams live in the I/O loop under `id`.
#[derive(Debug)]
pub struct ProcessIo {
    id: u64,
    io: Arc<IoLoop>,
    /// The pty master, for resizing.
    console: Option<File>,
    outputs: Arc<Outputs>,
    /// Pipe streams not yet handed to the loop (see [`ProcessIo::start_copying`]).
    held: Vec<NewStream>,
}

/// A console socket waiting for the runtime to send the pty master.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

/// A fresh directory only root can enter, with a name nobody can guess (`mkdtemp`).
fn private_dir(prefix: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let template = std::env::temp_dir().join(format!("{prefix}XXXXXX"));
    let mut bytes = template.into_os_string().into_vec();
    bytes.push(0);
    // SAFETY: a NUL-terminated, writable template that mkdtemp fills in place.
    let p = unsafe { libc::mkdtemp(bytes.as_mut_ptr().cast()) };
    if p.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    bytes.pop();
    Ok(PathBuf::from(OsString::from_vec(bytes)))
}

impl ConsoleSocket {
    /// Listen in a new private directory under the temp directory (bundle paths can be too long
    /// for a socket): its path cannot be guessed or taken over beforehand.
    pub fn new() -> Result<ConsoleSocket, IoError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IoError::Console { path, source }
        };
        let dir = private_dir("skiff-pty-").map_err(err(&std::env::temp_dir()))?;
        let path = dir.join("console.sock");
        match UnixListener::bind(&path) {
            Ok(listener) => Ok(ConsoleSocket { listener, path }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(err(&path)(e))
            }
        }
    }

    /// The path to pass as `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Take the master the runtime sent. Called after the runtime command exited successfully:
    /// its connection and message wait in the socket's queue.
    pub fn receive(&self) -> Result<File, IoError> {
        let err = |source| IoError::Console {
            path: self.path.clone(),
            source,
        };
        self.listener.set_nonblocking(true).map_err(err)?;
        let (stream, _) = match self.listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(IoError::NoConsole),
            Err(e) => return Err(err(e)),
        };
        stream.set_nonblocking(false).map_err(err)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(err)?;
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| err(e.into()))?;
        for cmsg in msg.cmsgs().map_err(|e| err(e.into()))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                if let Some(&fd) = fds.first() {
                    for &extra in &fds[1..] {
                        // SAFETY: the fds were just received and are owned by nobody else.
                        drop(unsafe { OwnedFd::from_raw_fd(extra) });
                    }
                    // SAFETY: as above; the first fd is the pty master.
                    return Ok(unsafe { File::from_raw_fd(fd) });
                }
            }
        }
        Err(IoError::NoConsole)
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn pipe() -> Result<(File, File), IoError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(IoError::Pipe)?;
    Ok((File::from(r), File::from(w)))
}

fn dev_null(write: bool) -> Result<OwnedFd, IoError> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|source| IoError::Open {
            path: "/dev/null".into(),
            source,
        })
}

/// containerd's stdin fifo, opened for reading without waiting for its writer. `None` (and a log
/// line) if it cannot be opened: the process's stdin then stays open until `CloseIO` or `Delete`.
fn open_stdin(path: &str) -> Option<File> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(f) => Some(f),
        Err(e) => {
            log_line!("skiff-shim: opening stdin {path}: {e}");
            None
        }
    }
}

/// Where an output stream goes.
enum Target {
    None,
    Fifo(PathBuf),
    Binary(PathBuf, Vec<OsString>),
    File(PathBuf),
}

fn parse_target(uri: &str) -> Result<Target, IoError> {
    if uri.is_empty() {
        return Ok(Target::None);
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(Target::Fifo(PathBuf::from(uri)));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    match scheme {
        "fifo" => Ok(Target::Fifo(PathBuf::from(path))),
        "file" => Ok(Target::File(PathBuf::from(path))),
        "binary" => {
            let mut args = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(OsString::from(percent_decode(k)));
                if !v.is_empty() {
                    args.push(OsString::from(percent_decode(v)));
                }
            }
            Ok(Target::Binary(PathBuf::from(path), args))
        }
        _ => Err(IoError::Uri(uri.to_string())),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Start a `binary://` logger reading `stdout_r` (fd 3) and `stderr_r` (fd 4); wait until it
/// closes the ready pipe (fd 5).
fn start_logger(
    path: &Path,
    args: &[OsString],
    owner: &Owner,
    stdout_r: File,
    stderr_r: File,
) -> Result<(), IoError> {
    let (mut ready_r, ready_w) = pipe()?;
    let fds = [
        stdout_r.as_raw_fd(),
        stderr_r.as_raw_fd(),
        ready_w.as_raw_fd(),
    ];
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env("CONTAINER_ID", &owner.container_id)
        .env("CONTAINER_NAMESPACE", &owner.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure only calls dup2, which is async-signal-safe, on fds that are open.
    unsafe {
        cmd.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = crate::reaper::spawn(&mut cmd).map_err(|source| IoError::Logger {
        path: path.to_path_buf(),
        source,
    })?;
    drop((stdout_r, stderr_r, ready_w));
    if !readable_within(&ready_r, LOGGER_READY) {
        // Its exit is reaped by the reaper like any child's.
        let _ = child.kill();
        return Err(IoError::LoggerReady {
            path: path.to_path_buf(),
        });
    }
    let mut byte = [0u8; 1];
    let _ = ready_r.read(&mut byte);
    Ok(())
}

/// Whether `f` becomes readable (or reaches EOF) within `timeout`.
fn readable_within(f: &File, timeout: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Err(nix::errno::Errno::EINTR) => {}
            Ok(_) if !left.is_zero() => {}
            _ => return false,
        }
    }
}

impl ProcessIo {
    /// Set up non-terminal stdio: returns what the runtime command gets and the shim's side. The
    /// pipes are copied only from [`ProcessIo::start_copying`] on, once the runtime command
    /// succeeded: what a failing runtime writes on its (the process's) stderr is its error, which
    /// the caller returns, and it must not reach the process's streams (containerd's runc shim,
    /// too, starts copying after the runtime returns).
    pub fn pipes(
        paths: &StdioPaths,
        owner: &Owner,
        io: &Arc<IoLoop>,
    ) -> Result<(ChildStdio, ProcessIo), IoError> {
        let id = io.next_id();
        let outputs = Arc::new(Outputs::default());
        let mut child = ChildStdio::default();
        let mut streams = Vec::new();

        if paths.stdin.is_empty() {
            child.stdin = Some(dev_null(false)?);
        } else {
            let (r, w) = pipe()?;
            child.stdin = Some(r.into());
            streams.push(NewStream {
                process: id,
                role: Role::Stdin { terminal: false },
                source: open_stdin(&paths.stdin),
                sink: NewSink::Fd(w),
                guard: None,
            });
        }

        let out = parse_target(&paths.stdout)?;
        let err = parse_target(&paths.stderr)?;
        match (&out, &err) {
            (Target::Binary(path, args), _) => {
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                start_logger(path, args, owner, out_r, err_r)?;
                child.stdout = Some(out_w.into());
                child.stderr = Some(err_w.into());
            }
            (Target::File(path), _) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)
                    .map_err(|source| IoError::Open {
                        path: path.clone(),
                        source,
                    })?;
                let dup = file.try_clone().map_err(|source| IoError::Open {
                    path: path.clone(),
                    source,
                })?;
                child.stdout = Some(file.into());
                child.stderr = Some(dup.into());
            }
            _ => {
                for (target, slot) in [(&out, &mut child.stdout), (&err, &mut child.stderr)] {
                    *slot = Some(match target {
                        Target::Fifo(path) => {
                            let (r, w) = pipe()?;
                            streams.push(NewStream {
                                process: id,
                                role: Role::Output,
                                source: Some(r),
                                sink: NewSink::Fifo(path.clone()),
                                guard: Some(OutputGuard::new(&outputs)),
                            });
                            w.into()
                        }
                        _ => dev_null(true)?,
                    });
                }
            }
        }
        Ok((
            child,
            ProcessIo {
                id,
                io: io.clone(),
                console: None,
                outputs,
                held: streams,
            },
        ))
    }

    /// Set up a terminal's stdio once the runtime has sent the pty `master`.
    pub fn terminal(
        paths: &StdioPaths,
        master: File,
        io: &Arc<IoLoop>,
    ) -> Result<ProcessIo, IoError> {
        let id = io.next_id();
        let outputs = Arc::new(Outputs::default());
        let dup = |f: &File| {
            f.try_clone().map_err(|source| IoError::Open {
                path: "pty master".into(),
                source,
            })
        };
        let mut streams = Vec::new();
        if !paths.stdin.is_empty() {
            streams.push(NewStream {
                process: id,
                role: Role::Stdin { terminal: true },
                source: open_stdin(&paths.stdin),
                sink: NewSink::Fd(dup(&master)?),
                guard: None,
            });
        }
        if let Target::Fifo(path) = parse_target(&paths.stdout)? {
            streams.push(NewStream {
                process: id,
                role: Role::Output,
                source: Some(dup(&master)?),
                sink: NewSink::Fifo(path),
                guard: Some(OutputGuard::new(&outputs)),
            });
        }
        if !streams.is_empty() {
            io.send(LoopCommand::Add(streams));
        }
        Ok(ProcessIo {
            id,
            io: io.clone(),
            console: Some(master),
            outputs,
            held: Vec::new(),
        })
    }

    /// Hand the pipe streams to the I/O loop. Dropping a `ProcessIo` that never started copying
    /// closes them with whatever they hold.
    pub fn start_copying(&mut self) {
        let streams = std::mem::take(&mut self.held);
        if !streams.is_empty() {
            self.io.send(LoopCommand::Add(streams));
        }
    }

    /// `CloseIO` with `stdin`: the process sees EOF once what is pending is written (a terminal
    /// gets `^D`; its master stays open).
    pub fn close_stdin(&self) {
        self.io.send(LoopCommand::CloseStdin(self.id));
    }

    /// `ResizePty`.
    pub fn resize(&self, width: u32, height: u32) -> Result<(), IoError> {
        let Some(console) = &self.console else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
        let rc = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(IoError::Resize(nix::errno::Errno::last()));
        }
        Ok(())
    }

    /// A handle that waits for this process's output streams, usable without the process table.
    pub fn output_waiter(&self) -> OutputWaiter {
        OutputWaiter(self.outputs.clone())
    }

    /// Release everything: close stdin, and let outputs still waiting for a reader (a peer that
    /// never came) drain and discard.
    pub fn shutdown(&self) {
        self.io.send(LoopCommand::Shutdown(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_sockets_live_in_private_unguessable_directories() {
        use std::os::unix::fs::PermissionsExt;
        let a = ConsoleSocket::new().unwrap();
        let b = ConsoleSocket::new().unwrap();
        let dir = a.path().parent().unwrap().to_path_buf();
        assert_ne!(dir, std::env::temp_dir());
        assert_ne!(Some(dir.as_path()), b.path().parent());
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "{}", dir.display());
        drop(a);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    use std::io::Write;

    #[test]
    fn targets() {
        assert!(matches!(parse_target("").unwrap(), Target::None));
        assert!(matches!(
            parse_target("/run/x/stdout").unwrap(),
            Target::Fifo(_)
        ));
        assert!(matches!(
            parse_target("fifo:///a").unwrap(),
            Target::Fifo(_)
        ));
        match parse_target("binary:///usr/bin/logger?a=b&flag&x=y%20z").unwrap() {
            Target::Binary(p, args) => {
                assert_eq!(p, PathBuf::from("/usr/bin/logger"));
                assert_eq!(args, vec!["a", "b", "flag", "x", "y z"]);
            }
            _ => panic!("not binary"),
        }
        match parse_target("file:///var/log/c.log").unwrap() {
            Target::File(p) => assert_eq!(p, PathBuf::from("/var/log/c.log")),
            _ => panic!("not file"),
        }
        assert!(parse_target("http://x").is_err());
    }

    fn fifo(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    fn owner() -> Owner {
        Owner {
            container_id: "c".into(),
            namespace: "n".into(),
        }
    }

    /// A fresh scratch dir with one fifo, `stdin` or `stdout` of the process naming it, and the
    /// process's pipes served by a new I/O loop: (dir, fifo, the child's ends, the shim's side).
    fn piped(tag: &str, stdin: bool) -> (PathBuf, PathBuf, ChildStdio, ProcessIo) {
        let dir = std::env::temp_dir().join(format!("skiff-io-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = fifo(&dir, if stdin { "in" } else { "out" });
        let name = path.display().to_string();
        let paths = if stdin {
            StdioPaths {
                stdin: name,
                ..Default::default()
            }
        } else {
            StdioPaths {
                stdout: name,
                ..Default::default()
            }
        };
        let io = IoLoop::start(None).unwrap();
        let (child, mut pio) = ProcessIo::pipes(&paths, &owner(), &io).unwrap();
        pio.start_copying();
        (dir, path, child, pio)
    }

    #[test]
    fn output_written_before_reader_attaches_is_kept() {
        let (dir, out, child, pio) = piped("early", false);
        let mut w = File::from(child.stdout.unwrap());
        w.write_all(b"early bytes").unwrap();
        drop(w);
        drop(child.stderr);
        std::thread::sleep(Duration::from_millis(250));
        let waiter = pio.output_waiter();
        let mut r = File::open(&out).unwrap();
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "early bytes");
        waiter.wait(Duration::from_secs(5));
        assert_eq!(*pio.outputs.running.lock().unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stdin_is_copied_and_close_io_closes_it_after_the_pending_bytes() {
        let (dir, stdin, child, pio) = piped("stdin", true);
        let mut process_stdin = File::from(child.stdin.unwrap());
        // containerd's side: the writer stays open; CloseIO ends the stream.
        let mut writer = OpenOptions::new().write(true).open(&stdin).unwrap();
        writer.write_all(b"hello ").unwrap();
        let mut buf = [0u8; 6];
        process_stdin.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello ");
        writer.write_all(b"world").unwrap();
        pio.close_stdin();
        let mut rest = String::new();
        process_stdin.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "world");
        drop(writer);
        pio.shutdown();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn outputs_without_a_reader_are_discarded_after_shutdown() {
        let (dir, _out, child, pio) = piped("noreader", false);
        let waiter = pio.output_waiter();
        pio.shutdown();
        // Nobody ever reads the fifo, yet the process can write more than a pipe holds.
        let mut w = File::from(child.stdout.unwrap());
        w.write_all(&vec![b'x'; 256 * 1024]).unwrap();
        drop(w);
        drop(child.stderr);
        waiter.wait(Duration::from_secs(5));
        assert_eq!(*pio.outputs.running.lock().unwrap(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
