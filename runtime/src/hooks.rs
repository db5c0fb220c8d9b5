//! OCI hooks: run a program with the container's state JSON on stdin, its
//! own argv and env, and a timeout.

use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{stage} hook {path}: start: {source}")]
    Spawn {
        stage: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{stage} hook {path}: {status}{output}")]
    Failed {
        stage: &'static str,
        path: PathBuf,
        status: String,
        output: String,
    },
    #[error("{stage} hook {path}: timed out after {secs}s")]
    Timeout {
        stage: &'static str,
        path: PathBuf,
        secs: u64,
    },
}

/// One hook from the spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    /// argv, including argv[0]; empty means just the path.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl Hook {
    pub fn from_oci(h: &oci_spec::runtime::Hook) -> Self {
        Hook {
            path: h.path().clone(),
            args: h.args().clone().unwrap_or_default(),
            env: h.env().clone().unwrap_or_default(),
            timeout: h.timeout().and_then(|t| u64::try_from(t).ok()),
        }
    }
}

fn memfd(name: &std::ffi::CStr) -> std::io::Result<std::fs::File> {
    // SAFETY: valid name; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Waits for `pid` up to `timeout` through a pidfd; true when it exited.
fn wait_exit(pid: u32, timeout: Option<Duration>) -> std::io::Result<bool> {
    let Some(t) = timeout else { return Ok(true) };
    // SAFETY: pidfd_open on our own child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = t.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// In the hook's child, between fork and exec: every descriptor above
/// stdio becomes close-on-exec, so a hook gets its state on stdin, its
/// output pipes and nothing else of the runtime or of the runtime's caller
/// (descriptors inherited without close-on-exec, such as `--preserve-fds`
/// ones or a shim's). Only raw syscalls: this runs after fork.
fn only_stdio() -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: flag each possible descriptor (EBADF for the
    // unused ones is expected).
    // SAFETY: getrlimit into a local and fcntl on integers are plain syscalls.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as libc::c_int
    } else {
        1024
    };
    for fd in 3..max {
        // SAFETY: see above.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Runs `hook` for `stage`, writing `state` to its stdin; an exit status
/// other than 0, or the timeout passing, is an error carrying its output.
pub fn run(stage: &'static str, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let spawn_err = |source| HookError::Spawn {
        stage,
        path: hook.path.clone(),
        source,
    };
    let out = memfd(c"skiff-hook-output").map_err(spawn_err)?;
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(out.try_clone().map_err(spawn_err)?)
        .stderr(out.try_clone().map_err(spawn_err)?);
    // SAFETY: the closure only makes raw syscalls, which is all that is
    // allowed between fork and exec.
    unsafe { cmd.pre_exec(only_stdio) };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is not an error.
        let _ = stdin.write_all(state);
    }
    let timeout = hook.timeout.map(Duration::from_secs);
    let exited = wait_exit(child.id(), timeout).map_err(spawn_err)?;
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(HookError::Timeout {
            stage,
            path: hook.path.clone(),
            secs: hook.timeout.unwrap_or(0),
        });
    }
    let status = child.wait().map_err(spawn_err)?;
    if status.success() {
        return Ok(());
    }
    let mut output = String::new();
    let mut out = out;
    let _ = out.rewind();
    let _ = out.take(4096).read_to_string(&mut output);
    let output = output.trim();
    Err(HookError::Failed {
        stage,
        path: hook.path.clone(),
        status: match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "failed".to_string(),
        },
        output: if output.is_empty() {
            String::new()
        } else {
            format!(": {output}")
        },
    })
}

/// Runs every hook of `stage` in order, stopping at the first failure.
pub fn run_all(stage: &'static str, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    hooks.iter().try_for_each(|h| run(stage, h, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["X=42".into()],
            timeout,
        }
    }

    #[test]
    fn passes_state_and_env() {
        let dir = std::env::temp_dir().join(format!("skiff-hook-{}", std::process::id()));
        let out = dir.with_extension("out");
        let h = sh(&format!("read s; echo \"$s $X\" > {}", out.display()), None);
        run("poststop", &h, b"{\"id\":\"c\"}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"} 42\n"
        );
        std::fs::remove_file(out).unwrap();
    }

    #[test]
    fn failure_carries_output() {
        let e = run("prestart", &sh("echo boom >&2; exit 3", None), b"").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("exit status 3") && s.contains("boom"), "{s}");
    }

    #[test]
    fn timeout_kills() {
        let e = run("prestart", &sh("sleep 30", Some(1)), b"").unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
    }
}
