//! Exec served by the shim itself, without starting the runtime binary.
//!
//! Kubernetes runs every liveness and readiness probe as an exec, so an exec is the call a node
//! makes most. Through the runtime binary it costs a fork of the shim, an execve of the runtime,
//! the runtime re-executing itself from a sealed view of its binary (`exeseal`), its start-up,
//! a pid file written and read, and the process spec written to the bundle and removed. When the
//! runtime is skiff, the shim links skiff's own exec code and skips all of that: it forks, and the
//! child (single-threaded, in the shim's image) runs `skiff exec --detach --process` as a library
//! call that clones the process with `CLONE_PARENT`, so the shim, already the subreaper, is its
//! parent and reaps it as it reaps every process it started. The child reports the pid (or the
//! error) over a pipe and exits.
//!
//! What the process gets is what `skiff exec` gives it, from the same code: the container's
//! namespaces and cgroup, its user, capabilities, rlimits, seccomp profile, LSM labels, no new
//! privileges, signals reset. The shim runs from a sealed view of its binary (see `main.rs`), as
//! the runtime does, because until the process execs it is the shim's image inside the container.
//! Before it calls into the runtime's code the child makes itself non-dumpable and closes every
//! descriptor of the shim's but the process's stdio, the report pipe and the console socket.
//!
//! Any other runtime binary (a `BinaryName` that is not the skiff beside the shim) is run as
//! before, and so is skiff when `SKIFF_SHIM_EXEC=runtime` is in the shim's environment.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::runtime::{ChildStdio, Runtime, RuntimeError};

/// How long the forked child may take (as a runtime command may).
const TIMEOUT: Duration = Duration::from_secs(60);
/// Chooses how execs are started: `runtime` always runs the runtime binary.
const MODE_VAR: &str = "SKIFF_SHIM_EXEC";
/// The descriptors the child keeps, in its numbering.
const REPORT_FD: RawFd = 3;
const CONSOLE_FD: RawFd = 4;

/// The command named in errors, as the runtime binary's would be.
const COMMAND: &str = "skiff exec";

/// Whether execs of containers run by `runtime` are served here: its binary is the skiff beside
/// the shim (the one this shim was built with), and the mode is not `runtime`.
pub fn serves(runtime: &Runtime, default: &Path) -> bool {
    if std::env::var_os(MODE_VAR).is_some_and(|m| m == "runtime") {
        return false;
    }
    if runtime.binary == default {
        return default.is_absolute();
    }
    // A BinaryName that names the same file.
    match (
        std::fs::canonicalize(&runtime.binary),
        std::fs::canonicalize(default),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Starts the process described by `spec` (an OCI `process` object) in container `id`; returns
/// its pid once it has exec'd. `stdio` is the process's; with a terminal, `console` is the path
/// of the console socket the pty master is sent to.
pub fn exec(
    runtime: &Runtime,
    id: &str,
    spec: &[u8],
    stdio: ChildStdio,
    console: Option<&Path>,
) -> Result<i32, RuntimeError> {
    let failed = |message: String| RuntimeError::Failed {
        command: COMMAND.into(),
        message,
    };
    let sys = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| failed(format!("{what}: {e}"))
    };
    // Everything the child needs is made before the fork: after it, the child only moves
    // descriptors and calls into the runtime's code.
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(sys("open /dev/null"))?;
    let console = console
        .map(UnixStream::connect)
        .transpose()
        .map_err(sys("connect to the console socket"))?;
    let (report_r, report_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sys("pipe")(e.into()))?;
    let root = runtime.root.clone();
    let id = id.to_string();
    let sub = runtime.reaper.subscribe();
    // SAFETY: fork in a multi-threaded process. glibc's fork keeps the allocator usable in the
    // child; the child touches no lock another thread of the shim may hold (it uses none of the
    // shim's state) and never returns: it ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(sys("fork")(std::io::Error::last_os_error()));
    }
    if pid == 0 {
        let fds = ChildFds {
            stdin: stdio
                .stdin
                .as_ref()
                .map_or(null.as_raw_fd(), AsRawFd::as_raw_fd),
            stdout: stdio
                .stdout
                .as_ref()
                .map_or(null.as_raw_fd(), AsRawFd::as_raw_fd),
            stderr: stdio
                .stderr
                .as_ref()
                .map_or(null.as_raw_fd(), AsRawFd::as_raw_fd),
            report: report_w.as_raw_fd(),
            console: console.as_ref().map(AsRawFd::as_raw_fd),
        };
        child(&fds, &root, &id, spec);
    }
    drop(report_w);
    drop(stdio);
    drop(console);
    let report = read_report(report_r, pid);
    // The child exits right after its report (or was killed on a timeout): wait for it so it
    // never outlives the call.
    let exit = sub.wait_for(pid, TIMEOUT);
    let text = report.map_err(|e| match e {
        None => RuntimeError::Timeout {
            command: COMMAND.into(),
        },
        Some(e) => sys("reading the report")(e),
    })?;
    parse_report(&text).map_err(|message| {
        let message = match (message.is_empty(), exit) {
            (true, Some(x)) => format!(
                "exit status {}",
                skiff_proto::convert::exit_status(x.status)
            ),
            (true, None) => "no report".to_string(),
            (false, _) => message,
        };
        failed(message)
    })
}

/// The descriptors the child works with, in the shim's numbering.
struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
    console: Option<RawFd>,
}

/// The forked child: never returns.
fn child(fds: &ChildFds, root: &Path, id: &str, spec: &[u8]) -> ! {
    let (report, result) = match setup_fds(fds) {
        Ok(()) => {
            // SAFETY: CONSOLE_FD was just made ours by setup_fds.
            let console = fds
                .console
                .map(|_| unsafe { OwnedFd::from_raw_fd(CONSOLE_FD) });
            let r = skiff::commands::exec::spawn_detached_sibling(root, id, spec, console)
                .map_err(|e| skiff::log::go_style(&e.to_string()));
            (REPORT_FD, r)
        }
        Err(e) => (fds.report, Err(format!("preparing the exec: {e}"))),
    };
    let text = match result {
        Ok(pid) => format!("ok {pid}"),
        Err(message) => format!("error {message}"),
    };
    // SAFETY: writing a local buffer to our report descriptor, then leaving without running the
    // shim's destructors or atexit handlers, which belong to the shim.
    unsafe {
        libc::write(report, text.as_ptr().cast(), text.len());
        libc::_exit(0)
    }
}

fn check(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Non-dumpable first (the process about to be cloned into the container inherits it), then the
/// stdio on 0, 1 and 2, the report pipe on 3, the console on 4, and nothing else of the shim's.
/// Only for the forked child: it rearranges the whole descriptor table.
fn setup_fds(fds: &ChildFds) -> std::io::Result<()> {
    // SAFETY (every block below): plain syscalls on integer descriptors, in the forked child,
    // whose descriptors belong to nothing that runs after us.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    // Copies above every descriptor we place, so no placement overwrites a source.
    let high = |fd: RawFd| check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 16) });
    let stdin = high(fds.stdin)?;
    let stdout = high(fds.stdout)?;
    let stderr = high(fds.stderr)?;
    let report = high(fds.report)?;
    let console = fds.console.map(high).transpose()?;
    for (src, dst) in [(stdin, 0), (stdout, 1), (stderr, 2)] {
        check(unsafe { libc::dup2(src, dst) })?;
    }
    check(unsafe { libc::dup3(report, REPORT_FD, libc::O_CLOEXEC) })?;
    let first_closed = match console {
        Some(c) => {
            check(unsafe { libc::dup3(c, CONSOLE_FD, libc::O_CLOEXEC) })?;
            CONSOLE_FD + 1
        }
        None => CONSOLE_FD,
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_closed as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if r != 0 {
        for fd in first_closed..4096 {
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// The child's report, read until it closes the pipe; `Err(None)` on the timeout (the child is
/// then killed).
fn read_report(r: OwnedFd, pid: i32) -> Result<String, Option<std::io::Error>> {
    let deadline = Instant::now() + TIMEOUT;
    let mut file = std::fs::File::from(r);
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Some(e));
        }
        if n == 0 {
            let _ = crate::reaper::signal(pid, libc::SIGKILL);
            return Err(None);
        }
        match file.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&text).into_owned()),
            Ok(k) => text.extend_from_slice(&buf[..k.min(buf.len())]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Some(e)),
        }
    }
}

/// `ok PID` is the pid; `error MESSAGE` (or anything else) the message.
fn parse_report(text: &str) -> Result<i32, String> {
    if let Some(pid) = text.strip_prefix("ok ") {
        return pid
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("unexpected report {text:?}"));
    }
    Err(text.strip_prefix("error ").unwrap_or(text).to_string())
}

#[cfg(test)]
mod tests {
    use super::parse_report;

    #[test]
    fn reports_parse() {
        assert_eq!(parse_report("ok 42"), Ok(42));
        assert_eq!(
            parse_report("error exec failed: no such file"),
            Err("exec failed: no such file".into())
        );
        assert!(parse_report("ok -1").is_err());
        assert!(parse_report("ok x").is_err());
        assert_eq!(parse_report(""), Err(String::new()));
    }
}
