//! A first stage for a container that joins an existing user namespace by
//! path (a pod's container joining the one its sandbox made).
//!
//! The kernel makes a new namespace owned by the user namespace of the
//! process that creates it, and a new mount namespace made outside the
//! joined user namespace stays locked to the host's: the container's own
//! mount, uts, ipc, net and pid namespaces must be created from inside the
//! joined one (runc and youki join it first too). The runtime itself stays
//! in the host's user namespace (hooks, cgroups, id maps and netdevs need
//! it), so a short-lived process does the joining and clones the init:
//!
//! | who         | step                                                               |
//! |-------------|--------------------------------------------------------------------|
//! | runtime     | clones the first stage (no new namespaces)                         |
//! | first stage | dies with the runtime (`PR_SET_PDEATHSIG`)                         |
//! | first stage | joins the pid namespace given by path (only affects its children) |
//! | first stage | joins the user namespace                                           |
//! | first stage | clones the init with the new namespaces and `CLONE_PARENT`         |
//! | first stage | writes `P`, the init's pid (4 bytes) and whether it was cloned into the cgroup (1 byte); exits 0 |
//! | first stage | or, on failure, writes `E` and the message; exits 1               |
//! | runtime     | reads the report and reaps the first stage                         |
//!
//! With `CLONE_PARENT` the init is the runtime's child, exactly as when the
//! runtime clones it itself: the runtime waits for it and reaps it, and the
//! rest of `create` does not know there was a first stage. The first stage
//! never enters the pid namespace it joins (setns of a pid namespace only
//! affects children), so the pid it reports is the one the runtime sees.

use super::parent::CreateError;
use crate::namespaces::{self, NsKind};
use crate::sys::{self, AsFdBorrowed, Forked};
use std::convert::Infallible;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

/// `CLONE_PARENT`: the init's parent is the runtime, not the first stage.
const CLONE_PARENT: u64 = libc::CLONE_PARENT as u64;

/// Clones the init, which runs `child`, into new namespaces `flags` made
/// inside the user namespace `user` (and the pid namespace `pid_join`),
/// through a first stage (see the module's table). Returns the init's pid
/// and whether it was cloned into `cg_fd`'s cgroup, as `clone_child`.
// `child()` never returns, which the lint sees as unreachable code.
#[allow(unreachable_code)]
pub(crate) fn clone_in_user_namespace(
    flags: u64,
    user: (&Path, &OwnedFd),
    pid_join: Option<(&Path, &OwnedFd)>,
    cg_fd: Option<BorrowedFd<'_>>,
    close_in_child: &[RawFd],
    child: impl FnOnce() -> Infallible,
) -> Result<(libc::pid_t, bool), CreateError> {
    let (report_r, report_w) = sys::pipe().map_err(sys_err("pipe (first stage report)"))?;
    let stage = match sys::clone_fork(0, None).map_err(sys_err("clone (first stage)"))? {
        Forked::Child => {
            for fd in close_in_child.iter().chain([&report_r.as_raw_fd()]) {
                // SAFETY: closing descriptors the first stage does not use;
                // the runtime's copies stay open.
                unsafe { libc::close(*fd) };
            }
            let report = match first_stage(flags, user, pid_join, cg_fd, &report_w, child) {
                Ok((pid, cloned_into)) => {
                    let mut m = vec![b'P'];
                    m.extend_from_slice(&pid.to_le_bytes());
                    m.push(u8::from(cloned_into));
                    m
                }
                Err(message) => [b"E".as_slice(), message.as_bytes()].concat(),
            };
            let ok = report[0] == b'P';
            let written = sys::write_all(report_w.as_fd_borrowed(), &report).is_ok();
            // SAFETY: leave without the runtime's destructors or atexit
            // handlers, which are not ours to run.
            unsafe { libc::_exit(if ok && written { 0 } else { 1 }) }
        }
        Forked::Parent(pid) => pid,
    };
    drop(report_w);
    let report = read_report(&report_r);
    let mut status = 0;
    // SAFETY: our own child, reaped once.
    unsafe { libc::waitpid(stage, &mut status, 0) };
    let report = report.map_err(sys_err("read the first stage's report"))?;
    match report.split_first() {
        Some((b'P', rest)) if rest.len() == 5 => {
            let mut pid = [0u8; 4];
            pid.copy_from_slice(&rest[..4]);
            Ok((libc::pid_t::from_le_bytes(pid), rest[4] == 1))
        }
        Some((b'E', message)) => Err(CreateError::Init(
            String::from_utf8_lossy(message).into_owned(),
        )),
        _ => Err(CreateError::Init(format!(
            "linux.namespaces: the process joining user namespace {} died (wait status {status:#x})",
            user.0.display()
        ))),
    }
}

/// Joins the namespaces and clones the init; returns in the first stage
/// only (the init runs `child`, which never returns).
#[allow(unreachable_code)]
fn first_stage(
    flags: u64,
    (user_path, user_fd): (&Path, &OwnedFd),
    pid_join: Option<(&Path, &OwnedFd)>,
    cg_fd: Option<BorrowedFd<'_>>,
    report_w: &OwnedFd,
    child: impl FnOnce() -> Infallible,
) -> Result<(libc::pid_t, bool), String> {
    // Without the runtime nobody reads the report or waits for the init;
    // an init already cloned sees the channel close and exits.
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0)
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    let spec_err = |e: namespaces::NsError| format!("linux.namespaces: {e}");
    // The pid namespace before the user namespace: joining it needs the
    // host's privileges over its owner, which the joined user namespace
    // does not give.
    if let Some((path, fd)) = pid_join {
        namespaces::join(NsKind::Pid, path, fd).map_err(spec_err)?;
    }
    namespaces::join(NsKind::User, user_path, user_fd).map_err(spec_err)?;
    let mut cloned_into = cg_fd.is_some();
    let forked = match sys::clone_fork(flags | CLONE_PARENT, cg_fd) {
        // As `clone_child`: the runtime falls back to a move by pid.
        Err(e) if cg_fd.is_some() && e.raw_os_error() != Some(libc::ENOMEM) => {
            cloned_into = false;
            sys::clone_fork(flags | CLONE_PARENT, None)
        }
        r => r,
    };
    match forked.map_err(|e| format!("clone in user namespace {}: {e}", user_path.display()))? {
        Forked::Child => {
            // SAFETY: the report is the first stage's to write, not ours.
            unsafe { libc::close(report_w.as_raw_fd()) };
            match child() {}
        }
        Forked::Parent(pid) => Ok((pid, cloned_into)),
    }
}

/// The first stage's report: a whole `P` message, or everything up to end
/// of file (an `E` message, or nothing when it died).
fn read_report(fd: &OwnedFd) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match sys::read_some(fd.as_raw_fd(), &mut buf)? {
            Some(0) | None => return Ok(out),
            Some(n) => out.extend_from_slice(&buf[..n]),
        }
        if out.first() == Some(&b'P') && out.len() >= 6 {
            return Ok(out);
        }
    }
}

fn sys_err(what: &'static str) -> impl FnOnce(std::io::Error) -> CreateError {
    move |source| CreateError::Sys {
        what: what.to_string(),
        source,
    }
}
