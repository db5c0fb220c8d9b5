//! `skiff exec`: a new process inside a running container. The parent
//! opens the init's namespaces, clones a child straight into the
//! container's pid namespace and cgroup, and the child joins the other
//! namespaces, becomes the configured user and execs.
//!
//! The protocol over the channel:
//!
//! | from   | message             | when                                            |
//! |--------|---------------------|-------------------------------------------------|
//! | parent | `Go`                | the child is in the container's cgroup          |
//! | child  | `SeccompFd { fd }`  | a notify profile's filter is in (see `channel`) |
//! | parent | `SeccompDone`       | the seccomp agent has the descriptor            |
//! | child  | `Error { message }` | a step failed; the child exits                  |
//! | child  | (EOF)               | execve succeeded: the close-on-exec end closed  |

use super::channel::{Channel, ChannelError, Msg};
use super::init::{self, InitError};
use super::parent::{clone_child, forward_listener, init_error_or, CreateError};
use crate::namespaces::{self, NsKind};
use crate::plan::ProcessPlan;
use crate::seccomp::SeccompPlan;
use crate::state::Container;
use crate::sys::{self, AsFdBorrowed};
use crate::tty;
use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What to run in the container.
pub struct ExecRequest<'a> {
    /// The locked container; the lock is released before the clone (see
    /// `spawn`).
    pub container: Container,
    pub process: &'a ProcessPlan,
    pub seccomp: Option<&'a SeccompPlan>,
    /// A connected console socket when the process has a terminal.
    pub console: Option<OwnedFd>,
    pub preserve_fds: u32,
    /// The cgroup directories to join instead of the container's
    /// (`exec --cgroup`), in the record's layout.
    pub cgroup_dirs: Option<Vec<PathBuf>>,
    /// The process's stdio pipes (in the foreground without a terminal).
    pub stdio: Option<crate::stdio::Theirs>,
    /// Clone the process with `CLONE_PARENT`, as a sibling of the caller
    /// (the shim serving an exec from a child it forked: the shim, the
    /// subreaper, is then its parent).
    pub sibling: bool,
}

/// The order in which an exec'd process enters the container's namespaces
/// (pid is entered by the parent around the clone).
const KINDS: [NsKind; 8] = [
    NsKind::User,
    NsKind::Pid,
    NsKind::Time,
    NsKind::Ipc,
    NsKind::Uts,
    NsKind::Net,
    NsKind::Cgroup,
    NsKind::Mount,
];

fn same_ns(a: &OwnedFd, b: &Path) -> bool {
    let Ok(sa) = sys::fstat(a.as_fd_borrowed()) else {
        return false;
    };
    std::fs::metadata(b).is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.ino() == sa.st_ino && m.dev() == sa.st_dev
    })
}

/// Starts the process; returns its pid once it has exec'd.
pub fn spawn(req: ExecRequest<'_>) -> Result<libc::pid_t, CreateError> {
    let init_pid = req.container.record.pid;
    let mut joins = Vec::new();
    let mut pid_join = None;
    for kind in KINDS {
        let path = PathBuf::from(format!("/proc/{init_pid}/ns/{}", kind.name()));
        let fd = match namespaces::open(kind, &path) {
            Ok(fd) => fd,
            // A namespace kind the kernel lacks (time on old kernels).
            Err(_) if kind == NsKind::Time => continue,
            Err(e) => return Err(e.into()),
        };
        if same_ns(&fd, &Path::new("/proc/self/ns").join(kind.name())) {
            continue;
        }
        if kind == NsKind::Pid {
            pid_join = Some((path, fd));
        } else {
            joins.push((kind, path, fd));
        }
    }
    // The namespaces were opened by pid: make sure it was still our init
    // (not a reused pid) when they were.
    if !req.container.init_alive() {
        return Err(CreateError::InitDied);
    }
    let record = &req.container.record;
    // The container's state for a seccomp agent, as runc sends it.
    let state = serde_json::to_value(record.oci_state(req.container.status()))
        .map_err(|e| CreateError::Init(format!("state JSON: {e}")))?;
    let cg = match &req.cgroup_dirs {
        Some(dirs) => crate::cgroups::Manager::from_record(
            &record.cgroup_mode,
            dirs,
            &record.cgroup_controllers,
        ),
        None => record.cgroup(),
    };
    // Into the cgroup without a migration by pid where possible
    // (`cgroups::Entry`).
    let mut entry = cg.entry();
    let cgroup_tasks = entry.take_self_move();
    // The namespaces and the cgroup are open: release the container's lock
    // before the clone. A child inherits the lock's open file description,
    // and in a paused container it is frozen before it could close it,
    // which would block resume, kill and delete; a delete racing with us
    // now makes the exec fail, which is the right outcome.
    drop(req.container);
    // execCPUAffinity.initial is for the runtime's side, before the cgroup
    // is joined: set on ourselves, the child inherits it.
    if let Some(mask) = &req.process.exec_affinity.initial {
        crate::numa::set_affinity(mask, "sched_setaffinity (process.execCPUAffinity.initial)")?;
    }
    let (parent_end, child_end) = Channel::pair()?;
    let process = req.process;
    let seccomp = req.seccomp;
    let console = req.console;
    let preserve_fds = req.preserve_fds;
    let stdio = req.stdio;
    let flags = if req.sibling {
        libc::CLONE_PARENT as u64
    } else {
        0
    };
    let (pid, cloned_into) = clone_child(
        flags,
        pid_join.as_ref().map(|(p, fd)| (p.as_path(), fd)),
        entry.clone_fd(),
        &[parent_end.as_raw_fd()],
        move || {
            let r = crate::cgroups::move_self(cgroup_tasks)
                .map_err(InitError::from)
                .and_then(|()| init::take_stdio(stdio.as_ref()))
                .and_then(|()| child(&child_end, &joins, console, process, seccomp, preserve_fds));
            init::report_and_exit(&child_end, r)
        },
    )?;
    let mut guard = Reap {
        pid,
        armed: true,
        sibling: req.sibling,
    };
    entry.finish(pid, cloned_into)?;
    parent_end
        .send(&Msg::Go {
            state: String::new(),
            created_state: String::new(),
        })
        .map_err(|e| init_error_or(&parent_end, e.into()))?;

    loop {
        match parent_end.recv() {
            Err(ChannelError::Closed) => break,
            Ok(Msg::SeccompFd { fd }) => {
                let listener = seccomp.and_then(|s| s.listener.as_ref());
                forward_listener(&parent_end, listener, pid, fd, state.clone())?;
            }
            Ok(Msg::Error { message }) => return Err(CreateError::Init(message)),
            Ok(other) => {
                return Err(CreateError::Init(format!(
                    "unexpected message from exec: {other:?}"
                )))
            }
            Err(e) => return Err(e.into()),
        }
    }
    guard.armed = false;
    Ok(pid)
}

/// Kills and reaps the child unless disarmed. A sibling is left alone: our
/// parent may reap it at any moment, after which its pid could be another
/// process's; it ends itself when our end of the channel closes (it waits
/// for `Go`, or for `SeccompDone`, or reported its own failure).
struct Reap {
    pid: libc::pid_t,
    armed: bool,
    sibling: bool,
}

impl Drop for Reap {
    fn drop(&mut self) {
        if self.armed && !self.sibling {
            // SAFETY: our own child, not reaped by anyone else.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The child's steps, in order.
fn child(
    ch: &Channel,
    joins: &[(NsKind, PathBuf, OwnedFd)],
    console: Option<OwnedFd>,
    process: &ProcessPlan,
    seccomp: Option<&SeccompPlan>,
    preserve_fds: u32,
) -> Result<Infallible, InitError> {
    // Signals blocked or ignored by our caller must not reach the process.
    init::reset_signals()?;
    // Non-dumpable from the start: we become visible in the container's
    // pid namespace while still the runtime's image (CVE-2019-5736).
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).map_err(init::sys_err("prctl(PR_SET_DUMPABLE)"))?;
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
        .map_err(init::sys_err("prctl(PR_SET_PDEATHSIG)"))?;
    // Wait until the parent has moved us into the container's cgroup.
    match ch.recv()? {
        Msg::Go { .. } => {}
        got => {
            return Err(InitError::Protocol {
                expected: "Go",
                got,
            })
        }
    }
    // In the container's cgroup now (whose cpuset may have reset our
    // affinity): execCPUAffinity.final is the process's.
    if let Some(mask) = &process.exec_affinity.last {
        crate::numa::set_affinity(mask, "sched_setaffinity (process.execCPUAffinity.final)")?;
    }
    // User namespace first (it grants the rights for the rest), mount last
    // (it also moves our root and cwd into the container).
    for (kind, path, fd) in joins {
        namespaces::join(*kind, path, fd)?;
    }
    if let Some(c) = &console {
        // A terminal needs a session of its own to be controlling.
        // SAFETY: setsid has no memory-safety preconditions.
        if unsafe { libc::setsid() } < 0 {
            return Err(init::sys_err("setsid")(std::io::Error::last_os_error()));
        }
        tty::setup(c.as_fd_borrowed(), process.console_size, false)?;
    }
    drop(console);
    let prepared = init::become_process(process, seccomp, preserve_fds)?;
    sys::prctl(libc::PR_SET_PDEATHSIG, 0, 0).map_err(init::sys_err("prctl(PR_SET_PDEATHSIG)"))?;
    let listener = init::lock_down(process, seccomp, &prepared)?;
    init::hand_over_listener(ch, listener)?;
    init::exec_prepared(&prepared)
}
