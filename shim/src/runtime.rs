//! The runtime binary (skiff, runc, crun): every call is
//! `BINARY --root ROOT --log BUNDLE/log.json --log-format json [--systemd-cgroup] COMMAND ...`,
//! run in the bundle directory.
//!
//! A failing call's error is the last `"level":"error"` line the runtime logged during that call
//! (runc's log format), else its stderr, else its exit status. Runtime processes are waited for
//! through the [`Reaper`](crate::reaper::Reaper), subscribed before the spawn.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skiff_proto::convert::exit_status;

use crate::reaper::{Exit, Reaper, Subscription};

/// How long one runtime command may take before the shim gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// After the command exited, how long its output is still read: a process it left behind may
/// hold the pipes open for ever.
const OUTPUT_DRAIN: Duration = Duration::from_millis(200);
/// The most of a command's stdout or stderr kept (the rest is read and dropped).
const OUTPUT_LIMIT: usize = 1 << 20;

/// Why a runtime command failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("running {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{command}: {message}")]
    Failed { command: String, message: String },
    #[error("{command}: timed out after {secs}s", secs = COMMAND_TIMEOUT.as_secs())]
    Timeout { command: String },
    #[error("{command}: reading output: {source}")]
    Output {
        command: String,
        source: std::io::Error,
    },
    #[error("{command}: unexpected output {output:?}")]
    Parse { command: String, output: String },
}

impl RuntimeError {
    /// Whether the runtime said the container does not exist (runc: "container does not exist",
    /// "container not found").
    pub fn is_not_found(&self) -> bool {
        match self {
            RuntimeError::Failed { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("does not exist") || m.contains("not found")
            }
            _ => false,
        }
    }

    /// Whether a `kill` failed only because the process is gone (runc: "container not running",
    /// "os: process already finished", "no such process"; skiff: "container X not running"), which
    /// containerd's runc shim reports as NotFound and containerd's `WithProcessKill` then ignores.
    pub fn is_already_finished(&self) -> bool {
        match self {
            RuntimeError::Failed { message, .. } => {
                let m = message.to_ascii_lowercase();
                m.contains("not running")
                    || m.contains("process already finished")
                    || m.contains("no such process")
            }
            _ => false,
        }
    }
}

/// The stdio a runtime command (and so the container process it starts) gets.
#[derive(Debug, Default)]
pub struct ChildStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// One runtime binary with its root and flags.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    /// The `--log` file (`<bundle>/log.json`).
    pub log: PathBuf,
    /// The bundle: every command runs with it as its working directory, as containerd's runc shim
    /// runs them (wrappers named by `BinaryName` find `config.json` there).
    pub bundle: PathBuf,
    pub reaper: Arc<Reaper>,
    /// Run [`IN_PROCESS`] commands as a call into the linked runtime in a forked child instead
    /// of executing the binary (the binary is the skiff this shim links; see `direct`).
    pub in_process: bool,
}

/// A runtime command that was started and not yet waited for.
pub struct Running {
    command: String,
    child: Child,
    sub: Subscription,
    log_offset: u64,
}

/// In the runtime's child, between fork and exec: every descriptor above stdio becomes
/// close-on-exec.
fn only_stdio() -> std::io::Result<()> {
    cloexec_from(3)
}

/// Makes every descriptor from `first` on close-on-exec (async-signal-safe: raw syscalls only).
pub fn cloexec_from(first: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: flag each possible descriptor (EBADF for unused ones is expected).
    for fd in first as libc::c_int..4096 {
        // SAFETY: fcntl on an integer descriptor is a plain syscall.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

impl Runtime {
    fn command(&self, args: &[OsString]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json");
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.args(args);
        // A bundle already removed must not make the command fail to start (`delete` after a
        // crash); the runtime then runs from the shim's own directory.
        if self.bundle.is_dir() {
            cmd.current_dir(&self.bundle);
        }
        // The runtime gets its stdio and nothing else of the shim's: whatever containerd left open
        // (and the server's listening socket, should it ever lose the close-on-exec flag `serve`
        // sets on it) would otherwise reach the runtime and, through it, its hooks.
        // SAFETY: the closure only makes raw syscalls, which is all that is allowed after fork.
        unsafe { cmd.pre_exec(only_stdio) };
        cmd
    }

    fn describe(&self, args: &[OsString]) -> String {
        let name = self
            .binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let verb = args.first().map(|a| a.to_string_lossy().into_owned());
        format!(
            "{} {}",
            name.unwrap_or_else(|| "runtime".into()),
            verb.unwrap_or_default()
        )
    }

    /// Start a command with the given stdio (the container inherits it for `create` and `exec`).
    pub fn spawn(&self, args: &[OsString], stdio: ChildStdio) -> Result<Running, RuntimeError> {
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let mut cmd = self.command(args);
        cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from))
            .stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from))
            .stderr(stdio.stderr.map_or_else(Stdio::null, Stdio::from));
        let sub = self.reaper.subscribe();
        let child = crate::reaper::spawn(&mut cmd).map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        Ok(Running {
            command: self.describe(args),
            child,
            sub,
            log_offset,
        })
    }

    /// The whole command line of a call, as the binary would be run.
    fn argv(&self, args: &[OsString]) -> Vec<OsString> {
        let mut v: Vec<OsString> = vec![
            self.binary.clone().into(),
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.systemd_cgroup {
            v.push("--systemd-cgroup".into());
        }
        v.extend(args.iter().cloned());
        v
    }

    /// Run a command to completion and return its stdout.
    pub fn output(&self, args: &[OsString]) -> Result<String, RuntimeError> {
        if self.in_process
            && args
                .first()
                .is_some_and(|verb| IN_PROCESS.iter().any(|v| verb == v))
        {
            return self.output_in_process(args);
        }
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let command = self.describe(args);
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let sub = self.reaper.subscribe();
        let mut child = crate::reaper::spawn(&mut cmd).map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        let streams = [
            child.stdout.take().map(|s| File::from(OwnedFd::from(s))),
            child.stderr.take().map(|s| File::from(OwnedFd::from(s))),
        ];
        let (exit, [out, err]) = collect_or_kill(pid, &sub, streams, &command)?;
        Running {
            command,
            child,
            sub,
            log_offset,
        }
        .finish_with(self, exit.status, &String::from_utf8_lossy(&err))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// [`Runtime::output`] without executing the binary: a forked child runs the linked runtime's
    /// `main` on the same command line, with the same stdio (null, and two pipes), working
    /// directory and log, and exits with its status. Saves the execve and the start-up of the
    /// binary on the calls of every container's lifecycle.
    fn output_in_process(&self, args: &[OsString]) -> Result<String, RuntimeError> {
        let log_offset = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let command = self.describe(args);
        let spawn_err = |source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        };
        let argv = self.argv(args);
        let null = std::fs::File::open("/dev/null").map_err(spawn_err)?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| spawn_err(std::io::Error::from(e)))
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let dir = if self.bundle.is_dir() {
            self.bundle.clone()
        } else {
            PathBuf::from("/")
        };
        let sub = self.reaper.subscribe();
        // SAFETY: fork in a multi-threaded process. glibc's fork keeps the allocator usable in
        // the child, which touches none of the shim's state and ends in `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(spawn_err(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            use std::os::fd::AsRawFd;
            in_process_child(
                [null.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()],
                &dir,
                argv,
            );
        }
        drop((null, out_w, err_w));
        let streams = [Some(File::from(out_r)), Some(File::from(err_r))];
        let (exit, [out, err]) = collect_or_kill(pid, &sub, streams, &command)?;
        interpret(
            command,
            log_offset,
            self,
            exit.status,
            &String::from_utf8_lossy(&err),
        )?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Run a command for its effect.
    pub fn run(&self, args: &[&str]) -> Result<(), RuntimeError> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        self.output(&args).map(|_| ())
    }
}

impl Running {
    /// The runtime process's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait for the command; a non-zero exit becomes the runtime's logged error.
    pub fn wait(self, rt: &Runtime) -> Result<(), RuntimeError> {
        let pid = self.pid();
        let exit = match self.sub.wait_for(pid, COMMAND_TIMEOUT) {
            Some(exit) => exit,
            None => {
                let _ = crate::reaper::signal(pid, libc::SIGKILL);
                return Err(RuntimeError::Timeout {
                    command: self.command,
                });
            }
        };
        self.finish(rt, exit.status)
    }

    /// Interpret an exit already received (the command's stderr went to the process's stdio).
    pub fn finish(self, rt: &Runtime, raw_status: i32) -> Result<(), RuntimeError> {
        self.finish_with(rt, raw_status, "")
    }

    /// Interpret an exit, with what the command wrote on stderr.
    fn finish_with(self, rt: &Runtime, raw_status: i32, stderr: &str) -> Result<(), RuntimeError> {
        interpret(self.command, self.log_offset, rt, raw_status, stderr)
    }
}

/// The runtime commands [`Runtime::output`] runs in-process when it may: those of a container's
/// lifecycle after `create`, whose stdio is nothing but their own messages.
pub const IN_PROCESS: [&str; 3] = ["start", "kill", "delete"];

/// An exit of `command` (its log read from `log_offset`): a non-zero status becomes the runtime's
/// logged error, else its stderr, else the status.
fn interpret(
    command: String,
    log_offset: u64,
    rt: &Runtime,
    raw_status: i32,
    stderr: &str,
) -> Result<(), RuntimeError> {
    let code = exit_status(raw_status);
    if code == 0 {
        return Ok(());
    }
    let message = last_logged_error(&rt.log, log_offset)
        .or_else(|| {
            let s = stderr.trim();
            (!s.is_empty()).then(|| s.to_string())
        })
        .unwrap_or_else(|| format!("exit status {code}"));
    Err(RuntimeError::Failed { command, message })
}

/// The forked child of [`Runtime::output_in_process`]: the stdio on 0, 1 and 2, nothing else of
/// the shim's open, signals as a fresh process has them, the working directory; then the runtime's
/// `main`, and `_exit` with its status.
fn in_process_child(stdio: [libc::c_int; 3], dir: &Path, argv: Vec<OsString>) -> ! {
    // SAFETY (each block): plain syscalls on integers and valid local structures, in the forked
    // child, whose descriptors and signal state belong to nothing that runs after us.
    let ready = (|| -> std::io::Result<()> {
        let check = |r: libc::c_int| {
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(r)
            }
        };
        let mut high = [0; 3];
        for (i, fd) in stdio.iter().enumerate() {
            high[i] = check(unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 16) })?;
        }
        for (i, fd) in high.iter().enumerate() {
            check(unsafe { libc::dup2(*fd, i as libc::c_int) })?;
        }
        // Closed, not only close-on-exec: nothing is executed here before the runtime's code
        // runs (its hooks are, and get nothing of the shim's either way).
        let closed = unsafe { libc::syscall(libc::SYS_close_range, 3u32, libc::c_uint::MAX, 0u32) };
        if closed != 0 {
            cloexec_from(3)?;
        }
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        }
        std::env::set_current_dir(dir)
    })();
    let code = match ready {
        Ok(()) => std::panic::catch_unwind(move || skiff::cli::main_from(argv)).unwrap_or(101),
        Err(e) => {
            let msg = format!("preparing the runtime call: {e}\n");
            // SAFETY: writing a local buffer to our stderr.
            unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
            1
        }
    };
    // SAFETY: leave without the shim's destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Read `streams` (a command's stdout and stderr) while waiting for the exit of `pid`, until both
/// reach EOF or [`OUTPUT_DRAIN`] after the exit, at most [`COMMAND_TIMEOUT`] in all: a command that
/// hangs, or leaves a process holding its pipes, never blocks the caller for longer. `None` on
/// the timeout.
fn collect(
    pid: i32,
    sub: &Subscription,
    mut streams: [Option<File>; 2],
) -> std::io::Result<Option<(Exit, [Vec<u8>; 2])>> {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let mut out = [Vec::new(), Vec::new()];
    let mut exit: Option<(Exit, Instant)> = None;
    let mut buf = [0u8; 8192];
    loop {
        let now = Instant::now();
        if exit.is_none() {
            exit = sub.wait_for(pid, Duration::ZERO).map(|e| (e, now));
        }
        let open = streams.iter().filter(|s| s.is_some()).count();
        match exit {
            Some((e, at)) if open == 0 || now > at + OUTPUT_DRAIN => return Ok(Some((e, out))),
            None if now > deadline => return Ok(None),
            // Nothing left to read: only the exit to wait for.
            None if open == 0 => {
                let left = deadline.saturating_duration_since(now);
                return Ok(sub.wait_for(pid, left).map(|e| (e, out)));
            }
            _ => {}
        }
        let ready = ready_streams(&streams)?;
        for i in ready {
            let Some(f) = streams[i].as_mut() else {
                continue;
            };
            match f.read(&mut buf) {
                Ok(0) => streams[i] = None,
                Ok(n) => {
                    let keep = n.min(OUTPUT_LIMIT.saturating_sub(out[i].len()));
                    out[i].extend_from_slice(&buf[..keep]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => streams[i] = None,
            }
        }
    }
}

/// [`collect`] for `command`, whose process is killed when it runs out of time.
fn collect_or_kill(
    pid: i32,
    sub: &Subscription,
    streams: [Option<File>; 2],
    command: &str,
) -> Result<(Exit, [Vec<u8>; 2]), RuntimeError> {
    let collected = collect(pid, sub, streams).map_err(|source| RuntimeError::Output {
        command: command.to_string(),
        source,
    })?;
    collected.ok_or_else(|| {
        let _ = crate::reaper::signal(pid, libc::SIGKILL);
        RuntimeError::Timeout {
            command: command.to_string(),
        }
    })
}

/// Which of `streams` have something to read (or reached EOF), waiting a short slice at most:
/// the exit arrives on a channel, not on these fds.
fn ready_streams(streams: &[Option<File>; 2]) -> std::io::Result<Vec<usize>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    const SLICE: u16 = 20;
    let open: Vec<(usize, &File)> = streams
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.as_ref().map(|f| (i, f)))
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    let mut fds: Vec<PollFd> = open
        .iter()
        .map(|(_, f)| PollFd::new(f.as_fd(), PollFlags::POLLIN))
        .collect();
    match poll(&mut fds, PollTimeout::from(SLICE)) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(open
        .iter()
        .zip(&fds)
        .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
        .map(|((i, _), _)| *i)
        .collect())
}

/// The message of the last error the runtime logged after `offset` in its JSON log.
pub fn last_logged_error(log: &Path, offset: u64) -> Option<String> {
    let mut file = File::open(log).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    parse_last_error(&text)
}

fn parse_last_error(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| matches!(v["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|v| v["msg"].as_str().map(str::to_string))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_wins() {
        let log = concat!(
            "{\"level\":\"info\",\"msg\":\"hello\"}\n",
            "{\"level\":\"error\",\"msg\":\"first\"}\n",
            "not json\n",
            "{\"level\":\"error\",\"msg\":\"container not found\",\"time\":\"x\"}\n",
            "{\"level\":\"debug\",\"msg\":\"bye\"}\n"
        );
        assert_eq!(
            parse_last_error(log).as_deref(),
            Some("container not found")
        );
        assert_eq!(parse_last_error("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }

    #[test]
    fn not_found_errors() {
        let e = |m: &str| RuntimeError::Failed {
            command: "runc delete".into(),
            message: m.into(),
        };
        assert!(e("container does not exist").is_not_found());
        assert!(e("container \"x\" not found").is_not_found());
        assert!(!e("permission denied").is_not_found());
    }

    #[test]
    fn already_finished_errors() {
        let e = |m: &str| RuntimeError::Failed {
            command: "skiff kill".into(),
            message: m.into(),
        };
        assert!(e("container abc not running").is_already_finished());
        assert!(e("container not running").is_already_finished());
        assert!(e("os: process already finished").is_already_finished());
        assert!(e("kill: No such process").is_already_finished());
        assert!(!e("permission denied").is_already_finished());
        assert!(!RuntimeError::Timeout {
            command: "skiff kill".into()
        }
        .is_already_finished());
    }
}
