//! runc's container lifecycle: create, start, run, state, kill, delete,
//! list and spec.

use super::{io_err, CmdError};
use crate::cgroups::CgroupManager;
use crate::cli::{Cli, CreateArgs};
use crate::hooks;
use crate::log::Logger;
use crate::plan::{self, LaunchOptions};
use crate::process::parent::{self, CreateRequest};
use crate::spec;
use crate::state::{Container, Stage, Status};
use crate::stdio::Pipes;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// A foreground process's terminal: the pty master, and the terminal of
/// ours it is relayed to.
pub(crate) struct ForegroundTty {
    pub master: OwnedFd,
    pub host: OwnedFd,
}

/// How `run` in the foreground relays the process's stdio.
pub(crate) enum ForegroundIo {
    /// A terminal of its own (`process.terminal` without --console-socket).
    Tty(ForegroundTty),
    /// Without a terminal: pipes (see [`crate::stdio`]).
    Pipes(Pipes),
}

/// Creates the container. With `foreground`, a terminal container without
/// `--console-socket` gets its pty master handed back to us (returned with
/// the container) instead of to a socket, and one without a terminal gets
/// pipes for its stdio, whose other ends are returned.
pub(crate) fn create(
    cli: &Cli,
    a: &CreateArgs,
    foreground: bool,
    log: &mut Logger,
) -> Result<(Container, Option<ForegroundIo>), CmdError> {
    spec::validate_id(&a.id)?;
    let bundle = std::fs::canonicalize(&a.bundle)
        .map_err(io_err(format!("bundle {}", a.bundle.display())))?;
    let (spec, unknown_caps) = spec::load_with_unknown_caps(&bundle)?;
    if !unknown_caps.is_empty() {
        log.warn(&format!(
            "ignoring unknown or unavailable capabilities: [{}]",
            unknown_caps.join(" ")
        ));
    }
    if spec::sets_kernel_memory(&spec) {
        // runc's words (1.1 to 1.4); neither is applied on any cgroup version.
        log.warn("Kernel memory settings are ignored and will be removed");
    }
    // runc 1.1 to 1.4 warn twice for each (its spec conversion, then its
    // configuration check) and mount it under the container's `/`.
    for (i, dest) in spec::relative_mount_destinations(&spec) {
        log.warn(&format!(
            "mounts[{i}].destination {dest:?} is not an absolute path: mounted at {} \
             (relative destinations are deprecated)",
            crate::plan::clean_abs(&dest).display()
        ));
        log.warn(&format!(
            "invalid configuration: mounts[{i}].destination {dest:?} is not absolute"
        ));
    }
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    let own_console = foreground && terminal && a.console_socket.is_none();
    // Our terminal first: without one, fail before anything exists.
    let host = own_console
        .then(crate::tty::host_console)
        .transpose()
        .map_err(io_err("open /dev/tty"))?;
    let (ours, theirs) = if own_console {
        let (x, y) =
            std::os::unix::net::UnixStream::pair().map_err(io_err("console socketpair"))?;
        (Some(OwnedFd::from(x)), Some(OwnedFd::from(y)))
    } else {
        (None, None)
    };
    let opts = LaunchOptions {
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        has_console_socket: a.console_socket.is_some() || own_console,
    };
    let plan = plan::build(&a.id, &bundle, &spec, opts)?;
    // As runc: a foreground process without a terminal gets pipes, never
    // our own descriptors.
    let (stdio, pipes) = if foreground && !terminal {
        let (t, p) = Pipes::new().map_err(io_err("stdio pipes"))?;
        (Some(t), Some(p))
    } else {
        (None, None)
    };
    let req = CreateRequest {
        root: &cli.root,
        console_socket: a.console_socket.as_deref(),
        console_fd: theirs,
        pid_file: a.pid_file.as_deref(),
        systemd_cgroup: cli.systemd_cgroup,
        stdio,
    };
    let c = match parent::create(&plan, req) {
        Ok(c) => c,
        Err(e) => {
            // Another container's id is not ours to end.
            let exists = matches!(
                e,
                parent::CreateError::State(crate::state::StateError::AlreadyExists(_))
            );
            if !exists {
                poststop_after_failed_create(&plan, log);
            }
            return Err(e.into());
        }
    };
    if let Some(p) = pipes {
        // The pipes go to the container's root (user namespace) before the
        // process can reopen them; a failure ends the create.
        if let Err(e) = p.chown_to_root_of(c.record.pid) {
            let id = c.record.id.clone();
            drop(c);
            cleanup_after_failed_start(cli, &id, log);
            return Err(io_err("stdio pipes: fchown")(e));
        }
        return Ok((c, Some(ForegroundIo::Pipes(p))));
    }
    // The init sent the master before Ready, so it is already queued.
    let tty = match (ours, host) {
        (Some(sock), Some(host)) => Some(ForegroundIo::Tty(ForegroundTty {
            master: crate::sys::recv_fd(std::os::fd::AsFd::as_fd(&sock))
                .map_err(io_err("receive the pty master"))?,
            host,
        })),
        _ => None,
    };
    Ok((c, tty))
}

/// Releases the init blocked on exec.fifo and runs the poststart hooks.
pub(crate) fn start(c: Container, log: &mut Logger) -> Result<(), CmdError> {
    start_with_hooks_in(c, log, None)
}

/// `start`, running the poststart hooks in `hook_cwd` (`run`: the bundle,
/// as runc, which chdirs there) rather than in our own cwd.
fn start_with_hooks_in(
    c: Container,
    log: &mut Logger,
    hook_cwd: Option<&Path>,
) -> Result<(), CmdError> {
    let status = c.status();
    if !status.can_start() {
        return Err(CmdError::BadStatus {
            id: c.record.id.clone(),
            action: "start",
            status: status.as_str(),
        });
    }
    let fifo_path = c.exec_fifo();
    // The init holds the read end; with no reader (the init died) a
    // non-blocking open for writing fails with ENXIO.
    let fifo = crate::sys::open(&fifo_path, libc::O_WRONLY | libc::O_NONBLOCK, 0).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENXIO) {
            CmdError::InitGone(c.record.id.clone())
        } else {
            io_err(format!("open {}", fifo_path.display()))(e)
        }
    })?;
    crate::sys::write_all(std::os::fd::AsFd::as_fd(&fifo), b"0")
        .map_err(io_err("write exec fifo"))?;
    let _ = std::fs::remove_file(&fifo_path);
    // poststart hooks run once the process has started (after the
    // startContainer hooks): the init's end of the fifo closes at execve.
    if !c.record.poststart.is_empty() {
        wait_for_exec(&fifo, &c);
    }
    drop(fifo);
    let state = c.record.hook_state(Status::Running);
    // runtime-spec 1.2: a failing poststart hook is a warning; the
    // remaining hooks run and the container goes on.
    let stage = hooks::Stage {
        cwd: hook_cwd,
        ..hooks::Stage::new("poststart")
    };
    for e in hooks::run_each(&stage, &c.record.poststart, &state) {
        log.warn(&e.to_string());
    }
    Ok(())
}

/// A create that failed once the container existed ends as a deleted
/// container does: with its poststop hooks (the runtime-spec's lifecycle
/// goes on at "destroy"; runc does the same).
fn poststop_after_failed_create(plan: &plan::Plan, log: &mut Logger) {
    if plan.hooks.poststop.is_empty() {
        return;
    }
    let mut state = serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "id": plan.id,
        "status": "stopped",
        "bundle": plan.bundle,
    });
    if !plan.annotations.is_empty() {
        state["annotations"] = serde_json::json!(plan.annotations);
    }
    let state = serde_json::to_vec(&state).unwrap_or_default();
    let stage = hooks::Stage::new("poststop").in_dir(&plan.bundle);
    for e in hooks::run_each(&stage, &plan.hooks.poststop, &state) {
        log.warn(&e.to_string());
    }
}

/// Waits until the init has exec'd the process (or died): the init holds
/// the only read end of the exec fifo, close-on-exec, and a fifo's writer
/// sees POLLERR once no reader is left. Bounded, in case a process kept the
/// read end (`--preserve-fds` naming it).
fn wait_for_exec(fifo: &OwnedFd, c: &Container) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pfd = libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    while Instant::now() < deadline
        && crate::state::process_alive(c.record.pid, c.record.init_start_time)
    {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r > 0 && pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            return;
        }
        if r < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

pub(crate) fn kill(c: &Container, sig: libc::c_int, all: bool) -> Result<(), CmdError> {
    let status = c.status();
    if all && status == Status::Stopped {
        // As runc: `kill --all` of a stopped container signals what its init
        // left in the cgroup, and nothing left is no error. containerd's runc
        // shim sends it before deleting a task after every exit (CRI's exit
        // handling); an error there leaves the task undeletable.
        if c.record.cgroup_dirs.iter().all(|d| !d.exists()) {
            return Ok(());
        }
        return signal_all(c, sig);
    }
    if !status.can_kill() {
        return Err(CmdError::NotRunning(c.record.id.clone()));
    }
    if all {
        signal_all(c, sig)?;
        return Ok(());
    }
    // SAFETY: kill has no memory-safety preconditions; the pid was just
    // verified to be the container's init (status checks its start time).
    if unsafe { libc::kill(c.record.pid, sig) } < 0 {
        return Err(io_err(format!("kill {}", c.record.pid))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Signals every process of the container's cgroup (the init included):
/// SIGKILL through `cgroup.kill` where the kernel has it.
fn signal_all(c: &Container, sig: libc::c_int) -> Result<(), CmdError> {
    let cg = c.record.cgroup();
    crate::cgroups::signal_all(&cg, sig)?;
    Ok(())
}

/// Waits until `pid` (started at `start_time`) is gone or a zombie.
fn wait_gone(pid: i32, start_time: u64, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut delay = Duration::from_micros(200);
    while crate::state::process_alive(pid, start_time) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
    true
}

/// Removes the container: kills what is left, removes the cgroup, runs the
/// poststop hooks and removes the state.
pub(crate) fn delete(c: Container, force: bool, log: &mut Logger) -> Result<(), CmdError> {
    delete_with_hooks_in(c, force, log, None)
}

/// `delete`, running the poststop hooks in `hook_cwd` (see `start`).
fn delete_with_hooks_in(
    c: Container,
    force: bool,
    log: &mut Logger,
    hook_cwd: Option<&Path>,
) -> Result<(), CmdError> {
    let status = c.status();
    if !status.can_delete() && !force {
        return Err(CmdError::BadStatus {
            id: c.record.id.clone(),
            action: "delete",
            status: status.as_str(),
        });
    }
    let cg = c.record.cgroup();
    let half_made = c.record.stage == Stage::Creating;
    // A create that died leaves its init stopped in status but maybe
    // alive: the recorded pid is killed whenever it is still the init.
    if status != Status::Stopped || (half_made && c.init_alive()) {
        // SAFETY: the init was just verified to be the container's.
        unsafe { libc::kill(c.record.pid, libc::SIGKILL) };
        // A paused container's processes die only once thawed.
        if status == Status::Paused {
            let _ = cg.thaw();
        }
        if !wait_gone(
            c.record.pid,
            c.record.init_start_time,
            Duration::from_secs(10),
        ) {
            log.warn(&format!(
                "container {}: init {} did not exit after SIGKILL",
                c.record.id, c.record.pid
            ));
        }
    }
    // Without a pid namespace of its own, the container's other processes
    // outlive the init: kill them through the cgroup. So for a create that
    // died, whose init may be in the cgroup before its pid was recorded.
    if !c.record.private_pid || half_made {
        let _ = cg.kill_all();
    }
    let cg_result = cg
        .remove()
        .and_then(|()| crate::cgroups::remove_parents(&c.record.cgroup_parents));
    // Without a mount namespace of its own, its mounts are in the host's.
    let mount_result = match c.record.host_rootfs_mount {
        Some(id) => crate::rootfs::detach_host_rootfs(&c.record.rootfs, id),
        None => Ok(()),
    };
    let state = c.record.hook_state(Status::Stopped);
    let stage = hooks::Stage {
        cwd: hook_cwd,
        ..hooks::Stage::new("poststop")
    };
    let hook_errors = hooks::run_each(&stage, &c.record.poststop, &state);
    c.destroy()?;
    cg_result?;
    mount_result?;
    // runtime-spec 1.2: a failing poststop hook is a warning, the others
    // still run and the container is gone (runc 1.1.5 logs it and exits 0
    // too, but skips the remaining hooks).
    for e in hook_errors {
        log.warn(&e.to_string());
    }
    Ok(())
}

pub(crate) fn run(
    cli: &Cli,
    a: &CreateArgs,
    detach: bool,
    keep: bool,
    log: &mut Logger,
) -> Result<i32, CmdError> {
    let (c, mut master) = create(cli, a, !detach, log)?;
    let pid = c.record.pid;
    // runc chdirs to the bundle for `run`: the poststart and poststop hooks
    // run there.
    let bundle = c.record.bundle.clone();
    if detach {
        if let Err(e) = start_with_hooks_in(c, log, Some(&bundle)) {
            cleanup_after_failed_start(cli, &a.id, log);
            return Err(e);
        }
        return Ok(0);
    }
    // Block the signals we relay before the process starts, so none is
    // lost; the init's mask was reset at clone time.
    let sigfd = ForwardSignals::new().map_err(io_err("signalfd"))?;
    let id = c.record.id.clone();
    if let Err(e) = start_with_hooks_in(c, log, Some(&bundle)) {
        // What the init wrote before it went is the user's.
        if let Some(ForegroundIo::Pipes(p)) = &mut master {
            p.stop_stdin();
            let _ = p.flush_ready();
        }
        cleanup_after_failed_start(cli, &id, log);
        return Err(e);
    }
    let wait_err = io_err("wait for the container");
    let (code, pipes) = match master {
        Some(ForegroundIo::Tty(t)) => {
            let _raw = crate::tty::RawMode::enter(t.host.as_raw_fd());
            let code = sigfd.relay_with_console(pid, &t.master, t.host.as_raw_fd());
            (code.map_err(wait_err)?, None)
        }
        Some(ForegroundIo::Pipes(mut p)) => {
            let code = sigfd
                .relay_with_pipes(pid, Some(&mut p))
                .map_err(wait_err)?;
            (code, Some(p))
        }
        // A terminal handed to --console-socket: nothing to copy.
        None => (sigfd.relay_with_pipes(pid, None).map_err(wait_err)?, None),
    };
    // As runc: the container is deleted (what it left behind killed), then
    // its output is copied to the end.
    let deleted = if keep {
        Ok(())
    } else {
        Container::load(&cli.root, &id)
            .map_err(CmdError::from)
            .and_then(|c| delete_with_hooks_in(c, true, log, Some(&bundle)))
    };
    if let Some(p) = pipes {
        sigfd
            .drain(p)
            .map_err(io_err("copy the container's output"))?;
    }
    deleted?;
    Ok(code)
}

fn cleanup_after_failed_start(cli: &Cli, id: &str, log: &mut Logger) {
    if let Ok(c) = Container::load(&cli.root, id) {
        if let Err(e) = delete(c, true, log) {
            log.warn(&e.to_string());
        }
    }
}

/// Signals relayed from `skiff run` to the container: blocked and read from
/// a signalfd, SIGCHLD reaps.
pub(crate) struct ForwardSignals {
    fd: OwnedFd,
    old: libc::sigset_t,
}

impl ForwardSignals {
    pub(crate) fn new() -> std::io::Result<Self> {
        // SAFETY: sigset handling on local values; results checked.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut set);
            for s in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGILL,
                libc::SIGFPE,
                libc::SIGKILL,
                libc::SIGSTOP,
            ] {
                libc::sigdelset(&mut set, s);
            }
            let mut old: libc::sigset_t = std::mem::zeroed();
            if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(ForwardSignals {
                fd: std::os::fd::FromRawFd::from_raw_fd(fd),
                old,
            })
        }
    }

    /// Reads one signal from the signalfd; `None` when interrupted.
    fn read_signal(&self) -> std::io::Result<Option<libc::c_int>> {
        // SAFETY: zeroed siginfo is valid; read fills it.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: valid buffer of `size` bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut si as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(None);
            }
            return Err(e);
        }
        Ok((n as usize == size).then_some(si.ssi_signo as libc::c_int))
    }

    /// Forwards signals to `pid` until it exits, meanwhile copying its
    /// stdio through `pipes` (if any); returns its exit code (128+signal
    /// when killed). What the process wrote last and is ready is copied
    /// before this returns; [`ForwardSignals::drain`] copies the rest.
    pub(crate) fn relay_with_pipes(
        &self,
        pid: libc::pid_t,
        mut pipes: Option<&mut Pipes>,
    ) -> std::io::Result<i32> {
        loop {
            if let Some(code) = reap(pid)? {
                if let Some(p) = pipes.as_deref_mut() {
                    // No more of our stdin is taken once the process is gone.
                    p.stop_stdin();
                    p.flush_ready()?;
                }
                return Ok(code);
            }
            let own = pipes.as_deref().map(Pipes::pollfds);
            let mut fds = [libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }; 4];
            if let Some(own) = own {
                fds[1..].copy_from_slice(&own);
            } else {
                fds[1..].iter_mut().for_each(|f| f.fd = -1);
            }
            crate::sys::poll(&mut fds, -1)?;
            if let Some(p) = pipes.as_deref_mut() {
                p.ready(&fds[1..]);
            }
            if fds[0].revents & libc::POLLIN == 0 {
                continue;
            }
            let Some(sig) = self.read_signal()? else {
                continue;
            };
            if sig != libc::SIGCHLD {
                // SAFETY: forwarding to our own child, not yet reaped.
                unsafe { libc::kill(pid, sig) };
            }
        }
    }

    /// After the process exited: its stdin is closed, and its stdout and
    /// stderr are copied until their end of file (every writer gone), as
    /// runc waits for its copies. A terminating signal stops the wait;
    /// others are no longer forwarded (the process is gone).
    pub(crate) fn drain(&self, mut pipes: Pipes) -> std::io::Result<()> {
        pipes.stop_stdin();
        while !pipes.output_done() {
            let mut fds = [libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }; 4];
            fds[1..].copy_from_slice(&pipes.pollfds());
            crate::sys::poll(&mut fds, -1)?;
            pipes.ready(&fds[1..]);
            if fds[0].revents & libc::POLLIN != 0
                && matches!(
                    self.read_signal()?,
                    Some(libc::SIGINT | libc::SIGTERM | libc::SIGHUP | libc::SIGQUIT)
                )
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

impl ForwardSignals {
    /// Like `relay_until_exit`, also copying our stdin to the pty master
    /// and its output to our stdout, and passing window size changes on.
    pub(crate) fn relay_with_console(
        &self,
        pid: libc::pid_t,
        master: &OwnedFd,
        host: std::os::fd::RawFd,
    ) -> std::io::Result<i32> {
        crate::tty::copy_winsize(host, master.as_raw_fd());
        let mut stdin_open = true;
        let mut master_open = true;
        let mut exit = None;
        let mut buf = [0u8; 8192];
        loop {
            if exit.is_none() {
                exit = reap(pid)?;
            }
            if exit.is_some() && !master_open {
                break;
            }
            let mut fds = [
                libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if master_open { master.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: if stdin_open { 0 } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // Once the process is gone, drain what is left and stop.
            let timeout = if exit.is_some() { 100 } else { -1 };
            // SAFETY: valid array of pollfds.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if r == 0 && exit.is_some() {
                break;
            }
            if fds[0].revents & libc::POLLIN != 0 {
                if let Some(sig) = self.read_signal()? {
                    match sig {
                        libc::SIGCHLD => {}
                        libc::SIGWINCH => crate::tty::copy_winsize(host, master.as_raw_fd()),
                        sig => {
                            // SAFETY: forwarding to our own child.
                            unsafe { libc::kill(pid, sig) };
                        }
                    }
                }
            }
            if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                // SAFETY: valid buffer.
                let n =
                    unsafe { libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    master_open = false;
                } else {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&buf[..n as usize]);
                    let _ = out.flush();
                }
            }
            if fds[2].revents & (libc::POLLIN | libc::POLLHUP) != 0 {
                // SAFETY: valid buffer.
                let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
                if n <= 0 {
                    stdin_open = false;
                } else {
                    let _ =
                        crate::sys::write_all(std::os::fd::AsFd::as_fd(master), &buf[..n as usize]);
                }
            }
        }
        loop {
            if let Some(code) = exit {
                return Ok(code);
            }
            exit = reap(pid)?;
            if exit.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for ForwardSignals {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved in new().
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut()) };
    }
}

/// Reaps `pid` if it exited: its exit code, 128+signal when killed.
fn reap(pid: libc::pid_t) -> std::io::Result<Option<i32>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r == 0 {
        return Ok(None);
    }
    if libc::WIFEXITED(status) {
        return Ok(Some(libc::WEXITSTATUS(status)));
    }
    if libc::WIFSIGNALED(status) {
        return Ok(Some(128 + libc::WTERMSIG(status)));
    }
    Ok(None)
}

pub(crate) fn list(root: &Path, format: &str, quiet: bool) -> Result<(), CmdError> {
    let mut rows = Vec::new();
    for id in Container::list(root)? {
        // A container deleted while we list is simply not listed; one
        // being created is listed as creating, without waiting for it.
        let Ok(row) = Container::inspect(root, &id) else {
            continue;
        };
        rows.push(row);
    }
    let mut out = std::io::stdout().lock();
    let w = |r: std::io::Result<()>| r.map_err(io_err("write"));
    if quiet {
        for (r, _) in &rows {
            w(writeln!(out, "{}", r.id))?;
        }
        return Ok(());
    }
    if format == "json" {
        let states: Vec<_> = rows.iter().map(|(r, s)| r.oci_state(*s)).collect();
        let s = serde_json::to_string(&states)
            .map_err(|e| io_err("list JSON")(std::io::Error::other(e)))?;
        return w(writeln!(out, "{s}"));
    }
    let mut table = vec![[
        "ID".to_string(),
        "PID".into(),
        "STATUS".into(),
        "BUNDLE".into(),
        "CREATED".into(),
        "OWNER".into(),
    ]];
    for (r, s) in &rows {
        let pid = if *s == Status::Stopped { 0 } else { r.pid };
        table.push([
            r.id.clone(),
            pid.to_string(),
            s.as_str().into(),
            r.bundle.display().to_string(),
            r.created.clone(),
            if r.owner.is_empty() {
                "root".into()
            } else {
                r.owner.clone()
            },
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i == 5 {
                    cell.clone()
                } else {
                    format!("{cell:<w$}", w = widths[i] + 3)
                }
            })
            .collect();
        w(writeln!(out, "{}", line.concat().trim_end()))?;
    }
    Ok(())
}

/// The default config.json, as `runc spec` writes it.
pub fn default_spec() -> serde_json::Value {
    let caps = serde_json::json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "skiff",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

pub(crate) fn write_spec(bundle: &Path) -> Result<(), CmdError> {
    let path = bundle.join("config.json");
    let data = serde_json::to_string_pretty(&default_spec())
        .map_err(|e| io_err("config JSON")(std::io::Error::other(e)))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CmdError::SpecExists(bundle.to_path_buf())
            } else {
                io_err(format!("write {}", path.display()))(e)
            }
        })?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .map_err(io_err(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_valid_and_plans() {
        let data = default_spec().to_string();
        let s = spec::parse(data.as_bytes()).unwrap();
        spec::validate(&s).unwrap();
        let opts = LaunchOptions {
            has_console_socket: true,
            ..Default::default()
        };
        let p = plan::build("x", Path::new("/b"), &s, opts).unwrap();
        assert!(p.process.terminal);
        assert_eq!(p.masked_paths.len(), 10);
    }
}
