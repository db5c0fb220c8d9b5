//! Stage 0 of `create`: make the state directory, the exec fifo and the
//! cgroup, clone the init into its namespaces, drive it through the channel
//! protocol, run the runtime-side hooks, and record the container.
//!
//! Anything that fails on the way undoes what was made: the init is killed
//! and reaped (its mounts die with its mount namespace, or are detached
//! when it had none of its own), the cgroup and the state directory are
//! removed.

use super::channel::{Channel, ChannelError, Msg};
use super::first_stage;
use super::init::{self, InitArgs};
use crate::cgroups::{CgroupError, CgroupManager, Manager};
use crate::hooks::{self, HookError};
use crate::namespaces::{self, NsError, NsKind};
use crate::plan::Plan;
use crate::rootfs;
use crate::state::{self, Container, NewDir, Record, Stage, StateError, Status};
use crate::sys::{self, Forked};
use crate::tty::{self, TtyError};
use std::convert::Infallible;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// `create` failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Namespace(#[from] NsError),
    /// A namespace of `linux.namespaces` that could not be opened.
    #[error("linux.namespaces: {0}")]
    SpecNamespace(NsError),
    #[error(transparent)]
    Tty(#[from] TtyError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Numa(#[from] crate::numa::NumaError),
    #[error(transparent)]
    NetDev(#[from] crate::netdev::NetDevError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error(transparent)]
    Premount(#[from] crate::premount::PremountError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    /// The init reported a failed step.
    #[error("{0}")]
    Init(String),
    #[error("container init exited before it was ready")]
    InitDied,
    #[error("--pid-file {path}: {source}")]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CreateError {
    let what = what.into();
    move |source| CreateError::Sys { what, source }
}

/// What `create` was asked for beyond the plan.
pub struct CreateRequest<'a> {
    pub root: &'a Path,
    pub console_socket: Option<&'a Path>,
    /// An already connected console socket (`run` in the foreground with a
    /// terminal keeps the other end); takes precedence over the path.
    pub console_fd: Option<OwnedFd>,
    pub pid_file: Option<&'a Path>,
    pub systemd_cgroup: bool,
    /// The init's stdio pipes (`run` in the foreground without a terminal).
    pub stdio: Option<crate::stdio::Theirs>,
}

/// Kills and reaps the init unless disarmed.
struct InitGuard {
    pid: libc::pid_t,
    armed: bool,
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: our own child; kill and reap it.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// Without a mount namespace of its own, the init builds the rootfs in the
/// host's: unless disarmed, detach what it mounted on the rootfs (the mount
/// there now, if it is not the one that was there before the clone).
struct HostRootfsGuard<'a> {
    rootfs: &'a Path,
    below: Option<u64>,
    armed: bool,
}

impl Drop for HostRootfsGuard<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(now) = rootfs::rootfs_mount_id(self.rootfs) {
            if Some(now) != self.below {
                let _ = rootfs::detach_host_rootfs(self.rootfs, now);
            }
        }
    }
}

/// Removes the cgroup, and the parents create made, unless disarmed.
struct CgroupGuard<'a> {
    cg: &'a Manager,
    parents: Vec<PathBuf>,
    armed: bool,
}

impl Drop for CgroupGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cg.remove();
            let _ = crate::cgroups::remove_parents(&self.parents);
        }
    }
}

/// The record a create writes before it makes anything: stage `creating`,
/// no init yet, and every cgroup directory it is about to make.
fn first_record(plan: &Plan, cg: &Manager) -> Record {
    let cgroup_dirs = cg.dirs();
    Record {
        id: plan.id.clone(),
        stage: Stage::Creating,
        pid: 0,
        init_start_time: 0,
        bundle: plan.bundle.clone(),
        rootfs: plan.rootfs.clone(),
        created: state::rfc3339(std::time::SystemTime::now()),
        owner: String::new(),
        annotations: plan.annotations.clone(),
        cgroup_parents: crate::cgroups::missing_ancestors(&cgroup_dirs),
        cgroup_dirs,
        cgroup_mode: cg.mode().to_string(),
        cgroup_controllers: cg.controllers(),
        private_pid: plan.namespaces.private_pid,
        host_rootfs_mount: None,
        poststart: plan.hooks.poststart.clone(),
        poststop: plan.hooks.poststop.clone(),
    }
}

/// Creates the container; on success the init is blocked on exec.fifo and
/// is our child.
///
/// Every step is recoverable if the runtime dies right after it: the
/// record (stage `creating`, under the directory's lock) names what exists
/// before it exists, and the init's pid is recorded as soon as it has one.
pub fn create(plan: &Plan, req: CreateRequest<'_>) -> Result<Container, CreateError> {
    // The cgroup's paths are worked out (not made) first, so the first
    // record names them.
    let cg = Manager::new(
        plan.cgroups_path.as_deref(),
        &plan.id,
        req.systemd_cgroup,
        &plan.annotations,
    )?;
    let dir = NewDir::make(req.root, &plan.id)?;
    let mut record = first_record(plan, &cg);
    dir.write(&record)?;
    let fifo_path = dir.dir.join(state::EXEC_FIFO);
    make_fifo(&fifo_path)?;
    // The init holds the read end (a non-blocking open needs no writer) and
    // waits for `start` to write; no path has to be reopened inside the
    // container, where a non-dumpable process cannot use /proc/self/fd
    // once it has switched to a non-root user.
    let fifo = sys::open(&fifo_path, libc::O_RDONLY | libc::O_NONBLOCK, 0)
        .map_err(sys_err("open exec fifo"))?;
    let mut cg_guard = CgroupGuard {
        cg: &cg,
        parents: record.cgroup_parents.clone(),
        armed: true,
    };
    cg.create()?;
    // Limits and the device filter are in place before the init enters the
    // cgroup, so it never runs unconstrained. A systemd scope cannot exist
    // without a process: it is made with the init in it and its limits
    // after the clone (`place`), before the init runs anything of the
    // container's.
    if !cg.made_with_init() {
        cg.set(&plan.resources)?;
    }
    let console = match req.console_fd {
        Some(fd) => Some(fd),
        None => req.console_socket.map(tty::connect).transpose()?,
    };
    let mut joins = Vec::new();
    let mut pid_join = None;
    let mut user_join = None;
    for (kind, path) in &plan.namespaces.joins {
        let fd = namespaces::open(*kind, path).map_err(CreateError::SpecNamespace)?;
        match kind {
            NsKind::Pid => pid_join = Some((path.clone(), fd)),
            // Joined by a first stage, before the new namespaces are made.
            NsKind::User => user_join = Some((path.clone(), fd)),
            _ => joins.push((*kind, path.clone(), fd)),
        }
    }
    // Bind sources the init could not reach from a user namespace.
    let trees = crate::premount::make(plan)?;
    // Declared before the init's guard, so a failed create kills the init
    // before detaching what it mounted.
    let mut rootfs_guard = HostRootfsGuard {
        rootfs: &plan.rootfs,
        below: rootfs::rootfs_mount_id(&plan.rootfs),
        armed: plan.rootfs_on_host,
    };
    let stdio = req.stdio;
    let (parent_end, init_end) = Channel::pair()?;
    // The init enters its cgroup without a migration by pid where it can
    // (see `cgroups::Entry`): the v1 `tasks` files go with it.
    let mut entry = cg.entry();
    let cgroup_tasks = entry.take_self_move();
    // The init closes our channel end (to see us die) and its copy of the
    // state lock (which would otherwise stay held until its execve).
    let close_in_init: Vec<RawFd> = std::iter::once(parent_end.as_raw_fd())
        .chain(dir.lock_fd())
        .collect();
    let init = || {
        init::run(InitArgs {
            plan,
            channel: init_end,
            fifo,
            console,
            joins,
            cgroup_tasks,
            stdio,
            trees,
        })
    };
    let pid_join = pid_join.as_ref().map(|(p, fd)| (p.as_path(), fd));
    let (pid, cloned_into) = match &user_join {
        None => clone_child(
            plan.namespaces.clone_flags,
            pid_join,
            entry.clone_fd(),
            &close_in_init,
            init,
        )?,
        Some((path, fd)) => first_stage::clone_in_user_namespace(
            plan.namespaces.clone_flags,
            (path, fd),
            pid_join,
            entry.clone_fd(),
            &close_in_init,
            init,
        )?,
    };
    let mut guard = InitGuard { pid, armed: true };
    // Recorded at once: a create that dies from here on leaves an init
    // that `delete` finds and kills (its pid checked by its start time).
    record.init_start_time = state::proc_stat(pid)
        .map(|s| s.start_time)
        .ok_or_else(|| init_error_or(&parent_end, CreateError::InitDied))?;
    record.pid = pid;
    dir.write(&record)?;
    // A new user namespace has no ids until we map them; the init waits.
    if plan.namespaces.new_user {
        write_id_maps(pid, &plan.namespaces)?;
    }
    // Lowering oom_score_adj takes CAP_SYS_RESOURCE in the host's user
    // namespace, which an init in a user namespace lacks: we set it for it
    // (which also lets it write the same value again itself).
    if plan.namespaces.new_user || user_join.is_some() {
        write_oom_score_adj(pid, plan.process.oom_score_adj)?;
    }
    // The container's network namespace exists (created by the clone, or
    // named by path): move the host's devices into it before any hook runs.
    if !plan.net_devices.is_empty() {
        let ns = plan
            .namespaces
            .joins
            .iter()
            .find(|(k, _)| *k == NsKind::Net)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| PathBuf::from(format!("/proc/{pid}/ns/net")));
        crate::netdev::move_devices(&plan.net_devices, &ns)?;
    }
    let json = |s| String::from_utf8_lossy(&record.hook_state(s)).into_owned();
    let state_json = json(Status::Creating);
    parent_end
        .send(&Msg::Go {
            state: state_json.clone(),
            created_state: json(Status::Created),
        })
        .map_err(|e| init_error_or(&parent_end, e.into()))?;
    // The init mounts its rootfs meanwhile; it runs no user code and waits
    // for CgroupPlaced before its cgroup namespace and cgroup mounts. Move
    // it by pid where neither clone3 nor the init itself could.
    cg.place(pid, &plan.resources)?;
    entry.finish(pid, cloned_into)?;
    parent_end
        .send(&Msg::CgroupPlaced)
        .map_err(|e| init_error_or(&parent_end, e.into()))?;
    drive(plan, &parent_end, &state_json, pid)?;
    if plan.rootfs_on_host {
        record.host_rootfs_mount = rootfs::rootfs_mount_id(&plan.rootfs);
    }
    // Before the record says created: a pid file that cannot be written
    // fails the create, which then leaves nothing (as runc).
    if let Some(p) = req.pid_file {
        write_pid_file(p, pid)?;
    }
    let container = dir.commit(record)?;
    guard.armed = false;
    cg_guard.armed = false;
    rootfs_guard.armed = false;
    Ok(container)
}

/// What the child reported before it died (e.g. that it could not enter
/// its cgroup), else `err`.
pub(crate) fn init_error_or(ch: &Channel, err: CreateError) -> CreateError {
    match ch.queued_error() {
        Some(message) => CreateError::Init(message),
        None => err,
    }
}

/// Follows the init through the protocol until Ready.
fn drive(plan: &Plan, ch: &Channel, state_json: &str, pid: libc::pid_t) -> Result<(), CreateError> {
    loop {
        match ch.recv() {
            Ok(Msg::RunHooks) => {
                // In the bundle, as runc (which chdirs there for create).
                let state = state_json.as_bytes();
                let run = |name, list| {
                    let stage = hooks::Stage::new(name).in_dir(&plan.bundle);
                    hooks::run_all(&stage, list, state)
                };
                let result = run("prestart", &plan.hooks.prestart)
                    .and_then(|()| run("createRuntime", &plan.hooks.create_runtime));
                if let Err(e) = result {
                    let _ = ch.send(&Msg::Error {
                        message: e.to_string(),
                    });
                    return Err(e.into());
                }
                ch.send(&Msg::HooksDone)?;
            }
            Ok(Msg::SeccompFd { fd }) => {
                let listener = plan.seccomp.as_ref().and_then(|s| s.listener.as_ref());
                let state = serde_json::from_str(state_json)
                    .map_err(|e| CreateError::Init(format!("state JSON: {e}")))?;
                forward_listener(ch, listener, pid, fd, state)?;
            }
            Ok(Msg::Ready) => return Ok(()),
            Ok(Msg::Error { message }) => return Err(CreateError::Init(message)),
            Ok(other) => {
                return Err(CreateError::Init(format!(
                    "unexpected message from init: {other:?}"
                )))
            }
            Err(ChannelError::Closed) => return Err(CreateError::InitDied),
            Err(e) => return Err(e.into()),
        }
    }
}

/// The child's seccomp notify descriptor `fd` to the agent: copied out of
/// process `pid`, sent with the process state, and the child told to go on
/// (or why it must not).
pub(crate) fn forward_listener(
    ch: &Channel,
    listener: Option<&crate::seccomp::Listener>,
    pid: libc::pid_t,
    fd: RawFd,
    state: serde_json::Value,
) -> Result<(), CreateError> {
    let sent = match listener {
        None => Err(CreateError::Init(
            "linux.seccomp: a notify descriptor without a listenerPath".into(),
        )),
        Some(l) => sys::pidfd_getfd(pid, fd)
            .map_err(sys_err("pidfd_getfd (the seccomp notify descriptor)"))
            .and_then(|copy| {
                let msg = crate::seccomp::process_state(l, pid, state);
                crate::seccomp::send_to_agent(l, &msg, std::os::fd::AsFd::as_fd(&copy))
                    .map_err(|e| CreateError::Init(e.to_string()))
            }),
    };
    match sent {
        Ok(()) => Ok(ch.send(&Msg::SeccompDone)?),
        Err(e) => {
            let _ = ch.send(&Msg::Error {
                message: e.to_string(),
            });
            Err(e)
        }
    }
}

/// Clones a child into new namespaces `flags` that runs `child` (which
/// execs or exits). A pid namespace to join is entered around the clone
/// (setns of a pid namespace only affects children) and left right after;
/// `close_in_child` are descriptors the child closes first: the parent's
/// end of the channel (so the child sees the parent die) and any lock. Returns the child's pid and whether it
/// was cloned into `cg_fd`'s cgroup.
// `child()` never returns, which the lint sees as unreachable code.
#[allow(unreachable_code)]
pub(crate) fn clone_child(
    flags: u64,
    pid_join: Option<(&Path, &OwnedFd)>,
    cg_fd: Option<std::os::fd::BorrowedFd<'_>>,
    close_in_child: &[RawFd],
    child: impl FnOnce() -> Infallible,
) -> Result<(libc::pid_t, bool), CreateError> {
    let restore = match pid_join {
        Some((path, fd)) => {
            let own = namespaces::open(NsKind::Pid, Path::new("/proc/self/ns/pid"))?;
            namespaces::join(NsKind::Pid, path, fd)?;
            Some(own)
        }
        None => None,
    };
    let mut cloned_into = cg_fd.is_some();
    let forked = match sys::clone_fork(flags, cg_fd) {
        // Some hosts refuse CLONE_INTO_CGROUP for a directory (e.g. a
        // threaded one): the caller falls back to writing cgroup.procs.
        Err(e) if cg_fd.is_some() && e.raw_os_error() != Some(libc::ENOMEM) => {
            cloned_into = false;
            sys::clone_fork(flags, None)
        }
        r => r,
    };
    // Only the parent goes back to its own pid namespace for the processes
    // it spawns later (hooks); the child must stay where it was born.
    if !matches!(forked, Ok(Forked::Child)) {
        if let Some(own) = restore {
            namespaces::join(NsKind::Pid, Path::new("/proc/self/ns/pid"), &own)?;
        }
    }
    match forked.map_err(sys_err("clone"))? {
        Forked::Child => {
            for fd in close_in_child {
                // SAFETY: closing descriptors the child does not use; the
                // parent's copies stay open.
                unsafe { libc::close(*fd) };
            }
            match child() {}
        }
        Forked::Parent(pid) => Ok((pid, cloned_into)),
    }
}

/// Writes uid_map and gid_map of the init's new user namespace. We are
/// privileged in the parent namespace, so setgroups may stay allowed.
fn write_id_maps(pid: libc::pid_t, ns: &crate::plan::NamespacePlan) -> Result<(), CreateError> {
    let text = |maps: &[crate::plan::IdMap]| {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container, m.host, m.size))
            .collect::<String>()
    };
    for (file, maps) in [("uid_map", &ns.uid_mappings), ("gid_map", &ns.gid_mappings)] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text(maps)).map_err(sys_err(format!(
            "linux.{}Mappings: write {path}",
            &file[..3]
        )))?;
    }
    Ok(())
}

/// Writes `process.oomScoreAdj` into the init's `oom_score_adj`.
fn write_oom_score_adj(pid: libc::pid_t, value: Option<i32>) -> Result<(), CreateError> {
    let Some(v) = value else { return Ok(()) };
    let path = format!("/proc/{pid}/oom_score_adj");
    std::fs::write(&path, v.to_string())
        .map_err(sys_err(format!("process.oomScoreAdj: write {path}")))
}

fn make_fifo(path: &Path) -> Result<(), CreateError> {
    let c = sys::cstr(path).map_err(sys_err("exec fifo path"))?;
    // SAFETY: valid C string.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o622) } < 0 {
        return Err(sys_err(format!("mkfifo {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Writes the pid file atomically (temp file + rename), as runc does.
pub fn write_pid_file(path: &Path, pid: libc::pid_t) -> Result<(), CreateError> {
    let err = |source| CreateError::PidFile {
        path: path.to_path_buf(),
        source,
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, pid.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}
