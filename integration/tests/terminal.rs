//! `process.terminal` with `--console-socket`: the pty master is handed over with SCM_RIGHTS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;

use anyhow::Result;
use serde_json::json;
use skiff_integration::console::read_terminal;
use skiff_integration::{Harness, Opts};

#[test]
fn console_socket_receives_the_pty_master() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["process"]["terminal"] = json!(true))?;
    b.sh("echo hello-tty; tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-stdio-are-ttys")?;
    let console = h.console_socket()?;
    let id = h.id("tty");
    let socket = console.path().display().to_string();
    h.try_create(&id, &b, &["--console-socket", &socket])?
        .ok()?;
    h.start(&id)?;
    let capture = console.wait()?;
    h.wait_status(&id, "stopped")?;
    let out = capture.output;
    assert!(out.contains("hello-tty"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("all-stdio-are-ttys"), "{out:?}");
    h.delete(&id)?;
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn create_with_a_terminal_needs_a_console_socket() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["process"]["terminal"] = json!(true))?;
    let id = h.id("nosock");
    let out = h.try_create(&id, &b, &[])?;
    assert_eq!(out.exit_code(), 1, "{out}");
    h.check_no_trace(&id, &b)?;
    Ok(())
}

#[test]
fn foreground_run_with_a_terminal_uses_the_callers_terminal() -> Result<()> {
    let h = Harness::new()?;
    let mut b = h.bundle()?;
    b.edit(|c| c["process"]["terminal"] = json!(true))?;
    b.sh("echo hello-fg-tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-stdio-are-ttys")?;
    let pty = nix::pty::openpty(None, None)?;
    let id = h.id("fgtty");
    let path = b.path_str();
    let mut run = h.spawn(
        &["run", "--bundle", &path, &id],
        Opts {
            terminal: Some(File::from(pty.slave)),
            ..Opts::default()
        },
    )?;
    let out = read_terminal(File::from(pty.master), &mut run, h.timeout())?;
    let result = run.wait()?;
    assert!(result.success(), "{result}\nterminal: {out:?}");
    assert!(out.contains("hello-fg-tty"), "{out:?}");
    assert!(out.contains("all-stdio-are-ttys"), "{out:?}");
    Ok(())
}

/// Runs `RUNTIME --root R args...` as a daemon or a CI job would: in a session of its own (no
/// controlling terminal), stdin, stdout and stderr not terminals. Returns the exit code (`None`
/// when it had to be killed after 15 s) and stderr.
fn without_a_terminal(h: &Harness, args: &[&str]) -> Result<(Option<i32>, String)> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let stderr = h.path("notty.stderr");
    let mut cmd = Command::new(h.bin());
    cmd.arg("--root")
        .arg(h.root())
        .args(args)
        .env(skiff_integration::harness::TAG_VAR, h.tag())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&stderr)?);
    // SAFETY: setsid(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let code = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            child.kill()?;
            child.wait()?;
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Ok((code, std::fs::read_to_string(&stderr)?))
}

#[test]
fn a_terminal_without_a_terminal_of_ours_fails_at_once_as_in_runc() -> Result<()> {
    for h in [Harness::runc()?, Harness::new()?] {
        let who = h.bin().display().to_string();
        // `run`: an interactive shell on a terminal whose input nobody could ever type.
        let mut b = h.bundle()?;
        b.edit(|c| c["process"]["terminal"] = json!(true))?;
        b.args(&["sh"])?;
        let id = h.id("notty");
        let path = b.path_str();
        let (code, stderr) = without_a_terminal(&h, &["run", "--bundle", &path, &id])?;
        assert_eq!(code, Some(1), "{who} run: {stderr}");
        assert!(
            stderr.contains("open /dev/tty: no such device or address"),
            "{who}: {stderr}"
        );
        h.check_no_trace(&id, &b)?;

        // `exec -t`: fails as runc's does, and starts nothing in the container.
        let mut b = h.bundle()?;
        b.args(&["sleep", "600"])?;
        let id = h.create_and_start("notty", &b)?;
        let (code, stderr) = without_a_terminal(&h, &["exec", "-t", &id, "sh"])?;
        assert_eq!(code, Some(255), "{who} exec -t: {stderr}");
        assert!(
            stderr.contains("open /dev/tty: no such device or address"),
            "{who}: {stderr}"
        );
        let pids = h.cmd(&["ps", "--format", "json", &id])?.ok()?;
        let pids: Vec<i32> = serde_json::from_str(&pids.stdout)?;
        assert_eq!(pids.len(), 1, "{who}: {pids:?}");
        h.delete_force(&id)?;
    }
    Ok(())
}
