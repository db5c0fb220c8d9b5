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
//!
//! A hook's stdin, stdout and stderr are pipes, as runc's: the state JSON
//! on stdin (then end of file), and what it writes is read while it runs
//! and goes into the error when it fails. Every other descriptor is closed.

use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
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

/// The most of a hook's stdout and of its stderr kept for an error message
/// (the rest is read and dropped, so the hook never blocks on a full pipe).
const OUTPUT_KEPT: usize = 16 << 10;

/// The state on a hook's stdin: a pipe filled before the hook starts and
/// closed, so the hook reads the state and then end of file, and the
/// runtime never writes to a hook that may already be gone (no SIGPIPE,
/// which would kill an init whose signals are reset). A state larger than
/// the pipe can hold is grown into it first (`F_SETPIPE_SZ`).
fn state_pipe(state: &[u8]) -> std::io::Result<OwnedFd> {
    let (r, w) = crate::sys::pipe()?;
    if state.len() > 64 << 10 {
        // SAFETY: fcntl on our own pipe; a failure leaves the default size
        // and shows as a short write below.
        unsafe {
            libc::fcntl(
                w.as_raw_fd(),
                libc::F_SETPIPE_SZ,
                state.len() as libc::c_int,
            )
        };
    }
    crate::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&w))?;
    let n = crate::sys::write_some(w.as_raw_fd(), state)?;
    if n < state.len() {
        return Err(std::io::Error::other(format!(
            "the state ({} bytes) does not fit in the hook's stdin pipe",
            state.len()
        )));
    }
    Ok(r)
}

/// A hook's stdout or stderr: the read end of its pipe and what was read.
struct Output {
    fd: Option<OwnedFd>,
    kept: Vec<u8>,
}

impl Output {
    fn new(fd: OwnedFd) -> std::io::Result<Self> {
        crate::sys::set_nonblocking(std::os::fd::AsFd::as_fd(&fd))?;
        Ok(Output {
            fd: Some(fd),
            kept: Vec::new(),
        })
    }

    fn raw(&self) -> libc::c_int {
        self.fd.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Reads what is there; the pipe is closed at end of file (or error).
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        while let Some(fd) = &self.fd {
            match crate::sys::read_some(fd.as_raw_fd(), &mut buf) {
                Ok(None) => return,
                Ok(Some(n)) if n > 0 => {
                    let room = OUTPUT_KEPT.saturating_sub(self.kept.len());
                    self.kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Ok(Some(_)) | Err(_) => self.fd = None,
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }
}

/// `pidfd_open(2)` of our child; None where the kernel or a seccomp filter
/// (startContainer hooks run under the process's) refuses it.
fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open on our own child; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a fresh descriptor when non-negative.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reads the hook's stdout and stderr until it exits or `timeout` passes;
/// true when it exited. The exit is seen on a pidfd, after which what the
/// hook wrote is drained (a process it left behind holding the pipes does
/// not keep us waiting). Without a pidfd, until both pipes reach end of
/// file, as runc (Go's `Cmd.Wait`) does.
fn collect(
    pid: u32,
    out: &mut Output,
    err: &mut Output,
    timeout: Option<Duration>,
) -> std::io::Result<bool> {
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let exit = pidfd(pid);
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                left.as_millis().min(i32::MAX as u128) as i32
            }
        };
        let ev = libc::POLLIN;
        let mut fds = [
            libc::pollfd {
                fd: out.raw(),
                events: ev,
                revents: 0,
            },
            libc::pollfd {
                fd: err.raw(),
                events: ev,
                revents: 0,
            },
            libc::pollfd {
                fd: exit.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: ev,
                revents: 0,
            },
        ];
        if fds.iter().all(|f| f.fd < 0) {
            return Ok(true);
        }
        crate::sys::poll(&mut fds, ms)?;
        if fds[0].revents != 0 {
            out.pump();
        }
        if fds[1].revents != 0 {
            err.pump();
        }
        if fds[2].revents != 0 {
            out.pump();
            err.pump();
            return Ok(true);
        }
    }
}

/// Runs hook number `index` of `stage`, with `state` on its stdin and its
/// stdout and stderr on pipes (as runc); an exit status other than 0, or
/// the timeout passing, is an error carrying what it wrote.
pub fn run(stage: &Stage, index: usize, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let spawn_err = |source| HookError::Spawn {
        stage: stage.name,
        index,
        path: hook.path.clone(),
        source,
    };
    let stdin = state_pipe(state).map_err(spawn_err)?;
    let (out_r, out_w) = crate::sys::pipe().map_err(spawn_err)?;
    let (err_r, err_w) = crate::sys::pipe().map_err(spawn_err)?;
    let mut out = Output::new(out_r).map_err(spawn_err)?;
    let mut err = Output::new(err_r).map_err(spawn_err)?;
    let mut cmd = command(stage, hook);
    cmd.stdin(Stdio::from(stdin))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(err_w));
    // SAFETY: the closure only makes raw syscalls, which is all that is
    // allowed between fork and exec.
    unsafe { cmd.pre_exec(only_stdio) };
    let spawned = cmd.spawn();
    // Our copies of the hook's ends go, so its exit ends the pipes.
    drop(cmd);
    let mut child = spawned.map_err(spawn_err)?;
    let timeout = hook.timeout.map(Duration::from_secs);
    let exited = match collect(child.id(), &mut out, &mut err, timeout) {
        Ok(e) => e,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(e));
        }
    };
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
        stdout: out.text(),
        stderr: err.text(),
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
    fn output_on_pipes_a_big_state_and_a_lingering_child() {
        let out = std::env::temp_dir().join(format!("skiff-hook-{}-big", std::process::id()));
        // More than a pipe holds on each side; a child left holding the
        // pipes does not keep the runtime waiting.
        let h = sh(
            &format!(
                "wc -c > {}; head -c 200000 /dev/zero; (sleep 30 &); \
                 echo $(readlink /proc/$$/fd/1) >&2; exit 4",
                out.display()
            ),
            Some(20),
        );
        let state = vec![b'x'; 100_000];
        let t = std::time::Instant::now();
        let e = run(&Stage::new("prestart"), 0, &h, &state).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        let HookError::Failed { status, stderr, .. } = e else {
            panic!("{e}")
        };
        assert_eq!(status, "exit status 4");
        assert!(stderr.starts_with("pipe:["), "{stderr}");
        assert_eq!(std::fs::read_to_string(&out).unwrap().trim(), "100000");
        std::fs::remove_file(out).unwrap();
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
