//! The process's identity and limits: rlimits, supplementary groups,
//! gid/uid, umask, no_new_privs.

use crate::plan::{ProcessPlan, Rlimit};
use crate::sys;

/// Switching identity or limits failed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("process.rlimits: setrlimit({resource}, soft {soft}, hard {hard}): {source}")]
    Rlimit {
        resource: i32,
        soft: u64,
        hard: u64,
        source: std::io::Error,
    },
    #[error("process.user: {call}({value}): {source}")]
    Id {
        call: &'static str,
        value: String,
        source: std::io::Error,
    },
    #[error("process.noNewPrivileges: {0}")]
    NoNewPrivs(std::io::Error),
    #[error("{field}: {source}")]
    Sys {
        field: &'static str,
        source: std::io::Error,
    },
    #[error("process.oomScoreAdj: writing {value}: {source}")]
    OomScoreAdj {
        value: i32,
        source: crate::procfs::ProcfsError,
    },
}

/// Applies every rlimit; runs before the uid changes so hard limits can be
/// raised.
pub fn set_rlimits(limits: &[Rlimit]) -> Result<(), UserError> {
    for l in limits {
        let rl = libc::rlimit {
            rlim_cur: l.soft,
            rlim_max: l.hard,
        };
        // SAFETY: valid rlimit struct.
        if unsafe { libc::setrlimit(l.resource as _, &rl) } < 0 {
            return Err(UserError::Rlimit {
                resource: l.resource,
                soft: l.soft,
                hard: l.hard,
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Writes /proc/self/oom_score_adj (inherited by the exec'd process)
/// through a verified procfs handle: this runs inside the container's root,
/// whose /proc the image may have faked.
pub fn set_oom_score_adj(value: Option<i32>) -> Result<(), UserError> {
    let Some(v) = value else { return Ok(()) };
    let err = |source| UserError::OomScoreAdj { value: v, source };
    let proc = crate::procfs::Procfs::open().map_err(err)?;
    proc.write(std::path::Path::new("self/oom_score_adj"), &v.to_string())
        .map_err(err)
}

fn id_err(call: &'static str, value: impl ToString) -> impl FnOnce(std::io::Error) -> UserError {
    let value = value.to_string();
    move |source| UserError::Id {
        call,
        value,
        source,
    }
}

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets groups, gid and uid. The caller has set PR_SET_KEEPCAPS so the
/// permitted capabilities survive the uid change.
pub fn switch_user(p: &ProcessPlan) -> Result<(), UserError> {
    let groups: Vec<libc::gid_t> = p.additional_gids.clone();
    // SAFETY: valid pointer and length.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
        .map_err(id_err("setgroups", format!("{groups:?}")))?;
    // SAFETY: plain syscalls.
    check(unsafe { libc::setresgid(p.gid, p.gid, p.gid) }).map_err(id_err("setgid", p.gid))?;
    // SAFETY: plain syscall.
    check(unsafe { libc::setresuid(p.uid, p.uid, p.uid) }).map_err(id_err("setuid", p.uid))?;
    Ok(())
}

/// Keeps the permitted set across the uid change (on) and restores the
/// default (off) afterwards.
pub fn keep_caps(on: bool) -> Result<(), UserError> {
    sys::prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0)
        .map_err(id_err("prctl(PR_SET_KEEPCAPS)", on))
}

/// Sets the umask (0022 when the spec gives none, as runc does).
pub fn set_umask(umask: Option<u32>) {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(umask.unwrap_or(0o022) as libc::mode_t) };
}

/// `PR_SET_NO_NEW_PRIVS`.
pub fn no_new_privs() -> Result<(), UserError> {
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0).map_err(UserError::NoNewPrivs)
}

/// Applies `linux.personality`, `process.ioPriority` and
/// `process.scheduler`, while still privileged.
pub fn set_persona_and_scheduling(p: &ProcessPlan) -> Result<(), UserError> {
    let err = |field| move |source| UserError::Sys { field, source };
    if let Some(persona) = p.personality {
        // SAFETY: plain syscall.
        if unsafe { libc::personality(persona) } < 0 {
            return Err(err("linux.personality")(std::io::Error::last_os_error()));
        }
    }
    if let Some(prio) = p.io_priority {
        const IOPRIO_WHO_PROCESS: libc::c_int = 1;
        // SAFETY: plain syscall on ourselves.
        if unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, prio) } < 0 {
            return Err(err("process.ioPriority")(std::io::Error::last_os_error()));
        }
    }
    if let Some(attr) = &p.scheduler {
        // SAFETY: attr is a repr(C) sched_attr whose size field is set.
        if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const _, 0) } < 0 {
            return Err(err("process.scheduler")(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}
