//! OCI hooks: run a program with the container's state JSON on stdin, its
//! own argv and env, and a timeout.
//!
//! What a hook inherits when its entry does not say, as runc 1.1.5 does it
//! (checked by `integration/tests/hooks.rs` against runc):
//!
//! | stage | env when `env` is absent | cwd |
//! | --- | --- | --- |
//! | prestart, createRuntime | the runtime's own | the bundle |
//! | createContainer | `process.env` | the rootfs (host path, before pivot_root) |
//! | startContainer | the process's final environment | `process.cwd` |
//! | poststart, poststop | the runtime's own | the caller's (`run`: the bundle) |
//!
//! `"env": []` is an empty environment; a listed `env` is exactly that.

use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("error running {stage} hook #{index} {path}: start: {source}")]
    Spawn {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "error running {stage} hook #{index} {path}: {status}, stdout: {stdout}, stderr: {stderr}"
    )]
    Failed {
        stage: &'static str,
        index: usize,
        path: PathBuf,
        status: String,
        stdout: String,
        stderr: String,
    },
    #[error("error running {stage} hook #{index} {path}: hook ran past its timeout of {secs}s")]
    Timeout {
        stage: &'static str,
        index: usize,
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
    /// None (the spec's `env` absent): the stage's inherited environment
    /// (see the module's table); `Some([])` is an empty one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub timeout: Option<u64>,
}

impl Hook {
    pub fn from_oci(h: &oci_spec::runtime::Hook) -> Self {
        Hook {
            path: h.path().clone(),
            args: h.args().clone().unwrap_or_default(),
            env: h.env().clone(),
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

/// Where a stage's hooks run and what a hook without `env` inherits.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    /// The stage's name in the spec (`createRuntime`, ...), for errors.
    pub name: &'static str,
    /// The hooks' working directory; None: the runtime's own.
    pub cwd: Option<&'a Path>,
    /// The `KEY=VALUE` environment of a hook without `env`; None: the
    /// runtime's own.
    pub inherited_env: Option<&'a [OsString]>,
}

impl<'a> Stage<'a> {
    /// A stage run in the runtime's own cwd and environment.
    pub fn new(name: &'static str) -> Self {
        Stage {
            name,
            cwd: None,
            inherited_env: None,
        }
    }

    /// The same stage, its hooks run in `cwd`.
    pub fn in_dir(self, cwd: &'a Path) -> Self {
        Stage {
            cwd: Some(cwd),
            ..self
        }
    }

    /// The same stage, a hook without `env` getting `env` (`KEY=VALUE`).
    pub fn inheriting(self, env: &'a [OsString]) -> Self {
        Stage {
            inherited_env: Some(env),
            ..self
        }
    }
}

/// `KEY=VALUE` strings as the OS strings a stage inherits.
pub fn env_entries<S: AsRef<[u8]>>(env: &[S]) -> Vec<OsString> {
    env.iter()
        .map(|e| OsStr::from_bytes(e.as_ref()).to_owned())
        .collect()
}

fn split_entry(e: &OsStr) -> Option<(&OsStr, &OsStr)> {
    let b = e.as_bytes();
    let eq = b.iter().position(|&c| c == b'=')?;
    Some((OsStr::from_bytes(&b[..eq]), OsStr::from_bytes(&b[eq + 1..])))
}

/// The hook's command: argv, environment and cwd as the stage says.
fn command(stage: &Stage, hook: &Hook) -> Command {
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    match (&hook.env, stage.inherited_env) {
        (Some(env), _) => {
            let env = env_entries(env);
            cmd.env_clear()
                .envs(env.iter().filter_map(|e| split_entry(e)));
        }
        (None, Some(env)) => {
            cmd.env_clear()
                .envs(env.iter().filter_map(|e| split_entry(e)));
        }
        // As Go's exec.Cmd with a nil Env: the runtime's own environment.
        (None, None) => {}
    }
    if let Some(dir) = stage.cwd {
        cmd.current_dir(dir);
    }
    cmd
}

fn read_memfd(f: std::fs::File) -> String {
    let mut out = String::new();
    let mut f = f;
    let _ = f.rewind();
    let _ = f.take(4096).read_to_string(&mut out);
    out.trim().to_string()
}

/// Runs hook number `index` of `stage`, writing `state` to its stdin; an
/// exit status other than 0, or the timeout passing, is an error carrying
/// its output.
pub fn run(stage: &Stage, index: usize, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let spawn_err = |source| HookError::Spawn {
        stage: stage.name,
        index,
        path: hook.path.clone(),
        source,
    };
    let stdout = memfd(c"skiff-hook-stdout").map_err(spawn_err)?;
    let stderr = memfd(c"skiff-hook-stderr").map_err(spawn_err)?;
    let mut cmd = command(stage, hook);
    cmd.stdin(Stdio::piped())
        .stdout(stdout.try_clone().map_err(spawn_err)?)
        .stderr(stderr.try_clone().map_err(spawn_err)?);
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
            stage: stage.name,
            index,
            path: hook.path.clone(),
            secs: hook.timeout.unwrap_or(0),
        });
    }
    let status = child.wait().map_err(spawn_err)?;
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        stage: stage.name,
        index,
        path: hook.path.clone(),
        status: match (status.code(), status.signal()) {
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "failed".to_string(),
        },
        stdout: read_memfd(stdout),
        stderr: read_memfd(stderr),
    })
}

/// Runs every hook of `stage` in order, stopping at the first failure (the
/// stages whose failure fails the operation).
pub fn run_all(stage: &Stage, hooks: &[Hook], state: &[u8]) -> Result<(), HookError> {
    hooks
        .iter()
        .enumerate()
        .try_for_each(|(i, h)| run(stage, i, h, state))
}

/// Runs every hook of `stage` whatever the others do and returns the
/// failures (poststart and poststop: the runtime-spec 1.2 says a failure
/// is a warning and the remaining hooks and the lifecycle go on).
pub fn run_each(stage: &Stage, hooks: &[Hook], state: &[u8]) -> Vec<HookError> {
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, h)| run(stage, i, h, state).err())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: Some(vec!["X=42".into()]),
            timeout,
        }
    }

    #[test]
    fn passes_state_and_env() {
        let dir = std::env::temp_dir().join(format!("skiff-hook-{}", std::process::id()));
        let out = dir.with_extension("out");
        let h = sh(&format!("read s; echo \"$s $X\" > {}", out.display()), None);
        run(&Stage::new("poststop"), 0, &h, b"{\"id\":\"c\"}\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"c\"} 42\n"
        );
        std::fs::remove_file(out).unwrap();
    }

    #[test]
    fn failure_carries_output() {
        let e = run(
            &Stage::new("prestart"),
            0,
            &sh("echo boom >&2; exit 3", None),
            b"",
        )
        .unwrap_err();
        let s = e.to_string();
        assert!(s.contains("exit status 3") && s.contains("boom"), "{s}");
    }

    #[test]
    fn timeout_kills() {
        let e = run(&Stage::new("prestart"), 0, &sh("sleep 30", Some(1)), b"").unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
    }

    /// A hook that copies its own environment to a file, and the file.
    fn env_copier(env: Option<Vec<String>>, name: &str) -> (Hook, PathBuf) {
        let out = std::env::temp_dir().join(format!("skiff-hook-{}-{name}", std::process::id()));
        let hook = Hook {
            path: "/bin/cp".into(),
            args: vec![
                "cp".into(),
                "/proc/self/environ".into(),
                out.display().to_string(),
            ],
            env,
            timeout: None,
        };
        (hook, out)
    }

    fn take_env(out: &Path) -> Vec<String> {
        let text = std::fs::read(out).unwrap();
        std::fs::remove_file(out).unwrap();
        text.split(|&b| b == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    #[test]
    fn env_absent_inherits_the_stage_env_and_empty_is_empty() {
        let (h, out) = env_copier(None, "none");
        run(&Stage::new("poststop"), 0, &h, b"").unwrap();
        let own = take_env(&out);
        assert!(own.iter().any(|e| e.starts_with("PATH=")), "{own:?}");
        let given = env_entries(&["A=1", "B=x=y"]);
        run(&Stage::new("startContainer").inheriting(&given), 0, &h, b"").unwrap();
        assert_eq!(take_env(&out), ["A=1", "B=x=y"]);
        let (h, out) = env_copier(Some(vec![]), "empty");
        run(&Stage::new("poststop").inheriting(&given), 0, &h, b"").unwrap();
        assert!(take_env(&out).is_empty());
        let (h, out) = env_copier(Some(vec!["C=3".into()]), "given");
        run(&Stage::new("poststop").inheriting(&given), 0, &h, b"").unwrap();
        assert_eq!(take_env(&out), ["C=3"]);
    }

    #[test]
    fn runs_in_the_stage_cwd() {
        let out = std::env::temp_dir().join(format!("skiff-hook-{}-cwd", std::process::id()));
        let h = sh(&format!("pwd -P > {}", out.display()), None);
        run(
            &Stage::new("createRuntime").in_dir(Path::new("/usr")),
            0,
            &h,
            b"",
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "/usr\n");
        std::fs::remove_file(out).unwrap();
    }

    #[test]
    fn run_each_goes_on_after_a_failure_and_run_all_stops() {
        let out = std::env::temp_dir().join(format!("skiff-hook-{}-each", std::process::id()));
        let hooks = [
            sh("exit 1", None),
            sh(&format!("echo ran >> {}", out.display()), None),
        ];
        let errs = run_each(&Stage::new("poststart"), &hooks, b"");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].to_string().contains("poststart hook #0"),
            "{}",
            errs[0]
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
        let e = run_all(&Stage::new("prestart"), &hooks, b"").unwrap_err();
        assert!(e.to_string().contains("prestart hook #0"), "{e}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
        std::fs::remove_file(out).unwrap();
    }
}
