//! `skiff exec`: run another process in a running container, in the
//! foreground (relaying signals, exiting with its status) or detached.

use super::lifecycle::ForwardSignals;
use super::{io_err, CmdError};
use crate::cli::{Cli, ExecArgs};
use crate::log::Logger;
use crate::plan::{self, ExecOverrides, LaunchOptions, PlanError};
use crate::process::exec::{self, ExecRequest};
use crate::process::parent;
use crate::state::{Container, Status};
use crate::stdio::Pipes;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

fn refuse(field: &str, reason: &str) -> CmdError {
    CmdError::Plan(PlanError::Unsupported {
        field: field.into(),
        reason: reason.into(),
    })
}

/// The container `id`, loaded and locked, if a process may be exec'd in it.
fn exec_target(root: &Path, id: &str, ignore_paused: bool) -> Result<Container, CmdError> {
    let c = Container::load(root, id)?;
    match c.status() {
        Status::Stopped => Err(CmdError::BadStatus {
            id: id.to_string(),
            action: "exec in",
            status: "stopped",
        }),
        Status::Paused if !ignore_paused => Err(CmdError::BadStatus {
            id: id.to_string(),
            action: "exec in (without --ignore-paused)",
            status: "paused",
        }),
        _ => Ok(c),
    }
}

/// The plan of a process given as an OCI `process` object (`--process`);
/// labels it does not name are the container's, as in runc.
fn process_from_json(
    data: &[u8],
    what: &str,
    spec: &oci_spec::runtime::Spec,
    opts: impl Fn(bool) -> LaunchOptions,
) -> Result<plan::ProcessPlan, CmdError> {
    let de = &mut serde_json::Deserializer::from_slice(data);
    let p: oci_spec::runtime::Process = serde_path_to_error::deserialize(de).map_err(|e| {
        CmdError::Plan(PlanError::Invalid {
            field: format!("{what}: {}", e.path()),
            reason: e.inner().to_string(),
        })
    })?;
    let mut own = plan::process_from_oci(&p, &opts(p.terminal().unwrap_or(false)))?;
    if let Some(base) = spec.process() {
        own.labels = own.labels.or(&plan::labels(base)?);
    }
    Ok(own)
}

/// The container's seccomp profile, compiled.
fn container_seccomp(
    spec: &oci_spec::runtime::Spec,
) -> Result<Option<crate::seccomp::SeccompPlan>, CmdError> {
    Ok(spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(PlanError::from)?)
}

/// `exec --detach --process` for a caller that links the runtime (the
/// shim): starts the process described by `process_json` (an OCI `process`
/// object) in container `id` under `root` and returns its pid. Its stdio is
/// the caller's 0, 1 and 2; a terminal goes to `console` (a connected
/// console socket). The process is cloned with `CLONE_PARENT`: it is the
/// child of the caller's parent, which reaps it (call this in a child the
/// caller forked for the purpose).
pub fn spawn_detached_sibling(
    root: &Path,
    id: &str,
    process_json: &[u8],
    console: Option<OwnedFd>,
) -> Result<libc::pid_t, CmdError> {
    let c = exec_target(root, id, false)?;
    let spec = crate::spec::load(&c.record.bundle)?;
    let has_console = console.is_some();
    let process = process_from_json(process_json, "process", &spec, |_| LaunchOptions {
        has_console_socket: has_console,
        ..Default::default()
    })?;
    if process.terminal != has_console {
        return Err(refuse(
            "process.terminal",
            "a terminal needs a console socket, and a console socket a terminal",
        ));
    }
    let seccomp = container_seccomp(&spec)?;
    Ok(exec::spawn(ExecRequest {
        container: c,
        process: &process,
        seccomp: seccomp.as_ref(),
        console,
        preserve_fds: 0,
        cgroup_dirs: None,
        stdio: None,
        sibling: true,
    })?)
}

/// Runs `skiff exec`; Ok carries the exit status.
pub(crate) fn exec(cli: &Cli, a: &ExecArgs, log: &mut Logger) -> Result<i32, CmdError> {
    let c = exec_target(&cli.root, &a.id, a.ignore_paused)?;
    // The sub-cgroup (`--cgroup`) is checked before anything is spawned.
    let cgroup_dirs = if a.cgroup.is_empty() {
        None
    } else {
        let r = &c.record;
        Some(crate::cgroups::sub::sub_cgroup_dirs(
            &r.cgroup_mode,
            &r.cgroup_dirs,
            &r.cgroup_controllers,
            &a.cgroup,
        )?)
    };
    let spec = crate::spec::load(&c.record.bundle)?;
    // The terminal, if asked for, is always handed over (to the console
    // socket or to us), so the plan's console check is satisfied by it.
    let opts = |terminal: bool| LaunchOptions {
        preserve_fds: a.preserve_fds,
        has_console_socket: terminal,
        ..Default::default()
    };
    let process = match &a.process {
        Some(path) => {
            let data = crate::spec::read_regular(path)
                .map_err(io_err(format!("--process {}", path.display())))?;
            process_from_json(&data, &format!("--process {}", path.display()), &spec, opts)?
        }
        None => {
            let base = spec.process().as_ref().ok_or_else(|| {
                CmdError::Plan(PlanError::Invalid {
                    field: "process".into(),
                    reason: "the container's config has none to start from".into(),
                })
            })?;
            let o = ExecOverrides {
                args: a.args.clone(),
                env: a.env.clone(),
                cwd: a.cwd.clone(),
                user: a.user.clone(),
                additional_gids: a.additional_gids.clone(),
                caps: known_caps(&a.cap, log),
                no_new_privs: a.no_new_privs,
                tty: a.tty,
                apparmor: a.apparmor.clone(),
                process_label: a.process_label.clone(),
            };
            plan::exec_process(base, &o, &opts(a.tty))?
        }
    };
    // A terminal goes to --console-socket, or in the foreground to us.
    let (ours, console) = match (process.terminal, &a.console_socket, a.detach) {
        (false, Some(_), _) => {
            return Err(refuse(
                "--console-socket",
                "given but the process has no terminal",
            ))
        }
        (false, None, _) => (None, None),
        (true, Some(p), _) => (
            None,
            Some(crate::tty::connect(p).map_err(parent::CreateError::from)?),
        ),
        (true, None, true) => {
            return Err(refuse(
                "--tty",
                "a detached process with a terminal needs --console-socket",
            ))
        }
        (true, None, false) => {
            // Our terminal first: without one, fail before the process exists.
            let host = crate::tty::host_console().map_err(io_err("open /dev/tty"))?;
            let (x, y) =
                std::os::unix::net::UnixStream::pair().map_err(io_err("console socketpair"))?;
            (Some((OwnedFd::from(x), host)), Some(OwnedFd::from(y)))
        }
    };
    let seccomp = container_seccomp(&spec)?;
    // Signals are blocked before the clone so none sent to us is lost; the
    // child unblocks its own mask.
    // As runc: in the foreground without a terminal the process gets pipes,
    // never our own descriptors (see crate::stdio).
    let (stdio, pipes) = if !a.detach && !process.terminal {
        let (t, p) = Pipes::new().map_err(io_err("stdio pipes"))?;
        p.chown_to_root_of(c.record.pid)
            .map_err(io_err("stdio pipes: fchown"))?;
        (Some(t), Some(p))
    } else {
        (None, None)
    };
    let signals = if a.detach {
        None
    } else {
        Some(ForwardSignals::new().map_err(io_err("signalfd"))?)
    };
    let pid = exec::spawn(ExecRequest {
        container: c,
        process: &process,
        seccomp: seccomp.as_ref(),
        console,
        preserve_fds: a.preserve_fds,
        cgroup_dirs,
        stdio,
        sibling: false,
    })?;
    if let Some(p) = &a.pid_file {
        if let Err(e) = parent::write_pid_file(p, pid) {
            // As runc: a process whose pid could not be handed over is not
            // left running unaccounted for.
            // SAFETY: our own child; kill and reap it.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e.into());
        }
    }
    let Some(signals) = signals else {
        return Ok(0);
    };
    let tty = match ours {
        Some((sock, host)) => Some((
            crate::sys::recv_fd(std::os::fd::AsFd::as_fd(&sock))
                .map_err(io_err("receive the pty master"))?,
            host,
        )),
        None => None,
    };
    let code = match (tty, pipes) {
        (Some((master, host)), _) => {
            let _raw = crate::tty::RawMode::enter(host.as_raw_fd());
            signals.relay_with_console(pid, &master, host.as_raw_fd())
        }
        (None, Some(mut p)) => signals
            .relay_with_pipes(pid, Some(&mut p))
            .and_then(|code| {
                // Its output to the end, as runc waits for its copies.
                signals.drain(p).map(|()| code)
            }),
        // A terminal handed to --console-socket: nothing to copy.
        (None, None) => signals.relay_with_pipes(pid, None),
    }
    .map_err(io_err("wait for the process"))?;
    Ok(code)
}

/// The `--cap` values without those runc ignores with a warning.
fn known_caps(caps: &[String], log: &mut Logger) -> Vec<String> {
    let unknown = plan::unknown_exec_caps(caps);
    if unknown.is_empty() {
        return caps.to_vec();
    }
    log.warn(&format!(
        "ignoring unknown or unavailable capabilities: [{}]",
        unknown.join(" ")
    ));
    caps.iter()
        .filter(|c| !unknown.contains(c))
        .cloned()
        .collect()
}
