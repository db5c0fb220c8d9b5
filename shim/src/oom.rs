//! The OOM watcher: one thread polls one fd per container and reports OOM kills (the shim
//! publishes them as `TaskOOM`).
//!
//! - cgroup v2: inotify on `memory.events`; a modification with a higher `oom_kill` is an OOM kill.
//! - cgroup v1: an eventfd registered through `cgroup.event_control` on `memory.oom_control`; the
//!   kernel signals it on OOM (and when the cgroup goes away, which is told apart by the counter).
//!
//! Every report goes through [`OomWatcher::check`], which compares the cgroup's `oom_kill` counter
//! with the last one reported, so a kill is reported once. The exit path calls `check` before it
//! publishes the init's `TaskExit`, which is how `TaskOOM` always precedes the exit it caused even
//! when the notification is still in flight.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use crate::cgroup::Cgroup;

/// What the watcher calls with a container id when that container had an OOM kill (the shim
/// publishes `TaskOOM`).
pub type OnOom = Box<dyn Fn(&str) + Send + Sync>;

/// Why a container could not be watched.
#[derive(Debug, thiserror::Error)]
pub enum OomError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("the cgroup has no memory controller")]
    NoMemory,
}

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> OomError {
    let what = what.into();
    move |source| OomError::Sys { what, source }
}

struct Watch {
    fd: OwnedFd,
    cgroup: Cgroup,
    reported: u64,
    /// v1: `memory.oom_control`, kept open for the eventfd registration's lifetime.
    _control: Option<File>,
}

#[derive(Default)]
struct Watches {
    by_id: HashMap<String, Watch>,
    /// Removed watches whose fds the poll loop may still be using; dropped by the loop.
    graveyard: Vec<Watch>,
}

/// The watcher shared by the service.
pub struct OomWatcher {
    watches: Arc<Mutex<Watches>>,
    wake: File,
    on_oom: OnOom,
}

impl std::fmt::Debug for OomWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OomWatcher")
    }
}

impl OomWatcher {
    /// Start the watcher thread.
    pub fn start(on_oom: OnOom) -> Result<Arc<OomWatcher>, OomError> {
        let (r, w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(|e| OomError::Sys {
                    what: "pipe".into(),
                    source: e.into(),
                })?;
        let watcher = Arc::new(OomWatcher {
            watches: Arc::new(Mutex::new(Watches::default())),
            wake: File::from(w),
            on_oom,
        });
        let w2 = watcher.clone();
        let wake_r = File::from(r);
        std::thread::Builder::new()
            .name("oom".into())
            .stack_size(64 * 1024)
            .spawn(move || w2.run(wake_r))
            .map_err(sys("starting the OOM thread"))?;
        Ok(watcher)
    }

    /// Watch `cgroup` for container `id`.
    pub fn add(&self, id: &str, cgroup: Cgroup) -> Result<(), OomError> {
        let dir = cgroup.memory_dir().ok_or(OomError::NoMemory)?;
        let (fd, control) = match &cgroup {
            Cgroup::V2(_) => {
                // SAFETY: inotify_init1 takes flags only.
                let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
                if ifd < 0 {
                    return Err(sys("inotify_init1")(std::io::Error::last_os_error()));
                }
                // SAFETY: a fresh fd we own.
                let fd = unsafe { OwnedFd::from_raw_fd(ifd) };
                let path = std::ffi::CString::new(
                    dir.join("memory.events").as_os_str().as_encoded_bytes(),
                )
                .map_err(|_| OomError::NoMemory)?;
                // SAFETY: a valid fd and NUL-terminated path.
                let wd = unsafe { libc::inotify_add_watch(ifd, path.as_ptr(), libc::IN_MODIFY) };
                if wd < 0 {
                    return Err(sys("watching memory.events")(
                        std::io::Error::last_os_error(),
                    ));
                }
                (fd, None)
            }
            Cgroup::V1(_) => {
                // SAFETY: eventfd takes integers only.
                let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if efd < 0 {
                    return Err(sys("eventfd")(std::io::Error::last_os_error()));
                }
                // SAFETY: a fresh fd we own.
                let fd = unsafe { OwnedFd::from_raw_fd(efd) };
                let control_path = dir.join("memory.oom_control");
                let control = File::open(&control_path)
                    .map_err(sys(format!("opening {}", control_path.display())))?;
                let ec_path = dir.join("cgroup.event_control");
                OpenOptions::new()
                    .write(true)
                    .open(&ec_path)
                    .and_then(|mut f| {
                        f.write_all(format!("{} {}", efd, control.as_raw_fd()).as_bytes())
                    })
                    .map_err(sys(format!("writing {}", ec_path.display())))?;
                (fd, Some(control))
            }
        };
        let reported = cgroup.oom_kills();
        if let Ok(mut w) = self.watches.lock() {
            w.by_id.insert(
                id.to_string(),
                Watch {
                    fd,
                    cgroup,
                    reported,
                    _control: control,
                },
            );
        }
        self.wake();
        Ok(())
    }

    /// Stop watching container `id`.
    pub fn remove(&self, id: &str) {
        if let Ok(mut w) = self.watches.lock() {
            if let Some(watch) = w.by_id.remove(id) {
                w.graveyard.push(watch);
            }
        }
        self.wake();
    }

    /// Report an OOM kill of `id` if its OOM-kill counter rose since the last report. The report
    /// is made under the lock, so two callers never report the same kill.
    pub fn check(&self, id: &str) {
        let Ok(mut w) = self.watches.lock() else {
            return;
        };
        let Some(watch) = w.by_id.get_mut(id) else {
            return;
        };
        let now = watch.cgroup.oom_kills();
        if now > watch.reported {
            watch.reported = now;
            (self.on_oom)(id);
        }
    }

    fn wake(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    fn run(&self, mut wake: File) {
        let mut buf = [0u8; 4096];
        loop {
            let mut fds: Vec<libc::pollfd> = vec![libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            let mut ids: Vec<(String, RawFd)> = Vec::new();
            if let Ok(mut w) = self.watches.lock() {
                w.graveyard.clear();
                for (id, watch) in &w.by_id {
                    ids.push((id.clone(), watch.fd.as_raw_fd()));
                    fds.push(libc::pollfd {
                        fd: watch.fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
            // SAFETY: fds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 {
                continue;
            }
            if fds[0].revents != 0 {
                while matches!(wake.read(&mut buf), Ok(n) if n > 0) {}
            }
            for (pfd, (id, raw)) in fds[1..].iter().zip(&ids) {
                if pfd.revents == 0 {
                    continue;
                }
                // Drain the notification; the fd is non-blocking.
                // SAFETY: the watch owning `raw` is alive until the next loop (graveyard).
                let _ = unsafe { libc::read(*raw, buf.as_mut_ptr().cast(), buf.len()) };
                self.check(id);
                if pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    self.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn v2_memory_events_oom_kill_is_reported_once() {
        let dir = std::env::temp_dir().join(format!("skiff-oom-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let events = dir.join("memory.events");
        std::fs::write(&events, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        let watcher =
            OomWatcher::start(Box::new(move |id| s2.lock().unwrap().push(id.to_string()))).unwrap();
        watcher.add("c1", Cgroup::V2(dir.clone())).unwrap();
        // Not an OOM kill: another counter changes.
        std::fs::write(&events, "low 0\nhigh 0\nmax 3\noom 0\noom_kill 0\n").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(seen.lock().unwrap().is_empty());
        std::fs::write(&events, "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while seen.lock().unwrap().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        watcher.check("c1");
        assert_eq!(*seen.lock().unwrap(), vec!["c1".to_string()]);
        watcher.remove("c1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
