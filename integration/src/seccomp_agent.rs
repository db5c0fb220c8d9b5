//! A seccomp agent for `linux.seccomp.listenerPath`: it listens on a unix socket, takes each
//! notify descriptor a runtime sends (SCM_RIGHTS, with the container process state JSON as the
//! message) and answers every notification on it with one [`Reply`], until the filtered
//! processes are gone.

use anyhow::{bail, Context, Result};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::Value;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the agent answers a notification.
#[derive(Clone, Copy, Debug)]
pub enum Reply {
    /// Fail the call with this errno.
    Errno(i32),
    /// Let the kernel run the call (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`).
    Continue,
}

/// What one connection brought.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message: runtime-spec's `ContainerProcessState`.
    pub state: Value,
    /// The system call numbers notified on its descriptor, in order.
    pub calls: Vec<i32>,
}

/// A running agent; [`SeccompAgent::finish`] stops it and returns what it got.
pub struct SeccompAgent {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl SeccompAgent {
    /// Listens on `path` and answers with `reply`.
    pub fn start(path: &Path, reply: Reply) -> Result<SeccompAgent> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).with_context(|| format!("bind {path:?}"))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (s, r) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || accept_loop(listener, reply, s, r));
        Ok(SeccompAgent {
            path: path.to_path_buf(),
            stop,
            received,
            thread: Some(thread),
        })
    }

    /// The socket's path, for `listenerPath`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the agent has received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops the agent (its descriptors are closed) and returns what it received.
    pub fn finish(mut self) -> Result<Vec<Received>> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r?,
                Err(_) => bail!("the seccomp agent panicked"),
            }
        }
        Ok(self.received())
    }
}

impl Drop for SeccompAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(
    listener: UnixListener,
    reply: Reply,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
) -> Result<()> {
    let mut servers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (fd, state) = take_descriptor(conn.as_raw_fd())?;
                let index = {
                    let mut r = received.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                    r.push(Received {
                        state,
                        calls: Vec::new(),
                    });
                    r.len() - 1
                };
                let (s, r) = (stop.clone(), received.clone());
                servers.push(std::thread::spawn(move || serve(fd, reply, s, r, index)));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    for s in servers {
        match s.join() {
            Ok(r) => r?,
            Err(_) => bail!("a seccomp agent server panicked"),
        }
    }
    Ok(())
}

/// The descriptor and the state JSON of one connection.
fn take_descriptor(conn: RawFd) -> Result<(OwnedFd, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // The accepted socket may inherit non-blocking mode: wait for data.
    let mut fd = None;
    let mut data = Vec::new();
    loop {
        let mut buf = vec![0u8; 64 * 1024];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let got = recvmsg::<()>(conn, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC);
        let msg = match got {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => return Err(e).context("recvmsg from the runtime"),
        };
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: received with SCM_RIGHTS: a new descriptor of ours.
                    let owned = unsafe { OwnedFd::from_raw_fd(f) };
                    if fd.is_none() {
                        fd = Some(owned);
                    }
                }
            }
        }
        let n = msg.bytes;
        data.extend_from_slice(&buf[..n]);
        // runc 1.1.5 keeps its end open while it runs: the message ends where the JSON does.
        if let Ok(state) = serde_json::from_slice::<Value>(&data) {
            let fd = fd.context("no descriptor in the runtime's message")?;
            return Ok((fd, state));
        }
        if n == 0 {
            bail!("state JSON: {:?}", String::from_utf8_lossy(&data));
        }
    }
}

/// Answers notifications on `fd` until no process uses its filter, or the agent stops.
fn serve(
    fd: OwnedFd,
    reply: Reply,
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<Received>>>,
    index: usize,
) -> Result<()> {
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 50) };
        if r < 0 {
            return Err(std::io::Error::last_os_error()).context("poll the notify descriptor");
        }
        if p.revents & libc::POLLIN != 0 {
            // SAFETY: an all-zero seccomp_notif is valid, and the kernel requires it zeroed.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: RECV fills `req`.
            let r =
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) };
            if r < 0 {
                // The caller was killed meanwhile (ENOENT): nothing to answer.
                continue;
            }
            if let Ok(mut all) = received.lock() {
                all[index].calls.push(req.data.nr);
            }
            let (error, flags) = match reply {
                Reply::Errno(e) => (-e, 0),
                Reply::Continue => (0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            };
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error,
                flags,
            };
            // SAFETY: SEND reads `resp`; a failure means the caller is gone.
            unsafe { libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) };
            continue;
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 || stop.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}
