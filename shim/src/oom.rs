//! The OOM watcher: one fd per container, watched by the I/O loop ([`crate::ioloop`]), and
//! reports of OOM kills (the shim publishes them as `TaskOOM`).
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
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use crate::cgroup::Cgroup;
use crate::ioloop::{Command, IoLoop};

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
    /// The I/O loop's key for the fd.
    key: u64,
    cgroup: Cgroup,
    reported: u64,
    /// v1: `memory.oom_control`, kept open for the eventfd registration's lifetime.
    _control: Option<File>,
}

/// The watcher shared by the service.
pub struct OomWatcher {
    watches: Mutex<HashMap<String, Watch>>,
    io: Arc<IoLoop>,
    on_oom: OnOom,
}

impl std::fmt::Debug for OomWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OomWatcher")
    }
}

impl OomWatcher {
    /// A watcher whose fds the I/O loop `io` polls.
    pub fn new(on_oom: OnOom, io: Arc<IoLoop>) -> Arc<OomWatcher> {
        Arc::new(OomWatcher {
            watches: Mutex::new(HashMap::new()),
            io,
            on_oom,
        })
    }

    /// Watch `cgroup` for container `id`.
    pub fn add(self: &Arc<Self>, id: &str, cgroup: Cgroup) -> Result<(), OomError> {
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
        let key = self.io.next_id();
        if let Ok(mut w) = self.watches.lock() {
            w.insert(
                id.to_string(),
                Watch {
                    key,
                    cgroup,
                    reported,
                    _control: control,
                },
            );
        }
        let watcher: Weak<OomWatcher> = Arc::downgrade(self);
        let id = id.to_string();
        self.io.send(Command::Watch {
            key,
            fd,
            on_ready: Box::new(move || {
                if let Some(w) = watcher.upgrade() {
                    w.check(&id);
                }
            }),
        });
        Ok(())
    }

    /// Stop watching container `id`.
    pub fn remove(&self, id: &str) {
        let key = self
            .watches
            .lock()
            .ok()
            .and_then(|mut w| w.remove(id))
            .map(|w| w.key);
        if let Some(key) = key {
            self.io.send(Command::Unwatch(key));
        }
    }

    /// Report an OOM kill of `id` if its OOM-kill counter rose since the last report. The report
    /// is made under the lock, so two callers never report the same kill.
    pub fn check(&self, id: &str) {
        let Ok(mut w) = self.watches.lock() else {
            return;
        };
        let Some(watch) = w.get_mut(id) else {
            return;
        };
        let now = watch.cgroup.oom_kills();
        if now > watch.reported {
            watch.reported = now;
            (self.on_oom)(id);
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
        let io = IoLoop::start(None).unwrap();
        let watcher = OomWatcher::new(
            Box::new(move |id| s2.lock().unwrap().push(id.to_string())),
            io,
        );
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
