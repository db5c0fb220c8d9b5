//! The stdio of container processes.
//!
//! | containerd gives | the process gets | the shim does |
//! | --- | --- | --- |
//! | fifo paths (`stdin`, `stdout`, `stderr`) | pipes | one thread per stream copies between the pipe and the fifo |
//! | `binary:///path?k=v` | pipes | starts the logger with the read ends as fds 3 and 4 and waits until it closes fd 5 |
//! | `file:///path` | the file itself, for stdout and stderr | nothing |
//! | `terminal: true` | a pty slave from the runtime | receives the master over the console socket (`SCM_RIGHTS`), copies stdin fifo → master → stdout fifo |
//!
//! Output is never lost when the process exits before the reader attaches: the pipe (or pty)
//! keeps the bytes, and the copier opens the fifo (blocking until containerd's reader is there)
//! before it reads. `CloseIO` closes the shim's end of the stdin pipe, so the process sees EOF.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::runtime::ChildStdio;

/// Bytes a copier moves per read (one buffer per stream, for the life of the process).
const COPY_BUF: usize = 8 * 1024;

/// Copier threads need little stack.
const COPIER_STACK: usize = 64 * 1024;

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
    #[error("console socket {path}: {source}")]
    Console {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the runtime sent no pty master on the console socket")]
    NoConsole,
    #[error("starting a copier thread: {0}")]
    Thread(std::io::Error),
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

/// Counts the output copiers still running, so an exit can wait for the output to be written.
#[derive(Debug, Default)]
struct Outputs {
    running: Mutex<usize>,
    done: Condvar,
}

impl Outputs {
    fn start(&self) {
        if let Ok(mut n) = self.running.lock() {
            *n += 1;
        }
    }
    fn finish(&self) {
        if let Ok(mut n) = self.running.lock() {
            *n = n.saturating_sub(1);
        }
        self.done.notify_all();
    }
}

/// Waits for a process's output copiers to finish.
#[derive(Debug, Clone)]
pub struct OutputWaiter(Arc<Outputs>);

impl OutputWaiter {
    /// Wait (at most `timeout`) until every output copier reached EOF.
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

/// The shim's side of one process's stdio.
#[derive(Debug)]
pub struct ProcessIo {
    /// Where data for the process's stdin goes (the pipe's write end, or the pty master).
    stdin: Arc<Mutex<Option<File>>>,
    /// The pty master, for resizing.
    console: Option<File>,
    outputs: Arc<Outputs>,
    paths: StdioPaths,
}

/// A console socket waiting for the runtime to send the pty master.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

static CONSOLE_COUNTER: AtomicU64 = AtomicU64::new(0);

impl ConsoleSocket {
    /// Listen on a fresh path under the temp directory (bundle paths can be too long for a socket).
    pub fn new() -> Result<ConsoleSocket, IoError> {
        let n = CONSOLE_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("skiff-pty-{}-{n}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| IoError::Console {
            path: path.clone(),
            source,
        })?;
        Ok(ConsoleSocket { listener, path })
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

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), IoError> {
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(COPIER_STACK)
        .spawn(f)
        .map(|_| ())
        .map_err(IoError::Thread)
}

/// Copy `src` into the fifo at `path` until EOF. The fifo is opened first (blocking until a reader
/// is there); if the reader goes away the rest is drained so the process never blocks on output.
fn copy_out(mut src: File, path: PathBuf, outputs: Arc<Outputs>) {
    let mut dst = OpenOptions::new().write(true).open(&path).ok();
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(f) = dst.as_mut() {
                    if f.write_all(&buf[..n]).is_err() {
                        dst = None;
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO: a pty master whose slave side is closed everywhere.
            Err(_) => break,
        }
    }
    drop(dst);
    outputs.finish();
}

/// Copy the stdin fifo into `sink` until EOF, then close the sink.
fn copy_in(path: PathBuf, sink: Arc<Mutex<Option<File>>>, close_at_eof: bool) {
    let Ok(mut src) = File::open(&path) else {
        return;
    };
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let Ok(mut guard) = sink.lock() else { return };
                match guard.as_mut() {
                    Some(f) => {
                        if f.write_all(&buf[..n]).is_err() {
                            *guard = None;
                        }
                    }
                    None => return,
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if close_at_eof {
        if let Ok(mut guard) = sink.lock() {
            *guard = None;
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
    cmd.spawn().map_err(|source| IoError::Logger {
        path: path.to_path_buf(),
        source,
    })?;
    drop((stdout_r, stderr_r, ready_w));
    let mut byte = [0u8; 1];
    let _ = ready_r.read(&mut byte);
    Ok(())
}

impl ProcessIo {
    /// Set up non-terminal stdio: returns what the runtime command gets and the shim's side, with
    /// the copier threads already started.
    pub fn pipes(paths: &StdioPaths, owner: &Owner) -> Result<(ChildStdio, ProcessIo), IoError> {
        let outputs = Arc::new(Outputs::default());
        let stdin_sink = Arc::new(Mutex::new(None));
        let mut child = ChildStdio::default();

        if paths.stdin.is_empty() {
            child.stdin = Some(dev_null(false)?);
        } else {
            let (r, w) = pipe()?;
            child.stdin = Some(r.into());
            if let Ok(mut sink) = stdin_sink.lock() {
                *sink = Some(w);
            }
            let sink = stdin_sink.clone();
            let path = PathBuf::from(&paths.stdin);
            spawn_thread("stdin", move || copy_in(path, sink, true))?;
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
                child.stdout = Some(Self::output_stream(&out, &outputs, "stdout")?);
                child.stderr = Some(Self::output_stream(&err, &outputs, "stderr")?);
            }
        }
        Ok((
            child,
            ProcessIo {
                stdin: stdin_sink,
                console: None,
                outputs,
                paths: paths.clone(),
            },
        ))
    }

    fn output_stream(
        target: &Target,
        outputs: &Arc<Outputs>,
        name: &str,
    ) -> Result<OwnedFd, IoError> {
        match target {
            Target::Fifo(path) => {
                let (r, w) = pipe()?;
                outputs.start();
                let (path, o) = (path.clone(), outputs.clone());
                if let Err(e) = spawn_thread(name, move || copy_out(r, path, o)) {
                    outputs.finish();
                    return Err(e);
                }
                Ok(w.into())
            }
            _ => dev_null(true),
        }
    }

    /// Set up a terminal's stdio once the runtime has sent the pty `master`.
    pub fn terminal(paths: &StdioPaths, master: File) -> Result<ProcessIo, IoError> {
        let outputs = Arc::new(Outputs::default());
        let dup = |f: &File| {
            f.try_clone().map_err(|source| IoError::Open {
                path: "pty master".into(),
                source,
            })
        };
        let stdin_sink = Arc::new(Mutex::new(None));
        if !paths.stdin.is_empty() {
            if let Ok(mut sink) = stdin_sink.lock() {
                *sink = Some(dup(&master)?);
            }
            let sink = stdin_sink.clone();
            let path = PathBuf::from(&paths.stdin);
            spawn_thread("stdin", move || copy_in(path, sink, false))?;
        }
        if let Target::Fifo(path) = parse_target(&paths.stdout)? {
            let src = dup(&master)?;
            outputs.start();
            let o = outputs.clone();
            if let Err(e) = spawn_thread("stdout", move || copy_out(src, path, o)) {
                outputs.finish();
                return Err(e);
            }
        }
        Ok(ProcessIo {
            stdin: stdin_sink,
            console: Some(master),
            outputs,
            paths: paths.clone(),
        })
    }

    /// `CloseIO` with `stdin`: the process sees EOF (for a terminal, the master stays open).
    pub fn close_stdin(&self) {
        if let Ok(mut sink) = self.stdin.lock() {
            if self.console.is_none() {
                *sink = None;
            } else if let Some(f) = sink.as_mut() {
                // A terminal reads EOF from ^D at the start of a line.
                let _ = f.write_all(&[4]);
            }
        }
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

    /// A handle that waits for this process's output copiers, usable without the process table.
    pub fn output_waiter(&self) -> OutputWaiter {
        OutputWaiter(self.outputs.clone())
    }

    /// Release everything: close stdin, and unblock copiers still waiting to open their fifo
    /// (a peer that never came).
    pub fn shutdown(&self) {
        if let Ok(mut sink) = self.stdin.lock() {
            *sink = None;
        }
        let nonblock = libc::O_NONBLOCK;
        if !self.paths.stdin.is_empty() && !self.paths.stdin.contains("://") {
            let _ = OpenOptions::new()
                .write(true)
                .custom_flags(nonblock)
                .open(&self.paths.stdin);
        }
        let still_running = self.outputs.running.lock().map(|n| *n > 0).unwrap_or(false);
        if still_running {
            for p in [&self.paths.stdout, &self.paths.stderr] {
                if let Ok(Target::Fifo(path)) = parse_target(p) {
                    let _ = OpenOptions::new()
                        .read(true)
                        .custom_flags(nonblock)
                        .open(path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn output_written_before_reader_attaches_is_kept() {
        let dir = std::env::temp_dir().join(format!("skiff-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("out");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let paths = StdioPaths {
            stdout: fifo.display().to_string(),
            ..Default::default()
        };
        let owner = Owner {
            container_id: "c".into(),
            namespace: "n".into(),
        };
        let (child, io) = ProcessIo::pipes(&paths, &owner).unwrap();
        let mut w = File::from(child.stdout.unwrap());
        w.write_all(b"early bytes").unwrap();
        drop(w);
        drop(child.stderr);
        std::thread::sleep(Duration::from_millis(50));
        let mut r = File::open(&fifo).unwrap();
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "early bytes");
        io.output_waiter().wait(Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
