//! Fault injection: run a command under `ptrace` and SIGKILL it when it is about to make its N-th
//! system call, the way a runtime dies when it is OOM-killed or its caller gives up.
//!
//! Only the command itself is traced (not the processes it clones), so a container init the
//! runtime made carries on as it would after a real crash. The calling thread is the tracer: the
//! whole run, from spawn to reaping, happens on it.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// How a traced run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traced {
    /// Killed on entry to its `n`-th system call (which therefore never ran).
    Killed,
    /// It finished before its `kill_at`-th system call: its exit code (128+signal when killed) and
    /// how many system calls it made.
    Finished { code: i32, syscalls: u64 },
}

/// ptrace's `addr` and `data` are pointers (glibc reads them as such).
const NULL: *mut libc::c_void = std::ptr::null_mut();

/// `PTRACE_GET_SYSCALL_INFO`'s `op` for a syscall-entry stop.
const SYSCALL_INFO_ENTRY: u8 = 1;

fn check(r: libc::c_long, what: &str) -> Result<libc::c_long> {
    if r < 0 {
        return Err(io::Error::last_os_error()).with_context(|| what.to_string());
    }
    Ok(r)
}

fn wait(pid: i32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r >= 0 {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e).context("waitpid on the traced command");
        }
    }
}

/// Whether the tracee's current stop is a syscall entry.
fn at_entry(pid: i32) -> Result<bool> {
    let mut info = [0u8; 128];
    // SAFETY: the kernel writes at most `info.len()` bytes into the buffer.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GET_SYSCALL_INFO,
            pid,
            info.len() as *mut libc::c_void,
            info.as_mut_ptr() as *mut libc::c_void,
        )
    };
    check(r, "PTRACE_GET_SYSCALL_INFO")?;
    Ok(info[0] == SYSCALL_INFO_ENTRY)
}

/// Runs `cmd` (stdio as the caller set it) and kills it on entry to its `kill_at`-th system call
/// (counted from the first one after its `execve`); with `None` it runs to the end and the count
/// is returned.
pub fn run_killed_at(mut cmd: Command, kill_at: Option<u64>) -> Result<Traced> {
    // SAFETY: the closure runs in the child between fork and exec and calls only ptrace(2).
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, NULL, NULL) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().context("spawning the traced command")?;
    let pid = child.id() as i32;
    // The exec stop (SIGTRAP) comes first.
    let status = wait(pid)?;
    if !libc::WIFSTOPPED(status) {
        bail!("traced command did not stop at exec (status {status:#x})");
    }
    // TRACEEXEC: an execve of the tracee (the runtime re-executes itself once, sealed) is an
    // event stop, not a SIGTRAP that would be delivered and kill it.
    let opts = libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL | libc::PTRACE_O_TRACEEXEC;
    // SAFETY: ptrace on our stopped tracee.
    check(
        unsafe {
            libc::ptrace(
                libc::PTRACE_SETOPTIONS,
                pid,
                NULL,
                opts as usize as *mut libc::c_void,
            )
        },
        "PTRACE_SETOPTIONS",
    )?;
    let mut count = 0u64;
    let mut deliver = 0;
    loop {
        // SAFETY: ptrace on our stopped tracee.
        check(
            unsafe {
                libc::ptrace(
                    libc::PTRACE_SYSCALL,
                    pid,
                    NULL,
                    deliver as usize as *mut libc::c_void,
                )
            },
            "PTRACE_SYSCALL",
        )?;
        deliver = 0;
        let status = wait(pid)?;
        if libc::WIFEXITED(status) {
            return Ok(Traced::Finished {
                code: libc::WEXITSTATUS(status),
                syscalls: count,
            });
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Traced::Finished {
                code: 128 + libc::WTERMSIG(status),
                syscalls: count,
            });
        }
        if status >> 16 == libc::PTRACE_EVENT_EXEC {
            continue;
        }
        let sig = libc::WSTOPSIG(status);
        if sig != libc::SIGTRAP | 0x80 {
            // A signal for the tracee: pass it on.
            deliver = sig;
            continue;
        }
        if !at_entry(pid)? {
            continue;
        }
        count += 1;
        if Some(count) == kill_at {
            // SAFETY: kill(2) of our own tracee; SIGKILL ends it even in a ptrace stop.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let status = wait(pid)?;
            if !libc::WIFSIGNALED(status) {
                bail!("traced command survived SIGKILL (status {status:#x})");
            }
            return Ok(Traced::Killed);
        }
    }
}
