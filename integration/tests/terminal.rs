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
