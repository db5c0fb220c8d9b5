//! The container's init: the child the parent cloned into the new
//! namespaces. It applies the plan step by step, tells the parent it is
//! ready, blocks on exec.fifo until `skiff start`, and execs the user's
//! process. It never returns: it execs or exits.

use super::channel::{Channel, ChannelError, Msg};
use crate::hooks::{self, HookError};
use crate::namespaces::{self, NsError, NsKind};
use crate::plan::{Plan, ProcessPlan};
use crate::rootfs::{self, RootfsError};
use crate::seccomp::{self, SeccompError, SeccompPlan};
use crate::sys::{self, AsFdBorrowed};
use crate::tty::{self, TtyError};
use crate::user::{self, UserError};
use caps::CapsHashSet;
use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A step of the init failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("init: expected {expected} from the parent, got {got:?}")]
    Protocol { expected: &'static str, got: Msg },
    #[error("init: parent: {0}")]
    Parent(String),
    #[error(transparent)]
    Namespace(#[from] NsError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Tty(#[from] TtyError),
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Caps(#[from] crate::capabilities::CapError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Numa(#[from] crate::numa::NumaError),
    #[error(transparent)]
    Lsm(#[from] crate::lsm::LsmError),
    #[error("linux.sysctl: {0}")]
    Procfs(#[from] crate::procfs::ProcfsError),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        source: std::io::Error,
    },
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotFound(String),
    #[error("process.cwd {path}: {source}")]
    Cwd {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn sys_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
    let what = what.into();
    move |source| InitError::Sys { what, source }
}

/// What the parent hands the init across the clone.
pub struct InitArgs<'a> {
    pub plan: &'a Plan,
    pub channel: Channel,
    /// The read end of exec.fifo (non-blocking), opened by the parent: the
    /// state directory is not visible from inside the container.
    pub fifo: OwnedFd,
    /// The connected console socket when the process has a terminal.
    pub console: Option<OwnedFd>,
    /// Namespaces to join, opened on the host before the clone.
    pub joins: Vec<(NsKind, PathBuf, OwnedFd)>,
    /// The v1 `tasks` files to write ourselves into ([`crate::cgroups::Entry`]).
    pub cgroup_tasks: Vec<(PathBuf, OwnedFd)>,
    /// `run` in the foreground without a terminal: the pipes that become
    /// our stdio ([`crate::stdio`]); else the caller's stay.
    pub stdio: Option<crate::stdio::Theirs>,
    /// Bind mounts the parent made for us ([`crate::premount`]).
    pub trees: crate::premount::Trees,
}

/// Runs the init; reports a failure to the parent and exits.
pub fn run(args: InitArgs<'_>) -> ! {
    let mut args = args;
    let tasks = std::mem::take(&mut args.cgroup_tasks);
    let r = steps(&args, tasks);
    report_and_exit(&args.channel, r)
}

/// Reports a failed step on the channel (or stderr once the channel is
/// gone) and exits; a child process never returns into the runtime.
pub(crate) fn report_and_exit(ch: &Channel, r: Result<Infallible, InitError>) -> ! {
    let err = match r {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let message = err.to_string();
    if ch
        .send(&Msg::Error {
            message: message.clone(),
        })
        .is_err()
    {
        // After Ready the channel is closed: the caller's stderr is ours.
        eprintln!("skiff init: {}", crate::log::go_style(&message));
    }
    // SAFETY: exit without running the parent's atexit handlers or
    // destructors, which belong to the runtime process we were cloned from.
    unsafe { libc::_exit(1) }
}

/// The init's steps, in order; each comment says why the step is where it
/// is.
fn steps(a: &InitArgs<'_>, cgroup_tasks: Vec<(PathBuf, OwnedFd)>) -> Result<Infallible, InitError> {
    let plan = a.plan;
    // Into the cgroup before anything else, so everything the init does is
    // accounted and limited there (the parent set the limits already).
    crate::cgroups::move_self(cgroup_tasks)?;
    // The process's stdio before anything could write to the caller's:
    // `run`'s pipes, which it copies to and from its own.
    take_stdio(a.stdio.as_ref())?;
    // Signals blocked or ignored by our caller must not reach the
    // container; first, so nothing we start (hooks) inherits them either.
    reset_signals()?;
    // Non-dumpable first: until execve replaces this image, no process in
    // the container can ptrace it or open /proc/1/exe (the runtime binary,
    // CVE-2019-5736).
    sys::prctl(libc::PR_SET_DUMPABLE, 0, 0).map_err(sys_err("prctl(PR_SET_DUMPABLE)"))?;
    // Die with the parent while it is still setting us up; cleared before
    // Ready, when the parent is allowed to exit.
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
        .map_err(sys_err("prctl(PR_SET_PDEATHSIG)"))?;
    // Wait for the parent to write our id maps (a new user namespace) and
    // hand over the state for the hooks.
    let (state, created_state) = match a.channel.recv()? {
        Msg::Go {
            state,
            created_state,
        } => (state, created_state),
        Msg::Error { message } => return Err(InitError::Parent(message)),
        got => {
            return Err(InitError::Protocol {
                expected: "Go",
                got,
            })
        }
    };
    // Join existing namespaces (user first, mount last) before creating
    // anything that should live in them.
    for (kind, path, fd) in &a.joins {
        namespaces::join(*kind, path, fd)?;
    }
    // A time namespace's offsets must be set before any process is in it:
    // unshare now (only our children, and our execve, enter it), while we
    // still own our /proc/self files (before the user namespace's ids).
    if plan.namespaces.unshare_time {
        namespaces::unshare(NsKind::Time)?;
        let text: String = plan
            .namespaces
            .time_offsets
            .iter()
            .map(|(clock, s, ns)| format!("{clock} {s} {ns}\n"))
            .collect();
        if !text.is_empty() {
            std::fs::write("/proc/self/timens_offsets", text).map_err(sys_err(
                "linux.timeOffsets: write /proc/self/timens_offsets",
            ))?;
        }
    }
    // In a user namespace (new, or joined by the first stage) we still
    // carry the host's ids, unmapped there: become the namespace's root (as
    // runc does) before anything is created on the filesystems mounted
    // inside it. Mount points missing
    // from the rootfs must then be creatable by the mapped root.
    if plan.namespaces.new_user || joins_user(plan) {
        become_ns_root(plan)?;
    }
    // Mounts and /dev are made while the host's paths (bind sources) are
    // still reachable. Where the parent still has to move us into a cgroup
    // by pid (a fallback, see `cgroups::Entry`), that overlaps with these
    // mounts; we wait for it only before the cgroup namespace and cgroup
    // mounts. Nothing below runs user code.
    let root = rootfs::prepare(plan, &a.trees, &mut || {
        match a.channel.recv()? {
            Msg::CgroupPlaced => {}
            Msg::Error { message } => return Err(InitError::Parent(message)),
            got => {
                return Err(InitError::Protocol {
                    expected: "CgroupPlaced",
                    got,
                })
            }
        }
        // Our cgroups as the host names them, for the cgroup mounts that
        // bind them (a cgroup namespace would show its root as `/`).
        let own = sys::read_text("/proc/self/cgroup").unwrap_or_default();
        // The cgroup namespace only now, after the cgroup move, so its
        // root is the container's cgroup.
        if plan.namespaces.unshare_cgroup {
            namespaces::unshare(NsKind::Cgroup)?;
        }
        Ok(own)
    })?;
    // createRuntime/prestart hooks run in the runtime's namespaces: ask the
    // parent, which has them, and wait.
    if !plan.hooks.prestart.is_empty() || !plan.hooks.create_runtime.is_empty() {
        a.channel.send(&Msg::RunHooks)?;
        match a.channel.recv()? {
            Msg::HooksDone => {}
            Msg::Error { message } => return Err(InitError::Parent(message)),
            got => {
                return Err(InitError::Protocol {
                    expected: "HooksDone",
                    got,
                })
            }
        }
    }
    // createContainer hooks: in the container's namespaces, before
    // pivot_root (their paths are the runtime's); as runc, in the rootfs
    // and with process.env when they name no env.
    let env = hooks::env_entries(&plan.process.env);
    let stage = hooks::Stage::new("createContainer")
        .in_dir(&plan.rootfs)
        .inheriting(&env);
    hooks::run_all(&stage, &plan.hooks.create_container, state.as_bytes())?;
    rootfs::pivot(plan, &root)?;
    drop(root);
    // A missing cwd is created as runc does: after pivot_root, before the
    // read-only remounts of `finalize` (so even in a read-only rootfs).
    create_cwd(&plan.process.cwd)?;
    // sysctls are written into the container's namespaces, before
    // /proc/sys becomes read-only, through a verified procfs handle: never a
    // path of the container's /proc (CVE-2025-52881).
    crate::procfs::write_sysctls(&plan.sysctl)?;
    // Masks and read-only remounts after pivot_root: they act on the
    // container's final tree, and /dev/null is the container's own.
    rootfs::finalize(plan)?;
    set_names(plan)?;
    // A new session, so a terminal can become the controlling one.
    // SAFETY: setsid has no memory-safety preconditions.
    if unsafe { libc::setsid() } < 0 {
        return Err(sys_err("setsid")(std::io::Error::last_os_error()));
    }
    if let Some(console) = &a.console {
        tty::setup(console.as_fd_borrowed(), plan.process.console_size, true)?;
    }
    if !plan.options.no_new_keyring {
        // The keyring is created with the process's SELinux label.
        crate::lsm::set_keyring_label(&plan.process.labels)?;
        join_session_keyring(&plan.id)?;
    }
    // The memory policy is the process's: set after the runtime's own setup
    // (so that is never constrained by it), kept across execve.
    if let Some(p) = &plan.mem_policy {
        crate::numa::apply_mem_policy(p)?;
    }
    let prepared = become_process(
        &plan.process,
        plan.seccomp.as_ref(),
        plan.options.preserve_fds,
    )?;
    // A profile with SCMP_ACT_NOTIFY: its listener must reach the agent
    // before `create` returns, as runc does it, so the filter goes in now,
    // while the parent is there to send the descriptor on.
    let notify = plan.seccomp.as_ref().is_some_and(|s| s.notifies());
    if notify {
        let listener = lock_down(&plan.process, plan.seccomp.as_ref(), &prepared)?;
        hand_over_listener(&a.channel, listener)?;
    }
    // The parent may exit once it has Ready; we must not die with it.
    sys::prctl(libc::PR_SET_PDEATHSIG, 0, 0).map_err(sys_err("prctl(PR_SET_PDEATHSIG)"))?;
    a.channel.send(&Msg::Ready)?;
    // Block until `skiff start` writes into the fifo.
    wait_for_start(&a.fifo)?;
    // Otherwise the filter after the wait, which it would otherwise have to
    // allow.
    if !notify {
        lock_down(&plan.process, plan.seccomp.as_ref(), &prepared)?;
    }
    // startContainer hooks under the process's filter and identity, as
    // runc runs them: in process.cwd (entered above) and, when they name no
    // env, with the environment the process gets.
    let env = hooks::env_entries(
        &prepared
            .envp
            .iter()
            .map(|e| e.as_bytes())
            .collect::<Vec<_>>(),
    );
    let stage = hooks::Stage::new("startContainer").inheriting(&env);
    hooks::run_all(
        &stage,
        &plan.hooks.start_container,
        created_state.as_bytes(),
    )?;
    exec_prepared(&prepared)
}

/// The user's program, resolved and encoded before privileges go, and
/// what [`lock_down`] still has to do.
pub struct Prepared {
    exe: PathBuf,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// The process's capability sets wait for the filter: CAP_SYS_ADMIN
    /// stays effective to load it without no_new_privs; this is the
    /// effective set to restore when the spec names none.
    caps_after_filter: Option<CapsHashSet>,
}

/// The steps shared by the container's init and `exec`, from limits to the
/// cwd; they run as root inside the container's namespaces, in this order.
/// Everything the runtime itself needs happens here, before the seccomp
/// filter ([`lock_down`]), so a profile only has to allow what runc needs
/// after its own filter.
pub fn become_process(
    p: &ProcessPlan,
    seccomp: Option<&SeccompPlan>,
    preserve_fds: u32,
) -> Result<Prepared, InitError> {
    // oom_score_adj and rlimits while we are still root with every
    // capability.
    user::set_oom_score_adj(p.oom_score_adj)?;
    user::set_rlimits(&p.rlimits)?;
    user::set_persona_and_scheduling(p)?;
    // Resolve the program now, so a missing binary fails `create`, not
    // `start`.
    let mut prepared = Prepared {
        exe: find_executable(&p.args[0], &p.env)?,
        argv: cstrings(&p.args)?,
        // HOME from the container's /etc/passwd when the spec sets none,
        // read as root before the identity changes, as runc does.
        envp: cstrings(&user::with_home(&p.env, p.uid))?,
        caps_after_filter: None,
    };
    // The LSM labels for the execve, once the rootfs is final and the
    // runtime reads nothing more from it, while still root (as runc).
    crate::lsm::set_exec_labels(&p.labels)?;
    // Bounding set while CAP_SETPCAP is still ours; then the identity
    // change, keeping the permitted set across it.
    p.caps.apply_bounding()?;
    user::keep_caps(true)?;
    user::switch_user(p)?;
    // chdir as the user, so the user's permissions apply to the cwd; the
    // path is resolved inside the container's root and never through a
    // magic link such as /proc/self/fd/N, which could name a directory of
    // the host still open here (CVE-2024-21626).
    enter_cwd(&p.cwd)?;
    user::keep_caps(false)?;
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN (runc
    // loads it before dropping capabilities): keep it effective, and set
    // the process's sets right after the filter.
    if seccomp.is_some() && !p.no_new_privileges {
        prepared.caps_after_filter = Some(crate::capabilities::raise_sys_admin()?);
    } else {
        p.caps.apply_process_sets()?;
    }
    user::set_umask(p.umask);
    // Nothing of the runtime's may cross execve: every descriptor above the
    // preserved ones becomes close-on-exec.
    sys::cloexec_from(3 + preserve_fds as i32).map_err(sys_err("close descriptors"))?;
    Ok(prepared)
}

/// no_new_privs and the seccomp filter, as late as possible so that few
/// syscalls run under the filter: after it only the capability sets (when
/// they waited for it), the startContainer hooks and execve, all of which
/// runc also runs under its filter.
/// Returns the notify descriptor of a profile with `SCMP_ACT_NOTIFY`.
pub fn lock_down(
    p: &ProcessPlan,
    seccomp: Option<&SeccompPlan>,
    prepared: &Prepared,
) -> Result<Option<OwnedFd>, InitError> {
    if p.no_new_privileges {
        user::no_new_privs()?;
    }
    let listener = match seccomp {
        Some(s) => seccomp::install(s)?,
        None => None,
    };
    if let Some(effective) = &prepared.caps_after_filter {
        p.caps.apply_process_sets()?;
        if p.caps.effective.is_none() {
            crate::capabilities::set_effective(effective)?;
        }
    }
    Ok(listener)
}

/// Tells the parent the notify descriptor's number (it copies the
/// descriptor with `pidfd_getfd` and sends it to the agent, as runc does)
/// and waits until it has; then closes ours, so that nothing of it crosses
/// execve.
pub fn hand_over_listener(ch: &Channel, listener: Option<OwnedFd>) -> Result<(), InitError> {
    let Some(fd) = listener else {
        return Ok(());
    };
    ch.send_by_write(&Msg::SeccompFd { fd: fd.as_raw_fd() })?;
    match ch.recv()? {
        Msg::SeccompDone => Ok(()),
        Msg::Error { message } => Err(InitError::Parent(message)),
        got => Err(InitError::Protocol {
            expected: "SeccompDone",
            got,
        }),
    }
}

/// Replaces this image with the user's program.
pub fn exec_prepared(prepared: &Prepared) -> Result<Infallible, InitError> {
    exec(&prepared.exe, &prepared.argv, &prepared.envp)
}

/// Becomes root of a new user namespace (uid, then gid, as runc's nsexec
/// does), unsharing the IPC namespace in between (`unshare_ipc`).
fn become_ns_root(plan: &Plan) -> Result<(), InitError> {
    let ns = &plan.namespaces;
    // A joined namespace's maps are its own (as runc's nsexec, just try).
    let joined = joins_user(plan);
    let mapped = |m: &[crate::plan::IdMap]| joined || m.iter().any(|e| e.container == 0);
    if mapped(&ns.uid_mappings) {
        // SAFETY: plain syscall.
        if unsafe { libc::setresuid(0, 0, 0) } < 0 {
            return Err(sys_err("setresuid(0) in the user namespace")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    // The IPC namespace between the two, where runc's nsexec makes it: its
    // mqueue root takes our fsuid (the container's root) and fsgid (the
    // host's, unmapped there), as runc's /dev/mqueue shows them.
    if ns.unshare_ipc {
        namespaces::unshare(NsKind::Ipc)?;
    }
    if mapped(&ns.gid_mappings) {
        // SAFETY: plain syscall.
        if unsafe { libc::setresgid(0, 0, 0) } < 0 {
            return Err(sys_err("setresgid(0) in the user namespace")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Whether the init was cloned inside a user namespace joined by path
/// (`process::first_stage`).
fn joins_user(plan: &Plan) -> bool {
    plan.namespaces
        .joins
        .iter()
        .any(|(k, _)| *k == NsKind::User)
}

/// Creates `cwd` and its missing parents (root-owned, 0755), inside the
/// container's root.
fn create_cwd(cwd: &Path) -> Result<(), InitError> {
    let err = |source| InitError::Cwd {
        path: cwd.to_path_buf(),
        source,
    };
    let root = sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0).map_err(err)?;
    sys::mkdir_all_in_root(root.as_fd_borrowed(), cwd, 0o755)
        .map(drop)
        .map_err(err)
}

fn enter_cwd(cwd: &Path) -> Result<(), InitError> {
    let err = |source| InitError::Cwd {
        path: cwd.to_path_buf(),
        source,
    };
    let root = sys::open(Path::new("/"), libc::O_PATH | libc::O_DIRECTORY, 0).map_err(err)?;
    let dir = sys::openat2(
        root.as_fd_borrowed(),
        &sys::relative(cwd),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        sys::IN_ROOT,
    )
    .map_err(err)?;
    sys::fchdir(dir.as_fd_borrowed()).map_err(err)
}

fn set_names(plan: &Plan) -> Result<(), InitError> {
    if let Some(h) = &plan.hostname {
        // SAFETY: valid buffer and length.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } < 0 {
            return Err(sys_err(format!("hostname {h:?}"))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    if let Some(d) = &plan.domainname {
        // SAFETY: valid buffer and length.
        if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } < 0 {
            return Err(sys_err(format!("domainname {d:?}"))(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// A fresh session keyring, so containers do not share the host's keys.
fn join_session_keyring(id: &str) -> Result<(), InitError> {
    let name = CString::new(format!("_ses.{id}"))
        .map_err(|_| sys_err("keyring")(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a valid C string.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // Kernels without keyring support, or where it is not allowed, are
        // not an error (runc ignores ENOSYS likewise).
        if !matches!(e.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EACCES)) {
            return Err(sys_err("join session keyring")(e));
        }
    }
    Ok(())
}

fn wait_for_start(fifo: &OwnedFd) -> Result<(), InitError> {
    let mut pfd = libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd; no timeout: `delete` kills us if the
        // container is never started.
        let r = unsafe { libc::poll(&mut pfd, 1, -1) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(sys_err("wait on exec fifo")(e));
        }
        let mut b = [0u8; 1];
        // SAFETY: one-byte buffer.
        let n = unsafe { libc::read(fifo.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        match n {
            1 => return Ok(()),
            0 => {
                return Err(sys_err("exec fifo")(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed without a start",
                )))
            }
            _ => {
                let e = std::io::Error::last_os_error();
                if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                    return Err(sys_err("read exec fifo")(e));
                }
            }
        }
    }
}

fn cstrings(v: &[String]) -> Result<Vec<CString>, InitError> {
    v.iter()
        .map(|s| sys::cstr(s).map_err(sys_err(format!("argument {s:?}"))))
        .collect()
}

/// `execvp`'s lookup done by hand with the container's own PATH.
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, InitError> {
    if name.starts_with('/') {
        // As runc's LookPath: a missing absolute path fails `create` too. (A relative one names
        // a file under the cwd, not entered yet: execve finds out.)
        check_executable(name)?;
        return Ok(PathBuf::from(name));
    }
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    // No PATH: nothing to search, as Go's exec.LookPath in runc.
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(name);
        let Ok(c) = sys::cstr(&p) else { continue };
        // SAFETY: valid C string.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 && !p.is_dir() {
            return Ok(p);
        }
    }
    Err(InitError::NotFound(name.to_string()))
}

/// `name` is a file with an execute bit; the errors read as runc's (Go's
/// `exec.LookPath`: `stat` fails, or EACCES for a directory or a file
/// without one).
fn check_executable(name: &str) -> Result<(), InitError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(name).map_err(sys_err(format!("exec: {name:?}: stat {name}")))?;
    if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
        return Err(sys_err(format!("exec: {name:?}"))(
            std::io::Error::from_raw_os_error(libc::EACCES),
        ));
    }
    Ok(())
}

fn exec(exe: &Path, argv: &[CString], envp: &[CString]) -> Result<Infallible, InitError> {
    let path = sys::cstr(exe).map_err(sys_err("exec"))?;
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the
    // call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    Err(sys_err(format!("exec {}", exe.display()))(
        std::io::Error::last_os_error(),
    ))
}

/// Gives the container's process the signal state of a fresh one: every
/// signal unblocked (a mask blocked by the runtime's caller must not be
/// inherited) and every disposition back to the default. An ignored signal
/// survives execve: one our caller ignores (a containerd under `nohup`, a
/// shell's `trap '' INT`) would stay ignored in the container, and Rust's
/// runtime ignores SIGPIPE (`yes | head` would spin). runc resets them all
/// but 32, which its Go runtime leaves alone; a caller spawned with
/// posix_spawn(3) from a threaded program gets 32 and 33 ignored.
/// Makes the pipes of a foreground `run` or `exec` our fds 0-2.
pub(crate) fn take_stdio(stdio: Option<&crate::stdio::Theirs>) -> Result<(), InitError> {
    match stdio {
        Some(fds) => crate::stdio::install(fds).map_err(sys_err("stdio pipes: dup2")),
        None => Ok(()),
    }
}

pub(crate) fn reset_signals() -> Result<(), InitError> {
    // SAFETY: sigset operations on a local set, then sigprocmask.
    let r = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if r < 0 {
        return Err(sys_err("unblock signals")(std::io::Error::last_os_error()));
    }
    for sig in 1..=NSIG {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        set_default_disposition(sig)
            .map_err(sys_err(format!("reset the disposition of signal {sig}")))?;
    }
    Ok(())
}

/// The highest signal number (the last real-time signal).
const NSIG: libc::c_int = 64;

/// The kernel's `struct sigaction` (rt_sigaction(2)), which differs from
/// the C library's.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// `SIG_DFL` for `sig`, with the raw syscall: the C library refuses the
/// signals it reserves for itself (32 and 33), which a caller can still
/// have ignored.
fn set_default_disposition(sig: libc::c_int) -> std::io::Result<()> {
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: a valid kernel sigaction and its mask's size; no old action.
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            &act as *const KernelSigaction,
            std::ptr::null_mut::<KernelSigaction>(),
            std::mem::size_of::<u64>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_programs_must_exist_and_be_executable() {
        let err = find_executable("/no/such/binary", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stat /no/such/binary") && err.contains("No such file"),
            "{err}"
        );
        let err = find_executable("/", &[]).unwrap_err().to_string();
        assert!(err.contains("ermission denied"), "{err}");
        assert_eq!(
            find_executable("/bin/sh", &[]).unwrap(),
            PathBuf::from("/bin/sh")
        );
        // Relative to the cwd, which is entered later: left to execve.
        assert_eq!(find_executable("./x", &[]).unwrap(), PathBuf::from("./x"));
        let env = ["PATH=/no/such/dir:/bin".to_string()];
        assert_eq!(
            find_executable("sh", &env).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(matches!(
            find_executable("no-such-program", &env),
            Err(InitError::NotFound(_))
        ));
        // Without PATH a bare name is not searched for.
        assert!(matches!(
            find_executable("sh", &[]),
            Err(InitError::NotFound(_))
        ));
    }
}
