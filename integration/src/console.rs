//! A `--console-socket` listener: accepts the runtime's connection, receives the pty master it sends
//! with `SCM_RIGHTS` (as runc does), then reads everything the container writes to its terminal until
//! the terminal hangs up.

use std::fs::File;
use std::io::{ErrorKind, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

use crate::harness::Spawned;

/// What came over the console socket.
#[derive(Debug)]
pub struct ConsoleCapture {
    /// The message sent with the fd (runc sends the pty's name, e.g. `/dev/pts/0`).
    pub message: String,
    /// Everything read from the pty master.
    pub output: String,
}

/// A listening console socket, served by a background thread.
#[derive(Debug)]
pub struct ConsoleSocket {
    path: PathBuf,
    result: mpsc::Receiver<Result<ConsoleCapture>>,
    timeout: Duration,
}

impl ConsoleSocket {
    /// Listen on `path`; give up (with an error) `timeout` after starting.
    pub fn listen(path: &Path, timeout: Duration) -> Result<ConsoleSocket> {
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        listener.set_nonblocking(true)?;
        let (tx, rx) = mpsc::channel();
        let deadline = Instant::now() + timeout;
        thread::spawn(move || {
            // The receiver may be gone if the test already failed; nothing to do then.
            let _ = tx.send(serve(&listener, deadline));
        });
        Ok(ConsoleSocket {
            path: path.to_path_buf(),
            result: rx,
            timeout,
        })
    }

    /// The socket path, for `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait for the terminal to hang up and return what was received.
    pub fn wait(self) -> Result<ConsoleCapture> {
        self.result
            .recv_timeout(self.timeout + Duration::from_secs(1))
            .map_err(|e| anyhow!("console socket listener did not finish: {e}"))?
    }
}

fn serve(listener: &UnixListener, deadline: Instant) -> Result<ConsoleCapture> {
    let stream = accept_before(listener, deadline)?;
    let (master, message) = receive_fd(&stream, deadline)?;
    let output = read_until_hangup(master, deadline)?;
    Ok(ConsoleCapture { message, output })
}

fn accept_before(listener: &UnixListener, deadline: Instant) -> Result<UnixStream> {
    loop {
        match listener.accept() {
            Ok((stream, _)) => return Ok(stream),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("nobody connected to the console socket");
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).context("accepting on the console socket"),
        }
    }
}

fn receive_fd(stream: &UnixStream, deadline: Instant) -> Result<(OwnedFd, String)> {
    stream.set_nonblocking(false)?;
    let left = deadline.saturating_duration_since(Instant::now());
    stream.set_read_timeout(Some(left.max(Duration::from_millis(10))))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<UnixAddr>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("recvmsg on the console socket")?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs().context("reading control messages")? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            received.extend(fds);
        }
    }
    let len = msg.bytes;
    let mut owned: Vec<OwnedFd> = received
        .into_iter()
        // SAFETY: the kernel just installed these descriptors in this process for us; nothing
        // else owns them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let message = String::from_utf8_lossy(&buf[..len]).to_string();
    if owned.is_empty() {
        bail!("console socket message {message:?} carried no file descriptor");
    }
    Ok((owned.swap_remove(0), message))
}

fn read_until_hangup(master: OwnedFd, deadline: Instant) -> Result<String> {
    let mut file = File::from(master);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if Instant::now() > deadline {
            bail!(
                "terminal did not hang up in time; read so far: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let ready = {
            let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(100u16)).context("poll on the pty master")?
        };
        if ready == 0 {
            continue;
        }
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            // EIO: every slave descriptor is closed, the container's terminal is gone.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the pty master"),
        }
    }
    Ok(String::from_utf8_lossy(&out).to_string())
}

/// Read everything a runtime command (started with the slave of `master` as its terminal, see
/// [`crate::Opts::terminal`]) writes to that terminal, until the terminal hangs up or the command
/// has exited and nothing more is pending. Fails after `timeout`.
pub fn read_terminal(master: File, run: &mut Spawned, timeout: Duration) -> Result<String> {
    let mut master = master;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + timeout;
    loop {
        if Instant::now() > deadline {
            bail!(
                "terminal never closed; read {:?}",
                String::from_utf8_lossy(&out)
            );
        }
        let ready = {
            let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(100u16)).context("poll on the pty master")?
        };
        if ready == 0 {
            if run.finished()? {
                break;
            }
            continue;
        }
        match master.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            // EIO: the last holder of the slave (the runtime) has exited.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the pty master"),
        }
    }
    Ok(String::from_utf8_lossy(&out).to_string())
}
