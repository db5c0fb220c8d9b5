//! The reaper: the shim is the child subreaper of everything it starts, and one thread reaps.
//!
//! `SIGCHLD` is blocked in every thread (the mask is set in `main` before any thread exists and
//! inherited by all of them). The server's I/O loop takes it from a signalfd (the `delete`
//! command, which has no loop, from a thread of its own with `sigwait`) and reaps with
//! `waitpid(-1, WNOHANG)` until nothing is left. Every exit is broadcast to all current
//! [`Subscription`]s. A caller that starts a process subscribes *before* it spawns, so the exit
//! cannot be reaped and dispatched before anyone listens for it (no stolen exit statuses).
//! `std::process::Child::wait` is never used: only the reaping thread calls `waitpid`.
//!
//! One exception is std's own: when `exec` fails, `Command::spawn` waits for the failed child
//! itself, and panics if the reaper took it first (`ECHILD`). So every spawn goes through
//! [`spawn`], which holds a process-wide gate that [`Reaper::reap_all`] waits for: no `waitpid(-1)`
//! while a spawn is in progress.

use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// Why the reaper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("prctl(PR_SET_CHILD_SUBREAPER): {0}")]
    Subreaper(Errno),
    #[error("blocking SIGCHLD: {0}")]
    Mask(Errno),
    #[error("starting the reaper thread: {0}")]
    Thread(std::io::Error),
}

fn sigchld() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set
}

/// Held (shared) by spawns, (exclusively) by the reaping: see the module docs.
static SPAWN_GATE: RwLock<()> = RwLock::new(());

/// `cmd.spawn()`, with no reaping meanwhile (std reaps a child whose `exec` failed itself).
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let _gate = SPAWN_GATE.read().unwrap_or_else(|e| e.into_inner());
    cmd.spawn()
}

/// One reaped child.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub pid: i32,
    /// The raw `waitpid` status.
    pub status: i32,
    pub at: SystemTime,
}

/// The exit registry the reaping thread feeds.
#[derive(Debug, Default)]
pub struct Reaper {
    subscribers: Mutex<HashMap<u64, Sender<Exit>>>,
    next_id: AtomicU64,
}

impl Reaper {
    /// Become the child subreaper and block `SIGCHLD` in the calling thread (call it before any
    /// other thread is started, so every thread inherits the mask). Something must then call
    /// [`Reaper::reap_all`] on every `SIGCHLD`: the server's I/O loop reads them from a signalfd.
    pub fn new() -> Result<Arc<Reaper>, ReaperError> {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(ReaperError::Subreaper(Errno::last()));
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigchld()), None)
            .map_err(ReaperError::Mask)?;
        Ok(Arc::new(Reaper::default()))
    }

    /// [`Reaper::new`] with a thread of its own that waits for `SIGCHLD` (for the short-lived
    /// `delete` command, which has no I/O loop).
    pub fn start() -> Result<Arc<Reaper>, ReaperError> {
        let reaper = Reaper::new()?;
        let r = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 * 1024)
            .spawn(move || r.run(sigchld()))
            .map_err(ReaperError::Thread)?;
        Ok(reaper)
    }

    fn run(&self, set: SigSet) {
        loop {
            // Reap first: children may have exited before the signal was blocked or delivered.
            self.reap_all();
            if set.wait().is_err() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Reap every child that exited and tell the subscribers.
    pub fn reap_all(&self) {
        // Not while a spawn may still reap its failed child itself.
        let _gate = SPAWN_GATE.write().unwrap_or_else(|e| e.into_inner());
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into a valid local integer.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if !(libc::WIFEXITED(raw) || libc::WIFSIGNALED(raw)) {
                continue;
            }
            let exit = Exit {
                pid,
                status: raw,
                at: SystemTime::now(),
            };
            if let Ok(subs) = self.subscribers.lock() {
                for tx in subs.values() {
                    let _ = tx.send(exit);
                }
            }
        }
    }

    /// Receive every exit from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = channel();
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.insert(id, tx);
        }
        Subscription {
            id,
            rx,
            reaper: self.clone(),
        }
    }
}

/// A stream of exits; unsubscribes on drop.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rx: Receiver<Exit>,
    reaper: Arc<Reaper>,
}

impl Subscription {
    /// The next exit, blocking.
    pub fn recv(&self) -> Option<Exit> {
        self.rx.recv().ok()
    }

    /// Wait for the exit of `pid` (other exits are skipped), at most `timeout`.
    pub fn wait_for(&self, pid: i32, timeout: Duration) -> Option<Exit> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(exit) if exit.pid == pid => return Some(exit),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Ok(mut subs) = self.reaper.subscribers.lock() {
            subs.remove(&self.id);
        }
    }
}

/// Send `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: i32) -> Result<(), Errno> {
    // SAFETY: kill takes plain integers.
    let rc = unsafe { libc::kill(pid, sig) };
    match rc {
        0 => Ok(()),
        _ => Err(Errno::last()),
    }
}
