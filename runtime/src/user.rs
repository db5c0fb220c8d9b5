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
    let rel = std::path::Path::new("self/oom_score_adj");
    // In a user namespace the file is the host root's (our memory map is
    // the runtime's): the parent wrote the value for us, which reads back.
    if let Ok(fd) = proc.open_file(rel, libc::O_RDONLY) {
        let mut buf = [0u8; 16];
        if let Ok(Some(n)) = crate::sys::read_some(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf) {
            if std::str::from_utf8(&buf[..n]).is_ok_and(|t| t.trim() == v.to_string()) {
                return Ok(());
            }
        }
    }
    proc.write(rel, &v.to_string()).map_err(err)
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

/// The largest /etc/passwd read for `HOME`; a bigger one is read up to
/// this size.
const PASSWD_LIMIT: u64 = 4 << 20;

/// `env` with `HOME` set, as runc sets it, when it has none or an empty
/// one (the last entry is the one that counts): the home directory of the
/// process's uid in the container's /etc/passwd, `/` when it has none.
pub fn with_home(env: &[String], uid: libc::uid_t) -> Vec<String> {
    let home = env.iter().rev().find_map(|e| e.strip_prefix("HOME="));
    if home.is_some_and(|h| !h.is_empty()) {
        return env.to_vec();
    }
    let passwd = read_container_passwd().unwrap_or_default();
    let var = format!("HOME={}", home_in_passwd(&passwd, uid).unwrap_or("/"));
    let mut out: Vec<String> = env
        .iter()
        .filter(|e| !e.starts_with("HOME="))
        .cloned()
        .collect();
    out.push(var);
    out
}

/// The home directory of the first entry for `uid` in passwd(5) text.
pub fn home_in_passwd(passwd: &str, uid: libc::uid_t) -> Option<&str> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.trim().split(':').collect();
        let entry_uid: libc::uid_t = f.get(2)?.parse().ok()?;
        (entry_uid == uid).then(|| f.get(5).copied().unwrap_or(""))
    })
}

/// The container's /etc/passwd, read from inside its root (after
/// pivot_root, or after joining its mount namespace): resolved in that
/// root without magic links, and only a regular file (a fifo or a device
/// there must not block or feed us). `None` when there is none, as runc
/// takes any failure to open it.
fn read_container_passwd() -> Option<String> {
    use std::io::Read;
    let root = sys::open(
        std::path::Path::new("/"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )
    .ok()?;
    let fd = sys::openat2(
        sys::AsFdBorrowed::as_fd_borrowed(&root),
        std::path::Path::new("etc/passwd"),
        libc::O_RDONLY | libc::O_NONBLOCK,
        0,
        sys::IN_ROOT,
    )
    .ok()?;
    let st = sys::fstat(sys::AsFdBorrowed::as_fd_borrowed(&fd)).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return None;
    }
    let mut data = Vec::new();
    std::fs::File::from(fd)
        .take(PASSWD_LIMIT)
        .read_to_end(&mut data)
        .ok()?;
    Some(String::from_utf8_lossy(&data).into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          \n\
                          broken line\n\
                          app:x:1000:1000::/home/app:/bin/sh\n\
                          again:x:1000:1000::/second:/bin/sh\n\
                          nohome:x:7:7\n";

    #[test]
    fn home_is_the_first_entry_of_the_uid() {
        assert_eq!(home_in_passwd(PASSWD, 0), Some("/root"));
        assert_eq!(home_in_passwd(PASSWD, 1000), Some("/home/app"));
        assert_eq!(home_in_passwd(PASSWD, 7), Some(""));
        assert_eq!(home_in_passwd(PASSWD, 4242), None);
        assert_eq!(home_in_passwd("", 0), None);
    }

    #[test]
    fn a_set_home_is_kept() {
        let env = vec!["PATH=/bin".to_string(), "HOME=/mine".to_string()];
        assert_eq!(with_home(&env, 0), env);
    }
}
