//! The runtime's own binary under attack from a privileged container (CVE-2019-5736 and its
//! class): while a container is `created` its init is still the runtime's image, and `exec` runs
//! the runtime's image in the container until its process execs. A process there with every
//! capability (so `CAP_SYS_PTRACE`, which gets past a non-dumpable process) must not get a
//! descriptor it can write the binary through, directly, by reopening a read-only one after the
//! runtime has exited, or by running the binary itself through a magic link.
//!
//! Each test drives a copy of the runtime in a temp dir, so an attack that succeeds damages
//! nothing but the copy, and checks the copy's content at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;
use skiff_integration::caps::CAPABILITIES;
use skiff_integration::harness::{exec_args, runtime_binary, wait_for_content, Opts};
use skiff_integration::{Bundle, Harness};

/// A copy of the runtime binary in a directory of its own (removed on drop), and its content.
struct RuntimeCopy {
    dir: PathBuf,
    bin: PathBuf,
    content: Vec<u8>,
}

impl RuntimeCopy {
    fn new() -> Result<RuntimeCopy> {
        static COPIES: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "skiff-binprot-{}-{}",
            std::process::id(),
            COPIES.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let bin = dir.join("skiff");
        fs::copy(runtime_binary(), &bin).context("copying the runtime binary")?;
        let content = fs::read(&bin)?;
        Ok(RuntimeCopy { dir, bin, content })
    }

    /// Fails when the copy's content changed.
    fn check_intact(&self) -> Result<()> {
        let now = fs::read(&self.bin)?;
        if now != self.content {
            bail!(
                "the runtime binary {} was modified from inside the container ({} bytes, was {})",
                self.bin.display(),
                now.len(),
                self.content.len()
            );
        }
        Ok(())
    }
}

impl Drop for RuntimeCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The capabilities of the test process's bounding set (this machine lacks `CAP_SYS_RESOURCE`,
/// and no runtime can grant what it does not have).
fn host_caps() -> Vec<&'static str> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// A privileged container as Docker's `--privileged` makes it: every capability, nothing masked
/// or read-only in /proc, privileges not frozen; still its own pid namespace. The root is
/// writable (the attackers leave their findings there).
fn privileged_bundle(h: &Harness) -> Result<Bundle> {
    let mut b = h.bundle()?;
    let caps = host_caps();
    assert!(caps.contains(&"CAP_SYS_PTRACE") && caps.contains(&"CAP_SYS_ADMIN"));
    b.edit(|c| {
        for set in ["bounding", "effective", "permitted", "ambient"] {
            c["process"]["capabilities"][set] = json!(caps);
        }
        c["process"]["noNewPrivileges"] = json!(false);
        c["root"]["readonly"] = json!(false);
        c["linux"]["maskedPaths"] = json!([]);
        c["linux"]["readonlyPaths"] = json!([]);
    })?;
    Ok(b)
}

/// The attacks on `/proc/PID/exe` (and the descriptors they get), as shell lines printing a word
/// for each that succeeds. Each runs in a subshell: a failed redirection of `exec` ends the shell.
/// `>>` opens for writing without truncating and nothing is written, so a runtime that lets an
/// open through is not damaged by the open itself.
fn attacks_on(exe: &str) -> String {
    format!(
        "(exec 3>>{exe}) 2>/dev/null && echo OPENED-WRONLY; \
         (exec 3<>{exe}) 2>/dev/null && echo OPENED-RDWR; \
         (exec 3<{exe} && (exec 4>>/proc/self/fd/3) && echo REOPENED-WRONLY) 2>/dev/null; \
         {exe} --version 2>/dev/null | grep -q . && echo RAN-IT; \
         echo done"
    )
}

/// Fails when `out` reports any attack of [`attacks_on`] as successful.
fn assert_all_refused(out: &str, what: &str) {
    assert_writes_refused(out, what);
    assert!(
        !out.contains("RAN-IT"),
        "{what}: RAN-IT through the runtime's /proc/PID/exe:\n{out}"
    );
}

/// Fails when `out` reports a write open of [`attacks_on`] as successful.
fn assert_writes_refused(out: &str, what: &str) {
    assert!(
        out.contains("done"),
        "{what}: the attacks did not run:\n{out}"
    );
    for leak in ["OPENED-WRONLY", "OPENED-RDWR", "REOPENED-WRONLY"] {
        assert!(
            !out.contains(leak),
            "{what}: {leak} through the runtime's /proc/PID/exe:\n{out}"
        );
    }
}

#[test]
fn a_privileged_exec_cannot_write_or_run_the_runtime_through_the_created_init() -> Result<()> {
    let copy = RuntimeCopy::new()?;
    let h = Harness::with_binary(copy.bin.clone())?;
    let mut b = privileged_bundle(&h)?;
    b.args(&["true"])?;
    let id = h.id("exe");
    h.create(&id, &b)?;
    assert_eq!(h.status(&id)?, "created");
    // The init is the runtime's image, waiting for `start`: /proc/1/exe in the container.
    let out = h.exec_in(&id, &[], &["sh", "-c", &attacks_on("/proc/1/exe")])?;
    assert_all_refused(
        &format!("{}\n{}", out.stdout, out.stderr),
        "exec into the created container",
    );
    copy.check_intact()?;
    h.start(&id)?;
    h.wait_status(&id, "stopped")?;
    copy.check_intact()
}

#[test]
fn a_handle_on_the_created_init_cannot_write_the_runtime_once_it_is_gone() -> Result<()> {
    let copy = RuntimeCopy::new()?;
    let h = Harness::with_binary(copy.bin.clone())?;
    let mut b = privileged_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.id("hold");
    h.create(&id, &b)?;
    // The attack of CVE-2019-5736: take a read-only handle on the runtime while it runs (a write
    // open would fail with ETXTBSY then), wait until no process runs it any more, and reopen the
    // handle for writing through /proc/self/fd.
    let script = "exec 3</proc/1/exe || { echo no-handle >/result; exit; }; \
                  echo holding >/holding; \
                  while [ ! -e /go ]; do sleep 0.05; done; \
                  if (exec 4>>/proc/self/fd/3) 2>/dev/null; then echo REOPENED-WRONLY >/result; \
                  else echo refused >/result; fi";
    h.exec_in(&id, &["--detach"], &["sh", "-c", script])?.ok()?;
    let holding = wait_for_content(&b.rootfs().join("holding"), Duration::from_secs(10));
    let result = b.rootfs().join("result");
    if holding.is_err() {
        let r = fs::read_to_string(&result).unwrap_or_default();
        assert_eq!(r, "no-handle\n", "the attacker neither held nor failed");
    } else {
        // The init execs the container's process; nothing runs the runtime binary any more.
        h.start(&id)?;
        let out = h.exec_in(&id, &[], &["readlink", "/proc/1/exe"])?.ok()?;
        assert_eq!(out.stdout, "/bin/busybox\n");
        fs::write(b.rootfs().join("go"), "")?;
        let r = wait_for_content(&result, Duration::from_secs(10))?;
        assert_ne!(
            r, "REOPENED-WRONLY\n",
            "a handle taken on /proc/1/exe while created writes the runtime after start"
        );
    }
    copy.check_intact()
}

/// An image whose program is a script interpreted by `/proc/self/exe`: the kernel resolves the
/// interpreter in the process that calls execve, i.e. in the runtime's image.
fn with_self_exe_script(b: &Bundle) -> Result<()> {
    let rootfs = b.rootfs();
    fs::write(rootfs.join("evil"), "#!/proc/self/exe\n")?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(rootfs.join("evil"), fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Whether `out` shows the runtime's complaint about its arguments (`/proc/self/exe /evil`: the
/// runtime ran in the container).
fn runtime_ran(out: &str) -> bool {
    out.contains("unrecognized subcommand")
}

#[test]
fn a_program_interpreted_by_proc_self_exe_never_runs_the_runtime_in_the_container() -> Result<()> {
    let copy = RuntimeCopy::new()?;
    let h = Harness::with_binary(copy.bin.clone())?;
    let mut b = privileged_bundle(&h)?;
    with_self_exe_script(&b)?;
    // As the init's program.
    b.args(&["/evil"])?;
    let id = h.id("selfexe");
    let out = h.run(&id, &b, &[])?;
    assert!(
        !runtime_ran(&format!("{}{}", out, h.stdout_of(&id).unwrap_or_default())),
        "the init ran the runtime in the container:\n{out}"
    );
    // As an exec'd program.
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("selfexe", &b)?;
    let out = h.exec_in(&id, &[], &["/evil"])?;
    assert!(
        !runtime_ran(&out.to_string()),
        "exec ran the runtime in the container:\n{out}"
    );
    copy.check_intact()
}

/// The v1 freezer directory of a process, from `/proc/PID/cgroup`.
fn freezer_dir(pid: i32) -> Result<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, controllers, path) = (f.next(), f.next(), f.next());
        if controllers.is_some_and(|c| c.split(',').any(|c| c == "freezer")) {
            let path = path.unwrap_or("/").trim_start_matches('/');
            return Ok(Path::new("/sys/fs/cgroup/freezer").join(path));
        }
    }
    bail!("pid {pid} is in no v1 freezer cgroup")
}

/// The children of `pid` (from `/proc/PID/task/*/children`).
fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let text = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// A process's pid in the innermost pid namespace (the last field of `NSpid:`).
fn ns_pid(pid: i32) -> Result<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|p| p.parse().ok())
        .context("no NSpid")
}

/// Thaws a freezer cgroup on drop (so a failing test never leaves the container frozen).
struct Thaw(PathBuf);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("freezer.state"), "THAWED");
    }
}

#[test]
fn a_privileged_process_cannot_write_or_run_the_runtime_through_an_exec_in_progress() -> Result<()>
{
    if !Path::new("/sys/fs/cgroup/freezer").is_dir() {
        eprintln!("skipped: needs the v1 freezer (the window is held open by freezing the exec)");
        return Ok(());
    }
    let copy = RuntimeCopy::new()?;
    let h = Harness::with_binary(copy.bin.clone())?;
    let mut b = privileged_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.create_and_start("inexec", &b)?;
    // The attacker: a process of the container, waiting for the pid of an exec in progress.
    // Then, as in the attack on the init, it keeps a read-only handle and tries to reopen it for
    // writing once the exec is done and nothing runs the runtime any more.
    let script = format!(
        "while [ ! -s /target ]; do sleep 0.05; done; p=$(cat /target); \
         {{ {}; }} >/result 2>&1; \
         exec 5</proc/$p/exe || {{ echo no-handle >/later; exit; }}; \
         while [ ! -e /go ]; do sleep 0.05; done; \
         if (exec 6>>/proc/self/fd/5) 2>/dev/null; then echo REOPENED-WRONLY >/later; \
         else echo refused >/later; fi",
        attacks_on("/proc/$p/exe")
    );
    let attacker = h.exec_detached(&id, &[], &["sh", "-c", &script])?;
    // The window is held open: the container's cgroup is frozen, so the exec's process stops
    // as soon as it is moved there, before it execs (a won race, made certain). The attacker
    // stays out of the freeze (in the freezer's root cgroup); its namespaces, capabilities and
    // everything else are the container's.
    let freezer = freezer_dir(h.pid(&id)?)?;
    fs::write("/sys/fs/cgroup/freezer/cgroup.procs", attacker.to_string())?;
    // A `sleep` the shell forked before the move is still in the container's cgroup: move it
    // too (the shell waits for it); later ones are forked where the shell is now.
    for child in children(attacker) {
        let _ = fs::write("/sys/fs/cgroup/freezer/cgroup.procs", child.to_string());
    }
    fs::write(freezer.join("freezer.state"), "FROZEN")?;
    let thaw = Thaw(freezer.clone());
    let exec = h.spawn(
        &exec_args(&id, &["--ignore-paused"], &["true"]),
        Opts::default(),
    )?;
    let mut target = None;
    for _ in 0..500 {
        let procs = fs::read_to_string(freezer.join("cgroup.procs")).unwrap_or_default();
        target = children(exec.pid())
            .into_iter()
            .find(|c| procs.split_whitespace().any(|p| p == c.to_string()));
        if target.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let target = target.context("the exec's process never reached the container's cgroup")?;
    let exe = fs::read_link(format!("/proc/{target}/exe"))?;
    assert!(
        !exe.ends_with("busybox"),
        "the exec's process has exec'd already: {}",
        exe.display()
    );
    fs::write(b.rootfs().join("target"), format!("{}\n", ns_pid(target)?))?;
    let out =
        wait_for_content(&b.rootfs().join("result"), Duration::from_secs(20)).and_then(|_| {
            // The whole report (the last line is `done`).
            for _ in 0..200 {
                let text = fs::read_to_string(b.rootfs().join("result"))?;
                if text.contains("done") {
                    return Ok(text);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            bail!("the attacker did not finish")
        })?;
    drop(thaw);
    let done = exec.wait()?;
    assert_all_refused(&out, "an exec's process before it execs");
    assert!(done.success(), "the exec failed after the thaw: {done}");
    fs::write(b.rootfs().join("go"), "")?;
    let later = wait_for_content(&b.rootfs().join("later"), Duration::from_secs(10))?;
    assert_ne!(
        later, "REOPENED-WRONLY\n",
        "a handle taken on an exec's process writes the runtime once the exec is done"
    );
    copy.check_intact()
}

#[test]
fn with_the_memfd_seal_a_privileged_exec_cannot_write_the_runtime_either() -> Result<()> {
    // The fallback where overlayfs cannot be had, chosen here through the environment of a
    // wrapper: a sealed memfd copy, which the container can still run but not write.
    let copy = RuntimeCopy::new()?;
    let wrapper = copy.dir.join("skiff-memfd");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nSKIFF_EXE_SEAL=memfd exec '{}' \"$@\"\n",
            copy.bin.display()
        ),
    )?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    let h = Harness::with_binary(wrapper)?;
    let mut b = privileged_bundle(&h)?;
    b.args(&["sleep", "600"])?;
    let id = h.id("memfd");
    h.create(&id, &b)?;
    let init_exe = fs::read_link(format!("/proc/{}/exe", h.pid(&id)?))?;
    assert!(
        init_exe.to_string_lossy().starts_with("/memfd:skiff"),
        "the init does not run from the memfd: {}",
        init_exe.display()
    );
    // A memfd can be opened for writing: the seals refuse the writes themselves.
    let writes = "(exec 3>>/proc/1/exe && echo x >&3) 2>/dev/null && echo WROTE-WRONLY; \
                  (exec 3<>/proc/1/exe && echo x >&3) 2>/dev/null && echo WROTE-RDWR; \
                  (exec 3</proc/1/exe && exec 4>>/proc/self/fd/3 && echo x >&4) 2>/dev/null \
                    && echo WROTE-REOPENED; \
                  (exec 3<>/proc/1/exe && truncate -s 0 /proc/self/fd/3) 2>/dev/null \
                    && echo TRUNCATED; \
                  echo done";
    let out = h.exec_in(&id, &[], &["sh", "-c", writes])?;
    assert!(
        out.stdout.contains("done"),
        "the attacks did not run: {out}"
    );
    assert!(
        !out.stdout.contains("WROTE") && !out.stdout.contains("TRUNCATED"),
        "{out}"
    );
    let script = "exec 3</proc/1/exe || { echo no-handle >/result; exit; }; \
                  while [ ! -e /go ]; do sleep 0.05; done; \
                  if (exec 4>>/proc/self/fd/3 && echo x >&4) 2>/dev/null; \
                  then echo WROTE >/result; else echo refused >/result; fi";
    h.exec_in(&id, &["--detach"], &["sh", "-c", script])?.ok()?;
    h.start(&id)?;
    fs::write(b.rootfs().join("go"), "")?;
    let r = wait_for_content(&b.rootfs().join("result"), Duration::from_secs(10))?;
    assert_eq!(r, "refused\n", "a handle on the memfd copy");
    copy.check_intact()
}
